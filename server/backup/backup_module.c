/* The backup room's module (module.h): settings, kinds, the schedules of the policies, the
 * RPO/RTO check and its metrics, and (start) the WAL stream supervisor. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backup/backup_internal.h"
#include "platform/config.h"
#include "platform/log.h"

static const char *status_cron = "* * * * *";

static int backup_config_load(void)
{
    if (bk_config_load() != 0 || config_str("QDB_BACKUP_STATUS_CRON", "* * * * *", &status_cron))
        return -1;
    char err[200];
    if (strcmp(status_cron, "off") != 0 && !jobs_cron_valid(status_cron, err, sizeof err))
        return config_error("QDB_BACKUP_STATUS_CRON", "a five-field cron or \"off\": %s", err);
    return 0;
}

static struct jobs_schedule_default status_schedule = {
    .name = "backup.status", .kind = "backup.status", .args_json = "{}"};

/* The policies' schedules as the engine's default schedules (created when missing, as the
 * seeded rows of 7.1 need on a first start); every later change goes through the policy
 * routes, which keep the engine's rows in step in their own transactions. */
#define BK_MAX_SEEDED 96
static struct jobs_schedule_default seeded[BK_MAX_SEEDED];
static char *seeded_text[BK_MAX_SEEDED * 3];
static size_t nseeded, ntext;

static char *keep(const char *s)
{
    char *d = s ? strdup(s) : NULL;
    if (d && ntext < sizeof seeded_text / sizeof seeded_text[0])
        seeded_text[ntext++] = d;
    return d;
}

static int seed(const char *component, const char *what, const char *cron, const char *kind,
                const char *args)
{
    if (!cron || nseeded >= BK_MAX_SEEDED)
        return 0;
    char name[120];
    snprintf(name, sizeof name, "backup.%s.%s", component, what);
    struct jobs_schedule_default *s = &seeded[nseeded++];
    s->name = keep(name);
    s->cron = keep(cron);
    s->kind = kind;
    s->args_json = keep(args);
    return s->name && s->cron && s->args_json ? jobs_schedule_ensure(s) : -1;
}

static int seed_policies(struct qdb_app *app)
{
    if (!app->pool)
        return 0;
    struct db_conn *c = db_acquire(app->pool, 10000);
    if (!c) {
        log_error("backup: no state store connection to read the policies");
        return -1;
    }
    json_t *items = NULL;
    int rc = bk_store_policy_list(c, &items);
    db_release(app->pool, c);
    if (rc <= 0) {
        log_error("backup: could not read the policies (%d)", rc);
        return -1;
    }
    size_t i;
    json_t *p;
    rc = 0;
    json_array_foreach(items, i, p)
    {
        const char *comp = json_string_value(json_object_get(p, "component"));
        const char *method = json_string_value(json_object_get(p, "method"));
        if (strcmp(method, "external") == 0 || !json_is_true(json_object_get(p, "enabled")))
            continue;
        json_t *run = json_pack("{s:s++,s:s}", "database",
                                json_string_value(json_object_get(p, "environment")), "/",
                                json_string_value(json_object_get(p, "database")), "policy", comp);
        json_t *pol = json_pack("{s:s}", "policy", comp);
        char *run_text = json_dumps(run, JSON_COMPACT), *pol_text = json_dumps(pol, JSON_COMPACT);
        int dump = strcmp(method, "dump") == 0;
        if (seed(comp, dump ? "dump" : "base",
                 json_string_value(json_object_get(p, "schedule")),
                 dump ? "backup.dump" : "backup.base", run_text) ||
            seed(comp, "verify", json_string_value(json_object_get(p, "verify_schedule")),
                 "backup.verify", pol_text) ||
            seed(comp, "offsite", json_string_value(json_object_get(p, "offsite_schedule")),
                 "backup.offsite", pol_text))
            rc = -1;
        free(run_text);
        free(pol_text);
        json_decref(run);
        json_decref(pol);
    }
    json_decref(items);
    return rc;
}

static int init(struct qdb_app *app)
{
    if (bk_jobs_init() != 0 || bk_status_init() != 0)
        return -1;
    if (strcmp(status_cron, "off") != 0) {
        status_schedule.cron = status_cron;
        if (jobs_schedule_ensure(&status_schedule) != 0)
            return -1;
    }
    return seed_policies(app);
}

static int start(struct qdb_app *app)
{
    return bk_wal_start(app);
}

static void quiesce(void)
{
    bk_wal_quiesce();
}

static void stop(void)
{
    bk_wal_stop();
    bk_status_free();
    /* the engine's table of defaults still points at these until the process ends; stop
     * runs at the very end, after the jobs room stopped */
}

const struct qdb_module backup_module = {
    .name = "backup",
    .config_load = backup_config_load,
    .init = init,
    .start = start,
    .quiesce = quiesce,
    .stop = stop,
};
