/* ABI checks at plugin load: each fixture in tests/fixtures is wrong in one
 * way, and the host must refuse it with one line that says what it found
 * and what it expected. */
#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "stderr_capture.h"
#include "test_files.h"

#include "host.h"
#include "plugins.h"

static char fixture_path[512];

/* The host's dlopen calls come here (ld --wrap=dlopen, tests/CMakeLists.txt):
 * while dlopen_finds_nothing is set, a look-up of a loaded library
 * (RTLD_NOLOAD) by a name containing it finds nothing, as if the library
 * had gone. */
static const char *dlopen_finds_nothing;
void *__real_dlopen(const char *name, int flags);
void *__wrap_dlopen(const char *name, int flags);
void *__wrap_dlopen(const char *name, int flags)
{
	if (dlopen_finds_nothing && name && (flags & RTLD_NOLOAD) &&
	    strstr(name, dlopen_finds_nothing))
		return NULL;
	return __real_dlopen(name, flags);
}

static const char *fixture(const char *file)
{
	snprintf(fixture_path, sizeof fixture_path, "%s/%s", EVHOST_TEST_FIXTURES, file);
	return fixture_path;
}

static plugin_settings settings_for(const char *name, const char *file)
{
	plugin_settings ps;
	static char section[64], group[64];

	memset(&ps, 0, sizeof ps);
	snprintf(section, sizeof section, "plugin.%s", name);
	snprintf(group, sizeof group, "evhost.%s", name);
	ps.name = (char *)name;
	ps.section = section;
	ps.group = group;
	ps.path = (char *)fixture(file);
	ps.enabled = 1;
	ps.required = 1;
	ps.file = "test.conf";
	ps.line = 1;
	return ps;
}

static void expect_refusal(const char *file, const char *needle1, const char *needle2)
{
	host h;
	char err[1024] = "";
	plugin_settings ps = settings_for("x", file);
	evh_plugin *p;

	memset(&h, 0, sizeof h);
	p = plugin_open(&h, &ps, err, sizeof err, NULL);
	assert_null(p);
	print_message("refusal: %s\n", err);
	assert_non_null(strstr(err, ps.path));
	assert_non_null(strstr(err, needle1));
	if (needle2)
		assert_non_null(strstr(err, needle2));
	assert_null(strchr(err, '\n'));
}

static void test_not_elf(void **st)
{
	(void)st;
	expect_refusal("not_elf.so", "not a shared object", NULL);
}

static void test_missing_file(void **st)
{
	(void)st;
	expect_refusal("does_not_exist.so", "cannot open plugin", "No such file");
}

static void test_no_entry(void **st)
{
	(void)st;
	expect_refusal("no_entry.so", "no symbol evh_plugin_entry_v1", NULL);
}

static void test_other_major_entry(void **st)
{
	(void)st;
	expect_refusal("abi_v2_entry.so", "built for ABI 2", "supports ABI 1");
}

static void test_wrong_major_descriptor(void **st)
{
	(void)st;
	expect_refusal("wrong_abi_major.so", "built for ABI 7.2", "supports ABI 1.0");
}

static void test_newer_minor(void **st)
{
	(void)st;
	expect_refusal("needs_newer_minor.so", "needs ABI 1.99", "upgrade evhost");
}

/* A descriptor the entry returns that is wrong in itself, whatever its ABI
 * version says. */
static void test_descriptor_checks(void **st)
{
	(void)st;
	expect_refusal("bad_desc_1.so", "entry returned no descriptor", NULL);
	expect_refusal("bad_desc_2.so", "descriptor is 16 bytes, expected at least", NULL);
	expect_refusal("bad_desc_3.so", "descriptor name 'Bad Name' is not [a-z0-9_-]{1,64}", NULL);
	expect_refusal("bad_desc_4.so", "descriptor has no init function", NULL);
	expect_refusal("bad_desc_5.so", "its configuration schema declares 'path', a key of the host's",
	               "rename it");
	expect_refusal("bad_desc_6.so", "its configuration schema's default for 'size' is not valid: ",
	               "got 'notanumber'");
}

/* ABI 1.12's declared routes, checked at load with the router's own rules:
 * each refusal names the file, the entry (counted from 1) and what is
 * wrong with it. */
static void test_declared_routes_checks(void **st)
{
	(void)st;
	expect_refusal("bad_desc_10.so",
	               "its declared routes' entry 2, 'GET/nospace', is not \"METHOD /pattern\"",
	               "rebuild it");
	expect_refusal("bad_desc_11.so", "its declared routes' entry 2, 'get /lower', is not a "
	                                 "route: method must be upper-case letters",
	               NULL);
	expect_refusal("bad_desc_12.so", "its declared routes' entry 2, 'GET /a//b', is not a "
	                                 "route: empty path segment",
	               NULL);
	expect_refusal("bad_desc_13.so", "its declared routes' entry 2, 'GET /metrics': the host "
	                                 "serves /metrics (Prometheus",
	               "choose another path");
	expect_refusal("bad_desc_14.so", "its declared routes' entry 2, 'GET /fine/{name}': route "
	                                 "GET /fine/{name} conflicts with GET /fine/{id} (same "
	                                 "path) (entry 1)",
	               NULL);
}

/* ABI 1.12 gave reserved[1] a meaning (routes) without changing the
 * descriptor's size or the place of anything before it: a plugin built
 * against 1.11 (reserved[7]) is read as it was. */
_Static_assert(offsetof(evh_plugin_desc, check) ==
                   offsetof(evh_plugin_desc, fini) + sizeof(void (*)(void)),
               "check moved");
_Static_assert(offsetof(evh_plugin_desc, routes) ==
                   offsetof(evh_plugin_desc, check) + sizeof(void *),
               "routes is not where reserved[1] was");
_Static_assert(offsetof(evh_plugin_desc, reserved) ==
                   offsetof(evh_plugin_desc, routes) + sizeof(void *) &&
                   sizeof(((evh_plugin_desc *)0)->reserved) == 6 * sizeof(void *),
               "reserved must be what is left of 1.11's reserved[7]");
_Static_assert(sizeof(evh_plugin_desc) == offsetof(evh_plugin_desc, check) + 8 * sizeof(void *),
               "evh_plugin_desc changed size");
_Static_assert(EVH_ABI_MAJOR == 1 && EVH_ABI_MINOR >= 12, "declared routes are ABI 1.12");

/* What a plugin declared: a list (user's, from one table with what it
 * registers), none (good.so: EVH_PLUGIN, built against 1.12), or none read
 * from a plugin built before 1.12 (abi_1_0.so holds a list without its
 * route in that slot, then reserved[1]). */
static void test_declared_routes_read(void **st)
{
	host h;
	char err[1024] = "", user[512];
	plugin_settings ps;
	evh_plugin *p;

	(void)st;
	memset(&h, 0, sizeof h);
	ps = settings_for("abi10", "abi_1_0.so");
	assert_non_null(p = plugin_open(&h, &ps, err, sizeof err, NULL));
	assert_int_equal(plugin_declares(p, "GET", "/abi10"), -1);
	assert_int_equal(plugin_declares(p, "GET", "/not-abi10"), -1);
	plugin_destroy(p);
	ps = settings_for("good", "good.so");
	assert_non_null(p = plugin_open(&h, &ps, err, sizeof err, NULL));
	assert_int_equal(plugin_declares(p, "GET", "/anything"), -1);
	plugin_destroy(p);
	snprintf(user, sizeof user, "%s/../../plugins/user.so", EVHOST_TEST_FIXTURES);
	ps = settings_for("user", "good.so");
	ps.path = user;
	p = plugin_open(&h, &ps, err, sizeof err, NULL);
	if (!p)
		print_message("%s\n", err);
	assert_non_null(p);
	assert_int_equal(plugin_declares(p, "POST", "/users"), 1);
	assert_int_equal(plugin_declares(p, "GET", "/users/{id}"), 1);
	assert_int_equal(plugin_declares(p, "POST", "/auth/logout"), 1);
	/* Character for character: another capture name, method or path is not it. */
	assert_int_equal(plugin_declares(p, "GET", "/users/{uid}"), 0);
	assert_int_equal(plugin_declares(p, "PUT", "/users"), 0);
	assert_int_equal(plugin_declares(p, "POS", "/users"), 0);
	assert_int_equal(plugin_declares(p, "POST", "/user"), 0);
	plugin_destroy(p);
}

/* A directory where the plugin file should be. */
static void test_not_a_file(void **st)
{
	(void)st;
	expect_refusal(".", "not a regular file", NULL);
}

static void test_good_plugin_and_schema(void **st)
{
	host h;
	cfg c;
	diag d = {0};
	char err[1024] = "";
	plugin_settings ps = settings_for("good", "good.so");
	evh_plugin *p;

	(void)st;
	memset(&h, 0, sizeof h);
	memset(&c, 0, sizeof c);
	p = plugin_open(&h, &ps, err, sizeof err, NULL);
	assert_non_null(p);
	assert_string_equal(p->desc->name, "good");
	assert_int_equal(cfg_load_string(&c,
	                                 "[plugin.good]\n"
	                                 "enabled = true\n"
	                                 "greeting = hello there\n"
	                                 "item.small.size = 3\n"
	                                 "limit = lots\n"
	                                 "colour = blue\n",
	                                 "conf.d/50-good.conf", &d),
	                 0);
	assert_int_not_equal(plugin_configure(p, &c, &d), 0);
	diag_print(&d, stdout);
	assert_int_equal(d.n, 2);
	/* the bad int and the unknown key, each at its line */
	assert_non_null(strstr(d.msgs[0], "conf.d/50-good.conf:5:"));
	assert_non_null(strstr(d.msgs[0], "limit"));
	assert_non_null(strstr(d.msgs[1], "conf.d/50-good.conf:6:"));
	assert_non_null(strstr(d.msgs[1], "colour"));
	assert_string_equal(host_api()->config_get(p, "greeting"), "hello there");
	assert_string_equal(host_api()->config_get(p, "item.small.size"), "3");
	assert_null(host_api()->config_get(p, "flag"));
	diag_free(&d);
	cfg_free(&c);
	plugin_destroy(p);
}

/* ABI 1.7's check: the slot after fini was reserved[0] before, so a plugin
 * of an older ABI is never checked (abi_1_0.so holds a refusing function
 * there), nor one without a check; evh_config_error outside a check is an
 * ERROR line "KEY: message", the plugin's last error. */
static void test_check_only_from_abi_1_7(void **st)
{
	static const char *const files[] = {"abi_1_0.so", "good.so"};
	host h;
	cfg c;
	diag d = {0};
	char err[1024] = "";

	(void)st;
	for (size_t i = 0; i < 2; i++) {
		plugin_settings ps = settings_for(i ? "good" : "abi10", files[i]);
		evh_plugin *p;
		memset(&h, 0, sizeof h);
		memset(&c, 0, sizeof c);
		p = plugin_open(&h, &ps, err, sizeof err, NULL);
		assert_non_null(p);
		assert_int_equal(cfg_load_string(&c, i ? "[plugin.good]\n" : "[plugin.abi10]\n",
		                                 "conf.d/50-x.conf", &d),
		                 0);
		assert_int_equal(plugin_configure(p, &c, &d), 0);
		assert_int_equal(plugin_check(p, &c, ps.file, ps.line, &d), 0);
		assert_int_equal(d.n, 0);
		/* In init (on its thread) it is the reason quoted if init fails;
		 * later (a worker thread's) only logged. */
		p->status = PLUGIN_INITIALIZING;
		p->init_thread = pthread_self();
		host_api()->config_error(p, "limit", "must be small");
		assert_string_equal(p->last_error, "limit: must be small");
		p->status = PLUGIN_RUNNING;
		p->last_error[0] = '\0';
		host_api()->config_error(p, "limit", "must be smaller");
		assert_string_equal(p->last_error, "");
		p->status = PLUGIN_LOADED;
		cfg_free(&c);
		plugin_destroy(p);
	}
}

/* entry_count.so opened as `ps` says (*p), and a handle of our own (*dl)
 * that keeps the library loaded: its count of entries, to read. */
static int *open_counted(host *h, const plugin_settings *ps, evh_plugin **p, void **dl)
{
	char err[1024] = "";
	int *calls;
	*p = plugin_open(h, ps, err, sizeof err, NULL);
	assert_non_null(*p);
	*dl = dlopen(ps->path, RTLD_NOW | RTLD_NOLOAD);
	assert_non_null(*dl);
	calls = dlsym(*dl, "entry_calls");
	assert_non_null(calls);
	return calls;
}

/* A library is entered once per load: a second plugin from the same file (a
 * reload's successor, or another section with the same path) gets the
 * descriptor without a call that would write the library's evh__api under
 * the running instance; once every holder is gone, a new load enters again. */
static void test_entry_called_once_per_load(void **st)
{
	host h;
	char err[1024] = "";
	plugin_settings ps1 = settings_for("one", "entry_count.so");
	plugin_settings ps2 = settings_for("two", "entry_count.so");
	evh_plugin *a, *b;
	void *dl;
	int *calls;

	(void)st;
	memset(&h, 0, sizeof h);
	calls = open_counted(&h, &ps1, &a, &dl);
	assert_int_equal(*calls, 1);
	b = plugin_open(&h, &ps2, err, sizeof err, NULL);
	assert_non_null(b);
	assert_int_equal(*calls, 1);
	assert_ptr_equal(a->desc, b->desc);
	plugin_destroy(a);
	plugin_destroy(b);
	/* Our own handle keeps the library loaded: the next open is a new holder. */
	a = plugin_open(&h, &ps1, err, sizeof err, NULL);
	assert_non_null(a);
	assert_int_equal(*calls, 2);
	plugin_destroy(a);
	dlclose(dl);
}

/* A reload's way back for a plugin it restarts (plugin_reopen) is the build
 * that ran: the library the plugin holds, found again by the name it was
 * loaded by, and not entered again. When it cannot be found, the reopen
 * says so (the reload logs that there is no way back: test_reload.py) and
 * holds nothing: once the plugin is gone, the next open enters the library
 * anew. */
static void test_reopen_without_the_build_that_ran(void **st)
{
	host h;
	char err[1024] = "", want[1024];
	plugin_settings ps = settings_for("one", "entry_count.so");
	evh_plugin *a, *b;
	void *dl;
	int *calls, entered;

	(void)st;
	memset(&h, 0, sizeof h);
	calls = open_counted(&h, &ps, &a, &dl);
	entered = *calls;
	b = plugin_reopen(a, err, sizeof err);
	assert_non_null(b);
	assert_true(plugin_same_build(a, b));
	assert_int_equal(*calls, entered);
	plugin_destroy(b);

	dlopen_finds_nothing = "/entry_count.so";
	b = plugin_reopen(a, err, sizeof err);
	dlopen_finds_nothing = NULL;
	assert_null(b);
	snprintf(want, sizeof want, "%s: the build that ran is not loaded", ps.path);
	assert_string_equal(err, want);
	plugin_destroy(a);
	/* A hold the failed reopen kept would spare the library this entry. */
	a = plugin_open(&h, &ps, err, sizeof err, NULL);
	assert_non_null(a);
	assert_int_equal(*calls, entered + 1);
	plugin_destroy(a);
	dlclose(dl);
}

/* EVH_CFG_FILE and EVH_CFG_DIR: a readable file or directory when the
 * configuration is read, else an error at the key's line; relative paths
 * resolve like EVH_CFG_PATH's. */
static void test_file_keys_must_be_readable(void **st)
{
	static const struct {
		const char *key, *value, *error; /* error NULL: accepted */
	} cases[] = {
	    {"secret_file", "missing", "/missing': No such file"},
	    {"secret_file", ".", "' is not a regular file"},
	    {"secret_file", "secret", NULL},
	    {"assets_dir", "missing", "/missing': No such file"},
	    {"assets_dir", "secret", "/secret' is not a directory"},
	    {"assets_dir", ".", NULL},
	};
	host h;
	cfg c;
	diag d = {0};
	char err[1024] = "", dir[] = "/tmp/evh-abi-XXXXXX", conf[256], text[1024];
	plugin_settings ps = settings_for("good", "good.so");
	evh_plugin *p;
	FILE *f;

	(void)st;
	assert_non_null(mkdtemp(dir));
	snprintf(conf, sizeof conf, "%s/secret", dir);
	f = fopen(conf, "w");
	assert_non_null(f);
	fputs("s3cret\n", f);
	fclose(f);
	snprintf(conf, sizeof conf, "%s/50-good.conf", dir);
	memset(&h, 0, sizeof h);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		memset(&c, 0, sizeof c);
		p = plugin_open(&h, &ps, err, sizeof err, NULL);
		assert_non_null(p);
		snprintf(text, sizeof text, "[plugin.good]\nenabled = true\n%s = %s\n", cases[i].key,
		         cases[i].value);
		assert_int_equal(cfg_load_string(&c, text, conf, &d), 0);
		if (cases[i].error) {
			assert_int_not_equal(plugin_configure(p, &c, &d), 0);
			assert_int_equal(d.n, 1);
			snprintf(text, sizeof text, "50-good.conf:3: [plugin.good] %s: ", cases[i].key);
			assert_non_null(strstr(d.msgs[0], text));
			assert_non_null(strstr(d.msgs[0], cases[i].error));
		} else {
			assert_int_equal(plugin_configure(p, &c, &d), 0);
			assert_int_equal(d.n, 0);
			snprintf(text, sizeof text, "%s/%s", dir, cases[i].value);
			assert_string_equal(host_api()->config_get(p, cases[i].key), text);
		}
		diag_free(&d);
		cfg_free(&c);
		plugin_destroy(p);
	}
	snprintf(text, sizeof text, "%s/secret", dir);
	unlink(text);
	rmdir(dir);
}

/* The fixture plugin `name` (tests/fixtures/NAME.so) opened on host `h`
 * with its state in `dir` (a mkdtemp template, filled in), then started:
 * plugin_start's result in *rc, its error in err. */
/* Plugin `name` started with a state directory of its own, made in
 * `dir` (64 bytes). */
static evh_plugin *started(host *h, char *dir, const char *name, int *rc, char *err,
                           size_t errlen)
{
	char file[64];
	plugin_settings ps;
	evh_plugin *p;
	snprintf(file, sizeof file, "%s.so", name);
	ps = settings_for(name, file);
	memset(h, 0, sizeof *h);
	test_make_dir(dir, 64, "abi");
	h->set.state_dir = dir;
	h->set.store_synchronous = "NORMAL";
	p = plugin_open(h, &ps, err, errlen, NULL);
	assert_non_null(p);
	*rc = plugin_start(p, err, errlen);
	return p;
}

/* plugin_destroy, and its state directory gone. */
static void destroyed(evh_plugin *p, const char *dir)
{
	plugin_destroy(p);
	test_remove_tree(dir);
}

static void test_init_failure_quotes_plugin(void **st)
{
	host h;
	char err[1024] = "", dir[64]; /* started makes it */
	int rc;
	evh_plugin *p = started(&h, dir, "init_fails", &rc, err, sizeof err);

	stderr_capture cap;
	char *said;

	(void)st;
	assert_int_equal(rc, -1);
	print_message("refusal: %s\n", err);
	assert_non_null(strstr(err, "init failed"));
	assert_non_null(strstr(err, "cannot reach the license server"));
	assert_non_null(strstr(err, "invalid argument"));
	/* Its fini, owed after a failed init, is told the plugin is stopping
	 * (said at WARN: shown at this plugin's threshold). */
	p->log_level = EVH_LOG_WARN;
	cap = stderr_begin();
	destroyed(p, dir);
	said = stderr_end(cap);
	assert_non_null(strstr(said, "init_fails: fini sees evh_stopping 1"));
	free(said);
}

static evh_event_result no_handler(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud)
{
	(void)p;
	(void)ev;
	(void)tx;
	(void)ud;
	return EVH_EVENT_OK;
}

/* Once init has returned, what only init may do is refused, though the
 * plugin is not running yet (the host starts its relay and consumer, which
 * reads its subscriptions): a thread init began, calling a moment late,
 * added a subscription the consumer was reading. */
static void test_init_calls_are_refused_once_init_returned(void **st)
{
	host h;
	char err[1024] = "", dir[64]; /* started makes it */
	evh_subscription sub = {.struct_size = sizeof sub, .topic = "late", .handler = no_handler};
	evh_route route = {.struct_size = sizeof route, .method = "GET", .pattern = "/late"};
	evh_migration mig = {1, "CREATE TABLE late(x)"};
	int rc;
	evh_plugin *p = started(&h, dir, "good", &rc, err, sizeof err);

	(void)st;
	assert_int_equal(rc, 0);
	assert_int_equal(p->status, PLUGIN_INITIALIZING); /* the host runs it later */
	assert_int_equal(host_api()->subscribe(p, &sub), EVH_ESTATE);
	assert_int_equal(host_api()->http_route(p, &route), EVH_ESTATE);
	assert_int_equal(host_api()->migrate(p, &mig, 1), EVH_ESTATE);
	assert_int_equal(p->nsubs, 0);
	destroyed(p, dir);
}

/* While init runs, what only init may do is taken from its own thread only:
 * a thread it started, calling at the same time, grew the subscriptions
 * (realloc, unlocked) under init's own call, and its ERROR line became the
 * refusal's reason. Here init is taken to be running on this thread (the
 * one plugin_start ran it on). */
struct late_call {
	evh_plugin *p;
	evh_subscription *sub;
	int rc;
};

static void *subscribe_from_a_thread(void *arg)
{
	struct late_call *c = arg;
	c->rc = host_api()->subscribe(c->p, c->sub);
	return NULL;
}

static void test_init_calls_are_taken_only_from_inits_thread(void **st)
{
	host h;
	char err[1024] = "", dir[64]; /* started makes it */
	evh_subscription sub = {.struct_size = sizeof sub, .topic = "t", .handler = no_handler};
	struct late_call c;
	pthread_t t;
	int rc;
	evh_plugin *p = started(&h, dir, "good", &rc, err, sizeof err);

	(void)st;
	assert_int_equal(rc, 0);
	atomic_store(&p->init_returned, 0); /* init under way, on this thread */
	c = (struct late_call){p, &sub, 0};
	assert_int_equal(pthread_create(&t, NULL, subscribe_from_a_thread, &c), 0);
	pthread_join(t, NULL);
	assert_int_equal(c.rc, EVH_ESTATE);
	assert_int_equal(p->nsubs, 0);
	assert_int_equal(host_api()->subscribe(p, &sub), EVH_OK);
	assert_int_equal(p->nsubs, 1);
	atomic_store(&p->init_returned, 1);
	destroyed(p, dir);
}

/* The header's value macros read their argument once: EVH_TEXT(names[i++])
 * is one string, its pointer and its length (not "a" with the length of
 * "longer", which SQLite would then read past). */
static void test_text_value_reads_its_argument_once(void **st)
{
	const char *names[] = {"a", "longer"};
	int i = 0;
	evh_value v = EVH_TEXT(names[i++]);
	(void)st;
	assert_int_equal(i, 1);
	assert_ptr_equal(v.p, names[0]);
	assert_int_equal(v.n, 1);
	assert_int_equal(v.type, EVH_VAL_TEXT);
	v = EVH_TEXT(NULL);
	assert_null(v.p);
	assert_int_equal(v.n, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_not_elf),
	    cmocka_unit_test(test_missing_file),
	    cmocka_unit_test(test_no_entry),
	    cmocka_unit_test(test_other_major_entry),
	    cmocka_unit_test(test_wrong_major_descriptor),
	    cmocka_unit_test(test_newer_minor),
	    cmocka_unit_test(test_descriptor_checks),
	    cmocka_unit_test(test_declared_routes_checks),
	    cmocka_unit_test(test_declared_routes_read),
	    cmocka_unit_test(test_not_a_file),
	    cmocka_unit_test(test_good_plugin_and_schema),
	    cmocka_unit_test(test_check_only_from_abi_1_7),
	    cmocka_unit_test(test_entry_called_once_per_load),
	    cmocka_unit_test(test_reopen_without_the_build_that_ran),
	    cmocka_unit_test(test_file_keys_must_be_readable),
	    cmocka_unit_test(test_init_failure_quotes_plugin),
	    cmocka_unit_test(test_init_calls_are_refused_once_init_returned),
	    cmocka_unit_test(test_init_calls_are_taken_only_from_inits_thread),
	    cmocka_unit_test(test_text_value_reads_its_argument_once),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
