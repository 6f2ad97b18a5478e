/* The plain producer bench/events.sh measures beside the relay: the same payloads with the
 * same librdkafka settings as server/audit/audit_relay.c (acks=all, enable.idempotence,
 * lz4, linger, message.timeout.ms=0, the content-type header), and nothing else: no state
 * store. It reads "key<US>value" lines (US = 0x1f, psql -At -F output), loads them all,
 * then produces them and waits for every delivery report.
 *
 *   qdb-kafka-bench-producer BOOTSTRAP TOPIC FILE [LINGER_MS]
 *
 * prints "events N seconds S events_per_s R failed F". */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long delivered, failed;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        failed++;
    else
        delivered++;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int set(rd_kafka_conf_t *c, const char *k, const char *v)
{
    char err[256];
    if (rd_kafka_conf_set(c, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "qdb-kafka-bench-producer: %s: %s\n", k, err);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: qdb-kafka-bench-producer BOOTSTRAP TOPIC FILE [LINGER_MS]\n");
        return 2;
    }
    FILE *f = fopen(argv[3], "r");
    if (!f) {
        perror(argv[3]);
        return 1;
    }
    size_t cap = 1024, n = 0;
    char **keys = malloc(cap * sizeof *keys), **values = malloc(cap * sizeof *values);
    char *line = NULL;
    size_t linecap = 0;
    ssize_t len;
    while ((len = getline(&line, &linecap, f)) > 0) {
        if (line[len - 1] == '\n')
            line[--len] = '\0';
        char *us = strchr(line, '\x1f');
        if (!us)
            continue;
        *us = '\0';
        if (n == cap) {
            cap *= 2;
            keys = realloc(keys, cap * sizeof *keys);
            values = realloc(values, cap * sizeof *values);
        }
        keys[n] = strdup(line);
        values[n] = strdup(us + 1);
        n++;
    }
    free(line);
    fclose(f);

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (set(conf, "bootstrap.servers", argv[1]) || set(conf, "acks", "all") ||
        set(conf, "enable.idempotence", "true") || set(conf, "compression.type", "lz4") ||
        set(conf, "message.timeout.ms", "0") ||
        set(conf, "linger.ms", argc == 5 ? argv[4] : "5") ||
        set(conf, "message.max.bytes", "1000000") || set(conf, "log_level", "3"))
        return 1;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    char err[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "qdb-kafka-bench-producer: %s\n", err);
        return 1;
    }
    /* connect and learn the topic's leaders before the clock starts, as the relay has by
     * the time it relays a backlog */
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, argv[2], NULL);
    rd_kafka_metadata(rk, 0, t, &md, 10000);
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);

    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        for (;;) {
            rd_kafka_headers_t *h = rd_kafka_headers_new(1);
            rd_kafka_header_add(h, "content-type", -1, "application/cloudevents+json", -1);
            rd_kafka_resp_err_t e = rd_kafka_producev(
                rk, RD_KAFKA_V_TOPIC(argv[2]), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_KEY(keys[i], strlen(keys[i])),
                RD_KAFKA_V_VALUE(values[i], strlen(values[i])), RD_KAFKA_V_HEADERS(h),
                RD_KAFKA_V_END);
            if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
                break;
            rd_kafka_headers_destroy(h);
            if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                fprintf(stderr, "produce: %s\n", rd_kafka_err2str(e));
                return 1;
            }
            rd_kafka_poll(rk, 10);
        }
        rd_kafka_poll(rk, 0);
    }
    while (delivered + failed < (long)n)
        rd_kafka_poll(rk, 50);
    double secs = now_s() - t0;
    printf("events %zu seconds %.3f events_per_s %.0f failed %ld\n", n, secs, (double)n / secs,
           failed);
    rd_kafka_destroy(rk);
    for (size_t i = 0; i < n; i++) {
        free(keys[i]);
        free(values[i]);
    }
    free(keys);
    free(values);
    return failed ? 1 : 0;
}
