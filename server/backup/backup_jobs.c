/* The backup room's runners: base backups, dumps, verifications by test restore,
 * retention, offsite copies, restores, and the RPO/RTO check. Each writes its steps and
 * its tools' output to the job's log (jobs_run_tool) and changes the catalog in its own
 * transactions, audited and with an event. */
#include <dirent.h>
#include <errno.h>
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
#include "platform/config.h"
#include "platform/log.h"

/* ---- settings ---- */

static const char *backup_dir = "/var/lib/qdb/backups";
static const char *offsite_dir = "";
static const char *pg_bin = "/usr/lib/postgresql/15/bin";
static const char *scratch_cfg = "";
static char scratch_dir[1024];
static long tool_timeout_s = 6 * 3600;

const char *bk_dir(void) { return backup_dir; }
const char *bk_offsite_dir(void) { return offsite_dir; }
const char *bk_pg_bin(void) { return pg_bin; }
const char *bk_scratch_dir(void) { return scratch_dir; }

static int abs_dir(const char *name, const char *v, int may_be_empty)
{
    if (!v[0] && may_be_empty)
        return 0;
    if (v[0] != '/' || strstr(v, "/..") || strlen(v) > 400 || strpbrk(v, " '\"\\"))
        return config_error(name, "an absolute path without spaces, quotes or '..'");
    return 0;
}

int bk_config_load(void)
{
    if (config_str("QDB_BACKUP_DIR", "/var/lib/qdb/backups", &backup_dir) ||
        abs_dir("QDB_BACKUP_DIR", backup_dir, 0) ||
        config_str("QDB_BACKUP_OFFSITE_DIR", "", &offsite_dir) ||
        abs_dir("QDB_BACKUP_OFFSITE_DIR", offsite_dir, 1) ||
        config_str("QDB_BACKUP_PG_BIN", "/usr/lib/postgresql/15/bin", &pg_bin) ||
        abs_dir("QDB_BACKUP_PG_BIN", pg_bin, 0) ||
        config_str("QDB_BACKUP_SCRATCH_DIR", "", &scratch_cfg) ||
        abs_dir("QDB_BACKUP_SCRATCH_DIR", scratch_cfg, 1) ||
        config_seconds("QDB_BACKUP_TIMEOUT", 6 * 3600, 60, 7 * 86400, &tool_timeout_s))
        return -1;
    if (strcmp(offsite_dir, backup_dir) == 0 && offsite_dir[0])
        return config_error("QDB_BACKUP_OFFSITE_DIR", "must differ from QDB_BACKUP_DIR");
    /* the scratch folder defaults to one beside the backups: a test restore unpacks as
     * much as the backup holds, on the disk that was sized for it */
    snprintf(scratch_dir, sizeof scratch_dir, "%s", scratch_cfg[0] ? scratch_cfg : backup_dir);
    if (!scratch_cfg[0])
        snprintf(scratch_dir, sizeof scratch_dir, "%s/.scratch", backup_dir);
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void tool(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", pg_bin, name);
}

/* What a job does, the system does: the request that started it was recorded with its
 * caller; the name keeps who that was. */
static struct audit_actor job_actor(struct jobs_ctx *ctx)
{
    struct audit_actor a = {
        .subject = "system", .name = jobs_created_by(ctx), .auth_method = "system"};
    return a;
}

/* ---- the database a job is about: "database": "<environment>/<name>" ---- */

struct bk_target {
    struct inventory_database db;
    char key[120]; /* "<environment>/<name>" */
    char password[512];
    int has_password;
};

static int split_key(const char *key, char *env, size_t envn, char *name, size_t namen)
{
    const char *slash = key ? strchr(key, '/') : NULL;
    if (!slash || slash == key || !slash[1] || (size_t)(slash - key) >= envn ||
        strlen(slash + 1) >= namen)
        return -1;
    memcpy(env, key, (size_t)(slash - key));
    env[slash - key] = '\0';
    snprintf(name, namen, "%s", slash + 1);
    return 0;
}

/* Look the database up and resolve its admin secret. Returns JOBS_OK or an outcome with the
 * reason already given to jobs_error. */
static enum jobs_outcome target_open(struct jobs_ctx *ctx, const char *key, struct bk_target *t)
{
    char env[40], name[70];
    memset(t, 0, sizeof *t);
    if (split_key(key, env, sizeof env, name, sizeof name) != 0) {
        jobs_error(ctx, "database: \"<environment>/<name>\" expected");
        return JOBS_FAIL;
    }
    int rc = inventory_database_lookup(jobs_db(ctx), 0, env, name, &t->db);
    if (rc < 0) {
        jobs_error(ctx, "state store: looking up %s", key);
        return JOBS_RETRY;
    }
    if (rc == 0) {
        jobs_error(ctx, "no managed database %s in the inventory", key);
        return JOBS_FAIL;
    }
    if (!t->db.primary.host[0] || t->db.primary.port <= 0) {
        jobs_error(ctx, "%s has no PostgreSQL server (no primary host and no postgres target)",
                   key);
        return JOBS_FAIL;
    }
    snprintf(t->key, sizeof t->key, "%s/%s", env, name);
    if (t->db.primary.admin_secret[0]) {
        char err[256];
        if (inventory_secret_resolve(t->db.primary.admin_secret, t->password, sizeof t->password,
                                     err, sizeof err) != 0) {
            jobs_error(ctx, "%s: admin secret: %s", key, err);
            return JOBS_FAIL;
        }
        t->has_password = 1;
    }
    return JOBS_OK;
}

static void target_close(struct bk_target *t)
{
    inventory_secret_wipe(t->password, sizeof t->password);
}

/* ---- one transaction that changes the catalog, audits and emits ---- */

struct change_tx {
    struct jobs_ctx *ctx;
    int64_t id;
    const char *action, *verb;
    json_t *data; /* borrowed */
    int (*fn)(struct db_conn *c, void *cls);
    void *cls;
};

static int change_fn(struct db_conn *c, void *cls)
{
    struct change_tx *t = cls;
    int rc = t->fn ? t->fn(c, t->cls) : 0;
    if (rc < 0)
        return rc;
    char rid[32], subject[48];
    snprintf(rid, sizeof rid, "%lld", (long long)t->id);
    snprintf(subject, sizeof subject, "backups/%lld", (long long)t->id);
    struct audit_actor actor = job_actor(t->ctx);
    json_t *doc = NULL;
    if (bk_store_backup_get(c, t->id, 0, &doc) <= 0)
        doc = json_incref(t->data);
    else if (t->data)
        json_object_set(doc, "detail", t->data);
    struct audit_entry e = {.action = t->action,
                            .resource_type = "backup",
                            .resource_id = rid,
                            .after = doc,
                            .job_id = jobs_id(t->ctx)};
    rc = audit_record(c, &actor, NULL, NULL, &e);
    if (rc >= 0)
        rc = audit_event_emit(c, &actor,
                              &(struct audit_event){
                                  .room = "backup", .verb = t->verb, .subject = subject, .data = doc});
    json_decref(doc);
    return rc;
}

static int change(struct jobs_ctx *ctx, int64_t id, const char *action, const char *verb,
                  json_t *data, int (*fn)(struct db_conn *, void *), void *cls)
{
    struct change_tx t = {ctx, id, action, verb, data, fn, cls};
    int rc = db_tx(jobs_db(ctx), change_fn, &t);
    if (rc < 0)
        jobs_log(ctx, "error", "state store: recording %s of backup %lld failed (%d)", action,
                 (long long)id, rc);
    return rc;
}

/* ---- enqueue ---- */

int bk_enqueue(struct db_conn *c, const char *kind, json_t *args, const char *created_by,
               int64_t *job_id)
{
    struct jobs_new j = {.kind = kind, .args = args, .created_by = created_by};
    return jobs_enqueue(c, &j, job_id, NULL);
}

/* ---- backup.base and backup.dump: {"database": "<env>/<name>", "policy"?: component} ---- */

static int database_validate(json_t *args, char *err, size_t errlen)
{
    char env[40], name[70];
    json_t *p = json_object_get(args, "policy");
    if (split_key(json_string_value(json_object_get(args, "database")), env, sizeof env, name,
                  sizeof name) != 0) {
        snprintf(err, errlen, "database: \"<environment>/<name>\" expected");
        return -1;
    }
    if (p && !json_is_string(p)) {
        snprintf(err, errlen, "policy: a component name expected");
        return -1;
    }
    return 0;
}

struct start_tx {
    struct bk_target *t;
    const char *policy, *method;
    int64_t job_id, id;
    char path[1100];
};

static int start_fn(struct db_conn *c, void *cls)
{
    struct start_tx *s = cls;
    int rc = bk_store_backup_insert(c, s->t->db.id, s->t->db.environment, s->t->db.name,
                                    s->policy, s->method, s->job_id, &s->id);
    if (rc < 0)
        return rc;
    snprintf(s->path, sizeof s->path, "%s/%s/%lld", backup_dir, s->t->db.name, (long long)s->id);
    return bk_store_backup_set_path(c, s->id, s->path);
}

/* The policy of the job: the one named, else the database's enabled one of this method. */
static json_t *job_policy(struct jobs_ctx *ctx, json_t *args, const struct bk_target *t,
                          const char *method)
{
    json_t *doc = NULL;
    const char *name = json_string_value(json_object_get(args, "policy"));
    int rc = name ? bk_store_policy_get(jobs_db(ctx), name, &doc)
                  : bk_store_policy_for(jobs_db(ctx), t->db.environment, t->db.name, method,
                                        &doc);
    return rc > 0 ? doc : NULL;
}

/* Checksum every file in the folder into the catalog's rows; the total size. */
struct files_tx {
    int64_t id;
    json_t *files; /* [{name, size_bytes, sha256}] */
    const char *status;
    int64_t size, duration_ms;
    const char *start_lsn, *stop_lsn;
    int timeline;
    json_t *row_counts;
    const char *error;
};

static int files_fn(struct db_conn *c, void *cls)
{
    struct files_tx *f = cls;
    size_t i;
    json_t *v;
    json_array_foreach(f->files, i, v)
    {
        int rc = bk_store_file_insert(c, f->id, json_string_value(json_object_get(v, "name")),
                                      json_integer_value(json_object_get(v, "size_bytes")),
                                      json_string_value(json_object_get(v, "sha256")));
        if (rc < 0)
            return rc;
    }
    return bk_store_backup_finish(c, f->id, f->status, f->size, f->duration_ms, f->start_lsn,
                                  f->stop_lsn, f->timeline, f->row_counts, f->error);
}

static int checksum_folder(struct jobs_ctx *ctx, const char *path, json_t *files, int64_t *total)
{
    DIR *d = opendir(path);
    if (!d) {
        jobs_error(ctx, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    *total = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char full[1400], hex[65];
        int64_t size = 0;
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        if (bk_sha256_file(full, hex, &size) != 0) {
            jobs_error(ctx, "checksum of %s: %s", full, strerror(errno));
            rc = -1;
            break;
        }
        json_array_append_new(files,
                              json_pack("{s:s,s:I,s:s}", "name", e->d_name, "size_bytes",
                                        (json_int_t)size, "sha256", hex));
        jobs_log(ctx, "info", "%s: %lld bytes, sha256 %s", e->d_name, (long long)size, hex);
        *total += size;
    }
    closedir(d);
    return rc;
}

static int finish_failed(struct jobs_ctx *ctx, int64_t id, const char *path, const char *why)
{
    if (path && path[0] && bk_remove_tree(path) != 0)
        jobs_log(ctx, "warn", "could not remove %s: %s", path, strerror(errno));
    struct files_tx f = {.id = id, .files = NULL, .status = "failed", .size = -1,
                         .duration_ms = -1, .error = why};
    json_t *empty = json_array();
    f.files = empty;
    int rc = change(ctx, id, "backup.fail", "failed", NULL, files_fn, &f);
    json_decref(empty);
    return rc;
}

static int enqueue_prune_fn(struct db_conn *c, void *cls)
{
    struct jobs_ctx *ctx = ((void **)cls)[0];
    json_t *args = ((void **)cls)[1];
    int64_t job = 0;
    return bk_enqueue(c, "backup.prune", args, jobs_created_by(ctx), &job);
}

static void enqueue_prune(struct jobs_ctx *ctx, const char *key, const char *policy)
{
    json_t *args = json_pack("{s:s}", "database", key);
    if (policy)
        json_object_set_new(args, "policy", json_string(policy));
    void *cls[2] = {ctx, args};
    if (db_tx(jobs_db(ctx), enqueue_prune_fn, cls) < 0)
        jobs_log(ctx, "error", "could not enqueue the retention run after the backup");
    json_decref(args);
}

/* The WAL range of a base backup from its manifest ("WAL-Ranges"). */
static void manifest_wal(const char *path, char *start, char *stop, size_t n, int *tli)
{
    char file[1200];
    snprintf(file, sizeof file, "%s/backup_manifest", path);
    json_t *m = json_load_file(file, 0, NULL);
    json_t *r = json_array_get(json_object_get(m, "WAL-Ranges"), 0);
    snprintf(start, n, "%s", json_string_value(json_object_get(r, "Start-LSN")) ?: "");
    size_t last = json_array_size(json_object_get(m, "WAL-Ranges"));
    json_t *l = json_array_get(json_object_get(m, "WAL-Ranges"), last ? last - 1 : 0);
    snprintf(stop, n, "%s", json_string_value(json_object_get(l, "End-LSN")) ?: "");
    *tli = (int)json_integer_value(json_object_get(l, "Timeline"));
    json_decref(m);
}

static enum jobs_outcome base_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    struct bk_target t;
    enum jobs_outcome o = target_open(ctx, json_string_value(json_object_get(args, "database")), &t);
    if (o != JOBS_OK)
        return o;
    json_t *policy = job_policy(ctx, args, &t, "basebackup");
    const char *pname = json_string_value(json_object_get(policy, "component"));
    struct start_tx s = {.t = &t, .policy = pname, .method = "basebackup", .job_id = jobs_id(ctx)};
    char parent[1100];
    snprintf(parent, sizeof parent, "%s/%s", backup_dir, t.db.name);
    if (db_tx(jobs_db(ctx), start_fn, &s) < 0) {
        jobs_error(ctx, "state store: could not record the backup");
        o = JOBS_RETRY;
        goto out;
    }
    if (bk_mkdirs(parent, 0700) != 0) {
        jobs_error(ctx, "%s: %s", parent, strerror(errno));
        finish_failed(ctx, s.id, NULL, "backup folder not writable");
        o = JOBS_FAIL;
        goto out;
    }
    jobs_progress(ctx, 5, "pg_basebackup");
    char bin[600], ci[1400], tail[1024];
    tool(bin, sizeof bin, "pg_basebackup");
    bk_conninfo(ci, sizeof ci, &t.db.primary, "postgres");
    const char *argv[] = {bin, "-d", ci, "-D", s.path, "-Ft", "-z", "-X", "stream",
                          "--manifest-checksums=SHA256", "-c", "fast", "-w", "-v", NULL};
    double t0 = now_s();
    int rc = jobs_run_tool(ctx, argv, t.has_password ? t.password : NULL, 0, tail, sizeof tail);
    double took = now_s() - t0;
    if (rc != 0) {
        finish_failed(ctx, s.id, s.path, rc == -2 ? "stopped" : tail);
        if (rc == -2)
            o = JOBS_CANCELLED;
        else {
            jobs_error(ctx, "pg_basebackup failed (%d): %s", rc, tail);
            o = JOBS_RETRY;
        }
        goto out;
    }
    jobs_progress(ctx, 80, "checksums");
    struct files_tx f = {.id = s.id, .files = json_array(), .status = "completed"};
    char start[32], stop[32];
    if (checksum_folder(ctx, s.path, f.files, &f.size) != 0) {
        json_decref(f.files);
        finish_failed(ctx, s.id, s.path, "could not checksum the files written");
        o = JOBS_FAIL;
        goto out;
    }
    manifest_wal(s.path, start, stop, sizeof start, &f.timeline);
    f.start_lsn = start[0] ? start : NULL;
    f.stop_lsn = stop[0] ? stop : NULL;
    f.duration_ms = (int64_t)(took * 1000);
    if (change(ctx, s.id, "backup.complete", "completed", NULL, files_fn, &f) < 0) {
        json_decref(f.files);
        jobs_error(ctx, "state store: could not record the finished backup");
        o = JOBS_RETRY;
        goto out;
    }
    *result = json_pack("{s:I,s:s,s:I,s:I,s:s?,s:s?,s:i,s:o}", "backup_id", (json_int_t)s.id,
                        "path", s.path, "size_bytes", (json_int_t)f.size, "duration_ms",
                        (json_int_t)f.duration_ms, "start_lsn", f.start_lsn, "stop_lsn",
                        f.stop_lsn, "timeline", f.timeline, "files", f.files);
    jobs_log(ctx, "info", "backup %lld: %lld bytes in %.1f s, WAL %s..%s on timeline %d",
             (long long)s.id, (long long)f.size, took, start, stop, f.timeline);
    enqueue_prune(ctx, t.key, pname);
out:
    json_decref(policy);
    target_close(&t);
    return o;
}

/* ---- backup.dump ---- */

static enum jobs_outcome dump_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    struct bk_target t;
    enum jobs_outcome o = target_open(ctx, json_string_value(json_object_get(args, "database")), &t);
    if (o != JOBS_OK)
        return o;
    json_t *policy = job_policy(ctx, args, &t, "dump");
    const char *pname = json_string_value(json_object_get(policy, "component"));
    struct start_tx s = {.t = &t, .policy = pname, .method = "dump", .job_id = jobs_id(ctx)};
    PGconn *src = NULL;
    json_t *counts = NULL;
    char file[1200], err[512];
    if (db_tx(jobs_db(ctx), start_fn, &s) < 0) {
        jobs_error(ctx, "state store: could not record the backup");
        o = JOBS_RETRY;
        goto out;
    }
    if (bk_mkdirs(s.path, 0700) != 0) {
        jobs_error(ctx, "%s: %s", s.path, strerror(errno));
        finish_failed(ctx, s.id, NULL, "backup folder not writable");
        o = JOBS_FAIL;
        goto out;
    }
    /* the counts and the dump see one snapshot: exported here, held open until pg_dump is
     * done, and given to it with --snapshot */
    src = inventory_pg_connect(&t.db.primary, t.db.name, 10, err, sizeof err);
    PGresult *res = NULL;
    if (src) {
        PQclear(PQexec(src, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"));
        res = PQexec(src, "SELECT pg_export_snapshot()");
    }
    if (!src || PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (src)
            snprintf(err, sizeof err, "%s", PQerrorMessage(src));
        PQclear(res);
        jobs_error(ctx, "%s: %s", t.key, err);
        finish_failed(ctx, s.id, s.path, err);
        o = JOBS_RETRY;
        goto out;
    }
    char snapshot[80];
    snprintf(snapshot, sizeof snapshot, "--snapshot=%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    counts = bk_count_rows(src, NULL, err, sizeof err);
    if (!counts) {
        jobs_error(ctx, "%s", err);
        finish_failed(ctx, s.id, s.path, err);
        o = JOBS_RETRY;
        goto out;
    }
    jobs_progress(ctx, 10, "pg_dump");
    char bin[600], ci[1400], tail[1024];
    tool(bin, sizeof bin, "pg_dump");
    bk_conninfo(ci, sizeof ci, &t.db.primary, t.db.name);
    snprintf(file, sizeof file, "%s/dump.fc", s.path);
    const char *argv[] = {bin, "-d", ci, "-Fc", snapshot, "-f", file, "-w", NULL};
    double t0 = now_s();
    int rc = jobs_run_tool(ctx, argv, t.has_password ? t.password : NULL, 0, tail, sizeof tail);
    double took = now_s() - t0;
    PQclear(PQexec(src, "COMMIT"));
    if (rc != 0) {
        finish_failed(ctx, s.id, s.path, rc == -2 ? "stopped" : tail);
        if (rc == -2)
            o = JOBS_CANCELLED;
        else {
            jobs_error(ctx, "pg_dump failed (%d): %s", rc, tail);
            o = JOBS_RETRY;
        }
        goto out;
    }
    struct files_tx f = {.id = s.id, .files = json_array(), .status = "completed",
                         .row_counts = counts, .duration_ms = (int64_t)(took * 1000)};
    if (checksum_folder(ctx, s.path, f.files, &f.size) != 0) {
        json_decref(f.files);
        finish_failed(ctx, s.id, s.path, "could not checksum the dump");
        o = JOBS_FAIL;
        goto out;
    }
    if (change(ctx, s.id, "backup.complete", "completed", NULL, files_fn, &f) < 0) {
        json_decref(f.files);
        jobs_error(ctx, "state store: could not record the finished dump");
        o = JOBS_RETRY;
        goto out;
    }
    *result = json_pack("{s:I,s:s,s:I,s:I,s:O,s:o}", "backup_id", (json_int_t)s.id, "path",
                        s.path, "size_bytes", (json_int_t)f.size, "duration_ms",
                        (json_int_t)f.duration_ms, "row_counts", counts, "files", f.files);
    enqueue_prune(ctx, t.key, pname);
out:
    if (src)
        PQfinish(src);
    json_decref(counts);
    json_decref(policy);
    target_close(&t);
    return o;
}

/* ---- backup.prune {"database", "policy"?}: retention ----
 * Keeps, per database: the newest retention_count finished backups (failed runs do not
 * count), those younger than retention_days, always the newest one, and always the newest
 * verified good one, even when every newer one failed its verification. A base backup
 * carries the WAL it needs to be consistent (-X stream) in its own folder, so deleting a
 * backup's folder never deletes WAL that a kept backup needs; the WAL streamed for a
 * point-in-time restore is kept from the segment of the oldest kept backup's stop LSN on,
 * and only what lies before it is deleted. A deletion that fails fails the job (and emits
 * prune_failed): a retention that cannot run is never silent. */

static int prune_mark_fn(struct db_conn *c, void *cls)
{
    void **a = cls;
    return bk_store_backup_pruned(c, *(int64_t *)a[0], a[1]);
}

struct prune_fail_tx {
    struct jobs_ctx *ctx;
    const char *key;
    json_t *data;
};

static int prune_fail_fn(struct db_conn *c, void *cls)
{
    struct prune_fail_tx *t = cls;
    struct audit_actor actor = job_actor(t->ctx);
    char subject[120];
    snprintf(subject, sizeof subject, "databases/%s", t->key);
    return audit_event_emit(c, &actor,
                            &(struct audit_event){.room = "backup",
                                                  .verb = "prune_failed",
                                                  .subject = subject,
                                                  .data = t->data});
}

static enum jobs_outcome prune_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    const char *key = json_string_value(json_object_get(args, "database"));
    char env[40], name[70];
    struct inventory_database db;
    if (split_key(key, env, sizeof env, name, sizeof name) != 0) {
        jobs_error(ctx, "database: \"<environment>/<name>\" expected");
        return JOBS_FAIL;
    }
    int rc = inventory_database_lookup(jobs_db(ctx), 0, env, name, &db);
    if (rc <= 0) {
        jobs_error(ctx, rc < 0 ? "state store" : "no managed database %s", key);
        return rc < 0 ? JOBS_RETRY : JOBS_FAIL;
    }
    json_t *policy = NULL;
    const char *pname = json_string_value(json_object_get(args, "policy"));
    rc = pname ? bk_store_policy_get(jobs_db(ctx), pname, &policy)
               : bk_store_policy_for(jobs_db(ctx), env, name, "", &policy);
    if (rc <= 0) {
        jobs_error(ctx, "%s has no backup policy: no retention to apply", key);
        return rc < 0 ? JOBS_RETRY : JOBS_FAIL;
    }
    json_int_t keep_n = json_integer_value(json_object_get(policy, "retention_count"));
    json_int_t keep_days = json_integer_value(json_object_get(policy, "retention_days"));
    PGresult *res = NULL;
    /* a policy's retention counts the backups of its own method: a dump never pushes a base
     * backup out, nor the other way round */
    const char *method = json_string_value(json_object_get(policy, "method"));
    if (strcmp(method, "external") == 0) {
        json_decref(policy);
        jobs_error(ctx, "policy of %s is external: nothing taken here to prune", key);
        return JOBS_FAIL;
    }
    rc = bk_store_prune_candidates(jobs_db(ctx), db.id, method, &res);
    if (rc < 0) {
        json_decref(policy);
        jobs_error(ctx, "state store: reading the catalog");
        return JOBS_RETRY;
    }
    json_t *kept = json_array(), *deleted = json_array();
    int rank = 0, seen_verified = 0, seen_newest = 0;
    enum jobs_outcome o = JOBS_OK;
    for (int i = 0; i < rc; i++) {
        int64_t id = db_get_int64(res, i, 0);
        const char *status = db_get_str(res, i, 1), *path = db_get_str(res, i, 2);
        int64_t age = db_get_int64(res, i, 3);
        char why[200] = "";
        int failed = strcmp(status, "failed") == 0;
        if (!failed && !seen_newest) {
            seen_newest = 1;
            snprintf(why, sizeof why, "the newest backup");
        }
        if (!why[0] && strcmp(status, "verified") == 0 && !seen_verified)
            snprintf(why, sizeof why, "the newest verified good backup");
        if (!why[0] && !failed && keep_n > 0 && rank < keep_n)
            snprintf(why, sizeof why, "within the newest %lld", (long long)keep_n);
        if (!why[0] && !failed && keep_days > 0 && age < keep_days * 86400)
            snprintf(why, sizeof why, "younger than %lld days", (long long)keep_days);
        if (strcmp(status, "verified") == 0)
            seen_verified = 1;
        if (!failed)
            rank++;
        if (why[0]) {
            json_array_append_new(kept, json_pack("{s:I,s:s,s:s}", "id", (json_int_t)id,
                                                  "status", status, "reason", why));
            continue;
        }
        if (failed)
            snprintf(why, sizeof why, "a failed run: nothing in it to restore");
        else if (keep_n > 0 && keep_days > 0)
            snprintf(why, sizeof why, "beyond the newest %lld and older than %lld days",
                     (long long)keep_n, (long long)keep_days);
        else if (keep_n > 0)
            snprintf(why, sizeof why, "beyond the newest %lld", (long long)keep_n);
        else
            snprintf(why, sizeof why, "older than %lld days", (long long)keep_days);
        if (path[0] && bk_remove_tree(path) != 0) {
            char msg[1400];
            snprintf(msg, sizeof msg, "could not delete %s: %s", path, strerror(errno));
            jobs_error(ctx, "%s", msg);
            json_t *data = json_pack("{s:s,s:I,s:s}", "database", key, "backup_id",
                                     (json_int_t)id, "error", msg);
            struct prune_fail_tx ft = {ctx, key, data};
            db_tx(jobs_db(ctx), prune_fail_fn, &ft);
            json_decref(data);
            o = JOBS_FAIL;
            break;
        }
        void *cls[2] = {&id, why};
        if (change(ctx, id, "backup.prune", "pruned", NULL, prune_mark_fn, cls) < 0) {
            jobs_error(ctx, "state store: could not record the deletion of backup %lld",
                       (long long)id);
            o = JOBS_RETRY;
            break;
        }
        jobs_log(ctx, "info", "deleted backup %lld (%s): %s", (long long)id, path, why);
        json_array_append_new(deleted, json_pack("{s:I,s:s,s:s}", "id", (json_int_t)id, "path",
                                                 path, "reason", why));
    }
    PQclear(res);
    int wal_deleted = 0;
    json_t *oldest = NULL;
    if (o == JOBS_OK && strcmp(method, "basebackup") == 0 && json_array_size(kept) > 0 &&
        bk_store_backup_get(jobs_db(ctx),
                            json_integer_value(json_object_get(
                                json_array_get(kept, json_array_size(kept) - 1), "id")),
                            0, &oldest) > 0) {
        char err[1000] = "";
        const char *stop = json_string_value(json_object_get(oldest, "stop_lsn"));
        if (bk_wal_prune(name, stop ? stop : "", (int)json_integer_value(json_object_get(oldest, "timeline")),
                         &wal_deleted, err, sizeof err) != 0) {
            jobs_error(ctx, "streamed WAL: %s", err);
            json_t *data = json_pack("{s:s,s:s}", "database", key, "error", err);
            struct prune_fail_tx ft = {ctx, key, data};
            db_tx(jobs_db(ctx), prune_fail_fn, &ft);
            json_decref(data);
            o = JOBS_FAIL;
        } else if (wal_deleted) {
            jobs_log(ctx, "info", "deleted %d streamed WAL segments older than backup %lld's "
                                  "stop LSN %s (the oldest kept)",
                     wal_deleted,
                     (long long)json_integer_value(json_object_get(oldest, "id")), stop);
        }
    }
    json_decref(oldest);
    *result = json_pack("{s:s,s:s,s:o,s:o,s:i}", "database", key, "method", method, "kept", kept,
                        "deleted", deleted, "wal_segments_deleted", wal_deleted);
    json_decref(policy);
    return o;
}

/* ---- backup.offsite {"backup": id} or {"policy"}: copy and check the copy ---- */

static int offsite_fn(struct db_conn *c, void *cls)
{
    void **a = cls;
    return bk_store_backup_offsite(c, *(int64_t *)a[0], a[1]);
}

static enum jobs_outcome offsite_run(struct jobs_ctx *ctx, json_t *args, json_t **result)
{
    if (!offsite_dir[0]) {
        jobs_error(ctx, "QDB_BACKUP_OFFSITE_DIR is not set: no offsite copy can be made");
        return JOBS_FAIL;
    }
    int64_t id = json_integer_value(json_object_get(args, "backup"));
    const char *pname = json_string_value(json_object_get(args, "policy"));
    if (!id && pname) {
        json_t *pol = NULL;
        struct inventory_database db;
        int ok = bk_store_policy_get(jobs_db(ctx), pname, &pol) > 0 &&
                 inventory_database_lookup(
                     jobs_db(ctx), 0, json_string_value(json_object_get(pol, "environment")),
                     json_string_value(json_object_get(pol, "database")), &db) > 0 &&
                 bk_store_newest_backup(jobs_db(ctx), db.id, &id) > 0;
        json_decref(pol);
        if (!ok) {
            jobs_error(ctx, "policy %s: no backup to copy offsite", pname);
            return JOBS_FAIL;
        }
    }
    json_t *b = NULL;
    PGresult *res = NULL;
    if (bk_store_backup_get(jobs_db(ctx), id, 0, &b) <= 0) {
        jobs_error(ctx, "no backup %lld", (long long)id);
        return JOBS_FAIL;
    }
    const char *dir = json_string_value(json_object_get(b, "path"));
    const char *status = json_string_value(json_object_get(b, "status"));
    char dest[1200];
    snprintf(dest, sizeof dest, "%s/%s/%lld", offsite_dir,
             json_string_value(json_object_get(b, "database")), (long long)id);
    enum jobs_outcome o = JOBS_OK;
    if (strcmp(status, "completed") && strcmp(status, "verified")) {
        jobs_error(ctx, "backup %lld is %s: not copied offsite", (long long)id, status);
        o = JOBS_FAIL;
        goto out;
    }
    int rows = bk_store_files(jobs_db(ctx), id, &res);
    if (rows <= 0 || bk_mkdirs(dest, 0700) != 0) {
        jobs_error(ctx, rows <= 0 ? "no files in the catalog" : "%s: %s", dest, strerror(errno));
        o = rows < 0 ? JOBS_RETRY : JOBS_FAIL;
        goto out;
    }
    int64_t total = 0;
    for (int i = 0; i < rows; i++) {
        char from[1400], to[1400], hex[65];
        int64_t size = 0;
        snprintf(from, sizeof from, "%s/%s", dir, db_get_str(res, i, 0));
        snprintf(to, sizeof to, "%s/%s", dest, db_get_str(res, i, 0));
        if (bk_copy_file(from, to) != 0) {
            jobs_error(ctx, "copying %s: %s", from, strerror(errno));
            o = JOBS_RETRY;
            goto out;
        }
        /* read back what landed there, not what we meant to write */
        if (bk_sha256_file(to, hex, &size) != 0 || strcmp(hex, db_get_str(res, i, 2)) != 0) {
            jobs_error(ctx, "offsite copy %s does not match the catalog's SHA-256", to);
            o = JOBS_FAIL;
            goto out;
        }
        jobs_log(ctx, "info", "offsite %s: checksum ok", to);
        total += size;
        if (jobs_progress(ctx, 100 * (i + 1) / rows, db_get_str(res, i, 0)) != 0) {
            o = JOBS_CANCELLED;
            goto out;
        }
    }
    void *cls[2] = {&id, dest};
    if (change(ctx, id, "backup.offsite", "offsite_copied", NULL, offsite_fn, cls) < 0) {
        jobs_error(ctx, "state store: could not record the offsite copy");
        o = JOBS_RETRY;
        goto out;
    }
    *result = json_pack("{s:I,s:s,s:I}", "backup_id", (json_int_t)id, "offsite_path", dest,
                        "size_bytes", (json_int_t)total);
out:
    if (o != JOBS_OK && o != JOBS_CANCELLED && strncmp(dest, offsite_dir, strlen(offsite_dir)) == 0)
        bk_remove_tree(dest);
    PQclear(res);
    json_decref(b);
    return o;
}

static int id_validate(json_t *args, char *err, size_t errlen)
{
    if (json_integer_value(json_object_get(args, "backup")) > 0 ||
        json_is_string(json_object_get(args, "policy")))
        return 0;
    snprintf(err, errlen, "backup: a backup id (or policy: a component) expected");
    return -1;
}

/* ---- kinds ---- */

static struct jobs_kind kind_base = {
    .kind = "backup.base",
    .max_attempts = 3,
    .timeout_seconds = 6 * 3600,
    .max_running = 1,
    .concurrency_arg = "database", /* one base backup per database at a time */
    .direct_role = HTTP_PUBLIC,
    .validate = database_validate,
    .run = base_run,
};
static struct jobs_kind kind_dump = {
    .kind = "backup.dump",
    .max_attempts = 3,
    .timeout_seconds = 6 * 3600,
    .max_running = 1,
    .concurrency_arg = "database",
    .direct_role = HTTP_PUBLIC,
    .validate = database_validate,
    .run = dump_run,
};
static struct jobs_kind kind_prune = {
    .kind = "backup.prune",
    .max_attempts = 3,
    .timeout_seconds = 3600,
    .max_running = 1,
    .concurrency_arg = "database",
    .direct_role = HTTP_OPERATOR, /* retention on demand */
    .validate = database_validate,
    .run = prune_run,
};
static struct jobs_kind kind_offsite = {
    .kind = "backup.offsite",
    .max_attempts = 3,
    .timeout_seconds = 6 * 3600,
    .max_running = 1,
    .concurrency_arg = "backup",
    .direct_role = HTTP_OPERATOR, /* a copy on demand */
    .validate = id_validate,
    .run = offsite_run,
};

extern const struct jobs_kind bk_kind_verify, bk_kind_restore, bk_kind_status;

int bk_jobs_init(void)
{
    kind_base.timeout_seconds = kind_dump.timeout_seconds = kind_offsite.timeout_seconds =
        (int)tool_timeout_s;
    return jobs_register_kind(&kind_base) || jobs_register_kind(&kind_dump) ||
                   jobs_register_kind(&kind_prune) || jobs_register_kind(&kind_offsite) ||
                   jobs_register_kind(&bk_kind_verify) || jobs_register_kind(&bk_kind_restore) ||
                   jobs_register_kind(&bk_kind_status)
               ? -1
               : 0;
}

/* ---- the policy's schedules on the job engine ---- */

static int put_or_remove(struct db_conn *c, const char *component, const char *what,
                         const char *cron, const char *kind, json_t *args, int enabled,
                         char *err, size_t errlen)
{
    char name[120], why[200];
    snprintf(name, sizeof name, "backup.%s.%s", component, what);
    if (!cron) {
        int rc = jobs_schedule_remove(c, name);
        return rc < 0 ? rc : 0;
    }
    int rc = jobs_schedule_put(c, name, cron, kind, args, enabled, why, sizeof why);
    if (rc == -1)
        snprintf(err, errlen, "%s: %s", what, why);
    return rc;
}

int bk_schedules_sync(struct db_conn *c, const json_t *policy, char *err, size_t errlen)
{
    const char *component = json_string_value(json_object_get(policy, "component"));
    const char *method = json_string_value(json_object_get(policy, "method"));
    int enabled = json_is_true(json_object_get(policy, "enabled"));
    int external = strcmp(method, "external") == 0;
    char key[120];
    snprintf(key, sizeof key, "%s/%s",
             json_string_value(json_object_get(policy, "environment")) ?: "",
             json_string_value(json_object_get(policy, "database")) ?: "");
    const char *sched = external ? NULL : json_string_value(json_object_get(policy, "schedule"));
    const char *verify =
        external ? NULL : json_string_value(json_object_get(policy, "verify_schedule"));
    const char *offsite =
        external ? NULL : json_string_value(json_object_get(policy, "offsite_schedule"));
    json_t *run_args = json_pack("{s:s,s:s}", "database", key, "policy", component);
    json_t *pol_args = json_pack("{s:s}", "policy", component);
    int is_dump = strcmp(method, "dump") == 0;
    int rc = put_or_remove(c, component, is_dump ? "dump" : "base", sched,
                           is_dump ? "backup.dump" : "backup.base", run_args, enabled, err, errlen);
    /* the other method's schedule, if the method changed */
    if (rc == 0)
        rc = put_or_remove(c, component, is_dump ? "base" : "dump", NULL, NULL, NULL, 0, err,
                           errlen);
    if (rc == 0)
        rc = put_or_remove(c, component, "verify", verify, "backup.verify", pol_args, enabled,
                           err, errlen);
    if (rc == 0)
        rc = put_or_remove(c, component, "offsite", offsite, "backup.offsite", pol_args,
                           enabled, err, errlen);
    json_decref(run_args);
    json_decref(pol_args);
    return rc;
}

int bk_schedules_drop(struct db_conn *c, const char *component)
{
    static const char *const whats[] = {"base", "dump", "verify", "offsite", NULL};
    for (int i = 0; whats[i]; i++) {
        char name[120];
        snprintf(name, sizeof name, "backup.%s.%s", component, whats[i]);
        int rc = jobs_schedule_remove(c, name);
        if (rc < 0)
            return rc;
    }
    return 0;
}
