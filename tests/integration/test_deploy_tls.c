/* TLS on every hop (infrastructure 8.3), with certificates this test makes with the
 * openssl CLI:
 *   - HTTPS with QDB_TLS_CERT_FILE / QDB_TLS_KEY_FILE: TLS 1.3 served, a TLS 1.2 client
 *     refused, a client trusting another CA refused, plain HTTP on the port answered with
 *     nothing useful;
 *   - SIGHUP with a new certificate: the next connection gets it, while an SSE stream
 *     opened before (the jobs event stream) stays open and still receives events;
 *   - a certificate that fails to load on SIGHUP changes nothing;
 *   - PostgreSQL served with TLS (a private cluster, ssl=on, the test's certificate)
 *     reached with sslmode=verify-full under QDB_ENV=production, refused with a root
 *     certificate of another CA, and production refusing a weaker sslmode up front. */
#include <curl/curl.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

static char dir[256]; /* the test's certificates */

/* A CA (name.pem, name.key). */
static int make_ca(const char *name)
{
    return th_sh("cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
              "-keyout %s.key -out %s.pem -days 2 -subj /CN=%s 2>/dev/null",
              dir, name, name, name);
}

/* A server certificate for localhost and 127.0.0.1 (name.pem, name.key) signed by ca. */
static int make_cert(const char *name, const char *cn, const char *ca)
{
    return th_sh("cd %s && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > %s.ext && "
              "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s.key "
              "-out %s.csr -subj /CN=%s 2>/dev/null && "
              "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s.key -CAcreateserial -out "
              "%s.pem -days 2 -extfile %s.ext 2>/dev/null",
              dir, name, name, name, cn, name, ca, ca, name, name);
}

/* ---- an HTTPS client of our own (the harness speaks plain HTTP) ---- */

struct call {
    CURLcode rc;
    long status;
    char body[16384];
    size_t len;
    char subject[512]; /* the server certificate's subject */
};

static size_t on_body(char *p, size_t size, size_t n, void *cls)
{
    struct call *c = cls;
    size_t len = size * n;
    size_t room = sizeof c->body - 1 - c->len;
    size_t take = len < room ? len : room;
    memcpy(c->body + c->len, p, take);
    c->len += take;
    c->body[c->len] = '\0';
    return len;
}

/* One request to https://localhost:port; `tls` is a CURLOPT_SSLVERSION value. */
static void call(uint16_t port, const char *scheme, const char *path, const char *ca, long tls,
                 const char *token, const char *json, struct call *out)
{
    memset(out, 0, sizeof *out);
    char url[256], auth[20000];
    snprintf(url, sizeof url, "%s://localhost:%u%s", scheme, port, path);
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (json) {
        h = curl_slist_append(h, "Content-Type: application/json");
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, json);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca);
    curl_easy_setopt(c, CURLOPT_SSLVERSION, tls);
    curl_easy_setopt(c, CURLOPT_CERTINFO, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, out);
    out->rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    struct curl_certinfo *ci = NULL;
    if (out->rc == CURLE_OK && curl_easy_getinfo(c, CURLINFO_CERTINFO, &ci) == CURLE_OK && ci &&
        ci->num_of_certs > 0)
        for (struct curl_slist *s = ci->certinfo[0]; s; s = s->next)
            if (strncmp(s->data, "Subject:", 8) == 0)
                snprintf(out->subject, sizeof out->subject, "%s", s->data + 8);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
}

static int wait_https_ready(const struct th_server *s, const char *ca)
{
    for (int i = 0; i < 300; i++) {
        struct call r;
        call(s->port, "https", "/readyz", ca, CURL_SSLVERSION_TLSv1_3, NULL, NULL, &r);
        if (r.rc == CURLE_OK && r.status == 200)
            return 0;
        th_sleep_ms(100);
    }
    fprintf(stderr, "HTTPS server not ready; log %s\n", s->log);
    return -1;
}

static char *token_for(uint16_t port, const char *ca, const char *role)
{
    char body[160];
    snprintf(body, sizeof body, "{\"sub\":\"test-%s\",\"name\":\"T\",\"role\":\"%s\"}", role, role);
    struct call r;
    call(port, "https", "/dev-issuer/token", ca, CURL_SSLVERSION_TLSv1_3, NULL, body, &r);
    json_t *j = json_loads(r.body, 0, NULL);
    const char *at = json_string_value(json_object_get(j, "access_token"));
    char *tok = at ? strdup(at) : NULL;
    json_decref(j);
    return tok;
}

static long long enqueue_noop(uint16_t port, const char *ca, const char *token)
{
    struct call r;
    call(port, "https", "/api/v1/jobs", ca, CURL_SSLVERSION_TLSv1_3, token, "{\"kind\":\"noop\"}",
         &r);
    json_t *j = json_loads(r.body, 0, NULL);
    long long id = r.status == 202 ? (long long)json_integer_value(json_object_get(j, "id")) : -1;
    json_decref(j);
    return id;
}

/* Drive the stream (a multi handle) until its body contains `needle` or it ends. */
static int stream_until(CURLM *m, const struct call *body, const char *needle, int timeout_ms)
{
    double until = th_now_ms() + timeout_ms;
    while (th_now_ms() < until) {
        int running = 0;
        curl_multi_perform(m, &running);
        if (needle && strstr(body->body, needle))
            return 1;
        if (!running)
            return 0;
        curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    return 0;
}

static void test_https(void)
{
    char ca[300], other_ca[300], cert[300], key[300];
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    snprintf(other_ca, sizeof other_ca, "%s/other-ca.pem", dir);
    snprintf(cert, sizeof cert, "%s/served.pem", dir);
    snprintf(key, sizeof key, "%s/served.key", dir);
    th_step("https: the server serves QDB_TLS_CERT_FILE, TLS 1.3 only");
    CHECK(th_sh("cp %s/first.pem %s && cp %s/first.key %s", dir, cert, dir, key) == 0, "copied");
    char *url = th_db_create("deploy_tls");
    char cert_env[400], key_env[400];
    snprintf(cert_env, sizeof cert_env, "QDB_TLS_CERT_FILE=%s", cert);
    snprintf(key_env, sizeof key_env, "QDB_TLS_KEY_FILE=%s", key);
    const char *env[] = {cert_env, key_env, NULL};
    struct th_server s;
    if (th_server_start(&s, url, env, 0) != 0 || wait_https_ready(&s, ca) != 0) {
        CHECK(0, "HTTPS server started");
        th_server_kill(&s);
        th_db_drop(url);
        free(url);
        return;
    }
    struct call r;
    call(s.port, "https", "/healthz", ca, CURL_SSLVERSION_TLSv1_3 | CURL_SSLVERSION_MAX_TLSv1_3,
         NULL, NULL, &r);
    CHECK(r.rc == CURLE_OK && r.status == 200, "a TLS 1.3 client is served: %s",
          curl_easy_strerror(r.rc));
    CHECK(strstr(r.subject, "first") != NULL, "the first certificate: %s", r.subject);
    call(s.port, "https", "/healthz", ca, CURL_SSLVERSION_TLSv1_2 | CURL_SSLVERSION_MAX_TLSv1_2,
         NULL, NULL, &r);
    CHECK(r.rc != CURLE_OK && r.status == 0, "a TLS 1.2 client is refused (%s)",
          curl_easy_strerror(r.rc));
    call(s.port, "https", "/healthz", ca, CURL_SSLVERSION_TLSv1 | CURL_SSLVERSION_MAX_TLSv1_1, NULL,
         NULL, &r);
    CHECK(r.rc != CURLE_OK && r.status == 0, "a TLS 1.0/1.1 client is refused (%s)",
          curl_easy_strerror(r.rc));
    call(s.port, "https", "/healthz", other_ca, CURL_SSLVERSION_TLSv1_3, NULL, NULL, &r);
    CHECK(r.rc == CURLE_PEER_FAILED_VERIFICATION, "a client trusting another CA refuses it (%s)",
          curl_easy_strerror(r.rc));
    call(s.port, "http", "/healthz", ca, CURL_SSLVERSION_DEFAULT, NULL, NULL, &r);
    CHECK(r.status != 200, "plain HTTP on the HTTPS port is not served (HTTP %ld, %s)", r.status,
          curl_easy_strerror(r.rc));
    CHECK(th_server_log_contains(&s, "\"scheme\":\"https\""), "the listening line says https");

    th_step("https: SIGHUP serves a new certificate; an open SSE stream stays");
    char *viewer = token_for(s.port, ca, "viewer");
    char *admin = token_for(s.port, ca, "admin");
    CHECK(viewer && admin, "tokens over HTTPS");
    static struct call stream;
    memset(&stream, 0, sizeof stream);
    char surl[128], sauth[20000];
    snprintf(surl, sizeof surl, "https://localhost:%u/api/v1/jobs/events", s.port);
    snprintf(sauth, sizeof sauth, "Authorization: Bearer %s", viewer ? viewer : "");
    struct curl_slist *sh_hdr = curl_slist_append(NULL, sauth);
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, surl);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, sh_hdr);
    curl_easy_setopt(e, CURLOPT_CAINFO, ca);
    curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_3);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &stream);
    CURLM *m = curl_multi_init();
    curl_multi_add_handle(m, e);
    int open1 = stream_until(m, &stream, ": connected", 10000);
    long sst = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &sst);
    CHECK(open1 && sst == 200, "the stream is open (HTTP %ld): %s", sst, stream.body);
    long long id1 = enqueue_noop(s.port, ca, admin);
    char want[96];
    snprintf(want, sizeof want, "\"id\":%lld,\"state\":\"succeeded\"", id1);
    CHECK(stream_until(m, &stream, want, 20000), "events reach it before the reload: %s",
          stream.body);

    CHECK(th_sh("cp %s/second.pem %s && cp %s/second.key %s", dir, cert, dir, key) == 0,
          "the files now hold the second certificate");
    kill(s.pid, SIGHUP);
    int reloaded = 0;
    for (int i = 0; i < 200 && !reloaded; i++) {
        reloaded = th_server_log_contains(&s, "TLS certificate reloaded");
        if (!reloaded)
            stream_until(m, &stream, NULL, 50);
    }
    CHECK(reloaded, "the reload is logged");
    call(s.port, "https", "/healthz", ca, CURL_SSLVERSION_TLSv1_3, NULL, NULL, &r);
    CHECK(r.rc == CURLE_OK && r.status == 200 && strstr(r.subject, "second"),
          "the next connection gets the second certificate: %s (%s)", r.subject,
          curl_easy_strerror(r.rc));
    long long id2 = enqueue_noop(s.port, ca, admin);
    snprintf(want, sizeof want, "\"id\":%lld,\"state\":\"succeeded\"", id2);
    CHECK(id2 > 0 && stream_until(m, &stream, want, 20000),
          "the stream opened before the reload is still open and gets the new job's events");
    int running = 0;
    curl_multi_perform(m, &running);
    CHECK(running == 1, "the stream has not ended");

    th_step("https: a SIGHUP with a broken key keeps the certificate in use");
    CHECK(th_sh("cp %s/first.key %s", dir, key) == 0, "a key that does not match");
    kill(s.pid, SIGHUP);
    int refused = 0;
    for (int i = 0; i < 200 && !refused; i++) {
        refused = th_server_log_contains(&s, "TLS certificate not reloaded");
        if (!refused)
            th_sleep_ms(50);
    }
    CHECK(refused && th_server_log_contains(&s, "does not belong to the certificate"),
          "the mismatch is logged");
    call(s.port, "https", "/healthz", ca, CURL_SSLVERSION_TLSv1_3, NULL, NULL, &r);
    CHECK(r.rc == CURLE_OK && r.status == 200 && strstr(r.subject, "second"),
          "still the second certificate: %s", r.subject);
    curl_multi_perform(m, &running);
    CHECK(running == 1, "the stream is still open");

    th_step("outgoing calls: the issuer is verified against QDB_CA_FILE");
    /* the HTTPS server above stands in for an issuer: it has no discovery document, so a
     * fetch that got through TLS ends in HTTP 404, one that did not in a TLS error */
    char issuer[200], ca_env[400], other_env[400], oidc_ca_env[400];
    snprintf(issuer, sizeof issuer, "QDB_OIDC_ISSUER=https://localhost:%u/realms/qdb-one", s.port);
    snprintf(ca_env, sizeof ca_env, "QDB_CA_FILE=%s", ca);
    snprintf(other_env, sizeof other_env, "QDB_CA_FILE=%s", other_ca);
    snprintf(oidc_ca_env, sizeof oidc_ca_env, "QDB_OIDC_CA_FILE=%s", ca);
    const char *trusting[] = {"QDB_AUTH_MODE=oidc", issuer, ca_env, NULL};
    const char *distrusting[] = {"QDB_AUTH_MODE=oidc", issuer, other_env, NULL};
    const char *old_name[] = {"QDB_AUTH_MODE=oidc", issuer, other_env, oidc_ca_env, NULL};
    const char *const *cases[] = {trusting, distrusting, old_name};
    const char *expect[] = {"HTTP 404", "SSL peer certificate", "HTTP 404"};
    const char *what[] = {"QDB_CA_FILE trusts the issuer's CA: TLS passes (HTTP 404)",
                          "QDB_CA_FILE of another CA: the issuer is refused",
                          "QDB_OIDC_CA_FILE, the older name, still wins when set"};
    for (int i = 0; i < 3; i++) {
        struct th_server o;
        int up = th_server_start(&o, url, cases[i], 1) == 0;
        int seen = 0;
        for (int k = 0; up && k < 300 && !seen; k++) {
            /* a request that needs a key makes the server fetch discovery */
            th_status(&o, "GET", "/api/v1/jobs", "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ.e30.c2ln");
            seen = th_server_log_contains(&o, "OIDC discovery failed") ||
                   th_server_log_contains(&o, "JWKS fetch failed");
            if (!seen)
                th_sleep_ms(100);
        }
        CHECK(up && seen && th_server_log_contains(&o, expect[i]), "%s (log %s)", what[i], o.log);
        if (up)
            th_server_stop(&o);
    }

    curl_multi_remove_handle(m, e);
    curl_easy_cleanup(e);
    curl_multi_cleanup(m);
    curl_slist_free_all(sh_hdr);
    free(viewer);
    free(admin);
    CHECK(th_server_stop(&s) == 0, "clean stop");
    th_db_drop(url);
    free(url);
}

static void test_config_errors(void)
{
    th_step("https: configuration errors are said up front");
    char *url = th_db_create("deploy_tls_cfg");
    char err[16384]; /* the refusal comes after a line per migration */
    char dburl[600], cert_env[400], key_env[400];
    snprintf(dburl, sizeof dburl, "QDB_DATABASE_URL=%s", url);
    snprintf(cert_env, sizeof cert_env, "QDB_TLS_CERT_FILE=%s/first.pem", dir);
    snprintf(key_env, sizeof key_env, "QDB_TLS_KEY_FILE=%s/first.key", dir);
    const char *serve[] = {"serve", NULL};
    const char *only_cert[] = {dburl, cert_env, "QDB_AUTH_MODE=dev", th_audit_key_env(), NULL};
    int rc = th_run_binary(serve, only_cert, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "QDB_TLS_KEY_FILE: is required"),
          "a certificate without a key: %d %s", rc, err);
    char bad_key[400];
    snprintf(bad_key, sizeof bad_key, "QDB_TLS_KEY_FILE=%s/second.key", dir);
    const char *mismatch[] = {
        dburl, cert_env, bad_key, "QDB_AUTH_MODE=dev", "QDB_LISTEN=127.0.0.1:0", th_audit_key_env(),
        NULL};
    rc = th_run_binary(serve, mismatch, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "does not belong to the certificate"),
          "a key of another certificate: %d %s", rc, err);

    const char *migrate[] = {"migrate", NULL};
    char weak[700];
    snprintf(weak, sizeof weak, "QDB_DATABASE_URL=%s?sslmode=require", url);
    const char *prod_weak[] = {weak, "QDB_ENV=production", NULL};
    rc = th_run_binary(migrate, prod_weak, err, sizeof err);
    CHECK(rc == 2 &&
              strstr(err, "QDB_DATABASE_URL: QDB_ENV=production requires "
                          "sslmode=verify-full") &&
              strstr(err, "not sslmode=require"),
          "production refuses sslmode=require: %d %s", rc, err);
    CHECK(!strstr(err, "postgresql://"), "the URL is not echoed");
    const char *prod_none[] = {dburl, "QDB_ENV=production", "PGSSLMODE=", NULL};
    rc = th_run_binary(migrate, prod_none, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "not sslmode=prefer"), "production refuses the default: %d %s", rc,
          err);
    const char *dr_weak[] = {weak, "QDB_ENV=dr", NULL};
    rc = th_run_binary(migrate, dr_weak, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "QDB_ENV=dr requires"), "so does dr: %d %s", rc, err);
    const char *staging[] = {weak, "QDB_ENV=staging", NULL};
    rc = th_run_binary(migrate, staging, err, sizeof err);
    CHECK(rc != 2 || !strstr(err, "verify-full"), "staging takes its own choice: %d %s", rc, err);
    th_step("QDB_DATABASE_URL_FILE: the URL from a file, as Vault mounts it");
    char url_file[300], url_file_env[400];
    snprintf(url_file, sizeof url_file, "%s/database-url", dir);
    FILE *f = fopen(url_file, "w");
    if (f) {
        fprintf(f, "%s\n", url);
        fclose(f);
    }
    snprintf(url_file_env, sizeof url_file_env, "QDB_DATABASE_URL_FILE=%s", url_file);
    const char *from_file[] = {url_file_env, NULL};
    rc = th_run_binary(migrate, from_file, err, sizeof err);
    CHECK(rc == 0, "migrate reads the URL from the file: %d %s", rc, err);
    const char *both[] = {url_file_env, dburl, NULL};
    rc = th_run_binary(migrate, both, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "QDB_DATABASE_URL_FILE: is set with QDB_DATABASE_URL"),
          "both at once are refused: %d %s", rc, err);
    const char *bad_env[] = {dburl, "QDB_ENV=prod", NULL};
    rc = th_run_binary(migrate, bad_env, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "QDB_ENV: 'prod' is not one of"), "an unknown QDB_ENV: %s", err);
    th_db_drop(url);
    free(url);
}

static void test_postgres_tls(void)
{
    th_step("postgres: a cluster with ssl=on, reached with sslmode=verify-full");
    struct th_pg pg;
    if (th_pg_private_start(&pg) != 0) {
        CHECK(0, "private cluster started");
        return;
    }
    /* the cluster's certificate, owned by the cluster's user, the key readable by it only */
    CHECK(th_sh("cp %s/pg.pem %s/data/server.crt && cp %s/pg.key %s/data/server.key && "
             "chmod 600 %s/data/server.key",
             dir, pg.dir, dir, pg.dir, pg.dir) == 0,
          "certificate in the data folder");
    if (getuid() == 0)
        CHECK(th_sh("chown postgres:postgres %s/data/server.crt %s/data/server.key", pg.dir, pg.dir) ==
                  0,
              "owned by postgres");
    char *admin = th_pg_private_db(&pg, "postgres");
    PGresult *res = th_sql(admin, "ALTER SYSTEM SET ssl = on", NULL);
    PQclear(res);
    res = th_sql(admin, "SELECT pg_reload_conf()", NULL);
    PQclear(res);
    long on = -1;
    for (int i = 0; i < 100 && on != 1; i++) {
        on = th_sql_long(admin, "SELECT (current_setting('ssl') = 'on')::int", NULL);
        if (on != 1)
            th_sleep_ms(50);
    }
    CHECK(on == 1, "ssl is on");
    char *plain = th_pg_private_db(&pg, "qdb_tls");
    char url[700], wrong[700];
    /* th_pg_private_db gives postgresql://postgres@127.0.0.1:PORT/qdb_tls */
    snprintf(url, sizeof url,
             "postgresql://postgres@localhost:%d/qdb_tls?sslmode=verify-full&sslrootcert=%s/ca.pem",
             pg.port, dir);
    snprintf(wrong, sizeof wrong,
             "postgresql://postgres@localhost:%d/qdb_tls?sslmode=verify-full&sslrootcert=%s/"
             "other-ca.pem",
             pg.port, dir);
    const char *prod[] = {"QDB_ENV=production", NULL};
    struct th_server s;
    int started = th_server_start(&s, url, prod, 1);
    CHECK(started == 0, "the server starts in production mode over verify-full");
    if (started == 0) {
        long ssl = th_sql_long(plain,
                               "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                               "WHERE application_name LIKE 'qdb%' AND ssl "
                               "AND version = 'TLSv1.3'",
                               NULL);
        long clear = th_sql_long(plain,
                                 "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING "
                                 "(pid) WHERE application_name LIKE 'qdb%' AND NOT ssl",
                                 NULL);
        CHECK(ssl >= 4 && clear == 0,
              "its connections (pool, prober, workers, listener) are TLS 1.3 (%ld) and none in "
              "clear (%ld)",
              ssl, clear);
        struct th_resp r;
        CHECK(th_get(&s, "/readyz", NULL, &r) == 0 && r.status == 200, "ready");
        th_resp_free(&r);
        CHECK(th_server_stop(&s) == 0, "clean stop");
    }
    th_step("postgres: verify-full against another CA's root is refused");
    char err[2048], dburl[800];
    snprintf(dburl, sizeof dburl, "QDB_DATABASE_URL=%s", wrong);
    const char *migrate[] = {"migrate", NULL};
    const char *env[] = {dburl, "QDB_ENV=production", NULL};
    int rc = th_run_binary(migrate, env, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "certificate verify failed"),
          "the state store's certificate is not trusted: %d %s", rc, err);
    free(plain);
    free(admin);
    th_pg_private_destroy(&pg);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(dir, sizeof dir, "/tmp/qdb-test-tls-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    chmod(dir, 0755);
    int made = make_ca("ca") == 0 && make_ca("other-ca") == 0 &&
               make_cert("first", "first", "ca") == 0 && make_cert("second", "second", "ca") == 0 &&
               make_cert("pg", "localhost", "ca") == 0;
    CHECK(made, "a CA and certificates made with openssl");
    if (made) {
        test_https();
        test_config_errors();
        test_postgres_tls();
    }
    th_sh("rm -rf %s", dir);
    curl_global_cleanup();
    return th_done();
}
