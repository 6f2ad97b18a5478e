/* Auth in oidc mode against a real OpenID provider standing in for Keycloak
 * (tests/fixtures/oidc_provider.mjs, oidc-provider@8 under /realms/qdb-one): each role
 * through client_credentials tokens with Keycloak-shaped claims; expired, not yet valid,
 * wrong issuer, wrong audience, alg none, HS256 signed with the RSA public key as the secret,
 * a tampered payload; an unknown kid, then the rotated key picked up, with at most one JWKS
 * refetch per 30 s; the JWKS endpoint down while cached keys keep working; an oversized
 * token; and an issuer that cannot be reached with no cached keys (503). The caches: a JWT
 * cached before it expired is refused once exp + leeway has passed; past the JWKS max-age the
 * cached keys keep serving (fast) while one background refresh waits on a slow JWKS; a key
 * dropped from the JWKS stops the tokens it verified, cached or not. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

struct fixture {
    pid_t pid;
    struct th_server http; /* base URL of the fixture, for th_http */
    char issuer[128];
    char log[256];
};

static int fixture_start(struct fixture *f)
{
    memset(f, 0, sizeof f[0]);
    int port = th_free_port();
    snprintf(f->http.base, sizeof f->http.base, "http://127.0.0.1:%d", port);
    snprintf(f->issuer, sizeof f->issuer, "%s/realms/qdb-one", f->http.base);
    snprintf(f->log, sizeof f->log, "%s/oidc-fixture-%d.log",
             getenv("QDB_TEST_LOG_DIR") ? getenv("QDB_TEST_LOG_DIR") : "/tmp", (int)getpid());
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%d", port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(f->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        execlp("node", "node", QDB_SOURCE_DIR "/tests/fixtures/oidc_provider.mjs", "--port",
               portarg, (char *)NULL);
        _exit(127);
    }
    f->pid = pid;
    for (int i = 0; i < 150; i++) {
        struct th_resp r;
        if (th_get(&f->http, "/realms/qdb-one/.well-known/openid-configuration", NULL, &r) == 0) {
            long st = r.status;
            th_resp_free(&r);
            if (st == 200)
                return 0;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            f->pid = 0;
            fprintf(stderr, "the OIDC fixture exited; log %s\n", f->log);
            return -1;
        }
        th_sleep_ms(100);
    }
    fprintf(stderr, "the OIDC fixture did not come up; log %s\n", f->log);
    return -1;
}

static void fixture_stop(struct fixture *f)
{
    if (f->pid <= 0)
        return;
    kill(f->pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(f->pid, NULL, WNOHANG) == f->pid) {
            f->pid = 0;
            return;
        }
        th_sleep_ms(50);
    }
    kill(f->pid, SIGKILL);
    waitpid(f->pid, NULL, 0);
    f->pid = 0;
}

/* A client_credentials access token for `client`, malloc'd. */
static char *cc_token(struct fixture *f, const char *client)
{
    char form[256];
    snprintf(form, sizeof form, "grant_type=client_credentials&client_id=%s&client_secret=secret",
             client);
    const char *h[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    struct th_resp r;
    if (th_http(&f->http, "POST", "/realms/qdb-one/token", h, form, strlen(form), &r) != 0)
        return NULL;
    const char *at = json_string_value(json_object_get(r.json, "access_token"));
    char *t = at ? strdup(at) : NULL;
    if (!t)
        fprintf(stderr, "token for %s: %ld %s\n", client, r.status, r.body);
    th_resp_free(&r);
    return t;
}

static json_t *fx_admin(struct fixture *f, const char *method, const char *path, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    const char *h[] = {"Content-Type: application/json", NULL};
    struct th_resp r;
    json_t *out = NULL;
    if (th_http(&f->http, method, path, h, text, text ? strlen(text) : 0, &r) == 0) {
        out = json_incref(r.json);
        th_resp_free(&r);
    }
    free(text);
    json_decref(body);
    return out;
}

static long jwks_requests(struct fixture *f)
{
    json_t *s = fx_admin(f, "GET", "/admin/stats", NULL);
    long n = (long)json_integer_value(json_object_get(s, "jwks_requests"));
    json_decref(s);
    return n;
}

/* A token the fixture signs with its current key: base claims (admin, valid now) with
 * `changes` merged in (stolen; JSON null removes a claim), header members `header` (stolen,
 * may be NULL), and a mode ("rs256", "none", "hs256-pubkey", "tamper"). */
static char *forge(struct fixture *f, json_t *changes, json_t *header, const char *mode)
{
    time_t now = time(NULL);
    json_t *claims = json_pack("{s:s,s:s,s:s,s:I,s:I,s:{s:[s]}}", "iss", f->issuer, "aud",
                               "qdb-control", "sub", "forged-user", "iat", (json_int_t)now, "exp",
                               (json_int_t)now + 300, "realm_access", "roles", "qdb-admin");
    const char *k;
    json_t *v;
    json_object_foreach(changes, k, v)
    {
        if (json_is_null(v))
            json_object_del(claims, k);
        else
            json_object_set(claims, k, v);
    }
    json_decref(changes);
    json_t *body = json_pack("{s:o,s:s}", "claims", claims, "mode", mode);
    if (header)
        json_object_set_new(body, "header", header);
    json_t *out = fx_admin(f, "POST", "/admin/sign", body);
    const char *t = json_string_value(json_object_get(out, "token"));
    char *tok = t ? strdup(t) : NULL;
    json_decref(out);
    return tok;
}

/* GET /api/v1/me with `token`: the status, and the denial reason into reason (when 401). */
static long me(const struct th_server *s, const char *token, char *reason, size_t n, char *role,
               size_t rn)
{
    struct th_resp r;
    if (reason)
        reason[0] = '\0';
    if (role)
        role[0] = '\0';
    if (th_get(s, "/api/v1/me", token, &r) != 0)
        return 0;
    if (reason)
        snprintf(reason, n, "%s", json_string_value(json_object_get(r.json, "reason")) ?: "");
    if (role)
        snprintf(role, rn, "%s", json_string_value(json_object_get(r.json, "role")) ?: "");
    long st = r.status;
    th_resp_free(&r);
    return st;
}

static void expect_refused(const struct th_server *s, const char *what, char *token,
                           const char *reason)
{
    char got[64];
    long st = me(s, token, got, sizeof got, NULL, 0);
    CHECK(st == 401 && strcmp(got, reason) == 0, "%s: want 401 %s, got %ld %s", what, reason, st,
          got);
    free(token);
}

static void expect_ok(const struct th_server *s, const char *what, char *token)
{
    char got[64];
    long st = me(s, token, got, sizeof got, NULL, 0);
    CHECK(st == 200, "%s: want 200, got %ld %s", what, st, got);
    free(token);
}

#define JWT_HITS "qdb_auth_cache_lookups_total{cache=\"jwt\",result=\"hit\"} "

/* A token nobody has presented yet (its own jti), so that it must be verified. */
static char *fresh_token(struct fixture *f)
{
    static int seq;
    char jti[48];
    snprintf(jti, sizeof jti, "fresh-%d-%d", (int)getpid(), ++seq);
    return forge(f, json_pack("{s:s}", "jti", jti), NULL, "rs256");
}

static void test_cached_expiry(struct fixture *f, const struct th_server *s)
{
    th_step("a JWT cached before it expired is refused once exp + leeway has passed");
    time_t now = time(NULL);
    /* exp 57 s ago: inside the 60 s leeway for about 3 s more. */
    char *t = forge(f, json_pack("{s:I,s:s}", "exp", (json_int_t)now - 57, "jti", "short-lived"),
                    NULL, "rs256");
    long h0 = th_metric(s, JWT_HITS);
    CHECK(me(s, t, NULL, 0, NULL, 0) == 200, "accepted inside the leeway");
    CHECK(me(s, t, NULL, 0, NULL, 0) == 200, "accepted again");
    CHECK(th_metric(s, JWT_HITS) > h0, "served from the cache");
    char reason[64] = "";
    long st = 200;
    for (double t0 = th_now_ms(); st == 200 && th_now_ms() - t0 < 15000;) {
        st = me(s, t, reason, sizeof reason, NULL, 0);
        if (st == 200)
            th_sleep_ms(50);
    }
    CHECK(st == 401 && strcmp(reason, "expired") == 0, "then refused as expired: %ld %s", st,
          reason);
    CHECK(time(NULL) >= now + 3, "not before exp + 60 s");
    free(t);
}

static void test_stale_while_revalidate(struct fixture *f, const char *url)
{
    th_step("JWKS past its max-age: cached keys serve while one background refresh waits");
    /* The fixture's JWKS answers after 6 s: a request that waited for it would take that. */
    char iss[200];
    snprintf(iss, sizeof iss, "QDB_OIDC_ISSUER=%s", f->issuer);
    const char *env[] = {"QDB_AUTH_MODE=oidc", iss, "QDB_OIDC_JWKS_MIN_AGE=2",
                         "QDB_OIDC_HTTP_TIMEOUT=10", NULL};
    struct th_server s4;
    CHECK(th_server_start(&s4, url, env, 1) == 0, "a server with a 2 s JWKS max-age starts");
    if (!s4.pid)
        return;
    char *cached = fresh_token(f);
    CHECK(me(&s4, cached, NULL, 0, NULL, 0) == 200, "the first token fetches the JWKS");
    long n0 = jwks_requests(f);
    long bg0 = th_metric(&s4, "qdb_auth_jwks_background_refreshes_total ");
    json_decref(fx_admin(f, "POST", "/admin/jwks/slow", json_pack("{s:i}", "ms", 6000)));
    /* Fresh tokens (each needs a signature check with the cached keys) until the max-age has
     * passed and the refresher is waiting on the slow JWKS, then for one second more. */
    double t_start = th_now_ms(), saw_bg = 0, worst = 0;
    int n = 0, refused = 0;
    while (th_now_ms() - t_start < 10000) {
        char *t = fresh_token(f);
        double a = th_now_ms();
        long st = me(&s4, t, NULL, 0, NULL, 0);
        double took = th_now_ms() - a;
        free(t);
        n++;
        refused += st != 200;
        if (took > worst)
            worst = took;
        if (!saw_bg && th_metric(&s4, "qdb_auth_jwks_background_refreshes_total ") > bg0)
            saw_bg = th_now_ms();
        if (saw_bg && th_now_ms() - saw_bg > 1000)
            break;
        th_sleep_ms(20);
    }
    CHECK(saw_bg > 0, "the max-age passed and a background refresh started");
    CHECK(refused == 0, "%d of %d requests refused", refused, n);
    CHECK(worst < 3000, "no request waited for the 6 s JWKS: worst %.0f ms over %d", worst, n);
    CHECK(jwks_requests(f) == n0 + 1, "one refresh at a time: %ld -> %ld", n0, jwks_requests(f));
    json_decref(fx_admin(f, "POST", "/admin/jwks/slow", json_pack("{s:i}", "ms", 0)));

    th_step("a key dropped from the JWKS stops the tokens it verified, cached or not");
    for (int i = 0; i < 3; i++) /* the fixture keeps the newest three keys */
        json_decref(fx_admin(f, "POST", "/admin/rotate", NULL));
    char *rotated = fresh_token(f);
    CHECK(me(&s4, rotated, NULL, 0, NULL, 0) == 200, "a token of the newest key (refetched)");
    char reason[64];
    long st = me(&s4, cached, reason, sizeof reason, NULL, 0);
    CHECK(st == 401 && strcmp(reason, "unknown_kid") == 0,
          "the token cached under the dropped key is refused: %ld %s", st, reason);
    free(rotated);
    free(cached);
    CHECK(th_server_stop(&s4) == 0, "stops cleanly");
}

static void test_roles(struct fixture *f, const struct th_server *s)
{
    static const struct {
        const char *client, *role;
    } cases[] = {{"svc-viewer", "viewer"}, {"svc-operator", "operator"}, {"svc-admin", "admin"}};
    for (size_t i = 0; i < 3; i++) {
        th_step("%s -> %s", cases[i].client, cases[i].role);
        char *t = cc_token(f, cases[i].client);
        char role[32];
        CHECK(t && me(s, t, NULL, 0, role, sizeof role) == 200, "me");
        CHECK(strcmp(role, cases[i].role) == 0, "role %s", role);
        struct th_resp r;
        th_get(s, "/api/v1/tokens", t, &r);
        CHECK(r.status == (strcmp(cases[i].role, "admin") == 0 ? 200 : 403), "tokens list: %ld",
              r.status);
        th_resp_free(&r);
        free(t);
    }
    th_step("a valid token with none of the roles -> 403");
    char *t = cc_token(f, "svc-norole");
    CHECK(t && me(s, t, NULL, 0, NULL, 0) == 403, "no role -> 403");
    free(t);
}

static void test_claims(struct fixture *f, const struct th_server *s)
{
    time_t now = time(NULL);
    th_step("claims and algorithms");
    expect_ok(s, "a well-formed forged token (control)", forge(f, NULL, NULL, "rs256"));
    expect_ok(s, "typ at+jwt", forge(f, NULL, json_pack("{s:s}", "typ", "at+jwt"), "rs256"));
    expect_refused(s, "expired",
                   forge(f, json_pack("{s:I}", "exp", (json_int_t)now - 120), NULL, "rs256"),
                   "expired");
    expect_ok(s, "expired 30 s ago is inside the 60 s leeway",
              forge(f, json_pack("{s:I}", "exp", (json_int_t)now - 30), NULL, "rs256"));
    expect_refused(s, "no exp", forge(f, json_pack("{s:n}", "exp"), NULL, "rs256"), "expired");
    expect_refused(s, "not yet valid (nbf)",
                   forge(f, json_pack("{s:I}", "nbf", (json_int_t)now + 300), NULL, "rs256"),
                   "not_yet_valid");
    expect_refused(s, "issued in the future (iat)",
                   forge(f, json_pack("{s:I}", "iat", (json_int_t)now + 300), NULL, "rs256"),
                   "not_yet_valid");
    expect_refused(
        s, "wrong issuer",
        forge(f, json_pack("{s:s}", "iss", "https://evil.example/realms/qdb-one"), NULL, "rs256"),
        "issuer");
    expect_refused(s, "wrong audience",
                   forge(f, json_pack("{s:s}", "aud", "someone-else"), NULL, "rs256"), "audience");
    expect_ok(s, "audience in a list",
              forge(f, json_pack("{s:[s,s]}", "aud", "account", "qdb-control"), NULL, "rs256"));
    expect_ok(
        s, "azp is the audience",
        forge(f, json_pack("{s:s,s:s}", "aud", "account", "azp", "qdb-control"), NULL, "rs256"));
    expect_refused(s, "alg none", forge(f, NULL, NULL, "none"), "alg");
    expect_refused(s, "HS256 signed with the RSA public key PEM",
                   forge(f, NULL, NULL, "hs256-pubkey"), "alg");
    expect_refused(s, "RS256 token relabelled RS384",
                   forge(f, NULL, json_pack("{s:s}", "alg", "RS384"), "rs256"), "alg");
    expect_refused(s, "tampered payload", forge(f, NULL, NULL, "tamper"), "signature");
    expect_refused(s, "typ that is no JWT",
                   forge(f, NULL, json_pack("{s:s}", "typ", "dpop+jwt"), "rs256"), "malformed");
}

static void test_rotation(struct fixture *f, const struct th_server *s)
{
    th_step("key rotation: the new kid is unknown, one refetch picks it up");
    char *before_rotation = cc_token(f, "svc-viewer");
    CHECK(me(s, before_rotation, NULL, 0, NULL, 0) == 200, "cached key works");
    long n0 = jwks_requests(f);
    json_decref(fx_admin(f, "POST", "/admin/rotate", NULL));
    char *t = cc_token(f, "svc-admin");
    char role[32];
    CHECK(me(s, t, NULL, 0, role, sizeof role) == 200 && strcmp(role, "admin") == 0,
          "a token signed with the rotated key is accepted");
    long n1 = jwks_requests(f);
    CHECK(n1 == n0 + 1, "exactly one JWKS refetch (%ld -> %ld)", n0, n1);
    CHECK(me(s, before_rotation, NULL, 0, NULL, 0) == 200, "the old key (still published) works");
    free(before_rotation);
    free(t);

    th_step("unknown kids do not make us hammer the issuer");
    for (int i = 0; i < 5; i++) {
        char kid[32];
        snprintf(kid, sizeof kid, "attacker-%d", i);
        expect_refused(s, "unknown kid", forge(f, NULL, json_pack("{s:s}", "kid", kid), "rs256"),
                       "unknown_kid");
    }
    CHECK(jwks_requests(f) == n1, "no refetch within 30 s (%ld -> %ld)", n1, jwks_requests(f));

    th_step("JWKS endpoint down: cached keys keep working");
    json_decref(fx_admin(f, "POST", "/admin/jwks/down", NULL));
    t = cc_token(f, "svc-operator");
    CHECK(me(s, t, NULL, 0, role, sizeof role) == 200 && strcmp(role, "operator") == 0,
          "accepted with the JWKS endpoint down");
    free(t);
    json_decref(fx_admin(f, "POST", "/admin/jwks/up", NULL));
}

static void test_misc(struct fixture *f, const struct th_server *s)
{
    th_step("oversized token -> 401 before parsing");
    size_t big = 16 * 1024 + 1;
    char *huge = malloc(big + 1);
    memset(huge, 'x', big);
    huge[big] = '\0';
    expect_refused(s, "oversized", huge, "oversized");

    th_step("the dev issuer is off in oidc mode; the console learns the issuer");
    struct th_resp r;
    th_get(s, "/dev-issuer/jwks", NULL, &r);
    CHECK(r.status == 404, "dev jwks 404: %ld", r.status);
    th_resp_free(&r);
    CHECK(th_post_json(s, "/dev-issuer/token", NULL, "{\"sub\":\"x\",\"role\":\"admin\"}", &r) ==
                  0 &&
              r.status == 404,
          "dev token 404: %ld", r.status);
    th_resp_free(&r);
    th_get(s, "/api/v1/auth/config", NULL, &r);
    CHECK(r.status == 200, "auth config");
    CHECK(strcmp(json_string_value(json_object_get(r.json, "issuer")) ?: "", f->issuer) == 0,
          "issuer");
    CHECK(strstr(json_string_value(json_object_get(r.json, "authorization_endpoint")) ?: "",
                 "/realms/qdb-one/") != NULL,
          "authorization endpoint from discovery: %s", r.body);
    th_resp_free(&r);

    th_get(s, "/metrics", NULL, &r);
    CHECK(strstr(r.body, "qdb_auth_denials_total{reason=\"alg\"} 3"), "alg denials counted");
    CHECK(strstr(r.body, "qdb_auth_denials_total{reason=\"unknown_kid\"} 5"),
          "unknown kid denials counted");
    th_resp_free(&r);
}

static void test_es256(struct fixture *f, const struct th_server *s, const char *url)
{
    th_step("ES256 is refused unless configured; then accepted, and never with an RSA kid");
    expect_refused(s, "ES256 with only RS256 configured", forge(f, NULL, NULL, "es256"), "alg");
    char iss[200];
    snprintf(iss, sizeof iss, "QDB_OIDC_ISSUER=%s", f->issuer);
    const char *env[] = {"QDB_AUTH_MODE=oidc", iss, "QDB_OIDC_ALGS=RS256, ES256", NULL};
    struct th_server s3;
    CHECK(th_server_start(&s3, url, env, 1) == 0, "a server allowing ES256 starts");
    if (!s3.pid)
        return;
    expect_ok(&s3, "ES256 token", forge(f, NULL, NULL, "es256"));
    expect_ok(&s3, "RS256 token", forge(f, NULL, NULL, "rs256"));
    json_t *st = fx_admin(f, "GET", "/admin/stats", NULL);
    char *rsa_kid = strdup(json_string_value(json_object_get(st, "kid")) ?: "");
    json_decref(st);
    expect_refused(&s3, "ES256 header naming the RSA key",
                   forge(f, NULL, json_pack("{s:s}", "kid", rsa_kid), "es256"), "alg");
    free(rsa_kid);
    CHECK(th_server_stop(&s3) == 0, "stops cleanly");
}

static void test_unreachable(struct fixture *f, const char *url)
{
    th_step("issuer unreachable and nothing cached -> 503");
    char iss[160];
    snprintf(iss, sizeof iss, "QDB_OIDC_ISSUER=http://127.0.0.1:%d/realms/qdb-one", th_free_port());
    const char *env[] = {"QDB_AUTH_MODE=oidc", iss, "QDB_OIDC_HTTP_TIMEOUT=2", NULL};
    struct th_server s2;
    CHECK(th_server_start(&s2, url, env, 1) == 0, "a server with an unreachable issuer starts");
    if (!s2.pid)
        return;
    char *t = cc_token(f, "svc-admin");
    struct th_resp r;
    th_get(&s2, "/api/v1/me", t, &r);
    CHECK(th_is_problem(&r, 503), "503 problem: %ld %s", r.status, r.body);
    CHECK(strstr(r.body, "issuer-unavailable") != NULL, "issuer-unavailable type");
    th_resp_free(&r);
    th_get(&s2, "/api/v1/auth/config", NULL, &r);
    CHECK(r.status == 503, "auth config 503: %ld", r.status);
    th_resp_free(&r);
    CHECK(me(&s2, NULL, NULL, 0, NULL, 0) == 401, "no token is still 401");
    CHECK(th_server_stop(&s2) == 0, "stops cleanly");
    free(t);
}

int main(void)
{
    char *url = th_db_create("auth_oidc");
    struct fixture f;
    struct th_server srv;
    memset(&srv, 0, sizeof srv);
    th_step("start the OIDC provider fixture");
    CHECK(fixture_start(&f) == 0, "fixture up");
    if (!f.pid)
        goto out;
    char iss[200];
    snprintf(iss, sizeof iss, "QDB_OIDC_ISSUER=%s", f.issuer);
    const char *env[] = {"QDB_AUTH_MODE=oidc", iss, NULL};
    CHECK(th_server_start(&srv, url, env, 1) == 0, "server starts in oidc mode");
    if (!srv.pid)
        goto out;
    test_roles(&f, &srv);
    test_claims(&f, &srv);
    test_rotation(&f, &srv);
    test_misc(&f, &srv);
    test_es256(&f, &srv, url);
    test_cached_expiry(&f, &srv);
    CHECK(th_server_stop(&srv) == 0, "server stops cleanly");
    test_stale_while_revalidate(&f, url);
    test_unreachable(&f, url);
out:
    th_server_kill(&srv);
    fixture_stop(&f);
    th_db_drop(url);
    free(url);
    return th_done();
}
