/* bench_kafka: the bare librdkafka side of scripts/bench.
 *
 *   bench_kafka version
 *   bench_kafka create  -b BROKERS [-p PARTITIONS] TOPIC...
 *   bench_kafka produce -b BROKERS -t TOPIC -n COUNT [-s SIZE] [-l LINGER_MS]
 *   bench_kafka consume -b BROKERS -t TOPIC -n COUNT -g GROUP [-w TIMEOUT_S] [-d DB]
 *   bench_kafka e2e     -b BROKERS -t TOPIC -n COUNT -g GROUP -r RATE [-s SIZE] [-l LINGER_MS]
 *
 * produce sends what evhost's outbox relay sends for the bench plugin's
 * events (the same key, value and CloudEvents headers) with the producer
 * settings evhost uses (enable.idempotence, acks=all, linger.ms), and
 * measures from the first produce call to the last delivery report.
 * consume reads COUNT messages in a fresh consumer group and measures from
 * the first message to the last. With -d it is the durable baseline: the
 * least a consumer does for evhost's promise (a redelivered event is not
 * handled twice, even after a crash): each message's ce_id goes into an
 * inbox table of the SQLite database DB (WAL, synchronous = FULL), 256 to a
 * transaction as evhost's batches, and offsets are stored only once their
 * transaction is committed. No handler, savepoint or dispatch order.
 * e2e is the end-to-end floor of the machine and broker: one producer (the
 * same settings) sends COUNT messages at RATE a second, each stamped with its
 * send time, to a consumer in the same process (a group subscription, as
 * evhost's), which takes each one's latency from that stamp; p50, p99 and
 * the largest, after a warm-up that ends once a message has come through.
 * No HTTP, storage or dispatch. Each prints one JSON line on stdout. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <sqlite3.h>

#include "bench_event.h"

#define ADMIN_TIMEOUT_MS 30000
#define FLUSH_TIMEOUT_MS 60000
#define INBOX_BATCH 256 /* evhost's consumer batch */

struct opts {
	const char *brokers, *topic, *group, *db;
	long count, size, linger_ms, partitions, wait_s, rate;
};

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void usage(void)
{
	fprintf(stderr,
	        "usage: bench_kafka version\n"
	        "       bench_kafka create  -b BROKERS [-p PARTITIONS] TOPIC...\n"
	        "       bench_kafka produce -b BROKERS -t TOPIC -n COUNT [-s SIZE] [-l LINGER_MS]\n"
	        "       bench_kafka consume -b BROKERS -t TOPIC -n COUNT -g GROUP "
	        "[-w TIMEOUT_S] [-d DB]\n"
	        "       bench_kafka e2e     -b BROKERS -t TOPIC -n COUNT -g GROUP -r RATE "
	        "[-s SIZE] [-l LINGER_MS]\n");
	exit(2);
}

static long parse_long(const char *flag, const char *v)
{
	char *end;
	long n;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || *end || n < 0) {
		fprintf(stderr, "bench_kafka: %s: expected a non-negative integer, got '%s'\n",
		        flag, v);
		exit(2);
	}
	return n;
}

static int parse_opts(int argc, char **argv, struct opts *o)
{
	int c;
	memset(o, 0, sizeof *o);
	o->size = 256;
	o->linger_ms = 5;
	o->partitions = 3;
	o->wait_s = 120;
	while ((c = getopt(argc, argv, "b:t:g:n:s:l:p:w:d:r:")) != -1) {
		switch (c) {
		case 'b': o->brokers = optarg; break;
		case 't': o->topic = optarg; break;
		case 'g': o->group = optarg; break;
		case 'n': o->count = parse_long("-n", optarg); break;
		case 's': o->size = parse_long("-s", optarg); break;
		case 'l': o->linger_ms = parse_long("-l", optarg); break;
		case 'p': o->partitions = parse_long("-p", optarg); break;
		case 'w': o->wait_s = parse_long("-w", optarg); break;
		case 'd': o->db = optarg; break;
		case 'r': o->rate = parse_long("-r", optarg); break;
		default: usage();
		}
	}
	if (!o->brokers)
		usage();
	return optind;
}

static int set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
	char err[512];
	if (rd_kafka_conf_set(conf, k, v, err, sizeof err) == RD_KAFKA_CONF_OK)
		return 0;
	fprintf(stderr, "bench_kafka: %s=%s: %s\n", k, v, err);
	return -1;
}

/* ---------------------------------------------------------------- create */

static int create_result(rd_kafka_event_t *ev)
{
	const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
	const rd_kafka_topic_result_t **tr;
	size_t n;
	int bad = 0;
	if (!res) {
		fprintf(stderr, "bench_kafka: create: %s\n", rd_kafka_event_error_string(ev));
		return -1;
	}
	tr = rd_kafka_CreateTopics_result_topics(res, &n);
	for (size_t i = 0; i < n; i++) {
		rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
		if (e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
			continue;
		fprintf(stderr, "bench_kafka: create %s: %s\n", rd_kafka_topic_result_name(tr[i]),
		        rd_kafka_topic_result_error_string(tr[i]));
		bad = 1;
	}
	return bad ? -1 : 0;
}

static int cmd_create(const struct opts *o, char **topics, int ntopics)
{
	char err[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk = NULL;
	rd_kafka_NewTopic_t **nt = calloc((size_t)ntopics, sizeof *nt);
	rd_kafka_queue_t *q = NULL;
	rd_kafka_event_t *ev = NULL;
	int rc = -1;
	if (!nt || set(conf, "bootstrap.servers", o->brokers))
		goto out;
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
	conf = NULL;
	if (!rk) {
		fprintf(stderr, "bench_kafka: %s\n", err);
		goto out;
	}
	for (int i = 0; i < ntopics; i++) {
		nt[i] = rd_kafka_NewTopic_new(topics[i], (int)o->partitions, 1, err, sizeof err);
		if (!nt[i]) {
			fprintf(stderr, "bench_kafka: topic %s: %s\n", topics[i], err);
			goto out;
		}
	}
	q = rd_kafka_queue_new(rk);
	rd_kafka_CreateTopics(rk, nt, (size_t)ntopics, NULL, q);
	ev = rd_kafka_queue_poll(q, ADMIN_TIMEOUT_MS);
	if (!ev) {
		fprintf(stderr, "bench_kafka: create: no answer within %d ms\n", ADMIN_TIMEOUT_MS);
		goto out;
	}
	rc = create_result(ev);
out:
	if (ev)
		rd_kafka_event_destroy(ev);
	if (q)
		rd_kafka_queue_destroy(q);
	for (int i = 0; nt && i < ntopics; i++)
		if (nt[i])
			rd_kafka_NewTopic_destroy(nt[i]);
	free(nt);
	if (conf)
		rd_kafka_conf_destroy(conf);
	if (rk)
		rd_kafka_destroy(rk);
	return rc;
}

/* --------------------------------------------------------------- produce */

struct produce_state {
	long delivered, failed;
	int64_t last_us;
	char first_error[256];
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct produce_state *st = opaque;
	(void)rk;
	if (m->err) {
		if (!st->failed++)
			snprintf(st->first_error, sizeof st->first_error, "%s",
			         rd_kafka_err2str(m->err));
		return;
	}
	st->delivered++;
	st->last_us = now_us();
}

static void uuid4(char out[37])
{
	unsigned char b[16];
	if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
		perror("bench_kafka: getrandom");
		exit(1);
	}
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, 37,
	         "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
	         b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
	         b[14], b[15]);
}

static void rfc3339_now(char out[40])
{
	struct timespec ts;
	struct tm tm;
	size_t n;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(out, 40, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, 40 - n, ".%03ldZ", ts.tv_nsec / 1000000L);
}

/* The headers evhost's relay puts on every event (CloudEvents binary mode
 * plus traceparent), so both sides send the same bytes. */
static rd_kafka_headers_t *event_headers(void)
{
	rd_kafka_headers_t *h = rd_kafka_headers_new(8);
	char id[37], time[40], trace[37], span[37], tp[64];
	uuid4(id);
	rfc3339_now(time);
	uuid4(trace);
	uuid4(span);
	snprintf(tp, sizeof tp, "00-%.8s%.4s%.4s%.4s%.12s-%.8s%.4s%.4s-01", trace, trace + 9,
	         trace + 14, trace + 19, trace + 24, span, span + 9, span + 14);
	rd_kafka_header_add(h, "ce_id", -1, id, -1);
	rd_kafka_header_add(h, "ce_type", -1, BENCH_EVENT_TYPE, -1);
	rd_kafka_header_add(h, "ce_source", -1, "evhost://bench/bench", -1);
	rd_kafka_header_add(h, "ce_specversion", -1, "1.0", -1);
	rd_kafka_header_add(h, "ce_time", -1, time, -1);
	rd_kafka_header_add(h, "content-type", -1, "application/json", -1);
	rd_kafka_header_add(h, "traceparent", -1, tp, -1);
	return h;
}

static rd_kafka_t *new_producer(const struct opts *o, struct produce_state *st)
{
	char err[512], linger[32];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	snprintf(linger, sizeof linger, "%ld", o->linger_ms);
	rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
	rd_kafka_conf_set_opaque(conf, st);
	if (set(conf, "bootstrap.servers", o->brokers) || set(conf, "client.id", "bench") ||
	    set(conf, "enable.idempotence", "true") || set(conf, "acks", "all") ||
	    set(conf, "linger.ms", linger)) {
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
	if (!rk) {
		fprintf(stderr, "bench_kafka: %s\n", err);
		rd_kafka_conf_destroy(conf);
	}
	return rk;
}

static int produce_one(rd_kafka_t *rk, const struct opts *o, long seq, char *value)
{
	char key[32];
	size_t vlen = bench_event_value(value, (size_t)o->size + 1, seq, (size_t)o->size);
	rd_kafka_headers_t *h = event_headers();
	rd_kafka_resp_err_t e;
	bench_event_key(key, sizeof key, seq);
	for (;;) {
		e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(o->topic),
		                      RD_KAFKA_V_KEY(key, strlen(key)),
		                      RD_KAFKA_V_VALUE(value, vlen), RD_KAFKA_V_HEADERS(h),
		                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
		if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			break;
		rd_kafka_poll(rk, 10); /* same as the relay: let deliveries drain the queue */
	}
	if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
		return 0; /* the message owns the headers now */
	rd_kafka_headers_destroy(h);
	fprintf(stderr, "bench_kafka: produce: %s\n", rd_kafka_err2str(e));
	return -1;
}

/* Connect and learn the topic's leaders before the clock starts, as evhost's
 * producer has long done by the time the bench plugin publishes. */
static void warm_up(rd_kafka_t *rk, const char *topic)
{
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
	if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) == RD_KAFKA_RESP_ERR_NO_ERROR)
		rd_kafka_metadata_destroy(md);
	else
		fprintf(stderr, "bench_kafka: no metadata for %s yet; timing includes it\n", topic);
	if (rkt)
		rd_kafka_topic_destroy(rkt);
}

static int cmd_produce(const struct opts *o)
{
	struct produce_state st = {0};
	rd_kafka_t *rk;
	char *value;
	int64_t t0;
	int rc = 0;
	if (!o->topic || o->count <= 0 || o->size < BENCH_EVENT_MIN_SIZE)
		usage();
	if (!(rk = new_producer(o, &st)))
		return -1;
	value = malloc((size_t)o->size + 1);
	if (!value) {
		rd_kafka_destroy(rk);
		return -1;
	}
	warm_up(rk, o->topic);
	t0 = now_us();
	for (long i = 0; i < o->count && !rc && !stop_requested; i++) {
		rc = produce_one(rk, o, i, value);
		rd_kafka_poll(rk, 0);
	}
	if (rd_kafka_flush(rk, FLUSH_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
		fprintf(stderr, "bench_kafka: %d message(s) still undelivered after %d ms\n",
		        rd_kafka_outq_len(rk), FLUSH_TIMEOUT_MS);
	if (st.failed)
		fprintf(stderr, "bench_kafka: %ld message(s) failed, first: %s\n", st.failed,
		        st.first_error);
	printf("{\"count\":%ld,\"delivered\":%ld,\"failed\":%ld,\"seconds\":%.6f}\n", o->count,
	       st.delivered, st.failed, st.delivered ? (double)(st.last_us - t0) / 1e6 : 0.0);
	free(value);
	rd_kafka_destroy(rk);
	return rc || st.delivered != o->count ? -1 : 0;
}

/* --------------------------------------------------------------- consume */

/* A consumer of o->topic in group o->group, from `reset` (auto.offset.reset)
 * on. */
static rd_kafka_t *new_consumer(const struct opts *o, const char *reset)
{
	char err[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_topic_partition_list_t *topics;
	rd_kafka_t *rk;
	if (set(conf, "bootstrap.servers", o->brokers) || set(conf, "group.id", o->group) ||
	    set(conf, "client.id", "bench") || set(conf, "auto.offset.reset", reset) ||
	    (o->db && set(conf, "enable.auto.offset.store", "false"))) {
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
	if (!rk) {
		fprintf(stderr, "bench_kafka: %s\n", err);
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rd_kafka_poll_set_consumer(rk);
	topics = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(topics, o->topic, RD_KAFKA_PARTITION_UA);
	if (rd_kafka_subscribe(rk, topics) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		fprintf(stderr, "bench_kafka: cannot subscribe to %s\n", o->topic);
		rd_kafka_topic_partition_list_destroy(topics);
		rd_kafka_destroy(rk);
		return NULL;
	}
	rd_kafka_topic_partition_list_destroy(topics);
	return rk;
}

/* The durable baseline's inbox (-d): the database, its insert, and the
 * messages of the open transaction, whose offsets are stored at commit. */
struct inbox {
	rd_kafka_t *rk;
	sqlite3 *db;
	sqlite3_stmt *ins;
	rd_kafka_message_t *held[INBOX_BATCH];
	int n;
};

static int inbox_fail(struct inbox *ib, const char *what)
{
	fprintf(stderr, "bench_kafka: inbox %s: %s\n", what, sqlite3_errmsg(ib->db));
	return -1;
}

static int inbox_open(struct inbox *ib, const char *path)
{
	memset(ib, 0, sizeof *ib);
	if (sqlite3_open(path, &ib->db) != SQLITE_OK)
		return inbox_fail(ib, path);
	if (sqlite3_exec(ib->db,
	                 "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
	                 "CREATE TABLE IF NOT EXISTS inbox(event_id TEXT PRIMARY KEY, topic TEXT,"
	                 " \"partition\" INTEGER, \"offset\" INTEGER);",
	                 NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(ib->db,
	                       "INSERT INTO inbox VALUES(?, ?, ?, ?) ON CONFLICT(event_id) DO NOTHING",
	                       -1, &ib->ins, NULL) != SQLITE_OK)
		return inbox_fail(ib, path);
	return 0;
}

/* Commit the open transaction, then store its messages' offsets (the next
 * one to read in each partition). */
static int inbox_commit(struct inbox *ib)
{
	rd_kafka_topic_partition_list_t *l;
	if (!ib->n)
		return 0;
	if (sqlite3_exec(ib->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		return inbox_fail(ib, "commit");
	l = rd_kafka_topic_partition_list_new(4);
	for (int i = 0; i < ib->n; i++) {
		const rd_kafka_message_t *m = ib->held[i];
		const char *topic = rd_kafka_topic_name(m->rkt);
		rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(l, topic,
		                                                                   m->partition);
		if (!p)
			p = rd_kafka_topic_partition_list_add(l, topic, m->partition);
		if (m->offset + 1 > p->offset)
			p->offset = m->offset + 1;
	}
	if (rd_kafka_offsets_store(ib->rk, l) != RD_KAFKA_RESP_ERR_NO_ERROR)
		fprintf(stderr, "bench_kafka: storing offsets failed\n");
	rd_kafka_topic_partition_list_destroy(l);
	for (int i = 0; i < ib->n; i++)
		rd_kafka_message_destroy(ib->held[i]);
	ib->n = 0;
	return 0;
}

/* Record `m` (takes it); commits every INBOX_BATCH messages. */
static int inbox_add(struct inbox *ib, rd_kafka_message_t *m)
{
	rd_kafka_headers_t *h = NULL;
	const void *id = NULL;
	size_t len = 0;
	int rc;
	if (!ib->n && sqlite3_exec(ib->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
		rd_kafka_message_destroy(m);
		return inbox_fail(ib, "begin");
	}
	ib->held[ib->n++] = m;
	if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR || !h ||
	    rd_kafka_header_get_last(h, "ce_id", &id, &len) != RD_KAFKA_RESP_ERR_NO_ERROR || !id) {
		fprintf(stderr, "bench_kafka: a message without ce_id at offset %" PRId64 "\n",
		        m->offset);
		return -1;
	}
	sqlite3_bind_text(ib->ins, 1, id, (int)len, SQLITE_STATIC);
	sqlite3_bind_text(ib->ins, 2, rd_kafka_topic_name(m->rkt), -1, SQLITE_STATIC);
	sqlite3_bind_int(ib->ins, 3, m->partition);
	sqlite3_bind_int64(ib->ins, 4, m->offset);
	rc = sqlite3_step(ib->ins);
	sqlite3_reset(ib->ins);
	if (rc != SQLITE_DONE)
		return inbox_fail(ib, "insert");
	return ib->n == INBOX_BATCH ? inbox_commit(ib) : 0;
}

static void inbox_close(struct inbox *ib)
{
	for (int i = 0; i < ib->n; i++)
		rd_kafka_message_destroy(ib->held[i]);
	sqlite3_finalize(ib->ins);
	sqlite3_close(ib->db);
}

static int cmd_consume(const struct opts *o)
{
	rd_kafka_t *rk;
	struct inbox ib;
	long n = 0;
	size_t bytes = 0;
	int64_t first = 0, last = 0, deadline;
	int failed = 0;
	if (!o->topic || !o->group || o->count <= 0)
		usage();
	if (o->db && inbox_open(&ib, o->db)) {
		inbox_close(&ib);
		return -1;
	}
	if (!(rk = new_consumer(o, "earliest"))) {
		if (o->db)
			inbox_close(&ib);
		return -1;
	}
	ib.rk = rk;
	deadline = now_us() + (int64_t)o->wait_s * 1000000;
	while (n < o->count && !failed && !stop_requested && now_us() < deadline) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		if (!m)
			continue;
		if (m->err) {
			if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				fprintf(stderr, "bench_kafka: consume: %s\n",
				        rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			continue;
		}
		bytes += m->len;
		if (o->db)
			failed = inbox_add(&ib, m) != 0;
		else
			rd_kafka_message_destroy(m);
		if (!failed && ++n == o->count && o->db)
			failed = inbox_commit(&ib) != 0; /* the last one is durable too */
		last = now_us();
		if (n == 1)
			first = last;
	}
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	if (o->db)
		inbox_close(&ib);
	printf("{\"count\":%ld,\"consumed\":%ld,\"bytes\":%zu,\"seconds\":%.6f}\n", o->count, n,
	       bytes, (double)(last - first) / 1e6);
	if (n < o->count)
		fprintf(stderr, "bench_kafka: only %ld of %ld messages within %ld s\n", n, o->count,
		        o->wait_s);
	return n == o->count ? 0 : -1;
}

/* ------------------------------------------------------------------- e2e */

#define E2E_STAMP "bench_sent_us" /* header: the send time, CLOCK_MONOTONIC µs */
#define E2E_WARMUP_S 30

struct e2e {
	const struct opts *o;
	rd_kafka_t *producer;
	atomic_int warm;    /* the consumer has had a message: the measured run may begin */
	atomic_long sent;   /* measured messages produced */
	atomic_int done;    /* the producer is through (sent is final) */
	int failed;
};

static int64_t sleep_until_us(int64_t t)
{
	int64_t now;
	while ((now = now_us()) < t) {
		int64_t left = t - now;
		struct timespec ts = {left / 1000000, (left % 1000000) * 1000};
		nanosleep(&ts, NULL);
	}
	return now;
}

/* Produce one message stamped with its send time, or (stamp < 0) a warm-up
 * message stamped -1, which the consumer takes only as a sign that it is
 * assigned. */
static int e2e_produce(struct e2e *e, long seq, char *value, int64_t stamp)
{
	char key[32];
	size_t vlen = bench_event_value(value, (size_t)e->o->size + 1, seq, (size_t)e->o->size);
	rd_kafka_resp_err_t err;
	bench_event_key(key, sizeof key, seq);
	if (stamp >= 0)
		stamp = now_us();
	err = rd_kafka_producev(e->producer, RD_KAFKA_V_TOPIC(e->o->topic),
	                        RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE(value, vlen),
	                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
	                        RD_KAFKA_V_HEADER(E2E_STAMP, &stamp, (ssize_t)sizeof stamp),
	                        RD_KAFKA_V_END);
	rd_kafka_poll(e->producer, 0);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		return 0;
	fprintf(stderr, "bench_kafka: e2e: produce: %s\n", rd_kafka_err2str(err));
	return -1;
}

static void *e2e_producer(void *arg)
{
	struct e2e *e = arg;
	char *value = malloc((size_t)e->o->size + 1);
	int64_t t0, deadline = now_us() + (int64_t)E2E_WARMUP_S * 1000000;
	long seq = 0;
	if (!value) {
		e->failed = 1;
		atomic_store(&e->done, 1);
		return NULL;
	}
	/* Warm-up: until the consumer has one (assigned, its position found). */
	while (!atomic_load(&e->warm) && !stop_requested && now_us() < deadline) {
		if (e2e_produce(e, seq++, value, -1)) {
			e->failed = 1;
			break;
		}
		sleep_until_us(now_us() + 20000);
	}
	if (!atomic_load(&e->warm) && !e->failed) {
		fprintf(stderr, "bench_kafka: e2e: no message came through within %d s\n",
		        E2E_WARMUP_S);
		e->failed = 1;
	}
	t0 = now_us();
	for (long i = 0; i < e->o->count && !e->failed && !stop_requested; i++) {
		sleep_until_us(t0 + i * 1000000 / e->o->rate);
		if (e2e_produce(e, seq++, value, 0))
			e->failed = 1;
		else
			atomic_fetch_add(&e->sent, 1);
	}
	rd_kafka_flush(e->producer, FLUSH_TIMEOUT_MS);
	free(value);
	atomic_store(&e->done, 1);
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* Nearest-rank percentile `p` of the sorted v[0..n), in ms (as run.py's). */
static double pct_ms(const int64_t *v, long n, int p)
{
	long k = ((long)p * n + 99) / 100 - 1;
	return (double)v[k < 0 ? 0 : k] / 1000.0;
}

static int cmd_e2e(const struct opts *o)
{
	struct produce_state st = {0};
	struct e2e e = {.o = o};
	int64_t *lat;
	long n = 0;
	int64_t quiet_since = 0;
	rd_kafka_t *rk;
	pthread_t th;
	int rc;
	if (!o->topic || !o->group || o->count <= 0 || o->rate <= 0 ||
	    o->size < BENCH_EVENT_MIN_SIZE)
		usage();
	if (!(lat = malloc((size_t)o->count * sizeof *lat)))
		return -1;
	if (!(e.producer = new_producer(o, &st))) {
		free(lat);
		return -1;
	}
	if (!(rk = new_consumer(o, "latest"))) { /* what is sent from now on */
		rd_kafka_destroy(e.producer);
		free(lat);
		return -1;
	}
	warm_up(e.producer, o->topic);
	if ((rc = pthread_create(&th, NULL, e2e_producer, &e)) != 0) {
		fprintf(stderr, "bench_kafka: e2e: thread: %s\n", strerror(rc));
		rd_kafka_destroy(rk);
		rd_kafka_destroy(e.producer);
		free(lat);
		return -1;
	}
	/* Until every measured message has come, or nothing has for 10 s after
	 * the producer was through. */
	while (!stop_requested) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		int64_t now = now_us();
		const void *v;
		size_t vn;
		if (atomic_load(&e.done)) {
			if (n >= atomic_load(&e.sent))
				break;
			if (!quiet_since)
				quiet_since = now;
			else if (now - quiet_since > 10000000)
				break;
		}
		if (!m)
			continue;
		if (m->err) {
			if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				fprintf(stderr, "bench_kafka: e2e: %s\n", rd_kafka_message_errstr(m));
		} else {
			rd_kafka_headers_t *h = NULL;
			atomic_store(&e.warm, 1);
			if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
			    rd_kafka_header_get_last(h, E2E_STAMP, &v, &vn) ==
			        RD_KAFKA_RESP_ERR_NO_ERROR &&
			    v && vn == sizeof(int64_t) && n < o->count) {
				int64_t sent;
				memcpy(&sent, v, sizeof sent);
				if (sent >= 0) {
					lat[n++] = now - sent;
					quiet_since = 0;
				}
			}
		}
		rd_kafka_message_destroy(m);
	}
	pthread_join(th, NULL);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	rd_kafka_destroy(e.producer);
	rc = e.failed || n == 0 || n < atomic_load(&e.sent) ? -1 : 0;
	if (n < atomic_load(&e.sent))
		fprintf(stderr, "bench_kafka: e2e: %ld of %ld messages came through\n", n,
		        atomic_load(&e.sent));
	if (n > 0) {
		qsort(lat, (size_t)n, sizeof *lat, cmp_i64);
		printf("{\"count\":%ld,\"received\":%ld,\"rate\":%ld,\"p50_ms\":%.3f,"
		       "\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
		       o->count, n, o->rate, pct_ms(lat, n, 50), pct_ms(lat, n, 99),
		       (double)lat[n - 1] / 1000.0);
	}
	free(lat);
	return rc;
}

int main(int argc, char **argv)
{
	struct opts o;
	const char *cmd;
	int first;
	if (argc < 2)
		usage();
	cmd = argv[1];
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (!strcmp(cmd, "version")) {
		printf("%s\n", rd_kafka_version_str());
		return 0;
	}
	first = parse_opts(argc - 1, argv + 1, &o) + 1;
	if (!strcmp(cmd, "create")) {
		if (first >= argc)
			usage();
		return cmd_create(&o, argv + first, argc - first) ? 1 : 0;
	}
	if (!strcmp(cmd, "produce"))
		return cmd_produce(&o) ? 1 : 0;
	if (!strcmp(cmd, "consume"))
		return cmd_consume(&o) ? 1 : 0;
	if (!strcmp(cmd, "e2e"))
		return cmd_e2e(&o) ? 1 : 0;
	usage();
	return 2;
}
