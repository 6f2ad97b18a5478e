/* The flag evaluator, pure: keys, semantic versions, the sticky bucket against vectors
 * computed independently (tests/unit/flags_bucket_vectors.json, Python's hashlib), every
 * rule operator, segments, prerequisites, splits over 100,000 keys (within 1 % of the
 * configured shares, and a 10 % -> 20 % change keeps the first 10 % in), reasons, and the
 * configuration checks that refuse bad input. */
#include <jansson.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flags/flags_internal.h"
#include "unit.h"


/* An environment of one or more flags from JSON text
 * {"flags": [{key, type, variants, config}], "segments": [...]}. */
static struct flags_env *env_of(const char *text)
{
    json_error_t err;
    json_t *doc = json_loads(text, 0, &err);
    if (!doc) {
        fprintf(stderr, "bad test JSON: %s at %d\n", err.text, err.line);
        return NULL;
    }
    struct flags_env *e = flags_env_build("test", doc);
    json_decref(doc);
    return e;
}

/* Evaluate `key` for context text; returns the variant name ("" on error) and the reason. */
static const char *eval(struct flags_env *e, const char *key, const char *ctx,
                        enum flags_reason *reason, enum flags_errcode *code)
{
    json_t *c = ctx ? json_loads(ctx, 0, NULL) : NULL;
    const struct flags_flag *f = flags_env_find(e, key);
    struct flags_result r = {0};
    if (f)
        flags_evaluate(e, f, c, &r);
    json_decref(c);
    if (reason)
        *reason = r.reason;
    if (code)
        *code = r.error;
    return f && r.variant >= 0 ? f->variants[r.variant].name : "";
}

static void keys(void)
{
    const char *good[] = {"qdb.guarantee.digital-signing", "a", "a.b", "x1.y-2.z3", NULL};
    const char *bad[] = {"", "A", "a.", ".a", "a..b", "-a", "a-", "a-.b", "a_b", "a b", "ä",
                         NULL};
    for (int i = 0; good[i]; i++)
        EXPECT(flags_key_valid(good[i]), "%s is a key", good[i]);
    for (int i = 0; bad[i]; i++)
        EXPECT(!flags_key_valid(bad[i]), "%s is not a key", bad[i]);
    char longkey[260];
    memset(longkey, 'a', 201);
    longkey[201] = '\0';
    EXPECT(!flags_key_valid(longkey), "201 bytes is too long");
}

static void semver(void)
{
    struct {
        const char *a, *b;
        int want;
    } t[] = {
        {"1.2.3", "1.2.3", 0},           {"1.2.3", "1.2.4", -1},
        {"1.10.0", "1.9.9", 1},          {"v2.0.0", "2.0.0", 0},
        {"1.0.0-alpha", "1.0.0", -1},    {"1.0.0-alpha", "1.0.0-alpha.1", -1},
        {"1.0.0-alpha.1", "1.0.0-alpha.beta", -1}, {"1.0.0-beta.2", "1.0.0-beta.11", -1},
        {"1.0.0-rc.1", "1.0.0", -1},     {"1.0.0+build.5", "1.0.0", 0},
        {"1.2", "1.2.0", -2},            {"01.2.3", "1.2.3", -2},
        {"1.2.3-", "1.2.3", -2},         {"abc", "1.0.0", -2},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        EXPECT(flags_semver_cmp(t[i].a, t[i].b) == t[i].want, "%s vs %s: %d, want %d", t[i].a,
               t[i].b, flags_semver_cmp(t[i].a, t[i].b), t[i].want);
}

static void bucket_vectors(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s", __FILE__);
    char *dir = dirname(path);
    char file[1100];
    snprintf(file, sizeof file, "%s/flags_bucket_vectors.json", dir);
    json_error_t err;
    json_t *doc = json_load_file(file, 0, &err);
    EXPECT(doc != NULL, "vectors at %s: %s", file, err.text);
    size_t i;
    json_t *v;
    int n = 0;
    json_array_foreach(json_object_get(doc, "vectors"), i, v)
    {
        uint32_t b = flags_bucket(json_string_value(json_object_get(v, "flag")),
                                  json_string_value(json_object_get(v, "salt")),
                                  json_string_value(json_object_get(v, "targetingKey")));
        json_int_t want = json_integer_value(json_object_get(v, "bucket"));
        EXPECT(b == (uint32_t)want, "vector %zu: bucket %u, want %lld", i, b, (long long)want);
        const char *in = json_string_value(json_object_get(v, "input"));
        struct flags_sha256 h;
        unsigned char md[32];
        char hex[65];
        flags_sha256_init(&h);
        flags_sha256_update(&h, in, strlen(in));
        flags_sha256_final(&h, md);
        for (int k = 0; k < 32; k++)
            snprintf(hex + 2 * k, 3, "%02x", md[k]);
        EXPECT(strcmp(hex, json_string_value(json_object_get(v, "sha256"))) == 0,
               "vector %zu: sha256 %s", i, hex);
        n++;
    }
    EXPECT(n >= 8, "%d vectors", n);
    json_decref(doc);
}

#define BOOL_FLAG(key, cfg)                                                                    \
    "{\"key\":\"" key "\",\"type\":\"boolean\",\"variants\":{\"on\":true,\"off\":false},"      \
    "\"version\":3,\"config\":" cfg "}"

static void rules(void)
{
    struct {
        const char *op, *value, *ctx;
        int match;
    } t[] = {
        {"equals", "\"gold\"", "{\"tier\":\"gold\"}", 1},
        {"equals", "\"gold\"", "{\"tier\":\"silver\"}", 0},
        {"equals", "3", "{\"tier\":3.0}", 1},
        {"equals", "true", "{\"tier\":true}", 1},
        {"not_equals", "\"gold\"", "{\"tier\":\"silver\"}", 1},
        {"not_equals", "\"gold\"", "{\"tier\":\"gold\"}", 0},
        {"not_equals", "\"gold\"", "{}", 0}, /* missing attribute: never a match */
        {"in", "[\"a\",\"b\"]", "{\"tier\":\"b\"}", 1},
        {"in", "[\"a\",\"b\"]", "{\"tier\":\"c\"}", 0},
        {"not_in", "[\"a\",\"b\"]", "{\"tier\":\"c\"}", 1},
        {"not_in", "[\"a\",\"b\"]", "{\"tier\":\"a\"}", 0},
        {"starts_with", "\"fin\"", "{\"tier\":\"financing\"}", 1},
        {"starts_with", "\"fin\"", "{\"tier\":\"guarantee\"}", 0},
        {"ends_with", "\"ing\"", "{\"tier\":\"financing\"}", 1},
        {"ends_with", "\"ing\"", "{\"tier\":\"in\"}", 0},
        {"contains", "\"nan\"", "{\"tier\":\"financing\"}", 1},
        {"contains", "\"xyz\"", "{\"tier\":\"financing\"}", 0},
        {"contains", "\"1\"", "{\"tier\":1}", 0}, /* wrong type: no match */
        {"lt", "10", "{\"tier\":9.5}", 1},
        {"lt", "10", "{\"tier\":10}", 0},
        {"lte", "10", "{\"tier\":10}", 1},
        {"gt", "10", "{\"tier\":11}", 1},
        {"gt", "10", "{\"tier\":\"11\"}", 0},
        {"gte", "10", "{\"tier\":10}", 1},
        {"semver_eq", "\"1.2.3\"", "{\"tier\":\"v1.2.3\"}", 1},
        {"semver_lt", "\"2.0.0\"", "{\"tier\":\"2.0.0-rc.1\"}", 1},
        {"semver_lte", "\"2.0.0\"", "{\"tier\":\"2.0.1\"}", 0},
        {"semver_gt", "\"1.9.0\"", "{\"tier\":\"1.10.0\"}", 1},
        {"semver_gte", "\"1.10.0\"", "{\"tier\":\"1.9.9\"}", 0},
        {"semver_gte", "\"1.0.0\"", "{\"tier\":\"not-a-version\"}", 0},
        {"equals", "\"x\"", "{\"tier\":null}", 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text,
                 "{\"flags\":[" BOOL_FLAG("f", "{\"enabled\":true,\"default_variant\":\"off\","
                                               "\"off_variant\":\"off\",\"rules\":[{"
                                               "\"conditions\":[{\"attribute\":\"tier\","
                                               "\"operator\":\"%s\",\"value\":%s}],"
                                               "\"variant\":\"on\"}]}") "],\"segments\":[]}",
                 t[i].op, t[i].value);
        struct flags_env *e = env_of(text);
        EXPECT(e && e->nflags == 1, "%s compiles", t[i].op);
        if (!e || e->nflags != 1) {
            flags_env_free(e);
            continue;
        }
        enum flags_reason reason;
        const char *v = eval(e, "f", t[i].ctx, &reason, NULL);
        EXPECT(strcmp(v, t[i].match ? "on" : "off") == 0 &&
                   reason == (t[i].match ? FLAGS_R_TARGETING_MATCH : FLAGS_R_DEFAULT),
               "%s %s on %s: %s (%s)", t[i].op, t[i].value, t[i].ctx, v, flags_reason_name(reason));
        flags_env_free(e);
    }
    /* a dotted path reaches into nested objects; every condition of a rule must hold */
    struct flags_env *e = env_of(
        "{\"flags\":[" BOOL_FLAG("f", "{\"enabled\":true,\"default_variant\":\"off\","
                                      "\"off_variant\":\"off\",\"rules\":[{\"conditions\":["
                                      "{\"attribute\":\"company.country\",\"operator\":"
                                      "\"equals\",\"value\":\"QA\"},{\"attribute\":\"portal\","
                                      "\"operator\":\"in\",\"value\":[\"financing\"]}],"
                                      "\"variant\":\"on\"}]}") "]}");
    EXPECT(strcmp(eval(e, "f", "{\"company\":{\"country\":\"QA\"},\"portal\":\"financing\"}",
                       NULL, NULL), "on") == 0, "nested path and both conditions");
    EXPECT(strcmp(eval(e, "f", "{\"company\":{\"country\":\"QA\"},\"portal\":\"advisory\"}",
                       NULL, NULL), "off") == 0, "one condition fails");
    flags_env_free(e);
}

static void segments_and_prerequisites(void)
{
    struct flags_env *e = env_of(
        "{\"segments\":[{\"name\":\"pilot\",\"conditions\":[{\"attribute\":\"email\","
        "\"operator\":\"ends_with\",\"value\":\"@qdb.qa\"}],\"included\":[\"vip\"],"
        "\"excluded\":[\"banned@qdb.qa\"]}],"
        "\"flags\":["
        BOOL_FLAG("a.parent", "{\"enabled\":true,\"default_variant\":\"off\",\"off_variant\":"
                              "\"off\",\"rules\":[{\"conditions\":[{\"operator\":\"in_segment\","
                              "\"value\":\"pilot\"}],\"variant\":\"on\"}]}") ","
        BOOL_FLAG("b.child", "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":"
                             "\"off\",\"prerequisites\":[{\"flag\":\"a.parent\",\"variant\":"
                             "\"on\"}]}") ","
        BOOL_FLAG("c.outside", "{\"enabled\":true,\"default_variant\":\"off\",\"off_variant\":"
                               "\"off\",\"rules\":[{\"conditions\":[{\"operator\":"
                               "\"not_in_segment\",\"value\":\"pilot\"}],\"variant\":\"on\"}]}") ","
        BOOL_FLAG("d.off", "{\"enabled\":false,\"default_variant\":\"on\",\"off_variant\":\"off\"}")
        "]}");
    EXPECT(e && e->nflags == 4, "compiles");
    enum flags_reason r;
    EXPECT(strcmp(eval(e, "a.parent", "{\"targetingKey\":\"x\",\"email\":\"a@qdb.qa\"}", &r, NULL),
                  "on") == 0 && r == FLAGS_R_TARGETING_MATCH, "segment by condition");
    EXPECT(strcmp(eval(e, "a.parent", "{\"targetingKey\":\"vip\",\"email\":\"a@x.com\"}", NULL,
                       NULL), "on") == 0, "segment by inclusion");
    EXPECT(strcmp(eval(e, "a.parent", "{\"targetingKey\":\"banned@qdb.qa\",\"email\":"
                                      "\"banned@qdb.qa\"}", NULL, NULL), "off") == 0,
           "exclusion wins over the conditions");
    EXPECT(strcmp(eval(e, "c.outside", "{\"email\":\"a@x.com\"}", NULL, NULL), "on") == 0,
           "not_in_segment");
    EXPECT(strcmp(eval(e, "b.child", "{\"email\":\"a@qdb.qa\"}", &r, NULL), "on") == 0 &&
               r == FLAGS_R_STATIC, "prerequisite met");
    EXPECT(strcmp(eval(e, "b.child", "{\"email\":\"a@x.com\"}", &r, NULL), "off") == 0 &&
               r == FLAGS_R_DISABLED, "prerequisite not met: off variant, DISABLED");
    EXPECT(strcmp(eval(e, "d.off", "{}", &r, NULL), "off") == 0 && r == FLAGS_R_DISABLED,
           "kill switch");
    flags_env_free(e);
}

static struct flags_env *split_env(const char *on_pct, const char *off_pct)
{
    char text[1024];
    snprintf(text, sizeof text,
             "{\"flags\":[" BOOL_FLAG("qdb.migration.wave2-linking",
                                      "{\"enabled\":true,\"default_variant\":\"off\","
                                      "\"off_variant\":\"off\",\"split\":[{\"variant\":\"on\","
                                      "\"percentage\":%s},{\"variant\":\"off\",\"percentage\":"
                                      "%s}]}") "]}",
             on_pct, off_pct);
    return env_of(text);
}

static void splits(void)
{
    struct flags_env *ten = split_env("10", "90"), *twenty = split_env("20", "80");
    EXPECT(ten && twenty, "split flags compile");
    if (!ten || !twenty)
        return;
    int on10 = 0, on20 = 0, kept = 0, lost = 0;
    char ctx[96];
    for (int i = 0; i < 100000; i++) {
        snprintf(ctx, sizeof ctx, "{\"targetingKey\":\"user-%d\"}", i);
        enum flags_reason r;
        int a = strcmp(eval(ten, "qdb.migration.wave2-linking", ctx, &r, NULL), "on") == 0;
        int b = strcmp(eval(twenty, "qdb.migration.wave2-linking", ctx, NULL, NULL), "on") == 0;
        on10 += a;
        on20 += b;
        if (a && b)
            kept++;
        if (a && !b)
            lost++;
        if (i == 0)
            EXPECT(r == FLAGS_R_SPLIT, "reason SPLIT");
    }
    EXPECT(on10 >= 9000 && on10 <= 11000, "10 %% split: %d of 100000", on10);
    EXPECT(on20 >= 19000 && on20 <= 21000, "20 %% split: %d of 100000", on20);
    EXPECT(lost == 0 && kept == on10, "10 -> 20 %%: every key of the 10 %% stays in (%d lost)",
           lost);
    enum flags_errcode code;
    enum flags_reason r;
    EXPECT(strcmp(eval(ten, "qdb.migration.wave2-linking", "{}", &r, &code), "") == 0 &&
               r == FLAGS_R_ERROR && code == FLAGS_E_TARGETING_KEY_MISSING,
           "a split needs targetingKey");
    flags_env_free(ten);
    flags_env_free(twenty);
    /* stable: the same key lands in the same bucket in a new snapshot (a restart) */
    struct flags_env *again = split_env("10", "90");
    EXPECT(strcmp(eval(again, "qdb.migration.wave2-linking", "{\"targetingKey\":\"user-42\"}",
                       NULL, NULL),
                  flags_bucket("qdb.migration.wave2-linking", "", "user-42") < 10000 ? "on"
                                                                                     : "off") == 0,
           "bucket decides, the same in every snapshot");
    flags_env_free(again);
}

static int check(const char *def, const char *cfg, char *field, size_t n)
{
    json_t *d = json_loads(def, 0, NULL), *c = json_loads(cfg, 0, NULL);
    char err[256];
    int rc = flags_config_check(d, c, field, n, err, sizeof err);
    json_decref(d);
    json_decref(c);
    return rc;
}

static void refusals(void)
{
    const char *def = "{\"key\":\"f\",\"type\":\"boolean\",\"variants\":{\"on\":true,\"off\":false}}";
    char field[128];
    EXPECT(check(def, "{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\"}",
                 field, sizeof field) == 0, "a minimal configuration");
    struct {
        const char *cfg, *field;
    } t[] = {
        {"{\"enabled\":1,\"default_variant\":\"on\",\"off_variant\":\"off\"}", "enabled"},
        {"{\"enabled\":true,\"default_variant\":\"maybe\",\"off_variant\":\"off\"}",
         "default_variant"},
        {"{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\",\"rules\":[{"
         "\"conditions\":[{\"attribute\":\"a\",\"operator\":\"resembles\",\"value\":1}],"
         "\"variant\":\"on\"}]}",
         "rules[0].conditions[0].operator"},
        {"{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\",\"rules\":[{"
         "\"conditions\":[{\"attribute\":\"a\",\"operator\":\"lt\",\"value\":\"ten\"}],"
         "\"variant\":\"on\"}]}",
         "rules[0].conditions[0].value"},
        {"{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\",\"split\":[{"
         "\"variant\":\"on\",\"percentage\":10},{\"variant\":\"off\",\"percentage\":80}]}",
         "split"},
        {"{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\",\"split\":[{"
         "\"variant\":\"on\",\"percentage\":10.0001},{\"variant\":\"off\",\"percentage\":"
         "89.9999}]}",
         "split[0]"},
        {"{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\","
         "\"prerequisites\":[{\"flag\":\"f\",\"variant\":\"on\"}]}",
         "prerequisites[0]"},
        {"{\"enabled\":true,\"default_variant\":\"on\",\"off_variant\":\"off\",\"extra\":1}",
         "extra"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        field[0] = '\0';
        EXPECT(check(def, t[i].cfg, field, sizeof field) != 0 && strcmp(field, t[i].field) == 0,
               "case %zu refused naming %s (named %s)", i, t[i].field, field);
    }
    /* 10,000 rules */
    json_t *cfg = json_pack("{s:b,s:s,s:s,s:[]}", "enabled", 1, "default_variant", "on",
                            "off_variant", "off", "rules");
    for (int i = 0; i < 10000; i++)
        json_array_append_new(json_object_get(cfg, "rules"),
                              json_pack("{s:[],s:s}", "conditions", "variant", "on"));
    json_t *d = json_loads(def, 0, NULL);
    char err[256];
    EXPECT(flags_config_check(d, cfg, field, sizeof field, err, sizeof err) != 0 &&
               strcmp(field, "rules") == 0, "10,000 rules refused (%s)", field);
    json_decref(cfg);
    /* a variant value of the wrong type */
    json_t *bad = json_loads("{\"key\":\"f\",\"type\":\"boolean\",\"variants\":{\"on\":\"yes\"}}",
                             0, NULL);
    EXPECT(flags_definition_check(bad, field, sizeof field, err, sizeof err) != 0 &&
               strcmp(field, "variants.on") == 0, "a string variant in a boolean flag");
    json_decref(bad);
    json_decref(d);
}

/* SHA-256 over lengths around the block and padding edges, against OpenSSL. */
static void sha256_lengths(void)
{
    unsigned char data[300];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (unsigned char)(i * 7 + 3);
    int bad = 0;
    for (size_t n = 0; n <= sizeof data; n++) {
        unsigned char mine[32], ref[32];
        unsigned int rn = 0;
        struct flags_sha256 h;
        flags_sha256_init(&h);
        /* in two pieces, to cross the buffer */
        flags_sha256_update(&h, data, n / 3);
        flags_sha256_update(&h, data + n / 3, n - n / 3);
        flags_sha256_final(&h, mine);
        EVP_Digest(data, n, ref, &rn, EVP_sha256(), NULL);
        bad += memcmp(mine, ref, 32) != 0;
    }
    EXPECT(bad == 0, "%d lengths differ from OpenSSL", bad);
}

static void rendering(void)
{
    struct flags_env *e = env_of(
        "{\"flags\":[{\"key\":\"s.flag\",\"type\":\"string\",\"variants\":{\"a\":\"x\\\"y\"},"
        "\"version\":2,\"config\":{\"enabled\":true,\"default_variant\":\"a\",\"off_variant\":"
        "\"a\"}}]}");
    const struct flags_flag *f = flags_env_find(e, "s.flag");
    struct flags_result r;
    flags_evaluate(e, f, NULL, &r);
    struct buf b;
    buf_init(&b, 0);
    flags_render_result(&b, f, &r);
    EXPECT(strcmp(b.data, "{\"key\":\"s.flag\",\"reason\":\"STATIC\",\"value\":\"x\\\"y\","
                          "\"variant\":\"a\",\"metadata\":{\"version\":2}}") == 0,
           "rendered %s", b.data);
    json_t *parsed = json_loads(b.data, 0, NULL);
    EXPECT(parsed != NULL, "valid JSON");
    json_decref(parsed);
    buf_free(&b);
    EXPECT(atomic_load(&f->counts[0]) == 1, "counted");
    flags_env_free(e);
}

int main(void)
{
    keys();
    semver();
    bucket_vectors();
    rules();
    segments_and_prerequisites();
    splits();
    refusals();
    sha256_lengths();
    rendering();
    return unit_done();
}
