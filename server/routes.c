#include "routes.h"

#include "platform/health.h"

/* Keep each room's routes together, in the order of api/openapi.yaml. */
const struct http_route qdb_routes[] = {
    /* platform */
    {"GET", "/healthz", health_live, HTTP_PUBLIC, 0},
    {"GET", "/readyz", health_ready, HTTP_PUBLIC, 0},
    {"GET", "/metrics", health_metrics, HTTP_PUBLIC, 0},
    {"GET", "/api/v1/openapi.yaml", health_openapi, HTTP_PUBLIC, 0},

    /* auth */

    /* audit */

    /* jobs */
};

const size_t qdb_routes_count = sizeof qdb_routes / sizeof qdb_routes[0];
