/* Pure parts of the HTTP core: route pattern matching, problem+json, request ids. */
#include <string.h>

#include "platform/http.h"
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

int main(void)
{
    test_match();
    test_problem();
    test_request_id();
    return unit_done();
}
