#include "platform/migrate.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform/log.h"

/* Arbitrary constant for pg_advisory_lock: "QDBMIGR" in ASCII. */
#define MIGRATE_LOCK_KEY "5711883457103186"

int migrate_check_order(const struct migration *list, size_t n, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        if (list[i].version <= 0) {
            snprintf(err, errlen, "migration %s has version %d", list[i].name, list[i].version);
            return -1;
        }
        if (i > 0 && list[i].version <= list[i - 1].version) {
            snprintf(err, errlen, "migration %04d_%s does not follow %04d_%s", list[i].version,
                     list[i].name, list[i - 1].version, list[i - 1].name);
            return -1;
        }
    }
    return 0;
}

int migrate_checksum_accepted(const struct migration *m, const char *sum)
{
    char own[65];
    migrate_checksum(m, own);
    if (strcmp(own, sum) == 0)
        return 1;
    /* "-- qdb-migrate: supersedes <sha256>" lines, each at a line start */
    static const char tag[] = "-- qdb-migrate: supersedes ";
    size_t taglen = sizeof tag - 1;
    for (const char *p = m->sql; p && *p;) {
        if (strncmp(p, tag, taglen) == 0 && strlen(sum) == 64 &&
            strncmp(p + taglen, sum, 64) == 0 &&
            (p[taglen + 64] == '\n' || p[taglen + 64] == '\0'))
            return 1;
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return 0;
}

void migrate_checksum(const struct migration *m, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_Digest(m->sql, m->len, md, &mdlen, EVP_sha256(), NULL);
    for (unsigned i = 0; i < mdlen && i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[64] = '\0';
}

int migrate_latest_version(void)
{
    return migrations_embedded_count ? migrations_embedded[migrations_embedded_count - 1].version
                                     : 0;
}

static struct db_stmt q_lock = DB_STMT("migrate_lock", 0, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")");
static struct db_stmt q_unlock =
    DB_STMT("migrate_unlock", 0, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")");
static struct db_stmt q_applied = DB_STMT(
    "migrate_applied", 0, "SELECT version, name, checksum FROM schema_migrations ORDER BY version");
static struct db_stmt q_record = DB_STMT(
    "migrate_record", 3,
    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1::int, $2, $3)");
static struct db_stmt q_max =
    DB_STMT("migrate_max", 0,
            "SELECT coalesce(max(version), 0) FROM schema_migrations");
static struct db_stmt q_has_table =
    DB_STMT("migrate_has_table", 0, "SELECT to_regclass('schema_migrations') IS NOT NULL");

static const char create_table_sql[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY,"
    " name text NOT NULL,"
    " checksum text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

/* Compare what the database has applied with the binary's list. Returns the index of the
 * first migration to apply, or -1 with err set. */
static int check_applied(struct db_conn *c, char *err, size_t errlen)
{
    PGresult *res;
    int rows = db_exec(c, &q_applied, NULL, &res);
    if (rows < 0) {
        snprintf(err, errlen, "cannot read schema_migrations: %s", db_last_error(c));
        return -1;
    }
    int next = 0;
    for (int r = 0; r < rows; r++) {
        int version = (int)db_get_int64(res, r, 0);
        const struct migration *m = NULL;
        for (size_t i = 0; i < migrations_embedded_count; i++)
            if (migrations_embedded[i].version == version)
                m = &migrations_embedded[i];
        if (!m) {
            snprintf(err, errlen,
                     "database has migration %04d (%s) that this binary does not know; it is "
                     "newer than this binary (latest %04d)",
                     version, PQgetvalue(res, r, 1), migrate_latest_version());
            PQclear(res);
            return -1;
        }
        char sum[65];
        migrate_checksum(m, sum);
        if (!migrate_checksum_accepted(m, PQgetvalue(res, r, 2))) {
            snprintf(err, errlen,
                     "migration %04d_%s was changed after it was applied (checksum %.12s... in "
                     "the database, %.12s... in this binary); migrations are forward-only",
                     version, m->name, PQgetvalue(res, r, 2), sum);
            PQclear(res);
            return -1;
        }
        next = (int)(m - migrations_embedded) + 1;
    }
    PQclear(res);
    if ((size_t)rows != (size_t)next) {
        snprintf(err, errlen, "schema_migrations has gaps: %d rows but the last is version %d",
                 rows, next ? migrations_embedded[next - 1].version : 0);
        return -1;
    }
    return next;
}

int migrate_apply(struct db_conn *c, char *err, size_t errlen)
{
    if (migrate_check_order(migrations_embedded, migrations_embedded_count, err, errlen) != 0)
        return -1;
    if (db_exec(c, &q_lock, NULL, NULL) < 0) {
        snprintf(err, errlen, "cannot take the migration lock: %s", db_last_error(c));
        return -1;
    }
    int applied = -1;
    /* Create the table only when it is missing: a serving role without CREATE on the
     * schema (deploy/postgres/grants.sql) must still be able to start on a migrated
     * database. */
    PGresult *has;
    if (db_exec(c, &q_has_table, NULL, &has) < 0) {
        snprintf(err, errlen, "cannot read the catalog: %s", db_last_error(c));
        goto out;
    }
    int exists = strcmp(PQgetvalue(has, 0, 0), "t") == 0;
    PQclear(has);
    if (!exists && db_exec_fixed(c, create_table_sql) < 0) {
        snprintf(err, errlen, "cannot create schema_migrations: %s", db_last_error(c));
        goto out;
    }
    int next = check_applied(c, err, errlen);
    if (next < 0)
        goto out;
    applied = 0;
    for (size_t i = (size_t)next; i < migrations_embedded_count; i++) {
        const struct migration *m = &migrations_embedded[i];
        char sum[65];
        migrate_checksum(m, sum);
        struct db_params p = DB_PARAMS_INIT; /* owns nothing: unused on an early failure */
        db_param_int(&p, m->version);
        db_param_text(&p, m->name);
        db_param_text(&p, sum);
        if (db_begin(c) < 0 || db_exec_fixed(c, m->sql) < 0 ||
            db_execp(c, &q_record, &p, NULL) < 0) {
            snprintf(err, errlen, "migration %04d_%s failed: %s", m->version, m->name,
                     db_last_error(c));
            db_rollback(c);
            applied = -1;
            goto out;
        }
        if (db_commit(c) < 0) {
            snprintf(err, errlen, "migration %04d_%s failed at commit: %s", m->version, m->name,
                     db_last_error(c));
            applied = -1;
            goto out;
        }
        log_event(LOG_INFO, "migration applied",
                  json_pack("{s:i,s:s}", "version", m->version, "name", m->name));
        applied++;
    }
out:
    (void)db_exec(c, &q_unlock, NULL, NULL);
    return applied;
}

int migrate_status(struct db_conn *c, char *err, size_t errlen)
{
    PGresult *res;
    int rc = db_exec(c, &q_has_table, NULL, &res);
    if (rc < 0)
        return rc;
    int has = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!has) {
        snprintf(err, errlen, "no migrations applied");
        return 1;
    }
    rc = db_exec(c, &q_max, NULL, &res);
    if (rc < 0)
        return rc;
    int v = (int)db_get_int64(res, 0, 0);
    PQclear(res);
    int latest = migrate_latest_version();
    if (v == latest)
        return 0;
    snprintf(err, errlen, "database schema is at version %d, this binary expects %d", v, latest);
    return 1;
}
