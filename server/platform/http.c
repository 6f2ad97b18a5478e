#include "platform/http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "platform/db.h"
#include "platform/log.h"
#include "platform/metrics.h"
#include "platform/utf8.h"

/* Forward: static files (http_static.c). */
void http_static_serve(struct http_request *req, const char *web_dir, const char *raw_path);

#define MAX_PARAMS 6
#define MAX_HEADERS 12
/* A chunked body past the limit is read and dropped up to this much, so the client gets
 * its 413; beyond it the connection is cut. */
#define BODY_DISCARD_MAX (8u * HTTP_BODY_MAX)

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
};

enum phase { PHASE_NEW = 0, PHASE_BODY, PHASE_DONE };

struct http_request {
    struct http_server *srv;
    struct MHD_Connection *conn;
    struct timespec start;
    char *raw_uri; /* as received, undecoded (owned) */
    const char *method;
    const char *path; /* decoded, borrowed from libmicrohttpd for the request's life */
    char request_id[129];
    char client_addr[INET6_ADDRSTRLEN];
    enum phase phase;
    const struct http_route *route;
    size_t route_index;
    struct http_path_param params[MAX_PARAMS];
    int nparams;
    char param_store[1024];
    struct buf body;
    size_t discarded;
    int body_too_large;
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
    struct {
        char *name, *value;
    } headers[MAX_HEADERS];
    int nheaders;
    size_t bytes_sent;
};

static http_authenticate_fn authenticator;
static void *authenticator_cls;

void http_set_authenticator(http_authenticate_fn fn, void *cls)
{
    authenticator = fn;
    authenticator_cls = cls;
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

const char *http_method(const struct http_request *r) { return r->method; }
const char *http_path(const struct http_request *r) { return r->path; }
json_t *http_body(const struct http_request *r) { return r->json; }
const char *http_body_raw(const struct http_request *r, size_t *len)
{
    *len = r->body.len;
    return r->body.len ? r->body.data : NULL;
}
const struct http_route *http_route_of(const struct http_request *r) { return r->route; }
const char *http_request_id(const struct http_request *r) { return r->request_id; }
const char *http_client_addr(const struct http_request *r) { return r->client_addr; }
struct http_server *http_server_of(const struct http_request *r) { return r->srv; }
struct MHD_Connection *http_connection(const struct http_request *r) { return r->conn; }

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
        log_event(LOG_ERROR, "handler replied twice",
                  json_pack("{s:s,s:s}", "path", r->path ? r->path : "", "request_id",
                            r->request_id));
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
    if (r->nheaders >= MAX_HEADERS)
        return;
    r->headers[r->nheaders].name = strdup(name);
    r->headers[r->nheaders].value = strdup(value);
    r->nheaders++;
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
static enum MHD_Result queue_reply(struct http_request *r)
{
    struct MHD_Response *resp = r->reply_resp;
    r->reply_resp = NULL;
    if (!resp) {
        resp = MHD_create_response_from_buffer(r->reply_len, r->reply_data,
                                               MHD_RESPMEM_MUST_FREE);
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

static void make_request_id(char out[33])
{
    unsigned char rnd[16];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        memset(rnd, 0, sizeof rnd);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", rnd[i]);
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
    }
    atomic_fetch_add(&srv->active, 1);
    return r;
}

static void request_free(struct http_request *r)
{
    if (r->db)
        db_release(r->srv->pool, r->db);
    buf_free(&r->body);
    json_decref(r->json);
    if (r->has_principal)
        json_decref(r->principal.environments);
    free(r->reply_data);
    if (r->reply_resp)
        MHD_destroy_response(r->reply_resp);
    for (int i = 0; i < r->nheaders; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
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
        double secs = (double)(end.tv_sec - r->start.tv_sec) +
                      (double)(end.tv_nsec - r->start.tv_nsec) / 1e9;
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
                allow_len += (size_t)snprintf(allow + allow_len, sizeof allow - allow_len,
                                              ", HEAD");
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

/* First call: everything decided from the request line and headers. Returns 0 to go on
 * reading the body, or 1 when a reply is ready to queue. */
static int on_headers(struct http_request *r)
{
    const char *rid = http_header(r, "X-Request-Id");
    if (rid && http_request_id_valid(rid))
        snprintf(r->request_id, sizeof r->request_id, "%s", rid);
    else
        make_request_id(r->request_id);

    if (atomic_load(&r->srv->stopping)) {
        http_reply_problem(r, QDB_E_SHUTTING_DOWN, "the server is shutting down");
        return 1;
    }
    int routed = route_request(r);
    if (routed < 0)
        return 1;
    const char *cl = http_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (end == cl || *end || n > HTTP_BODY_MAX) {
            http_reply_problem(r, QDB_E_PAYLOAD_TOO_LARGE,
                               "request bodies are limited to %u bytes", HTTP_BODY_MAX);
            return 1;
        }
    }
    if (routed == 1) {
        http_static_serve(r, r->srv->web_dir, r->raw_uri);
        return 1;
    }
    if (r->route->perm != HTTP_PUBLIC) {
        if (!authenticator) {
            http_reply_problem(r, QDB_E_UNAUTHORIZED, "authentication is required");
            return 1;
        }
        if (authenticator(r, r->route->perm, authenticator_cls) != 0) {
            if (!r->replied)
                http_reply_problem(r, QDB_E_UNAUTHORIZED, "authentication failed");
            return 1;
        }
    }
    if (r->route->flags & HTTP_BODY_JSON) {
        const char *ct = http_header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (!media_is_json(ct)) {
            http_reply_problem(r, QDB_E_UNSUPPORTED_MEDIA,
                               "this route takes application/json, not %s",
                               ct ? ct : "a body without Content-Type");
            return 1;
        }
    }
    return 0;
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
                                   "malformed JSON at line %d, column %d: %s", err.line,
                                   err.column, err.text);
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
        http_reply_problem(r, QDB_E_INTERNAL, "no reply was produced (request %s)",
                           r->request_id);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
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
        if (on_headers(r) != 0)
            return queue_reply(r);
        return MHD_YES;
    }
    if (r->phase == PHASE_DONE)
        return MHD_YES;
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
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
    run_handler(r);
    return queue_reply(r);
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

struct http_server *http_server_start(const struct http_server_config *cfg)
{
    struct http_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->routes = cfg->routes;
    srv->nroutes = cfg->nroutes;
    srv->pool = cfg->pool;
    srv->db_wait_ms = cfg->db_wait_ms;
    srv->web_dir = strdup(cfg->web_dir ? cfg->web_dir : "web");

    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[8];
    snprintf(port, sizeof port, "%u", cfg->port);
    int gai = getaddrinfo(cfg->host, port, &hints, &ai);
    if (gai != 0) {
        log_error("cannot resolve listen address %s: %s", cfg->host, gai_strerror(gai));
        free(srv->web_dir);
        free(srv);
        return NULL;
    }
    /* Threading: an internal pool of epoll threads. Each thread runs its own event loop over
     * its share of the connections, so idle and slow clients cost a socket, not a thread,
     * and the 2 cores are kept busy. Handlers block on the state store; with more threads
     * than cores (QDB_HTTP_THREADS, default 4 per core) a thread waiting on PostgreSQL does
     * not leave a core idle. Thread-per-connection would spend a thread (and its stack) on
     * every idle keep-alive client; a single event loop would stall on every query. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    srv->daemon = MHD_start_daemon(
        flags, cfg->port, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)cfg->threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)cfg->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned int)cfg->per_ip_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)cfg->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)1024, MHD_OPTION_URI_LOG_CALLBACK, on_uri,
        srv, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_EXTERNAL_LOGGER,
        on_mhd_log, NULL, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!srv->daemon) {
        log_error("cannot listen on %s:%u (in use, or not an address of this host)", cfg->host,
                  cfg->port);
        free(srv->web_dir);
        free(srv);
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
        long long waited_ms = (long long)(now.tv_sec - start.tv_sec) * 1000 +
                              (now.tv_nsec - start.tv_nsec) / 1000000;
        if (waited_ms >= (long long)timeout_s * 1000) {
            log_warn("shutdown timeout: %d requests still in flight are cut", left);
            break;
        }
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(srv->daemon);
    free(srv->web_dir);
    free(srv);
}
