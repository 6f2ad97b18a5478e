#include "platform/utf8.h"

#include <stdlib.h>
#include <string.h>

/* The length of the well-formed sequence at p (len >= 1 bytes available), or 0. */
static size_t seq_len(const unsigned char *p, size_t len)
{
    unsigned c = p[0];
    if (c == 0)
        return 0;
    if (c < 0x80)
        return 1;
    size_t n;                      /* continuation bytes */
    unsigned lo = 0x80, hi = 0xBF; /* bounds of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 2;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 3;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0; /* continuation byte, C0/C1 (overlong), F5-FF */
    }
    if (len <= n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t k = 2; k <= n; k++)
        if (p[k] < 0x80 || p[k] > 0xBF)
            return 0;
    return n + 1;
}

int utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = seq_len(p + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

void utf8_scrub(char *s)
{
    size_t len = strlen(s);
    unsigned char *p = (unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = seq_len(p + i, len - i);
        if (n == 0)
            p[i++] = '?';
        else
            i += n;
    }
}

char *utf8_scrub_dup(const char *s)
{
    size_t len = strlen(s);
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    memcpy(out, s, len + 1);
    utf8_scrub(out);
    return out;
}
