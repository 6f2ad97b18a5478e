/* The audit chain's verification as a job: audit.verify recomputes the hash chain on a
 * worker, run daily by the default schedule audit-verify-daily and on demand by operators
 * (POST /api/v1/audit/verify, or POST /api/v1/jobs {"kind": "audit.verify"}). A full run
 * writes checkpoints as it goes (every QDB_AUDIT_CHECKPOINT_EVERY events and at its end),
 * so that GET /api/v1/audit/verify afterwards only checks what came after. A break counts
 * in the metrics and logs an event (in audit_verify) and fails the job, so it also shows in
 * the job list. It lives here, not in audit/, because the audit room knows no jobs. */
#include <stdio.h>

#include "audit/audit.h"
#include "jobs/jobs.h"
#include "platform/jsonspec.h"
#include "wiring/wiring.h"

/* The args {from_seq?: int >= 1, to_seq?: int >= 1}; default the whole chain. The same
 * shape is the body of POST /api/v1/audit/verify. */
static int verify_args(struct http_request *req, json_t *args, int64_t *from, int64_t *to,
                       char *err, size_t errlen)
{
    *from = 1;
    *to = 0;
    const struct jspec_field f[] = {
        {"from_seq", JSPEC_INT, 0, 1, INT64_MAX, NULL, from, NULL},
        {"to_seq", JSPEC_INT, 0, 1, INT64_MAX, NULL, to, NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, args, f, err, errlen) != 0)
        return -1;
    if (*to && *to < *from) {
        if (req)
            http_reply_invalid(req, "to_seq", "to_seq must not be below from_seq");
        else
            snprintf(err, errlen, "to_seq must not be below from_seq");
        return -1;
    }
    return 0;
}

static int verify_validate(json_t *args, char *err, size_t errlen)
{
    int64_t from, to;
    return verify_args(NULL, args, &from, &to, err, errlen);
}

static int verify_progress(void *cls, int64_t checked)
{
    (void)checked;
    return jobs_heartbeat(cls);
}

static enum jobs_outcome verify_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    json_t *from = json_object_get(args, "from_seq"), *to = json_object_get(args, "to_seq");
    struct audit_verify_opts o = {
        .from_seq = from ? json_integer_value(from) : 1,
        .to_seq = to ? json_integer_value(to) : 0,
        .checkpoint_every = audit_checkpoint_every(),
        .checkpoint_at_end = 1,
        .progress = verify_progress,
        .cls = ctx,
    };
    struct audit_verify_result r;
    int rc = audit_verify(jobs_db(ctx), &o, &r);
    if (rc < 0) {
        if (jobs_heartbeat(ctx) != 0)
            return JOBS_CANCELLED;
        jobs_error(ctx, "the chain could not be read to the end (state store error)");
        return JOBS_RETRY;
    }
    *result = audit_verify_result_json(&r);
    json_object_set_new(*result, "checkpoints_written", json_integer(r.checkpoints_written));
    if (r.ok) {
        jobs_log(ctx, "info", "audit chain verified: %lld events, %lld checkpoints written",
                 (long long)r.checked, (long long)r.checkpoints_written);
        return JOBS_OK;
    }
    jobs_error(ctx, "audit chain broken at seq %lld: %s", (long long)r.first_broken_seq, r.reason);
    return JOBS_FAIL;
}

static const struct jobs_kind k_verify = {
    .kind = "audit.verify",
    .max_attempts = 3,
    .timeout_seconds = 6 * 3600,
    .max_running = 1, /* one verification at a time across replicas */
    .direct_role = HTTP_OPERATOR,
    .validate = verify_validate,
    .run = verify_run,
};

static const struct jobs_schedule_default daily = {
    .name = "audit-verify-daily",
    .cron = "17 3 * * *",
    .kind = "audit.verify",
};

/* ---- POST /api/v1/audit/verify ---- */

struct start_tx {
    struct http_request *req;
    json_t *args;
    int64_t id;
};

static int start_fn(struct db_conn *c, void *cls)
{
    struct start_tx *t = cls;
    const struct http_principal *p = http_principal(t->req);
    struct jobs_new jn = {.kind = k_verify.kind,
                          .args = t->args,
                          .created_by = p && p->subject[0] ? p->subject : "anonymous"};
    int rc = jobs_enqueue(c, &jn, &t->id, NULL);
    if (rc < 0)
        return rc;
    char rid[24];
    json_t *after = jobs_get_json(c, t->id);
    struct audit_entry e = {.action = "audit.verify",
                            .resource_type = "job",
                            .resource_id = db_int64(rid, t->id),
                            .after = after};
    rc = audit_record_http(c, t->req, &e);
    if (rc >= 0) {
        char subject[40];
        snprintf(subject, sizeof subject, "jobs/%s", rid);
        struct audit_event ev = {
            .room = "jobs", .verb = "enqueued", .subject = subject, .data = after};
        rc = audit_event_emit_http(c, t->req, &ev);
    }
    json_decref(after);
    return rc;
}

void wiring_api_audit_verify_start(struct http_request *req)
{
    int64_t from, to;
    if (verify_args(req, http_body(req), &from, &to, NULL, 0) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    struct start_tx t = {.req = req, .args = http_body(req)};
    int rc = db_tx(c, start_fn, &t);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return;
    }
    jobs_reply_accepted(req, c, t.id);
}

static int init(struct qdb_app *app)
{
    (void)app;
    return jobs_register_kind(&k_verify) || jobs_schedule_ensure(&daily) ? -1 : 0;
}

const struct qdb_module wiring_audit_module = {
    .name = "wiring-audit",
    .init = init,
};
