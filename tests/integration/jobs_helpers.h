/* Helpers shared by the job engine's integration tests (test_jobs*.c). */
#ifndef QDB_TEST_JOBS_HELPERS_H
#define QDB_TEST_JOBS_HELPERS_H

#include <curl/curl.h>
#include <signal.h>
#include <stdatomic.h>
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

/* A client of GET /api/v1/jobs/events on its own thread (jt_sse_thread): it keeps what
 * arrives in buf, which only that thread touches until it ends, and ends at its timeout,
 * or once until_text (set before the start) or the success of job until_id (set any time)
 * arrived. */
struct jt_sse {
    const struct th_server *srv;
    char buf[65536];
    size_t len;
    const char *token;
    const char *until_text; /* NULL: none */
    atomic_llong until_id;  /* 0: none */
    long status;
    long timeout_ms;      /* 0: 10000 */
    double ended_ms;      /* th_now_ms() when the stream ended */
    atomic_int connected; /* the stream's ": connected" comment arrived */
};

/* Whether what the stream waits for arrived (on the curl thread). */
static inline int jt_sse_done(const struct jt_sse *s)
{
    if (s->until_text && strstr(s->buf, s->until_text))
        return 1;
    long long id = atomic_load(&s->until_id);
    char done[96];
    snprintf(done, sizeof done, "data: {\"id\":%lld,\"state\":\"succeeded\"}", id);
    return id > 0 && strstr(s->buf, done) != NULL;
}

/* libcurl calls this at least once a second, also while the stream is idle. */
static inline int jt_sse_progress(void *cls, curl_off_t dt, curl_off_t dn, curl_off_t ut,
                                  curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    return jt_sse_done(cls); /* non-zero ends the transfer */
}

static inline size_t jt_sse_data(char *p, size_t size, size_t n, void *cls)
{
    struct jt_sse *s = cls;
    size_t add = size * n;
    if (s->len + add >= sizeof s->buf)
        add = sizeof s->buf - s->len - 1;
    memcpy(s->buf + s->len, p, add);
    s->len += add;
    s->buf[s->len] = '\0';
    if (strstr(s->buf, ": connected"))
        atomic_store(&s->connected, 1);
    if (jt_sse_done(s))
        return 0; /* seen what we waited for: end the transfer */
    return size * n;
}

static inline void *jt_sse_thread(void *cls)
{
    struct jt_sse *s = cls;
    CURL *c = curl_easy_init();
    char u[256], auth[8192];
    snprintf(u, sizeof u, "%s/api/v1/jobs/events", s->srv->base);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", s->token);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    curl_easy_setopt(c, CURLOPT_URL, u);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, jt_sse_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, s->timeout_ms ? s->timeout_ms : 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, jt_sse_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_perform(c);
    s->ended_ms = th_now_ms();
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &s->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

/* Wait until the stream is open (its first comment arrived); 1, or 0 after 10 s. */
static inline int jt_sse_wait_connected(struct jt_sse *s)
{
    double end = th_now_ms() + 10000;
    while (!atomic_load(&s->connected) && th_now_ms() < end)
        th_sleep_ms(10);
    return atomic_load(&s->connected);
}

#endif
