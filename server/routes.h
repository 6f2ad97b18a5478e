/* The one route table of the service: every HTTP route, its handler and the least role it
 * needs. api/openapi.yaml describes the same routes; a test fails when they differ. */
#ifndef QDB_ROUTES_H
#define QDB_ROUTES_H

#include <stddef.h>

#include "platform/http.h"

extern const struct http_route qdb_routes[];
extern const size_t qdb_routes_count;

#endif
