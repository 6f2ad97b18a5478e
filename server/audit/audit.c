/* The audit room as a module: its configuration (the chain key), its init (metrics), its
 * counters, and the API shape of a stored event. The daily verification job is wired in
 * server/wiring/audit_verify.c: the audit room knows no jobs. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "audit/audit.h"
#include "audit/audit_internal.h"
#include "audit/audit_outbox_internal.h"
#include "platform/config.h"
#include "platform/log.h"
#include "platform/metrics.h"

static struct db_settings audit_settings;

/* The verification's bounds (QDB_AUDIT_VERIFY_MAX_EVENTS, QDB_AUDIT_CHECKPOINT_EVERY).
 * Measured here (release build, 2 loaded cores): 100,000 events verify in 3.2 s, so a
 * request does at most about 0.6 s of it by default. */
static struct {
    long max_events;
    long checkpoint_every;
} verify_settings = {20000, 10000};

int64_t audit_verify_max_events(void)
{
    return verify_settings.max_events;
}

int64_t audit_checkpoint_every(void)
{
    return verify_settings.checkpoint_every;
}

const struct db_settings *audit_db_settings(void)
{
    return audit_settings.url ? &audit_settings : NULL;
}

static int audit_config_load(void)
{
    const char *path = NULL;
    if (config_str("QDB_AUDIT_HMAC_KEY_FILE", NULL, &path) != 0)
        return -1;
    if (!path)
        return config_error("QDB_AUDIT_HMAC_KEY_FILE",
                            "required: the file holding the audit hash chain key (as a Vault "
                            "agent mounts it; deploy/local/run.sh generates one)");
    if (audit_key_load(path) != 0 || audit_outbox_config_load() != 0 ||
        audit_relay_config_load() != 0)
        return -1;
    return config_int("QDB_AUDIT_VERIFY_MAX_EVENTS", 20000, 1, 1000000000L,
                      &verify_settings.max_events) != 0 ||
                   config_int("QDB_AUDIT_CHECKPOINT_EVERY", 10000, 1, 1000000000L,
                              &verify_settings.checkpoint_every) != 0
               ? -1
               : 0;
}

static int audit_init(struct qdb_app *app)
{
    audit_settings.url = app->cfg->database_url;
    audit_settings.statement_timeout_ms = app->cfg->db_statement_timeout_ms;
    audit_settings.connect_timeout_s = app->cfg->db_connect_timeout_s;
    audit_settings.application_name = "qdb-control-audit";
    return audit_metrics_register() != 0 || audit_relay_init() != 0 ? -1 : 0;
}

/* ---- the sequencer ----
 * One thread per replica, on its own connection, chains the committed pending events
 * (audit_sequence) in rounds: a writer's post-commit hook only wakes it, so concurrent
 * writers' events are chained together in one short transaction instead of one each
 * (each of which locked the chain head and flushed a commit while the others queued on it).
 * A round also runs every SEQUENCER_IDLE_MS, for what no hook announced (a replica that died
 * between its COMMIT and the hook, another replica's rows). audit_sequencer_sync waits for a
 * round that began after the call: the writer's hook and the readers use it. A failed round
 * (the state store is down) is followed by SEQUENCER_BACKOFF_MS without rounds, so that
 * kicks do not spin on it. The pending rows are counted at most once a second, for
 * qdb_audit_pending. */

#define SEQUENCER_IDLE_MS 1000
#define SEQUENCER_BACKOFF_MS 100
#define PENDING_COUNT_MS 1000
/* A round running longer than this means writers outrun the sequencer (a backlog of
 * hundreds of events per round): they then wait for it, as they did before it existed. */
#define SEQUENCER_BEHIND_MS 200

static pthread_mutex_t sequencer_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sequencer_wake = PTHREAD_COND_INITIALIZER;  /* to the thread */
static pthread_cond_t sequencer_round = PTHREAD_COND_INITIALIZER; /* from it: a round ended */
static struct {
    pthread_t thread;
    int started;                   /* start/stop only */
    int running, stopping, kicked; /* under sequencer_lock */
    int written;                   /* a writer kicked: the round need not look first */
    uint64_t rounds_begun, rounds_done;
    int64_t round_started_ms; /* of round rounds_begun (monotonic) */
    int last_ok; /* whether round rounds_done chained all it found */
} sequencer;

static void timespec_add_ms(struct timespec *ts, long ms)
{
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int audit_sequencer_kick(void)
{
    pthread_mutex_lock(&sequencer_lock);
    int running = sequencer.running && !sequencer.stopping;
    if (running) {
        sequencer.kicked = 1;
        sequencer.written = 1;
        pthread_cond_signal(&sequencer_wake);
    }
    pthread_mutex_unlock(&sequencer_lock);
    return running;
}

int audit_sequencer_behind(void)
{
    pthread_mutex_lock(&sequencer_lock);
    int behind = sequencer.running && !sequencer.stopping &&
                 sequencer.rounds_begun > sequencer.rounds_done &&
                 monotonic_ms() - sequencer.round_started_ms > SEQUENCER_BEHIND_MS;
    pthread_mutex_unlock(&sequencer_lock);
    return behind;
}

int audit_sequencer_sync(int timeout_ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    timespec_add_ms(&deadline, timeout_ms);
    pthread_mutex_lock(&sequencer_lock);
    if (!sequencer.running || sequencer.stopping) {
        pthread_mutex_unlock(&sequencer_lock);
        return 0;
    }
    uint64_t want = sequencer.rounds_begun + 1;
    sequencer.kicked = 1;
    pthread_cond_signal(&sequencer_wake);
    int rc = -1;
    while (sequencer.running && !sequencer.stopping) {
        if (sequencer.rounds_done >= want) {
            rc = sequencer.last_ok ? 1 : -1;
            break;
        }
        if (pthread_cond_timedwait(&sequencer_round, &sequencer_lock, &deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&sequencer_lock);
    return rc;
}

/* One round (written: a writer announced a committed event, so there is one to chain).
 * Returns whether it chained everything it found. */
static int sequencer_round_run(struct db_conn **conn, int64_t *counted_at, int written)
{
    /* its own application_name: the export test counts the export streams' connections */
    static struct db_settings st;
    if (!st.url) {
        st = audit_settings;
        st.application_name = "qdb-control-audit-sequencer";
    }
    if (!*conn)
        *conn = db_conn_open(&st);
    if (!*conn || db_conn_check(*conn) != 0)
        return 0; /* the state store is down: its outage is logged by the platform */
    /* A round that finds nothing (a reader's, an idle one) stays a read: no head lock, no
     * transaction to flush. */
    int n = written ? 1 : audit_store_pending_any(*conn);
    if (n > 0)
        n = audit_sequence(*conn);
    int64_t now = monotonic_ms();
    if (n == 0) {
        audit_metrics_pending(0);
        *counted_at = now;
    } else if (n > 0 && now - *counted_at >= PENDING_COUNT_MS) {
        int64_t pending = 0;
        if (audit_store_pending_count(*conn, &pending) == 1)
            audit_metrics_pending(pending);
        *counted_at = now;
    }
    return n >= 0;
}

static void *sequencer_main(void *arg)
{
    (void)arg;
    struct db_conn *conn = NULL;
    int64_t counted_at = monotonic_ms() - PENDING_COUNT_MS;
    int ok = 1;
    pthread_mutex_lock(&sequencer_lock);
    while (!sequencer.stopping) {
        /* after a failed round, kicks wait for the backoff too (timed on the monotonic
         * clock: condattr set in audit_start) */
        if (!sequencer.kicked || !ok) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            timespec_add_ms(&ts, ok ? SEQUENCER_IDLE_MS : SEQUENCER_BACKOFF_MS);
            int timed_out = 0;
            while (!sequencer.stopping && (!sequencer.kicked || !ok) && !timed_out)
                timed_out =
                    pthread_cond_timedwait(&sequencer_wake, &sequencer_lock, &ts) == ETIMEDOUT;
        }
        if (sequencer.stopping)
            break;
        sequencer.kicked = 0;
        int written = sequencer.written;
        sequencer.written = 0;
        uint64_t round = ++sequencer.rounds_begun;
        sequencer.round_started_ms = monotonic_ms();
        pthread_mutex_unlock(&sequencer_lock);
        ok = sequencer_round_run(&conn, &counted_at, written);
        pthread_mutex_lock(&sequencer_lock);
        sequencer.rounds_done = round;
        sequencer.last_ok = ok;
        pthread_cond_broadcast(&sequencer_round);
    }
    sequencer.running = 0;
    pthread_cond_broadcast(&sequencer_round);
    pthread_mutex_unlock(&sequencer_lock);
    /* No last round: a stop must not wait on the state store (it may be the reason for the
     * stop); what waits is chained by the next round of any replica. */
    db_conn_close(conn);
    return NULL;
}

static int audit_start(struct qdb_app *app)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0 || pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
        pthread_cond_init(&sequencer_wake, &ca) != 0 ||
        pthread_cond_init(&sequencer_round, &ca) != 0) {
        log_error("audit: cannot set up the sequencer's clock");
        return -1;
    }
    pthread_condattr_destroy(&ca);
    pthread_mutex_lock(&sequencer_lock);
    sequencer.running = 1;
    sequencer.stopping = 0;
    pthread_mutex_unlock(&sequencer_lock);
    if (pthread_create(&sequencer.thread, NULL, sequencer_main, NULL) != 0) {
        pthread_mutex_lock(&sequencer_lock);
        sequencer.running = 0;
        pthread_mutex_unlock(&sequencer_lock);
        log_error("audit: cannot start the sequencer");
        return -1;
    }
    sequencer.started = 1;
    return audit_relay_start(&audit_settings, app->instance_id);
}

/* After HTTP stopped every export stream has been told to end; wait for their producer
 * threads (each ends within one page query). Then the sequencer (no last round). */
static void audit_stop(void)
{
    audit_relay_stop();
    int left = audit_export_drain(10000);
    if (left)
        log_warn("audit: %d export threads did not end", left);
    if (sequencer.started) {
        pthread_mutex_lock(&sequencer_lock);
        sequencer.stopping = 1;
        pthread_cond_broadcast(&sequencer_wake);
        pthread_cond_broadcast(&sequencer_round);
        pthread_mutex_unlock(&sequencer_lock);
        pthread_join(sequencer.thread, NULL);
        sequencer.started = 0;
    }
}

const struct qdb_module audit_module = {
    .name = "audit",
    .config_load = audit_config_load,
    .init = audit_init,
    .start = audit_start,
    .stop = audit_stop,
};

/* ---- metrics ---- */

static atomic_uint_fast64_t events_recorded, events_sequenced;
static atomic_int_fast64_t events_pending;
static atomic_uint_fast64_t verify_ok, verify_broken, verify_error;
static atomic_uint_fast64_t checkpoints_written, checkpoints_refused;
static atomic_int chain_broken;          /* sticky until a full verification passes */
static atomic_int_fast64_t first_broken; /* lowest broken seq seen, 0 = none */

void audit_metrics_event_recorded(void)
{
    atomic_fetch_add(&events_recorded, 1);
}

void audit_metrics_sequenced(int n)
{
    if (n > 0)
        atomic_fetch_add(&events_sequenced, (uint_fast64_t)n);
}

void audit_metrics_pending(int64_t n)
{
    atomic_store(&events_pending, n);
}

void audit_metrics_verified(const struct audit_verify_result *r, int error, int full)
{
    if (error) {
        atomic_fetch_add(&verify_error, 1);
        return;
    }
    if (r->ok) {
        atomic_fetch_add(&verify_ok, 1);
        if (full) {
            atomic_store(&chain_broken, 0);
            atomic_store(&first_broken, 0);
        }
        return;
    }
    atomic_fetch_add(&verify_broken, 1);
    atomic_store(&chain_broken, 1);
    int_fast64_t cur = atomic_load(&first_broken);
    while ((cur == 0 || r->first_broken_seq < cur) &&
           !atomic_compare_exchange_weak(&first_broken, &cur, r->first_broken_seq))
        ;
}

void audit_metrics_checkpoint(int refused)
{
    atomic_fetch_add(refused ? &checkpoints_refused : &checkpoints_written, 1);
}

int64_t audit_metrics_first_broken(void)
{
    return atomic_load(&chain_broken) ? (int64_t)atomic_load(&first_broken) : 0;
}

static void collect(struct buf *out, void *cls)
{
    (void)cls;
    buf_printf(out,
               "# HELP qdb_audit_events_recorded_total Audit events queued by this replica "
               "(a few may belong to transactions that rolled back).\n"
               "# TYPE qdb_audit_events_recorded_total counter\n"
               "qdb_audit_events_recorded_total %llu\n"
               "# HELP qdb_audit_events_sequenced_total Audit events this replica chained "
               "(its own and other replicas' queued ones).\n"
               "# TYPE qdb_audit_events_sequenced_total counter\n"
               "qdb_audit_events_sequenced_total %llu\n"
               "# HELP qdb_audit_pending Committed audit events waiting for their place in "
               "the chain, as last counted (every second).\n"
               "# TYPE qdb_audit_pending gauge\n"
               "qdb_audit_pending %lld\n"
               "# HELP qdb_audit_verify_runs_total Hash chain verifications on this replica "
               "(API and daily job), by result.\n"
               "# TYPE qdb_audit_verify_runs_total counter\n"
               "qdb_audit_verify_runs_total{result=\"ok\"} %llu\n"
               "qdb_audit_verify_runs_total{result=\"broken\"} %llu\n"
               "qdb_audit_verify_runs_total{result=\"error\"} %llu\n"
               "# HELP qdb_audit_chain_broken 1 when a verification on this replica found the "
               "hash chain broken (until a full verification passes).\n"
               "# TYPE qdb_audit_chain_broken gauge\n"
               "qdb_audit_chain_broken %d\n"
               "# HELP qdb_audit_chain_first_broken_seq The lowest broken seq found, 0 when "
               "none.\n"
               "# TYPE qdb_audit_chain_first_broken_seq gauge\n"
               "qdb_audit_chain_first_broken_seq %lld\n"
               "# HELP qdb_audit_checkpoints_total Verification checkpoints on this replica: "
               "written, and refused because their MAC did not verify (forged or damaged).\n"
               "# TYPE qdb_audit_checkpoints_total counter\n"
               "qdb_audit_checkpoints_total{result=\"written\"} %llu\n"
               "qdb_audit_checkpoints_total{result=\"refused\"} %llu\n",
               (unsigned long long)atomic_load(&events_recorded),
               (unsigned long long)atomic_load(&events_sequenced),
               (long long)atomic_load(&events_pending),
               (unsigned long long)atomic_load(&verify_ok),
               (unsigned long long)atomic_load(&verify_broken),
               (unsigned long long)atomic_load(&verify_error), atomic_load(&chain_broken),
               (long long)atomic_load(&first_broken),
               (unsigned long long)atomic_load(&checkpoints_written),
               (unsigned long long)atomic_load(&checkpoints_refused));
}

int audit_metrics_register(void)
{
    static atomic_int done;
    if (atomic_exchange(&done, 1) != 0)
        return 0;
    if (metrics_register(collect, NULL) != 0) {
        atomic_store(&done, 0); /* nothing registered: a later init may try again */
        return -1;
    }
    return 0;
}

/* ---- a stored event as JSON ---- */

static json_t *str_or_null(const PGresult *res, int row, int col)
{
    const char *s = db_get_str(res, row, col);
    return s ? json_string(s) : json_null();
}

static json_t *jsonb_or_null(const PGresult *res, int row, int col)
{
    const char *s = db_get_str(res, row, col);
    return s ? json_loads(s, JSON_DECODE_ANY, NULL) : json_null();
}

json_t *audit_row_json(const PGresult *res, int row)
{
    json_t *before = jsonb_or_null(res, row, AUDIT_C_BEFORE);
    json_t *after = jsonb_or_null(res, row, AUDIT_C_AFTER);
    if (!before || !after) {
        json_decref(before);
        json_decref(after);
        return NULL;
    }
    json_t *o = json_object();
    json_object_set_new(o, "seq", json_integer(db_get_int64(res, row, AUDIT_C_SEQ)));
    json_object_set_new(o, "time", str_or_null(res, row, AUDIT_C_TIME));
    json_object_set_new(o, "actor_subject", str_or_null(res, row, AUDIT_C_ACTOR_SUBJECT));
    json_object_set_new(o, "actor_name", str_or_null(res, row, AUDIT_C_ACTOR_NAME));
    json_object_set_new(o, "auth_method", str_or_null(res, row, AUDIT_C_AUTH_METHOD));
    json_object_set_new(o, "token_id", str_or_null(res, row, AUDIT_C_TOKEN_ID));
    json_object_set_new(o, "action", str_or_null(res, row, AUDIT_C_ACTION));
    json_object_set_new(o, "resource_type", str_or_null(res, row, AUDIT_C_RESOURCE_TYPE));
    json_object_set_new(o, "resource_id", str_or_null(res, row, AUDIT_C_RESOURCE_ID));
    json_object_set_new(o, "environment", str_or_null(res, row, AUDIT_C_ENVIRONMENT));
    json_object_set_new(o, "before", before);
    json_object_set_new(o, "after", after);
    json_object_set_new(o, "request_id", str_or_null(res, row, AUDIT_C_REQUEST_ID));
    json_object_set_new(o, "job_id",
                        db_get_str(res, row, AUDIT_C_JOB_ID)
                            ? json_integer(db_get_int64(res, row, AUDIT_C_JOB_ID))
                            : json_null());
    json_object_set_new(o, "client_addr", str_or_null(res, row, AUDIT_C_CLIENT_ADDR));
    json_object_set_new(o, "prev_hash", str_or_null(res, row, AUDIT_C_PREV_HASH));
    json_object_set_new(o, "hash", str_or_null(res, row, AUDIT_C_HASH));
    return o;
}
