/* [auth]'s key sets across reloads (host.c): a reload that changes the keys
 * frees the set it replaces once no reader holds it, its key zeroed; a
 * reader holding a set across reloads keeps it whole. A real host
 * (host_configure, host_start with Kafka embedded, host_reload), readers on
 * threads of their own taking the set as the HTTP workers do. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host.h"
#include "log.h"
#include "test_files.h"

#define READERS 4
#ifdef EVHOST_TEST_SANITIZED
#define RELOADS 20
#else
#define RELOADS 60
#endif
#define KEY_PREFIX "auth-keys-unit-test-key-"

typedef struct fixture {
	host h;
	char dir[64];
	int base; /* sets live before the host started */
	atomic_int stop;
	atomic_int torn;     /* a reader found a set not whole (freed under it) */
	atomic_int max_live; /* the most sets live a reader saw */
	atomic_long reads;
} fixture;

/* A key of 40 bytes, told apart by n. */
static void write_key(fixture *f, int n)
{
	char key[64];
	snprintf(key, sizeof key, KEY_PREFIX "%016d\n", n);
	test_write_file(f->dir, "jwt.key", key, 0600);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	char text[1024], sub[128];
	diag d = {0};
	assert_non_null(f);
	test_make_dir(f->dir, sizeof f->dir, "auth-keys");
	snprintf(sub, sizeof sub, "%s/state", f->dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	write_key(f, 0);
	snprintf(text, sizeof text,
	         "[host]\nplugin_dir = %s\nstate_dir = %s/state\n"
	         "[http]\nlisten = 127.0.0.1:0\n" /* not asked: any free port */
	         "[kafka]\nbrokers = embedded\n"
	         "[auth]\njwt_secret_file = %s/jwt.key\n"
	         "[log]\nlevel = error\nformat = text\n",
	         f->dir, f->dir, f->dir);
	test_write_file(f->dir, "evhost.conf", text, 0600);
	snprintf(sub, sizeof sub, "%s/evhost.conf", f->dir);
	f->base = host_auth_keysets_live();
	if (host_configure(&f->h, sub, &d) != 0) {
		diag_print(&d, stderr);
		fail_msg("host_configure failed");
	}
	diag_free(&d);
	log_setup(f->h.set.log_level, f->h.set.log_fmt);
	assert_int_equal(host_start(&f->h), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	host_stop(&f->h);
	assert_int_equal(host_auth_keysets_live(), f->base);
	test_remove_tree(f->dir);
	free(f);
	return 0;
}

/* The set's key as write_key wrote it (a freed set would not be). */
static void assert_whole(const auth_keyset *k)
{
	assert_non_null(k);
	assert_int_equal(k->len, strlen(KEY_PREFIX) + 16);
	assert_memory_equal(k->secret, KEY_PREFIX, strlen(KEY_PREFIX));
}

/* Reload after a new key; the reload must take it. */
static void rotate(fixture *f, int n)
{
	write_key(f, n);
	assert_int_equal(host_reload(&f->h), 0);
}

/* Takes the set as a request does, reads it through, lets go. */
static void *reader(void *arg)
{
	fixture *f = arg;
	while (!atomic_load(&f->stop)) {
		const auth_keyset *k = host_auth_acquire(&f->h);
		int live = host_auth_keysets_live() - f->base, seen = atomic_load(&f->max_live);
		unsigned sum = 0;
		for (size_t i = 0; i < k->len; i++)
			sum += k->secret[i];
		/* cmocka's asserts are for the test's thread: noted, asserted there */
		if (!sum || k->len != strlen(KEY_PREFIX) + 16 ||
		    memcmp(k->secret, KEY_PREFIX, strlen(KEY_PREFIX)) != 0)
			atomic_store(&f->torn, 1);
		while (live > seen && !atomic_compare_exchange_weak(&f->max_live, &seen, live))
			;
		host_auth_release(k);
		atomic_fetch_add(&f->reads, 1);
	}
	return NULL;
}

/* Reload after reload with readers taking the set all along: the sets live
 * are the current one and at most one per reader (until 2026-12-05 every
 * replaced set was kept until exit: RELOADS + 1 of them). */
static void test_replaced_sets_are_freed_while_readers_take_them(void **state)
{
	fixture *f = *state;
	pthread_t t[READERS];
	const auth_keyset *k;
	char last[64];
	int reloaded = 0, most = 0;
	assert_int_equal(host_auth_keysets_live() - f->base, 1);
	for (int i = 0; i < READERS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, reader, f), 0);
	/* Asserted once the readers stopped: a failure leaves no thread behind. */
	for (int n = 1; n <= RELOADS && reloaded == n - 1; n++) {
		write_key(f, n);
		if (host_reload(&f->h) == 0)
			reloaded = n;
		if (host_auth_keysets_live() - f->base > most)
			most = host_auth_keysets_live() - f->base;
	}
	atomic_store(&f->stop, 1);
	for (int i = 0; i < READERS; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_int_equal(reloaded, RELOADS);
	assert_in_range(most, 1, 1 + READERS);
	assert_false(atomic_load(&f->torn));
	assert_true(atomic_load(&f->reads) > 0);
	assert_in_range(atomic_load(&f->max_live), 1, 1 + READERS);
	assert_int_equal(host_auth_keysets_live() - f->base, 1);
	k = host_auth_acquire(&f->h);
	assert_whole(k);
	snprintf(last, sizeof last, KEY_PREFIX "%016d", RELOADS);
	assert_memory_equal(k->secret, last, k->len);
	host_auth_release(k);
}

/* A set held across reloads stays whole until let go, then is freed; one
 * not held is freed by the reload itself. A reload that changes nothing
 * keeps the set. */
static void test_a_held_set_outlives_its_reloads_until_let_go(void **state)
{
	fixture *f = *state;
	const auth_keyset *held = host_auth_acquire(&f->h), *k;
	assert_whole(held);
	rotate(f, 1);
	rotate(f, 2);
	assert_int_equal(host_auth_keysets_live() - f->base, 2); /* held, and the current */
	assert_whole(held);
	assert_memory_equal(held->secret + strlen(KEY_PREFIX) + 15, "0", 1);
	k = host_auth_acquire(&f->h);
	assert_ptr_not_equal(k, held);
	assert_memory_equal(k->secret + strlen(KEY_PREFIX) + 15, "2", 1);
	host_auth_release(k);
	host_auth_release(held);
	assert_int_equal(host_auth_keysets_live() - f->base, 1);
	assert_int_equal(host_reload(&f->h), 0); /* the same key: the same set */
	assert_ptr_equal(host_auth_acquire(&f->h), k);
	host_auth_release(k);
	assert_int_equal(host_auth_keysets_live() - f->base, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_replaced_sets_are_freed_while_readers_take_them,
	                                    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_a_held_set_outlives_its_reloads_until_let_go, setup,
	                                    teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
