/* The permission matrix: every route of the route table (`qdb-control routes`, so routes
 * other rooms add are covered without touching this test) called with no token and with
 * viewer, operator and admin tokens from the dev issuer. A non-public route must answer 401
 * without a token, 403 to a role below its own, and anything but 401/403 to a role at or
 * above it. Public routes never answer 401. No route answers a 5xx to anyone: a request the
 * server cannot serve is refused with a 4xx problem, never a crash or an internal error. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static size_t discard(char *p, size_t size, size_t n, void *cls)
{
    (void)p;
    (void)cls;
    return size * n;
}

/* One request with a short timeout (streams count by their status line). Returns the
 * status, or 0 when no status came. */
static long call(const struct th_server *s, const char *method, const char *path, const char *token,
                 int json_body)
{
    CURL *c = curl_easy_init();
    char url[1024], auth[20000];
    snprintf(url, sizeof url, "%s%s", s->base, path);
    struct curl_slist *h = NULL;
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (json_body)
        h = curl_slist_append(h, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (json_body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
        strcmp(method, "PATCH") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{}");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, 2L);
    }
    curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

/* The route table as JSON, from the binary itself. */
static json_t *route_table(void)
{
    FILE *p = popen(QDB_BINARY " routes", "r");
    if (!p)
        return NULL;
    json_error_t err;
    json_t *routes = json_loadf(p, 0, &err);
    pclose(p);
    return routes;
}

/* "/api/v1/tokens/{id}" -> "/api/v1/tokens/00000000-0000-0000-0000-000000000000" */
static void fill_params(const char *pattern, char *out, size_t n)
{
    size_t o = 0;
    for (const char *p = pattern; *p && o + 40 < n; p++) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            if (!close)
                break;
            o += (size_t)snprintf(out + o, n - o, "00000000-0000-0000-0000-000000000000");
            p = close;
            continue;
        }
        out[o++] = *p;
    }
    out[o] = '\0';
}

int main(void)
{
    char *url = th_db_create("auth_matrix");
    struct th_server srv;
    char *tokens[4] = {NULL, NULL, NULL, NULL};
    static const char *const names[4] = {"none", "viewer", "operator", "admin"};
    json_t *routes = NULL;

    th_step("start a dev-mode server and get viewer, operator and admin tokens");
    CHECK(th_server_start(&srv, url, NULL, 1) == 0, "server starts");
    if (!srv.pid)
        goto out;
    for (int r = 1; r <= 3; r++) {
        tokens[r] = th_dev_token(&srv, names[r]);
        CHECK(tokens[r] != NULL, "dev token for %s", names[r]);
    }
    routes = route_table();
    CHECK(json_is_array(routes) && json_array_size(routes) > 5,
          "qdb-control routes prints the table");

    size_t i;
    json_t *rt;
    int protected_routes = 0;
    json_array_foreach(routes, i, rt)
    {
        const char *method = json_string_value(json_object_get(rt, "method"));
        const char *pattern = json_string_value(json_object_get(rt, "path"));
        const char *role = json_string_value(json_object_get(rt, "role"));
        int body = json_is_true(json_object_get(rt, "json_body"));
        if (!method || !pattern || !role)
            continue;
        char path[1024];
        fill_params(pattern, path, sizeof path);
        int need = th_role_rank(role);
        if (need > 0)
            protected_routes++;
        th_step("%s %s (%s)", method, pattern, role);
        for (int r = 0; r <= 3; r++) {
            long st = call(&srv, method, path, tokens[r], body);
            CHECK(st > 0 && st < 500, "%s %s as %s: no answer or a 5xx: %ld", method, pattern,
                  names[r], st);
            if (need == 0)
                CHECK(st != 401 && st != 403 && st != 0, "%s %s as %s: public, got %ld", method,
                      pattern, names[r], st);
            else if (r == 0)
                CHECK(st == 401, "%s %s without a token: want 401, got %ld", method, pattern, st);
            else if (r < need)
                CHECK(st == 403, "%s %s as %s (needs %s): want 403, got %ld", method, pattern,
                      names[r], role, st);
            else
                CHECK(st != 401 && st != 403 && st != 0,
                      "%s %s as %s (needs %s): want neither 401 nor 403, got %ld", method, pattern,
                      names[r], role, st);
        }
    }
    CHECK(protected_routes >= 4, "the table has protected routes (%d)", protected_routes);

    th_step("a 401 names the scheme and never echoes the token");
    struct th_resp resp;
    const char *bogus =
        "eyJhbGciOiJSUzI1NiIsImtpZCI6Im5vcGUifQ.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ";
    th_get(&srv, "/api/v1/me", bogus, &resp);
    char *www = th_resp_header(&resp, "WWW-Authenticate");
    CHECK(th_is_problem(&resp, 401), "problem+json 401");
    CHECK(www && strstr(www, "Bearer") && strstr(www, "error=\"invalid_token\""),
          "WWW-Authenticate: %s", www ? www : "(none)");
    CHECK(!strstr(resp.body, "c2VjcmV0LXNpZ25hdHVyZQ") && !strstr(resp.body, "eyJzdWIiOiJ4In0"),
          "the body does not echo the token");
    free(www);
    th_resp_free(&resp);

    CHECK(th_server_stop(&srv) == 0, "server stops cleanly");
    CHECK(!th_server_log_contains(&srv, tokens[3] ? tokens[3] + strlen(tokens[3]) - 20 : "x"),
          "the log holds no token");
    CHECK(!th_server_log_contains(&srv, "c2VjcmV0LXNpZ25hdHVyZQ"), "the log holds no token");
out:
    th_server_kill(&srv);
    json_decref(routes);
    for (int r = 0; r < 4; r++)
        free(tokens[r]);
    th_db_drop(url);
    free(url);
    return th_done();
}
