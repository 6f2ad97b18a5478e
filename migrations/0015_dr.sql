-- Disaster recovery (section 7.2-7.4 of the infrastructure design): the organisation's
-- targets per component, the scenarios of 7.3 as procedures the service runs or checks, and
-- the history of every failover, switchover and drill with what was achieved.

-- 7.2's RPO and RTO per component. database_name is the inventory's managed database that
-- holds the component's data (the same name in every environment, 0010_inventory.sql), so
-- that a drill or a failover of that database is measured against these figures; NULL for a
-- component that is not a managed PostgreSQL database. *_basis quotes the line of 7.2 that
-- gives the figure: RTO is given per service group, and a database outside "Authentication"
-- and "Dashboard" falls under "Full platform".
CREATE TABLE dr_target (
    component text PRIMARY KEY CHECK (component ~ '^[a-z][a-z0-9-]{0,62}$'),
    title text NOT NULL,
    database_name text UNIQUE CHECK (database_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    rpo_seconds integer NOT NULL CHECK (rpo_seconds >= 0),
    rto_seconds integer NOT NULL CHECK (rto_seconds > 0),
    rpo_basis text NOT NULL,
    rto_basis text NOT NULL
);

INSERT INTO dr_target (component, title, database_name, rpo_seconds, rto_seconds, rpo_basis,
    rto_basis) VALUES
    ('mpi', 'Master Person Index', 'qdb_mpi', 0, 14400,
     'MPI and Audit: 0 (no data loss, WAL-based recovery)', 'Full platform: 4 hours'),
    ('audit', 'Audit trail', 'qdb_audit', 0, 14400,
     'MPI and Audit: 0 (no data loss, WAL-based recovery)', 'Full platform: 4 hours'),
    ('read-store', 'Unified Read Store', 'qdb_read_store', 300, 7200,
     'Read Store: 5 minutes (can be rebuilt from Kafka events)',
     'Dashboard (Read Store + Subgraphs): 2 hours'),
    ('keycloak', 'Keycloak', 'qdb_keycloak', 86400, 3600, 'Other services: 24 hours',
     'Authentication (Keycloak): 1 hour'),
    ('openfga', 'OpenFGA', 'qdb_openfga', 86400, 14400, 'Other services: 24 hours',
     'Full platform: 4 hours');

-- 7.3's scenarios. target_rto_seconds is the table's bound ("< 30 seconds"; for "2-4 hours"
-- the upper end, with target_rto_min_seconds the lower); components are dr_target's
-- components (or the platform's pods/brokers by name); steps are the procedure, each
-- {step, name, action, description[, route]} where action says who does it: "run" (this
-- service runs it, through `route`), "check" (this service checks it), "external" (another
-- system does it, Kubernetes or Patroni; this service can only check the outcome) or
-- "manual" (a person does it).
CREATE TABLE dr_scenario (
    slug text PRIMARY KEY CHECK (slug ~ '^[a-z][a-z0-9-]{0,62}$'),
    position integer NOT NULL UNIQUE,
    title text NOT NULL,
    impact text NOT NULL,
    procedure text NOT NULL,
    target_rto_seconds integer NOT NULL CHECK (target_rto_seconds > 0),
    target_rto_min_seconds integer CHECK (target_rto_min_seconds > 0),
    components jsonb NOT NULL CHECK (jsonb_typeof(components) = 'array'),
    steps jsonb NOT NULL CHECK (jsonb_typeof(steps) = 'array')
);

INSERT INTO dr_scenario (slug, position, title, impact, procedure, target_rto_seconds,
    target_rto_min_seconds, components, steps) VALUES
('pod-failure', 1, 'Single pod failure', 'None (auto-restart)',
 'Kubernetes restarts pod automatically', 60, NULL,
 '["control-plane", "keycloak", "openfga"]',
 '[{"step": 1, "name": "restart", "action": "external",
    "description": "Kubernetes restarts the failed pod (liveness probe /healthz)"},
   {"step": 2, "name": "ready", "action": "check", "route": "GET /readyz",
    "description": "The restarted replica answers /readyz"}]'),
('node-failure', 2, 'Single node failure', 'Minimal (pods reschedule)',
 'Kubernetes reschedules pods to healthy nodes', 300, NULL,
 '["control-plane", "keycloak", "openfga"]',
 '[{"step": 1, "name": "reschedule", "action": "external",
    "description": "Kubernetes reschedules the node''s pods (PodDisruptionBudget keeps one replica)"},
   {"step": 2, "name": "ready", "action": "check", "route": "GET /readyz",
    "description": "Every replica answers /readyz again"}]'),
('database-primary-failure', 3, 'Database primary failure', 'Service degradation',
 'Patroni promotes standby to primary automatically', 30, NULL,
 '["mpi", "audit", "read-store", "keycloak", "openfga"]',
 '[{"step": 1, "name": "standby-check", "action": "check",
    "description": "The standby is in recovery; its replay lag is measured"},
   {"step": 2, "name": "fence", "action": "run",
    "description": "Where the old primary still answers: default_transaction_read_only and its client sessions ended"},
   {"step": 3, "name": "promote", "action": "run", "route": "POST /api/v1/databases/{id}/failover",
    "description": "pg_promote(wait => true) on the standby"},
   {"step": 4, "name": "write-check", "action": "check",
    "description": "The new primary accepts a write"},
   {"step": 5, "name": "inventory", "action": "run",
    "description": "Primary and standby swapped in the inventory; RTO and data-loss window recorded"}]'),
('kafka-broker-failure', 4, 'Kafka broker failure', 'Minimal (replication)',
 'Remaining brokers serve all partitions', 60, NULL,
 '["kafka"]',
 '[{"step": 1, "name": "leader-election", "action": "external",
    "description": "Kafka elects new partition leaders among the in-sync replicas (factor 3)"},
   {"step": 2, "name": "relay", "action": "check", "route": "GET /api/v1/events/status",
    "description": "The event relay publishes again"}]'),
('full-cluster-failure', 5, 'Full cluster failure', 'Full outage',
 'Restore from backup to DR cluster; switch DNS', 14400, 7200,
 '["mpi", "audit", "read-store", "keycloak", "openfga"]',
 '[{"step": 1, "name": "restore", "action": "run", "route": "POST /api/v1/dr/drills",
    "description": "The newest verified backup of each database restored into the DR environment; RPO-0 components replay WAL to the latest received position"},
   {"step": 2, "name": "checks", "action": "check",
    "description": "Each restored database is open (not in recovery) and its tables are counted"},
   {"step": 3, "name": "measure", "action": "check", "route": "GET /api/v1/dr/drills/{id}",
    "description": "Achieved RTO and RPO per database against 7.2"},
   {"step": 4, "name": "dns", "action": "manual",
    "description": "Switch DNS to the DR cluster"}]'),
('data-center-failure', 6, 'Data center failure', 'Full outage',
 'Activate DR site (if provisioned); restore from offsite backups', 28800, 14400,
 '["mpi", "audit", "read-store", "keycloak", "openfga", "kafka", "opensearch", "minio", "vault", "etcd"]',
 '[{"step": 1, "name": "activate", "action": "manual",
    "description": "Activate the DR site"},
   {"step": 2, "name": "restore", "action": "run", "route": "POST /api/v1/dr/drills",
    "description": "Restore each database into the DR environment from its backups"},
   {"step": 3, "name": "checks", "action": "check",
    "description": "Each restored database is open and counted; RTO and RPO measured"},
   {"step": 4, "name": "dns", "action": "manual",
    "description": "Switch DNS to the DR site"}]');

-- One failover or switchover of a managed database (both change which server is the
-- primary, so one table and one rule: at most one of either at a time per database, the
-- partial unique index below, which a second request hits as a unique violation).
-- requested_at and write_accepted_at both come from the state store's clock, so that the
-- achieved RTO (first request -> first write accepted on the new primary) is measured on
-- one clock whichever replica took the request and whichever ran the job. lost_bytes is the
-- WAL the old primary had written that the standby had not replayed when it was promoted
-- (NULL when the old primary could not be asked), lost_seconds the time that WAL spans.
CREATE TABLE dr_failover (
    id bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('failover', 'switchover')),
    database_id bigint NOT NULL,
    environment text NOT NULL,
    database_name text NOT NULL,
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    job_id bigint,
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at timestamptz,
    max_lag_bytes bigint,
    -- {host, port} of each server before the change (never a secret)
    old_primary jsonb NOT NULL,
    old_standby jsonb NOT NULL,
    standby_lag_bytes bigint,
    standby_lag_seconds double precision,
    old_primary_reachable boolean,
    fenced boolean NOT NULL DEFAULT false,
    lost_bytes bigint,
    lost_seconds double precision,
    promoted_at timestamptz,
    write_accepted_at timestamptz,
    rto_seconds double precision,
    -- switchover: how the old primary became a standby ('pg_rewind', 'pg_basebackup')
    rejoin_method text,
    rejoined_at timestamptz,
    finished_at timestamptz,
    -- what was done, in order: [{step, at, detail}]
    steps jsonb NOT NULL DEFAULT '[]',
    error text
);
CREATE UNIQUE INDEX dr_failover_one_at_a_time ON dr_failover (database_id)
    WHERE state IN ('pending', 'running');
CREATE INDEX dr_failover_database_idx ON dr_failover (database_id, id DESC);

-- A drill: the newest verified backup of each listed database restored into the
-- environment target_environment's database of the same name (7.4), from the request
-- (requested_at, the state store's clock) to the last database checked.
CREATE TABLE dr_drill (
    id bigserial PRIMARY KEY,
    job_id bigint,
    requested_by text NOT NULL,
    target_environment text NOT NULL,
    databases jsonb NOT NULL CHECK (jsonb_typeof(databases) = 'array'),
    scheduled boolean NOT NULL DEFAULT false,
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    requested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at timestamptz,
    finished_at timestamptz,
    error text
);
CREATE INDEX dr_drill_recent_idx ON dr_drill (id DESC);

-- One database of a drill. rto_seconds: drill start -> this database consistent and
-- checked; rpo_seconds: the source's last committed transaction -> the last transaction
-- present in the restore (rpo_basis says how the first was known: "commit_timestamp" from
-- the source's track_commit_timestamp, or "drill_start" when the source could not say, an
-- upper bound that assumes it committed until the drill began; "+backup_start" when the
-- restore replayed no commit to time it by, and the backup's start, before which every
-- commit is in the restore, stands for its end: an upper bound). The targets are copied from
-- dr_target at the time, so that the history keeps what was promised then.
CREATE TABLE dr_drill_result (
    drill_id bigint NOT NULL REFERENCES dr_drill (id) ON DELETE CASCADE,
    database_id bigint NOT NULL,
    environment text NOT NULL,
    database_name text NOT NULL,
    component text,
    target_database_id bigint,
    backup_id bigint,
    ok boolean NOT NULL,
    restore_seconds double precision,
    rto_seconds double precision,
    rpo_seconds double precision,
    rpo_basis text,
    target_rto_seconds integer,
    target_rpo_seconds integer,
    source_last_commit timestamptz,
    recovered_to timestamptz,
    point_in_time text,
    row_counts jsonb,
    checks jsonb NOT NULL DEFAULT '{}',
    error text,
    finished_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (drill_id, database_id)
);
CREATE INDEX dr_drill_result_component_idx ON dr_drill_result (component, drill_id DESC);

CREATE FUNCTION dr_ts(t timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

CREATE FUNCTION dr_failover_doc(f dr_failover) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', f.id, 'kind', f.kind, 'database_id', f.database_id,
        'environment', f.environment, 'database', f.database_name, 'state', f.state,
        'job_id', f.job_id, 'requested_by', f.requested_by,
        'requested_at', dr_ts(f.requested_at), 'started_at', dr_ts(f.started_at),
        'max_lag_bytes', f.max_lag_bytes, 'old_primary', f.old_primary,
        'old_standby', f.old_standby, 'standby_lag_bytes', f.standby_lag_bytes,
        'standby_lag_seconds', f.standby_lag_seconds,
        'old_primary_reachable', f.old_primary_reachable, 'fenced', f.fenced,
        'lost_bytes', f.lost_bytes, 'lost_seconds', f.lost_seconds,
        'promoted_at', dr_ts(f.promoted_at), 'write_accepted_at', dr_ts(f.write_accepted_at),
        'rto_seconds', f.rto_seconds, 'rejoin_method', f.rejoin_method,
        'rejoined_at', dr_ts(f.rejoined_at), 'finished_at', dr_ts(f.finished_at),
        'steps', f.steps, 'error', f.error)
$$;

CREATE FUNCTION dr_drill_doc(d dr_drill) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', d.id, 'job_id', d.job_id, 'requested_by', d.requested_by,
        'target_environment', d.target_environment, 'databases', d.databases,
        'scheduled', d.scheduled, 'state', d.state, 'requested_at', dr_ts(d.requested_at),
        'started_at', dr_ts(d.started_at), 'finished_at', dr_ts(d.finished_at),
        'error', d.error,
        'results', coalesce((SELECT jsonb_agg(jsonb_build_object(
            'database_id', r.database_id, 'environment', r.environment,
            'database', r.database_name, 'component', r.component,
            'target_database_id', r.target_database_id, 'backup_id', r.backup_id, 'ok', r.ok,
            'restore_seconds', r.restore_seconds, 'rto_seconds', r.rto_seconds,
            'rpo_seconds', r.rpo_seconds, 'rpo_basis', r.rpo_basis,
            'target_rto_seconds', r.target_rto_seconds,
            'target_rpo_seconds', r.target_rpo_seconds,
            'rto_met', r.rto_seconds <= r.target_rto_seconds,
            'rpo_met', r.rpo_seconds <= r.target_rpo_seconds,
            'source_last_commit', dr_ts(r.source_last_commit),
            'recovered_to', dr_ts(r.recovered_to), 'point_in_time', r.point_in_time,
            'row_counts', r.row_counts, 'checks', r.checks, 'error', r.error,
            'finished_at', dr_ts(r.finished_at)) ORDER BY r.finished_at)
            FROM dr_drill_result r WHERE r.drill_id = d.id), '[]'::jsonb))
$$;
