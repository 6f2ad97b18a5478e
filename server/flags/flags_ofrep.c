/* OFREP (OpenFeature Remote Evaluation Protocol, open-feature/protocol service/openapi.yaml):
 * the hot path. Handlers run on the event loop (HTTP_INLINE in routes.c): the caller is
 * known from the auth caches without blocking, and evaluation reads only the environment's
 * in-memory snapshot (flags_snapshot.c), so neither the state store nor a handler thread
 * is ever involved. The reply is written straight into a buffer from pre-rendered JSON
 * pieces of the snapshot.
 *
 * The environment is the caller's: a service API token bound to exactly one environment
 * evaluates there; anyone else names it with ?environment= (checked against the token's
 * environments with auth_may_act_on). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "flags/flags_internal.h"
#include "platform/queryspec.h"

#define BULK_MAX (64u * 1024u * 1024u)

/* The OFREP error body {key?, errorCode, errorDetails}. */
static void reply_failure(struct http_request *req, unsigned status, const char *key,
                          enum flags_errcode code, const char *details)
{
    json_t *o = json_pack("{s:s,s:s}", "errorCode", flags_errcode_name(code), "errorDetails",
                          details);
    if (key)
        json_object_set_new(o, "key", json_string(key));
    http_reply_json(req, status, o);
}

/* The environment to evaluate in, into out; 0, or -1 after replying. */
static int resolve_environment(struct http_request *req, char *out, size_t n)
{
    const char *env = NULL;
    const struct qspec_param q[] = {
        {"environment", QSPEC_STRING, 0, 1, 32, NULL, &env, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0)
        return -1;
    const struct http_principal *p = http_principal(req);
    if (!env && p && json_is_array(p->environments) && json_array_size(p->environments) == 1)
        env = json_string_value(json_array_get(p->environments, 0));
    if (!env) {
        http_reply_invalid(req, "environment",
                           "name the environment with ?environment= (a service token bound "
                           "to one environment evaluates there without it)");
        return -1;
    }
    if (auth_require_environment(req, env) != 0)
        return -1;
    snprintf(out, n, "%s", env);
    return 0;
}

/* The request's context (borrowed; NULL when none), or -1 after replying. */
static int request_context(struct http_request *req, const char *key, const json_t **ctx)
{
    const json_t *body = http_body(req);
    *ctx = NULL;
    if (!body)
        return 0;
    if (!json_is_object(body)) {
        reply_failure(req, 400, key, FLAGS_E_INVALID_CONTEXT, "the body is {\"context\": {...}}");
        return -1;
    }
    const json_t *c = json_object_get(body, "context");
    if (c && !json_is_object(c) && !json_is_null(c)) {
        reply_failure(req, 400, key, FLAGS_E_INVALID_CONTEXT, "context is an object");
        return -1;
    }
    const json_t *tk = json_object_get(c, "targetingKey");
    if (tk && !json_is_string(tk)) {
        reply_failure(req, 400, key, FLAGS_E_INVALID_CONTEXT, "targetingKey is a string");
        return -1;
    }
    *ctx = json_is_object(c) ? c : NULL;
    return 0;
}

static struct flags_env *environment_snapshot(struct http_request *req, const char *env)
{
    struct flags_env *e = flags_snapshot_acquire(env);
    if (!e) {
        if (!flags_snapshot_ready()) {
            http_reply_header(req, "Retry-After", "1");
            http_reply_problem(req, QDB_E_NOT_READY, "flags are not loaded yet");
        } else {
            http_reply_problem(req, QDB_E_NOT_FOUND, "no environment %s", env);
        }
    }
    return e;
}

void flags_ofrep_evaluate_one(struct http_request *req)
{
    const char *key = http_param(req, "key");
    char env[40];
    const json_t *ctx;
    if (resolve_environment(req, env, sizeof env) != 0 || request_context(req, key, &ctx) != 0)
        return;
    struct flags_env *e = environment_snapshot(req, env);
    if (!e)
        return;
    const struct flags_flag *f = flags_env_find(e, key);
    if (!f) {
        flags_env_release(e);
        reply_failure(req, 404, key, FLAGS_E_FLAG_NOT_FOUND, "no such flag in this environment");
        return;
    }
    struct flags_result r;
    flags_evaluate(e, f, ctx, &r);
    struct buf b;
    buf_init(&b, BULK_MAX);
    int rc = flags_render_result(&b, f, &r);
    flags_env_release(e);
    if (rc != 0) {
        buf_free(&b);
        http_reply_problem(req, QDB_E_INTERNAL, "out of memory");
        return;
    }
    size_t len = b.len;
    http_reply_data_take(req, r.variant < 0 ? 400 : 200, "application/json", buf_take(&b), len);
}

static void reply_tagged(struct http_request *req, struct buf *b)
{
    char etag[24];
    snprintf(etag, sizeof etag, "\"%016llx\"",
             (unsigned long long)flags_hash64(b->data, b->len));
    http_reply_header(req, "ETag", etag);
    const char *inm = http_header(req, "If-None-Match");
    if (inm && (strstr(inm, etag) || strcmp(inm, "*") == 0)) {
        buf_free(b);
        http_reply_empty(req, 304);
        return;
    }
    size_t len = b->len;
    http_reply_data_take(req, 200, "application/json", buf_take(b), len);
}

/* Reply with a cached answer: 304 when If-None-Match names its ETag. */
static void reply_cached(struct http_request *req, const struct flags_bulk_entry *e)
{
    http_reply_header(req, "ETag", e->etag);
    const char *inm = http_header(req, "If-None-Match");
    if (inm && (strstr(inm, e->etag) || strcmp(inm, "*") == 0))
        http_reply_empty(req, 304);
    else
        http_reply_data(req, 200, "application/json", e->body, e->body_len);
}

void flags_ofrep_evaluate_bulk(struct http_request *req)
{
    char env[40];
    const json_t *ctx;
    if (resolve_environment(req, env, sizeof env) != 0 || request_context(req, NULL, &ctx) != 0)
        return;
    struct flags_env *e = environment_snapshot(req, env);
    if (!e)
        return;
    size_t raw_len = 0;
    const char *raw = http_body_raw(req, &raw_len);
    struct flags_bulk_entry *hit = (struct flags_bulk_entry *)flags_bulk_cache_find(e, raw, raw_len);
    if (hit) {
        atomic_fetch_add_explicit(&hit->hits, 1, memory_order_relaxed);
        reply_cached(req, hit);
        flags_env_release(e);
        return;
    }
    struct buf b;
    buf_init(&b, BULK_MAX);
    size_t hint = atomic_load_explicit(&e->bulk_size_hint, memory_order_relaxed);
    if (hint > 256 && hint < BULK_MAX) { /* one allocation instead of a dozen doublings */
        b.data = malloc(hint + 256);
        b.cap = b.data ? hint + 256 : 0;
    }
    uint16_t *variants = calloc(e->nflags ? e->nflags : 1, sizeof *variants);
    int rc = variants ? buf_puts(&b, "{\"flags\":[") : -1;
    for (size_t i = 0; i < e->nflags && rc == 0; i++) {
        struct flags_result r;
        flags_evaluate(e, &e->flags[i], ctx, &r);
        variants[i] = r.variant < 0 ? UINT16_MAX : (uint16_t)r.variant;
        if (i)
            rc |= buf_append(&b, ",", 1);
        rc |= flags_render_result(&b, &e->flags[i], &r);
    }
    rc |= buf_puts(&b, "]}");
    if (rc != 0) {
        flags_env_release(e);
        free(variants);
        buf_free(&b);
        http_reply_problem(req, QDB_E_INTERNAL, "the answer is too large");
        return;
    }
    atomic_store_explicit(&e->bulk_size_hint, b.len, memory_order_relaxed);
    char etag[24];
    snprintf(etag, sizeof etag, "\"%016llx\"", (unsigned long long)flags_hash64(b.data, b.len));
    flags_bulk_cache_put(e, raw, raw_len, b.data, b.len, etag, variants);
    free(variants);
    flags_env_release(e);
    reply_tagged(req, &b);
}

void flags_ofrep_configuration(struct http_request *req)
{
    struct buf b;
    buf_init(&b, 4096);
    buf_printf(&b,
               "{\"name\":\"qdb-control\",\"capabilities\":{\"cacheInvalidation\":{\"polling\":"
               "{\"enabled\":true,\"minPollingIntervalMs\":%d}},\"flagEvaluation\":"
               "{\"supportedTypes\":[\"boolean\",\"string\",\"int\",\"float\",\"object\"]}}}",
               flags_cfg.poll_interval_ms);
    reply_tagged(req, &b);
}
