/* Auth in dev mode: the dev issuer's tokens for each role, /api/v1/me, the console's code +
 * PKCE flow against the dev issuer, API tokens (create -> use -> revoke -> 401, environments,
 * the CLI), malformed and oversized tokens, denial metrics, and the refusal to run dev mode
 * on a non-loopback address. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static char *b64url(const unsigned char *in, size_t len)
{
    char *out = malloc(len * 2 + 4);
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    while (n > 0 && out[n - 1] == '=')
        out[--n] = '\0';
    for (int i = 0; i < n; i++)
        out[i] = out[i] == '+' ? '-' : out[i] == '/' ? '_' : out[i];
    return out;
}

static void test_roles_and_me(const struct th_server *s)
{
    static const char *const roles[] = {"viewer", "operator", "admin"};
    for (int i = 0; i < 3; i++) {
        th_step("dev token for %s -> /api/v1/me", roles[i]);
        char *t = th_dev_token(s, roles[i]);
        CHECK(t != NULL, "token");
        struct th_resp r;
        th_get(s, "/api/v1/me", t, &r);
        CHECK(r.status == 200, "me: %ld %s", r.status, r.body);
        CHECK(strcmp(json_string_value(json_object_get(r.json, "role")) ?: "", roles[i]) == 0,
              "role %s", r.body);
        CHECK(json_array_size(json_object_get(r.json, "roles")) == (size_t)i + 1, "roles");
        CHECK(strcmp(json_string_value(json_object_get(r.json, "auth_method")) ?: "", "dev") == 0,
              "auth_method dev");
        char sub[64];
        snprintf(sub, sizeof sub, "test-%s", roles[i]);
        CHECK(strcmp(json_string_value(json_object_get(r.json, "subject")) ?: "", sub) == 0,
              "subject");
        CHECK(json_is_string(json_object_get(r.json, "expires_at")), "expires_at");
        th_resp_free(&r);
        free(t);
    }
}

static void test_bad_tokens(const struct th_server *s)
{
    th_step("missing, wrong scheme, malformed, oversized tokens -> 401");
    long before = th_metric(s, "qdb_auth_denials_total{reason=\"oversized\"} ");
    long missing = th_metric(s, "qdb_auth_denials_total{reason=\"missing\"} ");
    CHECK(th_status(s, "GET", "/api/v1/me", NULL) == 401, "no token");
    CHECK(th_status(s, "GET", "/api/v1/me", "not-a-jwt") == 401, "garbage");
    CHECK(th_status(s, "GET", "/api/v1/me", "a.b.c") == 401, "three garbage parts");
    CHECK(th_status(s, "GET", "/api/v1/me", "qdb_doesnotexist") == 401, "unknown api token");
    size_t big = 17 * 1024;
    char *huge = malloc(big + 1);
    memset(huge, 'A', big);
    memcpy(huge, "eyJhbGciOiJSUzI1NiJ9.", 21);
    huge[big] = '\0';
    CHECK(th_status(s, "GET", "/api/v1/me", huge) == 401, "oversized token");
    free(huge);
    CHECK(th_metric(s, "qdb_auth_denials_total{reason=\"oversized\"} ") == before + 1,
          "oversized counted");
    CHECK(th_metric(s, "qdb_auth_denials_total{reason=\"missing\"} ") == missing + 1,
          "missing counted once");

    /* A dev token with its payload swapped for one claiming admin. */
    char *t = th_dev_token(s, "viewer");
    if (t) {
        char *d1 = strchr(t, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
        const char *claims = "{\"sub\":\"x\",\"realm_access\":{\"roles\":[\"qdb-admin\"]}}";
        char *p = b64url((const unsigned char *)claims, strlen(claims));
        char forged[8192];
        if (d1 && d2)
            snprintf(forged, sizeof forged, "%.*s.%s%s", (int)(d1 - t), t, p, d2);
        CHECK(th_status(s, "GET", "/api/v1/tokens", forged) == 401, "tampered payload");
        free(p);
        free(t);
    }
}

static void test_code_flow(const struct th_server *s)
{
    th_step("the console's Authorization Code + PKCE flow against the dev issuer");
    struct th_resp r;
    th_get(s, "/api/v1/auth/config", NULL, &r);
    CHECK(r.status == 200, "auth config");
    CHECK(strcmp(json_string_value(json_object_get(r.json, "mode")) ?: "", "dev") == 0, "mode dev");
    th_resp_free(&r);

    th_get(s, "/dev-issuer/.well-known/openid-configuration", NULL, &r);
    CHECK(r.status == 200 && json_is_string(json_object_get(r.json, "jwks_uri")), "discovery");
    th_resp_free(&r);
    th_get(s, "/dev-issuer/jwks", NULL, &r);
    CHECK(r.status == 200 && json_array_size(json_object_get(r.json, "keys")) == 1, "jwks");
    th_resp_free(&r);

    const char *verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXkdBjftJeZ4CVP";
    unsigned char md[32];
    unsigned int mdlen = 0;
    EVP_Digest(verifier, strlen(verifier), md, &mdlen, EVP_sha256(), NULL);
    char *challenge = b64url(md, sizeof md);
    char path[2048];
    snprintf(path, sizeof path,
             "/dev-issuer/authorize?response_type=code&client_id=qdb-console&redirect_uri=%s%%2F"
             "&code_challenge=%s&code_challenge_method=S256&state=st%%26ate",
             s->base, challenge);
    th_get(s, path, NULL, &r);
    CHECK(r.status == 200 && strstr(r.body, "login_role"), "sign-in page: %ld", r.status);
    th_resp_free(&r);

    snprintf(path, sizeof path,
             "/dev-issuer/authorize?response_type=code&client_id=qdb-console&redirect_uri="
             "http%%3A%%2F%%2Fevil.example%%2F&code_challenge=%s&code_challenge_method=S256",
             challenge);
    th_get(s, path, NULL, &r);
    CHECK(r.status == 400, "a foreign redirect_uri is refused: %ld", r.status);
    th_resp_free(&r);

    snprintf(path, sizeof path,
             "/dev-issuer/authorize?response_type=code&client_id=qdb-console&redirect_uri=%s%%2F"
             "&code_challenge=%s&code_challenge_method=S256&state=st%%26ate&login_name=Ada"
             "&login_role=operator",
             s->base, challenge);
    th_get(s, path, NULL, &r);
    char *loc = th_resp_header(&r, "Location");
    CHECK(r.status == 302 && loc, "redirect back: %ld", r.status);
    char code[128] = "";
    const char *c = loc ? strstr(loc, "code=") : NULL;
    if (c)
        snprintf(code, sizeof code, "%.*s", (int)strcspn(c + 5, "&"), c + 5);
    CHECK(loc && strstr(loc, "state=st%26ate"), "state comes back: %s", loc ? loc : "");
    free(loc);
    th_resp_free(&r);

    th_step("a page rebound to 127.0.0.1 (foreign Host) cannot use the dev issuer");
    const char *rebound[] = {"Content-Type: application/json", "Host: evil.example:8080", NULL};
    const char *body = "{\"sub\":\"x\",\"role\":\"admin\"}";
    th_http(s, "POST", "/dev-issuer/token", rebound, body, strlen(body), &r);
    CHECK(r.status == 403, "foreign Host -> 403: %ld", r.status);
    th_resp_free(&r);
    const char *local_h[] = {"Content-Type: application/json", "Host: localhost:1234", NULL};
    th_http(s, "POST", "/dev-issuer/token", local_h, body, strlen(body), &r);
    CHECK(r.status == 200, "Host localhost -> 200: %ld", r.status);
    th_resp_free(&r);

    const char *form_h[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    char form[1024];
    snprintf(form, sizeof form,
             "grant_type=authorization_code&code=%s&redirect_uri=%s%%2F&client_id=qdb-console"
             "&code_verifier=wrong-verifier-wrong-verifier-wrong-verifier-xx",
             code, s->base);
    th_http(s, "POST", "/dev-issuer/oauth/token", form_h, form, strlen(form), &r);
    CHECK(r.status == 400, "a wrong verifier is refused: %ld", r.status);
    th_resp_free(&r);
    /* The code was burnt by the failed attempt: get a fresh one. */
    th_get(s, path, NULL, &r);
    loc = th_resp_header(&r, "Location");
    c = loc ? strstr(loc, "code=") : NULL;
    if (c)
        snprintf(code, sizeof code, "%.*s", (int)strcspn(c + 5, "&"), c + 5);
    free(loc);
    th_resp_free(&r);
    snprintf(form, sizeof form,
             "grant_type=authorization_code&code=%s&redirect_uri=%s%%2F&client_id=qdb-console"
             "&code_verifier=%s",
             code, s->base, verifier);
    th_http(s, "POST", "/dev-issuer/oauth/token", form_h, form, strlen(form), &r);
    CHECK(r.status == 200, "code exchange: %ld %s", r.status, r.body);
    const char *at = json_string_value(json_object_get(r.json, "access_token"));
    if (at) {
        struct th_resp me;
        th_get(s, "/api/v1/me", at, &me);
        CHECK(me.status == 200 &&
                  strcmp(json_string_value(json_object_get(me.json, "name")) ?: "", "Ada") == 0,
              "me as Ada: %s", me.body);
        CHECK(strcmp(json_string_value(json_object_get(me.json, "role")) ?: "", "operator") == 0,
              "operator");
        th_resp_free(&me);
    }
    th_resp_free(&r);
    th_http(s, "POST", "/dev-issuer/oauth/token", form_h, form, strlen(form), &r);
    CHECK(r.status == 400, "a code works once: %ld", r.status);
    th_resp_free(&r);
    free(challenge);
}

static void test_api_tokens(const struct th_server *s, const char *url)
{
    th_step("API token: create -> use -> list -> revoke -> 401");
    char *admin = th_dev_token(s, "admin");
    char *viewer = th_dev_token(s, "viewer");
    struct th_resp r;
    th_post_json(s, "/api/v1/tokens", viewer, "{\"name\":\"ci\",\"role\":\"viewer\"}", &r);
    CHECK(r.status == 403, "a viewer cannot create tokens: %ld", r.status);
    th_resp_free(&r);
    th_post_json(s, "/api/v1/tokens", admin, "{\"name\":\"ci\",\"role\":\"wizard\"}", &r);
    CHECK(th_is_problem(&r, 400), "bad role: %ld", r.status);
    th_resp_free(&r);
    th_post_json(s, "/api/v1/tokens", admin,
                 "{\"name\":\"ci\",\"role\":\"operator\",\"environments\":[\"staging\"],"
                 "\"expires_in\":\"30d\"}",
                 &r);
    CHECK(r.status == 201, "create: %ld %s", r.status, r.body);
    char *secret = strdup(json_string_value(json_object_get(r.json, "token")) ?: "");
    char *id = strdup(json_string_value(json_object_get(r.json, "id")) ?: "");
    CHECK(strncmp(secret, "qdb_", 4) == 0 && strlen(secret) == 47, "qdb_ + 43 chars: %zu",
          strlen(secret));
    th_resp_free(&r);

    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM api_token WHERE token_sha256 = "
                      "encode(sha256($1::bytea), 'hex')",
                      secret, NULL) == 1,
          "the SHA-256 is stored");
    CHECK(th_sql_long(url, "SELECT count(*) FROM api_token WHERE token_sha256 = $1 OR name = $1",
                      secret, NULL) == 0,
          "the secret is not");

    th_get(s, "/api/v1/me", secret, &r);
    CHECK(r.status == 200, "use: %ld", r.status);
    CHECK(strcmp(json_string_value(json_object_get(r.json, "auth_method")) ?: "", "api-token") == 0,
          "api-token method");
    CHECK(strcmp(json_string_value(json_object_get(r.json, "token_id")) ?: "", id) == 0,
          "token id");
    CHECK(json_array_size(json_object_get(r.json, "environments")) == 1, "environments");
    th_resp_free(&r);
    CHECK(th_status(s, "GET", "/api/v1/tokens", secret) == 403, "an operator token is not admin");

    th_get(s, "/api/v1/tokens", admin, &r);
    CHECK(r.status == 200 && json_array_size(json_object_get(r.json, "items")) == 1,
          "list: the one token: %s", r.body);
    CHECK(!strstr(r.body, secret) && !strstr(r.body, "sha256"), "list has no secret or hash");
    th_resp_free(&r);
    /* last_used_at is written off the request path by the flusher, every
     * QDB_AUTH_LAST_USED_INTERVAL (1 s for this server): poll the list for it. */
    int used = 0;
    for (double t0 = th_now_ms(); !used && th_now_ms() - t0 < 10000; th_sleep_ms(50)) {
        th_get(s, "/api/v1/tokens", admin, &r);
        json_t *first = json_array_get(json_object_get(r.json, "items"), 0);
        used = json_is_string(json_object_get(first, "last_used_at"));
        th_resp_free(&r);
    }
    CHECK(used, "last_used_at set by the flusher");

    char path[256];
    snprintf(path, sizeof path, "/api/v1/tokens/%s", id);
    CHECK(th_status(s, "DELETE", path, viewer) == 403, "a viewer cannot revoke");
    CHECK(th_status(s, "DELETE", path, admin) == 204, "revoke");
    CHECK(th_status(s, "GET", "/api/v1/me", secret) == 401, "revoked -> 401 at once");
    CHECK(th_status(s, "DELETE", "/api/v1/tokens/00000000-0000-0000-0000-000000000000", admin) ==
              404,
          "unknown id -> 404");
    CHECK(th_status(s, "DELETE", "/api/v1/tokens/nope", admin) == 404, "bad id -> 404");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM audit_event WHERE action IN "
                      "('token.create', 'token.revoke') AND resource_id = $1",
                      id, NULL) == 2,
          "create and revoke are in the audit trail");
    CHECK(th_sql_long(url, "SELECT count(*) FROM audit_event WHERE after::text LIKE '%qdb_%'",
                      NULL) == 0,
          "no secret in the audit trail");

    th_step("an expired API token -> 401");
    th_post_json(s, "/api/v1/tokens", admin, "{\"name\":\"short\",\"role\":\"viewer\"}", &r);
    char *short_secret = strdup(json_string_value(json_object_get(r.json, "token")) ?: "x");
    th_resp_free(&r);
    PQclear(th_sql(url,
                   "UPDATE api_token SET expires_at = now() - interval '1 second' WHERE "
                   "name = 'short'",
                   NULL));
    CHECK(th_status(s, "GET", "/api/v1/me", short_secret) == 401, "expired token");

    CHECK(!th_server_log_contains(s, secret + 4), "the log never holds the secret");
    free(short_secret);
    free(secret);
    free(id);
    free(admin);
    free(viewer);
}

static void test_cli(const struct th_server *s, const char *url)
{
    th_step("qdb-control token create prints a working token");
    char env[512];
    snprintf(env, sizeof env, "QDB_DATABASE_URL=%s", url);
    const char *envs[] = {env, "QDB_LISTEN=127.0.0.1:0", NULL};
    char err[4096];
    const char *bad[] = {"token", "create", "--name", "x", "--role", "king", NULL};
    CHECK(th_run_binary(bad, envs, err, sizeof err) == 2, "bad role -> 2: %s", err);

    /* th_run_binary discards stdout, so run it through a pipe here. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "QDB_AUTH_MODE=dev QDB_LISTEN=127.0.0.1:0 QDB_DATABASE_URL='%s' QDB_WEB_DIR=%s/web "
             "QDB_AUDIT_HMAC_KEY_FILE=\"${QDB_TEST_LOG_DIR:-/tmp}/audit-hmac-key\" %s token create "
             "--name bootstrap "
             "--role admin --expires 1d 2>/dev/null",
             url, QDB_SOURCE_DIR, QDB_BINARY);
    FILE *p = popen(cmd, "r");
    char line[256] = "";
    if (p) {
        if (!fgets(line, sizeof line, p))
            line[0] = '\0';
        pclose(p);
    }
    line[strcspn(line, "\n")] = '\0';
    CHECK(strncmp(line, "qdb_", 4) == 0, "printed a token: '%s'", line);
    CHECK(th_status(s, "GET", "/api/v1/tokens", line) == 200, "the CLI token is an admin");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM api_token WHERE name = 'bootstrap' AND "
                      "created_by = 'cli'",
                      NULL) == 1,
          "stored, made by cli");
}

static void test_refusals(void)
{
    th_step("dev mode refuses a non-loopback QDB_LISTEN");
    char err[4096];
    const char *argv[] = {"serve", NULL};
    const char *env[] = {"QDB_DATABASE_URL=postgresql://postgres@127.0.0.1:1/none",
                         "QDB_AUTH_MODE=dev", "QDB_LISTEN=0.0.0.0:0", NULL};
    CHECK(th_run_binary(argv, env, err, sizeof err) == 2, "exit 2");
    CHECK(strstr(err, "QDB_AUTH_MODE") && strstr(err, "loopback"), "names it: %s", err);

    th_step("oidc mode needs an issuer; HS256 / none are never allowed algs");
    const char *env2[] = {"QDB_DATABASE_URL=postgresql://postgres@127.0.0.1:1/none",
                          "QDB_AUTH_MODE=oidc", NULL};
    CHECK(th_run_binary(argv, env2, err, sizeof err) == 2 && strstr(err, "QDB_OIDC_ISSUER"),
          "no issuer: %s", err);
    const char *env3[] = {"QDB_DATABASE_URL=postgresql://postgres@127.0.0.1:1/none",
                          "QDB_OIDC_ALGS=RS256,HS256", NULL};
    CHECK(th_run_binary(argv, env3, err, sizeof err) == 2 && strstr(err, "QDB_OIDC_ALGS"),
          "HS256: %s", err);
    const char *env5[] = {"QDB_DATABASE_URL=postgresql://postgres@127.0.0.1:1/none",
                          "QDB_AUTH_MODE=oidc",
                          "QDB_OIDC_ISSUER=https://auth.qdb.qa/realms/qdb-one",
                          "QDB_OIDC_CA_FILE=/nonexistent/ca.pem", NULL};
    CHECK(th_run_binary(argv, env5, err, sizeof err) == 2 && strstr(err, "QDB_OIDC_CA_FILE"),
          "unreadable CA file: %s", err);
    const char *env4[] = {"QDB_DATABASE_URL=postgresql://postgres@127.0.0.1:1/none",
                          "QDB_AUTH_MODE=maybe", NULL};
    CHECK(th_run_binary(argv, env4, err, sizeof err) == 2 && strstr(err, "QDB_AUTH_MODE"),
          "bad mode: %s", err);
}

int main(void)
{
    char *url = th_db_create("auth_dev");
    struct th_server srv;
    test_refusals();
    th_step("start a dev-mode server");
    const char *env[] = {"QDB_AUTH_LAST_USED_INTERVAL=1", NULL};
    CHECK(th_server_start(&srv, url, env, 1) == 0, "server starts");
    if (!srv.pid)
        goto out;
    CHECK(th_server_log_contains(&srv, "DEV MODE"), "dev mode warns at start");
    test_roles_and_me(&srv);
    test_bad_tokens(&srv);
    test_code_flow(&srv);
    test_api_tokens(&srv, url);
    test_cli(&srv, url);
    CHECK(th_server_stop(&srv) == 0, "server stops cleanly");
out:
    th_server_kill(&srv);
    th_db_drop(url);
    free(url);
    return th_done();
}
