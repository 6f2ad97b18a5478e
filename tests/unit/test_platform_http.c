/* The HTTP core: route pattern matching, problem+json, request ids, role names, the
 * metrics histogram renderer and collectors, and an in-process server (every reply header
 * kept, inline and pooled handlers on their own threads, a route table the router would
 * misread refused). */
#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "platform/buf.h"
#include "platform/http.h"
#include "platform/metrics.h"
#include "unit.h"

static void test_match(void)
{
    static const struct {
        const char *pattern, *path;
        int params; /* -1: no match */
        const char *first;
    } cases[] = {
        {"/healthz", "/healthz", 0, NULL},
        {"/healthz", "/healthz/", -1, NULL},
        {"/healthz", "/health", -1, NULL},
        {"/healthz", "/healthzz", -1, NULL},
        {"/api/v1/jobs/{id}", "/api/v1/jobs/42", 1, "42"},
        {"/api/v1/jobs/{id}", "/api/v1/jobs/", -1, NULL},   /* empty segment */
        {"/api/v1/jobs/{id}", "/api/v1/jobs/4/2", -1, NULL}, /* one segment only */
        {"/api/v1/jobs/{id}/cancel", "/api/v1/jobs/7/cancel", 1, "7"},
        {"/api/v1/jobs/{id}/cancel", "/api/v1/jobs/7/retry", -1, NULL},
        {"/a/{x}/b/{y}", "/a/1/b/2", 2, "1"},
        {"/a/{x}", "/a/%2e%2e", 1, "%2e%2e"},
        {"/", "/", 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct http_path_param p[4];
        char store[256];
        int n = http_match_pattern(cases[i].pattern, cases[i].path, p, 4, store, sizeof store);
        EXPECT(n == cases[i].params, "%s vs %s: %d params, expected %d", cases[i].pattern,
               cases[i].path, n, cases[i].params);
        if (n > 0 && cases[i].first)
            EXPECT(strcmp(p[0].value, cases[i].first) == 0, "%s: first param %s",
                   cases[i].path, p[0].value);
    }
    struct http_path_param p[4];
    char store[256];
    int n = http_match_pattern("/a/{x}/b/{y}", "/a/one/b/two", p, 4, store, sizeof store);
    EXPECT(n == 2 && p[1].name_len == 1 && p[1].name[0] == 'y' && strcmp(p[1].value, "two") == 0,
           "second parameter named y = two");
    /* A value that does not fit the store is refused, never truncated. */
    char tiny[4];
    EXPECT(http_match_pattern("/a/{x}", "/a/abcdef", p, 4, tiny, sizeof tiny) == -1,
           "value larger than the store is refused");
    EXPECT(http_match_pattern("/a/{x}/{y}", "/a/1/2", p, 1, store, sizeof store) == -1,
           "more params than room is refused");
}

static void test_problem(void)
{
    json_t *p = http_problem_json(QDB_E_NOT_FOUND, "no job 42", "/api/v1/jobs/42", NULL);
    EXPECT(strcmp(json_string_value(json_object_get(p, "type")), "urn:qdb:problem:not-found") == 0,
           "type URI");
    EXPECT(json_integer_value(json_object_get(p, "status")) == 404, "status 404");
    EXPECT(strcmp(json_string_value(json_object_get(p, "title")), "Not found") == 0, "title");
    EXPECT(strcmp(json_string_value(json_object_get(p, "detail")), "no job 42") == 0, "detail");
    EXPECT(strcmp(json_string_value(json_object_get(p, "instance")), "/api/v1/jobs/42") == 0,
           "instance");
    json_decref(p);

    p = http_problem_json(QDB_E_INVALID_JSON, "bad", "/x", json_pack("{s:i,s:i}", "line", 3,
                                                                      "column", 7));
    EXPECT(json_integer_value(json_object_get(p, "line")) == 3, "extension member line");
    EXPECT(json_integer_value(json_object_get(p, "status")) == 400, "invalid json is 400");
    json_decref(p);

    /* An extension cannot override the standard members. */
    p = http_problem_json(QDB_E_CONFLICT, "c", "/x", json_pack("{s:i}", "status", 200));
    EXPECT(json_integer_value(json_object_get(p, "status")) == 409, "status not overridable");
    json_decref(p);

    /* Every catalogue entry has a status, slug and title. */
    for (int code = 0; code < QDB_E__COUNT; code++) {
        const struct qdb_error_info *e = qdb_error_info((enum qdb_error)code);
        EXPECT(e->status >= 400 && e->status <= 599 && e->slug && e->title,
               "catalogue entry %d is complete", code);
    }
    EXPECT(qdb_error_info((enum qdb_error)9999)->status == 500, "unknown code maps to 500");
}

static void test_request_id(void)
{
    EXPECT(http_request_id_valid("abc-123_x.y:z"), "sane id accepted");
    EXPECT(!http_request_id_valid(""), "empty refused");
    EXPECT(!http_request_id_valid("has space"), "space refused");
    EXPECT(!http_request_id_valid("new\nline"), "newline refused (log injection)");
    EXPECT(!http_request_id_valid("quote\""), "quote refused");
    char long_id[200];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    EXPECT(!http_request_id_valid(long_id), "over 128 refused");
    long_id[128] = '\0';
    EXPECT(http_request_id_valid(long_id), "exactly 128 accepted");
}

static void test_perm_names(void)
{
    EXPECT(strcmp(http_perm_name(HTTP_PUBLIC), "public") == 0, "public");
    EXPECT(strcmp(http_perm_name(HTTP_VIEWER), "viewer") == 0, "viewer");
    EXPECT(strcmp(http_perm_name(HTTP_OPERATOR), "operator") == 0, "operator");
    EXPECT(strcmp(http_perm_name(HTTP_ADMIN), "admin") == 0, "admin");
    EXPECT(strcmp(http_perm_name((enum http_perm)7), "unknown") == 0, "out of range");
    const char *const *roles = http_role_names();
    EXPECT(strcmp(roles[0], "viewer") == 0 && strcmp(roles[1], "operator") == 0 &&
               strcmp(roles[2], "admin") == 0 && roles[3] == NULL,
           "assignable roles, HTTP_VIEWER first");
}

static void test_histogram(void)
{
    static const double b[] = {0.1, 1, 10};
    static struct metrics_histogram h;
    metrics_histogram_observe(&h, b, 3, 0.05);
    metrics_histogram_observe(&h, b, 3, 0.1); /* on a bound: counted in that bucket */
    metrics_histogram_observe(&h, b, 3, 5);
    metrics_histogram_observe(&h, b, 3, 99);
    metrics_histogram_observe(&h, b, 3, -1); /* counted as 0 */
    struct buf out;
    buf_init(&out, 0);
    metrics_family(&out, "x_seconds", "histogram", "Test.");
    metrics_histogram_render(&out, "x_seconds", "kind=\"a\"", &h, b, 3);
    metrics_histogram_render(&out, "y", "", &h, b, 1);
    const char *want = "# HELP x_seconds Test.\n# TYPE x_seconds histogram\n"
                       "x_seconds_bucket{kind=\"a\",le=\"0.1\"} 3\n"
                       "x_seconds_bucket{kind=\"a\",le=\"1\"} 3\n"
                       "x_seconds_bucket{kind=\"a\",le=\"10\"} 4\n"
                       "x_seconds_bucket{kind=\"a\",le=\"+Inf\"} 5\n"
                       "x_seconds_sum{kind=\"a\"} 104.150000000\n"
                       "x_seconds_count{kind=\"a\"} 5\n"
                       "y_bucket{le=\"0.1\"} 3\n"
                       "y_bucket{le=\"+Inf\"} 5\n"
                       "y_sum{} 104.150000000\n"
                       "y_count{} 5\n";
    EXPECT(out.data && strcmp(out.data, want) == 0, "rendered:\n%s", out.data);
    buf_free(&out);
}

static int collected;
static void count_collect(struct buf *out, void *cls)
{
    (void)out;
    collected += (int)(size_t)cls;
}

static void test_collectors(void)
{
    /* no fixed table: the 33rd (and the 100th) collector runs like the first */
    int ok = 1;
    for (int i = 0; i < 100; i++)
        ok &= metrics_register(count_collect, (void *)(size_t)1) == 0;
    EXPECT(ok && !metrics_registration_failed(), "100 collectors registered");
    struct buf out;
    buf_init(&out, 0);
    metrics_render(&out);
    buf_free(&out);
    EXPECT(collected == 100, "%d of 100 collectors ran", collected);
}

/* ---- an in-process server ---- */

static pthread_t inline_thread, pooled_thread;
static int inline_db_null;

static void h_many_headers(struct http_request *req)
{
    inline_thread = pthread_self();
    inline_db_null = http_db(req) == NULL; /* refused on an event loop */
    for (int i = 0; i < 40; i++) {
        char name[32], value[32];
        snprintf(name, sizeof name, "X-H-%d", i);
        snprintf(value, sizeof value, "v%d", i);
        http_reply_header(req, name, value);
    }
    http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static void h_pooled(struct http_request *req)
{
    pooled_thread = pthread_self();
    http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static size_t sink(char *p, size_t size, size_t n, void *cls)
{
    struct buf *b = cls;
    buf_append(b, p, size * n);
    return size * n;
}

static long get(uint16_t port, const char *path, struct buf *headers)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%u%s", port, path);
    CURL *c = curl_easy_init();
    struct buf body;
    buf_init(&body, 0);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, headers);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    buf_free(&body);
    return status;
}

static void test_server(void)
{
    static const struct http_route routes[] = {
        {"GET", "/many", h_many_headers, HTTP_PUBLIC, HTTP_INLINE},
        {"GET", "/pooled", h_pooled, HTTP_PUBLIC, 0},
    };
    struct http_server_config cfg = {
        .host = "127.0.0.1", .port = 0, .threads = 1, .handler_threads = 2,
        .max_connections = 16, .per_ip_connections = 16, .idle_timeout_s = 5,
        .web_dir = "/nonexistent", .routes = routes, .nroutes = 2, .db_wait_ms = 100,
    };
    struct http_server *srv = http_server_start(&cfg);
    EXPECT(srv != NULL, "server starts");
    if (!srv)
        return;
    uint16_t port = http_server_port(srv);
    struct buf h;
    buf_init(&h, 0);
    EXPECT(get(port, "/many", &h) == 200, "inline route answers");
    int all = 1;
    for (int i = 0; i < 40; i++) {
        char line[40];
        snprintf(line, sizeof line, "X-H-%d: v%d\r\n", i, i);
        all &= h.data && strstr(h.data, line) != NULL;
    }
    EXPECT(all, "all 40 reply headers were sent:\n%s", h.data);
    EXPECT(inline_db_null, "http_db is refused on an event loop");
    buf_free(&h);
    buf_init(&h, 0);
    EXPECT(get(port, "/pooled", &h) == 200, "pooled route answers");
    buf_free(&h);
    EXPECT(!pthread_equal(inline_thread, pooled_thread),
           "the pooled handler ran on another thread than the inline one");
    http_server_stop(srv, 1);

    static const struct http_route too_many[] = {
        {"GET", "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}", h_pooled, HTTP_PUBLIC, 0},
    };
    cfg.routes = too_many;
    cfg.nroutes = 1;
    EXPECT(http_server_start(&cfg) == NULL, "a route with 9 path parameters fails start-up");
    static const struct http_route bad[] = {{"FETCH", "/x", h_pooled, HTTP_PUBLIC, 0}};
    cfg.routes = bad;
    EXPECT(http_server_start(&cfg) == NULL, "an unknown method fails start-up");
}

int main(void)
{
    test_match();
    test_problem();
    test_request_id();
    test_perm_names();
    test_histogram();
    test_collectors();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    test_server();
    curl_global_cleanup();
    return unit_done();
}
