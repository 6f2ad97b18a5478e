/* The platform's own endpoints: liveness, readiness, metrics and the API contract. */
#ifndef QDB_PLATFORM_HEALTH_H
#define QDB_PLATFORM_HEALTH_H

#include "platform/http.h"

/* GET /healthz: the process is alive and answering. */
void health_live(struct http_request *req);
/* GET /readyz: the state store answers and its schema is at this binary's version. */
void health_ready(struct http_request *req);
/* GET /metrics: Prometheus text format 0.0.4. */
void health_metrics(struct http_request *req);
/* GET /api/v1/openapi.yaml: the contract compiled into this binary. */
void health_openapi(struct http_request *req);

#endif
