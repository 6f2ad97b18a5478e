/* The one time parser (platform/rfc3339.c), the query-string spec (platform/queryspec.c)
 * and the UTF-8 check (platform/utf8.c), pinned by vectors. The expected microseconds were
 * computed independently with Python's datetime (fromisoformat, exact integer arithmetic). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "platform/deadline.h"
#include "platform/queryspec.h"
#include "platform/rfc3339.h"
#include "platform/utf8.h"
#include "unit.h"

struct valid_case {
    const char *text;
    int64_t us;
    const char *canonical; /* rfc3339_format_us of us */
};

static void test_valid(void)
{
    const struct valid_case cases[] = {
        {"2026-01-31T12:00:00Z", INT64_C(1769860800000000), "2026-01-31T12:00:00.000000Z"},
        {"2026-01-31t12:00:00z", INT64_C(1769860800000000), "2026-01-31T12:00:00.000000Z"},
        {"2024-02-29T00:00:00Z", INT64_C(1709164800000000), "2024-02-29T00:00:00.000000Z"},
        {"2000-02-29T23:59:59Z", INT64_C(951868799000000), "2000-02-29T23:59:59.000000Z"},
        {"2026-12-01T09:00:00.123456Z", INT64_C(1796115600123456), "2026-12-01T09:00:00.123456Z"},
        {"2026-12-01T09:00:00.123+01:00", INT64_C(1796112000123000), "2026-12-01T08:00:00.123000Z"},
        {"2026-12-01T09:00:00-05:30", INT64_C(1796135400000000), "2026-12-01T14:30:00.000000Z"},
        {"2026-12-01T09:00:00+00:00", INT64_C(1796115600000000), "2026-12-01T09:00:00.000000Z"},
        {"2026-12-01T09:00:00-00:00", INT64_C(1796115600000000), "2026-12-01T09:00:00.000000Z"},
        {"2026-12-01T09:00:00+23:59",
         INT64_C(1796115600000000) - (23 * 3600 + 59 * 60) * INT64_C(1000000),
         "2026-11-30T09:01:00.000000Z"},
        {"0001-01-01T00:00:00Z", INT64_C(-62135596800000000), "0001-01-01T00:00:00.000000Z"},
        {"9999-12-31T23:59:59.999999Z", INT64_C(253402300799999999), "9999-12-31T23:59:59.999999Z"},
        {"1969-12-31T23:59:59.5Z", INT64_C(-500000), "1969-12-31T23:59:59.500000Z"},
        /* fractions: up to 9 digits, rounded half up to the microsecond */
        {"2026-01-31T12:00:00.1234564Z", INT64_C(1769860800123456), "2026-01-31T12:00:00.123456Z"},
        {"2026-01-31T12:00:00.1234565Z", INT64_C(1769860800123457), "2026-01-31T12:00:00.123457Z"},
        {"2026-01-31T12:00:59.999999999Z", INT64_C(1769860860000000),
         "2026-01-31T12:01:00.000000Z"},
        /* leap seconds: 23:59:60 UTC on June 30th / December 31st is the next second */
        {"2016-12-31T23:59:60Z", INT64_C(1483228800000000), "2017-01-01T00:00:00.000000Z"},
        {"2015-06-30T23:59:60.5Z", INT64_C(1435708800500000), "2015-07-01T00:00:00.500000Z"},
        {"2017-01-01T08:59:60+09:00", INT64_C(1483228800000000), "2017-01-01T00:00:00.000000Z"},
        {"2016-12-31T18:59:60-05:00", INT64_C(1483228800000000), "2017-01-01T00:00:00.000000Z"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t us = 0;
        int rc = rfc3339_parse(cases[i].text, strlen(cases[i].text), &us);
        EXPECT(rc == 0, "%s should parse", cases[i].text);
        EXPECT(us == cases[i].us, "%s: got %lld want %lld", cases[i].text, (long long)us,
               (long long)cases[i].us);
        char out[RFC3339_TEXT_MAX];
        EXPECT(rfc3339_format_us(cases[i].us, out, sizeof out) > 0 &&
                   strcmp(out, cases[i].canonical) == 0,
               "%s: formatted %s want %s", cases[i].text, out, cases[i].canonical);
        /* the canonical text reads back to the same instant */
        int64_t back = 0;
        EXPECT(rfc3339_parse(out, strlen(out), &back) == 0 && back == cases[i].us, "%s back", out);
    }
}

static void test_invalid(void)
{
    static const char *const bad[] = {
        "2026-02-30T25:61:00Z", /* the example */
        "2026-02-30T12:00:00Z",
        "2026-02-29T12:00:00Z", /* 2026 is no leap year */
        "2100-02-29T12:00:00Z", /* divisible by 100, not by 400 */
        "1900-02-29T12:00:00Z",
        "2026-04-31T12:00:00Z",
        "2026-06-31T12:00:00Z",
        "2026-09-31T12:00:00Z",
        "2026-11-31T12:00:00Z",
        "2026-01-32T12:00:00Z",
        "2026-00-10T12:00:00Z",
        "2026-13-10T12:00:00Z",
        "2026-01-00T12:00:00Z",
        "2026-01-31T24:00:00Z",
        "2026-01-31T23:60:00Z",
        "2026-01-31T23:59:61Z",
        "2026-01-31T12:00:60Z",      /* :60 that is no leap second slot */
        "2016-12-31T22:59:60Z",      /* :60 not at 23:59 UTC */
        "2016-12-30T23:59:60Z",      /* :60 not at the end of June or December */
        "2016-12-31T23:59:60+01:00", /* 22:59:60 UTC */
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:30:00+01:00", /* before year 1 in UTC */
        "9999-12-31T23:30:00-01:00", /* after year 9999 in UTC */
        "2026-01-31 12:00:00Z",
        "2026-01-31T12:00:00",
        "2026-01-31T12:00Z",
        "2026-01-31",
        "2026-1-31T12:00:00Z",
        "+2026-01-31T12:00:00Z",
        "02026-01-31T12:00:00Z",
        "2026-01-31T12:00:00.Z",
        "2026-01-31T12:00:00.1234567890Z",
        "2026-01-31T12:00:00ZZ",
        "2026-01-31T12:00:00Z ",
        " 2026-01-31T12:00:00Z",
        "2026-01-31T12:00:00+0100",
        "2026-01-31T12:00:00+01",
        "2026-01-31T12:00:00+24:00",
        "2026-01-31T12:00:00+01:60",
        "2026-01-31T12:00:00UTC",
        "2026-01-31T12:00:00+01:00:00",
        "2026-01-31T1a:00:00Z",
        "２026-01-31T12:00:00Z",
        "",
        "Z",
        "now",
        "1769860800",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t us = 42;
        EXPECT(rfc3339_parse(bad[i], strlen(bad[i]), &us) != 0 && us == 42, "%s refused", bad[i]);
    }
    /* a NUL inside the given length, and text longer than the bound */
    int64_t us;
    EXPECT(rfc3339_parse("2026-01-31T12:00:00Z\0", 21, &us) != 0, "trailing NUL refused");
    EXPECT(rfc3339_parse("2026-01-31T12:00\0:00Z", 20, &us) != 0, "inner NUL refused");
    char longer[128];
    memset(longer, '0', sizeof longer);
    memcpy(longer, "2026-01-31T12:00:00.", 20);
    longer[sizeof longer - 1] = 'Z';
    EXPECT(rfc3339_parse(longer, sizeof longer, &us) != 0, "128 bytes refused");
    EXPECT(rfc3339_parse(NULL, 0, &us) != 0, "NULL refused");
    /* not NUL-terminated: only len bytes are read */
    EXPECT(rfc3339_parse("2026-01-31T12:00:00Zjunk", 20, &us) == 0 &&
               us == INT64_C(1769860800000000),
           "len bounds the read");
    char out[RFC3339_TEXT_MAX];
    EXPECT(rfc3339_format_us(INT64_C(253402300800000000), out, sizeof out) < 0, "year 10000");
    /* milliseconds, truncated as PostgreSQL's to_char MS, also before 1970 */
    EXPECT(rfc3339_format_ms(INT64_C(1796115600123999), out, sizeof out) == 24 &&
               strcmp(out, "2026-12-01T09:00:00.123Z") == 0,
           "ms: %s", out);
    EXPECT(rfc3339_format_ms(INT64_C(-1), out, sizeof out) == 24 &&
               strcmp(out, "1969-12-31T23:59:59.999Z") == 0,
           "ms before 1970: %s", out);
    EXPECT(rfc3339_format_us(0, out, 10) < 0, "small buffer");
}

static void test_calendar(void)
{
    /* every day of 1999-2101 is accepted exactly when it exists, one day after the last:
     * 103 years, 25 of them leap years (2000 is, 2100 is not) */
    int64_t prev = -1;
    int days = 0;
    for (int y = 1999; y <= 2101; y++)
        for (unsigned m = 1; m <= 12; m++)
            for (unsigned d = 1; d <= 31; d++) {
                char t[40];
                snprintf(t, sizeof t, "%04d-%02u-%02uT00:00:00Z", y, m, d);
                int64_t us;
                int ok = rfc3339_parse(t, strlen(t), &us) == 0;
                unsigned len = m == 2 ? ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0 ? 29 : 28)
                               : (m == 4 || m == 6 || m == 9 || m == 11) ? 30
                                                                         : 31;
                EXPECT(ok == (d <= len), "%s", t);
                if (ok) {
                    EXPECT(prev < 0 || us == prev + INT64_C(86400000000), "%s follows", t);
                    prev = us;
                    days++;
                }
            }
    EXPECT(days == 103 * 365 + 25, "days in 1999-2101: %d", days);
}

static void test_utf8(void)
{
    EXPECT(utf8_valid("", 0), "empty");
    EXPECT(utf8_valid("plain ascii", 11), "ascii");
    EXPECT(utf8_valid("\xc3\xa9t\xc3\xa9", 5), "été");
    EXPECT(utf8_valid("\xe2\x82\xac", 3), "euro");
    EXPECT(utf8_valid("\xf0\x9f\x98\x80", 4), "emoji");
    EXPECT(utf8_valid("\xf4\x8f\xbf\xbf", 4), "U+10FFFF");
    EXPECT(!utf8_valid("a\0b", 3), "NUL");
    EXPECT(!utf8_valid("\xff", 1), "FF");
    EXPECT(!utf8_valid("\xc0\xaf", 2), "overlong /");
    EXPECT(!utf8_valid("\xe0\x80\xaf", 3), "overlong 3");
    EXPECT(!utf8_valid("\xed\xa0\x80", 3), "surrogate");
    EXPECT(!utf8_valid("\xf4\x90\x80\x80", 4), "above U+10FFFF");
    EXPECT(!utf8_valid("\xc3", 1), "truncated");
    EXPECT(!utf8_valid("\xe2\x82", 2), "truncated 3");
    EXPECT(!utf8_valid("\x80", 1), "lone continuation");
    EXPECT(!utf8_valid("\xc3\x28", 2), "bad continuation");
    char *scrubbed = utf8_scrub_dup("ok \xc3\xa9 \xff\xc3\x28 \xe2\x82");
    EXPECT(scrubbed && strcmp(scrubbed, "ok \xc3\xa9 ?"
                                        "?( ?"
                                        "?") == 0,
           "scrubbed: %s", scrubbed ? scrubbed : "(null)");
    EXPECT(scrubbed && utf8_valid(scrubbed, strlen(scrubbed)), "scrubbed is UTF-8");
    free(scrubbed);
    /* in place: a message cut short inside a character, an archive's byte */
    char cut[] = "member \xff/escape: \xc3\xa9t\xc3";
    utf8_scrub(cut);
    EXPECT(strcmp(cut, "member ?/escape: \xc3\xa9t?") == 0, "scrubbed in place: %s", cut);
}

struct q_case {
    const char *query;
    const char *field; /* NULL: parses */
};

static void test_queryspec(void)
{
    static const char *const states[] = {"pending", "done", NULL};
    const struct q_case cases[] = {
        {"", NULL},
        {"limit=10&state=done&name=x%20y&since=2026-01-31T12:00:00%2B01:00&flag=true", NULL},
        {"limit=-5", "limit"},
        {"limit=0", "limit"},
        {"limit=101", "limit"},
        {"limit=", "limit"},
        {"limit", "limit"},
        {"limit=+5", "limit"},
        {"limit=%205", "limit"},
        {"limit=5x", "limit"},
        {"limit=9223372036854775808", "limit"},
        {"limit=99999999999999999999999", "limit"},
        {"limit=-", "limit"},
        {"limit=1&limit=2", "limit"},
        {"state=gone", "state"},
        {"state=", "state"},
        {"name=", "name"},
        {"name=a%00b", "name"},
        {"name=%ff", "name"},
        {"name=%c3%a9", NULL},
        {"since=2026-02-30T25:61:00Z", "since"},
        {"since=2026-01-31T12:00:00+01:00", "since"}, /* '+' is a space in a query */
        {"flag=yes", "flag"},
        {"other=1", "(query)"},
        {"%ff=1", "(query)"},
        {"a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9&j=10&k=11&l=12&m=13&n=14&o=15&p=16&q=17&r=18"
         "&s=19&t=20&u=21&v=22&w=23&x=24&y=25&z=26&aa=1&ab=1&ac=1&ad=1&ae=1&af=1&ag=1",
         "(query)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t limit = 50, since = 0;
        int state = -1, flag = 0;
        const char *name = NULL;
        const struct qspec_param q[] = {
            {"limit", QSPEC_INT, 0, 1, 100, NULL, &limit, NULL},
            {"state", QSPEC_ENUM, 0, 0, 0, states, &state, NULL},
            {"name", QSPEC_STRING, 0, 1, 10, NULL, &name, NULL},
            {"since", QSPEC_TIME, 0, 0, 0, NULL, &since, NULL},
            {"flag", QSPEC_BOOL, 0, 0, 0, NULL, &flag, NULL},
            QSPEC_END,
        };
        char scratch[512], field[64] = "", err[256] = "";
        int rc = qspec_parse_text(cases[i].query, q, scratch, sizeof scratch, field, sizeof field,
                                  err, sizeof err);
        if (!cases[i].field)
            EXPECT(rc == 0, "%s: %s (%s)", cases[i].query, err, field);
        else
            EXPECT(rc != 0 && strcmp(field, cases[i].field) == 0, "%s: field %s (%s)",
                   cases[i].query, field, err);
        if (i == 1)
            EXPECT(limit == 10 && state == 1 && name && strcmp(name, "x y") == 0 &&
                       since == INT64_C(1769857200000000) && flag == 1,
                   "values: %lld %d %s %lld %d", (long long)limit, state, name ? name : "-",
                   (long long)since, flag);
    }
    /* a required parameter */
    int64_t n = 0;
    const struct qspec_param req[] = {{"n", QSPEC_INT, 1, 0, 9, NULL, &n, NULL}, QSPEC_END};
    char scratch[64], field[64], err[128];
    EXPECT(qspec_parse_text("", req, scratch, sizeof scratch, field, sizeof field, err,
                            sizeof err) != 0 &&
               strcmp(field, "n") == 0,
           "required");
    EXPECT(qspec_parse_text("n=7", req, scratch, sizeof scratch, field, sizeof field, err,
                            sizeof err) == 0 &&
               n == 7,
           "n=7");
    /* int64 bounds exactly */
    const struct qspec_param wide[] = {{"n", QSPEC_INT, 0, INT64_MIN, INT64_MAX, NULL, &n, NULL},
                                       QSPEC_END};
    EXPECT(qspec_parse_text("n=9223372036854775807", wide, scratch, sizeof scratch, field,
                            sizeof field, err, sizeof err) == 0 &&
               n == INT64_MAX,
           "INT64_MAX");
    EXPECT(qspec_parse_text("n=-9223372036854775808", wide, scratch, sizeof scratch, field,
                            sizeof field, err, sizeof err) == 0 &&
               n == INT64_MIN,
           "INT64_MIN");
    EXPECT(qspec_parse_text("n=-9223372036854775809", wide, scratch, sizeof scratch, field,
                            sizeof field, err, sizeof err) != 0,
           "below INT64_MIN");
}

static double ts_seconds(struct timespec ts)
{
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_deadline(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    struct timespec d = deadline_after(CLOCK_MONOTONIC, 1.999);
    double delta = ts_seconds(d) - ts_seconds(now);
    EXPECT(d.tv_nsec >= 0 && d.tv_nsec < 1000000000L, "normalised (%ld ns)", (long)d.tv_nsec);
    EXPECT(delta >= 1.998 && delta < 2.5, "1.999 s ahead (%.6f)", delta);
    clock_gettime(CLOCK_REALTIME, &now);
    d = deadline_after(CLOCK_REALTIME, -5);
    delta = ts_seconds(d) - ts_seconds(now);
    EXPECT(delta >= -0.001 && delta < 0.5, "a negative delay is now (%.6f)", delta);
}

int main(void)
{
    test_deadline();
    test_valid();
    test_invalid();
    test_calendar();
    test_utf8();
    test_queryspec();
    return unit_done();
}
