/* The flags room's life cycle: settings, init (metrics), start (the first snapshot load,
 * synchronously, so that evaluations are served from the first request; then the
 * listener), stop, and the `flags diff` command (the pre-deploy check of infrastructure
 * design 5.3). */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flags/flags_internal.h"
#include "flags/flags_jobs.h"
#include "flags/flags_store.h"
#include "platform/config.h"
#include "platform/log.h"
#include "platform/metrics.h"

#define FIRST_LOAD_ATTEMPTS 8

struct flags_settings flags_cfg;
static struct db_settings listen_db;

static int flags_config_load(void)
{
    long v;
    memset(&flags_cfg, 0, sizeof flags_cfg);
    if (config_int("QDB_FLAGS_PROD_APPROVAL", 0, 0, 1, &v) != 0)
        return -1;
    flags_cfg.prod_approval = (int)v;
    if (config_int("QDB_FLAGS_STALE_DAYS", 30, 1, 3650, &v) != 0)
        return -1;
    flags_cfg.stale_days = (int)v;
    if (config_int("QDB_FLAGS_COUNTS_FLUSH_INTERVAL", 60, 1, 3600, &v) != 0)
        return -1;
    flags_cfg.counts_flush_s = (int)v;
    if (config_int("QDB_FLAGS_POLL_INTERVAL_MS", 30000, 1000, 3600000, &v) != 0)
        return -1;
    flags_cfg.poll_interval_ms = (int)v;
    return 0;
}

static void collect(struct buf *out, void *cls)
{
    (void)cls;
    flags_snapshot_metrics(out);
    flags_counts_metrics(out);
}

static int flags_init(struct qdb_app *app)
{
    listen_db = (struct db_settings){app->cfg->database_url, app->cfg->db_statement_timeout_ms,
                                     app->cfg->db_connect_timeout_s, "qdb-flags"};
    if (flags_events_init() != 0 || flags_jobs_register() != 0)
        return -1;
    return metrics_register(collect, NULL);
}

static int flags_start(struct qdb_app *app)
{
    (void)app;
    /* The first load before the server listens, tried a few times: a replica that opens
     * without its snapshots answers every evaluation 503 until the listener has loaded
     * them (a store slow to answer at start, as on a loaded machine). */
    for (int attempt = 1; attempt <= FIRST_LOAD_ATTEMPTS && !flags_snapshot_ready(); attempt++) {
        struct db_conn *c = db_conn_open(&listen_db);
        int rc = c ? flags_snapshot_reload(c) : DB_RETRY;
        db_conn_close(c);
        if (rc != 0 && attempt < FIRST_LOAD_ATTEMPTS)
            poll(NULL, 0, 250);
    }
    if (!flags_snapshot_ready())
        log_warn("flags: first load failed; evaluations answer 503 until the listener loads");
    return flags_listener_start(&listen_db);
}

static void flags_stop(void)
{
    flags_listener_stop();
    flags_snapshot_free_all();
    flags_events_free();
    flags_counts_free();
}

/* qdb-control flags diff --environment E FILE: 0 when FILE ({"flags": {key: value}}, the
 * platform's flags file) matches what E serves, 1 with the differences on stdout when it
 * does not, 2 on bad use or when the state store cannot be read. */
static int flags_command(struct qdb_app *app, int argc, char **argv)
{
    const char *env = NULL, *file = NULL;
    if (argc < 2 || strcmp(argv[1], "diff") != 0) {
        fprintf(stderr, "usage: qdb-control flags diff --environment E FILE\n");
        return 2;
    }
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--environment") == 0 && i + 1 < argc)
            env = argv[++i];
        else if (!file && argv[i][0] != '-')
            file = argv[i];
        else {
            fprintf(stderr, "qdb-control: flags diff: unexpected argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!env || !file) {
        fprintf(stderr, "usage: qdb-control flags diff --environment E FILE\n");
        return 2;
    }
    json_error_t jerr;
    json_t *doc = json_load_file(file, 0, &jerr);
    json_t *desired = json_object_get(doc, "flags");
    if (!json_is_object(desired)) {
        fprintf(stderr, "qdb-control: %s: not a flags file {\"flags\": {key: value}} (%s)\n",
                file, doc ? "no flags object" : jerr.text);
        json_decref(doc);
        return 2;
    }
    struct db_conn *c = db_acquire(app->pool, 5000);
    json_t *all = NULL;
    int rc = c ? flags_store_snapshot(c, env, &all) : DB_RETRY;
    if (c)
        db_release(app->pool, c);
    json_t *envdoc = json_object_get(all, env);
    if (rc < 0 || !envdoc) {
        fprintf(stderr, "qdb-control: %s\n",
                rc < 0 ? "cannot read the state store" : "no such environment");
        json_decref(all);
        json_decref(doc);
        return 2;
    }
    struct flags_env *e = flags_env_build(env, envdoc);
    json_decref(all);
    if (!e) {
        json_decref(doc);
        return 2;
    }
    json_t *d = flags_file_differences(e, desired);
    flags_env_free(e);
    json_decref(doc);
    size_t n = json_array_size(d);
    json_t *out = json_pack("{s:s,s:b,s:o}", "environment", env, "equal", n == 0,
                            "differences", d);
    char *text = json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(out);
    if (text)
        puts(text);
    free(text);
    return n ? 1 : 0;
}

static const char *const command_needs[] = {"flags", NULL};

const struct qdb_module flags_module = {
    .name = "flags",
    .config_load = flags_config_load,
    .init = flags_init,
    .start = flags_start,
    .stop = flags_stop,
    .command = "flags",
    .run_command = flags_command,
    .command_usage = "flags diff --environment E FILE   exit 1 when FILE differs from E",
    .command_needs = command_needs,
};
