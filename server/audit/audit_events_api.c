/* HTTP handler of /api/v1/events: the state of the outbox and its relay. */
#include "audit/audit.h"
#include "audit/audit_outbox_internal.h"
#include "platform/http.h"

void audit_api_events_status(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    /* read now rather than the relay's last count: a test or an operator that just wrote an
     * event sees it */
    struct audit_outbox_state st;
    int rc = audit_store_outbox_state(c, &st);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return;
    }
    http_reply_json(req, 200,
                    json_pack("{s:I,s:o,s:I,s:I,s:b}", "backlog", (json_int_t)st.backlog,
                              "oldest_age_seconds",
                              st.oldest_age_s >= 0 ? json_real(st.oldest_age_s) : json_null(),
                              "published_total", (json_int_t)st.published_total,
                              "dead_lettered_total", (json_int_t)st.dead_lettered_total,
                              "kafka_configured", audit_relay_kafka_configured()));
}
