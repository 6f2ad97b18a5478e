/* The inventory's job kinds: provisioning (a database, a topic, a connector: each
 * idempotent, each step in the job log, the result saying "changed" or "no change", an
 * audit record and an event at the end), the scheduled drift check (qdb_inventory_drift,
 * an event when drift appears) and the scheduled lag check (qdb_kafka_consumer_lag). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "inventory/inventory_internal.h"
#include "platform/environment.h"
#include "platform/jsonspec.h"
#include "platform/metrics.h"

struct audit_actor inv_job_actor(struct jobs_ctx *ctx)
{
    struct audit_actor a = {
        .subject = jobs_created_by(ctx), .name = jobs_created_by(ctx), .auth_method = "system"};
    return a;
}

/* ---- gauges: the last value each check measured on this replica ---- */

static pthread_mutex_t gauge_lock = PTHREAD_MUTEX_INITIALIZER;
static json_t *drift_gauge; /* {env: differences} */
static json_t *lag_gauge;   /* {env: {group: lag}} */

static void gauge_set(json_t **g, const char *env, const char *group, json_int_t v)
{
    pthread_mutex_lock(&gauge_lock);
    if (!*g)
        *g = json_object();
    if (group) {
        json_t *e = json_object_get(*g, env);
        if (!e)
            json_object_set_new(*g, env, e = json_object());
        json_object_set_new(e, group, json_integer(v));
    } else {
        json_object_set_new(*g, env, json_integer(v));
    }
    pthread_mutex_unlock(&gauge_lock);
}

static void collect(struct buf *out, void *cls)
{
    (void)cls;
    pthread_mutex_lock(&gauge_lock);
    metrics_family(out, "qdb_inventory_drift", "gauge",
                   "Differences between the inventory and its targets at the last drift check.");
    const char *env, *group;
    json_t *v, *g;
    json_object_foreach(drift_gauge, env, v)
    {
        buf_puts(out, "qdb_inventory_drift{environment=\"");
        metrics_escape_label(out, env);
        buf_printf(out, "\"} %lld\n", (long long)json_integer_value(v));
    }
    metrics_family(out, "qdb_kafka_consumer_lag", "gauge",
                   "Messages a consumer group is behind the end of its topics, at the last lag "
                   "check.");
    json_object_foreach(lag_gauge, env, g)
    {
        json_object_foreach(g, group, v)
        {
            buf_puts(out, "qdb_kafka_consumer_lag{environment=\"");
            metrics_escape_label(out, env);
            buf_puts(out, "\",group=\"");
            metrics_escape_label(out, group);
            buf_printf(out, "\"} %lld\n", (long long)json_integer_value(v));
        }
    }
    pthread_mutex_unlock(&gauge_lock);
}

/* Every replica's figures come from the state store (whichever replica ran the checks),
 * read every few seconds on a thread of their own. It borrows a pooled connection for the
 * one query instead of holding one: the replica's connection count stays what the pool and
 * the job engine make it (the outage test counts them). */
static struct {
    pthread_t thread;
    pthread_cond_t cond;
    int running, stopping;
    struct db_pool *pool;
} refresher = {.cond = PTHREAD_COND_INITIALIZER};

static void *refresh_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&gauge_lock);
    while (!refresher.stopping) {
        pthread_mutex_unlock(&gauge_lock);
        json_t *g = NULL;
        struct db_conn *c = db_acquire(refresher.pool, 1000);
        if (c && inv_store_gauges(c, &g) > 0) {
            pthread_mutex_lock(&gauge_lock);
            json_decref(drift_gauge);
            json_decref(lag_gauge);
            drift_gauge = json_incref(json_object_get(g, "drift"));
            lag_gauge = json_incref(json_object_get(g, "lag"));
            pthread_mutex_unlock(&gauge_lock);
        }
        if (c)
            db_release(refresher.pool, c);
        json_decref(g);
        pthread_mutex_lock(&gauge_lock);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 5;
        while (!refresher.stopping &&
               pthread_cond_timedwait(&refresher.cond, &gauge_lock, &until) == 0)
            ;
    }
    pthread_mutex_unlock(&gauge_lock);
    return NULL;
}

int inv_gauges_start(struct db_pool *pool)
{
    refresher.pool = pool;
    refresher.stopping = 0;
    if (!pool || pthread_create(&refresher.thread, NULL, refresh_main, NULL) != 0)
        return -1;
    refresher.running = 1;
    return 0;
}

void inv_gauges_stop(void)
{
    if (!refresher.running)
        return;
    pthread_mutex_lock(&gauge_lock);
    refresher.stopping = 1;
    pthread_cond_broadcast(&refresher.cond);
    pthread_mutex_unlock(&gauge_lock);
    pthread_join(refresher.thread, NULL);
    refresher.running = 0;
}

/* ---- the end of a provisioning run: log, audit, event ---- */

struct finish_tx {
    struct jobs_ctx *ctx;
    const char *action, *resource_type, *resource_id, *environment, *verb;
    char subject[300];
    json_t *result;
};

static int finish_fn(struct db_conn *c, void *cls)
{
    struct finish_tx *t = cls;
    struct audit_actor actor = inv_job_actor(t->ctx);
    struct audit_entry e = {.action = t->action,
                            .resource_type = t->resource_type,
                            .resource_id = t->resource_id,
                            .environment = t->environment,
                            .after = t->result,
                            .job_id = jobs_id(t->ctx)};
    int rc = audit_record(c, &actor, NULL, NULL, &e);
    if (rc >= 0)
        rc = audit_event_emit(
            c, &actor,
            &(struct audit_event){
                .room = "inventory", .verb = t->verb, .subject = t->subject, .data = t->result});
    return rc;
}

/* Log the steps, build the result, record it. rc: 0 done, -1 retry, -2 permanent. */
static enum jobs_outcome finish(struct jobs_ctx *ctx, struct finish_tx *t, int rc, int changed,
                                json_t *steps, json_t *warnings, const char *err, json_t **result)
{
    size_t i;
    json_t *s;
    json_array_foreach(steps, i, s)
    {
        jobs_log(ctx, "info", "%s", json_string_value(s));
    }
    json_array_foreach(warnings, i, s)
    {
        jobs_log(ctx, "warn", "%s", json_string_value(s));
    }
    if (rc != 0) {
        jobs_error(ctx, "%s", err);
        jobs_log(ctx, "error", "%s", err);
        return rc == -2 ? JOBS_FAIL : JOBS_RETRY;
    }
    t->result = json_pack("{s:s,s:b,s:O}", "result", changed ? "changed" : "no change", "changed",
                          changed, "steps", steps);
    json_object_set_new(t->result, "warnings", warnings ? json_incref(warnings) : json_array());
    json_object_set_new(t->result, "environment", json_string(t->environment));
    t->ctx = ctx;
    jobs_log(ctx, "info", "%s",
             changed ? "changed"
                     : "no change: the target was as the "
                       "inventory says");
    int tx = db_tx(jobs_db(ctx), finish_fn, t);
    if (tx < 0) {
        json_decref(t->result);
        jobs_error(ctx, "recording the result failed (state store)");
        return JOBS_RETRY;
    }
    *result = t->result;
    return JOBS_OK;
}

/* ---- provision_database {database_id} ---- */

static int db_validate(json_t *args, char *err, size_t errlen)
{
    int64_t id = 0;
    const struct jspec_field f[] = {{"database_id", JSPEC_INT, 1, 1, INT64_MAX, NULL, &id, NULL},
                                    JSPEC_END};
    return jspec_parse(NULL, args, f, err, errlen);
}

static enum jobs_outcome db_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    int64_t id = json_integer_value(json_object_get(args, "database_id"));
    struct db_conn *c = jobs_db(ctx);
    json_t *doc = NULL, *targets = NULL;
    int64_t cap;
    int rc = inv_store_db_get(c, id, &doc);
    if (rc == 0) {
        jobs_error(ctx, "database %lld is not in the inventory", (long long)id);
        return JOBS_FAIL;
    }
    const char *env = json_string_value(json_object_get(doc, "environment"));
    if (rc > 0)
        rc = inv_env_targets(c, env, &targets, &cap);
    if (rc <= 0) {
        json_decref(doc);
        jobs_error(ctx, "state store error reading the inventory");
        return JOBS_RETRY;
    }
    struct inventory_pg_endpoint ep;
    char err[1024] = "";
    int changed = 0;
    json_t *steps = json_array(), *warnings = json_array();
    if (inv_endpoint_from(json_object_get(doc, "primary"), json_object_get(targets, "postgres"),
                          &ep) != 0) {
        snprintf(err, sizeof err,
                 "no postgres target: set the environment's targets.postgres or "
                 "the database's primary.host");
        rc = -2;
    } else {
        jobs_log(ctx, "info", "provisioning database %s on %s:%d as %s",
                 json_string_value(json_object_get(doc, "name")), ep.host, ep.port, ep.admin_user);
        rc = inv_pg_provision(&ep, doc, steps, &changed, warnings, err, sizeof err);
    }
    char rid[24];
    struct finish_tx t = {.action = "database.provision",
                          .resource_type = "database",
                          .resource_id = db_int64(rid, id),
                          .environment = env,
                          .verb = "database_provisioned"};
    snprintf(t.subject, sizeof t.subject, "databases/%lld", (long long)id);
    enum jobs_outcome o = finish(ctx, &t, rc, changed, steps, warnings, err, result);
    if (o == JOBS_OK)
        json_object_set(*result, "database", json_object_get(doc, "name"));
    json_decref(steps);
    json_decref(warnings);
    json_decref(doc);
    json_decref(targets);
    return o;
}

const struct jobs_kind inv_kind_provision_database = {
    .kind = "inventory.provision_database",
    .max_attempts = 5,
    .timeout_seconds = 900,
    .max_running = 1,
    .concurrency_arg = "database_id", /* one run per database at a time */
    .direct_role = HTTP_OPERATOR,
    .validate = db_validate,
    .run = db_run,
};

/* ---- provision_topic {topic, environment} and provision_connector {connector, environment} ----
 */

static int named_validate(const char *member, json_t *args, char *err, size_t errlen)
{
    const char *name = NULL, *env = NULL;
    const struct jspec_field f[] = {{member, JSPEC_STRING, 1, 1, 249, NULL, &name, NULL},
                                    {"environment", JSPEC_STRING, 1, 1, 32, NULL, &env, NULL},
                                    JSPEC_END};
    if (jspec_parse(NULL, args, f, err, errlen) != 0)
        return -1;
    if (!inv_name_is_kafka(name)) {
        snprintf(err, errlen, "%s is not a valid name", member);
        return -1;
    }
    return 0;
}
static int topic_validate(json_t *args, char *err, size_t errlen)
{
    return named_validate("topic", args, err, errlen);
}
static int conn_validate(json_t *args, char *err, size_t errlen)
{
    return named_validate("connector", args, err, errlen);
}

/* The document and the environment's targets of a named job; JOBS_OK when found. */
static enum jobs_outcome load(struct jobs_ctx *ctx, const char *kind, const char *name,
                              const char *env, json_t **doc, json_t **targets, int64_t *cap)
{
    struct db_conn *c = jobs_db(ctx);
    int rc = inv_store_get(c, kind, name, doc);
    if (rc == 0) {
        jobs_error(ctx, "%s %s is not in the inventory", kind, name);
        return JOBS_FAIL;
    }
    if (rc > 0)
        rc = inv_env_targets(c, env, targets, cap);
    if (rc == 0) {
        jobs_error(ctx, "no environment %s", env);
        return JOBS_FAIL;
    }
    if (rc < 0) {
        jobs_error(ctx, "state store error reading the inventory");
        return JOBS_RETRY;
    }
    return JOBS_OK;
}

static enum jobs_outcome topic_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    const char *name = json_string_value(json_object_get(args, "topic"));
    const char *env = json_string_value(json_object_get(args, "environment"));
    json_t *doc = NULL, *targets = NULL;
    int64_t cap = 0;
    enum jobs_outcome o = load(ctx, "topic", name, env, &doc, &targets, &cap);
    if (o != JOBS_OK)
        goto out;
    char err[1024] = "";
    int changed = 0, rc;
    json_t *steps = json_array();
    json_t *kafka = json_object_get(targets, "kafka");
    if (!kafka) {
        snprintf(err, sizeof err, "environment %s has no kafka target", env);
        rc = -2;
    } else {
        jobs_log(ctx, "info", "provisioning topic %s on %s", name,
                 json_string_value(json_object_get(kafka, "bootstrap_servers")));
        rc = inv_kafka_provision(kafka, doc, env, cap, steps, &changed, err, sizeof err);
    }
    struct finish_tx t = {.action = "kafka_topic.provision",
                          .resource_type = "kafka_topic",
                          .resource_id = name,
                          .environment = env,
                          .verb = "topic_provisioned"};
    snprintf(t.subject, sizeof t.subject, "topics/%s", name);
    o = finish(ctx, &t, rc, changed, steps, NULL, err, result);
    json_decref(steps);
out:
    json_decref(doc);
    json_decref(targets);
    return o;
}

static enum jobs_outcome conn_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    const char *name = json_string_value(json_object_get(args, "connector"));
    const char *env = json_string_value(json_object_get(args, "environment"));
    json_t *doc = NULL, *targets = NULL;
    int64_t cap = 0;
    enum jobs_outcome o = load(ctx, "connector", name, env, &doc, &targets, &cap);
    if (o != JOBS_OK)
        goto out;
    char err[1024] = "";
    int changed = 0, rc;
    json_t *steps = json_array();
    const char *url =
        json_string_value(json_object_get(json_object_get(targets, "kafka_connect"), "url"));
    if (!url) {
        snprintf(err, sizeof err, "environment %s has no kafka_connect target", env);
        rc = -2;
    } else {
        jobs_log(ctx, "info", "provisioning connector %s on %s", name, url);
        rc = inv_connect_provision(url, doc, inv_target_timeout_ms() / 1000 * 6, steps, &changed,
                                   err, sizeof err);
    }
    struct finish_tx t = {.action = "kafka_connector.provision",
                          .resource_type = "kafka_connector",
                          .resource_id = name,
                          .environment = env,
                          .verb = "connector_provisioned"};
    snprintf(t.subject, sizeof t.subject, "connectors/%s", name);
    o = finish(ctx, &t, rc, changed, steps, NULL, err, result);
    json_decref(steps);
out:
    json_decref(doc);
    json_decref(targets);
    return o;
}

const struct jobs_kind inv_kind_provision_topic = {
    .kind = "inventory.provision_topic",
    .max_attempts = 5,
    .timeout_seconds = 600,
    .direct_role = HTTP_OPERATOR,
    .validate = topic_validate,
    .run = topic_run,
};
const struct jobs_kind inv_kind_provision_connector = {
    .kind = "inventory.provision_connector",
    .max_attempts = 5,
    .timeout_seconds = 600,
    .direct_role = HTTP_OPERATOR,
    .validate = conn_validate,
    .run = conn_run,
};

/* ---- drift check {environment?} and lag check {} ---- */

static int env_validate(json_t *args, char *err, size_t errlen)
{
    const char *env = NULL;
    const struct jspec_field f[] = {{"environment", JSPEC_STRING, 0, 1, 32, NULL, &env, NULL},
                                    JSPEC_END};
    return jspec_parse(NULL, args, f, err, errlen);
}

/* The environments a check looks at: the one named, else each with a target. */
static json_t *check_envs(struct db_conn *c, json_t *args, int need_kafka)
{
    json_t *names = NULL, *out = json_array();
    const char *only = json_string_value(json_object_get(args, "environment"));
    if (inv_store_env_names(c, &names) <= 0) {
        json_decref(out);
        return NULL;
    }
    size_t i;
    json_t *n;
    json_array_foreach(names, i, n)
    {
        const char *env = json_string_value(n);
        json_t *targets = NULL;
        int64_t cap;
        if (only && strcmp(only, env) != 0)
            continue;
        if (inv_env_targets(c, env, &targets, &cap) > 0 &&
            (need_kafka ? json_object_get(targets, "kafka") != NULL
                        : json_object_size(targets) > 0))
            json_array_append(out, n);
        json_decref(targets);
    }
    json_decref(names);
    return out;
}

struct drift_tx {
    const char *env;
    json_t *plan;
    int64_t now, previous;
    struct jobs_ctx *ctx;
};

static int drift_fn(struct db_conn *c, void *cls)
{
    struct drift_tx *t = cls;
    int rc = inv_store_drift_swap(c, t->env, t->now, &t->previous);
    if (rc < 0 || t->now == 0 || t->previous > 0)
        return rc;
    /* drift appeared: one event, with the plan */
    char subject[80];
    snprintf(subject, sizeof subject, "environments/%s", t->env);
    struct audit_actor actor = inv_job_actor(t->ctx);
    return audit_event_emit(
        c, &actor,
        &(struct audit_event){
            .room = "inventory", .verb = "drift_detected", .subject = subject, .data = t->plan});
}

static enum jobs_outcome drift_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    struct db_conn *c = jobs_db(ctx);
    json_t *envs = check_envs(c, args, 0);
    if (!envs) {
        jobs_error(ctx, "state store error reading the environments");
        return JOBS_RETRY;
    }
    *result = json_object();
    size_t i;
    json_t *n;
    json_array_foreach(envs, i, n)
    {
        struct drift_tx t = {.env = json_string_value(n), .ctx = ctx};
        int rc = inv_plan_build(c, t.env, &t.plan);
        if (rc >= 0) {
            t.now = (int64_t)json_array_size(json_object_get(t.plan, "differences"));
            rc = db_tx(c, drift_fn, &t);
        }
        if (rc < 0) {
            json_decref(t.plan);
            json_decref(envs);
            jobs_error(ctx, "state store error during the drift check of %s", t.env);
            return JOBS_RETRY;
        }
        gauge_set(&drift_gauge, t.env, NULL, t.now);
        jobs_log(ctx, t.now ? "warn" : "info", "%s: %lld difference(s), %zu warning(s)", t.env,
                 (long long)t.now, json_array_size(json_object_get(t.plan, "warnings")));
        json_object_set_new(*result, t.env, json_integer(t.now));
        json_decref(t.plan);
        jobs_heartbeat(ctx);
    }
    json_decref(envs);
    return JOBS_OK;
}

static enum jobs_outcome lag_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    struct db_conn *c = jobs_db(ctx);
    json_t *envs = check_envs(c, args, 1), *groups = NULL;
    if (!envs || inv_store_list(c, "group", &groups) <= 0) {
        json_decref(envs);
        jobs_error(ctx, "state store error reading the inventory");
        return JOBS_RETRY;
    }
    *result = json_object();
    size_t i, k;
    json_t *n, *g;
    json_array_foreach(envs, i, n)
    {
        const char *env = json_string_value(n);
        json_t *targets = NULL;
        int64_t cap;
        if (inv_env_targets(c, env, &targets, &cap) <= 0)
            continue;
        json_t *per = json_object();
        json_array_foreach(groups, k, g)
        {
            const char *name = json_string_value(json_object_get(g, "name"));
            json_t *lag = NULL;
            char err[512];
            if (inv_kafka_lag(json_object_get(targets, "kafka"), g, inv_target_timeout_ms(), &lag,
                              err, sizeof err) != 0) {
                jobs_log(ctx, "warn", "%s/%s: %s", env, name, err);
                continue;
            }
            json_int_t total = json_integer_value(json_object_get(lag, "total"));
            gauge_set(&lag_gauge, env, name, total);
            if (inv_store_lag_put(c, env, name, total) < 0)
                jobs_log(ctx, "warn", "%s/%s: the lag could not be stored", env, name);
            json_object_set_new(per, name, json_integer(total));
            json_decref(lag);
            if (jobs_heartbeat(ctx) != 0) {
                json_decref(per);
                json_decref(targets);
                json_decref(envs);
                json_decref(groups);
                return JOBS_CANCELLED;
            }
        }
        json_object_set_new(*result, env, per);
        json_decref(targets);
    }
    json_decref(envs);
    json_decref(groups);
    return JOBS_OK;
}

const struct jobs_kind inv_kind_drift_check = {
    .kind = "inventory.drift_check",
    .max_attempts = 1,
    .timeout_seconds = 600,
    .max_running = 1,
    .direct_role = HTTP_OPERATOR,
    .validate = env_validate,
    .run = drift_run,
};
const struct jobs_kind inv_kind_lag_check = {
    .kind = "inventory.lag_check",
    .max_attempts = 1,
    .timeout_seconds = 300,
    .max_running = 1,
    .direct_role = HTTP_OPERATOR,
    .validate = env_validate,
    .run = lag_run,
};

static struct jobs_schedule_default drift_schedule = {.name = "inventory-drift-check",
                                                      .kind = "inventory.drift_check"};
static struct jobs_schedule_default lag_schedule = {.name = "inventory-lag-check",
                                                    .kind = "inventory.lag_check"};

int inv_jobs_init(void)
{
    if (jobs_register_kind(&inv_kind_provision_database) ||
        jobs_register_kind(&inv_kind_provision_topic) ||
        jobs_register_kind(&inv_kind_provision_connector) ||
        jobs_register_kind(&inv_kind_drift_check) || jobs_register_kind(&inv_kind_lag_check))
        return -1;
    drift_schedule.cron = inv_drift_cron;
    lag_schedule.cron = inv_lag_cron;
    if ((strcmp(inv_drift_cron, "off") != 0 && jobs_schedule_ensure(&drift_schedule) != 0) ||
        (strcmp(inv_lag_cron, "off") != 0 && jobs_schedule_ensure(&lag_schedule) != 0))
        return -1;
    return metrics_register(collect, NULL);
}

void inv_jobs_stop(void)
{
    pthread_mutex_lock(&gauge_lock);
    json_decref(drift_gauge);
    json_decref(lag_gauge);
    drift_gauge = lag_gauge = NULL;
    pthread_mutex_unlock(&gauge_lock);
}
