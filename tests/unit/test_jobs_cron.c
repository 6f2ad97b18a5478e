/* The job engine's pure parts: the cron parser and next-run computation (table tests,
 * including bad expressions), and the retry backoff schedule. */
#include <string.h>
#include <time.h>

#include "jobs/jobs_internal.h"
#include "unit.h"

static int64_t utc(int y, int mo, int d, int h, int mi)
{
    struct tm tm = {0};
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    return (int64_t)timegm(&tm);
}

static void show(int64_t t, char *out, size_t n)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, n, "%Y-%m-%d %H:%M", &tm);
}

struct next_case {
    const char *expr;
    int64_t after;
    const char *want; /* "YYYY-MM-DD HH:MM" or "never" */
};

static void test_next(void)
{
    /* 2026-11-25 is a Wednesday */
    int64_t base = utc(2026, 11, 25, 12, 29);
    const struct next_case cases[] = {
        {"* * * * *", base, "2026-11-25 12:30"},
        {"* * * * *", base + 59, "2026-11-25 12:30"},                 /* 12:29:59 */
        {"* * * * *", utc(2026, 11, 25, 12, 30), "2026-11-25 12:31"}, /* strictly after */
        {"*/15 * * * *", base, "2026-11-25 12:30"},
        {"*/15 * * * *", utc(2026, 11, 25, 12, 45), "2026-11-25 13:00"},
        {"5/20 * * * *", base, "2026-11-25 12:45"},
        {"0 0 * * *", base, "2026-11-26 00:00"},
        {"30 2 1 * *", base, "2026-12-01 02:30"},
        {"0 9-17/4 * * *", base, "2026-11-25 13:00"},
        {"0 12,18 * * *", base, "2026-11-25 18:00"},
        {"0 0 * * 0", base, "2026-11-29 00:00"}, /* Sunday */
        {"0 0 * * 7", base, "2026-11-29 00:00"}, /* 7 is Sunday too */
        {"0 0 * * MON", base, "2026-11-30 00:00"},
        {"0 0 1 JAN *", base, "2027-01-01 00:00"},
        {"0 0 29 2 *", base, "2028-02-29 00:00"}, /* next leap day */
        {"0 0 13 * 5", base, "2026-11-27 00:00"}, /* day 13 OR Friday (Vixie) */
        {"0 0 31 * *", base, "2026-12-31 00:00"},
        {"59 23 31 12 *", base, "2026-12-31 23:59"},
        {"0 0 30 2 *", base, "never"},
        {"1-5 * * * *", utc(2026, 11, 25, 12, 5), "2026-11-25 13:01"},
        {"*   *\t* * *", base, "2026-11-25 12:30"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct jobs_cron c;
        char err[256] = "";
        int rc = jobs_cron_parse(cases[i].expr, &c, err, sizeof err);
        EXPECT(rc == 0, "parse \"%s\": %s", cases[i].expr, err);
        if (rc != 0)
            continue;
        int64_t next = jobs_cron_next(&c, cases[i].after);
        char got[32] = "never";
        if (next >= 0)
            show(next, got, sizeof got);
        EXPECT(strcmp(got, cases[i].want) == 0, "next of \"%s\": got %s, want %s", cases[i].expr,
               got, cases[i].want);
    }
}

struct bad_case {
    const char *expr;
    const char *names; /* the reason names this cron field */
};

static void test_bad(void)
{
    const struct bad_case cases[] = {
        {"", "expected 5 fields"},
        {"* * * *", "expected 5 fields"},
        {"* * * * * *", "expected 5 fields"},
        {"60 * * * *", "minute"},
        {"* 24 * * *", "hour"},
        {"* * 0 * *", "day of month"},
        {"* * 32 * *", "day of month"},
        {"* * * 13 *", "month"},
        {"* * * 0 *", "month"},
        {"* * * * 8", "day of week"},
        {"*/0 * * * *", "minute"},
        {"*/ * * * *", "minute"},
        {"5-1 * * * *", "minute"},
        {"a * * * *", "minute"},
        {"1,,2 * * * *", "minute"},
        {"1- * * * *", "minute"},
        {"* * * FOO *", "month"},
        {"* * * * FUNDAY", "day of week"},
        {"-1 * * * *", "minute"},
        {"99999 * * * *", "minute"},
        {"@daily", "expected 5 fields"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct jobs_cron c;
        char err[256] = "";
        int rc = jobs_cron_parse(cases[i].expr, &c, err, sizeof err);
        EXPECT(rc == -1, "\"%s\" must be refused", cases[i].expr);
        EXPECT(strstr(err, cases[i].names) != NULL, "reason for \"%s\" is \"%s\", want %s",
               cases[i].expr, err, cases[i].names);
    }
}

static void test_backoff(void)
{
    /* full jitter: uniform in [0, min(cap, base * 2^(attempt-1))] */
    const int64_t base = 1000, cap = 60000;
    const int64_t ceilings[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000};
    for (int a = 1; a <= 8; a++) {
        int64_t want = ceilings[a - 1];
        EXPECT(jobs_backoff_ms(a, base, cap, 0) == 0, "attempt %d, rnd 0", a);
        EXPECT(jobs_backoff_ms(a, base, cap, (uint64_t)want) == want, "attempt %d max", a);
        EXPECT(jobs_backoff_ms(a, base, cap, (uint64_t)want + 1) == 0, "attempt %d wraps", a);
        int64_t hi = 0;
        for (uint64_t r = 0; r < 5000; r++) {
            int64_t v = jobs_backoff_ms(a, base, cap, r * 7919u);
            if (v > hi)
                hi = v;
            if (v < 0 || v > want) {
                EXPECT(0, "attempt %d gave %lld outside [0, %lld]", a, (long long)v,
                       (long long)want);
                break;
            }
        }
        EXPECT(hi > want / 2, "attempt %d: the jitter spans its range (max seen %lld)", a,
               (long long)hi);
    }
    /* large attempts do not overflow */
    EXPECT(jobs_backoff_ms(200, base, cap, UINT64_MAX) <= cap, "attempt 200 capped");
    EXPECT(jobs_backoff_ms(0, base, cap, 999) == 999, "attempt 0 is treated as 1");
}

int main(void)
{
    test_next();
    test_bad();
    test_backoff();
    return unit_done();
}
