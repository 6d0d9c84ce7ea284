/* The JWKS fetcher's key sets over reloads (jwksfetch.h), against a
 * provider on loopback, and the URLs messages show (redact.h). The keys are
 * read with evhost's TLS library, loaded from tls/ beside this program. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "clock.h"
#include "config.h"
#include "host.h"
#include "jwksfetch.h"
#include "log.h"
#include "redact.h"
#include "test_files.h"

/* ------------------------------------------------------------ redact_url */

static void shows(const char *url, const char *want)
{
	char *got = redact_url(url);
	assert_non_null(got);
	assert_string_equal(got, want);
	free(got);
}

static void test_redact_url_query(void **state)
{
	(void)state;
	shows("https://idp.example/certs", "https://idp.example/certs");
	shows("https://idp.example/certs?api_key=s3cr3t", "https://idp.example/certs?api_key=***");
	shows("https://idp.example:8443/c?tenant=shop&api_key=s3cr3t&x=",
	      "https://idp.example:8443/c?tenant=***&api_key=***&x=***");
	/* A parameter without '=' may be the secret itself; an empty one is
	 * nothing. */
	shows("http://127.0.0.1:9/c?s3cr3t&&a=1", "http://127.0.0.1:9/c?***&&a=***");
	shows("https://idp.example?k=v", "https://idp.example?k=***");
	shows("https://idp.example/c?", "https://idp.example/c?");
	/* What follows the query (a fragment) is a value's. */
	shows("https://idp.example/c?k=v#s3cr3t", "https://idp.example/c?k=***");
	shows("https://idp.example/c#frag", "https://idp.example/c#frag");
	/* '=' in a value: the name ends at the first. */
	shows("https://i/c?sig=a=b=", "https://i/c?sig=***");
	shows("", "");
}

static void test_redact_url_userinfo(void **state)
{
	(void)state;
	shows("https://kc:s3cr3t@idp.example/certs", "https://***@idp.example/certs");
	shows("https://kc@idp.example", "https://***@idp.example");
	/* The last '@' before the host: a password may hold one unencoded. */
	shows("http://ada:s@cr3t@proxy.corp:3128/x", "http://***@proxy.corp:3128/x");
	shows("https://kc:s3cr3t@idp.example/certs?api_key=k",
	      "https://***@idp.example/certs?api_key=***");
	/* A password with an unencoded '/', '?' or '#' cuts the host part
	 * short: none of it shown, nor of the user. */
	shows("http://ada:s3/cr3t@proxy.corp:3128", "http://***@proxy.corp:3128");
	shows("http://ada:s3#cr3t@proxy.corp:3128", "http://***@proxy.corp:3128");
	shows("http://ada:s3?cr3t@proxy.corp:3128", "http://***@proxy.corp:3128");
	shows("https://kc:p/w@idp/x?k=v", "https://***@idp/x?k=***");
	/* A port's ':' and an IPv6 address's are no password's. */
	shows("https://idp.example:8443/a@b", "https://idp.example:8443/a@b");
	shows("https://[fd00::7]:8443/a@b", "https://[fd00::7]:8443/a@b");
	/* An '@' after the host is the path's or the query's. */
	shows("https://idp.example/a@b", "https://idp.example/a@b");
	shows("https://idp.example/c?mail=a@b", "https://idp.example/c?mail=***");
	/* No scheme: the host comes first. */
	shows("kc:pw@idp.example/c", "***@idp.example/c");
	/* A "://" after the host is a value's, not the scheme's (fuzz_redact). */
	shows("idp.example/cb?token=s3cr3t&next=http://u:p@x", "idp.example/cb?token=***&next=***");
}

/* ------------------------------------------------------ the provider */

/* A provider on loopback, plain HTTP: each GET answered 200 with the set,
 * counted, until stopped. With `hold`, the connection is kept open after
 * the answer (HOLD_LENGTH: framed by Content-Length, HOLD_CHUNKED: in
 * chunks) until the client closes it, whatever its Connection: close. */
enum { HOLD_NONE, HOLD_LENGTH, HOLD_CHUNKED };
static struct {
	int fd, port;
	atomic_int stop, gets, hold;
	pthread_t thread;
} idp;

static const char idp_set[] =
    "{\"keys\":[{\"kty\":\"EC\",\"kid\":\"e1\",\"use\":\"sig\",\"crv\":\"P-256\","
    "\"x\":\"hcBmMPqvQRgEWo5yO1Mfpw1Bi-kQsJNlSVGeKxwKATs\","
    "\"y\":\"jJHqiaHzKWurRO7Ct48-zJeHLGsTPq_56Wk166R-C1M\"}]}";

/* The set in two chunks, then the last one. */
static void idp_chunked(int c)
{
	char text[1024];
	size_t half = (sizeof idp_set - 1) / 2;
	int n = snprintf(text, sizeof text,
	                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n%.*s\r\n"
	                 "%zx\r\n%s\r\n0\r\n\r\n",
	                 half, (int)half, idp_set, sizeof idp_set - 1 - half, idp_set + half);
	assert_true(n > 0 && (size_t)n < sizeof text);
	(void)!send(c, text, (size_t)n, MSG_NOSIGNAL);
}

/* Keep c open until the client closes it (or the provider stops), at most
 * twice the fetch's timeout: what a client that reads to the close would
 * wait for. */
static void idp_hold(int c)
{
	int64_t until = clock_mono_ms() + 2 * JWKS_FETCH_TIMEOUT_MS;
	char sink[256];
	while (!atomic_load(&idp.stop) && clock_mono_ms() < until) {
		struct pollfd p = {.fd = c, .events = POLLIN};
		if (poll(&p, 1, 100) > 0 && recv(c, sink, sizeof sink, 0) <= 0)
			break;
	}
}

static void *idp_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&idp.stop)) {
		struct pollfd p = {.fd = idp.fd, .events = POLLIN};
		char req[2048] = "", head[128];
		size_t got = 0;
		int c, n;
		if (poll(&p, 1, 100) <= 0 || (c = accept(idp.fd, NULL, NULL)) < 0)
			continue;
		while (got < sizeof req - 1 && !strstr(req, "\r\n\r\n")) {
			ssize_t r = recv(c, req + got, sizeof req - 1 - got, 0);
			if (r <= 0)
				break;
			got += (size_t)r;
			req[got] = '\0';
		}
		atomic_fetch_add(&idp.gets, 1);
		if (atomic_load(&idp.hold) == HOLD_CHUNKED)
			idp_chunked(c);
		else {
			n = snprintf(head, sizeof head,
			             "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n",
			             sizeof idp_set - 1);
			if (send(c, head, (size_t)n, MSG_NOSIGNAL) == n)
				(void)!send(c, idp_set, sizeof idp_set - 1, MSG_NOSIGNAL);
		}
		if (atomic_load(&idp.hold) != HOLD_NONE)
			idp_hold(c);
		close(c);
	}
	return NULL;
}

static int idp_up(void **state)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	(void)state;
	idp.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (idp.fd < 0 || bind(idp.fd, (struct sockaddr *)&a, sizeof a) != 0 ||
	    listen(idp.fd, 16) != 0 || getsockname(idp.fd, (struct sockaddr *)&a, &len) != 0)
		return -1;
	idp.port = ntohs(a.sin_port);
	atomic_store(&idp.stop, 0);
	return pthread_create(&idp.thread, NULL, idp_main, NULL) == 0 ? 0 : -1;
}

static int idp_down(void **state)
{
	(void)state;
	atomic_store(&idp.stop, 1);
	pthread_join(idp.thread, NULL);
	close(idp.fd);
	return 0;
}

/* A started fetcher of the provider's set, its keys in use. */
static jwks_fetcher *fetcher(void)
{
	char url[64], port[8], err[256] = "";
	settings s;
	jwks_fetcher *f;
	jwks_view v;
	snprintf(url, sizeof url, "http://127.0.0.1:%d/certs", idp.port);
	snprintf(port, sizeof port, "%d", idp.port);
	memset(&s, 0, sizeof s);
	s.jwks_url = url;
	s.jwks_host = (char *)"127.0.0.1";
	s.jwks_port = port;
	s.jwks_target = (char *)"/certs";
	s.jwks_refresh_ms = 3600 * 1000;
	s.jwks_cache_max_age_s = 86400;
	s.jwt_public_issuer = (char *)"https://idp";
	f = jwks_fetcher_new(&s, err, sizeof err);
	assert_non_null(f);
	assert_int_equal(jwks_fetcher_start(f), 0);
	jwks_fetcher_acquire(f, &v);
	assert_non_null(v.keys);
	assert_int_equal(v.nec, 1);
	jwks_fetcher_release(f);
	return f;
}

/* ------------------------------------------------------------ fetching */

/* A provider that keeps the connection open after a whole answer (framed
 * by Content-Length, or chunked), whatever the request's Connection: close:
 * the fetch ends with the answer and succeeds, before its timeout rather
 * than at it (reading to the close, it waited the whole timeout). */
static void test_fetch_ends_with_the_answer(void **state)
{
	(void)state;
	for (int hold = HOLD_LENGTH; hold <= HOLD_CHUNKED; hold++) {
		uint64_t ok0, failed0, ok, failed;
		int64_t last, t0, took;
		jwks_fetcher *f;
		atomic_store(&idp.hold, hold);
		jwks_stats(&ok0, &failed0, &last);
		t0 = clock_mono_ms();
		f = fetcher(); /* the keys in use */
		took = clock_mono_ms() - t0;
		jwks_stats(&ok, &failed, &last);
		jwks_fetcher_free(f);
		/* Before the checks: the tests after this one need it closing. */
		atomic_store(&idp.hold, HOLD_NONE);
		assert_true(took < JWKS_FETCH_TIMEOUT_MS);
		assert_int_equal(ok, ok0 + 1);
		assert_int_equal(failed, failed0);
	}
}

/* ---------------------------------------------------------- reloads */

/* A reload as host.c does it: `next` in place of *cur, the maker's
 * reference to the old one let go (key sets naming it have their own). */
static void reload_to(jwks_fetcher **cur, jwks_fetcher *next)
{
	jwks_fetcher_retire(next, *cur);
	jwks_fetcher_free(*cur);
	*cur = next;
}

/* Each reload that replaces the fetcher (a new URL, CA file, refresh)
 * retires the old one: its keys are freed, not kept until the daemon
 * stops, and a request still naming it (it loaded [auth]'s keyset before
 * the reload) checks with the keys in use, and fetches through it. */
static void test_retired_fetchers_keep_no_keys(void **state)
{
	jwks_fetcher *first, *cur;
	int base = jwks_key_sets_live(), fetchers = jwks_fetchers_live();
	(void)state;
	first = jwks_fetcher_hold(cur = fetcher()); /* a key set naming it, held throughout */
	assert_int_equal(jwks_key_sets_live(), base + 1);
	for (int i = 0; i < 20; i++) {
		jwks_view old, now;
		reload_to(&cur, fetcher());
		assert_int_equal(jwks_key_sets_live(), base + 1);
		jwks_fetcher_acquire(first, &old);
		jwks_fetcher_acquire(cur, &now);
		assert_ptr_equal(old.keys, now.keys);
		assert_int_equal(old.nec, 1);
		assert_false(old.no_usable);
		jwks_fetcher_release(cur);
		jwks_fetcher_release(first);
	}
	/* A refetch through the first fetches with the one in use. */
	{
		int gets = atomic_load(&idp.gets);
		jwks_view v;
		sleep(JWKS_REFETCH_MIN_MS / 1000 + 1);
		assert_int_equal(jwks_fetcher_refetch(first), 1);
		assert_true(atomic_load(&idp.gets) > gets);
		jwks_fetcher_acquire(first, &v);
		assert_non_null(v.keys);
		jwks_fetcher_release(first);
		assert_int_equal(jwks_key_sets_live(), base + 1);
	}
	/* The set naming the first reaches every later one (each holds the
	 * next): they go with it. */
	assert_int_equal(jwks_fetchers_live(), fetchers + 21);
	jwks_fetcher_free(first);
	assert_int_equal(jwks_fetchers_live(), fetchers + 1);
	jwks_fetcher_free(cur);
	assert_int_equal(jwks_key_sets_live(), base);
	assert_int_equal(jwks_fetchers_live(), fetchers);
}

/* A fetcher a reload replaced is freed when the last key set that can
 * reach it lets go, in either order (until 2026-12-05 each was kept until
 * the daemon stopped, one per reload that changed the URL). */
static void test_replaced_fetchers_go_with_the_last_set_naming_them(void **state)
{
	int fetchers = jwks_fetchers_live();
	jwks_fetcher *cur = fetcher(), *a, *b;
	jwks_view v;
	(void)state;
	a = jwks_fetcher_hold(cur); /* set A names the first fetcher */
	reload_to(&cur, fetcher());
	assert_int_equal(jwks_fetchers_live(), fetchers + 2);
	b = jwks_fetcher_hold(cur); /* set B names the second */
	reload_to(&cur, fetcher());
	assert_int_equal(jwks_fetchers_live(), fetchers + 3);
	jwks_fetcher_acquire(a, &v); /* A's readers check with the third's keys */
	assert_non_null(v.keys);
	jwks_fetcher_release(a);
	/* B let go first: the second is still A's way to the third. */
	jwks_fetcher_free(b);
	assert_int_equal(jwks_fetchers_live(), fetchers + 3);
	jwks_fetcher_free(a);
	assert_int_equal(jwks_fetchers_live(), fetchers + 1);
	/* A let go first: B's fetcher stays until B lets go. */
	a = jwks_fetcher_hold(cur);
	reload_to(&cur, fetcher());
	b = jwks_fetcher_hold(cur);
	reload_to(&cur, fetcher());
	assert_int_equal(jwks_fetchers_live(), fetchers + 3);
	jwks_fetcher_free(a);
	assert_int_equal(jwks_fetchers_live(), fetchers + 2);
	jwks_fetcher_acquire(b, &v);
	assert_non_null(v.keys);
	jwks_fetcher_release(b);
	jwks_fetcher_free(b);
	assert_int_equal(jwks_fetchers_live(), fetchers + 1);
	jwks_fetcher_free(cur);
	assert_int_equal(jwks_fetchers_live(), fetchers);
}

/* Readers on other threads while reloads retire fetchers under them, each
 * taking the current fetcher as a request takes [auth]'s key set (a
 * reference under a lock, host_auth_acquire) and letting go after its
 * check, so that a replaced fetcher is freed by whichever thread lets go
 * last: each check finds keys, and none is left but the current one (ASan
 * and TSan builds watch the rest). */
typedef struct reader_arg {
	pthread_mutex_t mu;
	jwks_fetcher *cur; /* under mu */
	atomic_int stop, checks, none;
} reader_arg;

static void *reader_main(void *arg)
{
	reader_arg *r = arg;
	while (!atomic_load(&r->stop)) {
		jwks_fetcher *f;
		jwks_view v;
		pthread_mutex_lock(&r->mu);
		f = jwks_fetcher_hold(r->cur);
		pthread_mutex_unlock(&r->mu);
		jwks_fetcher_acquire(f, &v);
		if (!v.keys || v.nec != 1)
			atomic_fetch_add(&r->none, 1);
		jwks_fetcher_release(f);
		jwks_fetcher_free(f);
		atomic_fetch_add(&r->checks, 1);
	}
	return NULL;
}

static void test_readers_across_retires(void **state)
{
	reader_arg r = {.mu = PTHREAD_MUTEX_INITIALIZER};
	int fetchers = jwks_fetchers_live(), keys = jwks_key_sets_live();
	pthread_t t[3];
	(void)state;
	r.cur = fetcher();
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&t[i], NULL, reader_main, &r), 0);
	for (int i = 0; i < 60; i++) {
		jwks_fetcher *next = fetcher(), *old;
		pthread_mutex_lock(&r.mu);
		old = r.cur;
		jwks_fetcher_retire(next, old);
		r.cur = next;
		pthread_mutex_unlock(&r.mu);
		jwks_fetcher_free(old); /* freed here or by the reader that lets go last */
	}
	atomic_store(&r.stop, 1);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	assert_true(atomic_load(&r.checks) > 0);
	assert_int_equal(atomic_load(&r.none), 0);
	assert_int_equal(jwks_fetchers_live(), fetchers + 1);
	assert_int_equal(jwks_key_sets_live(), keys + 1);
	jwks_fetcher_free(r.cur);
	assert_int_equal(jwks_fetchers_live(), fetchers);
	assert_int_equal(jwks_key_sets_live(), keys);
}

/* ------------------------------------------------- a host's reloads */

/* A real host (host_configure, host_start with Kafka embedded, host_reload)
 * whose [auth] jwt_jwks_url changes at every reload (a provider's rotation),
 * readers on threads of their own checking as the HTTP workers do: the
 * key set (host_auth_acquire), then its fetcher's keys. */
#define READERS 4
#define RELOADS 60

typedef struct host_fixture {
	host h;
	char dir[64];
	int fetchers, keysets; /* live before the host started */
	atomic_int stop, none;
	atomic_long checks;
} host_fixture;

/* The configuration with the provider's URL told apart by n (n < 0: none). */
static void write_conf(host_fixture *f, int n)
{
	char text[1024], url[128] = "";
	if (n >= 0)
		snprintf(url, sizeof url,
		         "jwt_jwks_url = http://127.0.0.1:%d/certs?rotation=%d\n"
		         "jwt_public_key_issuer = https://idp\njwt_public_key_audience = evhost\n",
		         idp.port, n);
	snprintf(text, sizeof text,
	         "[host]\nplugin_dir = %s\nstate_dir = %s/state\n"
	         "[http]\nlisten = 127.0.0.1:0\n"
	         "[kafka]\nbrokers = embedded\n"
	         "[auth]\n%s"
	         "[log]\nlevel = error\nformat = text\n",
	         f->dir, f->dir, url);
	test_write_file(f->dir, "evhost.conf", text, 0600);
}

static int host_up(void **state)
{
	host_fixture *f = calloc(1, sizeof *f);
	char path[128];
	diag d = {0};
	assert_non_null(f);
	test_make_dir(f->dir, sizeof f->dir, "jwks-host");
	snprintf(path, sizeof path, "%s/state", f->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	write_conf(f, 0);
	snprintf(path, sizeof path, "%s/evhost.conf", f->dir);
	f->fetchers = jwks_fetchers_live();
	f->keysets = host_auth_keysets_live();
	if (host_configure(&f->h, path, &d) != 0) {
		diag_print(&d, stderr);
		fail_msg("host_configure failed");
	}
	diag_free(&d);
	log_setup(f->h.set.log_level, f->h.set.log_fmt);
	assert_int_equal(host_start(&f->h), 0);
	assert_int_equal(jwks_fetchers_live(), f->fetchers + 1);
	*state = f;
	return 0;
}

static int host_down(void **state)
{
	host_fixture *f = *state;
	host_stop(&f->h);
	assert_int_equal(jwks_fetchers_live(), f->fetchers);
	assert_int_equal(host_auth_keysets_live(), f->keysets);
	test_remove_tree(f->dir);
	free(f);
	return 0;
}

/* A check as a request makes it: the set, then its fetcher's keys. 1 when
 * it found the provider's key. */
static int check_keys(host *h)
{
	const auth_keyset *k = host_auth_acquire(h);
	jwks_view v = {0};
	int found = 0;
	if (k && k->jwks) {
		jwks_fetcher_acquire(k->jwks, &v);
		found = v.keys && v.nec == 1;
		jwks_fetcher_release(k->jwks);
	}
	host_auth_release(k);
	return found;
}

static void *host_reader(void *arg)
{
	host_fixture *f = arg;
	while (!atomic_load(&f->stop)) {
		if (!check_keys(&f->h))
			atomic_fetch_add(&f->none, 1);
		atomic_fetch_add(&f->checks, 1);
	}
	return NULL;
}

/* Reload after reload, each with another URL, readers checking all along:
 * every check finds keys, and once the readers let go, the only fetcher
 * left is the current one (until 2026-12-05 each replaced fetcher was kept
 * until the daemon stopped: RELOADS + 1 of them). */
static void test_reloads_that_change_the_url_free_the_fetchers_they_replace(void **state)
{
	host_fixture *f = *state;
	pthread_t t[READERS];
	int reloaded = 0;
	for (int i = 0; i < READERS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, host_reader, f), 0);
	/* Asserted once the readers stopped: a failure leaves no thread behind. */
	for (int n = 1; n <= RELOADS && reloaded == n - 1; n++) {
		write_conf(f, n);
		if (host_reload(&f->h) == 0)
			reloaded = n;
	}
	atomic_store(&f->stop, 1);
	for (int i = 0; i < READERS; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	assert_int_equal(reloaded, RELOADS);
	assert_true(atomic_load(&f->checks) > 0);
	assert_int_equal(atomic_load(&f->none), 0);
	assert_int_equal(jwks_fetchers_live(), f->fetchers + 1);
	assert_int_equal(host_auth_keysets_live(), f->keysets + 1);
	assert_true(check_keys(&f->h));
}

/* A set held across reloads keeps the fetcher it names, and those after it
 * (its way to the keys in use), until let go; a URL taken out frees the
 * fetcher once no set names it. */
static void test_a_held_set_keeps_its_fetchers_until_let_go(void **state)
{
	host_fixture *f = *state;
	const auth_keyset *held = host_auth_acquire(&f->h);
	jwks_view v;
	for (int n = 1; n <= 3; n++) {
		write_conf(f, n);
		assert_int_equal(host_reload(&f->h), 0);
	}
	assert_int_equal(jwks_fetchers_live(), f->fetchers + 4);
	jwks_fetcher_acquire(held->jwks, &v); /* the keys in use, through the chain */
	assert_non_null(v.keys);
	jwks_fetcher_release(held->jwks);
	host_auth_release(held);
	assert_int_equal(jwks_fetchers_live(), f->fetchers + 1);
	/* No URL now: nothing names the fetcher any more. */
	held = host_auth_acquire(&f->h);
	write_conf(f, -1);
	assert_int_equal(host_reload(&f->h), 0);
	assert_int_equal(jwks_fetchers_live(), f->fetchers + 1);
	host_auth_release(held);
	assert_int_equal(jwks_fetchers_live(), f->fetchers);
	assert_false(check_keys(&f->h));
	/* And a URL again: a fetcher of its own. */
	write_conf(f, 4);
	assert_int_equal(host_reload(&f->h), 0);
	assert_int_equal(jwks_fetchers_live(), f->fetchers + 1);
	assert_true(check_keys(&f->h));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_redact_url_query),
	    cmocka_unit_test(test_redact_url_userinfo),
	    cmocka_unit_test(test_fetch_ends_with_the_answer),
	    cmocka_unit_test(test_retired_fetchers_keep_no_keys),
	    cmocka_unit_test(test_replaced_fetchers_go_with_the_last_set_naming_them),
	    cmocka_unit_test(test_readers_across_retires),
	    cmocka_unit_test_setup_teardown(
	        test_reloads_that_change_the_url_free_the_fetchers_they_replace, host_up, host_down),
	    cmocka_unit_test_setup_teardown(test_a_held_set_keeps_its_fetchers_until_let_go,
	                                    host_up, host_down),
	};
	log_setup(EVH_LOG_ERROR, LOG_FORMAT_TEXT);
	return cmocka_run_group_tests(tests, idp_up, idp_down);
}
