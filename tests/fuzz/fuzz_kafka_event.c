/* libFuzzer: a consumed Kafka message turned into the handler's event
 * (kafka.c: event_build, the kafka_ev_* accessors behind evh_event_*,
 * event_copy_headers) and read for the ordered dispatch (msg_header,
 * msg_seq, head_key, msg_before). Any producer to a consumed topic chooses
 * a message's key, value and headers, so every byte here is the input's.
 * kafka.c is compiled in (as fuzz_dlq does admin.c) for its static
 * functions. The messages are librdkafka's own: produced (no broker) and
 * purged, each comes back in a delivery report with its key, value and
 * headers, as a consumed one has them.
 *
 * The input: up to MSGS messages, each a flags byte (bits 0-1 its
 * timestamp's last digits, so that ties happen; bits 2-3 the topic), then
 * fields of one length byte and that many bytes (fewer when the input
 * ends; length 255: NULL): the key, the value, then header name and value
 * pairs; a name's length byte 254 ends the message, 240-253 pick a name the
 * host reads (ce_id, evhost_seq, ...). A name may hold NUL bytes, as on the
 * wire: the C name, which handlers and the CloudEvents headers go by, ends
 * at the first; the dispatch's lookups (librdkafka's) go by the whole name.
 *
 * Checked, against a model of its own read from the input: the key is NULL
 * when absent, else the message's bytes with a NUL after them; the value
 * the same, "" when absent; each header name as a handler asks for it gives
 * the last such header's value up to its first NUL ("" for a null one),
 * again on a second call; the id is the last ce_id when 1-255 bytes with no
 * NUL, else "TOPIC/PARTITION/OFFSET"; source and time the last header's
 * value whole, or NULL (absent, too long, a NUL); an error set is a prefix
 * of the message, cut at most 3 bytes short of where a character begins.
 * For the dispatch: evhost_seq is its number when 1-18 digits, else -1;
 * head_key gives each head's time, seq and ce_source; msg_before is the
 * model's order (time, then seq within one source), never both ways. */
#define _GNU_SOURCE /* as kafka.c */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_modes.h"
#include "../../host/kafka.c"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_END 254  /* a name's length byte: the message ends */
#define FZ_KNOWN 240 /* a name's length byte from here: a known name */
#define MSGS 4
#define HEADERS 32 /* at most, a message */
#define TIME0 INT64_C(1700000000000)

static const char *const known[] = {"ce_id",       "ce_type",        "ce_source",
                                    "ce_time",     "evhost_seq",     "traceparent",
                                    "content-type", "ce_specversion", "x"};
#define NKNOWN (sizeof known / sizeof known[0])

/* The topics a message may come from: one as long as Kafka allows. */
static char long_topic[250];
static const char *topics[4] = {"orders", "t", "a.b-c_d", long_topic};
static rd_kafka_t *rk;
static rd_kafka_queue_t *rq;
static rd_kafka_topic_t *rkts[4];

/* One message as the model has it. */
typedef struct fz_hdr {
	char *name; /* malloc'd, NUL-terminated; may hold NULs before nlen */
	size_t nlen;
	char *value; /* NULL: a null header */
	size_t vlen;
} fz_hdr;

typedef struct fz_msg {
	int topic;
	int64_t time;
	char *key, *value; /* NULL: absent */
	size_t klen, vlen;
	fz_hdr h[HEADERS];
	size_t nh;
} fz_msg;

static void *fz_copy(const void *p, size_t n)
{
	char *out = malloc(n + 1);
	if (!out)
		abort();
	memcpy(out, p, n);
	out[n] = '\0';
	return out;
}

static void fz_read(fuzz_in *in, fz_msg *m)
{
	memset(m, 0, sizeof *m);
	m->topic = (in->p[0] >> 2) & 3;
	m->time = TIME0 + (in->p[0] & 3);
	in->p++, in->n--;
	m->key = fuzz_field(in, &m->klen);
	m->value = fuzz_field(in, &m->vlen);
	while (in->n && m->nh < HEADERS) {
		fz_hdr *h = &m->h[m->nh];
		if (in->p[0] == FZ_END) {
			in->p++, in->n--;
			break;
		}
		if (in->p[0] >= FZ_KNOWN && in->p[0] != FUZZ_NULL) {
			const char *k = known[(in->p[0] - FZ_KNOWN) % NKNOWN];
			in->p++, in->n--;
			h->nlen = strlen(k);
			h->name = fz_copy(k, h->nlen);
		} else if (!(h->name = fuzz_field(in, &h->nlen))) {
			h->name = fz_copy("", 0);
		}
		h->value = fuzz_field(in, &h->vlen);
		m->nh++;
	}
}

static void fz_free(fz_msg *m)
{
	for (size_t i = 0; i < m->nh; i++) {
		free(m->h[i].name);
		free(m->h[i].value);
	}
	free(m->key);
	free(m->value);
}

/* The model's last header whose C name is `name`, or NULL. */
static const fz_hdr *fz_last(const fz_msg *m, const char *name)
{
	for (size_t i = m->nh; i > 0; i--)
		if (!strcmp(m->h[i - 1].name, name))
			return &m->h[i - 1];
	return NULL;
}

/* The same by the whole name, as librdkafka's rd_kafka_header_get_last
 * (msg_header) finds it: "ce_source\0x" is not ce_source there. */
static const fz_hdr *fz_last_whole(const fz_msg *m, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = m->nh; i > 0; i--)
		if (m->h[i - 1].nlen == n && !memcmp(m->h[i - 1].name, name, n))
			return &m->h[i - 1];
	return NULL;
}

/* Whether the model's last `name` is a whole value below cap bytes with no
 * NUL (what source and time give, else NULL). */
static const fz_hdr *fz_whole(const fz_msg *m, const char *name, size_t cap)
{
	const fz_hdr *h = fz_last(m, name);
	if (!h || !h->value || !h->vlen || h->vlen >= cap || memchr(h->value, 0, h->vlen))
		return NULL;
	return h;
}

static void check_text(const char *got, const fz_hdr *want)
{
	if (!want) {
		CHECK(!got);
		return;
	}
	CHECK(got && strlen(got) == want->vlen && !memcmp(got, want->value, want->vlen));
}

static int64_t fz_seq(const fz_msg *m)
{
	const fz_hdr *h = fz_last_whole(m, "evhost_seq");
	int64_t seq = 0;
	if (!h || !h->value || !h->vlen || h->vlen > 18)
		return -1;
	for (size_t i = 0; i < h->vlen; i++) {
		if (h->value[i] < '0' || h->value[i] > '9')
			return -1;
		seq = seq * 10 + (h->value[i] - '0');
	}
	return seq;
}

/* The header a handler asks for by `name`: the last one of that C name,
 * its value up to its first NUL. */
static void check_header(const evh_event *ev, const fz_msg *m, const char *name)
{
	const fz_hdr *h = fz_last(m, name);
	const char *got = kafka_ev_header(ev, name);
	if (!h) {
		CHECK(!got);
		return;
	}
	CHECK(got);
	if (!h->value)
		CHECK(!*got);
	else
		CHECK(strlen(got) == strnlen(h->value, h->vlen) && !memcmp(got, h->value, strlen(got)));
}

static void check_event(const rd_kafka_message_t *msg, const fz_msg *m, int attempt)
{
	evh_event ev;
	const char *s;
	const fz_hdr *id = fz_last(m, "ce_id"), *type = fz_last(m, "ce_type");
	char want[400];
	size_t len;
	CHECK(event_build(&ev, msg, attempt) == 0);
	CHECK(kafka_ev_attempt(&ev) == attempt);
	CHECK(!strcmp(kafka_ev_topic(&ev), topics[m->topic]));
	CHECK(kafka_ev_partition(&ev) == msg->partition && kafka_ev_offset(&ev) == msg->offset);
	/* The key: NULL when absent, the bytes with a NUL after them. */
	s = kafka_ev_key(&ev, &len);
	CHECK(!s == !msg->key && !msg->key == !m->key);
	if (s)
		CHECK(len == m->klen && !memcmp(s, m->key, len) && !s[len]);
	else
		CHECK(len == 0);
	s = kafka_ev_data(&ev, &len);
	CHECK(s && !s[len]);
	if (m->value)
		CHECK(len == m->vlen && !memcmp(s, m->value, len));
	else
		CHECK(len == 0);
	/* The id: a usable ce_id, else the position. */
	if (id && id->value && id->vlen && id->vlen < sizeof ev.meta.id &&
	    !memchr(id->value, 0, id->vlen))
		snprintf(want, sizeof want, "%s", id->value);
	else
		snprintf(want, sizeof want, "%s/%" PRId32 "/%" PRId64, topics[m->topic],
		         msg->partition, msg->offset);
	CHECK(!strcmp(kafka_ev_id(&ev), want));
	/* The type, when whole (a cut one is no handler's: dispatch skips it). */
	if (!ev.meta.type_cut)
		CHECK(!type || !type->value ? !*kafka_ev_type(&ev)
		                            : !strcmp(kafka_ev_type(&ev), type->value));
	check_text(kafka_ev_source(&ev), fz_whole(m, "ce_source", sizeof ev.meta.source));
	check_text(kafka_ev_time(&ev), fz_whole(m, "ce_time", sizeof ev.meta.time));
	/* Every name the message has, a known one, and again (the copies made
	 * on the first call are read then). */
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < m->nh; i++)
			check_header(&ev, m, m->h[i].name);
		for (size_t i = 0; i < NKNOWN; i++)
			check_header(&ev, m, known[i]);
	}
	CHECK(!kafka_ev_header(&ev, NULL));
	/* A handler's error: the value as its message, cut where a character
	 * begins. */
	kafka_ev_set_error(&ev, m->value);
	len = strlen(ev.error);
	CHECK(len < sizeof ev.error);
	if (m->value) {
		size_t whole = strlen(m->value);
		CHECK(len <= whole && !memcmp(ev.error, m->value, len));
		CHECK(len == whole || (len < sizeof ev.error && sizeof ev.error - 1 - len <= 3));
		if (json_utf8_error(m->value, whole) < 0)
			CHECK(json_utf8_error(ev.error, len) < 0);
	} else {
		CHECK(!len);
	}
	event_free(&ev);
}

/* Whether the model handles a before b. */
static int fz_before(const fz_msg *a, const fz_msg *b)
{
	const fz_hdr *sa = fz_last_whole(a, "ce_source"), *sb = fz_last_whole(b, "ce_source");
	size_t la = sa && sa->value ? sa->vlen : 0, lb = sb && sb->value ? sb->vlen : 0;
	int64_t qa = fz_seq(a), qb = fz_seq(b);
	if (a->time != b->time)
		return a->time < b->time;
	if (qa < 0 || qb < 0 || la != lb || (la && memcmp(sa->value, sb->value, la)))
		return 0;
	return qa < qb;
}

/* The ordered dispatch's view of the messages, each the head of a buffer. */
static void check_order(rd_kafka_message_t **msgs, const fz_msg *m, size_t n)
{
	struct pbuf b;
	struct order_key keys[MSGS];
	memset(&b, 0, sizeof b);
	b.v = msgs;
	b.n = b.cap = n;
	for (size_t i = 0; i < n; i++) {
		const fz_hdr *src = fz_last_whole(&m[i], "ce_source");
		const struct order_key *k;
		b.head = i;
		k = head_key(&b);
		CHECK(k == head_key(&b) && k->m == msgs[i]); /* read once per head */
		CHECK(k->time == m[i].time && k->seq == fz_seq(&m[i]) && k->seq == msg_seq(msgs[i]));
		if (!src || !src->value)
			CHECK(!k->source && !k->source_len);
		else
			CHECK(k->source && k->source_len == src->vlen &&
			      !memcmp(k->source, src->value, src->vlen));
		keys[i] = *k;
	}
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < n; j++) {
			int ij = msg_before(&keys[i], &keys[j]);
			CHECK(ij == fz_before(&m[i], &m[j]));
			CHECK(!(ij && msg_before(&keys[j], &keys[i])));
		}
}

static void quiet(const rd_kafka_t *k, int level, const char *fac, const char *buf)
{
	(void)k, (void)level, (void)fac, (void)buf;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	char err[256];
	(void)argc, (void)argv;
	log_setup(EVH_LOG_ERROR, LOG_FORMAT_TEXT); /* not a line per cut header */
	memset(long_topic, 'l', sizeof long_topic - 1);
	rd_kafka_conf_set_log_cb(conf, quiet);
	rd_kafka_conf_set_events(conf, RD_KAFKA_EVENT_DR);
	if (rd_kafka_conf_set(conf, "message.timeout.ms", "600000", err, sizeof err) !=
	        RD_KAFKA_CONF_OK ||
	    !(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err))) {
		fprintf(stderr, "fuzz_kafka_event: no producer: %s\n", err);
		abort();
	}
	rq = rd_kafka_queue_get_main(rk);
	for (size_t i = 0; i < 4; i++)
		if (!(rkts[i] = rd_kafka_topic_new(rk, topics[i], NULL)))
			abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_in in = {data, size};
	fz_msg m[MSGS];
	rd_kafka_event_t *evs[MSGS];
	rd_kafka_message_t *msgs[MSGS];
	size_t n = 0, got = 0, nevs = 0;
	if (size > 4096)
		return 0;
	while (in.n && n < MSGS) {
		rd_kafka_headers_t *h = rd_kafka_headers_new(8);
		fz_msg *f = &m[n];
		fz_read(&in, f);
		for (size_t i = 0; i < f->nh; i++)
			rd_kafka_header_add(h, f->h[i].name, (ssize_t)f->h[i].nlen, f->h[i].value,
			                    f->h[i].value ? (ssize_t)f->h[i].vlen : 0);
		if (rd_kafka_producev(rk, RD_KAFKA_V_RKT(rkts[f->topic]),
		                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
		                      RD_KAFKA_V_KEY(f->key, f->klen),
		                      RD_KAFKA_V_VALUE(f->value, f->vlen), RD_KAFKA_V_HEADERS(h),
		                      RD_KAFKA_V_TIMESTAMP(f->time),
		                      RD_KAFKA_V_OPAQUE((void *)(uintptr_t)n),
		                      RD_KAFKA_V_END) != RD_KAFKA_RESP_ERR_NO_ERROR)
			abort();
		n++;
	}
	/* Back in delivery reports, kept until all are read. */
	rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE);
	while (got < n) {
		rd_kafka_event_t *e = rd_kafka_queue_poll(rq, 1000);
		const rd_kafka_message_t *dm;
		if (!e)
			abort(); /* a purged message always comes back */
		if (rd_kafka_event_type(e) != RD_KAFKA_EVENT_DR) {
			rd_kafka_event_destroy(e);
			continue;
		}
		evs[nevs++] = e;
		while ((dm = rd_kafka_event_message_next(e))) {
			size_t i = (size_t)(uintptr_t)dm->_private;
			/* As a consumer reads it: no error (a failed message's
			 * timestamp reads as none), at a position. */
			msgs[i] = (rd_kafka_message_t *)dm;
			msgs[i]->err = RD_KAFKA_RESP_ERR_NO_ERROR;
			msgs[i]->partition = (int32_t)(i * 7 + m[i].topic);
			msgs[i]->offset = i == 3 ? INT64_MAX : (int64_t)(i * 1000003);
			got++;
		}
	}
	for (size_t i = 0; i < n; i++)
		check_event(msgs[i], &m[i], (int)i + 1);
	check_order(msgs, m, n);
	for (size_t i = 0; i < nevs; i++)
		rd_kafka_event_destroy(evs[i]);
	for (size_t i = 0; i < n; i++)
		fz_free(&m[i]);
	return 0;
}
