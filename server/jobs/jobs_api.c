/* HTTP handlers of /api/v1/jobs: parse, authorize, call the store (with the audit record in
 * the same transaction), shape the reply. Schedules have theirs in jobs_schedules_api.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "jobs/jobs_internal.h"
#include "platform/http_sse.h"
#include "platform/jsonspec.h"
#include "platform/log.h"
#include "platform/queryspec.h"
#include "platform/rfc3339.h"

/* Reasons a transaction function gives for rolling back (below -100, see db_tx). */
enum { E_NOT_FOUND = -201, E_STATE = -202, E_BAD_KIND = -203 };

/* ---- helpers ---- */

/* A positive decimal id, or 0. */
static int64_t parse_id(const char *s)
{
    if (!s || !*s || strlen(s) > 19)
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v <= 0 || s[0] == '+' || s[0] == ' ')
        return 0;
    return (int64_t)v;
}

/* The {id} of the path, or 0 after replying 404 (no job can have a malformed id). */
static int64_t path_job_id(struct http_request *req)
{
    int64_t id = parse_id(http_param(req, "id"));
    if (!id)
        http_reply_problem(req, QDB_E_NOT_FOUND, "no job %s", http_param(req, "id"));
    return id;
}

static const char *subject_of(struct http_request *req)
{
    const struct http_principal *p = http_principal(req);
    return p && p->subject[0] ? p->subject : "anonymous";
}

static json_t *parse_text(const char *text)
{
    return text ? json_loads(text, 0, NULL) : NULL;
}

/* The audit record of a change to job `id`. */
static int audit_job(struct db_conn *c, struct http_request *req, const char *action, int64_t id,
                     json_t *before, json_t *after)
{
    char rid[24];
    struct audit_entry e = {.action = action,
                            .resource_type = "job",
                            .resource_id = db_int64(rid, id),
                            .before = before,
                            .after = after};
    int rc = audit_record_http(c, req, &e);
    if (rc < 0)
        return rc;
    /* the event of the same change, named by what happened to the job; a running job
     * asked to cancel stops at its runner's next heartbeat (then "finished") */
    const char *state = json_string_value(json_object_get(after, "state"));
    const char *verb = strcmp(action, "job.create") == 0  ? "enqueued"
                       : strcmp(action, "job.retry") == 0 ? "retried"
                       : state && strcmp(state, "running") == 0 ? "cancel_requested"
                                                                : "cancelled";
    char subject[40];
    snprintf(subject, sizeof subject, "jobs/%lld", (long long)id);
    struct audit_event ev = {.room = "jobs", .verb = verb, .subject = subject, .data = after};
    return audit_event_emit_http(c, req, &ev);
}

/* Reply {"items", "next_cursor"} from rows of (cursor, JSON document); `res` is consumed.
 * A full page has a next cursor (the last row's); a short one ends the listing. */
static void reply_page(struct http_request *req, PGresult *res, int rows, int limit)
{
    json_t *items = json_array();
    for (int r = 0; r < rows; r++)
        json_array_append_new(items, parse_text(PQgetvalue(res, r, 1)));
    json_t *next = rows == limit ? json_string(PQgetvalue(res, rows - 1, 0)) : json_null();
    PQclear(res);
    http_reply_json(req, 200, json_pack("{s:o,s:o}", "items", items, "next_cursor", next));
}

/* ---- GET /api/v1/jobs ---- */

static const char *const job_states[] = {"pending", "running",   "succeeded", "retrying",
                                         "failed",  "cancelled", NULL};

void jobs_api_list(struct http_request *req)
{
    const char *kind = NULL, *queue = NULL, *created_by = NULL;
    int state_idx = -1;
    int64_t since_us = 0, before = 0, limit = 50;
    int has_since = 0;
    const struct qspec_param q[] = {
        {"state", QSPEC_ENUM, 0, 0, 0, job_states, &state_idx, NULL},
        {"kind", QSPEC_STRING, 0, 1, 100, NULL, &kind, NULL},
        {"queue", QSPEC_STRING, 0, 1, 100, NULL, &queue, NULL},
        {"created_by", QSPEC_STRING, 0, 1, 256, NULL, &created_by, NULL},
        {"since", QSPEC_TIME, 0, 0, 0, NULL, &since_us, &has_since},
        /* a cursor is the id of the last row of the previous page */
        {"cursor", QSPEC_INT, 0, 1, INT64_MAX, NULL, &before, NULL},
        {"limit", QSPEC_INT, 0, 1, 500, NULL, &limit, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0)
        return;
    const char *state = state_idx >= 0 ? job_states[state_idx] : NULL;
    char since[RFC3339_TEXT_MAX];
    if (has_since)
        rfc3339_format_us(since_us, since, sizeof since);
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    PGresult *res = NULL;
    int rows = jobs_store_list(c, state, kind, queue, created_by, has_since ? since : NULL, before,
                               (int)limit, &res);
    if (rows < 0) {
        http_reply_db_error(req, rows);
        return;
    }
    reply_page(req, res, rows, (int)limit);
}

/* ---- GET /api/v1/jobs/{id} ---- */

void jobs_api_get(struct http_request *req)
{
    int64_t id = path_job_id(req);
    if (!id)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *doc = NULL;
    int rc = jobs_store_get_json(c, id, &doc);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return;
    }
    if (rc == 0) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no job %lld", (long long)id);
        return;
    }
    http_reply_json(req, 200, doc);
}

/* ---- GET /api/v1/jobs/{id}/logs ---- */

void jobs_api_logs(struct http_request *req)
{
    int64_t id = path_job_id(req);
    if (!id)
        return;
    int64_t after = 0, limit = 200;
    const struct qspec_param q[] = {
        {"cursor", QSPEC_INT, 0, 1, INT64_MAX, NULL, &after, NULL},
        {"limit", QSPEC_INT, 0, 1, 1000, NULL, &limit, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    int rc = jobs_store_exists(c, id);
    if (rc <= 0) {
        if (rc < 0)
            http_reply_db_error(req, rc);
        else
            http_reply_problem(req, QDB_E_NOT_FOUND, "no job %lld", (long long)id);
        return;
    }
    PGresult *res = NULL;
    int rows = jobs_store_logs(c, id, after, (int)limit, &res);
    if (rows < 0) {
        http_reply_db_error(req, rows);
        return;
    }
    reply_page(req, res, rows, (int)limit);
}

/* ---- POST /api/v1/jobs ---- */

struct create_tx {
    struct http_request *req;
    struct jobs_new jn;
    int64_t id;
    int existed;
    json_t *doc; /* the new job as inserted: the audit's "after" and the reply */
};

/* Three statements on the request's connection (BEGIN and COMMIT aside): the insert reads
 * the job's document back itself, and the reply shows that document rather than reading
 * it again after the commit. */
static int create_fn(struct db_conn *c, void *cls)
{
    struct create_tx *t = cls;
    json_decref(t->doc); /* a retried attempt's */
    t->doc = NULL;
    int rc = jobs_enqueue_doc(c, &t->jn, &t->id, &t->existed, &t->doc);
    if (rc < 0 || t->existed)
        return rc;
    return audit_job(c, t->req, "job.create", t->id, NULL, t->doc);
}

void jobs_api_create(struct http_request *req)
{
    const char *kind = NULL, *queue = NULL;
    json_t *args = NULL;
    int64_t priority = 0, max_attempts = 0, run_at_us = 0;
    int has_run_at = 0;
    char run_at[RFC3339_TEXT_MAX];
    const struct jspec_field f[] = {
        {"kind", JSPEC_STRING, 1, 1, 100, NULL, &kind, NULL},
        {"args", JSPEC_OBJECT, 0, 0, 0, NULL, &args, NULL},
        {"queue", JSPEC_STRING, 0, 1, 100, NULL, &queue, NULL},
        {"priority", JSPEC_INT, 0, -1000, 1000, NULL, &priority, NULL},
        {"run_at", JSPEC_TIME, 0, 0, 64, NULL, &run_at_us, &has_run_at},
        {"max_attempts", JSPEC_INT, 0, 1, 100, NULL, &max_attempts, NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, http_body(req), f, NULL, 0) != 0)
        return;
    if (has_run_at)
        rfc3339_format_us(run_at_us, run_at, sizeof run_at);
    const struct jobs_kind *k = jobs_find_kind(kind);
    if (!k) {
        http_reply_invalid(req, "kind", "no job kind \"%s\"", kind);
        return;
    }
    if (k->direct_role == HTTP_PUBLIC) {
        http_reply_problem(req, QDB_E_FORBIDDEN,
                           "jobs of kind %s are enqueued by its own endpoint, not here", kind);
        return;
    }
    const struct http_principal *p = http_principal(req);
    if (!p || p->role < k->direct_role) {
        http_reply_problem(req, QDB_E_FORBIDDEN, "enqueueing %s jobs needs the %s role", kind,
                           http_perm_name(k->direct_role));
        return;
    }
    json_t *empty = json_object();
    char why[300] = "";
    if (k->validate && k->validate(args ? args : empty, why, sizeof why) != 0) {
        json_decref(empty);
        http_reply_invalid(req, "args", "args: %s", why);
        return;
    }
    json_decref(empty);
    const char *key = http_header(req, "Idempotency-Key");
    if (key && (strlen(key) < 1 || strlen(key) > 255)) {
        http_reply_invalid(req, "Idempotency-Key", "Idempotency-Key must be 1 to 255 characters");
        return;
    }
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    struct create_tx t = {.req = req};
    t.jn = (struct jobs_new){.kind = kind,
                             .args = args,
                             .queue = queue,
                             .priority = (int)priority,
                             .run_at = has_run_at ? run_at : NULL,
                             .max_attempts = (int)max_attempts,
                             .idempotency_key = key,
                             .created_by = subject_of(req)};
    int rc = db_tx(c, create_fn, &t);
    if (rc == JOBS_E_IDEMPOTENCY) {
        json_decref(t.doc);
        http_reply_problem(req, QDB_E_IDEMPOTENCY_CONFLICT,
                           "Idempotency-Key \"%s\" was used for a different request", key);
        return;
    }
    if (rc < 0) {
        json_decref(t.doc);
        http_reply_db_error(req, rc);
        return;
    }
    if (t.existed)
        http_reply_header(req, "Idempotent-Replayed", "true");
    jobs_reply_accepted_take(req, c, t.id, t.doc);
}

/* ---- POST /api/v1/jobs/{id}/cancel and /retry ---- */

struct action_tx {
    struct http_request *req;
    int64_t id;
    int retry;
    char state[16];
};

static int action_fn(struct db_conn *c, void *cls)
{
    struct action_tx *t = cls;
    json_t *before = jobs_get_json(c, t->id);
    int rc;
    if (!before) {
        rc = jobs_store_exists(c, t->id);
        return rc < 0 ? rc : E_NOT_FOUND;
    }
    if (t->retry) {
        rc = jobs_store_retry(c, t->id);
        snprintf(t->state, sizeof t->state, "pending");
    } else {
        PGresult *res = NULL;
        rc = jobs_store_cancel(c, t->id, &res);
        if (rc > 0)
            snprintf(t->state, sizeof t->state, "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
    }
    if (rc <= 0) {
        json_decref(before);
        return rc < 0 ? rc : E_STATE;
    }
    json_t *after = jobs_get_json(c, t->id);
    rc = audit_job(c, t->req, t->retry ? "job.retry" : "job.cancel", t->id, before, after);
    json_decref(before);
    json_decref(after);
    return rc;
}

static void job_action(struct http_request *req, int retry)
{
    int64_t id = path_job_id(req);
    if (!id)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    struct action_tx t = {.req = req, .id = id, .retry = retry};
    int rc = db_tx(c, action_fn, &t);
    if (rc == E_NOT_FOUND) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no job %lld", (long long)id);
        return;
    }
    if (rc == E_STATE) {
        json_t *doc = jobs_get_json(c, id);
        const char *st = json_string_value(json_object_get(doc, "state"));
        http_reply_problem_ext(req, QDB_E_JOB_STATE,
                               json_pack("{s:s}", "state", st ? st : "unknown"),
                               retry ? "job %lld is %s; only failed or cancelled jobs can be "
                                       "retried"
                                     : "job %lld is %s; only pending, retrying or running jobs "
                                       "can be cancelled",
                               (long long)id, st ? st : "unknown");
        json_decref(doc);
        return;
    }
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return;
    }
    if (retry || strcmp(t.state, "running") == 0) {
        /* retry re-enqueues; a running job stops at its runner's next heartbeat */
        jobs_reply_accepted(req, c, id);
        return;
    }
    json_t *doc = jobs_get_json(c, id);
    if (!doc) {
        http_reply_db_error(req, DB_HARD);
        return;
    }
    http_reply_json(req, 200, doc);
}

void jobs_api_cancel(struct http_request *req)
{
    job_action(req, 0);
}

void jobs_api_retry(struct http_request *req)
{
    job_action(req, 1);
}

/* ---- GET /api/v1/jobs/events ---- */

static struct http_sse_hub *hub;

int jobs_events_init(void)
{
    hub = http_sse_hub_new(1024 * 1024);
    return hub ? 0 : -1;
}

void jobs_events_free(void)
{
    http_sse_hub_free(hub);
    hub = NULL;
}

void jobs_events_publish(const char *payload)
{
    if (!hub || http_sse_count(hub) == 0 || !payload)
        return;
    const char *p = payload;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[64];
        if (len > 0 && len < sizeof item) {
            memcpy(item, p, len);
            item[len] = '\0';
            char *colon = strchr(item, ':');
            if (strcmp(item, "+") == 0) {
                /* more rows changed than one notification carries: reload the list */
                http_sse_broadcast(hub, "resync", NULL, "{}");
            } else if (colon) {
                *colon = '\0';
                int64_t id = parse_id(item);
                if (id) {
                    char data[96];
                    snprintf(data, sizeof data, "{\"id\":%lld,\"state\":\"%.20s\"}", (long long)id,
                             colon + 1);
                    http_sse_broadcast(hub, "job", item, data);
                }
            }
        }
        p = end ? end + 1 : p + len;
    }
}

void jobs_events_tick(void)
{
    http_sse_tick(hub);
}

void jobs_api_events(struct http_request *req)
{
    if (!hub) {
        http_reply_problem(req, QDB_E_SHUTTING_DOWN, "the job engine is not running");
        return;
    }
    http_sse_start(req, hub);
}
