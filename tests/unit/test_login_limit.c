/* user.so's failed-login counters (plugins/user/login_limit.c), compiled in
 * directly: no SDK calls, and the clock is an argument, so windows and
 * lockouts run on made-up milliseconds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../plugins/user/login_limit.c"

#define WINDOW_MS 60000
#define T0 1000000 /* a monotonic clock well past 0 */

static int setup(void **state)
{
	login_limit *l = malloc(sizeof *l);
	if (sodium_init() < 0 || !l || login_limit_init(l, 1024, WINDOW_MS) != 0) {
		free(l);
		return -1;
	}
	*state = l;
	return 0;
}

static int teardown(void **state)
{
	login_limit_fini(*state);
	free(*state);
	return 0;
}

static login_rule rule(login_limit *l, const char *email, unsigned max)
{
	login_rule r;
	login_limit_key(l, 'e', email, strlen(email), r.key);
	r.max = max;
	return r;
}

/* One attempt held to `rules`, settled at once with `out`: 1 when it was
 * admitted. *locked gets the rules it locked, *retry_ms the wait when
 * it was refused. */
static int try_once(login_limit *l, const login_rule *rules, size_t n, login_outcome out,
                    int64_t now, unsigned *locked, int64_t *retry_ms)
{
	size_t which;
	int64_t wait;
	unsigned lk = 0;
	int admitted = login_limit_begin(l, rules, n, now, &wait, &which) == 0;

	if (admitted)
		lk = login_limit_end(l, rules, n, out, 0, now);
	else
		assert_true(which < n);
	if (locked)
		*locked = lk;
	if (retry_ms)
		*retry_ms = admitted ? 0 : wait;
	return admitted;
}

static int failed(login_limit *l, const login_rule *r, int64_t now)
{
	return try_once(l, r, 1, LOGIN_FAILED, now, NULL, NULL);
}

static void test_locked_after_max_failures_for_the_window(void **state)
{
	login_limit *l = *state;
	login_rule ada = rule(l, "ada@example.com", 3), bob = rule(l, "bob@example.com", 3);
	unsigned locked;
	int64_t wait;

	assert_true(try_once(l, &ada, 1, LOGIN_FAILED, T0, &locked, NULL));
	assert_int_equal(locked, 0);
	assert_true(failed(l, &ada, T0 + 10));
	assert_true(try_once(l, &ada, 1, LOGIN_FAILED, T0 + 20, &locked, NULL));
	assert_int_equal(locked, 1); /* the third failure locks, once */
	/* refused, a right password too (the outcome is never asked for) */
	assert_false(try_once(l, &ada, 1, LOGIN_SUCCEEDED, T0 + 1020, NULL, &wait));
	assert_int_equal(wait, WINDOW_MS - 1000);
	/* another account is not held */
	assert_true(try_once(l, &bob, 1, LOGIN_SUCCEEDED, T0 + 1030, NULL, NULL));
	assert_false(failed(l, &ada, T0 + 20 + WINDOW_MS - 1));
	/* the lock runs out and takes the failures with it */
	assert_true(failed(l, &ada, T0 + 20 + WINDOW_MS));
	assert_true(failed(l, &ada, T0 + 21 + WINDOW_MS));
	assert_true(try_once(l, &ada, 1, LOGIN_SUCCEEDED, T0 + 22 + WINDOW_MS, NULL, NULL));
}

static void test_failures_older_than_the_window_are_forgotten(void **state)
{
	login_limit *l = *state;
	login_rule r = rule(l, "slow@example.com", 3);

	assert_true(failed(l, &r, T0));
	assert_true(failed(l, &r, T0 + 1));
	/* the window counts from the first failure */
	assert_true(failed(l, &r, T0 + WINDOW_MS));
	assert_true(failed(l, &r, T0 + WINDOW_MS + 1));
	assert_true(failed(l, &r, T0 + WINDOW_MS + 2)); /* the third of this window */
	assert_false(failed(l, &r, T0 + WINDOW_MS + 3));
}

static void test_success_resets_only_the_account(void **state)
{
	login_limit *l = *state;
	login_rule rules[2] = {rule(l, "eve@example.com", 3), rule(l, "address", 4)};
	unsigned locked;

	assert_true(try_once(l, rules, 2, LOGIN_FAILED, T0, NULL, NULL));
	assert_true(try_once(l, rules, 2, LOGIN_FAILED, T0 + 1, NULL, NULL));
	assert_true(try_once(l, rules, 2, LOGIN_SUCCEEDED, T0 + 2, NULL, NULL)); /* resets rule 0 */
	assert_true(try_once(l, rules, 2, LOGIN_FAILED, T0 + 3, NULL, NULL));
	/* the address has its four failures now, the account two since the
	 * success: the address alone is locked */
	assert_true(try_once(l, rules, 2, LOGIN_FAILED, T0 + 4, &locked, NULL));
	assert_int_equal(locked, 2);
	assert_false(try_once(l, rules, 2, LOGIN_SUCCEEDED, T0 + 5, NULL, NULL));
	assert_true(try_once(l, &rules[0], 1, LOGIN_FAILED, T0 + 6, &locked, NULL));
	assert_int_equal(locked, 1);
}

static void test_undecided_and_unlimited_count_nothing(void **state)
{
	login_limit *l = *state;
	login_rule r = rule(l, "busy@example.com", 2), free_rule = rule(l, "free@example.com", 0);

	for (int i = 0; i < 10; i++) {
		assert_true(try_once(l, &r, 1, LOGIN_UNDECIDED, T0 + i, NULL, NULL));
		assert_true(failed(l, &free_rule, T0 + i));
	}
	assert_true(failed(l, &r, T0 + 20));
	assert_true(failed(l, &r, T0 + 21));
	assert_false(failed(l, &r, T0 + 22));
}

/* Attempts being checked count: `max` of them at once, the next refused
 * (as busy: none failed) until one is settled. */
static void test_attempts_in_progress_count(void **state)
{
	login_limit *l = *state;
	login_rule r = rule(l, "burst@example.com", 3);
	int64_t wait;
	size_t which;

	for (int i = 0; i < 3; i++)
		assert_int_equal(login_limit_begin(l, &r, 1, T0, &wait, &which), LOGIN_ADMITTED);
	assert_int_equal(login_limit_begin(l, &r, 1, T0, &wait, &which), LOGIN_BUSY);
	assert_int_equal(wait, LOGIN_PENDING_RETRY_MS);
	assert_int_equal(which, 0);
	assert_int_equal(login_limit_end(l, &r, 1, LOGIN_UNDECIDED, 1, T0), 0);
	assert_int_equal(login_limit_begin(l, &r, 1, T0, &wait, &which), 0);
	assert_int_equal(login_limit_end(l, &r, 1, LOGIN_FAILED, 1, T0), 0);
	assert_int_equal(login_limit_end(l, &r, 1, LOGIN_FAILED, 1, T0), 0);
	assert_int_equal(login_limit_end(l, &r, 1, LOGIN_FAILED, 1, T0), 1);
	assert_int_equal(login_limit_begin(l, &r, 1, T0 + 1, &wait, &which), LOGIN_LOCKED);
	assert_int_equal(wait, WINDOW_MS - 1);
}

/* Right passwords sent at once are refused as busy, never as locked, and
 * the burst is bounded as one of wrong ones: `max` admitted, whatever the
 * outcome. A lock in force is said as a lock even when another rule is
 * only busy, and the longest wait is the one to keep. */
static void test_busy_is_told_from_locked(void **state)
{
	login_limit *l = *state;
	login_rule both[2] = {rule(l, "right@example.com", 2), rule(l, "busy@example.com", 2)};
	login_rule acct = both[0];
	int64_t wait;
	size_t which;
	int admitted = 0;

	for (int i = 0; i < 10; i++) {
		login_admission a = login_limit_begin(l, &acct, 1, T0, &wait, &which);
		assert_true(a == LOGIN_ADMITTED || a == LOGIN_BUSY);
		admitted += a == LOGIN_ADMITTED;
	}
	assert_int_equal(admitted, 2);
	login_limit_end(l, &acct, 1, LOGIN_SUCCEEDED, 0, T0);
	login_limit_end(l, &acct, 1, LOGIN_SUCCEEDED, 0, T0);
	assert_int_equal(login_limit_begin(l, &acct, 1, T0, &wait, &which), LOGIN_ADMITTED);
	login_limit_end(l, &acct, 1, LOGIN_FAILED, 1, T0);
	assert_int_equal(login_limit_begin(l, &acct, 1, T0, &wait, &which), LOGIN_ADMITTED);
	assert_int_equal(login_limit_end(l, &acct, 1, LOGIN_FAILED, 1, T0), 1);
	/* rule 0 locked, rule 1 busy (two attempts in progress) */
	assert_int_equal(login_limit_begin(l, &both[1], 1, T0, &wait, &which), LOGIN_ADMITTED);
	assert_int_equal(login_limit_begin(l, &both[1], 1, T0, &wait, &which), LOGIN_ADMITTED);
	assert_int_equal(login_limit_begin(l, both, 2, T0 + WINDOW_MS - 10, &wait, &which),
	                 LOGIN_LOCKED);
	assert_int_equal(which, 0);
	assert_int_equal(wait, LOGIN_PENDING_RETRY_MS);
	assert_int_equal(login_limit_begin(l, &both[1], 1, T0, &wait, &which), LOGIN_BUSY);
	assert_int_equal(which, 0);
}

/* One bucket of 8: many emails with a failure each push each other out,
 * not a lock nor a count close to one. */
static void test_spraying_evicts_the_least_worth(void **state)
{
	login_limit small;
	login_rule victim, near, other;
	char email[64];
	(void)state;

	assert_int_equal(login_limit_init(&small, 1, WINDOW_MS), 0);
	assert_int_equal(small.nbuckets, 1);
	victim = rule(&small, "victim@example.com", 3);
	near = rule(&small, "near@example.com", 3);
	for (int i = 0; i < 3; i++)
		assert_true(failed(&small, &victim, T0 + i));
	assert_true(failed(&small, &near, T0 + 3));
	assert_true(failed(&small, &near, T0 + 4));
	for (int i = 0; i < 1000; i++) {
		snprintf(email, sizeof email, "spray%d@example.com", i);
		other = rule(&small, email, 3);
		assert_true(failed(&small, &other, T0 + 10 + i));
	}
	assert_false(failed(&small, &victim, T0 + 2000));
	assert_true(failed(&small, &near, T0 + 2001)); /* its third */
	assert_false(failed(&small, &near, T0 + 2002));
	login_limit_fini(&small);
}

/* A bucket whose every slot has an attempt in progress refuses a new key
 * for a second, and gives back what that attempt had reserved. */
static void test_a_bucket_full_of_attempts_refuses(void **state)
{
	login_limit small;
	login_rule busy[LOGIN_WAYS], both[2];
	char email[64];
	int64_t wait;
	size_t which;
	(void)state;

	assert_int_equal(login_limit_init(&small, 1, WINDOW_MS), 0);
	for (int i = 0; i < LOGIN_WAYS; i++) {
		snprintf(email, sizeof email, "busy%d@example.com", i);
		busy[i] = rule(&small, email, 5);
		assert_int_equal(login_limit_begin(&small, &busy[i], 1, T0, &wait, &which), 0);
	}
	/* busy[0] is there already: admitted; the new key is not, and busy[0]'s
	 * reservation is given back */
	both[0] = busy[0];
	both[1] = rule(&small, "new@example.com", 5);
	assert_int_equal(login_limit_begin(&small, both, 2, T0, &wait, &which), LOGIN_BUSY);
	assert_int_equal(wait, LOGIN_PENDING_RETRY_MS);
	assert_int_equal(which, 1);
	for (int i = 0; i < LOGIN_WAYS; i++)
		login_limit_end(&small, &busy[i], 1, LOGIN_UNDECIDED, 1, T0);
	for (int i = 0; i < LOGIN_WAYS; i++)
		assert_true(slot_free(&small.slots[i]));
	assert_int_equal(login_limit_begin(&small, both, 2, T0, &wait, &which), 0);
	login_limit_fini(&small);
}

static void test_address_keys(void **state)
{
	login_limit *l = *state;
	unsigned char a[LOGIN_KEY_BYTES], b[LOGIN_KEY_BYTES];

	/* one IPv6 /64 is one key */
	login_limit_addr_key(l, "2001:db8:1:2::7", a);
	login_limit_addr_key(l, "2001:db8:1:2:ffff:1:2:3", b);
	assert_memory_equal(a, b, sizeof a);
	login_limit_addr_key(l, "2001:db8:1:3::7", b);
	assert_memory_not_equal(a, b, sizeof a);
	/* IPv4, mapped or not; each address its own */
	login_limit_addr_key(l, "192.0.2.7", a);
	login_limit_addr_key(l, "::ffff:192.0.2.7", b);
	assert_memory_equal(a, b, sizeof a);
	login_limit_addr_key(l, "192.0.2.8", b);
	assert_memory_not_equal(a, b, sizeof a);
	/* the same bytes as an email are another key */
	login_limit_key(l, 'e', "192.0.2.7", 9, b);
	login_limit_addr_key(l, "192.0.2.7", a);
	assert_memory_not_equal(a, b, sizeof a);
	login_limit_addr_key(l, "not an address", a);
	login_limit_addr_key(l, "not an address!", b);
	assert_memory_not_equal(a, b, sizeof a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_locked_after_max_failures_for_the_window, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_failures_older_than_the_window_are_forgotten,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_success_resets_only_the_account, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_undecided_and_unlimited_count_nothing, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_attempts_in_progress_count, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_busy_is_told_from_locked, setup, teardown),
	    cmocka_unit_test(test_spraying_evicts_the_least_worth),
	    cmocka_unit_test(test_a_bucket_full_of_attempts_refuses),
	    cmocka_unit_test_setup_teardown(test_address_keys, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
