/* PostgreSQL pairs for the DR tests (test_dr.c, test_audit_routes.c): servers on loopback
 * ports started by dr_pg.sh in a folder of their own, and a writer process that keeps
 * committing to whichever server is the primary. */
#ifndef QDB_TEST_DR_HELPERS_H
#define QDB_TEST_DR_HELPERS_H

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "harness.h"

struct dr_servers {
    char root[128];
};

static inline int dr_sh(const struct dr_servers *s, const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash %s/tests/integration/dr_pg.sh %s %s", QDB_SOURCE_DIR, args, "");
    (void)s;
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline int dr_servers_init(struct dr_servers *s)
{
    snprintf(s->root, sizeof s->root, "/tmp/qdb-test-dr-XXXXXX");
    return mkdtemp(s->root) ? 0 : -1;
}

/* "primary NAME PORT", "standby NAME PORT PRIMARY_PORT", "stop NAME" */
static inline int dr_server(const struct dr_servers *s, const char *verb, const char *name,
                            int port, int primary_port)
{
    char args[512];
    if (strcmp(verb, "stop") == 0)
        snprintf(args, sizeof args, "stop %s %s", s->root, name);
    else if (strcmp(verb, "standby") == 0)
        snprintf(args, sizeof args, "standby %s %s %d %d", s->root, name, port, primary_port);
    else
        snprintf(args, sizeof args, "primary %s %s %d", s->root, name, port);
    return dr_sh(s, args);
}

static inline void dr_servers_destroy(struct dr_servers *s)
{
    if (!s->root[0])
        return;
    char args[300], cmd[400];
    snprintf(args, sizeof args, "stopall %s", s->root);
    dr_sh(s, args);
    snprintf(cmd, sizeof cmd, "rm -rf %s", s->root);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", s->root);
    s->root[0] = '\0';
}

static inline char *dr_url(int port, const char *db)
{
    char *u = malloc(160);
    snprintf(u, 160, "postgresql://postgres@127.0.0.1:%d/%s", port, db);
    return u;
}

/* A child that commits one row every few milliseconds to whichever of the two servers takes
 * writes (libpq's target_session_attrs=read-write), reconnecting after each loss; it counts
 * its commits in the table itself. */
static inline pid_t dr_writer_start(int port_a, int port_b, const char *db)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    char ci[300];
    snprintf(ci, sizeof ci,
             "host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=%s "
             "target_session_attrs=read-write connect_timeout=2",
             port_a, port_b, db);
    PGconn *c = NULL;
    for (;;) {
        if (!c || PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            c = PQconnectdb(ci);
            if (PQstatus(c) != CONNECTION_OK) {
                usleep(20000);
                continue;
            }
        }
        PGresult *r = PQexec(c, "INSERT INTO dr_writes (at) VALUES (clock_timestamp())");
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            PQfinish(c);
            c = NULL;
        }
        PQclear(r);
        usleep(5000);
    }
}

static inline void dr_writer_stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

#endif
