/* HTTP handlers of /api/v1/flags/{key}/rollouts: create (one job per step, run at the
 * step's time, flags_jobs.c), list, cancel (the steps to come do nothing), abort (cancel,
 * and restore the environment's configuration of the version before the rollout). Each is
 * audited and emitted in its own transaction; production needs admin. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "auth/auth.h"
#include "flags/flags_jobs.h"
#include "flags/flags_store.h"
#include "flags/flags_write.h"
#include "jobs/jobs.h"
#include "platform/jsonspec.h"
#include "platform/log.h"
#include "platform/rfc3339.h"

#define MAX_STEPS 20

struct create_tx {
    struct http_request *req;
    const char *key, *env, *variant, *comment;
    json_t *steps; /* [{at, percentage}] checked */
    json_t *result;
    struct flags_change ch;
};

static int create_fn(struct db_conn *c, void *cls)
{
    struct create_tx *t = cls;
    json_t *doc = NULL;
    int rc = flags_store_get_for_update(c, t->key, &doc);
    if (rc <= 0) {
        snprintf(t->ch.err, sizeof t->ch.err, "no flag %s", t->key);
        return rc < 0 ? rc : FLAGS_W_NOT_FOUND;
    }
    json_t *cfg = json_object_get(json_object_get(doc, "environments"), t->env);
    const char *variant = t->variant;
    if (!variant)
        variant = json_object_get(json_object_get(doc, "variants"), "on")
                      ? "on"
                      : json_string_value(json_object_get(cfg, "default_variant"));
    if (!cfg || !variant || !json_object_get(json_object_get(doc, "variants"), variant) ||
        !flags_rollout_other(cfg, variant)) {
        snprintf(t->ch.field, sizeof t->ch.field, cfg ? "variant" : "environment");
        snprintf(t->ch.err, sizeof t->ch.err,
                 cfg ? "variant must be one of the flag's variants, other than both its default "
                       "and off variants"
                     : "no environment %s",
                 t->env);
        json_decref(doc);
        return cfg ? FLAGS_W_INVALID : FLAGS_W_NO_ENV;
    }
    int64_t base = json_integer_value(json_object_get(doc, "version"));
    json_decref(doc);
    if ((rc = flags_store_rollouts_active(c, t->key, t->env)) != 0) {
        snprintf(t->ch.err, sizeof t->ch.err, "a rollout of %s in %s is active: cancel it first",
                 t->key, t->env);
        return rc < 0 ? rc : FLAGS_W_CONFLICT;
    }
    json_t *ro = NULL;
    rc = flags_store_rollout_insert(c, t->key, t->env, variant, t->steps, base, t->comment,
                                    flags_actor_subject(&t->ch.who), &ro);
    if (rc <= 0)
        return rc < 0 ? rc : DB_HARD;
    int64_t id = json_integer_value(json_object_get(ro, "id"));
    json_t *steps = json_deep_copy(t->steps);
    size_t i;
    json_t *s;
    json_array_foreach(steps, i, s)
    {
        json_t *args = json_pack("{s:I,s:i}", "rollout_id", (json_int_t)id, "step", (int)i);
        struct jobs_new jn = {.kind = FLAGS_ROLLOUT_KIND, .args = args,
                              .run_at = json_string_value(json_object_get(s, "at")),
                              .created_by = flags_actor_subject(&t->ch.who)};
        int64_t job = 0;
        rc = jobs_enqueue(c, &jn, &job, NULL);
        json_decref(args);
        if (rc < 0)
            break;
        json_object_set_new(s, "job_id", json_integer(job));
    }
    json_decref(ro);
    if (rc >= 0)
        rc = flags_store_rollout_set(c, id, "active", steps, &t->result);
    json_decref(steps);
    if (rc < 0)
        return rc;
    char rid[24];
    db_int64(rid, id);
    struct audit_entry e = {.action = "rollout.create", .resource_type = "rollout",
                            .resource_id = rid, .environment = t->env, .after = t->result};
    rc = audit_record_http(c, t->req, &e);
    char subject[300];
    snprintf(subject, sizeof subject, "flags/%s", t->key);
    if (rc >= 0)
        rc = flags_actor_emit(c, &t->ch.who, "rollout_scheduled", subject, t->result);
    return rc < 0 ? rc : 0;
}

static void reply_error(struct http_request *req, int rc, const struct flags_change *ch)
{
    switch (rc) {
    case FLAGS_W_NOT_FOUND:
    case FLAGS_W_NO_ENV:
        http_reply_problem(req, QDB_E_NOT_FOUND, "%s", ch->err);
        return;
    case FLAGS_W_INVALID:
        http_reply_invalid(req, ch->field, "%s", ch->err);
        return;
    case FLAGS_W_CONFLICT:
        http_reply_problem(req, QDB_E_CONFLICT, "%s", ch->err);
        return;
    case FLAGS_W_STALE:
        http_reply_problem(req, QDB_E_PRECONDITION_FAILED, "%s", ch->err);
        return;
    default:
        http_reply_db_error(req, rc);
    }
}

static int production_admin(struct http_request *req, const char *env)
{
    const struct http_principal *p = http_principal(req);
    if (strcmp(env, "production") == 0 && (!p || p->role < HTTP_ADMIN)) {
        http_reply_problem(req, QDB_E_FORBIDDEN, "production changes need the admin role");
        return -1;
    }
    return 0;
}

void flags_api_rollouts_create(struct http_request *req)
{
    struct create_tx t = {.req = req};
    t.key = http_param(req, "key");
    t.ch.who.req = req;
    json_t *steps = NULL;
    const struct jspec_field f[] = {
        {"environment", JSPEC_STRING, 1, 1, 32, NULL, &t.env, NULL},
        {"variant", JSPEC_STRING, 0, 1, 64, NULL, &t.variant, NULL},
        {"steps", JSPEC_ARRAY, 1, 0, 0, NULL, &steps, NULL},
        {"comment", JSPEC_STRING, 0, 0, 2000, NULL, &t.comment, NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, http_body(req), f, NULL, 0) != 0)
        return;
    if (json_array_size(steps) == 0 || json_array_size(steps) > MAX_STEPS) {
        http_reply_invalid(req, "steps", "steps is a list of 1 to %d {at, percentage}", MAX_STEPS);
        return;
    }
    t.steps = json_array();
    int64_t prev = INT64_MIN;
    size_t i;
    json_t *s;
    json_array_foreach(steps, i, s)
    {
        char field[32];
        snprintf(field, sizeof field, "steps[%zu]", i);
        const char *at = json_string_value(json_object_get(s, "at"));
        json_t *pct = json_object_get(s, "percentage");
        int64_t us = 0;
        if (!json_is_object(s) || json_object_size(s) != 2 || !at ||
            rfc3339_parse(at, strlen(at), &us) != 0 || !json_is_number(pct) ||
            json_number_value(pct) < 0 || json_number_value(pct) > 100) {
            json_decref(t.steps);
            http_reply_invalid(req, field, "a step is {at: RFC 3339 time, percentage: 0 to 100}");
            return;
        }
        if (us < prev) {
            json_decref(t.steps);
            http_reply_invalid(req, field, "steps are in time order");
            return;
        }
        prev = us;
        json_array_append_new(t.steps, json_pack("{s:s,s:f}", "at", at, "percentage",
                                                 json_number_value(pct)));
    }
    if (auth_require_environment(req, t.env) != 0 || production_admin(req, t.env) != 0) {
        json_decref(t.steps);
        return;
    }
    struct db_conn *c = http_db_or_reply(req);
    if (!c) {
        json_decref(t.steps);
        return;
    }
    int rc = db_tx(c, create_fn, &t);
    json_decref(t.steps);
    if (rc < 0) {
        json_decref(t.result);
        reply_error(req, rc, &t.ch);
        return;
    }
    http_reply_json(req, 201, t.result);
}

void flags_api_rollouts_list(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *out = NULL;
    int rc = flags_store_rollouts_list(c, http_param(req, "key"), &out);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return;
    }
    http_reply_json(req, 200, out);
}

struct stop_tx {
    struct http_request *req;
    int64_t id;
    const char *key;
    int abort;
    json_t *result;
    struct flags_change ch;
};

static int stop_fn(struct db_conn *c, void *cls)
{
    struct stop_tx *t = cls;
    json_t *ro = NULL;
    int rc = flags_store_rollout_get_for_update(c, t->id, &ro);
    if (rc < 0)
        return rc;
    if (rc == 0 || strcmp(json_string_value(json_object_get(ro, "flag")), t->key) != 0) {
        json_decref(ro);
        snprintf(t->ch.err, sizeof t->ch.err, "no rollout %lld of %s", (long long)t->id, t->key);
        return FLAGS_W_NOT_FOUND;
    }
    const char *state = json_string_value(json_object_get(ro, "state"));
    const char *env = json_string_value(json_object_get(ro, "environment"));
    if (strcmp(env, "production") == 0) {
        const struct http_principal *p = http_principal(t->req);
        if (!p || p->role < HTTP_ADMIN) {
            json_decref(ro);
            return -400;
        }
    }
    /* cancel: only an active rollout; abort: also a completed one (undo the whole wave) */
    if (strcmp(state, "active") != 0 && !(t->abort && strcmp(state, "completed") == 0)) {
        snprintf(t->ch.err, sizeof t->ch.err, "rollout %lld is %s", (long long)t->id, state);
        json_decref(ro);
        return FLAGS_W_CONFLICT;
    }
    if (t->abort) {
        json_t *doc = NULL;
        rc = flags_store_version_doc(c, t->key,
                                     json_integer_value(json_object_get(ro, "base_version")),
                                     &doc);
        json_t *cfg = json_object_get(json_object_get(doc, "environments"), env);
        if (rc <= 0 || !cfg) {
            json_decref(doc);
            json_decref(ro);
            return rc < 0 ? rc : DB_HARD;
        }
        char comment[64];
        snprintf(comment, sizeof comment, "abort of rollout %lld", (long long)t->id);
        t->ch = (struct flags_change){.who = {t->req, NULL}, .key = t->key, .environment = env,
                                      .config = cfg, .action = "rollout_abort",
                                      .comment = comment, .skip_audit = 1};
        rc = flags_apply_env_change(c, &t->ch);
        json_decref(t->ch.result);
        t->ch.result = NULL;
        json_decref(doc);
        if (rc != 0) {
            json_decref(ro);
            return rc;
        }
    }
    rc = flags_store_rollout_set(c, t->id, t->abort ? "aborted" : "cancelled",
                                 json_object_get(ro, "steps"), &t->result);
    if (rc >= 0) {
        char rid[24];
        db_int64(rid, t->id);
        struct audit_entry e = {.action = t->abort ? "rollout.abort" : "rollout.cancel",
                                .resource_type = "rollout", .resource_id = rid,
                                .environment = env, .before = ro, .after = t->result};
        rc = audit_record_http(c, t->req, &e);
    }
    if (rc >= 0) {
        char subject[300];
        snprintf(subject, sizeof subject, "flags/%s", t->key);
        struct flags_actor who = {t->req, NULL};
        rc = flags_actor_emit(c, &who, t->abort ? "rollout_aborted" : "rollout_cancelled",
                              subject, t->result);
    }
    json_decref(ro);
    return rc < 0 ? rc : 0;
}

static void stop(struct http_request *req, int abort_)
{
    struct stop_tx t = {.req = req, .abort = abort_, .key = http_param(req, "key")};
    const char *ids = http_param(req, "id");
    char *end;
    errno = 0;
    long long id = strtoll(ids ? ids : "", &end, 10);
    if (errno || *end || id <= 0) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no rollout %s", ids ? ids : "");
        return;
    }
    t.id = id;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    int rc = db_tx(c, stop_fn, &t);
    if (rc == -400) {
        http_reply_problem(req, QDB_E_FORBIDDEN, "production changes need the admin role");
        return;
    }
    if (rc < 0) {
        json_decref(t.result);
        reply_error(req, rc, &t.ch);
        return;
    }
    if (abort_ && flags_snapshot_reload_flag(c, t.key) != 0)
        log_warn("flags: reload after an abort failed; the listener will reload");
    http_reply_json(req, 200, t.result);
}

void flags_api_rollouts_cancel(struct http_request *req)
{
    stop(req, 0);
}

void flags_api_rollouts_abort(struct http_request *req)
{
    stop(req, 1);
}
