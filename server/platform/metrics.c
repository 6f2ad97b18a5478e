#include "platform/metrics.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "platform/db.h"

static const unsigned statuses[] = {200, 201, 202, 204, 206, 301, 302, 304, 400, 401,
                                    403, 404, 405, 406, 409, 410, 412, 413, 415, 416,
                                    422, 429, 431, 500, 501, 502, 503, 504};
#define NSTATUS (sizeof statuses / sizeof statuses[0] + 1) /* + "other" */
static const double bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define NBOUND (sizeof bounds / sizeof bounds[0])

struct series {
    atomic_uint_fast64_t bucket[NBOUND]; /* non-cumulative; summed at render */
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum_ns;
};

static struct {
    const char *const *patterns;
    size_t nroutes; /* including static and unmatched */
    struct series *series; /* nroutes * NSTATUS */
    struct db_pool *pool;
    struct {
        metrics_collect_fn fn;
        void *cls;
    } collectors[32];
    size_t ncollectors;
    double start_time;
} M;

void metrics_register(metrics_collect_fn fn, void *cls)
{
    if (M.ncollectors < 32) {
        M.collectors[M.ncollectors].fn = fn;
        M.collectors[M.ncollectors].cls = cls;
        M.ncollectors++;
    }
}

void metrics_http_init(const char *const *route_patterns, size_t route_count)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    M.start_time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    free(M.series);
    M.patterns = route_patterns;
    M.nroutes = route_count + 2;
    M.series = calloc(M.nroutes * NSTATUS, sizeof *M.series);
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
    struct series *s = &M.series[route * NSTATUS + status_index(status)];
    size_t b = 0;
    while (b < NBOUND && seconds > bounds[b])
        b++;
    if (b < NBOUND)
        atomic_fetch_add_explicit(&s->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_ns, (uint_fast64_t)(seconds * 1e9), memory_order_relaxed);
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
    buf_puts(out, "# HELP qdb_http_requests_total HTTP requests answered, by route pattern and "
                  "status.\n# TYPE qdb_http_requests_total counter\n");
    for (size_t r = 0; r < M.nroutes; r++)
        for (size_t st = 0; st < NSTATUS; st++) {
            struct series *s = &M.series[r * NSTATUS + st];
            uint64_t n = atomic_load(&s->count);
            if (!n)
                continue;
            buf_puts(out, "qdb_http_requests_total{");
            render_labels(out, r, st);
            buf_printf(out, "} %llu\n", (unsigned long long)n);
        }
    buf_puts(out, "# HELP qdb_http_request_duration_seconds Time from request line to reply, "
                  "by route pattern and status.\n"
                  "# TYPE qdb_http_request_duration_seconds histogram\n");
    for (size_t r = 0; r < M.nroutes; r++)
        for (size_t st = 0; st < NSTATUS; st++) {
            struct series *s = &M.series[r * NSTATUS + st];
            uint64_t n = atomic_load(&s->count);
            if (!n)
                continue;
            uint64_t cum = 0;
            for (size_t b = 0; b < NBOUND; b++) {
                cum += atomic_load(&s->bucket[b]);
                buf_puts(out, "qdb_http_request_duration_seconds_bucket{");
                render_labels(out, r, st);
                buf_printf(out, ",le=\"%g\"} %llu\n", bounds[b], (unsigned long long)cum);
            }
            buf_puts(out, "qdb_http_request_duration_seconds_bucket{");
            render_labels(out, r, st);
            buf_printf(out, ",le=\"+Inf\"} %llu\n", (unsigned long long)n);
            buf_puts(out, "qdb_http_request_duration_seconds_sum{");
            render_labels(out, r, st);
            buf_printf(out, "} %.9f\n", (double)atomic_load(&s->sum_ns) / 1e9);
            buf_puts(out, "qdb_http_request_duration_seconds_count{");
            render_labels(out, r, st);
            buf_printf(out, "} %llu\n", (unsigned long long)n);
        }
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
