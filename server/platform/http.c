#include "platform/http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "platform/db.h"
#include "platform/http_proxy.h"
#include "platform/http_tls.h"
#include "platform/log.h"
#include "platform/metrics.h"
#include "platform/utf8.h"

/* libmicrohttpd's memory per connection: the request line and headers must fit (a 16 KiB
 * bearer token, AUTH_TOKEN_MAX, with room to spare). The pool is cleared for every request,
 * so a larger one costs a memset per request (8% of /healthz's CPU at 64 KiB). */
#define HTTP_CONNECTION_MEMORY (32u * 1024u)

/* Forward: static files (http_static.c). */
void http_static_serve(struct http_request *req, const char *web_dir, const char *raw_path);

/* Path parameters per route: checked against every pattern at start-up (a route with more
 * would never match). */
#define MAX_PARAMS 8
/* A chunked body past the limit is read and dropped up to this much, so the client gets
 * its 413; beyond it the connection is cut. */
#define BODY_DISCARD_MAX (8u * HTTP_BODY_MAX)
/* An early reply (413, or a 401/403/415 decided from the headers) to a client that is
 * sending a body without waiting for "100 Continue" is held back while the rest of the body
 * is read and dropped, up to this much: closing with unread data in the socket makes the
 * kernel send a reset, and a client that writes its whole body before reading (Python's
 * http.client, requests) would see that reset instead of the answer. nginx's lingering
 * close does the same. A declared body past this is answered at once and the connection
 * closed. */
#define BODY_DRAIN_MAX BODY_DISCARD_MAX

/* The handler pool: threads that run what may block (the state store, the issuer), so
 * that the event loops only ever parse, route and write. A request is handed over by
 * suspending its connection and queueing it; the pool thread resumes the connection when
 * the reply is ready, and the event loop queues it. The queue needs no bound of its own:
 * each connection has at most one request in it, and connections are bounded. */
struct handler_pool {
    pthread_mutex_t mu;
    pthread_cond_t wake;
    struct http_request *head, *tail;
    int stop;
    pthread_t *threads;
    unsigned nthreads;
};

struct http_server {
    struct MHD_Daemon *daemon;
    const struct http_route *routes;
    size_t nroutes;
    struct db_pool *pool;
    int db_wait_ms;
    char *web_dir;
    uint16_t port;
    atomic_int active;   /* requests between the request line and completion */
    atomic_int stopping; /* shutdown has begun */
    struct handler_pool handlers;
    struct http_tls *tls; /* HTTPS, or NULL for plain HTTP */
    /* Behind trusted proxies (QDB_TRUSTED_PROXIES; NULL: none, and libmicrohttpd's own
     * per-address connection limit applies): connections of direct clients are counted in
     * conn_counts, requests relayed by a proxy in req_counts under the client they stand
     * for, each up to per_ip. */
    struct http_proxies *proxies;
    struct http_addr_counts *conn_counts, *req_counts;
    unsigned per_ip;
};

enum phase {
    PHASE_NEW = 0, /* before the first call */
    PHASE_BODY,    /* headers seen; reading (or dropping) the body */
    PHASE_POOL,    /* suspended: a handler thread owns the request */
    PHASE_DONE,    /* the reply is queued */
};

struct reply_header {
    char *name, *value;
};

struct http_request {
    struct http_server *srv;
    struct MHD_Connection *conn;
    struct timespec start;
    char *raw_uri; /* as received, undecoded (owned) */
    const char *method;
    const char *path; /* decoded, borrowed from libmicrohttpd for the request's life */
    char request_id[129];
    char client_addr[INET6_ADDRSTRLEN]; /* behind a trusted proxy: the client it relays */
    int peer_trusted;                   /* the peer is a trusted proxy */
    int forward_counted;                /* holds one of req_counts for client_addr */
    enum phase phase;
    const struct http_route *route;
    size_t route_index;
    struct http_path_param params[MAX_PARAMS];
    int nparams;
    char param_store[1024];
    struct buf body;
    size_t discarded;
    int body_too_large;
    int has_body;          /* the request announced a body (Content-Length > 0 or chunked) */
    int auth_pending;      /* the hook could not answer without blocking: a handler thread will */
    int handled;           /* the handler ran (or a reply was decided): queue at the next call */
    int on_loop;           /* running on an event-loop thread, where nothing may block */
    int pool_runs_handler; /* the queued job runs the handler too, not only authentication */
    int first_call_again;  /* suspended in the first call: libmicrohttpd repeats that call */
    struct http_request *next_job;
    json_t *json;
    struct http_principal principal;
    int has_principal;
    struct db_conn *db;
    /* the reply */
    int replied;
    unsigned status;
    char *reply_data; /* owned until queued */
    size_t reply_len;
    char content_type[96];
    struct MHD_Response *reply_resp; /* owned until queued */
    struct reply_header *headers;    /* grown by doubling; every header is kept */
    int nheaders, cap_headers;
    int headers_lost; /* a header could not be kept: the reply is replaced by a 500 */
    size_t bytes_sent;
};

/* Set once before the server starts, read by every thread after: no lock needed. */
static http_authenticate_fn authenticator;
static void *authenticator_cls;
static http_authenticate_fn authenticator_try;
static void *authenticator_try_cls;

void http_set_authenticator(http_authenticate_fn fn, void *cls)
{
    authenticator = fn;
    authenticator_cls = cls;
}

void http_set_authenticator_try(http_authenticate_fn fn, void *cls)
{
    authenticator_try = fn;
    authenticator_try_cls = cls;
}

/* In enum http_perm order; the one list of role names. */
static const char *const perm_names[] = {"public", "viewer", "operator", "admin", NULL};

const char *http_perm_name(enum http_perm p)
{
    return (unsigned)p <= HTTP_ADMIN ? perm_names[p] : "unknown";
}

const char *const *http_role_names(void)
{
    return perm_names + HTTP_VIEWER;
}

/* ---- pure helpers ---- */

int http_request_id_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
        if (n >= 128)
            return 0;
    }
    return n > 0;
}

int http_match_pattern(const char *pattern, const char *path, struct http_path_param *params,
                       int max, char *store, size_t store_len)
{
    int n = 0;
    size_t used = 0;
    const char *p = pattern, *u = path;
    while (*p && *u) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            if (!close)
                return -1;
            const char *seg_end = strchr(u, '/');
            size_t vlen = seg_end ? (size_t)(seg_end - u) : strlen(u);
            if (vlen == 0 || n >= max || used + vlen + 1 > store_len)
                return -1;
            params[n].name = p + 1;
            params[n].name_len = (size_t)(close - p - 1);
            memcpy(store + used, u, vlen);
            store[used + vlen] = '\0';
            params[n].value = store + used;
            used += vlen + 1;
            n++;
            p = close + 1;
            u += vlen;
            continue;
        }
        if (*p != *u)
            return -1;
        p++;
        u++;
    }
    return (*p == '\0' && *u == '\0') ? n : -1;
}

json_t *http_problem_json(enum qdb_error code, const char *detail, const char *instance,
                          json_t *ext)
{
    const struct qdb_error_info *e = qdb_error_info(code);
    char type[128];
    snprintf(type, sizeof type, "urn:qdb:problem:%s", e->slug);
    /* The detail and the path may echo a client's bytes (or a multi-byte character cut by
     * a bound); JSON takes only UTF-8, so scrub them rather than lose the whole problem. */
    char *d = utf8_scrub_dup(detail ? detail : e->title);
    char *inst = utf8_scrub_dup(instance ? instance : "");
    json_t *o = json_pack("{s:s,s:s,s:i,s:s,s:s}", "type", type, "title", e->title, "status",
                          (int)e->status, "detail", d ? d : e->title, "instance", inst ? inst : "");
    free(d);
    free(inst);
    if (ext) {
        json_object_update_missing(o, ext);
        json_decref(ext);
    }
    return o;
}

/* ---- accessors ---- */

const char *http_method(const struct http_request *r)
{
    return r->method;
}
const char *http_path(const struct http_request *r)
{
    return r->path;
}
json_t *http_body(const struct http_request *r)
{
    return r->json;
}
const char *http_body_raw(const struct http_request *r, size_t *len)
{
    *len = r->body.len;
    return r->body.len ? r->body.data : NULL;
}
const struct http_route *http_route_of(const struct http_request *r)
{
    return r->route;
}
const char *http_request_id(const struct http_request *r)
{
    return r->request_id;
}
const char *http_client_addr(const struct http_request *r)
{
    return r->client_addr;
}
struct http_server *http_server_of(const struct http_request *r)
{
    return r->srv;
}
struct MHD_Connection *http_connection(const struct http_request *r)
{
    return r->conn;
}

const struct http_principal *http_principal(const struct http_request *r)
{
    return r->has_principal ? &r->principal : NULL;
}

void http_set_principal(struct http_request *r, const struct http_principal *p)
{
    if (r->has_principal)
        json_decref(r->principal.environments);
    r->principal = *p;
    r->has_principal = 1;
}

const char *http_param(const struct http_request *r, const char *name)
{
    size_t len = strlen(name);
    for (int i = 0; i < r->nparams; i++)
        if (r->params[i].name_len == len && memcmp(r->params[i].name, name, len) == 0)
            return r->params[i].value;
    return NULL;
}

const char *http_query(struct http_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_header(struct http_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

struct db_conn *http_db(struct http_request *r)
{
    if (r->on_loop) {
        /* An HTTP_INLINE route (or a non-blocking authenticator) asked for the state store
         * on an event loop, where waiting would stall every connection of that loop: a bug
         * in the route table, made loud rather than slow. */
        log_event(LOG_ERROR, "the state store was asked for on an event loop",
                  json_pack("{s:s}", "route", r->route ? r->route->pattern : ""));
        return NULL;
    }
    if (!r->db && r->srv->pool)
        r->db = db_acquire(r->srv->pool, r->srv->db_wait_ms);
    return r->db;
}

struct db_conn *http_db_or_reply(struct http_request *r)
{
    struct db_conn *c = http_db(r);
    if (!c)
        http_reply_db_error(r, DB_RETRY);
    return c;
}

/* ---- replies ---- */

static int begin_reply(struct http_request *r, unsigned status, const char *content_type)
{
    if (r->replied) {
        log_event(
            LOG_ERROR, "handler replied twice",
            json_pack("{s:s,s:s}", "path", r->path ? r->path : "", "request_id", r->request_id));
        return -1;
    }
    r->replied = 1;
    r->status = status;
    snprintf(r->content_type, sizeof r->content_type, "%s", content_type ? content_type : "");
    return 0;
}

void http_reply_data_take(struct http_request *r, unsigned status, const char *content_type,
                          char *data, size_t len)
{
    if (begin_reply(r, status, content_type) != 0) {
        free(data);
        return;
    }
    r->reply_data = data;
    r->reply_len = len;
}

void http_reply_data(struct http_request *r, unsigned status, const char *content_type,
                     const void *data, size_t len)
{
    char *copy = malloc(len ? len : 1);
    if (copy && len)
        memcpy(copy, data, len);
    http_reply_data_take(r, status, content_type, copy, copy ? len : 0);
}

void http_reply_json(struct http_request *r, unsigned status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(body);
    if (!text) {
        http_reply_problem(r, QDB_E_INTERNAL, "could not encode the reply");
        return;
    }
    http_reply_data_take(r, status, "application/json", text, strlen(text));
}

static void reply_problem_v(struct http_request *r, enum qdb_error code, json_t *ext,
                            const char *fmt, va_list ap)
{
    char detail[1024];
    vsnprintf(detail, sizeof detail, fmt, ap);
    json_t *p = http_problem_json(code, detail, r->path, ext);
    char *text = json_dumps(p, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(p);
    http_reply_data_take(r, qdb_error_info(code)->status, "application/problem+json", text,
                         text ? strlen(text) : 0);
}

void http_reply_problem(struct http_request *r, enum qdb_error code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_problem_v(r, code, NULL, fmt, ap);
    va_end(ap);
}

void http_reply_problem_ext(struct http_request *r, enum qdb_error code, json_t *ext,
                            const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_problem_v(r, code, ext, fmt, ap);
    va_end(ap);
}

void http_reply_db_error(struct http_request *r, int rc)
{
    if (rc == DB_RETRY)
        http_reply_problem(r, QDB_E_DB_UNAVAILABLE,
                           "the state store is unreachable or overloaded; try again shortly");
    else if (rc == DB_UNIQUE)
        http_reply_problem(r, QDB_E_CONFLICT, "a resource with the same identity already exists");
    else if (rc == DB_CONFLICT)
        http_reply_problem(r, QDB_E_CONFLICT,
                           "the change conflicts with other resources in the state store");
    else if (rc == DB_INVALID)
        http_reply_problem(r, QDB_E_BAD_REQUEST,
                           "a value in the request is out of range or malformed");
    else
        http_reply_problem(r, QDB_E_INTERNAL, "state store error (request %s)", r->request_id);
}

void http_reply_empty(struct http_request *r, unsigned status)
{
    http_reply_data_take(r, status, NULL, NULL, 0);
}

void http_reply_response(struct http_request *r, unsigned status, struct MHD_Response *resp)
{
    if (begin_reply(r, status, NULL) != 0) {
        MHD_destroy_response(resp);
        return;
    }
    r->reply_resp = resp;
}

void http_reply_header(struct http_request *r, const char *name, const char *value)
{
    if (r->nheaders == r->cap_headers) {
        int cap = r->cap_headers ? 2 * r->cap_headers : 8;
        struct reply_header *h = realloc(r->headers, (size_t)cap * sizeof *h);
        if (!h)
            goto oom;
        r->headers = h;
        r->cap_headers = cap;
    }
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        goto oom;
    }
    r->headers[r->nheaders].name = n;
    r->headers[r->nheaders].value = v;
    r->nheaders++;
    return;
oom:
    /* A reply without one of its headers could be wrong (a missing Allow, WWW-Authenticate,
     * Location): say so, and the reply becomes a 500 when it is queued. */
    log_event(LOG_ERROR, "out of memory adding a reply header", json_pack("{s:s}", "name", name));
    r->headers_lost = 1;
}

void http_count_bytes(struct http_request *r, size_t n)
{
    r->bytes_sent += n;
}

void http_reply_invalid(struct http_request *r, const char *field, const char *fmt, ...)
{
    /* The field may be a name the client sent (an unknown query parameter): jansson takes
     * only UTF-8, so a name that is not gets a placeholder rather than no member. */
    json_t *ext = json_pack("{s:s}", "field",
                            field && utf8_valid(field, strlen(field)) ? field : "(not UTF-8)");
    va_list ap;
    va_start(ap, fmt);
    reply_problem_v(r, QDB_E_VALIDATION, ext, fmt, ap);
    va_end(ap);
}

/* Hand the reply to libmicrohttpd. Returns what the access handler returns. */
static void drop_reply(struct http_request *r)
{
    free(r->reply_data);
    r->reply_data = NULL;
    if (r->reply_resp)
        MHD_destroy_response(r->reply_resp);
    r->reply_resp = NULL;
    for (int i = 0; i < r->nheaders; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    r->nheaders = 0;
    r->replied = 0;
}

static enum MHD_Result queue_reply(struct http_request *r)
{
    if (r->headers_lost) {
        drop_reply(r);
        r->headers_lost = 0;
        http_reply_problem(r, QDB_E_INTERNAL, "the reply could not be built (request %s)",
                           r->request_id);
    }
    struct MHD_Response *resp = r->reply_resp;
    r->reply_resp = NULL;
    if (!resp) {
        resp = MHD_create_response_from_buffer(r->reply_len, r->reply_data, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
            free(r->reply_data);
            r->reply_data = NULL;
            return MHD_NO;
        }
        r->reply_data = NULL; /* owned by the response now */
        r->bytes_sent = r->reply_len;
        if (r->content_type[0])
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    }
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    for (int i = 0; i < r->nheaders; i++)
        if (r->headers[i].name && r->headers[i].value)
            MHD_add_response_header(resp, r->headers[i].name, r->headers[i].value);
    if (atomic_load(&r->srv->stopping))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(r->conn, r->status, resp);
    MHD_destroy_response(resp);
    r->phase = PHASE_DONE;
    return ok;
}

/* ---- request life cycle ---- */

/* 128 random bits as hex. A request id names a request in logs, it guards nothing: a
 * per-thread xorshift128+ seeded once from OpenSSL's generator is enough, and saves the
 * getpid() and locking that RAND_bytes does on every call. */
static void make_request_id(char out[33])
{
    static _Thread_local uint64_t s0, s1;
    static const char hex[] = "0123456789abcdef";
    if (!(s0 | s1)) {
        uint64_t seed[2] = {0, 0};
        if (RAND_bytes((unsigned char *)seed, sizeof seed) != 1 || !(seed[0] | seed[1]))
            seed[0] = (uint64_t)(uintptr_t)&s0 ^ (uint64_t)time(NULL),
            seed[1] = 0x9e3779b97f4a7c15u;
        s0 = seed[0];
        s1 = seed[1];
    }
    for (int half = 0; half < 2; half++) {
        uint64_t x = s0, y = s1;
        s0 = y;
        x ^= x << 23;
        s1 = x ^ y ^ (x >> 17) ^ (y >> 26);
        uint64_t v = s1 + y;
        for (int i = 0; i < 16; i++)
            out[half * 16 + i] = hex[(v >> (60 - 4 * i)) & 0xf];
    }
    out[32] = '\0';
}

/* libmicrohttpd calls this once per request, first, with the undecoded URI: the request
 * context is born here and dies in on_completed. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct http_server *srv = cls;
    struct http_request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->srv = srv;
    r->conn = conn;
    clock_gettime(CLOCK_MONOTONIC, &r->start);
    r->raw_uri = strdup(uri ? uri : "");
    buf_init(&r->body, HTTP_BODY_MAX);
    r->route_index = metrics_route_unmatched();
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->client_addr,
                      sizeof r->client_addr);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->client_addr,
                      sizeof r->client_addr);
        r->peer_trusted = srv->proxies && http_proxies_trusts_sockaddr(srv->proxies, sa);
    }
    atomic_fetch_add(&srv->active, 1);
    return r;
}

static void request_free(struct http_request *r)
{
    if (r->forward_counted)
        http_addr_give(r->srv->req_counts, r->client_addr);
    if (r->db)
        db_release(r->srv->pool, r->db);
    buf_free(&r->body);
    json_decref(r->json);
    if (r->has_principal)
        json_decref(r->principal.environments);
    drop_reply(r);
    free(r->headers);
    free(r->raw_uri);
    free(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    struct http_request *r = *con_cls;
    if (!r)
        return;
    *con_cls = NULL;
    if (r->phase != PHASE_NEW) {
        struct timespec end;
        clock_gettime(CLOCK_MONOTONIC, &end);
        double secs =
            (double)(end.tv_sec - r->start.tv_sec) + (double)(end.tv_nsec - r->start.tv_nsec) / 1e9;
        unsigned status = r->status ? r->status : 500;
        metrics_http_observe(r->route_index, status, secs);
        struct log_access a = {
            .method = r->method,
            .path = r->path,
            .route = r->route ? r->route->pattern : "",
            .request_id = r->request_id,
            .client = r->client_addr,
            .status = status,
            .bytes = r->bytes_sent,
            .duration_ms = secs * 1000.0,
            .early = toe != MHD_REQUEST_TERMINATED_COMPLETED_OK,
        };
        log_access(&a);
    }
    struct http_server *srv = r->srv;
    request_free(r);
    atomic_fetch_sub(&srv->active, 1);
}

static int media_is_json(const char *ct)
{
    if (!ct)
        return 0;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return 1;
    /* application/<something>+json, e.g. merge-patch+json */
    return n > 17 && strncasecmp(ct, "application/", 12) == 0 &&
           strncasecmp(ct + n - 5, "+json", 5) == 0;
}

/* Find the route; on failure reply 404 or 405 and return -1; static files return 1. */
static int route_request(struct http_request *r)
{
    const struct http_server *srv = r->srv;
    const char *method = strcmp(r->method, "HEAD") == 0 ? "GET" : r->method;
    /* libmicrohttpd decodes the path into a C string, so "/tokens/<id>%00x" would act on
     * <id>: a path with an encoded NUL names nothing (404, as for static files). */
    size_t raw_path_len = strcspn(r->raw_uri, "?");
    for (size_t i = 0; i + 2 < raw_path_len; i++)
        if (r->raw_uri[i] == '%' && r->raw_uri[i + 1] == '0' && r->raw_uri[i + 2] == '0') {
            http_reply_problem(r, QDB_E_NOT_FOUND,
                               "no resource: the path contains an encoded NUL (%%00)");
            return -1;
        }
    char allow[128] = "";
    size_t allow_len = 0;
    for (size_t i = 0; i < srv->nroutes; i++) {
        const struct http_route *rt = &srv->routes[i];
        int n = http_match_pattern(rt->pattern, r->path, r->params, MAX_PARAMS, r->param_store,
                                   sizeof r->param_store);
        if (n < 0)
            continue;
        if (strcmp(rt->method, method) == 0) {
            r->route = rt;
            r->route_index = i;
            r->nparams = n;
            return 0;
        }
        if (!strstr(allow, rt->method) && allow_len + strlen(rt->method) + 8 < sizeof allow) {
            allow_len += (size_t)snprintf(allow + allow_len, sizeof allow - allow_len, "%s%s",
                                          allow_len ? ", " : "", rt->method);
            if (strcmp(rt->method, "GET") == 0)
                allow_len +=
                    (size_t)snprintf(allow + allow_len, sizeof allow - allow_len, ", HEAD");
        }
    }
    r->nparams = 0;
    if (allow_len) {
        http_reply_header(r, "Allow", allow);
        http_reply_problem(r, QDB_E_METHOD_NOT_ALLOWED, "%s is not allowed on %s; allowed: %s",
                           r->method, r->path, allow);
        return -1;
    }
    if (strcmp(method, "GET") == 0 && strncmp(r->path, "/api/", 5) != 0) {
        r->route_index = metrics_route_static();
        return 1;
    }
    http_reply_problem(r, QDB_E_NOT_FOUND, "no resource at %s", r->path);
    return -1;
}

/* The media type check of routes taking JSON, made once the caller is known (an
 * unauthenticated caller learns nothing but 401). Returns 0, or -1 after replying 415. */
static int check_media(struct http_request *r)
{
    if (!(r->route->flags & HTTP_BODY_JSON))
        return 0;
    const char *ct = http_header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (media_is_json(ct))
        return 0;
    http_reply_problem(r, QDB_E_UNSUPPORTED_MEDIA, "this route takes application/json, not %s",
                       ct ? ct : "a body without Content-Type");
    return -1;
}

/* The blocking authentication, on a handler thread. Returns 0, or -1 after a reply. */
static int authenticate_blocking(struct http_request *r)
{
    int rc = authenticator(r, r->route->perm, authenticator_cls);
    if (rc == HTTP_AUTH_OK)
        return 0;
    if (rc == HTTP_AUTH_WOULD_BLOCK)
        log_event(LOG_ERROR, "the blocking authenticator answered 'would block'",
                  json_pack("{s:s}", "route", r->route->pattern));
    if (!r->replied)
        http_reply_problem(r, QDB_E_UNAUTHORIZED, "authentication failed");
    return -1;
}

/* A request relayed by a trusted proxy: its client is the one X-Forwarded-For names (see
 * http_proxy.h), and that client's requests in flight are held to the per-address limit
 * that direct clients' connections are (a proxy multiplexes many clients over a few
 * connections, so it is requests that are counted). Returns 0, or -1 after replying 429. */
static int forwarded_client(struct http_request *r)
{
    char client[INET6_ADDRSTRLEN];
    if (http_proxies_client(r->srv->proxies, http_header(r, "X-Forwarded-For"), client,
                            sizeof client))
        snprintf(r->client_addr, sizeof r->client_addr, "%s", client);
    if (!http_addr_take(r->srv->req_counts, r->client_addr, r->srv->per_ip)) {
        http_reply_header(r, "Retry-After", "1");
        http_reply_problem(r, QDB_E_TOO_MANY_REQUESTS,
                           "too many requests in flight from %s (at most %u)", r->client_addr,
                           r->srv->per_ip);
        return -1;
    }
    r->forward_counted = 1;
    return 0;
}

/* What the headers decide, on the event loop. */
enum headers_outcome {
    HEADERS_READ_BODY, /* go on: read the body, then run */
    HEADERS_REPLY,     /* a reply is ready (r->replied) */
    HEADERS_BLOCKING,  /* authentication must block: hand the request to the pool */
};

static enum headers_outcome on_headers(struct http_request *r)
{
    const char *rid = http_header(r, "X-Request-Id");
    if (rid && http_request_id_valid(rid))
        snprintf(r->request_id, sizeof r->request_id, "%s", rid);
    else
        make_request_id(r->request_id);

    if (r->peer_trusted && forwarded_client(r) != 0)
        return HEADERS_REPLY;
    if (atomic_load(&r->srv->stopping)) {
        http_reply_problem(r, QDB_E_SHUTTING_DOWN, "the server is shutting down");
        return HEADERS_REPLY;
    }
    int routed = route_request(r);
    if (routed < 0)
        return HEADERS_REPLY;
    const char *cl = http_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (end == cl || *end || n > HTTP_BODY_MAX) {
            http_reply_problem(r, QDB_E_PAYLOAD_TOO_LARGE, "request bodies are limited to %u bytes",
                               HTTP_BODY_MAX);
            return HEADERS_REPLY;
        }
    }
    if (routed == 1) {
        http_static_serve(r, r->srv->web_dir, r->raw_uri);
        return HEADERS_REPLY;
    }
    if (r->route->perm != HTTP_PUBLIC) {
        if (!authenticator) {
            http_reply_problem(r, QDB_E_UNAUTHORIZED, "authentication is required");
            return HEADERS_REPLY;
        }
        int rc = HTTP_AUTH_WOULD_BLOCK;
        if (authenticator_try) {
            r->on_loop = 1;
            rc = authenticator_try(r, r->route->perm, authenticator_try_cls);
            r->on_loop = 0;
        }
        if (rc == HTTP_AUTH_WOULD_BLOCK && !r->replied && !r->has_principal) {
            r->auth_pending = 1;
            return HEADERS_BLOCKING;
        }
        if (rc != HTTP_AUTH_OK) {
            if (!r->replied)
                http_reply_problem(r, QDB_E_UNAUTHORIZED, "authentication failed");
            return HEADERS_REPLY;
        }
    }
    return check_media(r) == 0 ? HEADERS_READ_BODY : HEADERS_REPLY;
}

static void run_handler(struct http_request *r)
{
    if (r->body_too_large) {
        http_reply_problem(r, QDB_E_PAYLOAD_TOO_LARGE, "request bodies are limited to %u bytes",
                           HTTP_BODY_MAX);
        return;
    }
    if (r->route->flags & HTTP_BODY_JSON) {
        if (r->body.len == 0) {
            http_reply_problem(r, QDB_E_INVALID_JSON, "a JSON body is required");
            return;
        }
        json_error_t err;
        r->json = json_loadb(r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &err);
        if (!r->json) {
            http_reply_problem_ext(r, QDB_E_INVALID_JSON,
                                   json_pack("{s:i,s:i}", "line", err.line, "column", err.column),
                                   "malformed JSON at line %d, column %d: %s", err.line, err.column,
                                   err.text);
            return;
        }
    }
    r->route->handler(r);
    if (r->db) {
        db_release(r->srv->pool, r->db);
        r->db = NULL;
    }
    if (!r->replied) {
        log_event(LOG_ERROR, "handler sent no reply",
                  json_pack("{s:s}", "route", r->route->pattern));
        http_reply_problem(r, QDB_E_INTERNAL, "no reply was produced (request %s)", r->request_id);
    }
}

/* ---- the handler pool ---- */

/* Pool figures for /metrics (one server per process; summed over servers otherwise). */
static atomic_uint pool_threads_total, pool_busy, pool_queued;
static atomic_ullong pool_jobs_total;

static void pool_collect(struct buf *out, void *cls)
{
    (void)cls;
    metrics_family(out, "qdb_http_handler_threads", "gauge",
                   "Threads of the HTTP handler pool (handlers that may block).");
    buf_printf(out, "qdb_http_handler_threads %u\n", atomic_load(&pool_threads_total));
    metrics_family(out, "qdb_http_handler_busy", "gauge", "Handler threads running a request now.");
    buf_printf(out, "qdb_http_handler_busy %u\n", atomic_load(&pool_busy));
    metrics_family(out, "qdb_http_handler_queued", "gauge",
                   "Requests waiting for a handler thread now.");
    buf_printf(out, "qdb_http_handler_queued %u\n", atomic_load(&pool_queued));
    metrics_family(out, "qdb_http_handler_jobs_total", "counter",
                   "Requests (or their authentication) run on the handler pool.");
    buf_printf(out, "qdb_http_handler_jobs_total %llu\n", atomic_load(&pool_jobs_total));
}

/* What a handler thread does with a request: authenticate when that was left to it, then
 * (for a job that runs the handler) run the route's handler. */
static void pool_job(struct http_request *r)
{
    if (r->auth_pending) {
        r->auth_pending = 0;
        if (authenticate_blocking(r) != 0 || check_media(r) != 0) {
            r->handled = 1;
            goto out;
        }
    }
    if (r->pool_runs_handler) {
        run_handler(r);
        r->handled = 1;
    }
out:
    if (r->db) {
        /* never held while the event loop reads a body */
        db_release(r->srv->pool, r->db);
        r->db = NULL;
    }
}

static void *pool_main(void *cls)
{
    struct http_server *srv = cls;
    struct handler_pool *hp = &srv->handlers;
    for (;;) {
        pthread_mutex_lock(&hp->mu);
        while (!hp->head && !hp->stop)
            pthread_cond_wait(&hp->wake, &hp->mu);
        struct http_request *r = hp->head;
        if (r) {
            hp->head = r->next_job;
            if (!hp->head)
                hp->tail = NULL;
        }
        int stop = hp->stop;
        pthread_mutex_unlock(&hp->mu);
        if (!r)
            break;
        atomic_fetch_sub(&pool_queued, 1);
        atomic_fetch_add(&pool_busy, 1);
        atomic_fetch_add(&pool_jobs_total, 1);
        if (stop) {
            /* queued when the shutdown timeout ran out: answer, do not start work */
            r->auth_pending = 0;
            if (!r->replied)
                http_reply_problem(r, QDB_E_SHUTTING_DOWN, "the server is shutting down");
            r->handled = 1;
        } else {
            pool_job(r);
        }
        /* The reply is in r; from here the event loop owns r again (and may free it as soon
         * as the connection is resumed): touch nothing after this. */
        struct MHD_Connection *conn = r->conn;
        atomic_fetch_sub(&pool_busy, 1);
        MHD_resume_connection(conn);
    }
    return NULL;
}

/* Suspend the connection and queue the request. Returns 0, or -1 when the pool has stopped
 * (nothing changed). */
static int pool_submit(struct http_request *r, int runs_handler)
{
    struct handler_pool *hp = &r->srv->handlers;
    pthread_mutex_lock(&hp->mu);
    if (hp->stop || hp->nthreads == 0) {
        pthread_mutex_unlock(&hp->mu);
        return -1;
    }
    r->pool_runs_handler = runs_handler;
    r->next_job = NULL;
    r->phase = PHASE_POOL;
    /* suspended before any handler thread can see it, so its resume always comes after */
    MHD_suspend_connection(r->conn);
    if (hp->tail)
        hp->tail->next_job = r;
    else
        hp->head = r;
    hp->tail = r;
    atomic_fetch_add(&pool_queued, 1);
    pthread_cond_signal(&hp->wake);
    pthread_mutex_unlock(&hp->mu);
    return 0;
}

static int pool_start(struct http_server *srv, unsigned n)
{
    struct handler_pool *hp = &srv->handlers;
    static atomic_int registered;
    if (atomic_exchange(&registered, 1) == 0 && metrics_register(pool_collect, NULL) != 0)
        return -1;
    hp->threads = calloc(n, sizeof *hp->threads);
    if (!hp->threads)
        return -1;
    for (unsigned i = 0; i < n; i++) {
        if (pthread_create(&hp->threads[i], NULL, pool_main, srv) != 0) {
            log_error("cannot start HTTP handler thread %u of %u", i + 1, n);
            return -1;
        }
        hp->nthreads++;
        atomic_fetch_add(&pool_threads_total, 1);
    }
    return 0;
}

/* Stop taking jobs, answer the queued ones, wait for the running ones. */
static void pool_stop(struct http_server *srv)
{
    struct handler_pool *hp = &srv->handlers;
    pthread_mutex_lock(&hp->mu);
    hp->stop = 1;
    pthread_cond_broadcast(&hp->wake);
    pthread_mutex_unlock(&hp->mu);
    for (unsigned i = 0; i < hp->nthreads; i++)
        pthread_join(hp->threads[i], NULL);
    atomic_fetch_sub(&pool_threads_total, hp->nthreads);
    free(hp->threads);
    hp->threads = NULL;
    hp->nthreads = 0;
    /* the mutex stays: event loops may still ask (and be told the pool has stopped) until
     * the daemon is stopped; server_free destroys it */
}

/* ---- the access handler (event loop) ---- */

/* Whether an early reply may go out now: no body is coming, the client waits for "100
 * Continue" (and so sends no body), or the body is too large to be worth draining. Else
 * the reply waits until the body has been read and dropped (see BODY_DRAIN_MAX). */
static int reply_now(struct http_request *r)
{
    if (!r->has_body)
        return 1;
    const char *expect = http_header(r, MHD_HTTP_HEADER_EXPECT);
    if (expect && strncasecmp(expect, "100-continue", 12) == 0)
        return 1;
    const char *cl = http_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (end == cl || *end || n > BODY_DRAIN_MAX)
            return 1;
    }
    return 0;
}

static int announces_body(struct http_request *r)
{
    if (http_header(r, MHD_HTTP_HEADER_TRANSFER_ENCODING))
        return 1;
    const char *cl = http_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    return cl && strspn(cl, "0") != strlen(cl);
}

/* The final call (the whole body is in): queue what is ready, run an inline route here, or
 * hand the request to the pool. */
static enum MHD_Result on_body_done(struct http_request *r)
{
    if (r->replied || r->handled)
        return queue_reply(r);
    if ((r->route->flags & HTTP_INLINE) && !r->auth_pending) {
        r->on_loop = 1;
        run_handler(r);
        r->on_loop = 0;
        return queue_reply(r);
    }
    if (pool_submit(r, 1) == 0)
        return MHD_YES;
    http_reply_problem(r, QDB_E_SHUTTING_DOWN, "the server is shutting down");
    return queue_reply(r);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct http_request *r = *con_cls;
    if (!r) {
        r = on_uri(cls, url, conn);
        if (!r)
            return MHD_NO;
        *con_cls = r;
    }
    if (r->phase == PHASE_NEW) {
        r->phase = PHASE_BODY;
        r->conn = conn;
        r->method = method;
        r->path = url;
        r->has_body = announces_body(r);
        switch (on_headers(r)) {
        case HEADERS_REPLY:
            if (reply_now(r))
                return queue_reply(r);
            return MHD_YES; /* drain the body first, then answer */
        case HEADERS_BLOCKING:
            /* Without a body, one job authenticates and runs the handler; with one, the
             * caller is known before its body is read. */
            if (pool_submit(r, !r->has_body) == 0) {
                r->first_call_again = 1;
                return MHD_YES;
            }
            r->auth_pending = 0;
            http_reply_problem(r, QDB_E_SHUTTING_DOWN, "the server is shutting down");
            return reply_now(r) ? queue_reply(r) : MHD_YES;
        case HEADERS_READ_BODY:
            return MHD_YES;
        }
        return MHD_NO;
    }
    if (r->phase == PHASE_DONE)
        return MHD_YES;
    if (r->phase == PHASE_POOL)
        r->phase = PHASE_BODY; /* resumed: the job is done */
    if (r->first_call_again && *upload_data_size == 0) {
        /* libmicrohttpd calls the access handler again with the headers only when the
         * connection was suspended in that first call (and, without a body, the next call
         * is the final one: queueing now is right for both). */
        r->first_call_again = 0;
        if (r->replied || r->handled)
            return (!r->has_body || reply_now(r)) ? queue_reply(r) : MHD_YES;
        return r->has_body ? MHD_YES : on_body_done(r);
    }
    r->first_call_again = 0;
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->replied) {
            /* an early reply waits for the rest of the body, which is dropped */
            r->discarded += n;
            return r->discarded > BODY_DRAIN_MAX ? MHD_NO : MHD_YES;
        }
        if (!r->body_too_large && buf_append(&r->body, upload_data, n) != 0) {
            r->body_too_large = 1;
            buf_free(&r->body);
        }
        if (r->body_too_large) {
            r->discarded += n;
            if (r->discarded > BODY_DISCARD_MAX)
                return MHD_NO; /* an endless body: cut the connection */
        }
        return MHD_YES;
    }
    return on_body_done(r);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    log_event(LOG_DEBUG, "libmicrohttpd", json_pack("{s:s}", "detail", msg));
}

/* ---- server ---- */

/* Refuse a route table the router would misread: a route that could never match, or one
 * whose parameters would not fit. */
static int check_routes(const struct http_route *routes, size_t n)
{
    static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
    for (size_t i = 0; i < n; i++) {
        const struct http_route *rt = &routes[i];
        int known = 0;
        for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++)
            known |= rt->method && strcmp(rt->method, methods[m]) == 0;
        int params = 0, ok = known && rt->pattern && rt->pattern[0] == '/' && rt->handler;
        for (const char *p = ok ? rt->pattern : ""; *p; p++) {
            if (*p == '{') {
                const char *close = strchr(p, '}');
                if (!close || close == p + 1 || memchr(p, '/', (size_t)(close - p)))
                    ok = 0;
                params++;
            }
        }
        if (!ok || params > MAX_PARAMS) {
            log_error("route %zu (%s %s) is invalid: %s", i, rt->method ? rt->method : "?",
                      rt->pattern ? rt->pattern : "?",
                      ok ? "more path parameters than MAX_PARAMS" : "bad method or pattern");
            return -1;
        }
    }
    return 0;
}

/* Behind trusted proxies, the per-address connection limit of direct clients (the
 * proxies themselves are not limited but by QDB_HTTP_MAX_CONNECTIONS). The accept policy
 * only looks; the count is taken when libmicrohttpd has made the connection (STARTED) and
 * given back when it closes, so a connection refused on the way in is never counted. Each
 * event loop accepts on its own, so under a burst from one address the count can pass the
 * limit by at most the number of event loops less one. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addrlen;
    struct http_server *srv = cls;
    char a[INET6_ADDRSTRLEN];
    if (http_proxies_trusts_sockaddr(srv->proxies, addr) ||
        http_addr_normalise(addr, a, sizeof a) != 0)
        return MHD_YES;
    return http_addr_count(srv->conn_counts, a) < srv->per_ip ? MHD_YES : MHD_NO;
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct http_server *srv = cls;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    char a[INET6_ADDRSTRLEN];
    if (!ci || http_addr_normalise(ci->client_addr, a, sizeof a) != 0)
        return;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        if (http_proxies_trusts_sockaddr(srv->proxies, ci->client_addr))
            return;
        http_addr_add(srv->conn_counts, a);
        *socket_context = srv; /* marks a counted connection */
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context == srv) {
        http_addr_give(srv->conn_counts, a);
        *socket_context = NULL;
    }
}

int http_server_reload_tls(struct http_server *srv)
{
    if (!srv || !srv->tls)
        return 1;
    char err[512] = "";
    if (http_tls_reload(srv->tls, err, sizeof err) != 0) {
        log_event(LOG_ERROR, "TLS certificate not reloaded; the previous one is still served",
                  json_pack("{s:s}", "reason", err));
        return -1;
    }
    char subject[256];
    http_tls_subject(srv->tls, subject, sizeof subject);
    log_event(LOG_INFO, "TLS certificate reloaded", json_pack("{s:s}", "subject", subject));
    return 0;
}

static void server_free(struct http_server *srv)
{
    http_tls_free(srv->tls);
    http_proxies_free(srv->proxies);
    http_addr_counts_free(srv->conn_counts);
    http_addr_counts_free(srv->req_counts);
    pthread_cond_destroy(&srv->handlers.wake);
    pthread_mutex_destroy(&srv->handlers.mu);
    free(srv->web_dir);
    free(srv);
}

struct http_server *http_server_start(const struct http_server_config *cfg)
{
    if (check_routes(cfg->routes, cfg->nroutes) != 0)
        return NULL;
    struct http_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->routes = cfg->routes;
    srv->nroutes = cfg->nroutes;
    srv->pool = cfg->pool;
    srv->db_wait_ms = cfg->db_wait_ms;
    pthread_mutex_init(&srv->handlers.mu, NULL);
    pthread_cond_init(&srv->handlers.wake, NULL);
    srv->web_dir = strdup(cfg->web_dir ? cfg->web_dir : "web");
    if (!srv->web_dir) {
        server_free(srv);
        return NULL;
    }
    srv->per_ip = cfg->per_ip_connections;
    char err[512] = "";
    if (cfg->tls_cert_file &&
        !(srv->tls = http_tls_new(cfg->tls_cert_file, cfg->tls_key_file, err, sizeof err))) {
        log_error("HTTPS: %s", err);
        server_free(srv);
        return NULL;
    }
    if (cfg->trusted_proxies &&
        (!(srv->proxies = http_proxies_parse(cfg->trusted_proxies, err, sizeof err)) ||
         !(srv->conn_counts = http_addr_counts_new()) ||
         !(srv->req_counts = http_addr_counts_new()))) {
        log_error("trusted proxies: %s", srv->proxies ? "out of memory" : err);
        server_free(srv);
        return NULL;
    }
    unsigned handler_threads = cfg->handler_threads ? cfg->handler_threads : 1;
    if (pool_start(srv, handler_threads) != 0) {
        pool_stop(srv);
        server_free(srv);
        return NULL;
    }

    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[8];
    snprintf(port, sizeof port, "%u", cfg->port);
    int gai = getaddrinfo(cfg->host, port, &hints, &ai);
    if (gai != 0) {
        log_error("cannot resolve listen address %s: %s", cfg->host, gai_strerror(gai));
        pool_stop(srv);
        server_free(srv);
        return NULL;
    }
    /* Threading: a few epoll event loops (QDB_HTTP_THREADS, one per core by default), each
     * over its share of the connections, so idle and slow clients cost a socket, not a
     * thread. They never block: what may wait on the state store or the issuer runs on the
     * handler pool (QDB_HTTP_HANDLER_THREADS) while its connection is suspended. So a
     * /healthz never queues behind a query, and the event loops are not more threads than
     * cores fighting for them (that was the tail latency of 4 loops per core). */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* The options that depend on the configuration: HTTPS (TLS 1.3 only, the certificate
     * handed out per handshake so that SIGHUP can replace it) and the per-address limit,
     * libmicrohttpd's own unless trusted proxies make it ours. */
    struct MHD_OptionItem extra[5];
    size_t nextra = 0;
    if (srv->tls) {
        flags |= MHD_USE_TLS;
        extra[nextra++] =
            (struct MHD_OptionItem){MHD_OPTION_HTTPS_CERT_CALLBACK, 0, http_tls_callback()};
        extra[nextra++] =
            (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)HTTP_TLS_PRIORITIES};
    }
    if (srv->proxies)
        extra[nextra++] =
            (struct MHD_OptionItem){MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)on_connection, srv};
    else
        extra[nextra++] = (struct MHD_OptionItem){MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                                                  (intptr_t)cfg->per_ip_connections, NULL};
    extra[nextra] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    srv->daemon = MHD_start_daemon(
        flags, cfg->port, srv->proxies ? on_accept : NULL, srv, on_request, srv, MHD_OPTION_ARRAY,
        extra, MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned int)cfg->threads, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)cfg->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)cfg->idle_timeout_s,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONNECTION_MEMORY,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)1024, MHD_OPTION_URI_LOG_CALLBACK, on_uri,
        srv, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        NULL, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!srv->daemon) {
        log_error("cannot listen on %s:%u (in use, not an address of this host%s)", cfg->host,
                  cfg->port, srv->tls ? ", or TLS refused by libmicrohttpd" : "");
        pool_stop(srv);
        server_free(srv);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = di ? di->port : cfg->port;
    return srv;
}

uint16_t http_server_port(const struct http_server *srv)
{
    return srv->port;
}

int http_server_stopping(const struct http_server *srv)
{
    return atomic_load(&srv->stopping);
}

void http_server_stop(struct http_server *srv, int timeout_s)
{
    if (!srv)
        return;
    atomic_store(&srv->stopping, 1);
    MHD_socket fd = MHD_quiesce_daemon(srv->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    int left;
    while ((left = atomic_load(&srv->active)) > 0) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long waited_ms =
            (long long)(now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (waited_ms >= (long long)timeout_s * 1000) {
            log_warn("shutdown timeout: %d requests still in flight are cut", left);
            break;
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    /* Every connection the pool suspended is resumed before the daemon stops (libmicrohttpd
     * refuses to stop with suspended connections). */
    pool_stop(srv);
    MHD_stop_daemon(srv->daemon);
    server_free(srv);
}
