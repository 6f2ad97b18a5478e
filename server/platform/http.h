/* HTTP core on libmicrohttpd: the route table, per-request context, JSON and problem+json
 * replies, static files, access log and request metrics.
 *
 * A request goes: route match (404 / 405 with Allow) -> Content-Length limit (413) ->
 * authentication hook for non-public routes (401 / 403 / 503, see http_set_authenticator)
 * -> media type for routes taking a JSON body (415) -> body read incrementally up to
 * HTTP_BODY_MAX (413) -> JSON parse (400 naming line and column) -> handler.
 * A handler sends exactly one reply with one of the http_reply_* functions; a handler that
 * sends none gets a 500 (and a log line).
 *
 * Threads. A few event-loop threads (QDB_HTTP_THREADS, one per core) read, route and write
 * every connection; they never block. Everything that may block (a state-store query, a
 * call to the token issuer) runs on the handler pool (QDB_HTTP_HANDLER_THREADS): the
 * connection is suspended, the request queued, and a handler thread resumes the connection
 * once the reply is ready. Which runs where:
 *   - a route flagged HTTP_INLINE runs its handler on the event loop, once its caller is
 *     known without blocking (public, or http_set_authenticator_try answered);
 *   - every other route runs on a handler thread, and so does a blocking authentication.
 * A handler runs on one thread at a time and may call every http_ function from it; it
 * never runs on two threads at once. http_db() refuses (NULL, logged) on an event loop.
 * Long work never runs on either: it becomes a job (202 + Location).
 *
 * Streams (SSE, exports). A handler may start a stream with http_reply_response, from
 * either kind of thread. libmicrohttpd calls the response's content reader on the event
 * loop, so the reader must not block: with nothing to send it suspends its connection
 * (MHD_suspend_connection(http_connection(req)), returning 0) and another thread resumes it
 * (MHD_resume_connection) when there is. A stream that suspends its connection must resume
 * it promptly once http_server_stopping() is true: libmicrohttpd cannot stop with a
 * suspended connection, so shutdown waits (up to QDB_SHUTDOWN_TIMEOUT) for it. The
 * connection belongs to the stream only between the reply and the response's free
 * callback; http_count_bytes may be called from the reader. */
#ifndef QDB_PLATFORM_HTTP_H
#define QDB_PLATFORM_HTTP_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "platform/errors.h"

#define HTTP_BODY_MAX (1024u * 1024u)

struct db_pool;
struct db_conn;
struct http_request;
struct http_server;
struct MHD_Connection;
struct MHD_Response;

/* Who may call a route: the least role needed. Roles are ordered. */
enum http_perm { HTTP_PUBLIC = 0, HTTP_VIEWER = 1, HTTP_OPERATOR = 2, HTTP_ADMIN = 3 };
/* The role's name: "public", "viewer", "operator", "admin" (static; "unknown" out of
 * range). */
const char *http_perm_name(enum http_perm p);
/* The roles a principal can be given, {"viewer", "operator", "admin", NULL}: entry i names
 * HTTP_VIEWER + i (for a JSPEC_ENUM field, and for parsing a role name). */
const char *const *http_role_names(void);

/* Route flags */
#define HTTP_BODY_JSON 0x1u /* the route takes a JSON body (application/json or +json) */
/* The handler never blocks: no state store, no network, nothing slow. It runs on the event
 * loop; routes without the flag run on the handler pool (see the top of this file). */
#define HTTP_INLINE 0x2u

typedef void (*http_handler_fn)(struct http_request *req);

struct http_route {
    const char *method;  /* "GET", "POST", "PUT", "PATCH", "DELETE" */
    const char *pattern; /* "/api/v1/jobs/{id}": {name} matches one non-empty segment */
    http_handler_fn handler;
    enum http_perm perm;
    unsigned flags;
};

/* The caller, set by the authentication hook. */
struct http_principal {
    char subject[256];
    char name[256];
    enum http_perm role;
    char method[16];      /* "oidc", "dev" or "api-token" */
    char token_id[64];    /* API token id when method is "api-token", else "" */
    int64_t expires_at;   /* unix seconds; 0 when it does not expire */
    json_t *environments; /* API tokens: array of environment names it may act on; NULL =
                             all. Owned by the request once set. */
};

/* The authentication hooks, registered by the auth room before the server starts. They are
 * called for every non-public route with the route's permission and return:
 *   HTTP_AUTH_OK (0)           after http_set_principal: the caller may proceed;
 *   HTTP_AUTH_REPLIED (-1)     after sending a reply itself (401, 403, 503);
 *   HTTP_AUTH_WOULD_BLOCK (1)  (the try hook only) it cannot answer without blocking; it
 *                              has set no principal and sent no reply.
 * The blocking hook (http_set_authenticator) may wait on the state store or the issuer; it
 * runs on a handler thread and must answer OK or REPLIED. The try hook
 * (http_set_authenticator_try, optional) runs first, on the event loop, and must never
 * block: it answers from memory (a cache hit, a missing or malformed token) or says
 * WOULD_BLOCK, and then the blocking hook runs on a handler thread. Without a try hook every
 * authentication is "would block". http_db() returns NULL inside the try hook. A request
 * whose try hook answered OK on an HTTP_INLINE route never leaves the event loop. Without a
 * blocking hook, every non-public route answers 401. */
#define HTTP_AUTH_OK 0
#define HTTP_AUTH_REPLIED (-1)
#define HTTP_AUTH_WOULD_BLOCK 1
typedef int (*http_authenticate_fn)(struct http_request *req, enum http_perm required,
                                    void *cls);
void http_set_authenticator(http_authenticate_fn fn, void *cls);
void http_set_authenticator_try(http_authenticate_fn try_fn, void *cls);

/* ---- static files (http_static.c) ---- */

/* Let the console's pages connect to the origin of url (scheme://host[:port]) besides their
 * own: the OIDC issuer's token endpoint. Call before http_server_start. Returns 0, or -1
 * (the policy stays 'self' only) for a URL that is not http(s) or would not fit. */
int http_static_allow_connect(const char *url);

/* ---- server life cycle ---- */

struct http_server_config {
    const char *host;
    uint16_t port; /* 0: a free port, see http_server_port */
    unsigned threads;         /* event loops */
    unsigned handler_threads; /* the handler pool (0 is taken as 1) */
    unsigned max_connections;
    unsigned per_ip_connections;
    unsigned idle_timeout_s;
    const char *web_dir; /* static files served at / */
    const struct http_route *routes;
    size_t nroutes;
    struct db_pool *pool; /* for http_db */
    int db_wait_ms;       /* how long a request waits for a pooled connection */
    /* HTTPS (http_tls.h): both set, or both NULL for plain HTTP */
    const char *tls_cert_file, *tls_key_file;
    /* QDB_TRUSTED_PROXIES (http_proxy.h), already validated; NULL: trust no proxy */
    const char *trusted_proxies;
};

/* Start listening. Returns NULL (logged) on failure, and for a route table the router
 * would misread (an unknown method, a malformed pattern, too many path parameters). */
struct http_server *http_server_start(const struct http_server_config *cfg);
/* Load the HTTPS certificate and key files again and serve them to the next handshake;
 * the listener and open connections stay (http_tls.h). Returns 0, 1 when the server is
 * plain HTTP, -1 when the files did not load (logged; the old certificate stays). */
int http_server_reload_tls(struct http_server *srv);
/* The port actually bound. */
uint16_t http_server_port(const struct http_server *srv);
/* Stop accepting, let in-flight requests finish for up to timeout_s, then close every
 * connection and free the server. */
void http_server_stop(struct http_server *srv, int timeout_s);
/* Whether shutdown has begun (for long-lived streams to end themselves). */
int http_server_stopping(const struct http_server *srv);

/* ---- reading the request ---- */

const char *http_method(const struct http_request *req);
const char *http_path(const struct http_request *req);
/* A path parameter by name ("id" for {id}); NULL when the pattern has none. */
const char *http_param(const struct http_request *req, const char *name);
/* A query argument (decoded), or NULL. */
const char *http_query(struct http_request *req, const char *name);
/* A request header, or NULL. */
const char *http_header(struct http_request *req, const char *name);
/* The parsed JSON body (borrowed), or NULL when the route takes none. */
json_t *http_body(const struct http_request *req);
/* The body as received (borrowed, NUL-terminated; NULL when empty) and its length, for
 * routes without HTTP_BODY_JSON that take another media type (an OAuth form post). */
const char *http_body_raw(const struct http_request *req, size_t *len);
const struct http_route *http_route_of(const struct http_request *req);
const char *http_request_id(const struct http_request *req);
/* The client's address as text ("127.0.0.1"). */
const char *http_client_addr(const struct http_request *req);
/* The caller; NULL on public routes. */
const struct http_principal *http_principal(const struct http_request *req);
/* Set the caller (copied; p->environments is stolen). */
void http_set_principal(struct http_request *req, const struct http_principal *p);
struct http_server *http_server_of(const struct http_request *req);
struct MHD_Connection *http_connection(const struct http_request *req);

/* A state-store connection owned by this request, taken from the pool on first use and
 * given back when the handler returns. NULL when none could be had: then answer with
 * http_reply_db_error(req, DB_RETRY). */
struct db_conn *http_db(struct http_request *req);
/* The same, but when no connection can be had it replies 503 (state store unavailable)
 * itself: the handler then returns without replying. */
struct db_conn *http_db_or_reply(struct http_request *req);

/* ---- replying (exactly once per request) ---- */

/* JSON reply; `body` is stolen. */
void http_reply_json(struct http_request *req, unsigned status, json_t *body);
/* problem+json from the catalogue, with a printf-style detail. */
void http_reply_problem(struct http_request *req, enum qdb_error code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Same, with extension members merged into the problem (`ext` stolen, may be NULL). */
void http_reply_problem_ext(struct http_request *req, enum qdb_error code, json_t *ext,
                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* A validation failure: 400 QDB_E_VALIDATION with a "field" member naming the body
 * member, query parameter, path parameter or header at fault, and a printf-style detail.
 * The one way handlers and the spec parsers report bad input. */
void http_reply_invalid(struct http_request *req, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Map a DB_ code to a problem: DB_RETRY 503; DB_UNIQUE and DB_CONFLICT 409; DB_INVALID 400;
 * anything else 500. */
void http_reply_db_error(struct http_request *req, int db_rc);
/* Bytes with a content type; `data` is copied. */
void http_reply_data(struct http_request *req, unsigned status, const char *content_type,
                     const void *data, size_t len);
/* Bytes with a content type; `data` (malloc'd) is stolen. */
void http_reply_data_take(struct http_request *req, unsigned status, const char *content_type,
                          char *data, size_t len);
/* An empty reply (204, 304, ...). */
void http_reply_empty(struct http_request *req, unsigned status);
/* A prepared libmicrohttpd response (stolen), for streams. The core adds the request id. */
void http_reply_response(struct http_request *req, unsigned status, struct MHD_Response *resp);
/* Add a header to the reply; call before or after the reply function. Copied; there is no
 * limit on their number (when memory runs out the reply becomes a 500, never a reply
 * missing a header). */
void http_reply_header(struct http_request *req, const char *name, const char *value);
/* Count bytes a streamed reply sent, for the access log. */
void http_count_bytes(struct http_request *req, size_t n);

/* ---- helpers shared by handlers ---- */

/* Match `path` against `pattern`; on success fill up to `max` name/value pairs (pointers
 * into pattern and copies of values in `store`) and return the number of params, else -1.
 * Pure; exposed for unit tests. */
struct http_path_param {
    const char *name;
    size_t name_len;
    const char *value;
};
int http_match_pattern(const char *pattern, const char *path, struct http_path_param *params,
                       int max, char *store, size_t store_len);
/* Build a problem+json body: type, title, status, detail, instance (+ ext members).
 * Returns a new object. Pure; exposed for unit tests. */
json_t *http_problem_json(enum qdb_error code, const char *detail, const char *instance,
                          json_t *ext);
/* Whether a client-sent X-Request-Id is acceptable (1..128 of [A-Za-z0-9._:-]). */
int http_request_id_valid(const char *s);

#endif
