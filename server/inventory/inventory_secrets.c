/* Secret references: what the inventory stores instead of a secret. A reference is checked
 * when it is written (only under QDB_SECRET_DIRS) and resolved only when a job or a plan
 * opens a connection to a target; the value lives in a caller's buffer for that connection
 * and is wiped after. Reasons never quote a value. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inventory/inventory_internal.h"
#include "platform/config.h"

#define MAX_PREFIXES 16

/* QDB_SECRET_DIRS, parsed once in config_load (before threads): directory prefixes for
 * file: references and name prefixes for env: references. */
static struct {
    char dirs[MAX_PREFIXES][PATH_MAX];
    int ndirs;
    char envs[MAX_PREFIXES][128];
    int nenvs;
} secret_dirs;

int inv_secret_dirs_load(void)
{
    const char *v = NULL;
    if (config_str("QDB_SECRET_DIRS", "/run/secrets,/var/run/secrets", &v) != 0)
        return -1;
    memset(&secret_dirs, 0, sizeof secret_dirs);
    const char *p = v;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0)
            return config_error("QDB_SECRET_DIRS", "an empty entry");
        if (n > 5 && strncmp(p, "env:", 4) == 0) {
            if (secret_dirs.nenvs == MAX_PREFIXES || n - 4 >= sizeof secret_dirs.envs[0])
                return config_error("QDB_SECRET_DIRS", "too many or too long env: prefixes");
            memcpy(secret_dirs.envs[secret_dirs.nenvs++], p + 4, n - 4);
        } else if (p[0] == '/') {
            if (secret_dirs.ndirs == MAX_PREFIXES || n >= sizeof secret_dirs.dirs[0] - 1)
                return config_error("QDB_SECRET_DIRS", "too many or too long directories");
            char *d = secret_dirs.dirs[secret_dirs.ndirs++];
            memcpy(d, p, n);
            /* a prefix is a directory: "/run/secrets" must not admit "/run/secrets-x" */
            if (d[n - 1] != '/')
                d[n] = '/';
        } else {
            return config_error("QDB_SECRET_DIRS",
                                "entries are absolute directories or env:PREFIX, comma-separated");
        }
        p = end ? end + 1 : p + n;
    }
    return 0;
}

static int under_dirs(const char *path)
{
    for (int i = 0; i < secret_dirs.ndirs; i++)
        if (strncmp(path, secret_dirs.dirs[i], strlen(secret_dirs.dirs[i])) == 0 &&
            path[strlen(secret_dirs.dirs[i])] != '\0')
            return 1;
    return 0;
}

int inventory_secret_ref_valid(const char *ref, char *err, size_t errlen)
{
    if (strncmp(ref, "file:", 5) == 0) {
        const char *path = ref + 5;
        if (path[0] != '/' || strstr(path, "/./") || strstr(path, "/../") || strstr(path, "//") ||
            (strlen(path) >= 2 && strcmp(path + strlen(path) - 2, "/.") == 0) ||
            (strlen(path) >= 3 && strcmp(path + strlen(path) - 3, "/..") == 0)) {
            snprintf(err, errlen, "a file: reference is an absolute path without . or .. segments");
            return 0;
        }
        if (!under_dirs(path)) {
            snprintf(err, errlen, "the file is not under a directory of QDB_SECRET_DIRS");
            return 0;
        }
        return 1;
    }
    if (strncmp(ref, "env:", 4) == 0) {
        const char *name = ref + 4;
        size_t n = strlen(name);
        for (size_t i = 0; i < n; i++) {
            char ch = name[i];
            if (!((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_')) {
                snprintf(err, errlen, "an env: reference names a variable of A-Z, 0-9 and _");
                return 0;
            }
        }
        for (int i = 0; i < secret_dirs.nenvs; i++)
            if (n > strlen(secret_dirs.envs[i]) &&
                strncmp(name, secret_dirs.envs[i], strlen(secret_dirs.envs[i])) == 0)
                return 1;
        snprintf(err, errlen,
                 "the variable's name does not start with an env: prefix of "
                 "QDB_SECRET_DIRS");
        return 0;
    }
    snprintf(err, errlen, "a secret is a reference, file:/path or env:NAME, never a value");
    return 0;
}

void inventory_secret_wipe(void *p, size_t n)
{
    volatile unsigned char *b = p;
    while (n--)
        *b++ = 0;
}

int inventory_secret_resolve(const char *ref, char *out, size_t outlen, char *err, size_t errlen)
{
    if (outlen)
        out[0] = '\0';
    if (!inventory_secret_ref_valid(ref, err, errlen))
        return -1;
    size_t len = 0;
    if (strncmp(ref, "env:", 4) == 0) {
        const char *v = getenv(ref + 4);
        if (!v) {
            snprintf(err, errlen, "secret %s: the variable is not set", ref);
            return -1;
        }
        len = strlen(v);
        if (len >= outlen) {
            snprintf(err, errlen, "secret %s: longer than %zu bytes", ref, outlen - 1);
            return -1;
        }
        memcpy(out, v, len + 1);
    } else {
        /* the real path must still lie under an allowed directory: a symlink placed in
         * the secrets folder must not reach a file outside it */
        char real[PATH_MAX];
        if (!realpath(ref + 5, real) || !under_dirs(real)) {
            snprintf(err, errlen, "secret %s: %s", ref,
                     errno == ENOENT ? "no such file" : "not readable under QDB_SECRET_DIRS");
            return -1;
        }
        int fd = open(real, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            snprintf(err, errlen, "secret %s: cannot open (%s)", ref, strerror(errno));
            return -1;
        }
        ssize_t n;
        while (len + 1 < outlen && (n = read(fd, out + len, outlen - 1 - len)) > 0)
            len += (size_t)n;
        char extra;
        int too_long = len + 1 >= outlen && read(fd, &extra, 1) == 1;
        close(fd);
        out[len] = '\0';
        if (too_long) {
            inventory_secret_wipe(out, outlen);
            snprintf(err, errlen, "secret %s: longer than %zu bytes", ref, outlen - 1);
            return -1;
        }
    }
    while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r'))
        out[--len] = '\0';
    return 0;
}
