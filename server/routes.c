#include "routes.h"

#include "audit/audit.h"
#include "auth/auth.h"
#include "flags/flags.h"
#include "inventory/inventory.h"
#include "backup/backup.h"
#include "dr/dr.h"
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

    /* flags: OFREP evaluation from the in-memory snapshot, on the event loop; the handlers
     * check and parse the JSON body themselves (a body seen before is not parsed again) */
    {"POST", "/ofrep/v1/evaluate/flags/{key}", flags_ofrep_evaluate_one, HTTP_VIEWER,
     HTTP_INLINE},
    {"POST", "/ofrep/v1/evaluate/flags", flags_ofrep_evaluate_bulk, HTTP_VIEWER, HTTP_INLINE},
    {"GET", "/ofrep/v1/configuration", flags_ofrep_configuration, HTTP_VIEWER, HTTP_INLINE},
    /* flags: management; the fixed paths before /{key} (the router takes the first match) */
    {"GET", "/api/v1/flags", flags_api_list, HTTP_VIEWER, 0},
    {"POST", "/api/v1/flags", flags_api_create, HTTP_OPERATOR, HTTP_BODY_JSON},
    {"GET", "/api/v1/flags/export", flags_api_export, HTTP_VIEWER, HTTP_INLINE},
    {"POST", "/api/v1/flags/import", flags_api_import, HTTP_OPERATOR, HTTP_BODY_JSON},
    {"POST", "/api/v1/flags/diff", flags_api_diff, HTTP_VIEWER, HTTP_BODY_JSON | HTTP_INLINE},
    {"GET", "/api/v1/flags/events", flags_api_events, HTTP_VIEWER, HTTP_INLINE},
    {"GET", "/api/v1/flags/{key}", flags_api_get, HTTP_VIEWER, 0},
    {"PATCH", "/api/v1/flags/{key}", flags_api_update, HTTP_OPERATOR, HTTP_BODY_JSON},
    {"DELETE", "/api/v1/flags/{key}", flags_api_delete, HTTP_ADMIN, 0},
    /* production needs admin: checked in the handler (the route serves every environment) */
    {"PUT", "/api/v1/flags/{key}/environments/{env}", flags_api_put_environment, HTTP_OPERATOR,
     HTTP_BODY_JSON},
    {"GET", "/api/v1/flags/{key}/versions", flags_api_versions, HTTP_VIEWER, 0},
    {"POST", "/api/v1/flags/{key}/rollback", flags_api_rollback, HTTP_OPERATOR, HTTP_BODY_JSON},
    {"POST", "/api/v1/flags/{key}/promote", flags_api_promote, HTTP_OPERATOR, HTTP_BODY_JSON},
    {"GET", "/api/v1/flags/{key}/rollouts", flags_api_rollouts_list, HTTP_VIEWER, 0},
    {"POST", "/api/v1/flags/{key}/rollouts", flags_api_rollouts_create, HTTP_OPERATOR,
     HTTP_BODY_JSON},
    {"POST", "/api/v1/flags/{key}/rollouts/{id}/cancel", flags_api_rollouts_cancel,
     HTTP_OPERATOR, 0},
    {"POST", "/api/v1/flags/{key}/rollouts/{id}/abort", flags_api_rollouts_abort, HTTP_OPERATOR,
     0},
    {"GET", "/api/v1/segments", flags_api_segments_list, HTTP_VIEWER, 0},
    {"POST", "/api/v1/segments", flags_api_segments_create, HTTP_OPERATOR, HTTP_BODY_JSON},
    {"GET", "/api/v1/segments/{name}", flags_api_segments_get, HTTP_VIEWER, 0},
    {"PUT", "/api/v1/segments/{name}", flags_api_segments_update, HTTP_OPERATOR,
     HTTP_BODY_JSON},
    {"DELETE", "/api/v1/segments/{name}", flags_api_segments_delete, HTTP_OPERATOR, 0},
    {"GET", "/api/v1/change-requests", flags_api_change_requests_list, HTTP_VIEWER, 0},
    {"POST", "/api/v1/change-requests/{id}/approve", flags_api_change_requests_approve,
     HTTP_ADMIN, 0},
    {"POST", "/api/v1/change-requests/{id}/reject", flags_api_change_requests_reject,
     HTTP_ADMIN, 0},

    /* inventory: the plan and the lag talk to targets (bounded by
     * QDB_INVENTORY_TARGET_TIMEOUT), on the handler pool like every blocking handler */
    {"GET", "/api/v1/environments/{env}", inventory_api_environment_get, HTTP_VIEWER, 0},
    {"PATCH", "/api/v1/environments/{env}", inventory_api_environment_patch, HTTP_ADMIN,
     HTTP_BODY_JSON},
    {"GET", "/api/v1/environments/{env}/pgbouncer.ini", inventory_api_pgbouncer_ini, HTTP_VIEWER,
     0},
    {"GET", "/api/v1/environments/{env}/plan", inventory_api_plan, HTTP_VIEWER, 0},
    {"POST", "/api/v1/environments/{env}/apply", inventory_api_apply, HTTP_OPERATOR,
     HTTP_BODY_JSON},
    {"GET", "/api/v1/databases", inventory_api_databases_list, HTTP_VIEWER, 0},
    {"POST", "/api/v1/databases", inventory_api_databases_create, HTTP_ADMIN, HTTP_BODY_JSON},
    {"GET", "/api/v1/databases/{id}", inventory_api_databases_get, HTTP_VIEWER, 0},
    {"PATCH", "/api/v1/databases/{id}", inventory_api_databases_patch, HTTP_ADMIN, HTTP_BODY_JSON},
    {"DELETE", "/api/v1/databases/{id}", inventory_api_databases_delete, HTTP_ADMIN, 0},
    {"GET", "/api/v1/kafka/topics", inventory_api_topics_list, HTTP_VIEWER, 0},
    {"POST", "/api/v1/kafka/topics", inventory_api_topics_create, HTTP_OPERATOR, HTTP_BODY_JSON},
    {"GET", "/api/v1/kafka/topics/{name}", inventory_api_topics_get, HTTP_VIEWER, 0},
    {"PATCH", "/api/v1/kafka/topics/{name}", inventory_api_topics_patch, HTTP_OPERATOR,
     HTTP_BODY_JSON},
    {"DELETE", "/api/v1/kafka/topics/{name}", inventory_api_topics_delete, HTTP_ADMIN, 0},
    {"GET", "/api/v1/kafka/consumer-groups", inventory_api_groups_list, HTTP_VIEWER, 0},
    {"POST", "/api/v1/kafka/consumer-groups", inventory_api_groups_create, HTTP_OPERATOR,
     HTTP_BODY_JSON},
    {"GET", "/api/v1/kafka/consumer-groups/{name}", inventory_api_groups_get, HTTP_VIEWER, 0},
    {"PATCH", "/api/v1/kafka/consumer-groups/{name}", inventory_api_groups_patch, HTTP_OPERATOR,
     HTTP_BODY_JSON},
    {"DELETE", "/api/v1/kafka/consumer-groups/{name}", inventory_api_groups_delete, HTTP_ADMIN, 0},
    {"GET", "/api/v1/kafka/consumer-groups/{name}/lag", inventory_api_groups_lag, HTTP_VIEWER, 0},
    {"GET", "/api/v1/kafka/connectors", inventory_api_connectors_list, HTTP_VIEWER, 0},
    {"POST", "/api/v1/kafka/connectors", inventory_api_connectors_create, HTTP_OPERATOR,
     HTTP_BODY_JSON},
    {"GET", "/api/v1/kafka/connectors/{name}", inventory_api_connectors_get, HTTP_VIEWER, 0},
    {"PATCH", "/api/v1/kafka/connectors/{name}", inventory_api_connectors_patch, HTTP_OPERATOR,
     HTTP_BODY_JSON},
    {"DELETE", "/api/v1/kafka/connectors/{name}", inventory_api_connectors_delete, HTTP_ADMIN, 0},
    {"POST", "/api/v1/inventory/import", inventory_api_import, HTTP_OPERATOR, HTTP_BODY_JSON},

    /* backup: the restore's emptiness check talks to the target */
    {"GET", "/api/v1/backup-policies", backup_api_policies_list, HTTP_VIEWER, 0},
    {"POST", "/api/v1/backup-policies", backup_api_policies_create, HTTP_ADMIN, HTTP_BODY_JSON},
    {"GET", "/api/v1/backup-policies/{component}", backup_api_policies_get, HTTP_VIEWER, 0},
    {"PATCH", "/api/v1/backup-policies/{component}", backup_api_policies_patch, HTTP_ADMIN,
     HTTP_BODY_JSON},
    {"DELETE", "/api/v1/backup-policies/{component}", backup_api_policies_delete, HTTP_ADMIN, 0},
    {"GET", "/api/v1/backups", backup_api_list, HTTP_VIEWER, 0},
    {"GET", "/api/v1/backups/status", backup_api_status, HTTP_VIEWER, 0},
    {"POST", "/api/v1/backups/reports", backup_api_report, HTTP_OPERATOR, HTTP_BODY_JSON},
    {"GET", "/api/v1/backups/{id}", backup_api_get, HTTP_VIEWER, 0},
    {"POST", "/api/v1/backups/{id}/verify", backup_api_verify, HTTP_OPERATOR, 0},
    {"POST", "/api/v1/backups/{id}/restore", backup_api_restore, HTTP_ADMIN, HTTP_BODY_JSON},
    {"POST", "/api/v1/databases/{id}/backups", backup_api_run, HTTP_OPERATOR, HTTP_BODY_JSON},

    /* dr: the switchover's checks and the drill's talk to the pair's servers */
    {"GET", "/api/v1/dr/scenarios", dr_api_scenarios, HTTP_VIEWER, 0},
    {"GET", "/api/v1/dr/status", dr_api_status, HTTP_VIEWER, 0},
    {"GET", "/api/v1/dr/failovers", dr_api_failovers_list, HTTP_VIEWER, 0},
    {"GET", "/api/v1/dr/failovers/{id}", dr_api_failovers_get, HTTP_VIEWER, 0},
    {"GET", "/api/v1/dr/drills", dr_api_drills_list, HTTP_VIEWER, 0},
    {"POST", "/api/v1/dr/drills", dr_api_drills_create, HTTP_OPERATOR, HTTP_BODY_JSON},
    {"GET", "/api/v1/dr/drills/{id}", dr_api_drills_get, HTTP_VIEWER, 0},
    {"POST", "/api/v1/databases/{id}/failover", dr_api_failover, HTTP_ADMIN, 0},
    {"POST", "/api/v1/databases/{id}/switchover", dr_api_switchover, HTTP_ADMIN, HTTP_BODY_JSON},
};

const size_t qdb_routes_count = sizeof qdb_routes / sizeof qdb_routes[0];
