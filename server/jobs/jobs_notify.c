/* New jobs announced after the commit that made them, by one thread per replica.
 *
 * Why not a trigger in the enqueuing transaction (as migration 0001 had): a transaction that
 * has called NOTIFY takes PostgreSQL's one lock on the notification queue of the whole
 * cluster at its commit and holds it until its commit record is flushed (async.c,
 * PreCommit_Notify: "we hold [it] till after commit", so that queue entries appear in commit
 * order). Every enqueue therefore waited for the WAL flush of every other enqueue, one after
 * the other, instead of sharing one flush (group commit): the enqueue rate was one job per
 * flush, whatever the number of callers.
 *
 * Now jobs_enqueue records "id:pending" with the open transaction (a db_on_commit_owned
 * hook); the hook, right after the commit, hands the entries to this thread, which wakes
 * this replica's workers at once and sends the entries as one job_events notification per
 * batch on its own connection, in a transaction of its own that commits asynchronously
 * (synchronous_commit off: it holds the queue lock for no flush). The payload keeps the
 * trigger's format ("id:state,...", at most 200 entries, then "+" for "more"), so that the
 * listeners of every replica (jobs_listener.c) and their event streams see what they saw.
 *
 * Nothing is missed when a notification is lost (this process dies between the commit and
 * the send, or the thread's connection is down): each replica's listener wakes its workers
 * once a second anyway, and after a failed send the next notification is "+", which tells
 * the event streams to reload. State changes by the workers and the API (claim, completion,
 * cancel, retry) still notify from the update trigger: there are few of them (batches) and
 * no caller waits for them. Where no engine runs (a command of the binary), the enqueue
 * notifies inside its transaction as the trigger did. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs_internal.h"
#include "platform/deadline.h"
#include "platform/log.h"

/* As the trigger: a notification names at most this many jobs, then says "+". */
#define NOTIFY_MAX_ENTRIES 200
/* Bytes of "id:state," text that many entries take, at most (an id has <= 19 digits). */
#define NOTIFY_MAX_TEXT (NOTIFY_MAX_ENTRIES * 32)

/* What one transaction, or the queue of the thread, has to announce. */
struct notify_batch {
    struct buf text; /* "id:state,id:state" */
    int entries;
    int more; /* entries beyond NOTIFY_MAX_ENTRIES (or lost): ends in "+" */
};

static struct job_notifier {
    struct db_settings dbs;
    struct jobs_thread thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct notify_batch queue; /* under mu */
    int running;               /* under mu: the thread takes what is queued */
} notifier = {
    .thread = JOBS_THREAD_INIT, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void batch_init(struct notify_batch *b)
{
    buf_init(&b->text, NOTIFY_MAX_TEXT);
    b->entries = 0;
    b->more = 0;
}

static void batch_add(struct notify_batch *b, const char *entry)
{
    if (b->entries >= NOTIFY_MAX_ENTRIES ||
        buf_printf(&b->text, "%s%s", b->entries ? "," : "", entry) != 0) {
        b->more = 1;
        return;
    }
    b->entries++;
}

/* Move `from`'s entries onto `to` (from is left empty). */
static void batch_merge(struct notify_batch *to, struct notify_batch *from)
{
    if (from->entries && !to->entries && !to->more) {
        struct buf t = to->text;
        to->text = from->text;
        from->text = t;
        to->entries = from->entries;
    } else if (from->entries) {
        /* entry by entry, so that the limit holds */
        char *s = from->text.data, *end = s + from->text.len;
        while (s < end) {
            char *comma = memchr(s, ',', (size_t)(end - s));
            size_t n = comma ? (size_t)(comma - s) : (size_t)(end - s);
            char entry[64];
            if (n < sizeof entry) {
                memcpy(entry, s, n);
                entry[n] = '\0';
                batch_add(to, entry);
            } else {
                to->more = 1;
            }
            s += n + 1;
        }
    }
    to->more |= from->more;
    from->text.len = 0;
    if (from->text.data)
        from->text.data[0] = '\0';
    from->entries = 0;
    from->more = 0;
}

/* The payload: the entries, then "+" when there were more (a lone "+" when only that). */
static int batch_payload(struct notify_batch *b)
{
    if (b->more)
        return buf_puts(&b->text, b->entries ? ",+" : "+");
    return b->entries ? 0 : -1;
}

static void batch_free(void *cls)
{
    struct notify_batch *b = cls;
    buf_free(&b->text);
    free(b);
}

static int may_claim(const struct notify_batch *b)
{
    return b->entries > 0 || b->more;
}

/* Right after the enqueuing transaction committed, on its connection and thread. */
static void after_commit(struct db_conn *c, void *cls)
{
    struct notify_batch *b = cls;
    pthread_mutex_lock(&notifier.mu);
    int running = notifier.running;
    if (running) {
        batch_merge(&notifier.queue, b);
        pthread_cond_signal(&notifier.cv);
    }
    pthread_mutex_unlock(&notifier.mu);
    /* The thread stopped meanwhile (shutdown): announce it ourselves, after the commit, and
     * only then wake the workers (see notifier_main). */
    if (!running && batch_payload(b) == 0 && jobs_store_notify(c, b->text.data) < 0)
        log_warn("jobs: a new job's notification was not sent; workers find it by the poll");
    if (!running)
        jobs_workers_wake();
    batch_free(b);
}

int jobs_notify_new(struct db_conn *c, int64_t id)
{
    char entry[40];
    snprintf(entry, sizeof entry, "%lld:pending", (long long)id);
    pthread_mutex_lock(&notifier.mu);
    int running = notifier.running;
    pthread_mutex_unlock(&notifier.mu);
    PGconn *pg = db_pgconn(c);
    int in_tx = pg && PQtransactionStatus(pg) == PQTRANS_INTRANS;
    if (running && in_tx) {
        struct notify_batch *b = db_commit_hook_cls(c, after_commit);
        if (!b) {
            b = malloc(sizeof *b);
            if (!b)
                return DB_HARD;
            batch_init(b);
            if (db_on_commit_owned(c, after_commit, batch_free, b) != 0) {
                batch_free(b);
                return jobs_store_notify(c, entry) < 0 ? DB_HARD : 0; /* a full hook list */
            }
        }
        batch_add(b, entry);
        return 0;
    }
    if (running) { /* no transaction: the insert has committed already */
        pthread_mutex_lock(&notifier.mu);
        batch_add(&notifier.queue, entry);
        pthread_cond_signal(&notifier.cv);
        pthread_mutex_unlock(&notifier.mu);
        return 0;
    }
    /* No engine here: inside the transaction, delivered at its commit, as the trigger did. */
    int rc = jobs_store_notify(c, entry);
    return rc < 0 ? rc : 0;
}

static void *notifier_main(void *arg)
{
    (void)arg;
    struct db_conn *c = NULL;
    double last_try = 0;
    struct notify_batch out;
    batch_init(&out);
    int lost = 0; /* a batch could not be sent: the next one says "+" */
    for (;;) {
        pthread_mutex_lock(&notifier.mu);
        while (!may_claim(&notifier.queue) && !jobs_thread_stopping(&notifier.thread)) {
            struct timespec ts = deadline_after(CLOCK_REALTIME, 1.0);
            pthread_cond_timedwait(&notifier.cv, &notifier.mu, &ts);
        }
        int stopping = jobs_thread_stopping(&notifier.thread);
        if (stopping)
            notifier.running = 0; /* from now on the enqueuers send their own */
        batch_merge(&out, &notifier.queue);
        pthread_mutex_unlock(&notifier.mu);
        if (may_claim(&out)) {
            out.more |= lost;
            int sent = 0;
            if (batch_payload(&out) == 0 && jobs_thread_db(&c, &notifier.dbs, &last_try))
                sent = jobs_store_notify_async(c, out.text.data) >= 0;
            /* Then this replica's workers, from here rather than from the enqueuing request,
             * whose thread would otherwise wait for the pool's lock (seen in its stacks under
             * load) before it replies. Not before the send: a woken worker's claim notifies
             * "running" (and its completion "succeeded") from the update trigger, and had
             * that commit come first, the event streams would see a job finish before it
             * was announced, and go back to pending after it. */
            jobs_workers_wake();
            if (!sent && !lost)
                log_warn("jobs: new jobs' notifications were not sent (state store away); "
                         "workers find them by the poll");
            lost = !sent;
            out.text.len = 0;
            if (out.text.data)
                out.text.data[0] = '\0';
            out.entries = 0;
            out.more = 0;
        }
        if (stopping)
            break;
    }
    buf_free(&out.text);
    db_conn_close(c);
    return NULL;
}

int jobs_notify_start(const struct db_settings *dbs)
{
    notifier.dbs = *dbs;
    pthread_mutex_lock(&notifier.mu);
    batch_init(&notifier.queue);
    notifier.running = 1;
    pthread_mutex_unlock(&notifier.mu);
    if (jobs_thread_start(&notifier.thread, notifier_main, NULL) != 0) {
        pthread_mutex_lock(&notifier.mu);
        notifier.running = 0;
        pthread_mutex_unlock(&notifier.mu);
        return -1;
    }
    return 0;
}

void jobs_notify_stop(void)
{
    /* jobs_thread_stop signals the thread's own condition: the thread waits on ours */
    atomic_store(&notifier.thread.stop, 1);
    pthread_mutex_lock(&notifier.mu);
    pthread_cond_broadcast(&notifier.cv);
    pthread_mutex_unlock(&notifier.mu);
    jobs_thread_stop(&notifier.thread);
    pthread_mutex_lock(&notifier.mu);
    notifier.running = 0;
    buf_free(&notifier.queue.text);
    notifier.queue.entries = 0;
    notifier.queue.more = 0;
    pthread_mutex_unlock(&notifier.mu);
}
