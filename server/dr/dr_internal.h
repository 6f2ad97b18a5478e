/* Shared inside the DR room only. */
#ifndef QDB_DR_INTERNAL_H
#define QDB_DR_INTERNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "dr/dr.h"
#include "jobs/jobs.h"
#include "platform/db.h"

struct inventory_pg_endpoint;
struct inventory_database;

/* ---- settings (dr_module.c) ---- */
const char *dr_pg_bin(void);           /* QDB_DR_PG_BIN */
long dr_default_max_lag_bytes(void);   /* QDB_DR_MAX_LAG_BYTES */
const char *dr_drill_source_env(void); /* QDB_DR_DRILL_SOURCE_ENVIRONMENT */
const char *dr_drill_target_env(void); /* QDB_DR_DRILL_TARGET_ENVIRONMENT */
/* The period after which a measurement is stale (the drill schedule's, 7.4: a quarter). */
#define DR_STALE_SECONDS (92L * 86400)

/* ---- kinds (dr_jobs.c) ---- */
int dr_jobs_init(void);
/* Enqueue `kind` with args inside the caller's transaction. */
int dr_enqueue(struct db_conn *c, const char *kind, json_t *args, const char *created_by,
               int64_t *job_id);

/* ---- metrics (dr_status.c) ---- */
int dr_status_init(struct db_pool *pool);
void dr_status_free(void);
/* The status table (new): {components: [...], generated_at}. 0 or a DB_ code. Refreshes the
 * metrics' gauges from what it read. */
int dr_status_compute(struct db_conn *c, json_t **out);

/* ---- the servers of a pair (dr_pg.c) ---- */
/* "{host, port}" of an endpoint (new), never its secret. */
json_t *dr_endpoint_json(const struct inventory_pg_endpoint *ep);
/* Whether two endpoints name the same server (host and port). */
int dr_same_server(const struct inventory_pg_endpoint *a, const struct inventory_pg_endpoint *b);
/* One value of a fixed statement (never SQL built from input) into out: 1, 0 for NULL, -1
 * with the server's message in err. */
int dr_pg_value(PGconn *pg, const char *sql, char *out, size_t n, char *err, size_t errlen);
/* A fixed statement that returns no value: 0 or -1 with err. */
int dr_pg_command(PGconn *pg, const char *sql, char *err, size_t errlen);
/* "X/Y" into a byte position: 0 or -1. */
int dr_lsn_parse(const char *s, uint64_t *out);
/* What one server says about itself, for the checks before a change. */
struct dr_server_state {
    int reachable;
    int in_recovery;
    uint64_t lsn;         /* primary: pg_current_wal_lsn; standby: pg_last_wal_replay_lsn */
    uint64_t receive_lsn; /* standby: pg_last_wal_receive_lsn (0 when none) */
    double replay_age_s;  /* standby: now() - pg_last_xact_replay_timestamp() (-1 unknown) */
    char error[300];
};
/* Connect (timeout_s) and read the state; *pg keeps the connection open when not NULL. */
void dr_server_probe(const struct inventory_pg_endpoint *ep, const char *db, int timeout_s,
                     struct dr_server_state *st, PGconn **pg);

/* ---- store (dr_store.c): one function per statement ---- */
int dr_store_scenarios(struct db_conn *c, json_t **arr);
int dr_store_targets(struct db_conn *c, json_t **arr);
/* The target of the component whose data lives in `database_name`: 1 with *doc, 0 none. */
int dr_store_target_for(struct db_conn *c, const char *database_name, json_t **doc);

/* A failover or switchover row, pending. DB_UNIQUE when one of the database is already
 * pending or running. */
int dr_store_failover_insert(struct db_conn *c, const char *kind,
                             const struct inventory_database *db, const char *by,
                             int64_t max_lag_bytes, int64_t *id);
int dr_store_failover_set_job(struct db_conn *c, int64_t id, int64_t job_id);
/* The pending or running row of a database: 1 with *id and *job_id, 0 none. */
int dr_store_failover_active(struct db_conn *c, int64_t database_id, int64_t *id, int64_t *job_id);
/* pending -> running by its job (guarded: id, job, pending). 1, 0 (not ours any more). */
int dr_store_failover_start(struct db_conn *c, int64_t id, int64_t job_id);
/* Members of `m` (standby_lag_bytes, standby_lag_seconds, old_primary_reachable, fenced,
 * lost_bytes, lost_seconds, rejoin_method) replace the row's. */
int dr_store_failover_measure(struct db_conn *c, int64_t id, const json_t *m);
int dr_store_failover_step(struct db_conn *c, int64_t id, const char *step, const char *detail);
int dr_store_failover_promoted(struct db_conn *c, int64_t id);
/* The first write was accepted now: records it and the RTO, into *rto_s. */
int dr_store_failover_write_accepted(struct db_conn *c, int64_t id, double *rto_s);
int dr_store_failover_rejoined(struct db_conn *c, int64_t id);
/* running/pending -> succeeded or failed. */
int dr_store_failover_finish(struct db_conn *c, int64_t id, const char *state, const char *error);
int dr_store_failover_get(struct db_conn *c, int64_t id, json_t **doc);
/* Newest first; database_id 0: all. */
int dr_store_failover_list(struct db_conn *c, int64_t database_id, int limit, json_t **arr);

int dr_store_drill_insert(struct db_conn *c, const char *by, const char *target_env,
                          const json_t *databases, int scheduled, int64_t *id);
int dr_store_drill_set_job(struct db_conn *c, int64_t id, int64_t job_id);
/* pending -> running (guarded by the job), started now. 1 or 0. */
int dr_store_drill_start(struct db_conn *c, int64_t id, int64_t job_id);
/* One database's result (members as dr_drill_result's columns); the RTO is measured here,
 * from the drill's start to now, into *rto_s. */
int dr_store_drill_result_insert(struct db_conn *c, int64_t drill_id, const json_t *r,
                                 double *rto_s);
int dr_store_drill_finish(struct db_conn *c, int64_t id, const char *state, const char *error);
int dr_store_drill_get(struct db_conn *c, int64_t id, json_t **doc);
int dr_store_drill_list(struct db_conn *c, int limit, json_t **arr);
/* One row per target: {component, ..., last_failover, last_switchover, last_drill} (the
 * newest of each, with age_seconds). */
int dr_store_status(struct db_conn *c, json_t **arr);

#endif
