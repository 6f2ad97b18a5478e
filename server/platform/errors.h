/* The one error catalogue: every problem this service reports, with its HTTP status, title
 * and RFC 9457 `type` URI. Rooms add their codes to this enum (in their section) and to the
 * table in errors.c; nothing else renders problems. */
#ifndef QDB_PLATFORM_ERRORS_H
#define QDB_PLATFORM_ERRORS_H

enum qdb_error {
    /* platform */
    QDB_E_BAD_REQUEST = 0,    /* 400 generic malformed request */
    QDB_E_INVALID_JSON,       /* 400 body is not JSON; extension: line, column */
    QDB_E_VALIDATION,         /* 400 a field is missing or invalid; extension: field */
    QDB_E_UNAUTHORIZED,       /* 401 */
    QDB_E_FORBIDDEN,          /* 403 */
    QDB_E_NOT_FOUND,          /* 404 */
    QDB_E_METHOD_NOT_ALLOWED, /* 405; Allow header set by the router */
    QDB_E_CONFLICT,           /* 409 */
    QDB_E_PAYLOAD_TOO_LARGE,  /* 413 */
    QDB_E_UNSUPPORTED_MEDIA,  /* 415 */
    QDB_E_INTERNAL,           /* 500 */
    QDB_E_DB_UNAVAILABLE,     /* 503 the state store cannot be reached */
    QDB_E_NOT_READY,          /* 503 readiness failed */
    QDB_E_SHUTTING_DOWN,      /* 503 */
    /* auth */
    QDB_E_AUTH_UNAVAILABLE,   /* 503 issuer unreachable and no cached keys */
    /* jobs */
    QDB_E_JOB_STATE,          /* 409 the job's state does not allow the action */
    QDB_E_IDEMPOTENCY_CONFLICT, /* 409 same Idempotency-Key, different request */
    /* audit */
    QDB_E_AUDIT_BUSY,         /* 503 too many audit verifications / exports running here */
    /* deploy */
    QDB_E_TOO_MANY_REQUESTS,  /* 429 a client's requests in flight past its per-address limit */
    /* flags */
    QDB_E_PRECONDITION_FAILED,   /* 412 If-Match names another version */
    QDB_E_PRECONDITION_REQUIRED, /* 428 a production write without If-Match */
    /* inventory */
    QDB_E_INVENTORY_INVALID,  /* 422 the change breaks an inventory rule; extension: field */
    QDB_E_TARGET_NOT_CONFIGURED, /* 409 the environment has no such target */
    QDB_E_TARGET_UNAVAILABLE, /* 502 a target (Kafka, PostgreSQL, Connect) did not answer */
    /* backup */
    QDB_E_BACKUP_INVALID,     /* 422 the policy, report or restore breaks a rule; ext: field */
    QDB_E_BACKUP_STATE,       /* 409 the backup's status does not allow the action */
    /* dr */
    QDB_E_DR_INVALID,         /* 422 the drill or failover breaks a DR rule; extension: field */
    QDB_E_DR_BUSY,            /* 409 a failover or switchover of the database already runs */
    QDB_E_DR_REFUSED,         /* 409 the pair is not in a state that allows the change */

    QDB_E__COUNT
};

struct qdb_error_info {
    unsigned status;
    const char *slug;  /* type URI is "urn:qdb:problem:" slug */
    const char *title;
};

/* The catalogue entry of `code` (never NULL; unknown codes map to the internal error). */
const struct qdb_error_info *qdb_error_info(enum qdb_error code);

#endif
