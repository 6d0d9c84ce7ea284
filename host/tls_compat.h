/* HTTPS with Debian 12's civetweb: load OpenSSL the way its TLS loader
 * expects (see tls_compat.c); and evhostd's own TLS client, in the same
 * library. */
#ifndef EVHOST_TLS_COMPAT_H
#define EVHOST_TLS_COMPAT_H
#include <stddef.h>
#include <stdint.h>

#include "tls/client.h" /* EVHOST_TLS_HANDSHAKE, _WRITE, _READ, _WANT_READ, _WANT_WRITE */

/* Load the two compatibility libraries, from host/tls/ beside the running
 * executable (a build tree) or else from EVHOST_TLS_DIR (installed). Once
 * they are loaded, civetweb's mg_init_library(MG_FEATURES_TLS) finds
 * OpenSSL. Returns 0, or -1 with the reason in err. Idempotent. */
int tls_compat_load(char *err, size_t errlen);

/* The certificate served over HTTPS (tls/cert.h has the details). */
typedef struct evhost_tls_cert tls_cert;
/* Load the libraries if need be, then read [http] tls_certificate's PEM
 * file and check that its key is its first certificate's. NULL with the
 * reason in err. */
tls_cert *tls_cert_load(const char *path, char *err, size_t errlen);
void tls_cert_free(tls_cert *c);
/* A line for the log saying what it is. */
void tls_cert_describe(const tls_cert *c, char *out, size_t n);
/* Serve `c` (owned from now on; read from `path`) from the next TLS
 * handshake on; warn when a certificate in it has expired or expires within
 * two weeks. */
void tls_cert_use(tls_cert *c, const char *path);
/* Set up civetweb's SSL_CTX (from its init_ssl callback): each handshake
 * uses the bundle given to tls_cert_use; TLS 1.3 at least if min_tls13;
 * client_ca (or NULL) names the CAs client certificates need; a connection
 * counts in evhost_http_connections from its handshake's start (civetweb
 * tells http.c of it only once the handshake is done). 0, or -1. */
int tls_ctx_setup(void *ssl_ctx, int min_tls13, const char *client_ca);
/* evhost_https_handshakes_failed_total: the i-th reason's name (from 0 on;
 * NULL past the last) and in *count how many handshakes failed so. */
const char *tls_handshakes_failed(int i, uint64_t *count);
/* [http] tls_client_ca: how many CA certificates the file holds, or -1 with
 * the reason. */
int tls_ca_check(const char *path, char *err, size_t errlen);
/* [http] tls_ciphers (TLS 1.2) and tls_ciphersuites (TLS 1.3), either NULL
 * for OpenSSL's defaults: set on civetweb's SSL_CTX, or checked with
 * ssl_ctx NULL. 0, or -1 with the reason (naming the key) in err. */
int tls_ciphers_set(void *ssl_ctx, const char *ciphers, const char *suites, char *err,
                    size_t errlen);
/* The earliest notAfter of the bundle being served (Unix seconds); 0 when
 * none. */
int64_t tls_serving_expiry(void);

/* A TLS client for evhostd's own connections (tls/client.h has the
 * details): verifies servers against the CA certificates in ca_file, or the
 * system's with NULL; offers cert_file's certificate (or none with NULL)
 * when a server asks for one. Loads the libraries if need be. NULL with the
 * reason. */
typedef void tls_client;
typedef void tls_conn;
tls_client *tls_client_new(const char *ca_file, const char *cert_file, char *err,
                           size_t errlen);
void tls_client_free(tls_client *c);
/* A connection over the connected non-blocking socket fd to host (a name or
 * an IP address, checked against the certificate); then tls_conn_io steps
 * (EVHOST_TLS_HANDSHAKE, _WRITE, _READ), each returning what client.h says
 * (EVHOST_TLS_WANT_READ/_WRITE: poll, then the same call again;
 * EVHOST_TLS_CERT_REFUSED: the handshake failed on the server's certificate). */
tls_conn *tls_conn_new(tls_client *c, int fd, const char *host, char *err, size_t errlen);
int tls_conn_io(tls_conn *conn, int op, void *buf, size_t n, char *err, size_t errlen);
void tls_conn_free(tls_conn *conn);

/* [auth] jwt_public_key_file's keys (tls/pubkey.h has the details): loads
 * the libraries if need be; NULL with the reason. */
typedef void tls_pubkeys;
tls_pubkeys *tls_pubkeys_load(const char *pem, size_t len, const char *const *labels,
                              const char *const *kids, int *nrsa, int *nec, char *err,
                              size_t errlen);
void tls_pubkeys_free(tls_pubkeys *k);
/* 1: one of the keys signed data with `alg` (RS256, ES256), the one whose
 * id is kid when there is one; 0: none did; -1: out of memory; -2: every key
 * has an id and none is kid. */
int tls_pubkeys_verify(tls_pubkeys *k, const char *kid, const char *alg, const void *data,
                       size_t n, const unsigned char *sig, size_t siglen);

#endif
