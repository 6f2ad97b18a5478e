-- 0007 audit: events waiting for their place in the chain (server/audit/).
--
-- Until now every writer locked audit_chain_head FOR UPDATE in its own transaction and held
-- it until its COMMIT, so writers queued behind each other's whole transactions (statement
-- timeouts of audit_lock_head under load). Now audit_record() only inserts the event here,
-- in the writer's transaction: it commits or rolls back with the change it describes, and
-- locks nothing shared. Right after the commit (a post-commit hook on the same connection,
-- and a sweeper every second for any left behind) the sequencer takes the head's lock in a
-- short transaction of its own, gives every committed pending row the next seq, time
-- (clock_timestamp() after the lock, as before) and hash, inserts it into audit_event and
-- deletes it here. The chain, its format and its verification are unchanged; seq still has
-- no gaps. A rolled-back writer leaves no row; a row of a writer still open is invisible to
-- the sequencer and waits for the next round.
--
-- A queue, not a record: the service deletes its rows once chained (so qdb_app has DELETE
-- here, never on audit_event), and readers (list, export, verify) read audit_event only.
-- The columns are audit_event's minus seq, time, prev_hash and hash, stored as they will
-- be hashed (before/after: the scrubbed canonical text, read back through jsonb).
CREATE TABLE audit_pending (
    id bigserial PRIMARY KEY,         -- arrival order; the sequencer chains in this order
    actor_subject text NOT NULL,
    actor_name text,
    auth_method text NOT NULL,
    token_id text,
    action text NOT NULL,
    resource_type text NOT NULL,
    resource_id text,
    environment text,
    before jsonb,
    after jsonb,
    request_id text,
    job_id bigint,
    client_addr text,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp() -- how long rows wait (metrics)
);
