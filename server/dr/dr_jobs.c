/* The DR room's runners of failover and switchover (dr.failover, dr.switchover), with
 * Patroni's semantics: a failover promotes the standby now, fencing the old primary where
 * it still answers; a switchover is refused while the primary is unhealthy or the standby
 * lags beyond max_lag_bytes, waits for zero lag after fencing, stops the old primary,
 * promotes, and turns the old primary into a standby of the new one (pg_rewind, or a fresh
 * pg_basebackup -R when the rewind fails), so that the pair is whole again.
 *
 * Fencing is default_transaction_read_only (ALTER SYSTEM + reload) and the end of every
 * client session: a client that asks for a read-write transaction explicitly is not stopped
 * by it, which is why a switchover also stops the old primary before it promotes.
 *
 * Each step is written to the history row (dr_failover.steps) and the job's log as it
 * happens; the inventory's swap of primary and standby, its audit record and its event
 * commit in one transaction with the measured RTO. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "audit/audit.h"
#include "dr/dr_internal.h"
#include "inventory/inventory.h"
#include "platform/log.h"

#define PROBE_TIMEOUT_S 3
#define PROMOTE_WAIT_S 60
#define CATCHUP_WAIT_S 60
#define STREAM_WAIT_S 120

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* What a job does, the system does: the request that started it was recorded with its
 * caller; the name keeps who that was. */
static struct audit_actor job_actor(struct jobs_ctx *ctx)
{
    struct audit_actor a = {
        .subject = "system", .name = jobs_created_by(ctx), .auth_method = "system"};
    return a;
}

int dr_enqueue(struct db_conn *c, const char *kind, json_t *args, const char *created_by,
               int64_t *job_id)
{
    struct jobs_new j = {.kind = kind, .args = args, .created_by = created_by};
    return jobs_enqueue(c, &j, job_id, NULL);
}

/* ---- one failover or switchover ---- */

struct op {
    struct jobs_ctx *ctx;
    int64_t id;
    int switchover;
    const char *kind; /* "failover" / "switchover" */
    struct inventory_database db;
};

static void step(struct op *o, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void step(struct op *o, const char *name, const char *fmt, ...)
{
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    jobs_log(o->ctx, "info", "%s: %s", name, detail);
    if (dr_store_failover_step(jobs_db(o->ctx), o->id, name, detail) < 0)
        jobs_log(o->ctx, "warn", "state store: could not record step %s", name);
}

static void measure(struct op *o, json_t *m)
{
    if (dr_store_failover_measure(jobs_db(o->ctx), o->id, m) < 0)
        jobs_log(o->ctx, "warn", "state store: could not record the measurements");
    json_decref(m);
}

struct finish_tx {
    struct op *o;
    const char *state, *error, *action, *verb;
};

static int finish_fn(struct db_conn *c, void *cls)
{
    struct finish_tx *t = cls;
    int rc = dr_store_failover_finish(c, t->o->id, t->state, t->error);
    if (rc < 0)
        return rc;
    json_t *doc = NULL;
    if (dr_store_failover_get(c, t->o->id, &doc) < 0)
        return DB_HARD;
    char rid[32], subject[64];
    snprintf(rid, sizeof rid, "%lld", (long long)t->o->id);
    snprintf(subject, sizeof subject, "databases/%lld", (long long)t->o->db.id);
    struct audit_actor actor = job_actor(t->o->ctx);
    struct audit_entry e = {.action = t->action,
                            .resource_type = "dr_failover",
                            .resource_id = rid,
                            .environment = t->o->db.environment,
                            .after = doc,
                            .job_id = jobs_id(t->o->ctx)};
    rc = audit_record(c, &actor, NULL, NULL, &e);
    if (rc >= 0)
        rc = audit_event_emit(
            c, &actor,
            &(struct audit_event){.room = "dr", .verb = t->verb, .subject = subject, .data = doc});
    json_decref(doc);
    return rc;
}

/* The attempt failed: the row says why, audited, with an event. */
static enum jobs_outcome op_fail(struct op *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static enum jobs_outcome op_fail(struct op *o, const char *fmt, ...)
{
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    jobs_error(o->ctx, "%s", why);
    char action[48], verb[48];
    snprintf(action, sizeof action, "%s.fail", o->kind);
    snprintf(verb, sizeof verb, "%s_failed", o->kind);
    struct finish_tx t = {o, "failed", why, action, verb};
    if (db_tx(jobs_db(o->ctx), finish_fn, &t) < 0)
        jobs_log(o->ctx, "error", "state store: could not record the failure of %s %lld", o->kind,
                 (long long)o->id);
    return JOBS_FAIL;
}

/* ---- fencing ---- */

static const char fence_sql[] = "ALTER SYSTEM SET default_transaction_read_only = on";
static const char unfence_sql[] = "ALTER SYSTEM RESET default_transaction_read_only";
/* every client session but ours; walsenders stay, so that the standby receives the rest */
static const char end_sessions_sql[] =
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> "
    "pg_backend_pid() AND backend_type = 'client backend'";

static int fence(struct op *o, PGconn *pg, char *err, size_t errlen)
{
    char n[32];
    if (dr_pg_command(pg, fence_sql, err, errlen) != 0 ||
        dr_pg_command(pg, "SELECT pg_reload_conf()", err, errlen) != 0 ||
        dr_pg_value(pg, end_sessions_sql, n, sizeof n, err, errlen) < 0)
        return -1;
    step(o, "fence",
         "old primary %s:%d read-only (default_transaction_read_only), %s client "
         "sessions ended",
         o->db.primary.host, o->db.primary.port, n);
    return 0;
}

static void unfence(struct op *o, PGconn *pg)
{
    char err[300];
    if (dr_pg_command(pg, unfence_sql, err, sizeof err) != 0 ||
        dr_pg_command(pg, "SELECT pg_reload_conf()", err, sizeof err) != 0)
        jobs_log(o->ctx, "error", "could not lift the fence of %s:%d: %s", o->db.primary.host,
                 o->db.primary.port, err);
    else
        step(o, "unfence",
             "the switchover stopped before promotion: the old primary takes "
             "writes again");
}

/* ---- promotion, write check, the inventory ---- */

struct promoted_tx {
    struct op *o;
    double rto_s;
    int swapped;
};

static int promoted_fn(struct db_conn *c, void *cls)
{
    struct promoted_tx *t = cls;
    struct op *o = t->o;
    int rc = dr_store_failover_write_accepted(c, o->id, &t->rto_s);
    if (rc < 0)
        return rc;
    json_t *before = NULL, *after = NULL;
    rc = inventory_database_swap_roles(c, o->db.id, &before, &after);
    if (rc < 0)
        return rc;
    t->swapped = rc;
    if (rc == 0) /* the row lost its standby meanwhile: the caller says so */
        return 0;
    if (!o->switchover && (rc = dr_store_failover_finish(c, o->id, "succeeded", NULL)) < 0)
        goto out;
    json_t *doc = NULL;
    if ((rc = dr_store_failover_get(c, o->id, &doc)) < 0)
        goto out;
    char rid[32], subject[64], action[48];
    snprintf(rid, sizeof rid, "%lld", (long long)o->db.id);
    snprintf(subject, sizeof subject, "databases/%lld", (long long)o->db.id);
    snprintf(action, sizeof action, "database.%s", o->kind);
    struct audit_actor actor = job_actor(o->ctx);
    struct audit_entry e = {.action = action,
                            .resource_type = "database",
                            .resource_id = rid,
                            .environment = o->db.environment,
                            .before = before,
                            .after = after,
                            .job_id = jobs_id(o->ctx)};
    rc = audit_record(c, &actor, NULL, NULL, &e);
    if (rc >= 0)
        rc = audit_event_emit(
            c, &actor,
            &(struct audit_event){.room = "dr",
                                  .verb = o->switchover ? "switched_over" : "failed_over",
                                  .subject = subject,
                                  .data = doc});
    json_decref(doc);
out:
    json_decref(before);
    json_decref(after);
    return rc;
}

/* Promote the standby on `pg` and wait for its first accepted write; the last LSN it
 * replayed into *replayed. 0, or -1 with err. */
static int promote(struct op *o, PGconn *pg, uint64_t *replayed, char *err, size_t errlen)
{
    char v[64];
    int rc = dr_pg_value(pg, "SELECT pg_promote(wait => true, wait_seconds => 60)", v, sizeof v,
                         err, errlen);
    if (rc < 0)
        return -1;
    if (strcmp(v, "t") != 0) {
        snprintf(err, errlen, "pg_promote did not finish within %d s", PROMOTE_WAIT_S);
        return -1;
    }
    if (dr_store_failover_promoted(jobs_db(o->ctx), o->id) < 0)
        jobs_log(o->ctx, "warn", "state store: could not record the promotion time");
    /* recovery has ended: the replay position stays where recovery stopped */
    if (dr_pg_value(pg, "SELECT pg_last_wal_replay_lsn()::text", v, sizeof v, err, errlen) > 0)
        dr_lsn_parse(v, replayed);
    step(o, "promote", "pg_promote on %s:%d returned; recovery ended at %s", o->db.standby.host,
         o->db.standby.port, v);
    /* a standby copied from a fenced primary (pg_basebackup, or pg_rewind with nothing to
     * rewind) carries the fence in its postgresql.auto.conf: the new primary must not */
    if (dr_pg_command(pg, unfence_sql, err, errlen) != 0 ||
        dr_pg_command(pg, "SELECT pg_reload_conf()", err, errlen) != 0)
        jobs_log(o->ctx, "warn",
                 "could not reset default_transaction_read_only on the new "
                 "primary: %s",
                 err);
    /* the write check: a transaction id assigned and committed is a commit record in the
     * WAL, refused while the server is still in recovery, and touches no user table; a
     * session that would be read-only (a fence the reload has not reached yet) does not
     * count as taking writes */
    double until = now_s() + 30;
    for (;;) {
        rc = dr_pg_value(pg,
                         "SELECT CASE WHEN current_setting('default_transaction_read_only') "
                         "= 'off' THEN pg_current_xact_id()::text END",
                         v, sizeof v, err, errlen);
        if (rc > 0)
            break;
        if (now_s() > until) {
            if (rc == 0)
                snprintf(err, errlen,
                         "the new primary is still read-only "
                         "(default_transaction_read_only)");
            return -1;
        }
        sleep_ms(50);
    }
    return 0;
}

/* ---- rejoining the old primary as a standby (switchover) ---- */

/* The old primary's data directory, when this machine holds it: its postmaster.pid names
 * the endpoint's port. 1 (dir filled), 0 not here (why in err), -1 could not ask. */
static int local_data_dir(PGconn *pg, int port, char *dir, size_t n, char *err, size_t errlen)
{
    if (dr_pg_value(pg, "SELECT current_setting('data_directory')", dir, n, err, errlen) <= 0)
        return -1;
    char pidfile[1200], line[256];
    snprintf(pidfile, sizeof pidfile, "%s/postmaster.pid", dir);
    FILE *f = fopen(pidfile, "r");
    if (!f) {
        snprintf(err, errlen, "its data directory %s is not on this machine (%s)", dir,
                 strerror(errno));
        return 0;
    }
    int found = 0;
    for (int i = 0; i < 4 && fgets(line, sizeof line, f); i++)
        if (i == 3)
            found = strtol(line, NULL, 10) == port;
    fclose(f);
    if (!found) {
        snprintf(err, errlen, "%s on this machine belongs to another server than port %d", dir,
                 port);
        return 0;
    }
    return 1;
}

static void tool(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dr_pg_bin(), name);
}

/* A libpq connection string value, quoted ('...' with \' and \\): the inventory takes any
 * text as a host or user, and none of it may add a keyword of its own. */
static void conn_quote(char *out, size_t n, const char *v)
{
    size_t o = 0;
    if (o + 1 < n)
        out[o++] = '\'';
    for (; *v && o + 3 < n; v++) {
        if (*v == '\'' || *v == '\\')
            out[o++] = '\\';
        out[o++] = *v;
    }
    if (o + 1 < n)
        out[o++] = '\'';
    out[o] = '\0';
}

/* The new primary as pg_rewind's and pg_basebackup's source. The password travels in
 * PGPASSWORD, not in this string, which goes into the job's log; -R writes the connection
 * (with the password, which the new standby needs to stream) into its primary_conninfo. */
static void conninfo(char *out, size_t n, const struct inventory_pg_endpoint *ep)
{
    char h[600], u[140], m[40];
    conn_quote(h, sizeof h, ep->host);
    conn_quote(u, sizeof u, ep->admin_user);
    conn_quote(m, sizeof m, ep->sslmode[0] ? ep->sslmode : "prefer");
    snprintf(out, n, "host=%s port=%d user=%s dbname=postgres sslmode=%s connect_timeout=10", h,
             ep->port, u, m);
}

/* Make the stopped old primary in `dir` a standby of the new one (ep) and start it with
 * the options it last ran with (pg_ctl restart reads postmaster.opts). 0 with the method,
 * or -1 with err. */
static int rejoin(struct op *o, const char *dir, const struct inventory_pg_endpoint *ep,
                  const char *method_out[1], char *err, size_t errlen)
{
    char bin[600], ci[1000], tail[1024], log[1300], password[512] = "";
    const char *pw = NULL;
    if (ep->admin_secret[0]) {
        if (inventory_secret_resolve(ep->admin_secret, password, sizeof password, err, errlen) != 0)
            return -1;
        pw = password;
    }
    conninfo(ci, sizeof ci, ep);
    snprintf(log, sizeof log, "%s/qdb-dr-rejoin.log", dir);
    tool(bin, sizeof bin, "pg_rewind");
    const char *rewind[] = {bin, "-D", dir, "--source-server", ci, "-R", "--progress", NULL};
    int rc = jobs_run_tool(o->ctx, rewind, pw, 1, tail, sizeof tail);
    *method_out = "pg_rewind";
    if (rc == -2) {
        snprintf(err, errlen, "stopped");
        goto out;
    }
    if (rc != 0) {
        step(o, "rewind", "pg_rewind failed (%d): %.600s; taking a fresh pg_basebackup -R", rc,
             tail);
        /* keep the options it ran with across the fresh copy */
        char opts_path[1200], opts[4096] = "";
        snprintf(opts_path, sizeof opts_path, "%s/postmaster.opts", dir);
        FILE *f = fopen(opts_path, "r");
        size_t got = f ? fread(opts, 1, sizeof opts - 1, f) : 0;
        opts[got] = '\0';
        if (f)
            fclose(f);
        const char *wipe[] = {"/usr/bin/find", dir, "-mindepth", "1", "-delete", NULL};
        tool(bin, sizeof bin, "pg_basebackup");
        const char *base[] = {bin,  "-d",     ci,   "-D",   dir,  "-R",
                              "-X", "stream", "-c", "fast", "-w", NULL};
        if (jobs_run_tool(o->ctx, wipe, NULL, 1, tail, sizeof tail) != 0 ||
            jobs_run_tool(o->ctx, base, pw, 1, tail, sizeof tail) != 0) {
            snprintf(err, errlen, "pg_basebackup -R into %s: %.600s", dir, tail);
            rc = -1;
            goto out;
        }
        f = got ? fopen(opts_path, "w") : NULL;
        if (f) {
            fputs(opts, f);
            fclose(f);
        }
        *method_out = "pg_basebackup";
    } else {
        step(o, "rewind", "pg_rewind -R from %s:%d: %.300s", ep->host, ep->port, tail);
    }
    tool(bin, sizeof bin, "pg_ctl");
    const char *start[] = {bin, "-D", dir, "-l", log, "-w", "-t", "120", "restart", NULL};
    rc = jobs_run_tool(o->ctx, start, NULL, 1, tail, sizeof tail);
    if (rc != 0) {
        snprintf(err, errlen, "starting the old primary as a standby: %.600s (its log: %.300s)",
                 tail, log);
        rc = -1;
    }
out:
    inventory_secret_wipe(password, sizeof password);
    return rc == 0 ? 0 : -1;
}

/* Wait until the new primary streams to at least one standby. 0 or -1. */
static int wait_streaming(struct op *o, PGconn *pg)
{
    double until = now_s() + STREAM_WAIT_S;
    char v[32], err[300];
    while (now_s() < until) {
        if (dr_pg_value(pg, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'", v,
                        sizeof v, err, sizeof err) > 0 &&
            strtol(v, NULL, 10) > 0)
            return 0;
        if (jobs_heartbeat(o->ctx) != 0)
            return -1;
        sleep_ms(200);
    }
    return -1;
}

/* ---- the runner ---- */

static int op_validate(json_t *args, char *err, size_t errlen)
{
    if (json_integer_value(json_object_get(args, "database")) > 0 &&
        json_integer_value(json_object_get(args, "op")) > 0)
        return 0;
    snprintf(err, errlen,
             "database and op (ids) expected: started by POST "
             "/api/v1/databases/{id}/failover or /switchover");
    return -1;
}

static enum jobs_outcome run_op(struct jobs_ctx *ctx, json_t *args, json_t **result, int switchover)
{
    struct op o = {.ctx = ctx,
                   .id = json_integer_value(json_object_get(args, "op")),
                   .switchover = switchover,
                   .kind = switchover ? "switchover" : "failover"};
    int64_t max_lag = json_integer_value(json_object_get(args, "max_lag_bytes"));
    PGconn *sb = NULL, *pr = NULL;
    char err[1024] = "", dir[1024] = "";
    enum jobs_outcome out = JOBS_FAIL;
    int rc = dr_store_failover_start(jobs_db(ctx), o.id, jobs_id(ctx));
    if (rc < 0) {
        jobs_error(ctx, "state store: starting %s %lld", o.kind, (long long)o.id);
        return JOBS_RETRY;
    }
    if (rc == 0) {
        /* a second attempt after a crash: a half-done role change is for a person to look
         * at, never to be repeated blindly */
        jobs_error(ctx, "%s %lld is not pending for this job: not run again", o.kind,
                   (long long)o.id);
        return JOBS_FAIL;
    }
    rc = inventory_database_lookup(
        jobs_db(ctx), json_integer_value(json_object_get(args, "database")), NULL, NULL, &o.db);
    if (rc <= 0)
        return op_fail(&o, "the database is no longer in the inventory");
    if (!o.db.has_standby)
        return op_fail(&o, "%s/%s has no standby any more", o.db.environment, o.db.name);

    /* 1. the standby: in recovery, and how far behind */
    struct dr_server_state s, p;
    dr_server_probe(&o.db.standby, o.db.name, PROBE_TIMEOUT_S, &s, &sb);
    if (!s.reachable)
        return op_fail(&o, "the standby %s:%d does not answer: %s", o.db.standby.host,
                       o.db.standby.port, s.error);
    if (!s.in_recovery) {
        out = op_fail(&o, "the standby %s:%d is not in recovery: it is a primary already",
                      o.db.standby.host, o.db.standby.port);
        goto done;
    }
    /* 2. the old primary, where it still answers */
    dr_server_probe(&o.db.primary, o.db.name, PROBE_TIMEOUT_S, &p, &pr);
    if (p.reachable && p.in_recovery) {
        out = op_fail(&o,
                      "the primary %s:%d is in recovery: the inventory does not describe "
                      "the pair",
                      o.db.primary.host, o.db.primary.port);
        goto done;
    }
    int64_t lag = p.reachable && p.lsn > s.lsn ? (int64_t)(p.lsn - s.lsn) : 0;
    double lag_s = lag > 0 ? s.replay_age_s : 0;
    step(&o, "standby-check", "standby %s:%d in recovery, replayed to %" PRIu64 "; %s",
         o.db.standby.host, o.db.standby.port, s.lsn,
         p.reachable ? "primary answers" : "primary does not answer");
    measure(&o, json_pack("{s:I,s:f,s:b}", "standby_lag_bytes", (json_int_t)lag,
                          "standby_lag_seconds", lag_s, "old_primary_reachable", p.reachable));
    if (switchover) {
        if (!p.reachable) {
            out = op_fail(&o,
                          "refused: the primary %s:%d does not answer (%s); a failover "
                          "is what is needed",
                          o.db.primary.host, o.db.primary.port, p.error);
            goto done;
        }
        if (lag > max_lag) {
            out = op_fail(&o,
                          "refused: the standby lags %lld bytes behind, more than "
                          "max_lag_bytes %lld",
                          (long long)lag, (long long)max_lag);
            goto done;
        }
        rc = local_data_dir(pr, o.db.primary.port, dir, sizeof dir, err, sizeof err);
        if (rc <= 0) {
            out = op_fail(&o,
                          "refused: the old primary could not be rejoined as a standby "
                          "from here: %s",
                          err);
            goto done;
        }
    }
    /* 3. fence */
    uint64_t primary_end = 0;
    if (p.reachable) {
        if (fence(&o, pr, err, sizeof err) != 0) {
            if (switchover) {
                out = op_fail(&o, "could not fence the primary: %s", err);
                goto done;
            }
            step(&o, "fence", "could not fence the old primary: %s", err);
        } else {
            measure(&o, json_pack("{s:b}", "fenced", 1));
        }
        char v[64];
        if (dr_pg_value(pr, "SELECT pg_current_wal_lsn()::text", v, sizeof v, err, sizeof err) > 0)
            dr_lsn_parse(v, &primary_end);
    }
    if (switchover) {
        /* 4. zero lag: everything the fenced primary wrote is replayed */
        double until = now_s() + CATCHUP_WAIT_S;
        struct dr_server_state now;
        for (;;) {
            char v[64];
            if (dr_pg_value(pr, "SELECT pg_current_wal_lsn()::text", v, sizeof v, err, sizeof err) >
                0)
                dr_lsn_parse(v, &primary_end);
            dr_server_probe(&o.db.standby, o.db.name, PROBE_TIMEOUT_S, &now, NULL);
            if (now.reachable && now.lsn >= primary_end)
                break;
            if (now_s() > until || jobs_heartbeat(ctx) != 0) {
                unfence(&o, pr);
                out = op_fail(&o,
                              "the standby did not catch up with the fenced primary within "
                              "%d s",
                              CATCHUP_WAIT_S);
                goto done;
            }
            sleep_ms(50);
        }
        step(&o, "catch-up", "standby replayed to %" PRIu64 ", the fenced primary's end", now.lsn);
        /* 5. stop the old primary (its shutdown checkpoint goes to the standby too) */
        PQfinish(pr);
        pr = NULL;
        char bin[600], tail[1024];
        tool(bin, sizeof bin, "pg_ctl");
        const char *stop[] = {bin, "-D", dir, "-m", "fast", "-w", "-t", "60", "stop", NULL};
        if (jobs_run_tool(ctx, stop, NULL, 1, tail, sizeof tail) != 0) {
            out = op_fail(&o, "could not stop the old primary: %s", tail);
            goto done;
        }
        step(&o, "stop", "old primary stopped (%s)", dir);
    }
    /* 6. promote and 7. the first write */
    uint64_t replayed = s.lsn;
    if (promote(&o, sb, &replayed, err, sizeof err) != 0) {
        out =
            op_fail(&o, "promotion of %s:%d failed: %s", o.db.standby.host, o.db.standby.port, err);
        goto done;
    }
    /* the data-loss window: WAL the old primary had written that recovery did not replay
     * (known only when the old primary could still be asked), and the time it spans back to
     * the last transaction replayed */
    json_t *loss = json_object();
    if (p.reachable && primary_end) {
        int64_t lost = primary_end > replayed ? (int64_t)(primary_end - replayed) : 0;
        char v[64];
        double span = 0;
        if (lost > 0 && dr_pg_value(sb,
                                    "SELECT extract(epoch FROM clock_timestamp() - "
                                    "pg_last_xact_replay_timestamp())",
                                    v, sizeof v, err, sizeof err) > 0)
            span = strtod(v, NULL);
        json_object_set_new(loss, "lost_bytes", json_integer(lost));
        json_object_set_new(loss, "lost_seconds", json_real(span));
    }
    measure(&o, loss);
    struct promoted_tx pt = {.o = &o};
    if (db_tx(jobs_db(ctx), promoted_fn, &pt) < 0 || !pt.swapped) {
        /* the standby is a primary now whatever the state store says: say so loudly */
        out = op_fail(&o,
                      "%s:%d was promoted, but the inventory could not be updated: swap "
                      "primary and standby of database %lld by hand",
                      o.db.standby.host, o.db.standby.port, (long long)o.db.id);
        goto done;
    }
    step(&o, "inventory", "primary is now %s:%d, standby %s:%d; RTO %.3f s", o.db.standby.host,
         o.db.standby.port, o.db.primary.host, o.db.primary.port, pt.rto_s);
    jobs_log(ctx, "info", "%s of %s/%s: achieved RTO %.3f s", o.kind, o.db.environment, o.db.name,
             pt.rto_s);
    if (switchover) {
        /* 8. the old primary follows the new one */
        const char *method = NULL;
        if (rejoin(&o, dir, &o.db.standby, &method, err, sizeof err) != 0) {
            out = op_fail(&o,
                          "promoted, but the old primary could not rejoin as a standby "
                          "(%s): %s",
                          method ? method : "", err);
            goto done;
        }
        measure(&o, json_pack("{s:s}", "rejoin_method", method));
        if (wait_streaming(&o, sb) != 0) {
            out = op_fail(&o,
                          "the old primary restarted as a standby but does not stream "
                          "from the new primary within %d s",
                          STREAM_WAIT_S);
            goto done;
        }
        /* the fence came back with it when pg_rewind found nothing to rewind; a standby is
         * read-only anyway, and the next promotion must not be */
        PGconn *old = inventory_pg_connect(&o.db.primary, o.db.name, 10, err, sizeof err);
        if (!old || dr_pg_command(old, unfence_sql, err, sizeof err) != 0 ||
            dr_pg_command(old, "SELECT pg_reload_conf()", err, sizeof err) != 0)
            jobs_log(ctx, "warn",
                     "could not reset default_transaction_read_only on the new "
                     "standby: %s",
                     err);
        if (old)
            PQfinish(old);
        if (dr_store_failover_rejoined(jobs_db(ctx), o.id) < 0)
            jobs_log(ctx, "warn", "state store: could not record the rejoin time");
        step(&o, "rejoin", "old primary %s:%d streams from the new primary (%s)", o.db.primary.host,
             o.db.primary.port, method);
        struct finish_tx t = {&o, "succeeded", NULL, "switchover.complete", "switchover_completed"};
        if (db_tx(jobs_db(ctx), finish_fn, &t) < 0) {
            jobs_error(ctx, "state store: could not record the end of the switchover");
            out = JOBS_FAIL;
            goto done;
        }
    }
    json_t *doc = NULL;
    dr_store_failover_get(jobs_db(ctx), o.id, &doc);
    *result = doc ? doc : json_pack("{s:I,s:f}", "id", (json_int_t)o.id, "rto_seconds", pt.rto_s);
    out = JOBS_OK;
done:
    if (sb)
        PQfinish(sb);
    if (pr)
        PQfinish(pr);
    return out;
}

static enum jobs_outcome failover_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    return run_op(ctx, args, result, 0);
}

static enum jobs_outcome switchover_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    return run_op(ctx, args, result, 1);
}

/* One attempt only: a role change that stopped half-way is for a person to look at. */
static const struct jobs_kind kind_failover = {
    .kind = "dr.failover",
    .max_attempts = 1,
    .timeout_seconds = 600,
    .max_running = 1,
    .concurrency_arg = "database",
    .direct_role = HTTP_PUBLIC,
    .validate = op_validate,
    .run = failover_run,
};
static const struct jobs_kind kind_switchover = {
    .kind = "dr.switchover",
    .max_attempts = 1,
    .timeout_seconds = 3600,
    .max_running = 1,
    .concurrency_arg = "database",
    .direct_role = HTTP_PUBLIC,
    .validate = op_validate,
    .run = switchover_run,
};

extern const struct jobs_kind dr_kind_drill;

int dr_jobs_init(void)
{
    return jobs_register_kind(&kind_failover) || jobs_register_kind(&kind_switchover) ||
                   jobs_register_kind(&dr_kind_drill)
               ? -1
               : 0;
}
