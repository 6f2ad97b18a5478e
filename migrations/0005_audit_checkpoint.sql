-- 0005 audit checkpoints: where a verification of the hash chain got to (server/audit/).
--
-- A verification that started from the genesis or from a valid checkpoint, and found every
-- event up to `seq` linked and hashed correctly, records (seq, hash of event seq) here, so
-- that the next GET /api/v1/audit/verify recomputes only the events after it instead of a
-- trail that grows to terabytes. A row is trusted only when its `mac` verifies:
--   mac = HMAC-SHA256(chain key, hash || canonical JSON {"checked": checked, "seq": seq,
--         "type": "audit.checkpoint", "verified_at": verified_at})
-- with the same key as the chain (the database never sees it), so a row written or edited
-- with SQL is refused (and logged) and the verification starts from an older checkpoint or
-- the genesis. The chain itself (audit_event) and its hash format are unchanged: an exported
-- trail still verifies offline without this table.
--
-- Not append-only like the trail: a checkpoint is a cache of work done, not evidence. A
-- newer verification over the same seq replaces the row (its mac is recomputed), and
-- deleting rows only makes the next verification longer.

CREATE TABLE audit_checkpoint (
    -- The last event the verification found intact; one row per seq.
    seq bigint PRIMARY KEY CHECK (seq > 0),
    -- That event's hash as verified (the next event's prev_hash must equal it).
    hash text NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    -- When it was verified, hashed as to_char(verified_at AT TIME ZONE 'UTC',
    -- 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') like an event's time.
    verified_at timestamptz NOT NULL,
    -- How many events the verification that wrote it had examined when it got here.
    checked bigint NOT NULL CHECK (checked >= 0),
    mac text NOT NULL CHECK (mac ~ '^[0-9a-f]{64}$')
);
-- The newest checkpoints are read by seq descending: the primary key's index serves it.
