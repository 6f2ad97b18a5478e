/* libFuzzer target: a request body through the server's JSON loader and the JSON spec
 * parser (platform/jsonspec.c) with every field type. Whatever the bytes, jspec_parse
 * either accepts with C values that respect the spec's limits, or refuses with a reason;
 * it never reads out of bounds, leaks or crashes. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "platform/jsonspec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    /* the flags http.c loads bodies with */
    json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!body)
        return 0;
    static const char *const states[] = {"pending", "running", "done", NULL};
    const char *name = NULL;
    int64_t n = 0, at = 0;
    int flag = -1, state = -1, has_at = 0;
    json_t *obj = NULL, *arr = NULL, *any = NULL;
    const struct jspec_field f[] = {
        {"name", JSPEC_STRING, 0, 1, 100, NULL, &name, NULL},
        {"n", JSPEC_INT, 0, -1000, 1000, NULL, &n, NULL},
        {"flag", JSPEC_BOOL, 0, 0, 0, NULL, &flag, NULL},
        {"obj", JSPEC_OBJECT, 0, 0, 0, NULL, &obj, NULL},
        {"arr", JSPEC_ARRAY, 0, 0, 0, NULL, &arr, NULL},
        {"any", JSPEC_ANY, 0, 0, 0, NULL, &any, NULL},
        {"state", JSPEC_ENUM, 0, 0, 0, states, &state, NULL},
        {"at", JSPEC_TIME, 0, 0, 64, NULL, &at, &has_at},
        {"req", JSPEC_STRING, 1, 0, 0, NULL, &name, NULL},
        JSPEC_END,
    };
    char err[256] = "";
    if (jspec_parse(NULL, body, f, err, sizeof err) == 0) {
        if (name && (strlen(name) > 1024))
            abort();
        if (n < -1000 || n > 1000 || flag > 1 || state > 2)
            abort();
    } else if (!err[0]) {
        abort(); /* a refusal always says why */
    }
    json_decref(body);
    return 0;
}
