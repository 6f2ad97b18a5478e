/* Tiny assertion helpers for pure unit tests; prints "N passed, N failed". */
#ifndef QDB_UNIT_H
#define QDB_UNIT_H
#include <stdio.h>

static int unit_passed, unit_failed;
#define EXPECT(cond, ...)                                                                     \
    do {                                                                                      \
        if (cond) {                                                                           \
            unit_passed++;                                                                    \
        } else {                                                                              \
            unit_failed++;                                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                   \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
        }                                                                                     \
    } while (0)
static inline int unit_done(void)
{
    printf("%d passed, %d failed\n", unit_passed, unit_failed);
    return unit_failed ? 1 : 0;
}
#endif
