/* bench: the evhost side of scripts/bench's publish, consume and end-to-end
 * measurements. Not installed; built with the benchmarks.
 *
 * POST /bench/publish?n=N&per_tx=T
 *     publishes N events (bench_event.h: the same key, value and size the
 *     bare librdkafka producer sends) to `publish.topic`, T per storage
 *     transaction, through the SDK (outbox + relay); answers once all are
 *     committed: {"published":N,"ms":...}.
 * GET /bench/outbox
 *     {"empty":true|false}: whether every outbox row was acknowledged by
 *     Kafka (and deleted), so the caller can time publishing until delivery.
 *     It looks at one row, not COUNT(*): polled often while the relay works,
 *     a scan of the table would slow down what it measures.
 * GET /bench/stats
 *     {"consumed":N,"first_us":..,"last_us":..,"e2e_us":[...]}: events
 *     handled from `consume.topic` (wall-clock µs of the first and the last),
 *     and for every event from `e2e.topic` whose data has a member "t" (a
 *     client's wall-clock send time in µs) the delay until its handler ran.
 * POST /bench/reset
 *     forgets those statistics.
 *
 * Handlers do no work of their own beyond counting, so what is measured is
 * the host's path: the consumer, the inbox de-duplication in a storage
 * transaction, and the offset commit. */
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <evhost/evhost.h>

#include "../bench_event.h"

#define MAX_EVENTS_PER_CALL 10000000L
#define MAX_PER_TX 10000L

static const evh_config_key bench_config[] = {
    {"publish.topic", EVH_CFG_STRING, "bench.events", 0, "topic of POST /bench/publish"},
    {"publish.size", EVH_CFG_INT, "256", 0, "bytes of each published event's value"},
    {"consume.topic", EVH_CFG_STRING, NULL, 0, "topic whose events are counted"},
    {"e2e.topic", EVH_CFG_STRING, NULL, 0, "topic whose events' delay is recorded"},
    {"e2e.max_samples", EVH_CFG_INT, "200000", 0, "delays kept until the next reset"},
    {NULL, 0, NULL, 0, NULL},
};

typedef struct bench {
	evh_plugin *p;
	const char *topic;
	size_t size;
	pthread_mutex_t mu; /* guards what follows: handlers write, HTTP reads */
	int64_t consumed, first_us, last_us;
	int64_t *e2e_us;
	size_t ne2e, max_e2e;
} bench;

static int64_t wall_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static long query_long(evh_request *req, const char *name, long dflt)
{
	const char *v = evh_req_query(req, name);
	char *end;
	long n;
	if (!v)
		return dflt;
	n = strtol(v, &end, 10);
	return *end || end == v ? -1 : n;
}

/* One transaction of `count` events starting at `seq`. */
static int publish_batch(bench *b, long seq, long count, char *value)
{
	char key[32];
	evh_tx *tx;
	int rc = evh_tx_begin(b->p, &tx);
	if (rc != EVH_OK)
		return rc;
	for (long i = seq; i < seq + count && rc == EVH_OK; i++) {
		size_t len = bench_event_value(value, b->size + 1, i, b->size);
		bench_event_key(key, sizeof key, i);
		rc = evh_publish(b->p, tx, b->topic, key, BENCH_EVENT_TYPE, value, len);
	}
	if (rc != EVH_OK) {
		evh_tx_rollback(tx);
		return rc;
	}
	return evh_tx_commit(tx);
}

static int route_publish(evh_request *req, evh_response *resp, void *ud)
{
	bench *b = ud;
	long n = query_long(req, "n", 1000), per_tx = query_long(req, "per_tx", 100);
	int64_t t0 = wall_us();
	char json[128], *value;
	int rc = EVH_OK;
	if (n < 1 || n > MAX_EVENTS_PER_CALL)
		return evh_resp_problem(resp, 422, "validation", NULL, "n must be 1 to 10000000",
		                        "n");
	if (per_tx < 1 || per_tx > MAX_PER_TX)
		return evh_resp_problem(resp, 422, "validation", NULL, "per_tx must be 1 to 10000",
		                        "per_tx");
	if (!(value = malloc(b->size + 1)))
		return EVH_ENOMEM;
	for (long seq = 0; seq < n && rc == EVH_OK; seq += per_tx)
		rc = publish_batch(b, seq, seq + per_tx <= n ? per_tx : n - seq, value);
	free(value);
	if (rc == EVH_EFULL)
		return evh_resp_problem(resp, 503, "unavailable", NULL, "the outbox is full", NULL);
	if (rc != EVH_OK)
		return rc;
	snprintf(json, sizeof json, "{\"published\":%ld,\"ms\":%.3f}", n,
	         (double)(wall_us() - t0) / 1000.0);
	return evh_resp_json(resp, 200, json, strlen(json));
}

static int route_outbox(evh_request *req, evh_response *resp, void *ud)
{
	bench *b = ud;
	evh_tx *tx;
	evh_rows *rows;
	int empty = 0;
	char json[64];
	int rc;
	(void)req;
	if ((rc = evh_tx_begin(b->p, &tx)) != EVH_OK)
		return rc;
	rc = evh_query(tx, "SELECT seq FROM evh_outbox ORDER BY seq LIMIT 1", NULL, 0, &rows);
	if (rc == EVH_OK) {
		int next = evh_rows_next(rows);
		if (next < 0)
			rc = next;
		empty = next == 0;
		evh_rows_close(rows);
	}
	evh_tx_rollback(tx);
	if (rc != EVH_OK)
		return rc;
	snprintf(json, sizeof json, "{\"empty\":%s}", empty ? "true" : "false");
	return evh_resp_json(resp, 200, json, strlen(json));
}

/* {"consumed":..,"first_us":..,"last_us":..,"e2e_us":[...]}, built under the lock. */
static char *stats_json(bench *b, size_t *len)
{
	size_t cap = 128 + b->ne2e * 21, n;
	char *s = malloc(cap);
	if (!s)
		return NULL;
	n = (size_t)snprintf(s, cap,
	                     "{\"consumed\":%" PRId64 ",\"first_us\":%" PRId64
	                     ",\"last_us\":%" PRId64 ",\"e2e_us\":[",
	                     b->consumed, b->first_us, b->last_us);
	for (size_t i = 0; i < b->ne2e; i++)
		n += (size_t)snprintf(s + n, cap - n, "%s%" PRId64, i ? "," : "", b->e2e_us[i]);
	n += (size_t)snprintf(s + n, cap - n, "]}");
	*len = n;
	return s;
}

static int route_stats(evh_request *req, evh_response *resp, void *ud)
{
	bench *b = ud;
	size_t len = 0;
	char *json;
	int rc;
	(void)req;
	pthread_mutex_lock(&b->mu);
	json = stats_json(b, &len);
	pthread_mutex_unlock(&b->mu);
	if (!json)
		return EVH_ENOMEM;
	rc = evh_resp_json(resp, 200, json, len);
	free(json);
	return rc;
}

static int route_reset(evh_request *req, evh_response *resp, void *ud)
{
	bench *b = ud;
	(void)req;
	pthread_mutex_lock(&b->mu);
	b->consumed = b->first_us = b->last_us = 0;
	b->ne2e = 0;
	pthread_mutex_unlock(&b->mu);
	evh_resp_status(resp, 204);
	return EVH_OK;
}

static evh_event_result on_consume(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud)
{
	bench *b = ud;
	int64_t now = wall_us();
	(void)p, (void)ev, (void)tx;
	pthread_mutex_lock(&b->mu);
	if (!b->consumed++)
		b->first_us = now;
	b->last_us = now;
	pthread_mutex_unlock(&b->mu);
	return EVH_EVENT_OK;
}

/* The send time a client put in the event's data as member "t" (µs), or 0. */
static int64_t sent_at(const evh_event *ev)
{
	size_t len;
	const char *data = evh_event_data(ev, &len), *t;
	if (!data || !(t = strstr(data, "\"t\":")))
		return 0;
	return (int64_t)strtod(t + 4, NULL);
}

static evh_event_result on_e2e(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud)
{
	bench *b = ud;
	int64_t now = wall_us(), t = sent_at(ev);
	(void)p, (void)tx;
	if (t <= 0)
		return EVH_EVENT_OK; /* not one of the benchmark's requests */
	pthread_mutex_lock(&b->mu);
	if (b->ne2e < b->max_e2e)
		b->e2e_us[b->ne2e++] = now - t;
	pthread_mutex_unlock(&b->mu);
	return EVH_EVENT_OK;
}

static int subscribe(evh_plugin *p, const char *topic, evh_event_handler fn, bench *b)
{
	evh_subscription s;
	if (!topic || !*topic)
		return EVH_OK;
	memset(&s, 0, sizeof s);
	s.struct_size = sizeof s;
	s.topic = topic;
	s.handler = fn;
	s.ud = b;
	return evh_subscribe(p, &s);
}

static int bench_init(evh_plugin *p, void **state)
{
	bench *b = calloc(1, sizeof *b);
	int64_t size = evh_config_int(p, "publish.size", 256);
	int64_t max = evh_config_int(p, "e2e.max_samples", 200000);
	if (!b)
		return EVH_ENOMEM;
	*state = b;
	pthread_mutex_init(&b->mu, NULL);
	b->p = p;
	b->topic = evh_config_str(p, "publish.topic");
	if (size < BENCH_EVENT_MIN_SIZE || size > 1048576 || max < 1 || max > 100000000) {
		evh_log(p, EVH_LOG_ERROR, "publish.size must be %d to 1048576 and e2e.max_samples "
		                          "1 to 100000000",
		        BENCH_EVENT_MIN_SIZE);
		return EVH_EINVAL;
	}
	b->size = (size_t)size;
	b->max_e2e = (size_t)max;
	if (!(b->e2e_us = malloc(b->max_e2e * sizeof *b->e2e_us)))
		return EVH_ENOMEM;
	if (evh_http_route(p, "POST", "/bench/publish", route_publish, b) ||
	    evh_http_route(p, "GET", "/bench/outbox", route_outbox, b) ||
	    evh_http_route(p, "GET", "/bench/stats", route_stats, b) ||
	    evh_http_route(p, "POST", "/bench/reset", route_reset, b))
		return EVH_ERR;
	if (subscribe(p, evh_config_str(p, "consume.topic"), on_consume, b) ||
	    subscribe(p, evh_config_str(p, "e2e.topic"), on_e2e, b))
		return EVH_ERR;
	return EVH_OK;
}

static void bench_fini(evh_plugin *p, void *state)
{
	bench *b = state;
	(void)p;
	if (!b)
		return;
	pthread_mutex_destroy(&b->mu);
	free(b->e2e_us);
	free(b);
}

EVH_PLUGIN("bench", "1.0.0", "scripts/bench: publish, consume and end-to-end probes",
           bench_config, bench_init, bench_fini)
