/* The job engine's core: kind registry, settings, enqueue, the job document, metrics and the
 * module's life cycle. The threads live in their own files: the worker pool in jobs_pool.c
 * (runners' calls in jobs_runner.c), lease renewal in jobs_lease.c, the LISTEN thread in
 * jobs_listener.c, rescue and gauges in jobs_maint.c, the schedule leader in jobs_cron.c. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jobs/jobs_internal.h"
#include "platform/config.h"
#include "platform/jsonspec.h"
#include "platform/log.h"
#include "platform/metrics.h"
#include "platform/deadline.h"

struct jobs_settings jobs_cfg;

/* ---- kinds ---- */

static const struct jobs_kind *kinds[JOBS_MAX_KINDS];
static atomic_size_t nkinds;

int jobs_register_kind(const struct jobs_kind *k)
{
    size_t n = atomic_load(&nkinds);
    for (size_t i = 0; i < n; i++)
        if (strcmp(kinds[i]->kind, k->kind) == 0) {
            kinds[i] = k; /* a room registering again (e.g. tests) replaces its kind */
            return 0;
        }
    if (n >= JOBS_MAX_KINDS) {
        log_error("job kind %s: more than %d kinds; raise JOBS_MAX_KINDS", k->kind, JOBS_MAX_KINDS);
        return -1;
    }
    kinds[n] = k;
    atomic_store(&nkinds, n + 1);
    return 0;
}

size_t jobs_kind_count(void)
{
    return atomic_load(&nkinds);
}

const struct jobs_kind *jobs_kind_at(size_t i)
{
    return i < jobs_kind_count() ? kinds[i] : NULL;
}

int jobs_kind_index(const char *kind)
{
    size_t n = jobs_kind_count();
    for (size_t i = 0; i < n; i++)
        if (strcmp(kinds[i]->kind, kind) == 0)
            return (int)i;
    return -1;
}

const struct jobs_kind *jobs_find_kind(const char *kind)
{
    int i = kind ? jobs_kind_index(kind) : -1;
    return i < 0 ? NULL : kinds[i];
}

void jobs_concurrency_key(const struct jobs_kind *k, json_t *args, char *out, size_t n)
{
    out[0] = '\0';
    if (k->max_running <= 0)
        return;
    if (!k->concurrency_arg) {
        snprintf(out, n, "%s", k->kind);
        return;
    }
    json_t *v = json_object_get(args, k->concurrency_arg);
    if (json_is_string(v)) {
        snprintf(out, n, "%s:%s", k->kind, json_string_value(v));
        return;
    }
    /* a missing or non-string value is its own bucket, so the limit still holds */
    char *text = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    snprintf(out, n, "%s:%s", k->kind, text ? text : "null");
    free(text);
}

int64_t jobs_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint64_t rnd)
{
    if (attempt < 1)
        attempt = 1;
    int64_t ceiling = base_ms;
    for (int i = 1; i < attempt && ceiling < cap_ms; i++)
        ceiling *= 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    if (ceiling <= 0)
        return 0;
    return (int64_t)(rnd % (uint64_t)(ceiling + 1));
}

/* ---- enqueue ---- */

int jobs_enqueue(struct db_conn *conn, const struct jobs_new *j, int64_t *id, int *existed)
{
    return jobs_enqueue_doc(conn, j, id, existed, NULL);
}

int jobs_enqueue_doc(struct db_conn *conn, const struct jobs_new *j, int64_t *id, int *existed,
                     json_t **doc)
{
    int rc = DB_HARD;
    char *args_text = NULL;
    if (existed)
        *existed = 0;
    if (doc)
        *doc = NULL;
    const struct jobs_kind *k = jobs_find_kind(j->kind);
    if (!k) {
        log_event(LOG_ERROR, "enqueue of an unregistered job kind",
                  json_pack("{s:s}", "kind", j->kind ? j->kind : ""));
        goto out;
    }
    json_t *empty = NULL;
    json_t *args = j->args;
    if (!args)
        args = empty = json_object();
    args_text = json_dumps(args, JSON_COMPACT | JSON_SORT_KEYS);
    char key[512];
    jobs_concurrency_key(k, args, key, sizeof key);
    json_decref(empty);
    if (!args_text)
        goto out;
    const char *queue = j->queue ? j->queue : (k->queue ? k->queue : "default");
    struct jobs_insert ins = {
        .kind = k->kind,
        .queue = queue,
        .args_json = args_text,
        .run_at = j->run_at,
        .idempotency_key = j->idempotency_key,
        .created_by = j->created_by ? j->created_by : "system",
        .concurrency_key = key[0] ? key : NULL,
        .priority = j->priority,
        .max_attempts =
            j->max_attempts > 0 ? j->max_attempts : (k->max_attempts > 0 ? k->max_attempts : 1),
        .timeout_seconds = k->timeout_seconds > 0 ? k->timeout_seconds : 3600,
        .max_running = k->max_running > 0 ? k->max_running : 0,
    };
    rc = jobs_store_insert(conn, &ins, id, doc);
    if (rc > 0) {
        rc = jobs_notify_new(conn, *id); /* after the commit: jobs_notify.c says why */
        goto out;
    }
    if (rc < 0)
        goto out;
    /* The key is taken: by a committed job (or one whose transaction committed while we
     * waited on the unique index). Same request: that job; different: a conflict. */
    int same = 0;
    rc = jobs_store_idempotent_match(conn, j->idempotency_key ? j->idempotency_key : "", k->kind,
                                     args_text, queue, ins.created_by, id, &same);
    if (rc < 0)
        goto out;
    if (rc == 0) {
        rc = DB_RETRY; /* the holder vanished between the two statements: try again */
        goto out;
    }
    if (!same) {
        rc = JOBS_E_IDEMPOTENCY;
        goto out;
    }
    if (existed)
        *existed = 1;
    rc = 0;
out:
    free(args_text);
    return rc;
}

json_t *jobs_get_json(struct db_conn *conn, int64_t id)
{
    json_t *doc = NULL;
    (void)jobs_store_get_json(conn, id, &doc); /* NULL on error or none */
    return doc;
}

void jobs_reply_accepted(struct http_request *req, struct db_conn *conn, int64_t id)
{
    jobs_reply_accepted_take(req, conn, id, NULL);
}

void jobs_reply_accepted_take(struct http_request *req, struct db_conn *conn, int64_t id,
                              json_t *doc)
{
    if (!doc)
        doc = jobs_get_json(conn, id);
    if (!doc) {
        http_reply_problem(req, QDB_E_INTERNAL, "job %lld was enqueued but cannot be read",
                           (long long)id);
        return;
    }
    char loc[64];
    snprintf(loc, sizeof loc, "/api/v1/jobs/%lld", (long long)id);
    http_reply_header(req, "Location", loc);
    http_reply_json(req, 202, doc);
}

/* ---- the engine's threads ---- */

int jobs_thread_start(struct jobs_thread *t, void *(*fn)(void *), void *arg)
{
    atomic_store(&t->stop, 0);
    if (pthread_create(&t->thread, NULL, fn, arg) != 0)
        return -1;
    t->started = 1;
    return 0;
}

void jobs_thread_stop(struct jobs_thread *t)
{
    if (!t->started)
        return;
    atomic_store(&t->stop, 1);
    pthread_mutex_lock(&t->mu);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
    t->started = 0;
}

int jobs_thread_stopping(struct jobs_thread *t)
{
    return atomic_load(&t->stop);
}

int jobs_thread_wait(struct jobs_thread *t, double secs)
{
    struct timespec ts = deadline_after(CLOCK_REALTIME, secs);
    pthread_mutex_lock(&t->mu);
    if (!atomic_load(&t->stop))
        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    pthread_mutex_unlock(&t->mu);
    return atomic_load(&t->stop);
}

struct db_conn *jobs_thread_db(struct db_conn **c, const struct db_settings *dbs, double *last_try)
{
    double now = jobs_mono();
    if (*c) {
        if (db_conn_check(*c) == 0) /* reconnects a broken one, once */
            return *c;
        db_conn_close(*c);
        *c = NULL;
        *last_try = now;
        return NULL;
    }
    if (now - *last_try < 1.0)
        return NULL;
    *last_try = now;
    *c = db_conn_open(dbs);
    return *c;
}

/* ---- metrics ---- */

static const double run_bounds[] = {0.001, 0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 3600};
#define NRB (sizeof run_bounds / sizeof run_bounds[0])
static const char *const finished_states[] = {"succeeded", "failed", "cancelled", "retrying"};
#define NFS 4

struct kind_metrics {
    atomic_uint_fast64_t finished[NFS];
    atomic_uint_fast64_t retries;
    struct metrics_histogram run; /* qdb_job_run_seconds */
};
static struct kind_metrics per_kind[JOBS_MAX_KINDS];
static atomic_uint_fast64_t rescued_total, schedule_fires_total;

void jobs_metrics_finished(const char *kind, const char *state, double secs)
{
    int k = jobs_kind_index(kind);
    if (k < 0)
        return;
    for (int i = 0; i < NFS; i++)
        if (strcmp(state, finished_states[i]) == 0)
            atomic_fetch_add(&per_kind[k].finished[i], 1);
    metrics_histogram_observe(&per_kind[k].run, run_bounds, NRB, secs);
}

void jobs_metrics_retry(const char *kind)
{
    int k = jobs_kind_index(kind);
    if (k >= 0)
        atomic_fetch_add(&per_kind[k].retries, 1);
}

void jobs_metrics_rescued(long n)
{
    atomic_fetch_add(&rescued_total, (uint64_t)n);
}

void jobs_metrics_schedule_fired(void)
{
    atomic_fetch_add(&schedule_fires_total, 1);
}

/* Gauges from the state store, refreshed by the maintenance thread (a scrape must not
 * query the database). */
static pthread_mutex_t gauge_lock = PTHREAD_MUTEX_INITIALIZER;
static char *gauge_text;

void jobs_metrics_set_gauges(char *text)
{
    pthread_mutex_lock(&gauge_lock);
    free(gauge_text);
    gauge_text = text;
    pthread_mutex_unlock(&gauge_lock);
}

static void collect(struct buf *out, void *cls)
{
    (void)cls;
    size_t n = jobs_kind_count();
    buf_puts(out, "# HELP qdb_jobs_finished_total Job attempts finished by this replica, by kind "
                  "and resulting state.\n# TYPE qdb_jobs_finished_total counter\n");
    for (size_t k = 0; k < n; k++)
        for (int s = 0; s < NFS; s++) {
            buf_puts(out, "qdb_jobs_finished_total{kind=\"");
            metrics_escape_label(out, kinds[k]->kind);
            buf_printf(out, "\",state=\"%s\"} %llu\n", finished_states[s],
                       (unsigned long long)atomic_load(&per_kind[k].finished[s]));
        }
    buf_puts(out, "# HELP qdb_jobs_retries_total Failed attempts scheduled for a retry.\n"
                  "# TYPE qdb_jobs_retries_total counter\n");
    for (size_t k = 0; k < n; k++) {
        buf_puts(out, "qdb_jobs_retries_total{kind=\"");
        metrics_escape_label(out, kinds[k]->kind);
        buf_printf(out, "\"} %llu\n", (unsigned long long)atomic_load(&per_kind[k].retries));
    }
    metrics_family(out, "qdb_job_run_seconds", "histogram",
                   "Run time of job attempts on this replica.");
    struct buf labels;
    buf_init(&labels, 0);
    for (size_t k = 0; k < n; k++) {
        labels.len = 0;
        buf_puts(&labels, "kind=\"");
        metrics_escape_label(&labels, kinds[k]->kind);
        buf_puts(&labels, "\"");
        if (labels.data) /* NULL only when memory ran out */
            metrics_histogram_render(out, "qdb_job_run_seconds", labels.data, &per_kind[k].run,
                                     run_bounds, NRB);
    }
    buf_free(&labels);
    buf_printf(out,
               "# HELP qdb_jobs_rescued_total Jobs whose lease expired, rescued by this "
               "replica.\n# TYPE qdb_jobs_rescued_total counter\nqdb_jobs_rescued_total %llu\n"
               "# HELP qdb_job_schedule_fires_total Schedule fires by this replica.\n"
               "# TYPE qdb_job_schedule_fires_total counter\n"
               "qdb_job_schedule_fires_total %llu\n",
               (unsigned long long)atomic_load(&rescued_total),
               (unsigned long long)atomic_load(&schedule_fires_total));
    pthread_mutex_lock(&gauge_lock);
    if (gauge_text)
        buf_puts(out, gauge_text);
    pthread_mutex_unlock(&gauge_lock);
}

int jobs_metrics_register(void)
{
    return metrics_register(collect, NULL);
}

/* ---- module ---- */

static int load_config(void)
{
    long v;
    if (config_int("QDB_JOB_LEASE_SECONDS", 30, 2, 3600, &v) != 0)
        return -1;
    jobs_cfg.lease_s = v;
    if (config_int("QDB_JOB_RETENTION_DAYS", 30, 1, 3650, &v) != 0)
        return -1;
    jobs_cfg.retention_days = v;
    if (config_int("QDB_JOB_BATCH", 100, 1, 1000, &v) != 0)
        return -1;
    jobs_cfg.batch = v;
    /* 1 by default: this service's jobs are mostly long (backups, provisioning), and a job
     * claimed behind a long one on a busy replica would wait while another replica idles */
    if (config_int("QDB_JOB_PREFETCH", 1, 1, 100, &v) != 0)
        return -1;
    jobs_cfg.prefetch = v;
    if (config_int("QDB_JOB_BACKOFF_BASE_MS", 1000, 1, 3600000, &v) != 0)
        return -1;
    jobs_cfg.backoff_base_ms = v;
    if (config_seconds("QDB_JOB_BACKOFF_MAX", 3600, 1, 86400, &v) != 0)
        return -1;
    jobs_cfg.backoff_max_s = v;
    if (config_int("QDB_JOB_SCHEDULE_TICK_MS", 1000, 50, 60000, &v) != 0)
        return -1;
    jobs_cfg.schedule_tick_ms = v;
    if (config_seconds("QDB_JOB_PRUNE_INTERVAL", 60, 1, 86400, &v) != 0)
        return -1;
    jobs_cfg.prune_interval_s = v;
    if (config_int("QDB_WORKERS", 4, 0, 256, &v) != 0)
        return -1;
    jobs_cfg.workers = (int)v;
    return 0;
}

/* Phase 1: the engine's own kinds and metrics; other rooms register theirs in their init. */
static int init(struct qdb_app *app)
{
    (void)app;
    if (jobs_kinds_register_builtin() != 0)
        return -1;
    return jobs_metrics_register();
}

/* Phase 2: every room's kinds and default schedules are registered by now. */
static int start(struct qdb_app *app)
{
    struct db_settings dbs = {app->cfg->database_url, app->cfg->db_statement_timeout_ms,
                              app->cfg->db_connect_timeout_s, "qdb-control-jobs"};
    struct db_conn *c = db_acquire(app->pool, app->cfg->db_connect_timeout_s * 1000);
    int rc = c ? jobs_schedules_apply_defaults(c) : DB_RETRY;
    if (c)
        db_release(app->pool, c);
    if (rc != 0) {
        log_error("jobs: the default schedules could not be created (state store %s)",
                  rc == DB_RETRY ? "unreachable" : "error");
        return -1;
    }
    if (jobs_events_init() != 0)
        return -1;
    /* Each thread has its own connection (libpq's rule, and so that none waits behind
     * another's work). The lease keeper first (runners trust its clock), the pool before
     * the threads that wake it. A failure here leaves the started ones to stop(), which
     * main.c calls for every module whose init ran. */
    if (jobs_lease_start(app->instance_id, &dbs) != 0 ||
        jobs_pool_start(app->instance_id, &dbs, jobs_cfg.workers, app->cfg->shutdown_timeout_s) !=
            0 ||
        jobs_maint_start(&dbs) != 0 || jobs_listener_start(&dbs) != 0 ||
        jobs_notify_start(&dbs) != 0 || jobs_leader_start(app->instance_id, &dbs) != 0) {
        log_error("jobs: cannot start the engine's threads");
        return -1;
    }
    log_event(LOG_INFO, "job engine started",
              json_pack("{s:i,s:i,s:i}", "workers", jobs_cfg.workers, "lease_s",
                        (int)jobs_cfg.lease_s, "kinds", (int)jobs_kind_count()));
    return 0;
}

/* Leases are renewed and events relayed until the last runner has stopped; no rescue while
 * this replica gives its jobs back. */
static void quiesce(void)
{
    jobs_pool_quiesce();
}

static void stop(void)
{
    jobs_leader_stop();
    jobs_maint_stop_rescue();
    jobs_pool_stop();
    jobs_notify_stop();
    jobs_listener_stop();
    jobs_maint_stop();
    jobs_lease_stop();
    jobs_events_free();
    jobs_metrics_set_gauges(NULL);
}

const struct qdb_module jobs_module = {
    .name = "jobs",
    .config_load = load_config,
    .init = init,
    .start = start,
    .quiesce = quiesce,
    .stop = stop,
};
