/* HTTP handlers of /api/v1/flags and /api/v1/change-requests: parse, authorize, run the
 * write path (flags_write.c) in one transaction with its audit and outbox events, reload
 * this replica's snapshot after the commit, shape the reply.
 *
 * Safe writes: a flag's ETag is its version ("7"). A write with If-Match on another version
 * gets 412; a production write without If-Match gets 428; production writes need the admin
 * role; with QDB_FLAGS_PROD_APPROVAL=1 a production write becomes a change request (202)
 * that a different admin approves. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "auth/auth.h"
#include "flags/flags_store.h"
#include "flags/flags_write.h"
#include "platform/environment.h"
#include "platform/jsonspec.h"
#include "platform/log.h"
#include "platform/queryspec.h"

#define PRODUCTION "production"

/* ---- helpers ---- */

static void reply_write_error(struct http_request *req, int rc, const struct flags_change *ch)
{
    switch (rc) {
    case FLAGS_W_NOT_FOUND:
    case FLAGS_W_NO_ENV:
        http_reply_problem(req, QDB_E_NOT_FOUND, "%s", ch->err);
        return;
    case FLAGS_W_STALE:
        http_reply_problem(req, QDB_E_PRECONDITION_FAILED, "%s", ch->err);
        return;
    case FLAGS_W_INVALID:
        http_reply_invalid(req, ch->field, "%s", ch->err);
        return;
    case FLAGS_W_CONFLICT:
        http_reply_problem(req, QDB_E_CONFLICT, "%s", ch->err);
        return;
    default:
        http_reply_db_error(req, rc);
    }
}

/* If-Match: 0 absent (*present 0), the version, or -1 after replying 400. "*" is present
 * with version 0 (any). */
static int64_t if_match(struct http_request *req, int *present)
{
    const char *h = http_header(req, "If-Match");
    *present = h != NULL;
    if (!h)
        return 0;
    while (*h == ' ')
        h++;
    if (strcmp(h, "*") == 0)
        return 0;
    if (strncmp(h, "W/", 2) == 0)
        h += 2;
    if (*h == '"')
        h++;
    char *end;
    errno = 0;
    long long v = strtoll(h, &end, 10);
    if (errno || v <= 0 || (*end && *end != '"')) {
        http_reply_invalid(req, "If-Match", "If-Match is the flag's ETag (\"7\")");
        return -1;
    }
    return v;
}

static void set_etag(struct http_request *req, const json_t *doc)
{
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"",
             (long long)json_integer_value(json_object_get(doc, "version")));
    http_reply_header(req, "ETag", etag);
}

/* Production writes: admin, and an If-Match. 0, or -1 after replying. */
static int production_guard(struct http_request *req, const char *env, int has_if_match)
{
    if (strcmp(env, PRODUCTION) != 0)
        return 0;
    const struct http_principal *p = http_principal(req);
    if (!p || p->role < HTTP_ADMIN) {
        http_reply_problem(req, QDB_E_FORBIDDEN, "production changes need the admin role");
        return -1;
    }
    if (!has_if_match) {
        http_reply_problem(req, QDB_E_PRECONDITION_REQUIRED,
                           "a production change needs If-Match with the flag's ETag");
        return -1;
    }
    return 0;
}

/* Reload this replica's snapshot right after a commit (environment NULL: every one), so
 * that the writer's replica serves the change before it replies. */
static void reload_env_after_commit(struct db_conn *c, const char *environment)
{
    if ((environment ? flags_snapshot_reload_env(c, environment) : flags_snapshot_reload(c)) != 0)
        log_warn("flags: reload after a change failed; the listener will reload");
}

/* The same for a change to one flag: only that flag is read again. */
static void reload_flag_after_commit(struct db_conn *c, const char *key)
{
    if (flags_snapshot_reload_flag(c, key) != 0)
        log_warn("flags: reload after a change failed; the listener will reload");
}

static int path_key(struct http_request *req, const char **key)
{
    *key = http_param(req, "key");
    if (!flags_key_valid(*key)) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no flag %s", *key);
        return -1;
    }
    return 0;
}

/* ---- GET /api/v1/flags ---- */

void flags_api_list(struct http_request *req)
{
    const char *env = NULL, *tag = NULL;
    int stale = 0;
    const struct qspec_param q[] = {
        {"environment", QSPEC_STRING, 0, 1, 32, NULL, &env, NULL},
        {"tag", QSPEC_STRING, 0, 1, 100, NULL, &tag, NULL},
        {"stale", QSPEC_BOOL, 0, 0, 0, NULL, &stale, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    if (env) {
        int ex = environment_exists(c, env);
        if (ex <= 0) {
            if (ex < 0)
                http_reply_db_error(req, ex);
            else
                http_reply_invalid(req, "environment", "no environment %s", env);
            return;
        }
    }
    json_t *out = NULL;
    int rc = flags_store_list(c, tag, env, stale, flags_cfg.stale_days, &out);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return;
    }
    http_reply_json(req, 200, out ? out : json_pack("{s:[]}", "items"));
}

/* ---- GET /api/v1/flags/{key} ---- */

void flags_api_get(struct http_request *req)
{
    const char *key;
    if (path_key(req, &key) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *doc = NULL;
    int rc = flags_store_get(c, key, &doc);
    if (rc <= 0) {
        if (rc < 0)
            http_reply_db_error(req, rc);
        else
            http_reply_problem(req, QDB_E_NOT_FOUND, "no flag %s", key);
        return;
    }
    set_etag(req, doc);
    http_reply_json(req, 200, doc);
}

/* ---- POST /api/v1/flags ---- */

struct create_tx {
    struct http_request *req;
    const char *key, *description, *owner, *type, *salt, *defv, *offv;
    json_t *variants, *tags;
    json_t *result;
};

static int create_fn(struct db_conn *c, void *cls)
{
    struct create_tx *t = cls;
    int64_t last = 0;
    int rc = flags_store_last_version(c, t->key, &last);
    if (rc < 0)
        return rc;
    int64_t version = last + 1;
    json_t *cfg = flags_config_initial(t->defv, t->offv);
    if ((rc = flags_store_insert(c, t->key, t->description, t->owner, t->type, t->variants,
                                 t->salt, t->tags, version)) < 0 ||
        (rc = flags_store_env_insert_all(c, t->key, cfg, version)) < 0) {
        json_decref(cfg);
        return rc;
    }
    json_decref(cfg);
    json_t *doc = NULL;
    rc = flags_store_get(c, t->key, &doc);
    if (rc <= 0)
        return rc < 0 ? rc : DB_HARD;
    json_t *core = flags_doc_core(doc);
    json_t *diff = flags_json_diff(NULL, core);
    struct flags_actor who = {t->req, NULL};
    rc = flags_store_version_insert(c, t->key, version, NULL, "create", core, diff, NULL,
                                    flags_actor_subject(&who));
    struct audit_entry e = {.action = "flag.create", .resource_type = "flag",
                            .resource_id = t->key, .after = core};
    if (rc >= 0)
        rc = audit_record_http(c, t->req, &e);
    char subject[300];
    snprintf(subject, sizeof subject, "flags/%s", t->key);
    if (rc >= 0)
        rc = flags_actor_emit(c, &who, "created", subject, core);
    json_decref(core);
    json_decref(diff);
    if (rc < 0) {
        json_decref(doc);
        return rc;
    }
    t->result = doc;
    return 0;
}

void flags_api_create(struct http_request *req)
{
    struct create_tx t = {.req = req, .description = "", .owner = "", .salt = ""};
    int type = 0;
    const struct jspec_field f[] = {
        {"key", JSPEC_STRING, 1, 1, FLAGS_KEY_MAX, NULL, &t.key, NULL},
        {"description", JSPEC_STRING, 0, 0, 2000, NULL, &t.description, NULL},
        {"owner", JSPEC_STRING, 0, 0, 200, NULL, &t.owner, NULL},
        {"type", JSPEC_ENUM, 1, 0, 0, flags_type_names, &type, NULL},
        {"variants", JSPEC_OBJECT, 1, 0, 0, NULL, &t.variants, NULL},
        {"default_variant", JSPEC_STRING, 0, 1, 64, NULL, &t.defv, NULL},
        {"off_variant", JSPEC_STRING, 0, 1, 64, NULL, &t.offv, NULL},
        {"salt", JSPEC_STRING, 0, 0, 64, NULL, &t.salt, NULL},
        {"tags", JSPEC_ARRAY, 0, 0, 0, NULL, &t.tags, NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, http_body(req), f, NULL, 0) != 0)
        return;
    if (!flags_key_valid(t.key)) {
        http_reply_invalid(req, "key",
                           "a flag key is dotted lowercase segments of a-z 0-9 - "
                           "(qdb.guarantee.digital-signing), at most %d bytes",
                           FLAGS_KEY_MAX);
        return;
    }
    t.type = flags_type_names[type];
    json_t *def = json_pack("{s:s,s:s,s:O,s:s}", "key", t.key, "type", t.type, "variants",
                            t.variants, "salt", t.salt);
    if (t.tags)
        json_object_set(def, "tags", t.tags);
    char field[128], err[256];
    int bad = flags_definition_check(def, field, sizeof field, err, sizeof err);
    json_decref(def);
    if (bad) {
        http_reply_invalid(req, field, "%s", err);
        return;
    }
    json_t *tags = t.tags ? json_incref(t.tags) : json_array();
    t.tags = tags;
    /* defaults: a boolean flag's "on"/"off" when it has them, else the first variant */
    const char *first = json_object_iter_key(json_object_iter(t.variants));
    if (!t.defv)
        t.defv = json_object_get(t.variants, "on") ? "on" : first;
    if (!t.offv)
        t.offv = json_object_get(t.variants, "off") ? "off" : first;
    if (!json_object_get(t.variants, t.defv) || !json_object_get(t.variants, t.offv)) {
        json_decref(tags);
        http_reply_invalid(req, json_object_get(t.variants, t.defv) ? "off_variant" : "default_variant",
                           "not one of the variants");
        return;
    }
    struct db_conn *c = http_db_or_reply(req);
    if (!c) {
        json_decref(tags);
        return;
    }
    int rc = db_tx(c, create_fn, &t);
    json_decref(tags);
    if (rc == DB_UNIQUE) {
        http_reply_problem(req, QDB_E_CONFLICT, "flag %s exists", t.key);
        return;
    }
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return;
    }
    reload_flag_after_commit(c, t.key);
    char loc[300];
    snprintf(loc, sizeof loc, "/api/v1/flags/%s", t.key);
    http_reply_header(req, "Location", loc);
    set_etag(req, t.result);
    http_reply_json(req, 201, t.result);
}

/* ---- PATCH /api/v1/flags/{key} (definition) ---- */

struct update_tx {
    struct http_request *req;
    const char *key;
    json_t *body;
    int64_t expected;
    json_t *result;
    char field[128], err[256];
};

static int update_fn(struct db_conn *c, void *cls)
{
    struct update_tx *t = cls;
    json_t *before = NULL;
    int rc = flags_store_get_for_update(c, t->key, &before);
    if (rc <= 0)
        return rc < 0 ? rc : FLAGS_W_NOT_FOUND;
    int64_t version = json_integer_value(json_object_get(before, "version"));
    if (t->expected && t->expected != version) {
        snprintf(t->err, sizeof t->err, "the flag is at version %lld, not %lld",
                 (long long)version, (long long)t->expected);
        json_decref(before);
        return FLAGS_W_STALE;
    }
    json_t *merged = json_deep_copy(before);
    json_object_update(merged, t->body);
    rc = flags_definition_check(merged, t->field, sizeof t->field, t->err, sizeof t->err);
    /* every environment's configuration must still name existing variants */
    const char *env;
    json_t *cfg;
    json_object_foreach(json_object_get(merged, "environments"), env, cfg)
    {
        if (rc != 0)
            break;
        char f[128];
        if (flags_config_check(merged, cfg, f, sizeof f, t->err, sizeof t->err) != 0) {
            snprintf(t->field, sizeof t->field, "variants");
            char e2[600];
            snprintf(e2, sizeof e2, "the %s configuration would break: %s", env, t->err);
            snprintf(t->err, sizeof t->err, "%.255s", e2);
            rc = -1;
        }
    }
    if (rc != 0) {
        json_decref(merged);
        json_decref(before);
        return FLAGS_W_INVALID;
    }
    int64_t next = version + 1;
    rc = flags_store_update_definition(
        c, t->key, json_string_value(json_object_get(merged, "description")),
        json_string_value(json_object_get(merged, "owner")), json_object_get(merged, "variants"),
        json_string_value(json_object_get(merged, "salt")), json_object_get(merged, "tags"),
        json_is_true(json_object_get(merged, "archived")), next);
    json_decref(merged);
    json_t *after = NULL;
    if (rc >= 0)
        rc = flags_store_get(c, t->key, &after);
    if (rc <= 0) {
        json_decref(before);
        return rc < 0 ? rc : DB_HARD;
    }
    json_t *b = flags_doc_core(before), *a = flags_doc_core(after);
    json_t *diff = flags_json_diff(b, a);
    struct flags_actor who = {t->req, NULL};
    const char *comment = json_string_value(json_object_get(t->body, "comment"));
    rc = flags_store_version_insert(c, t->key, next, NULL, "update", a, diff, comment,
                                    flags_actor_subject(&who));
    struct audit_entry e = {.action = "flag.update", .resource_type = "flag",
                            .resource_id = t->key, .before = b, .after = a};
    if (rc >= 0)
        rc = audit_record_http(c, t->req, &e);
    char subject[300];
    snprintf(subject, sizeof subject, "flags/%s", t->key);
    if (rc >= 0)
        rc = flags_actor_emit(c, &who, "updated", subject, a);
    json_decref(a);
    json_decref(b);
    json_decref(diff);
    json_decref(before);
    if (rc < 0) {
        json_decref(after);
        return rc;
    }
    t->result = after;
    return 0;
}

void flags_api_update(struct http_request *req)
{
    struct update_tx t = {.req = req};
    if (path_key(req, &t.key) != 0)
        return;
    const char *s;
    json_t *o;
    int b;
    const struct jspec_field f[] = {
        {"description", JSPEC_STRING, 0, 0, 2000, NULL, &s, NULL},
        {"owner", JSPEC_STRING, 0, 0, 200, NULL, &s, NULL},
        {"variants", JSPEC_OBJECT, 0, 0, 0, NULL, &o, NULL},
        {"salt", JSPEC_STRING, 0, 0, 64, NULL, &s, NULL},
        {"tags", JSPEC_ARRAY, 0, 0, 0, NULL, &o, NULL},
        {"archived", JSPEC_BOOL, 0, 0, 0, NULL, &b, NULL},
        {"comment", JSPEC_STRING, 0, 0, 2000, NULL, &s, NULL},
        JSPEC_END,
    };
    json_t *body = http_body(req);
    if (jspec_parse(req, body, f, NULL, 0) != 0)
        return;
    /* what production serves changes with variants, salt and archived: admin only */
    const struct http_principal *p = http_principal(req);
    if ((json_object_get(body, "variants") || json_object_get(body, "salt") ||
         json_object_get(body, "archived")) &&
        (!p || p->role < HTTP_ADMIN)) {
        http_reply_problem(req, QDB_E_FORBIDDEN,
                           "changing variants, salt or archived changes production: admin role");
        return;
    }
    int has;
    t.expected = if_match(req, &has);
    if (t.expected < 0)
        return;
    t.body = json_deep_copy(body);
    json_object_del(t.body, "comment");
    struct db_conn *c = http_db_or_reply(req);
    if (!c) {
        json_decref(t.body);
        return;
    }
    int rc = db_tx(c, update_fn, &t);
    json_decref(t.body);
    if (rc < 0) {
        struct flags_change ch = {0};
        snprintf(ch.err, sizeof ch.err, "%s", rc == FLAGS_W_NOT_FOUND ? "no such flag" : t.err);
        snprintf(ch.field, sizeof ch.field, "%s", t.field);
        reply_write_error(req, rc, &ch);
        return;
    }
    reload_flag_after_commit(c, t.key);
    set_etag(req, t.result);
    http_reply_json(req, 200, t.result);
}

/* ---- DELETE /api/v1/flags/{key} ---- */

struct delete_tx {
    struct http_request *req;
    const char *key;
    int64_t expected;
};

static int delete_fn(struct db_conn *c, void *cls)
{
    struct delete_tx *t = cls;
    json_t *before = NULL;
    int rc = flags_store_get_for_update(c, t->key, &before);
    if (rc <= 0)
        return rc < 0 ? rc : FLAGS_W_NOT_FOUND;
    int64_t version = json_integer_value(json_object_get(before, "version"));
    if (t->expected && t->expected != version) {
        json_decref(before);
        return FLAGS_W_STALE;
    }
    json_t *b = flags_doc_core(before);
    json_t *diff = flags_json_diff(b, NULL);
    struct flags_actor who = {t->req, NULL};
    rc = flags_store_delete(c, t->key);
    if (rc >= 0)
        rc = flags_store_version_insert(c, t->key, version + 1, NULL, "delete", b, diff, NULL,
                                        flags_actor_subject(&who));
    struct audit_entry e = {.action = "flag.delete", .resource_type = "flag",
                            .resource_id = t->key, .before = b};
    if (rc >= 0)
        rc = audit_record_http(c, t->req, &e);
    char subject[300];
    snprintf(subject, sizeof subject, "flags/%s", t->key);
    json_t *data = json_pack("{s:s}", "key", t->key);
    if (rc >= 0)
        rc = flags_actor_emit(c, &who, "deleted", subject, data);
    json_decref(data);
    json_decref(b);
    json_decref(diff);
    json_decref(before);
    return rc < 0 ? rc : 0;
}

void flags_api_delete(struct http_request *req)
{
    struct delete_tx t = {.req = req};
    if (path_key(req, &t.key) != 0)
        return;
    int has;
    t.expected = if_match(req, &has);
    if (t.expected < 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    int rc = db_tx(c, delete_fn, &t);
    if (rc < 0) {
        struct flags_change ch = {0};
        snprintf(ch.err, sizeof ch.err, rc == FLAGS_W_STALE ? "the flag changed meanwhile"
                                                            : "no such flag");
        reply_write_error(req, rc, &ch);
        return;
    }
    reload_flag_after_commit(c, t.key);
    http_reply_empty(req, 204);
}

/* ---- environment changes: PUT, rollback, promote (and change requests) ---- */

struct env_tx {
    struct flags_change ch;
    json_t *owned_config; /* when the config was computed (rollback, promote) */
    int64_t rollback_version;
    const char *promote_from;
    int as_request; /* QDB_FLAGS_PROD_APPROVAL: record a change request instead */
    json_t *request; /* the change request made */
};

/* Compute the configuration a rollback or promote applies (inside the transaction). */
static int derive_config(struct db_conn *c, struct env_tx *t)
{
    if (t->rollback_version) {
        json_t *doc = NULL;
        int rc = flags_store_version_doc(c, t->ch.key, t->rollback_version, &doc);
        if (rc < 0)
            return rc;
        json_t *cfg = json_object_get(json_object_get(doc, "environments"), t->ch.environment);
        if (rc == 0 || !cfg) {
            json_decref(doc);
            snprintf(t->ch.field, sizeof t->ch.field, "version");
            snprintf(t->ch.err, sizeof t->ch.err, "version %lld of %s has no %s configuration",
                     (long long)t->rollback_version, t->ch.key, t->ch.environment);
            return FLAGS_W_INVALID;
        }
        t->owned_config = json_deep_copy(cfg);
        json_decref(doc);
    } else if (t->promote_from) {
        json_t *doc = NULL;
        int rc = flags_store_get(c, t->ch.key, &doc);
        if (rc < 0)
            return rc;
        json_t *cfg = json_object_get(json_object_get(doc, "environments"), t->promote_from);
        if (rc == 0 || !cfg) {
            json_decref(doc);
            snprintf(t->ch.err, sizeof t->ch.err, "no flag %s in %s", t->ch.key, t->promote_from);
            return FLAGS_W_NOT_FOUND;
        }
        t->owned_config = json_deep_copy(cfg);
        json_decref(doc);
    }
    if (t->owned_config)
        t->ch.config = t->owned_config;
    return 0;
}

static int request_fn(struct db_conn *c, struct env_tx *t)
{
    json_t *doc = NULL;
    int rc = flags_store_get(c, t->ch.key, &doc);
    if (rc <= 0) {
        snprintf(t->ch.err, sizeof t->ch.err, "no flag %s", t->ch.key);
        return rc < 0 ? rc : FLAGS_W_NOT_FOUND;
    }
    int64_t version = json_integer_value(json_object_get(doc, "version"));
    if (t->ch.expected_version && t->ch.expected_version != version) {
        json_decref(doc);
        snprintf(t->ch.err, sizeof t->ch.err, "the flag is at version %lld", (long long)version);
        return FLAGS_W_STALE;
    }
    rc = flags_check_config(c, doc, t->ch.environment, t->ch.config, &t->ch);
    json_decref(doc);
    if (rc != 0)
        return rc;
    rc = flags_store_cr_insert(c, t->ch.key, t->ch.environment, t->ch.action, t->ch.config,
                               version, t->ch.comment, flags_actor_subject(&t->ch.who),
                               &t->request);
    if (rc <= 0)
        return rc < 0 ? rc : DB_HARD;
    char id[24];
    db_int64(id, json_integer_value(json_object_get(t->request, "id")));
    struct audit_entry e = {.action = "change_request.create", .resource_type = "change_request",
                            .resource_id = id, .environment = t->ch.environment,
                            .after = t->request};
    rc = flags_actor_audit(c, &t->ch.who, &e);
    char subject[64];
    snprintf(subject, sizeof subject, "change-requests/%s", id);
    if (rc >= 0)
        rc = flags_actor_emit(c, &t->ch.who, "change_requested", subject, t->request);
    return rc < 0 ? rc : 0;
}

static int env_fn(struct db_conn *c, void *cls)
{
    struct env_tx *t = cls;
    json_decref(t->owned_config);
    t->owned_config = NULL;
    int rc = derive_config(c, t);
    if (rc != 0)
        return rc;
    if (t->as_request)
        return request_fn(c, t);
    return flags_apply_env_change(c, &t->ch);
}

/* Run an environment change from a handler: guards, transaction, reload, reply. */
static void run_env_change(struct http_request *req, struct env_tx *t)
{
    int has;
    t->ch.expected_version = if_match(req, &has);
    if (t->ch.expected_version < 0)
        return;
    if (auth_require_environment(req, t->ch.environment) != 0 ||
        production_guard(req, t->ch.environment, has) != 0)
        return;
    t->as_request = flags_cfg.prod_approval && strcmp(t->ch.environment, PRODUCTION) == 0;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    int rc = db_tx(c, env_fn, t);
    json_decref(t->owned_config);
    if (rc < 0) {
        reply_write_error(req, rc, &t->ch);
        json_decref(t->ch.result);
        json_decref(t->request);
        return;
    }
    if (t->as_request) {
        char loc[64];
        snprintf(loc, sizeof loc, "/api/v1/change-requests/%lld",
                 (long long)json_integer_value(json_object_get(t->request, "id")));
        http_reply_header(req, "Location", loc);
        http_reply_json(req, 202, t->request);
        return;
    }
    reload_flag_after_commit(c, t->ch.key);
    set_etag(req, t->ch.result);
    http_reply_json(req, 200, t->ch.result);
}

void flags_api_put_environment(struct http_request *req)
{
    struct env_tx t = {0};
    if (path_key(req, &t.ch.key) != 0)
        return;
    t.ch.environment = http_param(req, "env");
    t.ch.who.req = req;
    t.ch.action = "configure";
    json_t *body = http_body(req);
    /* the body is the configuration, plus an optional comment */
    json_t *cfg = json_deep_copy(body);
    const char *comment = json_string_value(json_object_get(body, "comment"));
    if (json_object_get(body, "comment") && !comment) {
        json_decref(cfg);
        http_reply_invalid(req, "comment", "comment is a string");
        return;
    }
    json_object_del(cfg, "comment");
    /* one stored shape: the optional members are written out */
    if (json_is_object(cfg)) {
        if (!json_object_get(cfg, "rules"))
            json_object_set_new(cfg, "rules", json_array());
        if (!json_object_get(cfg, "prerequisites"))
            json_object_set_new(cfg, "prerequisites", json_array());
        if (!json_object_get(cfg, "split"))
            json_object_set_new(cfg, "split", json_null());
    }
    t.ch.comment = comment;
    t.ch.config = cfg;
    run_env_change(req, &t);
    json_decref(cfg);
}

void flags_api_rollback(struct http_request *req)
{
    struct env_tx t = {0};
    if (path_key(req, &t.ch.key) != 0)
        return;
    int64_t version = 0;
    const struct jspec_field f[] = {
        {"environment", JSPEC_STRING, 1, 1, 32, NULL, &t.ch.environment, NULL},
        {"version", JSPEC_INT, 1, 1, INT64_MAX, NULL, &version, NULL},
        {"comment", JSPEC_STRING, 0, 0, 2000, NULL, &t.ch.comment, NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, http_body(req), f, NULL, 0) != 0)
        return;
    t.ch.who.req = req;
    t.ch.action = "rollback";
    t.rollback_version = version;
    run_env_change(req, &t);
}

void flags_api_promote(struct http_request *req)
{
    struct env_tx t = {0};
    if (path_key(req, &t.ch.key) != 0)
        return;
    const struct jspec_field f[] = {
        {"from", JSPEC_STRING, 1, 1, 32, NULL, &t.promote_from, NULL},
        {"to", JSPEC_STRING, 1, 1, 32, NULL, &t.ch.environment, NULL},
        {"comment", JSPEC_STRING, 0, 0, 2000, NULL, &t.ch.comment, NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, http_body(req), f, NULL, 0) != 0)
        return;
    if (strcmp(t.promote_from, t.ch.environment) == 0) {
        http_reply_invalid(req, "to", "from and to are the same environment");
        return;
    }
    t.ch.who.req = req;
    t.ch.action = "promote";
    run_env_change(req, &t);
}

/* ---- GET /api/v1/flags/{key}/versions ---- */

void flags_api_versions(struct http_request *req)
{
    const char *key;
    if (path_key(req, &key) != 0)
        return;
    const char *env = NULL;
    int64_t before = 0, limit = 50;
    const struct qspec_param q[] = {
        {"environment", QSPEC_STRING, 0, 1, 32, NULL, &env, NULL},
        {"cursor", QSPEC_INT, 0, 1, INT64_MAX, NULL, &before, NULL},
        {"limit", QSPEC_INT, 0, 1, 500, NULL, &limit, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *out = NULL;
    int rc = flags_store_versions(c, key, env, before, (int)limit, &out);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return;
    }
    json_t *items = json_object_get(out, "items");
    if (json_array_size(items) == 0 && before == 0) {
        json_decref(out);
        http_reply_problem(req, QDB_E_NOT_FOUND, "no flag %s", key);
        return;
    }
    json_t *last = json_array_get(items, json_array_size(items) - 1);
    json_object_set_new(out, "next_cursor",
                        (int64_t)json_array_size(items) == limit
                            ? json_integer(json_integer_value(json_object_get(last, "version")))
                            : json_null());
    http_reply_json(req, 200, out);
}

/* ---- export, import, diff (the platform's flags file, infrastructure design 5.4) ---- */

/* The value an environment serves without targeting: the default variant's while enabled,
 * the off variant's while the kill switch is off. Borrowed from the snapshot. */
static const json_t *served_value(const struct flags_flag *f)
{
    return f->variants[f->enabled ? f->default_variant : f->off_variant].value;
}

static struct flags_env *env_or_reply(struct http_request *req, const char *env)
{
    if (auth_require_environment(req, env) != 0)
        return NULL;
    struct flags_env *e = flags_snapshot_acquire(env);
    if (!e)
        http_reply_invalid(req, "environment", "no environment %s", env);
    return e;
}

void flags_api_export(struct http_request *req)
{
    const char *env = NULL;
    const struct qspec_param q[] = {
        {"environment", QSPEC_STRING, 1, 1, 32, NULL, &env, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0)
        return;
    struct flags_env *e = env_or_reply(req, env);
    if (!e)
        return;
    json_t *flags = json_object();
    for (size_t i = 0; i < e->nflags; i++)
        json_object_set_new(flags, e->flags[i].key, json_deep_copy(served_value(&e->flags[i])));
    flags_env_release(e);
    http_reply_json(req, 200, json_pack("{s:o}", "flags", flags));
}

json_t *flags_file_differences(const struct flags_env *e, const json_t *desired)
{
    json_t *out = json_array();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)desired, k, v)
    {
        const struct flags_flag *f = flags_env_find(e, k);
        if (!f)
            json_array_append_new(out, json_pack("{s:s,s:s,s:O,s:n}", "key", k, "change",
                                                 "missing", "desired", v, "live"));
        else if (!json_equal(served_value(f), v))
            json_array_append_new(out, json_pack("{s:s,s:s,s:O,s:O}", "key", k, "change",
                                                 "changed", "desired", v, "live",
                                                 served_value(f)));
    }
    for (size_t i = 0; i < e->nflags; i++)
        if (!json_object_get(desired, e->flags[i].key))
            json_array_append_new(out, json_pack("{s:s,s:s,s:n,s:O}", "key", e->flags[i].key,
                                                 "change", "extra", "desired", "live",
                                                 served_value(&e->flags[i])));
    return out;
}

static int file_check(struct http_request *req, const json_t *flags)
{
    const char *k;
    json_t *v;
    if (json_object_size(flags) > 10000) {
        http_reply_invalid(req, "flags", "at most 10000 flags");
        return -1;
    }
    json_object_foreach((json_t *)flags, k, v)
    {
        if (!flags_key_valid(k)) {
            http_reply_invalid(req, "flags", "%.200s is not a flag key", k);
            return -1;
        }
    }
    return 0;
}

void flags_api_diff(struct http_request *req)
{
    const char *env = NULL;
    json_t *flags = NULL;
    const struct jspec_field f[] = {
        {"environment", JSPEC_STRING, 1, 1, 32, NULL, &env, NULL},
        {"flags", JSPEC_OBJECT, 1, 0, 0, NULL, &flags, NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, http_body(req), f, NULL, 0) != 0 || file_check(req, flags) != 0)
        return;
    struct flags_env *e = env_or_reply(req, env);
    if (!e)
        return;
    json_t *d = flags_file_differences(e, flags);
    flags_env_release(e);
    http_reply_json(req, 200, json_pack("{s:s,s:b,s:o}", "environment", env, "equal",
                                        json_array_size(d) == 0, "differences", d));
}

struct import_tx {
    struct http_request *req;
    const char *env, *comment;
    json_t *flags;
    json_t *changed;
    struct flags_change ch;
};

/* The configuration that makes `cfg` serve `want` without targeting (new reference), NULL
 * when it already does, or *bad when no variant has that value. */
static json_t *config_serving(const json_t *doc, const json_t *cfg, const json_t *want, int *bad)
{
    const json_t *variants = json_object_get(doc, "variants");
    int enabled = json_is_true(json_object_get(cfg, "enabled"));
    const char *defv = json_string_value(json_object_get(cfg, "default_variant"));
    const char *offv = json_string_value(json_object_get(cfg, "off_variant"));
    const json_t *dv = json_object_get(variants, defv), *ov = json_object_get(variants, offv);
    *bad = 0;
    if (json_equal(enabled ? dv : ov, want))
        return NULL;
    json_t *out = json_deep_copy(cfg);
    if (json_equal(dv, want)) {
        json_object_set_new(out, "enabled", json_true());
        return out;
    }
    if (json_equal(ov, want)) {
        json_object_set_new(out, "enabled", json_false());
        return out;
    }
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)variants, name, v)
    {
        if (json_equal(v, want)) {
            json_object_set_new(out, "enabled", json_true());
            json_object_set_new(out, "default_variant", json_string(name));
            return out;
        }
    }
    json_decref(out);
    *bad = 1;
    return NULL;
}

static int import_fn(struct db_conn *c, void *cls)
{
    struct import_tx *t = cls;
    json_decref(t->changed);
    t->changed = json_array();
    const char *k;
    json_t *v;
    json_object_foreach(t->flags, k, v)
    {
        json_t *doc = NULL;
        int rc = flags_store_get(c, k, &doc);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            snprintf(t->ch.field, sizeof t->ch.field, "flags");
            snprintf(t->ch.err, sizeof t->ch.err,
                     "no flag %.200s: create it first (POST /api/v1/flags)", k);
            return FLAGS_W_INVALID;
        }
        json_t *cfg = json_object_get(json_object_get(doc, "environments"), t->env);
        int bad = 0;
        json_t *next = cfg ? config_serving(doc, cfg, v, &bad) : NULL;
        json_decref(doc);
        if (bad || !cfg) {
            snprintf(t->ch.field, sizeof t->ch.field, "flags");
            snprintf(t->ch.err, sizeof t->ch.err, "no variant of %.200s has the value given", k);
            return FLAGS_W_INVALID;
        }
        if (!next)
            continue;
        struct flags_change ch = {.who = {t->req, NULL}, .key = k, .environment = t->env,
                                  .config = next, .action = "import", .comment = t->comment,
                                  .skip_audit = 1};
        rc = flags_apply_env_change(c, &ch);
        json_decref(next);
        json_decref(ch.result);
        if (rc != 0) {
            memcpy(t->ch.field, ch.field, sizeof ch.field);
            memcpy(t->ch.err, ch.err, sizeof ch.err);
            return rc;
        }
        json_array_append_new(t->changed, json_pack("{s:s,s:O,s:I}", "key", k, "value", v,
                                                    "version", (json_int_t)ch.version_after));
    }
    json_t *after = json_pack("{s:s,s:O}", "environment", t->env, "changed", t->changed);
    struct audit_entry e = {.action = "flag.import", .resource_type = "flag_import",
                            .resource_id = t->env, .environment = t->env, .after = after};
    int rc = audit_record_http(c, t->req, &e);
    char subject[80];
    snprintf(subject, sizeof subject, "environments/%s/flags", t->env);
    struct flags_actor who = {t->req, NULL};
    if (rc >= 0)
        rc = flags_actor_emit(c, &who, "imported", subject, after);
    json_decref(after);
    return rc < 0 ? rc : 0;
}

void flags_api_import(struct http_request *req)
{
    struct import_tx t = {.req = req};
    const struct jspec_field f[] = {
        {"environment", JSPEC_STRING, 1, 1, 32, NULL, &t.env, NULL},
        {"flags", JSPEC_OBJECT, 1, 0, 0, NULL, &t.flags, NULL},
        {"comment", JSPEC_STRING, 0, 0, 2000, NULL, &t.comment, NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, http_body(req), f, NULL, 0) != 0 || file_check(req, t.flags) != 0)
        return;
    if (auth_require_environment(req, t.env) != 0)
        return;
    if (strcmp(t.env, PRODUCTION) == 0) {
        const struct http_principal *p = http_principal(req);
        if (!p || p->role < HTTP_ADMIN) {
            http_reply_problem(req, QDB_E_FORBIDDEN, "production changes need the admin role");
            return;
        }
        if (flags_cfg.prod_approval) {
            http_reply_problem(req, QDB_E_CONFLICT,
                               "production changes go through change requests here "
                               "(QDB_FLAGS_PROD_APPROVAL): PUT each flag's configuration");
            return;
        }
    }
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    int ex = environment_exists(c, t.env);
    if (ex <= 0) {
        if (ex < 0)
            http_reply_db_error(req, ex);
        else
            http_reply_invalid(req, "environment", "no environment %s", t.env);
        return;
    }
    int rc = db_tx(c, import_fn, &t);
    if (rc < 0) {
        json_decref(t.changed);
        reply_write_error(req, rc, &t.ch);
        return;
    }
    reload_env_after_commit(c, t.env);
    http_reply_json(req, 200, json_pack("{s:s,s:o}", "environment", t.env, "changed", t.changed));
}

/* ---- change requests ---- */

static const char *const cr_states[] = {"pending", "approved", "rejected", NULL};

void flags_api_change_requests_list(struct http_request *req)
{
    int st = -1;
    const struct qspec_param q[] = {
        {"state", QSPEC_ENUM, 0, 0, 0, cr_states, &st, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *out = NULL;
    int rc = flags_store_cr_list(c, st >= 0 ? cr_states[st] : NULL, &out);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return;
    }
    http_reply_json(req, 200, out);
}

struct decide_tx {
    struct http_request *req;
    int64_t id;
    int approve;
    const char *comment;
    json_t *result;
    struct flags_change ch;
};

static int decide_fn(struct db_conn *c, void *cls)
{
    struct decide_tx *t = cls;
    json_t *cr = NULL;
    int rc = flags_store_cr_get_for_update(c, t->id, &cr);
    if (rc <= 0) {
        snprintf(t->ch.err, sizeof t->ch.err, "no change request %lld", (long long)t->id);
        return rc < 0 ? rc : FLAGS_W_NOT_FOUND;
    }
    struct flags_actor who = {t->req, NULL};
    int rcode = 0;
    if (strcmp(json_string_value(json_object_get(cr, "state")), "pending") != 0) {
        snprintf(t->ch.err, sizeof t->ch.err, "change request %lld is %s", (long long)t->id,
                 json_string_value(json_object_get(cr, "state")));
        rcode = FLAGS_W_CONFLICT;
    } else if (t->approve && strcmp(json_string_value(json_object_get(cr, "requested_by")),
                                    flags_actor_subject(&who)) == 0) {
        snprintf(t->ch.err, sizeof t->ch.err,
                 "a change request is approved by an admin other than its author");
        rcode = -400; /* forbidden */
    }
    if (rcode) {
        json_decref(cr);
        return rcode;
    }
    if (t->approve) {
        t->ch.who = who;
        t->ch.key = json_string_value(json_object_get(cr, "flag"));
        t->ch.environment = json_string_value(json_object_get(cr, "environment"));
        t->ch.config = json_object_get(cr, "config");
        t->ch.action = json_string_value(json_object_get(cr, "action"));
        t->ch.comment = json_string_value(json_object_get(cr, "comment"));
        t->ch.expected_version = json_integer_value(json_object_get(cr, "base_version"));
        t->ch.skip_audit = 1; /* the approval is the one audit event of this request */
        rc = flags_apply_env_change(c, &t->ch);
        if (rc == FLAGS_W_STALE) {
            snprintf(t->ch.err, sizeof t->ch.err,
                     "the flag changed since this request was made: reject it and ask again");
            rc = FLAGS_W_CONFLICT;
        }
        if (rc != 0) {
            json_decref(cr);
            return rc;
        }
    }
    json_t *after = NULL;
    rc = flags_store_cr_decide(c, t->id, t->approve ? "approved" : "rejected",
                               flags_actor_subject(&who), t->comment, &after);
    if (rc <= 0) {
        json_decref(cr);
        return rc < 0 ? rc : DB_HARD;
    }
    char id[24];
    db_int64(id, t->id);
    struct audit_entry e = {.action = t->approve ? "change_request.approve"
                                                 : "change_request.reject",
                            .resource_type = "change_request", .resource_id = id,
                            .environment = json_string_value(json_object_get(cr, "environment")),
                            .before = cr, .after = after};
    rc = audit_record_http(c, t->req, &e);
    char subject[64];
    snprintf(subject, sizeof subject, "change-requests/%s", id);
    if (rc >= 0)
        rc = flags_actor_emit(c, &who, t->approve ? "change_approved" : "change_rejected",
                              subject, after);
    json_decref(cr);
    if (rc < 0) {
        json_decref(after);
        return rc;
    }
    t->result = after;
    return 0;
}

static void decide(struct http_request *req, int approve)
{
    struct decide_tx t = {.req = req, .approve = approve};
    const char *ids = http_param(req, "id");
    char *end;
    errno = 0;
    long long id = strtoll(ids ? ids : "", &end, 10);
    if (errno || *end || id <= 0) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no change request %s", ids ? ids : "");
        return;
    }
    t.id = id;
    const struct jspec_field f[] = {
        {"comment", JSPEC_STRING, 0, 0, 2000, NULL, &t.comment, NULL},
        JSPEC_END,
    };
    json_t *body = http_body(req);
    if (body && jspec_parse(req, body, f, NULL, 0) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    int rc = db_tx(c, decide_fn, &t);
    json_decref(t.ch.result);
    if (rc == -400) {
        http_reply_problem(req, QDB_E_FORBIDDEN, "%s", t.ch.err);
        return;
    }
    if (rc < 0) {
        reply_write_error(req, rc, &t.ch);
        return;
    }
    if (approve)
        reload_env_after_commit(c, json_string_value(json_object_get(t.result, "environment")));
    http_reply_json(req, 200, t.result);
}

void flags_api_change_requests_approve(struct http_request *req)
{
    decide(req, 1);
}

void flags_api_change_requests_reject(struct http_request *req)
{
    decide(req, 0);
}
