-- 0019 audit rounds: the sequencer's round (audit_chain_append, 0017) inserts its events in
-- one statement and moves the chain head once, to the round's last event, instead of once
-- per event.
--
-- Moving the head once per event updated its single row hundreds of times a second: each
-- update left a dead version behind on the head's page (the table grew to 424 kB for one
-- row), and each next update walked the chain of versions that concurrent snapshots kept
-- alive. A round of 21 events took 9 ms of which 1.5 ms were the inserts; at 1,000 events a
-- second the sequencer's backend spent half its time there, rounds ran past the writers'
-- back-pressure threshold (server/audit/audit.c) and the writers waited for them.
--
-- The head's guard keeps what it guarded, and checks more: the head still only moves
-- forward, and now only onto events that are there. Moving from OLD to NEW needs every seq
-- in (OLD.last_seq, NEW.last_seq] in audit_event (a count over the primary key: seq is
-- unique, so the count equal to the distance means no gap), the first of them chained to
-- OLD.last_hash and the last one's hash equal to NEW.last_hash. A move by one, as the
-- sequencer of the previous release makes, passes the same checks. The events' hashes
-- themselves stay the service's to compute and the chain check's to verify (audit_verify).

CREATE OR REPLACE FUNCTION audit_chain_head_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.last_seq > OLD.last_seq
       AND (SELECT count(*) FROM audit_event
             WHERE seq > OLD.last_seq AND seq <= NEW.last_seq) = NEW.last_seq - OLD.last_seq
       AND EXISTS (SELECT 1 FROM audit_event
                    WHERE seq = OLD.last_seq + 1 AND prev_hash = OLD.last_hash)
       AND EXISTS (SELECT 1 FROM audit_event
                    WHERE seq = NEW.last_seq AND hash = NEW.last_hash) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_chain_head only advances onto the events chained after it: % refused',
        TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;

-- The round: its events (the rows the sequencer chained in C, a JSON array in seq order)
-- in one INSERT, then the head moved to the last of them. The result and the failures are
-- those of 0017's: the number inserted; a seq already taken fails on the primary key, a
-- gap or a broken link on the head's guard, and the whole round with them.
CREATE OR REPLACE FUNCTION audit_chain_append(batch jsonb) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    top bigint;
    top_hash text;
BEGIN
    WITH e AS (
        INSERT INTO audit_event (seq, time, actor_subject, actor_name, auth_method,
            token_id, action, resource_type, resource_id, environment, before, after,
            request_id, job_id, client_addr, prev_hash, hash)
        SELECT (r->>'seq')::bigint, (r->>'time')::timestamptz, r->>'actor_subject',
            r->>'actor_name', r->>'auth_method', r->>'token_id', r->>'action',
            r->>'resource_type', r->>'resource_id', r->>'environment',
            (r->>'before')::jsonb, (r->>'after')::jsonb, r->>'request_id',
            (r->>'job_id')::bigint, r->>'client_addr', r->>'prev_hash', r->>'hash'
          FROM jsonb_array_elements(batch) WITH ORDINALITY AS x(r, i)
         ORDER BY i
        RETURNING seq, hash)
    SELECT count(*), max(seq) INTO n, top FROM e;
    IF n = 0 THEN
        RETURN 0;
    END IF;
    SELECT hash INTO top_hash FROM audit_event WHERE seq = top;
    UPDATE audit_chain_head SET last_seq = top, last_hash = top_hash WHERE id = 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'audit_chain_append: the chain head did not advance';
    END IF;
    RETURN n;
END $$;
