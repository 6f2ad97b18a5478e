/* UTF-8 well-formedness (RFC 3629): what jansson and PostgreSQL accept, checked before a
 * client's bytes reach either. */
#ifndef QDB_PLATFORM_UTF8_H
#define QDB_PLATFORM_UTF8_H

#include <stddef.h>

/* Whether the `len` bytes at s are well-formed UTF-8 without NUL: no overlong forms, no
 * surrogates (U+D800-DFFF), nothing above U+10FFFF. Pure. */
int utf8_valid(const char *s, size_t len);

#endif
