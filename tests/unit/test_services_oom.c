/* The three services out of memory, end to end: a host started as evhostd
 * starts one (host_configure, host_start) with user.so, crud.so and
 * notifications.so from the build, Kafka embedded, HTTP on a real socket.
 * The allocations failed one by one (alloc_faults.h, ALLOC_OTHER_THREADS:
 * every thread but the test's) are the host's own, the plugins' and cJSON's:
 * the plugins are the build's tests/fault-plugins/ modules, linked with
 * their malloc family wrapped to this program's wrappers, and they build and
 * parse their JSON with the process's one libcjson, whose hooks send its
 * allocations to the same place. Then, in the same sweeps, SQLite's
 * (ALLOC_SQLITE: its allocator is the test's), the plugins' storage
 * included. Not reached: what libc allocates for itself (dlopen, stdio,
 * asprintf) and what civetweb, librdkafka and libcurl allocate.
 *
 * What must hold in every run:
 * - the welcome mail of a user created before the run arrives, whatever
 *   allocation failed on its way (relay, consumer, the plugin's parse):
 *   an event whose handler ran out of memory is retried, never
 *   dead-lettered;
 * - every HTTP answer is the one a run without failures gives (byte for
 *   byte where nothing changes between runs; complete, for a creation), or
 *   an out-of-memory answer: a 5xx problem, or a status without a body. A
 *   list must never come back without its filter, a success never without
 *   a part of its document;
 * - a user exists exactly when its creation was answered 201 (or 500 saying
 *   the request was carried out), and gets its welcome mail;
 * - at the end, no dead letter in any plugin's dead-letter topics.
 *
 * And a reload (host_reload, SIGHUP's) that restarts crud, with the Nth
 * allocation of the reloading thread failing in run N: it is applied, or
 * the log says out of memory at ERROR or WARN; every service answers, none
 * is left listed but not running, one left off is down on /readyz, crud's
 * events leave its outbox; the next reload, memory back, applies the
 * configuration. Of the allocations reading the configuration files, one
 * in CONFIG_STRIDE is failed (test_oom.c's test_config fails each, the
 * reader alone): the reload is refused, saying out of memory. The same
 * reload again with SQLite's allocations failed (one in SQLITE_STRIDE).
 * And, with memory, a reload restarting crud while crud is pinned (as an
 * admin request pins it) waits for the pin before it destroys crud. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "alloc_faults.h"
#include "clock.h"
#include "diag.h"
#include "host.h"
#include "http.h"
#include "http_client.h"
#include "log.h"
#include "outbox.h"
#include "stderr_capture.h"
#include "test_files.h"
#include "test_parts.h"

#define ADMIN_TOKEN "services-oom-admin-token"
#define ADMIN_EMAIL "admin@example.com"
#define ADMIN_PASSWORD "admin password 1"
#define FIRST_EMAIL "first@example.com"
#define MAIL_WAIT_MS 30000

typedef struct fixture {
	char dir[64];
	int port;
	host h;
	char token[1024]; /* the administrator's bearer token */
	char auth[1100];  /* "Authorization: Bearer ...\r\n" */
	char admin[128];  /* the admin API's header */
	char first_id[64];
	char lamp_id[64]; /* the first lamp's */
} fixture;

/* ------------------------------------------------------------- helpers */

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Whether a file in the maildir's new/ holds `needle`. */
static int mail_has(fixture *f, const char *needle)
{
	char path[256];
	struct dirent *e;
	DIR *d;
	int found = 0;
	snprintf(path, sizeof path, "%s/maildir/new", f->dir);
	d = opendir(path);
	if (!d)
		return 0;
	while (!found && (e = readdir(d))) {
		char file[600], buf[8192];
		FILE *m;
		size_t n;
		if (e->d_name[0] == '.')
			continue;
		snprintf(file, sizeof file, "%s/%s", path, e->d_name);
		m = fopen(file, "r");
		if (!m)
			continue;
		n = fread(buf, 1, sizeof buf - 1, m);
		buf[n] = '\0';
		fclose(m);
		found = strstr(buf, needle) != NULL;
	}
	closedir(d);
	return found;
}

static int wait_mail(fixture *f, const char *email, int ms)
{
	char to[160];
	int64_t until = clock_mono_ms() + ms;
	snprintf(to, sizeof to, "<%s>", email); /* To: "Name" <email> */
	while (!mail_has(f, to)) {
		if (clock_mono_ms() > until)
			return 0;
		sleep_ms(10);
	}
	return 1;
}

/* Whether GET /notifications lists a row for `email` within `ms`. */
static int wait_logged(fixture *f, const char *email, int ms)
{
	char path[160];
	int64_t until = clock_mono_ms() + ms;
	snprintf(path, sizeof path, "/notifications?recipient=%s", email);
	for (;;) {
		char *r = http_request(f->port, "GET", path, f->auth, NULL);
		int found = r && strstr(body_of(r), "\"recipient\"") != NULL;
		free(r);
		if (found)
			return 1;
		if (clock_mono_ms() > until)
			return 0;
		sleep_ms(10);
	}
}

/* A member of the reply's JSON body, as text ("" when absent). */
static const char *json_member(const char *reply, const char *name, char *out, size_t n)
{
	cJSON *j = cJSON_Parse(body_of(reply));
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
	snprintf(out, n, "%s", cJSON_IsString(v) ? v->valuestring : "");
	cJSON_Delete(j);
	return out;
}

/* `method` with a JSON body. */
static char *send_json(fixture *f, const char *method, const char *path, const char *hdrs,
                       const char *body)
{
	char h[1200];
	snprintf(h, sizeof h, "Content-Type: application/json\r\n%s", hdrs ? hdrs : "");
	return http_request(f->port, method, path, h, body);
}

static char *post_json(fixture *f, const char *path, const char *hdrs, const char *body)
{
	return send_json(f, "POST", path, hdrs, body);
}

/* ------------------------------------------------------------- fixture */

/* retry.max_attempts 1000: a run fails one allocation, but an event's retry
 * still pending when the next run arms can be failed again, run after run
 * (seen: five in a row, and the event dead-lettered). What is tested is that
 * an event out of memory is retried, not dead-lettered at once; how many
 * failures in a row it survives is the retry policy's. */
static void write_config(fixture *f)
{
	char text[2048], sub[128];
	snprintf(sub, sizeof sub, "%s/conf.d", f->dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	snprintf(sub, sizeof sub, "%s/state", f->dir);
	assert_int_equal(mkdir(sub, 0700), 0);
	test_write_file(f->dir, "jwt.secret", "services-oom-unit-test-secret-0123456789\n", 0600);
	test_write_file(f->dir, "admin.token", ADMIN_TOKEN "\n", 0600);
	test_write_file(f->dir, "admin.password", ADMIN_PASSWORD "\n", 0600);
	snprintf(text, sizeof text,
	         "[host]\nplugin_dir = %s\nstate_dir = %s/state\n"
	         "[http]\nlisten = 127.0.0.1:0\nthreads = 64\nmax_streams = 48\n"
	         "[kafka]\nbrokers = embedded\nretry.backoff_ms = 20\n"
	         "retry.backoff_max_ms = 200\nretry.max_attempts = 1000\n"
	         "rdkafka.fetch.wait.max.ms = 10\n"
	         "[auth]\njwt_secret_file = %s/jwt.secret\n"
	         "[admin]\ntoken_file = %s/admin.token\n"
	         "[log]\nlevel = error\nformat = text\n",
	         EVHOST_TEST_FAULT_PLUGINS, f->dir, f->dir, f->dir);
	test_write_file(f->dir, "evhost.conf", text, 0600);
	snprintf(text, sizeof text,
	         "[plugin.user]\nenabled = true\nargon2_opslimit = min\nargon2_memlimit = min\n"
	         "admin_email = " ADMIN_EMAIL "\nadmin_password_file = %s/admin.password\n",
	         f->dir);
	test_write_file(f->dir, "conf.d/10-user.conf", text, 0600);
	test_write_file(f->dir, "conf.d/20-crud.conf",
	           "[plugin.crud]\nenabled = true\ncollections = products, orders\n"
	           "collection.products.required = name, price\n"
	           "collection.products.types = name:string, price:number\n",
	           0600);
	snprintf(text, sizeof text,
	         "[plugin.notifications]\nenabled = true\ntransport = maildir\n"
	         "maildir = %s/maildir\ntemplates_dir = %s/plugins/notifications/templates\n",
	         f->dir, EVHOST_TEST_SRCDIR);
	test_write_file(f->dir, "conf.d/30-notifications.conf", text, 0600);
}

static void wait_ready(fixture *f)
{
	int64_t until = clock_mono_ms() + 60000;
	for (;;) {
		char *r = http_request(f->port, "GET", "/readyz", NULL, NULL);
		int ok = r[0] && status_of(r) == 200;
		free(r);
		if (ok)
			return;
		if (clock_mono_ms() > until)
			fail_msg("the host did not become ready in 60 s");
		sleep_ms(50);
	}
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	char conf[128], *r, buf[64];
	diag d = {0};
	assert_non_null(f);
	snprintf(f->dir, sizeof f->dir, "/tmp/evh-services-oom-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(conf, sizeof conf, "%s/evhost.conf", f->dir);
	/* A delivery the relay could not produce or record is tried again after
	 * 20 ms, not a second: runs that fail one wait that long for their mail. */
	outbox_set_resend_delay_ms(20);
	/* Port 0, the system's choice: a port picked free beforehand could be
	 * taken by another test program (ctest runs them side by side) before
	 * the host listens. */
	write_config(f);
	if (host_configure(&f->h, conf, &d) != 0) {
		diag_print(&d, stderr);
		fail_msg("host_configure failed");
	}
	diag_free(&d);
	log_setup(f->h.set.log_level, f->h.set.log_fmt);
	if (host_start(&f->h) != 0)
		fail_msg("host_start failed (the log says why)");
	f->port = http_bound_port(f->h.http, 0);
	assert_true(f->port > 0);
	wait_ready(f);
	r = post_json(f, "/auth/login", NULL,
	              "{\"email\":\"" ADMIN_EMAIL "\",\"password\":\"" ADMIN_PASSWORD "\"}");
	assert_int_equal(status_of(r), 200);
	json_member(r, "token", f->token, sizeof f->token);
	free(r);
	assert_true(f->token[0]);
	snprintf(f->auth, sizeof f->auth, "Authorization: Bearer %s\r\n", f->token);
	snprintf(f->admin, sizeof f->admin, "Authorization: Bearer " ADMIN_TOKEN "\r\n");
	/* What the runs read and must always find the same. */
	r = post_json(f, "/users", NULL,
	              "{\"name\":\"First\",\"email\":\"" FIRST_EMAIL "\",\"password\":\"first "
	              "password 1\"}");
	assert_int_equal(status_of(r), 201);
	json_member(r, "id", f->first_id, sizeof f->first_id);
	free(r);
	for (int i = 0; i < 3; i++) {
		snprintf(buf, sizeof buf, "{\"name\":\"%s\",\"price\":%d}", i == 1 ? "desk" : "lamp",
		         i);
		r = post_json(f, "/crud/products", NULL, buf);
		assert_int_equal(status_of(r), 201);
		if (i == 0)
			json_member(r, "id", f->lamp_id, sizeof f->lamp_id);
		free(r);
	}
	assert_true(wait_mail(f, FIRST_EMAIL, MAIL_WAIT_MS));
	/* GET /notifications reads committed rows: the mail is written before
	 * its row commits, and the runs read the row. */
	assert_true(wait_logged(f, FIRST_EMAIL, MAIL_WAIT_MS));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	if (!f)
		return 0;
	host_stop(&f->h);
	test_remove_tree(f->dir);
	free(f);
	return 0;
}

/* --------------------------------------------------------------- tests */

/* The welcome mail's way (the relay producing USER_CREATED, the consumer,
 * notifications' handler) with its Nth allocation failing in run N;
 * `scope`: 0 or ALLOC_SQLITE (SQLite's allocations alone); `threads`: the
 * threads counted (alloc_faults_threads; NULL: all but the test's, armed
 * once the POST is answered, as its HTTP worker is one of them; else armed
 * before it). The sweep ends at a run that failed nothing, done twice: once,
 * it may only say that the event went its way before the test armed (its
 * thread held off the CPU after the POST; seen on a loaded machine: "2
 * runs"). */
static void sweep_welcome_mail(fixture *f, int scope, const char *threads)
{
	static int sweeps;
	int64_t t0 = clock_mono_ms();
	int sweep = sweeps++, quiet = 0;
	long n;
	for (n = 0;; n += ALLOC_SWEEP_STEP) {
		char body[256], email[64], *r;
		int failed, arrived;
		snprintf(email, sizeof email, "welcome%d-%ld-%d@example.com", sweep, n, quiet);
		snprintf(body, sizeof body,
		         "{\"name\":\"W %ld\",\"email\":\"%s\",\"password\":\"welcome password\"}", n,
		         email);
		alloc_faults_threads(threads);
		if (threads)
			alloc_faults_arm(n, ALLOC_OTHER_THREADS | scope);
		r = post_json(f, "/users", NULL, body);
		if (status_of(r) != 201)
			fail_msg("run %ld: POST /users: %s", n, r);
		free(r);
		if (!threads)
			alloc_faults_arm(n, ALLOC_OTHER_THREADS | scope);
		arrived = wait_mail(f, email, MAIL_WAIT_MS);
		failed = alloc_faults_disarm();
		alloc_faults_threads(NULL);
		if (!arrived)
			fail_msg("run %ld: no welcome mail for %s in %d s%s", n, email,
			         MAIL_WAIT_MS / 1000, failed ? " (an allocation was failed)" : "");
		if (failed) {
			quiet = 0;
		} else if (++quiet == 2) {
			break;
		} else {
			n -= ALLOC_SWEEP_STEP; /* the same run again */
		}
	}
	printf("welcome mail%s%s%s: %ld runs, %.1f s\n", scope ? " (SQLite's allocations)" : "",
	       threads ? ", threads " : "", threads ? threads : "", n + 1,
	       (double)(clock_mono_ms() - t0) / 1000);
	assert_true(n > 10);
}

static void test_welcome_mail_arrives(void **state) { sweep_welcome_mail(*state, 0, NULL); }

/* SQLite's allocations on the consumer's thread (the inbox record, the
 * handler's writes, the batch's commit). Counted on every thread, the
 * failures land mostly where SQLite allocates whatever the event does (a
 * relay's read after a checkpoint, the mover's retried deletes), so the
 * handler's storage would go untested. */
static void test_welcome_mail_arrives_sqlite(void **state)
{
	sweep_welcome_mail(*state, ALLOC_SQLITE, "evh-c:notific");
}

struct req {
	const char *method, *path, *hdrs, *body;
	int status;
	int stable;       /* the body is the same in every run */
	const char *must; /* else: a member its JSON body must have */
	/* A list's filter: each of its "items" has `key` = `value`. */
	const char *key, *value;
	/* It adds what another request reads: left out of the SQLite sweep,
	 * whose reads allocate per row (the run would never end). */
	int grows;
};

/* An out-of-memory answer: a 5xx problem, or a status without a body (a
 * problem that could not be written keeps its status). */
static int oom_answer(const char *r, int want)
{
	const char *ct = header_of(r, "Content-Type");
	int st = status_of(r);
	return (st >= 500 && ct && !strcmp(ct, "application/problem+json")) ||
	       ((st >= 500 || (st == want && st >= 400)) && !*body_of(r));
}

static void check_answer(long n, const struct req *q, const char *r, const char *want,
                         int failed)
{
	int st;
	if (!r[0])
		fail_msg("run %ld, %s %s: the connection closed without an answer", n, q->method,
		         q->path);
	st = status_of(r);
	if (failed && oom_answer(r, q->status))
		return;
	if (st != q->status)
		fail_msg("run %ld, %s %s: %d, expected %d%s:\n%s", n, q->method, q->path, st,
		         q->status, failed ? " or an out-of-memory answer" : "", r);
	if (q->stable && strcmp(body_of(r), body_of(want)))
		fail_msg("run %ld, %s %s: %s\nexpected the body of\n%s", n, q->method, q->path, r,
		         want);
	if (q->must) {
		cJSON *j = cJSON_Parse(body_of(r));
		int has = cJSON_GetObjectItemCaseSensitive(j, q->must) != NULL;
		cJSON_Delete(j);
		if (!has)
			fail_msg("run %ld, %s %s: no \"%s\" in %s", n, q->method, q->path, q->must, r);
	}
	if (q->key) {
		cJSON *j = cJSON_Parse(body_of(r)), *it;
		const cJSON *items = cJSON_GetObjectItemCaseSensitive(j, "items");
		int count = 0;
		cJSON_ArrayForEach(it, items) {
			const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, q->key);
			if (!cJSON_IsString(v) || strcmp(v->valuestring, q->value))
				fail_msg("run %ld, %s %s: an item without %s = %s (the filter lost?):\n%s",
				         n, q->method, q->path, q->key, q->value, r);
			count++;
		}
		cJSON_Delete(j);
		if (!count)
			fail_msg("run %ld, %s %s: no items: %s", n, q->method, q->path, r);
	}
}

/* Requests through the three services, their Nth allocation failing in run
 * N; `scope`: 0 or ALLOC_SQLITE. */
static void sweep_answers(fixture *f, int scope)
{
	char user_path[128], notif_path[128], chair[64];
	enum { NREQ = 14 };
	char lamp_path[128], lamp_page[] = "/crud/products?name=lamp&limit=1";
	struct req q[NREQ] = {
	    {"GET", "/crud/products?name=lamp", NULL, NULL, 200, 1, NULL, "name", "lamp", 0},
	    {"GET", "/crud/products/none-such", NULL, NULL, 404, 1, NULL, NULL, NULL, 0},
	    {"POST", "/crud/products", NULL, chair, 201, 0, "id", NULL, NULL, 1},
	    {"POST", "/crud/products", NULL, "{\"name\":7,\"price\":1}", 422, 1, NULL, NULL, NULL, 0},
	    {"GET", user_path, f->auth, NULL, 200, 1, NULL, NULL, NULL, 0},
	    /* broadcasts add to it: not the same in each run */
	    {"GET", notif_path, f->auth, NULL, 200, 0, "next_cursor", "recipient", FIRST_EMAIL, 0},
	    {"POST", "/auth/login", NULL,
	     "{\"email\":\"" ADMIN_EMAIL "\",\"password\":\"" ADMIN_PASSWORD "\"}", 200, 0, "token",
	     NULL, NULL, 0},
	    {"POST", "/notifications/broadcast", f->auth,
	     "{\"subject\":\"Hello\",\"message\":\"to all\"}", 202, 0, "broadcast_id", NULL, NULL,
	     1},
	    {"GET", "/admin/plugins/crud", f->admin, NULL, 200, 0, "subscriptions", NULL, NULL, 0},
	    {"GET", "/users", f->auth, NULL, 200, 0, "items", NULL, NULL, 0},
	    /* each PUT makes a new version: not the same in each run */
	    {"PUT", lamp_path, NULL, "{\"name\":\"lamp\",\"price\":0}", 200, 0, "id", NULL, NULL, 0},
	    {"PATCH", lamp_path, NULL, "{\"price\":null}", 422, 1, NULL, NULL, NULL, 0},
	    {"GET", lamp_page, NULL, NULL, 200, 1, "next_cursor", "name", "lamp", 0},
	    /* nothing changes: the same answer each time */
	    {"PATCH", user_path, f->auth, "{\"name\":\"First\"}", 200, 1, NULL, NULL, NULL, 0},
	};
	char *want[NREQ];
	int64_t t0 = clock_mono_ms();
	long n;

	snprintf(user_path, sizeof user_path, "/users/%s", f->first_id);
	snprintf(lamp_path, sizeof lamp_path, "/crud/products/%s", f->lamp_id);
	snprintf(notif_path, sizeof notif_path, "/notifications?recipient=%s", FIRST_EMAIL);
	snprintf(chair, sizeof chair, "{\"name\":\"chair\",\"price\":1}");
	for (int i = 0; i < NREQ; i++) {
		want[i] = q[i].body ? send_json(f, q[i].method, q[i].path, q[i].hdrs, q[i].body)
		                    : http_request(f->port, q[i].method, q[i].path, q[i].hdrs, NULL);
		check_answer(-1, &q[i], want[i], want[i], 0);
	}
	/* The reference lamp list: two lamps, no desk. */
	assert_null(strstr(body_of(want[0]), "desk"));
	assert_non_null(strstr(strstr(body_of(want[0]), "lamp") + 1, "lamp"));
	for (n = 0;; n += ALLOC_SWEEP_STEP) {
		char *r[NREQ] = {NULL};
		int failed;
		alloc_faults_arm(n, ALLOC_OTHER_THREADS | scope);
		for (int i = 0; i < NREQ; i++)
			if (!scope || !q[i].grows)
				r[i] = q[i].body
				           ? send_json(f, q[i].method, q[i].path, q[i].hdrs, q[i].body)
				           : http_request(f->port, q[i].method, q[i].path, q[i].hdrs, NULL);
		failed = alloc_faults_disarm();
		for (int i = 0; i < NREQ; i++) {
			if (r[i])
				check_answer(n, &q[i], r[i], want[i], failed);
			/* SQLite's allocations are not the password check's: a
			 * login's account read again said so once. */
			if (r[i] && scope && strstr(r[i], "password hash"))
				fail_msg("run %ld, %s %s: SQLite out of memory said as a password "
				         "hash's:\n%s",
				         n, q[i].method, q[i].path, r[i]);
			free(r[i]);
		}
		if (!failed)
			break;
	}
	printf("HTTP answers%s: %ld runs, %.1f s\n", scope ? " (SQLite's allocations)" : "", n + 1,
	       (double)(clock_mono_ms() - t0) / 1000);
	assert_true(n > 50);
	for (int i = 0; i < NREQ; i++)
		free(want[i]);
}

static void test_answers(void **state) { sweep_answers(*state, 0); }
static void test_answers_sqlite(void **state) { sweep_answers(*state, ALLOC_SQLITE); }

/* The live stream's opening (GET /notifications/stream, its head read),
 * its Nth allocation failing in run N: the stream, or out of memory said.
 * (A stream ends within half a second of its client leaving; [http]
 * max_streams leaves room for every run's.) */
static void test_stream_opening(void **state)
{
	fixture *f = *state;
	long n;
	for (n = 0;; n++) {
		char *r;
		const char *ct;
		int failed;
		alloc_faults_arm(n, ALLOC_OTHER_THREADS);
		r = http_head(f->port, "/notifications/stream", f->auth);
		failed = alloc_faults_disarm();
		if (!r[0])
			fail_msg("run %ld: the connection closed without an answer", n);
		ct = header_of(r, "Content-Type");
		if (!(status_of(r) == 200 && ct && !strcmp(ct, "text/event-stream")) &&
		    !(failed && status_of(r) >= 500 && ct &&
		      !strcmp(ct, "application/problem+json")))
			fail_msg("run %ld: %s", n, r);
		free(r);
		if (!failed)
			break;
	}
	printf("the stream's opening: %ld runs\n", n + 1);
	assert_true(n > 10);
}

/* POST the body `make` writes for run N to `path`, the Nth allocation of
 * the request failing in run N, until a run fails none. Each answer is 201,
 * 500 saying the request was carried out (both counted in *done, their run
 * numbers in done_runs), or one of out of memory. */
static long sweep_posts(fixture *f, int scope, const char *path,
                        void (*make)(int, long, char *, size_t), long *done_runs, size_t max,
                        size_t *done)
{
	long n;
	*done = 0;
	for (n = 0;; n++) {
		char body[256], *r;
		int failed, st;
		make(scope, n, body, sizeof body);
		alloc_faults_arm(n, ALLOC_OTHER_THREADS | scope);
		r = post_json(f, path, NULL, body);
		failed = alloc_faults_disarm();
		if (!r[0])
			fail_msg("run %ld: POST %s: the connection closed without an answer", n, path);
		st = status_of(r);
		if (st == 201 || (st == 500 && strstr(r, "carried out (status 201)"))) {
			assert_true(*done < max);
			done_runs[(*done)++] = n;
		} else if (!(failed && oom_answer(r, 201))) {
			fail_msg("run %ld: POST %s: %s", n, path, r);
		}
		free(r);
		if (!failed)
			return n + 1;
	}
}

/* How many times `needle` is in the bodies of GET `path` (a list, whose
 * query string ends in `?` or `&`) and of its next pages. */
static size_t count_in(fixture *f, const char *path, const char *needle)
{
	char cursor[256] = "";
	size_t k = 0;
	do {
		char url[512], *r;
		snprintf(url, sizeof url, "%slimit=100%s%s", path, cursor[0] ? "&cursor=" : "",
		         cursor);
		r = http_request(f->port, "GET", url, f->auth, NULL);
		if (status_of(r) != 200)
			fail_msg("GET %s: %s", url, r);
		for (const char *p = body_of(r); (p = strstr(p, needle)); p++)
			k++;
		json_member(r, "next_cursor", cursor, sizeof cursor);
		free(r);
	} while (cursor[0]);
	return k;
}

#define MAX_RUNS 1000 /* of a creation sweep */

/* Creating users, the Nth allocation of the request failing in run N: a
 * user exists exactly when its creation was answered as done (201, or a
 * 500 saying so), and gets its welcome mail. */
static void user_body(int scope, long n, char *buf, size_t len)
{
	snprintf(buf, len,
	         "{\"name\":\"C %ld\",\"email\":\"%screate-%ld@example.com\","
	         "\"password\":\"create password\"}",
	         n, scope ? "sql" : "", n);
}

static void sweep_create_user(fixture *f, int scope)
{
	static long done_runs[MAX_RUNS];
	long runs;
	size_t done, listed;
	char needle[64];
	int64_t t0 = clock_mono_ms();
	runs = sweep_posts(f, scope, "/users", user_body, done_runs, MAX_RUNS, &done);
	assert_true(runs > 20 && done > 0);
	for (size_t i = 0; i < done; i++) {
		char email[64];
		snprintf(email, sizeof email, "%screate-%ld@example.com", scope ? "sql" : "",
		         done_runs[i]);
		if (!wait_mail(f, email, MAIL_WAIT_MS))
			fail_msg("no welcome mail for %s, created under out of memory", email);
	}
	snprintf(needle, sizeof needle, "\"email\":\"%screate-", scope ? "sql" : "");
	listed = count_in(f, "/users?", needle);
	if (listed != done)
		fail_msg("%zu users created under out of memory, %zu answered as created", listed,
		         done);
	printf("creating users%s: %ld runs, %zu created, %.1f s\n",
	       scope ? " (SQLite's allocations)" : "", runs, done,
	       (double)(clock_mono_ms() - t0) / 1000);
}

static void test_create_user(void **state) { sweep_create_user(*state, 0); }
static void test_create_user_sqlite(void **state)
{
	sweep_create_user(*state, ALLOC_SQLITE);
}

/* Each scope's documents have a member of their own: "n", "m". */
static void order_body(int scope, long n, char *buf, size_t len)
{
	snprintf(buf, len, "{\"%s\":%ld}", scope ? "m" : "n", n);
}

/* The same for crud's documents (a collection of their own). */
static void sweep_create_document(fixture *f, int scope)
{
	static long done_runs[MAX_RUNS];
	long runs;
	size_t done, listed;
	runs = sweep_posts(f, scope, "/crud/orders", order_body, done_runs, MAX_RUNS, &done);
	assert_true(runs > 10 && done > 0);
	listed = count_in(f, "/crud/orders?", scope ? "\"m\":" : "\"n\":");
	if (listed != done)
		fail_msg("%zu documents created under out of memory, %zu answered as created",
		         listed, done);
	printf("creating documents%s: %ld runs, %zu created\n",
	       scope ? " (SQLite's allocations)" : "", runs, done);
}

static void test_create_document(void **state) { sweep_create_document(*state, 0); }
static void test_create_document_sqlite(void **state)
{
	sweep_create_document(*state, ALLOC_SQLITE);
}

/* ------------------------------------------------------------- reload */

#define RELOAD_MAX_RUNS 3000

static const char *const services[] = {"user", "crud", "notifications"};
enum { NSERVICES = sizeof services / sizeof services[0] };

/* [plugin.crud] with log_level = `level`: a reload that changes it
 * restarts crud, and only crud. */
static void write_crud_conf(fixture *f, const char *level)
{
	char text[512];
	snprintf(text, sizeof text,
	         "[plugin.crud]\nenabled = true\ncollections = products, orders\n"
	         "collection.products.required = name, price\n"
	         "collection.products.types = name:string, price:number\nlog_level = %s\n",
	         level);
	test_write_file(f->dir, "conf.d/20-crud.conf", text, 0600);
}

/* A GET each service answers with 200 while it runs. */
static void service_get(fixture *f, size_t i, char *path, size_t n, const char **hdrs)
{
	*hdrs = i == 1 ? NULL : f->auth;
	if (i == 0)
		snprintf(path, n, "/users/%s", f->first_id);
	else if (i == 1)
		snprintf(path, n, "/crud/products?name=lamp");
	else
		snprintf(path, n, "/notifications?recipient=%s", FIRST_EMAIL);
}

static evh_plugin *running_plugin(fixture *f, const char *name)
{
	evh_plugin *found = NULL;
	for (size_t i = 0; i < f->h.nplugins; i++)
		if (!strcmp(f->h.plugins[i]->name, name)) {
			if (found)
				fail_msg("plugin '%s' twice in the host's list", name);
			found = f->h.plugins[i];
		}
	return found;
}

static int is_down(fixture *f, const char *name)
{
	for (size_t i = 0; i < f->h.ndown; i++)
		if (!strcmp(f->h.down[i], name))
			return 1;
	return 0;
}

/* What a reload left, as a demanding operator sees it: each service
 * listed runs (never loaded, draining or failed but listed) and answers
 * its GET; one that is not listed is down on /readyz. Returns whether
 * every service runs, crud with `crud_level` (the new configuration). */
static int check_services(fixture *f, long n, const char *crud_level, const char *log)
{
	char want[64];
	int all = 1;
	snprintf(want, sizeof want, "log_level=%s\n", crud_level);
	for (size_t i = 0; i < NSERVICES; i++) {
		evh_plugin *p = running_plugin(f, services[i]);
		char path[256], *r;
		const char *hdrs;
		service_get(f, i, path, sizeof path, &hdrs);
		r = http_request(f->port, "GET", path, hdrs, NULL);
		if (!r[0])
			fail_msg("run %ld: GET %s: no answer", n, path);
		if (p && p->status != PLUGIN_RUNNING)
			fail_msg("run %ld: plugin '%s' left %s:\n%s", n, services[i],
			         plugin_state_name(p->status), log);
		if (p && status_of(r) != 200)
			fail_msg("run %ld: plugin '%s' runs but GET %s answered:\n%s\nlog:\n%s", n,
			         services[i], path, r, log);
		if (!p && !is_down(f, services[i]))
			fail_msg("run %ld: plugin '%s' is gone, and /readyz does not say so:\n%s", n,
			         services[i], log);
		free(r);
		if (!p || (i == 1 && !strstr(p->signature, want)))
			all = 0;
	}
	return all;
}

/* Whether crud's events go out: a document created now leaves its outbox
 * (outbox_pending, GET /admin/plugins/crud, back to 0) within 10 s. */
static int crud_relayed(fixture *f, long n)
{
	int64_t until = clock_mono_ms() + 10000;
	char body[64], *r;
	snprintf(body, sizeof body, "{\"r\":%ld}", n);
	r = post_json(f, "/crud/orders", NULL, body);
	if (status_of(r) != 201)
		fail_msg("run %ld: POST /crud/orders: %s", n, r);
	free(r);
	for (;;) {
		cJSON *j;
		const cJSON *v;
		int empty;
		r = http_request(f->port, "GET", "/admin/plugins/crud", f->admin, NULL);
		j = cJSON_Parse(body_of(r));
		v = cJSON_GetObjectItemCaseSensitive(j, "outbox_pending");
		if (!cJSON_IsNumber(v))
			fail_msg("run %ld: GET /admin/plugins/crud: %s", n, r);
		empty = v->valuedouble == 0;
		cJSON_Delete(j);
		free(r);
		if (empty)
			return 1;
		if (clock_mono_ms() > until)
			return 0;
		sleep_ms(5);
	}
}

/* How many allocations the calling thread makes reading the configuration
 * (cfg_load, settings_from_cfg), as a reload's host_configure does right
 * after copying the file's name. The sweep fails one in CONFIG_STRIDE of
 * them: test_oom.c fails each, reading alone. */
#define CONFIG_STRIDE 8
/* SQLite's allocations of a reload, one in SQLITE_STRIDE failed: a crud
 * restart makes some 1960 (each failed in turn on 2026-12-03, 80 s plain:
 * nothing found). */
#define SQLITE_STRIDE 16
static long config_allocations(fixture *f)
{
	char conf[128];
	cfg c = {0};
	settings s = {0};
	diag d = {0};
	long k;
	snprintf(conf, sizeof conf, "%s/evhost.conf", f->dir);
	alloc_faults_arm(LONG_MAX, ALLOC_THIS_THREAD);
	cfg_load(&c, conf, &d);
	settings_from_cfg(&c, &s, &d);
	k = atomic_load(&alloc_seen);
	assert_false(alloc_faults_disarm());
	assert_int_equal(d.n, 0);
	settings_free(&s);
	cfg_free(&c);
	diag_free(&d);
	return k;
}

/* A reload that restarts crud, its Nth allocation on the reloading thread
 * failing in run N (host_reload runs on the caller's). The reload either
 * applies the new configuration or says what it could not do (an ERROR or
 * WARN line naming out of memory); HTTP answers throughout, no plugin is
 * left half-started (listed but not running, or running without its
 * relay), and the next reload, memory available, brings every service to
 * the new configuration. */
static void sweep_reload(fixture *f, int scope)
{
	int64_t t0 = clock_mono_ms();
	int no_way_back = 0;
	long n, skip, nconfig;
	/* Warnings are what the reload says out of memory ([log] is error). */
	test_write_file(f->dir, "conf.d/90-log.conf", "[log]\nlevel = warn\n", 0600);
	/* A plugin that cannot be loaded is left out when it is not required:
	 * out of memory must not pass for that (user stays required). */
	test_write_file(f->dir, "conf.d/35-optional.conf", "[plugin.notifications]\nrequired = false\n",
	           0600);
	/* One with required = false running, then given values its check
	 * refuses: each reload keeps it running as it ran, named in the host's
	 * list of those (299a5d3: that list out of memory is an error, never
	 * the plugin taken for removed and stopped). */
	test_write_file(f->dir, "conf.d/40-hello.conf", "[plugin.hello]\nrequired = false\n", 0600);
	assert_int_equal(host_reload(&f->h), 0);
	assert_non_null(running_plugin(f, "hello"));
	test_write_file(f->dir, "conf.d/40-hello.conf",
	           "[plugin.hello]\nrequired = false\ntopic = not a topic\n", 0600);
	assert_int_equal(host_reload(&f->h), 0);
	write_crud_conf(f, "info"); /* the runs' key set */
	/* SQLite's allocations: none reads the configuration. */
	skip = scope ? 0 : config_allocations(f);
	nconfig = (skip + CONFIG_STRIDE - 1) / CONFIG_STRIDE;
	for (n = 0; n < RELOAD_MAX_RUNS; n++) {
		const char *level = n % 2 ? "error" : "warn";
		stderr_capture cap;
		char *log, *r;
		int rc, failed, applied;
		write_crud_conf(f, level);
		cap = stderr_begin();
		/* Allocation 0 is the copy of the file's name (host_configure);
		 * 1 to skip read the configuration: one in CONFIG_STRIDE of them
		 * in the first nconfig runs, then from skip + 1 on. */
		if (n < nconfig)
			alloc_faults_arm(1 + n * CONFIG_STRIDE, ALLOC_THIS_THREAD);
		else if (scope)
			alloc_faults_arm(n * SQLITE_STRIDE, ALLOC_THIS_THREAD | scope);
		else /* skip + 1 on, ALLOC_SWEEP_STEP apart */
			alloc_faults_arm(n > nconfig ? (n - nconfig - 1) * ALLOC_SWEEP_STEP + 1 + skip : 0,
			                 ALLOC_THIS_THREAD);
		rc = host_reload(&f->h);
		failed = alloc_faults_disarm();
		log = stderr_end(cap);
		applied = check_services(f, n, level, log);
		if (n < nconfig &&
		    !(failed && rc != 0 &&
		      strstr(log, "reload refused: ") &&
		      strstr(log, "out of memory while reading the configuration")))
			fail_msg("run %ld: reading the configuration out of memory (allocation %ld), "
			         "the reload (%d) was not refused for that:\n%s",
			         n, 1 + n * CONFIG_STRIDE, rc, log);
		if (!failed && !(rc == 0 && applied))
			fail_msg("run %ld: no allocation failed, and the reload (%d) was not applied:\n%s",
			         n, rc, log);
		if (failed && !(rc == 0 && applied) &&
		    !((strstr(log, " ERROR ") || strstr(log, " WARN ")) && strstr(log, "out of memory")))
			fail_msg("run %ld: the reload (%d) was not applied, and the log does not say "
			         "out of memory:\n%s",
			         n, rc, log);
		/* Nothing in it is invalid: out of memory must not be told as that. */
		if (strstr(log, "invalid argument"))
			fail_msg("run %ld: out of memory said as an invalid argument:\n%s", n, log);
		if (running_plugin(f, "crud") && !crud_relayed(f, n))
			fail_msg("run %ld: crud runs, and its events stay in its outbox:\n%s", n, log);
		if (!running_plugin(f, "hello"))
			fail_msg("run %ld: hello, its new values refused, was stopped:\n%s", n, log);
		/* The fallbacks list not allocated (e4ff6d9): said for crud. */
		if (strstr(log, "no way back should its new configuration fail: out of memory"))
			no_way_back = 1;
		free(log);
		/* Memory back: the same configuration again. */
		cap = stderr_begin();
		rc = host_reload(&f->h);
		log = stderr_end(cap);
		if (rc != 0 || !check_services(f, n, level, log))
			fail_msg("run %ld: the reload after it (%d) did not apply the configuration:\n%s",
			         n, rc, log);
		free(log);
		r = http_request(f->port, "GET", "/readyz", NULL, NULL);
		if (status_of(r) != 200)
			fail_msg("run %ld: /readyz after the reload that followed: %s", n, r);
		free(r);
		if (!failed)
			break;
	}
	if (scope)
		printf("reload (SQLite's allocations, one in %d): %ld runs, %.1f s\n", SQLITE_STRIDE,
		       n + 1, (double)(clock_mono_ms() - t0) / 1000);
	else
		printf("reload: %ld runs (%ld of the %ld allocations reading the configuration), "
		       "%.1f s\n",
		       n + 1, nconfig, skip, (double)(clock_mono_ms() - t0) / 1000);
	assert_true(n < RELOAD_MAX_RUNS);
	/* The host's own allocations reach the fallbacks' list (e4ff6d9): when
	 * each is failed (a step of ALLOC_SWEEP_STEP may pass it by). */
	assert_true(no_way_back || scope || ALLOC_SWEEP_STEP > 1);
}

static void test_reload(void **state) { sweep_reload(*state, 0); }

/* The same with SQLite's allocations: the restarted plugin's database
 * opened, migrated, its statements prepared, out of memory (one in
 * SQLITE_STRIDE of them). */
static void test_reload_sqlite(void **state) { sweep_reload(*state, ALLOC_SQLITE); }

struct reload_run {
	host *h;
	atomic_int done;
	int rc;
};

static void *reload_main(void *arg)
{
	struct reload_run *run = arg;
	run->rc = host_reload(run->h);
	atomic_store(&run->done, 1);
	return NULL;
}

/* A plugin pinned (host_pin_plugin: an admin request at work on its
 * database without the list's lock) outlives a reload that restarts it:
 * the reload takes it out of the list, drains it, and waits for the pin
 * before it destroys it and starts the new instance. */
static void test_reload_waits_for_a_pin(void **state)
{
	fixture *f = *state;
	struct reload_run run = {.h = &f->h, .rc = -1};
	evh_plugin *p = host_pin_plugin(&f->h, "crud");
	int64_t until = clock_mono_ms() + 30000;
	int listed = 1, done_pinned, named;
	pthread_t t;
	assert_non_null(p);
	write_crud_conf(f, "debug");
	assert_int_equal(pthread_create(&t, NULL, reload_main, &run), 0);
	while (listed && clock_mono_ms() < until) {
		pthread_mutex_lock(&f->h.plugins_lock);
		listed = running_plugin(f, "crud") == p;
		pthread_mutex_unlock(&f->h.plugins_lock);
		sleep_ms(10);
	}
	/* Time for the restart to end, were the pin not waited for. */
	sleep_ms(500);
	done_pinned = atomic_load(&run.done);
	named = !strcmp(p->name, "crud"); /* not freed (ASan would say) */
	/* Let go before any check fails: the reload must not be left waiting. */
	host_unpin_plugin(&f->h, p);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_false(listed);
	assert_int_equal(done_pinned, 0);
	assert_true(named);
	assert_int_equal(run.rc, 0);
	assert_true(check_services(f, 0, "debug", ""));
}

/* After the sweeps: nothing was dead-lettered (each plugin's dead-letter
 * topics read through the admin API). */
static void test_no_dead_letters(void **state)
{
	fixture *f = *state;
	static const char *const plugins[] = {"user", "crud", "notifications"};
	for (size_t i = 0; i < sizeof plugins / sizeof plugins[0]; i++) {
		char path[128], *r;
		cJSON *j;
		snprintf(path, sizeof path, "/admin/plugins/%s/dlq", plugins[i]);
		r = http_request(f->port, "GET", path, f->admin, NULL);
		if (status_of(r) != 200)
			fail_msg("%s: %s", path, r);
		j = cJSON_Parse(body_of(r));
		if (cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "messages")) != 0)
			fail_msg("%s: dead letters: %s", path, body_of(r));
		cJSON_Delete(j);
		free(r);
	}
}

/* Five processes side by side (test_parts.h), each with a host of its
 * own: the HTTP answers' allocations (host's and cJSON's: 5 s plain), the
 * other flows' (3 s), SQLite's (6 s), one reload sweep (8 s) and the other
 * reloads (3 s). In three parts the first and last took 97 and 103 s under
 * ThreadSanitizer in CI-like runs (2026-12-06) and ended the unit tests. */
#define TEST_PARTS 5
static const struct part_test all_tests[] = {
    /* first: its broadcasts then go to few recipients */
    {cmocka_unit_test(test_answers), 1},
    {cmocka_unit_test(test_stream_opening), 2},
    {cmocka_unit_test(test_create_user), 2},
    {cmocka_unit_test(test_create_document), 2},
    {cmocka_unit_test(test_welcome_mail_arrives), 2},
    {cmocka_unit_test(test_answers_sqlite), 3},
    {cmocka_unit_test(test_create_user_sqlite), 3},
    {cmocka_unit_test(test_create_document_sqlite), 3},
    {cmocka_unit_test(test_welcome_mail_arrives_sqlite), 3},
    /* they turn the log up to WARN */
    {cmocka_unit_test(test_reload), 4},
    {cmocka_unit_test(test_reload_sqlite), 5},
    {cmocka_unit_test(test_reload_waits_for_a_pin), 5},
    /* last in each part */
    {cmocka_unit_test(test_no_dead_letters), 0},
};

int main(void)
{
	enum { N = sizeof all_tests / sizeof all_tests[0] };
	struct CMUnitTest tests[N];
	long n = test_parts_select("test_services_oom", TEST_PARTS, all_tests, N, tests);
	if (n < 0)
		return 2;
	alloc_faults_cjson();
	if (alloc_faults_sqlite() != SQLITE_OK) {
		fprintf(stderr, "SQLite refused the test's allocator\n");
		return 1;
	}
	return _cmocka_run_group_tests("test_services_oom", tests, (size_t)n, setup, teardown);
}
