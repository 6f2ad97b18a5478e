/* Leadership through a PostgreSQL session advisory lock, for a thread that keeps its own
 * connection (the outbox relay): at most one session in the cluster holds a given key, and
 * the lock goes with the session, so a holder that dies (kill -9, a crash, a cut that
 * PostgreSQL notices, a PostgreSQL restart) hands over at once, with no TTL to wait out.
 *
 * The price is that the lock is only as real as the session: a connection that libpq or
 * db_conn_check reopened is a new session that does not hold it. So a holder records the
 * backend pid the lock was taken on and checks it (db_session_lock_held) before each piece
 * of work, and treats any lost connection as lost leadership. Never through a pooler in
 * transaction mode (PgBouncer): the session would not be ours. */
#ifndef QDB_PLATFORM_DB_LOCK_H
#define QDB_PLATFORM_DB_LOCK_H

#include <stdint.h>

#include "platform/db.h"

struct db_session_lock {
    int64_t key; /* the advisory lock key, one per role (set by the caller) */
    int pid;     /* backend pid of the session that holds it; 0: not held */
};

/* Take l->key on conn unless this session holds it already. Returns 1 (held by us), 0
 * (another session holds it), or a DB_ code (and l is not held). Never waits. */
int db_session_lock_acquire(struct db_conn *conn, struct db_session_lock *l);
/* Whether conn is still the session that took l. Never touches the network. */
int db_session_lock_held(struct db_conn *conn, const struct db_session_lock *l);
/* Give it back (a clean stop: the next holder need not wait for our disconnect); errors are
 * ignored, the lock goes with the session anyway. */
void db_session_lock_release(struct db_conn *conn, struct db_session_lock *l);

#endif
