/* Shared inside the backup room only. */
#ifndef QDB_BACKUP_INTERNAL_H
#define QDB_BACKUP_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "backup/backup.h"
#include "jobs/jobs.h"
#include "platform/db.h"

/* Errors the store's callers pass through db_tx (< -100, module.h). */
enum { BK_E_NOT_FOUND = -201, BK_E_STATE = -202 };

/* ---- settings (backup_jobs.c) ---- */
const char *bk_dir(void);         /* QDB_BACKUP_DIR */
const char *bk_offsite_dir(void); /* QDB_BACKUP_OFFSITE_DIR, "" = none */
const char *bk_pg_bin(void);      /* QDB_BACKUP_PG_BIN */
const char *bk_scratch_dir(void); /* QDB_BACKUP_SCRATCH_DIR */
int bk_jobs_init(void);
int bk_config_load(void);
/* Keep the job engine's schedules of `policy` (its document) in step: put or remove
 * "backup.<component>.{base|dump,verify,offsite}". Returns 0, -1 (err says which cron), or
 * a DB_ code. */
int bk_schedules_sync(struct db_conn *c, const json_t *policy, char *err, size_t errlen);
int bk_schedules_drop(struct db_conn *c, const char *component);
/* The enqueue of each kind, inside the caller's transaction. */
int bk_enqueue(struct db_conn *c, const char *kind, json_t *args, const char *created_by,
               int64_t *job_id);

/* ---- store (backup_store.c): one function per statement ---- */
int bk_store_policy_list(struct db_conn *c, json_t **arr);
int bk_store_policy_get(struct db_conn *c, const char *component, json_t **doc);
/* The body's members become the row (jsonb_to_record). 1 with *doc, DB_UNIQUE, DB_INVALID. */
int bk_store_policy_insert(struct db_conn *c, const json_t *body, json_t **doc);
/* Members of patch replace the row's. 1 with *doc, 0 none. */
int bk_store_policy_update(struct db_conn *c, const char *component, const json_t *patch,
                           json_t **doc);
int bk_store_policy_delete(struct db_conn *c, const char *component);
/* The enabled policy of a database and method ("" method: any), 1 with *doc, 0 none. */
int bk_store_policy_for(struct db_conn *c, const char *environment, const char *database,
                        const char *method, json_t **doc);

int bk_store_backup_insert(struct db_conn *c, int64_t database_id, const char *environment,
                           const char *database, const char *policy, const char *method,
                           int64_t job_id, int64_t *id);
int bk_store_backup_set_path(struct db_conn *c, int64_t id, const char *path);
/* Finish a run: status completed or failed, with what was measured (NULLs allowed). */
int bk_store_backup_finish(struct db_conn *c, int64_t id, const char *status, int64_t size,
                           int64_t duration_ms, const char *start_lsn, const char *stop_lsn,
                           int timeline, const json_t *row_counts, const char *error);
int bk_store_file_insert(struct db_conn *c, int64_t id, const char *name, int64_t size,
                         const char *sha256);
/* The backup's document; with_detail adds files and verifications. 1, 0 none. */
int bk_store_backup_get(struct db_conn *c, int64_t id, int with_detail, json_t **doc);
/* Newest first; database_id 0 and status NULL: any. */
int bk_store_backup_list(struct db_conn *c, int64_t database_id, const char *status, int limit,
                         json_t **arr);
/* Files of a backup: rows (name, size_bytes, sha256). */
int bk_store_files(struct db_conn *c, int64_t id, PGresult **res);
int bk_store_verification_insert(struct db_conn *c, int64_t id, int64_t job_id, int ok,
                                 double restore_seconds, const json_t *checks,
                                 const char *detail);
/* verified (ok) or bad; restore_seconds < 0: not measured. */
int bk_store_backup_set_verified(struct db_conn *c, int64_t id, int ok, double restore_seconds);
/* Finished, unpruned backups of a database taken with `method`, newest first: rows (id,
 * status, path, age_seconds). */
int bk_store_prune_candidates(struct db_conn *c, int64_t database_id, const char *method,
                              PGresult **res);
int bk_store_backup_pruned(struct db_conn *c, int64_t id, const char *reason);
int bk_store_backup_offsite(struct db_conn *c, int64_t id, const char *path);
/* The newest finished (completed/verified) backup of a database: 1 with *id, 0 none. */
int bk_store_newest_backup(struct db_conn *c, int64_t database_id, int64_t *id);
/* The newest verified good backup of a database: 1 with *id, 0 none. */
int bk_store_newest_verified(struct db_conn *c, int64_t database_id, int64_t *id);
int bk_store_report_insert(struct db_conn *c, const char *component, int64_t started_us,
                           int64_t finished_us, int ok, int64_t size, double restore_seconds,
                           const char *detail, const char *by, json_t **doc);
/* One row per policy: (component, doc, last_good_age_s, last_restore_s, last_verified_age_s,
 * last_state, wal stream doc or NULL). */
int bk_store_status_rows(struct db_conn *c, PGresult **res);
int bk_store_status_state_set(struct db_conn *c, const char *component, const char *state);

/* ---- WAL streaming (backup_wal.c and its rows in the store) ---- */
/* Enabled base-backup policies whose RPO is 0: rows (component, environment, database). */
int bk_store_wal_policies(struct db_conn *c, PGresult **res);
struct bk_wal_row {
    int64_t database_id;
    const char *component, *environment, *database, *slot, *wal_dir, *holder, *state;
    int receiver_pid; /* <= 0: none */
    char received_lsn[32], server_lsn[32]; /* "": unknown (the row keeps its last) */
    int64_t lag_bytes;                     /* < 0: unknown */
    double lag_seconds;                    /* < 0: unknown */
    int caught_up;                         /* everything written was received: now */
    int restarts;
    const char *last_exit;
};
int bk_store_wal_put(struct db_conn *c, const struct bk_wal_row *w);
/* The row of a database that `holder` streams becomes 'stopped'. */
int bk_store_wal_stopped(struct db_conn *c, int64_t database_id, const char *holder,
                         const char *why);
/* The stream's document of a database: 1 with *doc, 0 none. */
int bk_store_wal_get(struct db_conn *c, int64_t database_id, json_t **doc);
/* Start and stop the supervisor thread (backup_module.c's start and quiesce/stop). */
int bk_wal_start(struct qdb_app *app);
void bk_wal_quiesce(void);
void bk_wal_stop(void);
/* Delete the complete streamed segments of `database` that come before the segment of
 * stop_lsn (the oldest kept base backup's) on timeline tli or an older one: no kept backup
 * can replay them. 0 with *deleted, or -1 with err (a deletion failed). */
int bk_wal_prune(const char *database, const char *stop_lsn, int tli, int *deleted, char *err,
                 size_t errlen);
/* The folder of the WAL streamed for a database: QDB_BACKUP_DIR/<name>/wal. */
void bk_wal_dir(char *out, size_t n, const char *database);

/* ---- files (backup_tools.c); the tools run through jobs_run_tool (jobs.h) ---- */
/* SHA-256 of a file as 64 hex digits; its size in *size. 0 or -1. */
int bk_sha256_file(const char *path, char hex[65], int64_t *size);
/* mkdir -p with mode. 0 or -1. */
int bk_mkdirs(const char *path, int mode);
/* rm -rf of a folder under QDB_BACKUP_DIR, QDB_BACKUP_OFFSITE_DIR or the scratch folder
 * (refuses anything else). 0 or -1 with errno. */
int bk_remove_tree(const char *path);
/* Copy a file (for offsite). 0 or -1. */
int bk_copy_file(const char *from, const char *to);
/* A TCP port on 127.0.0.1 that nothing listens on now. */
int bk_free_port(void);
/* chown -R to the postgres user when root (its data folders must be its own). */
int bk_give_to_postgres(const char *path);

/* Row counts of the given tables ([] or NULL: every user table) on a connection, in one
 * statement: {"schema.table": n}. NULL on error (reason in err). */
json_t *bk_count_rows(PGconn *pg, const json_t *tables, char *err, size_t errlen);

/* A libpq connection string for database `db` on endpoint `ep` (values quoted; the
 * password is never in it: PGPASSWORD carries it). */
struct inventory_pg_endpoint;
void bk_conninfo(char *out, size_t n, const struct inventory_pg_endpoint *ep, const char *db);

/* ---- the checked unpack of a base backup (backup_unpack.c) ---- */
/* Unpack `tarball` (base.tar.gz) into the folder dest, comparing each file's SHA-256 with
 * the manifest's on the way; gzip's stderr appended to errpath. 0 (*all_checked: every
 * file of the manifest was there and matched), -1 (detail says: a checksum or size
 * differs, a name would leave dest, or the unpack failed), -2 (the job was told to stop). */
int bk_unpack_base(struct jobs_ctx *ctx, const char *tarball, const char *manifest,
                   const char *dest, const char *errpath, int *all_checked, char *detail,
                   size_t n);

/* ---- verification and restore (backup_verify.c) ---- */
/* How many user tables a managed database holds: >= 0, or -1 (err says why). */
struct inventory_database;
int bk_target_tables(const struct inventory_database *db, char *err, size_t errlen);
/* Whether `backup` (its document) can be restored to point_in_time ("latest" or RFC 3339)
 * through the WAL streamed for its database: a base backup, a stream on record, the time
 * neither before the backup's end nor beyond what the stream has received. 0 with
 * *target_us (0 for "latest"), -1 with the reason in err (a client's mistake), or a DB_
 * code. */
int bk_pitr_check(struct db_conn *c, const json_t *backup, const char *point_in_time,
                  int64_t *target_us, char *err, size_t errlen);

/* ---- RPO/RTO (backup_status.c) ---- */
int bk_status_init(void);
void bk_status_free(void);
/* The table: an array of one row per policy (new). 0 or a DB_ code. */
int bk_status_compute(struct db_conn *c, json_t **out);

#endif
