/* Helpers of the tests against the Kafka protocol: the mock cluster as a child process
 * (qdb-kafka-mock, 3 brokers, driven by commands on its stdin), a real librdkafka consumer
 * that reads topics back from the beginning, events written straight into the outbox from
 * concurrent sessions, and the exactly-once / per-key order analysis by CloudEvent id. */
#ifndef QDB_TEST_KAFKA_HELPERS_H
#define QDB_TEST_KAFKA_HELPERS_H

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* A NUL-terminated copy of n bytes that need not be terminated (strndup would read past
 * them looking for a NUL: ASan's strict_string_checks says so). */
static inline char *kt_copy(const void *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        if (n)
            memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* ---- the mock cluster ---- */

struct kt_mock {
    pid_t pid;
    FILE *in, *out;
    char bootstrap[512];
};

static inline int kt_mock_start(struct kt_mock *m)
{
    int to[2], from[2];
    if (pipe(to) != 0 || pipe(from) != 0)
        return -1;
    pid_t parent = getpid();
    m->pid = fork();
    if (m->pid == 0) {
        /* a test that dies (a failed check that aborts, a crash) takes its Kafka with it */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        dup2(to[0], 0);
        dup2(from[1], 1);
        close(to[1]);
        close(from[0]);
        execl(QDB_BUILD_DIR "/qdb-kafka-mock", "qdb-kafka-mock", (char *)NULL);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    m->in = fdopen(to[1], "w");
    m->out = fdopen(from[0], "r");
    if (!m->in || !m->out || !fgets(m->bootstrap, sizeof m->bootstrap, m->out))
        return -1;
    m->bootstrap[strcspn(m->bootstrap, "\n")] = '\0';
    return strchr(m->bootstrap, ':') ? 0 : -1;
}

/* Send one command; returns 0 when it answered "ok". */
static inline int kt_mock_cmd(struct kt_mock *m, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline int kt_mock_cmd(struct kt_mock *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(m->in, fmt, ap);
    va_end(ap);
    fputc('\n', m->in);
    fflush(m->in);
    char line[256];
    if (!fgets(line, sizeof line, m->out))
        return -1;
    if (strncmp(line, "ok", 2) != 0) {
        fprintf(stderr, "mock: %s", line);
        return -1;
    }
    return 0;
}

static inline void kt_mock_stop(struct kt_mock *m)
{
    if (m->pid > 0) {
        kill(m->pid, SIGTERM);
        waitpid(m->pid, NULL, 0);
        m->pid = 0;
    }
    if (m->in)
        fclose(m->in);
    if (m->out)
        fclose(m->out);
    m->in = m->out = NULL;
}

/* ---- reading back ---- */

struct kt_msg {
    char *key;
    long long id;    /* the CloudEvent's id */
    json_t *event;   /* the parsed value */
    int ce_header;   /* content-type: application/cloudevents+json */
    char *dlq_error; /* header dlq-error, or NULL */
    int32_t partition;
};

struct kt_read {
    struct kt_msg *m;
    size_t n, cap;
};

static inline void kt_read_free(struct kt_read *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->m[i].key);
        free(r->m[i].dlq_error);
        json_decref(r->m[i].event);
    }
    free(r->m);
    memset(r, 0, sizeof *r);
}

/* Read `topic` (partitions 0..nparts-1) from the beginning until at least `want` messages
 * came and then nothing new for idle_ms (to see duplicates), or timeout_ms passed. */
static inline int kt_read_topic(const char *bootstrap, const char *topic, int nparts, size_t want,
                                int idle_ms, int timeout_ms, struct kt_read *out)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof err);
    rd_kafka_conf_set(conf, "group.id", "qdb-test-reader", err, sizeof err);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err);
    rd_kafka_conf_set(conf, "log_level", "2", err, sizeof err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk)
        return -1;
    rd_kafka_topic_partition_list_t *tp = rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(tp, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, tp);
    rd_kafka_topic_partition_list_destroy(tp);
    double start = th_now_ms(), last_new = start;
    for (;;) {
        double now = th_now_ms();
        if (now - start > timeout_ms)
            break;
        if (out->n >= want && now - last_new > idle_ms)
            break;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 1024;
            out->m = realloc(out->m, out->cap * sizeof *out->m);
        }
        struct kt_msg *k = &out->m[out->n++];
        memset(k, 0, sizeof *k);
        k->key = kt_copy(m->key, m->key ? m->key_len : 0);
        k->event = json_loadb(m->payload, m->len, 0, NULL);
        const char *id = json_string_value(json_object_get(k->event, "id"));
        k->id = id ? strtoll(id, NULL, 10) : -1;
        k->partition = m->partition;
        rd_kafka_headers_t *h = NULL;
        if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            const void *v;
            size_t vl;
            if (rd_kafka_header_get_last(h, "content-type", &v, &vl) == 0)
                k->ce_header = vl == strlen("application/cloudevents+json") &&
                               memcmp(v, "application/cloudevents+json", vl) == 0;
            if (rd_kafka_header_get_last(h, "dlq-error", &v, &vl) == 0)
                k->dlq_error = kt_copy(v, vl);
        }
        last_new = th_now_ms();
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return 0;
}

/* ---- the analysis ---- */

struct kt_report {
    long expected, missing, duplicates, out_of_order, bad;
};

/* Compare what was read with the outbox rows of `topic` with ids in (from_id, to_id]:
 * every row's id arrived (missing otherwise), extra copies are counted, each key's first
 * copies came in id order, and each message is a valid CloudEvent with the header and the
 * key = subject. */
static inline struct kt_report kt_analyse(const char *url, const char *topic, long from_id,
                                          long to_id, const struct kt_read *r)
{
    struct kt_report rep = {0};
    char a[24], b[24];
    snprintf(a, sizeof a, "%ld", from_id);
    snprintf(b, sizeof b, "%ld", to_id);
    PGresult *res = th_sql(url,
                           "SELECT id, key FROM outbox WHERE topic = $1 AND id > $2::bigint AND "
                           "id <= $3::bigint ORDER BY id",
                           topic, a, b, NULL);
    long n = res ? PQntuples(res) : 0;
    rep.expected = n;
    long span = to_id - from_id + 1;
    int *seen = calloc((size_t)span + 1, sizeof *seen);
    char **keys = calloc((size_t)span + 1, sizeof *keys);
    for (long i = 0; i < n; i++) {
        long id = strtol(PQgetvalue(res, (int)i, 0), NULL, 10);
        keys[id - from_id] = strdup(PQgetvalue(res, (int)i, 1));
    }
    /* per key, the last first-copy id seen, in a small open table */
    size_t cap = 1;
    while (cap < (size_t)n * 2 + 16)
        cap <<= 1;
    char **tk = calloc(cap, sizeof *tk);
    long *tv = calloc(cap, sizeof *tv);
    for (size_t i = 0; i < r->n; i++) {
        const struct kt_msg *m = &r->m[i];
        if (m->id <= from_id || m->id > to_id || !keys[m->id - from_id])
            continue; /* another test phase's, or not of this topic */
        const char *sub = json_string_value(json_object_get(m->event, "subject"));
        if (!m->ce_header || !sub || strcmp(sub, m->key) != 0 ||
            strcmp(m->key, keys[m->id - from_id]) != 0 ||
            !json_string_value(json_object_get(m->event, "specversion")) ||
            !json_string_value(json_object_get(m->event, "type")) ||
            !json_string_value(json_object_get(m->event, "time")) ||
            !json_string_value(json_object_get(m->event, "source")))
            rep.bad++;
        if (seen[m->id - from_id]++) {
            rep.duplicates++;
            continue;
        }
        unsigned long h = 5381;
        for (const char *c = m->key; *c; c++)
            h = h * 33 + (unsigned char)*c;
        size_t j = h & (cap - 1);
        while (tk[j] && strcmp(tk[j], m->key) != 0)
            j = (j + 1) & (cap - 1);
        if (!tk[j])
            tk[j] = m->key;
        else if (tv[j] > m->id)
            rep.out_of_order++;
        tv[j] = m->id;
    }
    for (long i = 0; i < n; i++) {
        long id = strtol(PQgetvalue(res, (int)i, 0), NULL, 10);
        if (!seen[id - from_id])
            rep.missing++;
    }
    for (long i = 0; i <= span; i++)
        free(keys[i]);
    free(keys);
    free(seen);
    free(tk);
    free(tv);
    PQclear(res);
    return rep;
}

/* ---- writing events straight into the outbox ---- */

/* `n` events of topic app.controlplane.test in transactions of `per_tx`, keys
 * "<prefix>-0".."<prefix>-<nkeys-1>" in turn, each a CloudEvent built as audit_event_emit
 * builds them (id and time from the row). One session: per key, commit order is id order. */
struct kt_writer {
    const char *url, *prefix;
    int n, per_tx, nkeys, hold_ms; /* hold_ms: keep each transaction open that long */
    int written;
};

static inline void *kt_writer_main(void *cls)
{
    struct kt_writer *w = cls;
    PGconn *c = PQconnectdb(w->url);
    if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return NULL;
    }
    const char *sql =
        "WITH n AS (SELECT nextval(pg_get_serial_sequence('outbox', 'id')) AS id, "
        "clock_timestamp() AS t, $1 || '-' || ((g + $2::int) % $3::int) AS key, g "
        "FROM generate_series(1, $4::int) g ORDER BY g) "
        "INSERT INTO outbox (id, topic, key, event, created_at) SELECT n.id, "
        "'app.controlplane.test', n.key, jsonb_build_object('specversion', '1.0', 'id', "
        "n.id::text, 'source', 'urn:qdb:control-plane', 'type', "
        "'qa.qdb.controlplane.test.made', 'subject', n.key, 'time', to_char(n.t AT TIME ZONE "
        "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), 'datacontenttype', 'application/json', "
        "'data', jsonb_build_object('g', n.g), 'actor', 'test', 'actortype', 'test'), n.t "
        "FROM n ORDER BY n.id";
    for (int done = 0; done < w->n;) {
        int k = w->n - done < w->per_tx ? w->n - done : w->per_tx;
        char off[24], nk[24], cnt[24];
        snprintf(off, sizeof off, "%d", done);
        snprintf(nk, sizeof nk, "%d", w->nkeys);
        snprintf(cnt, sizeof cnt, "%d", k);
        const char *p[] = {w->prefix, off, nk, cnt};
        PQclear(PQexec(c, "BEGIN"));
        PGresult *r = PQexecParams(c, sql, 4, NULL, p, NULL, NULL, 0);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (ok && w->hold_ms > 0)
            usleep((useconds_t)w->hold_ms * 1000);
        r = PQexec(c, ok ? "COMMIT" : "ROLLBACK");
        PQclear(r);
        if (!ok)
            break;
        done += k;
        w->written = done;
    }
    PQfinish(c);
    return NULL;
}

/* Run `nw` writers at once (their commits interleave out of id order across keys). */
static inline int kt_write_concurrently(struct kt_writer *w, int nw)
{
    pthread_t t[16];
    for (int i = 0; i < nw; i++)
        pthread_create(&t[i], NULL, kt_writer_main, &w[i]);
    int total = 0;
    for (int i = 0; i < nw; i++) {
        pthread_join(t[i], NULL);
        total += w[i].written;
    }
    return total;
}

static inline long kt_max_id(const char *url)
{
    return th_sql_long(url, "SELECT coalesce(max(id), 0) FROM outbox", NULL);
}

/* Wait until no row with id <= to_id is unpublished; returns how many still are. */
static inline long kt_wait_published(const char *url, long to_id, int timeout_ms)
{
    char b[24];
    snprintf(b, sizeof b, "%ld", to_id);
    long left = -1;
    for (double t0 = th_now_ms(); th_now_ms() - t0 < timeout_ms; th_sleep_ms(100)) {
        left = th_sql_long(url,
                           "SELECT count(*) FROM outbox WHERE published_at IS NULL AND id <= "
                           "$1::bigint",
                           b, NULL);
        if (left == 0)
            break;
    }
    return left;
}

#endif
