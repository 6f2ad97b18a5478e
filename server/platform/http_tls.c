#include "platform/http_tls.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A chain longer than this is not a server certificate chain anyone deploys. */
#define TLS_CHAIN_MAX 8

struct tls_generation {
    gnutls_pcert_st certs[TLS_CHAIN_MAX];
    unsigned ncerts;
    gnutls_privkey_t key;
    char subject[256];
    struct tls_generation *older;
};

struct http_tls {
    char *cert_file, *key_file;
    pthread_mutex_t mu;
    struct tls_generation *current; /* newest first; older ones kept until free */
};

/* The one HTTPS state of the process, for the callback (it takes no argument of ours). */
static struct http_tls *tls_instance;
static pthread_mutex_t tls_instance_mu = PTHREAD_MUTEX_INITIALIZER;

static void generation_free(struct tls_generation *g)
{
    for (unsigned i = 0; i < g->ncerts; i++)
        gnutls_pcert_deinit(&g->certs[i]);
    if (g->key)
        gnutls_privkey_deinit(g->key);
    free(g);
}

/* Whether the private key belongs to the leaf certificate: a mismatch would only show as
 * every handshake failing, so it is refused when loading. */
static int key_matches(gnutls_privkey_t key, gnutls_pubkey_t leaf)
{
    gnutls_pubkey_t pub;
    if (gnutls_pubkey_init(&pub) < 0)
        return 0;
    unsigned char a[64], b[64];
    size_t alen = sizeof a, blen = sizeof b;
    int ok = gnutls_pubkey_import_privkey(pub, key, 0, 0) >= 0 &&
             gnutls_pubkey_get_key_id(pub, 0, a, &alen) >= 0 &&
             gnutls_pubkey_get_key_id(leaf, 0, b, &blen) >= 0 && alen == blen &&
             memcmp(a, b, alen) == 0;
    gnutls_pubkey_deinit(pub);
    return ok;
}

static struct tls_generation *generation_load(const char *cert_file, const char *key_file,
                                              char *err, size_t errlen)
{
    gnutls_datum_t cert = {NULL, 0}, key = {NULL, 0};
    struct tls_generation *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int rc = gnutls_load_file(cert_file, &cert);
    if (rc < 0) {
        snprintf(err, errlen, "cannot read certificate %s: %s", cert_file, gnutls_strerror(rc));
        goto fail;
    }
    rc = gnutls_load_file(key_file, &key);
    if (rc < 0) {
        snprintf(err, errlen, "cannot read key %s: %s", key_file, gnutls_strerror(rc));
        goto fail;
    }
    unsigned n = TLS_CHAIN_MAX;
    rc = gnutls_pcert_list_import_x509_raw(g->certs, &n, &cert, GNUTLS_X509_FMT_PEM, 0);
    if (rc < 0 || n == 0) {
        snprintf(err, errlen, "%s is not a PEM certificate chain (of at most %d): %s", cert_file,
                 TLS_CHAIN_MAX, rc < 0 ? gnutls_strerror(rc) : "empty");
        goto fail;
    }
    g->ncerts = n;
    rc = gnutls_privkey_init(&g->key);
    if (rc >= 0)
        rc = gnutls_privkey_import_x509_raw(g->key, &key, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (rc < 0) {
        snprintf(err, errlen, "%s is not a PEM private key: %s", key_file, gnutls_strerror(rc));
        goto fail;
    }
    if (!key_matches(g->key, g->certs[0].pubkey)) {
        snprintf(err, errlen, "the key in %s does not belong to the certificate in %s", key_file,
                 cert_file);
        goto fail;
    }
    gnutls_x509_crt_t crt;
    if (gnutls_x509_crt_init(&crt) >= 0) {
        size_t len = sizeof g->subject;
        if (gnutls_x509_crt_import(crt, &g->certs[0].cert, GNUTLS_X509_FMT_DER) < 0 ||
            gnutls_x509_crt_get_dn(crt, g->subject, &len) < 0)
            g->subject[0] = '\0';
        gnutls_x509_crt_deinit(crt);
    }
    gnutls_free(cert.data);
    /* the key's PEM is wiped before it is given back */
    memset(key.data, 0, key.size);
    gnutls_free(key.data);
    return g;
fail:
    gnutls_free(cert.data);
    if (key.data) {
        memset(key.data, 0, key.size);
        gnutls_free(key.data);
    }
    generation_free(g);
    return NULL;
}

static int tls_retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_dn, int nreqs,
                        const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                        gnutls_pcert_st **pcert, unsigned int *pcert_length,
                        gnutls_privkey_t *privkey)
{
    (void)session;
    (void)req_ca_dn;
    (void)nreqs;
    (void)pk_algos;
    (void)pk_algos_length;
    pthread_mutex_lock(&tls_instance_mu);
    struct http_tls *tls = tls_instance;
    if (tls)
        pthread_mutex_lock(&tls->mu);
    struct tls_generation *g = tls ? tls->current : NULL;
    if (g) {
        *pcert = g->certs;
        *pcert_length = g->ncerts;
        *privkey = g->key;
    }
    if (tls)
        pthread_mutex_unlock(&tls->mu);
    pthread_mutex_unlock(&tls_instance_mu);
    return g ? 0 : -1;
}

void *http_tls_callback(void)
{
    return (void *)tls_retrieve;
}

struct http_tls *http_tls_new(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    pthread_mutex_lock(&tls_instance_mu);
    int taken = tls_instance != NULL;
    pthread_mutex_unlock(&tls_instance_mu);
    if (taken) {
        snprintf(err, errlen, "an HTTPS server is already running in this process");
        return NULL;
    }
    struct http_tls *tls = calloc(1, sizeof *tls);
    if (!tls) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    tls->cert_file = strdup(cert_file);
    tls->key_file = strdup(key_file);
    pthread_mutex_init(&tls->mu, NULL);
    if (!tls->cert_file || !tls->key_file) {
        snprintf(err, errlen, "out of memory");
        http_tls_free(tls);
        return NULL;
    }
    tls->current = generation_load(cert_file, key_file, err, errlen);
    if (!tls->current) {
        http_tls_free(tls);
        return NULL;
    }
    pthread_mutex_lock(&tls_instance_mu);
    tls_instance = tls;
    pthread_mutex_unlock(&tls_instance_mu);
    return tls;
}

int http_tls_reload(struct http_tls *tls, char *err, size_t errlen)
{
    struct tls_generation *g = generation_load(tls->cert_file, tls->key_file, err, errlen);
    if (!g)
        return -1;
    pthread_mutex_lock(&tls->mu);
    g->older = tls->current;
    tls->current = g;
    pthread_mutex_unlock(&tls->mu);
    return 0;
}

void http_tls_subject(struct http_tls *tls, char *out, size_t n)
{
    pthread_mutex_lock(&tls->mu);
    snprintf(out, n, "%s", tls->current ? tls->current->subject : "");
    pthread_mutex_unlock(&tls->mu);
}

void http_tls_free(struct http_tls *tls)
{
    if (!tls)
        return;
    pthread_mutex_lock(&tls_instance_mu);
    if (tls_instance == tls)
        tls_instance = NULL;
    pthread_mutex_unlock(&tls_instance_mu);
    struct tls_generation *g = tls->current;
    while (g) {
        struct tls_generation *older = g->older;
        generation_free(g);
        g = older;
    }
    pthread_mutex_destroy(&tls->mu);
    free(tls->cert_file);
    free(tls->key_file);
    free(tls);
}
