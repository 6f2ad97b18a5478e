/* JSON-lines logging to stderr: one line per event, written with one write() so that lines
 * from different threads never interleave. Secrets must never be passed here. */
#ifndef QDB_PLATFORM_LOG_H
#define QDB_PLATFORM_LOG_H

#include <jansson.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

/* Parse "debug", "info", "warn", "error". Returns 0 or -1. */
int log_level_parse(const char *s, enum log_level *out);
/* Set the minimum level written (default info). */
void log_set_level(enum log_level level);
/* Whether a message at `level` would be written. */
int log_enabled(enum log_level level);
/* Write one event: {"time", "level", "msg", ...fields}. `fields` (may be NULL) is stolen. */
void log_event(enum log_level level, const char *msg, json_t *fields);
/* printf-style convenience for messages without structured fields. */
void log_msgf(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msgf(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msgf(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msgf(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msgf(LOG_ERROR, __VA_ARGS__)

/* A rate limit for a line that can recur many times a second (a failing dependency, an
 * exhausted pool): at most one line per interval is written, and the next line written says
 * how many were held back meanwhile. Zero-initialise it (static storage); thread-safe. */
struct log_limit {
    _Atomic long long next_ms; /* monotonic ms before which occurrences are held back */
    _Atomic unsigned long held;
};
/* Whether this occurrence is to be written now. When it is (1), *held (may be NULL) gets
 * the number of occurrences held back since the last one written; when not (0), the
 * occurrence is counted. */
int log_limit_allow(struct log_limit *l, int interval_ms, unsigned long *held);

/* One access-log line, written without allocating (it is on every request's path). Strings
 * may hold any bytes: they are escaped so the line stays valid JSON. */
struct log_access {
    const char *method, *path, *route, *request_id, *client;
    unsigned status;
    unsigned long long bytes;
    double duration_ms;
    int early; /* the connection ended before the reply was sent */
};
void log_access(const struct log_access *a);

/* Format the current UTC time as RFC 3339 with milliseconds into out (>= 32 bytes). */
void log_time_now(char *out, size_t n);

#endif
