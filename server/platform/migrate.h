/* Forward-only schema migrations, compiled into the binary from migrations/NNNN_name.sql
 * (see cmake/embed_migrations.cmake). Applied in version order, each in its own transaction,
 * under a PostgreSQL advisory lock so that replicas starting together apply them once;
 * recorded in schema_migrations(version, name, checksum, applied_at). */
#ifndef QDB_PLATFORM_MIGRATE_H
#define QDB_PLATFORM_MIGRATE_H

#include <stddef.h>

#include "platform/db.h"

struct migration {
    int version;
    const char *name;
    const char *sql; /* NUL-terminated */
    size_t len;
};

extern const struct migration migrations_embedded[];
extern const size_t migrations_embedded_count;

/* Check that `list` is strictly increasing by version with no duplicates. Returns 0, or -1
 * with a reason in err. Pure; exposed for unit tests. */
int migrate_check_order(const struct migration *list, size_t n, char *err, size_t errlen);
/* Hex SHA-256 of a migration's text into out (65 bytes). */
void migrate_checksum(const struct migration *m, char out[65]);

/* Whether `sum` (from schema_migrations) is m's checksum, or one that m declares it
 * supersedes with a line "-- qdb-migrate: supersedes <sha256 hex>". Such a line is for the
 * rare edit that leaves every database it was applied to in the state that the new text
 * makes (say why in the migration). Pure; exposed for unit tests. */
int migrate_checksum_accepted(const struct migration *m, const char *sum);

/* Apply the pending embedded migrations on `conn`. Refuses (returns -1 with a reason in err)
 * when an applied migration's checksum differs from the binary's, or the database has a
 * version the binary does not know. Returns the number applied (>= 0). */
int migrate_apply(struct db_conn *conn, char *err, size_t errlen);

/* Whether the database is at exactly the binary's latest version: 0 when current, 1 when
 * behind or ahead (reason in err), or a DB_ error code. Used by /readyz. */
int migrate_status(struct db_conn *conn, char *err, size_t errlen);

/* The highest version compiled into the binary. */
int migrate_latest_version(void);

#endif
