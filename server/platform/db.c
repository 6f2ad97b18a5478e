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

/* Statement slots: each distinct struct db_stmt gets a small number, so that a connection
 * remembers what it has prepared in a bitmap instead of a name lookup. */
#define DB_MAX_STMTS 1024
static atomic_int next_slot = 1;

struct db_conn {
    PGconn *pg;
    struct db_settings settings; /* borrowed strings; copied struct */
    unsigned char prepared[DB_MAX_STMTS / 8];
    unsigned epoch; /* pool epoch at connect time; pooled connections only */
    int broken;
    char sqlstate[6];
    char errmsg[256];
    struct db_conn *next_free;
};

struct db_pool {
    struct db_settings settings;
    pthread_mutex_t lock;
    pthread_cond_t freed;
    struct db_conn *free_list; /* idle connections (open or not yet opened) */
    unsigned size;
    unsigned created;
    unsigned in_use;
    atomic_uint epoch; /* bumped when any connection finds the server gone */
};

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

static void conn_disconnect(struct db_conn *c)
{
    if (c->pg)
        PQfinish(c->pg);
    c->pg = NULL;
    memset(c->prepared, 0, sizeof c->prepared);
    c->broken = 0;
}

static int conn_connect(struct db_conn *c)
{
    conn_disconnect(c);
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
        log_event(LOG_WARN, "state store connection failed",
                  json_pack("{s:s}", "error", c->errmsg));
        if (c->pg)
            PQfinish(c->pg);
        c->pg = NULL;
        return DB_RETRY;
    }
    return 0;
}

int db_conn_check(struct db_conn *c)
{
    if (c->pg && !c->broken && PQstatus(c->pg) == CONNECTION_OK)
        return 0;
    return conn_connect(c);
}

struct db_conn *db_conn_open(const struct db_settings *s)
{
    struct db_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->settings = *s;
    if (conn_connect(c) != 0) {
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
        log_event(LOG_WARN, "state store connection lost",
                  json_pack("{s:s,s:s}", "statement", what, "error", c->errmsg));
        return DB_RETRY;
    }
    if (state && (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)) {
        log_event(LOG_DEBUG, "retryable database error",
                  json_pack("{s:s,s:s}", "statement", what, "sqlstate", state));
        return DB_RETRY;
    }
    if (state && strcmp(state, "23505") == 0)
        return DB_UNIQUE;
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

int db_commit(struct db_conn *c)
{
    int rc = db_exec_fixed(c, "COMMIT");
    if (rc >= 0)
        return 0;
    if (c->broken) {
        /* The COMMIT may or may not have reached the server: never retry it blindly. */
        log_error("connection lost during COMMIT; outcome unknown");
        return DB_HARD;
    }
    return rc;
}

void db_rollback(struct db_conn *c)
{
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
    atomic_init(&p->epoch, 0);
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

struct db_conn *db_acquire(struct db_pool *p, int wait_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += wait_ms / 1000;
    deadline.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    struct db_conn *c = NULL;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (p->free_list) {
            c = p->free_list;
            p->free_list = c->next_free;
            break;
        }
        if (p->created < p->size) {
            c = calloc(1, sizeof *c);
            if (c) {
                c->settings = p->settings;
                p->created++;
            }
            break;
        }
        if (pthread_cond_timedwait(&p->freed, &p->lock, &deadline) == ETIMEDOUT)
            break;
    }
    if (c)
        p->in_use++;
    pthread_mutex_unlock(&p->lock);
    if (!c) {
        log_warn("no state store connection free within %d ms", wait_ms);
        return NULL;
    }
    unsigned epoch = atomic_load(&p->epoch);
    if (c->pg && c->epoch != epoch)
        conn_disconnect(c); /* the server went away since this one connected */
    if (db_conn_check(c) != 0) {
        db_release(p, c);
        return NULL;
    }
    c->epoch = epoch;
    return c;
}

void db_release(struct db_pool *p, struct db_conn *c)
{
    if (!c)
        return;
    if (c->pg && !c->broken) {
        PGTransactionStatusType ts = PQtransactionStatus(c->pg);
        if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
            db_rollback(c);
        else if (ts != PQTRANS_IDLE)
            c->broken = 1;
    }
    if (c->broken) {
        atomic_fetch_add(&p->epoch, 1);
        conn_disconnect(c);
    }
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
