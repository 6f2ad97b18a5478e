/* Events in the outbox (issue 10, migrations/0008): every mutating route of auth, audit and
 * jobs, the runner's finishes and a verification that finds the chain broken each leave one
 * CloudEvent row in the transaction of the change, of the right type, subject, topic and
 * actor; a change that rolls back leaves none; no secret is ever in an event. Kafka is not
 * configured here (test_events_kafka.c publishes): the outbox fills, the status route and the
 * backlog metric say so, nothing fails. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "harness.h"
#include "jobs_helpers.h"

static char *url;
static struct th_server srv;
static char *admin, *operator, * viewer;

/* Several statements in one go, as the superuser (th_sql takes one). */
static void exec_multi(const char *sql)
{
    PGconn *c = PQconnectdb(url);
    PGresult *r = PQexec(c, sql);
    CHECK(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

static long max_id(void)
{
    return th_sql_long(url, "SELECT coalesce(max(id), 0) FROM outbox", NULL);
}

/* Check that the CloudEvent of outbox row `id` is valid and is `type` about `subject` by
 * `actor` (NULL: skip that check). */
static void check_event(long id, const char *type, const char *subject, const char *actor,
                        const char *room)
{
    char ids[24];
    snprintf(ids, sizeof ids, "%ld", id);
    PGresult *r =
        th_sql(url, "SELECT topic, key, event::text FROM outbox WHERE id = $1::bigint", ids, NULL);
    if (!r || PQntuples(r) != 1) {
        CHECK(0, "outbox row %ld exists", id);
        PQclear(r);
        return;
    }
    char topic[128];
    snprintf(topic, sizeof topic, "app.controlplane.%s", room);
    CHECK(strcmp(PQgetvalue(r, 0, 0), topic) == 0, "%s: topic %s, want %s", type,
          PQgetvalue(r, 0, 0), topic);
    CHECK(strcmp(PQgetvalue(r, 0, 1), subject) == 0, "%s: key %s, want the subject %s", type,
          PQgetvalue(r, 0, 1), subject);
    json_t *ce = json_loads(PQgetvalue(r, 0, 2), 0, NULL);
    CHECK(json_is_object(ce), "event is JSON");
    const char *s;
    CHECK((s = json_string_value(json_object_get(ce, "specversion"))) && strcmp(s, "1.0") == 0,
          "%s: specversion", type);
    CHECK((s = json_string_value(json_object_get(ce, "id"))) && strcmp(s, ids) == 0,
          "%s: id %s, want the outbox id %s", type, s ? s : "(none)", ids);
    CHECK((s = json_string_value(json_object_get(ce, "source"))) &&
              strcmp(s, "urn:qdb:control-plane") == 0,
          "%s: source", type);
    CHECK((s = json_string_value(json_object_get(ce, "type"))) && strcmp(s, type) == 0,
          "type %s, want %s", s ? s : "(none)", type);
    CHECK((s = json_string_value(json_object_get(ce, "subject"))) && strcmp(s, subject) == 0,
          "%s: subject %s, want %s", type, s ? s : "(none)", subject);
    /* RFC 3339 UTC with microseconds: 2026-12-01T10:00:00.123456Z */
    s = json_string_value(json_object_get(ce, "time"));
    CHECK(s && strlen(s) == 27 && s[4] == '-' && s[10] == 'T' && s[19] == '.' && s[26] == 'Z',
          "%s: time %s", type, s ? s : "(none)");
    CHECK((s = json_string_value(json_object_get(ce, "datacontenttype"))) &&
              strcmp(s, "application/json") == 0,
          "%s: datacontenttype", type);
    CHECK(json_is_object(json_object_get(ce, "data")), "%s: data is an object", type);
    s = json_string_value(json_object_get(ce, "actor"));
    CHECK(s && (!actor || strcmp(s, actor) == 0), "%s: actor %s, want %s", type, s ? s : "(none)",
          actor ? actor : "any");
    CHECK(json_string_value(json_object_get(ce, "actortype")) != NULL, "%s: actortype", type);
    json_decref(ce);
    PQclear(r);
}

/* The one row after `after` of `type` about `subject`: its id (0 when not exactly one). */
static long one_event(long after, const char *type, const char *subject)
{
    char a[24];
    snprintf(a, sizeof a, "%ld", after);
    long n = th_sql_long(url,
                         "SELECT count(*) FROM outbox WHERE id > $1::bigint AND "
                         "event->>'type' = $2 AND key = $3",
                         a, type, subject, NULL);
    CHECK(n == 1, "%s about %s: %ld events, want exactly 1", type, subject, n);
    return n == 1 ? th_sql_long(url,
                                "SELECT id FROM outbox WHERE id > $1::bigint AND "
                                "event->>'type' = $2 AND key = $3",
                                a, type, subject, NULL)
                  : 0;
}

/* Wait until one event of `type` about `subject` is there (the runner writes it). */
static long wait_event(long after, const char *type, const char *subject)
{
    char a[24];
    snprintf(a, sizeof a, "%ld", after);
    for (int i = 0; i < 300; i++) {
        long n = th_sql_long(url,
                             "SELECT count(*) FROM outbox WHERE id > $1::bigint AND "
                             "event->>'type' = $2 AND key = $3",
                             a, type, subject, NULL);
        if (n > 0)
            break;
        th_sleep_ms(100);
    }
    return one_event(after, type, subject);
}

static void test_routes(void)
{
    struct th_resp r;
    char subject[128], path[160];

    th_step("auth: token created and revoked");
    long before = max_id();
    th_post_json(&srv, "/api/v1/tokens", admin, "{\"name\":\"ev-tok\",\"role\":\"viewer\"}", &r);
    CHECK(r.status == 201, "token create: %ld %s", r.status, r.body);
    const char *tid = json_string_value(json_object_get(r.json, "id"));
    char *secret = strdup(json_string_value(json_object_get(r.json, "token")) ?: "");
    snprintf(subject, sizeof subject, "tokens/%s", tid ? tid : "");
    long id = one_event(before, "qa.qdb.controlplane.auth.token_created", subject);
    if (id)
        check_event(id, "qa.qdb.controlplane.auth.token_created", subject, "test-admin", "auth");
    snprintf(path, sizeof path, "/api/v1/tokens/%s", tid ? tid : "");
    th_resp_free(&r);
    before = max_id();
    CHECK(th_status(&srv, "DELETE", path, admin) == 204, "revoke");
    id = one_event(before, "qa.qdb.controlplane.auth.token_revoked", subject);
    if (id)
        check_event(id, "qa.qdb.controlplane.auth.token_revoked", subject, "test-admin", "auth");

    th_step("no secret: neither the token nor its hash is in any event");
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)secret, strlen(secret), md);
    char hex[2 * SHA256_DIGEST_LENGTH + 1];
    for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    CHECK(strlen(secret) > 10, "the create returned a secret");
    CHECK(th_sql_long(url, "SELECT count(*) FROM api_token WHERE token_sha256 = $1", hex, NULL) ==
              1,
          "the hash computed here is the stored one");
    CHECK(th_sql_long(url, "SELECT count(*) FROM outbox WHERE strpos(event::text, $1) > 0", secret,
                      NULL) == 0,
          "token value absent from the outbox");
    CHECK(th_sql_long(url, "SELECT count(*) FROM outbox WHERE strpos(event::text, $1) > 0", hex,
                      NULL) == 0,
          "token hash absent from the outbox");
    free(secret);

    th_step("jobs: enqueued, cancelled, retried, finished by the runner");
    before = max_id();
    long long job =
        jt_enqueue(&srv, admin, "{\"kind\":\"noop\",\"run_at\":\"2999-01-01T00:00:00Z\"}");
    CHECK(job > 0, "enqueue");
    snprintf(subject, sizeof subject, "jobs/%lld", job);
    id = one_event(before, "qa.qdb.controlplane.jobs.enqueued", subject);
    if (id)
        check_event(id, "qa.qdb.controlplane.jobs.enqueued", subject, "test-admin", "jobs");
    before = max_id();
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/cancel", job);
    CHECK(jt_post(&srv, path, operator, NULL, NULL, &r) == 200, "cancel");
    th_resp_free(&r);
    id = one_event(before, "qa.qdb.controlplane.jobs.cancelled", subject);
    if (id)
        check_event(id, "qa.qdb.controlplane.jobs.cancelled", subject, "test-operator", "jobs");
    before = max_id();
    snprintf(path, sizeof path, "/api/v1/jobs/%lld/retry", job);
    CHECK(jt_post(&srv, path, operator, NULL, NULL, &r) == 202, "retry");
    th_resp_free(&r);
    id = one_event(before, "qa.qdb.controlplane.jobs.retried", subject);
    if (id)
        check_event(id, "qa.qdb.controlplane.jobs.retried", subject, "test-operator", "jobs");

    before = max_id();
    job = jt_enqueue(&srv, admin, "{\"kind\":\"noop\"}");
    snprintf(subject, sizeof subject, "jobs/%lld", job);
    id = wait_event(before, "qa.qdb.controlplane.jobs.finished", subject);
    if (id) {
        check_event(id, "qa.qdb.controlplane.jobs.finished", subject, "system", "jobs");
        char ids[24];
        snprintf(ids, sizeof ids, "%ld", id);
        PGresult *e = th_sql(url,
                             "SELECT event->'data'->>'state' FROM outbox WHERE id = "
                             "$1::bigint",
                             ids, NULL);
        CHECK(e && PQntuples(e) == 1 && strcmp(PQgetvalue(e, 0, 0), "succeeded") == 0,
              "finished: succeeded");
        PQclear(e);
        /* the enqueue's event comes first, by id */
        CHECK(one_event(before, "qa.qdb.controlplane.jobs.enqueued", subject) < id,
              "enqueued before finished");
    }
    before = max_id();
    job = jt_enqueue(&srv, admin,
                     "{\"kind\":\"fail\",\"args\":{\"permanent\":true},\"max_attempts\":1}");
    snprintf(subject, sizeof subject, "jobs/%lld", job);
    id = wait_event(before, "qa.qdb.controlplane.jobs.finished", subject);
    if (id)
        check_event(id, "qa.qdb.controlplane.jobs.finished", subject, "system", "jobs");

    th_step("jobs: schedule created and changed");
    before = max_id();
    th_post_json(&srv, "/api/v1/schedules", operator,
                 "{\"name\":\"ev-sched\",\"cron\":\"0 4 * * *\",\"kind\":\"noop\"}", &r);
    CHECK(r.status == 201, "schedule create: %ld %s", r.status, r.body);
    th_resp_free(&r);
    id = one_event(before, "qa.qdb.controlplane.jobs.schedule_created", "schedules/ev-sched");
    if (id)
        check_event(id, "qa.qdb.controlplane.jobs.schedule_created", "schedules/ev-sched",
                    "test-operator", "jobs");
    before = max_id();
    CHECK(jt_patch(&srv, "/api/v1/schedules/ev-sched", operator, "{\"enabled\":false}", &r) == 200,
          "schedule update");
    th_resp_free(&r);
    id = one_event(before, "qa.qdb.controlplane.jobs.schedule_updated", "schedules/ev-sched");
    if (id)
        check_event(id, "qa.qdb.controlplane.jobs.schedule_updated", "schedules/ev-sched",
                    "test-operator", "jobs");

    th_step("jobs: a schedule that fires enqueues with its event, by the schedule");
    th_post_json(&srv, "/api/v1/schedules", operator,
                 "{\"name\":\"ev-fire\",\"cron\":\"0 4 * * *\",\"kind\":\"noop\"}", &r);
    CHECK(r.status == 201, "schedule create: %ld", r.status);
    th_resp_free(&r);
    PQclear(th_sql(url,
                   "UPDATE schedule SET next_run_at = now() - interval '1 second' WHERE name = "
                   "'ev-fire'",
                   NULL));
    long fired = jt_wait_sql(url,
                             "SELECT count(*) FROM outbox WHERE event->>'type' = "
                             "'qa.qdb.controlplane.jobs.enqueued' AND event->>'actor' = "
                             "'schedule:ev-fire'",
                             1, 15000);
    CHECK(fired == 1, "one enqueued event by the schedule (%ld)", fired);
    long fjob = th_sql_long(url, "SELECT id FROM job WHERE created_by = 'schedule:ev-fire'", NULL);
    snprintf(subject, sizeof subject, "jobs/%ld", fjob);
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM outbox WHERE key = $1 AND event->>'type' = "
                      "'qa.qdb.controlplane.jobs.enqueued'",
                      subject, NULL) == 1,
          "about its job %s", subject);

    th_step("audit: a verification job enqueued");
    before = max_id();
    th_post_json(&srv, "/api/v1/audit/verify", operator, "{}", &r);
    CHECK(r.status == 202, "verify job: %ld", r.status);
    snprintf(subject, sizeof subject, "jobs/%lld",
             (long long)json_integer_value(json_object_get(r.json, "id")));
    th_resp_free(&r);
    id = one_event(before, "qa.qdb.controlplane.jobs.enqueued", subject);
    if (id)
        check_event(id, "qa.qdb.controlplane.jobs.enqueued", subject, "test-operator", "jobs");
}

static void test_rollback(void)
{
    th_step("a change that rolls back at COMMIT leaves no event (and no change)");
    /* a deferred trigger fails the COMMIT of the transaction that wrote this key's event:
     * the whole transaction, schedule and audit record included, rolls back */
    exec_multi("CREATE FUNCTION ev_fail() RETURNS trigger LANGUAGE plpgsql AS $$ "
               "BEGIN RAISE EXCEPTION 'refused at commit'; END $$; "
               "CREATE CONSTRAINT TRIGGER ev_fail AFTER INSERT ON outbox "
               "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
               "WHEN (NEW.key = 'schedules/ev-rollback') EXECUTE FUNCTION ev_fail()");
    long before = max_id();
    struct th_resp resp;
    th_post_json(&srv, "/api/v1/schedules", operator,
                 "{\"name\":\"ev-rollback\",\"cron\":\"0 4 * * *\",\"kind\":\"noop\"}", &resp);
    CHECK(resp.status >= 500, "the change failed: %ld %s", resp.status, resp.body);
    th_resp_free(&resp);
    char a[24];
    snprintf(a, sizeof a, "%ld", before);
    CHECK(th_sql_long(url, "SELECT count(*) FROM outbox WHERE key = 'schedules/ev-rollback'",
                      NULL) == 0,
          "no event");
    CHECK(th_sql_long(url, "SELECT count(*) FROM schedule WHERE name = 'ev-rollback'", NULL) == 0,
          "no schedule");
    exec_multi("DROP TRIGGER ev_fail ON outbox");
}

static void test_chain_broken(void)
{
    th_step("a verification that finds the chain broken emits audit.chain_broken");
    /* let the sequencer chain what the routes above recorded */
    jt_wait_sql(url, "SELECT count(*) FROM audit_pending", 0, 10000);
    exec_multi("BEGIN; ALTER TABLE audit_event DISABLE TRIGGER ALL; "
               "UPDATE audit_event SET action = 'evil' WHERE seq = 2; "
               "ALTER TABLE audit_event ENABLE TRIGGER ALL; COMMIT");
    long before = max_id();
    struct th_resp resp;
    th_get(&srv, "/api/v1/audit/verify?from_seq=1", viewer, &resp);
    CHECK(resp.status == 200 && json_is_false(json_object_get(resp.json, "ok")),
          "verify reports the break: %s", resp.body);
    th_resp_free(&resp);
    long id = one_event(before, "qa.qdb.controlplane.audit.chain_broken", "audit/chain");
    if (id) {
        check_event(id, "qa.qdb.controlplane.audit.chain_broken", "audit/chain", "system", "audit");
        char ids[24];
        snprintf(ids, sizeof ids, "%ld", id);
        CHECK(th_sql_long(url,
                          "SELECT (event->'data'->>'first_broken_seq')::bigint FROM outbox "
                          "WHERE id = $1::bigint",
                          ids, NULL) == 2,
              "first_broken_seq 2");
    }
}

static void test_status_without_kafka(void)
{
    th_step("without Kafka: the outbox fills, status and metric say so");
    long backlog = th_sql_long(url, "SELECT count(*) FROM outbox WHERE published_at IS NULL", NULL);
    CHECK(backlog > 10, "events wait (%ld)", backlog);
    struct th_resp r;
    th_get(&srv, "/api/v1/events/status", viewer, &r);
    CHECK(r.status == 200, "status: %ld %s", r.status, r.body);
    CHECK(json_integer_value(json_object_get(r.json, "backlog")) == backlog, "backlog %s", r.body);
    CHECK(json_is_real(json_object_get(r.json, "oldest_age_seconds")) &&
              json_real_value(json_object_get(r.json, "oldest_age_seconds")) >= 0,
          "oldest age");
    CHECK(json_integer_value(json_object_get(r.json, "published_total")) == 0 &&
              json_integer_value(json_object_get(r.json, "dead_lettered_total")) == 0,
          "nothing published");
    CHECK(json_is_false(json_object_get(r.json, "kafka_configured")), "not configured");
    th_resp_free(&r);
    CHECK(th_status(&srv, "GET", "/api/v1/events/status", NULL) == 401, "needs a token");
    long m = -1;
    for (int i = 0; i < 100 && (m = th_metric(&srv, "qdb_outbox_backlog")) != backlog; i++)
        th_sleep_ms(100);
    CHECK(m == backlog, "qdb_outbox_backlog %ld, want %ld", m, backlog);
    CHECK(th_metric(&srv, "qdb_outbox_oldest_age_seconds") >= 0, "oldest age metric");
    CHECK(th_status(&srv, "GET", "/readyz", NULL) == 200, "ready");
    CHECK(th_sql_long(url, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL", NULL) == 0,
          "nothing marked published");
}

int main(void)
{
    url = th_db_create("events");
    if (th_server_start(&srv, url, NULL, 1) != 0) {
        CHECK(0, "server start");
        return th_done();
    }
    admin = th_dev_token(&srv, "admin");
    operator= th_dev_token(&srv, "operator");
    viewer = th_dev_token(&srv, "viewer");
    test_routes();
    test_rollback();
    test_chain_broken();
    test_status_without_kafka();
    CHECK(th_server_stop(&srv) == 0, "clean stop");
    free(admin);
    free(operator);
    free(viewer);
    th_db_drop(url);
    free(url);
    return th_done();
}
