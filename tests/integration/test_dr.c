/* The DR room against real PostgreSQL servers of its own on loopback ports: a primary with
 * a streaming standby (pg_basebackup -R) and a third server as the DR environment, seeded
 * with pgbench data and written to by a writer process during the test; registered as the
 * inventory's production and dr databases qdb_read_store. It checks the seeded scenarios and
 * targets; bad input that changes nothing (an unknown database, one without a standby, a
 * drill into the source's own server, a second failover while one runs); a drill that
 * restores the newest verified backup into the third server and reports RTO and RPO; a
 * switchover after which the old primary streams from the new one; a failover that
 * promotes the standby, where writes then succeed while the fenced old primary refuses
 * them; a switchover refused while the primary is down; the status table and metrics. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dr_helpers.h"
#include "harness.h"
#include "inventory_helpers.h"

#define PG_BIN "/usr/lib/postgresql/15/bin"

static const char *str_of(const json_t *j, const char *k)
{
    const char *v = json_string_value(json_object_get(j, k));
    return v ? v : "";
}

static const char *job_state(const json_t *j)
{
    const char *s = json_string_value(json_object_get(j, "state"));
    return s ? s : "(none)";
}

/* POST; the 202's job id or 0. */
static long long post_202(const struct th_server *s, const char *tok, const char *path,
                          const char *body)
{
    struct th_resp r;
    long st = inv_call(s, tok, "POST", path, body, &r);
    long long id = st == 202 ? (long long)json_integer_value(json_object_get(r.json, "id")) : 0;
    if (!id)
        fprintf(stderr, "POST %s: %ld %s\n", path, st, r.body ? r.body : "");
    th_resp_free(&r);
    return id;
}

static json_t *post_job(const struct th_server *s, const char *tok, const char *path,
                        const char *body, int timeout_ms)
{
    long long id = post_202(s, tok, path, body);
    return id ? inv_wait_job(s, tok, id, timeout_ms) : NULL;
}

/* The id of environment/name in the inventory, 0 if none. */
static long long db_id(const struct th_server *s, const char *tok, const char *env,
                       const char *name)
{
    char path[160];
    struct th_resp r;
    snprintf(path, sizeof path, "/api/v1/databases?environment=%s", env);
    inv_call(s, tok, "GET", path, NULL, &r);
    long long id = 0;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(r.json, "items"), i, v)
    {
        if (strcmp(str_of(v, "name"), name) == 0)
            id = (long long)json_integer_value(json_object_get(v, "id"));
    }
    th_resp_free(&r);
    return id;
}

static long point_db(const struct th_server *s, const char *tok, long long id, int port,
                     int standby_port)
{
    char path[96], body[512];
    snprintf(path, sizeof path, "/api/v1/databases/%lld", id);
    if (standby_port)
        snprintf(body, sizeof body,
                 "{\"primary\":{\"host\":\"127.0.0.1\",\"port\":%d,\"admin_user\":\"postgres\"},"
                 "\"standby\":{\"host\":\"127.0.0.1\",\"port\":%d,\"admin_user\":\"postgres\"}}",
                 port, standby_port);
    else
        snprintf(body, sizeof body,
                 "{\"primary\":{\"host\":\"127.0.0.1\",\"port\":%d,\"admin_user\":\"postgres\"}}",
                 port);
    return inv_status(s, tok, "PATCH", path, body);
}

static json_t *get_json(const struct th_server *s, const char *tok, const char *path)
{
    struct th_resp r;
    inv_call(s, tok, "GET", path, NULL, &r);
    json_t *j = r.status == 200 ? json_incref(r.json) : NULL;
    if (!j)
        fprintf(stderr, "GET %s: %ld %s\n", path, r.status, r.body ? r.body : "");
    th_resp_free(&r);
    return j;
}

/* The newest failover/switchover row of the database. */
static json_t *last_op(const struct th_server *s, const char *tok, long long id)
{
    char path[96];
    snprintf(path, sizeof path, "/api/v1/dr/failovers?database_id=%lld&limit=1", id);
    json_t *l = get_json(s, tok, path);
    json_t *o = json_incref(json_array_get(json_object_get(l, "items"), 0));
    json_decref(l);
    return o;
}

static long in_recovery(int port)
{
    char *u = dr_url(port, "qdb_read_store");
    PGresult *r = th_sql(u, "SELECT pg_is_in_recovery()::int", NULL);
    long v = r && PQntuples(r) ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    free(u);
    return v;
}

/* Whether an INSERT on the server commits (1), is refused (0), or cannot be tried (-1). */
static int takes_write(int port)
{
    char *u = dr_url(port, "qdb_read_store");
    PGconn *c = PQconnectdb(u);
    free(u);
    int rc = -1;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, "INSERT INTO dr_writes (at) VALUES (clock_timestamp())");
        rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 1 : 0;
        if (!rc)
            fprintf(stderr, "   (write on %d refused: %s)", port, PQerrorMessage(c));
        PQclear(r);
    }
    PQfinish(c);
    return rc;
}

/* Wait until `port` streams from `primary_port` (a row in the latter's pg_stat_replication). */
static int wait_streaming(int primary_port, int ms)
{
    char *u = dr_url(primary_port, "postgres");
    int ok = 0;
    for (double end = th_now_ms() + ms; !ok && th_now_ms() < end; th_sleep_ms(100))
        ok = th_sql_long(u, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                         NULL) > 0;
    free(u);
    return ok;
}

int main(void)
{
    char *url = th_db_create("dr");
    struct dr_servers pgs = {0};
    struct th_server srv = {0};
    char *admin = NULL, *operator= NULL, *viewer = NULL;
    char body[2048], path[512], port_s[16], bdir[300], env_dir[400];
    struct th_resp r;
    pid_t writer = 0;
    int pp = th_free_port(), ps = th_free_port(), pc = th_free_port();
    while (ps == pp)
        ps = th_free_port();
    while (pc == pp || pc == ps)
        pc = th_free_port();

    th_step("a primary (%d) with a streaming standby (%d), and a DR server (%d)", pp, ps, pc);
    CHECK(dr_servers_init(&pgs) == 0, "a folder for the servers");
    CHECK(dr_server(&pgs, "primary", "a", pp, 0) == 0, "primary starts");
    char *pa = dr_url(pp, "postgres");
    PQclear(th_sql(pa, "CREATE DATABASE qdb_read_store", NULL));
    PQclear(th_sql(pa, "CREATE DATABASE qdb_keycloak", NULL));
    PQclear(th_sql(pa, "CREATE DATABASE qdb_mpi", NULL));
    char *mpi_url = dr_url(pp, "qdb_mpi");
    PQclear(th_sql(mpi_url, "CREATE TABLE person (id bigserial PRIMARY KEY, name text)", NULL));
    PQclear(th_sql(mpi_url,
                   "INSERT INTO person (name) SELECT 'p' || g FROM generate_series(1, 1000) g",
                   NULL));
    char *src_url = dr_url(pp, "qdb_read_store");
    snprintf(port_s, sizeof port_s, "%d", pp);
    const char *bench[] = {
        PG_BIN "/pgbench", "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p", port_s, "-U", "postgres",
        "qdb_read_store",  NULL};
    pid_t bp = fork();
    if (bp == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execv(bench[0], (char *const *)bench);
        _exit(127);
    }
    int bst = 0;
    waitpid(bp, &bst, 0);
    CHECK(WIFEXITED(bst) && WEXITSTATUS(bst) == 0, "pgbench -i -s 1");
    PQclear(
        th_sql(src_url, "CREATE TABLE dr_writes (id bigserial PRIMARY KEY, at timestamptz)", NULL));
    CHECK(dr_server(&pgs, "standby", "b", ps, pp) == 0, "standby from pg_basebackup -R starts");
    CHECK(in_recovery(ps) == 1 && wait_streaming(pp, 30000), "the standby streams");
    CHECK(dr_server(&pgs, "primary", "c", pc, 0) == 0, "the DR server starts");
    char *pcu = dr_url(pc, "postgres");
    PQclear(th_sql(pcu, "CREATE DATABASE qdb_read_store", NULL));
    PQclear(th_sql(pcu, "CREATE DATABASE qdb_mpi", NULL));
    free(pcu);

    snprintf(bdir, sizeof bdir, "%s/backups", pgs.root);
    mkdir(bdir, 0700);
    snprintf(env_dir, sizeof env_dir, "QDB_BACKUP_DIR=%s", bdir);
    const char *env[] = {env_dir, "QDB_BACKUP_STATUS_CRON=off", NULL};
    CHECK(th_server_start(&srv, url, env, 1) == 0, "server starts");
    if (!srv.pid)
        goto out;
    admin = th_dev_token(&srv, "admin");
    operator= th_dev_token(&srv, "operator");
    viewer = th_dev_token(&srv, "viewer");

    th_step("the seeded scenarios of 7.3 and targets of 7.2");
    json_t *sc = get_json(&srv, viewer, "/api/v1/dr/scenarios");
    json_t *items = json_object_get(sc, "items"), *v;
    size_t i;
    int primary_failure = 0, full_cluster = 0;
    json_array_foreach(items, i, v)
    {
        if (strcmp(str_of(v, "slug"), "database-primary-failure") == 0)
            primary_failure = json_integer_value(json_object_get(v, "target_rto_seconds")) == 30 &&
                              json_array_size(json_object_get(v, "steps")) == 5;
        if (strcmp(str_of(v, "slug"), "full-cluster-failure") == 0)
            full_cluster = json_integer_value(json_object_get(v, "target_rto_seconds")) == 14400 &&
                           json_integer_value(json_object_get(v, "target_rto_min_seconds")) == 7200;
    }
    CHECK(json_array_size(items) == 6 && primary_failure && full_cluster,
          "six scenarios, primary failure < 30 s in 5 steps, full cluster 2-4 h");
    int rs_ok = 0;
    json_array_foreach(json_object_get(sc, "targets"), i, v)
    {
        if (strcmp(str_of(v, "component"), "read-store") == 0)
            rs_ok = json_integer_value(json_object_get(v, "rpo_seconds")) == 300 &&
                    json_integer_value(json_object_get(v, "rto_seconds")) == 7200 &&
                    strcmp(str_of(v, "database"), "qdb_read_store") == 0;
    }
    CHECK(json_array_size(json_object_get(sc, "targets")) == 5 && rs_ok,
          "five targets; read store RPO 5 min, RTO 2 h");
    json_decref(sc);
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM schedule WHERE name = 'dr.drill.quarterly' AND "
                      "kind = 'dr.drill' AND cron = '0 3 1 1,4,7,10 *'",
                      NULL) == 1,
          "the quarterly drill is scheduled");

    th_step("the inventory: production and dr qdb_read_store on the test servers");
    long long src = db_id(&srv, viewer, "production", "qdb_read_store");
    long long dst = db_id(&srv, viewer, "dr", "qdb_read_store");
    long long kc = db_id(&srv, viewer, "production", "qdb_keycloak");
    long long kc_dr = db_id(&srv, viewer, "dr", "qdb_keycloak");
    long long mpi = db_id(&srv, viewer, "production", "qdb_mpi");
    long long mpi_dr = db_id(&srv, viewer, "dr", "qdb_mpi");
    CHECK(src && dst && kc && kc_dr && mpi && mpi_dr, "seeded rows");
    CHECK(point_db(&srv, admin, src, pp, ps) == 200,
          "production/qdb_read_store: primary + standby");
    CHECK(point_db(&srv, admin, dst, pc, 0) == 200, "dr/qdb_read_store: the third server");
    CHECK(point_db(&srv, admin, kc, pp, 0) == 200, "production/qdb_keycloak: no standby");
    CHECK(point_db(&srv, admin, kc_dr, pp, 0) == 200, "dr/qdb_keycloak: on the source's server");
    CHECK(point_db(&srv, admin, mpi, pp, 0) == 200 && point_db(&srv, admin, mpi_dr, pc, 0) == 200,
          "production/qdb_mpi (RPO 0) on the primary's server, dr/qdb_mpi on the DR server");

    th_step("bad input: 4xx problem+json, nothing written");
    long ops_before = th_sql_long(url, "SELECT count(*) FROM dr_failover", NULL);
    long drills_before = th_sql_long(url, "SELECT count(*) FROM dr_drill", NULL);
    long jobs_before = th_sql_long(url, "SELECT count(*) FROM job", NULL);
    long audit_before = th_sql_long(url, "SELECT count(*) FROM audit_event", NULL);
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/databases/999999/failover", NULL, &r) == 404 &&
              th_is_problem(&r, 404),
          "failover of an unknown database: %ld", r.status);
    th_resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/databases/%lld/failover", kc);
    CHECK(inv_call(&srv, admin, "POST", path, NULL, &r) == 409 && th_is_problem(&r, 409) &&
              strstr(r.body, "no standby"),
          "failover of a database without a standby: %ld %s", r.status, r.body);
    th_resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/databases/%lld/switchover", kc);
    CHECK(inv_status(&srv, admin, "POST", path, "{}") == 409, "switchover without a standby");
    snprintf(path, sizeof path, "/api/v1/databases/%lld/failover", src);
    CHECK(inv_status(&srv, operator, "POST", path, NULL) == 403, "failover needs admin");
    snprintf(path, sizeof path, "/api/v1/databases/%lld/switchover", src);
    CHECK(inv_status(&srv, admin, "POST", path, "{\"max_lag_bytes\":-1}") == 400,
          "a negative max_lag_bytes");
    snprintf(body, sizeof body, "{\"databases\":[%lld],\"target_environment\":\"dr\"}", kc);
    CHECK(inv_call(&srv, operator, "POST", "/api/v1/dr/drills", body, &r) == 422 &&
              th_is_problem(&r, 422) && strstr(r.body, "own server"),
          "a drill into the source's own server: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(inv_status(&srv, operator, "POST", "/api/v1/dr/drills",
                     "{\"databases\":[999999],\"target_environment\":\"dr\"}") == 422,
          "a drill of an unknown database");
    snprintf(body, sizeof body, "{\"databases\":[%lld],\"target_environment\":\"production\"}",
             src);
    CHECK(inv_status(&srv, operator, "POST", "/api/v1/dr/drills", body) == 422,
          "a drill into the source's own environment");
    CHECK(inv_status(&srv, operator, "POST", "/api/v1/dr/drills",
                     "{\"databases\":[],\"target_environment\":\"dr\"}") == 400,
          "a drill of nothing");
    snprintf(body, sizeof body, "{\"databases\":[%lld,%lld],\"target_environment\":\"dr\"}", src,
             src);
    CHECK(inv_status(&srv, operator, "POST", "/api/v1/dr/drills", body) == 400,
          "a database listed twice");
    CHECK(inv_status(&srv, viewer, "POST", "/api/v1/dr/drills",
                     "{\"databases\":[1],\"target_environment\":\"dr\"}") == 403,
          "a drill needs operator");
    CHECK(th_sql_long(url, "SELECT count(*) FROM dr_failover", NULL) == ops_before &&
              th_sql_long(url, "SELECT count(*) FROM dr_drill", NULL) == drills_before &&
              th_sql_long(url, "SELECT count(*) FROM job", NULL) == jobs_before &&
              th_sql_long(url, "SELECT count(*) FROM audit_event", NULL) == audit_before &&
              in_recovery(ps) == 1 && in_recovery(pp) == 0,
          "no row, job or audit record; the pair untouched");

    th_step("a verified base backup of the source, taken while it is written to");
    writer = dr_writer_start(pp, ps, "qdb_read_store");
    snprintf(path, sizeof path, "/api/v1/databases/%lld/backups", src);
    json_t *j = post_job(&srv, admin, path, "{\"method\":\"basebackup\"}", 120000);
    long long backup =
        (long long)json_integer_value(json_object_get(json_object_get(j, "result"), "backup_id"));
    CHECK(j && strcmp(job_state(j), "succeeded") == 0 && backup > 0, "backup: %s %s", job_state(j),
          j ? inv_errors(j) : "");
    json_decref(j);
    snprintf(path, sizeof path, "/api/v1/backups/%lld/verify", backup);
    j = post_job(&srv, admin, path, NULL, 180000);
    CHECK(j && strcmp(job_state(j), "succeeded") == 0, "verify: %s %s", job_state(j),
          j ? inv_errors(j) : "");
    json_decref(j);

    th_step("the MPI (RPO 0): its WAL streamed by the backup room, a verified base backup");
    int streaming = 0;
    for (double end = th_now_ms() + 60000; !streaming && th_now_ms() < end; th_sleep_ms(200))
        streaming = th_sql_long(url,
                                "SELECT count(*) FROM backup_wal_stream WHERE database_name = "
                                "'qdb_mpi' AND state = 'streaming'",
                                NULL) == 1;
    CHECK(streaming, "the backup room streams production/qdb_mpi's WAL");
    snprintf(path, sizeof path, "/api/v1/databases/%lld/backups", mpi);
    j = post_job(&srv, admin, path, "{\"method\":\"basebackup\"}", 120000);
    long long mpi_backup =
        (long long)json_integer_value(json_object_get(json_object_get(j, "result"), "backup_id"));
    CHECK(j && strcmp(job_state(j), "succeeded") == 0 && mpi_backup > 0, "MPI backup: %s %s",
          job_state(j), j ? inv_errors(j) : "");
    json_decref(j);
    snprintf(path, sizeof path, "/api/v1/backups/%lld/verify", mpi_backup);
    j = post_job(&srv, admin, path, NULL, 180000);
    CHECK(j && strcmp(job_state(j), "succeeded") == 0, "verify: %s %s", job_state(j),
          j ? inv_errors(j) : "");
    json_decref(j);
    /* written after the backup: only the streamed WAL holds these */
    PQclear(th_sql(mpi_url,
                   "INSERT INTO person (name) SELECT 'late' || g FROM generate_series(1, 500) g",
                   NULL));
    long persons = th_sql_long(mpi_url, "SELECT count(*) FROM person", NULL);
    for (double end = th_now_ms() + 30000;
         th_now_ms() < end && th_sql_long(url,
                                          "SELECT count(*) FROM backup_wal_stream WHERE "
                                          "database_name = 'qdb_mpi' AND lag_bytes = 0",
                                          NULL) != 1;)
        th_sleep_ms(100);

    th_step("a drill restores both into the DR server and reports RTO and RPO of each");
    long accounts = th_sql_long(src_url, "SELECT count(*) FROM pgbench_accounts", NULL);
    long src_audit = th_sql_long(url,
                                 "SELECT count(*) FROM audit_event WHERE resource_type = "
                                 "'database' AND resource_id = $1",
                                 (snprintf(body, sizeof body, "%lld", src), body), NULL);
    snprintf(body, sizeof body, "{\"databases\":[%lld,%lld],\"target_environment\":\"dr\"}", src,
             mpi);
    long long drill_job = post_202(&srv, operator, "/api/v1/dr/drills", body);
    j = drill_job ? inv_wait_job(&srv, operator, drill_job, 300000) : NULL;
    CHECK(j && strcmp(job_state(j), "succeeded") == 0, "drill: %s %s", job_state(j),
          j ? inv_errors(j) : "");
    long long drill =
        (long long)json_integer_value(json_object_get(json_object_get(j, "result"), "drill_id"));
    json_decref(j);
    snprintf(path, sizeof path, "/api/v1/dr/drills/%lld", drill);
    json_t *d = get_json(&srv, viewer, path);
    json_t *res = json_array_get(json_object_get(d, "results"), 0);
    double rto = json_number_value(json_object_get(res, "rto_seconds"));
    json_t *rpo = json_object_get(res, "rpo_seconds");
    CHECK(d && strcmp(str_of(d, "state"), "succeeded") == 0 &&
              json_is_true(json_object_get(res, "ok")) &&
              json_integer_value(json_object_get(res, "backup_id")) == backup && rto > 0 &&
              json_integer_value(json_object_get(res, "target_rto_seconds")) == 7200 &&
              json_integer_value(json_object_get(res, "target_rpo_seconds")) == 300 &&
              strcmp(str_of(res, "component"), "read-store") == 0 &&
              json_is_true(json_object_get(res, "rto_met")) &&
              strncmp(str_of(res, "rpo_basis"), "commit_timestamp", 16) == 0,
          "one database restored and checked against its targets: %s",
          d ? json_dumps(d, JSON_COMPACT) : "");
    /* RPO: the source's last commit (its commit timestamps) -> the last transaction the
     * restore replayed (recovered_to); a restore to the backup's end whose WAL held no commit
     * (crash recovery keeps no replay time) is timed from the backup's start instead, before
     * which every commit is in it: an upper bound, said in rpo_basis, never a made-up 0 */
    const char *basis = str_of(res, "rpo_basis");
    CHECK(str_of(res, "recovered_to")[0] != '\0' &&
              (strcmp(basis, "commit_timestamp") == 0 ||
               strcmp(basis, "commit_timestamp+backup_start") == 0),
          "the restore's end is known (%s): %s", basis, json_dumps(res, JSON_COMPACT));
    CHECK(json_is_number(rpo) && json_number_value(rpo) >= 0 &&
              json_is_true(json_object_get(res, "rpo_met")),
          "its RPO is measured and met: %s", json_dumps(res, JSON_COMPACT));
    printf("drill: RTO %.3f s (target 7200 s), RPO %s s (target 300 s, basis %s), restore %.3f s\n", rto,
           json_is_number(rpo) ? (snprintf(path, sizeof path, "%.3f", json_number_value(rpo)), path)
                               : "null",
           basis, json_number_value(json_object_get(res, "restore_seconds")));
    json_t *mres = json_array_get(json_object_get(d, "results"), 1);
    json_t *mrpo = json_object_get(mres, "rpo_seconds");
    CHECK(json_is_true(json_object_get(mres, "ok")) &&
              strcmp(str_of(mres, "component"), "mpi") == 0 &&
              strcmp(str_of(mres, "point_in_time"), "latest") == 0 &&
              json_integer_value(json_object_get(mres, "target_rpo_seconds")) == 0 &&
              str_of(mres, "recovered_to")[0] && json_is_number(mrpo) &&
              json_number_value(mrpo) >= 0 &&
              json_integer_value(
                  json_object_get(json_object_get(mres, "row_counts"), "public.person")) == persons,
          "the MPI replayed its streamed WAL to the latest: every person, its RPO measured: %s",
          mres ? json_dumps(mres, JSON_COMPACT) : "");
    printf("drill: MPI RTO %.3f s (target 14400 s), RPO %.3f s (target 0 s), WAL replayed to %s\n",
           json_number_value(json_object_get(mres, "rto_seconds")), json_number_value(mrpo),
           str_of(mres, "recovered_to"));
    json_decref(d);
    char *dst_url = dr_url(pc, "qdb_read_store");
    CHECK(th_sql_long(dst_url, "SELECT count(*) FROM pgbench_accounts", NULL) == 100000,
          "the DR server holds the 100000 accounts");
    free(dst_url);
    CHECK(th_sql_long(src_url, "SELECT count(*) FROM pgbench_accounts", NULL) == accounts &&
              th_sql_long(url,
                          "SELECT count(*) FROM audit_event WHERE resource_type = "
                          "'database' AND resource_id = $1",
                          (snprintf(body, sizeof body, "%lld", src), body), NULL) == src_audit &&
              in_recovery(pp) == 0 && in_recovery(ps) == 1,
          "the source untouched");
    json_t *list = get_json(&srv, viewer, "/api/v1/dr/drills");
    CHECK(json_array_size(json_object_get(list, "items")) == 1, "the drill in the history");
    json_decref(list);
    CHECK(th_metric(&srv, "qdb_dr_last_drill_rto_seconds{component=\"read-store\"}") >= 0,
          "the RTO metric");

    th_step("switchover while written to: the old primary streams from the new one");
    snprintf(path, sizeof path, "/api/v1/databases/%lld/switchover", src);
    long long sw_job = post_202(&srv, admin, path, "{}");
    CHECK(sw_job > 0, "switchover accepted");
    CHECK(inv_call(&srv, admin, "POST", path, "{}", &r) == 409 && th_is_problem(&r, 409) &&
              strstr(r.body, "dr-busy"),
          "a second switchover while it runs: %ld %s", r.status, r.body);
    th_resp_free(&r);
    j = sw_job ? inv_wait_job(&srv, admin, sw_job, 300000) : NULL;
    CHECK(j && strcmp(job_state(j), "succeeded") == 0, "switchover: %s %s", job_state(j),
          j ? inv_errors(j) : "");
    json_decref(j);
    json_t *op = last_op(&srv, viewer, src);
    CHECK(op && strcmp(str_of(op, "kind"), "switchover") == 0 &&
              strcmp(str_of(op, "state"), "succeeded") == 0 &&
              json_number_value(json_object_get(op, "rto_seconds")) > 0 &&
              str_of(op, "rejoin_method")[0] && json_is_true(json_object_get(op, "fenced")) &&
              json_integer_value(json_object_get(op, "lost_bytes")) == 0,
          "recorded: RTO, fenced, no data lost, rejoined: %s",
          op ? json_dumps(op, JSON_COMPACT) : "");
    printf("switchover: RTO %.3f s, rejoined with %s\n",
           json_number_value(json_object_get(op, "rto_seconds")), str_of(op, "rejoin_method"));
    json_decref(op);
    CHECK(in_recovery(ps) == 0 && in_recovery(pp) == 1 && wait_streaming(ps, 60000),
          "the new primary %d streams to the old one %d", ps, pp);
    snprintf(path, sizeof path, "/api/v1/databases/%lld", src);
    json_t *dbdoc = get_json(&srv, viewer, path);
    CHECK(json_integer_value(json_object_get(json_object_get(dbdoc, "primary"), "port")) == ps &&
              json_integer_value(json_object_get(json_object_get(dbdoc, "standby"), "port")) == pp,
          "the inventory swapped them");
    json_decref(dbdoc);
    long w1 = th_sql_long(src_url, "SELECT 1", NULL); /* pp is a standby now: reads work */
    char *ps_url = dr_url(ps, "qdb_read_store");
    long before = th_sql_long(ps_url, "SELECT count(*) FROM dr_writes", NULL);
    for (double end = th_now_ms() + 20000;
         th_now_ms() < end &&
         th_sql_long(ps_url, "SELECT count(*) FROM dr_writes", NULL) <= before;)
        th_sleep_ms(50);
    CHECK(w1 == 1 && th_sql_long(ps_url, "SELECT count(*) FROM dr_writes", NULL) > before,
          "the writer commits on the new primary");

    th_step("failover while written to: the standby is promoted, the old primary fenced");
    snprintf(path, sizeof path, "/api/v1/databases/%lld/failover", src);
    long long fo_job = post_202(&srv, admin, path, NULL);
    CHECK(fo_job > 0, "failover accepted");
    CHECK(inv_call(&srv, admin, "POST", path, NULL, &r) == 409 && strstr(r.body, "dr-busy"),
          "a second failover while one runs: %ld %s", r.status, r.body);
    th_resp_free(&r);
    j = fo_job ? inv_wait_job(&srv, admin, fo_job, 120000) : NULL;
    CHECK(j && strcmp(job_state(j), "succeeded") == 0, "failover: %s %s", job_state(j),
          j ? inv_errors(j) : "");
    json_decref(j);
    op = last_op(&srv, viewer, src);
    double fo_rto = json_number_value(json_object_get(op, "rto_seconds"));
    CHECK(op && strcmp(str_of(op, "kind"), "failover") == 0 && fo_rto > 0 &&
              json_is_true(json_object_get(op, "fenced")) &&
              json_is_integer(json_object_get(op, "lost_bytes")) &&
              json_is_number(json_object_get(op, "lost_seconds")),
          "recorded: RTO and the data-loss window: %s", op ? json_dumps(op, JSON_COMPACT) : "");
    printf("failover: RTO %.3f s (target 30 s), lost %lld bytes / %.3f s\n", fo_rto,
           (long long)json_integer_value(json_object_get(op, "lost_bytes")),
           json_number_value(json_object_get(op, "lost_seconds")));
    CHECK(fo_rto < 30, "under the 30 s of 7.3: %.3f", fo_rto);
    json_decref(op);
    CHECK(in_recovery(pp) == 0 && takes_write(pp) == 1, "writes succeed on the new primary %d", pp);
    CHECK(takes_write(ps) == 0, "the old primary %d refuses writes", ps);
    long on_new = th_sql_long(src_url, "SELECT count(*) FROM dr_writes", NULL);
    for (double end = th_now_ms() + 20000;
         th_now_ms() < end &&
         th_sql_long(src_url, "SELECT count(*) FROM dr_writes", NULL) <= on_new;)
        th_sleep_ms(50);
    CHECK(th_sql_long(src_url, "SELECT count(*) FROM dr_writes", NULL) > on_new,
          "the writer goes on on the new primary");
    snprintf(path, sizeof path, "/api/v1/databases/%lld", src);
    dbdoc = get_json(&srv, viewer, path);
    CHECK(json_integer_value(json_object_get(json_object_get(dbdoc, "primary"), "port")) == pp,
          "the inventory names the new primary");
    json_decref(dbdoc);
    dr_writer_stop(writer);
    writer = 0;
    free(ps_url);

    th_step("switchover refused while the primary is down");
    ops_before = th_sql_long(url, "SELECT count(*) FROM dr_failover", NULL);
    CHECK(dr_server(&pgs, "stop", "a", 0, 0) == 0, "the primary %d stops", pp);
    snprintf(path, sizeof path, "/api/v1/databases/%lld/switchover", src);
    CHECK(inv_call(&srv, admin, "POST", path, "{}", &r) == 409 && th_is_problem(&r, 409) &&
              strstr(r.body, "not answering"),
          "refused: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(th_sql_long(url, "SELECT count(*) FROM dr_failover", NULL) == ops_before,
          "nothing recorded");

    th_step("failover of a crashed primary: the standby is promoted, the loss window unknown");
    int pd = th_free_port();
    while (pd == pp || pd == ps || pd == pc)
        pd = th_free_port();
    CHECK(dr_server(&pgs, "standby", "d", pd, ps) == 0 && in_recovery(pd) == 1 &&
              wait_streaming(ps, 30000),
          "a new standby %d streams from %d", pd, ps);
    CHECK(point_db(&srv, admin, src, ps, pd) == 200, "the inventory names the new pair");
    CHECK(dr_server(&pgs, "stop", "b", 0, 0) == 0, "the primary %d crashes", ps);
    snprintf(path, sizeof path, "/api/v1/databases/%lld/failover", src);
    j = post_job(&srv, admin, path, NULL, 120000);
    CHECK(j && strcmp(job_state(j), "succeeded") == 0, "failover: %s %s", job_state(j),
          j ? inv_errors(j) : "");
    json_decref(j);
    op = last_op(&srv, viewer, src);
    double crash_rto = json_number_value(json_object_get(op, "rto_seconds"));
    CHECK(op && json_is_false(json_object_get(op, "old_primary_reachable")) &&
              json_is_false(json_object_get(op, "fenced")) &&
              json_is_null(json_object_get(op, "lost_bytes")) && crash_rto > 0 && crash_rto < 30,
          "recorded: the old primary unreachable, nothing fenced, the loss unknown, RTO %.3f: %s",
          crash_rto, op ? json_dumps(op, JSON_COMPACT) : "");
    printf("failover of a crashed primary: RTO %.3f s (target 30 s)\n", crash_rto);
    json_decref(op);
    CHECK(in_recovery(pd) == 0 && takes_write(pd) == 1,
          "writes succeed on %d, whose copied fence was lifted", pd);

    th_step("status and events");
    json_t *st = get_json(&srv, viewer, "/api/v1/dr/status");
    json_t *rs = NULL;
    json_array_foreach(json_object_get(st, "components"), i, v)
    {
        if (strcmp(str_of(v, "component"), "read-store") == 0)
            rs = v;
    }
    CHECK(rs && json_is_object(json_object_get(rs, "last_drill")) &&
              json_is_object(json_object_get(rs, "last_failover")) &&
              json_is_object(json_object_get(rs, "last_switchover")) &&
              strcmp(str_of(rs, "state"), "ok") == 0 &&
              json_array_size(json_object_get(json_object_get(rs, "last_failover"), "steps")) >= 3,
          "read-store: last drill (its RPO measured), failover (with its steps) and "
          "switchover; ok: %s",
          rs ? json_dumps(rs, JSON_COMPACT) : "");
    int others_warn = 1;
    json_array_foreach(json_object_get(st, "components"), i, v)
    {
        const char *comp = str_of(v, "component");
        if (strcmp(comp, "read-store") != 0 && strcmp(comp, "mpi") != 0)
            others_warn &= strcmp(str_of(v, "state"), "warning") == 0;
    }
    CHECK(others_warn, "never-drilled components are a warning: %s",
          json_dumps(json_object_get(st, "components"), JSON_COMPACT));
    json_decref(st);
    CHECK(th_metric(&srv, "qdb_dr_last_drill_rpo_seconds{component=\"mpi\"}") == 0,
          "the RPO metric of the MPI");
    /* a drill older than the drill period (a quarter) is stale */
    PQclear(th_sql(url,
                   "UPDATE dr_drill_result SET finished_at = now() - interval '100 days' "
                   "WHERE component = 'mpi'",
                   NULL));
    st = get_json(&srv, viewer, "/api/v1/dr/status");
    char *st_text = json_dumps(st, JSON_COMPACT);
    int stale = 0;
    json_array_foreach(json_object_get(st, "components"), i, v)
    {
        if (strcmp(str_of(v, "component"), "mpi") == 0) {
            char *row = json_dumps(v, JSON_COMPACT);
            stale = strcmp(str_of(v, "state"), "warning") == 0 && row &&
                    strstr(row, "older than the drill period") != NULL;
            free(row);
        }
    }
    CHECK(stale, "a 100-day-old drill is a warning: %s", st_text ? st_text : "");
    free(st_text);
    json_decref(st);
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM outbox WHERE event->>'type' IN "
                      "('qa.qdb.controlplane.dr.failed_over', "
                      "'qa.qdb.controlplane.dr.switched_over', "
                      "'qa.qdb.controlplane.dr.drill_completed', "
                      "'qa.qdb.controlplane.dr.switchover_completed')",
                      NULL) == 5,
          "one event each for the two failovers, the switchover (2) and the drill");

    CHECK(th_server_stop(&srv) == 0, "clean stop");
out:
    dr_writer_stop(writer);
    th_server_kill(&srv);
    dr_servers_destroy(&pgs);
    free(admin);
    free(operator);
    free(viewer);
    free(pa);
    free(src_url);
    free(mpi_url);
    free(inv_seen);
    th_db_drop(url);
    free(url);
    return th_done();
}
