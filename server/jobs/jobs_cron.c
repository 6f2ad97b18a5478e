/* Cron expressions, and the schedule leader: one replica at a time (a leader row with a TTL
 * of one lease) fires due schedules and prunes old jobs. */
#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "audit/audit.h"
#include "jobs/jobs_internal.h"
#include "platform/log.h"

/* ---- parser ---- */

struct cron_field {
    const char *name;
    int lo, hi;
    const char *const *names; /* names for lo.. (NULL: none) */
};

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun", "jul",
                                          "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const dow_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

static const struct cron_field fields[5] = {
    {"minute", 0, 59, NULL},          {"hour", 0, 23, NULL},
    {"day of month", 1, 31, NULL},    {"month", 1, 12, month_names},
    {"day of week", 0, 7, dow_names},
};

/* A number or a name at *p; advances *p. Returns 0 or -1. */
static int cron_value(const struct cron_field *f, const char **p, int *out)
{
    const char *s = *p;
    if (isdigit((unsigned char)*s)) {
        long v = 0;
        int digits = 0;
        while (isdigit((unsigned char)*s) && digits < 4) {
            v = v * 10 + (*s - '0');
            s++;
            digits++;
        }
        if (isdigit((unsigned char)*s))
            return -1;
        *p = s;
        *out = (int)v;
        return 0;
    }
    if (f->names && isalpha((unsigned char)s[0]) && isalpha((unsigned char)s[1]) &&
        isalpha((unsigned char)s[2]) && !isalpha((unsigned char)s[3])) {
        for (int i = 0; f->names[i]; i++)
            if (strncasecmp(s, f->names[i], 3) == 0) {
                *out = f->lo + i;
                *p = s + 3;
                return 0;
            }
    }
    return -1;
}

static int parse_field(const struct cron_field *f, const char *text, uint64_t *bits, int *any,
                       char *err, size_t errlen)
{
    *bits = 0;
    *any = strcmp(text, "*") == 0;
    const char *p = text;
    for (;;) {
        int lo, hi, step = 1;
        const char *item = p;
        if (*p == '*') {
            lo = f->lo;
            hi = f->hi;
            p++;
        } else {
            if (cron_value(f, &p, &lo) != 0)
                goto bad;
            hi = lo;
            if (*p == '-') {
                p++;
                if (cron_value(f, &p, &hi) != 0)
                    goto bad;
            }
        }
        if (*p == '/') {
            p++;
            int s;
            if (!isdigit((unsigned char)*p) || cron_value(f, &p, &s) != 0 || s < 1 || s > f->hi) {
                snprintf(err, errlen, "%s: bad step in \"%s\"", f->name, text);
                return -1;
            }
            step = s;
            if (item[0] != '*' && hi == lo)
                hi = f->hi; /* "5/15" means 5-max/15 */
        }
        if (lo < f->lo || lo > f->hi || hi < f->lo || hi > f->hi) {
            snprintf(err, errlen, "%s: %d is out of range %d-%d", f->name,
                     (lo < f->lo || lo > f->hi) ? lo : hi, f->lo, f->hi);
            return -1;
        }
        if (hi < lo) {
            snprintf(err, errlen, "%s: range %d-%d is backwards", f->name, lo, hi);
            return -1;
        }
        for (int v = lo; v <= hi; v += step)
            *bits |= 1ull << v;
        if (*p == '\0')
            return 0;
        if (*p != ',')
            goto bad;
        p++;
    }
bad:
    snprintf(err, errlen, "%s: cannot read \"%s\" (expected *, N, N-M, a list or a /step)", f->name,
             text);
    return -1;
}

int jobs_cron_parse(const char *expr, struct jobs_cron *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    char copy[256];
    if (!expr || strlen(expr) >= sizeof copy) {
        snprintf(err, errlen, "expression is empty or too long");
        return -1;
    }
    snprintf(copy, sizeof copy, "%s", expr);
    char *parts[6];
    int n = 0;
    for (char *p = copy; *p && n < 6;) {
        while (*p == ' ' || *p == '\t')
            *p++ = '\0';
        if (!*p)
            break;
        parts[n++] = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
    }
    if (n != 5) {
        snprintf(err, errlen,
                 "expected 5 fields (minute hour day-of-month month day-of-week), got %s",
                 n > 5 ? "more" : (n == 0 ? "none" : "fewer"));
        return -1;
    }
    uint64_t bits[5];
    int any[5];
    for (int i = 0; i < 5; i++)
        if (parse_field(&fields[i], parts[i], &bits[i], &any[i], err, errlen) != 0)
            return -1;
    out->minute = bits[0];
    out->hour = (uint32_t)bits[1];
    out->dom = (uint32_t)bits[2];
    out->month = (uint32_t)bits[3];
    out->dow = (uint32_t)(bits[4] & 0x7f);
    if (bits[4] & (1u << 7))
        out->dow |= 1u; /* 7 is Sunday too */
    out->dom_any = any[2];
    out->dow_any = any[4];
    return 0;
}

static int day_matches(const struct jobs_cron *c, const struct tm *t)
{
    int dom = (c->dom >> t->tm_mday) & 1u;
    int dow = (c->dow >> t->tm_wday) & 1u;
    if (c->dom_any && c->dow_any)
        return 1;
    if (c->dom_any)
        return dow;
    if (c->dow_any)
        return dom;
    return dom || dow; /* both restricted: either matches (Vixie cron) */
}

int64_t jobs_cron_next(const struct jobs_cron *c, int64_t after)
{
    time_t t = (time_t)((after / 60) * 60 + 60); /* next whole minute */
    time_t limit = t + (time_t)5 * 366 * 24 * 3600;
    struct tm tm;
    while (t < limit) {
        gmtime_r(&t, &tm);
        if (!((c->month >> (tm.tm_mon + 1)) & 1u)) {
            /* first minute of the next month */
            tm.tm_mon += 1;
            tm.tm_mday = 1;
            tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
            t = timegm(&tm);
            continue;
        }
        if (!day_matches(c, &tm)) {
            tm.tm_mday += 1;
            tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
            t = timegm(&tm);
            continue;
        }
        if (!((c->hour >> tm.tm_hour) & 1u)) {
            tm.tm_hour += 1;
            tm.tm_min = tm.tm_sec = 0;
            t = timegm(&tm);
            continue;
        }
        if (!((c->minute >> tm.tm_min) & 1ull)) {
            t += 60;
            continue;
        }
        return (int64_t)t;
    }
    return -1;
}

/* ---- the leader ---- */

static struct schedule_leader {
    char instance[128];
    struct db_settings dbs;
    struct jobs_thread thread;
} leader = {.thread = JOBS_THREAD_INIT};

struct fire_ctx {
    int fired;
};

/* One transaction: the due schedules, locked (SKIP LOCKED: a second leader during a hand-over
 * skips them), each fired at most once per slot: the job's idempotency key is the schedule
 * and its slot, so even two leaders cannot enqueue a slot twice. A schedule whose runs were
 * missed while everything was down fires once, and its next run is computed from now. */
static int fire_due(struct db_conn *c, void *cls)
{
    struct fire_ctx *fc = cls;
    fc->fired = 0;
    PGresult *res = NULL;
    int rows = jobs_store_schedule_due(c, &res);
    if (rows < 0)
        return rows;
    int rc = 0;
    int64_t now = (int64_t)time(NULL);
    for (int r = 0; r < rows; r++) {
        const char *name = PQgetvalue(res, r, 0);
        const char *cron = PQgetvalue(res, r, 1);
        const char *kind = PQgetvalue(res, r, 2);
        int has_slot = !PQgetisnull(res, r, 4);
        int64_t slot = db_get_int64(res, r, 4);
        struct jobs_cron cr;
        char err[256];
        if (jobs_cron_parse(cron, &cr, err, sizeof err) != 0) {
            log_event(LOG_ERROR, "schedule has a bad cron expression; skipped",
                      json_pack("{s:s,s:s}", "schedule", name, "error", err));
            continue;
        }
        int64_t next = jobs_cron_next(&cr, now);
        if (next < 0)
            next = now + 5 * 366 * 24 * 3600; /* never matches: park it far away */
        int64_t job_id = 0;
        if (has_slot) {
            if (!jobs_find_kind(kind)) {
                log_event(LOG_ERROR, "schedule names a kind this build does not have; skipped",
                          json_pack("{s:s,s:s}", "schedule", name, "kind", kind));
            } else {
                char key[400], by[300];
                snprintf(key, sizeof key, "schedule:%s:%lld", name, (long long)slot);
                snprintf(by, sizeof by, "schedule:%s", name);
                json_t *args = json_loads(PQgetvalue(res, r, 3), 0, NULL);
                struct jobs_new jn = {
                    .kind = kind, .args = args, .idempotency_key = key, .created_by = by};
                int existed = 0;
                rc = jobs_enqueue(c, &jn, &job_id, &existed);
                json_decref(args);
                if (rc == JOBS_E_IDEMPOTENCY) {
                    job_id = 0; /* a slot's key reused with other args: the slot fired */
                    rc = 0;
                }
                if (rc < 0)
                    goto out;
                if (!existed) {
                    /* the event of the enqueue, by the schedule, in the firing's transaction */
                    char subject[40];
                    snprintf(subject, sizeof subject, "jobs/%lld", (long long)job_id);
                    struct audit_actor actor = {by, by, "system", NULL};
                    json_t *doc = jobs_get_json(c, job_id);
                    struct audit_event ev = {
                        .room = "jobs", .verb = "enqueued", .subject = subject, .data = doc};
                    rc = audit_event_emit(c, &actor, &ev);
                    json_decref(doc);
                    if (rc < 0)
                        goto out;
                    fc->fired++;
                    log_event(LOG_INFO, "schedule fired",
                              json_pack("{s:s,s:I,s:I}", "schedule", name, "job_id",
                                        (json_int_t)job_id, "slot", (json_int_t)slot));
                }
            }
        }
        rc = jobs_store_schedule_fired(c, name, next, job_id);
        if (rc < 0)
            goto out;
    }
    rc = 0;
out:
    PQclear(res);
    return rc;
}

static void *leader_main(void *arg)
{
    (void)arg;
    struct db_conn *c = NULL;
    int leading = 0;
    time_t last_prune = 0;
    long ttl = jobs_cfg.lease_s;
    double last_connect = -1;
    while (!jobs_thread_stopping(&leader.thread)) {
        if (jobs_thread_db(&c, &leader.dbs, &last_connect)) {
            int rc = jobs_store_leader_acquire(c, "schedule", leader.instance, ttl);
            int now_leading = rc > 0;
            if (rc >= 0 && now_leading != leading) {
                leading = now_leading;
                log_event(LOG_INFO, leading ? "schedule leader: acquired" : "schedule leader: lost",
                          json_pack("{s:s}", "instance", leader.instance));
            }
            if (rc < 0)
                leading = 0;
            if (leading) {
                struct fire_ctx fc = {0};
                if (db_tx(c, fire_due, &fc) >= 0)
                    for (int i = 0; i < fc.fired; i++)
                        jobs_metrics_schedule_fired();
                time_t now = time(NULL);
                if (now - last_prune >= jobs_cfg.prune_interval_s) {
                    last_prune = now;
                    /* small batches, each its own statement: short locks, no long vacuum
                     * debt, and the claim path never waits behind the pruner */
                    long total = 0;
                    for (int i = 0; i < 100 && !jobs_thread_stopping(&leader.thread); i++) {
                        int n = jobs_store_prune(c, jobs_cfg.retention_days, 500);
                        if (n <= 0)
                            break;
                        total += n;
                    }
                    if (total)
                        log_event(LOG_INFO, "pruned finished jobs",
                                  json_pack("{s:I}", "jobs", (json_int_t)total));
                }
            }
        }
        (void)jobs_thread_wait(&leader.thread, (double)jobs_cfg.schedule_tick_ms / 1000.0);
    }
    /* hand over at once instead of letting the TTL run out */
    if (c && leading)
        (void)jobs_store_leader_release(c, "schedule", leader.instance);
    db_conn_close(c);
    return NULL;
}

int jobs_leader_start(const char *instance, const struct db_settings *dbs)
{
    snprintf(leader.instance, sizeof leader.instance, "%s", instance);
    leader.dbs = *dbs;
    return jobs_thread_start(&leader.thread, leader_main, NULL);
}

/* The leader row is deleted on the way out (see leader_main). */
void jobs_leader_stop(void)
{
    jobs_thread_stop(&leader.thread);
}
