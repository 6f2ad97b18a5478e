/* Growable byte buffer with a hard maximum: it doubles up to `max` and then refuses, never
 * truncating silently. */
#ifndef QDB_PLATFORM_BUF_H
#define QDB_PLATFORM_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data; /* always NUL-terminated when len > 0 or after any append */
    size_t len;
    size_t cap;
    size_t max; /* 0 means no maximum */
};

/* Initialise an empty buffer that may grow to `max` bytes (0: unlimited). */
void buf_init(struct buf *b, size_t max);
/* Append `n` bytes. Returns 0, or -1 when the maximum would be exceeded or memory ran out
 * (the buffer is unchanged then). */
int buf_append(struct buf *b, const void *data, size_t n);
/* Append a NUL-terminated string. Same return as buf_append. */
int buf_puts(struct buf *b, const char *s);
/* Append printf-formatted text. Same return as buf_append. */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Hand the data to the caller (who frees it with free()) and reset the buffer. Never NULL
 * unless memory ran out. */
char *buf_take(struct buf *b);
/* Free the data and reset the buffer. */
void buf_free(struct buf *b);

#endif
