/* JSON Web Tokens: HS256 signed and checked here; RS256 and ES256 of another
 * issuer checked through a callback (the public keys live in OpenSSL, see
 * tls/pubkey.c). Verification is deliberately narrow: the algorithms the
 * configured keys serve and no other, canonical unpadded base64url only,
 * the signature checked before the payload is parsed, and every claim we
 * rely on type-checked. */
#include "jwt.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "json.h"

#define JWT_MAX_TOKEN 4096
/* Our own tokens: at most 8 roles, names under 32 bytes (jwt_claims has
 * room for more, for other issuers' tokens). */
#define OWN_MAX_ROLES 8
#define OWN_ROLE_SIZE 32
#define JWT_SIG_BYTES crypto_auth_hmacsha256_BYTES
/* Largest integer a double holds exactly; claims beyond it are nonsense. */
#define JWT_MAX_TIME 9007199254740991.0

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static int sodium_ok;

static void sodium_setup(void) { sodium_ok = sodium_init() >= 0; }

static int crypto_ready(void)
{
	pthread_once(&sodium_once, sodium_setup);
	return sodium_ok;
}

/* ------------------------------------------------------------ base64url */

static size_t b64url_encoded_len(size_t n) { return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0); }

/* Encode without padding into out (room for b64url_encoded_len(n) + 1). */
static void b64url_encode(const unsigned char *in, size_t n, char *out)
{
	size_t i = 0, o = 0;
	for (; i + 3 <= n; i += 3) {
		unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64url_alphabet[v >> 18 & 63];
		out[o++] = b64url_alphabet[v >> 12 & 63];
		out[o++] = b64url_alphabet[v >> 6 & 63];
		out[o++] = b64url_alphabet[v & 63];
	}
	if (n - i == 1) {
		unsigned v = (unsigned)in[i] << 16;
		out[o++] = b64url_alphabet[v >> 18 & 63];
		out[o++] = b64url_alphabet[v >> 12 & 63];
	} else if (n - i == 2) {
		unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
		out[o++] = b64url_alphabet[v >> 18 & 63];
		out[o++] = b64url_alphabet[v >> 12 & 63];
		out[o++] = b64url_alphabet[v >> 6 & 63];
	}
	out[o] = '\0';
}

static int b64url_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Why a token could not be checked, rather than what is wrong with it. */
static const char no_memory[] = "out of memory checking the token";
/* The reasons a refusal is classed by (jwt_refusal), compared as pointers. */
static const char reason_sig_encoding[] = "malformed token signature";
static const char reason_expired[] = "token expired";
static const char reason_future_iat[] = "token issued in the future (iat)";
static const char reason_not_yet[] = "token not yet valid";

/* Decode [in, in+n) into a malloc'd, NUL-terminated buffer. Only the
 * canonical form is accepted (no padding, unused trailing bits zero), so a
 * token has exactly one spelling. Returns NULL on bad input, or out of
 * memory (then *oom is set). */
static unsigned char *b64url_decode(const char *in, size_t n, size_t *outlen, int *oom)
{
	unsigned char *out;
	size_t o = 0;
	unsigned acc = 0;
	int bits = 0;
	if (n % 4 == 1)
		return NULL;
	out = malloc(n / 4 * 3 + 3);
	if (!out) {
		*oom = 1;
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		int v = b64url_value(in[i]);
		if (v < 0)
			goto bad;
		acc = (acc << 6 | (unsigned)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits & 0xff);
		}
	}
	if (bits > 0 && (acc & ((1u << bits) - 1)) != 0)
		goto bad;
	out[o] = '\0';
	*outlen = o;
	return out;
bad:
	free(out);
	return NULL;
}

/* --------------------------------------------------------------- HMAC */

static void hmac_sha256(const unsigned char *key, size_t keylen, const char *msg, size_t n,
                        unsigned char mac[JWT_SIG_BYTES])
{
	crypto_auth_hmacsha256_state st;
	crypto_auth_hmacsha256_init(&st, key, keylen);
	crypto_auth_hmacsha256_update(&st, (const unsigned char *)msg, n);
	crypto_auth_hmacsha256_final(&st, mac);
	sodium_memzero(&st, sizeof st);
}

/* ------------------------------------------------------------- verify */

/* A part that is JSON but not what a token may hold: the rules the host
 * holds an HTTP body to (UTF-8, no \u0000, no number beyond a double),
 * and no member named twice. RFC 7515 (4) and RFC 7519 (4) have a parser
 * refuse duplicate names or take the last; cJSON takes the first, so a
 * service in front of evhostd reading the same token would see another
 * "exp", "aud" or "alg" than we do. */
static const char twice_in_header[] = "token header names a member twice";
static const char twice_in_payload[] = "token payload names a claim twice";

/* How deep a token's header or payload may nest: checked before cJSON
 * parses it, recursing once per level on the HTTP worker's stack, which
 * about 550 levels overflow (json.h, JSON_WORKER_DEPTH); a header of a
 * 4096-byte token can nest 1300, sent by anyone, before any signature is
 * checked. Claims nest a few levels (realm_access.roles). */
#define JWT_PART_DEPTH 32

/* A part's JSON object, or NULL: malformed or nested deeper than
 * JWT_PART_DEPTH (*twice set when only because a member is named twice),
 * or out of memory (*oom set). */
static cJSON *parse_part(const char *b64, size_t n, int *oom, int *twice)
{
	size_t len;
	unsigned char *raw = b64url_decode(b64, n, &len, oom);
	const char *text = (const char *)raw;
	char name[64];
	cJSON *j = NULL;
	int dup;
	if (!raw)
		return NULL;
	if (json_utf8_error(text, len) < 0 &&
	    json_check(text, len, JWT_PART_DEPTH, NULL) == JSON_OK) {
		/* cJSON failing on text json_check calls JSON: out of memory */
		j = cJSON_ParseWithLengthOpts(text, len + 1, NULL, 1);
		*oom = !j;
	}
	free(raw);
	if (j && cJSON_IsObject(j)) {
		dup = json_tree_duplicate_member(j, name, sizeof name);
		if (dup == 0)
			return j;
		*twice = dup == 1;
		*oom = dup < 0;
	}
	cJSON_Delete(j);
	return NULL;
}

typedef enum { ALG_HS256, ALG_RS256, ALG_ES256 } jwt_alg;

/* The algorithms `k` can check, as a reason for refusing another one. */
static const char *alg_refused(const jwt_keys *k)
{
	static const char *const why[8] = {
	    "token algorithm is not accepted (no keys)",
	    "token algorithm is not HS256",
	    "token algorithm is not RS256",
	    "token algorithm is not HS256 or RS256",
	    "token algorithm is not ES256",
	    "token algorithm is not HS256 or ES256",
	    "token algorithm is not RS256 or ES256",
	    "token algorithm is not HS256, RS256 or ES256",
	};
	int pk = k->pk_verify != NULL;
	return why[(k->secret && k->secret_len) | (pk && k->pk_rsa) << 1 | (pk && k->pk_ec) << 2];
}

/* A key id longer than this is refused (providers use a few dozen bytes). */
#define KID_MAX 255

const char jwt_reason_unknown_kid[] = "token signed with an unknown key (kid)";
const char jwt_reason_keys_pending[] = "the identity provider's keys are not fetched yet";

/* The header's algorithm, if `k` has keys for it: HS256 with a secret,
 * RS256 and ES256 with public keys of that kind, never another (no "none",
 * and a token cannot choose which kind of key checks it). Its key id (kid)
 * into kid (KID_MAX + 1 bytes; "" when it has none). */
static const char *check_header(const char *b64, size_t n, const jwt_keys *k, jwt_alg *alg,
                                char *kid)
{
	int oom = 0, twice = 0, pk = k->pk_verify != NULL;
	cJSON *hdr = parse_part(b64, n, &oom, &twice);
	const cJSON *a, *typ, *id;
	const char *why = NULL;
	if (!hdr)
		return oom ? no_memory : twice ? twice_in_header : "malformed token header";
	a = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
	typ = cJSON_GetObjectItemCaseSensitive(hdr, "typ");
	if (!cJSON_IsString(a))
		why = "token header has no alg";
	else if (!strcmp(a->valuestring, "HS256") && k->secret && k->secret_len)
		*alg = ALG_HS256;
	else if ((!strcmp(a->valuestring, "RS256") || !strcmp(a->valuestring, "ES256")) && pk &&
	         k->pk_pending)
		why = k->pk_pending;
	else if (!strcmp(a->valuestring, "RS256") && pk && k->pk_rsa)
		*alg = ALG_RS256;
	else if (!strcmp(a->valuestring, "ES256") && pk && k->pk_ec)
		*alg = ALG_ES256;
	else if ((!strcmp(a->valuestring, "RS256") || !strcmp(a->valuestring, "ES256")) && pk &&
	         k->pk_refetchable)
		why = jwt_reason_unknown_kid;
	else
		why = alg_refused(k);
	id = cJSON_GetObjectItemCaseSensitive(hdr, "kid");
	if (!why && typ && !cJSON_IsString(typ))
		why = "token header typ is not a string";
	else if (!why && id && (!cJSON_IsString(id) || strlen(id->valuestring) > KID_MAX))
		why = "token header kid is not a string of at most 255 bytes";
	else if (!why && cJSON_GetObjectItemCaseSensitive(hdr, "crit"))
		why = "token header has critical extensions";
	if (!why && id)
		snprintf(kid, KID_MAX + 1, "%s", id->valuestring);
	cJSON_Delete(hdr);
	return why;
}

static const char *check_hmac(const char *token, size_t signed_len, const unsigned char *sig,
                              size_t len, const unsigned char *secret, size_t secret_len)
{
	unsigned char mac[JWT_SIG_BYTES];
	if (len != JWT_SIG_BYTES)
		return "bad signature";
	hmac_sha256(secret, secret_len, token, signed_len, mac);
	return sodium_memcmp(mac, sig, JWT_SIG_BYTES) == 0 ? NULL : "bad signature";
}

static const char *check_signature(const char *token, size_t signed_len, const char *sig_b64,
                                   size_t sig_n, const jwt_keys *k, jwt_alg alg, const char *kid)
{
	size_t len;
	int oom = 0, rc;
	unsigned char *sig = b64url_decode(sig_b64, sig_n, &len, &oom);
	const char *why;
	if (!sig)
		return oom ? no_memory : reason_sig_encoding;
	if (alg == ALG_HS256) {
		why = check_hmac(token, signed_len, sig, len, k->secret, k->secret_len);
		if (why && k->previous && k->previous_len)
			why = check_hmac(token, signed_len, sig, len, k->previous, k->previous_len);
	} else {
		rc = k->pk_verify(k->pk_ctx, *kid ? kid : NULL, alg == ALG_RS256 ? "RS256" : "ES256",
		                  token, signed_len, sig, len);
		why = rc > 0    ? NULL
		      : rc == 0 ? "bad signature"
		      : rc == -2 ? jwt_reason_unknown_kid
		                 : no_memory;
	}
	free(sig);
	return why;
}

/* A NumericDate claim. Returns 1 and sets *out when present and sane, 0 when
 * absent, -1 when present but not a usable number. */
static int time_claim(const cJSON *payload, const char *name, int64_t *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(payload, name);
	if (!v)
		return 0;
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 ||
	    v->valuedouble > JWT_MAX_TIME)
		return -1;
	*out = (int64_t)v->valuedouble;
	return 1;
}

/* `signed_ms`: an iat no later is not refused as in the future (jwt_keys). */
static const char *check_times(const cJSON *payload, int64_t now, int leeway_s,
                               int64_t signed_ms, jwt_claims *out)
{
	int64_t nbf = 0, lw = leeway_s > 0 ? leeway_s : 0;
	int rc = time_claim(payload, "exp", &out->exp);
	if (rc == 0)
		return "token has no exp";
	if (rc < 0)
		return "token exp is not a valid time";
	if (now > out->exp + lw)
		return reason_expired;
	rc = time_claim(payload, "iat", &out->iat);
	if (rc < 0)
		return "token iat is not a valid time";
	out->iat_ms = rc > 0 ? out->iat * 1000 : -1;
	if (time_claim(payload, "evh_iat_ms", &out->iat_ms) < 0 ||
	    (out->iat_ms >= 0 && out->iat_ms / 1000 != (rc > 0 ? out->iat : -1)))
		return "token evh_iat_ms is not a valid time, or not within its iat";
	/* Signed after now: a clock that ran ahead when it was signed. Taken,
	 * such a token would outlive a sign-out made before its iat (revoke.h);
	 * unless no later than signed_ms, which every sign-out is after. */
	if (rc > 0 && out->iat > now + lw && out->iat_ms > signed_ms)
		return reason_future_iat;
	rc = time_claim(payload, "nbf", &nbf);
	if (rc < 0)
		return "token nbf is not a valid time";
	if (rc > 0 && now + lw < nbf)
		return reason_not_yet;
	return NULL;
}

static const char *check_identity(const cJSON *payload, const char *issuer, jwt_claims *out)
{
	const cJSON *sub = cJSON_GetObjectItemCaseSensitive(payload, "sub");
	const cJSON *iss = cJSON_GetObjectItemCaseSensitive(payload, "iss");
	if (!cJSON_IsString(sub) || !sub->valuestring[0])
		return "token has no sub";
	if (strlen(sub->valuestring) >= sizeof out->sub)
		return "token sub is too long";
	snprintf(out->sub, sizeof out->sub, "%s", sub->valuestring);
	if (iss && !cJSON_IsString(iss))
		return "token iss is not a string";
	if (iss) {
		if (strlen(iss->valuestring) >= sizeof out->iss)
			return "token iss is too long";
		snprintf(out->iss, sizeof out->iss, "%s", iss->valuestring);
	}
	if (issuer && (!iss || strcmp(iss->valuestring, issuer) != 0))
		return "wrong token issuer";
	return NULL;
}

/* aud (RFC 7519, 4.1.3): a string, or an array of strings, naming `audience`. */
static const char *check_audience(const cJSON *payload, const char *audience)
{
	const cJSON *aud = cJSON_GetObjectItemCaseSensitive(payload, "aud"), *a;
	if (!audience)
		return NULL;
	if (cJSON_IsString(aud) && !strcmp(aud->valuestring, audience))
		return NULL;
	if (cJSON_IsArray(aud))
		cJSON_ArrayForEach(a, aud)
		{
			if (cJSON_IsString(a) && !strcmp(a->valuestring, audience))
				return NULL;
		}
	return "token is not for this audience (aud)";
}

/* Our own tokens' roles: an array of at most OWN_MAX_ROLES names that fit. */
static const char *check_roles(const cJSON *payload, jwt_claims *out)
{
	const cJSON *roles = cJSON_GetObjectItemCaseSensitive(payload, "roles");
	const cJSON *r;
	if (!roles)
		return NULL;
	if (!cJSON_IsArray(roles))
		return "token roles is not an array";
	if (cJSON_GetArraySize(roles) > OWN_MAX_ROLES)
		return "token has too many roles";
	cJSON_ArrayForEach(r, roles)
	{
		if (!cJSON_IsString(r))
			return "token role is not a string";
		if (strlen(r->valuestring) >= OWN_ROLE_SIZE)
			return "token role name is too long";
		snprintf(out->roles[out->nroles], sizeof out->roles[0], "%s", r->valuestring);
		out->nroles++;
	}
	return NULL;
}

static void add_role(jwt_claims *out, const char *name, size_t n)
{
	if (n && n < sizeof out->roles[0] && out->nroles < JWT_MAX_ROLES) {
		memcpy(out->roles[out->nroles], name, n);
		out->roles[out->nroles++][n] = '\0';
	}
}

/* Another issuer's roles, at `claim`: a claim of that name, else a path of
 * nested objects ("realm_access.roles"); an array of names or one string of
 * names separated by spaces (OAuth's "scope"). Names that do not fit, and
 * those beyond JWT_MAX_ROLES, are left out: a token carries fewer roles
 * here, never more. */
static const char *check_foreign_roles(const cJSON *payload, const char *claim, jwt_claims *out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(payload, claim ? claim : "roles"), *r;
	if (!v && claim && strchr(claim, '.')) {
		const char *seg = claim;
		v = payload;
		while (v && seg) {
			const char *dot = strchr(seg, '.');
			size_t n = dot ? (size_t)(dot - seg) : strlen(seg);
			const cJSON *child = NULL, *c;
			if (cJSON_IsObject(v))
				cJSON_ArrayForEach(c, v)
				{
					if (c->string && strlen(c->string) == n && !memcmp(c->string, seg, n)) {
						child = c;
						break;
					}
				}
			v = child;
			seg = dot ? dot + 1 : NULL;
		}
	}
	if (!v)
		return NULL;
	if (cJSON_IsString(v)) {
		for (const char *p = v->valuestring; *p;) {
			size_t n = strcspn(p, " ");
			add_role(out, p, n);
			p += n + (p[n] == ' ');
		}
		return NULL;
	}
	if (!cJSON_IsArray(v))
		return "token roles claim is neither an array nor a string";
	cJSON_ArrayForEach(r, v)
	{
		if (cJSON_IsString(r))
			add_role(out, r->valuestring, strlen(r->valuestring));
	}
	return NULL;
}

static const char *check_payload(const char *b64, size_t n, const jwt_keys *k, jwt_alg alg,
                                 int64_t now, int leeway_s, jwt_claims *out, jwt_refusal *cls)
{
	int oom = 0, twice = 0;
	cJSON *payload = parse_part(b64, n, &oom, &twice);
	const char *why;
	if (!payload)
		return oom ? no_memory : twice ? twice_in_payload : "malformed token payload";
	out->foreign = alg != ALG_HS256;
	*cls = JWT_REFUSED_CLAIMS;
	why = check_times(payload, now, leeway_s, alg == ALG_HS256 ? k->signed_ms : 0, out);
	if (why == reason_expired)
		*cls = JWT_REFUSED_EXPIRED;
	else if (why == reason_future_iat || why == reason_not_yet)
		*cls = JWT_REFUSED_NOT_YET_VALID;
	if (!why)
		why = check_identity(payload, alg == ALG_HS256 ? k->issuer : k->pk_issuer, out);
	if (!why && alg != ALG_HS256)
		why = check_audience(payload, k->pk_audience);
	if (!why)
		why = alg == ALG_HS256 ? check_roles(payload, out)
		                       : check_foreign_roles(payload, k->pk_roles, out);
	cJSON_Delete(payload);
	return why;
}

/* *cls: what kind of refusal a reason is (MALFORMED unless a step says
 * otherwise); jwt_verify_keys makes want of memory UNVERIFIABLE. */
static const char *verify(const char *token, const jwt_keys *k, int64_t now, int leeway_s,
                          jwt_claims *out, jwt_refusal *cls)
{
	const char *dot1, *dot2, *why;
	jwt_alg alg = ALG_HS256;
	char kid[KID_MAX + 1] = "";
	size_t len;
	*cls = JWT_REFUSED_MALFORMED;
	if (!token || !*token)
		return "missing token";
	len = strnlen(token, JWT_MAX_TOKEN + 1);
	if (len > JWT_MAX_TOKEN)
		return "token too long";
	*cls = JWT_REFUSED_UNVERIFIABLE;
	if ((!k->secret || k->secret_len == 0) && !k->pk_verify)
		return "no token secret configured";
	if (!crypto_ready())
		return "crypto library failed to initialize";
	*cls = JWT_REFUSED_MALFORMED;
	dot1 = strchr(token, '.');
	dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	if (!dot2 || strchr(dot2 + 1, '.'))
		return "malformed token (expected three parts)";
	why = check_header(token, (size_t)(dot1 - token), k, &alg, kid);
	if (why) {
		/* No key for what it says it is signed with, or not yet. */
		if (why == jwt_reason_unknown_kid || why == alg_refused(k))
			*cls = JWT_REFUSED_SIGNATURE;
		else if (k->pk_pending && why == k->pk_pending)
			*cls = JWT_REFUSED_UNVERIFIABLE;
		return why;
	}
	why = check_signature(token, (size_t)(dot2 - token), dot2 + 1,
	                      len - (size_t)(dot2 + 1 - token), k, alg, kid);
	if (why) {
		if (why != reason_sig_encoding)
			*cls = JWT_REFUSED_SIGNATURE;
		return why;
	}
	return check_payload(dot1 + 1, (size_t)(dot2 - dot1 - 1), k, alg, now, leeway_s, out, cls);
}

int jwt_verify_keys(const char *token, const jwt_keys *k, int64_t now, int leeway_s,
                    jwt_claims *out, const char **reason, jwt_refusal *refusal)
{
	jwt_claims tmp;
	jwt_refusal cls;
	const char *why;
	memset(&tmp, 0, sizeof tmp);
	why = verify(token, k, now, leeway_s, &tmp, &cls);
	if (why == no_memory)
		cls = JWT_REFUSED_UNVERIFIABLE;
	if (reason)
		*reason = why;
	if (refusal)
		*refusal = why ? cls : JWT_REFUSED_NONE;
	if (why)
		return why == no_memory || (k->pk_pending && why == k->pk_pending) ? -2 : -1;
	if (out)
		*out = tmp;
	return 0;
}

int jwt_verify(const char *token, const unsigned char *secret, size_t secret_len,
               const char *issuer, int64_t now, int leeway_s, jwt_claims *out,
               const char **reason)
{
	return jwt_verify2(token, secret, secret_len, NULL, 0, issuer, now, leeway_s, out, reason);
}

int jwt_verify2(const char *token, const unsigned char *secret, size_t secret_len,
                const unsigned char *alt, size_t alt_len, const char *issuer, int64_t now,
                int leeway_s, jwt_claims *out, const char **reason)
{
	jwt_keys k = {.secret = secret,
	              .secret_len = secret_len,
	              .previous = alt,
	              .previous_len = alt_len,
	              .issuer = issuer};
	return jwt_verify_keys(token, &k, now, leeway_s, out, reason, NULL);
}

/* --------------------------------------------------------------- sign */

static char *payload_json(const char *subject, const char *const *roles, size_t nroles,
                          int64_t now_ms, int ttl_s, const char *issuer)
{
	cJSON *o = cJSON_CreateObject(), *arr;
	char *s = NULL;
	if (!o || !cJSON_AddStringToObject(o, "sub", subject))
		goto out;
	arr = cJSON_AddArrayToObject(o, "roles");
	if (!arr)
		goto out;
	for (size_t i = 0; i < nroles; i++) {
		cJSON *r = cJSON_CreateString(roles[i]);
		if (!r || !cJSON_AddItemToArray(arr, r)) {
			cJSON_Delete(r);
			goto out;
		}
	}
	if (!cJSON_AddNumberToObject(o, "iat", (double)(now_ms / 1000)) ||
	    !cJSON_AddNumberToObject(o, "evh_iat_ms", (double)now_ms) ||
	    !cJSON_AddNumberToObject(o, "exp", (double)(now_ms / 1000 + ttl_s)))
		goto out;
	if (issuer && !cJSON_AddStringToObject(o, "iss", issuer))
		goto out;
	s = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return s;
}

/* Text a token may carry: verification refuses a part that is not UTF-8,
 * so a token signed with such a claim would be refused by this very host. */
static int utf8_ok(const char *s)
{
	return json_utf8_error(s, strlen(s)) < 0;
}

int jwt_sign_args_ok(const char *subject, const char *const *roles, size_t nroles, int ttl_s,
                     const char *issuer, const unsigned char *secret, size_t secret_len)
{
	if (!subject || !*subject || strlen(subject) >= sizeof(((jwt_claims *)0)->sub) ||
	    !utf8_ok(subject))
		return 0;
	if (issuer && (strlen(issuer) >= sizeof(((jwt_claims *)0)->iss) || !utf8_ok(issuer)))
		return 0;
	if (nroles > OWN_MAX_ROLES || (nroles && !roles))
		return 0;
	for (size_t i = 0; i < nroles; i++)
		if (!roles[i] || strlen(roles[i]) >= OWN_ROLE_SIZE || !utf8_ok(roles[i]))
			return 0;
	return ttl_s > 0 && secret && secret_len > 0;
}

int jwt_sign(const char *subject, const char *const *roles, size_t nroles, int64_t now_ms,
             int ttl_s, const char *issuer, const unsigned char *secret, size_t secret_len,
             char **out)
{
	static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	unsigned char mac[JWT_SIG_BYTES];
	char *payload = NULL, *tok = NULL;
	size_t hlen, plen, total, used;
	int rc = -1;
	*out = NULL;
	if (!jwt_sign_args_ok(subject, roles, nroles, ttl_s, issuer, secret, secret_len) ||
	    !crypto_ready())
		return -1;
	payload = payload_json(subject, roles, nroles, now_ms, ttl_s, issuer);
	if (!payload)
		goto out;
	hlen = b64url_encoded_len(sizeof header - 1);
	plen = b64url_encoded_len(strlen(payload));
	total = hlen + 1 + plen + 1 + b64url_encoded_len(JWT_SIG_BYTES);
	if (total > JWT_MAX_TOKEN) /* we would refuse our own token */
		goto out;
	tok = malloc(total + 1);
	if (!tok)
		goto out;
	b64url_encode((const unsigned char *)header, sizeof header - 1, tok);
	tok[hlen] = '.';
	b64url_encode((const unsigned char *)payload, strlen(payload), tok + hlen + 1);
	used = hlen + 1 + plen;
	hmac_sha256(secret, secret_len, tok, used, mac);
	tok[used] = '.';
	b64url_encode(mac, JWT_SIG_BYTES, tok + used + 1);
	*out = tok;
	tok = NULL;
	rc = 0;
out:
	free(payload);
	free(tok);
	return rc;
}
