-- Database roles and grants for a deployed control plane: who may change what.
--
--   qdb_owner  owns the schema and every table; runs `qdb-control migrate` (a Kubernetes Job
--              or init container before a rollout). Nothing else logs in as it.
--   qdb_app    what the serving replicas log in as (QDB_DATABASE_URL). It reads and writes
--              the state tables but can only ADD to the audit trail: no UPDATE, DELETE or
--              TRUNCATE on audit_event, and it cannot disable the triggers that refuse
--              them either, because only a table's owner (or a superuser) can.
--
-- The triggers of migrations/0003_audit.sql refuse UPDATE/DELETE/TRUNCATE for every role,
-- the owner included; these grants are the second wall. A superuser can still get through
-- both (ALTER TABLE ... DISABLE TRIGGER): the HMAC hash chain is what shows it, since the
-- key lives only in the service (QDB_AUDIT_HMAC_KEY_FILE), not in the database.
--
-- Run as a superuser, connected to the control plane's database: once before the first
-- `qdb-control migrate` (creates the roles), and again after every migrate (idempotent;
-- new tables get their grants from the default privileges below, the audit revokes are
-- re-applied here):
--
--   psql -v ON_ERROR_STOP=1 -d qdb_control -f deploy/postgres/grants.sql
--
-- Passwords are not set here: the platform's Vault database secrets engine issues them
-- (ALTER ROLE ... PASSWORD, or a Vault-managed role that is a member of these).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'qdb_owner') THEN
        CREATE ROLE qdb_owner LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'qdb_app') THEN
        CREATE ROLE qdb_app LOGIN;
    END IF;
END
$$;

-- The schema belongs to the owner; nobody else creates objects in it.
ALTER SCHEMA public OWNER TO qdb_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO qdb_app;
-- Every replica checks the schema version at start-up; it creates schema_migrations only
-- when it is missing, so qdb_app needs no CREATE on the schema.

-- Tables made before this script ran (e.g. by a first migrate as a superuser) move to the
-- owner, so that qdb_app is never a table's owner.
DO $$
DECLARE t record;
BEGIN
    FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public'
             AND tableowner <> 'qdb_owner' LOOP
        EXECUTE format('ALTER TABLE public.%I OWNER TO qdb_owner', t.tablename);
    END LOOP;
END
$$;

-- State tables: read and write.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO qdb_app;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO qdb_app;
ALTER DEFAULT PRIVILEGES FOR ROLE qdb_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO qdb_app;
ALTER DEFAULT PRIVILEGES FOR ROLE qdb_owner IN SCHEMA public
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO qdb_app;

-- The audit trail only grows. (Skipped while the tables do not exist yet: the first run,
-- before the first migrate.)
DO $$
BEGIN
    IF to_regclass('public.audit_event') IS NOT NULL THEN
        REVOKE ALL ON audit_event FROM qdb_app;
        GRANT SELECT, INSERT ON audit_event TO qdb_app;
        -- The chain head is locked (SELECT ... FOR UPDATE needs UPDATE) and advanced,
        -- never removed.
        REVOKE ALL ON audit_chain_head FROM qdb_app;
        GRANT SELECT, UPDATE ON audit_chain_head TO qdb_app;
    END IF;
    -- Events waiting for the sequencer (migrations/0007): a queue, not the trail. Writers
    -- insert, the sequencer reads and deletes what it chained; nobody edits a queued event.
    IF to_regclass('public.audit_pending') IS NOT NULL THEN
        REVOKE ALL ON audit_pending FROM qdb_app;
        GRANT SELECT, INSERT, DELETE ON audit_pending TO qdb_app;
    END IF;
    -- The applied migrations: read by every replica at start-up, written by migrate only.
    IF to_regclass('public.schema_migrations') IS NOT NULL THEN
        REVOKE ALL ON schema_migrations FROM qdb_app;
        GRANT SELECT ON schema_migrations TO qdb_app;
    END IF;
END
$$;
