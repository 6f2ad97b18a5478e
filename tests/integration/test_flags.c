/* Feature flags against the real server: the seed in every environment, export/diff and
 * the CLI's pre-deploy check, a service token's environment, versions and rollback,
 * promotion, safe writes (412 for concurrent writers, 428 for production), bad input that
 * changes nothing, four eyes on production, Server-Sent Events, and two replicas: a change
 * on one is served by the other within a second. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static char *url;
static struct th_server a, b;
static char *admin, *operator_, *viewer;
static char *viewer_any; /* an API token of every environment: valid on both replicas */

static const struct {
    const char *key;
    int production;
} seed[] = {
    {"qdb.financing.enabled", 1},         {"qdb.guarantee.enabled", 0},
    {"qdb.advisory.enabled", 0},          {"qdb.guarantee.digital-signing", 0},
    {"qdb.cross-portal.related-items", 0}, {"qdb.notification.push-fcm", 0},
    {"qdb.migration.wave2-linking", 1},   {"qdb.migration.legacy-login-banner", 0},
};
#define NSEED 8

/* One request with a bearer token, JSON body and extra header (may be NULL). */
static int req(const struct th_server *s, const char *method, const char *path, const char *token,
               const char *extra, const char *body, struct th_resp *r)
{
    char auth[8192];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    const char *h[4] = {auth, "Content-Type: application/json", extra, NULL};
    return th_http(s, method, path, h, body, body ? strlen(body) : 0, r);
}

/* The value one flag evaluates to ("true", "false", or the errorCode), via OFREP. */
static void ofrep_value(const struct th_server *s, const char *token, const char *env,
                        const char *key, const char *ctx, char *out, size_t n)
{
    char path[512];
    if (env)
        snprintf(path, sizeof path, "/ofrep/v1/evaluate/flags/%s?environment=%s", key, env);
    else
        snprintf(path, sizeof path, "/ofrep/v1/evaluate/flags/%s", key);
    char body[512];
    snprintf(body, sizeof body, "{\"context\":%s}", ctx ? ctx : "{\"targetingKey\":\"u1\"}");
    struct th_resp r;
    out[0] = '\0';
    if (req(s, "POST", path, token, NULL, body, &r) == 0) {
        json_t *v = json_object_get(r.json, "value");
        const char *code = json_string_value(json_object_get(r.json, "errorCode"));
        if (json_is_boolean(v))
            snprintf(out, n, "%s", json_is_true(v) ? "true" : "false");
        else if (code)
            snprintf(out, n, "%s", code);
        else
            snprintf(out, n, "status-%ld", r.status);
    }
    th_resp_free(&r);
}

static long flag_version(const char *key)
{
    return th_sql_long(url, "SELECT version FROM flag WHERE key = $1", key, NULL);
}

static long outbox_rows(void)
{
    return th_sql_long(url, "SELECT count(*) FROM outbox", NULL);
}

/* An API token from `qdb-control token create` (its secret is on stdout). */
static char *cli_token(const char *name, const char *environment)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "QDB_DATABASE_URL='%s' %s '%s' token create --name %s --role viewer %s%s "
             "2>/dev/null",
             url, th_audit_key_env(), QDB_BINARY, name, environment ? "--environment " : "",
             environment ? environment : "");
    FILE *p = popen(cmd, "r");
    if (!p)
        return NULL;
    char line[512] = "";
    char *got = fgets(line, sizeof line, p);
    pclose(p);
    if (!got)
        return NULL;
    line[strcspn(line, "\n")] = '\0';
    return strdup(line);
}

static void seed_and_file(void)
{
    th_step("the seed: production values of the flags file, all on in development");
    char v[64];
    for (int i = 0; i < NSEED; i++) {
        ofrep_value(&a, viewer, "production", seed[i].key, NULL, v, sizeof v);
        CHECK(strcmp(v, seed[i].production ? "true" : "false") == 0, "production %s: %s",
              seed[i].key, v);
        ofrep_value(&a, viewer, "development", seed[i].key, NULL, v, sizeof v);
        CHECK(strcmp(v, "true") == 0, "development %s: %s", seed[i].key, v);
        ofrep_value(&a, viewer, "staging", seed[i].key, NULL, v, sizeof v);
        CHECK(strcmp(v, seed[i].production ? "true" : "false") == 0, "staging %s: %s",
              seed[i].key, v);
    }

    th_step("export is the flags file of 5.4; diff of that file is empty");
    struct th_resp r;
    th_get(&a, "/api/v1/flags/export?environment=production", viewer, &r);
    json_t *flags = json_object_get(r.json, "flags");
    CHECK(r.status == 200 && json_object_size(flags) == NSEED, "export: %ld %s", r.status, r.body);
    for (int i = 0; i < NSEED; i++)
        CHECK(json_is_boolean(json_object_get(flags, seed[i].key)) &&
                  json_is_true(json_object_get(flags, seed[i].key)) == seed[i].production,
              "export %s", seed[i].key);
    char *file = json_dumps(r.json, JSON_COMPACT);
    th_resp_free(&r);
    json_t *fb = json_loads(file, 0, NULL);
    json_t *dreq = json_pack("{s:s,s:O}", "environment", "production", "flags",
                             json_object_get(fb, "flags"));
    char *dtext = json_dumps(dreq, JSON_COMPACT);
    req(&a, "POST", "/api/v1/flags/diff", viewer, NULL, dtext, &r);
    CHECK(r.status == 200 && json_is_true(json_object_get(r.json, "equal")) &&
              json_array_size(json_object_get(r.json, "differences")) == 0,
          "diff of the export: %s", r.body);
    th_resp_free(&r);
    free(dtext);

    th_step("the CLI's pre-deploy check: exit 0 when equal, 1 on a difference");
    char path[256];
    snprintf(path, sizeof path, "/tmp/qdb-flags-file-%d.json", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs(file, f);
    fclose(f);
    char dburl[600];
    snprintf(dburl, sizeof dburl, "QDB_DATABASE_URL=%s", url);
    const char *env[] = {dburl, th_audit_key_env(), NULL};
    const char *argv_eq[] = {"flags", "diff", "--environment", "production", path,
                             NULL};
    CHECK(th_run_binary(argv_eq, env, NULL, 0) == 0, "equal file: exit 0");
    json_object_set_new(json_object_get(fb, "flags"), "qdb.guarantee.enabled", json_true());
    json_dump_file(fb, path, 0);
    CHECK(th_run_binary(argv_eq, env, NULL, 0) == 1, "a difference: exit 1");
    const char *argv_dev[] = {"flags", "diff", "--environment", "development",
                              path, NULL};
    CHECK(th_run_binary(argv_dev, env, NULL, 0) == 1, "development differs from production");
    const char *argv_bad[] = {"flags", "diff", path, NULL};
    CHECK(th_run_binary(argv_bad, env, NULL, 0) == 2, "no --environment: exit 2");
    unlink(path);

    th_step("diff lists every kind of difference");
    json_object_del(json_object_get(fb, "flags"), "qdb.advisory.enabled");
    json_object_set_new(json_object_get(fb, "flags"), "qdb.brand.new", json_false());
    json_t *d2 = json_pack("{s:s,s:O}", "environment", "production", "flags",
                           json_object_get(fb, "flags"));
    dtext = json_dumps(d2, JSON_COMPACT);
    req(&a, "POST", "/api/v1/flags/diff", viewer, NULL, dtext, &r);
    CHECK(r.status == 200 && json_array_size(json_object_get(r.json, "differences")) == 3,
          "changed + missing + extra: %s", r.body);
    th_resp_free(&r);
    free(dtext);
    json_decref(d2);
    json_decref(dreq);
    json_decref(fb);
    free(file);
}

static void service_tokens(void)
{
    th_step("a service token bound to one environment evaluates there");
    char *staging = cli_token("svc-staging", "staging");
    CHECK(staging != NULL, "token create");
    if (!staging)
        return;
    char v[64];
    ofrep_value(&a, staging, NULL, "qdb.financing.enabled", NULL, v, sizeof v);
    CHECK(strcmp(v, "true") == 0, "no ?environment=: %s", v);
    struct th_resp r;
    req(&a, "POST", "/ofrep/v1/evaluate/flags?environment=production", staging, NULL, "{}", &r);
    CHECK(r.status == 403 && th_is_problem(&r, 403), "another environment: %ld", r.status);
    th_resp_free(&r);
    req(&a, "POST", "/ofrep/v1/evaluate/flags", admin, NULL, "{}", &r);
    CHECK(r.status == 400 && th_is_problem(&r, 400), "a person names the environment: %ld",
          r.status);
    th_resp_free(&r);
    req(&a, "POST", "/ofrep/v1/evaluate/flags?environment=atlantis", admin, NULL, "{}", &r);
    CHECK(r.status == 404, "unknown environment: %ld", r.status);
    th_resp_free(&r);
    req(&a, "GET", "/ofrep/v1/configuration", staging, NULL, NULL, &r);
    CHECK(r.status == 200 &&
              json_is_true(json_object_get(
                  json_object_get(json_object_get(json_object_get(r.json, "capabilities"),
                                                  "cacheInvalidation"),
                                  "polling"),
                  "enabled")),
          "configuration: %s", r.body);
    th_resp_free(&r);
    free(staging);
}

static void versions_and_rollback(void)
{
    const char *key = "qdb.guarantee.digital-signing";
    th_step("a rule in staging: targeting, a version with its diff, rollback in one call");
    long v0 = flag_version(key);
    char ifm[64], path[256];
    snprintf(ifm, sizeof ifm, "If-Match: \"%ld\"", v0);
    snprintf(path, sizeof path, "/api/v1/flags/%s/environments/staging", key);
    struct th_resp r;
    req(&a, "PUT", path, operator_, ifm,
        "{\"enabled\":true,\"default_variant\":\"off\",\"off_variant\":\"off\",\"rules\":[{"
        "\"name\":\"pilot\",\"conditions\":[{\"attribute\":\"portal\",\"operator\":\"in\","
        "\"value\":[\"guarantees\"]},{\"attribute\":\"app\",\"operator\":\"semver_gte\","
        "\"value\":\"2.4.0\"}],\"variant\":\"on\"}],\"comment\":\"pilot on guarantees\"}",
        &r);
    char *etag = th_resp_header(&r, "ETag");
    CHECK(r.status == 200 && etag, "PUT staging: %ld %s", r.status, r.body);
    th_resp_free(&r);
    char v[64];
    ofrep_value(&a, viewer, "staging", key,
                "{\"targetingKey\":\"u1\",\"portal\":\"guarantees\",\"app\":\"2.10.1\"}", v,
                sizeof v);
    CHECK(strcmp(v, "true") == 0, "rule matches: %s", v);
    ofrep_value(&a, viewer, "staging", key,
                "{\"targetingKey\":\"u1\",\"portal\":\"guarantees\",\"app\":\"2.3.9\"}", v,
                sizeof v);
    CHECK(strcmp(v, "false") == 0, "older app: %s", v);

    snprintf(path, sizeof path, "/api/v1/flags/%s/versions?environment=staging", key);
    th_get(&a, path, viewer, &r);
    json_t *top = json_array_get(json_object_get(r.json, "items"), 0);
    CHECK(r.status == 200 && json_integer_value(json_object_get(top, "version")) == v0 + 1 &&
              strcmp(json_string_value(json_object_get(top, "comment")) ?: "",
                     "pilot on guarantees") == 0 &&
              strcmp(json_string_value(json_object_get(top, "actor")) ?: "", "test-operator") ==
                  0 &&
              json_array_size(json_object_get(top, "diff")) > 0,
          "the version: %.400s", r.body);
    th_resp_free(&r);

    snprintf(path, sizeof path, "/api/v1/flags/%s/rollback", key);
    char body[128];
    snprintf(body, sizeof body, "{\"environment\":\"staging\",\"version\":%ld}", v0);
    req(&a, "POST", path, operator_, NULL, body, &r);
    CHECK(r.status == 200 && json_integer_value(json_object_get(r.json, "version")) == v0 + 2,
          "rollback: %ld %s", r.status, r.body);
    th_resp_free(&r);
    ofrep_value(&a, viewer, "staging", key,
                "{\"targetingKey\":\"u1\",\"portal\":\"guarantees\",\"app\":\"2.10.1\"}", v,
                sizeof v);
    CHECK(strcmp(v, "false") == 0, "rolled back: %s", v);

    th_step("promote copies one environment's configuration to the next");
    snprintf(path, sizeof path, "/api/v1/flags/%s/promote", key);
    req(&a, "POST", path, operator_, NULL, "{\"from\":\"development\",\"to\":\"staging\"}", &r);
    CHECK(r.status == 200 &&
              json_equal(json_object_get(json_object_get(r.json, "environments"), "staging"),
                         json_object_get(json_object_get(r.json, "environments"), "development")),
          "promote: %ld", r.status);
    th_resp_free(&r);
    req(&a, "POST", path, operator_, NULL, "{\"from\":\"staging\",\"to\":\"production\"}", &r);
    CHECK(r.status == 403, "promote to production as operator: %ld", r.status);
    th_resp_free(&r);
    req(&a, "POST", path, admin, NULL, "{\"from\":\"staging\",\"to\":\"production\"}", &r);
    CHECK(r.status == 428 && th_is_problem(&r, 428), "production without If-Match: %ld",
          r.status);
    th_resp_free(&r);
    free(etag);
}

struct writer {
    const char *ifm;
    long status;
};

static void *write_one(void *cls)
{
    struct writer *w = cls;
    struct th_resp r;
    req(&a, "PUT", "/api/v1/flags/qdb.notification.push-fcm/environments/integration", operator_,
        w->ifm, "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\"}", &r);
    w->status = r.status;
    th_resp_free(&r);
    return NULL;
}

static void concurrent_writers(void)
{
    th_step("concurrent writers with the same If-Match: one wins, the others get 412");
    long v0 = flag_version("qdb.notification.push-fcm");
    char ifm[64];
    snprintf(ifm, sizeof ifm, "If-Match: \"%ld\"", v0);
    struct writer w[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct writer){ifm, 0};
        pthread_create(&t[i], NULL, write_one, &w[i]);
    }
    int ok = 0, stale = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ok += w[i].status == 200;
        stale += w[i].status == 412;
    }
    CHECK(ok == 1 && stale == 3, "%d succeeded, %d got 412", ok, stale);
    CHECK(flag_version("qdb.notification.push-fcm") == v0 + 1, "one new version");
}

static void bad_input(void)
{
    th_step("bad input: 4xx problem+json and nothing changed");
    const char *key = "qdb.cross-portal.related-items";
    char path[256];
    snprintf(path, sizeof path, "/api/v1/flags/%s/environments/staging", key);
    long v0 = flag_version(key), o0 = outbox_rows();
    struct {
        const char *what, *body;
        long status;
    } t[] = {
        {"unknown operator",
         "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\",\"rules\":[{"
         "\"conditions\":[{\"attribute\":\"a\",\"operator\":\"resembles\",\"value\":1}],"
         "\"variant\":\"on\"}]}",
         400},
        {"a value of the wrong type",
         "{\"enabled\":\"yes\",\"default_variant\":\"on\",\"off_variant\":\"off\"}", 400},
        {"a number operator with a string",
         "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\",\"rules\":[{"
         "\"conditions\":[{\"attribute\":\"a\",\"operator\":\"gt\",\"value\":\"x\"}],"
         "\"variant\":\"on\"}]}",
         400},
        {"a variant the flag lacks",
         "{\"enabled\":true,\"default_variant\":\"maybe\",\"off_variant\":\"off\"}", 400},
        {"a split that is not 100 %",
         "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\",\"split\":[{"
         "\"variant\":\"on\",\"percentage\":60}]}",
         400},
        {"a segment that does not exist",
         "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\",\"rules\":[{"
         "\"conditions\":[{\"operator\":\"in_segment\",\"value\":\"nobody\"}],\"variant\":"
         "\"on\"}]}",
         400},
    };
    struct th_resp r;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        req(&a, "PUT", path, operator_, NULL, t[i].body, &r);
        CHECK(th_is_problem(&r, t[i].status), "%s: %ld %s", t[i].what, r.status, r.body);
        th_resp_free(&r);
    }
    /* 10,000 rules */
    json_t *cfg = json_pack("{s:b,s:s,s:s,s:[]}", "enabled", 1, "default_variant", "on",
                            "off_variant", "off", "rules");
    for (int i = 0; i < 10000; i++)
        json_array_append_new(json_object_get(cfg, "rules"),
                              json_pack("{s:[],s:s}", "conditions", "variant", "on"));
    char *big = json_dumps(cfg, JSON_COMPACT);
    json_decref(cfg);
    req(&a, "PUT", path, operator_, NULL, big, &r);
    CHECK(th_is_problem(&r, 400), "10,000 rules: %ld", r.status);
    th_resp_free(&r);
    free(big);
    /* an unknown environment */
    snprintf(path, sizeof path, "/api/v1/flags/%s/environments/atlantis", key);
    req(&a, "PUT", path, operator_, NULL,
        "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\"}", &r);
    CHECK(th_is_problem(&r, 404), "unknown environment: %ld", r.status);
    th_resp_free(&r);
    /* a prerequisite cycle: a -> b is set, then b -> a is refused */
    snprintf(path, sizeof path, "/api/v1/flags/qdb.guarantee.enabled/environments/staging");
    req(&a, "PUT", path, operator_, NULL,
        "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\",\"prerequisites\":"
        "[{\"flag\":\"qdb.financing.enabled\",\"variant\":\"on\"}]}",
        &r);
    CHECK(r.status == 200, "a prerequisite: %ld %s", r.status, r.body);
    th_resp_free(&r);
    long vf = flag_version("qdb.financing.enabled"), o1 = outbox_rows();
    req(&a, "PUT", "/api/v1/flags/qdb.financing.enabled/environments/staging", operator_, NULL,
        "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\",\"prerequisites\":"
        "[{\"flag\":\"qdb.guarantee.enabled\",\"variant\":\"on\"}]}",
        &r);
    CHECK(th_is_problem(&r, 400) && strstr(r.body, "cycle"), "a cycle: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(flag_version("qdb.financing.enabled") == vf && outbox_rows() == o1,
          "the cycle changed nothing");
    /* a 1 MiB context */
    size_t n = 1024 * 1024 + 64;
    char *ctx = malloc(n + 64);
    size_t o = (size_t)snprintf(ctx, n, "{\"context\":{\"targetingKey\":\"u\",\"pad\":\"");
    memset(ctx + o, 'x', n - o);
    snprintf(ctx + n, 64, "\"}}");
    req(&a, "POST", "/ofrep/v1/evaluate/flags?environment=staging", viewer, NULL, ctx, &r);
    CHECK(r.status == 413 && th_is_problem(&r, 413), "1 MiB context: %ld", r.status);
    th_resp_free(&r);
    free(ctx);
    req(&a, "POST", "/ofrep/v1/evaluate/flags/qdb.financing.enabled?environment=staging", viewer,
        NULL, "{\"context\":{\"targetingKey\":42}}", &r);
    CHECK(r.status == 400 && strcmp(json_string_value(json_object_get(r.json, "errorCode")) ?: "",
                                    "INVALID_CONTEXT") == 0,
          "a numeric targetingKey: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(flag_version(key) == v0, "the flag kept version %ld", v0);
    CHECK(outbox_rows() == o0 + 1, "only the one good PUT emitted an event");
}

static void bulk_etag(void)
{
    th_step("bulk: ETag is the body's hash; If-None-Match gives 304 until a change");
    struct th_resp r;
    const char *body = "{\"context\":{\"targetingKey\":\"user-7\"}}";
    req(&a, "POST", "/ofrep/v1/evaluate/flags?environment=development", viewer, NULL, body, &r);
    char *etag = th_resp_header(&r, "ETag");
    CHECK(r.status == 200 && etag && json_array_size(json_object_get(r.json, "flags")) == NSEED,
          "bulk: %ld", r.status);
    th_resp_free(&r);
    char inm[128];
    snprintf(inm, sizeof inm, "If-None-Match: %s", etag ? etag : "");
    req(&a, "POST", "/ofrep/v1/evaluate/flags?environment=development", viewer, inm, body, &r);
    CHECK(r.status == 304 && r.len == 0, "304: %ld", r.status);
    th_resp_free(&r);
    th_step("evaluations are counted, remembered answers too, and exported");
    const char *series = "qdb_flag_evaluations_total{environment=\"development\","
                         "flag=\"qdb.financing.enabled\",variant=\"on\"}";
    long before = th_metric(&a, series);
    for (int i = 0; i < 5; i++) {
        req(&a, "POST", "/ofrep/v1/evaluate/flags?environment=development", viewer, inm, body, &r);
        th_resp_free(&r);
    }
    long after = before;
    for (int i = 0; i < 100 && after < before + 5; i++) {
        after = th_metric(&a, series);
        if (after < before + 5)
            th_sleep_ms(50);
    }
    CHECK(after >= before + 5, "five more evaluations counted: %ld -> %ld", before, after);
    long v = flag_version("qdb.advisory.enabled");
    char ifm[64];
    snprintf(ifm, sizeof ifm, "If-Match: \"%ld\"", v);
    req(&a, "PUT", "/api/v1/flags/qdb.advisory.enabled/environments/development", operator_, ifm,
        "{\"enabled\":false,\"default_variant\":\"on\",\"off_variant\":\"off\"}", &r);
    CHECK(r.status == 200, "kill switch in development: %ld", r.status);
    th_resp_free(&r);
    req(&a, "POST", "/ofrep/v1/evaluate/flags?environment=development", viewer, inm, body, &r);
    CHECK(r.status == 200, "after the change the old ETag is stale: %ld", r.status);
    th_resp_free(&r);
    free(etag);
}

/* The previous release's replicas listen on flag_changes for 0009's payloads (an
 * environment, or "*"), and serve during a rolling update: wait up to 5 s for `want` there. */
static int old_release_hears(PGconn *pg, const char *want)
{
    for (double end = th_now_ms() + 5000; th_now_ms() < end; th_sleep_ms(10)) {
        if (!PQconsumeInput(pg))
            return 0;
        PGnotify *n;
        int found = 0;
        while ((n = PQnotifies(pg)) != NULL) {
            if (strcmp(n->relname, "flag_changes") == 0 && strcmp(n->extra, want) == 0)
                found = 1;
            PQfreemem(n);
        }
        if (found)
            return 1;
    }
    return 0;
}

static void replicas(void)
{
    th_step("two replicas: a change on one is served by the other within a second");
    /* each change is read again flag by flag: b's whole environments never are */
    long full_b = th_metric(&b, "qdb_flags_snapshot_full_reloads_total");
    long flag_b = th_metric(&b, "qdb_flags_snapshot_flag_reloads_total");
    CHECK(full_b >= 1, "b loaded in full at start: %ld", full_b);
    const char *key = "qdb.migration.legacy-login-banner";
    char v[64];
    ofrep_value(&b, viewer_any, "integration", key, NULL, v, sizeof v);
    CHECK(strcmp(v, "false") == 0, "b before: %s", v);
    long ver = flag_version(key);
    char ifm[64];
    snprintf(ifm, sizeof ifm, "If-Match: \"%ld\"", ver);
    PGconn *old_release = PQconnectdb(url);
    PQclear(PQexec(old_release, "LISTEN flag_changes"));
    struct th_resp r;
    req(&a, "PUT", "/api/v1/flags/qdb.migration.legacy-login-banner/environments/integration",
        operator_, ifm, "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\"}",
        &r);
    double t0 = th_now_ms();
    CHECK(r.status == 200, "PUT on a: %ld", r.status);
    th_resp_free(&r);
    ofrep_value(&a, viewer, "integration", key, NULL, v, sizeof v);
    CHECK(strcmp(v, "true") == 0, "a serves it at once: %s", v);
    double seen = -1;
    while (th_now_ms() - t0 < 10000) {
        ofrep_value(&b, viewer_any, "integration", key, NULL, v, sizeof v);
        if (strcmp(v, "true") == 0) {
            seen = th_now_ms() - t0;
            break;
        }
        th_sleep_ms(10);
    }
    fprintf(stderr, "   replica b served the change after %.0f ms\n", seen);
    CHECK(seen >= 0 && seen < 1000, "b served it after %.0f ms", seen);
    CHECK(old_release_hears(old_release, "integration"),
          "a replica of the previous release hears the change as its environment's name");

    th_step("a definition change (every environment) reaches the other replica too");
    req(&a, "PATCH", "/api/v1/flags/qdb.migration.legacy-login-banner", admin, NULL,
        "{\"archived\":true}", &r);
    CHECK(r.status == 200, "archive on a: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(old_release_hears(old_release, "*"),
          "a replica of the previous release hears the definition change as \"*\"");
    PQfinish(old_release);
    t0 = th_now_ms();
    seen = -1;
    while (th_now_ms() - t0 < 10000) {
        ofrep_value(&b, viewer_any, "production", key, NULL, v, sizeof v);
        if (strcmp(v, "FLAG_NOT_FOUND") == 0) {
            seen = th_now_ms() - t0;
            break;
        }
        th_sleep_ms(10);
    }
    CHECK(seen >= 0 && seen < 1000, "b stopped serving the archived flag after %.0f ms", seen);
    req(&a, "PATCH", "/api/v1/flags/qdb.migration.legacy-login-banner", admin, NULL,
        "{\"archived\":false}", &r);
    CHECK(r.status == 200, "unarchive: %ld", r.status);
    th_resp_free(&r);
    CHECK(th_metric(&b, "qdb_flags_snapshot_full_reloads_total") == full_b,
          "b reloaded only the changed flag, never a whole environment (%ld full reloads)",
          th_metric(&b, "qdb_flags_snapshot_full_reloads_total") - full_b);
    CHECK(th_metric(&b, "qdb_flags_snapshot_flag_reloads_total") > flag_b,
          "b reloaded the changed flag");

    th_step("a flag made and deleted on one replica appears and goes on the other");
    const char *nk = "qdb.test.replicated";
    ofrep_value(&b, viewer_any, "staging", nk, NULL, v, sizeof v);
    CHECK(strcmp(v, "FLAG_NOT_FOUND") == 0, "b before: %s", v);
    req(&a, "POST", "/api/v1/flags", admin, NULL,
        "{\"key\":\"qdb.test.replicated\",\"type\":\"boolean\",\"variants\":{\"on\":true,"
        "\"off\":false}}",
        &r);
    CHECK(r.status == 201, "create on a: %ld %s", r.status, r.body);
    th_resp_free(&r);
    t0 = th_now_ms();
    seen = -1;
    while (th_now_ms() - t0 < 10000 && seen < 0) {
        ofrep_value(&b, viewer_any, "staging", nk, NULL, v, sizeof v);
        seen = strcmp(v, "false") == 0 ? th_now_ms() - t0 : -1;
        if (seen < 0)
            th_sleep_ms(10);
    }
    CHECK(seen >= 0 && seen < 1000, "b serves the new flag after %.0f ms (%s)", seen, v);
    req(&a, "DELETE", "/api/v1/flags/qdb.test.replicated", admin, "If-Match: \"1\"", NULL, &r);
    CHECK(r.status == 204, "delete on a: %ld %s", r.status, r.body);
    th_resp_free(&r);
    t0 = th_now_ms();
    seen = -1;
    while (th_now_ms() - t0 < 10000 && seen < 0) {
        ofrep_value(&b, viewer_any, "staging", nk, NULL, v, sizeof v);
        seen = strcmp(v, "FLAG_NOT_FOUND") == 0 ? th_now_ms() - t0 : -1;
        if (seen < 0)
            th_sleep_ms(10);
    }
    CHECK(seen >= 0 && seen < 1000, "b stopped serving the deleted flag after %.0f ms (%s)", seen,
          v);
    CHECK(th_metric(&b, "qdb_flags_snapshot_full_reloads_total") == full_b,
          "still no full reload on b");
}

static void four_eyes(void)
{
    th_step("QDB_FLAGS_PROD_APPROVAL=1: a production change waits for another admin");
    /* replica b runs with approval on */
    char *other = NULL, *admin_b = th_dev_token(&b, "admin");
    struct th_resp r;
    th_post_json(&b, "/dev-issuer/token", NULL, "{\"sub\":\"second-admin\",\"role\":\"admin\"}",
                 &r);
    const char *t = json_string_value(json_object_get(r.json, "access_token"));
    other = t ? strdup(t) : NULL;
    th_resp_free(&r);
    const char *key = "qdb.notification.push-fcm";
    long v = flag_version(key);
    char ifm[64];
    snprintf(ifm, sizeof ifm, "If-Match: \"%ld\"", v);
    req(&b, "PUT", "/api/v1/flags/qdb.notification.push-fcm/environments/production", admin_b, ifm,
        "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\",\"comment\":"
        "\"go live\"}",
        &r);
    long id = (long)json_integer_value(json_object_get(r.json, "id"));
    CHECK(r.status == 202 && id > 0, "a change request: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(flag_version(key) == v, "nothing applied yet");
    char path[128];
    snprintf(path, sizeof path, "/api/v1/change-requests/%ld/approve", id);
    req(&b, "POST", path, admin_b, NULL, NULL, &r);
    CHECK(r.status == 403, "its author cannot approve it: %ld", r.status);
    th_resp_free(&r);
    req(&b, "POST", path, other, NULL, NULL, &r);
    CHECK(r.status == 200 &&
              strcmp(json_string_value(json_object_get(r.json, "state")) ?: "", "approved") == 0,
          "another admin approves: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(flag_version(key) == v + 1, "applied as one new version");
    char val[64];
    ofrep_value(&b, viewer_any, "production", key, NULL, val, sizeof val);
    CHECK(strcmp(val, "true") == 0, "served: %s", val);
    char ids[24];
    snprintf(ids, sizeof ids, "%ld", id);
    long audited = -1;
    for (int i = 0; i < 100 && audited < 2; i++) {
        audited = th_sql_long(url,
                              "SELECT count(*) FROM audit_event WHERE resource_type = "
                              "'change_request' AND resource_id = $1",
                              ids, NULL);
        if (audited < 2)
            th_sleep_ms(50);
    }
    CHECK(audited == 2, "audited when requested and when approved (%ld)", audited);
    req(&b, "POST", path, other, NULL, NULL, &r);
    CHECK(r.status == 409, "approved once: %ld", r.status);
    th_resp_free(&r);
    free(other);
    free(admin_b);
}

/* An RFC 3339 time `secs` from now. */
static void time_from_now(int secs, char *out, size_t n)
{
    time_t t = time(NULL) + secs;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The staging split's first percentage of a flag (-1 when it has none). */
static double staging_split(const char *key)
{
    PGresult *res = th_sql(url,
                           "SELECT COALESCE((config->'split'->0->>'percentage')::float8, -1) "
                           "FROM flag_env WHERE flag_key = $1 AND environment = 'staging'",
                           key, NULL);
    double v = res && PQntuples(res) == 1 ? strtod(PQgetvalue(res, 0, 0), NULL) : -2;
    PQclear(res);
    return v;
}

static void rollouts(void)
{
    th_step("a scheduled rollout: a step due now applies at once, the next at its time");
    const char *key = "qdb.guarantee.digital-signing";
    long v0 = flag_version(key);
    char past[40], soon[40], later[40], body[512];
    time_from_now(-60, past, sizeof past);
    time_from_now(2, soon, sizeof soon);
    time_from_now(3600, later, sizeof later);
    snprintf(body, sizeof body,
             "{\"environment\":\"staging\",\"comment\":\"wave 2\",\"steps\":[{\"at\":\"%s\","
             "\"percentage\":10},{\"at\":\"%s\",\"percentage\":20},{\"at\":\"%s\","
             "\"percentage\":100}]}",
             past, soon, later);
    struct th_resp r;
    req(&a, "POST", "/api/v1/flags/qdb.guarantee.digital-signing/rollouts", operator_, NULL, body,
        &r);
    long id = (long)json_integer_value(json_object_get(r.json, "id"));
    CHECK(r.status == 201 && id > 0, "rollout: %ld %s", r.status, r.body);
    th_resp_free(&r);
    req(&a, "POST", "/api/v1/flags/qdb.guarantee.digital-signing/rollouts", operator_, NULL, body,
        &r);
    CHECK(r.status == 409, "one active rollout per flag and environment: %ld", r.status);
    th_resp_free(&r);
    double pct = -1;
    for (int i = 0; i < 300 && pct != 10; i++) {
        pct = staging_split(key);
        if (pct != 10)
            th_sleep_ms(50);
    }
    CHECK(pct == 10, "the past step applied: %g", pct);
    for (int i = 0; i < 400 && pct != 20; i++) {
        pct = staging_split(key);
        if (pct != 20)
            th_sleep_ms(50);
    }
    CHECK(pct == 20, "the step two seconds ahead applied: %g", pct);
    CHECK(flag_version(key) == v0 + 2, "each step a version (%ld)", flag_version(key) - v0);
    char v[64];
    ofrep_value(&a, viewer, "staging", key, "{\"targetingKey\":\"user-1\"}", v, sizeof v);
    CHECK(strcmp(v, "true") == 0 || strcmp(v, "false") == 0, "split served: %s", v);

    th_step("abort restores the configuration from before the rollout; the last step never runs");
    char path[256];
    snprintf(path, sizeof path, "/api/v1/flags/%s/rollouts/%ld/abort", key, id);
    req(&a, "POST", path, operator_, NULL, NULL, &r);
    CHECK(r.status == 200 &&
              strcmp(json_string_value(json_object_get(r.json, "state")) ?: "", "aborted") == 0,
          "abort: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(staging_split(key) == -1, "no split after the abort");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM flag_version WHERE flag_key = $1 AND action IN "
                      "('rollout', 'rollout_abort')",
                      key, NULL) == 3,
          "two steps and the abort are versions");
    req(&a, "POST", path, operator_, NULL, NULL, &r);
    CHECK(r.status == 409, "aborted once: %ld", r.status);
    th_resp_free(&r);
}

struct stream {
    char token[8192];
    char buf[8192];
    size_t len;
    atomic_int open, seen;
};

static size_t on_stream(char *p, size_t size, size_t n, void *cls)
{
    struct stream *st = cls;
    size_t k = size * n;
    atomic_store(&st->open, 1);
    if (st->len + k < sizeof st->buf) {
        memcpy(st->buf + st->len, p, k);
        st->len += k;
        st->buf[st->len] = '\0';
    }
    if (strstr(st->buf, "event: flags-changed") && strstr(st->buf, "\"etag\"")) {
        atomic_store(&st->seen, 1);
        return 0; /* done: end the transfer */
    }
    return k;
}

static void *stream_main(void *cls)
{
    struct stream *st = cls;
    CURL *c = curl_easy_init();
    char u[256], auth[8300];
    snprintf(u, sizeof u, "%s/api/v1/flags/events?environment=integration", a.base);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", st->token);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    curl_easy_setopt(c, CURLOPT_URL, u);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_stream);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, st);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_stream);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, st);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 20L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_perform(c);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return NULL;
}

static void sse(void)
{
    th_step("Server-Sent Events push the environment's new ETag after a change");
    static struct stream st;
    snprintf(st.token, sizeof st.token, "%s", viewer);
    pthread_t t;
    pthread_create(&t, NULL, stream_main, &st);
    for (int i = 0; i < 200 && !atomic_load(&st.open); i++)
        th_sleep_ms(25);
    CHECK(atomic_load(&st.open), "the stream opened");
    /* the stream is registered with the hub by the time its headers are out */
    long v = flag_version("qdb.financing.enabled");
    char ifm[64];
    snprintf(ifm, sizeof ifm, "If-Match: \"%ld\"", v);
    struct th_resp r;
    req(&a, "PUT", "/api/v1/flags/qdb.financing.enabled/environments/integration", operator_, ifm,
        "{\"enabled\":false,\"default_variant\":\"on\",\"off_variant\":\"off\"}", &r);
    CHECK(r.status == 200, "change: %ld", r.status);
    th_resp_free(&r);
    pthread_join(t, NULL);
    CHECK(atomic_load(&st.seen), "an event with the new ETag: %.300s", st.buf);
}

static int listed(const json_t *list, const char *key)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(list, "items"), i, f)
    {
        if (strcmp(json_string_value(json_object_get(f, "key")) ?: "", key) == 0)
            return 1;
    }
    return 0;
}

static void stale_and_counts(void)
{
    th_step("evaluation counts reach the store (flushed every second here)");
    long rows = 0;
    for (int i = 0; i < 100 && rows <= 0; i++) {
        rows = th_sql_long(url,
                           "SELECT count(*) FROM flag_eval_count WHERE environment = "
                           "'development' AND flag_key = 'qdb.financing.enabled'",
                           NULL);
        if (rows <= 0)
            th_sleep_ms(100);
    }
    CHECK(rows > 0, "flag_eval_count rows: %ld", rows);

    th_step("stale: unchanged 30 days while serving one value, or never evaluated for 30 days");
    PQclear(th_sql(url,
                   "UPDATE flag_env SET updated_at = now() - interval '40 days' WHERE flag_key = "
                   "'qdb.guarantee.enabled' AND environment = 'dr'",
                   NULL));
    PQclear(th_sql(url,
                   "UPDATE flag SET created_at = now() - interval '40 days' WHERE key = "
                   "'qdb.cross-portal.related-items'",
                   NULL));
    struct th_resp r;
    th_get(&a, "/api/v1/flags?environment=dr&stale=true", viewer, &r);
    CHECK(r.status == 200 && listed(r.json, "qdb.guarantee.enabled"),
          "off for 40 days: stale: %.300s", r.body);
    CHECK(listed(r.json, "qdb.cross-portal.related-items"), "never evaluated for 40 days: stale");
    CHECK(!listed(r.json, "qdb.financing.enabled"), "a fresh flag is not stale");
    th_resp_free(&r);
    th_get(&a, "/api/v1/flags?environment=development&stale=true", viewer, &r);
    CHECK(r.status == 200 && !listed(r.json, "qdb.guarantee.enabled"),
          "only in the environment named");
    th_resp_free(&r);
    th_get(&a, "/api/v1/flags?stale=maybe", viewer, &r);
    CHECK(th_is_problem(&r, 400), "stale is a boolean: %ld", r.status);
    th_resp_free(&r);
}

static void events_row(void)
{
    th_step("each change emits one flags event in the outbox");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM outbox WHERE topic = 'app.controlplane.flags' AND "
                      "event->>'type' = 'qa.qdb.controlplane.flags.configure'",
                      NULL) >= 5,
          "configure events in the outbox");
}

int main(void)
{
    url = th_db_create("flags");
    const char *env_a[] = {"QDB_FLAGS_COUNTS_FLUSH_INTERVAL=1", NULL};
    const char *env_b[] = {"QDB_FLAGS_PROD_APPROVAL=1", NULL};
    if (th_server_start(&a, url, env_a, 1) != 0 || th_server_start(&b, url, env_b, 1) != 0) {
        CHECK(0, "servers start");
        return th_done();
    }
    admin = th_dev_token(&a, "admin");
    operator_ = th_dev_token(&a, "operator");
    viewer = th_dev_token(&a, "viewer");
    viewer_any = cli_token("svc-any", NULL);
    CHECK(admin && operator_ && viewer && viewer_any, "tokens");
    seed_and_file();
    service_tokens();
    versions_and_rollback();
    concurrent_writers();
    bad_input();
    bulk_etag();
    replicas();
    four_eyes();
    rollouts();
    sse();
    stale_and_counts();
    events_row();
    CHECK(th_server_stop(&a) == 0, "a stops cleanly");
    CHECK(th_server_stop(&b) == 0, "b stops cleanly");
    free(admin);
    free(operator_);
    free(viewer);
    free(viewer_any);
    th_db_drop(url);
    free(url);
    return th_done();
}
