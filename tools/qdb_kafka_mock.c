/* qdb-kafka-mock: a Kafka cluster for the local run and the tests, on librdkafka's mock
 * cluster (rdkafka_mock.h): brokers on loopback that real Kafka clients (the relay, kcat, a
 * librdkafka consumer) talk the Kafka protocol to. Topics are created on first use.
 *
 *   qdb-kafka-mock [--brokers N]     (default 3)
 *
 * prints its bootstrap servers as the first line of stdout ("127.0.0.1:p1,127.0.0.1:p2,...")
 * and runs until SIGTERM or SIGINT. It takes commands on stdin, one a line, and answers each
 * with one line, "ok ..." or "error ...", so that a test can break it while a server uses it:
 *
 *   down B | up B                 take broker B (1..N) down / up again
 *   topic NAME PARTITIONS         create a topic with that many partitions (replicas on all)
 *   leader NAME PARTITION B       make broker B the partition's leader
 *   errors COUNT CODE             the next COUNT Produce requests fail with Kafka error CODE
 *                                 (e.g. 6 NOT_LEADER_OR_FOLLOWER, 7 REQUEST_TIMED_OUT)
 *   rtt B MS                      add MS of round-trip time to broker B
 *
 * End of input is not a stop (run.sh starts it with stdin closed): only a signal is. */
#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int parse_long(const char *s, long min, long max, long *out)
{
    if (!s || !*s)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Split line into at most 4 words (in place). Returns the count. */
static int words(char *line, char *w[4])
{
    int n = 0;
    char *p = line;
    while (*p && n < 4) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        w[n++] = p;
        while (*p && *p != ' ' && *p != '\t')
            p++;
        if (*p)
            *p++ = '\0';
    }
    return n;
}

static void command(rd_kafka_mock_cluster_t *mc, long nbrokers, char *line)
{
    char *w[4] = {0};
    int n = words(line, w);
    long a = 0, b = 0;
    rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (n == 0)
        return;
    if (n == 2 && (strcmp(w[0], "down") == 0 || strcmp(w[0], "up") == 0) &&
        parse_long(w[1], 1, nbrokers, &a) == 0) {
        e = w[0][0] == 'd' ? rd_kafka_mock_broker_set_down(mc, (int32_t)a)
                           : rd_kafka_mock_broker_set_up(mc, (int32_t)a);
    } else if (n == 3 && strcmp(w[0], "topic") == 0 && parse_long(w[2], 1, 1000, &a) == 0) {
        e = rd_kafka_mock_topic_create(mc, w[1], (int)a, (int)nbrokers);
    } else if (n == 4 && strcmp(w[0], "leader") == 0 && parse_long(w[2], 0, 999, &a) == 0 &&
               parse_long(w[3], 1, nbrokers, &b) == 0) {
        e = rd_kafka_mock_partition_set_leader(mc, w[1], (int32_t)a, (int32_t)b);
    } else if (n == 3 && strcmp(w[0], "errors") == 0 && parse_long(w[1], 1, 100, &a) == 0 &&
               parse_long(w[2], 1, 200, &b) == 0) {
        rd_kafka_resp_err_t codes[100];
        for (long i = 0; i < a; i++)
            codes[i] = (rd_kafka_resp_err_t)b;
        rd_kafka_mock_push_request_errors_array(mc, 0 /* Produce */, (size_t)a, codes);
    } else if (n == 3 && strcmp(w[0], "rtt") == 0 && parse_long(w[1], 1, nbrokers, &a) == 0 &&
               parse_long(w[2], 0, 60000, &b) == 0) {
        e = rd_kafka_mock_broker_set_rtt(mc, (int32_t)a, (int)b);
    } else {
        printf("error unknown command (down B, up B, topic NAME N, leader NAME P B, errors N "
               "CODE, rtt B MS)\n");
        fflush(stdout);
        return;
    }
    if (e)
        printf("error %s\n", rd_kafka_err2str(e));
    else
        printf("ok %s\n", w[0]);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    long nbrokers = 3;
    if (argc == 3 && strcmp(argv[1], "--brokers") == 0) {
        if (parse_long(argv[2], 1, 16, &nbrokers) != 0) {
            fprintf(stderr, "qdb-kafka-mock: --brokers takes 1..16\n");
            return 2;
        }
    } else if (argc != 1) {
        fprintf(stderr, "usage: qdb-kafka-mock [--brokers N]\n");
        return 2;
    }
    /* The mock cluster lives inside a client instance; this one is never used otherwise. */
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "qdb-kafka-mock: %s\n", err);
        return 1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "qdb-kafka-mock: %s\n", err);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, (int)nbrokers);
    if (!mc) {
        fprintf(stderr, "qdb-kafka-mock: cannot create the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
    fflush(stdout);

    char line[512];
    size_t len = 0;
    int input_open = 1;
    while (!stop_requested) {
        struct pollfd p = {.fd = 0, .events = POLLIN};
        int r = input_open ? poll(&p, 1, 200) : poll(NULL, 0, 200);
        if (r <= 0 || !input_open)
            continue;
        ssize_t got = read(0, line + len, sizeof line - 1 - len);
        if (got <= 0) {
            input_open = 0;
            continue;
        }
        len += (size_t)got;
        line[len] = '\0';
        char *nl;
        while ((nl = strchr(line, '\n')) != NULL) {
            *nl = '\0';
            command(mc, nbrokers, line);
            size_t rest = len - (size_t)(nl + 1 - line);
            memmove(line, nl + 1, rest);
            len = rest;
            line[len] = '\0';
        }
        if (len == sizeof line - 1)
            len = 0; /* a line too long for any command: dropped */
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return 0;
}
