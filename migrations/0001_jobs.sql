-- 0001_jobs: the job engine (server/jobs). A job row is the whole truth about a job: the
-- engine keeps nothing in memory that another replica would need to take it over.
--
-- State machine (also in server/jobs/jobs.h and api/openapi.yaml, Job.state):
--
--   enqueue --> pending --claim--> running --ok------------------> succeeded
--                 ^  |               |  \--error, attempts left--> retrying --run_at--> (claimable)
--                 |  |               |  \--error, none left / permanent --> failed
--                 |  |               \--cancel seen by runner-----> cancelled
--                 |  \--cancel-------------------------------------> cancelled
--                 \------ operator retry (failed/cancelled; new attempt, same id)
--   running whose lease expired (its replica died) --rescue--> retrying (or failed/cancelled)
--
-- 'retrying' is claimable like 'pending' once run_at has passed; it stays visible as its own
-- state so that operators see which jobs are backing off.

-- RFC 3339 UTC text for the API, whatever the session's TimeZone is.
CREATE FUNCTION job_time(t timestamptz) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');

CREATE TABLE job (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    queue text NOT NULL DEFAULT 'default',
    args jsonb NOT NULL DEFAULT '{}',
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'succeeded', 'retrying', 'failed', 'cancelled')),
    priority integer NOT NULL DEFAULT 0,           -- lower runs first
    attempt integer NOT NULL DEFAULT 0,            -- claims so far; the current attempt when running
    max_attempts integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    run_at timestamptz NOT NULL DEFAULT now(),     -- not claimed before this
    lease_until timestamptz,                       -- running: the holder's lease
    worker_id text,                                -- running: the holding replica's instance id
    idempotency_key text,
    cancel_requested_at timestamptz,
    progress_percent integer CHECK (progress_percent BETWEEN 0 AND 100),
    progress_message text,
    result jsonb,
    errors jsonb NOT NULL DEFAULT '[]',            -- one {time, attempt, message} per failed attempt
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,                        -- start of the current / last attempt
    finished_at timestamptz,
    timeout_seconds integer NOT NULL DEFAULT 3600 CHECK (timeout_seconds >= 1),
    -- Per-kind concurrency limit, copied from the kind at enqueue so that every replica
    -- enforces the same limit without sharing code: at most max_running jobs with the same
    -- concurrency_key run at once. NULL key = unlimited.
    concurrency_key text,
    max_running integer NOT NULL DEFAULT 0
);

-- Every job row is updated at least twice (claim, finish) and the state change moves it in
-- and out of the partial indexes below, so updates are never HOT: keep 20% of each page free
-- so the new row version usually lands on the same page, and vacuum early. The default
-- scale factor (20% of the table) lets dead tuples from millions of finished claims pile up
-- in front of the claim index scan; 1% + 1000 rows keeps the hot path's pages clean.
ALTER TABLE job SET (fillfactor = 80,
                     autovacuum_vacuum_scale_factor = 0.01,
                     autovacuum_vacuum_threshold = 1000,
                     autovacuum_analyze_scale_factor = 0.02,
                     autovacuum_vacuum_cost_delay = 1);

-- The claim path: claimable unlimited jobs in claim order. Partial, so its size follows the
-- backlog and not the history (finished jobs are not in it); the claim CTE reads it in
-- order and stops after the batch size.
CREATE INDEX job_claim_idx ON job (priority, run_at, id)
    WHERE state IN ('pending', 'retrying') AND concurrency_key IS NULL;
-- The claim path of jobs under a concurrency limit, per key.
CREATE INDEX job_claim_limited_idx ON job (concurrency_key, priority, run_at, id)
    WHERE state IN ('pending', 'retrying') AND concurrency_key IS NOT NULL;
-- Running jobs: the rescuer looks for expired leases, the limited claim counts the running
-- jobs of a key, a replica extends its own leases. Small: only running jobs are in it.
CREATE INDEX job_running_idx ON job (lease_until) WHERE state = 'running';
CREATE INDEX job_running_key_idx ON job (concurrency_key)
    WHERE state = 'running' AND concurrency_key IS NOT NULL;
CREATE INDEX job_running_worker_idx ON job (worker_id) WHERE state = 'running';
-- Idempotency: a unique index, not a lookup, so that two concurrent enqueues with the same
-- key cannot both insert, and a rolled-back enqueue leaves the key free (the key is taken
-- by the row, which exists only if its transaction committed).
CREATE UNIQUE INDEX job_idempotency_key_uidx ON job (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The pruner deletes the oldest finished jobs in small batches.
CREATE INDEX job_finished_idx ON job (finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
-- API list filters (newest first by id, the cursor); state and kind are the usual filters.
CREATE INDEX job_state_id_idx ON job (state, id);
CREATE INDEX job_kind_id_idx ON job (kind, id);

-- The API representation of a job (GET /api/v1/jobs/{id}, lists, 202 replies): built in one
-- place so that every endpoint shows the same document.
CREATE FUNCTION job_doc(j job) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN jsonb_build_object(
        'id', j.id, 'kind', j.kind, 'queue', j.queue, 'args', j.args, 'state', j.state,
        'priority', j.priority, 'attempt', j.attempt, 'max_attempts', j.max_attempts,
        'run_at', job_time(j.run_at), 'lease_until', job_time(j.lease_until),
        'worker_id', j.worker_id, 'idempotency_key', j.idempotency_key,
        'cancel_requested_at', job_time(j.cancel_requested_at),
        'progress', CASE WHEN j.progress_percent IS NULL AND j.progress_message IS NULL THEN NULL
                         ELSE jsonb_build_object('percent', j.progress_percent,
                                                 'message', j.progress_message) END,
        'result', j.result, 'errors', j.errors, 'created_by', j.created_by,
        'created_at', job_time(j.created_at), 'updated_at', job_time(j.updated_at),
        'started_at', job_time(j.started_at), 'finished_at', job_time(j.finished_at),
        'timeout_seconds', j.timeout_seconds);

CREATE TABLE job_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES job (id) ON DELETE CASCADE,
    time timestamptz NOT NULL DEFAULT now(),
    level text NOT NULL CHECK (level IN ('debug', 'info', 'warn', 'error')),
    message text NOT NULL
);
-- A job's log in order (GET /jobs/{id}/logs), and the cascade when the pruner deletes jobs.
CREATE INDEX job_log_job_idx ON job_log (job_id, id);

CREATE TABLE schedule (
    name text PRIMARY KEY,
    cron text NOT NULL,                    -- 5 fields, UTC
    kind text NOT NULL,
    args jsonb NOT NULL DEFAULT '{}',
    enabled boolean NOT NULL DEFAULT true,
    next_run_at timestamptz,               -- NULL: the leader computes it from cron
    last_job_id bigint,                    -- no foreign key: the pruner may delete that job
    last_fired_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- The leader's tick looks for enabled schedules that are due (or have no next_run_at yet).
CREATE INDEX schedule_due_idx ON schedule (next_run_at) WHERE enabled;

CREATE FUNCTION schedule_doc(s schedule) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN jsonb_build_object(
        'name', s.name, 'cron', s.cron, 'kind', s.kind, 'args', s.args, 'enabled', s.enabled,
        'next_run_at', job_time(s.next_run_at), 'last_job_id', s.last_job_id,
        'last_fired_at', job_time(s.last_fired_at), 'created_at', job_time(s.created_at),
        'updated_at', job_time(s.updated_at));

-- Leadership with a TTL: one row per role ('schedule'); the holder renews it every tick and
-- another replica takes it over once lease_until has passed. A row rather than an advisory
-- lock because it survives a PostgreSQL restart without a split brain and shows in SQL who
-- leads.
CREATE TABLE job_leader (
    name text PRIMARY KEY,
    holder text NOT NULL,
    lease_until timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now()
);

-- Change feed: one NOTIFY per statement (not per row) on channel job_events with the payload
-- "id:state,id:state,..." (at most 200 entries; then "+" at the end means "more changed").
-- Workers wake on it (a new pending job, a freed concurrency slot) and the SSE endpoint
-- relays it. Per statement keeps a batch claim or completion of 100 jobs at one
-- notification; NOTIFY is delivered at commit, so a rolled-back enqueue wakes nobody.
CREATE FUNCTION job_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text;
    total bigint;
BEGIN
    SELECT string_agg(id || ':' || state, ','), (SELECT count(*) FROM changed)
      INTO payload, total
      FROM (SELECT id, state FROM changed ORDER BY id LIMIT 200) c;
    IF payload IS NOT NULL THEN
        PERFORM pg_notify('job_events', payload || CASE WHEN total > 200 THEN ',+' ELSE '' END);
    END IF;
    RETURN NULL;
END $$;

-- enable_nestloop = off: PL/pgSQL plans this join once per session, with the transition
-- tables' sizes of its first call. A session whose first update touched one row (a
-- heartbeat) would keep a nested loop and compare every pair of rows of each later batch
-- of 500 (measured: no-op throughput halved); a hash join stays linear at any size.
CREATE FUNCTION job_notify_update() RETURNS trigger LANGUAGE plpgsql
    SET enable_nestloop = off AS $$
DECLARE
    payload text;
    total bigint;
BEGIN
    -- only state changes and progress are events; lease renewals are not
    SELECT string_agg(id || ':' || state, ','), max(n)
      INTO payload, total
      FROM (SELECT n.id, n.state, count(*) OVER () AS n
              FROM changed n JOIN before o ON o.id = n.id
             WHERE o.state IS DISTINCT FROM n.state
                OR o.progress_percent IS DISTINCT FROM n.progress_percent
                OR o.cancel_requested_at IS DISTINCT FROM n.cancel_requested_at
             ORDER BY n.id LIMIT 200) c;
    IF payload IS NOT NULL THEN
        PERFORM pg_notify('job_events', payload || CASE WHEN total > 200 THEN ',+' ELSE '' END);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER job_events_insert AFTER INSERT ON job REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION job_notify_insert();
CREATE TRIGGER job_events_update AFTER UPDATE ON job
    REFERENCING OLD TABLE AS before NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION job_notify_update();
