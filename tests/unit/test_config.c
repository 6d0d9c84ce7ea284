/* Configuration: merging of the main file and drop-ins, file:line
 * diagnostics, host settings, plugin sections and schema validation; plus
 * the diagnostics list and the log line formats. Files are real, in a
 * mkdtemp() directory. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "diag.h"
#include "log.h"
#include "stderr_capture.h"

/* ---------------------------------------------------------------- helpers */

typedef struct fixture {
	char dir[64];
	cfg c;
	settings s;
	diag d;
	int have_settings;
} fixture;

static char *path_in(const fixture *f, const char *name)
{
	char *p;
	assert_true(asprintf(&p, "%s/%s", f->dir, name) > 0);
	return p;
}

static void write_file(const fixture *f, const char *name, const char *text)
{
	char *p = path_in(f, name);
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	fputs(text, fp);
	assert_int_equal(fclose(fp), 0);
	free(p);
}

static void make_dir(const fixture *f, const char *name)
{
	char *p = path_in(f, name);
	assert_int_equal(mkdir(p, 0700), 0);
	free(p);
}

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	snprintf(f->dir, sizeof f->dir, "/tmp/evhost-test-config-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	*state = f;
	return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int teardown(void **state)
{
	fixture *f = *state;
	if (f->have_settings)
		settings_free(&f->s);
	cfg_free(&f->c);
	diag_free(&f->d);
	nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* Fails with the whole diagnostics list when `want` is not one of them. */
static void assert_diag(const diag *d, const char *want)
{
	for (size_t i = 0; i < d->n; i++) {
		if (!strcmp(d->msgs[i], want))
			return;
	}
	print_error("expected diagnostic: %s\ngot %zu:\n", want, d->n);
	for (size_t i = 0; i < d->n; i++)
		print_error("  %s\n", d->msgs[i]);
	fail();
}

static void assert_no_diag(const diag *d)
{
	for (size_t i = 0; i < d->n; i++)
		print_error("unexpected diagnostic: %s\n", d->msgs[i]);
	assert_int_equal(d->n, 0);
}

/* Main file "evhost.conf" in the fixture dir, loaded and turned into settings. */
static int load_main(fixture *f, const char *text)
{
	char *main_path = path_in(f, "evhost.conf");
	int rc;
	write_file(f, "evhost.conf", text);
	rc = cfg_load(&f->c, main_path, &f->d);
	free(main_path);
	return rc;
}

/* Settings from `text` alone: called again, it starts afresh (the
 * diagnostics are kept). */
static int settings_of(fixture *f, const char *text, const char *file)
{
	if (f->have_settings) {
		settings_free(&f->s);
		cfg_free(&f->c); /* and cleared */
		f->have_settings = 0;
	}
	assert_int_equal(cfg_load_string(&f->c, text, file, &f->d), 0);
	f->have_settings = 1;
	return settings_from_cfg(&f->c, &f->s, &f->d);
}

#define MIN_KAFKA "[kafka]\nbrokers = localhost:9092\n"

/* `text` (as file `name`) is refused with one diagnostic containing `want`,
 * and no admin token was kept from it. */
static void expect_one_error(const char *text, const char *name, const char *want)
{
	cfg c = {0};
	settings s;
	diag d = {0};
	assert_int_equal(cfg_load_string(&c, text, name, &d), 0);
	assert_int_equal(settings_from_cfg(&c, &s, &d), -1);
	assert_int_equal(d.n, 1);
	if (!strstr(d.msgs[0], want))
		fail_msg("expected a diagnostic with \"%s\", got: %s", want, d.msgs[0]);
	assert_null(s.admin_token);
	settings_free(&s);
	cfg_free(&c);
	diag_free(&d);
}

/* ------------------------------------------------------------ merging */

static void test_merge_order(void **state)
{
	fixture *f = *state;
	char *p, *main_path = path_in(f, "evhost.conf");
	const cfg_entry *e;

	make_dir(f, "conf.d");
	write_file(f, "conf.d/20-b.conf", "[http]\nthreads = 20\n\n[log]\nlevel = debug\n");
	write_file(f, "conf.d/10-a.conf", "[http]\nthreads = 10\nmax_body_bytes = 2M\n");
	write_file(f, "conf.d/30-c.conf.disabled", "[http]\nthreads = 99\n");
	write_file(f, "conf.d/README", "[http]\nthreads = 98\n");
	write_file(f, "conf.d/.hidden.conf", "[http]\nthreads = 97\n");
	make_dir(f, "conf.d/dir.conf");
	assert_int_equal(load_main(f, "; main\n[http]\nthreads = 4\nlisten = 127.0.0.1:9000\n"
	                              MIN_KAFKA),
	                 0);
	assert_no_diag(&f->d);

	e = cfg_find(&f->c, "http", "threads");
	assert_non_null(e);
	assert_string_equal(e->value, "20");
	p = path_in(f, "conf.d/20-b.conf");
	assert_string_equal(e->file, p);
	free(p);
	assert_int_equal(e->line, 2);

	e = cfg_find(&f->c, "http", "max_body_bytes");
	assert_non_null(e);
	p = path_in(f, "conf.d/10-a.conf");
	assert_string_equal(e->file, p);
	free(p);
	assert_int_equal(e->line, 3);

	e = cfg_find(&f->c, "http", "listen");
	assert_string_equal(e->file, main_path);
	assert_int_equal(e->line, 4);
	assert_string_equal(cfg_get(&f->c, "log", "level"), "debug");
	assert_null(cfg_get(&f->c, "log", "format"));

	/* one entry per (section, key), and sections in first-seen order */
	assert_int_equal(f->c.n, 5);
	assert_int_equal(f->c.nsections, 3);
	assert_string_equal(f->c.sections[0].name, "http");
	assert_string_equal(f->c.sections[1].name, "kafka");
	assert_string_equal(f->c.sections[2].name, "log");
	p = path_in(f, "conf.d");
	assert_string_equal(f->c.confdir, p);
	free(p);
	free(main_path);

	f->have_settings = 1;
	assert_int_equal(settings_from_cfg(&f->c, &f->s, &f->d), 0);
	assert_int_equal(f->s.http_threads, 20);
	assert_int_equal(f->s.max_body_bytes, 2 * 1024 * 1024);
	assert_int_equal(f->s.http_port, 9000);
	assert_int_equal(f->s.log_level, EVH_LOG_DEBUG);
}

/* Entries are appended in reading order, so their order shows the order the
 * drop-ins were read in, whatever order readdir() returned them. */
static void test_dropin_lexical_order(void **state)
{
	fixture *f = *state;
	static const char *const created[] = {"b.conf", "9-x.conf", "A.conf", "10-x.conf",
	                                      "a.conf", "1-x.conf", "20-x.conf", "_.conf"};
	static const char *const read_order[] = {"1-x.conf", "10-x.conf", "20-x.conf", "9-x.conf",
	                                         "A.conf",   "_.conf",    "a.conf",    "b.conf"};
	char text[128];

	make_dir(f, "conf.d");
	for (size_t i = 0; i < 8; i++) {
		char name[64];
		snprintf(name, sizeof name, "conf.d/%s", created[i]);
		snprintf(text, sizeof text, "[t]\nfrom_%s = 1\nwinner = %s\n", created[i],
		         created[i]);
		write_file(f, name, text);
	}
	assert_int_equal(load_main(f, "[t]\nwinner = main\n"), 0);
	assert_no_diag(&f->d);
	assert_int_equal(f->c.n, 9);
	assert_string_equal(f->c.v[0].key, "winner");
	for (size_t i = 0; i < 8; i++) {
		snprintf(text, sizeof text, "from_%s", read_order[i]);
		assert_string_equal(f->c.v[i + 1].key, text);
	}
	assert_string_equal(cfg_get(&f->c, "t", "winner"), "b.conf");
}

static void test_duplicate_in_one_file(void **state)
{
	fixture *f = *state;
	const cfg_entry *e;

	assert_int_equal(cfg_load_string(&f->c, "[a]\nk = 1\nk = 2\n[b]\nk = 3\n[a]\nk = 4\n",
	                                 "x.conf", &f->d),
	                 0);
	e = cfg_find(&f->c, "a", "k");
	assert_string_equal(e->value, "4");
	assert_int_equal(e->line, 7);
	assert_string_equal(cfg_get(&f->c, "b", "k"), "3");
	assert_int_equal(f->c.nsections, 2);
	assert_int_equal(f->c.sections[0].line, 1);
	assert_int_equal(f->c.sections[1].line, 4);
}

static void test_confdir_from_main(void **state)
{
	fixture *f = *state;
	char *p;

	make_dir(f, "drop");
	make_dir(f, "conf.d");
	write_file(f, "drop/a.conf", "[http]\nthreads = 3\n");
	write_file(f, "conf.d/a.conf", "[http]\nthreads = 5\n");
	assert_int_equal(load_main(f, "[host]\nconfdir = drop\n" MIN_KAFKA), 0);
	assert_string_equal(cfg_get(&f->c, "http", "threads"), "3");
	p = path_in(f, "drop");
	assert_string_equal(f->c.confdir, p);
	free(p);
}

static void test_confdir_missing_is_fine(void **state)
{
	fixture *f = *state;

	assert_int_equal(load_main(f, MIN_KAFKA), 0);
	assert_no_diag(&f->d);
	assert_string_equal(cfg_get(&f->c, "kafka", "brokers"), "localhost:9092");
}

static void test_confdir_only_in_main(void **state)
{
	fixture *f = *state;
	char want[256];

	make_dir(f, "conf.d");
	write_file(f, "conf.d/10-x.conf", "\n[host]\nconfdir = elsewhere\n");
	assert_int_equal(load_main(f, MIN_KAFKA), 0);
	f->have_settings = 1;
	assert_int_equal(settings_from_cfg(&f->c, &f->s, &f->d), -1);
	snprintf(want, sizeof want,
	         "%s/conf.d/10-x.conf:3: [host] confdir: only takes effect in the main file "
	         "%s/evhost.conf",
	         f->dir, f->dir);
	assert_diag(&f->d, want);
}

static void test_unreadable_main(void **state)
{
	fixture *f = *state;
	char *p = path_in(f, "nope.conf"), want[256];

	assert_int_equal(cfg_load(&f->c, p, &f->d), -1);
	snprintf(want, sizeof want, "%s: cannot read: No such file or directory", p);
	assert_diag(&f->d, want);
	assert_int_equal(f->d.n, 1);
	free(p);
}

static void test_syntax_error_line(void **state)
{
	fixture *f = *state;
	char want[256];

	make_dir(f, "conf.d");
	write_file(f, "conf.d/10-bad.conf", "[log]\nlevel = info\n\nthis is not ini\nformat = x\n");
	write_file(f, "conf.d/20-ok.conf", "[log]\nformat = json\n");
	assert_int_equal(load_main(f, MIN_KAFKA), -1);
	snprintf(want, sizeof want,
	         "%s/conf.d/10-bad.conf:4: syntax error (expected '[section]' or 'key = value')",
	         f->dir);
	assert_diag(&f->d, want);
	assert_int_equal(f->d.n, 1);
	/* parsing stopped at the error in that file, later files still read */
	assert_string_equal(cfg_get(&f->c, "log", "format"), "json");
	assert_string_equal(cfg_get(&f->c, "log", "level"), "info");
}

static void test_syntax_errors_misc(void **state)
{
	fixture *f = *state;

	assert_int_equal(cfg_load_string(&f->c, "[a]\n[b\nk=1\n", "s.conf", &f->d), -1);
	assert_diag(&f->d, "s.conf:2: syntax error (no closing ']' for the section header)");
	assert_int_equal(cfg_load_string(&f->c, "[a]\n = 1\n", "t.conf", &f->d), -1);
	assert_diag(&f->d, "t.conf:2: syntax error (no key name before '=')");
	assert_int_equal(cfg_load_string(&f->c, "[a b]\nk=1\n", "u.conf", &f->d), -1);
	assert_diag(&f->d,
	            "u.conf:1: bad section name [a b]: use letters, digits, '.', '-' and '_'");
	/* inih drops what follows the ']': a key there was lost without a word */
	assert_int_equal(cfg_load_string(&f->c, "[plugin.crud] enabled = false\n", "v.conf", &f->d),
	                 -1);
	assert_diag(&f->d, "v.conf:1: text after the section header [plugin.crud]: "
	                   "'enabled = false' (a key goes on a line of its own; a comment starts "
	                   "with ';' or '#')");
	assert_int_equal(cfg_load_string(&f->c, "[a]\n[http]x]\n", "w.conf", &f->d), -1);
	assert_diag(&f->d, "w.conf:2: text after the section header [http]: 'x]' (a key goes on a "
	                   "line of its own; a comment starts with ';' or '#')");
	assert_int_equal(f->d.n, 5);
	assert_int_equal(cfg_load_string(&f->c, "[c] ; a comment\n[d]# too\r\nk = 1\n", "x.conf",
	                                 &f->d),
	                 0);
	assert_int_equal(f->d.n, 5);
	assert_string_equal(cfg_get(&f->c, "d", "k"), "1");
}

static void test_comments_and_trimming(void **state)
{
	fixture *f = *state;

	assert_int_equal(cfg_load_string(&f->c,
	                                 "\xef\xbb\xbf# hash comment\n; semicolon comment\n"
	                                 "[ http ]  \n   threads   =   7   ; inline\n"
	                                 "  listen = 127.0.0.1:1 # inline too\n"
	                                 "empty =\r\nurl = a#b\n",
	                                 "c.conf", &f->d),
	                 0);
	assert_no_diag(&f->d);
	assert_string_equal(cfg_get(&f->c, "http", "threads"), "7");
	assert_string_equal(cfg_get(&f->c, "http", "listen"), "127.0.0.1:1");
	assert_string_equal(cfg_get(&f->c, "http", "empty"), "");
	assert_string_equal(cfg_get(&f->c, "http", "url"), "a#b");
	assert_int_equal(cfg_find(&f->c, "http", "threads")->line, 4);
	assert_int_equal(cfg_find(&f->c, "http", "url")->line, 7);
}

static void test_long_lines(void **state)
{
	fixture *f = *state;
	size_t n = 5000;
	char *text = malloc(n + 64), *huge;

	assert_non_null(text);
	/* inih's own 200-byte lines would split this value in two */
	strcpy(text, "[kafka]\nbrokers = ");
	memset(text + strlen(text), 'b', n);
	text[18 + n] = '\0';
	strcat(text, "\nafter = 1\n");
	assert_int_equal(cfg_load_string(&f->c, text, "l.conf", &f->d), 0);
	assert_int_equal(strlen(cfg_get(&f->c, "kafka", "brokers")), n);
	assert_int_equal(cfg_find(&f->c, "kafka", "after")->line, 3);
	free(text);

	huge = malloc(9000);
	assert_non_null(huge);
	memset(huge, 'x', 8999);
	memcpy(huge, "[a]\nk=", 6);
	huge[8997] = '\n';
	huge[8998] = '\0';
	assert_int_equal(cfg_load_string(&f->c, huge, "h.conf", &f->d), -1);
	assert_diag(&f->d, "h.conf:2: line longer than 8192 bytes");
	free(huge);
}

/* ------------------------------------------------------------ settings */

static void test_defaults(void **state)
{
	fixture *f = *state;
	char host[256], src[300];
	settings *s = &f->s;

	assert_int_equal(settings_of(f, "[kafka]\nbrokers = embedded\n", "/etc/evhost/evhost.conf"),
	                 0);
	assert_string_equal(s->plugin_dir, EVHOST_DEFAULT_PLUGIN_DIR);
	assert_string_equal(s->state_dir, "/var/lib/evhost");
	assert_string_equal(s->confdir, "/etc/evhost/conf.d");
	assert_string_equal(s->http_listen, "127.0.0.1:8080");
	assert_string_equal(s->http_host, "127.0.0.1");
	assert_int_equal(s->http_port, 8080);
	assert_int_equal(s->http_threads, 32);
	assert_int_equal(s->max_body_bytes, 1024 * 1024);
	assert_int_equal(s->json_max_depth, 32);
	assert_string_equal(s->brokers, "embedded");
	assert_int_equal(s->embedded, 1);
	assert_int_equal(s->nrdkafka, 0);
	assert_int_equal(s->retry_max_attempts, 5);
	assert_int_equal(s->retry_backoff_ms, 200);
	assert_int_equal(s->retry_backoff_max_ms, 30000);
	assert_string_equal(s->dlq_suffix, ".dlq");
	assert_string_equal(s->store_synchronous, "FULL");
	assert_int_equal(s->outbox_max_rows, 100000);
	assert_int_equal(s->log_level, EVH_LOG_INFO);
	assert_int_equal(s->log_fmt, LOG_FORMAT_AUTO);
	assert_int_equal(s->metrics_enabled, 1);
	assert_null(s->jwt_secret_file);
	assert_null(s->jwt_secret);
	assert_string_equal(s->jwt_issuer, "evhost");
	assert_null(s->admin_token_file);
	assert_int_equal(gethostname(host, sizeof host), 0);
	snprintf(src, sizeof src, "evhost://%s", host);
	assert_string_equal(s->source, src);
	assert_int_equal(s->nplugins, 0);
}

/* state_dir is created at start; what cannot be is an error at its line. */
static void test_state_dir_that_cannot_be_made(void **state)
{
	fixture *f = *state;
	char text[1024], want[1024];

	write_file(f, "a-file", "x\n");
	snprintf(text, sizeof text, "[host]\nstate_dir = %s/a-file\n" MIN_KAFKA, f->dir);
	assert_int_not_equal(settings_of(f, text, "main.conf"), 0);
	snprintf(want, sizeof want, "main.conf:2: [host] state_dir: '%s/a-file' is not a directory",
	         f->dir);
	assert_diag(&f->d, want);
}

static void test_state_dir_without_a_parent(void **state)
{
	fixture *f = *state;
	char text[1024], want[1024];

	snprintf(text, sizeof text, "[host]\nstate_dir = %s/no/such/state\n" MIN_KAFKA, f->dir);
	assert_int_not_equal(settings_of(f, text, "main.conf"), 0);
	snprintf(want, sizeof want,
	         "main.conf:2: [host] state_dir: '%s/no/such/state' cannot be created: "
	         "'%s/no/such' does not exist (evhostd creates one level only)",
	         f->dir, f->dir);
	assert_diag(&f->d, want);
	/* a file where its parent should be */
	write_file(f, "plain", "x\n");
	snprintf(text, sizeof text, "[host]\nstate_dir = %s/plain/state\n" MIN_KAFKA, f->dir);
	assert_int_not_equal(settings_of(f, text, "main.conf"), 0);
	snprintf(want, sizeof want,
	         "main.conf:2: [host] state_dir: '%s/plain/state' cannot be created: "
	         "'%s/plain' is not a directory (evhostd creates one level only)",
	         f->dir, f->dir);
	assert_diag(&f->d, want);
}

static void test_state_dir_made_at_start_is_fine(void **state)
{
	fixture *f = *state;
	char text[1024];

	/* Not there yet, but its parent is (a trailing slash as well). */
	snprintf(text, sizeof text, "[host]\nstate_dir = %s/state/\n" MIN_KAFKA, f->dir);
	assert_int_equal(settings_of(f, text, "main.conf"), 0);
	assert_no_diag(&f->d);
}

static void test_all_keys_set(void **state)
{
	fixture *f = *state;
	settings *s = &f->s;
	char text[1024], token[160];

	write_file(f, "admin.token", "0123456789abcdef\n");
	snprintf(token, sizeof token, "%s/admin.token", f->dir);
	snprintf(text, sizeof text,
	         "[host]\nplugin_dir = lib/plugins\nstate_dir = /srv/ev\n"
	         "confdir = /etc/ev.d\nsource = urn:svc\n"
	         "[http]\nlisten = [::1]:0\nthreads = 256\n"
	         "max_body_bytes = 64k\njson_max_depth = 8\n"
	         "[kafka]\nbrokers = a:9092,b:9092\nretry.max_attempts = 9\n"
	         "retry.backoff_ms = 50\nretry.backoff_max_ms = 60000\n"
	         "dlq_suffix = -dead\n"
	         "[store]\nsynchronous = normal\noutbox_max_rows = 0\n"
	         "[log]\nlevel = warn\nformat = json\n"
	         "[metrics]\nenabled = off\n"
	         "[auth]\nissuer = me\n"
	         "[admin]\ntoken_file = %s\n",
	         token);
	assert_int_equal(settings_of(f, text, "/etc/evhost/main.conf"), 0);
	assert_no_diag(&f->d);
	assert_string_equal(s->plugin_dir, "/etc/evhost/lib/plugins");
	assert_string_equal(s->state_dir, "/srv/ev");
	assert_string_equal(s->confdir, "/etc/ev.d");
	assert_string_equal(s->source, "urn:svc");
	assert_string_equal(s->http_listen, "[::1]:0");
	assert_string_equal(s->http_host, "::1");
	assert_int_equal(s->http_port, 0);
	assert_int_equal(s->http_threads, 256);
	assert_int_equal(s->max_body_bytes, 65536);
	assert_int_equal(s->json_max_depth, 8);
	assert_string_equal(s->brokers, "a:9092,b:9092");
	assert_int_equal(s->embedded, 0);
	assert_int_equal(s->retry_max_attempts, 9);
	assert_int_equal(s->retry_backoff_ms, 50);
	assert_int_equal(s->retry_backoff_max_ms, 60000);
	assert_string_equal(s->dlq_suffix, "-dead");
	assert_string_equal(s->store_synchronous, "NORMAL");
	assert_int_equal(s->outbox_max_rows, 0);
	assert_int_equal(s->log_level, EVH_LOG_WARN);
	assert_int_equal(s->log_fmt, LOG_FORMAT_JSON);
	assert_int_equal(s->metrics_enabled, 0);
	assert_string_equal(s->jwt_issuer, "me");
	assert_string_equal(s->admin_token_file, token);
	assert_string_equal(s->admin_token, "0123456789abcdef");
}

static void test_unknown_section_and_key(void **state)
{
	fixture *f = *state;

	assert_int_equal(settings_of(f,
	                             MIN_KAFKA "[htp]\nthreads = 1\n\n[http]\nthread = 2\n"
	                                       "bogus = 1\n[plugins.user]\nenabled = true\n",
	                             "u.conf"),
	                 -1);
	assert_diag(&f->d, "u.conf:3: unknown section [htp]");
	assert_diag(&f->d, "u.conf:7: unknown key 'thread' in [http]; did you mean 'threads'?");
	assert_diag(&f->d, "u.conf:8: unknown key 'bogus' in [http]");
	assert_diag(&f->d, "u.conf:9: unknown section [plugins.user]");
	assert_int_equal(f->d.n, 4);
}

static void test_key_outside_section(void **state)
{
	fixture *f = *state;

	assert_int_equal(settings_of(f, "\nstray = 1\n" MIN_KAFKA, "o.conf"), -1);
	assert_diag(&f->d, "o.conf:2: key outside any [section]");
}

static void test_bad_values(void **state)
{
	fixture *f = *state;

	assert_int_equal(
	    settings_of(f,
	                MIN_KAFKA "[http]\nthreads = abc\nmax_body_bytes = 2G\n"
	                          "json_max_depth = 1m\n"
	                          "listen = localhost:80\n"
	                          "[kafka]\nretry.max_attempts = 0\ndlq_suffix = a b\n"
	                          "[store]\nsynchronous = OFF\noutbox_max_rows = -1\n"
	                          "[log]\nlevel = loud\nformat = xml\n[metrics]\nenabled = True\n",
	                "b.conf"),
	    -1);
	assert_diag(&f->d, "b.conf:4: [http] threads: expected an integer, got 'abc'");
	assert_diag(&f->d, "b.conf:5: [http] max_body_bytes: must be between 1 and 1073741824, "
	                   "got '2G'");
	assert_diag(&f->d, "b.conf:6: [http] json_max_depth: expected an integer, got '1m'");
	assert_diag(&f->d, "b.conf:7: [http] listen: expected IP:port with a port of 0-65535, "
	                   "e.g. 127.0.0.1:8080, got 'localhost:80'");
	assert_diag(&f->d,
	            "b.conf:9: [kafka] retry.max_attempts: must be between 1 and 1000, got '0'");
	assert_diag(&f->d, "b.conf:10: [kafka] dlq_suffix: expected up to 64 of the characters "
	                   "a-z A-Z 0-9 . _ -, got 'a b'");
	assert_diag(&f->d, "b.conf:12: [store] synchronous: expected FULL or NORMAL, got 'OFF'");
	assert_diag(&f->d,
	            "b.conf:13: [store] outbox_max_rows: must be between 0 and "
	            "9223372036854775807, got '-1'");
	assert_diag(&f->d, "b.conf:15: [log] level: expected error, warn, info or debug, "
	                   "got 'loud'");
	assert_diag(&f->d, "b.conf:16: [log] format: expected auto, text or json, got 'xml'");
	assert_diag(&f->d, "b.conf:18: [metrics] enabled: expected true/false, yes/no, on/off "
	                   "or 1/0, got 'True'");
	assert_int_equal(f->d.n, 11);
	/* bad values leave the defaults in place */
	assert_int_equal(f->s.http_threads, 32);
	assert_string_equal(f->s.http_listen, "127.0.0.1:8080");
	assert_int_equal(f->s.http_request_timeout_ms, 10000);
}

/* At most 128 levels: deeper bodies overflowed an HTTP worker's stack in
 * the plugins' parser. */
static void test_json_max_depth_bound(void **state)
{
	fixture *f = *state;
	expect_one_error(MIN_KAFKA "[http]\njson_max_depth = 129\n", "t.conf",
	                 "t.conf:4: [http] json_max_depth: must be between 1 and 128, got '129'");
	assert_int_equal(settings_of(f, MIN_KAFKA "[http]\njson_max_depth = 128\n", "t.conf"), 0);
	assert_int_equal(f->s.json_max_depth, 128);
}

static void test_request_timeout(void **state)
{
	fixture *f = *state;
	expect_one_error(MIN_KAFKA "[http]\nrequest_timeout = 500ms\n", "t.conf",
	                 "t.conf:4: [http] request_timeout: expected a duration from 1s to 1h, "
	                 "such as 10s or 2m, got '500ms'");
	assert_int_equal(settings_of(f, MIN_KAFKA "[http]\nrequest_timeout = 2m\n", "t.conf"), 0);
	assert_int_equal(f->s.http_request_timeout_ms, 120000);
	/* ms as for every duration key, within the key's range */
	assert_int_equal(settings_of(f, MIN_KAFKA "[http]\nrequest_timeout = 2500ms\n", "t.conf"), 0);
	assert_int_equal(f->s.http_request_timeout_ms, 2500);
}

static void test_stream_unacked_timeout(void **state)
{
	fixture *f = *state;
	assert_int_equal(settings_of(f, MIN_KAFKA, "t.conf"), 0);
	assert_int_equal(f->s.http_stream_unacked_ms, 60000);
	expect_one_error(MIN_KAFKA "[http]\nstream_unacked_timeout = 0\n", "t.conf",
	                 "t.conf:4: [http] stream_unacked_timeout: expected a duration from 1s to "
	                 "1h, such as 10s or 2m, got '0'");
	expect_one_error(MIN_KAFKA "[http]\nstream_unacked_timeout = 2h\n", "t.conf",
	                 "t.conf:4: [http] stream_unacked_timeout: expected a duration from 1s to "
	                 "1h, such as 10s or 2m, got '2h'");
	assert_int_equal(settings_of(f, MIN_KAFKA "[http]\nstream_unacked_timeout = 5m\n", "t.conf"),
	                 0);
	assert_int_equal(f->s.http_stream_unacked_ms, 300000);
}

static void test_max_head_bytes(void **state)
{
	fixture *f = *state;
	assert_int_equal(settings_of(f, MIN_KAFKA, "t.conf"), 0);
	assert_int_equal(f->s.http_max_head_bytes, 16384);
	expect_one_error(MIN_KAFKA "[http]\nmax_head_bytes = 1K\n", "t.conf",
	                 "t.conf:4: [http] max_head_bytes: must be between 4096 and 1048576, "
	                 "got '1K'");
	expect_one_error(MIN_KAFKA "[http]\nmax_head_bytes = 2M\n", "t.conf",
	                 "t.conf:4: [http] max_head_bytes: must be between 4096 and 1048576, "
	                 "got '2M'");
	assert_int_equal(settings_of(f, MIN_KAFKA "[http]\nmax_head_bytes = 64K\n", "t.conf"), 0);
	assert_int_equal(f->s.http_max_head_bytes, 65536);
}

static void test_keep_alive_timeout(void **state)
{
	fixture *f = *state;
	assert_int_equal(settings_of(f, MIN_KAFKA, "t.conf"), 0);
	assert_int_equal(f->s.http_keep_alive_ms, 500); /* civetweb's own default */
	expect_one_error(MIN_KAFKA "[http]\nkeep_alive_timeout = 2h\n", "t.conf",
	                 "t.conf:4: [http] keep_alive_timeout: expected 0 (off) or a duration up "
	                 "to 1h, such as 500ms, 5s or 1m, got '2h'");
	expect_one_error(MIN_KAFKA "[http]\nkeep_alive_timeout = -1\n", "t.conf",
	                 "t.conf:4: [http] keep_alive_timeout: expected 0 (off) or a duration up "
	                 "to 1h, such as 500ms, 5s or 1m, got '-1'");
	expect_one_error(MIN_KAFKA "[http]\nkeep_alive_timeout = 5 s\n", "t.conf",
	                 "t.conf:4: [http] keep_alive_timeout: expected 0 (off) or a duration up "
	                 "to 1h, such as 500ms, 5s or 1m, got '5 s'");
	assert_int_equal(settings_of(f, MIN_KAFKA "[http]\nkeep_alive_timeout = 75s\n", "t.conf"),
	                 0);
	assert_int_equal(f->s.http_keep_alive_ms, 75000);
	assert_int_equal(settings_of(f, MIN_KAFKA "[http]\nkeep_alive_timeout = 250ms\n", "t.conf"),
	                 0);
	assert_int_equal(f->s.http_keep_alive_ms, 250);
	assert_int_equal(settings_of(f, MIN_KAFKA "[http]\nkeep_alive_timeout = 0\n", "t.conf"), 0);
	assert_int_equal(f->s.http_keep_alive_ms, -1); /* off (0 in settings is the default) */
}

/* [auth] token_ttl_max (whole seconds, 1m to 366d) and
 * jwt_jwks_cache_max_age (1m to 366d): their defaults, refusals and units. */
/* What jwt_jwks_cache_max_age needs beside it. */
#define JWKS_URL_KEYS "jwt_jwks_url = https://idp.example/certs\njwt_public_key_issuer = i\n"

static void test_auth_durations(void **state)
{
	static const char *const ttl_bad[] = {"30s", "1500ms", "367d", "soon", ""};
	static const char *const age_bad[] = {"59s", "400d", "7 d", "-1d", "60500ms"};
	fixture *f = *state;
	char text[256], want[256];
	assert_int_equal(settings_of(f, MIN_KAFKA, "t.conf"), 0);
	assert_int_equal(f->s.token_ttl_max_s, 30 * 86400);
	assert_int_equal(f->s.jwks_cache_max_age_s, 7 * 86400);
	for (size_t i = 0; i < sizeof ttl_bad / sizeof *ttl_bad; i++) {
		snprintf(text, sizeof text, MIN_KAFKA "[auth]\ntoken_ttl_max = %s\n", ttl_bad[i]);
		snprintf(want, sizeof want,
		         "t.conf:4: [auth] token_ttl_max: expected whole seconds from 1m to 366d, "
		         "such as 12h or 30d, got '%s'",
		         ttl_bad[i]);
		expect_one_error(text, "t.conf", want);
	}
	for (size_t i = 0; i < sizeof age_bad / sizeof *age_bad; i++) {
		snprintf(text, sizeof text,
		         MIN_KAFKA "[auth]\njwt_jwks_cache_max_age = %s\n" JWKS_URL_KEYS, age_bad[i]);
		snprintf(want, sizeof want,
		         "t.conf:4: [auth] jwt_jwks_cache_max_age: expected whole seconds from 1m "
		         "to 366d, such as 12h or 7d, got '%s'",
		         age_bad[i]);
		expect_one_error(text, "t.conf", want);
	}
	assert_int_equal(settings_of(f,
	                             MIN_KAFKA "[auth]\ntoken_ttl_max = 12h\n"
	                                       "jwt_jwks_cache_max_age = 366d\n" JWKS_URL_KEYS,
	                             "t.conf"),
	                 0);
	assert_int_equal(f->s.token_ttl_max_s, 12 * 3600);
	assert_int_equal(f->s.jwks_cache_max_age_s, 366 * 86400);
	assert_int_equal(settings_of(f, MIN_KAFKA "[auth]\ntoken_ttl_max = 1m\n", "t.conf"), 0);
	assert_int_equal(f->s.token_ttl_max_s, 60);
}

/* [host] source is each event's ce_source with "/NAME" after it: one that
 * header could not hold whole is refused, the longest that fits taken. */
static void test_source_fits_ce_source(void **state)
{
	fixture *f = *state;
	char text[512], value[192];
	memset(value, 'a', 191);
	value[191] = '\0';
	snprintf(text, sizeof text, MIN_KAFKA "[host]\nsource = %s\n", value);
	expect_one_error(text, "s.conf",
	                 "s.conf:4: [host] source: expected at most 190 bytes (with '/' and a "
	                 "plugin's name it is each event's ce_source, 255 bytes at most), got 'aaa");
	value[190] = '\0';
	snprintf(text, sizeof text, MIN_KAFKA "[host]\nsource = %s\n", value);
	assert_int_equal(settings_of(f, text, "s.conf"), 0);
	assert_string_equal(f->s.source, value);
}

static void test_listen_forms(void **state)
{
	fixture *f = *state;
	static const char *const bad[] = {"8080", ":8080", "127.0.0.1:", "127.0.0.1:65536",
	                                  "127.0.0.1:80x", "[::1]8080", "::1:8080", "1.2.3:80",
	                                  "[127.0.0.1]:80", NULL};

	assert_int_equal(settings_of(f, MIN_KAFKA "[http]\nlisten = 0.0.0.0:65535\n", "l.conf"), 0);
	assert_string_equal(f->s.http_listen, "0.0.0.0:65535");
	assert_int_equal(f->s.http_port, 65535);
	for (const char *const *b = bad; *b; b++) {
		cfg c = {0};
		settings s;
		diag d = {0};
		char text[128];
		snprintf(text, sizeof text, MIN_KAFKA "[http]\nlisten = %s\n", *b);
		assert_int_equal(cfg_load_string(&c, text, "l.conf", &d), 0);
		if (settings_from_cfg(&c, &s, &d) != -1)
			fail_msg("listen = %s was accepted", *b);
		settings_free(&s);
		cfg_free(&c);
		diag_free(&d);
	}
}

/* [http] tls_listen and tls_certificate: the address in civetweb's syntax,
 * the path to the PEM file (evhostd reads it with OpenSSL: test_https.py),
 * each needing the other. */
static void test_tls_keys(void **state)
{
	fixture *f = *state;
	char *pem = path_in(f, "server.pem"), text[1024];

	snprintf(text, sizeof text, MIN_KAFKA "[http]\ntls_listen = [::]:8443\ntls_certificate = %s\n",
	         pem);
	assert_int_equal(settings_of(f, text, "t.conf"), 0);
	assert_no_diag(&f->d);
	assert_string_equal(f->s.http_tls_listen, "[::]:8443");
	assert_string_equal(f->s.http_tls_certificate, pem);
	assert_string_equal(f->s.http_listen, "127.0.0.1:8080"); /* the plain one stays */

	expect_one_error(MIN_KAFKA "[http]\ntls_listen = 0.0.0.0:8443\n", "t.conf",
	                 "t.conf:4: [http] tls_listen needs tls_certificate");
	snprintf(text, sizeof text, MIN_KAFKA "[http]\ntls_certificate = %s\n", pem);
	expect_one_error(text, "t.conf", "tls_certificate is set but tls_listen is not");
	snprintf(text, sizeof text, MIN_KAFKA "[http]\ntls_listen = :8443\ntls_certificate = %s\n", pem);
	expect_one_error(text, "t.conf", "e.g. 0.0.0.0:8443, got ':8443'");
	/* One port for both: the second bind failed at start, after the check. */
	snprintf(text, sizeof text,
	         MIN_KAFKA "[http]\nlisten = 127.0.0.1:8080\ntls_listen = 0.0.0.0:8080\n"
	                   "tls_certificate = %s\n",
	         pem);
	expect_one_error(text, "t.conf",
	                 "t.conf:5: [http] tls_listen = 0.0.0.0:8080: listen already takes that "
	                 "port (127.0.0.1:8080); give HTTPS a port of its own");
	snprintf(text, sizeof text,
	         MIN_KAFKA "[http]\nlisten = 127.0.0.1:0\ntls_listen = 127.0.0.1:0\n"
	                   "tls_certificate = %s\n",
	         pem);
	assert_int_equal(settings_of(f, text, "t.conf"), 0); /* each its own free port */
	snprintf(text, sizeof text,
	         MIN_KAFKA "[http]\nlisten = 127.0.0.1:8080\ntls_listen = 127.0.0.2:8080\n"
	                   "tls_certificate = %s\n",
	         pem);
	assert_int_equal(settings_of(f, text, "t.conf"), 0);
	/* IPv6 addresses are compared as addresses: one written two ways, or
	 * the wildcard written long, passed the check (compared as text). */
	snprintf(text, sizeof text,
	         MIN_KAFKA "[http]\nlisten = [::1]:8080\ntls_listen = [0:0:0:0:0:0:0:1]:8080\n"
	                   "tls_certificate = %s\n",
	         pem);
	expect_one_error(text, "t.conf",
	                 "t.conf:5: [http] tls_listen = [0:0:0:0:0:0:0:1]:8080: listen already "
	                 "takes that port ([::1]:8080); give HTTPS a port of its own");
	snprintf(text, sizeof text,
	         MIN_KAFKA "[http]\nlisten = [::1]:8080\ntls_listen = [0::0]:8080\n"
	                   "tls_certificate = %s\n",
	         pem);
	expect_one_error(text, "t.conf", "tls_listen = [0::0]:8080: listen already takes that port");
	/* civetweb binds an [IPv6]:port IPv6-only: [::]:P leaves 0.0.0.0:P and
	 * 127.0.0.1:P free (refused before, though both binds succeed). */
	snprintf(text, sizeof text,
	         MIN_KAFKA "[http]\nlisten = 127.0.0.1:8080\ntls_listen = [::]:8080\n"
	                   "tls_certificate = %s\n",
	         pem);
	assert_int_equal(settings_of(f, text, "t.conf"), 0);
	snprintf(text, sizeof text,
	         MIN_KAFKA "[http]\nlisten = [::]:8443\ntls_listen = 0.0.0.0:8443\n"
	                   "tls_certificate = %s\n",
	         pem);
	assert_int_equal(settings_of(f, text, "t.conf"), 0);
	snprintf(text, sizeof text,
	         MIN_KAFKA "[http]\nlisten = [::1]:8443\ntls_listen = [::2]:8443\n"
	                   "tls_certificate = %s\n",
	         pem);
	assert_int_equal(settings_of(f, text, "t.conf"), 0);
	free(pem);
}

static void test_brokers_required(void **state)
{
	fixture *f = *state;

	assert_int_equal(settings_of(f, "[http]\nthreads = 2\n", "/x/evhost.conf"), -1);
	assert_diag(&f->d, "/x/evhost.conf: [kafka] brokers is required (e.g. brokers = "
	                   "localhost:9092, or embedded)");
	/* librdkafka takes these as no broker, or a host without its port: a
	 * daemon that never becomes ready, with no line to blame. */
	expect_one_error("[kafka]\nbrokers = ,, ,\n", "b.conf",
	                 "b.conf:2: [kafka] brokers: expected host:port[,host:port...] or "
	                 "embedded, got ',, ,'");
	expect_one_error("[kafka]\nbrokers = Embedded\n", "b.conf",
	                 "b.conf:2: [kafka] brokers: did you mean 'embedded' (lower case)? a host "
	                 "needs its port, got 'Embedded'");
	/* librdkafka connects where nobody wrote: port 99999 as 34463, letters
	 * as port 0, a bare IPv6 address's last group as its port. */
	expect_one_error("[kafka]\nbrokers = a:9092, 127.0.0.1:99999\n", "b.conf",
	                 "b.conf:2: [kafka] brokers: broker '127.0.0.1:99999': the port must be a "
	                 "number from 1 to 65535, got 'a:9092, 127.0.0.1:99999'");
	expect_one_error("[kafka]\nbrokers = k:abc\n", "b.conf",
	                 "b.conf:2: [kafka] brokers: broker 'k:abc': the port must be a number "
	                 "from 1 to 65535, got 'k:abc'");
	expect_one_error("[kafka]\nbrokers = k:0\n", "b.conf",
	                 "b.conf:2: [kafka] brokers: broker 'k:0': the port must be a number "
	                 "from 1 to 65535, got 'k:0'");
	expect_one_error("[kafka]\nbrokers = ::1:19092\n", "b.conf",
	                 "b.conf:2: [kafka] brokers: broker '::1:19092': write an IPv6 address in "
	                 "brackets, [ADDRESS]:PORT, got '::1:19092'");
	expect_one_error("[kafka]\nbrokers = [::1:19092\n", "b.conf",
	                 "b.conf:2: [kafka] brokers: broker '[::1:19092' has no ']' after its IPv6 "
	                 "address, got '[::1:19092'");
	expect_one_error("[kafka]\nbrokers = [::1]9092\n", "b.conf",
	                 "b.conf:2: [kafka] brokers: broker '[::1]9092': expected ':PORT' after "
	                 "']', got '[::1]9092'");
	expect_one_error("[kafka]\nbrokers = kafka1\n", "b.conf",
	                 "b.conf:2: [kafka] brokers: broker 'kafka1' needs its port (HOST:PORT), "
	                 "got 'kafka1'");
	expect_one_error("[kafka]\nbrokers = :9092\n", "b.conf",
	                 "b.conf:2: [kafka] brokers: broker ':9092' has no host, got ':9092'");
}

static void test_brokers_of_every_form_are_taken(void **state)
{
	fixture *f = *state;

	assert_int_equal(settings_of(f, "[kafka]\nbrokers = k1.example.com:9093, SSL://k2:9093,"
	                                "[::1]:19092,SASL_SSL://[fd00::2]:9094,,127.0.0.1:65535\n",
	                             "k.conf"),
	                 0);
	assert_string_equal(f->s.brokers, "k1.example.com:9093, SSL://k2:9093,[::1]:19092,"
	                                  "SASL_SSL://[fd00::2]:9094,,127.0.0.1:65535");
}

static void test_backoff_cross_check(void **state)
{
	fixture *f = *state;

	assert_int_equal(settings_of(f, MIN_KAFKA "retry.backoff_ms = 5000\nretry.backoff_max_ms = "
	                                          "1000\n",
	                             "r.conf"),
	                 -1);
	assert_diag(&f->d, "r.conf:4: [kafka] retry.backoff_max_ms (1000) must not be below "
	                   "retry.backoff_ms (5000)");
}

static void test_rdkafka_passthrough(void **state)
{
	fixture *f = *state;
	char text[512];
	settings *s = &f->s;

	write_file(f, "kafka.pass", "s3cret\n");
	snprintf(text, sizeof text,
	         "[kafka]\nbrokers = k:9093\nrdkafka.security.protocol = SASL_SSL\n"
	         "rdkafka.sasl.mechanisms = PLAIN\nrdkafka.sasl.password_file = kafka.pass\n"
	         "rdkafka.queue.buffering.max.ms = 5\n");
	{
		char *main_path = path_in(f, "evhost.conf");
		assert_int_equal(settings_of(f, text, main_path), 0);
		free(main_path);
	}
	assert_int_equal(s->nrdkafka, 4);
	assert_string_equal(s->rdkafka[0].key, "security.protocol");
	assert_string_equal(s->rdkafka[0].value, "SASL_SSL");
	assert_string_equal(s->rdkafka[1].key, "sasl.mechanisms");
	assert_string_equal(s->rdkafka[2].key, "sasl.password");
	assert_string_equal(s->rdkafka[2].value, "s3cret");
	assert_string_equal(s->rdkafka[3].key, "queue.buffering.max.ms");
	assert_string_equal(s->rdkafka[3].value, "5");
}

static void test_rdkafka_errors(void **state)
{
	fixture *f = *state;
	char *file = path_in(f, "k.conf"), want[512];

	write_file(f, "p", "x");
	assert_int_equal(cfg_load_string(&f->c,
	                                 "[kafka]\nbrokers = k:9092\nrdkafka. = 1\n"
	                                 "rdkafka.sasl.password = a\n"
	                                 "rdkafka.sasl.password_file = p\n"
	                                 "rdkafka.ssl.key.password_file = missing\n",
	                                 file, &f->d),
	                 0);
	f->have_settings = 1;
	assert_int_equal(settings_from_cfg(&f->c, &f->s, &f->d), -1);
	snprintf(want, sizeof want,
	         "%s:3: [kafka] rdkafka.: no librdkafka property after 'rdkafka.'", file);
	assert_diag(&f->d, want);
	snprintf(want, sizeof want,
	         "%s:5: [kafka] rdkafka.sasl.password_file: 'sasl.password' is set twice "
	         "(rdkafka.sasl.password and rdkafka.sasl.password_file); keep one",
	         file);
	assert_diag(&f->d, want);
	snprintf(want, sizeof want,
	         "%s:6: [kafka] rdkafka.ssl.key.password_file: cannot read '%s/missing': "
	         "No such file or directory",
	         file, f->dir);
	assert_diag(&f->d, want);
	assert_int_equal(f->d.n, 3);
	assert_int_equal(f->s.nrdkafka, 1);
	free(file);
}

static void test_jwt_secret(void **state)
{
	fixture *f = *state;
	char *main_path = path_in(f, "evhost.conf");
	const char *secret = "0123456789abcdef0123456789abcdef";

	write_file(f, "jwt.key", "0123456789abcdef0123456789abcdef\n");
	assert_int_equal(settings_of(f, MIN_KAFKA "[auth]\njwt_secret_file = jwt.key\n", main_path),
	                 0);
	assert_int_equal(f->s.jwt_secret_len, 32);
	assert_memory_equal(f->s.jwt_secret, secret, 32);
	assert_true(strstr(f->s.jwt_secret_file, "/jwt.key") != NULL);
	assert_int_equal(f->s.jwt_secret_file[0], '/');
	free(main_path);
}

static void test_jwt_previous_secret(void **state)
{
	fixture *f = *state;
	char *main_path = path_in(f, "evhost.conf");
	char text[256];

	write_file(f, "jwt.key", "0123456789abcdef0123456789abcdef\n");
	write_file(f, "old.key", "fedcba9876543210fedcba9876543210\n");
	assert_int_equal(settings_of(f, MIN_KAFKA "[auth]\njwt_secret_file = jwt.key\n"
	                                          "jwt_previous_secret_file = old.key\n",
	                             main_path),
	                 0);
	assert_int_equal(f->s.jwt_previous_secret_len, 32);
	assert_memory_equal(f->s.jwt_previous_secret, "fedcba9876543210fedcba9876543210", 32);
	assert_true(strstr(f->s.jwt_previous_secret_file, "/old.key") != NULL);
	/* alone it would check tokens nobody here can sign */
	snprintf(text, sizeof text, MIN_KAFKA "[auth]\njwt_previous_secret_file = %s/old.key\n",
	         f->dir);
	expect_one_error(text, "p.conf",
	                 "p.conf:4: [auth] jwt_previous_secret_file needs jwt_secret_file");
	free(main_path);
}

static void test_admin_token(void **state)
{
	fixture *f = *state;
	char *main_path = path_in(f, "evhost.conf");
	static const char *const bad[] = {"short.token", "missing.token"};

	write_file(f, "admin.token", "0123456789abcdef-admin\r\nnot this line\n");
	assert_int_equal(settings_of(f, MIN_KAFKA "[admin]\ntoken_file = admin.token\n", main_path),
	                 0);
	assert_string_equal(f->s.admin_token, "0123456789abcdef-admin");
	write_file(f, "short.token", "0123456789abcde\n"); /* 15 bytes */
	for (size_t i = 0; i < 2; i++) {
		char text[256], want[512];
		snprintf(text, sizeof text, MIN_KAFKA "[admin]\ntoken_file = %s/%s\n", f->dir, bad[i]);
		snprintf(want, sizeof want, "a.conf:4: [admin] token_file: %s",
		         i ? "cannot read" : "the token in");
		expect_one_error(text, "a.conf", want);
	}
	free(main_path);
}

/* Secret files every local account may read are noted (evhostd says them),
 * with the mode of the file that was read; private ones are not. A reload
 * keeps the next list by swapping it into the running settings. */
static void test_public_secrets(void **state)
{
	fixture *f = *state;
	char *main_path = path_in(f, "evhost.conf"), *p;
	settings running;

	write_file(f, "jwt.key", "0123456789abcdef0123456789abcdef\n");
	write_file(f, "admin.token", "0123456789abcdef-admin\n");
	write_file(f, "tls.pem", "not read here\n");
	p = path_in(f, "jwt.key");
	assert_int_equal(chmod(p, 0644), 0);
	free(p);
	p = path_in(f, "admin.token");
	assert_int_equal(chmod(p, 0600), 0);
	free(p);
	p = path_in(f, "tls.pem");
	assert_int_equal(chmod(p, 0604), 0);
	free(p);
	assert_int_equal(settings_of(f, MIN_KAFKA "[auth]\njwt_secret_file = jwt.key\n"
	                                          "[admin]\ntoken_file = admin.token\n"
	                                          "[http]\ntls_listen = 127.0.0.1:8443\n"
	                                          "tls_certificate = tls.pem\n",
	                             main_path),
	                 0);
	assert_int_equal(f->s.npublic_secrets, 2);
	assert_string_equal(f->s.public_secrets[0].what, "[auth] jwt_secret_file");
	assert_true(strstr(f->s.public_secrets[0].where, "evhost.conf:4") != NULL);
	assert_true(strstr(f->s.public_secrets[0].path, "/jwt.key") != NULL);
	assert_int_equal(f->s.public_secrets[0].mode, 0644);
	assert_string_equal(f->s.public_secrets[1].what, "[http] tls_certificate");
	assert_int_equal(f->s.public_secrets[1].mode, 0604);

	memset(&running, 0, sizeof running);
	settings_swap_public_secrets(&running, &f->s);
	assert_int_equal(running.npublic_secrets, 2);
	assert_int_equal(f->s.npublic_secrets, 0);
	assert_null(f->s.public_secrets);
	settings_free(&running);
	free(main_path);
}

/* [auth] jwt_public_key_*: the key file's text is read (evhostd parses it);
 * the issuer is required with it, the other keys need it. */
static void test_jwt_public_keys(void **state)
{
	fixture *f = *state;
	char text[512];
	write_file(f, "idp.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
	snprintf(text, sizeof text,
	         MIN_KAFKA "[auth]\njwt_public_key_file = %s/idp.pem\n"
	                   "jwt_public_key_issuer = https://idp\njwt_public_key_audience = shop\n"
	                   "jwt_public_key_roles_claim = realm_access.roles\n",
	         f->dir);
	assert_int_equal(settings_of(f, text, "a.conf"), 0);
	assert_non_null(strstr(f->s.jwt_public_keys, "BEGIN PUBLIC KEY"));
	assert_int_equal(f->s.jwt_public_keys_len, strlen(f->s.jwt_public_keys));
	assert_string_equal(f->s.jwt_public_issuer, "https://idp");
	assert_string_equal(f->s.jwt_public_audience, "shop");
	assert_string_equal(f->s.jwt_public_roles, "realm_access.roles");
	snprintf(text, sizeof text, MIN_KAFKA "[auth]\njwt_public_key_file = %s/idp.pem\n", f->dir);
	expect_one_error(text, "a.conf", "a.conf:4: [auth] jwt_public_key_file needs "
	                                 "jwt_public_key_issuer");
	expect_one_error(MIN_KAFKA "[auth]\njwt_public_key_audience = shop\n", "a.conf",
	                 "a.conf:4: [auth] jwt_public_key_audience is set but neither "
	                 "jwt_public_key_file nor jwt_jwks_url is");
	snprintf(text, sizeof text,
	         MIN_KAFKA "[auth]\njwt_public_key_file = %s/none.pem\njwt_public_key_issuer = i\n",
	         f->dir);
	expect_one_error(text, "a.conf", "a.conf:4: [auth] jwt_public_key_file: cannot read");
}

/* settings_of again on the same fixture: what the last one made is freed. */
static int settings_again(fixture *f, const char *text, const char *file)
{
	if (f->have_settings)
		settings_free(&f->s);
	cfg_free(&f->c);
	diag_free(&f->d);
	memset(&f->c, 0, sizeof f->c);
	memset(&f->s, 0, sizeof f->s);
	memset(&f->d, 0, sizeof f->d);
	f->have_settings = 0;
	return settings_of(f, text, file);
}

/* A number past 64 bits, in its digits or once its suffix multiplies it, is
 * refused as out of range, not as a syntax error it is not. */
static void test_int_beyond_64_bits(void **state)
{
	fixture *f = *state;

	assert_int_equal(settings_of(f,
	                             MIN_KAFKA "[http]\nthreads = 99999999999999999999\n"
	                                       "max_body_bytes = 9999999999G\n"
	                                       "[store]\noutbox_max_rows = 9223372036854775808\n",
	                             "r.conf"),
	                 -1);
	assert_diag(&f->d, "r.conf:4: [http] threads: must be between 1 and 256, "
	                   "got '99999999999999999999'");
	assert_diag(&f->d, "r.conf:5: [http] max_body_bytes: must be between 1 and 1073741824, "
	                   "got '9999999999G'");
	assert_diag(&f->d, "r.conf:7: [store] outbox_max_rows: must be between 0 and "
	                   "9223372036854775807, got '9223372036854775808'");
	assert_int_equal(f->d.n, 3);
	/* The largest that fits is taken. */
	assert_int_equal(
	    settings_again(f, MIN_KAFKA "[store]\noutbox_max_rows = 9223372036854775807\n", "r.conf"),
	    0);
	assert_true(f->s.outbox_max_rows == INT64_MAX);
}

/* [auth] jwt_jwks_url: its parts as the fetcher uses them; TLS unless the
 * provider is on this host; the keys that go with it. */
static void jwks_url(fixture *f, const char *url, int tls, const char *host, const char *port,
                     const char *target)
{
	char text[512];
	snprintf(text, sizeof text,
	         MIN_KAFKA "[auth]\njwt_jwks_url = %s\njwt_public_key_issuer = https://idp\n", url);
	assert_int_equal(settings_again(f, text, "a.conf"), 0);
	assert_string_equal(f->s.jwks_url, url);
	assert_int_equal(f->s.jwks_tls, tls);
	assert_string_equal(f->s.jwks_host, host);
	assert_string_equal(f->s.jwks_port, port);
	assert_string_equal(f->s.jwks_target, target);
	assert_int_equal(f->s.jwks_refresh_ms, 3600000);
}

static void test_jwks_url(void **state)
{
	fixture *f = *state;
	char text[512];
	jwks_url(f, "https://sso.example.com/realms/shop/protocol/openid-connect/certs", 1,
	         "sso.example.com", "443", "/realms/shop/protocol/openid-connect/certs");
	jwks_url(f, "HTTPS://idp:8443", 1, "idp", "8443", "/");
	jwks_url(f, "https://www.googleapis.com/oauth2/v3/certs?x=1", 1, "www.googleapis.com",
	         "443", "/oauth2/v3/certs?x=1");
	jwks_url(f, "http://127.0.0.1:8080/certs", 0, "127.0.0.1", "8080", "/certs");
	jwks_url(f, "http://127.9.8.7/c", 0, "127.9.8.7", "80", "/c");
	jwks_url(f, "http://LocalHost:1/", 0, "LocalHost", "1", "/");
	jwks_url(f, "http://[::1]:9000/jwks", 0, "::1", "9000", "/jwks");
	jwks_url(f, "https://[2001:db8::1]/jwks", 1, "2001:db8::1", "443", "/jwks");

	for (const char *const *bad = (const char *const[]){
	         "http://idp.example/certs", "http://10.0.0.1/certs", "http://[::2]/c",
	         "http://localhost.idp.example/c", "http://127.0.0.1.idp.example/c", "ftp://idp/c",
	         "https://", "https:///c", "idp.example/certs", "https://[::1/c", NULL};
	     *bad; bad++) {
		snprintf(text, sizeof text,
		         MIN_KAFKA "[auth]\njwt_jwks_url = %s\njwt_public_key_issuer = i\n", *bad);
		expect_one_error(text, "a.conf",
		                 "a.conf:4: [auth] jwt_jwks_url: expected https://HOST[:PORT][/PATH], "
		                 "or http:// to a loopback address");
	}
	/* Said without what is before the '@': it may be a password. */
	expect_one_error(MIN_KAFKA "[auth]\njwt_jwks_url = https://user:pw@idp/c\n"
	                           "jwt_public_key_issuer = i\n",
	                 "a.conf",
	                 "a.conf:4: [auth] jwt_jwks_url: a user or password in the URL is not "
	                 "supported, got 'https://***@idp/c'");
	expect_one_error(MIN_KAFKA "[auth]\njwt_jwks_url = https://idp:0/c\njwt_public_key_issuer "
	                           "= i\n",
	                 "a.conf", "a.conf:4: [auth] jwt_jwks_url: expected a port of 1-65535");
	expect_one_error(MIN_KAFKA "[auth]\njwt_jwks_url = https://idp/c#k\njwt_public_key_issuer "
	                           "= i\n",
	                 "a.conf", "a.conf:4: [auth] jwt_jwks_url: expected a path without fragment");
	expect_one_error(MIN_KAFKA "[auth]\njwt_jwks_url = https://idp/c\n", "a.conf",
	                 "a.conf:4: [auth] jwt_jwks_url needs jwt_public_key_issuer");
	write_file(f, "idp.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
	snprintf(text, sizeof text,
	         MIN_KAFKA "[auth]\njwt_jwks_url = https://idp/c\njwt_public_key_file = %s/idp.pem\n"
	                   "jwt_public_key_issuer = i\n",
	         f->dir);
	expect_one_error(text, "a.conf",
	                 "a.conf:4: [auth] jwt_jwks_url and jwt_public_key_file are both set");
	expect_one_error(MIN_KAFKA "[auth]\njwt_jwks_ca_file = /etc/ssl/ca.pem\n", "a.conf",
	                 "a.conf:4: [auth] jwt_jwks_ca_file is set but jwt_jwks_url is not");
	expect_one_error(MIN_KAFKA "[auth]\njwt_jwks_refresh = 5m\n", "a.conf",
	                 "a.conf:4: [auth] jwt_jwks_refresh is set but jwt_jwks_url is not");
	expect_one_error(MIN_KAFKA "[auth]\njwt_jwks_cache_max_age = 1h\n", "a.conf",
	                 "a.conf:4: [auth] jwt_jwks_cache_max_age is set but jwt_jwks_url is not");
	/* "true" without a listener read as HTTPS on */
	expect_one_error(MIN_KAFKA "[metrics]\nhttps = true\n", "a.conf",
	                 "a.conf:4: [metrics] https is true but [http] tls_listen is not set");
	expect_one_error(MIN_KAFKA "[admin]\nhttps = yes\n", "a.conf",
	                 "a.conf:4: [admin] https is true but [http] tls_listen is not set");
	assert_int_equal(settings_of(f, MIN_KAFKA "[admin]\nhttps = false\n", "a.conf"), 0);
	expect_one_error(MIN_KAFKA "[auth]\njwt_jwks_url = http://127.0.0.1/c\n"
	                           "jwt_public_key_issuer = i\njwt_jwks_ca_file = /etc/ca.pem\n",
	                 "a.conf",
	                 "a.conf:6: [auth] jwt_jwks_ca_file is set but jwt_jwks_url is http://");
	for (const char *const *bad =
	         (const char *const[]){"4s", "4999ms", "500ms", "86400001ms", "2d", "soon", "0", "",
	                               NULL};
	     *bad; bad++) {
		snprintf(text, sizeof text,
		         MIN_KAFKA "[auth]\njwt_jwks_url = https://idp/c\njwt_public_key_issuer = i\n"
		                   "jwt_jwks_refresh = %s\n",
		         *bad);
		expect_one_error(text, "a.conf",
		                 "a.conf:6: [auth] jwt_jwks_refresh: expected a duration from 5s to 24h");
	}
	assert_int_equal(settings_again(f, MIN_KAFKA "[auth]\njwt_jwks_url = https://idp/c\n"
	                                             "jwt_public_key_issuer = i\njwt_jwks_refresh = 5s\n",
	                                "a.conf"),
	                 0);
	assert_int_equal(f->s.jwks_refresh_ms, 5000);
	/* Kept as given, not cut to whole seconds (5 s). */
	assert_int_equal(settings_again(f, MIN_KAFKA "[auth]\njwt_jwks_url = https://idp/c\n"
	                                             "jwt_public_key_issuer = i\n"
	                                             "jwt_jwks_refresh = 5500ms\n",
	                                "a.conf"),
	                 0);
	assert_int_equal(f->s.jwks_refresh_ms, 5500);
	assert_int_equal(settings_again(f, MIN_KAFKA "[auth]\njwt_jwks_url = https://idp/c\n"
	                                             "jwt_public_key_issuer = i\njwt_jwks_refresh = 24h\n",
	                                "a.conf"),
	                 0);
	assert_int_equal(f->s.jwks_refresh_ms, 86400000);
}

static void test_jwt_secret_errors(void **state)
{
	fixture *f = *state;
	char want[512];
	static const char *const cases[] = {"short.key", "empty.key", "missing.key"};

	write_file(f, "short.key", "0123456789abcdef0123456789abcde\n"); /* 31 + newline */
	write_file(f, "empty.key", "");
	for (size_t i = 0; i < 3; i++) {
		cfg c = {0};
		settings s;
		diag d = {0};
		char text[256];
		snprintf(text, sizeof text, MIN_KAFKA "[auth]\njwt_secret_file = %s/%s\n", f->dir,
		         cases[i]);
		assert_int_equal(cfg_load_string(&c, text, "j.conf", &d), 0);
		assert_int_equal(settings_from_cfg(&c, &s, &d), -1);
		if (i < 2)
			snprintf(want, sizeof want,
			         "j.conf:4: [auth] jwt_secret_file: '%s/%s': the secret must be at "
			         "least 32 bytes",
			         f->dir, cases[i]);
		else
			snprintf(want, sizeof want,
			         "j.conf:4: [auth] jwt_secret_file: cannot read '%s/%s': No such "
			         "file or directory",
			         f->dir, cases[i]);
		assert_diag(&d, want);
		assert_int_equal(d.n, 1);
		assert_null(s.jwt_secret);
		settings_free(&s);
		cfg_free(&c);
		diag_free(&d);
	}
}

/* ------------------------------------------------------------ plugins */

static void test_plugin_sections(void **state)
{
	fixture *f = *state;
	plugin_settings *p;

	assert_int_equal(settings_of(f,
	                             "[host]\nplugin_dir = /opt/ev/plugins\n" MIN_KAFKA
	                             "[plugin.user]\nenabled = no\ntopic = USER_CREATED\n"
	                             "[plugin.crud]\n"
	                             "[plugin.notifications]\nrequired = false\npath = ./n/x.so\n"
	                             "group = mail\n[plugin.ext]\npath = /usr/lib/ext.so\n",
	                             "/etc/evhost/evhost.conf"),
	                 0);
	assert_no_diag(&f->d);
	assert_int_equal(f->s.nplugins, 4);
	p = f->s.plugins;
	assert_string_equal(p[0].name, "crud");
	assert_string_equal(p[0].section, "plugin.crud");
	assert_int_equal(p[0].enabled, 1);
	assert_int_equal(p[0].required, 1);
	assert_string_equal(p[0].path, "/opt/ev/plugins/crud.so");
	assert_string_equal(p[0].group, "evhost.crud");
	assert_string_equal(p[0].file, "/etc/evhost/evhost.conf");
	assert_int_equal(p[0].line, 8);
	assert_string_equal(p[1].name, "ext");
	assert_string_equal(p[1].path, "/usr/lib/ext.so");
	assert_string_equal(p[2].name, "notifications");
	assert_int_equal(p[2].required, 0);
	assert_string_equal(p[2].path, "/opt/ev/plugins/n/x.so");
	assert_string_equal(p[2].group, "mail");
	assert_string_equal(p[3].name, "user");
	assert_int_equal(p[3].enabled, 0);
	assert_int_equal(p[3].line, 5);
}

static void test_plugin_section_errors(void **state)
{
	fixture *f = *state;

	assert_int_equal(settings_of(f,
	                             MIN_KAFKA "[plugin.]\n[plugin.a.b]\nx = 1\n"
	                                       "[plugin.ok]\nenabled = maybe\npath =\ngroup =\n",
	                             "p.conf"),
	                 -1);
	assert_diag(&f->d, "p.conf:3: bad plugin name '' in [plugin.]: use up to 64 letters, "
	                   "digits, '-' and '_'");
	assert_diag(&f->d, "p.conf:4: bad plugin name 'a.b' in [plugin.a.b]: use up to 64 letters, "
	                   "digits, '-' and '_'");
	assert_diag(&f->d, "p.conf:7: [plugin.ok] enabled: expected true/false, yes/no, on/off or "
	                   "1/0, got 'maybe'");
	assert_diag(&f->d, "p.conf:8: [plugin.ok] path: expected a path, got ''");
	assert_diag(&f->d, "p.conf:9: [plugin.ok] group: expected a value, got ''");
	assert_int_equal(f->d.n, 5);
	assert_int_equal(f->s.nplugins, 1);
}

/* Two enabled plugins in one consumer group are refused at the second
 * one's group line, naming the first; a disabled one does not count. A
 * default group (evhost.NAME) counts as any other. */
static void test_plugin_groups_are_their_own(void **state)
{
	fixture *f = *state;

	assert_int_equal(settings_of(f,
	                             MIN_KAFKA "[plugin.a]\ngroup = shared\n"
	                                       "[plugin.b]\npath = b.so\ngroup = shared\n"
	                                       "[plugin.c]\nenabled = false\ngroup = shared\n"
	                                       "[plugin.d]\n[plugin.e]\ngroup = evhost.d\n",
	                             "g.conf"),
	                 -1);
	assert_diag(&f->d, "g.conf:7: [plugin.b] group = shared: plugin 'a' (g.conf:4) is in "
	                   "that group too; two plugins in one group split its topics' "
	                   "partitions between them, each missing the events the other gets: give "
	                   "each its own group");
	assert_diag(&f->d, "g.conf:13: [plugin.e] group = evhost.d: plugin 'd' (g.conf:11) "
	                   "is in that group too; two plugins in one group split its topics' "
	                   "partitions between them, each missing the events the other gets: give "
	                   "each its own group");
	assert_int_equal(f->d.n, 2);
}

/* --------------------------------------------------------- schema checks */

static const evh_config_key test_schema[] = {
    {"topic", EVH_CFG_STRING, "USER_CREATED", 0, "topic"},
    {"db_path", EVH_CFG_PATH, NULL, 1, "database"},
    {"max_items", EVH_CFG_INT, "10", 0, "limit"},
    {"verbose", EVH_CFG_BOOL, "false", 0, "chatty"},
    {"roles", EVH_CFG_LIST, NULL, 0, "roles"},
    {"collection.*.required", EVH_CFG_LIST, NULL, 0, "fields"},
    {"collection.*.table", EVH_CFG_STRING, NULL, 0, "table"},
    {"smtp.host", EVH_CFG_STRING, NULL, 1, "host"},
    {"route.*", EVH_CFG_STRING, NULL, 1, "at least one route"},
    {NULL, 0, NULL, 0, NULL},
};

static const char *const host_owned[] = {"enabled", "required", "path", "group", NULL};

static void test_validate_section(void **state)
{
	fixture *f = *state;

	assert_int_equal(cfg_load_string(&f->c,
	                                 "[plugin.crud]\nenabled = true\npath = crud.so\n"
	                                 "topic = T\nmax_items = 4k\nverbose = yes\n"
	                                 "roles = admin, user\n"
	                                 "collection.posts.required = title,body\n"
	                                 "collection.posts.table = posts\n"
	                                 "collection.x.y.table = no\ncollection..table = no\n"
	                                 "topics = A\nmax_items2 = 1\n"
	                                 "[plugin.other]\nverbose = nope\n",
	                                 "v.conf", &f->d),
	                 0);
	cfg_validate_section(&f->c, "plugin.crud", test_schema, host_owned, &f->d);
	assert_diag(&f->d, "v.conf:10: unknown key 'collection.x.y.table' in [plugin.crud]");
	assert_diag(&f->d, "v.conf:11: unknown key 'collection..table' in [plugin.crud]");
	assert_diag(&f->d,
	            "v.conf:12: unknown key 'topics' in [plugin.crud]; did you mean 'topic'?");
	assert_diag(&f->d,
	            "v.conf:13: unknown key 'max_items2' in [plugin.crud]; "
	            "did you mean 'max_items'?");
	assert_diag(&f->d, "v.conf:1: [plugin.crud] missing required key 'db_path'");
	assert_diag(&f->d, "v.conf:1: [plugin.crud] missing required key 'smtp.host'");
	assert_diag(&f->d, "v.conf:1: [plugin.crud] missing required key 'route.*'");
	assert_int_equal(f->d.n, 7);
}

static void test_validate_types(void **state)
{
	fixture *f = *state;

	assert_int_equal(cfg_load_string(&f->c,
	                                 "[plugin.n]\ndb_path =\nmax_items = ten\nverbose = TRUE\n"
	                                 "roles = a,,b\nsmtp.host = h\nroute.x = /x\n"
	                                 "required = no\n",
	                                 "t.conf", &f->d),
	                 0);
	cfg_validate_section(&f->c, "plugin.n", test_schema, host_owned, &f->d);
	assert_diag(&f->d, "t.conf:2: [plugin.n] db_path: expected a path, got ''");
	assert_diag(&f->d, "t.conf:3: [plugin.n] max_items: expected an integer (k, M or G suffix "
	                   "allowed), got 'ten'");
	assert_diag(&f->d, "t.conf:4: [plugin.n] verbose: expected true/false, yes/no, on/off or "
	                   "1/0, got 'TRUE'");
	assert_diag(&f->d, "t.conf:5: [plugin.n] roles: expected a comma-separated list of words, "
	                   "got 'a,,b'");
	assert_int_equal(f->d.n, 4);
	cfg_free(&f->c);
	diag_free(&f->d);
	memset(&f->c, 0, sizeof f->c);
	memset(&f->d, 0, sizeof f->d);
	/* Past 64 bits: said so, not taken for a syntax error. */
	assert_int_equal(cfg_load_string(&f->c,
	                                 "[plugin.n]\nmax_items = 9999999999999999G\n"
	                                 "db_path = d\nsmtp.host = h\nroute.x = /x\n",
	                                 "u.conf", &f->d),
	                 0);
	cfg_validate_section(&f->c, "plugin.n", test_schema, host_owned, &f->d);
	assert_diag(&f->d, "u.conf:2: [plugin.n] max_items: out of range: beyond a 64-bit integer, "
	                   "got '9999999999999999G'");
	assert_int_equal(f->d.n, 1);
}

static void test_validate_missing_section(void **state)
{
	fixture *f = *state;

	assert_int_equal(cfg_load_string(&f->c, MIN_KAFKA, "/e/evhost.conf", &f->d), 0);
	cfg_validate_section(&f->c, "plugin.user", test_schema, host_owned, &f->d);
	assert_diag(&f->d, "/e/evhost.conf: [plugin.user] missing required key 'db_path'");
	assert_int_equal(f->d.n, 3);
}

static void test_key_matches(void **state)
{
	(void)state;
	assert_true(cfg_key_matches("a", "a"));
	assert_false(cfg_key_matches("a", "ab"));
	assert_false(cfg_key_matches("ab", "a"));
	assert_true(cfg_key_matches("*", "x"));
	assert_false(cfg_key_matches("*", "x.y"));
	assert_false(cfg_key_matches("*", ""));
	assert_true(cfg_key_matches("collection.*.required", "collection.users.required"));
	assert_false(cfg_key_matches("collection.*.required", "collection.required"));
	assert_false(cfg_key_matches("collection.*.required", "collection.a.b.required"));
	assert_false(cfg_key_matches("collection.*.required", "collection..required"));
	assert_false(cfg_key_matches("collection.*.required", "collection.a.required.x"));
	assert_true(cfg_key_matches("*.*", "a.b"));
	assert_false(cfg_key_matches("a.*", "a."));
	assert_false(cfg_key_matches("a*", "ab")); /* '*' only as a whole segment */
	assert_true(cfg_key_matches("a*", "a*"));
}

static void test_check_value(void **state)
{
	(void)state;
	assert_null(cfg_check_value(EVH_CFG_STRING, ""));
	assert_null(cfg_check_value(EVH_CFG_INT, "42"));
	assert_null(cfg_check_value(EVH_CFG_INT, "-3"));
	assert_null(cfg_check_value(EVH_CFG_INT, "4k"));
	assert_null(cfg_check_value(EVH_CFG_INT, "4K"));
	assert_null(cfg_check_value(EVH_CFG_INT, "1M"));
	assert_null(cfg_check_value(EVH_CFG_INT, "2G"));
	assert_non_null(cfg_check_value(EVH_CFG_INT, ""));
	assert_non_null(cfg_check_value(EVH_CFG_INT, "1m")); /* evh_config_int would read 1 */
	assert_non_null(cfg_check_value(EVH_CFG_INT, "1kb"));
	assert_non_null(cfg_check_value(EVH_CFG_INT, "0x10"));
	assert_non_null(cfg_check_value(EVH_CFG_INT, "99999999999999999999"));
	assert_non_null(cfg_check_value(EVH_CFG_INT, "9000000000000000G"));
	assert_null(cfg_check_value(EVH_CFG_BOOL, "on"));
	assert_null(cfg_check_value(EVH_CFG_BOOL, "0"));
	assert_non_null(cfg_check_value(EVH_CFG_BOOL, "Yes"));
	assert_non_null(cfg_check_value(EVH_CFG_BOOL, ""));
	assert_null(cfg_check_value(EVH_CFG_LIST, ""));
	assert_null(cfg_check_value(EVH_CFG_LIST, "a"));
	assert_null(cfg_check_value(EVH_CFG_LIST, " a , b,c "));
	assert_non_null(cfg_check_value(EVH_CFG_LIST, "a b"));
	assert_non_null(cfg_check_value(EVH_CFG_LIST, "a,"));
	assert_non_null(cfg_check_value(EVH_CFG_LIST, ",a"));
	assert_null(cfg_check_value(EVH_CFG_PATH, "x"));
	assert_non_null(cfg_check_value(EVH_CFG_PATH, ""));
	assert_non_null(cfg_check_value((evh_config_type)99, "x"));
}

/* ---------------------------------------------------------------- diag */

static void test_diag(void **state)
{
	diag d = {0};
	char buf[256] = {0};
	FILE *fp;

	(void)state;
	diag_add(&d, "a.conf", 3, "bad %s", "thing");
	diag_add(&d, "b.conf", 0, "no line");
	diag_add(&d, NULL, 7, "plain %d", 1);
	for (int i = 0; i < 20; i++)
		diag_add(&d, "c", i + 1, "n");
	assert_int_equal(d.n, 23);
	assert_string_equal(d.msgs[0], "a.conf:3: bad thing");
	assert_string_equal(d.msgs[1], "b.conf: no line");
	assert_string_equal(d.msgs[2], "plain 1");
	assert_string_equal(d.msgs[22], "c:20: n");
	fp = fmemopen(buf, sizeof buf, "w");
	d.n = 2;
	diag_print(&d, fp);
	fclose(fp);
	assert_string_equal(buf, "a.conf:3: bad thing\nb.conf: no line\n");
	d.n = 23;
	diag_free(&d);
	assert_null(d.msgs);
	assert_int_equal(d.n, 0);
}

/* ----------------------------------------------------------------- log */

/* Run log_msg with stderr redirected to a file; returns what was written. */
static char *capture_log(evh_log_level lvl, const char *comp, const char *msg)
{
	stderr_capture c = stderr_begin();
	log_msg(lvl, comp, "%s", msg);
	return stderr_end(c);
}

static void test_log_json(void **state)
{
	char *line;

	(void)state;
	log_setup(EVH_LOG_INFO, LOG_FORMAT_JSON);
	log_set_context("req-1", "trace\"2");
	line = capture_log(EVH_LOG_WARN, "user", "hi \"you\"\n\x01 \xff ok \xc3\xa9");
	/* {"ts":"2026-11-28T04:00:00.123Z",... */
	assert_int_equal(strncmp(line, "{\"ts\":\"", 7), 0);
	assert_int_equal(line[7 + 4], '-');
	assert_int_equal(line[7 + 10], 'T');
	assert_int_equal(line[7 + 19], '.');
	assert_int_equal(line[7 + 23], 'Z');
	assert_string_equal(line + 7 + 24,
	                    "\",\"level\":\"warn\",\"component\":\"user\","
	                    "\"msg\":\"hi \\\"you\\\"\\n"
	                    "\\u0001 \\ufffd ok \xc3\xa9\",\"request_id\":\"req-1\","
	                    "\"trace_id\":\"trace\\\"2\"}\n");
	free(line);

	log_set_context(NULL, NULL);
	line = capture_log(EVH_LOG_DEBUG, "user", "filtered");
	assert_string_equal(line, "");
	free(line);
	line = capture_log(EVH_LOG_ERROR, NULL, "x");
	assert_non_null(
	    strstr(line, "\"level\":\"error\",\"component\":\"host\",\"msg\":\"x\"}\n"));
	assert_null(strstr(line, "request_id"));
	free(line);
}

static void test_log_text(void **state)
{
	char *line;

	(void)state;
	log_setup(EVH_LOG_DEBUG, LOG_FORMAT_TEXT);
	log_set_context("r9", NULL);
	line = capture_log(EVH_LOG_INFO, "kafka", "two\nlines");
	assert_int_equal(line[23], 'Z');
	assert_string_equal(line + 24, " INFO  [kafka] two\\nlines (request_id=r9)\n");
	free(line);
	log_set_context(NULL, "t1");
	line = capture_log(EVH_LOG_DEBUG, "http", "m");
	assert_string_equal(line + 24, " DEBUG [http] m (trace_id=t1)\n");
	free(line);
	log_set_context(NULL, NULL);
	line = capture_log(EVH_LOG_ERROR, "http", "m");
	assert_string_equal(line + 24, " ERROR [http] m\n");
	free(line);
	log_setup(EVH_LOG_INFO, LOG_FORMAT_AUTO);
}

#define LOG_THREADS 4
#define LOG_LINES 300

static void *log_thread(void *arg)
{
	char id[16];
	int n = (int)(intptr_t)arg;

	snprintf(id, sizeof id, "t%d", n);
	log_set_context(id, NULL);
	for (int i = 0; i < LOG_LINES; i++)
		log_msg(EVH_LOG_INFO, "host", "thread %d line %d %0200d", n, i, 0);
	return NULL;
}

/* Lines from concurrent threads arrive whole, each with its own thread's context. */
static void test_log_threads(void **state)
{
	char path[] = "/tmp/evhost-test-log-XXXXXX", line[1024], want[64];
	int fd = mkstemp(path), saved = dup(STDERR_FILENO), count[LOG_THREADS] = {0};
	pthread_t th[LOG_THREADS];
	FILE *fp;

	(void)state;
	assert_true(fd >= 0 && saved >= 0);
	log_setup(EVH_LOG_INFO, LOG_FORMAT_JSON);
	dup2(fd, STDERR_FILENO);
	for (int i = 0; i < LOG_THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, log_thread, (void *)(intptr_t)i), 0);
	for (int i = 0; i < LOG_THREADS; i++)
		pthread_join(th[i], NULL);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fd);
	fp = fopen(path, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof line, fp)) {
		int n, i;
		assert_int_equal(strncmp(line, "{\"ts\":\"", 7), 0);
		assert_int_equal(sscanf(strstr(line, "\"msg\":\""), "\"msg\":\"thread %d line %d", &n,
		                        &i),
		                 2);
		assert_true(n >= 0 && n < LOG_THREADS);
		snprintf(want, sizeof want, "\"request_id\":\"t%d\"}\n", n);
		assert_string_equal(line + strlen(line) - strlen(want), want);
		count[n]++;
	}
	fclose(fp);
	unlink(path);
	for (int i = 0; i < LOG_THREADS; i++)
		assert_int_equal(count[i], LOG_LINES);
	log_setup(EVH_LOG_INFO, LOG_FORMAT_AUTO);
}

static log_budget budget_shared;

static void *budget_thread(void *arg)
{
	for (int i = 0; i < LOG_LINES; i++)
		log_msg_budget(&budget_shared, -1, i % 3 ? EVH_LOG_INFO : EVH_LOG_ERROR, "kafka",
		               "thread %d line %d", (int)(intptr_t)arg, i);
	return NULL;
}

/* A plugin's share of the log, spent by four threads at once: exactly
 * `burst` lines through, the first drop said once under the plugin's name,
 * every other one counted (errors apart) and said once the interval is over;
 * lines below the level are not counted at all. */
static void test_log_budget(void **state)
{
	pthread_t th[LOG_THREADS];
	stderr_capture c;
	char *out, *p, want[160];
	int lines = 0;

	(void)state;
	log_setup(EVH_LOG_INFO, LOG_FORMAT_TEXT);
	log_set_rate_limit(100, 3600 * 1000);
	log_budget_init(&budget_shared, "probe");
	c = stderr_begin();
	for (int i = 0; i < 50; i++) /* not shown: not counted */
		log_msg_budget(&budget_shared, -1, EVH_LOG_DEBUG, "probe", "hidden %d", i);
	for (int i = 0; i < LOG_THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, budget_thread, (void *)(intptr_t)i), 0);
	for (int i = 0; i < LOG_THREADS; i++)
		pthread_join(th[i], NULL);
	out = stderr_end(c);
	for (p = out; (p = strstr(p, "] thread ")); p++)
		lines++;
	assert_int_equal(lines, 100);
	assert_null(strstr(out, "hidden"));
	p = strstr(out, " WARN  [probe] logging too fast: more than 100 lines in 3600 s, ");
	assert_non_null(p);
	assert_null(strstr(p + 20, "logging too fast"));
	assert_int_equal(atomic_load(&budget_shared.dropped_total), LOG_THREADS * LOG_LINES - 100);
	free(out);

	/* The interval over: the sweep says the count. */
	log_set_rate_limit(100, 20);
	usleep(30 * 1000);
	c = stderr_begin();
	log_budget_sweep(&budget_shared);
	out = stderr_end(c);
	/* (which of the dropped were errors depends on the threads' order) */
	snprintf(want, sizeof want, " WARN  [probe] logging too fast: %d of its lines (",
	         LOG_THREADS * LOG_LINES - 100);
	assert_non_null(strstr(out, want));
	assert_non_null(strstr(out, " of them errors) were dropped in the last "));
	free(out);
	/* Said once: a second sweep, and the end, have nothing to say. */
	c = stderr_begin();
	log_budget_sweep(&budget_shared);
	log_msg_budget(&budget_shared, -1, EVH_LOG_INFO, "probe", "after");
	log_budget_fini(&budget_shared);
	out = stderr_end(c);
	assert_null(strstr(out, "logging too fast"));
	assert_non_null(strstr(out, " INFO  [probe] after\n"));
	free(out);

	/* Drops left unsaid are said when the limit is turned off (the sweep),
	 * and when the plugin goes (fini). */
	c = stderr_begin();
	log_set_rate_limit(1, 3600 * 1000);
	log_budget_init(&budget_shared, "probe");
	for (int i = 0; i < 3; i++)
		log_msg_budget(&budget_shared, -1, EVH_LOG_WARN, "probe", "line %d", i);
	log_set_rate_limit(0, 3600 * 1000);
	log_msg_budget(&budget_shared, -1, EVH_LOG_WARN, "probe", "unlimited");
	log_budget_sweep(&budget_shared);
	log_set_rate_limit(1, 3600 * 1000);
	for (int i = 0; i < 3; i++)
		log_msg_budget(&budget_shared, -1, EVH_LOG_ERROR, "probe", "again %d", i);
	log_budget_fini(&budget_shared);
	out = stderr_end(c);
	p = strstr(out, "logging too fast: 2 of its lines (0 of them errors) were dropped");
	assert_non_null(p);
	assert_non_null(strstr(out, "] unlimited\n"));
	assert_non_null(strstr(p, "logging too fast: 2 of its lines (2 of them errors) were dropped"));
	assert_non_null(strstr(out, "] line 0\n"));
	assert_null(strstr(out, "] line 1\n"));
	assert_null(strstr(out, "] again 2\n"));
	free(out);
	log_set_rate_limit(LOG_RATE_BURST_DEFAULT, LOG_RATE_INTERVAL_MS_DEFAULT);
	log_setup(EVH_LOG_INFO, LOG_FORMAT_AUTO);
}

static void test_log_level_parse(void **state)
{
	evh_log_level l;

	(void)state;
	assert_int_equal(log_level_parse("error", &l), 0);
	assert_int_equal(l, EVH_LOG_ERROR);
	assert_int_equal(log_level_parse("warn", &l), 0);
	assert_int_equal(l, EVH_LOG_WARN);
	assert_int_equal(log_level_parse("INFO", &l), 0);
	assert_int_equal(l, EVH_LOG_INFO);
	assert_int_equal(log_level_parse("debug", &l), 0);
	assert_int_equal(l, EVH_LOG_DEBUG);
	assert_int_equal(log_level_parse("trace", &l), -1);
	assert_int_equal(log_level_parse(NULL, &l), -1);
	/* and back: the names it takes */
	for (int i = EVH_LOG_ERROR; i <= EVH_LOG_DEBUG; i++) {
		assert_int_equal(log_level_parse(log_level_name((evh_log_level)i), &l), 0);
		assert_int_equal(l, i);
	}
}

/* The shipped default configuration must pass the checks it documents. */
static void test_shipped_config(void **state)
{
	fixture *f = *state;

	assert_int_equal(cfg_load(&f->c, EVHOST_TEST_SRCDIR "/conf.d/evhost.conf", &f->d), 0);
	f->have_settings = 1;
	assert_int_equal(settings_from_cfg(&f->c, &f->s, &f->d), 0);
	assert_no_diag(&f->d);
	assert_string_equal(f->s.state_dir, "/var/lib/evhost");
	assert_string_equal(f->s.brokers, "localhost:9092");
}

/* [tracing]: off by default; an endpoint's parts and the URL spans go to;
 * every other key with its range. */
static void test_tracing(void **state)
{
	static const struct {
		const char *value, *host, *port, *url;
	} ok[] = {
	    {"http://127.0.0.1:4318", "127.0.0.1", "4318", "http://127.0.0.1:4318/v1/traces"},
	    {"http://collector", "collector", "80", "http://collector:80/v1/traces"},
	    {"HTTP://otel.local:4318/", "otel.local", "4318", "http://otel.local:4318/v1/traces"},
	    {"http://gw:8080/otel//", "gw", "8080", "http://gw:8080/otel/v1/traces"},
	    {"http://[::1]:4318", "::1", "4318", "http://[::1]:4318/v1/traces"},
	    {"https://otel.example.com", "otel.example.com", "443",
	     "https://otel.example.com:443/v1/traces"},
	    {"HTTPS://10.0.0.7:4318/otlp", "10.0.0.7", "4318", "https://10.0.0.7:4318/otlp/v1/traces"},
	};
	static const struct {
		const char *line, *want;
	} bad[] = {
	    {"otlp_endpoint = ftp://collector:4318", "expected http://HOST[:PORT][/PATH] or https://"},
	    {"otlp_endpoint = https://", "expected http://HOST[:PORT][/PATH]"},
	    {"otlp_endpoint = collector:4318", "expected http://HOST[:PORT][/PATH]"},
	    {"otlp_endpoint = http://", "expected http://HOST[:PORT][/PATH]"},
	    {"otlp_endpoint = http://:4318", "expected http://HOST[:PORT][/PATH]"},
	    {"otlp_endpoint = http://user:pw@collector:1",
	     "a user or password in the URL is not supported, got 'http://***@collector:1'"},
	    {"otlp_endpoint = http://collector:0", "expected a port of 1-65535"},
	    {"otlp_endpoint = http://collector:99999", "expected a port of 1-65535"},
	    {"otlp_endpoint = http://collector:43x8", "expected a port of 1-65535"},
	    {"otlp_endpoint = http://[::1", "expected http://HOST[:PORT][/PATH]"},
	    {"otlp_endpoint = http://collector/v1?x=1", "without query"},
	    {"otlp_endpoint = http://collector:4318?x=1", "without query"}, /* not "a port" */
	    {"otlp_endpoint = http://collector:4318/v1/traces",
	     "expected the collector's base URL: evhostd adds /v1/traces itself"},
	    {"otlp_endpoint = http://collector/otel/v1/traces/", "adds /v1/traces itself"},
	    {"sample_ratio = 1.5", "expected a number from 0 to 1"},
	    {"sample_ratio = -0.1", "expected a number from 0 to 1"},
	    {"sample_ratio = half", "expected a number from 0 to 1"},
	    {"sample_ratio = nan", "expected a number from 0 to 1"},
	    {"queue_size = 0", "must be between 1 and 65536"},
	    {"queue_size = 100000", "must be between 1 and 65536"},
	    {"batch_size = many", "[tracing] batch_size"},
	    {"export_interval = 0ms", "expected a duration from 1ms to 1h"},
	    {"export_interval = 2h", "expected a duration from 1ms to 1h"},
	    {"export_timeout = soon", "expected a duration from 1ms to 1h"},
	    {"service_name = ", "expected a value"},
	    {"batch_size = 4096", "batch_size (4096) must not exceed queue_size (2048)"},
	    {"endpoint = http://x", "unknown key"},
	};
	fixture *f = *state;
	char text[512];

	assert_int_equal(settings_of(f, MIN_KAFKA, "evhost.conf"), 0);
	assert_null(f->s.trace_endpoint);
	assert_string_equal(f->s.trace_service, "evhost");
	assert_true(f->s.trace_sample_ratio == 1.0);
	assert_int_equal(f->s.trace_queue_size, 2048);
	assert_int_equal(f->s.trace_batch_size, 512);
	assert_int_equal(f->s.trace_interval_ms, 2000);
	assert_int_equal(f->s.trace_timeout_ms, 10000);
	for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
		cfg c = {0};
		settings s;
		diag d = {0};
		snprintf(text, sizeof text, MIN_KAFKA "[tracing]\notlp_endpoint = %s\n", ok[i].value);
		assert_int_equal(cfg_load_string(&c, text, "t.conf", &d), 0);
		if (settings_from_cfg(&c, &s, &d) != 0)
			fail_msg("%s refused: %s", ok[i].value, d.msgs[0]);
		assert_string_equal(s.trace_host, ok[i].host);
		assert_string_equal(s.trace_port, ok[i].port);
		assert_string_equal(s.trace_endpoint, ok[i].url);
		assert_int_equal(s.trace_tls, ok[i].url[4] == 's');
		settings_free(&s);
		cfg_free(&c);
		diag_free(&d);
	}
	{
		cfg c = {0};
		settings s;
		diag d = {0};
		assert_int_equal(cfg_load_string(&c,
		                                 MIN_KAFKA "[tracing]\nservice_name = shop\n"
		                                           "sample_ratio = 0.25\nqueue_size = 64\n"
		                                           "batch_size = 8\nexport_interval = 250ms\n"
		                                           "export_timeout = 3s\n",
		                                 "t.conf", &d),
		                 0);
		assert_int_equal(settings_from_cfg(&c, &s, &d), 0);
		assert_string_equal(s.trace_service, "shop");
		assert_true(s.trace_sample_ratio == 0.25);
		assert_int_equal(s.trace_queue_size, 64);
		assert_int_equal(s.trace_batch_size, 8);
		assert_int_equal(s.trace_interval_ms, 250);
		assert_int_equal(s.trace_timeout_ms, 3000);
		settings_free(&s);
		cfg_free(&c);
		diag_free(&d);
	}
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		snprintf(text, sizeof text, MIN_KAFKA "[tracing]\n%s\n", bad[i].line);
		expect_one_error(text, "t.conf", bad[i].want);
		/* at the key's file and line */
		expect_one_error(text, "t.conf", "t.conf:4");
	}
	/* A CA file for a collector reached without TLS would check nothing. */
	expect_one_error(MIN_KAFKA "[tracing]\notlp_endpoint = http://c:4318\notlp_ca_file = /x.pem\n",
	                 "t.conf",
	                 "t.conf:5: [tracing] otlp_ca_file is set but otlp_endpoint is http://");
	expect_one_error(MIN_KAFKA "[tracing]\notlp_endpoint = http://c\n"
	                           "otlp_client_certificate = /c.pem\n",
	                 "t.conf",
	                 "t.conf:5: [tracing] otlp_client_certificate is set but otlp_endpoint is "
	                 "http://");
}

/* [tracing] otlp_headers_file: "Name: value" lines, checked when the
 * configuration is read, at the key's line; a header evhostd writes itself
 * is refused. */
static void test_tracing_headers(void **state)
{
	static const struct {
		const char *file, *want;
	} bad[] = {
	    {"Authorization Bearer x\n", "line 1: expected 'Name: value'"},
	    {"# tenant\n\nX-Scope-OrgID: a\nBad Name: b\n", "line 4: expected 'Name: value'"},
	    {": value\n", "line 1: expected 'Name: value'"},
	    {"Host: elsewhere\n", "line 1: Host is set by evhostd itself"},
	    {"content-length: 5\n", "line 1: content-length is set by evhostd itself"},
	    {"X-Key: a\x01b\n", "line 1: a control character in X-Key's value"},
	    {"# nothing but a comment\n", "no header in it"},
	};
	fixture *f = *state;
	char *main_path = path_in(f, "evhost.conf"), text[512];

	write_file(f, "otlp.headers",
	           "# for the collector\r\nAuthorization:  Bearer s3cr3t \r\n\n  X-Scope-OrgID:shop\n"
	           "X-Empty:\n");
	assert_int_equal(settings_of(f,
	                             MIN_KAFKA "[tracing]\notlp_endpoint = https://c\n"
	                                       "otlp_headers_file = otlp.headers\n",
	                             main_path),
	                 0);
	assert_string_equal(f->s.trace_headers, "Authorization: Bearer s3cr3t\r\n"
	                                        "X-Scope-OrgID: shop\r\nX-Empty: \r\n");
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		char want[512];
		write_file(f, "bad.headers", bad[i].file);
		snprintf(text, sizeof text, MIN_KAFKA "[tracing]\notlp_headers_file = %s/bad.headers\n",
		         f->dir);
		snprintf(want, sizeof want, "t.conf:4: [tracing] otlp_headers_file '%s/bad.headers': %s",
		         f->dir, bad[i].want);
		expect_one_error(text, "t.conf", want);
	}
	snprintf(text, sizeof text, MIN_KAFKA "[tracing]\notlp_headers_file = %s/missing\n", f->dir);
	expect_one_error(text, "t.conf", "t.conf:4: [tracing] otlp_headers_file: cannot read");
	{
		/* Bounds: 64 headers, 16 KiB; and a NUL byte. */
		static const char *const want[] = {"more than 64 headers", "larger than 16 KiB",
		                                   "a NUL byte in it"};
		char *many = NULL, *p;
		size_t len = 0;
		FILE *m = open_memstream(&many, &len);
		assert_non_null(m);
		for (int i = 0; i < 65; i++)
			fprintf(m, "X-H%d: v\n", i);
		assert_int_equal(fclose(m), 0);
		write_file(f, "many.headers", many);
		free(many);
		assert_non_null(p = malloc(17 * 1024 + 1));
		memset(p, 'a', 17 * 1024);
		memcpy(p, "X-Big: ", 7);
		p[17 * 1024] = '\0';
		write_file(f, "big.headers", p);
		free(p);
		p = path_in(f, "nul.headers");
		m = fopen(p, "w");
		assert_non_null(m);
		assert_int_equal(fwrite("X-A: a\0b\n", 1, 10, m), 10);
		assert_int_equal(fclose(m), 0);
		free(p);
		for (size_t i = 0; i < 3; i++) {
			static const char *const name[] = {"many", "big", "nul"};
			snprintf(text, sizeof text,
			         MIN_KAFKA "[tracing]\notlp_headers_file = %s/%s.headers\n", f->dir,
			         name[i]);
			expect_one_error(text, "t.conf", want[i]);
		}
	}
	free(main_path);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_merge_order),
	    T(test_dropin_lexical_order),
	    T(test_duplicate_in_one_file),
	    T(test_confdir_from_main),
	    T(test_confdir_missing_is_fine),
	    T(test_confdir_only_in_main),
	    T(test_unreadable_main),
	    T(test_syntax_error_line),
	    T(test_syntax_errors_misc),
	    T(test_comments_and_trimming),
	    T(test_long_lines),
	    T(test_defaults),
	    T(test_state_dir_that_cannot_be_made),
	    T(test_state_dir_without_a_parent),
	    T(test_state_dir_made_at_start_is_fine),
	    T(test_all_keys_set),
	    T(test_unknown_section_and_key),
	    T(test_key_outside_section),
	    T(test_bad_values),
	    T(test_int_beyond_64_bits),
	    T(test_json_max_depth_bound),
	    T(test_request_timeout),
	    T(test_stream_unacked_timeout),
	    T(test_keep_alive_timeout),
	    T(test_auth_durations),
	    T(test_max_head_bytes),
	    T(test_source_fits_ce_source),
	    T(test_listen_forms),
	    T(test_tls_keys),
	    T(test_brokers_required),
	    T(test_brokers_of_every_form_are_taken),
	    T(test_backoff_cross_check),
	    T(test_rdkafka_passthrough),
	    T(test_rdkafka_errors),
	    T(test_jwt_secret),
	    T(test_public_secrets),
	    T(test_jwt_previous_secret),
	    T(test_admin_token),
	    T(test_jwt_secret_errors),
	    T(test_plugin_sections),
	    T(test_plugin_section_errors),
	    T(test_plugin_groups_are_their_own),
	    T(test_validate_section),
	    T(test_validate_types),
	    T(test_validate_missing_section),
	    T(test_tracing),
	    T(test_tracing_headers),
	    T(test_jwt_public_keys),
	    T(test_jwks_url),
	    cmocka_unit_test(test_key_matches),
	    cmocka_unit_test(test_check_value),
	    cmocka_unit_test(test_diag),
	    cmocka_unit_test(test_log_json),
	    cmocka_unit_test(test_log_text),
	    cmocka_unit_test(test_log_threads),
	    cmocka_unit_test(test_log_budget),
	    cmocka_unit_test(test_log_level_parse),
	    T(test_shipped_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
