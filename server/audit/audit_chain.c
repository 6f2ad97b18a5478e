/* The audit trail's hash chain: the canonical JSON of an event, the scrubbing of secrets,
 * HMAC-SHA256 with the process key, queueing an event in the writer's transaction and
 * chaining the queued ones under the chain head's lock right after (sequencing), and
 * recomputing the chain.
 *
 * hash(n) = HMAC-SHA256(key, hash(n-1) as 64 lowercase hex digits || canonical JSON(n)),
 * hash(0) = 64 '0' digits. The canonical JSON (audit_canon_event) is built from the row as
 * stored, so anyone holding the key can recompute it from a dump of audit_event:
 * before/after are stored as their canonical text and read back through jsonb, which keeps
 * every value the canonical form can produce (audit_scrub_new makes sure of that). */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "audit/audit_internal.h"
#include "audit/audit_outbox_internal.h"
#include "platform/config.h"
#include "platform/log.h"

#define TWO_POW_53 9007199254740992.0
#define CANON_MAX (16u * 1024u * 1024u) /* before + after can each be a 1 MiB body, re-rendered */

static const char genesis_hash[AUDIT_HASH_HEX + 1] =
    "0000000000000000000000000000000000000000000000000000000000000000";

/* ---- canonical JSON ---- */

static int canon_string(struct buf *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (buf_append(out, "\"", 1) != 0)
        return -1;
    size_t run = 0; /* bytes copied as they are, flushed in one append */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        size_t elen = 0;
        if (c == 0)
            return -1; /* jsonb cannot store U+0000 */
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c, elen = 2;
        } else if (c < 0x20) {
            esc[0] = '\\';
            switch (c) {
            case '\b':
                esc[1] = 'b', elen = 2;
                break;
            case '\f':
                esc[1] = 'f', elen = 2;
                break;
            case '\n':
                esc[1] = 'n', elen = 2;
                break;
            case '\r':
                esc[1] = 'r', elen = 2;
                break;
            case '\t':
                esc[1] = 't', elen = 2;
                break;
            default:
                memcpy(esc + 1, "u00", 3);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                elen = 6;
            }
        }
        if (!elen) {
            run++;
            continue;
        }
        if (buf_append(out, s + i - run, run) != 0 || buf_append(out, esc, elen) != 0)
            return -1;
        run = 0;
    }
    if (buf_append(out, s + len - run, run) != 0)
        return -1;
    return buf_append(out, "\"", 1);
}

static int canon_real(struct buf *out, double d)
{
    if (!isfinite(d))
        return -1;
    if (fabs(d) < TWO_POW_53 && d == trunc(d))
        return buf_printf(out, "%lld", (long long)d);
    char tmp[40];
    snprintf(tmp, sizeof tmp, "%.17g", d);
    if (!strpbrk(tmp, ".eE")) {
        size_t n = strlen(tmp);
        if (n + 3 > sizeof tmp)
            return -1;
        memcpy(tmp + n, ".0", 3);
    }
    return buf_puts(out, tmp);
}

static int key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int audit_canon_append(struct buf *out, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        return buf_puts(out, "null");
    case JSON_TRUE:
        return buf_puts(out, "true");
    case JSON_FALSE:
        return buf_puts(out, "false");
    case JSON_INTEGER:
        return buf_printf(out, "%" PRId64, (int64_t)json_integer_value(v));
    case JSON_REAL:
        return canon_real(out, json_real_value(v));
    case JSON_STRING:
        return canon_string(out, json_string_value(v), json_string_length(v));
    case JSON_ARRAY: {
        if (buf_append(out, "[", 1) != 0)
            return -1;
        for (size_t i = 0; i < json_array_size(v); i++)
            if ((i && buf_append(out, ",", 1) != 0) ||
                audit_canon_append(out, json_array_get(v, i)) != 0)
                return -1;
        return buf_append(out, "]", 1);
    }
    case JSON_OBJECT: {
        int rc = -1;
        size_t n = json_object_size(v), i = 0;
        const char **keys = calloc(n ? n : 1, sizeof *keys);
        if (!keys)
            return -1;
        const char *k;
        json_t *m;
        json_object_foreach((json_t *)v, k, m) keys[i++] = k;
        qsort(keys, n, sizeof *keys, key_cmp);
        if (buf_append(out, "{", 1) != 0)
            goto out;
        for (i = 0; i < n; i++) {
            if ((i && buf_append(out, ",", 1) != 0) ||
                canon_string(out, keys[i], strlen(keys[i])) != 0 || buf_append(out, ":", 1) != 0 ||
                audit_canon_append(out, json_object_get(v, keys[i])) != 0)
                goto out;
        }
        rc = buf_append(out, "}", 1);
    out:
        free(keys);
        return rc;
    }
    }
    return -1;
}

static json_t *str_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

int audit_canon_event(struct buf *out, const struct audit_row *r)
{
    json_t *o = json_object();
    if (!o)
        return -1;
    /* Unknown UTF-8 in a string field fails json_string: then the member is missing and
     * the check below refuses the event rather than hashing something else. */
    int set = 0;
    set += !json_object_set_new(o, "action", str_or_null(r->action));
    set += !json_object_set_new(o, "actor_name", str_or_null(r->actor_name));
    set += !json_object_set_new(o, "actor_subject", str_or_null(r->actor_subject));
    set += !json_object_set_new(o, "after", r->after ? json_deep_copy(r->after) : json_null());
    set += !json_object_set_new(o, "auth_method", str_or_null(r->auth_method));
    set += !json_object_set_new(o, "before", r->before ? json_deep_copy(r->before) : json_null());
    set += !json_object_set_new(o, "client_addr", str_or_null(r->client_addr));
    set += !json_object_set_new(o, "environment", str_or_null(r->environment));
    set += !json_object_set_new(o, "job_id", r->job_id ? json_integer(r->job_id) : json_null());
    set += !json_object_set_new(o, "request_id", str_or_null(r->request_id));
    set += !json_object_set_new(o, "resource_id", str_or_null(r->resource_id));
    set += !json_object_set_new(o, "resource_type", str_or_null(r->resource_type));
    set += !json_object_set_new(o, "seq", json_integer(r->seq));
    set += !json_object_set_new(o, "time", str_or_null(r->time));
    set += !json_object_set_new(o, "token_id", str_or_null(r->token_id));
    int rc = set == 15 ? audit_canon_append(out, o) : -1;
    json_decref(o);
    return rc;
}

/* ---- secrets ---- */

int audit_key_is_secret(const char *key)
{
    static const char *const needles[] = {"secret",     "token",         "password",  "passwd",
                                          "passphrase", "key",           "hash",      "credential",
                                          "private",    "salt",          "signature", "cookie",
                                          "bearer",     "authorization", NULL};
    char low[128];
    size_t n = 0;
    for (; n < sizeof low - 1 && key[n]; n++)
        low[n] = (char)tolower((unsigned char)key[n]);
    low[n] = '\0';
    if (key[n])
        return 1; /* a key longer than any sensible name: keep nothing we cannot judge */
    for (int i = 0; needles[i]; i++)
        if (strstr(low, needles[i]))
            return 1;
    return 0;
}

static int is_b64url(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '=';
}

int audit_value_is_secret(const char *s)
{
    size_t n = strlen(s);
    if (n >= 20 && strncmp(s, "qdb_", 4) == 0) {
        size_t i = 4;
        while (i < n && is_b64url(s[i]))
            i++;
        if (i == n)
            return 1;
    }
    if (n >= 20 && strncmp(s, "eyJ", 3) == 0) {
        int dots = 0;
        size_t i = 0;
        for (; i < n && (is_b64url(s[i]) || s[i] == '.'); i++)
            dots += s[i] == '.';
        if (i == n && dots == 2)
            return 1;
    }
    if (strstr(s, "-----BEGIN"))
        return 1;
    if (n > 7 && strncasecmp(s, "bearer ", 7) == 0)
        return 1;
    return 0;
}

static int value_is_secret(const json_t *v)
{
    return json_is_string(v) && audit_value_is_secret(json_string_value(v));
}

json_t *audit_scrub_new(const json_t *v)
{
    if (!v)
        return NULL;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        json_t *o = json_object();
        const char *k;
        json_t *m;
        json_object_foreach((json_t *)v, k, m)
        {
            if (!o || audit_key_is_secret(k) || value_is_secret(m))
                continue;
            json_t *c = audit_scrub_new(m);
            if (!c || json_object_set_new(o, k, c) != 0) {
                json_decref(o);
                o = NULL;
            }
        }
        return o;
    }
    case JSON_ARRAY: {
        json_t *a = json_array();
        for (size_t i = 0; a && i < json_array_size(v); i++) {
            json_t *m = json_array_get(v, i);
            if (value_is_secret(m))
                continue;
            json_t *c = audit_scrub_new(m);
            if (!c || json_array_append_new(a, c) != 0) {
                json_decref(a);
                a = NULL;
            }
        }
        return a;
    }
    case JSON_REAL: {
        double d = json_real_value(v);
        if (fabs(d) < TWO_POW_53)
            return json_real(d);
        char tmp[40];
        snprintf(tmp, sizeof tmp, "%.17g", d);
        return json_string(tmp);
    }
    default:
        return json_deep_copy(v);
    }
}

/* ---- the key and the MAC ---- */

static unsigned char chain_key[AUDIT_KEY_MAX];
static size_t chain_key_len;
static EVP_MAC *hmac_alg;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_fetch(void)
{
    hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

void audit_key_set(const unsigned char *key, size_t len)
{
    if (len > sizeof chain_key)
        len = sizeof chain_key;
    memcpy(chain_key, key, len);
    chain_key_len = len;
}

int audit_key_loaded(void)
{
    return chain_key_len >= AUDIT_KEY_MIN;
}

int audit_key_load(const char *path)
{
    static const char var[] = "QDB_AUDIT_HMAC_KEY_FILE";
    unsigned char tmp[AUDIT_KEY_MAX + 1];
    FILE *f = fopen(path, "rb");
    if (!f)
        return config_error(var, "cannot read %s: %s", path, strerror(errno));
    size_t n = fread(tmp, 1, sizeof tmp, f);
    int err = ferror(f);
    fclose(f);
    int rc = -1;
    if (err) {
        config_error(var, "cannot read %s", path);
        goto out;
    }
    if (n > AUDIT_KEY_MAX) {
        config_error(var, "%s is larger than %d bytes; it should hold only the key", path,
                     AUDIT_KEY_MAX);
        goto out;
    }
    while (n && isspace(tmp[n - 1]))
        n--;
    if (n < AUDIT_KEY_MIN) {
        config_error(var,
                     "%s holds %zu bytes of key; at least %d are required (e.g. "
                     "`openssl rand -hex 32`)",
                     path, n, AUDIT_KEY_MIN);
        goto out;
    }
    audit_key_set(tmp, n);
    rc = 0;
out:
    OPENSSL_cleanse(tmp, sizeof tmp);
    return rc;
}

int audit_chain_hmac(const unsigned char *key, size_t keylen, const char *prev_hash_hex,
                     const char *data, size_t len, char hex[AUDIT_HASH_HEX + 1])
{
    static const char digits[] = "0123456789abcdef";
    pthread_once(&hmac_once, hmac_fetch);
    if (!hmac_alg || strlen(prev_hash_hex) != AUDIT_HASH_HEX)
        return -1;
    int rc = -1;
    unsigned char md[EVP_MAX_MD_SIZE];
    size_t mdlen = 0;
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0),
                           OSSL_PARAM_construct_end()};
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(hmac_alg);
    if (!ctx || !EVP_MAC_init(ctx, key, keylen, params) ||
        !EVP_MAC_update(ctx, (const unsigned char *)prev_hash_hex, AUDIT_HASH_HEX) ||
        !EVP_MAC_update(ctx, (const unsigned char *)data, len) ||
        !EVP_MAC_final(ctx, md, &mdlen, sizeof md) || mdlen != 32)
        goto out;
    for (size_t i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[AUDIT_HASH_HEX] = '\0';
    rc = 0;
out:
    EVP_MAC_CTX_free(ctx);
    return rc;
}

int audit_chain_hash_row(const struct audit_row *r, char hex[AUDIT_HASH_HEX + 1])
{
    if (!audit_key_loaded())
        return -1;
    struct buf canon;
    buf_init(&canon, CANON_MAX);
    int rc = audit_canon_event(&canon, r);
    if (rc == 0)
        rc = audit_chain_hmac(chain_key, chain_key_len, r->prev_hash, canon.data, canon.len, hex);
    buf_free(&canon);
    return rc;
}

/* ---- recording ---- */

/* The canonical text of a scrubbed value, or NULL for none; *fail set when it cannot be
 * represented. Caller frees. */
static char *canon_text(const json_t *v, int *fail)
{
    if (!v)
        return NULL;
    struct buf b;
    buf_init(&b, CANON_MAX);
    if (audit_canon_append(&b, v) != 0) {
        buf_free(&b);
        *fail = 1;
        return NULL;
    }
    return buf_take(&b);
}

/* ---- sequencing ---- */

#define SEQUENCE_BATCH 1000

/* One chained row as audit_chain_append takes it (new reference, NULL when memory ran out
 * or a text is not UTF-8, which hashing refused already): before/after as their texts. */
static json_t *append_row_new(const struct audit_row *r, const char *before, const char *after)
{
    json_t *o = json_pack(
        "{s:I,s:s,s:s,s:s?,s:s,s:s?,s:s,s:s,s:s?,s:s?,s:s?,s:s?,s:s?,s:s?,s:s,"
        "s:s}",
        "seq", (json_int_t)r->seq, "time", r->time, "actor_subject", r->actor_subject, "actor_name",
        r->actor_name, "auth_method", r->auth_method, "token_id", r->token_id, "action", r->action,
        "resource_type", r->resource_type, "resource_id", r->resource_id, "environment",
        r->environment, "before", before, "after", after, "request_id", r->request_id,
        "client_addr", r->client_addr, "prev_hash", r->prev_hash, "hash", r->hash);
    if (o && json_object_set_new(
                 o, "job_id", r->job_id ? json_integer((json_int_t)r->job_id) : json_null()) != 0) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

/* One sequencing transaction: lock the head, take up to SEQUENCE_BATCH committed pending
 * rows, chain each exactly as record() did before the queue (time = clock_timestamp()
 * after the lock, so time grows with seq), insert them and advance the head once per event
 * (the guard trigger's rule) in one statement, and commit. Returns the number chained or a DB_ code
 * (rolled back). */
static int sequence_batch(struct db_conn *conn)
{
    int64_t last_seq = 0;
    char prev[AUDIT_HASH_HEX + 1], time[40], hash[AUDIT_HASH_HEX + 1];
    PGresult *pr = NULL;
    json_t *batch = json_array();
    if (!batch)
        return DB_HARD;
    int rc = db_begin(conn);
    if (rc < 0) {
        json_decref(batch);
        return rc;
    }
    rc = audit_store_lock_head(conn, &last_seq, prev, time);
    if (rc < 0)
        goto fail;
    if (rc == 0) {
        log_error("audit: the chain head row is missing");
        rc = DB_HARD;
        goto fail;
    }
    int n = audit_store_pending_take(conn, SEQUENCE_BATCH, &pr);
    if (n < 0) {
        rc = n;
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        const char *bt = db_get_str(pr, i, 9), *at = db_get_str(pr, i, 10);
        json_t *before = bt ? json_loads(bt, JSON_DECODE_ANY, NULL) : NULL;
        json_t *after = at ? json_loads(at, JSON_DECODE_ANY, NULL) : NULL;
        struct audit_row row = {
            .seq = last_seq + 1,
            .time = time,
            .actor_subject = db_get_str(pr, i, 1),
            .actor_name = db_get_str(pr, i, 2),
            .auth_method = db_get_str(pr, i, 3),
            .token_id = db_get_str(pr, i, 4),
            .action = db_get_str(pr, i, 5),
            .resource_type = db_get_str(pr, i, 6),
            .resource_id = db_get_str(pr, i, 7),
            .environment = db_get_str(pr, i, 8),
            .before = before,
            .after = after,
            .request_id = db_get_str(pr, i, 11),
            .job_id = db_get_int64(pr, i, 12),
            .client_addr = db_get_str(pr, i, 13),
            .prev_hash = prev,
        };
        /* Hashed from the row as read back through jsonb, as audit_verify will read it. */
        int bad = (bt && !before) || (at && !after) || audit_chain_hash_row(&row, hash) != 0;
        json_decref(before);
        json_decref(after);
        if (bad) {
            log_error("audit: pending event %lld (%s) cannot be hashed; the chain waits",
                      (long long)db_get_int64(pr, i, 0), row.action ? row.action : "?");
            rc = DB_HARD;
            goto fail;
        }
        row.hash = hash;
        if (json_array_append_new(batch, append_row_new(&row, bt, at)) != 0) {
            rc = DB_HARD;
            goto fail;
        }
        last_seq = row.seq;
        memcpy(prev, hash, sizeof prev);
    }
    PQclear(pr);
    pr = NULL;
    if (n > 0) {
        /* the round's rows in one statement, not one round trip each (migration 0017) */
        char *text = json_dumps(batch, JSON_COMPACT);
        int64_t appended = 0;
        rc = text ? audit_store_append(conn, text, &appended) : DB_HARD;
        free(text);
        if (rc < 0)
            goto fail;
        if (appended != n) {
            log_error("audit: the chain head did not advance");
            rc = DB_HARD;
            goto fail;
        }
    }
    json_decref(batch);
    batch = NULL;
    rc = db_commit(conn);
    if (rc < 0)
        return rc;
    audit_metrics_sequenced(n);
    return n;
fail:
    PQclear(pr);
    json_decref(batch);
    db_rollback(conn);
    return rc;
}

int audit_sequence(struct db_conn *conn)
{
    if (!audit_key_loaded())
        return DB_HARD;
    if (PQtransactionStatus(db_pgconn(conn)) != PQTRANS_IDLE) {
        log_error("audit: sequencing inside a transaction refused");
        return DB_HARD;
    }
    int total = 0;
    for (;;) {
        int n = sequence_batch(conn);
        if (n < 0)
            return n;
        total += n;
        if (n < SEQUENCE_BATCH)
            return total;
    }
}

/* How long a reader waits for the sequencer's round. Past it (a round that takes that long
 * is a state store in trouble) the reader reads the chain as it stands. */
#define CATCH_UP_WAIT_MS 5000

/* The hook record() registers: it wakes the replica's sequencer, which chains the event
 * with every other one committed meanwhile in one short transaction; the writer's request
 * replies without waiting for that (its event is durable in audit_pending: a crash before
 * the round leaves it to the next round of any replica). Readers wait instead
 * (audit_catch_up). In a process without a sequencer (a command) the event is chained on
 * the writer's connection right away, as before the sequencer. A failure there cannot undo
 * the writer's commit; the next sequencing of any replica chains it. */
static void sequence_after_commit(struct db_conn *conn, void *cls)
{
    (void)cls;
    if (!audit_sequencer_kick())
        (void)audit_sequence(conn);
    else if (audit_sequencer_behind())
        (void)audit_sequencer_sync(CATCH_UP_WAIT_MS); /* back-pressure: see audit.c */
}

void audit_catch_up(struct db_conn *conn)
{
    if (audit_sequencer_sync(CATCH_UP_WAIT_MS) == 0 && conn &&
        PQtransactionStatus(db_pgconn(conn)) == PQTRANS_IDLE)
        (void)audit_sequence(conn);
}

static int record(struct db_conn *conn, const struct audit_actor *actor, const char *request_id,
                  const char *client_addr, const struct audit_entry *e)
{
    int rc = DB_HARD, fail = 0;
    json_t *before = NULL, *after = NULL;
    char *before_text = NULL, *after_text = NULL;
    if (!audit_key_loaded()) {
        log_error("audit: no chain key loaded; cannot record %s", e->action ? e->action : "?");
        goto out;
    }
    if (!e->action || !e->resource_type || !actor->subject || !actor->auth_method) {
        log_error("audit: an event needs action, resource_type, actor subject and method");
        goto out;
    }
    if (PQtransactionStatus(db_pgconn(conn)) != PQTRANS_INTRANS) {
        /* Outside a transaction the event would not commit with the change it describes. */
        log_error("audit: %s recorded outside a transaction; refused", e->action);
        goto out;
    }
    /* A JSON null is stored as SQL NULL: "no state", one way only. */
    const json_t *b = json_is_null(e->before) ? NULL : e->before;
    const json_t *a = json_is_null(e->after) ? NULL : e->after;
    before = audit_scrub_new(b);
    after = audit_scrub_new(a);
    if ((b && !before) || (a && !after))
        goto out;
    before_text = canon_text(before, &fail);
    after_text = canon_text(after, &fail);
    if (fail) {
        log_error("audit: before/after of %s cannot be stored (a string holding NUL?)", e->action);
        goto out;
    }

    struct audit_row row = {
        .seq = 1,
        .time = "1970-01-01T00:00:00.000000Z",
        .actor_subject = actor->subject,
        .actor_name = actor->name,
        .auth_method = actor->auth_method,
        .token_id = actor->token_id,
        .action = e->action,
        .resource_type = e->resource_type,
        .resource_id = e->resource_id,
        .environment = e->environment,
        .before = before,
        .after = after,
        .request_id = request_id,
        .job_id = e->job_id,
        .client_addr = client_addr,
        .prev_hash = genesis_hash,
    };
    /* Hashed once here with a stand-in seq, time and link, only to refuse now, with the
     * writer's transaction, what the sequencer could never chain (invalid UTF-8 in a
     * field): a queued event that cannot be hashed would stop the chain for everyone. */
    char hash[AUDIT_HASH_HEX + 1];
    if (audit_chain_hash_row(&row, hash) != 0) {
        log_error("audit: cannot hash %s (invalid UTF-8 in a field?)", e->action);
        rc = DB_HARD;
        goto out;
    }
    rc = audit_store_pending_add(conn, &row, before_text, after_text);
    if (rc < 0)
        goto out;
    if (db_on_commit(conn, sequence_after_commit, NULL) != 0)
        audit_sequencer_kick(); /* no slot left for the hook: the next round chains it */
    audit_metrics_event_recorded();
    rc = 0;
out:
    json_decref(before);
    json_decref(after);
    free(before_text);
    free(after_text);
    return rc;
}

int audit_record(struct db_conn *conn, const struct audit_actor *actor, const char *request_id,
                 const char *client_addr, const struct audit_entry *e)
{
    static const struct audit_actor system_actor = {"system", "system", "system", NULL};
    return record(conn, actor ? actor : &system_actor, request_id, client_addr, e);
}

struct audit_actor audit_actor_of_request(struct http_request *req)
{
    const struct http_principal *p = http_principal(req);
    struct audit_actor a = {"anonymous", NULL, "none", NULL};
    if (p) {
        a.subject = p->subject;
        a.name = p->name[0] ? p->name : NULL;
        a.auth_method = p->method[0] ? p->method : "none";
        a.token_id = p->token_id[0] ? p->token_id : NULL;
    }
    return a;
}

int audit_record_http(struct db_conn *conn, struct http_request *req, const struct audit_entry *e)
{
    struct audit_actor a = audit_actor_of_request(req);
    const char *addr = http_client_addr(req);
    return record(conn, &a, http_request_id(req), addr && addr[0] ? addr : NULL, e);
}

/* ---- checkpoints ---- */

int audit_checkpoint_mac(int64_t seq, const char *hash, const char *verified_at, int64_t checked,
                         char hex[AUDIT_HASH_HEX + 1])
{
    if (!audit_key_loaded() || !hash || strlen(hash) != AUDIT_HASH_HEX || !verified_at)
        return -1;
    json_t *o = json_pack("{s:I,s:I,s:s,s:s}", "checked", (json_int_t)checked, "seq",
                          (json_int_t)seq, "type", "audit.checkpoint", "verified_at", verified_at);
    if (!o)
        return -1;
    struct buf canon;
    buf_init(&canon, 4096);
    int rc = audit_canon_append(&canon, o);
    if (rc == 0)
        rc = audit_chain_hmac(chain_key, chain_key_len, hash, canon.data, canon.len, hex);
    buf_free(&canon);
    json_decref(o);
    return rc;
}

/* The current time as hashed (AUDIT_TIME_SQL's format). */
static void now_text(char out[40])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char day[24];
    if (strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
        day[0] = '\0';
    snprintf(out, 40, "%.19s.%06dZ", day, (int)(ts.tv_nsec / 1000) % 1000000);
}

/* Record that the chain verified up to `seq` (whose hash is `hash`). A checkpoint that
 * cannot be written costs the next verification time, nothing else: logged, not fatal. */
static void checkpoint_write(struct db_conn *conn, int64_t seq, const char *hash, int64_t checked,
                             struct audit_verify_result *res)
{
    char at[40], mac[AUDIT_HASH_HEX + 1];
    now_text(at);
    if (audit_checkpoint_mac(seq, hash, at, checked, mac) != 0 ||
        audit_store_checkpoint_put(conn, seq, hash, at, checked, mac) != 1) {
        log_warn("audit: cannot write the checkpoint at seq %lld", (long long)seq);
        return;
    }
    res->checkpoints_written++;
    audit_metrics_checkpoint(0);
}

#define CHECKPOINTS_LOOKED_AT 16 /* refused ones in a row before falling back to the genesis */

/* Find the newest checkpoint at or below head_seq whose MAC verifies and which is below any
 * break this replica saw. Returns 1 with *seq and hash set, 0 for none, or a DB_ code.
 * Refused checkpoints are counted in res, the metrics and the log. */
static int checkpoint_find(struct db_conn *conn, int64_t head_seq, int64_t *seq,
                           char hash[AUDIT_HASH_HEX + 1], struct audit_verify_result *res)
{
    PGresult *pr = NULL;
    int rows = audit_store_checkpoints(conn, head_seq, CHECKPOINTS_LOOKED_AT, &pr);
    if (rows < 0)
        return rows;
    int found = 0;
    int64_t broken_at = audit_metrics_first_broken();
    for (int i = 0; i < rows && !found; i++) {
        int64_t s = db_get_int64(pr, i, 0);
        const char *h = db_get_str(pr, i, 1), *mac = db_get_str(pr, i, 4);
        char want[AUDIT_HASH_HEX + 1];
        if (audit_checkpoint_mac(s, h, db_get_str(pr, i, 2), db_get_int64(pr, i, 3), want) != 0 ||
            !mac || CRYPTO_memcmp(want, mac, AUDIT_HASH_HEX + 1) != 0) {
            res->checkpoints_refused++;
            audit_metrics_checkpoint(1);
            log_event(LOG_ERROR, "audit checkpoint refused",
                      json_pack("{s:I,s:s}", "seq", (json_int_t)s, "reason",
                                "its MAC does not verify (written or changed without the key)"));
            continue;
        }
        if (broken_at && s >= broken_at)
            continue; /* a verification here found the chain broken before it */
        *seq = s;
        snprintf(hash, AUDIT_HASH_HEX + 1, "%s", h);
        found = 1;
    }
    PQclear(pr);
    return found;
}

/* ---- verifying ---- */

#define VERIFY_PAGE 1000

static void broken(struct audit_verify_result *res, int64_t seq, const char *why)
{
    res->ok = 0;
    res->first_broken_seq = seq;
    snprintf(res->reason, sizeof res->reason, "%s", why);
}

/* Check one stored row against the chain so far. Returns 0 when it links, else 1 with res
 * marked broken. */
static int check_row(const PGresult *pr, int i, int64_t expected, const char *prev,
                     struct audit_verify_result *res)
{
    int64_t seq = db_get_int64(pr, i, AUDIT_C_SEQ);
    if (seq != expected) {
        broken(res, expected, "event missing");
        return 1;
    }
    const char *stored_prev = db_get_str(pr, i, AUDIT_C_PREV_HASH);
    const char *stored = db_get_str(pr, i, AUDIT_C_HASH);
    if (!stored_prev || strcmp(stored_prev, prev) != 0) {
        broken(res, seq, "prev_hash does not link to the previous event");
        return 1;
    }
    json_t *before = NULL, *after = NULL;
    const char *bt = db_get_str(pr, i, AUDIT_C_BEFORE), *at = db_get_str(pr, i, AUDIT_C_AFTER);
    if (bt)
        before = json_loads(bt, JSON_DECODE_ANY, NULL);
    if (at)
        after = json_loads(at, JSON_DECODE_ANY, NULL);
    int bad = (bt && !before) || (at && !after);
    char hash[AUDIT_HASH_HEX + 1];
    struct audit_row row = {
        .seq = seq,
        .time = db_get_str(pr, i, AUDIT_C_TIME),
        .actor_subject = db_get_str(pr, i, AUDIT_C_ACTOR_SUBJECT),
        .actor_name = db_get_str(pr, i, AUDIT_C_ACTOR_NAME),
        .auth_method = db_get_str(pr, i, AUDIT_C_AUTH_METHOD),
        .token_id = db_get_str(pr, i, AUDIT_C_TOKEN_ID),
        .action = db_get_str(pr, i, AUDIT_C_ACTION),
        .resource_type = db_get_str(pr, i, AUDIT_C_RESOURCE_TYPE),
        .resource_id = db_get_str(pr, i, AUDIT_C_RESOURCE_ID),
        .environment = db_get_str(pr, i, AUDIT_C_ENVIRONMENT),
        .before = before,
        .after = after,
        .request_id = db_get_str(pr, i, AUDIT_C_REQUEST_ID),
        .job_id = db_get_int64(pr, i, AUDIT_C_JOB_ID),
        .client_addr = db_get_str(pr, i, AUDIT_C_CLIENT_ADDR),
        .prev_hash = prev,
    };
    if (!bad && audit_chain_hash_row(&row, hash) != 0)
        bad = 1;
    json_decref(before);
    json_decref(after);
    if (bad) {
        broken(res, seq, "stored event cannot be read back");
        return 1;
    }
    if (!stored || strcmp(hash, stored) != 0) {
        broken(res, seq, "hash does not match the event");
        return 1;
    }
    return 0;
}

int audit_verify(struct db_conn *conn, const struct audit_verify_opts *o,
                 struct audit_verify_result *res)
{
    memset(res, 0, sizeof *res);
    res->ok = 1;
    int full = 0, trusted = o->from_seq <= 1, bounded = 0;
    if (!audit_key_loaded())
        return DB_HARD;
    /* Every event committed before the verification is covered (the audit.verify job's own
     * enqueue event too); failing that, the chain as it stands is verified. */
    audit_catch_up(conn);
    int64_t from_seq = o->from_seq, to_seq = o->to_seq, head_seq = 0;
    char head_hash[AUDIT_HASH_HEX + 1], prev[AUDIT_HASH_HEX + 1];
    int rc = audit_store_head(conn, &head_seq, head_hash);
    if (rc < 0)
        goto fail;
    if (rc == 0) {
        broken(res, 1, "the chain head row is missing");
        goto done;
    }
    res->head_seq = head_seq;
    int to_head = to_seq <= 0 || to_seq >= head_seq;
    if (to_head)
        to_seq = head_seq;

    memcpy(prev, genesis_hash, sizeof prev);
    if (from_seq <= 0) {
        /* after the newest valid checkpoint, whose own event must still be the one it saw */
        int64_t cp_seq = 0;
        char cp_hash[AUDIT_HASH_HEX + 1];
        rc = checkpoint_find(conn, head_seq, &cp_seq, cp_hash, res);
        if (rc < 0)
            goto fail;
        from_seq = 1;
        if (rc == 1) {
            char stored[AUDIT_HASH_HEX + 1];
            res->from_checkpoint = cp_seq;
            res->from_seq = cp_seq;
            rc = audit_store_hash_of(conn, cp_seq, stored);
            if (rc < 0)
                goto fail;
            if (rc == 0) {
                broken(res, cp_seq, "event missing");
                goto done;
            }
            if (strcmp(stored, cp_hash) != 0) {
                broken(res, cp_seq, "hash differs from the one its checkpoint verified");
                goto done;
            }
            from_seq = cp_seq + 1;
            memcpy(prev, cp_hash, sizeof prev);
        }
    }
    full = from_seq == 1 && to_head;
    res->from_seq = from_seq;
    if (o->max_events > 0 && to_seq - from_seq + 1 > o->max_events) {
        if (o->from_seq > 0) {
            res->to_seq = to_seq;
            return AUDIT_VERIFY_TOO_LONG;
        }
        to_seq = from_seq + o->max_events - 1;
        to_head = 0;
        full = 0;
        bounded = 1;
    }
    res->to_seq = to_seq;
    if (from_seq > to_seq) {
        res->complete = 1;
        goto done;
    }
    if (from_seq > 1 && !res->from_checkpoint) {
        rc = audit_store_hash_of(conn, from_seq - 1, prev);
        if (rc < 0)
            goto fail;
        if (rc == 0) {
            broken(res, from_seq - 1, "event missing");
            goto done;
        }
    }
    int64_t expected = from_seq;
    while (expected <= to_seq) {
        PGresult *pr = NULL;
        rc = audit_store_range(conn, expected, to_seq, VERIFY_PAGE, &pr);
        if (rc < 0)
            goto fail;
        if (rc == 0) {
            PQclear(pr);
            broken(res, expected, "event missing");
            goto done;
        }
        for (int i = 0; i < rc; i++) {
            res->checked++;
            if (check_row(pr, i, expected, prev, res)) {
                PQclear(pr);
                goto done;
            }
            snprintf(prev, sizeof prev, "%s", db_get_str(pr, i, AUDIT_C_HASH));
            if (trusted && o->checkpoint_every > 0 && expected % o->checkpoint_every == 0)
                checkpoint_write(conn, expected, prev, res->checked, res);
            expected++;
        }
        PQclear(pr);
        if (o->progress && o->progress(o->cls, res->checked) != 0) {
            rc = -1;
            goto fail;
        }
    }
    if (to_head && head_seq > 0 && strcmp(prev, head_hash) != 0) {
        broken(res, head_seq, "the chain head does not match the last event");
        goto done;
    }
    res->complete = !bounded;
    /* The last event, when asked (the job) or when the bound cut the verification short
     * (so that the next request goes on from here); not when it is a multiple, just done. */
    if (trusted && res->checked > 0 && (o->checkpoint_at_end || bounded) &&
        !(o->checkpoint_every > 0 && to_seq % o->checkpoint_every == 0))
        checkpoint_write(conn, to_seq, prev, res->checked, res);
done:
    audit_metrics_verified(res, 0, full);
    if (!res->ok && audit_event_chain_broken(conn, res) < 0)
        log_error("audit: the chain_broken event could not be written");
    if (!res->ok)
        log_event(LOG_ERROR, "audit chain broken",
                  json_pack("{s:I,s:I,s:s}", "first_broken_seq", (json_int_t)res->first_broken_seq,
                            "checked", (json_int_t)res->checked, "reason", res->reason));
    return 0;
fail:
    audit_metrics_verified(res, 1, full);
    return rc;
}

json_t *audit_verify_result_json(const struct audit_verify_result *r)
{
    json_t *body = json_pack("{s:b,s:I,s:o,s:I,s:I,s:I,s:b,s:o,s:i}", "ok", r->ok, "checked",
                             (json_int_t)r->checked, "first_broken_seq",
                             r->ok ? json_null() : json_integer(r->first_broken_seq), "from_seq",
                             (json_int_t)r->from_seq, "to_seq", (json_int_t)r->to_seq, "head_seq",
                             (json_int_t)r->head_seq, "complete", r->complete, "from_checkpoint",
                             r->from_checkpoint ? json_integer(r->from_checkpoint) : json_null(),
                             "checkpoints_refused", r->checkpoints_refused);
    if (body && !r->ok)
        json_object_set_new(body, "reason", json_string(r->reason));
    return body;
}
