/* SQLSTATE classes, as db.c's classify maps them, against a real PostgreSQL: class 22
 * (data exception) and NOT NULL / CHECK violations are DB_INVALID (400), unique violations
 * DB_UNIQUE (409), other integrity violations (foreign key, exclusion) DB_CONFLICT (409),
 * serialization failures DB_RETRY; db_tx retries only DB_RETRY, and each problem reaches
 * the client with its status through http_reply_db_error (checked by the statuses in the
 * catalogue here and over HTTP in test_invalid_input). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "platform/db.h"
#include "platform/errors.h"
#include "platform/log.h"

struct errcase {
    const char *what;
    const char *sql;
    const char *sqlstate;
    int want;
};

struct tx_count {
    struct db_stmt *st;
    int calls;
};

static int tx_fn(struct db_conn *c, void *cls)
{
    struct tx_count *t = cls;
    t->calls++;
    return db_exec(c, t->st, NULL, NULL);
}

int main(void)
{
    char *url = th_db_create("db_errors");
    struct db_settings settings = {url, 5000, 3, "db-errors-test"};
    log_set_level(LOG_ERROR);

    th_step("a table with a primary key, a foreign key, a CHECK and a NOT NULL column");
    static const char *const schema[] = {
        "CREATE TABLE parent (id int PRIMARY KEY)",
        "CREATE TABLE child (id int PRIMARY KEY, parent int NOT NULL REFERENCES parent(id), "
        "n int CHECK (n >= 0))",
        "INSERT INTO parent VALUES (1)",
        "INSERT INTO child VALUES (1, 1, 0)",
    };
    for (size_t i = 0; i < sizeof schema / sizeof schema[0]; i++) {
        PGresult *res = th_sql(url, schema[i], NULL);
        CHECK(res != NULL, "%s", schema[i]);
        PQclear(res);
    }
    struct db_conn *c = db_conn_open(&settings);
    CHECK(c != NULL, "connect");
    if (!c)
        goto out;

    static const struct errcase cases[] = {
        {"division by zero", "SELECT 1 / (SELECT count(*) FROM parent WHERE id < 0)::int", "22012",
         DB_INVALID},
        {"an impossible date", "SELECT '2026-02-30T25:61:00Z'::timestamptz", "22008", DB_INVALID},
        {"not an integer", "SELECT 'x'::int", "22P02", DB_INVALID},
        {"an integer past int64", "SELECT '9223372036854775808'::bigint", "22003", DB_INVALID},
        {"a NUL byte", "SELECT convert_from('\\x00'::bytea, 'UTF8')", "22021", DB_INVALID},
        {"a unique violation", "INSERT INTO parent VALUES (1)", "23505", DB_UNIQUE},
        {"a foreign key violation", "INSERT INTO child VALUES (2, 99, 0)", "23503", DB_CONFLICT},
        {"a foreign key still referenced", "DELETE FROM parent WHERE id = 1", "23503", DB_CONFLICT},
        {"a CHECK violation", "INSERT INTO child VALUES (3, 1, -1)", "23514", DB_INVALID},
        {"a NOT NULL violation", "INSERT INTO child VALUES (4, NULL, 0)", "23502", DB_INVALID},
        {"a syntax error (the server's fault)", "SELEC 1", "42601", DB_HARD},
        {"an unknown table (the server's fault)", "SELECT * FROM nowhere", "42P01", DB_HARD},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        th_step("%s: SQLSTATE %s", cases[i].what, cases[i].sqlstate);
        char name[32];
        snprintf(name, sizeof name, "err_case_%zu", i);
        struct db_stmt st = DB_STMT(name, 0, cases[i].sql);
        /* straight */
        int rc = db_exec(c, &st, NULL, NULL);
        CHECK(rc == cases[i].want, "%s: got %d want %d (sqlstate %s)", cases[i].what, rc,
              cases[i].want, db_last_sqlstate(c));
        CHECK(strcmp(db_last_sqlstate(c), cases[i].sqlstate) == 0, "%s: sqlstate %s", cases[i].what,
              db_last_sqlstate(c));
        /* inside a transaction: passed through, rolled back, never retried */
        struct tx_count t = {&st, 0};
        rc = db_tx(c, tx_fn, &t);
        CHECK(rc == cases[i].want && t.calls == 1, "%s in db_tx: rc %d after %d calls",
              cases[i].what, rc, t.calls);
        CHECK(db_conn_check(c) == 0, "the connection is still usable");
    }
    long rows = th_sql_long(url, "SELECT count(*) FROM child", NULL);
    CHECK(rows == 1, "nothing was written (%ld rows)", rows);

    th_step("a serialization failure is retried");
    {
        struct db_stmt st =
            DB_STMT("err_retry", 0,
                    "DO $$ BEGIN IF (SELECT count(*) FROM parent) < 3 THEN "
                    "INSERT INTO parent SELECT max(id) + 1 FROM parent; "
                    "RAISE EXCEPTION 'again' USING ERRCODE = '40001'; END IF; END $$");
        /* each failed attempt rolls its insert back, so the condition never changes: every
         * attempt fails and db_tx gives up after its retries with DB_RETRY */
        struct tx_count t = {&st, 0};
        int rc = db_tx(c, tx_fn, &t);
        CHECK(rc == DB_RETRY && t.calls == 5, "40001: rc %d after %d calls", rc, t.calls);
    }

    th_step("the problems: DB_INVALID is a 400, DB_UNIQUE and DB_CONFLICT a 409");
    CHECK(qdb_error_info(QDB_E_BAD_REQUEST)->status == 400 &&
              qdb_error_info(QDB_E_CONFLICT)->status == 409,
          "catalogue statuses");

out:
    db_conn_close(c);
    th_db_drop(url);
    free(url);
    return th_done();
}
