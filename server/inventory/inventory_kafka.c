/* Kafka through librdkafka: topics as the brokers report them (metadata of all topics,
 * which never auto-creates one), provisioning with the Admin API (CreateTopics,
 * CreatePartitions, DescribeConfigs, AlterConfigs), and a consumer group's lag from its
 * committed offsets (OffsetFetch) and the partitions' high watermarks (ListOffsets).
 * Each call makes its own short-lived client: these are rare, operator-driven calls, and
 * a client per call cannot leak state between environments. */
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inventory/inventory_internal.h"

static void step(json_t *steps, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void step(json_t *steps, const char *fmt, ...)
{
    char text[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (steps)
        json_array_append_new(steps, json_string(text));
}

static int set(rd_kafka_conf_t *conf, const char *k, const char *v, char *err, size_t errlen)
{
    char why[256];
    if (rd_kafka_conf_set(conf, k, v, why, sizeof why) != RD_KAFKA_CONF_OK) {
        snprintf(err, errlen, "%s: %s", k, why);
        return -1;
    }
    return 0;
}

/* A client for the environment's kafka target: a consumer with group.id `group` when
 * given (committed offsets need one), else a producer (admin calls, metadata). The SASL
 * password is resolved here and wiped once librdkafka has copied it. */
static rd_kafka_t *client_new(const json_t *kafka, const char *group, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    const char *proto = json_string_value(json_object_get(kafka, "security_protocol"));
    const char *mech = json_string_value(json_object_get(kafka, "sasl_mechanism"));
    const char *user = json_string_value(json_object_get(kafka, "sasl_username"));
    const char *pass = json_string_value(json_object_get(kafka, "sasl_password_secret"));
    const char *ca = json_string_value(json_object_get(kafka, "ssl_ca_file"));
    char secret[1024] = "";
    int bad = set(conf, "bootstrap.servers",
                  json_string_value(json_object_get(kafka, "bootstrap_servers")), err, errlen) ||
              set(conf, "client.id", "qdb-control-inventory", err, errlen) ||
              set(conf, "log_level", "3", err, errlen) ||
              (proto && set(conf, "security.protocol", proto, err, errlen)) ||
              (mech && set(conf, "sasl.mechanism", mech, err, errlen)) ||
              (user && set(conf, "sasl.username", user, err, errlen)) ||
              (ca && set(conf, "ssl.ca.location", ca, err, errlen));
    if (!bad && pass) {
        bad = inventory_secret_resolve(pass, secret, sizeof secret, err, errlen) != 0 ||
              set(conf, "sasl.password", secret, err, errlen);
        inventory_secret_wipe(secret, sizeof secret);
    }
    if (!bad && group)
        bad = set(conf, "group.id", group, err, errlen) ||
              set(conf, "enable.auto.commit", "false", err, errlen) ||
              set(conf, "allow.auto.create.topics", "false", err, errlen);
    if (bad) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    char why[512];
    rd_kafka_t *rk =
        rd_kafka_new(group ? RD_KAFKA_CONSUMER : RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(err, errlen, "librdkafka: %s", why);
    }
    return rk;
}

/* Metadata of every topic (a request for one named topic would auto-create it on brokers
 * that allow that, the mock cluster among them). */
static const rd_kafka_metadata_t *all_metadata(rd_kafka_t *rk, int timeout_ms, char *err,
                                               size_t errlen)
{
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);
    if (e) {
        snprintf(err, errlen, "metadata: %s", rd_kafka_err2str(e));
        return NULL;
    }
    return md;
}

static int partitions_of(const rd_kafka_metadata_t *md, const char *topic)
{
    for (int i = 0; i < md->topic_cnt; i++)
        if (strcmp(md->topics[i].topic, topic) == 0 && !md->topics[i].err)
            return md->topics[i].partition_cnt;
    return 0;
}

int inv_kafka_topic_partitions(const json_t *kafka, const char *topic, int timeout_ms,
                               int *partitions, char *err, size_t errlen)
{
    rd_kafka_t *rk = client_new(kafka, NULL, err, errlen);
    if (!rk)
        return -1;
    const rd_kafka_metadata_t *md = all_metadata(rk, timeout_ms, err, errlen);
    if (md) {
        *partitions = partitions_of(md, topic);
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_destroy(rk);
    return md ? 0 : -1;
}

int64_t inv_topic_retention(const json_t *topic, const char *env, int64_t env_cap)
{
    json_t *o = json_object_get(json_object_get(topic, "retention_by_environment"), env);
    if (json_is_integer(o))
        return json_integer_value(o);
    int64_t r = json_integer_value(json_object_get(topic, "retention_ms"));
    return env_cap > 0 && env_cap < r ? env_cap : r;
}

/* The configs the inventory sets on a topic, as Kafka names them. */
static void topic_configs(const json_t *topic, const char *env, int64_t cap, char vals[4][32])
{
    snprintf(vals[0], 32, "%lld", (long long)inv_topic_retention(topic, env, cap));
    snprintf(vals[1], 32, "%lld",
             (long long)json_integer_value(json_object_get(topic, "min_insync_replicas")));
    snprintf(vals[2], 32, "%s", json_string_value(json_object_get(topic, "compression")));
    snprintf(vals[3], 32, "%lld",
             (long long)json_integer_value(json_object_get(topic, "segment_bytes")));
}
static const char *const config_names[4] = {"retention.ms", "min.insync.replicas",
                                            "compression.type", "segment.bytes"};

/* Wait for an admin result on q; NULL (with err) when none came in time. */
static rd_kafka_event_t *admin_wait(rd_kafka_queue_t *q, const char *what, int timeout_ms,
                                    char *err, size_t errlen)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms);
    if (!ev) {
        snprintf(err, errlen,
                 "the broker did not answer %s within %d ms (the librdkafka mock cluster does "
                 "not implement it)",
                 what, timeout_ms);
        return NULL;
    }
    if (rd_kafka_event_error(ev)) {
        /* a broker without the Admin API (librdkafka's mock cluster among them) never
         * answers: librdkafka reports a local timeout waiting for the controller */
        snprintf(err, errlen, "%s: %s%s", what, rd_kafka_event_error_string(ev),
                 rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__TIMED_OUT
                     ? " (the brokers did not answer the admin request)"
                     : "");
        rd_kafka_event_destroy(ev);
        return NULL;
    }
    return ev;
}

/* Whether a broker's answer is final: retrying a refused request gets the same answer. */
static int permanent(rd_kafka_resp_err_t e)
{
    return e == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
           e == RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED ||
           e == RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED ||
           e == RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR ||
           e == RD_KAFKA_RESP_ERR_INVALID_PARTITIONS || e == RD_KAFKA_RESP_ERR_INVALID_CONFIG ||
           e == RD_KAFKA_RESP_ERR_POLICY_VIOLATION || e == RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION ||
           e == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE || e == RD_KAFKA_RESP_ERR_INVALID_REQUEST;
}

static int topic_result(const rd_kafka_topic_result_t **res, size_t n, const char *what, char *err,
                        size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
        if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            const char *msg = rd_kafka_topic_result_error_string(res[i]);
            snprintf(err, errlen, "%s %s refused by the broker: %s (%s)", what,
                     rd_kafka_topic_result_name(res[i]), rd_kafka_err2name(e),
                     msg ? msg : rd_kafka_err2str(e));
            return permanent(e) ? -2 : -1;
        }
    }
    return 0;
}

int inv_kafka_provision(const json_t *kafka, const json_t *topic, const char *env, int64_t env_cap,
                        json_t *steps, int *changed, char *err, size_t errlen)
{
    const char *name = json_string_value(json_object_get(topic, "name"));
    int want = (int)json_integer_value(json_object_get(topic, "partitions"));
    int rf = (int)json_integer_value(json_object_get(topic, "replication_factor"));
    int brokers = (int)json_integer_value(json_object_get(kafka, "broker_count"));
    int timeout = inv_target_timeout_ms();
    *changed = 0;
    if (brokers > 0 && rf > brokers) {
        step(steps, "replication factor %d capped to %d, the broker count of %s", rf, brokers, env);
        rf = brokers;
    }
    char vals[4][32];
    topic_configs(topic, env, env_cap, vals);
    rd_kafka_t *rk = client_new(kafka, NULL, err, errlen);
    if (!rk)
        return -1;
    int rc = -1;
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opt = NULL;
    rd_kafka_event_t *ev = NULL;
    const rd_kafka_metadata_t *md = all_metadata(rk, timeout, err, errlen);
    if (!md)
        goto out;
    int have = partitions_of(md, name);
    rd_kafka_metadata_destroy(md);
    char why[256];

    if (have == 0) {
        rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(name, want, rf, why, sizeof why);
        if (!nt) {
            snprintf(err, errlen, "CreateTopics %s: %s", name, why);
            rc = -2;
            goto out;
        }
        for (int i = 0; i < 4; i++)
            rd_kafka_NewTopic_set_config(nt, config_names[i], vals[i]);
        opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
        rd_kafka_AdminOptions_set_request_timeout(opt, timeout, why, sizeof why);
        rd_kafka_AdminOptions_set_operation_timeout(opt, timeout, why, sizeof why);
        rd_kafka_CreateTopics(rk, &nt, 1, opt, q);
        rd_kafka_NewTopic_destroy(nt);
        ev = admin_wait(q, "CreateTopics", timeout, err, errlen);
        if (!ev)
            goto out;
        size_t n = 0;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
        rc = topic_result(res, n, "CreateTopics", err, errlen);
        if (rc == 0) {
            step(steps,
                 "created topic %s: %d partitions, replication factor %d, retention.ms %s, "
                 "min.insync.replicas %s, compression.type %s",
                 name, want, rf, vals[0], vals[1], vals[2]);
            *changed = 1;
        }
        goto out;
    }

    if (have < want) {
        rd_kafka_NewPartitions_t *np =
            rd_kafka_NewPartitions_new(name, (size_t)want, why, sizeof why);
        opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATEPARTITIONS);
        rd_kafka_AdminOptions_set_request_timeout(opt, timeout, why, sizeof why);
        rd_kafka_CreatePartitions(rk, &np, 1, opt, q);
        rd_kafka_NewPartitions_destroy(np);
        ev = admin_wait(q, "CreatePartitions", timeout, err, errlen);
        if (!ev)
            goto out;
        size_t n = 0;
        const rd_kafka_topic_result_t **res =
            rd_kafka_CreatePartitions_result_topics(rd_kafka_event_CreatePartitions_result(ev), &n);
        rc = topic_result(res, n, "CreatePartitions", err, errlen);
        if (rc != 0)
            goto out;
        step(steps, "topic %s grown from %d to %d partitions", name, have, want);
        *changed = 1;
        rd_kafka_event_destroy(ev);
        ev = NULL;
        rd_kafka_AdminOptions_destroy(opt);
        opt = NULL;
    } else if (have > want) {
        step(steps,
             "topic %s has %d partitions, the inventory says %d: partitions are never "
             "removed (it would reorder keys); left as it is",
             name, have, want);
    } else {
        step(steps, "topic %s exists with %d partitions", name, have);
    }

    /* configs: read them, and set them only when one differs */
    rd_kafka_ConfigResource_t *cr = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, name);
    opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    rd_kafka_AdminOptions_set_request_timeout(opt, timeout, why, sizeof why);
    rd_kafka_DescribeConfigs(rk, &cr, 1, opt, q);
    rd_kafka_ConfigResource_destroy(cr);
    ev = admin_wait(q, "DescribeConfigs", timeout, err, errlen);
    if (!ev)
        goto out;
    size_t nres = 0;
    const rd_kafka_ConfigResource_t **rs =
        rd_kafka_DescribeConfigs_result_resources(rd_kafka_event_DescribeConfigs_result(ev), &nres);
    if (nres != 1 || rd_kafka_ConfigResource_error(rs[0])) {
        rd_kafka_resp_err_t e =
            nres ? rd_kafka_ConfigResource_error(rs[0]) : RD_KAFKA_RESP_ERR__FAIL;
        snprintf(err, errlen, "DescribeConfigs %s refused by the broker: %s", name,
                 rd_kafka_err2str(e));
        rc = permanent(e) ? -2 : -1;
        goto out;
    }
    size_t ncfg = 0;
    const rd_kafka_ConfigEntry_t **entries = rd_kafka_ConfigResource_configs(rs[0], &ncfg);
    int differs = 0;
    for (int k = 0; k < 4; k++) {
        const char *cur = NULL;
        for (size_t i = 0; i < ncfg; i++)
            if (strcmp(rd_kafka_ConfigEntry_name(entries[i]), config_names[k]) == 0)
                cur = rd_kafka_ConfigEntry_value(entries[i]);
        if (!cur || strcmp(cur, vals[k]) != 0) {
            step(steps, "%s of %s is %s, the inventory says %s", config_names[k], name,
                 cur ? cur : "(unset)", vals[k]);
            differs = 1;
        }
    }
    rd_kafka_event_destroy(ev);
    ev = NULL;
    rd_kafka_AdminOptions_destroy(opt);
    opt = NULL;
    if (!differs) {
        step(steps, "configs of %s already as in the inventory", name);
        rc = 0;
        goto out;
    }
    /* AlterConfigs (not incremental in librdkafka 2.0.2) sets the whole set: all four of
     * ours, which are the topic-level configs the inventory owns */
    cr = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, name);
    for (int k = 0; k < 4; k++)
        rd_kafka_ConfigResource_set_config(cr, config_names[k], vals[k]);
    opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_ALTERCONFIGS);
    rd_kafka_AdminOptions_set_request_timeout(opt, timeout, why, sizeof why);
    rd_kafka_AlterConfigs(rk, &cr, 1, opt, q);
    rd_kafka_ConfigResource_destroy(cr);
    ev = admin_wait(q, "AlterConfigs", timeout, err, errlen);
    if (!ev)
        goto out;
    rs = rd_kafka_AlterConfigs_result_resources(rd_kafka_event_AlterConfigs_result(ev), &nres);
    if (nres != 1 || rd_kafka_ConfigResource_error(rs[0])) {
        rd_kafka_resp_err_t e =
            nres ? rd_kafka_ConfigResource_error(rs[0]) : RD_KAFKA_RESP_ERR__FAIL;
        snprintf(err, errlen, "AlterConfigs %s refused by the broker: %s", name,
                 rd_kafka_err2str(e));
        rc = permanent(e) ? -2 : -1;
        goto out;
    }
    step(steps, "configs of %s set", name);
    *changed = 1;
    rc = 0;
out:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (opt)
        rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}

/* Whether topic is consumed by a group that lists `pattern` ("app.orders" or "app.*"). */
static int matches(const char *pattern, const char *topic)
{
    size_t n = strlen(pattern);
    if (n >= 2 && strcmp(pattern + n - 2, ".*") == 0)
        return strncmp(topic, pattern, n - 1) == 0;
    return strcmp(pattern, topic) == 0;
}

int inv_kafka_lag(const json_t *kafka, const json_t *group, int timeout_ms, json_t **out, char *err,
                  size_t errlen)
{
    const char *gname = json_string_value(json_object_get(group, "name"));
    rd_kafka_t *rk = client_new(kafka, gname, err, errlen);
    if (!rk)
        return -1;
    int rc = -1;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(16);
    const rd_kafka_metadata_t *md = all_metadata(rk, timeout_ms, err, errlen);
    if (!md)
        goto out;
    for (int t = 0; t < md->topic_cnt; t++) {
        size_t i;
        json_t *p;
        int want = 0;
        json_array_foreach(json_object_get(group, "topics"), i, p) want |=
            matches(json_string_value(p), md->topics[t].topic);
        if (!want || md->topics[t].err)
            continue;
        for (int k = 0; k < md->topics[t].partition_cnt; k++)
            rd_kafka_topic_partition_list_add(parts, md->topics[t].topic,
                                              md->topics[t].partitions[k].id);
    }
    rd_kafka_metadata_destroy(md);
    if (parts->cnt > 0) {
        rd_kafka_resp_err_t e = rd_kafka_committed(rk, parts, timeout_ms);
        if (e) {
            snprintf(err, errlen, "OffsetFetch for group %s: %s (%s)", gname, rd_kafka_err2name(e),
                     rd_kafka_err2str(e));
            rc = permanent(e) ? -2 : -1;
            goto out;
        }
    }
    json_t *items = json_array();
    long long total = 0;
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        if (tp->err) {
            snprintf(err, errlen, "OffsetFetch %s[%d] for group %s refused: %s (%s)", tp->topic,
                     tp->partition, gname, rd_kafka_err2name(tp->err), rd_kafka_err2str(tp->err));
            rc = permanent(tp->err) ? -2 : -1;
            json_decref(items);
            goto out;
        }
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(rk, tp->topic, tp->partition, &lo, &hi, timeout_ms);
        if (e) {
            snprintf(err, errlen, "ListOffsets %s[%d]: %s", tp->topic, tp->partition,
                     rd_kafka_err2str(e));
            json_decref(items);
            goto out;
        }
        /* no committed offset: the group would start from the earliest (or latest, by its
         * auto.offset.reset); count everything retained as behind */
        int64_t committed = tp->offset >= 0 ? tp->offset : -1;
        int64_t lag = committed >= 0 ? hi - committed : hi - lo;
        if (lag < 0)
            lag = 0;
        total += lag;
        json_array_append_new(items,
                              json_pack("{s:s,s:i,s:o,s:I,s:I}", "topic", tp->topic, "partition",
                                        tp->partition, "committed",
                                        committed >= 0 ? json_integer(committed) : json_null(),
                                        "end", (json_int_t)hi, "lag", (json_int_t)lag));
    }
    *out = json_pack("{s:o,s:I}", "partitions", items, "total", (json_int_t)total);
    rc = 0;
out:
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_destroy(rk);
    return rc;
}

int inv_kafka_topics(const json_t *kafka, int timeout_ms, json_t **map, char *err, size_t errlen)
{
    rd_kafka_t *rk = client_new(kafka, NULL, err, errlen);
    if (!rk)
        return -1;
    const rd_kafka_metadata_t *md = all_metadata(rk, timeout_ms, err, errlen);
    if (md) {
        *map = json_object();
        for (int i = 0; i < md->topic_cnt; i++)
            if (!md->topics[i].err)
                json_object_set_new(*map, md->topics[i].topic,
                                    json_integer(md->topics[i].partition_cnt));
        rd_kafka_metadata_destroy(md);
    }
    rd_kafka_destroy(rk);
    return md ? 0 : -1;
}

int inv_kafka_describe(const json_t *kafka, const json_t *names, int timeout_ms, json_t **configs,
                       char *err, size_t errlen)
{
    size_t n = json_array_size(names);
    if (n == 0) {
        *configs = json_object();
        return 0;
    }
    rd_kafka_t *rk = client_new(kafka, NULL, err, errlen);
    if (!rk)
        return -1;
    rd_kafka_ConfigResource_t **crs = calloc(n, sizeof *crs);
    for (size_t i = 0; i < n; i++)
        crs[i] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC,
                                             json_string_value(json_array_get(names, i)));
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    char why[256];
    rd_kafka_AdminOptions_set_request_timeout(opt, timeout_ms, why, sizeof why);
    rd_kafka_DescribeConfigs(rk, crs, n, opt, q);
    for (size_t i = 0; i < n; i++)
        rd_kafka_ConfigResource_destroy(crs[i]);
    free(crs);
    int rc = -1;
    rd_kafka_event_t *ev = admin_wait(q, "DescribeConfigs", timeout_ms, err, errlen);
    if (ev) {
        size_t nres = 0;
        const rd_kafka_ConfigResource_t **rs = rd_kafka_DescribeConfigs_result_resources(
            rd_kafka_event_DescribeConfigs_result(ev), &nres);
        *configs = json_object();
        for (size_t i = 0; i < nres; i++) {
            if (rd_kafka_ConfigResource_error(rs[i]))
                continue;
            json_t *c = json_object();
            size_t ncfg = 0;
            const rd_kafka_ConfigEntry_t **entries = rd_kafka_ConfigResource_configs(rs[i], &ncfg);
            for (size_t k = 0; k < ncfg; k++)
                for (int m = 0; m < 4; m++)
                    if (strcmp(rd_kafka_ConfigEntry_name(entries[k]), config_names[m]) == 0 &&
                        rd_kafka_ConfigEntry_value(entries[k]))
                        json_object_set_new(c, config_names[m],
                                            json_string(rd_kafka_ConfigEntry_value(entries[k])));
            json_object_set_new(*configs, rd_kafka_ConfigResource_name(rs[i]), c);
        }
        rd_kafka_event_destroy(ev);
        rc = 0;
    }
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}

void inv_topic_config_values(const json_t *topic, const char *env, int64_t cap, json_t **out)
{
    char vals[4][32];
    topic_configs(topic, env, cap, vals);
    *out = json_object();
    for (int m = 0; m < 4; m++)
        json_object_set_new(*out, config_names[m], json_string(vals[m]));
}
