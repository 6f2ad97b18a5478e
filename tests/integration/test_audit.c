/* The audit trail end to end: events written by real mutations (API tokens), the list with
 * its filters and cursor pages, the JSON Lines export, verify on an intact chain and on
 * rows changed, removed and put back by a superuser with the triggers disabled, the
 * append-only triggers, events written by this process (audit_record linked in) on the same
 * chain, secrets scrubbed, the metrics, the daily schedule row and the key's configuration
 * errors. Ends with a grep of the whole table for every secret and token the test made. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit/audit.h"
#include "audit/audit_internal.h"
#include "harness.h"

static char *url;
static struct th_server srv;
static char *admin, *viewer, *operator;

static long count_events(void)
{
    return th_sql_long(url, "SELECT count(*) FROM audit_event", NULL);
}

static json_t *get_json(const char *path, const char *token, long want_status)
{
    struct th_resp r;
    if (th_get(&srv, path, token, &r) != 0) {
        CHECK(0, "GET %s: no answer", path);
        return NULL;
    }
    CHECK(r.status == want_status, "GET %s: %ld, want %ld: %s", path, r.status, want_status,
          r.body);
    json_t *j = r.json ? json_incref(r.json) : NULL;
    th_resp_free(&r);
    return j;
}

static void expect_verify(const char *query, int ok, long checked, long broken)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/audit/verify%s", query);
    json_t *j = get_json(path, viewer, 200);
    json_t *fb = json_object_get(j, "first_broken_seq");
    CHECK(json_is_boolean(json_object_get(j, "ok")) &&
              json_boolean_value(json_object_get(j, "ok")) == ok,
          "%s: ok should be %d", path, ok);
    CHECK(json_integer_value(json_object_get(j, "checked")) == checked,
          "%s: checked %lld, want %ld", path,
          (long long)json_integer_value(json_object_get(j, "checked")), checked);
    if (broken)
        CHECK(json_integer_value(fb) == broken, "%s: first_broken_seq %lld, want %ld", path,
              (long long)json_integer_value(fb), broken);
    else
        CHECK(json_is_null(fb), "%s: first_broken_seq should be null", path);
    json_decref(j);
}

/* Run SQL text (several statements) on one superuser session; returns 0 or -1. */
static int session_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        fprintf(stderr, "session_exec: %s\n", PQresultErrorMessage(r));
    PQclear(r);
    return ok ? 0 : -1;
}

struct made_token {
    char id[64];
    char secret[128];
    char hash[65];
};

static void sha256_hex(const char *s, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static int create_token(const char *name, struct made_token *t)
{
    char body[256];
    snprintf(body, sizeof body, "{\"name\":\"%s\",\"role\":\"viewer\"}", name);
    struct th_resp r;
    int ok = th_post_json(&srv, "/api/v1/tokens", admin, body, &r) == 0 && r.status == 201;
    CHECK(ok, "create token %s: %ld %s", name, r.status, r.body ? r.body : "");
    if (ok) {
        snprintf(t->id, sizeof t->id, "%s", json_string_value(json_object_get(r.json, "id")));
        snprintf(t->secret, sizeof t->secret, "%s",
                 json_string_value(json_object_get(r.json, "token")));
        sha256_hex(t->secret, t->hash);
    }
    th_resp_free(&r);
    return ok ? 0 : -1;
}

static void test_roles(void)
{
    th_step("roles: list and verify for viewers, export for operators, nothing anonymous");
    json_t *j = get_json("/api/v1/audit", NULL, 401);
    json_decref(j);
    j = get_json("/api/v1/audit/verify", NULL, 401);
    json_decref(j);
    j = get_json("/api/v1/audit/export", viewer, 403);
    json_decref(j);
    j = get_json("/api/v1/audit", viewer, 200);
    CHECK(json_array_size(json_object_get(j, "items")) == 0, "empty trail");
    json_decref(j);
    expect_verify("", 1, 0, 0);
}

static void test_recorded(struct made_token *tokens)
{
    th_step("a mutation through the API leaves one event with actor, request and resource");
    long before = count_events();
    const char *hdrs[] = {"Content-Type: application/json", "X-Request-Id: audit-test-req-1", NULL};
    char auth[4096];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", admin);
    const char *h2[] = {hdrs[0], hdrs[1], auth, NULL};
    const char *body = "{\"name\":\"audit-one\",\"role\":\"operator\"}";
    struct th_resp r;
    th_http(&srv, "POST", "/api/v1/tokens", h2, body, strlen(body), &r);
    CHECK(r.status == 201, "create: %ld %s", r.status, r.body);
    snprintf(tokens[0].id, sizeof tokens[0].id, "%s",
             json_string_value(json_object_get(r.json, "id")));
    snprintf(tokens[0].secret, sizeof tokens[0].secret, "%s",
             json_string_value(json_object_get(r.json, "token")));
    sha256_hex(tokens[0].secret, tokens[0].hash);
    th_resp_free(&r);
    CHECK(count_events() == before + 1, "one event");

    json_t *j = get_json("/api/v1/audit?limit=1", viewer, 200);
    json_t *e = json_array_get(json_object_get(j, "items"), 0);
    const char *fields[][2] = {{"action", "token.create"},         {"resource_type", "api_token"},
                               {"resource_id", tokens[0].id},      {"actor_subject", "test-admin"},
                               {"actor_name", "Test admin"},       {"auth_method", "dev"},
                               {"request_id", "audit-test-req-1"}, {"client_addr", "127.0.0.1"}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const char *got = json_string_value(json_object_get(e, fields[i][0]));
        CHECK(got && strcmp(got, fields[i][1]) == 0, "%s = %s, want %s", fields[i][0],
              got ? got : "(null)", fields[i][1]);
    }
    json_t *after = json_object_get(e, "after");
    CHECK(json_is_object(after) &&
              strcmp(json_string_value(json_object_get(after, "name")) ?: "", "audit-one") == 0,
          "after holds the public row");
    CHECK(!json_object_get(after, "token") && !json_object_get(after, "secret_hash") &&
              !json_object_get(after, "hash"),
          "after holds no secret");
    CHECK(json_is_null(json_object_get(e, "before")) && json_is_null(json_object_get(e, "job_id")),
          "no before, no job");
    CHECK(json_integer_value(json_object_get(e, "seq")) == before + 1, "seq follows");
    const char *time = json_string_value(json_object_get(e, "time"));
    CHECK(time && strlen(time) == 27 && time[26] == 'Z' && time[19] == '.',
          "time with microseconds: %s", time ? time : "");
    CHECK(strlen(json_string_value(json_object_get(e, "hash")) ?: "") == 64, "hash shown");
    json_decref(j);

    th_step("a request that fails leaves no event");
    before = count_events();
    th_post_json(&srv, "/api/v1/tokens", admin, "{\"name\":\"\",\"role\":\"viewer\"}", &r);
    CHECK(r.status == 400, "invalid token: %ld", r.status);
    th_resp_free(&r);
    th_post_json(&srv, "/api/v1/tokens", admin, "{\"name\":\"x\",\"role\":\"king\"}", &r);
    CHECK(r.status == 400, "invalid role: %ld", r.status);
    th_resp_free(&r);
    CHECK(count_events() == before, "no event for failures");

    for (int i = 1; i < 4; i++) {
        char name[32];
        snprintf(name, sizeof name, "audit-%d", i);
        create_token(name, &tokens[i]);
    }
}

static void test_list(struct made_token *tokens)
{
    th_step("list: filters");
    long total = count_events();
    char path[512];
    snprintf(path, sizeof path, "/api/v1/audit?resource_type=api_token&resource_id=%s",
             tokens[2].id);
    json_t *j = get_json(path, viewer, 200);
    CHECK(json_array_size(json_object_get(j, "items")) == 1, "by resource");
    json_decref(j);
    j = get_json("/api/v1/audit?action=token.create&limit=500", viewer, 200);
    CHECK((long)json_array_size(json_object_get(j, "items")) == total, "by action: %zu",
          json_array_size(json_object_get(j, "items")));
    json_decref(j);
    j = get_json("/api/v1/audit?actor=test-admin&limit=500", viewer, 200);
    CHECK((long)json_array_size(json_object_get(j, "items")) == total, "by actor subject");
    json_decref(j);
    j = get_json("/api/v1/audit?actor=Test%20admin", viewer, 200);
    CHECK((long)json_array_size(json_object_get(j, "items")) == total, "by actor name");
    json_decref(j);
    j = get_json("/api/v1/audit?actor=nobody", viewer, 200);
    CHECK(json_array_size(json_object_get(j, "items")) == 0, "unknown actor");
    json_decref(j);
    j = get_json("/api/v1/audit?environment=prod", viewer, 200);
    CHECK(json_array_size(json_object_get(j, "items")) == 0, "environment");
    json_decref(j);
    j = get_json("/api/v1/audit?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00%2B02:00",
                 viewer, 200);
    CHECK((long)json_array_size(json_object_get(j, "items")) == total, "time range");
    json_decref(j);
    j = get_json("/api/v1/audit?since=2999-01-01T00:00:00Z", viewer, 200);
    CHECK(json_array_size(json_object_get(j, "items")) == 0, "future");
    json_decref(j);
    j = get_json("/api/v1/audit?until=2000-01-01T00:00:00.5Z", viewer, 200);
    CHECK(json_array_size(json_object_get(j, "items")) == 0, "past");
    json_decref(j);

    th_step("list: bad parameters answer 400 naming the field");
    const char *bad[][2] = {{"since=yesterday", "since"}, {"until=2026-02-30T00:00:00Z", "until"},
                            {"limit=0", "limit"},         {"limit=501", "limit"},
                            {"limit=ten", "limit"},       {"cursor=nonsense!", "cursor"},
                            {"cursor=YWJj", "cursor"},    {"actor=", "actor"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(path, sizeof path, "/api/v1/audit?%s", bad[i][0]);
        struct th_resp r;
        th_get(&srv, path, viewer, &r);
        const char *field = json_string_value(json_object_get(r.json, "field"));
        CHECK(th_is_problem(&r, 400) && field && strcmp(field, bad[i][1]) == 0, "%s: %ld %s", path,
              r.status, r.body);
        th_resp_free(&r);
    }
    struct th_resp r;
    th_get(&srv, "/api/v1/audit/verify?from_seq=5&to_seq=2", viewer, &r);
    CHECK(th_is_problem(&r, 400), "to below from: %ld", r.status);
    th_resp_free(&r);
    th_get(&srv, "/api/v1/audit/verify?from_seq=0", viewer, &r);
    CHECK(th_is_problem(&r, 400), "from_seq 0: %ld", r.status);
    th_resp_free(&r);

    th_step("list: cursor pages, newest first, no duplicates, no gaps");
    long seen = 0, last_seq = -1;
    char cursor[128] = "";
    int pages = 0;
    for (;;) {
        snprintf(path, sizeof path, "/api/v1/audit?limit=2%s%s", cursor[0] ? "&cursor=" : "",
                 cursor);
        j = get_json(path, viewer, 200);
        json_t *items = json_object_get(j, "items");
        size_t i;
        json_t *e;
        json_array_foreach(items, i, e)
        {
            long seq = (long)json_integer_value(json_object_get(e, "seq"));
            CHECK(last_seq < 0 || seq == last_seq - 1, "seq %ld after %ld", seq, last_seq);
            last_seq = seq;
            seen++;
        }
        pages++;
        json_t *next = json_object_get(j, "next_cursor");
        if (!json_is_string(next) || pages > 50) {
            CHECK(json_is_null(next), "last page has next_cursor null");
            json_decref(j);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", json_string_value(next));
        json_decref(j);
    }
    CHECK(seen == total && last_seq == 1, "pages saw %ld of %ld, ending at %ld", seen, total,
          last_seq);
}

static void test_export(void)
{
    th_step("export: JSON Lines, oldest first, filters, streamed");
    long total = count_events();
    struct th_resp r;
    th_get(&srv, "/api/v1/audit/export", operator, & r);
    CHECK(r.status == 200, "export: %ld", r.status);
    char *ct = th_resp_header(&r, "Content-Type");
    CHECK(ct && strcmp(ct, "application/jsonl") == 0, "content type %s", ct ? ct : "");
    free(ct);
    char *te = th_resp_header(&r, "Transfer-Encoding");
    CHECK(te && strcmp(te, "chunked") == 0, "streamed (chunked)");
    free(te);
    long lines = 0, prev = 0;
    for (char *p = r.body, *nl; p && (nl = strchr(p, '\n')); p = nl + 1) {
        json_t *e = json_loadb(p, (size_t)(nl - p), 0, NULL);
        long seq = (long)json_integer_value(json_object_get(e, "seq"));
        CHECK(e && seq == prev + 1, "line %ld: seq %ld", lines + 1, seq);
        prev = seq;
        lines++;
        json_decref(e);
    }
    CHECK(lines == total, "%ld lines, %ld events", lines, total);
    CHECK(r.len > 0 && r.body[r.len - 1] == '\n', "ends with a newline");
    th_resp_free(&r);
    th_get(&srv, "/api/v1/audit/export?action=token.revoke", operator, & r);
    CHECK(r.status == 200 && r.len == 0, "filtered to nothing: %ld, %zu bytes", r.status, r.len);
    th_resp_free(&r);
    th_get(&srv, "/api/v1/audit/export?since=bad", operator, & r);
    CHECK(th_is_problem(&r, 400), "bad filter: %ld", r.status);
    th_resp_free(&r);
}

/* Events written by this process through audit_record, on the server's chain. */
static void test_in_process(void)
{
    th_step("audit_record from another process joins the same chain; secrets scrubbed");
    char path[300];
    snprintf(path, sizeof path, "%s/audit-hmac-key",
             getenv("QDB_TEST_LOG_DIR") ? getenv("QDB_TEST_LOG_DIR") : "/tmp");
    CHECK(audit_key_load(path) == 0, "key file %s", path);
    struct db_settings st = {url, 5000, 3, "audit-test"};
    struct db_conn *c = db_conn_open(&st);
    CHECK(c != NULL, "connect");
    if (!c)
        return;
    json_t *before = json_loads(
        "{\"name\":\"db1\",\"password\":\"hunter2-before\",\"conn\":{\"api_key\":\"k-777\","
        "\"host\":\"h\",\"dsn\":\"Bearer abcdefghijkl\"},\"size\":1.5,\"big\":123456789012,"
        "\"reals\":[0.1,1e-7,0.3333333333333333,-2.5e-300,1e20,-0.0,4503599627370496.5,1.0],"
        "\"text\":\"tab\\t nl\\n \\u0001 \\u00e9 \\u2028 \\\"q\\\" \\\\ /\"}",
        0, NULL);
    json_t *after = json_loads("{\"name\":\"db1\",\"Password\":\"hunter2-after\",\"list\":"
                               "[\"qdb_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\",\"ok\"],"
                               "\"note\":\"caf\\u00e9 \\\"quoted\\\"\\n\"}",
                               0, NULL);
    struct audit_entry e = {
        .action = "database.update",
        .resource_type = "database",
        .resource_id = "db1",
        .environment = "staging",
        .before = before,
        .after = after,
        .job_id = 42,
    };
    CHECK(audit_record(c, NULL, NULL, NULL, &e) == DB_HARD, "outside a transaction: refused");
    long n0 = count_events();
    CHECK(db_begin(c) == 0, "begin");
    CHECK(audit_record(c, NULL, "req-in-process", "10.0.0.9", &e) == 0, "record");
    CHECK(db_commit(c) == 0, "commit");
    CHECK(db_begin(c) == 0, "begin 2");
    CHECK(audit_record(c, NULL, NULL, NULL, &e) == 0, "record, then roll back");
    db_rollback(c);
    CHECK(count_events() == n0 + 1, "rolled-back event gone, no gap");
    db_conn_close(c);
    json_decref(before);
    json_decref(after);

    json_t *j = get_json("/api/v1/audit?resource_type=database", viewer, 200);
    json_t *ev = json_array_get(json_object_get(j, "items"), 0);
    CHECK(strcmp(json_string_value(json_object_get(ev, "actor_subject")) ?: "", "system") == 0,
          "system actor");
    CHECK(json_integer_value(json_object_get(ev, "job_id")) == 42, "job id");
    CHECK(strcmp(json_string_value(json_object_get(ev, "environment")) ?: "", "staging") == 0,
          "environment");
    json_t *b = json_object_get(ev, "before");
    CHECK(!json_object_get(b, "password") && json_object_get(b, "conn") &&
              !json_object_get(json_object_get(b, "conn"), "api_key") &&
              !json_object_get(json_object_get(b, "conn"), "dsn") &&
              json_real_value(json_object_get(b, "size")) == 1.5 &&
              json_integer_value(json_object_get(b, "big")) == 123456789012,
          "before scrubbed, the rest kept");
    json_t *a = json_object_get(ev, "after");
    CHECK(!json_object_get(a, "Password") && json_array_size(json_object_get(a, "list")) == 1,
          "after scrubbed");
    CHECK(strcmp(json_string_value(json_object_get(a, "note")) ?: "", "caf\xc3\xa9 \"quoted\"\n") ==
              0,
          "text kept exactly");
    json_decref(j);
    j = get_json("/api/v1/audit?environment=staging", viewer, 200);
    CHECK(json_array_size(json_object_get(j, "items")) == 1, "environment filter");
    json_decref(j);
    expect_verify("", 1, count_events(), 0);
}

static void test_append_only(void)
{
    th_step("append-only: UPDATE, DELETE, TRUNCATE refused, even for the owner");
    long n = count_events();
    PGresult *r = th_sql(url, "UPDATE audit_event SET action = 'x' WHERE seq = 1", NULL);
    CHECK(r == NULL, "update refused");
    PQclear(r);
    r = th_sql(url, "DELETE FROM audit_event WHERE seq = 1", NULL);
    CHECK(r == NULL, "delete refused");
    PQclear(r);
    r = th_sql(url, "TRUNCATE audit_event", NULL);
    CHECK(r == NULL, "truncate refused");
    PQclear(r);
    r = th_sql(url, "UPDATE audit_chain_head SET last_seq = 0", NULL);
    CHECK(r == NULL, "head cannot move back");
    PQclear(r);
    /* forward only onto events that are there and chained to it (migration 0019) */
    r = th_sql(url, "UPDATE audit_chain_head SET last_seq = last_seq + 1", NULL);
    CHECK(r == NULL, "head cannot move onto an event that is not there");
    PQclear(r);
    r = th_sql(url, "DO $$ BEGIN INSERT INTO audit_event (seq, time, actor_subject, "
                    "auth_method, action, resource_type, prev_hash, hash) SELECT last_seq + 2, "
                    "now(), 'x', 'none', 'x.y', 'x', repeat('a', 64), repeat('b', 64) "
                    "FROM audit_chain_head; UPDATE audit_chain_head SET last_seq = last_seq + 2, "
                    "last_hash = repeat('b', 64); END $$",
               NULL);
    CHECK(r == NULL, "nor jump over a gap onto an event inserted by hand");
    PQclear(r);
    r = th_sql(url, "DELETE FROM audit_chain_head", NULL);
    CHECK(r == NULL, "head cannot go");
    PQclear(r);
    CHECK(count_events() == n, "nothing changed");
}

/* Wait for job `id` to end (succeeded or failed); returns its document (new reference) or
 * NULL after a failed check. */
static json_t *wait_job(long long id)
{
    struct th_resp r;
    char path[96];
    snprintf(path, sizeof path, "/api/v1/jobs/%lld", id);
    double deadline = th_now_ms() + 60000;
    while (id && th_now_ms() < deadline) {
        th_get(&srv, path, viewer, &r);
        const char *st = json_string_value(json_object_get(r.json, "state"));
        if (st && (strcmp(st, "succeeded") == 0 || strcmp(st, "failed") == 0)) {
            json_t *doc = json_incref(r.json);
            th_resp_free(&r);
            return doc;
        }
        th_resp_free(&r);
        th_sleep_ms(50); /* poll interval */
    }
    CHECK(0, "audit.verify job %lld did not finish within 60 s", id);
    return NULL;
}

/* Run the audit.verify job kind through the job engine and wait for its end. Returns the
 * job document (new reference) or NULL. */
static json_t *run_verify_job(void)
{
    struct th_resp r;
    th_post_json(&srv, "/api/v1/jobs", operator, "{\"kind\":\"audit.verify\"}", &r);
    CHECK(r.status == 202, "enqueue audit.verify: %ld %s", r.status, r.body);
    long long id = (long long)json_integer_value(json_object_get(r.json, "id"));
    th_resp_free(&r);
    return wait_job(id);
}

/* POST /api/v1/audit/verify as an operator: 202, Location of the job, the job as body;
 * then wait for it. Returns the finished job (new reference) or NULL. */
static json_t *start_verify(const struct th_server *s, const char *body)
{
    struct th_resp r;
    th_post_json(s, "/api/v1/audit/verify", operator, body, &r);
    CHECK(r.status == 202, "POST /api/v1/audit/verify: %ld %s", r.status, r.body);
    long long id = (long long)json_integer_value(json_object_get(r.json, "id"));
    CHECK(strcmp(json_string_value(json_object_get(r.json, "kind")) ?: "", "audit.verify") == 0,
          "the body is the job: %s", r.body);
    char want[96], *loc = th_resp_header(&r, "Location");
    snprintf(want, sizeof want, "/api/v1/jobs/%lld", id);
    CHECK(loc && strcmp(loc, want) == 0, "Location %s, want %s", loc ? loc : "(none)", want);
    free(loc);
    th_resp_free(&r);
    return wait_job(id);
}

static void test_tamper(void)
{
    long n = count_events();
    CHECK(n >= 5, "enough events to tamper with (%ld)", n);
    PGconn *c = PQconnectdb(url);
    CHECK(PQstatus(c) == CONNECTION_OK, "superuser session");

    th_step("tamper: a row changed with the triggers disabled is reported at its seq");
    session_exec(c, "CREATE TEMP TABLE saved AS SELECT * FROM audit_event");
    session_exec(c, "BEGIN; ALTER TABLE audit_event DISABLE TRIGGER ALL;"
                    "UPDATE audit_event SET after = jsonb_set(after, '{name}', '\"evil\"')"
                    " WHERE seq = 3;"
                    "ALTER TABLE audit_event ENABLE TRIGGER ALL; COMMIT");
    expect_verify("?from_seq=1", 0, 3, 3);
    expect_verify("?from_seq=4", 1, n - 3, 0);
    expect_verify("?to_seq=2", 1, 2, 0);
    expect_verify("?from_seq=3&to_seq=3", 0, 1, 3);

    struct th_resp r;
    th_get(&srv, "/metrics", NULL, &r);
    /* two of the four verifications above covered seq 3 */
    CHECK(r.body && strstr(r.body, "\nqdb_audit_chain_broken 1\n") &&
              strstr(r.body, "\nqdb_audit_chain_first_broken_seq 3\n") &&
              strstr(r.body, "\nqdb_audit_verify_runs_total{result=\"broken\"} 2\n"),
          "metrics show the break (2 broken runs)");
    th_resp_free(&r);
    CHECK(th_server_log_contains(&srv, "\"audit chain broken\""), "break logged");

    th_step("tamper: the audit.verify job (as the daily schedule runs it) fails at the seq");
    json_t *job = run_verify_job();
    char *text = job ? json_dumps(job, JSON_COMPACT) : NULL;
    CHECK(text && strcmp(json_string_value(json_object_get(job, "state")) ?: "", "failed") == 0 &&
              strstr(text, "broken at seq 3"),
          "job: %s", text ? text : "");
    free(text);
    json_decref(job);
    /* its enqueue was audited: keep the snapshot complete */
    session_exec(c, "INSERT INTO saved SELECT * FROM audit_event"
                    " WHERE seq > (SELECT max(seq) FROM saved)");
    n = count_events();

    th_step("tamper: put back exactly, the chain verifies again (bit-for-bit recompute)");
    session_exec(c, "BEGIN; ALTER TABLE audit_event DISABLE TRIGGER ALL;"
                    "UPDATE audit_event e SET after = s.after FROM saved s"
                    " WHERE e.seq = 3 AND s.seq = 3;"
                    "ALTER TABLE audit_event ENABLE TRIGGER ALL; COMMIT");
    expect_verify("?from_seq=1", 1, n, 0);
    job = run_verify_job();
    json_t *res = json_object_get(job, "result");
    CHECK(strcmp(json_string_value(json_object_get(job, "state")) ?: "", "succeeded") == 0 &&
              json_is_true(json_object_get(res, "ok")) &&
              json_integer_value(json_object_get(res, "checked")) == n + 1,
          "the job agrees (its own enqueue event included): checked %lld of %ld",
          (long long)json_integer_value(json_object_get(res, "checked")), n + 1);
    json_decref(job);
    session_exec(c, "INSERT INTO saved SELECT * FROM audit_event"
                    " WHERE seq > (SELECT max(seq) FROM saved)");
    n = count_events();
    th_get(&srv, "/metrics", NULL, &r);
    CHECK(r.body && strstr(r.body, "\nqdb_audit_chain_broken 0\n"),
          "a full verification clears the gauge");
    th_resp_free(&r);

    th_step("tamper: other fields (time, actor, client address) are covered too");
    const char *edits[] = {
        "UPDATE audit_event SET time = time + interval '1 microsecond' WHERE seq = 2",
        "UPDATE audit_event SET actor_subject = 'mallory' WHERE seq = 2",
        "UPDATE audit_event SET client_addr = NULL WHERE seq = 2",
        "UPDATE audit_event SET request_id = request_id || 'x' WHERE seq = 2",
        "UPDATE audit_event SET seq = 999999 WHERE seq = 2",
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char sql[512];
        snprintf(sql, sizeof sql,
                 "BEGIN; ALTER TABLE audit_event DISABLE TRIGGER ALL; %s;"
                 " ALTER TABLE audit_event ENABLE TRIGGER ALL; COMMIT",
                 edits[i]);
        session_exec(c, sql);
        expect_verify("?from_seq=1", 0, 2, 2);
        session_exec(c, "BEGIN; ALTER TABLE audit_event DISABLE TRIGGER ALL;"
                        "DELETE FROM audit_event WHERE seq IN (2, 999999);"
                        "INSERT INTO audit_event SELECT * FROM saved WHERE seq = 2;"
                        "ALTER TABLE audit_event ENABLE TRIGGER ALL; COMMIT");
    }
    expect_verify("?from_seq=1", 1, n, 0);

    th_step("tamper: a removed row, and a removed last row, are reported at their seq");
    session_exec(c, "BEGIN; ALTER TABLE audit_event DISABLE TRIGGER ALL;"
                    "DELETE FROM audit_event WHERE seq = 4;"
                    "ALTER TABLE audit_event ENABLE TRIGGER ALL; COMMIT");
    expect_verify("?from_seq=1", 0, 4, 4);
    session_exec(c, "INSERT INTO audit_event SELECT * FROM saved WHERE seq = 4");
    expect_verify("?from_seq=1", 1, n, 0);
    char sql[512];
    snprintf(sql, sizeof sql,
             "BEGIN; ALTER TABLE audit_event DISABLE TRIGGER ALL;"
             "DELETE FROM audit_event WHERE seq = %ld;"
             "ALTER TABLE audit_event ENABLE TRIGGER ALL; COMMIT",
             n);
    session_exec(c, sql);
    expect_verify("?from_seq=1", 0, n - 1, n);
    snprintf(sql, sizeof sql, "INSERT INTO audit_event SELECT * FROM saved WHERE seq = %ld", n);
    session_exec(c, sql);
    expect_verify("?from_seq=1", 1, n, 0);
    PQfinish(c);
}

/* GET /api/v1/audit/verify on `s` with `query` and `token`; the reply (new reference)
 * after checking it is a 200 with every member of AuditVerifyResult. */
static json_t *verify_as(const struct th_server *s, const char *token, const char *query)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/audit/verify%s", query);
    struct th_resp r;
    th_get(s, path, token, &r);
    CHECK(r.status == 200, "GET %s: %ld %s", path, r.status, r.body);
    static const char *const members[] = {"ok",       "checked",  "first_broken_seq",
                                          "from_seq", "to_seq",   "head_seq",
                                          "complete", "from_checkpoint", "checkpoints_refused"};
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++)
        CHECK(json_object_get(r.json, members[i]) != NULL, "GET %s: no %s in %s", path, members[i],
              r.body);
    json_t *j = r.json ? json_incref(r.json) : json_object();
    th_resp_free(&r);
    return j;
}

static json_t *verify_on(const struct th_server *s, const char *query)
{
    return verify_as(s, viewer, query);
}

static long long jint(const json_t *j, const char *name)
{
    return (long long)json_integer_value(json_object_get(j, name));
}

static long checkpoint_count(void)
{
    return th_sql_long(url, "SELECT count(*) FROM audit_checkpoint", NULL);
}

/* The refused-checkpoint counter of /metrics, or -1. */
static long long refused_metric(void)
{
    struct th_resp r;
    th_get(&srv, "/metrics", NULL, &r);
    const char *needle = "\nqdb_audit_checkpoints_total{result=\"refused\"} ";
    const char *p = r.body ? strstr(r.body, needle) : NULL;
    long long v = p ? strtoll(p + strlen(needle), NULL, 10) : -1;
    th_resp_free(&r);
    return v;
}

/* The server runs with QDB_AUDIT_CHECKPOINT_EVERY=4. */
static void test_checkpoints(void)
{
    PGconn *c = PQconnectdb(url);
    CHECK(PQstatus(c) == CONNECTION_OK, "superuser session");

    th_step("checkpoints: POST /api/v1/audit/verify runs a full verification that writes them");
    session_exec(c, "DELETE FROM audit_checkpoint");
    long n0 = count_events();
    json_t *job = start_verify(&srv, "{}");
    long n = count_events();
    CHECK(n == n0 + 1, "the POST left one event (%ld -> %ld)", n0, n);
    json_t *res = json_object_get(job, "result");
    long want_cp = n / 4 + (n % 4 != 0);
    CHECK(strcmp(json_string_value(json_object_get(job, "state")) ?: "", "succeeded") == 0 &&
              json_is_true(json_object_get(res, "ok")) && jint(res, "checked") == n &&
              json_is_true(json_object_get(res, "complete")) &&
              json_is_null(json_object_get(res, "from_checkpoint")) &&
              jint(res, "checkpoints_written") == want_cp,
          "full job over %ld events, %ld checkpoints: %s", n, want_cp,
          res ? json_dumps(res, JSON_COMPACT) : "(none)");
    json_decref(job);
    CHECK(checkpoint_count() == want_cp, "%ld checkpoint rows, want %ld", checkpoint_count(),
          want_cp);
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM audit_checkpoint k JOIN audit_event e USING (seq)"
             " WHERE k.hash = e.hash AND (k.seq %% 4 = 0 OR k.seq = %ld) AND k.mac ~ '^[0-9a-f]{64}$'",
             n);
    CHECK(th_sql_long(url, sql, NULL) == want_cp, "every 4th event and the last, with its hash");

    th_step("checkpoints: GET then checks only the events after the newest checkpoint");
    json_t *j = verify_on(&srv, "");
    CHECK(json_is_true(json_object_get(j, "ok")) && jint(j, "checked") == 0 &&
              jint(j, "from_checkpoint") == n && jint(j, "head_seq") == n &&
              json_is_true(json_object_get(j, "complete")) && jint(j, "checkpoints_refused") == 0,
          "nothing new: %s", json_dumps(j, JSON_COMPACT));
    json_decref(j);
    struct made_token t[3];
    for (int i = 0; i < 3; i++)
        create_token(i == 0 ? "cp-1" : i == 1 ? "cp-2" : "cp-3", &t[i]);
    j = verify_on(&srv, "");
    CHECK(json_is_true(json_object_get(j, "ok")) && jint(j, "checked") == 3 &&
              jint(j, "from_checkpoint") == n && jint(j, "from_seq") == n + 1 &&
              jint(j, "to_seq") == n + 3 && jint(j, "head_seq") == n + 3,
          "three new events: %s", json_dumps(j, JSON_COMPACT));
    json_decref(j);

    th_step("checkpoints: a row changed before the checkpoint escapes GET, not the full job");
    session_exec(c, "CREATE TEMP TABLE cp_saved AS SELECT * FROM audit_event WHERE seq = 2");
    session_exec(c, "BEGIN; ALTER TABLE audit_event DISABLE TRIGGER ALL;"
                    "UPDATE audit_event SET actor_subject = 'mallory' WHERE seq = 2;"
                    "ALTER TABLE audit_event ENABLE TRIGGER ALL; COMMIT");
    /* the GET above left a checkpoint if a multiple of 4 lies in n+1..n+3 */
    long newest = (n + 3) / 4 * 4 > n ? (n + 3) / 4 * 4 : n;
    j = verify_on(&srv, "");
    CHECK(json_is_true(json_object_get(j, "ok")) && jint(j, "from_checkpoint") == newest &&
              jint(j, "checked") == n + 3 - newest,
          "GET starts after the checkpoint at %ld (by design): %s", newest,
          json_dumps(j, JSON_COMPACT));
    json_decref(j);
    job = start_verify(&srv, "{}");
    char *text = job ? json_dumps(job, JSON_COMPACT) : NULL;
    CHECK(text && strcmp(json_string_value(json_object_get(job, "state")) ?: "", "failed") == 0 &&
              strstr(text, "broken at seq 2"),
          "the full job finds it: %s", text ? text : "");
    free(text);
    json_decref(job);
    j = verify_on(&srv, "");
    CHECK(json_is_false(json_object_get(j, "ok")) && jint(j, "first_broken_seq") == 2 &&
              json_is_null(json_object_get(j, "from_checkpoint")),
          "once this replica saw the break, GET trusts no checkpoint past it: %s",
          json_dumps(j, JSON_COMPACT));
    json_decref(j);
    session_exec(c, "BEGIN; ALTER TABLE audit_event DISABLE TRIGGER ALL;"
                    "DELETE FROM audit_event WHERE seq = 2;"
                    "INSERT INTO audit_event SELECT * FROM cp_saved;"
                    "ALTER TABLE audit_event ENABLE TRIGGER ALL; COMMIT");
    job = start_verify(&srv, "{}");
    CHECK(strcmp(json_string_value(json_object_get(job, "state")) ?: "", "succeeded") == 0,
          "put back: the full job passes");
    json_decref(job);
    n = count_events();
    j = verify_on(&srv, "");
    CHECK(json_is_true(json_object_get(j, "ok")) && jint(j, "from_checkpoint") == n &&
              jint(j, "checked") == 0,
          "GET from the job's last checkpoint again: %s", json_dumps(j, JSON_COMPACT));
    json_decref(j);

    th_step("checkpoints: rows edited with SQL are refused (MAC), an older one is used");
    PGresult *k = th_sql(url, "SELECT seq FROM audit_checkpoint ORDER BY seq DESC LIMIT 3", NULL);
    CHECK(k && PQntuples(k) == 3, "three checkpoints to work with");
    long cp[3] = {0, 0, 0};
    for (int i = 0; k && i < PQntuples(k) && i < 3; i++)
        cp[i] = strtol(PQgetvalue(k, i, 0), NULL, 10);
    PQclear(k);
    long long refused0 = refused_metric();
    snprintf(sql, sizeof sql,
             "UPDATE audit_checkpoint SET checked = checked + 1 WHERE seq = %ld;"
             "UPDATE audit_checkpoint SET hash = repeat('a', 64) WHERE seq = %ld",
             cp[0], cp[1]);
    session_exec(c, sql);
    j = verify_on(&srv, "");
    CHECK(json_is_true(json_object_get(j, "ok")) && jint(j, "checkpoints_refused") == 2 &&
              jint(j, "from_checkpoint") == cp[2] && jint(j, "checked") == n - cp[2],
          "two refused, from %ld: %s", cp[2], json_dumps(j, JSON_COMPACT));
    json_decref(j);
    CHECK(refused_metric() == refused0 + 2, "metric: %lld refused, want %lld", refused_metric(),
          refused0 + 2);
    CHECK(th_server_log_contains(&srv, "\"audit checkpoint refused\""), "refusal logged");
    /* a forged row: the genuine hash of a later event, with a MAC copied from a genuine
     * checkpoint */
    snprintf(sql, sizeof sql,
             "DELETE FROM audit_checkpoint WHERE seq IN (%ld, %ld);"
             "INSERT INTO audit_checkpoint (seq, hash, verified_at, checked, mac)"
             " SELECT %ld, e.hash, k.verified_at, k.checked, k.mac"
             " FROM audit_checkpoint k, audit_event e WHERE k.seq = %ld AND e.seq = %ld",
             cp[0], cp[1], cp[0], cp[2], cp[0]);
    session_exec(c, sql);
    j = verify_on(&srv, "");
    CHECK(json_is_true(json_object_get(j, "ok")) && jint(j, "checkpoints_refused") == 1 &&
              jint(j, "from_checkpoint") == cp[2],
          "a MAC copied onto another seq is refused: %s", json_dumps(j, JSON_COMPACT));
    json_decref(j);

    th_step("checkpoints: the next full verification replaces what was forged");
    job = start_verify(&srv, "{}");
    CHECK(strcmp(json_string_value(json_object_get(job, "state")) ?: "", "succeeded") == 0,
          "full job");
    json_decref(job);
    j = verify_on(&srv, "");
    CHECK(json_is_true(json_object_get(j, "ok")) && jint(j, "checkpoints_refused") == 0 &&
              jint(j, "from_checkpoint") == count_events(),
          "clean again: %s", json_dumps(j, JSON_COMPACT));
    json_decref(j);

    th_step("POST /api/v1/audit/verify: bad bodies are refused and enqueue nothing");
    long jobs0 = th_sql_long(url, "SELECT count(*) FROM job", NULL);
    const char *bad[][2] = {{"{\"from_seq\":0}", "from_seq"},
                            {"{\"to_seq\":\"x\"}", "to_seq"},
                            {"{\"from_seq\":5,\"to_seq\":2}", "to_seq"},
                            {"{\"full\":true}", "full"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct th_resp r;
        th_post_json(&srv, "/api/v1/audit/verify", operator, bad[i][0], &r);
        const char *field = json_string_value(json_object_get(r.json, "field"));
        CHECK(th_is_problem(&r, 400) && field && strcmp(field, bad[i][1]) == 0, "%s: %ld %s",
              bad[i][0], r.status, r.body);
        th_resp_free(&r);
    }
    struct th_resp r;
    th_post_json(&srv, "/api/v1/audit/verify", viewer, "{}", &r);
    CHECK(th_is_problem(&r, 403), "viewers may not: %ld", r.status);
    th_resp_free(&r);
    CHECK(th_sql_long(url, "SELECT count(*) FROM job", NULL) == jobs0, "no job enqueued");
    PQfinish(c);
}

/* A second server on the same database with QDB_AUDIT_VERIFY_MAX_EVENTS=5. */
static void test_verify_bound(void)
{
    th_step("bound: GET verifies at most QDB_AUDIT_VERIFY_MAX_EVENTS events and goes on later");
    const char *env[] = {"QDB_AUDIT_VERIFY_MAX_EVENTS=5", "QDB_AUDIT_CHECKPOINT_EVERY=4",
                         "QDB_WORKERS=0", NULL};
    struct th_server s2;
    if (th_server_start(&s2, url, env, 1) != 0) {
        CHECK(0, "second server start");
        return;
    }
    char *v2 = th_dev_token(&s2, "viewer");
    PGresult *d = th_sql(url, "DELETE FROM audit_checkpoint", NULL);
    PQclear(d);
    long n = count_events(), total = 0, last_to = 0, gets = 0;
    for (int complete = 0; !complete && gets <= n; gets++) {
        json_t *j = verify_as(&s2, v2, "");
        complete = json_is_true(json_object_get(j, "complete"));
        long checked = (long)jint(j, "checked");
        CHECK(json_is_true(json_object_get(j, "ok")) && jint(j, "from_seq") == last_to + 1 &&
                  (last_to == 0 ? json_is_null(json_object_get(j, "from_checkpoint"))
                                : jint(j, "from_checkpoint") == last_to) &&
                  (complete ? checked <= 5 : checked == 5),
              "GET %ld: %s", gets + 1, json_dumps(j, JSON_COMPACT));
        total += checked;
        last_to = (long)jint(j, "to_seq");
        json_decref(j);
    }
    CHECK(total == n && last_to == n && gets == (n + 4) / 5,
          "%ld GETs covered %ld of %ld events, up to %ld", gets, total, n, last_to);

    th_step("bound: an explicit range over the bound is refused with 400 naming POST");
    const char *bad[][2] = {{"?from_seq=1", "from_seq"}, {"?to_seq=6", "to_seq"},
                            {"?from_seq=2&to_seq=7", "to_seq"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "/api/v1/audit/verify%s", bad[i][0]);
        struct th_resp r;
        th_get(&s2, path, v2, &r);
        const char *field = json_string_value(json_object_get(r.json, "field"));
        const char *detail = json_string_value(json_object_get(r.json, "detail"));
        CHECK(th_is_problem(&r, 400) && field && strcmp(field, bad[i][1]) == 0 &&
                  jint(r.json, "max_events") == 5 && detail &&
                  strstr(detail, "POST /api/v1/audit/verify"),
              "%s: %ld %s", path, r.status, r.body);
        th_resp_free(&r);
    }
    json_t *j = verify_as(&s2, v2, "?from_seq=2&to_seq=6");
    CHECK(json_is_true(json_object_get(j, "ok")) && jint(j, "checked") == 5 &&
              json_is_null(json_object_get(j, "from_checkpoint")),
          "a range of exactly 5: %s", json_dumps(j, JSON_COMPACT));
    json_decref(j);
    free(v2);
    CHECK(th_server_stop(&s2) == 0, "second server stops cleanly");
}

static void test_config(void)
{
    /* serve and token create need the key (migrate does not: test_platform_commands) */
    th_step("configuration: the key file is required, readable and long enough (exit 2)");
    char err[2048], path[300], envv[400];
    const char *argv[] = {"token", "create", "--name", "never", "--role", "viewer", NULL};
    char dburl[600];
    snprintf(dburl, sizeof dburl, "QDB_DATABASE_URL=%s", url);

    const char *unset[] = {dburl, "QDB_AUDIT_HMAC_KEY_FILE=", NULL};
    int rc = th_run_binary(argv, unset, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "QDB_AUDIT_HMAC_KEY_FILE") && strstr(err, "required"),
          "unset: %d %s", rc, err);

    const char *missing[] = {dburl, "QDB_AUDIT_HMAC_KEY_FILE=/nonexistent/key", NULL};
    rc = th_run_binary(argv, missing, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "QDB_AUDIT_HMAC_KEY_FILE") && strstr(err, "/nonexistent/key"),
          "missing: %d %s", rc, err);
    CHECK(strchr(err, '\n') == strrchr(err, '\n'), "one line: %s", err);

    snprintf(path, sizeof path, "%s/audit-short-key-%d",
             getenv("QDB_TEST_LOG_DIR") ? getenv("QDB_TEST_LOG_DIR") : "/tmp", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs("too-short-key\n", f);
    fclose(f);
    snprintf(envv, sizeof envv, "QDB_AUDIT_HMAC_KEY_FILE=%s", path);
    const char *shortk[] = {dburl, envv, NULL};
    rc = th_run_binary(argv, shortk, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "QDB_AUDIT_HMAC_KEY_FILE") && strstr(err, "at least 32") &&
              !strstr(err, "too-short-key"),
          "short (and never echoed): %d %s", rc, err);
    remove(path);
}

static void test_no_secrets(struct made_token *tokens, int ntokens)
{
    th_step("the whole table holds no secret value and no token");
    const char *tokens_used[] = {admin, viewer, operator};
    for (int i = 0; i < ntokens; i++) {
        if (!tokens[i].secret[0])
            continue;
        CHECK(th_sql_long(url,
                          "SELECT count(*) FROM audit_event WHERE audit_event::text LIKE "
                          "'%' || $1 || '%'",
                          tokens[i].secret, NULL) == 0,
              "token secret %d absent", i);
        CHECK(th_sql_long(url,
                          "SELECT count(*) FROM audit_event WHERE audit_event::text LIKE "
                          "'%' || $1 || '%'",
                          tokens[i].hash, NULL) == 0,
              "token hash %d absent", i);
        /* the table's own row in auth's store does hold the hash: the grep is meaningful */
    }
    for (int i = 0; i < 3; i++)
        CHECK(th_sql_long(url,
                          "SELECT count(*) FROM audit_event WHERE audit_event::text LIKE "
                          "'%' || $1 || '%'",
                          tokens_used[i], NULL) == 0,
              "bearer token %d absent", i);
    const char *values[] = {"hunter2", "k-777", "Bearer ", "qdb_ABCDEFGHIJ"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        CHECK(th_sql_long(url,
                          "SELECT count(*) FROM audit_event WHERE audit_event::text LIKE "
                          "'%' || $1 || '%'",
                          values[i], NULL) == 0,
              "%s absent", values[i]);
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM audit_event WHERE audit_event::text ~ "
                      "'qdb_[A-Za-z0-9_-]{20,}|eyJ[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.'",
                      NULL) == 0,
          "nothing token-shaped");
}

int main(void)
{
    url = th_db_create("audit");
    const char *env[] = {"QDB_AUDIT_CHECKPOINT_EVERY=4", NULL};
    if (th_server_start(&srv, url, env, 1) != 0) {
        CHECK(0, "server start");
        return th_done();
    }
    admin = th_dev_token(&srv, "admin");
    viewer = th_dev_token(&srv, "viewer");
    operator= th_dev_token(&srv, "operator");
    CHECK(admin && viewer && operator, "dev tokens");
    if (!admin || !viewer || !operator)
        goto out;

    th_step("the daily verification is scheduled");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM schedule WHERE name = 'audit-verify-daily' "
                      "AND cron = '17 3 * * *' AND kind = 'audit.verify' AND enabled",
                      NULL) == 1,
          "schedule row");

    struct made_token tokens[4];
    memset(tokens, 0, sizeof tokens);
    test_roles();
    test_recorded(tokens);
    test_list(tokens);
    test_export();
    test_in_process();
    test_append_only();
    test_tamper();
    test_checkpoints();
    test_verify_bound();
    test_config();
    test_no_secrets(tokens, 4);
out:
    CHECK(th_server_stop(&srv) == 0, "clean stop");
    free(admin);
    free(viewer);
    free(operator);
    th_db_drop(url);
    free(url);
    return th_done();
}
