/* The inventory's checks: every document is checked whole (after a PATCH is merged into
 * it) before it is written, and a failure names the field at fault with its full path
 * ("targets.kafka.bootstrap_servers", "primary.admin_secret"), answered as 422. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "inventory/inventory_internal.h"
#include "platform/environment.h"
#include "platform/jsonspec.h"
#include "platform/utf8.h"

int inv_fault(struct inv_fault *f, const char *field, const char *fmt, ...)
{
    snprintf(f->field, sizeof f->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->detail, sizeof f->detail, fmt, ap);
    va_end(ap);
    return INV_E_INVALID;
}

void inv_reply_fault(struct http_request *req, const struct inv_fault *f)
{
    http_reply_problem_ext(req, QDB_E_INVENTORY_INVALID, json_pack("{s:s}", "field", f->field),
                           "%s", f->detail);
}

int inv_name_is_pg_ident(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 63 || !((s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

/* Kafka's own rule (Topic.validate): 1..249 of [a-zA-Z0-9._-], not "." or "..". */
int inv_name_is_kafka(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 249 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

/* ---- a small field table, for nested objects (jsonspec.h answers for the top level) ---- */

enum ftype { F_STR, F_INT, F_ENUM, F_SECRET, F_OBJ, F_ARR };
struct field {
    const char *name;
    enum ftype type;
    int required;
    long long min, max;         /* INT range; STR length (max 0 = 1024) */
    const char *const *choices; /* ENUM */
    const char *def_str;        /* default filled in when absent (STR/ENUM) */
    long long def_int;          /* INT default when has_def */
    int has_def;
};

static int check_obj(json_t *o, const char *prefix, const struct field *fields, struct inv_fault *f)
{
    char path[160];
    if (!json_is_object(o))
        return inv_fault(f, prefix, "%s must be an object", prefix);
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        const struct field *d = fields;
        while (d->name && strcmp(d->name, key) != 0)
            d++;
        if (!d->name) {
            snprintf(path, sizeof path, "%s.%s", prefix, utf8_valid(key, strlen(key)) ? key : "?");
            return inv_fault(f, path, "%s is not a member of %s", path, prefix);
        }
    }
    for (const struct field *d = fields; d->name; d++) {
        snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", d->name);
        v = json_object_get(o, d->name);
        if (v && json_is_null(v)) {
            json_object_del(o, d->name);
            v = NULL;
        }
        if (!v) {
            if (d->required)
                return inv_fault(f, path, "%s is required", path);
            if (d->def_str)
                json_object_set_new(o, d->name, json_string(d->def_str));
            else if (d->has_def)
                json_object_set_new(o, d->name, json_integer(d->def_int));
            continue;
        }
        switch (d->type) {
        case F_STR:
        case F_ENUM:
        case F_SECRET: {
            if (!json_is_string(v))
                return inv_fault(f, path, "%s must be a string", path);
            const char *s = json_string_value(v);
            size_t len = json_string_length(v);
            long long max = d->max ? d->max : 1024;
            if ((long long)len < d->min || (long long)len > max || memchr(s, '\0', len))
                return inv_fault(f, path, "%s must be %lld to %lld characters without NUL", path,
                                 d->min, max);
            if (d->type == F_ENUM) {
                int ok = 0;
                for (int i = 0; d->choices[i]; i++)
                    ok |= strcmp(d->choices[i], s) == 0;
                if (!ok) {
                    char allowed[256];
                    jspec_choices_text(d->choices, allowed, sizeof allowed);
                    return inv_fault(f, path, "%s must be one of: %s", path, allowed);
                }
            }
            if (d->type == F_SECRET) {
                char why[200];
                if (!inventory_secret_ref_valid(s, why, sizeof why))
                    return inv_fault(f, path, "%s: %s", path, why);
            }
            break;
        }
        case F_INT:
            if (!json_is_integer(v) || json_integer_value(v) < d->min ||
                json_integer_value(v) > d->max)
                return inv_fault(f, path, "%s must be an integer from %lld to %lld", path, d->min,
                                 d->max);
            break;
        case F_OBJ:
            if (!json_is_object(v))
                return inv_fault(f, path, "%s must be an object", path);
            break;
        case F_ARR:
            if (!json_is_array(v))
                return inv_fault(f, path, "%s must be an array", path);
            break;
        }
    }
    return 0;
}

static const char *const sslmodes[] = {"disable",   "allow",       "prefer", "require",
                                       "verify-ca", "verify-full", NULL};
static const char *const protocols[] = {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl", NULL};
static const char *const mechanisms[] = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", NULL};

static const struct field pg_target[] = {
    {"host", F_STR, 1, 1, 255, NULL, NULL, 0, 0},
    {"port", F_INT, 0, 1, 65535, NULL, NULL, 5432, 1},
    {"admin_user", F_STR, 1, 1, 63, NULL, NULL, 0, 0},
    {"admin_secret", F_SECRET, 0, 1, 500, NULL, NULL, 0, 0},
    {"sslmode", F_ENUM, 0, 0, 0, sslmodes, NULL, 0, 0},
    {NULL, 0, 0, 0, 0, NULL, NULL, 0, 0},
};
static const struct field kafka_target[] = {
    {"bootstrap_servers", F_STR, 1, 1, 1000, NULL, NULL, 0, 0},
    {"broker_count", F_INT, 0, 1, 1000, NULL, NULL, 3, 1},
    {"security_protocol", F_ENUM, 0, 0, 0, protocols, "plaintext", 0, 0},
    {"sasl_mechanism", F_ENUM, 0, 0, 0, mechanisms, NULL, 0, 0},
    {"sasl_username", F_STR, 0, 1, 255, NULL, NULL, 0, 0},
    {"sasl_password_secret", F_SECRET, 0, 1, 500, NULL, NULL, 0, 0},
    {"ssl_ca_file", F_STR, 0, 1, 1000, NULL, NULL, 0, 0},
    {NULL, 0, 0, 0, 0, NULL, NULL, 0, 0},
};
static const struct field connect_target[] = {
    {"url", F_STR, 1, 8, 1000, NULL, NULL, 0, 0},
    {NULL, 0, 0, 0, 0, NULL, NULL, 0, 0},
};
static const struct field targets_fields[] = {
    {"postgres", F_OBJ, 0, 0, 0, NULL, NULL, 0, 0},
    {"kafka", F_OBJ, 0, 0, 0, NULL, NULL, 0, 0},
    {"kafka_connect", F_OBJ, 0, 0, 0, NULL, NULL, 0, 0},
    {NULL, 0, 0, 0, 0, NULL, NULL, 0, 0},
};

static int url_ok(const char *u)
{
    return strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0;
}

int inv_check_targets(json_t *t, struct inv_fault *f)
{
    if (check_obj(t, "targets", targets_fields, f) != 0)
        return INV_E_INVALID;
    json_t *pg = json_object_get(t, "postgres"), *k = json_object_get(t, "kafka"),
           *kc = json_object_get(t, "kafka_connect");
    if (pg && check_obj(pg, "targets.postgres", pg_target, f) != 0)
        return INV_E_INVALID;
    if (k && check_obj(k, "targets.kafka", kafka_target, f) != 0)
        return INV_E_INVALID;
    if (k) {
        const char *proto = json_string_value(json_object_get(k, "security_protocol"));
        int sasl = strncmp(proto, "sasl", 4) == 0;
        if (sasl && !json_object_get(k, "sasl_mechanism"))
            return inv_fault(f, "targets.kafka.sasl_mechanism",
                             "targets.kafka.sasl_mechanism is required with %s", proto);
        if (!sasl && json_object_get(k, "sasl_password_secret"))
            return inv_fault(f, "targets.kafka.security_protocol",
                             "a SASL password needs security_protocol sasl_plaintext or sasl_ssl");
    }
    if (kc && check_obj(kc, "targets.kafka_connect", connect_target, f) != 0)
        return INV_E_INVALID;
    if (kc && !url_ok(json_string_value(json_object_get(kc, "url"))))
        return inv_fault(f, "targets.kafka_connect.url",
                         "targets.kafka_connect.url must be an http:// or https:// URL");
    return 0;
}

/* ---- databases ---- */

static const char *const pool_modes[] = {"transaction", "session", "statement", NULL};
static const struct field db_conn_fields[] = {
    {"host", F_STR, 0, 1, 255, NULL, NULL, 0, 0},
    {"port", F_INT, 0, 1, 65535, NULL, NULL, 0, 0},
    {"admin_user", F_STR, 0, 1, 63, NULL, NULL, 0, 0},
    {"admin_secret", F_SECRET, 0, 1, 500, NULL, NULL, 0, 0},
    {"sslmode", F_ENUM, 0, 0, 0, sslmodes, NULL, 0, 0},
    {NULL, 0, 0, 0, 0, NULL, NULL, 0, 0},
};

int inv_check_database(struct db_conn *c, json_t *d, struct inv_fault *f)
{
    static const struct field fields[] = {
        {"id", F_INT, 0, 0, INT64_MAX, NULL, NULL, 0, 0},
        {"environment", F_STR, 1, 1, 32, NULL, NULL, 0, 0},
        {"name", F_STR, 1, 1, 63, NULL, NULL, 0, 0},
        {"engine_version", F_STR, 0, 1, 15, NULL, "16", 0, 0},
        {"purpose", F_STR, 0, 0, 500, NULL, "", 0, 0},
        {"ha_strategy", F_STR, 0, 0, 500, NULL, "", 0, 0},
        {"storage_initial_gb", F_INT, 1, 1, 1000000, NULL, NULL, 0, 0},
        {"storage_max_gb", F_INT, 1, 1, 1000000, NULL, NULL, 0, 0},
        {"owner", F_STR, 0, 1, 63, NULL, NULL, 0, 0},
        {"primary", F_OBJ, 0, 0, 0, NULL, NULL, 0, 0},
        {"standby", F_OBJ, 0, 0, 0, NULL, NULL, 0, 0},
        {"settings", F_OBJ, 0, 0, 0, NULL, NULL, 0, 0},
        {"pool_mode", F_ENUM, 0, 0, 0, pool_modes, "transaction", 0, 0},
        {"pool_size", F_INT, 0, 1, 10000, NULL, NULL, 20, 1},
        {"max_client_connections", F_INT, 0, 1, 100000, NULL, NULL, 100, 1},
        {"cdc_tables", F_ARR, 0, 0, 0, NULL, NULL, 0, 0},
        {"publication", F_STR, 0, 1, 63, NULL, "qdb_one_cdc", 0, 0},
        {"created_at", F_STR, 0, 0, 64, NULL, NULL, 0, 0},
        {"updated_at", F_STR, 0, 0, 64, NULL, NULL, 0, 0},
        {NULL, 0, 0, 0, 0, NULL, NULL, 0, 0},
    };
    if (check_obj(d, "", fields, f) != 0)
        return INV_E_INVALID;
    const char *name = json_string_value(json_object_get(d, "name"));
    if (!inv_name_is_pg_ident(name))
        return inv_fault(f, "name",
                         "name must be a PostgreSQL name: 1 to 63 of a-z, 0-9 and _, "
                         "not starting with a digit");
    if (!json_object_get(d, "owner"))
        json_object_set_new(d, "owner", json_string(name));
    if (!inv_name_is_pg_ident(json_string_value(json_object_get(d, "owner"))))
        return inv_fault(f, "owner", "owner must be a PostgreSQL role name (a-z, 0-9, _)");
    if (!inv_name_is_pg_ident(json_string_value(json_object_get(d, "publication"))))
        return inv_fault(f, "publication", "publication must be a PostgreSQL name (a-z, 0-9, _)");
    if (json_integer_value(json_object_get(d, "storage_max_gb")) <
        json_integer_value(json_object_get(d, "storage_initial_gb")))
        return inv_fault(f, "storage_max_gb",
                         "storage_max_gb must not be below storage_initial_gb");
    if (!json_object_get(d, "primary"))
        json_object_set_new(d, "primary", json_object());
    if (check_obj(json_object_get(d, "primary"), "primary", db_conn_fields, f) != 0)
        return INV_E_INVALID;
    json_t *sb = json_object_get(d, "standby");
    if (sb && check_obj(sb, "standby", db_conn_fields, f) != 0)
        return INV_E_INVALID;
    if (sb && !json_object_get(sb, "host"))
        return inv_fault(f, "standby.host", "a standby needs its own host");
    if (!sb)
        json_object_set_new(d, "standby", json_null());
    if (!json_object_get(d, "settings"))
        json_object_set_new(d, "settings", json_object());
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(d, "settings"), key, v)
    {
        char path[160];
        snprintf(path, sizeof path, "settings.%.64s", utf8_valid(key, strlen(key)) ? key : "?");
        if (!inv_name_is_pg_ident(key))
            return inv_fault(f, path, "a setting's name is a PostgreSQL parameter name (a-z, _)");
        if (!json_is_string(v) || json_string_length(v) < 1 || json_string_length(v) > 200 ||
            memchr(json_string_value(v), '\0', json_string_length(v)))
            return inv_fault(f, path, "%s must be a string of 1 to 200 characters", path);
    }
    if (!json_object_get(d, "cdc_tables"))
        json_object_set_new(d, "cdc_tables", json_array());
    size_t i;
    json_array_foreach(json_object_get(d, "cdc_tables"), i, v)
    {
        char path[64];
        snprintf(path, sizeof path, "cdc_tables[%zu]", i);
        if (!json_is_string(v) || !inv_name_is_pg_ident(json_string_value(v)))
            return inv_fault(f, path, "%s must be a table name of the public schema (a-z, 0-9, _)",
                             path);
    }
    int rc = environment_exists(c, json_string_value(json_object_get(d, "environment")));
    if (rc < 0)
        return rc;
    if (rc == 0)
        return inv_fault(f, "environment", "no environment %s",
                         json_string_value(json_object_get(d, "environment")));
    return 0;
}

/* ---- topics, groups, connectors ---- */

static const char *const compressions[] = {"lz4",      "zstd",         "snappy", "gzip",
                                           "producer", "uncompressed", NULL};

int inv_check_topic(struct db_conn *c, json_t *d, struct inv_fault *f)
{
    static const struct field fields[] = {
        {"name", F_STR, 1, 1, 300, NULL, NULL, 0, 0},
        {"group", F_STR, 0, 0, 100, NULL, "", 0, 0},
        {"partitions", F_INT, 0, INT64_MIN, INT64_MAX, NULL, NULL, 6, 1},
        {"replication_factor", F_INT, 0, INT64_MIN, INT64_MAX, NULL, NULL, 3, 1},
        {"min_insync_replicas", F_INT, 0, INT64_MIN, INT64_MAX, NULL, NULL, 2, 1},
        {"retention_ms", F_INT, 0, 60000, INT64_MAX / 2, NULL, NULL, 604800000, 1},
        {"retention_by_environment", F_OBJ, 0, 0, 0, NULL, NULL, 0, 0},
        {"compression", F_ENUM, 0, 0, 0, compressions, "lz4", 0, 0},
        {"segment_bytes", F_INT, 0, 1048576, INT32_MAX, NULL, NULL, 1073741824, 1},
        {"created_at", F_STR, 0, 0, 64, NULL, NULL, 0, 0},
        {"updated_at", F_STR, 0, 0, 64, NULL, NULL, 0, 0},
        {NULL, 0, 0, 0, 0, NULL, NULL, 0, 0},
    };
    if (check_obj(d, "", fields, f) != 0)
        return INV_E_INVALID;
    if (!inv_name_is_kafka(json_string_value(json_object_get(d, "name"))))
        return inv_fault(f, "name",
                         "Kafka refuses this topic name: 1 to 249 of a-z, A-Z, 0-9, "
                         "'.', '_' and '-', and not '.' or '..'");
    json_int_t parts = json_integer_value(json_object_get(d, "partitions"));
    json_int_t rf = json_integer_value(json_object_get(d, "replication_factor"));
    json_int_t isr = json_integer_value(json_object_get(d, "min_insync_replicas"));
    if (parts < 1 || parts > 10000)
        return inv_fault(f, "partitions", "partitions must be from 1 to 10000");
    int64_t brokers = 3;
    int rc = inv_store_max_brokers(c, &brokers);
    if (rc < 0)
        return rc;
    if (rf < 1 || rf > brokers)
        return inv_fault(f, "replication_factor",
                         "replication_factor must be from 1 to the broker count (%lld)",
                         (long long)brokers);
    if (isr < 1 || isr > rf)
        return inv_fault(f, "min_insync_replicas",
                         "min_insync_replicas must be from 1 to the replication factor (%lld)",
                         (long long)rf);
    json_t *by = json_object_get(d, "retention_by_environment");
    if (!by)
        json_object_set_new(d, "retention_by_environment", by = json_object());
    const char *env;
    json_t *v;
    json_object_foreach(by, env, v)
    {
        char path[128];
        snprintf(path, sizeof path, "retention_by_environment.%.32s",
                 utf8_valid(env, strlen(env)) ? env : "?");
        rc = environment_exists(c, env);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return inv_fault(f, path, "no environment %.32s", path + 25);
        if (!json_is_integer(v) || json_integer_value(v) < 60000)
            return inv_fault(f, path, "%s must be an integer of at least 60000 (ms)", path);
    }
    return 0;
}

int inv_check_group(json_t *d, struct inv_fault *f)
{
    static const struct field fields[] = {
        {"name", F_STR, 1, 1, 300, NULL, NULL, 0, 0},
        {"topics", F_ARR, 0, 0, 0, NULL, NULL, 0, 0},
        {"instances", F_INT, 0, 1, 10000, NULL, NULL, 1, 1},
        {"processing", F_STR, 0, 0, 500, NULL, "", 0, 0},
        {"lag_threshold", F_INT, 0, 0, INT64_MAX / 2, NULL, NULL, 1000, 1},
        {"created_at", F_STR, 0, 0, 64, NULL, NULL, 0, 0},
        {"updated_at", F_STR, 0, 0, 64, NULL, NULL, 0, 0},
        {NULL, 0, 0, 0, 0, NULL, NULL, 0, 0},
    };
    if (check_obj(d, "", fields, f) != 0)
        return INV_E_INVALID;
    if (!inv_name_is_kafka(json_string_value(json_object_get(d, "name"))))
        return inv_fault(f, "name",
                         "a consumer group name is 1 to 249 of a-z, A-Z, 0-9, '.', "
                         "'_' and '-'");
    if (!json_object_get(d, "topics"))
        json_object_set_new(d, "topics", json_array());
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(d, "topics"), i, v)
    {
        char path[64];
        snprintf(path, sizeof path, "topics[%zu]", i);
        const char *s = json_string_value(v);
        size_t n = s ? strlen(s) : 0;
        /* a name, or a pattern ending in ".*" ("app.*") */
        char base[256];
        snprintf(base, sizeof base, "%s", s ? s : "");
        if (n > 2 && strcmp(base + n - 2, ".*") == 0)
            base[n - 2] = '\0';
        if (!s || n > 249 || !inv_name_is_kafka(base))
            return inv_fault(f, path, "%s must be a topic name or a prefix pattern such as app.*",
                             path);
    }
    return 0;
}

/* Debezium and Connect config members that hold credentials: they must be a ${...}
 * placeholder resolved by Connect's config provider, never a value we would store. */
static int is_credential_key(const char *k)
{
    static const char *const suffixes[] = {"password", "secret", "jaas.config", "api.key", NULL};
    size_t n = strlen(k);
    for (int i = 0; suffixes[i]; i++) {
        size_t m = strlen(suffixes[i]);
        if (n >= m && strcmp(k + n - m, suffixes[i]) == 0)
            return 1;
    }
    return 0;
}

int inv_check_connector(json_t *d, struct inv_fault *f)
{
    static const struct field fields[] = {
        {"name", F_STR, 1, 1, 300, NULL, NULL, 0, 0},
        {"config", F_OBJ, 1, 0, 0, NULL, NULL, 0, 0},
        {"created_at", F_STR, 0, 0, 64, NULL, NULL, 0, 0},
        {"updated_at", F_STR, 0, 0, 64, NULL, NULL, 0, 0},
        {NULL, 0, 0, 0, 0, NULL, NULL, 0, 0},
    };
    if (check_obj(d, "", fields, f) != 0)
        return INV_E_INVALID;
    const char *name = json_string_value(json_object_get(d, "name"));
    if (strlen(name) > 200 || !inv_name_is_kafka(name))
        return inv_fault(f, "name", "a connector name is 1 to 200 of a-z, A-Z, 0-9, '.', '_', '-'");
    json_t *cfg = json_object_get(d, "config");
    if (!json_is_string(json_object_get(cfg, "connector.class")))
        return inv_fault(f, "config.connector.class", "config.connector.class is required");
    const char *key;
    json_t *v;
    json_object_foreach(cfg, key, v)
    {
        char path[200];
        snprintf(path, sizeof path, "config.%.150s", utf8_valid(key, strlen(key)) ? key : "?");
        if (!json_is_string(v) || json_string_length(v) > 4000 ||
            memchr(json_string_value(v), '\0', json_string_length(v)))
            return inv_fault(f, path, "Connect takes string values: %s must be a string", path);
        const char *s = json_string_value(v);
        if (is_credential_key(key) && !(strncmp(s, "${", 2) == 0 && s[strlen(s) - 1] == '}'))
            return inv_fault(f, path,
                             "%s holds a credential: give a ${vault:...} placeholder, not a value",
                             path);
    }
    return 0;
}
