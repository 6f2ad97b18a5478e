/* The worker pool of one replica: claiming, running and completing jobs.
 *
 * Workers share a small local queue: when it is empty, one idle worker claims a batch
 * (sized by the idle workers x QDB_JOB_PREFETCH, at most QDB_JOB_BATCH) in one statement and
 * the others take jobs from it; successes are completed in batches too. A claimed job is
 * held by this replica (worker_id = the instance id) under a lease that the lease keeper
 * (jobs_lease.c) extends for every job the replica holds, and that runners' heartbeats
 * extend too (jobs_runner.c); a job past its timeout is no longer extended, so a stuck
 * runner loses it to the rescuer (jobs_maint.c). Wake-ups come from the LISTEN thread
 * (jobs_listener.c). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "audit/audit.h"
#include "jobs/jobs_internal.h"
#include "platform/log.h"
#include "platform/deadline.h"

struct done {
    int64_t id;
    int attempt;
    char *result; /* JSON text or NULL */
    int kind_index;
    double secs;
};

/* The pool's shared state: its workers, the local queue of claimed jobs and the list of
 * completions waiting to be recorded, under one lock. */
static struct worker_pool {
    char instance[128];
    struct db_settings dbs;
    int nworkers;
    struct jobs_worker *workers;
    int shutdown_timeout_s;
    int started; /* jobs_pool_start ran */

    pthread_mutex_t mu;
    pthread_cond_t cv; /* workers: work, completions or stop */
    uint64_t wake_gen, fetched_gen;
    int fetching, idle, running;
    struct jobs_claimed **q;
    size_t qhead, qlen, qcap;
    struct done *d;
    size_t ndone, dcap;

    atomic_int stopping;        /* no new claims */
    _Atomic double grace_ends;  /* monotonic end of the stop's grace period (0: none) */
    atomic_int hard_stop;       /* runners must stop now */
    atomic_int limited_waiting; /* the last claim saw jobs waiting for a concurrency slot */
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void claimed_free(struct jobs_claimed *c)
{
    if (!c)
        return;
    free(c->kind);
    free(c->created_by);
    json_decref(c->args);
    free(c);
}

struct db_conn *jobs_worker_db(struct jobs_worker *w)
{
    if (jobs_pool_stop_due()) {
        /* A connection attempt can take QDB_DB_CONNECT_TIMEOUT: none once the stop is due,
         * so that a replica stopping during an outage is not held up by them. */
        return w->db && PQstatus(db_pgconn(w->db)) == CONNECTION_OK ? w->db : NULL;
    }
    if (!w->db) {
        w->db = db_conn_open(&pool.dbs);
        return w->db;
    }
    return db_conn_check(w->db) == 0 ? w->db : NULL;
}

const char *jobs_pool_instance(void)
{
    return pool.instance;
}

int jobs_pool_hard_stopping(void)
{
    return atomic_load(&pool.hard_stop);
}

int jobs_pool_stop_due(void)
{
    if (atomic_load(&pool.hard_stop))
        return 1;
    double grace = atomic_load(&pool.grace_ends);
    return grace > 0 && jobs_mono() >= grace;
}

int jobs_pool_limited_waiting(void)
{
    return atomic_load(&pool.limited_waiting);
}

void jobs_workers_wake(void)
{
    /* One idle worker is enough: it claims, and wakes others only for what it claimed.
     * Waking all of them on every notification would have them fight over two cores. */
    pthread_mutex_lock(&pool.mu);
    pool.wake_gen++;
    pthread_cond_signal(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
}

/* ---- statements run until they are not DB_RETRY ---- */

enum op_kind { OP_COMPLETE, OP_FAIL, OP_CANCELLED, OP_RELEASE_STARTED, OP_RELEASE_UNSTARTED };
struct op {
    enum op_kind kind;
    int64_t id;
    int attempt, retryable;
    int64_t delay_ms;
    const char *message;
    const char *ids, *attempts, *results;
    const char *job_kind; /* for the event of OP_FAIL and OP_CANCELLED */
    char state[16];
};

/* ---- the events of finished attempts, in the transaction that records them ---- */

static json_t *finished_data(int64_t id, const char *kind, int attempt, const char *state,
                             const char *error)
{
    json_t *d = json_pack("{s:I,s:s,s:i,s:s}", "id", (json_int_t)id, "kind", kind ? kind : "",
                          "attempt", attempt, "state", state);
    if (d && error)
        json_object_set_new(d, "error", json_string(error));
    return d;
}

/* The successes of one batch and their events ("finished", one per job completed: a job
 * taken over meanwhile is not completed, so gets none). Returns the rows completed. */
static int complete_fn(struct db_conn *c, void *cls)
{
    struct op *o = cls;
    PGresult *res = NULL;
    int n = jobs_store_complete(c, pool.instance, o->ids, o->attempts, o->results, &res);
    if (n <= 0) {
        PQclear(res);
        return n;
    }
    struct audit_event *evs = calloc((size_t)n, sizeof *evs);
    json_t **data = calloc((size_t)n, sizeof *data);
    char(*subjects)[40] = calloc((size_t)n, sizeof *subjects);
    int rc = evs && data && subjects ? 0 : DB_HARD;
    for (int i = 0; i < n && rc == 0; i++) {
        int64_t id = db_get_int64(res, i, 0);
        snprintf(subjects[i], sizeof subjects[i], "jobs/%lld", (long long)id);
        data[i] = finished_data(id, PQgetvalue(res, i, 1), (int)db_get_int64(res, i, 2),
                                "succeeded", NULL);
        evs[i] = (struct audit_event){
            .room = "jobs", .verb = "finished", .subject = subjects[i], .data = data[i]};
    }
    if (rc == 0)
        rc = audit_events_emit(c, NULL, evs, (size_t)n);
    for (int i = 0; data && i < n; i++)
        json_decref(data[i]);
    free(evs);
    free(data);
    free(subjects);
    PQclear(res);
    return rc < 0 ? rc : n;
}

/* A failed or cancelled attempt and its event: "finished" when the job is done with,
 * "attempt_failed" when it will be retried. */
static int fail_fn(struct db_conn *c, void *cls)
{
    struct op *o = cls;
    int rc = o->kind == OP_FAIL
                 ? jobs_store_fail(c, o->id, pool.instance, o->attempt, o->retryable, o->delay_ms,
                                   o->message, o->state)
                 : jobs_store_cancelled(c, o->id, pool.instance, o->attempt);
    if (rc <= 0)
        return rc;
    if (o->kind == OP_CANCELLED)
        snprintf(o->state, sizeof o->state, "cancelled");
    char subject[40];
    snprintf(subject, sizeof subject, "jobs/%lld", (long long)o->id);
    json_t *data = finished_data(o->id, o->job_kind, o->attempt, o->state,
                                 o->kind == OP_FAIL ? o->message : NULL);
    struct audit_event ev = {.room = "jobs",
                             .verb = strcmp(o->state, "retrying") == 0 ? "attempt_failed"
                                                                       : "finished",
                             .subject = subject,
                             .data = data};
    int erc = audit_event_emit(c, NULL, &ev);
    json_decref(data);
    return erc < 0 ? erc : rc;
}

static int op_run(struct db_conn *c, struct op *o)
{
    switch (o->kind) {
    case OP_COMPLETE:
        return db_tx(c, complete_fn, o);
    case OP_FAIL:
    case OP_CANCELLED:
        return db_tx(c, fail_fn, o);
    case OP_RELEASE_STARTED:
        return jobs_store_release_started(c, o->id, pool.instance, o->attempt, o->message);
    case OP_RELEASE_UNSTARTED:
        return jobs_store_release_unstarted(c, pool.instance, o->ids, o->attempts);
    }
    return DB_HARD;
}

/* Retry through a lost connection (PostgreSQL restarting) for as long as our lease can
 * still be trusted: the statements are guarded, so running one twice is harmless. Once the
 * stop is due (its grace period is over) the statement is tried no more: what is not
 * recorded by then is left to the lease and the rescuer, as after a crash. */
static int op_until(struct jobs_worker *w, struct op *o, double until)
{
    int rc = DB_RETRY;
    for (;;) {
        struct db_conn *c = jobs_worker_db(w);
        if (c) {
            rc = op_run(c, o);
            if (rc != DB_RETRY)
                return rc;
        }
        if (jobs_mono() >= until || jobs_pool_stop_due())
            return rc;
        sleep_s(0.2);
    }
}

/* ---- completions ---- */

/* Complete the successes in `d` (taken from the shared list) in one statement. */
static void flush_done(struct jobs_worker *w, struct done *d, size_t n)
{
    struct buf ids, atts, res;
    buf_init(&ids, 0);
    buf_init(&atts, 0);
    buf_init(&res, 0);
    int bad = buf_puts(&ids, "{") | buf_puts(&atts, "{") | buf_puts(&res, "{");
    for (size_t i = 0; i < n; i++) {
        bad |= buf_printf(&ids, "%s%lld", i ? "," : "", (long long)d[i].id);
        bad |= buf_printf(&atts, "%s%d", i ? "," : "", d[i].attempt);
        bad |= jobs_pg_array_add(&res, d[i].result);
    }
    bad |= buf_puts(&ids, "}") | buf_puts(&atts, "}") | buf_puts(&res, "}");
    if (!bad) {
        struct op o = {
            .kind = OP_COMPLETE, .ids = ids.data, .attempts = atts.data, .results = res.data};
        int rc = op_until(w, &o, jobs_mono() + jobs_lease_trust_s());
        if (rc < 0)
            log_event(LOG_ERROR, "could not record job completions; they will be rescued",
                      json_pack("{s:i}", "jobs", (int)n));
        else if ((size_t)rc < n)
            log_event(LOG_WARN, "some completions came after the job was taken over",
                      json_pack("{s:i,s:i}", "jobs", (int)n, "recorded", rc));
        for (size_t i = 0; i < n && rc >= 0; i++) {
            const struct jobs_kind *k = jobs_kind_at((size_t)d[i].kind_index);
            if (k)
                jobs_metrics_finished(k->kind, "succeeded", d[i].secs);
        }
    }
    for (size_t i = 0; i < n; i++)
        free(d[i].result);
    free(d);
    buf_free(&ids);
    buf_free(&atts);
    buf_free(&res);
}

/* Take the pending completions (caller holds pool.mu). */
static struct done *take_done(size_t *n)
{
    struct done *d = pool.d;
    *n = pool.ndone;
    pool.d = NULL;
    pool.ndone = pool.dcap = 0;
    return d;
}

static void add_done(struct jobs_claimed *c, int kind_index, json_t *result, double secs)
{
    struct done one = {c->id, c->attempt,
                       result ? json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY) : NULL,
                       kind_index, secs};
    pthread_mutex_lock(&pool.mu);
    if (pool.ndone == pool.dcap) {
        size_t cap = pool.dcap ? pool.dcap * 2 : 64;
        struct done *nd = realloc(pool.d, cap * sizeof *nd);
        if (!nd) {
            pthread_mutex_unlock(&pool.mu);
            free(one.result);
            log_error("out of memory recording a completion; job %lld will be rescued",
                      (long long)c->id);
            return;
        }
        pool.d = nd;
        pool.dcap = cap;
    }
    pool.d[pool.ndone++] = one;
    pthread_mutex_unlock(&pool.mu);
}

/* ---- running one job ---- */

static void finish_failed(struct jobs_worker *w, struct jobs_ctx *ctx, int retryable,
                          const char *why)
{
    struct jobs_claimed *c = ctx->job;
    uint64_t rnd = 0;
    RAND_bytes((unsigned char *)&rnd, sizeof rnd);
    int64_t delay =
        jobs_backoff_ms(c->attempt, jobs_cfg.backoff_base_ms, jobs_cfg.backoff_max_s * 1000, rnd);
    struct op o = {.kind = OP_FAIL,
                   .id = c->id,
                   .attempt = c->attempt,
                   .retryable = retryable,
                   .delay_ms = delay,
                   .message = why,
                   .job_kind = c->kind};
    int rc = op_until(w, &o, ctx->lease_ok_until);
    double secs = jobs_mono() - ctx->start;
    if (rc > 0) {
        jobs_metrics_finished(c->kind, o.state, secs);
        if (strcmp(o.state, "retrying") == 0)
            jobs_metrics_retry(c->kind);
    }
    log_event(rc > 0 ? LOG_WARN : LOG_ERROR, "job attempt failed",
              json_pack("{s:I,s:s,s:i,s:s,s:s,s:I}", "job_id", (json_int_t)c->id, "kind", c->kind,
                        "attempt", c->attempt, "error", why, "state",
                        rc > 0 ? o.state : "(not recorded)", "retry_in_ms", (json_int_t)delay));
}

static void run_one(struct jobs_worker *w, struct jobs_claimed *c)
{
    double now = jobs_mono();
    double renewed = jobs_lease_confirmed_at();
    if (now > (renewed > c->claimed_at ? renewed : c->claimed_at) + jobs_lease_trust_s()) {
        /* Held too long without a confirmed renewal (the state store was away): another
         * replica may have rescued it by now. Leave it to the rescuer. */
        log_event(LOG_WARN, "claimed job dropped: lease no longer trusted",
                  json_pack("{s:I}", "job_id", (json_int_t)c->id));
        return;
    }
    const struct jobs_kind *k = jobs_find_kind(c->kind);
    struct jobs_ctx ctx = {.w = w,
                           .job = c,
                           .k = k,
                           .start = now,
                           .last_hb = now,
                           .lease_ok_until = now + jobs_lease_trust_s()};
    ctx.deadline = now + (double)c->timeout_s;
    if (c->cancel) {
        struct op o = {
            .kind = OP_CANCELLED, .id = c->id, .attempt = c->attempt, .job_kind = c->kind};
        if (op_until(w, &o, ctx.lease_ok_until) > 0)
            jobs_metrics_finished(c->kind, "cancelled", 0);
        return;
    }
    if (!k || !k->run) {
        finish_failed(w, &ctx, 0, "no runner for this kind in this build");
        return;
    }
    atomic_store(&w->current_attempt, c->attempt);
    atomic_store(&w->current_id, (long long)c->id);
    json_t *result = NULL;
    enum jobs_outcome out = k->run(&ctx, c->args, &result);
    double secs = jobs_mono() - ctx.start;
    if (ctx.lease_lost) {
        log_event(LOG_WARN, "job finished after its lease was lost; result dropped",
                  json_pack("{s:I,s:s}", "job_id", (json_int_t)c->id, "kind", c->kind));
    } else if (out == JOBS_OK) {
        add_done(c, jobs_kind_index(c->kind), result, secs);
    } else if (ctx.shutdown_stop || atomic_load(&pool.hard_stop)) {
        struct op o = {.kind = OP_RELEASE_STARTED,
                       .id = c->id,
                       .attempt = c->attempt,
                       .message = "interrupted: the replica shut down; released"};
        (void)op_until(w, &o, ctx.lease_ok_until);
    } else if (ctx.timed_out) {
        char why[160];
        snprintf(why, sizeof why, "timed out after %d s", c->timeout_s);
        finish_failed(w, &ctx, 1, why);
    } else if (out == JOBS_CANCELLED || ctx.cancel_seen) {
        struct op o = {
            .kind = OP_CANCELLED, .id = c->id, .attempt = c->attempt, .job_kind = c->kind};
        if (op_until(w, &o, ctx.lease_ok_until) > 0)
            jobs_metrics_finished(c->kind, "cancelled", secs);
    } else {
        finish_failed(w, &ctx, out == JOBS_RETRY,
                      ctx.error[0] ? ctx.error
                                   : (out == JOBS_RETRY ? "failed (retryable)" : "failed"));
    }
    json_decref(result);
    atomic_store(&w->current_id, 0);
}

/* ---- claiming ---- */

static struct jobs_claimed *claimed_from(PGresult *res, int r, double now)
{
    struct jobs_claimed *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->id = db_get_int64(res, r, 0);
    c->kind = strdup(PQgetvalue(res, r, 1));
    c->args = json_loads(PQgetvalue(res, r, 2), 0, NULL);
    c->attempt = (int)db_get_int64(res, r, 3);
    c->max_attempts = (int)db_get_int64(res, r, 4);
    c->timeout_s = (int)db_get_int64(res, r, 5);
    c->created_by = strdup(PQgetvalue(res, r, 6));
    c->cancel = strcmp(PQgetvalue(res, r, 7), "t") == 0;
    c->claimed_at = now;
    if (!c->args)
        c->args = json_object();
    return c;
}

/* Push the claimed rows onto the local queue (caller does not hold pool.mu). */
static int push_claimed(PGresult *res, int rows, double now)
{
    int pushed = 0;
    pthread_mutex_lock(&pool.mu);
    if (pool.qhead == pool.qlen)
        pool.qhead = pool.qlen = 0;
    for (int r = 0; r < rows; r++) {
        struct jobs_claimed *c = claimed_from(res, r, now);
        if (!c)
            continue; /* out of memory: the lease runs out and the job is rescued */
        if (pool.qlen == pool.qcap) {
            size_t cap = pool.qcap ? pool.qcap * 2 : 64;
            struct jobs_claimed **nq = realloc(pool.q, cap * sizeof *nq);
            if (!nq) {
                claimed_free(c);
                continue;
            }
            pool.q = nq;
            pool.qcap = cap;
        }
        pool.q[pool.qlen++] = c;
        pushed++;
    }
    if (pushed > 1)
        pthread_cond_broadcast(&pool.cv);
    else
        pthread_cond_signal(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
    return pushed;
}

struct limited_claim {
    const char *key;
    int max_running, n;
    PGresult *res;
};

static int claim_limited_tx(struct db_conn *c, void *cls)
{
    struct limited_claim *lc = cls;
    int rc = jobs_store_lock_key(c, lc->key);
    if (rc < 0)
        return rc;
    PQclear(lc->res);
    lc->res = NULL;
    return jobs_store_claim_limited(c, lc->key, lc->max_running, pool.instance, jobs_cfg.lease_s,
                                    lc->n, &lc->res);
}

/* Claim up to `want` jobs into the local queue. Returns how many, or -1 when the state
 * store is away. */
static int fetch(struct jobs_worker *w, int want)
{
    struct db_conn *c = jobs_worker_db(w);
    if (!c)
        return -1;
    PGresult *res = NULL;
    double now = jobs_mono();
    int rows = jobs_store_claim(c, pool.instance, jobs_cfg.lease_s, want, &res);
    if (rows < 0)
        return -1;
    int got = rows ? push_claimed(res, rows, now) : 0;
    PQclear(res);
    if (rows >= want)
        return got;
    /* Jobs under a concurrency limit: one short transaction per key, serialized across
     * replicas by the key's advisory lock so that the running count cannot be raced. */
    PGresult *keys = NULL;
    int nkeys = jobs_store_limited_keys(c, 16, &keys);
    for (int i = 0; i < nkeys && got < want; i++) {
        struct limited_claim lc = {PQgetvalue(keys, i, 0), (int)db_get_int64(keys, i, 1),
                                   want - got, NULL};
        int n = db_tx(c, claim_limited_tx, &lc);
        if (n > 0)
            got += push_claimed(lc.res, n, jobs_mono());
        PQclear(lc.res);
    }
    PQclear(keys);
    atomic_store(&pool.limited_waiting, nkeys > 0);
    return got;
}

/* ---- the worker loop ---- */

/* Run the hot path's statements once with nothing to do (claim 0 jobs, complete none,
 * heartbeat no job), so that they are prepared and planned on this worker's connection
 * before the first real job instead of during it. */
static void warm_up(struct jobs_worker *w)
{
    struct db_conn *c = jobs_worker_db(w);
    if (!c)
        return; /* PostgreSQL is away: statements get prepared on first use */
    PGresult *res = NULL;
    (void)jobs_store_claim(c, pool.instance, jobs_cfg.lease_s, 0, &res);
    PQclear(res);
    (void)jobs_store_complete(c, pool.instance, "{}", "{}", "{}", NULL);
    int cancel = 0;
    (void)jobs_store_heartbeat(c, 0, pool.instance, 0, jobs_cfg.lease_s, &cancel);
}

/* With pool.mu held: complete the finished jobs collected so far, releasing the lock for the
 * database round trip. */
static void flush_done_locked(struct jobs_worker *w)
{
    size_t n;
    struct done *d = take_done(&n);
    pthread_mutex_unlock(&pool.mu);
    flush_done(w, d, n);
    pthread_mutex_lock(&pool.mu);
}

static void *worker_main(void *arg)
{
    struct jobs_worker *w = arg;
    warm_up(w);
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        if (atomic_load(&pool.stopping)) {
            if (pool.ndone) {
                flush_done_locked(w);
                continue;
            }
            break;
        }
        if (pool.qhead < pool.qlen) {
            struct jobs_claimed *c = pool.q[pool.qhead++];
            pool.running++;
            pthread_mutex_unlock(&pool.mu);
            run_one(w, c);
            claimed_free(c);
            pthread_mutex_lock(&pool.mu);
            pool.running--;
            /* Complete in batches: when the batch is drained (nothing running, nothing
             * queued) or the list is full. */
            if (pool.ndone && ((pool.qhead == pool.qlen && pool.running == 0) ||
                               pool.ndone >= (size_t)jobs_cfg.batch))
                flush_done_locked(w);
            continue;
        }
        if (!pool.fetching && pool.wake_gen != pool.fetched_gen) {
            uint64_t gen = pool.wake_gen;
            long want = (long)(pool.idle + 1) * jobs_cfg.prefetch;
            if (want > jobs_cfg.batch)
                want = jobs_cfg.batch;
            pool.fetching = 1;
            pthread_mutex_unlock(&pool.mu);
            int got = fetch(w, (int)want);
            pthread_mutex_lock(&pool.mu);
            pool.fetching = 0;
            /* A full batch means there may be more: fetch again when it is drained. A short
             * one (or an error: the state store is away, and the listener's 1 s tick
             * retries) means nothing more until the next wake-up. */
            if (got < want)
                pool.fetched_gen = gen;
            continue;
        }
        if (pool.ndone && pool.running > 0) {
            /* others still run jobs of this batch; complete ours soon anyway so that a long
             * job does not hold back the completion of short ones */
            struct timespec ts = deadline_after(CLOCK_REALTIME, 0.010);
            pool.idle++;
            int rc = pthread_cond_timedwait(&pool.cv, &pool.mu, &ts);
            pool.idle--;
            if (rc == ETIMEDOUT && pool.ndone)
                flush_done_locked(w);
            continue;
        }
        if (pool.ndone) {
            flush_done_locked(w);
            continue;
        }
        pool.idle++;
        pthread_cond_wait(&pool.cv, &pool.mu);
        pool.idle--;
    }
    pthread_mutex_unlock(&pool.mu);
    db_conn_close(w->db);
    w->db = NULL;
    atomic_store(&w->exited, 1);
    return NULL;
}

/* ---- life cycle ---- */

int jobs_pool_start(const char *instance, const struct db_settings *dbs, int nworkers,
                    int shutdown_timeout_s)
{
    snprintf(pool.instance, sizeof pool.instance, "%s", instance);
    pool.dbs = *dbs;
    pool.nworkers = nworkers;
    pool.shutdown_timeout_s = shutdown_timeout_s;
    pthread_mutex_lock(&pool.mu);
    pool.wake_gen = 1;
    pool.fetched_gen = 0;
    pthread_mutex_unlock(&pool.mu);
    atomic_store(&pool.stopping, 0);
    atomic_store(&pool.grace_ends, 0.0);
    atomic_store(&pool.hard_stop, 0);
    pool.workers = calloc((size_t)(nworkers > 0 ? nworkers : 1), sizeof *pool.workers);
    if (!pool.workers)
        return -1;
    pool.started = 1;
    for (int i = 0; i < nworkers; i++) {
        pool.workers[i].index = i;
        if (pthread_create(&pool.workers[i].thread, NULL, worker_main, &pool.workers[i]) != 0) {
            log_error("cannot start job worker %d", i);
            return -1;
        }
        pool.workers[i].started = 1;
    }
    return 0;
}

static void join_until(pthread_t t, double deadline_mono, int *joined)
{
    struct timespec ts = deadline_after(CLOCK_REALTIME, deadline_mono - jobs_mono());
    *joined = pthread_timedjoin_np(t, NULL, &ts) == 0;
}

void jobs_pool_quiesce(void)
{
    if (!pool.started || atomic_load(&pool.grace_ends) > 0)
        return;
    /* Running jobs get the shutdown timeout to finish, counted from the signal; then their
     * runners are told to stop (jobs_heartbeat returns -1) and the engine releases their
     * jobs for another replica. */
    atomic_store(&pool.grace_ends, jobs_mono() + (double)pool.shutdown_timeout_s);
    atomic_store(&pool.stopping, 1);
    pthread_mutex_lock(&pool.mu);
    pthread_cond_broadcast(&pool.cv);
    pthread_mutex_unlock(&pool.mu);
}

void jobs_pool_stop(void)
{
    if (!pool.started)
        return;
    jobs_pool_quiesce(); /* a stop without a signal first (start-up failed) */
    pool.started = 0;
    double grace = atomic_load(&pool.grace_ends);

    int stuck = 0;
    for (int i = 0; i < pool.nworkers && pool.workers; i++) {
        struct jobs_worker *w = &pool.workers[i];
        if (!w->started)
            continue;
        int joined = 0;
        join_until(w->thread, grace, &joined);
        if (!joined) {
            atomic_store(&pool.hard_stop, 1);
            join_until(w->thread, jobs_mono() + 5.0, &joined);
        }
        if (joined) {
            w->started = 0;
        } else {
            stuck++;
        }
    }

    /* What is still ours goes back: claimed jobs that never started, and the jobs of
     * runners that ignored the stop (their late writes are refused by the guards). */
    struct db_conn *c = db_conn_open(&pool.dbs);
    struct buf ids, atts;
    buf_init(&ids, 0);
    buf_init(&atts, 0);
    buf_puts(&ids, "{");
    buf_puts(&atts, "{");
    pthread_mutex_lock(&pool.mu);
    size_t unstarted = 0;
    for (size_t i = pool.qhead; i < pool.qlen; i++, unstarted++) {
        buf_printf(&ids, "%s%lld", unstarted ? "," : "", (long long)pool.q[i]->id);
        buf_printf(&atts, "%s%d", unstarted ? "," : "", pool.q[i]->attempt);
        claimed_free(pool.q[i]);
    }
    pool.qhead = pool.qlen = 0;
    size_t nd;
    struct done *d = take_done(&nd);
    pthread_mutex_unlock(&pool.mu);
    buf_puts(&ids, "}");
    buf_puts(&atts, "}");
    if (c && unstarted) {
        int rc = jobs_store_release_unstarted(c, pool.instance, ids.data, atts.data);
        log_event(LOG_INFO, "released claimed jobs that had not started",
                  json_pack("{s:i,s:i}", "jobs", (int)unstarted, "released", rc));
    }
    if (nd) { /* completions left by a worker that exited without flushing */
        struct jobs_worker tmp = {0};
        tmp.db = c;
        flush_done(&tmp, d, nd);
        c = tmp.db;
    } else {
        free(d);
    }
    for (int i = 0; i < pool.nworkers && pool.workers && c; i++) {
        struct jobs_worker *w = &pool.workers[i];
        long long id = atomic_load(&w->current_id);
        if (w->started && id) {
            (void)jobs_store_release_started(c, id, pool.instance, atomic_load(&w->current_attempt),
                                             "interrupted: the replica shut down; released");
            log_event(LOG_ERROR, "job runner did not stop; job released",
                      json_pack("{s:I}", "job_id", (json_int_t)id));
        }
    }
    buf_free(&ids);
    buf_free(&atts);
    db_conn_close(c);

    if (stuck) {
        /* A runner that ignores its stop cannot be joined; the process is exiting anyway.
         * Its worker struct stays allocated for it. */
        log_event(LOG_ERROR, "job workers did not stop", json_pack("{s:i}", "workers", stuck));
    } else {
        free(pool.workers);
    }
    pool.workers = NULL;
    free(pool.q);
    pool.q = NULL;
    pool.qcap = 0;
}
