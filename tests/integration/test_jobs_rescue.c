/* Leases: kill -9 of a replica holding 50 running jobs -> another replica rescues all 50 once
 * their leases expire and finishes them; a graceful shutdown finishes short jobs and releases
 * long ones (never leaving a 'running' job with a live-looking lease behind); lease renewal
 * never waits behind another transaction's row lock. */
#include "jobs_helpers.h"

static void test_kill9(const char *url)
{
    th_step("kill -9 of a replica holding 50 running sleep jobs -> all rescued and finished");
    struct th_server a, b;
    const char *env[] = {"QDB_WORKERS=50", "QDB_JOB_LEASE_SECONDS=3", NULL};
    if (th_server_start(&a, url, env, 1) != 0) {
        CHECK(0, "replica a starts");
        return;
    }
    PGresult *r = th_sql(url,
                         "INSERT INTO job (kind, args, created_by, max_attempts, timeout_seconds) "
                         "SELECT 'sleep', '{\"seconds\":3}', 'test', 3, 600 "
                         "FROM generate_series(1, 50)",
                         NULL);
    PQclear(r);
    long running = jt_wait_sql(url, "SELECT count(*) FROM job WHERE state = 'running'", 50, 20000);
    CHECK(running == 50, "replica a holds 50 running jobs (%ld)", running);
    PGresult *w = th_sql(url, "SELECT min(worker_id) FROM job", NULL);
    char holder[160] = "";
    snprintf(holder, sizeof holder, "%s", w && PQntuples(w) ? PQgetvalue(w, 0, 0) : "");
    PQclear(w);
    CHECK(jt_instance_pid(holder) == (long)a.pid, "held by replica a (%s, pid %d)", holder,
          (int)a.pid);
    /* the earliest lease a rescue must respect: leases only grow while a lives */
    PGresult *lr = th_sql(url, "SELECT min(lease_until)::text FROM job", NULL);
    char lease_floor[64] = "";
    snprintf(lease_floor, sizeof lease_floor, "%s",
             lr && PQntuples(lr) ? PQgetvalue(lr, 0, 0) : "");
    PQclear(lr);
    double killed = th_now_ms();
    th_server_kill(&a);
    if (th_server_start(&b, url, env, 1) != 0) {
        CHECK(0, "replica b starts");
        return;
    }
    long done = jt_wait_sql(url, "SELECT count(*) FROM job WHERE state = 'succeeded'", 50, 40000);
    double took = (th_now_ms() - killed) / 1000.0;
    fprintf(stderr, "   50 jobs rescued and finished %.1f s after the kill\n", took);
    CHECK(done == 50, "all 50 finished (%ld)", done);
    CHECK(th_sql_long(url, "SELECT count(*) FROM job WHERE attempt = 2", NULL) == 50,
          "each ran again exactly once more (attempt 2)");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM job WHERE jsonb_array_length(errors) = 1 AND "
                      "errors->0->>'message' LIKE 'lease expired%'",
                      NULL) == 50,
          "each records its lost lease");
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM job WHERE worker_id = '%s'", holder);
    CHECK(th_sql_long(url, q, NULL) == 0, "all finished by replica b");
    /* a rescue waits for the lease: no job restarted before a's lease could have expired */
    CHECK(th_sql_long(
              url,
              "SELECT count(*) FROM job WHERE (errors->0->>'time')::timestamptz < $1::timestamptz "
              "OR started_at < $1::timestamptz",
              lease_floor, NULL) == 0,
          "no job rescued or restarted before the dead replica's lease expired (%s)", lease_floor);
    struct th_resp m;
    th_get(&b, "/metrics", NULL, &m);
    CHECK(m.body && strstr(m.body, "qdb_jobs_rescued_total 50") != NULL, "rescues counted");
    th_resp_free(&m);
    CHECK(th_server_stop(&b) == 0, "replica b stops cleanly");
}

static void test_shutdown(const char *url)
{
    th_step("graceful shutdown: short job finishes, long job released, another replica takes it");
    struct th_server c, d;
    const char *env[] = {"QDB_WORKERS=2", "QDB_JOB_LEASE_SECONDS=5", "QDB_SHUTDOWN_TIMEOUT=2",
                         NULL};
    if (th_server_start(&c, url, env, 1) != 0) {
        CHECK(0, "replica c starts");
        return;
    }
    char *admin = th_dev_token(&c, "admin");
    long long quick = jt_enqueue(&c, admin, "{\"kind\":\"sleep\",\"args\":{\"seconds\":1}}");
    long long slow = jt_enqueue(&c, admin, "{\"kind\":\"sleep\",\"args\":{\"seconds\":60}}");
    char q[200];
    snprintf(q, sizeof q, "SELECT count(*) FROM job WHERE id IN (%lld, %lld) AND state = 'running'",
             quick, slow);
    CHECK(jt_wait_sql(url, q, 2, 10000) == 2, "both running");
    double t0 = th_now_ms();
    CHECK(th_server_stop(&c) == 0, "replica c stops cleanly");
    double took = (th_now_ms() - t0) / 1000.0;
    CHECK(took < 10, "stopped in %.1f s (timeout 2 s + the runner's next heartbeat)", took);
    snprintf(q, sizeof q, "SELECT count(*) FROM job WHERE id = %lld AND state = 'succeeded'",
             quick);
    CHECK(th_sql_long(url, q, NULL) == 1, "the short job finished within the timeout");
    snprintf(q, sizeof q,
             "SELECT count(*) FROM job WHERE id = %lld AND state = 'retrying' AND lease_until IS "
             "NULL AND attempt = 1 AND max_attempts > attempt AND errors->0->>'message' LIKE "
             "'interrupted%%'",
             slow);
    CHECK(th_sql_long(url, q, NULL) == 1, "the long job was released, its attempt given back");
    CHECK(th_sql_long(url, "SELECT count(*) FROM job WHERE state = 'running'", NULL) == 0,
          "nothing left running");
    if (th_server_start(&d, url, env, 1) != 0) {
        CHECK(0, "replica d starts");
        free(admin);
        return;
    }
    snprintf(q, sizeof q,
             "SELECT count(*) FROM job WHERE id = %lld AND state = 'running' AND attempt = 2",
             slow);
    CHECK(jt_wait_sql(url, q, 1, 10000) == 1, "another replica took the released job at once");
    /* and it is cancellable there */
    char *op = th_dev_token(&d, "operator");
    char path[96];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/cancel", slow);
    struct th_resp r;
    CHECK(jt_post(&d, path, op, NULL, NULL, &r) == 202, "cancel requested");
    th_resp_free(&r);
    snprintf(q, sizeof q, "SELECT count(*) FROM job WHERE id = %lld AND state = 'cancelled'", slow);
    CHECK(jt_wait_sql(url, q, 1, 5000) == 1, "cancelled");
    CHECK(th_server_stop(&d) == 0, "replica d stops cleanly");
    free(op);
    free(admin);
}

static void test_zombie(const char *url)
{
    th_step("a zombie worker cannot overwrite a job that was taken over");
    struct th_server z;
    const char *env[] = {"QDB_WORKERS=1", NULL};
    if (th_server_start(&z, url, env, 1) != 0) {
        CHECK(0, "replica starts");
        return;
    }
    char *admin = th_dev_token(&z, "admin");
    /* long enough that the runner's next heartbeat (within a second) is what notices */
    long long id = jt_enqueue(&z, admin, "{\"kind\":\"sleep\",\"args\":{\"seconds\":60}}");
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM job WHERE id = %lld AND state = 'running'", id);
    CHECK(jt_wait_sql(url, q, 1, 10000) == 1, "running");
    /* as if its lease had expired and another replica had rescued and claimed it */
    snprintf(q, sizeof q,
             "UPDATE job SET worker_id = 'another-replica', attempt = attempt + 1, "
             "lease_until = now() + interval '1 hour' WHERE id = %lld",
             id);
    PQclear(th_sql(url, q, NULL));
    const char *noticed = "job finished after its lease was lost; result dropped";
    double end = th_now_ms() + 10000;
    while (!th_server_log_contains(&z, noticed) && th_now_ms() < end)
        th_sleep_ms(50);
    CHECK(th_server_log_contains(&z, noticed), "the zombie noticed it lost the job (log %s)",
          z.log);
    /* the zombie's last word is that log line: nothing it does after may touch the row */
    snprintf(q, sizeof q,
             "SELECT count(*) FROM job WHERE id = %lld AND state = 'running' AND "
             "worker_id = 'another-replica' AND attempt = 2 AND result IS NULL AND "
             "errors = '[]' AND lease_until > now() + interval '50 minutes'",
             id);
    CHECK(th_sql_long(url, q, NULL) == 1, "the new holder's job is untouched by the zombie");
    snprintf(q, sizeof q, "DELETE FROM job WHERE id = %lld", id);
    PQclear(th_sql(url, q, NULL));
    CHECK(th_server_stop(&z) == 0, "replica stops cleanly");
    free(admin);
}

static void test_renewal_behind_lock(const char *url)
{
    th_step("lease renewal does not wait on a row another transaction holds");
    struct th_server r;
    /* renewal every 3 s; statements time out after 1 s */
    const char *env[] = {"QDB_WORKERS=2", "QDB_JOB_LEASE_SECONDS=9",
                         "QDB_DB_STATEMENT_TIMEOUT_MS=1000", NULL};
    if (th_server_start(&r, url, env, 1) != 0) {
        CHECK(0, "replica starts");
        return;
    }
    PQclear(th_sql(url,
                   "INSERT INTO job (kind, args, created_by, max_attempts, timeout_seconds) "
                   "SELECT 'sleep', '{\"seconds\":8}', 'test', 1, 600 FROM generate_series(1, 2)",
                   NULL));
    CHECK(jt_wait_sql(url, "SELECT count(*) FROM job WHERE state = 'running'", 2, 10000) == 2,
          "two jobs running");
    /* an operator's transaction holding one job's row, as a cancel waiting on the audit
     * chain would, until a renewal round has run to its end meanwhile (one that waited on
     * the row would end at its statement timeout) */
    PGconn *holder = PQconnectdb(url);
    PGresult *lk = PQexec(holder, "BEGIN; SELECT clock_timestamp()::text FROM job "
                                  "WHERE state = 'running' ORDER BY id LIMIT 1 FOR UPDATE");
    CHECK(PQresultStatus(lk) == PGRES_TUPLES_OK && PQntuples(lk) == 1, "row locked: %s",
          PQerrorMessage(holder));
    char since[64] = "";
    snprintf(since, sizeof since, "%s", PQntuples(lk) ? PQgetvalue(lk, 0, 0) : "");
    PQclear(lk);
    long rounds = 0;
    double end = th_now_ms() + 15000;
    while (rounds == 0 && th_now_ms() < end) {
        th_sleep_ms(50);
        rounds =
            th_sql_long(url,
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND state = 'idle' AND "
                        "query LIKE '%SET lease_until = now() + make_interval(secs => "
                        "$2::int)%' AND state_change > $1::timestamptz",
                        since, NULL);
    }
    CHECK(rounds == 1, "a renewal round ran while the row was held (%ld backends)", rounds);
    PQclear(PQexec(holder, "COMMIT"));
    PQfinish(holder);
    CHECK(!th_server_log_contains(&r, "\"statement\":\"jobs_extend_leases\""),
          "the renewal never failed or timed out (log %s)", r.log);
    CHECK(jt_wait_sql(url,
                      "SELECT count(*) FROM job WHERE state = 'succeeded' AND attempt = 1 AND "
                      "errors = '[]'",
                      2, 15000) == 2,
          "both jobs finished in their first attempt");
    CHECK(th_server_stop(&r) == 0, "replica stops cleanly");
}

int main(void)
{
    char *url = th_db_create("jobs_rescue");
    test_kill9(url);
    PQclear(th_sql(url, "DELETE FROM job", NULL));
    test_shutdown(url);
    PQclear(th_sql(url, "DELETE FROM job", NULL));
    test_zombie(url);
    PQclear(th_sql(url, "DELETE FROM job", NULL));
    test_renewal_behind_lock(url);
    th_db_drop(url);
    free(url);
    return th_done();
}
