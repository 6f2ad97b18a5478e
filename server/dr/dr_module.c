/* The DR room's module (module.h): settings, the failover, switchover and drill kinds, the
 * quarterly drill schedule (7.4) and the metrics of the last drills. */
#include <stdio.h>
#include <string.h>

#include "dr/dr_internal.h"
#include "platform/config.h"
#include "platform/log.h"

static const char *pg_bin = "/usr/lib/postgresql/15/bin";
static long max_lag_bytes = 16L * 1024 * 1024;
static const char *drill_cron = "0 3 1 1,4,7,10 *";
static const char *drill_source = "production";
static const char *drill_target = "dr";

const char *dr_pg_bin(void)
{
    return pg_bin;
}
long dr_default_max_lag_bytes(void)
{
    return max_lag_bytes;
}
const char *dr_drill_source_env(void)
{
    return drill_source;
}
const char *dr_drill_target_env(void)
{
    return drill_target;
}

static int dr_config_load(void)
{
    char err[200];
    if (config_str("QDB_DR_PG_BIN", "/usr/lib/postgresql/15/bin", &pg_bin) ||
        config_int("QDB_DR_MAX_LAG_BYTES", 16L * 1024 * 1024, 0, 1L << 40, &max_lag_bytes) ||
        config_str("QDB_DR_DRILL_CRON", "0 3 1 1,4,7,10 *", &drill_cron) ||
        config_str("QDB_DR_DRILL_SOURCE_ENVIRONMENT", "production", &drill_source) ||
        config_str("QDB_DR_DRILL_TARGET_ENVIRONMENT", "dr", &drill_target))
        return -1;
    if (pg_bin[0] != '/' || strstr(pg_bin, "/..") || strpbrk(pg_bin, " '\"\\"))
        return config_error("QDB_DR_PG_BIN", "an absolute path without spaces, quotes or '..'");
    if (strcmp(drill_cron, "off") != 0 && !jobs_cron_valid(drill_cron, err, sizeof err))
        return config_error("QDB_DR_DRILL_CRON", "a five-field cron or \"off\": %s", err);
    if (strcmp(drill_source, drill_target) == 0)
        return config_error("QDB_DR_DRILL_TARGET_ENVIRONMENT",
                            "must differ from QDB_DR_DRILL_SOURCE_ENVIRONMENT");
    return 0;
}

/* 7.4: "Quarterly: full DR drill". */
static struct jobs_schedule_default drill_schedule = {
    .name = "dr.drill.quarterly", .kind = "dr.drill", .args_json = "{\"scheduled\":true}"};

static int init(struct qdb_app *app)
{
    if (dr_jobs_init() != 0 || dr_status_init(app->pool) != 0)
        return -1;
    if (strcmp(drill_cron, "off") != 0) {
        drill_schedule.cron = drill_cron;
        if (jobs_schedule_ensure(&drill_schedule) != 0)
            return -1;
    }
    return 0;
}

static void stop(void)
{
    dr_status_free();
}

const struct qdb_module dr_module = {
    .name = "dr",
    .config_load = dr_config_load,
    .init = init,
    .stop = stop,
};
