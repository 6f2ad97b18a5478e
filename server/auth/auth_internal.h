/* Inside the auth room: what its files share. Other rooms include auth.h only. */
#ifndef QDB_AUTH_INTERNAL_H
#define QDB_AUTH_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "auth/auth.h"
#include "platform/base64url.h"
#include "platform/buf.h"
#include "platform/db.h"
#include "platform/http.h"

#define AUTH_TOKEN_MAX (16u * 1024u) /* bearer tokens longer than this are refused unparsed */
#define AUTH_LEEWAY_S 60             /* clock skew allowed on exp, nbf, iat */
#define AUTH_KID_REFETCH_S 30        /* at most one JWKS refetch per this for unknown kids */
#define AUTH_JWKS_MIN_AGE_S 300      /* Cache-Control: max-age is clamped to [5 min, 24 h] */
#define AUTH_JWKS_MAX_AGE_S 86400    /* (the minimum is QDB_OIDC_JWKS_MIN_AGE at run time) */
#define AUTH_FAIL_BACKOFF_S 5 /* with no keys at all, retry a failed fetch after this */
#define AUTH_MAX_ALGS 8

enum auth_mode { AUTH_MODE_OIDC = 0, AUTH_MODE_DEV = 1 };

/* The room's settings, read once by auth_config_load. */
struct auth_settings {
    enum auth_mode mode;
    const char *issuer;      /* oidc: QDB_OIDC_ISSUER; dev: the dev issuer's URL (owned) */
    const char *audience;    /* QDB_OIDC_AUDIENCE */
    const char *client_id;   /* QDB_OIDC_CLIENT_ID: the console's public client */
    const char *scope;       /* QDB_OIDC_SCOPE: what the console asks for */
    const char *ca_file;     /* QDB_OIDC_CA_FILE or NULL */
    int algs[AUTH_MAX_ALGS]; /* jwt_alg_t values allowed, from QDB_OIDC_ALGS */
    int nalgs;
    const char *role_names[4]; /* [HTTP_VIEWER..HTTP_ADMIN]: QDB_AUTH_ROLE_* */
    long http_timeout_s;       /* QDB_OIDC_HTTP_TIMEOUT */
    long dev_token_ttl_s;      /* QDB_DEV_TOKEN_TTL */
    long jwks_min_age_s;       /* QDB_OIDC_JWKS_MIN_AGE: floor of a JWKS's max-age */
    long cache_size;           /* QDB_AUTH_CACHE_SIZE: entries of each principal cache */
    long last_used_interval_s; /* QDB_AUTH_LAST_USED_INTERVAL: last_used_at at most this often */
};
extern struct auth_settings auth_cfg;

/* ---- denials (auth_authn.c) ---- */
enum auth_reason {
    AUTH_R_MISSING = 0,   /* no Authorization header, or not Bearer */
    AUTH_R_OVERSIZED,     /* token over 16 KiB */
    AUTH_R_MALFORMED,     /* not three base64url parts of JSON */
    AUTH_R_ALG,           /* alg not allowed (none, HS*, unconfigured, key type mismatch) */
    AUTH_R_UNKNOWN_KID,   /* no key with that kid, even after a refetch */
    AUTH_R_SIGNATURE,     /* signature does not verify */
    AUTH_R_EXPIRED,       /* exp in the past (JWT or API token) */
    AUTH_R_NOT_YET_VALID, /* nbf or iat in the future */
    AUTH_R_ISSUER,        /* iss is not the issuer */
    AUTH_R_AUDIENCE,      /* aud / azp is not the audience */
    AUTH_R_UNKNOWN_TOKEN, /* API token not found */
    AUTH_R_REVOKED,       /* API token revoked */
    AUTH_R_NO_ROLE,       /* authenticated, but holds none of the three roles */
    AUTH_R_INSUFFICIENT,  /* the role is below what the route needs */
    AUTH_R_UNAVAILABLE,   /* issuer unreachable with no cached keys, or state store down */
    AUTH_R_ENVIRONMENT,   /* an API token limited to other environments */
    AUTH_R__COUNT
};
/* The reason's label in logs and metrics ("expired", ...). */
const char *auth_reason_name(enum auth_reason r);
/* The HTTP authentication hook (see http_set_authenticator). */
int auth_authenticate(struct http_request *req, enum http_perm required, void *cls);
/* The non-blocking first try (http_set_authenticator_try): from the header and the caches
 * only; HTTP_AUTH_WOULD_BLOCK when neither can answer. */
int auth_authenticate_try(struct http_request *req, enum http_perm required, void *cls);
/* Register the /metrics collector. */
int auth_metrics_init(void); /* 0, or -1 when /metrics refused the collector */
/* Make the JWT and API token caches (QDB_AUTH_CACHE_SIZE entries each). Returns 0 or -1. */
int auth_caches_init(void);
void auth_caches_free(void);

/* ---- pure helpers (auth_jwt.c), unit-tested ---- */

/* Lowercase hex SHA-256 of data into out (65 bytes). */
void auth_sha256_hex(const void *data, size_t len, char out[65]);

/* One verification key from a JWKS, as PEM for libjwt. */
struct auth_key {
    char kid[128];
    char kty[8];  /* "RSA" or "EC" */
    char crv[16]; /* EC curve ("P-256"), else "" */
    char alg[16]; /* the JWK's "alg" when given, else "" */
    char *pem;    /* SubjectPublicKeyInfo PEM (owned), for logs of what was loaded and tests */
    size_t pemlen;
    struct evp_pkey_st *pkey; /* the key for verification (owned, EVP_PKEY) */
};
/* Turn one JWK object into a key. Returns 0, or -1 with a reason in err (unsupported kty or
 * curve, RSA under 2048 bits, bad base64url, "use" other than "sig"). Free with
 * auth_key_clear. */
int auth_jwk_to_key(const json_t *jwk, struct auth_key *out, char *err, size_t errlen);
void auth_key_clear(struct auth_key *k);

/* An immutable set of keys, shared by reference between threads and swapped whole. */
struct auth_keyset {
    int refs; /* atomic through __atomic builtins */
    size_t n;
    struct auth_key *keys;
    unsigned epoch; /* set before the set is shared, never changed: see auth_key_epoch */
};
/* Build a keyset from a JWKS document; keys that cannot be used are skipped (logged at
 * debug). Returns NULL when the document has no "keys" array. When it is due to be fetched
 * again is the verifier's business (auth_oidc.c), not the set's: the set never changes once
 * shared. */
struct auth_keyset *auth_keyset_from_jwks(const json_t *jwks);
/* Whether every key of `old` is in `new` unchanged (same kid, same public key). Pure. */
int auth_keyset_keeps(const struct auth_keyset *old, const struct auth_keyset *new_set);
/* Take / drop a reference. */
struct auth_keyset *auth_keyset_ref(struct auth_keyset *ks);
void auth_keyset_unref(struct auth_keyset *ks);
/* The key with `kid`, borrowed from ks, or NULL. */
const struct auth_key *auth_keyset_find(const struct auth_keyset *ks, const char *kid);
/* max-age from a Cache-Control header value, clamped to [min_age, 24 h]; min_age when
 * absent or unparsable. */
long auth_cache_max_age(const char *cache_control, long min_age);

/* What a token's header says, checked before any key is looked up. */
struct auth_jwt_head {
    int alg; /* jwt_alg_t */
    char kid[128];
};
/* Check the token's shape and header: size, three base64url segments, JSON header, an alg
 * from `algs` (never none or HS*), a kid, typ JWT / at+jwt when present. Returns 0, or -1
 * with *reason set. */
int auth_jwt_head_parse(const char *token, const int *algs, int nalgs, struct auth_jwt_head *h,
                        enum auth_reason *reason);
/* The claims of a token (its second segment): base64url, then a JSON object without
 * duplicate members, into *claims (new reference). Checks nothing else and trusts nothing:
 * auth_jwt_verify_sig calls it only after the signature verified. Returns 0 or -1. Pure. */
int auth_jwt_payload_parse(const char *token, json_t **claims);
/* Whether a key may verify `alg`: RS* need RSA, ES256 an EC P-256 key, ES384 P-384; a JWK
 * "alg" must equal it. */
int auth_key_fits_alg(const struct auth_key *k, int alg);
/* Verify the signature over the token's first two parts with `key` and `alg` (OpenSSL;
 * the alg was checked against the configuration and must fit the key's type) and return
 * the claims (new reference) in *claims. Returns 0, or -1 with *reason. */
int auth_jwt_verify_sig(const char *token, int alg, const struct auth_key *key, json_t **claims,
                        enum auth_reason *reason);
/* The registered claims: iss equal to `issuer`; aud (string or array) contains `audience`
 * or azp equals it; exp required and not past; nbf, iat not in the future; each with
 * AUTH_LEEWAY_S. Returns 0, or -1 with *reason. Pure. */
int auth_claims_check(const json_t *claims, const char *issuer, const char *audience, time_t now,
                      enum auth_reason *reason);
/* The highest role the claims grant through realm_access.roles or
 * resource_access.<client>.roles for `clients` (NULL-terminated), with role_names[1..3]
 * naming viewer, operator, admin. HTTP_PUBLIC when none. Pure. */
enum http_perm auth_roles_from_claims(const json_t *claims, const char *const *role_names,
                                      const char *const *clients);
/* "viewer", "operator", "admin" -> role; -1 otherwise. */
int auth_role_parse(const char *s);
/* jwt_alg_t from "RS256" etc., -1 when not allowed as a verification alg (none, HS*). */
int auth_alg_parse(const char *s);

/* ---- issuers and their keys (auth_oidc.c) ---- */

/* Fetch the issuer's JWKS: a new JSON document into *jwks and its Cache-Control max-age
 * (clamped) into *max_age. Returns 0, or -1 with a reason in err (no secrets). */
typedef int (*auth_jwks_fetch_fn)(void *cls, json_t **jwks, long *max_age, char *err,
                                  size_t errlen);

enum auth_verify_rc { AUTH_OK = 0, AUTH_INVALID = -1, AUTH_UNAVAILABLE = -2 };

/* Set up the verifier for `issuer` with a key source: libcurl discovery + JWKS
 * (fetch NULL) or an in-process one (the dev issuer). Returns 0 or -1. */
int auth_verifier_init(const char *issuer, auth_jwks_fetch_fn fetch, void *fetch_cls);
void auth_verifier_free(void);
/* Verify a bearer JWT completely: header, key (fetching or refetching the JWKS as the cache
 * rules allow), signature, registered claims. On AUTH_OK *claims is a new reference and
 * *key_epoch (may be NULL) the epoch of the key set that verified it. */
enum auth_verify_rc auth_verify_jwt(const char *token, json_t **claims, enum auth_reason *reason,
                                    unsigned *key_epoch);
/* The key epoch: it changes whenever a key is dropped from (or changed in) the cached key set,
 * so that a JWT verified with an older epoch is verified again. A refresh that only adds keys
 * keeps it. Lock-free (atomic). */
unsigned auth_key_epoch(void);
/* Start / stop the background JWKS refresher (stale-while-revalidate). Without it (commands,
 * before start) an expired key set is refreshed on the request that finds it expired. */
int auth_refresher_start(void);
void auth_refresher_stop(void);
/* The issuer's discovery document (oidc mode; new reference), fetched once and cached.
 * NULL when it cannot be had. */
json_t *auth_discovery(void);
/* Counters of JWKS fetches for /metrics. */
void auth_oidc_metrics(struct buf *out);

/* ---- the dev issuer (auth_dev.c) ---- */
/* Make the RSA key and register the in-process key source. Returns 0 or -1. */
int auth_dev_start(void);
void auth_dev_stop(void);

/* ---- API tokens (auth_tokens.c) ---- */
#define AUTH_API_TOKEN_PREFIX "qdb_"
/* A fresh secret: "qdb_" + base64url of 32 random bytes (malloc'd), or NULL. */
char *auth_api_token_new(void);
/* What a new token is. */
struct auth_token_spec {
    const char *name;
    int role;                   /* HTTP_VIEWER..HTTP_ADMIN */
    const json_t *environments; /* array of strings or NULL (all) */
    long expires_in_s;          /* 0: never */
    const char *created_by;
};
/* Validate a name (1..100 printable), environment names (1..63 of [a-z0-9-]). Returns NULL
 * when good, else a reason. Pure. */
const char *auth_token_name_problem(const char *name);
const char *auth_environment_problem(const char *env);

/* ---- SQL (auth_store.c); every function returns a DB_ code or a row count ---- */
/* Insert a token; *out (new reference) is its public row as JSON. */
int auth_store_token_insert(struct db_conn *c, const struct auth_token_spec *spec,
                            const char *sha256_hex, json_t **out);
/* Look a token up by its hash: id, role, name, environments (JSON text), expires_at (unix
 * seconds or NULL), revoked (t/f), sha256. The caller PQclears *res. */
int auth_store_token_lookup(struct db_conn *c, const char *sha256_hex, PGresult **res);
/* Record uses: for each of the n token ids its use time (unix seconds), written only where the
 * stored last_used_at is older than interval_s (so that replicas together write a token's
 * row at most once per interval). Returns the rows changed or a DB_ code. */
int auth_store_token_touch_batch(struct db_conn *c, const char *const *ids, const double *at,
                                 size_t n, long interval_s);
/* Every token (never the hash), newest first, as a JSON array in *out. */
int auth_store_token_list(struct db_conn *c, json_t **out);
/* Revoke: set revoked_at when not yet revoked; *out gets the row as it is now (JSON), when
 * the token exists. Returns rows (0 = no such token). */
int auth_store_token_revoke(struct db_conn *c, const char *id, json_t **out);
/* One token's public row (JSON) or 0 rows. */
int auth_store_token_get(struct db_conn *c, const char *id, json_t **out);

/* ---- the principal caches (auth_cache.c) ----
 * Fixed-size, sharded, keyed by the 32-byte SHA-256 of the bearer token. */
struct auth_cache;
struct auth_cache_stats {
    unsigned long hits, misses, inserts, evictions, invalidations;
    size_t capacity;
};
/* A cache of about `capacity` entries, all allocated now. NULL when memory ran out. */
struct auth_cache *auth_cache_new(size_t capacity);
void auth_cache_free(struct auth_cache *c);
/* The invalidation epoch: read it before asking the source, pass it to auth_cache_put. */
unsigned auth_cache_epoch(struct auth_cache *c);
/* Look `key` up: a hit needs the same `tag` and now < its valid_until. On a hit *out is a copy
 * of the principal (out->environments a new object the caller owns) and returns 1; else 0. With
 * mark_interval > 0 and `mark`, *mark says whether this hit is the first since the entry's
 * last report (at most one per mark_interval seconds per entry). */
int auth_cache_get(struct auth_cache *c, const unsigned char key[32], int64_t now, unsigned tag,
                   int64_t mark_interval, struct http_principal *out, int *mark);
/* Insert a copy of *p (environments copied), served until valid_until, unless the
 * cache's epoch is no longer `epoch`. A full set evicts. */
void auth_cache_put(struct auth_cache *c, const unsigned char key[32],
                    const struct http_principal *p, int64_t valid_until, unsigned tag,
                    unsigned epoch, int64_t next_mark, int64_t now);
/* Drop the entries of API token `token_id` (NULL: every entry), after bumping the epoch.
 * Returns how many were dropped. */
size_t auth_cache_evict(struct auth_cache *c, const char *token_id);
size_t auth_cache_capacity(const struct auth_cache *c);
void auth_cache_stats(struct auth_cache *c, struct auth_cache_stats *st);

/* ---- API token cache invalidation and use records (auth_listener.c) ---- */
#define AUTH_LISTEN_CHANNEL "api_token_changes"
#define AUTH_LISTEN_HEARTBEAT_MS 200 /* a round trip on the listener's connection this often */
#define AUTH_LISTEN_LEASE_MS 900     /* the cache is trusted this long after a heartbeat was sent */
#define AUTH_LISTEN_RETRY_MS 1000    /* reconnect delay (the cache is bypassed meanwhile) */
/* The API token cache, or NULL when none was made. */
extern struct auth_cache *auth_token_cache;
/* Whether the API token cache may be used now: the listener is connected, listening, and its
 * last heartbeat is recent. Lock-free. */
int auth_token_cache_usable(void);
/* Note that API token `id` was accepted at `now` (unix seconds); the flusher records it. */
void auth_usage_mark(const char *id, int64_t now);
/* Start the listener and the last_used_at flusher (own connections); stop joins them and
 * writes the marks still pending. */
int auth_sync_start(const struct db_settings *db);
void auth_sync_stop(void);
/* Gauges and counters of the listener and the flusher for /metrics. */
void auth_sync_metrics(struct buf *out);

/* `qdb-control token create ...` */
int auth_cli_token(struct qdb_app *app, int argc, char **argv);

#endif
