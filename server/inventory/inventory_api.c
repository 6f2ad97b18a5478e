/* HTTP handlers of environments (the 6.2 matrix and targets) and managed databases: parse,
 * check, call the store with the audit record and the event in the same transaction,
 * shape the reply. Kafka resources are in inventory_kafka_api.c, the plan in
 * inventory_plan.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "auth/auth.h"
#include "inventory/inventory_internal.h"
#include "platform/buf.h"
#include "platform/environment.h"
#include "platform/jsonspec.h"
#include "platform/queryspec.h"

/* The environment named by the path, or a 404 reply (NULL). An unknown name, and one that
 * is no environment name at all, are both "not found". */
static const char *env_param(struct http_request *req, struct db_conn *c)
{
    const char *env = http_param(req, "env");
    int rc = environment_exists(c, env);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return NULL;
    }
    if (rc == 0) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no environment %.64s", env);
        return NULL;
    }
    return env;
}

/* The platform's environment with the inventory's config and targets. */
static int env_doc(struct db_conn *c, const char *env, json_t **out)
{
    json_t *base = NULL, *inv = NULL;
    int rc = environment_get_json(c, env, &base);
    if (rc > 0)
        rc = inv_store_env_get(c, env, &inv);
    if (rc > 0)
        json_object_update(base, inv);
    json_decref(inv);
    if (rc > 0)
        *out = base;
    else
        json_decref(base);
    return rc;
}

void inventory_api_environment_get(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    const char *env = env_param(req, c);
    if (!env)
        return;
    json_t *doc = NULL;
    int rc = env_doc(c, env, &doc);
    if (rc <= 0)
        http_reply_db_error(req, rc < 0 ? rc : DB_HARD);
    else
        http_reply_json(req, 200, doc);
}

struct env_tx {
    struct http_request *req;
    const char *env;
    json_t *config, *targets; /* borrowed; targets is the whole new targets object */
    json_t *after;
};

static int env_patch_fn(struct db_conn *c, void *cls)
{
    struct env_tx *t = cls;
    json_t *before = NULL;
    int rc = env_doc(c, t->env, &before);
    if (rc == 0)
        rc = INV_E_NOT_FOUND;
    if (rc < 0)
        goto out;
    rc = inv_store_env_update(c, t->env, t->config, t->targets);
    if (rc < 0)
        goto out;
    json_decref(t->after);
    t->after = NULL;
    rc = env_doc(c, t->env, &t->after);
    if (rc <= 0) {
        rc = rc < 0 ? rc : DB_HARD;
        goto out;
    }
    struct audit_entry e = {.action = "environment.update",
                            .resource_type = "environment",
                            .resource_id = t->env,
                            .environment = t->env,
                            .before = before,
                            .after = t->after};
    rc = audit_record_http(c, t->req, &e);
    char subject[80];
    snprintf(subject, sizeof subject, "environments/%s", t->env);
    if (rc >= 0)
        rc = audit_event_emit_http(c, t->req,
                                   &(struct audit_event){.room = "inventory",
                                                         .verb = "environment_updated",
                                                         .subject = subject,
                                                         .data = t->after});
out:
    json_decref(before);
    return rc;
}

/* PATCH body: {"config": {...some matrix members}, "targets": {"postgres": {...} | null,
 * "kafka": ..., "kafka_connect": ...}}. A target given replaces that target whole; null
 * removes it; one left out is kept. */
void inventory_api_environment_patch(struct http_request *req)
{
    json_t *config = NULL, *targets = NULL;
    const struct jspec_field f[] = {
        {"config", JSPEC_OBJECT, 0, 0, 0, NULL, &config, NULL},
        {"targets", JSPEC_OBJECT, 0, 0, 0, NULL, &targets, NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, http_body(req), f, NULL, 0) != 0)
        return;
    if (config) {
        /* the matrix: strings, and the Kafka retention cap in milliseconds */
        const char *s = NULL;
        int64_t ms = 0;
        const struct jspec_field cf[] = {
            {"kafka_retention_ms", JSPEC_INT, 0, 60000, INT64_MAX / 2, NULL, &ms, NULL},
            {"log_retention", JSPEC_STRING, 0, 1, 200, NULL, &s, NULL},
            {"audit_retention", JSPEC_STRING, 0, 1, 200, NULL, &s, NULL},
            {"tls", JSPEC_STRING, 0, 1, 200, NULL, &s, NULL},
            {"keycloak_realm", JSPEC_STRING, 0, 1, 200, NULL, &s, NULL},
            {"nas_integration", JSPEC_STRING, 0, 1, 500, NULL, &s, NULL},
            {"moci_integration", JSPEC_STRING, 0, 1, 500, NULL, &s, NULL},
            {"qfc_integration", JSPEC_STRING, 0, 1, 500, NULL, &s, NULL},
            {"feature_flags", JSPEC_STRING, 0, 1, 200, NULL, &s, NULL},
            JSPEC_END,
        };
        char why[512];
        if (jspec_parse(NULL, config, cf, why, sizeof why) != 0) {
            struct inv_fault fl = {"", ""};
            inv_fault(&fl, "config", "config: %s", why);
            inv_reply_fault(req, &fl);
            return;
        }
    }
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    const char *env = env_param(req, c);
    if (!env || auth_require_environment(req, env) != 0)
        return;
    json_t *merged = NULL;
    if (targets) {
        json_t *cur = NULL;
        int rc = inv_store_env_get(c, env, &cur);
        if (rc <= 0) {
            http_reply_db_error(req, rc < 0 ? rc : DB_HARD);
            return;
        }
        merged = json_deep_copy(json_object_get(cur, "targets"));
        json_decref(cur);
        const char *k;
        json_t *v;
        json_object_foreach(targets, k, v)
        {
            if (json_is_null(v))
                json_object_del(merged, k);
            else
                json_object_set(merged, k, v);
        }
        struct inv_fault fl = {"", ""};
        if (inv_check_targets(merged, &fl) != 0) {
            json_decref(merged);
            inv_reply_fault(req, &fl);
            return;
        }
    }
    struct env_tx t = {.req = req, .env = env, .config = config, .targets = merged};
    int rc = db_tx(c, env_patch_fn, &t);
    json_decref(merged);
    if (rc == INV_E_NOT_FOUND)
        http_reply_problem(req, QDB_E_NOT_FOUND, "no environment %s", env);
    else if (rc < 0)
        http_reply_db_error(req, rc);
    else {
        http_reply_json(req, 200, t.after);
        return;
    }
    json_decref(t.after);
}

/* ---- GET /api/v1/environments/{env}/pgbouncer.ini ---- */

/* PgBouncer takes ini values up to the end of the line: nothing we print may contain a
 * line break or a character that starts a comment or a new key. */
static int ini_safe(const char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r' || *s == ';' || *s == '#' || *s == '=' || *s == ' ')
            return 0;
    return 1;
}

void inventory_api_pgbouncer_ini(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    const char *env = env_param(req, c);
    if (!env)
        return;
    json_t *items = NULL, *targets = NULL;
    int64_t cap = 0;
    int rc = inv_store_db_list(c, env, &items);
    if (rc > 0)
        rc = inv_env_targets(c, env, &targets, &cap);
    if (rc <= 0) {
        json_decref(items);
        http_reply_db_error(req, rc < 0 ? rc : DB_HARD);
        return;
    }
    json_t *env_pg = json_object_get(targets, "postgres");
    struct buf b;
    int bad = 0;
    buf_init(&b, 64 * 1024);
    bad |= buf_printf(
        &b,
        "; PgBouncer configuration of environment %s, rendered by qdb-control from the\n"
        "; inventory (section 2.4). Credentials are never written here: PgBouncer looks\n"
        "; each user up with auth_query as auth_user, whose own secret is mounted into\n"
        "; auth_file by the deployment.\n\n[databases]\n",
        env);
    size_t i;
    json_t *d;
    long long clients = 0;
    json_array_foreach(items, i, d)
    {
        struct inventory_pg_endpoint ep;
        const char *name = json_string_value(json_object_get(d, "name"));
        if (inv_endpoint_from(json_object_get(d, "primary"), env_pg, &ep) != 0 ||
            !ini_safe(ep.host)) {
            bad |= buf_printf(&b,
                              "; %s: no primary host known (set the environment's postgres "
                              "target or the database's primary.host)\n",
                              name);
            continue;
        }
        long long maxc = json_integer_value(json_object_get(d, "max_client_connections"));
        clients += maxc;
        bad |= buf_printf(&b,
                          "%s = host=%s port=%d dbname=%s pool_mode=%s pool_size=%lld "
                          "max_db_client_connections=%lld\n",
                          name, ep.host, ep.port, name,
                          json_string_value(json_object_get(d, "pool_mode")),
                          (long long)json_integer_value(json_object_get(d, "pool_size")), maxc);
    }
    bad |= buf_printf(&b,
                      "\n[pgbouncer]\nlisten_addr = 0.0.0.0\nlisten_port = 6432\n"
                      "auth_type = scram-sha-256\nauth_user = pgbouncer_auth\n"
                      "auth_file = /etc/pgbouncer/userlist.txt\n"
                      "auth_query = SELECT usename, passwd FROM pgbouncer.get_auth($1)\n"
                      "max_client_conn = %lld\n",
                      clients > 0 ? clients : 100);
    json_decref(items);
    json_decref(targets);
    if (bad) {
        buf_free(&b);
        http_reply_problem(req, QDB_E_INTERNAL, "the configuration did not fit");
        return;
    }
    size_t len = b.len;
    http_reply_data_take(req, 200, "text/plain; charset=utf-8", buf_take(&b), len);
}

/* ---- databases ---- */

static int db_id_param(struct http_request *req, int64_t *id)
{
    const char *s = http_param(req, "id");
    char *end = NULL;
    long long v = s && s[0] >= '1' && s[0] <= '9' ? strtoll(s, &end, 10) : 0;
    if (!end || *end || v <= 0 || strlen(s) > 18) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no database %.40s", s ? s : "");
        return -1;
    }
    *id = v;
    return 0;
}

void inventory_api_databases_list(struct http_request *req)
{
    const char *env = NULL;
    const struct qspec_param q[] = {
        {"environment", QSPEC_STRING, 0, 1, 32, NULL, &env, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *items = NULL;
    int rc = inv_store_db_list(c, env, &items);
    if (rc <= 0)
        http_reply_db_error(req, rc < 0 ? rc : DB_HARD);
    else
        http_reply_json(req, 200, json_pack("{s:o}", "items", items));
}

void inventory_api_databases_get(struct http_request *req)
{
    int64_t id;
    if (db_id_param(req, &id) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *doc = NULL;
    int rc = inv_store_db_get(c, id, &doc);
    if (rc < 0)
        http_reply_db_error(req, rc);
    else if (rc == 0)
        http_reply_problem(req, QDB_E_NOT_FOUND, "no database %lld", (long long)id);
    else
        http_reply_json(req, 200, doc);
}

struct db_tx {
    struct http_request *req;
    int op; /* 0 create, 1 update, 2 delete */
    int64_t id;
    json_t *doc;   /* the checked document to write (borrowed) */
    json_t *after; /* the database after the change */
    struct inv_fault fault;
};

static int db_change_fn(struct db_conn *c, void *cls)
{
    struct db_tx *t = cls;
    json_t *before = NULL;
    int rc = 0;
    if (t->op != 0) {
        rc = inv_store_db_get(c, t->id, &before);
        if (rc == 0)
            rc = INV_E_NOT_FOUND;
        if (rc < 0)
            goto out;
    }
    if (t->op == 0)
        rc = inv_store_db_insert(c, t->doc, &t->id);
    else if (t->op == 1)
        rc = inv_store_db_update(c, t->id, t->doc);
    else
        rc = inv_store_db_delete(c, t->id);
    if (rc < 0)
        goto out;
    json_decref(t->after);
    t->after = NULL;
    if (t->op != 2) {
        rc = inv_store_db_get(c, t->id, &t->after);
        if (rc <= 0) {
            rc = rc < 0 ? rc : DB_HARD;
            goto out;
        }
    }
    static const char *const actions[] = {"database.create", "database.update", "database.delete"};
    static const char *const verbs[] = {"database_created", "database_updated", "database_deleted"};
    char id[24], subject[64];
    db_int64(id, t->id);
    snprintf(subject, sizeof subject, "databases/%s", id);
    const json_t *cur = t->after ? t->after : before;
    struct audit_entry e = {.action = actions[t->op],
                            .resource_type = "database",
                            .resource_id = id,
                            .environment = json_string_value(json_object_get(cur, "environment")),
                            .before = before,
                            .after = t->after};
    rc = audit_record_http(c, t->req, &e);
    if (rc >= 0)
        rc = audit_event_emit_http(
            c, t->req,
            &(struct audit_event){
                .room = "inventory", .verb = verbs[t->op], .subject = subject, .data = cur});
out:
    json_decref(before);
    return rc;
}

static void db_reply(struct http_request *req, struct db_tx *t, int rc)
{
    if (rc == INV_E_NOT_FOUND)
        http_reply_problem(req, QDB_E_NOT_FOUND, "no database %lld", (long long)t->id);
    else if (rc == DB_UNIQUE)
        http_reply_problem(req, QDB_E_CONFLICT, "environment %s has a database %s already",
                           json_string_value(json_object_get(t->doc, "environment")),
                           json_string_value(json_object_get(t->doc, "name")));
    else if (rc < 0)
        http_reply_db_error(req, rc);
    else if (t->op == 2)
        http_reply_empty(req, 204);
    else {
        if (t->op == 0) {
            char loc[64];
            snprintf(loc, sizeof loc, "/api/v1/databases/%lld", (long long)t->id);
            http_reply_header(req, "Location", loc);
        }
        http_reply_json(req, t->op == 0 ? 201 : 200, t->after);
        return;
    }
    json_decref(t->after);
}

void inventory_api_databases_create(struct http_request *req)
{
    json_t *body = http_body(req);
    if (!json_is_object(body) || json_object_get(body, "id") ||
        json_object_get(body, "created_at") || json_object_get(body, "updated_at")) {
        http_reply_invalid(req, json_is_object(body) ? "id" : "(body)",
                           "a database document without id, created_at or updated_at");
        return;
    }
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *doc = json_deep_copy(body);
    struct db_tx t = {.req = req, .op = 0, .doc = doc};
    int rc = inv_check_database(c, doc, &t.fault);
    if (rc == INV_E_INVALID) {
        inv_reply_fault(req, &t.fault);
        json_decref(doc);
        return;
    }
    if (rc == 0 && auth_require_environment(
                       req, json_string_value(json_object_get(doc, "environment"))) != 0) {
        json_decref(doc);
        return;
    }
    if (rc == 0)
        rc = db_tx(c, db_change_fn, &t);
    db_reply(req, &t, rc);
    json_decref(doc);
}

/* PATCH: a JSON merge patch (RFC 7396) of the database's document; the result is checked
 * whole, as a create is. */
void inventory_api_databases_patch(struct http_request *req)
{
    int64_t id;
    if (db_id_param(req, &id) != 0)
        return;
    json_t *patch = http_body(req);
    if (!json_is_object(patch)) {
        http_reply_invalid(req, "(body)", "the body must be a JSON object");
        return;
    }
    static const char *const fixed[] = {"id", "environment", "created_at", "updated_at", NULL};
    for (int i = 0; fixed[i]; i++)
        if (json_object_get(patch, fixed[i])) {
            http_reply_invalid(req, fixed[i], "%s cannot be changed", fixed[i]);
            return;
        }
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *cur = NULL;
    int rc = inv_store_db_get(c, id, &cur);
    if (rc <= 0) {
        if (rc < 0)
            http_reply_db_error(req, rc);
        else
            http_reply_problem(req, QDB_E_NOT_FOUND, "no database %lld", (long long)id);
        return;
    }
    if (auth_require_environment(req, json_string_value(json_object_get(cur, "environment"))) !=
        0) {
        json_decref(cur);
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(patch, k, v)
    {
        json_t *old = json_object_get(cur, k);
        if (json_is_object(v) && json_is_object(old) && strcmp(k, "settings") != 0) {
            json_t *m = json_deep_copy(old);
            const char *k2;
            json_t *v2;
            json_object_foreach(v, k2, v2)
            {
                if (json_is_null(v2))
                    json_object_del(m, k2);
                else
                    json_object_set(m, k2, v2);
            }
            json_object_set_new(cur, k, m);
        } else if (json_is_null(v)) {
            json_object_del(cur, k);
        } else {
            json_object_set(cur, k, v);
        }
    }
    json_object_del(cur, "created_at");
    json_object_del(cur, "updated_at");
    struct db_tx t = {.req = req, .op = 1, .id = id, .doc = cur};
    rc = inv_check_database(c, cur, &t.fault);
    if (rc == INV_E_INVALID) {
        inv_reply_fault(req, &t.fault);
        json_decref(cur);
        return;
    }
    if (rc == 0)
        rc = db_tx(c, db_change_fn, &t);
    db_reply(req, &t, rc);
    json_decref(cur);
}

void inventory_api_databases_delete(struct http_request *req)
{
    int64_t id;
    if (db_id_param(req, &id) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *cur = NULL;
    int rc = inv_store_db_get(c, id, &cur);
    if (rc > 0 && auth_require_environment(
                      req, json_string_value(json_object_get(cur, "environment"))) != 0) {
        json_decref(cur);
        return;
    }
    json_decref(cur);
    struct db_tx t = {.req = req, .op = 2, .id = id};
    rc = rc < 0 ? rc : db_tx(c, db_change_fn, &t);
    db_reply(req, &t, rc);
}

/* ---- the door for other rooms ---- */

int inv_env_targets(struct db_conn *c, const char *env, json_t **targets, int64_t *cap)
{
    json_t *doc = NULL;
    int rc = inv_store_env_get(c, env, &doc);
    if (rc <= 0)
        return rc;
    *targets = json_incref(json_object_get(doc, "targets"));
    *cap =
        json_integer_value(json_object_get(json_object_get(doc, "config"), "kafka_retention_ms"));
    json_decref(doc);
    return 1;
}

static void copy_str(char *out, size_t n, const json_t *a, const json_t *b, const char *key)
{
    const char *s = json_string_value(json_object_get(a, key));
    if (!s)
        s = json_string_value(json_object_get(b, key));
    snprintf(out, n, "%s", s ? s : "");
}

int inv_endpoint_from(const json_t *conn, const json_t *env_pg, struct inventory_pg_endpoint *ep)
{
    memset(ep, 0, sizeof *ep);
    copy_str(ep->host, sizeof ep->host, conn, env_pg, "host");
    copy_str(ep->admin_user, sizeof ep->admin_user, conn, env_pg, "admin_user");
    copy_str(ep->admin_secret, sizeof ep->admin_secret, conn, env_pg, "admin_secret");
    copy_str(ep->sslmode, sizeof ep->sslmode, conn, env_pg, "sslmode");
    json_t *port = json_object_get(conn, "port");
    if (!port)
        port = json_object_get(env_pg, "port");
    ep->port = port ? (int)json_integer_value(port) : 5432;
    if (!ep->admin_user[0])
        snprintf(ep->admin_user, sizeof ep->admin_user, "postgres");
    return ep->host[0] ? 0 : -1;
}

int inventory_database_lookup(struct db_conn *conn, int64_t id, const char *environment,
                              const char *name, struct inventory_database *out)
{
    json_t *doc = NULL, *targets = NULL;
    int64_t cap;
    int rc = inv_store_db_resolve(conn, id, environment, name, &doc);
    if (rc <= 0)
        return rc;
    const char *env = json_string_value(json_object_get(doc, "environment"));
    rc = inv_env_targets(conn, env, &targets, &cap);
    if (rc < 0) {
        json_decref(doc);
        return rc;
    }
    memset(out, 0, sizeof *out);
    out->id = json_integer_value(json_object_get(doc, "id"));
    snprintf(out->environment, sizeof out->environment, "%s", env);
    snprintf(out->name, sizeof out->name, "%s", json_string_value(json_object_get(doc, "name")));
    snprintf(out->owner, sizeof out->owner, "%s", json_string_value(json_object_get(doc, "owner")));
    snprintf(out->engine_version, sizeof out->engine_version, "%s",
             json_string_value(json_object_get(doc, "engine_version")));
    json_t *env_pg = json_object_get(targets, "postgres");
    inv_endpoint_from(json_object_get(doc, "primary"), env_pg, &out->primary);
    json_t *sb = json_object_get(doc, "standby");
    if (json_is_object(sb)) {
        out->has_standby = 1;
        inv_endpoint_from(sb, env_pg, &out->standby);
    }
    json_decref(doc);
    json_decref(targets);
    return 1;
}
