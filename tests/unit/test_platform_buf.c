/* The bounded buffer and declarative JSON body parsing. */
#include <string.h>

#include "platform/buf.h"
#include "platform/jsonspec.h"
#include "unit.h"

static void test_buf(void)
{
    struct buf b;
    buf_init(&b, 10);
    EXPECT(buf_puts(&b, "12345") == 0 && b.len == 5, "append");
    EXPECT(buf_puts(&b, "67890") == 0 && b.len == 10, "up to the max");
    EXPECT(buf_puts(&b, "x") == -1 && b.len == 10 && strcmp(b.data, "1234567890") == 0,
           "over the max refused, buffer unchanged");
    buf_free(&b);
    buf_init(&b, 0);
    for (int i = 0; i < 1000; i++)
        buf_printf(&b, "%d,", i);
    EXPECT(b.len > 3000 && strncmp(b.data, "0,1,2,", 6) == 0, "unlimited grows");
    char *s = buf_take(&b);
    EXPECT(s && b.data == NULL && b.len == 0, "take resets");
    free(s);
}

static void test_jspec(void)
{
    static const char *const states[] = {"pending", "running", NULL};
    const char *name = NULL;
    int64_t n = -1;
    int state = -1, flag = 0, has_n = 0;
    struct jspec_field f[] = {
        {"name", JSPEC_STRING, 1, 1, 20, NULL, &name, NULL},
        {"n", JSPEC_INT, 0, 0, 100, NULL, &n, &has_n},
        {"state", JSPEC_ENUM, 0, 0, 0, states, &state, NULL},
        {"flag", JSPEC_BOOL, 0, 0, 0, NULL, &flag, NULL},
        JSPEC_END,
    };
    char err[256];
    json_t *j = json_loads("{\"name\":\"x\",\"n\":5,\"state\":\"running\",\"flag\":true}", 0, NULL);
    EXPECT(jspec_parse(NULL, j, f, err, sizeof err) == 0 && strcmp(name, "x") == 0 && n == 5 &&
               state == 1 && flag == 1 && has_n == 1,
           "all fields: %s", err);
    json_decref(j);
    static const struct {
        const char *body, *expect;
    } bad[] = {
        {"[]", "object"},
        {"{}", "name is required"},
        {"{\"name\":\"\"}", "name must be"},
        {"{\"name\":7}", "name must be a string"},
        {"{\"name\":\"x\",\"n\":101}", "n must be between"},
        {"{\"name\":\"x\",\"n\":1.5}", "n must be an integer"},
        {"{\"name\":\"x\",\"state\":\"done\"}", "state must be one of: pending, running"},
        {"{\"name\":\"x\",\"extra\":1}", "extra is not a field"},
        {"{\"name\":\"x\",\"flag\":1}", "flag must be true or false"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        j = json_loads(bad[i].body, JSON_DECODE_ANY, NULL);
        err[0] = '\0';
        EXPECT(jspec_parse(NULL, j, f, err, sizeof err) == -1 && strstr(err, bad[i].expect),
               "%s -> '%s' (got '%s')", bad[i].body, bad[i].expect, err);
        json_decref(j);
    }
    EXPECT(jspec_is_rfc3339("2026-11-25T12:00:00Z"), "Z time");
    EXPECT(jspec_is_rfc3339("2026-11-25T12:00:00.123+03:00"), "offset time");
    EXPECT(!jspec_is_rfc3339("2026-11-25 12:00:00"), "space refused");
    EXPECT(!jspec_is_rfc3339("2026-11-25T12:00:00"), "no zone refused");
    EXPECT(!jspec_is_rfc3339("2026-02-30T12:00:00Z"), "February 30th refused");

    /* JSPEC_TIME checks the calendar, not only the shape, and yields microseconds */
    int64_t at = -1;
    int has_at = 0;
    struct jspec_field tf[] = {{"at", JSPEC_TIME, 1, 0, 64, NULL, &at, &has_at}, JSPEC_END};
    j = json_loads("{\"at\":\"2026-02-30T25:61:00Z\"}", 0, NULL);
    EXPECT(jspec_parse(NULL, j, tf, err, sizeof err) == -1 &&
               strstr(err, "at must be an RFC 3339") && at == -1,
           "impossible time refused: %s", err);
    json_decref(j);
    j = json_loads("{\"at\":\"2026-01-31T13:00:00.5+01:00\"}", 0, NULL);
    EXPECT(jspec_parse(NULL, j, tf, err, sizeof err) == 0 && at == INT64_C(1769860800500000) &&
               has_at,
           "time with offset: %lld", (long long)at);
    json_decref(j);
    j = json_loads("{\"at\":\"2026-01-31T12:00:00Z\\u0000\"}", 0, NULL);
    EXPECT(jspec_parse(NULL, j, tf, err, sizeof err) == -1, "NUL in a time refused");
    json_decref(j);
}

int main(void)
{
    test_buf();
    test_jspec();
    return unit_done();
}
