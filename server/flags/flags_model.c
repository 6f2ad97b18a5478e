/* The flag model's rules, pure: what a key, a definition, a configuration and a segment
 * may hold (flags_internal.h describes the shapes). The API checks every write with these
 * before the store sees it; the snapshot builder (flags_eval.c) trusts what passed. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "flags/flags_internal.h"

const char *const flags_type_names[] = {"boolean", "string", "number", "object", NULL};

const char *const flags_op_names[] = {
    "equals",     "not_equals", "in",         "not_in",     "starts_with", "ends_with",
    "contains",   "lt",         "lte",        "gt",         "gte",         "semver_eq",
    "semver_lt",  "semver_lte", "semver_gt",  "semver_gte", "in_segment",  "not_in_segment",
    NULL,
};

int flags_key_valid(const char *key)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0 || n > FLAGS_KEY_MAX)
        return 0;
    int seg_start = 1;
    for (size_t i = 0; i < n; i++) {
        char c = key[i];
        if (c == '.') {
            if (seg_start || key[i - 1] == '-')
                return 0; /* an empty segment, or one ending in '-' */
            seg_start = 1;
            continue;
        }
        int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '-' && !seg_start))
            return 0;
        seg_start = 0;
    }
    return !seg_start && key[n - 1] != '-';
}

int flags_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static int salt_valid(const char *s)
{
    size_t n = strlen(s);
    if (n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

#define FAIL(fld, ...)                                                                         \
    do {                                                                                       \
        snprintf(field, fieldlen, "%s", (fld));                                                \
        snprintf(err, errlen, __VA_ARGS__);                                                    \
        return -1;                                                                             \
    } while (0)

static int type_of(const json_t *def)
{
    const char *t = json_string_value(json_object_get(def, "type"));
    for (int i = 0; t && flags_type_names[i]; i++)
        if (strcmp(t, flags_type_names[i]) == 0)
            return i;
    return -1;
}

static int value_has_type(const json_t *v, int type)
{
    switch (type) {
    case FLAGS_BOOLEAN:
        return json_is_boolean(v);
    case FLAGS_STRING:
        return json_is_string(v);
    case FLAGS_NUMBER:
        return json_is_number(v);
    case FLAGS_OBJECT:
        return json_is_object(v);
    default:
        return 0;
    }
}

int flags_definition_check(const json_t *def, char *field, size_t fieldlen, char *err,
                           size_t errlen)
{
    int type = type_of(def);
    if (type < 0)
        FAIL("type", "type must be one of boolean, string, number, object");
    const json_t *variants = json_object_get(def, "variants");
    if (!json_is_object(variants) || json_object_size(variants) == 0 ||
        json_object_size(variants) > FLAGS_MAX_VARIANTS)
        FAIL("variants", "variants must be an object of 1 to %d name: value members",
             FLAGS_MAX_VARIANTS);
    const char *name;
    const json_t *v;
    json_object_foreach((json_t *)variants, name, v)
    {
        char f[96];
        snprintf(f, sizeof f, "variants.%.64s", name);
        if (!flags_name_valid(name))
            FAIL(f, "a variant name is 1 to 64 of A-Z a-z 0-9 _ . -");
        if (!value_has_type(v, type))
            FAIL(f, "the value of variant '%.64s' is not a %s", name, flags_type_names[type]);
    }
    const json_t *salt = json_object_get(def, "salt");
    if (salt && !(json_is_string(salt) && salt_valid(json_string_value(salt))))
        FAIL("salt", "salt is 0 to 64 of A-Z a-z 0-9 _ -");
    const json_t *tags = json_object_get(def, "tags");
    if (tags && (!json_is_array(tags) || json_array_size(tags) > 50))
        FAIL("tags", "tags is a list of at most 50 tags");
    size_t i;
    json_array_foreach((json_t *)tags, i, v)
    {
        if (!json_is_string(v) || !flags_name_valid(json_string_value(v)))
            FAIL("tags", "a tag is 1 to 64 of A-Z a-z 0-9 _ . -");
    }
    return 0;
}

static int has_variant(const json_t *def, const json_t *name)
{
    return json_is_string(name) &&
           json_object_get(json_object_get(def, "variants"), json_string_value(name)) != NULL;
}

static int op_index(const char *s)
{
    for (int i = 0; s && flags_op_names[i]; i++)
        if (strcmp(s, flags_op_names[i]) == 0)
            return i;
    return -1;
}

/* One condition at `where`. */
static int cond_check(const json_t *c, const char *where, int allow_segments, char *field,
                      size_t fieldlen, char *err, size_t errlen)
{
    char f[160];
    if (!json_is_object(c))
        FAIL(where, "a condition is an object {attribute, operator, value}");
    const char *k;
    const json_t *m;
    json_object_foreach((json_t *)c, k, m)
    {
        if (strcmp(k, "attribute") && strcmp(k, "operator") && strcmp(k, "value")) {
            snprintf(f, sizeof f, "%.100s.%.32s", where, k);
            FAIL(f, "a condition has only attribute, operator and value");
        }
    }
    snprintf(f, sizeof f, "%s.operator", where);
    int op = op_index(json_string_value(json_object_get(c, "operator")));
    if (op < 0)
        FAIL(f, "unknown operator: one of equals, not_equals, in, not_in, starts_with, "
                "ends_with, contains, lt, lte, gt, gte, semver_eq, semver_lt, semver_lte, "
                "semver_gt, semver_gte, in_segment, not_in_segment");
    const json_t *value = json_object_get(c, "value");
    const json_t *attr = json_object_get(c, "attribute");
    snprintf(f, sizeof f, "%s.value", where);
    if (op == FLAGS_OP_IN_SEGMENT || op == FLAGS_OP_NOT_IN_SEGMENT) {
        if (!allow_segments)
            FAIL(f, "a segment's conditions cannot name segments");
        if (attr) {
            snprintf(f, sizeof f, "%s.attribute", where);
            FAIL(f, "segment operators take no attribute");
        }
        if (!json_is_string(value) || !flags_name_valid(json_string_value(value)))
            FAIL(f, "the value of a segment operator is a segment name");
        return 0;
    }
    if (!json_is_string(attr) || json_string_length(attr) == 0 ||
        json_string_length(attr) > 256) {
        snprintf(f, sizeof f, "%s.attribute", where);
        FAIL(f, "attribute is a context attribute name or dotted path (1 to 256 bytes)");
    }
    switch (op) {
    case FLAGS_OP_EQUALS:
    case FLAGS_OP_NOT_EQUALS:
        if (!(json_is_string(value) || json_is_number(value) || json_is_boolean(value)))
            FAIL(f, "%s compares with a string, number or boolean", flags_op_names[op]);
        break;
    case FLAGS_OP_IN:
    case FLAGS_OP_NOT_IN: {
        if (!json_is_array(value) || json_array_size(value) == 0 ||
            json_array_size(value) > FLAGS_MAX_LIST)
            FAIL(f, "%s takes a list of 1 to %d values", flags_op_names[op], FLAGS_MAX_LIST);
        size_t i;
        const json_t *e;
        json_array_foreach((json_t *)value, i, e)
        {
            if (!(json_is_string(e) || json_is_number(e) || json_is_boolean(e)))
                FAIL(f, "%s takes strings, numbers or booleans", flags_op_names[op]);
        }
        break;
    }
    case FLAGS_OP_STARTS_WITH:
    case FLAGS_OP_ENDS_WITH:
    case FLAGS_OP_CONTAINS:
        if (!json_is_string(value))
            FAIL(f, "%s takes a string", flags_op_names[op]);
        break;
    case FLAGS_OP_LT:
    case FLAGS_OP_LTE:
    case FLAGS_OP_GT:
    case FLAGS_OP_GTE:
        if (!json_is_number(value))
            FAIL(f, "%s takes a number", flags_op_names[op]);
        break;
    default: /* semver */
        if (!json_is_string(value) ||
            flags_semver_cmp(json_string_value(value), json_string_value(value)) != 0)
            FAIL(f, "%s takes a semantic version (1.2.3, 1.2.3-rc.1)", flags_op_names[op]);
        break;
    }
    return 0;
}

static int conds_check(const json_t *conds, const char *where, int allow_segments,
                       char *field, size_t fieldlen, char *err, size_t errlen)
{
    if (!json_is_array(conds) || json_array_size(conds) > FLAGS_MAX_CONDITIONS)
        FAIL(where, "conditions is a list of at most %d conditions", FLAGS_MAX_CONDITIONS);
    size_t i;
    const json_t *c;
    json_array_foreach((json_t *)conds, i, c)
    {
        char f[128];
        snprintf(f, sizeof f, "%s[%zu]", where, i);
        if (cond_check(c, f, allow_segments, field, fieldlen, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/* A percentage with at most three decimals, as thousandths. -1 when it is not one. */
static long percent_milli(const json_t *p)
{
    if (!json_is_number(p))
        return -1;
    double v = json_number_value(p);
    if (!(v >= 0 && v <= 100))
        return -1;
    double m = v * 1000.0;
    long r = lround(m);
    if (fabs(m - (double)r) > 1e-6)
        return -1;
    return r;
}

static int split_check(const json_t *def, const json_t *split, const char *where, char *field,
                       size_t fieldlen, char *err, size_t errlen)
{
    if (!json_is_array(split) || json_array_size(split) == 0 ||
        json_array_size(split) > FLAGS_MAX_SPLIT)
        FAIL(where, "a split is a list of 1 to %d {variant, percentage}", FLAGS_MAX_SPLIT);
    long total = 0;
    size_t i;
    const json_t *part;
    json_array_foreach((json_t *)split, i, part)
    {
        char f[128];
        snprintf(f, sizeof f, "%s[%zu]", where, i);
        if (!json_is_object(part) || json_object_size(part) != 2)
            FAIL(f, "a split part is {variant, percentage}");
        if (!has_variant(def, json_object_get(part, "variant")))
            FAIL(f, "variant is not one of the flag's variants");
        long m = percent_milli(json_object_get(part, "percentage"));
        if (m < 0)
            FAIL(f, "percentage is a number from 0 to 100 with at most 3 decimals");
        total += m;
    }
    if (total != (long)FLAGS_BUCKETS)
        FAIL(where, "the percentages add up to %.3f, not 100", (double)total / 1000.0);
    return 0;
}

int flags_config_check(const json_t *def, const json_t *config, char *field, size_t fieldlen,
                       char *err, size_t errlen)
{
    if (!json_is_object(config))
        FAIL("config", "the configuration is an object");
    static const char *const members[] = {"enabled", "default_variant", "off_variant", "rules",
                                          "prerequisites", "split", NULL};
    const char *k;
    const json_t *m;
    json_object_foreach((json_t *)config, k, m)
    {
        int known = 0;
        for (int i = 0; members[i]; i++)
            known |= strcmp(k, members[i]) == 0;
        if (!known)
            FAIL(k, "not a member of a flag's environment configuration");
    }
    if (!json_is_boolean(json_object_get(config, "enabled")))
        FAIL("enabled", "enabled is true or false");
    if (!has_variant(def, json_object_get(config, "default_variant")))
        FAIL("default_variant", "default_variant is one of the flag's variants");
    if (!has_variant(def, json_object_get(config, "off_variant")))
        FAIL("off_variant", "off_variant is one of the flag's variants");
    const json_t *rules = json_object_get(config, "rules");
    if (rules && (!json_is_array(rules) || json_array_size(rules) > FLAGS_MAX_RULES))
        FAIL("rules", "rules is a list of at most %d rules", FLAGS_MAX_RULES);
    size_t i;
    const json_t *r;
    json_array_foreach((json_t *)rules, i, r)
    {
        char f[64];
        snprintf(f, sizeof f, "rules[%zu]", i);
        if (!json_is_object(r))
            FAIL(f, "a rule is {name?, conditions, variant | split}");
        json_object_foreach((json_t *)r, k, m)
        {
            if (strcmp(k, "name") && strcmp(k, "conditions") && strcmp(k, "variant") &&
                strcmp(k, "split")) {
                char g[96];
                snprintf(g, sizeof g, "%.60s.%.32s", f, k);
                FAIL(g, "a rule has only name, conditions, variant and split");
            }
        }
        const json_t *name = json_object_get(r, "name");
        if (name && !(json_is_string(name) && json_string_length(name) <= 200))
            FAIL(f, "a rule's name is a string of at most 200 bytes");
        char g[96];
        snprintf(g, sizeof g, "%s.conditions", f);
        const json_t *conds = json_object_get(r, "conditions");
        if (!conds)
            FAIL(g, "a rule needs conditions (a list; empty matches everyone)");
        if (conds_check(conds, g, 1, field, fieldlen, err, errlen) != 0)
            return -1;
        const json_t *variant = json_object_get(r, "variant"), *split = json_object_get(r, "split");
        if ((variant != NULL) == (split != NULL))
            FAIL(f, "a rule serves either a variant or a split");
        if (variant && !has_variant(def, variant)) {
            snprintf(g, sizeof g, "%s.variant", f);
            FAIL(g, "variant is not one of the flag's variants");
        }
        snprintf(g, sizeof g, "%s.split", f);
        if (split && split_check(def, split, g, field, fieldlen, err, errlen) != 0)
            return -1;
    }
    const json_t *pre = json_object_get(config, "prerequisites");
    if (pre && (!json_is_array(pre) || json_array_size(pre) > FLAGS_MAX_PREREQS))
        FAIL("prerequisites", "prerequisites is a list of at most %d {flag, variant}",
             FLAGS_MAX_PREREQS);
    json_array_foreach((json_t *)pre, i, r)
    {
        char f[64];
        snprintf(f, sizeof f, "prerequisites[%zu]", i);
        if (!json_is_object(r) || json_object_size(r) != 2 ||
            !flags_key_valid(json_string_value(json_object_get(r, "flag"))) ||
            !flags_name_valid(json_string_value(json_object_get(r, "variant"))))
            FAIL(f, "a prerequisite is {flag: a flag key, variant: a variant name}");
        if (strcmp(json_string_value(json_object_get(r, "flag")),
                   json_string_value(json_object_get(def, "key")) ?: "") == 0)
            FAIL(f, "a flag cannot be its own prerequisite");
    }
    const json_t *split = json_object_get(config, "split");
    if (split && !json_is_null(split) &&
        split_check(def, split, "split", field, fieldlen, err, errlen) != 0)
        return -1;
    return 0;
}

json_t *flags_config_initial(const char *default_variant, const char *off_variant)
{
    return json_pack("{s:b,s:s,s:s,s:[],s:[],s:n}", "enabled", 0, "default_variant",
                     default_variant, "off_variant", off_variant, "rules", "prerequisites",
                     "split");
}

int flags_segment_check(const json_t *seg, char *field, size_t fieldlen, char *err,
                        size_t errlen)
{
    const char *k;
    const json_t *m;
    json_object_foreach((json_t *)seg, k, m)
    {
        if (strcmp(k, "conditions") && strcmp(k, "included") && strcmp(k, "excluded"))
            FAIL(k, "a segment has conditions, included and excluded");
    }
    const json_t *conds = json_object_get(seg, "conditions");
    if (conds && conds_check(conds, "conditions", 0, field, fieldlen, err, errlen) != 0)
        return -1;
    static const char *const lists[] = {"included", "excluded"};
    for (int l = 0; l < 2; l++) {
        const json_t *a = json_object_get(seg, lists[l]);
        if (!a)
            continue;
        if (!json_is_array(a) || json_array_size(a) > FLAGS_MAX_LIST)
            FAIL(lists[l], "%s is a list of at most %d targeting keys", lists[l],
                 FLAGS_MAX_LIST);
        size_t i;
        const json_t *e;
        json_array_foreach((json_t *)a, i, e)
        {
            if (!json_is_string(e) || json_string_length(e) == 0 || json_string_length(e) > 256)
                FAIL(lists[l], "a targeting key is a string of 1 to 256 bytes");
        }
    }
    return 0;
}
