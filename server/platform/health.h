/* The platform's own endpoints: liveness, readiness, metrics and the API contract. All of
 * them answer on the event loop (HTTP_INLINE): none waits on the state store, so a probe
 * gets its answer in microseconds even when every handler thread is busy. */
#ifndef QDB_PLATFORM_HEALTH_H
#define QDB_PLATFORM_HEALTH_H

#include "platform/db.h"
#include "platform/http.h"

/* How often the readiness prober checks, and how old its last success may be before
 * /readyz says not ready (a probe stuck on a silent network counts as a failure). */
#define HEALTH_PROBE_INTERVAL_MS 1000
#define HEALTH_READY_MAX_AGE_MS 3000

/* Start the readiness prober: a thread with its own state-store connection (`s` borrowed,
 * must outlive health_stop) that checks every HEALTH_PROBE_INTERVAL_MS that the store
 * answers and its schema is at this binary's version. The first check runs before this
 * returns. Returns 0, or -1 (logged) when the thread cannot start. */
int health_start(const struct db_settings *s);
/* Stop and join the prober (no-op when not started). */
void health_stop(void);

/* GET /healthz: the process is alive and answering. */
void health_live(struct http_request *req);
/* GET /readyz: the prober's last answer, when it is recent enough; never waits. */
void health_ready(struct http_request *req);
/* GET /metrics: Prometheus text format 0.0.4. */
void health_metrics(struct http_request *req);
/* GET /api/v1/openapi.yaml: the contract compiled into this binary. */
void health_openapi(struct http_request *req);

#endif
