/* The platform's environment list (migrations/0004_environment.sql): development,
 * integration, staging, production and dr, with their order on the promotion path. Rooms
 * reference environments by name and check a name with environment_exists. */
#ifndef QDB_PLATFORM_ENVIRONMENT_H
#define QDB_PLATFORM_ENVIRONMENT_H

#include "platform/db.h"
#include "platform/http.h"

/* Whether `name` is an environment: 1 yes, 0 no, or a DB_ code. */
int environment_exists(struct db_conn *conn, const char *name);

/* The environment `name` as GET /api/v1/environments lists it, into *out (new reference),
 * for rooms that show it with their own members (the inventory's matrix and targets).
 * Returns 1, 0 when there is no such environment, or a DB_ code. */
int environment_get_json(struct db_conn *conn, const char *name, json_t **out);

/* GET /api/v1/environments (viewer): {"items": [Environment...]} in display order. */
void environment_api_list(struct http_request *req);

#endif
