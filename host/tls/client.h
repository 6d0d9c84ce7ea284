/* A TLS client for evhostd's own outgoing connections (the OTLP exporter,
 * [tracing] otlp_endpoint = https://...). Implemented in client.c, inside
 * evhost's libssl.so like cert.c; evhostd reaches it with dlsym through
 * tls_compat.c, so evhostd itself never links OpenSSL.
 *
 * The caller owns the socket (connected, non-blocking) and the waiting: each
 * step either completes, fails with a reason, or says which way the socket
 * must become ready before it is called again. */
#ifndef EVHOST_TLS_CLIENT_H
#define EVHOST_TLS_CLIENT_H
#include <stddef.h>

#define EVHOST_TLS_WANT_READ (-2)
#define EVHOST_TLS_WANT_WRITE (-3)
/* A handshake failed because the server's certificate did not verify: the
 * one failure that trying again will not mend. */
#define EVHOST_TLS_CERT_REFUSED (-4)

enum { EVHOST_TLS_HANDSHAKE, EVHOST_TLS_WRITE, EVHOST_TLS_READ };

/* Settings shared by connections: TLS 1.2 at least, the server's
 * certificate verified against the CA certificates in the PEM file
 * `ca_file`, or with NULL the system's trust store (OpenSSL's default
 * paths, /etc/ssl/certs on Debian); with `cert_file`, the client
 * certificate offered when the server asks for one (a PEM file holding the
 * private key, not encrypted, the certificate and its intermediates, like
 * [http] tls_certificate). NULL with the reason in err. */
typedef void *evhost_tls_client_new_fn(const char *ca_file, const char *cert_file, char *err,
                                       size_t errlen);
typedef void evhost_tls_client_free_fn(void *client);
/* A connection over the socket fd to `host` (a name, sent as SNI and
 * matched against the certificate's DNS names, or an IP address matched
 * against its IP addresses). NULL with the reason in err. */
typedef void *evhost_tls_conn_new_fn(void *client, int fd, const char *host, char *err,
                                     size_t errlen);
/* One step of `op`: EVHOST_TLS_HANDSHAKE returns 0 once done; WRITE the
 * bytes of buf it took (at least 1); READ the bytes read into buf, 0 when
 * the server closed the connection. EVHOST_TLS_WANT_READ/WRITE: call again
 * with the same arguments once the socket is ready that way. -1 with the
 * reason in err; EVHOST_TLS_CERT_REFUSED, with it, when the handshake
 * failed on the server's certificate (err says why it was refused). */
typedef int evhost_tls_conn_io_fn(void *conn, int op, void *buf, size_t n, char *err,
                                  size_t errlen);
/* Free the connection (not the socket). */
typedef void evhost_tls_conn_free_fn(void *conn);

#ifdef EVHOST_TLS_SHIM_SSL /* defined in the library; evhostd uses dlsym */
evhost_tls_client_new_fn evhost_tls_client_new;
evhost_tls_client_free_fn evhost_tls_client_free;
evhost_tls_conn_new_fn evhost_tls_conn_new;
evhost_tls_conn_io_fn evhost_tls_conn_io;
evhost_tls_conn_free_fn evhost_tls_conn_free;
#endif

#endif
