/* The inventory's SQL, and nothing else. Documents are built in SQL in the shape the API
 * shows; writes take one checked document as a jsonb parameter and read its members in
 * SQL, so no statement is ever built from text. */
#include <string.h>

#include "inventory/inventory_internal.h"

/* ---- environments ---- */

static struct db_stmt q_env_get = DB_STMT(
    "inv_env_get", 1,
    "SELECT json_build_object('config', json_build_object('kafka_retention_ms', "
    "kafka_retention_ms, 'log_retention', log_retention, 'audit_retention', audit_retention, "
    "'tls', tls, 'keycloak_realm', keycloak_realm, 'nas_integration', nas_integration, "
    "'moci_integration', moci_integration, 'qfc_integration', qfc_integration, "
    "'feature_flags', feature_flags), 'targets', targets, 'updated_at', " DB_TIME_JSON(
        "updated_at") ") FROM inventory_environment WHERE environment = $1");

int inv_store_env_get(struct db_conn *c, const char *env, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, env);
    return db_execp_json(c, &q_env_get, &p, doc);
}

static struct db_stmt q_env_names =
    DB_STMT("inv_env_names", 0,
            "SELECT coalesce(json_agg(e.name ORDER BY e.sort_order), '[]') FROM environment e "
            "JOIN inventory_environment i ON i.environment = e.name");

int inv_store_env_names(struct db_conn *c, json_t **names)
{
    return db_exec_json(c, &q_env_names, NULL, names);
}

static struct db_stmt q_env_update =
    DB_STMT("inv_env_update", 3,
            "UPDATE inventory_environment SET "
            "kafka_retention_ms = coalesce(($2::jsonb->>'kafka_retention_ms')::bigint, "
            "kafka_retention_ms), "
            "log_retention = coalesce($2::jsonb->>'log_retention', log_retention), "
            "audit_retention = coalesce($2::jsonb->>'audit_retention', audit_retention), "
            "tls = coalesce($2::jsonb->>'tls', tls), "
            "keycloak_realm = coalesce($2::jsonb->>'keycloak_realm', keycloak_realm), "
            "nas_integration = coalesce($2::jsonb->>'nas_integration', nas_integration), "
            "moci_integration = coalesce($2::jsonb->>'moci_integration', moci_integration), "
            "qfc_integration = coalesce($2::jsonb->>'qfc_integration', qfc_integration), "
            "feature_flags = coalesce($2::jsonb->>'feature_flags', feature_flags), "
            "targets = coalesce($3::jsonb, targets), updated_at = now() WHERE environment = $1");

int inv_store_env_update(struct db_conn *c, const char *env, const json_t *config,
                         const json_t *targets)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, env);
    if (config)
        db_param_json(&p, config);
    else
        db_param_text(&p, "{}");
    db_param_json(&p, targets);
    return db_execp(c, &q_env_update, &p, NULL);
}

/* The most brokers any environment's Kafka has (3.1: 3), for the replication factor check. */
static struct db_stmt q_max_brokers =
    DB_STMT("inv_max_brokers", 0,
            "SELECT greatest(3, coalesce(max((targets->'kafka'->>'broker_count')::int), 3)) "
            "FROM inventory_environment WHERE targets ? 'kafka'");

int inv_store_max_brokers(struct db_conn *c, int64_t *out)
{
    PGresult *res = NULL;
    int rc = db_exec(c, &q_max_brokers, NULL, &res);
    if (rc > 0)
        *out = db_get_int64(res, 0, 0);
    PQclear(res);
    return rc;
}

/* ---- databases ---- */

#define DB_DOC                                                                                     \
    "json_build_object('id', id, 'environment', environment, 'name', name, 'engine_version', "     \
    "engine_version, 'purpose', purpose, 'ha_strategy', ha_strategy, 'storage_initial_gb', "       \
    "storage_initial_gb, 'storage_max_gb', storage_max_gb, 'owner', owner, 'primary', "            \
    "primary_conn, 'standby', standby_conn, 'settings', settings, 'pool_mode', pool_mode, "        \
    "'pool_size', pool_size, 'max_client_connections', max_client_connections, 'cdc_tables', "     \
    "cdc_tables, 'publication', publication, 'created_at', " DB_TIME_JSON(                         \
        "created_at") ", 'updated_at', " DB_TIME_JSON("updated_at") ")"

static struct db_stmt q_db_list =
    DB_STMT("inv_db_list", 1,
            "SELECT coalesce(json_agg(" DB_DOC " ORDER BY e.env_order, d.name), '[]') "
            "FROM inventory_database d JOIN (SELECT name AS env_name, sort_order AS env_order "
            "FROM environment) e ON e.env_name = d.environment "
            "WHERE $1::text IS NULL OR d.environment = $1");

int inv_store_db_list(struct db_conn *c, const char *env, json_t **items)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, env);
    return db_execp_json(c, &q_db_list, &p, items);
}

static struct db_stmt q_db_get =
    DB_STMT("inv_db_get", 1, "SELECT " DB_DOC " FROM inventory_database WHERE id = $1");

int inv_store_db_get(struct db_conn *c, int64_t id, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    return db_execp_json(c, &q_db_get, &p, doc);
}

static struct db_stmt q_db_resolve =
    DB_STMT("inv_db_resolve", 3,
            "SELECT " DB_DOC " FROM inventory_database WHERE CASE WHEN $1::bigint > 0 THEN id = $1 "
            "ELSE environment = $2 AND name = $3 END");

int inv_store_db_resolve(struct db_conn *c, int64_t id, const char *env, const char *name,
                         json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, env ? env : "");
    db_param_text(&p, name ? name : "");
    return db_execp_json(c, &q_db_resolve, &p, doc);
}

#define DB_COLUMNS_FROM_DOC                                                                        \
    "d->>'environment', d->>'name', d->>'engine_version', d->>'purpose', d->>'ha_strategy', "      \
    "(d->>'storage_initial_gb')::int, (d->>'storage_max_gb')::int, d->>'owner', d->'primary', "    \
    "nullif(d->'standby', 'null'::jsonb), d->'settings', d->>'pool_mode', "                        \
    "(d->>'pool_size')::int, (d->>'max_client_connections')::int, d->'cdc_tables', "               \
    "d->>'publication'"

static struct db_stmt q_db_insert = DB_STMT(
    "inv_db_insert", 1,
    "INSERT INTO inventory_database (environment, name, engine_version, purpose, ha_strategy, "
    "storage_initial_gb, storage_max_gb, owner, primary_conn, standby_conn, settings, "
    "pool_mode, pool_size, max_client_connections, cdc_tables, publication) "
    "SELECT " DB_COLUMNS_FROM_DOC " FROM (SELECT $1::jsonb AS d) s RETURNING id");

int inv_store_db_insert(struct db_conn *c, const json_t *doc, int64_t *id)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_json(&p, doc);
    PGresult *res = NULL;
    int rc = db_execp(c, &q_db_insert, &p, &res);
    if (rc > 0)
        *id = db_get_int64(res, 0, 0);
    PQclear(res);
    return rc;
}

static struct db_stmt q_db_update = DB_STMT(
    "inv_db_update", 2,
    "UPDATE inventory_database t SET (environment, name, engine_version, purpose, ha_strategy, "
    "storage_initial_gb, storage_max_gb, owner, primary_conn, standby_conn, settings, "
    "pool_mode, pool_size, max_client_connections, cdc_tables, publication) = "
    "(SELECT " DB_COLUMNS_FROM_DOC " FROM (SELECT $2::jsonb AS d) s), updated_at = now() "
    "WHERE t.id = $1");

int inv_store_db_update(struct db_conn *c, int64_t id, const json_t *doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_json(&p, doc);
    return db_execp(c, &q_db_update, &p, NULL);
}

/* A failover or switchover made the standby the primary (the DR room, inventory.h): the two
 * connections change places in one statement (SET reads the row's old values). */
static struct db_stmt q_db_swap = DB_STMT(
    "inv_db_swap_roles", 1,
    "UPDATE inventory_database SET primary_conn = standby_conn, standby_conn = primary_conn, "
    "updated_at = now() WHERE id = $1 AND standby_conn IS NOT NULL RETURNING " DB_DOC);

int inventory_database_swap_roles(struct db_conn *conn, int64_t id, json_t **before,
                                  json_t **after)
{
    *before = *after = NULL;
    int rc = inv_store_db_get(conn, id, before);
    if (rc <= 0)
        return rc;
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    rc = db_execp_json(conn, &q_db_swap, &p, after);
    if (rc <= 0) {
        json_decref(*before);
        *before = NULL;
    }
    return rc;
}

static struct db_stmt q_db_delete =
    DB_STMT("inv_db_delete", 1, "DELETE FROM inventory_database WHERE id = $1");

int inv_store_db_delete(struct db_conn *c, int64_t id)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    return db_execp(c, &q_db_delete, &p, NULL);
}

/* ---- topics, consumer groups, connectors: the same six statements each ---- */

#define TOPIC_DOC                                                                                  \
    "json_build_object('name', name, 'group', topic_group, 'partitions', partitions, "             \
    "'replication_factor', replication_factor, 'min_insync_replicas', min_insync_replicas, "       \
    "'retention_ms', retention_ms, 'retention_by_environment', retention_by_environment, "         \
    "'compression', compression, 'segment_bytes', segment_bytes, 'created_at', " DB_TIME_JSON(     \
        "created_at") ", 'updated_at', " DB_TIME_JSON("updated_at") ")"
#define TOPIC_COLS                                                                                 \
    "name, topic_group, partitions, replication_factor, min_insync_replicas, retention_ms, "       \
    "retention_by_environment, compression, segment_bytes"
#define TOPIC_VALS                                                                                 \
    "d->>'name', d->>'group', (d->>'partitions')::int, (d->>'replication_factor')::int, "          \
    "(d->>'min_insync_replicas')::int, (d->>'retention_ms')::bigint, "                             \
    "d->'retention_by_environment', d->>'compression', (d->>'segment_bytes')::bigint"

#define GROUP_DOC                                                                                  \
    "json_build_object('name', name, 'topics', topics, 'instances', instances, 'processing', "     \
    "processing, 'lag_threshold', lag_threshold, 'created_at', " DB_TIME_JSON(                     \
        "created_at") ", 'updated_at', " DB_TIME_JSON("updated_at") ")"
#define GROUP_COLS "name, topics, instances, processing, lag_threshold"
#define GROUP_VALS                                                                                 \
    "d->>'name', d->'topics', (d->>'instances')::int, d->>'processing', "                          \
    "(d->>'lag_threshold')::bigint"

#define CONN_DOC                                                                                   \
    "json_build_object('name', name, 'config', config, 'created_at', " DB_TIME_JSON(               \
        "created_at") ", 'updated_at', " DB_TIME_JSON("updated_at") ")"
#define CONN_COLS "name, config"
#define CONN_VALS "d->>'name', d->'config'"

#define KIND_STMTS(tag, table, doc, cols, vals)                                                    \
    {                                                                                              \
        DB_STMT("inv_" tag "_list", 0,                                                             \
                "SELECT coalesce(json_agg(" doc " ORDER BY name), '[]') FROM " table),             \
            DB_STMT("inv_" tag "_get", 1, "SELECT " doc " FROM " table " WHERE name = $1"),        \
            DB_STMT("inv_" tag "_insert", 1,                                                       \
                    "INSERT INTO " table " (" cols ") SELECT " vals                                \
                    " FROM (SELECT $1::jsonb AS d) s"),                                            \
            DB_STMT("inv_" tag "_update", 1,                                                       \
                    "UPDATE " table " t SET (" cols ") = (SELECT " vals                            \
                    " FROM (SELECT $1::jsonb AS d) s), updated_at = now() "                        \
                    "WHERE t.name = $1::jsonb->>'name'"),                                          \
            DB_STMT("inv_" tag "_upsert", 1,                                                       \
                    "INSERT INTO " table " AS t (" cols ") SELECT " vals                           \
                    " FROM (SELECT $1::jsonb AS d) s ON CONFLICT (name) DO UPDATE SET (" cols      \
                    ") = (SELECT " vals " FROM (SELECT $1::jsonb AS d) s), updated_at = now() "    \
                    "RETURNING (xmax = 0)"),                                                       \
            DB_STMT("inv_" tag "_delete", 1, "DELETE FROM " table " WHERE name = $1"),             \
    }

enum { K_LIST, K_GET, K_INSERT, K_UPDATE, K_UPSERT, K_DELETE, K_N };
static struct db_stmt kind_stmts[3][K_N] = {
    KIND_STMTS("topic", "inventory_topic", TOPIC_DOC, TOPIC_COLS, TOPIC_VALS),
    KIND_STMTS("group", "inventory_consumer_group", GROUP_DOC, GROUP_COLS, GROUP_VALS),
    KIND_STMTS("connector", "inventory_connector", CONN_DOC, CONN_COLS, CONN_VALS),
};

static struct db_stmt *stmt_of(const char *kind, int which)
{
    int k = strcmp(kind, "topic") == 0 ? 0 : strcmp(kind, "group") == 0 ? 1 : 2;
    return &kind_stmts[k][which];
}

int inv_store_list(struct db_conn *c, const char *kind, json_t **items)
{
    return db_exec_json(c, stmt_of(kind, K_LIST), NULL, items);
}

int inv_store_get(struct db_conn *c, const char *kind, const char *name, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    return db_execp_json(c, stmt_of(kind, K_GET), &p, doc);
}

int inv_store_put(struct db_conn *c, const char *kind, const json_t *doc, int update)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_json(&p, doc);
    return db_execp(c, stmt_of(kind, update ? K_UPDATE : K_INSERT), &p, NULL);
}

int inv_store_upsert(struct db_conn *c, const char *kind, const json_t *doc, int *created)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_json(&p, doc);
    PGresult *res = NULL;
    int rc = db_execp(c, stmt_of(kind, K_UPSERT), &p, &res);
    if (rc > 0)
        *created = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    return rc;
}

int inv_store_delete(struct db_conn *c, const char *kind, const char *name)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    return db_execp(c, stmt_of(kind, K_DELETE), &p, NULL);
}

/* ---- drift ---- */

static struct db_stmt q_drift_swap =
    DB_STMT("inv_drift_swap", 2,
            "WITH old AS (SELECT differences FROM inventory_drift_state WHERE environment = $1 "
            "FOR UPDATE), up AS (INSERT INTO inventory_drift_state (environment, differences) "
            "VALUES ($1, $2::int) ON CONFLICT (environment) DO UPDATE SET differences = $2::int, "
            "checked_at = now()) SELECT coalesce((SELECT differences FROM old), 0)");

int inv_store_drift_swap(struct db_conn *c, const char *env, int64_t differences, int64_t *previous)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, env);
    db_param_int(&p, differences);
    PGresult *res = NULL;
    int rc = db_execp(c, &q_drift_swap, &p, &res);
    if (rc > 0)
        *previous = db_get_int64(res, 0, 0);
    PQclear(res);
    return rc;
}

/* ---- gauges ---- */

static struct db_stmt q_lag_put = DB_STMT(
    "inv_lag_put", 3,
    "INSERT INTO inventory_lag (environment, consumer_group, lag) VALUES ($1, $2, $3::bigint) "
    "ON CONFLICT (environment, consumer_group) DO UPDATE SET lag = $3::bigint, "
    "measured_at = now()");

int inv_store_lag_put(struct db_conn *c, const char *env, const char *group, int64_t lag)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, env);
    db_param_text(&p, group);
    db_param_int(&p, lag);
    return db_execp(c, &q_lag_put, &p, NULL);
}

/* Lag rows of groups no longer in the inventory are left out (a deleted group stops being
 * reported). */
static struct db_stmt q_gauges = DB_STMT(
    "inv_gauges", 0,
    "SELECT json_build_object("
    "'drift', (SELECT coalesce(json_object_agg(environment, differences), '{}') "
    "FROM inventory_drift_state), "
    "'lag', (SELECT coalesce(json_object_agg(environment, g), '{}') FROM (SELECT l.environment, "
    "json_object_agg(l.consumer_group, l.lag) AS g FROM inventory_lag l JOIN "
    "inventory_consumer_group cg ON cg.name = l.consumer_group GROUP BY l.environment) x))");

int inv_store_gauges(struct db_conn *c, json_t **out)
{
    return db_exec_json(c, &q_gauges, NULL, out);
}
