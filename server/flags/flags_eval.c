/* The evaluator, pure and lock-free: compiling a store document into an environment's
 * immutable snapshot, evaluating a flag against a context, rendering the OFREP answer. The
 * rules it applies are documented in flags_internal.h. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "flags/flags_internal.h"
#include "platform/log.h"

static const char *const reason_names[] = {"STATIC",  "TARGETING_MATCH", "SPLIT",
                                           "DISABLED", "DEFAULT",        "ERROR"};
static const char *const errcode_names[] = {"",
                                            "FLAG_NOT_FOUND",
                                            "PARSE_ERROR",
                                            "TARGETING_KEY_MISSING",
                                            "INVALID_CONTEXT",
                                            "TYPE_MISMATCH",
                                            "GENERAL"};

const char *flags_reason_name(enum flags_reason r)
{
    return (unsigned)r <= FLAGS_R_ERROR ? reason_names[r] : "UNKNOWN";
}

const char *flags_errcode_name(enum flags_errcode e)
{
    return (unsigned)e <= FLAGS_E_GENERAL ? errcode_names[e] : "GENERAL";
}

/* ---- the bucket ---- */

uint32_t flags_bucket(const char *flag_key, const char *salt, const char *targeting_key)
{
    /* the digest is over flagKey ":" salt ":" targetingKey, fed in pieces so that no buffer
     * bounds the targeting key */
    struct flags_sha256 h;
    unsigned char md[32];
    flags_sha256_init(&h);
    flags_sha256_update(&h, flag_key, strlen(flag_key));
    flags_sha256_update(&h, ":", 1);
    flags_sha256_update(&h, salt, strlen(salt));
    flags_sha256_update(&h, ":", 1);
    flags_sha256_update(&h, targeting_key, strlen(targeting_key));
    flags_sha256_final(&h, md);
    uint32_t v = ((uint32_t)md[0] << 24) | ((uint32_t)md[1] << 16) | ((uint32_t)md[2] << 8) |
                 (uint32_t)md[3];
    return v % FLAGS_BUCKETS;
}

/* ---- semantic versions ---- */

struct semver {
    long long num[3];
    const char *pre; /* points into the text; NULL = none */
    size_t pre_len;
};

static int parse_num(const char **p, long long *out)
{
    const char *s = *p;
    if (!isdigit((unsigned char)*s))
        return -1;
    if (*s == '0' && isdigit((unsigned char)s[1]))
        return -1; /* no leading zeros */
    long long v = 0;
    while (isdigit((unsigned char)*s)) {
        if (v > 100000000000000LL)
            return -1;
        v = v * 10 + (*s - '0');
        s++;
    }
    *out = v;
    *p = s;
    return 0;
}

static int semver_parse(const char *s, struct semver *v)
{
    if (!s)
        return -1;
    if (*s == 'v')
        s++;
    for (int i = 0; i < 3; i++) {
        if (parse_num(&s, &v->num[i]) != 0)
            return -1;
        if (i < 2 && *s++ != '.')
            return -1;
    }
    v->pre = NULL;
    v->pre_len = 0;
    if (*s == '-') {
        s++;
        v->pre = s;
        while (*s && *s != '+') {
            if (!(isalnum((unsigned char)*s) || *s == '.' || *s == '-'))
                return -1;
            s++;
        }
        v->pre_len = (size_t)(s - v->pre);
        if (v->pre_len == 0)
            return -1;
    }
    if (*s == '+') {
        s++;
        if (!*s)
            return -1;
        while (*s) {
            if (!(isalnum((unsigned char)*s) || *s == '.' || *s == '-'))
                return -1;
            s++;
        }
    }
    return *s ? -1 : 0;
}

static int is_numeric(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return 0;
    return n > 0;
}

/* Precedence of two pre-release strings (semver 2.0.0, 11.4). */
static int pre_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    size_t i = 0, j = 0;
    while (i < an && j < bn) {
        size_t ie = i, je = j;
        while (ie < an && a[ie] != '.')
            ie++;
        while (je < bn && b[je] != '.')
            je++;
        int anum = is_numeric(a + i, ie - i), bnum = is_numeric(b + j, je - j);
        int c = 0;
        if (anum && bnum) {
            long long x = strtoll(a + i, NULL, 10), y = strtoll(b + j, NULL, 10);
            c = x < y ? -1 : x > y;
        } else if (anum != bnum) {
            c = anum ? -1 : 1; /* numeric identifiers sort first */
        } else {
            size_t la = ie - i, lb = je - j;
            int m = memcmp(a + i, b + j, la < lb ? la : lb);
            c = m ? (m < 0 ? -1 : 1) : (la < lb ? -1 : la > lb);
        }
        if (c)
            return c;
        i = ie < an ? ie + 1 : ie;
        j = je < bn ? je + 1 : je;
    }
    return (i < an) - (j < bn);
}

int flags_semver_cmp(const char *a, const char *b)
{
    struct semver x, y;
    if (semver_parse(a, &x) != 0 || semver_parse(b, &y) != 0)
        return -2;
    for (int i = 0; i < 3; i++)
        if (x.num[i] != y.num[i])
            return x.num[i] < y.num[i] ? -1 : 1;
    if (!x.pre && !y.pre)
        return 0;
    if (!x.pre || !y.pre)
        return x.pre ? -1 : 1; /* a pre-release sorts before its release */
    return pre_cmp(x.pre, x.pre_len, y.pre, y.pre_len);
}

/* ---- hash for ETags ---- */

uint64_t flags_hash64(const void *data, size_t len)
{
    /* FNV-1a over 8-byte words with a final avalanche: fast on large bodies, and an ETag
     * needs only to change when the bytes do. */
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)len;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    for (; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* ---- compiling ---- */

static char *json_text(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS);
}

static int variant_index(const struct flags_flag *f, const char *name)
{
    for (int i = 0; name && i < f->nvariants; i++)
        if (strcmp(f->variants[i].name, name) == 0)
            return i;
    return -1;
}

static int op_of(const char *s)
{
    for (int i = 0; s && flags_op_names[i]; i++)
        if (strcmp(s, flags_op_names[i]) == 0)
            return i;
    return -1;
}

static int segment_index(const struct flags_env *env, const char *name)
{
    for (size_t i = 0; name && i < env->nsegments; i++)
        if (strcmp(env->segments[i].name, name) == 0)
            return (int)i;
    return -1;
}

static void conds_free(struct flags_cond *c, int n)
{
    for (int i = 0; i < n; i++) {
        free(c[i].attr);
        json_decref(c[i].value);
    }
    free(c);
}

static int conds_build(const struct flags_env *env, const json_t *arr, struct flags_cond **out,
                       int *nout)
{
    size_t n = json_array_size(arr);
    *out = NULL;
    *nout = 0;
    if (n == 0)
        return 0;
    struct flags_cond *c = calloc(n, sizeof *c);
    if (!c)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const json_t *j = json_array_get(arr, i);
        int op = op_of(json_string_value(json_object_get(j, "operator")));
        if (op < 0) {
            conds_free(c, (int)i);
            return -1;
        }
        c[i].op = (enum flags_op)op;
        const char *attr = json_string_value(json_object_get(j, "attribute"));
        c[i].attr = attr ? strdup(attr) : NULL;
        c[i].value = json_deep_copy(json_object_get(j, "value"));
        c[i].segment = -1;
        if (op == FLAGS_OP_IN_SEGMENT || op == FLAGS_OP_NOT_IN_SEGMENT)
            c[i].segment = env ? segment_index(env, json_string_value(c[i].value)) : -1;
    }
    *out = c;
    *nout = (int)n;
    return 0;
}

static struct flags_split *split_build(const struct flags_flag *f, const json_t *arr)
{
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return NULL;
    struct flags_split *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    uint32_t acc = 0;
    size_t i;
    const json_t *part;
    json_array_foreach((json_t *)arr, i, part)
    {
        if (i >= FLAGS_MAX_SPLIT)
            break;
        double pct = json_number_value(json_object_get(part, "percentage"));
        acc += (uint32_t)(pct * 1000.0 + 0.5);
        s->variant[s->n] = variant_index(f, json_string_value(json_object_get(part, "variant")));
        s->upto[s->n] = acc;
        s->n++;
    }
    if (s->n > 0)
        s->upto[s->n - 1] = FLAGS_BUCKETS; /* rounding never leaves a key unserved */
    return s;
}

static void flag_clear(struct flags_flag *f)
{
    free(f->key);
    free(f->key_json);
    free(f->head);
    free(f->salt);
    for (int i = 0; i < f->nvariants; i++) {
        free(f->variants[i].name);
        json_decref(f->variants[i].value);
        free(f->variants[i].value_json);
        free(f->variants[i].name_json);
        free(f->variants[i].tail);
    }
    free(f->variants);
    for (int i = 0; i < f->nrules; i++) {
        conds_free(f->rules[i].conds, f->rules[i].nconds);
        free(f->rules[i].split);
    }
    free(f->rules);
    for (int i = 0; i < f->nprereqs; i++) {
        free(f->prereqs[i].flag);
        free(f->prereqs[i].variant);
    }
    free(f->prereqs);
    free(f->split);
    free(f->counts);
}

/* Compile one flag document into *f. Returns 0 or -1 (the flag is skipped). */
uint64_t flags_entry_hash(const json_t *entry)
{
    json_t *c = json_copy((json_t *)entry); /* shallow: the members are shared */
    if (!c)
        return 0;
    json_object_del(c, "flag_version");
    char *t = json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(c);
    uint64_t h = t ? flags_hash64(t, strlen(t)) : 0;
    free(t);
    return h;
}

static int flag_build(const struct flags_env *env, const json_t *doc, struct flags_flag *f)
{
    memset(f, 0, sizeof *f);
    f->entry_hash = flags_entry_hash(doc);
    const char *key = json_string_value(json_object_get(doc, "key"));
    const json_t *variants = json_object_get(doc, "variants");
    const json_t *cfg = json_object_get(doc, "config");
    const char *type = json_string_value(json_object_get(doc, "type"));
    if (!key || !json_is_object(variants) || !json_is_object(cfg) || !type)
        return -1;
    f->key = strdup(key);
    json_t *ks = json_string(key);
    f->key_json = json_text(ks);
    json_decref(ks);
    f->type = FLAGS_BOOLEAN;
    for (int i = 0; flags_type_names[i]; i++)
        if (strcmp(type, flags_type_names[i]) == 0)
            f->type = (enum flags_type)i;
    const char *salt = json_string_value(json_object_get(doc, "salt"));
    f->salt = strdup(salt ? salt : "");
    f->archived = json_is_true(json_object_get(doc, "archived"));
    f->version = json_integer_value(json_object_get(doc, "version"));
    size_t nv = json_object_size(variants);
    f->variants = calloc(nv ? nv : 1, sizeof *f->variants);
    f->counts = calloc(nv ? nv : 1, sizeof *f->counts);
    if (!f->key || !f->key_json || !f->salt || !f->variants || !f->counts)
        goto fail;
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)variants, name, v)
    {
        struct flags_variant *fv = &f->variants[f->nvariants++];
        fv->name = strdup(name);
        fv->value = json_deep_copy(v);
        fv->value_json = json_text(v);
        json_t *ns = json_string(name);
        fv->name_json = json_text(ns);
        json_decref(ns);
        if (!fv->name || !fv->value || !fv->value_json || !fv->name_json)
            goto fail;
        struct buf t;
        buf_init(&t, 0);
        if (buf_printf(&t, "\"value\":%s,\"variant\":%s,\"metadata\":{\"version\":%lld}}",
                       fv->value_json, fv->name_json, (long long)f->version) != 0)
            goto fail;
        fv->tail_len = t.len;
        fv->tail = buf_take(&t);
    }
    struct buf hb;
    buf_init(&hb, 0);
    if (buf_printf(&hb, "{\"key\":%s,\"reason\":\"", f->key_json) != 0)
        goto fail;
    f->head_len = hb.len;
    f->head = buf_take(&hb);
    f->enabled = json_is_true(json_object_get(cfg, "enabled"));
    f->default_variant =
        variant_index(f, json_string_value(json_object_get(cfg, "default_variant")));
    f->off_variant = variant_index(f, json_string_value(json_object_get(cfg, "off_variant")));
    if (f->default_variant < 0 || f->off_variant < 0)
        goto fail;
    const json_t *rules = json_object_get(cfg, "rules");
    size_t nr = json_array_size(rules);
    if (nr) {
        f->rules = calloc(nr, sizeof *f->rules);
        if (!f->rules)
            goto fail;
        for (size_t i = 0; i < nr; i++) {
            const json_t *r = json_array_get(rules, i);
            struct flags_rule *fr = &f->rules[f->nrules++];
            if (conds_build(env, json_object_get(r, "conditions"), &fr->conds, &fr->nconds) != 0)
                goto fail;
            const json_t *variant = json_object_get(r, "variant");
            fr->variant = variant ? variant_index(f, json_string_value(variant)) : -1;
            fr->split = variant ? NULL : split_build(f, json_object_get(r, "split"));
            if (fr->variant < 0 && !fr->split)
                goto fail;
        }
    }
    const json_t *pre = json_object_get(cfg, "prerequisites");
    size_t np = json_array_size(pre);
    if (np) {
        f->prereqs = calloc(np, sizeof *f->prereqs);
        if (!f->prereqs)
            goto fail;
        for (size_t i = 0; i < np; i++) {
            const json_t *p = json_array_get(pre, i);
            struct flags_prereq *fp = &f->prereqs[f->nprereqs++];
            fp->flag = strdup(json_string_value(json_object_get(p, "flag")) ?: "");
            fp->variant = strdup(json_string_value(json_object_get(p, "variant")) ?: "");
            if (!fp->flag || !fp->variant)
                goto fail;
        }
    }
    const json_t *split = json_object_get(cfg, "split");
    if (json_is_array(split) && json_array_size(split) > 0) {
        f->split = split_build(f, split);
        if (!f->split)
            goto fail;
    }
    return 0;
fail:
    flag_clear(f);
    memset(f, 0, sizeof *f);
    return -1;
}

static int flag_cmp(const void *a, const void *b)
{
    return strcmp(((const struct flags_flag *)a)->key, ((const struct flags_flag *)b)->key);
}

static void segment_clear(struct flags_segment *s)
{
    free(s->name);
    conds_free(s->conds, s->nconds);
    json_decref(s->included);
    json_decref(s->excluded);
}

void flags_env_free(struct flags_env *env)
{
    if (!env)
        return;
    for (size_t i = 0; i < env->nflags; i++)
        flag_clear(&env->flags[i]);
    free(env->flags);
    for (size_t i = 0; i < env->nsegments; i++)
        segment_clear(&env->segments[i]);
    free(env->segments);
    int n = atomic_load(&env->ncache);
    for (int i = 0; i < n; i++)
        flags_bulk_entry_free(env->cache[i]);
    pthread_mutex_destroy(&env->cache_mu);
    free(env->doc);
    free(env);
}

struct flags_env *flags_env_build(const char *name, const json_t *doc)
{
    struct flags_env *env = calloc(1, sizeof *env);
    if (!env)
        return NULL;
    snprintf(env->name, sizeof env->name, "%s", name);
    atomic_init(&env->refs, 1);
    atomic_init(&env->ncache, 0);
    pthread_mutex_init(&env->cache_mu, NULL);
    const json_t *segs = json_object_get(doc, "segments");
    size_t ns = json_array_size(segs);
    env->segments = calloc(ns ? ns : 1, sizeof *env->segments);
    if (!env->segments)
        goto fail;
    /* segments first (names only), so that conditions can point at them */
    for (size_t i = 0; i < ns; i++) {
        const json_t *s = json_array_get(segs, i);
        const char *sname = json_string_value(json_object_get(s, "name"));
        if (!sname)
            continue;
        struct flags_segment *seg = &env->segments[env->nsegments++];
        seg->name = strdup(sname);
        seg->included = json_deep_copy(json_object_get(s, "included"));
        seg->excluded = json_deep_copy(json_object_get(s, "excluded"));
        if (!seg->name)
            goto fail;
    }
    for (size_t i = 0, k = 0; i < ns; i++) {
        const json_t *s = json_array_get(segs, i);
        if (!json_string_value(json_object_get(s, "name")))
            continue;
        struct flags_segment *seg = &env->segments[k++];
        if (conds_build(NULL, json_object_get(s, "conditions"), &seg->conds, &seg->nconds) != 0)
            goto fail;
    }
    const json_t *flags = json_object_get(doc, "flags");
    size_t nf = json_array_size(flags);
    env->flags = calloc(nf ? nf : 1, sizeof *env->flags);
    if (!env->flags)
        goto fail;
    for (size_t i = 0; i < nf; i++) {
        if (flag_build(env, json_array_get(flags, i), &env->flags[env->nflags]) == 0)
            env->nflags++;
        else
            log_event(LOG_WARN, "flags: a flag could not be compiled; not served",
                      json_pack("{s:s,s:s}", "environment", name, "flag",
                                json_string_value(json_object_get(json_array_get(flags, i),
                                                                  "key")) ?: ""));
    }
    qsort(env->flags, env->nflags, sizeof *env->flags, flag_cmp);
    /* The configuration's ETag from the versions it holds (each change bumps one), not
     * from its text: hashing megabytes of JSON would slow every reload. The entries' hashes
     * are added, so that the order of the document does not matter: a per-flag reload
     * puts its entry where it can, and must name the same configuration as a full one. */
    uint64_t h = 0;
    char line[400];
    for (size_t i = 0; i < json_array_size(flags); i++) {
        const json_t *fj = json_array_get(flags, i);
        int n = snprintf(line, sizeof line, "%s:%lld:%lld;",
                         json_string_value(json_object_get(fj, "key")) ?: "",
                         (long long)json_integer_value(json_object_get(fj, "version")),
                         (long long)json_integer_value(json_object_get(fj, "flag_version")));
        h += flags_hash64(line, n > 0 && (size_t)n < sizeof line ? (size_t)n : 0);
    }
    for (size_t i = 0; i < ns; i++) {
        const json_t *sj = json_array_get(segs, i);
        int n = snprintf(line, sizeof line, "s:%s:%lld;",
                         json_string_value(json_object_get(sj, "name")) ?: "",
                         (long long)json_integer_value(json_object_get(sj, "version")));
        h += flags_hash64(line, n > 0 && (size_t)n < sizeof line ? (size_t)n : 0);
    }
    snprintf(env->config_etag, sizeof env->config_etag, "\"%016llx\"", (unsigned long long)h);
    /* kept as text: as parsed objects it held 14 MB more for 1,000 flags in five
     * environments, as text 3.5 MB */
    env->doc = json_dumps(doc, JSON_COMPACT);
    env->doc_len = env->doc ? strlen(env->doc) : 0;
    return env;
fail:
    flags_env_free(env);
    return NULL;
}

const struct flags_flag *flags_env_find(const struct flags_env *env, const char *key)
{
    size_t lo = 0, hi = env->nflags;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(key, env->flags[mid].key);
        if (c == 0)
            return &env->flags[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ---- evaluating ---- */

/* The context attribute at `path`: the member of that exact name first, else the dotted
 * path through nested objects. */
static const json_t *attribute(const json_t *ctx, const char *path)
{
    const json_t *v = json_object_get(ctx, path);
    if (v || !strchr(path, '.'))
        return v;
    const json_t *cur = ctx;
    const char *p = path;
    while (cur && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        cur = json_is_object(cur) ? json_object_getn(cur, p, n) : NULL;
        p = dot ? dot + 1 : p + n;
    }
    return cur;
}

static int scalar_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return json_number_value(a) == json_number_value(b);
    return json_equal(a, b);
}

static int segment_match(const struct flags_env *env, int idx, const json_t *ctx);

static int cond_match(const struct flags_env *env, const struct flags_cond *c, const json_t *ctx)
{
    if (c->op == FLAGS_OP_IN_SEGMENT || c->op == FLAGS_OP_NOT_IN_SEGMENT) {
        int in = c->segment >= 0 && segment_match(env, c->segment, ctx);
        return c->op == FLAGS_OP_IN_SEGMENT ? in : !in;
    }
    const json_t *a = attribute(ctx, c->attr);
    if (!a || json_is_null(a))
        return 0;
    switch (c->op) {
    case FLAGS_OP_EQUALS:
        return scalar_equal(a, c->value);
    case FLAGS_OP_NOT_EQUALS:
        return (json_is_string(a) || json_is_number(a) || json_is_boolean(a)) &&
               !scalar_equal(a, c->value);
    case FLAGS_OP_IN:
    case FLAGS_OP_NOT_IN: {
        if (!(json_is_string(a) || json_is_number(a) || json_is_boolean(a)))
            return 0;
        int found = 0;
        size_t i;
        const json_t *e;
        json_array_foreach(c->value, i, e)
        {
            if (scalar_equal(a, e)) {
                found = 1;
                break;
            }
        }
        return c->op == FLAGS_OP_IN ? found : !found;
    }
    case FLAGS_OP_STARTS_WITH:
    case FLAGS_OP_ENDS_WITH:
    case FLAGS_OP_CONTAINS: {
        if (!json_is_string(a))
            return 0;
        const char *s = json_string_value(a), *w = json_string_value(c->value);
        size_t sl = json_string_length(a), wl = json_string_length(c->value);
        if (wl > sl)
            return 0;
        if (c->op == FLAGS_OP_STARTS_WITH)
            return memcmp(s, w, wl) == 0;
        if (c->op == FLAGS_OP_ENDS_WITH)
            return memcmp(s + sl - wl, w, wl) == 0;
        return memmem(s, sl, w, wl) != NULL;
    }
    case FLAGS_OP_LT:
    case FLAGS_OP_LTE:
    case FLAGS_OP_GT:
    case FLAGS_OP_GTE: {
        if (!json_is_number(a))
            return 0;
        double x = json_number_value(a), y = json_number_value(c->value);
        return c->op == FLAGS_OP_LT ? x < y : c->op == FLAGS_OP_LTE ? x <= y
                                          : c->op == FLAGS_OP_GT    ? x > y
                                                                    : x >= y;
    }
    default: {
        if (!json_is_string(a))
            return 0;
        int r = flags_semver_cmp(json_string_value(a), json_string_value(c->value));
        if (r == -2)
            return 0;
        switch (c->op) {
        case FLAGS_OP_SEMVER_EQ:
            return r == 0;
        case FLAGS_OP_SEMVER_LT:
            return r < 0;
        case FLAGS_OP_SEMVER_LTE:
            return r <= 0;
        case FLAGS_OP_SEMVER_GT:
            return r > 0;
        default:
            return r >= 0;
        }
    }
    }
}

static int conds_match(const struct flags_env *env, const struct flags_cond *c, int n,
                       const json_t *ctx)
{
    for (int i = 0; i < n; i++)
        if (!cond_match(env, &c[i], ctx))
            return 0;
    return 1;
}

static int in_list(const json_t *list, const char *key)
{
    size_t i;
    const json_t *e;
    json_array_foreach(list, i, e)
    {
        if (json_is_string(e) && strcmp(json_string_value(e), key) == 0)
            return 1;
    }
    return 0;
}

static int segment_match(const struct flags_env *env, int idx, const json_t *ctx)
{
    const struct flags_segment *s = &env->segments[idx];
    const char *tk = json_string_value(json_object_get(ctx, "targetingKey"));
    if (tk && in_list(s->excluded, tk))
        return 0;
    if (tk && in_list(s->included, tk))
        return 1;
    return s->nconds > 0 && conds_match(env, s->conds, s->nconds, ctx);
}

static int split_pick(const struct flags_flag *f, const struct flags_split *s,
                      const json_t *ctx, struct flags_result *out)
{
    const char *tk = json_string_value(json_object_get(ctx, "targetingKey"));
    if (!tk || !*tk) {
        out->reason = FLAGS_R_ERROR;
        out->variant = -1;
        out->error = FLAGS_E_TARGETING_KEY_MISSING;
        out->detail = "this flag splits by targetingKey, which the context lacks";
        return -1;
    }
    uint32_t b = flags_bucket(f->key, f->salt, tk);
    for (int i = 0; i < s->n; i++)
        if (b < s->upto[i]) {
            out->variant = s->variant[i];
            return 0;
        }
    out->variant = s->variant[s->n - 1];
    return 0;
}

static void evaluate(const struct flags_env *env, const struct flags_flag *f, const json_t *ctx,
                     int depth, struct flags_result *out)
{
    memset(out, 0, sizeof *out);
    if (!f->enabled) {
        out->reason = FLAGS_R_DISABLED;
        out->variant = f->off_variant;
        return;
    }
    for (int i = 0; i < f->nprereqs; i++) {
        const struct flags_flag *p = flags_env_find(env, f->prereqs[i].flag);
        struct flags_result pr;
        int ok = 0;
        if (p && depth < FLAGS_MAX_DEPTH) {
            evaluate(env, p, ctx, depth + 1, &pr);
            ok = pr.variant >= 0 && strcmp(p->variants[pr.variant].name, f->prereqs[i].variant) == 0;
        }
        if (!ok) {
            out->reason = FLAGS_R_DISABLED;
            out->variant = f->off_variant;
            out->prereq_failed = f->prereqs[i].flag;
            return;
        }
    }
    for (int i = 0; i < f->nrules; i++) {
        const struct flags_rule *r = &f->rules[i];
        if (!conds_match(env, r->conds, r->nconds, ctx))
            continue;
        if (r->split) {
            out->reason = FLAGS_R_SPLIT;
            split_pick(f, r->split, ctx, out);
        } else {
            out->reason = FLAGS_R_TARGETING_MATCH;
            out->variant = r->variant;
        }
        return;
    }
    if (f->split) {
        out->reason = FLAGS_R_SPLIT;
        split_pick(f, f->split, ctx, out);
        return;
    }
    out->reason = f->nrules == 0 ? FLAGS_R_STATIC : FLAGS_R_DEFAULT;
    out->variant = f->default_variant;
}

void flags_evaluate(const struct flags_env *env, const struct flags_flag *flag,
                    const json_t *context, struct flags_result *out)
{
    evaluate(env, flag, json_is_object(context) ? context : NULL, 0, out);
    struct flags_flag *f = (struct flags_flag *)flag; /* counters only */
    if (out->variant >= 0)
        atomic_fetch_add_explicit(&f->counts[out->variant], 1, memory_order_relaxed);
    else
        atomic_fetch_add_explicit(&f->errors, 1, memory_order_relaxed);
}

int flags_render_result(struct buf *out, const struct flags_flag *f, const struct flags_result *r)
{
    if (r->variant < 0)
        return buf_printf(out, "{\"key\":%s,\"errorCode\":\"%s\",\"errorDetails\":\"%s\"}",
                          f->key_json, flags_errcode_name(r->error),
                          r->detail ? r->detail : "evaluation failed");
    const struct flags_variant *v = &f->variants[r->variant];
    if (!r->prereq_failed) { /* the common case: three copies of pre-rendered pieces */
        const char *reason = flags_reason_name(r->reason);
        if (buf_append(out, f->head, f->head_len) != 0 ||
            buf_append(out, reason, strlen(reason)) != 0 || buf_append(out, "\",", 2) != 0 ||
            buf_append(out, v->tail, v->tail_len) != 0)
            return -1;
        return 0;
    }
    int rc = buf_printf(out, "{\"key\":%s,\"value\":", f->key_json);
    rc |= buf_puts(out, v->value_json);
    rc |= buf_printf(out, ",\"reason\":\"%s\",\"variant\":%s,\"metadata\":{\"version\":%lld",
                     flags_reason_name(r->reason), v->name_json, (long long)f->version);
    if (r->prereq_failed) {
        json_t *s = json_string(r->prereq_failed);
        char *t = json_text(s);
        json_decref(s);
        rc |= buf_printf(out, ",\"prerequisiteFailed\":%s", t ? t : "\"\"");
        free(t);
    }
    rc |= buf_puts(out, "}}");
    return rc ? -1 : 0;
}

/* ---- the bulk answers cache ---- */

void flags_bulk_entry_free(struct flags_bulk_entry *e)
{
    if (!e)
        return;
    free(e->req);
    free(e->body);
    free(e->variants);
    free(e->spans);
    free(e);
}

struct flags_bulk_entry *flags_bulk_entry_new(struct flags_env *env, const json_t *ctx)
{
    struct flags_bulk_entry *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    size_t nf = env->nflags ? env->nflags : 1;
    e->variants = calloc(nf, sizeof *e->variants);
    e->spans = calloc(2 * nf, sizeof *e->spans);
    struct buf b;
    buf_init(&b, FLAGS_BULK_MAX);
    size_t hint = atomic_load_explicit(&env->bulk_size_hint, memory_order_relaxed);
    if (hint > 256 && hint < FLAGS_BULK_MAX) { /* one allocation instead of a dozen doublings */
        b.data = malloc(hint + 256);
        b.cap = b.data ? hint + 256 : 0;
    }
    int rc = e->variants && e->spans ? buf_puts(&b, "{\"flags\":[") : -1;
    const json_t *c = json_is_object(ctx) ? ctx : NULL;
    for (size_t i = 0; i < env->nflags && rc == 0; i++) {
        struct flags_result r;
        /* not counted here: whoever is served the answer counts it (hits, or the one flag) */
        evaluate(env, &env->flags[i], c, 0, &r);
        e->variants[i] = r.variant < 0 ? UINT16_MAX : (uint16_t)r.variant;
        if (i)
            rc |= buf_append(&b, ",", 1);
        size_t start = b.len;
        rc |= flags_render_result(&b, &env->flags[i], &r);
        e->spans[2 * i] = (uint32_t)start;
        e->spans[2 * i + 1] = (uint32_t)(b.len - start);
    }
    rc |= buf_puts(&b, "]}");
    if (rc != 0) {
        buf_free(&b);
        flags_bulk_entry_free(e);
        return NULL;
    }
    atomic_store_explicit(&env->bulk_size_hint, b.len, memory_order_relaxed);
    e->body_len = b.len;
    e->body = buf_take(&b);
    snprintf(e->etag, sizeof e->etag, "\"%016llx\"",
             (unsigned long long)flags_hash64(e->body, e->body_len));
    atomic_init(&e->hits, 0);
    return e;
}

const struct flags_bulk_entry *flags_bulk_cache_find(struct flags_env *env, const char *req,
                                                     size_t len)
{
    if (!req || len > FLAGS_BULK_CACHE_REQ_MAX)
        return NULL;
    uint64_t key = flags_hash64(req, len);
    int n = atomic_load_explicit(&env->ncache, memory_order_acquire);
    for (int i = 0; i < n; i++) {
        const struct flags_bulk_entry *e = env->cache[i];
        if (e->key == key && e->req_len == len && memcmp(e->req, req, len) == 0)
            return e;
    }
    return NULL;
}

struct flags_bulk_entry *flags_bulk_cache_publish(struct flags_env *env, const char *req,
                                                  size_t len, struct flags_bulk_entry **entry)
{
    struct flags_bulk_entry *e = *entry;
    if (!req || len > FLAGS_BULK_CACHE_REQ_MAX || atomic_load(&env->ncache) >= FLAGS_BULK_CACHE)
        return NULL;
    e->key = flags_hash64(req, len);
    e->req = malloc(len ? len : 1);
    if (!e->req)
        return NULL;
    memcpy(e->req, req, len);
    e->req_len = len;
    struct flags_bulk_entry *served = NULL;
    pthread_mutex_lock(&env->cache_mu);
    int n = atomic_load(&env->ncache);
    for (int i = 0; i < n && !served; i++)
        if (env->cache[i]->key == e->key && env->cache[i]->req_len == len &&
            memcmp(env->cache[i]->req, req, len) == 0)
            served = env->cache[i]; /* another request published the same answer first */
    if (!served && n < FLAGS_BULK_CACHE) {
        env->cache[n] = e;
        atomic_store_explicit(&env->ncache, n + 1, memory_order_release);
        served = e;
        *entry = NULL;
    }
    pthread_mutex_unlock(&env->cache_mu);
    return served;
}

void flags_bulk_entry_count(struct flags_env *env, const struct flags_bulk_entry *e, uint64_t n)
{
    for (size_t k = 0; k < env->nflags && n; k++) {
        struct flags_flag *f = &env->flags[k];
        if (e->variants[k] == UINT16_MAX)
            atomic_fetch_add_explicit(&f->errors, n, memory_order_relaxed);
        else
            atomic_fetch_add_explicit(&f->counts[e->variants[k]], n, memory_order_relaxed);
    }
}

void flags_bulk_cache_count(struct flags_env *env)
{
    int n = atomic_load_explicit(&env->ncache, memory_order_acquire);
    for (int i = 0; i < n; i++) {
        struct flags_bulk_entry *e = env->cache[i];
        flags_bulk_entry_count(env, e, atomic_exchange_explicit(&e->hits, 0, memory_order_relaxed));
    }
}
