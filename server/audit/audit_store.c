/* The audit room's SQL, one function per statement. Tables: migrations/0003_audit.sql. */
#include <stdio.h>
#include <string.h>

#include "audit/audit_internal.h"

/* Every row result, in enum audit_col order. time is rendered exactly as it is hashed. */
#define AUDIT_COLUMNS                                                                              \
    "seq, to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "                 \
    "actor_subject, actor_name, auth_method, token_id, action, resource_type, resource_id, "       \
    "environment, before::text, after::text, request_id, job_id, client_addr, prev_hash, "         \
    "hash"

/* The filters shared by list and export, on parameters $1..$7. */
#define AUDIT_FILTERS                                                                              \
    "($1::text IS NULL OR actor_subject = $1 OR actor_name = $1)"                                  \
    " AND ($2::text IS NULL OR resource_type = $2)"                                                \
    " AND ($3::text IS NULL OR resource_id = $3)"                                                  \
    " AND ($4::text IS NULL OR action = $4)"                                                       \
    " AND ($5::text IS NULL OR environment = $5)"                                                  \
    " AND ($6::timestamptz IS NULL OR time >= $6::timestamptz)"                                    \
    " AND ($7::timestamptz IS NULL OR time < $7::timestamptz)"

static void copy_hash(char out[AUDIT_HASH_HEX + 1], const char *s)
{
    snprintf(out, AUDIT_HASH_HEX + 1, "%s", s ? s : "");
}

static struct db_stmt q_lock_head =
    DB_STMT("audit_lock_head", 0,
            "SELECT last_seq, last_hash, "
            "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
            "FROM audit_chain_head WHERE id = 1 FOR UPDATE");

int audit_store_lock_head(struct db_conn *conn, int64_t *last_seq,
                          char last_hash[AUDIT_HASH_HEX + 1], char time[40])
{
    PGresult *res = NULL;
    int rc = db_exec(conn, &q_lock_head, NULL, &res);
    if (rc == 1) {
        *last_seq = db_get_int64(res, 0, 0);
        copy_hash(last_hash, db_get_str(res, 0, 1));
        snprintf(time, 40, "%s", db_get_str(res, 0, 2));
    }
    PQclear(res);
    return rc;
}

/* The round's rows, inserted in order with the head advanced after each, server-side
 * (migration 0017's audit_chain_append): one round trip for the round. */
static struct db_stmt q_append = DB_STMT("audit_append", 1, "SELECT audit_chain_append($1::jsonb)");

int audit_store_append(struct db_conn *conn, const char *rows_json, int64_t *appended)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, rows_json);
    PGresult *res = NULL;
    int rc = db_execp(conn, &q_append, &p, &res);
    *appended = rc == 1 ? db_get_int64(res, 0, 0) : 0;
    PQclear(res);
    return rc;
}

static struct db_stmt q_head =
    DB_STMT("audit_head", 0, "SELECT last_seq, last_hash FROM audit_chain_head WHERE id = 1");

int audit_store_head(struct db_conn *conn, int64_t *last_seq, char last_hash[AUDIT_HASH_HEX + 1])
{
    PGresult *res = NULL;
    int rc = db_exec(conn, &q_head, NULL, &res);
    if (rc == 1) {
        *last_seq = db_get_int64(res, 0, 0);
        copy_hash(last_hash, db_get_str(res, 0, 1));
    }
    PQclear(res);
    return rc;
}

static struct db_stmt q_hash_of =
    DB_STMT("audit_hash_of", 1, "SELECT hash FROM audit_event WHERE seq = $1::bigint");

int audit_store_hash_of(struct db_conn *conn, int64_t seq, char hash[AUDIT_HASH_HEX + 1])
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, seq);
    PGresult *res = NULL;
    int rc = db_execp(conn, &q_hash_of, &p, &res);
    if (rc == 1)
        copy_hash(hash, db_get_str(res, 0, 0));
    PQclear(res);
    return rc;
}

static struct db_stmt q_range =
    DB_STMT("audit_range", 3,
            "SELECT " AUDIT_COLUMNS " FROM audit_event WHERE seq >= $1::bigint AND "
            "seq <= $2::bigint ORDER BY seq LIMIT $3::int");

int audit_store_range(struct db_conn *conn, int64_t from_seq, int64_t to_seq, int limit,
                      PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, from_seq);
    db_param_int(&p, to_seq);
    db_param_int(&p, limit);
    return db_execp(conn, &q_range, &p, res);
}

/* Add the seven filter parameters $1..$7 of AUDIT_FILTERS, in order. */
static void filter_params(const struct audit_filter *f, struct db_params *p)
{
    db_param_text(p, f->actor);
    db_param_text(p, f->resource_type);
    db_param_text(p, f->resource_id);
    db_param_text(p, f->action);
    db_param_text(p, f->environment);
    db_param_text(p, f->since);
    db_param_text(p, f->until);
}

static struct db_stmt q_list =
    DB_STMT("audit_list", 9,
            "SELECT " AUDIT_COLUMNS " FROM audit_event WHERE " AUDIT_FILTERS
            " AND ($8::bigint IS NULL OR seq < $8::bigint) ORDER BY seq DESC LIMIT $9::int");

int audit_store_list(struct db_conn *conn, const struct audit_filter *f, int64_t before_seq,
                     int limit, PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    filter_params(f, &p);
    db_param_int_or_null(&p, before_seq, before_seq <= 0);
    db_param_int(&p, limit);
    return db_execp(conn, &q_list, &p, res);
}

static struct db_stmt q_export =
    DB_STMT("audit_export_page", 10,
            "SELECT " AUDIT_COLUMNS " FROM audit_event WHERE " AUDIT_FILTERS
            " AND seq > $8::bigint AND seq <= $9::bigint ORDER BY seq LIMIT $10::int");

int audit_store_export_page(struct db_conn *conn, const struct audit_filter *f, int64_t after_seq,
                            int64_t max_seq, int limit, PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    filter_params(f, &p);
    db_param_int(&p, after_seq);
    db_param_int(&p, max_seq);
    db_param_int(&p, limit);
    return db_execp(conn, &q_export, &p, res);
}

static struct db_stmt q_checkpoints = DB_STMT(
    "audit_checkpoints", 2,
    "SELECT seq, hash, "
    "to_char(verified_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), checked, mac "
    "FROM audit_checkpoint WHERE seq <= $1::bigint ORDER BY seq DESC LIMIT $2::int");

int audit_store_checkpoints(struct db_conn *conn, int64_t max_seq, int limit, PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, max_seq);
    db_param_int(&p, limit);
    return db_execp(conn, &q_checkpoints, &p, res);
}

/* A newer verification over the same seq replaces the row: it proved the same thing again,
 * and a damaged row at that seq is repaired. */
static struct db_stmt q_checkpoint_put = DB_STMT(
    "audit_checkpoint_put", 5,
    "INSERT INTO audit_checkpoint (seq, hash, verified_at, checked, mac) "
    "VALUES ($1::bigint, $2, $3::timestamptz, $4::bigint, $5) "
    "ON CONFLICT (seq) DO UPDATE SET hash = EXCLUDED.hash, verified_at = EXCLUDED.verified_at, "
    "checked = EXCLUDED.checked, mac = EXCLUDED.mac");

int audit_store_checkpoint_put(struct db_conn *conn, int64_t seq, const char *hash,
                               const char *verified_at, int64_t checked, const char *mac)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, seq);
    db_param_text(&p, hash);
    db_param_text(&p, verified_at);
    db_param_int(&p, checked);
    db_param_text(&p, mac);
    return db_execp(conn, &q_checkpoint_put, &p, NULL);
}

/* ---- the queue of events waiting for the chain (migrations/0007_audit_pending.sql) ---- */

static struct db_stmt q_pending_add = DB_STMT(
    "audit_pending_add", 13,
    "INSERT INTO audit_pending (actor_subject, actor_name, auth_method, token_id, action, "
    "resource_type, resource_id, environment, before, after, request_id, job_id, client_addr) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11, $12::bigint, $13)");

int audit_store_pending_add(struct db_conn *conn, const struct audit_row *r, const char *before,
                            const char *after)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, r->actor_subject);
    db_param_text(&p, r->actor_name);
    db_param_text(&p, r->auth_method);
    db_param_text(&p, r->token_id);
    db_param_text(&p, r->action);
    db_param_text(&p, r->resource_type);
    db_param_text(&p, r->resource_id);
    db_param_text(&p, r->environment);
    db_param_text(&p, before);
    db_param_text(&p, after);
    db_param_text(&p, r->request_id);
    db_param_int_or_null(&p, r->job_id, r->job_id == 0);
    db_param_text(&p, r->client_addr);
    return db_execp(conn, &q_pending_add, &p, NULL);
}

/* Taken and removed in one statement, in the sequencer's transaction (under the head's
 * lock): a rollback puts them back. Only rows whose writers committed are visible, so an
 * open writer's row waits for a later round and blocks nobody. */
static struct db_stmt q_pending_take =
    DB_STMT("audit_pending_take", 1,
            "WITH d AS (DELETE FROM audit_pending WHERE id IN "
            "(SELECT id FROM audit_pending ORDER BY id LIMIT $1::int) RETURNING *) "
            "SELECT id, actor_subject, actor_name, auth_method, token_id, action, resource_type, "
            "resource_id, environment, before::text, after::text, request_id, job_id, client_addr "
            "FROM d ORDER BY id");

int audit_store_pending_take(struct db_conn *conn, int limit, PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, limit);
    return db_execp(conn, &q_pending_take, &p, res);
}

static struct db_stmt q_pending_count =
    DB_STMT("audit_pending_count", 0, "SELECT count(*) FROM audit_pending");

int audit_store_pending_count(struct db_conn *conn, int64_t *count)
{
    struct db_params p = DB_PARAMS_INIT;
    PGresult *res = NULL;
    int rc = db_execp(conn, &q_pending_count, &p, &res);
    if (rc == 1)
        *count = db_get_int64(res, 0, 0);
    PQclear(res);
    return rc;
}

/* A read-only look, without the head's lock: most of a reader's rounds find nothing. */
static struct db_stmt q_pending_any =
    DB_STMT("audit_pending_any", 0, "SELECT EXISTS (SELECT 1 FROM audit_pending)");

int audit_store_pending_any(struct db_conn *conn)
{
    struct db_params p = DB_PARAMS_INIT;
    PGresult *res = NULL;
    int rc = db_execp(conn, &q_pending_any, &p, &res);
    if (rc == 1)
        rc = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return rc;
}

/* ---- the outbox (migrations/0008_outbox.sql) ---- */

/* One statement: the id is drawn first so that the CloudEvent's "id" is the row's id, and
 * "time" is the row's created_at, both set inside the event here, in the writer's
 * transaction. */
static struct db_stmt q_outbox_add =
    DB_STMT("audit_outbox_add", 3,
            "WITH n AS (SELECT nextval(pg_get_serial_sequence('outbox', 'id')) AS id, "
            "clock_timestamp() AS t) "
            "INSERT INTO outbox (id, topic, key, event, created_at) "
            "SELECT n.id, $1, $2, $3::jsonb || jsonb_build_object('id', n.id::text, 'time', "
            "to_char(n.t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')), n.t FROM n "
            "RETURNING id");

int audit_store_outbox_add(struct db_conn *conn, const char *topic, const char *key,
                           const char *event, int64_t *id)
{
    struct db_params p = DB_PARAMS_INIT;
    PGresult *res = NULL;
    db_param_text(&p, topic);
    db_param_text(&p, key);
    db_param_text(&p, event);
    int rc = db_execp(conn, &q_outbox_add, &p, &res);
    if (rc == 1 && id)
        *id = db_get_int64(res, 0, 0);
    PQclear(res);
    return rc;
}
