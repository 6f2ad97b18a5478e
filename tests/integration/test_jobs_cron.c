/* Schedules with 2 replicas: one leader; a schedule without a next run gets one; missed runs
 * fire once (not N times); the leader killed -> the other takes over within one lease; a
 * run due in a moment fires exactly once at its time with 2 replicas; disabled schedules do
 * not fire.
 *
 * Time is driven through the data, not waited for: the test writes next_run_at (a run
 * missed long ago, or due in two seconds), and a schedule's cron matches only minutes of an
 * hour that is two hours past, so that no real minute boundary during the test can fire it
 * while the missed minutes still match it. "Nothing fired" is checked after two more ticks
 * of the leader (its job_leader row is renewed on each), which is after at least one whole
 * look at the due schedules. */
#include <time.h>

#include "jobs_helpers.h"

static const char *const env[] = {"QDB_WORKERS=2", "QDB_JOB_LEASE_SECONDS=3",
                                  "QDB_JOB_SCHEDULE_TICK_MS=200", NULL};

static long fired(const char *url)
{
    return th_sql_long(url, "SELECT count(*) FROM job WHERE created_by = 'schedule:past-hour'",
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

static void leader_lease(const char *url, char *out, size_t n)
{
    PGresult *r =
        th_sql(url, "SELECT lease_until::text FROM job_leader WHERE name = 'schedule'", NULL);
    snprintf(out, n, "%s", r && PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
}

/* Wait until the leader has renewed its row `ticks` more times (each tick renews it, then
 * looks at the due schedules). Returns 1, or 0 after 10 s. */
static int leader_ticks(const char *url, int ticks)
{
    char last[64], now[64];
    leader_lease(url, last, sizeof last);
    double end = th_now_ms() + 10000;
    while (ticks > 0 && th_now_ms() < end) {
        th_sleep_ms(20);
        leader_lease(url, now, sizeof now);
        if (strcmp(now, last) != 0) {
            ticks--;
            snprintf(last, sizeof last, "%s", now);
        }
    }
    return ticks == 0;
}

/* The start of the hour the schedule runs in (unix seconds, text), two hours before the
 * test began: all its minutes are past, and the next one is a day later. */
static char hour0[32];

/* The schedule's next run is the first minute of its hour, tomorrow (it matches no other). */
static long next_is_tomorrow(const char *url)
{
    return th_sql_long(url,
                       "SELECT count(*) FROM schedule WHERE name = 'past-hour' AND next_run_at = "
                       "to_timestamp($1::bigint) + interval '1 day'",
                       hour0, NULL);
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
    char who[160] = "";
    double end = th_now_ms() + 10000;
    while (!who[0] && th_now_ms() < end) {
        leader(url, who, sizeof who);
        if (!who[0])
            th_sleep_ms(20);
    }
    long pid = jt_instance_pid(who);
    CHECK(pid == (long)s[0].pid || pid == (long)s[1].pid, "leader is a replica: %s", who);
    CHECK(th_sql_long(url, "SELECT count(*) FROM job_leader", NULL) == 1, "one leader row");
    PQclear(th_sql(url,
                   "INSERT INTO schedule (name, cron, kind, args, enabled) "
                   "VALUES ('no-next', '0 3 * * *', 'noop', '{}', true)",
                   NULL));
    /* the one 03:00 UTC in (now, now + 1 day] */
    CHECK(
        jt_wait_sql(url,
                    "SELECT count(*) FROM schedule WHERE name = 'no-next' AND next_run_at > now() "
                    "AND next_run_at <= now() + interval '1 day' AND next_run_at = "
                    "date_trunc('hour', next_run_at, 'UTC') AND "
                    "extract(hour FROM next_run_at AT TIME ZONE 'UTC') = 3",
                    1, 5000) == 1,
        "a schedule inserted without next_run_at gets the next 03:00 UTC");
    CHECK(th_sql_long(url, "SELECT count(*) FROM job WHERE created_by = 'schedule:no-next'",
                      NULL) == 0,
          "and does not fire for it");

    th_step("missed runs fire once, not once per missed minute");
    /* every minute of the hour two hours ago: the ten minutes before that hour's end are
     * missed runs, and no minute of the test's own hours matches */
    long h0 = th_sql_long(url,
                          "SELECT extract(epoch FROM date_trunc('hour', now() - "
                          "interval '2 hours', 'UTC'))::bigint",
                          NULL);
    snprintf(hour0, sizeof hour0, "%ld", h0);
    long hour = (h0 / 3600) % 24;
    char body[200];
    snprintf(body, sizeof body,
             "{\"name\":\"past-hour\",\"cron\":\"* %ld * * *\",\"kind\":\"noop\","
             "\"args\":{\"log\":true}}",
             hour);
    struct th_resp r;
    long st = jt_post(&s[0], "/api/v1/schedules", op, body, NULL, &r);
    CHECK(st == 201, "schedule created: %ld %s", st, r.body);
    th_resp_free(&r);
    CHECK(next_is_tomorrow(url) == 1, "its first run is tomorrow");
    CHECK(fired(url) == 0, "nothing fired before its time");
    for (int round = 1; round <= 3; round++) {
        /* ten matching minutes missed: the run due at minute 50 of that hour, and the nine
         * after it (a few seconds earlier each round, so that every round is a new slot) */
        PQclear(th_sql(url,
                       "UPDATE schedule SET next_run_at = to_timestamp($2::bigint) + "
                       "interval '50 minutes' - $1::int * interval '1 second' "
                       "WHERE name = 'past-hour'",
                       round == 1 ? "0" : (round == 2 ? "7" : "13"), hour0, NULL));
        long n = jt_wait_sql(
            url, "SELECT count(*) FROM job WHERE created_by = 'schedule:past-hour'", round, 5000);
        CHECK(n == round, "round %d: the missed run fired (total %ld)", round, n);
        CHECK(leader_ticks(url, 2), "round %d: the leader ticked twice more", round);
        n = fired(url);
        CHECK(n == round, "round %d: exactly one fire for 10 missed minutes (total %ld)", round, n);
        CHECK(next_is_tomorrow(url) == 1 &&
                  th_sql_long(url,
                              "SELECT count(*) FROM schedule WHERE name = 'past-hour' AND "
                              "last_fired_at IS NOT NULL AND last_job_id = (SELECT max(id) "
                              "FROM job WHERE created_by = 'schedule:past-hour')",
                              NULL) == 1,
              "round %d: the next run is computed from now (tomorrow); last_job_id set", round);
    }
    CHECK(th_sql_long(url,
                      "SELECT count(DISTINCT idempotency_key) FROM job WHERE created_by = "
                      "'schedule:past-hour'",
                      NULL) == 3,
          "one job per slot");
    CHECK(jt_wait_sql(url,
                      "SELECT count(*) FROM job WHERE created_by = 'schedule:past-hour' "
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
                   "WHERE name = 'past-hour'",
                   NULL));
    long before = fired(url);
    CHECK(jt_wait_sql(url, "SELECT count(*) FROM job WHERE created_by = 'schedule:past-hour'",
                      before + 1, 5000) == before + 1,
          "the new leader fires");
    /* bring the second replica back: the next step runs with two */
    CHECK(th_server_start(&s[dead], url, env, 1) == 0, "replica restarts");

    th_step("a run due in two seconds: fired exactly once, at its time, with 2 replicas");
    long slot = th_sql_long(url,
                            "WITH u AS (UPDATE schedule SET next_run_at = "
                            "date_trunc('second', now()) + interval '2 seconds' "
                            "WHERE name = 'past-hour' RETURNING next_run_at) "
                            "SELECT extract(epoch FROM next_run_at)::bigint FROM u",
                            NULL);
    before = fired(url);
    char key[96], slot_s[32], q[200];
    snprintf(key, sizeof key, "schedule:past-hour:%ld", slot);
    snprintf(slot_s, sizeof slot_s, "%ld", slot);
    snprintf(q, sizeof q, "SELECT count(*) FROM job WHERE idempotency_key = '%s'", key);
    CHECK(jt_wait_sql(url, q, 1, 10000) == 1, "the slot fired");
    CHECK(leader_ticks(url, 2), "the leader ticked twice more");
    CHECK(th_sql_long(url, "SELECT count(*) FROM job WHERE idempotency_key = $1", key, NULL) == 1,
          "the slot fired once");
    CHECK(th_sql_long(url,
                      "SELECT count(*) FROM job WHERE idempotency_key = $1 AND "
                      "created_at >= to_timestamp($2::bigint) AND "
                      "created_at < to_timestamp($2::bigint) + interval '2 seconds'",
                      key, slot_s, NULL) == 1,
          "at its time (within a tick)");
    CHECK(fired(url) == before + 1, "one fire in all (%ld -> %ld)", before, fired(url));
    CHECK(next_is_tomorrow(url) == 1, "the next run is tomorrow again");

    th_step("disabled schedules do not fire");
    free(op); /* dev tokens are bound to the issuing replica */
    op = th_dev_token(&s[1 - dead], "operator");
    st = jt_patch(&s[1 - dead], "/api/v1/schedules/past-hour", op, "{\"enabled\":false}", &r);
    CHECK(st == 200, "disable: %ld", st);
    th_resp_free(&r);
    PQclear(th_sql(url,
                   "UPDATE schedule SET next_run_at = now() - interval '1 hour' "
                   "WHERE name = 'past-hour'",
                   NULL));
    before = fired(url);
    CHECK(leader_ticks(url, 2), "the leader ticked twice");
    CHECK(fired(url) == before, "no fire while disabled");
    st = jt_patch(&s[1 - dead], "/api/v1/schedules/past-hour", op, "{\"enabled\":true}", &r);
    CHECK(st == 200, "enable: %ld", st);
    th_resp_free(&r);
    CHECK(next_is_tomorrow(url) == 1, "re-enabling computes the next run from now");
    CHECK(leader_ticks(url, 2), "the leader ticked twice");
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
