/* Helpers shared by the inventory's integration tests (test_inventory*.c). */
#ifndef QDB_TEST_INVENTORY_HELPERS_H
#define QDB_TEST_INVENTORY_HELPERS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* Every reply body a test saw, for the "no secret anywhere" check at its end. */
static char *inv_seen;
static size_t inv_seen_len;

static inline void inv_keep(const char *body)
{
    if (!body)
        return;
    size_t n = strlen(body);
    char *p = realloc(inv_seen, inv_seen_len + n + 2);
    if (!p)
        return;
    inv_seen = p;
    memcpy(inv_seen + inv_seen_len, body, n);
    inv_seen_len += n;
    inv_seen[inv_seen_len++] = '\n';
    inv_seen[inv_seen_len] = '\0';
}

/* One request with a bearer token and an optional JSON body; the reply in *out (the
 * caller frees it), its body kept. Returns the status (0 on a transport error). */
static inline long inv_call(const struct th_server *s, const char *token, const char *method,
                            const char *path, const char *body, struct th_resp *out)
{
    char auth[8192];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    const char *h[] = {auth, body ? "Content-Type: application/json" : NULL, NULL};
    memset(out, 0, sizeof *out);
    if (th_http(s, method, path, h, body, body ? strlen(body) : 0, out) != 0)
        return 0;
    inv_keep(out->body);
    return out->status;
}

/* The same, discarding the reply. */
static inline long inv_status(const struct th_server *s, const char *token, const char *method,
                              const char *path, const char *body)
{
    struct th_resp r;
    long st = inv_call(s, token, method, path, body, &r);
    if (st >= 300 && st != 404)
        fprintf(stderr, "   (%s %s: %ld %s)\n", method, path, st, r.body ? r.body : "");
    th_resp_free(&r);
    return st;
}

/* The field a 422 names, or "". */
static inline const char *inv_field(const struct th_resp *r)
{
    const char *f = json_string_value(json_object_get(r->json, "field"));
    return f ? f : "";
}

/* Wait (at most timeout_ms) for job id to end; returns the job (new reference) or NULL. */
static inline json_t *inv_wait_job(const struct th_server *s, const char *token, long long id,
                                   int timeout_ms)
{
    char path[64];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", id);
    double end = th_now_ms() + timeout_ms;
    for (;;) {
        struct th_resp r;
        inv_call(s, token, "GET", path, NULL, &r);
        const char *st = json_string_value(json_object_get(r.json, "state"));
        if (st && (strcmp(st, "succeeded") == 0 || strcmp(st, "failed") == 0 ||
                   strcmp(st, "cancelled") == 0)) {
            json_t *j = json_incref(r.json);
            th_resp_free(&r);
            return j;
        }
        th_resp_free(&r);
        if (th_now_ms() > end)
            return NULL;
        th_sleep_ms(100);
    }
}

/* Enqueue `body` through POST /api/v1/jobs and wait for the job; NULL on failure. */
static inline json_t *inv_run_job(const struct th_server *s, const char *token, const char *body,
                                  int timeout_ms)
{
    struct th_resp r;
    long st = inv_call(s, token, "POST", "/api/v1/jobs", body, &r);
    long long id = st == 202 ? (long long)json_integer_value(json_object_get(r.json, "id")) : 0;
    if (!id)
        fprintf(stderr, "enqueue %s: %ld %s\n", body, st, r.body ? r.body : "");
    th_resp_free(&r);
    return id ? inv_wait_job(s, token, id, timeout_ms) : NULL;
}

/* The job's result member `key` as a string ("" when absent). */
static inline const char *inv_result_str(const json_t *job, const char *key)
{
    const char *v = json_string_value(json_object_get(json_object_get(job, "result"), key));
    return v ? v : "";
}

/* The job's errors as one text (static), for messages and checks. */
static inline const char *inv_errors(const json_t *job)
{
    static char text[4096];
    char *s = json_dumps(json_object_get(job, "errors"), JSON_COMPACT);
    snprintf(text, sizeof text, "%s", s ? s : "");
    free(s);
    return text;
}

#endif
