/* WAL streaming and point-in-time restore against a real PostgreSQL server of its own,
 * with two replicas of the server on one state store: exactly one streams the RPO-0
 * database (one pg_receivewal on the source), its receiver killed is restarted with no gap
 * in the received WAL (every segment there, pg_waldump reads them end to end), the holder
 * killed hands the stream to the other replica, the status table and the metric carry the
 * WAL lag; then a restore to a moment between two inserts holds the first and not the
 * second, "latest" holds both, and bad points in time are refused with problem+json
 * before anything is touched. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "inventory_helpers.h"

#define PG_BIN "/usr/lib/postgresql/15/bin"

static int run(const char *const *argv)
{
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *job_state(const json_t *j)
{
    const char *s = json_string_value(json_object_get(j, "state"));
    return s ? s : "(none)";
}

static json_t *post_job(const struct th_server *s, const char *tok, const char *path,
                        const char *body, int timeout_ms)
{
    struct th_resp r;
    long st = inv_call(s, tok, "POST", path, body, &r);
    long long id = st == 202 ? (long long)json_integer_value(json_object_get(r.json, "id")) : 0;
    if (!id)
        fprintf(stderr, "POST %s: %ld %s\n", path, st, r.body ? r.body : "");
    th_resp_free(&r);
    return id ? inv_wait_job(s, tok, id, timeout_ms) : NULL;
}

/* The stream row's column as text (malloc'd) or NULL. */
static char *wal_col(const char *url, const char *col)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT %s::text FROM backup_wal_stream WHERE component = 'test-wal'",
             col);
    PGresult *r = th_sql(url, sql, NULL);
    char *v = r && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) ? strdup(PQgetvalue(r, 0, 0)) : NULL;
    PQclear(r);
    return v;
}

/* Poll (at most timeout_ms) until the stream row satisfies `cond` (SQL over the row). */
static int wait_wal(const char *url, const char *cond, int timeout_ms)
{
    char sql[600];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM backup_wal_stream WHERE component = 'test-wal' AND (%s)", cond);
    double until = th_now_ms() + timeout_ms;
    while (th_now_ms() < until) {
        if (th_sql_long(url, sql, NULL) == 1)
            return 1;
        th_sleep_ms(200);
    }
    return 0;
}

static int is_segment(const char *n)
{
    if (strlen(n) != 24)
        return 0;
    for (int i = 0; i < 24; i++)
        if (!strchr("0123456789ABCDEF", n[i]))
            return 0;
    return 1;
}

static unsigned long long segno(const char *n)
{
    char hi[9], lo[9];
    memcpy(hi, n + 8, 8);
    hi[8] = '\0';
    memcpy(lo, n + 16, 8);
    lo[8] = '\0';
    return strtoull(hi, NULL, 16) * 0x100ULL + strtoull(lo, NULL, 16);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The complete segments of the folder must be consecutive, and pg_waldump must read them
 * from the first to the last (it fails on a missing or torn one). Fills first/last. */
static int wal_without_gap(const char *dir, char *first, char *last, int *count)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    char *names[4096];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096)
        if (is_segment(e->d_name))
            names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    int ok = n >= 2;
    for (int i = 1; i < n; i++)
        if (segno(names[i]) != segno(names[i - 1]) + 1) {
            fprintf(stderr, "gap: %s then %s\n", names[i - 1], names[i]);
            ok = 0;
        }
    *count = n;
    if (n) {
        snprintf(first, 25, "%s", names[0]);
        snprintf(last, 25, "%s", names[n - 1]);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    if (!ok)
        return 0;
    char f[600], l[600];
    snprintf(f, sizeof f, "%s/%s", dir, first);
    snprintf(l, sizeof l, "%s/%s", dir, last);
    const char *dump[] = {PG_BIN "/pg_waldump", "-q", f, l, NULL};
    int rc = run(dump);
    if (rc != 0)
        fprintf(stderr, "pg_waldump %s .. %s: exit %d\n", first, last, rc);
    return rc == 0;
}

static int holder_is(const char *url, const struct th_server *s)
{
    char *h = wal_col(url, "holder");
    char pid[32];
    snprintf(pid, sizeof pid, "-%d-", (int)s->pid);
    int yes = h && strstr(h, pid) != NULL;
    free(h);
    return yes;
}

int main(void)
{
    char *url = th_db_create("backup_wal");
    struct th_pg pg = {0};
    struct th_server a = {0}, b = {0};
    struct th_server *holder = NULL, *other = NULL;
    char *admin = NULL, *admin2 = NULL, *src_url = NULL, *tgt_url = NULL;
    char bdir[300], env_dir[400], body[2048], path[600], waldir[400], port[16];
    struct th_resp r;
    long long src_id = 0, tgt_id = 0;

    th_step("a second PostgreSQL server, a source and a target database");
    CHECK(th_pg_private_start(&pg) == 0, "private cluster starts");
    src_url = th_pg_private_db(&pg, "wal_src");
    tgt_url = th_pg_private_db(&pg, "wal_tgt");
    snprintf(port, sizeof port, "%d", pg.port);
    PQclear(th_sql(src_url, "CREATE TABLE marks (v int PRIMARY KEY, at timestamptz NOT NULL "
                            "DEFAULT clock_timestamp())", NULL));
    PQclear(th_sql(src_url, "INSERT INTO marks (v) SELECT g FROM generate_series(1, 100) g",
                   NULL));

    snprintf(bdir, sizeof bdir, "%s/backups", pg.dir);
    mkdir(bdir, 0700);
    snprintf(env_dir, sizeof env_dir, "QDB_BACKUP_DIR=%s", bdir);
    snprintf(waldir, sizeof waldir, "%s/wal_src/wal", bdir);
    const char *env[] = {env_dir, "QDB_BACKUP_STATUS_CRON=off", "QDB_JOB_BACKOFF_BASE_MS=100",
                         "QDB_JOB_BACKOFF_MAX=1s", NULL};
    th_step("two replicas on one state store");
    CHECK(th_server_start(&a, url, env, 1) == 0, "replica A starts");
    CHECK(th_server_start(&b, url, env, 1) == 0, "replica B starts");
    if (!a.pid || !b.pid)
        goto out;
    admin = th_dev_token(&a, "admin");

    const char *names[] = {"wal_src", "wal_tgt"};
    long long *ids[] = {&src_id, &tgt_id};
    for (int i = 0; i < 2; i++) {
        snprintf(body, sizeof body,
                 "{\"environment\":\"development\",\"name\":\"%s\",\"storage_initial_gb\":1,"
                 "\"storage_max_gb\":1,\"primary\":{\"host\":\"127.0.0.1\",\"port\":%d,"
                 "\"admin_user\":\"postgres\"}}",
                 names[i], pg.port);
        CHECK(inv_call(&a, admin, "POST", "/api/v1/databases", body, &r) == 201, "%s: %ld %s",
              names[i], r.status, r.body);
        *ids[i] = (long long)json_integer_value(json_object_get(r.json, "id"));
        th_resp_free(&r);
    }

    th_step("a policy with RPO 0: exactly one replica streams its WAL");
    CHECK(inv_call(&a, admin, "POST", "/api/v1/backup-policies",
                   "{\"component\":\"test-wal\",\"method\":\"basebackup\",\"environment\":"
                   "\"development\",\"database\":\"wal_src\",\"retention_count\":3,"
                   "\"rpo_seconds\":0,\"rto_seconds\":3600}",
                   &r) == 201,
          "create: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(wait_wal(url, "state = 'streaming' AND lag_bytes = 0 AND receiver_pid IS NOT NULL",
                   30000),
          "the stream runs and has caught up");
    char slot[64];
    snprintf(slot, sizeof slot, "qdb_wal_%lld", src_id);
    CHECK(th_sql_long(src_url, "SELECT count(*) FROM pg_stat_replication WHERE application_name "
                               "= $1", slot, NULL) == 1,
          "one pg_receivewal on the source");
    CHECK(th_sql_long(src_url, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 "
                               "AND active", slot, NULL) == 1,
          "on its replication slot");
    holder = holder_is(url, &a) ? &a : holder_is(url, &b) ? &b : NULL;
    CHECK(holder != NULL, "the stream's holder is one of the two replicas");
    other = holder == &a ? &b : &a;

    th_step("the status table and the metric carry the WAL lag");
    inv_call(&a, admin, "GET", "/api/v1/backups/status", NULL, &r);
    json_t *row = NULL, *it;
    size_t i;
    json_array_foreach(json_object_get(r.json, "components"), i, it)
    {
        if (strcmp(json_string_value(json_object_get(it, "component")), "test-wal") == 0)
            row = it;
    }
    CHECK(row && json_is_number(json_object_get(row, "wal_lag_seconds")) &&
              json_is_object(json_object_get(row, "wal_stream")),
          "test-wal: wal lag and stream: %s", r.body);
    th_resp_free(&r);
    CHECK(th_metric(&a, "qdb_backup_wal_lag_seconds{component=\"test-wal\"}") >= 0,
          "qdb_backup_wal_lag_seconds of test-wal");

    char cond[300];
    json_t *res = NULL;
    th_step("a base backup of the source");
    snprintf(path, sizeof path, "/api/v1/databases/%lld/backups", src_id);
    json_t *j = post_job(&a, admin, path, "{\"method\":\"basebackup\"}", 90000);
    long long backup_id =
        j && strcmp(job_state(j), "succeeded") == 0
            ? (long long)json_integer_value(json_object_get(json_object_get(j, "result"), "backup_id"))
            : 0;
    CHECK(backup_id > 0, "base backup: %s %s", job_state(j), j ? inv_errors(j) : "");
    json_decref(j);

    th_step("verify: a file whose SHA-256 differs from the manifest's is found while unpacking");
    {
        char mpath[400], cmd[2400], sha[65] = "";
        PGresult *pr = th_sql(url, "SELECT path FROM backup WHERE id = $1::bigint",
                              (snprintf(cond, sizeof cond, "%lld", backup_id), cond), NULL);
        snprintf(mpath, sizeof mpath, "%s/backup_manifest", pr && PQntuples(pr) ? PQgetvalue(pr, 0, 0) : "");
        PQclear(pr);
        /* the manifest says another SHA-256 for global/pg_control; the catalog's checksum of
         * the manifest file is brought in line, so that only the manifest check can object */
        snprintf(cmd, sizeof cmd,
                 "cp '%s' '%s.orig' && python3 -c \"import json,sys; p=sys.argv[1]; m=json.load(open(p)); "
                 "f=[x for x in m['Files'] if x['Path']=='global/pg_control'][0]; "
                 "f['Checksum']=('0' if f['Checksum'][0]!='0' else '1')+f['Checksum'][1:]; "
                 "json.dump(m, open(p,'w'))\" '%s'", mpath, mpath, mpath);
        CHECK(system(cmd) == 0, "manifest edited");
        snprintf(cmd, sizeof cmd, "sha256sum '%s'", mpath);
        FILE *pp = popen(cmd, "r");
        if (pp) {
            if (fscanf(pp, "%64s", sha) != 1)
                sha[0] = '\0';
            pclose(pp);
        }
        struct stat mst;
        char msize[32] = "0";
        if (stat(mpath, &mst) == 0)
            snprintf(msize, sizeof msize, "%lld", (long long)mst.st_size);
        PQclear(th_sql(url, "UPDATE backup_file SET sha256 = $2, size_bytes = $3::bigint WHERE "
                            "backup_id = $1::bigint AND name = 'backup_manifest'",
                       (snprintf(cond, sizeof cond, "%lld", backup_id), cond), sha, msize, NULL));
        snprintf(path, sizeof path, "/api/v1/backups/%lld/verify", backup_id);
        j = post_job(&a, admin, path, NULL, 120000);
        const char *errs = j ? inv_errors(j) : "";
        CHECK(j && strcmp(job_state(j), "failed") == 0 && strstr(errs, "global/pg_control") &&
                  strstr(errs, "the manifest says"),
              "verification failed on global/pg_control: %s %s", job_state(j), errs);
        json_decref(j);
        /* put it back: the original manifest, its checksum in the catalog, the backup good */
        snprintf(cmd, sizeof cmd, "mv '%s.orig' '%s'", mpath, mpath);
        CHECK(system(cmd) == 0, "manifest restored");
        snprintf(cmd, sizeof cmd, "sha256sum '%s'", mpath);
        pp = popen(cmd, "r");
        if (pp) {
            if (fscanf(pp, "%64s", sha) != 1)
                sha[0] = '\0';
            pclose(pp);
        }
        if (stat(mpath, &mst) == 0)
            snprintf(msize, sizeof msize, "%lld", (long long)mst.st_size);
        PQclear(th_sql(url, "UPDATE backup_file SET sha256 = $2, size_bytes = $3::bigint WHERE "
                            "backup_id = $1::bigint AND name = 'backup_manifest'",
                       (snprintf(cond, sizeof cond, "%lld", backup_id), cond), sha, msize, NULL));
        j = post_job(&a, admin, path, NULL, 120000);
        res = j ? json_object_get(j, "result") : NULL;
        CHECK(j && strcmp(job_state(j), "succeeded") == 0 &&
                  strcmp(json_string_value(json_object_get(json_object_get(res, "checks"),
                                                           "manifest_checksums")) ?: "",
                         "ok (while unpacking)") == 0,
              "verified again, the manifest's checksums taken while unpacking: %s %s",
              job_state(j), j ? inv_errors(j) : "");
        json_decref(j);
    }

    th_step("the receiver killed: restarted, no gap in the received WAL");
    char *pid_text = wal_col(url, "receiver_pid");
    long rpid = pid_text ? strtol(pid_text, NULL, 10) : 0;
    free(pid_text);
    CHECK(rpid > 0 && kill((pid_t)rpid, SIGKILL) == 0, "killed pg_receivewal %ld", rpid);
    /* WAL written while it is down: three segments switched */
    for (int k = 0; k < 3; k++) {
        PQclear(th_sql(src_url, "INSERT INTO marks (v) SELECT 1000 * $1::int + g FROM "
                                "generate_series(1, 500) g", k == 0 ? "1" : k == 1 ? "2" : "3",
                       NULL));
        PQclear(th_sql(src_url, "SELECT pg_switch_wal()", NULL));
    }
    PGresult *lr = th_sql(src_url, "SELECT pg_current_wal_lsn()::text", NULL);
    char after[32] = "";
    if (lr && PQntuples(lr) == 1)
        snprintf(after, sizeof after, "%s", PQgetvalue(lr, 0, 0));
    PQclear(lr);
    snprintf(cond, sizeof cond,
             "restarts >= 1 AND state = 'streaming' AND receiver_pid <> %ld AND "
             "received_lsn::pg_lsn >= '%s'::pg_lsn",
             rpid, after);
    CHECK(wait_wal(url, cond, 30000), "restarted and received everything up to %s", after);
    char first[25] = "", last[25] = "";
    int nseg = 0;
    CHECK(wal_without_gap(waldir, first, last, &nseg) && nseg >= 3,
          "%d consecutive segments %s .. %s, read end to end", nseg, first, last);

    th_step("the holder replica killed: the other takes the stream over");
    th_server_kill(holder);
    snprintf(cond, sizeof cond, "state = 'streaming' AND holder LIKE '%%-%d-%%' AND lag_bytes = 0",
             (int)other->pid);
    CHECK(wait_wal(url, cond, 30000), "the other replica streams");
    /* the killed replica's receiver died with it (PR_SET_PDEATHSIG) */
    double until = th_now_ms() + 20000;
    while (th_now_ms() < until &&
           th_sql_long(src_url, "SELECT count(*) FROM pg_stat_replication WHERE "
                                "application_name = $1", slot, NULL) != 1)
        th_sleep_ms(200);
    CHECK(th_sql_long(src_url, "SELECT count(*) FROM pg_stat_replication WHERE application_name "
                               "= $1", slot, NULL) == 1,
          "still exactly one receiver");
    PQclear(th_sql(src_url, "SELECT pg_switch_wal()", NULL));
    PQclear(th_sql(src_url, "INSERT INTO marks (v) VALUES (9000)", NULL));
    PQclear(th_sql(src_url, "SELECT pg_switch_wal()", NULL));
    CHECK(wait_wal(url, "lag_bytes = 0 AND state = 'streaming'", 30000), "caught up again");
    CHECK(wal_without_gap(waldir, first, last, &nseg), "still no gap: %s .. %s", first, last);

    th_step("point-in-time restore: bad points in time are refused, nothing touched");
    /* each replica's dev issuer signs with its own key */
    admin2 = th_dev_token(other, "admin");
    const char *now_sql = "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                          "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
    PQclear(th_sql(src_url, "INSERT INTO marks (v) VALUES (-1)", NULL)); /* the first */
    PGresult *tr = th_sql(src_url, now_sql, NULL);
    char between[40] = "", after_second[40] = "";
    if (tr && PQntuples(tr) == 1)
        snprintf(between, sizeof between, "%s", PQgetvalue(tr, 0, 0));
    PQclear(tr);
    PQclear(th_sql(src_url, "INSERT INTO marks (v) VALUES (-2)", NULL)); /* the second */
    tr = th_sql(src_url, now_sql, NULL);
    if (tr && PQntuples(tr) == 1)
        snprintf(after_second, sizeof after_second, "%s", PQgetvalue(tr, 0, 0));
    PQclear(tr);
    snprintf(cond, sizeof cond, "caught_up_at > '%s'::timestamptz", after_second);
    CHECK(wait_wal(url, cond, 30000), "the stream received everything up to the second insert");
    long jobs_before = th_sql_long(url, "SELECT count(*) FROM job WHERE kind = 'backup.restore'",
                                   NULL);
    long audit_before = th_sql_long(url, "SELECT count(*) FROM audit_event", NULL);
    snprintf(path, sizeof path, "/api/v1/backups/%lld/restore", backup_id);
    struct {
        const char *pit;
        long status;
    } bad[] = {{"\"yesterday\"", 400},
               {"\"2026-13-01T00:00:00Z\"", 400},
               {"5", 400},
               {"\"2000-01-01T00:00:00Z\"", 422},
               {"\"2999-01-01T00:00:00Z\"", 422}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        snprintf(body, sizeof body, "{\"target\":%lld,\"point_in_time\":%s}", tgt_id, bad[k].pit);
        long st = inv_call(other, admin2, "POST", path, body, &r);
        CHECK(st == bad[k].status && th_is_problem(&r, st) &&
                  strcmp(inv_field(&r), "point_in_time") == 0,
              "point_in_time %s: %ld %s", bad[k].pit, st, r.body);
        th_resp_free(&r);
    }
    CHECK(th_sql_long(url, "SELECT count(*) FROM job WHERE kind = 'backup.restore'", NULL) ==
                  jobs_before &&
              th_sql_long(url, "SELECT count(*) FROM audit_event", NULL) == audit_before &&
              th_sql_long(tgt_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
                          NULL) == 0,
          "no job, no audit record, the target untouched");

    th_step("a restore to a moment between two inserts holds the first and not the second");
    snprintf(body, sizeof body, "{\"target\":%lld,\"point_in_time\":\"%s\"}", tgt_id, between);
    j = post_job(other, admin2, path, body, 180000);
    CHECK(j && strcmp(job_state(j), "succeeded") == 0, "restore to %s: %s %s", between,
          job_state(j), j ? inv_errors(j) : "");
    res = json_object_get(j, "result");
    CHECK(json_is_string(json_object_get(res, "recovered_to")) &&
              json_is_object(json_object_get(res, "row_counts")),
          "recovered_to and row counts: %s", j ? json_dumps(res, JSON_COMPACT) : "");
    json_decref(j);
    CHECK(th_sql_long(tgt_url, "SELECT count(*) FROM marks WHERE v = -1", NULL) == 1,
          "the first insert is there");
    CHECK(th_sql_long(tgt_url, "SELECT count(*) FROM marks WHERE v = -2", NULL) == 0,
          "the second is not");
    CHECK(th_sql_long(tgt_url, "SELECT count(*) FROM marks WHERE v = 9000", NULL) == 1,
          "WAL from across the receiver's restart and the failover was replayed");

    th_step("\"latest\" replays all the streamed WAL");
    snprintf(body, sizeof body, "{\"target\":%lld,\"point_in_time\":\"latest\",\"force\":true}",
             tgt_id);
    j = post_job(other, admin2, path, body, 180000);
    CHECK(j && strcmp(job_state(j), "succeeded") == 0, "restore latest: %s %s", job_state(j),
          j ? inv_errors(j) : "");
    json_decref(j);
    CHECK(th_sql_long(tgt_url, "SELECT count(*) FROM marks WHERE v IN (-1, -2)", NULL) == 2,
          "both inserts are there");

    th_step("retention keeps the streamed WAL from the oldest kept backup's stop on");
    CHECK(inv_call(other, admin2, "PATCH", "/api/v1/backup-policies/test-wal",
                   "{\"retention_count\":1}", &r) == 200,
          "retention 1: %ld %s", r.status, r.body);
    th_resp_free(&r);
    snprintf(path, sizeof path, "/api/v1/databases/%lld/backups", src_id);
    j = post_job(other, admin2, path, "{\"method\":\"basebackup\"}", 90000);
    long long second =
        j && strcmp(job_state(j), "succeeded") == 0
            ? (long long)json_integer_value(json_object_get(json_object_get(j, "result"), "backup_id"))
            : 0;
    CHECK(second > 0, "a second base backup: %s", job_state(j));
    json_decref(j);
    /* the first backup is the newest verified good one, which retention always keeps (and
     * the WAL from its stop on): verify the second, then prune */
    snprintf(path, sizeof path, "/api/v1/backups/%lld/verify", second);
    j = post_job(other, admin2, path, NULL, 120000);
    CHECK(j && strcmp(job_state(j), "succeeded") == 0, "the second backup verified: %s",
          job_state(j));
    json_decref(j);
    j = inv_run_job(other, admin2,
                    "{\"kind\":\"backup.prune\",\"args\":{\"database\":\"development/wal_src\"}}",
                    60000);
    res = j ? json_object_get(j, "result") : NULL;
    CHECK(j && strcmp(job_state(j), "succeeded") == 0 &&
              json_integer_value(json_object_get(res, "wal_segments_deleted")) > 0 &&
              json_array_size(json_object_get(res, "deleted")) == 1,
          "the prune deleted the first backup and streamed segments: %s %s", job_state(j),
          j ? inv_errors(j) : "");
    json_decref(j);
    PQclear(th_sql(src_url, "INSERT INTO marks (v) VALUES (9001)", NULL));
    PQclear(th_sql(src_url, "SELECT pg_switch_wal()", NULL));
    PQclear(th_sql(src_url, "INSERT INTO marks (v) VALUES (9002)", NULL));
    CHECK(wait_wal(url, "lag_bytes = 0 AND state = 'streaming'", 30000), "caught up");
    PGresult *sr = th_sql(url, "SELECT stop_lsn, status FROM backup WHERE id = $1::bigint",
                          second == 0 ? "0" : (snprintf(cond, sizeof cond, "%lld", second), cond),
                          NULL);
    char stopseg[25] = "";
    if (sr && PQntuples(sr) == 1) {
        unsigned hi = 0, lo = 0;
        sscanf(PQgetvalue(sr, 0, 0), "%X/%X", &hi, &lo);
        snprintf(stopseg, sizeof stopseg, "%08X%08X%08X", 1u, hi, lo >> 24);
    }
    PQclear(sr);
    CHECK(wal_without_gap(waldir, first, last, &nseg) && strcmp(first, stopseg) == 0,
          "the streamed WAL now begins at the kept backup's stop segment %s: %s .. %s", stopseg,
          first, last);
    CHECK(th_sql_long(url, "SELECT count(*) FROM backup WHERE status = 'pruned' AND id = $1::bigint",
                      (snprintf(cond, sizeof cond, "%lld", backup_id), cond), NULL) == 1,
          "the first backup was pruned");

    th_step("a clean stop: the stream is marked stopped, no receiver is left");
    CHECK(th_server_stop(other) == 0, "the replica stops cleanly");
    CHECK(wait_wal(url, "state = 'stopped'", 10000), "the stream row says stopped");
    CHECK(th_sql_long(src_url, "SELECT count(*) FROM pg_stat_replication WHERE application_name "
                               "= $1", slot, NULL) == 0,
          "no receiver on the source");

out:
    th_server_kill(&a);
    th_server_kill(&b);
    th_pg_private_destroy(&pg);
    free(admin);
    free(admin2);
    free(src_url);
    free(tgt_url);
    th_db_drop(url);
    free(url);
    return th_done();
}
