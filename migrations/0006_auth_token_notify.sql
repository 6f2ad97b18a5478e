-- Every replica caches the API tokens it has checked (issue 8: authentication without a
-- database round trip), so a change to a token must reach every replica at once. Each
-- change that matters (revocation, expiry, role, environments, the secret's hash, deletion)
-- is announced on channel api_token_changes with the token's id as payload ("*" after a
-- TRUNCATE: forget every token); each replica's auth listener evicts that token from its
-- cache. The payload is the public id, never the hash.
CREATE FUNCTION api_token_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('api_token_changes', '*');
    ELSE
        PERFORM pg_notify('api_token_changes', OLD.id::text);
    END IF;
    RETURN NULL;
END
$$;

-- last_used_at is written by the replicas themselves (batched, at most once a minute per
-- token) and changes nothing a cache holds: an UPDATE that changes only it stays silent, so
-- that recording use does not empty every replica's cache once a minute. Comparing the
-- whole row minus that column keeps a column added later covered without a change here.
CREATE TRIGGER api_token_changed AFTER UPDATE ON api_token FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'last_used_at') IS DISTINCT FROM (to_jsonb(NEW) - 'last_used_at'))
    EXECUTE FUNCTION api_token_notify();
CREATE TRIGGER api_token_deleted AFTER DELETE ON api_token FOR EACH ROW
    EXECUTE FUNCTION api_token_notify();
CREATE TRIGGER api_token_truncated AFTER TRUNCATE ON api_token FOR EACH STATEMENT
    EXECUTE FUNCTION api_token_notify();
