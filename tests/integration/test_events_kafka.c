/* The relay against the Kafka protocol (issue 10): librdkafka's mock cluster of 3 brokers
 * (qdb-kafka-mock, a child driven on its stdin) as Kafka, one server relaying, and a real
 * librdkafka consumer reading the topics back from the beginning and comparing them with the
 * outbox by CloudEvent id: the routes' events arrive once each, in order per key, as valid
 * CloudEvents with the content-type header; a change that rolled back sends nothing; a
 * message Kafka refuses for good goes to the DLQ; injected produce errors are retried, not
 * lost; the partition leaders' broker down for 10 s loses nothing and sends nothing twice. */
#include <stdarg.h>

#include "kafka_helpers.h"
#include "jobs_helpers.h"

static char *url;
static struct th_server srv;
static struct kt_mock mock;
static char *admin;

static void expect_clean(const char *what, struct kt_report r, int allow_duplicates)
{
    fprintf(stderr, "   %s: %ld events, %ld missing, %ld duplicates, %ld out of order, %ld bad\n",
            what, r.expected, r.missing, r.duplicates, r.out_of_order, r.bad);
    CHECK(r.expected > 0, "%s: events to check", what);
    CHECK(r.missing == 0, "%s: %ld events never arrived", what, r.missing);
    CHECK(allow_duplicates || r.duplicates == 0, "%s: %ld duplicates", what, r.duplicates);
    CHECK(r.out_of_order == 0, "%s: %ld out of order within their key", what, r.out_of_order);
    CHECK(r.bad == 0, "%s: %ld not valid CloudEvents with the header and key", what, r.bad);
}

static void test_routes(void)
{
    th_step("the routes' events reach Kafka once each, in order per key");
    struct th_resp r;
    for (int i = 0; i < 15; i++) {
        long long id = jt_enqueue(&srv, admin, "{\"kind\":\"noop\"}");
        CHECK(id > 0, "enqueue");
    }
    th_post_json(&srv, "/api/v1/tokens", admin, "{\"name\":\"k-tok\",\"role\":\"viewer\"}", &r);
    CHECK(r.status == 201, "token");
    char path[128];
    snprintf(path, sizeof path, "/api/v1/tokens/%s",
             json_string_value(json_object_get(r.json, "id")) ?: "");
    th_resp_free(&r);
    CHECK(th_status(&srv, "DELETE", path, admin) == 204, "revoke");
    /* 15 enqueued + 15 finished */
    jt_wait_sql(url,
                "SELECT count(*) FROM outbox WHERE event->>'type' = "
                "'qa.qdb.controlplane.jobs.finished'",
                15, 20000);
    long to = kt_max_id(url);
    CHECK(kt_wait_published(url, to, 20000) == 0, "all marked published");
    struct kt_read rd = {0};
    kt_read_topic(mock.bootstrap, "app.controlplane.jobs", 3, 30, 500, 20000, &rd);
    expect_clean("jobs topic", kt_analyse(url, "app.controlplane.jobs", 0, to, &rd), 0);
    kt_read_free(&rd);
    kt_read_topic(mock.bootstrap, "app.controlplane.auth", 3, 2, 500, 20000, &rd);
    expect_clean("auth topic", kt_analyse(url, "app.controlplane.auth", 0, to, &rd), 0);
    kt_read_free(&rd);

    th_get(&srv, "/api/v1/events/status", admin, &r);
    CHECK(r.status == 200 && json_integer_value(json_object_get(r.json, "backlog")) == 0 &&
              json_integer_value(json_object_get(r.json, "published_total")) ==
                  th_sql_long(url, "SELECT count(*) FROM outbox", NULL) &&
              json_is_null(json_object_get(r.json, "oldest_age_seconds")) &&
              json_is_true(json_object_get(r.json, "kafka_configured")),
          "status after: %s", r.body);
    th_resp_free(&r);
    CHECK(th_metric(&srv, "qdb_outbox_relay_leader") == 1, "this replica leads");
}

static void test_rollback(void)
{
    th_step("a change that rolled back sends no event");
    PGconn *c = PQconnectdb(url);
    PQclear(PQexec(c, "CREATE FUNCTION k_fail() RETURNS trigger LANGUAGE plpgsql AS $$ "
                      "BEGIN RAISE EXCEPTION 'refused at commit'; END $$; "
                      "CREATE CONSTRAINT TRIGGER k_fail AFTER INSERT ON outbox "
                      "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
                      "WHEN (NEW.key = 'schedules/k-rollback') EXECUTE FUNCTION k_fail()"));
    struct th_resp r;
    long from = kt_max_id(url);
    th_post_json(&srv, "/api/v1/schedules", admin,
                 "{\"name\":\"k-rollback\",\"cron\":\"0 4 * * *\",\"kind\":\"noop\"}", &r);
    CHECK(r.status >= 500, "refused: %ld", r.status);
    th_resp_free(&r);
    th_post_json(&srv, "/api/v1/schedules", admin,
                 "{\"name\":\"k-after\",\"cron\":\"0 4 * * *\",\"kind\":\"noop\"}", &r);
    CHECK(r.status == 201, "the next change: %ld", r.status);
    th_resp_free(&r);
    PQclear(PQexec(c, "DROP TRIGGER k_fail ON outbox"));
    PQfinish(c);
    long to = kt_max_id(url);
    CHECK(kt_wait_published(url, to, 20000) == 0, "published");
    struct kt_read rd = {0};
    kt_read_topic(mock.bootstrap, "app.controlplane.jobs", 3, 31, 1000, 20000, &rd);
    int rolled = 0, after = 0;
    for (size_t i = 0; i < rd.n; i++) {
        rolled += strcmp(rd.m[i].key, "schedules/k-rollback") == 0;
        after += strcmp(rd.m[i].key, "schedules/k-after") == 0 && rd.m[i].id > from;
    }
    CHECK(rolled == 0, "no event of the rolled-back change (%d)", rolled);
    CHECK(after == 1, "the committed change's event arrived once (%d)", after);
    kt_read_free(&rd);
}

static void test_dlq(void)
{
    th_step("an event too large for Kafka goes to the DLQ with its error; the rest flow");
    long from = kt_max_id(url);
    /* QDB_KAFKA_MESSAGE_MAX_BYTES=20000 here: a 30 kB event is refused for good */
    PGresult *res = th_sql(url,
                           "WITH n AS (SELECT nextval(pg_get_serial_sequence('outbox', 'id')) "
                           "AS id) INSERT INTO outbox (id, topic, key, event) SELECT n.id, "
                           "'app.controlplane.test', 'big-1', jsonb_build_object('specversion', "
                           "'1.0', 'id', n.id::text, 'type', 'qa.qdb.controlplane.test.big', "
                           "'source', 'urn:qdb:control-plane', 'subject', 'big-1', 'time', "
                           "'2026-12-01T00:00:00.000000Z', 'data', jsonb_build_object('blob', "
                           "repeat('x', 30000))) FROM n RETURNING id",
                           NULL);
    long big = res && PQntuples(res) == 1 ? strtol(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    char bs[24];
    snprintf(bs, sizeof bs, "%ld", big);
    struct kt_writer w = {url, "after-big", 20, 5, 3, 0, 0};
    kt_writer_main(&w);
    long to = kt_max_id(url);
    CHECK(kt_wait_published(url, to, 20000) == 0, "the big one settled too");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM outbox WHERE id = $1::bigint AND dead_lettered AND "
                      "last_error LIKE '%SIZE_TOO_LARGE%'",
                      bs, NULL) == 1,
          "row marked dead-lettered with its error");
    struct kt_read rd = {0};
    kt_read_topic(mock.bootstrap, "dlq.controlplane", 1, 1, 500, 20000, &rd);
    CHECK(rd.n == 1, "one DLQ message (%zu)", rd.n);
    if (rd.n >= 1) {
        CHECK(rd.m[0].id == big, "the DLQ message is event %ld (%lld)", big, rd.m[0].id);
        CHECK(rd.m[0].dlq_error && strlen(rd.m[0].dlq_error) > 0, "with the error header");
        CHECK(rd.m[0].ce_header, "and the content-type header");
        CHECK(strcmp(rd.m[0].key, "big-1") == 0, "keyed by its subject");
    }
    kt_read_free(&rd);
    kt_read_topic(mock.bootstrap, "app.controlplane.test", 3, 20, 500, 20000, &rd);
    struct kt_report rep = kt_analyse(url, "app.controlplane.test", from + 1, to, &rd);
    expect_clean("after the DLQ", rep, 0);
    for (size_t i = 0; i < rd.n; i++)
        CHECK(rd.m[i].id != big, "the refused event is not on its topic");
    kt_read_free(&rd);
    struct th_resp r;
    th_get(&srv, "/api/v1/events/status", admin, &r);
    CHECK(json_integer_value(json_object_get(r.json, "dead_lettered_total")) == 1,
          "dead_lettered_total 1: %s", r.body);
    th_resp_free(&r);
}

static void test_request_errors(void)
{
    th_step("two injected produce errors are retried, nothing lost");
    long from = kt_max_id(url);
    CHECK(kt_mock_cmd(&mock, "errors 2 6") == 0, "inject NOT_LEADER_OR_FOLLOWER x2");
    struct kt_writer w = {url, "errs", 200, 10, 7, 0, 0};
    kt_writer_main(&w);
    long to = kt_max_id(url);
    CHECK(kt_wait_published(url, to, 30000) == 0, "published");
    struct kt_read rd = {0};
    kt_read_topic(mock.bootstrap, "app.controlplane.test", 3, 220, 1000, 20000, &rd);
    expect_clean("injected errors", kt_analyse(url, "app.controlplane.test", from, to, &rd), 0);
    kt_read_free(&rd);
}

static void test_prune(void)
{
    th_step("published events past QDB_OUTBOX_RETENTION are pruned by the leader, no others");
    long before = th_sql_long(url, "SELECT count(*) FROM outbox", NULL);
    PQclear(th_sql(url,
                   "UPDATE outbox SET published_at = published_at - interval '8 days' WHERE id IN "
                   "(SELECT id FROM outbox WHERE published_at IS NOT NULL ORDER BY id LIMIT 50)",
                   NULL));
    /* and one unpublished row, old: never pruned */
    PQclear(th_sql(url,
                   "INSERT INTO outbox (topic, key, event, created_at) VALUES "
                   "('app.controlplane.test', 'old-unpublished', '{\"specversion\":\"1.0\"}', "
                   "now() - interval '30 days')",
                   NULL));
    long left = jt_wait_sql(url,
                            "SELECT count(*) FROM outbox WHERE published_at < now() - "
                            "interval '7 days'",
                            0, 20000);
    CHECK(left == 0, "old published rows pruned (%ld left)", left);
    long after = th_sql_long(url, "SELECT count(*) FROM outbox", NULL);
    CHECK(after == before + 1 - 50, "exactly those 50 went (%ld -> %ld)", before, after);
    CHECK(th_sql_long(url, "SELECT count(*) FROM outbox WHERE key = 'old-unpublished'", NULL) == 1,
          "an unpublished row is never pruned");
    /* it is published meanwhile (an event without id: it goes out as it is) */
    kt_wait_published(url, kt_max_id(url), 20000);
}

static void test_leaders_down(void)
{
    th_step("the partition leaders' broker down 10 s while events are written");
    for (int p = 0; p < 3; p++)
        CHECK(kt_mock_cmd(&mock, "leader app.controlplane.test %d 2", p) == 0, "leader %d", p);
    long from = kt_max_id(url);
    /* some before, to warm the new leaders up */
    struct kt_writer pre = {url, "down", 30, 10, 9, 0, 0};
    kt_writer_main(&pre);
    CHECK(kt_wait_published(url, kt_max_id(url), 20000) == 0, "before the outage");
    CHECK(kt_mock_cmd(&mock, "down 2") == 0, "broker 2 down");
    double t0 = th_now_ms();
    /* about 10 s of writing: 40 transactions of 10, each held open 250 ms */
    struct kt_writer w = {url, "down", 400, 10, 9, 250, 0};
    kt_writer_main(&w);
    long backlog = th_sql_long(url, "SELECT count(*) FROM outbox WHERE published_at IS NULL", NULL);
    CHECK(backlog > 0, "events wait while the leaders are down (%ld)", backlog);
    CHECK(th_status(&srv, "GET", "/readyz", NULL) == 200, "/readyz unaffected");
    long m = -1;
    for (int i = 0; i < 50 && (m = th_metric(&srv, "qdb_outbox_backlog")) <= 0; i++)
        th_sleep_ms(100);
    CHECK(m > 0, "qdb_outbox_backlog shows them (%ld)", m);
    while (th_now_ms() - t0 < 10000)
        th_sleep_ms(100);
    CHECK(kt_mock_cmd(&mock, "up 2") == 0, "broker 2 up");
    long to = kt_max_id(url);
    double t1 = th_now_ms();
    CHECK(kt_wait_published(url, to, 40000) == 0, "all published after the outage");
    fprintf(stderr, "   down %.1f s; backlog drained %.1f s after the broker came back\n",
            (t1 - t0) / 1000.0, (th_now_ms() - t1) / 1000.0);
    struct kt_read rd = {0};
    kt_read_topic(mock.bootstrap, "app.controlplane.test", 3, 650, 1500, 30000, &rd);
    expect_clean("leaders down 10 s", kt_analyse(url, "app.controlplane.test", from, to, &rd), 0);
    kt_read_free(&rd);
}

/* One event in its own transaction on `c`, left open when commit is 0. Returns its id. */
static long event_on(PGconn *c, const char *key, int commit)
{
    PQclear(PQexec(c, "BEGIN"));
    const char *p[] = {key};
    PGresult *r = PQexecParams(
        c,
        "WITH n AS (SELECT nextval(pg_get_serial_sequence('outbox', 'id')) AS id) "
        "INSERT INTO outbox (id, topic, key, event) SELECT n.id, 'app.controlplane.test', "
        "$1::text, "
        "jsonb_build_object('specversion', '1.0', 'id', n.id::text, 'type', "
        "'qa.qdb.controlplane.test.made', 'source', 'urn:qdb:control-plane', 'subject', $1::text, "
        "'time', '2026-12-01T00:00:00.000000Z') FROM n RETURNING id",
        1, NULL, p, NULL, NULL, 0);
    long id = PQresultStatus(r) == PGRES_TUPLES_OK ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    if (!id)
        fprintf(stderr, "event_on: %s", PQerrorMessage(c));
    PQclear(r);
    if (commit)
        PQclear(PQexec(c, "COMMIT"));
    return id;
}

static void test_late_commit(void)
{
    th_step("a row that commits after a higher id was published is not skipped");
    PGconn *x = PQconnectdb(url), *y = PQconnectdb(url);
    long low = event_on(x, "late-x", 0); /* drawn first, committed last */
    long high = event_on(y, "late-y", 1);
    CHECK(low > 0 && high > low, "ids %ld < %ld", low, high);
    /* the open one is not visible: what is, gets published */
    CHECK(kt_wait_published(url, high, 20000) == 0, "the higher id is published meanwhile");
    char hs[24];
    snprintf(hs, sizeof hs, "%ld", high);
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM outbox WHERE id = $1::bigint AND published_at "
                      "IS NOT NULL",
                      hs, NULL) == 1,
          "id %ld published before %ld committed", high, low);
    PQclear(PQexec(x, "COMMIT"));
    long next = event_on(y, "late-x", 1); /* the same key as the late one, after it */
    CHECK(kt_wait_published(url, next, 20000) == 0, "the late row is published too");
    struct kt_read rd = {0};
    kt_read_topic(mock.bootstrap, "app.controlplane.test", 3, 1, 1000, 20000, &rd);
    struct kt_report rep = kt_analyse(url, "app.controlplane.test", low - 1, next, &rd);
    expect_clean("late commit", rep, 0);
    CHECK(rep.expected == 3, "three events (%ld)", rep.expected);
    kt_read_free(&rd);
    PQfinish(x);
    PQfinish(y);
}

int main(void)
{
    if (kt_mock_start(&mock) != 0) {
        CHECK(0, "mock cluster started");
        return th_done();
    }
    CHECK(kt_mock_cmd(&mock, "topic app.controlplane.jobs 3") == 0 &&
              kt_mock_cmd(&mock, "topic app.controlplane.auth 3") == 0 &&
              kt_mock_cmd(&mock, "topic app.controlplane.test 3") == 0 &&
              kt_mock_cmd(&mock, "topic dlq.controlplane 1") == 0,
          "topics");
    url = th_db_create("eventskafka");
    char brokers[600];
    snprintf(brokers, sizeof brokers, "QDB_KAFKA_BROKERS=%s", mock.bootstrap);
    const char *env[] = {brokers, "QDB_KAFKA_MESSAGE_MAX_BYTES=20000", "QDB_WORKERS=2",
                         "QDB_OUTBOX_PRUNE_INTERVAL=1", NULL};
    if (th_server_start(&srv, url, env, 1) != 0) {
        CHECK(0, "server start");
        kt_mock_stop(&mock);
        return th_done();
    }
    admin = th_dev_token(&srv, "admin");
    test_routes();
    test_rollback();
    test_dlq();
    test_request_errors();
    test_late_commit();
    test_prune();
    test_leaders_down();
    CHECK(th_server_stop(&srv) == 0, "clean stop");
    kt_mock_stop(&mock);
    free(admin);
    th_db_drop(url);
    free(url);
    return th_done();
}
