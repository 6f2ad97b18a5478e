/* The rollout shape of the Deployment: three replicas started together on one empty
 * database (each applies migrations at start-up, under the advisory lock) all come up, every
 * migration is applied once, and a replica killed with SIGKILL leaves the others serving.
 * The scale-out proof of issue 16 (jobs, schedules, relay, invalidation across replicas)
 * builds on the same helpers (replicas.h). */
#include <stdlib.h>

#include "harness.h"
#include "replicas.h"

int main(void)
{
    char *url = th_db_create("deploy_replicas");
    struct th_replicas r;
    th_step("three replicas start together on one empty database");
    int up = th_replicas_start(&r, 3, url, NULL) == 0;
    CHECK(up, "all three are ready");
    if (up) {
        long applied = th_sql_long(url, "SELECT count(*) FROM schema_migrations", NULL);
        long distinct =
            th_sql_long(url, "SELECT count(DISTINCT version) FROM schema_migrations", NULL);
        CHECK(applied > 0 && applied == distinct,
              "each migration applied once (%ld rows, %ld versions)", applied, distinct);
        int served = 0;
        for (int i = 0; i < 6; i++)
            served += th_status(th_replicas_next(&r), "GET", "/readyz", NULL) == 200;
        CHECK(served == 6, "clients spread over the three are served (%d of 6)", served);

        th_step("kill -9 one replica: the others keep serving");
        th_replicas_kill(&r, 1);
        CHECK(th_status(&r.s[1], "GET", "/healthz", NULL) == 0, "the killed one answers nothing");
        served = 0;
        for (int i = 0; i < 4; i++)
            served += th_status(th_replicas_next(&r), "GET", "/readyz", NULL) == 200;
        CHECK(served == 4, "the two left answer every request (%d of 4)", served);
        CHECK(th_replicas_stop(&r) == 0, "the two left stop cleanly");
    }
    th_db_drop(url);
    free(url);
    return th_done();
}
