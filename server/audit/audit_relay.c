/* The outbox relay: one thread per replica, with a connection of its own. Every replica's
 * relay reads the outbox's state each second (qdb_outbox_backlog and friends); the one that
 * holds the relay's session advisory lock (platform/db_lock.h) also publishes: it reads the
 * unpublished rows in id order in batches, produces them with librdkafka, marks each row
 * published only from its delivery report (one UPDATE per batch of reports) and prunes the
 * published rows past QDB_OUTBOX_RETENTION.
 *
 * Why an advisory lock and not the schedules' leader row (job_leader, a jobs table that
 * audit must not touch): the lock goes with the session, so a leader killed mid-batch hands
 * over the moment PostgreSQL sees its connection close, and a leader that lost its
 * connection knows it lost the lock too (db_session_lock_held) instead of trusting a TTL.
 * Two leaders can still overlap for the time an old one keeps producing what it read
 * before it lost its session: that, and a leader killed between a delivery and its mark,
 * are the duplicates of this at-least-once relay. Every copy carries the same CloudEvent
 * id (the row's), so consumers drop them by id.
 *
 * Order per key (the subject, so per object and per partition):
 *   - an object's events are written under the object's row lock (its UPDATE, or the INSERT
 *     that creates it), and the outbox id is drawn inside that transaction, after the lock:
 *     of two events of one key, the later-committed has the higher id, and it does not exist
 *     until the earlier one has committed;
 *   - each batch is the lowest unpublished ids that are visible, in id order, minus the
 *     ones in flight (no "last id" cursor: a row that commits after a higher id was read is
 *     read by the next batch, not skipped), so a batch that holds an event also holds or
 *     follows every earlier event of its key;
 *   - librdkafka's idempotent producer (enable.idempotence, at most 5 requests in flight)
 *     keeps produce order within a partition through its own retries, and with
 *     message.timeout.ms = 0 it never gives a message up for time: a delivery report is a
 *     success, a permanent refusal (to the DLQ, below) or a fatal error (the producer is
 *     rebuilt and everything unmarked is read again, in id order);
 *   - a row that failed transiently waits out its backoff, and the batch query holds back
 *     every later row of its key meanwhile (index outbox_backoff).
 *
 * A message Kafka refuses for good (too large, invalid topic) goes to the DLQ topic with the
 * error in its headers and its row is marked dead_lettered with last_error: no endless
 * retry. With Kafka unreachable the batch in flight simply waits inside librdkafka (rows stay
 * unpublished, the backlog grows, one warning a minute, /readyz is not involved) and flows
 * when Kafka is back. Without QDB_KAFKA_BROKERS nothing is produced and the thread only
 * counts the backlog. */
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "audit/audit_internal.h"
#include "audit/audit_outbox_internal.h"
#include "platform/buf.h"
#include "platform/config.h"
#include "platform/db_lock.h"
#include "platform/log.h"
#include "platform/metrics.h"

/* The relay's advisory lock key: "qdbrelay" in ASCII, so that it shows as itself in pg_locks
 * and collides with nothing the other rooms lock. */
#define RELAY_LOCK_KEY 0x716462726c6179LL
#define STATE_EVERY_S 1.0
#define PRUNE_BATCH 1000
#define WARN_EVERY_S 60.0
#define MARK_WAIT_S 0.003
#define BACKOFF_MAX_MS 60000
#define ERROR_MAX 400

static struct relay_settings {
    const char *brokers; /* NULL: Kafka not configured */
    const char *security_protocol, *sasl_mechanism, *sasl_username, *sasl_password_file;
    const char *ssl_ca_file, *ssl_cert_file, *ssl_key_file;
    const char *dlq_topic;
    long linger_ms, message_max_bytes, batch, poll_ms, retention_s, prune_every_s;
    long inflight_max;
} rs;

int audit_relay_config_load(void)
{
    if (config_str("QDB_KAFKA_BROKERS", NULL, &rs.brokers) != 0 ||
        config_str("QDB_KAFKA_SECURITY_PROTOCOL", NULL, &rs.security_protocol) != 0 ||
        config_str("QDB_KAFKA_SASL_MECHANISM", NULL, &rs.sasl_mechanism) != 0 ||
        config_str("QDB_KAFKA_SASL_USERNAME", NULL, &rs.sasl_username) != 0 ||
        config_str("QDB_KAFKA_SASL_PASSWORD_FILE", NULL, &rs.sasl_password_file) != 0 ||
        config_str("QDB_KAFKA_SSL_CA_FILE", NULL, &rs.ssl_ca_file) != 0 ||
        config_str("QDB_KAFKA_SSL_CERT_FILE", NULL, &rs.ssl_cert_file) != 0 ||
        config_str("QDB_KAFKA_SSL_KEY_FILE", NULL, &rs.ssl_key_file) != 0 ||
        config_str("QDB_KAFKA_DLQ_TOPIC", "dlq.controlplane", &rs.dlq_topic) != 0 ||
        config_int("QDB_KAFKA_LINGER_MS", 5, 0, 1000, &rs.linger_ms) != 0 ||
        config_int("QDB_KAFKA_MESSAGE_MAX_BYTES", 1000000, 1000, 100000000,
                   &rs.message_max_bytes) != 0 ||
        config_int("QDB_OUTBOX_BATCH", 500, 1, 10000, &rs.batch) != 0 ||
        config_int("QDB_OUTBOX_POLL_MS", 10, 5, 60000, &rs.poll_ms) != 0 ||
        config_seconds("QDB_OUTBOX_RETENTION", 7 * 86400L, 60, 3650 * 86400L, &rs.retention_s) !=
            0 ||
        config_seconds("QDB_OUTBOX_PRUNE_INTERVAL", 60, 1, 3600, &rs.prune_every_s) != 0)
        return -1;
    if (rs.brokers && !rs.brokers[0])
        rs.brokers = NULL;
    if (rs.sasl_password_file && !rs.sasl_username)
        return config_error("QDB_KAFKA_SASL_PASSWORD_FILE", "needs QDB_KAFKA_SASL_USERNAME");
    for (const char *c = rs.dlq_topic; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '_' || *c == '-'))
            return config_error("QDB_KAFKA_DLQ_TOPIC", "must be a Kafka topic name");
    /* four batches in flight: reading the next batch overlaps the deliveries of the last */
    rs.inflight_max = rs.batch * 4;
    return 0;
}

int audit_relay_kafka_configured(void)
{
    return rs.brokers != NULL;
}

/* ---- the thread's state ---- */

enum stage { SLOT_FREE, SLOT_MAIN, SLOT_DLQ };

/* One message in flight: its row, and what its delivery report said. */
struct relay_slot {
    enum stage stage;
    int done;                     /* a delivery report came (err says how it went) */
    int marked_pending;           /* delivered; waiting for the UPDATE that marks it */
    rd_kafka_resp_err_t err;      /* of the report (MAIN: the main topic's; DLQ: the DLQ's) */
    rd_kafka_resp_err_t main_err; /* why it went to the DLQ */
    int64_t id;
    int attempts;
    double produced_at; /* monotonic */
    double done_at;     /* monotonic, when the report came */
    char *topic, *key, *value;
};

static struct relay {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping, kicked; /* under mu */
    pthread_t thread;
    int running;
    struct db_settings dbs;
    char instance[128];

    /* the thread's own */
    rd_kafka_t *rk;
    struct relay_slot *slots;
    int64_t *scratch; /* nslots ids: the in-flight ids, sorted, for a read */
    long nslots, inflight;
    int fatal; /* the producer raised a fatal error: rebuild it */

    /* for /metrics, written by the thread */
    atomic_int leading, state_known;
    _Atomic int64_t backlog, published_total, dead_lettered_total;
    _Atomic double oldest_age_s;
    atomic_uint_fast64_t published, dead_lettered, failed;
} relay = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

void audit_relay_kick(void)
{
    if (!rs.brokers)
        return;
    pthread_mutex_lock(&relay.mu);
    relay.kicked = 1;
    pthread_cond_signal(&relay.cv);
    pthread_mutex_unlock(&relay.mu);
}

void audit_relay_metrics(struct audit_outbox_state *st, uint64_t *published,
                         uint64_t *dead_lettered, uint64_t *failed, int *leading)
{
    st->backlog = atomic_load(&relay.backlog);
    st->oldest_age_s = atomic_load(&relay.oldest_age_s);
    st->published_total = atomic_load(&relay.published_total);
    st->dead_lettered_total = atomic_load(&relay.dead_lettered_total);
    *published = atomic_load(&relay.published);
    *dead_lettered = atomic_load(&relay.dead_lettered);
    *failed = atomic_load(&relay.failed);
    *leading = atomic_load(&relay.leading);
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int stopping(void)
{
    pthread_mutex_lock(&relay.mu);
    int s = relay.stopping;
    pthread_mutex_unlock(&relay.mu);
    return s;
}

/* Wait up to ms, or until kicked or told to stop. */
static void wait_ms(long ms)
{
    pthread_mutex_lock(&relay.mu);
    if (!relay.kicked && !relay.stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long ns = (long long)ts.tv_nsec + (long long)ms * 1000000LL;
        ts.tv_sec += (time_t)(ns / 1000000000LL);
        ts.tv_nsec = (long)(ns % 1000000000LL);
        pthread_cond_timedwait(&relay.cv, &relay.mu, &ts);
    }
    relay.kicked = 0;
    pthread_mutex_unlock(&relay.mu);
}

/* ---- the producer ---- */

static void slot_clear(struct relay_slot *s)
{
    free(s->topic);
    free(s->key);
    free(s->value);
    memset(s, 0, sizeof *s);
}

/* Delivery reports run inside rd_kafka_poll, on the relay thread: no lock needed. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    long i = (long)(intptr_t)m->_private;
    if (i < 0 || i >= relay.nslots || relay.slots[i].stage == SLOT_FREE)
        return;
    relay.slots[i].done = 1;
    relay.slots[i].err = m->err;
    relay.slots[i].done_at = mono();
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[256];
        rd_kafka_fatal_error(rk, why, sizeof why);
        log_event(LOG_ERROR, "outbox relay: Kafka producer fatal error; rebuilding it",
                  json_pack("{s:s}", "error", why));
        relay.fatal = 1;
        return;
    }
    /* transport errors repeat while a broker is away: the relay's own once-a-minute
     * warning says so instead */
    log_debug("outbox relay: kafka: %s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    log_debug("outbox relay: librdkafka %s: %s", fac, buf);
}

static int set(rd_kafka_conf_t *conf, const char *name, const char *value)
{
    char err[256];
    if (!value)
        return 0;
    if (rd_kafka_conf_set(conf, name, value, err, sizeof err) != RD_KAFKA_CONF_OK) {
        log_event(LOG_ERROR, "outbox relay: Kafka setting refused",
                  json_pack("{s:s,s:s}", "setting", name, "error", err));
        return -1;
    }
    return 0;
}

/* The SASL password, read from its file at each (re)build of the producer (a rotated
 * secret is picked up then), trailing newline trimmed. Caller cleanses and frees. */
static char *password_new(void)
{
    FILE *f = fopen(rs.sasl_password_file, "r");
    if (!f) {
        log_error("outbox relay: cannot read QDB_KAFKA_SASL_PASSWORD_FILE");
        return NULL;
    }
    char *pw = calloc(1, 4097);
    size_t n = pw ? fread(pw, 1, 4096, f) : 0;
    fclose(f);
    while (pw && n > 0 && (pw[n - 1] == '\n' || pw[n - 1] == '\r'))
        pw[--n] = '\0';
    return pw;
}

static rd_kafka_t *producer_new(void)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char num[32], client[200], err[512];
    char *pw = NULL;
    snprintf(client, sizeof client, "qdb-control-relay-%s", relay.instance);
    int bad = set(conf, "bootstrap.servers", rs.brokers) | set(conf, "client.id", client) |
              set(conf, "acks", "all") | set(conf, "enable.idempotence", "true") |
              set(conf, "compression.type", "lz4") |
              /* never give a message up for time: see the order notes at the top */
              set(conf, "message.timeout.ms", "0") |
              set(conf, "security.protocol", rs.security_protocol) |
              set(conf, "sasl.mechanism", rs.sasl_mechanism) |
              set(conf, "sasl.username", rs.sasl_username) |
              set(conf, "ssl.ca.location", rs.ssl_ca_file) |
              set(conf, "ssl.certificate.location", rs.ssl_cert_file) |
              set(conf, "ssl.key.location", rs.ssl_key_file);
    snprintf(num, sizeof num, "%ld", rs.linger_ms);
    bad |= set(conf, "linger.ms", num);
    snprintf(num, sizeof num, "%ld", rs.message_max_bytes);
    bad |= set(conf, "message.max.bytes", num);
    if (rs.sasl_password_file) {
        pw = password_new();
        bad |= !pw || set(conf, "sasl.password", pw);
    }
    if (pw) {
        OPENSSL_cleanse(pw, strlen(pw));
        free(pw);
    }
    if (bad) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        log_event(LOG_ERROR, "outbox relay: cannot create the Kafka producer",
                  json_pack("{s:s}", "error", err));
        return NULL;
    }
    return rk;
}

/* Drop the producer and forget what it had in flight (not marked: read again). */
static void producer_free(void)
{
    if (!relay.rk)
        return;
    rd_kafka_purge(relay.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(relay.rk, 0);
    rd_kafka_destroy(relay.rk);
    relay.rk = NULL;
    for (long i = 0; i < relay.nslots; i++)
        slot_clear(&relay.slots[i]);
    relay.inflight = 0;
    relay.fatal = 0;
}

static int permanent(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
    case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
    case RD_KAFKA_RESP_ERR_INVALID_MSG:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
        return 1;
    default:
        return 0;
    }
}

/* Produce slot s to its topic (MAIN) or to the DLQ with the error in headers. Returns the
 * synchronous error (RD_KAFKA_RESP_ERR_NO_ERROR: a report will come). */
static rd_kafka_resp_err_t produce(long i)
{
    struct relay_slot *s = &relay.slots[i];
    rd_kafka_headers_t *h = rd_kafka_headers_new(6);
    rd_kafka_header_add(h, "content-type", -1, "application/cloudevents+json", -1);
    const char *topic = s->topic, *value = s->value;
    char *stripped = NULL;
    if (s->stage == SLOT_DLQ) {
        char id[24];
        topic = rs.dlq_topic;
        rd_kafka_header_add(h, "dlq-error", -1, rd_kafka_err2str(s->main_err), -1);
        rd_kafka_header_add(h, "dlq-error-code", -1, rd_kafka_err2name(s->main_err), -1);
        rd_kafka_header_add(h, "dlq-original-topic", -1, s->topic, -1);
        rd_kafka_header_add(h, "dlq-outbox-id", -1, db_int64(id, s->id), -1);
        if ((long)strlen(s->value) > rs.message_max_bytes - 1024) {
            /* too large for the DLQ as well: the event without its data (which the outbox
             * row keeps until it is pruned) */
            json_t *ce = json_loads(s->value, 0, NULL);
            json_object_del(ce, "data");
            json_object_set_new(ce, "dataomitted", json_true());
            stripped = ce ? json_dumps(ce, JSON_COMPACT) : NULL;
            json_decref(ce);
            value = stripped ? stripped : "{}";
        }
    }
    rd_kafka_resp_err_t e = rd_kafka_producev(
        relay.rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(s->key, strlen(s->key)), RD_KAFKA_V_VALUE((void *)value, strlen(value)),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE((void *)(intptr_t)i), RD_KAFKA_V_END);
    if (e)
        rd_kafka_headers_destroy(h); /* on success the message owns them */
    free(stripped);
    s->done = 0;
    s->err = RD_KAFKA_RESP_ERR_NO_ERROR;
    s->produced_at = mono();
    return e;
}

/* ---- one round of the leader ---- */

static long slot_free_index(long *hint)
{
    for (long n = 0; n < relay.nslots; n++) {
        long i = (*hint + n) % relay.nslots;
        if (relay.slots[i].stage == SLOT_FREE) {
            *hint = i + 1;
            return i;
        }
    }
    return -1;
}

static int cmp_id(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return a < b ? -1 : a > b;
}

/* The ids in flight, sorted, into ids[] (nslots long). Returns their number. */
static long inflight_sorted(int64_t *ids)
{
    long n = 0;
    for (long i = 0; i < relay.nslots; i++)
        if (relay.slots[i].stage != SLOT_FREE)
            ids[n++] = relay.slots[i].id;
    qsort(ids, (size_t)n, sizeof *ids, cmp_id);
    return n;
}

static int64_t backoff_ms(int attempts)
{
    int64_t ms = 1000;
    for (int i = 1; i < attempts && ms < BACKOFF_MAX_MS; i++)
        ms *= 2;
    if (ms > BACKOFF_MAX_MS)
        ms = BACKOFF_MAX_MS;
    return ms / 2 + (int64_t)(rand() % (int)(ms / 2 + 1)); /* jitter: replicas do not align */
}

/* A transient failure of slot i: counted in its row (attempts, last_error, a backoff), and
 * the slot freed so that the row is read again when the backoff ends. */
static void fail_transient(struct db_conn *c, long i, rd_kafka_resp_err_t e)
{
    struct relay_slot *s = &relay.slots[i];
    char why[ERROR_MAX];
    snprintf(why, sizeof why, "%s: %s", rd_kafka_err2name(e), rd_kafka_err2str(e));
    if (audit_store_outbox_failed(c, s->id, why, backoff_ms(s->attempts + 1)) < 0)
        log_warn("outbox relay: could not record a failed delivery of event %lld",
                 (long long)s->id);
    atomic_fetch_add(&relay.failed, 1);
    slot_clear(s);
    relay.inflight--;
}

/* Read the next batch (when there is room in flight) and produce it: the lowest
 * unpublished ids not in flight (a window of batch + in flight, filtered here), then their
 * rows. Returns the rows read, or a DB_ code. */
static int read_and_produce(struct db_conn *c)
{
    long room = relay.nslots - relay.inflight;
    if (room < rs.batch)
        return 0;
    long nin = inflight_sorted(relay.scratch);
    PGresult *res = NULL;
    int n = audit_store_outbox_batch_ids(c, (int)(rs.batch + nin), &res);
    if (n <= 0) {
        PQclear(res);
        return n;
    }
    struct buf ids;
    buf_init(&ids, 0);
    int bad = buf_puts(&ids, "{");
    long picked = 0;
    for (int r = 0; r < n && picked < rs.batch; r++) {
        int64_t id = db_get_int64(res, r, 0);
        if (nin && bsearch(&id, relay.scratch, (size_t)nin, sizeof id, cmp_id))
            continue;
        bad |= buf_printf(&ids, "%s%lld", picked ? "," : "", (long long)id);
        picked++;
    }
    bad |= buf_puts(&ids, "}");
    PQclear(res);
    res = NULL;
    if (picked == 0 || bad) {
        buf_free(&ids);
        return bad ? DB_HARD : 0;
    }
    n = audit_store_outbox_batch_rows(c, ids.data, &res);
    buf_free(&ids);
    long hint = 0;
    for (int r = 0; r < n; r++) {
        long i = slot_free_index(&hint);
        if (i < 0)
            break; /* cannot happen: room was checked */
        struct relay_slot *s = &relay.slots[i];
        s->stage = SLOT_MAIN;
        s->id = db_get_int64(res, r, 0);
        s->topic = strdup(PQgetvalue(res, r, 1));
        s->key = strdup(PQgetvalue(res, r, 2));
        s->value = strdup(PQgetvalue(res, r, 3));
        s->attempts = (int)db_get_int64(res, r, 4);
        relay.inflight++;
        if (!s->topic || !s->key || !s->value) {
            slot_clear(s);
            relay.inflight--;
            continue;
        }
        rd_kafka_resp_err_t e = produce(i);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
            continue;
        if (permanent(e)) {
            /* refused before sending (too large for message.max.bytes): to the DLQ */
            s->done = 1;
            s->err = e;
        } else {
            fail_transient(c, i, e);
            if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL || e == RD_KAFKA_RESP_ERR__FATAL)
                break;
        }
    }
    PQclear(res);
    return n < 0 ? n : (int)picked;
}

/* Handle the delivery reports that came: mark the delivered rows published in one UPDATE,
 * send refused ones to the DLQ, mark dead letters, count transient failures. A mark that
 * fails keeps its slots (the rows stay out of the next batches) and is tried again. */
static void settle(struct db_conn *c)
{
    struct buf ids;
    buf_init(&ids, 0);
    int bad = buf_puts(&ids, "{");
    long nmark = 0;
    double oldest = 0;
    for (long i = 0; i < relay.nslots; i++) {
        struct relay_slot *s = &relay.slots[i];
        if (s->stage == SLOT_FREE || !s->done)
            continue;
        if (s->stage == SLOT_MAIN && s->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            s->marked_pending = 1;
            if (oldest == 0 || s->done_at < oldest)
                oldest = s->done_at;
            bad |= buf_printf(&ids, "%s%lld", nmark ? "," : "", (long long)s->id);
            nmark++;
        } else if (s->stage == SLOT_MAIN && permanent(s->err)) {
            log_event(LOG_WARN, "outbox relay: Kafka refused an event for good; to the DLQ",
                      json_pack("{s:I,s:s,s:s,s:s}", "event_id", (json_int_t)s->id, "topic",
                                s->topic, "error", rd_kafka_err2name(s->err), "dlq", rs.dlq_topic));
            s->stage = SLOT_DLQ;
            s->main_err = s->err;
            rd_kafka_resp_err_t e = produce(i);
            if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
                fail_transient(c, i, e);
        } else if (s->stage == SLOT_DLQ && s->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            char why[ERROR_MAX];
            snprintf(why, sizeof why, "%s: %s (sent to %s)", rd_kafka_err2name(s->main_err),
                     rd_kafka_err2str(s->main_err), rs.dlq_topic);
            int rc = audit_store_outbox_dead(c, s->id, why);
            if (rc < 0)
                continue; /* try again next round */
            atomic_fetch_add(&relay.dead_lettered, (uint_fast64_t)rc);
            slot_clear(s);
            relay.inflight--;
        } else {
            fail_transient(c, i, s->err);
        }
    }
    bad |= buf_puts(&ids, "}");
    /* One UPDATE (one commit) per batch of reports, not per report: while more reports are
     * due, a short batch waits up to MARK_WAIT_S for company (reports trickle in per
     * partition and per request). */
    if (nmark > 0 && nmark < rs.batch && relay.inflight > nmark && mono() - oldest < MARK_WAIT_S)
        nmark = 0;
    if (nmark > 0 && !bad) {
        int rc = audit_store_outbox_published(c, ids.data);
        if (rc >= 0) {
            atomic_fetch_add(&relay.published, (uint_fast64_t)rc);
            for (long i = 0; i < relay.nslots; i++)
                if (relay.slots[i].stage != SLOT_FREE && relay.slots[i].marked_pending) {
                    slot_clear(&relay.slots[i]);
                    relay.inflight--;
                }
        }
    }
    for (long i = 0; i < relay.nslots; i++)
        relay.slots[i].marked_pending = 0; /* deferred or failed: counted again next round */
    buf_free(&ids);
}

static void read_state(struct db_conn *c)
{
    struct audit_outbox_state st;
    if (audit_store_outbox_state(c, &st) != 1)
        return;
    atomic_store(&relay.backlog, st.backlog);
    atomic_store(&relay.oldest_age_s, st.oldest_age_s);
    atomic_store(&relay.published_total, st.published_total);
    atomic_store(&relay.dead_lettered_total, st.dead_lettered_total);
    atomic_store(&relay.state_known, 1);
}

static void prune(struct db_conn *c)
{
    long total = 0;
    for (int i = 0; i < 50 && !stopping(); i++) {
        int n = audit_store_outbox_prune(c, rs.retention_s, PRUNE_BATCH);
        if (n <= 0)
            break;
        total += n;
    }
    if (total)
        log_event(LOG_INFO, "outbox relay: pruned published events",
                  json_pack("{s:I}", "events", (json_int_t)total));
}

/* Once a minute while something waits too long for Kafka. */
static void warn_if_stuck(double now, double *last_warn)
{
    double oldest = 0;
    for (long i = 0; i < relay.nslots; i++)
        if (relay.slots[i].stage != SLOT_FREE && !relay.slots[i].done &&
            (oldest == 0 || relay.slots[i].produced_at < oldest))
            oldest = relay.slots[i].produced_at;
    if (oldest == 0 || now - oldest < 10.0 || now - *last_warn < WARN_EVERY_S)
        return;
    *last_warn = now;
    log_event(LOG_WARN, "outbox relay: Kafka is not acknowledging events; they wait",
              json_pack("{s:I,s:I,s:f,s:s}", "in_flight", (json_int_t)relay.inflight, "backlog",
                        (json_int_t)atomic_load(&relay.backlog), "waiting_s", now - oldest,
                        "brokers", rs.brokers));
}

/* The relay's statements are all meant to walk an index (the unpublished rows in id order,
 * the published ones by age, ids by primary key). Right after a burst (100,000 rows in one
 * transaction) the statistics still say the outbox is nearly empty, and the planner would
 * then bitmap-scan and sort the whole backlog for every batch of 500. On this connection
 * only, no bitmap scans and no sorts where an index gives the order: set once per session
 * (a reconnect is a new one, seen by its backend pid). */
static void session_settings(struct db_conn *c, int *pid)
{
    PGconn *pg = db_pgconn(c);
    if (PQstatus(pg) != CONNECTION_OK || PQbackendPID(pg) == *pid)
        return;
    if (db_exec_fixed(c, "SET enable_bitmapscan = off") >= 0 &&
        db_exec_fixed(c, "SET enable_sort = off") >= 0)
        *pid = PQbackendPID(pg);
}

static void *relay_main(void *arg)
{
    (void)arg;
    struct db_conn *c = NULL;
    struct db_session_lock lock = {.key = RELAY_LOCK_KEY, .pid = 0};
    double last_state = -STATE_EVERY_S, last_prune = 0, last_warn = -WARN_EVERY_S;
    double last_connect = -1;
    int leading = 0, session_pid = 0;
    while (!stopping()) {
        double now = mono();
        if (!c && now - last_connect >= 1.0) {
            last_connect = now; /* at most one connect a second: an outage is no storm */
            c = db_conn_open(&relay.dbs);
        } else if (c) {
            (void)db_conn_check(c); /* reopens a lost one: a new session, without the lock */
        }
        int db_ok = c && PQstatus(db_pgconn(c)) == CONNECTION_OK;
        if (db_ok)
            session_settings(c, &session_pid);
        if (db_ok && now - last_state >= STATE_EVERY_S) {
            last_state = now;
            read_state(c);
        }
        int busy = 0;
        if (rs.brokers) {
            int lead = db_ok && db_session_lock_acquire(c, &lock) == 1;
            if (lead != leading) {
                leading = lead;
                atomic_store(&relay.leading, leading);
                log_event(LOG_INFO, leading ? "outbox relay: leading" : "outbox relay: not leading",
                          json_pack("{s:s}", "instance", relay.instance));
                if (leading)
                    last_prune = now; /* the first prune an interval in, not at start-up */
            }
            if (relay.fatal)
                producer_free();
            if (leading && !relay.rk && !(relay.rk = producer_new())) {
                wait_ms(1000);
                continue;
            }
            if (leading) {
                int n = read_and_produce(c);
                busy = n >= rs.batch;
                if (now - last_prune >= (double)rs.prune_every_s) {
                    last_prune = now;
                    prune(c);
                }
            }
            if (relay.rk) {
                /* wait for reports a little while some are due, else just collect */
                rd_kafka_poll(relay.rk, relay.inflight > 0 && !busy
                                            ? (int)(rs.poll_ms < 5 ? rs.poll_ms : 5)
                                            : 0);
                if (db_ok)
                    settle(c);
                warn_if_stuck(now, &last_warn);
                if (relay.inflight > 0)
                    continue;
            }
        }
        if (!busy)
            wait_ms(leading ? rs.poll_ms : 1000);
    }
    /* A stop: give what is in flight a moment to be acknowledged and marked (the rest is
     * read again by the next leader), then hand the lock over at once. */
    if (relay.rk) {
        double until = mono() + 2.0;
        while (relay.inflight > 0 && mono() < until) {
            rd_kafka_poll(relay.rk, 50);
            if (c)
                settle(c);
        }
        producer_free();
    }
    if (c)
        db_session_lock_release(c, &lock);
    atomic_store(&relay.leading, 0);
    db_conn_close(c);
    return NULL;
}

int audit_relay_start(const struct db_settings *dbs, const char *instance_id)
{
    relay.dbs = *dbs;
    relay.dbs.application_name = "qdb-control-outbox-relay";
    snprintf(relay.instance, sizeof relay.instance, "%s", instance_id ? instance_id : "?");
    relay.nslots = rs.inflight_max > 0 ? rs.inflight_max : 2000;
    relay.slots = calloc((size_t)relay.nslots, sizeof *relay.slots);
    relay.scratch = calloc((size_t)relay.nslots, sizeof *relay.scratch);
    if (!relay.slots || !relay.scratch) {
        log_error("outbox relay: out of memory");
        free(relay.slots);
        free(relay.scratch);
        relay.slots = NULL;
        relay.scratch = NULL;
        return -1;
    }
    relay.stopping = 0;
    if (pthread_create(&relay.thread, NULL, relay_main, NULL) != 0) {
        log_error("outbox relay: cannot start its thread");
        free(relay.slots);
        free(relay.scratch);
        relay.slots = NULL;
        relay.scratch = NULL;
        return -1;
    }
    relay.running = 1;
    if (rs.brokers)
        log_event(LOG_INFO, "outbox relay started",
                  json_pack("{s:s,s:i}", "brokers", rs.brokers, "batch", (int)rs.batch));
    else
        log_info("outbox relay: QDB_KAFKA_BROKERS is not set; events wait in the outbox");
    return 0;
}

void audit_relay_stop(void)
{
    if (!relay.running)
        return;
    pthread_mutex_lock(&relay.mu);
    relay.stopping = 1;
    pthread_cond_signal(&relay.cv);
    pthread_mutex_unlock(&relay.mu);
    pthread_join(relay.thread, NULL);
    relay.running = 0;
    for (long i = 0; i < relay.nslots; i++)
        slot_clear(&relay.slots[i]);
    free(relay.slots);
    free(relay.scratch);
    relay.slots = NULL;
    relay.scratch = NULL;
    relay.nslots = 0;
}

/* ---- metrics ---- */

static void collect(struct buf *out, void *cls)
{
    (void)cls;
    struct audit_outbox_state st;
    uint64_t published, dead, failed;
    int leading;
    audit_relay_metrics(&st, &published, &dead, &failed, &leading);
    metrics_family(out, "qdb_outbox_backlog", "gauge",
                   "Events in the outbox not yet published to Kafka (counted every second).");
    buf_printf(out, "qdb_outbox_backlog %lld\n", (long long)st.backlog);
    metrics_family(out, "qdb_outbox_oldest_age_seconds", "gauge",
                   "Age of the oldest unpublished event (0 when there is none).");
    buf_printf(out, "qdb_outbox_oldest_age_seconds %.3f\n",
               st.oldest_age_s > 0 ? st.oldest_age_s : 0.0);
    metrics_family(out, "qdb_outbox_published_total", "counter",
                   "Events this replica's relay published (delivery reported and marked).");
    buf_printf(out, "qdb_outbox_published_total %llu\n", (unsigned long long)published);
    metrics_family(out, "qdb_outbox_dead_lettered_total", "counter",
                   "Events Kafka refused for good, sent to the DLQ topic by this replica.");
    buf_printf(out, "qdb_outbox_dead_lettered_total %llu\n", (unsigned long long)dead);
    metrics_family(out, "qdb_outbox_delivery_failures_total", "counter",
                   "Transient delivery failures on this replica (the event is retried).");
    buf_printf(out, "qdb_outbox_delivery_failures_total %llu\n", (unsigned long long)failed);
    metrics_family(out, "qdb_outbox_relay_leader", "gauge",
                   "1 when this replica's relay holds the leadership and publishes.");
    buf_printf(out, "qdb_outbox_relay_leader %d\n", leading);
}

int audit_relay_init(void)
{
    static atomic_int done;
    if (atomic_exchange(&done, 1) != 0)
        return 0;
    if (metrics_register(collect, NULL) != 0) {
        atomic_store(&done, 0);
        return -1;
    }
    return 0;
}
