/* How a room plugs into the process: main.c lists the modules and drives their life cycle
 * (config -> start -> [serve] -> stop). Adding a room is adding its module to that list,
 * its routes to routes.c and its migrations; the core does not change. */
#ifndef QDB_MODULE_H
#define QDB_MODULE_H

#include "platform/config.h"
#include "platform/db.h"

struct qdb_app {
    const struct config *cfg;
    struct db_pool *pool; /* the shared pool (NULL for commands that do not serve) */
    const char *instance_id; /* "<hostname>-<pid>-<random>", unique per process */
};

struct qdb_module {
    const char *name;
    /* Read and validate the room's environment variables. Returns 0, or -1 after printing
     * "qdb-control: VAR: reason" (the process exits 2). May be NULL. */
    int (*config_load)(void);
    /* Start the room (threads, caches, hooks) after migrations, before HTTP listens.
     * Returns 0, or -1 after logging why (start-up fails). May be NULL. */
    int (*start)(struct qdb_app *app);
    /* Stop the room after HTTP stopped; joins its threads. May be NULL. */
    void (*stop)(void);
    /* A subcommand this room provides ("token"), run instead of serving, with app->pool
     * set and migrations applied; argv[0] is the subcommand. Returns the exit status. */
    const char *command;
    int (*run_command)(struct qdb_app *app, int argc, char **argv);
    const char *command_usage; /* one line for `qdb-control help` */
};

#endif
