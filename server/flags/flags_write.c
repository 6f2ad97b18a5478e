/* The one write path of a flag's environment configuration, shared by PUT, rollback,
 * promote, import, approved change requests and rollout steps: lock the flag, check the
 * expected version (If-Match), check the configuration (shape, variants, prerequisites and
 * their cycles, segments), write it, bump the version, record the version with its JSON
 * diff, the audit event and the outbox event, all in the caller's transaction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "flags/flags_store.h"
#include "flags/flags_write.h"
#include "platform/log.h"

const char *flags_actor_subject(const struct flags_actor *a)
{
    if (a->req) {
        const struct http_principal *p = http_principal(a->req);
        return p && p->subject[0] ? p->subject : "anonymous";
    }
    return a->actor && a->actor->subject ? a->actor->subject : "system";
}

int flags_actor_audit(struct db_conn *c, const struct flags_actor *a, const struct audit_entry *e)
{
    return a->req ? audit_record_http(c, a->req, e) : audit_record(c, a->actor, NULL, NULL, e);
}

int flags_actor_emit(struct db_conn *c, const struct flags_actor *a, const char *verb,
                     const char *subject, const json_t *data)
{
    struct audit_event ev = {.room = "flags", .verb = verb, .subject = subject, .data = data};
    return a->req ? audit_event_emit_http(c, a->req, &ev) : audit_event_emit(c, a->actor, &ev);
}

/* ---- JSON diff: [{path, from, to}] with JSON Pointer paths ---- */

static void pointer_append(char *out, size_t n, const char *base, const char *key)
{
    size_t o = (size_t)snprintf(out, n, "%s/", base);
    for (const char *k = key; *k && o + 3 < n; k++) {
        if (*k == '~') {
            out[o++] = '~';
            out[o++] = '0';
        } else if (*k == '/') {
            out[o++] = '~';
            out[o++] = '1';
        } else {
            out[o++] = *k;
        }
    }
    out[o < n ? o : n - 1] = '\0';
}

static void diff_into(const json_t *a, const json_t *b, const char *path, json_t *out)
{
    if (json_is_object(a) && json_is_object(b)) {
        const char *k;
        json_t *v;
        char p[512];
        json_object_foreach((json_t *)a, k, v)
        {
            pointer_append(p, sizeof p, path, k);
            diff_into(v, json_object_get(b, k), p, out);
        }
        json_object_foreach((json_t *)b, k, v)
        {
            if (json_object_get(a, k))
                continue;
            pointer_append(p, sizeof p, path, k);
            diff_into(NULL, v, p, out);
        }
        return;
    }
    if (a && b && json_equal(a, b))
        return;
    if (!a && !b)
        return;
    json_t *d = json_pack("{s:s}", "path", path);
    json_object_set_new(d, "from", a ? json_deep_copy(a) : json_null());
    json_object_set_new(d, "to", b ? json_deep_copy(b) : json_null());
    json_array_append_new(out, d);
}

json_t *flags_json_diff(const json_t *before, const json_t *after)
{
    json_t *out = json_array();
    diff_into(before, after, "", out);
    return out;
}

/* The doc without the API's timestamps (what versions keep). New reference. */
json_t *flags_doc_core(const json_t *doc)
{
    json_t *d = json_deep_copy(doc);
    json_object_del(d, "created_at");
    json_object_del(d, "updated_at");
    return d;
}

/* ---- checks that need the store ---- */

static int fail(struct flags_change *ch, int code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct flags_change *ch, int code, const char *field, const char *fmt, ...)
{
    snprintf(ch->field, sizeof ch->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ch->err, sizeof ch->err, fmt, ap);
    va_end(ap);
    return code;
}

/* Whether `from` reaches `target` through the graph (flag -> prerequisite keys). */
static int reaches(const json_t *graph, const char *from, const char *target, int depth)
{
    if (depth > 64)
        return 1; /* deeper than any chain allowed: treat as a cycle */
    size_t i;
    const json_t *next;
    json_array_foreach(json_object_get(graph, from), i, next)
    {
        const char *k = json_string_value(next);
        if (!k)
            continue;
        if (strcmp(k, target) == 0 || reaches(graph, k, target, depth + 1))
            return 1;
    }
    return 0;
}

int flags_check_config(struct db_conn *c, const json_t *doc, const char *environment,
                       const json_t *config, struct flags_change *ch)
{
    json_t *def = json_pack("{s:O,s:O,s:O}", "key", json_object_get(doc, "key"), "type",
                            json_object_get(doc, "type"), "variants",
                            json_object_get(doc, "variants"));
    int r = flags_config_check(def, config, ch->field, sizeof ch->field, ch->err, sizeof ch->err);
    json_decref(def);
    if (r != 0)
        return FLAGS_W_INVALID;
    const char *key = json_string_value(json_object_get(doc, "key"));
    const json_t *pre = json_object_get(config, "prerequisites");
    size_t i;
    const json_t *p;
    json_array_foreach(pre, i, p)
    {
        const char *pk = json_string_value(json_object_get(p, "flag"));
        const char *pv = json_string_value(json_object_get(p, "variant"));
        json_t *variants = NULL;
        int rc = flags_store_variants(c, pk, &variants);
        if (rc < 0)
            return rc;
        int ok = rc == 1 && json_object_get(variants, pv) != NULL;
        json_decref(variants);
        if (!ok)
            return fail(ch, FLAGS_W_INVALID, "prerequisites",
                        "prerequisite %s has no variant %s (or there is no such flag)", pk, pv);
    }
    if (json_array_size(pre) > 0) {
        json_t *graph = NULL;
        int rc = flags_store_prereq_graph(c, environment, &graph);
        if (rc < 0)
            return rc;
        if (!graph)
            graph = json_object();
        json_t *mine = json_array();
        json_array_foreach(pre, i, p)
        {
            json_array_append(mine, json_object_get(p, "flag"));
        }
        json_object_set_new(graph, key, mine);
        int cycle = reaches(graph, key, key, 0);
        json_decref(graph);
        if (cycle)
            return fail(ch, FLAGS_W_INVALID, "prerequisites",
                        "these prerequisites make a cycle back to %s", key);
    }
    const json_t *rule;
    json_array_foreach(json_object_get(config, "rules"), i, rule)
    {
        size_t j;
        const json_t *cond;
        json_array_foreach(json_object_get(rule, "conditions"), j, cond)
        {
            const char *op = json_string_value(json_object_get(cond, "operator"));
            if (!op || strstr(op, "segment") == NULL)
                continue;
            const char *seg = json_string_value(json_object_get(cond, "value"));
            int rc = flags_store_segment_exists(c, seg);
            if (rc < 0)
                return rc;
            if (rc == 0) {
                char f[96];
                snprintf(f, sizeof f, "rules[%zu].conditions[%zu].value", i, j);
                return fail(ch, FLAGS_W_INVALID, f, "no segment %s", seg);
            }
        }
    }
    return 0;
}

/* ---- the write ---- */

int flags_apply_env_change(struct db_conn *c, struct flags_change *ch)
{
    json_t *before = NULL;
    int rc = flags_store_get_for_update(c, ch->key, &before);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return fail(ch, FLAGS_W_NOT_FOUND, "key", "no flag %s", ch->key);
    int64_t version = json_integer_value(json_object_get(before, "version"));
    ch->version_before = version;
    if (ch->expected_version && ch->expected_version != version) {
        json_decref(before);
        return fail(ch, FLAGS_W_STALE, "If-Match",
                    "the flag is at version %lld, not %lld: reload and retry",
                    (long long)version, (long long)ch->expected_version);
    }
    if (!json_object_get(json_object_get(before, "environments"), ch->environment)) {
        json_decref(before);
        return fail(ch, FLAGS_W_NO_ENV, "environment", "no environment %s", ch->environment);
    }
    rc = flags_check_config(c, before, ch->environment, ch->config, ch);
    if (rc != 0) {
        json_decref(before);
        return rc;
    }
    int64_t next = version + 1;
    if ((rc = flags_store_env_set(c, ch->key, ch->environment, ch->config, next)) < 0 ||
        (rc = flags_store_set_version(c, ch->key, next)) < 0) {
        json_decref(before);
        return rc;
    }
    json_t *after = NULL;
    rc = flags_store_get(c, ch->key, &after);
    if (rc <= 0) {
        json_decref(before);
        return rc < 0 ? rc : DB_HARD;
    }
    json_t *b = flags_doc_core(before), *a = flags_doc_core(after);
    json_t *diff = flags_json_diff(b, a);
    rc = flags_store_version_insert(c, ch->key, next, ch->environment, ch->action, a, diff,
                                    ch->comment, flags_actor_subject(&ch->who));
    if (rc >= 0) {
        char action[64];
        snprintf(action, sizeof action, "flag.%s", ch->action);
        json_t *bcfg = json_object_get(json_object_get(b, "environments"), ch->environment);
        json_t *acfg = json_object_get(json_object_get(a, "environments"), ch->environment);
        struct audit_entry e = {.action = action,
                                .resource_type = "flag",
                                .resource_id = ch->key,
                                .environment = ch->environment,
                                .before = bcfg,
                                .after = acfg};
        rc = ch->skip_audit ? 0 : flags_actor_audit(c, &ch->who, &e);
    }
    if (rc >= 0 && !ch->skip_audit) {
        char subject[300];
        snprintf(subject, sizeof subject, "flags/%s", ch->key);
        json_t *data = json_pack("{s:s,s:s,s:I,s:O,s:O}", "key", ch->key, "environment",
                                 ch->environment, "version", (json_int_t)next, "config",
                                 json_object_get(json_object_get(a, "environments"),
                                                 ch->environment),
                                 "diff", diff);
        rc = flags_actor_emit(c, &ch->who, ch->action, subject, data);
        json_decref(data);
    }
    json_decref(b);
    json_decref(a);
    json_decref(diff);
    json_decref(before);
    if (rc < 0) {
        json_decref(after);
        return rc;
    }
    json_decref(ch->result);
    ch->result = after;
    ch->version_after = next;
    return 0;
}
