/* evhostd's TLS client (client.h): the OTLP exporter's connections to an
 * https:// collector. Part of evhost's libssl.so, with cert.c. */
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define PUBLIC __attribute__((visibility("default")))

/* cert.c */
__attribute__((visibility("hidden"))) const char *ssl_reason(char *buf, size_t n,
                                                             const char *fallback);
__attribute__((visibility("hidden"))) int no_passphrase(char *buf, int size, int rwflag,
                                                        void *u);

/* cert_file's key and chain into ctx; 0, or -1 with the reason. */
static int use_client_cert(SSL_CTX *ctx, const char *cert_file, char *err, size_t errlen)
{
	char why[256];
	const char *step;
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1)
		step = "no certificate OpenSSL can read in it";
	else if (SSL_CTX_use_PrivateKey_file(ctx, cert_file, SSL_FILETYPE_PEM) != 1)
		step = "no private key OpenSSL can read in it (an encrypted one is refused)";
	else if (SSL_CTX_check_private_key(ctx) != 1)
		step = "its private key is not its first certificate's";
	else
		return 0;
	snprintf(err, errlen, "client certificate '%s': %s (%s)", cert_file, step,
	         ssl_reason(why, sizeof why, "?"));
	return -1;
}

PUBLIC void *evhost_tls_client_new(const char *ca_file, const char *cert_file, char *err,
                                   size_t errlen)
{
	char why[256];
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		snprintf(err, errlen, "cannot set up TLS: %s",
		         ssl_reason(why, sizeof why, "out of memory"));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	/* The answer is read until the server closes (Connection: close); only
	 * its status line is used, so a close without close_notify is an end. */
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	if (ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1
	            : SSL_CTX_set_default_verify_paths(ctx) != 1) {
		if (ca_file)
			snprintf(err, errlen, "cannot load CA certificates from '%s': %s", ca_file,
			         ssl_reason(why, sizeof why, "no certificate in it"));
		else
			snprintf(err, errlen, "cannot load the system's CA certificates: %s",
			         ssl_reason(why, sizeof why, "?"));
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (cert_file && use_client_cert(ctx, cert_file, err, errlen) != 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	ERR_clear_error();
	return ctx;
}

PUBLIC void evhost_tls_client_free(void *client) { SSL_CTX_free(client); }

PUBLIC void *evhost_tls_conn_new(void *client, int fd, const char *host, char *err,
                                 size_t errlen)
{
	char why[256];
	unsigned char ip[16];
	int is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
	SSL *ssl = SSL_new(client);
	if (!ssl || SSL_set_fd(ssl, fd) != 1 ||
	    (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1
	           : SSL_set_tlsext_host_name(ssl, host) != 1 || SSL_set1_host(ssl, host) != 1)) {
		snprintf(err, errlen, "cannot set up a TLS connection to %s: %s", host,
		         ssl_reason(why, sizeof why, "out of memory"));
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_connect_state(ssl);
	return ssl;
}

/* Why a step failed: -1, or EVHOST_TLS_CERT_REFUSED. */
static int failure(SSL *ssl, int op, int code, int saved_errno, char *err, size_t errlen)
{
	char why[256];
	long verify = SSL_get_verify_result(ssl);
	int refused = op == EVHOST_TLS_HANDSHAKE && verify != X509_V_OK;
	if (refused)
		snprintf(err, errlen, "the server's certificate was refused: %s",
		         X509_verify_cert_error_string(verify));
	else if (code == SSL_ERROR_SYSCALL && saved_errno)
		snprintf(err, errlen, "%s", strerror(saved_errno));
	else if (code == SSL_ERROR_SYSCALL || code == SSL_ERROR_ZERO_RETURN)
		snprintf(err, errlen, "the server closed the connection");
	else
		snprintf(err, errlen, "%s", ssl_reason(why, sizeof why, "TLS failed"));
	ERR_clear_error();
	/* A TLS 1.3 server refuses the client (no certificate, an untrusted one)
	 * after the handshake: it sends an alert and closes, and the next write
	 * fails with EPIPE. The alert, if it came, says why. */
	if (op == EVHOST_TLS_WRITE && code == SSL_ERROR_SYSCALL) {
		char scratch[256];
		size_t n, used = strlen(err);
		int r = SSL_read_ex(ssl, scratch, sizeof scratch, &n);
		if (r != 1 && SSL_get_error(ssl, r) == SSL_ERROR_SSL &&
		    strstr(ssl_reason(why, sizeof why, ""), "alert") && used < errlen)
			snprintf(err + used, errlen - used, " (the server's TLS alert: %s)", why);
		ERR_clear_error();
	}
	return refused ? EVHOST_TLS_CERT_REFUSED : -1;
}

PUBLIC int evhost_tls_conn_io(void *conn, int op, void *buf, size_t n, char *err,
                              size_t errlen)
{
	SSL *ssl = conn;
	int r, code, saved;
	size_t done = 0;
	if (n > 1 << 20) /* so that what was done fits the int returned */
		n = 1 << 20;
	ERR_clear_error();
	errno = 0;
	if (op == EVHOST_TLS_HANDSHAKE)
		r = SSL_connect(ssl);
	else if (op == EVHOST_TLS_WRITE)
		r = SSL_write_ex(ssl, buf, n, &done);
	else
		r = SSL_read_ex(ssl, buf, n, &done);
	if (r == 1)
		return op == EVHOST_TLS_HANDSHAKE ? 0 : (int)done;
	saved = errno;
	code = SSL_get_error(ssl, r);
	if (code == SSL_ERROR_WANT_READ)
		return EVHOST_TLS_WANT_READ;
	if (code == SSL_ERROR_WANT_WRITE)
		return EVHOST_TLS_WANT_WRITE;
	if (op == EVHOST_TLS_READ && code == SSL_ERROR_ZERO_RETURN)
		return 0;
	return failure(ssl, op, code, saved, err, errlen);
}

PUBLIC void evhost_tls_conn_free(void *conn) { SSL_free(conn); }
