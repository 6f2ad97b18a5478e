/* The audit room's pure parts: canonical JSON, secret scrubbing, the HMAC chain on fixed
 * vectors (computed independently with Python's hmac + json.dumps(sort_keys=True,
 * separators=(',', ':'), ensure_ascii=False)). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit_internal.h"
#include "unit.h"

static const unsigned char test_key[] = "0123456789abcdef0123456789abcdef";

/* The canonical text of the JSON text `in` (parsed by jansson). Caller frees. */
static char *canon_of(const char *in)
{
    json_t *v = json_loads(in, JSON_DECODE_ANY, NULL);
    if (!v)
        return strdup("<parse error>");
    struct buf b;
    buf_init(&b, 0);
    char *out = audit_canon_append(&b, v) == 0 ? buf_take(&b) : strdup("<canon error>");
    buf_free(&b);
    json_decref(v);
    return out;
}

static void expect_canon(const char *in, const char *want)
{
    char *got = canon_of(in);
    EXPECT(strcmp(got, want) == 0, "canon(%s) = %s, want %s", in, got, want);
    free(got);
}

static void test_canonical(void)
{
    expect_canon("{\"b\":1,\"a\":2,\"B\":3}", "{\"B\":3,\"a\":2,\"b\":1}");
    expect_canon("{ \"z\" : [ 3 , {\"y\":null, \"x\":true} ], \"a\" : false }",
                 "{\"a\":false,\"z\":[3,{\"x\":true,\"y\":null}]}");
    expect_canon("\"tab\\there \\\"q\\\" back\\\\ \\u0001 \\u001f nl\\n\"",
                 "\"tab\\there \\\"q\\\" back\\\\ \\u0001 \\u001f nl\\n\"");
    expect_canon("\"caf\\u00e9 \\u2028 / \\u00ff\"", "\"caf\xc3\xa9 \xe2\x80\xa8 / \xc3\xbf\"");
    expect_canon("1.0", "1");
    expect_canon("-0.0", "0");
    expect_canon("1.5", "1.5");
    expect_canon("0.1", "0.10000000000000001");
    expect_canon("1e-7", "9.9999999999999995e-08");
    expect_canon("123456789012345678", "123456789012345678");
    expect_canon("-9223372036854775808", "-9223372036854775808");
    expect_canon("{\"\xc3\xa9\":1,\"z\":2}", "{\"z\":2,\"\xc3\xa9\":1}"); /* bytes, not letters */
    expect_canon("[]", "[]");
    expect_canon("{}", "{}");

    /* A string holding NUL cannot be stored in jsonb: refused. */
    json_t *nul = json_stringn("a\0b", 3);
    struct buf b;
    buf_init(&b, 0);
    EXPECT(audit_canon_append(&b, nul) == -1, "NUL refused");
    buf_free(&b);
    json_decref(nul);

    /* Idempotent: canon(parse(canon(x))) == canon(x), the property verify relies on. */
    const char *samples[] = {"{\"k\":[1,2.5,\"x\",{\"b\":null,\"a\":[true,false]}],\"n\":-3}",
                             "[0.30000000000000004, 1e300, -2.5e-300, 4503599627370496.5]"};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        char *once = canon_of(samples[i]);
        char *twice = canon_of(once);
        EXPECT(strcmp(once, twice) == 0, "idempotent: %s vs %s", once, twice);
        free(once);
        free(twice);
    }
}

static void test_scrub(void)
{
    EXPECT(audit_key_is_secret("secret"), "secret");
    EXPECT(audit_key_is_secret("Client_Secret"), "case");
    EXPECT(audit_key_is_secret("PASSWORD"), "password");
    EXPECT(audit_key_is_secret("api_key"), "key");
    EXPECT(audit_key_is_secret("secret_hash"), "hash");
    EXPECT(audit_key_is_secret("access_token"), "token");
    EXPECT(audit_key_is_secret("credentials"), "credential");
    EXPECT(audit_key_is_secret("privateKeyPem"), "private");
    EXPECT(!audit_key_is_secret("name"), "name");
    EXPECT(!audit_key_is_secret("role"), "role");
    EXPECT(!audit_key_is_secret("environments"), "environments");

    EXPECT(audit_value_is_secret("qdb_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), "api token");
    EXPECT(audit_value_is_secret("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"), "jwt");
    EXPECT(audit_value_is_secret("-----BEGIN PRIVATE KEY-----\nMII"), "pem");
    EXPECT(audit_value_is_secret("Bearer abc.def"), "bearer");
    EXPECT(!audit_value_is_secret("qdb_prod"), "short qdb_ name is fine");
    EXPECT(!audit_value_is_secret("hello world"), "plain");

    json_t *in = json_loads(
        "{\"name\":\"ci\",\"role\":\"operator\",\"secret\":\"s3cr3t\",\"Token_Hash\":\"ab\","
        "\"nested\":{\"password\":\"p\",\"keep\":[1,\"qdb_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\","
        "{\"apiKey\":\"k\",\"ok\":true}]},\"note\":\"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln\","
        "\"big\":1e300,\"small\":2.5}",
        0, NULL);
    json_t *out = audit_scrub_new(in);
    struct buf b;
    buf_init(&b, 0);
    EXPECT(out && audit_canon_append(&b, out) == 0, "scrub + canon");
    const char *want =
        "{\"big\":\"1.0000000000000001e+300\",\"name\":\"ci\",\"nested\":{\"keep\":[1,"
        "{\"ok\":true}]},\"role\":\"operator\",\"small\":2.5}";
    EXPECT(b.data && strcmp(b.data, want) == 0, "scrubbed: %s", b.data ? b.data : "");
    EXPECT(json_object_get(in, "secret") != NULL, "input untouched");
    buf_free(&b);
    json_decref(in);
    json_decref(out);
    EXPECT(audit_scrub_new(NULL) == NULL, "NULL stays NULL");
}

static void test_chain_vectors(void)
{
    char hex[AUDIT_HASH_HEX + 1];
    const char *c1 =
        "{\"action\":\"token.create\",\"actor_name\":\"Alice A\",\"actor_subject\":\"alice\","
        "\"after\":{\"name\":\"ci\",\"role\":\"operator\"},\"auth_method\":\"oidc\",\"before\":"
        "null,\"client_addr\":\"127.0.0.1\",\"environment\":null,\"job_id\":null,\"request_id\":"
        "\"req-1\",\"resource_id\":\"42\",\"resource_type\":\"api_token\",\"seq\":1,\"time\":"
        "\"2026-11-25T12:00:00.123456Z\",\"token_id\":null}";
    const char *h1 = "c553aa9d96f5a679bad0fa3e8be9c35d4c62f5ab7a8a4d8d21c5463f1964cdc3";
    const char *h2 = "6d2260025eb446aa7c49a21dbe61e060e83fca8ab9679237f4d11b0bceff0f5d";
    const char *zeros = "0000000000000000000000000000000000000000000000000000000000000000";

    EXPECT(audit_chain_hmac(test_key, 32, zeros, c1, strlen(c1), hex) == 0 && strcmp(hex, h1) == 0,
           "raw HMAC vector: %s", hex);

    /* The same event from its fields: canonical form and hash agree with the vector. */
    audit_key_set(test_key, 32);
    EXPECT(audit_key_loaded(), "key loaded");
    json_t *after_in =
        json_loads("{\"role\":\"operator\",\"secret\":\"x\",\"name\":\"ci\"}", 0, NULL);
    json_t *after = audit_scrub_new(after_in);
    struct audit_row r = {
        .seq = 1,
        .time = "2026-11-25T12:00:00.123456Z",
        .actor_subject = "alice",
        .actor_name = "Alice A",
        .auth_method = "oidc",
        .action = "token.create",
        .resource_type = "api_token",
        .resource_id = "42",
        .after = after,
        .request_id = "req-1",
        .client_addr = "127.0.0.1",
        .prev_hash = zeros,
    };
    struct buf b;
    buf_init(&b, 0);
    EXPECT(audit_canon_event(&b, &r) == 0 && strcmp(b.data, c1) == 0, "event canon: %s",
           b.data ? b.data : "");
    buf_free(&b);
    EXPECT(audit_chain_hash_row(&r, hex) == 0 && strcmp(hex, h1) == 0, "event hash: %s", hex);

    /* The next link: the previous hash is part of the input. */
    struct audit_row r2 = r;
    r2.seq = 2;
    r2.action = "token.delete";
    r2.before = after;
    r2.after = NULL;
    r2.job_id = 7;
    r2.prev_hash = h1;
    EXPECT(audit_chain_hash_row(&r2, hex) == 0 && strcmp(hex, h2) == 0, "second link: %s", hex);

    /* Any change changes the hash. */
    r2.client_addr = "127.0.0.2";
    EXPECT(audit_chain_hash_row(&r2, hex) == 0 && strcmp(hex, h2) != 0, "tamper detected");
    r2.client_addr = "127.0.0.1";
    r2.prev_hash = zeros;
    EXPECT(audit_chain_hash_row(&r2, hex) == 0 && strcmp(hex, h2) != 0, "relinking detected");

    /* Another key, another hash. */
    audit_key_set((const unsigned char *)"another key of at least 32 bytes!!", 34);
    EXPECT(audit_chain_hash_row(&r, hex) == 0 && strcmp(hex, h1) != 0, "key matters");
    json_decref(after_in);
    json_decref(after);
}

/* A checkpoint's MAC (migrations/0005_audit_checkpoint.sql), on a vector computed with
 * Python: hmac(key, hash + json.dumps({"checked", "seq", "type": "audit.checkpoint",
 * "verified_at"}, sort_keys=True, separators=(',', ':'))). */
static void test_checkpoint_vector(void)
{
    char hex[AUDIT_HASH_HEX + 1];
    const char *h = "abababababababababababababababababababababababababababababababab";
    const char *at = "2026-12-01T09:00:00.123456Z";
    audit_key_set(test_key, 32);
    EXPECT(audit_checkpoint_mac(5678, h, at, 1234, hex) == 0 &&
               strcmp(hex, "adc60a3175678a3ab3467c64ff3728281732fff7dbbedec946a6b993e50011fc") ==
                   0,
           "checkpoint MAC vector: %s", hex);
    EXPECT(audit_checkpoint_mac(5678, h, at, 1235, hex) == 0 &&
               strcmp(hex, "94376544420ab6665417107b182ecbedf02960d67421ae0b51171310c812c8dd") ==
                   0,
           "every field is covered (checked): %s", hex);
    EXPECT(audit_checkpoint_mac(5679, h, at, 1234, hex) == 0 &&
               strcmp(hex, "adc60a3175678a3ab3467c64ff3728281732fff7dbbedec946a6b993e50011fc") !=
                   0,
           "seq is covered");
    EXPECT(audit_checkpoint_mac(5678, "abc", at, 1234, hex) == -1, "a hash that is not one");
}

int main(void)
{
    test_canonical();
    test_scrub();
    test_chain_vectors();
    test_checkpoint_vector();
    return unit_done();
}
