/* Out of memory: each scenario runs again and again, the Nth allocation of
 * the host's own code failing in run N (N = 0, 1, 2, ... until a run needs
 * no more than N), and must never crash, must report the failure or carry
 * on without what it could not allocate, and must leave nothing behind:
 * the ASan build's leak check (scripts/test runs the unit tests there too)
 * fails the program for any allocation a failure path forgets.
 *
 * The allocations are failed through alloc_faults.h (cJSON's included):
 * the test's own thread's, or for the outbox relay those of the threads it
 * runs (the relay, the mover, the store's checkpointer; test_http.c fails
 * an HTTP worker's, test_services_oom.c those of a host running the three
 * services). */
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
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

#include "alloc_faults.h"
#include "db_files.h"
#include "clock.h"
#include "config.h"
#include "diag.h"
#include "dlq.h"
#include "httpc.h"
#include "json.h"
#include "jsonb.h"
#include "jwks.h"
#include "jwksfetch.h"
#include "jwt.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "proxy.h"
#include "router.h"
#include "store.h"
#include "stream.h"
#include "test_files.h"
#include "test_parts.h"
#include "textbuf.h"

#include "../../plugins/common/jsonin.c"

/* Run `scenario` with each of its allocations failing in turn (those of
 * the calling thread, or with ALLOC_OTHER_THREADS those of the threads the
 * scenario starts); it returns 0 when it did its whole work, -1 when it
 * stopped at a reported failure. A run with no failure must do the whole
 * work; returns how many runs. */
static long sweep_threads(int (*scenario)(void *), void *arg, int mode)
{
	long n;
	for (n = 0;; n += ALLOC_SWEEP_STEP) {
		int rc, failed;
		alloc_faults_arm(n, mode);
		rc = scenario(arg);
		failed = alloc_faults_disarm();
		if (!failed) {
			assert_int_equal(rc, 0);
			return n + 1;
		}
		assert_true(rc == 0 || rc == -1);
	}
}

static long sweep(int (*scenario)(void *), void *arg)
{
	return sweep_threads(scenario, arg, ALLOC_THIS_THREAD);
}

/* ---------------------------------------------------------------- router */

static int t_a, t_b, t_c, owner_x, owner_y;

static int router_scenario(void *arg)
{
	char err[256], allow[64];
	route_match m;
	router *r = router_new();
	int rc = -1;
	(void)arg;
	if (!r)
		return -1;
	if (router_add(r, "GET", "/users/{id}", &t_a, &owner_x, err, sizeof err) ||
	    router_add(r, "POST", "/users", &t_b, &owner_x, err, sizeof err) ||
	    router_add(r, "PUT", "/c/{coll}/{id}/n/{n}", &t_c, &owner_y, err, sizeof err))
		goto out;
	memset(&m, 0, sizeof m);
	switch (router_match(r, "PUT", "/c/books/42/n/%C3%A9", &m, allow, sizeof allow)) {
	case ROUTER_FOUND:
		assert_ptr_equal(m.target, &t_c);
		assert_int_equal(m.nparams, 3);
		assert_string_equal(m.values[2], "\xc3\xa9");
		break;
	case ROUTER_NO_MEMORY:
		assert_true(alloc_faults_hit());
		goto out;
	default:
		fail_msg("unexpected match result");
	}
	route_match_free(&m);
	switch (router_match(r, "DELETE", "/users/7", &m, allow, sizeof allow)) {
	case ROUTER_METHOD_NOT_ALLOWED:
		assert_string_equal(allow, "GET, HEAD");
		break;
	case ROUTER_NO_MEMORY:
		assert_true(alloc_faults_hit());
		goto out;
	default:
		fail_msg("unexpected match result");
	}
	route_match_free(&m);
	router_remove_owner(r, &owner_x);
	rc = 0;
out:
	router_free(r);
	return rc;
}

static void test_router(void **state)
{
	(void)state;
	assert_true(sweep(router_scenario, NULL) > 5);
}

/* ----------------------------------------------------------------- proxy */

static int proxy_scenario(void *arg)
{
	char err[256], out[PROXY_ADDR_LEN];
	proxy_list l;
	(void)arg;
	if (proxy_list_parse("10.0.0.0/8, ::1 192.168.1.1,fd00::/8", &l, err, sizeof err) != 0) {
		assert_string_equal(err, "out of memory");
		return -1;
	}
	assert_int_equal(l.n, 4);
	assert_int_equal(proxy_client_addr(&l, "10.1.2.3", "203.0.113.9, 192.168.1.1", out,
	                                   sizeof out),
	                 1);
	assert_string_equal(out, "203.0.113.9");
	proxy_list_free(&l);
	return 0;
}

static void test_proxy(void **state)
{
	(void)state;
	assert_true(sweep(proxy_scenario, NULL) > 1);
}

/* ------------------------------------------------------------------- jwt */

static int jwt_scenario(void *arg)
{
	static const unsigned char secret[] = "0123456789abcdef0123456789abcdef";
	const char *const roles[] = {"admin", "user"};
	const char *reason = NULL;
	jwt_claims c;
	char *token = NULL;
	int rc;
	(void)arg;
	if (jwt_sign("alice", roles, 2, 1700000000000LL, 3600, "evhost", secret, sizeof secret - 1,
	             &token) != 0)
		return -1;
	assert_non_null(token);
	rc = jwt_verify(token, secret, sizeof secret - 1, "evhost", 1700000100, 0, &c, &reason);
	if (rc) {
		/* only for want of memory, and said so (-2): the token is good, and
		 * an HTTP client must not be told otherwise (503, not 401) */
		assert_int_equal(rc, -2);
		assert_string_equal(reason, "out of memory checking the token");
		assert_true(alloc_faults_hit());
		free(token);
		return -1;
	}
	assert_string_equal(c.sub, "alice");
	assert_int_equal(c.nroles, 2);
	free(token);
	return 0;
}

static void test_jwt(void **state)
{
	(void)state;
	assert_true(sweep(jwt_scenario, NULL) > 2);
}

/* An identity provider's JWKS as PEM: refused as out of memory, or whole. */
static int jwks_scenario(void *arg)
{
	static const char set[] =
	    "{\"keys\":[{\"kty\":\"EC\",\"kid\":\"e1\",\"use\":\"sig\",\"crv\":\"P-256\","
	    "\"x\":\"hcBmMPqvQRgEWo5yO1Mfpw1Bi-kQsJNlSVGeKxwKATs\","
	    "\"y\":\"jJHqiaHzKWurRO7Ct48-zJeHLGsTPq_56Wk166R-C1M\"},"
	    "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}";
	jwks_pem p;
	char err[256] = "";
	(void)arg;
	if (jwks_to_pem(set, sizeof set - 1, &p, err, sizeof err) != 0) {
		assert_true(alloc_faults_hit());
		assert_string_equal(err, "out of memory");
		assert_null(p.pem);
		return -1;
	}
	assert_int_equal(p.nkeys, 1);
	assert_int_equal(p.skipped, 1);
	assert_string_equal(p.kids[0], "e1");
	assert_non_null(strstr(p.pem, "-----END PUBLIC KEY-----\n"));
	jwks_pem_free(&p);
	return 0;
}

static void test_jwks(void **state)
{
	(void)state;
	assert_true(sweep(jwks_scenario, NULL) > 3);
}

/* ------------------------------------------------------------ JWKS fetch */

/* A provider on loopback, plain HTTP: every GET is answered `status` with
 * the set below, until stopped. */
static struct {
	int fd, port;
	atomic_int status, stop;
	pthread_t thread;
} idp;

static const char idp_set[] =
    "{\"keys\":[{\"kty\":\"EC\",\"kid\":\"e1\",\"use\":\"sig\",\"crv\":\"P-256\","
    "\"x\":\"hcBmMPqvQRgEWo5yO1Mfpw1Bi-kQsJNlSVGeKxwKATs\","
    "\"y\":\"jJHqiaHzKWurRO7Ct48-zJeHLGsTPq_56Wk166R-C1M\"},"
    "{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}";

static void *idp_main(void *arg)
{
	(void)arg;
	while (!atomic_load(&idp.stop)) {
		struct pollfd p = {.fd = idp.fd, .events = POLLIN};
		char req[2048], head[256];
		size_t got = 0;
		int c, n;
		if (poll(&p, 1, 100) <= 0 || (c = accept(idp.fd, NULL, NULL)) < 0)
			continue;
		while (got < sizeof req - 1) {
			ssize_t r = recv(c, req + got, sizeof req - 1 - got, 0);
			if (r <= 0)
				break;
			got += (size_t)r;
			req[got] = '\0';
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		n = snprintf(head, sizeof head, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n\r\n",
		             atomic_load(&idp.status), sizeof idp_set - 1);
		if (send(c, head, (size_t)n, MSG_NOSIGNAL) == n)
			(void)!send(c, idp_set, sizeof idp_set - 1, MSG_NOSIGNAL);
		close(c);
	}
	return NULL;
}

static void idp_start(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	idp.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(idp.fd >= 0);
	assert_int_equal(bind(idp.fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(idp.fd, 16), 0);
	assert_int_equal(getsockname(idp.fd, (struct sockaddr *)&a, &len), 0);
	idp.port = ntohs(a.sin_port);
	atomic_store(&idp.status, 200);
	atomic_store(&idp.stop, 0);
	assert_int_equal(pthread_create(&idp.thread, NULL, idp_main, NULL), 0);
}

static void idp_stop(void)
{
	atomic_store(&idp.stop, 1);
	pthread_join(idp.thread, NULL);
	close(idp.fd);
}

typedef struct fetch_case {
	settings s;
	char cache[300];
	int keep_cache; /* else the cache is removed before each run */
} fetch_case;

/* Fetch at start (or use the cache when the provider answers 500): the keys
 * are there, or the failure was an allocation's; the cache is written when
 * nothing failed. */
static int jwks_fetch_scenario(void *arg)
{
	fetch_case *fc = arg;
	char err[256] = "";
	jwks_view v;
	jwks_fetcher *f;
	int have;
	if (!fc->keep_cache)
		unlink(fc->cache);
	if (!(f = jwks_fetcher_new(&fc->s, err, sizeof err))) {
		assert_true(alloc_faults_hit());
		assert_string_equal(err, "out of memory");
		return -1;
	}
	if (jwks_fetcher_start(f) != 0) {
		assert_true(alloc_faults_hit());
		jwks_fetcher_free(f);
		return -1;
	}
	jwks_fetcher_acquire(f, &v);
	have = v.keys != NULL;
	if (have) {
		assert_int_equal(v.nec, 1);
		assert_int_equal(v.nrsa, 0);
	}
	jwks_fetcher_release(f);
	jwks_fetcher_free(f);
	if (!have) {
		assert_true(alloc_faults_hit());
		return -1;
	}
	if (!alloc_faults_hit())
		assert_int_equal(access(fc->cache, R_OK), 0);
	return 0;
}

static void test_jwks_fetch(void **state)
{
	fetch_case fc;
	char dir[] = "/tmp/evhost-oom-jwks-XXXXXX" /* mkdtemp's template */, url[64], port[8];
	(void)state;
	assert_non_null(mkdtemp(dir));
	idp_start();
	snprintf(url, sizeof url, "http://127.0.0.1:%d/certs", idp.port);
	snprintf(port, sizeof port, "%d", idp.port);
	memset(&fc, 0, sizeof fc);
	fc.s.jwks_url = url;
	fc.s.jwks_host = (char *)"127.0.0.1";
	fc.s.jwks_port = port;
	fc.s.jwks_target = (char *)"/certs";
	fc.s.jwks_refresh_ms = 3600 * 1000;
	fc.s.jwks_cache_max_age_s = 7 * 86400; /* config's default: 0 would refuse a cache
	                                         * written in an earlier second */
	fc.s.jwt_public_issuer = (char *)"https://idp";
	fc.s.state_dir = dir;
	snprintf(fc.cache, sizeof fc.cache, "%s/jwks-cache.json", dir);
	/* Fetched, converted, loaded, kept in the cache. */
	assert_true(sweep(jwks_fetch_scenario, &fc) > 40);
	/* The provider failing: the cache read back. */
	assert_int_equal(jwks_fetch_scenario(&fc), 0);
	atomic_store(&idp.status, 500);
	fc.keep_cache = 1;
	assert_true(sweep(jwks_fetch_scenario, &fc) > 20);
	idp_stop();
	unlink(fc.cache);
	assert_int_equal(rmdir(dir), 0);
}

/* A name (not an address) is looked up on a thread of its own, with a
 * record the thread and the caller share: without memory for it, the
 * connection fails saying so (getaddrinfo's own allocations are libc's,
 * not counted: the record is the first). */
static void test_name_lookup_without_memory(void **state)
{
	httpc_conn c;
	char err[256] = "";
	int rc, failed;
	(void)state;
	alloc_faults_arm(0, ALLOC_THIS_THREAD);
	rc = httpc_open(&c, "localhost", "9", NULL, clock_mono_ms() + 5000, err, sizeof err);
	failed = alloc_faults_disarm();
	assert_true(failed);
	assert_int_equal(rc, -1);
	assert_string_equal(err, "cannot resolve localhost: out of memory");
}

/* --------------------------------------------------------- configuration */

/* The files of a configuration using every kind of value the reader
 * allocates for: drop-ins, paths, secrets read from files, URLs, listen
 * addresses, rdkafka properties, networks, plugin sections. */
static const struct {
	const char *name, *text;
} config_files[] = {
    {"evhost.conf", "[host]\nplugin_dir = lib\nstate_dir = state\nsource = evhost://t\n"
                    "[http]\nlisten = 127.0.0.1:8080\ntls_listen = [::1]:8443\n"
                    "tls_certificate = server.pem\ntrusted_proxies = 10.0.0.0/8, ::1\n"
                    "[kafka]\nbrokers = 127.0.0.1:9092\ndlq_suffix = .dead\n"
                    "rdkafka.sasl.username = evhost\nrdkafka.sasl.password_file = kafka.pass\n"
                    "[store]\nsynchronous = normal\n"
                    "[auth]\njwt_secret_file = jwt.key\n"
                    "jwt_jwks_url = https://idp.example/keys\n"
                    "jwt_public_key_issuer = https://idp.example\n"
                    "[admin]\ntoken_file = admin.token\n"
                    "[tracing]\notlp_endpoint = https://[::1]:4318/base/\n"
                    "otlp_headers_file = otlp.headers\n"
                    "[plugin.user]\n[plugin.crud]\npath = /opt/crud.so\ngroup = g.crud\n"},
    {"conf.d/10-a.conf", "[plugin.notifications]\nenabled = false\nlog_level = debug\n"},
    {"conf.d/20-b.conf", "[kafka]\nretry.max_attempts = 7\n[http]\nlisten = 127.0.0.1:9090\n"},
    {"kafka.pass", "s3cret\n"},
    {"jwt.key", "0123456789abcdef0123456789abcdef\n"},
    {"admin.token", "abcdefghijklmnopqrstuvwxyz\n"},
    {"otlp.headers", "X-Api-Key: k1\n"},
};

static void config_files_write(const char *dir)
{
	char path[256];
	snprintf(path, sizeof path, "%s/conf.d", dir);
	assert_int_equal(mkdir(path, 0700), 0);
	for (size_t i = 0; i < sizeof config_files / sizeof config_files[0]; i++)
		test_write_file(dir, config_files[i].name, config_files[i].text, 0600);
}

static void config_files_remove(const char *dir)
{
	char path[256];
	for (size_t i = 0; i < sizeof config_files / sizeof config_files[0]; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, config_files[i].name);
		assert_int_equal(unlink(path), 0);
	}
	snprintf(path, sizeof path, "%s/conf.d", dir);
	assert_int_equal(rmdir(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

/* Read whole, or refused with one problem: out of memory (a start fails,
 * a reload keeps what runs); never a value left out, never a crash. */
static int config_scenario(void *arg)
{
	const char *dir = arg;
	char conf[128], want[256];
	cfg c;
	settings s = {0};
	diag d = {0};
	int rc;

	snprintf(conf, sizeof conf, "%s/evhost.conf", dir);
	rc = cfg_load(&c, conf, &d);
	if (rc == 0) {
		rc = settings_from_cfg(&c, &s, &d);
		if (rc != 0)
			assert_int_equal(rc, -2); /* out of memory, not a problem in the values */
	}
	if (rc != 0) {
		assert_true(alloc_faults_hit());
		assert_int_equal(diag_count(&d), 1);
		assert_int_equal(d.n, 1);
		snprintf(want, sizeof want, "%s: out of memory while reading the configuration",
		         conf);
		assert_string_equal(d.msgs[0], want);
		goto out;
	}
	assert_int_equal(diag_count(&d), 0);
	assert_string_equal(s.http_listen, "127.0.0.1:9090"); /* the drop-in's */
	assert_string_equal(s.http_tls_listen, "[::1]:8443");
	assert_int_equal(s.http_trusted_proxies.n, 2);
	assert_int_equal(s.retry_max_attempts, 7);
	assert_string_equal(s.dlq_suffix, ".dead");
	assert_int_equal(s.nrdkafka, 2);
	assert_string_equal(s.rdkafka[1].key, "sasl.password");
	assert_string_equal(s.rdkafka[1].value, "s3cret");
	assert_string_equal(s.store_synchronous, "NORMAL");
	assert_int_equal(s.jwt_secret_len, 32);
	assert_string_equal(s.jwks_target, "/keys");
	assert_string_equal(s.admin_token, "abcdefghijklmnopqrstuvwxyz");
	assert_string_equal(s.trace_endpoint, "https://[::1]:4318/base/v1/traces");
	assert_string_equal(s.trace_headers, "X-Api-Key: k1\r\n");
	assert_int_equal(s.nplugins, 3);
	assert_string_equal(s.plugins[0].name, "crud");
	assert_string_equal(s.plugins[0].path, "/opt/crud.so");
	assert_string_equal(s.plugins[0].group, "g.crud");
	assert_string_equal(s.plugins[1].name, "notifications");
	assert_false(s.plugins[1].enabled);
	snprintf(want, sizeof want, "%s/lib/user.so", dir);
	assert_string_equal(s.plugins[2].path, want);
out:
	settings_free(&s);
	cfg_free(&c);
	diag_free(&d);
	return rc == 0 ? 0 : -1;
}

static void test_config(void **state)
{
	char dir[] = "/tmp/evhost-oom-conf-XXXXXX"; /* mkdtemp's template */
	(void)state;
	assert_non_null(mkdtemp(dir));
	config_files_write(dir);
	assert_true(sweep(config_scenario, dir) > 100);
	config_files_remove(dir);
}

/* A configuration with a bad value, the allocations recording it failing
 * too: refused every time, the problem said or counted as lost. */
static void test_config_problem_not_recorded(void **state)
{
	long n, lost = 0;
	(void)state;
	for (n = 0;; n++) {
		cfg c = {0};
		settings s = {0};
		diag d = {0};
		int rc, failed;
		alloc_faults_arm(n, ALLOC_THIS_THREAD);
		rc = cfg_load_string(&c, "[http]\nthreads = many\n[kafka]\nbrokers = b:9092\n",
		                     "x.conf", &d);
		if (rc == 0)
			rc = settings_from_cfg(&c, &s, &d);
		failed = alloc_faults_disarm();
		assert_int_not_equal(rc, 0);
		assert_int_equal(diag_count(&d), 1);
		if (d.n)
			assert_true(strstr(d.msgs[0], failed ? "out of memory" : "threads: expected") ||
			            strstr(d.msgs[0], "threads: expected"));
		if (d.lost) {
			/* What evhostd and evhostctl print: the problem it could not keep
			 * is counted, not silently dropped. */
			char text[256] = "";
			FILE *out = fmemopen(text, sizeof text - 1, "w");
			assert_non_null(out);
			diag_print(&d, out);
			fclose(out);
			assert_string_equal(text, "(1 more problem not recorded: out of memory)\n");
		}
		lost += d.lost;
		settings_free(&s);
		cfg_free(&c);
		diag_free(&d);
		if (!failed)
			break;
	}
	assert_true(n > 20);
	assert_true(lost > 0); /* the problem's own allocations were among those failed */
}

/* ------------------------------------------------------ plugins' metrics */

/* A plugin's metric declared, updated and scraped: refused as out of
 * memory (NULL, the reason said), an update dropped (counted), a scrape
 * failed (-1), or all whole. */
static int plugin_metric_scenario(void *arg)
{
	char err[256] = "", *text = NULL;
	size_t len;
	struct metrics_plugin_metric *m;
	int rc = 0;
	(void)arg;
	metrics_reset();
	m = metrics_plugin_metric("p", EVH_METRIC_COUNTER, "oom_total", "h", "kind", err, sizeof err);
	if (!m) {
		assert_string_equal(err, "oom_total: out of memory");
		return -1;
	}
	metrics_plugin_add(m, "a", 2);
	if (metrics_render(NULL, &text, &len) != 0)
		return -1;
	if (!strstr(text, "oom_total{plugin=\"p\",kind=\"a\"} 2\n")) {
		/* the series could not be made: the update was counted as dropped */
		assert_non_null(strstr(text, "\nevhost_metrics_series_dropped_total 1\n"));
		rc = -1;
	}
	free(text);
	return rc;
}

static void test_plugin_metric(void **state)
{
	(void)state;
	assert_true(sweep(plugin_metric_scenario, NULL) > 3);
	metrics_reset();
}

/* --------------------------------------------------------------- textbuf */

static int textbuf_scenario(void *arg)
{
	textbuf b = {0};
	(void)arg;
	for (int i = 0; i < 2000; i++)
		tb_printf(&b, "%d,", i);
	tb_puts(&b, "end");
	if (b.oom) { /* sticky: nothing after a failed append is kept */
		free(b.p);
		return -1;
	}
	assert_true(b.n > 8000 && !memcmp(b.p + b.n - 3, "end", 3));
	free(b.p);
	return 0;
}

static void test_textbuf(void **state)
{
	(void)state;
	assert_true(sweep(textbuf_scenario, NULL) > 3);
}

/* ------------------------------------------------------------ jsonb_print */

/* A document larger than textbuf's first buffer, so it grows on the way. */
static int jsonb_print_scenario(void *arg)
{
	const cJSON *doc = arg;
	char *s = jsonb_print(doc);
	if (!s)
		return -1;
	assert_true(strlen(s) > 4096);
	assert_non_null(strstr(s, "9007199254740991"));
	free(s);
	return 0;
}

static void test_jsonb_print(void **state)
{
	cJSON *doc = cJSON_CreateArray();
	(void)state;
	assert_non_null(doc);
	for (int i = 0; i < 400; i++)
		assert_true(cJSON_AddItemToArray(doc, cJSON_CreateString("0123456789")));
	assert_true(cJSON_AddItemToArray(doc, cJSON_CreateNumber(9007199254740991.0)));
	assert_true(sweep(jsonb_print_scenario, doc) > 1);
	cJSON_Delete(doc);
}

/* The duplicate-name check allocates for many names open at once (past
 * those it keeps on the stack, and again as they grow) and for a name with
 * escapes: out of memory it says -1 (the request is answered 503), never
 * "unique" nor a wrong name. */
static int duplicate_scenario(void *arg)
{
	const char *text = arg;
	char name[64];
	int rc = json_duplicate_member(text, strlen(text), name, sizeof name);
	if (rc < 0)
		return -1;
	assert_int_equal(rc, 1);
	assert_string_equal(name, "m3");
	return 0;
}

static void test_json_duplicate_member(void **state)
{
	char text[2048];
	size_t n = (size_t)sprintf(text, "[1,{\"\\u006d0\":0");
	(void)state;
	for (int i = 1; i < 100; i++)
		n += (size_t)sprintf(text + n, ",\"m%d\":%d", i, i);
	sprintf(text + n, ",\"m3\":9}]");
	assert_true(sweep(duplicate_scenario, text) > 3);
}

/* ---------------------------------------------------------- plugins' JSON */

/* cJSON says NULL for bad text and out of memory alike; jsonin_parse must
 * tell them apart in every run (a plugin dead-letters the one, retries the
 * other). cJSON's allocations come here through alloc_faults_cjson. */
static const char jsonin_good[] = "{\"id\":\"u-1\",\"email\":\"a@b.c\",\"tags\":[1,2.5,\"x\"]}";

/* jsonin_good as parsed: whole, or NULL for want of memory (-1). */
static int jsonin_good_parsed(cJSON *v, int oom)
{
	if (!v) {
		assert_true(oom); /* never taken for bad text */
		return -1;
	}
	assert_false(oom);
	assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(v, "tags")), 3);
	cJSON_Delete(v);
	return 0;
}

static int jsonin_scenario(void *arg)
{
	static const char bad[] = "{\"id\":\"u-1\",\"email\":}";
	int oom = 0;
	cJSON *v = jsonin_parse(bad, strlen(bad), &oom);
	(void)arg;
	assert_null(v);
	assert_false(oom);
	v = jsonin_parse(jsonin_good, strlen(jsonin_good), &oom);
	return jsonin_good_parsed(v, oom);
}

static void test_jsonin(void **state)
{
	(void)state;
	assert_true(sweep(jsonin_scenario, NULL) > 5);
}

/* jsonin_parse_strict (event data) the same way: bad text is refused for
 * what it is in every run, good text is parsed or refused as out of memory
 * (a retry), and a name given twice, in an object large enough that the
 * check sorts its names, is never taken for unique when the sort's memory
 * fails. */
static int jsonin_strict_scenario(void *arg)
{
	static const char bad[] = "{\"id\":\"u-1\",\"email\":1e999}";
	static const char twice[] = "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,"
	                            "\"h\":8,\"i\":9,\"b\":10}";
	char why[200];
	int oom = 0;
	cJSON *v = jsonin_parse_strict(bad, strlen(bad), "event data", &oom, why, sizeof why);
	(void)arg;
	assert_null(v);
	assert_false(oom);
	assert_string_equal(why, "event data is not valid JSON: a number out of range at byte 20");
	v = jsonin_parse_strict(twice, strlen(twice), "event data", &oom, why, sizeof why);
	assert_null(v);
	if (oom) {
		assert_string_equal(why, "out of memory parsing the event data");
		return -1;
	}
	assert_string_equal(why, "event data names member \"b\" twice");
	v = jsonin_parse_strict(jsonin_good, strlen(jsonin_good), "event data", &oom, why,
	                        sizeof why);
	if (!v && oom)
		assert_string_equal(why, "out of memory parsing the event data");
	return jsonin_good_parsed(v, oom);
}

static void test_jsonin_strict(void **state)
{
	(void)state;
	assert_true(sweep(jsonin_strict_scenario, NULL) > 10);
}

/* ------------------------------------------------------------ SSE streams */

static int count_of(const char *text, const char *what)
{
	int n = 0;
	for (const char *p = text; (p = strstr(p, what)) != NULL; p++)
		n++;
	return n;
}

static int stream_scenario(void *arg)
{
	stream_hub *hub = stream_hub_new();
	stream *a = NULL, *b = NULL;
	char *out = NULL, last[32];
	size_t len = 0;
	int rc = -1;
	(void)arg;
	if (!hub)
		return -1;
	stream_hub_start(hub, 8);
	if (stream_open(hub, &owner_x, "x", "ch", NULL, &a) != EVH_OK)
		goto out;
	for (int i = 0; i < 3; i++)
		if (stream_publish(hub, &owner_x, "x", "ch", "n", "hello\nworld", 11) < 0)
			goto out;
	/* Frames that could not be copied out wait for the next call. */
	if (stream_wait(a, 1000, &out, &len) != STREAM_FRAMES) {
		assert_true(alloc_faults_hit());
		goto out;
	}
	assert_int_equal(count_of(out, "data: hello\ndata: world\n"), 3);
	/* a client that saw the first comes back: the other two are replayed,
	 * none lost and none twice */
	snprintf(last, sizeof last, "%.*s", (int)strcspn(out + 4, "\n"), out + 4);
	free(out);
	out = NULL;
	if (stream_open(hub, &owner_x, "x", "ch", last, &b) != EVH_OK)
		goto out;
	if (stream_wait(b, 1000, &out, &len) != STREAM_FRAMES) {
		assert_true(alloc_faults_hit());
		goto out;
	}
	/* or, when a frame could not be kept for replay, the client is told */
	if (count_of(out, "data: hello\n") != 2)
		assert_true(alloc_faults_hit() && count_of(out, "event: evhost.missed\n") == 1 &&
		            strstr(out, "\"reason\":\"history\"}"));
	rc = 0;
out:
	free(out);
	stream_hub_stop(hub);
	if (a)
		stream_release(a);
	if (b)
		stream_release(b);
	stream_hub_free(hub);
	return rc;
}

static void test_stream(void **state)
{
	(void)state;
	assert_true(sweep(stream_scenario, NULL) > 5);
}

/* The frames a stream's client gets after `last` (an id): its replay. */
static char *replayed_after(stream_hub *hub, const char *last)
{
	stream *r = NULL;
	char *out = NULL;
	size_t len = 0;
	assert_int_equal(stream_open(hub, &owner_x, "x", "ch", last, &r), EVH_OK);
	if (stream_wait(r, 200, &out, &len) != STREAM_FRAMES)
		out = strdup("");
	assert_non_null(out);
	stream_release(r);
	return out;
}

/* An event whose frame could not be queued for a stream (memory short for
 * the copy) left the stream open: its client got the events after it and
 * never that one, its Last-Event-ID already past it. Each allocation of
 * the event's publish failed in turn: a stream that gets the next event
 * got it too, or is closed, and its client resuming from what it got gets
 * it from the history (or is told it missed something). */
static void test_stream_frame_not_queued_closes_the_stream(void **state)
{
	int hit = 1;
	(void)state;
	for (long k = 0; hit && k < 20; k++) {
		stream_hub *hub = stream_hub_new();
		stream *a = NULL;
		char *out = NULL, *history, *resumed, first[32], last[32];
		size_t len = 0;
		assert_non_null(hub);
		stream_hub_start(hub, 8);
		assert_int_equal(stream_open(hub, &owner_x, "x", "ch", NULL, &a), EVH_OK);
		assert_int_equal(stream_publish(hub, &owner_x, "x", "ch", "n", "A", 1), 1);
		alloc_faults_arm(k, ALLOC_THIS_THREAD);
		(void)stream_publish(hub, &owner_x, "x", "ch", "n", "B", 1);
		hit = alloc_faults_disarm();
		(void)stream_publish(hub, &owner_x, "x", "ch", "n", "C", 1);
		assert_int_not_equal(stream_wait(a, 1000, &out, &len), STREAM_IDLE);
		snprintf(first, sizeof first, "%.*s", (int)strcspn(out + 4, "\n"), out + 4);
		/* Whether B was published at all: the history after A has it. */
		history = replayed_after(hub, first);
		if (count_of(history, "data: B\n") && count_of(out, "data: C\n") &&
		    !count_of(out, "data: B\n"))
			fail_msg("allocation %ld of B's publish failed: the stream got C, not B", k);
		if (!count_of(out, "data: C\n")) {
			/* Closed: its client resumes from the last frame it got. */
			const char *id = out, *at;
			while ((at = strstr(id + 1, "id: ")))
				id = at;
			snprintf(last, sizeof last, "%.*s", (int)strcspn(id + 4, "\n"), id + 4);
			resumed = replayed_after(hub, last);
			if (count_of(history, "data: B\n") && !count_of(resumed, "data: B\n") &&
			    !count_of(resumed, "event: evhost.missed\n"))
				fail_msg("allocation %ld of B's publish failed: a client resuming got no B",
				         k);
			free(resumed);
		}
		free(history);
		free(out);
		stream_hub_stop(hub);
		stream_release(a);
		stream_hub_free(hub);
	}
	assert_false(hit);
}

/* ----------------------------------------------------------------- store */

/* An outbox row of key "k" to `topic` (its id is the caller's). */
static void oom_row(outbox_row *row, const char *topic)
{
	memset(row, 0, sizeof *row);
	row->topic = (char *)topic;
	row->key = (char *)"k";
	row->type = (char *)"T";
	row->source = (char *)"evhost/oom";
	row->time = (char *)"2026-12-01T00:00:00.000Z";
	row->data = (char *)"{\"n\":1}";
	row->data_len = strlen(row->data);
}

static int store_scenario(void *arg)
{
	const char *path = arg;
	char err[256], *json = NULL;
	outbox_row row, *rows = NULL;
	outbox_done done[3];
	size_t n = 0;
	store *s = NULL;
	evh_tx *tx = NULL;
	int rc = -1;

	remove_db_files(path);
	if (store_open(&s, path, "NORMAL", err, sizeof err) != EVH_OK) {
		assert_true(err[0] != '\0');
		return -1;
	}
	oom_row(&row, "t");
	if (store_tx_begin(s, &tx) != EVH_OK)
		goto out;
	for (int i = 0; i < 3; i++) {
		char id[8];
		snprintf(id, sizeof id, "id-%d", i);
		row.id = id;
		if (store_outbox_add(tx, &row) != EVH_OK) {
			store_tx_rollback(tx);
			goto out;
		}
	}
	if (store_tx_commit(tx) != EVH_OK)
		goto out;
	if (store_outbox_fetch(s, 0, 10, &rows, &n) != EVH_OK)
		goto out;
	assert_int_equal(n, 3);
	for (size_t i = 0; i < n; i++)
		done[i] = (outbox_done){rows[i].seq, 0, (int64_t)i};
	store_outbox_rows_free(rows, n);
	if (store_outbox_delivered(s, done, n) != EVH_OK)
		goto out;
	if (store_events_json(s, "k", 0, 10, &json) != EVH_OK)
		goto out;
	assert_non_null(strstr(json, "\"id-2\""));
	free(json);
	rc = 0;
out:
	store_close(s);
	return rc;
}

/* What a consumer does with each event: in one grouped transaction, a
 * savepoint, the inbox claim and the handler's write; then a read. */
static int consume_scenario(void *arg)
{
	static const evh_migration mig[] = {{1, "CREATE TABLE seen(id TEXT, n INTEGER);"}};
	const char *path = arg;
	char err[256];
	store *s = NULL;
	evh_tx *tx = NULL;
	evh_rows *rows = NULL;
	int rc = -1;

	remove_db_files(path);
	if (store_open(&s, path, "NORMAL", err, sizeof err) != EVH_OK)
		return -1;
	if (store_migrate(s, mig, 1, err, sizeof err) != EVH_OK || store_tx_begin_grouped(s, &tx))
		goto out;
	for (int i = 0; i < 3; i++) {
		char id[16];
		evh_value v[2];
		/* ev-0 known by its position: its claim looks for a record to take over first */
		int64_t time_ms = i ? -1 : 1700000000000;
		snprintf(id, sizeof id, "ev-%d", i);
		v[0] = EVH_TEXT(id);
		v[1] = EVH_INT(i);
		if (store_tx_savepoint(tx) != EVH_OK ||
		    store_inbox_claim(tx, id, "t", 0, i, time_ms) != 1 ||
		    store_exec(tx, "INSERT INTO seen VALUES(?, ?)", v, 2, NULL) != EVH_OK ||
		    store_tx_savepoint_release(tx) != EVH_OK) {
			store_tx_rollback(tx);
			goto out;
		}
	}
	if (store_tx_commit(tx) != EVH_OK || store_tx_begin(s, &tx) != EVH_OK)
		goto out;
	if (store_inbox_seen(tx, "ev-1") != 1 ||
	    store_query(tx, "SELECT COUNT(*) FROM seen", NULL, 0, &rows) != EVH_OK) {
		store_tx_rollback(tx);
		goto out;
	}
	assert_int_equal(store_rows_next(rows), 1);
	assert_int_equal(store_rows_int(rows, 0), 3);
	store_rows_close(rows);
	store_tx_rollback(tx);
	rc = 0;
out:
	store_close(s);
	return rc;
}

/* A store of its own in a new directory, with an empty table t(x). */
struct table_store {
	char dir[32], path[64];
	store *s;
};

static void table_store_open(struct table_store *t, const char *name)
{
	char err[256];
	evh_tx *tx = NULL;
	snprintf(t->dir, sizeof t->dir, "/tmp/evhost-oom-XXXXXX"); /* mkdtemp's template */
	assert_non_null(mkdtemp(t->dir));
	snprintf(t->path, sizeof t->path, "%s/%s", t->dir, name);
	assert_int_equal(store_open(&t->s, t->path, "NORMAL", err, sizeof err), EVH_OK);
	assert_int_equal(store_tx_begin(t->s, &tx), EVH_OK);
	assert_int_equal(store_exec(tx, "CREATE TABLE t(x)", NULL, 0, NULL), EVH_OK);
	assert_int_equal(store_tx_commit(tx), EVH_OK);
}

/* t holds the values `want` (group_concat's order), then the store goes. */
static void table_store_check_close(struct table_store *t, const char *want)
{
	evh_tx *tx = NULL;
	evh_rows *rows = NULL;
	assert_int_equal(store_tx_begin(t->s, &tx), EVH_OK);
	assert_int_equal(store_query(tx, "SELECT group_concat(x) FROM t", NULL, 0, &rows), EVH_OK);
	assert_int_equal(store_rows_next(rows), 1);
	assert_string_equal(store_rows_text(rows, 0, NULL), want);
	store_rows_close(rows);
	store_tx_rollback(tx);
	store_close(t->s);
	remove_db_files(t->path);
	rmdir(t->dir);
}

/* Roll `tx` back with no memory for SQLite at all. */
static void rollback_without_memory(evh_tx *tx)
{
	alloc_faults_arm_many(0, 1000000, ALLOC_THIS_THREAD | ALLOC_SQLITE);
	store_tx_rollback(tx);
	assert_true(alloc_faults_disarm());
}

/* A ROLLBACK that SQLite could not run for want of memory (sqlite3_exec
 * prepares it) left the writer in its transaction: every later BEGIN failed
 * ("cannot start a transaction within a transaction") and the write lock
 * stayed held, for good. Now a rollback is tried again, and a transaction a
 * failed one left open is rolled back before the next BEGIN. */
/* A table store whose transaction inserting 1 could not be rolled back. */
static void table_store_left_open(struct table_store *t, const char *name)
{
	evh_tx *tx = NULL;
	table_store_open(t, name);
	assert_int_equal(store_tx_begin(t->s, &tx), EVH_OK);
	assert_int_equal(store_exec(tx, "INSERT INTO t VALUES(1)", NULL, 0, NULL), EVH_OK);
	rollback_without_memory(tx);
}

/* Memory back: a transaction inserting 2 begins and commits. */
static void table_store_insert_2(struct table_store *t)
{
	evh_tx *tx = NULL;
	assert_int_equal(store_tx_begin(t->s, &tx), EVH_OK);
	assert_int_equal(store_exec(tx, "INSERT INTO t VALUES(2)", NULL, 0, NULL), EVH_OK);
	assert_int_equal(store_tx_commit(tx), EVH_OK);
}

static void test_store_rollback_without_memory(void **state)
{
	struct table_store t;
	(void)state;
	table_store_left_open(&t, "rollback.db");
	/* The store writes again, and the insert was not kept. */
	table_store_insert_2(&t);
	table_store_check_close(&t, "2");
}

/* A group member whose rollback SQLite could not run (its ROLLBACK TO
 * prepared for the first time, out of memory) left its writes in the
 * group's transaction, and the next member's commit committed them. */
static void test_store_group_member_rollback_without_memory(void **state)
{
	struct table_store t;
	evh_tx *tx = NULL;
	(void)state;
	table_store_open(&t, "group.db");
	for (int i = 1; i <= 3; i++) {
		evh_value v = EVH_INT(i);
		assert_int_equal(store_tx_begin_grouped(t.s, &tx), EVH_OK);
		assert_int_equal(store_exec(tx, "INSERT INTO t VALUES(?)", &v, 1, NULL), EVH_OK);
		if (i == 2)
			rollback_without_memory(tx);
		else
			assert_int_equal(store_tx_commit(tx), EVH_OK);
	}
	table_store_check_close(&t, "1,3");
}

/* A transaction a failed ROLLBACK left open was ended by the next BEGIN
 * only: a write made in autocommit before that (the admin's mark that a
 * dead letter was redriven) went into it, was reported done, and was
 * rolled back with it, so a later "redrive all" sent the dead letter again. */
static void test_store_autocommit_write_after_a_failed_rollback_is_kept(void **state)
{
	struct table_store t;
	(void)state;
	table_store_left_open(&t, "mark.db");
	assert_int_equal(store_dlq_mark_redriven(t.s, "t.dlq", 0, 5, 1000, "t", 0, 7), EVH_OK);
	/* The next transaction begins (and ends what was left open, if it was). */
	table_store_insert_2(&t);
	assert_int_equal(store_dlq_redriven(t.s, "t.dlq", 0, 5, 1000), 1);
	table_store_check_close(&t, "2");
}

/* synchronous as the next transaction sees it: 2 is FULL. */
static int64_t synchronous_now(store *s)
{
	evh_tx *tx = NULL;
	evh_rows *rows = NULL;
	int64_t v;
	assert_int_equal(store_tx_begin(s, &tx), EVH_OK);
	assert_int_equal(store_query(tx, "PRAGMA synchronous", NULL, 0, &rows), EVH_OK);
	assert_int_equal(store_rows_next(rows), 1);
	v = store_rows_int(rows, 0);
	store_rows_close(rows);
	store_tx_rollback(tx);
	return v;
}

/* The sweep of both tests below: a delivery record made while SQLite's
 * allocations fail from the kth on (`count` of them), for each k until one
 * runs without a failure; after each, the next transaction begins, at FULL. */
static void lazy_sync_sweep(const char *name, long count)
{
	char dir[40], path[64], err[256], id[16];
	outbox_row row, *rows = NULL;
	outbox_done done[1];
	store *s = NULL;
	evh_tx *tx = NULL;
	size_t n = 0;
	int hit = 1;
	test_make_dir(dir, sizeof dir, name);
	snprintf(path, sizeof path, "%s/lazy.db", dir);
	assert_int_equal(store_open(&s, path, "FULL", err, sizeof err), EVH_OK);
	assert_int_equal(synchronous_now(s), 2);
	oom_row(&row, "t");
	for (long k = 0; hit && k < 5000; k++) {
		snprintf(id, sizeof id, "id-%ld", k);
		row.id = id;
		assert_int_equal(store_tx_begin(s, &tx), EVH_OK);
		assert_int_equal(store_outbox_add(tx, &row), EVH_OK);
		assert_int_equal(store_tx_commit(tx), EVH_OK);
		assert_int_equal(store_outbox_fetch(s, 0, 1, &rows, &n), EVH_OK);
		assert_int_equal(n, 1);
		done[0] = (outbox_done){rows[0].seq, 0, k};
		store_outbox_rows_free(rows, n);
		alloc_faults_arm_many(k, count, ALLOC_THIS_THREAD | ALLOC_SQLITE);
		(void)store_outbox_delivered(s, done, 1);
		hit = alloc_faults_disarm();
		if (store_tx_begin(s, &tx) != EVH_OK)
			fail_msg("SQLite's allocation %ld of a delivery record failed: the next "
			         "transaction cannot begin: %s",
			         k, store_thread_error());
		store_tx_rollback(tx);
		if (synchronous_now(s) != 2)
			fail_msg("SQLite's allocation %ld of a delivery record failed: synchronous is "
			         "NORMAL after",
			         k);
		/* the row goes, delivered or not, so the next fetch has the new one */
		if (store_outbox_pending(s))
			assert_int_equal(store_outbox_delivered(s, done, 1), EVH_OK);
	}
	assert_false(hit);
	store_close(s);
	remove_db_files(path);
	rmdir(dir);
}

/* The relay records deliveries at synchronous = NORMAL and sets FULL again
 * after (lazy_sync). Setting it again prepares the pragma, which can fail
 * for want of memory: a FULL store then went on committing without an
 * fsync. Each of SQLite's allocations in the record failed in turn: the
 * next transaction runs at FULL every time. */
static void test_store_lazy_sync_is_always_undone(void **state)
{
	(void)state;
	lazy_sync_sweep("oom-lazy", 1);
}

/* As above, with memory short for the rest of the record from allocation k
 * on: the ROLLBACK after the failure fails too (every try), and so does
 * setting FULL again, so the record's transaction stays open at NORMAL. The
 * next transaction must still begin, at FULL: setting it again inside that
 * open transaction would fail (SQLite refuses to change the safety level in
 * one) and refused every later write until a restart. */
static void test_store_lazy_sync_undone_after_a_failed_rollback(void **state)
{
	(void)state;
	lazy_sync_sweep("oom-lazy-rb", 1L << 30);
}

static void test_store(void **state)
{
	char dir[] = "/tmp/evhost-oom-XXXXXX", path[64];
	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof path, "%s/oom.db", dir);
	assert_true(sweep(store_scenario, path) > 5);
	assert_true(sweep(consume_scenario, path) > 5);
	remove_db_files(path);
	rmdir(dir);
}

/* ----------------------------------------------------------------- relay */

#define RELAY_ROWS 3

/* A host's Kafka client on an embedded broker, and a database path in a
 * directory of its own. Settings beyond the broker's are the caller's. */
struct kafka_rig {
	char dir[24], path[64];
	settings s;
	kafka *k;
};

static void kafka_rig_start(struct kafka_rig *g, const char *db)
{
	char err[256];
	snprintf(g->dir, sizeof g->dir, "/tmp/evhost-oom-XXXXXX");
	assert_non_null(mkdtemp(g->dir));
	snprintf(g->path, sizeof g->path, "%s/%s", g->dir, db);
	g->s.brokers = (char *)"embedded";
	g->s.embedded = 1;
	assert_int_equal(kafka_start(&g->k, &g->s, err, sizeof err), 0);
}

static void kafka_rig_stop(struct kafka_rig *g)
{
	kafka_stop(g->k, 5000);
	remove_db_files(g->path);
	rmdir(g->dir);
}

static int wait_pending_zero(store *s, int ms)
{
	int64_t end = clock_mono_ms() + ms;
	while (store_outbox_pending(s) != 0 && clock_mono_ms() < end)
		usleep(2000);
	return store_outbox_pending(s) == 0;
}

/* The relay's threads out of memory (the relay, the mover, the store's
 * checkpointer: every thread but the test's): whichever allocation fails,
 * every row committed must still reach the broker and be recorded in the
 * event log, before the outbox stops, never dropped or left behind. A fresh
 * outbox and relay each run, so first-use allocations are swept too. */
static int relay_scenario(void *arg)
{
	struct kafka_rig *f = arg;
	char err[256], *json = NULL;
	evh_plugin pl;
	outbox_row row;
	outbox *o = NULL;
	evh_tx *tx = NULL;
	int delivered;

	memset(&pl, 0, sizeof pl);
	pl.name = (char *)"relay";
	remove_db_files(f->path);
	assert_int_equal(store_open(&pl.store, f->path, "NORMAL", err, sizeof err), EVH_OK);
	oom_row(&row, "OOM_EVENTS");
	assert_int_equal(store_tx_begin(pl.store, &tx), EVH_OK);
	for (int i = 0; i < RELAY_ROWS; i++) {
		char id[16];
		snprintf(id, sizeof id, "row-%d", i);
		row.id = id;
		assert_int_equal(store_outbox_add(tx, &row), EVH_OK);
	}
	assert_int_equal(store_tx_commit(tx), EVH_OK);

	assert_int_equal(outbox_start(&o, f->k, "evhost://oom"), 0);
	outbox_add_plugin(o, &pl);
	delivered = wait_pending_zero(pl.store, 10000);
	outbox_remove_plugin(o, &pl);
	assert_int_equal(outbox_stop(o, 5000), 0);
	assert_true(delivered);
	assert_int_equal(store_events_json(pl.store, "k", 0, 10, &json), EVH_OK);
	for (int i = 0; i < RELAY_ROWS; i++) {
		char id[24];
		snprintf(id, sizeof id, "\"row-%d\"", i);
		assert_non_null(strstr(json, id));
	}
	free(json);
	store_close(pl.store);
	return 0;
}

static void test_relay(void **state)
{
	struct kafka_rig f;
	long runs;
	(void)state;
	memset(&f, 0, sizeof f);
	kafka_rig_start(&f, "relay.db");
	/* Each failure costs a wait (the next look at the outbox): keep it short.
	 * The idle look is a minute away: a run whose failure lost the relay's
	 * or the mover's wake-up (the commit's, a delivery report's) would wait
	 * for it, past the scenario's 10 s. */
	outbox_set_resend_delay_ms(10);
	outbox_set_idle_wait_ms(60000);
	runs = sweep_threads(relay_scenario, &f, ALLOC_OTHER_THREADS);
	print_message("relay: %ld runs\n", runs);
	assert_true(runs > 5);
	/* SQLite's allocations on those threads: reading the outbox, recording
	 * deliveries, pruning, checkpointing. */
	runs = sweep_threads(relay_scenario, &f, ALLOC_OTHER_THREADS | ALLOC_SQLITE);
	print_message("relay, SQLite's allocations: %ld runs\n", runs);
	assert_true(runs > 5);
	outbox_set_idle_wait_ms(0);
	outbox_set_resend_delay_ms(0);
	kafka_rig_stop(&f);
}

/* -------------------------------------------------------------- consumer */

/* More than a partition's buffer holds at first (16), so that it grows. */
#define CONSUME_EVENTS 20

struct consume_fixture {
	struct kafka_rig g;
	evh_plugin pl;
	plugin_sub sub;
	int produced;      /* events sent so far: ids ev-0, ev-1, ... */
	int64_t seen_rowid; /* check_order's place in the sink */
	long seen_ev;
	atomic_int acked;  /* their delivery reports */
};

static atomic_int starved; /* a "dl-" event left its thread without memory */

/* Records each event; the second of each run's (ev-1, ev-21, ...) fails its
 * first attempt, so a retry is scheduled on the way too. An event "dl-..."
 * is rejected, and every allocation of its thread fails from then on (until
 * the test disarms): its dead letter cannot be sent, nor parked. */
static evh_event_result sink(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud)
{
	const char *id = kafka_ev_id(ev);
	evh_value v = EVH_TEXT(id);
	(void)p;
	(void)ud;
	if (!strncmp(id, "dl-", 3)) {
		alloc_faults_arm_many(0, 1L << 40, ALLOC_THIS_THREAD);
		atomic_store(&starved, 1);
		return EVH_EVENT_REJECT;
	}
	if (kafka_ev_attempt(ev) == 1 && strtol(id + 3, NULL, 10) % CONSUME_EVENTS == 1)
		return EVH_EVENT_RETRY;
	return store_exec(tx, "INSERT INTO handled(id) VALUES(?)", &v, 1, NULL) == EVH_OK
	           ? EVH_EVENT_OK
	           : EVH_EVENT_RETRY;
}

static void acked(void *opaque, int ok, const char *error)
{
	struct consume_fixture *f = opaque;
	(void)error;
	assert_true(ok);
	atomic_fetch_add(&f->acked, 1);
}

/* How many events the sink holds, and how many distinct ones. */
static void handled_counts(store *s, int64_t *all, int64_t *distinct)
{
	evh_tx *tx = NULL;
	evh_rows *rows = NULL;
	assert_int_equal(store_tx_begin(s, &tx), EVH_OK);
	assert_int_equal(store_query(tx, "SELECT COUNT(*), COUNT(DISTINCT id) FROM handled", NULL,
	                             0, &rows),
	                 EVH_OK);
	assert_int_equal(store_rows_next(rows), 1);
	*all = store_rows_int(rows, 0);
	*distinct = store_rows_int(rows, 1);
	store_rows_close(rows);
	store_tx_rollback(tx);
}

/* The events the sink took since the last look were handled in the order
 * they were sent (one key: one partition). */
static void check_order(struct consume_fixture *f)
{
	evh_tx *tx = NULL;
	evh_rows *rows = NULL;
	evh_value after = EVH_INT(f->seen_rowid);
	assert_int_equal(store_tx_begin(f->pl.store, &tx), EVH_OK);
	assert_int_equal(store_query(tx, "SELECT rowid, id FROM handled WHERE rowid > ? "
	                                 "ORDER BY rowid",
	                             &after, 1, &rows),
	                 EVH_OK);
	while (store_rows_next(rows) == 1) {
		long ev = strtol(store_rows_text(rows, 1, NULL) + 3, NULL, 10);
		if (ev <= f->seen_ev)
			fail_msg("ev-%ld handled after ev-%ld", ev, f->seen_ev);
		f->seen_ev = ev;
		f->seen_rowid = store_rows_int(rows, 0);
	}
	store_rows_close(rows);
	store_tx_rollback(tx);
}

/* Send `n` more events and wait until the sink has them all, each once, in
 * order. */
static int consume_more(struct consume_fixture *f, int n, int ms)
{
	outbox_row row;
	int64_t end = clock_mono_ms() + ms, all = 0, distinct = 0;
	int want = f->produced + n;
	oom_row(&row, "OOM_CONSUME");
	for (; f->produced < want; f->produced++) {
		char id[16];
		snprintf(id, sizeof id, "ev-%d", f->produced);
		row.id = id;
		assert_int_equal(kafka_produce_row(f->g.k, &row, "evhost://oom", acked, f), EVH_OK);
	}
	while (atomic_load(&f->acked) < want && clock_mono_ms() < end)
		kafka_poll_producer(f->g.k, 10);
	do {
		handled_counts(f->pl.store, &all, &distinct);
		if (all < want)
			usleep(2000);
	} while (all < want && clock_mono_ms() < end);
	assert_int_equal(all, distinct);
	check_order(f);
	return all == want;
}

/* The consumer's thread out of memory: whichever allocation fails, every
 * event is handled, once (an attempt that fails is tried again), in order,
 * none is given up as a dead letter. */
static int consume_thread_scenario(void *arg)
{
	struct consume_fixture *f = arg;
	assert_true(consume_more(f, CONSUME_EVENTS, 10000));
	return 0;
}

/* A consuming plugin "sink" on OOM_CONSUME, assigned, the topic there. */
static void consume_start(struct consume_fixture *f)
{
	static const evh_migration mig[] = {{1, "CREATE TABLE handled(id TEXT)"}};
	/* The embedded broker makes a fetch at the end of a partition wait this
	 * long (500 ms by default) before it answers: each run would. */
	static rdkafka_prop fetch_wait[] = {{(char *)"fetch.wait.max.ms", (char *)"10", NULL, 0}};
	char err[256];
	memset(f, 0, sizeof *f);
	f->seen_ev = -1;
	f->g.s.dlq_suffix = (char *)".dlq";
	f->g.s.retry_max_attempts = 3;
	f->g.s.retry_backoff_ms = 10;
	f->g.s.retry_backoff_max_ms = 50;
	f->g.s.rdkafka = fetch_wait;
	f->g.s.nrdkafka = 1;
	kafka_rig_start(&f->g, "consume.db");
	f->pl.name = (char *)"sink";
	f->pl.group = (char *)"evhost.oom";
	assert_int_equal(store_open(&f->pl.store, f->g.path, "NORMAL", err, sizeof err), EVH_OK);
	assert_int_equal(store_migrate(f->pl.store, mig, 1, err, sizeof err), EVH_OK);
	f->sub.topic = (char *)"OOM_CONSUME";
	f->sub.handler = sink;
	f->pl.subs = &f->sub;
	f->pl.nsubs = 1;
	assert_int_equal(consumer_start(f->g.k, &f->pl, &f->g.s, err, sizeof err), 0);
	assert_true(consume_more(f, 1, 30000)); /* assigned, and the topic exists */
}

static void consume_stop(struct consume_fixture *f)
{
	consumer_stop(&f->pl);
	store_close(f->pl.store);
	kafka_rig_stop(&f->g);
}

static void test_consumer(void **state)
{
	struct consume_fixture f;
	long runs;
	(void)state;
	consume_start(&f);
	runs = sweep_threads(consume_thread_scenario, &f, ALLOC_OTHER_THREADS);
	print_message("consumer: %ld runs\n", runs);
	assert_true(runs > 5);
	consume_stop(&f);
}

/* A dead letter that can be neither sent nor parked (no memory for its
 * partition's slot) is waited for on the consumer's thread, as before
 * parking: written once memory comes back, its offset stored, nothing
 * lost, and the partition goes on. */
static void test_dead_letter_parking_without_memory(void **state)
{
	static const char *const topics[] = {"OOM_CONSUME.sink.dlq"};
	struct consume_fixture f;
	outbox_row row;
	dlq_list l;
	char err[256];
	int64_t end;
	size_t found = 0;
	(void)state;
	consume_start(&f);
	atomic_store(&starved, 0);
	oom_row(&row, "OOM_CONSUME");
	row.id = (char *)"dl-1";
	assert_int_equal(kafka_produce_row(f.g.k, &row, "evhost://oom", acked, &f), EVH_OK);
	end = clock_mono_ms() + 10000;
	while (!atomic_load(&starved) && clock_mono_ms() < end)
		usleep(2000);
	assert_true(atomic_load(&starved));
	usleep(1000 * 1000); /* a second of failed sends, every 100 ms */
	assert_true(alloc_faults_disarm());
	assert_true(consume_more(&f, 2, 10000)); /* the partition goes on, each once */
	assert_int_equal(dlq_read(f.g.k, topics, 1, 100, 10000, &l, err, sizeof err), EVH_OK);
	for (size_t i = 0; i < l.n; i++) {
		const char *id = dlq_header(&l.v[i], "ce_id", NULL);
		found += id && !strcmp(id, "dl-1");
	}
	dlq_list_free(&l);
	assert_int_equal(found, 1);
	consume_stop(&f);
}

/* Two processes side by side (test_parts.h): the relay's sweep (12 s plain)
 * alone, the rest (10 s: the consumer's 5, the dead-letter parking's 4). In
 * one process it ended the unit tests (22 s plain, 38 s in a loaded run). */
#define TEST_PARTS 2
static const struct part_test all_tests[] = {
    {cmocka_unit_test(test_router), 2},
    {cmocka_unit_test(test_proxy), 2},
    {cmocka_unit_test(test_jwt), 2},
    {cmocka_unit_test(test_jwks), 2},
    {cmocka_unit_test(test_jwks_fetch), 2},
    {cmocka_unit_test(test_name_lookup_without_memory), 2},
    {cmocka_unit_test(test_config), 2},
    {cmocka_unit_test(test_config_problem_not_recorded), 2},
    {cmocka_unit_test(test_plugin_metric), 2},
    {cmocka_unit_test(test_textbuf), 2},
    {cmocka_unit_test(test_jsonb_print), 2},
    {cmocka_unit_test(test_json_duplicate_member), 2},
    {cmocka_unit_test(test_jsonin), 2},
    {cmocka_unit_test(test_jsonin_strict), 2},
    {cmocka_unit_test(test_stream), 2},
    {cmocka_unit_test(test_stream_frame_not_queued_closes_the_stream), 2},
    {cmocka_unit_test(test_store), 2},
    {cmocka_unit_test(test_store_rollback_without_memory), 2},
    {cmocka_unit_test(test_store_group_member_rollback_without_memory), 2},
    {cmocka_unit_test(test_store_autocommit_write_after_a_failed_rollback_is_kept), 2},
    {cmocka_unit_test(test_store_lazy_sync_is_always_undone), 2},
    {cmocka_unit_test(test_store_lazy_sync_undone_after_a_failed_rollback), 2},
    {cmocka_unit_test(test_relay), 1},
    {cmocka_unit_test(test_consumer), 2},
    {cmocka_unit_test(test_dead_letter_parking_without_memory), 2},
};

int main(void)
{
	enum { N = sizeof all_tests / sizeof all_tests[0] };
	struct CMUnitTest tests[N];
	long n = test_parts_select("test_oom", TEST_PARTS, all_tests, N, tests);
	if (n < 0)
		return 2;
	log_setup(EVH_LOG_ERROR, LOG_FORMAT_TEXT);
	alloc_faults_cjson();
	if (alloc_faults_sqlite() != SQLITE_OK) {
		fprintf(stderr, "SQLite refused the test's allocator\n");
		return 1;
	}
	return _cmocka_run_group_tests("test_oom", tests, (size_t)n, NULL, NULL);
}
