/* A JSON Web Key Set as PEM public keys (jwks.h). Each usable key becomes
 * the DER SubjectPublicKeyInfo (RFC 5280, 4.1) OpenSSL reads, written here
 * byte by byte: evhostd links no OpenSSL (tls_compat.c). */
#include "jwks.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sodium.h>

#include "json.h"
#include "textbuf.h"

#define RSA_BITS_MIN 2048
#define RSA_BYTES_MAX 2048 /* n of 16384 bits */
#define RSA_E_BYTES_MAX 8
#define EC_COORD_BYTES 32 /* P-256 */
/* An RSA key's SubjectPublicKeyInfo, with room to spare for its headers. */
#define SPKI_MAX (RSA_BYTES_MAX + RSA_E_BYTES_MAX + 64)

/* AlgorithmIdentifier of rsaEncryption (1.2.840.113549.1.1.1, NULL
 * parameters) and of id-ecPublicKey on prime256v1 (1.2.840.10045.2.1,
 * 1.2.840.10045.3.1.7): RFC 3279, 2.3.1 and 2.3.5; RFC 5480, 2.1.1. */
static const unsigned char rsa_algorithm[] = {0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                              0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00};
static const unsigned char p256_algorithm[] = {0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
                                               0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
                                               0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

int jwks_is_jwks(const char *text, size_t n)
{
	size_t i = 0;
	while (i < n && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
		i++;
	return i < n && text[i] == '{';
}

void jwks_pem_free(jwks_pem *p)
{
	if (!p)
		return;
	free(p->pem);
	p->pem = NULL;
	p->len = 0;
}

/* ---------------------------------------------------------------- DER */

/* A DER buffer written front to back; `bad` once something did not fit. */
typedef struct der {
	unsigned char b[SPKI_MAX];
	size_t n;
	int bad;
} der;

static void der_bytes(der *d, const void *p, size_t n)
{
	if (d->bad || n > sizeof d->b - d->n) {
		d->bad = 1;
		return;
	}
	memcpy(d->b + d->n, p, n);
	d->n += n;
}

/* A tag and the length of the content that follows (short form below 128,
 * else one or two length bytes: nothing here is 64 KiB). */
static void der_head(der *d, unsigned char tag, size_t len)
{
	unsigned char h[4] = {tag};
	size_t n = 2;
	if (len < 0x80) {
		h[1] = (unsigned char)len;
	} else if (len <= 0xff) {
		h[1] = 0x81;
		h[2] = (unsigned char)len;
		n = 3;
	} else {
		h[1] = 0x82;
		h[2] = (unsigned char)(len >> 8);
		h[3] = (unsigned char)len;
		n = 4;
	}
	der_bytes(d, h, n);
}

static size_t der_head_len(size_t len) { return len < 0x80 ? 2 : len <= 0xff ? 3 : 4; }

/* A positive INTEGER's content length: big-endian magnitude p[0..n) (no
 * leading zero byte), with a 0x00 in front when its top bit is set. */
static size_t der_uint_len(const unsigned char *p, size_t n) { return n + (p[0] & 0x80 ? 1 : 0); }

static void der_uint(der *d, const unsigned char *p, size_t n)
{
	der_head(d, 0x02, der_uint_len(p, n));
	if (p[0] & 0x80)
		der_bytes(d, "", 1);
	der_bytes(d, p, n);
}

/* SubjectPublicKeyInfo of the RSA key (modulus, exponent). */
static void spki_rsa(der *d, const unsigned char *mod, size_t nmod, const unsigned char *exp,
                     size_t nexp)
{
	size_t ints = der_head_len(der_uint_len(mod, nmod)) + der_uint_len(mod, nmod) +
	              der_head_len(der_uint_len(exp, nexp)) + der_uint_len(exp, nexp);
	size_t rsakey = der_head_len(ints) + ints;
	size_t bits = 1 + rsakey;
	der_head(d, 0x30, sizeof rsa_algorithm + der_head_len(bits) + bits);
	der_bytes(d, rsa_algorithm, sizeof rsa_algorithm);
	der_head(d, 0x03, bits);
	der_bytes(d, "", 1); /* no unused bits */
	der_head(d, 0x30, ints);
	der_uint(d, mod, nmod);
	der_uint(d, exp, nexp);
}

/* SubjectPublicKeyInfo of the P-256 point (x, y), uncompressed. */
static void spki_p256(der *d, const unsigned char *x, const unsigned char *y)
{
	size_t bits = 2 + 2 * EC_COORD_BYTES;
	der_head(d, 0x30, sizeof p256_algorithm + der_head_len(bits) + bits);
	der_bytes(d, p256_algorithm, sizeof p256_algorithm);
	der_head(d, 0x03, bits);
	der_bytes(d, "\0\4", 2); /* no unused bits; uncompressed point */
	der_bytes(d, x, EC_COORD_BYTES);
	der_bytes(d, y, EC_COORD_BYTES);
}

/* ---------------------------------------------------------------- PEM */

static void put_pem(textbuf *t, const der *d)
{
	char b64[sizeof d->b / 3 * 4 + 8];
	size_t len;
	static const char begin[] = "-----BEGIN PUBLIC KEY-----\n";
	static const char end[] = "-----END PUBLIC KEY-----\n";
	sodium_bin2base64(b64, sizeof b64, d->b, d->n, sodium_base64_VARIANT_ORIGINAL);
	len = strlen(b64);
	tb_put(t, begin, sizeof begin - 1);
	for (size_t i = 0; i < len; i += 64) {
		tb_put(t, b64 + i, len - i < 64 ? len - i : 64);
		tb_put(t, "\n", 1);
	}
	tb_put(t, end, sizeof end - 1);
}

/* --------------------------------------------------------------- keys */

/* A JWK member that holds base64url (RFC 7518, 6: unsigned big-endian
 * integers, coordinates). Padding is tolerated, though the RFC leaves it
 * out. The number of bytes decoded, or -1 (not a string, not base64url,
 * longer than max). */
static long b64url_member(const cJSON *key, const char *name, unsigned char *out, size_t max)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(key, name);
	size_t n = 0;
	if (!cJSON_IsString(m) || !*m->valuestring)
		return -1;
	if (sodium_base642bin(out, max, m->valuestring, strlen(m->valuestring), NULL, &n, NULL,
	                      sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 &&
	    sodium_base642bin(out, max, m->valuestring, strlen(m->valuestring), NULL, &n, NULL,
	                      sodium_base64_VARIANT_URLSAFE) != 0)
		return -1;
	return (long)n;
}

/* An unsigned integer without its leading zero bytes; its length then (0
 * for zero). */
static size_t strip_zeros(unsigned char **p, size_t n)
{
	while (n && **p == 0) {
		++*p;
		--n;
	}
	return n;
}

static int bit_length(const unsigned char *p, size_t n)
{
	int top = 0;
	for (unsigned v = p[0]; v; v >>= 1)
		top++;
	return (int)(n - 1) * 8 + top;
}

static const char *string_member(const cJSON *key, const char *name)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(key, name);
	return cJSON_IsString(m) ? m->valuestring : NULL;
}

/* Why key is left out (not a signing key for RS256 or ES256), or NULL. */
static const char *left_out(const cJSON *key, const char *kty)
{
	const cJSON *use = cJSON_GetObjectItemCaseSensitive(key, "use");
	const cJSON *ops = cJSON_GetObjectItemCaseSensitive(key, "key_ops");
	const char *alg = string_member(key, "alg");
	if (use && (!cJSON_IsString(use) || strcmp(use->valuestring, "sig") != 0))
		return "not for signatures (use)";
	if (ops) {
		const cJSON *op;
		int verify = 0;
		cJSON_ArrayForEach(op, ops) verify |=
		    cJSON_IsString(op) && strcmp(op->valuestring, "verify") == 0;
		if (!verify)
			return "not for verifying (key_ops)";
	}
	if (strcmp(kty, "RSA") == 0)
		return alg && strcmp(alg, "RS256") != 0 ? "an RSA key for another alg" : NULL;
	if (strcmp(kty, "EC") == 0) {
		const char *crv = string_member(key, "crv");
		if (alg && strcmp(alg, "ES256") != 0)
			return "an EC key for another alg";
		return crv && strcmp(crv, "P-256") != 0 ? "an EC key on another curve" : NULL;
	}
	return "neither RSA nor EC";
}

/* "JWKS key 3 (kid 'a1')": kid cut at 40 bytes, anything but printable
 * ASCII shown as '?'. */
static void label(char *out, size_t size, int index, const cJSON *key)
{
	const char *kid = string_member(key, "kid");
	char safe[44];
	size_t i = 0;
	if (!kid) {
		snprintf(out, size, "JWKS key %d", index);
		return;
	}
	for (; kid[i] && i < 40; i++)
		safe[i] = isprint((unsigned char)kid[i]) && kid[i] != '\'' ? kid[i] : '?';
	safe[i] = '\0';
	snprintf(out, size, "JWKS key %d (kid '%s%s')", index, safe, kid[i] ? "..." : "");
}

/* key's SubjectPublicKeyInfo into d; NULL, or what is wrong with it. */
static const char *key_der(const cJSON *key, const char *kty, der *d)
{
	if (strcmp(kty, "RSA") == 0) {
		unsigned char mod[RSA_BYTES_MAX + 1], exp[RSA_E_BYTES_MAX + 1], *m = mod, *e = exp;
		long nm = b64url_member(key, "n", mod, sizeof mod);
		long ne = b64url_member(key, "e", exp, sizeof exp);
		size_t lm, le;
		if (nm < 0)
			return "its n is missing, not base64url, or over 16384 bits";
		if (ne < 0)
			return "its e is missing, not base64url, or over 8 bytes";
		lm = strip_zeros(&m, (size_t)nm);
		le = strip_zeros(&e, (size_t)ne);
		if (lm > RSA_BYTES_MAX)
			return "its n is missing, not base64url, or over 16384 bits";
		if (le > RSA_E_BYTES_MAX)
			return "its e is missing, not base64url, or over 8 bytes";
		if (lm == 0 || bit_length(m, lm) < RSA_BITS_MIN)
			return "an RSA key of fewer than 2048 bits";
		if (le == 0 || !(e[le - 1] & 1) || (le == 1 && e[0] < 3))
			return "its e is not an odd number of 3 or more";
		spki_rsa(d, m, lm, e, le);
	} else {
		unsigned char x[EC_COORD_BYTES + 1], y[EC_COORD_BYTES + 1];
		if (!string_member(key, "crv"))
			return "its crv is missing";
		if (b64url_member(key, "x", x, sizeof x) != EC_COORD_BYTES ||
		    b64url_member(key, "y", y, sizeof y) != EC_COORD_BYTES)
			return "its x and y are not 32 bytes of base64url each";
		spki_p256(d, x, y);
	}
	return d->bad ? "too large" : NULL;
}

/* One key of the set, the index-th: appended to t and out (0), left out as
 * a key for something else (1), or left out with why in note: what is wrong
 * with it (2), or JWKS_MAX_KEYS taken already (3). -1, the reason in note:
 * out of memory, or the check could not be made. */
static int take_key(const cJSON *key, int index, jwks_check_fn *check, void *arg, der *d,
                    textbuf *t, jwks_pem *out, char *note, size_t notelen)
{
	const char *kty = string_member(key, "kty"), *why, *kid;
	char what[sizeof out->label[0]];
	size_t start = t->n;
	int i = out->nkeys, rc;

	label(what, sizeof what, index, key);
	if (!cJSON_IsObject(key) || !kty) {
		snprintf(note, notelen, "%s is not a JSON Web Key (no kty)", what);
		return 2;
	}
	if (left_out(key, kty))
		return 1;
	d->n = 0;
	d->bad = 0;
	if ((why = key_der(key, kty, d))) {
		snprintf(note, notelen, "%s: %s", what, why);
		return 2;
	}
	if (i == JWKS_MAX_KEYS) {
		snprintf(note, notelen, "%s: beyond the first %d RS256 or ES256 keys, the ones used",
		         what, JWKS_MAX_KEYS);
		return 3;
	}
	memcpy(out->label[i], what, sizeof what);
	kid = string_member(key, "kid");
	if (kid && *kid && strlen(kid) <= JWKS_KID_MAX) {
		memcpy(out->kid[i], kid, strlen(kid) + 1);
		out->kids[i] = out->kid[i];
	}
	put_pem(t, d);
	if (t->oom) {
		snprintf(note, notelen, "out of memory");
		return -1;
	}
	if (check && (rc = check(t->p + start, t->n - start, out->label[i], out->kids[i], arg,
	                         note, notelen)) != 0) {
		t->n = start; /* the block taken back */
		t->p[start] = '\0';
		out->kids[i] = NULL;
		if (rc < 0 && !*note)
			snprintf(note, notelen, "out of memory");
		return rc < 0 ? -1 : 2;
	}
	out->labels[i] = out->label[i];
	out->nkeys++;
	return 0;
}

/* jwks_to_pem (strict) or jwks_to_pem_usable. */
static int convert(const char *json, size_t n, int strict, jwks_check_fn *check, void *arg,
                   jwks_pem *out, char *err, size_t errlen)
{
	size_t at = 0;
	cJSON *root = NULL;
	const cJSON *keys, *key;
	textbuf t = {0};
	int index = 0;
	der *d = NULL;

	memset(out, 0, sizeof *out);
	if (json_check(json, n, 32, &at) != JSON_OK) {
		int line = 1, col = 1;
		for (size_t i = 0; i < at && i < n; i++, col++)
			if (json[i] == '\n') {
				line++;
				col = 0;
			}
		snprintf(err, errlen, "not a JWKS: invalid JSON at line %d, column %d", line, col);
		return -1;
	}
	root = cJSON_ParseWithLength(json, n);
	d = malloc(sizeof *d);
	if (!root || !d) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	keys = cJSON_GetObjectItemCaseSensitive(root, "keys");
	if (!cJSON_IsArray(keys)) {
		snprintf(err, errlen, "not a JWKS: no \"keys\" array");
		goto fail;
	}
	cJSON_ArrayForEach(key, keys)
	{
		char note[sizeof out->note[0]] = "";
		int rc = take_key(key, ++index, check, arg, d, &t, out, note, sizeof note);
		if (rc < 0) {
			snprintf(err, errlen, "%s", note);
			goto fail;
		}
		if (rc == 1)
			out->skipped++;
		if (rc < 2)
			continue;
		if (strict) {
			if (rc == 3)
				snprintf(err, errlen, "more than %d RS256 or ES256 keys", JWKS_MAX_KEYS);
			else
				snprintf(err, errlen, "%s", note);
			goto fail;
		}
		if (out->nnotes < JWKS_NOTES_MAX)
			snprintf(out->note[out->nnotes++], sizeof out->note[0], "%s", note);
		out->unusable++;
	}
	if (out->nkeys == 0) {
		if (out->unusable)
			snprintf(err, errlen,
			         "no RS256 or ES256 signing key evhost can use among its %d key(s): %d "
			         "could not be used",
			         index, out->unusable);
		else
			snprintf(err, errlen, "no RS256 or ES256 signing key among its %d key(s)", index);
		cJSON_Delete(root);
		free(d);
		free(t.p);
		return -2;
	}
	out->pem = t.p;
	out->len = t.n;
	cJSON_Delete(root);
	free(d);
	return 0;
fail:
	free(t.p);
	cJSON_Delete(root);
	free(d);
	out->nkeys = 0;
	return -1;
}

int jwks_to_pem(const char *json, size_t n, jwks_pem *out, char *err, size_t errlen)
{
	return convert(json, n, 1, NULL, NULL, out, err, errlen);
}

int jwks_to_pem_usable(const char *json, size_t n, jwks_check_fn *check, void *arg,
                       jwks_pem *out, char *err, size_t errlen)
{
	return convert(json, n, 0, check, arg, out, err, errlen);
}
