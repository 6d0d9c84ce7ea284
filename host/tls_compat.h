/* HTTPS with Debian 12's civetweb: load OpenSSL the way its TLS loader
 * expects (see tls_compat.c). */
#ifndef EVHOST_TLS_COMPAT_H
#define EVHOST_TLS_COMPAT_H
#include <stddef.h>

/* Load the two compatibility libraries, from host/tls/ beside the running
 * executable (a build tree) or else from EVHOST_TLS_DIR (installed). Once
 * they are loaded, civetweb's mg_init_library(MG_FEATURES_TLS) finds
 * OpenSSL. Returns 0, or -1 with the reason in err. Idempotent. */
int tls_compat_load(char *err, size_t errlen);

#endif
