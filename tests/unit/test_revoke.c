/* revoke.c: sign-outs in a real SQLite file, kept across a reopen until
 * they lapse, and the reasons a host's own token is refused. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db_files.h"
#include "jwt.h"
#include "revoke.h"

#define T0 1700000000000LL /* ms */
#define DAY_MS 86400000LL

typedef struct fixture {
	char dir[64], path[128];
	revocations *r;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	char err[256];
	if (!f)
		return -1;
	snprintf(f->dir, sizeof f->dir, "/tmp/evh-revoke.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof f->path, "%s/" REVOCATIONS_FILE, f->dir);
	if (revocations_open(&f->r, f->path, T0, err, sizeof err) != 0) {
		fprintf(stderr, "%s\n", err);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	revocations_close(f->r);
	remove_db_files(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void reopen(fixture *f, int64_t now_ms)
{
	char err[256];
	revocations_close(f->r);
	f->r = NULL;
	assert_int_equal(revocations_open(&f->r, f->path, now_ms, err, sizeof err), 0);
}

static jwt_claims own_token(const char *sub, int64_t iat_ms, int64_t ttl_s)
{
	jwt_claims c;
	memset(&c, 0, sizeof c);
	snprintf(c.sub, sizeof c.sub, "%s", sub);
	c.iat_ms = iat_ms;
	c.iat = iat_ms / 1000;
	c.exp = c.iat + ttl_s;
	return c;
}

static void test_sign_out_and_restart(void **state)
{
	fixture *f = *state;
	char err[256];
	assert_int_equal(revocations_since(f->r, "u-1", T0), 0);
	assert_int_equal(revocations_add(f->r, "u-1", T0 + 500, T0 + DAY_MS, err, sizeof err), 0);
	assert_int_equal(revocations_since(f->r, "u-1", T0 + 600), T0 + 500);
	assert_int_equal(revocations_since(f->r, "u-2", T0 + 600), 0);
	/* A later sign-out moves the moment; an earlier one does not. */
	assert_int_equal(revocations_add(f->r, "u-1", T0 + 900, T0 + DAY_MS, err, sizeof err), 0);
	assert_int_equal(revocations_add(f->r, "u-1", T0 + 700, T0 + DAY_MS, err, sizeof err), 0);
	assert_int_equal(revocations_since(f->r, "u-1", T0 + 1000), T0 + 900);
	/* Kept across a restart, until it lapses. */
	reopen(f, T0 + 2000);
	assert_int_equal(revocations_count(f->r), 1);
	assert_int_equal(revocations_since(f->r, "u-1", T0 + 2000), T0 + 900);
	assert_int_equal(revocations_since(f->r, "u-1", T0 + DAY_MS), 0);
	reopen(f, T0 + DAY_MS);
	assert_int_equal(revocations_count(f->r), 0);
}

/* Many subjects: the table grows, every one is found; lapsed ones go. */
static void test_many_and_pruned(void **state)
{
	fixture *f = *state;
	char err[256], sub[32];
	for (int i = 0; i < 3000; i++) {
		snprintf(sub, sizeof sub, "user-%d", i);
		assert_int_equal(revocations_add(f->r, sub, T0 + i, T0 + (i < 1000 ? 5000 : DAY_MS),
		                                 err, sizeof err),
		                 0);
	}
	assert_int_equal(revocations_count(f->r), 3000);
	for (int i = 0; i < 3000; i++) {
		snprintf(sub, sizeof sub, "user-%d", i);
		assert_int_equal(revocations_since(f->r, sub, T0 + 4000), T0 + i);
	}
	/* A minute on, the next sign-out drops the lapsed ones, on disk too. */
	assert_int_equal(revocations_add(f->r, "late", T0 + 70000, T0 + DAY_MS, err, sizeof err), 0);
	assert_int_equal(revocations_count(f->r), 2001);
	assert_int_equal(revocations_since(f->r, "user-5", T0 + 70000), 0);
	assert_int_equal(revocations_since(f->r, "user-2999", T0 + 70000), T0 + 2999);
	reopen(f, T0 + 70001);
	assert_int_equal(revocations_count(f->r), 2001);
}

static void test_refuse_reasons(void **state)
{
	fixture *f = *state;
	char err[256];
	jwt_claims c = own_token("u-1", T0, 3600);
	assert_null(revocations_refuse(f->r, &c, 30 * 86400, T0 + 10));
	assert_null(revocations_refuse(NULL, &c, 30 * 86400, T0 + 10));
	/* Longer than token_ttl_max. */
	assert_ptr_equal(revocations_refuse(f->r, &c, 3599, T0 + 10), revoke_reason_too_long);
	assert_null(revocations_refuse(f->r, &c, 3600, T0 + 10));
	/* No issue time. */
	c.iat_ms = -1;
	assert_ptr_equal(revocations_refuse(f->r, &c, 30 * 86400, T0 + 10), revoke_reason_no_iat);
	/* Signed out after it was signed: refused; a token signed after the
	 * sign-out, even in the same second, is good. */
	c = own_token("u-1", T0 + 100, 3600);
	assert_int_equal(revocations_add(f->r, "u-1", T0 + 200, T0 + DAY_MS, err, sizeof err), 0);
	assert_ptr_equal(revocations_refuse(f->r, &c, 30 * 86400, T0 + 300), revoke_reason_revoked);
	c = own_token("u-1", T0 + 201, 3600);
	assert_null(revocations_refuse(f->r, &c, 30 * 86400, T0 + 300));
	/* Signed in the sign-out's very millisecond, maybe just before it and
	 * handed out: refused. A token signed after it in that millisecond is
	 * given the next one, and is good. */
	c = own_token("u-1", T0 + 200, 3600);
	assert_ptr_equal(revocations_refuse(f->r, &c, 30 * 86400, T0 + 200), revoke_reason_revoked);
	assert_int_equal(revocations_sign_ms(f->r, "u-1", T0 + 200), T0 + 201);
	assert_int_equal(revocations_sign_ms(f->r, "u-1", T0 + 150), T0 + 201); /* clock back */
	assert_int_equal(revocations_sign_ms(f->r, "u-1", T0 + 250), T0 + 250);
	assert_int_equal(revocations_sign_ms(f->r, "u-2", T0 + 200), T0 + 200);
	assert_int_equal(revocations_sign_ms(NULL, "u-1", T0 + 200), T0 + 200);
	c = own_token("u-1", revocations_sign_ms(f->r, "u-1", T0 + 200), 3600);
	assert_null(revocations_refuse(f->r, &c, 30 * 86400, T0 + 200));
	c = own_token("u-2", T0 + 100, 3600);
	assert_null(revocations_refuse(f->r, &c, 30 * 86400, T0 + 300));
	/* Another issuer's tokens are not this host's to refuse. */
	c = own_token("u-1", T0 + 100, 3600);
	c.foreign = 1;
	c.iat_ms = -1;
	assert_null(revocations_refuse(f->r, &c, 60, T0 + 300));
}

/* A token signed while the clock ran ahead, the clock then set back: a
 * sign-out made after it still refuses it (it is no earlier than the
 * latest token signed), and a token signed after the sign-out is good. */
static void test_clock_set_back(void **state)
{
	fixture *f = *state;
	char err[256];
	int64_t ahead = revocations_sign_ms(f->r, "u-1", T0 + 20000), after;
	jwt_claims c = own_token("u-1", ahead, 3600);
	assert_int_equal(ahead, T0 + 20000);
	assert_int_equal(revocations_add(f->r, "u-1", T0 + 100, T0 + DAY_MS, err, sizeof err), 0);
	assert_ptr_equal(revocations_refuse(f->r, &c, 30 * 86400, T0 + 200), revoke_reason_revoked);
	after = revocations_sign_ms(f->r, "u-1", T0 + 300);
	assert_true(after > ahead);
	c = own_token("u-1", after, 3600);
	assert_null(revocations_refuse(f->r, &c, 30 * 86400, T0 + 400));
}

/* A sign-out's end is reckoned from now (the longest token life ever, past
 * now): a token signed while the clock ran 20 s ahead lives 20 s past that,
 * and the sign-out must hold until it ends. */
static void test_clock_set_back_sign_out_outlives_the_token(void **state)
{
	fixture *f = *state;
	char err[256];
	int64_t ahead = revocations_sign_ms(f->r, "u-2", T0 + 20000);
	jwt_claims c = own_token("u-2", ahead, 3600); /* ends at T0 + 20 s + 1 h */
	int64_t until = revocation_until(T0 + 100, 3600, 30);
	assert_int_equal(revocations_add(f->r, "u-2", T0 + 100, until, err, sizeof err), 0);
	/* Past the end reckoned from now, before the token's own. */
	assert_ptr_equal(revocations_refuse(f->r, &c, 30 * 86400, until + 10000),
	                 revoke_reason_revoked);
	reopen(f, until + 10000); /* kept on disk as long */
	assert_ptr_equal(revocations_refuse(f->r, &c, 30 * 86400, until + 10000),
	                 revoke_reason_revoked);
}

static const unsigned char own_secret[] = "0123456789abcdef0123456789abcdef";

/* How the host takes `sub`'s token signed at `iat_ms`, at `now_ms`: its
 * signature and times (jwt.c, with the moment no token was signed after),
 * then its sign-outs. NULL: taken; else the reason. */
static const char *take_own(revocations *r, const char *sub, int64_t iat_ms, int64_t now_ms)
{
	jwt_keys k = {.secret = own_secret,
	              .secret_len = sizeof own_secret - 1,
	              .signed_ms = revocations_last_signed(r)};
	const char *why = NULL;
	char *tok = NULL;
	jwt_claims c;
	int rc;
	assert_int_equal(
	    jwt_sign(sub, NULL, 0, iat_ms, 3600, NULL, own_secret, sizeof own_secret - 1, &tok), 0);
	rc = jwt_verify_keys(tok, &k, now_ms / 1000, 30, &c, &why, NULL);
	free(tok);
	return rc == 0 ? revocations_refuse(r, &c, 30 * 86400, now_ms) : why;
}

/* X logs in while the clock runs a minute ahead (past the 30 s leeway), and
 * the clock is set back. Y's sign-out is after X's token (every sign-out is
 * after every token signed), so Y's next login is stamped past it too: that
 * token is taken, not refused as issued in the future (this host signed
 * it), and so is X's own after X signs out. A token signed later than any
 * this host signed is still refused. */
static void test_a_login_after_the_clock_was_set_back_past_the_leeway(void **state)
{
	fixture *f = *state;
	char err[256];
	int64_t now = T0 + 1000, x = revocations_sign_ms(f->r, "x", T0 + 60000), y;
	assert_int_equal(x, T0 + 60000);
	assert_null(take_own(f->r, "x", x, now));
	assert_int_equal(revocations_add(f->r, "y", now, T0 + DAY_MS, err, sizeof err), 0);
	assert_ptr_equal(take_own(f->r, "y", T0 + 500, now), revoke_reason_revoked);
	y = revocations_sign_ms(f->r, "y", now + 100);
	assert_true(y > x);
	assert_null(take_own(f->r, "y", y, now + 200));
	assert_null(take_own(f->r, "x", x, now + 200)); /* not signed out */
	assert_int_equal(revocations_add(f->r, "x", now + 300, T0 + DAY_MS, err, sizeof err), 0);
	assert_ptr_equal(take_own(f->r, "x", x, now + 400), revoke_reason_revoked);
	assert_null(take_own(f->r, "x", revocations_sign_ms(f->r, "x", now + 400), now + 500));
	assert_string_equal(take_own(f->r, "x", revocations_last_signed(f->r) + 1000, now + 500),
	                    "token issued in the future (iat)");
}

/* The moment the file keeps no token was signed after (meta signed_ms). */
static int64_t file_signed_ms(const char *path)
{
	return db_file_int(path, "SELECT value FROM meta WHERE name = 'signed_ms'");
}

/* Z logs in while the clock runs 10 minutes ahead; the clock is put right
 * and evhostd restarts, or crashes (the file is opened again without the
 * first handle being closed). Z's sign-out then refuses that token, at once
 * and once the clock has caught up with it, and the login after it is
 * good. The moment is written 10 s ahead, once per 10 s of signing, not at
 * every login. */
static void test_a_sign_out_after_a_restart_refuses_a_token_signed_ahead(void **state)
{
	fixture *f = *state;
	char err[256];
	revocations *again = NULL;
	int64_t ahead = revocations_sign_ms(f->r, "z", T0 + 600000), now = T0 + 1000, after;
	assert_int_equal(revocations_open(&again, f->path, now, err, sizeof err), 0);
	revocations_close(f->r);
	f->r = again;
	assert_true(revocations_last_signed(f->r) >= ahead);
	assert_int_equal(revocations_add(f->r, "z", now, revocation_until(now, 3600, 30), err,
	                                 sizeof err),
	                 0);
	assert_ptr_equal(take_own(f->r, "z", ahead, now), revoke_reason_revoked);
	assert_ptr_equal(take_own(f->r, "z", ahead, ahead + 5000), revoke_reason_revoked);
	after = revocations_sign_ms(f->r, "z", now + 100);
	assert_null(take_own(f->r, "z", after, now + 200));
	/* Written 10 s ahead: not again for a login a few seconds on. */
	assert_int_equal(file_signed_ms(f->path), after + 10000);
	assert_int_equal(revocations_sign_ms(f->r, "w", after + 2000), after + 2000);
	assert_int_equal(file_signed_ms(f->path), after + 10000);
	assert_int_equal(revocations_sign_ms(f->r, "w", after + 20000), after + 20000);
	assert_int_equal(file_signed_ms(f->path), after + 30000);
	reopen(f, now);
	assert_true(revocations_last_signed(f->r) >= after + 20000);
}

/* The longest token_ttl_max ever noted is kept, across a restart: lowered
 * and raised again, it would otherwise let a sign-out lapse before a token
 * signed under the higher value. */
static void test_ttl_high_water(void **state)
{
	fixture *f = *state;
	char err[256];
	assert_int_equal(revocations_ttl_high(f->r), 0);
	assert_int_equal(revocations_note_ttl(f->r, 90 * 86400, err, sizeof err), 0);
	assert_int_equal(revocations_note_ttl(f->r, 30 * 86400, err, sizeof err), 0);
	assert_int_equal(revocations_ttl_high(f->r), 90 * 86400);
	reopen(f, T0);
	assert_int_equal(revocations_ttl_high(f->r), 90 * 86400);
	assert_int_equal(revocations_note_ttl(f->r, 100 * 86400, err, sizeof err), 0);
	reopen(f, T0);
	assert_int_equal(revocations_ttl_high(f->r), 100 * 86400);
}

/* The file held by another writer past the busy timeout (5 s): the
 * sign-out is refused with the reason, yet in force until the process
 * ends; a raised token_ttl_max is held in memory, not on disk. Both are
 * written once the file is free. */
static void test_write_refused(void **state)
{
	fixture *f = *state;
	char err[256] = "";
	sqlite3 *db;
	assert_int_equal(revocations_note_ttl(f->r, 30 * 86400, err, sizeof err), 0);
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
	assert_int_equal(revocations_add(f->r, "u-1", T0 + 500, T0 + DAY_MS, err, sizeof err), -1);
	assert_non_null(strstr(err, "cannot write it: "));
	assert_non_null(strstr(err, "locked"));
	assert_int_equal(revocations_since(f->r, "u-1", T0 + 600), T0 + 500);
	err[0] = '\0';
	assert_int_equal(revocations_note_ttl(f->r, 90 * 86400, err, sizeof err), -1);
	assert_non_null(strstr(err, "locked"));
	assert_int_equal(revocations_ttl_high(f->r), 90 * 86400);
	assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	/* Neither reached the file. */
	reopen(f, T0 + 1000);
	assert_int_equal(revocations_since(f->r, "u-1", T0 + 1000), 0);
	assert_int_equal(revocations_ttl_high(f->r), 30 * 86400);
	assert_int_equal(revocations_add(f->r, "u-1", T0 + 1500, T0 + DAY_MS, err, sizeof err), 0);
	assert_int_equal(revocations_note_ttl(f->r, 90 * 86400, err, sizeof err), 0);
	reopen(f, T0 + 2000);
	assert_int_equal(revocations_since(f->r, "u-1", T0 + 2000), T0 + 1500);
	assert_int_equal(revocations_ttl_high(f->r), 90 * 86400);
}

/* A file that cannot be used says so, with its path. */
static void test_bad_files(void **state)
{
	fixture *f = *state;
	char err[512], path[160];
	revocations *r = NULL;
	sqlite3 *db;
	FILE *fp;

	/* A newer evhostd's format. */
	revocations_close(f->r);
	f->r = NULL;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 7", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	assert_int_equal(revocations_open(&r, f->path, T0, err, sizeof err), -1);
	assert_null(r);
	assert_non_null(strstr(err, f->path));
	assert_non_null(strstr(err, "written by a newer evhostd (format 7"));
	/* Not a database. */
	snprintf(path, sizeof path, "%s/junk.db", f->dir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fputs("this is not an SQLite database, but it is long enough to look at its header\n",
	      fp);
	fclose(fp);
	assert_int_equal(revocations_open(&r, path, T0, err, sizeof err), -1);
	assert_non_null(strstr(err, "junk.db: "));
	remove_db_files(path);
	/* A directory that is not there. */
	snprintf(path, sizeof path, "%s/missing/x.db", f->dir);
	assert_int_equal(revocations_open(&r, path, T0, err, sizeof err), -1);
	assert_non_null(strstr(err, "cannot open it"));
	/* Back to a good file for teardown. */
	remove_db_files(f->path);
	reopen(f, T0);
}

/* A file of format 1 written before that format had its meta table (builds
 * of early December 2026): opened, its sign-outs kept, given the table.
 * It stopped the daemon's start ("no such table: meta"), advising to move
 * the file away, sign-outs and all. */
static void test_a_format_1_file_without_meta(void **state)
{
	fixture *f = *state;
	char err[256];
	sqlite3 *db;
	revocations_close(f->r);
	f->r = NULL;
	remove_db_files(f->path);
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db,
	                              "CREATE TABLE revoked (subject TEXT PRIMARY KEY NOT NULL,"
	                              " since_ms INTEGER NOT NULL, until_ms INTEGER NOT NULL)"
	                              " WITHOUT ROWID;"
	                              "INSERT INTO revoked VALUES ('u-1', 1700000000500, 1700086400000);"
	                              "PRAGMA user_version = 1",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
	if (revocations_open(&f->r, f->path, T0 + 1000, err, sizeof err) != 0)
		fail_msg("%s", err);
	assert_int_equal(revocations_since(f->r, "u-1", T0 + 1000), T0 + 500);
	assert_int_equal(revocations_add(f->r, "u-2", T0 + 1500, T0 + DAY_MS, err, sizeof err), 0);
	reopen(f, T0 + 2000);
	assert_int_equal(revocations_count(f->r), 2);
}

/* A sign-out outlasts every token signed before it: one signed early in a
 * second with the longest lifetime, signed out late in that second, is
 * refused at each moment jwt_verify still takes it (through the whole
 * second exp + leeway); a second less was the old bound's, whose last
 * 0.8 s let it in again. */
static void test_a_sign_out_outlasts_the_tokens_signed_before_it(void **state)
{
	enum { TTL = 3600, LEEWAY = 30 };
	static const unsigned char secret[] = "0123456789abcdef0123456789abcdef";
	int64_t signed_ms = 1000000100, out_ms = 1000000900, last = 0;
	int64_t until = revocation_until(out_ms, TTL, LEEWAY);
	char *tok = NULL;
	jwt_claims c;
	const char *why;
	(void)state;
	assert_int_equal(jwt_sign("ada", NULL, 0, signed_ms, TTL, NULL, secret, sizeof secret - 1,
	                          &tok),
	                 0);
	for (int64_t s = signed_ms / 1000; s <= signed_ms / 1000 + TTL + LEEWAY + 2; s++)
		if (jwt_verify(tok, secret, sizeof secret - 1, NULL, s, LEEWAY, &c, &why) == 0)
			last = s;
	free(tok);
	assert_int_equal(last, signed_ms / 1000 + TTL + LEEWAY);
	assert_true(until > last * 1000 + 999);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_sign_out_and_restart, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_many_and_pruned, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refuse_reasons, setup, teardown),
	    cmocka_unit_test(test_a_sign_out_outlasts_the_tokens_signed_before_it),
	    cmocka_unit_test_setup_teardown(test_ttl_high_water, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clock_set_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_clock_set_back_sign_out_outlives_the_token, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_a_login_after_the_clock_was_set_back_past_the_leeway,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(
	        test_a_sign_out_after_a_restart_refuses_a_token_signed_ahead, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_files, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_a_format_1_file_without_meta, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_refused, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
