/* HTTP handlers of /api/v1/schedules: parse, authorize, call the schedule store (with the
 * audit record in the same transaction), shape the reply. A schedule enqueues a job of its
 * kind with its args at each time its cron expression (UTC) matches; the leader that fires
 * them is in jobs_cron.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "jobs/jobs_internal.h"
#include "platform/jsonspec.h"

/* A reason a transaction function gives for rolling back (below -100, see db_tx). */
enum { E_NOT_FOUND = -201 };

static int valid_schedule_name(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char ch = s[n];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
              ch == '.'))
            return 0;
    }
    return n >= 1 && n <= 100;
}

void jobs_api_schedules_list(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    PGresult *res = NULL;
    int rows = jobs_store_schedule_list(c, &res);
    if (rows < 0) {
        http_reply_db_error(req, rows);
        return;
    }
    json_t *items = json_array();
    for (int r = 0; r < rows; r++)
        json_array_append_new(items, json_loads(PQgetvalue(res, r, 0), 0, NULL));
    PQclear(res);
    http_reply_json(req, 200, json_pack("{s:o}", "items", items));
}

/* The kind and args of a schedule, checked as an enqueue would check them. Replies 400 and
 * returns -1 on failure. */
static int check_kind_args(struct http_request *req, const char *kind, json_t *args)
{
    const struct jobs_kind *k = jobs_find_kind(kind);
    if (!k) {
        http_reply_invalid(req, "kind", "no job kind \"%s\"", kind);
        return -1;
    }
    char why[300] = "";
    json_t *empty = json_object();
    int rc = k->validate ? k->validate(args ? args : empty, why, sizeof why) : 0;
    json_decref(empty);
    if (rc != 0) {
        http_reply_invalid(req, "args", "args: %s", why);
        return -1;
    }
    return 0;
}

static int check_cron(struct http_request *req, const char *cron, int64_t *next)
{
    struct jobs_cron cr;
    char why[256];
    if (jobs_cron_parse(cron, &cr, why, sizeof why) != 0) {
        http_reply_invalid(req, "cron", "cron: %s", why);
        return -1;
    }
    *next = jobs_cron_next(&cr, (int64_t)time(NULL));
    if (*next < 0) {
        http_reply_invalid(req, "cron", "cron: \"%s\" never matches a date", cron);
        return -1;
    }
    return 0;
}

struct sched_tx {
    struct http_request *req;
    const char *name, *cron, *kind;
    const json_t *args; /* borrowed from the request body; NULL = none given */
    int enabled;        /* on update, -1 = not given */
    int64_t next;
    int create;
    json_t *doc; /* the schedule after the change */
};

static int schedule_fn(struct db_conn *c, void *cls)
{
    struct sched_tx *t = cls;
    json_t *before = NULL;
    int rc;
    if (t->create) {
        rc = jobs_store_schedule_insert(c, t->name, t->cron, t->kind, t->args, t->enabled, t->next);
    } else {
        rc = jobs_store_schedule_get(c, t->name, &before);
        if (rc == 0)
            rc = E_NOT_FOUND;
        if (rc < 0)
            goto out;
        rc = jobs_store_schedule_update(c, t->name, t->cron, t->args, t->enabled, t->next);
    }
    if (rc < 0)
        goto out;
    json_decref(t->doc);
    rc = jobs_store_schedule_get(c, t->name, &t->doc);
    if (rc <= 0) {
        rc = rc < 0 ? rc : DB_HARD;
        goto out;
    }
    struct audit_entry e = {.action = t->create ? "schedule.create" : "schedule.update",
                            .resource_type = "schedule",
                            .resource_id = t->name,
                            .before = before,
                            .after = t->doc};
    rc = audit_record_http(c, t->req, &e);
    if (rc >= 0) {
        char subject[160];
        snprintf(subject, sizeof subject, "schedules/%s", t->name);
        struct audit_event ev = {.room = "jobs",
                                 .verb = t->create ? "schedule_created" : "schedule_updated",
                                 .subject = subject,
                                 .data = t->doc};
        rc = audit_event_emit_http(c, t->req, &ev);
    }
out:
    json_decref(before);
    return rc;
}

static void schedule_reply(struct http_request *req, struct sched_tx *t, int rc)
{
    if (rc == E_NOT_FOUND)
        http_reply_problem(req, QDB_E_NOT_FOUND, "no schedule %s", t->name);
    else if (rc == DB_UNIQUE)
        http_reply_problem(req, QDB_E_CONFLICT, "a schedule named %s exists already", t->name);
    else if (rc < 0)
        http_reply_db_error(req, rc);
    else {
        json_incref(t->doc);
        http_reply_json(req, t->create ? 201 : 200, t->doc);
    }
    json_decref(t->doc);
}

void jobs_api_schedules_create(struct http_request *req)
{
    const char *name = NULL, *cron = NULL, *kind = NULL;
    json_t *args = NULL;
    int enabled = 1;
    const struct jspec_field f[] = {
        {"name", JSPEC_STRING, 1, 1, 100, NULL, &name, NULL},
        {"cron", JSPEC_STRING, 1, 1, 200, NULL, &cron, NULL},
        {"kind", JSPEC_STRING, 1, 1, 100, NULL, &kind, NULL},
        {"args", JSPEC_OBJECT, 0, 0, 0, NULL, &args, NULL},
        {"enabled", JSPEC_BOOL, 0, 0, 0, NULL, &enabled, NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, http_body(req), f, NULL, 0) != 0)
        return;
    if (!valid_schedule_name(name)) {
        http_reply_invalid(req, "name", "name must be 1 to 100 of a-z, 0-9, '-', '_' and '.'");
        return;
    }
    struct sched_tx t = {
        .req = req, .name = name, .cron = cron, .kind = kind, .enabled = enabled, .create = 1};
    if (check_cron(req, cron, &t.next) != 0 || check_kind_args(req, kind, args) != 0)
        return;
    t.args = args;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    int rc = db_tx(c, schedule_fn, &t);
    if (rc >= 0) {
        char loc[160];
        snprintf(loc, sizeof loc, "/api/v1/schedules/%s", name);
        http_reply_header(req, "Location", loc);
    }
    schedule_reply(req, &t, rc);
}

void jobs_api_schedules_update(struct http_request *req)
{
    const char *name = http_param(req, "name");
    const char *cron = NULL;
    json_t *args = NULL;
    int enabled = 0, has_enabled = 0;
    const struct jspec_field f[] = {
        {"cron", JSPEC_STRING, 0, 1, 200, NULL, &cron, NULL},
        {"args", JSPEC_OBJECT, 0, 0, 0, NULL, &args, NULL},
        {"enabled", JSPEC_BOOL, 0, 0, 0, NULL, &enabled, &has_enabled},
        JSPEC_END,
    };
    if (jspec_parse(req, http_body(req), f, NULL, 0) != 0)
        return;
    struct sched_tx t = {.req = req, .name = name, .cron = cron};
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *cur = NULL;
    int rc = jobs_store_schedule_get(c, name, &cur);
    if (rc <= 0) {
        if (rc < 0)
            http_reply_db_error(req, rc);
        else
            http_reply_problem(req, QDB_E_NOT_FOUND, "no schedule %s", name);
        return;
    }
    const char *cur_kind = json_string_value(json_object_get(cur, "kind"));
    const char *cur_cron = json_string_value(json_object_get(cur, "cron"));
    int ok = 0;
    int64_t next = 0;
    if (cron)
        ok = check_cron(req, cron, &next) == 0;
    else if (has_enabled && enabled)
        /* re-enabled: runs missed while disabled do not fire; start from now */
        ok = check_cron(req, cur_cron ? cur_cron : "", &next) == 0;
    else
        ok = 1;
    if (ok && args && check_kind_args(req, cur_kind ? cur_kind : "", args) != 0)
        ok = 0;
    json_decref(cur);
    if (!ok)
        return;
    t.next = next;
    t.enabled = has_enabled ? enabled : -1;
    t.args = args;
    rc = db_tx(c, schedule_fn, &t);
    schedule_reply(req, &t, rc);
}
