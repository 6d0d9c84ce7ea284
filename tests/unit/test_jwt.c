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
	assert_int_equal(c.exp, T_EXP);
	assert_int_equal(c.nroles, 2);
	assert_string_equal(c.roles[0], "admin");
	assert_string_equal(c.roles[1], "user");
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
	    jwt_sign("alice", roles, 2, T_IAT, 3600, "evhost", SECRET, SECRET_LEN, &tok), 0);
	assert_non_null(tok);
	assert_string_equal(tok, kat_alice);
	free(tok);
}

static void test_sign_verify_roundtrip(void **state)
{
	char *tok = NULL;
	jwt_claims c;
	(void)state;
	assert_int_equal(jwt_sign("u-1", NULL, 0, 1000, 60, NULL, SECRET, SECRET_LEN, &tok), 0);
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

/* ------------------------------------------- another issuer's tokens */

/* The public-key check is OpenSSL's (tls/pubkey.c, tested with real keys
 * in test_auth.py); here a stand-in accepts the signature "ok" and says
 * which algorithm it was asked for, to test what jwt.c decides around it. */
static const char *pk_alg_seen;
static int pk_answer = 1;

static int fake_pk_verify(void *ctx, const char *alg, const void *data, size_t n,
                          const unsigned char *sig, size_t siglen)
{
	(void)ctx;
	(void)data;
	(void)n;
	pk_alg_seen = alg;
	if (pk_answer < 0)
		return -1;
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
static char *foreign(const char *alg, const char *payload)
{
	char head[64], *h, *p, *tok;
	snprintf(head, sizeof head, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", alg);
	h = b64url(head);
	p = b64url(payload);
	tok = malloc(strlen(h) + strlen(p) + 8);
	assert_non_null(tok);
	sprintf(tok, "%s.%s.b2s", h, p); /* sized above */
	free(h);
	free(p);
	return tok;
}

#define IDP "\"iss\":\"https://idp\",\"sub\":\"ada\",\"exp\":1700003600"

static int check_foreign(const jwt_keys *k, const char *alg, const char *payload, jwt_claims *c,
                         const char **why)
{
	char *tok = foreign(alg, payload);
	int rc;
	memset(c, 0, sizeof *c);
	rc = jwt_verify_keys(tok, k, T_IAT, 0, c, why);
	free(tok);
	return rc;
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
	/* Only the algorithms there are keys for; HS256 only with the secret. */
	k.pk_ec = 0;
	assert_int_equal(check_foreign(&k, "ES256", "{" IDP "}", &c, &why), -1);
	assert_string_equal(why, "token algorithm is not HS256 or RS256");
	k.secret = NULL;
	k.secret_len = 0;
	assert_int_equal(jwt_verify_keys(kat_alice, &k, T_IAT, 0, &c, &why), -1);
	assert_string_equal(why, "token algorithm is not RS256");
	k.pk_verify = NULL;
	assert_int_equal(jwt_verify_keys(kat_alice, &k, T_IAT, 0, &c, &why), -1);
	assert_string_equal(why, "no token secret configured");
	/* Our own tokens keep their issuer and their "roles". */
	k = (jwt_keys){.secret = SECRET, .secret_len = SECRET_LEN, .issuer = "evhost",
	               .pk_verify = fake_pk_verify, .pk_rsa = 1, .pk_issuer = "https://idp",
	               .pk_roles = "realm_access.roles"};
	assert_int_equal(jwt_verify_keys(kat_alice, &k, T_IAT, 0, &c, &why), 0);
	assert_int_equal(c.nroles, 2);
	assert_string_equal(c.roles[0], "admin");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_known_answer),
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
	    cmocka_unit_test(test_foreign_tokens),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
