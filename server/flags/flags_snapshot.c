/* The evaluation snapshots and the thread that keeps them true to the state store.
 *
 * Each environment has one immutable snapshot (struct flags_env). Readers take it with
 * flags_snapshot_acquire: a mutex held only for the pointer load and the reference count's
 * increment (a few nanoseconds, never across an evaluation), then evaluate lock-free and
 * release; a reload builds every environment's new snapshot outside any lock, swaps the
 * pointers under the same mutex, and drops the holder's reference on the old ones, which
 * are freed by whichever reader releases last. No evaluation waits for a reload, and no
 * evaluation touches the database.
 *
 * The listener thread (its own connection) LISTENs on flag_changes_by_flag (the triggers
 * of migrations/0009 and 0018 notify on every change to a flag, a configuration or a
 * segment, naming the flag where there is one; flag_changes carries the previous
 * release's payloads for its replicas during a rolling update) and reloads once per batch of
 * notifications: each flag named is read again alone and spliced into a copy of the
 * document its environments were built from (flags_snapshot_reload_flag), and anything
 * else (a segment, a batch naming many flags) reloads in full. After every (re)connect it
 * reloads in full, since changes made while it was not listening were not heard. A heartbeat
 * (SELECT 1 every second) notices a dead connection. The writer's own replica also reloads
 * right after its commit (the flag, from the handler), so a change is served by the
 * replica that made it before the reply, and by every other within a second. */
#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "flags/flags_internal.h"
#include "flags/flags_store.h"
#include "platform/log.h"

#define MAX_ENVS 32
#define HEARTBEAT_MS 1000
#define RETRY_MS 250
/* A batch of notifications naming more flags than this reloads in full: one query instead
 * of as many (an import, a bulk insert). */
#define BATCH_KEYS 32

static struct {
    pthread_mutex_t mu; /* guards envs[] pointers and their reference increments */
    struct flags_env *envs[MAX_ENVS];
    char names[MAX_ENVS][40];
    size_t nenvs;
    atomic_int ready;
    pthread_mutex_t reload_mu; /* one reload at a time, so an older load never wins */
    /* listener */
    struct db_settings db;
    char app[64];
    pthread_t thread;
    int started;
    atomic_int stop;
    atomic_int listening;
    atomic_ulong reloads, reload_failures, notifications, connects, full_reloads, flag_reloads;
    atomic_llong last_reload_ms;
} S = {.mu = PTHREAD_MUTEX_INITIALIZER, .reload_mu = PTHREAD_MUTEX_INITIALIZER};

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct flags_env *flags_snapshot_acquire(const char *environment)
{
    if (!environment)
        return NULL;
    struct flags_env *e = NULL;
    pthread_mutex_lock(&S.mu);
    for (size_t i = 0; i < S.nenvs; i++)
        if (strcmp(S.names[i], environment) == 0) {
            e = S.envs[i];
            if (e)
                atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
            break;
        }
    pthread_mutex_unlock(&S.mu);
    return e;
}

void flags_env_release(struct flags_env *env)
{
    if (env && atomic_fetch_sub_explicit(&env->refs, 1, memory_order_acq_rel) == 1) {
        flags_counts_harvest_env(env);
        flags_env_free(env);
    }
}

int flags_snapshot_ready(void)
{
    return atomic_load(&S.ready);
}

size_t flags_snapshot_env_names(const char **out, size_t max)
{
    pthread_mutex_lock(&S.mu);
    size_t n = S.nenvs < max ? S.nenvs : max;
    for (size_t i = 0; i < n; i++)
        out[i] = S.names[i];
    pthread_mutex_unlock(&S.mu);
    return n;
}

/* Swap the fresh snapshots in (taken); with `full`, an environment not among them is
 * dropped. Called with reload_mu held. Tells the events stream of every environment whose
 * configuration changed. */
static void install(struct flags_env **fresh, size_t n, int full)
{
    struct flags_env *old[2 * MAX_ENVS] = {0};
    char changed[MAX_ENVS][40];
    char etags[MAX_ENVS][24];
    size_t nchanged = 0, nold = 0;
    pthread_mutex_lock(&S.mu);
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < S.nenvs && strcmp(S.names[j], fresh[i]->name) != 0)
            j++;
        struct flags_env *prev = j < S.nenvs ? S.envs[j] : NULL;
        if (!prev || strcmp(prev->config_etag, fresh[i]->config_etag) != 0) {
            memcpy(changed[nchanged], fresh[i]->name, sizeof changed[0]);
            memcpy(etags[nchanged], fresh[i]->config_etag, sizeof etags[0]);
            nchanged++;
        }
        if (prev)
            old[nold++] = prev;
        else if (S.nenvs < MAX_ENVS)
            j = S.nenvs++;
        else {
            old[nold++] = fresh[i]; /* no room: never served */
            continue;
        }
        S.envs[j] = fresh[i];
        memcpy(S.names[j], fresh[i]->name, sizeof S.names[j]);
    }
    if (full) { /* a full load: environments gone from the store go too */
        size_t k = 0;
        for (size_t j = 0; j < S.nenvs; j++) {
            int kept = 0;
            for (size_t i = 0; i < n && !kept; i++)
                kept = S.envs[j] == fresh[i];
            if (kept) {
                S.envs[k] = S.envs[j];
                memmove(S.names[k], S.names[j], sizeof S.names[k]);
                k++;
            } else {
                old[nold++] = S.envs[j];
            }
        }
        S.nenvs = k;
    }
    pthread_mutex_unlock(&S.mu);
    for (size_t j = 0; j < nold; j++)
        flags_env_release(old[j]);
    atomic_store(&S.ready, 1);
    atomic_fetch_add(&S.reloads, 1);
    for (size_t i = 0; i < nchanged; i++)
        flags_events_changed(changed[i], etags[i]);
}

static void reloaded(long long t0, const char *what)
{
    long long t1 = mono_ms();
    atomic_store(&S.last_reload_ms, t1);
    if (t1 - t0 >= 500) /* a slow reload delays every replica's view of a change */
        log_event(LOG_WARN, "flags: slow snapshot reload",
                  json_pack("{s:i,s:s}", "ms", (int)(t1 - t0), "environment", what));
}

/* Load the environment `only` (NULL: every one) and swap it in; with every one, an
 * environment no longer in the store is dropped. */
static int reload(struct db_conn *conn, const char *only)
{
    long long t0 = mono_ms();
    pthread_mutex_lock(&S.reload_mu);
    json_t *doc = NULL;
    int rc = flags_store_snapshot(conn, only, &doc);
    if (rc < 0 || !json_is_object(doc)) {
        atomic_fetch_add(&S.reload_failures, 1);
        pthread_mutex_unlock(&S.reload_mu);
        json_decref(doc);
        return rc < 0 ? rc : DB_HARD;
    }
    struct flags_env *fresh[MAX_ENVS] = {0};
    size_t n = 0;
    int failed = 0;
    const char *name;
    json_t *v;
    json_object_foreach(doc, name, v)
    {
        if (n >= MAX_ENVS) {
            log_error("flags: more than %d environments; the rest are not served", MAX_ENVS);
            break;
        }
        fresh[n] = flags_env_build(name, v);
        if (fresh[n])
            n++;
        else
            failed = 1;
    }
    json_decref(doc);
    /* an environment that could not be built (no memory) keeps the snapshot it has: were it
     * dropped, its evaluations would answer 404 until the next reload */
    install(fresh, n, !only && !failed);
    atomic_fetch_add(&S.full_reloads, 1);
#ifdef __GLIBC__
    /* A full load parses every flag of every environment at once and frees it: glibc keeps
     * the freed heap (47 MB resident after loading 1,000 flags in five environments, 24 MB
     * once trimmed). Full loads are rare (start, reconnect, segments, imports). */
    malloc_trim(0);
#endif
    pthread_mutex_unlock(&S.reload_mu);
    reloaded(t0, only ? only : "*");
    return 0;
}

/* A copy of an environment's store document with the flag `key`'s entry replaced by
 * `entry` (NULL: removed). The other entries and the segments are shared with the old
 * document. */
static json_t *doc_with_flag(const json_t *doc, const char *key, json_t *entry)
{
    const json_t *flags = json_object_get(doc, "flags");
    json_t *out = json_object(), *arr = json_array();
    int found = 0;
    size_t i;
    json_t *f;
    json_array_foreach(flags, i, f)
    {
        const char *k = json_string_value(json_object_get(f, "key"));
        if (!found && k && strcmp(k, key) == 0) {
            found = 1;
            if (entry)
                json_array_append(arr, entry);
            continue;
        }
        json_array_append(arr, f);
    }
    if (!found && entry)
        json_array_append(arr, entry);
    json_t *segs = json_object_get(doc, "segments");
    if (!out || !arr || json_object_set_new(out, "flags", arr) != 0 ||
        json_object_set_new(out, "segments", segs ? json_incref(segs) : json_array()) != 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

int flags_snapshot_reload_flag(struct db_conn *conn, const char *key)
{
    long long t0 = mono_ms();
    pthread_mutex_lock(&S.reload_mu);
    json_t *doc = NULL;
    int rc = flags_store_snapshot_flag(conn, key, &doc);
    if (rc < 0 || !json_is_object(doc)) {
        atomic_fetch_add(&S.reload_failures, 1);
        pthread_mutex_unlock(&S.reload_mu);
        json_decref(doc);
        return rc < 0 ? rc : DB_HARD;
    }
    struct flags_env *fresh[MAX_ENVS] = {0};
    size_t n = 0;
    int full = 0;
    const char *name;
    json_t *entry;
    json_object_foreach(doc, name, entry)
    {
        json_t *e = json_is_object(entry) ? entry : NULL;
        struct flags_env *cur = flags_snapshot_acquire(name);
        if (!cur || !cur->doc || n >= MAX_ENVS) { /* not loaded (new), or no memory */
            flags_env_release(cur);
            full = 1;
            break;
        }
        /* what it serves now against what the store holds: most changes touch one
         * environment, and the others are left without reading their documents */
        const struct flags_flag *was = flags_env_find(cur, key);
        if (was ? e && was->entry_hash == flags_entry_hash(e) : !e) {
            flags_env_release(cur);
            continue;
        }
        json_t *od = json_loadb(cur->doc, cur->doc_len, 0, NULL);
        flags_env_release(cur);
        json_t *nd = od ? doc_with_flag(od, key, e) : NULL;
        json_decref(od);
        fresh[n] = nd ? flags_env_build(name, nd) : NULL;
        json_decref(nd);
        if (!fresh[n]) {
            full = 1;
            break;
        }
        n++;
    }
    json_decref(doc);
    if (full) {
        for (size_t i = 0; i < n; i++)
            flags_env_release(fresh[i]);
        pthread_mutex_unlock(&S.reload_mu);
        return reload(conn, NULL);
    }
    if (n)
        install(fresh, n, 0);
    atomic_fetch_add(&S.flag_reloads, 1);
    pthread_mutex_unlock(&S.reload_mu);
    reloaded(t0, key);
    return 0;
}

int flags_snapshot_reload(struct db_conn *conn)
{
    return reload(conn, NULL);
}

int flags_snapshot_reload_env(struct db_conn *conn, const char *environment)
{
    return reload(conn, environment);
}

void flags_snapshot_free_all(void)
{
    pthread_mutex_lock(&S.mu);
    size_t n = S.nenvs;
    struct flags_env *old[MAX_ENVS];
    memcpy(old, S.envs, sizeof old);
    S.nenvs = 0;
    memset(S.envs, 0, sizeof S.envs);
    pthread_mutex_unlock(&S.mu);
    for (size_t i = 0; i < n; i++)
        flags_env_release(old[i]);
    atomic_store(&S.ready, 0);
}

/* ---- the listener ---- */

static void lost(struct db_conn **c, const char *why)
{
    atomic_store(&S.listening, 0);
    log_event(LOG_WARN, "flags listener lost its connection; reconnecting",
              json_pack("{s:s}", "reason", why));
    db_conn_close(*c);
    *c = NULL;
}

static void *listener_main(void *arg)
{
    (void)arg;
    struct db_conn *c = NULL;
    long long last_try = 0, last_hb = 0, last_harvest = mono_ms(), last_flush = mono_ms();
    while (!atomic_load(&S.stop)) {
        long long now = mono_ms();
        flags_events_tick();
        if (now - last_harvest >= 1000) {
            flags_counts_harvest_env(NULL);
            last_harvest = now;
        }
        if (c && now - last_flush >= (long long)flags_cfg.counts_flush_s * 1000) {
            if (flags_counts_flush(c) < 0)
                lost(&c, "could not write the evaluation counts");
            last_flush = now;
            continue;
        }
        if (!c) {
            if (last_try && now - last_try < RETRY_MS) {
                poll(NULL, 0, 50);
                continue;
            }
            last_try = now;
            c = db_conn_open(&S.db);
            if (!c)
                continue;
            if (db_exec_fixed(c, "LISTEN flag_changes_by_flag") < 0) {
                db_conn_close(c);
                c = NULL;
                continue;
            }
            atomic_fetch_add(&S.connects, 1);
            /* what changed while we were not listening was not heard: reload in full */
            if (flags_snapshot_reload(c) != 0) {
                lost(&c, "reload failed");
                continue;
            }
            atomic_store(&S.listening, 1);
            last_hb = now;
            continue;
        }
        PGconn *pg = db_pgconn(c);
        if (now - last_hb >= HEARTBEAT_MS) {
            last_hb = now;
            if (db_exec_fixed(c, "SELECT 1") < 0) {
                lost(&c, "heartbeat failed");
                continue;
            }
        }
        struct pollfd pfd = {PQsocket(pg), POLLIN, 0};
        int pr = poll(&pfd, 1, 100);
        if (pr < 0 && errno != EINTR) {
            lost(&c, "poll failed");
            continue;
        }
        if (pr > 0 && (!PQconsumeInput(pg) || PQstatus(pg) != CONNECTION_OK)) {
            lost(&c, "connection lost");
            continue;
        }
        /* one batch: the flags named (an environment or "*", a slash, the key: that
         * flag's entries), the environments named (a bare name), or everything once
         * anything says '*' or the batch names more flags than are worth reading one by
         * one (an import) */
        int heard = 0, all = 0;
        char envs[MAX_ENVS][40];
        size_t nenv = 0, nkeys = 0;
        char *keys[BATCH_KEYS];
        PGnotify *n;
        while ((n = PQnotifies(pg)) != NULL) {
            heard++;
            const char *p = n->extra;
            const char *slash = p ? strchr(p, '/') : NULL;
            if (all) {
                /* everything is reloaded anyway */
            } else if (!p || !*p || strcmp(p, "*") == 0) {
                all = 1;
            } else if (slash && slash[1]) {
                size_t k = 0;
                while (k < nkeys && strcmp(keys[k], slash + 1) != 0)
                    k++;
                if (k == nkeys && nkeys < BATCH_KEYS && (keys[nkeys] = strdup(slash + 1)))
                    nkeys++;
                else if (k == nkeys)
                    all = 1;
            } else if (!slash && strlen(p) < sizeof envs[0]) {
                size_t k = 0;
                while (k < nenv && strcmp(envs[k], p) != 0)
                    k++;
                if (k == nenv && nenv < MAX_ENVS)
                    snprintf(envs[nenv++], sizeof envs[0], "%s", p);
                else if (k == nenv)
                    all = 1;
            } else {
                all = 1;
            }
            PQfreemem(n);
        }
        if (heard) {
            atomic_fetch_add(&S.notifications, (unsigned long)heard);
            int rc = 0;
            if (all)
                rc = flags_snapshot_reload(c);
            for (size_t k = 0; !all && k < nenv && rc == 0; k++)
                rc = flags_snapshot_reload_env(c, envs[k]);
            for (size_t k = 0; !all && k < nkeys && rc == 0; k++)
                rc = flags_snapshot_reload_flag(c, keys[k]);
            for (size_t k = 0; k < nkeys; k++)
                free(keys[k]);
            if (rc != 0)
                lost(&c, "reload failed");
        }
    }
    if (c)
        (void)flags_counts_flush(c);
    atomic_store(&S.listening, 0);
    db_conn_close(c);
    return NULL;
}

int flags_listener_start(const struct db_settings *db)
{
    S.db = *db;
    snprintf(S.app, sizeof S.app, "qdb-flags-listener-%d", (int)getpid());
    S.db.application_name = S.app;
    atomic_store(&S.stop, 0);
    if (pthread_create(&S.thread, NULL, listener_main, NULL) != 0) {
        log_error("flags: cannot start the listener");
        return -1;
    }
    S.started = 1;
    return 0;
}

void flags_listener_stop(void)
{
    atomic_store(&S.stop, 1);
    if (S.started)
        pthread_join(S.thread, NULL);
    S.started = 0;
}

void flags_snapshot_metrics(struct buf *out)
{
    size_t flags_total = 0;
    pthread_mutex_lock(&S.mu);
    for (size_t i = 0; i < S.nenvs; i++)
        flags_total += S.envs[i]->nflags;
    pthread_mutex_unlock(&S.mu);
    long long age = atomic_load(&S.last_reload_ms);
    buf_printf(out,
               "# HELP qdb_flags_listener_up Whether the flags listener hears changes.\n"
               "# TYPE qdb_flags_listener_up gauge\n"
               "qdb_flags_listener_up %d\n"
               "# HELP qdb_flags_snapshot_reloads_total Snapshot reloads (all environments).\n"
               "# TYPE qdb_flags_snapshot_reloads_total counter\n"
               "qdb_flags_snapshot_reloads_total %lu\n"
               "# HELP qdb_flags_snapshot_reload_failures_total Reloads that failed.\n"
               "# TYPE qdb_flags_snapshot_reload_failures_total counter\n"
               "qdb_flags_snapshot_reload_failures_total %lu\n"
               "# HELP qdb_flags_snapshot_full_reloads_total Reloads of whole environments.\n"
               "# TYPE qdb_flags_snapshot_full_reloads_total counter\n"
               "qdb_flags_snapshot_full_reloads_total %lu\n"
               "# HELP qdb_flags_snapshot_flag_reloads_total Reloads of one flag.\n"
               "# TYPE qdb_flags_snapshot_flag_reloads_total counter\n"
               "qdb_flags_snapshot_flag_reloads_total %lu\n"
               "# HELP qdb_flags_notifications_total Change notifications heard.\n"
               "# TYPE qdb_flags_notifications_total counter\n"
               "qdb_flags_notifications_total %lu\n"
               "# HELP qdb_flags_listener_connects_total Connections of the listener (each "
               "reloads in full).\n"
               "# TYPE qdb_flags_listener_connects_total counter\n"
               "qdb_flags_listener_connects_total %lu\n"
               "# HELP qdb_flags_snapshot_flags Flags in the snapshots, all environments.\n"
               "# TYPE qdb_flags_snapshot_flags gauge\n"
               "qdb_flags_snapshot_flags %zu\n"
               "# HELP qdb_flags_snapshot_age_seconds Seconds since the last reload.\n"
               "# TYPE qdb_flags_snapshot_age_seconds gauge\n"
               "qdb_flags_snapshot_age_seconds %.3f\n",
               atomic_load(&S.listening), atomic_load(&S.reloads), atomic_load(&S.reload_failures),
               atomic_load(&S.full_reloads), atomic_load(&S.flag_reloads),
               atomic_load(&S.notifications), atomic_load(&S.connects), flags_total,
               age ? (double)(mono_ms() - age) / 1000.0 : -1.0);
}
