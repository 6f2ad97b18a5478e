/* The file helpers the backup runners share (checksums, copies, removal, ownership), a free
 * port, row counts and connection strings. The tools themselves (pg_basebackup, pg_dump,
 * pg_verifybackup, tar, initdb, pg_ctl, pg_amcheck, pg_restore) run through the job
 * engine's jobs_run_tool. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <openssl/evp.h>

#include "backup/backup_internal.h"
#include "inventory/inventory.h"
#include "platform/log.h"

int bk_sha256_file(const char *path, char hex[65], int64_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int rc = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 ? 0 : -1;
    unsigned char buf[65536];
    int64_t total = 0;
    size_t got;
    while (rc == 0 && (got = fread(buf, 1, sizeof buf, f)) > 0) {
        if (EVP_DigestUpdate(md, buf, got) != 1)
            rc = -1;
        total += (int64_t)got;
    }
    if (ferror(f))
        rc = -1;
    unsigned char out[32];
    unsigned int outlen = 0;
    if (rc == 0 && EVP_DigestFinal_ex(md, out, &outlen) != 1)
        rc = -1;
    EVP_MD_CTX_free(md);
    fclose(f);
    if (rc != 0)
        return -1;
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", out[i]);
    if (size)
        *size = total;
    return 0;
}

int bk_mkdirs(const char *path, int mode)
{
    char tmp[1024];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp)
        return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return mkdir(tmp, (mode_t)mode) != 0 && errno != EEXIST ? -1 : 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Whether path lies strictly inside root (textually: no ".." segment anywhere). */
static int inside(const char *path, const char *root)
{
    size_t n = strlen(root);
    return root[0] && strncmp(path, root, n) == 0 && path[n] == '/' && path[n + 1] &&
           !strstr(path, "/../") && !strstr(path, "/..\0");
}

int bk_remove_tree(const char *path)
{
    if (!inside(path, bk_dir()) && !inside(path, bk_offsite_dir()) &&
        !inside(path, bk_scratch_dir())) {
        errno = EPERM;
        return -1;
    }
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -1;
    return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int bk_copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY);
    if (in < 0)
        return -1;
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0) {
        close(in);
        return -1;
    }
    char buf[65536];
    ssize_t got;
    int rc = 0;
    while ((got = read(in, buf, sizeof buf)) > 0) {
        for (ssize_t off = 0; off < got;) {
            ssize_t w = write(out, buf + off, (size_t)(got - off));
            if (w <= 0) {
                rc = -1;
                break;
            }
            off += w;
        }
        if (rc)
            break;
    }
    if (got < 0)
        rc = -1;
    if (fsync(out) != 0)
        rc = -1;
    close(in);
    if (close(out) != 0)
        rc = -1;
    return rc;
}

int bk_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return -1;
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(s);
    return port;
}

static uid_t pg_uid, pg_gid;

static int chown_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return lchown(path, pg_uid, (gid_t)pg_gid);
}

int bk_give_to_postgres(const char *path)
{
    if (geteuid() != 0)
        return 0;
    struct passwd *pw = getpwnam("postgres");
    if (!pw)
        return -1;
    pg_uid = pw->pw_uid;
    pg_gid = pw->pw_gid;
    return nftw(path, chown_one, 16, FTW_PHYS);
}

/* One statement that counts every named table inside the server (query_to_xml runs the
 * count of each with its identifiers quoted by format %I), so no SQL text is built here. */
static const char count_sql[] =
    "SELECT coalesce(jsonb_object_agg(n.nspname || '.' || c.relname, "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', "
    "n.nspname, c.relname), false, true, '')))[1]::text::bigint), '{}')::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' "
    "AND (jsonb_array_length($1::jsonb) = 0 OR $1::jsonb ? c.relname "
    "OR $1::jsonb ? (n.nspname || '.' || c.relname))";

json_t *bk_count_rows(PGconn *pg, const json_t *tables, char *err, size_t errlen)
{
    char *t = tables ? json_dumps(tables, JSON_COMPACT) : NULL;
    const char *params[1] = {t ? t : "[]"};
    PGresult *res = PQexecParams(pg, count_sql, 1, NULL, params, NULL, NULL, 0);
    free(t);
    json_t *out = NULL;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        out = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
    else
        snprintf(err, errlen, "counting rows: %s", PQerrorMessage(pg));
    PQclear(res);
    return out;
}

/* A libpq connection string value, quoted ('...' with \' and \\). */
static void conn_quote(char *out, size_t n, const char *v)
{
    size_t o = 0;
    if (o + 1 < n)
        out[o++] = '\'';
    for (; *v && o + 3 < n; v++) {
        if (*v == '\'' || *v == '\\')
            out[o++] = '\\';
        out[o++] = *v;
    }
    if (o + 1 < n)
        out[o++] = '\'';
    out[o] = '\0';
}

void bk_conninfo(char *out, size_t n, const struct inventory_pg_endpoint *ep, const char *db)
{
    char h[600], u[140], d[140], s[40];
    conn_quote(h, sizeof h, ep->host);
    conn_quote(u, sizeof u, ep->admin_user);
    conn_quote(d, sizeof d, db);
    conn_quote(s, sizeof s, ep->sslmode[0] ? ep->sslmode : "prefer");
    snprintf(out, n, "host=%s port=%d user=%s dbname=%s sslmode=%s connect_timeout=10", h, ep->port,
             u, d, s);
}
