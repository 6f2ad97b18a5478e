/* HTTP handlers of /api/v1/segments: named, reusable sets of callers (conditions, plus
 * targeting keys always in or always out) that rules name with in_segment /
 * not_in_segment. A segment still named by a rule cannot be deleted (409). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "flags/flags_store.h"
#include "flags/flags_write.h"
#include "platform/jsonspec.h"
#include "platform/log.h"

struct seg_tx {
    struct http_request *req;
    const char *name, *description;
    json_t *conditions, *included, *excluded;
    const char *verb; /* create, update, delete */
    int64_t expected;
    json_t *result;
};

static int seg_fn(struct db_conn *c, void *cls)
{
    struct seg_tx *t = cls;
    json_t *before = NULL;
    int rc = flags_store_segment_get(c, t->name, &before);
    if (rc < 0)
        return rc;
    if (strcmp(t->verb, "create") != 0 && rc == 0)
        return FLAGS_W_NOT_FOUND;
    if (strcmp(t->verb, "create") == 0)
        rc = flags_store_segment_insert(c, t->name, t->description, t->conditions, t->included,
                                        t->excluded);
    else if (strcmp(t->verb, "update") == 0) {
        rc = flags_store_segment_update(c, t->name, t->description, t->conditions, t->included,
                                        t->excluded, t->expected);
        if (rc == 0) {
            json_decref(before);
            return FLAGS_W_STALE;
        }
    } else {
        json_t *users = NULL;
        rc = flags_store_segment_users(c, t->name, &users);
        size_t n = json_array_size(users);
        json_decref(users);
        if (rc >= 0 && n > 0) {
            json_decref(before);
            return FLAGS_W_CONFLICT;
        }
        if (rc >= 0)
            rc = flags_store_segment_delete(c, t->name);
    }
    json_t *after = NULL;
    if (rc >= 0 && strcmp(t->verb, "delete") != 0)
        rc = flags_store_segment_get(c, t->name, &after);
    if (rc >= 0) {
        char action[40];
        snprintf(action, sizeof action, "segment.%s", t->verb);
        struct audit_entry e = {.action = action, .resource_type = "segment",
                                .resource_id = t->name, .before = before, .after = after};
        rc = audit_record_http(c, t->req, &e);
    }
    if (rc >= 0) {
        char subject[100], verb[20];
        snprintf(subject, sizeof subject, "segments/%s", t->name);
        snprintf(verb, sizeof verb, "segment_%sd", strcmp(t->verb, "create") == 0 ? "create"
                                                   : strcmp(t->verb, "update") == 0 ? "update"
                                                                                    : "delete");
        struct flags_actor who = {t->req, NULL};
        json_t *data = after ? json_incref(after) : json_pack("{s:s}", "name", t->name);
        rc = flags_actor_emit(c, &who, verb, subject, data);
        json_decref(data);
    }
    json_decref(before);
    if (rc < 0) {
        json_decref(after);
        return rc;
    }
    t->result = after;
    return 0;
}

static void run(struct http_request *req, struct seg_tx *t)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    int rc = db_tx(c, seg_fn, t);
    switch (rc) {
    case 0:
        break;
    case FLAGS_W_NOT_FOUND:
        http_reply_problem(req, QDB_E_NOT_FOUND, "no segment %s", t->name);
        return;
    case FLAGS_W_STALE:
        http_reply_problem(req, QDB_E_PRECONDITION_FAILED, "segment %s changed meanwhile",
                           t->name);
        return;
    case FLAGS_W_CONFLICT:
        http_reply_problem(req, QDB_E_CONFLICT, "segment %s is still named by a rule", t->name);
        return;
    case DB_UNIQUE:
        http_reply_problem(req, QDB_E_CONFLICT, "segment %s exists", t->name);
        return;
    default:
        http_reply_db_error(req, rc);
        return;
    }
    if (flags_snapshot_reload(c) != 0)
        log_warn("flags: reload after a segment change failed; the listener will reload");
    if (!t->result) {
        http_reply_empty(req, 204);
        return;
    }
    char etag[32];
    snprintf(etag, sizeof etag, "\"%lld\"",
             (long long)json_integer_value(json_object_get(t->result, "version")));
    http_reply_header(req, "ETag", etag);
    http_reply_json(req, strcmp(t->verb, "create") == 0 ? 201 : 200, t->result);
}

/* Parse and check a segment body into t; 0 or -1 after replying. */
static int parse_body(struct http_request *req, struct seg_tx *t, int with_name)
{
    const struct jspec_field all[] = {
        {"name", JSPEC_STRING, 1, 1, 64, NULL, &t->name, NULL},
        {"description", JSPEC_STRING, 0, 0, 2000, NULL, &t->description, NULL},
        {"conditions", JSPEC_ARRAY, 0, 0, 0, NULL, &t->conditions, NULL},
        {"included", JSPEC_ARRAY, 0, 0, 0, NULL, &t->included, NULL},
        {"excluded", JSPEC_ARRAY, 0, 0, 0, NULL, &t->excluded, NULL},
        JSPEC_END,
    };
    json_t *body = http_body(req);
    if (jspec_parse(req, body, with_name ? all : all + 1, NULL, 0) != 0)
        return -1;
    if (!flags_name_valid(t->name)) {
        http_reply_invalid(req, "name", "a segment name is 1 to 64 of A-Z a-z 0-9 _ . -");
        return -1;
    }
    json_t *seg = json_object();
    if (t->conditions)
        json_object_set(seg, "conditions", t->conditions);
    if (t->included)
        json_object_set(seg, "included", t->included);
    if (t->excluded)
        json_object_set(seg, "excluded", t->excluded);
    char field[128], err[256];
    int bad = flags_segment_check(seg, field, sizeof field, err, sizeof err);
    json_decref(seg);
    if (bad) {
        http_reply_invalid(req, field, "%s", err);
        return -1;
    }
    return 0;
}

void flags_api_segments_list(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *out = NULL;
    int rc = flags_store_segments_list(c, &out);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return;
    }
    http_reply_json(req, 200, out);
}

void flags_api_segments_get(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *out = NULL;
    int rc = flags_store_segment_get(c, http_param(req, "name"), &out);
    if (rc <= 0) {
        if (rc < 0)
            http_reply_db_error(req, rc);
        else
            http_reply_problem(req, QDB_E_NOT_FOUND, "no segment %s", http_param(req, "name"));
        return;
    }
    http_reply_json(req, 200, out);
}

static void fill_defaults(struct seg_tx *t, json_t **owned)
{
    for (int i = 0; i < 3; i++)
        owned[i] = NULL;
    if (!t->conditions)
        t->conditions = owned[0] = json_array();
    if (!t->included)
        t->included = owned[1] = json_array();
    if (!t->excluded)
        t->excluded = owned[2] = json_array();
}

void flags_api_segments_create(struct http_request *req)
{
    struct seg_tx t = {.req = req, .verb = "create"};
    if (parse_body(req, &t, 1) != 0)
        return;
    json_t *owned[3];
    fill_defaults(&t, owned);
    run(req, &t);
    for (int i = 0; i < 3; i++)
        json_decref(owned[i]);
}

void flags_api_segments_update(struct http_request *req)
{
    struct seg_tx t = {.req = req, .verb = "update"};
    t.name = http_param(req, "name");
    if (parse_body(req, &t, 0) != 0)
        return;
    const char *im = http_header(req, "If-Match");
    if (im && strcmp(im, "*") != 0) {
        const char *p = im[0] == '"' ? im + 1 : im;
        t.expected = strtoll(p, NULL, 10);
        if (t.expected <= 0) {
            http_reply_invalid(req, "If-Match", "If-Match is the segment's ETag");
            return;
        }
    }
    json_t *owned[3];
    fill_defaults(&t, owned);
    run(req, &t);
    for (int i = 0; i < 3; i++)
        json_decref(owned[i]);
}

void flags_api_segments_delete(struct http_request *req)
{
    struct seg_tx t = {.req = req, .verb = "delete", .name = http_param(req, "name")};
    run(req, &t);
}
