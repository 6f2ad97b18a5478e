/* The DR status (GET /api/v1/dr/status): per component of 7.2, its targets beside the
 * latest measured figures (last failover, switchover and drill), with a state: breach when
 * the last drill failed or missed a target, warning when a measurement is older than the
 * drill period (a quarter, 7.4) or no drill was ever run. The gauges of /metrics
 * (qdb_dr_last_drill_rto_seconds, qdb_dr_last_drill_rpo_seconds) are refreshed at start-up,
 * after each drill this replica runs, and at each status request. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "dr/dr_internal.h"
#include "platform/buf.h"
#include "platform/log.h"
#include "platform/metrics.h"

static pthread_mutex_t gauge_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *gauges; /* {component: [rto|null, rpo|null]} */

static void series(struct buf *out, const char *family, int idx)
{
    const char *k;
    json_t *v;
    json_object_foreach(gauges, k, v)
    {
        json_t *x = json_array_get(v, idx);
        if (!json_is_number(x))
            continue;
        buf_printf(out, "%s{component=\"", family);
        metrics_escape_label(out, k);
        buf_printf(out, "\"} %.3f\n", json_number_value(x));
    }
}

static void collect(struct buf *out, void *cls)
{
    (void)cls;
    pthread_mutex_lock(&gauge_lock);
    metrics_family(out, "qdb_dr_last_drill_rto_seconds", "gauge",
                   "Achieved RTO of the last DR drill of each component (start to checked).");
    series(out, "qdb_dr_last_drill_rto_seconds", 0);
    metrics_family(out, "qdb_dr_last_drill_rpo_seconds", "gauge",
                   "Achieved RPO of the last DR drill of each component (last commit on the "
                   "source to the last transaction in the restore).");
    series(out, "qdb_dr_last_drill_rpo_seconds", 1);
    pthread_mutex_unlock(&gauge_lock);
}

int dr_status_init(struct db_pool *pool)
{
    if (metrics_register(collect, NULL) != 0)
        return -1;
    struct db_conn *c = pool ? db_acquire(pool, 10000) : NULL;
    if (c) {
        json_t *st = NULL;
        if (dr_status_compute(c, &st) < 0)
            log_warn("dr: could not read the last drills for the metrics");
        json_decref(st);
        db_release(pool, c);
    }
    return 0;
}

void dr_status_free(void)
{
    pthread_mutex_lock(&gauge_lock);
    json_decref(gauges);
    gauges = NULL;
    pthread_mutex_unlock(&gauge_lock);
}

static int rank_of(const char *s)
{
    return strcmp(s, "breach") == 0 ? 2 : strcmp(s, "warning") == 0 ? 1 : 0;
}

static void worsen(const char **state, const char *to, json_t *reasons, const char *why)
{
    if (rank_of(to) > rank_of(*state))
        *state = to;
    json_array_append_new(reasons, json_pack("{s:s,s:s}", "state", to, "reason", why));
}

static void stale(const char **state, json_t *reasons, const json_t *m, const char *what)
{
    double age = json_number_value(json_object_get(m, "age_seconds"));
    if (json_is_object(m) && age > (double)DR_STALE_SECONDS) {
        char why[160];
        snprintf(why, sizeof why,
                 "the last %s is %.0f days old, older than the drill period "
                 "of %ld days",
                 what, age / 86400, DR_STALE_SECONDS / 86400);
        worsen(state, "warning", reasons, why);
    }
}

int dr_status_compute(struct db_conn *c, json_t **out)
{
    json_t *rows = NULL, *scen = NULL;
    int rc = dr_store_status(c, &rows);
    if (rc >= 0)
        rc = dr_store_scenarios(c, &scen);
    if (rc < 0) {
        json_decref(rows);
        return rc;
    }
    /* a failover is measured against 7.3's "Database primary failure" bound */
    json_int_t failover_target = 0;
    size_t i;
    json_t *v;
    json_array_foreach(scen, i, v)
    {
        if (strcmp(json_string_value(json_object_get(v, "slug")), "database-primary-failure") == 0)
            failover_target = json_integer_value(json_object_get(v, "target_rto_seconds"));
    }
    json_t *g = json_object();
    json_array_foreach(rows, i, v)
    {
        const char *state = "ok";
        json_t *reasons = json_array(), *drill = json_object_get(v, "last_drill");
        char why[200];
        double rto_t = (double)json_integer_value(json_object_get(v, "rto_seconds"));
        double rpo_t = (double)json_integer_value(json_object_get(v, "rpo_seconds"));
        if (!json_is_object(drill)) {
            worsen(&state, "warning", reasons, "no drill on record");
        } else {
            json_t *rto = json_object_get(drill, "rto_seconds"),
                   *rpo = json_object_get(drill, "rpo_seconds");
            if (!json_is_true(json_object_get(drill, "ok")))
                worsen(&state, "breach", reasons, "the last drill failed");
            if (json_is_number(rto) && json_number_value(rto) > rto_t) {
                snprintf(why, sizeof why, "the last drill's RTO %.0f s exceeds the target %.0f s",
                         json_number_value(rto), rto_t);
                worsen(&state, "breach", reasons, why);
            }
            if (json_is_number(rpo) && json_number_value(rpo) > rpo_t) {
                snprintf(why, sizeof why, "the last drill's RPO %.0f s exceeds the target %.0f s",
                         json_number_value(rpo), rpo_t);
                worsen(&state, "breach", reasons, why);
            } else if (json_is_true(json_object_get(drill, "ok")) && !json_is_number(rpo)) {
                worsen(&state, "warning", reasons,
                       "the last drill could not measure its RPO (the restore replayed no "
                       "transaction)");
            }
            stale(&state, reasons, drill, "drill");
            json_object_set_new(g, json_string_value(json_object_get(v, "component")),
                                json_pack("[O,O]", json_is_number(rto) ? rto : json_null(),
                                          json_is_number(rpo) ? rpo : json_null()));
        }
        json_t *fo = json_object_get(v, "last_failover");
        if (json_is_object(fo) && failover_target > 0 &&
            json_number_value(json_object_get(fo, "rto_seconds")) > (double)failover_target) {
            snprintf(why, sizeof why, "the last failover's RTO %.1f s exceeds 7.3's %lld s",
                     json_number_value(json_object_get(fo, "rto_seconds")),
                     (long long)failover_target);
            worsen(&state, "breach", reasons, why);
        }
        stale(&state, reasons, fo, "failover");
        stale(&state, reasons, json_object_get(v, "last_switchover"), "switchover");
        json_object_set_new(v, "failover_target_rto_seconds", json_integer(failover_target));
        json_object_set_new(v, "state", json_string(state));
        json_object_set_new(v, "reasons", reasons);
    }
    pthread_mutex_lock(&gauge_lock);
    json_decref(gauges);
    gauges = g;
    pthread_mutex_unlock(&gauge_lock);
    json_decref(scen);
    *out = json_pack("{s:o,s:I}", "components", rows, "stale_after_seconds",
                     (json_int_t)DR_STALE_SECONDS);
    return 0;
}
