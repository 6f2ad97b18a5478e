/* Integration-test harness: each test starts the real qdb-control binary against its own
 * database on the PostgreSQL cluster that tests/run.sh started (QDB_TEST_PG_PORT), talks
 * HTTP to it with libcurl, and stops it. Results print as "N passed, N failed". */
#ifndef QDB_TEST_HARNESS_H
#define QDB_TEST_HARNESS_H

#include <jansson.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- checks ---- */
extern int th_passed, th_failed;
#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (cond) {                                                                           \
            th_passed++;                                                                      \
        } else {                                                                              \
            th_failed++;                                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                   \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
        }                                                                                     \
    } while (0)
/* Print the totals line and return the exit status for main. */
int th_done(void);
/* Print a step heading, so a failure says what was being tried. */
void th_step(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- PostgreSQL ---- */
/* A new empty database on the shared test cluster; returns its URL (malloc'd). */
char *th_db_create(const char *prefix);
void th_db_drop(const char *url);
/* Run SQL with text params (NULL-terminated list) as the cluster superuser; returns the
 * result (caller PQclears) or NULL after printing the error. SQL that names audit_event or
 * audit_chain_head first waits (at most 30 s) until the audit events committed before the
 * call are chained, as the server's own readers of the trail do: a writer's request
 * replies before the sequencer chains its event. */
PGresult *th_sql(const char *url, const char *sql, ...);
/* First column of first row as a long (or -1). */
long th_sql_long(const char *url, const char *sql, ...);
/* Port of the shared cluster. */
int th_pg_port(void);

/* A private PostgreSQL cluster (for tests that stop and restart it). */
struct th_pg {
    char dir[256];
    int port;
};
int th_pg_private_start(struct th_pg *pg);
int th_pg_private_stop(struct th_pg *pg);    /* fast shutdown, keeps data */
int th_pg_private_restart(struct th_pg *pg); /* start again after stop */
void th_pg_private_destroy(struct th_pg *pg);
/* URL of database `name` on it (created if missing), malloc'd. */
char *th_pg_private_db(struct th_pg *pg, const char *name);
/* Path of its server log (pg_ctl -l), into out. */
void th_pg_private_log(const struct th_pg *pg, char *out, size_t n);

/* ---- the server under test ---- */
struct th_server {
    pid_t pid;
    uint16_t port;
    char base[64]; /* "http://127.0.0.1:PORT" */
    char log[256]; /* its stderr */
};
/* Extra environment for every server the harness starts ("K=V", NULL-terminated), set by a
 * room's test helpers (e.g. auth mode and keys). */
extern const char *th_default_env[];
/* Start `qdb-control serve` on a free port with QDB_DATABASE_URL=url plus `env` ("K=V",
 * NULL-terminated, may be NULL) and wait up to 30 s for /readyz (when wait_ready). Returns
 * 0 or -1. */
int th_server_start(struct th_server *s, const char *url, const char *const *env,
                    int wait_ready);
/* SIGTERM and wait; returns the exit status (or -1), and fails the test when the log shows
 * a sanitizer report. */
int th_server_stop(struct th_server *s);
/* SIGKILL and reap. */
void th_server_kill(struct th_server *s);
/* Whether the server's log contains `needle`. */
int th_server_log_contains(const struct th_server *s, const char *needle);
/* "QDB_AUDIT_HMAC_KEY_FILE=<path>" of the run's shared audit key (static). */
const char *th_audit_key_env(void);
/* Run the binary with a command (e.g. "migrate") and env; returns exit status, stderr
 * into `err` (may be NULL). */
int th_run_binary(const char *const *argv, const char *const *env, char *err, size_t errlen);
/* Run the shell command made from fmt (sh -c); its exit status, the command on stderr when
 * it failed. */
int th_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- HTTP ---- */
struct th_resp {
    long status;
    char *body;
    size_t len;
    json_t *json;  /* parsed body when it is JSON, else NULL */
    char *headers; /* raw response headers */
};
/* One request. `headers` is a NULL-terminated list of "Name: value" (may be NULL); `body`
 * may be NULL. Returns 0 when an HTTP answer came (any status), -1 on transport error. */
int th_http(const struct th_server *s, const char *method, const char *path,
            const char *const *headers, const char *body, size_t len, struct th_resp *out);
/* Shorthands. */
int th_get(const struct th_server *s, const char *path, const char *token, struct th_resp *out);
int th_post_json(const struct th_server *s, const char *path, const char *token,
                 const char *json, struct th_resp *out);
/* A header's value (malloc'd) or NULL. */
char *th_resp_header(const struct th_resp *r, const char *name);
void th_resp_free(struct th_resp *r);
/* An access token from the server's dev issuer (QDB_AUTH_MODE=dev, the harness default)
 * for `role` ("viewer", "operator", "admin"), via POST /dev-issuer/token; subject
 * "test-<role>". Returns a malloc'd token, or NULL (printed why). */
char *th_dev_token(const struct th_server *s, const char *role);
/* The status of one request with an optional bearer token (0 on transport error). */
long th_status(const struct th_server *s, const char *method, const char *path,
               const char *token);
/* The value of a /metrics series ("name" or "name{labels}", at the start of a line), or
 * -1 when it is absent. */
long th_metric(const struct th_server *s, const char *series);
/* Whether the response is problem+json with the given status and all RFC 9457 members. */
int th_is_problem(const struct th_resp *r, long status);

/* A loopback TCP port nothing listens on right now. */
int th_free_port(void);
/* Rank of a role name: public/none 0, viewer 1, operator 2, admin 3 (unknown 0). */
int th_role_rank(const char *role);

/* Milliseconds since an arbitrary start. */
double th_now_ms(void);
void th_sleep_ms(int ms);

#endif
