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

#include "harness.h"

static char *url;
static struct th_server srv;
static char *tokens[4]; /* by role: [1] viewer, [2] operator, [3] admin */
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
    const char *action;
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

static const struct recipe recipes[] = {
    {"POST", "/api/v1/tokens", NULL, token_create_ok, token_create_fail},
    {"DELETE", "/api/v1/tokens/{id}", NULL, token_revoke_ok, token_revoke_fail},
    {"POST", "/api/v1/audit/verify", NULL, audit_verify_ok, audit_verify_fail},
    {"POST", "/api/v1/jobs", "operator", job_create_ok, job_create_fail},
    {"POST", "/api/v1/jobs/{id}/cancel", NULL, job_cancel_ok, job_cancel_fail},
    {"POST", "/api/v1/jobs/{id}/retry", NULL, job_retry_ok, job_retry_fail},
    {"POST", "/api/v1/schedules", NULL, schedule_create_ok, schedule_create_fail},
    {"PATCH", "/api/v1/schedules/{name}", NULL, schedule_update_ok, schedule_update_fail},
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
    if (th_server_start(&srv, url, NULL, 1) != 0) {
        CHECK(0, "server start");
        return th_done();
    }
    for (int i = 1; i < 4; i++) {
        tokens[i] = th_dev_token(&srv, role_names[i]);
        CHECK(tokens[i] != NULL, "token for %s", role_names[i]);
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
    CHECK(th_server_stop(&srv) == 0, "clean stop");
    for (int k = 1; k < 4; k++)
        free(tokens[k]);
    th_db_drop(url);
    free(url);
    return th_done();
}
