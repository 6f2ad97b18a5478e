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
    pthread_t thread;
    int started;
    atomic_int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* stop */
    _Atomic double confirmed_at; /* monotonic start of the last complete renewal */
} leases = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

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
    while (!atomic_load(&leases.stop)) {
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
        if (jobs_wait_stop(&leases.mu, &leases.cv, &leases.stop, 0.25))
            break;
    }
    db_conn_close(c);
    return NULL;
}

int jobs_lease_start(const char *instance, const struct db_settings *dbs)
{
    snprintf(leases.instance, sizeof leases.instance, "%s", instance);
    leases.dbs = *dbs;
    atomic_store(&leases.stop, 0);
    atomic_store(&leases.confirmed_at, jobs_mono());
    if (pthread_create(&leases.thread, NULL, lease_main, NULL) != 0)
        return -1;
    leases.started = 1;
    return 0;
}

void jobs_lease_stop(void)
{
    if (!leases.started)
        return;
    atomic_store(&leases.stop, 1);
    pthread_mutex_lock(&leases.mu);
    pthread_cond_broadcast(&leases.cv);
    pthread_mutex_unlock(&leases.mu);
    pthread_join(leases.thread, NULL);
    leases.started = 0;
}
