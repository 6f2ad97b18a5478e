/* Session advisory locks for leadership (db_lock.h). */
#include "platform/db_lock.h"

static struct db_stmt q_try =
    DB_STMT("db_session_lock_try", 1, "SELECT pg_try_advisory_lock($1::bigint), pg_backend_pid()");

int db_session_lock_held(struct db_conn *conn, const struct db_session_lock *l)
{
    PGconn *pg = conn ? db_pgconn(conn) : NULL;
    return l->pid != 0 && pg && PQstatus(pg) == CONNECTION_OK && PQbackendPID(pg) == l->pid;
}

int db_session_lock_acquire(struct db_conn *conn, struct db_session_lock *l)
{
    /* pg_try_advisory_lock counts: taking it twice would need two unlocks */
    if (db_session_lock_held(conn, l))
        return 1;
    l->pid = 0;
    struct db_params p = DB_PARAMS_INIT;
    db_param_int(&p, l->key);
    PGresult *res = NULL;
    int rc = db_execp(conn, &q_try, &p, &res);
    if (rc == 1 && PQgetvalue(res, 0, 0)[0] == 't') {
        l->pid = (int)db_get_int64(res, 0, 1);
        rc = 1;
    } else if (rc >= 0) {
        rc = 0;
    }
    PQclear(res);
    return rc;
}

static struct db_stmt q_unlock =
    DB_STMT("db_session_lock_release", 1, "SELECT pg_advisory_unlock($1::bigint)");

void db_session_lock_release(struct db_conn *conn, struct db_session_lock *l)
{
    if (db_session_lock_held(conn, l)) {
        struct db_params p = DB_PARAMS_INIT;
        db_param_int(&p, l->key);
        (void)db_execp(conn, &q_unlock, &p, NULL);
    }
    l->pid = 0;
}
