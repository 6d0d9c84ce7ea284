/* libFuzzer: arbitrary Kafka header lists through the CloudEvents decoder.
 * The input is split into headers: each is a length byte for the name, the
 * name, a length byte for the value (0xff = null value), then the value.
 * Names are drawn from the ones the decoder reads so the fuzzer reaches
 * them often; values are raw bytes, neither terminated nor bounded. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "events.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const known[] = {"ce_id",   "ce_type",      "ce_source",   "ce_specversion",
                                    "ce_time", "content-type", "traceparent", NULL};

/* Take `n` bytes from the input; NULL when it runs out. */
static const uint8_t *take(const uint8_t **p, size_t *left, size_t n)
{
	const uint8_t *r = *p;
	if (*left < n)
		return NULL;
	*p += n;
	*left -= n;
	return r;
}

static void check_terminated(const char *field, size_t cap)
{
	/* every decoded field must be a C string within its buffer */
	if (!memchr(field, '\0', cap))
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	rd_kafka_headers_t *h = rd_kafka_headers_new(8);
	ce_meta m, again;
	const uint8_t *p = data, *b;
	size_t left = size;
	char name[256];
	while (left > 0) {
		const uint8_t *nl = take(&p, &left, 1), *vl;
		size_t nlen;
		if (!nl)
			break;
		if (*nl < 16) { /* a known name, picked by index */
			snprintf(name, sizeof name, "%s", known[*nl % 7]);
		} else {
			nlen = *nl - 16;
			if (!(b = take(&p, &left, nlen)))
				break;
			memcpy(name, b, nlen);
			name[nlen] = '\0';
		}
		if (!(vl = take(&p, &left, 1)))
			break;
		if (*vl == 0xff) {
			rd_kafka_header_add(h, name, -1, NULL, 0);
			continue;
		}
		if (!(b = take(&p, &left, *vl)))
			break;
		rd_kafka_header_add(h, name, -1, b, *vl);
	}
	if (events_headers_decode(h, &m) == 0 && (!m.id[0] || !m.type[0]))
		__builtin_trap(); /* 0 promises both */
	check_terminated(m.id, sizeof m.id);
	check_terminated(m.type, sizeof m.type);
	check_terminated(m.source, sizeof m.source);
	check_terminated(m.specversion, sizeof m.specversion);
	check_terminated(m.time, sizeof m.time);
	check_terminated(m.content_type, sizeof m.content_type);
	check_terminated(m.traceparent, sizeof m.traceparent);
	rd_kafka_headers_destroy(h);

	/* A traceparent accepted gives ids a child can be made of: lowercase
	 * hex, not all zero, and the same trace id as events_trace_id. */
	{
		char t[33], sp[17], t2[33];
		int flags = -1;
		if (events_traceparent_parse(m.traceparent, t, sp, &flags) == 0 &&
		    (strlen(t) != 32 || strspn(t, "0123456789abcdef") != 32 || strspn(t, "0") == 32 ||
		     strlen(sp) != 16 || strspn(sp, "0123456789abcdef") != 16 ||
		     strspn(sp, "0") == 16 || flags < 0 || flags > 255 ||
		     events_trace_id(m.traceparent, t2) != 0 || strcmp(t, t2)))
			__builtin_trap();
	}

	/* What was decoded encodes and decodes to the same thing (a header that
	 * was cut is whole the second time). */
	h = rd_kafka_headers_new(8);
	if (events_headers_encode(&m, h) == 0) {
		events_headers_decode(h, &again);
		if (strcmp(m.id, again.id) || again.id_cut || strcmp(m.type, again.type) ||
		    again.type_cut || strcmp(m.source, again.source) || again.source_cut ||
		    strcmp(m.time, again.time) || again.time_cut ||
		    strcmp(m.traceparent, again.traceparent))
			__builtin_trap();
	}
	rd_kafka_headers_destroy(h);
	return 0;
}
