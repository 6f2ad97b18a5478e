#include "platform/rfc3339.h"

#include <stdio.h>

#define US_PER_S INT64_C(1000000)
#define S_PER_DAY INT64_C(86400)

/* Howard Hinnant's days_from_civil / civil_from_days: exact for every proleptic Gregorian
 * date, no tables, no timegm (which depends on TZ and on time_t's width). */
int64_t rfc3339_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned len[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : len[m - 1];
}

/* `n` decimal digits at s, or -1. */
static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* The instants RFC 3339 can name in four-digit years. */
static int64_t min_us(void)
{
    return rfc3339_days_from_civil(1, 1, 1) * S_PER_DAY * US_PER_S;
}

static int64_t max_us(void)
{
    return rfc3339_days_from_civil(10000, 1, 1) * S_PER_DAY * US_PER_S - 1;
}

int rfc3339_parse(const char *s, size_t len, int64_t *us_out)
{
    if (!s || len < 20 || len > RFC3339_MAX_LEN)
        return -1;
    if (s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' ||
        s[16] != ':')
        return -1;
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    int h = digits(s + 11, 2), mi = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || (unsigned)d > days_in_month(y, (unsigned)mo) ||
        h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 60)
        return -1;
    size_t i = 19;
    int64_t frac_us = 0;
    if (i < len && s[i] == '.') {
        i++;
        size_t start = i;
        int64_t scale = 100000;
        int round_up = 0;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            size_t k = i - start;
            if (k < 6)
                frac_us += (s[i] - '0') * scale, scale /= 10;
            else if (k == 6)
                round_up = s[i] >= '5';
            i++;
        }
        if (i == start || i - start > 9)
            return -1;
        frac_us += round_up;
    }
    if (i >= len)
        return -1;
    int64_t offset_s = 0;
    if ((s[i] == 'Z' || s[i] == 'z') && i + 1 == len) {
        offset_s = 0;
    } else if ((s[i] == '+' || s[i] == '-') && i + 6 == len && s[i + 3] == ':') {
        int oh = digits(s + i + 1, 2), om = digits(s + i + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59)
            return -1;
        offset_s = (int64_t)oh * 3600 + om * 60;
        if (s[i] == '-')
            offset_s = -offset_s;
    } else {
        return -1;
    }
    /* The second as written, :60 counted as :59 until it is checked below. */
    int64_t utc_s = rfc3339_days_from_civil(y, (unsigned)mo, (unsigned)d) * S_PER_DAY +
                    (int64_t)h * 3600 + (int64_t)mi * 60 + (sec == 60 ? 59 : sec) - offset_s;
    if (sec == 60) {
        int64_t day = utc_s >= 0 ? utc_s / S_PER_DAY : -((-utc_s + S_PER_DAY - 1) / S_PER_DAY);
        int64_t tod = utc_s - day * S_PER_DAY;
        int64_t uy;
        unsigned um, ud;
        civil_from_days(day, &uy, &um, &ud);
        if (tod != S_PER_DAY - 1 || !((um == 6 && ud == 30) || (um == 12 && ud == 31)))
            return -1;
        utc_s += 1; /* the leap second is the next second, as PostgreSQL has it */
    }
    int64_t us = utc_s * US_PER_S + frac_us;
    if (us < min_us() || us > max_us())
        return -1;
    *us_out = us;
    return 0;
}

/* Print with 6 or 3 fraction digits. */
static int format(int64_t us, int ms, char *out, size_t outlen)
{
    if (us < min_us() || us > max_us() || outlen < 28)
        return -1;
    int64_t s = us / US_PER_S, frac = us % US_PER_S;
    if (frac < 0)
        frac += US_PER_S, s -= 1;
    int64_t day = s / S_PER_DAY, tod = s % S_PER_DAY;
    if (tod < 0)
        tod += S_PER_DAY, day -= 1;
    int64_t y;
    unsigned m, d;
    civil_from_days(day, &y, &m, &d);
    int n = snprintf(out, outlen, "%04d-%02u-%02uT%02d:%02d:%02d.%0*dZ", (int)y, m, d,
                     (int)(tod / 3600), (int)(tod / 60 % 60), (int)(tod % 60), ms ? 3 : 6,
                     (int)(ms ? frac / 1000 : frac));
    return n > 0 && (size_t)n < outlen ? n : -1;
}

int rfc3339_format_us(int64_t us, char *out, size_t outlen)
{
    return format(us, 0, out, outlen);
}

int rfc3339_format_ms(int64_t us, char *out, size_t outlen)
{
    return format(us, 1, out, outlen);
}
