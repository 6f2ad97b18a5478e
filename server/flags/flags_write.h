/* The write path of flag configurations (flags_write.c), shared by the API handlers and
 * the rollout runner. */
#ifndef QDB_FLAGS_WRITE_H
#define QDB_FLAGS_WRITE_H

#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>

#include "audit/audit.h"
#include "flags/flags_internal.h"
#include "platform/http.h"

/* Who makes a change: a request, or (req NULL) a job's actor. */
struct flags_actor {
    struct http_request *req;
    const struct audit_actor *actor;
};
const char *flags_actor_subject(const struct flags_actor *a);
int flags_actor_audit(struct db_conn *c, const struct flags_actor *a, const struct audit_entry *e);
int flags_actor_emit(struct db_conn *c, const struct flags_actor *a, const char *verb,
                     const char *subject, const json_t *data);

/* Reasons a write refuses (below -100, for db_tx). */
enum {
    FLAGS_W_NOT_FOUND = -301,
    FLAGS_W_STALE = -302,
    FLAGS_W_INVALID = -303,
    FLAGS_W_NO_ENV = -304,
    FLAGS_W_CONFLICT = -305,
};

struct flags_change {
    struct flags_actor who;
    const char *key, *environment;
    const json_t *config; /* the new configuration (borrowed) */
    const char *action;   /* "configure", "rollback", "promote", "import", ... */
    const char *comment;
    int64_t expected_version; /* 0: no If-Match */
    int skip_audit; /* import records one audit event for the whole file itself */
    /* out */
    int64_t version_before, version_after;
    json_t *result; /* the flag after the change (owned; the caller decrefs) */
    char field[128], err[256];
};

/* Apply ch inside the caller's transaction. Returns 0, a DB_ code, or FLAGS_W_*. */
int flags_apply_env_change(struct db_conn *c, struct flags_change *ch);
/* The checks of flags_apply_env_change that need the store (prerequisites, cycles,
 * segments), with the shape check first. Returns 0, a DB_ code or FLAGS_W_INVALID. */
int flags_check_config(struct db_conn *c, const json_t *doc, const char *environment,
                       const json_t *config, struct flags_change *ch);

/* [{path, from, to}] between two documents. New reference. */
json_t *flags_json_diff(const json_t *before, const json_t *after);
/* The doc without created_at / updated_at. New reference. */
json_t *flags_doc_core(const json_t *doc);

#endif
