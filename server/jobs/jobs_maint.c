/* Maintenance of one replica, on a thread and connection of its own: the rescue of jobs
 * whose lease expired (their replica died, stalled or timed them out), on any replica, and
 * the gauges of /metrics rendered from the state store (a scrape never queries it). Lease
 * renewal is not here: it has its own thread (jobs_lease.c), so that a slow gauge query or
 * a rescue never holds a renewal back. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs_internal.h"
#include "platform/log.h"
#include "platform/metrics.h"

static struct maintenance {
    struct db_settings dbs;
    struct jobs_thread thread;
    atomic_int no_rescue; /* the replica is stopping */
} maint = {.thread = JOBS_THREAD_INIT};

static char *render_gauges(PGresult *res, int rows)
{
    struct buf b;
    buf_init(&b, 0);
    buf_puts(&b, "# HELP qdb_jobs Jobs not finished, by kind and state (all replicas).\n"
                 "# TYPE qdb_jobs gauge\n");
    double oldest = 0;
    long depth = 0;
    for (int r = 0; r < rows; r++) {
        buf_printf(&b, "qdb_jobs{kind=\"");
        metrics_escape_label(&b, PQgetvalue(res, r, 0));
        buf_printf(&b, "\",state=\"%s\"} %s\n", PQgetvalue(res, r, 1), PQgetvalue(res, r, 2));
        if (strcmp(PQgetvalue(res, r, 1), "running") != 0) {
            depth += (long)db_get_int64(res, r, 2);
            double age = strtod(PQgetvalue(res, r, 3), NULL);
            if (age > oldest)
                oldest = age;
        }
    }
    buf_printf(&b,
               "# HELP qdb_jobs_queue_depth Jobs waiting to run (pending or retrying).\n"
               "# TYPE qdb_jobs_queue_depth gauge\nqdb_jobs_queue_depth %ld\n"
               "# HELP qdb_jobs_oldest_pending_age_seconds How long the oldest claimable job "
               "has waited past its run_at.\n"
               "# TYPE qdb_jobs_oldest_pending_age_seconds gauge\n"
               "qdb_jobs_oldest_pending_age_seconds %.3f\n",
               depth, oldest);
    return buf_take(&b);
}

static void *maint_main(void *arg)
{
    (void)arg;
    struct db_conn *c = NULL;
    double last_rescue = 0, last_stats = 0, last_connect = -1;
    double rescue_every = (double)jobs_cfg.lease_s / 4.0;
    if (rescue_every < 0.5)
        rescue_every = 0.5;
    if (rescue_every > 5)
        rescue_every = 5;
    for (;;) {
        (void)jobs_thread_db(&c, &maint.dbs, &last_connect);
        double now = jobs_mono();
        if (c && now - last_rescue >= rescue_every && !atomic_load(&maint.no_rescue)) {
            last_rescue = now;
            PGresult *res = NULL;
            int n = jobs_store_rescue(c, &res);
            if (n > 0) {
                jobs_metrics_rescued(n);
                log_event(LOG_WARN, "rescued jobs whose lease expired",
                          json_pack("{s:i}", "jobs", n));
                jobs_workers_wake();
            }
            PQclear(res);
        }
        if (c && now - last_stats >= 5.0) {
            last_stats = now;
            PGresult *res = NULL;
            int n = jobs_store_stats(c, &res);
            if (n >= 0)
                jobs_metrics_set_gauges(render_gauges(res, n));
            PQclear(res);
        }
        if (jobs_thread_wait(&maint.thread, 0.25))
            break;
    }
    db_conn_close(c);
    return NULL;
}

int jobs_maint_start(const struct db_settings *dbs)
{
    maint.dbs = *dbs;
    atomic_store(&maint.no_rescue, 0);
    return jobs_thread_start(&maint.thread, maint_main, NULL);
}

void jobs_maint_stop_rescue(void)
{
    atomic_store(&maint.no_rescue, 1);
}

void jobs_maint_stop(void)
{
    jobs_thread_stop(&maint.thread);
}
