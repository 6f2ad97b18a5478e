/* Proving a backup by restoring it (backup.verify) and restoring it for real
 * (backup.restore): checksums of every file against the catalog, then for a base backup an
 * unpack, pg_verifybackup against its manifest, a temporary PostgreSQL on a free loopback
 * port started from it, row counts and pg_amcheck; for a dump a pg_restore into a fresh
 * temporary cluster whose row counts must equal those taken in the dump's snapshot. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "audit/audit.h"
#include "backup/backup_internal.h"
#include "inventory/inventory.h"
#include "platform/log.h"
#include "platform/rfc3339.h"
#include "platform/utf8.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void tool(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", bk_pg_bin(), name);
}

/* What a job does, the system does: the request that started it was recorded with its
 * caller; the name keeps who that was. */
static struct audit_actor job_actor(struct jobs_ctx *ctx)
{
    struct audit_actor a = {
        .subject = "system", .name = jobs_created_by(ctx), .auth_method = "system"};
    return a;
}

/* ---- a temporary PostgreSQL in a scratch folder ---- */

struct temp_pg {
    char scratch[1100];
    char data[1200];
    int port;
    int started;
    const char *extra; /* more server options, after the defaults (the last -c wins) */
    int tablespaces;   /* unpacked into scratch/tblspc and linked from pg_tblspc */
};

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int rc = fputs(text, f) < 0 ? -1 : 0;
    return fclose(f) != 0 ? -1 : rc;
}

static int temp_prepare(struct jobs_ctx *ctx, struct temp_pg *tp, const char *what)
{
    memset(tp, 0, sizeof *tp);
    snprintf(tp->scratch, sizeof tp->scratch, "%s/%s-%lld", bk_scratch_dir(), what,
             (long long)jobs_id(ctx));
    snprintf(tp->data, sizeof tp->data, "%s/data", tp->scratch);
    bk_remove_tree(tp->scratch); /* a leftover of an earlier attempt of this job */
    if (bk_mkdirs(tp->data, 0700) != 0) {
        jobs_error(ctx, "scratch folder %s: %s", tp->data, strerror(errno));
        return -1;
    }
    /* as root, the temporary server runs as postgres, which must reach its folder through
     * every parent: add the search bit (not the read bit) on the way up */
    if (geteuid() == 0) {
        char p[1100];
        snprintf(p, sizeof p, "%s", tp->scratch);
        for (char *slash; (slash = strrchr(p, '/')) && slash != p;) {
            struct stat st;
            if (stat(p, &st) == 0 && !(st.st_mode & S_IXOTH))
                chmod(p, (st.st_mode & 07777) | S_IXOTH);
            *slash = '\0';
        }
    }
    return 0;
}

/* Start it on a free loopback port, trusting only local connections (its own hba file,
 * whatever the restored one said) and archiving nothing. pg_ctl -w returns once it accepts
 * connections, that is once recovery reached consistency and it opened. */
static int temp_start(struct jobs_ctx *ctx, struct temp_pg *tp)
{
    char hba[1300], conf[1300], log[1300], opts[2048], bin[600], tail[1024];
    /* no Unix socket: its path would have to fit 107 bytes; loopback TCP only */
    snprintf(hba, sizeof hba, "%s/hba.conf", tp->scratch);
    snprintf(conf, sizeof conf, "%s/postgresql.conf", tp->data);
    snprintf(log, sizeof log, "%s/server.log", tp->scratch);
    struct stat st;
    if (write_text(hba, "local all all trust\nhost all all 127.0.0.1/32 trust\n") != 0 ||
        (stat(conf, &st) != 0 && write_text(conf, "") != 0)) {
        jobs_error(ctx, "scratch folder: %s", strerror(errno));
        return -1;
    }
    /* a restored standby would wait for its primary forever */
    char sig[1300];
    snprintf(sig, sizeof sig, "%s/standby.signal", tp->data);
    unlink(sig);
    chmod(tp->data, 0700);
    if (bk_give_to_postgres(tp->scratch) != 0) {
        jobs_error(ctx, "could not give %s to the postgres user", tp->scratch);
        return -1;
    }
    tp->port = bk_free_port();
    snprintf(opts, sizeof opts,
             "-c listen_addresses=127.0.0.1 -p %d -k '' -c hba_file=%.1200s -c archive_mode=off "
             "-c max_connections=20 -c shared_buffers=64MB -c max_wal_senders=0 "
             "-c wal_level=replica -c hot_standby=on -c logging_collector=off "
             "-c shared_preload_libraries= %s",
             tp->port, hba, tp->extra ? tp->extra : "");
    tool(bin, sizeof bin, "pg_ctl");
    const char *argv[] = {bin, "-D", tp->data, "-l", log, "-w", "-t", "3600", "-o", opts,
                          "start", NULL};
    int rc = jobs_run_tool(ctx, argv, NULL, 1, tail, sizeof tail);
    if (rc != 0) {
        jobs_error(ctx, "the temporary PostgreSQL did not start (%d): %s (its log: %s)", rc, tail,
                   log);
        /* pg_ctl may have left it starting */
        const char *stop[] = {bin, "-D", tp->data, "-m", "immediate", "-w", "stop", NULL};
        jobs_run_tool(ctx, stop, NULL, 1, NULL, 0);
        return -1;
    }
    tp->started = 1;
    return 0;
}

static void temp_stop(struct jobs_ctx *ctx, struct temp_pg *tp)
{
    if (!tp->scratch[0])
        return;
    if (tp->started) {
        /* immediate: its folder is removed next, so a shutdown checkpoint would write
         * pages (the hint bits of the counts' scans) that nobody reads */
        char bin[600];
        tool(bin, sizeof bin, "pg_ctl");
        const char *argv[] = {bin, "-D", tp->data, "-m", "immediate", "-w", "-t", "120", "stop",
                              NULL};
        jobs_run_tool(ctx, argv, NULL, 1, NULL, 0);
        tp->started = 0;
    }
    if (bk_remove_tree(tp->scratch) != 0)
        jobs_log(ctx, "warn", "could not remove %s: %s", tp->scratch, strerror(errno));
    else
        jobs_log(ctx, "info", "removed %s", tp->scratch);
    tp->scratch[0] = '\0';
}

static PGconn *temp_connect(const struct temp_pg *tp, const char *user, const char *db,
                            char *err, size_t errlen)
{
    char port[16];
    snprintf(port, sizeof port, "%d", tp->port);
    const char *keys[] = {"host", "port", "user", "dbname", "connect_timeout", NULL};
    const char *vals[] = {"127.0.0.1", port, user, db, "10", NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 0);
    if (PQstatus(c) != CONNECTION_OK) {
        snprintf(err, errlen, "%s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* ---- checks shared by verify and restore ---- */

/* Every file of the catalog, checksummed again where it lies now. The hashing runs on a
 * thread of its own (check_start ... check_finish), so that a verification overlaps it with
 * the unpack, which reads the same files: on two cores the SHA-256 pass then costs nothing
 * beside gunzip. The thread touches no database connection and writes no job log; the
 * runner's thread does both, before and after. */
struct file_check {
    PGresult *res;
    int rows;
    const char *dir;
    char (*hex)[65];
    int64_t *size;
    int *errnum;
    pthread_t thread;
    int running;
};

static void *hash_files(void *arg)
{
    struct file_check *fc = arg;
    for (int i = 0; i < fc->rows; i++) {
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", fc->dir, db_get_str(fc->res, i, 0));
        fc->errnum[i] = bk_sha256_file(path, fc->hex[i], &fc->size[i]) != 0 ? (errno ? errno : EIO) : 0;
    }
    return NULL;
}

static int check_start(struct jobs_ctx *ctx, int64_t id, const char *dir, struct file_check *fc,
                       char *detail, size_t n)
{
    memset(fc, 0, sizeof *fc);
    fc->dir = dir;
    fc->rows = bk_store_files(jobs_db(ctx), id, &fc->res);
    if (fc->rows <= 0) {
        snprintf(detail, n, "the catalog lists no file for backup %lld", (long long)id);
        return -1;
    }
    fc->hex = calloc((size_t)fc->rows, sizeof *fc->hex);
    fc->size = calloc((size_t)fc->rows, sizeof *fc->size);
    fc->errnum = calloc((size_t)fc->rows, sizeof *fc->errnum);
    if (!fc->hex || !fc->size || !fc->errnum) {
        snprintf(detail, n, "out of memory");
        return -1;
    }
    if (pthread_create(&fc->thread, NULL, hash_files, fc) == 0)
        fc->running = 1;
    else
        hash_files(fc); /* no thread: hash here */
    return 0;
}

/* Wait for the hashes and compare them with the catalog. 0 or -1 (detail says). Frees fc. */
static int check_finish(struct jobs_ctx *ctx, struct file_check *fc, int rc, char *detail, size_t n)
{
    if (fc->running)
        pthread_join(fc->thread, NULL);
    fc->running = 0;
    for (int i = 0; rc == 0 && i < fc->rows; i++) {
        const char *name = db_get_str(fc->res, i, 0);
        if (fc->errnum[i]) {
            snprintf(detail, n, "%s: %s", name, strerror(fc->errnum[i]));
            rc = -1;
        } else if (strcmp(fc->hex[i], db_get_str(fc->res, i, 2)) != 0 ||
                   fc->size[i] != db_get_int64(fc->res, i, 1)) {
            snprintf(detail, n, "%s: SHA-256 %s, the catalog says %s", name, fc->hex[i],
                     db_get_str(fc->res, i, 2));
            rc = -1;
        } else {
            jobs_log(ctx, "info", "%s: checksum ok", name);
        }
    }
    PQclear(fc->res);
    free(fc->hex);
    free(fc->size);
    free(fc->errnum);
    memset(fc, 0, sizeof *fc);
    return rc;
}

static int check_files(struct jobs_ctx *ctx, int64_t id, const char *dir, char *detail, size_t n)
{
    struct file_check fc;
    int rc = check_start(ctx, id, dir, &fc, detail, n);
    return check_finish(ctx, &fc, rc, detail, n);
}


/* Unpack pg_wal.tar.gz into tp->data/pg_wal. 0 or -1 (detail says). */
static int unpack_wal(struct jobs_ctx *ctx, const char *dir, struct temp_pg *tp, char *detail,
                      size_t n)
{
    char wal[1200], waldir[1300], tail[1024];
    snprintf(wal, sizeof wal, "%s/pg_wal.tar.gz", dir);
    snprintf(waldir, sizeof waldir, "%s/pg_wal", tp->data);
    if (bk_mkdirs(waldir, 0700) != 0) {
        snprintf(detail, n, "%.700s: %s", waldir, strerror(errno));
        return -1;
    }
    const char *unwal[] = {"/bin/tar", "-xzf", wal, "-C", waldir, NULL};
    if (jobs_run_tool(ctx, unwal, NULL, 0, tail, sizeof tail) != 0) {
        snprintf(detail, n, "unpacking pg_wal.tar.gz: %.700s", tail);
        return -1;
    }
    return 0;
}

/* pg_verifybackup of the unpacked backup against its manifest; its time in *verify_s.
 * skip_checksums when unpack_base_checked compared every file's SHA-256 already. */
static int run_verifybackup(struct jobs_ctx *ctx, const char *dir, struct temp_pg *tp,
                            char *detail, size_t n, double *verify_s, int skip_checksums)
{
    char manifest[1200], tail[1024], bin[600];
    snprintf(manifest, sizeof manifest, "%s/backup_manifest", dir);
    tool(bin, sizeof bin, "pg_verifybackup");
    /* a backup with tablespaces: its tablespace_map was replaced by links (unpack_base) */
    const char *verify[8] = {bin, "-m", manifest, tp->data};
    int k = 4;
    if (skip_checksums)
        verify[k++] = "--skip-checksums";
    if (tp->tablespaces) {
        verify[k++] = "-i";
        verify[k++] = "tablespace_map";
    }
    verify[k] = NULL;
    double v0 = now_s();
    int rc = jobs_run_tool(ctx, verify, NULL, 0, tail, sizeof tail);
    if (verify_s)
        *verify_s = now_s() - v0;
    if (rc != 0) {
        snprintf(detail, n, "pg_verifybackup: %.700s", tail);
        return -1;
    }
    return 0;
}

/* The tablespaces of a base backup: pg_basebackup -Ft writes each into <oid>.tar.gz and
 * lists them in the base's tablespace_map, from which PostgreSQL, at its first start,
 * links pg_tblspc/<oid> to the source's own folders. Unpacking base.tar.gz alone left
 * their files out (pg_verifybackup found them missing: such a backup was marked bad and
 * could not be restored), and following tablespace_map would open the source's live
 * folders on its own host. Each is unpacked instead into scratch/tblspc/<oid>,
 * pg_tblspc/<oid> links there, and tablespace_map goes (PostgreSQL keeps the links it
 * finds; pg_verifybackup is told to ignore the missing file). 0, -1 (detail says), -2 (the
 * job was told to stop). */
static int unpack_tablespaces(struct jobs_ctx *ctx, const char *dir, struct temp_pg *tp,
                              char *detail, size_t n)
{
    char map[1300];
    snprintf(map, sizeof map, "%s/tablespace_map", tp->data);
    FILE *f = fopen(map, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(detail, n, "tablespace_map: %s", strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    while (rc == 0 && getline(&line, &cap, f) > 0) {
        char *end;
        unsigned long oid = strtoul(line, &end, 10);
        if (end == line || *end != ' ' || oid == 0) {
            snprintf(detail, n, "tablespace_map: a line that is not \"oid path\": %.200s", line);
            rc = -1;
            break;
        }
        char tarball[1300], where[1300], link[1400], tail[800];
        snprintf(tarball, sizeof tarball, "%s/%lu.tar.gz", dir, oid);
        snprintf(where, sizeof where, "%s/tblspc/%lu", tp->scratch, oid);
        snprintf(link, sizeof link, "%s/pg_tblspc/%lu", tp->data, oid);
        if (access(tarball, R_OK) != 0) {
            snprintf(detail, n, "tablespace %lu: the backup has no %lu.tar.gz: %s", oid, oid,
                     strerror(errno));
            rc = -1;
            break;
        }
        if (bk_mkdirs(where, 0700) != 0) {
            snprintf(detail, n, "%.600s: %s", where, strerror(errno));
            rc = -1;
            break;
        }
        const char *untar[] = {"/bin/tar", "-xzf", tarball, "-C", where, NULL};
        int trc = jobs_run_tool(ctx, untar, NULL, 0, tail, sizeof tail);
        if (trc == -2) {
            snprintf(detail, n, "stopped");
            rc = -2;
            break;
        }
        if (trc != 0) {
            snprintf(detail, n, "unpacking %lu.tar.gz: %.700s", oid, tail);
            rc = -1;
            break;
        }
        if ((unlink(link) != 0 && errno != ENOENT) || symlink(where, link) != 0) {
            snprintf(detail, n, "linking %.600s: %s", link, strerror(errno));
            rc = -1;
            break;
        }
        tp->tablespaces++;
    }
    free(line);
    fclose(f);
    if (rc == 0 && tp->tablespaces) {
        if (unlink(map) != 0) {
            snprintf(detail, n, "tablespace_map: %s", strerror(errno));
            return -1;
        }
        jobs_log(ctx, "info", "%d tablespace(s) unpacked into %s/tblspc and linked from "
                              "pg_tblspc, in place of the source's folders",
                 tp->tablespaces, tp->scratch);
    }
    return rc;
}

/* Unpack base.tar.gz into tp->data, checking each member against the manifest on the way
 * (backup_unpack.c), then its tablespaces. Returns 0 (*all_checked: every manifest file
 * matched), -1 (detail says: a checksum or size differs, or the unpack failed), -2 (the job
 * was told to stop). */
static int unpack_base_checked(struct jobs_ctx *ctx, const char *dir, struct temp_pg *tp,
                               int *all_checked, char *detail, size_t n)
{
    char base[1200], manifest[1200], errpath[1300];
    snprintf(base, sizeof base, "%s/base.tar.gz", dir);
    snprintf(manifest, sizeof manifest, "%s/backup_manifest", dir);
    snprintf(errpath, sizeof errpath, "%s/unpack.err", tp->scratch);
    int rc = bk_unpack_base(ctx, base, manifest, tp->data, errpath, all_checked, detail, n);
    return rc == 0 ? unpack_tablespaces(ctx, dir, tp, detail, n) : rc;
}

/* Every table the policy names must be there; returns the counts (new) or NULL. */
static json_t *count_checked(PGconn *pg, const json_t *tables, char *detail, size_t n)
{
    json_t *counts = bk_count_rows(pg, tables, detail, n);
    size_t i;
    json_t *v;
    if (!counts)
        return NULL;
    json_array_foreach(tables, i, v)
    {
        const char *want = json_string_value(v);
        int found = 0;
        const char *k;
        json_t *cv;
        json_object_foreach(counts, k, cv)
        {
            const char *dot = strchr(k, '.');
            if (want && (strcmp(k, want) == 0 || (dot && strcmp(dot + 1, want) == 0)))
                found = 1;
        }
        if (!found) {
            snprintf(detail, n, "table %s is missing from the restored database",
                     want ? want : "?");
            json_decref(counts);
            return NULL;
        }
    }
    return counts;
}

/* ---- backup.verify {"backup": id} or {"policy": component} (its newest backup) ---- */

/* count_checked on a thread of its own, beside pg_amcheck: it uses only its connection
 * (the runner's, which waits for it) and writes no job log. */
struct count_job {
    PGconn *pg;
    const json_t *tables;
    json_t *counts; /* NULL: detail says why */
    char detail[1024];
};

static void *count_main(void *arg)
{
    struct count_job *cj = arg;
    cj->counts = count_checked(cj->pg, cj->tables, cj->detail, sizeof cj->detail);
    return NULL;
}

static int verify_validate(json_t *args, char *err, size_t errlen)
{
    json_t *b = json_object_get(args, "backup"), *p = json_object_get(args, "policy");
    if ((b && json_integer_value(b) > 0) || json_is_string(p))
        return 0;
    snprintf(err, errlen, "backup: a backup id (or policy: a component) expected");
    return -1;
}

struct verified_tx {
    struct jobs_ctx *ctx;
    int64_t id;
    int ok;
    double restore_s;
    json_t *checks;
    const char *detail;
};

static int verified_fn(struct db_conn *c, void *cls)
{
    struct verified_tx *v = cls;
    int rc = bk_store_verification_insert(c, v->id, jobs_id(v->ctx), v->ok, v->restore_s,
                                          v->checks, v->detail);
    if (rc >= 0)
        rc = bk_store_backup_set_verified(c, v->id, v->ok, v->ok ? v->restore_s : -1);
    if (rc < 0)
        return rc;
    char rid[32], subject[48];
    snprintf(rid, sizeof rid, "%lld", (long long)v->id);
    snprintf(subject, sizeof subject, "backups/%lld", (long long)v->id);
    json_t *doc = NULL;
    bk_store_backup_get(c, v->id, 0, &doc);
    json_t *data = json_pack("{s:O?,s:b,s:O,s:s}", "backup", doc, "ok", v->ok, "checks",
                             v->checks, "detail", v->detail ? v->detail : "");
    struct audit_actor actor = job_actor(v->ctx);
    struct audit_entry e = {.action = v->ok ? "backup.verify" : "backup.mark_bad",
                            .resource_type = "backup",
                            .resource_id = rid,
                            .after = data,
                            .job_id = jobs_id(v->ctx)};
    rc = audit_record(c, &actor, NULL, NULL, &e);
    if (rc >= 0)
        rc = audit_event_emit(c, &actor,
                              &(struct audit_event){.room = "backup",
                                                    .verb = v->ok ? "verified" : "verification_failed",
                                                    .subject = subject,
                                                    .data = data});
    json_decref(data);
    json_decref(doc);
    return rc;
}

static enum jobs_outcome verify_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    int64_t id = json_integer_value(json_object_get(args, "backup"));
    json_t *b = NULL, *policy = NULL, *checks = json_object();
    struct temp_pg tp = {0};
    PGconn *pg = NULL;
    char detail[1024] = "";
    enum jobs_outcome o = JOBS_OK;
    const char *pname = json_string_value(json_object_get(args, "policy"));
    if (!id && pname) {
        json_t *pol = NULL;
        struct inventory_database db;
        if (bk_store_policy_get(jobs_db(ctx), pname, &pol) <= 0 ||
            inventory_database_lookup(
                jobs_db(ctx), 0, json_string_value(json_object_get(pol, "environment")),
                json_string_value(json_object_get(pol, "database")), &db) <= 0 ||
            bk_store_newest_backup(jobs_db(ctx), db.id, &id) <= 0) {
            json_decref(pol);
            jobs_error(ctx, "policy %s: no backup to verify", pname);
            json_decref(checks);
            return JOBS_FAIL;
        }
        json_decref(pol);
    }
    if (bk_store_backup_get(jobs_db(ctx), id, 0, &b) <= 0) {
        jobs_error(ctx, "no backup %lld", (long long)id);
        json_decref(checks);
        return JOBS_FAIL;
    }
    const char *status = json_string_value(json_object_get(b, "status"));
    const char *method = json_string_value(json_object_get(b, "method"));
    const char *dir = json_string_value(json_object_get(b, "path"));
    const char *dbname = json_string_value(json_object_get(b, "database"));
    if (strcmp(status, "completed") && strcmp(status, "verified") && strcmp(status, "bad")) {
        jobs_error(ctx, "backup %lld is %s: nothing to verify", (long long)id, status);
        o = JOBS_FAIL;
        goto out;
    }
    const char *pol_name = json_string_value(json_object_get(b, "policy"));
    if (pol_name)
        bk_store_policy_get(jobs_db(ctx), pol_name, &policy);
    json_t *tables = json_object_get(policy, "tables");
    int ok = 0;
    double restore_s = -1;
    int base = strcmp(method, "basebackup") == 0;
    if (temp_prepare(ctx, &tp, "verify") != 0) {
        o = JOBS_RETRY;
        goto out;
    }
    double t0 = now_s();
    char bin[600], tail[1024], port[16];
    jobs_progress(ctx, 5, base ? "checksums and unpack" : "checksums");
    /* a base backup's checksums are taken while tar unpacks it (check_start) */
    struct file_check fc;
    double v0 = now_s(), verify_s = 0;
    int crc = check_start(ctx, id, dir, &fc, detail, sizeof detail), all_checked = 0;
    int urc = crc == 0 && base ? unpack_base_checked(ctx, dir, &tp, &all_checked, tail, sizeof tail)
                               : 0;
    if (urc == 0 && crc == 0 && base)
        urc = unpack_wal(ctx, dir, &tp, tail, sizeof tail);
    if (check_finish(ctx, &fc, crc, detail, sizeof detail) != 0) {
        json_object_set_new(checks, "checksums", json_string("failed"));
        goto record;
    }
    json_object_set_new(checks, "checksums", json_string("ok"));
    if (base) {
        if (urc == -2) {
            o = JOBS_CANCELLED;
            goto out;
        }
        json_object_set_new(checks, "manifest_checksums",
                            json_string(urc != 0 ? "failed"
                                        : all_checked ? "ok (while unpacking)"
                                                      : "left to pg_verifybackup"));
        jobs_progress(ctx, 15, "pg_verifybackup");
        if (urc != 0 ||
            run_verifybackup(ctx, dir, &tp, detail, sizeof detail, &verify_s, all_checked) != 0) {
            if (urc != 0)
                snprintf(detail, sizeof detail, "%s", tail);
            json_object_set_new(checks, "pg_verifybackup", json_string("failed"));
            goto record;
        }
        /* the restore time an operator would see: unpack and start, not our extra check */
        double vtook = now_s() - v0 - verify_s;
        json_object_set_new(checks, "pg_verifybackup", json_string("ok"));
        jobs_progress(ctx, 40, "starting a temporary PostgreSQL");
        double s0 = now_s();
        if (temp_start(ctx, &tp) != 0) {
            snprintf(detail, sizeof detail, "the restored cluster did not start");
            json_object_set_new(checks, "start", json_string("failed"));
            goto record;
        }
        restore_s = vtook + (now_s() - s0);
        json_object_set_new(checks, "start", json_string("ok"));
        /* the restored cluster holds the source's roles: connect as its admin user */
        struct inventory_database db;
        const char *user = "postgres";
        if (inventory_database_lookup(jobs_db(ctx),
                                      json_integer_value(json_object_get(b, "database_id")), NULL,
                                      NULL, &db) > 0 &&
            db.primary.admin_user[0])
            user = db.primary.admin_user;
        pg = temp_connect(&tp, user, dbname, detail, sizeof detail);
        if (!pg) {
            json_object_set_new(checks, "connect", json_string("failed"));
            goto record;
        }
        PGresult *r = PQexec(pg, "SELECT pg_is_in_recovery()");
        int in_recovery = PQresultStatus(r) == PGRES_TUPLES_OK && PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
        if (in_recovery) {
            snprintf(detail, sizeof detail, "the restored cluster is still in recovery");
            goto record;
        }
        /* the row counts on their own thread while pg_amcheck runs: two scans of the same
         * tables, one per core, rather than one after the other */
        jobs_progress(ctx, 70, "row counts and pg_amcheck");
        struct count_job cj = {.pg = pg, .tables = tables};
        pthread_t counter;
        int threaded = pthread_create(&counter, NULL, count_main, &cj) == 0;
        if (!threaded)
            count_main(&cj);
        tool(bin, sizeof bin, "pg_amcheck");
        snprintf(port, sizeof port, "%d", tp.port);
        /* two connections: the heap of the biggest table and its index are checked at once */
        const char *amcheck[] = {bin, "-h", "127.0.0.1", "-p", port, "-U", user,
                                 "--install-missing", "--jobs=2", "-w", dbname, NULL};
        int arc = jobs_run_tool(ctx, amcheck, NULL, 0, tail, sizeof tail);
        if (threaded)
            pthread_join(counter, NULL);
        if (!cj.counts) {
            snprintf(detail, sizeof detail, "%s", cj.detail);
            json_object_set_new(checks, "row_counts", json_string("failed"));
            goto record;
        }
        json_object_set_new(checks, "row_counts", cj.counts);
        char *counted = json_dumps(cj.counts, JSON_COMPACT | JSON_SORT_KEYS);
        jobs_log(ctx, "info", "row counts: %.600s", counted ? counted : "?");
        free(counted);
        if (arc != 0) {
            snprintf(detail, sizeof detail, "pg_amcheck: %.700s", tail);
            json_object_set_new(checks, "amcheck", json_string("failed"));
            goto record;
        }
        json_object_set_new(checks, "amcheck", json_string("ok"));
    } else {
        /* a dump: a fresh cluster, pg_restore into a scratch database, equal counts */
        jobs_progress(ctx, 15, "initdb of a scratch cluster");
        if (bk_give_to_postgres(tp.scratch) != 0) {
            o = JOBS_RETRY;
            jobs_error(ctx, "could not give %s to the postgres user", tp.scratch);
            goto out;
        }
        tool(bin, sizeof bin, "initdb");
        const char *initdb[] = {bin, "-D", tp.data, "-U", "postgres", "--auth=trust", "-E",
                                "UTF8", "--locale=C.UTF-8", "--no-sync", NULL};
        if (jobs_run_tool(ctx, initdb, NULL, 1, tail, sizeof tail) != 0 ||
            temp_start(ctx, &tp) != 0) {
            jobs_error(ctx, "scratch cluster: %s", tail);
            o = JOBS_RETRY;
            goto out;
        }
        double r0 = now_s();
        pg = temp_connect(&tp, "postgres", "postgres", detail, sizeof detail);
        PGresult *r = pg ? PQexec(pg, "CREATE DATABASE restore_check") : NULL;
        int made = r && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (pg)
            PQfinish(pg);
        pg = NULL;
        if (!made) {
            jobs_error(ctx, "scratch database: %s", detail);
            o = JOBS_RETRY;
            goto out;
        }
        char file[1200];
        snprintf(file, sizeof file, "%s/dump.fc", dir);
        snprintf(port, sizeof port, "%d", tp.port);
        tool(bin, sizeof bin, "pg_restore");
        jobs_progress(ctx, 40, "pg_restore");
        const char *restore[] = {bin, "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-d",
                                 "restore_check", "--no-owner", "--no-privileges",
                                 "--no-tablespaces", "--exit-on-error", "-w", file, NULL};
        if (jobs_run_tool(ctx, restore, NULL, 0, tail, sizeof tail) != 0) {
            snprintf(detail, sizeof detail, "pg_restore: %.700s", tail);
            json_object_set_new(checks, "pg_restore", json_string("failed"));
            goto record;
        }
        restore_s = now_s() - r0;
        json_object_set_new(checks, "pg_restore", json_string("ok"));
        pg = temp_connect(&tp, "postgres", "restore_check", detail, sizeof detail);
        json_t *counts = pg ? bk_count_rows(pg, NULL, detail, sizeof detail) : NULL;
        json_t *want = json_object_get(b, "row_counts");
        if (!counts || !json_equal(counts, want)) {
            if (counts) {
                char *got = json_dumps(counts, JSON_COMPACT | JSON_SORT_KEYS);
                char *exp = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
                snprintf(detail, sizeof detail, "row counts %.400s differ from the dump's %.400s",
                         got ? got : "", exp ? exp : "");
                free(got);
                free(exp);
            }
            json_object_set_new(checks, "row_counts", counts ? counts : json_string("failed"));
            goto record;
        }
        json_object_set_new(checks, "row_counts", counts);
    }
    ok = 1;
    (void)t0;
record:
    if (pg)
        PQfinish(pg);
    pg = NULL;
    temp_stop(ctx, &tp);
    utf8_scrub(detail); /* names from the archive, tools' output: into JSON and the catalog */
    jobs_log(ctx, ok ? "info" : "error", "backup %lld: %s%s%s", (long long)id,
             ok ? "verified by a test restore" : "verification failed", detail[0] ? ": " : "",
             detail);
    struct verified_tx v = {ctx, id, ok, restore_s, checks, detail};
    if (db_tx(jobs_db(ctx), verified_fn, &v) < 0) {
        jobs_error(ctx, "state store: could not record the verification");
        o = JOBS_RETRY;
        goto out;
    }
    *result = json_pack("{s:I,s:b,s:O,s:s}", "backup_id", (json_int_t)id, "ok", ok, "checks",
                        checks, "detail", detail);
    if (restore_s >= 0)
        json_object_set_new(*result, "restore_seconds", json_real(restore_s));
    if (!ok) {
        jobs_error(ctx, "backup %lld is bad: %s", (long long)id, detail);
        o = JOBS_FAIL;
    }
out:
    if (pg)
        PQfinish(pg);
    temp_stop(ctx, &tp);
    json_decref(checks);
    json_decref(policy);
    json_decref(b);
    return o;
}

const struct jobs_kind bk_kind_verify = {
    .kind = "backup.verify",
    .max_attempts = 2,
    .timeout_seconds = 6 * 3600,
    .max_running = 1,
    .concurrency_arg = "backup",
    .direct_role = HTTP_PUBLIC,
    .validate = verify_validate,
    .run = verify_run,
};

int bk_target_tables(const struct inventory_database *db, char *err, size_t errlen)
{
    PGconn *pg = inventory_pg_connect(&db->primary, db->name, 5, err, errlen);
    if (!pg)
        return -1;
    PGresult *r = PQexec(pg, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = "
                             "c.relnamespace WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN "
                             "('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'");
    long n = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        n = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    else
        snprintf(err, errlen, "%s", PQerrorMessage(pg));
    PQclear(r);
    PQfinish(pg);
    return (int)n;
}

/* ---- backup.restore {"backup", "target": "<env>/<name>", "force"} ----
 * A dump is restored with pg_restore; a base backup is first started in a temporary
 * PostgreSQL (as a test restore is), its database dumped from there and restored into the
 * target, so that restoring one database never replaces the target's whole server. */

static int restore_validate(json_t *args, char *err, size_t errlen)
{
    json_t *pit = json_object_get(args, "point_in_time");
    if (json_integer_value(json_object_get(args, "backup")) > 0 &&
        json_is_string(json_object_get(args, "target")) && (!pit || json_is_string(pit)))
        return 0;
    snprintf(err, errlen, "backup and target (\"<environment>/<name>\") expected, and "
                          "point_in_time a string when given");
    return -1;
}

struct restored_tx {
    struct jobs_ctx *ctx;
    int64_t id;
    json_t *data;
};

static int restored_fn(struct db_conn *c, void *cls)
{
    struct restored_tx *t = cls;
    char rid[32], subject[48];
    snprintf(rid, sizeof rid, "%lld", (long long)t->id);
    snprintf(subject, sizeof subject, "backups/%lld", (long long)t->id);
    struct audit_actor actor = job_actor(t->ctx);
    struct audit_entry e = {.action = "backup.restore",
                            .resource_type = "backup",
                            .resource_id = rid,
                            .after = t->data,
                            .job_id = jobs_id(t->ctx)};
    int rc = audit_record(c, &actor, NULL, NULL, &e);
    if (rc >= 0)
        rc = audit_event_emit(
            c, &actor,
            &(struct audit_event){.room = "backup", .verb = "restored", .subject = subject, .data = t->data});
    return rc;
}

/* The timestamp of the last transaction the temporary cluster replayed, as ISO-8601 UTC
 * ("" when recovery replayed none: a backup's own WAL often holds no commit). */
static void recovered_to(PGconn *pg, char *out, size_t n)
{
    out[0] = '\0';
    PGresult *r = PQexec(pg, "SELECT to_char(pg_last_xact_replay_timestamp() AT TIME ZONE "
                             "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && !PQgetisnull(r, 0, 0))
        snprintf(out, n, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
}

/* ---- point in time, through the streamed WAL ---- */

static int parse_time(const char *s, int64_t *us)
{
    return s ? rfc3339_parse(s, strlen(s), us) : -1;
}

int bk_pitr_check(struct db_conn *c, const json_t *backup, const char *point_in_time,
                  int64_t *target_us, char *err, size_t errlen)
{
    *target_us = 0;
    int latest = strcmp(point_in_time, "latest") == 0;
    if (!latest && (strlen(point_in_time) > RFC3339_MAX_LEN ||
                    parse_time(point_in_time, target_us) != 0)) {
        snprintf(err, errlen, "point_in_time: \"latest\" or an RFC 3339 time "
                              "(2026-12-01T14:00:00Z) expected");
        return -1;
    }
    const char *method = json_string_value(json_object_get(backup, "method"));
    if (!method || strcmp(method, "basebackup") != 0) {
        snprintf(err, errlen, "point_in_time: backup %lld is a %s; only a base backup replays "
                              "WAL to a point in time",
                 (long long)json_integer_value(json_object_get(backup, "id")),
                 method ? method : "?");
        return -1;
    }
    json_t *w = NULL;
    int64_t db_id = json_integer_value(json_object_get(backup, "database_id"));
    int rc = bk_store_wal_get(c, db_id, &w);
    if (rc <= 0) {
        snprintf(err, errlen, rc < 0 ? "state store: could not read the WAL stream"
                                     : "point_in_time: no WAL is streamed for this database "
                                       "(its policy's RPO is not 0)");
        return rc < 0 ? rc : -1;
    }
    int64_t started = 0, covered = 0;
    const char *cu = json_string_value(json_object_get(w, "caught_up_at"));
    int ok = 0;
    if (parse_time(json_string_value(json_object_get(backup, "started_at")), &started) != 0) {
        snprintf(err, errlen, "backup %lld has no start time", (long long)db_id);
    } else if (!cu || parse_time(cu, &covered) != 0) {
        snprintf(err, errlen, "point_in_time: the WAL stream has not received everything yet");
    } else if (latest) {
        ok = 1;
    } else {
        /* the backup is consistent once pg_basebackup ended: no earlier target exists */
        int64_t end = started + json_integer_value(json_object_get(backup, "duration_ms")) * 1000;
        char e[RFC3339_TEXT_MAX], cv[RFC3339_TEXT_MAX];
        rfc3339_format_us(end, e, sizeof e);
        rfc3339_format_us(covered, cv, sizeof cv);
        if (*target_us < end)
            snprintf(err, errlen, "point_in_time: %s is before the backup's end (%s)",
                     point_in_time, e);
        else if (*target_us > covered)
            snprintf(err, errlen, "point_in_time: %s is beyond the streamed WAL (received "
                                  "everything up to %s)",
                     point_in_time, cv);
        else
            ok = 1;
    }
    json_decref(w);
    return ok ? 0 : -1;
}

static int is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789ABCDEF", s[i]))
            return 0;
    return 1;
}

struct wal_file {
    char name[40];
    uint64_t segno;
    int partial;
};

static int wal_file_cmp(const void *a, const void *b)
{
    const struct wal_file *x = a, *y = b;
    return x->segno < y->segno ? -1 : x->segno > y->segno ? 1 : x->partial - y->partial;
}

/* Copy the streamed WAL a recovery from this backup needs into dst: timeline tli's
 * segments from the one holding stop_lsn up to the newest (a ".partial" under its full
 * name), and the timeline history files; refuses a stream that begins after the backup's
 * end or has a hole. Returns the number of segments, or -1 with err. */
static int copy_streamed_wal(struct jobs_ctx *ctx, const char *src, const char *dst,
                             const char *stop_lsn, int tli, char *err, size_t n)
{
    unsigned int hi, lo;
    if (!stop_lsn || sscanf(stop_lsn, "%X/%X", &hi, &lo) != 2) {
        snprintf(err, n, "the backup has no stop LSN");
        return -1;
    }
    uint64_t stop = ((uint64_t)hi << 32) | lo;
    DIR *d = opendir(src);
    if (!d) {
        snprintf(err, n, "the streamed WAL %.600s: %s", src, strerror(errno));
        return -1;
    }
    struct wal_file *files = NULL;
    size_t nf = 0, cap = 0;
    int64_t segsize = 0;
    char tl[9];
    snprintf(tl, sizeof tl, "%08X", (unsigned)tli);
    struct dirent *e;
    int rc = 0;
    if (bk_mkdirs(dst, 0700) != 0) {
        snprintf(err, n, "%.600s: %s", dst, strerror(errno));
        closedir(d);
        return -1;
    }
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        char from[1400], to[1400];
        if (len == 16 && strcmp(e->d_name + 8, ".history") == 0 && is_hex(e->d_name, 8)) {
            snprintf(from, sizeof from, "%s/%s", src, e->d_name);
            snprintf(to, sizeof to, "%s/%s", dst, e->d_name);
            if (bk_copy_file(from, to) != 0) {
                snprintf(err, n, "copying %s: %s", e->d_name, strerror(errno));
                rc = -1;
                break;
            }
            continue;
        }
        int partial = len == 32 && strcmp(e->d_name + 24, ".partial") == 0;
        if (!(len == 24 || partial) || !is_hex(e->d_name, 24) || strncmp(e->d_name, tl, 8))
            continue;
        if (nf == cap) {
            cap = cap ? cap * 2 : 64;
            struct wal_file *nfiles = realloc(files, cap * sizeof *files);
            if (!nfiles) {
                rc = -1;
                snprintf(err, n, "out of memory");
                break;
            }
            files = nfiles;
        }
        struct wal_file *f = &files[nf++];
        snprintf(f->name, sizeof f->name, "%.32s", e->d_name);
        f->partial = partial;
        if (!segsize) {
            struct stat st;
            snprintf(from, sizeof from, "%s/%s", src, e->d_name);
            if (stat(from, &st) == 0 && st.st_size >= (1 << 20) &&
                (st.st_size & (st.st_size - 1)) == 0)
                segsize = st.st_size;
        }
    }
    closedir(d);
    if (rc == 0 && (!nf || !segsize)) {
        snprintf(err, n, "no WAL segment of timeline %d was streamed into %.600s", tli, src);
        rc = -1;
    }
    if (rc == 0) {
        uint64_t per = 0x100000000ULL / (uint64_t)segsize;
        for (size_t i = 0; i < nf; i++) {
            char h[9], l[9];
            memcpy(h, files[i].name + 8, 8);
            h[8] = '\0';
            memcpy(l, files[i].name + 16, 8);
            l[8] = '\0';
            files[i].segno = strtoull(h, NULL, 16) * per + strtoull(l, NULL, 16);
        }
        qsort(files, nf, sizeof *files, wal_file_cmp);
        uint64_t want = stop / (uint64_t)segsize, first = want;
        size_t copied = 0;
        for (size_t i = 0; i < nf && rc == 0; i++) {
            if (files[i].segno < first)
                continue;
            if (i > 0 && files[i].segno == files[i - 1].segno)
                continue; /* a complete segment and a leftover partial of it: the complete */
            if (files[i].segno != want) {
                snprintf(err, n,
                         want == first
                             ? "the streamed WAL begins after this backup's end (its segment "
                               "%.30s is the first after it): no point-in-time restore from it"
                             : "the streamed WAL has a hole before segment %.30s",
                         files[i].name);
                rc = -1;
                break;
            }
            char from[1400], to[1400];
            snprintf(from, sizeof from, "%s/%s", src, files[i].name);
            snprintf(to, sizeof to, "%s/%.24s", dst, files[i].name);
            if (bk_copy_file(from, to) != 0) {
                snprintf(err, n, "copying %s: %s", files[i].name, strerror(errno));
                rc = -1;
            }
            want++;
            copied++;
        }
        if (rc == 0 && copied == 0) {
            snprintf(err, n, "the streamed WAL ends before this backup's end");
            rc = -1;
        }
        if (rc == 0) {
            jobs_log(ctx, "info", "%zu streamed WAL segments of timeline %d copied for recovery",
                     copied, tli);
            rc = (int)copied;
        }
    }
    free(files);
    return rc;
}

/* Whether the temporary server's log says the recovery target was never reached (no
 * commit after it in the WAL: every transaction is older, and all of them are wanted). */
static int target_not_reached(const struct temp_pg *tp)
{
    char log[1300], buf[8192];
    snprintf(log, sizeof log, "%s/server.log", tp->scratch);
    FILE *f = fopen(log, "r");
    int found = 0;
    if (!f)
        return 0;
    while (fgets(buf, sizeof buf, f))
        if (strstr(buf, "recovery ended before configured recovery target was reached"))
            found = 1;
    fclose(f);
    return found;
}

/* The last lines of the temporary server's log, for an error an operator can act on. */
static void server_log_tail(const struct temp_pg *tp, char *out, size_t n)
{
    char log[1300];
    out[0] = '\0';
    snprintf(log, sizeof log, "%s/server.log", tp->scratch);
    FILE *f = fopen(log, "r");
    if (!f)
        return;
    char buf[600];
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size > (long)sizeof buf - 1)
            fseek(f, size - (long)sizeof buf + 1, SEEK_SET);
        else
            rewind(f);
    }
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[got] = '\0';
    for (char *c = buf; *c; c++)
        if (*c == '\n')
            *c = ' ';
    snprintf(out, n, "%s", buf);
}

/* After pg_ctl -w (which returns at consistency, a hot standby), wait until recovery has
 * replayed to its target and promoted. 0, -1 (the server stopped: detail says why), -2
 * (the job was told to stop). */
static int wait_promoted(struct jobs_ctx *ctx, struct temp_pg *tp, const char *user,
                         const char *db, char *detail, size_t n)
{
    char pidfile[1300];
    snprintf(pidfile, sizeof pidfile, "%s/postmaster.pid", tp->data);
    for (int i = 0;; i++) {
        if (i % 5 == 0 && jobs_heartbeat(ctx) != 0)
            return -2;
        PGconn *pg = temp_connect(tp, user, db, detail, n);
        int in_recovery = -1;
        if (pg) {
            PGresult *r = PQexec(pg, "SELECT pg_is_in_recovery()");
            if (PQresultStatus(r) == PGRES_TUPLES_OK)
                in_recovery = PQgetvalue(r, 0, 0)[0] == 't';
            PQclear(r);
            PQfinish(pg);
        }
        if (in_recovery == 0)
            return 0;
        if (!pg && access(pidfile, F_OK) != 0) {
            char tail[600];
            server_log_tail(tp, tail, sizeof tail);
            snprintf(detail, n, "the temporary PostgreSQL stopped during recovery: %s", tail);
            tp->started = 0;
            return -1;
        }
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* Recovery settings for the unpacked base backup: replay the copied WAL, up to the target
 * time (target_us > 0) or all of it, then promote. */
static int write_recovery(struct temp_pg *tp, const char *archive, int64_t target_us)
{
    char path[1300], conf[3000], when[RFC3339_TEXT_MAX] = "";
    if (strchr(archive, '\'') || strchr(archive, '"'))
        return -1;
    if (target_us > 0 && rfc3339_format_us(target_us, when, sizeof when) < 0)
        return -1;
    /* PostgreSQL's timestamp input wants a space and a numeric zone, not T and Z */
    char *t = strchr(when, 'T'), *z = strchr(when, 'Z');
    if (t)
        *t = ' ';
    if (z && (size_t)(z - when) + 4 <= sizeof when)
        snprintf(z, 4, "+00");
    snprintf(conf, sizeof conf,
             "\n# point-in-time recovery (qdb-control backup.restore)\n"
             "restore_command = 'cp \"%s/%%f\" \"%%p\"'\n"
             "recovery_target_timeline = 'current'\n"
             "%s%s%s",
             archive, target_us > 0 ? "recovery_target_time = '" : "", when,
             target_us > 0 ? "'\nrecovery_target_action = 'promote'\n" : "");
    snprintf(path, sizeof path, "%s/postgresql.auto.conf", tp->data);
    FILE *f = fopen(path, "a");
    if (!f)
        return -1;
    int rc = fputs(conf, f) < 0 ? -1 : 0;
    if (fclose(f) != 0)
        rc = -1;
    snprintf(path, sizeof path, "%s/recovery.signal", tp->data);
    return rc == 0 ? write_text(path, "") : -1;
}

/* Drop the recovery target from postgresql.auto.conf (recover to the end instead). */
static int drop_target(struct temp_pg *tp)
{
    char path[1300], tmp[1310], line[4096];
    snprintf(path, sizeof path, "%s/postgresql.auto.conf", tp->data);
    snprintf(tmp, sizeof tmp, "%s.new", path);
    FILE *in = fopen(path, "r"), *out = in ? fopen(tmp, "w") : NULL;
    if (!out) {
        if (in)
            fclose(in);
        return -1;
    }
    while (fgets(line, sizeof line, in))
        if (strncmp(line, "recovery_target_time", 20) && strncmp(line, "recovery_target_action", 22))
            fputs(line, out);
    fclose(in);
    if (fclose(out) != 0 || rename(tmp, path) != 0)
        return -1;
    char sig[1300];
    snprintf(sig, sizeof sig, "%s/recovery.signal", tp->data);
    return write_text(sig, "");
}

/* -1 error, -2 cancelled: jobs_run_tool's -2 says the job was told to stop */
#define RESTORE_FAIL(rc) ((rc) == -2 ? -2 : -1)

int backup_restore(struct jobs_ctx *ctx, const struct backup_restore_spec *spec,
                   struct backup_restore_outcome *out, char *err, size_t errlen)
{
    json_t *b = NULL;
    struct temp_pg tp = {0};
    const struct inventory_database *db = spec->target;
    char password[512] = "", detail[1024] = "", tail[1024] = "", key[120];
    int has_password = 0, ret = -1, rc;
    int64_t id = spec->backup_id;
    memset(out, 0, sizeof *out);
    err[0] = '\0';
    if (!db) {
        snprintf(err, errlen, "no target database given");
        return -1;
    }
    snprintf(key, sizeof key, "%s/%s", db->environment, db->name);
    if (id == 0) {
        if (spec->source_id <= 0) {
            snprintf(err, errlen, "neither a backup nor a source database given");
            return -1;
        }
        rc = bk_store_newest_verified(jobs_db(ctx), spec->source_id, &id);
        if (rc <= 0) {
            snprintf(err, errlen, rc < 0 ? "state store: could not look the backups up"
                                         : "database %lld has no verified good backup",
                     (long long)spec->source_id);
            return -1;
        }
        jobs_log(ctx, "info", "restoring backup %lld, the newest verified good one",
                 (long long)id);
    }
    out->backup_id = id;
    if (bk_store_backup_get(jobs_db(ctx), id, 0, &b) <= 0) {
        snprintf(err, errlen, "no backup %lld", (long long)id);
        return -1;
    }
    const char *status = json_string_value(json_object_get(b, "status"));
    const char *dir = json_string_value(json_object_get(b, "path"));
    const char *source_db = json_string_value(json_object_get(b, "database"));
    const char *source_env = json_string_value(json_object_get(b, "environment"));
    int64_t source_id = json_integer_value(json_object_get(b, "database_id"));
    if (spec->source_id > 0 && spec->source_id != source_id) {
        snprintf(err, errlen, "backup %lld was taken of database %lld, not %lld", (long long)id,
                 (long long)source_id, (long long)spec->source_id);
        goto out;
    }
    if (strcmp(status, "completed") && strcmp(status, "verified")) {
        snprintf(err, errlen, "backup %lld is %s: not restorable", (long long)id, status);
        goto out;
    }
    int64_t target_us = 0;
    if (spec->point_in_time &&
        bk_pitr_check(jobs_db(ctx), b, spec->point_in_time, &target_us, err, errlen) != 0)
        goto out;
    if (db->id == source_id ||
        (strcmp(db->environment, source_env) == 0 && strcmp(db->name, source_db) == 0)) {
        snprintf(err, errlen, "refusing to restore backup %lld onto its own source",
                 (long long)id);
        goto out;
    }
    int tables = bk_target_tables(db, detail, sizeof detail);
    if (tables < 0) {
        snprintf(err, errlen, "target %s: %s", key, detail);
        goto out;
    }
    if (tables > 0 && !spec->force) {
        snprintf(err, errlen, "target %s holds %d tables and force was not given", key, tables);
        goto out;
    }
    double t0 = now_s();
    if (check_files(ctx, id, dir, detail, sizeof detail) != 0) {
        snprintf(err, errlen, "backup %lld does not match its checksums: %s", (long long)id,
                 detail);
        goto out;
    }
    if (db->primary.admin_secret[0]) {
        if (inventory_secret_resolve(db->primary.admin_secret, password, sizeof password, detail,
                                     sizeof detail) != 0) {
            snprintf(err, errlen, "%s: admin secret: %s", key, detail);
            goto out;
        }
        has_password = 1;
    }
    char file[1300], bin[600], port[16], ci[1400];
    snprintf(file, sizeof file, "%s/dump.fc", dir);
    if (strcmp(json_string_value(json_object_get(b, "method")), "basebackup") == 0) {
        jobs_progress(ctx, 10, "starting the backup in a temporary PostgreSQL");
        int all_checked = 0;
        rc = temp_prepare(ctx, &tp, "restore") != 0 ? -1
             : unpack_base_checked(ctx, dir, &tp, &all_checked, detail, sizeof detail);
        if (rc == 0 && (unpack_wal(ctx, dir, &tp, detail, sizeof detail) != 0 ||
                        run_verifybackup(ctx, dir, &tp, detail, sizeof detail, NULL, all_checked) != 0))
            rc = -1;
        if (rc != 0) {
            snprintf(err, errlen, "could not unpack backup %lld: %s", (long long)id,
                     detail[0] ? detail : "see the job's log");
            ret = rc == -2 ? -2 : -1;
            goto out;
        }
        if (spec->point_in_time) {
            char src[1100], archive[1200];
            bk_wal_dir(src, sizeof src, source_db);
            snprintf(archive, sizeof archive, "%s/archive", tp.scratch);
            jobs_progress(ctx, 20, "copying the streamed WAL");
            if (copy_streamed_wal(ctx, src, archive, json_string_value(json_object_get(b, "stop_lsn")),
                                  (int)json_integer_value(json_object_get(b, "timeline")), detail,
                                  sizeof detail) < 0) {
                snprintf(err, errlen, "backup %lld: %s", (long long)id, detail);
                goto out;
            }
            if (write_recovery(&tp, archive, target_us) != 0) {
                snprintf(err, errlen, "could not write the recovery settings: %s",
                         strerror(errno));
                goto out;
            }
            /* a hot standby would refuse settings below the source's (max_connections...);
             * nothing connects before the promotion anyway: wait_promoted polls */
            tp.extra = "-c hot_standby=off";
            jobs_progress(ctx, 30, "replaying the streamed WAL");
            jobs_log(ctx, "info", "recovering to %s", spec->point_in_time);
        }
        struct inventory_database src;
        const char *user = "postgres";
        if (inventory_database_lookup(jobs_db(ctx), source_id, NULL, NULL, &src) > 0 &&
            src.primary.admin_user[0])
            user = src.primary.admin_user;
        rc = temp_start(ctx, &tp) != 0 ? -1 : 0;
        if (rc == 0 && spec->point_in_time)
            rc = wait_promoted(ctx, &tp, user, source_db, detail, sizeof detail);
        if (rc == -1 && target_us > 0 && target_not_reached(&tp)) {
            /* no commit after the target in all the WAL received: every transaction in it
             * is older than the target, so replaying all of it is recovering to it */
            jobs_log(ctx, "info", "no transaction after %s in the streamed WAL: replaying all "
                                  "of it", spec->point_in_time);
            tp.started = 0;
            rc = drop_target(&tp) != 0 || temp_start(ctx, &tp) != 0 ? -1 : 0;
            if (rc == 0)
                rc = wait_promoted(ctx, &tp, user, source_db, detail, sizeof detail);
        }
        if (rc != 0) {
            if (rc == -1 && !detail[0])
                server_log_tail(&tp, detail, sizeof detail);
            snprintf(err, errlen, "could not start backup %lld: %s", (long long)id, detail);
            ret = rc;
            goto out;
        }
        PGconn *tpg = temp_connect(&tp, user, source_db, detail, sizeof detail);
        if (!tpg) {
            snprintf(err, errlen, "the restored cluster: %s", detail);
            goto out;
        }
        recovered_to(tpg, out->recovered_to, sizeof out->recovered_to);
        PQfinish(tpg);
        snprintf(file, sizeof file, "%s/restore.fc", tp.scratch);
        snprintf(port, sizeof port, "%d", tp.port);
        tool(bin, sizeof bin, "pg_dump");
        jobs_progress(ctx, 40, "pg_dump from the restored cluster");
        const char *dump[] = {bin, "-h", "127.0.0.1", "-p", port, "-U", user, "-Fc", "-w",
                              "-f", file, source_db, NULL};
        rc = jobs_run_tool(ctx, dump, NULL, 0, tail, sizeof tail);
        if (rc != 0) {
            snprintf(err, errlen, "pg_dump of the restored cluster: %s", tail);
            ret = RESTORE_FAIL(rc);
            goto out;
        }
    }
    jobs_progress(ctx, 60, "pg_restore into the target");
    tool(bin, sizeof bin, "pg_restore");
    bk_conninfo(ci, sizeof ci, &db->primary, db->name);
    /* the data, not the source server's layout: owners, grants and tablespaces are the
     * target's own */
    const char *restore[] = {bin, "-d", ci, "--no-owner", "--no-privileges", "--no-tablespaces",
                             "--exit-on-error", "-w", spec->force ? "--clean" : file,
                             spec->force ? "--if-exists" : NULL, spec->force ? file : NULL,
                             NULL};
    rc = jobs_run_tool(ctx, restore, has_password ? password : NULL, 0, tail, sizeof tail);
    if (rc != 0) {
        snprintf(err, errlen, "pg_restore into %s failed: %s", key, tail);
        ret = RESTORE_FAIL(rc);
        goto out;
    }
    PGconn *pg = inventory_pg_connect(&db->primary, db->name, 10, detail, sizeof detail);
    out->row_counts = pg ? bk_count_rows(pg, NULL, detail, sizeof detail) : NULL;
    if (pg)
        PQfinish(pg);
    if (!out->row_counts) {
        snprintf(err, errlen, "restored, but counting the rows of %s failed: %s", key, detail);
        goto out;
    }
    out->restore_seconds = now_s() - t0;
    const char *began = json_string_value(json_object_get(b, "started_at"));
    snprintf(out->backup_started, sizeof out->backup_started, "%s", began ? began : "");
    jobs_log(ctx, "info", "backup %lld restored into %s in %.3f s", (long long)id, key,
             out->restore_seconds);
    ret = 0;
out:
    temp_stop(ctx, &tp);
    inventory_secret_wipe(password, sizeof password);
    if (ret != 0) {
        json_decref(out->row_counts);
        out->row_counts = NULL;
    }
    json_decref(b);
    return ret;
}

/* backup.restore {"backup", "target": "<env>/<name>", "force", "point_in_time"?} */
static enum jobs_outcome restore_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    int64_t id = json_integer_value(json_object_get(args, "backup"));
    const char *key = json_string_value(json_object_get(args, "target"));
    struct inventory_database db;
    char env[40] = "", name[70] = "", err[1400] = "";
    const char *slash = strchr(key, '/');
    if (!slash || (size_t)(slash - key) >= sizeof env || strlen(slash + 1) >= sizeof name) {
        jobs_error(ctx, "target: \"<environment>/<name>\" expected");
        return JOBS_FAIL;
    }
    memcpy(env, key, (size_t)(slash - key));
    snprintf(name, sizeof name, "%s", slash + 1);
    int rc = inventory_database_lookup(jobs_db(ctx), 0, env, name, &db);
    if (rc <= 0) {
        jobs_error(ctx, "no managed database %s", key);
        return rc < 0 ? JOBS_RETRY : JOBS_FAIL;
    }
    struct backup_restore_spec spec = {
        .backup_id = id,
        .target = &db,
        .force = json_is_true(json_object_get(args, "force")),
        .point_in_time = json_string_value(json_object_get(args, "point_in_time")),
    };
    struct backup_restore_outcome res;
    rc = backup_restore(ctx, &spec, &res, err, sizeof err);
    if (rc != 0) {
        jobs_error(ctx, "%s", err);
        return rc == -2 ? JOBS_CANCELLED : JOBS_FAIL;
    }
    json_t *data = json_pack("{s:I,s:s,s:f,s:O?}", "backup_id", (json_int_t)res.backup_id,
                             "target", key, "restore_seconds", res.restore_seconds,
                             "row_counts", res.row_counts);
    if (spec.point_in_time)
        json_object_set_new(data, "point_in_time", json_string(spec.point_in_time));
    if (res.recovered_to[0])
        json_object_set_new(data, "recovered_to", json_string(res.recovered_to));
    json_decref(res.row_counts);
    struct restored_tx t = {ctx, res.backup_id, data};
    if (db_tx(jobs_db(ctx), restored_fn, &t) < 0) {
        json_decref(data);
        jobs_error(ctx, "state store: could not record the restore");
        return JOBS_RETRY;
    }
    *result = data;
    return JOBS_OK;
}

const struct jobs_kind bk_kind_restore = {
    .kind = "backup.restore",
    .max_attempts = 1,
    .timeout_seconds = 6 * 3600,
    .max_running = 1,
    .concurrency_arg = "target",
    .direct_role = HTTP_PUBLIC,
    .validate = restore_validate,
    .run = restore_run,
};
