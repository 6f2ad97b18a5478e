/* The dev issuer (QDB_AUTH_MODE=dev, loopback only): the server is its own OpenID issuer
 * for local work. A fresh RSA key at each start; discovery and JWKS under /dev-issuer; a
 * sign-in page where a person picks a name and a role and is sent back to the console with
 * an authorization code (the console's Authorization Code + PKCE flow is the same as with
 * Keycloak); the OAuth token endpoint that exchanges the code; and a JSON token endpoint
 * for scripts and tests. Its tokens are verified by auth_verify_jwt like any issuer's: the
 * verifier reads this JWKS in-process instead of over HTTP, nothing else differs. */
#include <jwt.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "auth/auth_internal.h"
#include "platform/jsonspec.h"
#include "platform/log.h"
#include "platform/queryspec.h"

#define CODE_TTL_S 60
#define MAX_CODES 64

struct dev_code {
    char code[48];
    char challenge[129];
    char redirect_uri[512];
    char sub[128];
    char name[128];
    int role;
    time_t expires;
};

static struct {
    char *private_pem; /* owned; never logged */
    size_t private_len;
    char kid[24];
    json_t *jwks;
    pthread_mutex_t lock; /* guards codes */
    struct dev_code codes[MAX_CODES];
} D = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int dev_fetch(void *cls, json_t **jwks, long *max_age, char *err, size_t errlen)
{
    (void)cls;
    *jwks = D.jwks ? json_deep_copy(D.jwks) : NULL;
    *max_age = AUTH_JWKS_MAX_AGE_S; /* the key lives as long as the process */
    if (!*jwks) {
        snprintf(err, errlen, "the dev issuer has no key");
        return -1;
    }
    return 0;
}

static char *bn_param_b64(EVP_PKEY *pkey, const char *name)
{
    BIGNUM *bn = NULL;
    char *out = NULL;
    unsigned char *raw = NULL;
    if (!EVP_PKEY_get_bn_param(pkey, name, &bn))
        goto out;
    int n = BN_num_bytes(bn);
    raw = malloc((size_t)n + 1);
    if (!raw)
        goto out;
    BN_bn2bin(bn, raw);
    out = b64url_encode(raw, (size_t)n);
out:
    free(raw);
    BN_free(bn);
    return out;
}

int auth_dev_start(void)
{
    int rc = -1;
    EVP_PKEY *pkey = NULL;
    BIO *bio = NULL;
    char *n = NULL, *e = NULL;
    pkey = EVP_RSA_gen(2048);
    if (!pkey)
        goto out;
    bio = BIO_new(BIO_s_mem());
    if (!bio || PEM_write_bio_PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) != 1)
        goto out;
    char *data = NULL;
    long len = BIO_get_mem_data(bio, &data);
    if (len <= 0 || !(D.private_pem = malloc((size_t)len + 1)))
        goto out;
    memcpy(D.private_pem, data, (size_t)len);
    D.private_pem[len] = '\0';
    D.private_len = (size_t)len;
    unsigned char rnd[8];
    RAND_bytes(rnd, sizeof rnd);
    for (int i = 0; i < 8; i++)
        snprintf(D.kid + 2 * i, 3, "%02x", rnd[i]);
    n = bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_N);
    e = bn_param_b64(pkey, OSSL_PKEY_PARAM_RSA_E);
    if (!n || !e)
        goto out;
    D.jwks = json_pack("{s:[{s:s,s:s,s:s,s:s,s:s,s:s}]}", "keys", "kty", "RSA", "kid", D.kid, "use",
                       "sig", "alg", "RS256", "n", n, "e", e);
    if (!D.jwks || auth_verifier_init(auth_cfg.issuer, dev_fetch, NULL) != 0)
        goto out;
    rc = 0;
out:
    if (bio)
        BIO_free(bio);
    EVP_PKEY_free(pkey);
    free(n);
    free(e);
    if (rc != 0)
        log_error("the dev issuer could not make its signing key");
    return rc;
}

void auth_dev_stop(void)
{
    if (D.private_pem) {
        OPENSSL_cleanse(D.private_pem, D.private_len);
        free(D.private_pem);
    }
    D.private_pem = NULL;
    json_decref(D.jwks);
    D.jwks = NULL;
    pthread_mutex_lock(&D.lock);
    OPENSSL_cleanse(D.codes, sizeof D.codes);
    pthread_mutex_unlock(&D.lock);
}

/* Sign an access token shaped like Keycloak's (realm_access.roles). malloc'd or NULL. */
static char *dev_sign(const char *sub, const char *name, int role)
{
    jwt_t *jwt = NULL;
    char *tok = NULL, *grants = NULL;
    time_t now = time(NULL);
    unsigned char rnd[12];
    RAND_bytes(rnd, sizeof rnd);
    char *jti = b64url_encode(rnd, sizeof rnd);
    json_t *claims =
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:s,s:{s:[s]}}", "iss", auth_cfg.issuer,
                  "sub", sub, "aud", auth_cfg.audience, "azp", auth_cfg.client_id, "name", name,
                  "preferred_username", name, "iat", (json_int_t)now, "nbf", (json_int_t)now, "exp",
                  (json_int_t)(now + auth_cfg.dev_token_ttl_s), "jti", jti ? jti : "",
                  "realm_access", "roles", auth_cfg.role_names[role]);
    if (!claims || !(grants = json_dumps(claims, JSON_COMPACT)))
        goto out;
    if (jwt_new(&jwt) != 0 || jwt_add_grants_json(jwt, grants) != 0 ||
        jwt_add_header(jwt, "kid", D.kid) != 0 ||
        jwt_set_alg(jwt, JWT_ALG_RS256, (const unsigned char *)D.private_pem, (int)D.private_len) !=
            0)
        goto out;
    tok = jwt_encode_str(jwt);
out:
    if (jwt)
        jwt_free(jwt);
    json_decref(claims);
    free(grants);
    free(jti);
    return tok;
}

/* ---- helpers ---- */

static int dev_only(struct http_request *req)
{
    if (auth_cfg.mode == AUTH_MODE_DEV && D.jwks)
        return 0;
    http_reply_problem(req, QDB_E_NOT_FOUND, "no resource at %s (the dev issuer is off)",
                       http_path(req));
    return -1;
}

/* Whether Host names this machine's loopback: 127.x.x.x, [::1] or localhost, with an optional
 * port. Anything else is refused, so that a web page whose name was rebound to 127.0.0.1
 * (DNS rebinding) cannot use the dev issuer through a victim's browser. */
static int host_is_loopback(const char *host)
{
    size_t n = strlen(host);
    const char *colon = host[0] == '[' ? strstr(host, "]:") : strchr(host, ':');
    size_t hl = colon ? (size_t)(colon - host) + (host[0] == '[') : n;
    if (colon) {
        const char *port = colon + (host[0] == '[' ? 2 : 1);
        if (!*port || strspn(port, "0123456789") != strlen(port) || strlen(port) > 5)
            return 0;
    }
    if (hl == 5 && strncmp(host, "[::1]", 5) == 0)
        return 1;
    if (hl == 9 && strncasecmp(host, "localhost", 9) == 0)
        return 1;
    if (hl < 7 || hl > 15 || strncmp(host, "127.", 4) != 0)
        return 0;
    for (size_t i = 4; i < hl; i++)
        if (!((host[i] >= '0' && host[i] <= '9') || host[i] == '.'))
            return 0;
    return 1;
}

/* The origin the caller used ("http://127.0.0.1:8080"), from Host; -1 when it is not a
 * loopback name. */
static int origin_of(struct http_request *req, char *out, size_t n)
{
    const char *host = http_header(req, "Host");
    if (!host || !*host || strlen(host) > 200 || !host_is_loopback(host))
        return -1;
    snprintf(out, n, "http://%s", host);
    return 0;
}

/* Loopback caller that used a loopback Host; else replies 403 and returns -1. */
static int local_only(struct http_request *req)
{
    char origin[256];
    const char *a = http_client_addr(req);
    int peer =
        strncmp(a, "127.", 4) == 0 || strcmp(a, "::1") == 0 || strncmp(a, "::ffff:127.", 11) == 0;
    if (peer && origin_of(req, origin, sizeof origin) == 0)
        return 0;
    http_reply_problem(req, QDB_E_FORBIDDEN,
                       "the dev issuer answers loopback callers using a loopback host name only");
    return -1;
}

static void html_escape(struct buf *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '<':
            buf_puts(b, "&lt;");
            break;
        case '>':
            buf_puts(b, "&gt;");
            break;
        case '&':
            buf_puts(b, "&amp;");
            break;
        case '"':
            buf_puts(b, "&quot;");
            break;
        case '\'':
            buf_puts(b, "&#39;");
            break;
        default:
            buf_append(b, s, 1);
        }
    }
}

static void pct_encode(struct buf *b, const char *s)
{
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~')
            buf_append(b, s, 1);
        else
            buf_printf(b, "%%%02X", c);
    }
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

/* The value of `key` in an application/x-www-form-urlencoded body, decoded into out.
 * Returns 0, or -1 when absent, malformed or too long. */
static int form_value(const char *body, size_t len, const char *key, char *out, size_t n)
{
    size_t klen = strlen(key), i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && body[end] != '&')
            end++;
        if (end - i > klen && memcmp(body + i, key, klen) == 0 && body[i + klen] == '=') {
            size_t o = 0;
            for (size_t j = i + klen + 1; j < end; j++) {
                char c = body[j];
                if (c == '+')
                    c = ' ';
                else if (c == '%') {
                    if (j + 2 >= end)
                        return -1;
                    int h = hexval(body[j + 1]), l = hexval(body[j + 2]);
                    if (h < 0 || l < 0)
                        return -1;
                    c = (char)(h * 16 + l);
                    j += 2;
                }
                if (c == '\0' || o + 1 >= n)
                    return -1;
                out[o++] = c;
            }
            out[o] = '\0';
            return 0;
        }
        i = end + 1;
    }
    return -1;
}

static void oauth_error(struct http_request *req, const char *error, const char *detail)
{
    http_reply_header(req, "Cache-Control", "no-store");
    http_reply_problem_ext(req, QDB_E_BAD_REQUEST, json_pack("{s:s}", "error", error), "%s",
                           detail);
}

static void reply_token(struct http_request *req, const char *sub, const char *name, int role)
{
    char *tok = dev_sign(sub, name, role);
    if (!tok) {
        http_reply_problem(req, QDB_E_INTERNAL, "the dev issuer could not sign a token");
        return;
    }
    log_event(LOG_INFO, "dev issuer signed a token",
              json_pack("{s:s,s:s}", "subject", sub, "role", auth_role_name((enum http_perm)role)));
    http_reply_header(req, "Cache-Control", "no-store");
    http_reply_json(req, 200,
                    json_pack("{s:s,s:s,s:I,s:s}", "access_token", tok, "token_type", "Bearer",
                              "expires_in", (json_int_t)auth_cfg.dev_token_ttl_s, "scope",
                              auth_cfg.scope));
    free(tok);
}

/* ---- handlers ---- */

void auth_dev_discovery(struct http_request *req)
{
    char origin[256];
    if (dev_only(req) != 0)
        return;
    if (origin_of(req, origin, sizeof origin) != 0) {
        http_reply_problem(req, QDB_E_BAD_REQUEST,
                           "the Host header must name loopback (127.0.0.1, [::1], localhost)");
        return;
    }
    char authz[300], token[300], jwks[300];
    snprintf(authz, sizeof authz, "%s/dev-issuer/authorize", origin);
    snprintf(token, sizeof token, "%s/dev-issuer/oauth/token", origin);
    snprintf(jwks, sizeof jwks, "%s/dev-issuer/jwks", origin);
    http_reply_json(req, 200,
                    json_pack("{s:s,s:s,s:s,s:s,s:[s],s:[s],s:[s],s:[s],s:[s],s:[s]}", "issuer",
                              auth_cfg.issuer, "authorization_endpoint", authz, "token_endpoint",
                              token, "jwks_uri", jwks, "response_types_supported", "code",
                              "grant_types_supported", "authorization_code",
                              "code_challenge_methods_supported", "S256",
                              "token_endpoint_auth_methods_supported", "none",
                              "id_token_signing_alg_values_supported", "RS256",
                              "subject_types_supported", "public"));
}

void auth_dev_jwks(struct http_request *req)
{
    if (dev_only(req) != 0)
        return;
    http_reply_header(req, "Cache-Control", "public, max-age=300");
    http_reply_json(req, 200, json_deep_copy(D.jwks));
}

/* The authorize parameters, checked. Returns 0, or -1 after replying 400. */
struct authz {
    const char *client_id, *redirect_uri, *challenge, *state;
    const char *login_name, *login_role; /* the sign-in form's answer, when given */
};

static int authz_params(struct http_request *req, struct authz *a)
{
    char origin[256];
    const char *rt = NULL, *method = NULL;
    memset(a, 0, sizeof *a);
    /* Shapes only (UTF-8, no NUL, not repeated, bounded); the checks below say what each
     * value must be. Unknown parameters are ignored, as OAuth 2.0 requires. */
    const struct qspec_param q[] = {
        {"response_type", QSPEC_STRING, 0, 0, 64, NULL, &rt, NULL},
        {"code_challenge_method", QSPEC_STRING, 0, 0, 64, NULL, &method, NULL},
        {"client_id", QSPEC_STRING, 0, 0, 256, NULL, &a->client_id, NULL},
        {"redirect_uri", QSPEC_STRING, 0, 0, 2048, NULL, &a->redirect_uri, NULL},
        {"code_challenge", QSPEC_STRING, 0, 0, 256, NULL, &a->challenge, NULL},
        {"state", QSPEC_STRING, 0, 0, 2048, NULL, &a->state, NULL},
        {"login_name", QSPEC_STRING, 0, 0, 1024, NULL, &a->login_name, NULL},
        {"login_role", QSPEC_STRING, 0, 0, 64, NULL, &a->login_role, NULL},
        QSPEC_END,
    };
    char field[128], qwhy[512];
    const char *why = NULL;
    size_t ol = 0;
    if (qspec_parse_quiet(req, q, QSPEC_ALLOW_UNKNOWN, field, sizeof field, qwhy, sizeof qwhy) != 0)
        why = qwhy;
    else if (origin_of(req, origin, sizeof origin) != 0)
        why = "the Host header must name loopback (127.0.0.1, [::1], localhost)";
    else if (!a->client_id || strcmp(a->client_id, auth_cfg.client_id) != 0)
        why = "unknown client_id";
    else if (!a->redirect_uri || strlen(a->redirect_uri) >= sizeof D.codes[0].redirect_uri ||
             strncmp(a->redirect_uri, origin, ol = strlen(origin)) != 0 ||
             a->redirect_uri[ol] != '/')
        why = "redirect_uri must be a page of this server";
    else if (!rt || strcmp(rt, "code") != 0)
        why = "response_type must be code";
    else if (!method || strcmp(method, "S256") != 0)
        why = "PKCE with code_challenge_method=S256 is required";
    else if (!a->challenge || strlen(a->challenge) < 43 || strlen(a->challenge) > 128)
        why = "code_challenge must be 43 to 128 characters";
    else if (a->state && strlen(a->state) > 512)
        why = "state is too long";
    if (!why)
        return 0;
    http_reply_problem_ext(req, QDB_E_BAD_REQUEST, json_pack("{s:s}", "error", "invalid_request"),
                           "%s", why);
    return -1;
}

static void sign_in_page(struct http_request *req, const struct authz *a)
{
    struct buf b;
    buf_init(&b, 64 * 1024);
    buf_puts(&b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                 "<title>Sign in: QDB One dev issuer</title>"
                 "<style>body{font-family:system-ui,sans-serif;max-width:28em;margin:4em auto}"
                 "label{display:block;margin:1em 0 .3em}input,select,button{font-size:1em;"
                 "padding:.3em}.warn{color:#8a5a00}</style></head><body>"
                 "<h1>Sign in</h1><p class=\"warn\">Local dev issuer: anyone here may pick any "
                 "role. Never use it outside your own machine.</p>"
                 "<form method=\"get\" action=\"/dev-issuer/authorize\">");
    const char *names[] = {"response_type",         "client_id", "redirect_uri", "code_challenge",
                           "code_challenge_method", "state"};
    const char *values[] = {"code", a->client_id, a->redirect_uri, a->challenge, "S256", a->state};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!values[i])
            continue;
        buf_printf(&b, "<input type=\"hidden\" name=\"%s\" value=\"", names[i]);
        html_escape(&b, values[i]);
        buf_puts(&b, "\">");
    }
    buf_puts(&b, "<label for=\"login_name\">Name</label>"
                 "<input id=\"login_name\" name=\"login_name\" required maxlength=\"100\" "
                 "value=\"Dev User\">"
                 "<label for=\"login_role\">Role</label><select id=\"login_role\" "
                 "name=\"login_role\"><option value=\"viewer\">viewer</option>"
                 "<option value=\"operator\">operator</option>"
                 "<option value=\"admin\" selected>admin</option></select>"
                 "<p><button id=\"sign-in\" type=\"submit\">Sign in</button></p>"
                 "</form></body></html>\n");
    size_t len = b.len;
    http_reply_header(req, "Content-Security-Policy",
                      "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                      "frame-ancestors 'none'");
    http_reply_header(req, "Cache-Control", "no-store");
    http_reply_data_take(req, 200, "text/html; charset=utf-8", buf_take(&b), len);
}

void auth_dev_authorize(struct http_request *req)
{
    struct authz a;
    if (dev_only(req) != 0 || authz_params(req, &a) != 0)
        return;
    const char *name = a.login_name, *role_s = a.login_role;
    if (!name || !role_s) {
        sign_in_page(req, &a);
        return;
    }
    int role = auth_role_parse(role_s);
    if (role < 0 || !*name || strlen(name) > 100) {
        http_reply_problem(req, QDB_E_VALIDATION, "pick a name (1 to 100 characters) and a role");
        return;
    }
    struct dev_code dc;
    memset(&dc, 0, sizeof dc);
    unsigned char rnd[24];
    if (RAND_bytes(rnd, sizeof rnd) != 1) {
        http_reply_problem(req, QDB_E_INTERNAL, "no randomness");
        return;
    }
    char *code = b64url_encode(rnd, sizeof rnd);
    if (!code) {
        http_reply_problem(req, QDB_E_INTERNAL, "out of memory");
        return;
    }
    snprintf(dc.code, sizeof dc.code, "%s", code);
    snprintf(dc.challenge, sizeof dc.challenge, "%s", a.challenge);
    snprintf(dc.redirect_uri, sizeof dc.redirect_uri, "%s", a.redirect_uri);
    snprintf(dc.sub, sizeof dc.sub, "dev:%s", name);
    snprintf(dc.name, sizeof dc.name, "%s", name);
    dc.role = role;
    dc.expires = time(NULL) + CODE_TTL_S;
    pthread_mutex_lock(&D.lock);
    size_t slot = 0; /* a free or expired slot, else the one expiring first */
    for (size_t i = 0; i < MAX_CODES; i++) {
        if (D.codes[i].expires < D.codes[slot].expires)
            slot = i;
    }
    D.codes[slot] = dc;
    pthread_mutex_unlock(&D.lock);

    struct buf loc;
    buf_init(&loc, 4096);
    buf_puts(&loc, a.redirect_uri);
    buf_puts(&loc, strchr(a.redirect_uri, '?') ? "&code=" : "?code=");
    buf_puts(&loc, code);
    if (a.state) {
        buf_puts(&loc, "&state=");
        pct_encode(&loc, a.state);
    }
    char *location = buf_take(&loc);
    http_reply_header(req, "Location", location ? location : "/");
    http_reply_header(req, "Cache-Control", "no-store");
    http_reply_empty(req, 302);
    free(location);
    OPENSSL_cleanse(code, strlen(code));
    free(code);
}

void auth_dev_oauth_token(struct http_request *req)
{
    if (dev_only(req) != 0)
        return;
    if (local_only(req) != 0)
        return;
    size_t len = 0;
    const char *body = http_body_raw(req, &len);
    const char *ct = http_header(req, "Content-Type");
    char grant[64], code[64], redirect[512], client[128], verifier[160];
    if (!ct || strncasecmp(ct, "application/x-www-form-urlencoded", 33) != 0 || !body) {
        http_reply_problem(req, QDB_E_UNSUPPORTED_MEDIA,
                           "the token endpoint takes application/x-www-form-urlencoded");
        return;
    }
    if (form_value(body, len, "grant_type", grant, sizeof grant) != 0 ||
        strcmp(grant, "authorization_code") != 0) {
        oauth_error(req, "unsupported_grant_type", "grant_type must be authorization_code");
        return;
    }
    if (form_value(body, len, "code", code, sizeof code) != 0 ||
        form_value(body, len, "redirect_uri", redirect, sizeof redirect) != 0 ||
        form_value(body, len, "client_id", client, sizeof client) != 0 ||
        form_value(body, len, "code_verifier", verifier, sizeof verifier) != 0 ||
        strlen(verifier) < 43 || strlen(verifier) > 128) {
        oauth_error(req, "invalid_request",
                    "code, redirect_uri, client_id and code_verifier (43-128) are required");
        return;
    }
    if (strcmp(client, auth_cfg.client_id) != 0) {
        oauth_error(req, "invalid_client", "unknown client_id");
        return;
    }
    /* S256: BASE64URL(SHA256(verifier)) must equal the challenge. */
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(verifier, strlen(verifier), md, &mdlen, EVP_sha256(), NULL);
    char *challenge = b64url_encode(md, sizeof md);
    struct dev_code found;
    int ok = 0;
    time_t now = time(NULL);
    pthread_mutex_lock(&D.lock);
    for (size_t i = 0; i < MAX_CODES; i++) {
        struct dev_code *dc = &D.codes[i];
        if (dc->expires == 0 || strlen(dc->code) != strlen(code) ||
            CRYPTO_memcmp(dc->code, code, strlen(code)) != 0)
            continue;
        found = *dc;
        memset(dc, 0, sizeof *dc); /* a code is good once */
        ok = found.expires >= now && strcmp(found.redirect_uri, redirect) == 0 && challenge &&
             strlen(challenge) == strlen(found.challenge) &&
             CRYPTO_memcmp(challenge, found.challenge, strlen(challenge)) == 0;
        break;
    }
    pthread_mutex_unlock(&D.lock);
    free(challenge);
    if (!ok) {
        oauth_error(req, "invalid_grant",
                    "the code is unknown, used, expired, or does not match redirect_uri or "
                    "the PKCE verifier");
        return;
    }
    reply_token(req, found.sub, found.name, found.role);
}

void auth_dev_token(struct http_request *req)
{
    const char *const *roles = http_role_names();
    const char *sub = NULL, *name = NULL;
    int role = 0;
    if (dev_only(req) != 0)
        return;
    if (local_only(req) != 0)
        return;
    const struct jspec_field fields[] = {
        {"sub", JSPEC_STRING, 1, 1, 120, NULL, &sub, NULL},
        {"name", JSPEC_STRING, 0, 1, 100, NULL, &name, NULL},
        {"role", JSPEC_ENUM, 1, 0, 0, roles, &role, NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, http_body(req), fields, NULL, 0) != 0)
        return;
    reply_token(req, sub, name ? name : sub, role + HTTP_VIEWER);
}
