/* user.so's pure rules (plugins/user/user_logic.c) and the id/time helpers
 * it shares with crud.so (plugins/common/ids.c), and the query-string check
 * it shares with notifications.so (plugins/common/query.c), compiled in
 * directly: they make no SDK calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "../../plugins/common/ids.c"
#include "../../plugins/common/query.c"
#include "../../plugins/user/user_logic.c"

static int setup_sodium(void **state)
{
	(void)state;
	return sodium_init() < 0 ? -1 : 0;
}

static void expect_email(const char *in, const char *want)
{
	char out[USER_EMAIL_MAX + 1];
	const char *why = NULL;
	int rc = user_email_normalize(in, out, &why);

	if (rc != 0)
		fail_msg("'%s' rejected: %s", in, why);
	assert_string_equal(out, want);
}

static void expect_bad_email(const char *in)
{
	char out[USER_EMAIL_MAX + 1];
	const char *why = NULL;

	if (user_email_normalize(in, out, &why) == 0)
		fail_msg("'%s' accepted as '%s'", in, out);
	assert_non_null(why);
}

static void test_email_normalized(void **state)
{
	(void)state;
	expect_email("  Ada@Example.COM\t", "ada@example.com");
	expect_email("a.b+tag@mail.sub.example.org", "a.b+tag@mail.sub.example.org");
	expect_email("o'neil_x-y{z}@example-host.io", "o'neil_x-y{z}@example-host.io");
	expect_email("x@xn--p1ai.xn--p1ai", "x@xn--p1ai.xn--p1ai");
	expect_email("1@2.co", "1@2.co");
}

static void test_email_rejected(void **state)
{
	char longest[300], local65[100];
	(void)state;

	expect_bad_email("");
	expect_bad_email("   ");
	expect_bad_email("plain");
	expect_bad_email("a@b");
	expect_bad_email("a@@b.com");
	expect_bad_email("a@b@c.com");
	expect_bad_email("@b.com");
	expect_bad_email("a@");
	expect_bad_email("a b@c.com");
	expect_bad_email("a@c .com");
	expect_bad_email(".a@b.com");
	expect_bad_email("a.@b.com");
	expect_bad_email("a..b@c.com");
	expect_bad_email("a(b)@c.com");
	expect_bad_email("a@-b.com");
	expect_bad_email("a@b-.com");
	expect_bad_email("a@b..com");
	expect_bad_email("a@.b.com");
	expect_bad_email("a@b.com.");
	expect_bad_email("a@b.c");
	expect_bad_email("a@1.2.3.4");
	expect_bad_email("a@b_c.com");
	expect_bad_email("\xc3\xa9@example.com");
	expect_bad_email("a\x01@example.com");

	/* 254 characters is the limit: 64 + '@' + 189 */
	memset(longest, 'a', 64);
	longest[64] = '@';
	memset(longest + 65, 'b', 60);
	memcpy(longest + 125, ".", 1);
	memset(longest + 126, 'c', 60);
	memcpy(longest + 186, ".", 1);
	memset(longest + 187, 'd', 60);
	memcpy(longest + 247, ".", 1);
	memcpy(longest + 248, "abcdef", 7); /* 254 characters */
	assert_int_equal(strlen(longest), 254);
	expect_email(longest, longest);
	memcpy(longest + 248, "abcdefg", 8);
	expect_bad_email(longest);

	memset(local65, 'a', 65);
	memcpy(local65 + 65, "@example.com", 13);
	expect_bad_email(local65);
	memmove(local65 + 64, local65 + 65, 13);
	expect_email(local65, local65);
}

static void test_name_rules(void **state)
{
	const char *start, *why;
	char name[1024];
	size_t len, i;
	(void)state;

	assert_int_equal(user_name_check("  Ada Lovelace \n", &start, &len, &why), 0);
	assert_int_equal(len, strlen("Ada Lovelace"));
	assert_memory_equal(start, "Ada Lovelace", len);

	assert_int_equal(user_name_check("", &start, &len, &why), -1);
	assert_int_equal(user_name_check(" \t ", &start, &len, &why), -1);
	assert_int_equal(user_name_check("bad\x01name", &start, &len, &why), -1);
	assert_int_equal(user_name_check("bad\xc2\x85name", &start, &len, &why), -1); /* C1 */
	assert_int_equal(user_name_check("\xff", &start, &len, &why), -1);
	assert_int_equal(user_name_check("\xc0\x80", &start, &len, &why), -1);     /* overlong */
	assert_int_equal(user_name_check("\xed\xa0\x80", &start, &len, &why), -1); /* surrogate */
	assert_int_equal(user_name_check("\xf4\x90\x80\x80", &start, &len, &why), -1);
	assert_int_equal(user_name_check("\xe2\x82", &start, &len, &why), -1); /* cut short */

	/* 200 two-byte characters fit; 201 do not: the limit counts characters */
	for (i = 0; i < 200; i++)
		memcpy(name + 2 * i, "\xc3\xa9", 2);
	name[400] = '\0';
	assert_int_equal(user_name_check(name, &start, &len, &why), 0);
	assert_int_equal(len, 400);
	memcpy(name + 400, "\xc3\xa9", 3);
	assert_int_equal(user_name_check(name, &start, &len, &why), -1);
	assert_string_equal(why, "name must be at most 200 characters");
}

static void test_password_rules(void **state)
{
	char pw[1100];
	const char *why;
	(void)state;

	assert_int_equal(user_password_check("1234567", 8, &why), -1);
	assert_int_equal(user_password_check("12345678", 8, &why), 0);
	/* seven characters in fourteen bytes are still too short */
	assert_int_equal(user_password_check("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	                                     "\xc3\xa9",
	                                     8, &why),
	                 -1);
	assert_int_equal(user_password_check("abcdefg\xff", 8, &why), -1);
	memset(pw, 'x', 1024);
	pw[1024] = '\0';
	assert_int_equal(user_password_check(pw, 8, &why), 0);
	pw[1024] = 'x';
	pw[1025] = '\0';
	assert_int_equal(user_password_check(pw, 8, &why), -1);
	assert_string_equal(why, "password must be at most 1024 bytes");
}

static void test_utf8_chars(void **state)
{
	(void)state;
	assert_int_equal(user_utf8_chars("", 0), 0);
	assert_int_equal(user_utf8_chars("abc", 3), 3);
	assert_int_equal(user_utf8_chars("\xe2\x82\xac\xf0\x9f\x98\x80", 7), 2);
	assert_int_equal(user_utf8_chars("\xe0\x80\xaf", 3), -1); /* overlong '/' */
}

static void test_argon2_settings(void **state)
{
	unsigned long long ops;
	size_t mem;
	const char *why;
	(void)state;

	assert_int_equal(user_argon2_opslimit("min", &ops, &why), 0);
	assert_int_equal(ops, crypto_pwhash_OPSLIMIT_MIN);
	assert_int_equal(user_argon2_opslimit("interactive", &ops, &why), 0);
	assert_int_equal(ops, crypto_pwhash_OPSLIMIT_INTERACTIVE);
	assert_int_equal(user_argon2_opslimit(NULL, &ops, &why), 0);
	assert_int_equal(ops, crypto_pwhash_OPSLIMIT_INTERACTIVE);
	assert_int_equal(user_argon2_opslimit("moderate", &ops, &why), 0);
	assert_int_equal(ops, crypto_pwhash_OPSLIMIT_MODERATE);
	assert_int_equal(user_argon2_opslimit("7", &ops, &why), 0);
	assert_int_equal(ops, 7);
	assert_int_equal(user_argon2_opslimit("0", &ops, &why), -1);
	assert_int_equal(user_argon2_opslimit("", &ops, &why), -1);
	assert_int_equal(user_argon2_opslimit("fast", &ops, &why), -1);
	assert_int_equal(user_argon2_opslimit("3x", &ops, &why), -1);
	assert_int_equal(user_argon2_opslimit("99999999999999999999999", &ops, &why), -1);

	assert_int_equal(user_argon2_memlimit("min", &mem, &why), 0);
	assert_int_equal(mem, crypto_pwhash_MEMLIMIT_MIN);
	assert_int_equal(user_argon2_memlimit("moderate", &mem, &why), 0);
	assert_int_equal(mem, crypto_pwhash_MEMLIMIT_MODERATE);
	assert_int_equal(user_argon2_memlimit("64M", &mem, &why), 0);
	assert_int_equal(mem, 64u * 1024 * 1024);
	assert_int_equal(user_argon2_memlimit("8k", &mem, &why), 0);
	assert_int_equal(mem, 8192);
	assert_int_equal(user_argon2_memlimit("1k", &mem, &why), -1); /* below libsodium's 8k */
	assert_int_equal(user_argon2_memlimit("64MB", &mem, &why), -1);
	assert_int_equal(user_argon2_memlimit("-5", &mem, &why), -1);
	assert_int_equal(user_argon2_memlimit("99999999999999999999G", &mem, &why), -1);
}

static void expect_size(unsigned long long bytes, const char *want)
{
	char out[32];

	user_size_text(bytes, out, sizeof out);
	assert_string_equal(out, want);
}

static void test_argon2_memlimit_fits_the_machine(void **state)
{
	const unsigned long long gib = 1024ULL * 1024 * 1024;
	const unsigned long long phys = 25276071936ULL; /* 23.54 GiB */
	char why[256];
	size_t mem;
	const char *reason;
	(void)state;

	expect_size(900, "900 B");
	expect_size(1024, "1 KiB");
	expect_size(64ULL * 1024 * 1024, "64 MiB");
	expect_size(phys, "23.5 GiB");
	expect_size(2 * gib - 1, "1.9 GiB"); /* cut, never shown as the 2 GiB it is short of */
	expect_size(4ULL * 1024 * gib, "4 TiB");

	/* 99G is within libsodium's bounds: only the machine's memory refuses it */
	assert_int_equal(user_argon2_memlimit("99G", &mem, &reason), 0);
	assert_int_equal(user_argon2_memlimit_fits("99G", mem, phys, why, sizeof why), -1);
	assert_string_equal(why, "99G is more than this machine's memory (23.5 GiB): each password "
	                         "hash needs that much");
	/* a preset or a count of bytes is said with its size */
	assert_int_equal(user_argon2_memlimit("sensitive", &mem, &reason), 0);
	assert_int_equal(user_argon2_memlimit_fits("sensitive", mem, 512ULL << 20, why, sizeof why),
	                 -1);
	assert_string_equal(why, "sensitive (1 GiB) is more than this machine's memory (512 MiB): "
	                         "each password hash needs that much");
	assert_int_equal(user_argon2_memlimit_fits(NULL, 64ULL << 20, 32ULL << 20, why, sizeof why),
	                 -1);
	assert_non_null(strstr(why, "interactive (64 MiB) is more"));
	assert_int_equal(user_argon2_memlimit_fits("1073741825", gib + 1, gib, why, sizeof why),
	                 -1);
	assert_non_null(strstr(why, "1073741825 (1.0 GiB) is more than this machine's memory "
	                            "(1 GiB)"));

	/* up to the machine's memory itself, and anything when it is unknown */
	assert_int_equal(user_argon2_memlimit_fits("23G", 23 * gib, phys, why, sizeof why), 0);
	assert_int_equal(user_argon2_memlimit_fits("1073741824", gib, gib, why, sizeof why), 0);
	assert_int_equal(user_argon2_memlimit_fits("99G", 99 * gib, 0, why, sizeof why), 0);
}

/* hash_concurrency hashes of argon2_memlimit each run at once: 64 of 1 GiB
 * passed on a machine of 23.5 GiB, one at a time being within it. */
static void test_hash_concurrency_times_memlimit_fits_the_machine(void **state)
{
	const unsigned long long gib = 1024ULL * 1024 * 1024;
	const unsigned long long phys = 25276071936ULL; /* 23.54 GiB */
	char why[256];
	(void)state;

	assert_int_equal(user_hash_memory_fits(gib, 64, phys, why, sizeof why), -1);
	assert_string_equal(why, "64 hashes at once of 1 GiB each (argon2_memlimit) may take "
	                         "64 GiB, more than this machine's memory (23.5 GiB): lower "
	                         "hash_concurrency or argon2_memlimit");
	assert_int_equal(user_hash_memory_fits(gib, 24, phys, why, sizeof why), -1);
	/* up to the memory itself, and anything when it is unknown */
	assert_int_equal(user_hash_memory_fits(gib, 23, phys, why, sizeof why), 0);
	assert_int_equal(user_hash_memory_fits(gib, 1, gib, why, sizeof why), 0);
	assert_int_equal(user_hash_memory_fits(64ULL << 20, 256, phys, why, sizeof why), 0);
	assert_int_equal(user_hash_memory_fits(4096 * gib, 256, 0, why, sizeof why), 0);
	/* the default, the cores, is held to what fits, and is at least 1 */
	assert_int_equal(user_hash_concurrency_default(64, gib, phys), 23);
	assert_int_equal(user_hash_concurrency_default(2, gib, phys), 2);
	assert_int_equal(user_hash_concurrency_default(8, 2 * gib, gib), 1);
	assert_int_equal(user_hash_concurrency_default(0, gib, phys), 1);
	assert_int_equal(user_hash_concurrency_default(8, gib, 0), 8);
	assert_int_equal(user_hash_concurrency_default(8, 0, phys), 8);
	/* More cores than the key's range allows: its highest value. */
	assert_int_equal(user_hash_concurrency_default(300, 0, 0), USER_HASH_CONCURRENCY_MAX);
	assert_int_equal(user_hash_concurrency_default(300, 1024, 1ULL << 40),
	                 USER_HASH_CONCURRENCY_MAX);
}

static void test_roles(void **state)
{
	char roles[USER_ROLES_MAX][USER_ROLE_LEN];
	(void)state;

	assert_int_equal(user_roles_split("admin,user", roles, USER_ROLES_MAX), 2);
	assert_string_equal(roles[0], "admin");
	assert_string_equal(roles[1], "user");
	assert_int_equal(user_roles_split("", roles, USER_ROLES_MAX), 0);
	assert_int_equal(user_roles_split(",a,,b,", roles, USER_ROLES_MAX), 2);
	assert_string_equal(roles[1], "b");
	assert_int_equal(user_roles_split("a,b,c", roles, 2), 2);

	assert_true(user_roles_has("admin,user", "admin"));
	assert_true(user_roles_has("admin,user", "user"));
	assert_false(user_roles_has("administrator,user", "admin"));
	assert_false(user_roles_has("user", "use"));
	assert_false(user_roles_has("", "admin"));
	/* the empty items a split skips are no role either (found by fuzz_user) */
	assert_false(user_roles_has(",", ""));
	assert_false(user_roles_has("admin,,user", ""));
	assert_false(user_roles_has("", ""));
}

static void test_uuid_v4(void **state)
{
	char a[IDS_UUID_LEN + 1], b[IDS_UUID_LEN + 1];
	size_t i;
	(void)state;

	ids_uuid_v4(a);
	ids_uuid_v4(b);
	assert_int_equal(strlen(a), 36);
	assert_string_not_equal(a, b);
	for (i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23)
			assert_int_equal(a[i], '-');
		else
			assert_non_null(strchr("0123456789abcdef", a[i]));
	}
	assert_int_equal(a[14], '4');
	assert_non_null(strchr("89ab", a[19]));
}

/* crud's document ids: version 7, the same text form, time-ordered. */
static void test_uuid_v7(void **state)
{
	char a[IDS_UUID_LEN + 1], b[IDS_UUID_LEN + 1];
	struct timespec pause = {0, 3 * 1000 * 1000};
	(void)state;

	ids_uuid_v7(a);
	nanosleep(&pause, NULL);
	ids_uuid_v7(b);
	assert_int_equal(strlen(a), 36);
	for (size_t i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23)
			assert_int_equal(a[i], '-');
		else
			assert_non_null(strchr("0123456789abcdef", a[i]));
	}
	assert_int_equal(a[14], '7');
	assert_non_null(strchr("89ab", a[19]));
	assert_true(strcmp(a, b) < 0); /* 3 ms later sorts later */
}

static void test_now_rfc3339(void **state)
{
	char now[IDS_TIME_LEN + 1];
	(void)state;

	ids_now_rfc3339(now);
	assert_int_equal(strlen(now), 24);
	assert_int_equal(now[4], '-');
	assert_int_equal(now[10], 'T');
	assert_int_equal(now[19], '.');
	assert_int_equal(now[23], 'Z');
	assert_true(strncmp(now, "2024", 4) > 0);
}

static void test_query_escapes(void **state)
{
	static const char *const good[] = {NULL,          "",         "limit=5&cursor=abc",
	                                   "q=a%2Bb%20c", "x=%ff%FF%0a", "a+b=c&&d",
	                                   "e=%41%42"};
	static const char *const bad[] = {"x=%",   "x=%4",   "x=%zz",     "x=%g1",
	                                  "x=%00", "%00=1",  "a=1&b=%2", "c=%%41"};
	char name[QUERY_NAME_MAX];
	(void)state;
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
		if (query_find_bad_escape(good[i], name, sizeof name) != 0)
			fail_msg("'%s' refused", good[i] ? good[i] : "(null)");
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (query_find_bad_escape(bad[i], name, sizeof name) == 0)
			fail_msg("'%s' accepted", bad[i]);
}

/* Which parameter: the first pair with a broken escape, its name decoded. */
/* A parameter read with evh_req_query (the first) given twice. */
static void test_query_repeated(void **state)
{
	static const char *const names[] = {"limit", "cursor", NULL};
	(void)state;
	assert_null(query_find_repeated(NULL, names));
	assert_null(query_find_repeated("limit=5&cursor=a&x=1&x=2", names)); /* x: not read so */
	assert_string_equal(query_find_repeated("limit=5&limit=abc", names), "limit");
	assert_string_equal(query_find_repeated("cursor=a&limit=1&curso%72=b", names), "cursor");
	assert_string_equal(query_find_repeated("limit&&limit=", names), "limit");
	assert_null(query_find_repeated("li%zzmit=1&limit=2", names)); /* said as an escape */
}

static void test_query_bad_escape_named(void **state)
{
	char name[8], detail[QUERY_DETAIL_MAX], longer[QUERY_NAME_MAX + 16];
	const char *field;
	(void)state;

	assert_int_equal(query_find_bad_escape("limit=5&cursor=%zz", name, sizeof name),
	                 QUERY_BAD_VALUE_ESCAPE);
	assert_string_equal(name, "cursor");
	field = query_escape_problem(QUERY_BAD_VALUE_ESCAPE, name, detail, sizeof detail);
	assert_string_equal(field, "cursor");
	assert_string_equal(detail, "the value of query parameter 'cursor' has a malformed "
	                            "percent-escape (" QUERY_ESCAPE_RULE ")");
	/* the name is decoded; the first bad pair is the one said */
	assert_int_equal(query_find_bad_escape("re%63i+p=%00&limit=%4", name, sizeof name),
	                 QUERY_BAD_VALUE_ESCAPE);
	assert_string_equal(name, "reci p");
	assert_int_equal(query_find_bad_escape("x=1&&limit=1%4", name, sizeof name),
	                 QUERY_BAD_VALUE_ESCAPE);
	assert_string_equal(name, "limit");
	/* a name's escape: no field, whatever comes after */
	assert_int_equal(query_find_bad_escape("a=1&li%zzmit=%zz", name, sizeof name),
	                 QUERY_BAD_NAME_ESCAPE);
	assert_null(query_escape_problem(QUERY_BAD_NAME_ESCAPE, name, detail, sizeof detail));
	assert_string_equal(detail, "a parameter name in the query string has a malformed "
	                            "percent-escape (" QUERY_ESCAPE_RULE ")");
	/* a name too long for the buffer, or empty: said without one */
	assert_int_equal(query_find_bad_escape("abcdefgh=%zz", name, sizeof name),
	                 QUERY_BAD_VALUE_ESCAPE);
	assert_string_equal(name, "");
	assert_null(query_escape_problem(QUERY_BAD_VALUE_ESCAPE, name, detail, sizeof detail));
	assert_string_equal(detail, "the value of a query parameter has a malformed "
	                            "percent-escape (" QUERY_ESCAPE_RULE ")");
	assert_int_equal(query_find_bad_escape("=%zz", name, sizeof name), QUERY_BAD_VALUE_ESCAPE);
	assert_null(query_escape_problem(QUERY_BAD_VALUE_ESCAPE, name, detail, sizeof detail));
	/* ...or not UTF-8: the answer is JSON */
	assert_int_equal(query_find_bad_escape("%ff=%zz", name, sizeof name),
	                 QUERY_BAD_VALUE_ESCAPE);
	assert_string_equal(name, "\xff");
	assert_null(query_escape_problem(QUERY_BAD_VALUE_ESCAPE, name, detail, sizeof detail));
	assert_string_equal(detail, "the value of a query parameter has a malformed "
	                            "percent-escape (" QUERY_ESCAPE_RULE ")");
	assert_int_equal(query_find_bad_escape("%c3%a9t%c3%a9=%zz", name, sizeof name),
	                 QUERY_BAD_VALUE_ESCAPE);
	assert_string_equal(query_escape_problem(QUERY_BAD_VALUE_ESCAPE, name, detail, sizeof detail),
	                    "\xc3\xa9t\xc3\xa9");
	/* values and names of any length are checked, not refused */
	memset(longer, 'a', sizeof longer - 1);
	longer[sizeof longer - 1] = '\0';
	assert_int_equal(query_find_bad_escape(longer, name, sizeof name), 0);
	longer[sizeof longer - 2] = '%';
	assert_int_equal(query_find_bad_escape(longer, name, sizeof name), QUERY_BAD_NAME_ESCAPE);
	/* the longest name that fits is named in full */
	memset(longer, 'n', QUERY_NAME_MAX - 1);
	strcpy(longer + QUERY_NAME_MAX - 1, "=%zz");
	{
		char big[QUERY_NAME_MAX];
		assert_int_equal(query_find_bad_escape(longer, big, sizeof big),
		                 QUERY_BAD_VALUE_ESCAPE);
		assert_int_equal(strlen(big), QUERY_NAME_MAX - 1);
		field = query_escape_problem(QUERY_BAD_VALUE_ESCAPE, big, detail, sizeof detail);
		assert_ptr_equal(field, big);
		assert_non_null(strstr(detail, QUERY_ESCAPE_RULE ")"));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_email_normalized), cmocka_unit_test(test_email_rejected),
	    cmocka_unit_test(test_name_rules),       cmocka_unit_test(test_password_rules),
	    cmocka_unit_test(test_utf8_chars),       cmocka_unit_test(test_argon2_settings),
	    cmocka_unit_test(test_argon2_memlimit_fits_the_machine),
	    cmocka_unit_test(test_hash_concurrency_times_memlimit_fits_the_machine),
	    cmocka_unit_test(test_roles),            cmocka_unit_test(test_uuid_v4),
	    cmocka_unit_test(test_uuid_v7),
	    cmocka_unit_test(test_now_rfc3339),
	    cmocka_unit_test(test_query_escapes), cmocka_unit_test(test_query_bad_escape_named),
	    cmocka_unit_test(test_query_repeated),
	};
	return cmocka_run_group_tests(tests, setup_sodium, NULL);
}
