/* Inside the audit room: the canonical form and the hash chain (audit_chain.c), the SQL
 * (audit_store.c), the verifier shared by the API and the daily job, and the room's
 * counters. Other rooms include audit.h only; unit tests include this. */
#ifndef QDB_AUDIT_INTERNAL_H
#define QDB_AUDIT_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "platform/buf.h"
#include "audit/audit.h"
#include "platform/db.h"

#define AUDIT_HASH_HEX 64 /* a SHA-256 as lowercase hex, without the NUL */
#define AUDIT_KEY_MIN 32  /* bytes of key material, after trailing whitespace is trimmed */
#define AUDIT_KEY_MAX 4096
/* The time as hashed and shown: microseconds, UTC. Also the SQL format of every query. */
#define AUDIT_TIME_SQL "to_char(%s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* One event as stored: every field of the canonical form plus the chain links. Strings are
 * borrowed; NULL is SQL NULL. before/after are the scrubbed values as stored. */
struct audit_row {
    int64_t seq;
    const char *time; /* "2026-11-25T12:00:00.123456Z" */
    const char *actor_subject;
    const char *actor_name;
    const char *auth_method;
    const char *token_id;
    const char *action;
    const char *resource_type;
    const char *resource_id;
    const char *environment;
    const json_t *before;
    const json_t *after;
    const char *request_id;
    int64_t job_id; /* 0: none */
    const char *client_addr;
    const char *prev_hash;
    const char *hash;
};

/* ---- canonical JSON and the chain (audit_chain.c) ---- */

/* Append the canonical JSON of `v` to `out`: object members sorted by the bytes of their
 * keys, no whitespace, strings as UTF-8 escaping only '"', '\\' and control characters
 * (\b \f \n \r \t, others \u00xx lowercase), integers in decimal, reals that are whole and
 * below 2^53 in magnitude as integers, other reals as %.17g (with ".0" when that has neither
 * '.' nor an exponent), true, false, null. Returns 0, or -1 when the value cannot be
 * represented (a string holding NUL) or `out` is full. */
int audit_canon_append(struct buf *out, const json_t *v);
/* The canonical JSON of an event: an object of exactly these members, absent ones as null:
 * action, actor_name, actor_subject, after, auth_method, before, client_addr, environment,
 * job_id, request_id, resource_id, resource_type, seq, time, token_id (prev_hash and hash
 * are not part of it). Returns 0 or -1. */
int audit_canon_event(struct buf *out, const struct audit_row *r);
/* A deep copy of `v` ready to store (new reference; NULL when v is NULL or memory ran out):
 * object members whose key looks like a secret (audit_key_is_secret) and members or array
 * elements whose string value looks like a credential (audit_value_is_secret) are removed;
 * reals that the canonical form cannot carry through jsonb exactly (|x| >= 2^53) become
 * strings. */
json_t *audit_scrub_new(const json_t *v);
/* Whether an object key names a secret: contains, ignoring case, secret, token, password,
 * passwd, passphrase, key, hash, credential, private, salt, signature, cookie, bearer or
 * authorization. */
int audit_key_is_secret(const char *key);
/* Whether a string value looks like a credential whatever its key: a qdb_ API token, a
 * JWT (eyJ...x.y.z), a PEM block or a "Bearer ..." header value. */
int audit_value_is_secret(const char *s);
/* hex = HMAC-SHA256(key, prev_hash_hex || data) as 64 lowercase hex digits + NUL.
 * Returns 0 or -1. */
int audit_chain_hmac(const unsigned char *key, size_t keylen, const char *prev_hash_hex,
                     const char *data, size_t len, char hex[AUDIT_HASH_HEX + 1]);
/* The event's hash with the process key: canonical JSON of r, chained to r->prev_hash.
 * Returns 0 or -1 (no key loaded, or the row cannot be represented). */
int audit_chain_hash_row(const struct audit_row *r, char hex[AUDIT_HASH_HEX + 1]);

/* The process key, read by audit_module's config_load. Returns 0, or -1 after printing
 * "qdb-control: QDB_AUDIT_HMAC_KEY_FILE: reason". */
int audit_key_load(const char *path);
/* Install a key directly (tests). */
void audit_key_set(const unsigned char *key, size_t len);
/* Whether a key is loaded. */
int audit_key_loaded(void);

/* ---- verifying (audit_chain.c) ---- */

/* struct audit_verify_result and audit_verify are in audit.h (the room's door). */

/* A checkpoint's MAC with the process key: HMAC-SHA256(key, hash || canonical JSON of
 * {"checked", "seq", "type": "audit.checkpoint", "verified_at"}) as 64 hex digits (see
 * migrations/0005_audit_checkpoint.sql). The "type" member keeps it from ever equalling an
 * event's canonical form. Returns 0 or -1 (no key, or hash not 64 hex digits). */
int audit_checkpoint_mac(int64_t seq, const char *hash, const char *verified_at, int64_t checked,
                         char hex[AUDIT_HASH_HEX + 1]);

/* ---- SQL (audit_store.c): each returns rows (>= 0) or a DB_ code ---- */

/* Lock the head FOR UPDATE; read last seq, last hash and the clock time (AUDIT_TIME_SQL of
 * clock_timestamp()) taken after the lock. */
int audit_store_lock_head(struct db_conn *conn, int64_t *last_seq,
                          char last_hash[AUDIT_HASH_HEX + 1], char time[40]);
/* Insert the chained rows of a round (a JSON array in seq order, as sequence_batch builds
 * it) and advance the head after each, in one statement; *appended receives how many. */
int audit_store_append(struct db_conn *conn, const char *rows_json, int64_t *appended);
/* The head without locking: last seq and hash. */
int audit_store_head(struct db_conn *conn, int64_t *last_seq, char last_hash[AUDIT_HASH_HEX + 1]);
/* The stored hash of event `seq` into hash (1 row, or 0 when absent). */
int audit_store_hash_of(struct db_conn *conn, int64_t seq, char hash[AUDIT_HASH_HEX + 1]);
/* Rows with from_seq <= seq <= to_seq, ascending, at most `limit`; columns in
 * AUDIT_COLUMNS order. Caller PQclears *res. */
int audit_store_range(struct db_conn *conn, int64_t from_seq, int64_t to_seq, int limit,
                      PGresult **res);

/* Queue an event for the sequencer (migrations/0007): r's fields but seq, time, prev_hash
 * and hash; before/after as canonical text or NULL. Returns 1 or a DB_ code. */
int audit_store_pending_add(struct db_conn *conn, const struct audit_row *r, const char *before,
                            const char *after);
/* Remove and return the oldest `limit` committed pending rows, by id: columns id,
 * actor_subject, actor_name, auth_method, token_id, action, resource_type, resource_id,
 * environment, before::text, after::text, request_id, job_id, client_addr. Caller PQclears
 * *res. */
int audit_store_pending_take(struct db_conn *conn, int limit, PGresult **res);
/* How many rows wait (committed ones only). */
int audit_store_pending_count(struct db_conn *conn, int64_t *count);
/* Whether any committed row waits: 1, 0, or a DB_ code. */
int audit_store_pending_any(struct db_conn *conn);

/* The actor of a request as the audit trail and the events name it (strings borrowed from
 * the request's principal; "anonymous" without one). */
struct audit_actor audit_actor_of_request(struct http_request *req);

/* QDB_KAFKA_TOPIC_PREFIX and QDB_EVENT_SOURCE (audit_outbox.c), from audit's config_load.
 * Returns 0 or -1 after config_error. */
int audit_outbox_config_load(void);

/* Add one event to the outbox (migrations/0008) in the caller's transaction: `event` is the
 * CloudEvent's JSON text without "id" and "time", which the statement sets from the row.
 * *id (may be NULL) gets the row's id. Returns 1 or a DB_ code. */
int audit_store_outbox_add(struct db_conn *conn, const char *topic, const char *key,
                           const char *event, int64_t *id);

/* The newest checkpoints with seq <= max_seq, newest first, at most `limit`: columns seq,
 * hash, verified_at (AUDIT_TIME_SQL), checked, mac. Caller PQclears *res. */
int audit_store_checkpoints(struct db_conn *conn, int64_t max_seq, int limit, PGresult **res);
/* Write (or replace) the checkpoint at `seq`. Returns 1, or a DB_ code. */
int audit_store_checkpoint_put(struct db_conn *conn, int64_t seq, const char *hash,
                               const char *verified_at, int64_t checked, const char *mac);

/* The filters of GET /api/v1/audit and /export; NULL = no filter. */
struct audit_filter {
    const char *actor; /* actor_subject or actor_name */
    const char *resource_type;
    const char *resource_id;
    const char *action;
    const char *environment;
    const char *since; /* RFC 3339, inclusive */
    const char *until; /* RFC 3339, exclusive */
};
/* Newest first: rows with seq < before_seq (0 = no bound), matching f, at most `limit`. */
int audit_store_list(struct db_conn *conn, const struct audit_filter *f, int64_t before_seq,
                     int limit, PGresult **res);
/* Oldest first: rows with after_seq < seq <= max_seq matching f, at most `limit`. */
int audit_store_export_page(struct db_conn *conn, const struct audit_filter *f, int64_t after_seq,
                            int64_t max_seq, int limit, PGresult **res);

/* Column order of every row result above. */
enum audit_col {
    AUDIT_C_SEQ = 0,
    AUDIT_C_TIME,
    AUDIT_C_ACTOR_SUBJECT,
    AUDIT_C_ACTOR_NAME,
    AUDIT_C_AUTH_METHOD,
    AUDIT_C_TOKEN_ID,
    AUDIT_C_ACTION,
    AUDIT_C_RESOURCE_TYPE,
    AUDIT_C_RESOURCE_ID,
    AUDIT_C_ENVIRONMENT,
    AUDIT_C_BEFORE,
    AUDIT_C_AFTER,
    AUDIT_C_REQUEST_ID,
    AUDIT_C_JOB_ID,
    AUDIT_C_CLIENT_ADDR,
    AUDIT_C_PREV_HASH,
    AUDIT_C_HASH,
};

/* A result row as the API's JSON object (new reference; NULL on a bad jsonb text). */
json_t *audit_row_json(const PGresult *res, int row);

/* ---- counters for /metrics ---- */
/* One event queued (its transaction may still roll back). */
void audit_metrics_event_recorded(void);
/* n events chained by a sequencing transaction of this replica. */
void audit_metrics_sequenced(int n);
/* The pending rows the sequencer last counted. */
void audit_metrics_pending(int64_t n);
/* Wake the replica's sequencer thread (audit.c) for a round now. Returns 1, or 0 when no
 * sequencer runs in this process (a command, a test's own process, a server stopping):
 * then the caller chains with audit_sequence itself. */
int audit_sequencer_kick(void);
/* Wait, at most timeout_ms, until the sequencer has finished a round that began after this
 * call: every event committed before the call is then chained (that round took every
 * committed pending row, this replica's and others'). Returns 1 when it did; 0 when no
 * sequencer runs in this process (the caller calls audit_sequence itself); -1 when the
 * round failed (the state store is down) or the time ran out. */
int audit_sequencer_sync(int timeout_ms);
/* Whether the sequencer's current round has run for more than 200 ms: writers outrun it,
 * and the writer's hook waits for it (back-pressure, so that the backlog stays bounded and
 * readers' waits short). */
int audit_sequencer_behind(void);
/* What every reader of audit_event (list, export, verify) calls first: returns once every
 * event committed before the call is chained (audit_sequencer_sync, at most 5 s; in a
 * process without a sequencer, audit_sequence on `conn` when it is outside a transaction).
 * A writer's request replies before its event is chained; this is what makes a reader,
 * on any replica, still see it. */
void audit_catch_up(struct db_conn *conn);
/* A verification ended: error (it could not finish) or its result; `full` when it covered
 * the whole chain, which alone clears a break seen before. */
void audit_metrics_verified(const struct audit_verify_result *r, int error, int full);
/* A checkpoint was refused (its MAC did not verify) / written. */
void audit_metrics_checkpoint(int refused);
/* The lowest broken seq a verification on this replica found (0 = none): checkpoints at
 * or past it are not trusted until a full verification passes. */
int64_t audit_metrics_first_broken(void);
/* Register the room's collector with the platform's /metrics (once, at start). Returns 0,
 * or -1 when it could not (the module's init fails). */
int audit_metrics_register(void);

/* The settings of the state store, for the export stream's own connection. */
const struct db_settings *audit_db_settings(void);

/* ---- export streams (audit_api.c) ---- */
/* Wait up to timeout_ms for every export producer thread to end (after HTTP stopped, every
 * stream has been told to). Returns the number still running. */
int audit_export_drain(int timeout_ms);

#endif
