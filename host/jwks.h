/* An identity provider's JSON Web Key Set (RFC 7517), as it publishes it at
 * its jwks_uri, turned into the PEM text the public-key loader reads
 * (tls/pubkey.h): [auth] jwt_public_key_file takes either. */
#ifndef EVHOST_JWKS_H
#define EVHOST_JWKS_H
#include <stddef.h>

/* As many keys as the loader takes. */
#define JWKS_MAX_KEYS 16
/* A longer kid is kept as none (jwt.c refuses tokens with one). */
#define JWKS_KID_MAX 255

typedef struct jwks_pem {
	char *pem;                          /* "PUBLIC KEY" blocks, NUL-terminated */
	size_t len;                         /* strlen(pem) */
	int nkeys;                          /* blocks in pem */
	int skipped;                        /* keys of the set left out */
	char label[JWKS_MAX_KEYS][96];      /* each block's key: "JWKS key 3 (kid 'a1')" */
	const char *labels[JWKS_MAX_KEYS];  /* label[i], for the loader */
	char kid[JWKS_MAX_KEYS][JWKS_KID_MAX + 1];
	const char *kids[JWKS_MAX_KEYS];    /* kid[i], or NULL: the key has no kid */
} jwks_pem;

/* Does text[0..n) look like a JWKS rather than PEM (its first character
 * after white space is '{')? */
int jwks_is_jwks(const char *text, size_t n);

/* The keys of the JWKS text[0..n) that can check RS256 or ES256 signatures
 * (kty RSA with n and e, n of 2048 bits or more; kty EC on P-256 with x and
 * y), as PEM "PUBLIC KEY" blocks (SubjectPublicKeyInfo) in the set's order,
 * into *out (jwks_pem_free frees it). Keys for something else (use other than
 * "sig", key_ops without "verify", alg other than RS256/ES256, another kty or
 * curve) are left out and counted. 0, or -1 with the reason in err: not a
 * JWKS, a key of a kind it takes that is malformed (named by its place and
 * kid), more than JWKS_MAX_KEYS, out of memory; or -2, the reason in err,
 * for a well-formed set with no key left (none, or only keys for something
 * else: out->skipped says how many). Whether an EC point is on its curve is
 * the loader's to check. */
int jwks_to_pem(const char *text, size_t n, jwks_pem *out, char *err, size_t errlen);
void jwks_pem_free(jwks_pem *p);

#endif
