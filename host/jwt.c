/* HS256 JSON Web Tokens. Verification is deliberately narrow: one algorithm,
 * canonical unpadded base64url only, the signature checked before the
 * payload is parsed, and every claim we rely on type-checked. */
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

/* A part's JSON object, or NULL: malformed, or out of memory (*oom set;
 * cJSON failing on text the host's check calls JSON can only be that). */
static cJSON *parse_part(const char *b64, size_t n, int *oom)
{
	size_t len;
	unsigned char *raw = b64url_decode(b64, n, &len, oom);
	cJSON *j;
	if (!raw)
		return NULL;
	j = cJSON_ParseWithLengthOpts((const char *)raw, len + 1, NULL, 1);
	if (!j && json_check((const char *)raw, len, JSON_MAX_DEPTH, NULL) == JSON_OK)
		*oom = 1;
	free(raw);
	if (j && !cJSON_IsObject(j)) {
		cJSON_Delete(j);
		return NULL;
	}
	return j;
}

static const char *check_header(const char *b64, size_t n)
{
	int oom = 0;
	cJSON *hdr = parse_part(b64, n, &oom);
	const cJSON *alg, *typ;
	const char *why = NULL;
	if (!hdr)
		return oom ? no_memory : "malformed token header";
	alg = cJSON_GetObjectItemCaseSensitive(hdr, "alg");
	typ = cJSON_GetObjectItemCaseSensitive(hdr, "typ");
	if (!cJSON_IsString(alg))
		why = "token header has no alg";
	else if (strcmp(alg->valuestring, "HS256") != 0)
		why = "token algorithm is not HS256";
	else if (typ && !cJSON_IsString(typ))
		why = "token header typ is not a string";
	else if (cJSON_GetObjectItemCaseSensitive(hdr, "crit"))
		why = "token header has critical extensions";
	cJSON_Delete(hdr);
	return why;
}

static const char *check_signature(const char *token, size_t signed_len, const char *sig_b64,
                                   size_t sig_n, const unsigned char *secret, size_t secret_len)
{
	unsigned char mac[JWT_SIG_BYTES];
	size_t len;
	int oom = 0, ok;
	unsigned char *sig = b64url_decode(sig_b64, sig_n, &len, &oom);
	if (!sig)
		return oom ? no_memory : "malformed token signature";
	if (len != JWT_SIG_BYTES) {
		free(sig);
		return "bad signature";
	}
	hmac_sha256(secret, secret_len, token, signed_len, mac);
	ok = sodium_memcmp(mac, sig, JWT_SIG_BYTES) == 0;
	free(sig);
	return ok ? NULL : "bad signature";
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

static const char *check_times(const cJSON *payload, int64_t now, int leeway_s, jwt_claims *out)
{
	int64_t nbf = 0, lw = leeway_s > 0 ? leeway_s : 0;
	int rc = time_claim(payload, "exp", &out->exp);
	if (rc == 0)
		return "token has no exp";
	if (rc < 0)
		return "token exp is not a valid time";
	if (now > out->exp + lw)
		return "token expired";
	if (time_claim(payload, "iat", &out->iat) < 0)
		return "token iat is not a valid time";
	rc = time_claim(payload, "nbf", &nbf);
	if (rc < 0)
		return "token nbf is not a valid time";
	if (rc > 0 && now + lw < nbf)
		return "token not yet valid";
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

static const char *check_roles(const cJSON *payload, jwt_claims *out)
{
	const cJSON *roles = cJSON_GetObjectItemCaseSensitive(payload, "roles");
	const cJSON *r;
	if (!roles)
		return NULL;
	if (!cJSON_IsArray(roles))
		return "token roles is not an array";
	if (cJSON_GetArraySize(roles) > JWT_MAX_ROLES)
		return "token has too many roles";
	cJSON_ArrayForEach(r, roles)
	{
		if (!cJSON_IsString(r))
			return "token role is not a string";
		if (strlen(r->valuestring) >= sizeof out->roles[0])
			return "token role name is too long";
		snprintf(out->roles[out->nroles], sizeof out->roles[0], "%s", r->valuestring);
		out->nroles++;
	}
	return NULL;
}

static const char *check_payload(const char *b64, size_t n, const char *issuer, int64_t now,
                                 int leeway_s, jwt_claims *out)
{
	int oom = 0;
	cJSON *payload = parse_part(b64, n, &oom);
	const char *why;
	if (!payload)
		return oom ? no_memory : "malformed token payload";
	why = check_times(payload, now, leeway_s, out);
	if (!why)
		why = check_identity(payload, issuer, out);
	if (!why)
		why = check_roles(payload, out);
	cJSON_Delete(payload);
	return why;
}

static const char *verify(const char *token, const unsigned char *secret, size_t secret_len,
                          const unsigned char *alt, size_t alt_len, const char *issuer,
                          int64_t now, int leeway_s, jwt_claims *out)
{
	const char *dot1, *dot2, *why;
	size_t len;
	if (!token || !*token)
		return "missing token";
	len = strnlen(token, JWT_MAX_TOKEN + 1);
	if (len > JWT_MAX_TOKEN)
		return "token too long";
	if (!secret || secret_len == 0)
		return "no token secret configured";
	if (!crypto_ready())
		return "crypto library failed to initialize";
	dot1 = strchr(token, '.');
	dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	if (!dot2 || strchr(dot2 + 1, '.'))
		return "malformed token (expected three parts)";
	why = check_header(token, (size_t)(dot1 - token));
	if (why)
		return why;
	why = check_signature(token, (size_t)(dot2 - token), dot2 + 1,
	                      len - (size_t)(dot2 + 1 - token), secret, secret_len);
	if (why && why != no_memory && alt && alt_len)
		why = check_signature(token, (size_t)(dot2 - token), dot2 + 1,
		                      len - (size_t)(dot2 + 1 - token), alt, alt_len);
	if (why)
		return why;
	return check_payload(dot1 + 1, (size_t)(dot2 - dot1 - 1), issuer, now, leeway_s, out);
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
	jwt_claims tmp;
	const char *why;
	memset(&tmp, 0, sizeof tmp);
	why = verify(token, secret, secret_len, alt, alt_len, issuer, now, leeway_s, &tmp);
	if (reason)
		*reason = why;
	if (why)
		return why == no_memory ? -2 : -1;
	if (out)
		*out = tmp;
	return 0;
}

/* --------------------------------------------------------------- sign */

static char *payload_json(const char *subject, const char *const *roles, size_t nroles,
                          int64_t now, int ttl_s, const char *issuer)
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
	if (!cJSON_AddNumberToObject(o, "iat", (double)now) ||
	    !cJSON_AddNumberToObject(o, "exp", (double)(now + ttl_s)))
		goto out;
	if (issuer && !cJSON_AddStringToObject(o, "iss", issuer))
		goto out;
	s = cJSON_PrintUnformatted(o);
out:
	cJSON_Delete(o);
	return s;
}

static int sign_args_ok(const char *subject, const char *const *roles, size_t nroles, int ttl_s,
                        const char *issuer, const unsigned char *secret, size_t secret_len)
{
	if (!subject || !*subject || strlen(subject) >= sizeof(((jwt_claims *)0)->sub))
		return 0;
	if (issuer && strlen(issuer) >= sizeof(((jwt_claims *)0)->iss))
		return 0;
	if (nroles > JWT_MAX_ROLES || (nroles && !roles))
		return 0;
	for (size_t i = 0; i < nroles; i++)
		if (!roles[i] || strlen(roles[i]) >= sizeof(((jwt_claims *)0)->roles[0]))
			return 0;
	return ttl_s > 0 && secret && secret_len > 0;
}

int jwt_sign(const char *subject, const char *const *roles, size_t nroles, int64_t now,
             int ttl_s, const char *issuer, const unsigned char *secret, size_t secret_len,
             char **out)
{
	static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	unsigned char mac[JWT_SIG_BYTES];
	char *payload = NULL, *tok = NULL;
	size_t hlen, plen, total, used;
	int rc = -1;
	*out = NULL;
	if (!sign_args_ok(subject, roles, nroles, ttl_s, issuer, secret, secret_len) ||
	    !crypto_ready())
		return -1;
	payload = payload_json(subject, roles, nroles, now, ttl_s, issuer);
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
