/* Secret references (inventory_secrets.c) and the names the inventory accepts: which
 * references QDB_SECRET_DIRS admits, that a symlink out of an allowed directory is refused
 * when the secret is read, and that a reason never holds the value. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "inventory/inventory_internal.h"
#include "unit.h"

int main(void)
{
    char dir[] = "/tmp/qdb-unit-secrets-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char dirs[512], path[600], outside[600], link_path[600], ref[700], err[256], out[64];
    snprintf(dirs, sizeof dirs, "%s,env:QDB_UNIT_S_", dir);
    setenv("QDB_SECRET_DIRS", dirs, 1);
    EXPECT(inv_secret_dirs_load() == 0, "QDB_SECRET_DIRS parses");

    snprintf(path, sizeof path, "%s/pg", dir);
    FILE *f = fopen(path, "w");
    fputs("value-1\n", f);
    fclose(f);
    snprintf(outside, sizeof outside, "%s-outside", dir);
    f = fopen(outside, "w");
    fputs("not-yours", f);
    fclose(f);
    snprintf(link_path, sizeof link_path, "%s/escape", dir);
    EXPECT(symlink(outside, link_path) == 0, "symlink made");

    snprintf(ref, sizeof ref, "file:%s", path);
    EXPECT(inventory_secret_ref_valid(ref, err, sizeof err) == 1, "a file in the dir: %s", err);
    EXPECT(inventory_secret_resolve(ref, out, sizeof out, err, sizeof err) == 0 &&
               strcmp(out, "value-1") == 0,
           "resolved without its newline: %s", err);
    inventory_secret_wipe(out, sizeof out);
    EXPECT(out[0] == 0 && out[5] == 0, "wiped");

    static const char *const refused[] = {"hunter2",  "file:relative/x",  "file:/etc/passwd",
                                          "env:HOME", "env:qdb_unit_s_x", "vault:secret/x",
                                          NULL};
    for (int i = 0; refused[i]; i++)
        EXPECT(inventory_secret_ref_valid(refused[i], err, sizeof err) == 0 &&
                   !strstr(err, refused[i] + (strncmp(refused[i], "file:", 5) ? 0 : 5)),
               "%s refused without quoting it: %s", refused[i], err);
    snprintf(ref, sizeof ref, "file:%s/../%s-outside", dir, strrchr(dir, '/') + 1);
    EXPECT(inventory_secret_ref_valid(ref, err, sizeof err) == 0, ".. refused");
    snprintf(ref, sizeof ref, "file:%s-outside", dir);
    EXPECT(inventory_secret_ref_valid(ref, err, sizeof err) == 0,
           "a sibling with the dir's name as prefix is refused");
    snprintf(ref, sizeof ref, "file:%s", link_path);
    EXPECT(inventory_secret_ref_valid(ref, err, sizeof err) == 1, "the link's own path is under");
    EXPECT(inventory_secret_resolve(ref, out, sizeof out, err, sizeof err) == -1 &&
               !strstr(err, "not-yours"),
           "but reading it out of the dir is refused: %s", err);

    setenv("QDB_UNIT_S_PG", "env-value", 1);
    EXPECT(inventory_secret_resolve("env:QDB_UNIT_S_PG", out, sizeof out, err, sizeof err) == 0 &&
               strcmp(out, "env-value") == 0,
           "env: resolved");
    EXPECT(inventory_secret_resolve("env:QDB_UNIT_S_NONE", out, sizeof out, err, sizeof err) == -1,
           "an unset variable");

    EXPECT(inv_name_is_kafka("cdc.advisory_main.users") && !inv_name_is_kafka("..") &&
               !inv_name_is_kafka("a b") && !inv_name_is_kafka(""),
           "Kafka names");
    EXPECT(inv_name_is_pg_ident("qdb_mpi") && !inv_name_is_pg_ident("1x") &&
               !inv_name_is_pg_ident("Qdb") && !inv_name_is_pg_ident("a;b"),
           "PostgreSQL names");

    setenv("QDB_SECRET_DIRS", "relative/dir", 1);
    EXPECT(inv_secret_dirs_load() == -1, "a relative directory is refused at start-up");

    unlink(link_path);
    unlink(path);
    unlink(outside);
    rmdir(dir);
    return unit_done();
}
