/* The inventory against Kafka and Kafka Connect: librdkafka's mock cluster (three brokers,
 * run inside this test) is the development environment's Kafka, and
 * tests/fixtures/fake_kafka_connect.mjs its Kafka Connect.
 *
 * The mock implements metadata, produce, OffsetFetch/OffsetCommit and ListOffsets, but no
 * CreateTopics, CreatePartitions, DescribeConfigs or AlterConfigs (../shared/FACTS.md): so
 * here the plan (existence and partition counts), the existence path of provision_topic
 * and the lag are verified end to end, and the admin calls are verified to fail with a
 * clear message; a refused OffsetFetch gives a clear error naming the broker's code.
 * Connectors: 409 and 500 retried, 200, a no-op second run, 400 final with Connect's own
 * message, a connector deleted behind the service's back in the plan. */
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "inventory_helpers.h"

static int delivered;
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk, (void)opaque;
    if (!m->err)
        delivered++;
}

/* Produce n messages to topic partition 0 on the mock; returns how many were delivered. */
static int produce(const char *bootstraps, const char *topic, int n)
{
    char e[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, e, sizeof e);
    rd_kafka_conf_set_dr_msg_cb(c, on_delivery);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, e, sizeof e);
    delivered = 0;
    for (int i = 0; i < n; i++) {
        char v[32];
        snprintf(v, sizeof v, "m%d", i);
        rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_VALUE(v, strlen(v)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_END);
        rd_kafka_poll(p, 0);
    }
    rd_kafka_flush(p, 10000);
    rd_kafka_destroy(p);
    return delivered;
}

/* Commit `offset` on topic[0] for `group`, explicitly (see ../shared/FACTS.md on the
 * mock's consumer groups), and read it back. Returns the committed offset or -1. */
static long long commit_offset(const char *bootstraps, const char *group, const char *topic,
                               long long offset)
{
    char e[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, e, sizeof e);
    rd_kafka_conf_set(c, "group.id", group, e, sizeof e);
    rd_kafka_conf_set(c, "enable.auto.commit", "false", e, sizeof e);
    rd_kafka_t *k = rd_kafka_new(RD_KAFKA_CONSUMER, c, e, sizeof e);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0)->offset = offset;
    rd_kafka_assign(k, l);
    rd_kafka_resp_err_t err = rd_kafka_commit(k, l, 0);
    l->elems[0].offset = -1;
    if (!err)
        err = rd_kafka_committed(k, l, 10000);
    long long got = err ? -1 : l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(k);
    rd_kafka_destroy(k);
    return got;
}

/* Partition count of topic as the brokers report it (what `kcat -L -t topic` lists). */
static int read_back_partitions(const char *bootstraps, const char *topic)
{
    char e[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, e, sizeof e);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, e, sizeof e);
    const rd_kafka_metadata_t *md = NULL;
    int n = -1;
    if (rd_kafka_metadata(p, 1, NULL, &md, 10000) == 0) {
        n = 0;
        for (int i = 0; i < md->topic_cnt; i++)
            if (strcmp(md->topics[i].topic, topic) == 0)
                n = md->topics[i].partition_cnt;
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_destroy(p);
    return n;
}

/* The fake Kafka Connect on a free port; its pid, or -1. */
static pid_t start_connect(int port)
{
    pid_t pid = fork();
    if (pid == 0) {
        char p[16];
        snprintf(p, sizeof p, "%d", port);
        execlp("node", "node", QDB_SOURCE_DIR "/tests/fixtures/fake_kafka_connect.mjs", p,
               (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* A request to the fake's own endpoints: status, and the body in out (may be NULL). */
static long fake(const struct th_server *fk, const char *method, const char *path, const char *body,
                 json_t **out)
{
    struct th_resp r;
    const char *h[] = {"Content-Type: application/json", NULL};
    memset(&r, 0, sizeof r);
    if (th_http(fk, method, path, h, body, body ? strlen(body) : 0, &r) != 0)
        return 0;
    if (out)
        *out = r.json ? json_incref(r.json) : NULL;
    long st = r.status;
    th_resp_free(&r);
    return st;
}

static long long put_count(const struct th_server *fk)
{
    json_t *c = NULL;
    fake(fk, "GET", "/__requests", NULL, &c);
    long long n = json_integer_value(json_object_get(c, "PUT config"));
    json_decref(c);
    return n;
}

static int has_diff(const json_t *plan, const char *name, const char *difference)
{
    size_t i, k;
    json_t *d, *x;
    json_array_foreach(json_object_get(plan, "differences"), i, d)
    {
        if (strcmp(json_string_value(json_object_get(d, "name")) ?: "", name) != 0)
            continue;
        json_array_foreach(json_object_get(d, "differences"), k, x)
        {
            if (strcmp(json_string_value(json_object_get(x, "difference")) ?: "", difference) == 0)
                return 1;
        }
    }
    return 0;
}

static int has_warning(const json_t *plan, const char *needle)
{
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(plan, "warnings"), i, w)
    {
        if (strstr(json_string_value(w) ?: "", needle))
            return 1;
    }
    return 0;
}

static json_t *plan_of(const struct th_server *s, const char *token)
{
    struct th_resp r;
    inv_call(s, token, "GET", "/api/v1/environments/development/plan", NULL, &r);
    json_t *p = r.status == 200 ? json_incref(r.json) : NULL;
    if (!p)
        fprintf(stderr, "plan: %ld %s\n", r.status, r.body ? r.body : "");
    th_resp_free(&r);
    return p;
}

/* The whole job log of job id as one text (malloc'd). */
static char *job_log_text(const char *url, long long id)
{
    char idt[24];
    snprintf(idt, sizeof idt, "%lld", id);
    PGresult *res = th_sql(url,
                           "SELECT coalesce(string_agg(message, E'\\n' ORDER BY id), '') FROM "
                           "job_log WHERE job_id = $1::bigint",
                           idt, NULL);
    char *s = strdup(res && PQntuples(res) ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    return s;
}

int main(void)
{
    char *url = th_db_create("inventory_kafka");
    struct th_server srv = {0}, fk = {0};
    char *admin = NULL, *viewer = NULL, body[4096];
    struct th_resp r;
    pid_t connect_pid = -1;

    th_step("a three-broker librdkafka mock cluster and the fake Kafka Connect");
    char e[256];
    rd_kafka_conf_t *mc_conf = rd_kafka_conf_new();
    rd_kafka_conf_set(mc_conf, "log_level", "0", e, sizeof e);
    rd_kafka_t *mrk = rd_kafka_new(RD_KAFKA_PRODUCER, mc_conf, e, sizeof e);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(mrk, 3);
    CHECK(mc != NULL, "mock cluster");
    const char *bs = rd_kafka_mock_cluster_bootstraps(mc);
    int cport = th_free_port();
    connect_pid = start_connect(cport);
    fk.port = (uint16_t)cport;
    snprintf(fk.base, sizeof fk.base, "http://127.0.0.1:%d", cport);
    double until = th_now_ms() + 20000;
    while (fake(&fk, "GET", "/__requests", NULL, NULL) != 200 && th_now_ms() < until)
        th_sleep_ms(100);
    CHECK(fake(&fk, "GET", "/__requests", NULL, NULL) == 200, "fake Kafka Connect answers");

    const char *env[] = {"QDB_INVENTORY_TARGET_TIMEOUT=3", "QDB_JOB_BACKOFF_BASE_MS=100",
                         "QDB_JOB_BACKOFF_MAX=1s", NULL};
    CHECK(th_server_start(&srv, url, env, 1) == 0, "server starts");
    if (!srv.pid)
        goto out;
    admin = th_dev_token(&srv, "admin");
    viewer = th_dev_token(&srv, "viewer");
    snprintf(body, sizeof body,
             "{\"targets\":{\"kafka\":{\"bootstrap_servers\":\"%s\",\"broker_count\":3},"
             "\"kafka_connect\":{\"url\":\"%s/\"}}}",
             bs, fk.base);
    CHECK(inv_status(&srv, admin, "PATCH", "/api/v1/environments/development", body) == 200,
          "development's kafka and kafka_connect targets");
    /* the seeded databases have no postgres target here: not this test's subject */
    PQclear(th_sql(url, "DELETE FROM inventory_database", NULL));

    th_step("import deploy/inventory/seed.json: topic groups, consumer groups, connectors");
    FILE *f = fopen(QDB_SOURCE_DIR "/deploy/inventory/seed.json", "r");
    char *seed = calloc(1, 256 * 1024);
    size_t seed_len = f ? fread(seed, 1, 256 * 1024 - 1, f) : 0;
    if (f)
        fclose(f);
    CHECK(seed_len > 1000, "the seed file is in the repo");
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/inventory/import", seed, &r) == 200,
          "import: %ld %s", r.status, r.body);
    json_t *counts = r.json;
    CHECK(json_integer_value(json_object_get(json_object_get(counts, "topics"), "created")) == 24 &&
              json_integer_value(
                  json_object_get(json_object_get(counts, "consumer_groups"), "created")) == 6 &&
              json_integer_value(
                  json_object_get(json_object_get(counts, "connectors"), "created")) == 2,
          "24 topics, 6 groups, 2 connectors: %s", r.body);
    th_resp_free(&r);
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/inventory/import", seed, &r) == 200 &&
              json_integer_value(json_object_get(json_object_get(r.json, "topics"), "updated")) ==
                  24,
          "a second import updates: %s", r.body);
    th_resp_free(&r);
    free(seed);
    inv_call(&srv, viewer, "GET", "/api/v1/kafka/connectors/debezium-financing-core", NULL, &r);
    CHECK(r.status == 200 && strcmp(json_string_value(json_object_get(
                                        json_object_get(r.json, "config"), "database.password"))
                                        ?: "",
                                    "${vault:secret/debezium/financing-core}") == 0,
          "the ${vault:...} placeholder is kept as written: %s", r.body);
    th_resp_free(&r);
    inv_call(&srv, viewer, "GET", "/api/v1/kafka/topics/dlq.debezium-advisory-main", NULL, &r);
    CHECK(r.status == 200 && json_integer_value(json_object_get(r.json, "partitions")) == 1 &&
              json_integer_value(json_object_get(r.json, "retention_ms")) == 7776000000LL,
          "a DLQ topic: 1 partition, 90 days: %s", r.body);
    th_resp_free(&r);

    th_step("422 naming the field, nothing changed");
    long topics0 = th_sql_long(url, "SELECT count(*) FROM inventory_topic", NULL);
    long outbox0 = th_sql_long(url, "SELECT count(*) FROM outbox", NULL);
    static const struct {
        const char *body, *field;
    } bad[] = {
        {"{\"name\":\"bad name\"}", "name"},
        {"{\"name\":\"..\"}", "name"},
        {"{\"name\":\"t.zero\",\"partitions\":0}", "partitions"},
        {"{\"name\":\"t.rf\",\"replication_factor\":4}", "replication_factor"},
        {"{\"name\":\"t.isr\",\"replication_factor\":2,\"min_insync_replicas\":3}",
         "min_insync_replicas"},
        {"{\"name\":\"t.env\",\"retention_by_environment\":{\"nowhere\":86400000}}",
         "retention_by_environment.nowhere"},
        {"{\"name\":\"t.comp\",\"compression\":\"brotli\"}", "compression"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK(inv_call(&srv, admin, "POST", "/api/v1/kafka/topics", bad[i].body, &r) == 422 &&
                  strcmp(inv_field(&r), bad[i].field) == 0,
              "%s: %ld %s", bad[i].field, r.status, r.body);
        th_resp_free(&r);
    }
    CHECK(inv_call(&srv, admin, "PATCH", "/api/v1/kafka/topics/app.controlplane.jobs",
                   "{\"min_insync_replicas\":4}", &r) == 422 &&
              strcmp(inv_field(&r), "min_insync_replicas") == 0,
          "PATCH checks the whole document: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/kafka/connectors",
                   "{\"name\":\"leaky\",\"config\":{\"connector.class\":\"x\","
                   "\"database.password\":\"plain\"}}",
                   &r) == 422 &&
              strcmp(inv_field(&r), "config.database.password") == 0,
          "a credential must be a placeholder: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/inventory/import",
                   "{\"topics\":[{\"name\":\"t.ok\"},{\"name\":\"t.bad\",\"partitions\":-1}]}",
                   &r) == 422 &&
              strcmp(inv_field(&r), "topics[1].partitions") == 0,
          "an import is checked whole: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/kafka/consumer-groups",
                   "{\"name\":\"g\",\"topics\":[\"app.*.x\"]}", &r) == 422 &&
              strcmp(inv_field(&r), "topics[0]") == 0,
          "a group's topic pattern: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(th_sql_long(url, "SELECT count(*) FROM inventory_topic", NULL) == topics0 &&
              th_sql_long(url, "SELECT count(*) FROM outbox", NULL) == outbox0,
          "no topic and no event was added");

    th_step("the longest name Kafka takes (249) is created, emitted and deleted");
    char long_name[250], long_path[300];
    memset(long_name, 'x', 249);
    long_name[249] = '\0';
    snprintf(body, sizeof body, "{\"name\":\"%s\"}", long_name);
    CHECK(inv_status(&srv, admin, "POST", "/api/v1/kafka/topics", body) == 201, "249 bytes");
    snprintf(long_path, sizeof long_path, "/api/v1/kafka/topics/%s", long_name);
    CHECK(inv_status(&srv, admin, "DELETE", long_path, NULL) == 204, "deleted");
    snprintf(body, sizeof body, "topics/%s", long_name);
    CHECK(th_sql_long(url, "SELECT count(*) FROM outbox WHERE key = $1", body, NULL) == 2,
          "created and deleted events");
    snprintf(body, sizeof body, "{\"name\":\"%sx\"}", long_name);
    CHECK(inv_call(&srv, admin, "POST", "/api/v1/kafka/topics", body, &r) == 422 &&
              strcmp(inv_field(&r), "name") == 0,
          "250 bytes: 422");
    th_resp_free(&r);

    th_step("the plan: every topic and connector missing");
    json_t *plan = plan_of(&srv, viewer);
    CHECK(plan && json_array_size(json_object_get(plan, "differences")) == 26 &&
              has_diff(plan, "cdc.advisory_main.users", "topic_missing") &&
              has_diff(plan, "debezium-advisory-main", "connector_missing"),
          "26 differences");
    json_decref(plan);

    th_step("topics changed behind the service's back on the brokers");
    rd_kafka_mock_topic_create(mc, "cdc.advisory_main.users", 6, 3);
    rd_kafka_mock_topic_create(mc, "app.controlplane.jobs", 2, 3);
    rd_kafka_mock_topic_create(mc, "dlq.debezium-advisory-main", 3, 3);
    CHECK(read_back_partitions(bs, "cdc.advisory_main.users") == 6 &&
              read_back_partitions(bs, "app.controlplane.jobs") == 2,
          "the brokers list them (metadata read back)");
    plan = plan_of(&srv, viewer);
    CHECK(plan && !has_diff(plan, "cdc.advisory_main.users", "topic_missing") &&
              has_diff(plan, "app.controlplane.jobs", "partitions_below") &&
              has_diff(plan, "cdc.advisory_main.programs", "topic_missing"),
          "the plan sees the partition count");
    CHECK(plan && has_warning(plan, "dlq.debezium-advisory-main has 3 partitions") &&
              has_warning(plan, "never removed"),
          "a topic with more partitions than the inventory says: a warning, never an action");
    CHECK(plan && has_warning(plan, "topic configs: not compared"),
          "configs are not compared when the brokers do not answer DescribeConfigs");
    json_decref(plan);

    th_step("provision_topic on the mock: the existence path, then the admin call's clear error");
    json_t *j = inv_run_job(&srv, admin,
                            "{\"kind\":\"inventory.provision_topic\",\"max_attempts\":1,"
                            "\"args\":{\"topic\":\"cdc.advisory_main.users\",\"environment\":"
                            "\"development\"}}",
                            60000);
    long long jid = j ? (long long)json_integer_value(json_object_get(j, "id")) : 0;
    char *log = job_log_text(url, jid);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "state")), "failed") == 0 &&
              strstr(log, "topic cdc.advisory_main.users exists with 6 partitions") &&
              strstr(inv_errors(j), "DescribeConfigs") && strstr(inv_errors(j), "did not answer"),
          "exists, then DescribeConfigs unanswered: %s / %s", log, j ? inv_errors(j) : "");
    free(log);
    json_decref(j);
    j = inv_run_job(&srv, admin,
                    "{\"kind\":\"inventory.provision_topic\",\"max_attempts\":1,\"args\":{"
                    "\"topic\":\"dlq.debezium-advisory-main\",\"environment\":\"development\"}}",
                    60000);
    jid = j ? (long long)json_integer_value(json_object_get(j, "id")) : 0;
    log = job_log_text(url, jid);
    CHECK(strstr(log, "partitions are never removed"), "never shrink, and say so: %s", log);
    free(log);
    json_decref(j);
    j = inv_run_job(&srv, admin,
                    "{\"kind\":\"inventory.provision_topic\",\"max_attempts\":1,\"args\":{"
                    "\"topic\":\"cdc.financing_core.LOANS\",\"environment\":\"development\"}}",
                    60000);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "state")), "failed") == 0 &&
              strstr(inv_errors(j), "CreateTopics") && strstr(inv_errors(j), "did not answer"),
          "CreateTopics: %s", j ? inv_errors(j) : "timeout");
    json_decref(j);
    CHECK(read_back_partitions(bs, "cdc.financing_core.LOANS") == 0,
          "and no topic appeared by a side door (metadata never auto-creates)");

    th_step("consumer group lag: committed offsets 100 behind the end");
    rd_kafka_mock_topic_create(mc, "lag.topic", 1, 3);
    CHECK(produce(bs, "lag.topic", 150) == 150, "150 messages delivered");
    CHECK(commit_offset(bs, "lag-group", "lag.topic", 50) == 50, "offset 50 committed");
    CHECK(inv_status(&srv, admin, "POST", "/api/v1/kafka/consumer-groups",
                     "{\"name\":\"lag-group\",\"topics\":[\"lag.*\"],\"lag_threshold\":10}") == 201,
          "the group is in the inventory");
    inv_call(&srv, viewer, "GET",
             "/api/v1/kafka/consumer-groups/lag-group/lag?environment=development", NULL, &r);
    json_t *p0 = json_array_get(json_object_get(r.json, "partitions"), 0);
    CHECK(r.status == 200 && json_integer_value(json_object_get(r.json, "total")) == 100 &&
              json_integer_value(json_object_get(p0, "committed")) == 50 &&
              json_integer_value(json_object_get(p0, "end")) == 150 &&
              json_integer_value(json_object_get(p0, "lag")) == 100,
          "lag 100: %ld %s", r.status, r.body);
    th_resp_free(&r);
    CHECK(inv_status(&srv, viewer, "GET", "/api/v1/kafka/consumer-groups/lag-group/lag", NULL) ==
              400,
          "the environment is required");
    CHECK(inv_call(&srv, viewer, "GET",
                   "/api/v1/kafka/consumer-groups/lag-group/lag?environment=nowhere", NULL,
                   &r) == 422 &&
              strcmp(inv_field(&r), "environment") == 0,
          "an unknown environment is 422: %s", r.body);
    th_resp_free(&r);
    CHECK(inv_status(&srv, viewer, "GET",
                     "/api/v1/kafka/consumer-groups/lag-group/lag?environment=staging",
                     NULL) == 409,
          "an environment without Kafka is 409");
    j = inv_run_job(&srv, admin, "{\"kind\":\"inventory.lag_check\"}", 60000);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "state")), "succeeded") == 0,
          "lag check job: %s", j ? inv_errors(j) : "timeout");
    json_decref(j);
    CHECK(th_metric(&srv,
                    "qdb_kafka_consumer_lag{environment=\"development\",group=\"lag-group\"}") ==
              100,
          "qdb_kafka_consumer_lag is 100");
    th_step("another replica shows the same gauge, read from the state store");
    struct th_server srv2 = {0};
    CHECK(th_server_start(&srv2, url, env, 1) == 0, "second replica starts");
    const char *series = "qdb_kafka_consumer_lag{environment=\"development\",group=\"lag-group\"}";
    double gauge_until = th_now_ms() + 20000;
    while (th_metric(&srv2, series) != 100 && th_now_ms() < gauge_until)
        th_sleep_ms(200);
    CHECK(th_metric(&srv2, series) == 100, "the second replica's qdb_kafka_consumer_lag is 100");
    CHECK(th_server_stop(&srv2) == 0, "second replica stops cleanly");
    plan = plan_of(&srv, viewer);
    CHECK(plan &&
              has_warning(plan, "consumer group lag-group is 100 messages behind (threshold 10)"),
          "the plan warns about the lag");
    json_decref(plan);

    th_step("an OffsetFetch the broker refuses: a clear error naming its code");
    rd_kafka_mock_push_request_errors(mc, 9 /* OffsetFetch */, 1,
                                      RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED);
    inv_call(&srv, viewer, "GET",
             "/api/v1/kafka/consumer-groups/lag-group/lag?environment=development", NULL, &r);
    CHECK(r.status == 502 && th_is_problem(&r, 502) && strstr(r.body, "GROUP_AUTHORIZATION_FAILED"),
          "refused: %ld %s", r.status, r.body);
    th_resp_free(&r);
    rd_kafka_mock_clear_request_errors(mc, 9);

    th_step("connectors: 409 and 500 are retried, then 200; a second run is a no-op");
    CHECK(fake(&fk, "POST", "/__faults", "[{\"status\":409},{\"status\":500}]", NULL) == 204,
          "faults queued");
    j = inv_run_job(&srv, admin,
                    "{\"kind\":\"inventory.provision_connector\",\"args\":{\"connector\":"
                    "\"debezium-advisory-main\",\"environment\":\"development\"}}",
                    60000);
    jid = j ? (long long)json_integer_value(json_object_get(j, "id")) : 0;
    log = job_log_text(url, jid);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "state")), "succeeded") == 0 &&
              strcmp(inv_result_str(j, "result"), "changed") == 0,
          "provisioned: %s", j ? inv_errors(j) : "timeout");
    CHECK(strstr(log, "answered 409") && strstr(log, "answered 500") &&
              strstr(log, "created connector debezium-advisory-main (Connect answered 201)") &&
              strstr(log, "is RUNNING"),
          "the log tells the story: %s", log);
    free(log);
    json_decref(j);
    CHECK(put_count(&fk) == 3, "three PUTs: 409, 500, 201");
    j = inv_run_job(&srv, admin,
                    "{\"kind\":\"inventory.provision_connector\",\"args\":{\"connector\":"
                    "\"debezium-advisory-main\",\"environment\":\"development\"}}",
                    60000);
    CHECK(j && strcmp(inv_result_str(j, "result"), "no change") == 0, "second run: %s",
          j ? inv_result_str(j, "result") : "timeout");
    json_decref(j);
    CHECK(put_count(&fk) == 3, "and no PUT");
    json_t *cfg = NULL;
    fake(&fk, "GET", "/connectors/debezium-advisory-main/config", NULL, &cfg);
    CHECK(strcmp(json_string_value(json_object_get(cfg, "database.password")) ?: "",
                 "${vault:secret/debezium/advisory-main}") == 0,
          "Connect received the placeholder, not a value");
    json_decref(cfg);

    th_step("a 400 from Connect is final, with Connect's own message");
    CHECK(inv_status(&srv, admin, "PATCH", "/api/v1/kafka/connectors/debezium-advisory-main",
                     "{\"config\":{\"connector.class\":\"io.debezium.connector.postgresql."
                     "PostgresConnector\",\"tasks.max\":\"2\"}}") == 200,
          "config changed in the inventory");
    CHECK(fake(&fk, "POST", "/__faults",
               "[{\"status\":400,\"message\":\"Connector configuration is invalid and contains "
               "the following 1 error(s): tasks.max must be 1\"}]",
               NULL) == 204,
          "a 400 queued");
    j = inv_run_job(&srv, admin,
                    "{\"kind\":\"inventory.provision_connector\",\"args\":{\"connector\":"
                    "\"debezium-advisory-main\",\"environment\":\"development\"}}",
                    60000);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "state")), "failed") == 0 &&
              json_integer_value(json_object_get(j, "attempt")) == 1 &&
              strstr(inv_errors(j), "Kafka Connect answered 400: Connector configuration is "
                                    "invalid and contains the following 1 error(s)"),
          "failed for good: %s", j ? inv_errors(j) : "timeout");
    json_decref(j);

    th_step("a connector deleted behind the service's back: in the plan");
    j = inv_run_job(&srv, admin,
                    "{\"kind\":\"inventory.provision_connector\",\"args\":{\"connector\":"
                    "\"debezium-financing-core\",\"environment\":\"development\"}}",
                    60000);
    CHECK(j && strcmp(inv_result_str(j, "result"), "changed") == 0, "financing connector: %s",
          j ? inv_errors(j) : "timeout");
    json_decref(j);
    plan = plan_of(&srv, viewer);
    CHECK(plan && !has_diff(plan, "debezium-financing-core", "connector_missing"),
          "RUNNING: not in the plan");
    json_decref(plan);
    CHECK(fake(&fk, "DELETE", "/connectors/debezium-financing-core", NULL, NULL) == 204,
          "deleted on Connect");
    plan = plan_of(&srv, viewer);
    CHECK(plan && has_diff(plan, "debezium-financing-core", "connector_missing"),
          "missing in the plan");
    json_decref(plan);

    CHECK(th_server_stop(&srv) == 0, "clean stop");
out:
    th_server_kill(&srv);
    if (connect_pid > 0) {
        kill(connect_pid, SIGTERM);
        waitpid(connect_pid, NULL, 0);
    }
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mrk);
    free(admin);
    free(viewer);
    free(inv_seen);
    th_db_drop(url);
    free(url);
    return th_done();
}
