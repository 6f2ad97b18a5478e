/* The pure parts of token verification: base64url, JWK -> public key (RSA and EC P-256, the
 * PEM equal to OpenSSL's own for the same key), header checks (none, HS*, unconfigured algs,
 * kid, typ, size), key/alg fit, signatures (RS256 and ES256), claim checks with leeway, role
 * mapping, Cache-Control max-age clamping. */
#include <jwt.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_internal.h"
#include "unit.h"

static char *b64(const char *s)
{
    return b64url_encode((const unsigned char *)s, strlen(s));
}

static void test_b64url(void)
{
    const char *cases[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar", "\xff\xfe\xfd"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *e = b64(cases[i]);
        size_t n = 0;
        unsigned char *d = b64url_decode(e, strlen(e), &n);
        EXPECT(d && n == strlen(cases[i]) && memcmp(d, cases[i], n) == 0, "round trip %zu", i);
        EXPECT(!strchr(e, '=') && !strchr(e, '+') && !strchr(e, '/'), "url alphabet, no padding");
        free(e);
        free(d);
    }
    size_t n;
    unsigned char *d = b64url_decode("Zm9vYg==", 8, &n);
    EXPECT(d && n == 4 && memcmp(d, "foob", 4) == 0, "padding tolerated");
    free(d);
    EXPECT(b64url_decode("Zm9v+Yg", 7, &n) == NULL, "'+' refused");
    EXPECT(b64url_decode("Zm9v.Yg", 7, &n) == NULL, "'.' refused");
    EXPECT(b64url_decode("Z", 1, &n) == NULL, "impossible length refused");
    char hex[65];
    auth_sha256_hex("abc", 3, hex);
    EXPECT(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0,
           "sha256");
}

static char *bn_b64(EVP_PKEY *k, const char *param)
{
    BIGNUM *bn = NULL;
    EVP_PKEY_get_bn_param(k, param, &bn);
    int n = BN_num_bytes(bn);
    unsigned char *raw = malloc((size_t)n);
    BN_bn2bin(bn, raw);
    char *out = b64url_encode(raw, (size_t)n);
    free(raw);
    BN_free(bn);
    return out;
}

static char *pem_of(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PUBKEY(b, k);
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *out = malloc((size_t)n + 1); /* the BIO's data is not NUL-terminated */
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(b);
    return out;
}

static json_t *rsa_jwk(EVP_PKEY *k, const char *kid)
{
    char *n = bn_b64(k, OSSL_PKEY_PARAM_RSA_N), *e = bn_b64(k, OSSL_PKEY_PARAM_RSA_E);
    json_t *j =
        json_pack("{s:s,s:s,s:s,s:s,s:s}", "kty", "RSA", "kid", kid, "use", "sig", "n", n, "e", e);
    free(n);
    free(e);
    return j;
}

static json_t *ec_jwk(EVP_PKEY *k, const char *kid)
{
    unsigned char pub[65];
    size_t len = 0;
    EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof pub, &len);
    char *x = b64url_encode(pub + 1, 32), *y = b64url_encode(pub + 33, 32);
    json_t *j =
        json_pack("{s:s,s:s,s:s,s:s,s:s}", "kty", "EC", "kid", kid, "crv", "P-256", "x", x, "y", y);
    free(x);
    free(y);
    return j;
}

/* header.payload.signature, signed with `k` (RS256, or ES256 as raw r||s). */
static char *sign_token(EVP_PKEY *k, const char *header, const char *payload, int ec)
{
    char *h = b64(header), *p = b64(payload);
    size_t inlen = strlen(h) + strlen(p) + 1;
    char *input = malloc(inlen + 1);
    snprintf(input, inlen + 1, "%s.%s", h, p);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t siglen = 0;
    EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k);
    EVP_DigestSign(ctx, NULL, &siglen, (unsigned char *)input, inlen);
    unsigned char *sig = malloc(siglen);
    EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)input, inlen);
    EVP_MD_CTX_free(ctx);
    unsigned char raw[64];
    const unsigned char *use = sig;
    size_t uselen = siglen;
    if (ec) {
        const unsigned char *pp = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &pp, (long)siglen);
        BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
        ECDSA_SIG_free(es);
        use = raw;
        uselen = 64;
    }
    char *s = b64url_encode(use, uselen);
    size_t total = inlen + strlen(s) + 2;
    char *tok = malloc(total);
    snprintf(tok, total, "%s.%s", input, s);
    free(h);
    free(p);
    free(input);
    free(sig);
    free(s);
    return tok;
}

static void test_jwk_and_signatures(void)
{
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    EVP_PKEY *ec = EVP_EC_gen("P-256");
    EVP_PKEY *other = EVP_RSA_gen(2048);
    char err[200];
    struct auth_key kr, ke, ko;

    json_t *j = rsa_jwk(rsa, "r1");
    EXPECT(auth_jwk_to_key(j, &kr, err, sizeof err) == 0, "RSA JWK: %s", err);
    char *pem = pem_of(rsa);
    EXPECT(kr.pem && strcmp(kr.pem, pem) == 0, "RSA PEM equals OpenSSL's own");
    free(pem);
    json_decref(j);
    j = ec_jwk(ec, "e1");
    EXPECT(auth_jwk_to_key(j, &ke, err, sizeof err) == 0, "EC JWK: %s", err);
    pem = pem_of(ec);
    EXPECT(ke.pem && strcmp(ke.pem, pem) == 0, "EC PEM equals OpenSSL's own");
    free(pem);
    json_decref(j);
    j = rsa_jwk(other, "r1");
    auth_jwk_to_key(j, &ko, err, sizeof err);
    json_decref(j);

    struct auth_key bad;
    EVP_PKEY *small = EVP_RSA_gen(1024);
    j = rsa_jwk(small, "s");
    EXPECT(auth_jwk_to_key(j, &bad, err, sizeof err) == -1, "RSA 1024 refused");
    json_decref(j);
    EVP_PKEY_free(small);
    j = json_pack("{s:s,s:s,s:s}", "kty", "oct", "kid", "h", "k", "c2VjcmV0");
    EXPECT(auth_jwk_to_key(j, &bad, err, sizeof err) == -1, "symmetric key refused");
    json_decref(j);
    j = rsa_jwk(rsa, "enc");
    json_object_set_new(j, "use", json_string("enc"));
    EXPECT(auth_jwk_to_key(j, &bad, err, sizeof err) == -1, "use enc refused");
    json_object_del(j, "use");
    json_object_del(j, "kid");
    EXPECT(auth_jwk_to_key(j, &bad, err, sizeof err) == -1, "no kid refused");
    json_decref(j);

    EXPECT(auth_key_fits_alg(&kr, JWT_ALG_RS256) && !auth_key_fits_alg(&kr, JWT_ALG_ES256) &&
               !auth_key_fits_alg(&kr, JWT_ALG_HS256),
           "RSA key fits RS*, not ES256 or HS256");
    EXPECT(auth_key_fits_alg(&ke, JWT_ALG_ES256) && !auth_key_fits_alg(&ke, JWT_ALG_RS256) &&
               !auth_key_fits_alg(&ke, JWT_ALG_ES384),
           "P-256 key fits ES256 only");
    snprintf(kr.alg, sizeof kr.alg, "RS512");
    EXPECT(!auth_key_fits_alg(&kr, JWT_ALG_RS256), "a JWK alg must match");
    kr.alg[0] = '\0';

    enum auth_reason why;
    json_t *claims = NULL;
    char *t = sign_token(rsa, "{\"alg\":\"RS256\",\"kid\":\"r1\",\"typ\":\"at+jwt\"}",
                         "{\"sub\":\"a\"}", 0);
    EXPECT(auth_jwt_verify_sig(t, JWT_ALG_RS256, &kr, &claims, &why) == 0, "RS256 verifies");
    EXPECT(strcmp(json_string_value(json_object_get(claims, "sub")) ?: "", "a") == 0, "claims");
    json_decref(claims);
    EXPECT(auth_jwt_verify_sig(t, JWT_ALG_RS256, &ko, &claims, &why) == -1 &&
               why == AUTH_R_SIGNATURE,
           "another key's signature fails");
    EXPECT(auth_jwt_verify_sig(t, JWT_ALG_ES256, &kr, &claims, &why) == -1 && why == AUTH_R_ALG,
           "alg that does not fit the key");
    /* Tamper: swap the payload. */
    char *d1 = strchr(t, '.'), *d2 = strchr(d1 + 1, '.');
    char *p2 = b64("{\"sub\":\"b\"}");
    char forged[4096];
    snprintf(forged, sizeof forged, "%.*s.%s%s", (int)(d1 - t), t, p2, d2);
    EXPECT(auth_jwt_verify_sig(forged, JWT_ALG_RS256, &kr, &claims, &why) == -1 &&
               why == AUTH_R_SIGNATURE,
           "tampered payload fails");
    free(p2);
    free(t);
    t = sign_token(ec, "{\"alg\":\"ES256\",\"kid\":\"e1\"}", "{\"sub\":\"e\"}", 1);
    EXPECT(auth_jwt_verify_sig(t, JWT_ALG_ES256, &ke, &claims, &why) == 0, "ES256 verifies");
    json_decref(claims);
    free(t);

    auth_key_clear(&kr);
    auth_key_clear(&ke);
    auth_key_clear(&ko);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
    EVP_PKEY_free(other);
}

static char *token_with_header(const char *header)
{
    char *h = b64(header);
    size_t n = strlen(h) + 32;
    char *t = malloc(n);
    snprintf(t, n, "%s.eyJ9.c2ln", h);
    free(h);
    return t;
}

static void test_head(void)
{
    int algs[] = {JWT_ALG_RS256};
    struct auth_jwt_head h;
    enum auth_reason why;
    static const struct {
        const char *header;
        int ok;
        enum auth_reason why;
    } cases[] = {
        {"{\"alg\":\"RS256\",\"kid\":\"k\"}", 1, 0},
        {"{\"alg\":\"RS256\",\"kid\":\"k\",\"typ\":\"JWT\"}", 1, 0},
        {"{\"alg\":\"RS256\",\"kid\":\"k\",\"typ\":\"at+jwt\"}", 1, 0},
        {"{\"alg\":\"none\",\"kid\":\"k\"}", 0, AUTH_R_ALG},
        {"{\"alg\":\"HS256\",\"kid\":\"k\"}", 0, AUTH_R_ALG},
        {"{\"alg\":\"rs256\",\"kid\":\"k\"}", 0, AUTH_R_ALG},
        {"{\"alg\":\"ES256\",\"kid\":\"k\"}", 0, AUTH_R_ALG}, /* not configured */
        {"{\"alg\":\"RS256\"}", 0, AUTH_R_UNKNOWN_KID},
        {"{\"alg\":\"RS256\",\"kid\":\"k\",\"typ\":\"dpop+jwt\"}", 0, AUTH_R_MALFORMED},
        {"{\"alg\":\"RS256\",\"kid\":\"k\",\"crit\":[\"x\"]}", 0, AUTH_R_MALFORMED},
        {"{\"alg\":\"RS256\",\"alg\":\"none\",\"kid\":\"k\"}", 0, AUTH_R_MALFORMED},
        {"not json", 0, AUTH_R_MALFORMED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *t = token_with_header(cases[i].header);
        int rc = auth_jwt_head_parse(t, algs, 1, &h, &why);
        EXPECT(cases[i].ok ? rc == 0 : (rc == -1 && why == cases[i].why), "header %s",
               cases[i].header);
        free(t);
    }
    EXPECT(auth_jwt_head_parse("a.b", algs, 1, &h, &why) == -1 && why == AUTH_R_MALFORMED,
           "two parts");
    EXPECT(auth_jwt_head_parse("a.b.c.d", algs, 1, &h, &why) == -1, "four parts");
    char *t = token_with_header("{\"alg\":\"RS256\",\"kid\":\"k\"}");
    t[strlen(t) - 5] = '\0'; /* no signature part: "xxx.eyJ9." */
    EXPECT(auth_jwt_head_parse(t, algs, 1, &h, &why) == -1, "empty signature");
    free(t);
    char *big = malloc(AUTH_TOKEN_MAX + 2);
    memset(big, 'a', AUTH_TOKEN_MAX + 1);
    big[AUTH_TOKEN_MAX + 1] = '\0';
    EXPECT(auth_jwt_head_parse(big, algs, 1, &h, &why) == -1 && why == AUTH_R_OVERSIZED,
           "oversized");
    free(big);
    EXPECT(auth_alg_parse("none") < 0 && auth_alg_parse("HS256") < 0 &&
               auth_alg_parse("HS512") < 0 && auth_alg_parse("RS256") == JWT_ALG_RS256,
           "alg names");
}

static void test_claims(void)
{
    const time_t now = 1800000000;
    const char *iss = "https://auth.qdb.qa/realms/qdb-one";
    enum auth_reason why;
    static const struct {
        const char *json;
        int ok;
        enum auth_reason why;
    } cases[] = {
        {"{\"iss\":\"ISS\",\"aud\":\"qdb-control\",\"exp\":1800000100}", 1, 0},
        {"{\"iss\":\"ISS\",\"aud\":[\"account\",\"qdb-control\"],\"exp\":1800000100}", 1, 0},
        {"{\"iss\":\"ISS\",\"aud\":\"account\",\"azp\":\"qdb-control\",\"exp\":1800000100}", 1, 0},
        {"{\"iss\":\"ISS\",\"aud\":\"account\",\"exp\":1800000100}", 0, AUTH_R_AUDIENCE},
        {"{\"iss\":\"ISS\",\"exp\":1800000100}", 0, AUTH_R_AUDIENCE},
        {"{\"iss\":\"https://evil\",\"aud\":\"qdb-control\",\"exp\":1800000100}", 0, AUTH_R_ISSUER},
        {"{\"aud\":\"qdb-control\",\"exp\":1800000100}", 0, AUTH_R_ISSUER},
        {"{\"iss\":\"ISS\",\"aud\":\"qdb-control\"}", 0, AUTH_R_EXPIRED},
        {"{\"iss\":\"ISS\",\"aud\":\"qdb-control\",\"exp\":1799999941}", 1, 0}, /* 59 s late */
        {"{\"iss\":\"ISS\",\"aud\":\"qdb-control\",\"exp\":1799999940}", 0, AUTH_R_EXPIRED},
        {"{\"iss\":\"ISS\",\"aud\":\"qdb-control\",\"exp\":1800000100,\"nbf\":1800000059}", 1, 0},
        {"{\"iss\":\"ISS\",\"aud\":\"qdb-control\",\"exp\":1800000100,\"nbf\":1800000061}", 0,
         AUTH_R_NOT_YET_VALID},
        {"{\"iss\":\"ISS\",\"aud\":\"qdb-control\",\"exp\":1800000100,\"iat\":1800000500}", 0,
         AUTH_R_NOT_YET_VALID},
        {"{\"iss\":\"ISS\",\"aud\":\"qdb-control\",\"exp\":\"1800000100\"}", 0, AUTH_R_MALFORMED},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[512];
        const char *p = strstr(cases[i].json, "ISS");
        if (p)
            snprintf(text, sizeof text, "%.*s%s%s", (int)(p - cases[i].json), cases[i].json, iss,
                     p + 3);
        else
            snprintf(text, sizeof text, "%s", cases[i].json);
        json_t *c = json_loads(text, 0, NULL);
        int rc = auth_claims_check(c, iss, "qdb-control", now, &why);
        EXPECT(cases[i].ok ? rc == 0 : (rc == -1 && why == cases[i].why),
               "claims %s (rc %d why %d)", text, rc, (int)why);
        json_decref(c);
    }
}

static void test_roles(void)
{
    const char *names[4] = {NULL, "qdb-viewer", "qdb-operator", "qdb-admin"};
    const char *clients[] = {"qdb-control", "qdb-console", NULL};
    json_t *c =
        json_loads("{\"realm_access\":{\"roles\":[\"offline_access\",\"qdb-viewer\"]}}", 0, NULL);
    EXPECT(auth_roles_from_claims(c, names, clients) == HTTP_VIEWER, "realm role");
    json_decref(c);
    c = json_loads("{\"realm_access\":{\"roles\":[\"qdb-viewer\"]},\"resource_access\":"
                   "{\"qdb-control\":{\"roles\":[\"qdb-admin\"]}}}",
                   0, NULL);
    EXPECT(auth_roles_from_claims(c, names, clients) == HTTP_ADMIN, "client role, highest wins");
    json_decref(c);
    c = json_loads("{\"resource_access\":{\"other-app\":{\"roles\":[\"qdb-admin\"]}}}", 0, NULL);
    EXPECT(auth_roles_from_claims(c, names, clients) == HTTP_PUBLIC,
           "another client's role is not ours");
    json_decref(c);
    c = json_loads("{\"roles\":[\"qdb-admin\"],\"realm_access\":{\"roles\":\"qdb-admin\"}}", 0,
                   NULL);
    EXPECT(auth_roles_from_claims(c, names, clients) == HTTP_PUBLIC, "odd shapes grant nothing");
    json_decref(c);
    const char *custom[4] = {NULL, "ops-read", "ops-run", "ops-root"};
    c = json_loads("{\"realm_access\":{\"roles\":[\"ops-run\",\"qdb-admin\"]}}", 0, NULL);
    EXPECT(auth_roles_from_claims(c, custom, clients) == HTTP_OPERATOR, "configured names");
    json_decref(c);
    EXPECT(auth_role_parse("admin") == HTTP_ADMIN && auth_role_parse("Admin") == -1, "role names");
}

static void test_max_age(void)
{
    EXPECT(auth_cache_max_age(NULL, 300) == 300, "absent -> 5 min");
    EXPECT(auth_cache_max_age(" public, max-age=3600\r\n", 300) == 3600, "honoured");
    EXPECT(auth_cache_max_age("max-age=10", 300) == 300, "clamped up");
    EXPECT(auth_cache_max_age("max-age=999999", 300) == 86400, "clamped down");
    EXPECT(auth_cache_max_age("no-cache", 300) == 300, "no max-age");
}

static void test_tokens(void)
{
    char *a = auth_api_token_new(), *b = auth_api_token_new();
    EXPECT(a && b && strncmp(a, "qdb_", 4) == 0 && strlen(a) == 47 && strcmp(a, b) != 0,
           "qdb_ + 43 base64url characters, random");
    free(a);
    free(b);
    EXPECT(auth_environment_problem("prod-eu-1") == NULL, "env ok");
    EXPECT(auth_environment_problem("Prod") != NULL && auth_environment_problem("") != NULL,
           "env bad");
    EXPECT(auth_token_name_problem("ci deployer") == NULL && auth_token_name_problem("a\nb"),
           "names");
}

static void test_payload_and_keysets(void)
{
    json_t *c = NULL;
    char *h = b64("{\"alg\":\"RS256\",\"kid\":\"k\"}"), *p = b64("{\"sub\":\"x\",\"exp\":5}");
    char tok[512];
    snprintf(tok, sizeof tok, "%s.%s.c2ln", h, p);
    EXPECT(auth_jwt_payload_parse(tok, &c) == 0 && json_integer_value(json_object_get(c, "exp")) == 5,
           "claims parsed");
    json_decref(c);
    char *dup = b64("{\"exp\":1,\"exp\":2}"), *arr = b64("[1]");
    snprintf(tok, sizeof tok, "%s.%s.c2ln", h, dup);
    EXPECT(auth_jwt_payload_parse(tok, &c) == -1 && !c, "duplicate members refused");
    snprintf(tok, sizeof tok, "%s.%s.c2ln", h, arr);
    EXPECT(auth_jwt_payload_parse(tok, &c) == -1 && !c, "claims that are no object refused");
    snprintf(tok, sizeof tok, "%s.%s", h, p);
    EXPECT(auth_jwt_payload_parse(tok, &c) == -1 && !c, "two parts refused");
    snprintf(tok, sizeof tok, "%s.%s+.c2ln", h, p);
    EXPECT(auth_jwt_payload_parse(tok, &c) == -1 && !c, "bad base64url refused");
    free(h);
    free(p);
    free(dup);
    free(arr);

    EVP_PKEY *k1 = EVP_RSA_gen(2048), *k2 = EVP_RSA_gen(2048);
    json_t *a = rsa_jwk(k1, "a"), *b = rsa_jwk(k2, "b"), *a2 = rsa_jwk(k2, "a");
    json_t *d_a = json_pack("{s:[O]}", "keys", a), *d_ab = json_pack("{s:[O,O]}", "keys", a, b),
           *d_b = json_pack("{s:[O]}", "keys", b), *d_a2 = json_pack("{s:[O]}", "keys", a2);
    struct auth_keyset *s_a = auth_keyset_from_jwks(d_a), *s_ab = auth_keyset_from_jwks(d_ab),
                       *s_b = auth_keyset_from_jwks(d_b), *s_a2 = auth_keyset_from_jwks(d_a2);
    EXPECT(s_a && s_ab && s_b && s_a2 && s_ab->n == 2, "key sets built");
    EXPECT(auth_keyset_keeps(NULL, s_a), "a first set drops nothing");
    EXPECT(auth_keyset_keeps(s_a, s_ab), "adding a key keeps the old one");
    EXPECT(!auth_keyset_keeps(s_ab, s_a), "dropping b is seen");
    EXPECT(!auth_keyset_keeps(s_a, s_b), "replacing a is seen");
    EXPECT(!auth_keyset_keeps(s_a, s_a2), "another key under the same kid is seen");
    auth_keyset_unref(s_a);
    auth_keyset_unref(s_ab);
    auth_keyset_unref(s_b);
    auth_keyset_unref(s_a2);
    json_decref(a);
    json_decref(b);
    json_decref(a2);
    json_decref(d_a);
    json_decref(d_ab);
    json_decref(d_b);
    json_decref(d_a2);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
}

int main(void)
{
    test_b64url();
    test_jwk_and_signatures();
    test_head();
    test_claims();
    test_roles();
    test_max_age();
    test_tokens();
    test_payload_and_keysets();
    return unit_done();
}
