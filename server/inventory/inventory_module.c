/* The inventory room's module: its settings, kinds, schedules and metrics (module.h). */
#include <string.h>

#include "inventory/inventory_internal.h"
#include "platform/config.h"

static long target_timeout_s = 5;
const char *inv_drift_cron = "*/5 * * * *";
const char *inv_lag_cron = "* * * * *";

int inv_target_timeout_ms(void)
{
    return (int)target_timeout_s * 1000;
}

/* A default schedule's cron or "off"; jobs_schedule_ensure refuses one that does not
 * parse (start-up fails in init, logged with the schedule's name). */
static int cron_var(const char *name, const char *def, const char **out)
{
    if (config_str(name, def, out) != 0)
        return -1;
    if (!(*out)[0] || strlen(*out) > 100)
        return config_error(name, "a five-field cron expression (UTC) or \"off\"");
    return 0;
}

static int inventory_config_load(void)
{
    return inv_secret_dirs_load() ||
                   config_seconds("QDB_INVENTORY_TARGET_TIMEOUT", 5, 1, 120, &target_timeout_s) ||
                   cron_var("QDB_INVENTORY_DRIFT_CRON", "*/5 * * * *", &inv_drift_cron) ||
                   cron_var("QDB_INVENTORY_LAG_CRON", "* * * * *", &inv_lag_cron)
               ? -1
               : 0;
}

static int init(struct qdb_app *app)
{
    (void)app;
    return inv_jobs_init();
}

static int start(struct qdb_app *app)
{
    return inv_gauges_start(app->pool);
}

static void stop(void)
{
    inv_gauges_stop();
    inv_jobs_stop();
}

const struct qdb_module inventory_module = {
    .name = "inventory",
    .config_load = inventory_config_load,
    .init = init,
    .start = start,
    .stop = stop,
};
