/* Worker threads, the LISTEN thread and the maintenance thread of one replica.
 *
 * Workers share a small local queue: when it is empty, one idle worker claims a batch
 * (sized by the idle workers x QDB_JOB_PREFETCH, at most QDB_JOB_BATCH) in one statement and
 * the others take jobs from it; successes are completed in batches too. A claimed job is
 * held by this replica (worker_id = the instance id) under a lease that the maintenance
 * thread extends for every job the replica holds, and that runners' heartbeats extend too;
 * a job past its timeout is no longer extended, so a stuck runner loses it to the rescuer.
 *
 * Wake-ups: the LISTEN thread turns each job_events notification into a wake-up, and ticks
 * once a second for jobs whose run_at arrives (no other polling). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "jobs/jobs_internal.h"
#include "platform/log.h"
#include "platform/metrics.h"

struct claimed {
    int64_t id;
    int attempt, max_attempts, timeout_s, cancel;
    char *kind, *created_by;
    json_t *args;
    double claimed_at; /* monotonic seconds */
};

struct done {
    int64_t id;
    int attempt;
    char *result; /* JSON text or NULL */
    int kind_index;
    double secs;
};

struct worker {
    int index;
    pthread_t thread;
    int started;
    atomic_int exited;
    struct db_conn *db;
    atomic_llong current_id; /* job being run, 0 when none (for the stop path) */
    atomic_int current_attempt;
};

struct jobs_ctx {
    struct worker *w;
    struct claimed *job;
    const struct jobs_kind *k;
    double start, deadline, last_hb, lease_ok_until;
    int cancel_seen, lease_lost, timed_out, shutdown_stop;
    char error[1024];
};

static struct {
    char instance[128];
    struct db_settings dbs;
    int nworkers;
    struct worker *workers;
    int shutdown_timeout_s;
    pthread_t listener, maint;
    int listener_started, maint_started;

    pthread_mutex_t mu;
    pthread_cond_t cv;      /* workers: work, completions or stop */
    pthread_cond_t tick_cv; /* listener and maintenance: stop */
    uint64_t wake_gen, fetched_gen;
    int fetching, idle, running;
    struct claimed **q;
    size_t qhead, qlen, qcap;
    struct done *d;
    size_t ndone, dcap;

    atomic_int stopping;        /* no new claims */
    atomic_int hard_stop;       /* runners must stop now */
    atomic_int threads_stop;    /* listener and maintenance end */
    _Atomic double ext_ok;      /* monotonic start of the last successful lease extension */
    atomic_int limited_waiting; /* the last claim saw jobs waiting for a concurrency slot */
} E = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .cv = PTHREAD_COND_INITIALIZER,
       .tick_cv = PTHREAD_COND_INITIALIZER};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* How long after its last confirmed renewal we still trust a lease: a margin below the
 * lease so that we stop before a rescuer on another replica could start. */
static double lease_trust(void)
{
    return (double)jobs_cfg.lease_s * 0.8;
}

static void claimed_free(struct claimed *c)
{
    if (!c)
        return;
    free(c->kind);
    free(c->created_by);
    json_decref(c->args);
    free(c);
}

/* A usable connection for `w`, (re)connecting when needed; NULL when PostgreSQL is away. */
static struct db_conn *worker_db(struct worker *w)
{
    if (!w->db) {
        w->db = db_conn_open(&E.dbs);
        return w->db;
    }
    return db_conn_check(w->db) == 0 ? w->db : NULL;
}

void jobs_workers_wake(void)
{
    /* One idle worker is enough: it claims, and wakes others only for what it claimed.
     * Waking all of them on every notification would have them fight over two cores. */
    pthread_mutex_lock(&E.mu);
    E.wake_gen++;
    pthread_cond_signal(&E.cv);
    pthread_mutex_unlock(&E.mu);
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
    char state[16];
};

static int op_run(struct db_conn *c, struct op *o)
{
    switch (o->kind) {
    case OP_COMPLETE:
        return jobs_store_complete(c, E.instance, o->ids, o->attempts, o->results);
    case OP_FAIL:
        return jobs_store_fail(c, o->id, E.instance, o->attempt, o->retryable, o->delay_ms,
                               o->message, o->state);
    case OP_CANCELLED:
        return jobs_store_cancelled(c, o->id, E.instance, o->attempt);
    case OP_RELEASE_STARTED:
        return jobs_store_release_started(c, o->id, E.instance, o->attempt, o->message);
    case OP_RELEASE_UNSTARTED:
        return jobs_store_release_unstarted(c, E.instance, o->ids, o->attempts);
    }
    return DB_HARD;
}

/* Retry through a lost connection (PostgreSQL restarting) for as long as our lease can
 * still be trusted: the statements are guarded, so running one twice is harmless. */
static int op_until(struct worker *w, struct op *o, double until)
{
    int rc = DB_RETRY;
    for (;;) {
        struct db_conn *c = worker_db(w);
        if (c) {
            rc = op_run(c, o);
            if (rc != DB_RETRY)
                return rc;
        }
        if (mono() >= until)
            return rc;
        sleep_s(0.2);
    }
}

/* ---- completions ---- */

/* Complete the successes in `d` (taken from the shared list) in one statement. */
static void flush_done(struct worker *w, struct done *d, size_t n)
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
        int rc = op_until(w, &o, mono() + lease_trust());
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

/* Take the pending completions (caller holds E.mu). */
static struct done *take_done(size_t *n)
{
    struct done *d = E.d;
    *n = E.ndone;
    E.d = NULL;
    E.ndone = E.dcap = 0;
    return d;
}

static void add_done(struct claimed *c, int kind_index, json_t *result, double secs)
{
    struct done one = {c->id, c->attempt,
                       result ? json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY) : NULL,
                       kind_index, secs};
    pthread_mutex_lock(&E.mu);
    if (E.ndone == E.dcap) {
        size_t cap = E.dcap ? E.dcap * 2 : 64;
        struct done *nd = realloc(E.d, cap * sizeof *nd);
        if (!nd) {
            pthread_mutex_unlock(&E.mu);
            free(one.result);
            log_error("out of memory recording a completion; job %lld will be rescued",
                      (long long)c->id);
            return;
        }
        E.d = nd;
        E.dcap = cap;
    }
    E.d[E.ndone++] = one;
    pthread_mutex_unlock(&E.mu);
}

/* ---- running one job ---- */

static void finish_failed(struct worker *w, struct jobs_ctx *ctx, int retryable, const char *why)
{
    struct claimed *c = ctx->job;
    uint64_t rnd = 0;
    RAND_bytes((unsigned char *)&rnd, sizeof rnd);
    int64_t delay =
        jobs_backoff_ms(c->attempt, jobs_cfg.backoff_base_ms, jobs_cfg.backoff_max_s * 1000, rnd);
    struct op o = {.kind = OP_FAIL,
                   .id = c->id,
                   .attempt = c->attempt,
                   .retryable = retryable,
                   .delay_ms = delay,
                   .message = why};
    int rc = op_until(w, &o, ctx->lease_ok_until);
    double secs = mono() - ctx->start;
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

static void run_one(struct worker *w, struct claimed *c)
{
    double now = mono();
    double renewed = atomic_load(&E.ext_ok);
    if (now > (renewed > c->claimed_at ? renewed : c->claimed_at) + lease_trust()) {
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
                           .lease_ok_until = now + lease_trust()};
    ctx.deadline = now + (double)c->timeout_s;
    if (c->cancel) {
        struct op o = {.kind = OP_CANCELLED, .id = c->id, .attempt = c->attempt};
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
    double secs = mono() - ctx.start;
    if (ctx.lease_lost) {
        log_event(LOG_WARN, "job finished after its lease was lost; result dropped",
                  json_pack("{s:I,s:s}", "job_id", (json_int_t)c->id, "kind", c->kind));
    } else if (out == JOBS_OK) {
        add_done(c, jobs_kind_index(c->kind), result, secs);
    } else if (ctx.shutdown_stop || atomic_load(&E.hard_stop)) {
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
        struct op o = {.kind = OP_CANCELLED, .id = c->id, .attempt = c->attempt};
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

static struct claimed *claimed_from(PGresult *res, int r, double now)
{
    struct claimed *c = calloc(1, sizeof *c);
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

/* Push the claimed rows onto the local queue (caller does not hold E.mu). */
static int push_claimed(PGresult *res, int rows, double now)
{
    int pushed = 0;
    pthread_mutex_lock(&E.mu);
    if (E.qhead == E.qlen)
        E.qhead = E.qlen = 0;
    for (int r = 0; r < rows; r++) {
        struct claimed *c = claimed_from(res, r, now);
        if (!c)
            continue; /* out of memory: the lease runs out and the job is rescued */
        if (E.qlen == E.qcap) {
            size_t cap = E.qcap ? E.qcap * 2 : 64;
            struct claimed **nq = realloc(E.q, cap * sizeof *nq);
            if (!nq) {
                claimed_free(c);
                continue;
            }
            E.q = nq;
            E.qcap = cap;
        }
        E.q[E.qlen++] = c;
        pushed++;
    }
    if (pushed > 1)
        pthread_cond_broadcast(&E.cv);
    else
        pthread_cond_signal(&E.cv);
    pthread_mutex_unlock(&E.mu);
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
    return jobs_store_claim_limited(c, lc->key, lc->max_running, E.instance, jobs_cfg.lease_s,
                                    lc->n, &lc->res);
}

/* Claim up to `want` jobs into the local queue. Returns how many, or -1 when the state
 * store is away. */
static int fetch(struct worker *w, int want)
{
    struct db_conn *c = worker_db(w);
    if (!c)
        return -1;
    PGresult *res = NULL;
    double now = mono();
    int rows = jobs_store_claim(c, E.instance, jobs_cfg.lease_s, want, &res);
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
            got += push_claimed(lc.res, n, mono());
        PQclear(lc.res);
    }
    PQclear(keys);
    atomic_store(&E.limited_waiting, nkeys > 0);
    return got;
}

/* ---- the worker loop ---- */

/* Run the hot path's statements once with nothing to do (claim 0 jobs, complete none,
 * heartbeat no job), so that they are prepared and planned on this worker's connection
 * before the first real job instead of during it. */
static void warm_up(struct worker *w)
{
    struct db_conn *c = worker_db(w);
    if (!c)
        return; /* PostgreSQL is away: statements get prepared on first use */
    PGresult *res = NULL;
    (void)jobs_store_claim(c, E.instance, jobs_cfg.lease_s, 0, &res);
    PQclear(res);
    (void)jobs_store_complete(c, E.instance, "{}", "{}", "{}");
    int cancel = 0;
    (void)jobs_store_heartbeat(c, 0, E.instance, 0, jobs_cfg.lease_s, &cancel);
}

/* With E.mu held: complete the finished jobs collected so far, releasing the lock for the
 * database round trip. */
static void flush_done_locked(struct worker *w)
{
    size_t n;
    struct done *d = take_done(&n);
    pthread_mutex_unlock(&E.mu);
    flush_done(w, d, n);
    pthread_mutex_lock(&E.mu);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    warm_up(w);
    pthread_mutex_lock(&E.mu);
    for (;;) {
        if (atomic_load(&E.stopping)) {
            if (E.ndone) {
                flush_done_locked(w);
                continue;
            }
            break;
        }
        if (E.qhead < E.qlen) {
            struct claimed *c = E.q[E.qhead++];
            E.running++;
            pthread_mutex_unlock(&E.mu);
            run_one(w, c);
            claimed_free(c);
            pthread_mutex_lock(&E.mu);
            E.running--;
            /* Complete in batches: when the batch is drained (nothing running, nothing
             * queued) or the list is full. */
            if (E.ndone &&
                ((E.qhead == E.qlen && E.running == 0) || E.ndone >= (size_t)jobs_cfg.batch))
                flush_done_locked(w);
            continue;
        }
        if (!E.fetching && E.wake_gen != E.fetched_gen) {
            uint64_t gen = E.wake_gen;
            long want = (long)(E.idle + 1) * jobs_cfg.prefetch;
            if (want > jobs_cfg.batch)
                want = jobs_cfg.batch;
            E.fetching = 1;
            pthread_mutex_unlock(&E.mu);
            int got = fetch(w, (int)want);
            pthread_mutex_lock(&E.mu);
            E.fetching = 0;
            /* A full batch means there may be more: fetch again when it is drained. A short
             * one (or an error: the state store is away, and the listener's 1 s tick
             * retries) means nothing more until the next wake-up. */
            if (got < want)
                E.fetched_gen = gen;
            continue;
        }
        if (E.ndone && E.running > 0) {
            /* others still run jobs of this batch; complete ours soon anyway so that a long
             * job does not hold back the completion of short ones */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 10 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            E.idle++;
            int rc = pthread_cond_timedwait(&E.cv, &E.mu, &ts);
            E.idle--;
            if (rc == ETIMEDOUT && E.ndone)
                flush_done_locked(w);
            continue;
        }
        if (E.ndone) {
            flush_done_locked(w);
            continue;
        }
        E.idle++;
        pthread_cond_wait(&E.cv, &E.mu);
        E.idle--;
    }
    pthread_mutex_unlock(&E.mu);
    db_conn_close(w->db);
    w->db = NULL;
    atomic_store(&w->exited, 1);
    return NULL;
}

/* ---- the runner's side ---- */

int jobs_heartbeat(struct jobs_ctx *ctx)
{
    if (ctx->lease_lost || ctx->cancel_seen || ctx->timed_out || ctx->shutdown_stop)
        return -1;
    if (atomic_load(&E.hard_stop)) {
        ctx->shutdown_stop = 1;
        return -1;
    }
    double now = mono();
    if (now >= ctx->deadline) {
        ctx->timed_out = 1;
        return -1;
    }
    double interval = (double)jobs_cfg.lease_s / 3.0;
    if (interval > 1.0)
        interval = 1.0;
    if (now - ctx->last_hb < interval)
        return 0;
    ctx->last_hb = now;
    double renewed = atomic_load(&E.ext_ok) + lease_trust();
    if (renewed > ctx->lease_ok_until)
        ctx->lease_ok_until = renewed;
    struct db_conn *c = worker_db(ctx->w);
    /* Inside the runner's own transaction a heartbeat would commit or roll back with it:
     * skip the round trip then; the replica-wide renewal keeps the lease meanwhile. */
    if (c && PQtransactionStatus(db_pgconn(c)) == PQTRANS_IDLE) {
        int cancel = 0;
        int rc = jobs_store_heartbeat(c, ctx->job->id, E.instance, ctx->job->attempt,
                                      jobs_cfg.lease_s, &cancel);
        if (rc == 0) {
            ctx->lease_lost = 1;
            return -1;
        }
        if (rc > 0) {
            ctx->lease_ok_until = now + lease_trust();
            if (cancel) {
                ctx->cancel_seen = 1;
                return -1;
            }
            return 0;
        }
    }
    if (now > ctx->lease_ok_until) {
        ctx->lease_lost = 1; /* unconfirmed for too long: assume another replica has it */
        return -1;
    }
    return 0;
}

int jobs_progress(struct jobs_ctx *ctx, int percent, const char *msg)
{
    if (percent < 0)
        percent = 0;
    if (percent > 100)
        percent = 100;
    struct db_conn *c = worker_db(ctx->w);
    if (c && PQtransactionStatus(db_pgconn(c)) == PQTRANS_IDLE) {
        int cancel = 0;
        int rc = jobs_store_progress(c, ctx->job->id, E.instance, ctx->job->attempt,
                                     jobs_cfg.lease_s, percent, msg, &cancel);
        if (rc == 0) {
            ctx->lease_lost = 1;
            return -1;
        }
        if (rc > 0) {
            ctx->last_hb = mono();
            ctx->lease_ok_until = ctx->last_hb + lease_trust();
            if (cancel)
                ctx->cancel_seen = 1;
        }
    }
    return jobs_heartbeat(ctx);
}

void jobs_log(struct jobs_ctx *ctx, const char *level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    const char *lv = "info";
    for (int i = 0; i < 4; i++)
        if (level && strcmp(level, levels[i]) == 0)
            lv = levels[i];
    /* A log line is worth a short wait through a PostgreSQL restart, not a lost lease. */
    double until = mono() + 5.0;
    for (;;) {
        struct db_conn *c = worker_db(ctx->w);
        int rc = c ? jobs_store_log(c, ctx->job->id, lv, msg) : DB_RETRY;
        if (rc != DB_RETRY || mono() >= until || atomic_load(&E.hard_stop))
            break;
        sleep_s(0.2);
    }
}

void jobs_error(struct jobs_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
    va_end(ap);
}

int64_t jobs_id(const struct jobs_ctx *ctx)
{
    return ctx->job->id;
}

int jobs_attempt(const struct jobs_ctx *ctx)
{
    return ctx->job->attempt;
}

const char *jobs_created_by(const struct jobs_ctx *ctx)
{
    return ctx->job->created_by;
}

struct db_conn *jobs_db(struct jobs_ctx *ctx)
{
    return worker_db(ctx->w);
}

/* ---- the LISTEN thread ---- */

static int timed_wait_tick(double secs)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long ns = ts.tv_nsec + (long)(secs * 1e9);
    ts.tv_sec += ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    pthread_mutex_lock(&E.mu);
    if (!atomic_load(&E.threads_stop))
        pthread_cond_timedwait(&E.tick_cv, &E.mu, &ts);
    pthread_mutex_unlock(&E.mu);
    return atomic_load(&E.threads_stop);
}

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
    return atomic_load(&E.limited_waiting) &&
           (strstr(payload, ":succeeded") || strstr(payload, ":failed") ||
            strstr(payload, ":cancelled"));
}

static void *listener_main(void *arg)
{
    (void)arg;
    struct db_conn *c = NULL;
    double last_tick = 0, last_try = 0;
    while (!atomic_load(&E.threads_stop)) {
        double now = mono();
        if (now - last_tick >= 1.0) {
            last_tick = now;
            jobs_workers_wake(); /* the run_at timer: jobs whose time came */
        }
        jobs_events_tick();
        if (!c && now - last_try >= 1.0) {
            last_try = now;
            c = db_conn_open(&E.dbs);
            if (c && db_exec_fixed(c, "LISTEN job_events") < 0) {
                db_conn_close(c);
                c = NULL;
            }
            if (c)
                jobs_workers_wake(); /* notifications may have been missed meanwhile */
        }
        if (!c) {
            timed_wait_tick(0.25);
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

/* ---- the maintenance thread: leases, rescue, gauges ---- */

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
    double last_ext = 0, last_rescue = 0, last_stats = 0;
    double ext_every = (double)jobs_cfg.lease_s / 3.0;
    double rescue_every = (double)jobs_cfg.lease_s / 4.0;
    if (rescue_every < 0.5)
        rescue_every = 0.5;
    if (rescue_every > 5)
        rescue_every = 5;
    for (;;) {
        double now = mono();
        if (!c)
            c = db_conn_open(&E.dbs);
        else if (db_conn_check(c) != 0) {
            db_conn_close(c);
            c = NULL;
        }
        if (c && now - last_ext >= ext_every) {
            if (jobs_store_extend_leases(c, E.instance, jobs_cfg.lease_s) >= 0) {
                last_ext = now;
                atomic_store(&E.ext_ok, now);
            }
        }
        if (c && now - last_rescue >= rescue_every && !atomic_load(&E.stopping)) {
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
        if (timed_wait_tick(0.25))
            break;
    }
    db_conn_close(c);
    return NULL;
}

/* ---- life cycle ---- */

int jobs_workers_start(const char *instance, const struct db_settings *dbs, int nworkers,
                       int shutdown_timeout_s)
{
    snprintf(E.instance, sizeof E.instance, "%s", instance);
    E.dbs = *dbs;
    E.nworkers = nworkers;
    E.shutdown_timeout_s = shutdown_timeout_s;
    E.wake_gen = 1;
    E.fetched_gen = 0;
    atomic_store(&E.stopping, 0);
    atomic_store(&E.hard_stop, 0);
    atomic_store(&E.threads_stop, 0);
    atomic_store(&E.ext_ok, mono());
    if (pthread_create(&E.maint, NULL, maint_main, NULL) != 0)
        return -1;
    E.maint_started = 1;
    if (pthread_create(&E.listener, NULL, listener_main, NULL) != 0)
        return -1;
    E.listener_started = 1;
    E.workers = calloc((size_t)(nworkers > 0 ? nworkers : 1), sizeof *E.workers);
    if (!E.workers)
        return -1;
    for (int i = 0; i < nworkers; i++) {
        E.workers[i].index = i;
        if (pthread_create(&E.workers[i].thread, NULL, worker_main, &E.workers[i]) != 0) {
            log_error("cannot start job worker %d", i);
            return -1;
        }
        E.workers[i].started = 1;
    }
    return 0;
}

static void join_until(pthread_t t, double deadline_mono, int *joined)
{
    double left = deadline_mono - mono();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (left < 0)
        left = 0;
    long ns = ts.tv_nsec + (long)((left - (double)(long)left) * 1e9);
    ts.tv_sec += (time_t)left + ns / 1000000000L;
    ts.tv_nsec = ns % 1000000000L;
    *joined = pthread_timedjoin_np(t, NULL, &ts) == 0;
}

void jobs_workers_stop(void)
{
    atomic_store(&E.stopping, 1);
    pthread_mutex_lock(&E.mu);
    pthread_cond_broadcast(&E.cv);
    pthread_mutex_unlock(&E.mu);

    /* Running jobs get the shutdown timeout to finish; then their runners are told to stop
     * (jobs_heartbeat returns -1) and the engine releases their jobs for another replica. */
    double grace = mono() + (double)E.shutdown_timeout_s;
    int stuck = 0;
    for (int i = 0; i < E.nworkers && E.workers; i++) {
        struct worker *w = &E.workers[i];
        if (!w->started)
            continue;
        int joined = 0;
        join_until(w->thread, grace, &joined);
        if (!joined) {
            atomic_store(&E.hard_stop, 1);
            join_until(w->thread, mono() + 5.0, &joined);
        }
        if (joined) {
            w->started = 0;
        } else {
            stuck++;
        }
    }

    /* What is still ours goes back: claimed jobs that never started, and the jobs of
     * runners that ignored the stop (their late writes are refused by the guards). */
    struct db_conn *c = db_conn_open(&E.dbs);
    struct buf ids, atts;
    buf_init(&ids, 0);
    buf_init(&atts, 0);
    buf_puts(&ids, "{");
    buf_puts(&atts, "{");
    pthread_mutex_lock(&E.mu);
    size_t unstarted = 0;
    for (size_t i = E.qhead; i < E.qlen; i++, unstarted++) {
        buf_printf(&ids, "%s%lld", unstarted ? "," : "", (long long)E.q[i]->id);
        buf_printf(&atts, "%s%d", unstarted ? "," : "", E.q[i]->attempt);
        claimed_free(E.q[i]);
    }
    E.qhead = E.qlen = 0;
    size_t nd;
    struct done *d = take_done(&nd);
    pthread_mutex_unlock(&E.mu);
    buf_puts(&ids, "}");
    buf_puts(&atts, "}");
    if (c && unstarted) {
        int rc = jobs_store_release_unstarted(c, E.instance, ids.data, atts.data);
        log_event(LOG_INFO, "released claimed jobs that had not started",
                  json_pack("{s:i,s:i}", "jobs", (int)unstarted, "released", rc));
    }
    if (nd) { /* completions left by a worker that exited without flushing */
        struct worker tmp = {0};
        tmp.db = c;
        flush_done(&tmp, d, nd);
        c = tmp.db;
    } else {
        free(d);
    }
    for (int i = 0; i < E.nworkers && E.workers && c; i++) {
        struct worker *w = &E.workers[i];
        long long id = atomic_load(&w->current_id);
        if (w->started && id) {
            (void)jobs_store_release_started(c, id, E.instance, atomic_load(&w->current_attempt),
                                             "interrupted: the replica shut down; released");
            log_event(LOG_ERROR, "job runner did not stop; job released",
                      json_pack("{s:I}", "job_id", (json_int_t)id));
        }
    }
    buf_free(&ids);
    buf_free(&atts);
    db_conn_close(c);

    atomic_store(&E.threads_stop, 1);
    pthread_mutex_lock(&E.mu);
    pthread_cond_broadcast(&E.tick_cv);
    pthread_mutex_unlock(&E.mu);
    if (E.listener_started)
        pthread_join(E.listener, NULL);
    if (E.maint_started)
        pthread_join(E.maint, NULL);
    E.listener_started = E.maint_started = 0;
    if (stuck) {
        /* A runner that ignores its stop cannot be joined; the process is exiting anyway.
         * Its worker struct stays allocated for it. */
        log_event(LOG_ERROR, "job workers did not stop", json_pack("{s:i}", "workers", stuck));
    } else {
        free(E.workers);
    }
    E.workers = NULL;
    free(E.q);
    E.q = NULL;
    E.qcap = 0;
}
