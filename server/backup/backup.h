/* The backup room's door (section 7 of the infrastructure design): a policy per protected
 * component, base backups and dumps of the inventory's managed databases taken by job
 * runners, a checksummed catalog, test restores that prove a backup by starting it, safe
 * retention, offsite copies, and the RPO/RTO table of every component of 7.1
 * (migrations/0014_backup.sql). */
#ifndef QDB_BACKUP_H
#define QDB_BACKUP_H

#include "module.h"
#include "platform/http.h"

extern const struct qdb_module backup_module;

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
