/* The state store goes away under load and comes back (a private cluster with
 * log_connections on). 16 clients list jobs all along; the outage must be quiet and gentle:
 *   - a handful of log lines for the whole outage (the first failure, a summary per
 *     QDB_DB_OUTAGE_LOG_INTERVAL, the recovery), not one per request;
 *   - requests get their 503 at once, and no other 5xx;
 *   - a few connects per second while PostgreSQL is away, not one per request;
 *   - when it returns, PostgreSQL sees about one connection per pool slot and standalone
 *     thread, not a storm; /readyz is 200 again within seconds; no 5xx afterwards;
 *   - SIGTERM during an outage exits within QDB_SHUTDOWN_TIMEOUT.
 * Timeline: 5 s of load, 5 s of outage, recovery, 5 s of load, a second outage + SIGTERM. */
#include <curl/curl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "harness.h"

#define CLIENTS 16
#define POOL 8
#define WORKERS 4
/* Connections of their own besides the pool: the job workers, the jobs listener and
 * maintenance threads, the schedule leader, the audit room's sequencing sweeper and its
 * outbox relay. */
#define STANDALONE (WORKERS + 5)
#define SHUTDOWN_S 3
#define LOAD_MS 5000
#define OUTAGE_MS 5000

enum phase { P_BEFORE, P_OUTAGE, P_AFTER, P_END, P__N };
static const char *const phase_names[P__N] = {"before", "outage", "after", "shutdown"};

struct tally {
    unsigned long ok, s503, s5xx, other, transport;
    double max_ms, max_503_ms;
};

static struct {
    const struct th_server *srv;
    char auth[4096];
    atomic_int phase;
    atomic_int stop;
    pthread_mutex_t mu;
    struct tally jobs[P__N];
    struct tally health[P__N];
    char first_5xx[512];
} L = {.mu = PTHREAD_MUTEX_INITIALIZER};

static size_t discard(char *p, size_t size, size_t n, void *cls)
{
    (void)p;
    (void)cls;
    return size * n;
}

/* A request that began in one phase and ended in another belongs to the outage when either
 * end is in it (a 503 then is expected), else to the phase it ended in. */
static enum phase phase_of(int start, int end)
{
    if (start == P_OUTAGE || end == P_OUTAGE)
        return P_OUTAGE;
    return (enum phase)end;
}

static void record(struct tally *t, int start, long status, int transport, double ms,
                   const char *what)
{
    enum phase ph = phase_of(start, atomic_load(&L.phase));
    pthread_mutex_lock(&L.mu);
    struct tally *x = &t[ph];
    if (transport)
        x->transport++;
    else if (status >= 200 && status < 300)
        x->ok++;
    else if (status == 503)
        x->s503++;
    else if (status >= 500)
        x->s5xx++;
    else
        x->other++;
    if (ms > x->max_ms)
        x->max_ms = ms;
    if (status == 503 && ms > x->max_503_ms)
        x->max_503_ms = ms;
    if (!transport && status >= 500 && status != 503 && !L.first_5xx[0])
        snprintf(L.first_5xx, sizeof L.first_5xx, "%s: %ld in phase %s", what, status,
                 phase_names[ph]);
    pthread_mutex_unlock(&L.mu);
}

/* One keep-alive client, like a load generator's connection. */
static void *client_main(void *arg)
{
    const char *path = arg;
    CURL *c = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "%s%s", L.srv->base, path);
    struct curl_slist *h = NULL;
    int is_jobs = strstr(path, "/api/") != NULL;
    if (is_jobs)
        h = curl_slist_append(h, L.auth);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    while (!atomic_load(&L.stop)) {
        int start = atomic_load(&L.phase);
        double t0 = th_now_ms();
        CURLcode rc = curl_easy_perform(c);
        double ms = th_now_ms() - t0;
        long status = 0;
        if (rc == CURLE_OK)
            curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        record(is_jobs ? L.jobs : L.health, start, status, rc != CURLE_OK, ms, path);
        if (rc != CURLE_OK || !is_jobs)
            th_sleep_ms(rc != CURLE_OK ? 50 : 20); /* health: a probe's pace, not a flood */
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* Lines of `path` in [from, to) (to < 0: to the end) that contain `needle` (NULL: every
 * line) and none of `skip` (may be NULL). Lines that `echo` asks for are printed. */
static int count_lines(const char *path, long from, long to, const char *needle, const char *skip,
                       int echo)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    fseek(f, from, SEEK_SET);
    char line[16384];
    int n = 0;
    while ((to < 0 || ftell(f) < to) && fgets(line, sizeof line, f)) {
        if (needle && !strstr(line, needle))
            continue;
        if (skip && strstr(line, skip))
            continue;
        n++;
        if (echo)
            fprintf(stderr, "   | %.300s", line);
    }
    fclose(f);
    return n;
}

static long readyz_status(const struct th_server *s)
{
    struct th_resp r;
    if (th_get(s, "/readyz", NULL, &r) != 0)
        return -1;
    long st = r.status;
    th_resp_free(&r);
    return st;
}

static void print_tallies(void)
{
    for (int p = 0; p < P__N; p++)
        fprintf(stderr,
                "   %-8s jobs: %lu ok, %lu x 503 (max %.0f ms), %lu other 5xx, %lu other, "
                "%lu transport, max %.0f ms | healthz: %lu ok, %lu not ok, max %.0f ms\n",
                phase_names[p], L.jobs[p].ok, L.jobs[p].s503, L.jobs[p].max_503_ms, L.jobs[p].s5xx,
                L.jobs[p].other, L.jobs[p].transport, L.jobs[p].max_ms, L.health[p].ok,
                L.health[p].s503 + L.health[p].s5xx + L.health[p].other, L.health[p].max_ms);
}

int main(void)
{
    struct th_pg pg;
    if (th_pg_private_start(&pg) != 0) {
        CHECK(0, "private PostgreSQL starts");
        return th_done();
    }
    char pglog[300];
    th_pg_private_log(&pg, pglog, sizeof pglog);
    char *admin_url = th_pg_private_db(&pg, "postgres");
    PQclear(th_sql(admin_url, "ALTER SYSTEM SET log_connections = on", NULL));
    PQclear(th_sql(admin_url, "SELECT pg_reload_conf()", NULL));
    char *url = th_pg_private_db(&pg, "outage");
    struct th_server s;
    char pool_env[64], workers_env[32], shutdown_env[48];
    snprintf(pool_env, sizeof pool_env, "QDB_DB_POOL_SIZE=%d", POOL);
    snprintf(workers_env, sizeof workers_env, "QDB_WORKERS=%d", WORKERS);
    snprintf(shutdown_env, sizeof shutdown_env, "QDB_SHUTDOWN_TIMEOUT=%d", SHUTDOWN_S);
    const char *env[] = {"QDB_DB_CONNECT_TIMEOUT=2",
                         "QDB_DB_OUTAGE_LOG_INTERVAL=2",
                         pool_env,
                         workers_env,
                         shutdown_env,
                         NULL};
    pthread_t threads[CLIENTS + 1];
    int started = 0;
    if (th_server_start(&s, url, env, 1) != 0) {
        CHECK(0, "server starts");
        goto out;
    }
    char *token = th_dev_token(&s, "viewer");
    CHECK(token != NULL, "a viewer token");
    if (!token)
        goto stop;
    snprintf(L.auth, sizeof L.auth, "Authorization: Bearer %s", token);
    free(token);
    PQclear(th_sql(url,
                   "INSERT INTO job (kind, args, created_by, max_attempts, timeout_seconds) "
                   "SELECT 'noop', '{}', 'test', 1, 60 FROM generate_series(1, 50)",
                   NULL));
    L.srv = &s;

    th_step("%d clients list jobs for %d s", CLIENTS, LOAD_MS / 1000);
    for (int i = 0; i < CLIENTS; i++)
        if (pthread_create(&threads[started], NULL, client_main, "/api/v1/jobs?limit=20") == 0)
            started++;
    if (pthread_create(&threads[started], NULL, client_main, "/healthz") == 0)
        started++;
    th_sleep_ms(LOAD_MS); /* the load's length is the point here, not a wait for a state */

    th_step("PostgreSQL stops for %d s under the load", OUTAGE_MS / 1000);
    long log_at_stop = file_size(s.log);
    long attempts_before = th_metric(&s, "qdb_db_connect_attempts_total");
    atomic_store(&L.phase, P_OUTAGE);
    double t_stop = th_now_ms();
    CHECK(th_pg_private_stop(&pg) == 0, "PostgreSQL stopped");
    int saw_503 = 0;
    while (th_now_ms() - t_stop < OUTAGE_MS) {
        saw_503 = saw_503 || readyz_status(&s) == 503;
        th_sleep_ms(100);
    }
    CHECK(saw_503, "/readyz says 503 during the outage");
    long attempts_during = th_metric(&s, "qdb_db_connect_attempts_total") - attempts_before;
    double outage_s = (th_now_ms() - t_stop) / 1000.0;
    long pglog_at_start = file_size(pglog);
    CHECK(th_pg_private_restart(&pg) == 0, "PostgreSQL started again");
    double t_back = th_now_ms();
    long ready = 0;
    while (ready != 200 && th_now_ms() - t_back < 15000) {
        ready = readyz_status(&s);
        if (ready != 200)
            th_sleep_ms(50);
    }
    double ready_ms = th_now_ms() - t_back;
    atomic_store(&L.phase, P_AFTER);
    long log_at_back = file_size(s.log);
    fprintf(stderr, "   /readyz 200 again %.0f ms after PostgreSQL accepted connections\n",
            ready_ms);
    CHECK(ready == 200 && ready_ms < 5000, "ready again within 5 s (%.0f ms)", ready_ms);
    fprintf(stderr, "   %ld connects tried in %.1f s of outage\n", attempts_during, outage_s);
    /* Backoff 100 ms doubling to 1 s: about 10 in 5 s, plus the first failures of each
     * connection at once (before the outage is known). Before: one per request. */
    CHECK(attempts_during >= 1 && attempts_during <= (long)(3 * outage_s) + POOL + STANDALONE,
          "a few connects per second during the outage, not one per request (%ld)",
          attempts_during);

    th_step("the outage's log: a handful of lines");
    int all = count_lines(s.log, log_at_stop, log_at_back, NULL, "\"msg\":\"request\"", 1);
    int store = count_lines(s.log, log_at_stop, log_at_back, "state store", NULL, 0);
    fprintf(stderr, "   %d lines besides the access log, %d of them about the state store\n", all,
            store);
    CHECK(store >= 2 && store <= 10, "at most 10 lines about the state store (%d)", store);
    CHECK(all <= 15, "at most 15 lines besides the access log (%d)", all);
    CHECK(count_lines(s.log, log_at_stop, log_at_back, "\"state store connection failed\"", NULL,
                      0) == 1,
          "the first failure is logged once");
    CHECK(count_lines(s.log, log_at_stop, log_at_back, "\"state store still unreachable\"", NULL,
                      0) >= 1,
          "a summary line (every 2 s here)");
    CHECK(count_lines(s.log, log_at_stop, log_at_back, "\"state store reachable again\"", NULL,
                      0) == 1 &&
              count_lines(s.log, log_at_stop, log_at_back, "\"outage_ms\"", NULL, 0) == 1,
          "one line when it is back, with the outage's length");
    int raw = count_lines(s.log, log_at_stop, log_at_back, NULL, NULL, 0) -
              count_lines(s.log, log_at_stop, log_at_back, "{\"time\":", NULL, 0);
    CHECK(raw == 0, "every line is a JSON event: no raw libpq notice on stderr (%d)", raw);

    th_step("%d s of load after the recovery", LOAD_MS / 1000);
    th_sleep_ms(LOAD_MS);
    int received = count_lines(pglog, pglog_at_start, -1, "connection received", NULL, 0);
    int authorized = count_lines(pglog, pglog_at_start, -1,
                                 "connection authorized: user=postgres database=outage "
                                 "application_name=qdb-control",
                                 NULL, 0);
    fprintf(stderr, "   PostgreSQL saw %d connections (%d of the server) since it came back\n",
            received, authorized);
    CHECK(authorized >= 1 && authorized <= POOL + STANDALONE + 3,
          "no connection storm: %d connections of the server (pool %d + %d standalone)", authorized,
          POOL, STANDALONE);
    CHECK(received <= POOL + STANDALONE + 8, "few attempts in all (%d)", received);
    /* issue 9's short versions fail on a statement timeout: none before, during or after
     * the outage (a request that hung on a dead connection until the timeout would show) */
    CHECK(count_lines(s.log, 0, -1, "\"sqlstate\":\"57014\"", NULL, 1) == 0 &&
              count_lines(pglog, 0, -1, "canceling statement due to statement timeout", NULL, 1) ==
                  0,
          "no statement timeout in the server's or PostgreSQL's log");

    th_step("SIGTERM during a second outage exits within QDB_SHUTDOWN_TIMEOUT (%d s)", SHUTDOWN_S);
    atomic_store(&L.phase, P_END);
    /* workers busy when it goes: long jobs that heartbeat, as real runners do */
    PQclear(th_sql(url,
                   "INSERT INTO job (kind, args, created_by, max_attempts, timeout_seconds) "
                   "SELECT 'sleep', '{\"seconds\":60}', 'test', 3, 600 "
                   "FROM generate_series(1, 2)",
                   NULL));
    long running = -1;
    for (double t = th_now_ms(); running < 2 && th_now_ms() - t < 10000; th_sleep_ms(100))
        running = th_sql_long(url, "SELECT count(*) FROM job WHERE state = 'running'", NULL);
    CHECK(running == 2, "two long jobs running (%ld)", running);
    CHECK(th_pg_private_stop(&pg) == 0, "PostgreSQL stopped again");
    double t_wait = th_now_ms();
    while (readyz_status(&s) != 503 && th_now_ms() - t_wait < 5000)
        th_sleep_ms(50);
    double t_term = th_now_ms();
    int rc = th_server_stop(&s);
    double took = th_now_ms() - t_term;
    fprintf(stderr, "   exit %d after %.0f ms\n", rc, took);
    CHECK(rc == 0, "exit status 0 (%d)", rc);
    /* The server's own account ("stopped" with the time from the signal to the end of
     * serve) is held to the timeout; the process exit after it also runs the sanitizers'
     * leak check, which took 0.4 s on a quiet machine and 6 s on a loaded one, so the exit
     * only has to happen (no hang). */
    long stopped_ms = -1;
    FILE *lf = fopen(s.log, "r");
    char line[4096];
    while (lf && fgets(line, sizeof line, lf)) {
        const char *m = strstr(line, "\"msg\":\"stopped\",\"ms\":");
        if (m)
            stopped_ms = strtol(m + strlen("\"msg\":\"stopped\",\"ms\":"), NULL, 10);
    }
    if (lf)
        fclose(lf);
    fprintf(stderr, "   the server stopped %ld ms after the signal\n", stopped_ms);
    CHECK(stopped_ms >= 0 && stopped_ms < SHUTDOWN_S * 1000 + 1000,
          "stopped within QDB_SHUTDOWN_TIMEOUT (+1 s): %ld ms", stopped_ms);
    CHECK(took < SHUTDOWN_S * 1000 + 20000, "exited in %.0f ms", took);
    CHECK(!th_server_log_contains(&s, "did not stop"), "every job worker stopped");

stop:
    atomic_store(&L.stop, 1);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    if (started) {
        print_tallies();
        CHECK(L.jobs[P_BEFORE].ok > 0 && L.jobs[P_AFTER].ok > 0, "the load was served");
        CHECK(L.jobs[P_OUTAGE].s503 > 0, "503s during the outage");
        CHECK(L.jobs[P_OUTAGE].max_503_ms < 2500, "503 at once (max %.0f ms)",
              L.jobs[P_OUTAGE].max_503_ms);
        for (int p = 0; p < P__N; p++)
            CHECK(L.jobs[p].s5xx == 0 && L.health[p].s5xx == 0, "no 5xx other than 503 (%s): %s",
                  phase_names[p], L.first_5xx);
        CHECK(L.jobs[P_BEFORE].s503 == 0 && L.jobs[P_AFTER].s503 == 0,
              "no 503 before the outage or after the recovery (%lu, %lu)", L.jobs[P_BEFORE].s503,
              L.jobs[P_AFTER].s503);
        CHECK(L.jobs[P_BEFORE].transport == 0 && L.jobs[P_OUTAGE].transport == 0 &&
                  L.jobs[P_AFTER].transport == 0,
              "no transport error while the server runs");
        for (int p = P_BEFORE; p <= P_AFTER; p++)
            CHECK(L.health[p].ok > 0 && L.health[p].s503 + L.health[p].other == 0,
                  "/healthz 200 throughout (%s)", phase_names[p]);
        /* the 100 ms target of issue 9 item 1 is for the handler pool; here only that a
         * liveness probe with a 1 s timeout would never fail */
        for (int p = P_BEFORE; p <= P_AFTER; p++)
            CHECK(L.health[p].max_ms < 1000, "/healthz within 1 s (%s: %.0f ms)", phase_names[p],
                  L.health[p].max_ms);
    }
    if (s.pid > 0)
        th_server_kill(&s);
out:
    free(url);
    free(admin_url);
    th_pg_private_destroy(&pg);
    return th_done();
}
