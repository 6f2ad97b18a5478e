/* The principal cache alone: a hit needs the same key, the same tag and an unexpired entry;
 * it hands out a copy with its own reference to the environments; a full cache stays at its
 * capacity (evicting) however many tokens come; an eviction by token id or of everything
 * bumps the epoch so that a put that asked the source before it is dropped; the use mark
 * fires once per interval; and threads hitting and evicting at once stay consistent. */
#include <openssl/sha.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_internal.h"
#include "unit.h"

static void key_of(int i, unsigned char key[32])
{
    char s[32];
    snprintf(s, sizeof s, "token-%d", i);
    SHA256((const unsigned char *)s, strlen(s), key);
}

static struct http_principal principal(const char *id, json_t *envs)
{
    struct http_principal p;
    memset(&p, 0, sizeof p);
    snprintf(p.subject, sizeof p.subject, "api-token:%s", id);
    snprintf(p.token_id, sizeof p.token_id, "%s", id);
    snprintf(p.method, sizeof p.method, "api-token");
    p.role = HTTP_OPERATOR;
    p.environments = envs;
    return p;
}

static void test_basics(void)
{
    struct auth_cache *c = auth_cache_new(64);
    EXPECT(c && auth_cache_capacity(c) >= 64, "made");
    unsigned char k1[32], k2[32];
    key_of(1, k1);
    key_of(2, k2);
    json_t *envs = json_pack("[s]", "staging");
    struct http_principal p = principal("id-1", envs), out;
    auth_cache_put(c, k1, &p, 1000, 7, auth_cache_epoch(c), 0, 100);
    json_decref(envs); /* the cache holds its own reference */
    EXPECT(auth_cache_get(c, k1, 999, 7, 0, &out, NULL) == 1, "hit before valid_until");
    EXPECT(strcmp(out.token_id, "id-1") == 0 && out.role == HTTP_OPERATOR, "the principal");
    EXPECT(json_array_size(out.environments) == 1, "environments");
    json_decref(out.environments);
    EXPECT(auth_cache_get(c, k1, 1000, 7, 0, &out, NULL) == 0, "miss at valid_until");
    EXPECT(auth_cache_get(c, k1, 10, 8, 0, &out, NULL) == 0, "miss with another tag");
    EXPECT(auth_cache_get(c, k2, 10, 7, 0, &out, NULL) == 0, "miss for another key");

    int mark = 0;
    EXPECT(auth_cache_get(c, k1, 150, 7, 60, &out, &mark) == 1 && mark == 1, "first use marks");
    json_decref(out.environments);
    EXPECT(auth_cache_get(c, k1, 160, 7, 60, &out, &mark) == 1 && mark == 0, "not again soon");
    json_decref(out.environments);
    EXPECT(auth_cache_get(c, k1, 210, 7, 60, &out, &mark) == 1 && mark == 1,
           "again after the interval");
    json_decref(out.environments);

    unsigned e = auth_cache_epoch(c);
    EXPECT(auth_cache_evict(c, "ID-1") == 1, "evicted by id (any case)");
    EXPECT(auth_cache_epoch(c) != e, "the epoch moved");
    EXPECT(auth_cache_get(c, k1, 10, 7, 0, &out, NULL) == 0, "gone");
    p = principal("id-2", NULL);
    auth_cache_put(c, k2, &p, 1000, 0, e, 0, 100);
    EXPECT(auth_cache_get(c, k2, 10, 0, 0, &out, NULL) == 0,
           "a put that asked the source before the eviction is dropped");
    auth_cache_put(c, k2, &p, 1000, 0, auth_cache_epoch(c), 0, 100);
    EXPECT(auth_cache_get(c, k2, 10, 0, 0, &out, NULL) == 1, "a put after it is kept");
    EXPECT(auth_cache_evict(c, NULL) == 1, "evict everything");
    struct auth_cache_stats st;
    auth_cache_stats(c, &st);
    EXPECT(st.hits == 5 && st.invalidations == 2, "counted: %lu hits, %lu invalidations", st.hits,
           st.invalidations);
    auth_cache_free(c);
}

static void test_bounded(void)
{
    struct auth_cache *c = auth_cache_new(256);
    size_t cap = auth_cache_capacity(c);
    for (int i = 0; i < 20000; i++) {
        unsigned char k[32];
        key_of(i, k);
        char id[32];
        snprintf(id, sizeof id, "id-%d", i);
        json_t *envs = json_pack("[s]", "production");
        struct http_principal p = principal(id, envs);
        auth_cache_put(c, k, &p, 1000, 0, auth_cache_epoch(c), 0, 10);
        json_decref(envs);
    }
    size_t present = 0;
    for (int i = 0; i < 20000; i++) {
        unsigned char k[32];
        key_of(i, k);
        struct http_principal out;
        if (auth_cache_get(c, k, 10, 0, 0, &out, NULL)) {
            present++;
            json_decref(out.environments);
        }
    }
    struct auth_cache_stats st;
    auth_cache_stats(c, &st);
    EXPECT(present <= cap && present > cap / 2, "%zu present, capacity %zu", present, cap);
    EXPECT(st.evictions == 20000 - present, "every other one evicted: %lu", st.evictions);
    unsigned char k[32];
    key_of(19999, k);
    struct http_principal out;
    EXPECT(auth_cache_get(c, k, 10, 0, 0, &out, NULL) == 1, "the newest is there");
    json_decref(out.environments);
    auth_cache_free(c); /* LeakSanitizer checks every evicted reference was dropped */
}

struct hammer {
    struct auth_cache *c;
    int id;
    long hits;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    for (int i = 0; i < 20000; i++) {
        unsigned char k[32];
        key_of(i % 97, k);
        struct http_principal out;
        if (auth_cache_get(h->c, k, 10, 0, 60, &out, NULL)) {
            h->hits++;
            if (strncmp(out.token_id, "id-", 3) != 0)
                abort();
            json_decref(out.environments);
        } else {
            char id[32];
            snprintf(id, sizeof id, "id-%d", i % 97);
            json_t *envs = json_pack("[s]", "dr");
            struct http_principal p = principal(id, envs);
            auth_cache_put(h->c, k, &p, 1000, 0, auth_cache_epoch(h->c), 0, 10);
            json_decref(envs);
        }
        if (h->id == 0 && i % 1000 == 0)
            auth_cache_evict(h->c, i % 2000 ? "id-5" : NULL);
    }
    return NULL;
}

static void test_threads(void)
{
    struct auth_cache *c = auth_cache_new(128);
    pthread_t t[4];
    struct hammer h[4];
    for (int i = 0; i < 4; i++) {
        h[i] = (struct hammer){c, i, 0};
        pthread_create(&t[i], NULL, hammer_main, &h[i]);
    }
    long hits = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        hits += h[i].hits;
    }
    EXPECT(hits > 0, "threads hit the cache: %ld", hits);
    auth_cache_free(c);
}

int main(void)
{
    test_basics();
    test_bounded();
    test_threads();
    return unit_done();
}
