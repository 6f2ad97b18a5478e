/* HTTP handlers of Kafka topics, consumer groups and Debezium connectors, which share one
 * shape (a document keyed by its name), and POST /api/v1/inventory/import, which loads a
 * file of them (deploy/inventory/seed.json). Each change is audited and emitted in its own
 * transaction. */
#include <stdio.h>
#include <string.h>

#include "audit/audit.h"
#include "auth/auth.h"
#include "inventory/inventory_internal.h"
#include "platform/environment.h"
#include "platform/jsonspec.h"
#include "platform/queryspec.h"

struct kind_info {
    const char *kind;     /* the store's kind */
    const char *what;     /* "topic" in messages, audit action and resource type */
    const char *resource; /* audit resource_type */
    const char *path;     /* collection path */
    /* event subject prefix: short, since a subject is at most 256 bytes and a Kafka name
     * up to 249 */
    const char *subject;
};
static const struct kind_info K_TOPIC = {"topic", "topic", "kafka_topic", "/api/v1/kafka/topics",
                                         "topics"};
static const struct kind_info K_GROUP = {"group", "consumer group", "kafka_consumer_group",
                                         "/api/v1/kafka/consumer-groups", "groups"};
static const struct kind_info K_CONN = {"connector", "connector", "kafka_connector",
                                        "/api/v1/kafka/connectors", "connectors"};

static int check_doc(struct db_conn *c, const struct kind_info *k, json_t *doc, struct inv_fault *f)
{
    if (k == &K_TOPIC)
        return inv_check_topic(c, doc, f);
    if (k == &K_GROUP)
        return inv_check_group(doc, f);
    return inv_check_connector(doc, f);
}

static const char *action_of(const struct kind_info *k, int op)
{
    static const char *const a[3][3] = {
        {"kafka_topic.create", "kafka_topic.update", "kafka_topic.delete"},
        {"kafka_consumer_group.create", "kafka_consumer_group.update",
         "kafka_consumer_group.delete"},
        {"kafka_connector.create", "kafka_connector.update", "kafka_connector.delete"},
    };
    return a[k == &K_TOPIC ? 0 : k == &K_GROUP ? 1 : 2][op];
}

static const char *verb_of(const struct kind_info *k, int op)
{
    static const char *const v[3][3] = {
        {"topic_created", "topic_updated", "topic_deleted"},
        {"consumer_group_created", "consumer_group_updated", "consumer_group_deleted"},
        {"connector_created", "connector_updated", "connector_deleted"},
    };
    return v[k == &K_TOPIC ? 0 : k == &K_GROUP ? 1 : 2][op];
}

/* Topics, groups and connectors are shared by every environment: an API token limited to
 * some environments may read them but not change them. Replies 403 and returns -1. */
static int require_unrestricted(struct http_request *req)
{
    const struct http_principal *p = http_principal(req);
    if (p && p->environments) {
        http_reply_problem(req, QDB_E_FORBIDDEN,
                           "topics, consumer groups and connectors are shared by every "
                           "environment: a token limited to some environments cannot change "
                           "them");
        return -1;
    }
    return 0;
}

static void list(struct http_request *req, const struct kind_info *k)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *items = NULL;
    int rc = inv_store_list(c, k->kind, &items);
    if (rc <= 0)
        http_reply_db_error(req, rc < 0 ? rc : DB_HARD);
    else
        http_reply_json(req, 200, json_pack("{s:o}", "items", items));
}

static void get(struct http_request *req, const struct kind_info *k)
{
    const char *name = http_param(req, "name");
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *doc = NULL;
    int rc = inv_name_is_kafka(name) ? inv_store_get(c, k->kind, name, &doc) : 0;
    if (rc < 0)
        http_reply_db_error(req, rc);
    else if (rc == 0)
        http_reply_problem(req, QDB_E_NOT_FOUND, "no %s %.250s", k->what, name);
    else
        http_reply_json(req, 200, doc);
}

struct kind_tx {
    struct http_request *req;
    const struct kind_info *k;
    int op; /* 0 create, 1 update, 2 delete */
    const char *name;
    json_t *doc; /* borrowed */
    json_t *after;
};

static int change_fn(struct db_conn *c, void *cls)
{
    struct kind_tx *t = cls;
    json_t *before = NULL;
    int rc = 0;
    if (t->op != 0) {
        rc = inv_store_get(c, t->k->kind, t->name, &before);
        if (rc == 0)
            rc = INV_E_NOT_FOUND;
        if (rc < 0)
            goto out;
    }
    rc = t->op == 2 ? inv_store_delete(c, t->k->kind, t->name)
                    : inv_store_put(c, t->k->kind, t->doc, t->op == 1);
    if (rc < 0)
        goto out;
    json_decref(t->after);
    t->after = NULL;
    if (t->op != 2) {
        rc = inv_store_get(c, t->k->kind, t->name, &t->after);
        if (rc <= 0) {
            rc = rc < 0 ? rc : DB_HARD;
            goto out;
        }
    }
    char subject[300];
    snprintf(subject, sizeof subject, "%s/%s", t->k->subject, t->name);
    struct audit_entry e = {.action = action_of(t->k, t->op),
                            .resource_type = t->k->resource,
                            .resource_id = t->name,
                            .before = before,
                            .after = t->after};
    rc = audit_record_http(c, t->req, &e);
    if (rc >= 0)
        rc = audit_event_emit_http(c, t->req,
                                   &(struct audit_event){.room = "inventory",
                                                         .verb = verb_of(t->k, t->op),
                                                         .subject = subject,
                                                         .data = t->after ? t->after : before});
out:
    json_decref(before);
    return rc;
}

static void change_reply(struct http_request *req, struct kind_tx *t, int rc)
{
    if (rc == INV_E_NOT_FOUND)
        http_reply_problem(req, QDB_E_NOT_FOUND, "no %s %.250s", t->k->what, t->name);
    else if (rc == DB_UNIQUE)
        http_reply_problem(req, QDB_E_CONFLICT, "a %s named %.250s exists already", t->k->what,
                           t->name);
    else if (rc < 0)
        http_reply_db_error(req, rc);
    else if (t->op == 2)
        http_reply_empty(req, 204);
    else {
        if (t->op == 0) {
            char loc[400];
            snprintf(loc, sizeof loc, "%s/%s", t->k->path, t->name);
            http_reply_header(req, "Location", loc);
        }
        http_reply_json(req, t->op == 0 ? 201 : 200, t->after);
        return;
    }
    json_decref(t->after);
}

static int has_server_fields(struct http_request *req, json_t *body, int patch)
{
    static const char *const fixed[] = {"created_at", "updated_at", "name", NULL};
    if (!json_is_object(body)) {
        http_reply_invalid(req, "(body)", "the body must be a JSON object");
        return 1;
    }
    for (int i = 0; fixed[i]; i++)
        if ((patch || i < 2) && json_object_get(body, fixed[i])) {
            http_reply_invalid(req, fixed[i], "%s is set by the server or the path", fixed[i]);
            return 1;
        }
    return 0;
}

static void create(struct http_request *req, const struct kind_info *k)
{
    json_t *body = http_body(req);
    if (has_server_fields(req, body, 0) || require_unrestricted(req) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *doc = json_deep_copy(body);
    struct inv_fault f = {"", ""};
    int rc = check_doc(c, k, doc, &f);
    struct kind_tx t = {.req = req,
                        .k = k,
                        .op = 0,
                        .doc = doc,
                        .name = json_string_value(json_object_get(doc, "name"))};
    if (rc == INV_E_INVALID)
        inv_reply_fault(req, &f);
    else {
        if (rc == 0)
            rc = db_tx(c, change_fn, &t);
        change_reply(req, &t, rc);
    }
    json_decref(doc);
}

/* PATCH: a JSON merge patch of the document (top-level members replaced; null resets a
 * member to its default); the result is checked whole. */
static void patch(struct http_request *req, const struct kind_info *k)
{
    const char *name = http_param(req, "name");
    json_t *body = http_body(req);
    if (has_server_fields(req, body, 1) || require_unrestricted(req) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *cur = NULL;
    int rc = inv_name_is_kafka(name) ? inv_store_get(c, k->kind, name, &cur) : 0;
    if (rc <= 0) {
        if (rc < 0)
            http_reply_db_error(req, rc);
        else
            http_reply_problem(req, QDB_E_NOT_FOUND, "no %s %.250s", k->what, name);
        return;
    }
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (json_is_null(v))
            json_object_del(cur, key);
        else
            json_object_set(cur, key, v);
    }
    json_object_del(cur, "created_at");
    json_object_del(cur, "updated_at");
    struct inv_fault f = {"", ""};
    rc = check_doc(c, k, cur, &f);
    struct kind_tx t = {.req = req, .k = k, .op = 1, .doc = cur, .name = name};
    if (rc == INV_E_INVALID)
        inv_reply_fault(req, &f);
    else {
        if (rc == 0)
            rc = db_tx(c, change_fn, &t);
        change_reply(req, &t, rc);
    }
    json_decref(cur);
}

static void delete (struct http_request *req, const struct kind_info *k)
{
    const char *name = http_param(req, "name");
    struct kind_tx t = {.req = req, .k = k, .op = 2, .name = name};
    if (require_unrestricted(req) != 0)
        return;
    if (!inv_name_is_kafka(name)) {
        change_reply(req, &t, INV_E_NOT_FOUND);
        return;
    }
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    change_reply(req, &t, db_tx(c, change_fn, &t));
}

void inventory_api_topics_list(struct http_request *req)
{
    list(req, &K_TOPIC);
}
void inventory_api_topics_get(struct http_request *req)
{
    get(req, &K_TOPIC);
}
void inventory_api_topics_create(struct http_request *req)
{
    create(req, &K_TOPIC);
}
void inventory_api_topics_patch(struct http_request *req)
{
    patch(req, &K_TOPIC);
}
void inventory_api_topics_delete(struct http_request *req)
{
    delete (req, &K_TOPIC);
}
void inventory_api_groups_list(struct http_request *req)
{
    list(req, &K_GROUP);
}
void inventory_api_groups_get(struct http_request *req)
{
    get(req, &K_GROUP);
}
void inventory_api_groups_create(struct http_request *req)
{
    create(req, &K_GROUP);
}
void inventory_api_groups_patch(struct http_request *req)
{
    patch(req, &K_GROUP);
}
void inventory_api_groups_delete(struct http_request *req)
{
    delete (req, &K_GROUP);
}
void inventory_api_connectors_list(struct http_request *req)
{
    list(req, &K_CONN);
}
void inventory_api_connectors_get(struct http_request *req)
{
    get(req, &K_CONN);
}
void inventory_api_connectors_create(struct http_request *req)
{
    create(req, &K_CONN);
}
void inventory_api_connectors_patch(struct http_request *req)
{
    patch(req, &K_CONN);
}
void inventory_api_connectors_delete(struct http_request *req)
{
    delete (req, &K_CONN);
}

/* ---- POST /api/v1/inventory/import ---- */

struct import_tx {
    struct http_request *req;
    json_t *sets[3]; /* checked documents of topics, groups, connectors (borrowed) */
    json_t *summary;
};

static int import_fn(struct db_conn *c, void *cls)
{
    struct import_tx *t = cls;
    static const char *const kinds[] = {"topic", "group", "connector"};
    static const char *const names[] = {"topics", "consumer_groups", "connectors"};
    json_decref(t->summary);
    t->summary = json_object();
    for (int s = 0; s < 3; s++) {
        int created = 0, updated = 0;
        size_t i;
        json_t *d;
        json_array_foreach(t->sets[s], i, d)
        {
            int was_new = 0;
            int rc = inv_store_upsert(c, kinds[s], d, &was_new);
            if (rc < 0)
                return rc;
            created += was_new;
            updated += !was_new;
        }
        json_object_set_new(t->summary, names[s],
                            json_pack("{s:i,s:i}", "created", created, "updated", updated));
    }
    /* one record for the whole import: the route test's rule (one request, one event),
     * with every name it touched in the record */
    json_t *after = json_deep_copy(t->summary);
    for (int s = 0; s < 3; s++) {
        json_t *n = json_array();
        size_t i;
        json_t *d;
        json_array_foreach(t->sets[s], i, d)
        {
            json_array_append(n, json_object_get(d, "name"));
        }
        json_object_set_new(json_object_get(after, names[s]), "names", n);
    }
    struct audit_entry e = {.action = "inventory.import",
                            .resource_type = "inventory",
                            .resource_id = "import",
                            .after = after};
    int rc = audit_record_http(c, t->req, &e);
    if (rc >= 0)
        rc = audit_event_emit_http(c, t->req,
                                   &(struct audit_event){.room = "inventory",
                                                         .verb = "imported",
                                                         .subject = "inventory/import",
                                                         .data = after});
    json_decref(after);
    return rc;
}

/* Body: {"topics": [Topic...], "consumer_groups": [...], "connectors": [...]} (each
 * optional), as in deploy/inventory/seed.json. Each document is checked as its create
 * would check it; any failure refuses the whole import (422 naming "topics[3].partitions")
 * and nothing is written. Existing names are updated, so an import is repeatable. */
void inventory_api_import(struct http_request *req)
{
    json_t *sets[3] = {NULL, NULL, NULL};
    const struct jspec_field f[] = {
        {"topics", JSPEC_ARRAY, 0, 0, 0, NULL, &sets[0], NULL},
        {"consumer_groups", JSPEC_ARRAY, 0, 0, 0, NULL, &sets[1], NULL},
        {"connectors", JSPEC_ARRAY, 0, 0, 0, NULL, &sets[2], NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, http_body(req), f, NULL, 0) != 0 || require_unrestricted(req) != 0)
        return;
    if (!sets[0] && !sets[1] && !sets[2]) {
        http_reply_invalid(req, "topics", "give topics, consumer_groups or connectors");
        return;
    }
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    static const char *const names[] = {"topics", "consumer_groups", "connectors"};
    const struct kind_info *ks[] = {&K_TOPIC, &K_GROUP, &K_CONN};
    struct import_tx t = {.req = req};
    int rc = 0;
    for (int s = 0; s < 3 && rc == 0; s++) {
        t.sets[s] = json_array();
        size_t i;
        json_t *d;
        json_array_foreach(sets[s], i, d)
        {
            json_t *copy = json_deep_copy(d);
            struct inv_fault fl = {"", ""};
            rc = copy ? check_doc(c, ks[s], copy, &fl) : inv_fault(&fl, names[s], "not an object");
            if (rc == INV_E_INVALID) {
                struct inv_fault wrapped = {"", ""};
                char field[160];
                snprintf(field, sizeof field, "%s[%zu]%s%.100s", names[s], i,
                         fl.field[0] ? "." : "", fl.field);
                inv_fault(&wrapped, field, "%s[%zu]: %s", names[s], i, fl.detail);
                inv_reply_fault(req, &wrapped);
            } else if (rc < 0)
                http_reply_db_error(req, rc);
            if (rc != 0) {
                json_decref(copy);
                break;
            }
            json_array_append_new(t.sets[s], copy);
        }
    }
    if (rc == 0) {
        rc = db_tx(c, import_fn, &t);
        if (rc < 0)
            http_reply_db_error(req, rc);
        else
            http_reply_json(req, 200, json_incref(t.summary));
    }
    for (int s = 0; s < 3; s++)
        json_decref(t.sets[s]);
    json_decref(t.summary);
}

/* ---- GET /api/v1/kafka/consumer-groups/{name}/lag?environment= ---- */

void inventory_api_groups_lag(struct http_request *req)
{
    const char *env = NULL, *name = http_param(req, "name");
    const struct qspec_param q[] = {
        {"environment", QSPEC_STRING, 1, 1, 32, NULL, &env, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *group = NULL, *targets = NULL;
    int64_t cap;
    int rc = inv_name_is_kafka(name) ? inv_store_get(c, "group", name, &group) : 0;
    if (rc == 0) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no consumer group %.250s", name);
        return;
    }
    if (rc > 0)
        rc = environment_exists(c, env);
    if (rc == 0) {
        json_decref(group);
        struct inv_fault f = {"", ""};
        inv_fault(&f, "environment", "no environment %.32s", env);
        inv_reply_fault(req, &f);
        return;
    }
    if (rc > 0)
        rc = inv_env_targets(c, env, &targets, &cap);
    if (rc <= 0) {
        json_decref(group);
        http_reply_db_error(req, rc < 0 ? rc : DB_HARD);
        return;
    }
    json_t *kafka = json_object_get(targets, "kafka");
    if (!kafka) {
        http_reply_problem(req, QDB_E_TARGET_NOT_CONFIGURED, "environment %s has no kafka target",
                           env);
        goto out;
    }
    json_t *lag = NULL;
    char err[512] = "";
    if (inv_kafka_lag(kafka, group, inv_target_timeout_ms(), &lag, err, sizeof err) != 0) {
        http_reply_problem(req, QDB_E_TARGET_UNAVAILABLE, "Kafka of %s: %s", env, err);
        goto out;
    }
    json_object_set_new(lag, "group", json_string(name));
    json_object_set_new(lag, "environment", json_string(env));
    json_object_set(lag, "threshold", json_object_get(group, "lag_threshold"));
    http_reply_json(req, 200, lag);
out:
    json_decref(group);
    json_decref(targets);
}
