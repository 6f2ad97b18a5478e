/* base64url (RFC 4648 section 5, the URL- and filename-safe alphabet) without padding: the
 * one encoder and decoder of the code base (JWTs, JWKs, API token secrets, PKCE). */
#ifndef QDB_PLATFORM_BASE64URL_H
#define QDB_PLATFORM_BASE64URL_H

#include <stddef.h>

/* Encode `len` bytes as base64url without padding. Returns a malloc'd NUL-terminated string
 * (the caller frees it), or NULL when memory ran out. */
char *b64url_encode(const unsigned char *in, size_t len);
/* Decode base64url without padding ('=' padding tolerated at the end only). Returns a
 * malloc'd buffer, NUL-terminated for convenience, with its length in *outlen; NULL on any
 * character outside the alphabet, on an impossible length, or when memory ran out. */
unsigned char *b64url_decode(const char *in, size_t inlen, size_t *outlen);
/* Whether c is one of the 64 characters of the base64url alphabet (padding is not). */
int b64url_is_char(unsigned char c);

#endif
