/* Writers no longer hold the audit chain's head across their own transactions: they queue
 * their event (audit_pending) and the replica's sequencer chains it right after the commit;
 * readers wait for it. Shown here:
 * db_on_commit hooks run once after a commit and never after a rollback (nor after a db_tx
 * attempt that was retried); while one writer's transaction stays open after recording
 * its event, 20 mutations through the server still complete promptly and are chained
 * (the old design made them wait on that writer's head lock) and the list shows their
 * events at once; an open queued row blocks nobody's sequencing, and once committed without
 * a hook the sequencer's idle round chains it. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "audit/audit_internal.h"
#include "harness.h"

static char *url;

static void count_hook(struct db_conn *c, void *cls)
{
    (void)c;
    (*(int *)cls)++;
}

struct retry_tx {
    int attempts;
    int ran[2];
};

/* Registers a different counter on each attempt and asks for a retry on the first. */
static int retry_fn(struct db_conn *c, void *cls)
{
    struct retry_tx *t = cls;
    int a = t->attempts++;
    if (db_on_commit(c, count_hook, &t->ran[a ? 1 : 0]) != 0)
        return DB_HARD;
    return a == 0 ? DB_RETRY : 0;
}

static void test_hooks(void)
{
    th_step("db_on_commit: once after COMMIT, never after ROLLBACK or a retried attempt");
    struct db_settings st = {url, 5000, 3, "audit-sequencer"};
    struct db_conn *c = db_conn_open(&st);
    CHECK(c != NULL, "connect");
    if (!c)
        return;
    int ran = 0;
    CHECK(db_begin(c) == 0, "begin");
    CHECK(db_on_commit(c, count_hook, &ran) == 0 && db_on_commit(c, count_hook, &ran) == 0,
          "register twice");
    CHECK(ran == 0, "not before the commit");
    CHECK(db_commit(c) == 0 && ran == 1, "ran once after the commit (%d)", ran);
    CHECK(db_begin(c) == 0 && db_commit(c) == 0 && ran == 1, "not again on the next commit");

    int rolled = 0;
    CHECK(db_begin(c) == 0 && db_on_commit(c, count_hook, &rolled) == 0, "register");
    db_rollback(c);
    CHECK(db_begin(c) == 0 && db_commit(c) == 0 && rolled == 0, "dropped by the rollback");

    int failed = 0;
    CHECK(db_begin(c) == 0 && db_on_commit(c, count_hook, &failed) == 0, "register");
    CHECK(db_exec_fixed(c, "SELECT 1/0") < 0, "a statement fails: the transaction aborts");
    db_commit(c); /* PostgreSQL answers ROLLBACK */
    CHECK(failed == 0, "not run by the COMMIT of an aborted transaction");

    int many[DB_MAX_COMMIT_HOOKS + 1] = {0};
    CHECK(db_begin(c) == 0, "begin");
    int ok = 1;
    for (int i = 0; i < DB_MAX_COMMIT_HOOKS; i++)
        ok = ok && db_on_commit(c, count_hook, &many[i]) == 0;
    CHECK(ok, "%d distinct hooks", DB_MAX_COMMIT_HOOKS);
    CHECK(db_on_commit(c, count_hook, &many[DB_MAX_COMMIT_HOOKS]) == -1, "one more refused");
    CHECK(db_commit(c) == 0, "commit");
    ok = 1;
    for (int i = 0; i < DB_MAX_COMMIT_HOOKS; i++)
        ok = ok && many[i] == 1;
    CHECK(ok && many[DB_MAX_COMMIT_HOOKS] == 0, "each registered one ran once");

    struct retry_tx t = {0};
    CHECK(db_tx(c, retry_fn, &t) == 0 && t.attempts == 2, "db_tx retried once (%d)", t.attempts);
    CHECK(t.ran[0] == 0 && t.ran[1] == 1, "only the final attempt's hook ran (%d, %d)", t.ran[0],
          t.ran[1]);
    db_conn_close(c);
}

/* An owned hook's record: fn takes it at the commit, drop gets it back otherwise. */
struct owned {
    int ran, dropped;
};
static void owned_fn(struct db_conn *c, void *cls)
{
    (void)c;
    ((struct owned *)cls)->ran++;
}
static void owned_drop(void *cls)
{
    ((struct owned *)cls)->dropped++;
}

static void test_owned_hooks(void)
{
    th_step("db_on_commit_owned: taken by the commit, given back (drop) wherever it is not run");
    struct db_settings st = {url, 5000, 3, "audit-sequencer"};
    struct db_conn *c = db_conn_open(&st);
    CHECK(c != NULL, "connect");
    if (!c)
        return;
    struct owned a = {0}, b = {0}, d = {0}, e = {0};
    CHECK(db_begin(c) == 0 && db_commit_hook_cls(c, owned_fn) == NULL, "none registered");
    CHECK(db_on_commit_owned(c, owned_fn, owned_drop, &a) == 0, "register");
    CHECK(db_commit_hook_cls(c, owned_fn) == &a, "found again by its fn");
    CHECK(db_commit(c) == 0 && a.ran == 1 && a.dropped == 0, "run once by the commit (%d, %d)",
          a.ran, a.dropped);
    CHECK(db_commit_hook_cls(c, owned_fn) == NULL, "gone after it ran");

    CHECK(db_begin(c) == 0 && db_on_commit_owned(c, owned_fn, owned_drop, &b) == 0, "register");
    db_rollback(c);
    CHECK(b.ran == 0 && b.dropped == 1, "dropped once by the rollback (%d, %d)", b.ran, b.dropped);
    CHECK(db_begin(c) == 0 && db_commit(c) == 0 && b.ran == 0 && b.dropped == 1,
          "and not run by the next commit");

    CHECK(db_begin(c) == 0 && db_on_commit_owned(c, owned_fn, owned_drop, &d) == 0, "register");
    CHECK(db_exec_fixed(c, "SELECT 1/0") < 0, "a statement fails: the transaction aborts");
    db_commit(c); /* PostgreSQL answers ROLLBACK */
    CHECK(d.ran == 0 && d.dropped == 1, "dropped by the COMMIT of an aborted transaction");

    CHECK(db_begin(c) == 0 && db_on_commit_owned(c, owned_fn, owned_drop, &e) == 0, "register");
    db_conn_close(c);
    CHECK(e.ran == 0 && e.dropped == 1, "dropped when the connection closes in the transaction");
}

static long pending(void)
{
    return th_sql_long(url, "SELECT count(*) FROM audit_pending", NULL);
}

static void test_open_writer(void)
{
    th_step("a writer's open transaction after audit_record blocks no other writer");
    struct th_server srv;
    if (th_server_start(&srv, url, NULL, 1) != 0) {
        CHECK(0, "server starts");
        return;
    }
    char *admin = th_dev_token(&srv, "admin");
    char path[300];
    snprintf(path, sizeof path, "%s/audit-hmac-key",
             getenv("QDB_TEST_LOG_DIR") ? getenv("QDB_TEST_LOG_DIR") : "/tmp");
    CHECK(audit_key_load(path) == 0, "the server's key");

    /* In this process, as a room would: BEGIN, the change's event, and then it dawdles. */
    struct db_settings st = {url, 30000, 3, "audit-sequencer-open"};
    struct db_conn *held = db_conn_open(&st);
    CHECK(held != NULL, "connect");
    struct audit_entry e = {.action = "test.held", .resource_type = "test", .resource_id = "h"};
    CHECK(held && db_begin(held) == 0 && audit_record(held, NULL, NULL, NULL, &e) == 0,
          "recorded inside an open transaction");

    long events0 = th_sql_long(url, "SELECT count(*) FROM audit_event", NULL);
    double t0 = th_now_ms(), slowest = 0;
    int accepted = 0;
    for (int i = 0; i < 20; i++) {
        struct th_resp r;
        double s = th_now_ms();
        if (th_post_json(&srv, "/api/v1/jobs", admin, "{\"kind\":\"noop\"}", &r) == 0) {
            accepted += r.status == 202;
            th_resp_free(&r);
        }
        if (th_now_ms() - s > slowest)
            slowest = th_now_ms() - s;
    }
    /* Generous bounds for a loaded machine; waiting on the open writer would mean the
     * statement timeout (5 s) on the first of them. */
    CHECK(accepted == 20, "20 enqueues accepted (%d)", accepted);
    CHECK(slowest < 3000 && th_now_ms() - t0 < 20000, "none waited: slowest %.0f ms, all %.0f ms",
          slowest, th_now_ms() - t0);
    /* The replies do not wait for the sequencer; a reader does (audit_catch_up): the API's
     * list, asked at once and read before any SQL here (th_sql waits as the readers do),
     * shows all 20. */
    struct th_resp lr;
    th_get(&srv, "/api/v1/audit?action=job.create&limit=500", admin, &lr);
    json_t *items = json_object_get(lr.json, "items");
    CHECK(lr.status == 200 && json_array_size(items) == 20,
          "the list, right after the replies, shows their 20 events (%zu): %.200s",
          json_array_size(items), lr.body ? lr.body : "");
    th_resp_free(&lr);
    CHECK(th_sql_long(url, "SELECT count(*) FROM audit_event", NULL) == events0 + 20,
          "their 20 events are chained");
    CHECK(th_sql_long(url, "SELECT count(*) FROM audit_event WHERE action = 'test.held'", NULL) ==
              0,
          "the open writer's event is not (yet)");

    th_step("an open queued row does not stop sequencing; committed, it is chained");
    struct db_conn *seq = db_conn_open(&st);
    CHECK(seq && audit_sequence(seq) == 0, "sequencing with only an open row: nothing, at once");
    CHECK(db_commit(held) == 0, "the open writer commits (its hook chains it)");
    CHECK(th_sql_long(url, "SELECT count(*) FROM audit_event WHERE action = 'test.held'", NULL) ==
              1,
          "chained at its commit");

    /* A queued row committed without the hook (a replica that died right after COMMIT):
     * the sequencer's idle round chains it within about a second. */
    PGconn *raw = PQconnectdb(url);
    CHECK(PQstatus(raw) == CONNECTION_OK, "a plain session");
    PGresult *r = PQexec(raw, "INSERT INTO audit_pending (actor_subject, auth_method, action, "
                              "resource_type) VALUES ('system', 'system', 'test.orphan', 'test')");
    CHECK(PQresultStatus(r) == PGRES_COMMAND_OK, "orphan queued: %s", PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(raw);
    int swept = 0;
    for (double deadline = th_now_ms() + 15000; th_now_ms() < deadline && !swept;
         th_sleep_ms(50))
        swept = th_sql_long(url, "SELECT count(*) FROM audit_event WHERE action = 'test.orphan'",
                            NULL) == 1;
    CHECK(swept, "the sequencer chained the orphan");
    CHECK(pending() == 0, "nothing left pending");

    struct th_resp v;
    th_get(&srv, "/api/v1/audit/verify?from_seq=1", admin, &v);
    CHECK(v.status == 200 && json_is_true(json_object_get(v.json, "ok")) &&
              json_integer_value(json_object_get(v.json, "checked")) ==
                  th_sql_long(url, "SELECT count(*) FROM audit_event", NULL),
          "the chain verifies: %s", v.body);
    th_resp_free(&v);
    CHECK(th_sql_long(url, "SELECT max(seq) - min(seq) + 1 - count(*) FROM audit_event", NULL) ==
              0,
          "no gaps");

    th_step("/metrics shows the queue");
    /* the gauge is the sequencer's last count: polled */
    int shown = 0;
    for (double deadline = th_now_ms() + 10000; th_now_ms() < deadline && !shown;
         th_sleep_ms(100)) {
        if (th_get(&srv, "/metrics", NULL, &v) != 0)
            continue;
        shown = v.status == 200 && v.body && strstr(v.body, "\nqdb_audit_pending 0\n") &&
                strstr(v.body, "\nqdb_audit_events_sequenced_total ");
        th_resp_free(&v);
    }
    CHECK(shown, "qdb_audit_pending 0 and the sequenced counter");

    db_conn_close(seq);
    db_conn_close(held);
    CHECK(th_server_stop(&srv) == 0, "clean stop");
    free(admin);
}

int main(void)
{
    url = th_db_create("auditseq");
    /* the schema first: a server start migrates */
    struct th_server srv;
    CHECK(th_server_start(&srv, url, NULL, 1) == 0 && th_server_stop(&srv) == 0, "migrated");
    test_hooks();
    test_owned_hooks();
    test_open_writer();
    th_db_drop(url);
    free(url);
    return th_done();
}
