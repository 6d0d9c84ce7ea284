/* metrics.c: the text exposition (format 0.0.4) line by line, label
 * escaping, histogram buckets, gauges that disappear, the per-route status
 * slots, and exact totals when many threads count and intern at once while
 * another one scrapes. */
#include <ctype.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <evhost/evhost.h>

#include "host.h"
#include "metrics.h"

static char *render(void)
{
	char *text = NULL;
	size_t len = 0;
	assert_int_equal(metrics_render(NULL, &text, &len), 0);
	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	return text;
}

/* The value of the sample whose name and labels are exactly `series`, or
 * fail the test when there is no such line. */
static double sample(const char *text, const char *series)
{
	size_t n = strlen(series);
	for (const char *line = text; line && *line; line = strchr(line, '\n')) {
		if (*line == '\n')
			line++;
		if (!strncmp(line, series, n) && line[n] == ' ')
			return strtod(line + n + 1, NULL);
	}
	fail_msg("no sample %s in:\n%s", series, text);
	return -1;
}

static int has_line_prefix(const char *text, const char *prefix)
{
	size_t n = strlen(prefix);
	for (const char *line = text; line && *line; line = strchr(line, '\n')) {
		if (*line == '\n')
			line++;
		if (!strncmp(line, prefix, n))
			return 1;
	}
	return 0;
}

static const char *name_end(const char *p)
{
	if (!isalpha((unsigned char)*p) && *p != '_' && *p != ':')
		return NULL;
	while (isalnum((unsigned char)*p) || *p == '_' || *p == ':')
		p++;
	return p;
}

/* One sample line: name, optional {label="value",...} with only \\ \" \n
 * escapes, one space, a number, end of line. Returns 0 when well-formed. */
static int check_sample(const char *p, const char *end)
{
	char *num_end;
	if (!(p = name_end(p)))
		return -1;
	if (*p == '{') {
		p++;
		while (*p != '}') {
			if (!(p = name_end(p)) || *p++ != '=' || *p++ != '"')
				return -1;
			for (; *p != '"'; p++) {
				if (p >= end)
					return -1;
				if (*p == '\\' && !strchr("\\\"n", *++p))
					return -1;
			}
			p++;
			if (*p == ',')
				p++;
			else if (*p != '}')
				return -1;
		}
		p++;
	}
	if (*p++ != ' ')
		return -1;
	strtod(p, &num_end);
	return num_end == p || num_end != end ? -1 : 0;
}

/* Problems in the exposition: a line that is not a # HELP, a # TYPE or a
 * well-formed sample, a family typed twice, a missing final newline. Plain
 * return value, no cmocka assertion: the scraper thread calls it too. */
static int exposition_errors(const char *text)
{
	char seen[64][96];
	int nseen = 0, errors = 0;
	if (!text[0] || text[strlen(text) - 1] != '\n')
		return 1;
	for (const char *line = text; *line;) {
		const char *end = strchr(line, '\n');
		char name[96];
		if (!strncmp(line, "# TYPE ", 7) && sscanf(line + 7, "%95s", name) == 1) {
			for (int i = 0; i < nseen; i++)
				errors += !strcmp(seen[i], name);
			if (nseen < 64)
				strcpy(seen[nseen++], name);
		} else if (strncmp(line, "# HELP ", 7) != 0 && check_sample(line, end) != 0) {
			print_error("malformed line: %.*s\n", (int)(end - line), line);
			errors++;
		}
		line = end + 1;
	}
	return errors;
}

static void check_exposition(const char *text) { assert_int_equal(exposition_errors(text), 0); }

static int setup(void **state)
{
	(void)state;
	metrics_reset();
	return 0;
}

static void test_http_counts_by_route_pattern(void **state)
{
	metrics_series *route = metrics_http_route("user", "/users/{id}", "GET");
	char *text, build[128];
	(void)state;
	assert_non_null(route);
	assert_ptr_equal(metrics_http_route("user", "/users/{id}", "GET"), route);
	for (int i = 0; i < 3; i++)
		metrics_http_request(route, "GET", 200, 0.002);
	metrics_http_request(route, "GET", 404, 0.001);
	metrics_http_request(NULL, "GET", 404, 0.001);
	metrics_http_request(NULL, "BREW", 405, 0.001);
	metrics_http_request(NULL, "PUT", 400, -1); /* a head civetweb refused */
	text = render();
	check_exposition(text);
	assert_true(strstr(text, "# TYPE evhost_http_requests_total counter\n") != NULL);
	assert_true(strstr(text, "# TYPE evhost_http_request_duration_seconds histogram\n") !=
	            NULL);
	assert_true(sample(text, "evhost_http_requests_total{plugin=\"user\",route=\"/users/{id}\","
	                         "method=\"GET\",status=\"200\"}") == 3);
	assert_true(sample(text, "evhost_http_requests_total{plugin=\"user\",route=\"/users/{id}\","
	                         "method=\"GET\",status=\"404\"}") == 1);
	assert_true(sample(text, "evhost_http_requests_total{plugin=\"\",route=\"unmatched\","
	                         "method=\"GET\",status=\"404\"}") == 1);
	/* An invented method is folded, not a new label value. */
	assert_true(sample(text, "evhost_http_requests_total{plugin=\"\",route=\"unmatched\","
	                         "method=\"other\",status=\"405\"}") == 1);
	assert_null(strstr(text, "BREW"));
	assert_true(sample(text, "evhost_http_request_duration_seconds_count{plugin=\"user\","
	                         "route=\"/users/{id}\",method=\"GET\"}") == 4);
	/* Counted, its unknown duration not observed (as 0 s, it was). */
	assert_true(sample(text, "evhost_http_requests_total{plugin=\"\",route=\"unmatched\","
	                         "method=\"PUT\",status=\"400\"}") == 1);
	assert_null(strstr(text, "evhost_http_request_duration_seconds_count{plugin=\"\","
	                         "route=\"unmatched\",method=\"PUT\"}"));
	snprintf(build, sizeof build, "evhost_build_info{version=\"%s\",abi=\"%d.%d\"}",
	         EVHOST_VERSION, EVH_ABI_MAJOR, EVH_ABI_MINOR);
	assert_true(sample(text, build) == 1);
	assert_true(sample(text, "process_resident_memory_bytes") > 0);
	assert_true(sample(text, "process_start_time_seconds") > 1.6e9);
	free(text);
}

/* ------------------------------------------------------ the plugins' own */

typedef struct metrics_plugin_metric pmetric;

static pmetric *declare(const char *plugin, evh_metric_type type, const char *name,
                        const char *help, const char *label)
{
	char err[256] = "";
	pmetric *m = metrics_plugin_metric(plugin, type, name, help, label, err, sizeof err);
	if (!m)
		fail_msg("%s refused: %s", name, err);
	return m;
}

/* What a refused declaration says ("" when it was taken). */
static const char *refused(const char *plugin, evh_metric_type type, const char *name,
                           const char *help, const char *label)
{
	static char err[256];
	err[0] = '\0';
	if (metrics_plugin_metric(plugin, type, name, help, label, err, sizeof err))
		return "";
	assert_true(err[0] != '\0');
	return err;
}

static void test_plugin_metrics_are_served(void **state)
{
	pmetric *sent = declare("notif", EVH_METRIC_COUNTER, "mails_total", "Mails by result.",
	                        "result");
	pmetric *queue = declare("notif", EVH_METRIC_GAUGE, "queue_depth", "Mails waiting.", NULL);
	pmetric *took = declare("notif", EVH_METRIC_HISTOGRAM, "smtp_seconds", "SMTP time.", NULL);
	pmetric *other = declare("user", EVH_METRIC_COUNTER, "mails_total", "Another help.", "result");
	char *text;
	(void)state;
	/* Declared again (a restarted plugin): the same handle, its values kept. */
	assert_ptr_equal(declare("notif", EVH_METRIC_COUNTER, "mails_total", "x", "result"), sent);
	assert_ptr_not_equal(other, sent);
	metrics_plugin_add(sent, "sent", 2);
	metrics_plugin_add(sent, "failed", 1);
	metrics_plugin_add(sent, "sent", -5); /* a counter never goes down */
	metrics_plugin_add(other, "sent", 7);
	metrics_plugin_set(sent, "sent", 100); /* not a gauge: nothing */
	metrics_plugin_observe(took, NULL, 0.003);
	metrics_plugin_observe(took, NULL, 20);
	text = render();
	check_exposition(text);
	assert_non_null(strstr(text, "# HELP mails_total Mails by result.\n"
	                             "# TYPE mails_total counter\n"));
	assert_true(sample(text, "mails_total{plugin=\"notif\",result=\"sent\"}") == 2);
	assert_true(sample(text, "mails_total{plugin=\"notif\",result=\"failed\"}") == 1);
	assert_true(sample(text, "mails_total{plugin=\"user\",result=\"sent\"}") == 7);
	/* A gauge never set has no sample. */
	assert_non_null(strstr(text, "# TYPE queue_depth gauge\n"));
	assert_false(has_line_prefix(text, "queue_depth{"));
	assert_true(sample(text, "smtp_seconds_bucket{plugin=\"notif\",le=\"0.005\"}") == 1);
	assert_true(sample(text, "smtp_seconds_bucket{plugin=\"notif\",le=\"10\"}") == 1);
	assert_true(sample(text, "smtp_seconds_bucket{plugin=\"notif\",le=\"+Inf\"}") == 2);
	assert_true(sample(text, "smtp_seconds_count{plugin=\"notif\"}") == 2);
	free(text);
	metrics_plugin_add(queue, NULL, 3);
	metrics_plugin_add(queue, NULL, -1);
	text = render();
	assert_true(sample(text, "queue_depth{plugin=\"notif\"}") == 2);
	free(text);
	metrics_plugin_set(queue, "ignored", -4);
	text = render();
	assert_true(sample(text, "queue_depth{plugin=\"notif\"}") == -4);
	free(text);
	/* NULL handles (a refused declaration) do nothing. */
	metrics_plugin_add(NULL, "x", 1);
	metrics_plugin_set(NULL, "x", 1);
	metrics_plugin_observe(NULL, "x", 1);
}

static void test_plugin_metric_declarations_are_checked(void **state)
{
	(void)state;
	assert_string_equal(refused("p", 9, "a_total", "h", NULL),
	                    "a_total: not a counter, gauge or histogram (EVH_METRIC_*)");
	for (const char *const *bad = (const char *const[]){"", "1abc", "a-b", "a b", "é",
	                                                   "a234567890123456789012345678901234567890"
	                                                   "1234567890123456789012345",
	                                                   NULL};
	     *bad; bad++)
		assert_non_null(strstr(refused("p", EVH_METRIC_COUNTER, *bad, "h", NULL),
		                       "the name must be 1 to 64 letters"));
	assert_non_null(strstr(refused("p", EVH_METRIC_COUNTER, NULL, "h", NULL), "the name must"));
	assert_string_equal(refused("p", EVH_METRIC_GAUGE, "evhost_x", "h", NULL),
	                    "evhost_x: names starting with evhost_ are the host's");
	for (const char *const *bad = (const char *const[]){"", "two\nlines", "back\\slash",
	                                                   "\xff", NULL};
	     *bad; bad++)
		assert_non_null(strstr(refused("p", EVH_METRIC_GAUGE, "g", *bad, NULL), "the help must"));
	assert_non_null(strstr(refused("p", EVH_METRIC_GAUGE, "g", NULL, NULL), "the help must"));
	for (const char *const *bad = (const char *const[]){"plugin", "le", "__x", "a:b", "", NULL};
	     *bad; bad++)
		assert_non_null(
		    strstr(refused("p", EVH_METRIC_COUNTER, "c_total", "h", *bad), "the label must"));
	/* Declared alike or not at all. */
	declare("p", EVH_METRIC_COUNTER, "c_total", "h", "kind");
	assert_string_equal(refused("q", EVH_METRIC_GAUGE, "c_total", "h", "kind"),
	                    "c_total is declared already, as a counter with the label 'kind'");
	assert_string_equal(refused("q", EVH_METRIC_COUNTER, "c_total", "h", NULL),
	                    "c_total is declared already, as a counter with the label 'kind'");
	assert_string_equal(refused("q", EVH_METRIC_COUNTER, "c_total", "h", "sort"),
	                    "c_total is declared already, as a counter with the label 'kind'");
	declare("p", EVH_METRIC_GAUGE, "g", "h", NULL);
	assert_string_equal(refused("q", EVH_METRIC_GAUGE, "g", "h", "kind"),
	                    "g is declared already, as a gauge without a label");
	/* At most METRICS_PLUGIN_FAMILIES names, all plugins together. */
	for (int i = 2; i < METRICS_PLUGIN_FAMILIES; i++) {
		char name[32];
		snprintf(name, sizeof name, "m%d", i);
		declare("p", EVH_METRIC_GAUGE, name, "h", NULL);
	}
	assert_non_null(strstr(refused("p", EVH_METRIC_GAUGE, "one_more", "h", NULL),
	                       "the plugins have declared 256 metrics"));
	/* Those declared before still are. */
	declare("r", EVH_METRIC_GAUGE, "g", "h", NULL);
}

/* Names whose series another family serves (the host's process_*, a
 * histogram's _bucket/_sum/_count) are refused, in either order and across
 * plugins: two # TYPE blocks for one name make Prometheus refuse the whole
 * scrape, the host's metrics with it. */
static void test_plugin_metric_names_do_not_collide(void **state)
{
	static const char *const host_own[] = {"process_cpu_seconds_total", "process_open_fds",
	                                       "process_x", NULL};
	char *text;
	(void)state;
	for (const char *const *name = host_own; *name; name++) {
		char want[256];
		snprintf(want, sizeof want, "%s: names starting with process_ are the host's", *name);
		assert_non_null(strstr(refused("p", EVH_METRIC_GAUGE, *name, "h", NULL), want));
	}
	/* A histogram first: its series' names are taken, by any type, any plugin. */
	declare("p", EVH_METRIC_HISTOGRAM, "m_lat_seconds", "h", NULL);
	assert_string_equal(refused("p", EVH_METRIC_COUNTER, "m_lat_seconds_count", "h", NULL),
	                    "m_lat_seconds_count: the histogram m_lat_seconds, declared already, "
	                    "serves a series of that name; choose another name");
	assert_non_null(strstr(refused("q", EVH_METRIC_GAUGE, "m_lat_seconds_sum", "h", "kind"),
	                       "the histogram m_lat_seconds, declared already"));
	assert_non_null(strstr(refused("q", EVH_METRIC_HISTOGRAM, "m_lat_seconds_bucket", "h", NULL),
	                       "the histogram m_lat_seconds, declared already"));
	/* The other way: a histogram whose series another family is named as. */
	declare("p", EVH_METRIC_COUNTER, "m_req_count", "h", NULL);
	declare("q", EVH_METRIC_HISTOGRAM, "m_io_sum", "h", NULL);
	assert_string_equal(refused("q", EVH_METRIC_HISTOGRAM, "m_req", "h", NULL),
	                    "m_req: a histogram serves m_req_count, declared already as a counter; "
	                    "choose another name");
	assert_string_equal(refused("p", EVH_METRIC_HISTOGRAM, "m_io", "h", NULL),
	                    "m_io: a histogram serves m_io_sum, declared already as a histogram; "
	                    "choose another name");
	/* Names that only look alike are not refused, nor is a declaration again. */
	declare("q", EVH_METRIC_GAUGE, "m_lat_seconds_counted", "h", NULL);
	declare("q", EVH_METRIC_GAUGE, "m_lat_count", "h", NULL);
	declare("q", EVH_METRIC_GAUGE, "_count", "h", NULL);
	declare("q", EVH_METRIC_GAUGE, "processes", "h", NULL);
	assert_non_null(declare("q", EVH_METRIC_HISTOGRAM, "m_lat_seconds", "h", NULL));
	text = render();
	check_exposition(text);
	assert_null(strstr(text, "# TYPE m_lat_seconds_count "));
	assert_null(strstr(text, "# TYPE m_req "));
	assert_null(strstr(text, "# TYPE process_x "));
	free(text);
}

/* A label's values: each a series, up to METRICS_PLUGIN_SERIES a plugin's
 * metric; past that, and for a value that is none, updates are dropped and
 * counted. */
static void test_plugin_metric_label_values_are_bounded(void **state)
{
	pmetric *m = declare("p", EVH_METRIC_COUNTER, "by_kind_total", "h", "kind");
	pmetric *o = declare("o", EVH_METRIC_COUNTER, "by_kind_total", "h", "kind");
	char *text, value[32];
	(void)state;
	for (int i = 0; i < METRICS_PLUGIN_SERIES + 10; i++) {
		snprintf(value, sizeof value, "k%d", i);
		metrics_plugin_add(m, value, 1);
	}
	metrics_plugin_add(m, "k0", 1); /* one it has: counted */
	metrics_plugin_add(m, NULL, 1);
	metrics_plugin_add(m, "", 1);
	metrics_plugin_add(m, "\xc3(", 1);
	metrics_plugin_add(o, "k0", 1); /* another plugin's are its own */
	text = render();
	check_exposition(text);
	assert_true(sample(text, "by_kind_total{plugin=\"p\",kind=\"k0\"}") == 2);
	assert_true(sample(text, "by_kind_total{plugin=\"p\",kind=\"k99\"}") == 1);
	assert_false(has_line_prefix(text, "by_kind_total{plugin=\"p\",kind=\"k100\"}"));
	assert_true(sample(text, "by_kind_total{plugin=\"o\",kind=\"k0\"}") == 1);
	assert_true(sample(text, "evhost_metrics_series_dropped_total") == 13);
	free(text);
}

/* A plugin stopped for good leaves /metrics; declared again (enabled
 * again), its series are back with their values. Another plugin's stay. */
static void test_a_retired_plugins_series_leave(void **state)
{
	pmetric *a = declare("a", EVH_METRIC_COUNTER, "shared_total", "h", NULL);
	pmetric *b = declare("b", EVH_METRIC_COUNTER, "shared_total", "h", NULL);
	char *text;
	(void)state;
	metrics_plugin_add(a, NULL, 2);
	metrics_plugin_add(b, NULL, 5);
	metrics_plugin_retire("a");
	text = render();
	check_exposition(text);
	assert_false(has_line_prefix(text, "shared_total{plugin=\"a\"}"));
	assert_true(sample(text, "shared_total{plugin=\"b\"}") == 5);
	free(text);
	assert_ptr_equal(declare("a", EVH_METRIC_COUNTER, "shared_total", "h", NULL), a);
	metrics_plugin_add(a, NULL, 1);
	text = render();
	assert_true(sample(text, "shared_total{plugin=\"a\"}") == 3);
	free(text);
}

/* The plugins' series together stop at METRICS_PLUGIN_SERIES_ALL: the
 * host's own still find room. */
static void test_plugin_series_leave_the_host_its_room(void **state)
{
	enum { METRICS = METRICS_PLUGIN_SERIES_ALL / METRICS_PLUGIN_SERIES + 1 };
	char *text, name[32], value[32];
	size_t lines = 0;
	(void)state;
	for (int i = 0; i < METRICS; i++) {
		pmetric *m;
		snprintf(name, sizeof name, "many_%d_total", i);
		m = declare("p", EVH_METRIC_COUNTER, name, "h", "k");
		for (int j = 0; j < METRICS_PLUGIN_SERIES; j++) {
			snprintf(value, sizeof value, "v%d", j);
			metrics_plugin_add(m, value, 1);
		}
	}
	assert_non_null(metrics_http_route("p", "/still", "GET"));
	text = render();
	check_exposition(text);
	for (const char *l = text; (l = strstr(l, "\nmany_")); l++)
		lines++;
	assert_int_equal(lines, METRICS_PLUGIN_SERIES_ALL);
	assert_true(sample(text, "evhost_metrics_series_dropped_total") ==
	            METRICS * METRICS_PLUGIN_SERIES - METRICS_PLUGIN_SERIES_ALL);
	free(text);
}

static void test_label_values_are_escaped(void **state)
{
	char *text;
	(void)state;
	metrics_dlq_message("back\\slash", "quo\"te\nnewline");
	text = render();
	check_exposition(text);
	assert_true(sample(text, "evhost_dlq_messages_total{plugin=\"back\\\\slash\","
	                         "topic=\"quo\\\"te\\nnewline\"}") == 1);
	free(text);
}

static void test_histogram_buckets_are_cumulative(void **state)
{
	static const char *const le[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
	                                 "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
	                                 "1",      "2.5",   "5",      "10",    "+Inf"};
	/* 0.005 sits exactly on a bound: le means "less than or equal". */
	static const double obs[] = {0.0001, 0.003, 0.005, 0.2, 20};
	static const double want[] = {1, 1, 1, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 5};
	char *text, key[256];
	double prev = 0;
	(void)state;
	for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
		metrics_event_handler_time("p", "t", obs[i]);
	text = render();
	check_exposition(text);
	for (size_t i = 0; i < sizeof le / sizeof le[0]; i++) {
		double v;
		snprintf(key, sizeof key,
		         "evhost_event_handler_duration_seconds_bucket{plugin=\"p\",topic=\"t\","
		         "le=\"%s\"}",
		         le[i]);
		v = sample(text, key);
		assert_true(v >= prev);
		if (v != want[i])
			fail_msg("bucket le=%s: %g, expected %g", le[i], v, want[i]);
		prev = v;
	}
	assert_true(sample(text, "evhost_event_handler_duration_seconds_count{plugin=\"p\","
	                         "topic=\"t\"}") == 5);
	assert_float_equal(sample(text, "evhost_event_handler_duration_seconds_sum{plugin=\"p\","
	                                "topic=\"t\"}"),
	                   20.2081, 1e-6);
	free(text);
}

/* Topics a plugin publishes to are its own choice: past
 * METRICS_PUBLISHED_TOPICS of one plugin, its events are counted under
 * topic="other" (each topic a series took the registry's room, the host's
 * own series then dropped); another plugin's are its own count. */
static void test_a_plugins_published_topics_are_bounded(void **state)
{
	char topic[32], *text;
	(void)state;
	for (int i = 0; i < METRICS_PUBLISHED_TOPICS + 10; i++) {
		snprintf(topic, sizeof topic, "tenant-%d", i);
		metrics_count(metrics_published("many", topic));
	}
	metrics_count(metrics_published("many", "tenant-0")); /* one it has */
	metrics_count(metrics_published("few", "tenant-99"));
	text = render();
	check_exposition(text);
	assert_true(sample(text, "evhost_events_published_total{plugin=\"many\","
	                         "topic=\"tenant-0\"}") == 2);
	snprintf(topic, sizeof topic, "\"tenant-%d\"", METRICS_PUBLISHED_TOPICS - 1);
	assert_non_null(strstr(text, topic));
	snprintf(topic, sizeof topic, "\"tenant-%d\"", METRICS_PUBLISHED_TOPICS);
	assert_null(strstr(text, topic));
	assert_true(sample(text, "evhost_events_published_total{plugin=\"many\","
	                         "topic=\"other\"}") == 10);
	assert_true(sample(text, "evhost_events_published_total{plugin=\"few\","
	                         "topic=\"tenant-99\"}") == 1);
	free(text);
}

static void test_events_counters_and_results(void **state)
{
	metrics_series *pub = metrics_published("user", "USER_CREATED");
	char *text;
	(void)state;
	metrics_count(pub);
	metrics_count(pub);
	metrics_count(NULL); /* a series that could not be made: nothing */
	metrics_event_handled("n", "USER_CREATED", METRICS_EVENT_OK);
	metrics_event_handled("n", "USER_CREATED", METRICS_EVENT_DUPLICATE);
	metrics_event_handled("n", "USER_CREATED", METRICS_EVENT_RETRY);
	metrics_event_handled("n", "USER_CREATED", METRICS_EVENT_RETRY);
	metrics_event_handled("n", "USER_CREATED", METRICS_EVENT_DLQ);
	metrics_event_handled("n", "USER_CREATED", (metrics_event_result)99);
	text = render();
	check_exposition(text);
	assert_true(sample(text, "evhost_events_published_total{plugin=\"user\","
	                         "topic=\"USER_CREATED\"}") == 2);
	assert_true(sample(text, "evhost_events_handled_total{plugin=\"n\",topic=\"USER_CREATED\","
	                         "result=\"ok\"}") == 1);
	assert_true(sample(text, "evhost_events_handled_total{plugin=\"n\",topic=\"USER_CREATED\","
	                         "result=\"duplicate\"}") == 1);
	assert_true(sample(text, "evhost_events_handled_total{plugin=\"n\",topic=\"USER_CREATED\","
	                         "result=\"retry\"}") == 2);
	assert_true(sample(text, "evhost_events_handled_total{plugin=\"n\",topic=\"USER_CREATED\","
	                         "result=\"dlq\"}") == 1);
	assert_false(has_line_prefix(text, "evhost_events_handled_total{plugin=\"n\",topic=\"USER_"
	                                   "CREATED\",result=\"reject\"}"));
	free(text);
}

static void test_lag_gauge_disappears_when_cleared(void **state)
{
	const char *key = "evhost_consumer_lag{plugin=\"n\",topic=\"t\",partition=\"3\"}";
	char *text;
	(void)state;
	metrics_consumer_lag_set("n", "t", 3, 42);
	text = render();
	assert_true(sample(text, key) == 42);
	free(text);
	metrics_consumer_lag_clear("n", "t", 3);
	text = render();
	assert_false(has_line_prefix(text, key));
	assert_true(strstr(text, "# TYPE evhost_consumer_lag gauge\n") != NULL);
	free(text);
	metrics_consumer_lag_set("n", "t", 3, -5); /* never negative */
	text = render();
	assert_true(sample(text, key) == 0);
	free(text);
}

static void test_failed_plugin_is_down(void **state)
{
	char *text;
	(void)state;
	metrics_plugin_failed("mailer");
	text = render();
	check_exposition(text);
	assert_true(sample(text, "evhost_plugin_up{plugin=\"mailer\"}") == 0);
	free(text);
}

/* A plugin that failed to start, then left out of a reload's configuration
 * (disabled, or its section removed): its plugin_up 0 leaves, while one the
 * configuration still enables (or left out for its values, required =
 * false) keeps it. EvhostPluginDown fired until a restart. */
static void test_failed_plugin_disabled_by_a_reload_leaves(void **state)
{
	evh_plugin kept = {.name = "kept"};
	evh_plugin *opened[] = {&kept};
	char *unchecked[] = {"refused"};
	host next = {.plugins = opened, .nplugins = 1, .unchecked = unchecked, .nunchecked = 1};
	char *text;
	(void)state;
	metrics_plugin_failed("mailer");
	metrics_plugin_failed("kept");
	metrics_plugin_failed("refused");
	metrics_plugins_configured(&next);
	text = render();
	check_exposition(text);
	assert_false(has_line_prefix(text, "evhost_plugin_up{plugin=\"mailer\"}"));
	assert_true(sample(text, "evhost_plugin_up{plugin=\"kept\"}") == 0);
	assert_true(sample(text, "evhost_plugin_up{plugin=\"refused\"}") == 0);
	free(text);
	/* Enabled again by a later reload, and failing again: down again. */
	metrics_plugin_failed("mailer");
	text = render();
	assert_true(sample(text, "evhost_plugin_up{plugin=\"mailer\"}") == 0);
	free(text);
}

/* A consumer's topics: their dead-letter and handled series are there at 0
 * before the first count, so that Prometheus sees that one (a series first
 * seen at 1 reads as 0 to increase()); counting goes on from there. */
static void test_plugin_topics_are_there_at_zero(void **state)
{
	static const char *const results[] = {"ok", "duplicate", "retry", "reject", "dlq"};
	const char *topics[] = {"USER_CREATED", "ORDERS"};
	char key[160], *text;
	(void)state;
	metrics_plugin_topics("n", topics, 2);
	metrics_plugin_topics("n", topics, 2); /* again (every scrape): the same series */
	text = render();
	check_exposition(text);
	for (int t = 0; t < 2; t++) {
		snprintf(key, sizeof key, "evhost_dlq_messages_total{plugin=\"n\",topic=\"%s\"}",
		         topics[t]);
		assert_true(sample(text, key) == 0);
		for (size_t r = 0; r < sizeof results / sizeof results[0]; r++) {
			snprintf(key, sizeof key,
			         "evhost_events_handled_total{plugin=\"n\",topic=\"%s\",result=\"%s\"}",
			         topics[t], results[r]);
			assert_true(sample(text, key) == 0);
		}
	}
	free(text);
	metrics_dlq_message("n", "ORDERS");
	metrics_event_handled("n", "ORDERS", METRICS_EVENT_REJECT);
	text = render();
	assert_true(sample(text, "evhost_dlq_messages_total{plugin=\"n\",topic=\"ORDERS\"}") == 1);
	assert_true(sample(text, "evhost_events_handled_total{plugin=\"n\",topic=\"ORDERS\","
	                         "result=\"reject\"}") == 1);
	free(text);
}

/* What the bundled plugins do at init: evh_metric_add(m, value, 0) makes a
 * counter's series, at 0. */
static void test_plugin_counter_added_zero_is_there(void **state)
{
	pmetric *mails = declare("notif", EVH_METRIC_COUNTER, "mails_total", "Mails.", "result");
	char *text;
	(void)state;
	metrics_plugin_add(mails, "refused", 0);
	text = render();
	check_exposition(text);
	assert_true(sample(text, "mails_total{plugin=\"notif\",result=\"refused\"}") == 0);
	free(text);
}

/* Every reason from the start, each counted apart; out-of-range reasons
 * are ignored; sign-outs by result; a reset forgets them (tests). Without
 * a host there are no signed-out subjects to report. */
static void test_auth_refusals_and_sign_outs(void **state)
{
	char *text;
	(void)state;
	text = render();
	check_exposition(text);
	assert_true(sample(text, "evhost_auth_refusals_total{reason=\"missing\"}") == 0);
	assert_true(sample(text, "evhost_auth_refusals_total{reason=\"role\"}") == 0);
	free(text);
	metrics_auth_refused(METRICS_AUTH_REVOKED);
	metrics_auth_refused(METRICS_AUTH_REVOKED);
	metrics_auth_refused(METRICS_AUTH_SIGNATURE);
	metrics_auth_refused(METRICS_AUTH_NREASONS); /* not a reason */
	metrics_sign_out(1);
	metrics_sign_out(0);
	metrics_sign_out(1);
	text = render();
	check_exposition(text);
	assert_true(sample(text, "evhost_auth_refusals_total{reason=\"revoked\"}") == 2);
	assert_true(sample(text, "evhost_auth_refusals_total{reason=\"signature\"}") == 1);
	assert_true(sample(text, "evhost_auth_refusals_total{reason=\"expired\"}") == 0);
	assert_true(sample(text, "evhost_auth_sign_outs_total{result=\"saved\"}") == 2);
	assert_true(sample(text, "evhost_auth_sign_outs_total{result=\"failed\"}") == 1);
	assert_null(strstr(text, "evhost_auth_signed_out_subjects"));
	free(text);
	metrics_reset();
	text = render();
	assert_true(sample(text, "evhost_auth_refusals_total{reason=\"revoked\"}") == 0);
	assert_true(sample(text, "evhost_auth_sign_outs_total{result=\"saved\"}") == 0);
	free(text);
}

#define ADMIN_REFUSALS(reason) "evhost_admin_refusals_total{reason=\"" reason "\"}"

/* A scrape's admin refusals are these, each reason's line there. */
static void assert_admin_refusals(const char *text, int missing, int malformed, int wrong)
{
	check_exposition(text);
	assert_float_equal(sample(text, ADMIN_REFUSALS("missing")), missing, 0);
	assert_float_equal(sample(text, ADMIN_REFUSALS("malformed")), malformed, 0);
	assert_float_equal(sample(text, ADMIN_REFUSALS("wrong")), wrong, 0);
}

/* The admin API's refusals: every reason from the start, also with no host
 * (and so no admin API) to render for; each counted apart, and not as the
 * plugin routes' refusals; out-of-range reasons ignored; a reset forgets
 * them. */
static void test_admin_refusals(void **state)
{
	char *text;
	(void)state;
	text = render();
	assert_non_null(strstr(text, "\n# TYPE evhost_admin_refusals_total counter\n"));
	assert_admin_refusals(text, 0, 0, 0);
	free(text);
	for (int i = 0; i < 3; i++)
		metrics_admin_refused(METRICS_ADMIN_WRONG);
	metrics_admin_refused(METRICS_ADMIN_MISSING);
	metrics_admin_refused(METRICS_ADMIN_NREASONS); /* not a reason */
	metrics_admin_refused((metrics_admin_reason)-1);
	text = render();
	assert_admin_refusals(text, 1, 0, 3);
	assert_true(sample(text, "evhost_auth_refusals_total{reason=\"missing\"}") == 0);
	free(text);
	metrics_admin_refused(METRICS_ADMIN_MALFORMED);
	metrics_reset();
	text = render();
	assert_admin_refusals(text, 0, 0, 0);
	free(text);
}

#define X_STATUS(code) \
	"evhost_http_requests_total{plugin=\"p\",route=\"/x\",method=\"GET\",status=\"" code "\"}"

/* Past 15 statuses of a route, the others count by class: a 5xx still
 * matches status=~"5..", which an "other" did not. */
static void test_status_slots_overflow_to_their_class(void **state)
{
	metrics_series *r = metrics_http_route("p", "/x", "GET");
	char *text;
	(void)state;
	for (int s = 200; s < 220; s++) /* 20 statuses, 15 slots */
		metrics_http_request(r, "GET", s, 0.001);
	metrics_http_request(r, "GET", 500, 0.001);
	metrics_http_request(r, "GET", 503, 0.001);
	metrics_http_request(r, "GET", 503, 0.001);
	metrics_http_request(r, "GET", 404, 0.001);
	metrics_http_request(r, "GET", 214, 0.001); /* has its own slot */
	metrics_http_request(r, "GET", 0, 0.001);   /* no status: not a class */
	text = render();
	check_exposition(text);
	assert_true(sample(text, X_STATUS("214")) == 2);
	assert_null(strstr(text, X_STATUS("215") " "));
	assert_true(sample(text, X_STATUS("2xx")) == 5);
	assert_true(sample(text, X_STATUS("5xx")) == 3);
	assert_true(sample(text, X_STATUS("4xx")) == 1);
	assert_true(sample(text, X_STATUS("other")) == 1);
	assert_null(strstr(text, X_STATUS("1xx") " "));
	assert_null(strstr(text, X_STATUS("3xx") " "));
	assert_null(strstr(text, X_STATUS("500") " "));
	assert_true(sample(text, "evhost_http_request_duration_seconds_count{plugin=\"p\","
	                         "route=\"/x\",method=\"GET\"}") == 26);
	free(text);
}

/* ---- concurrency ---- */

#define THREADS 8
#define ROUNDS 20000
#define TOPICS 50

static metrics_series *shared_route;
static atomic_int scraping, scrape_errors;

static void *hammer(void *arg)
{
	int id = (int)(intptr_t)arg;
	char topic[32], name[32], err[256];
	/* Plugins' metrics declared while others count and scrape: one shared
	 * (each thread races to declare it), one of each thread's own. */
	struct metrics_plugin_metric *own = metrics_plugin_metric(
	    "p", EVH_METRIC_COUNTER, "own_total", "Shared.", "kind", err, sizeof err);
	struct metrics_plugin_metric *mine;
	snprintf(name, sizeof name, "own_%d", id);
	mine = metrics_plugin_metric("p", EVH_METRIC_GAUGE, name, "Its own.", NULL, err, sizeof err);
	metrics_plugin_set(mine, NULL, id);
	for (int i = 0; i < ROUNDS; i++) {
		/* Every thread interns the same 50 series, racing to create them. */
		snprintf(topic, sizeof topic, "topic-%d", (i + id) % TOPICS);
		metrics_event_handled("p", topic, METRICS_EVENT_OK);
		metrics_http_request(shared_route, "GET", i % 2 ? 200 : 201, 0.001);
		metrics_event_handler_time("p", "h", 0.002);
		snprintf(topic, sizeof topic, "k%d", i % 10);
		metrics_plugin_add(own, topic, 1);
	}
	return NULL;
}

static void *scraper(void *arg)
{
	(void)arg;
	while (atomic_load(&scraping)) {
		char *text = NULL;
		size_t len;
		if (metrics_render(NULL, &text, &len) != 0 || exposition_errors(text))
			atomic_fetch_add(&scrape_errors, 1);
		free(text);
	}
	return NULL;
}

static void test_concurrent_updates_are_exact(void **state)
{
	pthread_t t[THREADS], s;
	char *text, key[256];
	double sum = 0;
	(void)state;
	shared_route = metrics_http_route("p", "/shared", "GET");
	atomic_store(&scraping, 1);
	assert_int_equal(pthread_create(&s, NULL, scraper, NULL), 0);
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, hammer, (void *)(intptr_t)i), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	atomic_store(&scraping, 0);
	pthread_join(s, NULL);
	assert_int_equal(atomic_load(&scrape_errors), 0);
	text = render();
	check_exposition(text);
	for (int i = 0; i < TOPICS; i++) {
		snprintf(key, sizeof key,
		         "evhost_events_handled_total{plugin=\"p\",topic=\"topic-%d\","
		         "result=\"ok\"}",
		         i);
		sum += sample(text, key);
		assert_true(sample(text, key) == THREADS * ROUNDS / TOPICS);
	}
	assert_true(sum == THREADS * ROUNDS);
	assert_true(sample(text, "evhost_http_requests_total{plugin=\"p\",route=\"/shared\","
	                         "method=\"GET\",status=\"200\"}") == THREADS * ROUNDS / 2);
	assert_true(sample(text, "evhost_http_requests_total{plugin=\"p\",route=\"/shared\","
	                         "method=\"GET\",status=\"201\"}") == THREADS * ROUNDS / 2);
	assert_true(sample(text, "evhost_event_handler_duration_seconds_count{plugin=\"p\","
	                         "topic=\"h\"}") == THREADS * ROUNDS);
	assert_float_equal(sample(text, "evhost_event_handler_duration_seconds_sum{plugin=\"p\","
	                                "topic=\"h\"}"),
	                   THREADS * ROUNDS * 0.002, 1e-6);
	assert_true(sample(text, "evhost_metrics_series_dropped_total") == 0);
	for (int i = 0; i < 10; i++) {
		snprintf(key, sizeof key, "own_total{plugin=\"p\",kind=\"k%d\"}", i);
		assert_true(sample(text, key) == THREADS * ROUNDS / 10);
	}
	for (int i = 0; i < THREADS; i++) {
		snprintf(key, sizeof key, "own_%d{plugin=\"p\"}", i);
		assert_true(sample(text, key) == i);
	}
	free(text);
}

/* Threads that meet a label value for the first time together make one
 * series of it and count it once: each of a metric's METRICS_PLUGIN_SERIES
 * values, met by every thread at once, is a series with every update, none
 * dropped. (Counted once per racing thread, the values near the end were
 * dropped as over the bound.) */
#define RACERS 8
#define RACED_METRICS 4

static pthread_barrier_t racers_ready;
static pmetric *raced[RACED_METRICS];

/* RACERS threads running fn, which waits on racers_ready to go together. */
static void race(void *(*fn)(void *))
{
	pthread_t t[RACERS];
	assert_int_equal(pthread_barrier_init(&racers_ready, NULL, RACERS), 0);
	for (int i = 0; i < RACERS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, fn, NULL), 0);
	for (int i = 0; i < RACERS; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&racers_ready);
}

static void *racer(void *arg)
{
	char value[32];
	(void)arg;
	for (int k = 0; k < RACED_METRICS; k++) {
		for (int i = 0; i < METRICS_PLUGIN_SERIES; i++) {
			snprintf(value, sizeof value, "v%d", i);
			pthread_barrier_wait(&racers_ready);
			metrics_plugin_add(raced[k], value, 1);
		}
	}
	return NULL;
}

static void test_plugin_label_values_met_at_once_count_once(void **state)
{
	char name[32], key[128], *text;
	(void)state;
	for (int k = 0; k < RACED_METRICS; k++) {
		snprintf(name, sizeof name, "raced_%d_total", k);
		raced[k] = declare("p", EVH_METRIC_COUNTER, name, "h", "kind");
	}
	race(racer);
	text = render();
	check_exposition(text);
	assert_true(sample(text, "evhost_metrics_series_dropped_total") == 0);
	for (int k = 0; k < RACED_METRICS; k++) {
		for (int i = 0; i < METRICS_PLUGIN_SERIES; i++) {
			snprintf(key, sizeof key, "raced_%d_total{plugin=\"p\",kind=\"v%d\"}", k, i);
			assert_true(sample(text, key) == RACERS);
		}
	}
	free(text);
}

/* At the host's bound of series (METRICS_MAX_SERIES), threads making the
 * last one together: one series, every update counted, none dropped (each
 * thread reserved room for it, so all but one found none). */
static void *last_racer(void *arg)
{
	(void)arg;
	pthread_barrier_wait(&racers_ready);
	metrics_event_handled("p", "the-last", METRICS_EVENT_OK);
	return NULL;
}

/* Rounds of it: the plain build fails in one of about 12 without the lock;
 * the sanitizers' builds, ten times slower, try fewer. */
#ifdef EVHOST_TEST_SANITIZED
#define LAST_ROUNDS 10
#else
#define LAST_ROUNDS 50
#endif

static void test_the_last_series_made_at_once_counts_every_update(void **state)
{
	char topic[32], *text;
	double counted;
	(void)state;
	for (int round = 0; round < LAST_ROUNDS; round++) {
		metrics_reset();
		/* one short of the bound */
		for (int i = 0; i < METRICS_MAX_SERIES - 1; i++) {
			snprintf(topic, sizeof topic, "t%d", i);
			metrics_event_handled("p", topic, METRICS_EVENT_OK);
		}
		race(last_racer);
		text = render();
		counted = sample(text, "evhost_events_handled_total{plugin=\"p\",topic=\"the-last\","
		                       "result=\"ok\"}");
		free(text);
		if (counted != RACERS)
			fail_msg("round %d: %g of %d updates counted", round, counted, RACERS);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_http_counts_by_route_pattern, setup),
	    cmocka_unit_test_setup(test_label_values_are_escaped, setup),
	    cmocka_unit_test_setup(test_histogram_buckets_are_cumulative, setup),
	    cmocka_unit_test_setup(test_events_counters_and_results, setup),
	    cmocka_unit_test_setup(test_a_plugins_published_topics_are_bounded, setup),
	    cmocka_unit_test_setup(test_lag_gauge_disappears_when_cleared, setup),
	    cmocka_unit_test_setup(test_failed_plugin_is_down, setup),
	    cmocka_unit_test_setup(test_failed_plugin_disabled_by_a_reload_leaves, setup),
	    cmocka_unit_test_setup(test_plugin_topics_are_there_at_zero, setup),
	    cmocka_unit_test_setup(test_plugin_counter_added_zero_is_there, setup),
	    cmocka_unit_test_setup(test_auth_refusals_and_sign_outs, setup),
	    cmocka_unit_test_setup(test_admin_refusals, setup),
	    cmocka_unit_test_setup(test_status_slots_overflow_to_their_class, setup),
	    cmocka_unit_test_setup(test_concurrent_updates_are_exact, setup),
	    cmocka_unit_test_setup(test_plugin_metrics_are_served, setup),
	    cmocka_unit_test_setup(test_plugin_metric_declarations_are_checked, setup),
	    cmocka_unit_test_setup(test_plugin_metric_names_do_not_collide, setup),
	    cmocka_unit_test_setup(test_plugin_metric_label_values_are_bounded, setup),
	    cmocka_unit_test_setup(test_plugin_label_values_met_at_once_count_once, setup),
	    cmocka_unit_test_setup(test_the_last_series_made_at_once_counts_every_update, setup),
	    cmocka_unit_test_setup(test_plugin_series_leave_the_host_its_room, setup),
	    cmocka_unit_test_setup(test_a_retired_plugins_series_leave, setup),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	metrics_reset();
	return rc;
}
