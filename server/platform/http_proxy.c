#include "platform/http_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An address as bytes: 4 for IPv4 (IPv4-mapped IPv6 included), 16 for IPv6. */
struct addr_bytes {
    unsigned len;
    unsigned char b[16];
};

struct cidr {
    struct addr_bytes net;
    unsigned bits;
};

struct http_proxies {
    struct cidr *blocks;
    size_t n;
};

static const unsigned char v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

static void from_v6(struct addr_bytes *a, const unsigned char *b16)
{
    if (memcmp(b16, v4_mapped_prefix, 12) == 0) {
        a->len = 4;
        memcpy(a->b, b16 + 12, 4);
    } else {
        a->len = 16;
        memcpy(a->b, b16, 16);
    }
}

static int parse_addr(const char *s, struct addr_bytes *a)
{
    unsigned char buf[16];
    if (inet_pton(AF_INET, s, buf) == 1) {
        a->len = 4;
        memcpy(a->b, buf, 4);
        return 0;
    }
    if (inet_pton(AF_INET6, s, buf) == 1) {
        from_v6(a, buf);
        return 0;
    }
    return -1;
}

static int from_sockaddr(const struct sockaddr *sa, struct addr_bytes *a)
{
    if (!sa)
        return -1;
    if (sa->sa_family == AF_INET) {
        a->len = 4;
        memcpy(a->b, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        from_v6(a, (const unsigned char *)&((const struct sockaddr_in6 *)sa)->sin6_addr);
        return 0;
    }
    return -1;
}

static int in_block(const struct cidr *c, const struct addr_bytes *a)
{
    if (c->net.len != a->len)
        return 0;
    unsigned full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->net.b, a->b, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xffu << (8 - rest));
    return (c->net.b[full] & mask) == (a->b[full] & mask);
}

static int trusts_bytes(const struct http_proxies *p, const struct addr_bytes *a)
{
    for (size_t i = 0; p && i < p->n; i++)
        if (in_block(&p->blocks[i], a))
            return 1;
    return 0;
}

struct http_proxies *http_proxies_parse(const char *list, char *err, size_t errlen)
{
    struct http_proxies *p = calloc(1, sizeof *p);
    if (!p)
        goto oom;
    const char *s = list;
    for (;;) {
        s += strspn(s, ", \t");
        if (!*s)
            break;
        size_t len = strcspn(s, ", \t");
        char item[64];
        if (len >= sizeof item) {
            snprintf(err, errlen, "'%.*s' is not an address or CIDR block", (int)len, s);
            goto fail;
        }
        memcpy(item, s, len);
        item[len] = '\0';
        s += len;
        struct cidr c = {0};
        char *slash = strchr(item, '/');
        long bits = -1;
        if (slash) {
            *slash = '\0';
            char *end;
            errno = 0;
            bits = strtol(slash + 1, &end, 10);
            if (errno || end == slash + 1 || *end)
                bits = -2;
        }
        if (parse_addr(item, &c.net) != 0 || bits < -1 || bits > (long)(c.net.len * 8)) {
            snprintf(err, errlen, "'%s%s%s' is not an address or CIDR block", item,
                     slash ? "/" : "", slash ? slash + 1 : "");
            goto fail;
        }
        /* an IPv4-mapped block ("::ffff:10.0.0.0/104") is the IPv4 block it maps */
        if (bits >= 0 && c.net.len == 4 && strchr(item, ':'))
            bits = bits >= 96 ? bits - 96 : -2;
        if (bits == -2) {
            snprintf(err, errlen, "'%s' has a prefix length that does not fit", item);
            goto fail;
        }
        c.bits = bits < 0 ? c.net.len * 8 : (unsigned)bits;
        struct cidr *grown = realloc(p->blocks, (p->n + 1) * sizeof *grown);
        if (!grown)
            goto oom;
        p->blocks = grown;
        p->blocks[p->n++] = c;
    }
    if (p->n == 0) {
        snprintf(err, errlen, "is empty (leave it unset to trust no proxy)");
        goto fail;
    }
    return p;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    http_proxies_free(p);
    return NULL;
}

void http_proxies_free(struct http_proxies *p)
{
    if (!p)
        return;
    free(p->blocks);
    free(p);
}

int http_proxies_trusts(const struct http_proxies *p, const char *addr)
{
    struct addr_bytes a;
    return parse_addr(addr, &a) == 0 && trusts_bytes(p, &a);
}

int http_proxies_trusts_sockaddr(const struct http_proxies *p, const struct sockaddr *sa)
{
    struct addr_bytes a;
    return from_sockaddr(sa, &a) == 0 && trusts_bytes(p, &a);
}

static int bytes_to_text(const struct addr_bytes *a, char *out, size_t n)
{
    return inet_ntop(a->len == 4 ? AF_INET : AF_INET6, a->b, out, (socklen_t)n) ? 0 : -1;
}

int http_addr_normalise(const struct sockaddr *sa, char *out, size_t n)
{
    struct addr_bytes a;
    return from_sockaddr(sa, &a) == 0 ? bytes_to_text(&a, out, n) : -1;
}

int http_proxies_client(const struct http_proxies *p, const char *xff, char *out, size_t n)
{
    if (!xff)
        return 0;
    size_t end = strlen(xff);
    /* from the right: each hop appends the address it received the request from */
    while (end > 0) {
        size_t start = end;
        while (start > 0 && xff[start - 1] != ',')
            start--;
        size_t a = start, b = end;
        while (a < b && (xff[a] == ' ' || xff[a] == '\t'))
            a++;
        while (b > a && (xff[b - 1] == ' ' || xff[b - 1] == '\t'))
            b--;
        char item[64];
        struct addr_bytes addr;
        if (b - a == 0 || b - a >= sizeof item)
            return 0;
        memcpy(item, xff + a, b - a);
        item[b - a] = '\0';
        if (parse_addr(item, &addr) != 0)
            return 0;
        if (!trusts_bytes(p, &addr))
            return bytes_to_text(&addr, out, n) == 0;
        end = start > 0 ? start - 1 : 0;
    }
    return 0;
}

/* ---- counts per address: a small chained hash table under one lock ---- */

#define COUNTS_BUCKETS 1024u

struct count_entry {
    char addr[48];
    unsigned n;
    struct count_entry *next;
};

struct http_addr_counts {
    pthread_mutex_t mu;
    struct count_entry *buckets[COUNTS_BUCKETS];
};

static unsigned hash_addr(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % COUNTS_BUCKETS;
}

struct http_addr_counts *http_addr_counts_new(void)
{
    struct http_addr_counts *c = calloc(1, sizeof *c);
    if (c)
        pthread_mutex_init(&c->mu, NULL);
    return c;
}

void http_addr_counts_free(struct http_addr_counts *c)
{
    if (!c)
        return;
    for (unsigned i = 0; i < COUNTS_BUCKETS; i++) {
        struct count_entry *e = c->buckets[i];
        while (e) {
            struct count_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static struct count_entry **find(struct http_addr_counts *c, const char *addr)
{
    struct count_entry **e = &c->buckets[hash_addr(addr)];
    while (*e && strcmp((*e)->addr, addr) != 0)
        e = &(*e)->next;
    return e;
}

/* Take one when below limit (limit 0: always). Called with the lock held. */
static int take_locked(struct http_addr_counts *c, const char *addr, unsigned limit)
{
    struct count_entry **e = find(c, addr);
    if (*e) {
        if (limit && (*e)->n >= limit)
            return 0;
        (*e)->n++;
        return 1;
    }
    if (strlen(addr) >= sizeof(*e)->addr)
        return 0;
    struct count_entry *fresh = calloc(1, sizeof *fresh);
    if (!fresh)
        return 0;
    snprintf(fresh->addr, sizeof fresh->addr, "%s", addr);
    fresh->n = 1;
    *e = fresh;
    return 1;
}

int http_addr_take(struct http_addr_counts *c, const char *addr, unsigned limit)
{
    if (limit == 0)
        return 0;
    pthread_mutex_lock(&c->mu);
    int taken = take_locked(c, addr, limit);
    pthread_mutex_unlock(&c->mu);
    return taken;
}

void http_addr_add(struct http_addr_counts *c, const char *addr)
{
    pthread_mutex_lock(&c->mu);
    take_locked(c, addr, 0);
    pthread_mutex_unlock(&c->mu);
}

void http_addr_give(struct http_addr_counts *c, const char *addr)
{
    pthread_mutex_lock(&c->mu);
    struct count_entry **e = find(c, addr);
    if (*e && --(*e)->n == 0) {
        struct count_entry *gone = *e;
        *e = gone->next;
        free(gone);
    }
    pthread_mutex_unlock(&c->mu);
}

unsigned http_addr_count(struct http_addr_counts *c, const char *addr)
{
    pthread_mutex_lock(&c->mu);
    struct count_entry **e = find(c, addr);
    unsigned n = *e ? (*e)->n : 0;
    pthread_mutex_unlock(&c->mu);
    return n;
}
