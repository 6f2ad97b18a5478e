/* Two threads of the auth room, each with its own PostgreSQL connection:
 *
 * The listener keeps every replica's API token cache true to the state store. It LISTENs on
 * api_token_changes (migration 0006: a trigger NOTIFYs the token's id on every change that
 * matters) and evicts that token. The cache may be used only while the listener can vouch
 * for it: connected, listening, and its last heartbeat (a SELECT 1 round trip every
 * AUTH_LISTEN_HEARTBEAT_MS on the same connection) sent less than AUTH_LISTEN_LEASE_MS ago.
 * PostgreSQL delivers a listener's notifications before the answer to a later query, so a
 * heartbeat's answer proves that every change committed before it was sent has been heard:
 * a revocation holds on every replica within the lease even when the connection dies
 * silently. When the connection is lost the cache is bypassed at once (every request asks
 * the database); after reconnecting and LISTENing again the cache is cleared before it is
 * trusted again, since changes made meanwhile were not heard.
 *
 * The flusher writes last_used_at: requests only mark a token as used in memory (at most
 * once per QDB_AUTH_LAST_USED_INTERVAL per cached token); every interval (and at stop) the
 * marks are written in one UPDATE, which changes a row only when its last_used_at is older
 * than the interval, so that all replicas together write a token's row at most once per
 * interval. Marks are bounded (AUTH_USAGE_MAX); past that they are dropped and counted. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth/auth_internal.h"
#include "platform/log.h"

#define AUTH_USAGE_MAX 4096

struct auth_cache *auth_token_cache;

struct usage_mark {
    char id[64];
    double at;
};

static struct {
    struct db_settings listen_db, flush_db;
    char listen_app[64];
    pthread_t listener, flusher;
    int listener_started, flusher_started;
    atomic_int stop;
    /* listener state for requests and /metrics */
    atomic_llong lease_until_ms; /* CLOCK_MONOTONIC ms; 0: not usable */
    atomic_int listening;
    atomic_ulong connects, disconnects, notifications;
    /* flusher */
    pthread_mutex_t mu; /* guards marks, nmarks, and the flusher's wake-up */
    pthread_cond_t cv;
    struct usage_mark *marks;
    size_t nmarks;
    atomic_ulong marks_dropped, flushes, rows_written, flush_failures;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int auth_token_cache_usable(void)
{
    long long until = atomic_load_explicit(&S.lease_until_ms, memory_order_acquire);
    return until != 0 && mono_ms() < until;
}

/* ---- the listener ---- */

static void listener_lost(struct db_conn **c, const char *why)
{
    atomic_store(&S.lease_until_ms, 0); /* first: bypass the cache from now on */
    atomic_store(&S.listening, 0);
    atomic_fetch_add(&S.disconnects, 1);
    log_event(LOG_WARN,
              "auth listener lost its connection; API tokens are checked in the "
              "database until it is back",
              json_pack("{s:s}", "reason", why));
    db_conn_close(*c);
    *c = NULL;
}

static void on_notify(const char *payload)
{
    atomic_fetch_add(&S.notifications, 1);
    if (!payload || strcmp(payload, "*") == 0 || !*payload)
        auth_cache_evict(auth_token_cache, NULL);
    else
        auth_cache_evict(auth_token_cache, payload);
}

/* Wait up to ms for the stop flag (polling the socket when fd >= 0). Returns poll's result. */
static int wait_socket(int fd, int ms)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    return poll(fd >= 0 ? &pfd : NULL, fd >= 0 ? 1 : 0, ms);
}

static void *listener_main(void *arg)
{
    (void)arg;
    struct db_conn *c = NULL;
    long long last_try = 0, hb_sent = 0, hb_next = 0;
    int hb_inflight = 0;
    while (!atomic_load(&S.stop)) {
        long long now = mono_ms();
        if (!c) {
            if (last_try && now - last_try < AUTH_LISTEN_RETRY_MS) {
                wait_socket(-1, 50);
                continue;
            }
            last_try = now;
            c = db_conn_open(&S.listen_db);
            if (!c)
                continue;
            if (db_exec_fixed(c, "LISTEN " AUTH_LISTEN_CHANNEL) < 0) {
                db_conn_close(c);
                c = NULL;
                continue;
            }
            /* Changes made while we were not listening were not heard: forget everything,
             * then trust the cache again. */
            auth_cache_evict(auth_token_cache, NULL);
            atomic_fetch_add(&S.connects, 1);
            atomic_store(&S.listening, 1);
            hb_sent = mono_ms();
            hb_inflight = 0;
            hb_next = hb_sent + AUTH_LISTEN_HEARTBEAT_MS;
            atomic_store_explicit(&S.lease_until_ms, hb_sent + AUTH_LISTEN_LEASE_MS,
                                  memory_order_release);
            log_event(LOG_INFO, "auth listener connected; API token cache in use",
                      json_pack("{s:s}", "channel", AUTH_LISTEN_CHANNEL));
            continue;
        }
        PGconn *pg = db_pgconn(c);
        if (!hb_inflight && now >= hb_next) {
            if (!PQsendQuery(pg, "SELECT 1")) {
                listener_lost(&c, "heartbeat could not be sent");
                continue;
            }
            hb_sent = now;
            hb_inflight = 1;
        }
        if (hb_inflight && now - hb_sent > 4 * AUTH_LISTEN_LEASE_MS) {
            listener_lost(&c, "heartbeat unanswered");
            continue;
        }
        if (PQflush(pg) < 0) {
            listener_lost(&c, "heartbeat could not be sent");
            continue;
        }
        long long wait = hb_inflight ? 50 : hb_next - now;
        if (wait < 1)
            wait = 1;
        if (wait > 50)
            wait = 50; /* look at the stop flag often */
        int pr = wait_socket(PQsocket(pg), (int)wait);
        if (pr < 0 && errno != EINTR) {
            listener_lost(&c, "poll failed");
            continue;
        }
        if (pr <= 0)
            continue;
        if (!PQconsumeInput(pg) || PQstatus(pg) != CONNECTION_OK) {
            listener_lost(&c, PQerrorMessage(pg));
            continue;
        }
        /* Notifications first: they were sent before the heartbeat's answer. */
        PGnotify *n;
        while ((n = PQnotifies(pg)) != NULL) {
            on_notify(n->extra);
            PQfreemem(n);
        }
        if (hb_inflight && !PQisBusy(pg)) {
            int ok = 1;
            PGresult *r;
            while ((r = PQgetResult(pg)) != NULL) {
                ok &= PQresultStatus(r) == PGRES_TUPLES_OK;
                PQclear(r);
            }
            while ((n = PQnotifies(pg)) != NULL) {
                on_notify(n->extra);
                PQfreemem(n);
            }
            if (!ok) {
                listener_lost(&c, "heartbeat failed");
                continue;
            }
            hb_inflight = 0;
            hb_next = hb_sent + AUTH_LISTEN_HEARTBEAT_MS;
            atomic_store_explicit(&S.lease_until_ms, hb_sent + AUTH_LISTEN_LEASE_MS,
                                  memory_order_release);
        }
    }
    atomic_store(&S.lease_until_ms, 0);
    atomic_store(&S.listening, 0);
    db_conn_close(c);
    return NULL;
}

/* ---- last_used_at ---- */

void auth_usage_mark(const char *id, int64_t now)
{
    if (!id || !*id)
        return;
    pthread_mutex_lock(&S.mu);
    size_t i = 0;
    for (; i < S.nmarks; i++)
        if (strcmp(S.marks[i].id, id) == 0)
            break;
    if (i < S.nmarks) {
        if (S.marks[i].at < (double)now)
            S.marks[i].at = (double)now;
    } else if (S.marks && S.nmarks < AUTH_USAGE_MAX) {
        snprintf(S.marks[S.nmarks].id, sizeof S.marks[0].id, "%s", id);
        S.marks[S.nmarks].at = (double)now;
        S.nmarks++;
    } else {
        atomic_fetch_add(&S.marks_dropped, 1);
    }
    pthread_mutex_unlock(&S.mu);
}

/* Write the marks taken out of the set. Returns 0, or -1 when the database said no. */
static int flush_marks(struct db_conn **c, struct usage_mark *m, size_t n)
{
    if (n == 0)
        return 0;
    if (!*c)
        *c = db_conn_open(&S.flush_db);
    if (!*c || db_conn_check(*c) != 0)
        return -1;
    const char **ids = calloc(n, sizeof *ids);
    double *at = calloc(n, sizeof *at);
    int rc = -1;
    if (ids && at) {
        for (size_t i = 0; i < n; i++) {
            ids[i] = m[i].id;
            at[i] = m[i].at;
        }
        int rows = auth_store_token_touch_batch(*c, ids, at, n, auth_cfg.last_used_interval_s);
        if (rows >= 0) {
            atomic_fetch_add(&S.rows_written, (unsigned long)rows);
            rc = 0;
        }
    }
    free(ids);
    free(at);
    return rc;
}

static void *flusher_main(void *arg)
{
    (void)arg;
    struct db_conn *c = NULL;
    struct usage_mark *batch = calloc(AUTH_USAGE_MAX, sizeof *batch);
    int last = 0;
    while (batch && !last) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += auth_cfg.last_used_interval_s;
        pthread_mutex_lock(&S.mu);
        if (!atomic_load(&S.stop))
            pthread_cond_timedwait(&S.cv, &S.mu, &ts);
        last = atomic_load(&S.stop);
        size_t n = S.nmarks;
        memcpy(batch, S.marks, n * sizeof *batch);
        S.nmarks = 0;
        pthread_mutex_unlock(&S.mu);
        if (flush_marks(&c, batch, n) != 0) {
            atomic_fetch_add(&S.flush_failures, 1);
            log_event(LOG_WARN, "could not record API token use; will try again",
                      json_pack("{s:i}", "tokens", (int)n));
            for (size_t i = 0; i < n && !last; i++)
                auth_usage_mark(batch[i].id, (int64_t)batch[i].at);
        }
        atomic_fetch_add(&S.flushes, 1);
    }
    free(batch);
    db_conn_close(c);
    return NULL;
}

int auth_sync_start(const struct db_settings *db)
{
    atomic_store(&S.stop, 0);
    S.listen_db = *db;
    S.flush_db = *db;
    /* The listener's name carries the process id, so that an operator (or a test) can tell
     * one replica's listener from another's in pg_stat_activity. */
    snprintf(S.listen_app, sizeof S.listen_app, "qdb-auth-listener-%d", (int)getpid());
    S.listen_db.application_name = S.listen_app;
    S.flush_db.application_name = "qdb-auth-last-used";
    S.marks = calloc(AUTH_USAGE_MAX, sizeof *S.marks);
    if (!S.marks)
        return -1;
    if (pthread_create(&S.listener, NULL, listener_main, NULL) != 0) {
        log_error("auth: cannot start the API token listener");
        return -1;
    }
    S.listener_started = 1;
    if (pthread_create(&S.flusher, NULL, flusher_main, NULL) != 0) {
        log_error("auth: cannot start the last_used_at flusher");
        return -1;
    }
    S.flusher_started = 1;
    return 0;
}

void auth_sync_stop(void)
{
    pthread_mutex_lock(&S.mu);
    atomic_store(&S.stop, 1);
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
    if (S.listener_started)
        pthread_join(S.listener, NULL);
    if (S.flusher_started)
        pthread_join(S.flusher, NULL); /* it writes the pending marks first */
    S.listener_started = S.flusher_started = 0;
    pthread_mutex_lock(&S.mu);
    free(S.marks);
    S.marks = NULL;
    S.nmarks = 0;
    pthread_mutex_unlock(&S.mu);
}

void auth_sync_metrics(struct buf *out)
{
    buf_printf(out,
               "# HELP qdb_auth_token_listener_up Whether the API token cache may be used "
               "(the listener hears every change).\n"
               "# TYPE qdb_auth_token_listener_up gauge\n"
               "qdb_auth_token_listener_up %d\n"
               "# HELP qdb_auth_token_listener_connects_total Connections of the API token "
               "listener (each clears the cache).\n"
               "# TYPE qdb_auth_token_listener_connects_total counter\n"
               "qdb_auth_token_listener_connects_total %lu\n"
               "# HELP qdb_auth_token_listener_disconnects_total Connections of the listener "
               "lost.\n"
               "# TYPE qdb_auth_token_listener_disconnects_total counter\n"
               "qdb_auth_token_listener_disconnects_total %lu\n"
               "# HELP qdb_auth_token_notifications_total API token changes heard.\n"
               "# TYPE qdb_auth_token_notifications_total counter\n"
               "qdb_auth_token_notifications_total %lu\n"
               "# HELP qdb_auth_last_used_flushes_total Rounds of the last_used_at flusher.\n"
               "# TYPE qdb_auth_last_used_flushes_total counter\n"
               "qdb_auth_last_used_flushes_total %lu\n"
               "# HELP qdb_auth_last_used_rows_total api_token rows whose last_used_at was "
               "written.\n"
               "# TYPE qdb_auth_last_used_rows_total counter\n"
               "qdb_auth_last_used_rows_total %lu\n"
               "# HELP qdb_auth_last_used_dropped_total Token uses not recorded (too many "
               "tokens in one interval).\n"
               "# TYPE qdb_auth_last_used_dropped_total counter\n"
               "qdb_auth_last_used_dropped_total %lu\n",
               auth_token_cache_usable(), atomic_load(&S.connects), atomic_load(&S.disconnects),
               atomic_load(&S.notifications), atomic_load(&S.flushes), atomic_load(&S.rows_written),
               atomic_load(&S.marks_dropped));
}
