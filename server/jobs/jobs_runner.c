/* The runner's side of the engine (jobs.h, "inside a runner"): heartbeats and progress
 * that extend the job's lease and report a cancel, the job's log, its error, and the
 * worker's connection for the runner's own transactions. No state of its own: each call
 * works on the job's context (struct jobs_ctx) on the runner's worker thread. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "jobs/jobs_internal.h"
#include "platform/utf8.h"

int jobs_heartbeat(struct jobs_ctx *ctx)
{
    if (ctx->lease_lost || ctx->cancel_seen || ctx->timed_out || ctx->shutdown_stop)
        return -1;
    if (jobs_pool_hard_stopping()) {
        ctx->shutdown_stop = 1;
        return -1;
    }
    double now = jobs_mono();
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
    double renewed = jobs_lease_confirmed_at() + jobs_lease_trust_s();
    if (renewed > ctx->lease_ok_until)
        ctx->lease_ok_until = renewed;
    struct db_conn *c = jobs_worker_db(ctx->w);
    /* Inside the runner's own transaction a heartbeat would commit or roll back with it:
     * skip the round trip then; the replica-wide renewal keeps the lease meanwhile. */
    if (c && PQtransactionStatus(db_pgconn(c)) == PQTRANS_IDLE) {
        int cancel = 0;
        int rc = jobs_store_heartbeat(c, ctx->job->id, jobs_pool_instance(), ctx->job->attempt,
                                      jobs_cfg.lease_s, &cancel);
        if (rc == 0) {
            ctx->lease_lost = 1;
            return -1;
        }
        if (rc > 0) {
            ctx->lease_ok_until = now + jobs_lease_trust_s();
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
    struct db_conn *c = jobs_worker_db(ctx->w);
    if (c && PQtransactionStatus(db_pgconn(c)) == PQTRANS_IDLE) {
        int cancel = 0;
        int rc = jobs_store_progress(c, ctx->job->id, jobs_pool_instance(), ctx->job->attempt,
                                     jobs_cfg.lease_s, percent, msg, &cancel);
        if (rc == 0) {
            ctx->lease_lost = 1;
            return -1;
        }
        if (rc > 0) {
            ctx->last_hb = jobs_mono();
            ctx->lease_ok_until = ctx->last_hb + jobs_lease_trust_s();
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
    /* a tool's output, a file name, or a line cut short inside a character: PostgreSQL
     * would refuse the row, and the line would be lost */
    utf8_scrub(msg);
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    const char *lv = "info";
    for (int i = 0; i < 4; i++)
        if (level && strcmp(level, levels[i]) == 0)
            lv = levels[i];
    /* A log line is worth a short wait through a PostgreSQL restart, not a lost lease. */
    double until = jobs_mono() + 5.0;
    for (;;) {
        struct db_conn *c = jobs_worker_db(ctx->w);
        int rc = c ? jobs_store_log(c, ctx->job->id, lv, msg) : DB_RETRY;
        if (rc != DB_RETRY || jobs_mono() >= until || jobs_pool_stop_due())
            break;
        nanosleep(&(struct timespec){0, 200 * 1000000L}, NULL);
    }
}

void jobs_error(struct jobs_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->error, sizeof ctx->error, fmt, ap);
    va_end(ap);
    utf8_scrub(ctx->error);
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
    return jobs_worker_db(ctx->w);
}
