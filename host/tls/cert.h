/* The server certificate HTTPS is served with, replaceable while evhostd
 * runs (a reload after certbot renews it). Implemented in cert.c, inside
 * evhost's libssl.so (linked to OpenSSL 3); evhostd reaches it with dlsym
 * through tls_compat.c, so evhostd itself never links OpenSSL.
 *
 * How a new certificate reaches clients: civetweb creates the server's
 * SSL_CTX and loads [http] tls_certificate into it at start. evhost adds a
 * certificate callback to that SSL_CTX (evhost_tls_attach), which OpenSSL
 * runs in every handshake before it picks the certificate: it sets the
 * connection's key, certificate and chain to the bundle in use
 * (evhost_tls_use). Connections already open keep the certificate they
 * were opened with. */
#ifndef EVHOST_TLS_CERT_H
#define EVHOST_TLS_CERT_H
#include <stddef.h>
#include <stdint.h>

typedef struct evhost_tls_cert evhost_tls_cert;

/* Read a PEM file holding a private key (not encrypted), the server's
 * certificate and then its intermediates, and check that the key is the
 * first certificate's. NULL with the reason in err: unreadable, larger
 * than 1 MiB, no key, an encrypted one (never prompts for a passphrase), no
 * certificate, one OpenSSL cannot parse, or a key of another certificate. */
typedef evhost_tls_cert *evhost_tls_load_fn(const char *path, char *err, size_t errlen);
/* Free a bundle not handed to evhost_tls_use. */
typedef void evhost_tls_free_fn(evhost_tls_cert *c);
/* The earliest notAfter of the file's certificates, in seconds since the
 * Unix epoch; and a line for the log: the server certificate's subject and
 * when it (or an intermediate) expires. */
typedef int64_t evhost_tls_expiry_fn(const evhost_tls_cert *c);
typedef void evhost_tls_describe_fn(const evhost_tls_cert *c, char *out, size_t n);
/* Serve `c` from the next handshake on (it is owned here from now on; the
 * bundle it replaces is freed). Thread-safe against handshakes. */
typedef void evhost_tls_use_fn(evhost_tls_cert *c);
/* Why a client's handshake failed (evhost_tls_hooks.failed). */
enum evhost_tls_failed_reason {
	EVHOST_TLS_FAILED_PLAIN_HTTP,         /* plain HTTP sent to the HTTPS port */
	EVHOST_TLS_FAILED_VERSION,            /* no TLS version in common */
	EVHOST_TLS_FAILED_CIPHER,             /* no cipher, group or signature in common */
	EVHOST_TLS_FAILED_CERTIFICATE_REFUSED, /* the client refused the server's */
	EVHOST_TLS_FAILED_CLIENT_CERTIFICATE, /* mutual TLS: none, or not trusted */
	EVHOST_TLS_FAILED_INCOMPLETE,         /* the client left, or went silent */
	EVHOST_TLS_FAILED_OTHER,              /* not TLS, or anything else */
	EVHOST_TLS_FAILED_N
};
/* Called from the worker thread doing the handshake; either may be NULL. */
typedef struct evhost_tls_hooks {
	/* +1 when a connection's handshake starts, -1 when it ends or the
	 * connection is freed in it. */
	void (*held)(int delta);
	/* A handshake failed, at most once per connection. */
	void (*failed)(int reason);
} evhost_tls_hooks;
/* Set up civetweb's SSL_CTX (from its init_ssl callback): the certificate
 * callback; TLS 1.3 at least if min_tls13; with client_ca (a PEM file of CA
 * certificates, or NULL), the CAs named to clients asked for a certificate
 * (civetweb itself verifies them); the hooks (or NULL; copied). A client
 * that sends plain HTTP is answered 400 in plain HTTP before civetweb closes
 * it. 0, or -1. */
typedef int evhost_tls_attach_fn(void *ssl_ctx, int min_tls13, const char *client_ca,
                                 const evhost_tls_hooks *hooks);
/* The CA certificates in a PEM file: how many (at least 1), or -1 with the
 * reason (none, or one OpenSSL cannot read). */
typedef int evhost_tls_ca_check_fn(const char *path, char *err, size_t errlen);
/* The ciphers offered: `ciphers` for TLS 1.2 (OpenSSL's cipher list syntax;
 * names it does not know are skipped, a list that leaves none is refused),
 * `suites` for TLS 1.3 (names separated by ':', each one OpenSSL knows);
 * NULL keeps OpenSSL's defaults. On civetweb's SSL_CTX, or with ssl_ctx NULL
 * on a scratch one, to check them. 0, or -1 with the reason in err, which
 * names the key (tls_ciphers, tls_ciphersuites). */
typedef int evhost_tls_ciphers_fn(void *ssl_ctx, const char *ciphers, const char *suites,
                                  char *err, size_t errlen);

#ifdef EVHOST_TLS_SHIM_SSL /* defined in the library; evhostd uses dlsym */
evhost_tls_load_fn evhost_tls_load;
evhost_tls_free_fn evhost_tls_free;
evhost_tls_expiry_fn evhost_tls_expiry;
evhost_tls_describe_fn evhost_tls_describe;
evhost_tls_use_fn evhost_tls_use;
evhost_tls_attach_fn evhost_tls_attach;
evhost_tls_ca_check_fn evhost_tls_ca_check;
evhost_tls_ciphers_fn evhost_tls_ciphers;
#endif

#endif
