/* Two replicas sharing one PostgreSQL: 10,000 no-op jobs enqueued while both drain them with
 * 8 workers each complete exactly once (each ran once: one job_log witness line per job,
 * attempt 1, no errors), both replicas take part; a per-kind concurrency limit holds across
 * the replicas. */
#include "jobs_helpers.h"

#define NJOBS 10000

static void test_exactly_once(const char *url, struct th_server *a, struct th_server *b)
{
    th_step("10,000 noop jobs across 2 replicas x 8 workers: exactly once");
    (void)a;
    (void)b;
    double t0 = th_now_ms();
    /* enqueue while both replicas drain: 20 transactions of 500, as a caller's batch would */
    for (int i = 0; i < NJOBS / 500; i++) {
        PGresult *r =
            th_sql(url,
                   "INSERT INTO job (kind, args, created_by, max_attempts, timeout_seconds) "
                   "SELECT 'noop', '{\"log\":true}', 'test', 3, 60 "
                   "FROM generate_series(1, 500)",
                   NULL);
        CHECK(r != NULL, "insert batch %d", i);
        PQclear(r);
    }
    long done =
        jt_wait_sql(url, "SELECT count(*) FROM job WHERE state = 'succeeded'", NJOBS, 180000);
    double secs = (th_now_ms() - t0) / 1000.0;
    fprintf(stderr, "   %ld jobs in %.1f s (%.0f jobs/s, ASan build)\n", done, secs,
            (double)done / secs);
    CHECK(done == NJOBS, "all succeeded: %ld", done);
    CHECK(th_sql_long(url, "SELECT count(*) FROM job WHERE state <> 'succeeded'", NULL) == 0,
          "none in another state");
    CHECK(th_sql_long(url, "SELECT count(*) FROM job WHERE attempt <> 1", NULL) == 0,
          "every job claimed once (attempt 1)");
    CHECK(th_sql_long(url, "SELECT count(*) FROM job WHERE errors <> '[]'", NULL) == 0,
          "no failed attempts");
    CHECK(th_sql_long(url, "SELECT count(*) FROM job_log", NULL) == NJOBS,
          "one run witness per job in all");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM (SELECT j.id FROM job j LEFT JOIN job_log l "
                      "ON l.job_id = j.id GROUP BY j.id HAVING count(l.id) <> 1) x",
                      NULL) == 0,
          "each job ran exactly once");
    CHECK(th_sql_long(url, "SELECT count(DISTINCT worker_id) FROM job", NULL) == 2,
          "both replicas ran jobs");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM job WHERE lease_until IS NOT NULL OR "
                      "finished_at IS NULL OR started_at IS NULL",
                      NULL) == 0,
          "finished rows hold no lease");
}

static void test_limit_across_replicas(const char *url, struct th_server *a)
{
    th_step("per-kind concurrency limit (sleep.limited: 2 per group) holds across replicas");
    char *admin = th_dev_token(a, "admin");
    CHECK(admin != NULL, "token");
    if (!admin)
        return;
    for (int i = 0; i < 8; i++)
        CHECK(jt_enqueue(
                  a, admin,
                  "{\"kind\":\"sleep.limited\",\"args\":{\"seconds\":0.6,\"group\":\"g1\"}}") > 0,
              "enqueue g1");
    for (int i = 0; i < 2; i++)
        CHECK(jt_enqueue(
                  a, admin,
                  "{\"kind\":\"sleep.limited\",\"args\":{\"seconds\":0.6,\"group\":\"g2\"}}") > 0,
              "enqueue g2");
    long most = 0, most_g2 = 0;
    double end = th_now_ms() + 30000;
    while (th_now_ms() < end) {
        long running = th_sql_long(url,
                                   "SELECT count(*) FROM job WHERE kind = 'sleep.limited' AND "
                                   "state = 'running' AND args->>'group' = 'g1'",
                                   NULL);
        long g2 = th_sql_long(url,
                              "SELECT count(*) FROM job WHERE kind = 'sleep.limited' AND "
                              "state = 'running' AND args->>'group' = 'g2'",
                              NULL);
        if (running > most)
            most = running;
        if (g2 > most_g2)
            most_g2 = g2;
        if (th_sql_long(url,
                        "SELECT count(*) FROM job WHERE kind = 'sleep.limited' AND "
                        "state <> 'succeeded'",
                        NULL) == 0)
            break;
        th_sleep_ms(20);
    }
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM job WHERE kind = 'sleep.limited' AND "
                      "state = 'succeeded'",
                      NULL) == 10,
          "all limited jobs done");
    CHECK(most <= 2 && most >= 1, "at most 2 of group g1 ran at once (saw %ld)", most);
    CHECK(most_g2 >= 1 && most_g2 <= 2, "group g2 has its own slots (saw %ld)", most_g2);
    /* the strong form: the recorded run intervals of g1's eight jobs overlap exactly twice at
     * most (the two slots were used, never a third) */
    long overlap = th_sql_long(url,
                               "SELECT max(c) FROM (SELECT (SELECT count(*) FROM job o WHERE "
                               "o.kind = 'sleep.limited' AND o.args->>'group' = 'g1' AND "
                               "o.started_at <= j.started_at AND o.finished_at > j.started_at) c "
                               "FROM job j WHERE j.kind = 'sleep.limited' AND "
                               "j.args->>'group' = 'g1') x",
                               NULL);
    CHECK(overlap == 2, "recorded run intervals of g1 overlap at most 2, and do reach 2 (%ld)",
          overlap);
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM job WHERE kind = 'sleep.limited' AND attempt = 1 AND "
                      "errors = '[]'",
                      NULL) == 10,
          "each limited job ran once, without a failed attempt");
    free(admin);
}

static void test_many_keys(const char *url)
{
    th_step("20 concurrency keys with full slots and waiting jobs: every key gets its slots");
    /* one fetch looks at 16 keys: those whose slots are taken must not hide the others */
    struct th_server m;
    const char *env[] = {"QDB_WORKERS=48", NULL};
    if (th_server_start(&m, url, env, 1) != 0) {
        CHECK(0, "replica starts");
        return;
    }
    PQclear(th_sql(url,
                   "INSERT INTO job (kind, args, created_by, max_attempts, timeout_seconds, "
                   "concurrency_key, max_running) "
                   "SELECT 'sleep.limited', jsonb_build_object('seconds', 6, 'group', "
                   "'k' || lpad(g::text, 2, '0')), 'test', 1, 600, "
                   "'sleep.limited:k' || lpad(g::text, 2, '0'), 2 "
                   "FROM generate_series(1, 20) g, generate_series(1, 3)",
                   NULL));
    double t0 = th_now_ms();
    long running = jt_wait_sql(url,
                               "SELECT count(*) FROM job WHERE kind = 'sleep.limited' AND "
                               "state = 'running' AND args->>'group' LIKE 'k%'",
                               40, 5000);
    fprintf(stderr, "   %ld running after %.1f s\n", running, (th_now_ms() - t0) / 1000);
    CHECK(running == 40, "two of each key's three jobs run before the first ends (%ld)", running);
    CHECK(th_sql_long(url,
                      "SELECT max(n) FROM (SELECT count(*) n FROM job WHERE kind = "
                      "'sleep.limited' AND state = 'running' GROUP BY concurrency_key) x",
                      NULL) == 2,
          "no key past its limit");
    th_server_kill(&m); /* its jobs are not needed any more */
    PQclear(th_sql(url, "DELETE FROM job WHERE args->>'group' LIKE 'k%'", NULL));
}

int main(void)
{
    char *url = th_db_create("jobs_replicas");
    struct th_server a, b;
    const char *env[] = {"QDB_WORKERS=8", NULL};
    int ok = th_server_start(&a, url, env, 1) == 0;
    ok = ok && th_server_start(&b, url, env, 1) == 0;
    CHECK(ok, "two replicas start");
    if (ok) {
        test_exactly_once(url, &a, &b);
        test_limit_across_replicas(url, &a);
    }
    CHECK(th_server_stop(&a) == 0, "replica a stops cleanly");
    CHECK(th_server_stop(&b) == 0, "replica b stops cleanly");
    if (ok)
        test_many_keys(url);
    th_db_drop(url);
    free(url);
    return th_done();
}
