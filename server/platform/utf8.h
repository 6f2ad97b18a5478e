/* UTF-8 well-formedness (RFC 3629): what jansson and PostgreSQL accept, checked before a
 * client's bytes reach either. */
#ifndef QDB_PLATFORM_UTF8_H
#define QDB_PLATFORM_UTF8_H

#include <stddef.h>

/* Whether the `len` bytes at s are well-formed UTF-8 without NUL: no overlong forms, no
 * surrogates (U+D800-DFFF), nothing above U+10FFFF. Pure. */
int utf8_valid(const char *s, size_t len);

/* A copy of the C string s (malloc'd; NULL when memory ran out) in which every byte that
 * is not part of a well-formed sequence is replaced by '?', for echoing a client's bytes
 * into JSON, which takes only UTF-8. */
char *utf8_scrub_dup(const char *s);
/* The same in place: for text made here from bytes of unknown encoding (a tool's output, a
 * file name, a message cut short inside a sequence) before it reaches either. */
void utf8_scrub(char *s);

#endif
