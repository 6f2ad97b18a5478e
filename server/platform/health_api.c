#include <stdlib.h>
#include <string.h>

#include "platform/db.h"
#include "platform/health.h"
#include "platform/metrics.h"
#include "platform/migrate.h"

extern const char openapi_yaml[];
extern const size_t openapi_yaml_len;

void health_live(struct http_request *req)
{
    http_reply_json(req, 200, json_pack("{s:s}", "status", "ok"));
}

void health_ready(struct http_request *req)
{
    struct db_conn *c = http_db(req);
    if (!c) {
        http_reply_problem(req, QDB_E_NOT_READY, "state store unreachable");
        return;
    }
    char why[256] = "";
    int rc = migrate_status(c, why, sizeof why);
    if (rc < 0) {
        http_reply_problem(req, QDB_E_NOT_READY, "state store query failed: %s",
                           rc == DB_RETRY ? "connection lost" : "error");
        return;
    }
    if (rc > 0) {
        http_reply_problem(req, QDB_E_NOT_READY, "%s", why);
        return;
    }
    http_reply_json(req, 200,
                    json_pack("{s:s,s:i}", "status", "ready", "schema_version",
                              migrate_latest_version()));
}

void health_metrics(struct http_request *req)
{
    struct buf out;
    buf_init(&out, 0);
    if (metrics_render(&out) != 0) {
        buf_free(&out);
        http_reply_problem(req, QDB_E_INTERNAL, "cannot render metrics");
        return;
    }
    size_t len = out.len;
    http_reply_data_take(req, 200, "text/plain; version=0.0.4; charset=utf-8", buf_take(&out),
                         len);
}

void health_openapi(struct http_request *req)
{
    http_reply_data(req, 200, "application/yaml", openapi_yaml, openapi_yaml_len);
}
