/* Migration ordering and checksums (pure parts), and the embedded list itself. */
#include <string.h>

#include "platform/migrate.h"
#include "unit.h"

int main(void)
{
    char err[256];
    struct migration ok[] = {{1, "a", "x", 1}, {2, "b", "y", 1}, {5, "c", "z", 1}};
    EXPECT(migrate_check_order(ok, 3, err, sizeof err) == 0, "increasing with gaps is fine");
    struct migration dup[] = {{1, "a", "x", 1}, {1, "b", "y", 1}};
    EXPECT(migrate_check_order(dup, 2, err, sizeof err) == -1 && strstr(err, "0001_b"),
           "duplicate version refused: %s", err);
    struct migration desc[] = {{2, "a", "x", 1}, {1, "b", "y", 1}};
    EXPECT(migrate_check_order(desc, 2, err, sizeof err) == -1, "decreasing refused");
    struct migration zero[] = {{0, "a", "x", 1}};
    EXPECT(migrate_check_order(zero, 1, err, sizeof err) == -1, "version 0 refused");
    EXPECT(migrate_check_order(migrations_embedded, migrations_embedded_count, err,
                               sizeof err) == 0,
           "the embedded migrations are ordered: %s", err);

    char a[65], b[65];
    struct migration m1 = {1, "a", "CREATE TABLE t ()", 17};
    struct migration m2 = {1, "a", "CREATE TABLE t ();", 18};
    migrate_checksum(&m1, a);
    migrate_checksum(&m2, b);
    EXPECT(strlen(a) == 64 && strcmp(a, b) != 0, "one byte changes the checksum");
    struct migration empty = {1, "e", "", 0};
    migrate_checksum(&empty, a);
    EXPECT(strcmp(a, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0,
           "sha256 of nothing");
    /* a migration may name the checksums of its earlier texts that it supersedes */
    static const char sup_sql[] =
        "CREATE TABLE t ();\n"
        "-- qdb-migrate: supersedes e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n";
    struct migration sup = {1, "s", sup_sql, sizeof sup_sql - 1};
    migrate_checksum(&sup, a);
    EXPECT(migrate_checksum_accepted(&sup, a), "its own checksum");
    EXPECT(migrate_checksum_accepted(
               &sup, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
           "a superseded checksum");
    EXPECT(!migrate_checksum_accepted(
               &sup, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b856"),
           "another checksum refused");
    EXPECT(!migrate_checksum_accepted(&sup, "e3b0c44298fc1c149afbf4c8996fb924"),
           "a prefix refused");
    EXPECT(!migrate_checksum_accepted(&m1, b), "no supersedes line: only its own");
    for (size_t i = 0; i < migrations_embedded_count; i++)
        EXPECT(strlen(migrations_embedded[i].sql) == migrations_embedded[i].len,
               "migration %d embedded whole", migrations_embedded[i].version);
    return unit_done();
}
