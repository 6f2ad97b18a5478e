/* How a room plugs into the process. main.c lists the modules and drives their life cycle:
 *
 *   serve:    config_load (every module) -> migrations -> init (every module) ->
 *             start (every module) -> HTTP listens -> [signal] -> quiesce (every module)
 *             -> HTTP drains and stops -> stop (every module, in reverse)
 *   command:  config_load and init of the modules the command names in `command_needs`
 *             (and nothing else) -> run_command
 *
 * Phase 1, `init`, registers what other rooms look up: job kinds and default schedules
 * (jobs_register_kind, jobs_schedule_ensure), metrics collectors, the HTTP hooks, the
 * state that the room's route handlers use. No thread is started and nothing waits on
 * another module. Phase 2, `start`, starts threads (workers, listeners, relays). Because
 * every init runs before any start, the order of the module list does not matter.
 *
 * A new room touches, besides its own folder:
 *   - one line in main.c's module list;
 *   - its rows in server/routes.c and its paths in api/openapi.yaml;
 *   - its migration(s) in migrations/ (its own tables only; default schedules through
 *     jobs_schedule_ensure in init, never by writing the jobs room's tables);
 *   - its error codes in platform/errors.h and errors.c;
 *   - its recipes in tests/integration/test_audit_routes.c;
 *   - its variables in README.md's configuration table;
 *   - its console page in web/. */
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
    /* Phase 1 (see above), after migrations: register kinds, schedules, hooks, metrics and
     * route state. Starts no thread. Returns 0, or -1 after logging why. May be NULL. */
    int (*init)(struct qdb_app *app);
    /* Phase 2: start the room's threads. Every module's init has run. Returns 0, or -1
     * after logging why (start-up fails). May be NULL. */
    int (*start)(struct qdb_app *app);
    /* Shutdown has begun (a signal): stop taking new work and start winding down, so that
     * the room's grace period runs beside HTTP's drain instead of after it (one
     * QDB_SHUTDOWN_TIMEOUT in all). Called for every started module before HTTP drains;
     * must not block. May be NULL. */
    void (*quiesce)(void);
    /* Stop the room after HTTP stopped; joins its threads and frees what init made. Called
     * for every module whose init ran, in reverse order. May be NULL. */
    void (*stop)(void);
    /* A subcommand this room provides ("token"), run instead of serving, with app->pool
     * set and migrations applied; argv[0] is the subcommand. Returns the exit status. */
    const char *command;
    int (*run_command)(struct qdb_app *app, int argc, char **argv);
    const char *command_usage; /* one line for `qdb-control help` */
    /* The modules (by name, NULL-terminated) whose config_load and init the command needs,
     * this module included when it needs its own; nothing else is loaded. */
    const char *const *command_needs;
};

#endif
