-- 0009 flags: feature flags per environment (server/flags/, issue 11).
--
-- A flag's definition (type, variants, salt) is shared by the environments; each
-- environment has its own configuration (flag_env.config: kill switch, default and off
-- variants, rules, prerequisites, split; the shape is checked by the server, see
-- server/flags/flags_internal.h). Every change bumps flag.version, which is the flag's ETag
-- (If-Match), and writes one flag_version row holding the whole flag after the change and
-- the JSON diff from before it: the history that rollback reads.
CREATE TABLE flag (
    key text PRIMARY KEY
        CHECK (length(key) <= 200 AND key ~ '^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$'),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    owner text NOT NULL DEFAULT '' CHECK (length(owner) <= 200),
    type text NOT NULL CHECK (type IN ('boolean', 'string', 'number', 'object')),
    variants jsonb NOT NULL CHECK (jsonb_typeof(variants) = 'object'),
    -- part of the bucket's input (flags_internal.h): changing it reshuffles every split
    salt text NOT NULL DEFAULT '' CHECK (salt ~ '^[A-Za-z0-9_-]{0,64}$'),
    tags text[] NOT NULL DEFAULT '{}',
    archived boolean NOT NULL DEFAULT false,
    version bigint NOT NULL CHECK (version >= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX flag_tags ON flag USING gin (tags);

CREATE TABLE flag_env (
    flag_key text NOT NULL REFERENCES flag (key) ON DELETE CASCADE,
    environment text NOT NULL REFERENCES environment (name),
    config jsonb NOT NULL CHECK (jsonb_typeof(config) = 'object'),
    -- the flag version that last changed this environment's configuration
    version bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flag_key, environment)
);
CREATE INDEX flag_env_environment ON flag_env (environment);

-- The history. No foreign key to flag: the versions of a deleted flag stay (a flag made
-- again under the same key goes on numbering after them).
CREATE TABLE flag_version (
    flag_key text NOT NULL,
    version bigint NOT NULL,
    environment text,          -- the environment changed; NULL when the definition changed
    action text NOT NULL,      -- create, update, configure, rollback, promote, import, ...
    doc jsonb NOT NULL,        -- the whole flag after the change (definition + environments)
    diff jsonb NOT NULL,       -- [{path (JSON Pointer), from, to}] from the version before
    comment text NOT NULL DEFAULT '' CHECK (length(comment) <= 2000),
    actor text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flag_key, version)
);

-- Named, reusable sets of callers, shared by every environment's rules.
CREATE TABLE flag_segment (
    name text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    conditions jsonb NOT NULL DEFAULT '[]',
    included jsonb NOT NULL DEFAULT '[]',
    excluded jsonb NOT NULL DEFAULT '[]',
    version bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Evaluations, counted in memory by each replica and added here every minute (a replica
-- adds its own counts, so the rows hold the sum of all replicas). last_evaluated_at feeds
-- the stale list.
CREATE TABLE flag_eval_count (
    flag_key text NOT NULL,
    environment text NOT NULL,
    variant text NOT NULL,
    count bigint NOT NULL DEFAULT 0,
    last_evaluated_at timestamptz NOT NULL,
    PRIMARY KEY (flag_key, environment, variant)
);

-- Four eyes on production (QDB_FLAGS_PROD_APPROVAL=1): a production change waits here
-- until a different admin approves it. base_version is the flag version it was made
-- against: approving a request whose flag changed since is refused (stale).
CREATE TABLE flag_change_request (
    id bigserial PRIMARY KEY,
    flag_key text NOT NULL,
    environment text NOT NULL,
    action text NOT NULL,
    config jsonb NOT NULL,
    base_version bigint NOT NULL,
    comment text NOT NULL DEFAULT '',
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'approved', 'rejected')),
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    decided_by text,
    decided_at timestamptz,
    decision_comment text
);
CREATE INDEX flag_change_request_pending ON flag_change_request (id) WHERE state = 'pending';

-- Scheduled rollouts (migration waves): each step is a job (kind flags.rollout_step) that
-- runs at the step's time; the runner applies a step only while the rollout is active.
-- base_version is the flag version before the rollout: abort restores that environment's
-- configuration from it.
CREATE TABLE flag_rollout (
    id bigserial PRIMARY KEY,
    flag_key text NOT NULL REFERENCES flag (key) ON DELETE CASCADE,
    environment text NOT NULL REFERENCES environment (name),
    variant text NOT NULL,
    steps jsonb NOT NULL,      -- [{at, percentage, job_id, applied_at, version}]
    base_version bigint NOT NULL,
    state text NOT NULL DEFAULT 'active'
        CHECK (state IN ('active', 'completed', 'cancelled', 'aborted')),
    comment text NOT NULL DEFAULT '',
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A flag as the API and the history show it (without its timestamps, so that a version's
-- diff holds only what a person changed).
CREATE FUNCTION flag_doc(f flag) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'key', f.key, 'description', f.description, 'owner', f.owner, 'type', f.type,
        'variants', f.variants, 'salt', f.salt, 'tags', to_jsonb(f.tags),
        'archived', f.archived, 'version', f.version,
        'environments', COALESCE((SELECT jsonb_object_agg(fe.environment, fe.config)
                                  FROM flag_env fe WHERE fe.flag_key = f.key), '{}'::jsonb))
$$;

-- Every replica evaluates from an in-memory snapshot; a change to what it holds is
-- announced on flag_changes and each replica's listener reloads. A configuration's change
-- names its environment (the listener rebuilds only that one); a change to a definition or
-- a segment, which every environment shares, says '*' (rebuild all). PostgreSQL folds equal
-- payloads of one transaction, so an import of a thousand flags is one notification.
CREATE FUNCTION flag_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'flag_env' AND TG_LEVEL = 'ROW' THEN
        IF TG_OP = 'DELETE' THEN
            PERFORM pg_notify('flag_changes', OLD.environment);
        ELSE
            PERFORM pg_notify('flag_changes', NEW.environment);
        END IF;
    ELSE
        PERFORM pg_notify('flag_changes', '*');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER flag_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON flag
    FOR EACH STATEMENT EXECUTE FUNCTION flag_notify();
CREATE TRIGGER flag_env_changed AFTER INSERT OR UPDATE OR DELETE ON flag_env
    FOR EACH ROW EXECUTE FUNCTION flag_notify();
CREATE TRIGGER flag_env_truncated AFTER TRUNCATE ON flag_env
    FOR EACH STATEMENT EXECUTE FUNCTION flag_notify();
CREATE TRIGGER flag_segment_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON flag_segment
    FOR EACH STATEMENT EXECUTE FUNCTION flag_notify();

-- The seed: the eight flags of the platform's flags file (infrastructure design 5.4), with
-- its values in production. Per 6.2 every flag is on in development ("All enabled");
-- staging is "production-like", and integration and dr (not in that table) follow
-- production too. A value of true is served as the variant "on" of an enabled flag; false
-- is a flag whose kill switch is off (it serves "off", reason DISABLED).
CREATE TEMP TABLE flag_seed (key text, production boolean, description text);
INSERT INTO flag_seed VALUES
    ('qdb.financing.enabled', true, 'Financing portal on QDB One'),
    ('qdb.guarantee.enabled', false, 'Guarantees portal on QDB One'),
    ('qdb.advisory.enabled', false, 'Advisory portal on QDB One'),
    ('qdb.guarantee.digital-signing', false, 'Digital signing of guarantees'),
    ('qdb.cross-portal.related-items', false, 'Related items across portals'),
    ('qdb.notification.push-fcm', false, 'Push notifications through FCM'),
    ('qdb.migration.wave2-linking', true, 'Migration wave 2: account linking'),
    ('qdb.migration.legacy-login-banner', false, 'Banner on the legacy login page');
INSERT INTO flag (key, description, owner, type, variants, version)
SELECT key, description, 'platform', 'boolean', '{"on": true, "off": false}', 1 FROM flag_seed;
INSERT INTO flag_env (flag_key, environment, config, version)
SELECT s.key, e.name,
       jsonb_build_object('enabled', CASE WHEN e.name = 'development' THEN true
                                          ELSE s.production END,
                          'default_variant', 'on', 'off_variant', 'off',
                          'rules', '[]'::jsonb, 'prerequisites', '[]'::jsonb, 'split', NULL),
       1
FROM flag_seed s CROSS JOIN environment e;
INSERT INTO flag_version (flag_key, version, environment, action, doc, diff, comment, actor)
SELECT f.key, 1, NULL, 'create', flag_doc(f), '[]',
       'seeded from the platform flags file (infrastructure design 5.4)', 'system'
FROM flag f;
DROP TABLE flag_seed;
