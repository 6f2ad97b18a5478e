-- 0004 environment: the platform's environment list (section 6.1 of the infrastructure
-- design), which every room references by name: flags per environment, inventory targets,
-- backups and DR drills. The inventory room adds each environment's configuration matrix
-- (6.2) and targets in its own migration, as a table keyed by this name.

CREATE TABLE environment (
    -- the name rooms reference (API paths, audit records, token scopes)
    name text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{0,31}$'),
    display_name text NOT NULL,
    purpose text NOT NULL,
    cluster text NOT NULL,
    data text NOT NULL,
    access text NOT NULL,
    -- position on the promotion path development -> integration -> staging -> production;
    -- NULL for an environment off the path (dr is a standby, never promoted to)
    promotion_order smallint UNIQUE CHECK (promotion_order >= 1),
    -- display order in lists
    sort_order smallint NOT NULL UNIQUE
);

INSERT INTO environment (name, display_name, purpose, cluster, data, access, promotion_order,
                         sort_order) VALUES
    ('development', 'Development', 'Daily development, feature branches', 'Shared dev cluster',
     'Synthetic test data', 'All developers', 1, 1),
    ('integration', 'Integration', 'Cross-service integration testing',
     'Shared dev cluster (separate namespace)', 'Synthetic + seeded', 'CI/CD pipelines', 2, 2),
    ('staging', 'Staging', 'Pre-production validation', 'Dedicated staging cluster',
     'Anonymized production-like data', 'QA team, tech leads', 3, 3),
    ('production', 'Production', 'Live system', 'Production cluster', 'Real data',
     'Ops team, on-call', 4, 4),
    ('dr', 'DR', 'Disaster recovery standby', 'Separate DC / zone', 'Replicated from production',
     'Emergency activation only', NULL, 5);
