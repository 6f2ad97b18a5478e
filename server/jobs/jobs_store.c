/* The job engine's SQL, and nothing else: one function per statement. Every statement that
 * changes a claimed job is guarded by (id, worker_id, attempt, state = 'running'), so that a
 * worker that lost its lease (a zombie) can never overwrite a rescued or finished job. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs_internal.h"

/* statement_timestamp(), not now(): the limited claim runs after an advisory lock in its
 * transaction, and its start must not predate the completion that freed its slot. */
#define CLAIM_SET                                                                                  \
    "state = 'running', attempt = j.attempt + 1, worker_id = $1, "                                 \
    "lease_until = statement_timestamp() + make_interval(secs => $2::int), "                       \
    "started_at = statement_timestamp(), updated_at = statement_timestamp(), finished_at = NULL "
#define CLAIM_RETURNING                                                                            \
    "RETURNING j.id, j.kind, j.args::text, j.attempt, j.max_attempts, j.timeout_seconds, "         \
    "j.created_by, j.cancel_requested_at IS NOT NULL"
#define GUARD "id = $1 AND worker_id = $2 AND attempt = $3::int AND state = 'running'"
#define ERROR_ENTRY(attempt_, msg_)                                                                \
    "jsonb_build_array(jsonb_build_object('time', job_time(now()), 'attempt', " attempt_           \
    ", 'message', " msg_ "))"

int jobs_pg_array_add(struct buf *b, const char *s)
{
    int rc = buf_puts(b, b->len && b->data[b->len - 1] != '{' ? "," : "");
    if (!s)
        return rc | buf_puts(b, "NULL");
    rc |= buf_puts(b, "\"");
    for (; *s && rc == 0; s++) {
        if (*s == '"' || *s == '\\')
            rc |= buf_append(b, "\\", 1);
        rc |= buf_append(b, s, 1);
    }
    return rc | buf_puts(b, "\"");
}

/* ---- enqueue and read ---- */

static struct db_stmt q_insert = DB_STMT(
    "jobs_insert", 11,
    "INSERT INTO job (kind, queue, args, priority, run_at, max_attempts, idempotency_key, "
    "created_by, timeout_seconds, concurrency_key, max_running) "
    "VALUES ($1, $2, $3::jsonb, $4::int, coalesce($5::timestamptz, now()), $6::int, $7, $8, "
    "$9::int, $10, $11::int) "
    "ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING "
    "RETURNING id, job_doc(job)::text");

int jobs_store_insert(struct db_conn *c, const struct jobs_insert *j, int64_t *id, json_t **doc)
{
    if (doc)
        *doc = NULL;
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, j->kind);
    db_param_text(&p, j->queue);
    db_param_text(&p, j->args_json);
    db_param_int(&p, j->priority);
    db_param_text(&p, j->run_at);
    db_param_int(&p, j->max_attempts);
    db_param_text(&p, j->idempotency_key);
    db_param_text(&p, j->created_by);
    db_param_int(&p, j->timeout_seconds);
    db_param_text(&p, j->concurrency_key);
    db_param_int(&p, j->max_running);
    PGresult *res;
    int rc = db_execp(c, &q_insert, &p, &res);
    if (rc > 0) {
        *id = db_get_int64(res, 0, 0);
        if (doc && !(*doc = json_loads(PQgetvalue(res, 0, 1), 0, NULL)))
            rc = DB_HARD;
    }
    PQclear(res);
    return rc;
}

static struct db_stmt q_notify = DB_STMT("jobs_notify", 1, "SELECT pg_notify('job_events', $1)");

int jobs_store_notify(struct db_conn *c, const char *payload)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, payload);
    return db_execp(c, &q_notify, &p, NULL);
}

/* set_config(..., true): for this statement's own transaction only. */
static struct db_stmt q_notify_async =
    DB_STMT("jobs_notify_async", 1,
            "SELECT set_config('synchronous_commit', 'off', true), "
            "pg_notify('job_events', $1)");

int jobs_store_notify_async(struct db_conn *c, const char *payload)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, payload);
    return db_execp(c, &q_notify_async, &p, NULL);
}

static struct db_stmt q_idem =
    DB_STMT("jobs_idempotent_match", 5,
            "SELECT id, (kind = $2 AND args = $3::jsonb AND queue = $4 AND created_by = $5) "
            "FROM job WHERE idempotency_key = $1");

int jobs_store_idempotent_match(struct db_conn *c, const char *key, const char *kind,
                                const char *args_json, const char *queue, const char *created_by,
                                int64_t *id, int *same)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    db_param_text(&p, kind);
    db_param_text(&p, args_json);
    db_param_text(&p, queue);
    db_param_text(&p, created_by);
    PGresult *res;
    int rc = db_execp(c, &q_idem, &p, &res);
    if (rc > 0) {
        *id = db_get_int64(res, 0, 0);
        *same = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    }
    PQclear(res);
    return rc;
}

static struct db_stmt q_get =
    DB_STMT("jobs_get", 1, "SELECT job_doc(j)::text FROM job j WHERE id = $1::bigint");

int jobs_store_get_json(struct db_conn *c, int64_t id, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    return db_execp_json(c, &q_get, &p, doc);
}

static struct db_stmt q_exists =
    DB_STMT("jobs_exists", 1, "SELECT 1 FROM job WHERE id = $1::bigint");

int jobs_store_exists(struct db_conn *c, int64_t id)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    return db_execp(c, &q_exists, &p, NULL);
}

static struct db_stmt q_list =
    DB_STMT("jobs_list", 7,
            "SELECT id, job_doc(j)::text FROM job j "
            "WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR kind = $2) "
            "AND ($3::text IS NULL OR queue = $3) AND ($4::text IS NULL OR created_by = $4) "
            "AND ($5::timestamptz IS NULL OR created_at >= $5::timestamptz) "
            "AND ($6::bigint IS NULL OR id < $6::bigint) "
            "ORDER BY id DESC LIMIT $7::int");

int jobs_store_list(struct db_conn *c, const char *state, const char *kind, const char *queue,
                    const char *created_by, const char *since, int64_t before_id, int limit,
                    PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, state);
    db_param_text(&p, kind);
    db_param_text(&p, queue);
    db_param_text(&p, created_by);
    db_param_text(&p, since);
    db_param_int_or_null(&p, before_id, before_id <= 0);
    db_param_int(&p, limit);
    return db_execp(c, &q_list, &p, res);
}

static struct db_stmt q_logs =
    DB_STMT("jobs_logs", 3,
            "SELECT id, jsonb_build_object('id', id, 'time', job_time(time), 'level', level, "
            "'message', message)::text FROM job_log WHERE job_id = $1::bigint AND id > $2::bigint "
            "ORDER BY id LIMIT $3::int");

int jobs_store_logs(struct db_conn *c, int64_t job_id, int64_t after_id, int limit, PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, job_id);
    db_param_int(&p, after_id);
    db_param_int(&p, limit);
    return db_execp(c, &q_logs, &p, res);
}

/* ---- claim ---- */

static struct db_stmt q_claim = DB_STMT(
    "jobs_claim", 3,
    "WITH c AS (SELECT id FROM job "
    "WHERE state IN ('pending', 'retrying') AND concurrency_key IS NULL AND run_at <= now() "
    "ORDER BY priority, run_at, id LIMIT $3::int FOR UPDATE SKIP LOCKED) "
    "UPDATE job j SET " CLAIM_SET "FROM c WHERE j.id = c.id " CLAIM_RETURNING);

int jobs_store_claim(struct db_conn *c, const char *worker, long lease_s, int n, PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, worker);
    db_param_int(&p, lease_s);
    db_param_int(&p, n);
    return db_execp(c, &q_claim, &p, res);
}

/* Keys with a free slot first, then by urgency: with more keys waiting than one fetch looks
 * at, keys whose slots are all taken must not hide, fetch after fetch, the ones that could
 * run (the running count is taken again under the key's lock when claiming). */
static struct db_stmt q_limited_keys =
    DB_STMT("jobs_limited_keys", 1,
            "SELECT j.concurrency_key, max(j.max_running) FROM job j "
            "WHERE j.state IN ('pending', 'retrying') AND j.concurrency_key IS NOT NULL "
            "AND j.run_at <= now() GROUP BY j.concurrency_key "
            "ORDER BY max(j.max_running) > (SELECT count(*) FROM job r "
            "WHERE r.concurrency_key = j.concurrency_key AND r.state = 'running') DESC, "
            "min(j.priority), min(j.run_at) LIMIT $1::int");

int jobs_store_limited_keys(struct db_conn *c, int n, PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, n);
    return db_execp(c, &q_limited_keys, &p, res);
}

/* 0x6a6f6273 = "jobs": the first key of the two-key advisory lock space, so that these
 * locks never collide with another room's. */
static struct db_stmt q_lock_key =
    DB_STMT("jobs_lock_key", 1, "SELECT pg_advisory_xact_lock(1785684595, hashtext($1))");

int jobs_store_lock_key(struct db_conn *c, const char *key)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    return db_execp(c, &q_lock_key, &p, NULL);
}

/* Runs after jobs_store_lock_key in the same transaction: as its own statement it takes a
 * fresh snapshot (READ COMMITTED) after the lock, so it counts every running job that a
 * replica which held the lock before us has committed. */
static struct db_stmt q_claim_limited =
    DB_STMT("jobs_claim_limited", 5,
            "WITH c AS (SELECT id FROM job "
            "WHERE concurrency_key = $3 AND state IN ('pending', 'retrying') AND run_at <= now() "
            "ORDER BY priority, run_at, id "
            "LIMIT least($5::int, greatest(0, $4::int - (SELECT count(*) FROM job "
            "WHERE concurrency_key = $3 AND state = 'running'))) FOR UPDATE SKIP LOCKED) "
            "UPDATE job j SET " CLAIM_SET "FROM c WHERE j.id = c.id " CLAIM_RETURNING);

int jobs_store_claim_limited(struct db_conn *c, const char *key, int max_running,
                             const char *worker, long lease_s, int n, PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, worker);
    db_param_int(&p, lease_s);
    db_param_text(&p, key);
    db_param_int(&p, max_running);
    db_param_int(&p, n);
    return db_execp(c, &q_claim_limited, &p, res);
}

/* ---- finishing an attempt ---- */

static struct db_stmt q_complete =
    DB_STMT("jobs_complete", 4,
            "UPDATE job j SET state = 'succeeded', result = d.result, finished_at = now(), "
            "updated_at = now(), lease_until = NULL "
            "FROM unnest($2::bigint[], $3::int[], $4::jsonb[]) AS d(id, attempt, result) "
            "WHERE j.id = d.id AND j.worker_id = $1 AND j.attempt = d.attempt "
            "AND j.state = 'running' RETURNING j.id, j.kind, j.attempt");

int jobs_store_complete(struct db_conn *c, const char *worker, const char *ids,
                        const char *attempts, const char *results, PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, worker);
    db_param_text(&p, ids);
    db_param_text(&p, attempts);
    db_param_text(&p, results);
    return db_execp(c, &q_complete, &p, res);
}

/* A cancel requested meanwhile wins over a retry: the operator asked it to stop. */
static struct db_stmt q_fail = DB_STMT(
    "jobs_fail", 6,
    "UPDATE job SET state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled' "
    "WHEN $4::boolean AND attempt < max_attempts THEN 'retrying' ELSE 'failed' END, "
    "run_at = CASE WHEN cancel_requested_at IS NULL AND $4::boolean AND attempt < max_attempts "
    "THEN now() + make_interval(secs => $5::double precision / 1000) ELSE run_at END, "
    "finished_at = CASE WHEN cancel_requested_at IS NULL AND $4::boolean "
    "AND attempt < max_attempts THEN NULL ELSE now() END, "
    /* the entry says when the retry is due, so operators (and tests) see the backoff */
    "errors = errors || jsonb_build_array(jsonb_build_object('time', job_time(now()), "
    "'attempt', attempt, 'message', $6::text, 'retry_at', CASE WHEN cancel_requested_at IS NULL "
    "AND $4::boolean AND attempt < max_attempts THEN job_time(now() + make_interval(secs => "
    "$5::double precision / 1000)) END)), "
    "lease_until = NULL, updated_at = now() WHERE " GUARD " RETURNING state");

int jobs_store_fail(struct db_conn *c, int64_t id, const char *worker, int attempt, int retryable,
                    int64_t delay_ms, const char *message, char *state)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, worker);
    db_param_int(&p, attempt);
    db_param_bool(&p, retryable);
    db_param_int(&p, delay_ms);
    db_param_text(&p, message);
    PGresult *res;
    int rc = db_execp(c, &q_fail, &p, &res);
    if (rc > 0) {
        snprintf(state, 16, "%s", PQgetvalue(res, 0, 0));
    }
    PQclear(res);
    return rc;
}

static struct db_stmt q_cancelled =
    DB_STMT("jobs_cancelled", 3,
            "UPDATE job SET state = 'cancelled', finished_at = now(), lease_until = NULL, "
            "updated_at = now() WHERE " GUARD);

int jobs_store_cancelled(struct db_conn *c, int64_t id, const char *worker, int attempt)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, worker);
    db_param_int(&p, attempt);
    return db_execp(c, &q_cancelled, &p, NULL);
}

/* An interruption by shutdown is not the job's fault: it gets its attempt back by raising
 * max_attempts, so that a rolling restart cannot exhaust a job's retries. */
static struct db_stmt q_release_started = DB_STMT(
    "jobs_release_started", 4,
    "UPDATE job SET state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled' "
    "ELSE 'retrying' END, run_at = now(), max_attempts = greatest(max_attempts, attempt + 1), "
    "finished_at = CASE WHEN cancel_requested_at IS NOT NULL THEN now() END, "
    "errors = errors || " ERROR_ENTRY(
        "attempt", "$4::text") ", "
                               "lease_until = NULL, updated_at = now() WHERE " GUARD);

int jobs_store_release_started(struct db_conn *c, int64_t id, const char *worker, int attempt,
                               const char *message)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, worker);
    db_param_int(&p, attempt);
    db_param_text(&p, message);
    return db_execp(c, &q_release_started, &p, NULL);
}

/* A claimed job that never started is put back as it was: the claim did not count. */
static struct db_stmt q_release_unstarted =
    DB_STMT("jobs_release_unstarted", 3,
            "UPDATE job j SET state = CASE WHEN j.attempt > 1 THEN 'retrying' ELSE 'pending' END, "
            "attempt = j.attempt - 1, lease_until = NULL, started_at = NULL, updated_at = now() "
            "FROM unnest($2::bigint[], $3::int[]) AS d(id, attempt) "
            "WHERE j.id = d.id AND j.worker_id = $1 AND j.attempt = d.attempt "
            "AND j.state = 'running'");

int jobs_store_release_unstarted(struct db_conn *c, const char *worker, const char *ids,
                                 const char *attempts)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, worker);
    db_param_text(&p, ids);
    db_param_text(&p, attempts);
    return db_execp(c, &q_release_unstarted, &p, NULL);
}

/* ---- while running ---- */

static struct db_stmt q_heartbeat =
    DB_STMT("jobs_heartbeat", 4,
            "UPDATE job SET lease_until = now() + make_interval(secs => $4::int) WHERE " GUARD
            " RETURNING cancel_requested_at IS NOT NULL");

int jobs_store_heartbeat(struct db_conn *c, int64_t id, const char *worker, int attempt,
                         long lease_s, int *cancel)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, worker);
    db_param_int(&p, attempt);
    db_param_int(&p, lease_s);
    PGresult *res;
    int rc = db_execp(c, &q_heartbeat, &p, &res);
    if (rc > 0) {
        *cancel = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    }
    PQclear(res);
    return rc;
}

static struct db_stmt q_progress =
    DB_STMT("jobs_progress", 6,
            "UPDATE job SET lease_until = now() + make_interval(secs => $4::int), "
            "progress_percent = $5::int, progress_message = $6, updated_at = now() WHERE " GUARD
            " RETURNING cancel_requested_at IS NOT NULL");

int jobs_store_progress(struct db_conn *c, int64_t id, const char *worker, int attempt,
                        long lease_s, int percent, const char *msg, int *cancel)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, worker);
    db_param_int(&p, attempt);
    db_param_int(&p, lease_s);
    db_param_int(&p, percent);
    db_param_text(&p, msg);
    PGresult *res;
    int rc = db_execp(c, &q_progress, &p, &res);
    if (rc > 0) {
        *cancel = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    }
    PQclear(res);
    return rc;
}

static struct db_stmt q_log = DB_STMT(
    "jobs_log", 3, "INSERT INTO job_log (job_id, level, message) VALUES ($1::bigint, $2, $3)");

int jobs_store_log(struct db_conn *c, int64_t id, const char *level, const char *msg)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, level);
    db_param_text(&p, msg);
    return db_execp(c, &q_log, &p, NULL);
}

/* ---- maintenance ---- */

/* The renewal must never wait behind another transaction: a row lock held by, say, an
 * operator's cancel waiting on the audit chain would hold back the renewal of every other
 * lease of the replica until a statement timeout. Locked rows are skipped instead, and the
 * second count (from the statement's snapshot) tells the caller some were, so that it
 * tries again soon and does not report the replica's leases as renewed meanwhile. */
#define MY_RUNNING                                                                                 \
    "worker_id = $1 AND state = 'running' "                                                        \
    "AND started_at + make_interval(secs => timeout_seconds) > now()"
static struct db_stmt q_extend = DB_STMT(
    "jobs_extend_leases", 2,
    "WITH mine AS (SELECT id FROM job WHERE " MY_RUNNING " FOR UPDATE SKIP LOCKED), "
    "renewed AS (UPDATE job j SET lease_until = now() + make_interval(secs => $2::int) "
    "FROM mine WHERE j.id = mine.id RETURNING 1) "
    "SELECT (SELECT count(*) FROM renewed), (SELECT count(*) FROM job WHERE " MY_RUNNING ")");

int jobs_store_extend_leases(struct db_conn *c, const char *worker, long lease_s, int *skipped)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, worker);
    db_param_int(&p, lease_s);
    PGresult *res;
    *skipped = 0;
    int rc = db_execp(c, &q_extend, &p, &res);
    if (rc > 0) {
        int64_t renewed = db_get_int64(res, 0, 0), mine = db_get_int64(res, 0, 1);
        *skipped = mine > renewed ? (int)(mine - renewed) : 0;
        rc = (int)renewed;
    }
    PQclear(res);
    return rc;
}

static struct db_stmt q_rescue = DB_STMT(
    "jobs_rescue", 0,
    "WITH r AS (SELECT id FROM job WHERE state = 'running' AND lease_until < now() "
    "ORDER BY lease_until LIMIT 200 FOR UPDATE SKIP LOCKED) "
    "UPDATE job j SET state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled' "
    "WHEN j.attempt >= j.max_attempts THEN 'failed' ELSE 'retrying' END, "
    "run_at = now(), lease_until = NULL, "
    "finished_at = CASE WHEN j.cancel_requested_at IS NOT NULL OR j.attempt >= j.max_attempts "
    "THEN now() END, "
    "errors = j.errors || " ERROR_ENTRY("j.attempt",
                                        "'lease expired: ' || coalesce(j.worker_id, '?') || "
                                        "' stopped renewing it (replica died, stalled or timed "
                                        "out)'") ", "
                                                 "updated_at = now() FROM r WHERE j.id = r.id "
                                                 "RETURNING j.id, j.state");

int jobs_store_rescue(struct db_conn *c, PGresult **res)
{
    return db_exec(c, &q_rescue, NULL, res);
}

static struct db_stmt q_prune =
    DB_STMT("jobs_prune", 2,
            "DELETE FROM job WHERE id IN (SELECT id FROM job "
            "WHERE state IN ('succeeded', 'failed', 'cancelled') "
            "AND finished_at < now() - make_interval(days => $1::int) "
            "ORDER BY finished_at LIMIT $2::int FOR UPDATE SKIP LOCKED)");

int jobs_store_prune(struct db_conn *c, long days, int n)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, days);
    db_param_int(&p, n);
    return db_execp(c, &q_prune, &p, NULL);
}

static struct db_stmt q_stats =
    DB_STMT("jobs_stats", 0,
            "SELECT kind, state, count(*), coalesce(extract(epoch FROM now() - min(run_at) "
            "FILTER (WHERE state <> 'running' AND run_at <= now())), 0)::float8 "
            "FROM job WHERE state IN ('pending', 'retrying', 'running') GROUP BY kind, state");

int jobs_store_stats(struct db_conn *c, PGresult **res)
{
    return db_exec(c, &q_stats, NULL, res);
}

/* ---- operator actions ---- */

/* Pending and retrying jobs are cancelled at once; a running one gets a request that its
 * runner sees at its next heartbeat. In SET, `state` is the old value. */
static struct db_stmt q_cancel = DB_STMT(
    "jobs_cancel", 1,
    "UPDATE job SET state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END, "
    "cancel_requested_at = coalesce(cancel_requested_at, now()), "
    "finished_at = CASE WHEN state = 'running' THEN finished_at ELSE now() END, "
    "updated_at = now() "
    "WHERE id = $1::bigint AND state IN ('pending', 'retrying', 'running') RETURNING state");

int jobs_store_cancel(struct db_conn *c, int64_t id, PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    return db_execp(c, &q_cancel, &p, res);
}

/* Same id, one more attempt: errors of earlier attempts stay for the record. */
static struct db_stmt q_retry =
    DB_STMT("jobs_retry", 1,
            "UPDATE job SET state = 'pending', run_at = now(), max_attempts = attempt + 1, "
            "cancel_requested_at = NULL, finished_at = NULL, lease_until = NULL, result = NULL, "
            "progress_percent = NULL, progress_message = NULL, updated_at = now() "
            "WHERE id = $1::bigint AND state IN ('failed', 'cancelled')");

int jobs_store_retry(struct db_conn *c, int64_t id)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    return db_execp(c, &q_retry, &p, NULL);
}

/* ---- the schedule leader ---- */

static struct db_stmt q_leader =
    DB_STMT("jobs_leader_acquire", 3,
            "INSERT INTO job_leader (name, holder, lease_until) "
            "VALUES ($1, $2, now() + make_interval(secs => $3::int)) "
            "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, "
            "lease_until = EXCLUDED.lease_until, acquired_at = CASE WHEN job_leader.holder = "
            "EXCLUDED.holder THEN job_leader.acquired_at ELSE now() END "
            "WHERE job_leader.holder = EXCLUDED.holder OR job_leader.lease_until < now() "
            "RETURNING holder");

int jobs_store_leader_acquire(struct db_conn *c, const char *role, const char *holder, long ttl_s)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, role);
    db_param_text(&p, holder);
    db_param_int(&p, ttl_s);
    return db_execp(c, &q_leader, &p, NULL);
}

static struct db_stmt q_leader_release =
    DB_STMT("jobs_leader_release", 2, "DELETE FROM job_leader WHERE name = $1 AND holder = $2");

int jobs_store_leader_release(struct db_conn *c, const char *role, const char *holder)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, role);
    db_param_text(&p, holder);
    return db_execp(c, &q_leader_release, &p, NULL);
}
