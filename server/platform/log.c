#include "platform/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int min_level = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_set_level(enum log_level level)
{
    atomic_store(&min_level, (int)level);
}

int log_enabled(enum log_level level)
{
    return (int)level >= atomic_load(&min_level);
}

void log_time_now(char *out, size_t n)
{
    /* Every access line asks for the time: the seconds part is formatted once a second per
     * thread (gmtime_r and strftime cost more than the rest of the line). */
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char base[24];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = ts.tv_sec;
    }
    long ms = ts.tv_nsec / 1000000;
    if (n >= 29) {
        size_t len = strlen(base);
        memcpy(out, base, len);
        out[len] = '.';
        out[len + 1] = (char)('0' + ms / 100);
        out[len + 2] = (char)('0' + ms / 10 % 10);
        out[len + 3] = (char)('0' + ms % 10);
        out[len + 4] = 'Z';
        out[len + 5] = '\0';
    } else {
        snprintf(out, n, "%.19s.%03dZ", base, (int)ms);
    }
}

void log_event(enum log_level level, const char *msg, json_t *fields)
{
    if (!log_enabled(level)) {
        json_decref(fields);
        return;
    }
    char now[40];
    log_time_now(now, sizeof now);
    json_t *o = json_object();
    json_object_set_new(o, "time", json_string(now));
    json_object_set_new(o, "level", json_string(level_names[level]));
    json_object_set_new(o, "msg", json_string(msg ? msg : ""));
    if (fields)
        json_object_update_missing(o, fields);
    json_decref(fields);
    char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!line)
        return;
    size_t len = strlen(line);
    line[len] = '\n'; /* replace the NUL: write() takes a length */
    ssize_t off = 0;
    while ((size_t)off < len + 1) {
        ssize_t w = write(STDERR_FILENO, line + off, len + 1 - (size_t)off);
        if (w <= 0)
            break;
        off += w;
    }
    free(line);
}

void log_msgf(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_event(level, msg, NULL);
}

int log_limit_allow(struct log_limit *l, int interval_ms, unsigned long *held)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long now = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    long long next = atomic_load(&l->next_ms);
    /* Only the thread that moves the window forward writes: the others count. */
    if (now < next || !atomic_compare_exchange_strong(&l->next_ms, &next, now + interval_ms)) {
        atomic_fetch_add(&l->held, 1);
        return 0;
    }
    unsigned long n = atomic_exchange(&l->held, 0);
    if (held)
        *held = n;
    return 1;
}

/* Append s as a JSON string body (without quotes) to out[*n..cap), escaping quotes,
 * backslashes, control bytes and bytes >= 0x80 (as \u00XX: logs must stay valid UTF-8 even
 * when a request path is not). Writes at most `max` bytes: long values are cut. */
static void put_escaped(char *out, size_t cap, size_t *n, const char *s, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    size_t limit = *n + max < cap ? *n + max : cap;
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (*n + 7 >= limit)
            return;
        if (c == '"' || c == '\\') {
            out[(*n)++] = '\\';
            out[(*n)++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            memcpy(out + *n, "\\u00", 4);
            out[*n + 4] = hex[c >> 4];
            out[*n + 5] = hex[c & 15];
            *n += 6;
        } else {
            out[(*n)++] = (char)c;
        }
    }
}

static void put_raw(char *out, size_t cap, size_t *n, const char *s)
{
    size_t len = strlen(s);
    if (*n + len < cap) {
        memcpy(out + *n, s, len);
        *n += len;
    }
}

void log_access(const struct log_access *a)
{
    if (!log_enabled(LOG_INFO))
        return;
    char line[2048], num[96]; /* every field is capped below, so the line always fits */
    size_t n = 0;
    char now[40];
    log_time_now(now, sizeof now);
    put_raw(line, sizeof line, &n, "{\"time\":\"");
    put_raw(line, sizeof line, &n, now);
    put_raw(line, sizeof line, &n, "\",\"level\":\"info\",\"msg\":\"request\",\"method\":\"");
    put_escaped(line, sizeof line, &n, a->method, 32);
    put_raw(line, sizeof line, &n, "\",\"path\":\"");
    put_escaped(line, sizeof line, &n, a->path, 1024);
    put_raw(line, sizeof line, &n, "\",\"route\":\"");
    put_escaped(line, sizeof line, &n, a->route, 256);
    snprintf(num, sizeof num, "\",\"status\":%u,\"bytes\":%llu,\"duration_ms\":%.3f", a->status,
             a->bytes, a->duration_ms);
    put_raw(line, sizeof line, &n, num);
    put_raw(line, sizeof line, &n, ",\"request_id\":\"");
    put_escaped(line, sizeof line, &n, a->request_id, 256);
    put_raw(line, sizeof line, &n, "\",\"client\":\"");
    put_escaped(line, sizeof line, &n, a->client, 64);
    put_raw(line, sizeof line, &n, a->early ? "\",\"terminated\":\"early\"}\n" : "\"}\n");
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(STDERR_FILENO, line + off, n - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
}
