#include "routes.h"

#include "audit/audit.h"
#include "auth/auth.h"
#include "jobs/jobs.h"
#include "platform/environment.h"
#include "platform/health.h"
#include "wiring/wiring.h"

/* Keep each room's routes together, in the order of api/openapi.yaml. HTTP_INLINE marks a
 * handler that never blocks (no state store, no network): it runs on the event loop; every
 * other handler runs on the HTTP handler pool (platform/http.h). */
const struct http_route qdb_routes[] = {
    /* platform */
    {"GET", "/healthz", health_live, HTTP_PUBLIC, HTTP_INLINE},
    {"GET", "/readyz", health_ready, HTTP_PUBLIC, HTTP_INLINE},
    {"GET", "/metrics", health_metrics, HTTP_PUBLIC, HTTP_INLINE},
    {"GET", "/api/v1/openapi.yaml", health_openapi, HTTP_PUBLIC, HTTP_INLINE},
    {"GET", "/api/v1/environments", environment_api_list, HTTP_VIEWER, 0},

    /* auth */
    {"GET", "/api/v1/me", auth_api_me, HTTP_VIEWER, HTTP_INLINE},
    {"GET", "/api/v1/auth/config", auth_api_config, HTTP_PUBLIC, 0},
    {"GET", "/api/v1/tokens", auth_api_tokens_list, HTTP_ADMIN, 0},
    {"POST", "/api/v1/tokens", auth_api_tokens_create, HTTP_ADMIN, HTTP_BODY_JSON},
    {"DELETE", "/api/v1/tokens/{id}", auth_api_tokens_revoke, HTTP_ADMIN, 0},
    {"GET", "/dev-issuer/.well-known/openid-configuration", auth_dev_discovery, HTTP_PUBLIC,
     HTTP_INLINE},
    {"GET", "/dev-issuer/jwks", auth_dev_jwks, HTTP_PUBLIC, HTTP_INLINE},
    {"GET", "/dev-issuer/authorize", auth_dev_authorize, HTTP_PUBLIC, 0},
    {"POST", "/dev-issuer/oauth/token", auth_dev_oauth_token, HTTP_PUBLIC, 0},
    {"POST", "/dev-issuer/token", auth_dev_token, HTTP_PUBLIC, HTTP_BODY_JSON},

    /* audit */
    {"GET", "/api/v1/audit", audit_api_list, HTTP_VIEWER, 0},
    {"GET", "/api/v1/audit/verify", audit_api_verify, HTTP_VIEWER, 0},
    /* a full verification as a job; in wiring/ because audit knows no jobs */
    {"POST", "/api/v1/audit/verify", wiring_api_audit_verify_start, HTTP_OPERATOR,
     HTTP_BODY_JSON},
    {"GET", "/api/v1/audit/export", audit_api_export, HTTP_OPERATOR, 0},
    /* the outbox's relay to Kafka */
    {"GET", "/api/v1/events/status", audit_api_events_status, HTTP_VIEWER, 0},

    /* jobs */
    {"GET", "/api/v1/jobs", jobs_api_list, HTTP_VIEWER, 0},
    /* the kind decides who may enqueue (jobs_kind.direct_role), checked in the handler */
    {"POST", "/api/v1/jobs", jobs_api_create, HTTP_VIEWER, HTTP_BODY_JSON},
    /* before /{id}: the router takes the first match */
    {"GET", "/api/v1/jobs/events", jobs_api_events, HTTP_VIEWER, 0},
    {"GET", "/api/v1/jobs/{id}", jobs_api_get, HTTP_VIEWER, 0},
    {"GET", "/api/v1/jobs/{id}/logs", jobs_api_logs, HTTP_VIEWER, 0},
    {"POST", "/api/v1/jobs/{id}/cancel", jobs_api_cancel, HTTP_OPERATOR, 0},
    {"POST", "/api/v1/jobs/{id}/retry", jobs_api_retry, HTTP_OPERATOR, 0},
    {"GET", "/api/v1/schedules", jobs_api_schedules_list, HTTP_VIEWER, 0},
    {"POST", "/api/v1/schedules", jobs_api_schedules_create, HTTP_OPERATOR, HTTP_BODY_JSON},
    {"PATCH", "/api/v1/schedules/{name}", jobs_api_schedules_update, HTTP_OPERATOR,
     HTTP_BODY_JSON},
};

const size_t qdb_routes_count = sizeof qdb_routes / sizeof qdb_routes[0];
