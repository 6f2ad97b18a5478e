/* The unpack of a base backup's base.tar.gz that checks the manifest's checksums as it
 * goes (bk_unpack_base), for backup.verify and backup.restore.
 *
 * pg_verifybackup reads every unpacked file back to compare its SHA-256 with the
 * manifest's: at scale 50 that is a second pass over 750 MB after the unpack. Here gzip -dc
 * feeds a thread that parses the tar stream, hashes each member against its manifest entry
 * and writes it itself: gunzip on one core, hashing and writing on the other. Writing the
 * members here rather than through tar -x saves a pipe and a process on the path of every
 * byte, so that the checked unpack takes about the time of gunzip alone, less than a plain
 * tar -xzf. When every file of the manifest was seen and matched, pg_verifybackup then
 * runs with --skip-checksums (it still checks the manifest's own checksum, that every file
 * is there with its size and none is extra, and parses the WAL).
 *
 * The writer knows what pg_basebackup's tar format holds: regular files, directories and
 * symbolic links (pg_tblspc), in ustar headers. On any other member (an extended header, a
 * hard link, a device) it stops, and the archive is unpacked again by tar -x, with every
 * checksum left to pg_verifybackup. Names are checked before anything is written: none
 * absolute, none with a ".." component, none under a symbolic link of the archive, and no
 * symbolic link that points out of the folder. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "backup/backup_internal.h"

#define READ_CHUNK (1 << 18)

struct tar_unpack {
    int in;           /* gzip's output */
    const char *dest; /* the folder the members are written into */
    json_t *files;    /* manifest path -> {Size, Checksum-Algorithm, Checksum} */
    json_t *links;    /* the archive's symbolic links so far: name -> true */
    size_t matched;   /* regular members that matched their manifest entry */
    int mismatch;     /* a checksum or size differs (detail says) */
    int unknown;      /* a file not checked against the manifest */
    int unsupported;  /* a member this writer does not write (detail says) */
    int refused;      /* a member whose name would escape dest (detail says) */
    int write_errno;  /* writing into dest failed (detail says) */
    char detail[700];
    atomic_int done;
};

static uint64_t tar_number(const unsigned char *f, size_t n)
{
    uint64_t v = 0;
    if (f[0] & 0x80) { /* base-256 (sizes beyond 8 GB) */
        v = f[0] & 0x7f;
        for (size_t i = 1; i < n; i++)
            v = (v << 8) | f[i];
        return v;
    }
    for (size_t i = 0; i < n && f[i]; i++)
        if (f[i] >= '0' && f[i] <= '7')
            v = v * 8 + (uint64_t)(f[i] - '0');
    return v;
}

/* The member's digest against the manifest's. */
static void member_done(struct tar_unpack *tu, EVP_MD_CTX *md, const char *name, const char *want)
{
    unsigned char d[32];
    unsigned int dl = 0;
    char hex[65];
    EVP_DigestFinal_ex(md, d, &dl);
    for (unsigned k = 0; k < 32; k++)
        snprintf(hex + 2 * k, 3, "%02x", d[k]);
    if (strcasecmp(hex, want) == 0) {
        tu->matched++;
    } else if (!tu->mismatch) {
        tu->mismatch = 1;
        snprintf(tu->detail, sizeof tu->detail, "%.300s: SHA-256 %s, the manifest says %.64s", name,
                 hex, want);
    }
}

/* 0 when `name` (the archive's, "./" already taken off) stays inside dest: not absolute,
 * no ".." component, and no earlier symbolic link of the archive as one of its parents. */
static int name_is_safe(struct tar_unpack *tu, const char *name)
{
    if (!name[0] || name[0] == '/')
        return -1;
    for (const char *p = name; *p;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.')
            return -1;
        if (slash) {
            char parent[512];
            size_t plen = (size_t)(slash - name);
            if (plen >= sizeof parent)
                return -1;
            memcpy(parent, name, plen);
            parent[plen] = '\0';
            if (json_object_get(tu->links, parent))
                return -1;
        }
        p = slash ? slash + 1 : p + len;
    }
    return 0;
}

/* Whether a symbolic link `name` (inside dest) to `target` points out of dest: an
 * absolute target, or more ".." than the link's own depth. The server started from the
 * folder would follow it (a pg_wal linked to a live cluster's, say). */
static int link_escapes(const char *name, const char *target)
{
    if (target[0] == '/' || !target[0])
        return 1;
    int depth = 0;
    for (const char *c = name; *c; c++)
        depth += *c == '/';
    for (const char *p = target; *p;) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 2 && p[0] == '.' && p[1] == '.') {
            if (--depth < 0)
                return 1;
        } else if (len && !(len == 1 && p[0] == '.')) {
            depth++;
        }
        p = slash ? slash + 1 : p + len;
    }
    return 0;
}

static void write_failed(struct tar_unpack *tu, const char *what, const char *name)
{
    if (!tu->write_errno) {
        tu->write_errno = errno ? errno : EIO;
        snprintf(tu->detail, sizeof tu->detail, "%s %.300s: %s", what, name,
                 strerror(tu->write_errno));
    }
}

/* Open a regular member for writing, making its parent folders when the archive did not
 * list them first. The descriptor, or -1. */
static int open_member(struct tar_unpack *tu, const char *path, const char *name)
{
    int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW;
    int fd = open(path, flags, 0600);
    if (fd < 0 && errno == ENOENT) {
        char parent[1400];
        snprintf(parent, sizeof parent, "%s", path);
        char *slash = strrchr(parent, '/');
        if (slash) {
            *slash = '\0';
            if (bk_mkdirs(parent, 0700) == 0)
                fd = open(path, flags, 0600);
        }
    }
    if (fd < 0)
        write_failed(tu, "creating", name);
    return fd;
}

static void write_all(struct tar_unpack *tu, int fd, const unsigned char *p, size_t n,
                      const char *name)
{
    while (n > 0 && !tu->write_errno) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = ENOSPC;
            write_failed(tu, "writing", name);
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* A member header: where its data goes (*fd, -1 for none) and which digest it must have
 * (*want, NULL: none). 0 to go on, -1 to stop reading (tu says why). */
static int member_begin(struct tar_unpack *tu, const unsigned char *hdr, uint64_t size, char *name,
                        size_t namelen, EVP_MD_CTX *md, int *fd, const char **want)
{
    char type = (char)hdr[156];
    char nm[101], prefix[156], raw[300];
    memcpy(nm, hdr, 100);
    nm[100] = '\0';
    memcpy(prefix, hdr + 345, 155);
    prefix[155] = '\0';
    if (memcmp(hdr + 257, "ustar", 5) == 0 && prefix[0])
        snprintf(raw, sizeof raw, "%s/%s", prefix, nm);
    else
        snprintf(raw, sizeof raw, "%s", nm);
    const char *clean = raw;
    while (clean[0] == '.' && clean[1] == '/')
        clean += 2;
    size_t cl = strlen(clean);
    snprintf(name, namelen, "%.*s", (int)(cl && clean[cl - 1] == '/' ? cl - 1 : cl), clean);
    *fd = -1;
    *want = NULL;
    if (type != '0' && type != '\0' && type != '5' && type != '2') {
        tu->unsupported = 1;
        snprintf(tu->detail, sizeof tu->detail, "member %.300s of tar type '%c'", raw,
                 type ? type : '0');
        return -1;
    }
    if (!name[0] && type == '5')
        return 0; /* "./" itself: dest */
    if (name_is_safe(tu, name) != 0) {
        tu->refused = 1;
        snprintf(tu->detail, sizeof tu->detail,
                 "base.tar.gz: member %.300s would be written outside the restore folder", raw);
        return -1;
    }
    char path[1400];
    snprintf(path, sizeof path, "%s/%s", tu->dest, name);
    if (type == '5') {
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            write_failed(tu, "creating the folder", name);
        return tu->write_errno ? -1 : 0;
    }
    if (type == '2') {
        char target[101];
        memcpy(target, hdr + 157, 100);
        target[100] = '\0';
        if (link_escapes(name, target)) {
            tu->refused = 1;
            snprintf(tu->detail, sizeof tu->detail,
                     "base.tar.gz: member %.300s links outside the restore folder (to %.100s)",
                     raw, target);
            return -1;
        }
        if (symlink(target, path) != 0)
            write_failed(tu, "creating the symbolic link", name);
        json_object_set_new_nocheck(tu->links, name, json_true()); /* any bytes */
        return tu->write_errno ? -1 : 0;
    }
    json_t *e = json_object_get(tu->files, name);
    const char *alg = json_string_value(json_object_get(e, "Checksum-Algorithm"));
    *want = alg && strcmp(alg, "SHA256") == 0 ? json_string_value(json_object_get(e, "Checksum"))
                                              : NULL;
    uint64_t expect = (uint64_t)json_integer_value(json_object_get(e, "Size"));
    if (!*want) {
        tu->unknown++;
    } else if (expect != size) {
        if (!tu->mismatch) {
            tu->mismatch = 1;
            snprintf(tu->detail, sizeof tu->detail, "%.300s: %llu bytes, the manifest says %llu",
                     name, (unsigned long long)size, (unsigned long long)expect);
        }
        *want = NULL;
    }
    *fd = open_member(tu, path, name);
    if (*fd < 0)
        return -1;
    if (*want) {
        EVP_DigestInit_ex(md, EVP_sha256(), NULL);
        if (size == 0) { /* an empty file: its digest now */
            member_done(tu, md, name, *want);
            *want = NULL;
        }
    }
    return 0;
}

static void *unpack_main(void *arg)
{
    struct tar_unpack *tu = arg;
    unsigned char hdr[512], *buf = malloc(READ_CHUNK);
    size_t hlen = 0;
    uint64_t remaining = 0, pad = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    const char *want = NULL; /* the current member's manifest checksum, NULL: not hashed */
    char name[512] = "";
    int fd = -1, stop = !buf || !md, end = 0;
    if (stop)
        snprintf(tu->detail, sizeof tu->detail, "out of memory");
    ssize_t got;
    while (!stop && (got = read(tu->in, buf, READ_CHUNK)) != 0) {
        if (got < 0) {
            if (errno == EINTR)
                continue;
            write_failed(tu, "reading gzip's output for", "base.tar.gz");
            break;
        }
        for (ssize_t i = 0; i < got && !stop;) {
            size_t avail = (size_t)(got - i);
            if (remaining > 0) {
                size_t take = avail < remaining ? avail : (size_t)remaining;
                if (want)
                    EVP_DigestUpdate(md, buf + i, take);
                if (fd >= 0)
                    write_all(tu, fd, buf + i, take, name);
                i += (ssize_t)take;
                remaining -= take;
                if (remaining == 0) {
                    if (want)
                        member_done(tu, md, name, want);
                    want = NULL;
                    if (fd >= 0 && close(fd) != 0)
                        write_failed(tu, "closing", name);
                    fd = -1;
                }
                stop = tu->write_errno != 0;
                continue;
            }
            if (pad > 0) {
                size_t take = avail < pad ? avail : (size_t)pad;
                i += (ssize_t)take;
                pad -= take;
                continue;
            }
            if (end) { /* past the end-of-archive blocks: gzip's padding, read to its end */
                i = got;
                continue;
            }
            size_t take = avail < 512 - hlen ? avail : 512 - hlen;
            memcpy(hdr + hlen, buf + i, take);
            hlen += take;
            i += (ssize_t)take;
            if (hlen < 512)
                continue;
            hlen = 0;
            int zero = 1;
            for (int k = 0; k < 512 && zero; k++)
                zero = hdr[k] == 0;
            if (zero) {
                end = 1;
                continue;
            }
            uint64_t size = tar_number(hdr + 124, 12);
            remaining = hdr[156] == '5' || hdr[156] == '2' ? 0 : size;
            pad = (512 - remaining % 512) % 512;
            if (member_begin(tu, hdr, size, name, sizeof name, md, &fd, &want) != 0)
                stop = 1;
        }
    }
    if (!stop && (remaining || !end))
        tu->unknown++; /* the stream ended inside a member, or before the archive's end */
    if (fd >= 0)
        close(fd);
    EVP_MD_CTX_free(md);
    free(buf);
    close(tu->in); /* gzip, when we stopped early, gets SIGPIPE */
    atomic_store(&tu->done, 1);
    return NULL;
}

/* fork + exec argv with stdin from in_fd and stdout to out_fd (-1: /dev/null), stderr
 * appended to errpath. Everything is prepared before the fork. The child's pid, or -1. */
static pid_t spawn_piped(const char *const *argv, int in_fd, int out_fd, const char *errpath)
{
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    int err = open(errpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    pid_t pid = nul >= 0 && err >= 0 ? fork() : -1;
    if (pid == 0) {
        setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL); /* the server ignores it; a tool in a pipe must not */
        dup2(in_fd >= 0 ? in_fd : nul, 0);
        dup2(out_fd >= 0 ? out_fd : nul, 1);
        dup2(err, 2);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (nul >= 0)
        close(nul);
    if (err >= 0)
        close(err);
    return pid;
}

static int wait_child(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

static void read_tail(const char *path, char *out, size_t n)
{
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t got = fread(out, 1, n - 1, f);
    out[got] = '\0';
    fclose(f);
}

/* The archive again through tar -x into an emptied dest, for what the writer does not
 * write; every checksum is then pg_verifybackup's. */
static int unpack_with_tar(struct jobs_ctx *ctx, const char *tarball, const char *dest,
                           char *detail, size_t n)
{
    char tail[800];
    if (bk_remove_tree(dest) != 0 || bk_mkdirs(dest, 0700) != 0) {
        snprintf(detail, n, "emptying %.600s: %s", dest, strerror(errno));
        return -1;
    }
    const char *untar[] = {"/bin/tar", "-xzf", tarball, "-C", dest, NULL};
    int rc = jobs_run_tool(ctx, untar, NULL, 0, tail, sizeof tail);
    if (rc == -2) {
        snprintf(detail, n, "stopped");
        return -2;
    }
    if (rc != 0) {
        snprintf(detail, n, "unpacking base.tar.gz: %.700s", tail);
        return -1;
    }
    return 0;
}

int bk_unpack_base(struct jobs_ctx *ctx, const char *tarball, const char *manifest,
                   const char *dest, const char *errpath, int *all_checked, char *detail, size_t n)
{
    *all_checked = 0;
    json_error_t jerr;
    json_t *m = json_load_file(manifest, 0, &jerr);
    struct tar_unpack tu = {.in = -1, .dest = dest};
    tu.files = json_object();
    tu.links = json_object();
    size_t i, nfiles = 0;
    json_t *f;
    json_array_foreach(json_object_get(m, "Files"), i, f)
    {
        const char *p = json_string_value(json_object_get(f, "Path"));
        if (p) {
            json_object_set_nocheck(tu.files, p, f);
            nfiles++;
        }
    }
    json_decref(m);
    int a[2] = {-1, -1};
    pid_t gz = -1;
    int rc = -1;
    if (pipe2(a, O_CLOEXEC) != 0) {
        snprintf(detail, n, "pipe: %s", strerror(errno));
        goto out;
    }
    /* a pipe of 1 MB rather than 64 kB: gzip and the writer then run side by side on their
     * cores instead of waking each other every 64 kB (best effort: the default works) */
    (void)fcntl(a[1], F_SETPIPE_SZ, 1 << 20);
    const char *gzip[] = {"/bin/gzip", "-dc", tarball, NULL};
    jobs_log(ctx, "info",
             "run: /bin/gzip -dc base.tar.gz | (each member written, its SHA-256 "
             "checked against the manifest)");
    gz = spawn_piped(gzip, -1, a[1], errpath);
    close(a[1]);
    a[1] = -1;
    if (gz < 0) {
        snprintf(detail, n, "could not start gzip: %s", strerror(errno));
        goto out;
    }
    tu.in = a[0];
    pthread_t th;
    if (pthread_create(&th, NULL, unpack_main, &tu) != 0) {
        snprintf(detail, n, "could not start the unpacking thread");
        goto out;
    }
    a[0] = -1; /* the thread closes it */
    int stopped = 0;
    for (int k = 0; !atomic_load(&tu.done); k++) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
        if (k % 20 == 19 && !stopped && jobs_heartbeat(ctx) != 0) {
            stopped = 1;
            kill(-gz, SIGTERM);
        }
    }
    pthread_join(th, NULL);
    int grc = wait_child(gz);
    gz = -1;
    if (stopped) {
        snprintf(detail, n, "stopped");
        rc = -2;
    } else if (tu.mismatch || tu.refused) {
        snprintf(detail, n, "%s", tu.detail);
    } else if (tu.unsupported) {
        jobs_log(ctx, "warn",
                 "base.tar.gz holds a %s, which this unpacker does not write: "
                 "unpacking it with tar, pg_verifybackup checks every file",
                 tu.detail);
        rc = unpack_with_tar(ctx, tarball, dest, detail, n);
    } else if (tu.write_errno) {
        snprintf(detail, n, "unpacking base.tar.gz: %s", tu.detail);
    } else if (grc != 0) {
        char tail[600];
        read_tail(errpath, tail, sizeof tail);
        snprintf(detail, n, "unpacking base.tar.gz: gzip exited with %d: %.500s", grc, tail);
    } else {
        *all_checked = tu.unknown == 0 && tu.matched == nfiles && nfiles > 0;
        jobs_log(ctx, "info",
                 "base.tar.gz unpacked: %zu of the manifest's %zu files matched "
                 "their SHA-256%s",
                 tu.matched, nfiles, *all_checked ? "" : " (pg_verifybackup checks them all)");
        rc = 0;
    }
out:
    for (int k = 0; k < 2; k++)
        if (a[k] >= 0)
            close(a[k]);
    if (gz > 0) {
        kill(-gz, SIGKILL);
        wait_child(gz);
    }
    json_decref(tu.files);
    json_decref(tu.links);
    return rc;
}
