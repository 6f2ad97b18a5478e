/* HTTP handlers of the backup room: policies (CRUD, their schedules kept in step in the
 * same transaction), the catalog, the 202s that start backups, verifications and
 * restores, the RPO/RTO table and the reports of the components other systems back up.
 * Every change is audited and emitted in its own transaction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "audit/audit.h"
#include "auth/auth.h"
#include "backup/backup_internal.h"
#include "inventory/inventory.h"
#include "platform/jsonspec.h"
#include "platform/queryspec.h"
#include "platform/rfc3339.h"

static int id_param(struct http_request *req, const char *what, int64_t *id)
{
    const char *s = http_param(req, "id");
    char *end = NULL;
    long long v = s && s[0] >= '1' && s[0] <= '9' && strlen(s) <= 18 ? strtoll(s, &end, 10) : 0;
    if (!end || *end || v <= 0) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no %s %.40s", what, s ? s : "");
        return -1;
    }
    *id = v;
    return 0;
}

static int emit(struct db_conn *c, struct http_request *req, const char *action,
                const char *type, const char *rid, const char *environment, json_t *before,
                json_t *after, const char *verb, const char *subject)
{
    struct audit_entry e = {.action = action,
                            .resource_type = type,
                            .resource_id = rid,
                            .environment = environment,
                            .before = before,
                            .after = after};
    int rc = audit_record_http(c, req, &e);
    if (rc >= 0)
        rc = audit_event_emit_http(c, req,
                                   &(struct audit_event){.room = "backup",
                                                         .verb = verb,
                                                         .subject = subject,
                                                         .data = after ? after : before});
    return rc;
}

/* ---- policies ---- */

static const char *const methods[] = {"basebackup", "dump", "external", NULL};

/* A member that must be a cron expression or null. */
static int cron_member(struct http_request *req, json_t *body, const char *name)
{
    json_t *v = json_object_get(body, name);
    char err[200];
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) > 100 ||
        !jobs_cron_valid(json_string_value(v), err, sizeof err)) {
        http_reply_invalid(req, name, "%s: a five-field cron expression (UTC) or null%s%s", name,
                           json_is_string(v) ? ": " : "", json_is_string(v) ? err : "");
        return -1;
    }
    return 0;
}

static int nullable_int(struct http_request *req, json_t *body, const char *name)
{
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1000000) {
        http_reply_invalid(req, name, "%s: an integer of at least 1, or null", name);
        return -1;
    }
    return 0;
}

/* Fields of a policy body; creating needs component, method, rpo and rto. */
static int policy_parse(struct http_request *req, json_t *body, int create)
{
    const char *s = NULL;
    int64_t n = 0;
    int b = 0, m = 0;
    json_t *any = NULL, *tables = NULL;
    const struct jspec_field f[] = {
        {"component", JSPEC_STRING, create, 1, 63, NULL, &s, NULL},
        {"title", JSPEC_STRING, 0, 0, 200, NULL, &s, NULL},
        {"method", JSPEC_ENUM, create, 0, 0, methods, &m, NULL},
        {"environment", JSPEC_ANY, 0, 0, 0, NULL, &any, NULL},
        {"database", JSPEC_ANY, 0, 0, 0, NULL, &any, NULL},
        {"schedule", JSPEC_ANY, 0, 0, 0, NULL, &any, NULL},
        {"verify_schedule", JSPEC_ANY, 0, 0, 0, NULL, &any, NULL},
        {"offsite_schedule", JSPEC_ANY, 0, 0, 0, NULL, &any, NULL},
        {"retention_count", JSPEC_ANY, 0, 0, 0, NULL, &any, NULL},
        {"retention_days", JSPEC_ANY, 0, 0, 0, NULL, &any, NULL},
        {"rpo_seconds", JSPEC_INT, create, 0, 100LL * 365 * 86400, NULL, &n, NULL},
        {"rto_seconds", JSPEC_INT, create, 1, 100LL * 365 * 86400, NULL, &n, NULL},
        {"tables", JSPEC_ARRAY, 0, 0, 0, NULL, &tables, NULL},
        {"enabled", JSPEC_BOOL, 0, 0, 0, NULL, &b, NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, body, f, NULL, 0) != 0)
        return -1;
    const char *comp = json_string_value(json_object_get(body, "component"));
    if (create) {
        int okc = comp[0] >= 'a' && comp[0] <= 'z';
        for (const char *p = comp; *p; p++)
            okc &= (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-';
        if (!okc) {
            http_reply_invalid(req, "component", "component: [a-z][a-z0-9-]* expected");
            return -1;
        }
    } else if (comp || json_object_get(body, "method")) {
        const char *which = comp ? "component" : "method";
        http_reply_invalid(req, which, "%s cannot change: delete the policy and create another",
                           which);
        return -1;
    }
    static const char *const strs[] = {"environment", "database", NULL};
    for (int i = 0; strs[i]; i++) {
        json_t *v = json_object_get(body, strs[i]);
        if (v && !json_is_null(v) && (!json_is_string(v) || json_string_length(v) < 1 ||
                                      json_string_length(v) > 63)) {
            http_reply_invalid(req, strs[i], "%s: a name or null", strs[i]);
            return -1;
        }
    }
    size_t i;
    json_t *t;
    json_array_foreach(tables, i, t)
    {
        if (!json_is_string(t) || json_string_length(t) < 1 || json_string_length(t) > 127) {
            http_reply_invalid(req, "tables", "tables: names of tables (\"t\" or \"schema.t\")");
            return -1;
        }
    }
    if (create && strcmp(methods[m], "external") != 0) {
        /* a policy that takes backups names its database and how many to keep */
        static const char *const need[] = {"environment", "database", NULL};
        for (int k = 0; need[k]; k++)
            if (!json_is_string(json_object_get(body, need[k]))) {
                http_reply_invalid(req, need[k], "%s: required for method %s", need[k],
                                   methods[m]);
                return -1;
            }
        if (!json_is_integer(json_object_get(body, "retention_count")) &&
            !json_is_integer(json_object_get(body, "retention_days"))) {
            http_reply_invalid(req, "retention_count",
                               "retention_count or retention_days: required for method %s",
                               methods[m]);
            return -1;
        }
    }
    if (cron_member(req, body, "schedule") || cron_member(req, body, "verify_schedule") ||
        cron_member(req, body, "offsite_schedule") ||
        nullable_int(req, body, "retention_count") || nullable_int(req, body, "retention_days"))
        return -1;
    return 0;
}

/* The policy after the change must name a managed database (unless external) and a
 * retention; answers 422 and returns -1 otherwise. */
static int policy_check(struct db_conn *c, struct http_request *req, const json_t *doc)
{
    if (strcmp(json_string_value(json_object_get(doc, "method")), "external") == 0)
        return 0;
    const char *env = json_string_value(json_object_get(doc, "environment"));
    const char *db = json_string_value(json_object_get(doc, "database"));
    struct inventory_database d;
    int rc = env && db ? inventory_database_lookup(c, 0, env, db, &d) : 0;
    if (rc < 0)
        return rc;
    if (rc == 0) {
        http_reply_problem_ext(req, QDB_E_BACKUP_INVALID, json_pack("{s:s}", "field", "database"),
                               "no managed database %s/%s in the inventory", env ? env : "?",
                               db ? db : "?");
        return -1;
    }
    if (json_is_null(json_object_get(doc, "retention_count")) &&
        json_is_null(json_object_get(doc, "retention_days"))) {
        http_reply_problem_ext(req, QDB_E_BACKUP_INVALID,
                               json_pack("{s:s}", "field", "retention_count"),
                               "a policy that takes backups needs retention_count or "
                               "retention_days");
        return -1;
    }
    return 0;
}

void backup_api_policies_list(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *items = NULL;
    int rc = bk_store_policy_list(c, &items);
    if (rc <= 0)
        http_reply_db_error(req, rc < 0 ? rc : DB_HARD);
    else
        http_reply_json(req, 200, json_pack("{s:o}", "items", items));
}

void backup_api_policies_get(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *doc = NULL;
    const char *comp = http_param(req, "component");
    int rc = bk_store_policy_get(c, comp, &doc);
    if (rc < 0)
        http_reply_db_error(req, rc);
    else if (rc == 0)
        http_reply_problem(req, QDB_E_NOT_FOUND, "no backup policy %.64s", comp);
    else
        http_reply_json(req, 200, doc);
}

struct policy_tx {
    struct http_request *req;
    const char *component;
    json_t *body; /* borrowed */
    json_t *before, *after;
    int replied;
    int op; /* 0 create, 1 update, 2 delete */
};

static int policy_fn(struct db_conn *c, void *cls)
{
    struct policy_tx *t = cls;
    json_decref(t->before);
    json_decref(t->after);
    t->before = t->after = NULL;
    int rc;
    if (t->op != 0) {
        rc = bk_store_policy_get(c, t->component, &t->before);
        if (rc <= 0)
            return rc < 0 ? rc : BK_E_NOT_FOUND;
    }
    if (t->op == 0)
        rc = bk_store_policy_insert(c, t->body, &t->after);
    else if (t->op == 1)
        rc = bk_store_policy_update(c, t->component, t->body, &t->after);
    else
        rc = bk_store_policy_delete(c, t->component);
    if (rc < 0)
        return rc;
    char err[300] = "";
    if (t->op == 2) {
        rc = bk_schedules_drop(c, t->component);
    } else {
        rc = policy_check(c, t->req, t->after);
        if (rc == -1) {
            t->replied = 1;
            return BK_E_STATE;
        }
        if (rc == 0)
            rc = bk_schedules_sync(c, t->after, err, sizeof err);
        if (rc == -1) {
            http_reply_invalid(t->req, "schedule", "%s", err);
            t->replied = 1;
            return BK_E_STATE;
        }
    }
    if (rc < 0)
        return rc;
    static const char *const actions[] = {"backup_policy.create", "backup_policy.update",
                                          "backup_policy.delete"};
    static const char *const verbs[] = {"policy_created", "policy_updated", "policy_deleted"};
    const json_t *doc = t->after ? t->after : t->before;
    const char *comp = json_string_value(json_object_get(doc, "component"));
    char subject[100];
    snprintf(subject, sizeof subject, "backup-policies/%s", comp);
    return emit(c, t->req, actions[t->op], "backup_policy", comp,
                json_string_value(json_object_get(doc, "environment")), t->before, t->after,
                verbs[t->op], subject);
}

static void policy_write(struct http_request *req, int op)
{
    json_t *body = op == 2 ? NULL : http_body(req);
    if (op != 2 && policy_parse(req, body, op == 0) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    struct policy_tx t = {.req = req, .component = http_param(req, "component"), .body = body,
                          .op = op};
    const char *env = json_string_value(json_object_get(body, "environment"));
    if (env && auth_require_environment(req, env) != 0)
        return;
    int rc = db_tx(c, policy_fn, &t);
    if (t.replied)
        ;
    else if (rc == BK_E_NOT_FOUND)
        http_reply_problem(req, QDB_E_NOT_FOUND, "no backup policy %.64s", t.component);
    else if (rc == DB_UNIQUE)
        http_reply_problem(req, QDB_E_CONFLICT, "a backup policy %.64s exists",
                           json_string_value(json_object_get(body, "component")));
    else if (rc == DB_INVALID || rc == DB_CONFLICT)
        http_reply_problem(req, QDB_E_BACKUP_INVALID, "the policy breaks a rule: %s",
                           "a taking policy needs an environment, a database and a retention");
    else if (rc < 0)
        http_reply_db_error(req, rc);
    else if (op == 2)
        http_reply_empty(req, 204);
    else {
        http_reply_json(req, op == 0 ? 201 : 200, t.after);
        t.after = NULL;
    }
    json_decref(t.before);
    json_decref(t.after);
}

void backup_api_policies_create(struct http_request *req) { policy_write(req, 0); }
void backup_api_policies_patch(struct http_request *req) { policy_write(req, 1); }
void backup_api_policies_delete(struct http_request *req) { policy_write(req, 2); }

/* ---- the catalog ---- */

static const char *const statuses[] = {"running", "completed", "failed", "verified",
                                       "bad",     "pruned",    NULL};

void backup_api_list(struct http_request *req)
{
    int64_t database = 0, limit = 100;
    int status = -1;
    const struct qspec_param q[] = {
        {"database", QSPEC_INT, 0, 1, INT64_MAX / 2, NULL, &database, NULL},
        {"status", QSPEC_ENUM, 0, 0, 0, statuses, &status, NULL},
        {"limit", QSPEC_INT, 0, 1, 1000, NULL, &limit, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *items = NULL;
    int rc = bk_store_backup_list(c, database, status >= 0 ? statuses[status] : NULL, (int)limit,
                                  &items);
    if (rc <= 0)
        http_reply_db_error(req, rc < 0 ? rc : DB_HARD);
    else
        http_reply_json(req, 200, json_pack("{s:o}", "items", items));
}

void backup_api_get(struct http_request *req)
{
    int64_t id;
    if (id_param(req, "backup", &id) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *doc = NULL;
    int rc = bk_store_backup_get(c, id, 1, &doc);
    if (rc < 0)
        http_reply_db_error(req, rc);
    else if (rc == 0)
        http_reply_problem(req, QDB_E_NOT_FOUND, "no backup %lld", (long long)id);
    else
        http_reply_json(req, 200, doc);
}

struct enqueue_tx {
    struct http_request *req;
    const char *kind, *action, *type, *verb, *environment;
    char rid[40], subject[120];
    json_t *args; /* borrowed */
    int64_t job_id;
};

static int enqueue_fn(struct db_conn *c, void *cls)
{
    struct enqueue_tx *t = cls;
    const struct http_principal *p = http_principal(t->req);
    int rc = bk_enqueue(c, t->kind, t->args, p ? p->subject : "system", &t->job_id);
    if (rc < 0)
        return rc;
    json_t *after = json_pack("{s:O,s:s,s:I}", "args", t->args, "kind", t->kind, "job_id",
                              (json_int_t)t->job_id);
    rc = emit(c, t->req, t->action, t->type, t->rid, t->environment, NULL, after, t->verb,
              t->subject);
    json_decref(after);
    return rc;
}

static void enqueue_reply(struct http_request *req, struct db_conn *c, struct enqueue_tx *t)
{
    int rc = db_tx(c, enqueue_fn, t);
    if (rc < 0)
        http_reply_db_error(req, rc);
    else
        jobs_reply_accepted(req, c, t->job_id);
}

/* POST /api/v1/databases/{id}/backups {"method"?: "basebackup" | "dump"} */
void backup_api_run(struct http_request *req)
{
    int64_t id;
    int m = -1;
    static const char *const taking[] = {"basebackup", "dump", NULL};
    const struct jspec_field f[] = {
        {"method", JSPEC_ENUM, 0, 0, 0, taking, &m, NULL},
        JSPEC_END,
    };
    if (id_param(req, "database", &id) != 0 || jspec_parse(req, http_body(req), f, NULL, 0) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    struct inventory_database db;
    int rc = inventory_database_lookup(c, id, NULL, NULL, &db);
    if (rc <= 0) {
        if (rc < 0)
            http_reply_db_error(req, rc);
        else
            http_reply_problem(req, QDB_E_NOT_FOUND, "no database %lld", (long long)id);
        return;
    }
    if (auth_require_environment(req, db.environment) != 0)
        return;
    json_t *policy = NULL;
    rc = bk_store_policy_for(c, db.environment, db.name, m >= 0 ? taking[m] : "", &policy);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return;
    }
    const char *method = m >= 0 ? taking[m]
                         : policy ? json_string_value(json_object_get(policy, "method"))
                                  : "basebackup";
    char key[120];
    snprintf(key, sizeof key, "%s/%s", db.environment, db.name);
    json_t *args = json_pack("{s:s}", "database", key);
    if (policy)
        json_object_set(args, "policy", json_object_get(policy, "component"));
    struct enqueue_tx t = {.req = req,
                           .kind = strcmp(method, "dump") == 0 ? "backup.dump" : "backup.base",
                           .action = "backup.request",
                           .type = "database",
                           .verb = "requested",
                           .environment = db.environment,
                           .args = args};
    snprintf(t.rid, sizeof t.rid, "%lld", (long long)id);
    snprintf(t.subject, sizeof t.subject, "databases/%lld", (long long)id);
    enqueue_reply(req, c, &t);
    json_decref(args);
    json_decref(policy);
}

/* The backup of the path, 404 when absent, 409 unless its status is one of `ok` (NULL-
 * terminated). Returns the document (new) or NULL after replying. */
static json_t *backup_for_action(struct http_request *req, struct db_conn *c, int64_t id,
                                 const char *const *ok, const char *what)
{
    json_t *doc = NULL;
    int rc = bk_store_backup_get(c, id, 0, &doc);
    if (rc <= 0) {
        if (rc < 0)
            http_reply_db_error(req, rc);
        else
            http_reply_problem(req, QDB_E_NOT_FOUND, "no backup %lld", (long long)id);
        return NULL;
    }
    const char *status = json_string_value(json_object_get(doc, "status"));
    for (int i = 0; ok[i]; i++)
        if (strcmp(ok[i], status) == 0)
            return doc;
    http_reply_problem(req, QDB_E_BACKUP_STATE, "backup %lld is %s: it cannot be %s",
                       (long long)id, status, what);
    json_decref(doc);
    return NULL;
}

void backup_api_verify(struct http_request *req)
{
    int64_t id;
    if (id_param(req, "backup", &id) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    static const char *const ok[] = {"completed", "verified", "bad", NULL};
    json_t *doc = backup_for_action(req, c, id, ok, "verified");
    if (!doc)
        return;
    const char *env = json_string_value(json_object_get(doc, "environment"));
    if (auth_require_environment(req, env) != 0) {
        json_decref(doc);
        return;
    }
    json_t *args = json_pack("{s:I}", "backup", (json_int_t)id);
    struct enqueue_tx t = {.req = req,
                           .kind = "backup.verify",
                           .action = "backup.verify_request",
                           .type = "backup",
                           .verb = "verify_requested",
                           .environment = env,
                           .args = args};
    snprintf(t.rid, sizeof t.rid, "%lld", (long long)id);
    snprintf(t.subject, sizeof t.subject, "backups/%lld", (long long)id);
    enqueue_reply(req, c, &t);
    json_decref(args);
    json_decref(doc);
}

/* POST /api/v1/backups/{id}/restore {"target": database id, "force"?: bool,
 * "point_in_time"?: "latest" | RFC 3339}: refuses the backup's own source, a target that
 * holds tables unless force, and a point in time the streamed WAL cannot reach. */
void backup_api_restore(struct http_request *req)
{
    int64_t id, target = 0;
    int force = 0;
    const char *pit = NULL;
    const struct jspec_field f[] = {
        {"target", JSPEC_INT, 1, 1, INT64_MAX / 2, NULL, &target, NULL},
        {"force", JSPEC_BOOL, 0, 0, 0, NULL, &force, NULL},
        {"point_in_time", JSPEC_STRING, 0, 1, 64, NULL, &pit, NULL},
        JSPEC_END,
    };
    if (id_param(req, "backup", &id) != 0 || jspec_parse(req, http_body(req), f, NULL, 0) != 0)
        return;
    int64_t pit_us = 0;
    if (pit && strcmp(pit, "latest") != 0 && rfc3339_parse(pit, strlen(pit), &pit_us) != 0) {
        http_reply_invalid(req, "point_in_time",
                           "point_in_time: \"latest\" or an RFC 3339 time (2026-12-01T14:00:00Z)");
        return;
    }
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    static const char *const ok[] = {"completed", "verified", NULL};
    json_t *doc = backup_for_action(req, c, id, ok, "restored");
    if (!doc)
        return;
    struct inventory_database db;
    char err[512];
    if (pit) {
        int prc = bk_pitr_check(c, doc, pit, &pit_us, err, sizeof err);
        if (prc < -1) {
            http_reply_db_error(req, prc);
            goto out;
        }
        if (prc != 0) {
            http_reply_problem_ext(req, QDB_E_BACKUP_INVALID,
                                   json_pack("{s:s}", "field", "point_in_time"), "%s", err);
            goto out;
        }
    }
    int rc = inventory_database_lookup(c, target, NULL, NULL, &db);
    if (rc <= 0) {
        if (rc < 0)
            http_reply_db_error(req, rc);
        else
            http_reply_problem_ext(req, QDB_E_BACKUP_INVALID, json_pack("{s:s}", "field", "target"),
                                   "no managed database %lld to restore into", (long long)target);
        goto out;
    }
    if (auth_require_environment(req, db.environment) != 0)
        goto out;
    if (target == json_integer_value(json_object_get(doc, "database_id")) ||
        (strcmp(db.environment, json_string_value(json_object_get(doc, "environment"))) == 0 &&
         strcmp(db.name, json_string_value(json_object_get(doc, "database"))) == 0)) {
        http_reply_problem(req, QDB_E_CONFLICT,
                           "backup %lld was taken of database %lld: restoring onto its own source "
                           "is refused (restore into another database)",
                           (long long)id, (long long)target);
        goto out;
    }
    int tables = bk_target_tables(&db, err, sizeof err);
    if (tables < 0) {
        http_reply_problem(req, QDB_E_TARGET_UNAVAILABLE, "target %s/%s: %s", db.environment,
                           db.name, err);
        goto out;
    }
    if (tables > 0 && !force) {
        http_reply_problem(req, QDB_E_CONFLICT,
                           "target %s/%s holds %d tables: restoring would overwrite them; "
                           "send \"force\": true to replace them",
                           db.environment, db.name, tables);
        goto out;
    }
    char key[120];
    snprintf(key, sizeof key, "%s/%s", db.environment, db.name);
    json_t *args = json_pack("{s:I,s:s,s:b}", "backup", (json_int_t)id, "target", key, "force",
                             force);
    if (pit)
        json_object_set_new(args, "point_in_time", json_string(pit));
    struct enqueue_tx t = {.req = req,
                           .kind = "backup.restore",
                           .action = "backup.restore_request",
                           .type = "backup",
                           .verb = "restore_requested",
                           .environment = db.environment,
                           .args = args};
    snprintf(t.rid, sizeof t.rid, "%lld", (long long)id);
    snprintf(t.subject, sizeof t.subject, "backups/%lld", (long long)id);
    enqueue_reply(req, c, &t);
    json_decref(args);
out:
    json_decref(doc);
}

/* ---- RPO/RTO ---- */

void backup_api_status(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *rows = NULL;
    int rc = bk_status_compute(c, &rows);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return;
    }
    const char *worst = "ok";
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
    {
        const char *s = json_string_value(json_object_get(r, "state"));
        if (strcmp(s, "breach") == 0 || (strcmp(s, "warning") == 0 && strcmp(worst, "ok") == 0))
            worst = s;
        json_object_del(r, "previous_state");
    }
    http_reply_json(req, 200, json_pack("{s:s,s:o}", "state", worst, "components", rows));
}

struct report_tx {
    struct http_request *req;
    const char *component, *detail;
    int64_t started, finished, size;
    int ok;
    double restore_s;
    json_t *doc;
};

static int report_fn(struct db_conn *c, void *cls)
{
    struct report_tx *t = cls;
    json_t *pol = NULL;
    int rc = bk_store_policy_get(c, t->component, &pol);
    if (rc <= 0)
        return rc < 0 ? rc : BK_E_NOT_FOUND;
    json_decref(pol);
    const struct http_principal *p = http_principal(t->req);
    json_decref(t->doc);
    t->doc = NULL;
    rc = bk_store_report_insert(c, t->component, t->started, t->finished, t->ok, t->size,
                                t->restore_s, t->detail, p ? p->subject : "unknown", &t->doc);
    if (rc <= 0)
        return rc < 0 ? rc : DB_HARD;
    char rid[32], subject[100];
    snprintf(rid, sizeof rid, "%lld", (long long)json_integer_value(json_object_get(t->doc, "id")));
    snprintf(subject, sizeof subject, "components/%s", t->component);
    return emit(c, t->req, "backup_report.create", "backup_report", rid, NULL, NULL, t->doc,
                "reported", subject);
}

/* POST /api/v1/backups/reports {component, started_at, finished_at, ok, size_bytes?,
 * restore_seconds?, detail?} by the system that backs the component up. */
void backup_api_report(struct http_request *req)
{
    struct report_tx t = {.req = req, .size = -1, .restore_s = -1, .detail = ""};
    int64_t restore_ms = -1;
    json_t *restore = NULL;
    const struct jspec_field f[] = {
        {"component", JSPEC_STRING, 1, 1, 63, NULL, &t.component, NULL},
        {"started_at", JSPEC_TIME, 1, 0, 0, NULL, &t.started, NULL},
        {"finished_at", JSPEC_TIME, 1, 0, 0, NULL, &t.finished, NULL},
        {"ok", JSPEC_BOOL, 1, 0, 0, NULL, &t.ok, NULL},
        {"size_bytes", JSPEC_INT, 0, 0, INT64_MAX / 2, NULL, &t.size, NULL},
        {"restore_seconds", JSPEC_ANY, 0, 0, 0, NULL, &restore, NULL},
        {"detail", JSPEC_STRING, 0, 0, 2000, NULL, &t.detail, NULL},
        JSPEC_END,
    };
    (void)restore_ms;
    if (jspec_parse(req, http_body(req), f, NULL, 0) != 0)
        return;
    if (restore) {
        if (!json_is_number(restore) || json_number_value(restore) < 0 ||
            json_number_value(restore) > 1e8) {
            http_reply_invalid(req, "restore_seconds", "restore_seconds: a number of seconds");
            return;
        }
        t.restore_s = json_number_value(restore);
    }
    if (t.finished < t.started) {
        http_reply_invalid(req, "finished_at", "finished_at: before started_at");
        return;
    }
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    int rc = db_tx(c, report_fn, &t);
    if (rc == BK_E_NOT_FOUND)
        http_reply_problem_ext(req, QDB_E_BACKUP_INVALID, json_pack("{s:s}", "field", "component"),
                               "no protected component %.64s", t.component);
    else if (rc < 0)
        http_reply_db_error(req, rc);
    else {
        http_reply_json(req, 201, t.doc);
        return;
    }
    json_decref(t.doc);
}
