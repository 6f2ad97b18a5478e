/* deploy/postgres/grants.sql does what it says: applied around a migrate run as qdb_owner,
 * the service role qdb_app can serve and append to the audit trail but cannot UPDATE,
 * DELETE or TRUNCATE it, move the chain head, or disable the triggers; on the sequencer's
 * queue (audit_pending) it may insert, read and delete, but not edit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static int psql_file(const char *db, const char *file)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "/usr/lib/postgresql/15/bin/psql -q -X -h 127.0.0.1 -p %d -U postgres "
             "-v ON_ERROR_STOP=1 -d %s -f %s >/dev/null",
             th_pg_port(), db, file);
    int rc = system(cmd);
    return rc == 0 ? 0 : -1;
}

/* Run one statement as `role` on `db`; returns 1 when it succeeded, 0 when refused with
 * `want_error` in the message (anything else prints and returns -1). */
static int as_role(const char *role, const char *db, const char *sql, const char *want_error)
{
    char u[256];
    snprintf(u, sizeof u, "postgresql://%s@127.0.0.1:%d/%s", role, th_pg_port(), db);
    PGconn *c = PQconnectdb(u);
    PGresult *r = PQexec(c, sql);
    int st = PQresultStatus(r);
    int out = -1;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        out = 1;
    else if (want_error && strstr(PQresultErrorMessage(r), want_error))
        out = 0;
    else
        fprintf(stderr, "as_role(%s): %s: %s", role, sql, PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(c);
    return out;
}

int main(void)
{
    char *url = th_db_create("auditg");
    const char *db = strrchr(url, '/') + 1;
    const char *grants = QDB_SOURCE_DIR "/deploy/postgres/grants.sql";

    th_step("grants.sql before the first migrate: roles and schema");
    CHECK(psql_file(db, grants) == 0, "first run");

    th_step("migrate as qdb_owner, grants.sql again");
    char owner_url[300], app_url[300], env_owner[340];
    snprintf(owner_url, sizeof owner_url, "postgresql://qdb_owner@127.0.0.1:%d/%s", th_pg_port(),
             db);
    snprintf(app_url, sizeof app_url, "postgresql://qdb_app@127.0.0.1:%d/%s", th_pg_port(), db);
    snprintf(env_owner, sizeof env_owner, "QDB_DATABASE_URL=%s", owner_url);
    const char *argv[] = {"migrate", NULL};
    const char *env[] = {env_owner, NULL};
    char err[2048];
    int rc = th_run_binary(argv, env, err, sizeof err);
    CHECK(rc == 0, "migrate as owner: %d %s", rc, err);
    CHECK(psql_file(db, grants) == 0, "second run");
    CHECK(psql_file(db, grants) == 0, "idempotent");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND "
                      "tableowner <> 'qdb_owner'",
                      NULL) == 0,
          "every table belongs to qdb_owner");

    th_step("qdb_app serves and appends");
    struct th_server s;
    CHECK(th_server_start(&s, app_url, NULL, 1) == 0, "serve as qdb_app");
    char *admin = th_dev_token(&s, "admin");
    struct th_resp r;
    th_post_json(&s, "/api/v1/tokens", admin, "{\"name\":\"grants\",\"role\":\"viewer\"}", &r);
    CHECK(r.status == 201, "a mutation as qdb_app: %ld %s", r.status, r.body);
    th_resp_free(&r);
    th_get(&s, "/api/v1/audit/verify", admin, &r);
    CHECK(r.status == 200 && json_is_true(json_object_get(r.json, "ok")) &&
              json_integer_value(json_object_get(r.json, "checked")) == 1,
          "verify: %s", r.body);
    th_resp_free(&r);

    th_step("qdb_app runs the full verification job, which writes its checkpoint");
    th_post_json(&s, "/api/v1/audit/verify", admin, "{}", &r);
    CHECK(r.status == 202, "POST /api/v1/audit/verify as qdb_app: %ld %s", r.status, r.body);
    char job[96];
    snprintf(job, sizeof job, "/api/v1/jobs/%lld",
             (long long)json_integer_value(json_object_get(r.json, "id")));
    th_resp_free(&r);
    char state[32] = "";
    for (double deadline = th_now_ms() + 30000; th_now_ms() < deadline; th_sleep_ms(50)) {
        th_get(&s, job, admin, &r);
        snprintf(state, sizeof state, "%s",
                 json_string_value(json_object_get(r.json, "state")) ?: "");
        th_resp_free(&r);
        if (strcmp(state, "succeeded") == 0 || strcmp(state, "failed") == 0)
            break;
    }
    CHECK(strcmp(state, "succeeded") == 0, "the job ended %s", state);
    CHECK(th_sql_long(url, "SELECT count(*) FROM audit_checkpoint WHERE seq = 2", NULL) == 1,
          "its checkpoint at the head (seq 2: the token and the POST)");
    CHECK(th_server_stop(&s) == 0, "clean stop");
    free(admin);

    th_step("qdb_app cannot change or remove the trail, nor switch off its triggers");
    CHECK(as_role("qdb_app", db, "SELECT count(*) FROM audit_event", NULL) == 1, "select");
    CHECK(as_role("qdb_app", db, "UPDATE audit_event SET action = 'x'", "permission denied") == 0,
          "update");
    CHECK(as_role("qdb_app", db, "DELETE FROM audit_event", "permission denied") == 0, "delete");
    CHECK(as_role("qdb_app", db, "TRUNCATE audit_event", "permission denied") == 0, "truncate");
    CHECK(as_role("qdb_app", db, "ALTER TABLE audit_event DISABLE TRIGGER ALL", "must be owner") ==
              0,
          "disable triggers");
    CHECK(as_role("qdb_app", db, "DELETE FROM audit_chain_head", "permission denied") == 0,
          "head delete");
    th_step("qdb_app queues, reads and removes events of the sequencer's queue, nothing more");
    CHECK(as_role("qdb_app", db,
                  "INSERT INTO audit_pending (actor_subject, auth_method, action, resource_type) "
                  "VALUES ('g', 'system', 'test.grant', 'test')",
                  NULL) == 1,
          "pending insert");
    CHECK(as_role("qdb_app", db, "SELECT count(*) FROM audit_pending", NULL) == 1,
          "pending select");
    CHECK(as_role("qdb_app", db, "UPDATE audit_pending SET action = 'x'", "permission denied") == 0,
          "pending update refused: a queued event is never edited");
    CHECK(as_role("qdb_app", db, "TRUNCATE audit_pending", "permission denied") == 0,
          "pending truncate refused");
    CHECK(as_role("qdb_app", db, "DELETE FROM audit_pending WHERE action = 'test.grant'", NULL) ==
              1,
          "pending delete (the sequencer removes what it chained)");
    CHECK(as_role("qdb_app", db, "UPDATE schema_migrations SET checksum = 'x'",
                  "permission denied") == 0,
          "migrations are the owner's");
    th_step("even the owner cannot change it while the triggers are on");
    CHECK(as_role("qdb_owner", db, "UPDATE audit_event SET action = 'x'", "append-only") == 0,
          "owner update");
    CHECK(as_role("qdb_owner", db, "DELETE FROM audit_event", "append-only") == 0, "owner delete");

    th_db_drop(url);
    free(url);
    return th_done();
}
