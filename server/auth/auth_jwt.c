/* JWT and JWK handling that needs no network and no state: JWK -> public key,
 * header and claim checks, role mapping, and the signature check.
 *
 * Why not libjwt's jwt_decode for verification: libjwt 1.10 verifies with whatever alg the
 * token's header names (an HS256 token signed with the RSA public-key PEM as the HMAC secret
 * verifies), checks no claims, and refuses any header whose typ is not "JWT", so it rejects
 * RFC 9068 access tokens (typ "at+jwt", as oidc-provider and newer issuers send). So the
 * header is checked here against the configured algs and the key's type first, and the
 * signature is checked with OpenSSL's EVP_DigestVerify with the digest that alg implies: one
 * small function, no alg chosen by the token. libjwt still signs the dev issuer's tokens. */
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth_internal.h"
#include "platform/log.h"

/* ---- hashes ---- */

void auth_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[64] = '\0';
}

/* ---- names ---- */

int auth_role_parse(const char *s)
{
    const char *const *names = http_role_names();
    for (int i = 0; s && names[i]; i++)
        if (strcmp(s, names[i]) == 0)
            return HTTP_VIEWER + i;
    return -1;
}

const char *auth_role_name(enum http_perm role)
{
    return http_perm_name(role);
}

int auth_alg_parse(const char *s)
{
    static const struct {
        const char *name;
        jwt_alg_t alg;
    } ok[] = {{"RS256", JWT_ALG_RS256},
              {"RS384", JWT_ALG_RS384},
              {"RS512", JWT_ALG_RS512},
              {"ES256", JWT_ALG_ES256},
              {"ES384", JWT_ALG_ES384}};
    if (!s)
        return -1;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strcmp(s, ok[i].name) == 0) /* case-sensitive, as RFC 7515 says */
            return (int)ok[i].alg;
    return -1;
}

/* ---- JWK -> PEM ---- */

void auth_key_clear(struct auth_key *k)
{
    if (!k)
        return;
    free(k->pem);
    EVP_PKEY_free(k->pkey);
    memset(k, 0, sizeof *k);
}

static BIGNUM *jwk_bn(const json_t *jwk, const char *member, size_t *bytes)
{
    const char *s = json_string_value(json_object_get(jwk, member));
    if (!s)
        return NULL;
    size_t len = 0;
    unsigned char *raw = b64url_decode(s, strlen(s), &len);
    if (!raw || len == 0) {
        free(raw);
        return NULL;
    }
    BIGNUM *bn = BN_bin2bn(raw, (int)len, NULL);
    if (bytes)
        *bytes = len;
    free(raw);
    return bn;
}

static unsigned char *jwk_bytes(const json_t *jwk, const char *member, size_t *len)
{
    const char *s = json_string_value(json_object_get(jwk, member));
    return s ? b64url_decode(s, strlen(s), len) : NULL;
}

static char *pkey_to_pem(EVP_PKEY *pkey, size_t *len)
{
    char *pem = NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    if (!bio || PEM_write_bio_PUBKEY(bio, pkey) != 1)
        goto out;
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    if (n <= 0)
        goto out;
    pem = malloc((size_t)n + 1);
    if (!pem)
        goto out;
    memcpy(pem, data, (size_t)n);
    pem[n] = '\0';
    *len = (size_t)n;
out:
    BIO_free(bio);
    return pem;
}

int auth_jwk_to_key(const json_t *jwk, struct auth_key *out, char *err, size_t errlen)
{
    int rc = -1;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    BIGNUM *n = NULL, *e = NULL;
    unsigned char *x = NULL, *y = NULL, *point = NULL;
    memset(out, 0, sizeof *out);

    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *kid = json_string_value(json_object_get(jwk, "kid"));
    const char *use = json_string_value(json_object_get(jwk, "use"));
    const char *alg = json_string_value(json_object_get(jwk, "alg"));
    if (!json_is_object(jwk) || !kty) {
        snprintf(err, errlen, "not a JWK (no kty)");
        goto out;
    }
    if (!kid || !*kid || strlen(kid) >= sizeof out->kid) {
        snprintf(err, errlen, "JWK without a usable kid");
        goto out;
    }
    if (use && strcmp(use, "sig") != 0) {
        snprintf(err, errlen, "JWK %s is for use '%s', not sig", kid, use);
        goto out;
    }
    if (alg && strlen(alg) >= sizeof out->alg) {
        snprintf(err, errlen, "JWK %s has an unknown alg", kid);
        goto out;
    }
    bld = OSSL_PARAM_BLD_new();
    if (!bld)
        goto out;
    const char *type;
    if (strcmp(kty, "RSA") == 0) {
        size_t nbytes = 0;
        n = jwk_bn(jwk, "n", &nbytes);
        e = jwk_bn(jwk, "e", NULL);
        if (!n || !e) {
            snprintf(err, errlen, "RSA JWK %s lacks a valid n or e", kid);
            goto out;
        }
        if (BN_num_bits(n) < 2048) {
            snprintf(err, errlen, "RSA JWK %s is under 2048 bits", kid);
            goto out;
        }
        if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
            goto out;
        type = "RSA";
    } else if (strcmp(kty, "EC") == 0) {
        const char *crv = json_string_value(json_object_get(jwk, "crv"));
        const char *group;
        size_t want;
        if (crv && strcmp(crv, "P-256") == 0) {
            group = "prime256v1";
            want = 32;
        } else if (crv && strcmp(crv, "P-384") == 0) {
            group = "secp384r1";
            want = 48;
        } else {
            snprintf(err, errlen, "EC JWK %s has an unsupported curve", kid);
            goto out;
        }
        size_t xl = 0, yl = 0;
        x = jwk_bytes(jwk, "x", &xl);
        y = jwk_bytes(jwk, "y", &yl);
        if (!x || !y || xl != want || yl != want) {
            snprintf(err, errlen, "EC JWK %s lacks a valid x or y", kid);
            goto out;
        }
        point = malloc(1 + 2 * want);
        if (!point)
            goto out;
        point[0] = 0x04; /* uncompressed point */
        memcpy(point + 1, x, want);
        memcpy(point + 1 + want, y, want);
        if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * want))
            goto out;
        snprintf(out->crv, sizeof out->crv, "%s", crv);
        type = "EC";
    } else {
        snprintf(err, errlen, "JWK %s has unsupported kty '%s'", kid, kty);
        goto out;
    }
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        snprintf(err, errlen, "JWK %s is not a valid %s public key", kid, type);
        goto out;
    }
    out->pem = pkey_to_pem(pkey, &out->pemlen);
    if (!out->pem) {
        snprintf(err, errlen, "cannot encode JWK %s as PEM", kid);
        goto out;
    }
    snprintf(out->kid, sizeof out->kid, "%s", kid);
    snprintf(out->kty, sizeof out->kty, "%s", type);
    snprintf(out->alg, sizeof out->alg, "%s", alg ? alg : "");
    out->pkey = pkey;
    pkey = NULL;
    rc = 0;
out:
    if (rc != 0) {
        free(out->pem);
        out->pem = NULL;
    }
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    free(x);
    free(y);
    free(point);
    return rc;
}

/* ---- keysets ---- */

struct auth_keyset *auth_keyset_from_jwks(const json_t *jwks)
{
    const json_t *keys = json_object_get(jwks, "keys");
    if (!json_is_array(keys))
        return NULL;
    struct auth_keyset *ks = calloc(1, sizeof *ks);
    if (!ks)
        return NULL;
    ks->keys = calloc(json_array_size(keys) + 1, sizeof *ks->keys);
    if (!ks->keys) {
        free(ks);
        return NULL;
    }
    ks->refs = 1;
    size_t i;
    const json_t *jwk;
    json_array_foreach(keys, i, jwk)
    {
        char err[160];
        if (auth_jwk_to_key(jwk, &ks->keys[ks->n], err, sizeof err) == 0)
            ks->n++;
        else
            log_event(LOG_DEBUG, "JWKS key skipped", json_pack("{s:s}", "reason", err));
    }
    return ks;
}

struct auth_keyset *auth_keyset_ref(struct auth_keyset *ks)
{
    if (ks)
        __atomic_add_fetch(&ks->refs, 1, __ATOMIC_ACQ_REL);
    return ks;
}

void auth_keyset_unref(struct auth_keyset *ks)
{
    if (!ks || __atomic_sub_fetch(&ks->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (size_t i = 0; i < ks->n; i++)
        auth_key_clear(&ks->keys[i]);
    free(ks->keys);
    free(ks);
}

const struct auth_key *auth_keyset_find(const struct auth_keyset *ks, const char *kid)
{
    for (size_t i = 0; ks && i < ks->n; i++)
        if (strcmp(ks->keys[i].kid, kid) == 0)
            return &ks->keys[i];
    return NULL;
}

int auth_keyset_keeps(const struct auth_keyset *old, const struct auth_keyset *new_set)
{
    for (size_t i = 0; old && i < old->n; i++) {
        const struct auth_key *k = auth_keyset_find(new_set, old->keys[i].kid);
        if (!k || k->pemlen != old->keys[i].pemlen ||
            memcmp(k->pem, old->keys[i].pem, k->pemlen) != 0 || strcmp(k->alg, old->keys[i].alg))
            return 0;
    }
    return 1;
}

long auth_cache_max_age(const char *cc, long min_age)
{
    long age = min_age;
    const char *p = cc;
    while (p && (p = strcasestr(p, "max-age")) != NULL) {
        const char *q = p + 7;
        while (*q == ' ')
            q++;
        if (*q == '=') {
            q++;
            while (*q == ' ' || *q == '"')
                q++;
            char *end;
            long v = strtol(q, &end, 10);
            if (end != q && v >= 0)
                age = v;
            break;
        }
        p = q;
    }
    if (age < min_age)
        age = min_age;
    if (age > AUTH_JWKS_MAX_AGE_S)
        age = AUTH_JWKS_MAX_AGE_S;
    return age;
}

/* ---- header ---- */

static int is_b64url_segment(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!b64url_is_char((unsigned char)s[i]))
            return 0;
    return 1;
}

int auth_jwt_head_parse(const char *token, const int *algs, int nalgs, struct auth_jwt_head *h,
                        enum auth_reason *reason)
{
    int rc = -1;
    unsigned char *raw = NULL;
    json_t *head = NULL;
    memset(h, 0, sizeof *h);
    size_t len = strnlen(token, AUTH_TOKEN_MAX + 1);
    if (len > AUTH_TOKEN_MAX) {
        *reason = AUTH_R_OVERSIZED;
        goto out;
    }
    *reason = AUTH_R_MALFORMED;
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (!d1 || !d2 || d1 == token || d2 == d1 + 1 ||
        memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)))
        goto out;
    size_t l1 = (size_t)(d1 - token), l2 = (size_t)(d2 - d1 - 1),
           l3 = len - (size_t)(d2 + 1 - token);
    if (!is_b64url_segment(token, l1) || !is_b64url_segment(d1 + 1, l2) ||
        !is_b64url_segment(d2 + 1, l3))
        goto out;
    size_t hl = 0;
    raw = b64url_decode(token, l1, &hl);
    if (!raw)
        goto out;
    head = json_loadb((const char *)raw, hl, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(head))
        goto out;
    const char *alg = json_string_value(json_object_get(head, "alg"));
    const char *kid = json_string_value(json_object_get(head, "kid"));
    const char *typ = json_string_value(json_object_get(head, "typ"));
    if (json_object_get(head, "typ") && !typ)
        goto out;
    if (typ && strcasecmp(typ, "JWT") != 0 && strcasecmp(typ, "at+jwt") != 0 &&
        strcasecmp(typ, "application/at+jwt") != 0)
        goto out;
    if (json_object_get(head, "crit")) /* no critical extensions are understood */
        goto out;
    *reason = AUTH_R_ALG;
    int a = auth_alg_parse(alg); /* none and HS* never parse */
    if (a < 0 || l3 == 0)
        goto out;
    int allowed = 0;
    for (int i = 0; i < nalgs; i++)
        allowed |= algs[i] == a;
    if (!allowed)
        goto out;
    *reason = AUTH_R_UNKNOWN_KID;
    if (!kid || !*kid || strlen(kid) >= sizeof h->kid)
        goto out;
    h->alg = a;
    snprintf(h->kid, sizeof h->kid, "%s", kid);
    rc = 0;
out:
    json_decref(head);
    free(raw);
    return rc;
}

int auth_jwt_payload_parse(const char *token, json_t **claims)
{
    *claims = NULL;
    size_t len = strnlen(token, AUTH_TOKEN_MAX + 1);
    if (len > AUTH_TOKEN_MAX)
        return -1;
    const char *d1 = memchr(token, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
    if (!d2)
        return -1;
    size_t pl = 0;
    unsigned char *raw = b64url_decode(d1 + 1, (size_t)(d2 - d1 - 1), &pl);
    if (!raw)
        return -1;
    *claims = json_loadb((const char *)raw, pl, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (!json_is_object(*claims)) {
        json_decref(*claims);
        *claims = NULL;
        return -1;
    }
    return 0;
}

int auth_key_fits_alg(const struct auth_key *k, int alg)
{
    const char *name = jwt_alg_str((jwt_alg_t)alg);
    if (!name || (k->alg[0] && strcmp(k->alg, name) != 0))
        return 0;
    switch ((jwt_alg_t)alg) {
    case JWT_ALG_RS256:
    case JWT_ALG_RS384:
    case JWT_ALG_RS512:
        return strcmp(k->kty, "RSA") == 0;
    case JWT_ALG_ES256:
        return strcmp(k->kty, "EC") == 0 && strcmp(k->crv, "P-256") == 0;
    case JWT_ALG_ES384:
        return strcmp(k->kty, "EC") == 0 && strcmp(k->crv, "P-384") == 0;
    default:
        return 0;
    }
}

/* A JWS ECDSA signature (r || s, each `half` bytes) as DER for OpenSSL. malloc'd. */
static unsigned char *ecdsa_raw_to_der(const unsigned char *raw, size_t len, size_t half,
                                       size_t *derlen)
{
    unsigned char *der = NULL;
    ECDSA_SIG *sig = NULL;
    BIGNUM *r = NULL, *s = NULL;
    if (len != 2 * half)
        return NULL;
    r = BN_bin2bn(raw, (int)half, NULL);
    s = BN_bin2bn(raw + half, (int)half, NULL);
    sig = ECDSA_SIG_new();
    if (!r || !s || !sig || ECDSA_SIG_set0(sig, r, s) != 1)
        goto out;
    r = s = NULL; /* owned by sig now */
    int n = i2d_ECDSA_SIG(sig, &der);
    if (n <= 0) {
        der = NULL;
        goto out;
    }
    *derlen = (size_t)n;
out:
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return der;
}

int auth_jwt_verify_sig(const char *token, int alg, const struct auth_key *key, json_t **claims,
                        enum auth_reason *reason)
{
    unsigned char *sig = NULL, *der = NULL;
    EVP_MD_CTX *ctx = NULL;
    int rc = -1;
    *claims = NULL;
    *reason = AUTH_R_ALG;
    if (!key->pkey || !auth_key_fits_alg(key, alg))
        goto out;
    const EVP_MD *md;
    size_t ec_half = 0;
    switch ((jwt_alg_t)alg) {
    case JWT_ALG_RS256:
        md = EVP_sha256();
        break;
    case JWT_ALG_RS384:
        md = EVP_sha384();
        break;
    case JWT_ALG_RS512:
        md = EVP_sha512();
        break;
    case JWT_ALG_ES256:
        md = EVP_sha256();
        ec_half = 32;
        break;
    case JWT_ALG_ES384:
        md = EVP_sha384();
        ec_half = 48;
        break;
    default:
        goto out;
    }
    *reason = AUTH_R_MALFORMED;
    const char *d1 = strchr(token, '.');
    const char *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    if (!d2)
        goto out;
    size_t siglen = 0;
    sig = b64url_decode(d2 + 1, strlen(d2 + 1), &siglen);
    if (!sig || siglen == 0)
        goto out;
    const unsigned char *check = sig;
    size_t checklen = siglen;
    *reason = AUTH_R_SIGNATURE;
    if (ec_half) {
        der = ecdsa_raw_to_der(sig, siglen, ec_half, &checklen);
        if (!der)
            goto out;
        check = der;
    }
    ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestVerifyInit(ctx, NULL, md, NULL, key->pkey) != 1 ||
        EVP_DigestVerify(ctx, check, checklen, (const unsigned char *)token,
                         (size_t)(d2 - token)) != 1)
        goto out;
    /* The claims, read from the very bytes whose signature was just checked. */
    *reason = AUTH_R_MALFORMED;
    if (auth_jwt_payload_parse(token, claims) != 0)
        goto out;
    rc = 0;
out:
    if (rc != 0)
        ERR_clear_error(); /* a refused signature is an answer, not an error to keep */
    EVP_MD_CTX_free(ctx);
    free(sig);
    OPENSSL_free(der);
    return rc;
}

/* ---- claims ---- */

/* A NumericDate claim: absent (0, *present 0), or a number (seconds). -1 when malformed. */
static int numeric_date(const json_t *claims, const char *name, double *out, int *present)
{
    const json_t *v = json_object_get(claims, name);
    *present = v != NULL;
    if (!v)
        return 0;
    if (!json_is_number(v))
        return -1;
    *out = json_number_value(v);
    return 0;
}

int auth_claims_check(const json_t *claims, const char *issuer, const char *audience, time_t now,
                      enum auth_reason *reason)
{
    double exp = 0, nbf = 0, iat = 0;
    int has_exp, has_nbf, has_iat;
    *reason = AUTH_R_MALFORMED;
    if (!json_is_object(claims) || numeric_date(claims, "exp", &exp, &has_exp) != 0 ||
        numeric_date(claims, "nbf", &nbf, &has_nbf) != 0 ||
        numeric_date(claims, "iat", &iat, &has_iat) != 0)
        return -1;
    const char *iss = json_string_value(json_object_get(claims, "iss"));
    if (!iss || strcmp(iss, issuer) != 0) {
        *reason = AUTH_R_ISSUER;
        return -1;
    }
    int aud_ok = 0;
    const json_t *aud = json_object_get(claims, "aud");
    if (json_is_string(aud)) {
        aud_ok = strcmp(json_string_value(aud), audience) == 0;
    } else if (json_is_array(aud)) {
        size_t i;
        const json_t *a;
        json_array_foreach(aud, i, a) aud_ok |=
            json_is_string(a) && strcmp(json_string_value(a), audience) == 0;
    }
    const char *azp = json_string_value(json_object_get(claims, "azp"));
    if (!aud_ok && azp && strcmp(azp, audience) == 0)
        aud_ok = 1;
    if (!aud_ok) {
        *reason = AUTH_R_AUDIENCE;
        return -1;
    }
    if (!has_exp || exp + AUTH_LEEWAY_S <= (double)now) {
        *reason = AUTH_R_EXPIRED;
        return -1;
    }
    if ((has_nbf && nbf - AUTH_LEEWAY_S > (double)now) ||
        (has_iat && iat - AUTH_LEEWAY_S > (double)now)) {
        *reason = AUTH_R_NOT_YET_VALID;
        return -1;
    }
    return 0;
}

static enum http_perm best_role(const json_t *roles, const char *const *role_names,
                                enum http_perm best)
{
    size_t i;
    const json_t *r;
    if (!json_is_array(roles))
        return best;
    json_array_foreach(roles, i, r)
    {
        const char *s = json_string_value(r);
        for (int k = HTTP_VIEWER; s && k <= HTTP_ADMIN; k++)
            if (role_names[k] && strcmp(s, role_names[k]) == 0 && (enum http_perm)k > best)
                best = (enum http_perm)k;
    }
    return best;
}

enum http_perm auth_roles_from_claims(const json_t *claims, const char *const *role_names,
                                      const char *const *clients)
{
    enum http_perm best = HTTP_PUBLIC;
    best = best_role(json_object_get(json_object_get(claims, "realm_access"), "roles"), role_names,
                     best);
    const json_t *ra = json_object_get(claims, "resource_access");
    for (; clients && *clients; clients++)
        if (**clients)
            best = best_role(json_object_get(json_object_get(ra, *clients), "roles"), role_names,
                             best);
    return best;
}
