/* The RPO/RTO table of section 7.1: per protected component, the age of its last good
 * backup (taken here, or reported by the system that takes it) against its RPO, its last
 * measured restore time against its RTO, and a state ok / warning / breach. The
 * backup.status job computes it every minute, keeps the metrics, and emits an event when a
 * component enters breach; GET /api/v1/backups/status computes it on demand. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "backup/backup_internal.h"
#include "platform/buf.h"
#include "platform/metrics.h"

/* A warning before the limit is reached: at 80 % of it. */
#define BK_WARN_FRACTION 0.8
/* Components whose RPO is 0 are protected continuously (replication, erasure coding) by
 * their own systems, which must report at least this often for the table to believe it. */
#define BK_CONTINUOUS_REPORT_S 3600
/* RPO 0 through WAL streaming: what a loss now would cost is the WAL not yet received.
 * Beyond these many seconds of it the component is in warning / breach. A stream row not
 * refreshed for WAL_STALE_S has no supervisor: its lag is then counted from the last
 * moment everything was received. */
#define BK_WAL_WARN_S 5.0
#define BK_WAL_BREACH_S 30.0
#define BK_WAL_STALE_S 10.0
/* 7.4: a test restore at least monthly. */
#define BK_VERIFY_MAX_AGE_S (31 * 86400)

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

/* The gauges of the last computation on this replica: per component the Unix time of its
 * last good backup and its last measured restore time (NAN: none). */
static pthread_mutex_t gauge_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *gauges; /* {component: [last_good_unix|null, restore_s|null, wal_lag_s|null]} */

static void collect(struct buf *out, void *cls)
{
    (void)cls;
    double now = (double)time(NULL);
    pthread_mutex_lock(&gauge_lock);
    const char *k;
    json_t *v;
    metrics_family(out, "qdb_backup_last_success_age_seconds", "gauge",
                   "Seconds since the last good backup of each protected component.");
    json_object_foreach(gauges, k, v)
    {
        json_t *t = json_array_get(v, 0);
        if (!json_is_number(t))
            continue;
        buf_puts(out, "qdb_backup_last_success_age_seconds{component=\"");
        metrics_escape_label(out, k);
        buf_printf(out, "\"} %.0f\n", now - json_number_value(t));
    }
    metrics_family(out, "qdb_backup_last_verified_restore_seconds", "gauge",
                   "Measured time of the last successful test restore of each component.");
    json_object_foreach(gauges, k, v)
    {
        json_t *r = json_array_get(v, 1);
        if (!json_is_number(r))
            continue;
        buf_puts(out, "qdb_backup_last_verified_restore_seconds{component=\"");
        metrics_escape_label(out, k);
        buf_printf(out, "\"} %.3f\n", json_number_value(r));
    }
    metrics_family(out, "qdb_backup_wal_lag_seconds", "gauge",
                   "Age of the oldest WAL not yet received by the stream of each component "
                   "whose RPO is 0.");
    json_object_foreach(gauges, k, v)
    {
        json_t *l = json_array_get(v, 2);
        if (!json_is_number(l))
            continue;
        buf_puts(out, "qdb_backup_wal_lag_seconds{component=\"");
        metrics_escape_label(out, k);
        buf_printf(out, "\"} %.3f\n", json_number_value(l));
    }
    pthread_mutex_unlock(&gauge_lock);
}

/* The WAL lag of a stream row in seconds (see BK_WAL_STALE_S), NAN when unknown. */
static double wal_lag_of(const json_t *w)
{
    if (!w)
        return NAN;
    double age = json_number_value(json_object_get(w, "age_seconds"));
    const char *st = json_string_value(json_object_get(w, "state"));
    json_t *lag = json_object_get(w, "lag_seconds"), *cu = json_object_get(w, "caught_up_age_seconds");
    if (st && strcmp(st, "streaming") == 0 && age <= BK_WAL_STALE_S && json_is_number(lag))
        return json_number_value(lag) + age;
    if (json_is_number(cu))
        return json_number_value(cu);
    return NAN;
}

int bk_status_init(void)
{
    return metrics_register(collect, NULL);
}

void bk_status_free(void)
{
    pthread_mutex_lock(&gauge_lock);
    json_decref(gauges);
    gauges = NULL;
    pthread_mutex_unlock(&gauge_lock);
}

static json_t *num_or_null(PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return json_null();
    return json_real(strtod(PQgetvalue(res, row, col), NULL));
}

int bk_status_compute(struct db_conn *c, json_t **out)
{
    PGresult *res = NULL;
    int rows = bk_store_status_rows(c, &res);
    if (rows < 0)
        return rows;
    json_t *arr = json_array(), *g = json_object();
    double now = (double)time(NULL);
    for (int i = 0; i < rows; i++) {
        json_t *pol = json_loads(db_get_str(res, i, 1), 0, NULL);
        const char *method = json_string_value(json_object_get(pol, "method"));
        int external = method && strcmp(method, "external") == 0;
        double rpo = (double)json_integer_value(json_object_get(pol, "rpo_seconds"));
        double rto = (double)json_integer_value(json_object_get(pol, "rto_seconds"));
        json_t *age = num_or_null(res, i, 2), *restore = num_or_null(res, i, 3),
               *vage = num_or_null(res, i, 4);
        const char *state = "ok";
        json_t *reasons = json_array();
        char why[200];
        /* RPO: what would be lost now is what was written since the last good backup, or
         * for RPO 0 the WAL its stream has not received */
        double limit = rpo > 0 ? rpo : external ? BK_CONTINUOUS_REPORT_S : 0;
        json_t *walrow = PQgetisnull(res, i, 6) ? NULL : json_loads(db_get_str(res, i, 6), 0, NULL);
        double wlag = wal_lag_of(walrow);
        if (json_is_null(age)) {
            worsen(&state, "breach", reasons, "no good backup on record");
        } else if (limit == 0 && !walrow) {
            worsen(&state, "breach", reasons,
                   "RPO 0 needs continuous WAL streaming, which is not running for it");
        } else if (limit == 0 && isnan(wlag)) {
            worsen(&state, "breach", reasons, "RPO 0: the WAL stream's lag is not known");
        } else if (limit == 0 && wlag > BK_WAL_BREACH_S) {
            snprintf(why, sizeof why, "WAL stream %.1f s behind (%s), beyond RPO 0's %.0f s",
                     wlag, json_string_value(json_object_get(walrow, "state")), BK_WAL_BREACH_S);
            worsen(&state, "breach", reasons, why);
        } else if (limit == 0 && wlag > BK_WAL_WARN_S) {
            snprintf(why, sizeof why, "WAL stream %.1f s behind, near RPO 0's %.0f s", wlag,
                     BK_WAL_BREACH_S);
            worsen(&state, "warning", reasons, why);
        } else if (limit == 0) {
            /* streaming within bounds */
        } else if (json_real_value(age) > limit) {
            snprintf(why, sizeof why, "last good backup %.0f s ago, beyond the RPO's %.0f s",
                     json_real_value(age), limit);
            worsen(&state, "breach", reasons, why);
        } else if (json_real_value(age) > BK_WARN_FRACTION * limit) {
            snprintf(why, sizeof why, "last good backup %.0f s ago, near the RPO's %.0f s",
                     json_real_value(age), limit);
            worsen(&state, "warning", reasons, why);
        }
        /* RTO: the last measured restore */
        if (json_is_null(restore)) {
            worsen(&state, "warning", reasons, "no measured restore time");
        } else if (json_real_value(restore) > rto) {
            snprintf(why, sizeof why, "last restore took %.1f s, beyond the RTO's %.0f s",
                     json_real_value(restore), rto);
            worsen(&state, "breach", reasons, why);
        } else if (json_real_value(restore) > BK_WARN_FRACTION * rto) {
            snprintf(why, sizeof why, "last restore took %.1f s, near the RTO's %.0f s",
                     json_real_value(restore), rto);
            worsen(&state, "warning", reasons, why);
        }
        if (!json_is_null(vage) && json_real_value(vage) > BK_VERIFY_MAX_AGE_S)
            worsen(&state, "warning", reasons, "last test restore older than a month (7.4)");
        const char *component = db_get_str(res, i, 0);
        json_array_append_new(
            arr, json_pack("{s:s,s:O,s:O,s:O,s:I,s:I,s:O,s:O,s:O,s:o,s:O?,s:s,s:s?,s:o}",
                           "component",
                           component, "title", json_object_get(pol, "title"), "method",
                           json_object_get(pol, "method"), "database",
                           json_object_get(pol, "database"), "rpo_seconds", (json_int_t)rpo,
                           "rto_seconds", (json_int_t)rto, "last_success_age_seconds", age,
                           "last_restore_seconds", restore, "last_verified_age_seconds", vage,
                           "wal_lag_seconds", isnan(wlag) ? json_null() : json_real(wlag),
                           "wal_stream", walrow, "state", state, "previous_state",
                           PQgetisnull(res, i, 5) ? NULL : db_get_str(res, i, 5), "reasons",
                           reasons));
        json_object_set_new(g, component,
                            json_pack("[o,O,o]",
                                      json_is_null(age) ? json_null()
                                                        : json_real(now - json_real_value(age)),
                                      restore, isnan(wlag) ? json_null() : json_real(wlag)));
        json_decref(walrow);
        json_decref(age);
        json_decref(restore);
        json_decref(vage);
        json_decref(pol);
    }
    PQclear(res);
    pthread_mutex_lock(&gauge_lock);
    json_decref(gauges);
    gauges = g;
    pthread_mutex_unlock(&gauge_lock);
    *out = arr;
    return 0;
}

/* ---- backup.status: the table every minute, an event on entering breach ---- */

struct transition_tx {
    struct jobs_ctx *ctx;
    json_t *row;
};

static int transition_fn(struct db_conn *c, void *cls)
{
    struct transition_tx *t = cls;
    const char *component = json_string_value(json_object_get(t->row, "component"));
    const char *state = json_string_value(json_object_get(t->row, "state"));
    int rc = bk_store_status_state_set(c, component, state);
    if (rc <= 0 || strcmp(state, "breach") != 0)
        return rc;
    char subject[100];
    snprintf(subject, sizeof subject, "components/%s", component);
    struct audit_actor a = {.subject = "system", .name = "system", .auth_method = "system"};
    return audit_event_emit(
        c, &a,
        &(struct audit_event){.room = "backup", .verb = "breach", .subject = subject, .data = t->row});
}

static enum jobs_outcome status_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    (void)args;
    json_t *rows = NULL;
    if (bk_status_compute(jobs_db(ctx), &rows) != 0) {
        jobs_error(ctx, "state store: computing the RPO/RTO table");
        return JOBS_RETRY;
    }
    json_t *entered = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row)
    {
        const char *prev = json_string_value(json_object_get(row, "previous_state"));
        const char *state = json_string_value(json_object_get(row, "state"));
        if (prev && strcmp(prev, state) == 0)
            continue;
        struct transition_tx t = {ctx, row};
        if (db_tx(jobs_db(ctx), transition_fn, &t) < 0) {
            json_decref(rows);
            json_decref(entered);
            jobs_error(ctx, "state store: recording the state of %s",
                       json_string_value(json_object_get(row, "component")));
            return JOBS_RETRY;
        }
        if (strcmp(state, "breach") == 0)
            json_array_append(entered, json_object_get(row, "component"));
    }
    *result = json_pack("{s:o,s:o}", "components", rows, "entered_breach", entered);
    return JOBS_OK;
}

const struct jobs_kind bk_kind_status = {
    .kind = "backup.status",
    .max_attempts = 1,
    .timeout_seconds = 120,
    .max_running = 1,
    .direct_role = HTTP_OPERATOR,
    .run = status_run,
};
