/* The SQL of the DR room, and nothing else: one function per statement. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/dr_internal.h"
#include "inventory/inventory.h"

static struct db_stmt q_scenarios =
    DB_STMT("dr_scenarios", 0,
            "SELECT coalesce(jsonb_agg(jsonb_build_object('slug', slug, 'title', title, 'impact', "
            "impact, 'procedure', procedure, 'target_rto_seconds', target_rto_seconds, "
            "'target_rto_min_seconds', target_rto_min_seconds, 'components', components, 'steps', "
            "steps) ORDER BY position), '[]')::text FROM dr_scenario");

int dr_store_scenarios(struct db_conn *c, json_t **arr)
{
    struct db_params p = DB_PARAMS_INIT;
    return db_execp_json(c, &q_scenarios, &p, arr);
}

#define TARGET_DOC                                                                                 \
    "jsonb_build_object('component', t.component, 'title', t.title, 'database', "                  \
    "t.database_name, 'rpo_seconds', t.rpo_seconds, 'rto_seconds', t.rto_seconds, 'rpo_basis', "   \
    "t.rpo_basis, 'rto_basis', t.rto_basis)"

static struct db_stmt q_targets =
    DB_STMT("dr_targets", 0,
            "SELECT coalesce(jsonb_agg(" TARGET_DOC " ORDER BY t.component), '[]')::text "
            "FROM dr_target t");

int dr_store_targets(struct db_conn *c, json_t **arr)
{
    struct db_params p = DB_PARAMS_INIT;
    return db_execp_json(c, &q_targets, &p, arr);
}

static struct db_stmt q_target_for = DB_STMT(
    "dr_target_for", 1, "SELECT " TARGET_DOC "::text FROM dr_target t WHERE t.database_name = $1");

int dr_store_target_for(struct db_conn *c, const char *database_name, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, database_name);
    return db_execp_json(c, &q_target_for, &p, doc);
}

/* ---- failovers and switchovers ---- */

static struct db_stmt q_fo_insert =
    DB_STMT("dr_failover_insert", 8,
            "INSERT INTO dr_failover (kind, database_id, environment, database_name, requested_by, "
            "max_lag_bytes, old_primary, old_standby) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, "
            "$8::jsonb) RETURNING id");

int dr_store_failover_insert(struct db_conn *c, const char *kind,
                             const struct inventory_database *db, const char *by,
                             int64_t max_lag_bytes, int64_t *id)
{
    json_t *op = dr_endpoint_json(&db->primary), *os = dr_endpoint_json(&db->standby);
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, kind);
    db_param_int(&p, db->id);
    db_param_text(&p, db->environment);
    db_param_text(&p, db->name);
    db_param_text(&p, by);
    db_param_int_or_null(&p, max_lag_bytes, max_lag_bytes < 0);
    db_param_json(&p, op);
    db_param_json(&p, os);
    json_decref(op);
    json_decref(os);
    PGresult *res = NULL;
    int rc = db_execp(c, &q_fo_insert, &p, &res);
    if (rc > 0)
        *id = db_get_int64(res, 0, 0);
    PQclear(res);
    return rc;
}

static struct db_stmt q_fo_set_job =
    DB_STMT("dr_failover_set_job", 2, "UPDATE dr_failover SET job_id = $2 WHERE id = $1");

int dr_store_failover_set_job(struct db_conn *c, int64_t id, int64_t job_id)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_int(&p, job_id);
    return db_execp(c, &q_fo_set_job, &p, NULL);
}

static struct db_stmt q_fo_active =
    DB_STMT("dr_failover_active", 1,
            "SELECT id, coalesce(job_id, 0) FROM dr_failover WHERE database_id = $1 "
            "AND state IN ('pending', 'running')");

int dr_store_failover_active(struct db_conn *c, int64_t database_id, int64_t *id, int64_t *job_id)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, database_id);
    PGresult *res = NULL;
    int rc = db_execp(c, &q_fo_active, &p, &res);
    if (rc > 0) {
        *id = db_get_int64(res, 0, 0);
        *job_id = db_get_int64(res, 0, 1);
    }
    PQclear(res);
    return rc;
}

static struct db_stmt q_fo_start =
    DB_STMT("dr_failover_start", 2,
            "UPDATE dr_failover SET state = 'running', started_at = clock_timestamp() "
            "WHERE id = $1 AND job_id = $2 AND state = 'pending'");

int dr_store_failover_start(struct db_conn *c, int64_t id, int64_t job_id)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_int(&p, job_id);
    return db_execp(c, &q_fo_start, &p, NULL);
}

static struct db_stmt q_fo_measure = DB_STMT(
    "dr_failover_measure", 2,
    "UPDATE dr_failover f SET "
    "standby_lag_bytes = coalesce(x.standby_lag_bytes, f.standby_lag_bytes), "
    "standby_lag_seconds = coalesce(x.standby_lag_seconds, f.standby_lag_seconds), "
    "old_primary_reachable = coalesce(x.old_primary_reachable, f.old_primary_reachable), "
    "fenced = coalesce(x.fenced, f.fenced), lost_bytes = coalesce(x.lost_bytes, f.lost_bytes), "
    "lost_seconds = coalesce(x.lost_seconds, f.lost_seconds), "
    "rejoin_method = coalesce(x.rejoin_method, f.rejoin_method) "
    "FROM jsonb_to_record($2::jsonb) AS x(standby_lag_bytes bigint, standby_lag_seconds "
    "double precision, old_primary_reachable boolean, fenced boolean, lost_bytes bigint, "
    "lost_seconds double precision, rejoin_method text) WHERE f.id = $1");

int dr_store_failover_measure(struct db_conn *c, int64_t id, const json_t *m)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_json(&p, m);
    return db_execp(c, &q_fo_measure, &p, NULL);
}

static struct db_stmt q_fo_step =
    DB_STMT("dr_failover_step", 3,
            "UPDATE dr_failover SET steps = steps || jsonb_build_array(jsonb_build_object('step', "
            "$2::text, "
            "'at', dr_ts(clock_timestamp()), 'detail', $3::text)) WHERE id = $1");

int dr_store_failover_step(struct db_conn *c, int64_t id, const char *step, const char *detail)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, step);
    db_param_text(&p, detail ? detail : "");
    return db_execp(c, &q_fo_step, &p, NULL);
}

static struct db_stmt q_fo_promoted =
    DB_STMT("dr_failover_promoted", 1,
            "UPDATE dr_failover SET promoted_at = clock_timestamp() WHERE id = $1");

int dr_store_failover_promoted(struct db_conn *c, int64_t id)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    return db_execp(c, &q_fo_promoted, &p, NULL);
}

static struct db_stmt q_fo_write = DB_STMT(
    "dr_failover_write_accepted", 1,
    "UPDATE dr_failover SET write_accepted_at = clock_timestamp(), rto_seconds = "
    "extract(epoch FROM clock_timestamp() - requested_at) WHERE id = $1 RETURNING rto_seconds");

int dr_store_failover_write_accepted(struct db_conn *c, int64_t id, double *rto_s)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    PGresult *res = NULL;
    int rc = db_execp(c, &q_fo_write, &p, &res);
    if (rc > 0)
        *rto_s = strtod(PQgetvalue(res, 0, 0), NULL);
    PQclear(res);
    return rc;
}

static struct db_stmt q_fo_rejoined =
    DB_STMT("dr_failover_rejoined", 1,
            "UPDATE dr_failover SET rejoined_at = clock_timestamp() WHERE id = $1");

int dr_store_failover_rejoined(struct db_conn *c, int64_t id)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    return db_execp(c, &q_fo_rejoined, &p, NULL);
}

static struct db_stmt q_fo_finish =
    DB_STMT("dr_failover_finish", 3,
            "UPDATE dr_failover SET state = $2, error = $3, finished_at = clock_timestamp() "
            "WHERE id = $1 AND state IN ('pending', 'running')");

int dr_store_failover_finish(struct db_conn *c, int64_t id, const char *state, const char *error)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, state);
    db_param_text(&p, error);
    return db_execp(c, &q_fo_finish, &p, NULL);
}

static struct db_stmt q_fo_get = DB_STMT(
    "dr_failover_get", 1, "SELECT dr_failover_doc(f)::text FROM dr_failover f WHERE f.id = $1");

int dr_store_failover_get(struct db_conn *c, int64_t id, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    return db_execp_json(c, &q_fo_get, &p, doc);
}

static struct db_stmt q_fo_list =
    DB_STMT("dr_failover_list", 2,
            "SELECT coalesce(jsonb_agg(d ORDER BY (d->>'id')::bigint DESC), '[]')::text FROM ("
            "SELECT dr_failover_doc(f) AS d FROM dr_failover f WHERE $1::bigint = 0 OR "
            "f.database_id = $1 ORDER BY f.id DESC LIMIT $2) s");

int dr_store_failover_list(struct db_conn *c, int64_t database_id, int limit, json_t **arr)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, database_id);
    db_param_int(&p, limit);
    return db_execp_json(c, &q_fo_list, &p, arr);
}

/* ---- drills ---- */

static struct db_stmt q_drill_insert =
    DB_STMT("dr_drill_insert", 4,
            "INSERT INTO dr_drill (requested_by, target_environment, databases, scheduled) "
            "VALUES ($1, $2, $3::jsonb, $4) RETURNING id");

int dr_store_drill_insert(struct db_conn *c, const char *by, const char *target_env,
                          const json_t *databases, int scheduled, int64_t *id)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, by);
    db_param_text(&p, target_env);
    db_param_json(&p, databases);
    db_param_bool(&p, scheduled);
    PGresult *res = NULL;
    int rc = db_execp(c, &q_drill_insert, &p, &res);
    if (rc > 0)
        *id = db_get_int64(res, 0, 0);
    PQclear(res);
    return rc;
}

static struct db_stmt q_drill_set_job =
    DB_STMT("dr_drill_set_job", 2, "UPDATE dr_drill SET job_id = $2 WHERE id = $1");

int dr_store_drill_set_job(struct db_conn *c, int64_t id, int64_t job_id)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_int(&p, job_id);
    return db_execp(c, &q_drill_set_job, &p, NULL);
}

static struct db_stmt q_drill_start =
    DB_STMT("dr_drill_start", 2,
            "UPDATE dr_drill SET state = 'running', started_at = clock_timestamp() "
            "WHERE id = $1 AND job_id = $2 AND state = 'pending'");

int dr_store_drill_start(struct db_conn *c, int64_t id, int64_t job_id)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_int(&p, job_id);
    return db_execp(c, &q_drill_start, &p, NULL);
}

static struct db_stmt q_drill_result = DB_STMT(
    "dr_drill_result_insert", 2,
    "INSERT INTO dr_drill_result (drill_id, database_id, environment, database_name, "
    "component, target_database_id, backup_id, ok, restore_seconds, rto_seconds, rpo_seconds, "
    "rpo_basis, target_rto_seconds, target_rpo_seconds, source_last_commit, recovered_to, "
    "point_in_time, row_counts, checks, error) "
    "SELECT $1, x.database_id, x.environment, x.database, x.component, x.target_database_id, "
    "x.backup_id, x.ok, x.restore_seconds, "
    "extract(epoch FROM clock_timestamp() - d.started_at), CASE WHEN x.recovered_to IS NULL "
    "THEN NULL ELSE greatest(0, extract(epoch FROM coalesce(x.source_last_commit, "
    "d.started_at) - x.recovered_to)) END, x.rpo_basis, "
    "x.target_rto_seconds, x.target_rpo_seconds, x.source_last_commit, x.recovered_to, "
    "x.point_in_time, x.row_counts, coalesce(x.checks, '{}'), x.error "
    "FROM jsonb_to_record($2::jsonb) AS x(database_id bigint, environment text, database text, "
    "component text, target_database_id bigint, backup_id bigint, ok boolean, "
    "restore_seconds double precision, rpo_basis text, "
    "target_rto_seconds int, target_rpo_seconds int, source_last_commit timestamptz, "
    "recovered_to timestamptz, point_in_time text, row_counts jsonb, checks jsonb, error text) "
    "JOIN dr_drill d ON d.id = $1 RETURNING rto_seconds");

int dr_store_drill_result_insert(struct db_conn *c, int64_t drill_id, const json_t *r,
                                 double *rto_s)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, drill_id);
    db_param_json(&p, r);
    PGresult *res = NULL;
    int rc = db_execp(c, &q_drill_result, &p, &res);
    if (rc > 0 && rto_s)
        *rto_s = strtod(PQgetvalue(res, 0, 0), NULL);
    PQclear(res);
    return rc;
}

static struct db_stmt q_drill_finish =
    DB_STMT("dr_drill_finish", 3,
            "UPDATE dr_drill SET state = $2, error = $3, finished_at = clock_timestamp() "
            "WHERE id = $1 AND state IN ('pending', 'running')");

int dr_store_drill_finish(struct db_conn *c, int64_t id, const char *state, const char *error)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, state);
    db_param_text(&p, error);
    return db_execp(c, &q_drill_finish, &p, NULL);
}

static struct db_stmt q_drill_get =
    DB_STMT("dr_drill_get", 1, "SELECT dr_drill_doc(d)::text FROM dr_drill d WHERE d.id = $1");

int dr_store_drill_get(struct db_conn *c, int64_t id, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    return db_execp_json(c, &q_drill_get, &p, doc);
}

static struct db_stmt q_drill_list =
    DB_STMT("dr_drill_list", 1,
            "SELECT coalesce(jsonb_agg(d ORDER BY (d->>'id')::bigint DESC), '[]')::text FROM ("
            "SELECT dr_drill_doc(x) AS d FROM dr_drill x ORDER BY x.id DESC LIMIT $1) s");

int dr_store_drill_list(struct db_conn *c, int limit, json_t **arr)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, limit);
    return db_execp_json(c, &q_drill_list, &p, arr);
}

/* Per target, the newest failover and switchover of its database (in any environment) and
 * its newest drill result, each with its age in seconds. */
static struct db_stmt q_status = DB_STMT(
    "dr_status", 0,
    "SELECT coalesce(jsonb_agg(" TARGET_DOC " || jsonb_build_object("
    "'last_failover', (SELECT dr_failover_doc(f) || jsonb_build_object('age_seconds', "
    "extract(epoch FROM now() - f.finished_at)) FROM dr_failover f WHERE f.database_name = "
    "t.database_name AND f.kind = 'failover' AND f.state = 'succeeded' ORDER BY f.id DESC "
    "LIMIT 1), "
    "'last_switchover', (SELECT dr_failover_doc(f) || jsonb_build_object('age_seconds', "
    "extract(epoch FROM now() - f.finished_at)) FROM dr_failover f WHERE f.database_name = "
    "t.database_name AND f.kind = 'switchover' AND f.state = 'succeeded' ORDER BY f.id DESC "
    "LIMIT 1), "
    "'last_drill', (SELECT jsonb_build_object('drill_id', r.drill_id, 'environment', "
    "r.environment, 'database', r.database_name, 'ok', r.ok, 'rto_seconds', r.rto_seconds, "
    "'rpo_seconds', r.rpo_seconds, 'rpo_basis', r.rpo_basis, 'finished_at', "
    "dr_ts(r.finished_at), 'age_seconds', extract(epoch FROM now() - r.finished_at), "
    "'error', r.error) FROM dr_drill_result r WHERE r.component = t.component "
    "ORDER BY r.finished_at DESC LIMIT 1)) ORDER BY t.component), '[]')::text "
    "FROM dr_target t");

int dr_store_status(struct db_conn *c, json_t **arr)
{
    struct db_params p = DB_PARAMS_INIT;
    return db_execp_json(c, &q_status, &p, arr);
}
