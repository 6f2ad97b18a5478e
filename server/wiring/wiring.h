/* Where rooms are wired to each other: seams that belong to no single room because they
 * use two of them (a room may only use the rooms above it in ARCHITECTURE.md's table, so a
 * piece that joins audit and jobs lives here, not in audit/). Each file is a module in
 * main.c's list. */
#ifndef QDB_WIRING_H
#define QDB_WIRING_H

#include "module.h"
#include "platform/http.h"

/* The audit chain's verification as a job kind (audit.verify) and its daily schedule
 * (audit-verify-daily, 03:17 UTC). */
extern const struct qdb_module wiring_audit_module;
/* POST /api/v1/audit/verify (operator): body {} for the whole chain (or {from_seq,
 * to_seq}); enqueues an audit.verify job, audited as audit.verify, and replies 202 with
 * Location: /api/v1/jobs/{id} and the job. */
void wiring_api_audit_verify_start(struct http_request *req);

#endif
