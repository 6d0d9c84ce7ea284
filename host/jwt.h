/* JSON Web Tokens (RFC 7519): verification for EVH_ROUTE_AUTH routes, HS256
 * signing for plugins. Pure functions over bytes; HMAC from libsodium, the
 * public-key algorithms through a callback. */
#ifndef EVHOST_JWT_H
#define EVHOST_JWT_H
#include <stddef.h>
#include <stdint.h>

#define JWT_MAX_ROLES 16

typedef struct jwt_claims {
	char sub[128];
	char iss[128];
	int64_t exp, iat;
	/* When it was signed, in ms: this host's evh_iat_ms claim, else iat
	 * (whole seconds), else -1 (revoke.h compares it). */
	int64_t iat_ms;
	char roles[JWT_MAX_ROLES][64];
	int nroles;
	int foreign; /* signed by another issuer's key (RS256/ES256), not this host's */
} jwt_claims;

/* The keys a token may be checked with. HS256 tokens are this host's own
 * (signed with `secret`, or `previous` before a rotation), their iss checked
 * against `issuer` when non-NULL and their roles read from "roles". RS256
 * and ES256 tokens are another issuer's, checked by `pk_verify` (given the
 * header's kid or NULL; 1: signed by one of its keys, 0: not, -1: out of
 * memory, -2: no key has that kid) when it is set and has keys of that kind
 * (pk_rsa, pk_ec); their iss must be `pk_issuer`, their aud name
 * `pk_audience` (when non-NULL), and their roles are read at `pk_roles` (see
 * jwt.c, check_foreign_roles; NULL: "roles"). */
typedef int jwt_pk_verify_fn(void *ctx, const char *kid, const char *alg, const void *data,
                             size_t n, const unsigned char *sig, size_t siglen);
typedef struct jwt_keys {
	const unsigned char *secret, *previous;
	size_t secret_len, previous_len;
	const char *issuer;
	jwt_pk_verify_fn *pk_verify;
	void *pk_ctx;
	int pk_rsa, pk_ec;
	const char *pk_issuer, *pk_audience, *pk_roles;
	/* Non-NULL: another issuer's keys are to come (jwt_reason_keys_pending):
	 * its RS256 and ES256 tokens are answered -2, not refused. */
	const char *pk_pending;
	/* The keys can be fetched again (the provider's JWKS): an RS256 or ES256
	 * token with no key of its kind is refused as jwt_reason_unknown_kid (a
	 * key the provider added), not for its algorithm. */
	int pk_refetchable;
	/* No HS256 token of this host was signed later than this
	 * (revocations_last_signed), or 0: one issued no later is not refused
	 * as issued in the future. The clock ran ahead when it was signed and
	 * was set back since; a sign-out refuses it all the same (revoke.h). */
	int64_t signed_ms;
} jwt_keys;

/* The reason jwt_verify_keys gives (this very pointer) for a token whose kid
 * no key of another issuer has: a rotation its key file missed, likely. */
extern const char jwt_reason_unknown_kid[];
/* The reason for pk_pending: the provider's keys are not fetched yet. */
extern const char jwt_reason_keys_pending[];

/* What kind of refusal a reason is, for counting them (the reason's text
 * says more): a token that is not a JWT, one whose signature or algorithm
 * no key checks, one expired, one not yet valid (nbf, or iat ahead), one
 * whose claims are wrong (issuer, audience, subject, roles, a time that is
 * not a number), or one that could not be checked (no keys configured,
 * the provider's not fetched yet, want of memory). */
typedef enum jwt_refusal {
	JWT_REFUSED_NONE,
	JWT_REFUSED_MALFORMED,
	JWT_REFUSED_SIGNATURE,
	JWT_REFUSED_EXPIRED,
	JWT_REFUSED_NOT_YET_VALID,
	JWT_REFUSED_CLAIMS,
	JWT_REFUSED_UNVERIFIABLE,
} jwt_refusal;

/* Verify the signature with the key its algorithm names (no other: "none"
 * and algorithms without a key are refused), exp (with `leeway_s`), nbf,
 * and the claims `k` asks for. Returns 0, or -1 with a static reason, or -2
 * when it could not tell for want of memory or of the issuer's keys
 * (pk_pending: the token may be good). `refusal` (may be NULL): its kind,
 * JWT_REFUSED_NONE for 0. */
int jwt_verify_keys(const char *token, const jwt_keys *k, int64_t now, int leeway_s,
                    jwt_claims *out, const char **reason, jwt_refusal *refusal);

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
/* Whether jwt_sign would take these (1 for yes): a subject and roles of
 * the sizes a token may carry, all UTF-8, a positive ttl, a secret. */
int jwt_sign_args_ok(const char *subject, const char *const *roles, size_t nroles, int ttl_s,
                     const char *issuer, const unsigned char *secret, size_t secret_len);
/* Sign a token {sub, roles, iat, evh_iat_ms, exp[, iss]} at `now_ms`
 * (milliseconds since the epoch: iat is its whole seconds, evh_iat_ms the
 * moment itself, which a sign-out is compared with, revoke.h); *out is
 * malloc'd. 0 or -1. */
int jwt_sign(const char *subject, const char *const *roles, size_t nroles, int64_t now_ms,
             int ttl_s, const char *issuer, const unsigned char *secret, size_t secret_len,
             char **out);
#endif
