/* The inventory against a real provisioning target: a second PostgreSQL server (a private
 * cluster) is the development environment's postgres target. The seeded 2.1 databases and
 * a CDC database are planned, applied, checked with SQL on the target afterwards,
 * provisioned a second time (no change), dropped behind the service's back (the plan and
 * the drift check see it). On the way: the 6.2 matrix, PATCH of targets, 422s naming the
 * field that change nothing, the PgBouncer rendering, secret references (refused outside
 * QDB_SECRET_DIRS, a missing one fails the job for good), and a secret value that appears
 * in no reply, log line, outbox event or audit record. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "inventory/inventory_internal.h"
#include "inventory_helpers.h"

static const char *SECRET_VALUE = "inv-s3cret-Value-91f0c2";

static long count_rows(const char *url, const char *table_sql)
{
    return th_sql_long(url, table_sql, NULL);
}

int main(void)
{
    char *url = th_db_create("inventory");
    struct th_pg pg = {0};
    struct th_server srv = {0};
    char *admin = NULL, *viewer = NULL, *target_url = NULL;
    char dir[300], secret_file[340], env_dirs[400], body[2048], path[256];
    struct th_resp r;

    th_step("a second PostgreSQL server as the provisioning target, a secret file for it");
    CHECK(th_pg_private_start(&pg) == 0, "private cluster starts");
    target_url = th_pg_private_db(&pg, "postgres");
    snprintf(dir, sizeof dir, "%s/secrets", pg.dir);
    mkdir(dir, 0700);
    snprintf(secret_file, sizeof secret_file, "%s/pg-admin", dir);
    FILE *f = fopen(secret_file, "w");
    fprintf(f, "%s\n", SECRET_VALUE);
    fclose(f);
    /* the target's cluster trusts local connections: the password is sent and ignored,
     * which is what lets the test follow the value everywhere it could leak */
    snprintf(env_dirs, sizeof env_dirs, "QDB_SECRET_DIRS=%s,env:QDB_TEST_SECRET_", dir);
    const char *env[] = {env_dirs, "QDB_INVENTORY_TARGET_TIMEOUT=3", "QDB_JOB_BACKOFF_BASE_MS=100",
                         "QDB_JOB_BACKOFF_MAX=1s", NULL};
    CHECK(th_server_start(&srv, url, env, 1) == 0, "server starts");
    if (!srv.pid)
        goto out;
    admin = th_dev_token(&srv, "admin");
    viewer = th_dev_token(&srv, "viewer");

    th_step("the 6.2 matrix on every environment, seeded by the migration");
    inv_call(&srv, viewer, "GET", "/api/v1/environments/production", NULL, &r);
    json_t *cfg = json_object_get(r.json, "config");
    CHECK(r.status == 200 &&
              json_integer_value(json_object_get(cfg, "kafka_retention_ms")) == 2592000000LL,
          "production: %s", r.body);
    CHECK(strcmp(json_string_value(json_object_get(cfg, "keycloak_realm")) ?: "", "qdb-one") == 0 &&
              strcmp(json_string_value(json_object_get(cfg, "audit_retention")) ?: "", "7 years") ==
                  0,
          "production realm and audit retention");
    CHECK(strcmp(json_string_value(json_object_get(r.json, "purpose")) ?: "", "Live system") == 0,
          "the platform's members stay");
    th_resp_free(&r);
    inv_call(&srv, viewer, "GET", "/api/v1/environments/development", NULL, &r);
    cfg = json_object_get(r.json, "config");
    CHECK(json_integer_value(json_object_get(cfg, "kafka_retention_ms")) == 86400000 &&
              strcmp(json_string_value(json_object_get(cfg, "tls")) ?: "", "Self-signed") == 0,
          "development: %s", r.body);
    th_resp_free(&r);
    CHECK(inv_status(&srv, viewer, "GET", "/api/v1/environments/nowhere", NULL) == 404,
          "an unknown environment is 404");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM inventory_database WHERE environment = "
                      "'production'",
                      NULL) == 5,
          "the five databases of 2.1 are seeded in production");

    th_step("targets: a secret outside QDB_SECRET_DIRS, or a value, is refused with 422");
    long audit0 = th_sql_long(url, "SELECT count(*) FROM audit_pending", NULL) +
                  th_sql_long(url, "SELECT count(*) FROM audit_event", NULL);
    snprintf(body, sizeof body,
             "{\"targets\":{\"postgres\":{\"host\":\"127.0.0.1\",\"port\":%d,\"admin_user\":"
             "\"postgres\",\"admin_secret\":\"file:/etc/passwd\"}}}",
             pg.port);
    CHECK(inv_call(&srv, admin, "PATCH", "/api/v1/environments/development", body, &r) == 422 &&
              strcmp(inv_field(&r), "targets.postgres.admin_secret") == 0,
          "outside the dirs: %ld %s", r.status, r.body);
    th_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"targets\":{\"postgres\":{\"host\":\"127.0.0.1\",\"port\":%d,\"admin_user\":"
             "\"postgres\",\"admin_secret\":\"%s\"}}}",
             pg.port, SECRET_VALUE);
    CHECK(inv_call(&srv, admin, "PATCH", "/api/v1/environments/development", body, &r) == 422 &&
              strcmp(inv_field(&r), "targets.postgres.admin_secret") == 0,
          "a value: %ld %s", r.status, r.body);
    th_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"targets\":{\"kafka\":{\"bootstrap_servers\":\"k:9092\",\"security_protocol\":"
             "\"sasl_ssl\"}}}");
    CHECK(inv_call(&srv, admin, "PATCH", "/api/v1/environments/development", body, &r) == 422 &&
              strcmp(inv_field(&r), "targets.kafka.sasl_mechanism") == 0,
          "SASL without a mechanism: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(inv_status(&srv, viewer, "PATCH", "/api/v1/environments/development",
                     "{\"config\":{\"tls\":\"x\"}}") == 403,
          "PATCH is for admins");
    CHECK(th_sql_long(url, "SELECT count(*) FROM audit_pending", NULL) +
                  th_sql_long(url, "SELECT count(*) FROM audit_event", NULL) ==
              audit0,
          "refused changes left no audit record");
    CHECK(th_sql_long(url, "SELECT count(*) FROM inventory_environment WHERE targets <> '{}'",
                      NULL) == 0,
          "and no target");

    th_step("the development environment's postgres target: the private cluster");
    snprintf(body, sizeof body,
             "{\"targets\":{\"postgres\":{\"host\":\"127.0.0.1\",\"port\":%d,\"admin_user\":"
             "\"postgres\",\"admin_secret\":\"file:%s\"}}}",
             pg.port, secret_file);
    CHECK(inv_call(&srv, admin, "PATCH", "/api/v1/environments/development", body, &r) == 200,
          "PATCH targets: %ld %s", r.status, r.body);
    char ref[400];
    snprintf(ref, sizeof ref, "file:%s", secret_file);
    CHECK(
        strcmp(json_string_value(json_object_get(
                   json_object_get(json_object_get(r.json, "targets"), "postgres"), "admin_secret"))
                   ?: "",
               ref) == 0,
        "the reference is shown as written");
    th_resp_free(&r);

    th_step("an API token limited to staging changes staging only, and nothing shared");
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/tokens",
                   "{\"name\":\"staging-only\",\"role\":\"admin\",\"environments\":["
                   "\"staging\"]}",
                   &r) == 201,
          "token: %ld %s", r.status, r.body);
    char *scoped = strdup(json_string_value(json_object_get(r.json, "token")) ?: "");
    th_resp_free(&r);
    CHECK(inv_status(&srv, scoped, "PATCH", "/api/v1/environments/development",
                     "{\"config\":{\"tls\":\"x\"}}") == 403,
          "not development");
    CHECK(inv_status(&srv, scoped, "PATCH", "/api/v1/environments/staging",
                     "{\"config\":{\"tls\":\"Internal CA\"}}") == 200,
          "staging");
    CHECK(inv_status(&srv, scoped, "POST", "/api/v1/databases",
                     "{\"environment\":\"development\",\"name\":\"scoped\","
                     "\"storage_initial_gb\":1,\"storage_max_gb\":1}") == 403,
          "no database in development");
    CHECK(inv_status(&srv, scoped, "POST", "/api/v1/environments/development/apply", "{}") == 403,
          "no apply in development");
    CHECK(inv_status(&srv, scoped, "POST", "/api/v1/kafka/topics", "{\"name\":\"scoped.t\"}") ==
              403,
          "no topic: topics are shared by every environment");
    CHECK(inv_status(&srv, scoped, "GET", "/api/v1/kafka/topics", NULL) == 200, "but reads them");
    free(scoped);

    th_step("databases: 422 naming the field, nothing changed");
    long dbs0 = count_rows(url, "SELECT count(*) FROM inventory_database");
    static const struct {
        const char *body, *field;
    } bad[] = {
        {"{\"environment\":\"nowhere\",\"name\":\"x\",\"storage_initial_gb\":1,"
         "\"storage_max_gb\":1}",
         "environment"},
        {"{\"environment\":\"development\",\"name\":\"Bad-Name\",\"storage_initial_gb\":1,"
         "\"storage_max_gb\":1}",
         "name"},
        {"{\"environment\":\"development\",\"name\":\"x\",\"storage_initial_gb\":5,"
         "\"storage_max_gb\":1}",
         "storage_max_gb"},
        {"{\"environment\":\"development\",\"name\":\"x\",\"storage_initial_gb\":1,"
         "\"storage_max_gb\":1,\"primary\":{\"admin_secret\":\"hunter2\"}}",
         "primary.admin_secret"},
        {"{\"environment\":\"development\",\"name\":\"x\",\"storage_initial_gb\":1,"
         "\"storage_max_gb\":1,\"cdc_tables\":[\"users; drop\"]}",
         "cdc_tables[0]"},
        {"{\"environment\":\"development\",\"name\":\"x\",\"storage_initial_gb\":1,"
         "\"storage_max_gb\":1,\"settings\":{\"work_mem\":7}}",
         "settings.work_mem"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(inv_call(&srv, admin, "POST", "/api/v1/databases", bad[i].body, &r) == 422 &&
                  strcmp(inv_field(&r), bad[i].field) == 0 && th_is_problem(&r, 422),
              "%s: %ld %s", bad[i].field, r.status, r.body);
        th_resp_free(&r);
    }
    CHECK(count_rows(url, "SELECT count(*) FROM inventory_database") == dbs0,
          "no database was added");

    th_step("a CDC source database (4.4), and one whose secret does not resolve");
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/databases",
                   "{\"environment\":\"development\",\"name\":\"advisory_main\","
                   "\"storage_initial_gb\":10,\"storage_max_gb\":20,\"cdc_tables\":[\"users\","
                   "\"programs\",\"sessions\"],\"settings\":{\"work_mem\":\"32MB\"}}",
                   &r) == 201,
          "create: %ld %s", r.status, r.body);
    long long cdc_id = (long long)json_integer_value(json_object_get(r.json, "id"));
    th_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"environment\":\"staging\",\"name\":\"lost_secret\",\"storage_initial_gb\":1,"
             "\"storage_max_gb\":1,\"primary\":{\"host\":\"127.0.0.1\",\"port\":%d,"
             "\"admin_secret\":\"file:%s/missing\"}}",
             pg.port, dir);
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/databases", body, &r) == 201, "create: %ld %s",
          r.status, r.body);
    long long lost_id = (long long)json_integer_value(json_object_get(r.json, "id"));
    th_resp_free(&r);
    CHECK(inv_status(&srv, admin, "POST", "/api/v1/databases",
                     "{\"environment\":\"development\",\"name\":\"advisory_main\","
                     "\"storage_initial_gb\":1,\"storage_max_gb\":1}") == 409,
          "the same name twice in one environment is 409");

    th_step("pgbouncer.ini: the 2.4 pools, auth_query, no credential");
    inv_call(&srv, viewer, "GET", "/api/v1/environments/development/pgbouncer.ini", NULL, &r);
    char want[256];
    snprintf(want, sizeof want,
             "qdb_mpi = host=127.0.0.1 port=%d dbname=qdb_mpi pool_mode=transaction "
             "pool_size=50 max_db_client_connections=200",
             pg.port);
    CHECK(r.status == 200 && r.body && strstr(r.body, want), "qdb_mpi line: %s", r.body);
    CHECK(r.body && strstr(r.body, "qdb_keycloak = ") && strstr(r.body, "pool_mode=session"),
          "qdb_keycloak is a session pool");
    CHECK(r.body &&
              strstr(r.body, "auth_query = SELECT usename, passwd FROM pgbouncer.get_auth($1)"),
          "auth_query");
    CHECK(r.body && !strstr(r.body, "password") && !strstr(r.body, SECRET_VALUE),
          "no inline credential");
    th_resp_free(&r);

    th_step("the plan: six databases missing on the target");
    inv_call(&srv, viewer, "GET", "/api/v1/environments/development/plan", NULL, &r);
    json_t *diffs = json_object_get(r.json, "differences");
    CHECK(r.status == 200 && json_array_size(diffs) == 6, "6 differences: %s", r.body);
    size_t i;
    json_t *d;
    int missing = 0;
    json_array_foreach(diffs, i, d)
    {
        const char *k = json_string_value(
            json_object_get(json_array_get(json_object_get(d, "differences"), 1), "difference"));
        missing += k && strcmp(k, "database_missing") == 0;
    }
    CHECK(missing == 6, "each database_missing (%d)", missing);
    th_resp_free(&r);

    th_step("apply: one provision_database job per difference; they all succeed");
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/environments/development/apply", "{}", &r) == 202,
          "apply: %ld %s", r.status, r.body);
    json_t *jobs = json_incref(json_object_get(r.json, "jobs"));
    th_resp_free(&r);
    CHECK(json_array_size(jobs) == 6, "6 jobs");
    json_t *jid;
    json_array_foreach(jobs, i, jid)
    {
        json_t *j = inv_wait_job(&srv, admin, (long long)json_integer_value(jid), 60000);
        CHECK(j && strcmp(json_string_value(json_object_get(j, "state")), "succeeded") == 0 &&
                  strcmp(inv_result_str(j, "result"), "changed") == 0,
              "job %lld: %s", (long long)json_integer_value(jid),
              j ? json_string_value(json_object_get(j, "state")) : "timeout");
        json_decref(j);
    }
    json_decref(jobs);

    th_step("psql on the target: databases, owner roles and per-database settings exist");
    CHECK(th_sql_long(target_url,
                      "SELECT count(*) FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
                      "WHERE d.datname = r.rolname AND d.datname IN ('qdb_mpi', 'qdb_read_store', "
                      "'qdb_audit', 'qdb_openfga', 'qdb_keycloak', 'advisory_main')",
                      NULL) == 6,
          "six databases owned by their roles");
    CHECK(th_sql_long(target_url,
                      "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = "
                      "s.setdatabase WHERE d.datname = 'qdb_mpi' AND 'work_mem=64MB' = "
                      "ANY(s.setconfig) AND 'random_page_cost=1.1' = ANY(s.setconfig)",
                      NULL) == 1,
          "qdb_mpi has the 2.3 per-database settings");
    CHECK(th_sql_long(target_url,
                      "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = "
                      "s.setdatabase WHERE d.datname = 'advisory_main' AND 'work_mem=32MB' = "
                      "ANY(s.setconfig)",
                      NULL) == 1,
          "advisory_main has its own work_mem");

    th_step("the CDC tables appear; the plan asks for the publication; wal_level is reported");
    char *cdc_url = th_pg_private_db(&pg, "advisory_main");
    PQclear(th_sql(cdc_url, "CREATE TABLE users (id int PRIMARY KEY)", NULL));
    PQclear(th_sql(cdc_url, "CREATE TABLE programs (id int PRIMARY KEY)", NULL));
    PQclear(th_sql(cdc_url, "CREATE TABLE sessions (id int PRIMARY KEY)", NULL));
    inv_call(&srv, viewer, "GET", "/api/v1/environments/development/plan", NULL, &r);
    diffs = json_object_get(r.json, "differences");
    d = json_array_get(diffs, 0);
    CHECK(json_array_size(diffs) == 1 &&
              strcmp(json_string_value(json_object_get(d, "name")) ?: "", "advisory_main") == 0 &&
              strstr(r.body, "publication_missing"),
          "publication missing: %s", r.body);
    th_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"kind\":\"inventory.provision_database\",\"args\":{"
             "\"database_id\":%lld}}",
             cdc_id);
    json_t *j = inv_run_job(&srv, admin, body, 60000);
    CHECK(j && strcmp(inv_result_str(j, "result"), "changed") == 0, "publication job: %s",
          j ? inv_errors(j) : "timeout");
    char *jt = j ? json_dumps(json_object_get(j, "result"), JSON_COMPACT) : NULL;
    CHECK(jt && strstr(jt, "wal_level is replica, Debezium needs logical"),
          "the wal_level warning: %s", jt ? jt : "");
    free(jt);
    json_decref(j);
    CHECK(th_sql_long(cdc_url,
                      "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'qdb_one_cdc'",
                      NULL) == 3,
          "publication qdb_one_cdc for the three tables");

    th_step("every provisioning job run a second time changes nothing and says so");
    long steps_before = th_sql_long(url, "SELECT count(*) FROM job_log", NULL);
    json_t *dbs = NULL;
    inv_call(&srv, viewer, "GET", "/api/v1/databases?environment=development", NULL, &r);
    dbs = json_incref(json_object_get(r.json, "items"));
    th_resp_free(&r);
    CHECK(json_array_size(dbs) == 6, "six databases in development");
    json_array_foreach(dbs, i, d)
    {
        snprintf(body, sizeof body,
                 "{\"kind\":\"inventory.provision_database\",\"args\":{\"database_id\":%lld}}",
                 (long long)json_integer_value(json_object_get(d, "id")));
        j = inv_run_job(&srv, admin, body, 60000);
        CHECK(j && strcmp(inv_result_str(j, "result"), "no change") == 0, "%s second run: %s %s",
              json_string_value(json_object_get(d, "name")), inv_result_str(j, "result"),
              j ? inv_errors(j) : "timeout");
        json_decref(j);
    }
    json_decref(dbs);
    CHECK(th_sql_long(url, "SELECT count(*) FROM job_log WHERE message LIKE 'no change%'", NULL) >=
              6,
          "the job logs say no change");
    CHECK(th_sql_long(url, "SELECT count(*) FROM job_log", NULL) > steps_before,
          "each step is in the job log");
    inv_call(&srv, viewer, "GET", "/api/v1/environments/development/plan", NULL, &r);
    CHECK(json_array_size(json_object_get(r.json, "differences")) == 0, "the plan is empty: %s",
          r.body);
    th_resp_free(&r);

    th_step("wal_level = logical on the target (ALTER SYSTEM + restart): reported as such");
    PQclear(th_sql(target_url, "ALTER SYSTEM SET wal_level = logical", NULL));
    th_pg_private_stop(&pg);
    th_pg_private_restart(&pg);
    snprintf(body, sizeof body,
             "{\"kind\":\"inventory.provision_database\",\"args\":{\"database_id\":%lld}}", cdc_id);
    j = inv_run_job(&srv, admin, body, 60000);
    jt = j ? json_dumps(json_object_get(j, "result"), JSON_COMPACT) : NULL;
    CHECK(jt && strstr(jt, "wal_level is logical") && strstr(jt, "\"no change\""), "%s",
          jt ? jt : "timeout");
    free(jt);
    json_decref(j);

    th_step("a database dropped behind the service's back: the plan and the drift check see it");
    PQclear(th_sql(target_url, "DROP DATABASE qdb_openfga", NULL));
    inv_call(&srv, viewer, "GET", "/api/v1/environments/development/plan", NULL, &r);
    diffs = json_object_get(r.json, "differences");
    CHECK(json_array_size(diffs) == 1 && strstr(r.body, "\"name\":\"qdb_openfga\"") &&
              strstr(r.body, "database_missing"),
          "plan: %s", r.body);
    th_resp_free(&r);
    long outbox0 = th_sql_long(url,
                               "SELECT count(*) FROM outbox WHERE event->>'type' = "
                               "'qa.qdb.controlplane.inventory.drift_detected'",
                               NULL);
    j = inv_run_job(&srv, admin,
                    "{\"kind\":\"inventory.drift_check\",\"args\":{\"environment\":"
                    "\"development\"}}",
                    60000);
    CHECK(j &&
              json_integer_value(json_object_get(json_object_get(j, "result"), "development")) == 1,
          "drift check: %s", j ? inv_errors(j) : "timeout");
    json_decref(j);
    CHECK(th_metric(&srv, "qdb_inventory_drift{environment=\"development\"}") == 1,
          "qdb_inventory_drift is 1");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM outbox WHERE event->>'type' = "
                      "'qa.qdb.controlplane.inventory.drift_detected'",
                      NULL) == outbox0 + 1,
          "one drift_detected event");
    j = inv_run_job(&srv, admin,
                    "{\"kind\":\"inventory.drift_check\",\"args\":{\"environment\":"
                    "\"development\"}}",
                    60000);
    json_decref(j);
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM outbox WHERE event->>'type' = "
                      "'qa.qdb.controlplane.inventory.drift_detected'",
                      NULL) == outbox0 + 1,
          "drift that stays is not announced again");
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/environments/development/apply", "{}", &r) ==
                  202 &&
              json_array_size(json_object_get(r.json, "jobs")) == 1,
          "apply: %s", r.body);
    j = inv_wait_job(
        &srv, admin,
        (long long)json_integer_value(json_array_get(json_object_get(r.json, "jobs"), 0)), 60000);
    th_resp_free(&r);
    json_decref(j);
    inv_call(&srv, viewer, "GET", "/api/v1/environments/development/plan", NULL, &r);
    CHECK(json_array_size(json_object_get(r.json, "differences")) == 0,
          "after apply the plan is empty: %s", r.body);
    th_resp_free(&r);
    CHECK(th_sql_long(target_url, "SELECT count(*) FROM pg_database WHERE datname = 'qdb_openfga'",
                      NULL) == 1,
          "qdb_openfga is back");

    th_step("a secret reference that does not resolve fails the job for good, saying why");
    snprintf(body, sizeof body,
             "{\"kind\":\"inventory.provision_database\",\"args\":{\"database_id\":%lld}}",
             lost_id);
    j = inv_run_job(&srv, admin, body, 60000);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "state")), "failed") == 0 &&
              json_integer_value(json_object_get(j, "attempt")) == 1 &&
              strstr(inv_errors(j), "no such file"),
          "failed at once: %s", j ? inv_errors(j) : "timeout");
    json_decref(j);

    th_step("a change is audited and emitted in one transaction");
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", cdc_id);
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM audit_event WHERE action = 'database.create' "
                      "AND resource_id = $1",
                      idtext, NULL) == 1,
          "database.create audited");
    snprintf(path, sizeof path, "databases/%lld", cdc_id);
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM outbox WHERE key = $1 AND event->>'type' = "
                      "'qa.qdb.controlplane.inventory.database_created'",
                      path, NULL) == 1,
          "database_created emitted");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM outbox WHERE key = $1 AND event->>'type' = "
                      "'qa.qdb.controlplane.inventory.database_provisioned'",
                      path, NULL) >= 2,
          "database_provisioned emitted by the jobs");

    th_step("the door for the backup room: a managed database and its connections");
    struct db_settings state_store = {url, 5000, 3, "test-inventory"};
    struct db_conn *conn = db_conn_open(&state_store);
    struct inventory_database idb;
    CHECK(conn && inventory_database_lookup(conn, cdc_id, NULL, NULL, &idb) == 1 &&
              strcmp(idb.name, "advisory_main") == 0 &&
              strcmp(idb.environment, "development") == 0 &&
              strcmp(idb.primary.host, "127.0.0.1") == 0 && idb.primary.port == pg.port &&
              strcmp(idb.primary.admin_user, "postgres") == 0 &&
              strcmp(idb.primary.admin_secret, ref) == 0 && !idb.has_standby,
          "by id: the environment's postgres target filled in");
    struct inventory_database by_name;
    CHECK(conn &&
              inventory_database_lookup(conn, 0, "development", "advisory_main", &by_name) == 1 &&
              by_name.id == cdc_id,
          "by environment and name");
    CHECK(conn && inventory_database_lookup(conn, 0, "development", "no_such_db", &by_name) == 0,
          "none: 0");
    char err[256] = "";
    /* in the server the module's config_load has read QDB_SECRET_DIRS; here the test does */
    setenv("QDB_SECRET_DIRS", env_dirs + strlen("QDB_SECRET_DIRS="), 1);
    CHECK(inv_secret_dirs_load() == 0, "QDB_SECRET_DIRS");
    PGconn *admin_conn =
        conn ? inventory_pg_connect(&idb.primary, idb.name, 3, err, sizeof err) : NULL;
    CHECK(admin_conn && PQstatus(admin_conn) == CONNECTION_OK, "inventory_pg_connect: %s", err);
    PQfinish(admin_conn);
    db_conn_close(conn);

    th_step("the secret's value is nowhere: replies, server log, outbox, audit trail");
    CHECK(!inv_seen || !strstr(inv_seen, SECRET_VALUE), "no reply held it (%zu bytes seen)",
          inv_seen_len);
    CHECK(!th_server_log_contains(&srv, SECRET_VALUE), "the server log does not hold it");
    CHECK(th_sql_long(url, "SELECT count(*) FROM outbox WHERE strpos(event::text, $1) > 0",
                      SECRET_VALUE, NULL) == 0,
          "no event holds it");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM audit_event WHERE strpos(audit_event::text, $1) "
                      "> 0",
                      SECRET_VALUE, NULL) == 0,
          "no audit record holds it");
    CHECK(th_sql_long(url, "SELECT count(*) FROM job_log WHERE strpos(message, $1) > 0",
                      SECRET_VALUE, NULL) == 0 &&
              th_sql_long(url, "SELECT count(*) FROM job WHERE strpos(job::text, $1) > 0",
                          SECRET_VALUE, NULL) == 0,
          "no job, result or job log holds it");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM inventory_environment WHERE strpos(targets::text, "
                      "$1) > 0",
                      SECRET_VALUE, NULL) == 0,
          "the state store holds only the reference");
    free(cdc_url);

    CHECK(th_server_stop(&srv) == 0, "clean stop");
out:
    th_server_kill(&srv);
    th_pg_private_destroy(&pg);
    free(admin);
    free(viewer);
    free(target_url);
    free(inv_seen);
    th_db_drop(url);
    free(url);
    return th_done();
}
