/* A managed database on its target server, through libpq with the admin secret: what is
 * there (for the plan) and making it so (provision_database). The state store's rules hold
 * for reads (parameters only). DDL cannot take parameters (CREATE ROLE, CREATE DATABASE,
 * ALTER DATABASE SET, CREATE PUBLICATION name identifiers), so its identifiers are names
 * the inventory checked as [a-z_][a-z0-9_]* and are still quoted with PQescapeIdentifier,
 * and setting values with PQescapeLiteral: nothing from a request reaches the target
 * unquoted. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inventory/inventory_internal.h"

PGconn *inventory_pg_connect(const struct inventory_pg_endpoint *ep, const char *dbname,
                             int timeout_s, char *err, size_t errlen)
{
    char port[16], timeout[16], secret[1024] = "";
    snprintf(port, sizeof port, "%d", ep->port);
    snprintf(timeout, sizeof timeout, "%d", timeout_s < 1 ? 1 : timeout_s);
    if (ep->admin_secret[0] &&
        inventory_secret_resolve(ep->admin_secret, secret, sizeof secret, err, errlen) != 0)
        return NULL;
    const char *keys[9], *vals[9];
    int n = 0;
    keys[n] = "host", vals[n++] = ep->host;
    keys[n] = "port", vals[n++] = port;
    keys[n] = "user", vals[n++] = ep->admin_user;
    keys[n] = "dbname", vals[n++] = dbname;
    keys[n] = "connect_timeout", vals[n++] = timeout;
    keys[n] = "application_name", vals[n++] = "qdb-control-inventory";
    if (secret[0])
        keys[n] = "password", vals[n++] = secret;
    if (ep->sslmode[0])
        keys[n] = "sslmode", vals[n++] = ep->sslmode;
    keys[n] = NULL, vals[n] = NULL;
    PGconn *pg = PQconnectdbParams(keys, vals, 0);
    inventory_secret_wipe(secret, sizeof secret);
    if (!pg || PQstatus(pg) != CONNECTION_OK) {
        /* libpq's message names host, port and user, never the password */
        snprintf(err, errlen, "%s:%d/%s: %s", ep->host, ep->port, dbname,
                 pg ? PQerrorMessage(pg) : "out of memory");
        size_t l = strlen(err);
        while (l && (err[l - 1] == '\n' || err[l - 1] == ' '))
            err[--l] = '\0';
        PQfinish(pg);
        return NULL;
    }
    /* keep every statement on the target bounded */
    PGresult *r = PQexec(pg, "SET statement_timeout = '30s'");
    PQclear(r);
    return pg;
}

/* A one-parameter (or none) query; returns the result (caller PQclears) or NULL with err. */
static PGresult *q1(PGconn *pg, const char *sql, const char *param, char *err, size_t errlen)
{
    const char *p[1] = {param};
    PGresult *r = PQexecParams(pg, sql, param ? 1 : 0, NULL, param ? p : NULL, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(pg));
        PQclear(r);
        return NULL;
    }
    return r;
}

static int exists(PGconn *pg, const char *sql, const char *param, char *err, size_t errlen)
{
    PGresult *r = q1(pg, sql, param, err, errlen);
    if (!r)
        return -1;
    int n = PQntuples(r);
    PQclear(r);
    return n > 0;
}

/* DDL: `fmt` holds %s for already-quoted identifiers/literals. */
static int ddl(PGconn *pg, const char *text, char *err, size_t errlen)
{
    PGresult *r = PQexec(pg, text);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        snprintf(err, errlen, "%s", PQerrorMessage(pg));
    PQclear(r);
    return ok ? 0 : -1;
}

static char *ident(PGconn *pg, const char *s)
{
    return PQescapeIdentifier(pg, s, strlen(s));
}

static void add_diff(json_t *diffs, const char *difference, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_diff(json_t *diffs, const char *difference, const char *fmt, ...)
{
    if (!diffs)
        return;
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    json_array_append_new(diffs,
                          json_pack("{s:s,s:s}", "difference", difference, "detail", detail));
}

static void step(json_t *steps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void step(json_t *steps, const char *fmt, ...)
{
    char text[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (steps)
        json_array_append_new(steps, json_string(text));
}

/* The database's per-database settings as stored ("work_mem=64MB" entries), as a JSON
 * array (new reference) or NULL on error. */
static json_t *db_config(PGconn *pg, const char *db, char *err, size_t errlen)
{
    PGresult *r = q1(pg,
                     "SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_database d "
                     "ON d.oid = s.setdatabase WHERE d.datname = $1 AND s.setrole = 0",
                     db, err, errlen);
    if (!r)
        return NULL;
    json_t *a = json_array();
    for (int i = 0; i < PQntuples(r); i++)
        json_array_append_new(a, json_string(PQgetvalue(r, i, 0)));
    PQclear(r);
    return a;
}

static int has_entry(const json_t *a, const char *entry)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (strcmp(json_string_value(v), entry) == 0)
            return 1;
    }
    return 0;
}

/* A setting's context on the target ("user", "superuser" may be set per database; others
 * are server-wide) and its current value, or -1 (unknown parameter: reported). */
static int setting_info(PGconn *pg, const char *name, char *context, size_t cn, char *current,
                        size_t vn, char *err, size_t errlen)
{
    PGresult *r = q1(pg, "SELECT context, current_setting(name) FROM pg_settings WHERE name = $1",
                     name, err, errlen);
    if (!r)
        return -1;
    int found = PQntuples(r) == 1;
    if (found) {
        snprintf(context, cn, "%s", PQgetvalue(r, 0, 0));
        snprintf(current, vn, "%s", PQgetvalue(r, 0, 1));
    }
    PQclear(r);
    return found ? 0 : -2;
}

/* The CDC tables of doc that exist in the database's public schema, and those of them the
 * publication lacks (both new arrays). Returns 1 when the publication exists, 0 when not,
 * -1 on error. */
static int publication_state(PGconn *db, const json_t *doc, json_t **present, json_t **lacking,
                             char *err, size_t errlen)
{
    const char *pub = json_string_value(json_object_get(doc, "publication"));
    int pub_exists =
        exists(db, "SELECT 1 FROM pg_publication WHERE pubname = $1", pub, err, errlen);
    if (pub_exists < 0)
        return -1;
    *present = json_array();
    *lacking = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(doc, "cdc_tables"), i, t)
    {
        const char *name = json_string_value(t);
        int e = exists(db,
                       "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = 'public' AND c.relname = $1 AND c.relkind IN ('r', 'p')",
                       name, err, errlen);
        if (e < 0)
            return -1;
        if (!e)
            continue;
        json_array_append(*present, t);
        const char *params[2] = {pub, name};
        PGresult *r = PQexecParams(db,
                                   "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND "
                                   "schemaname = 'public' AND tablename = $2",
                                   2, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            snprintf(err, errlen, "%s", PQerrorMessage(db));
            PQclear(r);
            return -1;
        }
        if (PQntuples(r) == 0)
            json_array_append(*lacking, t);
        PQclear(r);
    }
    return pub_exists;
}

int inv_pg_inspect(const struct inventory_pg_endpoint *ep, const json_t *doc, json_t *diffs,
                   char *err, size_t errlen)
{
    const char *name = json_string_value(json_object_get(doc, "name"));
    const char *owner = json_string_value(json_object_get(doc, "owner"));
    PGconn *pg = inventory_pg_connect(ep, "postgres", inv_target_timeout_ms() / 1000, err, errlen);
    if (!pg)
        return -1;
    int rc = -1;
    json_t *cfg = NULL, *present = NULL, *lacking = NULL;
    int role = exists(pg, "SELECT 1 FROM pg_roles WHERE rolname = $1", owner, err, errlen);
    int dbx = exists(pg, "SELECT 1 FROM pg_database WHERE datname = $1", name, err, errlen);
    if (role < 0 || dbx < 0)
        goto out;
    if (!role)
        add_diff(diffs, "role_missing", "role %s does not exist", owner);
    if (!dbx) {
        add_diff(diffs, "database_missing", "database %s does not exist", name);
        rc = 0;
        goto out;
    }
    cfg = db_config(pg, name, err, errlen);
    if (!cfg)
        goto out;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(doc, "settings"), k, v)
    {
        char context[32], current[256];
        int si = setting_info(pg, k, context, sizeof context, current, sizeof current, err, errlen);
        if (si == -1)
            goto out;
        if (si == -2 || !(strcmp(context, "user") == 0 || strcmp(context, "superuser") == 0))
            continue; /* server-wide: a warning of the job, not something it can change */
        char entry[512];
        snprintf(entry, sizeof entry, "%s=%s", k, json_string_value(v));
        if (!has_entry(cfg, entry))
            add_diff(diffs, "setting_differs", "%s is not set to %s on database %s", k,
                     json_string_value(v), name);
    }
    if (json_array_size(json_object_get(doc, "cdc_tables")) > 0) {
        PGconn *db = inventory_pg_connect(ep, name, inv_target_timeout_ms() / 1000, err, errlen);
        if (!db)
            goto out;
        int ps = publication_state(db, doc, &present, &lacking, err, errlen);
        PQfinish(db);
        if (ps < 0)
            goto out;
        const char *pub = json_string_value(json_object_get(doc, "publication"));
        if (json_array_size(present) > 0 && !ps)
            add_diff(diffs, "publication_missing", "publication %s does not exist in %s", pub,
                     name);
        else if (json_array_size(lacking) > 0)
            add_diff(diffs, "publication_tables_missing",
                     "publication %s lacks %zu of the CDC tables", pub, json_array_size(lacking));
    }
    rc = 0;
out:
    json_decref(cfg);
    json_decref(present);
    json_decref(lacking);
    PQfinish(pg);
    return rc;
}

int inv_pg_provision(const struct inventory_pg_endpoint *ep, const json_t *doc, json_t *steps,
                     int *changed, json_t *warnings, char *err, size_t errlen)
{
    const char *name = json_string_value(json_object_get(doc, "name"));
    const char *owner = json_string_value(json_object_get(doc, "owner"));
    *changed = 0;
    /* a reference that does not resolve is a configuration error: retrying will not help */
    char probe[1024];
    if (ep->admin_secret[0] &&
        inventory_secret_resolve(ep->admin_secret, probe, sizeof probe, err, errlen) != 0)
        return -2;
    inventory_secret_wipe(probe, sizeof probe);
    PGconn *pg = inventory_pg_connect(ep, "postgres", inv_target_timeout_ms() / 1000, err, errlen);
    if (!pg)
        return -1;
    int rc = -1;
    char *qname = ident(pg, name), *qowner = ident(pg, owner);
    char sql[2048];
    json_t *cfg = NULL, *present = NULL, *lacking = NULL;
    PGconn *db = NULL;

    int e = exists(pg, "SELECT 1 FROM pg_roles WHERE rolname = $1", owner, err, errlen);
    if (e < 0)
        goto out;
    if (!e) {
        /* no password: the role's credentials are Vault's (its database secrets engine),
         * and services reach it through PgBouncer's auth_query */
        snprintf(sql, sizeof sql, "CREATE ROLE %s LOGIN", qowner);
        if (ddl(pg, sql, err, errlen) != 0)
            goto fail;
        step(steps, "created role %s", owner);
        *changed = 1;
    } else {
        step(steps, "role %s exists", owner);
    }

    PGresult *r = q1(pg, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", name,
                     err, errlen);
    if (!r)
        goto out;
    int db_exists = PQntuples(r) == 1;
    int owner_ok = db_exists && strcmp(PQgetvalue(r, 0, 0), owner) == 0;
    PQclear(r);
    if (!db_exists) {
        snprintf(sql, sizeof sql, "CREATE DATABASE %s OWNER %s", qname, qowner);
        if (ddl(pg, sql, err, errlen) != 0)
            goto fail;
        step(steps, "created database %s owned by %s", name, owner);
        *changed = 1;
    } else if (!owner_ok) {
        snprintf(sql, sizeof sql, "ALTER DATABASE %s OWNER TO %s", qname, qowner);
        if (ddl(pg, sql, err, errlen) != 0)
            goto fail;
        step(steps, "database %s now owned by %s", name, owner);
        *changed = 1;
    } else {
        step(steps, "database %s exists, owned by %s", name, owner);
    }

    cfg = db_config(pg, name, err, errlen);
    if (!cfg)
        goto out;
    const char *k;
    json_t *v;
    int settings_changed = 0;
    json_object_foreach(json_object_get(doc, "settings"), k, v)
    {
        char context[32], current[256];
        const char *want = json_string_value(v);
        int si = setting_info(pg, k, context, sizeof context, current, sizeof current, err, errlen);
        if (si == -1)
            goto out;
        if (si == -2) {
            json_array_append_new(warnings,
                                  json_sprintf("%s is not a parameter of this server", k));
            continue;
        }
        if (!(strcmp(context, "user") == 0 || strcmp(context, "superuser") == 0)) {
            if (strcmp(current, want) != 0)
                json_array_append_new(
                    warnings, json_sprintf("%s is %s on the server, the inventory says %s: a "
                                           "server-wide setting (%s), set in postgresql.conf",
                                           k, current, want, context));
            continue;
        }
        char entry[512];
        snprintf(entry, sizeof entry, "%s=%s", k, want);
        if (has_entry(cfg, entry))
            continue;
        char *qk = ident(pg, k), *qv = PQescapeLiteral(pg, want, strlen(want));
        snprintf(sql, sizeof sql, "ALTER DATABASE %s SET %s = %s", qname, qk ? qk : "\"\"",
                 qv ? qv : "''");
        PQfreemem(qk);
        PQfreemem(qv);
        if (ddl(pg, sql, err, errlen) != 0)
            goto fail;
        step(steps, "set %s = %s on database %s", k, want, name);
        settings_changed = *changed = 1;
    }
    if (!settings_changed)
        step(steps, "per-database settings already as in the inventory");

    if (json_array_size(json_object_get(doc, "cdc_tables")) > 0) {
        r = q1(pg, "SELECT current_setting('wal_level')", NULL, err, errlen);
        if (!r)
            goto out;
        if (strcmp(PQgetvalue(r, 0, 0), "logical") != 0) {
            json_array_append_new(
                warnings,
                json_sprintf("wal_level is %s, Debezium needs logical: ALTER SYSTEM SET wal_level "
                             "= logical and restart PostgreSQL (section 4.4)",
                             PQgetvalue(r, 0, 0)));
            step(steps, "wal_level is %s, not logical: CDC will not stream until it is",
                 PQgetvalue(r, 0, 0));
        } else {
            step(steps, "wal_level is logical");
        }
        PQclear(r);
        db = inventory_pg_connect(ep, name, inv_target_timeout_ms() / 1000, err, errlen);
        if (!db)
            goto out;
        const char *pub = json_string_value(json_object_get(doc, "publication"));
        int ps = publication_state(db, doc, &present, &lacking, err, errlen);
        if (ps < 0)
            goto out;
        size_t missing_tables =
            json_array_size(json_object_get(doc, "cdc_tables")) - json_array_size(present);
        if (missing_tables)
            json_array_append_new(warnings,
                                  json_sprintf("%zu CDC table(s) do not exist yet in %s: the "
                                               "publication takes them once they do",
                                               missing_tables, name));
        json_t *todo = ps ? lacking : present;
        if (json_array_size(todo) > 0) {
            char *qpub = ident(db, pub);
            size_t o = (size_t)snprintf(
                sql, sizeof sql,
                ps ? "ALTER PUBLICATION %s ADD TABLE " : "CREATE PUBLICATION %s FOR TABLE ", qpub);
            PQfreemem(qpub);
            size_t i;
            json_t *t;
            json_array_foreach(todo, i, t)
            {
                char *qt = ident(db, json_string_value(t));
                if (o < sizeof sql)
                    o += (size_t)snprintf(sql + o, sizeof sql - o, "%spublic.%s", i ? ", " : "",
                                          qt ? qt : "\"\"");
                PQfreemem(qt);
            }
            if (o >= sizeof sql) {
                snprintf(err, errlen, "too many CDC tables for one statement");
                rc = -2;
                goto out;
            }
            if (ddl(db, sql, err, errlen) != 0)
                goto fail;
            step(steps, "%s publication %s with %zu table(s)", ps ? "extended" : "created", pub,
                 json_array_size(todo));
            *changed = 1;
        } else if (ps) {
            step(steps, "publication %s has every CDC table", pub);
        }
    }
    rc = 0;
    goto out;
fail:
    /* the target refused a statement (permission, bad setting value): retrying will not
     * change its mind */
    rc = -2;
out:
    json_decref(cfg);
    json_decref(present);
    json_decref(lacking);
    PQfreemem(qname);
    PQfreemem(qowner);
    PQfinish(db);
    PQfinish(pg);
    return rc;
}
