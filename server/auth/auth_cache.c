/* The principal caches that keep authentication off RSA and off the database: one for
 * verified JWTs, one for API tokens, each keyed by the SHA-256 of the bearer token (the
 * token itself is never kept).
 *
 * Shape: a fixed number of entries allocated once (memory never grows with traffic),
 * spread over AUTH_CACHE_SHARDS shards, each a set-associative table of AUTH_CACHE_WAYS-way
 * sets under its own rwlock: lookups of different tokens rarely meet on a lock, and lookups
 * of the same token share it as readers. A full set evicts an expired entry, else the one
 * inserted first.
 *
 * The entries share nothing with the requests: an API token's environments are kept as JSON
 * text and parsed into each request's own copy (jansson's reference counts are atomic, but
 * its json_incref reads the count without an atomic first, which ThreadSanitizer rightly
 * flags when an object is shared between threads).
 *
 * Races with invalidation: a caller reads the cache's epoch before it asks the source
 * (signature check, database) and hands it to auth_cache_put, which inserts only while the
 * epoch is unchanged (checked under the shard lock). auth_cache_evict bumps the epoch before
 * it takes the shard locks, so an answer read before an invalidation either is refused at
 * insertion or is inserted first and then evicted: never served after it. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth_internal.h"

#define AUTH_CACHE_SHARDS 16
#define AUTH_CACHE_WAYS 8

struct cache_entry {
    unsigned char key[32];
    int used;
    unsigned tag;              /* the caller's validity tag (the JWKS key epoch for JWTs) */
    int64_t valid_until;       /* unix seconds: not served at or after */
    uint64_t stamp;            /* insertion order within the shard, for eviction */
    struct http_principal p;   /* p.environments always NULL: see envs */
    char *envs;                /* the environments as compact JSON text (owned), or NULL */
    _Atomic int64_t next_mark; /* unix seconds: the next hit that reports a use */
};

struct cache_shard {
    pthread_rwlock_t lock;
    struct cache_entry *sets; /* nsets * AUTH_CACHE_WAYS */
    uint64_t clock;           /* guarded by lock (write) */
};

struct auth_cache {
    size_t nsets; /* per shard */
    struct cache_shard shards[AUTH_CACHE_SHARDS];
    atomic_uint epoch;
    atomic_ulong hits, misses, inserts, evictions, invalidations;
};

struct auth_cache *auth_cache_new(size_t capacity)
{
    struct auth_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    size_t per_shard = (capacity + AUTH_CACHE_SHARDS - 1) / AUTH_CACHE_SHARDS;
    c->nsets = (per_shard + AUTH_CACHE_WAYS - 1) / AUTH_CACHE_WAYS;
    if (c->nsets == 0)
        c->nsets = 1;
    for (int i = 0; i < AUTH_CACHE_SHARDS; i++) {
        struct cache_shard *s = &c->shards[i];
        s->sets = calloc(c->nsets * AUTH_CACHE_WAYS, sizeof *s->sets);
        if (!s->sets || pthread_rwlock_init(&s->lock, NULL) != 0) {
            free(s->sets);
            s->sets = NULL;
            for (int j = 0; j < i; j++) {
                pthread_rwlock_destroy(&c->shards[j].lock);
                free(c->shards[j].sets);
            }
            free(c);
            return NULL;
        }
    }
    return c;
}

static void entry_clear(struct cache_entry *e)
{
    free(e->envs);
    e->envs = NULL;
    e->used = 0;
}

void auth_cache_free(struct auth_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < AUTH_CACHE_SHARDS; i++) {
        struct cache_shard *s = &c->shards[i];
        for (size_t k = 0; k < c->nsets * AUTH_CACHE_WAYS; k++)
            if (s->sets[k].used)
                entry_clear(&s->sets[k]);
        pthread_rwlock_destroy(&s->lock);
        free(s->sets);
    }
    free(c);
}

size_t auth_cache_capacity(const struct auth_cache *c)
{
    return c->nsets * AUTH_CACHE_WAYS * AUTH_CACHE_SHARDS;
}

/* The shard and the set of a key: the key is a SHA-256, so its bytes are uniform. */
static struct cache_entry *set_of(struct auth_cache *c, const unsigned char key[32],
                                  struct cache_shard **shard)
{
    *shard = &c->shards[key[0] % AUTH_CACHE_SHARDS];
    uint64_t h;
    memcpy(&h, key + 1, sizeof h);
    return &(*shard)->sets[(h % c->nsets) * AUTH_CACHE_WAYS];
}

unsigned auth_cache_epoch(struct auth_cache *c)
{
    return atomic_load(&c->epoch);
}

int auth_cache_get(struct auth_cache *c, const unsigned char key[32], int64_t now, unsigned tag,
                   int64_t mark_interval, struct http_principal *out, int *mark)
{
    struct cache_shard *s;
    struct cache_entry *set = set_of(c, key, &s);
    int hit = 0;
    if (mark)
        *mark = 0;
    pthread_rwlock_rdlock(&s->lock);
    for (int w = 0; w < AUTH_CACHE_WAYS; w++) {
        struct cache_entry *e = &set[w];
        if (!e->used || memcmp(e->key, key, 32) != 0)
            continue;
        if (e->tag == tag && now < e->valid_until) {
            *out = e->p;
            out->environments = e->envs ? json_loads(e->envs, 0, NULL) : NULL;
            if (e->envs && !out->environments)
                break; /* no memory: a miss, never a token widened to every environment */
            hit = 1;
            if (mark && mark_interval > 0) {
                int64_t due = atomic_load(&e->next_mark);
                *mark = now >= due &&
                        atomic_compare_exchange_strong(&e->next_mark, &due, now + mark_interval);
            }
        }
        break;
    }
    pthread_rwlock_unlock(&s->lock);
    atomic_fetch_add(hit ? &c->hits : &c->misses, 1);
    return hit;
}

void auth_cache_put(struct auth_cache *c, const unsigned char key[32],
                    const struct http_principal *p, int64_t valid_until, unsigned tag,
                    unsigned epoch, int64_t next_mark, int64_t now)
{
    char *envs = p->environments ? json_dumps(p->environments, JSON_COMPACT) : NULL;
    if (p->environments && !envs)
        return;
    struct cache_shard *s;
    struct cache_entry *set = set_of(c, key, &s);
    pthread_rwlock_wrlock(&s->lock);
    if (atomic_load(&c->epoch) != epoch) { /* invalidated since the caller asked the source */
        pthread_rwlock_unlock(&s->lock);
        free(envs);
        return;
    }
    struct cache_entry *slot = NULL;
    for (int w = 0; w < AUTH_CACHE_WAYS && !slot; w++)
        if (set[w].used && memcmp(set[w].key, key, 32) == 0)
            slot = &set[w];
    for (int w = 0; w < AUTH_CACHE_WAYS && !slot; w++)
        if (!set[w].used || set[w].valid_until <= now)
            slot = &set[w];
    int evicted = 0;
    if (!slot) {
        slot = &set[0];
        for (int w = 1; w < AUTH_CACHE_WAYS; w++)
            if (set[w].stamp < slot->stamp)
                slot = &set[w];
        evicted = 1;
    }
    if (slot->used)
        entry_clear(slot);
    memcpy(slot->key, key, 32);
    slot->tag = tag;
    slot->valid_until = valid_until;
    slot->stamp = ++s->clock;
    slot->p = *p;
    slot->p.environments = NULL;
    slot->envs = envs;
    atomic_store(&slot->next_mark, next_mark);
    slot->used = 1;
    pthread_rwlock_unlock(&s->lock);
    atomic_fetch_add(&c->inserts, 1);
    if (evicted)
        atomic_fetch_add(&c->evictions, 1);
}

size_t auth_cache_evict(struct auth_cache *c, const char *token_id)
{
    size_t n = 0;
    atomic_fetch_add(&c->epoch, 1); /* first: see the comment at the top */
    atomic_fetch_add(&c->invalidations, 1);
    for (int i = 0; i < AUTH_CACHE_SHARDS; i++) {
        struct cache_shard *s = &c->shards[i];
        pthread_rwlock_wrlock(&s->lock);
        for (size_t k = 0; k < c->nsets * AUTH_CACHE_WAYS; k++) {
            struct cache_entry *e = &s->sets[k];
            if (e->used && (!token_id || strcasecmp(e->p.token_id, token_id) == 0)) {
                entry_clear(e);
                n++;
            }
        }
        pthread_rwlock_unlock(&s->lock);
    }
    return n;
}

void auth_cache_stats(struct auth_cache *c, struct auth_cache_stats *st)
{
    st->hits = atomic_load(&c->hits);
    st->misses = atomic_load(&c->misses);
    st->inserts = atomic_load(&c->inserts);
    st->evictions = atomic_load(&c->evictions);
    st->invalidations = atomic_load(&c->invalidations);
    st->capacity = auth_cache_capacity(c);
}
