/* Public keys that check the signatures of JSON Web Tokens issued elsewhere
 * ([auth] jwt_public_key_file: an identity provider's RS256 or ES256
 * tokens). Implemented in pubkey.c, inside evhost's libssl.so like cert.c;
 * evhostd reaches it with dlsym through tls_compat.c. */
#ifndef EVHOST_TLS_PUBKEY_H
#define EVHOST_TLS_PUBKEY_H
#include <stddef.h>

/* The public keys in `pem` (len bytes of PEM text: "PUBLIC KEY" blocks,
 * SubjectPublicKeyInfo, as identity providers publish them; other blocks are
 * an error): RSA of 2048 bits or more, or EC on P-256. At most 16. NULL with
 * the reason in err, which names the block: "block 2", or labels[1] when
 * labels (one per block) is given. kids (NULL, or one per block, each NULL
 * or the key's id: a JWKS's "kid") are kept for verify. *nrsa and *nec: how
 * many of each. */
typedef void *evhost_tls_pubkeys_load_fn(const char *pem, size_t len,
                                         const char *const *labels, const char *const *kids,
                                         int *nrsa, int *nec, char *err, size_t errlen);
typedef void evhost_tls_pubkeys_free_fn(void *keys);
/* Whether `sig` (the JWS signature, decoded) signs data[0..n) under `alg`
 * ("RS256": RSASSA-PKCS1-v1_5 with SHA-256, by one of the RSA keys;
 * "ES256": ECDSA P-256 with SHA-256, r and s of 32 bytes each, by one of
 * the EC keys): 1 yes, 0 no, -1 out of memory. With `kid` (the token's key
 * id, or NULL), only the keys of that kind with that id are tried when
 * there are some (two may share one), else those without an id; when none
 * has that id, some key has one and none signed it: -2. Thread-safe. */
typedef int evhost_tls_pubkeys_verify_fn(void *keys, const char *kid, const char *alg,
                                         const void *data, size_t n, const unsigned char *sig,
                                         size_t siglen);

#ifdef EVHOST_TLS_SHIM_SSL /* defined in the library; evhostd uses dlsym */
evhost_tls_pubkeys_load_fn evhost_tls_pubkeys_load;
evhost_tls_pubkeys_free_fn evhost_tls_pubkeys_free;
evhost_tls_pubkeys_verify_fn evhost_tls_pubkeys_verify;
#endif

#endif
