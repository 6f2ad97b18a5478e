/* The outbox's SQL (migrations/0008_outbox.sql), one function per statement, for the emit
 * of many events at once and for the relay. The one-event insert is in audit_store.c. */
#include <stdlib.h>

#include "audit/audit_internal.h"
#include "audit/audit_outbox_internal.h"

/* Ids are drawn in array order (the subquery's ORDER BY runs before nextval), so a batch
 * keeps the order the caller gave its events; "id" and "time" are set inside each event
 * from its row, as for one event. */
static struct db_stmt q_add_many = DB_STMT(
    "audit_outbox_add_many", 1,
    "WITH e AS (SELECT a.x, a.o FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS a(x, o) "
    "ORDER BY a.o), "
    "n AS (SELECT nextval(pg_get_serial_sequence('outbox', 'id')) AS id, clock_timestamp() AS t, "
    "e.x FROM e) "
    "INSERT INTO outbox (id, topic, key, event, created_at) "
    "SELECT n.id, n.x->>'topic', n.x->>'key', (n.x->'event') || jsonb_build_object('id', "
    "n.id::text, 'time', to_char(n.t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')), "
    "n.t FROM n ORDER BY n.id");

int audit_store_outbox_add_many(struct db_conn *conn, const json_t *batch)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_json(&p, batch);
    return db_execp(conn, &q_add_many, &p, NULL);
}

/* No "last id" cursor: every batch starts again from the lowest unpublished id, so a row
 * that committed after a higher one was read (ids are drawn before commit) is read as soon
 * as it is visible, never jumped over. The rows in flight are among the lowest unpublished
 * ids, so the relay reads a window of batch + in-flight ids in index order
 * (outbox_unpublished) and leaves those out itself: the cost is bounded by that window
 * however long the backlog, and no plan has to join against the in-flight list (one that
 * did ran a nested loop over it, seconds at 100,000 rows). The NOT EXISTS keeps per-key
 * order across a retry: while a row waits out its backoff, no later row of its key goes
 * out before it (index outbox_backoff, nearly always empty). */
static struct db_stmt q_batch_ids =
    DB_STMT("audit_outbox_batch_ids", 1,
            "SELECT o.id FROM outbox o WHERE o.published_at IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM outbox b WHERE b.key = o.key AND b.id <= o.id "
            "AND b.published_at IS NULL AND b.next_attempt_at IS NOT NULL "
            "AND b.next_attempt_at > clock_timestamp()) "
            "ORDER BY o.id LIMIT $1::int");

int audit_store_outbox_batch_ids(struct db_conn *conn, int window, PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, window);
    return db_execp(conn, &q_batch_ids, &p, res);
}

static struct db_stmt q_batch_rows =
    DB_STMT("audit_outbox_batch_rows", 1,
            "SELECT id, topic, key, event::text, attempts FROM outbox WHERE id = ANY($1::bigint[]) "
            "AND published_at IS NULL ORDER BY id");

int audit_store_outbox_batch_rows(struct db_conn *conn, const char *ids, PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, ids);
    return db_execp(conn, &q_batch_rows, &p, res);
}

static struct db_stmt q_published =
    DB_STMT("audit_outbox_published", 1,
            "WITH m AS (UPDATE outbox SET published_at = clock_timestamp() "
            "WHERE id = ANY($1::bigint[]) AND published_at IS NULL RETURNING 1), "
            "c AS (SELECT count(*) AS n FROM m) "
            "UPDATE outbox_totals t SET published = t.published + c.n FROM c RETURNING c.n");

static int counted(struct db_conn *conn, struct db_stmt *st, struct db_params *p)
{
    PGresult *res = NULL;
    int rc = db_execp(conn, st, p, &res);
    if (rc == 1)
        rc = (int)db_get_int64(res, 0, 0);
    else if (rc > 1)
        rc = DB_HARD; /* one totals row */
    PQclear(res);
    return rc;
}

int audit_store_outbox_published(struct db_conn *conn, const char *ids)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, ids);
    return counted(conn, &q_published, &p);
}

static struct db_stmt q_dead = DB_STMT(
    "audit_outbox_dead", 2,
    "WITH m AS (UPDATE outbox SET published_at = clock_timestamp(), dead_lettered = true, "
    "last_error = $2 WHERE id = $1::bigint AND published_at IS NULL RETURNING 1), "
    "c AS (SELECT count(*) AS n FROM m) "
    "UPDATE outbox_totals t SET dead_lettered = t.dead_lettered + c.n FROM c RETURNING c.n");

int audit_store_outbox_dead(struct db_conn *conn, int64_t id, const char *error)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, error);
    return counted(conn, &q_dead, &p);
}

static struct db_stmt q_failed =
    DB_STMT("audit_outbox_failed", 3,
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2, "
            "next_attempt_at = clock_timestamp() + make_interval(secs => $3::double precision "
            "/ 1000) WHERE id = $1::bigint AND published_at IS NULL");

int audit_store_outbox_failed(struct db_conn *conn, int64_t id, const char *error, int64_t delay_ms)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, error);
    db_param_int(&p, delay_ms);
    return db_execp(conn, &q_failed, &p, NULL);
}

/* Oldest first, in small batches: short locks, and the index on published_at finds them. */
static struct db_stmt q_prune =
    DB_STMT("audit_outbox_prune", 2,
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at IS NOT NULL "
            "AND published_at < clock_timestamp() - make_interval(secs => $1::double precision) "
            "ORDER BY published_at LIMIT $2::int)");

int audit_store_outbox_prune(struct db_conn *conn, int64_t retention_s, int limit)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, retention_s);
    db_param_int(&p, limit);
    return db_execp(conn, &q_prune, &p, NULL);
}

/* The oldest by id (the index's first row) stands for the oldest by age: ids are drawn at
 * the insert, a few microseconds from created_at. */
static struct db_stmt q_state = DB_STMT(
    "audit_outbox_state", 0,
    "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL), "
    "(SELECT extract(epoch FROM clock_timestamp() - created_at)::double precision FROM outbox "
    "WHERE published_at IS NULL ORDER BY id LIMIT 1), t.published, t.dead_lettered "
    "FROM outbox_totals t");

int audit_store_outbox_state(struct db_conn *conn, struct audit_outbox_state *st)
{
    PGresult *res = NULL;
    int rc = db_exec(conn, &q_state, NULL, &res);
    if (rc == 1) {
        st->backlog = db_get_int64(res, 0, 0);
        const char *age = db_get_str(res, 0, 1);
        st->oldest_age_s = age ? strtod(age, NULL) : -1;
        if (st->oldest_age_s < 0 && age)
            st->oldest_age_s = 0; /* a clock step backwards */
        st->published_total = db_get_int64(res, 0, 2);
        st->dead_lettered_total = db_get_int64(res, 0, 3);
    } else if (rc == 0) {
        rc = DB_HARD; /* the migration's totals row is gone */
    }
    PQclear(res);
    return rc;
}
