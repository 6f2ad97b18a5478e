/* The flags room's SQL (flags_store.c), one function per statement. Returns as db.h says:
 * >= 0 rows (or 1/0 for the JSON readers: found / not), or a DB_ code. JSON out
 * parameters are new references. */
#ifndef QDB_FLAGS_STORE_H
#define QDB_FLAGS_STORE_H

#include <jansson.h>
#include <stdint.h>

#include "platform/db.h"

/* {env: {"flags": [...], "segments": [...]}} for every environment (environment NULL) or
 * for that one (the snapshot). */
int flags_store_snapshot(struct db_conn *c, const char *environment, json_t **out);

/* {env: entry or null} for one flag, the entry as in the snapshot's "flags" (the per-flag
 * reload). */
int flags_store_snapshot_flag(struct db_conn *c, const char *key, json_t **out);

/* The flag document (flag_doc + created_at, updated_at). */
int flags_store_get(struct db_conn *c, const char *key, json_t **doc);
/* The same, locking the flag's row for the rest of the transaction. */
int flags_store_get_for_update(struct db_conn *c, const char *key, json_t **doc);
/* {"items": [...]} filtered by tag (NULL: any), environment (for stale; NULL: all) and
 * stale (those unchanged for stale_days while serving one value to all, or not evaluated
 * for stale_days). */
int flags_store_list(struct db_conn *c, const char *tag, const char *environment, int stale,
                     int stale_days, json_t **out);
/* The version after which a new flag of this key goes on numbering (0 for a new key). */
int flags_store_last_version(struct db_conn *c, const char *key, int64_t *out);
int flags_store_insert(struct db_conn *c, const char *key, const char *description,
                       const char *owner, const char *type, const json_t *variants,
                       const char *salt, const json_t *tags, int64_t version);
/* A configuration for every environment. */
int flags_store_env_insert_all(struct db_conn *c, const char *key, const json_t *config,
                               int64_t version);
int flags_store_update_definition(struct db_conn *c, const char *key, const char *description,
                                  const char *owner, const json_t *variants, const char *salt,
                                  const json_t *tags, int archived, int64_t version);
/* Set flag.version (after a lock, so no guard is needed). */
int flags_store_set_version(struct db_conn *c, const char *key, int64_t version);
/* Set one environment's configuration (1 row, or 0 when the environment is unknown). */
int flags_store_env_set(struct db_conn *c, const char *key, const char *environment,
                        const json_t *config, int64_t version);
int flags_store_delete(struct db_conn *c, const char *key);
int flags_store_version_insert(struct db_conn *c, const char *key, int64_t version,
                               const char *environment, const char *action, const json_t *doc,
                               const json_t *diff, const char *comment, const char *actor);
/* {"items": [...]} newest first; environment NULL: all; before 0: from the newest. */
int flags_store_versions(struct db_conn *c, const char *key, const char *environment,
                         int64_t before, int limit, json_t **out);
/* The doc of one version. */
int flags_store_version_doc(struct db_conn *c, const char *key, int64_t version, json_t **doc);
/* {flag_key: [prerequisite flag keys]} of one environment. */
int flags_store_prereq_graph(struct db_conn *c, const char *environment, json_t **out);
/* The variants object of a flag (1), or 0 when no such flag. */
int flags_store_variants(struct db_conn *c, const char *key, json_t **out);
/* Keys of the flags whose configuration in some environment names `segment`. */
int flags_store_segment_users(struct db_conn *c, const char *segment, json_t **out);

/* segments */
int flags_store_segments_list(struct db_conn *c, json_t **out);
int flags_store_segment_get(struct db_conn *c, const char *name, json_t **out);
int flags_store_segment_insert(struct db_conn *c, const char *name, const char *description,
                               const json_t *conditions, const json_t *included,
                               const json_t *excluded);
/* Update when the version is `expected` (0: any). Returns rows. */
int flags_store_segment_update(struct db_conn *c, const char *name, const char *description,
                               const json_t *conditions, const json_t *included,
                               const json_t *excluded, int64_t expected);
int flags_store_segment_delete(struct db_conn *c, const char *name);
int flags_store_segment_exists(struct db_conn *c, const char *name);

/* evaluation counts: add n evaluations (arrays of equal length) */
int flags_store_counts_add(struct db_conn *c, const json_t *rows);

/* change requests */
int flags_store_cr_insert(struct db_conn *c, const char *key, const char *environment,
                          const char *action, const json_t *config, int64_t base_version,
                          const char *comment, const char *requested_by, json_t **out);
int flags_store_cr_list(struct db_conn *c, const char *state, json_t **out);
int flags_store_cr_get_for_update(struct db_conn *c, int64_t id, json_t **out);
int flags_store_cr_decide(struct db_conn *c, int64_t id, const char *state,
                          const char *decided_by, const char *comment, json_t **out);

/* rollouts */
int flags_store_rollout_insert(struct db_conn *c, const char *key, const char *environment,
                               const char *variant, const json_t *steps, int64_t base_version,
                               const char *comment, const char *created_by, json_t **out);
int flags_store_rollout_get_for_update(struct db_conn *c, int64_t id, json_t **out);
int flags_store_rollout_set(struct db_conn *c, int64_t id, const char *state,
                            const json_t *steps, json_t **out);
int flags_store_rollouts_list(struct db_conn *c, const char *key, json_t **out);
/* Active rollouts of a flag in an environment (count). */
int flags_store_rollouts_active(struct db_conn *c, const char *key, const char *environment);

#endif
