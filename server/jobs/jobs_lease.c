/* The lease keeper of one replica: one thread, with a connection of its own, that renews the
 * leases of every job the replica runs, every third of a lease.
 *
 * A lease that cannot be renewed is a job that can run twice (another replica rescues it
 * while our runner goes on), so this thread does nothing else: it never shares its
 * connection with request work, a runner's transactions, the rescue or the gauges, any of
 * which can wait on locks or run long; and its statement skips rows locked by others
 * instead of waiting on them (jobs_store_extend_leases). The time of the last renewal that
 * covered every running job is what runners trust their lease by (jobs_runner.c). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>

#include "jobs/jobs_internal.h"

static struct lease_keeper {
    char instance[128];
    struct db_settings dbs;
    struct jobs_thread thread;
    _Atomic double confirmed_at; /* monotonic start of the last complete renewal */
} leases = {.thread = JOBS_THREAD_INIT};

double jobs_lease_confirmed_at(void)
{
    return atomic_load(&leases.confirmed_at);
}

static void *lease_main(void *arg)
{
    (void)arg;
    struct db_conn *c = NULL;
    double last_ok = 0, last_connect = -1; /* renew at once: warms the connection up */
    double every = (double)jobs_cfg.lease_s / 3.0;
    int again = 0; /* the last round skipped locked rows or failed: try again soon */
    while (!jobs_thread_stopping(&leases.thread)) {
        double now = jobs_mono();
        if (again || now - last_ok >= every) {
            again = 1;
            if (jobs_thread_db(&c, &leases.dbs, &last_connect)) {
                int skipped = 0;
                int rc = jobs_store_extend_leases(c, leases.instance, jobs_cfg.lease_s, &skipped);
                if (rc >= 0 && skipped == 0) {
                    last_ok = now;
                    atomic_store(&leases.confirmed_at, now);
                    again = 0;
                }
            }
        }
        if (jobs_thread_wait(&leases.thread, 0.25))
            break;
    }
    db_conn_close(c);
    return NULL;
}

int jobs_lease_start(const char *instance, const struct db_settings *dbs)
{
    snprintf(leases.instance, sizeof leases.instance, "%s", instance);
    leases.dbs = *dbs;
    atomic_store(&leases.confirmed_at, jobs_mono());
    return jobs_thread_start(&leases.thread, lease_main, NULL);
}

void jobs_lease_stop(void)
{
    jobs_thread_stop(&leases.thread);
}
