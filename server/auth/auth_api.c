/* HTTP handlers of the auth room (me, sign-in configuration, API tokens) and the
 * `qdb-control token create` command. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "auth/auth_internal.h"
#include "platform/config.h"
#include "platform/jsonspec.h"
#include "platform/log.h"
#include "platform/rfc3339.h"

#define TOKEN_DEFAULT_TTL_S (90L * 86400L)
#define TOKEN_MAX_TTL_S (400L * 86400L)

static json_t *time_or_null(int64_t t)
{
    if (t <= 0)
        return json_null();
    char s[RFC3339_TEXT_MAX];
    if (rfc3339_format_ms(t * INT64_C(1000000), s, sizeof s) < 0)
        return json_null();
    return json_string(s);
}

void auth_api_me(struct http_request *req)
{
    const struct http_principal *p = http_principal(req);
    json_t *roles = json_array();
    for (int r = HTTP_VIEWER; r <= (int)p->role; r++)
        json_array_append_new(roles, json_string(auth_role_name((enum http_perm)r)));
    json_t *o = json_pack("{s:s,s:s,s:s,s:o,s:s,s:o}", "subject", p->subject, "name", p->name,
                          "role", auth_role_name(p->role), "roles", roles, "auth_method", p->method,
                          "expires_at", time_or_null(p->expires_at));
    json_object_set_new(o, "token_id", p->token_id[0] ? json_string(p->token_id) : json_null());
    json_object_set(o, "environments", p->environments ? p->environments : json_null());
    http_reply_json(req, 200, o);
}

void auth_api_config(struct http_request *req)
{
    json_t *o = json_pack(
        "{s:s,s:s,s:s,s:s}", "mode", auth_cfg.mode == AUTH_MODE_DEV ? "dev" : "oidc", "issuer",
        auth_cfg.issuer, "client_id", auth_cfg.client_id, "scope", auth_cfg.scope);
    if (auth_cfg.mode == AUTH_MODE_DEV) {
        json_object_set_new(o, "authorization_endpoint", json_string("/dev-issuer/authorize"));
        json_object_set_new(o, "token_endpoint", json_string("/dev-issuer/oauth/token"));
        json_object_set_new(o, "end_session_endpoint", json_null());
        http_reply_json(req, 200, o);
        return;
    }
    json_t *d = auth_discovery();
    if (!d) {
        json_decref(o);
        http_reply_header(req, "Retry-After", "5");
        http_reply_problem(req, QDB_E_AUTH_UNAVAILABLE,
                           "the token issuer's discovery document cannot be fetched");
        return;
    }
    static const char *const members[] = {"authorization_endpoint", "token_endpoint",
                                          "end_session_endpoint"};
    for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
        json_t *v = json_object_get(d, members[i]);
        json_object_set(o, members[i], json_is_string(v) ? v : json_null());
    }
    json_decref(d);
    http_reply_json(req, 200, o);
}

void auth_api_tokens_list(struct http_request *req)
{
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    json_t *items = NULL;
    int rc = auth_store_token_list(c, &items);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:o}", "items", items ? items : json_array()));
}

struct create_tx {
    const struct auth_token_spec *spec;
    const char *hash;
    struct http_request *req; /* NULL from the command line */
    json_t *row;              /* out */
};

static int create_tx(struct db_conn *c, void *cls)
{
    struct create_tx *t = cls;
    json_decref(t->row); /* a retried transaction starts again */
    t->row = NULL;
    int rc = auth_store_token_insert(c, t->spec, t->hash, &t->row);
    if (rc <= 0)
        return rc < 0 ? rc : DB_HARD;
    struct audit_entry e = {
        .action = "token.create",
        .resource_type = "api_token",
        .resource_id = json_string_value(json_object_get(t->row, "id")),
        .after = t->row, /* the public row: never the secret or its hash */
    };
    char subject[128];
    snprintf(subject, sizeof subject, "tokens/%s", e.resource_id ? e.resource_id : "");
    /* the public row, as the audit record's: the secret is added to the reply only later */
    struct audit_event ev = {.room = "auth", .verb = "token_created", .subject = subject,
                             .data = t->row};
    if (t->req)
        return (rc = audit_record_http(c, t->req, &e)) < 0 ? rc
                                                           : audit_event_emit_http(c, t->req, &ev);
    struct audit_actor actor = {"cli", "qdb-control token create", "system", NULL};
    return (rc = audit_record(c, &actor, "cli", "", &e)) < 0 ? rc
                                                              : audit_event_emit(c, &actor, &ev);
}

/* Validate environments: an array of 1..50 good names, or NULL. */
static const char *environments_problem(const json_t *envs)
{
    if (!envs || json_is_null(envs))
        return NULL;
    if (!json_is_array(envs) || json_array_size(envs) < 1 || json_array_size(envs) > 50)
        return "environments must be a list of 1 to 50 names (omit it for all)";
    size_t i;
    const json_t *e;
    json_array_foreach(envs, i, e)
    {
        const char *why = json_is_string(e) ? auth_environment_problem(json_string_value(e))
                                            : "an environment name is a string";
        if (why)
            return why;
    }
    return NULL;
}

void auth_api_tokens_create(struct http_request *req)
{
    const char *const *roles = http_role_names();
    const char *name = NULL, *expires_in = NULL;
    int role = 0;
    json_t *envs = NULL;
    char *secret = NULL;
    const struct jspec_field fields[] = {
        {"name", JSPEC_STRING, 1, 1, 100, NULL, &name, NULL},
        {"role", JSPEC_ENUM, 1, 0, 0, roles, &role, NULL},
        {"environments", JSPEC_ARRAY, 0, 0, 0, NULL, &envs, NULL},
        {"expires_in", JSPEC_STRING, 0, 1, 16, NULL, &expires_in, NULL},
        JSPEC_END,
    };
    if (jspec_parse(req, http_body(req), fields, NULL, 0) != 0)
        return;
    const char *why = auth_token_name_problem(name);
    if (why) {
        http_reply_invalid(req, "name", "%s", why);
        return;
    }
    if ((why = environments_problem(envs)) != NULL) {
        http_reply_invalid(req, "environments", "%s", why);
        return;
    }
    long ttl = TOKEN_DEFAULT_TTL_S;
    if (expires_in &&
        (config_parse_seconds(expires_in, &ttl) != 0 || ttl < 60 || ttl > TOKEN_MAX_TTL_S)) {
        http_reply_invalid(req, "expires_in",
                           "expires_in is a duration like 30d, between 1m and 400d");
        return;
    }
    const struct http_principal *p = http_principal(req);
    struct auth_token_spec spec = {name, role + HTTP_VIEWER, envs, ttl, p->subject};
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    secret = auth_api_token_new();
    if (!secret) {
        http_reply_problem(req, QDB_E_INTERNAL, "no randomness for a token");
        return;
    }
    char hash[65];
    auth_sha256_hex(secret, strlen(secret), hash);
    struct create_tx t = {&spec, hash, req, NULL};
    int rc = db_tx(c, create_tx, &t);
    if (rc < 0) {
        json_decref(t.row);
        http_reply_db_error(req, rc);
        goto out;
    }
    log_event(LOG_INFO, "api token created",
              json_pack("{s:s,s:s,s:s}", "token_id",
                        json_string_value(json_object_get(t.row, "id")), "role",
                        auth_role_name((enum http_perm)spec.role), "by", p->subject));
    json_object_set_new(t.row, "token", json_string(secret)); /* shown once, to the caller */
    http_reply_header(req, "Cache-Control", "no-store");
    http_reply_json(req, 201, t.row);
out:
    if (secret)
        OPENSSL_cleanse(secret, strlen(secret));
    free(secret);
}

struct revoke_tx {
    const char *id;
    struct http_request *req;
    json_t *row;
    int found;
};

static int revoke_tx(struct db_conn *c, void *cls)
{
    struct revoke_tx *t = cls;
    json_decref(t->row);
    t->row = NULL;
    int n = auth_store_token_revoke(c, t->id, &t->row);
    if (n <= 0)
        return n;
    t->found = 1;
    struct audit_entry e = {
        .action = "token.revoke",
        .resource_type = "api_token",
        .resource_id = t->id,
        .after = t->row,
    };
    char subject[128];
    snprintf(subject, sizeof subject, "tokens/%s", t->id);
    struct audit_event ev = {.room = "auth", .verb = "token_revoked", .subject = subject,
                             .data = t->row};
    int rc = audit_record_http(c, t->req, &e);
    return rc < 0 ? rc : audit_event_emit_http(c, t->req, &ev);
}

static int uuid_shaped(const char *s)
{
    size_t n = strlen(s);
    if (n != 36)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? c != '-'
                 : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
            return 0;
    }
    return 1;
}

void auth_api_tokens_revoke(struct http_request *req)
{
    const char *id = http_param(req, "id");
    if (!id || !uuid_shaped(id)) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no API token with that id");
        return;
    }
    struct db_conn *c = http_db_or_reply(req);
    if (!c)
        return;
    struct revoke_tx t = {id, req, NULL, 0};
    int rc = db_tx(c, revoke_tx, &t);
    json_decref(t.row);
    if (rc < 0) {
        http_reply_db_error(req, rc);
        return;
    }
    if (!t.found) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no API token with that id");
        return;
    }
    /* At once here; other replicas hear it through the listener (within a second). */
    if (auth_token_cache)
        auth_cache_evict(auth_token_cache, id);
    log_event(LOG_INFO, "api token revoked",
              json_pack("{s:s,s:s}", "token_id", id, "by", http_principal(req)->subject));
    http_reply_empty(req, 204);
}

/* ---- qdb-control token create ---- */

static int cli_usage(void)
{
    fprintf(stderr, "usage: qdb-control token create --name N --role viewer|operator|admin "
                    "[--environment E]... [--expires 30d]\n");
    return 2;
}

int auth_cli_token(struct qdb_app *app, int argc, char **argv)
{
    int status = 1;
    char *secret = NULL;
    json_t *envs = NULL;
    struct db_conn *c = NULL;
    const char *name = NULL, *role_s = NULL, *expires = NULL;
    if (argc < 2 || strcmp(argv[1], "create") != 0)
        return cli_usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            return cli_usage();
        const char *v = argv[++i];
        if (strcmp(a, "--name") == 0)
            name = v;
        else if (strcmp(a, "--role") == 0)
            role_s = v;
        else if (strcmp(a, "--expires") == 0)
            expires = v;
        else if (strcmp(a, "--environment") == 0) {
            const char *why = auth_environment_problem(v);
            if (why) {
                fprintf(stderr, "qdb-control: --environment: %s\n", why);
                status = 2;
                goto out;
            }
            if (!envs)
                envs = json_array();
            json_array_append_new(envs, json_string(v));
        } else {
            status = cli_usage();
            goto out;
        }
    }
    int role = auth_role_parse(role_s);
    const char *why = auth_token_name_problem(name);
    if (why || role < 0) {
        fprintf(stderr, "qdb-control: %s\n", why ? why : "--role is viewer, operator or admin");
        status = 2;
        goto out;
    }
    long ttl = TOKEN_DEFAULT_TTL_S;
    if (expires &&
        (config_parse_seconds(expires, &ttl) != 0 || ttl < 60 || ttl > TOKEN_MAX_TTL_S)) {
        fprintf(stderr, "qdb-control: --expires is a duration like 30d, between 1m and 400d\n");
        status = 2;
        goto out;
    }
    c = db_acquire(app->pool, 10000);
    if (!c) {
        fprintf(stderr, "qdb-control: the state store cannot be reached\n");
        goto out;
    }
    secret = auth_api_token_new();
    if (!secret)
        goto out;
    char hash[65];
    auth_sha256_hex(secret, strlen(secret), hash);
    struct auth_token_spec spec = {name, role, envs, ttl, "cli"};
    struct create_tx t = {&spec, hash, NULL, NULL};
    int rc = db_tx(c, create_tx, &t);
    if (rc < 0) {
        json_decref(t.row);
        fprintf(stderr, "qdb-control: could not store the token (%s)\n",
                rc == DB_RETRY ? "state store unavailable" : "state store error");
        goto out;
    }
    log_event(LOG_INFO, "api token created",
              json_pack("{s:s,s:s,s:s}", "token_id",
                        json_string_value(json_object_get(t.row, "id")), "role",
                        auth_role_name((enum http_perm)role), "by", "cli"));
    json_decref(t.row);
    printf("%s\n", secret);
    fflush(stdout);
    status = 0;
out:
    if (c)
        db_release(app->pool, c);
    if (secret)
        OPENSSL_cleanse(secret, strlen(secret));
    free(secret);
    json_decref(envs);
    return status;
}
