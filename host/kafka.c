/* Kafka: the shared idempotent producer, the embedded mock cluster, and one
 * consumer thread per plugin that dispatches events to its handlers.
 *
 * Delivery contract of a consumer (see DESIGN.md "Delivery"):
 *  - an offset is stored only after the handler's transaction (with the
 *    inbox record of the event) committed, or after the message reached the
 *    dead-letter topic; stored offsets are committed every second or every
 *    100 messages, and synchronously on revoke and stop;
 *  - group commit: the messages already fetched are handled in batches, one
 *    storage transaction (one fsync) per batch and a savepoint per event, so
 *    a RETRY or REJECT undoes only its own event's writes (see handle_batch);
 *  - RETRY pauses only the message's partition; the message is kept in a
 *    retry slot and dispatched again when its backoff is due. When it is
 *    finished the partition is sought to the next offset and resumed, so
 *    anything fetched (and discarded) meanwhile is fetched again;
 *  - a revoked partition drops its retry: the new owner starts from the
 *    committed offset. A dead letter of it on its way is waited for first
 *    (DLQ_WAIT_REVOKE_MS), so that the new owner does not write it again;
 *  - messages are handed to handlers in timestamp order across the
 *    plugin's partitions (see "ordered dispatch"), so events about one
 *    entity spread over several topics keep their order in a backlog. */
#define _GNU_SOURCE /* SCHED_IDLE */
#include "kafka.h"

#include <dirent.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "clock.h"
#include "crash.h"
#include "events.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "rfc3339.h"
#include "stopguard.h"
#include "textbuf.h"
#include "trace.h"

#define KAFKA_LOG "kafka"
/* [kafka] retry.*'s defaults (config.c's), for settings that carry none:
 * the parsed ones always do, each at least 1. */
#define DEFAULT_MAX_ATTEMPTS 5
#define DEFAULT_BACKOFF_MS 200
#define DEFAULT_BACKOFF_MAX_MS 30000
#define POLL_MS 100
#define COMMIT_EVERY_MS 1000
#define COMMIT_EVERY_MSGS 100
/* The longest a cooperative rebalance's second round holds periodic commits
 * (coop_assigns_due). */
#define COOP_COMMIT_HOLD_MAX_MS 30000

/* The group's members are counted this long after an assignment, with
 * this bound on the ask (a DescribeGroups to the brokers). */
#define MEMBERS_CHECK_AFTER_MS 3000
#define MEMBERS_CHECK_TIMEOUT_MS 2000

#define SEEK_TIMEOUT_MS 5000
#define REPLAY_SEEK_TIMEOUT_MS 15000 /* a replay's seek: an admin waits, not the flow */
#define DLQ_WAIT_STOPPING_MS 30000 /* a stop's wait for dead letters, unless told a deadline */
#define DLQ_WAIT_REVOKE_MS 5000 /* a rebalance's wait for the revoked partitions' dead letters */
#define DLQ_RETRY_FIRST_MS 1000 /* after a failed dead letter; doubled up to retry.backoff_max_ms */
#define DLQ_RETRY_MIN_MS 100    /* ...but never less than this */
#define DLQ_INLINE_MS 500       /* a dead letter's wait before its partition is parked */
#define DLQ_CHECK_MS 20         /* how often a parked dead letter in flight is looked at */
#define TOPIC_WARN_EVERY_MS 60000
#define DLQ_TRUNCATE_BYTES 65536
#define ORDER_WAIT_MS 1000  /* how long a partition with data on its way holds others */
#define ORDER_START_WAIT_MS 5000 /* ...and one not fetched from yet */
#define ORDER_BUF_MAX 10000 /* buffered messages beyond which no partition is waited for */
#define FILL_MAX 500        /* messages taken from librdkafka per round */
#define BATCH_MAX 256       /* events handled in one storage transaction... */
#define BATCH_MAX_US 5000   /* ...or for at most this long (latency) */
#define MOCK_THREADS 8      /* broker threads of the embedded cluster's client */
#define MAX_TASKS 256       /* threads looked at to find them */
#define TOPIC_HANDLES_MAX 4096 /* topics with a kept producer handle (see topic_handle) */
/* What an event's message holds besides its key and data, at most: the
 * headers produce_row adds (values from a ce_meta, whose id is the host's
 * 36-character UUID, the seq's 20 digits, the names) with two length
 * varints each, and the record's own overhead. */
#define EVENT_OVERHEAD_MAX 1024
#define MESSAGE_MAX_BYTES_MIN (2 * EVENT_OVERHEAD_MAX) /* rdkafka.message.max.bytes */

struct kafka {
	rd_kafka_t *producer;
	rd_kafka_queue_t *reports; /* the queue rd_kafka_poll serves (kafka_wake_producer) */
	rd_kafka_t *mock_rk; /* owns the mock cluster (brokers = embedded) */
	rd_kafka_mock_cluster_t *mock;
	pid_t mock_tids[MOCK_THREADS]; /* its client's broker threads (see idle_mock_threads) */
	size_t nmock_tids;
	char *bootstraps;
	const settings *set; /* for clients made later (kafka_reader_conf) */
	size_t max_message_bytes; /* the producer's message.max.bytes */
	/* The producer's topic handles by name: an open-addressing table of
	 * `topics_cap` slots (a power of two), `ntopics` used. */
	pthread_mutex_t topics_mu;
	struct topic_slot {
		char *name;
		rd_kafka_topic_t *rkt;
	} *topics;
	size_t ntopics, topics_cap;
	/* kafka_reachable_shared: the last answer, when it was had (0: never),
	 * and whether a thread is asking the cluster now. */
	pthread_mutex_t probe_mu;
	int probe_busy, probe_last;
	int64_t probe_at_us;
};

/* ------------------------------------------------------------- helpers */

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static uint32_t random_u32(void)
{
	uint32_t r;
	if (getrandom(&r, sizeof r, 0) == (ssize_t)sizeof r)
		return r;
	return (uint32_t)clock_mono_ms(); /* jitter only: predictability is harmless */
}

int kafka_retry_delay_ms(int backoff_ms, int backoff_max_ms, int attempt, uint32_t rnd)
{
	int64_t ceiling;
	if (backoff_ms < 1)
		backoff_ms = 1;
	if (backoff_max_ms < backoff_ms)
		backoff_max_ms = backoff_ms;
	ceiling = backoff_ms;
	for (int i = 1; i < attempt && ceiling < backoff_max_ms; i++)
		ceiling *= 2;
	if (ceiling > backoff_max_ms)
		ceiling = backoff_max_ms;
	return (int)(rnd % (uint32_t)(ceiling + 1));
}

/* librdkafka levels are syslog levels. Its "FAIL" lines (a broker
 * connection failed) repeat what the error callback reports at warn. */
static void rdk_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	evh_log_level l = level <= 3 ? EVH_LOG_ERROR
	                  : level == 4 ? EVH_LOG_WARN
	                  : level <= 6 ? EVH_LOG_INFO
	                               : EVH_LOG_DEBUG;
	if (!strcmp(fac, "FAIL"))
		l = EVH_LOG_DEBUG;
	log_msg(l, KAFKA_LOG, "%s: %s: %s", rd_kafka_name(rk), fac, buf);
}

/* The handle that owns the mock cluster is never used as a client, so its
 * own complaints (e.g. "No bootstrap.servers configured") only confuse. */
static void mock_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	log_msg(level <= 3 ? EVH_LOG_ERROR : EVH_LOG_DEBUG, KAFKA_LOG, "%s: %s: %s",
	        rd_kafka_name(rk), fac, buf);
}

static void rdk_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	char buf[512];
	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		rd_kafka_fatal_error(rk, buf, sizeof buf);
		log_error(KAFKA_LOG, "%s: fatal error, client unusable: %s", rd_kafka_name(rk),
		          buf);
		return;
	}
	log_warn(KAFKA_LOG, "%s: %s: %s", rd_kafka_name(rk), rd_kafka_err2name(err), reason);
}

static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *err,
                    size_t errlen)
{
	char msg[512];
	if (rd_kafka_conf_set(conf, key, value, msg, sizeof msg) == RD_KAFKA_CONF_OK)
		return 0;
	snprintf(err, errlen, "[kafka] cannot set %s: %s", key, msg);
	return -1;
}

static int key_in(const char *key, const char *const *list)
{
	for (; *list; list++)
		if (!strcmp(key, *list))
			return 1;
	return 0;
}

/* Which kind of client each librdkafka property is for, from the linked
 * librdkafka's own table (rd_kafka_conf_properties_show: "name | C/P |
 * ..."), read once: the properties only a consumer ('C') or only a producer
 * ('P') takes. */
struct prop_kind {
	char *name;
	char kind;
};
static struct prop_kind *prop_kinds;
static size_t nprop_kinds;
static pthread_once_t prop_kinds_once = PTHREAD_ONCE_INIT;

static void prop_kinds_read(void)
{
	char *table = NULL, *line, *next;
	size_t len = 0, cap = 0;
	FILE *f = open_memstream(&table, &len);
	if (!f)
		return; /* every property to every client, as librdkafka would */
	rd_kafka_conf_properties_show(f);
	if (fclose(f) != 0) {
		free(table);
		return;
	}
	for (line = table; line; line = next) {
		char *bar, *kind, *end;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		bar = strchr(line, '|');
		if (!bar)
			continue;
		for (end = bar; end > line && end[-1] == ' '; end--)
			;
		*end = '\0';
		for (kind = bar + 1; *kind == ' '; kind++)
			;
		if ((*kind != 'C' && *kind != 'P') || (kind[1] != ' ' && kind[1] != '|') ||
		    !*line)
			continue;
		if (nprop_kinds == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct prop_kind *n = realloc(prop_kinds, ncap * sizeof *n);
			if (!n)
				break;
			prop_kinds = n;
			cap = ncap;
		}
		prop_kinds[nprop_kinds].name = strdup(line);
		if (!prop_kinds[nprop_kinds].name)
			break;
		prop_kinds[nprop_kinds++].kind = *kind;
	}
	free(table);
}

int kafka_property_for(const char *name, rd_kafka_type_t type)
{
	pthread_once(&prop_kinds_once, prop_kinds_read);
	for (size_t i = 0; i < nprop_kinds; i++)
		if (!strcmp(prop_kinds[i].name, name))
			return prop_kinds[i].kind == (type == RD_KAFKA_PRODUCER ? 'P' : 'C');
	return 1;
}

/* Apply the [kafka] rdkafka.* passthrough keys to a client of `type`,
 * except `owned` ones, which evhost sets itself because delivery guarantees
 * depend on them, and those for the other kind of client: librdkafka would
 * warn that it ignores them (CONFWARN), yet they are meant for the other. */
static int conf_passthrough(rd_kafka_conf_t *conf, rd_kafka_type_t type, const settings *s,
                            const char *const *owned, char *err, size_t errlen)
{
	char msg[512];
	for (size_t i = 0; i < s->nrdkafka; i++) {
		const char *key = s->rdkafka[i].key;
		if (key_in(key, owned)) {
			log_warn(KAFKA_LOG, "[kafka] rdkafka.%s ignored: evhost sets it itself",
			         key);
			continue;
		}
		if (!kafka_property_for(key, type))
			continue;
		if (rd_kafka_conf_set(conf, key, s->rdkafka[i].value, msg, sizeof msg) !=
		    RD_KAFKA_CONF_OK) {
			snprintf(err, errlen, "[kafka] rdkafka.%s: %s", key, msg);
			return -1;
		}
	}
	return 0;
}

/* ------------------------------------------------------------- checks */

/* What evhost sets itself on its clients (rdkafka.* of these is ignored). */
static const char *const producer_owned[] = {
    "bootstrap.servers", "metadata.broker.list", "enable.idempotence", "acks",
    "request.required.acks", NULL};
static const char *const consumer_owned[] = {
    "bootstrap.servers", "metadata.broker.list", "group.id", "enable.auto.commit",
    "enable.auto.offset.store", NULL};

static void rdk_quiet_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk, (void)level, (void)fac, (void)buf;
}

/* A throwaway client of `type` made from the passthrough keys, with no
 * bootstrap servers, so it contacts nothing: librdkafka loads certificates
 * and keys and checks SASL and the combination of settings when a client
 * is made, not when a key is set. 0, or -1 with librdkafka's reason. */
static int check_client(const settings *s, rd_kafka_type_t type, char *err, size_t errlen)
{
	rd_kafka_t *rk;
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_conf_set_log_cb(conf, rdk_quiet_log_cb);
	if (conf_passthrough(conf, type, s,
	                     type == RD_KAFKA_PRODUCER ? producer_owned : consumer_owned, err,
	                     errlen) ||
	    (type == RD_KAFKA_CONSUMER &&
	     conf_set(conf, "group.id", "evhost.check-config", err, errlen))) {
		rd_kafka_conf_destroy(conf);
		return -1;
	}
	rk = rd_kafka_new(type, conf, err, errlen);
	if (rk) {
		rd_kafka_destroy(rk);
		return 0;
	}
	rd_kafka_conf_destroy(conf);
	return -1;
}

/* Where `key` appears in `text` as a whole name (not inside a longer one:
 * "ssl.key.location" in "ssl.key.location.x"), or NULL. */
static const char *key_named(const char *text, const char *key)
{
	size_t n = strlen(key);
	for (const char *at = strstr(text, key); at; at = strstr(at + 1, key)) {
		char before = at > text ? at[-1] : ' ', after = at[n];
		if (!isalnum((unsigned char)before) && before != '.' && before != '_' &&
		    !isalnum((unsigned char)after) && after != '_' &&
		    !(after == '.' && isalnum((unsigned char)at[n + 1])))
			return at;
	}
	return NULL;
}

/* librdkafka's refusal names the setting (ssl.key.location, sasl.username)
 * but not where it is set: the rdkafka.* line of the first one it names,
 * else the first rdkafka.* line's file alone. */
static void client_refused(diag *d, const settings *s, const char *what, const char *why)
{
	const rdkafka_prop *at = NULL;
	const char *first = NULL;
	for (size_t i = 0; i < s->nrdkafka; i++) {
		const char *w = key_named(why, s->rdkafka[i].key);
		if (w && (!first || w < first)) {
			first = w;
			at = &s->rdkafka[i];
		}
	}
	if (at)
		diag_add(d, at->file, at->line,
		         "[kafka] rdkafka.%s: librdkafka cannot make a %s of the rdkafka.* settings: %s",
		         at->key, what, why);
	else
		diag_add(d, s->rdkafka[0].file, 0,
		         "[kafka] librdkafka cannot make a %s of the rdkafka.* settings: %s", what, why);
}

int kafka_check_settings(const settings *s, diag *d)
{
	char msg[512];
	size_t before = diag_count(d);
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	for (size_t i = 0; i < s->nrdkafka; i++) {
		const rdkafka_prop *p = &s->rdkafka[i];
		/* Said at its line, not ignored with a warning per client at
		 * every start: the admin meant something by it. */
		if (key_in(p->key, producer_owned) || key_in(p->key, consumer_owned))
			diag_add(d, p->file, p->line,
			         "[kafka] rdkafka.%s: evhost sets it itself (its delivery guarantees "
			         "depend on it%s); remove the key",
			         p->key,
			         strstr(p->key, "servers") || strstr(p->key, "broker")
			             ? "; the brokers are [kafka] brokers"
			             : !strcmp(p->key, "group.id") ? "; a plugin's group is its group key"
			                                           : "");
		else if (rd_kafka_conf_set(conf, p->key, p->value, msg, sizeof msg) != RD_KAFKA_CONF_OK)
			diag_add(d, p->file, p->line, "[kafka] rdkafka.%s: %s", p->key, msg);
		/* The embedded cluster listens in plain text only: every client
		 * would retry its handshake for ever. */
		else if (s->embedded && !strcmp(p->key, "security.protocol") &&
		         strcasecmp(p->value, "plaintext"))
			diag_add(d, p->file, p->line,
			         "[kafka] rdkafka.security.protocol = %s: brokers = embedded speaks "
			         "plain text only (PLAINTEXT)",
			         p->value);
		/* Below this an event's headers could leave no room for its data,
		 * and kafka_max_event_bytes no bound to check events against. */
		else if (!strcmp(p->key, "message.max.bytes") &&
		         strtol(p->value, NULL, 10) < MESSAGE_MAX_BYTES_MIN)
			diag_add(d, p->file, p->line,
			         "[kafka] rdkafka.message.max.bytes = %s: at least %d (an event's "
			         "headers alone may take %d bytes)",
			         p->value, MESSAGE_MAX_BYTES_MIN, EVENT_OVERHEAD_MAX);
	}
	rd_kafka_conf_destroy(conf);
	return diag_count(d) == before ? 0 : -1;
}

int kafka_check_clients(const settings *s, diag *d)
{
	char perr[512] = "", cerr[512] = "";
	int p, c;

	if (!s->nrdkafka)
		return 0;
	p = check_client(s, RD_KAFKA_PRODUCER, perr, sizeof perr);
	c = check_client(s, RD_KAFKA_CONSUMER, cerr, sizeof cerr);
	if (p && c && !strcmp(perr, cerr)) {
		client_refused(d, s, "client", perr);
	} else {
		if (p)
			client_refused(d, s, "producer", perr);
		if (c)
			client_refused(d, s, "consumer", cerr);
	}
	return p || c ? -1 : 0;
}

/* librdkafka before 2.1.0 (Debian 12 ships 2.0.2) waits a thousandth of the
 * timeout given to rd_kafka_seek_partitions (confluentinc/librdkafka#4230): a
 * seek the broker thread takes more than 15 ms to serve, on a busy host,
 * failed as timed out. Give those versions the timeout meant. */
int kafka_seek_timeout_ms(int timeout_ms)
{
	if (rd_kafka_version() >= 0x02010000 || timeout_ms <= 0)
		return timeout_ms;
	return timeout_ms > INT_MAX / 1000 ? INT_MAX : timeout_ms * 1000;
}

static rd_kafka_error_t *seek_partitions(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *l,
                                         int timeout_ms)
{
	return rd_kafka_seek_partitions(rk, l, kafka_seek_timeout_ms(timeout_ms));
}

/* librdkafka before 2.6.1 (Debian 12 ships 2.0.2) sends a SCRAM final
 * message that Apache Kafka 4 rejects as invalid credentials
 * (confluentinc/librdkafka#4895): say so before the broker does. */
int kafka_known_issues(const settings *s)
{
	int n = 0;
	if (rd_kafka_version() >= 0x02060100)
		return 0;
	for (size_t i = 0; i < s->nrdkafka; i++) {
		const rdkafka_prop *p = &s->rdkafka[i];
		if ((!strcmp(p->key, "sasl.mechanisms") || !strcmp(p->key, "sasl.mechanism")) &&
		    !strncasecmp(p->value, "SCRAM-", 6)) {
			log_warn(KAFKA_LOG,
			         "%s:%d: rdkafka.%s = %s: librdkafka %s fails SCRAM authentication "
			         "with Apache Kafka 4 brokers (they answer 'invalid credentials'; fixed "
			         "in librdkafka 2.6.1). With Kafka 4 use PLAIN over TLS (SASL_SSL) or "
			         "mutual TLS; Kafka 3 brokers accept it",
			         p->file ? p->file : "[kafka]", p->line, p->key, p->value,
			         rd_kafka_version_str());
			n++;
		}
	}
	return n;
}

/* ------------------------------------------------------------ producer */

/* Who hears of a message's fate: at most one of the callbacks is set. */
struct kafka_dr {
	kafka_delivery_cb cb;
	kafka_delivery_pos_cb pos_cb;
	void (*msg_cb)(void *opaque, const rd_kafka_message_t *m); /* dead letters */
	void *opaque;
};

static int no_such_topic(rd_kafka_resp_err_t e)
{
	return e == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC || e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
}

/* Why a message was not delivered, for the log: what to do where the
 * broker refuses it for good (it is sent again and again meanwhile). */
static const char *delivery_error(rd_kafka_resp_err_t e)
{
	switch (e) {
	case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
	case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART: return KAFKA_NO_TOPIC;
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
		/* Or than the batch it went in: librdkafka 2.0.2 does not split a
		 * batch the broker refuses, and sends it again whole. */
		return "Broker: Message size too large: the topic's max.message.bytes is smaller "
		       "than this message; raise it (or, when every event is smaller than it, "
		       "than the batch: lower [kafka] rdkafka.batch.size below it)";
	case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
		return "Broker: Topic authorization failed: allow this client to write to the topic";
	case RD_KAFKA_RESP_ERR_INVALID_RECORD:
		/* What a compacted topic answers a message without a key; other
		 * causes (a bad timestamp) are in the broker's log. */
		return "Broker: Broker failed to validate record: a compacted topic "
		       "(cleanup.policy=compact) takes no message without a key: give the event a "
		       "key, or set the topic's cleanup.policy to delete (else the broker's log says "
		       "what it refused)";
	default: return rd_kafka_err2str(e);
	}
}

/* A message reported delivered without an offset. The broker answered
 * DUPLICATE_SEQUENCE_NUMBER, which librdkafka 2.0.2 takes for the broker
 * having written an earlier send of it, and reports as delivered ("a
 * synchronization issue or bug" if that message was never retried, its
 * source says). Seen on a new topic under load: an outbox event so
 * reported missing from its partition for good, its neighbour written in
 * its place. Taken for a failure: the outbox and a dead letter send it
 * again (consumers skip an event id they have handled: the inbox; a loss
 * is for good), a redrive reports it failed. */
static int delivered_unconfirmed(const rd_kafka_message_t *m)
{
	return m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->offset < 0;
}

#define KAFKA_UNCONFIRMED                                                                   \
	"acknowledged without an offset (the broker took it for a duplicate of an earlier " \
	"send, which may never have been written)"

/* Whether a delivery report says the message was written; if not, *error
 * says why. */
static int delivery_ok(const rd_kafka_message_t *m, const char **error)
{
	int ok = m->err == RD_KAFKA_RESP_ERR_NO_ERROR && !delivered_unconfirmed(m);
	*error = ok                          ? NULL
	         : delivered_unconfirmed(m) ? KAFKA_UNCONFIRMED
	                                    : delivery_error(m->err);
	return ok;
}

static void rdk_dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct kafka_dr *d = m->_private;
	const char *error;
	int ok = delivery_ok(m, &error);
	if (!d)
		return;
	if (d->cb)
		d->cb(d->opaque, ok, error);
	else if (d->pos_cb)
		d->pos_cb(d->opaque, ok, error, m->partition, ok ? m->offset : -1);
	else if (d->msg_cb)
		d->msg_cb(d->opaque, m);
	free(d);
}

static size_t topic_hash(const char *s)
{
	uint64_t h = 14695981039346656037u; /* FNV-1a, 64-bit */
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211u;
	return (size_t)h;
}

static struct topic_slot *topic_slot(struct topic_slot *t, size_t cap, const char *name)
{
	size_t i = topic_hash(name) & (cap - 1);
	while (t[i].name && strcmp(t[i].name, name) != 0)
		i = (i + 1) & (cap - 1);
	return &t[i];
}

/* Double the table (k->topics_mu held). */
static int topics_grow(kafka *k)
{
	size_t cap = k->topics_cap ? k->topics_cap * 2 : 64;
	struct topic_slot *t = calloc(cap, sizeof *t);
	if (!t)
		return -1;
	for (size_t i = 0; i < k->topics_cap; i++)
		if (k->topics[i].name)
			*topic_slot(t, cap, k->topics[i].name) = k->topics[i];
	free(k->topics);
	k->topics = t;
	k->topics_cap = cap;
	return 0;
}

/* The producer's handle of `topic`, made at its first use and kept until
 * kafka_stop. Making one (rd_kafka_topic_new) asks the cluster for the
 * topic's partitions at once; producing by name alone leaves a topic the
 * producer has not seen waiting for librdkafka's topic scan, once a second,
 * so the first event to every topic waited up to a second. NULL (produce by
 * name) beyond TOPIC_HANDLES_MAX topics or without memory. */
static rd_kafka_topic_t *topic_handle(kafka *k, const char *topic)
{
	struct topic_slot *slot;
	rd_kafka_topic_t *rkt = NULL;
	pthread_mutex_lock(&k->topics_mu);
	if (k->topics_cap && (slot = topic_slot(k->topics, k->topics_cap, topic))->name) {
		rkt = slot->rkt;
	} else if (k->ntopics < TOPIC_HANDLES_MAX &&
	           (2 * (k->ntopics + 1) <= k->topics_cap || topics_grow(k) == 0)) {
		slot = topic_slot(k->topics, k->topics_cap, topic);
		if ((slot->name = strdup(topic)) &&
		    (slot->rkt = rd_kafka_topic_new(k->producer, topic, NULL))) {
			rkt = slot->rkt;
			k->ntopics++;
		} else {
			free(slot->name);
			slot->name = NULL;
		}
	}
	pthread_mutex_unlock(&k->topics_mu);
	return rkt;
}

static void topics_free(kafka *k)
{
	for (size_t i = 0; i < k->topics_cap; i++) {
		if (k->topics[i].rkt)
			rd_kafka_topic_destroy(k->topics[i].rkt);
		free(k->topics[i].name);
	}
	free(k->topics);
	k->topics = NULL;
	k->ntopics = k->topics_cap = 0;
}

/* This process's threads (at most `max`), with their names; returns how
 * many. */
struct task {
	pid_t tid;
	char comm[32];
};

static size_t list_tasks(struct task *t, size_t max)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	size_t n = 0;
	while (d && n < max && (e = readdir(d))) {
		char path[300];
		FILE *f;
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
		if (!(f = fopen(path, "re")))
			continue;
		t[n].tid = (pid_t)atoi(e->d_name);
		if (!fgets(t[n].comm, sizeof t[n].comm, f))
			t[n].comm[0] = '\0';
		fclose(f);
		n++;
	}
	if (d)
		closedir(d);
	return n;
}

static int has_task(const struct task *t, size_t n, pid_t tid)
{
	for (size_t i = 0; i < n; i++)
		if (t[i].tid == tid)
			return 1;
	return 0;
}

/* Note the broker threads that came with the embedded cluster's client
 * (threads not in `before`): its internal broker and the cluster's. They
 * name themselves when they start, so this waits (briefly) for every new
 * thread to carry librdkafka's "rdk:" name. */
static void note_mock_threads(kafka *k, const struct task *before, size_t nbefore)
{
	struct task now[MAX_TASKS];
	for (int tries = 0; tries < 100; tries++) {
		size_t n = list_tasks(now, MAX_TASKS), unnamed = 0;
		k->nmock_tids = 0;
		for (size_t i = 0; i < n; i++) {
			if (has_task(before, nbefore, now[i].tid))
				continue;
			if (strncmp(now[i].comm, "rdk:", 4) != 0)
				unnamed++;
			else if (strncmp(now[i].comm, "rdk:broker", 10) == 0 &&
			         k->nmock_tids < MOCK_THREADS)
				k->mock_tids[k->nmock_tids++] = now[i].tid;
		}
		if (!unnamed)
			return;
		usleep(1000);
	}
}

static int start_mock(kafka *k, char *err, size_t errlen)
{
	struct task before[MAX_TASKS];
	size_t nbefore = list_tasks(before, MAX_TASKS);
	char msg[512];
	sigset_t all, mask;
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_conf_set_log_cb(conf, mock_log_cb);
	if (conf_set(conf, "client.id", "evhost-mock", err, errlen)) {
		rd_kafka_conf_destroy(conf);
		return -1;
	}
	k->mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, msg, sizeof msg);
	if (!k->mock_rk) {
		rd_kafka_conf_destroy(conf);
		snprintf(err, errlen, "[kafka] embedded mock cluster: %s", msg);
		return -1;
	}
	/* Its thread (created here, with this thread's mask) takes no signal:
	 * a handler run on it (a plugin's) interrupts its poll, and librdkafka's
	 * mock cluster then stops for good. librdkafka's own clients block
	 * every signal in their threads too. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &mask);
	k->mock = rd_kafka_mock_cluster_new(k->mock_rk, 1);
	pthread_sigmask(SIG_SETMASK, &mask, NULL);
	if (!k->mock) {
		snprintf(err, errlen, "[kafka] embedded mock cluster could not be created");
		return -1;
	}
	note_mock_threads(k, before, nbefore);
	k->bootstraps = strdup(rd_kafka_mock_cluster_bootstraps(k->mock));
	if (!k->bootstraps) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	log_warn(KAFKA_LOG, "brokers = embedded: librdkafka's in-process mock cluster at %s — "
	                    "nothing is durable, for demos and tests only",
	         k->bootstraps);
	return 0;
}

/* A numeric property of `conf` (0 when it has none). */
static size_t conf_size(const rd_kafka_conf_t *conf, const char *name)
{
	char v[32];
	size_t n = sizeof v;
	return rd_kafka_conf_get(conf, name, v, &n) == RD_KAFKA_CONF_OK ? strtoul(v, NULL, 10) : 0;
}

/* auto.offset.reset's value in `conf` as an offset: librdkafka's names
 * (smallest, earliest, beginning; largest, latest, end; error). */
static int64_t conf_offset_reset(const rd_kafka_conf_t *conf)
{
	static const char *const end[] = {"largest", "latest", "end", NULL};
	char v[32];
	size_t n = sizeof v;
	if (rd_kafka_conf_get(conf, "auto.offset.reset", v, &n) != RD_KAFKA_CONF_OK)
		return RD_KAFKA_OFFSET_BEGINNING;
	if (strcmp(v, "error") == 0)
		return RD_KAFKA_OFFSET_INVALID;
	return key_in(v, end) ? RD_KAFKA_OFFSET_END : RD_KAFKA_OFFSET_BEGINNING;
}

/* A message to a topic the cluster lacks fails with "unknown topic" once
 * topic.metadata.propagation.max.ms (30 s) has passed, but with "Message
 * timed out", which names no cause, when message.timeout.ms passes first:
 * an rdkafka.message.timeout.ms at or below it lowers it to half that,
 * unless rdkafka.topic.metadata.propagation.max.ms is given too. */
static int propagation_below_timeout(rd_kafka_conf_t *conf, const settings *s, char *err,
                                     size_t errlen)
{
	size_t timeout = conf_size(conf, "message.timeout.ms");
	char v[32];

	if (!timeout || conf_size(conf, "topic.metadata.propagation.max.ms") < timeout ||
	    settings_rdkafka_index(s, "topic.metadata.propagation.max.ms") >= 0)
		return 0;
	snprintf(v, sizeof v, "%zu", timeout > 1 ? timeout / 2 : 1);
	return conf_set(conf, "topic.metadata.propagation.max.ms", v, err, errlen);
}

/* The producer's message.timeout.ms is 0 (no timeout) unless the operator
 * sets rdkafka.message.timeout.ms (or delivery.timeout.ms): when queued
 * messages time out, the idempotent producer drops them and sends what is
 * queued behind them, so a broker away for longer than the timeout had a
 * key's later event written before the earlier one the relay sent again
 * (librdkafka's INTRODUCTION.md, "Idempotent Producer"). Without one, the
 * producer retries in order until the broker answers; the relay's waves
 * bound what waits in it, and a stop purges it (kafka_stop): those rows stay
 * in the outbox for the next start. */
static rd_kafka_conf_t *producer_conf(kafka *k, const settings *s, char *err, size_t errlen)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_conf_set_log_cb(conf, rdk_log_cb);
	rd_kafka_conf_set_error_cb(conf, rdk_error_cb);
	rd_kafka_conf_set_dr_msg_cb(conf, rdk_dr_msg_cb);
	rd_kafka_conf_set_opaque(conf, k);
	if (conf_set(conf, "client.id", "evhost", err, errlen) ||
	    conf_set(conf, "linger.ms", "5", err, errlen) ||
	    conf_set(conf, "message.timeout.ms", "0", err, errlen) ||
	    conf_passthrough(conf, RD_KAFKA_PRODUCER, s, producer_owned, err, errlen) ||
	    propagation_below_timeout(conf, s, err, errlen) ||
	    conf_set(conf, "bootstrap.servers", k->bootstraps, err, errlen) ||
	    conf_set(conf, "enable.idempotence", "true", err, errlen) ||
	    conf_set(conf, "acks", "all", err, errlen)) {
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	return conf;
}

int kafka_start(kafka **out, const settings *s, char *err, size_t errlen)
{
	char msg[512];
	rd_kafka_conf_t *conf;
	kafka *k = calloc(1, sizeof *k);
	*out = NULL;
	if (!k) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	k->set = s;
	pthread_mutex_init(&k->topics_mu, NULL);
	pthread_mutex_init(&k->probe_mu, NULL);
	kafka_known_issues(s);
	if (s->embedded) {
		if (start_mock(k, err, errlen))
			goto fail;
	} else if (!s->brokers || !*s->brokers) {
		snprintf(err, errlen, "[kafka] brokers is empty");
		goto fail;
	} else if (!(k->bootstraps = strdup(s->brokers))) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	conf = producer_conf(k, s, err, errlen);
	if (!conf)
		goto fail;
	k->max_message_bytes = conf_size(conf, "message.max.bytes");
	k->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, msg, sizeof msg);
	if (!k->producer) {
		rd_kafka_conf_destroy(conf);
		snprintf(err, errlen, "[kafka] cannot create producer: %s", msg);
		goto fail;
	}
	k->reports = rd_kafka_queue_get_main(k->producer);
	*out = k;
	return 0;
fail:
	kafka_stop(k, 0);
	return -1;
}

/* librdkafka 2.0's mock cluster thread can miss the wakeup of its stop
 * request and sleep out its 1 s poll; a connection to its listener wakes
 * it. Poked until the destroy returns, so the embedded broker stops in
 * milliseconds. */
struct mock_waker {
	struct sockaddr_in addr;
	atomic_int done;
};

static void *mock_waker_main(void *arg)
{
	struct mock_waker *w = arg;
	while (!atomic_load(&w->done)) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0) {
			(void)connect(fd, (struct sockaddr *)&w->addr, sizeof w->addr);
			close(fd);
		}
		usleep(20 * 1000);
	}
	return NULL;
}

/* librdkafka 2.0's rd_kafka_mock_cluster_destroy wakes the cluster's
 * internal broker thread to end it, and only then drops the reference that
 * thread waits to see dropped. The woken thread usually preempts the
 * destroying one, finds the reference still held and sleeps out its 1 s
 * poll before it looks again: every stop of the embedded broker took a
 * second. SCHED_IDLE threads never preempt others, so the client's broker
 * threads are lowered to it for the destroy, and those left (the client's
 * own internal broker) raised again after it: under load, an idle thread
 * gets next to no CPU. Best effort: where that is refused (the systemd
 * unit's system call filter) the stop takes the second. */
static void idle_mock_threads(kafka *k)
{
	struct sched_param sp = {0};
	size_t lowered = 0;
	int why = 0;
	for (size_t i = 0; i < k->nmock_tids; i++) {
		if (sched_setscheduler(k->mock_tids[i], SCHED_IDLE, &sp) == 0)
			lowered++;
		else
			why = errno;
	}
	if (lowered == k->nmock_tids && lowered > 0)
		log_debug(KAFKA_LOG, "embedded cluster: %zu broker thread(s) lowered for its stop",
		          lowered);
	else
		log_debug(KAFKA_LOG,
		          "embedded cluster: %zu of %zu broker thread(s) lowered for its stop (%s); "
		          "it may take a second",
		          lowered, k->nmock_tids, why ? strerror(why) : "none found");
}

static void destroy_mock(kafka *k)
{
	struct mock_waker w;
	pthread_t t;
	const char *colon = k->bootstraps ? strrchr(k->bootstraps, ':') : NULL;
	char host[64];
	int waking = 0;

	memset(&w, 0, sizeof w);
	atomic_init(&w.done, 0);
	w.addr.sin_family = AF_INET;
	if (colon && (size_t)(colon - k->bootstraps) < sizeof host) {
		memcpy(host, k->bootstraps, (size_t)(colon - k->bootstraps));
		host[colon - k->bootstraps] = '\0';
		w.addr.sin_port = htons((uint16_t)atoi(colon + 1));
		waking = inet_pton(AF_INET, host, &w.addr.sin_addr) == 1 &&
		         pthread_create(&t, NULL, mock_waker_main, &w) == 0;
	}
	idle_mock_threads(k);
	rd_kafka_mock_cluster_destroy(k->mock);
	k->mock = NULL;
	for (size_t i = 0; i < k->nmock_tids; i++) {
		struct sched_param sp = {0};
		(void)sched_setscheduler(k->mock_tids[i], SCHED_OTHER, &sp); /* ESRCH: ended */
	}
	if (waking) {
		atomic_store(&w.done, 1);
		pthread_join(t, NULL);
	}
}

void kafka_stop(kafka *k, int timeout_ms)
{
	if (!k)
		return;
	if (k->producer) {
		rd_kafka_flush(k->producer, timeout_ms);
		if (rd_kafka_outq_len(k->producer) > 0) {
			log_warn(KAFKA_LOG, "%d message(s) not delivered within %d ms at shutdown",
			         rd_kafka_outq_len(k->producer), timeout_ms);
			/* Purged messages get a failed delivery report, so their
			 * owners (the relay) release what they track. */
			rd_kafka_purge(k->producer,
			               RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
			rd_kafka_flush(k->producer, 1000);
		}
		topics_free(k);
		if (k->reports)
			rd_kafka_queue_destroy(k->reports);
		rd_kafka_destroy(k->producer);
	}
	if (k->mock)
		destroy_mock(k);
	if (k->mock_rk)
		rd_kafka_destroy(k->mock_rk);
	pthread_mutex_destroy(&k->topics_mu);
	pthread_mutex_destroy(&k->probe_mu);
	free(k->bootstraps);
	free(k);
}

const char *kafka_bootstraps(kafka *k) { return k->bootstraps; }

int kafka_reachable(kafka *k, int timeout_ms)
{
	const struct rd_kafka_metadata *md = NULL;
	if (rd_kafka_fatal_error(k->producer, NULL, 0) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return 0;
	if (rd_kafka_metadata(k->producer, 0, NULL, &md, timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return 0;
	rd_kafka_metadata_destroy(md);
	return 1;
}

/* An answer of kafka_reachable_shared this recent is given again. */
#define PROBE_FRESH_US 1000000

int kafka_reachable_shared(kafka *k, int timeout_ms)
{
	int r;

	pthread_mutex_lock(&k->probe_mu);
	if (k->probe_at_us && (k->probe_busy || now_us() - k->probe_at_us < PROBE_FRESH_US)) {
		r = k->probe_last;
		pthread_mutex_unlock(&k->probe_mu);
		return r;
	}
	k->probe_busy++;
	pthread_mutex_unlock(&k->probe_mu);
	r = kafka_reachable(k, timeout_ms);
	pthread_mutex_lock(&k->probe_mu);
	k->probe_busy--;
	k->probe_last = r;
	k->probe_at_us = now_us();
	pthread_mutex_unlock(&k->probe_mu);
	return r;
}

static void meta_from_row(ce_meta *m, const outbox_row *row, const char *source)
{
	const char *src = row->source && *row->source ? row->source : source;
	memset(m, 0, sizeof *m);
	snprintf(m->id, sizeof m->id, "%s", row->id ? row->id : "");
	snprintf(m->type, sizeof m->type, "%s", row->type ? row->type : "");
	snprintf(m->source, sizeof m->source, "%s", src ? src : "");
	snprintf(m->time, sizeof m->time, "%s", row->time ? row->time : "");
	snprintf(m->traceparent, sizeof m->traceparent, "%s",
	         row->traceparent ? row->traceparent : "");
}

/* Produce with a delivery callback (`dr` is copied). Takes ownership of
 * `hdrs` whatever happens. EVH_ETOOBIG: bigger than message.max.bytes;
 * EVH_ENOTFOUND: the cluster has no such topic. */
static int produce(kafka *k, const char *topic, int32_t partition, int64_t timestamp_ms,
                   const void *key, size_t keylen, const void *value, size_t len,
                   rd_kafka_headers_t *hdrs, const struct kafka_dr *dr)
{
	rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
	rd_kafka_topic_t *rkt = topic_handle(k, topic);
	rd_kafka_error_t *error;
	rd_kafka_vu_t vu[8];
	struct kafka_dr *d = malloc(sizeof *d);
	if (!d) {
		rd_kafka_headers_destroy(hdrs);
		return EVH_ENOMEM;
	}
	*d = *dr;
	if (rkt) {
		vu[0].vtype = RD_KAFKA_VTYPE_RKT;
		vu[0].u.rkt = rkt;
	} else {
		vu[0].vtype = RD_KAFKA_VTYPE_TOPIC;
		vu[0].u.cstr = topic;
	}
	vu[1].vtype = RD_KAFKA_VTYPE_PARTITION;
	vu[1].u.i32 = partition;
	vu[2].vtype = RD_KAFKA_VTYPE_TIMESTAMP;
	vu[2].u.i64 = timestamp_ms > 0 ? timestamp_ms : 0;
	vu[3].vtype = RD_KAFKA_VTYPE_KEY;
	vu[3].u.mem.ptr = (void *)key;
	vu[3].u.mem.size = keylen;
	vu[4].vtype = RD_KAFKA_VTYPE_VALUE;
	vu[4].u.mem.ptr = (void *)value;
	vu[4].u.mem.size = len;
	vu[5].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
	vu[5].u.i = RD_KAFKA_MSG_F_COPY;
	vu[6].vtype = RD_KAFKA_VTYPE_HEADERS;
	vu[6].u.headers = hdrs;
	vu[7].vtype = RD_KAFKA_VTYPE_OPAQUE;
	vu[7].u.ptr = d;
	if ((error = rd_kafka_produceva(k->producer, vu, 8))) {
		e = rd_kafka_error_code(error);
		rd_kafka_error_destroy(error);
	}
	if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
		return EVH_OK;
	free(d);
	rd_kafka_headers_destroy(hdrs);
	if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
		return EVH_EBUSY;
	if (e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
		return EVH_ETOOBIG;
	if (no_such_topic(e))
		return EVH_ENOTFOUND; /* said by the caller, who knows what waits for it */
	log_error(KAFKA_LOG, "cannot produce to %s: %s", topic, rd_kafka_err2str(e));
	return EVH_EKAFKA;
}

/* An outbox row's message carries the event's time as its Kafka timestamp
 * (when the change committed, not when the relay got to it: after an outage
 * they differ) and the row's seq as evhost_seq, which orders events of one
 * source whose times tie (ordered dispatch). */
static int produce_row(kafka *k, const outbox_row *row, const char *source,
                       const struct kafka_dr *dr)
{
	ce_meta m;
	int64_t ts = 0;
	int rc;
	rd_kafka_headers_t *hdrs = rd_kafka_headers_new(9);
	if (!hdrs)
		return EVH_ENOMEM;
	meta_from_row(&m, row, source);
	if (events_headers_encode(&m, hdrs)) {
		rd_kafka_headers_destroy(hdrs);
		return EVH_EKAFKA;
	}
	if (row->seq > 0) {
		char seq[24];
		snprintf(seq, sizeof seq, "%" PRId64, row->seq);
		rd_kafka_header_add(hdrs, "evhost_seq", -1, seq, -1);
	}
	if (row->time && rfc3339_parse_ms(row->time, &ts) != 0)
		ts = 0; /* librdkafka stamps it now */
	rc = produce(k, row->topic, RD_KAFKA_PARTITION_UA, ts, row->key,
	             row->key ? strlen(row->key) : 0, row->data, row->data_len, hdrs, dr);
	if (rc == EVH_ETOOBIG) /* published before evh_publish checked, or the limit was lowered */
		log_error(KAFKA_LOG, "cannot produce event %s to %s: %zu bytes is more than "
		                     "message.max.bytes (%zu); the events published after it wait "
		                     "behind it: raise [kafka] rdkafka.message.max.bytes (and the "
		                     "topic's max.message.bytes) and restart",
		          row->id ? row->id : "?", row->topic, row->data_len, k->max_message_bytes);
	return rc;
}

#define CE_FIELD(f) sizeof(((ce_meta *)NULL)->f)
_Static_assert(37 + CE_FIELD(type) + CE_FIELD(source) + CE_FIELD(specversion) + CE_FIELD(time) +
                       CE_FIELD(content_type) + CE_FIELD(traceparent) + 8 * (16 + 10) + 20 +
                       64 <=
                   EVENT_OVERHEAD_MAX,
               "EVENT_OVERHEAD_MAX must bound an event's headers and record overhead");

size_t kafka_max_event_bytes(const kafka *k)
{
	return k && k->max_message_bytes > EVENT_OVERHEAD_MAX
	           ? k->max_message_bytes - EVENT_OVERHEAD_MAX
	           : 0;
}

size_t kafka_max_message_bytes(const kafka *k) { return k ? k->max_message_bytes : 0; }

size_t kafka_producer_setting(const kafka *k, const char *name)
{
	return k && k->producer ? conf_size(rd_kafka_conf(k->producer), name) : 0;
}

int kafka_produce_row(kafka *k, const outbox_row *row, const char *source, kafka_delivery_cb cb,
                      void *opaque)
{
	struct kafka_dr dr = {.cb = cb, .opaque = opaque};
	return produce_row(k, row, source, &dr);
}

int kafka_produce_row_pos(kafka *k, const outbox_row *row, const char *source,
                          kafka_delivery_pos_cb cb, void *opaque)
{
	struct kafka_dr dr = {.pos_cb = cb, .opaque = opaque};
	return produce_row(k, row, source, &dr);
}

int kafka_produce_message(kafka *k, const char *topic, int32_t partition, const void *key,
                          size_t keylen, const void *value, size_t len, rd_kafka_headers_t *hdrs,
                          kafka_delivery_pos_cb cb, void *opaque)
{
	struct kafka_dr dr = {.pos_cb = cb, .opaque = opaque};
	return produce(k, topic, partition, 0, key, keylen, value, len, hdrs, &dr);
}

rd_kafka_conf_t *kafka_reader_conf(kafka *k, const char *client_id, char *err, size_t errlen)
{
	static const char *const owned[] = {"bootstrap.servers", "metadata.broker.list",
	                                    "group.id", "enable.auto.commit", NULL};
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_conf_set_log_cb(conf, rdk_log_cb);
	rd_kafka_conf_set_error_cb(conf, rdk_error_cb);
	if (conf_set(conf, "client.id", client_id, err, errlen) ||
	    (k->set && conf_passthrough(conf, RD_KAFKA_CONSUMER, k->set, owned, err, errlen)) ||
	    conf_set(conf, "bootstrap.servers", k->bootstraps, err, errlen) ||
	    conf_set(conf, "enable.auto.commit", "false", err, errlen) ||
	    conf_set(conf, "allow.auto.create.topics", "false", err, errlen)) {
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	return conf;
}

void kafka_dlq_topic(const char *topic, const char *plugin, const char *suffix, char *out,
                     size_t outlen)
{
	snprintf(out, outlen, "%s.%s%s", topic, plugin, suffix && *suffix ? suffix : ".dlq");
}

void kafka_poll_producer(kafka *k, int timeout_ms) { rd_kafka_poll(k->producer, timeout_ms); }

void kafka_wake_producer(kafka *k)
{
	if (k && k->reports)
		rd_kafka_queue_yield(k->reports);
}

int kafka_outq_len(kafka *k) { return rd_kafka_outq_len(k->producer); }

/* --------------------------------------------------------------- event */

struct evh_event {
	ce_meta meta;
	char id[320]; /* ce_id, or "<topic>/<partition>/<offset>" */
	/* For a position id, the message's Kafka timestamp: it tells the
	 * message from one at the same position of the topic before it was
	 * deleted and made again, in the inbox. -1: a ce_id, or none. */
	int64_t id_time_ms;
	const char *topic;
	int32_t partition;
	int64_t offset;
	char *key; /* NULL: no key */
	size_t key_len;
	char *data;
	size_t data_len;
	/* The message's headers (owned by the message, which outlives the
	 * event), copied as C strings on the first evh_event_header call: most
	 * handlers never ask, and copying them all costs two allocations a
	 * header on every message. */
	const rd_kafka_headers_t *hdrs;
	char **hdr_names, **hdr_values;
	size_t nhdrs;
	int hdrs_copied;
	int attempt;
	int duplicate; /* in the inbox already: skipped */
	char error[512];
};

static void event_free_headers(evh_event *ev)
{
	for (size_t i = 0; i < ev->nhdrs; i++) {
		free(ev->hdr_names[i]);
		free(ev->hdr_values[i]);
	}
	free(ev->hdr_names);
	free(ev->hdr_values);
	ev->hdr_names = ev->hdr_values = NULL;
	ev->nhdrs = 0;
}

static void event_free(evh_event *ev)
{
	event_free_headers(ev);
	free(ev->key);
	free(ev->data);
}

static int event_copy_headers(evh_event *ev, const rd_kafka_headers_t *h)
{
	size_t n = rd_kafka_header_cnt(h);
	const char *name;
	const void *val;
	size_t size;
	ev->hdr_names = calloc(n ? n : 1, sizeof *ev->hdr_names);
	ev->hdr_values = calloc(n ? n : 1, sizeof *ev->hdr_values);
	if (!ev->hdr_names || !ev->hdr_values)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (rd_kafka_header_get_all(h, i, &name, &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
			break;
		ev->hdr_names[i] = strdup(name);
		ev->hdr_values[i] = tb_dup(val ? val : "", val ? size : 0);
		ev->nhdrs = i + 1;
		if (!ev->hdr_names[i] || !ev->hdr_values[i])
			return -1;
	}
	return 0;
}

/* A CloudEvents header too long for its buffer (or with a NUL byte), read
 * as absent rather than cut: say so. */
static void warn_header_cut(const evh_event *ev, const char *name, size_t max,
                            const char *accessor)
{
	log_warn(KAFKA_LOG, "%s [%" PRId32 "] @%" PRId64 ": %s is longer than %zu bytes or holds a "
	                    "NUL byte; handlers read it as absent (%s gives NULL), not cut",
	         ev->topic, ev->partition, ev->offset, name, max, accessor);
}

static int64_t msg_time(const rd_kafka_message_t *m)
{
	rd_kafka_timestamp_type_t type;
	return rd_kafka_message_timestamp(m, &type);
}

/* Build the handler's view of `msg`. Returns -1 when out of memory. */
static int event_build(evh_event *ev, const rd_kafka_message_t *msg, int attempt)
{
	rd_kafka_headers_t *h = NULL;
	memset(ev, 0, sizeof *ev);
	ev->topic = rd_kafka_topic_name(msg->rkt);
	ev->partition = msg->partition;
	ev->offset = msg->offset;
	ev->attempt = attempt;
	if (rd_kafka_message_headers(msg, &h) != RD_KAFKA_RESP_ERR_NO_ERROR)
		h = NULL;
	events_headers_decode(h, &ev->meta);
	/* A plain producer's message has no ce_id: its position is its identity.
	 * So has one whose ce_id was cut: two events whose ids differ only past
	 * the cut would be one event to the inbox, the second skipped. */
	if (ev->meta.id_cut)
		log_warn(KAFKA_LOG, "%s [%" PRId32 "] @%" PRId64 ": ce_id is longer than %zu bytes"
		                    " or holds a NUL byte; the message's position is its identity "
		                    "instead (a copy sent again would not be known as one)",
		         ev->topic, msg->partition, msg->offset, sizeof ev->meta.id - 1);
	if (ev->meta.source_cut)
		warn_header_cut(ev, "ce_source", sizeof ev->meta.source - 1, "evh_event_source");
	if (ev->meta.time_cut)
		warn_header_cut(ev, "ce_time", sizeof ev->meta.time - 1, "evh_event_time");
	ev->id_time_ms = -1;
	if (ev->meta.id[0] && !ev->meta.id_cut) {
		snprintf(ev->id, sizeof ev->id, "%s", ev->meta.id);
	} else {
		snprintf(ev->id, sizeof ev->id, "%s/%" PRId32 "/%" PRId64, ev->topic,
		         msg->partition, msg->offset);
		ev->id_time_ms = msg_time(msg);
	}
	if (msg->key && !(ev->key = tb_dup(msg->key, msg->key_len)))
		return -1;
	ev->key_len = msg->key ? msg->key_len : 0;
	ev->data = tb_dup(msg->payload ? msg->payload : "", msg->payload ? msg->len : 0);
	ev->data_len = msg->payload ? msg->len : 0;
	if (!ev->data)
		return -1;
	ev->hdrs = h;
	return 0;
}

static const char *or_null(const char *s) { return s[0] ? s : NULL; }

/* A NULL event (a plugin's bug) reads as nothing, as a NULL request does. */
const char *kafka_ev_id(const evh_event *ev) { return ev ? ev->id : NULL; }
const char *kafka_ev_type(const evh_event *ev) { return ev ? ev->meta.type : NULL; }
/* A header too long for its buffer reads as absent: a cut value would pass
 * for the producer's. */
const char *kafka_ev_source(const evh_event *ev)
{
	return !ev || ev->meta.source_cut ? NULL : or_null(ev->meta.source);
}
const char *kafka_ev_time(const evh_event *ev)
{
	return !ev || ev->meta.time_cut ? NULL : or_null(ev->meta.time);
}
const char *kafka_ev_topic(const evh_event *ev) { return ev ? ev->topic : NULL; }
int32_t kafka_ev_partition(const evh_event *ev) { return ev ? ev->partition : -1; }
int64_t kafka_ev_offset(const evh_event *ev) { return ev ? ev->offset : -1; }
int kafka_ev_attempt(const evh_event *ev) { return ev ? ev->attempt : 0; }

const char *kafka_ev_key(const evh_event *ev, size_t *len)
{
	if (len)
		*len = ev ? ev->key_len : 0;
	return ev ? ev->key : NULL;
}

const char *kafka_ev_data(const evh_event *ev, size_t *len)
{
	if (len)
		*len = ev ? ev->data_len : 0;
	return ev ? ev->data : NULL;
}

const char *kafka_ev_header(const evh_event *ev, const char *name)
{
	/* The SDK hands handlers a const event; the copies are made on the
	 * consumer's thread, the only one that sees the event. */
	evh_event *w = (evh_event *)ev;
	if (!ev || !name)
		return NULL;
	if (w->hdrs && !w->hdrs_copied) {
		if (event_copy_headers(w, w->hdrs)) {
			event_free_headers(w); /* out of memory: try again on the next call */
			return NULL;
		}
		w->hdrs_copied = 1;
	}
	for (size_t i = ev->nhdrs; i > 0; i--) /* the last one wins, as in librdkafka */
		if (!strcmp(ev->hdr_names[i - 1], name))
			return ev->hdr_values[i - 1];
	return NULL;
}

void kafka_ev_set_error(const evh_event *ev, const char *message)
{
	/* The SDK hands handlers a const event; the error buffer is the one
	 * field they may write, and the event itself is never const. */
	evh_event *w = (evh_event *)ev;
	/* Cut where a character begins: half of one would make the DLQ
	 * header's value bytes that are not UTF-8 (shown as base64). */
	if (w)
		snprintf(w->error, sizeof w->error, "%.*s",
		         (int)json_utf8_cut(message ? message : "", sizeof w->error - 1),
		         message ? message : "");
}

/* ------------------------------------------------------------ consumer */

struct retry_policy {
	int max_attempts, backoff_ms, backoff_max_ms;
	int64_t missing_warned_ms; /* when the log last said its topic is missing */
};

struct dlq_wait;

/* A dead letter on its way: its send in flight (NULL: none), whether its
 * value is cut, and the waits before sending it again. */
struct dlq_send {
	struct dlq_wait *w;
	int truncated;
	int wait_ms;  /* before the next send, after a failed one */
	int delay_ms; /* the wait after the next failure */
};

/* A paused partition. While msg != NULL the message waits for its next
 * attempt at due_ms, or, when dead, for its dead letter to be written (or
 * looked at again) then; once finished (msg == NULL) the partition waits to
 * be sought to resume_offset and resumed. */
struct retry_slot {
	char *topic;
	int32_t partition;
	rd_kafka_message_t *msg;
	int attempts;    /* made so far */
	size_t sub;      /* index of the subscription whose policy applies */
	int64_t due_ms;
	int64_t resume_offset;
	int dead;        /* msg goes to the dead-letter topic, not to a handler */
	/* A wait for room in the outbox (schedule_retry): its pending count
	 * then; the wait ends early once the relay has sent it below that
	 * (serve_slots). 0: no such wait. */
	int64_t room_below;
	struct dlq_send dl;
	char error[512];
};

/* Kinds of step the consumer thread takes between polls (busy_step). */
#define BUSY_KINDS 3

/* Why an event waits (OUT_WAIT, OUT_KEEP_WAIT) rather than use up an
 * attempt: WAIT_NO_ROOM is a handler's own write outside the database (a
 * Maildir's file) that met a full disk (EVH_EVENT_KEEP_AND_WAIT). */
enum wait_cause { WAIT_OUTBOX_FULL, WAIT_DATABASE_FULL, WAIT_NO_ROOM, WAIT_CAUSES };

/* Waits for one cause, said once an episode rather than once a wait (the
 * cause holds for every event the consumer meets meanwhile): an episode
 * runs from its first wait, said in full, to the first attempt that does
 * not meet the cause (or the stop), which says how long it lasted and how
 * many waits came meanwhile, each said only at debug (wait_episodes_end). */
struct wait_episode {
	int64_t since_ms; /* its first wait (clock_mono_ms); 0: no episode */
	int64_t unsaid;   /* waits since then */
};

struct consumer {
	kafka *k;
	evh_plugin *p;
	rd_kafka_t *rk;
	pthread_t thread;
	atomic_int stop;
	_Atomic int64_t stop_by_ms; /* set before stop: dead letters are waited for until then */
	char *dlq_suffix;
	struct retry_policy *policy; /* one per p->subs */
	struct retry_slot *slots;
	size_t nslots, capslots;
	struct pbuf *bufs; /* one per assigned partition (ordered dispatch) */
	size_t nbufs, capbufs;
	size_t nbuffered; /* messages in all of them */
	int stored;                  /* offsets stored since the last commit */
	int64_t last_commit_ms;
	/* A cooperative rebalance revoked partitions: librdkafka assigns (what
	 * the round added), then joins again, and that round's assignment ends
	 * the rebalance. A periodic commit sent meanwhile carries the generation
	 * the join replaces: the broker answers ILLEGAL_GENERATION, and
	 * librdkafka before 2.10 then takes the whole assignment for lost
	 * (librdkafka#4059), so another member handles again what was handled
	 * since the last commit. Periodic commits wait for both assignments (at
	 * most COOP_COMMIT_HOLD_MAX_MS, commit_hold_until); the revoke's own
	 * commit and the stop's are not held. Consumer thread only. */
	int coop_assigns_due;
	int64_t commit_hold_until;
	/* When to count the group's members, a while after an assignment (the
	 * group settled); 0: not due. Consumer thread only. */
	int64_t members_check_at;
	/* Per assigned partition, the offset past its last handled event: what
	 * commit_stored commits, by name. rd_kafka_commit(NULL) would commit
	 * only stored offsets above its cached committed ones, and after a
	 * topic is deleted and created again (its offsets start at 0 again)
	 * that cache keeps the old topic's: nothing would be committed until
	 * the new offsets passed the old, and a restart would handle all of it
	 * again. Partitions leave it when they are revoked. NULL until the
	 * first stored offset. */
	rd_kafka_topic_partition_list_t *handled;
	/* Time without a consumer poll: past max.poll.interval.ms librdkafka
	 * takes the consumer out of its group. busy_report says so at half of
	 * it, with what the time went on since the last poll (busy_step). */
	int max_poll_ms;
	/* auto.offset.reset (rdkafka.* may set it): where a partition with
	 * nothing committed starts, for its lag before a message comes.
	 * RD_KAFKA_OFFSET_BEGINNING, RD_KAFKA_OFFSET_END, or
	 * RD_KAFKA_OFFSET_INVALID ("error": no start, no lag said). */
	int64_t reset_to;
	/* When the end offsets of the partitions held, paused, were last asked
	 * of the cluster (lag_held_hi), and whether that ask failed. */
	int64_t held_asked_ms;
	int held_ask_failed;
	int64_t polled_ms; /* when the last consumer poll returned (0: none yet) */
	size_t slot_turn;  /* serve_slots looks from this slot on: each due one gets its turn */
	/* The attempt dispatch last made met a full outbox (a publish of the
	 * handler's refused with EVH_EFULL): run_handlers sets it. */
	int attempt_full;
	/* The attempt dispatch last made ended with EVH_EVENT_KEEP_AND_WAIT, its
	 * writes kept (OUT_KEEP_WAIT): run_handlers sets it. */
	int attempt_room;
	/* The attempt dispatch last made failed in a storage call (a
	 * transaction, savepoint, inbox record, a handler's statement or the
	 * commit): only then can a full database be why (dispatch). */
	int attempt_storage;
	/* The event dispatch last handled in a batch's transaction was one
	 * handled before (the inbox said so): counted once the batch commits. */
	int last_duplicate;
	/* In rd_kafka_consumer_close, whose rebalance callbacks run on this
	 * thread (so no lock): see rdk_rebalance_cb's revoke. */
	int closing;
	/* Waits (OUT_WAIT), said once an episode for each cause (wait_said). */
	struct wait_episode episodes[WAIT_CAUSES];
	struct busy_kind {
		const char *what; /* NULL: a free slot */
		int64_t ms;
	} busy[BUSY_KINDS];
	/* A replay handed over by consumer_replay (another thread), under rmu. */
	pthread_mutex_t rmu;
	pthread_cond_t rcv;
	enum { REPLAY_IDLE, REPLAY_PENDING, REPLAY_RUNNING, REPLAY_DONE } rstate;
	int rwaiting; /* consumer_replay is in its wait: the consumer stays */
	int rclosed;  /* the thread is past taking requests */
	const replay_request *rreq;
	replay_result *rres;
	int rstatus;
	char rerr[256];
};

/* What became of one dispatch. */
/* OUT_KEEP: EVH_EVENT_KEEP_AND_DEAD_LETTER, its writes kept in the
 * transaction, its inbox claim taken back; dead-lettered once committed.
 * OUT_WAIT: a retry for want of room in the plugin's database (dispatch
 * says when), or after a publish met a full outbox (EVH_EFULL: the relay cannot send): not
 * the event's fault, so it uses up no attempt and never reaches the DLQ for it.
 * OUT_KEEP_RETRY: EVH_EVENT_KEEP_AND_RETRY, kept as OUT_KEEP, then retried as
 * OUT_RETRY once committed.
 * OUT_KEEP_GO_ON: EVH_EVENT_KEEP_AND_CONTINUE, kept as OUT_KEEP, then handled
 * again at once once committed, with the same attempt number (as OUT_WAIT,
 * it uses up no attempt, and never reaches the DLQ for it).
 * OUT_KEEP_WAIT: EVH_EVENT_KEEP_AND_WAIT, kept as OUT_KEEP, then waits as
 * OUT_WAIT once committed (a handler's file met a full disk). */
enum outcome {
	OUT_DONE,
	OUT_RETRY,
	OUT_REJECT,
	OUT_KEEP,
	OUT_WAIT,
	OUT_KEEP_RETRY,
	OUT_KEEP_GO_ON,
	OUT_KEEP_WAIT,
};

/* The outcomes whose writes commit (the batch's or the event's own). */
static int outcome_commits(enum outcome out)
{
	return out == OUT_DONE || out == OUT_KEEP || out == OUT_KEEP_RETRY ||
	       out == OUT_KEEP_GO_ON || out == OUT_KEEP_WAIT;
}

/* The outcomes retried while attempts are left. */
static int outcome_retries(enum outcome out)
{
	return out == OUT_RETRY || out == OUT_KEEP_RETRY;
}

static const char *plugin_label(const struct consumer *c) { return c->p->name; }

/* A line about one of the plugin's events (an attempt failed, a dead
 * letter): counted in the plugin's share of the log (log_budget), so that
 * events failing by the thousand do not flood the log either. */
#define event_log(c, level, ...) \
	log_msg_budget(&(c)->p->log_budget, -1, (level), KAFKA_LOG, __VA_ARGS__)

static struct retry_slot *slot_find(struct consumer *c, const char *topic, int32_t partition)
{
	for (size_t i = 0; i < c->nslots; i++)
		if (c->slots[i].partition == partition && !strcmp(c->slots[i].topic, topic))
			return &c->slots[i];
	return NULL;
}

static void dlq_wait_release(struct dlq_wait *w);

static void slot_remove(struct consumer *c, struct retry_slot *s)
{
	size_t i = (size_t)(s - c->slots);
	if (s->msg)
		rd_kafka_message_destroy(s->msg);
	if (s->dl.w)
		dlq_wait_release(s->dl.w); /* written or not, its message comes again */
	free(s->topic);
	c->slots[i] = c->slots[--c->nslots];
}

static void partition_pause(struct consumer *c, const char *topic, int32_t partition, int pause)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_resp_err_t e;
	rd_kafka_topic_partition_list_add(l, topic, partition);
	e = pause ? rd_kafka_pause_partitions(c->rk, l) : rd_kafka_resume_partitions(c->rk, l);
	if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
		e = l->elems[0].err;
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		log_warn(KAFKA_LOG, "%s: cannot %s %s [%" PRId32 "]: %s", plugin_label(c),
		         pause ? "pause" : "resume", topic, partition, rd_kafka_err2str(e));
	rd_kafka_topic_partition_list_destroy(l);
}

/* ---- ordered dispatch: buffers ---- */

/* Messages polled but not handled yet, per assigned partition. The consumer
 * hands them to the handlers in timestamp order across all its partitions,
 * not in whatever order fetches return them: a plugin that consumes several
 * topics about the same entities (USER_CREATED, USER_UPDATED, USER_DELETED)
 * then sees a backlog, or a replay, in the order the events were produced,
 * as it does when it keeps up. Kafka orders only within a partition; this is
 * Kafka Streams' answer (take the lowest timestamp among the partitions'
 * buffers, and wait a little for a partition whose data is on its way). A
 * partition waiting for a retry does not hold the others back.
 *
 * Memory: past ORDER_BUF_MAX buffered messages the consumer takes one
 * message from librdkafka per message it hands out, and waits for no
 * partition; librdkafka then holds the rest and stops fetching at its own
 * limits (queued.max.messages.kbytes). Partitions are never paused for
 * this: pausing and resuming often is what librdkafka before 2.1.0 could
 * lose messages on. */

/* What the ordered dispatch compares of a message (see msg_before). */
struct order_key {
	const rd_kafka_message_t *m; /* the message these are of */
	int64_t time, seq;
	const char *source; /* not copied: lives as long as m */
	size_t source_len;
};

struct pbuf {
	char *topic;
	int32_t partition;
	rd_kafka_message_t **v; /* ring of cap, n messages from head */
	size_t head, n, cap;
	int64_t empty_since;    /* when it last ran empty */
	/* Where the consumer last sought it (-1: not since its last message):
	 * rd_kafka_position says "invalid" after a seek until a message
	 * comes, and hold_ms must know the position. */
	int64_t sought;
	/* Its committed offset as the cluster had it when first asked (-1: not
	 * asked; -2: asked, no answer, again after LAG_COMMITTED_AGAIN_MS from
	 * committed_asked): the position a partition that has had nothing to
	 * fetch since its assignment is at, for its lag. */
	int64_t committed, committed_asked;
	/* auto.offset.reset = error and nothing committed: the partition
	 * fetches nothing (librdkafka caches no watermarks for it) until a
	 * replay sets its offset, and all it holds waits. Its high watermark as
	 * the cluster last said (reset_asked: when), for its lag; -1 otherwise. */
	int64_t reset_hi, reset_asked;
	/* Held by a retry, a wait or a dead letter (paused): librdkafka caches
	 * the watermarks of fetch responses only, and fetches nothing for it.
	 * Its end offset as the cluster last said (lag_held_hi); -1 otherwise. */
	int64_t held_hi;
	struct order_key key; /* of v[head], computed once per head */
};

static struct pbuf *pbuf_find(struct consumer *c, const char *topic, int32_t partition)
{
	for (size_t i = 0; i < c->nbufs; i++)
		if (c->bufs[i].partition == partition && !strcmp(c->bufs[i].topic, topic))
			return &c->bufs[i];
	return NULL;
}

/* The offset of `b`'s next event to handle, or -1 when this consumer does
 * not know it: its retry's, its first buffered message's, where it was
 * sought, else `position` (librdkafka's: past the last message polled, all
 * handled when none is buffered). */
static int64_t next_to_handle(struct consumer *c, const struct pbuf *b, int64_t position)
{
	const struct retry_slot *s = slot_find(c, b->topic, b->partition);
	if (s)
		return s->msg ? s->msg->offset : s->resume_offset;
	if (b->n)
		return b->v[b->head]->offset;
	if (position < 0 && b->sought >= 0)
		return b->sought;
	return position >= 0 ? position : -1;
}

static struct pbuf *pbuf_add(struct consumer *c, const char *topic, int32_t partition)
{
	struct pbuf *b = pbuf_find(c, topic, partition);
	if (b)
		return b;
	if (c->nbufs == c->capbufs) {
		size_t cap = c->capbufs ? c->capbufs * 2 : 8;
		struct pbuf *v = realloc(c->bufs, cap * sizeof *v);
		if (!v)
			return NULL;
		c->bufs = v;
		c->capbufs = cap;
	}
	b = &c->bufs[c->nbufs];
	memset(b, 0, sizeof *b);
	if (!(b->topic = strdup(topic)))
		return NULL;
	b->partition = partition;
	b->empty_since = clock_mono_ms();
	b->sought = -1;
	b->committed = b->committed_asked = -1;
	b->reset_hi = -1;
	b->held_hi = -1;
	c->nbufs++;
	return b;
}

/* Drop what `b` holds: it is fetched again, after a seek or by the next
 * owner of the partition. */
static void pbuf_clear(struct consumer *c, struct pbuf *b)
{
	for (; b->n; b->n--, c->nbuffered--, b->head = (b->head + 1) % b->cap)
		rd_kafka_message_destroy(b->v[b->head]);
	b->head = 0;
	b->key.m = NULL; /* a new message may get a freed one's address */
	b->empty_since = clock_mono_ms();
}

/* Forget the buffers of `parts` (NULL: all), e.g. revoked partitions. */
static void pbufs_drop(struct consumer *c, const rd_kafka_topic_partition_list_t *parts)
{
	for (size_t i = 0; i < c->nbufs;) {
		struct pbuf *b = &c->bufs[i];
		if (parts && !rd_kafka_topic_partition_list_find(parts, b->topic, b->partition)) {
			i++;
			continue;
		}
		pbuf_clear(c, b);
		metrics_consumer_lag_clear(c->p->name, b->topic, b->partition);
		free(b->v);
		free(b->topic);
		c->bufs[i] = c->bufs[--c->nbufs];
	}
}

static int pbuf_push(struct consumer *c, rd_kafka_message_t *m)
{
	struct pbuf *b = pbuf_add(c, rd_kafka_topic_name(m->rkt), m->partition);
	if (!b)
		return -1;
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 16;
		rd_kafka_message_t **v = malloc(cap * sizeof *v);
		if (!v)
			return -1;
		for (size_t i = 0; i < b->n; i++)
			v[i] = b->v[(b->head + i) % b->cap];
		free(b->v);
		b->v = v;
		b->cap = cap;
		b->head = 0;
	}
	b->v[(b->head + b->n++) % b->cap] = m;
	c->nbuffered++;
	b->sought = -1; /* the position is the message's now */
	return 0;
}

static rd_kafka_message_t *pbuf_pop(struct consumer *c, struct pbuf *b)
{
	rd_kafka_message_t *m = b->v[b->head];
	b->head = (b->head + 1) % b->cap;
	b->key.m = NULL; /* m is handled and freed: its address may come back */
	c->nbuffered--;
	if (--b->n == 0)
		b->empty_since = clock_mono_ms();
	return m;
}

/* Note `l`'s offsets (those set) as the partitions' last handled ones:
 * later than what was noted, even when lower (a replay's rewind). */
static void handled_note(struct consumer *c, const rd_kafka_topic_partition_list_t *l)
{
	if (!c->handled)
		c->handled = rd_kafka_topic_partition_list_new(l->cnt > 0 ? l->cnt : 1);
	for (int i = 0; i < l->cnt; i++) {
		const rd_kafka_topic_partition_t *e = &l->elems[i];
		rd_kafka_topic_partition_t *t;
		if (e->offset < 0 || e->err != RD_KAFKA_RESP_ERR_NO_ERROR)
			continue;
		t = rd_kafka_topic_partition_list_find(c->handled, e->topic, e->partition);
		if (!t)
			t = rd_kafka_topic_partition_list_add(c->handled, e->topic, e->partition);
		t->offset = e->offset;
	}
}

/* Revoked (or lost) partitions: no longer ours to commit. */
static void handled_forget(struct consumer *c, const rd_kafka_topic_partition_list_t *parts)
{
	for (int i = 0; c->handled && i < parts->cnt; i++)
		rd_kafka_topic_partition_list_del(c->handled, parts->elems[i].topic,
		                                  parts->elems[i].partition);
}

/* Store the offsets past `msgs` (handled, their writes committed): one call
 * for all of them, the highest offset per partition. */
static void store_offsets(struct consumer *c, rd_kafka_message_t *const *msgs, size_t n)
{
	rd_kafka_topic_partition_list_t *l;
	rd_kafka_resp_err_t e;
	if (!n)
		return;
	l = rd_kafka_topic_partition_list_new(4);
	for (size_t i = 0; i < n; i++) {
		const char *topic = rd_kafka_topic_name(msgs[i]->rkt);
		rd_kafka_topic_partition_t *t =
		    rd_kafka_topic_partition_list_find(l, topic, msgs[i]->partition);
		if (!t) /* a new element's offset is RD_KAFKA_OFFSET_INVALID (< 0) */
			t = rd_kafka_topic_partition_list_add(l, topic, msgs[i]->partition);
		if (msgs[i]->offset + 1 > t->offset)
			t->offset = msgs[i]->offset + 1;
	}
	e = rd_kafka_offsets_store(c->rk, l);
	if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
		c->stored += (int)n;
		handled_note(c, l); /* each partition's own error keeps it out */
	}
	for (int i = 0; i < l->cnt; i++) {
		rd_kafka_resp_err_t pe = e ? e : l->elems[i].err;
		if (pe == RD_KAFKA_RESP_ERR_NO_ERROR)
			continue;
		/* e.g. revoked meanwhile: the new owner handles it again (inbox dedups) */
		log_warn(KAFKA_LOG, "%s: cannot store offset %s [%" PRId32 "] @%" PRId64 ": %s",
		         plugin_label(c), l->elems[i].topic, l->elems[i].partition,
		         l->elems[i].offset - 1, rd_kafka_err2str(pe));
	}
	rd_kafka_topic_partition_list_destroy(l);
}

static void store_offset(struct consumer *c, rd_kafka_message_t *msg)
{
	store_offsets(c, &msg, 1);
}

/* Commit the offsets past what was handled, every assigned partition's
 * (c->handled: committing one again is harmless, and a failed commit is
 * made good by the next). `force`: even when nothing was stored since the
 * last commit (that one may have failed; revoke and stop must be sure). */
static void commit_stored(struct consumer *c, int async, int force)
{
	rd_kafka_resp_err_t e;
	c->last_commit_ms = clock_mono_ms();
	if (!c->stored && !force)
		return;
	c->stored = 0;
	if (!c->handled || c->handled->cnt == 0)
		return;
	e = rd_kafka_commit(c->rk, c->handled, async);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR__NO_OFFSET)
		log_warn(KAFKA_LOG, "%s: offset commit failed: %s", plugin_label(c),
		         rd_kafka_err2str(e));
}

static void rdk_offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                                 rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
	struct consumer *c = opaque;
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
		log_warn(KAFKA_LOG, "%s: offset commit failed: %s", plugin_label(c),
		         rd_kafka_err2str(err));
}

/* ---- dispatch ---- */

static int sub_matches(const plugin_sub *s, const char *topic, const char *type)
{
	return !strcmp(s->topic, topic) && (!s->type || !strcmp(s->type, type));
}

/* The handling's span ("process <topic>"), a child of the event's
 * traceparent (the span that created the event); a trace of its own when
 * that is missing or malformed. The handler's log lines carry its trace id
 * and the events it publishes are its children. */
static void process_span_begin(trace_span *sp, const struct consumer *c, const evh_event *ev)
{
	/* traceparent is "" when the event had none (never NULL, which would
	 * mean the thread's current span). */
	trace_begin(sp, TRACE_CONSUMER, ev->meta.traceparent, NULL, "process %s", ev->topic);
	trace_attr(sp, "messaging.system", "kafka");
	trace_attr(sp, "messaging.operation.type", "process");
	trace_attr(sp, "messaging.destination.name", ev->topic);
	if (sp->recording) {
		char part[16];
		snprintf(part, sizeof part, "%" PRId32, ev->partition);
		trace_attr(sp, "messaging.destination.partition.id", part);
	}
	trace_attr_int(sp, "messaging.kafka.offset", ev->offset);
	trace_attr(sp, "messaging.consumer.group.name", c->p->group);
	trace_attr(sp, "messaging.message.id", ev->id);
	trace_attr(sp, "cloudevents.event_type", ev->meta.type);
	trace_attr(sp, "evhost.plugin", c->p->name);
	trace_attr_int(sp, "evhost.attempt", ev->attempt);
	trace_current_set(sp);
	log_set_context(NULL, sp->trace_id);
}

static void process_span_end(trace_span *sp, const evh_event *ev, enum outcome out)
{
	static const char *const names[] = {"handled",    "retry",    "rejected",
	                                    "kept_dead_lettered", "waiting_for_storage",
	                                    "kept_retry", "kept_going_on", "kept_waiting_for_room"};
	trace_attr(sp, "evhost.outcome", ev->duplicate ? "duplicate" : names[out]);
	if (out != OUT_DONE && out != OUT_KEEP_GO_ON)
		trace_error(sp, "%s", ev->error[0] ? ev->error : names[out]);
	trace_end(sp);
	trace_current_clear();
	log_set_context(NULL, NULL);
}

int kafka_result_known(const evh_plugin *p, int r)
{
	int since = r == EVH_EVENT_KEEP_AND_DEAD_LETTER ? 2
	            : r == EVH_EVENT_KEEP_AND_RETRY     ? 11
	            : r == EVH_EVENT_KEEP_AND_CONTINUE  ? 14
	            : r == EVH_EVENT_KEEP_AND_WAIT      ? 15
	                                                : 0;
	return p->desc && p->desc->abi_minor < since ? -1 : r;
}

/* A handler returned EVH_EVENT_KEEP_AND_DEAD_LETTER, KEEP_AND_RETRY,
 * KEEP_AND_CONTINUE or KEEP_AND_WAIT (`out`: OUT_KEEP, OUT_KEEP_RETRY,
 * OUT_KEEP_GO_ON or OUT_KEEP_WAIT): keep
 * the writes made so far (the later handlers of the event do not run), but
 * not the inbox claim, so the event's retry, next call or redriven copy is
 * handled again. */
static enum outcome keep_writes(struct consumer *c, evh_event *ev, evh_tx *tx,
                                enum outcome out)
{
	if (store_inbox_unclaim(tx, ev->id) != EVH_OK ||
	    store_tx_savepoint_release(tx) != EVH_OK) {
		snprintf(ev->error, sizeof ev->error, "storage: %s", store_tx_error(tx));
		store_tx_savepoint_rollback(tx);
		return OUT_RETRY;
	}
	log_debug(KAFKA_LOG, "%s: event %s: handler kept its writes and %s", c->p->name, ev->id,
	          out == OUT_KEEP         ? "gave the event up"
	          : out == OUT_KEEP_GO_ON ? "asked to go on"
	          : out == OUT_KEEP_WAIT  ? "waits for room"
	                                  : "asked to retry");
	c->attempt_room = out == OUT_KEEP_WAIT;
	return out;
}

/* After an event handler: a read transaction (evh_tx_begin_read) it began
 * and left open is ended, said. It wrote nothing, so the event's outcome
 * stands; left open, it held one of the plugin's few read connections for
 * good. */
static void end_left_reads(evh_plugin *p, const evh_event *ev)
{
	evh_tx *left;
	int n = 0;
	while ((left = store_tx_left_open(p->store))) {
		store_tx_rollback(left);
		n++;
	}
	if (n)
		log_error(KAFKA_LOG, "%s: the handler of event %s returned with %d read transaction%s "
		                     "it began still open (no evh_tx_commit or evh_tx_rollback): ended",
		          p->name, ev->id, n, n == 1 ? "" : "s");
}

/* Run every matching handler inside a savepoint of `tx` (the batch's), with
 * the inbox check and record. The first non-OK result decides and rolls the
 * savepoint back, so only this event's writes are undone (but see
 * keep_writes); *sub gets the subscription whose policy applies. */
static enum outcome run_handlers(struct consumer *c, evh_event *ev, evh_tx *tx, size_t first,
                                 size_t *sub)
{
	evh_plugin *p = c->p;
	int claimed, r, known;
	*sub = first;
	if (store_tx_savepoint(tx) != EVH_OK) {
		snprintf(ev->error, sizeof ev->error, "storage: cannot open a savepoint: %s",
		         store_tx_error(tx));
		c->attempt_storage = 1;
		return OUT_RETRY;
	}
	/* Recorded first (no lookup before the insert); a handler that fails
	 * rolls the record back with its own writes. */
	claimed =
	    store_inbox_claim(tx, ev->id, ev->topic, ev->partition, ev->offset, ev->id_time_ms);
	if (claimed < 0) {
		snprintf(ev->error, sizeof ev->error, "storage: inbox record failed: %s",
		         store_tx_error(tx));
		c->attempt_storage = 1;
		store_tx_savepoint_rollback(tx);
		return OUT_RETRY;
	}
	if (!claimed) {
		ev->duplicate = 1;
		log_debug(KAFKA_LOG, "%s: event %s already handled, skipped", p->name, ev->id);
		store_tx_savepoint_rollback(tx); /* nothing was written */
		return OUT_DONE;
	}
	for (size_t i = first; i < p->nsubs; i++) {
		if (!sub_matches(&p->subs[i], ev->topic, ev->meta.type))
			continue;
		*sub = i;
		crash_enter_event(p->name, ev->topic, ev->partition, ev->offset, ev->id);
		r = p->subs[i].handler(p, ev, tx, p->subs[i].ud);
		crash_leave();
		end_left_reads(p, ev);
		if (r == EVH_EVENT_OK)
			continue;
		c->attempt_full = store_tx_failed(tx) == EVH_EFULL; /* before the rollback */
		c->attempt_storage = store_tx_failed(tx) != EVH_OK;
		/* A storage failure the handler gave up or retried on without a
		 * word: its message is the reason (before the rollback clears it). */
		if (!ev->error[0] && store_tx_failed(tx))
			snprintf(ev->error, sizeof ev->error, "storage: %s", store_tx_error(tx));
		known = kafka_result_known(p, r);
		if (known == EVH_EVENT_KEEP_AND_DEAD_LETTER)
			return keep_writes(c, ev, tx, OUT_KEEP);
		if (known == EVH_EVENT_KEEP_AND_RETRY)
			return keep_writes(c, ev, tx, OUT_KEEP_RETRY);
		if (known == EVH_EVENT_KEEP_AND_CONTINUE)
			return keep_writes(c, ev, tx, OUT_KEEP_GO_ON);
		if (known == EVH_EVENT_KEEP_AND_WAIT)
			return keep_writes(c, ev, tx, OUT_KEEP_WAIT);
		store_tx_savepoint_rollback(tx);
		if (known == EVH_EVENT_REJECT)
			return OUT_REJECT;
		if (known != EVH_EVENT_RETRY && !ev->error[0])
			snprintf(ev->error, sizeof ev->error,
			         known == r ? "handler returned unknown result %d"
			                    : "handler returned result %d, unknown to its plugin ABI",
			         r);
		return OUT_RETRY;
	}
	/* A storage call failed that the handler did not report (it returned OK
	 * anyway): its writes are incomplete, so they must not commit. */
	c->attempt_full = store_tx_failed(tx) == EVH_EFULL;
	if (store_tx_savepoint_release(tx) != EVH_OK) {
		snprintf(ev->error, sizeof ev->error, "storage: %s", store_tx_error(tx));
		c->attempt_storage = 1;
		store_tx_savepoint_rollback(tx);
		return OUT_RETRY;
	}
	return OUT_DONE; /* counted once its transaction commits */
}

/* An event handled (or found handled before) and committed, counted. */
static void count_done(struct consumer *c, const char *topic, int duplicate)
{
	metrics_event_handled(c->p->name, topic,
	                      duplicate ? METRICS_EVENT_DUPLICATE : METRICS_EVENT_OK);
}

/* run_handlers for one event in a transaction of its own (retries, and a
 * batch handled again after its commit failed). */
static enum outcome run_handlers_alone(struct consumer *c, evh_event *ev, size_t first,
                                       size_t *sub)
{
	evh_tx *tx = NULL;
	enum outcome out;
	*sub = first;
	store_thread_error_clear();
	if (store_tx_begin(c->p->store, &tx) != EVH_OK) {
		snprintf(ev->error, sizeof ev->error, "storage: cannot begin a transaction%s%s",
		         store_thread_error()[0] ? ": " : "", store_thread_error());
		c->attempt_storage = 1;
		return OUT_RETRY;
	}
	out = run_handlers(c, ev, tx, first, sub);
	if (!outcome_commits(out)) {
		store_tx_rollback(tx);
		return out;
	}
	store_thread_error_clear();
	if (store_tx_commit(tx) != EVH_OK) {
		snprintf(ev->error, sizeof ev->error, "storage: commit failed%s%s",
		         store_thread_error()[0] ? ": " : "", store_thread_error());
		c->attempt_storage = 1;
		c->attempt_room = 0; /* the database's wait, if any, not the handler's */
		return OUT_RETRY;
	}
	if (out == OUT_DONE)
		count_done(c, ev->topic, ev->duplicate);
	return out;
}

static int64_t msg_time(const rd_kafka_message_t *m);

/* What the log says of a wait and of its episode (wait_said,
 * wait_episodes_end), by cause. */
static const struct wait_words {
	const char *what;     /* the first line's, before the attempt's error */
	const char *hint;     /* after the error: where the limit is set */
	const char *again[2]; /* around the delay: when it is tried again */
	const char *through;  /* "... said once, with a count, when an attempt ..." */
	const char *back;     /* the episode's end */
	const char *name;     /* "N more waits for ..." */
	const char *first;    /* the first line, quoted by the last */
} wait_words[WAIT_CAUSES] = {
    [WAIT_OUTBOX_FULL] = {"a handler's publish met a full outbox",
                          "; [store] outbox_max_rows",
                          {"once the relay has sent events to Kafka (in ", " ms at most)"},
                          "finds room", "the handlers' publishes go into the outbox again",
                          "a full outbox", "outbox full"},
    [WAIT_DATABASE_FULL] = {"its database is full or read-only", "",
                            {"every ", " ms until its writes go through"}, "goes through",
                            "its database takes the handlers' writes again",
                            "a full or read-only database", "its database is full or read-only"},
    [WAIT_NO_ROOM] = {"a handler's write met a full disk", "",
                      {"every ", " ms until it goes through"}, "goes through",
                      "the handlers' writes go through again", "a full disk",
                      "met a full disk"},
};

/* Say that the event of `s` (at `offset`) waits for `cause`: in full when
 * it starts an episode, else only at debug, counted for the episode's end. */
static void wait_said(struct consumer *c, const struct retry_slot *s, int64_t offset,
                      enum wait_cause cause, const char *error, int delay)
{
	const struct wait_words *w = &wait_words[cause];
	struct wait_episode *e = &c->episodes[cause];
	if (e->since_ms) {
		e->unsaid++;
		log_debug(KAFKA_LOG,
		          "%s: %s [%" PRId32 "] @%" PRId64 " waits again: %s (%s); again in %d ms "
		          "at most",
		          plugin_label(c), s->topic, s->partition, offset, w->what, error, delay);
		return;
	}
	e->since_ms = clock_mono_ms();
	e->unsaid = 0;
	event_log(c, EVH_LOG_WARN,
	          "%s: %s [%" PRId32 "] @%" PRId64 " waits: %s (%s%s); not counted as an attempt; "
	          "tried again %s%d%s. Its partition's events wait behind it, in order; the "
	          "further waits are said once, with a count, when an attempt %s",
	          plugin_label(c), s->topic, s->partition, offset, w->what, error, w->hint,
	          w->again[0], delay, w->again[1], w->through);
}

/* The causes the attempt just made (its outcome `out`) met, a bit each.
 * An event whose publishes alone exceed the outbox (OUT_RETRY, attempt_full)
 * leaves a full outbox's episode as it is. */
static unsigned wait_causes_met(const struct consumer *c, enum outcome out)
{
	if (c->attempt_full)
		return 1u << WAIT_OUTBOX_FULL;
	return out == OUT_WAIT        ? 1u << WAIT_DATABASE_FULL
	       : out == OUT_KEEP_WAIT ? 1u << WAIT_NO_ROOM
	                              : 0;
}

/* End the episodes whose cause is not in `met` (all `at_stop`), saying
 * how long each lasted and how many of its waits were not said. */
static void wait_episodes_end(struct consumer *c, unsigned met, int at_stop)
{
	for (int cause = 0; cause < WAIT_CAUSES; cause++) {
		const struct wait_words *w = &wait_words[cause];
		struct wait_episode *e = &c->episodes[cause];
		if (!e->since_ms || (!at_stop && (met & (1u << cause))))
			continue;
		/* No event's context: the line is for all of them. */
		log_msg_no_context(EVH_LOG_INFO, KAFKA_LOG,
		                   "%s: %s; %" PRId64 " more wait%s for %s in the %.1f s since the "
		                   "'%s' line above (none counted as an attempt; counted in "
		                   "evhost_events_handled_total{result=\"retry\"}, not said one by "
		                   "one)",
		                   plugin_label(c),
		                   at_stop ? "the consumer stops, its events still waiting" : w->back,
		                   e->unsaid, e->unsaid == 1 ? "" : "s",
		                   w->name, (double)(clock_mono_ms() - e->since_ms) / 1000.0,
		                   w->first);
		e->since_ms = 0;
		e->unsaid = 0;
	}
}

/* Dispatch `msg` (attempt number `attempt`) in `tx` (a batch's), or in a
 * transaction of its own when tx is NULL. `err` gets the reason of a RETRY
 * or REJECT. */
static enum outcome dispatch(struct consumer *c, evh_tx *tx, const rd_kafka_message_t *msg,
                             int attempt, size_t *sub, char *err, size_t errlen)
{
	evh_event ev;
	enum outcome out = OUT_DONE;
	size_t first;
	long crashed;
	crash_match cm;
	unsigned room_lost = store_thread_room_lost();
	*sub = 0;
	c->attempt_full = 0;
	c->attempt_room = 0;
	c->attempt_storage = 0;
	c->last_duplicate = 0;
	if (event_build(&ev, msg, attempt)) {
		snprintf(err, errlen, "out of memory");
		event_free(&ev);
		return OUT_RETRY;
	}
	/* A cut type is not the event's: its handlers would see, and type
	 * filters match, another one. */
	for (first = ev.meta.type_cut ? c->p->nsubs : 0; first < c->p->nsubs; first++)
		if (sub_matches(&c->p->subs[first], ev.topic, ev.meta.type))
			break;
	crashed = crash_record_match(c->p->name, ev.topic, ev.partition, ev.offset, ev.id, &cm);
	/* A redriven copy is the administrator's new try (a mended plugin):
	 * its handler is called; should it crash, the record moves to it. Not
	 * a copy redriven before the recorded crash: that redrive was the one
	 * whose other copy crashed (an event dead-lettered twice, by its relay
	 * copy too), made before any mending. */
	if (crashed >= CRASH_RECORD_LIMIT && !cm.at_place && kafka_ev_header(&ev, "evhost_redrive") &&
	    msg_time(msg) > cm.at_ms)
		crashed = 0;
	if (crashed >= CRASH_RECORD_LIMIT) {
		/* Its handler would crash the daemon again, at every start (or use
		 * up its memory, or hold the stop). Kept until the stop: copies of
		 * it (the same id) go the same way. */
		out = OUT_REJECT;
		if (cm.killed)
			snprintf(ev.error, sizeof ev.error,
			         "evhostd did not stop cleanly while the plugin handled this event (it "
			         "crashed, or was killed: the OOM killer, SIGKILL, the stop's guard) at "
			         "%ld starts in a row: dead-lettered without calling its handler again",
			         crashed);
		else
			snprintf(ev.error, sizeof ev.error,
			         "the plugin crashed handling this event at %ld starts in a row: "
			         "dead-lettered without calling its handler again",
			         crashed);
	} else if (first < c->p->nsubs) {
		double t0 = metrics_now();
		trace_span span;
		process_span_begin(&span, c, &ev);
		out = tx ? run_handlers(c, &ev, tx, first, sub)
		         : run_handlers_alone(c, &ev, first, sub);
		c->last_duplicate = ev.duplicate;
		if (crashed)
			crash_record_forget(&cm); /* it did not end the daemon this time */
		/* A full database waits, using up no attempt: when this attempt
		 * met it (a statement of its own failed for want of room, in a
		 * batch too, before the store is marked full at the batch's end),
		 * or failed in storage while the store is marked full (a commit
		 * another thread's group made). Not a handler's own retry while
		 * the mark stays (till a commit goes through): that one counts,
		 * or a poison event would never be dead-lettered. A full outbox
		 * waits too: the relay makes room once the broker takes events.
		 * Unless the outbox is empty (none of the batch's rows in it
		 * either: a retry is alone), so that this event's publishes alone
		 * exceed outbox_max_rows: no room would ever come, and it is
		 * retried as any failed attempt. */
		if (out == OUT_RETRY &&
		    (store_thread_room_lost() != room_lost ||
		     (c->attempt_storage && store_full(c->p->store)) ||
		     (c->attempt_full && (tx || store_outbox_pending(c->p->store) > 0))))
			out = OUT_WAIT;
		if (out != OUT_RETRY && out != OUT_WAIT)
			c->attempt_full = 0;
		/* Alone, `out` tells of the commit too. In a batch the handler's
		 * writes are only in the transaction, whose COMMIT is what a full
		 * disk refuses: handle_batch ends the episodes once it commits. */
		if (!tx)
			wait_episodes_end(c, wait_causes_met(c, out), 0);
		metrics_event_handler_time(c->p->name, ev.topic, metrics_now() - t0);
		process_span_end(&span, &ev, out);
	} else {
		/* The plugin subscribed to this topic for other types only (or
		 * the type was cut): an event it has no handler for is a dead
		 * letter, not a silent skip (that would commit past it and lose it). */
		out = OUT_REJECT;
		if (ev.meta.type_cut)
			snprintf(ev.error, sizeof ev.error,
			         "ce_type is longer than %zu bytes or holds a NUL byte",
			         sizeof ev.meta.type - 1);
		else if (ev.meta.type[0])
			snprintf(ev.error, sizeof ev.error,
			         "no handler for ce_type '%s' on topic %s", ev.meta.type, ev.topic);
		else
			snprintf(ev.error, sizeof ev.error,
			         "no ce_type header, and every handler on topic %s needs one",
			         ev.topic);
	}
	if (out == OUT_REJECT)
		snprintf(err, errlen, "%s", ev.error[0] ? ev.error : "rejected by handler");
	else if (out == OUT_KEEP)
		snprintf(err, errlen, "%s",
		         ev.error[0] ? ev.error : "handler kept its writes and gave the event up");
	else if (out == OUT_KEEP_RETRY)
		snprintf(err, errlen, "%s",
		         ev.error[0] ? ev.error : "handler kept its writes and asked to retry");
	else if (out == OUT_KEEP_GO_ON)
		snprintf(err, errlen, "%s",
		         ev.error[0] ? ev.error : "handler kept its writes and asked to go on");
	else if (out == OUT_KEEP_WAIT)
		snprintf(err, errlen, "%s",
		         ev.error[0] ? ev.error : "handler kept its writes and waits for room");
	else if (out == OUT_RETRY || out == OUT_WAIT)
		snprintf(err, errlen, "%s", ev.error[0] ? ev.error : "handler asked to retry");
	event_free(&ev);
	return out;
}

/* ---- dead letters ---- */

/* Shared between a consumer waiting for its dead-letter write and the
 * delivery callback, which may run on another thread (whoever polls the
 * producer) and possibly after the waiter gave up: the last one frees it. */
struct dlq_wait {
	pthread_mutex_t mu;
	int refs, done, ok, too_big;
	char error[256];
};

static void dlq_wait_release(struct dlq_wait *w)
{
	int last;
	pthread_mutex_lock(&w->mu);
	last = --w->refs == 0;
	pthread_mutex_unlock(&w->mu);
	if (!last)
		return;
	pthread_mutex_destroy(&w->mu);
	free(w);
}

static void dlq_delivered(void *opaque, const rd_kafka_message_t *m)
{
	struct dlq_wait *w = opaque;
	const char *error;
	pthread_mutex_lock(&w->mu);
	w->done = 1;
	w->ok = delivery_ok(m, &error);
	w->too_big = m->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE;
	snprintf(w->error, sizeof w->error, "%s", w->ok ? "" : error);
	pthread_mutex_unlock(&w->mu);
	dlq_wait_release(w);
}

static void header_addf(rd_kafka_headers_t *h, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void header_addf(rd_kafka_headers_t *h, const char *name, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	rd_kafka_header_add(h, name, -1, buf, -1);
}

static rd_kafka_headers_t *dlq_headers(struct consumer *c, const rd_kafka_message_t *msg,
                                       int attempts, const char *error, int truncated)
{
	rd_kafka_headers_t *orig = NULL, *h;
	char now[40];
	if (rd_kafka_message_headers(msg, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR && orig)
		h = rd_kafka_headers_copy(orig);
	else
		h = rd_kafka_headers_new(8);
	if (!h)
		return NULL;
	events_now_rfc3339(now);
	header_addf(h, "evhost_dlq_topic", "%s", rd_kafka_topic_name(msg->rkt));
	header_addf(h, "evhost_dlq_partition", "%" PRId32, msg->partition);
	header_addf(h, "evhost_dlq_offset", "%" PRId64, msg->offset);
	header_addf(h, "evhost_dlq_plugin", "%s", c->p->name);
	header_addf(h, "evhost_dlq_attempts", "%d", attempts);
	header_addf(h, "evhost_dlq_error", "%s", error);
	header_addf(h, "evhost_dlq_time", "%s", now);
	if (truncated)
		header_addf(h, "evhost_dlq_truncated", "%zu", msg->len);
	return h;
}

/* Hand one dead letter to the producer; its delivery report comes to *out.
 * `truncated`: send only the start of the value (the whole one was too
 * big). Returns 1 when sent on its way, 0 when it could not be (try again),
 * 2 when it is too big for the producer. */
static int dlq_send_start(struct consumer *c, const char *topic, const rd_kafka_message_t *msg,
                          int attempts, const char *error, int truncated,
                          struct dlq_wait **out, char *why, size_t whylen)
{
	struct dlq_wait *w = calloc(1, sizeof *w);
	rd_kafka_headers_t *h = dlq_headers(c, msg, attempts, error, truncated);
	struct kafka_dr dr = {.msg_cb = dlq_delivered, .opaque = w};
	size_t len = truncated && msg->len > DLQ_TRUNCATE_BYTES ? DLQ_TRUNCATE_BYTES : msg->len;
	int rc;
	if (!w || !h) {
		free(w);
		if (h)
			rd_kafka_headers_destroy(h);
		snprintf(why, whylen, "out of memory");
		return 0;
	}
	pthread_mutex_init(&w->mu, NULL);
	w->refs = 2;
	rc = produce(c->k, topic, RD_KAFKA_PARTITION_UA, 0, msg->key, msg->key_len, msg->payload,
	             len, h, &dr);
	if (rc != EVH_OK) {
		if (rc == EVH_ETOOBIG) /* under 64 KiB, or cut to it: only a new limit helps */
			snprintf(why, whylen,
			         "produce failed: the dead letter (%zu bytes and its headers) is larger "
			         "than message.max.bytes (%zu): raise [kafka] rdkafka.message.max.bytes "
			         "and restart",
			         len, c->k->max_message_bytes);
		else
			snprintf(why, whylen, "produce failed: %s",
			         rc == EVH_EBUSY       ? "queue full"
			         : rc == EVH_ENOTFOUND ? KAFKA_NO_TOPIC
			                               : "see log");
		w->refs = 1;
		dlq_wait_release(w);
		return rc == EVH_ETOOBIG ? 2 : 0;
	}
	*out = w;
	return 1;
}

/* Has the dead letter of `w` had its delivery report? Then *ok says whether
 * it was written, *too_big whether it was refused for its size, and `why`
 * what went wrong. */
static int dlq_wait_done(struct dlq_wait *w, int *ok, int *too_big, char *why, size_t whylen)
{
	int done;
	pthread_mutex_lock(&w->mu);
	done = w->done;
	*ok = w->ok;
	*too_big = w->too_big;
	snprintf(why, whylen, "%s", w->error);
	pthread_mutex_unlock(&w->mu);
	return done;
}

/* Sleep `ms` on the consumer's thread, unless it is told to stop meanwhile:
 * returns 0 then. */
static int sleep_unless_stopping(struct consumer *c, int ms)
{
	for (; ms > 0 && !atomic_load(&c->stop); ms -= POLL_MS)
		sleep_ms(ms < POLL_MS ? ms : POLL_MS);
	return !atomic_load(&c->stop);
}

enum dl_step { DL_WRITTEN, DL_IN_FLIGHT, DL_FAILED };

/* One step of writing `msg` to <topic>.<plugin><suffix>: send it when
 * nothing is in flight, and see what became of what is. Never blocks.
 * DL_FAILED: refused or not sent; send again after d->wait_ms (said in the
 * log), which doubles from DLQ_RETRY_FIRST_MS up to the subscription's
 * retry.backoff_max_ms (at least DLQ_RETRY_MIN_MS): losing a dead letter
 * would lose the event. A message over DLQ_TRUNCATE_BYTES too big for the
 * dead-letter topic is sent again at once with only its first
 * DLQ_TRUNCATE_BYTES and an evhost_dlq_truncated header (its full size):
 * blocking the partition forever would be worse. */
static enum dl_step dead_letter_step(struct consumer *c, const rd_kafka_message_t *msg,
                                     int attempts, const char *error, size_t sub,
                                     struct dlq_send *d)
{
	char topic[512], why[256];
	const char *src = rd_kafka_topic_name(msg->rkt);
	int rc = 1, ok = 0, too_big = 0, max = c->policy[sub].backoff_max_ms;
	if (max < DLQ_RETRY_MIN_MS)
		max = DLQ_RETRY_MIN_MS;
	kafka_dlq_topic(src, c->p->name, c->dlq_suffix, topic, sizeof topic);
	if (!d->w)
		rc = dlq_send_start(c, topic, msg, attempts, error, d->truncated, &d->w, why,
		                    sizeof why);
	if (rc == 1) {
		rd_kafka_poll(c->k->producer, 0); /* its report, if the relay is idle */
		if (!dlq_wait_done(d->w, &ok, &too_big, why, sizeof why))
			return DL_IN_FLIGHT;
		dlq_wait_release(d->w);
		d->w = NULL;
		if (ok) {
			metrics_dlq_message(c->p->name, src);
			return DL_WRITTEN;
		}
	}
	if ((rc == 2 || too_big) && !d->truncated && msg->len > DLQ_TRUNCATE_BYTES) {
		log_warn(KAFKA_LOG,
		         "%s: %s [%" PRId32 "] @%" PRId64 " (%zu bytes) is too big for %s (%s); "
		         "dead-lettering its first %d bytes",
		         plugin_label(c), src, msg->partition, msg->offset, msg->len, topic, why,
		         DLQ_TRUNCATE_BYTES);
		d->truncated = 1;
		d->wait_ms = 0;
		return DL_FAILED;
	}
	if (!d->delay_ms)
		d->delay_ms = DLQ_RETRY_FIRST_MS < max ? DLQ_RETRY_FIRST_MS : max;
	d->wait_ms = d->delay_ms;
	d->delay_ms = d->delay_ms > max / 2 ? max : d->delay_ms * 2;
	log_error(KAFKA_LOG, "%s: dead letter to %s failed (%s); retrying in %d ms; %s [%" PRId32
	                     "] waits for it from @%" PRId64,
	          plugin_label(c), topic, why, d->wait_ms, src, msg->partition, msg->offset);
	return DL_FAILED;
}

/* Step the dead letter of `msg` on, waiting on this thread, until it is
 * written or, with until_ms >= 0, until then or its first failed send that
 * is to wait (the caller parks it); with until_ms < 0 only a stop ends the
 * wait. Returns the last step's outcome. */
static enum dl_step dead_letter_wait(struct consumer *c, const rd_kafka_message_t *msg,
                                     int attempts, const char *error, size_t sub,
                                     struct dlq_send *d, int64_t until_ms)
{
	for (;;) {
		enum dl_step st = dead_letter_step(c, msg, attempts, error, sub, d);
		if (st == DL_WRITTEN || (until_ms < 0 && atomic_load(&c->stop)) ||
		    (until_ms >= 0 && (clock_mono_ms() >= until_ms || (st == DL_FAILED && d->wait_ms))))
			return st;
		if (st == DL_IN_FLIGHT)
			rd_kafka_poll(c->k->producer, 10);
		else
			sleep_unless_stopping(c, d->wait_ms);
	}
}

/* ---- retries ---- */

/* Seek the finished slot's partition past its message and resume it. The
 * seek also drops anything fetched while it was paused. Returns 0 when
 * done (slot removed). */
static int slot_resume(struct consumer *c, struct retry_slot *s)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_error_t *e;
	struct pbuf *b;
	rd_kafka_resp_err_t perr;
	rd_kafka_topic_partition_list_add(l, s->topic, s->partition)->offset = s->resume_offset;
	e = seek_partitions(c->rk, l, SEEK_TIMEOUT_MS);
	perr = l->elems[0].err;
	rd_kafka_topic_partition_list_destroy(l);
	if (e || perr) {
		log_warn(KAFKA_LOG,
		         "%s: cannot seek %s [%" PRId32 "] to %" PRId64 ": %s; will retry",
		         plugin_label(c), s->topic, s->partition, s->resume_offset,
		         e ? rd_kafka_error_string(e) : rd_kafka_err2str(perr));
		rd_kafka_error_destroy(e);
		s->due_ms = clock_mono_ms() + 1000;
		return -1;
	}
	b = pbuf_find(c, s->topic, s->partition);
	if (b)
		b->sought = s->resume_offset;
	partition_pause(c, s->topic, s->partition, 0);
	slot_remove(c, s);
	return 0;
}

static struct retry_slot *slot_add(struct consumer *c, rd_kafka_message_t *msg)
{
	struct retry_slot *s;
	struct pbuf *b;
	if (c->nslots == c->capslots) {
		size_t cap = c->capslots ? c->capslots * 2 : 4;
		struct retry_slot *n = realloc(c->slots, cap * sizeof *n);
		if (!n)
			return NULL;
		c->slots = n;
		c->capslots = cap;
	}
	s = &c->slots[c->nslots];
	memset(s, 0, sizeof *s);
	s->topic = strdup(rd_kafka_topic_name(msg->rkt));
	if (!s->topic)
		return NULL;
	s->partition = msg->partition;
	c->nslots++;
	partition_pause(c, s->topic, s->partition, 1);
	/* What was buffered behind it is fetched again after the seek. */
	b = pbuf_find(c, s->topic, s->partition);
	if (b)
		pbuf_clear(c, b);
	return s;
}

/* How an event is handled again: a retry (OUT_RETRY, OUT_KEEP_RETRY), a
 * wait (OUT_WAIT), or the next call of a handler going on (OUT_KEEP_GO_ON). */
enum again { AGAIN_RETRY, AGAIN_WAIT, AGAIN_GO_ON };

static enum again again_of(enum outcome out)
{
	return out == OUT_WAIT || out == OUT_KEEP_WAIT ? AGAIN_WAIT
	       : out == OUT_KEEP_GO_ON                 ? AGAIN_GO_ON
	                                               : AGAIN_RETRY;
}

/* How long before the attempt after `attempts`: a wait, the policy's
 * longest backoff; going on, none. */
static int retry_delay(const struct consumer *c, size_t sub, int attempts, enum again how)
{
	const struct retry_policy *pol = &c->policy[sub];
	return how == AGAIN_WAIT    ? pol->backoff_max_ms
	       : how == AGAIN_GO_ON ? 0
	                            : kafka_retry_delay_ms(pol->backoff_ms, pol->backoff_max_ms,
	                                                   attempts, random_u32());
}

/* Retry attempt `attempts` + 1 later; a wait (AGAIN_WAIT) or going on
 * (AGAIN_GO_ON): the attempt made does not count. */
static void schedule_retry(struct consumer *c, struct retry_slot *s, rd_kafka_message_t *msg,
                           int attempts, size_t sub, const char *error, enum again how)
{
	const struct retry_policy *pol = &c->policy[sub];
	int delay = retry_delay(c, sub, attempts, how), waiting = how == AGAIN_WAIT;
	s->msg = msg;
	s->attempts = how == AGAIN_RETRY ? attempts : attempts - 1;
	s->sub = sub;
	s->due_ms = clock_mono_ms() + delay;
	s->room_below = waiting && c->attempt_full ? store_outbox_pending(c->p->store) : 0;
	snprintf(s->error, sizeof s->error, "%s", error);
	if (how == AGAIN_GO_ON) {
		log_debug(KAFKA_LOG,
		          "%s: %s [%" PRId32 "] @%" PRId64 " attempt %d: %s; handled again now",
		          plugin_label(c), s->topic, s->partition, msg->offset, attempts, error);
		return;
	}
	if (waiting) {
		/* A full outbox stays full until the relay sends (the broker is
		 * away, or slow), a full database until its disk has room: every
		 * event met then would say each of its waits. */
		wait_said(c, s, msg->offset,
		          c->attempt_full   ? WAIT_OUTBOX_FULL
		          : c->attempt_room ? WAIT_NO_ROOM
		                            : WAIT_DATABASE_FULL,
		          error, delay);
		return;
	}
	if (c->attempt_full)
		event_log(c, EVH_LOG_WARN,
		          "%s: %s [%" PRId32 "] @%" PRId64 " attempt %d/%d failed (%s); retry in %d ms: "
		          "the outbox is empty, yet its publishes do not fit in [store] "
		          "outbox_max_rows",
		          plugin_label(c), s->topic, s->partition, msg->offset, attempts,
		          pol->max_attempts, error, delay);
	else
		event_log(c, EVH_LOG_INFO,
		          "%s: %s [%" PRId32 "] @%" PRId64 " attempt %d/%d failed (%s); retry in %d ms",
		          plugin_label(c), s->topic, s->partition, msg->offset, attempts,
		          pol->max_attempts, error, delay);
}

/* Dead-letter `msg`, whose attempt `attempts` came to `error`. Returns 1
 * once its dead letter is written (the caller stores its offset and still
 * owns `msg`). A dead letter not written within DLQ_INLINE_MS (the topic
 * refuses it, or the broker is slow to answer) is parked in a slot (`s`,
 * its retry slot, or a new one): its partition waits, paused, and
 * serve_slots carries on with it while the plugin's other partitions are
 * handled and the consumer keeps polling, so however long the dead-letter
 * topic refuses, the consumer stays in its group. Returns 0 then, and also
 * when stopping first without a slot (`msg` is then left uncommitted,
 * redelivered later); either way `msg` is no longer the caller's. */
static int dead_letter(struct consumer *c, rd_kafka_message_t *msg, int attempts, size_t sub,
                       const char *error, struct retry_slot *s)
{
	struct dlq_send d = {0};
	char topic[512];
	const char *src = rd_kafka_topic_name(msg->rkt);
	kafka_dlq_topic(src, c->p->name, c->dlq_suffix, topic, sizeof topic);
	event_log(c, EVH_LOG_WARN,
	          "%s: %s [%" PRId32 "] @%" PRId64 " dead-lettered to %s after %d attempt(s): %s",
	          plugin_label(c), src, msg->partition, msg->offset, topic, attempts, error);
	if (dead_letter_wait(c, msg, attempts, error, sub, &d, clock_mono_ms() + DLQ_INLINE_MS) ==
	    DL_WRITTEN)
		return 1;
	if (!s)
		s = slot_add(c, msg);
	if (s) {
		if (d.w)
			event_log(c, EVH_LOG_INFO,
			          "%s: the dead letter to %s is not acknowledged yet; %s [%" PRId32
			          "] waits for it from @%" PRId64 ", the others go on",
			          plugin_label(c), topic, src, msg->partition, msg->offset);
		s->msg = msg;
		s->dead = 1;
		s->dl = d;
		s->attempts = attempts;
		s->sub = sub;
		s->due_ms = clock_mono_ms() + (d.w ? DLQ_CHECK_MS : d.wait_ms);
		snprintf(s->error, sizeof s->error, "%s", error);
		return 0;
	}
	log_error(KAFKA_LOG, "%s: %s [%" PRId32 "] @%" PRId64 ": out of memory parking its dead "
	                     "letter; waiting for it here, nothing else of this plugin handled",
	          plugin_label(c), src, msg->partition, msg->offset);
	if (dead_letter_wait(c, msg, attempts, error, sub, &d, -1) == DL_WRITTEN)
		return 1;
	log_warn(KAFKA_LOG, "%s: stopping before the dead letter to %s was written; %s [%" PRId32
	                    "] @%" PRId64 " will be redelivered",
	         plugin_label(c), topic, src, msg->partition, msg->offset);
	if (d.w)
		dlq_wait_release(d.w);
	rd_kafka_message_destroy(msg);
	return 0;
}

/* The parked dead letter of `s`, due: one step on. Once written, the
 * message's offset is stored and its partition resumes after it. */
static void dead_letter_resume(struct consumer *c, struct retry_slot *s)
{
	enum dl_step st = dead_letter_step(c, s->msg, s->attempts, s->error, s->sub, &s->dl);
	if (st != DL_WRITTEN) {
		s->due_ms = clock_mono_ms() + (st == DL_IN_FLIGHT ? DLQ_CHECK_MS : s->dl.wait_ms);
		return;
	}
	event_log(c, EVH_LOG_INFO,
	          "%s: %s [%" PRId32 "] @%" PRId64 " dead-lettered; its partition goes on",
	          plugin_label(c), s->topic, s->partition, s->msg->offset);
	store_offset(c, s->msg);
	s->resume_offset = s->msg->offset + 1;
	rd_kafka_message_destroy(s->msg);
	s->msg = NULL;
	s->dead = 0;
	slot_resume(c, s);
}

/* Stopping (`parts` NULL), or giving up `parts` in a rebalance: the parked
 * dead letters in flight there get until `until` to be written, so that
 * those written have their offsets stored (and committed next) rather than
 * being written a second time by whoever handles the message next. One not
 * acknowledged by then is left to drop_slots: its message is handled again
 * (a second dead letter if the broker wrote this one late). */
static void finish_dead_letters(struct consumer *c, const rd_kafka_topic_partition_list_t *parts,
                                int64_t until)
{
	char why[256];
	for (size_t i = 0; i < c->nslots;) {
		struct retry_slot *s = &c->slots[i];
		int ok = 0, too_big, done;
		char how[320];
		if (!s->dead || !s->dl.w ||
		    (parts && !rd_kafka_topic_partition_list_find(parts, s->topic, s->partition))) {
			i++;
			continue;
		}
		while (!(done = dlq_wait_done(s->dl.w, &ok, &too_big, why, sizeof why)) &&
		       clock_mono_ms() < until)
			rd_kafka_poll(c->k->producer, 10);
		if (!ok) {
			if (done)
				snprintf(how, sizeof how, "failed (%s)", why);
			else if (parts)
				snprintf(how, sizeof how, "is not acknowledged within %d ms",
				         DLQ_WAIT_REVOKE_MS);
			else
				snprintf(how, sizeof how, "is not acknowledged within the stop's time "
				                          "([host] stop_timeout)");
			log_warn(KAFKA_LOG, "%s: %s: the dead letter of %s [%" PRId32 "] @%" PRId64
			                    " %s; the message is handled again %s",
			         plugin_label(c), parts ? "partition revoked" : "stopping", s->topic,
			         s->partition, s->msg->offset, how,
			         parts ? "by the partition's next owner" : "at the next start");
			i++;
			continue;
		}
		log_info(KAFKA_LOG, "%s: %s: the dead letter of %s [%" PRId32 "] @%" PRId64
		                    " is written; its offset is committed next",
		         plugin_label(c), parts ? "partition revoked" : "stopping", s->topic,
		         s->partition, s->msg->offset);
		metrics_dlq_message(c->p->name, s->topic);
		store_offset(c, s->msg);
		if (parts)
			partition_pause(c, s->topic, s->partition, 0);
		slot_remove(c, s);
	}
}

static const char *msg_header(const rd_kafka_message_t *m, const char *name, size_t *len);

/* The lines about `msg`'s retry or dead letter carry the trace of its
 * attempts' spans: its traceparent's (none when it has none; each attempt
 * then began a trace of its own). */
static void log_trace_of(const rd_kafka_message_t *msg)
{
	char tp[64], id[33] = "";
	size_t n;
	const char *v = msg_header(msg, "traceparent", &n);
	if (v && n < sizeof tp) {
		memcpy(tp, v, n);
		tp[n] = '\0';
		if (events_trace_id(tp, id) != 0)
			id[0] = '\0';
	}
	log_set_context(NULL, id[0] ? id : NULL);
}

static void settle_traced(struct consumer *c, rd_kafka_message_t *msg, int attempt,
                          struct retry_slot *s, enum outcome out, size_t sub, const char *err);

/* Act on what attempt `attempt` of `msg` came to (its writes, if any, are
 * committed): schedule a retry, dead-letter it, or store its offset. Takes
 * ownership of `msg`; `s` is its retry slot when this was a retry. */
static void settle(struct consumer *c, rd_kafka_message_t *msg, int attempt,
                   struct retry_slot *s, enum outcome out, size_t sub, const char *err)
{
	if (out == OUT_DONE) {
		settle_traced(c, msg, attempt, s, out, sub, err);
		return;
	}
	log_trace_of(msg);
	settle_traced(c, msg, attempt, s, out, sub, err);
	log_set_context(NULL, NULL);
}

static void settle_traced(struct consumer *c, rd_kafka_message_t *msg, int attempt,
                          struct retry_slot *s, enum outcome out, size_t sub, const char *err)
{
	char again_err[512];
	/* A retry asked for once the plugin is winding down (a stop, a reload's
	 * drain: evh_stopping) may be the handler cutting its work short for
	 * it: scheduled as ever, attempts left or not, never dead-lettered. The
	 * stop drops it (drop_slots), and the event comes again after the start,
	 * or to the plugin's new instance. */
	while (out == OUT_WAIT || out == OUT_KEEP_WAIT || out == OUT_KEEP_GO_ON ||
	       (outcome_retries(out) && (attempt < c->policy[sub].max_attempts ||
	                                 plugin_stopping(c->p)))) {
		enum again how = again_of(out);
		int delay;
		if (!s)
			s = slot_add(c, msg);
		if (s) {
			schedule_retry(c, s, msg, attempt, sub, err, how);
			/* Going on is no failure: counted once the event is done. */
			if (how != AGAIN_GO_ON)
				metrics_event_handled(c->p->name, s->topic, METRICS_EVENT_RETRY);
			return;
		}
		/* No slot to be had (out of memory): the retry is made here, after
		 * its backoff, nothing else of this plugin handled meanwhile (so
		 * the partition's order holds), rather than giving the event up. */
		delay = retry_delay(c, sub, attempt, how);
		log_error(KAFKA_LOG, "%s: %s [%" PRId32 "] @%" PRId64 ": out of memory scheduling "
		                     "a retry (%s); trying again in place in %d ms",
		          plugin_label(c), rd_kafka_topic_name(msg->rkt), msg->partition,
		          msg->offset, err, delay);
		if (how != AGAIN_GO_ON)
			metrics_event_handled(c->p->name, rd_kafka_topic_name(msg->rkt),
			                      METRICS_EVENT_RETRY);
		if (!sleep_unless_stopping(c, delay)) {
			rd_kafka_message_destroy(msg); /* uncommitted: redelivered later */
			return;
		}
		if (how == AGAIN_RETRY)
			attempt++;
		out = dispatch(c, NULL, msg, attempt, &sub, again_err, sizeof again_err);
		err = again_err;
		log_trace_of(msg); /* the attempt's span ended with dispatch */
	}
	if (s)
		s->msg = NULL; /* ownership is back here */
	if (out != OUT_DONE) {
		metrics_event_handled(c->p->name, rd_kafka_topic_name(msg->rkt),
		                      outcome_retries(out) ? METRICS_EVENT_DLQ
		                                           : METRICS_EVENT_REJECT);
		if (!dead_letter(c, msg, attempt, sub, err, s))
			return; /* parked in a slot, or stopping */
	}
	store_offset(c, msg);
	if (s) {
		s->resume_offset = msg->offset + 1;
		slot_resume(c, s);
	}
	rd_kafka_message_destroy(msg);
}

/* Handle `msg` alone, in a transaction of its own, for attempt `attempt`;
 * takes ownership of it. `s` is its retry slot when this is a retry. */
static void handle_message(struct consumer *c, rd_kafka_message_t *msg, int attempt,
                           struct retry_slot *s)
{
	char err[512];
	size_t sub;
	enum outcome out = dispatch(c, NULL, msg, attempt, &sub, err, sizeof err);
	settle(c, msg, attempt, s, out, sub, err);
}

/* Act on the next slot that is due, in turn: one due again at once (a
 * handler that keeps going on, EVH_EVENT_KEEP_AND_CONTINUE) does not keep
 * the others waiting. Returns 1 when something was done. */
static int serve_slots(struct consumer *c)
{
	int64_t now = clock_mono_ms();
	for (size_t k = 0; k < c->nslots; k++) {
		size_t i = (c->slot_turn + k) % c->nslots;
		struct retry_slot *s = &c->slots[i];
		/* A wait for room in the outbox ends once the relay has sent. */
		int room = s->msg && !s->dead && s->room_below > 0 &&
		           store_outbox_pending(c->p->store) < s->room_below;
		if (s->due_ms > now && !room)
			continue;
		c->slot_turn = i + 1;
		if (!s->msg)
			slot_resume(c, s);
		else if (s->dead)
			dead_letter_resume(c, s);
		else
			handle_message(c, s->msg, s->attempts + 1, s);
		return 1;
	}
	return 0;
}

static int poll_timeout(const struct consumer *c)
{
	int64_t now = clock_mono_ms(), t = POLL_MS;
	for (size_t i = 0; i < c->nslots; i++)
		if (c->slots[i].due_ms - now < t)
			t = c->slots[i].due_ms - now;
	return t < 0 ? 0 : (int)t;
}

static void drop_slots(struct consumer *c, const rd_kafka_topic_partition_list_t *parts,
                       int resume)
{
	for (size_t i = 0; i < c->nslots;) {
		struct retry_slot *s = &c->slots[i];
		if (parts && !rd_kafka_topic_partition_list_find(parts, s->topic, s->partition)) {
			i++;
			continue;
		}
		if (s->msg)
			log_info(KAFKA_LOG, "%s: %s [%" PRId32 "] @%" PRId64 ": pending %s dropped; it is "
			                    "redelivered from the committed offset",
			         plugin_label(c), s->topic, s->partition, s->msg->offset,
			         s->dead ? "dead letter" : "retry");
		else /* done with; only its seek past it was yet to succeed */
			log_info(KAFKA_LOG, "%s: %s [%" PRId32 "] @%" PRId64 ": done with, its seek to "
			                    "the next message dropped; the partition goes on from the "
			                    "committed offset",
			         plugin_label(c), s->topic, s->partition, s->resume_offset - 1);
		if (resume)
			partition_pause(c, s->topic, s->partition, 0);
		slot_remove(c, s);
	}
}


/* ---- group membership ---- */

/* How long a revocation waits for its partitions' dead letters on their
 * way: DLQ_WAIT_REVOKE_MS, or less when stopping by then. */
static int64_t revoke_deadline(struct consumer *c)
{
	int64_t until = clock_mono_ms() + DLQ_WAIT_REVOKE_MS;
	int64_t stop_by = atomic_load(&c->stop_by_ms);
	return atomic_load(&c->stop) && stop_by < until ? stop_by : until;
}

static void rdk_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	struct consumer *c = opaque;
	const char *proto = rd_kafka_rebalance_protocol(rk);
	int coop = proto && !strcmp(proto, "COOPERATIVE");
	rd_kafka_error_t *e = NULL;
	rd_kafka_resp_err_t ae = RD_KAFKA_RESP_ERR_NO_ERROR;
	switch (err) {
	case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
		log_info(KAFKA_LOG, "%s: assigned %d partition(s)", plugin_label(c), parts->cnt);
		c->members_check_at = clock_mono_ms() + MEMBERS_CHECK_AFTER_MS;
		if (c->coop_assigns_due > 0 && --c->coop_assigns_due == 0)
			c->commit_hold_until = 0;
		/* Every assigned partition takes part in ordered dispatch from
		 * now on, before it delivered anything: its first messages may be
		 * older than another's. */
		for (int i = 0; i < parts->cnt; i++)
			pbuf_add(c, parts->elems[i].topic, parts->elems[i].partition);
		if (coop)
			e = rd_kafka_incremental_assign(rk, parts);
		else
			ae = rd_kafka_assign(rk, parts);
		break;
	case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
		log_info(KAFKA_LOG, "%s: %d partition(s) revoked%s", plugin_label(c), parts->cnt,
		         rd_kafka_assignment_lost(rk) ? " (lost)" : "");
		/* At the close consumer_main has settled the dead letters and
		 * committed just before: nothing is left to. A commit here (it
		 * waits for the broker) let the answer to the LeaveGroup the close
		 * sends come first when a rebalance was under way (a handler held
		 * the thread through it): "Unknown member", librdkafka 2.0.2 took
		 * the assignment as lost, ended the group, and never answered the
		 * rd_kafka_assign below. The close hung until the stop's guard
		 * ended the daemon (status 3). */
		if (!rd_kafka_assignment_lost(rk) && !c->closing)
			finish_dead_letters(c, parts, revoke_deadline(c));
		drop_slots(c, parts, 1);
		pbufs_drop(c, parts);
		if (!rd_kafka_assignment_lost(rk) && !c->closing)
			commit_stored(c, 0, 1);
		handled_forget(c, parts);
		c->coop_assigns_due = coop && parts->cnt > 0 && !rd_kafka_assignment_lost(rk) ? 2 : 0;
		c->commit_hold_until =
		    c->coop_assigns_due ? clock_mono_ms() + COOP_COMMIT_HOLD_MAX_MS : 0;
		if (coop)
			e = rd_kafka_incremental_unassign(rk, parts);
		else
			ae = rd_kafka_assign(rk, NULL);
		break;
	default:
		log_error(KAFKA_LOG, "%s: rebalance failed: %s", plugin_label(c),
		          rd_kafka_err2str(err));
		c->coop_assigns_due = 0;
		c->commit_hold_until = 0;
		drop_slots(c, NULL, 1);
		pbufs_drop(c, NULL);
		ae = rd_kafka_assign(rk, NULL);
		break;
	}
	if (e) {
		log_error(KAFKA_LOG, "%s: incremental (un)assign failed: %s", plugin_label(c),
		          rd_kafka_error_string(e));
		rd_kafka_error_destroy(e);
	}
	if (ae)
		log_error(KAFKA_LOG, "%s: (un)assign failed: %s", plugin_label(c),
		          rd_kafka_err2str(ae));
}

static void consumer_error(struct consumer *c, const rd_kafka_message_t *msg)
{
	int64_t now = clock_mono_ms();
	const char *topic = msg->rkt ? rd_kafka_topic_name(msg->rkt) : "-";
	/* A subscription to a topic nobody has produced to yet is normal at
	 * first start; say it now and then for each topic, not every metadata
	 * refresh. */
	if (no_such_topic(msg->err)) {
		evh_log_level l = EVH_LOG_DEBUG;
		int64_t *warned = NULL;
		for (size_t i = 0; i < c->p->nsubs && !warned; i++)
			if (!strcmp(c->p->subs[i].topic, topic))
				warned = &c->policy[i].missing_warned_ms;
		if (!warned || log_due(warned, now, TOPIC_WARN_EVERY_MS))
			l = EVH_LOG_WARN;
		log_msg(l, KAFKA_LOG, "%s: subscribed topic %s does not exist yet (%s): the first "
		                      "event published to it creates it where the cluster allows "
		                      "that; otherwise create it",
		        plugin_label(c), topic, rd_kafka_message_errstr(msg));
		return;
	}
	if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
		return;
	log_warn(KAFKA_LOG, "%s: consumer error on %s: %s", plugin_label(c), topic,
	         rd_kafka_message_errstr(msg));
}

/* ---- ordered dispatch: scheduling ---- */

/* A header's value, not copied (NULL when absent); *len gets its length.
 * Called for every comparison of the ordered dispatch, so nothing is copied. */
static const char *msg_header(const rd_kafka_message_t *m, const char *name, size_t *len)
{
	rd_kafka_headers_t *h = NULL;
	const void *v = NULL;
	size_t n = 0;
	*len = 0;
	if (rd_kafka_message_headers(m, &h) != RD_KAFKA_RESP_ERR_NO_ERROR || !h ||
	    rd_kafka_header_get_last(h, name, &v, &n) != RD_KAFKA_RESP_ERR_NO_ERROR || !v)
		return NULL;
	*len = n;
	return v;
}

/* The message's evhost_seq, or -1 when it has none (or not a number). */
static int64_t msg_seq(const rd_kafka_message_t *m)
{
	size_t n;
	const char *v = msg_header(m, "evhost_seq", &n);
	int64_t seq = 0;
	if (!v || !n || n > 18)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		seq = seq * 10 + (v[i] - '0');
	}
	return seq;
}

/* The head of `b`'s key, read from its headers once per head message (the
 * dispatch compares heads for every event it hands out). */
static const struct order_key *head_key(struct pbuf *b)
{
	const rd_kafka_message_t *m = b->v[b->head];
	if (b->key.m != m) {
		b->key.m = m;
		b->key.time = msg_time(m);
		b->key.seq = msg_seq(m);
		b->key.source = msg_header(m, "ce_source", &b->key.source_len);
	}
	return &b->key;
}

/* Should `a` be handled before `b`? By timestamp; on a tie, two events of
 * the same source by their outbox seq (one plugin's outbox is a total
 * order, even across topics); otherwise they stay as they came. */
static int msg_before(const struct order_key *a, const struct order_key *b)
{
	if (a->time != b->time)
		return a->time < b->time;
	if (a->seq < 0 || b->seq < 0)
		return 0;
	if (a->source_len != b->source_len ||
	    (a->source_len && memcmp(a->source, b->source, a->source_len)))
		return 0;
	return a->seq < b->seq;
}

/* ORDER_WAIT_MS and ORDER_START_WAIT_MS, lengthened by tests. */
static _Atomic int order_wait_ms = ORDER_WAIT_MS, order_start_wait_ms = ORDER_START_WAIT_MS;

void kafka_set_order_waits_ms(int wait_ms, int start_wait_ms)
{
	atomic_store(&order_wait_ms, wait_ms > 0 ? wait_ms : ORDER_WAIT_MS);
	atomic_store(&order_start_wait_ms, start_wait_ms > 0 ? start_wait_ms : ORDER_START_WAIT_MS);
}

/* How much longer the empty buffer `b` may hold the others back: while its
 * partition has messages on their way (its position is short of the end the
 * last fetch reported), or has not been fetched from at all (its first
 * messages may be the oldest), up to a bound, so a partition that lags for
 * good (a broker down) does not stop the rest. 0: it does not. */
static int64_t hold_ms(struct consumer *c, const struct pbuf *b, int64_t now)
{
	rd_kafka_topic_partition_list_t *l;
	int64_t lo = -1, hi = -1, pos, waited = now - b->empty_since;
	int64_t wait = atomic_load(&order_wait_ms), start_wait = atomic_load(&order_start_wait_ms);
	if (waited >= start_wait || slot_find(c, b->topic, b->partition))
		return 0;
	if (rd_kafka_get_watermark_offsets(c->rk, b->topic, b->partition, &lo, &hi) !=
	        RD_KAFKA_RESP_ERR_NO_ERROR ||
	    hi < 0)
		return start_wait - waited;
	l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(l, b->topic, b->partition);
	rd_kafka_position(c->rk, l);
	pos = l->elems[0].offset;
	rd_kafka_topic_partition_list_destroy(l);
	if (pos < 0 && b->sought >= 0)
		pos = b->sought; /* a retry finished, or a replay, sought it there */
	/* Nothing handled yet: an empty partition is done; otherwise its
	 * committed offset may or may not be the end, so wait (once). */
	if (pos < 0 ? hi == 0 || lo == hi : pos >= hi)
		return 0;
	return waited < wait ? wait - waited : 0;
}

/* The buffer whose first message is due now, or NULL; then *wait_ms is how
 * long an empty partition may still hold the others back, or -1 when
 * nothing is buffered at all. */
static struct pbuf *next_buffer(struct consumer *c, int *wait_ms)
{
	struct pbuf *best = NULL;
	int64_t now = clock_mono_ms(), wait = 0;
	for (size_t i = 0; i < c->nbufs; i++) {
		struct pbuf *b = &c->bufs[i];
		if (b->n) {
			if (!best || msg_before(head_key(b), head_key(best)))
				best = b;
		} else if (c->nbuffered < ORDER_BUF_MAX) {
			int64_t hold = hold_ms(c, b, now);
			if (hold > wait)
				wait = hold;
		}
	}
	*wait_ms = !best ? -1 : (int)wait;
	return best && !wait ? best : NULL;
}

/* `msg` could not be buffered (out of memory): handle it now, but after
 * what its partition has buffered before it. Handling it first would break
 * the partition's order, and store an offset past messages not yet handled
 * (a commit then, and a crash, would lose them). A retry scheduled on the
 * way pauses the partition: the rest is fetched again after its seek. */
static void handle_unbuffered(struct consumer *c, rd_kafka_message_t *msg)
{
	const char *topic = rd_kafka_topic_name(msg->rkt);
	struct pbuf *b = pbuf_find(c, topic, msg->partition);
	while (b && b->n && !slot_find(c, topic, msg->partition) && !atomic_load(&c->stop))
		handle_message(c, pbuf_pop(c, b), 1, NULL);
	/* Stopping, the message before may have been left (a retry made in
	 * place, out of memory, cut short): this one is not handled after it,
	 * nor its offset stored past it. It comes again after the start. */
	if (slot_find(c, topic, msg->partition) || atomic_load(&c->stop))
		rd_kafka_message_destroy(msg);
	else
		handle_message(c, msg, 1, NULL);
}

/* The consumer thread's step `what` (a static string, one of BUSY_KINDS),
 * begun at `t0` (clock_mono_ms), is done: its time is added to its kind's
 * since the last poll, for busy_report. */
static void busy_step(struct consumer *c, const char *what, int64_t t0)
{
	int64_t took = clock_mono_ms() - t0;
	for (size_t i = 0; i < BUSY_KINDS; i++) {
		if (!c->busy[i].what || c->busy[i].what == what) {
			c->busy[i].what = what;
			c->busy[i].ms += took;
			return;
		}
	}
}

/* About to poll: a thread that went half of max.poll.interval.ms or more
 * without it is said, with what the time went on (each kind of step that
 * took a tenth of it or more, the longest first: a batch and a retry run
 * back to back are both named), before librdkafka's MAXPOLL (which names
 * neither) takes the consumer out of its group. */
static void busy_report(struct consumer *c)
{
	int64_t gap = clock_mono_ms() - c->polled_ms;
	if (c->polled_ms && c->max_poll_ms > 0 && gap * 2 >= c->max_poll_ms) {
		char spent[320] = "";
		size_t len = 0, order[BUSY_KINDS], n = 0;
		for (size_t i = 0; i < BUSY_KINDS && c->busy[i].what; i++)
			if (c->busy[i].ms * 10 >= gap)
				order[n++] = i;
		for (size_t i = 1; i < n; i++) /* longest first */
			for (size_t j = i; j > 0 && c->busy[order[j]].ms > c->busy[order[j - 1]].ms; j--) {
				size_t t = order[j];
				order[j] = order[j - 1];
				order[j - 1] = t;
			}
		for (size_t i = 0; i < n && len < sizeof spent; i++)
			len += (size_t)snprintf(spent + len, sizeof spent - len, "%s%" PRId64 " ms %s%s",
			                        i == 0 ? ", " : " and ", c->busy[order[i]].ms,
			                        i == 0 ? "of it " : "", c->busy[order[i]].what);
		log_warn(KAFKA_LOG, "%s: %" PRId64 " ms without polling Kafka%s; max.poll.interval.ms "
		                    "is %d: past it the consumer leaves its group and its partitions "
		                    "go to the group's other members",
		         plugin_label(c), gap, spent, c->max_poll_ms);
	}
	memset(c->busy, 0, sizeof c->busy);
}

/* Take what librdkafka has, at most `max` (waiting up to timeout_ms for the
 * first). */
static void fill_buffers(struct consumer *c, int timeout_ms, int max)
{
	rd_kafka_message_t *msg;
	busy_report(c);
	msg = rd_kafka_consumer_poll(c->rk, timeout_ms);
	c->polled_ms = clock_mono_ms();
	for (int n = 0; msg; n++) {
		if (msg->err) {
			consumer_error(c, msg);
			rd_kafka_message_destroy(msg);
		} else if (slot_find(c, rd_kafka_topic_name(msg->rkt), msg->partition)) {
			/* Paused for a retry: fetched again after the seek. */
			rd_kafka_message_destroy(msg);
		} else if (pbuf_push(c, msg)) {
			log_error(KAFKA_LOG, "%s: out of memory buffering a message; handling "
			                     "it (after its partition's) now",
			          plugin_label(c));
			handle_unbuffered(c, msg);
		}
		msg = n + 1 < max ? rd_kafka_consumer_poll(c->rk, 0) : NULL;
		c->polled_ms = clock_mono_ms();
	}
}

/* ---- group commit ---- */

/* The batch's commit failed: nothing of it was written. Its messages are
 * handled again one at a time, each in a transaction of its own, so each
 * gets the retry or dead-letter treatment a lone message would. A message
 * whose partition such a retry paused meanwhile is dropped: it is fetched
 * again after the seek. */
static void batch_redo(struct consumer *c, rd_kafka_message_t **msgs, size_t n,
                       rd_kafka_message_t *failed, int status)
{
	char why[64];
	snprintf(why, sizeof why, "storage error %d", status);
	log_warn(KAFKA_LOG, "%s: committing a batch of %zu event(s) failed (%s); handling them "
	                    "one at a time",
	         plugin_label(c), n + (failed != NULL),
	         store_thread_error()[0] ? store_thread_error() : why);
	for (size_t i = 0; i <= n; i++) {
		rd_kafka_message_t *m = i < n ? msgs[i] : failed;
		if (!m)
			continue;
		/* Stopping: one before may have been left (a retry made in place,
		 * out of memory, cut short); none after it is handled, nor its
		 * offset stored past it. They come again after the start. */
		if (slot_find(c, rd_kafka_topic_name(m->rkt), m->partition) || atomic_load(&c->stop))
			rd_kafka_message_destroy(m);
		else
			handle_message(c, m, 1, NULL);
	}
}

/* BATCH_MAX_US, lengthened by tests on slow builds (kafka_set_batch_time_us). */
static _Atomic int batch_time_us = BATCH_MAX_US;

void kafka_set_batch_time_us(int us)
{
	atomic_store(&batch_time_us, us > 0 ? us : BATCH_MAX_US);
}

/* Hand what is buffered, from `b` on in dispatch order, to the handlers in
 * one storage transaction (one fsync for all), each event in a savepoint of
 * its own. The batch ends at BATCH_MAX events, after BATCH_MAX_US, when
 * nothing else is due, or at the first event that is not DONE: its savepoint
 * is rolled back (kept, for OUT_KEEP, OUT_KEEP_RETRY, OUT_KEEP_GO_ON and OUT_KEEP_WAIT), the
 * others commit, and then it is retried, dead-lettered or handled on as a
 * lone message would be. Offsets
 * are stored only after the COMMIT. No consumer poll happens meanwhile, so a rebalance (which is
 * served from a poll) never finds a batch open: revoked partitions' offsets
 * are always those of committed work. */
static void handle_batch(struct consumer *c, struct pbuf *b)
{
	rd_kafka_message_t *done[BATCH_MAX], *failed = NULL;
	unsigned char dup[BATCH_MAX];
	int64_t deadline = now_us() + atomic_load(&batch_time_us);
	enum outcome out = OUT_DONE;
	char err[512] = "";
	size_t n = 0, sub = 0;
	evh_tx *tx = NULL;
	int wait, status;
	if (store_tx_begin(c->p->store, &tx) != EVH_OK) {
		handle_message(c, pbuf_pop(c, b), 1, NULL); /* reports why and retries */
		return;
	}
	for (; b; b = next_buffer(c, &wait)) {
		rd_kafka_message_t *msg = pbuf_pop(c, b);
		out = dispatch(c, tx, msg, 1, &sub, err, sizeof err);
		if (out != OUT_DONE) {
			failed = msg;
			break;
		}
		dup[n] = (unsigned char)c->last_duplicate;
		done[n++] = msg;
		if (n == BATCH_MAX || now_us() >= deadline || atomic_load(&c->stop))
			break;
	}
	store_thread_error_clear();
	if (!n && !outcome_commits(out)) {
		store_tx_rollback(tx);
	} else if ((status = store_tx_commit(tx)) != EVH_OK) {
		batch_redo(c, done, n, failed, status);
		return;
	} else {
		/* The handlers' writes went through: the episodes of what the
		 * last attempt did not meet again end here (dispatch). */
		wait_episodes_end(c, failed ? wait_causes_met(c, out) : 0, 0);
	}
	store_offsets(c, done, n);
	for (size_t i = 0; i < n; i++) {
		count_done(c, rd_kafka_topic_name(done[i]->rkt), dup[i]);
		rd_kafka_message_destroy(done[i]);
	}
	if (failed)
		settle(c, failed, 1, NULL, out, sub, err);
}

/* One round: take messages in, hand the earliest due ones to their handlers. */
static void consume_round(struct consumer *c)
{
	int wait, timeout = poll_timeout(c);
	struct pbuf *b = next_buffer(c, &wait);
	int64_t t0;
	if (b || (wait >= 0 && wait < timeout))
		timeout = b ? 0 : wait;
	fill_buffers(c, timeout, c->nbuffered < ORDER_BUF_MAX ? FILL_MAX : 1);
	b = next_buffer(c, &wait);
	if (b) {
		t0 = clock_mono_ms();
		handle_batch(c, b);
		busy_step(c, "handling a batch of events", t0);
	}
}

/* ---- replay ---- */

static int subscribed(const struct consumer *c, const char *topic)
{
	for (size_t i = 0; i < c->p->nsubs; i++)
		if (!strcmp(c->p->subs[i].topic, topic))
			return 1;
	return 0;
}

static int replay_wants(const replay_request *req, const char *topic)
{
	if (!req->topics || !req->ntopics)
		return 1;
	for (size_t i = 0; i < req->ntopics; i++)
		if (!strcmp(req->topics[i], topic))
			return 1;
	return 0;
}

static int replay_check_topics(const struct consumer *c, const replay_request *req, char *err,
                               size_t errlen)
{
	for (size_t i = 0; i < req->ntopics; i++)
		if (!subscribed(c, req->topics[i])) {
			snprintf(err, errlen, "plugin %s does not consume topic %s", c->p->name,
			         req->topics[i]);
			return EVH_EINVAL;
		}
	for (size_t i = 0; req->from == REPLAY_OFFSETS && i < req->noffsets; i++)
		if (!subscribed(c, req->offsets[i].topic)) {
			snprintf(err, errlen, "plugin %s does not consume topic %s", c->p->name,
			         req->offsets[i].topic);
			return EVH_EINVAL;
		}
	return EVH_OK;
}

static int watermark_error_passes(rd_kafka_resp_err_t e)
{
	switch (e) {
	case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
	case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
	case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
	case RD_KAFKA_RESP_ERR__TRANSPORT: return 1;
	default: return 0;
	}
}

int kafka_watermarks(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t *lo,
                     int64_t *hi, int timeout_ms, char *err, size_t errlen)
{
	int64_t deadline = clock_mono_ms() + timeout_ms, left;
	rd_kafka_resp_err_t e;
	for (;;) {
		left = deadline - clock_mono_ms();
		e = rd_kafka_query_watermark_offsets(rk, topic, partition, lo, hi,
		                                     left > 100 ? (int)left : 100);
		if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
			return EVH_OK;
		if (!watermark_error_passes(e) || clock_mono_ms() + 100 >= deadline)
			break;
		usleep(100 * 1000);
	}
	snprintf(err, errlen, "cannot read the offsets of %s [%" PRId32 "]: %s", topic, partition,
	         rd_kafka_err2str(e));
	return EVH_EKAFKA;
}

/* What lookup_offsets asks of each partition, and how its errors read. */
enum offsets_asked { ASK_FIRST, ASK_END, ASK_BY_TIME };

static const char *offsets_failed(enum offsets_asked what)
{
	switch (what) {
	case ASK_FIRST: return "cannot read the first offset of";
	case ASK_END: return "cannot read the end offset of";
	default: return "cannot look up by time the offset of";
	}
}

/* Set each partition of `l` to its first offset, its end (the next offset
 * to be written), or the first offset at or after `time_ms`. One ListOffsets
 * request per leader for the whole list: a replay once asked each partition's
 * watermarks in turn (rd_kafka_query_watermark_offsets, two requests that the
 * broker answers after the consumer's pending fetch, fetch.wait.max.ms), so
 * it took 0.5 s per partition. A transient error (a leader moving, a
 * connection coming back) is asked again until SEEK_TIMEOUT_MS, as
 * kafka_watermarks does. Only the offsets change in `l`. */
static int lookup_offsets(struct consumer *c, rd_kafka_topic_partition_list_t *l,
                          enum offsets_asked what, int64_t time_ms, char *err, size_t errlen)
{
	int64_t deadline = clock_mono_ms() + SEEK_TIMEOUT_MS, left;
	int64_t ask = what == ASK_FIRST ? RD_KAFKA_OFFSET_BEGINNING
	              : what == ASK_END ? RD_KAFKA_OFFSET_END
	                                : time_ms;
	rd_kafka_topic_partition_list_t *q = rd_kafka_topic_partition_list_new(l->cnt);
	const rd_kafka_topic_partition_t *bad = NULL;
	rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
	if (!q) {
		snprintf(err, errlen, "out of memory");
		return EVH_ENOMEM;
	}
	for (int i = 0; i < l->cnt; i++) /* asked once each (duplicates are refused) */
		if (!rd_kafka_topic_partition_list_find(q, l->elems[i].topic, l->elems[i].partition))
			rd_kafka_topic_partition_list_add(q, l->elems[i].topic, l->elems[i].partition);
	if (!q->cnt)
		goto out;
	for (;;) {
		for (int i = 0; i < q->cnt; i++) { /* a failed try may have left answers */
			q->elems[i].offset = ask;
			q->elems[i].err = RD_KAFKA_RESP_ERR_NO_ERROR;
		}
		left = deadline - clock_mono_ms();
		e = rd_kafka_offsets_for_times(c->rk, q, left > 100 ? (int)left : 100);
		bad = NULL;
		for (int i = 0; e == RD_KAFKA_RESP_ERR_NO_ERROR && !bad && i < q->cnt; i++)
			if (q->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR)
				bad = &q->elems[i];
		if (e == RD_KAFKA_RESP_ERR_NO_ERROR && !bad)
			break;
		if (!watermark_error_passes(bad ? bad->err : e) ||
		    clock_mono_ms() + 100 >= deadline)
			goto failed;
		usleep(100 * 1000);
	}
	for (int i = 0; i < l->cnt; i++)
		l->elems[i].offset =
		    rd_kafka_topic_partition_list_find(q, l->elems[i].topic, l->elems[i].partition)
		        ->offset;
out:
	rd_kafka_topic_partition_list_destroy(q);
	return EVH_OK;
failed:
	if (bad)
		snprintf(err, errlen, "%s %s [%" PRId32 "]: %s", offsets_failed(what), bad->topic,
		         bad->partition, rd_kafka_err2str(bad->err));
	else if (q->cnt == 1)
		snprintf(err, errlen, "%s %s [%" PRId32 "]: %s", offsets_failed(what),
		         q->elems[0].topic, q->elems[0].partition, rd_kafka_err2str(e));
	else
		snprintf(err, errlen, "%s %s [%" PRId32 "] and %d other partition(s): %s",
		         offsets_failed(what), q->elems[0].topic, q->elems[0].partition, q->cnt - 1,
		         rd_kafka_err2str(e));
	rd_kafka_topic_partition_list_destroy(q);
	return EVH_EKAFKA;
}

/* REPLAY_OFFSETS: the partitions asked for, each assigned to us and with an
 * offset no further than the end (an offset before the start means it). */
static int targets_from_offsets(struct consumer *c, const replay_request *req,
                                const rd_kafka_topic_partition_list_t *asg,
                                rd_kafka_topic_partition_list_t *l, char *err, size_t errlen)
{
	rd_kafka_topic_partition_list_t *lo, *hi = NULL;
	int status = EVH_OK;
	for (size_t i = 0; i < req->noffsets; i++) {
		const replay_pos *want = &req->offsets[i];
		if (!rd_kafka_topic_partition_list_find(asg, want->topic, want->partition)) {
			snprintf(err, errlen, "%s [%" PRId32 "] is not assigned to this consumer",
			         want->topic, want->partition);
			return EVH_EINVAL;
		}
		rd_kafka_topic_partition_list_add(l, want->topic, want->partition)->offset =
		    want->offset;
	}
	lo = rd_kafka_topic_partition_list_copy(l);
	hi = lo ? rd_kafka_topic_partition_list_copy(l) : NULL;
	if (!hi) {
		snprintf(err, errlen, "out of memory");
		status = EVH_ENOMEM;
		goto out;
	}
	if ((status = lookup_offsets(c, lo, ASK_FIRST, 0, err, errlen)) ||
	    (status = lookup_offsets(c, hi, ASK_END, 0, err, errlen)))
		goto out;
	for (int i = 0; i < l->cnt; i++) {
		rd_kafka_topic_partition_t *t = &l->elems[i];
		/* An empty partition's first offset may read as none: its end */
		int64_t first = lo->elems[i].offset < 0 ? hi->elems[i].offset : lo->elems[i].offset;
		if (t->offset < 0 || t->offset > hi->elems[i].offset) {
			snprintf(err, errlen,
			         "%s [%" PRId32 "]: offset %" PRId64 " is outside 0..%" PRId64,
			         t->topic, t->partition, t->offset, hi->elems[i].offset);
			status = EVH_EINVAL;
			goto out;
		}
		if (t->offset < first)
			t->offset = first;
	}
out:
	if (hi)
		rd_kafka_topic_partition_list_destroy(hi);
	if (lo)
		rd_kafka_topic_partition_list_destroy(lo);
	return status;
}

/* REPLAY_BEGINNING and REPLAY_TIME: every assigned partition of the topics
 * asked for, at its first offset or at the first message at or after the
 * time (the end, when there is none). */
static int targets_from_start_or_time(struct consumer *c, const replay_request *req,
                                      const rd_kafka_topic_partition_list_t *asg,
                                      rd_kafka_topic_partition_list_t *l, char *err,
                                      size_t errlen)
{
	rd_kafka_topic_partition_list_t *none;
	int status;
	for (int i = 0; i < asg->cnt; i++)
		if (replay_wants(req, asg->elems[i].topic))
			rd_kafka_topic_partition_list_add(l, asg->elems[i].topic,
			                                  asg->elems[i].partition);
	if (req->from == REPLAY_BEGINNING)
		status = lookup_offsets(c, l, ASK_FIRST, 0, err, errlen);
	else
		status = lookup_offsets(c, l, ASK_BY_TIME, req->time_ms, err, errlen);
	if (status)
		return status;
	/* No message at or after the time (or no first offset said, as a broker
	 * may of an empty partition): the end, asked at once for all of them */
	if (!(none = rd_kafka_topic_partition_list_new(l->cnt))) {
		snprintf(err, errlen, "out of memory");
		return EVH_ENOMEM;
	}
	for (int i = 0; i < l->cnt; i++)
		if (l->elems[i].offset < 0)
			rd_kafka_topic_partition_list_add(none, l->elems[i].topic,
			                                  l->elems[i].partition);
	status = lookup_offsets(c, none, ASK_END, 0, err, errlen);
	for (int i = 0; !status && i < none->cnt; i++)
		rd_kafka_topic_partition_list_find(l, none->elems[i].topic, none->elems[i].partition)
		    ->offset = none->elems[i].offset;
	rd_kafka_topic_partition_list_destroy(none);
	return status;
}

/* The partitions of `q` with nothing committed get in `pos` where the
 * consumer starts them: auto.offset.reset's first offset or end, asked of
 * the cluster. Taken as no bound, a replay from a time that ran before the
 * first message of a new group (its first start, a `group` changed) came
 * moved it past everything it had yet to handle, and committed there.
 * With "error" the replay is what sets the start: no bound. */
static int bound_by_offset_reset(struct consumer *c, rd_kafka_topic_partition_list_t *pos,
                                 const rd_kafka_topic_partition_list_t *q, char *err,
                                 size_t errlen)
{
	rd_kafka_topic_partition_list_t *none;
	int status;
	if (c->reset_to == RD_KAFKA_OFFSET_INVALID)
		return EVH_OK;
	if (!(none = rd_kafka_topic_partition_list_new(q->cnt))) {
		snprintf(err, errlen, "out of memory");
		return EVH_ENOMEM;
	}
	for (int i = 0; i < q->cnt; i++)
		if (q->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
		    q->elems[i].offset == RD_KAFKA_OFFSET_INVALID)
			rd_kafka_topic_partition_list_add(none, q->elems[i].topic, q->elems[i].partition);
	status = lookup_offsets(c, none, c->reset_to == RD_KAFKA_OFFSET_END ? ASK_END : ASK_FIRST,
	                        0, err, errlen);
	/* (an empty partition's first offset may read as none: no bound, its
	 * target is its end) */
	for (int i = 0; !status && i < none->cnt; i++)
		rd_kafka_topic_partition_list_find(pos, none->elems[i].topic, none->elems[i].partition)
		    ->offset = none->elems[i].offset;
	rd_kafka_topic_partition_list_destroy(none);
	return status;
}

/* The next events of `pos` that lie before their partition's log start
 * are gone (retention, delete-records): such a partition goes on from its
 * first event kept. Replayed from the committed offset below it, it was
 * out of range again (under auto.offset.reset = error, stopped again). Asked
 * of the cluster only for the partitions whose target `l` would lower. */
static int bound_by_log_start(struct consumer *c, rd_kafka_topic_partition_list_t *pos,
                              const rd_kafka_topic_partition_list_t *l, char *err,
                              size_t errlen)
{
	rd_kafka_topic_partition_list_t *lo = rd_kafka_topic_partition_list_new(l->cnt);
	int status;
	if (!lo) {
		snprintf(err, errlen, "out of memory");
		return EVH_ENOMEM;
	}
	for (int i = 0; i < l->cnt; i++)
		if (pos->elems[i].offset >= 0 && l->elems[i].offset > pos->elems[i].offset)
			rd_kafka_topic_partition_list_add(lo, l->elems[i].topic, l->elems[i].partition);
	status = lookup_offsets(c, lo, ASK_FIRST, 0, err, errlen);
	for (int i = 0; !status && i < lo->cnt; i++) {
		rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(
		    pos, lo->elems[i].topic, lo->elems[i].partition);
		if (p->offset < lo->elems[i].offset) {
			log_info(KAFKA_LOG, "%s: replay: %s [%" PRId32 "]: its next event @%" PRId64
			                    " is gone (the log starts at @%" PRId64 "): from there",
			         plugin_label(c), p->topic, p->partition, p->offset,
			         lo->elems[i].offset);
			p->offset = lo->elems[i].offset;
		}
	}
	rd_kafka_topic_partition_list_destroy(lo);
	return status;
}

/* A replay from the beginning or from a time rewinds: a partition whose
 * target lies past its next event not yet handled (one retrying, one
 * buffered, a backlog behind a restart) is replayed from that event, not
 * moved forward over it (which skipped it and committed past it: lost).
 * The next event is this consumer's knowledge, else the committed offset
 * (asked of the cluster), else, with none committed, where
 * auto.offset.reset starts the partition; never before the partition's
 * log start. Only explicit offsets may move forward. */
static int targets_no_later_than_next(struct consumer *c, rd_kafka_topic_partition_list_t *l,
                                      char *err, size_t errlen)
{
	rd_kafka_topic_partition_list_t *pos = rd_kafka_topic_partition_list_copy(l), *q = NULL;
	rd_kafka_resp_err_t e;
	int status = EVH_OK;
	if (!pos || rd_kafka_position(c->rk, pos) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "cannot read the consumer's positions");
		status = EVH_EKAFKA;
		goto out;
	}
	for (int i = 0; i < l->cnt; i++) {
		const struct pbuf *b = pbuf_find(c, l->elems[i].topic, l->elems[i].partition);
		pos->elems[i].offset =
		    b ? next_to_handle(c, b, pos->elems[i].offset) : pos->elems[i].offset;
		if (pos->elems[i].offset < 0) {
			if (!q && !(q = rd_kafka_topic_partition_list_new(l->cnt))) {
				status = EVH_ENOMEM;
				snprintf(err, errlen, "out of memory");
				goto out;
			}
			rd_kafka_topic_partition_list_add(q, l->elems[i].topic, l->elems[i].partition);
		}
	}
	if (q && (e = rd_kafka_committed(c->rk, q, SEEK_TIMEOUT_MS)) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "cannot read the committed offsets: %s", rd_kafka_err2str(e));
		status = EVH_EKAFKA;
		goto out;
	}
	for (int i = 0; q && i < q->cnt; i++) {
		rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(
		    pos, q->elems[i].topic, q->elems[i].partition);
		if (p && q->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR)
			p->offset = q->elems[i].offset;
	}
	if (q && (status = bound_by_offset_reset(c, pos, q, err, errlen)))
		goto out;
	if ((status = bound_by_log_start(c, pos, l, err, errlen)))
		goto out;
	for (int i = 0; i < l->cnt; i++) {
		int64_t next = pos->elems[i].offset;
		if (next < 0 || l->elems[i].offset <= next)
			continue;
		log_info(KAFKA_LOG, "%s: replay: %s [%" PRId32 "] is at @%" PRId64 ", not yet handled: "
		                    "replayed from there, not from @%" PRId64 " (a replay does not "
		                    "skip events)",
		         plugin_label(c), l->elems[i].topic, l->elems[i].partition, next,
		         l->elems[i].offset);
		l->elems[i].offset = next;
	}
out:
	if (q)
		rd_kafka_topic_partition_list_destroy(q);
	if (pos)
		rd_kafka_topic_partition_list_destroy(pos);
	return status;
}

/* The eager protocol changes an assignment only whole: every partition of
 * it is assigned again where it was (its position, else where it was last
 * sought; neither: its committed offset, as at its assignment), those of
 * `l` at their targets. librdkafka resets the paused partitions' pause
 * with it: those a retry, a wait or a dead letter holds are paused again. */
static rd_kafka_resp_err_t reassign_eager(struct consumer *c,
                                          const rd_kafka_topic_partition_list_t *l)
{
	rd_kafka_topic_partition_list_t *asg = NULL;
	rd_kafka_resp_err_t e = rd_kafka_assignment(c->rk, &asg);
	if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
		e = rd_kafka_position(c->rk, asg);
	for (int i = 0; e == RD_KAFKA_RESP_ERR_NO_ERROR && i < asg->cnt; i++) {
		rd_kafka_topic_partition_t *p = &asg->elems[i];
		const rd_kafka_topic_partition_t *t =
		    rd_kafka_topic_partition_list_find(l, p->topic, p->partition);
		const struct pbuf *b = pbuf_find(c, p->topic, p->partition);
		if (t)
			p->offset = t->offset;
		else if (p->offset < 0 && b && b->sought >= 0)
			p->offset = b->sought;
	}
	if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
		e = rd_kafka_assign(c->rk, asg);
	for (size_t i = 0; e == RD_KAFKA_RESP_ERR_NO_ERROR && i < c->nslots; i++)
		partition_pause(c, c->slots[i].topic, c->slots[i].partition, 1);
	if (asg)
		rd_kafka_topic_partition_list_destroy(asg);
	return e;
}

/* The cooperative protocol takes the partition alone out of the assignment
 * and back in at its target; the others go on undisturbed. */
static rd_kafka_resp_err_t reassign_cooperative(struct consumer *c,
                                                const rd_kafka_topic_partition_t *t)
{
	rd_kafka_topic_partition_list_t *one = rd_kafka_topic_partition_list_new(1);
	rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
	rd_kafka_error_t *ie;
	rd_kafka_topic_partition_list_add(one, t->topic, t->partition);
	ie = rd_kafka_incremental_unassign(c->rk, one);
	if (!ie) {
		one->elems[0].offset = t->offset;
		ie = rd_kafka_incremental_assign(c->rk, one);
	}
	if (ie) {
		e = rd_kafka_error_code(ie);
		rd_kafka_error_destroy(ie);
	}
	rd_kafka_topic_partition_list_destroy(one);
	return e;
}

/* With auto.offset.reset = error, a partition without a valid offset (none
 * committed, or the committed one out of range: gone with retention or
 * delete-records) is left stopped, and librdkafka refuses to seek it
 * ("Local: Erroneous state"): the replay documented to set its offset
 * answered 502 and the partition stayed stalled. Assigned again at its
 * target, it starts there. Consumer thread, as the rebalance callback that
 * assigns too. */
static int replay_reassign_stopped(struct consumer *c, rd_kafka_topic_partition_list_t *l,
                                   char *err, size_t errlen)
{
	const char *proto = rd_kafka_rebalance_protocol(c->rk);
	rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
	int stopped = 0;
	for (int i = 0; i < l->cnt; i++)
		stopped += l->elems[i].err == RD_KAFKA_RESP_ERR__STATE;
	if (!stopped)
		return EVH_OK;
	if (proto && !strcmp(proto, "EAGER")) {
		e = reassign_eager(c, l);
	} else if (proto && !strcmp(proto, "COOPERATIVE")) {
		for (int i = 0; i < l->cnt && !e; i++)
			if (l->elems[i].err == RD_KAFKA_RESP_ERR__STATE)
				e = reassign_cooperative(c, &l->elems[i]);
	} else {
		snprintf(err, errlen, "%d partition(s) have no valid offset and cannot be sought, "
		                      "and the group's rebalance protocol (%s) says no way to assign "
		                      "them again: replay again once the group is joined",
		         stopped, proto ? proto : "none");
		return EVH_EKAFKA;
	}
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "assigning again the %d partition(s) without a valid offset "
		                      "(which cannot be sought) failed: %s",
		         stopped, rd_kafka_err2str(e));
		return EVH_EKAFKA;
	}
	for (int i = 0; i < l->cnt; i++)
		if (l->elems[i].err == RD_KAFKA_RESP_ERR__STATE) {
			log_info(KAFKA_LOG, "%s: replay: %s [%" PRId32 "] had no valid offset: assigned "
			                    "again at @%" PRId64,
			         plugin_label(c), l->elems[i].topic, l->elems[i].partition,
			         l->elems[i].offset);
			l->elems[i].err = RD_KAFKA_RESP_ERR_NO_ERROR;
		}
	return EVH_OK;
}

static int replay_seek(struct consumer *c, rd_kafka_topic_partition_list_t *l, char *err,
                       size_t errlen)
{
	rd_kafka_error_t *e = seek_partitions(c->rk, l, REPLAY_SEEK_TIMEOUT_MS);
	int status;
	if (e) {
		snprintf(err, errlen, "seek failed: %s", rd_kafka_error_string(e));
		rd_kafka_error_destroy(e);
		return EVH_EKAFKA;
	}
	if ((status = replay_reassign_stopped(c, l, err, errlen)))
		return status;
	for (int i = 0; i < l->cnt; i++)
		if (l->elems[i].err) {
			snprintf(err, errlen, "seek of %s [%" PRId32 "] failed: %s",
			         l->elems[i].topic, l->elems[i].partition,
			         rd_kafka_err2str(l->elems[i].err));
			return EVH_EKAFKA;
		}
	return EVH_OK;
}

/* The replayed events' inbox records go, so their handlers run again. */
static int replay_forget_inbox(struct consumer *c, const rd_kafka_topic_partition_list_t *l,
                               int64_t *deleted, char *err, size_t errlen)
{
	size_t n = l->cnt > 0 ? (size_t)l->cnt : 1;
	inbox_range *r = calloc(n, sizeof *r);
	int status;
	if (!r) {
		snprintf(err, errlen, "out of memory");
		return EVH_ENOMEM;
	}
	for (int i = 0; i < l->cnt; i++)
		r[i] = (inbox_range){l->elems[i].topic, l->elems[i].partition, l->elems[i].offset};
	status = store_inbox_forget(c->p->store, r, (size_t)l->cnt, deleted);
	free(r);
	if (status)
		snprintf(err, errlen, "rewound, but the inbox could not be cleared (storage error "
		                      "%d): events already handled are skipped; replay again",
		         status);
	return status;
}

/* Make the new positions the committed ones, so a crash in the middle of a
 * replay resumes it instead of skipping what is left. */
static void replay_commit(struct consumer *c, rd_kafka_topic_partition_list_t *l)
{
	rd_kafka_resp_err_t e = rd_kafka_offsets_store(c->rk, l);
	/* The next commits start from here, not from what was handled before */
	handled_note(c, l);
	if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
		e = rd_kafka_commit(c->rk, l, 0);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		log_warn(KAFKA_LOG, "%s: replay: committing the new offsets failed (%s); they are "
		                    "committed with the next handled event",
		         plugin_label(c), rd_kafka_err2str(e));
	c->stored = 0;
	c->last_commit_ms = clock_mono_ms();
}

static int replay_report(const rd_kafka_topic_partition_list_t *l,
                         const rd_kafka_topic_partition_list_t *prev, replay_result *res)
{
	res->parts = calloc(l->cnt > 0 ? (size_t)l->cnt : 1, sizeof *res->parts);
	if (!res->parts)
		return EVH_ENOMEM;
	for (int i = 0; i < l->cnt; i++) {
		replay_pos *r = &res->parts[res->nparts];
		if (!(r->topic = strdup(l->elems[i].topic)))
			return EVH_ENOMEM;
		r->partition = l->elems[i].partition;
		r->offset = l->elems[i].offset;
		r->previous = prev && prev->elems[i].offset >= 0 ? prev->elems[i].offset : -1;
		res->nparts++;
	}
	return EVH_OK;
}

static int replay_apply(struct consumer *c, rd_kafka_topic_partition_list_t *l,
                        int keep_inbox, replay_result *res, char *err, size_t errlen)
{
	rd_kafka_topic_partition_list_t *prev = rd_kafka_topic_partition_list_copy(l);
	int status;
	if (prev && rd_kafka_position(c->rk, prev) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		rd_kafka_topic_partition_list_destroy(prev);
		prev = NULL;
	}
	/* "previous": where it was in what it handled, not how far it fetched */
	for (int i = 0; prev && i < prev->cnt; i++) {
		const struct pbuf *b = pbuf_find(c, prev->elems[i].topic, prev->elems[i].partition);
		if (b)
			prev->elems[i].offset = next_to_handle(c, b, prev->elems[i].offset);
	}
	/* Only a seek that took replaces the pending retries and what was
	 * buffered: dropped before a seek that then failed (a timeout on a
	 * loaded machine), they would be skipped, and committed past, for good.
	 * Nothing is dispatched in between: this runs on the consumer thread. */
	status = replay_seek(c, l, err, errlen);
	if (!status) {
		drop_slots(c, l, 1);
		for (int i = 0; i < l->cnt; i++) {
			struct pbuf *b = pbuf_find(c, l->elems[i].topic, l->elems[i].partition);
			if (b) {
				pbuf_clear(c, b);
				b->sought = l->elems[i].offset;
			}
		}
		if (!keep_inbox)
			status = replay_forget_inbox(c, l, &res->inbox_deleted, err, errlen);
	}
	if (!status) {
		replay_commit(c, l);
		status = replay_report(l, prev, res);
	}
	if (prev)
		rd_kafka_topic_partition_list_destroy(prev);
	return status;
}

static int replay_run(struct consumer *c, const replay_request *req, replay_result *res,
                      char *err, size_t errlen)
{
	rd_kafka_topic_partition_list_t *asg = NULL, *l = NULL;
	int status = replay_check_topics(c, req, err, errlen);
	if (status)
		return status;
	/* librdkafka 2.0's offset look-ups wait for an unreachable leader past
	 * their timeout, until it is back (librdkafka #2588, fixed in 2.3): the
	 * replay held the consumer and the request for minutes, then ran on an
	 * assignment lost meanwhile. Refused at once instead, nothing changed.
	 * (A broker lost between this look and the next is still waited for.) */
	if (!kafka_reachable(c->k, SEEK_TIMEOUT_MS)) {
		snprintf(err, errlen, "Kafka is unreachable: nothing was rewound; replay again once "
		                      "it is back");
		return EVH_EKAFKA;
	}
	if (rd_kafka_assignment(c->rk, &asg) != RD_KAFKA_RESP_ERR_NO_ERROR || !asg->cnt) {
		snprintf(err, errlen, "no partitions are assigned to plugin %s's consumer yet",
		         c->p->name);
		status = EVH_ESTATE;
		goto out;
	}
	l = rd_kafka_topic_partition_list_new(asg->cnt);
	if (req->from == REPLAY_OFFSETS)
		status = targets_from_offsets(c, req, asg, l, err, errlen);
	else if (!(status = targets_from_start_or_time(c, req, asg, l, err, errlen)))
		status = targets_no_later_than_next(c, l, err, errlen);
	if (!status && !l->cnt) {
		snprintf(err, errlen, "no partition asked for is assigned to plugin %s's consumer",
		         c->p->name);
		status = EVH_ESTATE;
	}
	if (!status)
		status = replay_apply(c, l, req->keep_inbox, res, err, errlen);
	if (!status)
		log_info(KAFKA_LOG, "%s: replay: %d partition(s) rewound, %" PRId64 " inbox "
		                    "record(s) forgotten",
		         plugin_label(c), l->cnt, res->inbox_deleted);
out:
	if (l)
		rd_kafka_topic_partition_list_destroy(l);
	if (asg)
		rd_kafka_topic_partition_list_destroy(asg);
	return status;
}

/* Run a replay request if one is waiting. Consumer thread. */
static int serve_replay(struct consumer *c)
{
	const replay_request *req;
	replay_result *res;
	char err[256] = "";
	int status;
	pthread_mutex_lock(&c->rmu);
	if (c->rstate != REPLAY_PENDING) {
		pthread_mutex_unlock(&c->rmu);
		return 0;
	}
	c->rstate = REPLAY_RUNNING;
	req = c->rreq;
	res = c->rres;
	pthread_mutex_unlock(&c->rmu);
	status = replay_run(c, req, res, err, sizeof err);
	if (status)
		log_warn(KAFKA_LOG, "%s: replay refused or failed: %s", plugin_label(c), err);
	pthread_mutex_lock(&c->rmu);
	c->rstatus = status;
	snprintf(c->rerr, sizeof c->rerr, "%s", err);
	c->rstate = REPLAY_DONE;
	pthread_cond_broadcast(&c->rcv);
	pthread_mutex_unlock(&c->rmu);
	return 1;
}

/* The consumer stops: a request not taken yet is answered, and later ones
 * refused. */
static void replay_cancel(struct consumer *c)
{
	pthread_mutex_lock(&c->rmu);
	c->rclosed = 1;
	if (c->rstate == REPLAY_PENDING) {
		c->rstatus = EVH_ESTATE;
		snprintf(c->rerr, sizeof c->rerr, "the consumer of plugin %s is stopping",
		         c->p->name);
		c->rstate = REPLAY_DONE;
		pthread_cond_broadcast(&c->rcv);
	}
	pthread_mutex_unlock(&c->rmu);
}

int consumer_replay(evh_plugin *p, const replay_request *req, replay_result *res,
                    int timeout_ms, pthread_mutex_t *held, char *err, size_t errlen)
{
	struct consumer *c = p->consumer;
	int64_t deadline = clock_mono_ms() + timeout_ms;
	int status;
	memset(res, 0, sizeof *res);
	if (!c) {
		snprintf(err, errlen, "plugin %s consumes no topics", p->name);
		if (held)
			pthread_mutex_unlock(held);
		return EVH_ESTATE;
	}
	pthread_mutex_lock(&c->rmu);
	if (c->rstate != REPLAY_IDLE || c->rclosed) {
		status = c->rclosed ? EVH_ESTATE : EVH_EBUSY;
		pthread_mutex_unlock(&c->rmu);
		if (status == EVH_ESTATE)
			snprintf(err, errlen, "the consumer of plugin %s is stopping", p->name);
		else
			snprintf(err, errlen, "a replay of plugin %s is already running", p->name);
		if (held)
			pthread_mutex_unlock(held);
		return status;
	}
	c->rreq = req;
	c->rres = res;
	c->rstate = REPLAY_PENDING;
	/* From here consumer_stop waits for this call to end, so `p` and its
	 * consumer stay without the caller's lock (the host's plugin list:
	 * readiness, metrics and the rest of the admin API take it). */
	c->rwaiting = 1;
	if (held)
		pthread_mutex_unlock(held);
	log_debug(KAFKA_LOG, "%s: replay asked: waiting for the consumer (at most %d ms)",
	          plugin_label(c), timeout_ms);
	/* Once running it finishes (each step is bounded); only a request the
	 * consumer did not pick up in time (a handler busy) is withdrawn. */
	while (c->rstate == REPLAY_PENDING || c->rstate == REPLAY_RUNNING) {
		struct timespec ts;
		if (c->rstate == REPLAY_PENDING && clock_mono_ms() >= deadline) {
			snprintf(err, errlen,
			         "plugin %s's consumer did not take the request within %d ms (a "
			         "handler is busy); nothing was changed",
			         p->name, timeout_ms);
			c->rstate = REPLAY_IDLE;
			c->rwaiting = 0;
			pthread_cond_broadcast(&c->rcv); /* consumer_stop may be waiting */
			pthread_mutex_unlock(&c->rmu);
			return EVH_EBUSY;
		}
		ts = clock_after_ms(CLOCK_MONOTONIC, 50);
		pthread_cond_timedwait(&c->rcv, &c->rmu, &ts);
	}
	status = c->rstatus;
	snprintf(err, errlen, "%s", c->rerr);
	c->rstate = REPLAY_IDLE;
	c->rreq = NULL;
	c->rres = NULL;
	c->rwaiting = 0;
	pthread_cond_broadcast(&c->rcv); /* consumer_stop may be waiting */
	pthread_mutex_unlock(&c->rmu);
	if (status)
		replay_result_free(res);
	return status;
}

void replay_result_free(replay_result *res)
{
	if (!res)
		return;
	for (size_t i = 0; i < res->nparts; i++)
		free(res->parts[i].topic);
	free(res->parts);
	memset(res, 0, sizeof *res);
}

/* Consumer lag for the metrics, from the consumer thread at each periodic
 * commit: per assigned partition, the high watermark of the last fetch
 * response (rd_kafka_get_watermark_offsets reads librdkafka's cache; the
 * querying variant is a broker round trip that would block this loop;
 * only a partition held, which is not fetched, is asked: lag_held_hi)
 * minus the next offset for a handler: a waiting retry's, else the first
 * buffered message's, else the position (rd_kafka_position, also local).
 * A partition not fetched from yet is left out unless it is empty; one
 * sought since its last message (a retry finished) counts from there. */
/* The committed offsets of the partitions in `l` whose position librdkafka
 * does not know while they hold messages: assigned at their end (all handled
 * before a restart or a reload), nothing has come since, and nothing would
 * say their lag. Asked once per assignment (a call to the cluster, at most
 * LAG_COMMITTED_TIMEOUT_MS on this thread); what it cannot tell stays
 * unsaid. */
#define LAG_COMMITTED_TIMEOUT_MS 500
#define LAG_COMMITTED_AGAIN_MS 30000
#define LAG_HELD_AGAIN_MS 5000

/* The watermarks of `b`, a partition that fetches nothing for want of a
 * valid offset (auto.offset.reset = error), asked of the cluster (`first`,
 * or LAG_COMMITTED_AGAIN_MS after the last time): its lag is all it holds,
 * or what lies past its committed offset while that is in range (a
 * partition not fetched from yet). */
static void lag_reset_hi(struct consumer *c, struct pbuf *b, int first)
{
	int64_t lo = -1, hi = -1, now = clock_mono_ms();
	if (!first && now - b->reset_asked < LAG_COMMITTED_AGAIN_MS)
		return;
	b->reset_asked = now;
	if (rd_kafka_query_watermark_offsets(c->rk, b->topic, b->partition, &lo, &hi,
	                                     LAG_COMMITTED_TIMEOUT_MS) !=
	        RD_KAFKA_RESP_ERR_NO_ERROR ||
	    lo < 0 || hi < lo)
		return;
	if (b->committed < lo || b->committed > hi)
		b->committed = lo;
	b->reset_hi = hi;
}

static void lag_committed(struct consumer *c, const rd_kafka_topic_partition_list_t *l)
{
	rd_kafka_topic_partition_list_t *q = NULL;
	int64_t now = clock_mono_ms();
	for (size_t i = 0; i < c->nbufs && (int)i < l->cnt; i++) {
		struct pbuf *b = &c->bufs[i];
		int64_t lo = -1, hi = -1;
		int cached;
		if (b->committed >= 0 ||
		    (b->committed == -2 && now - b->committed_asked < LAG_COMMITTED_AGAIN_MS) ||
		    l->elems[i].offset >= 0 || b->n || b->sought >= 0 ||
		    slot_find(c, b->topic, b->partition))
			continue;
		cached = rd_kafka_get_watermark_offsets(c->rk, b->topic, b->partition, &lo, &hi) ==
		             RD_KAFKA_RESP_ERR_NO_ERROR &&
		         hi >= 0;
		/* With "error", one not fetching has no watermarks cached: asked. */
		if (c->reset_to != RD_KAFKA_OFFSET_INVALID && (!cached || lo == hi))
			continue;
		if (!q && !(q = rd_kafka_topic_partition_list_new(4)))
			return;
		rd_kafka_topic_partition_list_add(q, b->topic, b->partition);
		b->committed = -2;
		b->committed_asked = now;
	}
	if (!q)
		return;
	if (rd_kafka_committed(c->rk, q, LAG_COMMITTED_TIMEOUT_MS) == RD_KAFKA_RESP_ERR_NO_ERROR)
		for (int i = 0; i < q->cnt; i++) {
			struct pbuf *b = pbuf_find(c, q->elems[i].topic, q->elems[i].partition);
			int64_t lo = -1, hi = -1, off = q->elems[i].offset;
			int cached;
			if (!b || q->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR)
				continue;
			cached = rd_kafka_get_watermark_offsets(c->rk, b->topic, b->partition, &lo,
			                                        &hi) == RD_KAFKA_RESP_ERR_NO_ERROR &&
			         lo >= 0 && hi >= lo;
			/* Committed below the log start (retention, delete-records):
			 * out of range, librdkafka starts it as if none were (under
			 * "latest" at the end: its lag was end minus that stale
			 * offset until a message came). */
			if (off >= 0 && cached && off < lo)
				off = RD_KAFKA_OFFSET_INVALID;
			if (off >= 0) {
				b->committed = off;
				/* "error" and no watermarks: possibly stopped, the
				 * offset out of range; else fetched from soon */
				if (c->reset_to == RD_KAFKA_OFFSET_INVALID && !cached)
					lag_reset_hi(c, b, 1);
			}
			/* None committed: where auto.offset.reset started it (at
			 * the end, nothing came since: no position, no lag) */
			else if (off == RD_KAFKA_OFFSET_INVALID && c->reset_to != RD_KAFKA_OFFSET_INVALID &&
			         cached)
				b->committed = c->reset_to == RD_KAFKA_OFFSET_END ? hi : lo;
			/* None committed and "error": nothing is fetched, all of it
			 * waits for a replay to set the offset (lag_reset_hi). */
			else if (off == RD_KAFKA_OFFSET_INVALID && c->reset_to == RD_KAFKA_OFFSET_INVALID)
				lag_reset_hi(c, b, 1);
		}
	rd_kafka_topic_partition_list_destroy(q);
}

/* The end offsets of the partitions a retry, a wait or a dead letter holds,
 * paused: not fetched, their cached high watermark stays what the last fetch
 * before the pause said, and their lag stood still however much came after
 * (a retry's backoff lasts up to a day, a full disk's wait until it has
 * room). Asked of the cluster at most every LAG_HELD_AGAIN_MS (after a
 * failed ask, LAG_COMMITTED_AGAIN_MS), all in one ListOffsets request per
 * leader, waited for at most LAG_COMMITTED_TIMEOUT_MS. Through the host's
 * producer: on the consumer's own connection a broker answers it only after
 * the pending fetch of the other partitions (fetch.wait.max.ms, 500 ms by
 * default), which this thread, handling their events, would wait for
 * (measured on a local broker: 65 to 370 ms so, 1 to 6 ms through the
 * producer). The producer asks as read_committed, librdkafka's default
 * isolation: the last stable offset, which a consumer set to
 * read_uncommitted does not stop at (the lag of a held partition is then
 * short of open transactions' messages). */
static void lag_held_hi(struct consumer *c)
{
	rd_kafka_topic_partition_list_t *q = NULL;
	int64_t now = clock_mono_ms();
	int due = now - c->held_asked_ms >=
	          (c->held_ask_failed ? LAG_COMMITTED_AGAIN_MS : LAG_HELD_AGAIN_MS);
	for (size_t i = 0; i < c->nbufs; i++) {
		struct pbuf *b = &c->bufs[i];
		if (!slot_find(c, b->topic, b->partition)) {
			b->held_hi = -1; /* fetched again: the cache says */
			continue;
		}
		if (!due)
			continue;
		if (!q && !(q = rd_kafka_topic_partition_list_new(4)))
			return;
		rd_kafka_topic_partition_list_add(q, b->topic, b->partition)->offset =
		    RD_KAFKA_OFFSET_END;
	}
	if (!q)
		return;
	c->held_asked_ms = now;
	c->held_ask_failed = rd_kafka_offsets_for_times(c->k->producer, q,
	                                                LAG_COMMITTED_TIMEOUT_MS) !=
	                     RD_KAFKA_RESP_ERR_NO_ERROR;
	for (int i = 0; !c->held_ask_failed && i < q->cnt; i++) {
		struct pbuf *b = pbuf_find(c, q->elems[i].topic, q->elems[i].partition);
		if (b && q->elems[i].err == RD_KAFKA_RESP_ERR_NO_ERROR && q->elems[i].offset >= 0)
			b->held_hi = q->elems[i].offset;
	}
	rd_kafka_topic_partition_list_destroy(q);
}

static void report_lag(struct consumer *c)
{
	rd_kafka_topic_partition_list_t *l;
	if (!c->nbufs)
		return;
	l = rd_kafka_topic_partition_list_new((int)c->nbufs);
	for (size_t i = 0; i < c->nbufs; i++)
		rd_kafka_topic_partition_list_add(l, c->bufs[i].topic, c->bufs[i].partition);
	rd_kafka_position(c->rk, l);
	lag_committed(c, l);
	lag_held_hi(c);
	for (size_t i = 0; i < c->nbufs && (int)i < l->cnt; i++) {
		struct pbuf *b = &c->bufs[i];
		int64_t lo = -1, hi = -1;
		/* After a finished retry or dead letter (or a replay) sought it,
		 * librdkafka says "invalid" until a message comes: `sought` says
		 * (without it the series kept the lag it had while the retry
		 * waited). */
		int64_t next = next_to_handle(c, b, l->elems[i].offset);
		if (rd_kafka_get_watermark_offsets(c->rk, b->topic, b->partition, &lo, &hi) ==
		        RD_KAFKA_RESP_ERR_NO_ERROR &&
		    hi >= 0) {
			b->reset_hi = -1; /* fetching (a replay set its offset) */
		} else if (b->reset_hi >= 0 && next < 0) {
			lag_reset_hi(c, b, 0); /* waiting for an offset: what came since */
			hi = b->reset_hi;
		} else if (b->held_hi < 0) {
			continue;
		}
		if (b->held_hi > hi)
			hi = b->held_hi; /* held: what came since its last fetch */
		if (next < 0 && lo == hi)
			next = hi;
		if (next < 0 && b->committed >= 0)
			next = b->committed;
		if (next >= 0)
			metrics_consumer_lag_set(c->p->name, b->topic, b->partition, hi - next);
	}
	rd_kafka_topic_partition_list_destroy(l);
}

/* Other daemons in the plugin's consumer group share its topics' partitions
 * out: each member handles only its share of the events. Right for a
 * plugin that keeps nothing from them; a plugin that builds state from
 * them (notifications' recipients, which its broadcasts mail) sees part of
 * it, silently. Said at WARN after each assignment while the group has
 * other members; an ask that fails is left (the next assignment asks). */
static void group_members_check(struct consumer *c)
{
	const struct rd_kafka_group_list *gl = NULL;
	c->members_check_at = 0;
	if (rd_kafka_list_groups(c->rk, c->p->group, &gl, MEMBERS_CHECK_TIMEOUT_MS) !=
	    RD_KAFKA_RESP_ERR_NO_ERROR) {
		log_debug(KAFKA_LOG, "%s: cannot count the members of consumer group %s",
		          plugin_label(c), c->p->group);
		return;
	}
	if (gl->group_cnt == 1 && gl->groups[0].member_cnt > 1)
		log_warn(KAFKA_LOG,
		         "%s: consumer group %s has %d members (other daemons or clients using its "
		         "name, or one that ended without leaving until the broker drops it): each "
		         "handles only its share of the partitions of the plugin's topics. Fine for "
		         "a plugin that keeps nothing from its events; one that does (notifications: "
		         "its recipients, which broadcasts mail) sees only its share: give each "
		         "daemon's plugin a group of its own, or run it on one daemon (operations.md, "
		         "\"More than one daemon\")",
		         plugin_label(c), c->p->group, gl->groups[0].member_cnt);
	rd_kafka_group_list_destroy(gl);
}

static void *consumer_main(void *arg)
{
	struct consumer *c = arg;
	void *alt = crash_thread_enter(); /* handlers run here: see crash.h */
	log_thread_name("evh-c:", c->p->name);
	while (!atomic_load(&c->stop)) {
		int64_t t0 = clock_mono_ms();
		if (serve_replay(c)) {
			busy_step(c, "seeking for a replay", t0);
			continue;
		}
		/* Slots due one after another (a long KEEP_AND_CONTINUE chain, the
		 * retries of many partitions) do not starve the poll: past
		 * max.poll.interval.ms librdkafka would take the consumer out of
		 * its group (the chain's event then handled by another member as
		 * well), and the other partitions' events would wait. At most
		 * every POLL_MS the rest of the round runs too. */
		if (serve_slots(c)) {
			busy_step(c, "on a retry or a dead letter", t0);
			/* A stop asked meanwhile: no new event is handed out. */
			if (atomic_load(&c->stop) || clock_mono_ms() - c->polled_ms < POLL_MS)
				continue;
		}
		if (c->members_check_at && clock_mono_ms() >= c->members_check_at)
			group_members_check(c);
		if ((c->stored >= COMMIT_EVERY_MSGS ||
		     clock_mono_ms() - c->last_commit_ms >= COMMIT_EVERY_MS) &&
		    clock_mono_ms() >= c->commit_hold_until) {
			commit_stored(c, 1, 0);
			report_lag(c);
		}
		consume_round(c);
	}
	pbufs_drop(c, NULL); /* not handled, not stored: fetched again next time */
	wait_episodes_end(c, 0, 1); /* their counts, before "consumer stopped" */
	/* No handler runs from here on: should the stop's guard end the
	 * process, it names what this consumer still waited for instead. */
	stopguard_at("plugin '%s': its consumer's last dead letters, commit and leaving the "
	             "group (the broker not answering)",
	             c->p->name);
	finish_dead_letters(c, NULL, atomic_load(&c->stop_by_ms));
	drop_slots(c, NULL, 0);
	commit_stored(c, 0, 1);
	replay_cancel(c);
	c->closing = 1; /* for rdk_rebalance_cb, which the close calls on this thread */
	rd_kafka_consumer_close(c->rk);
	crash_thread_leave(alt);
	return NULL;
}

/* ---- lifecycle ---- */

/* The embedded cluster answers a consumer's first JoinGroup 5 s after it is
 * sent (its session timeout less a second, above), and librdkafka's periodic
 * metadata refresh, timed from the same start, came due in the same
 * millisecond at 5 s. The leader waits for the metadata its assignor asked
 * for then, and librdkafka 2.0.2 takes any other metadata answer that comes
 * first in that wait as a change of subscription: it joins again instead of
 * assigning (rd_kafka_cgrp_metadata_update_check). On a loaded machine the
 * refresh won every time, 5 s a round, and a plugin restarted by a reload
 * consumed nothing for as long as that lasted. A period that is no divisor
 * of the 5 s keeps the two apart. */
#define EMBEDDED_METADATA_REFRESH_MS "4000"

static rd_kafka_conf_t *consumer_conf(struct consumer *c, const settings *s, char *err,
                                      size_t errlen)
{
	char client_id[256];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	snprintf(client_id, sizeof client_id, "evhost.%s", c->p->name);
	rd_kafka_conf_set_log_cb(conf, rdk_log_cb);
	rd_kafka_conf_set_error_cb(conf, rdk_error_cb);
	rd_kafka_conf_set_rebalance_cb(conf, rdk_rebalance_cb);
	rd_kafka_conf_set_offset_commit_cb(conf, rdk_offset_commit_cb);
	rd_kafka_conf_set_opaque(conf, c);
	if (conf_set(conf, "client.id", client_id, err, errlen) ||
	    conf_set(conf, "auto.offset.reset", "earliest", err, errlen) ||
	    conf_set(conf, "allow.auto.create.topics", "true", err, errlen) ||
	    conf_set(conf, "topic.metadata.refresh.interval.ms",
	             s->embedded ? EMBEDDED_METADATA_REFRESH_MS : "5000", err, errlen) ||
	    /* After a group's last member leaves (a plugin's restart at a
	     * reload), the embedded cluster rebalances it for the session
	     * timeout less a second, and the new member waits for all of it:
	     * 44 s with the default. [kafka] rdkafka.* may still say otherwise. */
	    (s->embedded && (conf_set(conf, "session.timeout.ms", "6000", err, errlen) ||
	                     conf_set(conf, "heartbeat.interval.ms", "2000", err, errlen))) ||
	    conf_passthrough(conf, RD_KAFKA_CONSUMER, s, consumer_owned, err, errlen) ||
	    conf_set(conf, "bootstrap.servers", c->k->bootstraps, err, errlen) ||
	    conf_set(conf, "group.id", c->p->group, err, errlen) ||
	    conf_set(conf, "enable.auto.commit", "false", err, errlen) ||
	    conf_set(conf, "enable.auto.offset.store", "false", err, errlen)) {
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	return conf;
}

static int pick(int v, int dflt, int builtin) { return v > 0 ? v : dflt > 0 ? dflt : builtin; }

void kafka_retry_policy(const plugin_sub *sub, const settings *s, int *max_attempts,
                        int *backoff_ms, int *backoff_max_ms)
{
	*max_attempts = pick(sub->max_attempts, s->retry_max_attempts, DEFAULT_MAX_ATTEMPTS);
	*backoff_ms = pick(sub->backoff_ms, s->retry_backoff_ms, DEFAULT_BACKOFF_MS);
	*backoff_max_ms =
	    pick(sub->backoff_max_ms, s->retry_backoff_max_ms, DEFAULT_BACKOFF_MAX_MS);
}

static int resolve_policies(struct consumer *c, const settings *s)
{
	c->policy = calloc(c->p->nsubs, sizeof *c->policy);
	if (!c->policy)
		return -1;
	for (size_t i = 0; i < c->p->nsubs; i++)
		kafka_retry_policy(&c->p->subs[i], s, &c->policy[i].max_attempts,
		                   &c->policy[i].backoff_ms, &c->policy[i].backoff_max_ms);
	return 0;
}

static int subscribe_topics(struct consumer *c, char *err, size_t errlen)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)c->p->nsubs);
	rd_kafka_resp_err_t e;
	for (size_t i = 0; i < c->p->nsubs; i++) {
		const char *topic = c->p->subs[i].topic;
		if (!rd_kafka_topic_partition_list_find(l, topic, RD_KAFKA_PARTITION_UA))
			rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
	}
	e = rd_kafka_subscribe(c->rk, l);
	rd_kafka_topic_partition_list_destroy(l);
	if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
		return 0;
	snprintf(err, errlen, "plugin %s: cannot subscribe: %s", c->p->name, rd_kafka_err2str(e));
	return -1;
}

/* ---- a client's end, bounded ---- */

/* One rd_kafka_destroy on a thread of its own (kafka_destroy_bounded): who
 * frees what once the caller stopped waiting is settled under `mu`. */
struct rdk_end {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	rd_kafka_t *rk;
	int flags;
	int done;      /* the destroy returned */
	int left;      /* the caller stopped waiting: the thread finishes alone */
	int64_t since; /* clock_mono_ms at the start, for the late line */
	char what[160];
	void (*rest)(void *);
	void *arg;
};

static atomic_int clients_left; /* kafka_clients_left_running */

int kafka_clients_left_running(void) { return atomic_load(&clients_left); }

static void rdk_end_free(struct rdk_end *e)
{
	pthread_cond_destroy(&e->cv);
	pthread_mutex_destroy(&e->mu);
	free(e);
}

static void *rdk_end_main(void *arg)
{
	struct rdk_end *e = arg;
	int left;
	log_thread_name("evh-rdkend", NULL);
	rd_kafka_destroy_flags(e->rk, e->flags);
	pthread_mutex_lock(&e->mu);
	e->done = 1;
	left = e->left;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
	if (!left) /* the caller frees `e`, after joining this thread */
		return NULL;
	log_warn(KAFKA_LOG, "%s ended after all, %" PRId64 " ms after its end began", e->what,
	         clock_mono_ms() - e->since);
	if (e->rest)
		e->rest(e->arg);
	rdk_end_free(e);
	atomic_fetch_sub(&clients_left, 1);
	return NULL;
}

/* NULL without memory or a lock to be had. */
static struct rdk_end *rdk_end_new(void)
{
	struct rdk_end *e = calloc(1, sizeof *e);
	if (!e)
		return NULL;
	if (pthread_mutex_init(&e->mu, NULL) != 0) {
		free(e);
		return NULL;
	}
	if (clock_cond_init(&e->cv) != 0) {
		pthread_mutex_destroy(&e->mu);
		free(e);
		return NULL;
	}
	return e;
}

int kafka_destroy_bounded(rd_kafka_t *rk, int flags, int wait_ms, const char *what,
                          void (*rest)(void *), void *arg)
{
	struct rdk_end *e = rdk_end_new();
	pthread_t t;
	int done;
	if (e) {
		e->rk = rk;
		e->flags = flags;
		e->since = clock_mono_ms();
		e->rest = rest;
		e->arg = arg;
		snprintf(e->what, sizeof e->what, "%s", what);
	}
	if (!e || pthread_create(&t, NULL, rdk_end_main, e) != 0) {
		/* No thread to be had: ended here, unbounded, as before. */
		if (e)
			rdk_end_free(e);
		rd_kafka_destroy_flags(rk, flags);
		return 0;
	}
	pthread_mutex_lock(&e->mu);
	if (!e->done) {
		struct timespec until = clock_after_ms(CLOCK_MONOTONIC, wait_ms);
		while (!e->done && pthread_cond_timedwait(&e->cv, &e->mu, &until) != ETIMEDOUT)
			;
	}
	done = e->done;
	if (!done) {
		/* Said before the thread can say it ended after all. */
		log_error(KAFKA_LOG,
		          "%s did not end within %d ms: librdkafka's destroy waits for a "
		          "reference it may never get back (librdkafka 2.0.2 does so after a "
		          "topic was deleted under a consumer: librdkafka#4724, fixed in 2.5.0); "
		          "left running with its threads and connections, its memory kept, "
		          "until evhostd stops",
		          what, wait_ms);
		e->left = 1;
		atomic_fetch_add(&clients_left, 1);
	}
	pthread_mutex_unlock(&e->mu);
	if (!done) {
		pthread_detach(t);
		return 1;
	}
	pthread_join(t, NULL);
	rdk_end_free(e);
	return 0;
}

static void consumer_free_rest(void *arg)
{
	struct consumer *c = arg;
	pthread_cond_destroy(&c->rcv);
	pthread_mutex_destroy(&c->rmu);
	if (c->handled)
		rd_kafka_topic_partition_list_destroy(c->handled);
	free(c->policy);
	free(c->slots);
	free(c->bufs);
	free(c->dlq_suffix);
	free(c);
}

static void consumer_free(struct consumer *c)
{
	if (c->rk)
		rd_kafka_destroy(c->rk);
	consumer_free_rest(c);
}

int consumer_start(kafka *k, evh_plugin *p, const settings *s, char *err, size_t errlen)
{
	char msg[512];
	rd_kafka_conf_t *conf;
	struct consumer *c;
	if (!p->nsubs)
		return 0;
	if (!p->store) { /* the inbox lives there: no store, no effectively-once */
		snprintf(err, errlen, "plugin %s: cannot consume without a store", p->name);
		return -1;
	}
	/* Its series at 0 before the first event: one first seen at 1 is taken
	 * by Prometheus for one that was 1 all along. */
	for (size_t i = 0; i < p->nsubs; i++) {
		const char *topic = p->subs[i].topic;
		metrics_plugin_topics(p->name, &topic, 1);
	}
	c = calloc(1, sizeof *c);
	if (!c) {
		snprintf(err, errlen, "plugin %s: out of memory for its consumer", p->name);
		return -1;
	}
	c->k = k;
	c->p = p;
	atomic_init(&c->stop, 0);
	pthread_mutex_init(&c->rmu, NULL);
	clock_cond_init(&c->rcv);
	c->dlq_suffix = strdup(s->dlq_suffix && *s->dlq_suffix ? s->dlq_suffix : ".dlq");
	if (!c->dlq_suffix || resolve_policies(c, s)) {
		snprintf(err, errlen, "plugin %s: out of memory for its consumer", p->name);
		goto fail;
	}
	conf = consumer_conf(c, s, err, errlen);
	if (!conf)
		goto fail;
	c->max_poll_ms = (int)conf_size(conf, "max.poll.interval.ms"); /* <= 86400000 */
	c->reset_to = conf_offset_reset(conf);
	c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, msg, sizeof msg);
	if (!c->rk) {
		rd_kafka_conf_destroy(conf);
		snprintf(err, errlen, "plugin %s: cannot create consumer: %s", p->name, msg);
		goto fail;
	}
	rd_kafka_poll_set_consumer(c->rk);
	if (subscribe_topics(c, err, errlen))
		goto fail;
	c->last_commit_ms = clock_mono_ms();
	if (pthread_create(&c->thread, NULL, consumer_main, c) != 0) {
		snprintf(err, errlen, "plugin %s: cannot start consumer thread", p->name);
		goto fail;
	}
	p->consumer = c;
	log_info(KAFKA_LOG, "%s: consumer started (group %s, %zu subscription(s))", p->name,
	         p->group, p->nsubs);
	return 0;
fail:
	consumer_free(c);
	return -1;
}

rd_kafka_t *consumer_client(const evh_plugin *p)
{
	return p->consumer ? p->consumer->rk : NULL;
}

void consumer_signal_stop(evh_plugin *p, int64_t by_ms)
{
	struct consumer *c = p->consumer;
	if (!c || atomic_load(&c->stop))
		return;
	atomic_store(&c->stop_by_ms, by_ms);
	atomic_store(&c->stop, 1);
}

void consumer_stop(evh_plugin *p)
{
	struct consumer *c = p->consumer;
	char what[160];
	if (!c)
		return;
	consumer_signal_stop(p, clock_mono_ms() + DLQ_WAIT_STOPPING_MS);
	pthread_join(c->thread, NULL);
	/* A replay asked before the thread ended has its answer (replay_cancel):
	 * its caller is let finish with the consumer before it goes. */
	pthread_mutex_lock(&c->rmu);
	while (c->rwaiting)
		pthread_cond_wait(&c->rcv, &c->rmu);
	pthread_mutex_unlock(&c->rmu);
	p->consumer = NULL;
	stopguard_at("plugin '%s': its consumer's Kafka client ending (librdkafka's threads)",
	             p->name);
	snprintf(what, sizeof what, "plugin '%s': its consumer's Kafka client", p->name);
	/* consumer_main closed it: nothing of the close is left to do, and no
	 * callback of it may run once `p` can be gone (a plugin unloaded). */
	if (!kafka_destroy_bounded(c->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE,
	                           KAFKA_DESTROY_WAIT_MS, what, consumer_free_rest, c))
		consumer_free_rest(c);
	log_info(KAFKA_LOG, "%s: consumer stopped", p->name);
}
