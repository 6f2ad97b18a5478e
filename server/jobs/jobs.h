/* The job engine's door. The engine knows no domain: a room registers its kinds (a runner
 * and its limits) and enqueues jobs inside its own transactions.
 *
 * State machine (also in api/openapi.yaml, Job.state):
 *
 *   enqueue --> pending --claim--> running --ok------------------> succeeded
 *                 ^  |               |  \--error, attempts left--> retrying --run_at--> pending
 *                 |  |               |  \--error, none left / permanent --> failed
 *                 |  |               \--cancel seen by runner-----> cancelled
 *                 |  \--cancel-------------------------------------> cancelled
 *                 \------ operator retry (failed/cancelled; new attempt, same id)
 *   running whose lease expired (its replica died) --rescue--> retrying (or failed)
 */
#ifndef QDB_JOBS_H
#define QDB_JOBS_H

#include <jansson.h>
#include <stdint.h>

#include "module.h"
#include "platform/db.h"
#include "platform/http.h"

extern const struct qdb_module jobs_module;

struct jobs_ctx; /* a running job, handed to its runner */

/* What a runner returns. */
enum jobs_outcome {
    JOBS_OK = 0,        /* succeeded; *result (if set) is stored */
    JOBS_RETRY = 1,     /* failed, retryable: retried with backoff while attempts remain */
    JOBS_FAIL = 2,      /* failed permanently: no more attempts */
    JOBS_CANCELLED = 3, /* stopped because jobs_heartbeat said cancel; cleaned up */
};

/* A runner: `args` borrowed; may set *result (stolen by the engine). Use jobs_error to
 * say why it failed. Runs on a worker thread; must call jobs_heartbeat at least every few
 * seconds during long work and stop when it returns non-zero. */
typedef enum jobs_outcome (*jobs_runner_fn)(struct jobs_ctx *ctx, json_t *args,
                                            json_t **result);

struct jobs_kind {
    const char *kind;      /* "backup.run", "noop" */
    const char *queue;     /* default queue: "default" when NULL */
    int max_attempts;      /* default for new jobs (>= 1) */
    int timeout_seconds;   /* a running attempt longer than this is stopped and failed */
    int max_running;       /* across all replicas; 0 = unlimited */
    const char *concurrency_arg; /* with max_running: limit per distinct value of this
                                    top-level arg (e.g. "database"); NULL = per kind */
    enum http_perm direct_role;  /* who may POST /api/v1/jobs with this kind; HTTP_PUBLIC =
                                    nobody (enqueued by the room's own endpoints only) */
    /* Check args before enqueue; 0, or -1 with a reason naming the field. May be NULL. */
    int (*validate)(json_t *args, char *err, size_t errlen);
    jobs_runner_fn run;
};

/* Register a kind; call from a module's init (module.h). `k` must outlive the process (a
 * static). Returns 0, or -1 (logged) when the table is full: the module's init then fails,
 * and start-up with it. */
int jobs_register_kind(const struct jobs_kind *k);

/* A room's default schedule: created when the jobs room starts if no schedule of that name
 * exists yet (an operator's later edits, or disabling it, are kept). */
struct jobs_schedule_default {
    const char *name;      /* 1..100 of a-z 0-9 - _ . */
    const char *cron;      /* five fields, UTC */
    const char *kind;      /* a registered kind */
    const char *args_json; /* the job's args as a JSON object text; NULL = {} */
};
/* Register a default schedule; call from a module's init. `s` must outlive the process.
 * Returns 0, or -1 (logged) when its cron does not parse or the table is full. */
int jobs_schedule_ensure(const struct jobs_schedule_default *s);
const struct jobs_kind *jobs_find_kind(const char *kind);

/* A room's schedule kept in step with the room's own rows (a backup policy's cron), inside
 * the caller's transaction: create the schedule `name` or replace its cron, args and
 * enabled flag (next run recomputed). Returns 0, -1 when cron does not parse (the reason in
 * err), or a DB_ code. Not audited here: the caller audits the change that made it. */
int jobs_schedule_put(struct db_conn *c, const char *name, const char *cron, const char *kind,
                      const json_t *args, int enabled, char *err, size_t errlen);
/* Remove the schedule `name` (the room's row that owned it is gone). 1, 0 none, DB_ code. */
int jobs_schedule_remove(struct db_conn *c, const char *name);
/* Whether `expr` is a cron expression the engine takes: 1, or 0 with the reason in err. */
int jobs_cron_valid(const char *expr, char *err, size_t errlen);

/* ---- enqueue, inside the caller's transaction ---- */

struct jobs_new {
    const char *kind;
    json_t *args;                /* borrowed; NULL = {} */
    const char *queue;           /* NULL: the kind's */
    int priority;                /* lower runs first; default 0 */
    const char *run_at;          /* RFC 3339 or NULL for now */
    int max_attempts;            /* 0: the kind's */
    const char *idempotency_key; /* NULL: none */
    const char *created_by;      /* subject of the caller, or "system" */
};

enum { JOBS_E_IDEMPOTENCY = -101 }; /* same key, different args */

/* Insert a pending job on `conn` (inside the caller's BEGIN..COMMIT, so it commits with the
 * caller's change or not at all) and announce it to the workers of every replica right
 * after that commit (never by a NOTIFY inside it: jobs_notify.c says why). *id receives its id;
 * *existed (may be NULL) is 1 when an idempotency key matched an existing job with the same
 * request. Returns 0, a DB_ code, or JOBS_E_IDEMPOTENCY. */
int jobs_enqueue(struct db_conn *conn, const struct jobs_new *j, int64_t *id, int *existed);
/* jobs_enqueue, and the new job's document (what jobs_get_json would read) from the
 * insert's own statement, saving a round trip: *doc is a new reference, NULL when the
 * idempotency key matched an existing job (*existed) or on error. */
int jobs_enqueue_doc(struct db_conn *conn, const struct jobs_new *j, int64_t *id, int *existed,
                     json_t **doc);

/* The job as its API representation (new reference), or NULL when absent / on error. */
json_t *jobs_get_json(struct db_conn *conn, int64_t id);

/* Reply 202 Accepted with Location: /api/v1/jobs/{id} and the job in the body. */
void jobs_reply_accepted(struct http_request *req, struct db_conn *conn, int64_t id);
/* The same with the job's document at hand (jobs_enqueue_doc): takes `doc` (NULL: read it
 * on `conn`). */
void jobs_reply_accepted_take(struct http_request *req, struct db_conn *conn, int64_t id,
                              json_t *doc);

/* ---- inside a runner ---- */

/* Extend the lease and learn whether to stop: 0 = go on, -1 = stop (cancel requested, the
 * lease was lost, timeout, or the process is shutting down). */
int jobs_heartbeat(struct jobs_ctx *ctx);
/* Record progress (0..100) and a short message; also heartbeats. Same return. */
int jobs_progress(struct jobs_ctx *ctx, int percent, const char *msg);
/* Append to the job's log (job_log). */
void jobs_log(struct jobs_ctx *ctx, const char *level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Say why the attempt failed (kept in errors[]). */
void jobs_error(struct jobs_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Run a tool (argv[0] a full path) as a child process in its own process group: its
 * stdout and stderr go into the job's log line by line while this heartbeats, and a stop
 * (jobs_heartbeat says so) kills the group. PGPASSWORD is `password` in the child's
 * environment only (unset when NULL); as the postgres user (runuser) when as_postgres and
 * this process is root (initdb, pg_ctl and postgres refuse root). Returns the exit status
 * (0 ok, 128 + signal), -1 when it could not run, -2 when the job was told to stop. The
 * last lines of output go into tail[tailn] (may be NULL) for the job's error. */
int jobs_run_tool(struct jobs_ctx *ctx, const char *const *argv, const char *password,
                  int as_postgres, char *tail, size_t tailn);
int64_t jobs_id(const struct jobs_ctx *ctx);
int jobs_attempt(const struct jobs_ctx *ctx);
const char *jobs_created_by(const struct jobs_ctx *ctx);
/* The worker's own state-store connection, for the runner's domain transactions. Call
 * jobs_heartbeat / jobs_progress / jobs_log outside your own transaction on it: inside one
 * they would commit or roll back with it (heartbeats are skipped there; the replica keeps
 * renewing the lease meanwhile). */
struct db_conn *jobs_db(struct jobs_ctx *ctx);

/* ---- HTTP handlers (routes.c) ---- */

/* GET /api/v1/jobs: filters state, kind, queue, created_by, since; cursor + limit. */
void jobs_api_list(struct http_request *req);
/* POST /api/v1/jobs: direct enqueue of kinds whose direct_role allows it; Idempotency-Key. */
void jobs_api_create(struct http_request *req);
/* GET /api/v1/jobs/{id} */
void jobs_api_get(struct http_request *req);
/* GET /api/v1/jobs/{id}/logs: cursor + limit. */
void jobs_api_logs(struct http_request *req);
/* POST /api/v1/jobs/{id}/cancel (audited). */
void jobs_api_cancel(struct http_request *req);
/* POST /api/v1/jobs/{id}/retry: a failed or cancelled job, same id, one more attempt
 * (audited). */
void jobs_api_retry(struct http_request *req);
/* GET /api/v1/jobs/events: Server-Sent Events of job state changes on every replica. */
void jobs_api_events(struct http_request *req);
/* GET /api/v1/schedules */
void jobs_api_schedules_list(struct http_request *req);
/* POST /api/v1/schedules (audited). */
void jobs_api_schedules_create(struct http_request *req);
/* PATCH /api/v1/schedules/{name} (audited). */
void jobs_api_schedules_update(struct http_request *req);

#endif
