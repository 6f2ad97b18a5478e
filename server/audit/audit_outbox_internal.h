/* Inside the audit room: the outbox's SQL beyond the one insert (audit_outbox_store.c), the
 * relay (audit_relay.c) and its settings. Other rooms include audit.h only. */
#ifndef QDB_AUDIT_OUTBOX_INTERNAL_H
#define QDB_AUDIT_OUTBOX_INTERNAL_H

#include <stdint.h>

#include "audit/audit.h"
#include "platform/db.h"

/* ---- SQL (audit_outbox_store.c): rows (>= 0) or a DB_ code ---- */

/* Add the events of `batch`, a JSON array of {"topic", "key", "event"} (event: the CloudEvent
 * without "id" and "time"), in array order, ids ascending. */
int audit_store_outbox_add_many(struct db_conn *conn, const json_t *batch);
/* The lowest `window` unpublished ids, ascending, except every row of a key whose earlier
 * row waits out a retry backoff (column id). */
int audit_store_outbox_batch_ids(struct db_conn *conn, int window, PGresult **res);
/* The unpublished rows of `ids` (a bigint[] literal) in id order: columns id, topic, key,
 * event::text, attempts. */
int audit_store_outbox_batch_rows(struct db_conn *conn, const char *ids, PGresult **res);
/* Mark the rows of `ids` (bigint[] literal) published and count them in the totals; returns
 * the rows marked (a row already marked is not counted twice). */
int audit_store_outbox_published(struct db_conn *conn, const char *ids);
/* Mark row `id` dead-lettered (published to the DLQ) with its error; 1 or 0. */
int audit_store_outbox_dead(struct db_conn *conn, int64_t id, const char *error);
/* Count a transient failure of row `id`: attempts + 1, the error, retry after delay_ms. */
int audit_store_outbox_failed(struct db_conn *conn, int64_t id, const char *error,
                              int64_t delay_ms);
/* Delete up to `limit` rows published more than retention_s ago; returns how many. */
int audit_store_outbox_prune(struct db_conn *conn, int64_t retention_s, int limit);
/* The outbox's state: *backlog rows unpublished, *oldest_age_s age of the oldest (-1: none),
 * the totals. Returns 1 or a DB_ code. */
struct audit_outbox_state {
    int64_t backlog;
    double oldest_age_s; /* -1 when the backlog is empty */
    int64_t published_total, dead_lettered_total;
};
int audit_store_outbox_state(struct db_conn *conn, struct audit_outbox_state *st);

/* A verification found the chain broken: emit audit.chain_broken (subject "audit/chain"), in
 * conn's transaction when one is open, else in one of its own. Returns 0 or a DB_ code. */
int audit_event_chain_broken(struct db_conn *conn, const struct audit_verify_result *r);

/* ---- the relay (audit_relay.c) ---- */

/* Its settings (QDB_KAFKA_*, QDB_OUTBOX_*), from audit's config_load. 0 or -1. */
int audit_relay_config_load(void);
/* Register its /metrics collector (audit's init). 0 or -1. */
int audit_relay_init(void);
/* Start the relay thread (audit's start) / stop and join it (audit's stop). */
int audit_relay_start(const struct db_settings *dbs, const char *instance_id);
void audit_relay_stop(void);
/* A transaction that emitted events committed on this replica: wake the relay now instead of
 * at its next poll. Never blocks on anything but a mutex. */
void audit_relay_kick(void);
/* Whether QDB_KAFKA_BROKERS is set. */
int audit_relay_kafka_configured(void);
/* The state last read by the relay (for /metrics), and the counters of this replica. */
void audit_relay_metrics(struct audit_outbox_state *st, uint64_t *published,
                         uint64_t *dead_lettered, uint64_t *failed, int *leading);

#endif
