/* PostgreSQL access: a bounded pool of libpq connections, named prepared statements, and a
 * transaction helper that retries what is retryable.
 *
 * Return convention of every db_ function that runs SQL:
 *   >= 0        success; for db_exec the number of rows returned (SELECT/RETURNING) or
 *               affected (UPDATE/DELETE without RETURNING). "No row" is 0.
 *   DB_HARD     a hard error (bad SQL, constraint other than unique, ...); logged here.
 *   DB_RETRY    retryable: serialization failure, deadlock, connection lost. db_tx retries.
 *   DB_UNIQUE   a unique constraint was violated (callers usually answer 409).
 *   DB_INVALID  SQLSTATE class 22 (data exception) or a NOT NULL / CHECK violation: the
 *               request carried a value the store refuses (400). Logged here.
 *   DB_CONFLICT another integrity violation (foreign key, exclusion, restrict): the change
 *               conflicts with other rows (409). Logged here.
 * None but DB_RETRY is retried by db_tx.
 * Each thread uses its own connection at a time (libpq's rule); the pool hands them out
 * exclusively. */
#ifndef QDB_PLATFORM_DB_H
#define QDB_PLATFORM_DB_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stdint.h>

enum { DB_HARD = -1, DB_RETRY = -2, DB_UNIQUE = -3, DB_INVALID = -4, DB_CONFLICT = -5 };

/* One SQL statement, defined once as a static const beside the C function that runs it,
 * prepared by name the first time a connection uses it:
 *     static struct db_stmt q_get = DB_STMT("flags_get", 2, "SELECT ... WHERE a=$1 AND b=$2");
 * (not const: the pool assigns `slot` lazily, atomically). Parameters are text (NULL = SQL
 * NULL); results are text. */
struct db_stmt {
    const char *name;
    int nparams;
    const char *sql;
    int slot; /* assigned on first use; 0 = unassigned */
};
#define DB_STMT(name_, nparams_, sql_) {(name_), (nparams_), (sql_), 0}

/* The one timestamp format of API responses, RFC 3339 UTC with milliseconds
 * ("2026-12-01T09:00:00.123Z") whatever the session's TimeZone, as an SQL expression for
 * DB_STMT texts: DB_TIME_JSON("created_at"). NULL stays NULL. (The jobs room's job_time()
 * of migration 0001 prints the same; an audit record's own `time` keeps its microseconds,
 * as hashed. C code prints with rfc3339_format_ms.) */
#define DB_TIME_JSON(col_)                                                                         \
    "to_char((" col_ ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

struct db_pool;
struct db_conn;

/* Settings shared by pooled and standalone connections. */
struct db_settings {
    const char *url;          /* libpq URI (borrowed; must outlive the pool) */
    int statement_timeout_ms; /* applied to every connection */
    int connect_timeout_s;    /* libpq connect_timeout */
    const char *application_name;
};

/* Create a pool of at most `size` connections. Connections are opened lazily, so this
 * succeeds even while PostgreSQL is down. Free with db_pool_free (all connections must have
 * been released). Returns NULL only when memory ran out. */
struct db_pool *db_pool_new(const struct db_settings *s, unsigned size);
void db_pool_free(struct db_pool *pool);

/* Take a connection, waiting at most `wait_ms` for one to be free; a closed one is
 * (re)connected first, one connect at a time per pool (so that a pool refills gradually, as
 * the load asks). Returns NULL when none could be had in time or PostgreSQL cannot be
 * reached, and at once during an outage (the caller answers 503). Give it back with
 * db_release. */
struct db_conn *db_acquire(struct db_pool *pool, int wait_ms);
/* Give a connection back. A connection left inside a transaction is rolled back; a broken
 * one is closed and reopened on its next use. */
void db_release(struct db_pool *pool, struct db_conn *conn);
/* Pool figures for /metrics. */
void db_pool_stats(struct db_pool *pool, unsigned *in_use, unsigned *idle, unsigned *size);

/* A connection outside any pool (migrations, LISTEN threads, workers that hold one for
 * their life). Returns NULL when it cannot connect, or at once without trying while an
 * outage's backoff says not yet (see "reachability" below). Close with db_conn_close. */
struct db_conn *db_conn_open(const struct db_settings *s);
void db_conn_close(struct db_conn *conn);
/* Whether the connection is usable; reconnects a broken one (subject to the same backoff).
 * Returns 0 or DB_RETRY. */
int db_conn_check(struct db_conn *conn);

/* ---- reachability of the state store, shared by every connection of the process ----
 * The first connect that fails starts an outage, logged once ("state store connection
 * failed"). While it lasts, one connect at a time is tried, when the backoff allows (100 ms
 * doubling up to QDB_DB_RECONNECT_MAX_MS, jittered), by whichever caller comes first, pooled
 * or standalone; every other db_acquire, db_conn_open and db_conn_check fails at once
 * without touching the network. One summary line every QDB_DB_OUTAGE_LOG_INTERVAL counts
 * the refused requests, failed connects and lost connections; the first connect that
 * succeeds ends the outage with one line ("state store reachable again", outage_ms).
 * Connection losses found by queries are logged at most once per interval too.
 * A thread that keeps its own connection may go on calling db_conn_open / db_conn_check
 * at its usual pace: during an outage they return at once, and only the backoff's one
 * attempt goes to the network (db_reconnect_wait_ms says when it is due). */
/* Settings (call once at start-up, before threads; defaults 1000 ms and 10 s). */
void db_reach_configure(int reconnect_max_ms, int log_interval_s);
/* 1 when no outage is known, 0 during one. Never blocks. */
int db_state_store_reachable(void);
/* During an outage, milliseconds until the backoff allows the next connect (0 when it
 * already does, and when there is no outage): how long a polling thread may sleep. */
int db_reconnect_wait_ms(void);
/* Counters since start, for /metrics. */
struct db_reach_stats {
    int up;
    unsigned long connect_attempts, connect_failures, requests_refused, outages;
};
void db_reach_stats(struct db_reach_stats *out);
/* The libpq connection, for LISTEN/NOTIFY and PQsocket. Borrowed. */
PGconn *db_pgconn(struct db_conn *conn);

/* Run a prepared statement with text parameters (`params` has st->nparams entries, NULL for
 * SQL NULL). When `res` is not NULL it receives the result (caller PQclears) on success.
 * Returns the row count or a DB_ code (see above). */
int db_exec(struct db_conn *conn, struct db_stmt *st, const char *const *params,
            PGresult **res);
/* Typed parameters, so that no store converts values to text by hand:
 *     struct db_params p = DB_PARAMS_INIT;
 *     db_param_int(&p, id);
 *     db_param_text(&p, name);          (NULL = SQL NULL)
 *     rc = db_execp(conn, &q_get, &p, &res);
 * Values are added in $1, $2, ... order. db_execp checks that their number is the
 * statement's, runs it like db_exec and then frees what the params own: a db_params is used
 * once. Adding past DB_MAX_PARAMS marks it invalid and db_execp refuses it (DB_HARD). */
#define DB_MAX_PARAMS 24 /* the audit insert has 17 */
struct db_params {
    int n;
    int invalid;
    const char *values[DB_MAX_PARAMS];
    char num[DB_MAX_PARAMS][24]; /* text of numbers and booleans */
    char *owned[DB_MAX_PARAMS];  /* JSON texts, freed by db_execp / db_params_clear */
};
#define DB_PARAMS_INIT {0}
void db_param_text(struct db_params *p, const char *s); /* borrowed until db_execp */
void db_param_int(struct db_params *p, int64_t v);
void db_param_int_or_null(struct db_params *p, int64_t v, int is_null);
void db_param_bool(struct db_params *p, int v);
/* JSON value as compact text with sorted keys (NULL json = SQL NULL); copied. */
void db_param_json(struct db_params *p, const json_t *v);
/* Free what p owns without running it (for a path that gives up before db_execp). */
void db_params_clear(struct db_params *p);
/* db_exec with p (consumed). Same returns. */
int db_execp(struct db_conn *conn, struct db_stmt *st, struct db_params *p, PGresult **res);
/* db_exec_json with p (consumed). Same returns. */
int db_execp_json(struct db_conn *conn, struct db_stmt *st, struct db_params *p, json_t **out);

/* Run a fixed SQL text with no parameters (BEGIN, COMMIT, LISTEN x, SET ...). Never use it
 * with text built from input. Same returns as db_exec without a result. */
int db_exec_fixed(struct db_conn *conn, const char *sql);

int db_begin(struct db_conn *conn);    /* BEGIN */
int db_commit(struct db_conn *conn);   /* COMMIT; DB_RETRY on serialization failure */
void db_rollback(struct db_conn *conn); /* ROLLBACK, errors ignored */

/* Run fn(conn, cls) once, right after the open transaction on `conn` commits: by db_commit
 * (so db_tx's final, successful commit), outside any transaction, on the same connection,
 * before db_commit returns. For work that must follow a commit but not be part of it (the
 * audit room chains the events its transaction queued). Registering the same fn and cls
 * twice in one transaction is a no-op. Dropped unrun by db_rollback (so by a db_tx attempt
 * that is retried), by a COMMIT that fails, and when the connection is released or reset.
 * Returns 0, or -1 when DB_MAX_COMMIT_HOOKS distinct hooks are already registered. */
#define DB_MAX_COMMIT_HOOKS 8
int db_on_commit(struct db_conn *conn, void (*fn)(struct db_conn *conn, void *cls), void *cls);
/* db_on_commit for a hook that owns `cls` (a heap record of what the transaction did): fn
 * takes it when the commit happens; drop(cls) is called instead wherever the hook would be
 * dropped unrun. Never deduplicated: find it again with db_commit_hook_cls. Returns 0, or
 * -1 when the hook list is full (cls stays the caller's then). */
int db_on_commit_owned(struct db_conn *conn, void (*fn)(struct db_conn *conn, void *cls),
                       void (*drop)(void *cls), void *cls);
/* The cls of the hook `fn` registered in the open transaction on `conn`, or NULL: where a
 * room keeps what its hook will take, so that a second change in one transaction adds to
 * the same record. Borrowed. */
void *db_commit_hook_cls(const struct db_conn *conn, void (*fn)(struct db_conn *conn, void *cls));

/* Run fn(conn, cls) inside BEGIN ... COMMIT on `conn`, retrying the whole transaction up to
 * 5 times with a short randomized backoff when fn or COMMIT returns DB_RETRY. fn returns
 * >= 0 to commit, or a negative value to roll back; that value is returned. When fn returns
 * a negative value other than the DB_ codes, it is passed through (use values < -100 for
 * your own reasons). */
int db_tx(struct db_conn *conn, int (*fn)(struct db_conn *conn, void *cls), void *cls);

/* Run a statement whose first row's first column is JSON text (json_agg, row_to_json...)
 * and parse it into *out (new reference; NULL when there is no row or the cell is NULL).
 * Returns 1 with *out set, 0 for no row / NULL, or a DB_ code (DB_HARD when the cell does
 * not parse). */
int db_exec_json(struct db_conn *conn, struct db_stmt *st, const char *const *params,
                 json_t **out);

/* SQLSTATE of the last error on this connection ("" when none). */
const char *db_last_sqlstate(const struct db_conn *conn);
/* The last error message on this connection, for logs (never contains parameters). */
const char *db_last_error(const struct db_conn *conn);

/* Helpers to format parameters into caller-owned buffers. */
const char *db_int64(char out[24], int64_t v);
/* Read a result field as int64 (0 when NULL or invalid). */
int64_t db_get_int64(const PGresult *res, int row, int col);
/* A field as a borrowed string, or NULL when SQL NULL. */
const char *db_get_str(const PGresult *res, int row, int col);

#endif
