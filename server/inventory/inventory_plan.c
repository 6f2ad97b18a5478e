/* The drift plan of an environment, as Terraform's plan: the inventory beside what its
 * targets report (databases, roles, settings and publications on PostgreSQL; topics, their
 * partition counts and configs on Kafka; connectors RUNNING with their config on Kafka
 * Connect), each difference with the job that fixes it. POST .../apply enqueues exactly
 * those jobs; a target that cannot be reached is a warning, never a guess. */
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <string.h>

#include "audit/audit.h"
#include "auth/auth.h"
#include "inventory/inventory_internal.h"
#include "platform/environment.h"
#include "platform/jsonspec.h"
#include "platform/rfc3339.h"

static void difference(json_t *plan, const char *resource, const char *name, json_t *diffs,
                       const char *kind, json_t *args)
{
    json_array_append_new(json_object_get(plan, "differences"),
                          json_pack("{s:s,s:s,s:o,s:{s:s,s:o}}", "resource", resource, "name", name,
                                    "differences", diffs, "action", "kind", kind, "args", args));
}

static void warn(json_t *plan, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(json_t *plan, const char *fmt, ...)
{
    char text[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    json_array_append_new(json_object_get(plan, "warnings"), json_string(text));
}

static void plan_databases(struct db_conn *c, const char *env, const json_t *env_pg, json_t *plan,
                           int *rc)
{
    json_t *items = NULL;
    *rc = inv_store_db_list(c, env, &items);
    if (*rc <= 0)
        return;
    size_t i;
    json_t *d;
    json_array_foreach(items, i, d)
    {
        const char *name = json_string_value(json_object_get(d, "name"));
        struct inventory_pg_endpoint ep;
        if (inv_endpoint_from(json_object_get(d, "primary"), env_pg, &ep) != 0) {
            if (i == 0 || json_object_get(json_object_get(d, "primary"), "host"))
                warn(plan,
                     "databases: no postgres target for %s (set the environment's "
                     "targets.postgres or the database's primary.host)",
                     name);
            continue;
        }
        json_t *diffs = json_array();
        char err[512] = "";
        if (inv_pg_inspect(&ep, d, diffs, err, sizeof err) != 0) {
            warn(plan, "database %s: not compared, its server did not answer: %s", name, err);
            json_decref(diffs);
            continue;
        }
        if (json_array_size(diffs) == 0) {
            json_decref(diffs);
            continue;
        }
        difference(plan, "database", name, diffs, inv_kind_provision_database.kind,
                   json_pack("{s:I}", "database_id", json_integer_value(json_object_get(d, "id"))));
    }
    json_decref(items);
}

/* Returns 1 when Kafka answered, 0 when not (the lag is then not asked for). */
static int plan_topics(struct db_conn *c, const char *env, const json_t *kafka, int64_t cap,
                       json_t *plan, int *rc)
{
    int answered = 0;
    json_t *items = NULL, *have = NULL, *configs = NULL, *names = json_array();
    *rc = inv_store_list(c, "topic", &items);
    if (*rc <= 0)
        goto out;
    char err[512] = "";
    int timeout = inv_target_timeout_ms();
    if (inv_kafka_topics(kafka, timeout, &have, err, sizeof err) != 0) {
        warn(plan, "topics and consumer group lag: not compared, Kafka did not answer: %s", err);
        goto out;
    }
    answered = 1;
    size_t i;
    json_t *t;
    json_array_foreach(items, i, t)
    {
        const char *name = json_string_value(json_object_get(t, "name"));
        if (json_object_get(have, name))
            json_array_append_new(names, json_string(name));
    }
    int configs_known = inv_kafka_describe(kafka, names, timeout, &configs, err, sizeof err) == 0;
    if (!configs_known && json_array_size(names) > 0)
        warn(plan, "topic configs: not compared, %s", err);
    json_array_foreach(items, i, t)
    {
        const char *name = json_string_value(json_object_get(t, "name"));
        json_int_t want = json_integer_value(json_object_get(t, "partitions"));
        json_t *diffs = json_array();
        json_t *p = json_object_get(have, name);
        if (!p) {
            json_array_append_new(diffs, json_pack("{s:s,s:s}", "difference", "topic_missing",
                                                   "detail", "the topic does not exist"));
        } else if (json_integer_value(p) < want) {
            char detail[128];
            snprintf(detail, sizeof detail, "%lld partitions, the inventory says %lld",
                     (long long)json_integer_value(p), (long long)want);
            json_array_append_new(
                diffs, json_pack("{s:s,s:s}", "difference", "partitions_below", "detail", detail));
        } else if (json_integer_value(p) > want) {
            warn(plan,
                 "topic %s has %lld partitions, the inventory says %lld: partitions are "
                 "never removed",
                 name, (long long)json_integer_value(p), (long long)want);
        }
        json_t *cur = configs_known ? json_object_get(configs, name) : NULL;
        if (p && cur) {
            json_t *wantc = NULL;
            inv_topic_config_values(t, env, cap, &wantc);
            const char *k;
            json_t *v;
            json_object_foreach(wantc, k, v)
            {
                const char *now = json_string_value(json_object_get(cur, k));
                if (!now || strcmp(now, json_string_value(v)) != 0) {
                    char detail[256];
                    snprintf(detail, sizeof detail, "%s is %s, the inventory says %s", k,
                             now ? now : "(unset)", json_string_value(v));
                    json_array_append_new(diffs, json_pack("{s:s,s:s}", "difference",
                                                           "config_differs", "detail", detail));
                }
            }
            json_decref(wantc);
        }
        if (json_array_size(diffs) == 0) {
            json_decref(diffs);
            continue;
        }
        difference(plan, "topic", name, diffs, inv_kind_provision_topic.kind,
                   json_pack("{s:s,s:s}", "topic", name, "environment", env));
    }
out:
    json_decref(items);
    json_decref(have);
    json_decref(configs);
    json_decref(names);
    return answered;
}

static void plan_connectors(struct db_conn *c, const char *env, const char *url, json_t *plan,
                            int *rc)
{
    json_t *items = NULL;
    *rc = inv_store_list(c, "connector", &items);
    if (*rc <= 0)
        return;
    size_t i;
    json_t *k;
    json_array_foreach(items, i, k)
    {
        const char *name = json_string_value(json_object_get(k, "name"));
        char state[64] = "", err[512] = "";
        int st = inv_connect_status(url, name, state, sizeof state, err, sizeof err);
        if (st < 0) {
            warn(plan, "connector %s: not compared, Kafka Connect did not answer: %s", name, err);
            continue;
        }
        if (st == 1 && strcmp(state, "RUNNING") == 0)
            continue;
        char detail[128];
        snprintf(detail, sizeof detail, st == 0 ? "the connector does not exist" : "state %s",
                 state);
        difference(plan, "connector", name,
                   json_pack("[{s:s,s:s}]", "difference",
                             st == 0 ? "connector_missing" : "connector_not_running", "detail",
                             detail),
                   inv_kind_provision_connector.kind,
                   json_pack("{s:s,s:s}", "connector", name, "environment", env));
    }
    json_decref(items);
}

static void plan_lag(struct db_conn *c, const json_t *kafka, json_t *plan, int *rc)
{
    json_t *items = NULL;
    *rc = inv_store_list(c, "group", &items);
    if (*rc <= 0)
        return;
    size_t i;
    json_t *g;
    json_array_foreach(items, i, g)
    {
        json_t *lag = NULL;
        char err[512] = "";
        if (json_array_size(json_object_get(g, "topics")) == 0)
            continue;
        if (inv_kafka_lag(kafka, g, inv_target_timeout_ms(), &lag, err, sizeof err) != 0) {
            warn(plan, "consumer group %s: lag unknown: %s",
                 json_string_value(json_object_get(g, "name")), err);
            continue;
        }
        json_int_t total = json_integer_value(json_object_get(lag, "total"));
        json_int_t limit = json_integer_value(json_object_get(g, "lag_threshold"));
        if (total > limit)
            warn(plan, "consumer group %s is %lld messages behind (threshold %lld)",
                 json_string_value(json_object_get(g, "name")), (long long)total, (long long)limit);
        json_decref(lag);
    }
    json_decref(items);
}

int inv_plan_build(struct db_conn *c, const char *env, json_t **out)
{
    json_t *targets = NULL;
    int64_t cap = 0;
    int rc = inv_env_targets(c, env, &targets, &cap);
    if (rc <= 0)
        return rc < 0 ? rc : DB_HARD;
    char now[40];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rfc3339_format_ms((int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000, now, sizeof now);
    json_t *plan = json_pack("{s:s,s:s,s:[],s:[]}", "environment", env, "checked_at", now,
                             "differences", "warnings");
    json_t *kafka = json_object_get(targets, "kafka");
    json_t *connect = json_object_get(targets, "kafka_connect");
    plan_databases(c, env, json_object_get(targets, "postgres"), plan, &rc);
    int kafka_up = 0;
    if (rc >= 0 && kafka)
        kafka_up = plan_topics(c, env, kafka, cap, plan, &rc);
    else if (rc >= 0)
        warn(plan, "topics: the environment has no kafka target");
    if (rc >= 0 && connect)
        plan_connectors(c, env, json_string_value(json_object_get(connect, "url")), plan, &rc);
    else if (rc >= 0)
        warn(plan, "connectors: the environment has no kafka_connect target");
    if (rc >= 0 && kafka_up)
        plan_lag(c, kafka, plan, &rc);
    json_decref(targets);
    if (rc < 0) {
        json_decref(plan);
        return rc;
    }
    *out = plan;
    return 1;
}

/* ---- GET /api/v1/environments/{env}/plan, POST .../apply ---- */

static const char *env_of(struct http_request *req, struct db_conn *c)
{
    const char *env = http_param(req, "env");
    int rc = environment_exists(c, env);
    if (rc <= 0) {
        if (rc < 0)
            http_reply_db_error(req, rc);
        else
            http_reply_problem(req, QDB_E_NOT_FOUND, "no environment %.64s", env);
        return NULL;
    }
    return env;
}

void inventory_api_plan(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    const char *env = env_of(req, c);
    if (!env)
        return;
    json_t *plan = NULL;
    int rc = inv_plan_build(c, env, &plan);
    if (rc < 0)
        http_reply_db_error(req, rc);
    else
        http_reply_json(req, 200, plan);
}

struct apply_tx {
    struct http_request *req;
    const char *env;
    json_t *plan;
    json_t *jobs; /* ids, filled in */
};

static int apply_fn(struct db_conn *c, void *cls)
{
    struct apply_tx *t = cls;
    const struct http_principal *p = http_principal(t->req);
    json_decref(t->jobs);
    t->jobs = json_array();
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(t->plan, "differences"), i, d)
    {
        json_t *action = json_object_get(d, "action");
        struct jobs_new jn = {.kind = json_string_value(json_object_get(action, "kind")),
                              .args = json_object_get(action, "args"),
                              .created_by = p && p->subject[0] ? p->subject : "anonymous"};
        int64_t id = 0;
        int rc = jobs_enqueue(c, &jn, &id, NULL);
        if (rc < 0)
            return rc;
        json_array_append_new(t->jobs, json_integer(id));
    }
    json_t *after = json_pack("{s:s,s:O,s:O}", "environment", t->env, "jobs", t->jobs,
                              "differences", json_object_get(t->plan, "differences"));
    struct audit_entry e = {.action = "environment.apply",
                            .resource_type = "environment",
                            .resource_id = t->env,
                            .environment = t->env,
                            .after = after};
    int rc = audit_record_http(c, t->req, &e);
    char subject[80];
    snprintf(subject, sizeof subject, "environments/%s", t->env);
    if (rc >= 0)
        rc = audit_event_emit_http(
            c, t->req,
            &(struct audit_event){
                .room = "inventory", .verb = "applied", .subject = subject, .data = after});
    json_decref(after);
    return rc;
}

/* Body {} (members reserved). Builds the plan now and enqueues one job per difference, in
 * one transaction with its audit record; replies 202 with the plan and the job ids. */
void inventory_api_apply(struct http_request *req)
{
    const struct jspec_field f[] = {JSPEC_END};
    if (jspec_parse(req, http_body(req), f, NULL, 0) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    const char *env = env_of(req, c);
    if (!env || auth_require_environment(req, env) != 0)
        return;
    struct apply_tx t = {.req = req, .env = env};
    int rc = inv_plan_build(c, env, &t.plan);
    if (rc >= 0)
        rc = db_tx(c, apply_fn, &t);
    if (rc < 0)
        http_reply_db_error(req, rc);
    else {
        json_object_set(t.plan, "jobs", t.jobs);
        http_reply_json(req, 202, json_incref(t.plan));
    }
    json_decref(t.plan);
    json_decref(t.jobs);
}
