/* Static files of the web console, served at / from QDB_WEB_DIR. */
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "platform/http.h"

void http_static_serve(struct http_request *req, const char *web_dir, const char *raw_path);

/* The console's Content-Security-Policy: its own files only, no inline script, style or
 * eval, never framed. connect-src also names the OIDC issuer's origin, where the console
 * exchanges its authorization code for a token (set once, before the server starts). */
#define CSP_HEAD                                                                                   \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'"
#define CSP_TAIL "; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
static char csp[sizeof CSP_HEAD + 1 + 512 + sizeof CSP_TAIL] = CSP_HEAD CSP_TAIL;

int http_static_allow_connect(const char *url)
{
    /* the origin is scheme://host[:port]: up to the first '/' after "//" */
    const char *host = url ? strstr(url, "://") : NULL;
    if (!host || (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0))
        return -1;
    size_t len = (size_t)(host + 3 - url) + strcspn(host + 3, "/?#");
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= ' ' || c >= 0x7f || c == ';' || c == ',' || c == '\'')
            return -1; /* would end or bend the policy's source list */
    }
    int n = snprintf(csp, sizeof csp, "%s %.*s%s", CSP_HEAD, (int)len, url, CSP_TAIL);
    if (n < 0 || (size_t)n >= sizeof csp) {
        snprintf(csp, sizeof csp, "%s%s", CSP_HEAD, CSP_TAIL);
        return -1;
    }
    return 0;
}

static const struct {
    const char *ext;
    const char *type;
} types[] = {
    {".html", "text/html; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".json", "application/json"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".txt", "text/plain; charset=utf-8"},
    {".woff2", "font/woff2"},
    {".map", "application/json"},
    {".yaml", "application/yaml"},
};

static const char *content_type_of(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot && !strchr(dot, '/'))
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcasecmp(dot, types[i].ext) == 0)
                return types[i].type;
    return "application/octet-stream";
}

/* Whether a decoded request path is safe to map under the web folder: absolute, no "." or
 * ".." segment, no hidden files, no backslash or control bytes. The raw path must not carry
 * encoded slashes, backslashes, dots or NULs (they would let an encoded path name a
 * different file than the one the router saw). */
static int path_is_safe(const char *path, const char *raw)
{
    if (path[0] != '/')
        return 0;
    size_t rawlen = strcspn(raw, "?");
    for (size_t i = 0; i + 2 < rawlen + 1 && i < rawlen; i++) {
        if (raw[i] == '%' && i + 2 < rawlen + 1) {
            char a = raw[i + 1], b = raw[i + 2];
            if (a == '2' && (b == 'f' || b == 'F' || b == 'e' || b == 'E'))
                return 0;
            if (a == '5' && (b == 'c' || b == 'C'))
                return 0;
            if (a == '0' && b == '0')
                return 0;
        }
    }
    for (const char *p = path; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x20 || c == 0x7f || c == '\\')
            return 0;
        if (c == '/' && p[1] == '.')
            return 0; /* "/." starts ".", "..", or a hidden file */
        if (c == '/' && p[1] == '/')
            return 0;
    }
    return 1;
}

void http_static_serve(struct http_request *req, const char *web_dir, const char *raw_path)
{
    const char *path = http_path(req);
    if (!path_is_safe(path, raw_path)) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no file at this path");
        return;
    }
    char file[4096];
    int n = snprintf(file, sizeof file, "%s%s%s", web_dir, path,
                     path[strlen(path) - 1] == '/' ? "index.html" : "");
    if (n < 0 || (size_t)n >= sizeof file) {
        http_reply_problem(req, QDB_E_NOT_FOUND, "no file at this path");
        return;
    }
    int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0)
            close(fd);
        http_reply_problem(req, QDB_E_NOT_FOUND, "no file at %s", path);
        return;
    }
    char etag[64];
    snprintf(etag, sizeof etag, "\"%llx-%llx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec * 1000000000ull +
                 (unsigned long long)st.st_mtim.tv_nsec);
    http_reply_header(req, "ETag", etag);
    http_reply_header(req, "Cache-Control", "no-cache");
    http_reply_header(req, "Content-Security-Policy", csp);
    http_reply_header(req, "Referrer-Policy", "no-referrer");
    const char *inm = http_header(req, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm && (strstr(inm, etag) || strcmp(inm, "*") == 0)) {
        close(fd);
        http_reply_empty(req, 304);
        return;
    }
    struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
    if (!resp) {
        close(fd);
        http_reply_problem(req, QDB_E_INTERNAL, "cannot send the file");
        return;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type_of(file));
    http_count_bytes(req, (size_t)st.st_size);
    http_reply_response(req, 200, resp);
}
