/* The verifier: one issuer, its JWKS cached and shared by every HTTP thread, fetched with
 * libcurl from the discovery document's jwks_uri (oidc mode) or handed over in-process (the
 * dev issuer). Both go through auth_verify_jwt: the same checks for every token.
 *
 * Cache rules: the key set is immutable and swapped whole under a mutex (readers take a
 * reference and verify outside the lock); when it is due again (max-age, clamped) is kept
 * beside it under the same mutex, never in the shared set. When its max-age has passed, the
 * request that notices wakes the background refresher and goes on with the cached keys
 * (stale-while-revalidate): one refresh runs at a time, and nobody waits for it. A failed
 * refresh keeps the old keys (a JWKS outage does not lock people out) and is tried again
 * after AUTH_KID_REFETCH_S. A request waits on the issuer only when no key is cached at all
 * (a failed fetch is then retried at most every AUTH_FAIL_BACKOFF_S and the caller gets 503
 * meanwhile) or when its kid is unknown, which triggers at most one refetch per
 * AUTH_KID_REFETCH_S, so nobody can make us hammer the issuer. One fetch runs at a time.
 *
 * A refresh that drops or changes a key bumps the key epoch, so that the JWT cache
 * (auth_authn.c) stops serving tokens verified with the dropped key. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth/auth_internal.h"
#include "platform/log.h"

#define FETCH_BODY_MAX (512u * 1024u)

/* The verifier's state. issuer, fetch and fetch_cls are set by auth_verifier_init before any
 * thread can read them and not changed until auth_verifier_free, after every reader stopped. */
static struct {
    char *issuer;
    auth_jwks_fetch_fn fetch; /* in-process source, or NULL for libcurl */
    void *fetch_cls;
    atomic_int ready;
    atomic_uint key_epoch;      /* see auth_key_epoch */
    pthread_mutex_t fetch_lock; /* one fetch at a time */
    pthread_mutex_t lock;       /* guards everything below */
    struct auth_keyset *keys;
    time_t keys_due;            /* when the keys' max-age has passed (fetch again) */
    time_t last_attempt;
    time_t last_kid_refetch;
    json_t *discovery;
    unsigned long fetch_ok, fetch_failed; /* metrics */
    /* the background refresher */
    pthread_cond_t wake;
    pthread_t refresher;
    int refresher_running, refresher_stop, refresh_pending;
    unsigned long background_refreshes;
} V = {.lock = PTHREAD_MUTEX_INITIALIZER,
       .fetch_lock = PTHREAD_MUTEX_INITIALIZER,
       .wake = PTHREAD_COND_INITIALIZER};

/* ---- libcurl ---- */

struct fetch_buf {
    struct buf body;
    char cache_control[256];
};

static size_t on_body(char *p, size_t size, size_t n, void *cls)
{
    struct fetch_buf *f = cls;
    return buf_append(&f->body, p, size * n) == 0 ? size * n : 0;
}

static size_t on_header(char *p, size_t size, size_t n, void *cls)
{
    struct fetch_buf *f = cls;
    size_t len = size * n;
    if (len > 14 && strncasecmp(p, "cache-control:", 14) == 0) {
        size_t v = len - 14;
        if (v >= sizeof f->cache_control)
            v = sizeof f->cache_control - 1;
        memcpy(f->cache_control, p + 14, v);
        f->cache_control[v] = '\0';
    }
    return len;
}

/* GET url as JSON. Returns a new object or NULL with a reason in err. */
static json_t *http_get_json(const char *url, char *cache_control, size_t cclen, char *err,
                             size_t errlen)
{
    json_t *doc = NULL;
    struct fetch_buf f;
    memset(&f, 0, sizeof f);
    buf_init(&f.body, FETCH_BODY_MAX);
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(err, errlen, "curl init failed");
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, auth_cfg.http_timeout_s);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, auth_cfg.http_timeout_s);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &f);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &f);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "qdb-control/" QDB_VERSION);
    if (auth_cfg.ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, auth_cfg.ca_file);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "GET %s: %s", url, curl_easy_strerror(rc));
        goto out;
    }
    if (status != 200) {
        snprintf(err, errlen, "GET %s: HTTP %ld", url, status);
        goto out;
    }
    doc = json_loadb(f.body.data ? f.body.data : "", f.body.len, 0, NULL);
    if (!json_is_object(doc)) {
        json_decref(doc);
        doc = NULL;
        snprintf(err, errlen, "GET %s: not a JSON object", url);
        goto out;
    }
    if (cache_control)
        snprintf(cache_control, cclen, "%s", f.cache_control);
out:
    if (c)
        curl_easy_cleanup(c);
    buf_free(&f.body);
    return doc;
}

/* Discovery, cached once it worked. New reference or NULL. Call with fetch_lock held. */
static json_t *discovery_locked(char *err, size_t errlen)
{
    pthread_mutex_lock(&V.lock);
    json_t *d = json_incref(V.discovery);
    pthread_mutex_unlock(&V.lock);
    if (d)
        return d;
    char url[1024];
    size_t il = strlen(V.issuer);
    int n = snprintf(url, sizeof url, "%.*s/.well-known/openid-configuration",
                     (int)(il && V.issuer[il - 1] == '/' ? il - 1 : il), V.issuer);
    if (n < 0 || (size_t)n >= sizeof url) {
        snprintf(err, errlen, "the issuer URL is too long");
        return NULL;
    }
    d = http_get_json(url, NULL, 0, err, errlen);
    if (!d)
        return NULL;
    const char *iss = json_string_value(json_object_get(d, "issuer"));
    const char *jwks = json_string_value(json_object_get(d, "jwks_uri"));
    if (!iss || strcmp(iss, V.issuer) != 0 || !jwks) {
        snprintf(err, errlen, "discovery at %.200s names another issuer or no jwks_uri", url);
        json_decref(d);
        return NULL;
    }
    pthread_mutex_lock(&V.lock);
    if (!V.discovery)
        V.discovery = json_incref(d);
    pthread_mutex_unlock(&V.lock);
    return d;
}

static int curl_fetch(void *cls, json_t **jwks, long *max_age, char *err, size_t errlen)
{
    (void)cls;
    json_t *d = discovery_locked(err, errlen);
    if (!d)
        return -1;
    char cc[256] = "";
    *jwks = http_get_json(json_string_value(json_object_get(d, "jwks_uri")), cc, sizeof cc, err,
                          errlen);
    json_decref(d);
    if (!*jwks) {
        /* The issuer may have moved its keys: discover again next time. */
        pthread_mutex_lock(&V.lock);
        json_decref(V.discovery);
        V.discovery = NULL;
        pthread_mutex_unlock(&V.lock);
        return -1;
    }
    *max_age = auth_cache_max_age(cc, auth_cfg.jwks_min_age_s);
    return 0;
}

json_t *auth_discovery(void)
{
    if (!atomic_load(&V.ready) || V.fetch)
        return NULL;
    char err[512] = "";
    pthread_mutex_lock(&V.fetch_lock);
    json_t *d = discovery_locked(err, sizeof err);
    pthread_mutex_unlock(&V.fetch_lock);
    if (!d)
        log_event(LOG_WARN, "OIDC discovery failed", json_pack("{s:s}", "reason", err));
    return d;
}

/* ---- the cache ---- */

enum want { WANT_NONE, WANT_EXPIRED, WANT_EMPTY, WANT_KID };

/* Fetch (if still wanted once the fetch lock is ours) and swap the key set in. */
static void refresh(enum want why)
{
    pthread_mutex_lock(&V.fetch_lock);
    time_t now = time(NULL);
    pthread_mutex_lock(&V.lock);
    /* Another thread may have fetched while we waited for the lock. */
    int go = 0;
    if (why == WANT_EMPTY)
        go = !V.keys && now - V.last_attempt >= AUTH_FAIL_BACKOFF_S;
    else if (why == WANT_EXPIRED)
        go = V.keys && now >= V.keys_due;
    else if (why == WANT_KID)
        go = now - V.last_kid_refetch >= AUTH_KID_REFETCH_S;
    if (go) {
        V.last_attempt = now;
        if (why == WANT_KID)
            V.last_kid_refetch = now;
    }
    pthread_mutex_unlock(&V.lock);
    if (!go) {
        pthread_mutex_unlock(&V.fetch_lock);
        return;
    }
    json_t *jwks = NULL;
    long max_age = auth_cfg.jwks_min_age_s;
    char err[512] = "";
    int rc = V.fetch ? V.fetch(V.fetch_cls, &jwks, &max_age, err, sizeof err)
                     : curl_fetch(NULL, &jwks, &max_age, err, sizeof err);
    struct auth_keyset *ks = rc == 0 ? auth_keyset_from_jwks(jwks) : NULL;
    json_decref(jwks);
    if (rc == 0 && !ks)
        snprintf(err, sizeof err, "the JWKS document has no keys array");
    now = time(NULL);
    int dropped = 0;
    /* Read before the set is shared: once it is in V.keys, another refresh may replace and
     * free it before this one logs. */
    int nkeys = ks ? (int)ks->n : 0;
    pthread_mutex_lock(&V.lock);
    struct auth_keyset *old = NULL;
    if (ks) {
        old = V.keys;
        /* The set is not shared yet: its epoch is set here, once. */
        dropped = !auth_keyset_keeps(old, ks);
        if (dropped)
            atomic_fetch_add(&V.key_epoch, 1);
        ks->epoch = atomic_load(&V.key_epoch);
        V.keys = ks;
        V.keys_due = now + max_age;
        V.fetch_ok++;
    } else {
        V.fetch_failed++;
        if (V.keys) /* keep the old keys, try again in a while */
            V.keys_due = now + AUTH_KID_REFETCH_S;
    }
    pthread_mutex_unlock(&V.lock);
    pthread_mutex_unlock(&V.fetch_lock);
    auth_keyset_unref(old);
    if (ks)
        log_event(LOG_INFO, "JWKS loaded",
                  json_pack("{s:s,s:i,s:i,s:s,s:b}", "issuer", V.issuer, "keys", nkeys,
                            "max_age_s", (int)max_age, "why",
                            why == WANT_KID     ? "unknown kid"
                            : why == WANT_EMPTY ? "first use"
                                                : "expired",
                            "keys_dropped", dropped));
    else
        log_event(LOG_WARN, "JWKS fetch failed",
                  json_pack("{s:s,s:s}", "issuer", V.issuer, "reason", err));
}

/* The current key set (a new reference, or NULL) and whether its max-age has passed. */
static struct auth_keyset *current_keys(int *due)
{
    pthread_mutex_lock(&V.lock);
    struct auth_keyset *ks = auth_keyset_ref(V.keys);
    if (due)
        *due = ks && time(NULL) >= V.keys_due;
    pthread_mutex_unlock(&V.lock);
    return ks;
}

/* Stale keys: have the refresher fetch new ones, without waiting for it. With no refresher
 * running (a command, or before start) the caller refreshes itself. */
static void refresh_in_background(void)
{
    pthread_mutex_lock(&V.lock);
    int running = V.refresher_running;
    if (running && !V.refresh_pending) {
        V.refresh_pending = 1; /* one refresh at a time: later callers see it pending */
        pthread_cond_signal(&V.wake);
    }
    pthread_mutex_unlock(&V.lock);
    if (!running)
        refresh(WANT_EXPIRED);
}

static void *refresher_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&V.lock);
    while (!V.refresher_stop) {
        if (!V.refresh_pending) {
            pthread_cond_wait(&V.wake, &V.lock);
            continue;
        }
        V.background_refreshes++;
        pthread_mutex_unlock(&V.lock);
        refresh(WANT_EXPIRED);
        pthread_mutex_lock(&V.lock);
        V.refresh_pending = 0;
    }
    pthread_mutex_unlock(&V.lock);
    return NULL;
}

int auth_refresher_start(void)
{
    pthread_mutex_lock(&V.lock);
    V.refresher_stop = 0;
    V.refresh_pending = 0;
    int rc = pthread_create(&V.refresher, NULL, refresher_main, NULL);
    V.refresher_running = rc == 0;
    pthread_mutex_unlock(&V.lock);
    if (rc != 0)
        log_error("auth: cannot start the JWKS refresher thread");
    return rc == 0 ? 0 : -1;
}

void auth_refresher_stop(void)
{
    pthread_mutex_lock(&V.lock);
    int running = V.refresher_running;
    V.refresher_stop = 1;
    pthread_cond_broadcast(&V.wake);
    pthread_mutex_unlock(&V.lock);
    if (running)
        pthread_join(V.refresher, NULL);
    pthread_mutex_lock(&V.lock);
    V.refresher_running = 0;
    pthread_mutex_unlock(&V.lock);
}

unsigned auth_key_epoch(void)
{
    return atomic_load(&V.key_epoch);
}

int auth_verifier_init(const char *issuer, auth_jwks_fetch_fn fetch, void *fetch_cls)
{
    V.issuer = strdup(issuer);
    V.fetch = fetch;
    V.fetch_cls = fetch_cls;
    atomic_store(&V.ready, V.issuer != NULL);
    return V.issuer ? 0 : -1;
}

void auth_verifier_free(void)
{
    auth_refresher_stop();
    atomic_store(&V.ready, 0);
    pthread_mutex_lock(&V.lock);
    auth_keyset_unref(V.keys);
    V.keys = NULL;
    V.keys_due = 0;
    json_decref(V.discovery);
    V.discovery = NULL;
    free(V.issuer);
    V.issuer = NULL;
    V.last_attempt = V.last_kid_refetch = 0;
    pthread_mutex_unlock(&V.lock);
}

enum auth_verify_rc auth_verify_jwt(const char *token, json_t **claims, enum auth_reason *reason,
                                    unsigned *key_epoch)
{
    struct auth_jwt_head h;
    *claims = NULL;
    if (!atomic_load(&V.ready)) {
        *reason = AUTH_R_UNAVAILABLE;
        return AUTH_UNAVAILABLE;
    }
    if (auth_jwt_head_parse(token, auth_cfg.algs, auth_cfg.nalgs, &h, reason) != 0)
        return AUTH_INVALID;

    int due = 0;
    struct auth_keyset *ks = current_keys(&due);
    if (!ks) {
        refresh(WANT_EMPTY);
        ks = current_keys(NULL);
        if (!ks) {
            *reason = AUTH_R_UNAVAILABLE;
            return AUTH_UNAVAILABLE;
        }
    } else if (due) {
        refresh_in_background(); /* and verify with the keys we have */
        auth_keyset_unref(ks);
        ks = current_keys(NULL);
    }
    const struct auth_key *key = auth_keyset_find(ks, h.kid);
    if (!key) {
        auth_keyset_unref(ks);
        refresh(WANT_KID);
        ks = current_keys(NULL);
        key = auth_keyset_find(ks, h.kid);
    }
    enum auth_verify_rc rc = AUTH_INVALID;
    if (!key) {
        *reason = AUTH_R_UNKNOWN_KID;
        goto out;
    }
    if (auth_jwt_verify_sig(token, h.alg, key, claims, reason) != 0)
        goto out;
    if (auth_claims_check(*claims, V.issuer, auth_cfg.audience, time(NULL), reason) != 0)
        goto out;
    if (key_epoch)
        *key_epoch = ks->epoch;
    rc = AUTH_OK;
out:
    if (rc != AUTH_OK) {
        json_decref(*claims);
        *claims = NULL;
    }
    auth_keyset_unref(ks);
    return rc;
}

void auth_oidc_metrics(struct buf *out)
{
    pthread_mutex_lock(&V.lock);
    unsigned long ok = V.fetch_ok, failed = V.fetch_failed, bg = V.background_refreshes;
    size_t nkeys = V.keys ? V.keys->n : 0;
    pthread_mutex_unlock(&V.lock);
    buf_printf(out,
               "# HELP qdb_auth_jwks_fetches_total JWKS fetches from the token issuer.\n"
               "# TYPE qdb_auth_jwks_fetches_total counter\n"
               "qdb_auth_jwks_fetches_total{result=\"ok\"} %lu\n"
               "qdb_auth_jwks_fetches_total{result=\"failed\"} %lu\n"
               "# HELP qdb_auth_jwks_keys Verification keys in the JWKS cache.\n"
               "# TYPE qdb_auth_jwks_keys gauge\n"
               "qdb_auth_jwks_keys %zu\n"
               "# HELP qdb_auth_jwks_background_refreshes_total JWKS refreshes run in the "
               "background because the cached keys' max-age had passed.\n"
               "# TYPE qdb_auth_jwks_background_refreshes_total counter\n"
               "qdb_auth_jwks_background_refreshes_total %lu\n"
               "# HELP qdb_auth_jwks_key_epoch Changes each time a key is dropped from the "
               "cached key set.\n"
               "# TYPE qdb_auth_jwks_key_epoch gauge\n"
               "qdb_auth_jwks_key_epoch %u\n",
               ok, failed, nkeys, bg, atomic_load(&V.key_epoch));
}
