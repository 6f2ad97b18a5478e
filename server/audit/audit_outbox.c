/* The transactional outbox: an event written in the caller's transaction (audit.h). The
 * relay that publishes the rows is audit_relay.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "audit/audit_internal.h"
#include "audit/audit_outbox_internal.h"
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

static const struct audit_actor system_actor = {"system", "system", "system", NULL};

/* The CloudEvent of `ev` without "id" and "time" (the insert sets them from the row), as a
 * new object; *topic gets its topic. NULL after logging why (a malformed event is a bug). */
static json_t *event_new(const struct audit_actor *actor, const struct audit_event *ev, char *topic,
                         size_t topiclen)
{
    if (!ev || !name_ok(ev->room, 0) || !name_ok(ev->verb, 1) || !ev->subject || !ev->subject[0] ||
        strlen(ev->subject) > SUBJECT_MAX) {
        log_error("audit: event refused: room, verb or subject malformed (%s.%s)",
                  ev && ev->room ? ev->room : "?", ev && ev->verb ? ev->verb : "?");
        return NULL;
    }
    char type[160];
    audit_event_topic(ev->room, topic, topiclen);
    snprintf(type, sizeof type, "qa.qdb.controlplane.%s.%s", ev->room, ev->verb);
    json_t *data = NULL;
    const json_t *d = json_is_null(ev->data) ? NULL : ev->data;
    if (d && !(data = audit_scrub_new(d))) {
        log_error("audit: event %s could not be built (out of memory?)", type);
        return NULL;
    }
    json_t *ce = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s}", "specversion", "1.0", "source",
                           outbox_settings.source, "type", type, "subject", ev->subject, "actor",
                           actor->subject, "actortype", actor->auth_method);
    if (ce && data) {
        json_object_set_new(ce, "datacontenttype", json_string("application/json"));
        json_object_set(ce, "data", data);
    }
    json_decref(data);
    if (!ce)
        log_error("audit: event %s could not be built (out of memory?)", type);
    return ce;
}

/* After the commit of a transaction that emitted: the relay of this replica (when it leads)
 * publishes at once instead of at its next poll. */
static void kick_after_commit(struct db_conn *conn, void *cls)
{
    (void)conn;
    (void)cls;
    audit_relay_kick();
}

static int in_transaction(struct db_conn *conn, const char *room, const char *verb)
{
    if (PQtransactionStatus(db_pgconn(conn)) == PQTRANS_INTRANS)
        return 1;
    /* Outside a transaction the event would not commit with the change it describes. */
    log_error("audit: event %s.%s emitted outside a transaction; refused", room ? room : "?",
              verb ? verb : "?");
    return 0;
}

int audit_event_emit(struct db_conn *conn, const struct audit_actor *actor,
                     const struct audit_event *ev)
{
    if (!actor)
        actor = &system_actor;
    char topic[256];
    json_t *ce = event_new(actor, ev, topic, sizeof topic);
    if (!ce)
        return DB_HARD;
    if (!in_transaction(conn, ev->room, ev->verb)) {
        json_decref(ce);
        return DB_HARD;
    }
    char *text = json_dumps(ce, JSON_COMPACT);
    json_decref(ce);
    if (!text)
        return DB_HARD;
    int rc = audit_store_outbox_add(conn, topic, ev->subject, text, NULL);
    free(text);
    if (rc > 0) {
        (void)db_on_commit(conn, kick_after_commit, NULL); /* a full hook list: the poll */
        rc = 0;
    }
    return rc;
}

int audit_events_emit(struct db_conn *conn, const struct audit_actor *actor,
                      const struct audit_event *evs, size_t n)
{
    if (n == 0)
        return 0;
    if (!actor)
        actor = &system_actor;
    if (!in_transaction(conn, evs[0].room, evs[0].verb))
        return DB_HARD;
    json_t *batch = json_array();
    int rc = batch ? 0 : DB_HARD;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char topic[256];
        json_t *ce = event_new(actor, &evs[i], topic, sizeof topic);
        if (!ce || json_array_append_new(batch, json_pack("{s:s,s:s,s:o}", "topic", topic, "key",
                                                          evs[i].subject, "event", ce)) != 0)
            rc = DB_HARD;
    }
    if (rc == 0) {
        rc = audit_store_outbox_add_many(conn, batch);
        if (rc >= 0) {
            rc = rc == (int)n ? 0 : DB_HARD;
            (void)db_on_commit(conn, kick_after_commit, NULL);
        }
    }
    json_decref(batch);
    return rc;
}

int audit_event_chain_broken(struct db_conn *conn, const struct audit_verify_result *r)
{
    json_t *data =
        json_pack("{s:I,s:s,s:I,s:I,s:I}", "first_broken_seq", (json_int_t)r->first_broken_seq,
                  "reason", r->reason, "checked", (json_int_t)r->checked, "from_seq",
                  (json_int_t)r->from_seq, "to_seq", (json_int_t)r->to_seq);
    char subject[64];
    snprintf(subject, sizeof subject, "audit/chain");
    struct audit_event ev = {
        .room = "audit", .verb = "chain_broken", .subject = subject, .data = data};
    int rc;
    if (PQtransactionStatus(db_pgconn(conn)) == PQTRANS_INTRANS) {
        rc = audit_event_emit(conn, NULL, &ev);
    } else {
        /* a verification reads outside a transaction: the event is its own */
        rc = db_begin(conn);
        if (rc == 0)
            rc = audit_event_emit(conn, NULL, &ev);
        if (rc == 0)
            rc = db_commit(conn);
        else
            db_rollback(conn);
    }
    json_decref(data);
    return rc < 0 ? rc : 0;
}

int audit_event_emit_http(struct db_conn *conn, struct http_request *req,
                          const struct audit_event *ev)
{
    struct audit_actor a = audit_actor_of_request(req);
    return audit_event_emit(conn, &a, ev);
}
