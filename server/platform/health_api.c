#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "platform/db.h"
#include "platform/health.h"
#include "platform/log.h"
#include "platform/metrics.h"
#include "platform/migrate.h"
#include "platform/deadline.h"

extern const char openapi_yaml[];
extern const size_t openapi_yaml_len;

void health_live(struct http_request *req)
{
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

/* ---- readiness, from a prober thread ---- */

static struct readiness_prober {
    pthread_mutex_t mu; /* guards everything below but `thread` */
    pthread_cond_t wake;
    pthread_t thread;
    int started;
    int stop;
    struct db_settings settings;
    int ok;             /* the last check passed */
    char why[256];      /* why the last check failed */
    double last_ok_ms;  /* monotonic time of the last passed check; 0 = never */
} prober = {.mu = PTHREAD_MUTEX_INITIALIZER};

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* One check on the prober's own connection (opened, or reopened, as needed). */
static void probe(struct db_conn **conn)
{
    char why[256] = "";
    int ok = 0;
    if (!*conn)
        *conn = db_conn_open(&prober.settings);
    else if (db_conn_check(*conn) != 0) {
        db_conn_close(*conn);
        *conn = NULL;
    }
    if (!*conn) {
        snprintf(why, sizeof why, "state store unreachable");
    } else {
        int rc = migrate_status(*conn, why, sizeof why);
        if (rc < 0)
            snprintf(why, sizeof why, "state store query failed: %s",
                     rc == DB_RETRY ? "connection lost" : "error");
        ok = rc == 0;
    }
    pthread_mutex_lock(&prober.mu);
    prober.ok = ok;
    if (ok)
        prober.last_ok_ms = mono_ms();
    else
        snprintf(prober.why, sizeof prober.why, "%s", why);
    pthread_mutex_unlock(&prober.mu);
}

static void *prober_main(void *cls)
{
    struct db_conn *conn = cls;
    pthread_mutex_lock(&prober.mu);
    while (!prober.stop) {
        struct timespec until = deadline_after(CLOCK_MONOTONIC, HEALTH_PROBE_INTERVAL_MS / 1000.0);
        while (!prober.stop &&
               pthread_cond_timedwait(&prober.wake, &prober.mu, &until) == 0)
            ;
        if (prober.stop)
            break;
        pthread_mutex_unlock(&prober.mu);
        probe(&conn);
        pthread_mutex_lock(&prober.mu);
    }
    pthread_mutex_unlock(&prober.mu);
    db_conn_close(conn);
    return NULL;
}

int health_start(const struct db_settings *s)
{
    prober.settings = *s;
    prober.settings.application_name = "qdb-control readiness";
    prober.stop = 0;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&prober.wake, &attr);
    pthread_condattr_destroy(&attr);
    struct db_conn *conn = NULL;
    probe(&conn); /* ready (or not) from the first request on */
    if (pthread_create(&prober.thread, NULL, prober_main, conn) != 0) {
        log_error("cannot start the readiness prober");
        db_conn_close(conn);
        pthread_cond_destroy(&prober.wake);
        return -1;
    }
    prober.started = 1;
    return 0;
}

void health_stop(void)
{
    if (!prober.started)
        return;
    pthread_mutex_lock(&prober.mu);
    prober.stop = 1;
    pthread_cond_signal(&prober.wake);
    pthread_mutex_unlock(&prober.mu);
    pthread_join(prober.thread, NULL);
    pthread_cond_destroy(&prober.wake);
    prober.started = 0;
    prober.ok = 0;
    prober.last_ok_ms = 0;
}

void health_ready(struct http_request *req)
{
    pthread_mutex_lock(&prober.mu);
    int ok = prober.ok;
    double last_ok = prober.last_ok_ms;
    char why[256];
    snprintf(why, sizeof why, "%s", prober.why[0] ? prober.why : "not checked yet");
    pthread_mutex_unlock(&prober.mu);
    double age = last_ok > 0 ? mono_ms() - last_ok : -1;
    if (!ok) {
        http_reply_problem(req, QDB_E_NOT_READY, "%s", why);
        return;
    }
    if (age < 0 || age > HEALTH_READY_MAX_AGE_MS) {
        http_reply_problem(req, QDB_E_NOT_READY,
                           "the state store has not answered a readiness check for %.1f s",
                           age / 1000.0);
        return;
    }
    http_reply_json(req, 200,
                    json_pack("{s:s,s:i}", "status", "ready", "schema_version",
                              migrate_latest_version()));
}

void health_metrics(struct http_request *req)
{
    struct buf out;
    buf_init(&out, 0);
    if (metrics_render(&out) != 0) {
        buf_free(&out);
        http_reply_problem(req, QDB_E_INTERNAL, "cannot render metrics");
        return;
    }
    size_t len = out.len;
    http_reply_data_take(req, 200, "text/plain; version=0.0.4; charset=utf-8", buf_take(&out),
                         len);
}

void health_openapi(struct http_request *req)
{
    http_reply_data(req, 200, "application/yaml", openapi_yaml, openapi_yaml_len);
}
