/* Configuration parsing: listen addresses, durations, integer ranges and enums. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "platform/config.h"
#include "unit.h"

static void test_listen(void)
{
    char host[64];
    uint16_t port = 0;
    EXPECT(config_parse_listen("127.0.0.1:8080", host, sizeof host, &port) == 0 &&
               strcmp(host, "127.0.0.1") == 0 && port == 8080,
           "ipv4");
    EXPECT(config_parse_listen("[::1]:9000", host, sizeof host, &port) == 0 &&
               strcmp(host, "::1") == 0 && port == 9000,
           "bracketed ipv6");
    EXPECT(config_parse_listen("localhost:0", host, sizeof host, &port) == 0 && port == 0,
           "port 0");
    const char *bad[] = {"8080", ":8080", "host:", "host:65536", "host:-1", "host:80x",
                         "::1:80", "[::1]80", "[::1]", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(config_parse_listen(bad[i], host, sizeof host, &port) == -1, "'%s' refused",
               bad[i]);
    char tiny[4];
    EXPECT(config_parse_listen("longhost:80", tiny, sizeof tiny, &port) == -1,
           "host longer than the buffer is refused, not truncated");
}

static void test_seconds(void)
{
    long s;
    EXPECT(config_parse_seconds("30", &s) == 0 && s == 30, "plain");
    EXPECT(config_parse_seconds("30s", &s) == 0 && s == 30, "s");
    EXPECT(config_parse_seconds("5m", &s) == 0 && s == 300, "m");
    EXPECT(config_parse_seconds("2h", &s) == 0 && s == 7200, "h");
    EXPECT(config_parse_seconds("7d", &s) == 0 && s == 604800, "d");
    const char *bad[] = {"", "x", "5x", "5mm", "-1", "1.5h", "99999999999999999999d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT(config_parse_seconds(bad[i], &s) == -1, "'%s' refused", bad[i]);
}

static void test_env_helpers(void)
{
    long v;
    unsetenv("QDB_T_INT");
    EXPECT(config_int("QDB_T_INT", 7, 1, 10, &v) == 0 && v == 7, "default when unset");
    setenv("QDB_T_INT", "", 1);
    EXPECT(config_int("QDB_T_INT", 7, 1, 10, &v) == 0 && v == 7, "default when empty");
    setenv("QDB_T_INT", "9", 1);
    EXPECT(config_int("QDB_T_INT", 7, 1, 10, &v) == 0 && v == 9, "value");
    setenv("QDB_T_INT", "11", 1);
    EXPECT(config_int("QDB_T_INT", 7, 1, 10, &v) == -1, "above range refused");
    setenv("QDB_T_INT", "9x", 1);
    EXPECT(config_int("QDB_T_INT", 7, 1, 10, &v) == -1, "trailing junk refused");
    setenv("QDB_T_INT", "99999999999999999999999", 1);
    EXPECT(config_int("QDB_T_INT", 7, 1, 10, &v) == -1, "overflow refused");

    static const char *const modes[] = {"oidc", "dev", NULL};
    int idx = -1;
    setenv("QDB_T_MODE", "dev", 1);
    EXPECT(config_enum("QDB_T_MODE", "oidc", modes, &idx) == 0 && idx == 1, "enum value");
    setenv("QDB_T_MODE", "DEV", 1);
    EXPECT(config_enum("QDB_T_MODE", "oidc", modes, &idx) == -1, "enum is exact");
    unsetenv("QDB_T_MODE");
    EXPECT(config_enum("QDB_T_MODE", "oidc", modes, &idx) == 0 && idx == 0, "enum default");
}

static void test_load(void)
{
    struct config cfg;
    unsetenv("QDB_DATABASE_URL");
    EXPECT(config_load(&cfg, CONFIG_DATABASE | CONFIG_SERVE) == -1, "QDB_DATABASE_URL is required");
    config_free(&cfg);
    setenv("QDB_DATABASE_URL", "mysql://x", 1);
    EXPECT(config_load(&cfg, CONFIG_DATABASE | CONFIG_SERVE) == -1, "non-postgresql URL refused");
    config_free(&cfg);
    setenv("QDB_DATABASE_URL", "postgresql://u@127.0.0.1:5432/db", 1);
    setenv("QDB_WEB_DIR", "/", 1);
    EXPECT(config_load(&cfg, CONFIG_DATABASE | CONFIG_SERVE) == 0 && cfg.listen_port == 8080 && cfg.db_pool_size == 8 &&
               cfg.shutdown_timeout_s == 10,
           "defaults");
    config_free(&cfg);
    setenv("QDB_LOG_LEVEL", "verbose", 1);
    EXPECT(config_load(&cfg, CONFIG_DATABASE | CONFIG_SERVE) == -1, "bad log level refused");
    config_free(&cfg);
    unsetenv("QDB_LOG_LEVEL");
    setenv("QDB_SHUTDOWN_TIMEOUT", "2m", 1);
    EXPECT(config_load(&cfg, CONFIG_DATABASE | CONFIG_SERVE) == 0 && cfg.shutdown_timeout_s == 120, "duration setting");
    config_free(&cfg);
    setenv("QDB_DB_POOL_SIZE", "0", 1);
    EXPECT(config_load(&cfg, CONFIG_DATABASE | CONFIG_SERVE) == -1, "pool size 0 refused");
    config_free(&cfg);
    unsetenv("QDB_DB_POOL_SIZE");

    /* a command loads only what it names: no database URL, no web folder */
    unsetenv("QDB_DATABASE_URL");
    setenv("QDB_WEB_DIR", "/nonexistent-qdb-web", 1);
    EXPECT(config_load(&cfg, 0) == 0 && !cfg.database_url && !cfg.web_dir,
           "nothing required without flags");
    config_free(&cfg);
    setenv("QDB_DATABASE_URL", "postgresql://u@127.0.0.1:5432/db", 1);
    EXPECT(config_load(&cfg, CONFIG_DATABASE) == 0 && cfg.database_url && !cfg.web_dir,
           "the database alone does not need the web folder");
    config_free(&cfg);
    EXPECT(config_load(&cfg, CONFIG_DATABASE | CONFIG_SERVE) == -1,
           "serve needs a readable web folder");
    config_free(&cfg);
    unsetenv("QDB_WEB_DIR");
}

static void test_url_file(void)
{
    struct config cfg;
    char path[] = "/tmp/qdb-url-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    fputs("postgresql://qdb:s3cret@db.internal:5432/qdb_control?sslmode=verify-full\n", f);
    fclose(f);
    unsetenv("QDB_DATABASE_URL");
    setenv("QDB_DATABASE_URL_FILE", path, 1);
    EXPECT(config_load(&cfg, CONFIG_DATABASE) == 0 && cfg.database_url &&
               strcmp(cfg.database_url,
                      "postgresql://qdb:s3cret@db.internal:5432/qdb_control?sslmode=verify-full") ==
                   0,
           "the URL is read from the file, its newline dropped");
    config_free(&cfg);
    setenv("QDB_DATABASE_URL", "postgresql://u@h/db", 1);
    EXPECT(config_load(&cfg, CONFIG_DATABASE) == -1, "both set is refused");
    config_free(&cfg);
    unsetenv("QDB_DATABASE_URL");
    f = fopen(path, "w");
    fputs("postgresql://u@h/db\npostgresql://v@h/db\n", f);
    fclose(f);
    EXPECT(config_load(&cfg, CONFIG_DATABASE) == -1, "two lines refused");
    config_free(&cfg);
    f = fopen(path, "w");
    fclose(f);
    EXPECT(config_load(&cfg, CONFIG_DATABASE) == -1, "an empty file refused");
    config_free(&cfg);
    unlink(path);
    EXPECT(config_load(&cfg, CONFIG_DATABASE) == -1, "a missing file refused");
    config_free(&cfg);
    unsetenv("QDB_DATABASE_URL_FILE");
}

int main(void)
{
    test_url_file();
    test_listen();
    test_seconds();
    test_env_helpers();
    test_load();
    return unit_done();
}
