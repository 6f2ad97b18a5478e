/* libFuzzer target: cron expressions (jobs_cron_parse) and the next-run computation
 * (jobs_cron_next). Properties: a refusal names a reason; an accepted expression's next
 * run is strictly after the start, on a minute boundary, within 5 years, and asking again
 * from just before it gives the same minute. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "jobs/jobs_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 512)
        return 0;
    char expr[513];
    memcpy(expr, data, size);
    expr[size] = '\0';
    struct jobs_cron c;
    char err[256] = "";
    if (jobs_cron_parse(expr, &c, err, sizeof err) != 0) {
        if (!err[0])
            abort();
        return 0;
    }
    /* a few starts: the epoch, a leap day, the end of a year, far ahead */
    static const int64_t starts[] = {0, 1709164800 + 59, 1798761599, 4102444800};
    for (size_t i = 0; i < sizeof starts / sizeof starts[0]; i++) {
        int64_t next = jobs_cron_next(&c, starts[i]);
        if (next == -1)
            continue;
        if (next <= starts[i] || next % 60 != 0 || next - starts[i] > 5 * 366 * 86400 + 86400)
            abort();
        if (jobs_cron_next(&c, next - 1) != next)
            abort();
    }
    return 0;
}
