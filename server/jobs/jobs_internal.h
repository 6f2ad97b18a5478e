/* Inside the job engine room: shared between its files, never included by other rooms
 * (they use jobs.h). Pure parts (cron, backoff) are here so that unit tests reach them. */
#ifndef QDB_JOBS_INTERNAL_H
#define QDB_JOBS_INTERNAL_H

#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "jobs/jobs.h"
#include "platform/buf.h"
#include "platform/db.h"

/* ---- cron (jobs_cron.c) ---- */

/* A parsed 5-field cron expression (minute hour day-of-month month day-of-week), UTC. */
struct jobs_cron {
    uint64_t minute; /* bit m: minute m (0..59) */
    uint32_t hour;   /* bit h: 0..23 */
    uint32_t dom;    /* bit d: 1..31 */
    uint32_t month;  /* bit m: 1..12 */
    uint32_t dow;    /* bit d: 0..6, Sunday = 0 (7 is accepted as Sunday) */
    int dom_any;     /* the day-of-month field was "*" */
    int dow_any;     /* the day-of-week field was "*" */
};

/* Parse `expr`: five fields separated by blanks, each a list of "*", "N", "N-M", with an
 * optional "/step"; month and weekday also take names (JAN, MON). Returns 0, or -1 with a
 * reason naming the cron field ("hour: 24 is out of range 0-23") in err. */
int jobs_cron_parse(const char *expr, struct jobs_cron *out, char *err, size_t errlen);
/* The first minute strictly after `after` (unix seconds) that matches, as unix seconds, or
 * -1 when none within 5 years (e.g. "0 0 30 2 *"). Day-of-month and day-of-week are ORed
 * when both are restricted, as in Vixie cron. */
int64_t jobs_cron_next(const struct jobs_cron *c, int64_t after);

/* ---- retries ---- */

/* Delay before retry number `attempt` (1 = after the first failure): full jitter, i.e. a
 * uniform value in [0, min(cap_ms, base_ms * 2^(attempt-1))], drawn from `rnd`. */
int64_t jobs_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint64_t rnd);

/* ---- engine settings (jobs_engine.c) ---- */

struct jobs_settings {
    int workers;           /* QDB_WORKERS: worker threads (0 = this replica runs no jobs) */
    long lease_s;          /* QDB_JOB_LEASE_SECONDS */
    long retention_days;   /* QDB_JOB_RETENTION_DAYS */
    long batch;            /* QDB_JOB_BATCH: most jobs one claim takes */
    long prefetch;         /* QDB_JOB_PREFETCH: jobs claimed per idle worker */
    long backoff_base_ms;  /* QDB_JOB_BACKOFF_BASE_MS */
    long backoff_max_s;    /* QDB_JOB_BACKOFF_MAX */
    long schedule_tick_ms; /* QDB_JOB_SCHEDULE_TICK_MS: how often the leader looks */
    long prune_interval_s; /* QDB_JOB_PRUNE_INTERVAL */
};
extern struct jobs_settings jobs_cfg;

/* The most kinds and default schedules the process takes: a registration past them fails
 * (and start-up with it) instead of being dropped. Per-kind metrics are sized by the first. */
#define JOBS_MAX_KINDS 256
#define JOBS_MAX_DEFAULT_SCHEDULES 256

/* The kinds registered so far (index stable; used for metrics). */
size_t jobs_kind_count(void);
const struct jobs_kind *jobs_kind_at(size_t i);
/* Index of a kind, or -1. */
int jobs_kind_index(const char *kind);

/* The concurrency key of a job of kind `k` with `args` into out: "" when unlimited. */
void jobs_concurrency_key(const struct jobs_kind *k, json_t *args, char *out, size_t n);

/* Built-in diagnostic kinds (jobs_kinds.c). */
int jobs_kinds_register_builtin(void);

/* ---- metrics (jobs_engine.c) ---- */
/* An attempt ended on this replica in `state` (succeeded, failed, cancelled, retrying)
 * after running `run_seconds`. */
void jobs_metrics_finished(const char *kind, const char *state, double run_seconds);
/* A failed attempt was scheduled for a retry. */
void jobs_metrics_retry(const char *kind);
/* This replica rescued `n` jobs whose lease had expired. */
void jobs_metrics_rescued(long n);
/* This replica fired a schedule. */
void jobs_metrics_schedule_fired(void);
/* Replace the gauges rendered from the state store (Prometheus text, stolen; NULL =
 * none). Called by the maintenance thread so that a scrape never queries the database. */
void jobs_metrics_set_gauges(char *text);
/* Register the room's collector with the platform's /metrics. */
int jobs_metrics_register(void);

/* ---- time, shared by the worker threads ---- */

/* Monotonic seconds. */
static inline double jobs_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* How long after its last confirmed renewal we still trust a lease: a margin below the
 * lease so that we stop before a rescuer on another replica could start. */
static inline double jobs_lease_trust_s(void)
{
    return (double)jobs_cfg.lease_s * 0.8;
}

/* ---- the engine's threads (jobs_engine.c) ----
 * The lease keeper, the maintenance thread, the LISTEN thread and the schedule leader each
 * tick until told to stop, with a connection of their own. */

struct jobs_thread {
    pthread_t thread;
    int started;
    atomic_int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* signalled on stop */
};
#define JOBS_THREAD_INIT                                                                           \
    {                                                                                              \
        .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER                            \
    }

/* Start fn(arg) on `t`. Returns 0 or -1. */
int jobs_thread_start(struct jobs_thread *t, void *(*fn)(void *), void *arg);
/* Tell `t` to stop and join it; nothing when it was not started. */
void jobs_thread_stop(struct jobs_thread *t);
/* Whether `t` was told to stop. */
int jobs_thread_stopping(struct jobs_thread *t);
/* From the thread itself: wait up to `secs`, or until told to stop; returns whether told. */
int jobs_thread_wait(struct jobs_thread *t, double secs);
/* The connection of one of these threads: *c when usable; else a new one, tried at most once
 * a second (*last_try, monotonic) so that an outage is not a connection storm. NULL while
 * the state store is away. */
struct db_conn *jobs_thread_db(struct db_conn **c, const struct db_settings *dbs, double *last_try);

/* ---- the worker pool (jobs_pool.c) ----
 * Worker threads share a local queue of claimed jobs and a list of completions. */

/* A job this replica claimed. */
struct jobs_claimed {
    int64_t id;
    int attempt, max_attempts, timeout_s, cancel;
    char *kind, *created_by;
    json_t *args;
    double claimed_at; /* monotonic seconds */
};

/* One worker thread and its own connection. */
struct jobs_worker {
    int index;
    pthread_t thread;
    int started;
    atomic_int exited;
    struct db_conn *db;
    atomic_llong current_id; /* job being run, 0 when none (for the stop path) */
    atomic_int current_attempt;
};

/* A running job, handed to its runner (jobs.h keeps it opaque). */
struct jobs_ctx {
    struct jobs_worker *w;
    struct jobs_claimed *job;
    const struct jobs_kind *k;
    double start, deadline, last_hb, lease_ok_until;
    int cancel_seen, lease_lost, timed_out, shutdown_stop;
    char error[1024];
};

/* Start `nworkers` worker threads, each with its own connection (`dbs` is copied; its
 * strings must outlive the engine). Returns 0 or -1. */
int jobs_pool_start(const char *instance, const struct db_settings *dbs, int nworkers,
                    int shutdown_timeout_s);
/* Stop claiming; give running jobs the shutdown timeout, then tell their runners to stop
 * and release their jobs; give back claimed jobs that never started; join the workers. */
/* Shutdown began: claim nothing more; running jobs get QDB_SHUTDOWN_TIMEOUT from now. */
void jobs_pool_quiesce(void);
void jobs_pool_stop(void);
/* Wake idle workers (new work may be there). */
void jobs_workers_wake(void);
/* The instance id this replica claims jobs as (the worker_id of its jobs). */
const char *jobs_pool_instance(void);
/* Whether the runners must stop now (the shutdown timeout has passed). */
int jobs_pool_hard_stopping(void);
/* Whether retries of a statement must end now: the runners must stop, or the stop began
 * and its grace period has passed (so that SIGTERM during an outage ends every worker
 * within the shutdown timeout). */
int jobs_pool_stop_due(void);
/* Whether the last claim saw jobs waiting for a concurrency slot. */
int jobs_pool_limited_waiting(void);
/* The worker's connection, (re)connecting when needed; NULL when PostgreSQL is away (or
 * the stop is due: no new connection attempt then). */
struct db_conn *jobs_worker_db(struct jobs_worker *w);

/* ---- the lease keeper (jobs_lease.c) ----
 * One thread with a connection of its own, doing nothing but renewing the leases of the
 * jobs this replica holds: never queued behind request work, a runner's work, the rescue
 * or the gauges. */

/* Start it; returns 0 or -1. */
int jobs_lease_start(const char *instance, const struct db_settings *dbs);
/* Stop it (after the pool stopped: leases are renewed while runners finish). */
void jobs_lease_stop(void);
/* Monotonic start of the last renewal that covered every running job of this replica. */
double jobs_lease_confirmed_at(void);

/* ---- the LISTEN thread (jobs_listener.c) ----
 * Turns job_events notifications into wake-ups and SSE events, and ticks once a second
 * for jobs whose run_at arrives (no other polling). */
int jobs_listener_start(const struct db_settings *dbs);
void jobs_listener_stop(void);

/* ---- notifications of new jobs (jobs_notify.c) ----
 * Sent after the enqueuing transaction commits, by one thread with its own connection,
 * never by a trigger inside it (see the file for why). */
/* Announce the new pending job `id` inserted on `c`: after the commit of the open
 * transaction (and at once when there is none); inside it where the thread does not run.
 * Returns 0 or a DB_ code. */
int jobs_notify_new(struct db_conn *c, int64_t id);
int jobs_notify_start(const struct db_settings *dbs);
/* Stop the thread after sending what it holds; later enqueues notify in their transaction. */
void jobs_notify_stop(void);

/* ---- maintenance (jobs_maint.c): rescue of expired leases, gauges ---- */
int jobs_maint_start(const struct db_settings *dbs);
/* No more rescues (the replica is stopping); gauges go on until jobs_maint_stop. */
void jobs_maint_stop_rescue(void);
void jobs_maint_stop(void);

/* ---- schedule leader and pruner (jobs_cron.c) ---- */
/* Start the thread that competes for the schedule leadership and, while it leads, fires
 * due schedules and prunes old jobs. Returns 0 or -1. */
int jobs_leader_start(const char *instance, const struct db_settings *dbs);
/* Stop it and hand the leadership over at once (the row is deleted). */
void jobs_leader_stop(void);

/* ---- SSE relay (jobs_api.c) ---- */
/* Create the event hub of GET /api/v1/jobs/events. Returns 0 or -1. */
int jobs_events_init(void);
/* Free it, after the HTTP server stopped (no stream left). */
void jobs_events_free(void);
/* Relay a job_events payload ("id:state,...") to the event streams. */
void jobs_events_publish(const char *payload);
/* Called often (<= 250 ms) by the listener thread: keep-alives and shutdown. */
void jobs_events_tick(void);

/* ---- store (jobs_store.c): SQL only, one function per statement ----
 * Returns follow db_exec: rows (>= 0) or a DB_ code. `worker` is the replica's instance id. */

struct jobs_insert {
    const char *kind, *queue, *args_json, *run_at, *idempotency_key, *created_by;
    const char *concurrency_key; /* NULL: unlimited */
    int priority, max_attempts, timeout_seconds, max_running;
};
/* 1 inserted (*id set; *doc, when doc is not NULL, the new job's document as job_doc
 * shows it, a new reference, read back by the same statement), 0 when the idempotency key
 * exists already. */
int jobs_store_insert(struct db_conn *c, const struct jobs_insert *j, int64_t *id, json_t **doc);
/* The job holding `key`: 1 found (*id, *same: same kind, args, queue and caller; another
 * caller's key is a conflict, never their job), 0 none. */
int jobs_store_idempotent_match(struct db_conn *c, const char *key, const char *kind,
                                const char *args_json, const char *queue, const char *created_by,
                                int64_t *id, int *same);
/* The job's API document: 1 with *doc (new reference), 0 none. */
int jobs_store_get_json(struct db_conn *c, int64_t id, json_t **doc);
/* A page of jobs, newest first: rows of (id, doc). Filters may be NULL. */
int jobs_store_list(struct db_conn *c, const char *state, const char *kind, const char *queue,
                    const char *created_by, const char *since, int64_t before_id, int limit,
                    PGresult **res);
/* A page of a job's log, oldest first after `after_id`: rows of (id, doc). */
int jobs_store_logs(struct db_conn *c, int64_t job_id, int64_t after_id, int limit, PGresult **res);
/* 1 when the job exists. */
int jobs_store_exists(struct db_conn *c, int64_t id);

/* Claim up to `n` unlimited claimable jobs: rows of (id, kind, args, attempt, max_attempts,
 * timeout_seconds, created_by, cancel_requested). */
int jobs_store_claim(struct db_conn *c, const char *worker, long lease_s, int n, PGresult **res);
/* Up to `n` concurrency keys with claimable jobs, those with a free slot first: rows of
 * (key, max_running). */
int jobs_store_limited_keys(struct db_conn *c, int n, PGresult **res);
/* Take the transaction-scoped lock of a concurrency key (inside BEGIN..COMMIT). */
int jobs_store_lock_key(struct db_conn *c, const char *key);
/* Claim up to the free slots of `key` (same rows as jobs_store_claim). */
int jobs_store_claim_limited(struct db_conn *c, const char *key, int max_running,
                             const char *worker, long lease_s, int n, PGresult **res);
/* Mark succeeded the jobs in the arrays (text array literals of equal length). With `res`
 * (caller PQclears) the rows completed: id, kind, attempt. */
int jobs_store_complete(struct db_conn *c, const char *worker, const char *ids,
                        const char *attempts, const char *results, PGresult **res);
/* A failed attempt: retrying after delay_ms when retryable and attempts remain, else failed.
 * 1 updated (*state receives the new state, >= 16 bytes), 0 when no longer ours. */
int jobs_store_fail(struct db_conn *c, int64_t id, const char *worker, int attempt, int retryable,
                    int64_t delay_ms, const char *message, char *state);
/* The runner stopped on a cancel request. */
int jobs_store_cancelled(struct db_conn *c, int64_t id, const char *worker, int attempt);
/* Give back a job whose attempt started but was interrupted by shutdown. */
int jobs_store_release_started(struct db_conn *c, int64_t id, const char *worker, int attempt,
                               const char *message);
/* Give back claimed jobs that never started (arrays as in jobs_store_complete). */
int jobs_store_release_unstarted(struct db_conn *c, const char *worker, const char *ids,
                                 const char *attempts);
/* Extend one job's lease: 1 (with *cancel) or 0 when the lease is no longer ours. */
int jobs_store_heartbeat(struct db_conn *c, int64_t id, const char *worker, int attempt,
                         long lease_s, int *cancel);
/* Same with progress. */
int jobs_store_progress(struct db_conn *c, int64_t id, const char *worker, int attempt,
                        long lease_s, int percent, const char *msg, int *cancel);
int jobs_store_log(struct db_conn *c, int64_t id, const char *level, const char *msg);
/* Extend the leases of every running job this replica holds, except those past their
 * timeout (a stuck runner loses its lease and is rescued). Never waits on a row lock: rows
 * locked by another transaction are skipped and counted in *skipped (try again soon).
 * Returns the number renewed, or a DB_ code. */
int jobs_store_extend_leases(struct db_conn *c, const char *worker, long lease_s, int *skipped);
/* Rescue up to 200 jobs whose lease expired: rows of (id, state). */
int jobs_store_rescue(struct db_conn *c, PGresult **res);
/* Delete up to `n` jobs finished more than `days` ago. */
int jobs_store_prune(struct db_conn *c, long days, int n);
/* Gauges: rows of (kind, state, count, oldest_age_seconds) for non-terminal states. */
int jobs_store_stats(struct db_conn *c, PGresult **res);

/* Take or renew leadership `role` for `ttl_s`: 1 when `holder` leads. */
int jobs_store_leader_acquire(struct db_conn *c, const char *role, const char *holder, long ttl_s);
int jobs_store_leader_release(struct db_conn *c, const char *role, const char *holder);

/* Operator actions (API). Rows of (state) after the change; 0 when the state forbids it. */
int jobs_store_cancel(struct db_conn *c, int64_t id, PGresult **res);
int jobs_store_retry(struct db_conn *c, int64_t id);

/* ---- schedule store (jobs_schedules_store.c) ---- */
/* Rows of (document as JSON text), by name. */
int jobs_store_schedule_list(struct db_conn *c, PGresult **res);
/* The schedule's document: 1 with *doc (new reference), 0 none. */
int jobs_store_schedule_get(struct db_conn *c, const char *name, json_t **doc);
/* 1 inserted, DB_UNIQUE when the name exists. */
int jobs_store_schedule_insert(struct db_conn *c, const char *name, const char *cron,
                               const char *kind, const json_t *args, int enabled,
                               int64_t next_run_unix);
/* Insert the schedule unless one of that name exists (enabled, next run at
 * next_run_unix). 1 inserted, 0 it existed. */
int jobs_store_schedule_insert_missing(struct db_conn *c, const char *name, const char *cron,
                                       const char *kind, const char *args_json,
                                       int64_t next_run_unix);
/* Update given fields (NULL / enabled -1 = keep); next_run_unix recomputed by the caller
 * when cron or enabled change (0 = keep). 1 updated, 0 none. */
int jobs_store_schedule_update(struct db_conn *c, const char *name, const char *cron,
                               const json_t *args, int enabled, int64_t next_run_unix);
/* Insert or replace cron, args, enabled and next run (jobs_schedule_put). */
int jobs_store_schedule_upsert(struct db_conn *c, const char *name, const char *cron,
                               const char *kind, const json_t *args, int enabled,
                               int64_t next_run_unix);
/* 1 deleted, 0 none. */
int jobs_store_schedule_delete(struct db_conn *c, const char *name);
/* Due schedules, locked: rows of (name, cron, kind, args, next_run_at epoch or NULL). */
int jobs_store_schedule_due(struct db_conn *c, PGresult **res);
/* After a fire (job_id 0: none fired, only next_run_at set). */
int jobs_store_schedule_fired(struct db_conn *c, const char *name, int64_t next_run_unix,
                              int64_t job_id);

/* Default schedules registered with jobs_schedule_ensure (jobs_schedules.c): create the
 * missing ones on `c`. Returns 0 or a DB_ code. */
int jobs_schedules_apply_defaults(struct db_conn *c);

/* pg_notify('job_events', payload) inside the open transaction, or as its own when there
 * is none. Rows (1) or a DB_ code. */
int jobs_store_notify(struct db_conn *c, const char *payload);
/* The same as a transaction of its own whose commit waits for no WAL flush: a lost
 * notification costs a wake-up that the once-a-second poll gives anyway, and so the
 * cluster's notify queue lock is held for no flush. Outside a transaction only. */
int jobs_store_notify_async(struct db_conn *c, const char *payload);

/* ---- small helpers ---- */
/* Append a C string as a quoted element of a PostgreSQL array literal (NULL = NULL). */
int jobs_pg_array_add(struct buf *b, const char *s);

#endif
