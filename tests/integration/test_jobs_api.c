/* The job engine's HTTP API on one replica: enqueue and its permissions, idempotency keys,
 * cancel in each state, operator retry, the backoff schedule, logs, list filters and
 * pagination, the event stream, schedules and their validation, audit records. */
#include <pthread.h>
#include <time.h>

#include "jobs_helpers.h"

static char *url;
static struct th_server srv;
static char *admin, *operator, * viewer;

static const char *job_state(long long id)
{
    static char st[32];
    char q[128];
    snprintf(q, sizeof q, "SELECT state FROM job WHERE id = %lld", id);
    PGresult *r = th_sql(url, q, NULL);
    snprintf(st, sizeof st, "%s", r && PQntuples(r) ? PQgetvalue(r, 0, 0) : "?");
    PQclear(r);
    return st;
}

static int wait_state(long long id, const char *want, int ms)
{
    double end = th_now_ms() + ms;
    while (strcmp(job_state(id), want) != 0) {
        if (th_now_ms() > end)
            return 0;
        th_sleep_ms(50);
    }
    return 1;
}

static void test_enqueue_and_roles(void)
{
    th_step("enqueue: 202 with Location and the job; roles; validation");
    struct th_resp r;
    long st = jt_post(&srv, "/api/v1/jobs", admin, "{\"kind\":\"noop\",\"args\":{\"log\":true}}",
                      NULL, &r);
    CHECK(st == 202, "admin enqueues noop: %ld %s", st, r.body);
    char *loc = th_resp_header(&r, "Location");
    long long id = (long long)json_integer_value(json_object_get(r.json, "id"));
    char want[64];
    snprintf(want, sizeof want, "/api/v1/jobs/%lld", id);
    CHECK(loc && strcmp(loc, want) == 0, "Location %s", loc ? loc : "(none)");
    CHECK(json_is_string(json_object_get(r.json, "state")), "job body has a state");
    CHECK(strcmp(json_string_value(json_object_get(r.json, "created_by")), "test-admin") == 0,
          "created_by is the caller");
    free(loc);
    th_resp_free(&r);
    CHECK(wait_state(id, "succeeded", 10000), "noop %lld succeeded (%s)", id, job_state(id));

    th_get(&srv, want, viewer, &r);
    CHECK(r.status == 200 && json_integer_value(json_object_get(r.json, "attempt")) == 1,
          "GET job: %ld %s", r.status, r.body);
    CHECK(json_is_array(json_object_get(r.json, "errors")), "errors is an array");
    th_resp_free(&r);

    char logs[96];
    snprintf(logs, sizeof logs, "/api/v1/jobs/%lld/logs", id);
    th_get(&srv, logs, viewer, &r);
    json_t *items = json_object_get(r.json, "items");
    CHECK(r.status == 200 && json_array_size(items) == 1, "one log line: %s", r.body);
    CHECK(strstr(r.body, "noop ran") != NULL, "log message: %s", r.body);
    th_resp_free(&r);

    st = jt_post(&srv, "/api/v1/jobs", operator, "{\"kind\":\"noop\"}", NULL, &r);
    CHECK(st == 403 && th_is_problem(&r, 403), "operator may not enqueue noop: %ld", st);
    th_resp_free(&r);
    st = jt_post(&srv, "/api/v1/jobs", viewer, "{\"kind\":\"noop\"}", NULL, &r);
    CHECK(st == 403, "viewer may not enqueue noop: %ld", st);
    th_resp_free(&r);
    st = jt_post(&srv, "/api/v1/jobs", NULL, "{\"kind\":\"noop\"}", NULL, &r);
    CHECK(st == 401, "no token: %ld", st);
    th_resp_free(&r);
    st = jt_post(&srv, "/api/v1/jobs", admin, "{\"kind\":\"nope\"}", NULL, &r);
    CHECK(st == 400 && th_is_problem(&r, 400) &&
              strcmp(json_string_value(json_object_get(r.json, "field")), "kind") == 0,
          "unknown kind names the field: %ld %s", st, r.body);
    th_resp_free(&r);
    st = jt_post(&srv, "/api/v1/jobs", admin, "{\"kind\":\"sleep\",\"args\":{}}", NULL, &r);
    CHECK(st == 400 && strcmp(json_string_value(json_object_get(r.json, "field")), "args") == 0,
          "bad args name the field: %ld %s", st, r.body);
    th_resp_free(&r);
    st = jt_post(&srv, "/api/v1/jobs", admin, "{\"kind\":\"noop\",\"priority\":\"x\"}", NULL, &r);
    CHECK(st == 400 && strcmp(json_string_value(json_object_get(r.json, "field")), "priority") == 0,
          "bad priority: %ld %s", st, r.body);
    th_resp_free(&r);
    st = jt_post(&srv, "/api/v1/jobs", admin, "{\"kind\":\"noop\",\"run_at\":\"tomorrow\"}", NULL,
                 &r);
    CHECK(st == 400 && strcmp(json_string_value(json_object_get(r.json, "field")), "run_at") == 0,
          "bad run_at: %ld %s", st, r.body);
    th_resp_free(&r);
    th_get(&srv, "/api/v1/jobs/999999", viewer, &r);
    CHECK(r.status == 404 && th_is_problem(&r, 404), "missing job 404: %ld", r.status);
    th_resp_free(&r);
    th_get(&srv, "/api/v1/jobs/abc", viewer, &r);
    CHECK(r.status == 404, "non-numeric id 404: %ld", r.status);
    th_resp_free(&r);
    /* audited, in the same transaction */
    char q[160];
    snprintf(
        q, sizeof q,
        "SELECT count(*) FROM audit_event WHERE action = 'job.create' AND resource_id = '%lld'",
        id);
    CHECK(th_sql_long(url, q, NULL) == 1, "job.create audited");
}

static void test_idempotency(void)
{
    th_step("idempotency keys: same request -> same job; different -> 409");
    struct th_resp r;
    const char *body = "{\"kind\":\"noop\",\"args\":{\"log\":false}}";
    long st = jt_post(&srv, "/api/v1/jobs", admin, body, "Idempotency-Key: idem-1", &r);
    long long id1 = (long long)json_integer_value(json_object_get(r.json, "id"));
    CHECK(st == 202, "first: %ld", st);
    th_resp_free(&r);
    st = jt_post(&srv, "/api/v1/jobs", admin, body, "Idempotency-Key: idem-1", &r);
    long long id2 = (long long)json_integer_value(json_object_get(r.json, "id"));
    char *replay = th_resp_header(&r, "Idempotent-Replayed");
    CHECK(st == 202 && id1 == id2, "replay gives the same job: %lld %lld", id1, id2);
    CHECK(replay && strcmp(replay, "true") == 0, "replay is marked");
    free(replay);
    th_resp_free(&r);
    st = jt_post(&srv, "/api/v1/jobs", admin, "{\"kind\":\"noop\",\"args\":{\"log\":true}}",
                 "Idempotency-Key: idem-1", &r);
    CHECK(st == 409 && th_is_problem(&r, 409), "different args: %ld %s", st, r.body);
    CHECK(strstr(json_string_value(json_object_get(r.json, "type")), "idempotency") != NULL,
          "problem type names idempotency: %s", r.body);
    th_resp_free(&r);
    /* another caller reusing the key never gets the first caller's job */
    struct th_resp tr;
    th_post_json(&srv, "/dev-issuer/token", NULL,
                 "{\"sub\":\"other-admin\",\"name\":\"Other\",\"role\":\"admin\"}", &tr);
    const char *other = json_string_value(json_object_get(tr.json, "access_token"));
    st = jt_post(&srv, "/api/v1/jobs", other, body, "Idempotency-Key: idem-1", &r);
    CHECK(st == 409, "same key and body from another caller: %ld %s", st, r.body);
    th_resp_free(&r);
    th_resp_free(&tr);
    CHECK(th_sql_long(url, "SELECT count(*) FROM job WHERE idempotency_key = 'idem-1'", NULL) == 1,
          "one job holds the key");
    /* the key survives a rollback: a key whose transaction rolled back is free again */
    PGresult *pr = th_sql(url,
                          "DO $$BEGIN INSERT INTO job (kind, created_by, idempotency_key) "
                          "VALUES ('noop', 't', 'idem-rb'); RAISE EXCEPTION 'rollback'; "
                          "EXCEPTION WHEN raise_exception THEN NULL; END$$",
                          NULL);
    PQclear(pr);
    st = jt_post(&srv, "/api/v1/jobs", admin, body, "Idempotency-Key: idem-rb", &r);
    CHECK(st == 202, "key of a rolled-back enqueue is free: %ld", st);
    th_resp_free(&r);
}

static void test_cancel(void)
{
    th_step("cancel in each state");
    struct th_resp r;
    char path[96];
    /* pending (scheduled in the future) -> cancelled at once */
    long long p =
        jt_enqueue(&srv, admin, "{\"kind\":\"noop\",\"run_at\":\"2099-01-01T00:00:00Z\"}");
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/cancel", p);
    long st = jt_post(&srv, path, operator, NULL, NULL, &r);
    CHECK(st == 200 &&
              strcmp(json_string_value(json_object_get(r.json, "state")), "cancelled") == 0,
          "pending -> cancelled: %ld %s", st, r.body);
    th_resp_free(&r);
    st = jt_post(&srv, path, viewer, NULL, NULL, &r);
    CHECK(st == 403, "viewer may not cancel: %ld", st);
    th_resp_free(&r);
    /* cancelled -> 409 */
    st = jt_post(&srv, path, operator, NULL, NULL, &r);
    CHECK(st == 409 && th_is_problem(&r, 409), "cancel a cancelled job: %ld", st);
    th_resp_free(&r);

    /* running -> 202, then the runner stops at its next heartbeat */
    long long s = jt_enqueue(&srv, admin, "{\"kind\":\"sleep\",\"args\":{\"seconds\":60}}");
    CHECK(wait_state(s, "running", 10000), "sleep running");
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/cancel", s);
    double t0 = th_now_ms();
    st = jt_post(&srv, path, operator, NULL, NULL, &r);
    CHECK(st == 202 && json_is_string(json_object_get(r.json, "cancel_requested_at")),
          "running -> cancel requested: %ld %s", st, r.body);
    th_resp_free(&r);
    CHECK(wait_state(s, "cancelled", 5000), "running job stopped: %s", job_state(s));
    CHECK(th_now_ms() - t0 < 3000, "stopped within its heartbeat (%.0f ms)", th_now_ms() - t0);

    /* retrying (backing off) -> cancelled at once */
    long long f = jt_enqueue(&srv, admin, "{\"kind\":\"fail\",\"max_attempts\":5}");
    /* hold it in retrying (it backs off for at most 300 ms here) */
    char hold[200];
    snprintf(hold, sizeof hold,
             "WITH u AS (UPDATE job SET run_at = now() + interval '1 hour' WHERE id = %lld AND "
             "state = 'retrying' RETURNING 1) SELECT count(*) FROM u",
             f);
    int held = 0;
    for (int i = 0; i < 50 && !held; i++) {
        wait_state(f, "retrying", 5000);
        held = th_sql_long(url, hold, NULL) == 1;
    }
    CHECK(held, "fail job held in retrying: %s", job_state(f));
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/cancel", f);
    st = jt_post(&srv, path, operator, NULL, NULL, &r);
    CHECK(st == 200 &&
              strcmp(json_string_value(json_object_get(r.json, "state")), "cancelled") == 0,
          "retrying -> cancelled: %ld %s", st, r.body);
    th_resp_free(&r);

    /* succeeded -> 409 naming the state */
    long long n = jt_enqueue(&srv, admin, "{\"kind\":\"noop\"}");
    CHECK(wait_state(n, "succeeded", 10000), "noop done");
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/cancel", n);
    st = jt_post(&srv, path, operator, NULL, NULL, &r);
    CHECK(st == 409 &&
              strcmp(json_string_value(json_object_get(r.json, "state")), "succeeded") == 0,
          "cancel succeeded: %ld %s", st, r.body);
    th_resp_free(&r);
    st = jt_post(&srv, "/api/v1/jobs/987654/cancel", operator, NULL, NULL, &r);
    CHECK(st == 404, "cancel missing: %ld", st);
    th_resp_free(&r);
    CHECK(th_sql_long(url, "SELECT count(*) FROM audit_event WHERE action = 'job.cancel'", NULL) ==
              3,
          "each cancel audited once");
}

static void test_retry_and_backoff(void)
{
    th_step("permanent failure, operator retry (same id, new attempt), backoff schedule");
    struct th_resp r;
    char path[96];
    long long f =
        jt_enqueue(&srv, admin, "{\"kind\":\"fail\",\"args\":{\"permanent\":true,\"times\":1}}");
    CHECK(wait_state(f, "failed", 10000), "permanent failure -> failed: %s", job_state(f));
    char q[512];
    snprintf(q, sizeof q,
             "SELECT attempt * 10 + jsonb_array_length(errors) FROM job WHERE id = %lld", f);
    CHECK(th_sql_long(url, q, NULL) == 11, "one attempt, one error");
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/retry", f);
    long st = jt_post(&srv, path, viewer, NULL, NULL, &r);
    CHECK(st == 403, "viewer may not retry: %ld", st);
    th_resp_free(&r);
    st = jt_post(&srv, path, operator, NULL, NULL, &r);
    CHECK(st == 202 && json_integer_value(json_object_get(r.json, "id")) == f, "retry: %ld %s", st,
          r.body);
    th_resp_free(&r);
    CHECK(wait_state(f, "succeeded", 10000), "retried job succeeded on attempt 2: %s",
          job_state(f));
    CHECK(th_sql_long(url, q, NULL) == 21, "attempt 2, the first error kept");
    st = jt_post(&srv, path, operator, NULL, NULL, &r);
    CHECK(st == 409, "retry of a succeeded job: %ld", st);
    th_resp_free(&r);
    CHECK(th_sql_long(url, "SELECT count(*) FROM audit_event WHERE action = 'job.retry'", NULL) ==
              1,
          "retry audited");

    /* backoff: QDB_JOB_BACKOFF_BASE_MS=300 -> the retry after attempt n is due uniformly in
     * [0, 300 * 2^(n-1)] ms after the failure (each error entry records its retry_at), and
     * no retry starts before it is due */
    long long b =
        jt_enqueue(&srv, admin, "{\"kind\":\"fail\",\"args\":{\"times\":4},\"max_attempts\":5}");
    CHECK(wait_state(b, "succeeded", 20000), "fails 4 times then succeeds: %s", job_state(b));
    snprintf(q, sizeof q,
             "SELECT (e->>'attempt')::int, extract(epoch FROM (e->>'retry_at')::timestamptz - "
             "(e->>'time')::timestamptz) * 1000, "
             "(e->>'retry_at')::timestamptz <= coalesce(lead((e->>'time')::timestamptz) OVER "
             "(ORDER BY (e->>'attempt')::int), j.started_at) "
             "FROM job j, jsonb_array_elements(errors) e WHERE id = %lld ORDER BY 1",
             b);
    PGresult *res = th_sql(url, q, NULL);
    CHECK(res && PQntuples(res) == 4, "4 errors recorded");
    for (int i = 0; res && i < PQntuples(res); i++) {
        int attempt = (int)strtol(PQgetvalue(res, i, 0), NULL, 10);
        double delay = strtod(PQgetvalue(res, i, 1), NULL);
        double ceiling = 300.0 * (double)(1 << (attempt - 1));
        CHECK(delay >= -1 && delay <= ceiling + 1,
              "retry after attempt %d due in %.0f ms (0..%.0f)", attempt, delay, ceiling);
        CHECK(strcmp(PQgetvalue(res, i, 2), "t") == 0, "attempt %d's retry did not start early",
              attempt);
    }
    PQclear(res);
    snprintf(q, sizeof q, "SELECT attempt FROM job WHERE id = %lld", b);
    CHECK(th_sql_long(url, q, NULL) == 5, "succeeded on attempt 5");
    /* exhausted retries -> failed */
    long long x = jt_enqueue(&srv, admin, "{\"kind\":\"fail\",\"max_attempts\":2}");
    CHECK(wait_state(x, "failed", 10000), "retryable failure with attempts exhausted -> failed");
}

static void test_timeout(void)
{
    th_step("a running attempt past its kind's timeout is stopped and failed");
    /* run_at a moment ahead, so the row's timeout can be shortened before the claim */
    char body[160];
    time_t soon = time(NULL) + 2;
    struct tm tm;
    gmtime_r(&soon, &tm);
    char at[40];
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(body, sizeof body,
             "{\"kind\":\"sleep\",\"args\":{\"seconds\":30},\"max_attempts\":1,\"run_at\":\"%s\"}",
             at);
    long long id = jt_enqueue(&srv, admin, body);
    char q[200];
    snprintf(q, sizeof q,
             "UPDATE job SET timeout_seconds = 1 WHERE id = %lld AND state = 'pending'", id);
    PQclear(th_sql(url, q, NULL));
    CHECK(wait_state(id, "failed", 10000), "timed out -> failed (%s)", job_state(id));
    snprintf(q, sizeof q,
             "SELECT count(*) FROM job WHERE id = %lld AND errors->0->>'message' = 'timed out "
             "after 1 s'",
             id);
    CHECK(th_sql_long(url, q, NULL) == 1, "the error says it timed out");
}

static void test_list(void)
{
    th_step("list: filters and cursor pagination");
    struct th_resp r;
    th_get(&srv, "/api/v1/jobs?kind=noop&state=succeeded&limit=2", viewer, &r);
    json_t *items = json_object_get(r.json, "items");
    CHECK(r.status == 200 && json_array_size(items) == 2, "page of 2: %s", r.body);
    const char *cur = json_string_value(json_object_get(r.json, "next_cursor"));
    CHECK(cur != NULL, "next_cursor");
    long long first =
        (long long)json_integer_value(json_object_get(json_array_get(items, 0), "id"));
    long long second =
        (long long)json_integer_value(json_object_get(json_array_get(items, 1), "id"));
    CHECK(first > second, "newest first");
    char path[160];
    snprintf(path, sizeof path, "/api/v1/jobs?kind=noop&state=succeeded&limit=2&cursor=%s",
             cur ? cur : "");
    struct th_resp r2;
    th_get(&srv, path, viewer, &r2);
    json_t *items2 = json_object_get(r2.json, "items");
    long long third =
        (long long)json_integer_value(json_object_get(json_array_get(items2, 0), "id"));
    CHECK(r2.status == 200 && third < second, "next page continues: %lld < %lld", third, second);
    size_t i;
    json_t *it;
    int all_ok = 1;
    json_array_foreach(items2, i, it) all_ok &=
        strcmp(json_string_value(json_object_get(it, "kind")), "noop") == 0;
    CHECK(all_ok, "filter applies on the next page");
    th_resp_free(&r2);
    th_resp_free(&r);
    th_get(&srv, "/api/v1/jobs?state=bogus", viewer, &r);
    CHECK(r.status == 400 &&
              strcmp(json_string_value(json_object_get(r.json, "field")), "state") == 0,
          "bad state filter names the field");
    th_resp_free(&r);
    th_get(&srv, "/api/v1/jobs?created_by=test-admin&since=2000-01-01T00:00:00Z&limit=500", viewer,
           &r);
    long mine = th_sql_long(url, "SELECT count(*) FROM job WHERE created_by = 'test-admin'", NULL);
    CHECK(r.status == 200 && mine > 5 &&
              (long)json_array_size(json_object_get(r.json, "items")) == mine,
          "created_by + since: all %ld of the caller's jobs", mine);
    th_resp_free(&r);
    th_get(&srv, "/api/v1/jobs?created_by=test-admin&since=2099-01-01T00:00:00Z", viewer, &r);
    CHECK(r.status == 200 && json_array_size(json_object_get(r.json, "items")) == 0,
          "since in the future: none");
    th_resp_free(&r);
    th_get(&srv, "/api/v1/jobs?queue=nope", viewer, &r);
    CHECK(r.status == 200 && json_array_size(json_object_get(r.json, "items")) == 0,
          "queue filter");
    th_resp_free(&r);
}

/* ---- the event stream ---- */

static void test_events(void)
{
    th_step("events: Server-Sent Events of job changes");
    static struct jt_sse s; /* 64 KB */
    memset(&s, 0, sizeof s);
    s.srv = &srv;
    s.token = viewer;
    pthread_t t;
    pthread_create(&t, NULL, jt_sse_thread, &s);
    CHECK(jt_sse_wait_connected(&s), "the stream is open");
    long long id = jt_enqueue(&srv, admin, "{\"kind\":\"noop\"}");
    atomic_store(&s.until_id, id);
    pthread_join(t, NULL);
    char want[96];
    snprintf(want, sizeof want, "data: {\"id\":%lld,\"state\":\"succeeded\"}", id);
    CHECK(s.status == 200, "stream status %ld", s.status);
    CHECK(strstr(s.buf, "event: job") != NULL, "job events arrive: %s", s.buf);
    CHECK(strstr(s.buf, want) != NULL, "the job's success is streamed: %s", s.buf);
    snprintf(want, sizeof want, "data: {\"id\":%lld,\"state\":\"pending\"}", id);
    CHECK(strstr(s.buf, want) != NULL, "its enqueue too");
    static struct jt_sse anon;
    memset(&anon, 0, sizeof anon);
    anon.srv = &srv;
    anon.token = "";
    pthread_create(&t, NULL, jt_sse_thread, &anon);
    pthread_join(t, NULL);
    CHECK(anon.status == 401, "stream needs a token: %ld", anon.status);
}

static void test_schedules(void)
{
    th_step("schedules: create, validation naming the field, patch, list");
    struct th_resp r;
    long st =
        jt_post(&srv, "/api/v1/schedules", operator,
                "{\"name\":\"t-every\",\"cron\":\"*/5 * * * *\",\"kind\":\"noop\"}", NULL, &r);
    CHECK(st == 201 && json_is_string(json_object_get(r.json, "next_run_at")), "create: %ld %s", st,
          r.body);
    th_resp_free(&r);
    st = jt_post(&srv, "/api/v1/schedules", operator,
                 "{\"name\":\"t-every\",\"cron\":\"*/5 * * * *\",\"kind\":\"noop\"}", NULL, &r);
    CHECK(st == 409 && th_is_problem(&r, 409), "duplicate name: %ld", st);
    th_resp_free(&r);
    const char *bad[] = {"61 * * * *",     "* * *",       "*/0 * * * *",
                         "* * * * MONDAY", "5-1 * * * *", "0 0 30 2 *"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char body[200];
        snprintf(body, sizeof body, "{\"name\":\"t-bad\",\"cron\":\"%s\",\"kind\":\"noop\"}",
                 bad[i]);
        st = jt_post(&srv, "/api/v1/schedules", operator, body, NULL, &r);
        const char *field = json_string_value(json_object_get(r.json, "field"));
        CHECK(st == 400 && th_is_problem(&r, 400) && field && strcmp(field, "cron") == 0,
              "bad cron \"%s\": %ld %s", bad[i], st, r.body);
        th_resp_free(&r);
    }
    st = jt_post(&srv, "/api/v1/schedules", operator,
                 "{\"name\":\"t-x\",\"cron\":\"* * * * *\",\"kind\":\"nope\"}", NULL, &r);
    CHECK(st == 400 && strcmp(json_string_value(json_object_get(r.json, "field")), "kind") == 0,
          "unknown kind: %s", r.body);
    th_resp_free(&r);
    st = jt_post(&srv, "/api/v1/schedules", operator,
                 "{\"name\":\"Bad Name\",\"cron\":\"* * * * *\",\"kind\":\"noop\"}", NULL, &r);
    CHECK(st == 400 && strcmp(json_string_value(json_object_get(r.json, "field")), "name") == 0,
          "bad name: %s", r.body);
    th_resp_free(&r);
    st = jt_post(&srv, "/api/v1/schedules", viewer,
                 "{\"name\":\"t-v\",\"cron\":\"* * * * *\",\"kind\":\"noop\"}", NULL, &r);
    CHECK(st == 403, "viewer may not create: %ld", st);
    th_resp_free(&r);
    st = jt_patch(&srv, "/api/v1/schedules/t-every", operator,
                  "{\"cron\":\"0 * * * *\",\"enabled\":false}", &r);
    CHECK(st == 200 && json_is_false(json_object_get(r.json, "enabled")) &&
              strcmp(json_string_value(json_object_get(r.json, "cron")), "0 * * * *") == 0,
          "patch: %ld %s", st, r.body);
    th_resp_free(&r);
    st = jt_patch(&srv, "/api/v1/schedules/t-every", operator, "{\"cron\":\"0 25 * * *\"}", &r);
    CHECK(st == 400 && strcmp(json_string_value(json_object_get(r.json, "field")), "cron") == 0,
          "patch with bad cron: %ld %s", st, r.body);
    th_resp_free(&r);
    st = jt_patch(&srv, "/api/v1/schedules/none", operator, "{\"enabled\":true}", &r);
    CHECK(st == 404, "patch missing: %ld", st);
    th_resp_free(&r);
    th_get(&srv, "/api/v1/schedules", viewer, &r);
    CHECK(r.status == 200 && strstr(r.body, "t-every") && strstr(r.body, "audit-verify-daily"),
          "list: %s", r.body);
    th_resp_free(&r);
    CHECK(th_sql_long(url, "SELECT count(*) FROM audit_event WHERE resource_type = 'schedule'",
                      NULL) == 2,
          "schedule create + update audited");
}

/* The value of the sample `series` (name and labels, exactly as rendered) in a Prometheus
 * text body, or -1 when absent. */
static long metric(const char *body, const char *series)
{
    char line[256];
    snprintf(line, sizeof line, "\n%s ", series);
    const char *p = body ? strstr(body, line) : NULL;
    return p ? strtol(p + strlen(line), NULL, 10) : -1;
}

static void test_metrics(void)
{
    th_step("metrics: this replica's counters and the gauges match the state store");
    /* every job of this test ran on this replica; the gauges refresh every 5 s */
    static const char *const series[] = {
        "qdb_jobs_finished_total{kind=\"noop\",state=\"succeeded\"}",
        "qdb_job_run_seconds_count{kind=\"noop\"}",
        "qdb_jobs_retries_total{kind=\"fail\"}",
        "qdb_jobs_queue_depth",
        "qdb_jobs_rescued_total",
        "qdb_job_schedule_fires_total",
    };
    static const char *const truth[] = {
        "SELECT count(*) FROM job WHERE kind = 'noop' AND state = 'succeeded'",
        "SELECT count(*) FROM job WHERE kind = 'noop' AND state = 'succeeded'",
        "SELECT count(*) FROM job, jsonb_array_elements(errors) e WHERE kind = 'fail' AND "
        "e->>'retry_at' IS NOT NULL",
        "SELECT count(*) FROM job WHERE state IN ('pending', 'retrying')",
        "SELECT 0",
        "SELECT count(*) FROM job WHERE created_by LIKE 'schedule:%'",
    };
    enum { N = sizeof series / sizeof series[0] };
    long got[N], want[N];
    int same = 0;
    struct th_resp r = {0};
    double end = th_now_ms() + 15000;
    while (!same && th_now_ms() < end) {
        th_resp_free(&r);
        th_get(&srv, "/metrics", NULL, &r);
        same = 1;
        for (int i = 0; i < N; i++) {
            got[i] = metric(r.body, series[i]);
            want[i] = th_sql_long(url, truth[i], NULL);
            same &= got[i] == want[i];
        }
        if (!same)
            th_sleep_ms(100);
    }
    for (int i = 0; i < N; i++)
        CHECK(got[i] == want[i], "%s is %ld, the state store says %ld", series[i], got[i], want[i]);
    CHECK(want[0] > 0 && want[2] > 0, "there were noop successes and fail retries to count");
    CHECK(strstr(r.body, "qdb_job_run_seconds_bucket{kind=\"noop\",le=\"+Inf\"}") != NULL,
          "run-time histogram");
    CHECK(strstr(r.body, "qdb_jobs_oldest_pending_age_seconds ") != NULL, "oldest pending age");
    th_resp_free(&r);
}

static void test_prune(void)
{
    th_step("pruning: finished jobs past the retention go, with their logs, in batches");
    /* QDB_JOB_RETENTION_DAYS=1 and QDB_JOB_PRUNE_INTERVAL=1 for this server */
    long old = th_sql_long(url,
                           "WITH u AS (UPDATE job SET finished_at = now() - interval '2 days' "
                           "WHERE kind = 'noop' AND state = 'succeeded' RETURNING 1) "
                           "SELECT count(*) FROM u",
                           NULL);
    CHECK(old > 0, "aged %ld finished jobs", old);
    CHECK(jt_wait_sql(url, "SELECT count(*) FROM job WHERE kind = 'noop' AND state = 'succeeded'",
                      0, 10000) == 0,
          "aged jobs pruned");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM job_log l WHERE NOT EXISTS "
                      "(SELECT 1 FROM job j WHERE j.id = l.job_id)",
                      NULL) == 0,
          "their logs went with them");
    CHECK(th_sql_long(url, "SELECT count(*) FROM job WHERE kind = 'fail'", NULL) > 0,
          "jobs inside the retention stay");
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    url = th_db_create("jobs_api");
    const char *env[] = {"QDB_WORKERS=4", "QDB_JOB_BACKOFF_BASE_MS=300", "QDB_JOB_RETENTION_DAYS=1",
                         "QDB_JOB_PRUNE_INTERVAL=1", NULL};
    if (th_server_start(&srv, url, env, 1) != 0) {
        CHECK(0, "server start");
        return th_done();
    }
    admin = th_dev_token(&srv, "admin");
    operator= th_dev_token(&srv, "operator");
    viewer = th_dev_token(&srv, "viewer");
    CHECK(admin && operator&& viewer, "tokens");
    if (admin && operator&& viewer) {
        test_enqueue_and_roles();
        test_idempotency();
        test_cancel();
        test_retry_and_backoff();
        test_timeout();
        test_list();
        test_events();
        test_schedules();
        test_metrics();
        test_prune();
    }
    th_step("shutdown ends open event streams instead of waiting for them");
    static struct jt_sse open_stream;
    open_stream.srv = &srv;
    open_stream.token = viewer;
    open_stream.timeout_ms = 25000;
    pthread_t t;
    pthread_create(&t, NULL, jt_sse_thread, &open_stream);
    CHECK(jt_sse_wait_connected(&open_stream), "the stream is open");
    double t0 = th_now_ms();
    CHECK(th_server_stop(&srv) == 0, "clean stop");
    double stop_ms = th_now_ms() - t0;
    pthread_join(t, NULL);
    CHECK(open_stream.status == 200 && strstr(open_stream.buf, ": connected"),
          "the stream was open: %ld", open_stream.status);
    CHECK(stop_ms < 3000, "the server stopped in %.0f ms with a stream open", stop_ms);
    CHECK(open_stream.ended_ms - t0 < 3000, "the stream ended with the server (%.0f ms)",
          open_stream.ended_ms - t0);
    free(admin);
    free(operator);
    free(viewer);
    th_db_drop(url);
    free(url);
    curl_global_cleanup();
    return th_done();
}
