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

/* Issue 9: the enqueuing transaction sends no NOTIFY (that took the cluster's notify queue
 * lock through its WAL flush, one enqueue after the other); the jobs room announces the new
 * job after the commit, from the replica's notifier (its own connection, application_name
 * qdb-control-jobs), in the trigger's format. A replica with no workers enqueues, so the
 * job can only run on the other one: it must start well before the once-a-second poll
 * would have found it, i.e. woken by that notification. */
static void test_notify_after_commit(const char *url, struct th_server *a)
{
    th_step("a new job is announced after its commit by the notifier, and wakes the other "
            "replica's workers");
    struct th_server idle;
    const char *env[] = {"QDB_WORKERS=0", NULL};
    (void)a;
    if (th_server_start(&idle, url, env, 1) != 0) {
        CHECK(0, "a replica without workers starts");
        return;
    }
    char *admin = th_dev_token(&idle, "admin");
    PGconn *l = PQconnectdb(url);
    int ok = admin && PQstatus(l) == CONNECTION_OK;
    CHECK(ok, "token and a LISTEN connection");
    PGresult *lr = ok ? PQexec(l, "LISTEN job_events") : NULL;
    ok = ok && PQresultStatus(lr) == PGRES_COMMAND_OK;
    PQclear(lr);
    int got = 0, from_notifier = 0, quick = 0;
    for (int round = 0; ok && round < 10; round++) {
        long long id = jt_enqueue(&idle, admin, "{\"kind\":\"noop\"}");
        char want[48];
        snprintf(want, sizeof want, "%lld:pending", id);
        int pid = 0;
        double end = th_now_ms() + 10000;
        while (!pid && th_now_ms() < end) {
            PQconsumeInput(l);
            PGnotify *n;
            while ((n = PQnotifies(l)) != NULL) {
                /* an entry of its own: "id:pending" at the start, after a comma, whole */
                for (const char *p = strstr(n->extra, want); p && !pid; p = strstr(p + 1, want))
                    if ((p == n->extra || p[-1] == ',') &&
                        (p[strlen(want)] == '\0' || p[strlen(want)] == ','))
                        pid = n->be_pid;
                PQfreemem(n);
            }
            if (!pid)
                th_sleep_ms(5);
        }
        if (!pid)
            continue;
        got++;
        char pidtext[16];
        snprintf(pidtext, sizeof pidtext, "%d", pid);
        PGresult *r = th_sql(url, "SELECT application_name FROM pg_stat_activity WHERE pid = $1",
                             pidtext, NULL);
        if (r && PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "qdb-control-jobs") == 0)
            from_notifier++;
        PQclear(r);
        char idtext[24];
        snprintf(idtext, sizeof idtext, "%lld", id);
        /* started by the other replica, counted from the job's creation */
        double waited = -1;
        end = th_now_ms() + 10000;
        while (th_now_ms() < end) {
            PGresult *s = th_sql(url,
                                 "SELECT extract(epoch FROM started_at - created_at) * 1000 "
                                 "FROM job WHERE id = $1::bigint AND started_at IS NOT NULL",
                                 idtext, NULL);
            if (s && PQntuples(s) == 1)
                waited = strtod(PQgetvalue(s, 0, 0), NULL);
            PQclear(s);
            if (waited >= 0)
                break;
            th_sleep_ms(10);
        }
        fprintf(stderr, "   job %lld: notified by pid %d, started %.1f ms after its creation\n", id,
                pid, waited);
        quick += waited >= 0 && waited < 300;
    }
    CHECK(got == 10, "each of 10 new jobs was announced as id:pending (%d)", got);
    CHECK(from_notifier == got, "by the jobs notifier's connection, not the request's (%d of %d)",
          from_notifier, got);
    /* The poll alone would start them 0-1 s after creation, uniformly: 7 or more of 10
     * within 300 ms has a probability of 1% then. Woken by the notification they start in a
     * few ms; a loaded box may delay a few. */
    CHECK(quick >= 7, "the other replicas' workers started at least 7 of 10 within 300 ms (%d)",
          quick);
    PQfinish(l);
    free(admin);
    CHECK(th_server_stop(&idle) == 0, "the replica without workers stops cleanly");
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
        test_notify_after_commit(url, &a);
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
