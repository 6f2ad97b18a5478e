/* The auth room's SQL, one function per statement. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth_internal.h"

/* The public shape of a token row, built by PostgreSQL so that timestamps come out RFC 3339
 * and the secret's hash never leaves the database. */
/* (clang-format would break the DB_TIME_JSON calls across lines) */
/* clang-format off */
#define TOKEN_JSON                                                                       \
    "json_build_object('id', id, 'name', name, 'role', role, 'environments', environments, " \
    "'created_by', created_by, "                                                             \
    "'created_at', " DB_TIME_JSON("created_at") ", "                                         \
    "'expires_at', " DB_TIME_JSON("expires_at") ", "                                         \
    "'last_used_at', " DB_TIME_JSON("last_used_at") ", "                                     \
    "'revoked_at', " DB_TIME_JSON("revoked_at") ")"
/* clang-format on */

/* Parse column 0 of row 0 as JSON into *out. */
static int json_of(PGresult *res, int n, json_t **out)
{
    *out = NULL;
    if (n > 0) {
        *out = json_loads(db_get_str(res, 0, 0), 0, NULL);
        if (!*out) {
            PQclear(res);
            return DB_HARD;
        }
    }
    PQclear(res);
    return n;
}

static struct db_stmt q_insert = DB_STMT(
    "auth_token_insert", 6,
    "INSERT INTO api_token (name, role, environments, token_sha256, created_by, expires_at) "
    "VALUES ($1, $2, $3::jsonb, $4, $5, "
    "CASE WHEN $6::bigint > 0 THEN now() + make_interval(secs => $6::bigint) END) "
    "RETURNING " TOKEN_JSON);

int auth_store_token_insert(struct db_conn *c, const struct auth_token_spec *spec,
                            const char *sha256_hex, json_t **out)
{
    char *envs = spec->environments ? json_dumps(spec->environments, JSON_COMPACT) : NULL;
    char exp[24];
    const char *p[6] = {
        spec->name,       auth_role_name((enum http_perm)spec->role), envs, sha256_hex,
        spec->created_by, db_int64(exp, spec->expires_in_s)};
    PGresult *res = NULL;
    int n = db_exec(c, &q_insert, p, &res);
    free(envs);
    if (n < 0)
        return n;
    return json_of(res, n, out);
}

static struct db_stmt q_lookup =
    DB_STMT("auth_token_lookup", 1,
            "SELECT id, role, name, environments::text, extract(epoch FROM expires_at)::bigint, "
            "revoked_at IS NOT NULL, token_sha256 FROM api_token WHERE token_sha256 = $1");

int auth_store_token_lookup(struct db_conn *c, const char *sha256_hex, PGresult **res)
{
    const char *p[1] = {sha256_hex};
    return db_exec(c, &q_lookup, p, res);
}

static struct db_stmt q_touch =
    DB_STMT("auth_token_touch", 1,
            "UPDATE api_token SET last_used_at = now() WHERE id = $1 AND "
            "(last_used_at IS NULL OR last_used_at < now() - interval '1 minute')");

int auth_store_token_touch(struct db_conn *c, const char *id)
{
    const char *p[1] = {id};
    return db_exec(c, &q_touch, p, NULL);
}

static struct db_stmt q_list =
    DB_STMT("auth_token_list", 0,
            "SELECT coalesce(json_agg(" TOKEN_JSON " ORDER BY created_at DESC, id), '[]') "
            "FROM api_token");

int auth_store_token_list(struct db_conn *c, json_t **out)
{
    PGresult *res = NULL;
    int n = db_exec(c, &q_list, NULL, &res);
    if (n < 0)
        return n;
    return json_of(res, n, out);
}

static struct db_stmt q_revoke =
    DB_STMT("auth_token_revoke", 1,
            "UPDATE api_token SET revoked_at = coalesce(revoked_at, now()) WHERE id::text = $1 "
            "RETURNING " TOKEN_JSON);

int auth_store_token_revoke(struct db_conn *c, const char *id, json_t **out)
{
    const char *p[1] = {id};
    PGresult *res = NULL;
    int n = db_exec(c, &q_revoke, p, &res);
    if (n < 0)
        return n;
    return json_of(res, n, out);
}

static struct db_stmt q_get =
    DB_STMT("auth_token_get", 1, "SELECT " TOKEN_JSON " FROM api_token WHERE id::text = $1");

int auth_store_token_get(struct db_conn *c, const char *id, json_t **out)
{
    const char *p[1] = {id};
    PGresult *res = NULL;
    int n = db_exec(c, &q_get, p, &res);
    if (n < 0)
        return n;
    return json_of(res, n, out);
}
