/* Scheduled rollouts (migration waves) on the job engine. A rollout is a list of steps
 * {at, percentage}; each step is one job of kind flags.rollout_step with run_at = at, so
 * the engine's clock decides when it runs (a step whose time has passed runs at once; a
 * test sets times in the past or a second ahead instead of waiting). The runner applies a
 * step only while its rollout is active: it sets the environment's fallthrough split to
 * {variant: percentage, other: 100 - percentage} (enabled), through the one write path, so
 * the step is a version, an audit event and an outbox event like any change. Cancel stops
 * the steps still to come; abort also restores the configuration of the version before
 * the rollout. The split's cumulative ranges keep every key already in as a step raises
 * the percentage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "flags/flags_jobs.h"
#include "flags/flags_store.h"
#include "flags/flags_write.h"
#include "jobs/jobs.h"
#include "platform/log.h"
#include "platform/rfc3339.h"

/* The configuration that serves `variant` to `percentage` % (the rest `other`). New. */
json_t *flags_rollout_config(const json_t *cfg, const char *variant, const char *other,
                             double percentage)
{
    json_t *out = json_deep_copy(cfg);
    json_t *split;
    if (percentage >= 100.0)
        split = json_pack("[{s:s,s:f}]", "variant", variant, "percentage", 100.0);
    else if (percentage <= 0.0)
        split = json_pack("[{s:s,s:f}]", "variant", other, "percentage", 100.0);
    else
        split = json_pack("[{s:s,s:f},{s:s,s:f}]", "variant", variant, "percentage", percentage,
                          "variant", other, "percentage", 100.0 - percentage);
    json_object_set_new(out, "split", split);
    json_object_set_new(out, "enabled", json_true());
    return out;
}

/* The variant that gets the rest of a split: the default variant unless it is the one
 * rolled out, then the off variant. NULL when both are that variant. */
const char *flags_rollout_other(const json_t *cfg, const char *variant)
{
    const char *defv = json_string_value(json_object_get(cfg, "default_variant"));
    const char *offv = json_string_value(json_object_get(cfg, "off_variant"));
    if (defv && strcmp(defv, variant) != 0)
        return defv;
    if (offv && strcmp(offv, variant) != 0)
        return offv;
    return NULL;
}

struct step_tx {
    int64_t rollout_id;
    int step;
    const struct audit_actor *actor;
    char skipped[64];
    char why[256];
};

static int step_fn(struct db_conn *c, void *cls)
{
    struct step_tx *t = cls;
    t->skipped[0] = '\0';
    json_t *ro = NULL;
    int rc = flags_store_rollout_get_for_update(c, t->rollout_id, &ro);
    if (rc <= 0) {
        snprintf(t->skipped, sizeof t->skipped, "rollout gone");
        return rc < 0 ? rc : 0;
    }
    const char *state = json_string_value(json_object_get(ro, "state"));
    json_t *steps = json_object_get(ro, "steps");
    json_t *step = json_array_get(steps, (size_t)t->step);
    if (strcmp(state, "active") != 0 || !step || json_object_get(step, "applied_at")) {
        snprintf(t->skipped, sizeof t->skipped, "%s", step ? state : "no such step");
        json_decref(ro);
        return 0;
    }
    const char *key = json_string_value(json_object_get(ro, "flag"));
    const char *env = json_string_value(json_object_get(ro, "environment"));
    const char *variant = json_string_value(json_object_get(ro, "variant"));
    json_t *doc = NULL;
    rc = flags_store_get(c, key, &doc);
    if (rc <= 0) {
        json_decref(ro);
        return rc < 0 ? rc : FLAGS_W_NOT_FOUND;
    }
    json_t *cfg = json_object_get(json_object_get(doc, "environments"), env);
    const char *other = cfg ? flags_rollout_other(cfg, variant) : NULL;
    if (!other) {
        snprintf(t->why, sizeof t->why, "no variant besides %s to split with", variant);
        json_decref(doc);
        json_decref(ro);
        return FLAGS_W_INVALID;
    }
    json_t *next = flags_rollout_config(cfg, variant, other,
                                        json_number_value(json_object_get(step, "percentage")));
    char comment[300];
    snprintf(comment, sizeof comment, "rollout %lld step %d: %g %%", (long long)t->rollout_id,
             t->step + 1, json_number_value(json_object_get(step, "percentage")));
    struct flags_change ch = {.who = {NULL, t->actor}, .key = key, .environment = env,
                              .config = next, .action = "rollout", .comment = comment};
    rc = flags_apply_env_change(c, &ch);
    json_decref(next);
    json_decref(doc);
    if (rc != 0) {
        snprintf(t->why, sizeof t->why, "%s", ch.err);
        json_decref(ch.result);
        json_decref(ro);
        return rc;
    }
    json_t *ns = json_deep_copy(steps);
    json_t *s = json_array_get(ns, (size_t)t->step);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char now[RFC3339_TEXT_MAX];
    rfc3339_format_ms((int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000, now, sizeof now);
    json_object_set_new(s, "applied_at", json_string(now));
    json_object_set_new(s, "version", json_integer(ch.version_after));
    int last = 1;
    size_t i;
    json_t *x;
    json_array_foreach(ns, i, x)
    {
        last &= json_object_get(x, "applied_at") != NULL;
    }
    json_t *after = NULL;
    rc = flags_store_rollout_set(c, t->rollout_id, last ? "completed" : "active", ns, &after);
    json_decref(after);
    json_decref(ns);
    json_decref(ch.result);
    json_decref(ro);
    return rc < 0 ? rc : 0;
}

static enum jobs_outcome step_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    const char *by = jobs_created_by(ctx);
    struct audit_actor actor = {.subject = by ? by : "system", .name = by ? by : "system",
                                .auth_method = "system"};
    struct step_tx t = {.rollout_id = json_integer_value(json_object_get(args, "rollout_id")),
                        .step = (int)json_integer_value(json_object_get(args, "step")),
                        .actor = &actor};
    struct db_conn *c = jobs_db(ctx);
    int rc = db_tx(c, step_fn, &t);
    if (rc == DB_RETRY)
        return JOBS_RETRY;
    if (rc != 0) {
        jobs_error(ctx, "step not applied: %s", t.why[0] ? t.why : "state store error");
        return rc < -100 ? JOBS_FAIL : JOBS_RETRY;
    }
    if (t.skipped[0]) {
        jobs_log(ctx, "info", "step %d skipped: %s", t.step + 1, t.skipped);
        *result = json_pack("{s:s}", "skipped", t.skipped);
        return JOBS_OK;
    }
    (void)flags_snapshot_reload(c);
    *result = json_pack("{s:I,s:i}", "rollout", (json_int_t)t.rollout_id, "step", t.step + 1);
    return JOBS_OK;
}

static int step_validate(json_t *args, char *err, size_t errlen)
{
    if (!json_is_integer(json_object_get(args, "rollout_id")) ||
        !json_is_integer(json_object_get(args, "step"))) {
        snprintf(err, errlen, "args are {rollout_id, step}");
        return -1;
    }
    return 0;
}

static const struct jobs_kind k_step = {
    .kind = FLAGS_ROLLOUT_KIND,
    .max_attempts = 5,
    .timeout_seconds = 60,
    .direct_role = HTTP_PUBLIC, /* enqueued by POST /api/v1/flags/{key}/rollouts only */
    .validate = step_validate,
    .run = step_run,
};

int flags_jobs_register(void)
{
    return jobs_register_kind(&k_step);
}
