/* The drill runner (dr.drill), 7.4: for each listed database, the newest verified backup is
 * restored through the backup room's seam (backup_restore) into the target environment's
 * database of the same name (the DR environment's server), with WAL replay to the latest
 * streamed position for the components whose RPO is 0; the restored database is checked
 * (open, not in recovery, its tables counted), and the achieved RTO (drill start -> this
 * database consistent and checked) and RPO (the source's last committed transaction -> the
 * last transaction present in the restore) are recorded against the targets of 7.2.
 *
 * A drill never touches the source: it reads the time of its last commit (when the source
 * keeps commit timestamps) and nothing else, and a target on the source's own server is
 * refused, here as in the request. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "audit/audit.h"
#include "backup/backup.h"
#include "dr/dr_internal.h"
#include "inventory/inventory.h"
#include "platform/log.h"

static struct audit_actor job_actor(struct jobs_ctx *ctx)
{
    struct audit_actor a = {
        .subject = "system", .name = jobs_created_by(ctx), .auth_method = "system"};
    return a;
}

static int drill_validate(json_t *args, char *err, size_t errlen)
{
    if (json_integer_value(json_object_get(args, "drill")) > 0 ||
        json_is_true(json_object_get(args, "scheduled")))
        return 0;
    snprintf(err, errlen, "drill (an id) or scheduled: true expected");
    return -1;
}

/* The quarterly full drill (7.4) has no row yet: every database of a 7.2 component in the
 * source environment that has a namesake in the target environment. */
struct scheduled_tx {
    struct jobs_ctx *ctx;
    int64_t id;
};

static int scheduled_fn(struct db_conn *c, void *cls)
{
    struct scheduled_tx *t = cls;
    json_t *targets = NULL, *ids = json_array();
    int rc = dr_store_targets(c, &targets);
    size_t i;
    json_t *v;
    json_array_foreach(targets, i, v)
    {
        const char *name = json_string_value(json_object_get(v, "database"));
        struct inventory_database src, dst;
        if (rc < 0 || !name)
            continue;
        if (inventory_database_lookup(c, 0, dr_drill_source_env(), name, &src) > 0 &&
            inventory_database_lookup(c, 0, dr_drill_target_env(), name, &dst) > 0 &&
            src.primary.host[0] && dst.primary.host[0])
            json_array_append_new(ids, json_integer(src.id));
    }
    if (rc >= 0)
        rc = dr_store_drill_insert(c, jobs_created_by(t->ctx), dr_drill_target_env(), ids, 1,
                                   &t->id);
    if (rc >= 0)
        rc = dr_store_drill_set_job(c, t->id, jobs_id(t->ctx));
    json_decref(targets);
    json_decref(ids);
    return rc;
}

/* The time of the source's last commit, read-only (track_commit_timestamp): 1 with ts, 0 when
 * the source cannot say. */
static int source_last_commit(const struct inventory_database *src, char *ts, size_t n)
{
    char err[300];
    PGconn *pg = inventory_pg_connect(&src->primary, src->name, 5, err, sizeof err);
    if (!pg)
        return 0;
    int rc = dr_pg_value(pg,
                         "SELECT to_char(timestamp AT TIME ZONE 'UTC', "
                         "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM pg_last_committed_xact()",
                         ts, n, err, sizeof err);
    PQfinish(pg);
    return rc > 0;
}

/* The checks of a restored database: it opens, is not in recovery, and holds the tables the
 * restore counted. 0, or -1 with the reason in err. */
static int check_restored(const struct inventory_database *dst, const json_t *counts,
                          json_t *checks, char *err, size_t errlen)
{
    PGconn *pg = inventory_pg_connect(&dst->primary, dst->name, 10, err, errlen);
    if (!pg) {
        json_object_set_new(checks, "connect", json_string("failed"));
        return -1;
    }
    json_object_set_new(checks, "connect", json_string("ok"));
    char v[32];
    int rc = -1;
    if (dr_pg_value(pg, "SELECT pg_is_in_recovery()", v, sizeof v, err, errlen) <= 0)
        goto out;
    if (strcmp(v, "f") != 0) {
        snprintf(err, errlen, "the restored database is in recovery");
        json_object_set_new(checks, "open", json_string("failed"));
        goto out;
    }
    json_object_set_new(checks, "open", json_string("ok"));
    if (dr_pg_value(pg,
                    "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = "
                    "c.relnamespace WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND "
                    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ "
                    "'^pg_toast'",
                    v, sizeof v, err, errlen) <= 0)
        goto out;
    long tables = strtol(v, NULL, 10);
    if (tables != (long)json_object_size(counts) || tables == 0) {
        snprintf(err, errlen, "the restored database holds %ld tables, the restore counted %zu",
                 tables, json_object_size(counts));
        json_object_set_new(checks, "tables", json_string("failed"));
        goto out;
    }
    json_object_set_new(checks, "tables", json_integer(tables));
    rc = 0;
out:
    PQfinish(pg);
    return rc;
}

struct result_tx {
    json_t *r;
    int64_t drill_id;
    double rto_s;
};

static int result_fn(struct db_conn *c, void *cls)
{
    struct result_tx *t = cls;
    return dr_store_drill_result_insert(c, t->drill_id, t->r, &t->rto_s);
}

/* One database of the drill; its result row is written whatever happened. 1 ok, 0 failed,
 * -2 cancelled. */
static int drill_one(struct jobs_ctx *ctx, int64_t drill_id, const char *target_env,
                     int64_t source_id, json_t *summary)
{
    struct inventory_database src, dst;
    json_t *r = json_pack("{s:I,s:b}", "database_id", (json_int_t)source_id, "ok", 0);
    json_t *checks = json_object(), *target = NULL;
    char err[1400] = "", last[64] = "";
    int ok = 0, rc;
    memset(&dst, 0, sizeof dst);
    rc = inventory_database_lookup(jobs_db(ctx), source_id, NULL, NULL, &src);
    if (rc <= 0) {
        json_object_set_new(r, "environment", json_string(""));
        json_object_set_new(r, "database", json_string(""));
        snprintf(err, sizeof err, "database %lld is not in the inventory", (long long)source_id);
        goto record;
    }
    json_object_set_new(r, "environment", json_string(src.environment));
    json_object_set_new(r, "database", json_string(src.name));
    if (dr_store_target_for(jobs_db(ctx), src.name, &target) > 0) {
        json_object_set(r, "component", json_object_get(target, "component"));
        json_object_set(r, "target_rto_seconds", json_object_get(target, "rto_seconds"));
        json_object_set(r, "target_rpo_seconds", json_object_get(target, "rpo_seconds"));
    }
    if (inventory_database_lookup(jobs_db(ctx), 0, target_env, src.name, &dst) <= 0) {
        snprintf(err, sizeof err, "%s has no database %s", target_env, src.name);
        goto record;
    }
    json_object_set_new(r, "target_database_id", json_integer(dst.id));
    if (dst.id == src.id || dr_same_server(&dst.primary, &src.primary) ||
        (src.has_standby && dr_same_server(&dst.primary, &src.standby))) {
        snprintf(err, sizeof err, "refused: %s/%s is on the source's own server %s:%d",
                 dst.environment, dst.name, dst.primary.host, dst.primary.port);
        goto record;
    }
    int rpo0 = target && json_integer_value(json_object_get(target, "rpo_seconds")) == 0;
    if (rpo0)
        json_object_set_new(r, "point_in_time", json_string("latest"));
    /* read before the restore: what the source had committed when the drill reached it */
    if (source_last_commit(&src, last, sizeof last)) {
        json_object_set_new(r, "source_last_commit", json_string(last));
        json_object_set_new(r, "rpo_basis", json_string("commit_timestamp"));
    } else {
        json_object_set_new(r, "rpo_basis", json_string("drill_start"));
    }
    jobs_log(ctx, "info", "drill: %s/%s -> %s/%s (%s:%d)%s", src.environment, src.name,
             dst.environment, dst.name, dst.primary.host, dst.primary.port,
             rpo0 ? ", WAL replayed to the latest" : "");
    struct backup_restore_spec spec = {.backup_id = 0,
                                       .source_id = src.id,
                                       .target = &dst,
                                       .force = 1, /* the DR copy is replaced at each drill */
                                       .point_in_time = rpo0 ? "latest" : NULL};
    struct backup_restore_outcome out;
    memset(&out, 0, sizeof out);
    rc = backup_restore(ctx, &spec, &out, err, sizeof err);
    if (rc != 0) {
        json_decref(out.row_counts);
        if (rc == -2) {
            json_decref(r);
            json_decref(checks);
            json_decref(target);
            return -2;
        }
        json_object_set_new(checks, "restore", json_string("failed"));
        goto record;
    }
    json_object_set_new(checks, "restore", json_string("ok"));
    json_object_set_new(r, "backup_id", json_integer(out.backup_id));
    json_object_set_new(r, "restore_seconds", json_real(out.restore_seconds));
    if (out.recovered_to[0]) {
        json_object_set_new(r, "recovered_to", json_string(out.recovered_to));
    } else if (out.backup_started[0]) {
        /* nothing replayed to time the restore by (a restore to a backup's end whose WAL
         * holds no commit): everything committed before the backup began is in it, so the
         * RPO measured from there is an upper bound, and says so */
        json_object_set_new(r, "recovered_to", json_string(out.backup_started));
        const char *basis = json_string_value(json_object_get(r, "rpo_basis"));
        int by_commit = basis && strcmp(basis, "commit_timestamp") == 0;
        json_object_set_new(r, "rpo_basis", json_string(by_commit ? "commit_timestamp+backup_start"
                                                                   : "drill_start+backup_start"));
    }
    json_object_set(r, "row_counts", out.row_counts);
    if (check_restored(&dst, out.row_counts, checks, err, sizeof err) == 0)
        ok = 1;
    json_decref(out.row_counts);
record:
    json_object_set_new(r, "ok", json_boolean(ok));
    json_object_set_new(r, "checks", checks);
    if (!ok)
        json_object_set_new(r, "error", json_string(err));
    struct result_tx t = {r, drill_id, -1};
    if (db_tx(jobs_db(ctx), result_fn, &t) < 0)
        jobs_log(ctx, "error", "state store: could not record the drill's result for %lld",
                 (long long)source_id);
    jobs_log(ctx, ok ? "info" : "error", "drill: %s: %s RTO %.3f s%s%s",
             json_string_value(json_object_get(r, "database")),
             ok ? "restored and checked," : "failed,", t.rto_s, ok ? "" : ": ", ok ? "" : err);
    json_array_append_new(summary,
                          json_pack("{s:O,s:b,s:f}", "database", json_object_get(r, "database"),
                                    "ok", ok, "rto_seconds", t.rto_s));
    json_decref(r);
    json_decref(target);
    return ok;
}

struct finish_tx {
    struct jobs_ctx *ctx;
    int64_t id;
    const char *state, *error;
};

static int finish_fn(struct db_conn *c, void *cls)
{
    struct finish_tx *t = cls;
    int rc = dr_store_drill_finish(c, t->id, t->state, t->error);
    json_t *doc = NULL;
    if (rc >= 0)
        rc = dr_store_drill_get(c, t->id, &doc);
    if (rc < 0)
        return rc;
    char rid[32], subject[48];
    snprintf(rid, sizeof rid, "%lld", (long long)t->id);
    snprintf(subject, sizeof subject, "drills/%lld", (long long)t->id);
    struct audit_actor actor = job_actor(t->ctx);
    int ok = strcmp(t->state, "succeeded") == 0;
    struct audit_entry e = {.action = ok ? "dr_drill.complete" : "dr_drill.fail",
                            .resource_type = "dr_drill",
                            .resource_id = rid,
                            .after = doc,
                            .job_id = jobs_id(t->ctx)};
    rc = audit_record(c, &actor, NULL, NULL, &e);
    if (rc >= 0)
        rc = audit_event_emit(c, &actor,
                              &(struct audit_event){.room = "dr",
                                                    .verb = ok ? "drill_completed" : "drill_failed",
                                                    .subject = subject,
                                                    .data = doc});
    json_decref(doc);
    return rc;
}

static enum jobs_outcome drill_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    int64_t id = json_integer_value(json_object_get(args, "drill"));
    if (!id) {
        struct scheduled_tx st = {ctx, 0};
        if (db_tx(jobs_db(ctx), scheduled_fn, &st) < 0) {
            jobs_error(ctx, "state store: could not record the scheduled drill");
            return JOBS_RETRY;
        }
        id = st.id;
    }
    int rc = dr_store_drill_start(jobs_db(ctx), id, jobs_id(ctx));
    if (rc <= 0) {
        jobs_error(ctx,
                   rc < 0 ? "state store: starting drill %lld"
                          : "drill %lld is not pending for this job: not run again",
                   (long long)id);
        return rc < 0 ? JOBS_RETRY : JOBS_FAIL;
    }
    json_t *doc = NULL;
    if (dr_store_drill_get(jobs_db(ctx), id, &doc) <= 0) {
        jobs_error(ctx, "state store: reading drill %lld", (long long)id);
        return JOBS_RETRY;
    }
    const char *target_env = json_string_value(json_object_get(doc, "target_environment"));
    json_t *dbs = json_object_get(doc, "databases"), *summary = json_array();
    size_t i, n = json_array_size(dbs), good = 0;
    json_t *v;
    enum jobs_outcome o = JOBS_OK;
    json_array_foreach(dbs, i, v)
    {
        jobs_progress(ctx, (int)(100 * i / (n ? n : 1)), "restoring");
        int r = drill_one(ctx, id, target_env, json_integer_value(v), summary);
        if (r == -2) {
            o = JOBS_CANCELLED;
            break;
        }
        good += r == 1;
    }
    char why[200] = "";
    if (o == JOBS_CANCELLED)
        snprintf(why, sizeof why, "cancelled");
    else if (n == 0)
        snprintf(why, sizeof why, "no database to drill");
    else if (good < n)
        snprintf(why, sizeof why, "%zu of %zu databases failed the drill", n - good, n);
    struct finish_tx ft = {ctx, id, why[0] ? "failed" : "succeeded", why[0] ? why : NULL};
    if (db_tx(jobs_db(ctx), finish_fn, &ft) < 0)
        jobs_log(ctx, "error", "state store: could not record the end of drill %lld",
                 (long long)id);
    json_t *status = NULL;
    if (dr_status_compute(jobs_db(ctx), &status) < 0)
        jobs_log(ctx, "warn", "could not refresh the DR metrics");
    json_decref(status);
    *result = json_pack("{s:I,s:o}", "drill_id", (json_int_t)id, "databases", summary);
    json_decref(doc);
    if (o == JOBS_OK && why[0]) {
        jobs_error(ctx, "%s", why);
        o = JOBS_FAIL;
    }
    return o;
}

/* One drill at a time: they restore into the same DR servers. */
const struct jobs_kind dr_kind_drill = {
    .kind = "dr.drill",
    .max_attempts = 1,
    .timeout_seconds = 12 * 3600,
    .max_running = 1,
    .concurrency_arg = NULL,
    .direct_role = HTTP_PUBLIC,
    .validate = drill_validate,
    .run = drill_run,
};
