/* Prometheus text exposition (format 0.0.4) for GET /metrics. The platform writes request,
 * pool and process metrics; rooms register a collector that appends their own families
 * (HELP, TYPE and samples) to the output. */
#ifndef QDB_PLATFORM_METRICS_H
#define QDB_PLATFORM_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "platform/buf.h"

struct db_pool;

/* A collector appends complete metric families to `out`. It runs on an HTTP thread at each
 * scrape and must be quick and thread-safe. */
typedef void (*metrics_collect_fn)(struct buf *out, void *cls);

/* Register a collector (in a module's init, before the server starts; there is no limit on
 * their number). Returns 0, or -1 (logged) when memory ran out: the caller's init fails,
 * and serve refuses to start anyway (metrics_registration_failed). */
int metrics_register(metrics_collect_fn fn, void *cls);
/* Whether any registration failed (checked once every module's init has run). */
int metrics_registration_failed(void);

/* ---- histograms: one shape for every room ----
 * A histogram series counts observations into buckets with fixed upper bounds (seconds,
 * bytes...), lock-free. Declare the bounds once (ascending, at most METRICS_HISTOGRAM_MAX
 * of them) and one struct metrics_histogram per series (zero-initialised is empty):
 *     static const double run_bounds[] = {0.1, 1, 10, 60};
 *     static struct metrics_histogram runs[NKINDS];
 *     metrics_histogram_observe(&runs[k], run_bounds, 4, secs);
 * and render each series at scrape time after one metrics_family() header:
 *     metrics_family(out, "qdb_job_run_seconds", "histogram", "Run time of job attempts.");
 *     metrics_histogram_render(out, "qdb_job_run_seconds", "kind=\"noop\"", &runs[k],
 *                              run_bounds, 4);
 * which writes _bucket{...,le=...} (cumulative, then +Inf), _sum and _count, consistent
 * with each other within one scrape. */
#define METRICS_HISTOGRAM_MAX 24
struct metrics_histogram {
    atomic_uint_fast64_t bucket[METRICS_HISTOGRAM_MAX + 1]; /* non-cumulative; last: +Inf */
    atomic_uint_fast64_t sum_ns; /* the sum of observed values, in billionths */
};
/* Count `value` (a negative value counts as 0). nbounds must be <= METRICS_HISTOGRAM_MAX. */
void metrics_histogram_observe(struct metrics_histogram *h, const double *bounds,
                               size_t nbounds, double value);
/* Append the samples of one series. `labels` is the series' label list already escaped
 * (`route="/x",status="200"`), or "" for none. */
void metrics_histogram_render(struct buf *out, const char *family, const char *labels,
                              const struct metrics_histogram *h, const double *bounds,
                              size_t nbounds);
/* Append "# HELP family help" and "# TYPE family type". */
void metrics_family(struct buf *out, const char *family, const char *type, const char *help);

/* Request metrics, recorded by the HTTP core. `route_count` routes plus "static" and
 * "unmatched" series. Call once before the server starts. Returns 0, or -1 (logged) when
 * memory ran out. */
int metrics_http_init(const char *const *route_patterns, size_t route_count);
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
