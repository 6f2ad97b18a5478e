/* The SQL of schedules, and nothing else: one function per statement. The HTTP handlers are
 * in jobs_schedules_api.c, the leader that fires them in jobs_cron.c, the rooms' default
 * schedules in jobs_schedules.c. */
#include <stdio.h>
#include <string.h>

#include "jobs/jobs_internal.h"

static struct db_stmt q_sched_list =
    DB_STMT("jobs_schedule_list", 0, "SELECT schedule_doc(s)::text FROM schedule s ORDER BY name");

int jobs_store_schedule_list(struct db_conn *c, PGresult **res)
{
    return db_exec(c, &q_sched_list, NULL, res);
}

static struct db_stmt q_sched_get =
    DB_STMT("jobs_schedule_get", 1, "SELECT schedule_doc(s)::text FROM schedule s WHERE name = $1");

int jobs_store_schedule_get(struct db_conn *c, const char *name, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    return db_execp_json(c, &q_sched_get, &p, doc);
}

static struct db_stmt q_sched_insert =
    DB_STMT("jobs_schedule_insert", 6,
            "INSERT INTO schedule (name, cron, kind, args, enabled, next_run_at) "
            "VALUES ($1, $2, $3, $4::jsonb, $5::boolean, to_timestamp($6::bigint))");

int jobs_store_schedule_insert(struct db_conn *c, const char *name, const char *cron,
                               const char *kind, const json_t *args, int enabled,
                               int64_t next_run_unix)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    db_param_text(&p, cron);
    db_param_text(&p, kind);
    if (args)
        db_param_json(&p, args);
    else
        db_param_text(&p, "{}");
    db_param_bool(&p, enabled);
    db_param_int(&p, next_run_unix);
    return db_execp(c, &q_sched_insert, &p, NULL);
}

static struct db_stmt q_sched_insert_missing =
    DB_STMT("jobs_schedule_insert_missing", 5,
            "INSERT INTO schedule (name, cron, kind, args, enabled, next_run_at) "
            "VALUES ($1, $2, $3, $4::jsonb, true, to_timestamp($5::bigint)) "
            "ON CONFLICT (name) DO NOTHING");

int jobs_store_schedule_insert_missing(struct db_conn *c, const char *name, const char *cron,
                                       const char *kind, const char *args_json,
                                       int64_t next_run_unix)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    db_param_text(&p, cron);
    db_param_text(&p, kind);
    db_param_text(&p, args_json);
    db_param_int(&p, next_run_unix);
    return db_execp(c, &q_sched_insert_missing, &p, NULL);
}

static struct db_stmt q_sched_update = DB_STMT(
    "jobs_schedule_update", 6,
    "UPDATE schedule SET cron = coalesce($2, cron), args = coalesce($3::jsonb, args), "
    "enabled = coalesce($4::boolean, enabled), "
    "next_run_at = CASE WHEN $6::boolean THEN to_timestamp($5::bigint) ELSE next_run_at END, "
    "updated_at = now() WHERE name = $1");

int jobs_store_schedule_update(struct db_conn *c, const char *name, const char *cron,
                               const json_t *args, int enabled, int64_t next_run_unix)
{
    int set_next = next_run_unix > 0;
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    db_param_text(&p, cron);
    db_param_json(&p, args);
    if (enabled < 0)
        db_param_text(&p, NULL);
    else
        db_param_bool(&p, enabled);
    db_param_int_or_null(&p, next_run_unix, !set_next);
    db_param_bool(&p, set_next);
    return db_execp(c, &q_sched_update, &p, NULL);
}

static struct db_stmt q_sched_due =
    DB_STMT("jobs_schedule_due", 0,
            "SELECT name, cron, kind, args::text, extract(epoch FROM next_run_at)::bigint "
            "FROM schedule WHERE enabled AND (next_run_at IS NULL OR next_run_at <= now()) "
            "ORDER BY next_run_at NULLS FIRST LIMIT 50 FOR UPDATE SKIP LOCKED");

int jobs_store_schedule_due(struct db_conn *c, PGresult **res)
{
    return db_exec(c, &q_sched_due, NULL, res);
}

static struct db_stmt q_sched_fired =
    DB_STMT("jobs_schedule_fired", 3,
            "UPDATE schedule SET next_run_at = to_timestamp($2::bigint), "
            "last_job_id = coalesce($3::bigint, last_job_id), "
            "last_fired_at = CASE WHEN $3::bigint IS NULL THEN last_fired_at ELSE now() END "
            "WHERE name = $1");

int jobs_store_schedule_fired(struct db_conn *c, const char *name, int64_t next_run_unix,
                              int64_t job_id)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    db_param_int(&p, next_run_unix);
    db_param_int_or_null(&p, job_id, job_id <= 0);
    return db_execp(c, &q_sched_fired, &p, NULL);
}

static struct db_stmt q_sched_upsert = DB_STMT(
    "jobs_schedule_upsert", 6,
    "INSERT INTO schedule (name, cron, kind, args, enabled, next_run_at) "
    "VALUES ($1, $2, $3, $4::jsonb, $5::boolean, to_timestamp($6::bigint)) "
    "ON CONFLICT (name) DO UPDATE SET cron = EXCLUDED.cron, kind = EXCLUDED.kind, "
    "args = EXCLUDED.args, enabled = EXCLUDED.enabled, next_run_at = EXCLUDED.next_run_at, "
    "updated_at = now()");

int jobs_store_schedule_upsert(struct db_conn *c, const char *name, const char *cron,
                               const char *kind, const json_t *args, int enabled,
                               int64_t next_run_unix)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    db_param_text(&p, cron);
    db_param_text(&p, kind);
    if (args)
        db_param_json(&p, args);
    else
        db_param_text(&p, "{}");
    db_param_bool(&p, enabled);
    db_param_int(&p, next_run_unix);
    return db_execp(c, &q_sched_upsert, &p, NULL);
}

static struct db_stmt q_sched_delete =
    DB_STMT("jobs_schedule_delete", 1, "DELETE FROM schedule WHERE name = $1");

int jobs_store_schedule_delete(struct db_conn *c, const char *name)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    return db_execp(c, &q_sched_delete, &p, NULL);
}
