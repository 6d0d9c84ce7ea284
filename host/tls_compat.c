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
 * never unloaded: civetweb keeps the function pointers until exit. */
#include "tls_compat.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef EVHOST_TLS_DIR
#define EVHOST_TLS_DIR "/usr/lib/evhost/tls"
#endif

static int loaded;

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
		if (!dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE)) {
			const char *why = dlerror();
			snprintf(err, errlen, "%s", why ? why : path);
			return -1;
		}
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
		         "cannot load OpenSSL for civetweb: %s (evhost's TLS libraries belong in "
		         "%s; see the operations guide, \"TLS\")",
		         why, EVHOST_TLS_DIR);
		return -1;
	}
	loaded = 1;
	return 0;
}
