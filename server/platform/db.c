#include "platform/db.h"

#include <errno.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "platform/log.h"
#include "platform/deadline.h"

/* Statement slots: each distinct struct db_stmt gets a small number, so that a connection
 * remembers what it has prepared in a bitmap instead of a name lookup. */
#define DB_MAX_STMTS 1024
static atomic_int next_slot = 1;

struct commit_hook {
    void (*fn)(struct db_conn *c, void *cls);
    void (*drop)(void *cls); /* when dropped unrun (db_on_commit_owned); NULL: nothing */
    void *cls;
};

struct db_conn {
    PGconn *pg;
    struct db_settings settings; /* borrowed strings; copied struct */
    unsigned char prepared[DB_MAX_STMTS / 8];
    unsigned epoch; /* reach.generation at connect time */
    int broken;
    char sqlstate[6];
    char errmsg[256];
    struct db_conn *next_free;
    /* Post-commit hooks of the open transaction (db_on_commit). */
    struct commit_hook hooks[DB_MAX_COMMIT_HOOKS];
    int nhooks;
};

struct db_pool {
    struct db_settings settings;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    struct db_conn *free_list; /* idle connections (open, stale or not yet opened) */
    unsigned size;
    unsigned created;
    unsigned in_use;
    unsigned connecting; /* connections being opened right now: at most one (refill) */
};

/* ---- the state store's reachability, one per process ----
 *
 * Every connection of the process, pooled or standalone, goes to the one state store, so
 * they share one view of it. Without that, an outage under load was a connect attempt and a
 * warning line per request (half a million lines in 10 s) and, when PostgreSQL came back, a
 * storm of connects. Now the first failed connect starts an outage: it is logged once, and
 * while it lasts a connect is tried only when the backoff allows (one caller at a time, the
 * "probe": 100 ms doubling to reconnect_max_ms, jittered); everyone else fails at once,
 * without touching the network, and is counted. A summary line goes out every
 * log_interval_s, and one line when a connect succeeds again, with the outage's length. */
struct db_reach {
    pthread_mutex_t lock;
    int down;            /* an outage is under way */
    int probing;         /* the one attempt the backoff allows is in flight */
    double down_since;   /* monotonic seconds */
    double next_attempt; /* while down: no attempt before this */
    double last_line;    /* while down: when the last line about it was written */
    int backoff_ms;      /* current backoff step */
    uint64_t rng;        /* xorshift state for the jitter (under lock) */
    /* counted since the last line, and over the whole outage */
    unsigned long refused, failed, lost;
    unsigned long refused_all, failed_all, lost_all;
    char last_error[256];
    /* settings (db_reach_configure) */
    int reconnect_max_ms;
    int log_interval_s;
    /* Bumped when a connection is found lost or an outage starts: connections opened before
     * are suspect, and the pool closes them instead of handing them out. */
    atomic_uint generation;
    /* for /metrics */
    atomic_ulong m_attempts, m_failures, m_refused, m_outages;
};
static struct db_reach reach = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .backoff_ms = 100,
    .rng = 0x9e3779b97f4a7c15ull,
    .reconnect_max_ms = 1000,
    .log_interval_s = 10,
};
static struct log_limit lost_limit, pool_wait_limit;

#define DB_RECONNECT_MIN_MS 100

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void db_reach_configure(int reconnect_max_ms, int log_interval_s)
{
    pthread_mutex_lock(&reach.lock);
    reach.reconnect_max_ms =
        reconnect_max_ms < DB_RECONNECT_MIN_MS ? DB_RECONNECT_MIN_MS : reconnect_max_ms;
    reach.log_interval_s = log_interval_s < 1 ? 1 : log_interval_s;
    pthread_mutex_unlock(&reach.lock);
}

/* The next backoff delay: uniform in [step/2, step] (jitter, so that replicas that lost
 * the same server do not probe it in step). Under reach.lock. */
static double reach_delay_locked(void)
{
    reach.rng ^= reach.rng << 13;
    reach.rng ^= reach.rng >> 7;
    reach.rng ^= reach.rng << 17;
    int half = reach.backoff_ms / 2;
    int ms = half + (int)(reach.rng % (uint64_t)(half + 1));
    return (double)ms / 1000.0;
}

/* While down: the summary line, when its interval has passed. Under reach.lock. */
static void reach_summary_locked(double now)
{
    if (!reach.down || now - reach.last_line < (double)reach.log_interval_s)
        return;
    reach.last_line = now;
    log_event(LOG_WARN, "state store still unreachable",
              json_pack("{s:i,s:i,s:I,s:I,s:I,s:i,s:s}", "outage_s", (int)(now - reach.down_since),
                        "interval_s", reach.log_interval_s, "requests_refused",
                        (json_int_t)reach.refused, "connect_failures", (json_int_t)reach.failed,
                        "connections_lost", (json_int_t)reach.lost, "retry_ms", reach.backoff_ms,
                        "error", reach.last_error));
    reach.refused = reach.failed = reach.lost = 0;
}

/* May a connect be tried now? 1: yes (*probe set when it is the outage's probe); 0: no, fail
 * at once. `request` counts the refusal as a refused request (the pool's callers). */
static int reach_gate(int *probe, int request)
{
    *probe = 0;
    if (!__atomic_load_n(&reach.down, __ATOMIC_ACQUIRE))
        return 1;
    pthread_mutex_lock(&reach.lock);
    int ok = 1;
    if (reach.down) {
        double now = mono_s();
        if (reach.probing || now < reach.next_attempt) {
            ok = 0;
            if (request) {
                reach.refused++;
                reach.refused_all++;
                atomic_fetch_add(&reach.m_refused, 1);
            }
            reach_summary_locked(now);
        } else {
            reach.probing = 1;
            *probe = 1;
        }
    }
    pthread_mutex_unlock(&reach.lock);
    return ok;
}

/* The probe was granted but not used (no pool slot): let the next caller have it. */
static void reach_probe_cancel(void)
{
    pthread_mutex_lock(&reach.lock);
    reach.probing = 0;
    pthread_mutex_unlock(&reach.lock);
}

static void reach_connected(void)
{
    if (!__atomic_load_n(&reach.down, __ATOMIC_ACQUIRE))
        return;
    pthread_mutex_lock(&reach.lock);
    if (reach.down) {
        double now = mono_s();
        log_event(LOG_INFO, "state store reachable again",
                  json_pack("{s:i,s:I,s:I,s:I}", "outage_ms",
                            (int)((now - reach.down_since) * 1000.0), "requests_refused",
                            (json_int_t)reach.refused_all, "connect_failures",
                            (json_int_t)reach.failed_all, "connections_lost",
                            (json_int_t)reach.lost_all));
        __atomic_store_n(&reach.down, 0, __ATOMIC_RELEASE);
        reach.probing = 0;
        reach.backoff_ms = DB_RECONNECT_MIN_MS;
    }
    pthread_mutex_unlock(&reach.lock);
}

static void reach_failed(int probe, const char *error)
{
    atomic_fetch_add(&reach.m_failures, 1);
    pthread_mutex_lock(&reach.lock);
    double now = mono_s();
    snprintf(reach.last_error, sizeof reach.last_error, "%s", error);
    if (!reach.down) {
        __atomic_store_n(&reach.down, 1, __ATOMIC_RELEASE);
        atomic_fetch_add(&reach.m_outages, 1);
        atomic_fetch_add(&reach.generation, 1);
        reach.down_since = reach.last_line = now;
        reach.backoff_ms = DB_RECONNECT_MIN_MS;
        reach.next_attempt = now + reach_delay_locked();
        reach.refused = reach.failed = reach.lost = 0;
        reach.refused_all = reach.failed_all = reach.lost_all = 0;
        reach.probing = 0;
        log_event(LOG_WARN, "state store connection failed",
                  json_pack("{s:s,s:i,s:i}", "error", error, "retry_ms", reach.backoff_ms,
                            "summary_every_s", reach.log_interval_s));
    } else {
        reach.failed++;
        reach.failed_all++;
        if (probe) {
            reach.probing = 0;
            reach.backoff_ms *= 2;
            if (reach.backoff_ms > reach.reconnect_max_ms)
                reach.backoff_ms = reach.reconnect_max_ms;
            reach.next_attempt = now + reach_delay_locked();
        }
        reach_summary_locked(now);
    }
    pthread_mutex_unlock(&reach.lock);
}

/* A connection was found lost. Connections opened in its generation or before are suspect
 * (the pool closes them before reuse); one opened earlier than the last bump is already
 * accounted for, so a late discovery does not make the pool reopen fresh connections. */
static void reach_lost(struct db_conn *c, const char *what)
{
    unsigned gen = c->epoch;
    atomic_compare_exchange_strong(&reach.generation, &gen, gen + 1);
    if (__atomic_load_n(&reach.down, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&reach.lock);
        if (reach.down) {
            reach.lost++;
            reach.lost_all++;
            reach_summary_locked(mono_s());
            pthread_mutex_unlock(&reach.lock);
            return;
        }
        pthread_mutex_unlock(&reach.lock);
    }
    unsigned long held = 0;
    int interval_ms = reach.log_interval_s * 1000;
    if (log_limit_allow(&lost_limit, interval_ms, &held))
        log_event(LOG_WARN, "state store connection lost",
                  json_pack("{s:s,s:s,s:I,s:i}", "statement", what, "error", c->errmsg,
                            "lost_since_last_line", (json_int_t)held, "summary_every_s",
                            reach.log_interval_s));
}

int db_state_store_reachable(void)
{
    return !__atomic_load_n(&reach.down, __ATOMIC_ACQUIRE);
}

int db_reconnect_wait_ms(void)
{
    if (db_state_store_reachable())
        return 0;
    pthread_mutex_lock(&reach.lock);
    double left = reach.down ? reach.next_attempt - mono_s() : 0;
    pthread_mutex_unlock(&reach.lock);
    if (left < 0)
        return 0;
    return (int)(left * 1000.0) + 1;
}

void db_reach_stats(struct db_reach_stats *out)
{
    out->up = db_state_store_reachable();
    out->connect_attempts = atomic_load(&reach.m_attempts);
    out->connect_failures = atomic_load(&reach.m_failures);
    out->requests_refused = atomic_load(&reach.m_refused);
    out->outages = atomic_load(&reach.m_outages);
}

static int stmt_slot(struct db_stmt *st)
{
    int s = __atomic_load_n(&st->slot, __ATOMIC_ACQUIRE);
    if (s)
        return s;
    int fresh = atomic_fetch_add(&next_slot, 1);
    int expected = 0;
    if (!__atomic_compare_exchange_n(&st->slot, &expected, fresh, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
        return expected; /* another thread won; a slot number is wasted, harmlessly */
    return fresh;
}

/* Forget the open transaction's hooks unrun, giving each its cls back (drop). */
static void drop_commit_hooks(struct db_conn *c)
{
    int n = c->nhooks;
    c->nhooks = 0;
    for (int i = 0; i < n; i++)
        if (c->hooks[i].drop)
            c->hooks[i].drop(c->hooks[i].cls);
}

static void conn_disconnect(struct db_conn *c)
{
    drop_commit_hooks(c); /* a reset connection has no transaction left to follow */
    if (c->pg)
        PQfinish(c->pg);
    c->pg = NULL;
    memset(c->prepared, 0, sizeof c->prepared);
    c->broken = 0;
}

/* Notices and asynchronous errors from the server (e.g. "FATAL: terminating connection due
 * to administrator command", which every connection receives when PostgreSQL stops). libpq
 * prints them raw on stderr by default: one non-JSON line per connection. They become log
 * events instead, the serious ones rate-limited. */
static void on_notice(void *cls, const PGresult *res)
{
    (void)cls;
    static struct log_limit notice_limit;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    int serious = sev && (strcmp(sev, "WARNING") == 0 || strcmp(sev, "ERROR") == 0 ||
                          strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0);
    unsigned long held = 0;
    if (!serious) {
        log_event(LOG_DEBUG, "state store notice",
                  json_pack("{s:s,s:s}", "severity", sev ? sev : "", "message", msg ? msg : ""));
        return;
    }
    if (log_limit_allow(&notice_limit, reach.log_interval_s * 1000, &held))
        log_event(LOG_WARN, "state store notice",
                  json_pack("{s:s,s:s,s:I}", "severity", sev, "message", msg ? msg : "",
                            "held_back_since_last_line", (json_int_t)held));
}

/* Connect the (disconnected) `c` now; `probe`: this is the attempt an outage's backoff
 * granted. The outcome goes to the reachability state, which does the logging. */
static int conn_open_now(struct db_conn *c, int probe)
{
    atomic_fetch_add(&reach.m_attempts, 1);
    char timeout[16], options[64];
    snprintf(timeout, sizeof timeout, "%d", c->settings.connect_timeout_s);
    snprintf(options, sizeof options, "-c statement_timeout=%d", c->settings.statement_timeout_ms);
    const char *keys[] = {"dbname", "connect_timeout", "options", "application_name",
                          "keepalives", "keepalives_idle", NULL};
    const char *vals[] = {c->settings.url, timeout, options,
                          c->settings.application_name ? c->settings.application_name
                                                       : "qdb-control",
                          "1", "30", NULL};
    c->pg = PQconnectdbParams(keys, vals, 1);
    if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
        const char *m = c->pg ? PQerrorMessage(c->pg) : "out of memory";
        snprintf(c->errmsg, sizeof c->errmsg, "%s", m);
        size_t n = strlen(c->errmsg);
        while (n && (c->errmsg[n - 1] == '\n' || c->errmsg[n - 1] == ' '))
            c->errmsg[--n] = '\0';
        snprintf(c->sqlstate, sizeof c->sqlstate, "08001");
        reach_failed(probe, c->errmsg);
        if (c->pg)
            PQfinish(c->pg);
        c->pg = NULL;
        return DB_RETRY;
    }
    PQsetNoticeReceiver(c->pg, on_notice, NULL);
    c->epoch = atomic_load(&reach.generation);
    c->sqlstate[0] = '\0';
    reach_connected();
    return 0;
}

/* Connect `c`, unless an outage's backoff says not now (DB_RETRY at once, nothing logged:
 * the outage's lines count it). `request`: the caller is the pool (a request waits on it). */
static int conn_connect_gated(struct db_conn *c, int request)
{
    conn_disconnect(c);
    int probe;
    if (!reach_gate(&probe, request)) {
        snprintf(c->errmsg, sizeof c->errmsg, "%s",
                 "state store unreachable (waiting to reconnect)");
        snprintf(c->sqlstate, sizeof c->sqlstate, "08001");
        return DB_RETRY;
    }
    return conn_open_now(c, probe);
}

int db_conn_check(struct db_conn *c)
{
    if (c->pg && !c->broken && PQstatus(c->pg) == CONNECTION_OK)
        return 0;
    return conn_connect_gated(c, 0);
}

struct db_conn *db_conn_open(const struct db_settings *s)
{
    struct db_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->settings = *s;
    if (conn_connect_gated(c, 0) != 0) {
        free(c);
        return NULL;
    }
    return c;
}

void db_conn_close(struct db_conn *c)
{
    if (!c)
        return;
    conn_disconnect(c);
    free(c);
}

PGconn *db_pgconn(struct db_conn *c)
{
    return c->pg;
}

const char *db_last_sqlstate(const struct db_conn *c)
{
    return c->sqlstate;
}

const char *db_last_error(const struct db_conn *c)
{
    return c->errmsg;
}

/* Classify a failed result (res may be NULL) into DB_HARD / DB_RETRY / DB_UNIQUE. */
static int classify(struct db_conn *c, const PGresult *res, const char *what_full)
{
    /* `what` is a statement name or, for fixed SQL, its text: keep logs to one short line. */
    char what[64];
    snprintf(what, sizeof what, "%.*s", (int)strcspn(what_full, "\n"), what_full);
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", state ? state : "");
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c->pg);
    snprintf(c->errmsg, sizeof c->errmsg, "%s", msg ? msg : "");
    size_t n = strlen(c->errmsg);
    while (n && (c->errmsg[n - 1] == '\n' || c->errmsg[n - 1] == ' '))
        c->errmsg[--n] = '\0';

    if (PQstatus(c->pg) != CONNECTION_OK || (state && (strncmp(state, "08", 2) == 0 ||
                                                       strncmp(state, "57P", 3) == 0))) {
        c->broken = 1;
        reach_lost(c, what);
        return DB_RETRY;
    }
    if (state && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)) {
        log_event(LOG_DEBUG, "retryable database error",
                  json_pack("{s:s,s:s}", "statement", what, "sqlstate", state));
        return DB_RETRY;
    }
    if (state && strcmp(state, "23505") == 0)
        return DB_UNIQUE;
    /* Class 22 (data exception: a value out of range, malformed, invalid UTF-8) and the
     * rest of class 23 (integrity constraints) are the request's fault, not the server's:
     * a value the handler should have refused got through, so log it, but answer 4xx. A
     * NOT NULL or CHECK violation is about the value itself (400); a foreign key,
     * exclusion or restrict violation depends on other rows (409). Neither is retried. */
    if (state && strncmp(state, "22", 2) == 0) {
        log_event(LOG_WARN, "state store refused a value",
                  json_pack("{s:s,s:s}", "statement", what, "sqlstate", state));
        return DB_INVALID;
    }
    if (state && strncmp(state, "23", 2) == 0) {
        log_event(LOG_WARN, "state store refused a change",
                  json_pack("{s:s,s:s}", "statement", what, "sqlstate", state));
        return strcmp(state, "23502") == 0 || strcmp(state, "23514") == 0 ? DB_INVALID
                                                                          : DB_CONFLICT;
    }
    log_event(LOG_ERROR, "database error",
              json_pack("{s:s,s:s,s:s}", "statement", what, "sqlstate", state ? state : "",
                        "error", c->errmsg));
    return DB_HARD;
}

static int result_rows(const PGresult *res)
{
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        return PQntuples(res);
    const char *t = PQcmdTuples((PGresult *)res);
    if (!t || !*t)
        return 0;
    long n = strtol(t, NULL, 10);
    return n > INT32_MAX ? INT32_MAX : (int)n;
}

int db_exec(struct db_conn *c, struct db_stmt *st, const char *const *params, PGresult **out)
{
    if (out)
        *out = NULL;
    if (!c->pg || c->broken)
        return DB_RETRY;
    int slot = stmt_slot(st);
    if (slot >= DB_MAX_STMTS) {
        log_error("too many prepared statements (%d); raise DB_MAX_STMTS", slot);
        return DB_HARD;
    }
    if (!(c->prepared[slot / 8] & (1u << (slot % 8)))) {
        PGresult *p = PQprepare(c->pg, st->name, st->sql, st->nparams, NULL);
        if (!p || PQresultStatus(p) != PGRES_COMMAND_OK) {
            int rc = classify(c, p, st->name);
            PQclear(p);
            return rc;
        }
        PQclear(p);
        c->prepared[slot / 8] |= (unsigned char)(1u << (slot % 8));
    }
    PGresult *res = PQexecPrepared(c->pg, st->name, st->nparams, params, NULL, NULL, 0);
    ExecStatusType s = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
        int rc = classify(c, res, st->name);
        PQclear(res);
        return rc;
    }
    c->sqlstate[0] = '\0';
    int rows = result_rows(res);
    if (out)
        *out = res;
    else
        PQclear(res);
    return rows;
}

int db_exec_json(struct db_conn *c, struct db_stmt *st, const char *const *params, json_t **out)
{
    PGresult *res;
    *out = NULL;
    int rc = db_exec(c, st, params, &res);
    if (rc <= 0 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        return rc < 0 ? rc : 0;
    }
    json_error_t err;
    *out = json_loads(PQgetvalue(res, 0, 0), JSON_DECODE_ANY, &err);
    PQclear(res);
    if (!*out) {
        log_event(LOG_ERROR, "state store returned JSON that does not parse",
                  json_pack("{s:s,s:s}", "statement", st->name, "error", err.text));
        return DB_HARD;
    }
    return 1;
}

/* ---- typed parameters ---- */

static int param_slot(struct db_params *p)
{
    if (p->n >= DB_MAX_PARAMS) {
        p->invalid = 1;
        return -1;
    }
    return p->n++;
}

void db_param_text(struct db_params *p, const char *s)
{
    int i = param_slot(p);
    if (i >= 0)
        p->values[i] = s;
}

void db_param_int(struct db_params *p, int64_t v)
{
    int i = param_slot(p);
    if (i >= 0) {
        snprintf(p->num[i], sizeof p->num[i], "%" PRId64, v);
        p->values[i] = p->num[i];
    }
}

void db_param_int_or_null(struct db_params *p, int64_t v, int is_null)
{
    if (is_null)
        db_param_text(p, NULL);
    else
        db_param_int(p, v);
}

void db_param_bool(struct db_params *p, int v)
{
    db_param_text(p, v ? "true" : "false");
}

void db_param_json(struct db_params *p, const json_t *v)
{
    int i = param_slot(p);
    if (i < 0 || !v)
        return;
    p->owned[i] = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    if (!p->owned[i])
        p->invalid = 1;
    p->values[i] = p->owned[i];
}

void db_params_clear(struct db_params *p)
{
    for (int i = 0; i < p->n; i++) {
        free(p->owned[i]);
        p->owned[i] = NULL;
    }
}

/* Whether p fits st; logs and frees p when it does not. */
static int params_fit(const struct db_stmt *st, struct db_params *p)
{
    if (!p->invalid && p->n == st->nparams)
        return 1;
    log_event(LOG_ERROR, "statement parameters do not match",
              json_pack("{s:s,s:i,s:i}", "statement", st->name, "expected", st->nparams,
                        "given", p->n));
    db_params_clear(p);
    return 0;
}

int db_execp(struct db_conn *c, struct db_stmt *st, struct db_params *p, PGresult **res)
{
    if (res)
        *res = NULL;
    if (!params_fit(st, p))
        return DB_HARD;
    int rc = db_exec(c, st, p->values, res);
    db_params_clear(p);
    return rc;
}

int db_execp_json(struct db_conn *c, struct db_stmt *st, struct db_params *p, json_t **out)
{
    *out = NULL;
    if (!params_fit(st, p))
        return DB_HARD;
    int rc = db_exec_json(c, st, p->values, out);
    db_params_clear(p);
    return rc;
}

int db_exec_fixed(struct db_conn *c, const char *sql)
{
    if (!c->pg || c->broken)
        return DB_RETRY;
    PGresult *res = PQexec(c->pg, sql);
    ExecStatusType s = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) {
        int rc = classify(c, res, sql);
        PQclear(res);
        return rc;
    }
    int rows = result_rows(res);
    PQclear(res);
    return rows;
}

int db_begin(struct db_conn *c)
{
    return db_exec_fixed(c, "BEGIN") < 0 ? (c->broken ? DB_RETRY : DB_HARD) : 0;
}

int db_on_commit(struct db_conn *c, void (*fn)(struct db_conn *c, void *cls), void *cls)
{
    for (int i = 0; i < c->nhooks; i++)
        if (c->hooks[i].fn == fn && c->hooks[i].cls == cls)
            return 0;
    return db_on_commit_owned(c, fn, NULL, cls);
}

int db_on_commit_owned(struct db_conn *c, void (*fn)(struct db_conn *c, void *cls),
                       void (*drop)(void *cls), void *cls)
{
    if (c->nhooks >= DB_MAX_COMMIT_HOOKS)
        return -1;
    c->hooks[c->nhooks].fn = fn;
    c->hooks[c->nhooks].drop = drop;
    c->hooks[c->nhooks].cls = cls;
    c->nhooks++;
    return 0;
}

void *db_commit_hook_cls(const struct db_conn *c, void (*fn)(struct db_conn *c, void *cls))
{
    for (int i = 0; i < c->nhooks; i++)
        if (c->hooks[i].fn == fn)
            return c->hooks[i].cls;
    return NULL;
}

/* The hooks are taken off the connection before any runs: a hook may run transactions of
 * its own on it, whose commits must not run them again. */
static void run_commit_hooks(struct db_conn *c)
{
    int n = c->nhooks;
    if (!n)
        return;
    struct commit_hook run[DB_MAX_COMMIT_HOOKS];
    memcpy(run, c->hooks, sizeof run[0] * (size_t)n);
    c->nhooks = 0;
    for (int i = 0; i < n; i++)
        run[i].fn(c, run[i].cls);
}

int db_commit(struct db_conn *c)
{
    if (c->pg && PQtransactionStatus(c->pg) == PQTRANS_INERROR)
        drop_commit_hooks(c); /* this COMMIT answers "ROLLBACK": nothing commits */
    int rc = db_exec_fixed(c, "COMMIT");
    if (rc >= 0) {
        run_commit_hooks(c);
        return 0;
    }
    drop_commit_hooks(c); /* nothing committed, or nothing known: nothing to follow up */
    if (c->broken) {
        /* The COMMIT may or may not have reached the server: never retry it blindly. */
        log_error("connection lost during COMMIT; outcome unknown");
        return DB_HARD;
    }
    return rc;
}

void db_rollback(struct db_conn *c)
{
    drop_commit_hooks(c);
    if (c->pg && !c->broken && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        (void)db_exec_fixed(c, "ROLLBACK");
}

/* 0..9 ms of jitter for the retry backoff. rand() shares one state between threads (a data
 * race), so each thread keeps its own xorshift state, seeded from OpenSSL's generator. */
static unsigned retry_jitter_ms(void)
{
    static _Thread_local uint32_t x;
    if (!x && (RAND_bytes((unsigned char *)&x, sizeof x) != 1 || !x))
        x = (uint32_t)(uintptr_t)&x | 1u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x % 10;
}

int db_tx(struct db_conn *c, int (*fn)(struct db_conn *, void *), void *cls)
{
    int rc = DB_RETRY;
    for (int attempt = 0; attempt < 5; attempt++) {
        if (attempt) {
            struct timespec ts = {0, (long)((5u << attempt) + retry_jitter_ms()) * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (db_conn_check(c) != 0) {
            rc = DB_RETRY;
            continue;
        }
        rc = db_begin(c);
        if (rc < 0) {
            if (rc == DB_RETRY)
                continue;
            return rc;
        }
        rc = fn(c, cls);
        if (rc < 0) {
            db_rollback(c);
            if (rc == DB_RETRY)
                continue;
            return rc;
        }
        int crc = db_commit(c);
        if (crc == DB_RETRY)
            continue;
        return crc < 0 ? crc : rc;
    }
    return rc;
}

/* ---- pool ---- */

struct db_pool *db_pool_new(const struct db_settings *s, unsigned size)
{
    struct db_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->settings = *s;
    p->size = size;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->freed, NULL);
    return p;
}

void db_pool_free(struct db_pool *p)
{
    if (!p)
        return;
    struct db_conn *c = p->free_list;
    while (c) {
        struct db_conn *next = c->next_free;
        db_conn_close(c);
        c = next;
    }
    pthread_cond_destroy(&p->freed);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* Take an idle connection that is open and not suspect, or NULL. Under p->lock. */
static struct db_conn *take_open_locked(struct db_pool *p, unsigned gen)
{
    for (struct db_conn **pp = &p->free_list; *pp; pp = &(*pp)->next_free) {
        struct db_conn *c = *pp;
        if (c->pg && c->epoch == gen) {
            *pp = c->next_free;
            return c;
        }
    }
    return NULL;
}

/* A slot to open a connection in: an idle one that is closed or suspect, or a new one
 * while the pool is below its size. NULL when there is none. Under p->lock. */
static struct db_conn *take_slot_locked(struct db_pool *p)
{
    if (p->free_list) {
        struct db_conn *c = p->free_list;
        p->free_list = c->next_free;
        return c;
    }
    if (p->created >= p->size)
        return NULL;
    struct db_conn *c = calloc(1, sizeof *c);
    if (c) {
        c->settings = p->settings;
        p->created++;
    }
    return c;
}

struct db_conn *db_acquire(struct db_pool *p, int wait_ms)
{
    struct timespec deadline = deadline_after(CLOCK_REALTIME, wait_ms / 1000.0);
    struct db_conn *c = NULL;
    int must_connect = 0, probe = 0, timed_out = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (!db_state_store_reachable()) {
            /* An outage: 503 at once, except for the one connect the backoff allows. */
            if (!reach_gate(&probe, 1))
                break;
            if (probe) {
                c = take_slot_locked(p);
                if (!c) {
                    reach_probe_cancel();
                    break;
                }
                must_connect = 1;
                p->connecting++;
                break;
            }
            /* the outage ended meanwhile: go on as usual */
        }
        unsigned gen = atomic_load(&reach.generation);
        c = take_open_locked(p, gen);
        if (c)
            break;
        /* Open connections one at a time: after an outage the pool refills as the load asks,
         * without a burst of connects at a server that has just come back. */
        if (p->connecting == 0) {
            c = take_slot_locked(p);
            if (c) {
                must_connect = 1;
                p->connecting++;
                break;
            }
        }
        if (pthread_cond_timedwait(&p->freed, &p->lock, &deadline) == ETIMEDOUT) {
            timed_out = 1;
            break;
        }
    }
    if (c)
        p->in_use++;
    pthread_mutex_unlock(&p->lock);
    if (!c) {
        unsigned long held = 0;
        if (timed_out && log_limit_allow(&pool_wait_limit, reach.log_interval_s * 1000, &held))
            log_event(LOG_WARN, "no state store connection free in time",
                      json_pack("{s:i,s:I}", "wait_ms", wait_ms, "held_back_since_last_line",
                                (json_int_t)held));
        return NULL;
    }
    int rc = 0;
    if (must_connect) {
        if (probe) {
            /* the gate already granted this attempt: connect without asking again */
            conn_disconnect(c);
            rc = conn_open_now(c, 1);
        } else {
            rc = conn_connect_gated(c, 1);
        }
        pthread_mutex_lock(&p->lock);
        p->connecting--;
        pthread_cond_broadcast(&p->freed); /* waiters may open the next one, or give up */
        pthread_mutex_unlock(&p->lock);
    } else if (db_conn_check(c) != 0) {
        rc = DB_RETRY; /* only when libpq already knew the connection bad */
    }
    if (rc != 0) {
        db_release(p, c);
        return NULL;
    }
    return c;
}

void db_release(struct db_pool *p, struct db_conn *c)
{
    if (!c)
        return;
    drop_commit_hooks(c); /* the next user's transactions are its own */
    if (c->pg && !c->broken) {
        PGTransactionStatusType ts = PQtransactionStatus(c->pg);
        if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
            db_rollback(c);
        else if (ts != PQTRANS_IDLE)
            c->broken = 1;
    }
    if (c->broken)
        conn_disconnect(c);
    pthread_mutex_lock(&p->lock);
    c->next_free = p->free_list;
    p->free_list = c;
    p->in_use--;
    pthread_cond_signal(&p->freed);
    pthread_mutex_unlock(&p->lock);
}

void db_pool_stats(struct db_pool *p, unsigned *in_use, unsigned *idle, unsigned *size)
{
    pthread_mutex_lock(&p->lock);
    unsigned open_idle = 0;
    for (struct db_conn *c = p->free_list; c; c = c->next_free)
        if (c->pg)
            open_idle++;
    *in_use = p->in_use;
    *idle = open_idle;
    *size = p->size;
    pthread_mutex_unlock(&p->lock);
}

const char *db_int64(char out[24], int64_t v)
{
    snprintf(out, 24, "%" PRId64, v);
    return out;
}

int64_t db_get_int64(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return 0;
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

const char *db_get_str(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col))
        return NULL;
    return PQgetvalue(res, row, col);
}
