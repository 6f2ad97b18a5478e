/* The transactional outbox: an event written in the caller's transaction (audit.h). The
 * relay that publishes the rows is audit_relay.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "audit/audit_internal.h"
#include "platform/config.h"
#include "platform/log.h"

#define SUBJECT_MAX 256

static struct {
    const char *topic_prefix;
    const char *source;
} outbox_settings = {"app.controlplane", "urn:qdb:control-plane"};

/* Kafka's legal topic characters; the room and a dot are appended to the prefix. */
static int topic_chars_ok(const char *s)
{
    if (!s[0])
        return 0;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '.' || *c == '_' || *c == '-'))
            return 0;
    return 1;
}

int audit_outbox_config_load(void)
{
    const char *prefix = NULL, *source = NULL;
    if (config_str("QDB_KAFKA_TOPIC_PREFIX", "app.controlplane", &prefix) != 0 ||
        config_str("QDB_EVENT_SOURCE", "urn:qdb:control-plane", &source) != 0)
        return -1;
    /* 249 is Kafka's topic name limit; leave room for ".<room>". */
    if (!topic_chars_ok(prefix) || strlen(prefix) > 200)
        return config_error("QDB_KAFKA_TOPIC_PREFIX",
                            "must be 1 to 200 of a-z A-Z 0-9 . _ - (a Kafka topic name)");
    if (!source[0])
        return config_error("QDB_EVENT_SOURCE", "must not be empty (a URI reference)");
    outbox_settings.topic_prefix = prefix;
    outbox_settings.source = source;
    return 0;
}

static int name_ok(const char *s, int allow_underscore)
{
    if (!s || !(s[0] >= 'a' && s[0] <= 'z') || strlen(s) > 64)
        return 0;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '-' ||
              (allow_underscore && *c == '_')))
            return 0;
    return 1;
}

void audit_event_topic(const char *room, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s.%s", outbox_settings.topic_prefix, room ? room : "");
}

int audit_event_emit(struct db_conn *conn, const struct audit_actor *actor,
                     const struct audit_event *ev)
{
    static const struct audit_actor system_actor = {"system", "system", "system", NULL};
    if (!actor)
        actor = &system_actor;
    if (!ev || !name_ok(ev->room, 0) || !name_ok(ev->verb, 1) || !ev->subject ||
        !ev->subject[0] || strlen(ev->subject) > SUBJECT_MAX) {
        log_error("audit: event refused: room, verb or subject malformed (%s.%s)",
                  ev && ev->room ? ev->room : "?", ev && ev->verb ? ev->verb : "?");
        return DB_HARD;
    }
    if (PQtransactionStatus(db_pgconn(conn)) != PQTRANS_INTRANS) {
        /* Outside a transaction the event would not commit with the change it describes. */
        log_error("audit: event %s.%s emitted outside a transaction; refused", ev->room,
                  ev->verb);
        return DB_HARD;
    }
    char topic[256], type[160];
    audit_event_topic(ev->room, topic, sizeof topic);
    snprintf(type, sizeof type, "qa.qdb.controlplane.%s.%s", ev->room, ev->verb);

    int rc = DB_HARD;
    json_t *data = NULL;
    char *text = NULL;
    const json_t *d = json_is_null(ev->data) ? NULL : ev->data;
    if (d && !(data = audit_scrub_new(d)))
        goto out;
    json_t *ce = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "specversion", "1.0", "source",
                           outbox_settings.source, "type", type, "subject", ev->subject,
                           "actor", actor->subject, "actortype", actor->auth_method);
    if (!ce)
        goto out;
    if (data) {
        json_object_set_new(ce, "datacontenttype", json_string("application/json"));
        json_object_set(ce, "data", data);
    }
    text = json_dumps(ce, JSON_COMPACT);
    json_decref(ce);
    if (!text)
        goto out;
    rc = audit_store_outbox_add(conn, topic, ev->subject, text, NULL);
    if (rc > 0)
        rc = 0;
out:
    if (rc == DB_HARD && !text)
        log_error("audit: event %s could not be built (out of memory?)", type);
    json_decref(data);
    free(text);
    return rc;
}

int audit_event_emit_http(struct db_conn *conn, struct http_request *req,
                          const struct audit_event *ev)
{
    struct audit_actor a = audit_actor_of_request(req);
    return audit_event_emit(conn, &a, ev);
}
