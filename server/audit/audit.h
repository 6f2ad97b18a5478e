/* The audit trail's door. Every mutation, from HTTP or a job, records one audit event in
 * the same transaction as the change; events form an HMAC-SHA256 hash chain. */
#ifndef QDB_AUDIT_H
#define QDB_AUDIT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "module.h"
#include "platform/db.h"
#include "platform/http.h"

extern const struct qdb_module audit_module;

struct audit_entry {
    const char *action;        /* "<resource>.<verb>": "job.cancel", "token.create" */
    const char *resource_type; /* "job", "api_token", "schedule" */
    const char *resource_id;
    const char *environment;   /* NULL when the change is not about one environment */
    json_t *before;            /* borrowed, may be NULL; members that look like secrets
                                  (secret, token, password, key, ...) are removed */
    json_t *after;             /* borrowed, may be NULL; same */
    int64_t job_id;            /* 0 when not made by a job */
};

struct audit_actor {
    const char *subject;
    const char *name;
    const char *auth_method; /* "oidc", "dev", "api-token", "system" */
    const char *token_id;    /* NULL unless api-token */
};

/* Call audit_record* inside the transaction of the change it describes. It queues the
 * event (an INSERT into audit_pending, migrations/0007) and locks nothing shared, so
 * writers do not wait on each other's transactions; a rollback leaves nothing. Right after
 * the COMMIT (a db_on_commit hook) the replica's sequencer thread is woken: it gives every
 * committed pending event its seq, time and hash under the chain head's lock, all of them
 * in one short transaction (as Trillian's log sequencer does), and the writer's request
 * replies without waiting for it. Readers of the trail (list, export, verify) first wait
 * for a sequencer round that began after their request arrived, so that every event
 * committed before then is chained and shown, whichever replica wrote it. A queued event
 * is durable: a replica that dies before chaining it leaves it to the next round of any
 * replica (one runs at least every second). In a process without a sequencer (a command)
 * the hook chains on the writer's connection before db_commit returns.
 * Outside a transaction (BEGIN) it refuses with DB_HARD. before/after are copied, scrubbed
 * and stored in canonical form (see audit_internal.h); the caller keeps its references.
 * audit_record with actor NULL records the system actor ("system"); request_id and
 * client_addr may be NULL. */

/* Record an event made by an HTTP request: actor, request id and client address come from
 * the request. Call on the request's connection inside its transaction. Returns 0 or a
 * DB_ code (the caller rolls back). */
int audit_record_http(struct db_conn *conn, struct http_request *req,
                      const struct audit_entry *e);
/* Record an event made outside HTTP (job runners, schedules). Same return. */
int audit_record(struct db_conn *conn, const struct audit_actor *actor, const char *request_id,
                 const char *client_addr, const struct audit_entry *e);

/* Chain the committed pending events, oldest first, in transactions of at most 1000
 * events each, until none is left; call outside a transaction (DB_HARD otherwise). The
 * sequencer and, in a process without one, the post-commit hook call it; so may a test. Returns the
 * number chained, or a DB_ code (what was chained before it stays chained). */
int audit_sequence(struct db_conn *conn);

/* ---- events to Kafka: the transactional outbox (audit_outbox.c, migrations/0008) ----
 * A change that other services react to emits one event in its own transaction, beside its
 * audit record: the row commits or rolls back with the change, and the relay publishes it
 * to Kafka after the commit (never an event for a change that rolled back, never a
 * committed change without its event). The event is a CloudEvent 1.0 in structured mode:
 *   topic   <QDB_KAFKA_TOPIC_PREFIX>.<room>        ("app.controlplane.jobs")
 *   type    qa.qdb.controlplane.<room>.<verb>      ("qa.qdb.controlplane.jobs.enqueued")
 *   id      the outbox row's id, stable across retries; time: when it was written
 *   source  QDB_EVENT_SOURCE; subject: the object, also the Kafka key (one partition each)
 *   actor, actortype: extension attributes, the actor's subject and auth method
 *   data    the object as the API shows it, scrubbed as audit's before/after (no secret,
 *           token or key ever leaves in an event) */
struct audit_event {
    const char *room;    /* [a-z][a-z0-9-]*: "jobs", "auth", "flags" */
    const char *verb;    /* [a-z][a-z0-9_-]*: "enqueued", "revoked", "chain_broken" */
    const char *subject; /* "jobs/42": non-empty, at most 256 bytes */
    const json_t *data;  /* borrowed, may be NULL (no data member) */
};

/* Emit `ev` by `actor` (NULL: the system actor) inside the caller's transaction. Returns 0,
 * DB_HARD for a call outside a transaction or a malformed room/verb/subject (a bug: logged),
 * or another DB_ code (the caller rolls back). */
int audit_event_emit(struct db_conn *conn, const struct audit_actor *actor,
                     const struct audit_event *ev);
/* Emit the n events of evs (in that order, ids ascending) in one statement, as
 * audit_event_emit each: for a batch of changes (the job engine's batched completions).
 * Returns 0 or a DB_ code (the caller rolls back). */
int audit_events_emit(struct db_conn *conn, const struct audit_actor *actor,
                      const struct audit_event *evs, size_t n);
/* The same with the actor of the request. */
int audit_event_emit_http(struct db_conn *conn, struct http_request *req,
                          const struct audit_event *ev);
/* The topic events of `room` go to ("app.controlplane.jobs"), into out[outlen]. */
void audit_event_topic(const char *room, char *out, size_t outlen);

/* ---- verifying the chain ---- */

/* What to verify. A verification is "trusted" when it starts at the genesis (from_seq 1)
 * or after a valid checkpoint (from_seq 0): only a trusted one writes checkpoints, and
 * only over events it found intact. */
struct audit_verify_opts {
    int64_t from_seq; /* first event; 0 = right after the newest valid checkpoint (or 1) */
    int64_t to_seq;   /* last event; 0 = the head as of the start */
    /* At most this many events (0 = no bound). With from_seq 0 the verification stops
     * there (complete = 0) and writes a checkpoint, so that the next one goes on; with an
     * explicit range longer than this it refuses with AUDIT_VERIFY_TOO_LONG. */
    int64_t max_events;
    /* A trusted verification writes a checkpoint at every seq that is a multiple of this
     * (0 = never), and at its last event when checkpoint_at_end is set. */
    int64_t checkpoint_every;
    int checkpoint_at_end;
    /* Called after each page when not NULL; non-zero stops the verification (then -1). */
    int (*progress)(void *cls, int64_t checked);
    void *cls;
};

struct audit_verify_result {
    int ok;
    int64_t checked;          /* events recomputed (a checkpoint's own event is not) */
    int64_t first_broken_seq; /* 0: none */
    char reason[160];         /* why it broke, for logs (no secrets: no hashes of secrets) */
    int64_t from_seq, to_seq; /* the range looked at; to_seq < from_seq when it was empty */
    int64_t head_seq;         /* the chain head when it started */
    int complete;             /* it reached to_seq (0: stopped at max_events or a break) */
    int64_t from_checkpoint;  /* seq of the checkpoint it started after; 0 = none */
    int checkpoints_refused;  /* checkpoints whose MAC did not verify (forged or damaged) */
    int64_t checkpoints_written;
};

enum { AUDIT_VERIFY_TOO_LONG = -110 }; /* an explicit range over max_events events */

/* Verify the chain as `o` says on `conn` (outside a transaction; checkpoints are written
 * in their own statements), in pages. A break, and a refused checkpoint, are counted in
 * the metrics and logged. Returns 0 with *res filled, AUDIT_VERIFY_TOO_LONG (res->from_seq,
 * to_seq and head_seq filled), or a DB_ code / -1. */
int audit_verify(struct db_conn *conn, const struct audit_verify_opts *o,
                 struct audit_verify_result *res);

/* The configured bound on the events one request verifies (QDB_AUDIT_VERIFY_MAX_EVENTS)
 * and the checkpoint spacing (QDB_AUDIT_CHECKPOINT_EVERY). */
int64_t audit_verify_max_events(void);
int64_t audit_checkpoint_every(void);

/* The verification's result as the API shows it (GET /api/v1/audit/verify and the
 * audit.verify job's result). New reference. */
json_t *audit_verify_result_json(const struct audit_verify_result *r);

/* ---- HTTP handlers (server/routes.c) ---- */

/* GET /api/v1/audit: filters actor, resource_type, resource_id, action, environment,
 * since, until; newest first; `limit` (1..500, default 100) and the opaque `cursor` of the
 * previous page. Replies {"items": [...], "next_cursor": string|null}. */
void audit_api_list(struct http_request *req);
/* GET /api/v1/audit/verify?from_seq=&to_seq=: recompute the chain after the newest valid
 * checkpoint up to the head (at most QDB_AUDIT_VERIFY_MAX_EVENTS events), or over an
 * explicit range no longer than that (400 beyond it: POST starts a job). Replies
 * audit_verify_result_json. */
void audit_api_verify(struct http_request *req);
/* GET /api/v1/audit/export: the same filters as the list, oldest first, as JSON Lines up
 * to the head as of the request. A producer thread of its own (with its own connection)
 * reads the pages into a bounded buffer; the HTTP thread only copies from it and suspends
 * the connection while it is empty, so neither a slow client nor the SQL holds up the
 * other connections of that thread. */
void audit_api_export(struct http_request *req);
/* GET /api/v1/events/status: the outbox's state as read now, {"backlog", "oldest_age_seconds"
 * (null when empty), "published_total", "dead_lettered_total", "kafka_configured"}. */
void audit_api_events_status(struct http_request *req);

#endif
