/* The backup room's door (section 7 of the infrastructure design): a policy per protected
 * component, base backups and dumps of the inventory's managed databases taken by job
 * runners, a checksummed catalog, test restores that prove a backup by starting it, safe
 * retention, offsite copies, and the RPO/RTO table of every component of 7.1
 * (migrations/0014_backup.sql). */
#ifndef QDB_BACKUP_H
#define QDB_BACKUP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "module.h"
#include "platform/http.h"

extern const struct qdb_module backup_module;

/* ---- restoring a backup (the seam other rooms, dr, call) ---- */
struct jobs_ctx;
struct inventory_database;

struct backup_restore_spec {
    int64_t backup_id;            /* 0: the newest verified good backup of source_id */
    int64_t source_id;            /* inventory database id of the backed-up database */
    const struct inventory_database *target; /* where to restore (never the source) */
    int force;                    /* replace a target that holds tables */
    const char *point_in_time;    /* NULL: the backup's end; "latest": replay all WAL
                                     streamed for the source; else an ISO-8601 time */
};
struct backup_restore_outcome {
    int64_t backup_id;            /* the backup that was restored */
    double restore_seconds;       /* measured, start to target consistent + counted */
    char recovered_to[64];        /* ISO time of the last transaction replayed ("" n/a) */
    char backup_started[64];      /* ISO time the backup began: every transaction committed
                                     before it is in the restore (a bound where nothing was
                                     replayed to time the restore by) */
    json_t *row_counts;           /* new reference, {"schema.table": n} in the target */
};
/* Restore a backup into spec->target: refuses the source itself, a target holding tables
 * unless force, a backup that is not completed/verified or whose files no longer match
 * their checksums. A base backup is started in a temporary PostgreSQL (recovering to the
 * point in time through the streamed WAL), dumped from there and restored into the target
 * with pg_restore, so that restoring one database never replaces the target's whole
 * server; a dump is restored directly. Runs inside a job (logs and progress on ctx); it
 * records no audit entry (the caller's job does, with its own action). Returns 0 with *out
 * filled (out->row_counts is the caller's to json_decref), -1 with err, -2 when the job
 * was cancelled. */
int backup_restore(struct jobs_ctx *ctx, const struct backup_restore_spec *spec,
                   struct backup_restore_outcome *out, char *err, size_t errlen);

/* ---- HTTP handlers (server/routes.c) ---- */
void backup_api_policies_list(struct http_request *req);  /* GET /backup-policies */
void backup_api_policies_create(struct http_request *req); /* POST (admin) */
void backup_api_policies_get(struct http_request *req);    /* GET /backup-policies/{component} */
void backup_api_policies_patch(struct http_request *req);  /* PATCH (admin) */
void backup_api_policies_delete(struct http_request *req); /* DELETE (admin) */
void backup_api_list(struct http_request *req);            /* GET /backups */
void backup_api_get(struct http_request *req);             /* GET /backups/{id} */
void backup_api_run(struct http_request *req);     /* POST /databases/{id}/backups (202) */
void backup_api_verify(struct http_request *req);  /* POST /backups/{id}/verify (202) */
void backup_api_restore(struct http_request *req); /* POST /backups/{id}/restore (202) */
void backup_api_status(struct http_request *req);  /* GET /backups/status */
void backup_api_report(struct http_request *req);  /* POST /backups/reports */

#endif
