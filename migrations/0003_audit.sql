-- 0003 audit: the append-only audit trail and its HMAC hash chain (server/audit/).
--
-- Every mutation writes one audit_event row in its own transaction (audit_record()). The
-- row's hash is HMAC-SHA256(key, prev_hash || canonical JSON of the row), computed by the
-- service with a key the database never sees (QDB_AUDIT_HMAC_KEY_FILE); see
-- server/audit/audit_chain.c for the canonical form. Writers are serialized on the single
-- row of audit_chain_head (SELECT ... FOR UPDATE inside the writer's transaction), so the
-- chain never forks across replicas and seq has no gaps: a rolled-back writer never took a
-- number from a sequence, it only held the head's lock.

CREATE TABLE audit_event (
    -- Position in the chain: head.last_seq + 1, assigned under the head's lock.
    seq bigint PRIMARY KEY CHECK (seq > 0),
    -- clock_timestamp() read after the head's lock, so time grows with seq on every replica.
    -- Hashed as to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"').
    time timestamptz NOT NULL,
    actor_subject text NOT NULL,      -- OIDC sub, API token subject, or "system"
    actor_name text,                  -- display name when known
    auth_method text NOT NULL,        -- oidc | dev | api-token | system | none
    token_id text,                    -- API token id when auth_method = api-token
    action text NOT NULL,             -- "<resource>.<verb>", e.g. "token.create"
    resource_type text NOT NULL,
    resource_id text,
    environment text,                 -- NULL when the change is not about one environment
    before jsonb,                     -- state before / after, secrets removed; stored in the
    after jsonb,                      -- canonical form (see audit_chain.c)
    request_id text,                  -- X-Request-Id of the HTTP request, if any
    job_id bigint,                    -- the job that made the change, if any
    client_addr text,                 -- text, not inet: hashed exactly as recorded
    prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$')
);

-- "What happened to this resource": the history view of one resource, newest first.
CREATE INDEX audit_event_resource_idx ON audit_event (resource_type, resource_id, seq);
-- "What did this person or service do": the actor filter of GET /api/v1/audit.
CREATE INDEX audit_event_actor_idx ON audit_event (actor_subject, seq);
-- Time-range filters (since/until). time grows with seq, so a BRIN index is tiny and exact
-- enough; it stays small over the 7 years the trail is kept.
CREATE INDEX audit_event_time_brin ON audit_event USING brin (time);
-- "What did this job change": lookups by job id; most events come from HTTP (job_id NULL).
CREATE INDEX audit_event_job_idx ON audit_event (job_id) WHERE job_id IS NOT NULL;
-- action and environment filters have few distinct values; they are applied on top of the
-- other filters or the seq order, without an index of their own.

-- The chain's head: exactly one row, the last seq and its hash. Writers lock it FOR UPDATE
-- in their transaction, insert seq = last_seq + 1 and advance it, all before COMMIT.
CREATE TABLE audit_chain_head (
    id smallint PRIMARY KEY CHECK (id = 1),
    last_seq bigint NOT NULL CHECK (last_seq >= 0),
    last_hash text NOT NULL CHECK (last_hash ~ '^[0-9a-f]{64}$')
);
-- The genesis: an empty chain; the first event's prev_hash is 64 zeros.
INSERT INTO audit_chain_head (id, last_seq, last_hash) VALUES (1, 0, repeat('0', 64));

-- The trail is append-only: UPDATE, DELETE and TRUNCATE are refused for every role,
-- including the owner (a superuser can disable the trigger; the hash chain then shows it).
CREATE FUNCTION audit_event_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_event_no_update_delete BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_event_refuse_change();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_refuse_change();

-- The head only moves forward one event at a time, and never goes away.
CREATE FUNCTION audit_chain_head_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.last_seq = OLD.last_seq + 1 THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_chain_head only advances by one event: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_chain_head_guard BEFORE UPDATE OR DELETE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION audit_chain_head_guard();
CREATE TRIGGER audit_chain_head_no_truncate BEFORE TRUNCATE ON audit_chain_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_head_guard();

-- The daily chain check is a default schedule of the job engine, created at start-up by
-- server/wiring/audit_verify.c through jobs_schedule_ensure(): a migration writes only its
-- own room's tables. The first text of this migration also inserted that schedule row; a
-- database migrated with it holds the same row that start-up would create, so its checksum
-- is accepted:
-- qdb-migrate: supersedes efdc186720e03fc9328973800e8274b12aeb50ace8488b44c3e765b960c060b7
