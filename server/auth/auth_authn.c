/* The authentication hook: every non-public route comes through here with the least role it
 * needs. A bearer token is an API token ("qdb_...", looked up by its SHA-256 in the state
 * store) or a JWT from the configured issuer. Each denial is counted by reason and logged
 * with the reason, never with the token.
 *
 * In the steady state a request costs neither an RSA verification nor a database round trip:
 * - a verified JWT's principal is cached under the SHA-256 of the token until the token's
 *   exp (with the same leeway the claim check allows), and only while the key set it was
 *   verified with still holds its key (the key epoch, auth_oidc.c);
 * - an API token's principal is cached under its SHA-256 while the auth listener
 *   (auth_listener.c) hears every change of api_token from PostgreSQL; when it does not
 *   (disconnected, or a heartbeat late) the cache is bypassed and every request asks the
 *   database, so that a revocation is never missed. Its expiry is checked at each use.
 * The role is checked against the route on every request, cached or not. A token's use is
 * marked in memory and written by the flusher (at most once per QDB_AUTH_LAST_USED_INTERVAL
 * per token), never on the request path. */
#include <jwt.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth/auth_internal.h"
#include "platform/log.h"
#include "platform/metrics.h"

static atomic_ulong denials[AUTH_R__COUNT];
static atomic_ulong accepted[3];          /* oidc|dev, api-token, unused */
static atomic_ulong token_cache_bypassed; /* API token requests that found the cache unusable */

/* Verified JWTs; made in auth_caches_init (before any thread) and freed after HTTP stopped. */
static struct auth_cache *jwt_cache;
/* SHA-256 fetched once: OpenSSL 3's one-shot SHA256() fetches the algorithm from the
 * provider store (under its lock) on every call, on every request. */
static EVP_MD *sha256_md;

static const char *const reason_names[AUTH_R__COUNT] = {
    [AUTH_R_MISSING] = "missing",
    [AUTH_R_OVERSIZED] = "oversized",
    [AUTH_R_MALFORMED] = "malformed",
    [AUTH_R_ALG] = "alg",
    [AUTH_R_UNKNOWN_KID] = "unknown_kid",
    [AUTH_R_SIGNATURE] = "signature",
    [AUTH_R_EXPIRED] = "expired",
    [AUTH_R_NOT_YET_VALID] = "not_yet_valid",
    [AUTH_R_ISSUER] = "issuer",
    [AUTH_R_AUDIENCE] = "audience",
    [AUTH_R_UNKNOWN_TOKEN] = "unknown_token",
    [AUTH_R_REVOKED] = "revoked",
    [AUTH_R_NO_ROLE] = "no_role",
    [AUTH_R_INSUFFICIENT] = "insufficient_role",
    [AUTH_R_UNAVAILABLE] = "unavailable",
    [AUTH_R_ENVIRONMENT] = "environment",
};

const char *auth_reason_name(enum auth_reason r)
{
    return (unsigned)r < AUTH_R__COUNT ? reason_names[r] : "unknown";
}

static void collect(struct buf *out, void *cls)
{
    (void)cls;
    buf_puts(out, "# HELP qdb_auth_denials_total Requests refused by authentication or "
                  "authorization, by reason.\n"
                  "# TYPE qdb_auth_denials_total counter\n");
    for (int i = 0; i < AUTH_R__COUNT; i++)
        buf_printf(out, "qdb_auth_denials_total{reason=\"%s\"} %lu\n", reason_names[i],
                   atomic_load(&denials[i]));
    buf_printf(out,
               "# HELP qdb_auth_accepted_total Requests whose caller was authenticated.\n"
               "# TYPE qdb_auth_accepted_total counter\n"
               "qdb_auth_accepted_total{method=\"%s\"} %lu\n"
               "qdb_auth_accepted_total{method=\"api-token\"} %lu\n",
               auth_cfg.mode == AUTH_MODE_DEV ? "dev" : "oidc", atomic_load(&accepted[0]),
               atomic_load(&accepted[1]));
    auth_oidc_metrics(out);
    struct auth_cache_stats js, ts;
    memset(&js, 0, sizeof js);
    memset(&ts, 0, sizeof ts);
    if (jwt_cache)
        auth_cache_stats(jwt_cache, &js);
    if (auth_token_cache)
        auth_cache_stats(auth_token_cache, &ts);
    buf_puts(out, "# HELP qdb_auth_cache_lookups_total Principal cache lookups, by cache and "
                  "result.\n"
                  "# TYPE qdb_auth_cache_lookups_total counter\n");
    buf_printf(out,
               "qdb_auth_cache_lookups_total{cache=\"jwt\",result=\"hit\"} %lu\n"
               "qdb_auth_cache_lookups_total{cache=\"jwt\",result=\"miss\"} %lu\n"
               "qdb_auth_cache_lookups_total{cache=\"api-token\",result=\"hit\"} %lu\n"
               "qdb_auth_cache_lookups_total{cache=\"api-token\",result=\"miss\"} %lu\n"
               "qdb_auth_cache_lookups_total{cache=\"api-token\",result=\"bypassed\"} %lu\n",
               js.hits, js.misses, ts.hits, ts.misses, atomic_load(&token_cache_bypassed));
    buf_printf(out,
               "# HELP qdb_auth_cache_evictions_total Entries pushed out of a full cache set.\n"
               "# TYPE qdb_auth_cache_evictions_total counter\n"
               "qdb_auth_cache_evictions_total{cache=\"jwt\"} %lu\n"
               "qdb_auth_cache_evictions_total{cache=\"api-token\"} %lu\n"
               "# HELP qdb_auth_cache_invalidations_total Invalidations (API token changes "
               "heard, cache cleared after a reconnect).\n"
               "# TYPE qdb_auth_cache_invalidations_total counter\n"
               "qdb_auth_cache_invalidations_total{cache=\"api-token\"} %lu\n"
               "# HELP qdb_auth_cache_capacity Entries each principal cache holds at most.\n"
               "# TYPE qdb_auth_cache_capacity gauge\n"
               "qdb_auth_cache_capacity{cache=\"jwt\"} %zu\n"
               "qdb_auth_cache_capacity{cache=\"api-token\"} %zu\n",
               js.evictions, ts.evictions, ts.invalidations, js.capacity, ts.capacity);
    auth_sync_metrics(out);
}

int auth_caches_init(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
    jwt_cache = auth_cache_new((size_t)auth_cfg.cache_size);
    auth_token_cache = auth_cache_new((size_t)auth_cfg.cache_size);
    if (!jwt_cache || !auth_token_cache) {
        auth_caches_free();
        return -1;
    }
    return 0;
}

void auth_caches_free(void)
{
    auth_cache_free(jwt_cache);
    auth_cache_free(auth_token_cache);
    EVP_MD_free(sha256_md);
    sha256_md = NULL;
    jwt_cache = NULL;
    auth_token_cache = NULL;
}

/* SHA-256 of the token: the caches' key, and in hex the state store's. */
static void token_hash(const char *token, size_t len, unsigned char key[32], char hex[65])
{
    static const char digits[] = "0123456789abcdef";
    unsigned int n = 0;
    if (!sha256_md || EVP_Digest(token, len, key, &n, sha256_md, NULL) != 1 || n != 32)
        SHA256((const unsigned char *)token, len, key);
    if (!hex)
        return;
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[key[i] >> 4];
        hex[2 * i + 1] = digits[key[i] & 15];
    }
    hex[64] = '\0';
}

int auth_metrics_init(void)
{
    return metrics_register(collect, NULL);
}

/* Count, log and answer a denial. Returns -1 (the hook's "replied"). */
/* `api`: the caller presented an API token (a 503 then names the state store). */
static int deny(struct http_request *req, enum auth_reason reason, const char *who, int api)
{
    atomic_fetch_add(&denials[reason], 1);
    log_event(LOG_INFO, "auth denied",
              json_pack("{s:s,s:s,s:s,s:s,s:s}", "reason", reason_names[reason], "route",
                        http_route_of(req) ? http_route_of(req)->pattern : "", "subject",
                        who ? who : "", "request_id", http_request_id(req), "client",
                        http_client_addr(req)));
    switch (reason) {
    case AUTH_R_UNAVAILABLE:
        http_reply_header(req, "Retry-After", "5");
        if (api)
            http_reply_problem(req, QDB_E_DB_UNAVAILABLE,
                               "API tokens cannot be checked: the state store is unreachable; "
                               "try again shortly");
        else
            http_reply_problem(req, QDB_E_AUTH_UNAVAILABLE,
                               "the token issuer cannot be reached and no cached keys can "
                               "verify this token; try again shortly");
        return -1;
    case AUTH_R_NO_ROLE:
        http_reply_problem(req, QDB_E_FORBIDDEN,
                           "the caller holds none of the roles viewer, operator, admin");
        return -1;
    case AUTH_R_INSUFFICIENT:
        http_reply_problem(req, QDB_E_FORBIDDEN, "this needs the %s role",
                           auth_role_name(http_route_of(req)->perm));
        return -1;
    default:
        break;
    }
    char hdr[160];
    snprintf(hdr, sizeof hdr,
             "Bearer realm=\"qdb-control\", error=\"invalid_token\", "
             "error_description=\"%s\"",
             reason_names[reason]);
    http_reply_header(req, "WWW-Authenticate", hdr);
    http_reply_problem_ext(req, QDB_E_UNAUTHORIZED,
                           json_pack("{s:s}", "reason", reason_names[reason]),
                           reason == AUTH_R_MISSING ? "a bearer token is required"
                                                    : "the bearer token was refused (%s)",
                           reason_names[reason]);
    return -1;
}

/* An API token answered from the cache (never blocks): 1 with *p filled, else 0. */
static int api_token_cached(const unsigned char key[32], int64_t now, struct http_principal *p)
{
    int mark = 0;
    if (!auth_cache_get(auth_token_cache, key, now, 0, auth_cfg.last_used_interval_s, p, &mark))
        return 0;
    if (mark)
        auth_usage_mark(p->token_id, now);
    return 1;
}

static int authn_api_token(struct http_request *req, const char *token, size_t len,
                           struct http_principal *p, enum auth_reason *reason)
{
    char hash[65];
    unsigned char key[32];
    token_hash(token, len, key, hash);
    int64_t now = (int64_t)time(NULL);
    int usable = auth_token_cache && auth_token_cache_usable();
    if (usable) {
        if (api_token_cached(key, now, p))
            return 0;
    } else {
        atomic_fetch_add(&token_cache_bypassed, 1);
    }
    /* Read before the database: an invalidation heard meanwhile makes the put a no-op. */
    unsigned epoch = auth_token_cache ? auth_cache_epoch(auth_token_cache) : 0;
    struct db_conn *c = http_db(req);
    if (!c) {
        *reason = AUTH_R_UNAVAILABLE;
        return -1;
    }
    PGresult *res = NULL;
    int rc = -1;
    int n = auth_store_token_lookup(c, hash, &res);
    if (n < 0) {
        *reason = AUTH_R_UNAVAILABLE;
        goto out;
    }
    /* The index found the row; compare the whole hash in constant time all the same. */
    const char *stored = n > 0 ? db_get_str(res, 0, 6) : NULL;
    if (n == 0 || !stored || strlen(stored) != 64 || CRYPTO_memcmp(stored, hash, 64) != 0) {
        *reason = AUTH_R_UNKNOWN_TOKEN;
        goto out;
    }
    const char *id = db_get_str(res, 0, 0);
    if (strcmp(db_get_str(res, 0, 5), "t") == 0) {
        *reason = AUTH_R_REVOKED;
        goto out;
    }
    int64_t expires = db_get_str(res, 0, 4) ? db_get_int64(res, 0, 4) : 0;
    if (expires && expires <= (int64_t)time(NULL)) {
        *reason = AUTH_R_EXPIRED;
        goto out;
    }
    int role = auth_role_parse(db_get_str(res, 0, 1));
    if (role < 0) {
        *reason = AUTH_R_NO_ROLE;
        goto out;
    }
    snprintf(p->subject, sizeof p->subject, "api-token:%s", id);
    snprintf(p->name, sizeof p->name, "%s", db_get_str(res, 0, 2));
    snprintf(p->method, sizeof p->method, "api-token");
    snprintf(p->token_id, sizeof p->token_id, "%s", id);
    p->role = (enum http_perm)role;
    p->expires_at = expires;
    const char *envs = db_get_str(res, 0, 3);
    p->environments = envs ? json_loads(envs, 0, NULL) : NULL;
    if (envs && !p->environments) { /* never widen a limited token to every environment */
        *reason = AUTH_R_UNAVAILABLE;
        goto out;
    }
    auth_usage_mark(id, now);
    if (usable && auth_token_cache_usable())
        auth_cache_put(auth_token_cache, key, p, expires ? expires : INT64_MAX, 0, epoch,
                       now + auth_cfg.last_used_interval_s, now);
    rc = 0;
out:
    PQclear(res);
    return rc;
}

static void name_from_claims(const json_t *claims, char *out, size_t n)
{
    static const char *const members[] = {"name", "preferred_username", "client_id", "azp", "sub"};
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
        const char *s = json_string_value(json_object_get(claims, members[i]));
        if (s && *s) {
            snprintf(out, n, "%s", s);
            return;
        }
    }
    out[0] = '\0';
}

/* A NumericDate as int64 seconds, rounded up, clamped so that no conversion overflows. */
static int64_t date_ceil(double v)
{
    if (!(v > 0))
        return 0;
    if (v > 4e18)
        return (int64_t)4e18;
    return (int64_t)ceil(v);
}

/* A JWT answered from the cache (never blocks): 1 with *p filled, else 0. */
static int jwt_cached(const unsigned char key[32], int64_t now, struct http_principal *p)
{
    return jwt_cache && auth_cache_get(jwt_cache, key, now, auth_key_epoch(), 0, p, NULL);
}

static int authn_jwt(const char *token, size_t len, struct http_principal *p,
                     enum auth_reason *reason)
{
    unsigned char key[32];
    token_hash(token, len, key, NULL);
    int64_t now = (int64_t)time(NULL);
    if (jwt_cached(key, now, p))
        return 0; /* only principals with a role are cached */
    unsigned epoch = jwt_cache ? auth_cache_epoch(jwt_cache) : 0, key_epoch = 0;
    json_t *claims = NULL;
    enum auth_verify_rc rc = auth_verify_jwt(token, &claims, reason, &key_epoch);
    if (rc != AUTH_OK)
        return -1;
    const char *const clients[] = {auth_cfg.audience, auth_cfg.client_id ? auth_cfg.client_id : "",
                                   NULL};
    enum http_perm role = auth_roles_from_claims(claims, auth_cfg.role_names, clients);
    const char *sub = json_string_value(json_object_get(claims, "sub"));
    snprintf(p->subject, sizeof p->subject, "%s", sub ? sub : "");
    name_from_claims(claims, p->name, sizeof p->name);
    snprintf(p->method, sizeof p->method, "%s", auth_cfg.mode == AUTH_MODE_DEV ? "dev" : "oidc");
    p->token_id[0] = '\0';
    p->role = role;
    double exp = json_number_value(json_object_get(claims, "exp"));
    p->expires_at = date_ceil(exp);
    p->environments = NULL;
    json_decref(claims);
    if (role == HTTP_PUBLIC) {
        *reason = AUTH_R_NO_ROLE;
        return -1;
    }
    /* Served from the cache exactly as long as auth_claims_check would accept it. */
    if (jwt_cache)
        auth_cache_put(jwt_cache, key, p, date_ceil(exp + AUTH_LEEWAY_S), key_epoch, epoch, 0, now);
    return 0;
}

/* The bearer token of the request, or -1 with the reason to deny. */
static int bearer_token(struct http_request *req, const char **token, size_t *len,
                        enum auth_reason *reason)
{
    const char *h = http_header(req, "Authorization");
    *reason = AUTH_R_MISSING;
    if (!h)
        return -1;
    while (*h == ' ')
        h++;
    if (strncasecmp(h, "Bearer ", 7) != 0)
        return -1;
    const char *t = h + 7;
    while (*t == ' ')
        t++;
    size_t n = strnlen(t, AUTH_TOKEN_MAX + 1);
    if (n > AUTH_TOKEN_MAX) {
        *reason = AUTH_R_OVERSIZED;
        return -1;
    }
    if (n == 0)
        return -1;
    *token = t;
    *len = n;
    return 0;
}

static int is_api_token(const char *token)
{
    return strncmp(token, AUTH_API_TOKEN_PREFIX, strlen(AUTH_API_TOKEN_PREFIX)) == 0;
}

/* The caller is known: check the role and let it in (steals p->environments). */
static int admit(struct http_request *req, struct http_principal *p, enum http_perm required,
                 int api)
{
    if (p->role < required) {
        char who[300];
        snprintf(who, sizeof who, "%s", p->subject);
        json_decref(p->environments);
        return deny(req, AUTH_R_INSUFFICIENT, who, api);
    }
    atomic_fetch_add(&accepted[api ? 1 : 0], 1);
    http_set_principal(req, p);
    return HTTP_AUTH_OK;
}

int auth_authenticate(struct http_request *req, enum http_perm required, void *cls)
{
    (void)cls;
    const char *token = NULL;
    size_t len = 0;
    enum auth_reason reason;
    if (bearer_token(req, &token, &len, &reason) != 0)
        return deny(req, reason, NULL, 0);

    struct http_principal p;
    memset(&p, 0, sizeof p);
    reason = AUTH_R_MALFORMED;
    int api = is_api_token(token);
    int rc =
        api ? authn_api_token(req, token, len, &p, &reason) : authn_jwt(token, len, &p, &reason);
    if (rc != 0) {
        json_decref(p.environments);
        return deny(req, reason, p.subject[0] ? p.subject : NULL, api);
    }
    return admit(req, &p, required, api);
}

/* The event loop's first try: answers from the header alone (a missing or oversized token)
 * or from the caches, which hold only callers that were fully verified; anything else
 * would need the issuer, an RSA verification or the state store, and goes to the handler
 * pool (auth_authenticate). Never blocks: the caches take short read locks only. */
int auth_authenticate_try(struct http_request *req, enum http_perm required, void *cls)
{
    (void)cls;
    const char *token = NULL;
    size_t len = 0;
    enum auth_reason reason;
    if (bearer_token(req, &token, &len, &reason) != 0)
        return deny(req, reason, NULL, 0);
    int api = is_api_token(token);
    unsigned char key[32];
    token_hash(token, len, key, NULL);
    int64_t now = (int64_t)time(NULL);
    struct http_principal p;
    memset(&p, 0, sizeof p);
    int hit = api ? auth_token_cache && auth_token_cache_usable() && api_token_cached(key, now, &p)
                  : jwt_cached(key, now, &p);
    if (!hit)
        return HTTP_AUTH_WOULD_BLOCK;
    return admit(req, &p, required, api);
}

int auth_may_act_on(const struct http_request *req, const char *environment)
{
    const struct http_principal *p = http_principal(req);
    if (!p)
        return 0;
    if (!json_is_array(p->environments))
        return 1;
    size_t i;
    const json_t *e;
    json_array_foreach(p->environments, i, e)
    {
        if (environment && json_is_string(e) && strcmp(json_string_value(e), environment) == 0)
            return 1;
    }
    return 0;
}

int auth_require_environment(struct http_request *req, const char *environment)
{
    if (auth_may_act_on(req, environment))
        return 0;
    const struct http_principal *p = http_principal(req);
    atomic_fetch_add(&denials[AUTH_R_ENVIRONMENT], 1);
    log_event(LOG_INFO, "auth denied",
              json_pack("{s:s,s:s,s:s,s:s,s:s}", "reason", "environment", "route",
                        http_route_of(req) ? http_route_of(req)->pattern : "", "subject",
                        p ? p->subject : "", "environment", environment ? environment : "",
                        "request_id", http_request_id(req)));
    http_reply_problem(req, QDB_E_FORBIDDEN, "this API token may not act on environment '%s'",
                       environment ? environment : "");
    return -1;
}
