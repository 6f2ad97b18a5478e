/* The state store's reachability (db.c) against a loopback port nothing listens on: the
 * first connect fails and starts an outage; then connects fail at once, without an
 * attempt, until the backoff allows the next one; pooled and standalone connections share
 * it; and log_limit holds back and counts. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "platform/db.h"
#include "platform/log.h"
#include "unit.h"

static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd); /* bound, never listened: connects are refused */
    return ntohs(a.sin_port);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void test_backoff(void)
{
    char url[128];
    snprintf(url, sizeof url, "postgresql://nobody@127.0.0.1:%d/none", closed_port());
    struct db_settings s = {url, 1000, 1, "unit"};
    db_reach_configure(400, 60);
    struct db_reach_stats st;

    EXPECT(db_state_store_reachable(), "no outage before the first connect");
    EXPECT(db_conn_open(&s) == NULL, "nothing listens");
    db_reach_stats(&st);
    EXPECT(st.connect_attempts == 1 && st.connect_failures == 1 && st.outages == 1,
           "one attempt, one failure, one outage (%lu %lu %lu)", st.connect_attempts,
           st.connect_failures, st.outages);
    EXPECT(!db_state_store_reachable() && st.up == 0, "the outage is known");
    int wait = db_reconnect_wait_ms();
    EXPECT(wait > 0 && wait <= 101, "first backoff step 50..100 ms (%d)", wait);

    /* during the backoff: refused at once, pooled or standalone */
    struct db_pool *pool = db_pool_new(&s, 4);
    for (int i = 0; i < 100; i++) {
        EXPECT(db_conn_open(&s) == NULL, "standalone refused");
        EXPECT(db_acquire(pool, 1000) == NULL, "pooled refused");
    }
    db_reach_stats(&st);
    EXPECT(st.connect_attempts == 1, "no attempt during the backoff (%lu)", st.connect_attempts);
    EXPECT(st.requests_refused == 100, "pool refusals counted (%lu)", st.requests_refused);

    /* the backoff doubles up to its cap (400 ms here, jittered to 200..400) */
    int last = 0;
    for (int i = 0; i < 5; i++) {
        sleep_ms(db_reconnect_wait_ms());
        EXPECT(db_acquire(pool, 1000) == NULL, "the probe fails too");
        last = db_reconnect_wait_ms();
    }
    db_reach_stats(&st);
    EXPECT(st.connect_attempts == 6, "one attempt per backoff step (%lu)", st.connect_attempts);
    EXPECT(st.outages == 1, "still the same outage (%lu)", st.outages);
    EXPECT(last >= 150 && last <= 401, "the backoff reached its cap (%d ms)", last);
    unsigned in_use, idle, size;
    db_pool_stats(pool, &in_use, &idle, &size);
    EXPECT(in_use == 0 && idle == 0 && size == 4, "the pool holds nothing (%u %u)", in_use, idle);
    db_pool_free(pool);
}

static void test_log_limit(void)
{
    static struct log_limit l;
    unsigned long held = 99;
    EXPECT(log_limit_allow(&l, 200, &held) && held == 0, "the first is written (%lu)", held);
    for (int i = 0; i < 10; i++)
        EXPECT(!log_limit_allow(&l, 200, &held), "held back within the interval");
    sleep_ms(210);
    EXPECT(log_limit_allow(&l, 200, &held) && held == 10, "the next says 10 held (%lu)", held);
    EXPECT(!log_limit_allow(&l, 200, NULL), "and the window starts again");
}

int main(void)
{
    log_set_level(LOG_ERROR); /* the outage's own lines are not what is tested here */
    test_backoff();
    test_log_limit();
    return unit_done();
}
