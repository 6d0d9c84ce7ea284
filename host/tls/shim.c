/* The two libraries evhostd loads before civetweb starts HTTPS (see
 * host/tls_compat.c for why). Built twice:
 *
 *   libssl.so     soname "libssl.so", linked to libssl.so.3 and
 *                 libcrypto.so.3, plus the one function civetweb 1.15 asks
 *                 for that OpenSSL 3 renamed, and the certificate evhostd
 *                 serves (cert.c);
 *   libcrypto.so  soname "libcrypto.so", linked to libcrypto.so.3 (every
 *                 function civetweb asks of it is there under its name).
 *
 * No OpenSSL header is included here: <openssl/ssl.h> defines
 * SSL_get_peer_certificate as a macro for SSL_get1_peer_certificate. */
#ifdef EVHOST_TLS_SHIM_SSL
struct ssl_st;
struct x509_st;

struct x509_st *SSL_get1_peer_certificate(const struct ssl_st *ssl);
__attribute__((visibility("default"))) struct x509_st *
SSL_get_peer_certificate(const struct ssl_st *ssl);

/* OpenSSL 1.1's name: the peer's certificate with a reference taken (the
 * caller frees it with X509_free), exactly what the new name does. */
struct x509_st *SSL_get_peer_certificate(const struct ssl_st *ssl)
{
	return SSL_get1_peer_certificate(ssl);
}
#else
/* libcrypto.so has no code of its own: only its soname and its dependency. */
typedef int evhost_tls_shim_crypto_empty;
#endif
