/* libFuzzer target: query strings through the query spec parser (platform/queryspec.c)
 * with every parameter type. Properties: accepted values respect the spec's limits and are
 * valid UTF-8; a refusal names the parameter and the reason. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "platform/queryspec.h"
#include "platform/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096 || memchr(data, '\0', size))
        return 0; /* a query string reaches the parser as a C string */
    char *query = malloc(size + 1);
    char *scratch = malloc(size + 2);
    if (!query || !scratch)
        goto out;
    memcpy(query, data, size);
    query[size] = '\0';
    static const char *const states[] = {"pending", "running", NULL};
    const char *name = NULL, *any = NULL;
    int64_t limit = 50, since = 0, big = 0;
    int state = -1, flag = -1;
    const struct qspec_param q[] = {
        {"name", QSPEC_STRING, 0, 1, 20, NULL, &name, NULL},
        {"any", QSPEC_STRING, 0, 0, 0, NULL, &any, NULL},
        {"limit", QSPEC_INT, 0, 1, 500, NULL, &limit, NULL},
        {"big", QSPEC_INT, 0, INT64_MIN, INT64_MAX, NULL, &big, NULL},
        {"state", QSPEC_ENUM, 0, 0, 0, states, &state, NULL},
        {"since", QSPEC_TIME, 0, 0, 0, NULL, &since, NULL},
        {"flag", QSPEC_BOOL, 0, 0, 0, NULL, &flag, NULL},
        QSPEC_END,
    };
    char field[128] = "", err[512] = "";
    if (qspec_parse_text(query, q, scratch, size + 2, field, sizeof field, err, sizeof err) == 0) {
        if ((name && (strlen(name) < 1 || strlen(name) > 20 || !utf8_valid(name, strlen(name)))) ||
            (any && (strlen(any) > 256 || !utf8_valid(any, strlen(any)))) || limit < 1 ||
            limit > 500 || state > 1 || flag > 1)
            abort();
    } else if (!field[0] || !err[0]) {
        abort();
    }
out:
    free(query);
    free(scratch);
    return 0;
}
