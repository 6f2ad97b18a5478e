/* The flags room's SQL, and nothing else: one function per statement, the statement beside
 * it (migrations/0009_flags.sql has the tables and flag_doc). */
#include "flags/flags_store.h"

#define FLAG_API_DOC                                                                           \
    "flag_doc(f) || jsonb_build_object('created_at', " DB_TIME_JSON("f.created_at")           \
    ", 'updated_at', " DB_TIME_JSON("f.updated_at") ")"

static struct db_stmt q_snapshot = DB_STMT(
    "flags_snapshot", 1,
    "SELECT COALESCE(json_object_agg(e.name, json_build_object("
    "  'flags', COALESCE((SELECT json_agg(json_build_object('key', f.key, 'type', f.type,"
    "      'variants', f.variants, 'salt', f.salt, 'archived', f.archived,"
    "      'version', fe.version, 'flag_version', f.version, 'config', fe.config)"
    "      ORDER BY f.key)"
    "    FROM flag f JOIN flag_env fe ON fe.flag_key = f.key AND fe.environment = e.name"
    "    WHERE NOT f.archived), '[]'::json),"
    "  'segments', (SELECT COALESCE(json_agg(json_build_object('name', s.name,"
    "      'conditions', s.conditions, 'included', s.included, 'excluded', s.excluded,"
    "      'version', s.version)"
    "      ORDER BY s.name), '[]'::json) FROM flag_segment s))), '{}'::json)::text "
    "FROM environment e WHERE $1::text IS NULL OR e.name = $1");

int flags_store_snapshot(struct db_conn *c, const char *environment, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, environment);
    return db_execp_json(c, &q_snapshot, &p, out);
}

/* One flag as each environment's snapshot holds it: {env: entry, or null where the flag
 * is not served (no configuration there, archived, deleted)}, the entry in the shape of
 * q_snapshot's. Every environment is named, so that a deleted flag leaves them all. */
static struct db_stmt q_snapshot_flag = DB_STMT(
    "flags_snapshot_flag", 1,
    "SELECT COALESCE(json_object_agg(e.name, (SELECT json_build_object('key', f.key,"
    "      'type', f.type, 'variants', f.variants, 'salt', f.salt, 'archived', f.archived,"
    "      'version', fe.version, 'flag_version', f.version, 'config', fe.config)"
    "    FROM flag f JOIN flag_env fe ON fe.flag_key = f.key AND fe.environment = e.name"
    "    WHERE f.key = $1 AND NOT f.archived)), '{}'::json)::text "
    "FROM environment e");

int flags_store_snapshot_flag(struct db_conn *c, const char *key, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    return db_execp_json(c, &q_snapshot_flag, &p, out);
}

static struct db_stmt q_get = DB_STMT("flags_get", 1,
                                      "SELECT (" FLAG_API_DOC ")::text FROM flag f WHERE key = $1");

int flags_store_get(struct db_conn *c, const char *key, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    return db_execp_json(c, &q_get, &p, doc);
}

static struct db_stmt q_get_lock =
    DB_STMT("flags_get_lock", 1,
            "SELECT (" FLAG_API_DOC ")::text FROM flag f WHERE key = $1 FOR UPDATE");

int flags_store_get_for_update(struct db_conn *c, const char *key, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    return db_execp_json(c, &q_get_lock, &p, doc);
}

/* Stale (issue 11): unchanged for $4 days while serving one value to all (disabled, or
 * enabled without rules and split) in the environment(s) looked at, or not evaluated there
 * for $4 days. */
static struct db_stmt q_list = DB_STMT(
    "flags_list", 4,
    "SELECT json_build_object('items', COALESCE(json_agg((" FLAG_API_DOC ") ORDER BY f.key),"
    " '[]'::json))::text FROM flag f"
    " WHERE ($1::text IS NULL OR $1 = ANY (f.tags))"
    "   AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM flag_env x WHERE x.flag_key = f.key"
    "                                    AND x.environment = $2))"
    "   AND (NOT $3::boolean OR EXISTS ("
    "     SELECT 1 FROM flag_env fe WHERE fe.flag_key = f.key"
    "       AND ($2::text IS NULL OR fe.environment = $2)"
    "       AND ((fe.updated_at < now() - make_interval(days => $4::int)"
    "             AND (NOT (fe.config->>'enabled')::boolean"
    "                  OR (jsonb_array_length(COALESCE(fe.config->'rules', '[]')) = 0"
    "                      AND jsonb_typeof(fe.config->'split') IS DISTINCT FROM 'array')))"
    "         OR COALESCE((SELECT max(ec.last_evaluated_at) FROM flag_eval_count ec"
    "                      WHERE ec.flag_key = f.key AND ec.environment = fe.environment),"
    "                     f.created_at) < now() - make_interval(days => $4::int))))");

int flags_store_list(struct db_conn *c, const char *tag, const char *environment, int stale,
                     int stale_days, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, tag);
    db_param_text(&p, environment);
    db_param_bool(&p, stale);
    db_param_int(&p, stale_days);
    return db_execp_json(c, &q_list, &p, out);
}

static struct db_stmt q_last_version = DB_STMT(
    "flags_last_version", 1, "SELECT COALESCE(max(version), 0) FROM flag_version WHERE flag_key = $1");

int flags_store_last_version(struct db_conn *c, const char *key, int64_t *out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    PGresult *res = NULL;
    int rc = db_execp(c, &q_last_version, &p, &res);
    if (rc > 0)
        *out = db_get_int64(res, 0, 0);
    PQclear(res);
    return rc;
}

static struct db_stmt q_insert = DB_STMT(
    "flags_insert", 8,
    "INSERT INTO flag (key, description, owner, type, variants, salt, tags, version)"
    " VALUES ($1, $2, $3, $4, $5::jsonb, $6,"
    "         ARRAY(SELECT jsonb_array_elements_text($7::jsonb)), $8::bigint)");

int flags_store_insert(struct db_conn *c, const char *key, const char *description,
                       const char *owner, const char *type, const json_t *variants,
                       const char *salt, const json_t *tags, int64_t version)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    db_param_text(&p, description);
    db_param_text(&p, owner);
    db_param_text(&p, type);
    db_param_json(&p, variants);
    db_param_text(&p, salt);
    db_param_json(&p, tags);
    db_param_int(&p, version);
    return db_execp(c, &q_insert, &p, NULL);
}

static struct db_stmt q_env_insert_all =
    DB_STMT("flags_env_insert_all", 3,
            "INSERT INTO flag_env (flag_key, environment, config, version)"
            " SELECT $1, name, $2::jsonb, $3::bigint FROM environment");

int flags_store_env_insert_all(struct db_conn *c, const char *key, const json_t *config,
                               int64_t version)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    db_param_json(&p, config);
    db_param_int(&p, version);
    return db_execp(c, &q_env_insert_all, &p, NULL);
}

static struct db_stmt q_update_def = DB_STMT(
    "flags_update_def", 8,
    "UPDATE flag SET description = $2, owner = $3, variants = $4::jsonb, salt = $5,"
    " tags = ARRAY(SELECT jsonb_array_elements_text($6::jsonb)), archived = $7::boolean,"
    " version = $8::bigint, updated_at = now() WHERE key = $1");

int flags_store_update_definition(struct db_conn *c, const char *key, const char *description,
                                  const char *owner, const json_t *variants, const char *salt,
                                  const json_t *tags, int archived, int64_t version)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    db_param_text(&p, description);
    db_param_text(&p, owner);
    db_param_json(&p, variants);
    db_param_text(&p, salt);
    db_param_json(&p, tags);
    db_param_bool(&p, archived);
    db_param_int(&p, version);
    return db_execp(c, &q_update_def, &p, NULL);
}

static struct db_stmt q_set_version =
    DB_STMT("flags_set_version", 2,
            "UPDATE flag SET version = $2::bigint, updated_at = now() WHERE key = $1");

int flags_store_set_version(struct db_conn *c, const char *key, int64_t version)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    db_param_int(&p, version);
    return db_execp(c, &q_set_version, &p, NULL);
}

static struct db_stmt q_env_set = DB_STMT(
    "flags_env_set", 4,
    "UPDATE flag_env SET config = $3::jsonb, version = $4::bigint, updated_at = now()"
    " WHERE flag_key = $1 AND environment = $2");

int flags_store_env_set(struct db_conn *c, const char *key, const char *environment,
                        const json_t *config, int64_t version)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    db_param_text(&p, environment);
    db_param_json(&p, config);
    db_param_int(&p, version);
    return db_execp(c, &q_env_set, &p, NULL);
}

static struct db_stmt q_delete = DB_STMT("flags_delete", 1, "DELETE FROM flag WHERE key = $1");

int flags_store_delete(struct db_conn *c, const char *key)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    return db_execp(c, &q_delete, &p, NULL);
}

static struct db_stmt q_version_insert = DB_STMT(
    "flags_version_insert", 8,
    "INSERT INTO flag_version (flag_key, version, environment, action, doc, diff, comment, actor)"
    " VALUES ($1, $2::bigint, $3, $4, $5::jsonb, $6::jsonb, COALESCE($7, ''), $8)");

int flags_store_version_insert(struct db_conn *c, const char *key, int64_t version,
                               const char *environment, const char *action, const json_t *doc,
                               const json_t *diff, const char *comment, const char *actor)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    db_param_int(&p, version);
    db_param_text(&p, environment);
    db_param_text(&p, action);
    db_param_json(&p, doc);
    db_param_json(&p, diff);
    db_param_text(&p, comment);
    db_param_text(&p, actor);
    return db_execp(c, &q_version_insert, &p, NULL);
}

static struct db_stmt q_versions = DB_STMT(
    "flags_versions", 4,
    "SELECT json_build_object('items', COALESCE(json_agg(v ORDER BY v.version DESC),"
    " '[]'::json))::text FROM (SELECT version, environment, action, diff, comment, actor,"
    " " DB_TIME_JSON("created_at") " AS created_at, doc FROM flag_version"
    " WHERE flag_key = $1 AND ($2::text IS NULL OR environment = $2 OR environment IS NULL)"
    "   AND ($3::bigint = 0 OR version < $3::bigint)"
    " ORDER BY version DESC LIMIT $4::int) v");

int flags_store_versions(struct db_conn *c, const char *key, const char *environment,
                         int64_t before, int limit, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    db_param_text(&p, environment);
    db_param_int(&p, before);
    db_param_int(&p, limit);
    return db_execp_json(c, &q_versions, &p, out);
}

static struct db_stmt q_version_doc = DB_STMT(
    "flags_version_doc", 2,
    "SELECT doc::text FROM flag_version WHERE flag_key = $1 AND version = $2::bigint");

int flags_store_version_doc(struct db_conn *c, const char *key, int64_t version, json_t **doc)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    db_param_int(&p, version);
    return db_execp_json(c, &q_version_doc, &p, doc);
}

static struct db_stmt q_prereq_graph = DB_STMT(
    "flags_prereq_graph", 1,
    "SELECT COALESCE(json_object_agg(flag_key, (SELECT COALESCE(json_agg(p->>'flag'),"
    " '[]'::json) FROM jsonb_array_elements(COALESCE(config->'prerequisites', '[]')) p)),"
    " '{}'::json)::text FROM flag_env WHERE environment = $1");

int flags_store_prereq_graph(struct db_conn *c, const char *environment, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, environment);
    return db_execp_json(c, &q_prereq_graph, &p, out);
}

static struct db_stmt q_variants =
    DB_STMT("flags_variants", 1, "SELECT variants::text FROM flag WHERE key = $1");

int flags_store_variants(struct db_conn *c, const char *key, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    return db_execp_json(c, &q_variants, &p, out);
}

static struct db_stmt q_segment_users = DB_STMT(
    "flags_segment_users", 1,
    "SELECT COALESCE(json_agg(DISTINCT flag_key), '[]'::json)::text FROM flag_env"
    " WHERE jsonb_path_exists(config, '$.rules[*].conditions[*] ? (@.value == $name)',"
    "                         jsonb_build_object('name', $1::text))");

int flags_store_segment_users(struct db_conn *c, const char *segment, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, segment);
    return db_execp_json(c, &q_segment_users, &p, out);
}

/* ---- segments ---- */

#define SEGMENT_DOC                                                                            \
    "json_build_object('name', s.name, 'description', s.description, 'conditions',"            \
    " s.conditions, 'included', s.included, 'excluded', s.excluded, 'version', s.version,"     \
    " 'created_at', " DB_TIME_JSON("s.created_at") ", 'updated_at', " DB_TIME_JSON(            \
        "s.updated_at") ")"

static struct db_stmt q_segments_list = DB_STMT(
    "flags_segments_list", 0,
    "SELECT json_build_object('items', COALESCE(json_agg(" SEGMENT_DOC " ORDER BY s.name),"
    " '[]'::json))::text FROM flag_segment s");

int flags_store_segments_list(struct db_conn *c, json_t **out)
{
    return db_exec_json(c, &q_segments_list, NULL, out);
}

static struct db_stmt q_segment_get = DB_STMT(
    "flags_segment_get", 1, "SELECT " SEGMENT_DOC "::text FROM flag_segment s WHERE name = $1");

int flags_store_segment_get(struct db_conn *c, const char *name, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    return db_execp_json(c, &q_segment_get, &p, out);
}

static struct db_stmt q_segment_insert = DB_STMT(
    "flags_segment_insert", 5,
    "INSERT INTO flag_segment (name, description, conditions, included, excluded)"
    " VALUES ($1, COALESCE($2, ''), $3::jsonb, $4::jsonb, $5::jsonb)");

int flags_store_segment_insert(struct db_conn *c, const char *name, const char *description,
                               const json_t *conditions, const json_t *included,
                               const json_t *excluded)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    db_param_text(&p, description);
    db_param_json(&p, conditions);
    db_param_json(&p, included);
    db_param_json(&p, excluded);
    return db_execp(c, &q_segment_insert, &p, NULL);
}

static struct db_stmt q_segment_update = DB_STMT(
    "flags_segment_update", 6,
    "UPDATE flag_segment SET description = COALESCE($2, ''), conditions = $3::jsonb,"
    " included = $4::jsonb, excluded = $5::jsonb, version = version + 1, updated_at = now()"
    " WHERE name = $1 AND ($6::bigint = 0 OR version = $6::bigint)");

int flags_store_segment_update(struct db_conn *c, const char *name, const char *description,
                               const json_t *conditions, const json_t *included,
                               const json_t *excluded, int64_t expected)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    db_param_text(&p, description);
    db_param_json(&p, conditions);
    db_param_json(&p, included);
    db_param_json(&p, excluded);
    db_param_int(&p, expected);
    return db_execp(c, &q_segment_update, &p, NULL);
}

static struct db_stmt q_segment_delete =
    DB_STMT("flags_segment_delete", 1, "DELETE FROM flag_segment WHERE name = $1");

int flags_store_segment_delete(struct db_conn *c, const char *name)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    return db_execp(c, &q_segment_delete, &p, NULL);
}

static struct db_stmt q_segment_exists =
    DB_STMT("flags_segment_exists", 1, "SELECT 1 FROM flag_segment WHERE name = $1");

int flags_store_segment_exists(struct db_conn *c, const char *name)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    return db_execp(c, &q_segment_exists, &p, NULL);
}

/* ---- evaluation counts ---- */

static struct db_stmt q_counts_add = DB_STMT(
    "flags_counts_add", 1,
    "INSERT INTO flag_eval_count AS ec (flag_key, environment, variant, count, last_evaluated_at)"
    " SELECT r->>'flag', r->>'environment', r->>'variant', (r->>'count')::bigint, now()"
    " FROM jsonb_array_elements($1::jsonb) r"
    " ON CONFLICT (flag_key, environment, variant) DO UPDATE"
    " SET count = ec.count + EXCLUDED.count, last_evaluated_at = now()");

int flags_store_counts_add(struct db_conn *c, const json_t *rows)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_json(&p, rows);
    return db_execp(c, &q_counts_add, &p, NULL);
}

/* ---- change requests ---- */

#define CR_DOC                                                                                 \
    "json_build_object('id', r.id, 'flag', r.flag_key, 'environment', r.environment,"          \
    " 'action', r.action, 'config', r.config, 'base_version', r.base_version, 'comment',"      \
    " r.comment, 'state', r.state, 'requested_by', r.requested_by, 'requested_at', "           \
    DB_TIME_JSON("r.requested_at") ", 'decided_by', r.decided_by, 'decided_at', "              \
    DB_TIME_JSON("r.decided_at") ", 'decision_comment', r.decision_comment)"

static struct db_stmt q_cr_insert = DB_STMT(
    "flags_cr_insert", 7,
    "WITH r AS (INSERT INTO flag_change_request (flag_key, environment, action, config,"
    " base_version, comment, requested_by) VALUES ($1, $2, $3, $4::jsonb, $5::bigint,"
    " COALESCE($6, ''), $7) RETURNING *) SELECT " CR_DOC "::text FROM r");

int flags_store_cr_insert(struct db_conn *c, const char *key, const char *environment,
                          const char *action, const json_t *config, int64_t base_version,
                          const char *comment, const char *requested_by, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    db_param_text(&p, environment);
    db_param_text(&p, action);
    db_param_json(&p, config);
    db_param_int(&p, base_version);
    db_param_text(&p, comment);
    db_param_text(&p, requested_by);
    return db_execp_json(c, &q_cr_insert, &p, out);
}

static struct db_stmt q_cr_list = DB_STMT(
    "flags_cr_list", 1,
    "SELECT json_build_object('items', COALESCE(json_agg(" CR_DOC " ORDER BY r.id DESC),"
    " '[]'::json))::text FROM (SELECT * FROM flag_change_request"
    " WHERE $1::text IS NULL OR state = $1 ORDER BY id DESC LIMIT 500) r");

int flags_store_cr_list(struct db_conn *c, const char *state, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, state);
    return db_execp_json(c, &q_cr_list, &p, out);
}

static struct db_stmt q_cr_get_lock = DB_STMT(
    "flags_cr_get_lock", 1,
    "SELECT " CR_DOC "::text FROM flag_change_request r WHERE id = $1::bigint FOR UPDATE");

int flags_store_cr_get_for_update(struct db_conn *c, int64_t id, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    return db_execp_json(c, &q_cr_get_lock, &p, out);
}

static struct db_stmt q_cr_decide = DB_STMT(
    "flags_cr_decide", 4,
    "WITH r AS (UPDATE flag_change_request SET state = $2, decided_by = $3, decided_at = now(),"
    " decision_comment = $4 WHERE id = $1::bigint AND state = 'pending' RETURNING *)"
    " SELECT " CR_DOC "::text FROM r");

int flags_store_cr_decide(struct db_conn *c, int64_t id, const char *state,
                          const char *decided_by, const char *comment, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, state);
    db_param_text(&p, decided_by);
    db_param_text(&p, comment);
    return db_execp_json(c, &q_cr_decide, &p, out);
}

/* ---- rollouts ---- */

#define ROLLOUT_DOC                                                                            \
    "json_build_object('id', r.id, 'flag', r.flag_key, 'environment', r.environment,"          \
    " 'variant', r.variant, 'steps', r.steps, 'base_version', r.base_version, 'state',"        \
    " r.state, 'comment', r.comment, 'created_by', r.created_by, 'created_at', "               \
    DB_TIME_JSON("r.created_at") ", 'updated_at', " DB_TIME_JSON("r.updated_at") ")"

static struct db_stmt q_rollout_insert = DB_STMT(
    "flags_rollout_insert", 7,
    "WITH r AS (INSERT INTO flag_rollout (flag_key, environment, variant, steps, base_version,"
    " comment, created_by) VALUES ($1, $2, $3, $4::jsonb, $5::bigint, COALESCE($6, ''), $7)"
    " RETURNING *) SELECT " ROLLOUT_DOC "::text FROM r");

int flags_store_rollout_insert(struct db_conn *c, const char *key, const char *environment,
                               const char *variant, const json_t *steps, int64_t base_version,
                               const char *comment, const char *created_by, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    db_param_text(&p, environment);
    db_param_text(&p, variant);
    db_param_json(&p, steps);
    db_param_int(&p, base_version);
    db_param_text(&p, comment);
    db_param_text(&p, created_by);
    return db_execp_json(c, &q_rollout_insert, &p, out);
}

static struct db_stmt q_rollout_get_lock = DB_STMT(
    "flags_rollout_get_lock", 1,
    "SELECT " ROLLOUT_DOC "::text FROM flag_rollout r WHERE id = $1::bigint FOR UPDATE");

int flags_store_rollout_get_for_update(struct db_conn *c, int64_t id, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    return db_execp_json(c, &q_rollout_get_lock, &p, out);
}

static struct db_stmt q_rollout_set = DB_STMT(
    "flags_rollout_set", 3,
    "WITH r AS (UPDATE flag_rollout SET state = $2, steps = $3::jsonb, updated_at = now()"
    " WHERE id = $1::bigint RETURNING *) SELECT " ROLLOUT_DOC "::text FROM r");

int flags_store_rollout_set(struct db_conn *c, int64_t id, const char *state,
                            const json_t *steps, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, id);
    db_param_text(&p, state);
    db_param_json(&p, steps);
    return db_execp_json(c, &q_rollout_set, &p, out);
}

static struct db_stmt q_rollouts_list = DB_STMT(
    "flags_rollouts_list", 1,
    "SELECT json_build_object('items', COALESCE(json_agg(" ROLLOUT_DOC " ORDER BY r.id DESC),"
    " '[]'::json))::text FROM flag_rollout r WHERE flag_key = $1");

int flags_store_rollouts_list(struct db_conn *c, const char *key, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    return db_execp_json(c, &q_rollouts_list, &p, out);
}

static struct db_stmt q_rollouts_active = DB_STMT(
    "flags_rollouts_active", 2,
    "SELECT 1 FROM flag_rollout WHERE flag_key = $1 AND environment = $2 AND state = 'active'");

int flags_store_rollouts_active(struct db_conn *c, const char *key, const char *environment)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, key);
    db_param_text(&p, environment);
    return db_execp(c, &q_rollouts_active, &p, NULL);
}
