/* Dead letters, for the admin API: read a plugin's dead-letter topics from
 * Kafka with a short-lived consumer of its own (no group: partitions are
 * assigned one at a time, from the offset asked for, or the first, to the
 * end as it was when the read began),
 * and redrive messages, i.e. produce them back to the topic and partition
 * they came from, so the plugin's consumer handles them again through its
 * normal path (inbox-checked). Writing dead letters is the consumer's job
 * (kafka.c). All calls block for at most their timeout; any thread. */
#ifndef EVHOST_DLQ_H
#define EVHOST_DLQ_H
#include <stddef.h>
#include <stdint.h>
#include "kafka.h"

/* One message read from a dead-letter topic. Bytes are copied and
 * NUL-terminated; key and value are NULL when the message had none. */
typedef struct dlq_msg {
	char *topic;
	int32_t partition;
	int64_t offset;
	int64_t timestamp_ms; /* -1: none */
	char *key;
	size_t key_len;
	char *value; /* its first bytes only when read with a value_max (dlq_read_after) */
	size_t value_len; /* the whole value's size */
	size_t nheaders;
	char **hname, **hvalue; /* hvalue[i] NULL: a header without value */
	size_t *hlen;
} dlq_msg;

/* Where a partition of a dead-letter topic began (its low watermark) when
 * a read looked: no dead letter below `lo` is in it any more. */
typedef struct dlq_low {
	char *topic;
	int32_t partition;
	int64_t lo;
} dlq_low;

typedef struct dlq_list {
	dlq_msg *v; /* sorted by topic, partition, offset */
	size_t n;
	int truncated; /* more messages than `limit` after the last one */
	/* Every partition of the topics that exist, empty ones too, as the read
	 * found them before reading any: all of them or, when a partition's
	 * watermarks could not be read, no read (an error). */
	dlq_low *lows;
	size_t nlows;
} dlq_list;

/* A position in the dead-letter topics. The caller owns `topic`. */
typedef struct dlq_pos {
	const char *topic; /* dlq_read_at: NULL, any */
	int32_t partition; /* dlq_read_at: -1, any */
	int64_t offset;
} dlq_pos;

/* Read `topics` (missing ones are skipped) up to `limit` messages, within
 * timeout_ms: the first `limit` in the order topic (by name), partition,
 * offset, one partition after the other. Returns 0, or an EVH_* status with
 * `err` set. */
int dlq_read(kafka *k, const char *const *topics, size_t ntopics, size_t limit, int timeout_ms,
             dlq_list *out, char *err, size_t errlen);
/* The same, from the message after `after` (NULL: the first) in that order:
 * the next page begins after the last message of this one. Of each value
 * only the first `value_max` bytes are kept (SIZE_MAX: all; 0: none, value
 * NULL): a page shown, not sent, need not hold whole values. Such a page
 * (value_max not SIZE_MAX) also ends once it holds 8 MiB of messages (at
 * least one), `truncated` set when more follow. */
int dlq_read_after(kafka *k, const char *const *topics, size_t ntopics, const dlq_pos *after,
                   size_t limit, size_t value_max, int timeout_ms, dlq_list *out, char *err,
                   size_t errlen);
/* Each partition's end as it was when a run of reads began
 * (dlq_read_bounded): zeroed before the first read, dlq_ends_free after the
 * last. */
typedef struct dlq_ends {
	int set; /* the first read filled it */
	size_t n;
	struct dlq_end {
		char *topic;
		int32_t partition;
		int64_t end;
	} *v;
} dlq_ends;
/* dlq_read_after, reading each partition only up to where it ended at the
 * first read with `ends` (which that read records): a run of reads through
 * the topics (a redrive of every dead letter, chunk after chunk) does not
 * go on into what was added to them meanwhile, e.g. its own copies that
 * failed again and were dead-lettered after it. A partition the first read
 * found empty or missing is not read. */
int dlq_read_bounded(kafka *k, const char *const *topics, size_t ntopics, const dlq_pos *after,
                     dlq_ends *ends, size_t limit, int timeout_ms, dlq_list *out, char *err,
                     size_t errlen);
/* Such a read also ends (truncated) once it holds 64 MiB of messages (keys,
 * values, headers; one message at least). Tests set another bound (0: the
 * default). */
void dlq_set_chunk_bytes(size_t n);
void dlq_ends_free(dlq_ends *ends);
/* The messages at the positions `at` (each read from its offset, not from
 * the start of its partition); a position that matches no message is left
 * out. One message once, however many positions match it. */
int dlq_read_at(kafka *k, const char *const *topics, size_t ntopics, const dlq_pos *at,
                size_t nat, int timeout_ms, dlq_list *out, char *err, size_t errlen);
void dlq_list_free(dlq_list *l);
/* A header's value (the last of that name), NULL when absent. */
const char *dlq_header(const dlq_msg *m, const char *name, size_t *len);

typedef enum dlq_outcome { DLQ_REDRIVEN = 0, DLQ_SKIPPED, DLQ_FAILED } dlq_outcome;

typedef struct dlq_redrive_result {
	dlq_outcome outcome;
	char to_topic[256];
	int32_t to_partition;
	int64_t to_offset;
	char error[256]; /* why it was skipped or failed */
} dlq_redrive_result;

/* Produce each message back to its evhost_dlq_topic / evhost_dlq_partition
 * with its key, value and headers, minus the evhost_dlq_* ones, plus
 * evhost_redrive = 1 and evhost_redrive_from = <dlq topic>/<partition>/
 * <offset>. A message without ce_id gets ce_id = <topic>/<partition>/
 * <offset> of its original position: the id the consumer gave it the first
 * time, so the inbox recognises it if it was handled after all. Messages
 * without evhost_dlq_topic, or whose value was truncated when dead-lettered,
 * are skipped. Waits up to timeout_ms for the acknowledgements; res[i] is
 * the outcome of msgs[i]. */
void dlq_redrive(kafka *k, const dlq_msg *const *msgs, size_t n, int timeout_ms,
                 dlq_redrive_result *res);
#endif
