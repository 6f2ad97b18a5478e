/* Default schedules: rooms register theirs in their init (jobs_schedule_ensure), and the jobs
 * room creates the missing ones when it starts, so that no room's migration writes the
 * schedule table. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "jobs/jobs_internal.h"
#include "platform/log.h"

static const struct jobs_schedule_default *defaults[JOBS_MAX_DEFAULT_SCHEDULES];
static size_t ndefaults;

int jobs_schedule_ensure(const struct jobs_schedule_default *s)
{
    struct jobs_cron cron;
    char err[160];
    if (jobs_cron_parse(s->cron, &cron, err, sizeof err) != 0) {
        log_error("default schedule %s: cron '%s': %s", s->name, s->cron, err);
        return -1;
    }
    for (size_t i = 0; i < ndefaults; i++)
        if (strcmp(defaults[i]->name, s->name) == 0) {
            defaults[i] = s;
            return 0;
        }
    if (ndefaults >= JOBS_MAX_DEFAULT_SCHEDULES) {
        log_error("default schedule %s: more than %d; raise JOBS_MAX_DEFAULT_SCHEDULES",
                  s->name, JOBS_MAX_DEFAULT_SCHEDULES);
        return -1;
    }
    defaults[ndefaults++] = s;
    return 0;
}

int jobs_schedules_apply_defaults(struct db_conn *c)
{
    for (size_t i = 0; i < ndefaults; i++) {
        const struct jobs_schedule_default *s = defaults[i];
        if (!jobs_find_kind(s->kind)) {
            log_error("default schedule %s names kind %s, which no room registered", s->name,
                      s->kind);
            return DB_HARD;
        }
        struct jobs_cron cron;
        char err[160];
        jobs_cron_parse(s->cron, &cron, err, sizeof err); /* checked at registration */
        int64_t next = jobs_cron_next(&cron, (int64_t)time(NULL));
        /* Not audited: a default schedule comes with the release, as a migration's rows
         * do; every later change to it is an operator's, through the audited routes. */
        int rc = jobs_store_schedule_insert_missing(c, s->name, s->cron, s->kind,
                                                    s->args_json ? s->args_json : "{}", next);
        if (rc < 0)
            return rc;
        if (rc > 0)
            log_event(LOG_INFO, "default schedule created",
                      json_pack("{s:s,s:s,s:s}", "name", s->name, "cron", s->cron, "kind",
                                s->kind));
    }
    return 0;
}

int jobs_cron_valid(const char *expr, char *err, size_t errlen)
{
    struct jobs_cron cron;
    return expr && jobs_cron_parse(expr, &cron, err, errlen) == 0;
}

int jobs_schedule_put(struct db_conn *c, const char *name, const char *cron, const char *kind,
                      const json_t *args, int enabled, char *err, size_t errlen)
{
    struct jobs_cron parsed;
    if (jobs_cron_parse(cron, &parsed, err, errlen) != 0)
        return -1;
    int64_t next = jobs_cron_next(&parsed, (int64_t)time(NULL));
    int rc = jobs_store_schedule_upsert(c, name, cron, kind, args, enabled, next);
    return rc < 0 ? rc : 0;
}

int jobs_schedule_remove(struct db_conn *c, const char *name)
{
    return jobs_store_schedule_delete(c, name);
}
