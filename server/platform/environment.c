#include "platform/environment.h"

static struct db_stmt q_exists =
    DB_STMT("environment_exists", 1, "SELECT 1 FROM environment WHERE name = $1");

int environment_exists(struct db_conn *conn, const char *name)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    return db_execp(conn, &q_exists, &p, NULL);
}

static struct db_stmt q_get = DB_STMT(
    "environment_get", 1,
    "SELECT json_build_object('name', name, 'display_name', display_name, 'purpose', purpose, "
    "'cluster', cluster, 'data', data, 'access', access, 'promotion_order', promotion_order) "
    "FROM environment WHERE name = $1");

int environment_get_json(struct db_conn *conn, const char *name, json_t **out)
{
    struct db_params p = DB_PARAMS_INIT;
    db_param_text(&p, name);
    return db_execp_json(conn, &q_get, &p, out);
}

static struct db_stmt q_list = DB_STMT(
    "environment_list", 0,
    "SELECT coalesce(json_agg(json_build_object('name', name, 'display_name', display_name, "
    "'purpose', purpose, 'cluster', cluster, 'data', data, 'access', access, "
    "'promotion_order', promotion_order) ORDER BY sort_order), '[]'::json) FROM environment");

void environment_api_list(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *items = NULL;
    int rc = db_exec_json(c, &q_list, NULL, &items);
    if (rc <= 0) {
        http_reply_db_error(req, rc < 0 ? rc : DB_HARD);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:o}", "items", items));
}
