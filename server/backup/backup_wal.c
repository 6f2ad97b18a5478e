/* WAL streaming for the databases whose policy's RPO is 0, as Barman's streaming archiver:
 * a supervised pg_receivewal per database, on a physical replication slot (so that the
 * source keeps every segment the receiver has not confirmed, and a restart leaves no gap),
 * into QDB_BACKUP_DIR/<database>/wal beside that database's base backups.
 *
 * Across replicas, exactly one streams a given database: the one whose supervisor holds
 * that database's PostgreSQL session advisory lock (platform/db_lock.h, as the outbox
 * relay). The lock goes with the session, so a replica that dies hands the stream over at
 * the next tick of another, with no TTL; its receiver dies with it (PR_SET_PDEATHSIG), and
 * while an orphan would still hold the slot the new receiver fails and is retried with
 * backoff, never two writers at once. A supervisor that loses its state store session
 * loses its locks: it stops its receivers at once.
 *
 * Each tick (about a second) the supervisor reads the enabled RPO-0 policies, takes or
 * checks each lock, restarts a receiver that exited (backoff 1 s doubling to 30 s, back to
 * 1 s after a minute of running), measures on the source in one statement what the
 * receiver confirmed flushed against the server's insert position, and writes that row
 * (backup_wal_stream) for every replica's status page and for point-in-time restores.
 *
 * The lag in seconds is the age of the oldest WAL not yet received: the supervisor keeps
 * the server's insert position of its last ticks, and the oldest unreceived byte was
 * written no later than the first tick whose position lay beyond what was received. It
 * does not rely on the receiver's feedback, so a stuck receiver shows a growing lag. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "backup/backup_internal.h"
#include "inventory/inventory.h"
#include "platform/db_lock.h"
#include "platform/log.h"

extern char **environ;

/* Advisory lock keys: this base plus the inventory id of the database ("qdbW" in ASCII,
 * shifted clear of the ids). Other rooms' keys are small constants. */
#define WAL_LOCK_BASE (0x71646257LL << 24)
#define WAL_TICK_MS 1000
#define WAL_BACKOFF_MIN_S 1.0
#define WAL_BACKOFF_MAX_S 30.0
#define WAL_STABLE_S 60.0   /* a receiver that ran this long starts its backoff afresh */
#define WAL_SAMPLES 512     /* insert positions of the last ticks, for the lag in seconds */
#define WAL_LOG_MAX (1 << 20)

struct lsn_sample {
    double at;  /* CLOCK_REALTIME seconds */
    uint64_t lsn;
};

struct wal_stream {
    int64_t database_id;
    char component[64], environment[40], database[70];
    char slot[64], dir[1100], log[1200];
    struct db_session_lock lock;
    int seen;
    pid_t pid;
    double started_at, next_start, backoff;
    int restarts;
    char last_exit[300];
    PGconn *source; /* measuring connection to the source server */
    double source_retry_at, source_backoff; /* an unreachable source is retried slowly */
    struct lsn_sample samples[WAL_SAMPLES];
    size_t nsamples, head;
};

static struct {
    pthread_t thread;
    int started;
    atomic_int stopping;
    struct db_settings dbs;
    char instance[160];
    struct wal_stream *streams;
    size_t n, cap;
} wal;

static double real_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void bk_wal_dir(char *out, size_t n, const char *database)
{
    snprintf(out, n, "%s/%s/wal", bk_dir(), database);
}

static int parse_lsn(const char *s, uint64_t *out)
{
    unsigned int hi, lo;
    char tail;
    if (!s || sscanf(s, "%X/%X%c", &hi, &lo, &tail) != 2)
        return -1;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
}

/* ---- the receiver process ---- */

static void read_last_line(const char *path, char *out, size_t n)
{
    out[0] = '\0';
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return;
    char buf[1024];
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)sizeof buf - 1 ? size - (off_t)sizeof buf + 1 : 0;
    ssize_t got = pread(fd, buf, sizeof buf - 1, from);
    close(fd);
    if (got <= 0)
        return;
    buf[got] = '\0';
    while (got > 0 && (buf[got - 1] == '\n' || buf[got - 1] == '\r'))
        buf[--got] = '\0';
    char *nl = strrchr(buf, '\n');
    const char *last = nl ? nl + 1 : buf;
    size_t len = strlen(last);
    if (len >= n)
        len = n - 1; /* the start of a long line is enough */
    memcpy(out, last, len);
    out[len] = '\0';
}

/* fork + exec of pg_receivewal with its output appended to s->log. Everything the child
 * needs (argv, environment) is built before the fork: only async-signal-safe calls follow
 * it in this threaded process. */
static pid_t spawn_receiver(struct wal_stream *s, const struct inventory_database *db,
                            char *err, size_t errlen)
{
    char password[512] = "", ci[1500], bin[600], pwenv[600] = "", slotarg[80];
    if (db->primary.admin_secret[0] &&
        inventory_secret_resolve(db->primary.admin_secret, password, sizeof password, err,
                                 errlen) != 0)
        return -1;
    bk_conninfo(ci, sizeof ci - 60, &db->primary, "postgres");
    size_t cl = strlen(ci);
    snprintf(ci + cl, sizeof ci - cl, " application_name=%s", s->slot);
    snprintf(bin, sizeof bin, "%s/pg_receivewal", bk_pg_bin());
    snprintf(slotarg, sizeof slotarg, "--slot=%s", s->slot);
    /* --synchronous: flush each piece as it arrives and confirm it at once (the slot then
     * releases exactly what is on our disk); --no-loop: a lost connection ends it and the
     * supervisor restarts it with backoff, logged */
    const char *argv[] = {bin, "-d", ci, "-D", s->dir, slotarg, "--synchronous", "--no-loop",
                          "-v", NULL};
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **envp = calloc(ne + 3, sizeof *envp);
    if (!envp) {
        inventory_secret_wipe(password, sizeof password);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
        if (strncmp(environ[i], "PGPASSWORD=", 11) != 0 && strncmp(environ[i], "LC_ALL=", 7) != 0)
            envp[k++] = environ[i];
    envp[k++] = "LC_ALL=C";
    if (password[0]) {
        snprintf(pwenv, sizeof pwenv, "PGPASSWORD=%s", password);
        envp[k++] = pwenv;
    }
    envp[k] = NULL;
    inventory_secret_wipe(password, sizeof password);
    struct stat st;
    if (stat(s->log, &st) == 0 && st.st_size > WAL_LOG_MAX)
        if (truncate(s->log, 0) != 0) { /* appending to it anyway */
        }
    int logfd = open(s->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t parent = getpid();
    pid_t pid = logfd >= 0 && nullfd >= 0 ? fork() : -1;
    if (pid == 0) {
        setpgid(0, 0);
        /* dies with the server: a replica that crashed must not leave a second writer */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        dup2(nullfd, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        execve(bin, (char *const *)argv, envp);
        _exit(127);
    }
    int saved = errno;
    inventory_secret_wipe(pwenv, sizeof pwenv);
    free(envp);
    if (logfd >= 0)
        close(logfd);
    if (nullfd >= 0)
        close(nullfd);
    if (pid < 0)
        snprintf(err, errlen, "could not start pg_receivewal: %s", strerror(saved));
    return pid;
}

static void stop_receiver(struct wal_stream *s, const char *why)
{
    if (s->pid <= 0)
        return;
    kill(-s->pid, SIGTERM);
    int st;
    /* pg_receivewal flushes and exits on SIGTERM at once; bounded anyway */
    for (int i = 0; i < 50; i++) {
        pid_t r = waitpid(s->pid, &st, WNOHANG);
        if (r == s->pid || (r < 0 && errno == ECHILD))
            break;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        if (i == 49) {
            kill(-s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
        }
    }
    log_info("backup: WAL stream of %s/%s stopped (%s)", s->environment, s->database, why);
    s->pid = 0;
}

/* Reap an exited receiver and plan its restart. */
static void reap(struct wal_stream *s, double now)
{
    int st = 0;
    if (s->pid <= 0 || waitpid(s->pid, &st, WNOHANG) != s->pid)
        return;
    char line[240];
    read_last_line(s->log, line, sizeof line);
    snprintf(s->last_exit, sizeof s->last_exit, "%s %d: %s",
             WIFSIGNALED(st) ? "killed by signal" : "exited with status",
             WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), line);
    s->pid = 0;
    s->restarts++;
    s->backoff = now - s->started_at >= WAL_STABLE_S || s->backoff <= 0
                     ? WAL_BACKOFF_MIN_S
                     : (s->backoff * 2 > WAL_BACKOFF_MAX_S ? WAL_BACKOFF_MAX_S : s->backoff * 2);
    s->next_start = now + s->backoff;
    log_event(LOG_WARN, "backup: WAL receiver ended; restarting",
              json_pack("{s:s,s:s,s:s,s:f,s:i}", "environment", s->environment, "database",
                        s->database, "exit", s->last_exit, "backoff_s", s->backoff, "restarts",
                        s->restarts));
}

/* ---- measuring on the source ---- */

static PGconn *source_conn(struct wal_stream *s, const struct inventory_database *db)
{
    if (s->source && PQstatus(s->source) == CONNECTION_OK)
        return s->source;
    if (s->source)
        PQfinish(s->source);
    s->source = NULL;
    double now = real_s();
    if (now < s->source_retry_at)
        return NULL;
    char err[300];
    s->source = inventory_pg_connect(&db->primary, "postgres", 5, err, sizeof err);
    if (!s->source) {
        snprintf(s->last_exit, sizeof s->last_exit, "source: %.280s", err);
        s->source_backoff = s->source_backoff <= 0 ? WAL_BACKOFF_MIN_S
                            : s->source_backoff * 2 > WAL_BACKOFF_MAX_S ? WAL_BACKOFF_MAX_S
                                                                        : s->source_backoff * 2;
        s->source_retry_at = now + s->source_backoff;
    } else {
        s->source_backoff = 0;
    }
    return s->source;
}

/* The slot exists (made with its WAL reserved at once), so that from now on the source
 * keeps what the receiver has not confirmed. 0 or -1. */
static int ensure_slot(struct wal_stream *s, PGconn *pg)
{
    const char *p[] = {s->slot};
    PGresult *r = PQexecParams(pg,
                               "SELECT pg_create_physical_replication_slot($1, true) WHERE NOT "
                               "EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                               1, NULL, p, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(s->last_exit, sizeof s->last_exit, "replication slot %s: %.200s", s->slot,
                 PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

static void sample_add(struct wal_stream *s, double at, uint64_t lsn)
{
    s->samples[s->head] = (struct lsn_sample){at, lsn};
    s->head = (s->head + 1) % WAL_SAMPLES;
    if (s->nsamples < WAL_SAMPLES)
        s->nsamples++;
}

/* Seconds since the oldest WAL byte not yet received was written (see the top). */
static double lag_seconds(const struct wal_stream *s, uint64_t received, double now)
{
    size_t oldest = (s->head + WAL_SAMPLES - s->nsamples) % WAL_SAMPLES;
    for (size_t i = 0; i < s->nsamples; i++) {
        const struct lsn_sample *x = &s->samples[(oldest + i) % WAL_SAMPLES];
        if (x->lsn > received)
            return now - x->at;
    }
    return 0;
}

static void measure(struct wal_stream *s, const struct inventory_database *db,
                    struct bk_wal_row *row, double now)
{
    PGconn *pg = source_conn(s, db);
    if (!pg || ensure_slot(s, pg) != 0)
        return;
    const char *p[] = {s->slot};
    PGresult *r = PQexecParams(
        pg,
        "SELECT pg_current_wal_lsn()::text, coalesce(r.flush_lsn, s.restart_lsn)::text "
        "FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid "
        "WHERE s.slot_name = $1",
        1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 1)) {
        uint64_t server = 0, received = 0;
        snprintf(row->server_lsn, sizeof row->server_lsn, "%s", PQgetvalue(r, 0, 0));
        snprintf(row->received_lsn, sizeof row->received_lsn, "%s", PQgetvalue(r, 0, 1));
        if (parse_lsn(row->server_lsn, &server) == 0 &&
            parse_lsn(row->received_lsn, &received) == 0) {
            sample_add(s, now, server);
            row->lag_bytes = server > received ? (int64_t)(server - received) : 0;
            row->lag_seconds = lag_seconds(s, received, now);
            row->caught_up = row->lag_bytes == 0;
        }
    } else if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(s->last_exit, sizeof s->last_exit, "source: %.280s", PQresultErrorMessage(r));
    }
    PQclear(r);
}

/* ---- the supervisor ---- */

static struct wal_stream *stream_for(int64_t database_id)
{
    for (size_t i = 0; i < wal.n; i++)
        if (wal.streams[i].database_id == database_id)
            return &wal.streams[i];
    if (wal.n == wal.cap) {
        size_t cap = wal.cap ? wal.cap * 2 : 8;
        struct wal_stream *ns = realloc(wal.streams, cap * sizeof *ns);
        if (!ns)
            return NULL;
        wal.streams = ns;
        wal.cap = cap;
    }
    struct wal_stream *s = &wal.streams[wal.n++];
    memset(s, 0, sizeof *s);
    s->database_id = database_id;
    s->lock.key = WAL_LOCK_BASE + database_id;
    snprintf(s->slot, sizeof s->slot, "qdb_wal_%lld", (long long)database_id);
    return s;
}

static void stream_drop(struct db_conn *c, size_t i, const char *why)
{
    struct wal_stream *s = &wal.streams[i];
    stop_receiver(s, why);
    if (c && db_session_lock_held(c, &s->lock)) {
        bk_store_wal_stopped(c, s->database_id, wal.instance, why);
        db_session_lock_release(c, &s->lock);
    }
    if (s->source)
        PQfinish(s->source);
    wal.streams[i] = wal.streams[--wal.n];
}

static void tick_stream(struct db_conn *c, struct wal_stream *s,
                        const struct inventory_database *db, double now)
{
    int held = db_session_lock_acquire(c, &s->lock) == 1;
    if (!held) {
        stop_receiver(s, "another replica streams it");
        return;
    }
    reap(s, now);
    if (s->pid <= 0 && now >= s->next_start) {
        char err[300] = "";
        if (bk_mkdirs(s->dir, 0700) != 0) {
            snprintf(s->last_exit, sizeof s->last_exit, "%.200s: %s", s->dir, strerror(errno));
            s->next_start = now + WAL_BACKOFF_MAX_S;
        } else {
            PGconn *pg = source_conn(s, db);
            if (pg && ensure_slot(s, pg) == 0) {
                s->pid = spawn_receiver(s, db, err, sizeof err);
                if (s->pid > 0) {
                    s->started_at = now;
                    log_event(LOG_INFO, "backup: WAL receiver started",
                              json_pack("{s:s,s:s,s:s,s:i}", "environment", s->environment,
                                        "database", s->database, "slot", s->slot, "pid",
                                        (int)s->pid));
                } else {
                    s->pid = 0;
                    snprintf(s->last_exit, sizeof s->last_exit, "%s", err);
                }
            }
            if (s->pid <= 0) {
                s->backoff = s->backoff <= 0 ? WAL_BACKOFF_MIN_S
                             : s->backoff * 2 > WAL_BACKOFF_MAX_S ? WAL_BACKOFF_MAX_S
                                                                  : s->backoff * 2;
                s->next_start = now + s->backoff;
            }
        }
    }
    struct bk_wal_row row = {.database_id = s->database_id,
                             .component = s->component,
                             .environment = s->environment,
                             .database = s->database,
                             .slot = s->slot,
                             .wal_dir = s->dir,
                             .holder = wal.instance,
                             .receiver_pid = s->pid,
                             .state = s->pid > 0 ? "streaming" : "restarting",
                             .lag_bytes = -1,
                             .lag_seconds = -1,
                             .restarts = s->restarts,
                             .last_exit = s->last_exit};
    measure(s, db, &row, now);
    if (bk_store_wal_put(c, &row) < 0)
        log_warn("backup: could not record the WAL stream of %s/%s", s->environment,
                 s->database);
}

static void tick(struct db_conn *c)
{
    double now = real_s();
    for (size_t i = 0; i < wal.n; i++)
        wal.streams[i].seen = 0;
    PGresult *res = NULL;
    int rows = bk_store_wal_policies(c, &res);
    for (int i = 0; i < rows; i++) {
        struct inventory_database db;
        const char *env = db_get_str(res, i, 1), *name = db_get_str(res, i, 2);
        if (inventory_database_lookup(c, 0, env, name, &db) <= 0)
            continue; /* not (yet) in the inventory: nothing to stream */
        struct wal_stream *s = stream_for(db.id);
        if (!s)
            break;
        s->seen = 1;
        snprintf(s->component, sizeof s->component, "%s", db_get_str(res, i, 0));
        snprintf(s->environment, sizeof s->environment, "%s", db.environment);
        snprintf(s->database, sizeof s->database, "%s", db.name);
        bk_wal_dir(s->dir, sizeof s->dir, db.name);
        snprintf(s->log, sizeof s->log, "%s/%s/wal_stream.log", bk_dir(), db.name);
        tick_stream(c, s, &db, now);
    }
    PQclear(res);
    if (rows < 0)
        return; /* the state store did not answer: keep what runs until it does */
    for (size_t i = wal.n; i-- > 0;)
        if (!wal.streams[i].seen)
            stream_drop(c, i, "its policy no longer asks for WAL streaming");
}

static void *wal_main(void *arg)
{
    (void)arg;
    struct db_conn *c = NULL;
    while (!atomic_load(&wal.stopping)) {
        if (!c)
            c = db_conn_open(&wal.dbs);
        else
            (void)db_conn_check(c); /* a reopened session holds none of our locks */
        if (c && PQstatus(db_pgconn(c)) == CONNECTION_OK) {
            tick(c);
        } else {
            for (size_t i = 0; i < wal.n; i++) {
                stop_receiver(&wal.streams[i], "the state store session (and its lock) was lost");
                wal.streams[i].lock.pid = 0;
            }
        }
        for (int i = 0; i < WAL_TICK_MS / 50 && !atomic_load(&wal.stopping); i++) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    for (size_t i = wal.n; i-- > 0;)
        stream_drop(c, i, "the server stops");
    free(wal.streams);
    wal.streams = NULL;
    wal.cap = 0;
    db_conn_close(c);
    return NULL;
}

int bk_wal_start(struct qdb_app *app)
{
    if (!app->pool)
        return 0;
    wal.dbs.url = app->cfg->database_url;
    wal.dbs.statement_timeout_ms = app->cfg->db_statement_timeout_ms;
    wal.dbs.connect_timeout_s = app->cfg->db_connect_timeout_s;
    wal.dbs.application_name = "qdb-control-wal-stream";
    snprintf(wal.instance, sizeof wal.instance, "%s", app->instance_id ? app->instance_id : "?");
    atomic_store(&wal.stopping, 0);
    if (pthread_create(&wal.thread, NULL, wal_main, NULL) != 0) {
        log_error("backup: cannot start the WAL stream supervisor");
        return -1;
    }
    wal.started = 1;
    return 0;
}

void bk_wal_quiesce(void)
{
    atomic_store(&wal.stopping, 1);
}

void bk_wal_stop(void)
{
    if (!wal.started)
        return;
    atomic_store(&wal.stopping, 1);
    pthread_join(wal.thread, NULL);
    wal.started = 0;
}

/* ---- retention of the streamed WAL (backup.prune) ---- */

int bk_wal_prune(const char *database, const char *stop_lsn, int tli, int *deleted, char *err,
                 size_t errlen)
{
    char dir[1100];
    uint64_t stop;
    *deleted = 0;
    bk_wal_dir(dir, sizeof dir, database);
    if (parse_lsn(stop_lsn, &stop) != 0) {
        snprintf(err, errlen, "the oldest kept backup has no stop LSN: streamed WAL kept");
        return 0;
    }
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return 0; /* nothing streamed for it */
        snprintf(err, errlen, "%.900s: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        /* complete segments only: a .partial is the one being written, .history is small */
        if (strlen(n) != 24 || strspn(n, "0123456789ABCDEF") != 24)
            continue;
        char path[1200];
        struct stat st;
        snprintf(path, sizeof path, "%s/%.24s", dir, n);
        if (stat(path, &st) != 0 || st.st_size < (1 << 20) || (st.st_size & (st.st_size - 1)))
            continue;
        char t[9], hi[9], lo[9];
        memcpy(t, n, 8);
        memcpy(hi, n + 8, 8);
        memcpy(lo, n + 16, 8);
        t[8] = hi[8] = lo[8] = '\0';
        uint64_t per = 0x100000000ULL / (uint64_t)st.st_size;
        uint64_t segno = strtoull(hi, NULL, 16) * per + strtoull(lo, NULL, 16);
        /* the oldest kept backup replays from the segment of its stop LSN on: anything
         * before it, on its timeline or an older one, no kept backup can use */
        if (strtoul(t, NULL, 16) > (unsigned long)tli || segno >= stop / (uint64_t)st.st_size)
            continue;
        if (unlink(path) != 0) {
            snprintf(err, errlen, "could not delete %.900s: %s", path, strerror(errno));
            rc = -1;
            break;
        }
        (*deleted)++;
    }
    closedir(d);
    return rc;
}
