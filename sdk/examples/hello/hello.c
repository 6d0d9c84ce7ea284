/* hello: the smallest useful evhost plugin.
 *
 * GET /hello            -> {"hello":"world","greeted":N}
 * GET /hello/{name}     -> {"hello":"<name>","greeted":N}
 * consumes `topic` (default "hello.events") and counts what it sees in its
 * own SQLite table; publishes a "hello.greeted" event for every greeting.
 * Its check (ABI 1.7) refuses a topic or greeting_topic that is not a
 * Kafka topic name, at the line that set it, before anything starts.
 * Counts its greetings on the host's /metrics (ABI 1.9):
 * hello_greetings_total{plugin="hello"}.
 *
 * Build outside the evhost tree with only the installed SDK:
 *   cc -shared -fPIC -Wl,--no-undefined hello.c $(pkg-config --cflags evhost-sdk) -o hello.so
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <evhost/evhost.h>

static const evh_config_key hello_config[] = {
    {"topic", EVH_CFG_STRING, "hello.events", 0, "topic to consume"},
    {"greeting_topic", EVH_CFG_STRING, "hello.greeted", 0, "topic greetings are published to"},
    {NULL, 0, NULL, 0, NULL},
};

static const evh_migration hello_migrations[] = {
    {1, "CREATE TABLE greetings(name TEXT PRIMARY KEY, count INTEGER NOT NULL);"
        "CREATE TABLE seen(event_id TEXT PRIMARY KEY, type TEXT, data TEXT);"},
};

typedef struct hello {
	evh_plugin *p;
	const char *greeting_topic;
	evh_metric *greetings; /* NULL when the host refused it: the calls do nothing */
} hello;

/* Kafka's topic names: 1 to 249 of [A-Za-z0-9._-], other than "." and "..". */
static int topic_name_ok(const char *t)
{
	size_t n = t ? strspn(t, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
	             : 0;

	return n > 0 && n <= 249 && t[n] == '\0' && strcmp(t, ".") && strcmp(t, "..");
}

/* The descriptor's check (ABI 1.7): every value init relies on, each problem
 * said at its key, so `evhostd --check-config` (and a start or a reload)
 * reports it at the file:line that set it. Pure: reads values, keeps
 * nothing. init calls it too: a host that never ran it (a fake one in unit
 * tests) must not start with bad values either. */
static int hello_check(evh_plugin *p)
{
	static const char *const topic_keys[] = {"topic", "greeting_topic"};
	int rc = EVH_OK;

	for (size_t i = 0; i < sizeof topic_keys / sizeof topic_keys[0]; i++) {
		const char *t = evh_config_str(p, topic_keys[i]);

		if (!topic_name_ok(t)) {
			evh_config_error(p, topic_keys[i],
			                 "'%s' is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -,"
			                 " not . or ..)",
			                 t ? t : "");
			rc = EVH_EINVAL;
		}
	}
	return rc;
}

/* The length of the well-formed UTF-8 character at s (RFC 3629: no overlong
 * form, no surrogate, nothing past U+10FFFF), or 0. */
static size_t utf8_char(const unsigned char *s)
{
	unsigned c = s[0], lo = 0x80, hi = 0xbf; /* the range of the second byte */
	size_t n = c < 0x80 ? 1 : c < 0xc2 ? 0 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : c < 0xf5 ? 4 : 0;

	if (c == 0xe0)
		lo = 0xa0;
	else if (c == 0xed)
		hi = 0x9f;
	else if (c == 0xf0)
		lo = 0x90;
	else if (c == 0xf4)
		hi = 0x8f;
	for (size_t i = 1; i < n; i++, lo = 0x80, hi = 0xbf)
		if (s[i] < lo || s[i] > hi) /* the string's NUL ends a cut one here too */
			return 0;
	return n;
}

/* Put a name in a JSON string as it is: keep it simple by refusing what
 * would need escaping. And what is not UTF-8 (a client's %FF is decoded
 * into the capture): JSON must be UTF-8, so evh_publish refuses such data
 * with EVH_EINVAL, which returned from the handler is a 500 of ours, not
 * the 422 the client's mistake is. */
static int plain(const char *s)
{
	size_t n;

	for (; *s; s += n)
		if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20 ||
		    !(n = utf8_char((const unsigned char *)s)))
			return 0;
	return 1;
}

static int greet(evh_request *req, evh_response *resp, void *ud)
{
	hello *h = ud;
	const char *name = evh_req_param(req, "name");
	char json[512];
	evh_tx *tx;
	evh_rows *rows;
	int64_t count = 0;
	int rc;

	if (!name)
		name = "world";
	if (!plain(name) || strlen(name) > 100)
		return evh_resp_problem(resp, 422, "validation", "Invalid name",
		                        "name must be UTF-8 of at most 100 bytes, without quotes,"
		                        " backslashes or control characters",
		                        "name");
	if ((rc = evh_tx_begin(h->p, &tx)) != EVH_OK)
		return rc;
	evh_value args[] = {EVH_TEXT(name)};
	rc = evh_exec(tx,
	              "INSERT INTO greetings(name, count) VALUES(?, 1) "
	              "ON CONFLICT(name) DO UPDATE SET count = count + 1",
	              args, 1, NULL);
	if (rc == EVH_OK)
		rc = evh_query(tx, "SELECT count FROM greetings WHERE name = ?", args, 1, &rows);
	if (rc == EVH_OK) {
		if (evh_rows_next(rows) == 1)
			count = evh_rows_int(rows, 0);
		evh_rows_close(rows);
	}
	snprintf(json, sizeof json, "{\"hello\":\"%s\",\"greeted\":%lld}", name, (long long)count);
	if (rc == EVH_OK)
		rc = evh_publish(h->p, tx, h->greeting_topic, name, "hello.greeted", json,
		                 strlen(json));
	if (rc != EVH_OK) {
		evh_tx_rollback(tx);
		return rc;
	}
	if ((rc = evh_tx_commit(tx)) != EVH_OK)
		return rc;
	evh_metric_add(h->greetings, NULL, 1);
	return evh_resp_json(resp, 200, json, strlen(json));
}

/* Records every event it sees; the host's inbox makes a redelivery a no-op.
 * Any producer may write to a topic, and GET /hello-seen embeds the data as
 * JSON (its data_json column), which the host refuses for a text that is
 * not strict JSON, holds a number beyond a double's range or a \u0000 (or a
 * lone surrogate) in a string, or nests deeper than 128 levels: one such row
 * stored would fail every later listing. SQLite's json_valid() takes most of
 * those, so the data is checked the way the listing will read it, by
 * evh_query_json itself; what fails is rejected, and the host moves it to
 * the dead-letter topic with the reason (an admin can read it there). */
static evh_event_result on_event(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud)
{
	size_t len;
	const char *data = evh_event_data(ev, &len);
	char *listed = NULL;
	int rc;
	(void)ud;
	evh_value args[] = {EVH_TEXT(evh_event_id(ev)), EVH_TEXT(evh_event_type(ev)),
	                    EVH_TEXTN(data, len)};
	if (!data || memchr(data, '\0', len)) { /* SQLite's text would end at a NUL */
		evh_event_set_error(ev, "hello: event data is not JSON (none, or a NUL byte)");
		return EVH_EVENT_REJECT;
	}
	/* EVH_ESTORE: the host would not embed it (the statement reads no table:
	 * no other failure of storage says that here). The REJECT undoes the
	 * failed statement with the event's other writes. */
	rc = evh_query_json(tx, "SELECT ?1 AS data_json", &args[2], 1, &listed, NULL);
	evh_free(listed);
	if (rc == EVH_ESTORE) {
		evh_event_set_error(ev, "hello: event data is not JSON GET /hello-seen can list (not "
		                        "RFC 8259, a number beyond a double, a \\u0000 or lone "
		                        "surrogate in a string, or nested deeper than 128 levels)");
		return EVH_EVENT_REJECT;
	}
	if (rc != EVH_OK ||
	    evh_exec(tx, "INSERT INTO seen(event_id, type, data) VALUES(?1, ?2, ?3)", args, 3, NULL))
		return EVH_EVENT_RETRY;
	evh_log(p, EVH_LOG_INFO, "saw %s event %s", evh_event_type(ev), evh_event_id(ev));
	return EVH_EVENT_OK;
}

static int seen(evh_request *req, evh_response *resp, void *ud)
{
	hello *h = ud;
	evh_tx *tx;
	char *json;
	size_t len;
	int rc;

	(void)req;
	if ((rc = evh_tx_begin(h->p, &tx)) != EVH_OK)
		return rc;
	rc = evh_query_json(tx, "SELECT event_id, type, data AS data_json FROM seen ORDER BY rowid",
	                    NULL, 0, &json, &len);
	evh_tx_rollback(tx);
	if (rc != EVH_OK)
		return rc;
	rc = evh_resp_json(resp, 200, json, len);
	evh_free(json);
	return rc;
}

static int hello_init(evh_plugin *p, void **state)
{
	hello *h;
	int rc;

	if ((rc = hello_check(p)) != EVH_OK) /* the values first: nothing to undo yet */
		return rc;
	if (!(h = calloc(1, sizeof *h)))
		return EVH_ENOMEM;
	h->p = p;
	h->greeting_topic = evh_config_str(p, "greeting_topic");
	h->greetings = evh_metric_new(p, EVH_METRIC_COUNTER, "hello_greetings_total",
	                              "Greetings answered.", NULL);
	*state = h;
	if ((rc = evh_migrate(p, hello_migrations, 1)) != EVH_OK)
		return rc;
	if ((rc = evh_http_route(p, "GET", "/hello", greet, h)) != EVH_OK ||
	    (rc = evh_http_route(p, "GET", "/hello/{name}", greet, h)) != EVH_OK ||
	    (rc = evh_http_route(p, "GET", "/hello-seen", seen, h)) != EVH_OK)
		return rc;
	evh_subscription sub = {
	    .struct_size = sizeof sub,
	    .topic = evh_config_str(p, "topic"),
	    .handler = on_event,
	    .ud = h,
	};
	return evh_subscribe(p, &sub);
}

static void hello_fini(evh_plugin *p, void *state)
{
	(void)p;
	free(state);
}

EVH_PLUGIN_CHECKED("hello", "1.0.0", "Example plugin: greets over HTTP, records events",
                   hello_config, hello_check, hello_init, hello_fini)
