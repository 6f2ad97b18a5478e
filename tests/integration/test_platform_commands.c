/* Each command needs only what it uses: every command below runs with exactly the
 * variables it names (nothing inherited but the sanitizers' options) from an empty
 * working directory, as a Kubernetes migration Job runs in an image with no checkout.
 * Also: the platform's environment list. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static char empty_dir[256];

/* Run the binary in empty_dir with exactly `env` (plus the sanitizer options). Returns the
 * exit status; stdout and stderr into the buffers. */
static int run_clean(const char *const *argv, const char *const *env, char *out, size_t outlen,
                     char *err, size_t errlen)
{
    int po[2], pe[2];
    if (pipe(po) != 0 || pipe(pe) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(po[1], 1);
        dup2(pe[1], 2);
        close(po[0]);
        close(pe[0]);
        if (chdir(empty_dir) != 0)
            _exit(126);
        const char *envp[32];
        int n = 0;
        static const char *const pass[] = {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS",
                                           "TSAN_OPTIONS", NULL};
        static char kept[4][1024];
        for (int i = 0; pass[i]; i++)
            if (getenv(pass[i])) {
                snprintf(kept[i], sizeof kept[i], "%s=%s", pass[i], getenv(pass[i]));
                envp[n++] = kept[i];
            }
        for (; env && *env && n < 31; env++)
            envp[n++] = *env;
        envp[n] = NULL;
        const char *args[16] = {QDB_BINARY};
        int i = 1;
        for (; argv && *argv && i < 15; argv++)
            args[i++] = *argv;
        args[i] = NULL;
        execve(QDB_BINARY, (char *const *)args, (char *const *)envp);
        _exit(127);
    }
    close(po[1]);
    close(pe[1]);
    /* read both pipes to the end (outputs are small: stdout first, then stderr) */
    size_t used = 0;
    ssize_t k;
    while ((k = read(po[0], out + used, outlen - used - 1)) > 0)
        used += (size_t)k;
    out[used] = '\0';
    used = 0;
    while ((k = read(pe[0], err + used, errlen - used - 1)) > 0)
        used += (size_t)k;
    err[used] = '\0';
    close(po[0]);
    close(pe[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static char out[65536], err[16384];

static void test_no_settings(void)
{
    th_step("version, help and routes run with no variable at all");
    const char *v[] = {"version", NULL};
    CHECK(run_clean(v, NULL, out, sizeof out, err, sizeof err) == 0 &&
              strncmp(out, "qdb-control ", 12) == 0,
          "version: %s %s", out, err);
    const char *h[] = {"help", NULL};
    CHECK(run_clean(h, NULL, out, sizeof out, err, sizeof err) == 0 && strstr(out, "migrate") &&
              strstr(out, "token create"),
          "help: %s %s", out, err);
    const char *r[] = {"routes", NULL};
    int rc = run_clean(r, NULL, out, sizeof out, err, sizeof err);
    json_t *routes = json_loads(out, 0, NULL);
    CHECK(rc == 0 && json_is_array(routes) && json_array_size(routes) > 10,
          "routes: rc %d, %s", rc, err);
    json_decref(routes);
}

static void test_migrate(const char *url)
{
    char dburl[512];
    snprintf(dburl, sizeof dburl, "QDB_DATABASE_URL=%s", url);
    th_step("migrate with only QDB_DATABASE_URL (no issuer, no audit key, no web folder)");
    const char *m[] = {"migrate", NULL};
    const char *env[] = {dburl, NULL};
    int rc = run_clean(m, env, out, sizeof out, err, sizeof err);
    CHECK(rc == 0, "migrate: rc %d: %s", rc, err);
    long applied = th_sql_long(url, "SELECT count(*) FROM schema_migrations", NULL);
    long envs = th_sql_long(url, "SELECT count(*) FROM environment", NULL);
    CHECK(applied >= 4 && envs == 5, "schema applied: %ld migrations, %ld environments", applied,
          envs);

    th_step("a database migrated with 0003's first text (it declares that checksum superseded)");
    PQclear(th_sql(url, "UPDATE schema_migrations SET checksum = "
                        "'efdc186720e03fc9328973800e8274b12aeb50ace8488b44c3e765b960c060b7' "
                        "WHERE version = 3",
                   NULL));
    rc = run_clean(m, env, out, sizeof out, err, sizeof err);
    CHECK(rc == 0, "accepted: rc %d: %s", rc, err);
    PQclear(th_sql(url, "UPDATE schema_migrations SET checksum = repeat('a', 64) WHERE version = 3",
                   NULL));
    rc = run_clean(m, env, out, sizeof out, err, sizeof err);
    CHECK(rc != 0 && strstr(err, "0003_audit was changed after it was applied"),
          "any other checksum is refused: rc %d: %s", rc, err);
    PQclear(th_sql(url, "UPDATE schema_migrations SET checksum = "
                        "'efdc186720e03fc9328973800e8274b12aeb50ace8488b44c3e765b960c060b7' "
                        "WHERE version = 3",
                   NULL));

    th_step("migrate without QDB_DATABASE_URL names the variable and exits 2");
    rc = run_clean(m, NULL, out, sizeof out, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "QDB_DATABASE_URL"), "rc %d: %s", rc, err);
}

static void test_token(const char *url, const char *key_env)
{
    char dburl[512];
    snprintf(dburl, sizeof dburl, "QDB_DATABASE_URL=%s", url);
    const char *t[] = {"token", "create", "--name", "ci", "--role", "operator", NULL};

    th_step("token create with the database and the audit key only (no OIDC settings)");
    long before = th_sql_long(url, "SELECT count(*) FROM audit_event", NULL);
    const char *env[] = {dburl, key_env, NULL};
    int rc = run_clean(t, env, out, sizeof out, err, sizeof err);
    CHECK(rc == 0 && strncmp(out, "qdb_", 4) == 0, "token create: rc %d: %s %s", rc, out, err);
    CHECK(th_sql_long(url, "SELECT count(*) FROM api_token WHERE name = 'ci'", NULL) == 1,
          "the token is stored");
    CHECK(th_sql_long(url, "SELECT count(*) FROM audit_event", NULL) == before + 1,
          "and audited once");

    th_step("token create without the audit key names it and changes nothing");
    const char *env2[] = {dburl, NULL};
    rc = run_clean(t, env2, out, sizeof out, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "QDB_AUDIT_HMAC_KEY_FILE"), "rc %d: %s", rc, err);
    CHECK(th_sql_long(url, "SELECT count(*) FROM api_token", NULL) == 1, "no second token");
}

static void test_serve_needs_web(const char *url, const char *key_env)
{
    char dburl[512];
    snprintf(dburl, sizeof dburl, "QDB_DATABASE_URL=%s", url);
    th_step("serve is the one command that needs the web folder");
    const char *s[] = {"serve", NULL};
    const char *env[] = {dburl, key_env, "QDB_AUTH_MODE=dev", "QDB_LISTEN=127.0.0.1:0", NULL};
    int rc = run_clean(s, env, out, sizeof out, err, sizeof err);
    CHECK(rc == 2 && strstr(err, "QDB_WEB_DIR"), "serve from an empty folder: rc %d: %s", rc,
          err);
}

static void test_environments(const char *url)
{
    th_step("GET /api/v1/environments lists the five environments on the promotion path");
    struct th_server srv;
    if (th_server_start(&srv, url, NULL, 1) != 0) {
        CHECK(0, "server did not start");
        return;
    }
    char *viewer = th_dev_token(&srv, "viewer");
    struct th_resp r;
    th_get(&srv, "/api/v1/environments", viewer, &r);
    json_t *items = json_object_get(r.json, "items");
    static const char *const names[] = {"development", "integration", "staging", "production",
                                        "dr"};
    CHECK(r.status == 200 && json_array_size(items) == 5, "status %ld: %s", r.status, r.body);
    for (size_t i = 0; i < 5 && i < json_array_size(items); i++) {
        json_t *e = json_array_get(items, i);
        const char *name = json_string_value(json_object_get(e, "name"));
        json_t *order = json_object_get(e, "promotion_order");
        CHECK(name && strcmp(name, names[i]) == 0, "item %zu is %s", i, name ? name : "?");
        if (i < 4)
            CHECK(json_integer_value(order) == (json_int_t)i + 1, "%s is step %zu", names[i],
                  i + 1);
        else
            CHECK(json_is_null(order), "dr is off the promotion path");
        CHECK(json_string_value(json_object_get(e, "purpose")) &&
                  json_string_value(json_object_get(e, "data")) &&
                  json_string_value(json_object_get(e, "access")),
              "%s has purpose, data and access", names[i]);
    }
    th_resp_free(&r);
    th_get(&srv, "/api/v1/environments", NULL, &r);
    CHECK(r.status == 401, "no token: %ld", r.status);
    th_resp_free(&r);
    free(viewer);
    th_server_stop(&srv);
}

int main(void)
{
    snprintf(empty_dir, sizeof empty_dir, "/tmp/qdb-empty-XXXXXX");
    if (!mkdtemp(empty_dir)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    char *url = th_db_create("commands");
    /* the harness's audit key, as "QDB_AUDIT_HMAC_KEY_FILE=<path>" */
    const char *key_env = th_audit_key_env();
    test_no_settings();
    test_migrate(url);
    test_token(url, key_env);
    test_serve_needs_web(url, key_env);
    test_environments(url);
    th_db_drop(url);
    free(url);
    rmdir(empty_dir);
    return th_done();
}
