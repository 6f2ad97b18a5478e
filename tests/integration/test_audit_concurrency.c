/* The hash chain under concurrent writers: 4 writers for 10 s through 2 server processes on
 * one database (plus one writer in this process through audit_record, some of whose
 * transactions roll back). The chain must verify, seq must have no gaps, time must grow
 * with seq, every acknowledged mutation must have exactly one event, and none may be left
 * in the sequencer's queue (audit_pending). */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "audit/audit.h"
#include "audit/audit_internal.h"
#include "harness.h"

#define WRITERS 4
#define SECONDS 10
/* Each HTTP writer stops after this many tokens: with writers that no longer wait for the
 * chain (the sequencer chains behind them) 10 s make some 12,000 events under ASan, whose
 * full export below would take longer than the client's 30 s timeout on a loaded box. */
#define PER_WRITER_MAX 1000

static char *url;
static struct th_server srv[2];
static char *admin[2];
static atomic_int stop;

struct writer {
    int index;
    atomic_long created; /* read by main while the writer runs */
    long refused;
    long last_status;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    const struct th_server *s = &srv[w->index % 2];
    const char *token = admin[w->index % 2];
    for (long n = 0; !atomic_load(&stop) && atomic_load(&w->created) < PER_WRITER_MAX; n++) {
        char body[128];
        snprintf(body, sizeof body, "{\"name\":\"c%d-%ld\",\"role\":\"viewer\"}", w->index, n);
        struct th_resp r;
        if (th_post_json(s, "/api/v1/tokens", token, body, &r) != 0) {
            w->refused++;
            continue;
        }
        if (r.status == 201)
            w->created++;
        else {
            w->refused++;
            w->last_status = r.status;
        }
        th_resp_free(&r);
    }
    return NULL;
}

struct local_writer {
    atomic_long committed, rolled_back;
    long failed;
};

/* Writes through audit_record on its own connection, rolling back every third event. */
static void *local_main(void *arg)
{
    struct local_writer *lw = arg;
    struct db_settings st = {url, 5000, 3, "audit-concurrency"};
    struct db_conn *c = db_conn_open(&st);
    if (!c) {
        lw->failed++;
        return NULL;
    }
    json_t *after = json_pack("{s:s,s:s}", "name", "local", "password", "never-stored-pw");
    for (long n = 0; !atomic_load(&stop); n++) {
        char id[32];
        snprintf(id, sizeof id, "local-%ld", n);
        struct audit_entry e = {
            .action = "test.write", .resource_type = "test", .resource_id = id, .after = after};
        if (db_begin(c) != 0 || audit_record(c, NULL, NULL, NULL, &e) != 0) {
            db_rollback(c);
            lw->failed++;
            continue;
        }
        if (n % 3 == 2) {
            db_rollback(c);
            lw->rolled_back++;
        } else if (db_commit(c) == 0) {
            lw->committed++;
        } else {
            lw->failed++;
        }
    }
    json_decref(after);
    db_conn_close(c);
    return NULL;
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
    url = th_db_create("auditc");
    th_step("two servers on one database");
    /* the whole chain in one GET, however many events the load made */
    const char *env[] = {"QDB_AUDIT_VERIFY_MAX_EVENTS=100000000", NULL};
    int up = th_server_start(&srv[0], url, env, 1) == 0;
    up = up && th_server_start(&srv[1], url, env, 1) == 0;
    CHECK(up, "servers start");
    if (!up)
        goto out;
    admin[0] = th_dev_token(&srv[0], "admin");
    admin[1] = th_dev_token(&srv[1], "admin");
    CHECK(admin[0] && admin[1], "tokens");
    if (!admin[0] || !admin[1])
        goto out;
    char path[300];
    snprintf(path, sizeof path, "%s/audit-hmac-key",
             getenv("QDB_TEST_LOG_DIR") ? getenv("QDB_TEST_LOG_DIR") : "/tmp");
    CHECK(audit_key_load(path) == 0, "the servers' key");

    th_step("%d writers through 2 servers and 1 in-process writer for %d s (at most %d tokens "
            "each)",
            WRITERS, SECONDS, PER_WRITER_MAX);
    struct writer w[WRITERS];
    pthread_t t[WRITERS], lt;
    struct local_writer lw = {0};
    for (int i = 0; i < WRITERS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].index = i;
        pthread_create(&t[i], NULL, writer_main, &w[i]);
    }
    pthread_create(&lt, NULL, local_main, &lw);
    /* The load runs for SECONDS, and on until every writer has made some progress (a
     * loaded machine may start one late); polled, with a deadline. */
    double start = th_now_ms();
    for (;;) {
        int progressed = atomic_load(&lw.committed) > 0 && atomic_load(&lw.rolled_back) > 0;
        int capped = progressed;
        for (int i = 0; i < WRITERS; i++) {
            progressed = progressed && atomic_load(&w[i].created) >= 10;
            capped = capped && atomic_load(&w[i].created) >= PER_WRITER_MAX;
        }
        double ran = th_now_ms() - start;
        if ((ran >= SECONDS * 1000 && progressed) || capped || ran >= 6 * SECONDS * 1000)
            break;
        th_sleep_ms(50);
    }
    atomic_store(&stop, 1);
    long created = 0;
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(t[i], NULL);
        created += w[i].created;
        CHECK(w[i].refused == 0, "writer %d: %ld refused (last HTTP %ld)", i, w[i].refused,
              w[i].last_status);
        CHECK(w[i].created >= 10, "writer %d made progress (%ld)", i, (long)w[i].created);
    }
    pthread_join(lt, NULL);
    CHECK(lw.failed == 0 && lw.committed > 0 && lw.rolled_back > 0,
          "in-process writer: %ld committed, %ld rolled back, %ld failed", (long)lw.committed,
          (long)lw.rolled_back, lw.failed);
    fprintf(stderr, "   %ld tokens created over HTTP, %ld events written in-process\n", created,
            (long)lw.committed);

    th_step("one event per acknowledged mutation, no gaps, time grows with seq");
    CHECK(th_sql_long(url, "SELECT count(*) FROM audit_event WHERE action = 'token.create'",
                      NULL) == created,
          "token events = tokens created (%ld)", created);
    CHECK(th_sql_long(url, "SELECT count(*) FROM audit_event WHERE action = 'test.write'", NULL) ==
              lw.committed,
          "in-process events = committed (%ld)", (long)lw.committed);
    long n = th_sql_long(url, "SELECT count(*) FROM audit_event", NULL);
    CHECK(n == created + lw.committed, "nothing else: %ld", n);
    CHECK(th_sql_long(url, "SELECT max(seq) FROM audit_event", NULL) == n &&
              th_sql_long(url, "SELECT min(seq) FROM audit_event", NULL) == 1,
          "seq 1..%ld without gaps", n);
    CHECK(th_sql_long(url, "SELECT last_seq FROM audit_chain_head", NULL) == n, "head at %ld", n);
    CHECK(th_sql_long(url, "SELECT count(*) FROM audit_pending", NULL) == 0,
          "no event left waiting for the sequencer");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM (SELECT time < lag(time) OVER (ORDER BY seq) "
                      "AS back FROM audit_event) x WHERE back",
                      NULL) == 0,
          "time never goes back along the chain");
    CHECK(th_sql_long(url, "SELECT count(DISTINCT prev_hash) FROM audit_event", NULL) == n,
          "no two events share a predecessor (no fork)");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM audit_event WHERE audit_event::text LIKE "
                      "'%never-stored-pw%'",
                      NULL) == 0,
          "secret scrubbed");

    th_step("the chain verifies, through either server");
    for (int i = 0; i < 2; i++) {
        char *viewer = th_dev_token(&srv[i], "viewer");
        struct th_resp r;
        /* the first from the genesis (no checkpoint yet), the second explicitly so: the
         * first may have left a checkpoint every QDB_AUDIT_CHECKPOINT_EVERY events */
        th_get(&srv[i], i == 0 ? "/api/v1/audit/verify" : "/api/v1/audit/verify?from_seq=1",
               viewer, &r);
        CHECK(r.status == 200 && json_is_true(json_object_get(r.json, "ok")) &&
                  json_integer_value(json_object_get(r.json, "checked")) == n,
              "server %d: %ld %s", i, r.status, r.body);
        th_resp_free(&r);
        free(viewer);
    }

    th_step("export streams the whole chain in pages, in order");
    char *op = th_dev_token(&srv[0], "operator");
    struct th_resp r;
    th_get(&srv[0], "/api/v1/audit/export", op, &r);
    long lines = 0, prev = 0, bad = 0;
    for (char *p = r.body, *nl; p && (nl = strchr(p, '\n')); p = nl + 1) {
        json_t *e = json_loadb(p, (size_t)(nl - p), 0, NULL);
        long seq = (long)json_integer_value(json_object_get(e, "seq"));
        bad += !e || seq != prev + 1;
        prev = seq;
        lines++;
        json_decref(e);
    }
    CHECK(r.status == 200 && lines == n && bad == 0, "export: %ld, %ld lines of %ld, %ld bad",
          r.status, lines, n, bad);
    th_resp_free(&r);
    th_get(&srv[0], "/api/v1/audit/export?action=test.write", op, &r);
    lines = 0;
    for (char *p = r.body; p && (p = strchr(p, '\n')); p++)
        lines++;
    CHECK(lines == lw.committed, "filtered export: %ld lines", lines);
    th_resp_free(&r);

    th_step("clients that hang up mid-export free their stream (and its slot)");
    for (int k = 0; k < 6; k++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_port = htons(srv[0].port);
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        char req[8192], buf[4096];
        int len = snprintf(req, sizeof req,
                           "GET /api/v1/audit/export HTTP/1.1\r\nHost: x\r\n"
                           "Authorization: Bearer %s\r\n\r\n",
                           op);
        ssize_t got = -1;
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
            send(fd, req, (size_t)len, MSG_NOSIGNAL) == len)
            got = recv(fd, buf, sizeof buf, MSG_WAITALL);
        close(fd);
        CHECK(got > 0 && strncmp(buf, "HTTP/1.1 200", 12) == 0, "hang-up %d got a stream", k);
    }
    /* the hung-up streams end when their producers next write: poll until a slot is free */
    long st = 0;
    for (double deadline = th_now_ms() + 10000; th_now_ms() < deadline; th_sleep_ms(20)) {
        th_get(&srv[0], "/api/v1/audit/export?action=test.write", op, &r);
        st = r.status;
        th_resp_free(&r);
        if (st != 503)
            break;
    }
    CHECK(st == 200, "a later export still gets a slot: %ld", st);
    free(op);
out:
    for (int i = 0; i < 2; i++) {
        if (srv[i].pid > 0)
            CHECK(th_server_stop(&srv[i]) == 0, "server %d stops cleanly", i);
        free(admin[i]);
    }
    th_db_drop(url);
    free(url);
    curl_global_cleanup();
    return th_done();
}
