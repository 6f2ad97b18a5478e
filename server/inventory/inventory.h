/* The inventory room's door: environments' configuration matrix and targets, managed
 * PostgreSQL databases, Kafka topics and consumer groups, Debezium connectors (sections 2-4
 * and 6 of the infrastructure design) as data; provisioning jobs that make them real on
 * the targets; the drift plan that compares the two (migrations/0010_inventory.sql).
 *
 * Secrets are references only ("file:/run/secrets/pg-admin", "env:QDB_PG_ADMIN"), accepted
 * only under the prefixes of QDB_SECRET_DIRS and resolved only when a job (or a plan) talks
 * to a target; no reply, log line, event or audit record holds a resolved value.
 *
 * Other rooms (backup, dr) look up a managed database and its connections here, and resolve
 * its admin secret only for the connection they are about to open. */
#ifndef QDB_INVENTORY_H
#define QDB_INVENTORY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "module.h"
#include "platform/db.h"
#include "platform/http.h"

extern const struct qdb_module inventory_module;

/* One PostgreSQL server of a managed database, with the environment's postgres target
 * filled in for what the database leaves out. admin_secret is a reference, never a value. */
struct inventory_pg_endpoint {
    char host[256];
    int port;
    char admin_user[64];
    char admin_secret[512]; /* "file:..." / "env:..." or "" (no password: trust, peer) */
    char sslmode[16];       /* "" = libpq's default */
};

/* A managed database as the backup and DR rooms need it. */
struct inventory_database {
    int64_t id;
    char environment[33];
    char name[64];
    char owner[64];
    char engine_version[16];
    struct inventory_pg_endpoint primary;
    int has_standby; /* 0: standby is all zero */
    struct inventory_pg_endpoint standby;
};

/* Look a managed database up by id (id > 0; environment and name ignored), or by
 * environment and name (id 0). Fills *out. Returns 1, 0 when there is none, or a DB_ code.
 * The connection is the caller's (a request's or a worker's). */
int inventory_database_lookup(struct db_conn *conn, int64_t id, const char *environment,
                              const char *name, struct inventory_database *out);

/* A failover or switchover made the standby the primary: swap the database's primary and
 * standby connections inside the caller's transaction. *before and *after (new, NULL when
 * nothing changed) are its API documents, for the caller's audit record. Returns 1, 0 when
 * there is no such database or it has no standby, or a DB_ code. */
int inventory_database_swap_roles(struct db_conn *conn, int64_t id, json_t **before,
                                  json_t **after);

/* Whether `ref` is a secret reference this process accepts: "file:/abs/path" under one of
 * QDB_SECRET_DIRS' directories (no "." or ".." segment), or "env:NAME" when QDB_SECRET_DIRS
 * lists "env:PREFIX" and NAME starts with PREFIX. Returns 1, or 0 with the reason in err. */
int inventory_secret_ref_valid(const char *ref, char *err, size_t errlen);

/* Resolve a reference into out[outlen] (NUL-terminated, a trailing newline dropped): the
 * file's contents (its real path must still lie under an allowed directory) or the
 * variable's value. Returns 0, or -1 with a reason in err that never holds the value. The
 * caller wipes out with inventory_secret_wipe when done. */
int inventory_secret_resolve(const char *ref, char *out, size_t outlen, char *err, size_t errlen);
void inventory_secret_wipe(void *p, size_t n);

/* A libpq connection to `dbname` on endpoint `ep` with its resolved admin secret, opened
 * with a connect timeout of `timeout_s`. Returns the connection (PQfinish it) or NULL with
 * a reason in err (libpq's message, which never holds the password). */
PGconn *inventory_pg_connect(const struct inventory_pg_endpoint *ep, const char *dbname,
                             int timeout_s, char *err, size_t errlen);

/* ---- HTTP handlers (server/routes.c) ---- */
void inventory_api_environment_get(struct http_request *req);   /* GET  /environments/{env} */
void inventory_api_environment_patch(struct http_request *req); /* PATCH (admin) */
void inventory_api_pgbouncer_ini(struct http_request *req);     /* GET .../pgbouncer.ini */
void inventory_api_plan(struct http_request *req);              /* GET .../plan */
void inventory_api_apply(struct http_request *req);             /* POST .../apply */
void inventory_api_databases_list(struct http_request *req);
void inventory_api_databases_create(struct http_request *req);
void inventory_api_databases_get(struct http_request *req);
void inventory_api_databases_patch(struct http_request *req);
void inventory_api_databases_delete(struct http_request *req);
void inventory_api_topics_list(struct http_request *req);
void inventory_api_topics_create(struct http_request *req);
void inventory_api_topics_get(struct http_request *req);
void inventory_api_topics_patch(struct http_request *req);
void inventory_api_topics_delete(struct http_request *req);
void inventory_api_groups_list(struct http_request *req);
void inventory_api_groups_create(struct http_request *req);
void inventory_api_groups_get(struct http_request *req);
void inventory_api_groups_patch(struct http_request *req);
void inventory_api_groups_delete(struct http_request *req);
void inventory_api_groups_lag(struct http_request *req);
void inventory_api_connectors_list(struct http_request *req);
void inventory_api_connectors_create(struct http_request *req);
void inventory_api_connectors_get(struct http_request *req);
void inventory_api_connectors_patch(struct http_request *req);
void inventory_api_connectors_delete(struct http_request *req);
void inventory_api_import(struct http_request *req); /* POST /inventory/import */

#endif
