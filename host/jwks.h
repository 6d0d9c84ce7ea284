/* An identity provider's JSON Web Key Set (RFC 7517), as it publishes it at
 * its jwks_uri, turned into the PEM text the public-key loader reads
 * (tls/pubkey.h): [auth] jwt_public_key_file takes either. */
#ifndef EVHOST_JWKS_H
#define EVHOST_JWKS_H
#include <stddef.h>

/* As many keys as the loader takes (tls/pubkey.c); a token without kid is
 * checked with each of its kind. */
#define JWKS_MAX_KEYS 16
/* A longer kid is kept as none (jwt.c refuses tokens with one). */
#define JWKS_KID_MAX 255
/* Keys left out that jwks_to_pem_usable names (the rest are counted): a set
 * of 1 MiB could hold thousands. */
#define JWKS_NOTES_MAX 16

typedef struct jwks_pem {
	char *pem;                          /* "PUBLIC KEY" blocks, NUL-terminated */
	size_t len;                         /* strlen(pem) */
	int nkeys;                          /* blocks in pem */
	int skipped;                        /* keys of the set left out */
	char label[JWKS_MAX_KEYS][96];      /* each block's key: "JWKS key 3 (kid 'a1')" */
	const char *labels[JWKS_MAX_KEYS];  /* label[i], for the loader */
	char kid[JWKS_MAX_KEYS][JWKS_KID_MAX + 1];
	const char *kids[JWKS_MAX_KEYS];    /* kid[i], or NULL: the key has no kid */
	/* jwks_to_pem_usable only: keys of a kind it takes that are left out all
	 * the same (malformed, refused by the check, beyond JWKS_MAX_KEYS), and
	 * the first JWKS_NOTES_MAX of them: "JWKS key 3 (kid 'a1'): why". */
	int unusable;
	int nnotes;
	char note[JWKS_NOTES_MAX][256];
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

/* Whether the key `label` (kid or NULL), pem[0..len) as jwks_to_pem makes
 * it, is one evhost can use (the loader reads it: a point on its curve): 0
 * yes; 1 no, with why in err (naming the key by label); -1 when it cannot
 * tell (out of memory, no TLS library), the reason in err. */
typedef int jwks_check_fn(const char *pem, size_t len, const char *label, const char *kid,
                          void *arg, char *err, size_t errlen);

/* jwks_to_pem for a set fetched from the provider (RFC 7517, 5: keys not
 * understood are ignored): a key of a kind it takes that is malformed, that
 * `check` (when not NULL) refuses, or that comes after the first
 * JWKS_MAX_KEYS usable ones, is left out too, counted in out->unusable and
 * noted (out->note). -1 for a set that is not a JWKS, out of memory, or a
 * check that could not be made; -2 when no key is left (err says how many
 * could not be used). */
int jwks_to_pem_usable(const char *text, size_t n, jwks_check_fn *check, void *arg,
                       jwks_pem *out, char *err, size_t errlen);
void jwks_pem_free(jwks_pem *p);

#endif
