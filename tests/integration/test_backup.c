/* The backup room against a real PostgreSQL server of its own (a private cluster), seeded
 * with pgbench data and registered through the inventory API: the seeded 7.1 policies and
 * their schedules, policy CRUD keeping the engine's schedules in step, a base backup whose
 * test restore starts and counts the rows, one flipped byte that marks a backup bad, a dump
 * restored with equal counts, a restore into another database, retention that keeps the
 * last verified good backup when every newer one is bad, an offsite copy, the RPO/RTO
 * table with a report and a breach event, and bad input that changes nothing; inside the
 * archive, a pax archive, a changed member and a member that climbs out; a tablespace
 * verified from its own archive after the source's folder is gone. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backup/backup_internal.h"
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

/* POST and wait for the 202's job to end; the job (new) or NULL. */
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

static const char *job_state(const json_t *j)
{
    const char *s = json_string_value(json_object_get(j, "state"));
    return s ? s : "(none)";
}

static long long result_int(const json_t *job, const char *key)
{
    return (long long)json_integer_value(json_object_get(json_object_get(job, "result"), key));
}

/* Take a base backup of database db_id; its backup id or 0. */
static long long base_backup(const struct th_server *s, const char *tok, long long db_id)
{
    char path[96];
    snprintf(path, sizeof path, "/api/v1/databases/%lld/backups", db_id);
    json_t *j = post_job(s, tok, path, "{\"method\":\"basebackup\"}", 90000);
    long long id = j && strcmp(job_state(j), "succeeded") == 0 ? result_int(j, "backup_id") : 0;
    if (!id)
        fprintf(stderr, "base backup: %s %s\n", job_state(j), j ? inv_errors(j) : "");
    json_decref(j);
    return id;
}

static json_t *get_backup(const struct th_server *s, const char *tok, long long id)
{
    char path[64];
    struct th_resp r;
    snprintf(path, sizeof path, "/api/v1/backups/%lld", id);
    inv_call(s, tok, "GET", path, NULL, &r);
    json_t *j = r.status == 200 ? json_incref(r.json) : NULL;
    th_resp_free(&r);
    return j;
}

static const char *str_of(const json_t *j, const char *k)
{
    const char *v = json_string_value(json_object_get(j, k));
    return v ? v : "";
}

/* Flip the byte at `at` of an open file. 0 or -1. */
static int flip_at(int fd, off_t at)
{
    unsigned char b;
    if (pread(fd, &b, 1, at) != 1)
        return -1;
    b ^= 0xff;
    return pwrite(fd, &b, 1, at) == 1 ? 0 : -1;
}

/* dir/name opened for reading and writing, or -1. */
static int open_rw(const char *dir, const char *name)
{
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return open(path, O_RDWR);
}

/* Flip one byte in the middle of a backup's file. */
static int flip_byte(const char *dir, const char *name)
{
    int fd = open_rw(dir, name);
    if (fd < 0)
        return -1;
    int rc = flip_at(fd, lseek(fd, 0, SEEK_END) / 2);
    close(fd);
    return rc;
}

/* The catalog's size and SHA-256 of a backup's base.tar.gz, set to the file's as it is now
 * (so that only what lies inside the archive can tell a change). 0 or -1. */
static int catalog_resum(const char *url, long long id, const char *dir)
{
    char path[700], hex[65], size[24], bid[24];
    int64_t n = 0;
    snprintf(path, sizeof path, "%s/base.tar.gz", dir);
    if (bk_sha256_file(path, hex, &n) != 0)
        return -1;
    snprintf(size, sizeof size, "%lld", (long long)n);
    snprintf(bid, sizeof bid, "%lld", id);
    PGresult *res = th_sql(url, "UPDATE backup_file SET sha256 = $1, size_bytes = $2::bigint "
                                "WHERE backup_id = $3::bigint AND name = 'base.tar.gz'",
                           hex, size, bid, NULL);
    int ok = res && strtol(PQcmdTuples(res), NULL, 10) == 1;
    PQclear(res);
    return ok ? 0 : -1;
}

/* In the uncompressed archive dir/name, one byte flipped in the middle of the first
 * member under base/ of at least 8 kB (a table's file). 0 or -1. */
static int flip_member(const char *dir, const char *name)
{
    int fd = open_rw(dir, name);
    if (fd < 0)
        return -1;
    unsigned char h[512];
    off_t at = 0;
    int rc = -1;
    while (pread(fd, h, sizeof h, at) == (ssize_t)sizeof h && h[0]) {
        unsigned long long size = strtoull((const char *)h + 124, NULL, 8);
        if ((h[156] == '0' || h[156] == 0) && size >= 8192 && strncmp((char *)h, "base/", 5) == 0) {
            rc = flip_at(fd, at + 512 + (off_t)size / 2);
            break;
        }
        at += 512 + (off_t)((size + 511) / 512 * 512);
    }
    close(fd);
    return rc;
}

/* One ustar member header at h: a regular file of `size` bytes, or (type '2') a symbolic
 * link to `link`. */
static void tar_header(unsigned char *h, const char *name, char type, const char *link,
                       unsigned size)
{
    memset(h, 0, 512);
    snprintf((char *)h, 100, "%s", name);
    memcpy(h + 100, "0000600", 8);
    memcpy(h + 108, "0000000", 8);
    memcpy(h + 116, "0000000", 8);
    snprintf((char *)h + 124, 12, "%011o", size);
    memcpy(h + 136, "00000000000", 12);
    h[156] = (unsigned char)type;
    if (link)
        snprintf((char *)h + 157, 100, "%s", link);
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
}

/* dir/t.tar, the end blocks after: a member ../../../escape; with `link_to`, first a
 * symbolic link named "\xff" (not UTF-8) to link_to, then a member under it. 0 or -1. */
static int write_escape_tar(const char *dir, const char *link_to)
{
    unsigned char block[4 * 512 + 1024] = {0};
    size_t n = 0;
    if (link_to) {
        tar_header(block, "\xff", '2', link_to, 0);
        tar_header(block + 512, "\xff/escape", '0', NULL, 3);
    } else {
        tar_header(block, "../../../escape", '0', NULL, 3);
    }
    n = link_to ? 1024 : 512;
    memcpy(block + n, "hi\n", 3);
    n += 512 + 1024;
    char path[700];
    snprintf(path, sizeof path, "%s/t.tar", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int rc = fwrite(block, 1, n, f) == n ? 0 : -1;
    return fclose(f) != 0 ? -1 : rc;
}

static long long verify(const struct th_server *s, const char *tok, long long id, const char *want)
{
    char path[80];
    snprintf(path, sizeof path, "/api/v1/backups/%lld/verify", id);
    json_t *j = post_job(s, tok, path, NULL, 120000);
    int ok = j && strcmp(job_state(j), want) == 0;
    if (!ok)
        fprintf(stderr, "verify %lld: %s (wanted %s) %s\n", id, job_state(j), want,
                j ? inv_errors(j) : "");
    json_decref(j);
    return ok;
}

/* verify(), then the backup (*b, new) and its newest verification (*v, borrowed from *b). */
static int verify_seen(const struct th_server *s, const char *admin, const char *viewer,
                       long long id, const char *want, json_t **b, json_t **v)
{
    int ok = verify(s, admin, id, want);
    *b = get_backup(s, viewer, id);
    *v = json_array_get(json_object_get(*b, "verifications"), 0);
    return ok;
}

int main(void)
{
    char *url = th_db_create("backup");
    struct th_pg pg = {0};
    struct th_server srv = {0};
    char *admin = NULL, *viewer = NULL, *main_url = NULL, *target_url = NULL, *full_url = NULL;
    char bdir[300], offsite[340], env_dir[400], env_off[400], body[2048], path[1024], port[16];
    struct th_resp r;
    long long main_id = 0, target_id = 0, full_id = 0;

    th_step("a second PostgreSQL server with a pgbench database (scale 1)");
    CHECK(th_pg_private_start(&pg) == 0, "private cluster starts");
    main_url = th_pg_private_db(&pg, "bk_main");
    target_url = th_pg_private_db(&pg, "bk_target");
    full_url = th_pg_private_db(&pg, "bk_full");
    snprintf(port, sizeof port, "%d", pg.port);
    const char *bench[] = {PG_BIN "/pgbench", "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p",
                           port, "-U", "postgres", "bk_main", NULL};
    CHECK(run(bench) == 0, "pgbench -i -s 1");
    CHECK(th_sql_long(main_url, "SELECT count(*) FROM pgbench_accounts", NULL) == 100000,
          "100000 accounts");
    PQclear(th_sql(full_url, "CREATE TABLE keep_me (v int)", NULL));
    PQclear(th_sql(full_url, "INSERT INTO keep_me VALUES (42)", NULL));

    snprintf(bdir, sizeof bdir, "%s/backups", pg.dir);
    snprintf(offsite, sizeof offsite, "%s/offsite", pg.dir);
    mkdir(bdir, 0700);
    mkdir(offsite, 0700);
    snprintf(env_dir, sizeof env_dir, "QDB_BACKUP_DIR=%s", bdir);
    snprintf(env_off, sizeof env_off, "QDB_BACKUP_OFFSITE_DIR=%s", offsite);
    const char *env[] = {env_dir, env_off, "QDB_BACKUP_STATUS_CRON=off",
                         "QDB_JOB_BACKOFF_BASE_MS=100", "QDB_JOB_BACKOFF_MAX=1s", NULL};
    CHECK(th_server_start(&srv, url, env, 1) == 0, "server starts");
    if (!srv.pid)
        goto out;
    admin = th_dev_token(&srv, "admin");
    viewer = th_dev_token(&srv, "viewer");

    th_step("the databases registered through the inventory API");
    const char *names[] = {"bk_main", "bk_target", "bk_full"};
    long long *ids[] = {&main_id, &target_id, &full_id};
    for (int i = 0; i < 3; i++) {
        snprintf(body, sizeof body,
                 "{\"environment\":\"development\",\"name\":\"%s\",\"storage_initial_gb\":1,"
                 "\"storage_max_gb\":1,\"primary\":{\"host\":\"127.0.0.1\",\"port\":%d,"
                 "\"admin_user\":\"postgres\"}}",
                 names[i], pg.port);
        CHECK(inv_call(&srv, admin, "POST", "/api/v1/databases", body, &r) == 201, "%s: %ld %s",
              names[i], r.status, r.body);
        *ids[i] = (long long)json_integer_value(json_object_get(r.json, "id"));
        th_resp_free(&r);
    }

    th_step("the seeded policies of 7.1 and their schedules on the job engine");
    inv_call(&srv, viewer, "GET", "/api/v1/backup-policies", NULL, &r);
    CHECK(r.status == 200 && json_array_size(json_object_get(r.json, "items")) == 10,
          "ten components: %s", r.body);
    th_resp_free(&r);
    inv_call(&srv, viewer, "GET", "/api/v1/backup-policies/audit", NULL, &r);
    CHECK(strcmp(str_of(r.json, "method"), "basebackup") == 0 &&
              json_integer_value(json_object_get(r.json, "retention_days")) == 2557 &&
              json_integer_value(json_object_get(r.json, "rto_seconds")) == 14400 &&
              strcmp(str_of(r.json, "offsite_schedule"), "0 4 * * 0") == 0,
          "audit: 7 years, RTO 4 h, weekly offsite: %s", r.body);
    th_resp_free(&r);
    CHECK(th_sql_long(url, "SELECT count(*) FROM schedule WHERE name IN ('backup.mpi.base', "
                           "'backup.keycloak.dump', 'backup.audit.offsite', 'backup.mpi.verify') "
                           "AND enabled", NULL) == 4,
          "the seeded policies' schedules exist");

    th_step("bad policies: 4xx problem+json, nothing written");
    long policies_before = th_sql_long(url, "SELECT count(*) FROM backup_policy", NULL);
    long schedules_before = th_sql_long(url, "SELECT count(*) FROM schedule", NULL);
    long audit_before = th_sql_long(url, "SELECT count(*) FROM audit_event", NULL);
    static const char *const bad[][2] = {
        {"{\"component\":\"t0\",\"method\":\"basebackup\",\"environment\":\"development\","
         "\"database\":\"bk_main\",\"retention_count\":0,\"rpo_seconds\":60,\"rto_seconds\":60}",
         "retention_count"},
        {"{\"component\":\"t1\",\"method\":\"basebackup\",\"environment\":\"development\","
         "\"database\":\"nowhere\",\"retention_count\":2,\"rpo_seconds\":60,\"rto_seconds\":60}",
         "database"},
        {"{\"component\":\"t2\",\"method\":\"basebackup\",\"environment\":\"development\","
         "\"database\":\"bk_main\",\"retention_count\":2,\"rpo_seconds\":60,\"rto_seconds\":60,"
         "\"schedule\":\"61 * * * *\"}",
         "schedule"},
        {"{\"component\":\"t3\",\"method\":\"basebackup\",\"environment\":\"development\","
         "\"database\":\"bk_main\",\"rpo_seconds\":60,\"rto_seconds\":60}",
         "retention_count"},
        {"{\"component\":\"Bad!\",\"method\":\"dump\",\"rpo_seconds\":60,\"rto_seconds\":60}",
         "component"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long st = inv_call(&srv, admin, "POST", "/api/v1/backup-policies", bad[i][0], &r);
        CHECK(st >= 400 && st < 500 && th_is_problem(&r, st) && strcmp(inv_field(&r), bad[i][1]) == 0,
              "bad policy %zu: %ld %s", i, st, r.body);
        th_resp_free(&r);
    }
    CHECK(th_sql_long(url, "SELECT count(*) FROM backup_policy", NULL) == policies_before &&
              th_sql_long(url, "SELECT count(*) FROM schedule", NULL) == schedules_before &&
              th_sql_long(url, "SELECT count(*) FROM audit_event", NULL) == audit_before,
          "no policy, schedule or audit record was written");

    th_step("policy CRUD keeps the engine's schedules in step");
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/backup-policies",
                   "{\"component\":\"test-main\",\"method\":\"basebackup\",\"environment\":"
                   "\"development\",\"database\":\"bk_main\",\"schedule\":\"0 3 * * *\","
                   "\"verify_schedule\":\"0 4 1 * *\",\"retention_count\":2,\"rpo_seconds\":"
                   "86400,\"rto_seconds\":3600,\"tables\":[\"pgbench_accounts\","
                   "\"pgbench_branches\"]}",
                   &r) == 201,
          "create: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(th_sql_long(url, "SELECT count(*) FROM schedule WHERE name = 'backup.test-main.base' "
                           "AND cron = '0 3 * * *' AND kind = 'backup.base' AND args->>'database' "
                           "= 'development/bk_main'", NULL) == 1,
          "its base schedule");
    CHECK(inv_call(&srv, admin, "PATCH", "/api/v1/backup-policies/test-main",
                   "{\"schedule\":\"15 3 * * *\",\"verify_schedule\":null}", &r) == 200,
          "patch: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(th_sql_long(url, "SELECT count(*) FROM schedule WHERE name = 'backup.test-main.base' "
                           "AND cron = '15 3 * * *'", NULL) == 1 &&
              th_sql_long(url, "SELECT count(*) FROM schedule WHERE name = "
                               "'backup.test-main.verify'", NULL) == 0,
          "cron changed, verify schedule removed");
    CHECK(inv_status(&srv, admin, "PATCH", "/api/v1/backup-policies/test-main",
                     "{\"method\":\"dump\"}") == 400,
          "the method cannot change");
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/backup-policies",
                   "{\"component\":\"test-dump\",\"method\":\"dump\",\"environment\":"
                   "\"development\",\"database\":\"bk_main\",\"schedule\":\"0 5 * * *\","
                   "\"retention_days\":30,\"rpo_seconds\":86400,\"rto_seconds\":3600}",
                   &r) == 201,
          "dump policy: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/backup-policies",
                   "{\"component\":\"test-gone\",\"method\":\"dump\",\"environment\":"
                   "\"development\",\"database\":\"bk_full\",\"schedule\":\"0 5 * * *\","
                   "\"retention_days\":30,\"rpo_seconds\":86400,\"rto_seconds\":3600}",
                   &r) == 201,
          "another: %ld", r.status);
    th_resp_free(&r);
    CHECK(inv_status(&srv, admin, "DELETE", "/api/v1/backup-policies/test-gone", NULL) == 204,
          "delete");
    CHECK(th_sql_long(url, "SELECT count(*) FROM schedule WHERE name LIKE 'backup.test-gone.%'",
                      NULL) == 0,
          "its schedules are gone with it");
    CHECK(inv_status(&srv, admin, "DELETE", "/api/v1/backup-policies/test-gone", NULL) == 404,
          "a second delete is 404");

    th_step("a base backup: files, checksums, LSNs");
    CHECK(inv_status(&srv, admin, "POST", "/api/v1/databases/999999/backups", "{}") == 404,
          "an unknown database is 404");
    long long b1 = base_backup(&srv, admin, main_id);
    CHECK(b1 > 0, "backup 1");
    json_t *b = get_backup(&srv, viewer, b1);
    json_t *files = json_object_get(b, "files");
    int names_ok = 0;
    size_t i;
    json_t *f;
    json_array_foreach(files, i, f)
    {
        const char *n = str_of(f, "name");
        if ((strcmp(n, "base.tar.gz") == 0 || strcmp(n, "pg_wal.tar.gz") == 0 ||
             strcmp(n, "backup_manifest") == 0) &&
            strlen(str_of(f, "sha256")) == 64 && json_integer_value(json_object_get(f, "size_bytes")) > 0)
            names_ok++;
    }
    CHECK(b && strcmp(str_of(b, "status"), "completed") == 0 && names_ok == 3 &&
              str_of(b, "start_lsn")[0] && str_of(b, "stop_lsn")[0] &&
              json_integer_value(json_object_get(b, "timeline")) == 1 &&
              json_integer_value(json_object_get(b, "size_bytes")) > 0,
          "completed with three checksummed files and its WAL range: %s",
          b ? json_dumps(b, JSON_COMPACT) : "");
    char b1_dir[600];
    snprintf(b1_dir, sizeof b1_dir, "%s", str_of(b, "path"));
    json_decref(b);
    snprintf(path, sizeof path, "%s/bk_main/%lld/base.tar.gz", bdir, b1);
    CHECK(access(path, R_OK) == 0, "in QDB_BACKUP_DIR/<database>/<id>/");

    th_step("verify: pg_verifybackup, a test restore that starts and counts the rows");
    CHECK(verify(&srv, admin, b1, "succeeded"), "verification of backup 1");
    b = get_backup(&srv, viewer, b1);
    json_t *v = json_array_get(json_object_get(b, "verifications"), 0);
    json_t *counts = json_object_get(json_object_get(v, "checks"), "row_counts");
    CHECK(strcmp(str_of(b, "status"), "verified") == 0 &&
              json_number_value(json_object_get(b, "restore_seconds")) > 0 &&
              json_integer_value(json_object_get(counts, "public.pgbench_accounts")) == 100000 &&
              json_integer_value(json_object_get(counts, "public.pgbench_branches")) == 1 &&
              strcmp(str_of(json_object_get(v, "checks"), "amcheck"), "ok") == 0 &&
              strcmp(str_of(json_object_get(v, "checks"), "pg_verifybackup"), "ok") == 0,
          "verified, restore time measured, 100000 rows counted: %s",
          b ? json_dumps(b, JSON_COMPACT) : "");
    json_decref(b);
    snprintf(path, sizeof path, "%s/.scratch", bdir);
    CHECK(th_sql_long(url, "SELECT count(*) FROM outbox WHERE event->>'type' = "
                           "'qa.qdb.controlplane.backup.verified'", NULL) == 1,
          "a verified event");

    th_step("one byte flipped: verification fails and the backup is marked bad");
    long long b2 = base_backup(&srv, admin, main_id);
    CHECK(b2 > 0, "backup 2");
    snprintf(path, sizeof path, "%s/bk_main/%lld", bdir, b2);
    CHECK(flip_byte(path, "base.tar.gz") == 0, "flip a byte of base.tar.gz");
    CHECK(verify(&srv, admin, b2, "failed"), "verification of backup 2 fails");
    b = get_backup(&srv, viewer, b2);
    v = json_array_get(json_object_get(b, "verifications"), 0);
    CHECK(strcmp(str_of(b, "status"), "bad") == 0 && json_is_false(json_object_get(v, "ok")) &&
              strstr(str_of(v, "detail"), "SHA-256"),
          "bad, saying which file: %s", b ? json_dumps(b, JSON_COMPACT) : "");
    json_decref(b);

    th_step("restore: refused onto the source, onto a non-empty target, of a bad backup");
    long restores_before =
        th_sql_long(url, "SELECT count(*) FROM job WHERE kind = 'backup.restore'", NULL);
    audit_before = th_sql_long(url, "SELECT count(*) FROM audit_event", NULL);
    snprintf(path, sizeof path, "/api/v1/backups/%lld/restore", b1);
    snprintf(body, sizeof body, "{\"target\":%lld}", main_id);
    CHECK(inv_call(&srv, admin, "POST", path, body, &r) == 409 && th_is_problem(&r, 409),
          "onto its source: %ld %s", r.status, r.body);
    th_resp_free(&r);
    snprintf(body, sizeof body, "{\"target\":%lld}", full_id);
    CHECK(inv_call(&srv, admin, "POST", path, body, &r) == 409 && th_is_problem(&r, 409) &&
              strstr(r.body, "force"),
          "a non-empty target without force: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(inv_status(&srv, admin, "POST", path, "{\"target\":987654}") == 422,
          "an unknown target");
    snprintf(path, sizeof path, "/api/v1/backups/%lld/restore", b2);
    snprintf(body, sizeof body, "{\"target\":%lld}", target_id);
    CHECK(inv_status(&srv, admin, "POST", path, body) == 409, "a bad backup");
    CHECK(inv_status(&srv, admin, "POST", "/api/v1/backups/999999/verify", NULL) == 404,
          "verify of an unknown backup");
    CHECK(th_sql_long(url, "SELECT count(*) FROM job WHERE kind = 'backup.restore'", NULL) ==
                  restores_before &&
              th_sql_long(url, "SELECT count(*) FROM audit_event", NULL) == audit_before &&
              th_sql_long(full_url, "SELECT v FROM keep_me", NULL) == 42,
          "no job, no audit record, the target untouched");

    th_step("restore backup 1 into an empty database");
    snprintf(path, sizeof path, "/api/v1/backups/%lld/restore", b1);
    snprintf(body, sizeof body, "{\"target\":%lld}", target_id);
    json_t *j = post_job(&srv, admin, path, body, 120000);
    CHECK(j && strcmp(job_state(j), "succeeded") == 0, "restore: %s %s", job_state(j),
          j ? inv_errors(j) : "");
    json_decref(j);
    CHECK(th_sql_long(target_url, "SELECT count(*) FROM pgbench_accounts", NULL) == 100000,
          "the target holds the 100000 accounts");

    th_step("dump -> restore-verify -> equal row counts");
    snprintf(path, sizeof path, "/api/v1/databases/%lld/backups", main_id);
    j = post_job(&srv, admin, path, "{\"method\":\"dump\"}", 90000);
    long long d1 = j && strcmp(job_state(j), "succeeded") == 0 ? result_int(j, "backup_id") : 0;
    CHECK(d1 > 0 &&
              json_integer_value(json_object_get(
                  json_object_get(json_object_get(j, "result"), "row_counts"),
                  "public.pgbench_accounts")) == 100000,
          "dump with its row counts: %s %s", job_state(j), j ? inv_errors(j) : "");
    json_decref(j);
    CHECK(verify(&srv, admin, d1, "succeeded"), "the dump restores with equal counts");
    b = get_backup(&srv, viewer, d1);
    CHECK(strcmp(str_of(b, "status"), "verified") == 0 && strcmp(str_of(b, "policy"), "test-dump") == 0,
          "verified, under its policy: %s", b ? json_dumps(b, JSON_COMPACT) : "");
    json_decref(b);

    th_step("inside the archive: a member unpacked by tar, a changed member, a way out");
    long long b3 = base_backup(&srv, admin, main_id);
    CHECK(b3 > 0, "backup 3");
    char b3_dir[600];
    snprintf(b3_dir, sizeof b3_dir, "%s/bk_main/%lld", bdir, b3);
    /* pax headers (tar --format=posix gives every member one): not this unpacker's to
     * write, so tar unpacks the archive and pg_verifybackup checks every checksum */
    CHECK(th_sh("cd '%s' && mkdir x && tar -xzf base.tar.gz -C x && cp base.tar.gz orig.tar.gz && "
             "tar --format=posix -czf base.tar.gz -C x . && rm -rf x", b3_dir) == 0 &&
              catalog_resum(url, b3, b3_dir) == 0,
          "base.tar.gz of backup 3 repacked in pax format, the catalog's SHA-256 updated");
    CHECK(verify_seen(&srv, admin, viewer, b3, "succeeded", &b, &v), "a pax archive verifies");
    CHECK(strcmp(str_of(json_object_get(v, "checks"), "manifest_checksums"),
                 "left to pg_verifybackup") == 0 &&
              strcmp(str_of(json_object_get(v, "checks"), "pg_verifybackup"), "ok") == 0,
          "through tar and a full pg_verifybackup: %s", b ? json_dumps(v, JSON_COMPACT) : "");
    json_decref(b);
    /* one byte of one table's file changed, and the catalog told the new archive's SHA-256:
     * only the manifest's own checksum of that file can tell */
    CHECK(th_sh("cd '%s' && gzip -dc orig.tar.gz > t.tar", b3_dir) == 0 &&
              flip_member(b3_dir, "t.tar") == 0 &&
              th_sh("cd '%s' && gzip -c t.tar > base.tar.gz && rm t.tar", b3_dir) == 0 &&
              catalog_resum(url, b3, b3_dir) == 0,
          "a byte of a table's file changed inside base.tar.gz");
    CHECK(verify_seen(&srv, admin, viewer, b3, "failed", &b, &v),
          "a changed member fails verification");
    CHECK(strcmp(str_of(b, "status"), "bad") == 0 &&
              strstr(str_of(v, "detail"), "the manifest says") &&
              strstr(str_of(v, "detail"), "base/"),
          "bad, naming the member: %s", b ? json_dumps(v, JSON_COMPACT) : "");
    json_decref(b);
    /* a member named ../../../escape would land in QDB_BACKUP_DIR itself */
    CHECK(write_escape_tar(b3_dir, NULL) == 0 &&
              th_sh("cd '%s' && gzip -c t.tar > base.tar.gz && rm t.tar", b3_dir) == 0 &&
              catalog_resum(url, b3, b3_dir) == 0,
          "an archive whose member climbs out of the restore folder");
    CHECK(verify_seen(&srv, admin, viewer, b3, "failed", &b, &v), "it fails verification");
    snprintf(path, sizeof path, "%s/escape", bdir);
    CHECK(strstr(str_of(v, "detail"), "outside the restore folder") && access(path, F_OK) != 0,
          "refused before anything was written outside: %s", b ? json_dumps(v, JSON_COMPACT) : "");
    json_decref(b);
    /* a link of the archive (its name not UTF-8) to QDB_BACKUP_DIR, then a member under it:
     * the link itself is refused; and with a link that stays inside ("."), the member
     * under it */
    const char *targets[] = {bdir, "."};
    for (int t = 0; t < 2; t++) {
        CHECK(write_escape_tar(b3_dir, targets[t]) == 0 &&
                  th_sh("cd '%s' && gzip -c t.tar > base.tar.gz && rm t.tar", b3_dir) == 0 &&
                  catalog_resum(url, b3, b3_dir) == 0,
              "an archive with a symbolic link to %s and a member under it", targets[t]);
        CHECK(verify_seen(&srv, admin, viewer, b3, "failed", &b, &v), "it fails verification");
        CHECK(strstr(str_of(v, "detail"), t == 0 ? "links outside the restore folder"
                                                 : "would be written outside the restore folder") &&
                  access(path, F_OK) != 0,
              "refused, nothing written through the link: %s",
              b ? json_dumps(v, JSON_COMPACT) : "");
        json_decref(b);
    }
    CHECK(th_sh("rm '%s/orig.tar.gz'", b3_dir) == 0, "the original archive removed");

    th_step("retention keeps 2 and the last verified good one when all newer are bad");
    long long b4 = base_backup(&srv, admin, main_id);
    CHECK(b4 > 0, "backup 4");
    snprintf(path, sizeof path, "%s/bk_main/%lld", bdir, b4);
    flip_byte(path, "base.tar.gz");
    CHECK(verify(&srv, admin, b4, "failed"), "backup %lld is bad", b4);
    j = inv_run_job(&srv, admin,
                    "{\"kind\":\"backup.prune\",\"args\":{\"database\":\"development/bk_main\"}}",
                    60000);
    CHECK(j && strcmp(job_state(j), "succeeded") == 0, "prune: %s %s", job_state(j),
          j ? inv_errors(j) : "");
    char *res_text = j ? json_dumps(json_object_get(j, "result"), JSON_COMPACT) : NULL;
    CHECK(res_text && strstr(res_text, "the newest verified good backup"),
          "it says why it kept backup 1: %s", res_text ? res_text : "");
    free(res_text);
    json_decref(j);
    b = get_backup(&srv, viewer, b1);
    CHECK(strcmp(str_of(b, "status"), "verified") == 0 && access(b1_dir, F_OK) == 0,
          "backup 1 is kept, files and all");
    json_decref(b);
    b = get_backup(&srv, viewer, b2);
    snprintf(path, sizeof path, "%s/bk_main/%lld", bdir, b2);
    CHECK(strcmp(str_of(b, "status"), "pruned") == 0 && strstr(str_of(b, "prune_reason"), "newest 2") &&
              access(path, F_OK) != 0,
          "backup 2 is deleted, saying why: %s", b ? json_dumps(b, JSON_COMPACT) : "");
    json_decref(b);
    CHECK(th_sql_long(url, "SELECT count(*) FROM backup WHERE database_id = $1::bigint AND "
                           "method = 'basebackup' AND status <> 'pruned'",
                      (snprintf(body, sizeof body, "%lld", main_id), body), NULL) == 3,
          "b1, b3, b4 remain");

    th_step("a tablespace: unpacked into the scratch folder, never the source's");
    char ts_dir[400];
    snprintf(ts_dir, sizeof ts_dir, "%s/tablespace", pg.dir);
    CHECK(th_sh("mkdir -p '%s' && { [ \"$(id -u)\" != 0 ] || chown postgres '%s'; }", ts_dir,
                ts_dir) == 0,
          "a folder for it");
    snprintf(body, sizeof body, "CREATE TABLESPACE bk_ts LOCATION '%s'", ts_dir);
    PQclear(th_sql(main_url, body, NULL));
    PQclear(th_sql(main_url, "CREATE TABLE spaced (v int) TABLESPACE bk_ts", NULL));
    PQclear(th_sql(main_url, "INSERT INTO spaced SELECT generate_series(1, 1000)", NULL));
    long long b5 = base_backup(&srv, admin, main_id);
    snprintf(path, sizeof path, "%s/bk_main/%lld", bdir, b5);
    CHECK(b5 > 0 && th_sh("ls '%s' | grep -q '^[0-9]*[.]tar[.]gz$'", path) == 0,
          "backup %lld holds the tablespace's own archive", b5);
    /* the source's tablespace folder goes: a test restore that opened it would fail */
    PQclear(th_sql(main_url, "DROP TABLE spaced", NULL));
    PQclear(th_sql(main_url, "DROP TABLESPACE bk_ts", NULL));
    CHECK(th_sh("rm -rf '%s'", ts_dir) == 0, "the source's tablespace folder removed");
    /* the policy names the table for the test restore to count, for this verification */
    CHECK(inv_status(&srv, admin, "PATCH", "/api/v1/backup-policies/test-main",
                     "{\"tables\":[\"pgbench_accounts\",\"spaced\"]}") == 200,
          "the policy counts spaced");
    CHECK(verify_seen(&srv, admin, viewer, b5, "succeeded", &b, &v),
          "a backup with a tablespace verifies");
    CHECK(inv_status(&srv, admin, "PATCH", "/api/v1/backup-policies/test-main",
                     "{\"tables\":[\"pgbench_accounts\",\"pgbench_branches\"]}") == 200,
          "and no longer");
    CHECK(json_integer_value(json_object_get(json_object_get(json_object_get(v, "checks"),
                                                             "row_counts"),
                                             "public.spaced")) == 1000 &&
              access(ts_dir, F_OK) != 0,
          "its table counted from the unpacked tablespace, the source's folder untouched: %s",
          b ? json_dumps(v, JSON_COMPACT) : "");
    json_decref(b);
    /* and restored into another database of a server without that tablespace (the same
     * server, whose bk_ts is gone): the data, not the source's layout */
    snprintf(path, sizeof path, "/api/v1/backups/%lld/restore", b5);
    snprintf(body, sizeof body, "{\"target\":%lld,\"force\":true}", target_id);
    j = post_job(&srv, admin, path, body, 120000);
    CHECK(j && strcmp(job_state(j), "succeeded") == 0, "restore of backup %lld: %s %s", b5,
          job_state(j), j ? inv_errors(j) : "");
    json_decref(j);
    CHECK(th_sql_long(target_url, "SELECT count(*) FROM spaced", NULL) == 1000 &&
              th_sql_long(target_url, "SELECT count(*) FROM pg_tables WHERE tablename = "
                                      "'spaced' AND tablespace IS NULL", NULL) == 1,
          "the target holds spaced's 1000 rows, in its default tablespace");

    th_step("an offsite copy, checked there");
    snprintf(body, sizeof body, "{\"kind\":\"backup.offsite\",\"args\":{\"backup\":%lld}}", b1);
    j = inv_run_job(&srv, admin, body, 60000);
    CHECK(j && strcmp(job_state(j), "succeeded") == 0, "offsite: %s %s", job_state(j),
          j ? inv_errors(j) : "");
    json_decref(j);
    snprintf(path, sizeof path, "%s/bk_main/%lld/base.tar.gz", offsite, b1);
    CHECK(access(path, R_OK) == 0, "the copy is in QDB_BACKUP_OFFSITE_DIR");

    th_step("the RPO/RTO table: all ten components, a report, a breach event");
    CHECK(inv_status(&srv, admin, "POST", "/api/v1/backups/reports",
                     "{\"component\":\"nothing\",\"started_at\":\"2026-01-01T00:00:00Z\","
                     "\"finished_at\":\"2026-01-01T00:01:00Z\",\"ok\":true}") == 422,
          "a report for an unknown component");
    CHECK(inv_status(&srv, admin, "POST", "/api/v1/backups/reports",
                     "{\"component\":\"vault\",\"started_at\":\"2026-01-01T00:02:00Z\","
                     "\"finished_at\":\"2026-01-01T00:01:00Z\",\"ok\":true}") == 400,
          "a report that ends before it starts");
    char now[40];
    time_t t = time(NULL);
    strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    snprintf(body, sizeof body,
             "{\"component\":\"vault\",\"started_at\":\"%s\",\"finished_at\":\"%s\",\"ok\":true,"
             "\"size_bytes\":1234,\"restore_seconds\":60,\"detail\":\"raft snapshot\"}",
             now, now);
    CHECK(inv_status(&srv, admin, "POST", "/api/v1/backups/reports", body) == 201, "vault reports");
    inv_call(&srv, viewer, "GET", "/api/v1/backups/status", NULL, &r);
    json_t *rows = json_object_get(r.json, "components");
    const char *seeded[] = {"mpi", "read-store", "audit", "keycloak", "openfga", "kafka",
                            "opensearch", "minio", "vault", "etcd"};
    int found = 0;
    const char *vault_state = "", *kafka_state = "", *main_state = "";
    json_array_foreach(rows, i, f)
    {
        for (int k = 0; k < 10; k++)
            if (strcmp(str_of(f, "component"), seeded[k]) == 0)
                found++;
        if (strcmp(str_of(f, "component"), "vault") == 0)
            vault_state = str_of(f, "state");
        if (strcmp(str_of(f, "component"), "kafka") == 0)
            kafka_state = str_of(f, "state");
        if (strcmp(str_of(f, "component"), "test-main") == 0)
            main_state = str_of(f, "state");
    }
    CHECK(r.status == 200 && found == 10, "all ten components of 7.1: %s", r.body);
    CHECK(strcmp(vault_state, "ok") == 0 && strcmp(kafka_state, "breach") == 0 &&
              strcmp(main_state, "ok") == 0,
          "vault ok (reported), kafka breach (nothing reported), test-main ok: %s", r.body);
    th_resp_free(&r);
    j = inv_run_job(&srv, admin, "{\"kind\":\"backup.status\"}", 30000);
    CHECK(j && strcmp(job_state(j), "succeeded") == 0, "the status check runs");
    json_decref(j);
    CHECK(th_sql_long(url, "SELECT count(*) FROM outbox WHERE event->>'type' = "
                           "'qa.qdb.controlplane.backup.breach' AND event->>'subject' = "
                           "'components/kafka'", NULL) == 1,
          "kafka entering breach emitted one event");
    j = inv_run_job(&srv, admin, "{\"kind\":\"backup.status\"}", 30000);
    json_decref(j);
    CHECK(th_sql_long(url, "SELECT count(*) FROM outbox WHERE event->>'type' = "
                           "'qa.qdb.controlplane.backup.breach' AND event->>'subject' = "
                           "'components/kafka'", NULL) == 1,
          "staying in breach emits no second one");
    CHECK(th_metric(&srv, "qdb_backup_last_success_age_seconds{component=\"test-main\"}") >= 0 &&
              th_metric(&srv, "qdb_backup_last_verified_restore_seconds{component=\"vault\"}") == 60,
          "the metrics");

    CHECK(th_server_stop(&srv) == 0, "clean stop");
out:
    th_server_kill(&srv);
    th_pg_private_destroy(&pg);
    free(admin);
    free(viewer);
    free(main_url);
    free(target_url);
    free(full_url);
    free(inv_seen);
    th_db_drop(url);
    free(url);
    return th_done();
}
