/* kafka.c + outbox.c end to end against librdkafka's embedded mock cluster
 * with real SQLite stores: a "user" plugin publishes through its outbox, a
 * "notifications" plugin consumes. Checks headers and key, outbox rows
 * deleted after delivery, inbox de-duplication, retries (with partition
 * order kept), dead letters with their headers, plain (non-CloudEvents)
 * messages and type filters. Every wait is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "events.h"
#include "kafka.h"
#include "log.h"
#include "outbox.h"
#include "plugins.h"
#include "store.h"

#define TOPIC "TEST_EVENTS"
#define DLQ_TOPIC "TEST_EVENTS.notifications.dlq"
#define WAIT_MS 30000
#define MAX_CALLS 128

struct call {
	char id[320], type[128], key[64], data[256], source[256], traceparent[64];
	char spec[16], ctype[64], topic[64];
	int attempt;
	int32_t partition;
	int64_t offset;
	int filtered; /* recorded by the type-filtered subscription */
	int lens_ok;  /* key/data lengths agree with their NUL-terminated copies */
};

static struct {
	pthread_mutex_t mu;
	struct call calls[MAX_CALLS];
	int ncalls;
} rec = {.mu = PTHREAD_MUTEX_INITIALIZER};

static struct fixture {
	char dir[64];
	settings s;
	kafka *k;
	outbox *o;
	evh_plugin user, notif;
	plugin_sub subs[2];
} fx;

static void copy_opt(char *dst, size_t cap, const char *src)
{
	snprintf(dst, cap, "%s", src ? src : "(null)");
}

static void record(const evh_event *ev, int filtered)
{
	struct call *c;
	size_t klen, dlen;
	const char *key = kafka_ev_key(ev, &klen), *data = kafka_ev_data(ev, &dlen);
	pthread_mutex_lock(&rec.mu);
	if (rec.ncalls == MAX_CALLS) {
		pthread_mutex_unlock(&rec.mu);
		return;
	}
	c = &rec.calls[rec.ncalls++];
	copy_opt(c->id, sizeof c->id, kafka_ev_id(ev));
	copy_opt(c->type, sizeof c->type, kafka_ev_type(ev));
	copy_opt(c->key, sizeof c->key, key);
	copy_opt(c->data, sizeof c->data, data);
	copy_opt(c->source, sizeof c->source, kafka_ev_source(ev));
	copy_opt(c->traceparent, sizeof c->traceparent, kafka_ev_header(ev, "traceparent"));
	copy_opt(c->spec, sizeof c->spec, kafka_ev_header(ev, "ce_specversion"));
	copy_opt(c->ctype, sizeof c->ctype, kafka_ev_header(ev, "content-type"));
	copy_opt(c->topic, sizeof c->topic, kafka_ev_topic(ev));
	c->attempt = kafka_ev_attempt(ev);
	c->partition = kafka_ev_partition(ev);
	c->offset = kafka_ev_offset(ev);
	c->filtered = filtered;
	c->lens_ok = strlen(data) == dlen && (!key || strlen(key) == klen);
	pthread_mutex_unlock(&rec.mu);
}

/* Writes a row in the handler's transaction, so tests can see that retried
 * attempts were rolled back and the final one committed. */
static evh_event_result handler(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud)
{
	const char *type = kafka_ev_type(ev);
	evh_value v = EVH_TEXT(kafka_ev_id(ev));
	record(ev, 0);
	if (store_exec(tx, "INSERT INTO handled(id) VALUES(?)", &v, 1, NULL) != EVH_OK)
		return EVH_EVENT_RETRY;
	if (!strcmp(type, "RETRY_TWICE") && kafka_ev_attempt(ev) < 3) {
		kafka_ev_set_error(ev, "not yet");
		return EVH_EVENT_RETRY;
	}
	if (!strcmp(type, "RETRY_ALWAYS")) {
		kafka_ev_set_error(ev, "still failing");
		return EVH_EVENT_RETRY;
	}
	if (!strcmp(type, "REJECT_ME")) {
		kafka_ev_set_error(ev, "bad data");
		return EVH_EVENT_REJECT;
	}
	return EVH_EVENT_OK;
}

static evh_event_result filtered_handler(evh_plugin *p, const evh_event *ev, evh_tx *tx,
                                         void *ud)
{
	record(ev, 1);
	return EVH_EVENT_OK;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Calls recorded for `id` (by the unfiltered handler unless `filtered`). */
static int count_calls(const char *id, int filtered)
{
	int n = 0;
	pthread_mutex_lock(&rec.mu);
	for (int i = 0; i < rec.ncalls; i++)
		if (!strcmp(rec.calls[i].id, id) && rec.calls[i].filtered == filtered)
			n++;
	pthread_mutex_unlock(&rec.mu);
	return n;
}

/* Index of the n-th (0-based) call for `id`, or -1. */
static int call_index(const char *id, int nth)
{
	int found = -1;
	pthread_mutex_lock(&rec.mu);
	for (int i = 0; i < rec.ncalls && found < 0; i++)
		if (!strcmp(rec.calls[i].id, id) && !rec.calls[i].filtered && nth-- == 0)
			found = i;
	pthread_mutex_unlock(&rec.mu);
	return found;
}

static int wait_calls(const char *id, int n)
{
	int64_t end = now_ms() + WAIT_MS;
	while (count_calls(id, 0) < n && now_ms() < end)
		usleep(20000);
	return count_calls(id, 0);
}

static int64_t handled_rows(const char *id)
{
	evh_tx *tx;
	evh_rows *rows;
	evh_value v = EVH_TEXT(id);
	int64_t n = -1;
	assert_int_equal(store_tx_begin(fx.notif.store, &tx), EVH_OK);
	assert_int_equal(store_query(tx, "SELECT COUNT(*) FROM handled WHERE id = ?", &v, 1, &rows),
	                 EVH_OK);
	if (store_rows_next(rows) == 1)
		n = store_rows_int(rows, 0);
	store_rows_close(rows);
	store_tx_rollback(tx);
	return n;
}

/* Publish like the SDK does: an outbox row committed in a transaction. */
static void publish_to(store *st, const char *id, const char *key, const char *type,
                       const char *data)
{
	evh_tx *tx;
	char now[40], tp[56];
	outbox_row row;
	events_now_rfc3339(now);
	events_new_traceparent(tp);
	memset(&row, 0, sizeof row);
	row.id = (char *)id;
	row.topic = (char *)TOPIC;
	row.key = (char *)key;
	row.type = (char *)type;
	row.time = now;
	row.traceparent = tp;
	row.data = (char *)data;
	row.data_len = strlen(data);
	assert_int_equal(store_tx_begin(st, &tx), EVH_OK);
	assert_int_equal(store_outbox_add(tx, &row), EVH_OK);
	assert_int_equal(store_tx_commit(tx), EVH_OK);
}

static void publish(const char *id, const char *key, const char *type, const char *data)
{
	publish_to(fx.user.store, id, key, type, data);
}

static int wait_pending(store *st, int64_t want, int ms)
{
	int64_t end = now_ms() + ms;
	while (store_outbox_pending(st) != want && now_ms() < end)
		usleep(20000);
	return store_outbox_pending(st) == want;
}

static int open_store(evh_plugin *p, const char *name)
{
	char path[128], err[256];
	snprintf(path, sizeof path, "%s/%s.db", fx.dir, name);
	if (store_open(&p->store, path, "NORMAL", err, sizeof err) != EVH_OK) {
		fprintf(stderr, "store_open: %s\n", err);
		return -1;
	}
	return 0;
}

static int setup(void **state)
{
	static const evh_migration mig[] = {{1, "CREATE TABLE handled(id TEXT)"}};
	char err[256];
	const char *lvl = getenv("EVHOST_TEST_LOG");
	evh_log_level level = EVH_LOG_ERROR;
	if (lvl)
		log_level_parse(lvl, &level);
	log_setup(level, LOG_FORMAT_TEXT);
	snprintf(fx.dir, sizeof fx.dir, "/tmp/evhost-test-kafka-XXXXXX");
	if (!mkdtemp(fx.dir))
		return -1;
	fx.s.brokers = (char *)"embedded";
	fx.s.embedded = 1;
	fx.s.dlq_suffix = (char *)".dlq";
	fx.s.retry_max_attempts = 3;
	fx.s.retry_backoff_ms = 50;
	fx.s.retry_backoff_max_ms = 200;
	if (kafka_start(&fx.k, &fx.s, err, sizeof err)) {
		fprintf(stderr, "kafka_start: %s\n", err);
		return -1;
	}
	if (outbox_start(&fx.o, fx.k, "evhost://test"))
		return -1;

	fx.user.name = (char *)"user";
	fx.notif.name = (char *)"notifications";
	fx.notif.group = (char *)"evhost.notifications";
	if (open_store(&fx.user, "user") || open_store(&fx.notif, "notifications") ||
	    store_migrate(fx.notif.store, mig, 1, err, sizeof err) != EVH_OK)
		return -1;
	outbox_add_plugin(fx.o, &fx.user);

	fx.subs[0].topic = (char *)TOPIC;
	fx.subs[0].handler = handler;
	fx.subs[1].topic = (char *)TOPIC;
	fx.subs[1].type = (char *)"ONLY_THIS";
	fx.subs[1].handler = filtered_handler;
	fx.notif.subs = fx.subs;
	fx.notif.nsubs = 2;
	if (consumer_start(fx.k, &fx.notif, &fx.s, err, sizeof err)) {
		fprintf(stderr, "consumer_start: %s\n", err);
		return -1;
	}
	*state = &fx;
	return 0;
}

static void remove_db(const char *name)
{
	static const char *const suffix[] = {"", "-wal", "-shm"};
	char path[160];
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "%s/%s.db%s", fx.dir, name, suffix[i]);
		unlink(path);
	}
}

static int teardown(void **state)
{
	int64_t left;
	consumer_stop(&fx.notif);
	left = outbox_stop(fx.o, 5000);
	kafka_stop(fx.k, 5000);
	store_close(fx.user.store);
	store_close(fx.notif.store);
	remove_db("user");
	remove_db("notifications");
	rmdir(fx.dir);
	return left == 0 ? 0 : -1;
}

static void test_reachable(void **state)
{
	assert_int_equal(kafka_reachable(fx.k, 5000), 1);
	assert_non_null(strstr(kafka_bootstraps(fx.k), "127.0.0.1"));
}

static void test_delivery(void **state)
{
	char id[37];
	const struct call *c;
	events_uuid(id);
	publish(id, "user-1", "USER_CREATED", "{\"id\":\"user-1\",\"name\":\"Ada\"}");
	assert_int_equal(wait_calls(id, 1), 1);
	c = &rec.calls[call_index(id, 0)];
	assert_string_equal(c->type, "USER_CREATED");
	assert_string_equal(c->key, "user-1");
	assert_string_equal(c->data, "{\"id\":\"user-1\",\"name\":\"Ada\"}");
	assert_string_equal(c->source, "evhost://test"); /* the row had none */
	assert_string_equal(c->topic, TOPIC);
	assert_string_equal(c->spec, "1.0");
	assert_string_equal(c->ctype, "application/json");
	assert_int_equal(strlen(c->traceparent), 55);
	assert_int_equal(c->attempt, 1);
	assert_true(c->lens_ok);
	assert_int_equal(handled_rows(id), 1);
	/* the outbox row is deleted once the delivery report arrived */
	assert_true(wait_pending(fx.user.store, 0, WAIT_MS));
}

static void test_duplicate_handled_once(void **state)
{
	char id[37], marker[37];
	events_uuid(id);
	events_uuid(marker);
	/* Same key: one partition, so the marker is handled after both copies. */
	publish(id, "dup", "USER_CREATED", "{}");
	publish(id, "dup", "USER_CREATED", "{}");
	publish(marker, "dup", "USER_CREATED", "{}");
	assert_int_equal(wait_calls(marker, 1), 1);
	assert_int_equal(count_calls(id, 0), 1);
	assert_int_equal(handled_rows(id), 1);
}

static void test_retry_then_ok_keeps_order(void **state)
{
	char id[37], next[37];
	int third, after;
	events_uuid(id);
	events_uuid(next);
	publish(id, "order", "RETRY_TWICE", "{}");
	publish(next, "order", "USER_CREATED", "{}");
	assert_int_equal(wait_calls(next, 1), 1);
	assert_int_equal(count_calls(id, 0), 3);
	third = call_index(id, 2);
	after = call_index(next, 0);
	assert_int_equal(rec.calls[call_index(id, 0)].attempt, 1);
	assert_int_equal(rec.calls[call_index(id, 1)].attempt, 2);
	assert_int_equal(rec.calls[third].attempt, 3);
	/* the partition was paused: the next message waited for the retries */
	assert_true(third < after);
	/* the two failed attempts' writes were rolled back */
	assert_int_equal(handled_rows(id), 1);
	usleep(300000); /* nothing is delivered a second time after the seek */
	assert_int_equal(count_calls(next, 0), 1);
	assert_int_equal(count_calls(id, 0), 3);
}

static const char *hdr(rd_kafka_headers_t *h, const char *name, char *buf, size_t cap)
{
	const void *v;
	size_t n;
	if (rd_kafka_header_get_last(h, name, &v, &n))
		return NULL;
	snprintf(buf, cap, "%.*s", (int)n, (const char *)v);
	return buf;
}

/* Read `topic` with a plain consumer until `want` ids are seen; out[i]
 * gets a copy of the headers of the message with ce_id ids[i]. */
static int read_topic(const char *bootstraps, const char *topic, const char *const *ids,
                      rd_kafka_headers_t **out, int want)
{
	char err[256], buf[320];
	int got = 0;
	int64_t end = now_ms() + WAIT_MS;
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_conf_set(conf, "bootstrap.servers", bootstraps, err, sizeof err);
	rd_kafka_conf_set(conf, "group.id", "test-reader", err, sizeof err);
	rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof err);
	rd_kafka_conf_set(conf, "allow.auto.create.topics", "true", err, sizeof err);
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
	assert_non_null(rk);
	rd_kafka_poll_set_consumer(rk);
	rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
	assert_int_equal(rd_kafka_subscribe(rk, l), 0);
	rd_kafka_topic_partition_list_destroy(l);
	while (got < want && now_ms() < end) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		rd_kafka_headers_t *h = NULL;
		if (!m)
			continue;
		if (!m->err && !rd_kafka_message_headers(m, &h) && hdr(h, "ce_id", buf, sizeof buf))
			for (int i = 0; i < want; i++)
				if (!strcmp(buf, ids[i]) && !out[i]) {
					out[i] = rd_kafka_headers_copy(h);
					got++;
				}
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return got;
}

static void check_dlq(rd_kafka_headers_t *h, const char *attempts, const char *error,
                      const char *type)
{
	char buf[320];
	assert_string_equal(hdr(h, "evhost_dlq_topic", buf, sizeof buf), TOPIC);
	assert_string_equal(hdr(h, "evhost_dlq_plugin", buf, sizeof buf), "notifications");
	assert_string_equal(hdr(h, "evhost_dlq_attempts", buf, sizeof buf), attempts);
	assert_string_equal(hdr(h, "evhost_dlq_error", buf, sizeof buf), error);
	assert_string_equal(hdr(h, "ce_type", buf, sizeof buf), type); /* original kept */
	assert_non_null(hdr(h, "evhost_dlq_partition", buf, sizeof buf));
	assert_non_null(hdr(h, "evhost_dlq_offset", buf, sizeof buf));
	assert_int_equal(strlen(hdr(h, "evhost_dlq_time", buf, sizeof buf)), 24);
}

static void test_reject_and_exhausted_go_to_dlq(void **state)
{
	char rej[37], exh[37], after[37], buf[64];
	const char *ids[2] = {rej, exh};
	rd_kafka_headers_t *out[2] = {NULL, NULL};
	rd_kafka_headers_t *h;
	int64_t off;
	events_uuid(rej);
	events_uuid(exh);
	events_uuid(after);
	publish(rej, "poison", "REJECT_ME", "not json");
	publish(exh, "poison", "RETRY_ALWAYS", "{}");
	publish(after, "poison", "USER_CREATED", "{}");
	assert_int_equal(wait_calls(after, 1), 1);
	assert_int_equal(count_calls(rej, 0), 1);           /* no retry for REJECT */
	assert_int_equal(count_calls(exh, 0), 3);           /* [kafka] retry max 3 */
	assert_int_equal(handled_rows(rej), 0);
	assert_int_equal(handled_rows(exh), 0);
	assert_int_equal(read_topic(kafka_bootstraps(fx.k), DLQ_TOPIC, ids, out, 2), 2);
	h = out[0];
	check_dlq(h, "1", "bad data", "REJECT_ME");
	off = strtoll(hdr(h, "evhost_dlq_offset", buf, sizeof buf), NULL, 10);
	assert_int_equal(off, rec.calls[call_index(rej, 0)].offset);
	rd_kafka_headers_destroy(h);
	h = out[1];
	check_dlq(h, "3", "still failing", "RETRY_ALWAYS");
	rd_kafka_headers_destroy(h);
}

static void test_plain_message_and_type_filter(void **state)
{
	outbox_row row;
	char id[37], plain_id[320];
	int i, n;
	int64_t end;
	events_uuid(id);
	/* A third-party producer: no CloudEvents headers at all. */
	memset(&row, 0, sizeof row);
	row.id = (char *)"";
	row.type = (char *)"";
	row.topic = (char *)TOPIC;
	row.key = (char *)"plain-key";
	row.data = (char *)"{\"plain\":true}";
	row.data_len = strlen(row.data);
	assert_int_equal(kafka_produce_row(fx.k, &row, "", NULL, NULL) == EVH_OK ? 0 : -1, 0);
	publish(id, "f", "ONLY_THIS", "{}");
	assert_int_equal(wait_calls(id, 1), 1);
	end = now_ms() + WAIT_MS;
	while (count_calls(id, 1) < 1 && now_ms() < end)
		usleep(20000);
	assert_int_equal(count_calls(id, 1), 1); /* the filtered sub saw its type */
	/* find the plain one: id is "<topic>/<partition>/<offset>", type "" */
	end = now_ms() + WAIT_MS;
	for (;;) {
		n = -1;
		pthread_mutex_lock(&rec.mu);
		for (i = 0; i < rec.ncalls; i++)
			if (!strcmp(rec.calls[i].key, "plain-key")) {
				n = i;
				snprintf(plain_id, sizeof plain_id, "%s/%d/%lld", TOPIC,
				         (int)rec.calls[i].partition,
				         (long long)rec.calls[i].offset);
			}
		pthread_mutex_unlock(&rec.mu);
		if (n >= 0 || now_ms() > end)
			break;
		usleep(20000);
	}
	assert_true(n >= 0);
	assert_string_equal(rec.calls[n].id, plain_id);
	assert_string_equal(rec.calls[n].type, "");
	assert_string_equal(rec.calls[n].source, "(null)");
	assert_string_equal(rec.calls[n].data, "{\"plain\":true}");
	assert_int_equal(rec.calls[n].filtered, 0); /* never the ONLY_THIS sub */
}

static void test_passthrough_error(void **state)
{
	settings s;
	kafka *k = NULL;
	char err[256];
	char *keys[] = {(char *)"no.such.property"}, *values[] = {(char *)"1"};
	memset(&s, 0, sizeof s);
	s.brokers = (char *)"127.0.0.1:1";
	s.rdkafka_keys = keys;
	s.rdkafka_values = values;
	s.nrdkafka = 1;
	assert_int_equal(kafka_start(&k, &s, err, sizeof err), -1);
	assert_null(k);
	assert_non_null(strstr(err, "[kafka] rdkafka.no.such.property: "));
}

/* A delivery that fails for good (broker down past message.timeout.ms) is
 * sent again by the relay, and the row is deleted only after that. Uses a
 * mock cluster of its own, so the broker can be taken down. */
static void test_relay_resends_after_failed_delivery(void **state)
{
	char err[256], path[160], warm[37], id[37];
	char *keys[] = {(char *)"message.timeout.ms"}, *values[] = {(char *)"1500"};
	const char *ids[1] = {id};
	rd_kafka_headers_t *out[1] = {NULL};
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *mrk;
	rd_kafka_mock_cluster_t *mc;
	settings s;
	kafka *k;
	outbox *o;
	evh_plugin pl;
	rd_kafka_conf_set_log_cb(conf, NULL); /* it is no client: nothing to say */
	mrk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
	assert_non_null(mrk);
	mc = rd_kafka_mock_cluster_new(mrk, 1);
	assert_non_null(mc);
	memset(&s, 0, sizeof s);
	s.brokers = (char *)rd_kafka_mock_cluster_bootstraps(mc);
	s.rdkafka_keys = keys;
	s.rdkafka_values = values;
	s.nrdkafka = 1;
	assert_int_equal(kafka_start(&k, &s, err, sizeof err), 0);
	assert_int_equal(outbox_start(&o, k, "evhost://test"), 0);
	memset(&pl, 0, sizeof pl);
	pl.name = (char *)"relay";
	snprintf(path, sizeof path, "%s/relay.db", fx.dir);
	assert_int_equal(store_open(&pl.store, path, "NORMAL", err, sizeof err), EVH_OK);
	outbox_add_plugin(o, &pl);

	events_uuid(warm);
	publish_to(pl.store, warm, "r", "WARM_UP", "{}");
	assert_true(wait_pending(pl.store, 0, WAIT_MS));

	rd_kafka_mock_broker_set_down(mc, 1);
	events_uuid(id);
	publish_to(pl.store, id, "r", "AFTER_OUTAGE", "{\"n\":1}");
	sleep(4); /* well past message.timeout.ms: the first delivery failed */
	assert_int_equal(store_outbox_pending(pl.store), 1);
	rd_kafka_mock_broker_set_up(mc, 1);
	assert_true(wait_pending(pl.store, 0, WAIT_MS));
	assert_int_equal(read_topic(s.brokers, TOPIC, ids, out, 1), 1);
	rd_kafka_headers_destroy(out[0]);

	outbox_remove_plugin(o, &pl);
	assert_int_equal(outbox_stop(o, 5000), 0);
	kafka_stop(k, 5000);
	store_close(pl.store);
	remove_db("relay");
	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(mrk);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reachable),
	    cmocka_unit_test(test_delivery),
	    cmocka_unit_test(test_duplicate_handled_once),
	    cmocka_unit_test(test_retry_then_ok_keeps_order),
	    cmocka_unit_test(test_reject_and_exhausted_go_to_dlq),
	    cmocka_unit_test(test_plain_message_and_type_filter),
	    cmocka_unit_test(test_passthrough_error),
	    cmocka_unit_test(test_relay_resends_after_failed_delivery),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
