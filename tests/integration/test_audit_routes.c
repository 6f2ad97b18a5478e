/* Every mutating route is audited. The test walks the route table (`qdb-control routes`):
 * each non-GET route under /api/v1 must have a recipe below saying how to call it
 * successfully (after setting up what it needs) and how to make it fail. A successful call
 * must leave exactly one audit event carrying its request id, with the caller as actor and
 * the resource it changed; a failed call (400/404/409) must leave none. A mutating route
 * without a recipe fails the test: add one when you add a route.
 *
 * Routes outside /api/v1 (the dev issuer's sign-in endpoints) change no state and are not
 * walked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dr_helpers.h"
#include "harness.h"

static char *url;
static struct th_server srv;
static char *tokens[4]; /* by role: [1] viewer, [2] operator, [3] admin */
static char *other_admin; /* a second admin (flags change requests need two) */
static int seq;
#define MAX_SECRETS 16
static char *secrets[MAX_SECRETS]; /* API token secrets the successful calls returned */
static int nsecrets;

static const char *const role_names[] = {"public", "viewer", "operator", "admin"};

/* One HTTP call as a recipe describes it. */
struct call {
    const char *method;
    char path[256];
    char body[512]; /* "" = none */
    const char *content_type;
};

/* What the successful call must record. */
struct expect {
    const char *action; /* NULL: a read that a non-GET route serves (no event at all) */
    const char *resource_type;
    char resource_id[128]; /* "" = take "id" (or "name") from the reply */
    long status;           /* the successful status */
};

struct recipe {
    const char *method, *pattern;
    const char *min_role; /* the role the call needs when the handler asks more than the
                             route (e.g. the job kind's role); NULL = the route's */
    /* Set up, then describe the successful call. Returns 0 or -1. */
    int (*ok)(struct call *c, struct expect *e);
    /* Describe a call that must fail; *status is its expected status. */
    int (*fail)(struct call *c, long *status);
};

static int do_call(const struct call *c, const char *role, const char *request_id,
                   struct th_resp *r)
{
    char auth[4096], rid[160], ct[128];
    const char *h[4];
    int n = 0;
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", tokens[th_role_rank(role)]);
    h[n++] = auth;
    snprintf(rid, sizeof rid, "X-Request-Id: %s", request_id);
    h[n++] = rid;
    if (c->body[0]) {
        snprintf(ct, sizeof ct, "Content-Type: %s",
                 c->content_type ? c->content_type : "application/json");
        h[n++] = ct;
    }
    h[n] = NULL;
    return th_http(&srv, c->method, c->path, h, c->body[0] ? c->body : NULL, strlen(c->body), r);
}

/* Set-up calls made by recipes, as admin, outside the checks. Returns the reply's JSON
 * (new reference) when the status is 2xx. */
static json_t *setup(const char *method, const char *path, const char *body)
{
    struct call c = {method, "", "", NULL};
    snprintf(c.path, sizeof c.path, "%s", path);
    snprintf(c.body, sizeof c.body, "%s", body ? body : "");
    char rid[64];
    snprintf(rid, sizeof rid, "setup-%d-%d", (int)getpid(), seq++);
    struct th_resp r;
    if (do_call(&c, "admin", rid, &r) != 0)
        return NULL;
    json_t *j = r.status >= 200 && r.status < 300 && r.json ? json_incref(r.json) : NULL;
    if (!j)
        fprintf(stderr, "setup %s %s: %ld %s\n", method, path, r.status, r.body);
    th_resp_free(&r);
    return j;
}

static void id_of(const json_t *j, char *out, size_t n)
{
    json_t *id = json_object_get(j, "id");
    if (json_is_integer(id))
        snprintf(out, n, "%lld", (long long)json_integer_value(id));
    else
        snprintf(out, n, "%s", json_string_value(id) ? json_string_value(id) : "");
}

/* ---- recipes: auth ---- */

static int token_create_ok(struct call *c, struct expect *e)
{
    snprintf(c->body, sizeof c->body, "{\"name\":\"rt-%d\",\"role\":\"viewer\"}", seq++);
    *e = (struct expect){"token.create", "api_token", "", 201};
    return 0;
}
static int token_create_fail(struct call *c, long *status)
{
    snprintf(c->body, sizeof c->body, "{\"name\":\"rt-bad\",\"role\":\"emperor\"}");
    *status = 400;
    return 0;
}

static int token_revoke_ok(struct call *c, struct expect *e)
{
    char body[128];
    snprintf(body, sizeof body, "{\"name\":\"rt-revoke-%d\",\"role\":\"viewer\"}", seq++);
    json_t *t = setup("POST", "/api/v1/tokens", body);
    if (!t)
        return -1;
    *e = (struct expect){"token.revoke", "api_token", "", 204};
    id_of(t, e->resource_id, sizeof e->resource_id);
    snprintf(c->path, sizeof c->path, "/api/v1/tokens/%s", e->resource_id);
    json_decref(t);
    return 0;
}
static int token_revoke_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/tokens/00000000-0000-4000-8000-000000000000");
    *status = 404;
    return 0;
}

/* ---- recipes: audit ---- */

static int audit_verify_ok(struct call *c, struct expect *e)
{
    snprintf(c->body, sizeof c->body, "{}");
    *e = (struct expect){"audit.verify", "job", "", 202};
    return 0;
}
static int audit_verify_fail(struct call *c, long *status)
{
    snprintf(c->body, sizeof c->body, "{\"from_seq\":0}");
    *status = 400;
    return 0;
}

/* ---- recipes: jobs ---- */

/* A job that stays pending: it runs in the year 2999. Returns its id or 0. */
static long long pending_job(void)
{
    json_t *j = setup("POST", "/api/v1/jobs",
                      "{\"kind\":\"audit.verify\",\"run_at\":\"2999-01-01T00:00:00Z\"}");
    long long id = j ? (long long)json_integer_value(json_object_get(j, "id")) : 0;
    json_decref(j);
    return id;
}

static int job_create_ok(struct call *c, struct expect *e)
{
    snprintf(c->body, sizeof c->body, "{\"kind\":\"audit.verify\"}");
    *e = (struct expect){"job.create", "job", "", 202};
    return 0;
}
static int job_create_fail(struct call *c, long *status)
{
    snprintf(c->body, sizeof c->body, "{\"kind\":\"no.such.kind\"}");
    *status = 400;
    return 0;
}

static int job_cancel_ok(struct call *c, struct expect *e)
{
    long long id = pending_job();
    if (!id)
        return -1;
    *e = (struct expect){"job.cancel", "job", "", 200};
    snprintf(e->resource_id, sizeof e->resource_id, "%lld", id);
    snprintf(c->path, sizeof c->path, "/api/v1/jobs/%lld/cancel", id);
    return 0;
}
static int job_cancel_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/jobs/999999999/cancel");
    *status = 404;
    return 0;
}

static int job_retry_ok(struct call *c, struct expect *e)
{
    long long id = pending_job();
    char path[128];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/cancel", id);
    json_t *j = id ? setup("POST", path, NULL) : NULL;
    if (!j)
        return -1;
    json_decref(j);
    *e = (struct expect){"job.retry", "job", "", 202};
    snprintf(e->resource_id, sizeof e->resource_id, "%lld", id);
    snprintf(c->path, sizeof c->path, "/api/v1/jobs/%lld/retry", id);
    return 0;
}
static int job_retry_fail(struct call *c, long *status)
{
    long long id = pending_job(); /* pending: nothing to retry */
    snprintf(c->path, sizeof c->path, "/api/v1/jobs/%lld/retry", id);
    *status = 409;
    return id ? 0 : -1;
}

static int schedule_create_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"schedule.create", "schedule", "", 201};
    snprintf(e->resource_id, sizeof e->resource_id, "rt-sched-%d", seq++);
    snprintf(c->body, sizeof c->body,
             "{\"name\":\"%s\",\"cron\":\"0 4 * * *\",\"kind\":\"audit.verify\"}", e->resource_id);
    return 0;
}
static int schedule_create_fail(struct call *c, long *status)
{
    snprintf(c->body, sizeof c->body,
             "{\"name\":\"audit-verify-daily\",\"cron\":\"0 4 * * *\",\"kind\":\"audit.verify\"}");
    *status = 409; /* exists */
    return 0;
}

static int schedule_update_ok(struct call *c, struct expect *e)
{
    char body[200];
    *e = (struct expect){"schedule.update", "schedule", "", 200};
    snprintf(e->resource_id, sizeof e->resource_id, "rt-sched-%d", seq++);
    snprintf(body, sizeof body, "{\"name\":\"%s\",\"cron\":\"0 4 * * *\",\"kind\":\"noop\"}",
             e->resource_id);
    json_t *j = setup("POST", "/api/v1/schedules", body);
    if (!j)
        return -1;
    json_decref(j);
    snprintf(c->path, sizeof c->path, "/api/v1/schedules/%s", e->resource_id);
    snprintf(c->body, sizeof c->body, "{\"enabled\":false}");
    c->content_type = "application/merge-patch+json";
    return 0;
}
static int schedule_update_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/schedules/no-such-schedule");
    snprintf(c->body, sizeof c->body, "{\"enabled\":false}");
    c->content_type = "application/merge-patch+json";
    *status = 404;
    return 0;
}

/* ---- recipes: flags ---- */

/* A fresh flag (boolean, disabled everywhere); its key into out. Returns 0 or -1. */
static int new_flag(char *out, size_t n)
{
    snprintf(out, n, "rt.flag-%d-%d", (int)getpid(), seq++);
    char body[256];
    snprintf(body, sizeof body,
             "{\"key\":\"%s\",\"type\":\"boolean\",\"variants\":{\"on\":true,\"off\":false}}", out);
    json_t *j = setup("POST", "/api/v1/flags", body);
    json_decref(j);
    return j ? 0 : -1;
}

static int flag_create_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"flag.create", "flag", "", 201};
    snprintf(e->resource_id, sizeof e->resource_id, "rt.created-%d-%d", (int)getpid(), seq++);
    snprintf(c->body, sizeof c->body,
             "{\"key\":\"%s\",\"type\":\"boolean\",\"variants\":{\"on\":true,\"off\":false}}",
             e->resource_id);
    return 0;
}
static int flag_create_fail(struct call *c, long *status)
{
    snprintf(c->body, sizeof c->body,
             "{\"key\":\"Bad Key\",\"type\":\"boolean\",\"variants\":{\"on\":true}}");
    *status = 400;
    return 0;
}

static int flag_import_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"flag.import", "flag_import", "staging", 200};
    snprintf(c->body, sizeof c->body,
             "{\"environment\":\"staging\",\"flags\":{\"qdb.advisory.enabled\":%s}}",
             seq % 2 ? "true" : "false");
    return 0;
}
static int flag_import_fail(struct call *c, long *status)
{
    snprintf(c->body, sizeof c->body,
             "{\"environment\":\"staging\",\"flags\":{\"qdb.no-such.flag\":true}}");
    *status = 400;
    return 0;
}

static int flag_diff_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){NULL, NULL, "", 200}; /* a read: no audit event */
    snprintf(c->body, sizeof c->body,
             "{\"environment\":\"production\",\"flags\":{\"qdb.financing.enabled\":true}}");
    return 0;
}
static int flag_diff_fail(struct call *c, long *status)
{
    snprintf(c->body, sizeof c->body, "{\"environment\":\"nowhere\",\"flags\":{}}");
    *status = 400;
    return 0;
}

static int flag_update_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"flag.update", "flag", "", 200};
    if (new_flag(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/flags/%s", e->resource_id);
    snprintf(c->body, sizeof c->body, "{\"description\":\"changed\"}");
    return 0;
}
static int flag_update_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/flags/no.such.flag");
    snprintf(c->body, sizeof c->body, "{\"description\":\"changed\"}");
    *status = 404;
    return 0;
}

static int flag_delete_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"flag.delete", "flag", "", 204};
    if (new_flag(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/flags/%s", e->resource_id);
    return 0;
}
static int flag_delete_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/flags/no.such.flag");
    *status = 404;
    return 0;
}

static int flag_configure_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"flag.configure", "flag", "", 200};
    if (new_flag(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/flags/%s/environments/staging", e->resource_id);
    snprintf(c->body, sizeof c->body,
             "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\"}");
    return 0;
}
static int flag_configure_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path,
             "/api/v1/flags/qdb.advisory.enabled/environments/staging");
    snprintf(c->body, sizeof c->body,
             "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\",\"rules\":"
             "[{\"conditions\":[{\"attribute\":\"a\",\"operator\":\"resembles\",\"value\":1}],"
             "\"variant\":\"on\"}]}");
    *status = 400;
    return 0;
}

static int flag_rollback_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"flag.rollback", "flag", "", 200};
    if (new_flag(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/flags/%s/rollback", e->resource_id);
    snprintf(c->body, sizeof c->body, "{\"environment\":\"staging\",\"version\":1}");
    return 0;
}
static int flag_rollback_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/flags/qdb.advisory.enabled/rollback");
    snprintf(c->body, sizeof c->body, "{\"environment\":\"staging\",\"version\":99999}");
    *status = 400;
    return 0;
}

static int flag_promote_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"flag.promote", "flag", "", 200};
    if (new_flag(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/flags/%s/promote", e->resource_id);
    snprintf(c->body, sizeof c->body, "{\"from\":\"development\",\"to\":\"integration\"}");
    return 0;
}
static int flag_promote_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/flags/qdb.advisory.enabled/promote");
    snprintf(c->body, sizeof c->body, "{\"from\":\"staging\",\"to\":\"staging\"}");
    *status = 400;
    return 0;
}

static int segment_create_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"segment.create", "segment", "", 201};
    snprintf(e->resource_id, sizeof e->resource_id, "rt-seg-%d", seq++);
    snprintf(c->body, sizeof c->body, "{\"name\":\"%s\",\"included\":[\"u1\"]}", e->resource_id);
    return 0;
}
static int segment_create_fail(struct call *c, long *status)
{
    snprintf(c->body, sizeof c->body, "{\"name\":\"bad name\"}");
    *status = 400;
    return 0;
}

static int new_segment(char *out, size_t n)
{
    snprintf(out, n, "rt-seg-%d-%d", (int)getpid(), seq++);
    char body[160];
    snprintf(body, sizeof body, "{\"name\":\"%s\"}", out);
    json_t *j = setup("POST", "/api/v1/segments", body);
    json_decref(j);
    return j ? 0 : -1;
}

static int segment_update_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"segment.update", "segment", "", 200};
    if (new_segment(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/segments/%s", e->resource_id);
    snprintf(c->body, sizeof c->body, "{\"excluded\":[\"u2\"]}");
    return 0;
}
static int segment_update_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/segments/no-such-segment");
    snprintf(c->body, sizeof c->body, "{\"excluded\":[]}");
    *status = 404;
    return 0;
}

static int segment_delete_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"segment.delete", "segment", "", 204};
    if (new_segment(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/segments/%s", e->resource_id);
    return 0;
}
static int segment_delete_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/segments/no-such-segment");
    *status = 404;
    return 0;
}

/* A pending change request made by another admin (the server runs with
 * QDB_FLAGS_PROD_APPROVAL=1); its id into out. */
static int pending_change_request(char *out, size_t n)
{
    char key[128];
    if (new_flag(key, sizeof key) != 0 || !other_admin)
        return -1;
    char path[256], auth[4096];
    snprintf(path, sizeof path, "/api/v1/flags/%s/environments/production", key);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", other_admin);
    const char *h[] = {auth, "Content-Type: application/json", "If-Match: \"1\"", NULL};
    const char *body = "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\"}";
    struct th_resp r;
    if (th_http(&srv, "PUT", path, h, body, strlen(body), &r) != 0)
        return -1;
    int ok = r.status == 202;
    if (ok)
        id_of(r.json, out, n);
    else
        fprintf(stderr, "change request set-up: %ld %s\n", r.status, r.body);
    th_resp_free(&r);
    return ok ? 0 : -1;
}

static int cr_approve_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"change_request.approve", "change_request", "", 200};
    if (pending_change_request(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/change-requests/%s/approve", e->resource_id);
    return 0;
}
static int cr_approve_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/change-requests/999999/approve");
    *status = 404;
    return 0;
}

static int cr_reject_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"change_request.reject", "change_request", "", 200};
    if (pending_change_request(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/change-requests/%s/reject", e->resource_id);
    return 0;
}
static int cr_reject_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/change-requests/999999/reject");
    *status = 404;
    return 0;
}

/* A rollout that stays active: its one step is in the year 2999. Its id into out. */
static int pending_rollout(char *key, size_t kn, char *out, size_t n)
{
    if (new_flag(key, kn) != 0)
        return -1;
    char path[256];
    snprintf(path, sizeof path, "/api/v1/flags/%s/rollouts", key);
    json_t *j = setup("POST", path,
                      "{\"environment\":\"staging\",\"steps\":[{\"at\":\"2999-01-01T00:00:00Z\","
                      "\"percentage\":10}]}");
    if (!j)
        return -1;
    id_of(j, out, n);
    json_decref(j);
    return 0;
}

static int rollout_create_ok(struct call *c, struct expect *e)
{
    char key[128];
    *e = (struct expect){"rollout.create", "rollout", "", 201};
    if (new_flag(key, sizeof key) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/flags/%s/rollouts", key);
    snprintf(c->body, sizeof c->body,
             "{\"environment\":\"staging\",\"steps\":[{\"at\":\"2999-01-01T00:00:00Z\","
             "\"percentage\":10},{\"at\":\"2999-01-02T00:00:00Z\",\"percentage\":50}]}");
    return 0;
}
static int rollout_create_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/flags/qdb.advisory.enabled/rollouts");
    snprintf(c->body, sizeof c->body,
             "{\"environment\":\"staging\",\"steps\":[{\"at\":\"not a time\",\"percentage\":10}]}");
    *status = 400;
    return 0;
}

static int rollout_cancel_ok(struct call *c, struct expect *e)
{
    char key[128];
    *e = (struct expect){"rollout.cancel", "rollout", "", 200};
    if (pending_rollout(key, sizeof key, e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/flags/%.100s/rollouts/%.24s/cancel", key,
             e->resource_id);
    return 0;
}
static int rollout_cancel_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/flags/qdb.advisory.enabled/rollouts/999999/cancel");
    *status = 404;
    return 0;
}

static int rollout_abort_ok(struct call *c, struct expect *e)
{
    char key[128];
    *e = (struct expect){"rollout.abort", "rollout", "", 200};
    if (pending_rollout(key, sizeof key, e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/flags/%.100s/rollouts/%.24s/abort", key,
             e->resource_id);
    return 0;
}
static int rollout_abort_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/flags/qdb.advisory.enabled/rollouts/999999/abort");
    *status = 404;
    return 0;
}


/* ---- recipes: inventory ---- */

static int env_patch_ok(struct call *c, struct expect *e)
{
    snprintf(c->path, sizeof c->path, "/api/v1/environments/staging");
    snprintf(c->body, sizeof c->body, "{\"config\":{\"feature_flags\":\"Production-like %d\"}}",
             seq++);
    *e = (struct expect){"environment.update", "environment", "staging", 200};
    return 0;
}
static int env_patch_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/environments/staging");
    snprintf(c->body, sizeof c->body,
             "{\"targets\":{\"kafka\":{\"bootstrap_servers\":\"k:9092\",\"broker_count\":0}}}");
    *status = 422;
    return 0;
}

static int env_apply_ok(struct call *c, struct expect *e)
{
    /* integration has no targets in this test: the plan is empty, the apply still audited */
    snprintf(c->path, sizeof c->path, "/api/v1/environments/integration/apply");
    snprintf(c->body, sizeof c->body, "{}");
    *e = (struct expect){"environment.apply", "environment", "integration", 202};
    return 0;
}
static int env_apply_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/environments/nowhere/apply");
    snprintf(c->body, sizeof c->body, "{}");
    *status = 404;
    return 0;
}

/* A database made for a recipe; its id into out. */
static int new_database(char *out, size_t n)
{
    char body[200];
    snprintf(body, sizeof body,
             "{\"environment\":\"development\",\"name\":\"rt_db_%d\",\"storage_initial_gb\":1,"
             "\"storage_max_gb\":2}",
             seq++);
    json_t *j = setup("POST", "/api/v1/databases", body);
    if (!j)
        return -1;
    id_of(j, out, n);
    json_decref(j);
    return 0;
}

static int db_create_ok(struct call *c, struct expect *e)
{
    snprintf(c->body, sizeof c->body,
             "{\"environment\":\"development\",\"name\":\"rt_db_%d\",\"storage_initial_gb\":1,"
             "\"storage_max_gb\":2}",
             seq++);
    *e = (struct expect){"database.create", "database", "", 201};
    return 0;
}
static int db_create_fail(struct call *c, long *status)
{
    snprintf(c->body, sizeof c->body,
             "{\"environment\":\"nowhere\",\"name\":\"rt_db_x\",\"storage_initial_gb\":1,"
             "\"storage_max_gb\":2}");
    *status = 422;
    return 0;
}
static int db_patch_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"database.update", "database", "", 200};
    if (new_database(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/databases/%s", e->resource_id);
    snprintf(c->body, sizeof c->body, "{\"pool_size\":7}");
    return 0;
}
static int db_patch_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/databases/999999999");
    snprintf(c->body, sizeof c->body, "{\"pool_size\":7}");
    *status = 404;
    return 0;
}
static int db_delete_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"database.delete", "database", "", 204};
    if (new_database(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/databases/%s", e->resource_id);
    return 0;
}
static int db_delete_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/databases/999999999");
    *status = 404;
    return 0;
}

/* Topics, consumer groups and connectors share their recipes: a collection, a valid body
 * for a name, a body that breaks a rule, and a patch. */
struct kafka_kind {
    const char *coll, *type, *prefix;
    const char *body_fmt; /* one %s: the name */
    const char *bad_body, *patch;
};
static const struct kafka_kind k_topic = {
    "/api/v1/kafka/topics", "kafka_topic", "rt.topic",
    "{\"name\":\"%s\",\"partitions\":3}", "{\"name\":\"rt.bad\",\"partitions\":0}",
    "{\"partitions\":4}"};
static const struct kafka_kind k_group = {
    "/api/v1/kafka/consumer-groups", "kafka_consumer_group", "rt-group",
    "{\"name\":\"%s\",\"topics\":[\"app.*\"]}", "{\"name\":\"rt-bad\",\"topics\":[\"no such!\"]}",
    "{\"lag_threshold\":5}"};
static const struct kafka_kind k_conn = {
    "/api/v1/kafka/connectors", "kafka_connector", "rt-conn",
    "{\"name\":\"%s\",\"config\":{\"connector.class\":\"x.Y\"}}",
    "{\"name\":\"rt-bad\",\"config\":{\"connector.class\":\"x.Y\",\"database.password\":\"plain\"}}",
    "{\"config\":{\"connector.class\":\"x.Z\"}}"};

static void kk_name(const struct kafka_kind *k, char *out, size_t n)
{
    snprintf(out, n, "%s.%d.%d", k->prefix, (int)getpid(), seq++);
}
static int kk_create_ok(const struct kafka_kind *k, struct call *c, struct expect *e, const char *v)
{
    *e = (struct expect){v, k->type, "", 201};
    kk_name(k, e->resource_id, sizeof e->resource_id);
    snprintf(c->body, sizeof c->body, k->body_fmt, e->resource_id);
    return 0;
}
static int kk_existing(const struct kafka_kind *k, struct call *c, struct expect *e, const char *v,
                       long status)
{
    char body[300];
    *e = (struct expect){v, k->type, "", status};
    kk_name(k, e->resource_id, sizeof e->resource_id);
    snprintf(body, sizeof body, k->body_fmt, e->resource_id);
    json_t *j = setup("POST", k->coll, body);
    if (!j)
        return -1;
    json_decref(j);
    snprintf(c->path, sizeof c->path, "%s/%s", k->coll, e->resource_id);
    return 0;
}
static int kk_missing(const struct kafka_kind *k, struct call *c, long *status, const char *body)
{
    snprintf(c->path, sizeof c->path, "%s/no-such-thing", k->coll);
    snprintf(c->body, sizeof c->body, "%s", body ? body : "");
    *status = 404;
    return 0;
}

#define KAFKA_RECIPES(tag, kk, noun)                                                               \
    static int tag##_create_ok(struct call *c, struct expect *e)                                   \
    {                                                                                              \
        return kk_create_ok(&kk, c, e, noun ".create");                                            \
    }                                                                                              \
    static int tag##_create_fail(struct call *c, long *status)                                     \
    {                                                                                              \
        snprintf(c->body, sizeof c->body, "%s", kk.bad_body);                                      \
        *status = 422;                                                                             \
        return 0;                                                                                  \
    }                                                                                              \
    static int tag##_patch_ok(struct call *c, struct expect *e)                                    \
    {                                                                                              \
        if (kk_existing(&kk, c, e, noun ".update", 200) != 0)                                      \
            return -1;                                                                             \
        snprintf(c->body, sizeof c->body, "%s", kk.patch);                                         \
        return 0;                                                                                  \
    }                                                                                              \
    static int tag##_patch_fail(struct call *c, long *status)                                      \
    {                                                                                              \
        return kk_missing(&kk, c, status, kk.patch);                                               \
    }                                                                                              \
    static int tag##_delete_ok(struct call *c, struct expect *e)                                   \
    {                                                                                              \
        return kk_existing(&kk, c, e, noun ".delete", 204);                                        \
    }                                                                                              \
    static int tag##_delete_fail(struct call *c, long *status)                                     \
    {                                                                                              \
        return kk_missing(&kk, c, status, NULL);                                                   \
    }
KAFKA_RECIPES(topic, k_topic, "kafka_topic")
KAFKA_RECIPES(group, k_group, "kafka_consumer_group")
KAFKA_RECIPES(conn, k_conn, "kafka_connector")

static int import_ok(struct call *c, struct expect *e)
{
    snprintf(c->body, sizeof c->body,
             "{\"topics\":[{\"name\":\"rt.import.%d\"}],\"consumer_groups\":[{\"name\":"
             "\"rt-import-%d\",\"topics\":[\"rt.import.*\"]}]}",
             seq, seq);
    seq++;
    *e = (struct expect){"inventory.import", "inventory", "import", 200};
    return 0;
}
static int import_fail(struct call *c, long *status)
{
    snprintf(c->body, sizeof c->body,
             "{\"topics\":[{\"name\":\"rt.fine\"},{\"name\":\"rt.bad\",\"min_insync_replicas\":3,"
             "\"replication_factor\":2}]}");
    *status = 422;
    return 0;
}


/* ---- recipes: backup ---- */

static int bkp_create_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"backup_policy.create", "backup_policy", "", 201};
    snprintf(e->resource_id, sizeof e->resource_id, "rt-policy-%d", seq++);
    snprintf(c->body, sizeof c->body,
             "{\"component\":\"%s\",\"method\":\"external\",\"rpo_seconds\":60,"
             "\"rto_seconds\":60}",
             e->resource_id);
    return 0;
}
static int bkp_create_fail(struct call *c, long *status)
{
    snprintf(c->body, sizeof c->body,
             "{\"component\":\"rt-bad\",\"method\":\"basebackup\",\"environment\":"
             "\"development\",\"database\":\"qdb_mpi\",\"retention_count\":0,"
             "\"rpo_seconds\":60,\"rto_seconds\":60}");
    *status = 400;
    return 0;
}
/* A policy made for a recipe; its component into out. */
static int new_policy(char *out, size_t n)
{
    char body[200];
    snprintf(out, n, "rt-policy-%d", seq++);
    snprintf(body, sizeof body,
             "{\"component\":\"%s\",\"method\":\"external\",\"rpo_seconds\":60,"
             "\"rto_seconds\":60}",
             out);
    json_t *j = setup("POST", "/api/v1/backup-policies", body);
    json_decref(j);
    return j ? 0 : -1;
}
static int bkp_patch_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"backup_policy.update", "backup_policy", "", 200};
    if (new_policy(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/backup-policies/%s", e->resource_id);
    snprintf(c->body, sizeof c->body, "{\"title\":\"Renamed %d\"}", seq++);
    return 0;
}
static int bkp_patch_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/backup-policies/nowhere");
    snprintf(c->body, sizeof c->body, "{\"title\":\"x\"}");
    *status = 404;
    return 0;
}
static int bkp_delete_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"backup_policy.delete", "backup_policy", "", 204};
    if (new_policy(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/backup-policies/%s", e->resource_id);
    return 0;
}
static int bkp_delete_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/backup-policies/nowhere");
    *status = 404;
    return 0;
}
static int bk_report_ok(struct call *c, struct expect *e)
{
    snprintf(c->body, sizeof c->body,
             "{\"component\":\"vault\",\"started_at\":\"2026-01-01T00:00:00Z\","
             "\"finished_at\":\"2026-01-01T00:01:00Z\",\"ok\":true,\"size_bytes\":%d}",
             seq++);
    *e = (struct expect){"backup_report.create", "backup_report", "", 201};
    return 0;
}
static int bk_report_fail(struct call *c, long *status)
{
    snprintf(c->body, sizeof c->body,
             "{\"component\":\"nowhere\",\"started_at\":\"2026-01-01T00:00:00Z\","
             "\"finished_at\":\"2026-01-01T00:01:00Z\",\"ok\":true}");
    *status = 422;
    return 0;
}
static int bk_run_ok(struct call *c, struct expect *e)
{
    /* the database has no server: the job fails later; the request is what is audited */
    *e = (struct expect){"backup.request", "database", "", 202};
    if (new_database(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/databases/%s/backups", e->resource_id);
    snprintf(c->body, sizeof c->body, "{\"method\":\"dump\"}");
    return 0;
}
static int bk_run_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/databases/999999999/backups");
    snprintf(c->body, sizeof c->body, "{}");
    *status = 404;
    return 0;
}
/* A finished backup row (of a database id no test uses), as the catalog would hold one. */
static int new_backup(char *out, size_t n)
{
    PGresult *r = th_sql(url,
                         "INSERT INTO backup (database_id, environment, database_name, method, "
                         "status, finished_at) VALUES (999999, 'development', 'rt_gone', "
                         "'basebackup', 'completed', now()) RETURNING id",
                         NULL);
    int ok = r && PQntuples(r) == 1;
    if (ok)
        snprintf(out, n, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return ok ? 0 : -1;
}
static int bk_verify_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"backup.verify_request", "backup", "", 202};
    if (new_backup(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/backups/%s/verify", e->resource_id);
    return 0;
}
static int bk_verify_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/backups/999999999/verify");
    *status = 404;
    return 0;
}
static int bk_restore_ok(struct call *c, struct expect *e)
{
    /* an empty database on the test cluster as the target */
    *e = (struct expect){"backup.restore_request", "backup", "", 202};
    char *turl = th_db_create("rtbk");
    const char *slash = strrchr(turl, '/');
    char name[96], body[400], target[32];
    snprintf(name, sizeof name, "%s", slash ? slash + 1 : "");
    name[strcspn(name, "?")] = '\0';
    free(turl);
    snprintf(body, sizeof body,
             "{\"environment\":\"development\",\"name\":\"%s\",\"storage_initial_gb\":1,"
             "\"storage_max_gb\":1,\"primary\":{\"host\":\"127.0.0.1\",\"port\":%d,"
             "\"admin_user\":\"postgres\"}}",
             name, th_pg_port());
    json_t *j = setup("POST", "/api/v1/databases", body);
    if (!j || new_backup(e->resource_id, sizeof e->resource_id) != 0) {
        json_decref(j);
        return -1;
    }
    id_of(j, target, sizeof target);
    json_decref(j);
    snprintf(c->path, sizeof c->path, "/api/v1/backups/%s/restore", e->resource_id);
    snprintf(c->body, sizeof c->body, "{\"target\":%s}", target);
    return 0;
}
static int bk_restore_fail(struct call *c, long *status)
{
    char id[32];
    if (new_backup(id, sizeof id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/backups/%s/restore", id);
    snprintf(c->body, sizeof c->body, "{\"target\":987654321}");
    *status = 422;
    return 0;
}

/* ---- recipes: dr ---- */
/* A database whose primary and standby are loopback ports nothing listens on: the API takes
 * the failover (it talks to no server), and the job then fails at its first check, the
 * standby, before it could change anything. */
static int dr_dead_pair(char *out, size_t n)
{
    char body[400];
    snprintf(body, sizeof body,
             "{\"environment\":\"development\",\"name\":\"rt_dr_%d\",\"storage_initial_gb\":1,"
             "\"storage_max_gb\":2,\"primary\":{\"host\":\"127.0.0.1\",\"port\":%d},"
             "\"standby\":{\"host\":\"127.0.0.1\",\"port\":%d}}",
             seq++, th_free_port(), th_free_port());
    json_t *j = setup("POST", "/api/v1/databases", body);
    if (!j)
        return -1;
    id_of(j, out, n);
    json_decref(j);
    return 0;
}
static int dr_failover_ok(struct call *c, struct expect *e)
{
    *e = (struct expect){"database.failover_request", "database", "", 202};
    if (dr_dead_pair(e->resource_id, sizeof e->resource_id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/databases/%s/failover", e->resource_id);
    return 0;
}
static int dr_failover_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/databases/999999999/failover");
    *status = 404;
    return 0;
}
/* A switchover is checked against the live pair before it is taken: a real primary with a
 * streaming standby of its own (never the shared cluster, which the job would fence). The
 * job runs the whole switchover; the walk waits for it before the servers go. */
static struct dr_servers dr_pgs;
static int dr_switchover_ok(struct call *c, struct expect *e)
{
    int pp = th_free_port(), ps = th_free_port();
    while (ps == pp)
        ps = th_free_port();
    if (dr_servers_init(&dr_pgs) != 0 || dr_server(&dr_pgs, "primary", "a", pp, 0) != 0 ||
        dr_server(&dr_pgs, "standby", "b", ps, pp) != 0)
        return -1;
    char body[400];
    snprintf(body, sizeof body,
             "{\"environment\":\"development\",\"name\":\"postgres\",\"storage_initial_gb\":1,"
             "\"storage_max_gb\":2,\"primary\":{\"host\":\"127.0.0.1\",\"port\":%d,"
             "\"admin_user\":\"postgres\"},\"standby\":{\"host\":\"127.0.0.1\",\"port\":%d,"
             "\"admin_user\":\"postgres\"}}",
             pp, ps);
    json_t *j = setup("POST", "/api/v1/databases", body);
    if (!j)
        return -1;
    *e = (struct expect){"database.switchover_request", "database", "", 202};
    id_of(j, e->resource_id, sizeof e->resource_id);
    json_decref(j);
    snprintf(c->path, sizeof c->path, "/api/v1/databases/%s/switchover", e->resource_id);
    snprintf(c->body, sizeof c->body, "{}");
    return 0;
}
static int dr_switchover_fail(struct call *c, long *status)
{
    /* a database without a standby */
    char id[32];
    if (new_database(id, sizeof id) != 0)
        return -1;
    snprintf(c->path, sizeof c->path, "/api/v1/databases/%s/switchover", id);
    snprintf(c->body, sizeof c->body, "{}");
    *status = 409;
    return 0;
}
static int dr_drill_ok(struct call *c, struct expect *e)
{
    /* production and dr qdb_openfga on two ports nothing listens on: the request is taken
     * (it needs distinct servers, not live ones); the job then fails to restore */
    char body[200], path[64];
    long long ids[2] = {0, 0};
    const char *envs[] = {"production", "dr"};
    for (int k = 0; k < 2; k++) {
        PGresult *r = th_sql(url, "SELECT id FROM inventory_database WHERE environment = $1 AND "
                                  "name = 'qdb_openfga'", envs[k], NULL);
        if (r && PQntuples(r) == 1)
            ids[k] = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        snprintf(path, sizeof path, "/api/v1/databases/%lld", ids[k]);
        snprintf(body, sizeof body, "{\"primary\":{\"host\":\"127.0.0.1\",\"port\":%d}}",
                 th_free_port());
        json_t *j = ids[k] ? setup("PATCH", path, body) : NULL;
        if (!j)
            return -1;
        json_decref(j);
    }
    /* the drill's id is the next of its sequence (a refused request takes none) */
    PGresult *r = th_sql(url, "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END "
                              "FROM dr_drill_id_seq", NULL);
    if (!r || PQntuples(r) != 1) {
        PQclear(r);
        return -1;
    }
    *e = (struct expect){"dr_drill.create", "dr_drill", "", 202};
    snprintf(e->resource_id, sizeof e->resource_id, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    snprintf(c->path, sizeof c->path, "/api/v1/dr/drills");
    snprintf(c->body, sizeof c->body, "{\"databases\":[%lld],\"target_environment\":\"dr\"}",
             ids[0]);
    return 0;
}
static int dr_drill_fail(struct call *c, long *status)
{
    snprintf(c->path, sizeof c->path, "/api/v1/dr/drills");
    snprintf(c->body, sizeof c->body, "{\"databases\":[999999999],\"target_environment\":\"dr\"}");
    *status = 422;
    return 0;
}

static const struct recipe recipes[] = {
    {"POST", "/api/v1/tokens", NULL, token_create_ok, token_create_fail},
    {"DELETE", "/api/v1/tokens/{id}", NULL, token_revoke_ok, token_revoke_fail},
    {"POST", "/api/v1/audit/verify", NULL, audit_verify_ok, audit_verify_fail},
    {"POST", "/api/v1/jobs", "operator", job_create_ok, job_create_fail},
    {"POST", "/api/v1/jobs/{id}/cancel", NULL, job_cancel_ok, job_cancel_fail},
    {"POST", "/api/v1/jobs/{id}/retry", NULL, job_retry_ok, job_retry_fail},
    {"POST", "/api/v1/schedules", NULL, schedule_create_ok, schedule_create_fail},
    {"PATCH", "/api/v1/schedules/{name}", NULL, schedule_update_ok, schedule_update_fail},
    {"POST", "/api/v1/flags", NULL, flag_create_ok, flag_create_fail},
    {"POST", "/api/v1/flags/import", NULL, flag_import_ok, flag_import_fail},
    {"POST", "/api/v1/flags/diff", NULL, flag_diff_ok, flag_diff_fail},
    {"PATCH", "/api/v1/flags/{key}", NULL, flag_update_ok, flag_update_fail},
    {"DELETE", "/api/v1/flags/{key}", NULL, flag_delete_ok, flag_delete_fail},
    {"PUT", "/api/v1/flags/{key}/environments/{env}", NULL, flag_configure_ok,
     flag_configure_fail},
    {"POST", "/api/v1/flags/{key}/rollback", NULL, flag_rollback_ok, flag_rollback_fail},
    {"POST", "/api/v1/flags/{key}/promote", NULL, flag_promote_ok, flag_promote_fail},
    {"POST", "/api/v1/flags/{key}/rollouts", NULL, rollout_create_ok, rollout_create_fail},
    {"POST", "/api/v1/flags/{key}/rollouts/{id}/cancel", NULL, rollout_cancel_ok,
     rollout_cancel_fail},
    {"POST", "/api/v1/flags/{key}/rollouts/{id}/abort", NULL, rollout_abort_ok,
     rollout_abort_fail},
    {"POST", "/api/v1/segments", NULL, segment_create_ok, segment_create_fail},
    {"PUT", "/api/v1/segments/{name}", NULL, segment_update_ok, segment_update_fail},
    {"DELETE", "/api/v1/segments/{name}", NULL, segment_delete_ok, segment_delete_fail},
    {"POST", "/api/v1/change-requests/{id}/approve", NULL, cr_approve_ok, cr_approve_fail},
    {"POST", "/api/v1/change-requests/{id}/reject", NULL, cr_reject_ok, cr_reject_fail},
    {"PATCH", "/api/v1/environments/{env}", NULL, env_patch_ok, env_patch_fail},
    {"POST", "/api/v1/environments/{env}/apply", NULL, env_apply_ok, env_apply_fail},
    {"POST", "/api/v1/databases", NULL, db_create_ok, db_create_fail},
    {"PATCH", "/api/v1/databases/{id}", NULL, db_patch_ok, db_patch_fail},
    {"DELETE", "/api/v1/databases/{id}", NULL, db_delete_ok, db_delete_fail},
    {"POST", "/api/v1/kafka/topics", NULL, topic_create_ok, topic_create_fail},
    {"PATCH", "/api/v1/kafka/topics/{name}", NULL, topic_patch_ok, topic_patch_fail},
    {"DELETE", "/api/v1/kafka/topics/{name}", NULL, topic_delete_ok, topic_delete_fail},
    {"POST", "/api/v1/kafka/consumer-groups", NULL, group_create_ok, group_create_fail},
    {"PATCH", "/api/v1/kafka/consumer-groups/{name}", NULL, group_patch_ok, group_patch_fail},
    {"DELETE", "/api/v1/kafka/consumer-groups/{name}", NULL, group_delete_ok, group_delete_fail},
    {"POST", "/api/v1/kafka/connectors", NULL, conn_create_ok, conn_create_fail},
    {"PATCH", "/api/v1/kafka/connectors/{name}", NULL, conn_patch_ok, conn_patch_fail},
    {"DELETE", "/api/v1/kafka/connectors/{name}", NULL, conn_delete_ok, conn_delete_fail},
    {"POST", "/api/v1/inventory/import", NULL, import_ok, import_fail},
    {"POST", "/api/v1/backup-policies", NULL, bkp_create_ok, bkp_create_fail},
    {"PATCH", "/api/v1/backup-policies/{component}", NULL, bkp_patch_ok, bkp_patch_fail},
    {"DELETE", "/api/v1/backup-policies/{component}", NULL, bkp_delete_ok, bkp_delete_fail},
    {"POST", "/api/v1/backups/reports", NULL, bk_report_ok, bk_report_fail},
    {"POST", "/api/v1/databases/{id}/backups", NULL, bk_run_ok, bk_run_fail},
    {"POST", "/api/v1/backups/{id}/verify", NULL, bk_verify_ok, bk_verify_fail},
    {"POST", "/api/v1/backups/{id}/restore", NULL, bk_restore_ok, bk_restore_fail},
    {"POST", "/api/v1/dr/drills", NULL, dr_drill_ok, dr_drill_fail},
    {"POST", "/api/v1/databases/{id}/failover", NULL, dr_failover_ok, dr_failover_fail},
    {"POST", "/api/v1/databases/{id}/switchover", NULL, dr_switchover_ok, dr_switchover_fail},
};

/* ---- the walk ---- */

static json_t *route_table(void)
{
    FILE *p = popen(QDB_BINARY " routes", "r");
    if (!p)
        return NULL;
    json_error_t err;
    json_t *j = json_loadf(p, 0, &err);
    pclose(p);
    return j;
}

static long events_with(const char *request_id)
{
    return th_sql_long(url, "SELECT count(*) FROM audit_event WHERE request_id = $1", request_id,
                       NULL);
}

/* Events (the outbox, migrations/0008): rows after `after_id` emitted by `role`'s caller.
 * The caller's own, so that a job finishing meanwhile (the system actor) does not count. */
static long outbox_max_id(void)
{
    return th_sql_long(url, "SELECT coalesce(max(id), 0) FROM outbox", NULL);
}
static long outbox_events_by(long after_id, const char *role)
{
    char id[24], subject[64];
    snprintf(id, sizeof id, "%ld", after_id);
    snprintf(subject, sizeof subject, "test-%s", role);
    return th_sql_long(url, "SELECT count(*) FROM outbox WHERE id > $1::bigint "
                            "AND event->>'actor' = $2",
                       id, subject, NULL);
}

#define NRECIPES (sizeof recipes / sizeof recipes[0])
static int recipe_used[NRECIPES];

static void check_route(const char *method, const char *path, const char *route_role)
{
    const struct recipe *rc = NULL;
    for (size_t i = 0; i < NRECIPES; i++)
        if (strcmp(recipes[i].method, method) == 0 && strcmp(recipes[i].pattern, path) == 0) {
            rc = &recipes[i];
            recipe_used[i] = 1;
        }
    if (!rc) {
        CHECK(0, "add a recipe for %s %s to tests/integration/test_audit_routes.c", method, path);
        return;
    }
    const char *role = route_role;
    if (rc->min_role && th_role_rank(rc->min_role) > th_role_rank(role))
        role = rc->min_role;
    if (th_role_rank(role) == 0)
        role = "viewer";
    th_step("%s %s as %s", method, path, role);

    struct call c = {method, "", "", NULL};
    snprintf(c.path, sizeof c.path, "%s", path);
    struct expect e = {0};
    if (rc->ok(&c, &e) != 0) {
        CHECK(0, "%s %s: the recipe's set-up failed", method, path);
        return;
    }
    char rid[96];
    snprintf(rid, sizeof rid, "audit-rt-%d-%d", (int)getpid(), seq++);
    struct th_resp r;
    long before_id = outbox_max_id();
    CHECK(do_call(&c, role, rid, &r) == 0 && r.status == e.status, "%s %s: %ld %s (want %ld)",
          method, c.path, r.status, r.body ? r.body : "", e.status);
    if (!e.resource_id[0]) {
        id_of(r.json, e.resource_id, sizeof e.resource_id);
        if (!e.resource_id[0])
            snprintf(e.resource_id, sizeof e.resource_id, "%s",
                     json_string_value(json_object_get(r.json, "name")) ?: "");
    }
    const char *secret = json_string_value(json_object_get(r.json, "token"));
    if (secret && nsecrets < MAX_SECRETS)
        secrets[nsecrets++] = strdup(secret);
    th_resp_free(&r);
    if (!e.action) {
        CHECK(events_with(rid) == 0, "%s %s: a read left %ld events", method, path,
              events_with(rid));
        goto failing;
    }
    CHECK(events_with(rid) == 1, "%s %s: %ld events, want exactly 1", method, path,
          events_with(rid));
    CHECK(outbox_events_by(before_id, role) == 1,
          "%s %s: %ld outbox events by the caller, want exactly 1 (audit_event_emit_http "
          "beside the audit record)",
          method, path, outbox_events_by(before_id, role));
    PGresult *ev = th_sql(url,
                          "SELECT actor_subject, auth_method, action, resource_type, "
                          "resource_id, client_addr FROM audit_event WHERE request_id = $1",
                          rid, NULL);
    if (ev && PQntuples(ev) == 1) {
        char subject[64];
        snprintf(subject, sizeof subject, "test-%s", role);
        const char *want[] = {subject,         "dev",         e.action,
                              e.resource_type, e.resource_id, "127.0.0.1"};
        const char *names[] = {"actor_subject", "auth_method", "action",
                               "resource_type", "resource_id", "client_addr"};
        for (int i = 0; i < 6; i++)
            CHECK(!PQgetisnull(ev, 0, i) && strcmp(PQgetvalue(ev, 0, i), want[i]) == 0,
                  "%s %s: %s = %s, want %s", method, path, names[i],
                  PQgetisnull(ev, 0, i) ? "NULL" : PQgetvalue(ev, 0, i), want[i]);
    }
    PQclear(ev);

failing:;
    struct call f = {method, "", "", NULL};
    snprintf(f.path, sizeof f.path, "%s", path);
    long want_fail = 0;
    if (rc->fail(&f, &want_fail) != 0) {
        CHECK(0, "%s %s: the failing recipe's set-up failed", method, path);
        return;
    }
    snprintf(rid, sizeof rid, "audit-rt-%d-%d", (int)getpid(), seq++);
    before_id = outbox_max_id();
    CHECK(do_call(&f, role, rid, &r) == 0 && r.status == want_fail,
          "%s %s (failing): %ld %s (want %ld)", method, f.path, r.status, r.body ? r.body : "",
          want_fail);
    th_resp_free(&r);
    CHECK(events_with(rid) == 0, "%s %s: a failed request left %ld events", method, path,
          events_with(rid));
    CHECK(outbox_events_by(before_id, role) == 0, "%s %s: a failed request left %ld outbox events",
          method, path, outbox_events_by(before_id, role));
}

int main(void)
{
    url = th_db_create("auditrt");
    const char *env[] = {"QDB_FLAGS_PROD_APPROVAL=1", NULL};
    if (th_server_start(&srv, url, env, 1) != 0) {
        CHECK(0, "server start");
        return th_done();
    }
    for (int i = 1; i < 4; i++) {
        tokens[i] = th_dev_token(&srv, role_names[i]);
        CHECK(tokens[i] != NULL, "token for %s", role_names[i]);
    }
    {
        struct th_resp r;
        th_post_json(&srv, "/dev-issuer/token", NULL, "{\"sub\":\"other-admin\",\"role\":\"admin\"}",
                     &r);
        const char *t = json_string_value(json_object_get(r.json, "access_token"));
        other_admin = t ? strdup(t) : NULL;
        th_resp_free(&r);
        CHECK(other_admin != NULL, "a second admin's token");
    }
    json_t *routes = route_table();
    CHECK(json_is_array(routes) && json_array_size(routes) > 0, "route table");
    size_t i;
    json_t *rt;
    int walked = 0;
    json_array_foreach(routes, i, rt)
    {
        const char *method = json_string_value(json_object_get(rt, "method"));
        const char *path = json_string_value(json_object_get(rt, "path"));
        const char *role = json_string_value(json_object_get(rt, "role"));
        if (!method || !path || !role || strcmp(method, "GET") == 0 ||
            strncmp(path, "/api/v1/", 8) != 0)
            continue;
        check_route(method, path, role);
        walked++;
    }
    CHECK(walked == (int)NRECIPES, "walked %d mutating routes, %zu recipes", walked, NRECIPES);
    for (size_t k = 0; k < NRECIPES; k++)
        CHECK(recipe_used[k], "the recipe for %s %s matches no route: remove it",
              recipes[k].method, recipes[k].pattern);
    fprintf(stderr, "   %d mutating routes walked\n", walked);

    th_step("the chain holds after the walk");
    struct th_resp r;
    th_get(&srv, "/api/v1/audit/verify", tokens[1], &r);
    CHECK(r.status == 200 && json_is_true(json_object_get(r.json, "ok")), "verify: %s", r.body);
    th_resp_free(&r);

    th_step("no secret a call returned, and no bearer token, is in the trail");
    for (int k = 0; k < nsecrets; k++) {
        CHECK(th_sql_long(url,
                          "SELECT count(*) FROM audit_event WHERE strpos(audit_event::text, "
                          "$1) > 0",
                          secrets[k], NULL) == 0,
              "secret %d absent", k);
        free(secrets[k]);
    }
    CHECK(nsecrets == 1, "the walk saw exactly the one token secret POST /api/v1/tokens "
                         "returned (%d)",
          nsecrets);
    for (int k = 1; k < 4; k++)
        CHECK(th_sql_long(url,
                          "SELECT count(*) FROM audit_event WHERE strpos(audit_event::text, "
                          "$1) > 0",
                          tokens[k], NULL) == 0,
              "bearer token of %s absent", role_names[k]);
    json_decref(routes);
    /* the switchover recipe's job runs against its own pair: let it end before they go */
    for (double end = th_now_ms() + 180000;
         th_now_ms() < end && th_sql_long(url, "SELECT count(*) FROM job WHERE kind LIKE 'dr.%' "
                                               "AND state IN ('pending', 'running', 'retrying')",
                                          NULL) > 0;)
        th_sleep_ms(100);
    CHECK(th_sql_long(url, "SELECT count(*) FROM job WHERE kind = 'dr.switchover' AND state = "
                           "'succeeded'", NULL) == 1,
          "the recipe's switchover ran to its end");
    CHECK(th_server_stop(&srv) == 0, "clean stop");
    dr_servers_destroy(&dr_pgs);
    for (int k = 1; k < 4; k++)
        free(tokens[k]);
    free(other_admin);
    th_db_drop(url);
    free(url);
    return th_done();
}
