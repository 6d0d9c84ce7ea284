/* JSON Web Tokens, HS256 only (RFC 7519): verification for EVH_ROUTE_AUTH
 * routes. Pure functions over bytes; HMAC from libsodium. */
#ifndef EVHOST_JWT_H
#define EVHOST_JWT_H
#include <stddef.h>
#include <stdint.h>

#define JWT_MAX_ROLES 8

typedef struct jwt_claims {
	char sub[128];
	char iss[128];
	int64_t exp, iat;
	char roles[JWT_MAX_ROLES][32];
	int nroles;
} jwt_claims;

/* Verify signature (HS256 only; alg none refused), exp (with `leeway_s`),
 * and iss when `issuer` is non-NULL. Returns 0, or -1 with a static reason,
 * or -2 when it could not tell for want of memory (the token may be good). */
int jwt_verify(const char *token, const unsigned char *secret, size_t secret_len,
               const char *issuer, int64_t now, int leeway_s, jwt_claims *out,
               const char **reason);
/* jwt_verify, also accepting a signature by `alt` (when non-NULL): the key
 * a rotation replaced, for the tokens it signed. */
int jwt_verify2(const char *token, const unsigned char *secret, size_t secret_len,
                const unsigned char *alt, size_t alt_len, const char *issuer, int64_t now,
                int leeway_s, jwt_claims *out, const char **reason);
/* Sign a token {sub, roles, iat, exp[, iss]}; *out is malloc'd. 0 or -1. */
int jwt_sign(const char *subject, const char *const *roles, size_t nroles, int64_t now,
             int ttl_s, const char *issuer, const unsigned char *secret, size_t secret_len,
             char **out);
#endif
