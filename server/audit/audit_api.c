/* HTTP handlers of the audit trail: GET /api/v1/audit (filtered, newest first, cursor
 * pages), GET /api/v1/audit/verify (recompute the hash chain after the newest checkpoint,
 * bounded), GET /api/v1/audit/export (JSON Lines from a producer thread of its own). The
 * full verification as a job (POST /api/v1/audit/verify) is in server/wiring/. */
#include <errno.h>
#include <microhttpd.h>
#include <openssl/evp.h>
#include <pthread.h>
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
#include "platform/deadline.h"

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
    audit_catch_up(conn);
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
    int64_t from = 0, to = 0; /* 0: not given */
    const struct qspec_param q[] = {
        {"from_seq", QSPEC_INT, 0, 1, INT64_MAX, NULL, &from, NULL},
        {"to_seq", QSPEC_INT, 0, 1, INT64_MAX, NULL, &to, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0)
        return;
    if (to && from && to < from) {
        http_reply_invalid(req, "to_seq", "to_seq must not be below from_seq");
        return;
    }
    /* An explicit range starts at 1 unless from_seq says otherwise (as before checkpoints
     * existed); no range at all starts after the newest valid checkpoint. */
    if (to && !from)
        from = 1;
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
    struct audit_verify_opts o = {
        .from_seq = from,
        .to_seq = to,
        .max_events = audit_verify_max_events(),
        .checkpoint_every = audit_checkpoint_every(),
    };
    struct audit_verify_result r;
    int rc = audit_verify(conn, &o, &r);
    if (rc == AUDIT_VERIFY_TOO_LONG) {
        http_reply_problem_ext(
            req, QDB_E_VALIDATION,
            json_pack("{s:s,s:I}", "field", to ? "to_seq" : "from_seq", "max_events",
                      (json_int_t)o.max_events),
            "the range %lld..%lld holds %lld events; a request verifies at most %lld "
            "(QDB_AUDIT_VERIFY_MAX_EVENTS): POST /api/v1/audit/verify starts a verification "
            "job for any range",
            (long long)r.from_seq, (long long)r.to_seq, (long long)(r.to_seq - r.from_seq + 1),
            (long long)o.max_events);
        goto out;
    }
    if (rc < 0) {
        http_reply_db_error(req, rc);
        goto out;
    }
    http_reply_json(req, 200, audit_verify_result_json(&r));
out:
    atomic_fetch_sub(&verifies_running, 1);
}

/* ---- GET /api/v1/audit/export ----
 *
 * One producer thread per export reads pages on the stream's own connection and appends
 * JSON Lines to a buffer of about EXPORT_BUFFER bytes; the content reader (on an HTTP
 * thread) only copies out of it. When the buffer is empty the reader suspends the
 * connection and the producer resumes it when it appends; when the buffer is full the
 * producer waits (back-pressure): a slow client slows its own producer, never an HTTP
 * thread. Whoever of the response (export_free, when libmicrohttpd is done with it) and
 * the producer ends last frees the stream; the response's side joins the thread when it
 * ended first, else the thread detaches itself. */

#define EXPORT_BUFFER (64u * 1024u) /* the producer waits while more than this is unsent */
#define EXPORT_WAIT_MS 200          /* how often a waiting producer looks for shutdown */

/* Producer threads alive, for audit_export_drain. */
static pthread_mutex_t producers_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t producers_cv = PTHREAD_COND_INITIALIZER;
static int producers;

struct export_stream {
    pthread_mutex_t mu;         /* guards everything below but conn, f, strings, after/max_seq */
    pthread_cond_t room;        /* signalled when the reader took bytes, or the response ended */
    struct http_request *req;   /* valid while alive */
    struct http_server *srv;    /* valid while alive */
    struct MHD_Connection *mhd; /* valid while alive */
    struct db_conn *conn;       /* its own, used by the producer only */
    struct audit_filter f;
    char *strings[7]; /* owned copies behind f */
    int64_t after_seq, max_seq;
    struct buf pending; /* bytes produced, not yet handed to libmicrohttpd */
    size_t off;
    int alive;     /* the response exists: export_free has not run */
    int running;   /* the producer thread has not finished */
    int started;   /* a producer thread was created (joinable or detached) */
    int done;      /* the producer appended the last line */
    int failed;    /* the producer stopped early (error, shutdown): cut the stream */
    int suspended; /* the reader suspended the connection; the producer resumes it */
    pthread_t thread;
};

static void stream_destroy(struct export_stream *s)
{
    db_conn_close(s->conn);
    for (size_t i = 0; i < sizeof s->strings / sizeof s->strings[0]; i++)
        free(s->strings[i]);
    buf_free(&s->pending);
    pthread_cond_destroy(&s->room);
    pthread_mutex_destroy(&s->mu);
    free(s);
    atomic_fetch_sub(&exports_running, 1);
}

/* Resume the connection if the reader parked it (caller holds s->mu). */
static void wake_reader(struct export_stream *s)
{
    if (s->suspended && s->alive) {
        s->suspended = 0;
        MHD_resume_connection(s->mhd);
    }
}

/* Whether the producer should stop: the response is gone or the server is stopping
 * (caller holds s->mu; srv is only looked at while the response is alive). */
static int producer_should_stop(const struct export_stream *s)
{
    return !s->alive || http_server_stopping(s->srv);
}

/* Append one line, waiting while the buffer is full. Returns 0, or -1 when the producer
 * must stop. */
static int produce_line(struct export_stream *s, const char *line)
{
    pthread_mutex_lock(&s->mu);
    while (!producer_should_stop(s) && s->pending.len - s->off > EXPORT_BUFFER) {
        struct timespec until = deadline_after(CLOCK_REALTIME, EXPORT_WAIT_MS / 1000.0);
        pthread_cond_timedwait(&s->room, &s->mu, &until);
    }
    int rc = -1;
    if (!producer_should_stop(s)) {
        if (s->off && s->off == s->pending.len)
            s->pending.len = s->off = 0;
        rc = buf_puts(&s->pending, line) == 0 && buf_append(&s->pending, "\n", 1) == 0 ? 0 : -1;
        wake_reader(s);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* One page into the buffer. Returns the rows read (< EXPORT_PAGE: the last page), or -1. */
static int produce_page(struct export_stream *s)
{
    PGresult *res = NULL;
    int rc = audit_store_export_page(s->conn, &s->f, s->after_seq, s->max_seq, EXPORT_PAGE, &res);
    if (rc < 0) {
        log_event(LOG_WARN, "audit export stopped",
                  json_pack("{s:s,s:I}", "reason", db_last_error(s->conn), "after_seq",
                            (json_int_t)s->after_seq));
        return -1;
    }
    int rows = rc;
    for (int i = 0; i < rows && rc >= 0; i++) {
        json_t *o = audit_row_json(res, i);
        char *line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(o);
        if (!line || produce_line(s, line) != 0)
            rc = -1;
        free(line);
        s->after_seq = db_get_int64(res, i, AUDIT_C_SEQ);
    }
    PQclear(res);
    return rc < 0 ? -1 : rows;
}

static void *export_main(void *cls)
{
    struct export_stream *s = cls;
    int rows, stop;
    do {
        pthread_mutex_lock(&s->mu);
        stop = producer_should_stop(s);
        pthread_mutex_unlock(&s->mu);
        rows = stop ? -1 : produce_page(s);
    } while (rows == EXPORT_PAGE);
    db_conn_close(s->conn);
    s->conn = NULL;
    pthread_mutex_lock(&s->mu);
    if (rows < 0)
        s->failed = 1;
    else
        s->done = 1;
    wake_reader(s);
    s->running = 0;
    int orphan = !s->alive;
    pthread_mutex_unlock(&s->mu);
    if (orphan) {
        pthread_detach(pthread_self());
        stream_destroy(s);
    }
    pthread_mutex_lock(&producers_mu);
    producers--;
    pthread_cond_broadcast(&producers_cv);
    pthread_mutex_unlock(&producers_mu);
    return NULL;
}

/* The response's free callback: libmicrohttpd is done with the stream (sent, client gone,
 * or server stopped). */
static void export_free(void *cls)
{
    struct export_stream *s = cls;
    pthread_mutex_lock(&s->mu);
    s->alive = 0;
    s->suspended = 0;
    pthread_cond_signal(&s->room);
    int producer_frees = s->running;
    pthread_mutex_unlock(&s->mu);
    if (producer_frees)
        return;
    if (s->started)
        pthread_join(s->thread, NULL); /* it has finished: returns at once */
    stream_destroy(s);
}

static ssize_t export_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    struct export_stream *s = cls;
    ssize_t n;
    pthread_mutex_lock(&s->mu);
    if (s->failed || http_server_stopping(s->srv)) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (s->pending.len > s->off) {
        size_t take = s->pending.len - s->off;
        if (take > max)
            take = max;
        memcpy(out, s->pending.data + s->off, take);
        s->off += take;
        if (s->off == s->pending.len) {
            s->pending.len = s->off = 0;
        } else if (s->off >= EXPORT_BUFFER) {
            memmove(s->pending.data, s->pending.data + s->off, s->pending.len - s->off);
            s->pending.len -= s->off;
            s->off = 0;
        }
        pthread_cond_signal(&s->room);
        n = (ssize_t)take;
    } else if (s->done) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* Nothing yet: park the connection until the producer appends (returning 0 after
         * suspending is libmicrohttpd's way to avoid a busy loop). */
        s->suspended = 1;
        MHD_suspend_connection(s->mhd);
        n = 0;
    }
    pthread_mutex_unlock(&s->mu);
    if (n > 0)
        http_count_bytes(s->req, (size_t)n);
    return n;
}

int audit_export_drain(int timeout_ms)
{
    struct timespec until = deadline_after(CLOCK_REALTIME, timeout_ms / 1000.0);
    pthread_mutex_lock(&producers_mu);
    while (producers > 0 &&
           pthread_cond_timedwait(&producers_cv, &producers_mu, &until) != ETIMEDOUT)
        ;
    int left = producers;
    pthread_mutex_unlock(&producers_mu);
    return left;
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
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->room, NULL);
    s->req = req;
    s->srv = http_server_of(req);
    s->mhd = http_connection(req);
    buf_init(&s->pending, 0); /* bounded by the producer: EXPORT_BUFFER + one line */
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
    /* Connected here, not in the producer, so that an unreachable state store is still a
     * 503 problem rather than a 200 cut short. */
    const struct db_settings *settings = audit_db_settings();
    s->conn = settings ? db_conn_open(settings) : NULL;
    if (!s->conn) {
        http_reply_db_error(req, DB_RETRY);
        goto fail;
    }
    /* The export is the trail up to the head as it is now: later events are not mixed in
     * half-way, and every row up to the head is committed and immutable. */
    char head_hash[AUDIT_HASH_HEX + 1];
    audit_catch_up(s->conn);
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
    s->alive = 1;
    s->running = 1;
    pthread_mutex_lock(&producers_mu);
    producers++;
    pthread_mutex_unlock(&producers_mu);
    if (pthread_create(&s->thread, NULL, export_main, s) != 0) {
        pthread_mutex_lock(&producers_mu);
        producers--;
        pthread_mutex_unlock(&producers_mu);
        s->running = 0;
        s->failed = 1; /* the response ends at once with an error; export_free frees */
        log_error("audit export: cannot start its thread");
    } else {
        s->started = 1;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/jsonl");
    MHD_add_response_header(resp, "Content-Disposition",
                            "attachment; filename=\"audit-export.jsonl\"");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    http_reply_response(req, 200, resp); /* s is the response's now */
    return;
fail:
    stream_destroy(s);
}
