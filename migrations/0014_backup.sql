-- The backup room (server/backup/): a policy per protected component of section 7.1 of the
-- infrastructure design, the catalog of the backups taken with the SHA-256 of every file
-- written, the history of their test restores, and the runs that other systems report.

-- One row per protected component. method 'basebackup' and 'dump' are run here against a
-- managed database of the inventory (environment, database_name); 'external' components
-- (Kafka, OpenSearch, MinIO, Vault, etcd) are backed up by their own systems, which report
-- each run through POST /api/v1/backups/reports. Schedules are cron texts (UTC) that the
-- room keeps in step with the job engine's schedules "backup.<component>.<what>".
CREATE TABLE backup_policy (
    component text PRIMARY KEY CHECK (component ~ '^[a-z][a-z0-9-]{0,62}$'),
    title text NOT NULL DEFAULT '',
    method text NOT NULL CHECK (method IN ('basebackup', 'dump', 'external')),
    environment text REFERENCES environment (name),
    database_name text CHECK (database_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    schedule text,
    verify_schedule text,
    offsite_schedule text,
    -- keep this many newest backups, and/or those younger than this many days
    retention_count integer CHECK (retention_count >= 1),
    retention_days integer CHECK (retention_days >= 1),
    rpo_seconds integer NOT NULL CHECK (rpo_seconds >= 0),
    rto_seconds integer NOT NULL CHECK (rto_seconds >= 1),
    -- the tables whose rows a test restore counts ([] = every user table)
    tables jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(tables) = 'array'),
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (method = 'external' OR (environment IS NOT NULL AND database_name IS NOT NULL
                                   AND (retention_count IS NOT NULL OR retention_days IS NOT NULL)))
);

-- 7.1, the PostgreSQL rows against the production databases of 2.1 (0010_inventory.sql),
-- and the five components other systems back up. 7 years = 2557 days.
INSERT INTO backup_policy (component, title, method, environment, database_name, schedule,
    verify_schedule, offsite_schedule, retention_days, rpo_seconds, rto_seconds) VALUES
    ('mpi', 'MPI Database', 'basebackup', 'production', 'qdb_mpi', '0 1 * * *', '0 5 1 * *',
     NULL, 30, 0, 3600),
    ('read-store', 'Read Store', 'basebackup', 'production', 'qdb_read_store', '0 2 * * *',
     '0 6 1 * *', NULL, 7, 300, 7200),
    ('audit', 'Audit Database', 'basebackup', 'production', 'qdb_audit', '0 3 * * *',
     '0 7 1 * *', '0 4 * * 0', 2557, 0, 14400),
    ('keycloak', 'Keycloak DB', 'dump', 'production', 'qdb_keycloak', '30 1 * * *',
     '30 5 1 * *', NULL, 30, 86400, 3600),
    ('openfga', 'OpenFGA DB', 'dump', 'production', 'qdb_openfga', '30 2 * * *',
     '30 6 1 * *', NULL, 30, 86400, 3600);
INSERT INTO backup_policy (component, title, method, retention_days, rpo_seconds, rto_seconds)
VALUES
    ('kafka', 'Kafka (topic replication, factor 3)', 'external', NULL, 0, 1800),
    ('opensearch', 'OpenSearch (snapshot to MinIO)', 'external', 30, 86400, 14400),
    ('minio', 'MinIO documents (erasure coding + weekly offsite)', 'external', NULL, 0, 7200),
    ('vault', 'Vault (raft snapshots)', 'external', 30, 3600, 3600),
    ('etcd', 'Kubernetes state (etcd backup)', 'external', 7, 3600, 1800);

-- A backup taken here. database_id is the inventory's id at the time; environment and
-- database_name are kept so that the catalog outlives the inventory row.
CREATE TABLE backup (
    id bigserial PRIMARY KEY,
    database_id bigint NOT NULL,
    environment text NOT NULL,
    database_name text NOT NULL,
    policy text,
    method text NOT NULL CHECK (method IN ('basebackup', 'dump')),
    -- running -> completed -> verified | bad; running -> failed; any finished -> pruned
    status text NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'completed', 'failed', 'verified', 'bad', 'pruned')),
    path text NOT NULL DEFAULT '',
    size_bytes bigint,
    duration_ms bigint,
    start_lsn text,
    stop_lsn text,
    timeline integer,
    row_counts jsonb,
    job_id bigint,
    error text,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    verified_at timestamptz,
    restore_seconds double precision,
    offsite_path text,
    offsite_at timestamptz,
    pruned_at timestamptz,
    prune_reason text
);
CREATE INDEX backup_database_idx ON backup (database_id, id DESC);

CREATE TABLE backup_file (
    backup_id bigint NOT NULL REFERENCES backup (id) ON DELETE CASCADE,
    name text NOT NULL,
    size_bytes bigint NOT NULL,
    sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    PRIMARY KEY (backup_id, name)
);

-- Every verification (checksums, pg_verifybackup, test restore) of a backup.
CREATE TABLE backup_verification (
    id bigserial PRIMARY KEY,
    backup_id bigint NOT NULL REFERENCES backup (id) ON DELETE CASCADE,
    job_id bigint,
    ok boolean NOT NULL,
    restore_seconds double precision,
    checks jsonb NOT NULL DEFAULT '{}',
    detail text NOT NULL DEFAULT '',
    finished_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX backup_verification_backup_idx ON backup_verification (backup_id, id DESC);

-- A run reported by the system that backs a component up.
CREATE TABLE backup_report (
    id bigserial PRIMARY KEY,
    component text NOT NULL REFERENCES backup_policy (component) ON DELETE CASCADE,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL CHECK (finished_at >= started_at),
    ok boolean NOT NULL,
    size_bytes bigint CHECK (size_bytes >= 0),
    restore_seconds double precision CHECK (restore_seconds >= 0),
    detail text NOT NULL DEFAULT '',
    reported_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX backup_report_component_idx ON backup_report (component, finished_at DESC);

-- The last RPO/RTO state seen per component, so that entering breach emits one event.
CREATE TABLE backup_status_state (
    component text PRIMARY KEY REFERENCES backup_policy (component) ON DELETE CASCADE,
    state text NOT NULL CHECK (state IN ('ok', 'warning', 'breach')),
    changed_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION backup_policy_doc(p backup_policy) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN jsonb_build_object(
        'component', p.component, 'title', p.title, 'method', p.method,
        'environment', p.environment, 'database', p.database_name, 'schedule', p.schedule,
        'verify_schedule', p.verify_schedule, 'offsite_schedule', p.offsite_schedule,
        'retention_count', p.retention_count, 'retention_days', p.retention_days,
        'rpo_seconds', p.rpo_seconds, 'rto_seconds', p.rto_seconds, 'tables', p.tables,
        'enabled', p.enabled, 'created_at', job_time(p.created_at),
        'updated_at', job_time(p.updated_at));

CREATE FUNCTION backup_doc(b backup) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN jsonb_build_object(
        'id', b.id, 'database_id', b.database_id, 'environment', b.environment,
        'database', b.database_name, 'policy', b.policy, 'method', b.method,
        'status', b.status, 'path', b.path, 'size_bytes', b.size_bytes,
        'duration_ms', b.duration_ms, 'start_lsn', b.start_lsn, 'stop_lsn', b.stop_lsn,
        'timeline', b.timeline, 'row_counts', b.row_counts, 'job_id', b.job_id,
        'error', b.error, 'started_at', job_time(b.started_at),
        'finished_at', job_time(b.finished_at), 'verified_at', job_time(b.verified_at),
        'restore_seconds', b.restore_seconds, 'offsite_path', b.offsite_path,
        'offsite_at', job_time(b.offsite_at), 'pruned_at', job_time(b.pruned_at),
        'prune_reason', b.prune_reason);
