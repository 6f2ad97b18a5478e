/* Declarative parsing of query strings, as jsonspec.h does for bodies: describe the
 * parameters a route takes in one array and parse them in one call, which answers 400
 * problem+json (QDB_E_VALIDATION, "field" naming the parameter) on the first failure.
 *
 * Rules, the same for every route that has a spec:
 *   - a parameter not in the spec is refused ("x is not a parameter of this route"), so a
 *     misspelt filter never silently widens a listing; so is a parameter given twice;
 *   - values are decoded, and must be well-formed UTF-8 without NUL (%00);
 *   - an empty value (`?limit=`) is a value: refused by INT, TIME, ENUM and BOOL, and by
 *     STRING unless its minimum length is 0.
 * Routes that take no query parameters have no spec and do not read the query string. */
#ifndef QDB_PLATFORM_QUERYSPEC_H
#define QDB_PLATFORM_QUERYSPEC_H

#include <stdint.h>

#include "platform/http.h"

enum qspec_type {
    QSPEC_STRING, /* out: const char ** (borrowed from the request) */
    QSPEC_INT,    /* out: int64_t *; decimal, optional '-', no '+', spaces or overflow */
    QSPEC_ENUM,   /* out: int * index into `choices` */
    QSPEC_TIME,   /* RFC 3339 (platform/rfc3339.h); out: int64_t * Unix microseconds */
    QSPEC_BOOL,   /* "true" or "false"; out: int * */
};

struct qspec_param {
    const char *name;
    enum qspec_type type;
    int required;
    int64_t min, max;           /* INT: value range; STRING: length range in bytes (max 0 = 256) */
    const char *const *choices; /* ENUM: NULL-terminated */
    void *out;                  /* left untouched when the parameter is absent */
    int *present;               /* optional: set to 1 when the parameter was given */
};
#define QSPEC_END {NULL, 0, 0, 0, 0, NULL, NULL, NULL}

/* Parse the request's query string against `params`. Returns 0, or -1 after replying 400
 * on req. */
int qspec_parse(struct http_request *req, const struct qspec_param *params);

/* Flags of qspec_parse_quiet. QSPEC_ALLOW_UNKNOWN: ignore parameters not in the spec, as
 * an OAuth 2.0 endpoint must (RFC 6749 section 3.1); every other rule holds. */
#define QSPEC_ALLOW_UNKNOWN 0x1u

/* The same without replying, for endpoints whose errors have a shape of their own (OAuth):
 * returns 0, or -1 with the parameter at fault in field and the reason in err. */
int qspec_parse_quiet(struct http_request *req, const struct qspec_param *params, unsigned flags,
                      char *field, size_t field_len, char *err, size_t err_len);

/* The same for one query string given as text ("a=1&b=x%20y", without '?'), for tests and
 * fuzzing: writes the failing parameter into field and the reason into err. Strings
 * returned through `out` point into `scratch` (at least strlen(query) + 1 bytes), which
 * the caller keeps while it uses them. */
int qspec_parse_text(const char *query, const struct qspec_param *params, char *scratch,
                     size_t scratch_len, char *field, size_t field_len, char *err, size_t err_len);

#endif
