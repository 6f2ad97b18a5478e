/* N replicas of qdb-control on one database, for the scale-out tests (issue 16, item 4):
 * start them together, spread clients over them, kill one with SIGKILL, stop the rest.
 * Header-only so that a test includes it beside harness.h. */
#ifndef QDB_TEST_REPLICAS_H
#define QDB_TEST_REPLICAS_H

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

#define TH_REPLICAS_MAX 8

struct th_replicas {
    struct th_server s[TH_REPLICAS_MAX];
    int n;
    int alive[TH_REPLICAS_MAX];
    unsigned next; /* round-robin cursor */
};

/* Start n replicas on `url` with `env` (NULL-terminated, may be NULL), all forked first and
 * then waited for (/readyz 200, up to 30 s each), so that they come up together as a
 * rollout would. Returns 0, or -1 (those started are killed). */
static inline int th_replicas_start(struct th_replicas *r, int n, const char *url,
                                    const char *const *env)
{
    memset(r, 0, sizeof *r);
    if (n < 1 || n > TH_REPLICAS_MAX)
        return -1;
    r->n = n;
    for (int i = 0; i < n; i++) {
        if (th_server_start(&r->s[i], url, env, 0) != 0)
            goto fail;
        r->alive[i] = 1;
    }
    for (int i = 0; i < n; i++) {
        int ready = 0;
        for (int k = 0; k < 300 && !ready; k++) {
            ready = th_status(&r->s[i], "GET", "/readyz", NULL) == 200;
            int st;
            if (!ready && waitpid(r->s[i].pid, &st, WNOHANG) == r->s[i].pid) {
                fprintf(stderr, "replica %d exited during start-up; log %s\n", i, r->s[i].log);
                r->s[i].pid = 0;
                r->alive[i] = 0;
                goto fail;
            }
            if (!ready)
                th_sleep_ms(100);
        }
        if (!ready) {
            fprintf(stderr, "replica %d not ready after 30 s; log %s\n", i, r->s[i].log);
            goto fail;
        }
    }
    return 0;
fail:
    for (int i = 0; i < n; i++)
        if (r->alive[i])
            th_server_kill(&r->s[i]);
    memset(r->alive, 0, sizeof r->alive);
    return -1;
}

/* The next live replica, round-robin (clients spread over all of them); NULL if none. */
static inline struct th_server *th_replicas_next(struct th_replicas *r)
{
    for (int tries = 0; tries < r->n; tries++) {
        int i = (int)(r->next++ % (unsigned)r->n);
        if (r->alive[i])
            return &r->s[i];
    }
    return NULL;
}

/* kill -9 replica i and reap it: no shutdown path runs (no lease released, no job given
 * back), as when a node dies. */
static inline void th_replicas_kill(struct th_replicas *r, int i)
{
    if (i < 0 || i >= r->n || !r->alive[i])
        return;
    th_server_kill(&r->s[i]);
    r->alive[i] = 0;
}

/* SIGTERM every live replica; returns the number that did not exit cleanly (each also
 * fails the test on a sanitizer report, see th_server_stop). */
static inline int th_replicas_stop(struct th_replicas *r)
{
    int unclean = 0;
    for (int i = 0; i < r->n; i++)
        if (r->alive[i]) {
            unclean += th_server_stop(&r->s[i]) != 0;
            r->alive[i] = 0;
        }
    return unclean;
}

#endif
