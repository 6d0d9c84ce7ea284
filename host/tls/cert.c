/* The certificate HTTPS is served with, and its replacement while evhostd
 * runs: see cert.h. Part of evhost's libssl.so (shim.c has the rest), the
 * only code of evhost that uses OpenSSL directly. */
#define _GNU_SOURCE /* timegm */
#include "cert.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define PUBLIC __attribute__((visibility("default")))
#define MAX_PEM (1024 * 1024)

struct evhost_tls_cert {
	EVP_PKEY *key;
	X509 *leaf;             /* the server's certificate: the file's first */
	STACK_OF(X509) *chain;  /* the intermediates after it, in order */
	int64_t expiry;         /* the earliest notAfter of them all */
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static evhost_tls_cert *current; /* what handshakes get; under mu */

/* Never ask for a passphrase (OpenSSL's default reads the terminal). Also
 * used by client.c. */
__attribute__((visibility("hidden"))) int no_passphrase(char *buf, int size, int rwflag,
                                                        void *u);
int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* OpenSSL's reason for the last failure, or `fallback`; clears its queue.
 * Also used by client.c. */
__attribute__((visibility("hidden"))) const char *ssl_reason(char *buf, size_t n,
                                                             const char *fallback);
const char *ssl_reason(char *buf, size_t n, const char *fallback)
{
	unsigned long e = ERR_peek_last_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	if (reason) /* "tlsv13 alert certificate required", without the codes */
		snprintf(buf, n, "%s", reason);
	else if (e)
		ERR_error_string_n(e, buf, n);
	else
		snprintf(buf, n, "%s", fallback);
	ERR_clear_error();
	return buf;
}

/* A regular file only: a FIFO would block the start or the reload reading
 * it (opened without blocking, then checked), and a directory reads as an
 * error that says nothing. */
static FILE *open_pem(const char *path, char *err, size_t errlen)
{
	struct stat st;
	FILE *f;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) != 0) {
		snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
		close(fd);
		return NULL;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "cannot read '%s': %s", path,
		         S_ISDIR(st.st_mode) ? "a directory, not a PEM file" : "not a regular file");
		close(fd);
		return NULL;
	}
	if (!(f = fdopen(fd, "r"))) {
		snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
		close(fd);
	}
	return f;
}

static char *read_pem(const char *path, size_t *len, char *err, size_t errlen)
{
	FILE *f = open_pem(path, err, errlen);
	char *data;
	size_t n;
	if (!f)
		return NULL;
	data = malloc(MAX_PEM + 1);
	if (!data) {
		fclose(f);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	n = fread(data, 1, MAX_PEM + 1, f);
	if (ferror(f) || n > MAX_PEM) {
		snprintf(err, errlen, "cannot read '%s': %s", path,
		         ferror(f) ? "read error" : "larger than 1 MiB");
		fclose(f);
		explicit_bzero(data, n);
		free(data);
		return NULL;
	}
	fclose(f);
	data[n] = '\0'; /* for the markers looked for in it */
	*len = n;
	return data;
}

static int64_t not_after(const X509 *x)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm);
}

static void subject(const X509 *x, char *out, size_t n)
{
	if (!X509_NAME_oneline(X509_get_subject_name(x), out, (int)n))
		snprintf(out, n, "?");
}

PUBLIC void evhost_tls_free(evhost_tls_cert *c)
{
	if (!c)
		return;
	EVP_PKEY_free(c->key);
	X509_free(c->leaf);
	sk_X509_pop_free(c->chain, X509_free);
	free(c);
}

/* Every certificate in `pem`, in order: the first into c->leaf, the rest
 * into c->chain. 0, or -1 with the reason. */
static int read_certs(evhost_tls_cert *c, const char *pem, size_t len, char *err, size_t errlen)
{
	char why[256];
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	X509 *x;
	if (!b || !(c->chain = sk_X509_new_null())) {
		BIO_free(b);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	ERR_clear_error();
	while ((x = PEM_read_bio_X509(b, NULL, no_passphrase, NULL))) {
		int64_t t = not_after(x);
		if (t && (!c->expiry || t < c->expiry))
			c->expiry = t;
		if (!c->leaf) {
			c->leaf = x;
		} else if (!sk_X509_push(c->chain, x)) {
			X509_free(x);
			BIO_free(b);
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	BIO_free(b);
	/* The end of the file is "no start line"; anything else is a
	 * certificate OpenSSL could not read. */
	if (ERR_GET_REASON(ERR_peek_last_error()) != PEM_R_NO_START_LINE) {
		snprintf(err, errlen, "a certificate cannot be read (OpenSSL: %s)",
		         ssl_reason(why, sizeof why, "?"));
		return -1;
	}
	ERR_clear_error();
	if (!c->leaf) {
		snprintf(err, errlen, "has no certificate (-----BEGIN CERTIFICATE-----)");
		return -1;
	}
	return 0;
}

/* The key is not the first certificate's: say whose it is, if one's. */
static void key_mismatch(const evhost_tls_cert *c, char *err, size_t errlen)
{
	char who[256], why[256];
	ssl_reason(why, sizeof why, "key values mismatch");
	for (int i = 0; i < sk_X509_num(c->chain); i++) {
		X509 *x = sk_X509_value(c->chain, i);
		if (X509_check_private_key(x, c->key) == 1) {
			subject(x, who, sizeof who);
			snprintf(err, errlen,
			         "the private key belongs to certificate %d (%s), not to the first: the "
			         "server's certificate must come first, then its intermediates",
			         i + 2, who);
			ERR_clear_error();
			return;
		}
		ERR_clear_error();
	}
	subject(c->leaf, who, sizeof who);
	snprintf(err, errlen,
	         "the private key does not match the certificate (%s) (OpenSSL: %s)", who, why);
}

PUBLIC evhost_tls_cert *evhost_tls_load(const char *path, char *err, size_t errlen)
{
	evhost_tls_cert *c;
	char why[256];
	size_t len = 0;
	char *pem = read_pem(path, &len, err, errlen);
	BIO *b;
	if (!pem)
		return NULL;
	c = calloc(1, sizeof *c);
	b = c ? BIO_new_mem_buf(pem, (int)len) : NULL;
	if (!b) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	ERR_clear_error();
	c->key = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL);
	BIO_free(b);
	if (!c->key) {
		if (strstr(pem, "-----BEGIN ENCRYPTED PRIVATE KEY-----") ||
		    strstr(pem, "Proc-Type: 4,ENCRYPTED"))
			snprintf(err, errlen,
			         "has an encrypted private key, and evhostd asks nobody for a passphrase "
			         "(write it out decrypted: openssl pkey -in KEY -out KEY.pem)");
		else if (!strstr(pem, " PRIVATE KEY-----")) /* OpenSSL 3 says "unsupported" */
			snprintf(err, errlen, "has no private key (-----BEGIN PRIVATE KEY-----); it must "
			                      "hold the private key and the certificate chain, in PEM");
		else
			snprintf(err, errlen,
			         "its private key cannot be read (damaged?) (OpenSSL: %s)",
			         ssl_reason(why, sizeof why, "?"));
		goto fail;
	}
	if (read_certs(c, pem, len, err, errlen) != 0)
		goto fail;
	if (X509_check_private_key(c->leaf, c->key) != 1) {
		key_mismatch(c, err, errlen);
		goto fail;
	}
	ERR_clear_error();
	explicit_bzero(pem, len);
	free(pem);
	return c;
fail:
	ERR_clear_error();
	evhost_tls_free(c);
	explicit_bzero(pem, len);
	free(pem);
	return NULL;
}

PUBLIC int64_t evhost_tls_expiry(const evhost_tls_cert *c) { return c ? c->expiry : 0; }

PUBLIC void evhost_tls_describe(const evhost_tls_cert *c, char *out, size_t n)
{
	char who[256], by[256], when[32] = "?";
	time_t t = (time_t)c->expiry;
	struct tm tm;
	int inter = sk_X509_num(c->chain);
	subject(c->leaf, who, sizeof who);
	if (!X509_NAME_oneline(X509_get_issuer_name(c->leaf), by, (int)sizeof by))
		snprintf(by, sizeof by, "?");
	if (t && gmtime_r(&t, &tm))
		strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
	snprintf(out, n, "%s issued by %s, %d intermediate%s, expires %s", who, by, inter,
	         inter == 1 ? "" : "s", when);
}

PUBLIC void evhost_tls_use(evhost_tls_cert *c)
{
	evhost_tls_cert *old;
	pthread_mutex_lock(&mu);
	old = current;
	current = c;
	pthread_mutex_unlock(&mu);
	/* Connections that took it hold references of their own. */
	evhost_tls_free(old);
}

/* In each handshake, before OpenSSL picks the certificate: the bundle in
 * use replaces whatever the connection had (every key type: a new ECDSA
 * certificate must not leave an old RSA one beside it). */
static int cert_cb(SSL *ssl, void *arg)
{
	int ok = 1;
	(void)arg;
	pthread_mutex_lock(&mu);
	if (current) {
		SSL_certs_clear(ssl);
		ok = SSL_use_cert_and_key(ssl, current->leaf, current->key, current->chain, 1) == 1;
	}
	pthread_mutex_unlock(&mu);
	return ok;
}

/* Connections in their handshake, for the count of workers held
 * (evhost_tls_attach): civetweb's worker holds each one from SSL_accept on,
 * but tells evhostd of it (init_connection) only once the handshake is
 * done, so a client that connects and sends nothing, or half a
 * ClientHello, would hold a worker unseen until request_timeout. OpenSSL
 * says when a handshake starts and ends; a connection whose handshake
 * never ends is counted off when civetweb frees it. The SSL's mark: NULL
 * (not counted yet), &in_handshake (counted), &handshake_failed (counted,
 * its failure too), &handshake_over (counted off). */
static evhost_tls_hooks hooks;
static pthread_mutex_t hooks_mu = PTHREAD_MUTEX_INITIALIZER;
static int hooks_set;
static int held_idx = -1;
static pthread_once_t held_once = PTHREAD_ONCE_INIT;
static char in_handshake, handshake_failed, handshake_over; /* their addresses */

/* A handshake that never ended and never failed: the client left, or sent
 * nothing more until civetweb gave up (request_timeout). */
static void held_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                      void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	if (ptr == &in_handshake && hooks.failed)
		hooks.failed(EVHOST_TLS_FAILED_INCOMPLETE);
	if ((ptr == &in_handshake || ptr == &handshake_failed) && hooks.held)
		hooks.held(-1);
}

static void held_index(void)
{
	held_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, held_free);
}

/* OpenSSL's reason for a failed handshake, as evhost_tls_failed_reason. */
static int failed_reason(unsigned long e)
{
	int r = ERR_GET_REASON(e), alert = r - SSL_AD_REASON_OFFSET;
	if (ERR_GET_LIB(e) == ERR_LIB_SYS) /* the connection broke (a reset) */
		return EVHOST_TLS_FAILED_INCOMPLETE;
	if (ERR_GET_LIB(e) != ERR_LIB_SSL)
		return EVHOST_TLS_FAILED_OTHER;
	switch (r) {
	case SSL_R_HTTP_REQUEST:
	case SSL_R_HTTPS_PROXY_REQUEST:
		return EVHOST_TLS_FAILED_PLAIN_HTTP;
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_VERSION_TOO_LOW:
		return EVHOST_TLS_FAILED_VERSION;
	case SSL_R_NO_SHARED_CIPHER:
	case SSL_R_NO_SHARED_GROUPS:
	case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
		return EVHOST_TLS_FAILED_CIPHER;
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
	case SSL_R_CERTIFICATE_VERIFY_FAILED:
		return EVHOST_TLS_FAILED_CLIENT_CERTIFICATE;
	case SSL_R_UNEXPECTED_EOF_WHILE_READING:
		return EVHOST_TLS_FAILED_INCOMPLETE;
	default:
		break;
	}
	/* An alert from the client: bad_certificate, unsupported_certificate,
	 * certificate_revoked, _expired, _unknown, unknown_ca (RFC 8446 6). */
	if ((alert >= 42 && alert <= 46) || alert == 48)
		return EVHOST_TLS_FAILED_CERTIFICATE_REFUSED;
	if (alert == 70) /* protocol_version */
		return EVHOST_TLS_FAILED_VERSION;
	return EVHOST_TLS_FAILED_OTHER;
}

/* Plain HTTP sent to the HTTPS port: OpenSSL finds "GET " where a TLS
 * record belongs and fails the handshake, and civetweb would close the
 * connection without a word (curl: "Empty reply from server"). Say it in
 * HTTP, as nginx does. What the client sent is read first (as much as has
 * come), so that closing the socket sends a FIN, not a reset that could
 * discard the answer. */
#define PLAIN_HTTP_BODY \
	"{\"type\":\"https://evhost.dev/problems/bad-request\",\"title\":\"Bad Request\"," \
	"\"status\":400,\"detail\":\"this port speaks HTTPS, and the request came in plain HTTP: " \
	"use https://\"}"

static void answer_plain_http(const SSL *ssl)
{
	char buf[4096];
	int fd = SSL_get_fd(ssl);
	int n;
	if (fd < 0)
		return;
	for (int i = 0; i < 16 && recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0; i++)
		;
	n = snprintf(buf, sizeof buf,
	             "HTTP/1.1 400 Bad Request\r\nContent-Type: application/problem+json\r\n"
	             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
	             sizeof PLAIN_HTTP_BODY - 1, PLAIN_HTTP_BODY);
	/* A new connection's send buffer takes it whole; a failure (the
	 * client gone) leaves the connection as it was: closed unanswered. */
	if (n > 0)
		(void)send(fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* The handshake's start, end or failure, for the hooks. OpenSSL passes a
 * const SSL; the mark is that connection's own data. */
static void handshake_seen(const SSL *ssl, int where, unsigned long failure)
{
	SSL *s = (SSL *)ssl;
	const void *mark = SSL_get_ex_data(ssl, held_idx);
	if ((where & SSL_CB_HANDSHAKE_START) && !mark) {
		if (SSL_set_ex_data(s, held_idx, &in_handshake) == 1 && hooks.held)
			hooks.held(1);
	} else if ((where & SSL_CB_HANDSHAKE_DONE) && mark == &in_handshake) {
		SSL_set_ex_data(s, held_idx, &handshake_over);
		if (hooks.held)
			hooks.held(-1);
	} else if (failure && mark == &in_handshake) {
		SSL_set_ex_data(s, held_idx, &handshake_failed); /* held until freed */
		if (hooks.failed)
			hooks.failed(failed_reason(failure));
	}
}

/* Replaces civetweb 1.15's info callback, which does nothing. */
static void server_info(const SSL *ssl, int where, int ret)
{
	unsigned long failure = 0;
	if ((where & SSL_CB_ACCEPT_EXIT) == SSL_CB_ACCEPT_EXIT && ret <= 0) {
		/* Nothing queued: only waiting for the client (civetweb clears
		 * the queue before each SSL_accept, and logs this failure next). */
		failure = ERR_peek_last_error();
		if (failed_reason(failure) == EVHOST_TLS_FAILED_PLAIN_HTTP)
			answer_plain_http(ssl);
	}
	if (held_idx >= 0)
		handshake_seen(ssl, where, failure);
}

PUBLIC int evhost_tls_attach(void *ssl_ctx, int min_tls13, const char *client_ca,
                             const evhost_tls_hooks *h)
{
	if (!ssl_ctx)
		return -1;
	SSL_CTX_set_cert_cb(ssl_ctx, cert_cb, NULL);
	if (h) {
		/* Taken once: a later context's (a listener started again by a
		 * reload) are the same functions, and handshakes of the serving
		 * context read them meanwhile. */
		pthread_mutex_lock(&hooks_mu);
		if (!hooks_set) {
			hooks = *h;
			hooks_set = 1;
		}
		pthread_mutex_unlock(&hooks_mu);
		pthread_once(&held_once, held_index);
		if (held_idx < 0)
			return -1;
	}
	SSL_CTX_set_info_callback(ssl_ctx, server_info);
	if (min_tls13 && SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_3_VERSION) != 1)
		return -1;
	if (client_ca) {
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(client_ca);
		if (!names)
			return -1;
		SSL_CTX_set_client_CA_list(ssl_ctx, names); /* takes them */
	}
	ERR_clear_error();
	return 0;
}

PUBLIC int evhost_tls_ca_check(const char *path, char *err, size_t errlen)
{
	size_t len = 0;
	char *pem = read_pem(path, &len, err, errlen);
	evhost_tls_cert *c = pem ? calloc(1, sizeof *c) : NULL;
	int n = -1;
	if (pem && !c)
		snprintf(err, errlen, "out of memory");
	else if (c && read_certs(c, pem, len, err, errlen) == 0)
		n = 1 + sk_X509_num(c->chain);
	evhost_tls_free(c);
	free(pem);
	return n;
}

/* How many TLS 1.3 suites `ctx` offers. */
static int tls13_count(SSL_CTX *ctx)
{
	STACK_OF(SSL_CIPHER) *all = SSL_CTX_get_ciphers(ctx);
	int n = 0;
	for (int i = 0; i < sk_SSL_CIPHER_num(all); i++)
		if (!strcmp(SSL_CIPHER_get_version(sk_SSL_CIPHER_value(all, i)), "TLSv1.3"))
			n++;
	return n;
}

/* Is `name` among the first `count` of the NUL-separated `names`? */
static int listed_before(const char *names, int count, const char *name)
{
	for (int i = 0; i < count; i++, names += strlen(names) + 1)
		if (!strcmp(names, name))
			return 1;
	return 0;
}

/* OpenSSL skips the TLS 1.3 suite names it does not know: so a typing
 * error would silently offer fewer suites, or none (no TLS 1.3 at all).
 * Each name must be one it knows, once, and none may be empty. */
static int suites_set(SSL_CTX *ctx, const char *suites, char *err, size_t errlen)
{
	char *copy = strdup(suites);
	int want = 0, rc = -1, last = 0;
	if (!copy) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	/* The names in place in `copy`, each ':' made a NUL. */
	for (char *name = copy; !last; name += strlen(name) + 1, want++) {
		size_t len = strcspn(name, ":");
		last = name[len] == '\0';
		name[len] = '\0';
		if (!len) {
			snprintf(err, errlen,
			         "tls_ciphersuites: '%s' has an empty name (a ':' at an end, or two in "
			         "a row)",
			         suites);
			goto out;
		}
		if (listed_before(copy, want, name)) {
			snprintf(err, errlen, "tls_ciphersuites: '%s' is listed twice", name);
			goto out;
		}
		if (SSL_CTX_set_ciphersuites(ctx, name) != 1 || tls13_count(ctx) != 1) {
			snprintf(err, errlen,
			         "tls_ciphersuites: '%s' is not a TLS 1.3 cipher suite OpenSSL knows "
			         "(e.g. TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256)",
			         name);
			goto out;
		}
	}
	if (SSL_CTX_set_ciphersuites(ctx, suites) != 1 || tls13_count(ctx) != want)
		snprintf(err, errlen, "tls_ciphersuites: OpenSSL refused '%s'", suites);
	else
		rc = 0;
out:
	free(copy);
	return rc;
}

PUBLIC int evhost_tls_ciphers(void *ssl_ctx, const char *ciphers, const char *suites,
                              char *err, size_t errlen)
{
	SSL_CTX *ctx = ssl_ctx ? ssl_ctx : SSL_CTX_new(TLS_server_method());
	int rc = -1;
	if (!ctx) {
		snprintf(err, errlen, "OpenSSL could not make a TLS context");
		return -1;
	}
	if (ciphers && SSL_CTX_set_cipher_list(ctx, ciphers) != 1)
		snprintf(err, errlen,
		         "tls_ciphers: '%s' leaves no TLS 1.2 cipher OpenSSL knows (e.g. "
		         "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384)",
		         ciphers);
	else if (!suites || suites_set(ctx, suites, err, errlen) == 0)
		rc = 0;
	ERR_clear_error();
	if (!ssl_ctx)
		SSL_CTX_free(ctx);
	return rc;
}
