#include "platform/errors.h"

static const struct qdb_error_info catalogue[QDB_E__COUNT] = {
    [QDB_E_BAD_REQUEST] = {400, "bad-request", "Bad request"},
    [QDB_E_INVALID_JSON] = {400, "invalid-json", "Request body is not valid JSON"},
    [QDB_E_VALIDATION] = {400, "validation", "Invalid field"},
    [QDB_E_UNAUTHORIZED] = {401, "unauthorized", "Authentication required"},
    [QDB_E_FORBIDDEN] = {403, "forbidden", "Permission denied"},
    [QDB_E_NOT_FOUND] = {404, "not-found", "Not found"},
    [QDB_E_METHOD_NOT_ALLOWED] = {405, "method-not-allowed", "Method not allowed"},
    [QDB_E_CONFLICT] = {409, "conflict", "Conflict"},
    [QDB_E_PAYLOAD_TOO_LARGE] = {413, "payload-too-large", "Request body too large"},
    [QDB_E_UNSUPPORTED_MEDIA] = {415, "unsupported-media-type", "Unsupported media type"},
    [QDB_E_INTERNAL] = {500, "internal", "Internal server error"},
    [QDB_E_DB_UNAVAILABLE] = {503, "state-store-unavailable", "State store unavailable"},
    [QDB_E_NOT_READY] = {503, "not-ready", "Not ready"},
    [QDB_E_SHUTTING_DOWN] = {503, "shutting-down", "Server is shutting down"},
    [QDB_E_AUTH_UNAVAILABLE] = {503, "issuer-unavailable", "Token issuer unavailable"},
    [QDB_E_JOB_STATE] = {409, "job-state", "Job state does not allow this"},
    [QDB_E_IDEMPOTENCY_CONFLICT] = {409, "idempotency-conflict",
                                    "Idempotency key reused with a different request"},
    /* audit */
    [QDB_E_AUDIT_BUSY] = {503, "audit-busy", "Audit verification or export busy"},
    /* deploy */
    [QDB_E_TOO_MANY_REQUESTS] = {429, "too-many-requests", "Too many requests"},
    /* flags */
    [QDB_E_PRECONDITION_FAILED] = {412, "precondition-failed",
                                   "The resource changed since the version named"},
    [QDB_E_PRECONDITION_REQUIRED] = {428, "precondition-required",
                                     "This change needs If-Match"},
    /* inventory */
    [QDB_E_INVENTORY_INVALID] = {422, "inventory-invalid", "The change breaks an inventory rule"},
    [QDB_E_TARGET_NOT_CONFIGURED] = {409, "target-not-configured",
                                     "The environment has no such target"},
    [QDB_E_TARGET_UNAVAILABLE] = {502, "target-unavailable", "A target system did not answer"},
    /* backup */
    [QDB_E_BACKUP_INVALID] = {422, "backup-invalid", "The change breaks a backup rule"},
    [QDB_E_BACKUP_STATE] = {409, "backup-state", "The backup's status does not allow the action"},
    [QDB_E_DR_INVALID] = {422, "dr-invalid", "The request breaks a disaster recovery rule"},
    [QDB_E_DR_BUSY] = {409, "dr-busy", "A failover or switchover of the database is running"},
    [QDB_E_DR_REFUSED] = {409, "dr-refused", "The database's servers do not allow the change now"},
};

const struct qdb_error_info *qdb_error_info(enum qdb_error code)
{
    if ((unsigned)code >= QDB_E__COUNT || catalogue[code].status == 0)
        return &catalogue[QDB_E_INTERNAL];
    return &catalogue[code];
}
