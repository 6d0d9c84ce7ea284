/* Public keys for JSON Web Tokens issued elsewhere (pubkey.h). Part of
 * evhost's libssl.so, with cert.c and client.c. */
#include "pubkey.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#define PUBLIC __attribute__((visibility("default")))
#define PUBKEYS_MAX 16
#define RSA_BITS_MIN 2048
#define ES256_SIG 64 /* r and s, 32 bytes each (RFC 7518, 3.4) */

/* cert.c */
__attribute__((visibility("hidden"))) const char *ssl_reason(char *buf, size_t n,
                                                             const char *fallback);

typedef struct pubkeys {
	EVP_PKEY *key[PUBKEYS_MAX];
	char *kid[PUBKEYS_MAX]; /* NULL: no id */
	int n;
	int some_kids; /* a key has an id: a token's kid is told from none */
} pubkeys;

PUBLIC void evhost_tls_pubkeys_free(void *keys)
{
	pubkeys *k = keys;
	if (!k)
		return;
	for (int i = 0; i < k->n; i++) {
		EVP_PKEY_free(k->key[i]);
		free(k->kid[i]);
	}
	free(k);
}

/* An acceptable key: RSA of RSA_BITS_MIN or more, or EC on P-256. */
static const char *unfit(EVP_PKEY *key)
{
	char curve[64];
	size_t len = 0;
	if (EVP_PKEY_is_a(key, "RSA"))
		return EVP_PKEY_get_bits(key) < RSA_BITS_MIN ? "an RSA key of fewer than 2048 bits"
		                                             : NULL;
	if (EVP_PKEY_is_a(key, "EC")) {
		if (!EVP_PKEY_get_utf8_string_param(key, "group", curve, sizeof curve, &len) ||
		    strcmp(curve, "prime256v1") != 0)
			return "an EC key not on P-256 (ES256 needs P-256)";
		return NULL;
	}
	return "neither an RSA nor an EC key";
}

PUBLIC void *evhost_tls_pubkeys_load(const char *pem, size_t len, const char *const *labels,
                                     const char *const *kids, int *nrsa, int *nec, char *err,
                                     size_t errlen)
{
	char why[256], block[32];
	BIO *bio = len > 1 << 20 ? NULL : BIO_new_mem_buf(pem, (int)len);
	pubkeys *k = calloc(1, sizeof *k);
	*nrsa = *nec = 0;
	if (!bio || !k) {
		snprintf(err, errlen, "%s", len > 1 << 20 ? "larger than 1 MiB" : "out of memory");
		goto fail;
	}
	for (;;) {
		char *name = NULL, *header = NULL;
		unsigned char *data = NULL;
		long dlen = 0;
		const unsigned char *p;
		EVP_PKEY *key;
		const char *bad, *what = block;
		snprintf(block, sizeof block, "block %d", k->n + 1);
		if (labels && k->n < PUBKEYS_MAX && labels[k->n])
			what = labels[k->n];
		if (!PEM_read_bio(bio, &name, &header, &data, &dlen)) {
			unsigned long e = ERR_peek_last_error();
			int none = ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
			if (none && k->n > 0) {
				ERR_clear_error();
				break; /* the end */
			}
			if (none)
				snprintf(err, errlen, "no PEM block (\"-----BEGIN PUBLIC KEY-----\")");
			else
				snprintf(err, errlen, "%s: %s", what,
				         ssl_reason(why, sizeof why, "unreadable"));
			ERR_clear_error();
			goto fail;
		}
		p = data;
		key = strcmp(name, "PUBLIC KEY") ? NULL : d2i_PUBKEY(NULL, &p, dlen);
		if (strcmp(name, "PUBLIC KEY") != 0)
			snprintf(err, errlen, "%s is a %s, not a PUBLIC KEY", what, name);
		else if (!key)
			snprintf(err, errlen, "%s is not a public key OpenSSL can read (%s)", what,
			         ssl_reason(why, sizeof why, "no reason given"));
		else if ((bad = unfit(key)))
			snprintf(err, errlen, "%s is %s", what, bad);
		else if (k->n == PUBKEYS_MAX)
			snprintf(err, errlen, "more than %d keys", PUBKEYS_MAX);
		OPENSSL_free(name);
		OPENSSL_free(header);
		OPENSSL_free(data);
		if (!key || unfit(key) || k->n == PUBKEYS_MAX) {
			EVP_PKEY_free(key);
			ERR_clear_error();
			goto fail;
		}
		if (kids && kids[k->n] && !(k->kid[k->n] = strdup(kids[k->n]))) {
			EVP_PKEY_free(key);
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		if (EVP_PKEY_is_a(key, "RSA"))
			++*nrsa;
		else
			++*nec;
		k->key[k->n++] = key;
	}
	for (int i = 0; i < k->n; i++)
		k->some_kids |= k->kid[i] != NULL;
	BIO_free(bio);
	return k;
fail:
	BIO_free(bio);
	evhost_tls_pubkeys_free(k);
	return NULL;
}

/* The DER form of an ES256 signature (r || s), or NULL out of memory. */
static unsigned char *es256_der(const unsigned char *sig, int *len)
{
	ECDSA_SIG *s = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, ES256_SIG / 2, NULL), *ss = BN_bin2bn(sig + 32, ES256_SIG / 2, NULL);
	unsigned char *der = NULL;
	if (!s || !r || !ss || !ECDSA_SIG_set0(s, r, ss)) {
		BN_free(r);
		BN_free(ss);
		ECDSA_SIG_free(s);
		return NULL;
	}
	*len = i2d_ECDSA_SIG(s, &der);
	ECDSA_SIG_free(s);
	return *len > 0 ? der : NULL;
}

/* 1: key signed it; 0: not (a signature OpenSSL cannot even parse is not
 * one either); -1: out of memory for the context. */
static int verify_one(EVP_PKEY *key, const void *data, size_t n, const unsigned char *sig,
                      size_t siglen)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	int ok;
	if (!md)
		return -1;
	ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
	     EVP_DigestVerify(md, sig, siglen, data, n) == 1;
	EVP_MD_CTX_free(md);
	ERR_clear_error();
	return ok;
}

/* Whether key i may have signed a token of id `kid` (NULL: none given) and
 * kind `type`: one of that kind; with a kid, of that id when some key of the
 * kind has it (a provider may list two under one id, an old and a new),
 * else one without an id: a key with another id did not sign it. */
static int candidate(const pubkeys *k, int i, const char *kid, const char *type, int named)
{
	if (!EVP_PKEY_is_a(k->key[i], type))
		return 0;
	if (!kid)
		return 1;
	return named ? k->kid[i] && strcmp(k->kid[i], kid) == 0 : k->kid[i] == NULL;
}

PUBLIC int evhost_tls_pubkeys_verify(void *keys, const char *kid, const char *alg,
                                     const void *data, size_t n, const unsigned char *sig,
                                     size_t siglen)
{
	pubkeys *k = keys;
	int rsa = !strcmp(alg, "RS256"), rc = 0, derlen = 0, named = 0;
	const char *type = rsa ? "RSA" : "EC";
	unsigned char *der = NULL;
	if (!k || (!rsa && strcmp(alg, "ES256") != 0))
		return 0;
	for (int i = 0; kid && i < k->n; i++)
		named |= EVP_PKEY_is_a(k->key[i], type) && k->kid[i] && strcmp(k->kid[i], kid) == 0;
	if (!rsa) {
		if (siglen != ES256_SIG)
			return 0;
		if (!(der = es256_der(sig, &derlen)))
			return -1;
	}
	for (int i = 0; i < k->n && rc != 1; i++) {
		int r;
		if (!candidate(k, i, kid, type, named))
			continue;
		r = rsa ? verify_one(k->key[i], data, n, sig, siglen)
		        : verify_one(k->key[i], data, n, der, (size_t)derlen);
		if (r != 0)
			rc = r; /* 1, or -1: an error is not "not signed" */
	}
	OPENSSL_free(der);
	/* Its id is none of this kind's keys': a key the provider added since
	 * (keys without ids, as PEM gives them, cannot tell). */
	return rc == 0 && kid && !named && k->some_kids ? -2 : rc;
}
