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

#include <cmocka.h>

#include "config.h"
#include "jwksfetch.h"
#include "log.h"
#include "redact.h"

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
 * counted, until stopped. */
static struct {
	int fd, port;
	atomic_int stop, gets;
	pthread_t thread;
} idp;

static const char idp_set[] =
    "{\"keys\":[{\"kty\":\"EC\",\"kid\":\"e1\",\"use\":\"sig\",\"crv\":\"P-256\","
    "\"x\":\"hcBmMPqvQRgEWo5yO1Mfpw1Bi-kQsJNlSVGeKxwKATs\","
    "\"y\":\"jJHqiaHzKWurRO7Ct48-zJeHLGsTPq_56Wk166R-C1M\"}]}";

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
		n = snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n",
		             sizeof idp_set - 1);
		if (send(c, head, (size_t)n, MSG_NOSIGNAL) == n)
			(void)!send(c, idp_set, sizeof idp_set - 1, MSG_NOSIGNAL);
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

/* ---------------------------------------------------------- reloads */

/* Each reload that replaces the fetcher (a new URL, CA file, refresh)
 * retires the old one: its keys are freed, not kept until the daemon
 * stops, and a request still naming it (it loaded [auth]'s keyset before
 * the reload) checks with the keys in use, and fetches through it. */
static void test_retired_fetchers_keep_no_keys(void **state)
{
	jwks_fetcher *first, *cur;
	int base = jwks_key_sets_live();
	(void)state;
	first = cur = fetcher();
	assert_int_equal(jwks_key_sets_live(), base + 1);
	for (int i = 0; i < 20; i++) {
		jwks_fetcher *next = fetcher();
		jwks_view old, now;
		jwks_fetcher_retire(next, cur);
		cur = next;
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
	jwks_fetcher_free(cur); /* and those it replaced */
	assert_int_equal(jwks_key_sets_live(), base);
}

/* Readers on other threads while reloads retire fetchers under them: each
 * check finds keys (ASan and TSan builds watch the rest). */
typedef struct reader_arg {
	jwks_fetcher *first;
	atomic_int stop, checks, none;
} reader_arg;

static void *reader_main(void *arg)
{
	reader_arg *r = arg;
	while (!atomic_load(&r->stop)) {
		jwks_view v;
		jwks_fetcher_acquire(r->first, &v);
		if (!v.keys || v.nec != 1)
			atomic_fetch_add(&r->none, 1);
		jwks_fetcher_release(r->first);
		atomic_fetch_add(&r->checks, 1);
	}
	return NULL;
}

static void test_readers_across_retires(void **state)
{
	reader_arg r = {0};
	pthread_t t[3];
	jwks_fetcher *cur;
	(void)state;
	r.first = cur = fetcher();
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&t[i], NULL, reader_main, &r), 0);
	for (int i = 0; i < 10; i++) {
		jwks_fetcher *next = fetcher();
		jwks_fetcher_retire(next, cur);
		cur = next;
	}
	atomic_store(&r.stop, 1);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	assert_true(atomic_load(&r.checks) > 0);
	assert_int_equal(atomic_load(&r.none), 0);
	jwks_fetcher_free(cur);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_redact_url_query),
	    cmocka_unit_test(test_redact_url_userinfo),
	    cmocka_unit_test(test_retired_fetchers_keep_no_keys),
	    cmocka_unit_test(test_readers_across_retires),
	};
	log_setup(EVH_LOG_ERROR, LOG_FORMAT_TEXT);
	return cmocka_run_group_tests(tests, idp_up, idp_down);
}
