/* The audit trail's door. Every mutation, from HTTP or a job, records one audit event in
 * the same transaction as the change; events form an HMAC-SHA256 hash chain. */
#ifndef QDB_AUDIT_H
#define QDB_AUDIT_H

#include <jansson.h>
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

/* Call audit_record* as the last statement before COMMIT: it locks the chain's head row
 * (audit_chain_head, FOR UPDATE) until the transaction ends, which serializes writers on
 * every replica so the chain never forks; the shorter that lock is held, the better.
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

/* ---- verifying the chain ---- */

struct audit_verify_result {
    int ok;
    int64_t checked;
    int64_t first_broken_seq; /* 0: none */
    char reason[160];         /* why it broke, for logs (no secrets: no hashes of secrets) */
};

/* Recompute the chain over [from_seq, to_seq] (to_seq 0 = up to the head) on `conn`, in
 * pages, calling progress(cls) after each page when not NULL (it returns non-zero to
 * stop: then -1). A break is counted in the metrics and logged. Returns 0 with *res filled,
 * or a DB_ code / -1. */
int audit_verify(struct db_conn *conn, int64_t from_seq, int64_t to_seq,
                 int (*progress)(void *cls, int64_t checked), void *cls,
                 struct audit_verify_result *res);

/* ---- HTTP handlers (server/routes.c) ---- */

/* GET /api/v1/audit: filters actor, resource_type, resource_id, action, environment,
 * since, until; newest first; `limit` (1..500, default 100) and the opaque `cursor` of the
 * previous page. Replies {"items": [...], "next_cursor": string|null}. */
void audit_api_list(struct http_request *req);
/* GET /api/v1/audit/verify?from_seq=&to_seq=: recompute the chain over the range (default
 * the whole chain). Replies {"ok", "checked", "first_broken_seq"} (+ "reason" when broken). */
void audit_api_verify(struct http_request *req);
/* GET /api/v1/audit/export: the same filters as the list, oldest first, as JSON Lines,
 * streamed in pages from a connection of its own up to the head as of the request. */
void audit_api_export(struct http_request *req);

#endif
