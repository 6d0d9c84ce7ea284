/* Kafka: the idempotent producer (acks=all) shared by all plugins, the
 * embedded mock cluster for brokers = embedded, and one consumer thread per
 * plugin with subscriptions: dispatch by topic and ce_type, inbox
 * de-duplication in the handler's transaction, retries with backoff that
 * pause only the affected partition, dead-lettering, and offset commits
 * only after the handler's transaction committed. */
#ifndef EVHOST_KAFKA_H
#define EVHOST_KAFKA_H
#include <stdint.h>
#include <librdkafka/rdkafka.h>
#include "config.h"
#include "plugins.h"
#include "store.h"

typedef struct kafka kafka;

/* Have librdkafka check each [kafka] rdkafka.* name and value (errors at
 * the key's file and line). 0 when `d` got no error. */
int kafka_check_settings(const settings *s, diag *d);
/* For keys kafka_check_settings passed: can a producer and a consumer be
 * made of them (certificates, keys, SASL)? Contacts no broker. */
int kafka_check_clients(const settings *s, diag *d);
/* Is librdkafka property `name` for a client of `type`? 0 for one only
 * the other kind takes (max.poll.interval.ms for a producer, linger.ms for
 * a consumer), 1 otherwise (unknown names too). [kafka] rdkafka.* keys go
 * to each client they are for. */
int kafka_property_for(const char *name, rd_kafka_type_t type);
/* Warn of settings known not to work with this librdkafka; how many. */
int kafka_known_issues(const settings *s);
/* Create the producer (and the mock cluster when embedded). */
/* A handler's result `r` as the plugin `p` meant it: a result its ABI
 * minor version came before is no result to it (the header: a value that is
 * not an evh_event_result is taken as RETRY), so -1, never a KEEP_* that
 * would commit a failed attempt's writes (a 1.10 plugin's stray 5, taken as
 * KEEP_AND_CONTINUE, would be called again at once for ever, the attempt
 * never counted). */
int kafka_result_known(const evh_plugin *p, int r);
int kafka_start(kafka **k, const settings *s, char *err, size_t errlen);
/* Flush outstanding messages (up to timeout_ms) and destroy everything. */
void kafka_stop(kafka *k, int timeout_ms);
/* Bootstrap servers actually used (the mock cluster's when embedded). */
const char *kafka_bootstraps(kafka *k);
/* Can we reach the cluster (metadata within timeout)? */
int kafka_reachable(kafka *k, int timeout_ms);
/* The same, for callers that may come many at once (/readyz): an answer
 * less than a second old is given again, and while one caller asks the
 * cluster the others get the last answer rather than wait too. Until a
 * first answer, callers ask the cluster each. */
int kafka_reachable_shared(kafka *k, int timeout_ms);

/* What to say of a topic the cluster does not have (EVH_ENOTFOUND from a
 * produce call, or a delivery that failed for it). */
#define KAFKA_NO_TOPIC                                                                           \
	"no such topic, and the cluster does not create topics on first use: create it"

/* Delivery callback: ok != 0 when the broker acknowledged the message;
 * `error` says why not (KAFKA_NO_TOPIC for a topic the cluster lacks). */
typedef void (*kafka_delivery_cb)(void *opaque, int ok, const char *error);
/* The same with where the message landed (offset -1 when it failed). */
typedef void (*kafka_delivery_pos_cb)(void *opaque, int ok, const char *error,
                                      int32_t partition, int64_t offset);
/* The most key and data bytes an event (an outbox row) may have together
 * for its message to fit the producer's message.max.bytes, headers and all
 * (a bound: about 1 KB below it); 0 when not known. A larger event could
 * never be sent: evh_publish refuses it, so that it never enters an outbox,
 * where it would hold back every event of its plugin behind it. */
size_t kafka_max_event_bytes(const kafka *k);
/* The producer's message.max.bytes (0: not known). */
size_t kafka_max_message_bytes(const kafka *k);
/* For tests: a numeric property of the producer as it runs (0: none). */
size_t kafka_producer_setting(const kafka *k, const char *name);
/* Produce one outbox row (headers built from its metadata). The callback
 * runs on whichever thread polls the producer (kafka_poll_producer, or a
 * consumer thread waiting for a dead-letter write), so it must be
 * thread-safe; kafka_stop reports messages it could not deliver with ok == 0.
 * EVH_EBUSY: the local queue is full; poll and try again. EVH_ENOTFOUND:
 * the cluster said it has no such topic (KAFKA_NO_TOPIC; not logged). */
int kafka_produce_row(kafka *k, const outbox_row *row, const char *source, kafka_delivery_cb cb,
                      void *opaque);
/* kafka_produce_row, reporting the partition and offset of each delivery
 * (the relay records them in the event log). */
int kafka_produce_row_pos(kafka *k, const outbox_row *row, const char *source,
                          kafka_delivery_pos_cb cb, void *opaque);
/* Produce a message as given (dead-letter redrive): `partition` may be
 * RD_KAFKA_PARTITION_UA; `hdrs` is taken in every case. Same callback rules
 * and statuses as kafka_produce_row; EVH_ETOOBIG beyond message.max.bytes. */
int kafka_produce_message(kafka *k, const char *topic, int32_t partition, const void *key,
                          size_t keylen, const void *value, size_t len, rd_kafka_headers_t *hdrs,
                          kafka_delivery_pos_cb cb, void *opaque);
/* Configuration for a short-lived client of the cluster (the admin API's
 * dead-letter reader): bootstrap servers, the [kafka] rdkafka.* keys,
 * logging, no auto-commit, no topic auto-creation. NULL with `err` set. */
rd_kafka_conf_t *kafka_reader_conf(kafka *k, const char *client_id, char *err, size_t errlen);
/* The dead-letter topic of `plugin` for `topic`: <topic>.<plugin><suffix>
 * (suffix NULL or "": ".dlq"). */
void kafka_dlq_topic(const char *topic, const char *plugin, const char *suffix, char *out,
                     size_t outlen);
/* A subscription's retry policy with the [kafka] and built-in defaults. */
void kafka_retry_policy(const plugin_sub *sub, const settings *s, int *max_attempts,
                        int *backoff_ms, int *backoff_max_ms);

/* The timeout to give rd_kafka_seek_partitions for one of timeout_ms with
 * the librdkafka loaded (before 2.1.0 it waits a thousandth of it). */
int kafka_seek_timeout_ms(int timeout_ms);

/* rd_kafka_query_watermark_offsets, retried for up to timeout_ms while the
 * broker answers with a passing condition (a leader being elected after a
 * topic was created or a broker restarted). On failure, `err` says which
 * partition and why. */
int kafka_watermarks(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t *lo,
                     int64_t *hi, int timeout_ms, char *err, size_t errlen);

/* rd_kafka_destroy_flags(rk, flags) on a thread of its own, waited for up
 * to `wait_ms`: 0 once it returned. Past that, 1: an error line says that
 * `what` ("plugin 'crud': its consumer's Kafka client") did not end and is
 * left running; the thread finishes alone, and should the destroy return
 * after all it says so and calls rest(arg) (NULL: nothing), which the
 * caller must not do then. rd_kafka_destroy waits for every reference to
 * the client (a message not destroyed; librdkafka 2.0.2's own after a topic
 * was deleted under a consumer, librdkafka#4724): a reload that stops a
 * plugin must not wait for good on it. Without a thread to be had, destroyed
 * here, unbounded, and 0. */
int kafka_destroy_bounded(rd_kafka_t *rk, int flags, int wait_ms, const char *what,
                          void (*rest)(void *), void *arg);
/* How long a consumer's destroy, after its close, is waited for: it takes
 * well under a second when nothing holds it. */
#define KAFKA_DESTROY_WAIT_MS 5000
/* "5000 ms", for texts such as the metric's help (two steps: the value's
 * digits, not its name). */
#define KAFKA_DESTROY_WAIT_TEXT_(ms) #ms " ms"
#define KAFKA_DESTROY_WAIT_TEXT__(ms) KAFKA_DESTROY_WAIT_TEXT_(ms)
#define KAFKA_DESTROY_WAIT_TEXT KAFKA_DESTROY_WAIT_TEXT__(KAFKA_DESTROY_WAIT_MS)
/* How many clients kafka_destroy_bounded left running are still ending. */
int kafka_clients_left_running(void);
/* For tests: the Kafka client of plugin `p`'s consumer (NULL without one). */
rd_kafka_t *consumer_client(const evh_plugin *p);
/* Serve delivery reports. */
void kafka_poll_producer(kafka *k, int timeout_ms);
/* Make a kafka_poll_producer waiting now (on any thread) return at once, or
 * the next one if none is waiting (rd_kafka_queue_yield). */
void kafka_wake_producer(kafka *k);
int kafka_outq_len(kafka *k);
/* How long one consumer transaction may go on taking events (for tests
 * that need a backlog handled in one, on a slow build); <= 0: the default,
 * 5 ms. */
void kafka_set_batch_time_us(int us);

/* Start / stop the consumer thread of a plugin with subscriptions. Stop
 * finishes the message in hand, commits offsets and leaves the group. */
int consumer_start(kafka *k, evh_plugin *p, const settings *s, char *err, size_t errlen);
/* Its Kafka client's end is waited for KAFKA_DESTROY_WAIT_MS
 * (kafka_destroy_bounded); past that the stop goes on without it. */
void consumer_stop(evh_plugin *p);
/* Tell the consumer thread to stop without waiting for it: stopping several
 * plugins, each winds down (the message in hand, a dead letter on its way,
 * the commit, leaving the group) beside the others; consumer_stop then
 * waits. Dead letters on their way are waited for until `by_ms`
 * (clock_mono_ms); consumer_stop alone gives them 30 s. */
void consumer_signal_stop(evh_plugin *p, int64_t by_ms);

/* Replay: rewind a plugin's consumer so its handlers see events again (to
 * rebuild state). The consumer thread seeks every partition asked for that
 * is assigned to it, deletes the inbox records of events at or after the
 * new positions (so they are handled again, not skipped as duplicates),
 * drops pending retries there, and commits the new positions (a crash
 * mid-replay resumes it). Partitions assigned to other members of the
 * group are not touched. */
typedef enum replay_from { REPLAY_BEGINNING = 0, REPLAY_TIME, REPLAY_OFFSETS } replay_from;

/* One partition's position: asked for (REPLAY_OFFSETS) or reported back. */
typedef struct replay_pos {
	char *topic;
	int32_t partition;
	int64_t offset;   /* where the consumer reads from now */
	int64_t previous; /* where it was (-1: not known, nothing consumed yet) */
} replay_pos;

typedef struct replay_request {
	replay_from from;
	int64_t time_ms;           /* REPLAY_TIME: ms since the epoch */
	const char *const *topics; /* only these subscribed topics (NULL/0: all) */
	size_t ntopics;
	const replay_pos *offsets; /* REPLAY_OFFSETS; partitions not listed stay */
	size_t noffsets;
	/* The inbox's records are kept: events it has are skipped, the others
	 * handled (a restored backup catching up), instead of all handled again. */
	int keep_inbox;
} replay_request;

typedef struct replay_result {
	replay_pos *parts; /* malloc'd (topics too); replay_result_free */
	size_t nparts;
	int64_t inbox_deleted;
} replay_result;

/* Hand `req` to p's consumer thread and wait for it (any thread but that
 * one). `held`, when not NULL, is a lock the caller holds to keep `p` alive
 * (the host's plugin list): it is unlocked once the request is handed over
 * or refused, and consumer_stop then waits for this call to end instead, so
 * the wait holds nobody else up. Without `held`, `p` must stay alive
 * meanwhile. EVH_ESTATE: no consumer, nothing assigned yet, or the consumer
 * is stopping; EVH_EINVAL: a topic not consumed, a partition not assigned,
 * an offset past the end; EVH_EBUSY: another replay runs, or the consumer
 * did not take the request within timeout_ms (nothing changed);
 * EVH_EKAFKA/EVH_ESTORE: it failed (err says at which step). */
int consumer_replay(evh_plugin *p, const replay_request *req, replay_result *res,
                    int timeout_ms, pthread_mutex_t *held, char *err, size_t errlen);
void replay_result_free(replay_result *res);

/* Accessors behind the SDK's evh_event_* calls. The event is valid while its
 * handler runs (on the plugin's consumer thread); strings are NUL-terminated
 * and borrowed from it. id and type are never NULL (an event without
 * CloudEvents headers gets id "<topic>/<partition>/<offset>" and type "");
 * source, time, key and header are NULL when absent; data is "" (length 0)
 * for an empty value. */
const char *kafka_ev_id(const evh_event *ev);
const char *kafka_ev_type(const evh_event *ev);
const char *kafka_ev_source(const evh_event *ev);
const char *kafka_ev_time(const evh_event *ev);
const char *kafka_ev_topic(const evh_event *ev);
int32_t kafka_ev_partition(const evh_event *ev);
int64_t kafka_ev_offset(const evh_event *ev);
const char *kafka_ev_key(const evh_event *ev, size_t *len);
const char *kafka_ev_data(const evh_event *ev, size_t *len);
const char *kafka_ev_header(const evh_event *ev, const char *name);
int kafka_ev_attempt(const evh_event *ev);
void kafka_ev_set_error(const evh_event *ev, const char *message);

/* Delay before retry number `attempt` (1 = the first retry): full jitter,
 * uniform in [0, min(backoff_max_ms, backoff_ms * 2^(attempt-1))], picked
 * by `rnd`. Pure; exposed for tests. */
int kafka_retry_delay_ms(int backoff_ms, int backoff_max_ms, int attempt, uint32_t rnd);

/* How long, at most, an empty partition with messages on their way holds
 * the others back in ordered dispatch (1 s), and one not fetched from yet
 * (5 s, also the bound on any hold); 0 restores a default. Tests lengthen
 * them to show a partition does not hold the others when it should not. */
void kafka_set_order_waits_ms(int wait_ms, int start_wait_ms);
#endif
