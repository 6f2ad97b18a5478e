#include "harness.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int th_passed, th_failed;

/* Environment every test server gets, before the test's own. Rooms add what they need. */
const char *th_default_env[] = {
    "QDB_LOG_LEVEL=info",
    "QDB_WEB_DIR=" QDB_SOURCE_DIR "/web",
    "QDB_SHUTDOWN_TIMEOUT=10",
    "QDB_AUTH_MODE=dev", /* auth: the built-in dev issuer; see th_dev_token */
    /* inventory: no default drift or lag schedule firing in the middle of other rooms'
     * tests (a test of the checks sets its own) */
    "QDB_INVENTORY_DRIFT_CRON=off",
    "QDB_INVENTORY_LAG_CRON=off",
    /* backup: no RPO/RTO check (and its breach events) in other rooms' tests */
    "QDB_BACKUP_STATUS_CRON=off",
    NULL,
};

int th_role_rank(const char *role)
{
    static const char *const ranks[] = {"public", "viewer", "operator", "admin"};
    for (int i = 0; role && i < 4; i++)
        if (strcmp(role, ranks[i]) == 0)
            return i;
    return 0;
}

int th_done(void)
{
    printf("%d passed, %d failed\n", th_passed, th_failed);
    return th_failed ? 1 : 0;
}

void th_step(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "-- ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

double th_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

void th_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- PostgreSQL ---- */

int th_pg_port(void)
{
    const char *p = getenv("QDB_TEST_PG_PORT");
    if (!p) {
        fprintf(stderr, "QDB_TEST_PG_PORT is not set: run the suite through tests/run.sh\n");
        exit(2);
    }
    return (int)strtol(p, NULL, 10);
}

static char *url_for(int port, const char *db)
{
    char *u = malloc(256);
    snprintf(u, 256, "postgresql://postgres@127.0.0.1:%d/%s", port, db);
    return u;
}

/* Wait (at most 30 s) until every audit event queued and committed before the call is
 * chained: the rows of audit_pending visible now are all gone. */
static void audit_catch_up(PGconn *c)
{
    PGresult *r = PQexec(c, "SELECT coalesce(max(id), 0) FROM audit_pending");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r); /* no queue in this database (not migrated yet) */
        return;
    }
    char id[32];
    snprintf(id, sizeof id, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    const char *max_id[1] = {id};
    for (double deadline = th_now_ms() + 30000;; th_sleep_ms(5)) {
        r = PQexecParams(c, "SELECT count(*) FROM audit_pending WHERE id <= $1::bigint", 1, NULL,
                         max_id, NULL, NULL, 0);
        int left = PQresultStatus(r) != PGRES_TUPLES_OK || strcmp(PQgetvalue(r, 0, 0), "0") != 0;
        PQclear(r);
        if (!left)
            return;
        if (th_now_ms() > deadline) {
            fprintf(stderr, "th_sql: audit events queued before the query are still not chained "
                            "after 30 s; reading the trail as it stands\n");
            return;
        }
    }
}

static PGresult *vsql(const char *url, const char *sql, va_list ap)
{
    const char *params[16];
    int n = 0;
    const char *p;
    while (n < 16 && (p = va_arg(ap, const char *)) != NULL)
        params[n++] = p;
    PGconn *c = PQconnectdb(url);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "th_sql: cannot connect: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    /* A writer's request replies before the sequencer chains its event; the API's readers
     * wait for the sequencer to catch up first (audit_catch_up in the server), and so does
     * a test reading the trail here right after a write. */
    if (strstr(sql, "audit_event") || strstr(sql, "audit_chain_head"))
        audit_catch_up(c);
    PGresult *res = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        fprintf(stderr, "th_sql: %s: %s", sql, PQresultErrorMessage(res));
        PQclear(res);
        res = NULL;
    }
    PQfinish(c);
    return res;
}

PGresult *th_sql(const char *url, const char *sql, ...)
{
    va_list ap;
    va_start(ap, sql);
    PGresult *r = vsql(url, sql, ap);
    va_end(ap);
    return r;
}

long th_sql_long(const char *url, const char *sql, ...)
{
    va_list ap;
    va_start(ap, sql);
    PGresult *r = vsql(url, sql, ap);
    va_end(ap);
    long v = -1;
    if (r && PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

char *th_db_create(const char *prefix)
{
    static int counter;
    char name[96];
    snprintf(name, sizeof name, "t_%s_%d_%d", prefix, (int)getpid(), counter++);
    char *admin = url_for(th_pg_port(), "postgres");
    PGconn *c = PQconnectdb(admin);
    free(admin);
    char sql[160];
    snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", name); /* test-made name only */
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "create database failed: %s", PQerrorMessage(c));
        exit(2);
    }
    PQclear(r);
    PQfinish(c);
    return url_for(th_pg_port(), name);
}

void th_db_drop(const char *url)
{
    const char *slash = strrchr(url, '/');
    if (!slash)
        return;
    char *admin = url_for(th_pg_port(), "postgres");
    PGconn *c = PQconnectdb(admin);
    free(admin);
    char sql[200];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", slash + 1);
    PQclear(PQexec(c, sql));
    PQfinish(c);
}

int th_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static int run_sh(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

int th_pg_private_start(struct th_pg *pg)
{
    snprintf(pg->dir, sizeof pg->dir, "/tmp/qdb-test-pg-XXXXXX");
    if (!mkdtemp(pg->dir))
        return -1;
    pg->port = th_free_port();
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "bash -c 'source %s/deploy/local/lib.sh && QDB_PG_FSYNC=off qdb_pg_start %s/data %d'",
             QDB_SOURCE_DIR, pg->dir, pg->port);
    chmod(pg->dir, 0755);
    return run_sh(cmd) == 0 ? 0 : -1;
}

int th_pg_private_stop(struct th_pg *pg)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash -c 'source %s/deploy/local/lib.sh && qdb_pg_stop %s/data'",
             QDB_SOURCE_DIR, pg->dir);
    return run_sh(cmd) == 0 ? 0 : -1;
}

int th_pg_private_restart(struct th_pg *pg)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "bash -c 'source %s/deploy/local/lib.sh && QDB_PG_FSYNC=off qdb_pg_start %s/data %d'",
             QDB_SOURCE_DIR, pg->dir, pg->port);
    return run_sh(cmd) == 0 ? 0 : -1;
}

void th_pg_private_destroy(struct th_pg *pg)
{
    th_pg_private_stop(pg);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", pg->dir);
    run_sh(cmd);
}

char *th_pg_private_db(struct th_pg *pg, const char *name)
{
    char *admin = url_for(pg->port, "postgres");
    PGconn *c = PQconnectdb(admin);
    free(admin);
    char sql[160];
    snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", name);
    PQclear(PQexec(c, sql)); /* may already exist */
    PQfinish(c);
    return url_for(pg->port, name);
}

void th_pg_private_log(const struct th_pg *pg, char *out, size_t n)
{
    snprintf(out, n, "%s/data/server.log", pg->dir); /* qdb_pg_start's -l */
}

/* ---- server ---- */

/* audit: every server needs QDB_AUDIT_HMAC_KEY_FILE. One random key file per test run
 * (under QDB_TEST_LOG_DIR), created once by whichever test gets there first (link() is
 * atomic), so that every server of every test, and all servers on one database, share it.
 * Returns "QDB_AUDIT_HMAC_KEY_FILE=<path>" (static); a test's own env may override it. */
static char audit_key_env[320];
static void audit_key_make(void)
{
    const char *dir = getenv("QDB_TEST_LOG_DIR") ? getenv("QDB_TEST_LOG_DIR") : "/tmp";
    char path[256], tmp[300], hex[65];
    unsigned char rnd[32];
    snprintf(path, sizeof path, "%s/audit-hmac-key", dir);
    snprintf(audit_key_env, sizeof audit_key_env, "QDB_AUDIT_HMAC_KEY_FILE=%s", path);
    if (access(path, R_OK) == 0)
        return;
    int rfd = open("/dev/urandom", O_RDONLY);
    if (rfd < 0 || read(rfd, rnd, sizeof rnd) != (ssize_t)sizeof rnd) {
        fprintf(stderr, "harness: cannot read /dev/urandom\n");
        exit(2);
    }
    close(rfd);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, hex, 64) != 64 || write(fd, "\n", 1) != 1) {
        fprintf(stderr, "harness: cannot write %s\n", tmp);
        exit(2);
    }
    close(fd);
    if (link(tmp, path) != 0 && errno != EEXIST) {
        fprintf(stderr, "harness: cannot create %s: %s\n", path, strerror(errno));
        exit(2);
    }
    unlink(tmp);
}
const char *th_audit_key_env(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, audit_key_make);
    return audit_key_env;
}

static void put_env_list(const char *const *env)
{
    for (; env && *env; env++)
        putenv((char *)*env);
}

int th_server_start(struct th_server *s, const char *url, const char *const *env, int wait_ready)
{
    memset(s, 0, sizeof *s);
    s->port = (uint16_t)th_free_port();
    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%u", s->port);
    static int n;
    snprintf(s->log, sizeof s->log, "%s/server-%d-%d.log",
             getenv("QDB_TEST_LOG_DIR") ? getenv("QDB_TEST_LOG_DIR") : "/tmp", (int)getpid(), n++);
    const char *audit_key = th_audit_key_env();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 2);
        dup2(fd, 1);
        close(fd);
        static char listen[64], dburl[512];
        snprintf(listen, sizeof listen, "QDB_LISTEN=127.0.0.1:%u", s->port);
        snprintf(dburl, sizeof dburl, "QDB_DATABASE_URL=%s", url);
        putenv(listen);
        putenv(dburl);
        putenv((char *)audit_key);
        put_env_list(th_default_env);
        put_env_list(env);
        execl(QDB_BINARY, QDB_BINARY, "serve", (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    if (!wait_ready)
        return 0;
    for (int i = 0; i < 300; i++) {
        struct th_resp r;
        if (th_get(s, "/readyz", NULL, &r) == 0 && r.status == 200) {
            th_resp_free(&r);
            return 0;
        }
        if (r.status)
            th_resp_free(&r);
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "server exited during start-up; log %s\n", s->log);
            s->pid = 0;
            return -1;
        }
        th_sleep_ms(100);
    }
    fprintf(stderr, "server not ready after 30 s; log %s\n", s->log);
    return -1;
}

int th_server_log_contains(const struct th_server *s, const char *needle)
{
    FILE *f = fopen(s->log, "r");
    if (!f)
        return 0;
    char line[8192];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

int th_server_stop(struct th_server *s)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, SIGTERM);
    int st = 0;
    pid_t w;
    for (int i = 0; i < 600; i++) {
        w = waitpid(s->pid, &st, WNOHANG);
        if (w == s->pid)
            break;
        th_sleep_ms(50);
    }
    if (w != s->pid) {
        fprintf(stderr, "server did not stop within 30 s; killing; log %s\n", s->log);
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &st, 0);
        s->pid = 0;
        return -1;
    }
    s->pid = 0;
    CHECK(!th_server_log_contains(s, "Sanitizer"), "sanitizer report in %s", s->log);
    CHECK(!th_server_log_contains(s, "runtime error:"), "UBSan report in %s", s->log);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void th_server_kill(struct th_server *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

int th_run_binary(const char *const *argv, const char *const *env, char *err, size_t errlen)
{
    int pipefd[2];
    const char *audit_key = th_audit_key_env();
    if (pipe(pipefd) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(pipefd[0]);
        dup2(pipefd[1], 2);
        int devnull = open("/dev/null", O_WRONLY);
        dup2(devnull, 1);
        putenv((char *)audit_key);
        put_env_list(th_default_env);
        put_env_list(env);
        const char *args[16] = {QDB_BINARY};
        int i = 1;
        for (; argv && *argv && i < 15; argv++)
            args[i++] = *argv;
        args[i] = NULL;
        execv(QDB_BINARY, (char *const *)args);
        _exit(127);
    }
    close(pipefd[1]);
    size_t used = 0;
    char tmp[4096];
    ssize_t n;
    while ((n = read(pipefd[0], tmp, sizeof tmp)) > 0) {
        if (err && used + 1 < errlen) {
            size_t take = (size_t)n < errlen - used - 1 ? (size_t)n : errlen - used - 1;
            memcpy(err + used, tmp, take);
            used += take;
        }
    }
    if (err && errlen)
        err[used] = '\0';
    close(pipefd[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- HTTP ---- */

struct sink {
    char *data;
    size_t len;
};

static size_t on_data(char *p, size_t size, size_t n, void *cls)
{
    struct sink *s = cls;
    size_t add = size * n;
    char *d = realloc(s->data, s->len + add + 1);
    if (!d)
        return 0;
    memcpy(d + s->len, p, add);
    s->data = d;
    s->len += add;
    s->data[s->len] = '\0';
    return add;
}

int th_http(const struct th_server *s, const char *method, const char *path,
            const char *const *headers, const char *body, size_t len, struct th_resp *out)
{
    memset(out, 0, sizeof *out);
    CURL *c = curl_easy_init();
    char url[1024];
    snprintf(url, sizeof url, "%s%s", s->base, path);
    struct sink b = {0}, h = {0};
    struct curl_slist *hl = NULL;
    for (; headers && *headers; headers++)
        hl = curl_slist_append(hl, *headers);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        free(b.data);
        free(h.data);
        return -1;
    }
    out->body = b.data ? b.data : strdup("");
    out->len = b.len;
    out->headers = h.data ? h.data : strdup("");
    out->json = json_loadb(out->body, out->len, 0, NULL);
    return 0;
}

static const char *const *auth_headers(const char *token, const char **slots, char *buf,
                                       size_t buflen, const char *extra)
{
    int i = 0;
    if (token) {
        snprintf(buf, buflen, "Authorization: Bearer %s", token);
        slots[i++] = buf;
    }
    if (extra)
        slots[i++] = extra;
    slots[i] = NULL;
    return slots;
}

int th_get(const struct th_server *s, const char *path, const char *token, struct th_resp *out)
{
    const char *slots[3];
    char buf[20000];
    return th_http(s, "GET", path, auth_headers(token, slots, buf, sizeof buf, NULL), NULL, 0, out);
}

int th_post_json(const struct th_server *s, const char *path, const char *token, const char *json,
                 struct th_resp *out)
{
    const char *slots[3];
    char buf[20000];
    return th_http(s, "POST", path,
                   auth_headers(token, slots, buf, sizeof buf, "Content-Type: application/json"),
                   json, json ? strlen(json) : 0, out);
}

char *th_resp_header(const struct th_resp *r, const char *name)
{
    size_t n = strlen(name);
    const char *p = r->headers;
    while (p && *p) {
        const char *eol = strstr(p, "\r\n");
        size_t linelen = eol ? (size_t)(eol - p) : strlen(p);
        if (linelen > n && strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1;
            while (*v == ' ')
                v++;
            return strndup(v, linelen - (size_t)(v - p));
        }
        p = eol ? eol + 2 : NULL;
    }
    return NULL;
}

void th_resp_free(struct th_resp *r)
{
    free(r->body);
    free(r->headers);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

char *th_dev_token(const struct th_server *s, const char *role)
{
    char body[256];
    snprintf(body, sizeof body, "{\"sub\":\"test-%s\",\"name\":\"Test %s\",\"role\":\"%s\"}", role,
             role, role);
    struct th_resp r;
    if (th_post_json(s, "/dev-issuer/token", NULL, body, &r) != 0)
        return NULL;
    char *tok = NULL;
    const char *at = json_string_value(json_object_get(r.json, "access_token"));
    if (r.status == 200 && at)
        tok = strdup(at);
    else
        fprintf(stderr, "th_dev_token(%s): HTTP %ld: %s\n", role, r.status, r.body);
    th_resp_free(&r);
    return tok;
}

int th_is_problem(const struct th_resp *r, long status)
{
    char *ct = th_resp_header(r, "Content-Type");
    int ok = ct && strcmp(ct, "application/problem+json") == 0 && r->status == status &&
             json_is_object(r->json) && json_is_string(json_object_get(r->json, "type")) &&
             json_is_string(json_object_get(r->json, "title")) &&
             json_integer_value(json_object_get(r->json, "status")) == status &&
             json_is_string(json_object_get(r->json, "detail")) &&
             json_is_string(json_object_get(r->json, "instance"));
    free(ct);
    return ok;
}

long th_status(const struct th_server *s, const char *method, const char *path, const char *token)
{
    char auth[20000];
    const char *h[2] = {NULL, NULL};
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        h[0] = auth;
    }
    struct th_resp r;
    if (th_http(s, method, path, h, NULL, 0, &r) != 0)
        return 0;
    long st = r.status;
    th_resp_free(&r);
    return st;
}

long th_metric(const struct th_server *s, const char *series)
{
    struct th_resp r;
    if (th_get(s, "/metrics", NULL, &r) != 0)
        return -1;
    char key[512];
    size_t n = strlen(series);
    /* "\nname{labels} ": the series whole, not a prefix of a longer name */
    snprintf(key, sizeof key, "\n%s%s", series, n && series[n - 1] == ' ' ? "" : " ");
    const char *p = r.body ? strstr(r.body, key) : NULL;
    long v = p ? strtol(p + strlen(key), NULL, 10) : -1;
    th_resp_free(&r);
    return v;
}

int th_sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    if (rc != 0)
        fprintf(stderr, "command failed (%d): %s\n", rc, cmd);
    return rc;
}
