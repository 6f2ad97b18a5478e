-- New jobs are announced after the enqueuing transaction commits, by the jobs room
-- (server/jobs/jobs_notify.c), no longer by this trigger inside it. A transaction that has
-- called NOTIFY takes PostgreSQL's notification queue lock (one per cluster) at its commit
-- and holds it until its commit record is flushed, so that every enqueue waited for the WAL
-- flush of the one before it: one job per flush, whatever the number of callers (issue 9:
-- 313 jobs/s). The update trigger stays: claims, completions and operator actions are
-- few (batches) and no request waits on them. A job inserted by hand in SQL is found by
-- each replica's once-a-second poll (jobs_listener.c) instead of at once.
DROP TRIGGER job_events_insert ON job;
DROP FUNCTION job_notify_insert();

-- The audit sequencer's round in one statement (server/audit/audit_chain.c): the rows it
-- chained in C (seq, time, hashes), as a JSON array in seq order, inserted one by one with
-- the head advanced after each, exactly as the statement per event did before (the head's
-- guard still sees one event per update), but without a round trip per event: on a busy
-- 2-core machine each round trip costs a wake-up of the sequencer and of its backend, and
-- a round of a few hundred events took long enough to make writers wait for it (the
-- sequencer's back-pressure). before/after are the canonical texts that were hashed,
-- parsed here as the statement's $n::jsonb parsed them. Returns the number inserted; a row
-- whose seq is not the head's next fails the whole round (the head's guard).
CREATE FUNCTION audit_chain_append(batch jsonb) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    r jsonb;
    n bigint := 0;
BEGIN
    FOR r IN SELECT value FROM jsonb_array_elements(batch) WITH ORDINALITY AS x(value, i)
             ORDER BY i LOOP
        WITH e AS (
            INSERT INTO audit_event (seq, time, actor_subject, actor_name, auth_method,
                token_id, action, resource_type, resource_id, environment, before, after,
                request_id, job_id, client_addr, prev_hash, hash)
            VALUES ((r->>'seq')::bigint, (r->>'time')::timestamptz, r->>'actor_subject',
                r->>'actor_name', r->>'auth_method', r->>'token_id', r->>'action',
                r->>'resource_type', r->>'resource_id', r->>'environment',
                (r->>'before')::jsonb, (r->>'after')::jsonb, r->>'request_id',
                (r->>'job_id')::bigint, r->>'client_addr', r->>'prev_hash', r->>'hash')
            RETURNING seq, hash)
        UPDATE audit_chain_head h SET last_seq = e.seq, last_hash = e.hash FROM e
         WHERE h.id = 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'audit_chain_append: the chain head did not advance';
        END IF;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
