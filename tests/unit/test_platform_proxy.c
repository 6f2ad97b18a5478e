/* Trusted proxies (QDB_TRUSTED_PROXIES): CIDR lists, the client an X-Forwarded-For stands
 * for, the per-address counts; and the sslmode production checks. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "platform/config.h"
#include "platform/http_proxy.h"
#include "unit.h"

static void test_parse(void)
{
    char err[256];
    struct http_proxies *p =
        http_proxies_parse("10.0.0.0/8, 192.168.1.7 fd00::/8,127.0.0.1/32", err, sizeof err);
    EXPECT(p != NULL, "a mixed list parses: %s", err);
    EXPECT(http_proxies_trusts(p, "10.1.2.3"), "inside 10/8");
    EXPECT(!http_proxies_trusts(p, "11.0.0.1"), "outside 10/8");
    EXPECT(http_proxies_trusts(p, "192.168.1.7"), "a bare address is a /32");
    EXPECT(!http_proxies_trusts(p, "192.168.1.8"), "its neighbour is not");
    EXPECT(http_proxies_trusts(p, "fd12::1"), "inside fd00::/8");
    EXPECT(!http_proxies_trusts(p, "fe80::1"), "outside fd00::/8");
    EXPECT(http_proxies_trusts(p, "::ffff:10.9.9.9"), "IPv4-mapped IPv6 matches the IPv4 block");
    EXPECT(!http_proxies_trusts(p, "not-an-address"), "garbage is not trusted");
    struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:127.0.0.1", &sa6.sin6_addr);
    EXPECT(http_proxies_trusts_sockaddr(p, (struct sockaddr *)&sa6), "a mapped socket address");
    char text[64];
    EXPECT(http_addr_normalise((struct sockaddr *)&sa6, text, sizeof text) == 0 &&
               strcmp(text, "127.0.0.1") == 0,
           "normalised to IPv4: %s", text);
    http_proxies_free(p);

    struct http_proxies *odd = http_proxies_parse("10.0.0.0/12", err, sizeof err);
    EXPECT(odd && http_proxies_trusts(odd, "10.15.255.255") &&
               !http_proxies_trusts(odd, "10.16.0.0"),
           "a prefix that is not a whole byte");
    http_proxies_free(odd);
    const char *bad[] = {
        "",           " , ",         "10.0.0.0/33",      "10.0.0.0/x",        "10.0.0.0/",
        "fd00::/129", "example.com", "10.0.0.0/8,bogus", "::ffff:10.0.0.0/90"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        struct http_proxies *b = http_proxies_parse(bad[i], err, sizeof err);
        EXPECT(b == NULL && err[0], "'%s' refused (%s)", bad[i], err);
        http_proxies_free(b);
    }
}

static void test_forwarded(void)
{
    char err[256], out[64];
    struct http_proxies *p = http_proxies_parse("10.0.0.0/8", err, sizeof err);
    EXPECT(http_proxies_client(p, "203.0.113.9", out, sizeof out) &&
               strcmp(out, "203.0.113.9") == 0,
           "one hop");
    EXPECT(http_proxies_client(p, "1.1.1.1, 203.0.113.9, 10.0.0.5", out, sizeof out) &&
               strcmp(out, "203.0.113.9") == 0,
           "the right-most untrusted entry, not the client's own claim: %s", out);
    EXPECT(http_proxies_client(p, "203.0.113.9 ,10.1.1.1,10.2.2.2", out, sizeof out) &&
               strcmp(out, "203.0.113.9") == 0,
           "through several trusted hops");
    EXPECT(!http_proxies_client(p, "10.0.0.1, 10.0.0.2", out, sizeof out), "only proxies");
    EXPECT(!http_proxies_client(p, NULL, out, sizeof out), "no header");
    EXPECT(!http_proxies_client(p, "", out, sizeof out), "empty header");
    EXPECT(!http_proxies_client(p, "203.0.113.9, garbage", out, sizeof out),
           "a malformed right-most entry names nobody");
    EXPECT(!http_proxies_client(p, "203.0.113.9,", out, sizeof out), "a trailing comma");
    EXPECT(http_proxies_client(p, "::ffff:198.51.100.1", out, sizeof out) &&
               strcmp(out, "198.51.100.1") == 0,
           "normalised");
    http_proxies_free(p);
}

static void test_counts(void)
{
    struct http_addr_counts *c = http_addr_counts_new();
    EXPECT(http_addr_take(c, "1.2.3.4", 2) && http_addr_take(c, "1.2.3.4", 2), "two taken");
    EXPECT(!http_addr_take(c, "1.2.3.4", 2), "the third refused");
    EXPECT(http_addr_take(c, "5.6.7.8", 2), "another address has its own");
    EXPECT(http_addr_count(c, "1.2.3.4") == 2, "counted");
    http_addr_give(c, "1.2.3.4");
    EXPECT(http_addr_take(c, "1.2.3.4", 2), "given back, taken again");
    http_addr_give(c, "1.2.3.4");
    http_addr_give(c, "1.2.3.4");
    EXPECT(http_addr_count(c, "1.2.3.4") == 0, "all given back");
    http_addr_give(c, "9.9.9.9"); /* never taken: no effect */
    http_addr_add(c, "5.6.7.8");
    EXPECT(http_addr_count(c, "5.6.7.8") == 2, "add ignores the limit");
    http_addr_counts_free(c);
}

static void test_sslmode(void)
{
    char m[32];
    unsetenv("PGSSLMODE");
    EXPECT(config_db_sslmode("postgresql://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem", m,
                             sizeof m) == 0 &&
               strcmp(m, "verify-full") == 0,
           "from the URL");
    EXPECT(config_db_sslmode("postgresql://u@h/db", m, sizeof m) == 0 && strcmp(m, "prefer") == 0,
           "libpq's default");
    setenv("PGSSLMODE", "verify-full", 1);
    EXPECT(config_db_sslmode("postgresql://u@h/db", m, sizeof m) == 0 &&
               strcmp(m, "verify-full") == 0,
           "PGSSLMODE when the URL says nothing");
    EXPECT(config_db_sslmode("postgresql://u@h/db?sslmode=disable", m, sizeof m) == 0 &&
               strcmp(m, "disable") == 0,
           "the URL wins over PGSSLMODE");
    unsetenv("PGSSLMODE");
    EXPECT(config_db_sslmode("postgresql://u@h/db?bogus=1", m, sizeof m) == -1,
           "an unknown parameter does not parse");

    setenv("QDB_DATABASE_URL", "postgresql://u@h/db?sslmode=require", 1);
    setenv("QDB_ENV", "production", 1);
    struct config cfg;
    EXPECT(config_load(&cfg, CONFIG_DATABASE) == -1, "production refuses require");
    setenv("QDB_DATABASE_URL", "postgresql://u@h/db?sslmode=verify-full", 1);
    EXPECT(config_load(&cfg, CONFIG_DATABASE) == 0 && cfg.env == CONFIG_ENV_PRODUCTION,
           "and takes verify-full");
    config_free(&cfg);
    setenv("QDB_ENV", "development", 1);
    setenv("QDB_DATABASE_URL", "postgresql://u@h/db?sslmode=disable", 1);
    EXPECT(config_load(&cfg, CONFIG_DATABASE) == 0, "development takes any");
    config_free(&cfg);
    unsetenv("QDB_ENV");
    unsetenv("QDB_DATABASE_URL");
}

int main(void)
{
    test_parse();
    test_forwarded();
    test_counts();
    test_sslmode();
    return unit_done();
}
