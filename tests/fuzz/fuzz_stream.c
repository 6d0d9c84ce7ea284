/* libFuzzer: the SSE hub's resuming (stream.c): a client's Last-Event-ID
 * header (parse_event_id, through stream_open), and the history it is
 * served from. Each input is a program run on a fresh hub, byte by byte:
 *   op % 4 == 0: publish one event: a byte picks the plugin (owner and
 *                name; two owners share a name, as a reloaded plugin and
 *                the one it replaced do), the channel and the event name,
 *                a length byte then the data (line breaks of every kind);
 *   op % 4 == 1: publish 1 to 1280 small events (the history evicts past
 *                its STREAM_HISTORY_MAX);
 *   op % 4 == 2: open a stream with a Last-Event-ID of raw text (a length
 *                byte, then the text up to its first NUL);
 *   op % 4 == 3: open a stream with the id of an event published (picked
 *                from the newest back), plus -1, 0 or +1, blanks around.
 * A live stream per owner and channel (opened without Last-Event-ID) sees
 * every event published, and so gives the model: the id and frame of each.
 * Checked, for each stream opened:
 *   - a Last-Event-ID that is not a decimal uint64 (blanks around allowed)
 *     resumes nothing; one below the hub's first id gets the "restart"
 *     notice first;
 *   - without a STREAM_MISSED_EVENT, the stream starts with exactly the
 *     events of its plugin name and channel newer than the id, in order,
 *     each frame as the live stream had it: none lost, none twice;
 *   - with one, it comes first and says the id given; alone it carries the
 *     newest id published; the frames after it are events of the stream's
 *     name and channel newer than the id, in order;
 *   - every frame is "id: N\n" [event: E\n] "data: ...\n"... "\n", with no
 *     CR anywhere and no empty line inside. */
#define _GNU_SOURCE /* memmem */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <evhost/evhost.h>

#include "fuzz_modes.h"
#include "stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OWNERS 3
#define CHANNELS 2
#define MODEL_MAX 8192

static const char *const owner_name[OWNERS] = {"a", "b", "a"}; /* 2: "a" reloaded */
static const int owner_tag[OWNERS] = {0, 1, 2};                /* owner pointers */
static const char *const channels[CHANNELS] = {"c", "orders/1"};
static const char *const events[] = {NULL, "update", "x y"};

typedef struct published {
	uint64_t id;
	const char *name, *channel;
	char *text; /* the frame, as the live stream had it */
	size_t len;
} published;

static published model[MODEL_MAX];
static size_t nmodel;

/* Bytes of the input, consumed from the front. */
typedef struct input {
	const uint8_t *p;
	size_t left;
} input;

static int take(input *in, uint8_t *b)
{
	if (!in->left)
		return 0;
	*b = *in->p++;
	in->left--;
	return 1;
}

/* Every frame in buf[0..n) well-formed: calls fn(id, frame, len) for each. */
static void frames(const char *buf, size_t n, void (*fn)(uint64_t, const char *, size_t, void *),
                   void *ctx)
{
	size_t at = 0;
	CHECK(!memchr(buf, '\r', n));
	while (at < n) {
		const char *f = buf + at, *end;
		char *stop;
		uint64_t id;
		CHECK(n - at > 4 && !memcmp(f, "id: ", 4));
		id = strtoull(f + 4, &stop, 10);
		CHECK(stop > f + 4 && *stop == '\n');
		end = memmem(f, n - at, "\n\n", 2);
		CHECK(end);
		/* lines after the id: "event: " at most once, then "data: " ones */
		for (const char *line = stop + 1; line <= end;
		     line = (const char *)memchr(line, '\n', (size_t)(end + 1 - line)) + 1)
			CHECK(!memcmp(line, "data: ", 6) ||
			      (line == stop + 1 && !memcmp(line, "event: ", 7)));
		fn(id, f, (size_t)(end + 2 - f), ctx);
		at += (size_t)(end + 2 - f);
	}
}

static void learn(uint64_t id, const char *f, size_t len, void *ctx)
{
	const int *who = ctx;
	published *m;
	if (nmodel == MODEL_MAX)
		return;
	m = &model[nmodel];
	CHECK(!nmodel || id == model[nmodel - 1].id + 1); /* ids one after another */
	m->id = id;
	m->name = owner_name[who[0]];
	m->channel = channels[who[1]];
	m->text = malloc(len);
	CHECK(m->text);
	memcpy(m->text, f, len);
	m->len = len;
	nmodel++;
}

/* Drain a live stream into the model. */
static void drain_live(stream *s, int owner, int channel)
{
	char *out;
	size_t len;
	int who[2] = {owner, channel};
	stream_wait_result r = stream_wait(s, 0, &out, &len);
	CHECK(r == STREAM_FRAMES);
	frames(out, len, learn, who);
	free(out);
}

static void publish(stream_hub *hub, stream *live[OWNERS][CHANNELS], int owner, int channel,
                    const char *event, const char *d, size_t len)
{
	int rc;
	if (nmodel == MODEL_MAX)
		return;
	rc = stream_publish(hub, &owner_tag[owner], owner_name[owner], channels[channel],
	                        event, d, len);
	CHECK(rc == 1); /* the live stream, never dropped: drained each time */
	drain_live(live[owner][channel], owner, channel);
}

/* What a resumed stream began with, checked against the model. */
struct resumed {
	uint64_t last;
	const char *name, *channel;
	int missed;       /* a STREAM_MISSED_EVENT came first */
	int missed_alone; /* ... carrying another id than last */
	size_t frames, next;     /* frames seen; model index to look from */
	int restart;
};

static void resumed_frame(uint64_t id, const char *f, size_t len, void *ctx)
{
	struct resumed *r = ctx;
	static const char missed[] = "event: " STREAM_MISSED_EVENT "\n";
	const char *nl = memchr(f, '\n', len);
	if (r->frames++ == 0 && len > (size_t)(nl + 1 - f) + sizeof missed - 1 &&
	    !memcmp(nl + 1, missed, sizeof missed - 1)) {
		char want[64];
		r->missed = 1;
		snprintf(want, sizeof want, "data: {\"last_event_id\":\"%" PRIu64 "\",", r->last);
		CHECK(memmem(f, len, want, strlen(want)));
		r->restart = memmem(f, len, "\"reason\":\"restart\"", 18) != NULL;
		if (id != r->last) {
			r->missed_alone = 1;
			CHECK(id == (nmodel ? model[nmodel - 1].id : id));
		}
		return;
	}
	CHECK(!r->missed_alone);
	CHECK(id > r->last);
	/* The next event of (name, channel) at or after r->next with this id. */
	while (r->next < nmodel && model[r->next].id < id)
		r->next++;
	CHECK(r->next < nmodel && model[r->next].id == id);
	CHECK(!strcmp(model[r->next].name, r->name) && !strcmp(model[r->next].channel, r->channel));
	CHECK(model[r->next].len == len && !memcmp(model[r->next].text, f, len));
	r->next++;
}

/* A Last-Event-ID as stream.c's contract reads it: 1 and *v, or 0. */
static int model_parse(const char *t, uint64_t *v)
{
	uint64_t x = 0;
	while (*t == ' ' || *t == '\t')
		t++;
	if (*t < '0' || *t > '9')
		return 0;
	for (; *t >= '0' && *t <= '9'; t++) {
		if (x > UINT64_MAX / 10 || x * 10 > UINT64_MAX - (uint64_t)(*t - '0'))
			return 0;
		x = x * 10 + (uint64_t)(*t - '0');
	}
	while (*t == ' ' || *t == '\t')
		t++;
	if (*t)
		return 0;
	*v = x;
	return 1;
}

static void open_and_check(stream_hub *hub, int owner, int channel, const char *last_id,
                           uint64_t first_before)
{
	stream *s;
	char *out;
	size_t len = 0;
	uint64_t last = 0;
	int valid = model_parse(last_id, &last), rc;
	struct resumed r = {.last = last, .name = owner_name[owner], .channel = channels[channel]};

	rc = stream_open(hub, &owner_tag[owner], owner_name[owner], channels[channel], last_id, &s);
	CHECK(rc == EVH_OK);
	out = NULL;
	if (stream_wait(s, 0, &out, &len) == STREAM_IDLE)
		len = 0;
	if (!valid) {
		CHECK(len == 0);
	} else {
		frames(out ? out : "", len, resumed_frame, &r);
		/* Below the first id there is no vouching: told so. */
		if (first_before && last < first_before)
			CHECK(r.missed && r.restart);
		if (!r.missed) {
			/* Every event of (name, channel) newer than last came. */
			size_t want = 0;
			for (size_t i = 0; i < nmodel; i++)
				want += model[i].id > last && !strcmp(model[i].name, r.name) &&
				        !strcmp(model[i].channel, r.channel);
			CHECK(r.frames == want);
		}
		CHECK(r.frames <= STREAM_REPLAY_MAX + 1);
	}
	free(out);
	stream_release(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	stream_hub *hub = stream_hub_new();
	stream *live[OWNERS][CHANNELS];
	input in = {data, size};
	uint8_t op, b;

	if (!hub)
		return 0;
	stream_hub_start(hub, 64);
	for (int o = 0; o < OWNERS; o++)
		for (int c = 0; c < CHANNELS; c++)
			CHECK(stream_open(hub, &owner_tag[o], owner_name[o], channels[c], NULL,
			                  &live[o][c]) == EVH_OK);
	nmodel = 0;
	while (take(&in, &op)) {
		if (!take(&in, &b))
			break;
		int owner = (b & 3) % OWNERS, channel = (b >> 2) & 1;
		const char *event = events[(b >> 3) % 3];
		switch (op & 3) {
		case 0: {
			uint8_t n;
			if (!take(&in, &n))
				break;
			if (n > in.left)
				n = (uint8_t)in.left;
			publish(hub, live, owner, channel, event, (const char *)in.p, n);
			in.p += n;
			in.left -= n;
			break;
		}
		case 1: {
			uint8_t n;
			if (!take(&in, &n))
				break;
			for (int i = 0; i < (n % 5 + 1) * 256 / (b >> 5 ? 16 : 1) && nmodel < MODEL_MAX;
			     i++)
				publish(hub, live, owner, channel, NULL, "x\r\ny", 4);
			break;
		}
		case 2: {
			uint8_t n;
			char text[256];
			if (!take(&in, &n))
				break;
			if (n > in.left)
				n = (uint8_t)in.left;
			memcpy(text, in.p, n);
			text[n] = '\0';
			in.p += n;
			in.left -= n;
			open_and_check(hub, owner, channel, text, nmodel ? model[0].id : 0);
			break;
		}
		case 3: {
			uint8_t k, blanks;
			char text[64];
			uint64_t id;
			if (!take(&in, &k) || !take(&in, &blanks) || !nmodel)
				break;
			id = model[nmodel - 1 - k % nmodel].id + (uint64_t)(blanks % 3) - 1;
			snprintf(text, sizeof text, "%s%" PRIu64 "%s", blanks & 8 ? " \t" : "", id,
			         blanks & 16 ? "\t " : "");
			open_and_check(hub, owner, channel, text, model[0].id);
			break;
		}
		}
	}
	for (int o = 0; o < OWNERS; o++)
		for (int c = 0; c < CHANNELS; c++)
			stream_release(live[o][c]);
	stream_hub_free(hub);
	for (size_t i = 0; i < nmodel; i++)
		free(model[i].text);
	return 0;
}
