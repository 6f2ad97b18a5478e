#include "platform/config.h"

#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "platform/http_proxy.h"

int config_error(const char *name, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "qdb-control: %s: %s\n", name, msg);
    return -1;
}

static const char *env_value(const char *name)
{
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

static int parse_long(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

int config_int(const char *name, long def, long min, long max, long *out)
{
    const char *v = env_value(name);
    long n = def;
    if (v && parse_long(v, &n) != 0)
        return config_error(name, "'%s' is not an integer", v);
    if (n < min || n > max)
        return config_error(name, "%ld is out of range [%ld, %ld]", n, min, max);
    *out = n;
    return 0;
}

int config_str(const char *name, const char *def, const char **out)
{
    const char *v = env_value(name);
    *out = v ? v : def;
    return 0;
}

int config_enum(const char *name, const char *def, const char *const *choices, int *out)
{
    const char *v = env_value(name);
    if (!v)
        v = def;
    for (int i = 0; choices[i]; i++) {
        if (strcmp(v, choices[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    char allowed[256] = "";
    size_t used = 0;
    for (int i = 0; choices[i] && used < sizeof allowed; i++)
        used += (size_t)snprintf(allowed + used, sizeof allowed - used, "%s%s", i ? ", " : "",
                                 choices[i]);
    return config_error(name, "'%s' is not one of: %s", v, allowed);
}

int config_parse_seconds(const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || v < 0)
        return -1;
    long mult = 1;
    if (*end) {
        switch (*end) {
        case 's': mult = 1; break;
        case 'm': mult = 60; break;
        case 'h': mult = 3600; break;
        case 'd': mult = 86400; break;
        default: return -1;
        }
        if (end[1] != '\0')
            return -1;
    }
    if (v > LONG_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

int config_seconds(const char *name, long def, long min, long max, long *out)
{
    const char *v = env_value(name);
    long n = def;
    if (v && config_parse_seconds(v, &n) != 0)
        return config_error(name, "'%s' is not a duration (e.g. 30, 30s, 5m, 2h, 7d)", v);
    if (n < min || n > max)
        return config_error(name, "%ld seconds is out of range [%ld, %ld]", n, min, max);
    *out = n;
    return 0;
}

int config_parse_listen(const char *s, char *host, unsigned hostlen, uint16_t *port)
{
    const char *colon;
    const char *h = s;
    size_t hlen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return -1;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon)
            return -1;
        hlen = (size_t)(colon - s);
        if (memchr(s, ':', hlen))
            return -1; /* bare IPv6 must be bracketed */
    }
    if (hlen == 0 || hlen >= hostlen)
        return -1;
    long p;
    if (parse_long(colon + 1, &p) != 0 || p < 0 || p > 65535)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (uint16_t)p;
    return 0;
}

int config_ca_file(const char **out)
{
    config_str("QDB_CA_FILE", NULL, out);
    if (*out && access(*out, R_OK) != 0)
        return config_error("QDB_CA_FILE", "'%s' cannot be read", *out);
    return 0;
}

int config_db_sslmode(const char *url, char *out, unsigned n)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &err);
    if (!opts) {
        PQfreemem(err);
        return -1;
    }
    const char *mode = NULL;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "sslmode") == 0 && o->val && *o->val)
            mode = o->val;
    if (!mode)
        mode = getenv("PGSSLMODE");
    snprintf(out, n, "%s", mode && *mode ? mode : "prefer");
    PQconninfoFree(opts);
    return 0;
}

/* QDB_DATABASE_URL_FILE: the URL (it holds the password) as a file, the way Vault Agent
 * mounts secrets (infrastructure 6.3), so that it never sits in the environment. One line;
 * trailing whitespace is dropped. Returns a malloc'd URL, or NULL after the error line. */
#define DATABASE_URL_FILE_MAX 8192
static int load_database_url(struct config *cfg, const char *url);

static char *read_url_file(const char *path)
{
    static const char var[] = "QDB_DATABASE_URL_FILE";
    FILE *f = fopen(path, "r");
    if (!f) {
        config_error(var, "'%s' cannot be read: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(DATABASE_URL_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, DATABASE_URL_FILE_MAX + 1, f) : 0;
    int failed = ferror(f);
    fclose(f);
    if (!buf || failed || n > DATABASE_URL_FILE_MAX) {
        config_error(var, "'%s': %s", path,
                     !buf     ? "out of memory"
                     : failed ? "read error"
                              : "longer than 8 KiB");
        free(buf);
        return NULL;
    }
    while (n > 0 &&
           (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        n--;
    buf[n] = '\0';
    if (n == 0 || memchr(buf, '\n', n) || memchr(buf, '\0', n)) {
        config_error(var, "'%s' must hold the URL on one line", path);
        free(buf);
        return NULL;
    }
    return buf;
}

static int load_database(struct config *cfg)
{
    const char *url, *url_file;
    config_str("QDB_DATABASE_URL", NULL, &url);
    config_str("QDB_DATABASE_URL_FILE", NULL, &url_file);
    if (url && url_file)
        return config_error("QDB_DATABASE_URL_FILE", "is set with QDB_DATABASE_URL: set one");
    char *from_file = url_file ? read_url_file(url_file) : NULL;
    if (url_file && !from_file)
        return -1;
    if (from_file)
        url = from_file;
    int rc = load_database_url(cfg, url);
    free(from_file);
    return rc;
}

static int load_database_url(struct config *cfg, const char *url)
{
    if (!url)
        return config_error("QDB_DATABASE_URL",
                            "is required (a libpq URI, e.g. "
                            "postgresql://qdb@127.0.0.1:5432/qdb_control; or "
                            "QDB_DATABASE_URL_FILE naming a file that holds it)");
    if (strncmp(url, "postgresql://", 13) != 0 && strncmp(url, "postgres://", 11) != 0)
        return config_error("QDB_DATABASE_URL", "must be a postgresql:// URI");
    /* Production's database connections are TLS with the server's certificate and name
     * checked (infrastructure 8.3); anything weaker is a configuration error, said before
     * a connection is tried. The URL is never echoed: it may hold a password. */
    char sslmode[32];
    if (config_db_sslmode(url, sslmode, sizeof sslmode) != 0)
        return config_error("QDB_DATABASE_URL", "is not a valid libpq URI");
    if ((cfg->env == CONFIG_ENV_PRODUCTION || cfg->env == CONFIG_ENV_DR) &&
        strcmp(sslmode, "verify-full") != 0)
        return config_error("QDB_DATABASE_URL",
                            "QDB_ENV=%s requires sslmode=verify-full (with sslrootcert=<CA "
                            "file>), not sslmode=%s",
                            cfg->env == CONFIG_ENV_DR ? "dr" : "production", sslmode);
    long v;
    if (config_int("QDB_DB_POOL_SIZE", 8, 1, 200, &v) != 0)
        return -1;
    cfg->db_pool_size = (int)v;
    if (config_int("QDB_DB_STATEMENT_TIMEOUT_MS", 5000, 100, 600000, &v) != 0)
        return -1;
    cfg->db_statement_timeout_ms = (int)v;
    if (config_seconds("QDB_DB_CONNECT_TIMEOUT", 3, 1, 60, &v) != 0)
        return -1;
    cfg->db_connect_timeout_s = (int)v;
    if (config_int("QDB_DB_RECONNECT_MAX_MS", 1000, 100, 60000, &v) != 0)
        return -1;
    cfg->db_reconnect_max_ms = (int)v;
    if (config_seconds("QDB_DB_OUTAGE_LOG_INTERVAL", 10, 1, 3600, &v) != 0)
        return -1;
    cfg->db_outage_log_interval_s = (int)v;
    cfg->database_url = strdup(url);
    return cfg->database_url ? 0 : config_error("QDB_DATABASE_URL", "out of memory");
}

static int load_serve(struct config *cfg)
{
    const char *listen;
    config_str("QDB_LISTEN", "127.0.0.1:8080", &listen);
    if (config_parse_listen(listen, cfg->listen_host, sizeof cfg->listen_host,
                            &cfg->listen_port) != 0)
        return config_error("QDB_LISTEN", "'%s' is not host:port", listen);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    long v;
    /* Event loops never block (blocking work runs on the handler pool), so more of them
     * than cores only adds context switches to the tail latency. */
    if (config_int("QDB_HTTP_THREADS", ncpu, 1, 256, &v) != 0)
        return -1;
    cfg->http_threads = (int)v;
    /* Handlers mostly wait on a pooled state-store connection: as many handler threads as
     * connections keeps the pool busy without threads queueing for it. */
    if (config_int("QDB_HTTP_HANDLER_THREADS", cfg->db_pool_size, 1, 1024, &v) != 0)
        return -1;
    cfg->http_handler_threads = (int)v;
    if (config_int("QDB_HTTP_MAX_CONNECTIONS", 1000, 1, 60000, &v) != 0)
        return -1;
    cfg->http_max_connections = (int)v;
    if (config_int("QDB_HTTP_PER_IP_CONNECTIONS", 64, 1, 60000, &v) != 0)
        return -1;
    cfg->http_per_ip_connections = (int)v;
    if (config_seconds("QDB_HTTP_IDLE_TIMEOUT", 30, 1, 3600, &v) != 0)
        return -1;
    cfg->http_idle_timeout_s = (int)v;
    if (config_seconds("QDB_SHUTDOWN_TIMEOUT", 10, 0, 3600, &v) != 0)
        return -1;
    cfg->shutdown_timeout_s = (int)v;
    const char *cert, *key, *proxies;
    config_str("QDB_TLS_CERT_FILE", NULL, &cert);
    config_str("QDB_TLS_KEY_FILE", NULL, &key);
    if (!cert != !key)
        return config_error(cert ? "QDB_TLS_KEY_FILE" : "QDB_TLS_CERT_FILE",
                            "is required with %s (HTTPS needs both)",
                            cert ? "QDB_TLS_CERT_FILE" : "QDB_TLS_KEY_FILE");
    if (cert && access(cert, R_OK) != 0)
        return config_error("QDB_TLS_CERT_FILE", "'%s' cannot be read", cert);
    if (key && access(key, R_OK) != 0)
        return config_error("QDB_TLS_KEY_FILE", "'%s' cannot be read", key);
    if (cert && (!(cfg->tls_cert_file = strdup(cert)) || !(cfg->tls_key_file = strdup(key))))
        return config_error("QDB_TLS_CERT_FILE", "out of memory");
    config_str("QDB_TRUSTED_PROXIES", NULL, &proxies);
    if (proxies) {
        char err[256];
        struct http_proxies *p = http_proxies_parse(proxies, err, sizeof err);
        if (!p)
            return config_error("QDB_TRUSTED_PROXIES", "%s", err);
        http_proxies_free(p);
        if (!(cfg->trusted_proxies = strdup(proxies)))
            return config_error("QDB_TRUSTED_PROXIES", "out of memory");
    }
    const char *web;
    config_str("QDB_WEB_DIR", "web", &web);
    if (access(web, R_OK | X_OK) != 0)
        return config_error("QDB_WEB_DIR", "'%s' is not a readable directory", web);
    cfg->web_dir = strdup(web);
    return cfg->web_dir ? 0 : config_error("QDB_WEB_DIR", "out of memory");
}

int config_load(struct config *cfg, unsigned what)
{
    memset(cfg, 0, sizeof *cfg);
    /* defaults of what is not loaded, so that nothing reads garbage */
    snprintf(cfg->listen_host, sizeof cfg->listen_host, "127.0.0.1");
    cfg->listen_port = 8080;
    cfg->db_pool_size = 8;
    cfg->db_statement_timeout_ms = 5000;
    cfg->db_connect_timeout_s = 3;
    cfg->db_reconnect_max_ms = 1000;
    cfg->db_outage_log_interval_s = 10;
    cfg->shutdown_timeout_s = 10;

    static const char *const envs[] = {"development", "integration", "staging",
                                       "production",  "dr",          NULL};
    int env = 0;
    if (config_enum("QDB_ENV", "development", envs, &env) != 0)
        return -1;
    cfg->env = (enum config_env)env;
    const char *level;
    config_str("QDB_LOG_LEVEL", "info", &level);
    if (log_level_parse(level, &cfg->log_level) != 0)
        return config_error("QDB_LOG_LEVEL", "'%s' is not one of: debug, info, warn, error",
                            level);
    if ((what & CONFIG_DATABASE) && load_database(cfg) != 0)
        goto fail;
    if ((what & CONFIG_SERVE) && load_serve(cfg) != 0)
        goto fail;
    return 0;
fail:
    config_free(cfg);
    return -1;
}

void config_free(struct config *cfg)
{
    free(cfg->database_url);
    free(cfg->web_dir);
    free(cfg->tls_cert_file);
    free(cfg->tls_key_file);
    free(cfg->trusted_proxies);
    cfg->database_url = NULL;
    cfg->web_dir = NULL;
    cfg->tls_cert_file = cfg->tls_key_file = cfg->trusted_proxies = NULL;
}
