/* jwt.c: known-answer tokens computed offline with Python's hmac/hashlib
 * (secret "test-secret-0123456789"), then tampering and claim checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "jwks.h"
#include "jwt.h"

#define SECRET ((const unsigned char *)"test-secret-0123456789")
#define SECRET_LEN (sizeof "test-secret-0123456789" - 1)
#define T_IAT 1700000000
#define T_EXP 1700003600

/* {"alg":"HS256","typ":"JWT"}
 * {"sub":"alice","roles":["admin","user"],"iat":1700000000,"exp":1700003600,"iss":"evhost"} */
static const char kat_alice[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJhbGljZSIsInJvbGVzIjpbImFkbWluIiwidXNlciJdLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcw"
    "MDAwMzYwMCwiaXNzIjoiZXZob3N0In0."
    "8R1iZCc-eKYiM9DDRITolkgOFswrLMyNVSyjZOxKzHA";

/* kat_alice as this host signs it since evh_iat_ms (the signing moment in
 * ms, for sign-outs): {"sub":"alice","roles":["admin","user"],
 * "iat":1700000000,"evh_iat_ms":1700000000123,"exp":1700003600,"iss":"evhost"} */
static const char kat_alice_ms[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJhbGljZSIsInJvbGVzIjpbImFkbWluIiwidXNlciJdLCJpYXQiOjE3MDAwMDAwMDAsImV2aF9pYXRf"
    "bXMiOjE3MDAwMDAwMDAxMjMsImV4cCI6MTcwMDAwMzYwMCwiaXNzIjoiZXZob3N0In0."
    "OAgtFcef-hhUmlpQuzBTbvJqqFR6G_Dk5sSdduBGLVI";

/* {"sub":"alice","iat":1700000000,"evh_iat_ms":1700000001000,"exp":1700003600}:
 * a moment outside its iat's second. */
static const char kat_ms_outside[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJhbGljZSIsImlhdCI6MTcwMDAwMDAwMCwiZXZoX2lhdF9tcyI6MTcwMDAwMDAwMTAwMCwiZXhwIjox"
    "NzAwMDAzNjAwfQ.kghhOTUh7LAg7XbOwFES5kli5cCWg2HxBmBWTXTpJvM";

/* {"sub":"alice","evh_iat_ms":1700000000123,"exp":1700003600}: no iat. */
static const char kat_ms_no_iat[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJhbGljZSIsImV2aF9pYXRfbXMiOjE3MDAwMDAwMDAxMjMsImV4cCI6MTcwMDAwMzYwMH0."
    "2gGOgapmiO1glH36tkbw9MNavwPTzzyaqpYfg4TBYVU";

/* {"alg":"HS256"} {"sub":"bob","exp":1700003600}: no typ, roles, iss. */
static const char kat_bob[] = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IiLCJleHAiOjE3MDAwMDM2MDB9."
                              "xBa1KlYV3KDpcOfjqSvjOXf_C_-o6lvLsRqUOzV-hwE";

/* kat_alice's header and signature around a payload whose sub is "mallory". */
static const char tampered[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJtYWxsb3J5Iiwicm9sZXMiOlsiYWRtaW4iLCJ1c2VyIl0sImlhdCI6MTcwMDAwMDAwMCwiZXhwIjox"
    "NzAwMDAzNjAwLCJpc3MiOiJldmhvc3QifQ."
    "8R1iZCc-eKYiM9DDRITolkgOFswrLMyNVSyjZOxKzHA";

/* {"alg":"none","typ":"JWT"} {"sub":"alice","exp":1700003600} with no signature. */
static const char alg_none[] = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."
                               "eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0.";

/* {"alg":"HS512"} header, signed with HS256 over the same secret. */
static const char alg_hs512[] = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9."
                                "eyJzdWIiOiJhbGljZSIsImV4cCI6MTcwMDAwMzYwMH0."
                                "K-qh3dRsLb4DUjyLvSxnhsSp-O2313FvWJmPyxDnOBE";

/* roles: ["x" * 32] (one byte over the limit). */
static const char role_too_long[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJhbGljZSIsInJvbGVzIjpbInh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4Il0sImV4cCI6"
    "MTcwMDAwMzYwMH0.44YNpib_pzgUwd9_9IE06yLOkQaK-Wdhx9dyyFi0nME";

/* roles: "admin" (a string, not an array). */
static const char roles_not_array[] =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiJhbGljZSIsInJvbGVzIjoiYWRtaW4iLCJleHAiOjE3MDAwMDM2MDB9."
    "LY0NzlnpcoY43kUzosVc_JB-2NWuanov45oQIRUNSqc";

static const char no_exp[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9."
                             "EhVpI9lNSP1iPSyTkupV1SpIvsg7sKIz8up45Wa3PHw";

static const char no_sub[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3MDAwMDM2MDB9."
                             "sfg13PkXkj-Lkq1I7sGJqC0uE40xU4PaPisdoDAHcC8";

static const char *verify_reason(const char *tok, const char *issuer, int64_t now)
{
	jwt_claims c;
	const char *why = "not set";
	int rc = jwt_verify(tok, SECRET, SECRET_LEN, issuer, now, 30, &c, &why);
	if (rc == 0) {
		assert_null(why);
		return NULL;
	}
	assert_int_equal(rc, -1);
	assert_non_null(why);
	return why;
}

static void test_known_answer(void **state)
{
	jwt_claims c;
	const char *why = "x";
	(void)state;
	assert_int_equal(
	    jwt_verify(kat_alice, SECRET, SECRET_LEN, "evhost", T_IAT + 10, 0, &c, &why), 0);
	assert_null(why);
	assert_string_equal(c.sub, "alice");
	assert_string_equal(c.iss, "evhost");
	assert_int_equal(c.iat, T_IAT);
	assert_int_equal(c.iat_ms, T_IAT * 1000LL); /* signed before evh_iat_ms: its iat */
	assert_int_equal(c.exp, T_EXP);
	assert_int_equal(c.nroles, 2);
	assert_string_equal(c.roles[0], "admin");
	assert_string_equal(c.roles[1], "user");
}

/* The signing moment in ms: read from evh_iat_ms, which must fall within
 * the second iat names. */
static void test_issue_ms(void **state)
{
	jwt_claims c;
	(void)state;
	assert_int_equal(jwt_verify(kat_alice_ms, SECRET, SECRET_LEN, "evhost", T_IAT, 0, &c, NULL),
	                 0);
	assert_int_equal(c.iat, T_IAT);
	assert_int_equal(c.iat_ms, T_IAT * 1000LL + 123);
	assert_string_equal(verify_reason(kat_ms_outside, NULL, T_IAT),
	                    "token evh_iat_ms is not a valid time, or not within its iat");
	assert_string_equal(verify_reason(kat_ms_no_iat, NULL, T_IAT),
	                    "token evh_iat_ms is not a valid time, or not within its iat");
	/* Issued later than now, past the leeway (30 s in verify_reason). */
	assert_null(verify_reason(kat_alice_ms, NULL, T_IAT - 30));
	assert_string_equal(verify_reason(kat_alice_ms, NULL, T_IAT - 31),
	                    "token issued in the future (iat)");
}

static void test_minimal_claims(void **state)
{
	jwt_claims c;
	(void)state;
	assert_int_equal(jwt_verify(kat_bob, SECRET, SECRET_LEN, NULL, T_IAT, 0, &c, NULL), 0);
	assert_string_equal(c.sub, "bob");
	assert_string_equal(c.iss, "");
	assert_int_equal(c.nroles, 0);
	assert_int_equal(c.iat, 0);
	/* An issuer is required when one is configured. */
	assert_string_equal(verify_reason(kat_bob, "evhost", T_IAT), "wrong token issuer");
}

static void test_sign_matches_known_answer(void **state)
{
	const char *roles[] = {"admin", "user"};
	char *tok = NULL;
	(void)state;
	assert_int_equal(
	    jwt_sign("alice", roles, 2, T_IAT * 1000LL + 123, 3600, "evhost", SECRET, SECRET_LEN,
	             &tok),
	    0);
	assert_non_null(tok);
	assert_string_equal(tok, kat_alice_ms);
	free(tok);
}

static void test_sign_verify_roundtrip(void **state)
{
	char *tok = NULL;
	jwt_claims c;
	(void)state;
	assert_int_equal(jwt_sign("u-1", NULL, 0, 1000000, 60, NULL, SECRET, SECRET_LEN, &tok), 0);
	assert_int_equal(jwt_verify(tok, SECRET, SECRET_LEN, NULL, 1059, 0, &c, NULL), 0);
	assert_string_equal(c.sub, "u-1");
	assert_int_equal(c.exp, 1060);
	assert_int_equal(c.nroles, 0);
	/* Another secret does not verify it. */
	assert_int_equal(
	    jwt_verify(tok, (const unsigned char *)"other", 5, NULL, 1059, 0, &c, NULL), -1);
	free(tok);
}

/* During a key rotation: the current key or the previous one verifies;
 * past the signature, the previous key's tokens are checked like any. */
static void test_previous_key(void **state)
{
	static const unsigned char next[] = "next-secret-9876543210";
	jwt_claims c;
	const char *why = NULL;
	(void)state;
	/* kat_alice is signed with SECRET, now the previous key */
	assert_int_equal(jwt_verify2(kat_alice, next, sizeof next - 1, SECRET, SECRET_LEN, "evhost",
	                             T_IAT + 10, 0, &c, &why),
	                 0);
	assert_string_equal(c.sub, "alice");
	assert_int_equal(jwt_verify2(kat_alice, SECRET, SECRET_LEN, next, sizeof next - 1, "evhost",
	                             T_IAT + 10, 0, &c, &why),
	                 0);
	/* without it, or expired, or with a wrong issuer, it is refused */
	assert_int_equal(jwt_verify2(kat_alice, next, sizeof next - 1, NULL, 0, "evhost",
	                             T_IAT + 10, 0, &c, &why),
	                 -1);
	assert_string_equal(why, "bad signature");
	assert_int_equal(jwt_verify2(kat_alice, next, sizeof next - 1, SECRET, SECRET_LEN, "evhost",
	                             T_EXP + 1, 0, &c, &why),
	                 -1);
	assert_string_equal(why, "token expired");
	assert_int_equal(jwt_verify2(kat_alice, next, sizeof next - 1, SECRET, SECRET_LEN, "other",
	                             T_IAT + 10, 0, &c, &why),
	                 -1);
	assert_string_equal(why, "wrong token issuer");
	/* a third key verifies nothing */
	assert_int_equal(jwt_verify2(kat_alice, next, sizeof next - 1, next, sizeof next - 1,
	                             "evhost", T_IAT + 10, 0, &c, &why),
	                 -1);
	assert_string_equal(why, "bad signature");
}

static void test_sign_refuses_bad_args(void **state)
{
	const char *long_role[] = {"abcdefghijklmnopqrstuvwxyz0123456789"};
	const char *nine[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};
	char *tok = (char *)"unchanged";
	(void)state;
	assert_int_equal(jwt_sign("", NULL, 0, 0, 60, NULL, SECRET, SECRET_LEN, &tok), -1);
	assert_null(tok);
	assert_int_equal(jwt_sign("a", long_role, 1, 0, 60, NULL, SECRET, SECRET_LEN, &tok), -1);
	assert_int_equal(jwt_sign("a", nine, 9, 0, 60, NULL, SECRET, SECRET_LEN, &tok), -1);
	assert_int_equal(jwt_sign("a", NULL, 0, 0, 0, NULL, SECRET, SECRET_LEN, &tok), -1);
	assert_int_equal(jwt_sign("a", NULL, 0, 0, 60, NULL, SECRET, 0, &tok), -1);
	/* not UTF-8: jwt_verify would refuse the token it made (fuzz_jwt found it) */
	{
		const char *bad_role[] = {"r\xff"};
		assert_int_equal(jwt_sign("\xff\xff", NULL, 0, 0, 60, NULL, SECRET, SECRET_LEN, &tok),
		                 -1);
		assert_int_equal(jwt_sign("a", bad_role, 1, 0, 60, NULL, SECRET, SECRET_LEN, &tok), -1);
		assert_int_equal(jwt_sign("a", NULL, 0, 0, 60, "i\xc3", SECRET, SECRET_LEN, &tok), -1);
	}
	assert_null(tok);
}

static void test_tampered(void **state)
{
	char tok[sizeof kat_alice];
	(void)state;
	assert_string_equal(verify_reason(tampered, NULL, T_IAT), "bad signature");
	/* A flipped bit in the signature. */
	memcpy(tok, kat_alice, sizeof tok);
	tok[sizeof tok - 5] = tok[sizeof tok - 5] == 'a' ? 'b' : 'a';
	assert_string_equal(verify_reason(tok, NULL, T_IAT), "bad signature");
	/* The same signature bytes spelled with nonzero padding bits. */
	memcpy(tok, kat_alice, sizeof tok);
	assert_int_equal(tok[sizeof tok - 2], 'A');
	tok[sizeof tok - 2] = 'B';
	assert_string_equal(verify_reason(tok, NULL, T_IAT), "malformed token signature");
	/* Wrong secret. */
	assert_int_equal(jwt_verify(kat_alice, (const unsigned char *)"test-secret-012345678", 21,
	                            NULL, T_IAT, 0, NULL, NULL),
	                 -1);
}

static void test_algorithms_refused(void **state)
{
	(void)state;
	assert_string_equal(verify_reason(alg_none, NULL, T_IAT), "token algorithm is not HS256");
	assert_string_equal(verify_reason(alg_hs512, NULL, T_IAT), "token algorithm is not HS256");
}

static void test_expiry_and_leeway(void **state)
{
	jwt_claims c;
	const char *why = NULL;
	(void)state;
	assert_null(verify_reason(kat_alice, NULL, T_EXP));
	assert_null(verify_reason(kat_alice, NULL, T_EXP + 30)); /* within 30 s leeway */
	assert_string_equal(verify_reason(kat_alice, NULL, T_EXP + 31), "token expired");
	assert_int_equal(jwt_verify(kat_alice, SECRET, SECRET_LEN, NULL, T_EXP + 1, 0, &c, &why),
	                 -1);
	assert_string_equal(why, "token expired");
}

static void test_issuer(void **state)
{
	(void)state;
	assert_null(verify_reason(kat_alice, "evhost", T_IAT));
	assert_string_equal(verify_reason(kat_alice, "someone-else", T_IAT), "wrong token issuer");
	assert_null(verify_reason(kat_alice, NULL, T_IAT));
}

static void test_claim_shapes(void **state)
{
	(void)state;
	assert_string_equal(verify_reason(role_too_long, NULL, T_IAT),
	                    "token role name is too long");
	assert_string_equal(verify_reason(roles_not_array, NULL, T_IAT),
	                    "token roles is not an array");
	assert_string_equal(verify_reason(no_exp, NULL, T_IAT), "token has no exp");
	assert_string_equal(verify_reason(no_sub, NULL, T_IAT), "token has no sub");
}

static void test_structure(void **state)
{
	char *big;
	(void)state;
	assert_string_equal(verify_reason("", NULL, T_IAT), "missing token");
	assert_string_equal(verify_reason(NULL, NULL, T_IAT), "missing token");
	assert_string_equal(verify_reason("abc.def", NULL, T_IAT),
	                    "malformed token (expected three parts)");
	assert_string_equal(verify_reason("a.b.c.d", NULL, T_IAT),
	                    "malformed token (expected three parts)");
	assert_string_equal(verify_reason("!!!.e30.AAAA", NULL, T_IAT), "malformed token header");
	big = malloc(5000);
	assert_non_null(big);
	memset(big, 'A', 4999);
	big[4999] = '\0';
	assert_string_equal(verify_reason(big, NULL, T_IAT), "token too long");
	free(big);
	assert_int_equal(jwt_verify(kat_alice, NULL, 0, NULL, T_IAT, 0, NULL, NULL), -1);
}

/* The kind of each refusal (counted in evhost_auth_refusals_total). */
static jwt_refusal refusal_of(const char *tok, const jwt_keys *k, int64_t now, int want_rc)
{
	jwt_claims c;
	const char *why = NULL;
	jwt_refusal cls = JWT_REFUSED_NONE;
	assert_int_equal(jwt_verify_keys(tok, k, now, 0, &c, &why, &cls), want_rc);
	return cls;
}

static void test_refusal_kinds(void **state)
{
	jwt_keys k = {.secret = SECRET, .secret_len = SECRET_LEN, .issuer = "evhost"};
	jwt_keys none = {.issuer = "evhost"};
	char big[5000];
	(void)state;
	assert_int_equal(refusal_of(kat_alice, &k, T_IAT, 0), JWT_REFUSED_NONE);
	memset(big, 'A', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	assert_int_equal(refusal_of("", &k, T_IAT, -1), JWT_REFUSED_MALFORMED);
	assert_int_equal(refusal_of(big, &k, T_IAT, -1), JWT_REFUSED_MALFORMED);
	assert_int_equal(refusal_of("a.b", &k, T_IAT, -1), JWT_REFUSED_MALFORMED);
	assert_int_equal(refusal_of("!!!.e30.AAAA", &k, T_IAT, -1), JWT_REFUSED_MALFORMED);
	assert_int_equal(refusal_of(tampered, &k, T_IAT, -1), JWT_REFUSED_SIGNATURE);
	/* A signature that is not canonical base64url: not a JWT, not a forgery. */
	memcpy(big, kat_alice, sizeof kat_alice);
	big[sizeof kat_alice - 2] = 'B';
	assert_int_equal(refusal_of(big, &k, T_IAT, -1), JWT_REFUSED_MALFORMED);
	assert_int_equal(refusal_of(alg_none, &k, T_IAT, -1), JWT_REFUSED_SIGNATURE);
	assert_int_equal(refusal_of(alg_hs512, &k, T_IAT, -1), JWT_REFUSED_SIGNATURE);
	assert_int_equal(refusal_of(kat_alice, &k, T_EXP + 1, -1), JWT_REFUSED_EXPIRED);
	assert_int_equal(refusal_of(no_exp, &k, T_IAT, -1), JWT_REFUSED_CLAIMS);
	assert_int_equal(refusal_of(no_sub, &k, T_IAT, -1), JWT_REFUSED_CLAIMS);
	assert_int_equal(refusal_of(role_too_long, &k, T_IAT, -1), JWT_REFUSED_CLAIMS);
	k.issuer = "someone-else";
	assert_int_equal(refusal_of(kat_alice, &k, T_IAT, -1), JWT_REFUSED_CLAIMS);
	assert_int_equal(refusal_of(kat_alice, &none, T_IAT, -1), JWT_REFUSED_UNVERIFIABLE);
	/* Signed before now: iat ahead of the clock (beyond the leeway). */
	assert_int_equal(refusal_of(kat_alice, &k, T_IAT - 3600, -1), JWT_REFUSED_NOT_YET_VALID);
}

/* ------------------------------------------- another issuer's tokens */

/* The public-key check is OpenSSL's (tls/pubkey.c, tested with real keys
 * in test_auth.py); here a stand-in accepts the signature "ok" and says
 * which algorithm it was asked for, to test what jwt.c decides around it. */
static const char *pk_alg_seen;
static int pk_answer = 1;

static const char *pk_kid_seen; /* pk_kid_copy, or NULL: no kid */
static char pk_kid_copy[300];

static int fake_pk_verify(void *ctx, const char *kid, const char *alg, const void *data,
                          size_t n, const unsigned char *sig, size_t siglen)
{
	(void)ctx;
	(void)data;
	(void)n;
	pk_alg_seen = alg;
	pk_kid_seen = kid ? strncpy(pk_kid_copy, kid, sizeof pk_kid_copy - 1) : NULL;
	if (pk_answer < 0)
		return pk_answer;
	return siglen == 2 && !memcmp(sig, "ok", 2) ? pk_answer : 0;
}

static char *b64url(const char *text)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t n = strlen(text), o = 0;
	char *out = malloc(n / 3 * 4 + 5);
	assert_non_null(out);
	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned char)text[i] << 16;
		size_t left = n - i;
		if (left > 1)
			v |= (unsigned char)text[i + 1] << 8;
		if (left > 2)
			v |= (unsigned char)text[i + 2];
		out[o++] = a[v >> 18 & 63];
		out[o++] = a[v >> 12 & 63];
		if (left > 1)
			out[o++] = a[v >> 6 & 63];
		if (left > 2)
			out[o++] = a[v & 63];
	}
	out[o] = '\0';
	return out;
}

/* header.payload."ok" (b2s: base64url of "ok"). */
static char *foreign_header(const char *head, const char *payload)
{
	char *h, *p, *tok;
	h = b64url(head);
	p = b64url(payload);
	tok = malloc(strlen(h) + strlen(p) + 8);
	assert_non_null(tok);
	sprintf(tok, "%s.%s.b2s", h, p); /* sized above */
	free(h);
	free(p);
	return tok;
}

static char *foreign(const char *alg, const char *payload)
{
	char head[64];
	snprintf(head, sizeof head, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
	return foreign_header(head, payload);
}

#define IDP "\"iss\":\"https://idp\",\"sub\":\"ada\",\"exp\":1700003600"

static jwt_refusal foreign_kind; /* check_foreign's last refusal */

static int check_foreign(const jwt_keys *k, const char *alg, const char *payload, jwt_claims *c,
                         const char **why)
{
	char *tok = foreign(alg, payload);
	int rc;
	memset(c, 0, sizeof *c);
	rc = jwt_verify_keys(tok, k, T_IAT, 0, c, why, &foreign_kind);
	free(tok);
	return rc;
}

/* A token of this host's key signed while the clock ran ahead, the clock
 * set back since past the leeway: not refused as issued in the future when
 * this host signed no token later (signed_ms, revoke.h), as every sign-out
 * is made after it. One a moment later, or another issuer's, still is. */
static void test_issued_ahead_by_this_host(void **state)
{
	jwt_keys k = {.secret = SECRET,
	              .secret_len = SECRET_LEN,
	              .pk_verify = fake_pk_verify,
	              .pk_rsa = 1,
	              .pk_issuer = "https://idp"};
	const char *why = NULL;
	char *tok;
	jwt_claims c;
	(void)state;
	k.signed_ms = T_IAT * 1000LL + 123; /* kat_alice_ms's evh_iat_ms */
	assert_int_equal(jwt_verify_keys(kat_alice_ms, &k, T_IAT - 3600, 30, &c, &why, NULL), 0);
	assert_int_equal(c.iat_ms, T_IAT * 1000LL + 123);
	/* Signed before evh_iat_ms: its iat's second, as a sign-out reads it. */
	assert_int_equal(jwt_verify_keys(kat_alice, &k, T_IAT - 3600, 30, &c, &why, NULL), 0);
	k.signed_ms--;
	assert_int_equal(jwt_verify_keys(kat_alice_ms, &k, T_IAT - 3600, 30, &c, &why, NULL), -1);
	assert_string_equal(why, "token issued in the future (iat)");
	k.signed_ms = T_IAT * 1000LL + 5000;
	pk_answer = 1;
	tok = foreign("RS256", "{" IDP ",\"iat\":1700000000}");
	assert_int_equal(jwt_verify_keys(tok, &k, T_IAT - 3600, 30, &c, &why, NULL), -1);
	assert_string_equal(why, "token issued in the future (iat)");
	assert_int_equal(jwt_verify_keys(tok, &k, T_IAT, 30, &c, &why, NULL), 0);
	free(tok);
}

/* A header or payload nested past 32 levels is malformed, refused before
 * cJSON parses it (on an HTTP worker's stack, which about 550 levels
 * overflow: a token's header could nest 1300, sent by anyone). 32 levels
 * pass on to the next check. The payload is read once the signature is
 * good: an RS256 token the test's verifier takes. */
static void test_a_part_nested_past_32_levels_is_malformed(void **state)
{
	static const char *const want[] = {"malformed token header", "malformed token payload"};
	jwt_keys k = {.secret = SECRET,
	              .secret_len = SECRET_LEN,
	              .pk_verify = fake_pk_verify,
	              .pk_rsa = 1,
	              .pk_issuer = "https://idp"};
	(void)state;
	pk_answer = 1;
	for (int part = 0; part < 2; part++)
		for (int depth = 32; depth <= 1000; depth += depth == 33 ? 967 : 1) {
			/* The object and depth - 1 arrays. */
			size_t n = 32 + 2 * (size_t)depth;
			char *deep = malloc(n), *tok;
			const char *why = NULL;
			jwt_claims c;
			int rc;
			assert_non_null(deep);
			snprintf(deep, n, "{\"alg\":\"RS256\",\"x\":");
			for (int i = 1; i < depth; i++)
				strcat(deep, "[");
			for (int i = 1; i < depth; i++)
				strcat(deep, "]");
			strcat(deep, "}");
			tok = part ? foreign_header("{\"alg\":\"RS256\"}", deep)
			           : foreign_header(deep, "{" IDP "}");
			rc = jwt_verify_keys(tok, &k, T_IAT, 0, &c, &why, NULL);
			if (depth > 32) {
				assert_int_equal(rc, -1);
				assert_string_equal(why, want[part]);
			} else if (rc == -1 && !strcmp(why, want[part])) {
				fail_msg("%d levels refused: %s", depth, why);
			}
			free(tok);
			free(deep);
		}
}

static void test_foreign_tokens(void **state)
{
	jwt_keys k = {.secret = SECRET,
	              .secret_len = SECRET_LEN,
	              .issuer = "evhost",
	              .pk_verify = fake_pk_verify,
	              .pk_rsa = 1,
	              .pk_ec = 1,
	              .pk_issuer = "https://idp",
	              .pk_audience = "shop",
	              .pk_roles = "realm_access.roles"};
	jwt_claims c;
	const char *why = NULL;
	(void)state;
	pk_answer = 1;
	/* Checked by the public keys, for the algorithm the header names. */
	assert_int_equal(check_foreign(&k, "RS256",
	                               "{" IDP ",\"aud\":[\"x\",\"shop\"],\"realm_access\":"
	                               "{\"roles\":[\"admin\",7,\"user\"]},\"roles\":[\"root\"]}",
	                               &c, &why),
	                 0);
	assert_string_equal(pk_alg_seen, "RS256");
	assert_string_equal(c.sub, "ada");
	assert_int_equal(c.nroles, 2); /* the 7 is no role; "roles" is not where they are */
	assert_string_equal(c.roles[0], "admin");
	assert_string_equal(c.roles[1], "user");
	assert_int_equal(check_foreign(&k, "ES256", "{" IDP ",\"aud\":\"shop\"}", &c, &why), 0);
	assert_string_equal(pk_alg_seen, "ES256");
	assert_int_equal(c.nroles, 0);
	/* Issuer and audience. */
	assert_int_equal(check_foreign(&k, "RS256",
	                               "{\"iss\":\"evhost\",\"sub\":\"a\",\"exp\":1700003600,"
	                               "\"aud\":\"shop\"}",
	                               &c, &why),
	                 -1);
	assert_string_equal(why, "wrong token issuer");
	assert_int_equal(check_foreign(&k, "RS256", "{" IDP ",\"aud\":\"other\"}", &c, &why), -1);
	assert_string_equal(why, "token is not for this audience (aud)");
	assert_int_equal(check_foreign(&k, "RS256", "{" IDP ",\"aud\":[1,\"other\"]}", &c, &why),
	                 -1);
	assert_int_equal(check_foreign(&k, "RS256", "{" IDP "}", &c, &why), -1);
	assert_string_equal(why, "token is not for this audience (aud)");
	/* Roles: a string of names (OAuth's scope), a claim named like a URL,
	 * names that do not fit left out, at most JWT_MAX_ROLES kept. */
	k.pk_audience = NULL;
	k.pk_roles = "scope";
	assert_int_equal(check_foreign(&k, "RS256", "{" IDP ",\"scope\":\"read  write admin\"}", &c,
	                               &why),
	                 0);
	assert_int_equal(c.nroles, 3);
	assert_string_equal(c.roles[2], "admin");
	k.pk_roles = "https://shop.example/roles";
	{
		/* One byte over what a role name may be, and one that just fits. */
		char over[sizeof c.roles[0] + 1], fits[sizeof c.roles[0]], payload[512];
		memset(over, 'o', sizeof over - 1);
		over[sizeof over - 1] = '\0';
		memset(fits, 'f', sizeof fits - 1);
		fits[sizeof fits - 1] = '\0';
		snprintf(payload, sizeof payload,
		         "{" IDP ",\"https://shop.example/roles\":[\"%s\",\"%s\",\"b\",\"c\",\"d\","
		         "\"e\",\"f\",\"g\",\"h\",\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\","
		         "\"q\",\"r\"]}",
		         over, fits);
		assert_int_equal(check_foreign(&k, "RS256", payload, &c, &why), 0);
		assert_int_equal(c.nroles, JWT_MAX_ROLES); /* 18 names that fit: the first 16 */
		assert_string_equal(c.roles[0], fits);
		assert_string_equal(c.roles[1], "b");
		assert_string_equal(c.roles[JWT_MAX_ROLES - 1], "p");
	}
	k.pk_roles = "realm_access.roles";
	assert_int_equal(check_foreign(&k, "RS256", "{" IDP ",\"realm_access\":{\"roles\":{}}}", &c,
	                               &why),
	                 -1);
	assert_string_equal(why, "token roles claim is neither an array nor a string");
	/* A bad signature, and no memory to tell. */
	pk_answer = 0;
	assert_int_equal(check_foreign(&k, "RS256", "{" IDP "}", &c, &why), -1);
	assert_string_equal(why, "bad signature");
	pk_answer = -1;
	assert_int_equal(check_foreign(&k, "RS256", "{" IDP "}", &c, &why), -2);
	pk_answer = 1;
	/* The header's key id goes to the keys; no key of that id is a reason
	 * of its own; a kid that is not a short string is refused. */
	{
		char head[400], *tok;
		const char *const heads[] = {"{\"alg\":\"RS256\",\"kid\":7}",
		                             "{\"alg\":\"RS256\",\"kid\":null}", head};
		/* A kid does not spare a token the other header checks. */
		tok = foreign_header("{\"alg\":\"RS256\",\"kid\":\"k-1\",\"crit\":[\"exp\"]}",
		                     "{" IDP "}");
		assert_int_equal(jwt_verify_keys(tok, &k, T_IAT, 0, &c, &why, NULL), -1);
		assert_string_equal(why, "token header has critical extensions");
		free(tok);
		tok = foreign_header("{\"alg\":\"RS256\",\"kid\":\"k-1\",\"typ\":1}", "{" IDP "}");
		assert_int_equal(jwt_verify_keys(tok, &k, T_IAT, 0, &c, &why, NULL), -1);
		assert_string_equal(why, "token header typ is not a string");
		free(tok);
		assert_int_equal(check_foreign(&k, "RS256", "{" IDP "}", &c, &why), 0);
		assert_null(pk_kid_seen);
		tok = foreign_header("{\"alg\":\"RS256\",\"kid\":\"k-1\"}", "{" IDP "}");
		assert_int_equal(jwt_verify_keys(tok, &k, T_IAT, 0, &c, &why, NULL), 0);
		assert_string_equal(pk_kid_seen, "k-1");
		pk_answer = -2;
		assert_int_equal(jwt_verify_keys(tok, &k, T_IAT, 0, &c, &why, NULL), -1);
		assert_string_equal(why, "token signed with an unknown key (kid)");
		pk_answer = 1;
		free(tok);
		/* 255 bytes fit; 256 do not. */
		snprintf(head, sizeof head, "{\"alg\":\"RS256\",\"kid\":\"%0255d\"}", 0);
		tok = foreign_header(head, "{" IDP "}");
		assert_int_equal(jwt_verify_keys(tok, &k, T_IAT, 0, &c, &why, NULL), 0);
		assert_int_equal(strlen(pk_kid_seen), 255);
		free(tok);
		snprintf(head, sizeof head, "{\"alg\":\"RS256\",\"kid\":\"%0256d\"}", 0);
		for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
			tok = foreign_header(heads[i], "{" IDP "}");
			pk_kid_seen = "untouched";
			assert_int_equal(jwt_verify_keys(tok, &k, T_IAT, 0, &c, &why, NULL), -1);
			assert_string_equal(why, "token header kid is not a string of at most 255 bytes");
			assert_string_equal(pk_kid_seen, "untouched");
			free(tok);
		}
	}
	/* Only the algorithms there are keys for; HS256 only with the secret. */
	k.pk_ec = 0;
	assert_int_equal(check_foreign(&k, "ES256", "{" IDP "}", &c, &why), -1);
	assert_string_equal(why, "token algorithm is not HS256 or RS256");
	k.secret = NULL;
	k.secret_len = 0;
	assert_int_equal(jwt_verify_keys(kat_alice, &k, T_IAT, 0, &c, &why, NULL), -1);
	assert_string_equal(why, "token algorithm is not RS256");
	k.pk_verify = NULL;
	assert_int_equal(jwt_verify_keys(kat_alice, &k, T_IAT, 0, &c, &why, NULL), -1);
	assert_string_equal(why, "no token secret configured");
	/* Our own tokens keep their issuer and their "roles". */
	k = (jwt_keys){.secret = SECRET, .secret_len = SECRET_LEN, .issuer = "evhost",
	               .pk_verify = fake_pk_verify, .pk_rsa = 1, .pk_issuer = "https://idp",
	               .pk_roles = "realm_access.roles"};
	assert_int_equal(jwt_verify_keys(kat_alice, &k, T_IAT, 0, &c, &why, NULL), 0);
	assert_int_equal(c.nroles, 2);
	assert_string_equal(c.roles[0], "admin");
	/* The provider's keys not fetched yet: its tokens cannot be told good
	 * or bad (-2, the reason given), evhost's own are checked as ever. */
	k = (jwt_keys){.secret = SECRET, .secret_len = SECRET_LEN, .issuer = "evhost",
	               .pk_verify = fake_pk_verify, .pk_issuer = "https://idp",
	               .pk_pending = jwt_reason_keys_pending};
	for (const char *const *alg = (const char *const[]){"RS256", "ES256", NULL}; *alg; alg++) {
		assert_int_equal(check_foreign(&k, *alg, "{" IDP "}", &c, &why), -2);
		assert_ptr_equal(why, jwt_reason_keys_pending);
		assert_int_equal(foreign_kind, JWT_REFUSED_UNVERIFIABLE);
	}
	assert_int_equal(jwt_verify_keys(kat_alice, &k, T_IAT, 0, &c, &why, NULL), 0);
	assert_int_equal(check_foreign(&k, "none", "{" IDP "}", &c, &why), -1);
	assert_string_equal(why, "token algorithm is not HS256");
	/* Keys that can be fetched again: a token of a kind they have none of
	 * names a key they lack, not a refused algorithm. */
	k.pk_pending = NULL;
	k.pk_rsa = 1;
	k.pk_refetchable = 1;
	assert_int_equal(check_foreign(&k, "ES256", "{" IDP "}", &c, &why), -1);
	assert_ptr_equal(why, jwt_reason_unknown_kid);
	assert_int_equal(foreign_kind, JWT_REFUSED_SIGNATURE);
	assert_int_equal(check_foreign(&k, "PS256", "{" IDP "}", &c, &why), -1);
	assert_string_equal(why, "token algorithm is not HS256 or RS256");
	assert_int_equal(foreign_kind, JWT_REFUSED_SIGNATURE);
	/* What the other kinds of refusal are, for another issuer's tokens. */
	k.pk_audience = "shop";
	assert_int_equal(check_foreign(&k, "RS256", "{" IDP "}", &c, &why), -1);
	assert_string_equal(why, "token is not for this audience (aud)");
	assert_int_equal(foreign_kind, JWT_REFUSED_CLAIMS);
	assert_int_equal(check_foreign(&k, "RS256", "{" IDP ",\"aud\":\"shop\",\"nbf\":1800000000}",
	                               &c, &why),
	                 -1);
	assert_string_equal(why, "token not yet valid");
	assert_int_equal(foreign_kind, JWT_REFUSED_NOT_YET_VALID);
	pk_answer = 0;
	assert_int_equal(check_foreign(&k, "RS256", "{" IDP ",\"aud\":\"shop\"}", &c, &why), -1);
	assert_string_equal(why, "bad signature");
	assert_int_equal(foreign_kind, JWT_REFUSED_SIGNATURE);
	pk_answer = 1;
	assert_int_equal(check_foreign(&k, "RS256", "{" IDP ",\"aud\":\"shop\"}", &c, &why), 0);
	assert_int_equal(foreign_kind, JWT_REFUSED_NONE);
}

/* ------------------------------------------------------------------ JWKS */

/* A JWKS's keys as PEM: known answers from Python's cryptography, which wrote
 * each key's PEM and its JWK members (RFC 7518, 6.2.1 and 6.3.1). */
#define KAT_N                                                                                  \
	"2G3M2fk3n-SfClPUkcN0gShBSMcbATxUgnm1F7lbxSg0SRLdsVx2C9uIedzlR5Mm5Bw6dEqUTcSSnONH4Rp93-6" \
	"EDCunEs76m62ieIlQxsMSghC6AbK9lngZV9mQdXUg5-R6y4KBZDD6Kw4FzWGLsgpjJ1beG_u1K45z-9A0MXKk6m8" \
	"UL9nyBeHTZjFvdvIDlBrl52v85rlIJxQrBHUNpdDF7ld38bypouRa7BRNdisJGy1Na-8VV3s9Ph7gqexklV3LiFN" \
	"6TO80wBsAK65VngxnCgAbcU5pmAiLj2b7kb0tRn_JZtfbJ1fDA494K4CWk6mcuohP_pLBMmwRnidCWQ"
#define KAT_X "hcBmMPqvQRgEWo5yO1Mfpw1Bi-kQsJNlSVGeKxwKATs"
#define KAT_Y "jJHqiaHzKWurRO7Ct48-zJeHLGsTPq_56Wk166R-C1M"
#define KAT_RSA_JWK "{\"kty\":\"RSA\",\"kid\":\"r1\",\"use\":\"sig\",\"alg\":\"RS256\",\"n\":\"" KAT_N "\",\"e\":\"AQAB\"}"
#define KAT_EC_JWK "{\"kty\":\"EC\",\"kid\":\"e1\",\"crv\":\"P-256\",\"x\":\"" KAT_X "\",\"y\":\"" KAT_Y "\"}"

static const char kat_rsa_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                                  "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA2G3M2fk3n+SfClPUkcN0\n"
                                  "gShBSMcbATxUgnm1F7lbxSg0SRLdsVx2C9uIedzlR5Mm5Bw6dEqUTcSSnONH4Rp9\n"
                                  "3+6EDCunEs76m62ieIlQxsMSghC6AbK9lngZV9mQdXUg5+R6y4KBZDD6Kw4FzWGL\n"
                                  "sgpjJ1beG/u1K45z+9A0MXKk6m8UL9nyBeHTZjFvdvIDlBrl52v85rlIJxQrBHUN\n"
                                  "pdDF7ld38bypouRa7BRNdisJGy1Na+8VV3s9Ph7gqexklV3LiFN6TO80wBsAK65V\n"
                                  "ngxnCgAbcU5pmAiLj2b7kb0tRn/JZtfbJ1fDA494K4CWk6mcuohP/pLBMmwRnidC\n"
                                  "WQIDAQAB\n"
                                  "-----END PUBLIC KEY-----\n";
static const char kat_ec_pem[] = "-----BEGIN PUBLIC KEY-----\n"
                                 "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEhcBmMPqvQRgEWo5yO1Mfpw1Bi+kQ\n"
                                 "sJNlSVGeKxwKATuMkeqJofMpa6tE7sK3jz7Ml4csaxM+r/npaTXrpH4LUw==\n"
                                 "-----END PUBLIC KEY-----\n";

static void test_jwks_known_answer(void **state)
{
	static const char set[] = " \n{\"keys\":[" KAT_RSA_JWK "," KAT_EC_JWK "]}\n";
	jwks_pem p;
	char err[256] = "", want[sizeof kat_rsa_pem + sizeof kat_ec_pem];
	(void)state;
	assert_true(jwks_is_jwks(set, sizeof set - 1));
	assert_false(jwks_is_jwks(kat_rsa_pem, sizeof kat_rsa_pem - 1));
	assert_false(jwks_is_jwks(" \n", 2));
	assert_int_equal(jwks_to_pem(set, sizeof set - 1, &p, err, sizeof err), 0);
	snprintf(want, sizeof want, "%s%s", kat_rsa_pem, kat_ec_pem);
	assert_string_equal(p.pem, want);
	assert_int_equal(p.len, strlen(want));
	assert_int_equal(p.nkeys, 2);
	assert_int_equal(p.skipped, 0);
	assert_string_equal(p.labels[0], "JWKS key 1 (kid 'r1')");
	assert_string_equal(p.labels[1], "JWKS key 2 (kid 'e1')");
	assert_string_equal(p.kids[0], "r1");
	assert_string_equal(p.kids[1], "e1");
	jwks_pem_free(&p);
	assert_null(p.pem);

	/* Leading zero bytes in n and e, and base64 padding, change nothing. */
	unsigned char raw[300];
	size_t rawlen = 0;
	char zeros[400], set2[1024];
	assert_int_equal(sodium_base642bin(raw + 2, sizeof raw - 2, KAT_N, strlen(KAT_N), NULL,
	                                   &rawlen, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING),
	                 0);
	raw[0] = raw[1] = 0;
	sodium_bin2base64(zeros, sizeof zeros, raw, rawlen + 2, sodium_base64_VARIANT_URLSAFE);
	snprintf(set2, sizeof set2, "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AAEAAQ==\"}]}",
	         zeros);
	assert_int_equal(jwks_to_pem(set2, strlen(set2), &p, err, sizeof err), 0);
	assert_string_equal(p.pem, kat_rsa_pem);
	assert_string_equal(p.labels[0], "JWKS key 1");
	assert_null(p.kids[0]);
	jwks_pem_free(&p);
}

static void test_jwks_left_out(void **state)
{
	/* Keys for encryption, other algorithms, curves and kinds are left out;
	 * the usable ones keep their order. */
	static const char set[] =
	    "{\"keys\":["
	    "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"" KAT_N "\",\"e\":\"AQAB\"},"
	    "{\"kty\":\"RSA\",\"alg\":\"RS384\",\"n\":\"" KAT_N "\",\"e\":\"AQAB\"},"
	    "{\"kty\":\"RSA\",\"key_ops\":[\"encrypt\"],\"n\":\"" KAT_N "\",\"e\":\"AQAB\"},"
	    "{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"},"
	    "{\"kty\":\"EC\",\"alg\":\"ES384\",\"crv\":\"P-256\",\"x\":\"" KAT_X "\",\"y\":\"" KAT_Y "\"},"
	    "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AA\"},"
	    "{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}," KAT_EC_JWK ","
	    "{\"kty\":\"RSA\",\"key_ops\":[\"verify\"],\"n\":\"" KAT_N "\",\"e\":\"AQAB\"}"
	    "]}";
	jwks_pem p;
	char err[256] = "", want[sizeof kat_rsa_pem + sizeof kat_ec_pem];
	(void)state;
	assert_int_equal(jwks_to_pem(set, sizeof set - 1, &p, err, sizeof err), 0);
	snprintf(want, sizeof want, "%s%s", kat_ec_pem, kat_rsa_pem);
	assert_string_equal(p.pem, want);
	assert_int_equal(p.nkeys, 2);
	assert_int_equal(p.skipped, 7);
	assert_string_equal(p.labels[0], "JWKS key 8 (kid 'e1')");
	assert_string_equal(p.labels[1], "JWKS key 9");
	assert_string_equal(p.kids[0], "e1");
	assert_null(p.kids[1]);
	jwks_pem_free(&p);
}

static void jwks_refused(const char *set, int rc, const char *want)
{
	jwks_pem p;
	char err[256] = "";
	int got = jwks_to_pem(set, strlen(set), &p, err, sizeof err);
	if (got != rc)
		fail_msg("%s: %d, want %d", set, got, rc);
	assert_null(p.pem);
	assert_int_equal(p.nkeys, 0);
	if (!strstr(err, want))
		fail_msg("for %s: got \"%s\", want \"%s\"", set, err, want);
}

static void jwks_error(const char *set, const char *want) { jwks_refused(set, -1, want); }

/* A well-formed set without a key evhost can use is told from a broken one
 * (-2, not -1): the fetcher puts it in use, the provider having withdrawn
 * its keys, where it keeps the keys it had for a broken answer. */
static void test_jwks_no_usable_key(void **state)
{
	static const char others[] =
	    "{\"keys\":[{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"" KAT_N "\",\"e\":\"AQAB\"},"
	    "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AA\"}]}";
	jwks_pem p;
	char err[256] = "";
	(void)state;
	jwks_refused("{\"keys\":[]}", -2, "no RS256 or ES256 signing key among its 0 key(s)");
	jwks_refused("{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}", -2,
	             "no RS256 or ES256 signing key among its 1 key(s)");
	assert_int_equal(jwks_to_pem(others, sizeof others - 1, &p, err, sizeof err), -2);
	assert_int_equal(p.skipped, 2);
	assert_string_equal(err, "no RS256 or ES256 signing key among its 2 key(s)");
	/* Broken, not empty: a key of a kind it takes, malformed. */
	jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"k\",\"e\":\"AQAB\"}]}",
	           "its n is missing");
}

static void test_jwks_errors(void **state)
{
	char many[8192] = "{\"keys\":[";
	(void)state;
	jwks_error("{\"keys\":[}", "not a JWKS: invalid JSON at line 1, column 10");
	jwks_error("{\n \"keys\": [\n  {,\n", "invalid JSON at line 3, column 4");
	jwks_error("{\"kid\":\"x\"}", "not a JWKS: no \"keys\" array");
	jwks_error("{\"keys\":{}}", "no \"keys\" array");
	jwks_error("{\"keys\":[1]}", "JWKS key 1 is not a JSON Web Key (no kty)");
	jwks_error("{\"keys\":[" KAT_EC_JWK ",{\"kid\":\"k\"}]}",
	           "JWKS key 2 (kid 'k') is not a JSON Web Key (no kty)");
	jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"a'b\\n\",\"e\":\"AQAB\"}]}",
	           "JWKS key 1 (kid 'a?b?'): its n is missing, not base64url, or over 16384 bits");
	jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"" KAT_N "!\",\"e\":\"AQAB\"}]}",
	           "its n is missing, not base64url");
	jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"" KAT_N "\"}]}", "its e is missing");
	jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"" KAT_N "\",\"e\":\"AQAAAAAAAAAB\"}]}",
	           "its e is missing, not base64url, or over 8 bytes");
	jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"" KAT_N "\",\"e\":\"AQAA\"}]}",
	           "its e is not an odd number of 3 or more");
	jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"" KAT_N "\",\"e\":\"AQ\"}]}",
	           "its e is not an odd number of 3 or more");
	/* 1024 bits */
	jwks_error("{\"keys\":[{\"kty\":\"RSA\",\"n\":\"" KAT_N "\",\"e\":\"AQAB\"},"
	           "{\"kty\":\"RSA\",\"kid\":\"short\",\"n\":\"2G3M2fk3n-SfClPUkcN0gShBSMcbATxUgnm1F7lb"
	           "xSg0SRLdsVx2C9uIedzlR5Mm5Bw6dEqUTcSSnONH4Rp93-6EDCunEs76m62ieIlQxsMSghC6AbK9lngZV9m"
	           "QdXUg5-R6y4KBZDD6Kw4FzWGLsgpjJ1beG_u1K45z-9A0MXKk\",\"e\":\"AQAB\"}]}",
	           "JWKS key 2 (kid 'short'): an RSA key of fewer than 2048 bits");
	jwks_error("{\"keys\":[{\"kty\":\"EC\",\"x\":\"" KAT_X "\",\"y\":\"" KAT_Y "\"}]}",
	           "its crv is missing");
	jwks_error("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" KAT_X "\"}]}",
	           "its x and y are not 32 bytes of base64url each");
	jwks_error("{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" KAT_X "AA\",\"y\":\"" KAT_Y
	           "\"}]}",
	           "its x and y are not 32 bytes");
	/* n of 16392 bits, one byte over. */
	unsigned char big[2049];
	char b64[2800], set[3000];
	memset(big, 0xa5, sizeof big);
	sodium_bin2base64(b64, sizeof b64, big, sizeof big,
	                  sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	snprintf(set, sizeof set, "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\"}]}", b64);
	jwks_error(set, "its n is missing, not base64url, or over 16384 bits");
	/* More keys than the loader takes. */
	for (int i = 0; i < JWKS_MAX_KEYS + 1; i++)
		snprintf(many + strlen(many), sizeof many - strlen(many), "%s" KAT_EC_JWK,
		         i ? "," : "");
	strcat(many, "]}");
	jwks_error(many, "more than 16 RS256 or ES256 keys");
}

/* A key the check refuses, by kid: "bad" (1, the key's fault) or "oom" (-1). */
static int refuse_by_kid(const char *pem, size_t len, const char *label, const char *kid,
                         void *arg, char *err, size_t errlen)
{
	int *calls = arg;
	(*calls)++;
	assert_non_null(strstr(pem, "-----BEGIN PUBLIC KEY-----\n"));
	assert_int_equal(strlen(pem), len);
	if (kid && strcmp(kid, "oom") == 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (kid && strcmp(kid, "bad") == 0) {
		snprintf(err, errlen, "%s is not a public key OpenSSL can read", label);
		return 1;
	}
	return 0;
}

#define BAD_RSA(kid) "{\"kty\":\"RSA\",\"kid\":\"" kid "\",\"e\":\"AQAB\"}"
#define EC_JWK(kid)                                                                      \
	"{\"kty\":\"EC\",\"kid\":\"" kid "\",\"crv\":\"P-256\",\"x\":\"" KAT_X "\",\"y\":\"" KAT_Y \
	"\"}"

/* A fetched set (RFC 7517, 5): the keys of a kind evhost takes that it
 * cannot use are left out, counted and noted; the others are used. */
static void test_jwks_usable_leaves_bad_keys_out(void **state)
{
	static const char set[] =
	    "{\"keys\":[" KAT_RSA_JWK "," BAD_RSA("broken") ",1,{\"kid\":\"nokty\"},"
	    "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"},"
	    "{\"kty\":\"EC\",\"kid\":\"short\",\"crv\":\"P-256\",\"x\":\"AA\",\"y\":\"AA\"}," EC_JWK(
	        "bad") "," KAT_EC_JWK "]}";
	jwks_pem p;
	char err[256] = "", want[sizeof kat_rsa_pem + sizeof kat_ec_pem];
	int calls = 0;
	(void)state;
	assert_int_equal(jwks_to_pem_usable(set, sizeof set - 1, refuse_by_kid, &calls, &p, err,
	                                    sizeof err),
	                 0);
	snprintf(want, sizeof want, "%s%s", kat_rsa_pem, kat_ec_pem);
	assert_string_equal(p.pem, want);
	assert_int_equal(p.nkeys, 2);
	assert_string_equal(p.labels[0], "JWKS key 1 (kid 'r1')");
	assert_string_equal(p.labels[1], "JWKS key 8 (kid 'e1')");
	assert_string_equal(p.kids[1], "e1");
	assert_int_equal(calls, 3); /* the keys well formed: r1, bad, e1 */
	assert_int_equal(p.skipped, 1);
	assert_int_equal(p.unusable, 5);
	assert_int_equal(p.nnotes, 5);
	assert_string_equal(p.note[0], "JWKS key 2 (kid 'broken'): its n is missing, not "
	                               "base64url, or over 16384 bits");
	assert_string_equal(p.note[1], "JWKS key 3 is not a JSON Web Key (no kty)");
	assert_string_equal(p.note[2], "JWKS key 4 (kid 'nokty') is not a JSON Web Key (no kty)");
	assert_string_equal(p.note[3], "JWKS key 6 (kid 'short'): its x and y are not 32 bytes of "
	                               "base64url each");
	assert_string_equal(p.note[4], "JWKS key 7 (kid 'bad') is not a public key OpenSSL can "
	                               "read");
	jwks_pem_free(&p);
	/* The strict reader (jwt_public_key_file) refuses the same set. */
	assert_int_equal(jwks_to_pem(set, sizeof set - 1, &p, err, sizeof err), -1);
	assert_string_equal(err, "JWKS key 2 (kid 'broken'): its n is missing, not base64url, or "
	                         "over 16384 bits");
	/* A check that cannot be made fails the set, with its reason. */
	static const char oom[] = "{\"keys\":[" KAT_RSA_JWK "," EC_JWK("oom") "]}";
	assert_int_equal(jwks_to_pem_usable(oom, sizeof oom - 1, refuse_by_kid, &calls, &p, err,
	                                    sizeof err),
	                 -1);
	assert_string_equal(err, "out of memory");
	assert_null(p.pem);
}

/* Nothing usable: -2, as for a set without signing keys (the fetcher puts
 * it in use), saying how many could not be used. */
static void test_jwks_usable_none(void **state)
{
	static const char set[] = "{\"keys\":[" BAD_RSA("a") "," EC_JWK("bad") ","
	                          "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AA\"}]}";
	jwks_pem p;
	char err[256] = "";
	int calls = 0;
	(void)state;
	assert_int_equal(jwks_to_pem_usable(set, sizeof set - 1, refuse_by_kid, &calls, &p, err,
	                                    sizeof err),
	                 -2);
	assert_null(p.pem);
	assert_int_equal(p.nkeys, 0);
	assert_int_equal(p.unusable, 2);
	assert_int_equal(p.skipped, 1);
	assert_string_equal(err, "no RS256 or ES256 signing key evhost can use among its 3 "
	                         "key(s): 2 could not be used");
	/* Not a JWKS is still an error. */
	assert_int_equal(jwks_to_pem_usable("{\"keys\":{}}", 11, NULL, NULL, &p, err, sizeof err),
	                 -1);
	assert_string_equal(err, "not a JWKS: no \"keys\" array");
}

/* Beyond JWKS_MAX_KEYS usable keys: the first ones are used, the rest noted;
 * a key the check refuses does not take a place. Notes stop at
 * JWKS_NOTES_MAX, the count does not. */
static void test_jwks_usable_limits(void **state)
{
	char many[16384] = "{\"keys\":[";
	jwks_pem p;
	char err[256] = "";
	int calls = 0;
	(void)state;
	strcat(many, EC_JWK("bad"));
	for (int i = 0; i < JWKS_MAX_KEYS + 3; i++)
		snprintf(many + strlen(many), sizeof many - strlen(many), ",%s", KAT_EC_JWK);
	strcat(many, "]}");
	assert_int_equal(jwks_to_pem_usable(many, strlen(many), refuse_by_kid, &calls, &p, err,
	                                    sizeof err),
	                 0);
	assert_int_equal(p.nkeys, JWKS_MAX_KEYS);
	assert_string_equal(p.labels[0], "JWKS key 2 (kid 'e1')");
	assert_string_equal(p.labels[JWKS_MAX_KEYS - 1], "JWKS key 17 (kid 'e1')");
	assert_int_equal(p.unusable, 4);
	assert_int_equal(calls, JWKS_MAX_KEYS + 1); /* none for the keys beyond */
	assert_string_equal(p.note[1], "JWKS key 18 (kid 'e1'): beyond the first 16 RS256 or ES256 "
	                               "keys, the ones used");
	assert_string_equal(p.note[3], "JWKS key 20 (kid 'e1'): beyond the first 16 RS256 or ES256 "
	                               "keys, the ones used");
	jwks_pem_free(&p);

	strcpy(many, "{\"keys\":[" KAT_EC_JWK);
	for (int i = 0; i < 3 * JWKS_NOTES_MAX; i++)
		snprintf(many + strlen(many), sizeof many - strlen(many), ",%s", BAD_RSA("b"));
	strcat(many, "]}");
	assert_int_equal(jwks_to_pem_usable(many, strlen(many), NULL, NULL, &p, err, sizeof err),
	                 0);
	assert_int_equal(p.nkeys, 1);
	assert_int_equal(p.unusable, 3 * JWKS_NOTES_MAX);
	assert_int_equal(p.nnotes, JWKS_NOTES_MAX);
	assert_string_equal(p.note[JWKS_NOTES_MAX - 1],
	                    "JWKS key 17 (kid 'b'): its n is missing, not base64url, or over 16384 "
	                    "bits");
	jwks_pem_free(&p);
}

/* Token JSON held to the rules of a request body: a member named twice
 * (cJSON would take the first, most parsers the last: RFC 7519 section 4
 * has a parser refuse them or take the last), \u0000 (a C string ends
 * there), invalid UTF-8. A signed token cannot carry two of a claim. */
static void test_token_json_strict(void **state)
{
	static const struct {
		const char *payload, *why;
	} refused[] = {
	    /* the first "aud" is the audience; the last, which others read, is not */
	    {"{" IDP ",\"aud\":\"shop\",\"aud\":\"other\"}", "token payload names a claim twice"},
	    /* two roles claims, nested; a name spelt with an escape */
	    {"{" IDP ",\"aud\":\"shop\",\"realm_access\":{\"roles\":[\"admin\"],\"roles\":[]}}",
	     "token payload names a claim twice"},
	    {"{" IDP ",\"aud\":\"shop\",\"\\u0065xp\":1}", "token payload names a claim twice"},
	    /* a sub cut short at \u0000 ("ada\u0000admin" read as "ada") */
	    {"{\"iss\":\"https://idp\",\"sub\":\"ada\\u0000admin\",\"exp\":1700003600,"
	     "\"aud\":\"shop\"}",
	     "malformed token payload"},
	    /* invalid UTF-8 (a lone continuation byte) in a claim */
	    {"{" IDP ",\"aud\":\"shop\",\"name\":\"\x80\"}", "malformed token payload"},
	};
	jwt_keys k = {
	    .pk_verify = fake_pk_verify, .pk_rsa = 1, .pk_issuer = "https://idp", .pk_audience = "shop"};
	jwt_claims c;
	const char *why = NULL;
	char *tok;
	(void)state;
	pk_answer = 1;
	assert_int_equal(check_foreign(&k, "RS256", "{" IDP ",\"aud\":\"shop\"}", &c, &why), 0);
	for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
		why = NULL;
		assert_int_equal(check_foreign(&k, "RS256", refused[i].payload, &c, &why), -1);
		assert_string_equal(why, refused[i].why);
	}
	/* the header's alg named twice */
	tok = foreign_header("{\"alg\":\"RS256\",\"alg\":\"none\"}", "{" IDP ",\"aud\":\"shop\"}");
	assert_int_equal(jwt_verify_keys(tok, &k, T_IAT, 0, &c, &why, NULL), -1);
	assert_string_equal(why, "token header names a member twice");
	free(tok);
	/* HS256 tokens alike: {"alg":"HS256","alg":"HS256"} */
	assert_string_equal(
	    verify_reason("eyJhbGciOiJIUzI1NiIsImFsZyI6IkhTMjU2In0.e30.AAAA", NULL, T_IAT),
	    "token header names a member twice");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_known_answer),
	    cmocka_unit_test(test_issue_ms),
	    cmocka_unit_test(test_minimal_claims),
	    cmocka_unit_test(test_sign_matches_known_answer),
	    cmocka_unit_test(test_sign_verify_roundtrip),
	    cmocka_unit_test(test_previous_key),
	    cmocka_unit_test(test_sign_refuses_bad_args),
	    cmocka_unit_test(test_tampered),
	    cmocka_unit_test(test_algorithms_refused),
	    cmocka_unit_test(test_expiry_and_leeway),
	    cmocka_unit_test(test_issuer),
	    cmocka_unit_test(test_claim_shapes),
	    cmocka_unit_test(test_structure),
	    cmocka_unit_test(test_a_part_nested_past_32_levels_is_malformed),
	    cmocka_unit_test(test_refusal_kinds),
	    cmocka_unit_test(test_issued_ahead_by_this_host),
	    cmocka_unit_test(test_foreign_tokens),
	    cmocka_unit_test(test_token_json_strict),
	    cmocka_unit_test(test_jwks_known_answer),
	    cmocka_unit_test(test_jwks_left_out),
	    cmocka_unit_test(test_jwks_errors),
	    cmocka_unit_test(test_jwks_no_usable_key),
	    cmocka_unit_test(test_jwks_usable_leaves_bad_keys_out),
	    cmocka_unit_test(test_jwks_usable_none),
	    cmocka_unit_test(test_jwks_usable_limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
