/* Running behind proxies (the ingress controller): QDB_TRUSTED_PROXIES is a list of
 * addresses and CIDR blocks whose X-Forwarded-For is believed. Every request then reaches a
 * pod from the controller's few addresses, so a per-address limit on the peer would throttle
 * every client at once: for a request from a trusted proxy, the client is the right-most
 * X-Forwarded-For entry that is not itself a trusted proxy (entries further left were
 * written by the client and prove nothing), and the per-address limit applies to it; a
 * direct client is limited by its own address, as before. Also the per-address table the
 * HTTP server counts with. Pure and thread-safe where said; exposed for unit tests. */
#ifndef QDB_PLATFORM_HTTP_PROXY_H
#define QDB_PLATFORM_HTTP_PROXY_H

#include <stddef.h>
#include <sys/socket.h>

struct http_proxies;

/* Parse "10.0.0.0/8, 192.168.1.7, fd00::/8" (commas and/or spaces). IPv4-mapped IPv6
 * addresses match the IPv4 blocks. Returns the list, or NULL with the reason in err (an
 * empty list is an error: leave the variable unset instead). Free with http_proxies_free. */
struct http_proxies *http_proxies_parse(const char *list, char *err, size_t errlen);
void http_proxies_free(struct http_proxies *p);
/* Whether an address (text, or a socket address) is in the list. */
int http_proxies_trusts(const struct http_proxies *p, const char *addr);
int http_proxies_trusts_sockaddr(const struct http_proxies *p, const struct sockaddr *sa);
/* The client a request from a trusted proxy stands for: the right-most entry of the
 * X-Forwarded-For value `xff` that is not a trusted proxy, normalised, into out. Returns 1,
 * or 0 when there is none (no header, only trusted entries, or a malformed right-most
 * entry: then the peer itself is the client). */
int http_proxies_client(const struct http_proxies *p, const char *xff, char *out, size_t n);
/* An address in text, normalised (IPv4-mapped IPv6 as IPv4), into out; 0 or -1. */
int http_addr_normalise(const struct sockaddr *sa, char *out, size_t n);

/* Counts per address, for a limit: thread-safe. */
struct http_addr_counts;
struct http_addr_counts *http_addr_counts_new(void);
void http_addr_counts_free(struct http_addr_counts *c);
/* Take one for `addr` when it holds fewer than `limit`: returns 1 (taken) or 0 (at the
 * limit, or out of memory). */
int http_addr_take(struct http_addr_counts *c, const char *addr, unsigned limit);
/* Take one for `addr` whatever it holds. */
void http_addr_add(struct http_addr_counts *c, const char *addr);
/* Give one back. */
void http_addr_give(struct http_addr_counts *c, const char *addr);
/* How many `addr` holds. */
unsigned http_addr_count(struct http_addr_counts *c, const char *addr);

#endif
