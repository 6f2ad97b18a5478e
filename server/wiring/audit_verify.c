/* The audit chain's verification as a job: audit.verify recomputes the hash chain on a
 * worker, run daily by the default schedule audit-verify-daily and on demand by operators
 * (POST /api/v1/jobs {"kind": "audit.verify"}). A break counts in the metrics and logs an
 * event (in audit_verify) and fails the job, so it also shows in the job list. It lives
 * here, not in audit/, because the audit room knows no jobs. */
#include <stdio.h>

#include "audit/audit.h"
#include "jobs/jobs.h"
#include "platform/jsonspec.h"
#include "wiring/wiring.h"

/* {from_seq?: int >= 1, to_seq?: int >= 1}; default the whole chain. */
static int verify_validate(json_t *args, char *err, size_t errlen)
{
    int64_t from = 1, to = 0;
    const struct jspec_field f[] = {
        {"from_seq", JSPEC_INT, 0, 1, INT64_MAX, NULL, &from, NULL},
        {"to_seq", JSPEC_INT, 0, 1, INT64_MAX, NULL, &to, NULL},
        JSPEC_END,
    };
    if (jspec_parse(NULL, args, f, err, errlen) != 0)
        return -1;
    if (to && to < from) {
        snprintf(err, errlen, "to_seq must not be below from_seq");
        return -1;
    }
    return 0;
}

static int verify_progress(void *cls, int64_t checked)
{
    (void)checked;
    return jobs_heartbeat(cls);
}

static enum jobs_outcome verify_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    json_t *from = json_object_get(args, "from_seq"), *to = json_object_get(args, "to_seq");
    struct audit_verify_result r;
    int rc = audit_verify(jobs_db(ctx), from ? json_integer_value(from) : 1,
                          to ? json_integer_value(to) : 0, verify_progress, ctx, &r);
    if (rc < 0) {
        if (jobs_heartbeat(ctx) != 0)
            return JOBS_CANCELLED;
        jobs_error(ctx, "the chain could not be read to the end (state store error)");
        return JOBS_RETRY;
    }
    *result = json_pack("{s:b,s:I,s:o}", "ok", r.ok, "checked", (json_int_t)r.checked,
                        "first_broken_seq", r.ok ? json_null() : json_integer(r.first_broken_seq));
    if (r.ok) {
        jobs_log(ctx, "info", "audit chain verified: %lld events", (long long)r.checked);
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

static int init(struct qdb_app *app)
{
    (void)app;
    return jobs_register_kind(&k_verify) || jobs_schedule_ensure(&daily) ? -1 : 0;
}

const struct qdb_module wiring_audit_module = {
    .name = "wiring-audit",
    .init = init,
};
