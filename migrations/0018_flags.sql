-- 0018 flags: a change names the flag it changed (issue 11), so that each replica reloads
-- that one flag instead of whole environments.
--
-- Payloads on flag_changes_by_flag: "<environment>/<flag key>" for a flag's configuration
-- in one environment, "*/<flag key>" for a flag's definition (shared by every environment),
-- and "*" for anything else (a segment, which any flag's rules may name; a TRUNCATE): a full
-- reload. PostgreSQL folds equal payloads of one transaction; a batch naming many flags
-- (an import) makes the listener reload in full (server/flags/flags_snapshot.c).
--
-- flag_changes keeps 0009's payloads (an environment's name, or "*") for the replicas of
-- the previous release, which serve until the rolling update replaces them: they would
-- read a new payload as an unknown environment and miss the change. A later release drops
-- it, once no replica listens there.
CREATE OR REPLACE FUNCTION flag_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'ROW' AND TG_TABLE_NAME = 'flag_env' THEN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('flag_changes_by_flag', OLD.environment || '/' || OLD.flag_key);
            PERFORM pg_notify('flag_changes', OLD.environment);
        ELSE
            PERFORM pg_notify('flag_changes_by_flag', NEW.environment || '/' || NEW.flag_key);
            PERFORM pg_notify('flag_changes', NEW.environment);
            IF TG_OP = 'UPDATE' AND OLD.flag_key <> NEW.flag_key THEN
                PERFORM pg_notify('flag_changes_by_flag', OLD.environment || '/' || OLD.flag_key);
                PERFORM pg_notify('flag_changes', OLD.environment);
            END IF;
        END IF;
    ELSIF TG_LEVEL = 'ROW' AND TG_TABLE_NAME = 'flag' THEN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('flag_changes_by_flag', '*/' || OLD.key);
        ELSE
            PERFORM pg_notify('flag_changes_by_flag', '*/' || NEW.key);
            IF TG_OP = 'UPDATE' AND OLD.key <> NEW.key THEN
                PERFORM pg_notify('flag_changes_by_flag', '*/' || OLD.key);
            END IF;
        END IF;
        PERFORM pg_notify('flag_changes', '*');
    ELSE
        PERFORM pg_notify('flag_changes_by_flag', '*');
        PERFORM pg_notify('flag_changes', '*');
    END IF;
    RETURN NULL;
END
$$;

-- The definition's trigger per row now, so that it can name the flag; TRUNCATE stays a
-- statement's.
DROP TRIGGER flag_changed ON flag;
CREATE TRIGGER flag_changed AFTER INSERT OR UPDATE OR DELETE ON flag
    FOR EACH ROW EXECUTE FUNCTION flag_notify();
CREATE TRIGGER flag_truncated AFTER TRUNCATE ON flag
    FOR EACH STATEMENT EXECUTE FUNCTION flag_notify();
