/* HTTP handlers of the DR room: the scenarios and targets, the status table, the 202s that
 * start a failover, a switchover or a drill (each checked here first, so that bad input
 * gets its problem+json and changes nothing), and the history. Every change is audited and
 * emitted in its own transaction, with its job and its history row. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "auth/auth.h"
#include "dr/dr_internal.h"
#include "inventory/inventory.h"
#include "platform/jsonspec.h"
#include "platform/queryspec.h"

static int id_param(struct http_request *req, const char *what, int64_t *id)
{
    const char *s = http_param(req, "id");
    char *end = NULL;
    long long v = s && s[0] >= '1' && s[0] <= '9' && strlen(s) <= 18 ? strtoll(s, &end, 10) : 0;
    if (!end || *end || v <= 0) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no %s %.40s", what, s ? s : "");
        return -1;
    }
    *id = v;
    return 0;
}

static int emit(struct db_conn *c, struct http_request *req, const char *action, const char *type,
                const char *rid, const char *environment, json_t *after, const char *verb,
                const char *subject)
{
    struct audit_entry e = {.action = action,
                            .resource_type = type,
                            .resource_id = rid,
                            .environment = environment,
                            .after = after};
    int rc = audit_record_http(c, req, &e);
    if (rc >= 0)
        rc = audit_event_emit_http(
            c, req,
            &(struct audit_event){.room = "dr", .verb = verb, .subject = subject, .data = after});
    return rc;
}

static const char *caller(struct http_request *req)
{
    const struct http_principal *p = http_principal(req);
    return p && p->subject[0] ? p->subject : "system";
}

/* ---- scenarios, status ---- */

void dr_api_scenarios(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *items = NULL, *targets = NULL;
    int rc = dr_store_scenarios(c, &items);
    if (rc >= 0)
        rc = dr_store_targets(c, &targets);
    if (rc < 0) {
        json_decref(items);
        http_reply_db_error(req, rc);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:o,s:o}", "items", items, "targets", targets));
}

void dr_api_status(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *out = NULL;
    int rc = dr_status_compute(c, &out);
    if (rc < 0)
        http_reply_db_error(req, rc);
    else
        http_reply_json(req, 200, out);
}

/* ---- failover and switchover ---- */

/* The database of the path with its standby, 404 / 409 otherwise; 0 or -1 after replying. */
static int pair_of(struct http_request *req, struct db_conn *c, int64_t id,
                   struct inventory_database *db)
{
    int rc = inventory_database_lookup(c, id, NULL, NULL, db);
    if (rc <= 0) {
        if (rc < 0)
            http_reply_db_error(req, rc);
        else
            http_reply_problem(req, QDB_E_NOT_FOUND, "no database %lld", (long long)id);
        return -1;
    }
    if (auth_require_environment(req, db->environment) != 0)
        return -1;
    if (!db->has_standby || !db->standby.host[0]) {
        http_reply_problem(req, QDB_E_DR_REFUSED,
                           "%s/%s has no standby: there is nothing to promote", db->environment,
                           db->name);
        return -1;
    }
    if (!db->primary.host[0]) {
        http_reply_problem(req, QDB_E_DR_REFUSED, "%s/%s has no primary server in the inventory",
                           db->environment, db->name);
        return -1;
    }
    return 0;
}

struct op_tx {
    struct http_request *req;
    const struct inventory_database *db;
    const char *kind; /* "failover" / "switchover" */
    int64_t max_lag_bytes;
    int64_t abandon_id; /* an earlier row whose job ended without finishing it, or 0 */
    int64_t id, job_id;
};

static int op_fn(struct db_conn *c, void *cls)
{
    struct op_tx *t = cls;
    int rc = 0;
    if (t->abandon_id && (rc = dr_store_failover_finish(c, t->abandon_id, "failed",
                                                        "its job ended without finishing it")) < 0)
        return rc;
    rc = dr_store_failover_insert(c, t->kind, t->db, caller(t->req), t->max_lag_bytes, &t->id);
    if (rc < 0)
        return rc;
    char kind[32];
    snprintf(kind, sizeof kind, "dr.%s", t->kind);
    json_t *args =
        json_pack("{s:I,s:I}", "database", (json_int_t)t->db->id, "op", (json_int_t)t->id);
    if (t->max_lag_bytes >= 0)
        json_object_set_new(args, "max_lag_bytes", json_integer(t->max_lag_bytes));
    rc = dr_enqueue(c, kind, args, caller(t->req), &t->job_id);
    json_decref(args);
    if (rc >= 0)
        rc = dr_store_failover_set_job(c, t->id, t->job_id);
    if (rc < 0)
        return rc;
    json_t *doc = NULL;
    if ((rc = dr_store_failover_get(c, t->id, &doc)) < 0)
        return rc;
    char rid[32], subject[64], action[48], verb[48];
    snprintf(rid, sizeof rid, "%lld", (long long)t->db->id);
    snprintf(subject, sizeof subject, "databases/%lld", (long long)t->db->id);
    snprintf(action, sizeof action, "database.%s_request", t->kind);
    snprintf(verb, sizeof verb, "%s_requested", t->kind);
    rc = emit(c, t->req, action, "database", rid, t->db->environment, doc, verb, subject);
    json_decref(doc);
    return rc;
}

/* Refuse while another failover or switchover of the database is pending or running; a
 * row whose job has ended (its replica died mid-way) is closed by the new request. 0 to go
 * on (t->abandon_id set), -1 after replying. */
static int not_busy(struct http_request *req, struct db_conn *c, struct op_tx *t)
{
    int64_t id = 0, job = 0;
    int rc = dr_store_failover_active(c, t->db->id, &id, &job);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return -1;
    }
    if (rc == 0)
        return 0;
    json_t *j = job ? jobs_get_json(c, job) : NULL;
    const char *st = json_string_value(json_object_get(j, "state"));
    int ended = st && (strcmp(st, "succeeded") == 0 || strcmp(st, "failed") == 0 ||
                       strcmp(st, "cancelled") == 0);
    json_decref(j);
    if (ended) {
        t->abandon_id = id;
        return 0;
    }
    http_reply_problem_ext(
        req, QDB_E_DR_BUSY,
        json_pack("{s:I,s:I}", "failover_id", (json_int_t)id, "job_id", (json_int_t)job),
        "%s/%s: failover or switchover %lld is still running (job %lld)", t->db->environment,
        t->db->name, (long long)id, (long long)job);
    return -1;
}

static void op_reply(struct http_request *req, struct db_conn *c, struct op_tx *t)
{
    int rc = db_tx(c, op_fn, t);
    if (rc == DB_UNIQUE)
        http_reply_problem(req, QDB_E_DR_BUSY,
                           "%s/%s: another failover or switchover was "
                           "requested at the same time",
                           t->db->environment, t->db->name);
    else if (rc < 0)
        http_reply_db_error(req, rc);
    else
        jobs_reply_accepted(req, c, t->job_id);
}

/* POST /api/v1/databases/{id}/failover: no body. */
void dr_api_failover(struct http_request *req)
{
    int64_t id;
    if (id_param(req, "database", &id) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    struct inventory_database db;
    if (pair_of(req, c, id, &db) != 0)
        return;
    struct op_tx t = {.req = req, .db = &db, .kind = "failover", .max_lag_bytes = -1};
    if (not_busy(req, c, &t) != 0)
        return;
    op_reply(req, c, &t);
}

/* POST /api/v1/databases/{id}/switchover {"max_lag_bytes"?}: refused here, before any job,
 * while the primary is unhealthy or the standby lags beyond max_lag_bytes (Patroni's
 * rule); the job checks again before it fences. */
void dr_api_switchover(struct http_request *req)
{
    int64_t id, max_lag = dr_default_max_lag_bytes();
    const struct jspec_field f[] = {
        {"max_lag_bytes", JSPEC_INT, 0, 0, 1LL << 40, NULL, &max_lag, NULL},
        JSPEC_END,
    };
    json_t *body = http_body(req);
    if (id_param(req, "database", &id) != 0 || (body && jspec_parse(req, body, f, NULL, 0) != 0))
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    struct inventory_database db;
    if (pair_of(req, c, id, &db) != 0)
        return;
    struct op_tx t = {.req = req, .db = &db, .kind = "switchover", .max_lag_bytes = max_lag};
    if (not_busy(req, c, &t) != 0)
        return;
    struct dr_server_state p, s;
    dr_server_probe(&db.primary, db.name, 3, &p, NULL);
    if (!p.reachable || p.in_recovery) {
        http_reply_problem(req, QDB_E_DR_REFUSED,
                           "switchover refused: the primary %s:%d is %s; a failover is what a "
                           "failed primary needs",
                           db.primary.host, db.primary.port,
                           p.reachable ? "in recovery" : "not answering");
        return;
    }
    dr_server_probe(&db.standby, db.name, 3, &s, NULL);
    if (!s.reachable || !s.in_recovery) {
        http_reply_problem(req, QDB_E_DR_REFUSED, "switchover refused: the standby %s:%d is %s",
                           db.standby.host, db.standby.port,
                           s.reachable ? "not in recovery" : "not answering");
        return;
    }
    long long lag = p.lsn > s.lsn ? (long long)(p.lsn - s.lsn) : 0;
    if (lag > max_lag) {
        http_reply_problem_ext(req, QDB_E_DR_REFUSED,
                               json_pack("{s:I,s:I}", "lag_bytes", (json_int_t)lag, "max_lag_bytes",
                                         (json_int_t)max_lag),
                               "switchover refused: the standby lags %lld bytes, more than "
                               "max_lag_bytes %lld",
                               lag, (long long)max_lag);
        return;
    }
    op_reply(req, c, &t);
}

void dr_api_failovers_list(struct http_request *req)
{
    int64_t database = 0, limit = 50;
    const struct qspec_param q[] = {
        {"database_id", QSPEC_INT, 0, 1, INT64_MAX, NULL, &database, NULL},
        {"limit", QSPEC_INT, 0, 1, 500, NULL, &limit, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *items = NULL;
    int rc = dr_store_failover_list(c, database, (int)limit, &items);
    if (rc < 0)
        http_reply_db_error(req, rc);
    else
        http_reply_json(req, 200, json_pack("{s:o}", "items", items ? items : json_array()));
}

void dr_api_failovers_get(struct http_request *req)
{
    int64_t id;
    if (id_param(req, "failover", &id) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *doc = NULL;
    int rc = dr_store_failover_get(c, id, &doc);
    if (rc < 0)
        http_reply_db_error(req, rc);
    else if (rc == 0)
        http_reply_problem(req, QDB_E_NOT_FOUND, "no failover or switchover %lld", (long long)id);
    else
        http_reply_json(req, 200, doc);
}

/* ---- drills ---- */

struct drill_tx {
    struct http_request *req;
    const char *target_env;
    json_t *ids; /* borrowed */
    int64_t id, job_id;
};

static int drill_fn(struct db_conn *c, void *cls)
{
    struct drill_tx *t = cls;
    int rc = dr_store_drill_insert(c, caller(t->req), t->target_env, t->ids, 0, &t->id);
    if (rc < 0)
        return rc;
    json_t *args = json_pack("{s:I}", "drill", (json_int_t)t->id);
    rc = dr_enqueue(c, "dr.drill", args, caller(t->req), &t->job_id);
    json_decref(args);
    if (rc >= 0)
        rc = dr_store_drill_set_job(c, t->id, t->job_id);
    json_t *doc = NULL;
    if (rc >= 0)
        rc = dr_store_drill_get(c, t->id, &doc);
    if (rc < 0)
        return rc;
    char rid[32], subject[48];
    snprintf(rid, sizeof rid, "%lld", (long long)t->id);
    snprintf(subject, sizeof subject, "drills/%lld", (long long)t->id);
    rc = emit(c, t->req, "dr_drill.create", "dr_drill", rid, t->target_env, doc, "drill_requested",
              subject);
    json_decref(doc);
    return rc;
}

/* POST /api/v1/dr/drills {"databases": [ids], "target_environment": "dr"} */
void dr_api_drills_create(struct http_request *req)
{
    const char *target_env = NULL;
    json_t *dbs = NULL;
    const struct jspec_field f[] = {
        {"databases", JSPEC_ARRAY, 1, 0, 0, NULL, &dbs, NULL},
        {"target_environment", JSPEC_STRING, 1, 1, 32, NULL, &target_env, NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, http_body(req), f, NULL, 0) != 0)
        return;
    size_t n = json_array_size(dbs), i, k;
    json_t *v;
    if (n == 0 || n > 50) {
        http_reply_invalid(req, "databases", "databases: 1 to 50 inventory database ids");
        return;
    }
    json_array_foreach(dbs, i, v)
    {
        int dup = 0;
        for (k = 0; k < i; k++)
            dup |= json_equal(json_array_get(dbs, k), v);
        if (!json_is_integer(v) || json_integer_value(v) <= 0 || dup) {
            http_reply_invalid(req, "databases",
                               "databases: inventory database ids, each once (item %zu)", i);
            return;
        }
    }
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    if (auth_require_environment(req, target_env) != 0)
        return;
    json_array_foreach(dbs, i, v)
    {
        struct inventory_database src, dst;
        int64_t id = json_integer_value(v);
        int rc = inventory_database_lookup(c, id, NULL, NULL, &src);
        if (rc < 0) {
            http_reply_db_error(req, rc);
            return;
        }
        if (rc == 0) {
            http_reply_problem_ext(req, QDB_E_DR_INVALID, json_pack("{s:s}", "field", "databases"),
                                   "no database %lld in the inventory", (long long)id);
            return;
        }
        if (strcmp(src.environment, target_env) == 0) {
            http_reply_problem_ext(req, QDB_E_DR_INVALID,
                                   json_pack("{s:s}", "field", "target_environment"),
                                   "%s/%s is in %s itself: a drill restores into another "
                                   "environment",
                                   src.environment, src.name, target_env);
            return;
        }
        rc = inventory_database_lookup(c, 0, target_env, src.name, &dst);
        if (rc < 0) {
            http_reply_db_error(req, rc);
            return;
        }
        if (rc == 0 || !dst.primary.host[0]) {
            http_reply_problem_ext(
                req, QDB_E_DR_INVALID, json_pack("{s:s}", "field", "target_environment"),
                "%s has no database %s with a server to restore into", target_env, src.name);
            return;
        }
        if (dr_same_server(&dst.primary, &src.primary) ||
            (src.has_standby && dr_same_server(&dst.primary, &src.standby))) {
            http_reply_problem_ext(req, QDB_E_DR_INVALID,
                                   json_pack("{s:s}", "field", "target_environment"),
                                   "refused: %s/%s is on the source's own server %s:%d; a drill "
                                   "never touches the source",
                                   target_env, src.name, dst.primary.host, dst.primary.port);
            return;
        }
    }
    struct drill_tx t = {.req = req, .target_env = target_env, .ids = dbs};
    int rc = db_tx(c, drill_fn, &t);
    if (rc < 0)
        http_reply_db_error(req, rc);
    else
        jobs_reply_accepted(req, c, t.job_id);
}

void dr_api_drills_list(struct http_request *req)
{
    int64_t limit = 50;
    const struct qspec_param q[] = {
        {"limit", QSPEC_INT, 0, 1, 500, NULL, &limit, NULL},
        QSPEC_END,
    };
    if (qspec_parse(req, q) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *items = NULL;
    int rc = dr_store_drill_list(c, (int)limit, &items);
    if (rc < 0)
        http_reply_db_error(req, rc);
    else
        http_reply_json(req, 200, json_pack("{s:o}", "items", items ? items : json_array()));
}

void dr_api_drills_get(struct http_request *req)
{
    int64_t id;
    if (id_param(req, "drill", &id) != 0)
        return;
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *doc = NULL;
    int rc = dr_store_drill_get(c, id, &doc);
    if (rc < 0)
        http_reply_db_error(req, rc);
    else if (rc == 0)
        http_reply_problem(req, QDB_E_NOT_FOUND, "no drill %lld", (long long)id);
    else
        http_reply_json(req, 200, doc);
}
