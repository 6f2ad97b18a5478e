/* Talking to the two servers of a managed pair: what each says about itself (in recovery,
 * WAL positions, replay age), fixed statements only. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dr/dr_internal.h"
#include "inventory/inventory.h"

json_t *dr_endpoint_json(const struct inventory_pg_endpoint *ep)
{
    return json_pack("{s:s,s:i}", "host", ep->host, "port", ep->port);
}

/* Loopback spellings name one server: "localhost", "127.0.0.1" and "::1" are the same
 * machine's interface for the refusal of a drill into its own source. */
static int loopback(const char *h)
{
    return strcmp(h, "localhost") == 0 || strcmp(h, "127.0.0.1") == 0 || strcmp(h, "::1") == 0;
}

int dr_same_server(const struct inventory_pg_endpoint *a, const struct inventory_pg_endpoint *b)
{
    if (a->port != b->port)
        return 0;
    return strcmp(a->host, b->host) == 0 || (loopback(a->host) && loopback(b->host));
}

int dr_pg_value(PGconn *pg, const char *sql, char *out, size_t n, char *err, size_t errlen)
{
    PGresult *r = PQexec(pg, sql);
    int rc = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQnfields(r) >= 1) {
        rc = PQgetisnull(r, 0, 0) ? 0 : 1;
        snprintf(out, n, "%s", rc ? PQgetvalue(r, 0, 0) : "");
    } else {
        snprintf(err, errlen, "%s", PQerrorMessage(pg));
        size_t l = strlen(err);
        while (l && (err[l - 1] == '\n' || err[l - 1] == ' '))
            err[--l] = '\0';
    }
    PQclear(r);
    return rc;
}

int dr_pg_command(PGconn *pg, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
    if (rc) {
        snprintf(err, errlen, "%s", PQerrorMessage(pg));
        size_t l = strlen(err);
        while (l && (err[l - 1] == '\n' || err[l - 1] == ' '))
            err[--l] = '\0';
    }
    PQclear(r);
    return rc;
}

int dr_lsn_parse(const char *s, uint64_t *out)
{
    char *end = NULL;
    if (!s || !s[0])
        return -1;
    unsigned long long hi = strtoull(s, &end, 16);
    if (!end || *end != '/')
        return -1;
    const char *lo_s = end + 1;
    unsigned long long lo = strtoull(lo_s, &end, 16);
    if (end == lo_s || *end || hi > 0xffffffffULL || lo > 0xffffffffULL)
        return -1;
    *out = ((uint64_t)hi << 32) | (uint64_t)lo;
    return 0;
}

/* One statement for each role, so that a probe is one round trip. */
static const char probe_sql[] =
    "SELECT pg_is_in_recovery(), "
    "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() "
    "END::text, pg_last_wal_receive_lsn()::text, "
    "extract(epoch FROM now() - pg_last_xact_replay_timestamp())";

void dr_server_probe(const struct inventory_pg_endpoint *ep, const char *db, int timeout_s,
                     struct dr_server_state *st, PGconn **keep)
{
    memset(st, 0, sizeof *st);
    st->replay_age_s = -1;
    if (keep)
        *keep = NULL;
    PGconn *pg = inventory_pg_connect(ep, db, timeout_s, st->error, sizeof st->error);
    if (!pg)
        return;
    PGresult *r = PQexec(pg, probe_sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        snprintf(st->error, sizeof st->error, "%s", PQerrorMessage(pg));
        PQclear(r);
        PQfinish(pg);
        return;
    }
    st->reachable = 1;
    st->in_recovery = PQgetvalue(r, 0, 0)[0] == 't';
    if (!PQgetisnull(r, 0, 1))
        dr_lsn_parse(PQgetvalue(r, 0, 1), &st->lsn);
    if (!PQgetisnull(r, 0, 2))
        dr_lsn_parse(PQgetvalue(r, 0, 2), &st->receive_lsn);
    if (!PQgetisnull(r, 0, 3))
        st->replay_age_s = strtod(PQgetvalue(r, 0, 3), NULL);
    PQclear(r);
    if (keep)
        *keep = pg;
    else
        PQfinish(pg);
}
