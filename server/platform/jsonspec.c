#include "platform/jsonspec.h"

#include "platform/rfc3339.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void jspec_choices_text(const char *const *choices, char *out, size_t n)
{
    size_t used = 0;
    if (n)
        out[0] = '\0';
    for (int i = 0; choices[i] && used < n; i++)
        used += (size_t)snprintf(out + used, n - used, "%s%s", i ? ", " : "", choices[i]);
}

int jspec_is_rfc3339(const char *s)
{
    int64_t us;
    return s && rfc3339_parse(s, strlen(s), &us) == 0;
}

/* Report a field's problem: as a 400 reply on req, or into err. Returns -1. */
static int fail(struct http_request *req, const char *field, char *err, size_t errlen,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int fail(struct http_request *req, const char *field, char *err, size_t errlen,
                const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    if (req)
        http_reply_invalid(req, field, "%s", detail);
    else if (err)
        snprintf(err, errlen, "%s", detail);
    return -1;
}

int jspec_parse(struct http_request *req, json_t *body, const struct jspec_field *fields,
                char *err, size_t errlen)
{
    if (!json_is_object(body))
        return fail(req, "(body)", err, errlen, "the body must be a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        const struct jspec_field *f = fields;
        while (f->name && strcmp(f->name, key) != 0)
            f++;
        if (!f->name)
            return fail(req, key, err, errlen, "%s is not a field of this request", key);
    }
    for (const struct jspec_field *f = fields; f->name; f++) {
        v = json_object_get(body, f->name);
        if (!v || json_is_null(v)) {
            if (f->required)
                return fail(req, f->name, err, errlen, "%s is required", f->name);
            continue;
        }
        switch (f->type) {
        case JSPEC_STRING:
        case JSPEC_TIME: {
            if (!json_is_string(v))
                return fail(req, f->name, err, errlen, "%s must be a string", f->name);
            size_t len = json_string_length(v);
            long long max = f->max ? f->max : 1024;
            if ((long long)len < f->min || (long long)len > max)
                return fail(req, f->name, err, errlen, "%s must be %lld to %lld characters long",
                            f->name, (long long)f->min, max);
            if (memchr(json_string_value(v), '\0', len))
                return fail(req, f->name, err, errlen, "%s must not contain NUL", f->name);
            if (f->type == JSPEC_TIME) {
                int64_t us;
                if (rfc3339_parse(json_string_value(v), len, &us) != 0)
                    return fail(req, f->name, err, errlen,
                                "%s must be an RFC 3339 time with a real date and time such as "
                                "2026-01-31T12:00:00Z",
                                f->name);
                *(int64_t *)f->out = us;
            } else {
                *(const char **)f->out = json_string_value(v);
            }
            break;
        }
        case JSPEC_INT: {
            if (!json_is_integer(v))
                return fail(req, f->name, err, errlen, "%s must be an integer", f->name);
            json_int_t n = json_integer_value(v);
            if (n < f->min || n > f->max)
                return fail(req, f->name, err, errlen, "%s must be between %lld and %lld", f->name,
                            (long long)f->min, (long long)f->max);
            *(int64_t *)f->out = n;
            break;
        }
        case JSPEC_BOOL:
            if (!json_is_boolean(v))
                return fail(req, f->name, err, errlen, "%s must be true or false", f->name);
            *(int *)f->out = json_is_true(v);
            break;
        case JSPEC_OBJECT:
            if (!json_is_object(v))
                return fail(req, f->name, err, errlen, "%s must be an object", f->name);
            *(json_t **)f->out = v;
            break;
        case JSPEC_ARRAY:
            if (!json_is_array(v))
                return fail(req, f->name, err, errlen, "%s must be an array", f->name);
            *(json_t **)f->out = v;
            break;
        case JSPEC_ANY:
            *(json_t **)f->out = v;
            break;
        case JSPEC_ENUM: {
            if (!json_is_string(v))
                return fail(req, f->name, err, errlen, "%s must be a string", f->name);
            int idx = -1;
            for (int i = 0; f->choices[i]; i++)
                if (strcmp(f->choices[i], json_string_value(v)) == 0)
                    idx = i;
            if (idx < 0) {
                char allowed[256];
                jspec_choices_text(f->choices, allowed, sizeof allowed);
                return fail(req, f->name, err, errlen, "%s must be one of: %s", f->name, allowed);
            }
            *(int *)f->out = idx;
            break;
        }
        }
        if (f->present)
            *f->present = 1;
    }
    return 0;
}
