/* The platform's environment list (migrations/0004_environment.sql): development,
 * integration, staging, production and dr, with their order on the promotion path. Rooms
 * reference environments by name and check a name with environment_exists. */
#ifndef QDB_PLATFORM_ENVIRONMENT_H
#define QDB_PLATFORM_ENVIRONMENT_H

#include "platform/db.h"
#include "platform/http.h"

/* Whether `name` is an environment: 1 yes, 0 no, or a DB_ code. */
int environment_exists(struct db_conn *conn, const char *name);

/* GET /api/v1/environments (viewer): {"items": [Environment...]} in display order. */
void environment_api_list(struct http_request *req);

#endif
