/* Declarative parsing of JSON request bodies: describe the fields once, parse in one call
 * that answers 400 problem+json naming the field on failure. Handlers then work with C
 * values only. */
#ifndef QDB_PLATFORM_JSONSPEC_H
#define QDB_PLATFORM_JSONSPEC_H

#include <jansson.h>
#include <stdint.h>

#include "platform/http.h"

enum jspec_type {
    JSPEC_STRING, /* out: const char ** (borrowed from the JSON) */
    JSPEC_INT,    /* out: int64_t * */
    JSPEC_BOOL,   /* out: int * */
    JSPEC_OBJECT, /* out: json_t ** (borrowed) */
    JSPEC_ARRAY,  /* out: json_t ** (borrowed) */
    JSPEC_ANY,    /* out: json_t ** (borrowed), any JSON value */
    JSPEC_ENUM,   /* out: int * index into `choices` */
    JSPEC_TIME,   /* RFC 3339 string (platform/rfc3339.h: real calendar, offsets); out:
                     int64_t * Unix microseconds (print it with rfc3339_format_us) */
};

struct jspec_field {
    const char *name;
    enum jspec_type type;
    int required;
    int64_t min, max; /* INT: value range; STRING: length range (max 0 = 1024) */
    const char *const *choices; /* ENUM: NULL-terminated */
    void *out;                  /* left untouched when the field is absent */
    int *present;               /* optional: set to 1 when the field was given */
};
#define JSPEC_END {NULL, 0, 0, 0, 0, NULL, NULL, NULL}

/* Parse `body` (an object) against `fields`; unknown members are refused. Returns 0, or -1
 * after replying 400 (QDB_E_VALIDATION with "field") on `req`. With req NULL, writes the
 * reason into err (for callers that are not HTTP, e.g. job args). */
int jspec_parse(struct http_request *req, json_t *body, const struct jspec_field *fields,
                char *err, size_t errlen);

/* The NULL-terminated `choices` as "a, b, c" for a 400's detail (cut at n bytes); shared
 * by the body and the query-string specs so that both name the allowed values alike. */
void jspec_choices_text(const char *const *choices, char *out, size_t n);

/* Whether s is an RFC 3339 timestamp naming a real instant (rfc3339_parse). */
int jspec_is_rfc3339(const char *s);

#endif
