#include "platform/metrics.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "platform/db.h"
#include "platform/log.h"

static const unsigned statuses[] = {200, 201, 202, 204, 206, 301, 302, 304, 400, 401,
                                    403, 404, 405, 406, 409, 410, 412, 413, 415, 416,
                                    422, 429, 431, 500, 501, 502, 503, 504};
#define NSTATUS (sizeof statuses / sizeof statuses[0] + 1) /* + "other" */
static const double http_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define NBOUND (sizeof http_bounds / sizeof http_bounds[0])

struct collector {
    metrics_collect_fn fn;
    void *cls;
};

static struct {
    const char *const *patterns;
    size_t nroutes; /* including static and unmatched */
    struct metrics_histogram *series; /* nroutes * NSTATUS */
    struct db_pool *pool;
    struct collector *collectors; /* grown by doubling at start-up */
    size_t ncollectors, cap_collectors;
    int registration_failed;
    double start_time;
} M;

int metrics_register(metrics_collect_fn fn, void *cls)
{
    if (M.ncollectors == M.cap_collectors) {
        size_t cap = M.cap_collectors ? 2 * M.cap_collectors : 16;
        struct collector *c = realloc(M.collectors, cap * sizeof *c);
        if (!c) {
            log_error("out of memory registering metrics collector %zu", M.ncollectors + 1);
            M.registration_failed = 1;
            return -1;
        }
        M.collectors = c;
        M.cap_collectors = cap;
    }
    M.collectors[M.ncollectors].fn = fn;
    M.collectors[M.ncollectors].cls = cls;
    M.ncollectors++;
    return 0;
}

int metrics_registration_failed(void)
{
    return M.registration_failed;
}

void metrics_histogram_observe(struct metrics_histogram *h, const double *bounds,
                               size_t nbounds, double value)
{
    if (nbounds > METRICS_HISTOGRAM_MAX)
        nbounds = METRICS_HISTOGRAM_MAX; /* larger values land in +Inf; see the header */
    if (!(value > 0))
        value = 0; /* also NaN */
    size_t b = 0;
    while (b < nbounds && value > bounds[b])
        b++;
    atomic_fetch_add_explicit(&h->bucket[b < nbounds ? b : METRICS_HISTOGRAM_MAX], 1,
                              memory_order_relaxed);
    double ns = value * 1e9;
    atomic_fetch_add_explicit(&h->sum_ns, ns < 1.8e19 ? (uint_fast64_t)ns : UINT64_MAX / 2,
                              memory_order_relaxed);
}

void metrics_histogram_render(struct buf *out, const char *family, const char *labels,
                              const struct metrics_histogram *h, const double *bounds,
                              size_t nbounds)
{
    if (nbounds > METRICS_HISTOGRAM_MAX)
        nbounds = METRICS_HISTOGRAM_MAX;
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (size_t b = 0; b < nbounds; b++) {
        cum += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
        buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", family, labels, sep, bounds[b],
                   (unsigned long long)cum);
    }
    for (size_t b = nbounds; b <= METRICS_HISTOGRAM_MAX; b++)
        cum += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
    buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", family, labels, sep,
               (unsigned long long)cum);
    buf_printf(out, "%s_sum{%s} %.9f\n", family, labels,
               (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9);
    buf_printf(out, "%s_count{%s} %llu\n", family, labels, (unsigned long long)cum);
}

void metrics_family(struct buf *out, const char *family, const char *type, const char *help)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", family, help, family, type);
}

static uint64_t histogram_count(const struct metrics_histogram *h)
{
    uint64_t n = 0;
    for (size_t b = 0; b <= METRICS_HISTOGRAM_MAX; b++)
        n += atomic_load_explicit(&h->bucket[b], memory_order_relaxed);
    return n;
}

int metrics_http_init(const char *const *route_patterns, size_t route_count)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    M.start_time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    free(M.series);
    M.patterns = route_patterns;
    M.nroutes = route_count + 2;
    M.series = calloc(M.nroutes * NSTATUS, sizeof *M.series);
    if (!M.series) {
        log_error("out of memory for the request metrics of %zu routes", route_count);
        return -1;
    }
    return 0;
}

size_t metrics_route_static(void)
{
    return M.nroutes - 2;
}

size_t metrics_route_unmatched(void)
{
    return M.nroutes - 1;
}

static size_t status_index(unsigned status)
{
    for (size_t i = 0; i < NSTATUS - 1; i++)
        if (statuses[i] == status)
            return i;
    return NSTATUS - 1;
}

void metrics_http_observe(size_t route, unsigned status, double seconds)
{
    if (!M.series || route >= M.nroutes)
        return;
    metrics_histogram_observe(&M.series[route * NSTATUS + status_index(status)], http_bounds, NBOUND,
                              seconds);
}

void metrics_set_pool(struct db_pool *pool)
{
    M.pool = pool;
}

void metrics_escape_label(struct buf *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            buf_puts(out, "\\\\");
        else if (*v == '"')
            buf_puts(out, "\\\"");
        else if (*v == '\n')
            buf_puts(out, "\\n");
        else
            buf_append(out, v, 1);
    }
}

static const char *route_label(size_t r)
{
    if (r == M.nroutes - 2)
        return "static";
    if (r == M.nroutes - 1)
        return "unmatched";
    return M.patterns[r];
}

static void render_labels(struct buf *out, size_t r, size_t st)
{
    buf_puts(out, "route=\"");
    metrics_escape_label(out, route_label(r));
    if (st < NSTATUS - 1)
        buf_printf(out, "\",status=\"%u\"", statuses[st]);
    else
        buf_puts(out, "\",status=\"other\"");
}

static void render_http(struct buf *out)
{
    metrics_family(out, "qdb_http_requests_total", "counter",
                   "HTTP requests answered, by route pattern and status.");
    struct buf labels;
    buf_init(&labels, 0);
    for (size_t r = 0; r < M.nroutes; r++)
        for (size_t st = 0; st < NSTATUS; st++) {
            uint64_t n = histogram_count(&M.series[r * NSTATUS + st]);
            if (!n)
                continue;
            buf_puts(out, "qdb_http_requests_total{");
            render_labels(out, r, st);
            buf_printf(out, "} %llu\n", (unsigned long long)n);
        }
    metrics_family(out, "qdb_http_request_duration_seconds", "histogram",
                   "Time from request line to reply, by route pattern and status.");
    for (size_t r = 0; r < M.nroutes; r++)
        for (size_t st = 0; st < NSTATUS; st++) {
            const struct metrics_histogram *h = &M.series[r * NSTATUS + st];
            if (!histogram_count(h))
                continue;
            labels.len = 0;
            render_labels(&labels, r, st);
            metrics_histogram_render(out, "qdb_http_request_duration_seconds", labels.data, h,
                                     http_bounds, NBOUND);
        }
    buf_free(&labels);
}

static long resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    long size = 0, resident = 0;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

int metrics_render(struct buf *out)
{
    if (M.series)
        render_http(out);
    if (M.pool) {
        unsigned in_use, idle, size;
        db_pool_stats(M.pool, &in_use, &idle, &size);
        buf_printf(out,
                   "# HELP qdb_db_pool_connections State-store connections of this process's "
                   "pool.\n# TYPE qdb_db_pool_connections gauge\n"
                   "qdb_db_pool_connections{state=\"in_use\"} %u\n"
                   "qdb_db_pool_connections{state=\"idle\"} %u\n"
                   "# HELP qdb_db_pool_max_connections Size of the pool.\n"
                   "# TYPE qdb_db_pool_max_connections gauge\nqdb_db_pool_max_connections %u\n",
                   in_use, idle, size);
        struct db_reach_stats r;
        db_reach_stats(&r);
        buf_printf(out,
                   "# HELP qdb_db_up Whether the state store is reachable (0 during an outage)."
                   "\n# TYPE qdb_db_up gauge\nqdb_db_up %d\n"
                   "# HELP qdb_db_connect_attempts_total Connects tried to the state store.\n"
                   "# TYPE qdb_db_connect_attempts_total counter\n"
                   "qdb_db_connect_attempts_total %lu\n"
                   "# HELP qdb_db_connect_failures_total Connects to the state store that "
                   "failed.\n# TYPE qdb_db_connect_failures_total counter\n"
                   "qdb_db_connect_failures_total %lu\n"
                   "# HELP qdb_db_requests_refused_total Connection requests refused at once "
                   "during an outage (reconnect backoff).\n"
                   "# TYPE qdb_db_requests_refused_total counter\n"
                   "qdb_db_requests_refused_total %lu\n"
                   "# HELP qdb_db_outages_total Outages of the state store seen.\n"
                   "# TYPE qdb_db_outages_total counter\nqdb_db_outages_total %lu\n",
                   r.up, r.connect_attempts, r.connect_failures, r.requests_refused, r.outages);
    }
    buf_printf(out,
               "# HELP process_start_time_seconds Start time of the process since unix epoch "
               "in seconds.\n# TYPE process_start_time_seconds gauge\n"
               "process_start_time_seconds %.3f\n"
               "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
               "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %ld\n",
               M.start_time, resident_bytes());
    for (size_t i = 0; i < M.ncollectors; i++)
        M.collectors[i].fn(out, M.collectors[i].cls);
    return 0;
}
