/* Schedules with 2 replicas: one leader; missed runs fire once (not N times); the leader
 * killed -> the other takes over within one lease; a "* * * * *" schedule fires exactly once
 * at a real minute boundary; disabled schedules do not fire. */
#include <time.h>

#include "jobs_helpers.h"

static const char *const env[] = {"QDB_WORKERS=2", "QDB_JOB_LEASE_SECONDS=3",
                                  "QDB_JOB_SCHEDULE_TICK_MS=200", NULL};

static long fired(const char *url)
{
    return th_sql_long(url, "SELECT count(*) FROM job WHERE created_by = 'schedule:every-minute'",
                       NULL);
}

static void leader(const char *url, char *out, size_t n)
{
    PGresult *r = th_sql(url,
                         "SELECT holder FROM job_leader WHERE name = 'schedule' AND "
                         "lease_until > now()",
                         NULL);
    snprintf(out, n, "%s", r && PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
}

int main(void)
{
    char *url = th_db_create("jobs_cron");
    struct th_server s[2];
    int up = th_server_start(&s[0], url, env, 1) == 0;
    up = up && th_server_start(&s[1], url, env, 1) == 0;
    CHECK(up, "two replicas start");
    char *op = up ? th_dev_token(&s[0], "operator") : NULL;
    if (!op)
        goto out;

    th_step("one leader; it computes next_run_at of schedules that have none");
    th_sleep_ms(600);
    char who[160];
    leader(url, who, sizeof who);
    long pid = jt_instance_pid(who);
    CHECK(pid == (long)s[0].pid || pid == (long)s[1].pid, "leader is a replica: %s", who);
    CHECK(th_sql_long(url, "SELECT count(*) FROM job_leader", NULL) == 1, "one leader row");
    CHECK(jt_wait_sql(url,
                      "SELECT count(*) FROM schedule WHERE name = 'audit-verify-daily' AND "
                      "next_run_at > now()",
                      1, 3000) == 1,
          "a schedule inserted without next_run_at gets one");

    th_step("missed runs fire once, not once per missed minute");
    /* the rounds below take a few seconds: keep clear of a real minute boundary, at which
     * the schedule would (rightly) fire once more */
    if (time(NULL) % 60 > 45)
        th_sleep_ms((int)(62 - time(NULL) % 60) * 1000);
    struct th_resp r;
    long st = jt_post(&s[0], "/api/v1/schedules", op,
                      "{\"name\":\"every-minute\",\"cron\":\"* * * * *\",\"kind\":\"noop\","
                      "\"args\":{\"log\":true}}",
                      NULL, &r);
    CHECK(st == 201, "schedule created: %ld %s", st, r.body);
    th_resp_free(&r);
    CHECK(fired(url) == 0, "nothing fired before its time");
    for (int round = 1; round <= 3; round++) {
        PQclear(th_sql(url,
                       "UPDATE schedule SET next_run_at = now() - interval '10 minutes' "
                       "- $1::int * interval '1 second' WHERE name = 'every-minute'",
                       round == 1 ? "0" : (round == 2 ? "7" : "13"), NULL));
        long n = 0;
        double end = th_now_ms() + 5000;
        while ((n = fired(url)) < round && th_now_ms() < end)
            th_sleep_ms(50);
        th_sleep_ms(1000); /* several leader ticks on both replicas */
        n = fired(url);
        CHECK(n == round, "round %d: exactly one fire for 10 missed minutes (total %ld)", round, n);
        CHECK(th_sql_long(url,
                          "SELECT count(*) FROM schedule WHERE name = 'every-minute' AND "
                          "next_run_at > now() AND next_run_at <= now() + interval '60 seconds' "
                          "AND extract(second FROM next_run_at) = 0 AND last_fired_at IS NOT NULL "
                          "AND last_job_id = (SELECT max(id) FROM job WHERE created_by = "
                          "'schedule:every-minute')",
                          NULL) == 1,
              "round %d: next run is the next minute boundary; last_job_id set", round);
    }
    CHECK(th_sql_long(url,
                      "SELECT count(DISTINCT idempotency_key) FROM job WHERE created_by = "
                      "'schedule:every-minute'",
                      NULL) == 3,
          "one job per slot");
    CHECK(jt_wait_sql(url,
                      "SELECT count(*) FROM job WHERE created_by = 'schedule:every-minute' "
                      "AND state = 'succeeded'",
                      3, 5000) == 3,
          "fired jobs ran");

    th_step("leader killed -> the other replica takes over within one lease");
    leader(url, who, sizeof who);
    pid = jt_instance_pid(who);
    int dead = pid == (long)s[0].pid ? 0 : 1;
    double t0 = th_now_ms();
    th_server_kill(&s[dead]);
    char now_who[160] = "";
    for (;;) {
        leader(url, now_who, sizeof now_who);
        if ((now_who[0] && strcmp(now_who, who) != 0) || th_now_ms() - t0 > 10000)
            break;
        th_sleep_ms(50);
    }
    double took = (th_now_ms() - t0) / 1000.0;
    fprintf(stderr, "   new leader after %.1f s\n", took);
    CHECK(jt_instance_pid(now_who) == (long)s[1 - dead].pid, "the survivor leads: %s", now_who);
    CHECK(took <= 3.0 + 2.0, "within one lease (3 s) plus a tick and slack: %.1f s", took);
    PQclear(th_sql(url,
                   "UPDATE schedule SET next_run_at = now() - interval '1 hour' "
                   "WHERE name = 'every-minute'",
                   NULL));
    long before = fired(url);
    CHECK(jt_wait_sql(url, "SELECT count(*) FROM job WHERE created_by = 'schedule:every-minute'",
                      before + 1, 5000) == before + 1,
          "the new leader fires");
    /* bring the second replica back: the minute test runs with two */
    CHECK(th_server_start(&s[dead], url, env, 1) == 0, "replica restarts");

    th_step("a real minute boundary: fired exactly once with 2 replicas");
    long slot = th_sql_long(url,
                            "SELECT extract(epoch FROM next_run_at)::bigint FROM schedule "
                            "WHERE name = 'every-minute'",
                            NULL);
    before = fired(url);
    long wait_ms = (slot - (long)time(NULL)) * 1000 + 2500;
    fprintf(stderr, "   waiting %.1f s for the minute\n", (double)wait_ms / 1000);
    if (wait_ms > 0 && wait_ms < 65000)
        th_sleep_ms((int)wait_ms);
    char key[96], slot_s[32];
    snprintf(key, sizeof key, "schedule:every-minute:%ld", slot);
    snprintf(slot_s, sizeof slot_s, "%ld", slot);
    CHECK(th_sql_long(url, "SELECT count(*) FROM job WHERE idempotency_key = $1", key, NULL) == 1,
          "the slot fired once");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM job WHERE idempotency_key = $1 AND "
                      "created_at >= to_timestamp($2::bigint) AND "
                      "created_at < to_timestamp($2::bigint) + interval '2 seconds'",
                      key, slot_s, NULL) == 1,
          "at its minute (within a tick)");
    CHECK(fired(url) == before + 1, "one fire in all (%ld -> %ld)", before, fired(url));

    th_step("disabled schedules do not fire");
    free(op); /* dev tokens are bound to the issuing replica */
    op = th_dev_token(&s[1 - dead], "operator");
    st = jt_patch(&s[1 - dead], "/api/v1/schedules/every-minute", op, "{\"enabled\":false}", &r);
    CHECK(st == 200, "disable: %ld", st);
    th_resp_free(&r);
    PQclear(th_sql(url,
                   "UPDATE schedule SET next_run_at = now() - interval '1 hour' "
                   "WHERE name = 'every-minute'",
                   NULL));
    before = fired(url);
    th_sleep_ms(1500);
    CHECK(fired(url) == before, "no fire while disabled");
    st = jt_patch(&s[1 - dead], "/api/v1/schedules/every-minute", op, "{\"enabled\":true}", &r);
    CHECK(st == 200, "enable: %ld", st);
    th_resp_free(&r);
    th_sleep_ms(1000);
    CHECK(fired(url) == before, "re-enabling starts from now: the missed run does not fire");
out:
    free(op);
    for (int i = 0; i < 2; i++)
        if (s[i].pid > 0)
            CHECK(th_server_stop(&s[i]) == 0, "replica %d stops cleanly", i);
    th_db_drop(url);
    free(url);
    return th_done();
}
