#include "platform/queryspec.h"

#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/jsonspec.h"
#include "platform/rfc3339.h"
#include "platform/utf8.h"

/* More parameters than any route takes, with room for mistakes worth naming. */
#define QSPEC_MAX_ARGS 32

struct qarg {
    const char *key, *val; /* val NULL for "?flag" without '=' */
    size_t klen, vlen;
};

struct qargs {
    struct qarg a[QSPEC_MAX_ARGS];
    size_t n;
    int overflow;
};

struct qerr {
    char field[128];
    char msg[512];
};

static int fail(struct qerr *e, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct qerr *e, const char *field, const char *fmt, ...)
{
    snprintf(e->field, sizeof e->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static int key_is(const struct qarg *a, const char *name)
{
    size_t n = strlen(name);
    return a->klen == n && memcmp(a->key, name, n) == 0;
}

static int parse_int(const char *v, size_t len, int64_t *out)
{
    char tmp[24];
    if (len == 0 || len >= sizeof tmp || v[0] == '+' || v[0] == ' ')
        return -1;
    memcpy(tmp, v, len);
    tmp[len] = '\0';
    char *end;
    errno = 0;
    long long n = strtoll(tmp, &end, 10);
    if (errno || *end || end == tmp || (tmp[0] == '-' && len == 1))
        return -1;
    *out = (int64_t)n;
    return 0;
}

static int parse_args(const struct qargs *args, const struct qspec_param *params, unsigned flags,
                      struct qerr *e)
{
    if (args->overflow)
        return fail(e, "(query)", "a query string takes at most %d parameters", QSPEC_MAX_ARGS);
    for (size_t i = 0; i < args->n; i++) {
        const struct qarg *a = &args->a[i];
        if (!utf8_valid(a->key, a->klen) || a->klen > 64)
            return fail(e, "(query)",
                        "a query parameter name is not UTF-8 text of at most 64 "
                        "bytes without NUL");
        const struct qspec_param *p = params;
        while (p->name && !key_is(a, p->name))
            p++;
        if (!p->name) {
            if (flags & QSPEC_ALLOW_UNKNOWN)
                continue;
            return fail(e, "(query)", "%.*s is not a parameter of this route", (int)a->klen,
                        a->key);
        }
        for (size_t j = 0; j < i; j++)
            if (key_is(&args->a[j], p->name))
                return fail(e, p->name, "%s is given twice", p->name);
    }
    for (const struct qspec_param *p = params; p->name; p++) {
        const struct qarg *a = NULL;
        for (size_t i = 0; i < args->n && !a; i++)
            if (key_is(&args->a[i], p->name))
                a = &args->a[i];
        if (!a) {
            if (p->required)
                return fail(e, p->name, "%s is required", p->name);
            continue;
        }
        const char *v = a->val ? a->val : "";
        size_t len = a->val ? a->vlen : 0;
        if (!utf8_valid(v, len))
            return fail(e, p->name, "%s must be UTF-8 text without NUL", p->name);
        switch (p->type) {
        case QSPEC_STRING: {
            int64_t max = p->max ? p->max : 256;
            if ((int64_t)len < p->min || (int64_t)len > max)
                return fail(e, p->name, "%s must be %lld to %lld bytes long", p->name,
                            (long long)p->min, (long long)max);
            *(const char **)p->out = v;
            break;
        }
        case QSPEC_INT: {
            int64_t n;
            if (parse_int(v, len, &n) != 0 || n < p->min || n > p->max)
                return fail(e, p->name, "%s must be an integer from %lld to %lld", p->name,
                            (long long)p->min, (long long)p->max);
            *(int64_t *)p->out = n;
            break;
        }
        case QSPEC_TIME: {
            int64_t us;
            if (rfc3339_parse(v, len, &us) != 0)
                return fail(e, p->name,
                            "%s must be an RFC 3339 time with a real date and time such as "
                            "2026-01-31T12:00:00Z",
                            p->name);
            *(int64_t *)p->out = us;
            break;
        }
        case QSPEC_BOOL:
            if (len == 4 && memcmp(v, "true", 4) == 0)
                *(int *)p->out = 1;
            else if (len == 5 && memcmp(v, "false", 5) == 0)
                *(int *)p->out = 0;
            else
                return fail(e, p->name, "%s must be true or false", p->name);
            break;
        case QSPEC_ENUM: {
            int idx = -1;
            for (int i = 0; p->choices[i] && idx < 0; i++)
                if (strlen(p->choices[i]) == len && memcmp(p->choices[i], v, len) == 0)
                    idx = i;
            if (idx < 0) {
                char allowed[256];
                jspec_choices_text(p->choices, allowed, sizeof allowed);
                return fail(e, p->name, "%s must be one of: %s", p->name, allowed);
            }
            *(int *)p->out = idx;
            break;
        }
        }
        if (p->present)
            *p->present = 1;
    }
    return 0;
}

static enum MHD_Result collect(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                               const char *value, size_t value_size)
{
    (void)kind;
    struct qargs *args = cls;
    if (args->n >= QSPEC_MAX_ARGS) {
        args->overflow = 1;
        return MHD_NO;
    }
    args->a[args->n++] = (struct qarg){key ? key : "", value, key ? key_size : 0, value_size};
    return MHD_YES;
}

static int parse_request(struct http_request *req, const struct qspec_param *params, unsigned flags,
                         struct qerr *e)
{
    struct qargs args;
    args.n = 0;
    args.overflow = 0;
    MHD_get_connection_values_n(http_connection(req), MHD_GET_ARGUMENT_KIND, collect, &args);
    return parse_args(&args, params, flags, e);
}

int qspec_parse(struct http_request *req, const struct qspec_param *params)
{
    struct qerr e = {"", ""};
    if (parse_request(req, params, 0, &e) == 0)
        return 0;
    http_reply_invalid(req, e.field, "%s", e.msg);
    return -1;
}

int qspec_parse_quiet(struct http_request *req, const struct qspec_param *params, unsigned flags,
                      char *field, size_t field_len, char *err, size_t err_len)
{
    struct qerr e = {"", ""};
    if (parse_request(req, params, flags, &e) == 0)
        return 0;
    snprintf(field, field_len, "%s", e.field);
    snprintf(err, err_len, "%s", e.msg);
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decode `len` bytes of a query component into out as libmicrohttpd does ('+' is a space,
 * %XX a byte, a malformed escape kept as is). Returns the decoded length. */
static size_t decode(const char *s, size_t len, char *out)
{
    size_t j = 0;
    for (size_t i = 0; i < len; i++) {
        int h, l;
        if (s[i] == '+')
            out[j++] = ' ';
        else if (s[i] == '%' && i + 2 < len && (h = hexval(s[i + 1])) >= 0 &&
                 (l = hexval(s[i + 2])) >= 0) {
            out[j++] = (char)(h * 16 + l);
            i += 2;
        } else
            out[j++] = s[i];
    }
    out[j] = '\0';
    return j;
}

int qspec_parse_text(const char *query, const struct qspec_param *params, char *scratch,
                     size_t scratch_len, char *field, size_t field_len, char *err, size_t err_len)
{
    struct qargs args;
    struct qerr e = {"", ""};
    args.n = 0;
    args.overflow = 0;
    size_t qlen = strlen(query), used = 0;
    if (scratch_len < qlen + 2) {
        snprintf(field, field_len, "(query)");
        snprintf(err, err_len, "scratch too small");
        return -1;
    }
    const char *p = query;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t n = amp ? (size_t)(amp - p) : strlen(p);
        if (n > 0) {
            const char *eq = memchr(p, '=', n);
            size_t kl = eq ? (size_t)(eq - p) : n;
            struct qarg a = {0};
            char *k = scratch + used;
            a.klen = decode(p, kl, k);
            a.key = k;
            used += a.klen + 1;
            if (eq) {
                char *v = scratch + used;
                a.vlen = decode(eq + 1, n - kl - 1, v);
                a.val = v;
                used += a.vlen + 1;
            }
            if (args.n >= QSPEC_MAX_ARGS)
                args.overflow = 1;
            else
                args.a[args.n++] = a;
        }
        p += n;
        if (*p == '&')
            p++;
    }
    if (parse_args(&args, params, 0, &e) == 0)
        return 0;
    snprintf(field, field_len, "%s", e.field);
    snprintf(err, err_len, "%s", e.msg);
    return -1;
}
