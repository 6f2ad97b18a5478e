/* Diagnostic kinds, always built in and admin-only: they exercise the engine end to end
 * (tests, benchmarks, an operator checking a replica) without touching any domain. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "jobs/jobs_internal.h"
#include "platform/jsonspec.h"

/* noop: {log?: bool}. With log, one job_log line per run: a witness that tests count to
 * prove a job ran exactly once. */
static int noop_validate(json_t *args, char *err, size_t errlen)
{
    int log = 0;
    const struct jspec_field f[] = {{"log", JSPEC_BOOL, 0, 0, 0, NULL, &log, NULL}, JSPEC_END};
    return jspec_parse(NULL, args, f, err, errlen);
}

static enum jobs_outcome noop_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    (void)result;
    if (json_is_true(json_object_get(args, "log")))
        jobs_log(ctx, "info", "noop ran (attempt %d)", jobs_attempt(ctx));
    return JOBS_OK;
}

/* sleep: {seconds: number, group?: string, log?: bool}; heartbeats, reports progress, stops
 * on cancel. With log, a job_log line at the start, at each progress step and at the end:
 * a live log to watch (the console's test does), without a line per sleep by default. */
static int sleep_validate(json_t *args, char *err, size_t errlen)
{
    json_t *secs = NULL;
    const char *group = NULL;
    int log = 0;
    const struct jspec_field f[] = {
        {"seconds", JSPEC_ANY, 1, 0, 0, NULL, &secs, NULL},
        {"group", JSPEC_STRING, 0, 1, 200, NULL, &group, NULL},
        {"log", JSPEC_BOOL, 0, 0, 0, NULL, &log, NULL},
        JSPEC_END,
    };
    if (jspec_parse(NULL, args, f, err, errlen) != 0)
        return -1;
    if (!json_is_number(secs) || json_number_value(secs) < 0 || json_number_value(secs) > 86400) {
        snprintf(err, errlen, "seconds must be a number from 0 to 86400");
        return -1;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static enum jobs_outcome sleep_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    double total = json_number_value(json_object_get(args, "seconds"));
    int log = json_is_true(json_object_get(args, "log"));
    double start = now_s(), last_progress = start;
    if (log)
        jobs_log(ctx, "info", "sleeping for %.1f s", total);
    for (;;) {
        double done = now_s() - start;
        if (done >= total)
            break;
        if (jobs_heartbeat(ctx) != 0) {
            jobs_log(ctx, "info", "sleep stopped after %.1f s", done);
            return JOBS_CANCELLED;
        }
        if (now_s() - last_progress >= 1.0) {
            last_progress = now_s();
            if (log)
                jobs_log(ctx, "info", "slept %.1f of %.1f s", done, total);
            if (jobs_progress(ctx, (int)(100.0 * done / (total > 0 ? total : 1)), "sleeping") != 0)
                return JOBS_CANCELLED;
        }
        double left = total - done;
        double step = left < 0.05 ? left : 0.05;
        struct timespec ts = {0, (long)(step * 1e9)};
        nanosleep(&ts, NULL);
    }
    if (log)
        jobs_log(ctx, "info", "slept %.1f s, done", total);
    *result = json_pack("{s:f}", "slept", total);
    return JOBS_OK;
}

/* fail: {permanent?: bool, times?: int, message?: string}: fails the first `times` attempts
 * (every attempt without it), permanently or retryably. */
static int fail_validate(json_t *args, char *err, size_t errlen)
{
    int permanent = 0;
    int64_t times = 0;
    const char *msg = NULL;
    const struct jspec_field f[] = {
        {"permanent", JSPEC_BOOL, 0, 0, 0, NULL, &permanent, NULL},
        {"times", JSPEC_INT, 0, 0, 1000, NULL, &times, NULL},
        {"message", JSPEC_STRING, 0, 0, 500, NULL, &msg, NULL},
        JSPEC_END,
    };
    return jspec_parse(NULL, args, f, err, errlen);
}

static enum jobs_outcome fail_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    json_t *times = json_object_get(args, "times");
    if (json_is_integer(times) && jobs_attempt(ctx) > json_integer_value(times)) {
        *result = json_pack("{s:i}", "succeeded_on_attempt", jobs_attempt(ctx));
        return JOBS_OK;
    }
    const char *msg = json_string_value(json_object_get(args, "message"));
    jobs_error(ctx, "%s (attempt %d)", msg ? msg : "diagnostic failure", jobs_attempt(ctx));
    return json_is_true(json_object_get(args, "permanent")) ? JOBS_FAIL : JOBS_RETRY;
}

static const struct jobs_kind k_noop = {
    .kind = "noop",
    .max_attempts = 3,
    .timeout_seconds = 60,
    .direct_role = HTTP_ADMIN,
    .validate = noop_validate,
    .run = noop_run,
};
static const struct jobs_kind k_sleep = {
    .kind = "sleep",
    .max_attempts = 3,
    .timeout_seconds = 86400,
    .direct_role = HTTP_ADMIN,
    .validate = sleep_validate,
    .run = sleep_run,
};
/* sleep under a concurrency limit: at most 2 per args.group across all replicas. */
static const struct jobs_kind k_sleep_limited = {
    .kind = "sleep.limited",
    .max_attempts = 3,
    .timeout_seconds = 86400,
    .max_running = 2,
    .concurrency_arg = "group",
    .direct_role = HTTP_ADMIN,
    .validate = sleep_validate,
    .run = sleep_run,
};
static const struct jobs_kind k_fail = {
    .kind = "fail",
    .max_attempts = 3,
    .timeout_seconds = 60,
    .direct_role = HTTP_ADMIN,
    .validate = fail_validate,
    .run = fail_run,
};

int jobs_kinds_register_builtin(void)
{
    return jobs_register_kind(&k_noop) || jobs_register_kind(&k_sleep) ||
                   jobs_register_kind(&k_sleep_limited) || jobs_register_kind(&k_fail)
               ? -1
               : 0;
}
