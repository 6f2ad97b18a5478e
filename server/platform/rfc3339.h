/* The one parser and printer of timestamps: RFC 3339 (section 5.6) with the real calendar.
 *
 * Accepted: YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+hh:mm|-hh:mm), with `t` and `z` in either case
 * (RFC 3339 allows lower case). Checked: month 01-12, the day against the month's length
 * (Gregorian leap years: 2024 and 2000 have February 29th, 2100 has not), hour 00-23,
 * minute 00-59, second 00-59, offset hours 00-23 and minutes 00-59, and the instant, once
 * in UTC, within years 0001-9999. Refused: everything else (a space for `T`, a missing
 * offset, `24:00:00`, a sign before the year, more than 9 fraction digits, trailing text).
 *
 * Leap seconds: second 60 is accepted only where one can be inserted, at 23:59:60 UTC on
 * June 30th or December 31st (the offset applied first, so 08:59:60+09:00 on January 1st
 * is the same second), and it means the following second, as in PostgreSQL and POSIX time,
 * which have no leap seconds. Any other :60 is refused.
 *
 * Fractions are rounded to the microsecond (half up), as PostgreSQL stores them. */
#ifndef QDB_PLATFORM_RFC3339_H
#define QDB_PLATFORM_RFC3339_H

#include <stddef.h>
#include <stdint.h>

/* Longest text rfc3339_parse takes (a 9-digit fraction and an offset make 35). */
#define RFC3339_MAX_LEN 64

/* Parse the `len` bytes at s. Returns 0 with *us_out set to Unix microseconds (UTC), or -1
 * when s is not a valid RFC 3339 timestamp as described above. s need not be
 * NUL-terminated; a NUL inside the `len` bytes is refused. */
int rfc3339_parse(const char *s, size_t len, int64_t *us_out);

/* Print Unix microseconds as RFC 3339 UTC with 6 fraction digits
 * ("2026-12-01T09:00:00.123456Z"), the canonical form handed to the state store. Returns
 * the length, or -1 when `us` is outside years 0001-9999 or out is too small (32 bytes
 * always suffice). */
#define RFC3339_TEXT_MAX 32
int rfc3339_format_us(int64_t us, char *out, size_t outlen);

/* The same with milliseconds (truncated, as PostgreSQL's to_char MS):
 * "2026-12-01T09:00:00.123Z", the format of every timestamp in API responses (see
 * DB_TIME_JSON in db.h). Returns the length (24) or -1. */
int rfc3339_format_ms(int64_t us, char *out, size_t outlen);

/* Days since 1970-01-01 of a proleptic Gregorian date (month 1-12). Pure. */
int64_t rfc3339_days_from_civil(int64_t y, unsigned m, unsigned d);

#endif
