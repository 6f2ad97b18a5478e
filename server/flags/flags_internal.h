/* Inside the flags room: the compiled model, the evaluator, the snapshot and the store.
 *
 * A flag (its definition: key, type, variants, salt) has one configuration per
 * environment:
 *   {"enabled": bool,                 the kill switch: false serves off_variant (DISABLED)
 *    "default_variant": name,         served when no rule and no split applies
 *    "off_variant": name,
 *    "rules": [{"name"?, "conditions": [cond...], "variant": name | "split": [part...]}],
 *    "prerequisites": [{"flag": key, "variant": name}],
 *    "split": [part...] | null}       the fallthrough split (reason SPLIT)
 *   cond = {"attribute": path, "operator": op, "value": v}
 *          op: equals not_equals in not_in starts_with ends_with contains lt lte gt gte
 *              semver_eq semver_lt semver_lte semver_gt semver_gte (attribute required)
 *              in_segment not_in_segment (value: a segment name; no attribute)
 *   part = {"variant": name, "percentage": 0..100 with at most 3 decimals}; the parts
 *          of a split add up to 100.
 * Evaluation: disabled -> off_variant (DISABLED); a prerequisite whose flag does not
 * serve the named variant -> off_variant (DISABLED, metadata.prerequisiteFailed); the
 * first rule whose conditions all hold -> its variant (TARGETING_MATCH) or its split
 * (SPLIT); else the fallthrough split (SPLIT); else default_variant: STATIC when the
 * configuration has no rules and no split, DEFAULT otherwise. A split needs the
 * context's targetingKey (TARGETING_KEY_MISSING otherwise). A missing attribute, or one of
 * the wrong type for the operator, makes the condition false (negated operators too).
 *
 * The sticky bucket (the same on every replica, in every client that wants to predict it):
 *   bucket = BE32(SHA-256(flagKey ":" salt ":" targetingKey)[0..3]) mod 100000
 * i.e. the first four bytes of the digest read as a big-endian unsigned 32-bit number,
 * modulo 100000, giving 0..99999 (thousandths of a percent). A split's parts are
 * cumulative ranges in their listed order: part i covers [sum of the parts before it, that
 * sum + its share), so raising the first part from 10 % to 20 % keeps every key of the
 * first 10 % in it and moves only keys from [10 %, 20 %). Flag keys and salts cannot hold
 * ':', so the input is unambiguous. Vectors: tests/unit/flags_bucket_vectors.json. */
#ifndef QDB_FLAGS_INTERNAL_H
#define QDB_FLAGS_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "flags/flags.h"
#include "platform/buf.h"
#include "platform/db.h"

/* Limits of one configuration (a request past them gets 400 naming the field). */
#define FLAGS_KEY_MAX 200
#define FLAGS_MAX_VARIANTS 50
#define FLAGS_MAX_RULES 200
#define FLAGS_MAX_CONDITIONS 50
#define FLAGS_MAX_LIST 1000 /* values of in / not_in, keys of a segment's lists */
#define FLAGS_MAX_PREREQS 10
#define FLAGS_MAX_SPLIT 50
#define FLAGS_MAX_DEPTH 16 /* prerequisite chains */
#define FLAGS_BUCKETS 100000u

enum flags_type { FLAGS_BOOLEAN = 0, FLAGS_STRING, FLAGS_NUMBER, FLAGS_OBJECT };
extern const char *const flags_type_names[]; /* "boolean", "string", "number", "object", NULL */

enum flags_reason {
    FLAGS_R_STATIC = 0,
    FLAGS_R_TARGETING_MATCH,
    FLAGS_R_SPLIT,
    FLAGS_R_DISABLED,
    FLAGS_R_DEFAULT,
    FLAGS_R_ERROR,
};
const char *flags_reason_name(enum flags_reason r);

enum flags_errcode {
    FLAGS_OK = 0,
    FLAGS_E_FLAG_NOT_FOUND,
    FLAGS_E_PARSE_ERROR,
    FLAGS_E_TARGETING_KEY_MISSING,
    FLAGS_E_INVALID_CONTEXT,
    FLAGS_E_TYPE_MISMATCH,
    FLAGS_E_GENERAL,
};
const char *flags_errcode_name(enum flags_errcode e);

enum flags_op {
    FLAGS_OP_EQUALS = 0,
    FLAGS_OP_NOT_EQUALS,
    FLAGS_OP_IN,
    FLAGS_OP_NOT_IN,
    FLAGS_OP_STARTS_WITH,
    FLAGS_OP_ENDS_WITH,
    FLAGS_OP_CONTAINS,
    FLAGS_OP_LT,
    FLAGS_OP_LTE,
    FLAGS_OP_GT,
    FLAGS_OP_GTE,
    FLAGS_OP_SEMVER_EQ,
    FLAGS_OP_SEMVER_LT,
    FLAGS_OP_SEMVER_LTE,
    FLAGS_OP_SEMVER_GT,
    FLAGS_OP_SEMVER_GTE,
    FLAGS_OP_IN_SEGMENT,
    FLAGS_OP_NOT_IN_SEGMENT,
    FLAGS_OP__COUNT
};
extern const char *const flags_op_names[]; /* NULL-terminated, in enum order */

/* ---- validation (pure) ---- */

/* Whether `key` is a flag key: dotted lowercase segments of [a-z0-9-] each starting with a
 * letter or digit ("qdb.guarantee.digital-signing"), 1..FLAGS_KEY_MAX bytes. */
int flags_key_valid(const char *key);
/* Whether `name` is a variant or segment name: 1..64 of [A-Za-z0-9_.-]. */
int flags_name_valid(const char *name);

/* Check a flag definition {type, variants, salt?}: returns 0, or -1 with the field at
 * fault ("variants.on") and why. */
int flags_definition_check(const json_t *def, char *field, size_t fieldlen, char *err,
                           size_t errlen);
/* Check one environment's configuration against its flag's definition (variants), with
 * the limits above: returns 0, or -1 with field and reason. References to other flags and
 * segments are checked by the store, which knows them. */
int flags_config_check(const json_t *def, const json_t *config, char *field, size_t fieldlen,
                       char *err, size_t errlen);
/* A new configuration for a new flag: disabled, with the given variants. New reference. */
json_t *flags_config_initial(const char *default_variant, const char *off_variant);
/* Check a segment {conditions, included, excluded}: 0 or -1 with field and reason. */
int flags_segment_check(const json_t *seg, char *field, size_t fieldlen, char *err,
                        size_t errlen);

/* ---- the bucket (pure) ---- */
uint32_t flags_bucket(const char *flag_key, const char *salt, const char *targeting_key);
/* SHA-256 without allocation (flags_sha256.c). */
struct flags_sha256 {
    uint32_t h[8];
    uint64_t len;
    unsigned char buf[64];
    size_t used;
};
void flags_sha256_init(struct flags_sha256 *s);
void flags_sha256_update(struct flags_sha256 *s, const void *data, size_t n);
void flags_sha256_final(struct flags_sha256 *s, unsigned char out[32]);

/* ---- semantic versions (pure) ---- */
/* Compare two semantic versions (an optional leading 'v'; build metadata ignored; the
 * precedence of semver 2.0.0 section 11). Returns -1, 0, 1, or -2 when either does not
 * parse. */
int flags_semver_cmp(const char *a, const char *b);

/* ---- the compiled model ---- */

struct flags_cond {
    enum flags_op op;
    char *attr;     /* owned; NULL for segment operators */
    json_t *value;  /* owned */
    int segment;    /* segment operators: index into the environment's segments; -1 unknown */
};

struct flags_split {
    int n;
    int variant[FLAGS_MAX_SPLIT];
    uint32_t upto[FLAGS_MAX_SPLIT]; /* cumulative upper bounds (exclusive), last = 100000 */
};

struct flags_rule {
    struct flags_cond *conds;
    int nconds;
    int variant;            /* -1 when the rule has a split */
    struct flags_split *split; /* owned, or NULL */
};

struct flags_prereq {
    char *flag;    /* owned */
    char *variant; /* owned */
};

struct flags_variant {
    char *name;       /* owned */
    json_t *value;    /* owned */
    char *value_json; /* owned: compact JSON text of value, for fast replies */
    char *name_json;  /* owned: name as a JSON string literal */
    /* owned: the end of its OFREP answer, "value":V,"variant":N,"metadata":{...}} */
    char *tail;
    size_t tail_len;
};

/* Evaluation counters per variant: bumped with relaxed atomics on the hot path, harvested
 * by the counter thread (flags_counts.c). */
struct flags_flag {
    uint64_t entry_hash; /* flags_entry_hash of the store entry it was built from */
    char *key;      /* owned */
    char *key_json; /* owned: key as a JSON string literal */
    char *head;     /* owned: the start of its OFREP answer, {"key":K,"reason":" */
    size_t head_len;
    enum flags_type type;
    char *salt;
    int archived;
    struct flags_variant *variants;
    int nvariants;
    int enabled, default_variant, off_variant;
    struct flags_rule *rules;
    int nrules;
    struct flags_prereq *prereqs;
    int nprereqs;
    struct flags_split *split; /* owned, or NULL */
    int64_t version;
    atomic_uint_fast64_t *counts; /* nvariants entries */
    atomic_uint_fast64_t errors;
};

struct flags_segment {
    char *name;
    struct flags_cond *conds;
    int nconds;
    json_t *included, *excluded; /* owned arrays of strings (targeting keys) */
};

/* A bulk answer remembered for one request body: the answer is a pure function of the
 * snapshot and the context, so a snapshot keeps the answers to the first
 * FLAGS_BULK_CACHE distinct bodies it is asked (static-context clients poll with the same
 * context) and serves them, and their 304s, without parsing the body or evaluating again.
 * A single-flag evaluation with a body seen before is served the slice of the bulk answer
 * that is its flag's (the same bytes flags_render_result writes). Entries are immutable
 * once published and live as long as their snapshot; their bulk evaluations are counted
 * through `hits` (harvested per variant with the snapshot's counts). */
#define FLAGS_BULK_CACHE 64
#define FLAGS_BULK_CACHE_REQ_MAX 4096
#define FLAGS_BULK_MAX (64u * 1024u * 1024u)
struct flags_bulk_entry {
    uint64_t key;
    char *req; /* the request body (set when published) */
    size_t req_len;
    char *body; /* the answer */
    size_t body_len;
    char etag[24];
    uint16_t *variants; /* per flag: the variant served, UINT16_MAX for an error */
    uint32_t *spans;    /* per flag: offset and length of its answer in body */
    atomic_uint_fast64_t hits;
};

/* One environment's immutable snapshot: flags sorted by key. Shared by readers through a
 * reference count (flags_snapshot.c). */
struct flags_env {
    char name[40];
    struct flags_flag *flags;
    size_t nflags;
    struct flags_segment *segments;
    size_t nsegments;
    char config_etag[24]; /* hash of the environment's configuration, for SSE and lists */
    char *doc; /* the store's document it was built from, as JSON text (owned; NULL when out
                * of memory): a per-flag reload edits a copy */
    size_t doc_len;
    atomic_int refs;
    /* the bulk answers cache: entries [0, ncache) are published; inserts under cache_mu */
    struct flags_bulk_entry *cache[FLAGS_BULK_CACHE];
    atomic_int ncache;
    pthread_mutex_t cache_mu;
    atomic_size_t bulk_size_hint; /* the last bulk answer's size, to size the next buffer */
};
/* The bulk answer for `context` (an object, or NULL), not yet counted nor published; NULL
 * when out of memory or past FLAGS_BULK_MAX. */
struct flags_bulk_entry *flags_bulk_entry_new(struct flags_env *env, const json_t *context);
void flags_bulk_entry_free(struct flags_bulk_entry *e);
/* Count n evaluations of every flag as the entry answered them. */
void flags_bulk_entry_count(struct flags_env *env, const struct flags_bulk_entry *e, uint64_t n);
/* The cached answer to this request body, or NULL. Lock-free. */
const struct flags_bulk_entry *flags_bulk_cache_find(struct flags_env *env, const char *req,
                                                     size_t len);
/* Remember *entry as the answer to this body: returns the published entry that answers it
 * (*entry itself, taken and set to NULL, or an equal one published first, *entry left to
 * the caller), or NULL when the cache is full or the body too big (*entry left). */
struct flags_bulk_entry *flags_bulk_cache_publish(struct flags_env *env, const char *req,
                                                  size_t len, struct flags_bulk_entry **entry);
/* Add the cache's hits to the flags' per-variant counts (for the harvest). */
void flags_bulk_cache_count(struct flags_env *env);

/* A hash of a flag's store entry (an element of the document's "flags") but for its
 * flag_version, which every change of the flag bumps: equal hashes serve the same, so a
 * per-flag reload leaves an environment whose entry hashes the same as it is. */
uint64_t flags_entry_hash(const json_t *entry);

/* Build an environment's snapshot from the store's document
 * {"flags": [{key, type, variants, salt, archived, version, config}], "segments":
 *   [{name, conditions, included, excluded}]}. Invalid entries are skipped (logged): the
 * store only holds checked ones. Returns a new snapshot (refs 1) or NULL (no memory). */
struct flags_env *flags_env_build(const char *name, const json_t *doc);
void flags_env_free(struct flags_env *env);
/* The flag of that key, or NULL. Binary search. */
const struct flags_flag *flags_env_find(const struct flags_env *env, const char *key);

struct flags_result {
    enum flags_reason reason;
    int variant; /* index into flag->variants; -1 on error */
    enum flags_errcode error;
    const char *detail;          /* static text for errors */
    const char *prereq_failed;   /* the flag key of the failed prerequisite, or NULL */
};

/* Evaluate `flag` in `env` for `context` (an object; may be NULL). Pure, lock-free. */
void flags_evaluate(const struct flags_env *env, const struct flags_flag *flag,
                    const json_t *context, struct flags_result *out);

/* Append one OFREP evaluation object for `flag` / `r` to `out` ({"key", "value",
 * "reason", "variant", "metadata"} or {"key", "errorCode", "errorDetails"}). Returns 0 or
 * -1 when the buffer is full. */
int flags_render_result(struct buf *out, const struct flags_flag *flag,
                        const struct flags_result *r);

/* 64-bit hash of bytes (for ETags; not cryptographic). */
uint64_t flags_hash64(const void *data, size_t len);

/* ---- snapshot holder (flags_snapshot.c) ---- */

/* The current snapshot of `environment` with a reference taken (release it with
 * flags_env_release), or NULL when the environment is unknown or not loaded yet. */
struct flags_env *flags_snapshot_acquire(const char *environment);
void flags_env_release(struct flags_env *env);
/* Load every environment's snapshot from the store on `conn` and swap them in. Serialized
 * (one reload at a time). Returns 0 or a DB_ code. */
int flags_snapshot_reload(struct db_conn *conn);
/* The same for one environment (a change to its configurations only). */
int flags_snapshot_reload_env(struct db_conn *conn, const char *environment);
/* The same for one flag: its entry in every environment is read again, and each
 * environment where it changed is rebuilt from the document it was built from with that
 * entry replaced (nothing else is read); an environment not loaded yet means a full
 * reload. */
int flags_snapshot_reload_flag(struct db_conn *conn, const char *key);
/* Whether the snapshots are loaded (at least once). */
int flags_snapshot_ready(void);
/* Names of the loaded environments (static storage until stop). */
size_t flags_snapshot_env_names(const char **out, size_t max);
/* Start / stop the listener thread (LISTEN flag_changes, reload on each batch of
 * notifications, full reload after every reconnect) and the counter flusher. */
int flags_listener_start(const struct db_settings *db);
void flags_listener_stop(void);
/* Free every snapshot (after HTTP stopped). */
void flags_snapshot_free_all(void);
/* Metrics of the snapshot and the listener. */
void flags_snapshot_metrics(struct buf *out);

/* ---- evaluation counts (flags_counts.c) ---- */
/* Move an old snapshot's unharvested counts into the process totals (called when a
 * snapshot is freed). */
void flags_counts_harvest_env(const struct flags_env *env);
/* Harvest the current snapshots and write the unflushed counts on `conn` (UPSERT).
 * Returns 0 or a DB_ code. */
int flags_counts_flush(struct db_conn *conn);
void flags_counts_metrics(struct buf *out);
void flags_counts_free(void);

/* ---- SSE ---- */
int flags_events_init(void);
void flags_events_free(void);
/* Broadcast {"environment", "etag"} to the streams of that environment. */
void flags_events_changed(const char *environment, const char *etag);
void flags_events_tick(void);

/* Every difference between a desired flags file {key: value} and what `e` serves without
 * targeting: [{key, change: missing|changed|extra, desired, live}]. New reference. */
json_t *flags_file_differences(const struct flags_env *e, const json_t *desired);

/* ---- the room's settings ---- */
struct flags_settings {
    int prod_approval;           /* QDB_FLAGS_PROD_APPROVAL */
    int stale_days;              /* QDB_FLAGS_STALE_DAYS */
    int counts_flush_s;          /* QDB_FLAGS_COUNTS_FLUSH_INTERVAL */
    int poll_interval_ms;        /* QDB_FLAGS_POLL_INTERVAL_MS (OFREP configuration) */
};
extern struct flags_settings flags_cfg;

#endif
