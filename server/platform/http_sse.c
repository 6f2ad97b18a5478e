#include "platform/http_sse.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "platform/buf.h"
#include "platform/log.h"

#define SSE_KEEPALIVE_S 15.0

struct sse_stream {
    struct http_sse_hub *hub;
    struct MHD_Connection *conn;
    struct http_server *srv;
    struct buf pending; /* bytes not yet handed to libmicrohttpd */
    size_t off;
    int suspended; /* we suspended the connection and have not resumed it */
    int overflow;  /* the client fell too far behind: end the stream */
    double last_write;
    struct sse_stream *next, **pprev;
};

struct http_sse_hub {
    pthread_mutex_t mu; /* guards the list and every stream's fields */
    struct sse_stream *head;
    size_t count;
    size_t max_backlog;
};

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct http_sse_hub *http_sse_hub_new(size_t max_backlog)
{
    struct http_sse_hub *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    pthread_mutex_init(&h->mu, NULL);
    h->max_backlog = max_backlog;
    return h;
}

void http_sse_hub_free(struct http_sse_hub *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&h->mu);
    size_t left = h->count;
    /* Streams still listed belong to connections libmicrohttpd has not released (it has
     * stopped, so they are gone): detach them so their free callbacks, if any, are no-ops. */
    for (struct sse_stream *s = h->head; s; s = s->next)
        s->hub = NULL;
    h->head = NULL;
    pthread_mutex_unlock(&h->mu);
    if (left) {
        log_warn("%zu event streams were still open when the hub was freed", left);
        return; /* leak the hub rather than free a mutex a late callback may take */
    }
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* Resume a stream we suspended (caller holds the hub lock). */
static void wake(struct sse_stream *s)
{
    if (s->suspended) {
        s->suspended = 0;
        MHD_resume_connection(s->conn);
    }
}

static ssize_t reader(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    struct sse_stream *s = cls;
    struct http_sse_hub *h = s->hub;
    if (!h)
        return MHD_CONTENT_READER_END_OF_STREAM;
    pthread_mutex_lock(&h->mu);
    ssize_t n;
    if (s->pending.len > s->off) {
        size_t take = s->pending.len - s->off;
        if (take > max)
            take = max;
        memcpy(out, s->pending.data + s->off, take);
        s->off += take;
        if (s->off == s->pending.len) {
            s->pending.len = 0;
            s->off = 0;
        }
        s->last_write = mono();
        n = (ssize_t)take;
    } else if (s->overflow || http_server_stopping(s->srv)) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* Nothing to send: park the connection until a broadcast or a tick resumes it.
         * Returning 0 after suspending is libmicrohttpd's documented way to avoid a busy
         * loop. */
        s->suspended = 1;
        MHD_suspend_connection(s->conn);
        n = 0;
    }
    pthread_mutex_unlock(&h->mu);
    return n;
}

static void stream_free(void *cls)
{
    struct sse_stream *s = cls;
    struct http_sse_hub *h = s->hub;
    if (h) {
        pthread_mutex_lock(&h->mu);
        if (s->pprev) {
            *s->pprev = s->next;
            if (s->next)
                s->next->pprev = s->pprev;
            h->count--;
        }
        pthread_mutex_unlock(&h->mu);
    }
    buf_free(&s->pending);
    free(s);
}

void http_sse_start(struct http_request *req, struct http_sse_hub *h)
{
    struct sse_stream *s = calloc(1, sizeof *s);
    if (!s) {
        http_reply_problem(req, QDB_E_INTERNAL, "out of memory");
        return;
    }
    s->hub = h;
    s->conn = http_connection(req);
    s->srv = http_server_of(req);
    buf_init(&s->pending, h->max_backlog);
    s->last_write = mono();
    /* tell the client how soon to reconnect, and show the stream is open */
    buf_puts(&s->pending, "retry: 2000\n: connected\n\n");
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, reader, s, stream_free);
    if (!resp) {
        buf_free(&s->pending);
        free(s);
        http_reply_problem(req, QDB_E_INTERNAL, "cannot create the event stream");
        return;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    pthread_mutex_lock(&h->mu);
    s->next = h->head;
    if (h->head)
        h->head->pprev = &s->next;
    s->pprev = &h->head;
    h->head = s;
    h->count++;
    pthread_mutex_unlock(&h->mu);
    http_reply_response(req, 200, resp);
}

static void append(struct http_sse_hub *h, struct sse_stream *s, const char *text, size_t len)
{
    (void)h;
    if (s->overflow)
        return;
    if (s->off && s->pending.len + len > s->pending.max) {
        /* compact before giving up */
        memmove(s->pending.data, s->pending.data + s->off, s->pending.len - s->off);
        s->pending.len -= s->off;
        s->off = 0;
    }
    if (buf_append(&s->pending, text, len) != 0)
        s->overflow = 1;
    wake(s);
}

void http_sse_broadcast(struct http_sse_hub *h, const char *event, const char *id, const char *data)
{
    if (!h)
        return;
    struct buf msg;
    buf_init(&msg, 0);
    if (event)
        buf_printf(&msg, "event: %s\n", event);
    if (id)
        buf_printf(&msg, "id: %s\n", id);
    buf_printf(&msg, "data: %s\n\n", data ? data : "");
    pthread_mutex_lock(&h->mu);
    for (struct sse_stream *s = h->head; s; s = s->next)
        append(h, s, msg.data, msg.len);
    pthread_mutex_unlock(&h->mu);
    buf_free(&msg);
}

void http_sse_tick(struct http_sse_hub *h)
{
    if (!h)
        return;
    double now = mono();
    pthread_mutex_lock(&h->mu);
    for (struct sse_stream *s = h->head; s; s = s->next) {
        if (http_server_stopping(s->srv))
            wake(s);
        else if (now - s->last_write >= SSE_KEEPALIVE_S && s->pending.len == s->off) {
            s->last_write = now;
            append(h, s, ": keep-alive\n\n", 14);
        }
    }
    pthread_mutex_unlock(&h->mu);
}

size_t http_sse_count(struct http_sse_hub *h)
{
    pthread_mutex_lock(&h->mu);
    size_t n = h->count;
    pthread_mutex_unlock(&h->mu);
    return n;
}
