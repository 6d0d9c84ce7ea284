/* Kafka: the idempotent producer (acks=all) shared by all plugins, the
 * embedded mock cluster for brokers = embedded, and one consumer thread per
 * plugin with subscriptions: dispatch by topic and ce_type, inbox
 * de-duplication in the handler's transaction, retries with backoff that
 * pause only the affected partition, dead-lettering, and offset commits
 * only after the handler's transaction committed. */
#ifndef EVHOST_KAFKA_H
#define EVHOST_KAFKA_H
#include <stdint.h>
#include "config.h"
#include "plugins.h"
#include "store.h"

typedef struct kafka kafka;

/* Create the producer (and the mock cluster when embedded). */
int kafka_start(kafka **k, const settings *s, char *err, size_t errlen);
/* Flush outstanding messages (up to timeout_ms) and destroy everything. */
void kafka_stop(kafka *k, int timeout_ms);
/* Bootstrap servers actually used (the mock cluster's when embedded). */
const char *kafka_bootstraps(kafka *k);
/* Can we reach the cluster (metadata within timeout)? */
int kafka_reachable(kafka *k, int timeout_ms);

/* Delivery callback: ok != 0 when the broker acknowledged the message. */
typedef void (*kafka_delivery_cb)(void *opaque, int ok, const char *error);
/* Produce one outbox row (headers built from its metadata). The callback
 * runs on whichever thread polls the producer (kafka_poll_producer, or a
 * consumer thread waiting for a dead-letter write), so it must be
 * thread-safe; kafka_stop reports messages it could not deliver with ok == 0.
 * EVH_EBUSY: the local queue is full; poll and try again. */
int kafka_produce_row(kafka *k, const outbox_row *row, const char *source, kafka_delivery_cb cb,
                      void *opaque);
/* Serve delivery reports. */
void kafka_poll_producer(kafka *k, int timeout_ms);
int kafka_outq_len(kafka *k);

/* Start / stop the consumer thread of a plugin with subscriptions. Stop
 * finishes the message in hand, commits offsets and leaves the group. */
int consumer_start(kafka *k, evh_plugin *p, const settings *s, char *err, size_t errlen);
void consumer_stop(evh_plugin *p);

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
#endif
