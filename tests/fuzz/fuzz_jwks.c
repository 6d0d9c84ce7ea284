/* libFuzzer: arbitrary bytes as [auth] jwt_public_key_file's JWKS, and as
 * a set fetched from jwt_jwks_url (keys it cannot use left out and noted).
 * The conversion must never crash, must give a reason exactly when it refuses,
 * and what it gives must be what the key loader expects: PEM "PUBLIC KEY"
 * blocks, as many as it says, each the base64 of one DER SEQUENCE whose
 * nested lengths add up (checked here by a walker of its own), labelled,
 * with its kid when it has one. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "jwks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char begin[] = "-----BEGIN PUBLIC KEY-----\n";
static const char end[] = "-----END PUBLIC KEY-----\n";

/* The length of the TLV at p[0..n) (tag, length, content), or 0 when its
 * length is malformed or runs past n. DER: short form below 128, else the
 * fewest length bytes. */
static size_t tlv(const unsigned char *p, size_t n, size_t *hdr)
{
	size_t len, h = 2;
	if (n < 2)
		return 0;
	len = p[1];
	if (len & 0x80) {
		size_t bytes = len & 0x7f;
		if (bytes == 0 || bytes > 2 || n < 2 + bytes || p[2] == 0)
			return 0;
		len = 0;
		for (size_t i = 0; i < bytes; i++)
			len = len << 8 | p[2 + i];
		if (len < 0x80)
			return 0;
		h += bytes;
	}
	*hdr = h;
	return len > n - h ? 0 : h + len;
}

/* Constructed TLVs (SEQUENCE) must hold whole TLVs; a BIT STRING starts with
 * its unused-bits byte, 0. */
static int well_formed(const unsigned char *p, size_t n, int depth)
{
	while (n) {
		size_t hdr, len = tlv(p, n, &hdr);
		if (!len || depth > 4)
			return 0;
		if (p[0] == 0x30 && !well_formed(p + hdr, len - hdr, depth + 1))
			return 0;
		if (p[0] == 0x03 && (len == hdr || p[hdr] != 0))
			return 0;
		/* An RSA key's BIT STRING holds a SEQUENCE of two INTEGERs. */
		if (p[0] == 0x03 && len > hdr + 1 && p[hdr + 1] == 0x30 &&
		    !well_formed(p + hdr + 1, len - hdr - 1, depth + 1))
			return 0;
		if (p[0] == 0x02 && (len == hdr || (p[hdr] == 0 && (len == hdr + 1 ||
		                                                     !(p[hdr + 1] & 0x80)))))
			return 0; /* an INTEGER: not empty, no needless leading zero */
		p += len;
		n -= len;
	}
	return 1;
}

static void check_block(const char *b64, size_t n)
{
	unsigned char der[4096];
	size_t len = 0, hdr;
	if (sodium_base642bin(der, sizeof der, b64, n, "\n", &len, NULL,
	                      sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    len < 2 || der[0] != 0x30 || tlv(der, len, &hdr) != len || !well_formed(der, len, 0))
		__builtin_trap();
}

/* What a conversion gave (rc 0) is what the loader expects. */
static void check_pem(const jwks_pem *p)
{
	const char *s;
	int blocks = 0;
	if (strlen(p->pem) != p->len || p->nkeys < 1 || p->nkeys > JWKS_MAX_KEYS || p->skipped < 0)
		__builtin_trap();
	for (s = p->pem; *s; blocks++) {
		const char *body = s + sizeof begin - 1, *stop;
		if (strncmp(s, begin, sizeof begin - 1) != 0 || !(stop = strstr(body, end)))
			__builtin_trap();
		check_block(body, (size_t)(stop - body));
		s = stop + sizeof end - 1;
	}
	if (blocks != p->nkeys)
		__builtin_trap();
	for (int i = 0; i < p->nkeys; i++)
		if (p->labels[i] != p->label[i] || strncmp(p->label[i], "JWKS key ", 9) != 0 ||
		    !memchr(p->label[i], '\0', sizeof p->label[i]) ||
		    (p->kids[i] && (p->kids[i] != p->kid[i] || !*p->kid[i] ||
		                    !memchr(p->kid[i], '\0', sizeof p->kid[i]))))
			__builtin_trap();
}

/* A check (as the fetcher's loader) that refuses every third key it sees:
 * the refused key's block is taken back. */
static int every_third(const char *pem, size_t len, const char *label, const char *kid,
                       void *arg, char *err, size_t errlen)
{
	int *seen = arg;
	(void)kid;
	if (strncmp(pem, begin, sizeof begin - 1) != 0 || strlen(pem) != len)
		__builtin_trap();
	if (++*seen % 3)
		return 0;
	snprintf(err, errlen, "%s is refused", label);
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	jwks_pem p, u;
	char err[256] = "", uerr[256] = "";
	int seen = 0;
	int rc = jwks_to_pem((const char *)data, size, &p, err, sizeof err);
	if ((rc == 0) != (err[0] == '\0') || (rc == 0) != (p.pem != NULL))
		__builtin_trap();
	if (rc == 0)
		check_pem(&p);
	/* As a fetched set: never stricter, and the keys left out are noted. */
	int urc = jwks_to_pem_usable((const char *)data, size, every_third, &seen, &u, uerr,
	                             sizeof uerr);
	if ((urc == 0) != (uerr[0] == '\0') || (urc == 0) != (u.pem != NULL) ||
	    (urc != 0 && urc != -1 && urc != -2) || (rc == 0 && seen < 3 && urc != 0) ||
	    u.unusable < 0 || u.nnotes != (u.unusable < JWKS_NOTES_MAX ? u.unusable : JWKS_NOTES_MAX))
		__builtin_trap();
	if (urc == 0)
		check_pem(&u);
	for (int i = 0; i < u.nnotes; i++)
		if (strncmp(u.note[i], "JWKS key ", 9) != 0 || !memchr(u.note[i], '\0', sizeof u.note[i]))
			__builtin_trap();
	if (rc == 0 && seen < 3 && (u.len != p.len || strcmp(u.pem, p.pem) != 0))
		__builtin_trap();
	jwks_pem_free(&p);
	jwks_pem_free(&u);
	return 0;
}
