/* qdb-control: wiring and life cycle. config -> db -> migrations -> modules -> http ->
 * signals -> reverse. */
#include <jansson.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "auth/auth.h"
#include "flags/flags.h"
#include "inventory/inventory.h"
#include "backup/backup.h"
#include "dr/dr.h"
#include "jobs/jobs.h"
#include "module.h"
#include "platform/config.h"
#include "platform/db.h"
#include "platform/health.h"
#include "platform/http.h"
#include "platform/log.h"
#include "platform/metrics.h"
#include "platform/migrate.h"
#include "routes.h"
#include "wiring/wiring.h"

/* The rooms. Their order does not matter: every init runs before any start (module.h);
 * they are stopped in reverse. */
static const struct qdb_module *const modules[] = {
    NULL, /* keep: lets the list be empty; rooms add `&<room>_module,` below */
    &audit_module, &auth_module, &jobs_module, &wiring_audit_module,
    &flags_module,
    &inventory_module,
    &backup_module,
    &dr_module,
};
#define NMODULES (sizeof modules / sizeof modules[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: qdb-control [command]\n"
               "  serve      run the control plane (default)\n"
               "  migrate    apply database migrations and exit\n"
               "  routes     print the route table as JSON\n"
               "  version    print the version\n");
    for (size_t i = 0; i < NMODULES; i++)
        if (modules[i] && modules[i]->command)
            fprintf(f, "  %s\n",
                    modules[i]->command_usage ? modules[i]->command_usage : modules[i]->command);
    fprintf(f, "Configuration comes from QDB_* environment variables (see README.md).\n");
}

static int print_routes(void)
{
    json_t *a = json_array();
    for (size_t i = 0; i < qdb_routes_count; i++)
        json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:b}", "method", qdb_routes[i].method,
                                           "path", qdb_routes[i].pattern, "role",
                                           http_perm_name(qdb_routes[i].perm), "json_body",
                                           (qdb_routes[i].flags & HTTP_BODY_JSON) != 0));
    char *s = json_dumps(a, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(a);
    puts(s);
    free(s);
    return 0;
}

static struct db_settings settings_of(const struct config *cfg)
{
    struct db_settings s = {cfg->database_url, cfg->db_statement_timeout_ms,
                            cfg->db_connect_timeout_s, "qdb-control"};
    return s;
}

/* Migrations at start-up. PostgreSQL may still be starting (replicas and the database come
 * up together), so connecting is retried for a while; a refused migration is final. */
static int run_migrations(const struct config *cfg, int wait_s)
{
    struct db_settings s = settings_of(cfg);
    struct db_conn *c = NULL;
    for (int waited = 0;; waited++) {
        c = db_conn_open(&s);
        if (c || waited >= wait_s)
            break;
        sleep(1);
    }
    if (!c) {
        log_error("cannot reach the state store at start-up; giving up");
        return -1;
    }
    char err[512] = "";
    int n = migrate_apply(c, err, sizeof err);
    db_conn_close(c);
    if (n < 0) {
        log_event(LOG_ERROR, "migrations refused", json_pack("{s:s}", "reason", err));
        fprintf(stderr, "qdb-control: migrations: %s\n", err);
        return -1;
    }
    log_event(LOG_INFO, "schema current",
              json_pack("{s:i,s:i}", "version", migrate_latest_version(), "applied", n));
    return 0;
}

static void make_instance_id(char *out, size_t n)
{
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    unsigned char rnd[4];
    RAND_bytes(rnd, sizeof rnd);
    snprintf(out, n, "%s-%ld-%02x%02x%02x%02x", host, (long)getpid(), rnd[0], rnd[1], rnd[2],
             rnd[3]);
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Stop the first n modules (those whose init ran), in reverse; a slow stop is logged, so
 * that a shutdown past its timeout names the room that held it. */
static void stop_modules(size_t n)
{
    while (n > 0) {
        const struct qdb_module *m = modules[--n];
        if (!m || !m->stop)
            continue;
        double t0 = mono_ms();
        m->stop();
        double took = mono_ms() - t0;
        log_event(took >= 1000 ? LOG_WARN : LOG_DEBUG, "module stopped",
                  json_pack("{s:s,s:i}", "module", m->name, "ms", (int)took));
    }
}

static const struct qdb_module *module_named(const char *name)
{
    for (size_t i = 0; i < NMODULES; i++)
        if (modules[i] && strcmp(modules[i]->name, name) == 0)
            return modules[i];
    return NULL;
}

/* Whether a command needs module m (m->name is in its command_needs). */
static int command_needs(const struct qdb_module *cmd, const struct qdb_module *m)
{
    for (const char *const *n = cmd->command_needs; n && *n; n++)
        if (strcmp(*n, m->name) == 0)
            return 1;
    return 0;
}

/* A room's command: only the modules it names are configured and initialised. */
static int run_command(const struct qdb_module *cmd, struct qdb_app *app, int argc, char **argv)
{
    for (const char *const *n = cmd->command_needs; n && *n; n++)
        if (!module_named(*n)) {
            log_error("command %s needs module %s, which is not built in", cmd->command, *n);
            return 1;
        }
    size_t inited = 0;
    int status = 1;
    for (; inited < NMODULES; inited++) {
        const struct qdb_module *m = modules[inited];
        if (!m || !command_needs(cmd, m))
            continue;
        if (m->init && m->init(app) != 0) {
            log_error("module %s failed to initialise", m->name);
            goto out;
        }
    }
    status = cmd->run_command(app, argc, argv);
out:
    while (inited > 0) {
        const struct qdb_module *m = modules[--inited];
        if (m && m->stop && command_needs(cmd, m))
            m->stop();
    }
    return status;
}

static int serve(struct config *cfg, struct qdb_app *app, sigset_t *signals)
{
    int status = 1;
    size_t inited = 0;
    struct http_server *http = NULL;
    const char **patterns = calloc(qdb_routes_count + 1, sizeof *patterns);
    for (size_t i = 0; i < qdb_routes_count; i++)
        patterns[i] = qdb_routes[i].pattern;
    if (!patterns || metrics_http_init(patterns, qdb_routes_count) != 0)
        goto out;
    metrics_set_pool(app->pool);

    for (; inited < NMODULES; inited++) {
        const struct qdb_module *m = modules[inited];
        if (m && m->init && m->init(app) != 0) {
            log_error("module %s failed to initialise", m->name);
            goto out;
        }
    }
    if (metrics_registration_failed()) {
        log_error("a metrics collector could not be registered");
        goto out;
    }
    for (size_t i = 0; i < NMODULES; i++) {
        const struct qdb_module *m = modules[i];
        if (m && m->start && m->start(app) != 0) {
            log_error("module %s failed to start", m->name);
            goto out;
        }
    }
    struct http_server_config hc = {
        .host = cfg->listen_host,
        .port = cfg->listen_port,
        .threads = (unsigned)cfg->http_threads,
        .handler_threads = (unsigned)cfg->http_handler_threads,
        .max_connections = (unsigned)cfg->http_max_connections,
        .per_ip_connections = (unsigned)cfg->http_per_ip_connections,
        .idle_timeout_s = (unsigned)cfg->http_idle_timeout_s,
        .web_dir = cfg->web_dir,
        .routes = qdb_routes,
        .nroutes = qdb_routes_count,
        .pool = app->pool,
        .db_wait_ms = cfg->db_connect_timeout_s * 1000,
        .tls_cert_file = cfg->tls_cert_file,
        .tls_key_file = cfg->tls_key_file,
        .trusted_proxies = cfg->trusted_proxies,
    };
    /* readiness is answered from the prober's last check, so /readyz never waits */
    struct db_settings probe_settings = settings_of(cfg);
    if (health_start(&probe_settings) != 0)
        goto out;
    http = http_server_start(&hc);
    if (!http)
        goto out;
    log_event(LOG_INFO, "listening",
              json_pack("{s:s,s:i,s:s,s:s,s:s}", "host", cfg->listen_host, "port",
                        (int)http_server_port(http), "scheme",
                        cfg->tls_cert_file ? "https" : "http", "version", QDB_VERSION, "instance",
                        app->instance_id));
    /* SIGHUP reloads the HTTPS certificate and key (a rotated certificate is served to the
     * next connection; the listener and open connections stay); SIGTERM and SIGINT stop. */
    int sig = 0;
    for (;;) {
        sigwait(signals, &sig);
        if (sig != SIGHUP)
            break;
        if (http_server_reload_tls(http) == 1)
            log_event(LOG_INFO, "SIGHUP ignored: the server is plain HTTP", NULL);
    }
    log_event(LOG_INFO, "shutting down",
              json_pack("{s:s,s:i}", "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT", "timeout_s",
                        cfg->shutdown_timeout_s));
    status = 0;
    for (size_t i = 0; i < NMODULES; i++)
        if (modules[i] && modules[i]->quiesce)
            modules[i]->quiesce();
out:;
    double t0 = mono_ms();
    http_server_stop(http, cfg->shutdown_timeout_s);
    log_event(LOG_DEBUG, "http stopped", json_pack("{s:i}", "ms", (int)(mono_ms() - t0)));
    health_stop();
    stop_modules(inited);
    free(patterns);
    metrics_set_pool(NULL);
    log_event(LOG_INFO, "stopped", json_pack("{s:i}", "ms", (int)(mono_ms() - t0)));
    return status;
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "serve";
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("qdb-control %s\n", QDB_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "routes") == 0)
        return print_routes();

    const struct qdb_module *command_module = NULL;
    for (size_t i = 0; i < NMODULES; i++)
        if (modules[i] && modules[i]->command && strcmp(modules[i]->command, cmd) == 0)
            command_module = modules[i];
    if (strcmp(cmd, "serve") != 0 && strcmp(cmd, "migrate") != 0 && !command_module) {
        fprintf(stderr, "qdb-control: unknown command '%s'\n", cmd);
        usage(stderr);
        return 2;
    }

    /* Signals are taken synchronously by the main thread (sigwait); every thread started
     * from here on inherits the blocked mask. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Each command reads only the settings it uses: a migration Job has no issuer and no
     * audit key, and no command but serve needs the web folder. */
    int serving = strcmp(cmd, "serve") == 0;
    struct config cfg;
    if (config_load(&cfg, CONFIG_DATABASE | (serving ? CONFIG_SERVE : 0)) != 0)
        return 2;
    for (size_t i = 0; i < NMODULES; i++) {
        const struct qdb_module *m = modules[i];
        if (!m || !(serving || (command_module && command_needs(command_module, m))))
            continue;
        if (m->config_load && m->config_load() != 0) {
            config_free(&cfg);
            return 2;
        }
    }
    log_set_level(cfg.log_level);
    db_reach_configure(cfg.db_reconnect_max_ms, cfg.db_outage_log_interval_s);

    int status = 1;
    char instance[128];
    make_instance_id(instance, sizeof instance);
    struct db_settings s = settings_of(&cfg);
    struct qdb_app app = {&cfg, NULL, instance};
    if (run_migrations(&cfg, strcmp(cmd, "migrate") == 0 ? 0 : 30) != 0)
        goto out;
    if (strcmp(cmd, "migrate") == 0) {
        status = 0;
        goto out;
    }
    app.pool = db_pool_new(&s, (unsigned)cfg.db_pool_size);
    if (!app.pool)
        goto out;
    if (command_module)
        status = run_command(command_module, &app, argc - 1, argv + 1);
    else
        status = serve(&cfg, &app, &signals);
out:
    db_pool_free(app.pool);
    config_free(&cfg);
    return status;
}
