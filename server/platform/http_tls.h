/* HTTPS for the HTTP server: the certificate and key (QDB_TLS_CERT_FILE / QDB_TLS_KEY_FILE)
 * served through libmicrohttpd's GnuTLS, TLS 1.3 only (infrastructure 8.3), and reloaded in
 * place on SIGHUP.
 *
 * Reloading without dropping anything: libmicrohttpd asks GnuTLS for the certificate of
 * every handshake through one callback (MHD_OPTION_HTTPS_CERT_CALLBACK), and the callback
 * hands out the current generation. A reload loads the files into a new generation and
 * swaps it in; the listening socket and every open connection (an SSE stream included) are
 * untouched, and the next handshake gets the new certificate. A generation that fails to
 * load (unreadable, not PEM, a key that does not match the certificate) changes nothing.
 * Old generations are kept until the server stops, because a session that began with one
 * may still refer to it; a reload is an operator's act (certificate rotation), so the few
 * kilobytes each keeps are bounded by how often that happens. */
#ifndef QDB_PLATFORM_HTTP_TLS_H
#define QDB_PLATFORM_HTTP_TLS_H

#include <stddef.h>

struct http_tls;

/* GnuTLS priorities: TLS 1.3 and nothing older. */
#define HTTP_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3"

/* Load the certificate chain (PEM, leaf first) and its private key (PEM). Returns the new
 * state, or NULL with the reason in err. At most one exists per process (the GnuTLS
 * callback has no argument of its own); free with http_tls_free after the server stopped. */
struct http_tls *http_tls_new(const char *cert_file, const char *key_file, char *err,
                              size_t errlen);
/* Load the same files again and serve them to the next handshake. Returns 0, or -1 with
 * the reason in err (the previous certificate stays in use). Thread-safe. */
int http_tls_reload(struct http_tls *tls, char *err, size_t errlen);
/* The callback for MHD_OPTION_HTTPS_CERT_CALLBACK (a gnutls_certificate_retrieve_function2),
 * as a plain pointer for MHD_OPTION_ARRAY. */
void *http_tls_callback(void);
/* The subject of the certificate now served (for logs), into out. */
void http_tls_subject(struct http_tls *tls, char *out, size_t n);
void http_tls_free(struct http_tls *tls);

#endif
