/* The LISTEN thread of one replica: each job_events notification becomes a wake-up of the
 * worker pool (when it may mean claimable work) and an event on the SSE streams; it also
 * ticks once a second for jobs whose run_at arrives (no other polling), and ticks the SSE
 * hub (keep-alives, shutdown). After its connection was lost, the streams get a `resync`
 * event when it is back, since the changes meanwhile were not relayed. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "jobs/jobs_internal.h"
#include "platform/log.h"

static struct job_listener {
    struct db_settings dbs;
    struct jobs_thread thread;
} listener = {.thread = JOBS_THREAD_INIT};

/* Whether a job_events payload ("id:state,...") may mean claimable work: a job became
 * pending or retrying, more changed than the payload lists, or a job finished while others
 * wait for a concurrency slot. Waking on every 'running' or 'succeeded' would have idle
 * workers query for nothing three times per job. */
static int worth_a_claim(const char *payload)
{
    if (!payload)
        return 0;
    if (strstr(payload, ":pending") || strstr(payload, ":retrying") || strstr(payload, "+"))
        return 1;
    return jobs_pool_limited_waiting() &&
           (strstr(payload, ":succeeded") || strstr(payload, ":failed") ||
            strstr(payload, ":cancelled"));
}

static void *listener_main(void *arg)
{
    (void)arg;
    struct db_conn *c = NULL;
    double last_tick = 0, last_try = 0;
    int listened = 0; /* a LISTEN connection was up before */
    while (!jobs_thread_stopping(&listener.thread)) {
        double now = jobs_mono();
        if (now - last_tick >= 1.0) {
            last_tick = now;
            jobs_workers_wake(); /* the run_at timer: jobs whose time came */
        }
        jobs_events_tick();
        if (!c && now - last_try >= 1.0) {
            last_try = now;
            c = db_conn_open(&listener.dbs);
            if (c && db_exec_fixed(c, "LISTEN job_events") < 0) {
                db_conn_close(c);
                c = NULL;
            }
            if (c) {
                jobs_workers_wake(); /* notifications may have been missed meanwhile */
                /* and event streams may have missed changes: tell them to reload */
                if (listened)
                    jobs_events_publish("+");
                listened = 1;
            }
        }
        if (!c) {
            jobs_thread_wait(&listener.thread, 0.25);
            continue;
        }
        PGconn *pg = db_pgconn(c);
        struct pollfd pfd = {PQsocket(pg), POLLIN, 0};
        int pr = poll(&pfd, 1, 250);
        if (pr < 0 && errno != EINTR)
            break;
        if (pr > 0) {
            if (!PQconsumeInput(pg)) {
                log_warn("job listener lost its connection; reconnecting");
                db_conn_close(c);
                c = NULL;
                continue;
            }
            PGnotify *n;
            int wake = 0;
            while ((n = PQnotifies(pg)) != NULL) {
                jobs_events_publish(n->extra);
                wake |= worth_a_claim(n->extra);
                PQfreemem(n);
            }
            if (wake)
                jobs_workers_wake();
        }
    }
    db_conn_close(c);
    return NULL;
}

int jobs_listener_start(const struct db_settings *dbs)
{
    listener.dbs = *dbs;
    return jobs_thread_start(&listener.thread, listener_main, NULL);
}

void jobs_listener_stop(void)
{
    jobs_thread_stop(&listener.thread);
}
