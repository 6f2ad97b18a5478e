/* The SQL of the backup room, and nothing else: one function per statement. */
#include <stdio.h>
#include <string.h>

#include "backup/backup_internal.h"

/* ---- policies ---- */

static struct db_stmt q_policy_list = DB_STMT(
    "backup_policy_list", 0,
    "SELECT coalesce(jsonb_agg(backup_policy_doc(p) ORDER BY p.component), '[]')::text "
    "FROM backup_policy p");

int bk_store_policy_list(struct db_conn *c, json_t **arr)
{
    struct db_params p = DB_PARAMS_INIT;
    return db_execp_json(c, &q_policy_list, &p, arr);
}

static struct db_stmt q_policy_get =
    DB_STMT("backup_policy_get", 1,
            "SELECT backup_policy_doc(p)::text FROM backup_policy p WHERE component = $1");

int bk_store_policy_get(struct db_conn *c, const char *component, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, component);
    return db_execp_json(c, &q_policy_get, &p, doc);
}

static struct db_stmt q_policy_insert = DB_STMT(
    "backup_policy_insert", 1,
    "INSERT INTO backup_policy AS p (component, title, method, environment, database_name, "
    "schedule, verify_schedule, offsite_schedule, retention_count, retention_days, "
    "rpo_seconds, rto_seconds, tables, enabled) "
    "SELECT x.component, coalesce(x.title, ''), x.method, x.environment, x.database, "
    "x.schedule, x.verify_schedule, x.offsite_schedule, x.retention_count, x.retention_days, "
    "x.rpo_seconds, x.rto_seconds, coalesce(x.tables, '[]'), coalesce(x.enabled, true) "
    "FROM jsonb_to_record($1::jsonb) AS x(component text, title text, method text, "
    "environment text, database text, schedule text, verify_schedule text, "
    "offsite_schedule text, retention_count int, retention_days int, rpo_seconds int, "
    "rto_seconds int, tables jsonb, enabled boolean) "
    "RETURNING backup_policy_doc(p)::text");

int bk_store_policy_insert(struct db_conn *c, const json_t *body, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_json(&p, body);
    return db_execp_json(c, &q_policy_insert, &p, doc);
}

/* A member present in the patch (even null) replaces the column; an absent one keeps it. */
static struct db_stmt q_policy_update = DB_STMT(
    "backup_policy_update", 2,
    "UPDATE backup_policy p SET "
    "title = CASE WHEN $2::jsonb ? 'title' THEN x.title ELSE p.title END, "
    "environment = CASE WHEN $2::jsonb ? 'environment' THEN x.environment ELSE p.environment END, "
    "database_name = CASE WHEN $2::jsonb ? 'database' THEN x.database ELSE p.database_name END, "
    "schedule = CASE WHEN $2::jsonb ? 'schedule' THEN x.schedule ELSE p.schedule END, "
    "verify_schedule = CASE WHEN $2::jsonb ? 'verify_schedule' THEN x.verify_schedule "
    "ELSE p.verify_schedule END, "
    "offsite_schedule = CASE WHEN $2::jsonb ? 'offsite_schedule' THEN x.offsite_schedule "
    "ELSE p.offsite_schedule END, "
    "retention_count = CASE WHEN $2::jsonb ? 'retention_count' THEN x.retention_count "
    "ELSE p.retention_count END, "
    "retention_days = CASE WHEN $2::jsonb ? 'retention_days' THEN x.retention_days "
    "ELSE p.retention_days END, "
    "rpo_seconds = coalesce(x.rpo_seconds, p.rpo_seconds), "
    "rto_seconds = coalesce(x.rto_seconds, p.rto_seconds), "
    "tables = coalesce(x.tables, p.tables), enabled = coalesce(x.enabled, p.enabled), "
    "updated_at = now() "
    "FROM jsonb_to_record($2::jsonb) AS x(title text, environment text, database text, "
    "schedule text, verify_schedule text, offsite_schedule text, retention_count int, "
    "retention_days int, rpo_seconds int, rto_seconds int, tables jsonb, enabled boolean) "
    "WHERE p.component = $1 RETURNING backup_policy_doc(p)::text");

int bk_store_policy_update(struct db_conn *c, const char *component, const json_t *patch,
                           json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, component);
    db_param_json(&p, patch);
    return db_execp_json(c, &q_policy_update, &p, doc);
}

static struct db_stmt q_policy_delete =
    DB_STMT("backup_policy_delete", 1, "DELETE FROM backup_policy WHERE component = $1");

int bk_store_policy_delete(struct db_conn *c, const char *component)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, component);
    return db_execp(c, &q_policy_delete, &p, NULL);
}

static struct db_stmt q_policy_for = DB_STMT(
    "backup_policy_for", 3,
    "SELECT backup_policy_doc(p)::text FROM backup_policy p WHERE environment = $1 "
    "AND database_name = $2 AND ($3 = '' OR method = $3) AND enabled "
    "ORDER BY method, component LIMIT 1");

int bk_store_policy_for(struct db_conn *c, const char *environment, const char *database,
                        const char *method, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, environment);
    db_param_text(&p, database);
    db_param_text(&p, method ? method : "");
    return db_execp_json(c, &q_policy_for, &p, doc);
}

/* ---- the catalog ---- */

static struct db_stmt q_backup_insert = DB_STMT(
    "backup_insert", 6,
    "INSERT INTO backup (database_id, environment, database_name, policy, method, job_id) "
    "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id");

int bk_store_backup_insert(struct db_conn *c, int64_t database_id, const char *environment,
                           const char *database, const char *policy, const char *method,
                           int64_t job_id, int64_t *id)
{
    struct db_params p = DB_PARAMS_INIT;
    PGresult *res = NULL;
    db_param_int(&p, database_id);
    db_param_text(&p, environment);
    db_param_text(&p, database);
    db_param_text(&p, policy);
    db_param_text(&p, method);
    db_param_int_or_null(&p, job_id, job_id <= 0);
    int rc = db_execp(c, &q_backup_insert, &p, &res);
    if (rc > 0)
        *id = db_get_int64(res, 0, 0);
    PQclear(res);
    return rc;
}

static struct db_stmt q_backup_set_path =
    DB_STMT("backup_set_path", 2, "UPDATE backup SET path = $2 WHERE id = $1");

int bk_store_backup_set_path(struct db_conn *c, int64_t id, const char *path)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, path);
    return db_execp(c, &q_backup_set_path, &p, NULL);
}

static struct db_stmt q_backup_finish = DB_STMT(
    "backup_finish", 9,
    "UPDATE backup SET status = $2, size_bytes = $3, duration_ms = $4, start_lsn = $5, "
    "stop_lsn = $6, timeline = $7, row_counts = $8::jsonb, error = $9, finished_at = now() "
    "WHERE id = $1 AND status = 'running'");

int bk_store_backup_finish(struct db_conn *c, int64_t id, const char *status, int64_t size,
                           int64_t duration_ms, const char *start_lsn, const char *stop_lsn,
                           int timeline, const json_t *row_counts, const char *error)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, status);
    db_param_int_or_null(&p, size, size < 0);
    db_param_int_or_null(&p, duration_ms, duration_ms < 0);
    db_param_text(&p, start_lsn);
    db_param_text(&p, stop_lsn);
    db_param_int_or_null(&p, timeline, timeline <= 0);
    db_param_json(&p, row_counts);
    db_param_text(&p, error);
    return db_execp(c, &q_backup_finish, &p, NULL);
}

static struct db_stmt q_file_insert =
    DB_STMT("backup_file_insert", 4,
            "INSERT INTO backup_file (backup_id, name, size_bytes, sha256) VALUES ($1, $2, $3, $4)");

int bk_store_file_insert(struct db_conn *c, int64_t id, const char *name, int64_t size,
                         const char *sha256)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, name);
    db_param_int(&p, size);
    db_param_text(&p, sha256);
    return db_execp(c, &q_file_insert, &p, NULL);
}

static struct db_stmt q_backup_get = DB_STMT(
    "backup_get", 2,
    "SELECT (backup_doc(b) || CASE WHEN $2::boolean THEN jsonb_build_object("
    "'files', (SELECT coalesce(jsonb_agg(jsonb_build_object('name', f.name, 'size_bytes', "
    "f.size_bytes, 'sha256', f.sha256) ORDER BY f.name), '[]') FROM backup_file f "
    "WHERE f.backup_id = b.id), "
    "'verifications', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', v.id, 'job_id', "
    "v.job_id, 'ok', v.ok, 'restore_seconds', v.restore_seconds, 'checks', v.checks, "
    "'detail', v.detail, 'finished_at', job_time(v.finished_at)) ORDER BY v.id DESC), '[]') "
    "FROM backup_verification v WHERE v.backup_id = b.id)) ELSE '{}' END)::text "
    "FROM backup b WHERE b.id = $1");

int bk_store_backup_get(struct db_conn *c, int64_t id, int with_detail, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_bool(&p, with_detail);
    return db_execp_json(c, &q_backup_get, &p, doc);
}

static struct db_stmt q_backup_list = DB_STMT(
    "backup_list", 3,
    "SELECT coalesce(jsonb_agg(backup_doc(b) ORDER BY b.id DESC), '[]')::text FROM "
    "(SELECT * FROM backup WHERE ($1::bigint = 0 OR database_id = $1) "
    "AND ($2::text IS NULL OR status = $2) ORDER BY id DESC LIMIT $3) b");

int bk_store_backup_list(struct db_conn *c, int64_t database_id, const char *status, int limit,
                         json_t **arr)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, database_id);
    db_param_text(&p, status);
    db_param_int(&p, limit);
    return db_execp_json(c, &q_backup_list, &p, arr);
}

static struct db_stmt q_files =
    DB_STMT("backup_files", 1,
            "SELECT name, size_bytes, sha256 FROM backup_file WHERE backup_id = $1 ORDER BY name");

int bk_store_files(struct db_conn *c, int64_t id, PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    return db_execp(c, &q_files, &p, res);
}

static struct db_stmt q_verification_insert = DB_STMT(
    "backup_verification_insert", 6,
    "INSERT INTO backup_verification (backup_id, job_id, ok, restore_seconds, checks, detail) "
    "VALUES ($1, $2, $3, $4::double precision, $5::jsonb, $6)");

int bk_store_verification_insert(struct db_conn *c, int64_t id, int64_t job_id, int ok,
                                 double restore_seconds, const json_t *checks,
                                 const char *detail)
{
    struct db_params p = DB_PARAMS_INIT;
    char secs[40];
    snprintf(secs, sizeof secs, "%.3f", restore_seconds);
    db_param_int(&p, id);
    db_param_int_or_null(&p, job_id, job_id <= 0);
    db_param_bool(&p, ok);
    db_param_text(&p, restore_seconds < 0 ? NULL : secs);
    db_param_json(&p, checks);
    db_param_text(&p, detail ? detail : "");
    return db_execp(c, &q_verification_insert, &p, NULL);
}

/* A pruned backup stays pruned: its history is kept, its files are gone. */
static struct db_stmt q_backup_set_verified = DB_STMT(
    "backup_set_verified", 3,
    "UPDATE backup SET status = CASE WHEN $2::boolean THEN 'verified' ELSE 'bad' END, "
    "verified_at = now(), restore_seconds = coalesce($3::double precision, restore_seconds) "
    "WHERE id = $1 AND status IN ('completed', 'verified', 'bad')");

int bk_store_backup_set_verified(struct db_conn *c, int64_t id, int ok, double restore_seconds)
{
    struct db_params p = DB_PARAMS_INIT;
    char secs[40];
    snprintf(secs, sizeof secs, "%.3f", restore_seconds);
    db_param_int(&p, id);
    db_param_bool(&p, ok);
    db_param_text(&p, restore_seconds < 0 ? NULL : secs);
    return db_execp(c, &q_backup_set_verified, &p, NULL);
}

static struct db_stmt q_prune_candidates = DB_STMT(
    "backup_prune_candidates", 2,
    "SELECT id, status, path, extract(epoch FROM now() - coalesce(finished_at, started_at))"
    "::bigint FROM backup WHERE database_id = $1 AND method = $2 AND status IN ('completed', 'verified', "
    "'bad', 'failed') ORDER BY id DESC FOR UPDATE");

int bk_store_prune_candidates(struct db_conn *c, int64_t database_id, const char *method,
                              PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, database_id);
    db_param_text(&p, method);
    return db_execp(c, &q_prune_candidates, &p, res);
}

static struct db_stmt q_backup_pruned = DB_STMT(
    "backup_pruned", 2,
    "UPDATE backup SET status = 'pruned', pruned_at = now(), prune_reason = $2 WHERE id = $1");

int bk_store_backup_pruned(struct db_conn *c, int64_t id, const char *reason)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, reason);
    return db_execp(c, &q_backup_pruned, &p, NULL);
}

static struct db_stmt q_backup_offsite = DB_STMT(
    "backup_offsite", 2, "UPDATE backup SET offsite_path = $2, offsite_at = now() WHERE id = $1");

int bk_store_backup_offsite(struct db_conn *c, int64_t id, const char *path)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, path);
    return db_execp(c, &q_backup_offsite, &p, NULL);
}

static struct db_stmt q_newest_backup = DB_STMT(
    "backup_newest", 1,
    "SELECT id FROM backup WHERE database_id = $1 AND status IN ('completed', 'verified') "
    "ORDER BY id DESC LIMIT 1");

int bk_store_newest_backup(struct db_conn *c, int64_t database_id, int64_t *id)
{
    struct db_params p = DB_PARAMS_INIT;
    PGresult *res = NULL;
    db_param_int(&p, database_id);
    int rc = db_execp(c, &q_newest_backup, &p, &res);
    if (rc > 0)
        *id = db_get_int64(res, 0, 0);
    PQclear(res);
    return rc;
}

static struct db_stmt q_newest_verified = DB_STMT(
    "backup_newest_verified", 1,
    "SELECT id FROM backup WHERE database_id = $1 AND status = 'verified' "
    "ORDER BY id DESC LIMIT 1");

int bk_store_newest_verified(struct db_conn *c, int64_t database_id, int64_t *id)
{
    struct db_params p = DB_PARAMS_INIT;
    PGresult *res = NULL;
    db_param_int(&p, database_id);
    int rc = db_execp(c, &q_newest_verified, &p, &res);
    if (rc > 0)
        *id = db_get_int64(res, 0, 0);
    PQclear(res);
    return rc;
}

/* ---- reports and status ---- */

static struct db_stmt q_report_insert = DB_STMT(
    "backup_report_insert", 8,
    "INSERT INTO backup_report AS r (component, started_at, finished_at, ok, size_bytes, "
    "restore_seconds, detail, reported_by) VALUES ($1, to_timestamp($2::bigint / 1e6), "
    "to_timestamp($3::bigint / 1e6), $4, $5, $6::double precision, $7, $8) "
    "RETURNING jsonb_build_object('id', r.id, 'component', r.component, 'started_at', "
    "job_time(r.started_at), 'finished_at', job_time(r.finished_at), 'ok', r.ok, "
    "'size_bytes', r.size_bytes, 'restore_seconds', r.restore_seconds, 'detail', r.detail, "
    "'reported_by', r.reported_by)::text");

int bk_store_report_insert(struct db_conn *c, const char *component, int64_t started_us,
                           int64_t finished_us, int ok, int64_t size, double restore_seconds,
                           const char *detail, const char *by, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    char secs[40];
    snprintf(secs, sizeof secs, "%.3f", restore_seconds);
    db_param_text(&p, component);
    db_param_int(&p, started_us);
    db_param_int(&p, finished_us);
    db_param_bool(&p, ok);
    db_param_int_or_null(&p, size, size < 0);
    db_param_text(&p, restore_seconds < 0 ? NULL : secs);
    db_param_text(&p, detail ? detail : "");
    db_param_text(&p, by);
    return db_execp_json(c, &q_report_insert, &p, doc);
}

/* Per policy: the age of its last good backup (a completed or verified one taken here, or
 * an ok report), the last measured restore time and how old that measurement is. */
static struct db_stmt q_status_rows = DB_STMT(
    "backup_status_rows", 0,
    "SELECT p.component, backup_policy_doc(p)::text, "
    "extract(epoch FROM now() - greatest(b.last_good, r.last_good))::bigint, "
    "coalesce(v.restore_seconds, r.restore_seconds), "
    "extract(epoch FROM now() - coalesce(v.verified_at, r.restored_at))::bigint, "
    "s.state, ws.doc FROM backup_policy p "
    "LEFT JOIN LATERAL (SELECT max(finished_at) AS last_good FROM backup WHERE policy = "
    "p.component AND status IN ('completed', 'verified')) b ON true "
    "LEFT JOIN LATERAL (SELECT x.restore_seconds, x.verified_at FROM backup x WHERE "
    "x.policy = p.component AND x.status = 'verified' ORDER BY x.verified_at DESC LIMIT 1) v "
    "ON true "
    "LEFT JOIN LATERAL (SELECT max(finished_at) FILTER (WHERE ok) AS last_good, "
    "(array_agg(restore_seconds ORDER BY finished_at DESC) FILTER (WHERE ok AND "
    "restore_seconds IS NOT NULL))[1] AS restore_seconds, max(finished_at) FILTER (WHERE ok "
    "AND restore_seconds IS NOT NULL) AS restored_at FROM backup_report WHERE component = "
    "p.component) r ON true "
    "LEFT JOIN backup_status_state s ON s.component = p.component "
    "LEFT JOIN LATERAL (SELECT backup_wal_stream_doc(w)::text AS doc FROM backup_wal_stream w "
    "WHERE w.component = p.component ORDER BY w.updated_at DESC LIMIT 1) ws ON true "
    "ORDER BY p.component");

int bk_store_status_rows(struct db_conn *c, PGresult **res)
{
    return db_exec(c, &q_status_rows, NULL, res);
}

static struct db_stmt q_status_state_set = DB_STMT(
    "backup_status_state_set", 2,
    "INSERT INTO backup_status_state (component, state) VALUES ($1, $2) ON CONFLICT "
    "(component) DO UPDATE SET state = EXCLUDED.state, changed_at = now() "
    "WHERE backup_status_state.state <> EXCLUDED.state");

int bk_store_status_state_set(struct db_conn *c, const char *component, const char *state)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, component);
    db_param_text(&p, state);
    return db_execp(c, &q_status_state_set, &p, NULL);
}

/* ---- WAL streaming (backup_wal.c) ---- */

static struct db_stmt q_wal_policies = DB_STMT(
    "backup_wal_policies", 0,
    "SELECT component, environment, database_name FROM backup_policy WHERE enabled AND "
    "method = 'basebackup' AND rpo_seconds = 0 ORDER BY component");

int bk_store_wal_policies(struct db_conn *c, PGresult **res)
{
    return db_exec(c, &q_wal_policies, NULL, res);
}

static struct db_stmt q_wal_put = DB_STMT(
    "backup_wal_put", 16,
    "INSERT INTO backup_wal_stream AS w (database_id, component, environment, database_name, "
    "slot, wal_dir, holder, receiver_pid, state, received_lsn, server_lsn, lag_bytes, "
    "lag_seconds, caught_up_at, restarts, last_exit, started_at, updated_at) VALUES ($1, $2, "
    "$3, $4, $5, $6, $7, $8::integer, $9, $10, $11, $12::bigint, $13::double precision, "
    "CASE WHEN $14::boolean THEN now() END, $15::integer, $16, now(), now()) "
    "ON CONFLICT (database_id) DO UPDATE SET component = EXCLUDED.component, "
    "environment = EXCLUDED.environment, database_name = EXCLUDED.database_name, "
    "slot = EXCLUDED.slot, wal_dir = EXCLUDED.wal_dir, holder = EXCLUDED.holder, "
    "receiver_pid = EXCLUDED.receiver_pid, state = EXCLUDED.state, "
    "received_lsn = coalesce(EXCLUDED.received_lsn, w.received_lsn), "
    "server_lsn = coalesce(EXCLUDED.server_lsn, w.server_lsn), lag_bytes = EXCLUDED.lag_bytes, "
    "lag_seconds = EXCLUDED.lag_seconds, "
    "caught_up_at = coalesce(EXCLUDED.caught_up_at, w.caught_up_at), "
    "restarts = EXCLUDED.restarts, last_exit = EXCLUDED.last_exit, "
    "started_at = CASE WHEN w.holder = EXCLUDED.holder THEN w.started_at ELSE now() END, "
    "updated_at = now()");

int bk_store_wal_put(struct db_conn *c, const struct bk_wal_row *w)
{
    struct db_params p = DB_PARAMS_INIT;
    char secs[40];
    snprintf(secs, sizeof secs, "%.3f", w->lag_seconds);
    db_param_int(&p, w->database_id);
    db_param_text(&p, w->component);
    db_param_text(&p, w->environment);
    db_param_text(&p, w->database);
    db_param_text(&p, w->slot);
    db_param_text(&p, w->wal_dir);
    db_param_text(&p, w->holder);
    db_param_int_or_null(&p, w->receiver_pid, w->receiver_pid <= 0);
    db_param_text(&p, w->state);
    db_param_text(&p, w->received_lsn[0] ? w->received_lsn : NULL);
    db_param_text(&p, w->server_lsn[0] ? w->server_lsn : NULL);
    db_param_int_or_null(&p, w->lag_bytes, w->lag_bytes < 0);
    db_param_text(&p, w->lag_seconds < 0 ? NULL : secs);
    db_param_bool(&p, w->caught_up);
    db_param_int(&p, w->restarts);
    db_param_text(&p, w->last_exit);
    return db_execp(c, &q_wal_put, &p, NULL);
}

static struct db_stmt q_wal_stopped = DB_STMT(
    "backup_wal_stopped", 3,
    "UPDATE backup_wal_stream SET state = 'stopped', receiver_pid = NULL, last_exit = $3, "
    "updated_at = now() WHERE database_id = $1 AND holder = $2");

int bk_store_wal_stopped(struct db_conn *c, int64_t database_id, const char *holder,
                         const char *why)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, database_id);
    db_param_text(&p, holder);
    db_param_text(&p, why);
    return db_execp(c, &q_wal_stopped, &p, NULL);
}

static struct db_stmt q_wal_get = DB_STMT(
    "backup_wal_get", 1,
    "SELECT backup_wal_stream_doc(w)::text FROM backup_wal_stream w WHERE database_id = $1");

int bk_store_wal_get(struct db_conn *c, int64_t database_id, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, database_id);
    return db_execp_json(c, &q_wal_get, &p, doc);
}
