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
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth.h"
#include "flags/flags_internal.h"
#include "platform/queryspec.h"

#define BULK_MAX FLAGS_BULK_MAX

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

/* The body is JSON, as routes with HTTP_BODY_JSON check in the platform; the OFREP routes
 * check it here instead, so that a body seen before (the bulk answers cache) is answered
 * from its bytes without being parsed: the parse was a tenth of the hot path's CPU. The
 * replies are the platform's (415, and 400 for a missing or malformed body). */
static int media_is_json(const char *ct)
{
    if (!ct)
        return 0;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return 1;
    return n > 17 && strncasecmp(ct, "application/", 12) == 0 &&
           strncasecmp(ct + n - 5, "+json", 5) == 0;
}

/* The raw body (len > 0), or NULL after replying. */
static const char *json_body_raw(struct http_request *req, size_t *len)
{
    const char *ct = http_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (!media_is_json(ct)) {
        http_reply_problem(req, QDB_E_UNSUPPORTED_MEDIA, "this route takes application/json, not %s",
                           ct ? ct : "a body without Content-Type");
        return NULL;
    }
    const char *raw = http_body_raw(req, len);
    if (!raw || !*len) {
        http_reply_problem(req, QDB_E_INVALID_JSON, "a JSON body is required");
        return NULL;
    }
    return raw;
}

/* The parsed body (new reference), or NULL after replying. */
static json_t *json_body_parse(struct http_request *req, const char *raw, size_t len)
{
    json_error_t err;
    json_t *body = json_loadb(raw, len, JSON_REJECT_DUPLICATES, &err);
    if (!body)
        http_reply_problem_ext(req, QDB_E_INVALID_JSON,
                               json_pack("{s:i,s:i}", "line", err.line, "column", err.column),
                               "malformed JSON at line %d, column %d: %s", err.line, err.column,
                               err.text);
    return body;
}

/* The request's context (borrowed from body; NULL when none), or -1 after replying. */
static int request_context(struct http_request *req, const json_t *body, const char *key,
                           const json_t **ctx)
{
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

/* The reply is bytes of a cached answer (or a slice of one): sent from where they are, the
 * snapshot's reference (e, taken) held by the response until it is sent. */
static void release_env(void *cls)
{
    flags_env_release(cls);
}

static void reply_from_snapshot(struct http_request *req, unsigned status, struct flags_env *e,
                                const char *data, size_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback_cls(
        len, (void *)data, release_env, e);
    if (!resp) {
        flags_env_release(e);
        http_reply_problem(req, QDB_E_INTERNAL, "out of memory");
        return;
    }
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json") != MHD_YES) {
        MHD_destroy_response(resp);
        http_reply_problem(req, QDB_E_INTERNAL, "out of memory");
        return;
    }
    http_count_bytes(req, len);
    http_reply_response(req, status, resp);
}

void flags_ofrep_evaluate_one(struct http_request *req)
{
    const char *key = http_param(req, "key");
    char env[40];
    size_t raw_len = 0;
    const char *raw;
    if (resolve_environment(req, env, sizeof env) != 0 || !(raw = json_body_raw(req, &raw_len)))
        return;
    struct flags_env *e = environment_snapshot(req, env);
    if (!e)
        return;
    const struct flags_flag *f = flags_env_find(e, key);
    const struct flags_bulk_entry *hit = f ? flags_bulk_cache_find(e, raw, raw_len) : NULL;
    if (hit) { /* this body was answered in bulk: the flag's answer is a slice of that */
        size_t k = (size_t)(f - e->flags);
        struct flags_flag *cf = &e->flags[k]; /* counters only */
        if (hit->variants[k] == UINT16_MAX)
            atomic_fetch_add_explicit(&cf->errors, 1, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&cf->counts[hit->variants[k]], 1, memory_order_relaxed);
        reply_from_snapshot(req, hit->variants[k] == UINT16_MAX ? 400 : 200, e,
                            hit->body + hit->spans[2 * k], hit->spans[2 * k + 1]);
        return;
    }
    json_t *body = json_body_parse(req, raw, raw_len);
    const json_t *ctx;
    if (!body || request_context(req, body, key, &ctx) != 0) {
        json_decref(body);
        flags_env_release(e);
        return;
    }
    if (!f) {
        json_decref(body);
        flags_env_release(e);
        reply_failure(req, 404, key, FLAGS_E_FLAG_NOT_FOUND, "no such flag in this environment");
        return;
    }
    struct flags_result r;
    flags_evaluate(e, f, ctx, &r);
    struct buf b;
    buf_init(&b, BULK_MAX);
    int rc = flags_render_result(&b, f, &r);
    json_decref(body);
    flags_env_release(e);
    if (rc != 0) {
        buf_free(&b);
        http_reply_problem(req, QDB_E_INTERNAL, "out of memory");
        return;
    }
    size_t len = b.len;
    http_reply_data_take(req, r.variant < 0 ? 400 : 200, "application/json", buf_take(&b), len);
}

static int none_match(struct http_request *req, const char *etag)
{
    const char *inm = http_header(req, "If-None-Match");
    return inm && (strstr(inm, etag) || strcmp(inm, "*") == 0);
}

static void reply_tagged(struct http_request *req, struct buf *b)
{
    char etag[24];
    snprintf(etag, sizeof etag, "\"%016llx\"",
             (unsigned long long)flags_hash64(b->data, b->len));
    http_reply_header(req, "ETag", etag);
    if (none_match(req, etag)) {
        buf_free(b);
        http_reply_empty(req, 304);
        return;
    }
    size_t len = b->len;
    http_reply_data_take(req, 200, "application/json", buf_take(b), len);
}

void flags_ofrep_evaluate_bulk(struct http_request *req)
{
    char env[40];
    size_t raw_len = 0;
    const char *raw;
    if (resolve_environment(req, env, sizeof env) != 0 || !(raw = json_body_raw(req, &raw_len)))
        return;
    struct flags_env *e = environment_snapshot(req, env);
    if (!e)
        return;
    struct flags_bulk_entry *hit =
        (struct flags_bulk_entry *)flags_bulk_cache_find(e, raw, raw_len);
    struct flags_bulk_entry *own = NULL;
    if (!hit) {
        json_t *body = json_body_parse(req, raw, raw_len);
        const json_t *ctx;
        if (!body || request_context(req, body, NULL, &ctx) != 0) {
            json_decref(body);
            flags_env_release(e);
            return;
        }
        own = flags_bulk_entry_new(e, ctx);
        json_decref(body);
        if (!own) {
            flags_env_release(e);
            http_reply_problem(req, QDB_E_INTERNAL, "the answer is too large");
            return;
        }
        hit = flags_bulk_cache_publish(e, raw, raw_len, &own);
    }
    if (hit) {
        flags_bulk_entry_free(own); /* an equal answer was published first */
        atomic_fetch_add_explicit(&hit->hits, 1, memory_order_relaxed);
        http_reply_header(req, "ETag", hit->etag);
        if (none_match(req, hit->etag)) {
            flags_env_release(e);
            http_reply_empty(req, 304);
        } else {
            reply_from_snapshot(req, 200, e, hit->body, hit->body_len);
        }
        return;
    }
    /* the cache is full: this answer is this request's alone */
    flags_bulk_entry_count(e, own, 1);
    flags_env_release(e);
    http_reply_header(req, "ETag", own->etag);
    if (none_match(req, own->etag)) {
        http_reply_empty(req, 304);
    } else {
        size_t len = own->body_len;
        http_reply_data_take(req, 200, "application/json", own->body, len);
        own->body = NULL;
    }
    flags_bulk_entry_free(own);
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
