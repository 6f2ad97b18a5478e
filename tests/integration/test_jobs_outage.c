/* The state store stopped (a private cluster): an open event stream is told to resync when
 * it is back, since changes were missed meanwhile. SIGTERM while it is down: every job
 * worker stops within QDB_SHUTDOWN_TIMEOUT, even those whose runner was interrupted and
 * whose release cannot be written, and the process exits cleanly. The jobs stay 'running'
 * under the dead replica's lease, for a rescuer once PostgreSQL is back, as after a crash. */
#include <pthread.h>

#include "jobs_helpers.h"

#define SHUTDOWN_TIMEOUT_S 3

/* How many lines of the server's log contain `needle`. */
static long log_count(const struct th_server *s, const char *needle)
{
    FILE *f = fopen(s->log, "r");
    long n = 0;
    char line[8192];
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    if (f)
        fclose(f);
    return n;
}

int main(void)
{
    struct th_pg pg;
    if (th_pg_private_start(&pg) != 0) {
        CHECK(0, "private PostgreSQL starts");
        return th_done();
    }
    char *url = th_pg_private_db(&pg, "jobs_outage");
    struct th_server s;
    /* the default lease (30 s): a worker that retried its release for as long as the lease
     * can be trusted (24 s) would outlive the shutdown timeout by far */
    const char *env[] = {"QDB_WORKERS=4", "QDB_SHUTDOWN_TIMEOUT=3", "QDB_DB_CONNECT_TIMEOUT=2",
                         NULL};
    if (th_server_start(&s, url, env, 1) != 0) {
        CHECK(0, "server starts");
        goto out;
    }
    th_step("an outage: event streams are told to resync when the state store is back");
    char *viewer = th_dev_token(&s, "viewer");
    static struct jt_sse stream;
    stream.srv = &s;
    stream.token = viewer ? viewer : "";
    stream.timeout_ms = 30000;
    stream.until_text = "event: resync";
    pthread_t t;
    pthread_create(&t, NULL, jt_sse_thread, &stream);
    CHECK(jt_sse_wait_connected(&stream), "the stream is open");
    CHECK(th_pg_private_stop(&pg) == 0, "PostgreSQL stopped");
    double end = th_now_ms() + 10000;
    while (!th_server_log_contains(&s, "job listener lost its connection") && th_now_ms() < end)
        th_sleep_ms(50);
    CHECK(th_server_log_contains(&s, "job listener lost its connection"),
          "the listener noticed the outage");
    CHECK(th_pg_private_restart(&pg) == 0, "PostgreSQL started again");
    pthread_join(t, NULL);
    CHECK(stream.status == 200 && strstr(stream.buf, "event: resync\ndata: {}"),
          "the stream got a resync: %s", stream.buf);
    free(viewer);

    th_step("SIGTERM during an outage: the workers stop within the shutdown timeout");
    PQclear(th_sql(url,
                   "INSERT INTO job (kind, args, created_by, max_attempts, timeout_seconds) "
                   "SELECT 'sleep', '{\"seconds\":60}', 'test', 3, 600 FROM generate_series(1, 3)",
                   NULL));
    CHECK(jt_wait_sql(url, "SELECT count(*) FROM job WHERE state = 'running'", 3, 10000) == 3,
          "three long jobs running");
    long failures = log_count(&s, "state store connection failed");
    CHECK(th_pg_private_stop(&pg) == 0, "PostgreSQL stopped");
    /* the runners' heartbeats find the state store gone within a second */
    end = th_now_ms() + 10000;
    while (log_count(&s, "state store connection failed") == failures && th_now_ms() < end)
        th_sleep_ms(50);
    CHECK(log_count(&s, "state store connection failed") > failures,
          "the server noticed the outage");
    double t0 = th_now_ms();
    int status = th_server_stop(&s);
    double took = (th_now_ms() - t0) / 1000.0;
    fprintf(stderr, "   stopped %.1f s after SIGTERM (timeout %d s)\n", took, SHUTDOWN_TIMEOUT_S);
    CHECK(status == 0, "exit status 0: %d", status);
    CHECK(took <= SHUTDOWN_TIMEOUT_S + 2.0, "exited within the shutdown timeout: %.1f s", took);
    CHECK(!th_server_log_contains(&s, "did not stop"), "no worker was left behind (log %s)", s.log);
    CHECK(th_server_log_contains(&s, "\"msg\":\"shutting down\""), "the shutdown was logged");

    th_step("PostgreSQL back: the jobs are still held by the stopped replica's lease");
    CHECK(th_pg_private_restart(&pg) == 0, "PostgreSQL started again");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM job WHERE state = 'running' AND attempt = 1 AND "
                      "lease_until > now()",
                      NULL) == 3,
          "three running jobs under a live lease, left for the rescuer");
out:
    free(url);
    th_pg_private_destroy(&pg);
    return th_done();
}
