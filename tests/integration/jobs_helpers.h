/* Helpers shared by the job engine's integration tests (test_jobs*.c). */
#ifndef QDB_TEST_JOBS_HELPERS_H
#define QDB_TEST_JOBS_HELPERS_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* Poll `sql` (no params) until its first value equals `want`, for at most timeout_ms.
 * Returns the last value read. */
static inline long jt_wait_sql(const char *url, const char *sql, long want, int timeout_ms)
{
    double end = th_now_ms() + timeout_ms;
    long v = -1;
    for (;;) {
        v = th_sql_long(url, sql, NULL);
        if (v == want || th_now_ms() > end)
            return v;
        th_sleep_ms(100);
    }
}

/* POST a JSON body with a token and optional extra header; returns the status. */
static inline long jt_post(const struct th_server *s, const char *path, const char *token,
                           const char *body, const char *extra, struct th_resp *out)
{
    char auth[8192];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token ? token : "");
    const char *h[] = {auth, "Content-Type: application/json", extra, NULL};
    if (th_http(s, "POST", path, h, body, body ? strlen(body) : 0, out) != 0)
        return -1;
    return out->status;
}

static inline long jt_patch(const struct th_server *s, const char *path, const char *token,
                            const char *body, struct th_resp *out)
{
    char auth[8192];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token ? token : "");
    const char *h[] = {auth, "Content-Type: application/json", NULL};
    if (th_http(s, "PATCH", path, h, body, strlen(body), out) != 0)
        return -1;
    return out->status;
}

/* Enqueue through the API; returns the job id or -1. */
static inline long long jt_enqueue(const struct th_server *s, const char *token, const char *body)
{
    struct th_resp r;
    long st = jt_post(s, "/api/v1/jobs", token, body, NULL, &r);
    long long id = -1;
    if (st == 202)
        id = (long long)json_integer_value(json_object_get(r.json, "id"));
    else
        fprintf(stderr, "enqueue %s: HTTP %ld %s\n", body, st, r.body ? r.body : "");
    if (st >= 0)
        th_resp_free(&r);
    return id;
}

/* The pid inside an instance id "<host>-<pid>-<rand>". */
static inline long jt_instance_pid(const char *instance)
{
    const char *last = strrchr(instance, '-');
    if (!last || last == instance)
        return -1;
    const char *p = last - 1;
    while (p > instance && *p != '-')
        p--;
    return strtol(p + 1, NULL, 10);
}

#endif
