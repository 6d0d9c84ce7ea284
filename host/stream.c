/* The SSE hub. One mutex guards the hub's list of streams, its event id
 * counter and its history; each stream has its own mutex and condition
 * variable for its queue. Lock order: hub, then stream. The list is scanned
 * linearly: there are at most [http] max_streams entries, a fraction of the
 * worker threads. The history is a ring of STREAM_HISTORY_MAX slots, oldest
 * first, so ids increase along it and a resuming client's frames are a
 * suffix of it. */
#define _GNU_SOURCE
#include "stream.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <evhost/evhost.h>

#include "clock.h"
#include "toobig.h"

typedef struct frame {
	struct frame *next;
	size_t len;
	char text[]; /* len bytes, NUL-terminated */
} frame;

typedef enum close_why {
	CLOSE_NONE = 0,
	CLOSE_OWNER,  /* the plugin stopped */
	CLOSE_HUB,    /* the daemon stops */
	CLOSE_SLOW,   /* the queue overflowed */
	CLOSE_NOMEM,  /* a frame could not be queued for want of memory */
} close_why;

struct stream {
	stream_hub *hub;
	struct stream *next;      /* in hub->head; hub->mu */
	int linked;               /* hub->mu */
	struct stream *held_next; /* in hub->held, from open to release; hub->mu */
	int fd;                   /* its connection's socket, -1 unknown; hub->mu */
	int counted;              /* counts against max_streams (until cut); hub->mu */
	const void *owner;
	char *name;
	char *channel;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	frame *qhead, *qtail; /* mu */
	size_t qlen, qbytes;  /* frames queued and their bytes; mu */
	close_why why;        /* mu */
	int64_t closed_ms;    /* when it was closed (clock_mono_ms); mu */
	int told;             /* the owner got the last words (owner thread only) */
};

/* One published frame, kept for clients that resume. */
typedef struct hist_entry {
	uint64_t id;
	char *text;    /* the frame, len bytes, NUL-terminated */
	size_t len;
	size_t size;   /* what it counts against STREAM_HISTORY_BYTES */
	char *channel; /* points into name[] */
	char name[];   /* the plugin's name, then the channel */
} hist_entry;

struct stream_hub {
	pthread_mutex_t mu;
	pthread_cond_t idle; /* count dropped to 0 */
	stream *head;
	/* Every stream opened and not yet released, closed or not: the ones
	 * whose owners may still be writing (stream_hub_cut). */
	stream *held;
	int accepting;
	int max_streams;
	unsigned int unacked_ms; /* TCP_USER_TIMEOUT of the streams' sockets */
	int count;         /* opened, not yet released */
	int counted;       /* of those, the ones counting against max_streams */
	uint64_t first_id; /* 0 until chosen (first_id_locked) */
	uint64_t last_id;  /* the newest id assigned */
	hist_entry *hist[STREAM_HISTORY_MAX]; /* a ring, hist[hist_head] the oldest */
	size_t hist_head, hist_count, hist_bytes;
	/* Per (plugin name, channel) hash bucket: frames of the bucket's
	 * channels up to this id may be missing from hist. A bucket shared by
	 * two channels can only make a client told of a gap it does not have,
	 * never the reverse. */
	uint64_t hist_lost[STREAM_LOST_BUCKETS];
};

static stream_hub global_hub = {.mu = PTHREAD_MUTEX_INITIALIZER, .max_streams = 1};
static pthread_once_t global_hub_once = PTHREAD_ONCE_INIT;

static void global_hub_init(void) { clock_cond_init(&global_hub.idle); }

/* Every use of the global hub comes through here: its condition variable
 * is set up (on the monotonic clock) before the first. */
stream_hub *stream_hub_global(void)
{
	pthread_once(&global_hub_once, global_hub_init);
	return &global_hub;
}

stream_hub *stream_hub_new(void)
{
	stream_hub *hub = calloc(1, sizeof *hub);
	if (!hub)
		return NULL;
	pthread_mutex_init(&hub->mu, NULL);
	clock_cond_init(&hub->idle);
	hub->max_streams = 1;
	return hub;
}

static void hist_clear(stream_hub *hub);

void stream_hub_free(stream_hub *hub)
{
	if (!hub || hub == &global_hub)
		return;
	stream_hub_stop(hub);
	hist_clear(hub);
	pthread_cond_destroy(&hub->idle);
	pthread_mutex_destroy(&hub->mu);
	free(hub);
}

void stream_hub_start(stream_hub *hub, int max_streams)
{
	pthread_mutex_lock(&hub->mu);
	hub->max_streams = max_streams > 0 ? max_streams : 0;
	hub->accepting = 1;
	pthread_mutex_unlock(&hub->mu);
}

void stream_hub_set_unacked_ms(stream_hub *hub, unsigned int ms)
{
	pthread_mutex_lock(&hub->mu);
	hub->unacked_ms = ms;
	pthread_mutex_unlock(&hub->mu);
}

int stream_hub_count(stream_hub *hub)
{
	int n;
	pthread_mutex_lock(&hub->mu);
	n = hub->count;
	pthread_mutex_unlock(&hub->mu);
	return n;
}

void stream_hub_stats_get(stream_hub *hub, stream_hub_stats *out)
{
	int open = 0;
	pthread_mutex_lock(&hub->mu);
	for (const stream *s = hub->head; s; s = s->next)
		open++;
	out->max_streams = hub->max_streams;
	out->counted = hub->counted;
	out->open = open;
	/* Every linked stream counts: the rest of those counted are closed. */
	out->closing = hub->counted - open;
	pthread_mutex_unlock(&hub->mu);
}

int stream_owner_count(stream_hub *hub, const void *owner)
{
	int n = 0;
	pthread_mutex_lock(&hub->mu);
	for (const stream *s = hub->head; s; s = s->next)
		if (s->owner == owner)
			n++;
	pthread_mutex_unlock(&hub->mu);
	return n;
}

/* ------------------------------------------------------------ closing */

/* Close `s` for `why`; hub->mu held. A stream dropped as too slow loses its
 * queue: those frames are what it could not keep up with. */
static void close_locked(stream *s, close_why why)
{
	pthread_mutex_lock(&s->mu);
	if (s->why == CLOSE_NONE) {
		s->why = why;
		s->closed_ms = clock_mono_ms();
	}
	if (why == CLOSE_SLOW) {
		while (s->qhead) {
			frame *f = s->qhead;
			s->qhead = f->next;
			free(f);
		}
		s->qtail = NULL;
		s->qlen = s->qbytes = 0;
	}
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static void unlink_locked(stream_hub *hub, stream *s)
{
	for (stream **pp = &hub->head; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	s->next = NULL;
	s->linked = 0;
}

/* Close and unlink every stream for which `match` holds; hub->mu held. */
static size_t close_matching(stream_hub *hub, const void *owner, int all, close_why why)
{
	size_t n = 0;
	stream **pp = &hub->head;
	while (*pp) {
		stream *s = *pp;
		if (!all && s->owner != owner) {
			pp = &s->next;
			continue;
		}
		*pp = s->next;
		s->next = NULL;
		s->linked = 0;
		close_locked(s, why);
		n++;
	}
	return n;
}

size_t stream_hub_stop(stream_hub *hub)
{
	size_t n;
	pthread_mutex_lock(&hub->mu);
	hub->accepting = 0;
	n = close_matching(hub, NULL, 1, CLOSE_HUB);
	pthread_mutex_unlock(&hub->mu);
	return n;
}

int stream_hub_wait_idle(stream_hub *hub, int timeout_ms)
{
	struct timespec until;
	int n;
	until = clock_after_ms(CLOCK_MONOTONIC, timeout_ms);
	pthread_mutex_lock(&hub->mu);
	while (hub->count > 0)
		if (pthread_cond_timedwait(&hub->idle, &hub->mu, &until) == ETIMEDOUT)
			break;
	n = hub->count;
	pthread_mutex_unlock(&hub->mu);
	return n;
}

void stream_set_socket(stream *s, int fd)
{
	unsigned int ms;
	pthread_mutex_lock(&s->hub->mu);
	s->fd = fd;
	ms = s->hub->unacked_ms;
	pthread_mutex_unlock(&s->hub->mu);
	/* Best effort: without it the kernel's own give-up applies. */
	if (fd >= 0 && ms > 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
}

/* The socket stays the connection's for as long as its stream is held: the
 * HTTP worker releases the stream before civetweb closes the connection,
 * and a release takes hub->mu, so no descriptor reused meanwhile is cut. */
size_t stream_hub_cut(stream_hub *hub)
{
	size_t n = 0;
	pthread_mutex_lock(&hub->mu);
	for (stream *s = hub->held; s; s = s->held_next)
		if (s->fd >= 0 && shutdown(s->fd, SHUT_RDWR) == 0)
			n++;
	pthread_mutex_unlock(&hub->mu);
	return n;
}

size_t stream_close_owner(stream_hub *hub, const void *owner)
{
	size_t n;
	pthread_mutex_lock(&hub->mu);
	n = close_matching(hub, owner, 0, CLOSE_OWNER);
	pthread_mutex_unlock(&hub->mu);
	return n;
}

/* ------------------------------------------------------------ opening */

static void stream_free(stream *s)
{
	while (s->qhead) {
		frame *f = s->qhead;
		s->qhead = f->next;
		free(f);
	}
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
	free(s->name);
	free(s->channel);
	free(s);
}

static stream *stream_new(stream_hub *hub, const void *owner, const char *name,
                          const char *channel)
{
	stream *s = calloc(1, sizeof *s);
	if (!s)
		return NULL;
	s->hub = hub;
	s->fd = -1;
	s->owner = owner;
	s->name = strdup(name ? name : "");
	s->channel = strdup(channel);
	clock_cond_init(&s->cv);
	pthread_mutex_init(&s->mu, NULL);
	if (!s->name || !s->channel) {
		stream_free(s);
		return NULL;
	}
	return s;
}

static int channel_ok(const char *channel)
{
	size_t n;
	if (!channel)
		return 0;
	n = strnlen(channel, STREAM_CHANNEL_MAX + 1);
	return n > 0 && n <= STREAM_CHANNEL_MAX;
}

/* A Last-Event-ID value: a decimal uint64, blanks around it allowed. 1 and
 * the id in *out, or 0 for anything else: not an id of ours, so there is
 * nothing to resume (and nothing to complain about: clients may send ids
 * of another server behind the same URL). */
static int parse_event_id(const char *text, uint64_t *out)
{
	const char *p = text;
	uint64_t v = 0;
	if (!p)
		return 0;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p < '0' || *p > '9')
		return 0;
	for (; *p >= '0' && *p <= '9'; p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return 0;
		v = v * 10 + d;
	}
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p)
		return 0;
	*out = v;
	return 1;
}

static int resume_locked(stream_hub *hub, stream *s, uint64_t last);

/* Free the places of streams closed more than STREAM_CLOSE_GRACE_MS ago
 * whose owners still hold them: their clients stopped reading (or take a
 * few bytes now and then), and the owner's write would wait out [http]
 * request_timeout, restarted by every byte taken. Their connections are
 * shut down, as stream_hub_cut does (the same argument keeps the
 * descriptor theirs), so the write fails at once and the owner lets go;
 * they stop counting now, and are not cut twice. A stream whose socket is
 * not known keeps its place. hub->mu held. */
static size_t reclaim_closed_locked(stream_hub *hub)
{
	int64_t now = clock_mono_ms();
	size_t n = 0;
	for (stream *s = hub->held; s; s = s->held_next) {
		int stale;
		if (!s->counted || s->fd < 0)
			continue;
		pthread_mutex_lock(&s->mu);
		stale = s->why != CLOSE_NONE && now - s->closed_ms >= STREAM_CLOSE_GRACE_MS;
		pthread_mutex_unlock(&s->mu);
		if (!stale)
			continue;
		/* Even should shutdown fail (the peer already gone), the owner's
		 * next write fails: the place is free either way. */
		shutdown(s->fd, SHUT_RDWR);
		s->counted = 0;
		hub->counted--;
		n++;
	}
	return n;
}

size_t stream_hub_reclaim(stream_hub *hub)
{
	size_t n;
	pthread_mutex_lock(&hub->mu);
	n = reclaim_closed_locked(hub);
	pthread_mutex_unlock(&hub->mu);
	return n;
}

int stream_open(stream_hub *hub, const void *owner, const char *name, const char *channel,
                const char *last_event_id, stream **out)
{
	stream *s;
	uint64_t last = 0;
	int resume;
	*out = NULL;
	if (!hub || !owner || !channel_ok(channel))
		return EVH_EINVAL;
	resume = parse_event_id(last_event_id, &last);
	s = stream_new(hub, owner, name, channel);
	if (!s)
		return EVH_ENOMEM;
	pthread_mutex_lock(&hub->mu);
	if (hub->accepting && hub->counted >= hub->max_streams)
		reclaim_closed_locked(hub);
	if (!hub->accepting || hub->counted >= hub->max_streams) {
		int rc = hub->accepting ? EVH_EBUSY : EVH_ESTATE;
		pthread_mutex_unlock(&hub->mu);
		stream_free(s);
		return rc;
	}
	/* Still under the lock that publishers take, until s is linked: each
	 * frame is either in the history now or published to s later. */
	if (resume && resume_locked(hub, s, last) != EVH_OK) {
		pthread_mutex_unlock(&hub->mu);
		stream_free(s);
		return EVH_ENOMEM;
	}
	hub->count++;
	hub->counted++;
	s->counted = 1;
	s->next = hub->head;
	hub->head = s;
	s->linked = 1;
	s->held_next = hub->held;
	hub->held = s;
	pthread_mutex_unlock(&hub->mu);
	*out = s;
	return EVH_OK;
}

void stream_release(stream *s)
{
	stream_hub *hub;
	if (!s)
		return;
	hub = s->hub;
	pthread_mutex_lock(&hub->mu);
	if (s->linked)
		unlink_locked(hub, s);
	for (stream **pp = &hub->held; *pp; pp = &(*pp)->held_next) {
		if (*pp == s) {
			*pp = s->held_next;
			break;
		}
	}
	if (s->counted)
		hub->counted--;
	if (--hub->count == 0)
		pthread_cond_broadcast(&hub->idle);
	pthread_mutex_unlock(&hub->mu);
	stream_free(s);
}

/* ------------------------------------------------------------ framing */

/* Length of the line at `p` (up to CR, LF or the end) within `end`. */
static size_t line_len(const char *p, const char *end)
{
	const char *q = p;
	while (q < end && *q != '\n' && *q != '\r')
		q++;
	return (size_t)(q - p);
}

/* Past the line break at `p` (CRLF counts as one); p < end. */
static const char *skip_break(const char *p, const char *end)
{
	if (*p == '\r' && p + 1 < end && p[1] == '\n')
		return p + 2;
	return p + 1;
}

char *stream_frame(uint64_t id, const char *event, const char *data, size_t len,
                   size_t *outlen)
{
	const char *p = data ? data : "", *end = p + (data ? len : 0);
	size_t cap = 64 + (event ? strlen(event) : 0) + len, n;
	char *out, *w;

	/* Each line break can turn into "\ndata: " (7 bytes). */
	for (const char *q = p; q < end; q++)
		if (*q == '\n' || *q == '\r')
			cap += 7;
	out = malloc(cap);
	if (!out)
		return NULL;
	n = (size_t)snprintf(out, cap, "id: %llu\n", (unsigned long long)id);
	if (event && *event)
		n += (size_t)snprintf(out + n, cap - n, "event: %s\n", event);
	w = out + n;
	for (;;) {
		size_t l = line_len(p, end);
		memcpy(w, "data: ", 6);
		memcpy(w + 6, p, l);
		w += 6 + l;
		*w++ = '\n';
		p += l;
		if (p >= end)
			break;
		p = skip_break(p, end);
	}
	*w++ = '\n';
	*w = '\0';
	*outlen = (size_t)(w - out);
	/* To its size: the history keeps the frame and counts its length
	 * against STREAM_HISTORY_BYTES (a CRLF reserved 14 bytes and took 7:
	 * data of line breaks held twice that). */
	if ((w = realloc(out, *outlen + 1)))
		out = w;
	return out;
}

/* ------------------------------------------------------------ queues */

static int event_ok(const char *event)
{
	size_t n;
	if (!event)
		return 1;
	n = strnlen(event, STREAM_EVENT_MAX + 1);
	if (n == 0 || n > STREAM_EVENT_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)event[i] < 0x20 || event[i] == 0x7f)
			return 0;
	/* The host's own (STREAM_MISSED_EVENT): a plugin's could not be told apart. */
	return strncmp(event, STREAM_HOST_PREFIX, sizeof STREAM_HOST_PREFIX - 1) != 0;
}

static frame *frame_copy(const char *text, size_t len)
{
	frame *f = malloc(sizeof *f + len + 1);
	if (!f)
		return NULL;
	f->next = NULL;
	f->len = len;
	memcpy(f->text, text, len + 1);
	return f;
}

/* Append to `s`; hub->mu held. 1 queued, 0 dropped (closed or too slow),
 * -1 out of memory. */
static int enqueue_locked(stream *s, const char *text, size_t len)
{
	frame *f;
	pthread_mutex_lock(&s->mu);
	if (s->why != CLOSE_NONE) {
		pthread_mutex_unlock(&s->mu);
		return 0;
	}
	if (s->qlen >= STREAM_QUEUE_MAX || s->qbytes + len > STREAM_QUEUE_BYTES) {
		pthread_mutex_unlock(&s->mu);
		return 0;
	}
	f = frame_copy(text, len);
	if (!f) {
		pthread_mutex_unlock(&s->mu);
		return -1;
	}
	if (s->qtail)
		s->qtail->next = f;
	else
		s->qhead = f;
	s->qtail = f;
	s->qlen++;
	s->qbytes += len;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return 1;
}

/* ------------------------------------------------------------ ids */

/* Ids. The first is the wall-clock time in microseconds when the hub first
 * needs one (its first publish, or the first client resuming), each next
 * one is one more. So ids keep increasing across daemon restarts with
 * nothing stored: a client's id from an earlier process is below this
 * one's first, and stream_open tells it so ("restart"). That holds unless
 * the earlier process published more frames than microseconds passed from
 * its first id to this one's (a million a second for its whole life), or
 * the clock was stepped back in between. Ids stay below 2^53 until the year
 * 2255, so even clients that read them as JSON numbers keep them exact.
 * Hub mutex held. */
static void first_id_locked(stream_hub *hub)
{
	struct timespec ts;
	uint64_t us = 0;
	if (hub->first_id)
		return;
	if (clock_gettime(CLOCK_REALTIME, &ts) == 0 && ts.tv_sec > 0)
		us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	hub->first_id = us > 0 ? us : 1;
	hub->last_id = hub->first_id - 1;
}

/* ------------------------------------------------------------ history */

static hist_entry *hist_at(const stream_hub *hub, size_t i)
{
	return hub->hist[(hub->hist_head + i) % STREAM_HISTORY_MAX];
}

/* The hist_lost bucket of (name, channel): FNV-1a over both. */
static uint64_t *lost_of(stream_hub *hub, const char *name, const char *channel)
{
	uint32_t h = 2166136261u;
	for (const char *p = name; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	h = (h ^ 0xffu) * 16777619u; /* a separator no name contains */
	for (const char *p = channel; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return &hub->hist_lost[h % STREAM_LOST_BUCKETS];
}

static void lost_up_to(stream_hub *hub, const char *name, const char *channel, uint64_t id)
{
	uint64_t *lost = lost_of(hub, name, channel);
	if (id > *lost)
		*lost = id;
}

/* Forget the oldest entry; hub->mu held, hub->hist_count > 0. */
static void hist_drop_oldest(stream_hub *hub)
{
	hist_entry *e = hub->hist[hub->hist_head];
	hub->hist[hub->hist_head] = NULL;
	hub->hist_head = (hub->hist_head + 1) % STREAM_HISTORY_MAX;
	hub->hist_count--;
	hub->hist_bytes -= e->size;
	lost_up_to(hub, e->name, e->channel, e->id);
	free(e->text);
	free(e);
}

static void hist_clear(stream_hub *hub)
{
	while (hub->hist_count > 0)
		hist_drop_oldest(hub);
}

/* Keep frame `id` (`text`, malloc'd: taken over) as the newest entry,
 * evicting the oldest ones past either bound; hub->mu held. A frame that
 * cannot be kept is counted as lost, so a client resuming from before it
 * is told it may have missed something. */
static void hist_add_locked(stream_hub *hub, uint64_t id, const char *name, const char *channel,
                            char *text, size_t len)
{
	size_t nl = strlen(name) + 1, cl = strlen(channel) + 1;
	size_t size = sizeof(hist_entry) + nl + cl + len + 1;
	hist_entry *e = size <= STREAM_HISTORY_BYTES ? malloc(sizeof *e + nl + cl) : NULL;

	if (!e) {
		lost_up_to(hub, name, channel, id);
		free(text);
		return;
	}
	e->id = id;
	e->text = text;
	e->len = len;
	e->size = size;
	memcpy(e->name, name, nl);
	e->channel = e->name + nl;
	memcpy(e->channel, channel, cl);
	while (hub->hist_count == STREAM_HISTORY_MAX ||
	       (hub->hist_count > 0 && hub->hist_bytes + size > STREAM_HISTORY_BYTES))
		hist_drop_oldest(hub);
	hub->hist[(hub->hist_head + hub->hist_count) % STREAM_HISTORY_MAX] = e;
	hub->hist_count++;
	hub->hist_bytes += size;
}

/* Queue the STREAM_MISSED_EVENT, with id `id`, for a client that resumed
 * from `last`; hub->mu held. */
static int enqueue_missed(stream *s, uint64_t id, uint64_t last, const char *reason)
{
	char data[96], *text;
	size_t tlen;
	int n, q;

	n = snprintf(data, sizeof data, "{\"last_event_id\":\"%llu\",\"reason\":\"%s\"}",
	             (unsigned long long)last, reason);
	if (n < 0 || (size_t)n >= sizeof data)
		return EVH_EINVAL;
	text = stream_frame(id, STREAM_MISSED_EVENT, data, (size_t)n, &tlen);
	if (!text)
		return EVH_ENOMEM;
	q = enqueue_locked(s, text, tlen);
	free(text);
	return q > 0 ? EVH_OK : EVH_ENOMEM;
}

/* Queue for `s` (not linked yet) what its client missed after id `last`:
 * the history's frames of its (name, channel) newer than `last`, or the
 * missed event first when the history cannot vouch for all of them (see
 * stream_open). hub->mu held. EVH_OK or EVH_ENOMEM. */
static int resume_locked(stream_hub *hub, stream *s, uint64_t last)
{
	const char *gap = NULL;
	size_t from = hub->hist_count, n = 0, bytes = 0;

	first_id_locked(hub);
	if (last < hub->first_id)
		gap = "restart";
	else if (last < *lost_of(hub, s->name, s->channel))
		gap = "history";
	/* The entries newer than `last` are the ring's newest. */
	while (from > 0 && hist_at(hub, from - 1)->id > last) {
		const hist_entry *e = hist_at(hub, --from);
		if (!strcmp(e->name, s->name) && !strcmp(e->channel, s->channel)) {
			n++;
			bytes += e->len;
		}
	}
	if (n + (gap != NULL) > STREAM_REPLAY_MAX || bytes > STREAM_REPLAY_BYTES)
		/* Alone, with the newest id: the client re-reads everything up
		 * to there, and a later reconnect starts after it. */
		return enqueue_missed(s, hub->last_id, last, gap ? gap : "too-many");
	/* With the client's own id, so its position moves on only with the
	 * frames that follow. */
	if (gap && enqueue_missed(s, last, last, gap) != EVH_OK)
		return EVH_ENOMEM;
	for (size_t i = from; i < hub->hist_count; i++) {
		const hist_entry *e = hist_at(hub, i);
		if (strcmp(e->name, s->name) || strcmp(e->channel, s->channel))
			continue;
		if (enqueue_locked(s, e->text, e->len) <= 0)
			return EVH_ENOMEM;
	}
	return EVH_OK;
}

/* ------------------------------------------------------------ publishing */

int stream_publish(stream_hub *hub, const void *owner, const char *name, const char *channel,
                   const char *event, const char *data, size_t len)
{
	char *text;
	size_t tlen;
	int n = 0;
	uint64_t id;

	if (!hub || !owner || !channel_ok(channel) || !event_ok(event) || (len && !data))
		return EVH_EINVAL;
	if (len > STREAM_DATA_MAX) {
		toobig_note(TOOBIG_STREAM); /* the plugin's, not its client's */
		return EVH_ETOOBIG;
	}
	pthread_mutex_lock(&hub->mu);
	first_id_locked(hub);
	id = ++hub->last_id;
	text = stream_frame(id, event, data, len, &tlen);
	if (!text) {
		pthread_mutex_unlock(&hub->mu);
		return EVH_ENOMEM;
	}
	for (stream *s = hub->head, *next; s; s = next) {
		int q;
		next = s->next;
		if (s->owner != owner || strcmp(s->channel, channel) != 0)
			continue;
		q = enqueue_locked(s, text, tlen);
		if (q > 0) {
			n++;
		} else if (q == 0) {
			/* Full: the client does not keep up. Dropping it costs the
			 * client a reconnect; blocking here would stall every
			 * publisher behind one slow reader. */
			unlink_locked(hub, s);
			close_locked(s, CLOSE_SLOW);
		} else {
			/* Not queued for want of memory: the stream goes on no
			 * further, or its client would get the next frames and
			 * never this one; reconnecting with Last-Event-ID, it
			 * gets it from the history (or is told it missed it). */
			unlink_locked(hub, s);
			close_locked(s, CLOSE_NOMEM);
		}
	}
	hist_add_locked(hub, id, name ? name : "", channel, text, tlen);
	pthread_mutex_unlock(&hub->mu);
	return n;
}

/* ------------------------------------------------------------ the owner */

static const char *why_text(close_why why)
{
	switch (why) {
	case CLOSE_OWNER: return "service stopping";
	case CLOSE_HUB: return "server stopping";
	case CLOSE_SLOW: return "dropped: client too slow";
	case CLOSE_NOMEM: return "dropped: out of memory";
	case CLOSE_NONE: break;
	}
	return "";
}

const char *stream_close_reason(stream *s)
{
	close_why why;
	pthread_mutex_lock(&s->mu);
	why = s->why;
	pthread_mutex_unlock(&s->mu);
	return why_text(why);
}

/* Every queued frame, then (closed) the last words, as one buffer; s->mu held. */
static int drain_locked(stream *s, char **out, size_t *len)
{
	size_t total = 0, n = 0;
	char last[96] = "";
	char *buf;

	if (s->why != CLOSE_NONE && !s->told)
		snprintf(last, sizeof last, ": %s\n\n", why_text(s->why));
	for (frame *f = s->qhead; f; f = f->next)
		total += f->len;
	total += strlen(last);
	buf = malloc(total + 1);
	if (!buf)
		return -1;
	while (s->qhead) {
		frame *f = s->qhead;
		memcpy(buf + n, f->text, f->len);
		n += f->len;
		s->qhead = f->next;
		free(f);
	}
	s->qtail = NULL;
	s->qlen = s->qbytes = 0;
	memcpy(buf + n, last, strlen(last) + 1);
	n += strlen(last);
	if (last[0])
		s->told = 1;
	*out = buf;
	*len = n;
	return 0;
}

stream_wait_result stream_wait(stream *s, int timeout_ms, char **out, size_t *len)
{
	struct timespec until;
	stream_wait_result r;

	*out = NULL;
	*len = 0;
	until = clock_after_ms(CLOCK_MONOTONIC, timeout_ms);
	pthread_mutex_lock(&s->mu);
	while (!s->qhead && s->why == CLOSE_NONE) {
		if (pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT)
			break;
	}
	if (!s->qhead && s->why == CLOSE_NONE) {
		pthread_mutex_unlock(&s->mu);
		return STREAM_IDLE;
	}
	r = s->why != CLOSE_NONE ? STREAM_CLOSED : STREAM_FRAMES;
	/* Out of memory: the frames wait for the next call; a closed stream
	 * ends without its last words. */
	if (drain_locked(s, out, len) != 0 && r == STREAM_FRAMES)
		r = STREAM_IDLE;
	pthread_mutex_unlock(&s->mu);
	return r;
}

/* ------------------------------------------------------------ sockets */

static int sock_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return -1;
}

static int sock_addr_is(const struct sockaddr_storage *ss, const char *addr)
{
	char text[INET6_ADDRSTRLEN];
	const void *a = ss->ss_family == AF_INET
	                    ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
	                    : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
	if (!inet_ntop(ss->ss_family, a, text, sizeof text))
		return 0;
	return !strcmp(text, addr);
}

static int fd_is_conn(int fd, const char *peer_addr, int peer_port, int local_port)
{
	struct sockaddr_storage peer, local;
	socklen_t pl = sizeof peer, ll = sizeof local;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
		return 0;
	if (getpeername(fd, (struct sockaddr *)&peer, &pl) != 0 ||
	    getsockname(fd, (struct sockaddr *)&local, &ll) != 0)
		return 0;
	return sock_port(&peer) == peer_port && sock_port(&local) == local_port &&
	       sock_addr_is(&peer, peer_addr);
}

int stream_find_socket(const char *peer_addr, int peer_port, int local_port)
{
	DIR *d;
	struct dirent *e;
	int found = -1;
	if (!peer_addr || peer_port <= 0 || local_port <= 0)
		return -1;
	d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	while (found < 0 && (e = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		if (*end || end == e->d_name || fd == dirfd(d))
			continue;
		if (fd_is_conn((int)fd, peer_addr, peer_port, local_port))
			found = (int)fd;
	}
	closedir(d);
	return found;
}

int stream_socket_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof err;
	if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		return 0;
	return err;
}

int stream_peer_gone(int fd)
{
	struct pollfd pfd = {fd, POLLRDHUP, 0};
	if (fd < 0)
		return 0;
	if (poll(&pfd, 1, 0) <= 0)
		return 0;
	return (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}
