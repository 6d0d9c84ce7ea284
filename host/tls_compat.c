/* Debian 12's civetweb (1.15) is built to load OpenSSL at run time: it
 * calls dlopen("libssl.so") and dlopen("libcrypto.so"), then looks up each
 * function it uses. Two things stop it with Debian 12's OpenSSL 3:
 *
 *   - those two file names exist only with the development package
 *     (libssl-dev), not on a server;
 *   - it asks libssl for SSL_get_peer_certificate, which OpenSSL 3 exports
 *     only as SSL_get1_peer_certificate (the old name is a macro), so its
 *     loader gives up ("cannot find SSL_get_peer_certificate").
 *
 * glibc's dlopen, given a name without a slash, first looks for a loaded
 * object whose soname is that name, before it searches the disk. evhost
 * builds two small libraries with the sonames "libssl.so" and
 * "libcrypto.so" (host/tls/shim.c), linked to libssl.so.3 and
 * libcrypto.so.3, the first also defining the old name over the new one.
 * Loaded here first, they are what civetweb's dlopen returns, and its
 * lookups find OpenSSL 3's functions through their dependencies. They are
 * never unloaded: civetweb keeps the function pointers until exit.
 *
 * evhost's libssl.so also holds the certificate being served (tls/cert.c),
 * the span exporter's TLS client (tls/client.c) and the public keys of
 * tokens issued elsewhere (tls/pubkey.c), reached here through dlsym:
 * evhostd itself never links OpenSSL. */
#include "tls_compat.h"
#include "tls/cert.h"
#include "tls/client.h"
#include "tls/pubkey.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

#ifndef EVHOST_TLS_DIR
#define EVHOST_TLS_DIR "/usr/lib/evhost/tls"
#endif

static int loaded;
static struct {
	evhost_tls_load_fn *load;
	evhost_tls_free_fn *free;
	evhost_tls_expiry_fn *expiry;
	evhost_tls_describe_fn *describe;
	evhost_tls_use_fn *use;
	evhost_tls_attach_fn *attach;
	evhost_tls_ca_check_fn *ca_check;
	evhost_tls_ciphers_fn *ciphers;
	evhost_tls_client_new_fn *client_new;
	evhost_tls_client_free_fn *client_free;
	evhost_tls_conn_new_fn *conn_new;
	evhost_tls_conn_io_fn *conn_io;
	evhost_tls_conn_free_fn *conn_free;
	evhost_tls_pubkeys_load_fn *pubkeys_load;
	evhost_tls_pubkeys_free_fn *pubkeys_free;
	evhost_tls_pubkeys_verify_fn *pubkeys_verify;
} fn;
static atomic_int_least64_t serving_expiry;

/* evhost's functions in its libssl.so. */
static int find_functions(void *ssl, const char *path, char *err, size_t errlen)
{
	static const char *const names[] = {"evhost_tls_load",     "evhost_tls_free",
	                                    "evhost_tls_expiry",   "evhost_tls_describe",
	                                    "evhost_tls_use",      "evhost_tls_attach",
	                                    "evhost_tls_ca_check", "evhost_tls_ciphers",
	                                    "evhost_tls_client_new", "evhost_tls_client_free",
	                                    "evhost_tls_conn_new",   "evhost_tls_conn_io",
	                                    "evhost_tls_conn_free",  "evhost_tls_pubkeys_load",
	                                    "evhost_tls_pubkeys_free", "evhost_tls_pubkeys_verify"};
	void *found[sizeof names / sizeof names[0]];
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		if (!(found[i] = dlsym(ssl, names[i]))) {
			snprintf(err, errlen, "%s: no %s (a library of another evhost version?)", path,
			         names[i]);
			return -1;
		}
	}
	/* POSIX: a function pointer round-trips through dlsym's void *. */
	*(void **)&fn.load = found[0];
	*(void **)&fn.free = found[1];
	*(void **)&fn.expiry = found[2];
	*(void **)&fn.describe = found[3];
	*(void **)&fn.use = found[4];
	*(void **)&fn.attach = found[5];
	*(void **)&fn.ca_check = found[6];
	*(void **)&fn.ciphers = found[7];
	*(void **)&fn.client_new = found[8];
	*(void **)&fn.client_free = found[9];
	*(void **)&fn.conn_new = found[10];
	*(void **)&fn.conn_io = found[11];
	*(void **)&fn.conn_free = found[12];
	*(void **)&fn.pubkeys_load = found[13];
	*(void **)&fn.pubkeys_free = found[14];
	*(void **)&fn.pubkeys_verify = found[15];
	return 0;
}

/* Both libraries from `dir`; crypto first, which ssl depends on. */
static int load_from(const char *dir, char *err, size_t errlen)
{
	static const char *const names[] = {"libcrypto.so", "libssl.so"};
	char path[PATH_MAX];
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
		int n = snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		if (n < 0 || (size_t)n >= sizeof path) {
			snprintf(err, errlen, "%s/%s: path too long", dir, names[i]);
			return -1;
		}
		if (access(path, R_OK) != 0) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			return -1;
		}
		void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
		if (!lib) {
			const char *why = dlerror();
			snprintf(err, errlen, "%s", why ? why : path);
			return -1;
		}
		if (!strcmp(names[i], "libssl.so")) /* evhost's, with cert.c */
			return find_functions(lib, path, err, errlen);
	}
	return 0;
}

/* "<directory of the running executable>/tls", where a build tree has
 * them; 0 on success. */
static int beside_exe(char *out, size_t size)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	char *slash;
	if (n <= 0)
		return -1;
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	if (!slash)
		return -1;
	*slash = '\0';
	n = snprintf(out, size, "%s/tls", exe);
	return n > 0 && (size_t)n < size ? 0 : -1;
}

int tls_compat_load(char *err, size_t errlen)
{
	char dir[PATH_MAX], why[PATH_MAX + 256];
	if (loaded)
		return 0;
	if (beside_exe(dir, sizeof dir) == 0 && load_from(dir, why, sizeof why) == 0) {
		loaded = 1;
		return 0;
	}
	if (load_from(EVHOST_TLS_DIR, why, sizeof why) != 0) {
		snprintf(err, errlen,
		         "cannot load OpenSSL: %s (evhost's TLS libraries belong in "
		         "%s; see the operations guide, \"TLS\")",
		         why, EVHOST_TLS_DIR);
		return -1;
	}
	loaded = 1;
	return 0;
}

tls_cert *tls_cert_load(const char *path, char *err, size_t errlen)
{
	if (tls_compat_load(err, errlen) != 0)
		return NULL;
	return fn.load(path, err, errlen);
}

void tls_cert_free(tls_cert *c)
{
	if (c)
		fn.free(c);
}

/* Renewals are due well before this: certbot renews at 30 days left. */
#define EXPIRY_WARN_DAYS 14

static void expiry_warn(int64_t expiry, const char *path)
{
	time_t t = (time_t)expiry;
	struct tm tm;
	char when[32];
	int64_t left = expiry - (int64_t)time(NULL);
	if (!expiry || left > EXPIRY_WARN_DAYS * 86400LL || !gmtime_r(&t, &tm))
		return;
	strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
	if (left <= 0)
		log_warn("host", "[http] tls_certificate %s: a certificate in it expired on %s; "
		                 "clients refuse it. Renew it, then reload (systemctl reload evhostd)",
		         path, when);
	else
		log_warn("host", "[http] tls_certificate %s: a certificate in it expires on %s, in "
		                 "%lld day(s). Renew it, then reload (systemctl reload evhostd)",
		         path, when, (long long)(left / 86400));
}

void tls_cert_describe(const tls_cert *c, char *out, size_t n) { fn.describe(c, out, n); }

void tls_cert_use(tls_cert *c, const char *path)
{
	int64_t expiry = fn.expiry(c);
	atomic_store(&serving_expiry, expiry);
	fn.use(c);
	expiry_warn(expiry, path);
}

static atomic_uint_least64_t handshakes_failed[EVHOST_TLS_FAILED_N];

static void handshake_failed(int reason)
{
	if (reason >= 0 && reason < EVHOST_TLS_FAILED_N)
		atomic_fetch_add(&handshakes_failed[reason], 1);
}

int tls_ctx_setup(void *ssl_ctx, int min_tls13, const char *client_ca)
{
	/* A connection in its TLS handshake holds a civetweb worker as much as
	 * one past it: both count in evhost_http_connections. */
	static const evhost_tls_hooks hooks = {metrics_http_connection, handshake_failed};
	return loaded && fn.attach(ssl_ctx, min_tls13, client_ca, &hooks) == 0 ? 0 : -1;
}

const char *tls_handshakes_failed(int i, uint64_t *count)
{
	static const char *const names[EVHOST_TLS_FAILED_N] = {
	    [EVHOST_TLS_FAILED_PLAIN_HTTP] = "plain_http",
	    [EVHOST_TLS_FAILED_VERSION] = "protocol_version",
	    [EVHOST_TLS_FAILED_CIPHER] = "no_shared_cipher",
	    [EVHOST_TLS_FAILED_CERTIFICATE_REFUSED] = "certificate_refused",
	    [EVHOST_TLS_FAILED_CLIENT_CERTIFICATE] = "client_certificate",
	    [EVHOST_TLS_FAILED_INCOMPLETE] = "incomplete",
	    [EVHOST_TLS_FAILED_OTHER] = "other"};
	if (i < 0 || i >= EVHOST_TLS_FAILED_N)
		return NULL;
	*count = atomic_load(&handshakes_failed[i]);
	return names[i];
}

int tls_ca_check(const char *path, char *err, size_t errlen)
{
	if (tls_compat_load(err, errlen) != 0)
		return -1;
	return fn.ca_check(path, err, errlen);
}

int tls_ciphers_set(void *ssl_ctx, const char *ciphers, const char *suites, char *err,
                    size_t errlen)
{
	if (!ciphers && !suites)
		return 0;
	if (tls_compat_load(err, errlen) != 0)
		return -1;
	return fn.ciphers(ssl_ctx, ciphers, suites, err, errlen);
}

int64_t tls_serving_expiry(void) { return atomic_load(&serving_expiry); }

tls_client *tls_client_new(const char *ca_file, const char *cert_file, char *err,
                           size_t errlen)
{
	if (tls_compat_load(err, errlen) != 0)
		return NULL;
	return fn.client_new(ca_file, cert_file, err, errlen);
}

void tls_client_free(tls_client *c)
{
	if (c)
		fn.client_free(c);
}

tls_conn *tls_conn_new(tls_client *c, int fd, const char *host, char *err, size_t errlen)
{
	return fn.conn_new(c, fd, host, err, errlen);
}

int tls_conn_io(tls_conn *conn, int op, void *buf, size_t n, char *err, size_t errlen)
{
	return fn.conn_io(conn, op, buf, n, err, errlen);
}

void tls_conn_free(tls_conn *conn)
{
	if (conn)
		fn.conn_free(conn);
}

tls_pubkeys *tls_pubkeys_load(const char *pem, size_t len, const char *const *labels,
                              const char *const *kids, int *nrsa, int *nec, char *err,
                              size_t errlen)
{
	if (tls_compat_load(err, errlen) != 0)
		return NULL;
	return fn.pubkeys_load(pem, len, labels, kids, nrsa, nec, err, errlen);
}

void tls_pubkeys_free(tls_pubkeys *k)
{
	if (k)
		fn.pubkeys_free(k);
}

int tls_pubkeys_verify(tls_pubkeys *k, const char *kid, const char *alg, const void *data,
                       size_t n, const unsigned char *sig, size_t siglen)
{
	return fn.pubkeys_verify(k, kid, alg, data, n, sig, siglen);
}
