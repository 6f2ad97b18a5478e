/* Evaluation counts. The hot path bumps a relaxed atomic per variant inside the snapshot
 * (flags_evaluate); every second the listener thread harvests them (exchange to 0) into
 * the process totals here, and when a snapshot is freed its remainder is harvested too, so
 * a swap loses no count. The totals are exported as qdb_flag_evaluations_total; what was
 * harvested since the last flush is added to flag_eval_count every
 * QDB_FLAGS_COUNTS_FLUSH_INTERVAL seconds (the stale list reads last_evaluated_at). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flags/flags_internal.h"
#include "flags/flags_store.h"
#include "platform/metrics.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
/* "env\tflag\tvariant" -> [total, unflushed] */
static json_t *totals;

static void add(const char *env, const char *flag, const char *variant, uint64_t n)
{
    char key[400];
    snprintf(key, sizeof key, "%s\t%s\t%s", env, flag, variant);
    if (!totals)
        totals = json_object();
    json_t *e = json_object_get(totals, key);
    if (!e) {
        e = json_pack("[I,I]", (json_int_t)0, (json_int_t)0);
        if (json_object_set_new(totals, key, e) != 0)
            return;
    }
    json_array_set_new(e, 0, json_integer(json_integer_value(json_array_get(e, 0)) + (json_int_t)n));
    json_array_set_new(e, 1, json_integer(json_integer_value(json_array_get(e, 1)) + (json_int_t)n));
}

static void harvest(const struct flags_env *cenv)
{
    struct flags_env *env = (struct flags_env *)cenv; /* counters only */
    flags_bulk_cache_count(env);
    for (size_t i = 0; i < env->nflags; i++) {
        struct flags_flag *f = &env->flags[i];
        for (int v = 0; v < f->nvariants; v++) {
            uint64_t n = atomic_exchange_explicit(&f->counts[v], 0, memory_order_relaxed);
            if (n)
                add(env->name, f->key, f->variants[v].name, n);
        }
    }
}

void flags_counts_harvest_env(const struct flags_env *env)
{
    if (env) {
        pthread_mutex_lock(&mu);
        harvest(env);
        pthread_mutex_unlock(&mu);
        return;
    }
    const char *names[32];
    char copy[32][40];
    size_t n = flags_snapshot_env_names(names, 32);
    for (size_t i = 0; i < n; i++)
        snprintf(copy[i], sizeof copy[i], "%s", names[i]);
    for (size_t i = 0; i < n; i++) {
        struct flags_env *e = flags_snapshot_acquire(copy[i]);
        if (!e)
            continue;
        pthread_mutex_lock(&mu);
        harvest(e);
        pthread_mutex_unlock(&mu);
        flags_env_release(e);
    }
}

int flags_counts_flush(struct db_conn *conn)
{
    flags_counts_harvest_env(NULL);
    json_t *rows = json_array();
    pthread_mutex_lock(&mu);
    const char *key;
    json_t *e;
    json_object_foreach(totals, key, e)
    {
        json_int_t n = json_integer_value(json_array_get(e, 1));
        if (!n)
            continue;
        char k[400];
        snprintf(k, sizeof k, "%s", key);
        char *t1 = strchr(k, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        if (!t2)
            continue;
        *t1 = *t2 = '\0';
        json_array_append_new(rows, json_pack("{s:s,s:s,s:s,s:I}", "environment", k, "flag",
                                              t1 + 1, "variant", t2 + 1, "count", n));
        json_array_set_new(e, 1, json_integer(0));
    }
    pthread_mutex_unlock(&mu);
    int rc = json_array_size(rows) ? flags_store_counts_add(conn, rows) : 0;
    if (rc < 0) { /* put them back for the next round */
        pthread_mutex_lock(&mu);
        size_t i;
        json_t *r;
        json_array_foreach(rows, i, r)
        {
            char k2[400];
            snprintf(k2, sizeof k2, "%s\t%s\t%s",
                     json_string_value(json_object_get(r, "environment")),
                     json_string_value(json_object_get(r, "flag")),
                     json_string_value(json_object_get(r, "variant")));
            json_t *x = json_object_get(totals, k2);
            if (x)
                json_array_set_new(x, 1,
                                   json_integer(json_integer_value(json_array_get(x, 1)) +
                                                json_integer_value(json_object_get(r, "count"))));
        }
        pthread_mutex_unlock(&mu);
    }
    json_decref(rows);
    return rc < 0 ? rc : 0;
}

void flags_counts_metrics(struct buf *out)
{
    metrics_family(out, "qdb_flag_evaluations_total", "counter",
                   "Flag evaluations on this replica, by environment, flag and variant "
                   "(harvested every second).");
    pthread_mutex_lock(&mu);
    const char *key;
    json_t *e;
    json_object_foreach(totals, key, e)
    {
        char k[400];
        snprintf(k, sizeof k, "%s", key);
        char *t1 = strchr(k, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        if (!t2)
            continue;
        *t1 = *t2 = '\0';
        buf_puts(out, "qdb_flag_evaluations_total{environment=\"");
        metrics_escape_label(out, k);
        buf_puts(out, "\",flag=\"");
        metrics_escape_label(out, t1 + 1);
        buf_puts(out, "\",variant=\"");
        metrics_escape_label(out, t2 + 1);
        buf_printf(out, "\"} %lld\n", (long long)json_integer_value(json_array_get(e, 0)));
    }
    pthread_mutex_unlock(&mu);
}

void flags_counts_free(void)
{
    pthread_mutex_lock(&mu);
    json_decref(totals);
    totals = NULL;
    pthread_mutex_unlock(&mu);
}
