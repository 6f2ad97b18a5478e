/* Prometheus text exposition (format 0.0.4) for GET /metrics. The platform writes request,
 * pool and process metrics; rooms register a collector that appends their own families
 * (HELP, TYPE and samples) to the output. */
#ifndef QDB_PLATFORM_METRICS_H
#define QDB_PLATFORM_METRICS_H

#include <stddef.h>

#include "platform/buf.h"

struct db_pool;

/* A collector appends complete metric families to `out`. It runs on an HTTP thread at each
 * scrape and must be quick and thread-safe. */
typedef void (*metrics_collect_fn)(struct buf *out, void *cls);

/* Register a collector (at start-up, before the server starts). At most 32. */
void metrics_register(metrics_collect_fn fn, void *cls);

/* Request metrics, recorded by the HTTP core. `route_count` routes plus "static" and
 * "unmatched" series. Call once before the server starts. */
void metrics_http_init(const char *const *route_patterns, size_t route_count);
void metrics_http_observe(size_t route_index, unsigned status, double seconds);
/* The index used for static files and for requests that matched nothing. */
size_t metrics_route_static(void);
size_t metrics_route_unmatched(void);

/* The pool whose in-use / idle connections are reported. */
void metrics_set_pool(struct db_pool *pool);

/* Render everything. Returns 0 or -1 when out of memory. */
int metrics_render(struct buf *out);

/* Append a label value escaped for the exposition format (\\, \", \n). */
void metrics_escape_label(struct buf *out, const char *value);

#endif
