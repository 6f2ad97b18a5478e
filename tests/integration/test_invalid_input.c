/* Every input validated, never a 500: every route of the route table (`qdb-control
 * routes`, so routes other rooms add are covered without touching this test) is sent, as
 * an admin, values of the right shape that break its contract in api/openapi.yaml (read
 * through invalid_input_plan.mjs): impossible dates, integers past int64, negative and
 * out-of-range numbers, 10 KB strings, NUL (\u0000 in JSON, %00 in query strings and path
 * parameters), invalid UTF-8, unknown fields and parameters, repeated parameters, wrong
 * types and malformed JSON, in bodies, query strings, path parameters and headers.
 *
 * Every answer must be below 500, every refusal RFC 9457 problem+json from the catalogue,
 * a mutating request must not succeed, and nothing
 * may change: the row count of every table of the state store, the audit trail's included,
 * is the same before and after. The server runs no workers, so that no job runs meanwhile. */
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define TEN_KB 10240
#define MAX_VALUES 64

static const char *admin_token;
static int requests_sent, mutating_sent;

/* ---- a list of owned strings ---- */

struct strlist {
    char *v[MAX_VALUES];
    int n;
};

static void sl_add(struct strlist *l, const char *s)
{
    if (l->n < MAX_VALUES)
        l->v[l->n++] = strdup(s);
}

static void sl_addf(struct strlist *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sl_addf(struct strlist *l, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    sl_add(l, tmp);
}

static void sl_free(struct strlist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    l->n = 0;
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---- HTTP ---- */

struct reply {
    long status;
    char body[512]; /* the start of it, for messages */
    size_t len;
    int stream;
    char content_type[128];
};

static size_t keep(char *p, size_t size, size_t n, void *cls)
{
    struct reply *r = cls;
    size_t len = size * n;
    if (r->len + 1 < sizeof r->body) {
        size_t take = len < sizeof r->body - 1 - r->len ? len : sizeof r->body - 1 - r->len;
        memcpy(r->body + r->len, p, take);
        r->len += take;
        r->body[r->len] = '\0';
    }
    return len;
}

/* A stream (server-sent events) answers with its status line and then stays open: stop it
 * once the status is known. */
static int progress(void *cls, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt, (void)dn, (void)ut, (void)un;
    CURL *c = cls;
    long st = 0;
    char *ct = NULL;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
    return st > 0 && ct && strstr(ct, "text/event-stream") ? 1 : 0;
}

static long send_req(const struct th_server *s, const char *method, const char *path_q,
                     const char *media, const char *body, size_t body_len, const char *header,
                     struct reply *r)
{
    memset(r, 0, sizeof *r);
    CURL *c = curl_easy_init();
    size_t ulen = strlen(s->base) + strlen(path_q) + 1;
    char *url = malloc(ulen);
    snprintf(url, ulen, "%s%s", s->base, path_q);
    char auth[8192];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", admin_token);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    char ct[128];
    if (media) {
        snprintf(ct, sizeof ct, "Content-Type: %s", media);
        h = curl_slist_append(h, ct);
    }
    if (header)
        h = curl_slist_append(h, header);
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, c);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body_len);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    char *ctype = NULL;
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ctype);
    snprintf(r->content_type, sizeof r->content_type, "%s", ctype ? ctype : "");
    r->stream = rc == CURLE_ABORTED_BY_CALLBACK;
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(url);
    requests_sent++;
    return r->status;
}

/* What a message shows of a value: at most 60 bytes, non-printables escaped. */
static const char *show(const char *s, char *out, size_t n)
{
    size_t o = 0, len = strlen(s);
    for (size_t i = 0; i < len && o + 5 < n && i < 60; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch >= 0x7f)
            o += (size_t)snprintf(out + o, n - o, "\\x%02x", ch);
        else
            out[o++] = (char)ch;
    }
    if (len > 60 && o + 12 < n)
        o += (size_t)snprintf(out + o, n - o, "...(%zu B)", len);
    out[o] = '\0';
    return out;
}

/* Send and check: an answer, below 500, and no success for a mutating method. */
static void try_req(const struct th_server *s, const char *method, const char *path_q,
                    const char *media, const char *body, size_t body_len, const char *header,
                    const char *what)
{
    struct reply r;
    send_req(s, method, path_q, media, body, body_len, header, &r);
    int mutating = strcmp(method, "GET") != 0;
    mutating_sent += mutating;
    char a[160], b[160];
    CHECK(r.status >= 100 && r.status < 500, "%s %s (%s%s%s): got %ld %s", method,
          show(path_q, a, sizeof a), what, body ? ", body " : "",
          body ? show(body, b, sizeof b) : "", r.status, r.body);
    CHECK(r.status < 400 || (strcmp(r.content_type, "application/problem+json") == 0 &&
                             strstr(r.body, "\"type\":\"urn:qdb:problem:")),
          "%s %s (%s): a %ld must be problem+json, got %s %s", method, show(path_q, a, sizeof a),
          what, r.status, r.content_type, r.body);
    CHECK(!mutating || r.status >= 400 || r.status == 0 || strcmp(method, "DELETE") == 0,
          "%s %s (%s%s%s) was accepted: %ld %s", method, show(path_q, a, sizeof a), what,
          body ? ", body " : "", body ? show(body, b, sizeof b) : "", r.status, r.body);
}

/* ---- values from schemas ---- */

static const char *schema_type(json_t *schema)
{
    json_t *t = json_object_get(schema, "type");
    if (json_is_string(t))
        return json_string_value(t);
    size_t i;
    json_t *v;
    json_array_foreach(t, i, v) if (json_is_string(v) && strcmp(json_string_value(v), "null") !=
                                                             0) return json_string_value(v);
    if (json_object_get(schema, "enum") || json_object_get(schema, "const"))
        return "string";
    return "";
}

static const char *schema_format(json_t *schema)
{
    const char *f = json_string_value(json_object_get(schema, "format"));
    return f ? f : "";
}

static int schema_num(json_t *schema, const char *key, long long *out)
{
    json_t *v = json_object_get(schema, key);
    if (!json_is_integer(v))
        return 0;
    *out = json_integer_value(v);
    return 1;
}

/* A JSON text of a value the schema accepts, for the fields a body needs besides the one
 * under test: the first example, the default, the const, the first choice, else one of the
 * type. Returns a new string. */
static char *valid_json(json_t *schema)
{
    json_t *v = json_array_get(json_object_get(schema, "examples"), 0);
    if (!v)
        v = json_object_get(schema, "example");
    if (!v)
        v = json_object_get(schema, "default");
    if (!v)
        v = json_object_get(schema, "const");
    if (!v)
        v = json_array_get(json_object_get(schema, "enum"), 0);
    if (v)
        return json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    const char *t = schema_type(schema), *f = schema_format(schema);
    long long n;
    if (strcmp(t, "integer") == 0 || strcmp(t, "number") == 0) {
        char tmp[32];
        snprintf(tmp, sizeof tmp, "%lld", schema_num(schema, "minimum", &n) ? n : 1);
        return strdup(tmp);
    }
    if (strcmp(t, "boolean") == 0)
        return strdup("true");
    if (strcmp(t, "object") == 0)
        return strdup("{}");
    if (strcmp(t, "array") == 0)
        return strdup("[]");
    if (strcmp(f, "date-time") == 0)
        return strdup("\"2026-01-31T12:00:00Z\"");
    if (strcmp(f, "uuid") == 0)
        return strdup("\"00000000-0000-4000-8000-000000000000\"");
    long long min = 1;
    schema_num(schema, "minLength", &min);
    char *x = repeat('x', (size_t)(min > 0 ? min : 1));
    size_t len = strlen(x) + 3;
    char *out = malloc(len);
    snprintf(out, len, "\"%s\"", x);
    free(x);
    return out;
}

static const char *const bad_times[] = {
    "2026-02-30T25:61:00Z",      /* no such day, hour or minute */
    "2026-02-29T12:00:00Z",      /* 2026 is no leap year */
    "2100-02-29T12:00:00Z",      /* nor is 2100 */
    "2026-01-31T24:00:00Z",      /* hour 24 */
    "2026-01-31T12:00:60Z",      /* no leap second at 12:00 */
    "2026-01-31T12:00:00",       /* no offset */
    "2026-01-31T12:00:00+24:00", /* offset out of range */
    "0000-01-01T00:00:00Z",      /* year 0 */
    NULL,
};

/* JSON texts of the schema's type that break it. */
static void invalid_json(json_t *schema, struct strlist *out)
{
    const char *t = schema_type(schema), *f = schema_format(schema);
    long long n;
    if (strcmp(t, "integer") == 0 || strcmp(t, "number") == 0) {
        sl_add(out, "9223372036854775808");
        sl_add(out, "-9223372036854775809");
        sl_add(out, "1e400");
        sl_add(out, "\"1\"");
        sl_add(out, "true");
        sl_add(out, "[1]");
        if (strcmp(t, "integer") == 0)
            sl_add(out, "1.5");
        if (schema_num(schema, "minimum", &n) && n > -1000000)
            sl_addf(out, "%lld", n - 1);
        if (schema_num(schema, "minimum", &n) && n >= 0)
            sl_add(out, "-1");
        if (schema_num(schema, "maximum", &n) && n < 1000000000)
            sl_addf(out, "%lld", n + 1);
    } else if (strcmp(t, "boolean") == 0) {
        sl_add(out, "\"true\"");
        sl_add(out, "1");
        sl_add(out, "{}");
    } else if (strcmp(t, "object") == 0) {
        sl_add(out, "\"x\"");
        sl_add(out, "[]");
        sl_add(out, "1");
    } else if (strcmp(t, "array") == 0) {
        sl_add(out, "{}");
        sl_add(out, "\"x\"");
        sl_add(out, "1");
        const char *it = schema_type(json_object_get(schema, "items"));
        if (strcmp(it, "string") == 0) {
            sl_add(out, "[1]");
            sl_add(out, "[\"a\\u0000b\"]");
        }
    } else if (strcmp(t, "string") == 0) {
        sl_add(out, "1");
        sl_add(out, "true");
        sl_add(out, "{}");
        sl_add(out, "[\"x\"]");
        sl_add(out, "\"a\\u0000b\"");
        sl_add(out, "\"\\u0000\"");
        sl_add(out, "\"\\ud800\"");   /* a lone surrogate */
        sl_add(out, "\"a\xff\xfe\""); /* invalid UTF-8 */
        sl_add(out, "\"\xc0\xaf\"");  /* overlong */
        long long max;
        if (!schema_num(schema, "maxLength", &max) || max < TEN_KB) {
            char *big = repeat('a', TEN_KB);
            size_t len = TEN_KB + 3;
            char *q = malloc(len);
            snprintf(q, len, "\"%s\"", big);
            sl_add(out, q);
            free(q);
            free(big);
        }
        if (schema_num(schema, "minLength", &n) && n > 0)
            sl_add(out, "\"\"");
        if (json_object_get(schema, "enum") || json_object_get(schema, "const"))
            sl_add(out, "\"zz-not-a-choice\"");
        if (strcmp(f, "date-time") == 0)
            for (int i = 0; bad_times[i]; i++)
                sl_addf(out, "\"%s\"", bad_times[i]);
        if (strcmp(f, "uuid") == 0)
            sl_add(out, "\"not-a-uuid\"");
    }
}

/* URL-encoded values of the schema's type that break it, for query and path. */
static void invalid_url(json_t *schema, struct strlist *out)
{
    const char *t = schema_type(schema), *f = schema_format(schema);
    long long n;
    sl_add(out, "%00");
    sl_add(out, "%FF");
    sl_add(out, "%C3%28");
    sl_add(out, "%ED%A0%80");
    if (strcmp(t, "integer") == 0 || strcmp(t, "number") == 0) {
        sl_add(out, "9223372036854775808");
        sl_add(out, "-9223372036854775809");
        sl_add(out, "99999999999999999999999999");
        sl_add(out, "-1");
        sl_add(out, "1.5");
        sl_add(out, "abc");
        sl_add(out, "1%00");
        sl_add(out, "%2B1");
        sl_add(out, "0x10");
        if (schema_num(schema, "minimum", &n) && n > -1000000)
            sl_addf(out, "%lld", n - 1);
        if (schema_num(schema, "maximum", &n) && n < 1000000000)
            sl_addf(out, "%lld", n + 1);
    } else {
        sl_add(out, "a%00b");
        sl_add(out, "2026-02-30T25:61:00Z");
        long long max;
        if (!schema_num(schema, "maxLength", &max) || max < TEN_KB) {
            char *big = repeat('a', TEN_KB);
            sl_add(out, big);
            free(big);
        }
        if (json_object_get(schema, "enum"))
            sl_add(out, "zz-not-a-choice");
        if (strcmp(f, "date-time") == 0)
            for (int i = 0; bad_times[i]; i++) {
                char enc[64];
                size_t o = 0;
                for (const char *p = bad_times[i]; *p && o + 4 < sizeof enc; p++)
                    o += (size_t)snprintf(enc + o, sizeof enc - o, *p == '+' ? "%%2B" : "%c", *p);
                sl_add(out, enc);
            }
    }
}

/* ---- the route table and the contract ---- */

static json_t *route_table(void)
{
    FILE *p = popen(QDB_BINARY " routes", "r");
    if (!p)
        return NULL;
    json_t *routes = json_loadf(p, 0, NULL);
    pclose(p);
    return routes;
}

static json_t *contract(void)
{
    FILE *p = popen("node " QDB_SOURCE_DIR
                    "/tests/integration/invalid_input_plan.mjs " QDB_SOURCE_DIR "/api/openapi.yaml",
                    "r");
    if (!p)
        return NULL;
    json_t *plan = json_loadf(p, 0, NULL);
    pclose(p);
    return plan;
}

static json_t *find_op(json_t *plan, const char *method, const char *path)
{
    size_t i;
    json_t *op;
    json_array_foreach(plan, i, op)
    {
        if (strcmp(json_string_value(json_object_get(op, "method")), method) == 0 &&
            strcmp(json_string_value(json_object_get(op, "path")), path) == 0)
            return op;
    }
    return NULL;
}

/* A value for path parameter `name` that names something that exists where possible: the
 * first item of the collection the pattern sits under (GET /api/v1/jobs for
 * /api/v1/jobs/{id}), else a valid value of its schema. Returns a new string. */
static char *plausible_param(const struct th_server *s, const char *pattern, const char *name,
                             json_t *schema)
{
    char coll[512];
    const char *brace = strchr(pattern, '{');
    size_t n = brace ? (size_t)(brace - pattern) : strlen(pattern);
    if (n > 1 && n < sizeof coll) {
        memcpy(coll, pattern, n - 1); /* without the trailing '/' */
        coll[n - 1] = '\0';
        struct th_resp r;
        if (th_get(s, coll, admin_token, &r) == 0) {
            json_t *first = json_array_get(json_object_get(r.json, "items"), 0);
            json_t *v = json_object_get(first, name);
            char tmp[128] = "";
            if (json_is_string(v))
                snprintf(tmp, sizeof tmp, "%s", json_string_value(v));
            else if (json_is_integer(v))
                snprintf(tmp, sizeof tmp, "%lld", (long long)json_integer_value(v));
            th_resp_free(&r);
            if (tmp[0])
                return strdup(tmp);
        }
    }
    char *j = valid_json(schema);
    if (j[0] == '"') {
        memmove(j, j + 1, strlen(j));
        j[strlen(j) - 1] = '\0';
    }
    return j;
}

/* The pattern with each {param} replaced: by `override` for param `which` (raw, already
 * URL-encoded), by its plausible value otherwise. Returns a new string. */
static char *fill(const char *pattern, char **names, char **values, int nparams, const char *which,
                  const char *override)
{
    size_t cap = strlen(pattern) + 64;
    for (int i = 0; i < nparams; i++)
        cap += strlen(values[i]);
    if (override)
        cap += strlen(override);
    char *out = malloc(cap);
    size_t o = 0;
    for (const char *p = pattern; *p;) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            size_t nl = (size_t)(close - p - 1);
            const char *v = "1";
            for (int i = 0; i < nparams; i++)
                if (strlen(names[i]) == nl && strncmp(names[i], p + 1, nl) == 0)
                    v = which && strcmp(which, names[i]) == 0 ? override : values[i];
            o += (size_t)snprintf(out + o, cap - o, "%s", v);
            p = close + 1;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return out;
}

/* A body the route would take: the schema's first example, else its required members at
 * valid values. Returns a new object. */
static json_t *base_body(json_t *schema)
{
    json_t *ex = json_array_get(json_object_get(schema, "examples"), 0);
    if (json_is_object(ex))
        return json_deep_copy(ex);
    json_t *props = json_object_get(schema, "properties");
    json_t *o = json_object();
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(schema, "required"), i, r)
    {
        const char *k = json_string_value(r);
        char *v = k ? valid_json(json_object_get(props, k)) : NULL;
        json_t *jv = v ? json_loads(v, JSON_DECODE_ANY, NULL) : NULL;
        if (jv)
            json_object_set_new(o, k, jv);
        free(v);
    }
    return o;
}

/* The base body with member `name` replaced by the raw JSON text `raw` (NULL: the base as
 * it is). Returns a new string. */
static char *body_with(json_t *schema, const char *name, const char *raw)
{
    json_t *o = base_body(schema);
    if (name)
        json_object_del(o, name);
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    if (!name)
        return text;
    size_t tl = strlen(text), cap = tl + strlen(name) + strlen(raw) + 8;
    char *out = malloc(cap);
    text[tl - 1] = '\0'; /* drop the closing brace */
    snprintf(out, cap, "%s%s\"%s\":%s}", text, tl > 2 ? "," : "", name, raw);
    free(text);
    return out;
}

/* ---- what changed ---- */

/* Every table's row count as "name=n,..." (malloc'd). */
static char *snapshot(const char *url)
{
    PGresult *res = th_sql(
        url,
        "SELECT string_agg(format('%s.%s=%s', n.nspname, c.relname, "
        "(xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', "
        "n.nspname, c.relname), false, true, '')))[1]::text), ',' ORDER BY n.nspname, c.relname) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%'",
        NULL);
    char *out = strdup(res && PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : "(none)");
    PQclear(res);
    return out;
}

/* The snapshot once it has held still for a second (start-up's leader lease and default
 * schedules settle first), within 20 s. */
static char *settled_snapshot(const char *url)
{
    char *prev = snapshot(url);
    double still_since = th_now_ms(), end = th_now_ms() + 20000;
    while (th_now_ms() < end && th_now_ms() - still_since < 1000) {
        th_sleep_ms(100);
        char *now = snapshot(url);
        if (strcmp(now, prev) != 0)
            still_since = th_now_ms();
        free(prev);
        prev = now;
    }
    return prev;
}

/* ---- one route ---- */

static void walk_route(const struct th_server *s, const char *method, const char *pattern,
                       json_t *op)
{
    json_t *params = json_object_get(op, "params");
    json_t *body = json_object_get(op, "body");
    const char *media = body ? json_string_value(json_object_get(body, "media")) : NULL;
    int is_json = media && strstr(media, "json");
    json_t *schema = json_object_get(body, "schema");
    char *names[8], *values[8];
    int np = 0, nquery = 0;
    size_t i;
    json_t *p;
    json_array_foreach(params, i, p)
    {
        const char *in = json_string_value(json_object_get(p, "in"));
        if (strcmp(in, "path") == 0 && np < 8) {
            names[np] = strdup(json_string_value(json_object_get(p, "name")));
            values[np] = plausible_param(s, pattern, names[np], json_object_get(p, "schema"));
            np++;
        }
        nquery += strcmp(in, "query") == 0;
    }
    /* a body the route would take but for what is under test */
    char *base = is_json ? body_with(schema, NULL, NULL) : NULL;
    char *path = fill(pattern, names, values, np, NULL, NULL);
    struct strlist vals = {0};

    /* path parameters */
    json_array_foreach(params, i, p)
    {
        const char *name = json_string_value(json_object_get(p, "name"));
        if (strcmp(json_string_value(json_object_get(p, "in")), "path") != 0)
            continue;
        invalid_url(json_object_get(p, "schema"), &vals);
        /* an existing resource's name with a NUL after it must not reach that resource */
        for (int k = 0; k < np; k++)
            if (strcmp(names[k], name) == 0) {
                sl_addf(&vals, "%.200s%%00", values[k]);
                sl_addf(&vals, "%.200s%%00x", values[k]);
            }
        th_step("%s %s: path parameter %s, %d invalid values (int64+1, -1, NUL, an existing "
                "one followed by NUL, bad UTF-8, 10 KB, ...)",
                method, pattern, name, vals.n);
        for (int k = 0; k < vals.n; k++) {
            char *pq = fill(pattern, names, values, np, name, vals.v[k]);
            try_req(s, method, pq, media, media ? "{}" : NULL, media ? 2 : 0, NULL,
                    "invalid path parameter");
            free(pq);
        }
        sl_free(&vals);
    }

    /* query parameters: only routes that take some read the query string */
    if (nquery) {
        json_array_foreach(params, i, p)
        {
            const char *name = json_string_value(json_object_get(p, "name"));
            if (strcmp(json_string_value(json_object_get(p, "in")), "query") != 0)
                continue;
            invalid_url(json_object_get(p, "schema"), &vals);
            char *ok = valid_json(json_object_get(p, "schema"));
            if (ok[0] == '"') {
                memmove(ok, ok + 1, strlen(ok));
                ok[strlen(ok) - 1] = '\0';
            }
            size_t cap = strlen(path) + strlen(name) * 2 + strlen(ok) * 2 + 16;
            char *twice = malloc(cap);
            snprintf(twice, cap, "%s?%s=%s&%s=%s", path, name, ok, name, ok);
            sl_add(&vals, ""); /* an empty value */
            th_step("%s %s: query parameter %s, %d invalid values (impossible dates, past "
                    "int64, negative, NUL, bad UTF-8, 10 KB, ...) and given twice",
                    method, pattern, name, vals.n);
            for (int k = 0; k < vals.n; k++) {
                size_t qcap = strlen(path) + strlen(name) + strlen(vals.v[k]) + 4;
                char *pq = malloc(qcap);
                snprintf(pq, qcap, "%s?%s=%s", path, name, vals.v[k]);
                try_req(s, method, pq, media, base, base ? strlen(base) : 0, NULL,
                        "invalid query value");
                free(pq);
            }
            try_req(s, method, twice, media, base, base ? strlen(base) : 0, NULL,
                    "parameter given twice");
            free(twice);
            free(ok);
            sl_free(&vals);
        }
        th_step("%s %s: unknown query parameters", method, pattern);
        static const char *const unknown[] = {"?zz_unknown=1", "?%FF=1", "?%00=1", "?a%00b=1",
                                              NULL};
        for (int k = 0; unknown[k]; k++) {
            size_t qcap = strlen(path) + strlen(unknown[k]) + 1;
            char *pq = malloc(qcap);
            snprintf(pq, qcap, "%s%s", path, unknown[k]);
            try_req(s, method, pq, media, base, base ? strlen(base) : 0, NULL,
                    "unknown query parameter");
            free(pq);
        }
    }

    /* a route that takes no query parameters does not read the query string */
    if (!nquery && strcmp(method, "GET") == 0) {
        th_step("%s %s: takes no query parameters; a stray one with NUL is ignored", method,
                pattern);
        size_t qcap = strlen(path) + 64;
        char *pq = malloc(qcap);
        snprintf(pq, qcap, "%s?zz_unknown=%%00&limit=-1&%%FF", path);
        try_req(s, method, pq, media, NULL, 0, NULL, "stray query parameters");
        free(pq);
    }

    /* headers the contract names (Idempotency-Key) */
    json_array_foreach(params, i, p)
    {
        const char *name = json_string_value(json_object_get(p, "name"));
        if (strcmp(json_string_value(json_object_get(p, "in")), "header") != 0)
            continue;
        long long max;
        th_step("%s %s: header %s too long and empty", method, pattern, name);
        if (schema_num(json_object_get(p, "schema"), "maxLength", &max) && max < TEN_KB) {
            char *v = repeat('k', (size_t)max + 1);
            size_t hcap = strlen(name) + strlen(v) + 4;
            char *h = malloc(hcap);
            snprintf(h, hcap, "%s: %s", name, v);
            try_req(s, method, path, media, base, base ? strlen(base) : 0, h, "header too long");
            free(h);
            free(v);
        }
        long long min;
        if (schema_num(json_object_get(p, "schema"), "minLength", &min) && min > 0) {
            char h[128];
            snprintf(h, sizeof h, "%s;", name); /* curl sends "Name:" with no value */
            try_req(s, method, path, media, base, base ? strlen(base) : 0, h, "empty header");
        }
    }

    /* JSON bodies: the whole body, then each member */
    if (is_json) {
        static const struct {
            const char *text;
            size_t len;
        } whole[] = {
            {"[]", 2},
            {"\"x\"", 3},
            {"1", 1},
            {"null", 4},
            {"true", 4},
            {"{", 1},
            {"{\"a\":1,}", 8},
            {"", 0},
            {"{\"zz_unknown\":1}", 16},
            {"{\"\\u0000\":1}", 12},
            {"{\"a\xff\":1}", 8},
            {"{\"x\":\"\xff\xfe\"}", 11},
            {"{\"x\":\"a\0b\"}", 11}, /* a raw NUL byte inside the text */
        };
        th_step("%s %s: %zu malformed bodies (wrong JSON types, broken JSON, NUL, invalid "
                "UTF-8, unknown members)",
                method, pattern, sizeof whole / sizeof whole[0] + 2);
        for (size_t k = 0; k < sizeof whole / sizeof whole[0]; k++)
            try_req(s, method, path, media, whole[k].text, whole[k].len, NULL, "malformed body");
        /* an unknown member beside valid ones, and a duplicated member */
        char *unk = body_with(schema, "zz_unknown", "1");
        try_req(s, method, path, media, unk, strlen(unk), NULL, "unknown member");
        free(unk);
        char *big_key = repeat('k', TEN_KB);
        char *bk = body_with(schema, big_key, "1");
        try_req(s, method, path, media, bk, strlen(bk), NULL, "10 KB unknown member name");
        free(bk);
        free(big_key);

        json_t *props = json_object_get(schema, "properties");
        const char *key;
        json_t *ps;
        json_object_foreach(props, key, ps)
        {
            invalid_json(ps, &vals);
            th_step("%s %s: member %s (%s%s%s), %d invalid values", method, pattern, key,
                    schema_type(ps), schema_format(ps)[0] ? " " : "", schema_format(ps), vals.n);
            for (int k = 0; k < vals.n; k++) {
                char *b = body_with(schema, key, vals.v[k]);
                try_req(s, method, path, media, b, strlen(b), NULL, "invalid member");
                free(b);
            }
            sl_free(&vals);
        }
    } else if (media) {
        /* forms (the dev issuer's token endpoint) */
        char *big = repeat('a', TEN_KB);
        size_t cap = TEN_KB + 64;
        char *bigform = malloc(cap);
        snprintf(bigform, cap, "grant_type=authorization_code&code=%s", big);
        const char *forms[] = {"",
                               "grant_type=%00",
                               "grant_type=authorization_code&code=%FF&code_verifier=%00",
                               "%FF=%FF",
                               "grant_type=a&grant_type=b",
                               "zz_unknown=1",
                               bigform,
                               NULL};
        th_step("%s %s: form bodies with NUL, invalid UTF-8, 10 KB values, repeats", method,
                pattern);
        for (int k = 0; forms[k]; k++)
            try_req(s, method, path, media, forms[k], strlen(forms[k]), NULL, "invalid form");
        free(bigform);
        free(big);
    }
    free(base);
    free(path);
    for (int k = 0; k < np; k++) {
        free(names[k]);
        free(values[k]);
    }
}

/* ---- one timestamp format ---- */

static int is_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* Whether s is "YYYY-MM-DDTHH:MM:SS.<digits>Z" with exactly `digits` fraction digits. */
static int time_format(const char *s, size_t digits)
{
    return strlen(s) == 20 + digits + (digits ? 1 : 0) && is_digits(s, 4) && s[4] == '-' &&
           is_digits(s + 5, 2) && s[7] == '-' && is_digits(s + 8, 2) && s[10] == 'T' &&
           is_digits(s + 11, 2) && s[13] == ':' && is_digits(s + 14, 2) && s[16] == ':' &&
           is_digits(s + 17, 2) && s[19] == '.' && is_digits(s + 20, digits) &&
           s[20 + digits] == 'Z';
}

/* Every string that looks like a timestamp, anywhere in v, has milliseconds. Returns how
 * many were seen. */
static int check_times(json_t *v, const char *where, const char *key)
{
    int seen = 0;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strlen(s) >= 19 && is_digits(s, 4) && s[4] == '-' && (s[10] == 'T' || s[10] == ' ')) {
            CHECK(time_format(s, 3), "%s: %s is \"%s\", not RFC 3339 UTC with milliseconds", where,
                  key, s);
            seen++;
        }
    } else if (json_is_object(v)) {
        const char *k;
        json_t *m;
        json_object_foreach(v, k, m) seen += check_times(m, where, k);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m) seen += check_times(m, where, key);
    }
    return seen;
}

/* GET every listing and resource the route table has (path parameters at their plausible
 * values): each timestamp in the reply has the one format; an audit event's own time keeps
 * its microseconds. */
static void walk_times(const struct th_server *s, json_t *routes, json_t *plan)
{
    size_t i;
    json_t *rt;
    int seen = 0;
    json_array_foreach(routes, i, rt)
    {
        const char *method = json_string_value(json_object_get(rt, "method"));
        const char *pattern = json_string_value(json_object_get(rt, "path"));
        json_t *op = find_op(plan, method, pattern);
        if (strcmp(method, "GET") != 0 || !op || strstr(pattern, "/events"))
            continue;
        char *names[8], *values[8];
        int np = 0;
        size_t k;
        json_t *p;
        json_array_foreach(json_object_get(op, "params"), k, p)
        {
            if (strcmp(json_string_value(json_object_get(p, "in")), "path") != 0 || np >= 8)
                continue;
            names[np] = strdup(json_string_value(json_object_get(p, "name")));
            values[np] = plausible_param(s, pattern, names[np], json_object_get(p, "schema"));
            np++;
        }
        char *path = fill(pattern, names, values, np, NULL, NULL);
        struct th_resp r;
        if (th_get(s, path, admin_token, &r) == 0 && r.status == 200 && r.json) {
            if (strcmp(pattern, "/api/v1/audit") == 0) {
                json_t *item;
                json_array_foreach(json_object_get(r.json, "items"), k, item)
                {
                    const char *t = json_string_value(json_object_get(item, "time"));
                    CHECK(t && time_format(t, 6), "audit event time \"%s\" keeps microseconds",
                          t ? t : "(none)");
                    json_object_del(item, "time");
                }
            }
            seen += check_times(r.json, path, "(value)");
        }
        if (r.status)
            th_resp_free(&r);
        free(path);
        for (int j = 0; j < np; j++) {
            free(names[j]);
            free(values[j]);
        }
    }
    CHECK(seen >= 10, "timestamps seen in replies: %d", seen);
}

int main(void)
{
    char *url = th_db_create("invalid_input");
    struct th_server srv;
    json_t *routes = NULL, *plan = NULL;
    char *token = NULL, *before = NULL, *after = NULL;
    const char *env[] = {"QDB_WORKERS=0", NULL};
    curl_global_init(CURL_GLOBAL_ALL);

    th_step("start a dev-mode server without workers; read the route table and the contract");
    CHECK(th_server_start(&srv, url, env, 1) == 0, "server starts");
    if (!srv.pid)
        goto out;
    token = th_dev_token(&srv, "admin");
    CHECK(token != NULL, "admin token");
    if (!token)
        goto out;
    admin_token = token;
    routes = route_table();
    plan = contract();
    CHECK(json_is_array(routes) && json_array_size(routes) > 5, "qdb-control routes");
    CHECK(json_is_array(plan) && json_array_size(plan) > 5, "invalid_input_plan.mjs");
    if (!json_is_array(routes) || !json_is_array(plan))
        goto out;

    th_step("seed a job, a schedule and a token, so that path parameters can name them");
    struct th_resp r;
    const char *auth_h[3] = {NULL, "Content-Type: application/json", NULL};
    char auth[8192];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    auth_h[0] = auth;
    static const char *const seeds[][2] = {
        {"/api/v1/jobs", "{\"kind\":\"noop\"}"},
        {"/api/v1/schedules", "{\"name\":\"seed\",\"cron\":\"0 0 1 1 *\",\"kind\":\"noop\"}"},
        {"/api/v1/tokens", "{\"name\":\"seed\",\"role\":\"viewer\"}"},
    };
    for (size_t k = 0; k < sizeof seeds / sizeof seeds[0]; k++) {
        th_http(&srv, "POST", seeds[k][0], auth_h, seeds[k][1], strlen(seeds[k][1]), &r);
        CHECK(r.status >= 200 && r.status < 300, "seed %s: %ld %s", seeds[k][0], r.status,
              r.body ? r.body : "");
        th_resp_free(&r);
    }
    before = settled_snapshot(url);
    long audit_before = th_sql_long(url, "SELECT count(*) FROM audit_event", NULL);
    CHECK(audit_before >= 3, "the seeds are audited (%ld)", audit_before);

    size_t i;
    json_t *rt;
    int walked = 0;
    json_array_foreach(routes, i, rt)
    {
        const char *method = json_string_value(json_object_get(rt, "method"));
        const char *pattern = json_string_value(json_object_get(rt, "path"));
        if (!method || !pattern)
            continue;
        json_t *op = find_op(plan, method, pattern);
        CHECK(op != NULL, "%s %s is in api/openapi.yaml", method, pattern);
        if (!op)
            continue;
        walk_route(&srv, method, pattern, op);
        walked++;
    }
    CHECK(walked == (int)json_array_size(routes), "every route walked (%d)", walked);
    fprintf(stderr, "-- %d requests, %d with a mutating method\n", requests_sent, mutating_sent);

    th_step("nothing changed: every table's row count and the audit trail");
    after = snapshot(url);
    CHECK(strcmp(before, after) == 0, "row counts\n  before %s\n  after  %s", before, after);
    long audit_after = th_sql_long(url, "SELECT count(*) FROM audit_event", NULL);
    CHECK(audit_after == audit_before, "audit events %ld -> %ld", audit_before, audit_after);

    th_step("one timestamp format in every reply: RFC 3339 UTC with milliseconds");
    walk_times(&srv, routes, plan);

    th_step("the server is still healthy, and stops cleanly without a sanitizer report");
    th_get(&srv, "/readyz", NULL, &r);
    CHECK(r.status == 200, "readyz %ld", r.status);
    th_resp_free(&r);
    CHECK(th_server_stop(&srv) == 0, "server stops cleanly");
out:
    th_server_kill(&srv);
    json_decref(routes);
    json_decref(plan);
    free(before);
    free(after);
    free(token);
    th_db_drop(url);
    free(url);
    curl_global_cleanup();
    return th_done();
}
