/* Configuration from environment variables. Every variable is validated at start-up; a bad
 * value prints one line on stderr naming the variable and start-up exits with status 2.
 * Rooms read their own variables with the config_* helpers below, before anything starts,
 * and document each one in the README's configuration table. */
#ifndef QDB_PLATFORM_CONFIG_H
#define QDB_PLATFORM_CONFIG_H

#include <stdint.h>

#include "platform/log.h"

/* QDB_ENV: which environment of the platform (infrastructure 6.1) this process runs in.
 * Production and DR are held to production's rules (sslmode=verify-full). */
enum config_env {
    CONFIG_ENV_DEVELOPMENT = 0,
    CONFIG_ENV_INTEGRATION,
    CONFIG_ENV_STAGING,
    CONFIG_ENV_PRODUCTION,
    CONFIG_ENV_DR,
};

struct config {
    enum config_env env;   /* QDB_ENV */
    char listen_host[256]; /* QDB_LISTEN host part, numeric or a name */
    uint16_t listen_port;  /* QDB_LISTEN port part; 0 picks a free port */
    char *database_url;    /* QDB_DATABASE_URL, required (owned) */
    int db_pool_size;      /* QDB_DB_POOL_SIZE */
    int db_statement_timeout_ms; /* QDB_DB_STATEMENT_TIMEOUT_MS */
    int db_connect_timeout_s;    /* QDB_DB_CONNECT_TIMEOUT */
    int db_reconnect_max_ms;     /* QDB_DB_RECONNECT_MAX_MS */
    int db_outage_log_interval_s; /* QDB_DB_OUTAGE_LOG_INTERVAL */
    enum log_level log_level;    /* QDB_LOG_LEVEL */
    char *web_dir;               /* QDB_WEB_DIR (owned) */
    int shutdown_timeout_s;      /* QDB_SHUTDOWN_TIMEOUT */
    int http_threads;            /* QDB_HTTP_THREADS */
    int http_handler_threads;    /* QDB_HTTP_HANDLER_THREADS */
    int http_max_connections;    /* QDB_HTTP_MAX_CONNECTIONS */
    int http_per_ip_connections; /* QDB_HTTP_PER_IP_CONNECTIONS */
    int http_idle_timeout_s;     /* QDB_HTTP_IDLE_TIMEOUT */
    char *tls_cert_file;         /* QDB_TLS_CERT_FILE (owned) or NULL: plain HTTP */
    char *tls_key_file;          /* QDB_TLS_KEY_FILE (owned), set with the certificate */
    char *trusted_proxies;       /* QDB_TRUSTED_PROXIES (owned) or NULL */
};

/* What a command needs of the platform's settings. */
#define CONFIG_DATABASE 0x1u /* QDB_DATABASE_URL (required) and the QDB_DB_* settings */
#define CONFIG_SERVE 0x2u    /* QDB_LISTEN, QDB_HTTP_*, QDB_WEB_DIR, QDB_SHUTDOWN_TIMEOUT */

/* Read and validate the platform's variables named by `what` (CONFIG_* flags; QDB_LOG_LEVEL
 * always) into `cfg`; the others keep their defaults and are never looked at, so that a
 * command runs with only its own variables set. Returns 0, or -1 after printing the error
 * line. Free with config_free. */
int config_load(struct config *cfg, unsigned what);
void config_free(struct config *cfg);

/* Helpers for rooms. Each returns 0 with *out set (to `def` when the variable is unset or
 * empty), or -1 after printing "qdb-control: NAME: reason" on stderr. */
int config_int(const char *name, long def, long min, long max, long *out);
/* A string; *out borrows the environment's value or `def` (may be NULL). */
int config_str(const char *name, const char *def, const char **out);
/* One of `choices` (NULL-terminated); *out is its index. */
int config_enum(const char *name, const char *def, const char *const *choices, int *out);
/* Duration like "30", "30s", "5m", "2h", "7d" in seconds. */
int config_seconds(const char *name, long def, long min, long max, long *out);
/* Print "qdb-control: NAME: reason" on stderr; always returns -1. */
int config_error(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The CA bundle outgoing HTTPS calls (the issuer, Kafka Connect) verify their peers
 * against: QDB_CA_FILE, checked readable; *out is NULL when unset (the system's CAs).
 * Returns 0 or -1 after printing the error line. */
int config_ca_file(const char **out);

/* The sslmode a libpq URL asks for (its sslmode parameter, else PGSSLMODE, else libpq's
 * default "prefer"), into out. Returns 0, or -1 when the URL does not parse. Pure but for
 * PGSSLMODE; exposed for unit tests. */
int config_db_sslmode(const char *url, char *out, unsigned n);

/* Parse "host:port" or "[v6]:port". Returns 0 or -1. Pure; exposed for unit tests. */
int config_parse_listen(const char *s, char *host, unsigned hostlen, uint16_t *port);
/* Parse a duration (see config_seconds). Returns 0 or -1. */
int config_parse_seconds(const char *s, long *out);

#endif
