-- 0008 audit: the transactional outbox (server/audit/audit_outbox.c, issue 10).
--
-- Every room that changes state calls audit_event_emit() in the transaction of the change,
-- beside its audit record: the row commits or rolls back with the change, so Kafka never
-- hears of a change that rolled back and never misses one that committed. The relay
-- (audit_relay.c) reads the rows not yet published, produces them with librdkafka, and sets
-- published_at only from the delivery report; published rows are pruned after
-- QDB_OUTBOX_RETENTION.
--
-- event is the whole CloudEvent 1.0 (structured mode) as it goes on the wire: its "id" is
-- this row's id, so a retry or a takeover republishes the same id and consumers can drop
-- duplicates by it. key is the Kafka message key, the event's subject: the events of one
-- object stay in one partition, in order.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    key text NOT NULL,
    event jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- set from the delivery report (or, for a dead letter, from the DLQ's)
    published_at timestamptz,
    -- transient failures so far, the last one's error, and when the next try is due
    -- (NULL: at once); a dead letter keeps the permanent error here
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    next_attempt_at timestamptz,
    -- Kafka refused it for good (too large, invalid topic): it went to the DLQ topic instead
    dead_lettered boolean NOT NULL DEFAULT false
);

-- The relay's work list: only the rows still to publish, in id order.
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
-- Pruning by age of publication.
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
-- Rows waiting out a retry backoff, by key: the relay holds back every later row of the same
-- key behind one (per-key order). Nearly always empty, so the check costs nothing.
CREATE INDEX outbox_backoff ON outbox (key, id)
    WHERE published_at IS NULL AND next_attempt_at IS NOT NULL;

-- What the relay published and dead-lettered since the outbox began, across replicas and
-- pruning (GET /api/v1/events/status). One row, updated by the leader in the statement that
-- marks the rows, so the counts never disagree with the rows.
CREATE TABLE outbox_totals (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    published bigint NOT NULL DEFAULT 0,
    dead_lettered bigint NOT NULL DEFAULT 0
);
INSERT INTO outbox_totals DEFAULT VALUES;
