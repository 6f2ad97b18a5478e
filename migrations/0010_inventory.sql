-- 0010 inventory (server/inventory/, issue 12): what the platform runs, as data. Sections
-- 2-4 and 6 of the infrastructure design: each environment's configuration matrix (6.2)
-- and targets, the managed PostgreSQL databases (2.1, with the settings of 2.3 and the pool
-- settings of 2.4), Kafka topics (3.1, 3.3), consumer groups (3.4) and Debezium connectors
-- (4.2). Provisioning jobs make it real on the targets; the drift plan compares the two.
--
-- Secrets are never stored: a target names its secret by reference ("file:/run/secrets/x"
-- as a Vault agent mounts it, or "env:NAME"), resolved only when a job runs.

-- The 6.2 matrix and the targets of each platform environment (0004), keyed by its name.
CREATE TABLE inventory_environment (
    environment text PRIMARY KEY REFERENCES environment (name),
    -- Kafka retention cap in this environment: a topic's retention here is the smaller of
    -- its own and this (6.2: 1 day in development, 3 in staging, 30 in production)
    kafka_retention_ms bigint NOT NULL CHECK (kafka_retention_ms >= 60000),
    log_retention text NOT NULL,
    audit_retention text NOT NULL,
    tls text NOT NULL,            -- "SSL certificates" row of 6.2
    keycloak_realm text NOT NULL,
    nas_integration text NOT NULL,
    moci_integration text NOT NULL,
    qfc_integration text NOT NULL,
    feature_flags text NOT NULL,  -- the flag policy of the environment
    -- {"postgres": {host, port, admin_user, admin_secret, sslmode},
    --  "kafka": {bootstrap_servers, broker_count, security_protocol, sasl_mechanism,
    --            sasl_username, sasl_password_secret, ssl_ca_file},
    --  "kafka_connect": {url}}; shape checked by the room (inventory_api.c); secrets are
    -- references only
    targets jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(targets) = 'object'),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- 6.2 gives development, staging and production; integration shares the development
-- cluster (6.1) and takes its column, dr is production's standby and takes production's.
INSERT INTO inventory_environment (environment, kafka_retention_ms, log_retention,
    audit_retention, tls, keycloak_realm, nas_integration, moci_integration, qfc_integration,
    feature_flags) VALUES
    ('development', 86400000, '3 days', '30 days', 'Self-signed', 'qdb-one-dev',
     'Mock NAS (local)', 'Mock API', 'Mock webhook sender', 'All enabled'),
    ('integration', 86400000, '3 days', '30 days', 'Self-signed', 'qdb-one-dev',
     'Mock NAS (local)', 'Mock API', 'Mock webhook sender', 'All enabled'),
    ('staging', 259200000, '7 days', '90 days', 'Internal CA', 'qdb-one-staging',
     'NAS sandbox (if available)', 'MOCI sandbox', 'QFC sandbox', 'Production-like'),
    ('production', 2592000000, '30 days hot, 90 days warm', '7 years', 'Public CA (TLS 1.3)',
     'qdb-one', 'Production NAS', 'Production MOCI', 'Production QFC', 'Controlled rollout'),
    ('dr', 2592000000, '30 days hot, 90 days warm', '7 years', 'Public CA (TLS 1.3)',
     'qdb-one', 'Production NAS', 'Production MOCI', 'Production QFC', 'Controlled rollout');

-- A managed PostgreSQL database in one environment (2.1). primary_conn / standby_conn are
-- {host, port, admin_user, admin_secret}; a member left out falls back to the
-- environment's postgres target. The backup room finds these through inventory.h.
CREATE TABLE inventory_database (
    id bigserial PRIMARY KEY,
    environment text NOT NULL REFERENCES environment (name),
    name text NOT NULL CHECK (name ~ '^[a-z_][a-z0-9_]{0,62}$'),
    engine_version text NOT NULL,
    purpose text NOT NULL DEFAULT '',
    ha_strategy text NOT NULL DEFAULT '',
    storage_initial_gb integer NOT NULL CHECK (storage_initial_gb >= 1),
    storage_max_gb integer NOT NULL CHECK (storage_max_gb >= storage_initial_gb),
    -- the role that owns the database (created by provision_database)
    owner text NOT NULL CHECK (owner ~ '^[a-z_][a-z0-9_]{0,62}$'),
    primary_conn jsonb NOT NULL DEFAULT '{}',
    standby_conn jsonb,
    -- 2.3 as {"work_mem": "64MB", ...}: per-database ones are applied with ALTER DATABASE
    -- SET, server-wide ones (wal_level, max_connections, ...) are checked and reported
    settings jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    -- 2.4
    pool_mode text NOT NULL DEFAULT 'transaction' CHECK (pool_mode IN ('transaction', 'session', 'statement')),
    pool_size integer NOT NULL DEFAULT 20 CHECK (pool_size BETWEEN 1 AND 10000),
    max_client_connections integer NOT NULL DEFAULT 100 CHECK (max_client_connections BETWEEN 1 AND 100000),
    -- CDC source: the tables of the publication (4.4); [] = not a CDC source
    cdc_tables jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(cdc_tables) = 'array'),
    publication text NOT NULL DEFAULT 'qdb_one_cdc' CHECK (publication ~ '^[a-z_][a-z0-9_]{0,62}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (environment, name)
);

-- 2.1 with 2.3 and 2.4, in every environment (each environment runs the same databases on
-- its own servers; their hosts come from the environment's postgres target).
INSERT INTO inventory_database (environment, name, engine_version, purpose, ha_strategy,
    storage_initial_gb, storage_max_gb, owner, settings, pool_mode, pool_size,
    max_client_connections)
SELECT e.name, d.name, '16', d.purpose, d.ha, d.initial_gb, d.max_gb, d.name,
       '{"max_connections": "200", "shared_buffers": "8GB", "effective_cache_size": "24GB",
         "work_mem": "64MB", "maintenance_work_mem": "1GB", "wal_level": "logical",
         "max_wal_senders": "10", "max_replication_slots": "10", "wal_keep_size": "2GB",
         "random_page_cost": "1.1", "effective_io_concurrency": "200",
         "default_statistics_target": "200", "log_min_duration_statement": "200"}'::jsonb,
       d.pool_mode, d.pool_size, d.max_clients
FROM environment e CROSS JOIN (VALUES
    ('qdb_mpi', 'Master Person Index', 'Primary + Standby (streaming replication, Patroni)',
     100, 500, 'transaction', 50, 200),
    ('qdb_read_store', 'Unified Read Store', 'Primary + Standby (streaming replication)',
     200, 1024, 'transaction', 100, 400),
    ('qdb_audit', 'Audit trail (immutable, 7-year retention)', 'Primary + Standby + Archive',
     500, 5120, 'transaction', 30, 100),
    ('qdb_openfga', 'OpenFGA authorization store', 'Primary + Standby', 50, 50,
     'transaction', 30, 100),
    ('qdb_keycloak', 'Keycloak sessions, realm config', 'Primary + Standby', 20, 20,
     'session', 30, 100)
) AS d (name, purpose, ha, initial_gb, max_gb, pool_mode, pool_size, max_clients);

-- A Kafka topic (3.1, 3.3), the same in every environment with a kafka target; its
-- retention there is retention_by_environment[env] when given, else the smaller of
-- retention_ms and the environment's kafka_retention_ms.
CREATE TABLE inventory_topic (
    name text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._-]{1,249}$' AND name NOT IN ('.', '..')),
    topic_group text NOT NULL DEFAULT '',
    partitions integer NOT NULL CHECK (partitions BETWEEN 1 AND 10000),
    replication_factor integer NOT NULL CHECK (replication_factor BETWEEN 1 AND 32),
    min_insync_replicas integer NOT NULL CHECK (min_insync_replicas BETWEEN 1 AND 32),
    retention_ms bigint NOT NULL CHECK (retention_ms >= 60000),
    retention_by_environment jsonb NOT NULL DEFAULT '{}',
    compression text NOT NULL DEFAULT 'lz4',
    segment_bytes bigint NOT NULL DEFAULT 1073741824,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (min_insync_replicas <= replication_factor)
);

-- A consumer group (3.4) and the lag above which the plan warns (5.3's offset check).
CREATE TABLE inventory_consumer_group (
    name text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._-]{1,249}$'),
    -- topic names or patterns ("app.*") it consumes
    topics jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(topics) = 'array'),
    instances integer NOT NULL DEFAULT 1 CHECK (instances >= 1),
    processing text NOT NULL DEFAULT '',
    lag_threshold bigint NOT NULL DEFAULT 1000 CHECK (lag_threshold >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A Debezium connector (4.2): the connector's config as written, ${vault:...}
-- placeholders kept (Connect's config provider resolves them, we never do).
CREATE TABLE inventory_connector (
    name text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9._-]{1,200}$'),
    config jsonb NOT NULL CHECK (jsonb_typeof(config) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The last scheduled drift check of each environment: the gauge and "drift appeared" event
-- compare against it.
CREATE TABLE inventory_drift_state (
    environment text PRIMARY KEY REFERENCES environment (name),
    differences integer NOT NULL,
    checked_at timestamptz NOT NULL DEFAULT now()
);

-- The last lag the scheduled lag check measured per environment and group: every replica
-- renders qdb_kafka_consumer_lag (and qdb_inventory_drift, from inventory_drift_state)
-- from these, refreshed by a thread of its own, so a scrape never queries and every replica
-- shows the same figures whichever ran the check.
CREATE TABLE inventory_lag (
    environment text NOT NULL REFERENCES environment (name),
    consumer_group text NOT NULL,
    lag bigint NOT NULL CHECK (lag >= 0),
    measured_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (environment, consumer_group)
);
