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

static struct db_stmt q_insert = DB_STMT(
    "auth_token_insert", 6,
    "INSERT INTO api_token (name, role, environments, token_sha256, created_by, expires_at) "
    "VALUES ($1, $2, $3::jsonb, $4, $5, "
    "CASE WHEN $6::bigint > 0 THEN now() + make_interval(secs => $6::bigint) END) "
    "RETURNING " TOKEN_JSON);

int auth_store_token_insert(struct db_conn *c, const struct auth_token_spec *spec,
                            const char *sha256_hex, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, spec->name);
    db_param_text(&p, auth_role_name((enum http_perm)spec->role));
    db_param_json(&p, spec->environments);
    db_param_text(&p, sha256_hex);
    db_param_text(&p, spec->created_by);
    db_param_int(&p, spec->expires_in_s);
    return db_execp_json(c, &q_insert, &p, out);
}

static struct db_stmt q_lookup =
    DB_STMT("auth_token_lookup", 1,
            "SELECT id, role, name, environments::text, extract(epoch FROM expires_at)::bigint, "
            "revoked_at IS NOT NULL, token_sha256 FROM api_token WHERE token_sha256 = $1");

int auth_store_token_lookup(struct db_conn *c, const char *sha256_hex, PGresult **res)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, sha256_hex);
    return db_execp(c, &q_lookup, &p, res);
}

/* Uses recorded by the flusher, one statement for every token of a round: $1 the ids, $2
 * their use times (unix seconds), $3 the interval. A row changes only when its last_used_at
 * is older than the interval before this use, so that replicas together write a token at
 * most once per interval; the api_token trigger ignores this column (migration 0006). */
static struct db_stmt q_touch_batch = DB_STMT(
    "auth_token_touch_batch", 3,
    "UPDATE api_token AS t SET last_used_at = to_timestamp(u.at) "
    "FROM unnest($1::uuid[], $2::float8[]) AS u(id, at) "
    "WHERE t.id = u.id AND (t.last_used_at IS NULL OR "
    "t.last_used_at <= to_timestamp(u.at) - make_interval(secs => $3::bigint))");

int auth_store_token_touch_batch(struct db_conn *c, const char *const *ids, const double *at,
                                 size_t n, long interval_s)
{
    /* Two array literals as parameters: ids are uuids read from the database, times are
     * numbers; nothing here comes from a request. */
    struct buf a, b;
    buf_init(&a, 0);
    buf_init(&b, 0);
    buf_puts(&a, "{");
    buf_puts(&b, "{");
    for (size_t i = 0; i < n; i++) {
        buf_printf(&a, "%s\"%s\"", i ? "," : "", ids[i]);
        buf_printf(&b, "%s%.3f", i ? "," : "", at[i]);
    }
    buf_puts(&a, "}");
    buf_puts(&b, "}");
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, a.data);
    db_param_text(&p, b.data);
    db_param_int(&p, interval_s);
    int rc = a.data && b.data ? db_execp(c, &q_touch_batch, &p, NULL) : DB_HARD;
    buf_free(&a);
    buf_free(&b);
    return rc;
}

static struct db_stmt q_list =
    DB_STMT("auth_token_list", 0,
            "SELECT coalesce(json_agg(" TOKEN_JSON " ORDER BY created_at DESC, id), '[]') "
            "FROM api_token");

int auth_store_token_list(struct db_conn *c, json_t **out)
{
    return db_exec_json(c, &q_list, NULL, out);
}

static struct db_stmt q_revoke =
    DB_STMT("auth_token_revoke", 1,
            "UPDATE api_token SET revoked_at = coalesce(revoked_at, now()) WHERE id::text = $1 "
            "RETURNING " TOKEN_JSON);

int auth_store_token_revoke(struct db_conn *c, const char *id, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, id);
    return db_execp_json(c, &q_revoke, &p, out);
}

static struct db_stmt q_get =
    DB_STMT("auth_token_get", 1, "SELECT " TOKEN_JSON " FROM api_token WHERE id::text = $1");

int auth_store_token_get(struct db_conn *c, const char *id, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, id);
    return db_execp_json(c, &q_get, &p, out);
}
