/* The disaster recovery room's door (sections 7.2-7.4 of the infrastructure design): the
 * organisation's RPO/RTO targets per component and the scenarios of 7.3 (seeded in
 * migrations/0015_dr.sql), failover and switchover of the inventory's managed PostgreSQL
 * pairs, drills that restore the newest verified backups into the DR environment through
 * the backup room, and the achieved RTO and RPO of each against its target. */
#ifndef QDB_DR_H
#define QDB_DR_H

#include "module.h"
#include "platform/http.h"

extern const struct qdb_module dr_module;

/* ---- HTTP handlers (server/routes.c) ---- */
void dr_api_scenarios(struct http_request *req);  /* GET /dr/scenarios */
void dr_api_status(struct http_request *req);     /* GET /dr/status */
void dr_api_failover(struct http_request *req);   /* POST /databases/{id}/failover (admin, 202) */
void dr_api_switchover(struct http_request *req); /* POST /databases/{id}/switchover (admin, 202) */
void dr_api_failovers_list(struct http_request *req); /* GET /dr/failovers */
void dr_api_failovers_get(struct http_request *req);  /* GET /dr/failovers/{id} */
void dr_api_drills_create(struct http_request *req);  /* POST /dr/drills (operator, 202) */
void dr_api_drills_list(struct http_request *req);    /* GET /dr/drills */
void dr_api_drills_get(struct http_request *req);     /* GET /dr/drills/{id} */

#endif
