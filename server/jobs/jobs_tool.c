/* A tool run by a job's runner as a child process (pg_basebackup, pg_ctl, pg_rewind, ...):
 * its output goes line by line into the job's log while the runner keeps heartbeating, and
 * a job told to stop kills it. One seam for every room whose jobs run tools (backup, DR). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jobs/jobs.h"

/* Keep the last bytes of output, for the job's error message. */
static void tail_add(char *tail, size_t n, const char *line)
{
    if (!tail || n == 0)
        return;
    size_t have = strlen(tail), add = strlen(line) + 1;
    if (add >= n) {
        snprintf(tail, n, "%s", line + (add - n));
        return;
    }
    if (have + add >= n) {
        size_t drop = have + add - n + 1;
        memmove(tail, tail + drop, have - drop + 1);
        have -= drop;
    }
    snprintf(tail + have, n - have, "%s%s", have ? "\n" : "", line);
}

int jobs_run_tool(struct jobs_ctx *ctx, const char *const *argv, const char *password,
                  int as_postgres, char *tail, size_t tailn)
{
    if (tail && tailn)
        tail[0] = '\0';
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    const char *real[64];
    size_t n = 0;
    if (as_postgres && geteuid() == 0) {
        real[n++] = "/usr/sbin/runuser";
        real[n++] = "-u";
        real[n++] = "postgres";
        real[n++] = "--";
    }
    for (size_t i = 0; argv[i] && n < 63; i++)
        real[n++] = argv[i];
    real[n] = NULL;
    jobs_log(ctx, "info", "run: %s", argv[0]);
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        /* the child: its own process group (so that a stop kills the whole tree), output
         * into the pipe, no stdin, the password only in its own environment */
        setpgid(0, 0);
        /* main.c blocks SIGTERM, SIGINT and SIGHUP in every thread (the main thread waits
         * for them); a blocked mask survives exec, and the tool could then not be stopped
         * by the SIGTERM below. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        if (password)
            setenv("PGPASSWORD", password, 1);
        else
            unsetenv("PGPASSWORD");
        setenv("LC_ALL", "C", 1);
        execv(real[0], (char *const *)real);
        dprintf(2, "exec %s: %s\n", real[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    char buf[4096], line[1024];
    size_t ll = 0;
    int stopped = 0, open_pipe = 1;
    while (open_pipe) {
        struct pollfd pfd = {fds[0], POLLIN, 0};
        int pr = poll(&pfd, 1, 1000);
        if (pr > 0) {
            ssize_t got = read(fds[0], buf, sizeof buf);
            if (got <= 0) {
                open_pipe = 0;
            } else {
                for (ssize_t i = 0; i < got; i++) {
                    if (buf[i] == '\n' || ll == sizeof line - 1) {
                        line[ll] = '\0';
                        if (ll)
                            jobs_log(ctx, "info", "%s: %s", argv[0], line);
                        tail_add(tail, tailn, line);
                        ll = 0;
                    } else {
                        line[ll++] = buf[i];
                    }
                }
            }
        }
        if (!stopped && jobs_heartbeat(ctx) != 0) {
            stopped = 1;
            kill(-pid, SIGTERM);
        }
    }
    if (ll) {
        line[ll] = '\0';
        jobs_log(ctx, "info", "%s: %s", argv[0], line);
        tail_add(tail, tailn, line);
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (stopped)
        return -2;
    if (WIFEXITED(status)) {
        if (WEXITSTATUS(status) != 0)
            jobs_log(ctx, "error", "%s exited with status %d", argv[0], WEXITSTATUS(status));
        return WEXITSTATUS(status);
    }
    jobs_log(ctx, "error", "%s died of signal %d", argv[0],
             WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}
