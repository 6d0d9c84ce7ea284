/* libFuzzer: arbitrary bytes as a bearer token. Verification must never
 * crash, must give a reason (and its kind) exactly when it refuses, and must leave claims
 * that are terminated strings within their bounds. A token this input could
 * not have been signed for (we do not know a secret that makes it valid by
 * chance) is refused; so each input is also signed as a subject and the
 * result must verify to the same subject. The same bytes go through the
 * checks of another issuer's RS256/ES256 tokens too (verify_foreign). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const unsigned char secret[] = "fuzz-secret";

static void check_claims(const jwt_claims *c)
{
	if (!memchr(c->sub, '\0', sizeof c->sub) || !memchr(c->iss, '\0', sizeof c->iss) ||
	    c->nroles < 0 || c->nroles > JWT_MAX_ROLES)
		__builtin_trap();
	for (int i = 0; i < c->nroles; i++)
		if (!memchr(c->roles[i], '\0', sizeof c->roles[i]))
			__builtin_trap();
}

static void verify_input(const char *tok)
{
	jwt_claims c;
	const char *why = NULL;
	int rc = jwt_verify(tok, secret, sizeof secret - 1, NULL, 1700000000, 30, &c, &why);
	if ((rc == 0) != (why == NULL))
		__builtin_trap();
	if (rc == 0)
		check_claims(&c);
}

/* Another issuer's keys, here accepting any signature: what the payload
 * says (issuer, audience, roles at a nested claim or in a string) is what
 * is fuzzed, past the check a real key would make. */
static int any_signature(void *ctx, const char *kid, const char *alg, const void *data,
                         size_t n, const unsigned char *sig, size_t siglen)
{
	(void)ctx;
	(void)kid;
	(void)alg;
	(void)data;
	(void)n;
	(void)sig;
	(void)siglen;
	return 1;
}

static void verify_foreign(const char *tok)
{
	static const jwt_keys keys[] = {
	    {.pk_verify = any_signature, .pk_rsa = 1, .pk_ec = 1, .pk_issuer = "i",
	     .pk_audience = "a", .pk_roles = "r.o.l"},
	    {.pk_verify = any_signature, .pk_rsa = 1, .pk_issuer = "i", .pk_roles = "scope"},
	};
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		jwt_claims c;
		const char *why = NULL;
		jwt_refusal cls = JWT_REFUSED_EXPIRED;
		int rc = jwt_verify_keys(tok, &keys[i], 1700000000, 30, &c, &why, &cls);
		if ((rc == 0) != (why == NULL) || (rc == 0) != (cls == JWT_REFUSED_NONE) ||
		    (rc == -2 && cls != JWT_REFUSED_UNVERIFIABLE))
			__builtin_trap();
		if (rc == 0)
			check_claims(&c);
	}
}

static void sign_roundtrip(const char *subject)
{
	const char *roles[] = {"user"};
	char *tok = NULL;
	jwt_claims c;
	if (jwt_sign(subject, roles, 1, 1700000000000LL, 60, "fuzz", secret, sizeof secret - 1,
	             &tok) != 0)
		return;
	if (jwt_verify(tok, secret, sizeof secret - 1, "fuzz", 1700000000, 0, &c, NULL) != 0 ||
	    strcmp(c.sub, subject) != 0 || c.nroles != 1 || c.iat_ms != 1700000000000LL)
		__builtin_trap();
	free(tok);
}

/* An input that begins with '{' (no token does: base64url has no '{') is
 * "HEADER\0PAYLOAD", two JSON texts made into a token here, so that the
 * fuzzer reaches the header and claim checks without having to find base64
 * of JSON; verify_foreign takes any signature. */
static char *token_of_json(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	size_t hn = nul ? (size_t)(nul - data) : size, pn = nul ? size - hn - 1 : 0;
	size_t hb = sodium_base64_ENCODED_LEN(hn, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	size_t pb = sodium_base64_ENCODED_LEN(pn, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	char *tok = malloc(hb + pb + 8), *p;
	if (!tok)
		abort();
	sodium_bin2base64(tok, hb, data, hn, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	p = tok + strlen(tok);
	*p++ = '.';
	sodium_bin2base64(p, pb, nul ? nul + 1 : data, pn, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	strcat(p, ".c2ln");
	return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;
	if (size && data[0] == '{') {
		s = token_of_json(data, size);
		verify_input(s);
		verify_foreign(s);
		free(s);
		return 0;
	}
	s = malloc(size + 1);
	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	verify_input(s);
	verify_foreign(s);
	if (strlen(s) > 0 && strlen(s) < 128)
		sign_roundtrip(s);
	free(s);
	return 0;
}
