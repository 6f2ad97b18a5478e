/* Server-Sent Events on libmicrohttpd without a thread per stream: a stream with nothing to
 * send suspends its connection (MHD_suspend_connection from the content reader) and a
 * broadcast resumes it, so an idle stream costs a socket and a few bytes, never an HTTP
 * thread. A producer thread (e.g. a LISTEN loop) broadcasts and ticks the hub; streams end
 * themselves once the server is stopping, so shutdown is not held up by open consoles. */
#ifndef QDB_PLATFORM_HTTP_SSE_H
#define QDB_PLATFORM_HTTP_SSE_H

#include <stddef.h>

#include "platform/http.h"

struct http_sse_hub;

/* A hub of streams; each stream buffers at most `max_backlog` bytes for a slow client, past
 * which that stream is ended (the client reconnects and resynchronizes). NULL when out of
 * memory. Free with http_sse_hub_free once the HTTP server has stopped (no streams left). */
struct http_sse_hub *http_sse_hub_new(size_t max_backlog);
void http_sse_hub_free(struct http_sse_hub *hub);

/* Reply to `req` with a text/event-stream that stays open and receives every broadcast of
 * `hub`. Call from the route's handler, as its one reply. */
void http_sse_start(struct http_request *req, struct http_sse_hub *hub);

/* Send an event (`event` and `id` may be NULL; `data` must not contain newlines) to every
 * stream of the hub. Thread-safe. */
void http_sse_broadcast(struct http_sse_hub *hub, const char *event, const char *id,
                        const char *data);

/* Call at least every second from a non-HTTP thread: sends a keep-alive comment on streams
 * idle for 15 s (which also notices clients that went away) and ends every stream once the
 * server is stopping. */
void http_sse_tick(struct http_sse_hub *hub);

/* The number of open streams. */
size_t http_sse_count(struct http_sse_hub *hub);

#endif
