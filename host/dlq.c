/* Dead letters for the admin API: reading dead-letter topics and redriving
 * messages back to where they came from (see dlq.h).
 *
 * The reader is a consumer that never joins a group: it assigns one
 * partition at a time, from the offset asked for (the low watermark for a
 * whole read), and stops at the high watermark it saw first (or at partition
 * EOF), so it never commits, never joins the plugin's group and never
 * disturbs the plugin's consumer. One at a time, in the order topic,
 * partition, offset, makes a read cut at `limit` the same each time, and
 * lets the next page begin where the last one ended.
 *
 * Redrive produces through the daemon's shared idempotent producer. Delivery
 * reports may arrive on any thread that polls it (the relay does), possibly
 * after the waiter gave up, so the batch they report into is reference
 * counted: the waiter holds one reference, each message in flight another. */
#include "dlq.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "events.h"
#include "log.h"
#include "textbuf.h"

#define DLQ_LOG "admin"
#define POLL_MS 100
#define METADATA_TIMEOUT_MS 5000
/* A bounded read (a chunk of a redrive of every dead letter) ends once it
 * holds this many bytes of messages (at least one message): the chunk's
 * count alone (1000) let a topic of 1 MB dead letters hold a gigabyte. */
#define CHUNK_BYTES (64u << 20)
static _Atomic size_t chunk_bytes = CHUNK_BYTES;
/* A page read to be shown (dlq_read_after) ends once it holds this many:
 * its values are cut (the admin API's at 64 KiB) but not its keys and
 * headers, so 1000 dead letters of 1 MB of headers each held a gigabyte,
 * and even cut values made an answer of 87 MiB in base64, past what
 * evhostctl takes. The page is then short, with the next one after it. */
#define PAGE_BYTES (8u << 20)

void dlq_set_chunk_bytes(size_t n) { atomic_store(&chunk_bytes, n ? n : CHUNK_BYTES); }

/* ---------------------------------------------------------------- read */

/* A partition of a dead-letter topic: [lo, end) as it was when the read
 * began (messages written after it are not read). */
struct part {
	char *topic;
	int32_t partition;
	int64_t lo, end;
};

struct reader {
	rd_kafka_t *rk;
	struct part *parts; /* sorted by topic, partition */
	size_t nparts;
	dlq_low *lows; /* every partition's, empty ones too (dlq_list.lows) */
	size_t nlows;
	dlq_list *out;
	size_t cap;
	int64_t deadline;
	int timeout_ms;
	size_t value_max; /* bytes of each value kept (dlq_msg.value) */
	size_t bytes, bytes_max; /* of the messages kept, and the read's bound */
};

static void msg_free(dlq_msg *m)
{
	for (size_t i = 0; i < m->nheaders; i++) {
		free(m->hname[i]);
		free(m->hvalue[i]);
	}
	free(m->hname);
	free(m->hvalue);
	free(m->hlen);
	free(m->topic);
	free(m->key);
	free(m->value);
}

static void lows_free(dlq_low *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].topic);
	free(v);
}

void dlq_list_free(dlq_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++)
		msg_free(&l->v[i]);
	free(l->v);
	lows_free(l->lows, l->nlows);
	memset(l, 0, sizeof *l);
}

const char *dlq_header(const dlq_msg *m, const char *name, size_t *len)
{
	for (size_t i = m->nheaders; i > 0; i--)
		if (!strcmp(m->hname[i - 1], name)) {
			if (len)
				*len = m->hlen[i - 1];
			return m->hvalue[i - 1];
		}
	return NULL;
}

static int copy_headers(dlq_msg *m, const rd_kafka_message_t *km)
{
	rd_kafka_headers_t *h = NULL;
	const char *name;
	const void *val;
	size_t n, size;
	if (rd_kafka_message_headers(km, &h) != RD_KAFKA_RESP_ERR_NO_ERROR || !h)
		return 0;
	n = rd_kafka_header_cnt(h);
	m->hname = calloc(n ? n : 1, sizeof *m->hname);
	m->hvalue = calloc(n ? n : 1, sizeof *m->hvalue);
	m->hlen = calloc(n ? n : 1, sizeof *m->hlen);
	if (!m->hname || !m->hvalue || !m->hlen)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (rd_kafka_header_get_all(h, i, &name, &val, &size) != RD_KAFKA_RESP_ERR_NO_ERROR)
			break;
		m->nheaders = i + 1;
		m->hname[i] = strdup(name);
		m->hvalue[i] = val ? tb_dup(val, size) : NULL;
		m->hlen[i] = val ? size : 0;
		if (!m->hname[i] || (val && !m->hvalue[i]))
			return -1;
	}
	return 0;
}

static int msg_copy(dlq_msg *m, const rd_kafka_message_t *km, size_t value_max)
{
	size_t kept = km->payload && km->len < value_max ? km->len : value_max;
	rd_kafka_timestamp_type_t tstype;
	memset(m, 0, sizeof *m);
	m->topic = strdup(rd_kafka_topic_name(km->rkt));
	m->partition = km->partition;
	m->offset = km->offset;
	m->timestamp_ms = rd_kafka_message_timestamp(km, &tstype);
	if (km->key && !(m->key = tb_dup(km->key, km->key_len)))
		return -1;
	m->key_len = km->key ? km->key_len : 0;
	/* An empty value stays one (""), apart from a null one (NULL): sent back
	 * as NULL, it would be a tombstone, which compaction acts on. */
	if (km->payload && (kept || !km->len) && !(m->value = tb_dup(km->payload, kept)))
		return -1;
	m->value_len = km->payload ? km->len : 0;
	return m->topic ? copy_headers(m, km) : -1;
}

/* Keep one message. -1: out of memory. */
static int keep(struct reader *r, const rd_kafka_message_t *km)
{
	dlq_list *out = r->out;
	if (out->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		dlq_msg *v = realloc(out->v, cap * sizeof *v);
		if (!v)
			return -1;
		out->v = v;
		r->cap = cap;
	}
	if (msg_copy(&out->v[out->n], km, r->value_max)) {
		msg_free(&out->v[out->n]);
		return -1;
	}
	r->bytes += km->key_len + (km->len < r->value_max ? km->len : r->value_max);
	for (size_t i = 0; i < out->v[out->n].nheaders; i++)
		r->bytes += strlen(out->v[out->n].hname[i]) + out->v[out->n].hlen[i];
	out->n++;
	return 0;
}

/* What is left of the read's time for one wait or look-up (at most
 * METADATA_TIMEOUT_MS), or 0 with `err` set when none is: the look-ups of
 * many partitions, each up to METADATA_TIMEOUT_MS, are the read's time too. */
static int left_ms(const struct reader *r, char *err, size_t errlen)
{
	int64_t left = r->deadline - clock_mono_ms();
	if (left <= 0) {
		snprintf(err, errlen, "reading the dead-letter topics took longer than %d ms",
		         r->timeout_ms);
		return 0;
	}
	return left < METADATA_TIMEOUT_MS ? (int)left : METADATA_TIMEOUT_MS;
}

static int add_part(struct reader *r, const char *topic, int32_t partition, char *err,
                    size_t errlen)
{
	int64_t lo, hi;
	struct part *p;
	int ms = left_ms(r, err, errlen), status;
	if (!ms)
		return EVH_EKAFKA;
	status = kafka_watermarks(r->rk, topic, partition, &lo, &hi, ms, err, errlen);
	if (status)
		return status;
	/* An emptied partition's too: retention's usual end of a topic. */
	if (!(r->lows[r->nlows].topic = strdup(topic)))
		return EVH_ENOMEM;
	r->lows[r->nlows].partition = partition;
	r->lows[r->nlows++].lo = lo;
	if (hi <= lo)
		return EVH_OK; /* empty */
	p = &r->parts[r->nparts];
	p->topic = strdup(topic);
	if (!p->topic)
		return EVH_ENOMEM;
	p->partition = partition;
	p->lo = lo;
	p->end = hi;
	r->nparts++;
	return EVH_OK;
}

static int part_cmp(const void *a, const void *b)
{
	const struct part *x = a, *y = b;
	int c = strcmp(x->topic, y->topic);
	if (c)
		return c;
	return (x->partition > y->partition) - (x->partition < y->partition);
}

/* Every non-empty partition of the topics that exist, in order. */
static int plan(struct reader *r, const char *const *topics, size_t ntopics, char *err,
                size_t errlen)
{
	const struct rd_kafka_metadata *md = NULL;
	size_t total = 0;
	int status = EVH_OK;
	/* All topics: asking for one by name may create it on brokers that
	 * auto-create topics. */
	int ms = left_ms(r, err, errlen);
	rd_kafka_resp_err_t e;
	if (!ms)
		return EVH_EKAFKA;
	e = rd_kafka_metadata(r->rk, 1, NULL, &md, ms);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "cannot read the cluster's topics: %s", rd_kafka_err2str(e));
		return EVH_EKAFKA;
	}
	for (int t = 0; t < md->topic_cnt; t++)
		total += (size_t)md->topics[t].partition_cnt;
	r->parts = calloc(total ? total : 1, sizeof *r->parts);
	r->lows = calloc(total ? total : 1, sizeof *r->lows);
	if (!r->parts || !r->lows)
		status = EVH_ENOMEM;
	for (size_t i = 0; !status && i < ntopics; i++) {
		int dup = 0;
		for (size_t j = 0; j < i; j++)
			dup |= !strcmp(topics[i], topics[j]);
		for (int t = 0; !dup && !status && t < md->topic_cnt; t++) {
			const struct rd_kafka_metadata_topic *mt = &md->topics[t];
			if (strcmp(mt->topic, topics[i]) ||
			    mt->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
				continue; /* none was written yet */
			if (mt->err) { /* being made, a leader being elected: not "none" */
				snprintf(err, errlen, "cannot read the dead-letter topic %s: %s", mt->topic,
				         rd_kafka_err2str(mt->err));
				status = EVH_EKAFKA;
				break;
			}
			for (int p = 0; !status && p < mt->partition_cnt; p++)
				status = add_part(r, mt->topic, mt->partitions[p].id, err, errlen);
		}
	}
	rd_kafka_metadata_destroy(md);
	if (status == EVH_ENOMEM)
		snprintf(err, errlen, "out of memory");
	if (!status && r->nparts)
		qsort(r->parts, r->nparts, sizeof *r->parts, part_cmp);
	return status;
}

/* The read holds as many bytes as it may (and a message at least). */
static int reader_full(const struct reader *r)
{
	return r->out->n && r->bytes >= r->bytes_max;
}

/* Read offsets [from, to) of partition p, at most `max` messages, from
 * `from` on (the consumer is assigned that one partition there). Messages
 * of an earlier assignment still queued are told apart by their partition
 * and offset. */
static int read_span(struct reader *r, const struct part *p, int64_t from, int64_t to,
                     size_t max, char *err, size_t errlen)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_resp_err_t e;
	size_t got = 0;
	int64_t next = from;

	rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = from;
	e = rd_kafka_assign(r->rk, l);
	rd_kafka_topic_partition_list_destroy(l);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "cannot assign %s [%" PRId32 "]: %s", p->topic, p->partition,
		         rd_kafka_err2str(e));
		return EVH_EKAFKA;
	}
	while (got < max && next < to && !reader_full(r)) {
		rd_kafka_message_t *km;
		int mine, rc = 0, eof = 0;
		if (!left_ms(r, err, errlen))
			return EVH_EKAFKA;
		km = rd_kafka_consumer_poll(r->rk, POLL_MS);
		if (!km)
			continue;
		mine = km->rkt && km->partition == p->partition &&
		       !strcmp(rd_kafka_topic_name(km->rkt), p->topic);
		if (km->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
			eof = mine && km->offset >= next; /* else one of an earlier read */
		else if (km->err)
			log_warn(DLQ_LOG, "reading dead letters: %s", rd_kafka_message_errstr(km));
		else if (mine && km->offset >= next && km->offset < to) {
			rc = keep(r, km);
			got++;
			next = km->offset + 1;
		} else if (mine && km->offset >= to) {
			eof = 1;
		}
		rd_kafka_message_destroy(km);
		if (rc < 0) {
			snprintf(err, errlen, "out of memory");
			return EVH_ENOMEM;
		}
		if (eof)
			break;
	}
	return EVH_OK;
}

static int msg_cmp(const void *a, const void *b)
{
	const dlq_msg *x = a, *y = b;
	int c = strcmp(x->topic, y->topic);
	if (c)
		return c;
	if (x->partition != y->partition)
		return x->partition < y->partition ? -1 : 1;
	return (x->offset > y->offset) - (x->offset < y->offset);
}

static rd_kafka_t *reader_new(kafka *k, char *err, size_t errlen)
{
	char msg[512];
	rd_kafka_t *rk;
	rd_kafka_conf_t *conf = kafka_reader_conf(k, "evhost-admin-dlq", err, errlen);
	if (!conf)
		return NULL;
	/* librdkafka's consumer wants a group even to assign partitions; this
	 * one never joins (no subscribe) and never commits. */
	if (rd_kafka_conf_set(conf, "enable.partition.eof", "true", msg, sizeof msg) !=
	        RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(conf, "group.id", "evhost.admin.dlq-reader", msg, sizeof msg) !=
	        RD_KAFKA_CONF_OK) {
		snprintf(err, errlen, "dead-letter reader: %s", msg);
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, msg, sizeof msg);
	if (!rk) {
		rd_kafka_conf_destroy(conf);
		snprintf(err, errlen, "cannot create the dead-letter reader: %s", msg);
		return NULL;
	}
	rd_kafka_poll_set_consumer(rk);
	return rk;
}

static int reader_open(struct reader *r, kafka *k, const char *const *topics, size_t ntopics,
                       int timeout_ms, dlq_list *out, char *err, size_t errlen)
{
	memset(r, 0, sizeof *r);
	memset(out, 0, sizeof *out);
	r->out = out;
	r->timeout_ms = timeout_ms;
	r->value_max = SIZE_MAX;
	r->bytes_max = SIZE_MAX;
	r->deadline = clock_mono_ms() + timeout_ms;
	r->rk = reader_new(k, err, errlen);
	if (!r->rk)
		return EVH_EKAFKA;
	return plan(r, topics, ntopics, err, errlen);
}

static int reader_close(struct reader *r, int status)
{
	if (r->rk) {
		rd_kafka_consumer_close(r->rk);
		kafka_destroy_bounded(r->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE,
		                      KAFKA_DESTROY_WAIT_MS, "the dead-letter reader's Kafka client",
		                      NULL, NULL);
	}
	for (size_t i = 0; i < r->nparts; i++)
		free(r->parts[i].topic);
	free(r->parts);
	if (status) {
		lows_free(r->lows, r->nlows);
		dlq_list_free(r->out);
		return status;
	}
	if (r->out->n)
		qsort(r->out->v, r->out->n, sizeof *r->out->v, msg_cmp);
	/* No partition at all (no such topic): nothing to free, as before. */
	if (!r->nlows) {
		free(r->lows);
		r->lows = NULL;
	}
	r->out->lows = r->lows;
	r->out->nlows = r->nlows;
	return status;
}

/* Where partition p's read begins after `after` (order: topic, partition,
 * offset); p->end or more: nothing of it is after. */
static int64_t start_after(const struct part *p, const dlq_pos *after)
{
	int c;
	if (!after)
		return p->lo;
	c = strcmp(p->topic, after->topic ? after->topic : "");
	if (!c)
		c = (p->partition > after->partition) - (p->partition < after->partition);
	if (c < 0)
		return p->end;
	if (c > 0 || after->offset < p->lo)
		return p->lo;
	return after->offset + 1;
}

void dlq_ends_free(dlq_ends *ends)
{
	for (size_t i = 0; i < ends->n; i++)
		free(ends->v[i].topic);
	free(ends->v);
	memset(ends, 0, sizeof *ends);
}

/* The first read of a run: record where each partition ends. Later ones:
 * end each partition there (or at once: one not recorded). */
static int bound_parts(struct reader *r, dlq_ends *ends, char *err, size_t errlen)
{
	if (!ends->set) {
		ends->v = calloc(r->nparts ? r->nparts : 1, sizeof *ends->v);
		for (size_t i = 0; ends->v && i < r->nparts; i++) {
			if (!(ends->v[i].topic = strdup(r->parts[i].topic))) {
				dlq_ends_free(ends);
				break;
			}
			ends->v[i].partition = r->parts[i].partition;
			ends->v[i].end = r->parts[i].end;
			ends->n = i + 1;
		}
		if (!ends->v) {
			snprintf(err, errlen, "out of memory");
			return EVH_ENOMEM;
		}
		ends->set = 1;
		return EVH_OK;
	}
	for (size_t i = 0; i < r->nparts; i++) {
		struct part *p = &r->parts[i];
		int64_t end = p->lo;
		for (size_t j = 0; j < ends->n; j++)
			if (ends->v[j].partition == p->partition && !strcmp(ends->v[j].topic, p->topic))
				end = ends->v[j].end;
		if (end < p->end)
			p->end = end;
	}
	return EVH_OK;
}

/* dlq_read_bounded (ends NULL: dlq_read_after), keeping `value_max` bytes of
 * each value. */
static int read_from(kafka *k, const char *const *topics, size_t ntopics, const dlq_pos *after,
                     dlq_ends *ends, size_t limit, size_t value_max, int timeout_ms,
                     dlq_list *out, char *err, size_t errlen)
{
	struct reader r;
	int status = reader_open(&r, k, topics, ntopics, timeout_ms, out, err, errlen);
	r.value_max = value_max;
	if (ends)
		r.bytes_max = atomic_load(&chunk_bytes);
	else if (value_max != SIZE_MAX)
		r.bytes_max = PAGE_BYTES;
	if (!status && ends)
		status = bound_parts(&r, ends, err, errlen);
	/* Partition by partition, in order, so that the first `limit` are the
	 * same whichever partition the broker answers first. */
	for (size_t i = 0; !status && i < r.nparts; i++) {
		const struct part *p = &r.parts[i];
		int64_t from = start_after(p, after);
		if (from >= p->end) /* start_after gives lo at least */
			continue;
		if (out->n >= limit || reader_full(&r)) {
			out->truncated = 1;
			break;
		}
		status = read_span(&r, p, from, p->end, limit - out->n, err, errlen);
		if (!status && (out->n >= limit || reader_full(&r)) && out->n &&
		    out->v[out->n - 1].offset < p->end - 1) {
			out->truncated = 1;
			break;
		}
	}
	return reader_close(&r, status);
}

int dlq_read_after(kafka *k, const char *const *topics, size_t ntopics, const dlq_pos *after,
                   size_t limit, size_t value_max, int timeout_ms, dlq_list *out, char *err,
                   size_t errlen)
{
	return read_from(k, topics, ntopics, after, NULL, limit, value_max, timeout_ms, out, err,
	                 errlen);
}

int dlq_read_bounded(kafka *k, const char *const *topics, size_t ntopics, const dlq_pos *after,
                     dlq_ends *ends, size_t limit, int timeout_ms, dlq_list *out, char *err,
                     size_t errlen)
{
	return read_from(k, topics, ntopics, after, ends, limit, SIZE_MAX, timeout_ms, out, err,
	                 errlen);
}

int dlq_read(kafka *k, const char *const *topics, size_t ntopics, size_t limit, int timeout_ms,
             dlq_list *out, char *err, size_t errlen)
{
	return dlq_read_after(k, topics, ntopics, NULL, limit, SIZE_MAX, timeout_ms, out, err,
	                      errlen);
}

static int have_msg(const dlq_list *l, const struct part *p, int64_t offset)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i].offset == offset && l->v[i].partition == p->partition &&
		    !strcmp(l->v[i].topic, p->topic))
			return 1;
	return 0;
}

static int pos_cmp(const void *a, const void *b)
{
	const dlq_pos *x = a, *y = b;
	return (x->offset > y->offset) - (x->offset < y->offset);
}

int dlq_read_at(kafka *k, const char *const *topics, size_t ntopics, const dlq_pos *at,
                size_t nat, int timeout_ms, dlq_list *out, char *err, size_t errlen)
{
	struct reader r;
	dlq_pos *v = malloc((nat ? nat : 1) * sizeof *v);
	int status = v ? reader_open(&r, k, topics, ntopics, timeout_ms, out, err, errlen)
	               : EVH_ENOMEM;
	if (!v) {
		snprintf(err, errlen, "out of memory");
		memset(out, 0, sizeof *out);
		return EVH_ENOMEM;
	}
	/* Each partition's offsets in rising order: what an earlier read left
	 * queued is then below the next one asked for. */
	memcpy(v, at, nat * sizeof *v);
	qsort(v, nat, sizeof *v, pos_cmp);
	for (size_t i = 0; !status && i < r.nparts; i++) {
		const struct part *p = &r.parts[i];
		for (size_t j = 0; !status && j < nat; j++) {
			if ((v[j].topic && strcmp(v[j].topic, p->topic)) ||
			    (v[j].partition >= 0 && v[j].partition != p->partition) ||
			    v[j].offset < p->lo || v[j].offset >= p->end ||
			    have_msg(out, p, v[j].offset))
				continue;
			status = read_span(&r, p, v[j].offset, v[j].offset + 1, 1, err, errlen);
		}
	}
	free(v);
	return reader_close(&r, status);
}

/* ------------------------------------------------------------- redrive */

struct batch;

struct slot {
	struct batch *b;
	size_t i;
	int waiting; /* in flight, under b->mu */
};

struct batch {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int refs;
	size_t pending;
	dlq_redrive_result *res; /* NULL once the waiter left */
	struct slot *slots;
};

static void batch_release(struct batch *b)
{
	int last;
	pthread_mutex_lock(&b->mu);
	last = --b->refs == 0;
	pthread_mutex_unlock(&b->mu);
	if (!last)
		return;
	pthread_cond_destroy(&b->cv);
	pthread_mutex_destroy(&b->mu);
	free(b->slots);
	free(b);
}

static void redrive_delivered(void *opaque, int ok, const char *error, int32_t partition,
                              int64_t offset)
{
	struct slot *s = opaque;
	struct batch *b = s->b;
	pthread_mutex_lock(&b->mu);
	s->waiting = 0;
	if (b->res) {
		dlq_redrive_result *r = &b->res[s->i];
		r->outcome = ok ? DLQ_REDRIVEN : DLQ_FAILED;
		r->to_partition = partition;
		r->to_offset = offset;
		if (!ok)
			snprintf(r->error, sizeof r->error, "%s",
			         error ? error : "delivery failed");
	}
	b->pending--;
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
	batch_release(b);
}

static int is_dlq_header(const char *name)
{
	return !strncmp(name, "evhost_dlq_", 11) || !strncmp(name, "evhost_redrive", 14);
}

/* The original headers, cleaned, plus the redrive marks. */
static rd_kafka_headers_t *redrive_headers(const dlq_msg *m, const char *orig_topic,
                                           const char *orig_partition, const char *orig_offset)
{
	rd_kafka_headers_t *h = rd_kafka_headers_new(m->nheaders + 3);
	size_t idlen = 0;
	const char *id = dlq_header(m, "ce_id", &idlen);
	/* A ce_id its consumer did not take as the event's id (empty, too long,
	 * with a NUL) is replaced, as a missing one is added: by the id it did
	 * take, the position. Kept, the copy would be known by its own new
	 * position, and a second copy of the same dead letter handled again. */
	int position_id = !events_id_usable(id, idlen) && orig_partition && orig_offset;
	char from[600];
	if (!h)
		return NULL;
	for (size_t i = 0; i < m->nheaders; i++)
		if (!is_dlq_header(m->hname[i]) && !(position_id && !strcmp(m->hname[i], "ce_id")))
			rd_kafka_header_add(h, m->hname[i], -1, m->hvalue[i],
			                    m->hvalue[i] ? (ssize_t)m->hlen[i] : 0);
	if (position_id) {
		char pos[600];
		snprintf(pos, sizeof pos, "%s/%s/%s", orig_topic, orig_partition, orig_offset);
		rd_kafka_header_add(h, "ce_id", -1, pos, -1);
	}
	rd_kafka_header_add(h, "evhost_redrive", -1, "1", -1);
	snprintf(from, sizeof from, "%s/%" PRId32 "/%" PRId64, m->topic, m->partition, m->offset);
	rd_kafka_header_add(h, "evhost_redrive_from", -1, from, -1);
	return h;
}

/* Check `m` and send it. Returns 1 when it is in flight. */
static int redrive_one(kafka *k, const dlq_msg *m, struct slot *s, dlq_redrive_result *r)
{
	const char *topic = dlq_header(m, "evhost_dlq_topic", NULL);
	const char *part = dlq_header(m, "evhost_dlq_partition", NULL);
	const char *off = dlq_header(m, "evhost_dlq_offset", NULL);
	int32_t partition = RD_KAFKA_PARTITION_UA;
	rd_kafka_headers_t *h;
	int rc;

	r->outcome = DLQ_SKIPPED;
	r->to_partition = -1;
	r->to_offset = -1;
	if (!topic || !*topic) {
		snprintf(r->error, sizeof r->error,
		         "no evhost_dlq_topic header: not a dead letter");
		return 0;
	}
	snprintf(r->to_topic, sizeof r->to_topic, "%s", topic);
	if (dlq_header(m, "evhost_dlq_truncated", NULL)) {
		snprintf(r->error, sizeof r->error, "its value was truncated when it was "
		                                    "dead-lettered; it cannot be redriven");
		return 0;
	}
	if (part && *part)
		partition = (int32_t)strtol(part, NULL, 10);
	h = redrive_headers(m, topic, part, off);
	if (!h) {
		r->outcome = DLQ_FAILED;
		snprintf(r->error, sizeof r->error, "out of memory");
		return 0;
	}
	rc = kafka_produce_message(k, topic, partition, m->key, m->key_len, m->value, m->value_len,
	                           h, redrive_delivered, s);
	if (rc == EVH_OK)
		return 1;
	r->outcome = DLQ_FAILED;
	snprintf(r->error, sizeof r->error, "cannot produce to %s: %s", topic,
	         rc == EVH_EBUSY       ? "the producer's queue is full"
	         : rc == EVH_ENOTFOUND ? KAFKA_NO_TOPIC
	                               : "see the log");
	return 0;
}

void dlq_redrive(kafka *k, const dlq_msg *const *msgs, size_t n, int timeout_ms,
                 dlq_redrive_result *res)
{
	struct batch *b = calloc(1, sizeof *b);
	int64_t deadline = clock_mono_ms() + timeout_ms;

	memset(res, 0, n * sizeof *res);
	if (b)
		b->slots = calloc(n ? n : 1, sizeof *b->slots);
	if (!b || !b->slots) {
		free(b);
		for (size_t i = 0; i < n; i++) {
			res[i].outcome = DLQ_FAILED;
			snprintf(res[i].error, sizeof res[i].error, "out of memory");
		}
		return;
	}
	pthread_mutex_init(&b->mu, NULL);
	pthread_cond_init(&b->cv, NULL);
	b->refs = 1;
	b->res = res;
	for (size_t i = 0; i < n; i++) {
		b->slots[i] = (struct slot){b, i, 1};
		pthread_mutex_lock(&b->mu);
		b->refs++;
		b->pending++;
		pthread_mutex_unlock(&b->mu);
		if (redrive_one(k, msgs[i], &b->slots[i], &res[i]))
			continue;
		pthread_mutex_lock(&b->mu);
		b->slots[i].waiting = 0;
		b->refs--;
		b->pending--;
		pthread_mutex_unlock(&b->mu);
	}
	/* Poll ourselves too: reports come sooner than the relay's next round. */
	for (;;) {
		size_t pending;
		kafka_poll_producer(k, POLL_MS);
		pthread_mutex_lock(&b->mu);
		pending = b->pending;
		if (!pending || clock_mono_ms() >= deadline) {
			for (size_t i = 0; pending && i < n; i++)
				if (b->slots[i].waiting) {
					res[i].outcome = DLQ_FAILED;
					snprintf(res[i].error, sizeof res[i].error,
					         "not acknowledged within %d ms; it may still "
					         "arrive",
					         timeout_ms);
				}
			b->res = NULL; /* late reports only touch the batch */
			pthread_mutex_unlock(&b->mu);
			break;
		}
		pthread_mutex_unlock(&b->mu);
	}
	batch_release(b);
}
