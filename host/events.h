/* Event envelope: CloudEvents 1.0 binary-mode Kafka headers (ce_id, ce_type,
 * ce_source, ce_specversion, ce_time, content-type) plus W3C traceparent.
 * Pure functions over librdkafka header lists, plus id/time generation. */
#ifndef EVHOST_EVENTS_H
#define EVHOST_EVENTS_H
#include <stddef.h>
#include <librdkafka/rdkafka.h>

typedef struct ce_meta {
	char id[256];
	int id_cut; /* ce_id was longer than `id` holds, or held a NUL: `id` is cut */
	char type[256];
	int type_cut; /* the same for ce_type */
	char source[256];
	int source_cut; /* the same for ce_source */
	char specversion[8];
	char time[40];
	int time_cut; /* the same for ce_time (RFC 3339 times need 35 bytes at most) */
	char content_type[64];
	char traceparent[64];
} ce_meta;

/* A time-ordered UUIDv7 string (36 chars + NUL): event ids. */
void events_uuid(char out[37]);
/* Current UTC time as RFC 3339 with milliseconds: 2026-01-02T03:04:05.678Z.
 * Never earlier than one it gave before in this process (a wall clock set
 * back is held at the latest given until it catches up). */
void events_now_rfc3339(char out[40]);
/* How far (ms) the latest time events_now_rfc3339 gave is ahead of the wall
 * clock now: what the next events' time is held at past the clock; 0 when
 * it is not ahead. */
long long events_time_held_ms(void);
/* `bytes` (8 or 16) random bytes, not all zero, as lowercase hex into out
 * (2 * bytes + 1): W3C trace and span ids. */
void events_random_hex(char *out, size_t bytes);
/* Read a W3C traceparent ("<2 hex version, not ff>-<32 hex trace id, not
 * all zero>-<16 hex parent id, not all zero>-<2 hex flags>", as a caller or
 * a Kafka header gives it): the ids in lowercase, each output optional.
 * 0, or -1 (outputs untouched) when `tp` is NULL or not one. */
int events_traceparent_parse(const char *tp, char trace_id[33], char span_id[17], int *flags);
/* Its trace id alone. */
int events_trace_id(const char *traceparent, char out[33]);
/* Append the CloudEvents headers for `m` to `hdrs`. */
int events_headers_encode(const ce_meta *m, rd_kafka_headers_t *hdrs);
/* Read them back; missing ones are left empty. Returns 0 when ce_id and
 * ce_type are present, -1 otherwise. */
int events_headers_decode(const rd_kafka_headers_t *hdrs, ce_meta *m);
/* Whether a ce_id header's value (`v`, `n` bytes; NULL: a null header) is
 * the event's identity to evhost's consumers: not empty, at most 255 bytes,
 * no NUL byte. Otherwise they take the message's position as its id
 * (events_headers_decode sets ce_meta.id_cut, or leaves id empty). */
int events_id_usable(const void *v, size_t n);
#endif
