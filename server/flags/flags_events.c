/* GET /api/v1/flags/events?environment=: Server-Sent Events that push an environment's
 * new configuration ETag each time a reload changes it, for clients that prefer push to
 * polling. One hub per environment, made on first use; the listener thread ticks them. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "flags/flags_internal.h"
#include "platform/http_sse.h"
#include "platform/queryspec.h"

#define MAX_HUBS 32

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char env[40];
    struct http_sse_hub *hub;
} hubs[MAX_HUBS];
static size_t nhubs;

int flags_events_init(void)
{
    return 0;
}

static struct http_sse_hub *hub_for(const char *env, int create)
{
    struct http_sse_hub *h = NULL;
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < nhubs; i++)
        if (strcmp(hubs[i].env, env) == 0)
            h = hubs[i].hub;
    if (!h && create && nhubs < MAX_HUBS) {
        h = http_sse_hub_new(64 * 1024);
        if (h) {
            snprintf(hubs[nhubs].env, sizeof hubs[0].env, "%s", env);
            hubs[nhubs++].hub = h;
        }
    }
    pthread_mutex_unlock(&mu);
    return h;
}

void flags_events_changed(const char *environment, const char *etag)
{
    struct http_sse_hub *h = hub_for(environment, 0);
    if (!h)
        return;
    json_t *d = json_pack("{s:s,s:s}", "environment", environment, "etag", etag);
    char *text = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    if (text)
        http_sse_broadcast(h, "flags-changed", NULL, text);
    free(text);
}

void flags_events_tick(void)
{
    pthread_mutex_lock(&mu);
    size_t n = nhubs;
    pthread_mutex_unlock(&mu);
    for (size_t i = 0; i < n; i++)
        http_sse_tick(hubs[i].hub);
}

void flags_events_free(void)
{
    pthread_mutex_lock(&mu);
    for (size_t i = 0; i < nhubs; i++)
        http_sse_hub_free(hubs[i].hub);
    nhubs = 0;
    pthread_mutex_unlock(&mu);
}

void flags_api_events(struct http_request *req)
{
    const char *env = NULL;
    const struct qspec_param q[] = {
        {"environment", QSPEC_STRING, 1, 1, 32, NULL, &env, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0 || auth_require_environment(req, env) != 0)
        return;
    struct flags_env *e = flags_snapshot_acquire(env);
    if (!e) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no environment %s", env);
        return;
    }
    char etag[24];
    snprintf(etag, sizeof etag, "%s", e->config_etag);
    flags_env_release(e);
    struct http_sse_hub *h = hub_for(env, 1);
    if (!h) {
        http_reply_problem(req, QDB_E_INTERNAL, "no more event hubs");
        return;
    }
    http_reply_header(req, "ETag", etag);
    http_sse_start(req, h);
}
