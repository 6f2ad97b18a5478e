/* libFuzzer target for the audit chain's canonical JSON (server/audit/audit_chain.c): the
 * bytes an event's hash is computed over, so any instability breaks verification of an
 * exported trail. The input is parsed as JSON (any value, NUL allowed in strings) and:
 *   - canonicalizing fails exactly when a string holds U+0000 (jsonb cannot store it);
 *   - otherwise the output parses back (no duplicate keys) to an equal value (numbers by
 *     value: a whole real below 2^53 comes back as an integer), and canonicalizing that
 *     gives the same bytes (the form is a fixed point);
 *   - the output has no whitespace outside strings and no raw control character;
 *   - the scrubbed copy (audit_scrub_new) has no secret-named key, no credential-shaped
 *     string and no real the canonical form cannot carry through jsonb (|x| >= 2^53), and
 *     canonicalizes to a fixed point as well.
 * A broken invariant aborts (libFuzzer keeps the input). Seed corpus:
 * tests/fuzz/corpus/canonical_json/. Built by the suite's fuzz runner with the server's
 * sources (everything but main.c) and clang -fsanitize=fuzzer,address,undefined; by hand:
 *   clang -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -DQDB_VERSION='"f"'
 *     -I server tests/fuzz/fuzz_canonical_json.c <every .c file under server/ but main.c>
 *     <build>/migrations_embedded.c <build>/openapi_embedded.c $(pkg-config --libs ...)
 *   ./a.out -max_total_time=60 tests/fuzz/corpus/canonical_json */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit_internal.h"
#include "platform/buf.h"

#define CANON_LIMIT (16u * 1024u * 1024u)

static void fail(const char *what, const char *text)
{
    fprintf(stderr, "fuzz_canonical_json: %s\n  canonical: %.300s\n", what, text ? text : "");
    abort();
}

static int has_nul(const json_t *v)
{
    const char *k;
    json_t *m;
    size_t i;
    switch (json_typeof(v)) {
    case JSON_STRING:
        return strlen(json_string_value(v)) != json_string_length(v);
    case JSON_ARRAY:
        json_array_foreach((json_t *)v, i, m) if (has_nul(m)) return 1;
        return 0;
    case JSON_OBJECT:
        json_object_foreach((json_t *)v, k, m) if (has_nul(m)) return 1;
        return 0;
    default:
        return 0;
    }
}

/* Equal as the canonical form means it: numbers by value, the rest exactly. */
static int same(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b))
        return json_integer_value(a) == json_integer_value(b);
    if (json_is_number(a) && json_is_number(b))
        return json_number_value(a) == json_number_value(b);
    if (json_typeof(a) != json_typeof(b))
        return 0;
    size_t i;
    const char *k;
    json_t *m;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return 0;
        json_array_foreach((json_t *)a, i, m) if (!same(m, json_array_get(b, i))) return 0;
        return 1;
    case JSON_OBJECT:
        if (json_object_size(a) != json_object_size(b))
            return 0;
        json_object_foreach((json_t *)a, k, m)
        {
            json_t *o = json_object_get(b, k);
            if (!o || !same(m, o))
                return 0;
        }
        return 1;
    default:
        return 1; /* true, false, null: the type says it all */
    }
}

/* No whitespace between tokens and no raw control character anywhere. */
static void check_compact(const char *s, size_t n)
{
    int in_string = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20)
            fail("a raw control character in the output", s);
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == ' ') {
            fail("whitespace outside a string", s);
        }
    }
}

/* The scrubbed value holds nothing the scrubber should have removed or converted. */
static void check_scrubbed(const json_t *v)
{
    const char *k;
    json_t *m;
    size_t i;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        json_object_foreach((json_t *)v, k, m)
        {
            if (audit_key_is_secret(k))
                fail("a secret-named key survived scrubbing", k);
            if (json_is_string(m) && audit_value_is_secret(json_string_value(m)))
                fail("a credential-shaped member survived scrubbing", json_string_value(m));
            check_scrubbed(m);
        }
        break;
    case JSON_ARRAY:
        json_array_foreach((json_t *)v, i, m)
        {
            if (json_is_string(m) && audit_value_is_secret(json_string_value(m)))
                fail("a credential-shaped element survived scrubbing", json_string_value(m));
            check_scrubbed(m);
        }
        break;
    case JSON_REAL:
        if (!(fabs(json_real_value(v)) < 9007199254740992.0))
            fail("a real jsonb cannot carry exactly survived scrubbing", "");
        break;
    default:
        break;
    }
}

/* Canonicalize v; check the output and that it is a fixed point. Returns the canonical
 * text (caller frees) or NULL when v cannot be represented. */
static char *canon_checked(const json_t *v)
{
    struct buf b;
    buf_init(&b, CANON_LIMIT);
    int rc = audit_canon_append(&b, v);
    if (rc != 0) {
        buf_free(&b);
        if (!has_nul(v))
            fail("canonicalization failed on a value without NUL", "");
        return NULL;
    }
    if (has_nul(v))
        fail("canonicalization accepted a string holding NUL", b.data);
    char *text = buf_take(&b);
    size_t len = strlen(text);
    check_compact(text, len);
    json_error_t err;
    json_t *back = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
    if (!back)
        fail("the output does not parse back", text);
    if (!same(v, back))
        fail("the output parses back to a different value", text);
    buf_init(&b, CANON_LIMIT);
    if (audit_canon_append(&b, back) != 0 || b.len != len || memcmp(b.data, text, len) != 0)
        fail("canonicalizing the output again gives other bytes", text);
    buf_free(&b);
    json_decref(back);
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size); /* libFuzzer calls it */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t err;
    json_t *v = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!v)
        return 0;
    free(canon_checked(v));
    json_t *scrubbed = audit_scrub_new(v);
    if (!scrubbed)
        fail("scrubbing failed", "");
    check_scrubbed(scrubbed);
    free(canon_checked(scrubbed));
    json_decref(scrubbed);
    json_decref(v);
    return 0;
}
