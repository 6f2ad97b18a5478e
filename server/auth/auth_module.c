/* The auth room's life cycle: settings, init (verifier, dev issuer, caches, the HTTP hook,
 * metrics), start (the JWKS refresher, the API token listener, the last_used_at flusher),
 * stop, and the `token` command. */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/auth_internal.h"
#include "platform/config.h"
#include "platform/log.h"

struct auth_settings auth_cfg;
static char *dev_issuer_url; /* owned, dev mode */
static int curl_started;
static struct db_settings sync_db; /* the listener's and the flusher's connections */

static int is_loopback_host(const char *h)
{
    return strncmp(h, "127.", 4) == 0 || strcmp(h, "::1") == 0 || strcmp(h, "localhost") == 0;
}

static int parse_algs(const char *s)
{
    auth_cfg.nalgs = 0;
    const char *p = s;
    while (*p) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        char one[16];
        while (n && *p == ' ')
            p++, n--;
        while (n && p[n - 1] == ' ')
            n--;
        if (n == 0 || n >= sizeof one || auth_cfg.nalgs >= AUTH_MAX_ALGS)
            return -1;
        memcpy(one, p, n);
        one[n] = '\0';
        int a = auth_alg_parse(one); /* none and HS* are refused here */
        if (a < 0)
            return -1;
        auth_cfg.algs[auth_cfg.nalgs++] = a;
        if (!end)
            break;
        p = end + 1;
    }
    return auth_cfg.nalgs > 0 ? 0 : -1;
}

static int auth_config_load(void)
{
    static const char *const modes[] = {"oidc", "dev", NULL};
    int mode = 0;
    const char *algs = NULL;
    memset(&auth_cfg, 0, sizeof auth_cfg);
    if (config_enum("QDB_AUTH_MODE", "oidc", modes, &mode) != 0)
        return -1;
    auth_cfg.mode = (enum auth_mode)mode;
    if (config_str("QDB_OIDC_AUDIENCE", "qdb-control", &auth_cfg.audience) != 0 ||
        config_str("QDB_OIDC_CLIENT_ID", "qdb-console", &auth_cfg.client_id) != 0 ||
        config_str("QDB_OIDC_SCOPE", "openid", &auth_cfg.scope) != 0 ||
        config_str("QDB_OIDC_CA_FILE", NULL, &auth_cfg.ca_file) != 0 ||
        config_str("QDB_OIDC_ALGS", "RS256", &algs) != 0 ||
        config_str("QDB_AUTH_ROLE_VIEWER", "qdb-viewer", &auth_cfg.role_names[HTTP_VIEWER]) != 0 ||
        config_str("QDB_AUTH_ROLE_OPERATOR", "qdb-operator", &auth_cfg.role_names[HTTP_OPERATOR]) !=
            0 ||
        config_str("QDB_AUTH_ROLE_ADMIN", "qdb-admin", &auth_cfg.role_names[HTTP_ADMIN]) != 0 ||
        config_seconds("QDB_OIDC_HTTP_TIMEOUT", 5, 1, 60, &auth_cfg.http_timeout_s) != 0 ||
        config_seconds("QDB_DEV_TOKEN_TTL", 3600, 60, 86400, &auth_cfg.dev_token_ttl_s) != 0 ||
        config_seconds("QDB_OIDC_JWKS_MIN_AGE", AUTH_JWKS_MIN_AGE_S, 1, AUTH_JWKS_MAX_AGE_S,
                       &auth_cfg.jwks_min_age_s) != 0 ||
        config_int("QDB_AUTH_CACHE_SIZE", 4096, 16, 1000000, &auth_cfg.cache_size) != 0 ||
        config_seconds("QDB_AUTH_LAST_USED_INTERVAL", 60, 1, 3600,
                       &auth_cfg.last_used_interval_s) != 0)
        return -1;
    if (parse_algs(algs) != 0)
        return config_error("QDB_OIDC_ALGS",
                            "'%s' must list RS256, RS384, RS512, ES256 or ES384 (comma-separated; "
                            "none and HS* are never accepted)",
                            algs);
    if (!*auth_cfg.audience)
        return config_error("QDB_OIDC_AUDIENCE", "must not be empty");
    if (strlen(auth_cfg.client_id) > 100 || !*auth_cfg.client_id)
        return config_error("QDB_OIDC_CLIENT_ID", "must be 1 to 100 characters");
    if (auth_cfg.ca_file && access(auth_cfg.ca_file, R_OK) != 0)
        return config_error("QDB_OIDC_CA_FILE", "'%s' cannot be read", auth_cfg.ca_file);
    /* QDB_CA_FILE is the one CA bundle of every outgoing call; QDB_OIDC_CA_FILE, its older
     * name for the issuer alone, still wins when set. */
    if (!auth_cfg.ca_file && config_ca_file(&auth_cfg.ca_file) != 0)
        return -1;
    for (int r = HTTP_VIEWER; r <= HTTP_ADMIN; r++)
        if (!*auth_cfg.role_names[r])
            return config_error(r == HTTP_VIEWER     ? "QDB_AUTH_ROLE_VIEWER"
                                : r == HTTP_OPERATOR ? "QDB_AUTH_ROLE_OPERATOR"
                                                     : "QDB_AUTH_ROLE_ADMIN",
                                "must not be empty");

    if (auth_cfg.mode == AUTH_MODE_OIDC) {
        const char *iss = NULL;
        if (config_str("QDB_OIDC_ISSUER", NULL, &iss) != 0)
            return -1;
        if (!iss)
            return config_error("QDB_OIDC_ISSUER",
                                "required with QDB_AUTH_MODE=oidc (e.g. "
                                "https://auth.qdb.qa/realms/qdb-one); use QDB_AUTH_MODE=dev for "
                                "local work");
        if ((strncmp(iss, "https://", 8) != 0 && strncmp(iss, "http://", 7) != 0) ||
            strlen(iss) > 512)
            return config_error("QDB_OIDC_ISSUER", "'%s' is not an http(s) URL", iss);
        auth_cfg.issuer = iss;
        return 0;
    }
    /* Dev mode: anyone who can reach the server can mint an admin token, so it must only
     * listen on loopback. */
    const char *listen = NULL;
    char host[256];
    uint16_t port = 0;
    config_str("QDB_LISTEN", "127.0.0.1:8080", &listen);
    if (config_parse_listen(listen, host, sizeof host, &port) != 0)
        return config_error("QDB_LISTEN", "'%s' is not host:port", listen);
    if (!is_loopback_host(host))
        return config_error("QDB_AUTH_MODE",
                            "dev mode lets anyone sign in with any role, so it only runs on a "
                            "loopback QDB_LISTEN (127.0.0.1, ::1, localhost), not '%s'",
                            host);
    free(dev_issuer_url);
    size_t n = strlen(host) + 64;
    dev_issuer_url = malloc(n);
    if (!dev_issuer_url)
        return config_error("QDB_AUTH_MODE", "out of memory");
    snprintf(dev_issuer_url, n,
             strchr(host, ':') ? "http://[%s]:%u/dev-issuer" : "http://%s:%u/dev-issuer", host,
             (unsigned)port);
    auth_cfg.issuer = dev_issuer_url;
    return 0;
}

static int auth_init(struct qdb_app *app)
{
    sync_db.url = app->cfg->database_url;
    sync_db.statement_timeout_ms = app->cfg->db_statement_timeout_ms;
    sync_db.connect_timeout_s = app->cfg->db_connect_timeout_s;
    if (auth_caches_init() != 0) {
        log_error("auth: no memory for the principal caches");
        return -1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("libcurl could not start");
        return -1;
    }
    curl_started = 1;
    if (auth_cfg.mode == AUTH_MODE_DEV) {
        if (auth_dev_start() != 0)
            return -1;
        log_event(LOG_WARN,
                  "auth: DEV MODE. The built-in dev issuer lets anyone who reaches this "
                  "server sign in with any role; never use it outside your own machine",
                  json_pack("{s:s}", "issuer", auth_cfg.issuer));
    } else {
        if (auth_verifier_init(auth_cfg.issuer, NULL, NULL) != 0)
            return -1;
        /* the console exchanges its sign-in code at the issuer's token endpoint */
        if (http_static_allow_connect(auth_cfg.issuer) != 0)
            log_event(LOG_WARN,
                      "auth: the console may not reach the issuer (its URL does not fit "
                      "the Content-Security-Policy)",
                      json_pack("{s:s}", "issuer", auth_cfg.issuer));
        log_event(LOG_INFO, "auth: OIDC",
                  json_pack("{s:s,s:s,s:s}", "issuer", auth_cfg.issuer, "audience",
                            auth_cfg.audience, "client_id", auth_cfg.client_id));
    }
    if (auth_metrics_init() != 0)
        return -1;
    http_set_authenticator(auth_authenticate, NULL);
    http_set_authenticator_try(auth_authenticate_try, NULL);
    return 0;
}

static int auth_start(struct qdb_app *app)
{
    (void)app;
    if (auth_refresher_start() != 0)
        return -1;
    return auth_sync_start(&sync_db);
}

static void auth_stop(void)
{
    http_set_authenticator_try(NULL, NULL);
    http_set_authenticator(NULL, NULL);
    auth_sync_stop();
    auth_verifier_free(); /* stops the refresher first */
    auth_caches_free();
    auth_dev_stop();
    free(dev_issuer_url);
    dev_issuer_url = NULL;
    if (curl_started)
        curl_global_cleanup();
    curl_started = 0;
}

static int auth_run_command(struct qdb_app *app, int argc, char **argv)
{
    int rc = auth_cli_token(app, argc, argv);
    free(dev_issuer_url);
    dev_issuer_url = NULL;
    return rc;
}

const struct qdb_module auth_module = {
    .name = "auth",
    .config_load = auth_config_load,
    .init = auth_init,
    .start = auth_start,
    .stop = auth_stop,
    .command = "token",
    .run_command = auth_run_command,
    .command_usage = "token create --name N --role viewer|operator|admin [--environment E]... "
                     "[--expires 30d]   print a new API token",
    /* the token is audited (the chain key); no OIDC setting is needed to make one */
    .command_needs = (const char *const[]){"audit", NULL},
};
