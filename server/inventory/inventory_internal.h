/* The inventory room's own declarations, shared by its files only (other rooms include
 * inventory.h). */
#ifndef QDB_INVENTORY_INTERNAL_H
#define QDB_INVENTORY_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "inventory/inventory.h"
#include "jobs/jobs.h"
#include "platform/db.h"
#include "platform/http.h"

/* Reasons a transaction function rolls back with (below -100, see db_tx). */
enum { INV_E_NOT_FOUND = -301, INV_E_INVALID = -302 };

/* A failed semantic check: the field at fault ("targets.kafka.bootstrap_servers") and why. */
struct inv_fault {
    char field[128];
    char detail[384];
};
/* Set f and return INV_E_INVALID. */
int inv_fault(struct inv_fault *f, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reply 422 QDB_E_INVENTORY_INVALID naming f->field. */
void inv_reply_fault(struct http_request *req, const struct inv_fault *f);
/* The audit actor of a job's runner: the job's creator, as "system" method. */
struct audit_actor inv_job_actor(struct jobs_ctx *ctx);

/* ---- checks (inventory_validate.c): each returns 0, INV_E_INVALID with *f set, or a DB_
 * code (a check that reads the state store) ---- */
int inv_name_is_pg_ident(const char *s); /* [a-z_][a-z0-9_]{0,62} */
int inv_name_is_kafka(const char *s);    /* what Kafka accepts as a topic / group name */
/* Check and normalise a targets object (defaults filled in); `doc` modified in place. */
int inv_check_targets(json_t *targets, struct inv_fault *f);
/* Check a whole database document (after defaults), and that its environment exists. */
int inv_check_database(struct db_conn *c, json_t *doc, struct inv_fault *f);
/* Check a topic document against the largest broker count of the environments. */
int inv_check_topic(struct db_conn *c, json_t *doc, struct inv_fault *f);
int inv_check_group(json_t *doc, struct inv_fault *f);
int inv_check_connector(json_t *doc, struct inv_fault *f);

/* ---- store (inventory_store.c): one function per statement; DB_ returns ---- */
int inv_store_env_get(struct db_conn *c, const char *env, json_t **doc);
int inv_store_env_names(struct db_conn *c, json_t **names);
int inv_store_env_update(struct db_conn *c, const char *env, const json_t *config,
                         const json_t *targets);
int inv_store_max_brokers(struct db_conn *c, int64_t *out);
int inv_store_db_list(struct db_conn *c, const char *env, json_t **items);
int inv_store_db_get(struct db_conn *c, int64_t id, json_t **doc);
int inv_store_db_insert(struct db_conn *c, const json_t *doc, int64_t *id);
int inv_store_db_update(struct db_conn *c, int64_t id, const json_t *doc);
int inv_store_db_delete(struct db_conn *c, int64_t id);
int inv_store_db_resolve(struct db_conn *c, int64_t id, const char *env, const char *name,
                         json_t **doc);
/* kind: "topic", "group", "connector" */
int inv_store_list(struct db_conn *c, const char *kind, json_t **items);
int inv_store_get(struct db_conn *c, const char *kind, const char *name, json_t **doc);
/* Insert (update = 0) or update (1) from a checked document; 0 rows = not found on update. */
int inv_store_put(struct db_conn *c, const char *kind, const json_t *doc, int update);
/* Insert or update (import); *created 1 when it was new. */
int inv_store_upsert(struct db_conn *c, const char *kind, const json_t *doc, int *created);
int inv_store_delete(struct db_conn *c, const char *kind, const char *name);
int inv_store_lag_put(struct db_conn *c, const char *env, const char *group, int64_t lag);
/* {"drift": {env: n}, "lag": {env: {group: n}}} */
int inv_store_gauges(struct db_conn *c, json_t **out);
int inv_store_drift_swap(struct db_conn *c, const char *env, int64_t differences,
                         int64_t *previous);

/* ---- targets ---- */
/* The environment's targets (new reference in *targets) and its kafka retention cap. */
int inv_env_targets(struct db_conn *c, const char *env, json_t **targets, int64_t *retention_cap);
/* Fill an endpoint from a database's primary/standby object and the environment's postgres
 * target. Returns 0, or -1 when no host is known. */
int inv_endpoint_from(const json_t *conn, const json_t *env_pg, struct inventory_pg_endpoint *ep);

/* inventory_pg.c: the state of one database on its primary, and provisioning it.
 * `doc` is the database's document. Each appends human-readable steps to `steps` (array
 * of strings) and differences to `diffs` (array of {resource, difference}) when not NULL.
 * Returns 0, or -1 with err set (the target could not be reached: a retryable failure), or
 * -2 (a permanent failure, err says why). */
int inv_pg_inspect(const struct inventory_pg_endpoint *ep, const json_t *doc, json_t *diffs,
                   char *err, size_t errlen);
int inv_pg_provision(const struct inventory_pg_endpoint *ep, const json_t *doc, json_t *steps,
                     int *changed, json_t *warnings, char *err, size_t errlen);

/* inventory_kafka.c */
/* Partition count of `topic` (0 = absent) into *partitions. Returns 0 or -1 (err). */
int inv_kafka_topic_partitions(const json_t *kafka, const char *topic, int timeout_ms,
                               int *partitions, char *err, size_t errlen);
/* Every topic the brokers report: {name: partitions} (new *map). Returns 0 or -1 (err). */
int inv_kafka_topics(const json_t *kafka, int timeout_ms, json_t **map, char *err, size_t errlen);
/* The inventory-owned configs of the named topics: {name: {retention.ms: ...}} (new). */
int inv_kafka_describe(const json_t *kafka, const json_t *names, int timeout_ms, json_t **configs,
                       char *err, size_t errlen);
/* The configs the inventory wants on a topic in env, as Kafka names them (new object). */
void inv_topic_config_values(const json_t *topic, const char *env, int64_t cap, json_t **out);
/* The effective retention of a topic document in an environment. */
int64_t inv_topic_retention(const json_t *topic, const char *env, int64_t env_cap);
/* Create the topic or grow it and set its configs. Same returns as inv_pg_provision. */
int inv_kafka_provision(const json_t *kafka, const json_t *topic, const char *env, int64_t env_cap,
                        json_t *steps, int *changed, char *err, size_t errlen);
/* Lag of group over its topics: {partitions: [{topic, partition, committed, end, lag}],
 * total}. Returns 0 (new *out) or -1 (err). */
int inv_kafka_lag(const json_t *kafka, const json_t *group, int timeout_ms, json_t **out, char *err,
                  size_t errlen);

/* inventory_connect.c: state ("RUNNING", ...) or NULL when absent; -1 on error. */
int inv_connect_status(const char *url, const char *name, char *state, size_t n, char *err,
                       size_t errlen);
/* PUT the config and poll status until RUNNING (timeout_s). Same returns as
 * inv_pg_provision; -1 means retry (5xx, connection), -2 permanent (4xx). */
int inv_connect_provision(const char *url, const json_t *connector, int timeout_s, json_t *steps,
                          int *changed, char *err, size_t errlen);

/* inventory_plan.c: the plan of one environment: {environment, differences: [{resource,
 * name, difference, action: {kind, args} | null}], warnings: [...]}. Returns 0 (new *out)
 * or a DB_ code. */
int inv_plan_build(struct db_conn *c, const char *env, json_t **out);

/* inventory_jobs.c: kinds and lag gauge */
extern const struct jobs_kind inv_kind_provision_database, inv_kind_provision_topic,
    inv_kind_provision_connector, inv_kind_drift_check, inv_kind_lag_check;
int inv_jobs_init(void);
/* The gauge refresher: a thread that borrows a connection of `pool` every 5 s. */
int inv_gauges_start(struct db_pool *pool);
void inv_gauges_stop(void);
void inv_jobs_stop(void);

/* settings (inventory_module.c) */
int inv_secret_dirs_load(void);
int inv_target_timeout_ms(void);
/* QDB_INVENTORY_DRIFT_CRON / QDB_INVENTORY_LAG_CRON: the default schedules, or "off". */
extern const char *inv_drift_cron, *inv_lag_cron;

#endif
