/* libFuzzer target: the RFC 3339 parser (platform/rfc3339.c). Properties: it reads only
 * the bytes it is given; an accepted time prints as canonical UTC text that parses back to
 * the same microsecond; the canonical text is always 27 bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "platform/rfc3339.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so ASan sees any read past `size` */
    char *s = malloc(size ? size : 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    int64_t us;
    if (rfc3339_parse(s, size, &us) == 0) {
        char out[RFC3339_TEXT_MAX];
        int n = rfc3339_format_us(us, out, sizeof out);
        int64_t back;
        if (n != 27 || rfc3339_parse(out, (size_t)n, &back) != 0 || back != us)
            abort();
    }
    free(s);
    return 0;
}
