/* Event envelope: CloudEvents 1.0 binary-mode Kafka headers (ce_id, ce_type,
 * ce_source, ce_specversion, ce_time, content-type) plus W3C traceparent.
 * Pure functions over librdkafka header lists, plus id/time generation. */
#ifndef EVHOST_EVENTS_H
#define EVHOST_EVENTS_H
#include <stddef.h>
#include <librdkafka/rdkafka.h>

typedef struct ce_meta {
	char id[64];
	char type[128];
	char source[256];
	char specversion[8];
	char time[40];
	char content_type[64];
	char traceparent[64];
} ce_meta;

/* A time-ordered UUIDv7 string (36 chars + NUL): event ids. */
void events_uuid(char out[37]);
/* Current UTC time as RFC 3339 with milliseconds: 2026-01-02T03:04:05.678Z. */
void events_now_rfc3339(char out[40]);
/* A fresh W3C traceparent "00-<32 hex>-<16 hex>-01". */
void events_new_traceparent(char out[56]);
/* The trace id of a W3C traceparent ("<2 hex version, not ff>-<32 hex, not
 * all zero>-<16 hex>-<2 hex>", as a caller or a Kafka header gives it), in
 * lowercase: 0, or -1 (out untouched) when `traceparent` is NULL or not one. */
int events_trace_id(const char *traceparent, char out[33]);
/* A traceparent in the trace `trace_id` (32 lowercase hex digits, not all
 * zero) with a new span id; a new trace when trace_id is NULL or invalid. */
void events_child_traceparent(const char *trace_id, char out[56]);
/* Append the CloudEvents headers for `m` to `hdrs`. */
int events_headers_encode(const ce_meta *m, rd_kafka_headers_t *hdrs);
/* Read them back; missing ones are left empty. Returns 0 when ce_id and
 * ce_type are present, -1 otherwise. */
int events_headers_decode(const rd_kafka_headers_t *hdrs, ce_meta *m);
#endif
