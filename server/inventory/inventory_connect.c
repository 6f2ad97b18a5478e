/* Kafka Connect's REST API through libcurl: a connector's status, and provisioning it
 * (PUT /connectors/{name}/config, then polling /connectors/{name}/status until RUNNING).
 * A 409 (Connect is rebalancing), a 5xx and a connection error are retried here with a
 * doubling backoff, then left to the job engine's retry; any other 4xx is final and
 * reported with Connect's own message. The config goes as written: its ${vault:...}
 * placeholders are Connect's config provider's to resolve. */
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "inventory/inventory_internal.h"
#include "platform/buf.h"

static void step(json_t *steps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void step(json_t *steps, const char *fmt, ...)
{
    char text[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (steps)
        json_array_append_new(steps, json_string(text));
}

static size_t collect(char *p, size_t size, size_t n, void *cls)
{
    return buf_append(cls, p, size * n) == 0 ? size * n : 0;
}

/* One request. Returns the HTTP status (0 on a transport error, err set) and the body as
 * JSON in *out (new reference, NULL when it is not JSON). */
static long call(const char *method, const char *url, const char *body, json_t **out, char *err,
                 size_t errlen)
{
    CURL *c = curl_easy_init();
    struct buf b;
    buf_init(&b, 1024 * 1024);
    struct curl_slist *h = curl_slist_append(NULL, "Accept: application/json");
    if (body)
        h = curl_slist_append(h, "Content-Type: application/json");
    long timeout = inv_target_timeout_ms();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    if (rc != CURLE_OK)
        snprintf(err, errlen, "%s %s: %s", method, url, curl_easy_strerror(rc));
    else
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    *out = b.len ? json_loadb(b.data, b.len, 0, NULL) : NULL;
    buf_free(&b);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return status;
}

/* {url}/connectors/{name}{suffix}; connector names are checked as [A-Za-z0-9._-]. */
static void endpoint(char *out, size_t n, const char *url, const char *name, const char *suffix)
{
    size_t ul = strlen(url);
    while (ul > 0 && url[ul - 1] == '/')
        ul--;
    snprintf(out, n, "%.*s/connectors/%s%s", (int)ul, url, name, suffix);
}

/* Connect's own message of an error reply, or the status. */
static void connect_message(long status, const json_t *body, char *out, size_t n)
{
    const char *m = json_string_value(json_object_get(body, "message"));
    snprintf(out, n, "Kafka Connect answered %ld: %s", status, m ? m : "(no message)");
}

int inv_connect_status(const char *url, const char *name, char *state, size_t n, char *err,
                       size_t errlen)
{
    char u[1500];
    endpoint(u, sizeof u, url, name, "/status");
    json_t *body = NULL;
    long st = call("GET", u, NULL, &body, err, errlen);
    int rc = -1;
    if (st == 404)
        rc = 0;
    else if (st == 200) {
        const char *s =
            json_string_value(json_object_get(json_object_get(body, "connector"), "state"));
        snprintf(state, n, "%s", s ? s : "UNKNOWN");
        /* a connector is only RUNNING when each of its tasks is */
        size_t i;
        json_t *t;
        json_array_foreach(json_object_get(body, "tasks"), i, t)
        {
            const char *ts = json_string_value(json_object_get(t, "state"));
            if (ts && strcmp(ts, "RUNNING") != 0 && strcmp(state, "RUNNING") == 0)
                snprintf(state, n, "TASK_%s", ts);
        }
        rc = 1;
    } else if (st)
        connect_message(st, body, err, errlen);
    json_decref(body);
    return rc;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Whether Connect's current config is the inventory's (Connect adds "name"). */
static int same_config(const json_t *have, const json_t *want, const char *name)
{
    json_t *w = json_deep_copy(want);
    json_object_set_new(w, "name", json_string(name));
    json_t *h = json_deep_copy(have);
    if (!json_object_get(h, "name"))
        json_object_set_new(h, "name", json_string(name));
    int same = json_equal(h, w);
    json_decref(w);
    json_decref(h);
    return same;
}

int inv_connect_provision(const char *url, const json_t *connector, int timeout_s, json_t *steps,
                          int *changed, char *err, size_t errlen)
{
    const char *name = json_string_value(json_object_get(connector, "name"));
    const json_t *config = json_object_get(connector, "config");
    char u[1500];
    *changed = 0;
    endpoint(u, sizeof u, url, name, "/config");
    json_t *body = NULL;
    long st = call("GET", u, NULL, &body, err, errlen);
    int up_to_date = st == 200 && same_config(body, config, name);
    json_decref(body);
    body = NULL;
    if (st == 0)
        return -1;
    if (up_to_date) {
        step(steps, "connector %s has the inventory's config", name);
    } else {
        char *text = json_dumps(config, JSON_COMPACT | JSON_SORT_KEYS);
        long delay = 250;
        for (int attempt = 1;; attempt++) {
            st = call("PUT", u, text, &body, err, errlen);
            if (st == 200 || st == 201)
                break;
            if (st >= 400 && st < 500 && st != 409) {
                connect_message(st, body, err, errlen);
                json_decref(body);
                free(text);
                return -2;
            }
            if (st)
                connect_message(st, body, err, errlen);
            step(steps, "PUT %s/config: %s (attempt %d)", name, err, attempt);
            json_decref(body);
            body = NULL;
            if (attempt == 4) {
                free(text);
                return -1;
            }
            sleep_ms(delay);
            delay *= 2;
        }
        free(text);
        json_decref(body);
        step(steps, "%s connector %s (Connect answered %ld)", st == 201 ? "created" : "updated",
             name, st);
        *changed = 1;
    }
    /* poll the status until RUNNING */
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char state[64] = "";
    for (;;) {
        int rc = inv_connect_status(url, name, state, sizeof state, err, errlen);
        if (rc == 1 && strcmp(state, "RUNNING") == 0)
            break;
        if (rc == 1 && (strcmp(state, "FAILED") == 0 || strcmp(state, "TASK_FAILED") == 0)) {
            snprintf(err, errlen, "connector %s is %s on Kafka Connect", name, state);
            return -2;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec >= timeout_s) {
            snprintf(err, errlen, "connector %s not RUNNING after %d s (state %s)", name, timeout_s,
                     state[0] ? state : "unknown");
            return -1;
        }
        sleep_ms(200);
    }
    step(steps, "connector %s is RUNNING", name);
    return 0;
}
