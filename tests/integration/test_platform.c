/* The foundation end to end: the real binary against real PostgreSQL over HTTP.
 * Health, readiness, metrics (checked by promtool), the contract, static files (types, ETag,
 * 304, traversal), errors (404, 405, 413, 415, 400 with line/column), request ids and the
 * access log, random bodies, idle connections from one address, slow clients, graceful
 * shutdown, 10,000 random bodies, configuration errors, migrations (concurrent, changed checksum, newer database)
 * and a state-store outage. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <glob.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static size_t discard(char *p, size_t size, size_t n, void *cls)
{
    (void)p;
    (void)cls;
    return size * n;
}

/* A raw TCP connection from `src` (e.g. "127.0.0.2") to the server. */
static int tcp_connect(const struct th_server *s, const char *src)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (src) {
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        inet_pton(AF_INET, src, &a.sin_addr);
        if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            close(fd);
            return -1;
        }
    }
    struct sockaddr_in d = {0};
    d.sin_family = AF_INET;
    d.sin_port = htons(s->port);
    inet_pton(AF_INET, "127.0.0.1", &d.sin_addr);
    if (connect(fd, (struct sockaddr *)&d, sizeof d) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *p)
{
    size_t n = strlen(p);
    return send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

/* Whether the peer closed fd within ms (read returns 0 or an error). */
static int closed_within(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    double end = th_now_ms() + ms;
    for (;;) {
        double left = end - th_now_ms();
        if (poll(&p, 1, left > 50 ? 50 : (left > 0 ? (int)left : 0)) > 0) {
            char b[512];
            ssize_t r = recv(fd, b, sizeof b, MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN))
                return 1;
        }
        if (th_now_ms() >= end)
            return 0;
    }
}

/* Whether the server's log shows `needle` within ms (lines are written as requests end). */
static int log_shows_within(const struct th_server *s, const char *needle, int ms)
{
    double end = th_now_ms() + ms;
    while (!th_server_log_contains(s, needle)) {
        if (th_now_ms() >= end)
            return 0;
        th_sleep_ms(20);
    }
    return 1;
}

/* Read from fd until `want` bytes or the peer closes or ms pass; returns bytes read, or -1
 * with errno set when the read failed (ECONNRESET: the peer reset the connection). */
static ssize_t recv_upto(int fd, char *buf, size_t want, int ms)
{
    size_t got = 0;
    double end = th_now_ms() + ms;
    while (got < want) {
        double left = end - th_now_ms();
        struct pollfd p = {fd, POLLIN, 0};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            break;
        ssize_t n = recv(fd, buf + got, want - got, 0);
        if (n < 0)
            return got ? (ssize_t)got : -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* Connect, send an HTTP/1.1 request's head and then its whole body without waiting for any
 * answer, as Python's http.client does (a failed send is the request failing, as there),
 * then read the status line. A small send buffer keeps the body in flight as on a real
 * network, instead of parked whole in loopback's buffers. Returns the status, or -1
 * (reset, no answer: *err says which). */
static int send_whole_then_read(const struct th_server *s, const char *head, size_t body_len,
                                int *err)
{
    *err = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int sndbuf = 32 * 1024;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    struct sockaddr_in d = {0};
    d.sin_family = AF_INET;
    d.sin_port = htons(s->port);
    inet_pton(AF_INET, "127.0.0.1", &d.sin_addr);
    if (connect(fd, (struct sockaddr *)&d, sizeof d) != 0) {
        *err = errno;
        close(fd);
        return -1;
    }
    struct timeval tv = {20, 0};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char *body = malloc(body_len);
    memset(body, 'x', body_len);
    int status = -1;
    if (send_all(fd, head) != 0)
        *err = errno;
    for (size_t off = 0; !*err && off < body_len;) {
        ssize_t n = send(fd, body + off, body_len - off, MSG_NOSIGNAL);
        if (n <= 0) {
            *err = errno ? errno : EPIPE;
            break;
        }
        off += (size_t)n;
    }
    char buf[256] = "";
    ssize_t n = *err ? 0 : recv_upto(fd, buf, 12, 20000);
    if (n < 0)
        *err = errno;
    else if (n == 12 && strncmp(buf, "HTTP/1.1 ", 9) == 0)
        status = (int)strtol(buf + 9, NULL, 10);
    free(body);
    close(fd);
    return status;
}

static size_t migration_files(void)
{
    glob_t g;
    size_t n = 0;
    if (glob(QDB_SOURCE_DIR "/migrations/*.sql", 0, NULL, &g) == 0)
        n = g.gl_pathc;
    globfree(&g);
    return n;
}

/* The first route that takes a JSON body, from `qdb-control routes`. */
static char *json_body_route(void)
{
    FILE *p = popen(QDB_BINARY " routes", "r");
    json_t *routes = json_loadf(p, 0, NULL);
    pclose(p);
    char *path = NULL;
    size_t i;
    json_t *r;
    json_array_foreach(routes, i, r)
    {
        if (json_is_true(json_object_get(r, "json_body")) &&
            !strchr(json_string_value(json_object_get(r, "path")), '{') &&
            strcmp(json_string_value(json_object_get(r, "method")), "POST") == 0) {
            path = strdup(json_string_value(json_object_get(r, "path")));
            break;
        }
    }
    json_decref(routes);
    return path;
}

static void test_health_and_contract(const struct th_server *s)
{
    struct th_resp r;
    th_step("GET /healthz, /readyz");
    th_get(s, "/healthz", NULL, &r);
    CHECK(r.status == 200 && strcmp(json_string_value(json_object_get(r.json, "status")), "ok") == 0,
          "healthz %ld", r.status);
    th_resp_free(&r);
    th_get(s, "/readyz", NULL, &r);
    CHECK(r.status == 200 && json_integer_value(json_object_get(r.json, "schema_version")) >= 0,
          "readyz %ld %s", r.status, r.body);
    th_resp_free(&r);

    th_step("GET /api/v1/openapi.yaml serves the contract file byte for byte");
    th_get(s, "/api/v1/openapi.yaml", NULL, &r);
    FILE *f = fopen(QDB_SOURCE_DIR "/api/openapi.yaml", "rb");
    char *file = calloc(1, 1 << 20);
    size_t flen = fread(file, 1, (1 << 20) - 1, f);
    fclose(f);
    CHECK(r.status == 200 && r.len == flen && memcmp(r.body, file, flen) == 0,
          "openapi.yaml differs from the file (%zu vs %zu bytes)", r.len, flen);
    free(file);
    th_resp_free(&r);
}

static void test_metrics(const struct th_server *s)
{
    th_step("GET /metrics passes promtool check metrics and counts requests by route");
    struct th_resp r;
    th_get(s, "/healthz", NULL, &r);
    th_resp_free(&r);
    th_get(s, "/metrics", NULL, &r);
    char *ct = th_resp_header(&r, "Content-Type");
    CHECK(r.status == 200 && ct && strstr(ct, "version=0.0.4"), "content type %s", ct);
    free(ct);
    CHECK(strstr(r.body, "qdb_http_requests_total{route=\"/healthz\",status=\"200\"}") != NULL,
          "request counter for /healthz");
    CHECK(strstr(r.body, "qdb_http_request_duration_seconds_bucket{route=\"/healthz\",status="
                         "\"200\",le=\"+Inf\"}") != NULL,
          "latency histogram for /healthz");
    CHECK(strstr(r.body, "qdb_db_pool_connections{state=\"in_use\"}") != NULL, "pool in use");
    CHECK(strstr(r.body, "qdb_db_pool_connections{state=\"idle\"}") != NULL, "pool idle");
    CHECK(strstr(r.body, "process_start_time_seconds ") != NULL, "start time");
    CHECK(strstr(r.body, "process_resident_memory_bytes ") != NULL, "resident memory");
    CHECK(strstr(r.body, "\nqdb_http_handler_threads 8\n") != NULL, "handler pool size");
    CHECK(strstr(r.body, "\nqdb_http_handler_queued 0\n") != NULL, "handler queue empty");
    char path[256];
    snprintf(path, sizeof path, "%s/metrics-%d.txt",
             getenv("QDB_TEST_LOG_DIR") ? getenv("QDB_TEST_LOG_DIR") : "/tmp", (int)getpid());
    FILE *f = fopen(path, "w");
    fwrite(r.body, 1, r.len, f);
    fclose(f);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "promtool check metrics < %s", path);
    int rc = system(cmd);
    CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "promtool check metrics failed on %s", path);
    th_resp_free(&r);
}

static void test_static(const struct th_server *s)
{
    th_step("static files: content types, ETag, 304");
    struct th_resp r;
    th_get(s, "/", NULL, &r);
    char *ct = th_resp_header(&r, "Content-Type");
    char *etag = th_resp_header(&r, "ETag");
    CHECK(r.status == 200 && ct && strncmp(ct, "text/html", 9) == 0 && strstr(r.body, "<html"),
          "index %ld %s", r.status, ct ? ct : "(none)");
    CHECK(etag && etag[0] == '"', "ETag %s", etag ? etag : "(none)");
    free(ct);
    th_resp_free(&r);
    if (etag) {
        char h[128];
        snprintf(h, sizeof h, "If-None-Match: %s", etag);
        const char *hdrs[] = {h, NULL};
        th_http(s, "GET", "/index.html", hdrs, NULL, 0, &r);
        CHECK(r.status == 304 && r.len == 0, "If-None-Match gives 304, got %ld", r.status);
        th_resp_free(&r);
        const char *stale[] = {"If-None-Match: \"0-0\"", NULL};
        th_http(s, "GET", "/", stale, NULL, 0, &r);
        CHECK(r.status == 200, "stale ETag gives 200, got %ld", r.status);
        th_resp_free(&r);
    }
    free(etag);
    static const struct {
        const char *path, *type;
    } types[] = {{"/style.css", "text/css"}, {"/app.js", "text/javascript"}};
    for (size_t i = 0; i < 2; i++) {
        th_get(s, types[i].path, NULL, &r);
        ct = th_resp_header(&r, "Content-Type");
        CHECK(r.status == 200 && ct && strncmp(ct, types[i].type, strlen(types[i].type)) == 0,
              "%s is %s", types[i].path, ct);
        free(ct);
        th_resp_free(&r);
    }
    th_http(s, "HEAD", "/style.css", NULL, NULL, 0, &r);
    CHECK(r.status == 200 && r.len == 0, "HEAD of a file: %ld, %zu bytes", r.status, r.len);
    th_resp_free(&r);

    th_step("no path traversal: every variant is 404 and never the file above web/");
    /* web/ sits beside CMakeLists.txt in the source tree: that file is the target. */
    static const char *const attacks[] = {
        "/../CMakeLists.txt",          "/%2e%2e/CMakeLists.txt",    "/%2E%2E/CMakeLists.txt",
        "/..%2fCMakeLists.txt",        "/..%2FCMakeLists.txt",      "/%2e%2e%2fCMakeLists.txt",
        "/.%2e/CMakeLists.txt",        "/..%5cCMakeLists.txt",      "/x/../../CMakeLists.txt",
        "/index.html%00.css",          "/.git/config",              "//etc/passwd",
        "/%2fetc%2fpasswd",            "/..\\CMakeLists.txt",       "/x/%2e%2e/%2e%2e/README.md",
    };
    for (size_t i = 0; i < sizeof attacks / sizeof attacks[0]; i++) {
        th_get(s, attacks[i], NULL, &r);
        CHECK(r.status == 404 && th_is_problem(&r, 404) && !strstr(r.body, "cmake_minimum"),
              "%s gave %ld", attacks[i], r.status);
        th_resp_free(&r);
    }
    th_get(s, "/no-such-file.html", NULL, &r);
    CHECK(th_is_problem(&r, 404), "missing file 404 problem");
    th_resp_free(&r);
}

static void test_errors_and_ids(const struct th_server *s)
{
    struct th_resp r;
    th_step("unknown API path is 404 problem+json with every RFC 9457 member");
    th_get(s, "/api/v1/nothing-here", NULL, &r);
    CHECK(th_is_problem(&r, 404), "404 problem: %s", r.body);
    CHECK(strcmp(json_string_value(json_object_get(r.json, "instance")), "/api/v1/nothing-here") == 0,
          "instance is the path");
    th_resp_free(&r);

    th_step("known path, wrong method: 405 with Allow");
    th_http(s, "DELETE", "/healthz", NULL, NULL, 0, &r);
    char *allow = th_resp_header(&r, "Allow");
    CHECK(th_is_problem(&r, 405) && allow && strstr(allow, "GET"), "405 Allow=%s", allow);
    free(allow);
    th_resp_free(&r);

    th_step("X-Request-Id: a sane one is echoed and logged, an insane one replaced");
    const char *good[] = {"X-Request-Id: test-req-0001", NULL};
    th_http(s, "GET", "/healthz", good, NULL, 0, &r);
    char *rid = th_resp_header(&r, "X-Request-Id");
    CHECK(rid && strcmp(rid, "test-req-0001") == 0, "echoed %s", rid ? rid : "(none)");
    free(rid);
    th_resp_free(&r);
    const char *bad[] = {"X-Request-Id: bad id with spaces\"}", NULL};
    th_http(s, "GET", "/healthz", bad, NULL, 0, &r);
    rid = th_resp_header(&r, "X-Request-Id");
    CHECK(rid && strlen(rid) == 32 && !strchr(rid, ' '), "generated %s", rid ? rid : "(none)");
    char generated[64];
    snprintf(generated, sizeof generated, "\"request_id\":\"%s\"", rid ? rid : "?");
    free(rid);
    th_resp_free(&r);
    CHECK(log_shows_within(s, "\"request_id\":\"test-req-0001\"", 5000), "request id logged");
    CHECK(log_shows_within(s, generated, 5000), "generated id logged");
    CHECK(th_server_log_contains(s, "\"duration_ms\":"), "access log has duration_ms");
    CHECK(!th_server_log_contains(s, "bad id with spaces"), "insane id never logged");

    th_step("bodies: 1 MiB + 1 byte is 413 (declared and chunked); exactly 1 MiB is read");
    char *route = json_body_route();
    CHECK(route != NULL, "some route takes a JSON body");
    if (route) {
        size_t big = 1024 * 1024 + 1;
        char *body = malloc(big);
        memset(body, ' ', big);
        const char *ct[] = {"Content-Type: application/json", NULL};
        th_http(s, "POST", route, ct, body, big, &r);
        CHECK(th_is_problem(&r, 413), "declared 1 MiB + 1 gave %ld", r.status);
        th_resp_free(&r);
        th_http(s, "GET", "/healthz", ct, body, big, &r);
        CHECK(th_is_problem(&r, 413), "413 even on a route without a body, got %ld", r.status);
        th_resp_free(&r);
        const char *chunked[] = {"Content-Type: application/json", "Transfer-Encoding: chunked",
                                 NULL};
        th_http(s, "GET", "/healthz", chunked, body, big, &r);
        CHECK(th_is_problem(&r, 413), "chunked 1 MiB + 1 on a public route gave %ld", r.status);
        th_resp_free(&r);
        th_http(s, "GET", "/healthz", chunked, body, big - 1, &r);
        CHECK(r.status == 200, "chunked exactly 1 MiB is read, got %ld", r.status);
        th_resp_free(&r);
        free(body);

        th_step("a JSON route without a token is 401 before the body is read");
        th_http(s, "POST", route, ct, "{}", 2, &r);
        CHECK(th_is_problem(&r, 401), "no token: %ld", r.status);
        th_resp_free(&r);
    }
    free(route);
    th_get(s, "/healthz", NULL, &r);
    CHECK(r.status == 200, "still alive after the big bodies");
    th_resp_free(&r);
}

/* 10,000 POSTs of random bytes (some shaped like JSON) to a JSON route as admin: every
 * answer is a 4xx problem, the server stays alive, and the sanitizers report nothing at
 * stop (checked by th_server_stop). One keep-alive connection, so it takes seconds. */
static void test_bodies(const struct th_server *s)
{
    char *route = json_body_route();
    char *token = th_dev_token(s, "admin");
    CHECK(route && token, "a JSON route and an admin token");
    if (!route || !token)
        goto out;
    char auth[8192];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    struct th_resp r;

    th_step("415: a JSON route refuses other media types (with a valid token)");
    const char *text[] = {auth, "Content-Type: text/plain", NULL};
    th_http(s, "POST", route, text, "{}", 2, &r);
    CHECK(th_is_problem(&r, 415), "text/plain gave %ld", r.status);
    th_resp_free(&r);
    const char *none[] = {auth, "Content-Type:", NULL}; /* curl would add a form type */
    th_http(s, "POST", route, none, "{}", 2, &r);
    CHECK(th_is_problem(&r, 415), "no Content-Type gave %ld", r.status);
    th_resp_free(&r);

    th_step("413: a chunked JSON body of 1 MiB + 1 byte (with a valid token)");
    size_t big = 1024 * 1024 + 1;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    const char *chunked[] = {auth, "Content-Type: application/json", "Transfer-Encoding: chunked",
                             NULL};
    th_http(s, "POST", route, chunked, huge, big, &r);
    CHECK(th_is_problem(&r, 413), "chunked 1 MiB + 1 gave %ld", r.status);
    th_resp_free(&r);
    free(huge);

    th_step("400: malformed JSON names line and column");
    const char *ct[] = {auth, "Content-Type: application/json; charset=utf-8", NULL};
    const char *bad = "{\n  \"kind\": \"noop\",\n  \"args\": {,}\n}";
    th_http(s, "POST", route, ct, bad, strlen(bad), &r);
    CHECK(th_is_problem(&r, 400) && json_integer_value(json_object_get(r.json, "line")) == 3 &&
              json_integer_value(json_object_get(r.json, "column")) > 0,
          "malformed JSON: %s", r.body);
    th_resp_free(&r);
    th_http(s, "POST", route, ct, "", 0, &r);
    CHECK(th_is_problem(&r, 400), "empty body gave %ld", r.status);
    th_resp_free(&r);

    th_step("10,000 random bodies: only 4xx answers, server alive");
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "%s%s", s->base, route);
    struct curl_slist *hl = NULL;
    hl = curl_slist_append(hl, auth);
    hl = curl_slist_append(hl, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    static const char shapes[] = "{}[]\":,0123456789.-+eEtrufalsn \\/\x01\xff\xc3";
    unsigned seed = 20261125;
    int not4xx = 0, transport = 0;
    long last = 0;
    char body[512];
    for (int i = 0; i < 10000; i++) {
        size_t len = (size_t)(rand_r(&seed) % (int)sizeof body);
        int mode = i % 3; /* raw bytes, JSON-ish characters, or a JSON object prefix */
        for (size_t k = 0; k < len; k++)
            body[k] = mode == 0 ? (char)(rand_r(&seed) & 0xff)
                                : shapes[rand_r(&seed) % (int)(sizeof shapes - 1)];
        if (mode == 2 && len > 2) {
            body[0] = '{';
            body[len - 1] = '}';
        }
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)len);
        if (curl_easy_perform(c) != CURLE_OK) {
            transport++;
            continue;
        }
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &last);
        if (last < 400 || last > 499) {
            if (not4xx++ < 5)
                fprintf(stderr, "  body %d (%zu bytes) gave %ld\n", i, len, last);
        }
    }
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    CHECK(not4xx == 0, "%d of 10,000 random bodies were not answered 4xx", not4xx);
    CHECK(transport == 0, "%d transport errors", transport);
    th_get(s, "/healthz", NULL, &r);
    CHECK(r.status == 200, "alive after 10,000 random bodies");
    th_resp_free(&r);
out:
    free(route);
    free(token);
}

/* Early replies reach a client that writes its whole body before reading (no Expect:
 * 100-continue): the server drains the body and answers, it does not reset. */
static void test_early_replies(const struct th_server *s)
{
    char *route = json_body_route();
    CHECK(route != NULL, "some route takes a JSON body");
    if (!route)
        return;
    static const struct {
        const char *what, *auth;
        size_t len;
        int status;
    } cases[] = {
        {"413 for a declared 4 MiB body", "", 4u << 20, 413},
        {"401 without a token, 512 KiB body", "", 512u << 10, 401},
        {"401 from the blocking authenticator, 512 KiB body",
         "Authorization: Bearer not-a-jwt\r\n", 512u << 10, 401},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        th_step("early reply, whole body written first: %s", cases[i].what);
        char head[1024];
        snprintf(head, sizeof head,
                 "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                 route, cases[i].auth, cases[i].len);
        int err = 0;
        int status = send_whole_then_read(s, head, cases[i].len, &err);
        CHECK(status == cases[i].status, "%s: status %d (%s)", cases[i].what, status,
              err ? strerror(err) : "no error");
    }
    free(route);
}

struct blocked_get {
    const struct th_server *s;
    const char *path, *token;
    long status;
};

static void *blocked_get_main(void *cls)
{
    struct blocked_get *b = cls;
    struct th_resp r;
    if (th_get(b->s, b->path, b->token, &r) == 0)
        b->status = r.status;
    th_resp_free(&r);
    return NULL;
}

/* /healthz and /readyz never wait behind database work: with the one handler thread and the
 * one pooled connection stuck on a lock, both still answer at once. */
static void test_health_never_waits(const char *url)
{
    th_step("health answers at once while every handler thread waits on the state store");
    struct th_server s;
    /* a long statement timeout: the blocked request must outlast the checks below */
    const char *env[] = {"QDB_HTTP_HANDLER_THREADS=1", "QDB_DB_POOL_SIZE=1",
                         "QDB_DB_STATEMENT_TIMEOUT_MS=60000", NULL};
    if (th_server_start(&s, url, env, 1) != 0) {
        CHECK(0, "server start");
        return;
    }
    char *token = th_dev_token(&s, "viewer");
    PGconn *locker = PQconnectdb(url);
    PQclear(PQexec(locker, "BEGIN"));
    PGresult *lr = PQexec(locker, "LOCK TABLE environment IN ACCESS EXCLUSIVE MODE");
    CHECK(PQresultStatus(lr) == PGRES_COMMAND_OK, "lock: %s", PQerrorMessage(locker));
    PQclear(lr);
    struct blocked_get b = {&s, "/api/v1/environments", token, 0};
    pthread_t t;
    pthread_create(&t, NULL, blocked_get_main, &b);
    /* wait until the request holds the handler thread: it waits on the lock */
    long waiting = 0;
    for (double end = th_now_ms() + 10000; waiting < 1 && th_now_ms() < end; th_sleep_ms(20))
        waiting = th_sql_long(url,
                              "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                              "'Lock' AND datname = current_database()",
                              NULL);
    CHECK(waiting == 1, "the environment list waits on the lock (%ld waiting)", waiting);
    double worst = 0;
    for (int i = 0; i < 20; i++) {
        static const char *const paths[] = {"/healthz", "/readyz"};
        struct th_resp r;
        double t0 = th_now_ms();
        th_get(&s, paths[i % 2], NULL, &r);
        double took = th_now_ms() - t0;
        if (took > worst)
            worst = took;
        CHECK(r.status == 200, "%s gave %ld while the handlers wait", paths[i % 2], r.status);
        th_resp_free(&r);
    }
    /* waiting behind the lock would take seconds (the pool wait, the statement timeout);
     * the bound is generous for a loaded machine */
    CHECK(worst < 1000, "slowest health answer %.0f ms while the handlers wait", worst);
    CHECK(b.status == 0, "the blocked request is still waiting");
    PQclear(PQexec(locker, "COMMIT"));
    pthread_join(t, NULL);
    CHECK(b.status == 200, "the blocked request finished with %ld once the lock went", b.status);
    PQfinish(locker);
    free(token);
    CHECK(th_server_stop(&s) == 0, "clean stop");
}

static void test_connections(const char *url)
{
    th_step("200 idle connections from 127.0.0.1; 127.0.0.2 is still served at once");
    struct th_server s;
    /* 5 s of idle timeout: the counts below are exact only while no held connection has
     * timed out yet, and a ThreadSanitizer build on a loaded machine needs over 3 s */
    const char *env[] = {"QDB_HTTP_IDLE_TIMEOUT=5", "QDB_HTTP_PER_IP_CONNECTIONS=64", NULL};
    if (th_server_start(&s, url, env, 1) != 0) {
        CHECK(0, "server start");
        return;
    }
    int fds[200], opened = 0;
    for (int i = 0; i < 200; i++) {
        fds[i] = tcp_connect(&s, "127.0.0.1");
        if (fds[i] >= 0)
            opened++;
    }
    CHECK(opened == 200, "opened %d connections", opened);
    /* the connections past the limit are closed as they are accepted, well before the idle
     * timeout (5 s) closes the others */
    int cut = 0, is_cut[200] = {0};
    for (double end = th_now_ms() + 2000; cut < 200 - 64 && th_now_ms() < end;)
        for (int i = 0; i < 200; i++)
            if (fds[i] >= 0 && !is_cut[i] && closed_within(fds[i], 1))
                is_cut[i] = 1, cut++;
    CHECK(cut == 200 - 64, "the per-IP limit closed %d of 200 (limit 64)", cut);

    int other = tcp_connect(&s, "127.0.0.2");
    CHECK(other >= 0, "connect from 127.0.0.2");
    double t0 = th_now_ms();
    send_all(other, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    char buf[1024] = "";
    ssize_t n = 0, got;
    while ((got = recv(other, buf + n, sizeof buf - 1 - (size_t)n, 0)) > 0)
        n += got;
    buf[n > 0 ? n : 0] = '\0';
    double took = th_now_ms() - t0;
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0, "127.0.0.2 got: %.40s", buf);
    CHECK(took < 500, "127.0.0.2 served in %.0f ms", took);
    close(other);

    th_step("idle and slow connections are closed after QDB_HTTP_IDLE_TIMEOUT (5 s)");
    int held = 0;
    for (int i = 0; i < 200; i++)
        if (fds[i] >= 0 && !is_cut[i] && !closed_within(fds[i], 1))
            held++;
    int slow = tcp_connect(&s, "127.0.0.3");
    send_all(slow, "GET /healthz HTTP/1.1\r\nHo"); /* a slowloris never finishes */
    CHECK(held == 64, "the idle connections within the limit were held (%d)", held);
    CHECK(closed_within(slow, 8000), "a slow client is cut after the idle timeout");
    int all_closed = 1;
    for (int i = 0; i < 200; i++)
        if (fds[i] >= 0 && !closed_within(fds[i], 10))
            all_closed = 0;
    CHECK(all_closed, "idle connections are cut after the idle timeout");
    for (int i = 0; i < 200; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    close(slow);
    CHECK(th_server_stop(&s) == 0, "clean stop");
}

static void test_graceful_shutdown(const char *url)
{
    th_step("SIGTERM: stop accepting, finish the in-flight request, exit 0");
    struct th_server s;
    const char *env[] = {"QDB_SHUTDOWN_TIMEOUT=10", NULL};
    if (th_server_start(&s, url, env, 1) != 0) {
        CHECK(0, "server start");
        return;
    }
    /* "100 Continue" says the server has read the headers: the request is in flight */
    int fd = tcp_connect(&s, NULL);
    send_all(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                 "Expect: 100-continue\r\n\r\n");
    char cont[64] = "";
    recv_upto(fd, cont, 25, 10000);
    CHECK(strncmp(cont, "HTTP/1.1 100", 12) == 0, "100 Continue: %.25s", cont);
    send_all(fd, "12345");
    kill(s.pid, SIGTERM);
    int late = 0;
    for (double end = th_now_ms() + 5000; th_now_ms() < end;) {
        late = tcp_connect(&s, NULL);
        if (late < 0)
            break;
        close(late);
        th_sleep_ms(20);
    }
    CHECK(late < 0, "new connections are refused after SIGTERM");
    send_all(fd, "67890");
    char buf[512] = "";
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    CHECK(strncmp(buf, "HTTP/1.1 200", 12) == 0, "in-flight request finished: %.40s", buf);
    close(fd);
    int st = 0;
    double t0 = th_now_ms();
    while (waitpid(s.pid, &st, WNOHANG) == 0 && th_now_ms() - t0 < 10000)
        th_sleep_ms(50);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status 0 after SIGTERM");
    s.pid = 0;

    th_step("a request that never finishes is cut at QDB_SHUTDOWN_TIMEOUT (2 s)");
    const char *env2[] = {"QDB_SHUTDOWN_TIMEOUT=2", NULL};
    if (th_server_start(&s, url, env2, 1) != 0) {
        CHECK(0, "server start");
        return;
    }
    fd = tcp_connect(&s, NULL);
    send_all(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                 "Expect: 100-continue\r\n\r\n");
    memset(cont, 0, sizeof cont);
    recv_upto(fd, cont, 25, 10000);
    CHECK(strncmp(cont, "HTTP/1.1 100", 12) == 0, "100 Continue: %.25s", cont);
    send_all(fd, "1");
    t0 = th_now_ms();
    int rc = th_server_stop(&s);
    double took = th_now_ms() - t0;
    /* The server logs "stopped" about 2.2 s after the signal; the process's exit after that
     * (the sanitizers' own reports at exit) took up to 6.5 s more under ThreadSanitizer on
     * a loaded 2-core machine, so the bound on the whole is loose and the cut is checked by
     * its log line. */
    CHECK(rc == 0 && took >= 1800 && took < 20000, "stopped in %.0f ms with status %d", took, rc);
    CHECK(th_server_log_contains(&s, "requests still in flight are cut"),
          "the request in flight was cut at the timeout");
    close(fd);
}

static void test_config_errors(void)
{
    th_step("bad configuration: one line naming the variable, exit 2");
    static const struct {
        const char *env, *name;
    } cases[] = {
        {"QDB_DB_POOL_SIZE=abc", "QDB_DB_POOL_SIZE"},
        {"QDB_LISTEN=nonsense", "QDB_LISTEN"},
        {"QDB_LOG_LEVEL=loud", "QDB_LOG_LEVEL"},
        {"QDB_SHUTDOWN_TIMEOUT=10parsecs", "QDB_SHUTDOWN_TIMEOUT"},
        {"QDB_WORKERS=-1", "QDB_WORKERS"},
        {"QDB_WEB_DIR=/no/such/dir", "QDB_WEB_DIR"},
        {"QDB_DATABASE_URL=", "QDB_DATABASE_URL"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *env[] = {"QDB_DATABASE_URL=postgresql://nobody@127.0.0.1:1/x", cases[i].env,
                             NULL};
        const char *argv[] = {"serve", NULL};
        char err[2048];
        int rc = th_run_binary(argv, env, err, sizeof err);
        int lines = 0;
        for (char *p = err; *p; p++)
            lines += *p == '\n';
        CHECK(rc == 2 && strstr(err, cases[i].name) && lines == 1,
              "%s: exit %d, %d lines: %s", cases[i].env, rc, lines, err);
    }
    const char *argv[] = {"no-such-command", NULL};
    CHECK(th_run_binary(argv, NULL, NULL, 0) == 2, "unknown command exits 2");
}

static void test_migrations(void)
{
    size_t files = migration_files();
    th_step("two servers migrating one empty database at once: applied once, both ready");
    char *url = th_db_create("migrate");
    struct th_server a, b;
    th_server_start(&a, url, NULL, 0);
    th_server_start(&b, url, NULL, 0);
    int ready_a = 0, ready_b = 0;
    for (int i = 0; i < 300 && !(ready_a && ready_b); i++) {
        struct th_resp r;
        if (!ready_a && th_get(&a, "/readyz", NULL, &r) == 0) {
            ready_a = r.status == 200;
            th_resp_free(&r);
        }
        if (!ready_b && th_get(&b, "/readyz", NULL, &r) == 0) {
            ready_b = r.status == 200;
            th_resp_free(&r);
        }
        th_sleep_ms(100);
    }
    CHECK(ready_a && ready_b, "both ready (%d, %d)", ready_a, ready_b);
    long rows = th_sql_long(url, "SELECT count(*) FROM schema_migrations", NULL);
    CHECK(rows == (long)files, "schema_migrations has %ld rows for %zu files", rows, files);
    /* each file was applied by exactly one of the two */
    int applied_logs = 0;
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(k ? b.log : a.log, "r");
        char line[4096];
        while (f && fgets(line, sizeof line, f))
            applied_logs += strstr(line, "\"migration applied\"") != NULL;
        if (f)
            fclose(f);
    }
    CHECK(applied_logs == (int)files, "%d 'migration applied' lines for %zu files", applied_logs,
          files);
    CHECK(th_server_stop(&a) == 0 && th_server_stop(&b) == 0, "clean stops");

    const char *env[] = {NULL, NULL};
    char envurl[600];
    snprintf(envurl, sizeof envurl, "QDB_DATABASE_URL=%s", url);
    env[0] = envurl;
    const char *argv[] = {"migrate", NULL};
    char err[2048];
    th_step("qdb-control migrate on a current database applies nothing and exits 0");
    CHECK(th_run_binary(argv, env, err, sizeof err) == 0, "migrate: %s", err);
    if (files > 0) {
        th_step("a changed migration file (checksum) is refused");
        PQclear(th_sql(url,
                       "UPDATE schema_migrations SET checksum = 'deadbeef' WHERE version = "
                       "(SELECT min(version) FROM schema_migrations)",
                       NULL));
        int rc = th_run_binary(argv, env, err, sizeof err);
        CHECK(rc != 0 && strstr(err, "changed after it was applied"), "exit %d: %s", rc, err);
        struct th_server c;
        CHECK(th_server_start(&c, url, NULL, 1) != 0, "serve refuses to start too");
        th_server_kill(&c);
    }
    th_step("a database newer than the binary is refused");
    PQclear(th_sql(url, "DELETE FROM schema_migrations", NULL));
    PQclear(th_sql(url,
                   "INSERT INTO schema_migrations (version, name, checksum) VALUES "
                   "(9999, 'from_the_future', 'x')",
                   NULL));
    int rc = th_run_binary(argv, env, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "newer than this binary"), "exit %d: %s", rc, err);
    th_db_drop(url);
    free(url);
}

static void test_outage(void)
{
    th_step("PostgreSQL stopped under a running server: 503 in time, then 200 without restart");
    struct th_pg pg;
    if (th_pg_private_start(&pg) != 0) {
        CHECK(0, "private PostgreSQL start");
        return;
    }
    char *url = th_pg_private_db(&pg, "outage");
    struct th_server s;
    const char *env[] = {"QDB_DB_CONNECT_TIMEOUT=2", NULL};
    if (th_server_start(&s, url, env, 1) != 0) {
        CHECK(0, "server start");
        goto out;
    }
    pid_t pid = s.pid;
    CHECK(th_pg_private_stop(&pg) == 0, "PostgreSQL stopped");
    /* readiness comes from a prober that checks every second: it turns within 2.5 s */
    double stopped = th_now_ms(), turned = -1;
    while (turned < 0 && th_now_ms() - stopped < 2500) {
        struct th_resp r;
        if (th_get(&s, "/readyz", NULL, &r) == 0 && r.status == 503)
            turned = th_now_ms() - stopped;
        th_resp_free(&r);
        if (turned < 0)
            th_sleep_ms(50);
    }
    CHECK(turned >= 0, "/readyz is 503 within 2.5 s of the stop");
    for (int i = 0; i < 5; i++) {
        struct th_resp r;
        double t0 = th_now_ms();
        int ok = th_get(&s, "/readyz", NULL, &r);
        double took = th_now_ms() - t0;
        CHECK(ok == 0 && th_is_problem(&r, 503), "during the outage: %ld %s", r.status, r.body);
        CHECK(took < 1000, "answered in %.0f ms, without waiting on the state store", took);
        th_resp_free(&r);
        th_get(&s, "/healthz", NULL, &r);
        CHECK(r.status == 200, "healthz stays 200 during the outage");
        th_resp_free(&r);
    }
    CHECK(th_pg_private_restart(&pg) == 0, "PostgreSQL started again");
    int back = 0;
    for (int i = 0; i < 100 && !back; i++) {
        struct th_resp r;
        if (th_get(&s, "/readyz", NULL, &r) == 0) {
            back = r.status == 200;
            th_resp_free(&r);
        }
        if (!back)
            th_sleep_ms(100);
    }
    CHECK(back, "ready again after the restart");
    CHECK(s.pid == pid && kill(pid, 0) == 0, "same server process");
    struct th_resp r;
    th_get(&s, "/metrics", NULL, &r);
    CHECK(r.status == 200 && strstr(r.body, "qdb_db_pool_connections"), "metrics after outage");
    th_resp_free(&r);
    CHECK(th_server_stop(&s) == 0, "clean stop");
out:
    free(url);
    th_pg_private_destroy(&pg);
}

int main(void)
{
    char *url = th_db_create("platform");
    struct th_server s;
    if (th_server_start(&s, url, NULL, 1) != 0) {
        CHECK(0, "server start; log %s", s.log);
        return th_done();
    }
    test_health_and_contract(&s);
    test_metrics(&s);
    test_static(&s);
    test_errors_and_ids(&s);
    test_bodies(&s);
    test_early_replies(&s);
    CHECK(th_server_stop(&s) == 0, "clean stop of the main server");

    test_health_never_waits(url);
    test_connections(url);
    test_graceful_shutdown(url);
    test_config_errors();
    test_migrations();
    test_outage();
    th_db_drop(url);
    free(url);
    return th_done();
}
