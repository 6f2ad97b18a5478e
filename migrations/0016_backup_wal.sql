-- WAL streaming (server/backup/backup_wal.c): for each managed database whose policy's RPO
-- is 0, one replica (the holder of that database's session advisory lock) supervises a
-- pg_receivewal on a physical replication slot and writes here, about once a second, what
-- it received and how far behind the server it is. Every replica reads this table for the
-- RPO/RTO status and for point-in-time restores, so the figures hold whichever replica
-- streams. One row per database; the row outlives a stop (state 'stopped') so that the
-- status can say since when nothing streamed.
CREATE TABLE backup_wal_stream (
    database_id bigint PRIMARY KEY,
    component text NOT NULL,
    environment text NOT NULL,
    database_name text NOT NULL,
    slot text NOT NULL,
    wal_dir text NOT NULL,
    -- the replica (instance id) whose supervisor runs the receiver, and its pid there
    holder text NOT NULL,
    receiver_pid integer,
    state text NOT NULL CHECK (state IN ('streaming', 'restarting', 'stopped')),
    -- what the receiver confirmed flushed (pg_stat_replication.flush_lsn, or the slot's
    -- restart_lsn while it is not connected) and the server's insert position, both read
    -- on the source server in one statement
    received_lsn text,
    server_lsn text,
    lag_bytes bigint,
    lag_seconds double precision,
    -- the last moment at which everything the server had written was received: WAL
    -- covers the source up to here (a point-in-time restore may not aim later)
    caught_up_at timestamptz,
    restarts integer NOT NULL DEFAULT 0,
    last_exit text NOT NULL DEFAULT '',
    started_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION backup_wal_stream_doc(w backup_wal_stream) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN jsonb_build_object(
        'database_id', w.database_id, 'component', w.component,
        'environment', w.environment, 'database', w.database_name, 'slot', w.slot,
        'wal_dir', w.wal_dir, 'holder', w.holder, 'receiver_pid', w.receiver_pid,
        'state', w.state, 'received_lsn', w.received_lsn, 'server_lsn', w.server_lsn,
        'lag_bytes', w.lag_bytes, 'lag_seconds', w.lag_seconds,
        'caught_up_at', job_time(w.caught_up_at),
        'caught_up_age_seconds', extract(epoch FROM now() - w.caught_up_at),
        'restarts', w.restarts,
        'last_exit', w.last_exit, 'started_at', job_time(w.started_at),
        'updated_at', job_time(w.updated_at),
        'age_seconds', extract(epoch FROM now() - w.updated_at));
