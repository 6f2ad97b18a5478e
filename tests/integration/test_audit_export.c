/* The audit export never stalls other requests: with a trail of 30,000 events (~35 MB of
 * JSON Lines) an export held open by a client that reads 1 KB/s must not slow 1,000 other
 * requests (p99 compared with the same requests without it), the export's producer must
 * wait on its full buffer (back-pressure: its connection idles in PostgreSQL instead of
 * reading the whole trail into memory), exports past the limit get 503 audit-busy, a
 * client that hangs up frees its slot, and the server stops promptly and cleanly with slow
 * exports open.
 *
 * The events are inserted with SQL (triggers off), not through audit_record, so that the
 * set-up takes a second: their hashes are placeholders and the chain does not verify, which
 * this test does not need (the export does not verify). */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define EVENTS 30000
#define REQUESTS 1000
#define EXPORT_SLOTS 4 /* EXPORT_CONCURRENT in server/audit/audit_api.c */

static char *url;
static struct th_server srv;
static char *viewer, *operator;

/* ---- a client that reads 1 KB/s ---- */

struct slow_client {
    int fd;
    pthread_t thread;
    atomic_long received;
    atomic_int stop;
    char head[64]; /* the first bytes of the answer */
    atomic_int got_head;
};

static void *slow_main(void *arg)
{
    struct slow_client *c = arg;
    char buf[1024];
    while (!atomic_load(&c->stop)) {
        double t0 = th_now_ms();
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        if (!atomic_load(&c->got_head)) {
            size_t k = (size_t)n < sizeof c->head - 1 ? (size_t)n : sizeof c->head - 1;
            memcpy(c->head, buf, k);
            c->head[k] = '\0';
            atomic_store(&c->got_head, 1);
        }
        atomic_fetch_add(&c->received, (long)n);
        /* the rate is what this client is: 1 KB per second */
        while (!atomic_load(&c->stop) && th_now_ms() - t0 < 1000)
            th_sleep_ms(20);
    }
    return NULL;
}

/* Open an export with a 4 KB receive buffer (so the kernel does not absorb the stream) and
 * start reading it slowly. Returns 0 once the answer's first bytes arrived. */
static int slow_open(struct slow_client *c, const char *query)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    int rcvbuf = 4096;
    setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(srv.port);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    char req[8192];
    int len = snprintf(req, sizeof req,
                       "GET /api/v1/audit/export%s HTTP/1.1\r\nHost: x\r\n"
                       "Authorization: Bearer %s\r\n\r\n",
                       query, operator);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        send(c->fd, req, (size_t)len, MSG_NOSIGNAL) != len) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    pthread_create(&c->thread, NULL, slow_main, c);
    double deadline = th_now_ms() + 10000;
    while (!atomic_load(&c->got_head) && th_now_ms() < deadline)
        th_sleep_ms(10);
    return atomic_load(&c->got_head) ? 0 : -1;
}

/* Hang up (without reading the rest). */
static void slow_close(struct slow_client *c)
{
    if (c->fd < 0)
        return;
    atomic_store(&c->stop, 1);
    shutdown(c->fd, SHUT_RDWR);
    pthread_join(c->thread, NULL);
    close(c->fd);
    c->fd = -1;
}

/* ---- latency of ordinary requests ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* REQUESTS x GET /api/v1/audit?limit=1; returns the p99 in ms, *failures the non-200s. */
static double p99_of_requests(long *failures)
{
    static double ms[REQUESTS];
    *failures = 0;
    for (int i = 0; i < REQUESTS; i++) {
        struct th_resp r;
        double t0 = th_now_ms();
        int rc = th_get(&srv, "/api/v1/audit?limit=1", viewer, &r);
        ms[i] = th_now_ms() - t0;
        if (rc != 0 || r.status != 200)
            (*failures)++;
        th_resp_free(&r);
    }
    qsort(ms, REQUESTS, sizeof ms[0], cmp_double);
    return ms[REQUESTS * 99 / 100 - 1];
}

/* ---- requests over kept-alive connections ----
 * A blocked HTTP thread does not accept new connections (another one does), so a stall
 * shows on connections it already serves: like nginx's upstream keep-alive pool, these
 * requests go round-robin over KEEPALIVE connections opened beforehand. */

#define KEEPALIVE 16

static size_t discard(char *p, size_t size, size_t n, void *cls)
{
    (void)p;
    (void)cls;
    return size * n;
}

static CURL *handles[KEEPALIVE];

static void keepalive_open(const char *token)
{
    static char auth[4096];
    static struct curl_slist *hdrs;
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    hdrs = curl_slist_append(NULL, auth);
    char u[128];
    snprintf(u, sizeof u, "%s/api/v1/me", srv.base);
    for (int i = 0; i < KEEPALIVE; i++) {
        handles[i] = curl_easy_init();
        curl_easy_setopt(handles[i], CURLOPT_URL, u);
        curl_easy_setopt(handles[i], CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(handles[i], CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(handles[i], CURLOPT_TIMEOUT, 30L);
        curl_easy_perform(handles[i]); /* connect now */
    }
}

/* REQUESTS x GET /api/v1/me round-robin over the kept-alive connections; p99 in ms, and
 * the slowest in *max_ms. */
static double p99_keepalive(long *failures, double *max_ms)
{
    static double ms[REQUESTS];
    *failures = 0;
    for (int i = 0; i < REQUESTS; i++) {
        CURL *h = handles[i % KEEPALIVE];
        long status = 0, reconnects = 0;
        double t0 = th_now_ms();
        CURLcode rc = curl_easy_perform(h);
        ms[i] = th_now_ms() - t0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &reconnects);
        if (rc != CURLE_OK || status != 200)
            (*failures)++;
    }
    qsort(ms, REQUESTS, sizeof ms[0], cmp_double);
    *max_ms = ms[REQUESTS - 1];
    return ms[REQUESTS * 99 / 100 - 1];
}

struct full_export {
    pthread_t thread;
    struct th_resp r;
    int rc;
};

static void *full_export_main(void *arg)
{
    struct full_export *f = arg;
    /* one matching event: the step is about the wait on the lock, not the volume */
    f->rc = th_get(&srv, "/api/v1/audit/export?resource_type=test&resource_id=7", operator,
                   &f->r);
    return NULL;
}

/* The state of the export producers' connections in PostgreSQL: how many are running a
 * query right now. */
static long exports_active(void)
{
    return th_sql_long(url,
                       "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                       "'qdb-control-audit' AND state = 'active'",
                       NULL);
}

static long exports_connected(void)
{
    return th_sql_long(url,
                       "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                       "'qdb-control-audit'",
                       NULL);
}

static long export_status(void)
{
    struct th_resp r;
    long st = th_get(&srv, "/api/v1/audit/export?action=nothing.matches", operator, &r) == 0
                  ? r.status
                  : -1;
    th_resp_free(&r);
    return st;
}

int main(void)
{
    url = th_db_create("auditx");
    th_step("a trail of %d events of ~1 KB", EVENTS);
    char sql[1024];
    snprintf(sql, sizeof sql,
             "BEGIN; ALTER TABLE audit_chain_head DISABLE TRIGGER ALL;"
             "INSERT INTO audit_event (seq, time, actor_subject, auth_method, action,"
             " resource_type, resource_id, after, prev_hash, hash)"
             " SELECT g, now() + g * interval '1 microsecond', 'bulk', 'system', 'bulk.write',"
             " 'test', g::text, jsonb_build_object('pad', repeat('x', 1000)),"
             " md5(g::text) || md5(g::text), md5(g::text || 'h') || md5(g::text || 'h')"
             " FROM generate_series(1, %d) g;"
             "UPDATE audit_chain_head SET last_seq = %d;"
             "ALTER TABLE audit_chain_head ENABLE TRIGGER ALL; COMMIT",
             EVENTS, EVENTS);
    /* migrations first: the server makes the tables */
    /* 4 HTTP threads, so that kept-alive connections share them; a statement timeout
     * longer than the lock step below */
    /* and an idle timeout longer than the test: a client this slow leaves the socket
     * without progress for long stretches once the kernel's buffers are full, and the
     * default 30 s would cut it (as it should in production) */
    const char *env[] = {"QDB_HTTP_THREADS=4", "QDB_DB_STATEMENT_TIMEOUT_MS=60000",
                         "QDB_SHUTDOWN_TIMEOUT=2", "QDB_HTTP_IDLE_TIMEOUT=600", NULL};
    curl_global_init(CURL_GLOBAL_ALL);
    if (th_server_start(&srv, url, env, 1) != 0) {
        CHECK(0, "server start");
        return th_done();
    }
    PGconn *pc = PQconnectdb(url);
    PGresult *res = PQexec(pc, sql); /* several statements: the simple query protocol */
    CHECK(PQresultStatus(res) == PGRES_COMMAND_OK, "bulk insert: %s", PQresultErrorMessage(res));
    PQclear(res);
    PQfinish(pc);
    CHECK(th_sql_long(url, "SELECT count(*) FROM audit_event", NULL) == EVENTS, "%d events",
          EVENTS);
    viewer = th_dev_token(&srv, "viewer");
    operator= th_dev_token(&srv, "operator");
    CHECK(viewer && operator, "tokens");
    if (!viewer || !operator)
        goto out;

    th_step("%d requests without an export open", REQUESTS);
    long fail0 = 0, fail1 = 0;
    double deadline;
    double p99_base = p99_of_requests(&fail0);
    CHECK(fail0 == 0, "%ld failures", fail0);

    th_step("an export read at 1 KB/s, and %d requests meanwhile", REQUESTS);
    struct slow_client slow;
    CHECK(slow_open(&slow, "") == 0 && strncmp(slow.head, "HTTP/1.1 200", 12) == 0,
          "the slow export started: %s", slow.head);
    double p99_slow = p99_of_requests(&fail1);
    fprintf(stderr, "   p99 of GET /api/v1/audit?limit=1: %.2f ms alone, %.2f ms beside the "
                    "slow export (%ld bytes read by it so far)\n",
            p99_base, p99_slow, atomic_load(&slow.received));
    CHECK(fail1 == 0, "%ld failures beside the slow export", fail1);
    CHECK(p99_slow < 200.0, "p99 %.2f ms beside the slow export (alone %.2f ms)", p99_slow,
          p99_base);

    th_step("the slow export flows at its own pace");
    deadline = th_now_ms() + 15000;
    while (atomic_load(&slow.received) < 3 * 1024 && th_now_ms() < deadline)
        th_sleep_ms(50);
    CHECK(atomic_load(&slow.received) >= 3 * 1024, "the slow client got %ld bytes",
          atomic_load(&slow.received));

    th_step("back-pressure: the producer waits on its full buffer, not on PostgreSQL");
    /* Its connection is idle between pages; once the buffer is full it stays idle. Poll
     * for an idle moment, then check it stays idle for a while (no page is read while the
     * client takes nothing). */
    CHECK(exports_connected() == 1, "one producer connection (%ld)", exports_connected());
    deadline = th_now_ms() + 10000;
    while (exports_active() != 0 && th_now_ms() < deadline)
        th_sleep_ms(20);
    long active_seen = 0;
    for (int i = 0; i < 50; i++) {
        active_seen += exports_active();
        th_sleep_ms(20);
    }
    CHECK(active_seen <= 2, "the producer stays idle while the client is slow (%ld of 50 "
                            "samples active)",
          active_seen);
    CHECK(atomic_load(&slow.received) < 1024L * 1024L,
          "the slow client got %ld bytes, a small part of the export",
          atomic_load(&slow.received));

    th_step("an export whose SQL waits on a lock holds up no other connection");
    keepalive_open(viewer);
    long fail2 = 0;
    double max_ka = 0, max_locked = 0;
    double p99_ka = p99_keepalive(&fail2, &max_ka);
    CHECK(fail2 == 0, "%ld failures over kept-alive connections", fail2);
    PGconn *locker = PQconnectdb(url);
    res = PQexec(locker, "BEGIN; LOCK TABLE audit_event IN ACCESS EXCLUSIVE MODE");
    CHECK(PQresultStatus(res) == PGRES_COMMAND_OK, "lock: %s", PQresultErrorMessage(res));
    PQclear(res);
    struct full_export fx;
    memset(&fx, 0, sizeof fx);
    pthread_create(&fx.thread, NULL, full_export_main, &fx);
    deadline = th_now_ms() + 10000;
    long waiting = 0;
    while ((waiting = th_sql_long(url,
                                  "SELECT count(*) FROM pg_stat_activity WHERE application_name"
                                  " = 'qdb-control-audit' AND wait_event_type = 'Lock'",
                                  NULL)) < 1 &&
           th_now_ms() < deadline)
        th_sleep_ms(20);
    CHECK(waiting == 1, "the export's page query waits on the lock (%ld)", waiting);
    double p99_locked = p99_keepalive(&fail2, &max_locked);
    fprintf(stderr, "   GET /api/v1/me over %d kept-alive connections: p99 %.2f ms (max %.1f), "
                    "p99 %.2f ms (max %.1f) while an export's SQL waits on a lock\n",
            KEEPALIVE, p99_ka, max_ka, p99_locked, max_locked);
    CHECK(fail2 == 0 && p99_locked < 200.0 && max_locked < 2000.0,
          "p99 %.2f ms, max %.1f ms, %ld failures while the export waits", p99_locked, max_locked,
          fail2);
    res = PQexec(locker, "COMMIT");
    PQclear(res);
    PQfinish(locker);
    pthread_join(fx.thread, NULL);
    long lines = 0;
    for (char *p = fx.r.body; p && (p = strchr(p, '\n')); p++)
        lines++;
    CHECK(fx.rc == 0 && fx.r.status == 200 && lines == 1 && fx.r.body &&
              strstr(fx.r.body, "\"resource_id\":\"7\""),
          "the export then completes: %ld, %ld lines", fx.r.status, lines);
    th_resp_free(&fx.r);
    for (int i = 0; i < KEEPALIVE; i++)
        curl_easy_cleanup(handles[i]);

    th_step("exports past %d at once get 503 audit-busy; a hang-up frees its slot",
            EXPORT_SLOTS);
    struct slow_client more[EXPORT_SLOTS - 1];
    for (int i = 0; i < EXPORT_SLOTS - 1; i++)
        CHECK(slow_open(&more[i], "") == 0 && strncmp(more[i].head, "HTTP/1.1 200", 12) == 0,
              "slow export %d: %s", i + 2, more[i].head);
    struct th_resp r;
    th_get(&srv, "/api/v1/audit/export?resource_type=test&resource_id=7", operator, &r);
    const char *type = json_string_value(json_object_get(r.json, "type"));
    CHECK(th_is_problem(&r, 503) && type && strstr(type, "audit-busy"), "the fifth: %ld %s",
          r.status, r.body);
    th_resp_free(&r);
    slow_close(&slow);
    deadline = th_now_ms() + 10000;
    long st;
    while ((st = export_status()) == 503 && th_now_ms() < deadline)
        th_sleep_ms(20);
    CHECK(st == 200, "after a hang-up a new export gets a slot: %ld", st);
    deadline = th_now_ms() + 10000;
    while (exports_connected() != EXPORT_SLOTS - 1 && th_now_ms() < deadline)
        th_sleep_ms(20);
    CHECK(exports_connected() == EXPORT_SLOTS - 1,
          "the hung-up export's producer closed its connection (%ld open)", exports_connected());

    /* A client this slow keeps its socket full, so libmicrohttpd asks the stream for more
     * (and learns that it ends) only when the socket drains: like any in-flight request it
     * gets QDB_SHUTDOWN_TIMEOUT (2 s here), then its connection is closed, its producer
     * told, and the thread joined before the process exits. */
    th_step("the server stops cleanly with %d slow exports open, within the shutdown timeout",
            EXPORT_SLOTS - 1);
    double t0 = th_now_ms();
    CHECK(th_server_stop(&srv) == 0, "clean stop (exit 0, no sanitizer report)");
    double took = th_now_ms() - t0;
    CHECK(took < 2000 + 3000, "stopped in %.0f ms (shutdown timeout 2 s)", took);
    CHECK(!th_server_log_contains(&srv, "export threads did not end"),
          "every producer thread ended");
    for (int i = 0; i < EXPORT_SLOTS - 1; i++)
        slow_close(&more[i]);
out:
    if (srv.pid > 0)
        th_server_stop(&srv);
    free(viewer);
    free(operator);
    th_db_drop(url);
    free(url);
    curl_global_cleanup();
    return th_done();
}
