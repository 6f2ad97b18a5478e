-- Service API tokens (issue 3). People sign in through the OIDC issuer and have no row
-- here; services call with "qdb_..." tokens created by an admin or by
-- `qdb-control token create`. The secret itself is never stored.
CREATE TABLE api_token (
    -- Public identifier, shown in lists, audit records and /api/v1/me; not a secret.
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- What the token is for ("backup-agent", "ci-deployer"); free text for people.
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- The role it acts with: viewer < operator < admin.
    role         text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    -- Environments it may act on (JSON array of names); NULL means every environment.
    environments jsonb CHECK (environments IS NULL OR jsonb_typeof(environments) = 'array'),
    -- Lowercase hex SHA-256 of the whole secret. Unique: a request's token is found by its
    -- hash through this index, then compared in constant time.
    token_sha256 text NOT NULL UNIQUE CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
    -- Who made it: the creator's subject, or "cli" for `qdb-control token create`.
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- After this the token is refused; NULL means it does not expire.
    expires_at   timestamptz,
    -- Last accepted use, updated at most once a minute per token.
    last_used_at timestamptz,
    -- Set once by DELETE /api/v1/tokens/{id}; every use checks it, so revocation holds at
    -- once on every replica.
    revoked_at   timestamptz
);
COMMENT ON TABLE api_token IS 'Service API tokens; only the SHA-256 of each secret is kept.';

-- The list page shows newest first.
CREATE INDEX api_token_created_at ON api_token (created_at DESC);
