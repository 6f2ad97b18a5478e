/* PostgreSQL restarted mid-run (a private cluster): jobs keep being enqueued and run while
 * it goes away and comes back; afterwards every committed job has succeeded and ran exactly
 * once (its job_log witness), none was lost, none duplicated. */
#include "jobs_helpers.h"

int main(void)
{
    struct th_pg pg;
    if (th_pg_private_start(&pg) != 0) {
        CHECK(0, "private PostgreSQL starts");
        return th_done();
    }
    char *url = th_pg_private_db(&pg, "jobs_restart");
    struct th_server s;
    const char *env[] = {"QDB_WORKERS=8", "QDB_JOB_LEASE_SECONDS=10", "QDB_DB_CONNECT_TIMEOUT=2",
                         NULL};
    if (th_server_start(&s, url, env, 1) != 0) {
        CHECK(0, "server starts");
        goto out;
    }
    th_step("enqueue and run while PostgreSQL is stopped and started again");
    /* long jobs that are running when the database goes away */
    PQclear(th_sql(url,
                   "INSERT INTO job (kind, args, created_by, max_attempts, timeout_seconds) "
                   "SELECT 'sleep', '{\"seconds\":3}', 'test', 3, 600 FROM generate_series(1, 6)",
                   NULL));
    int batches = 0, failed_batches = 0, restarted = 0, stopped = 0;
    double t0 = th_now_ms();
    while (th_now_ms() - t0 < 8000) {
        double t = th_now_ms() - t0;
        if (!stopped && t > 2000) {
            CHECK(th_pg_private_stop(&pg) == 0, "PostgreSQL stopped");
            stopped = 1;
            fprintf(stderr, "   PostgreSQL stopped at %.1f s\n", t / 1000);
        }
        if (stopped && !restarted && t > 4500) {
            CHECK(th_pg_private_restart(&pg) == 0, "PostgreSQL started again");
            restarted = 1;
            fprintf(stderr, "   PostgreSQL back at %.1f s\n", (th_now_ms() - t0) / 1000);
        }
        if (stopped && !restarted) {
            th_sleep_ms(100);
            continue;
        }
        PGresult *r =
            th_sql(url,
                   "INSERT INTO job (kind, args, created_by, max_attempts, timeout_seconds) "
                   "SELECT 'noop', '{\"log\":true}', 'test', 3, 60 "
                   "FROM generate_series(1, 200)",
                   NULL);
        if (r)
            batches++;
        else
            failed_batches++;
        PQclear(r);
        th_sleep_ms(100);
    }
    long total = th_sql_long(url, "SELECT count(*) FROM job", NULL);
    fprintf(stderr, "   %d batches committed (%d refused while down), %ld jobs\n", batches,
            failed_batches, total);
    CHECK(total == 6 + 200L * batches, "every committed batch is there (%ld)", total);
    long done = jt_wait_sql(url, "SELECT count(*) FROM job WHERE state <> 'succeeded'", 0, 60000);
    CHECK(done == 0, "every job succeeded (%ld not)", done);
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM (SELECT j.id FROM job j LEFT JOIN job_log l "
                      "ON l.job_id = j.id WHERE j.kind = 'noop' GROUP BY j.id "
                      "HAVING count(l.id) <> 1) x",
                      NULL) == 0,
          "each noop ran exactly once (one witness each)");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM job WHERE kind = 'sleep' AND "
                      "(attempt <> 1 OR errors <> '[]')",
                      NULL) == 0,
          "the sleep jobs running across the restart finished in their first attempt");
    long rescued = th_sql_long(url, "SELECT count(*) FROM job WHERE attempt > 1", NULL);
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM job WHERE attempt > 1 AND NOT errors->0->>'message' "
                      "LIKE 'lease expired%'",
                      NULL) == 0,
          "a second attempt only after a lost claim's lease expired (%ld such)", rescued);
    th_step("the engine is live again: API enqueue after the restart");
    char *admin = th_dev_token(&s, "admin");
    long long id = admin ? jt_enqueue(&s, admin, "{\"kind\":\"noop\"}") : -1;
    char q[128];
    snprintf(q, sizeof q, "SELECT count(*) FROM job WHERE id = %lld AND state = 'succeeded'", id);
    CHECK(id > 0 && jt_wait_sql(url, q, 1, 5000) == 1, "a new job runs");
    free(admin);
    CHECK(th_server_stop(&s) == 0, "server stops cleanly");
out:
    free(url);
    th_pg_private_destroy(&pg);
    return th_done();
}
