/* HTTP handlers of the audit trail: GET /api/v1/audit (filtered, newest first, cursor
 * pages), GET /api/v1/audit/verify (recompute the hash chain), GET /api/v1/audit/export
 * (JSON Lines, streamed page by page from a connection of its own). */
#include <errno.h>
#include <microhttpd.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "audit/audit_internal.h"
#include "platform/jsonspec.h"
#include "platform/log.h"
#include "platform/queryspec.h"
#include "platform/rfc3339.h"

#define LIST_DEFAULT 100
#define LIST_MAX 500
#define EXPORT_PAGE 200     /* rows fetched per round trip while streaming */
#define EXPORT_BLOCK 32768  /* bytes libmicrohttpd asks for at a time */
#define EXPORT_CONCURRENT 4 /* streams per replica; each holds a connection */
#define VERIFY_CONCURRENT 2 /* verifications per replica; each holds a pooled connection */

static atomic_int exports_running, verifies_running;

/* ---- query parameters ---- */

/* The filters shared by list and export, with room for the canonical text of the times
 * (RFC 3339 UTC, what the store casts). */
struct filter_query {
    struct audit_filter f;
    int64_t since_us, until_us;
    int has_since, has_until;
    char since[RFC3339_TEXT_MAX], until[RFC3339_TEXT_MAX];
};

enum { FILTER_NPARAMS = 7 };

/* The spec of the filters into q[0..FILTER_NPARAMS-1], writing into fq. */
static void filter_params(struct filter_query *fq, struct qspec_param *q)
{
    const struct qspec_param p[FILTER_NPARAMS] = {
        {"actor", QSPEC_STRING, 0, 1, 256, NULL, &fq->f.actor, NULL},
        {"resource_type", QSPEC_STRING, 0, 1, 256, NULL, &fq->f.resource_type, NULL},
        {"resource_id", QSPEC_STRING, 0, 1, 256, NULL, &fq->f.resource_id, NULL},
        {"action", QSPEC_STRING, 0, 1, 256, NULL, &fq->f.action, NULL},
        {"environment", QSPEC_STRING, 0, 1, 256, NULL, &fq->f.environment, NULL},
        {"since", QSPEC_TIME, 0, 0, 0, NULL, &fq->since_us, &fq->has_since},
        {"until", QSPEC_TIME, 0, 0, 0, NULL, &fq->until_us, &fq->has_until},
    };
    memcpy(q, p, sizeof p);
}

/* Point the filter's times at their canonical text, once qspec_parse has filled fq. */
static void filter_finish(struct filter_query *fq)
{
    if (fq->has_since && rfc3339_format_us(fq->since_us, fq->since, sizeof fq->since) > 0)
        fq->f.since = fq->since;
    if (fq->has_until && rfc3339_format_us(fq->until_us, fq->until, sizeof fq->until) > 0)
        fq->f.until = fq->until;
}

/* ---- cursors: base64url("audit:<seq>"), opaque to clients ---- */

static void cursor_encode(int64_t seq, char *out, size_t outlen)
{
    char plain[40];
    int n = snprintf(plain, sizeof plain, "audit:%lld", (long long)seq);
    unsigned char b64[64];
    int len = EVP_EncodeBlock(b64, (const unsigned char *)plain, n);
    size_t j = 0;
    for (int i = 0; i < len && j + 1 < outlen; i++) {
        char c = (char)b64[i];
        if (c == '=')
            break;
        out[j++] = c == '+' ? '-' : c == '/' ? '_' : c;
    }
    out[j] = '\0';
}

/* Returns the seq, or 0 when the cursor is not one of ours. */
static int64_t cursor_decode(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 40)
        return 0;
    char in[48];
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return 0;
        in[j++] = c;
    }
    while (j % 4)
        in[j++] = '=';
    unsigned char plain[48];
    int len = EVP_DecodeBlock(plain, (const unsigned char *)in, (int)j);
    if (len <= 6)
        return 0;
    while (len > 0 && plain[len - 1] == '\0')
        len--; /* EVP_DecodeBlock counts the padding */
    plain[len] = '\0';
    if (strncmp((const char *)plain, "audit:", 6) != 0)
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll((const char *)plain + 6, &end, 10);
    if (*end || errno || v < 1)
        return 0;
    return v;
}

/* ---- GET /api/v1/audit ---- */

void audit_api_list(struct http_request *req)
{
    struct filter_query fq = {0};
    const struct audit_filter *const fp = &fq.f;
    int64_t limit = LIST_DEFAULT, before = 0;
    const char *cursor = NULL;
    PGresult *res = NULL;
    json_t *items = NULL;
    struct qspec_param q[FILTER_NPARAMS + 3] = {
        [FILTER_NPARAMS] = {"limit", QSPEC_INT, 0, 1, LIST_MAX, NULL, &limit, NULL},
        [FILTER_NPARAMS + 1] = {"cursor", QSPEC_STRING, 0, 1, 64, NULL, &cursor, NULL},
        [FILTER_NPARAMS + 2] = QSPEC_END,
    };
    filter_params(&fq, q);
    if (qspec_parse(req, q) != 0)
        return;
    filter_finish(&fq);
    if (cursor && (before = cursor_decode(cursor)) == 0) {
        http_reply_invalid(req, "cursor", "cursor is not a cursor this server handed out");
        return;
    }
    struct db_conn *conn = http_db_or_reply(req);
    if (!conn)
        return;
    int rc = audit_store_list(conn, fp, before, (int)limit + 1, &res);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        goto out;
    }
    items = json_array();
    int shown = rc > limit ? (int)limit : rc;
    for (int i = 0; i < shown; i++) {
        json_t *o = audit_row_json(res, i);
        if (!o) {
            http_reply_problem(req, QDB_E_INTERNAL, "a stored audit event is unreadable");
            goto out;
        }
        json_array_append_new(items, o);
    }
    json_t *next = json_null();
    if (rc > limit) {
        char c[64];
        cursor_encode(db_get_int64(res, shown - 1, AUDIT_C_SEQ), c, sizeof c);
        json_decref(next);
        next = json_string(c);
    }
    http_reply_json(req, 200, json_pack("{s:O,s:o}", "items", items, "next_cursor", next));
out:
    json_decref(items);
    PQclear(res);
}

/* ---- GET /api/v1/audit/verify ---- */

static int take_slot(atomic_int *running, int max)
{
    if (atomic_fetch_add(running, 1) >= max) {
        atomic_fetch_sub(running, 1);
        return -1;
    }
    return 0;
}

void audit_api_verify(struct http_request *req)
{
    int64_t from = 1, to = 0;
    const struct qspec_param q[] = {
        {"from_seq", QSPEC_INT, 0, 1, INT64_MAX, NULL, &from, NULL},
        {"to_seq", QSPEC_INT, 0, 1, INT64_MAX, NULL, &to, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0)
        return;
    if (to && to < from) {
        http_reply_invalid(req, "to_seq", "to_seq must not be below from_seq");
        return;
    }
    if (take_slot(&verifies_running, VERIFY_CONCURRENT) != 0) {
        http_reply_header(req, "Retry-After", "5");
        http_reply_problem(req, QDB_E_AUDIT_BUSY,
                           "%d verifications are running on this replica; try again shortly",
                           VERIFY_CONCURRENT);
        return;
    }
    struct db_conn *conn = http_db_or_reply(req);
    if (!conn)
        goto out;
    struct audit_verify_result r;
    int rc = audit_verify(conn, from, to, NULL, NULL, &r);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        goto out;
    }
    json_t *body =
        json_pack("{s:b,s:I,s:o}", "ok", r.ok, "checked", (json_int_t)r.checked, "first_broken_seq",
                  r.ok ? json_null() : json_integer(r.first_broken_seq));
    if (!r.ok)
        json_object_set_new(body, "reason", json_string(r.reason));
    http_reply_json(req, 200, body);
out:
    atomic_fetch_sub(&verifies_running, 1);
}

/* ---- GET /api/v1/audit/export ---- */

struct export_stream {
    struct http_request *req; /* valid until the response completes */
    struct http_server *srv;
    struct db_conn *conn; /* its own, closed with the stream */
    struct audit_filter f;
    char *strings[7]; /* owned copies behind f */
    int64_t after_seq, max_seq;
    struct buf pending;
    size_t off;
    int done;
};

static void export_free(void *cls)
{
    struct export_stream *s = cls;
    if (!s)
        return;
    db_conn_close(s->conn);
    for (size_t i = 0; i < sizeof s->strings / sizeof s->strings[0]; i++)
        free(s->strings[i]);
    buf_free(&s->pending);
    free(s);
    atomic_fetch_sub(&exports_running, 1);
}

/* Fetch the next page into s->pending. Returns 0 or -1. */
static int export_fill(struct export_stream *s)
{
    PGresult *res = NULL;
    int rc = audit_store_export_page(s->conn, &s->f, s->after_seq, s->max_seq, EXPORT_PAGE, &res);
    if (rc < 0) {
        log_event(LOG_WARN, "audit export stopped",
                  json_pack("{s:s,s:I}", "reason", db_last_error(s->conn), "after_seq",
                            (json_int_t)s->after_seq));
        return -1;
    }
    s->pending.len = 0;
    s->off = 0;
    int ok = 0;
    for (int i = 0; i < rc && ok == 0; i++) {
        json_t *o = audit_row_json(res, i);
        char *line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(o);
        if (!line || buf_puts(&s->pending, line) != 0 || buf_append(&s->pending, "\n", 1) != 0)
            ok = -1;
        free(line);
        s->after_seq = db_get_int64(res, i, AUDIT_C_SEQ);
    }
    if (rc < EXPORT_PAGE)
        s->done = 1;
    PQclear(res);
    return ok;
}

static ssize_t export_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    struct export_stream *s = cls;
    while (s->off >= s->pending.len) {
        if (s->done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (http_server_stopping(s->srv) || export_fill(s) != 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = s->pending.len - s->off;
    if (n > max)
        n = max;
    memcpy(out, s->pending.data + s->off, n);
    s->off += n;
    http_count_bytes(s->req, n);
    return (ssize_t)n;
}

void audit_api_export(struct http_request *req)
{
    struct filter_query fq = {0};
    struct audit_filter f;
    struct export_stream *s = NULL;
    struct qspec_param q[FILTER_NPARAMS + 1] = {[FILTER_NPARAMS] = QSPEC_END};
    filter_params(&fq, q);
    if (qspec_parse(req, q) != 0)
        return;
    filter_finish(&fq);
    f = fq.f;
    if (take_slot(&exports_running, EXPORT_CONCURRENT) != 0) {
        http_reply_header(req, "Retry-After", "10");
        http_reply_problem(req, QDB_E_AUDIT_BUSY,
                           "%d exports are running on this replica; try again shortly",
                           EXPORT_CONCURRENT);
        return;
    }
    s = calloc(1, sizeof *s);
    if (!s) {
        atomic_fetch_sub(&exports_running, 1);
        http_reply_problem(req, QDB_E_INTERNAL, "out of memory");
        return;
    }
    s->req = req;
    s->srv = http_server_of(req);
    buf_init(&s->pending, 0);
    const char *src[7] = {f.actor,       f.resource_type, f.resource_id, f.action,
                          f.environment, f.since,         f.until};
    const char **dst[7] = {&s->f.actor,       &s->f.resource_type, &s->f.resource_id, &s->f.action,
                           &s->f.environment, &s->f.since,         &s->f.until};
    for (int i = 0; i < 7; i++) {
        if (!src[i])
            continue;
        s->strings[i] = strdup(src[i]);
        if (!s->strings[i]) {
            http_reply_problem(req, QDB_E_INTERNAL, "out of memory");
            goto fail;
        }
        *dst[i] = s->strings[i];
    }
    const struct db_settings *settings = audit_db_settings();
    s->conn = settings ? db_conn_open(settings) : NULL;
    if (!s->conn) {
        http_reply_db_error(req, DB_RETRY);
        goto fail;
    }
    /* The export is the trail up to the head as it is now: later events are not mixed in
     * half-way, and every row up to the head is committed and immutable. */
    char head_hash[AUDIT_HASH_HEX + 1];
    int rc = audit_store_head(s->conn, &s->max_seq, head_hash);
    if (rc <= 0) {
        http_reply_db_error(req, rc < 0 ? rc : DB_HARD);
        goto fail;
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, EXPORT_BLOCK,
                                                                  export_read, s, export_free);
    if (!resp) {
        http_reply_problem(req, QDB_E_INTERNAL, "cannot create the response");
        goto fail;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/jsonl");
    MHD_add_response_header(resp, "Content-Disposition",
                            "attachment; filename=\"audit-export.jsonl\"");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    http_reply_response(req, 200, resp); /* s is the response's now */
    return;
fail:
    export_free(s);
}
