/* The SSE hub. One mutex guards the hub's list of streams and its event id
 * counter; each stream has its own mutex and condition variable for its
 * queue. Lock order: hub, then stream. The list is scanned linearly: there
 * are at most [http] max_streams entries, a fraction of the worker
 * threads. */
#define _GNU_SOURCE
#include "stream.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <evhost/evhost.h>

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
} close_why;

struct stream {
	stream_hub *hub;
	struct stream *next; /* in hub->head; hub->mu */
	int linked;          /* hub->mu */
	const void *owner;
	char *name;
	char *channel;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	frame *qhead, *qtail; /* mu */
	size_t qlen;          /* mu */
	close_why why;        /* mu */
	int told;             /* the owner got the last words (owner thread only) */
};

struct stream_hub {
	pthread_mutex_t mu;
	pthread_cond_t idle; /* count dropped to 0 */
	stream *head;
	int accepting;
	int max_streams;
	int count; /* opened, not yet released */
	uint64_t next_id;
};

static stream_hub global_hub = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 1, 0,
                                0};

stream_hub *stream_hub_global(void) { return &global_hub; }

stream_hub *stream_hub_new(void)
{
	stream_hub *hub = calloc(1, sizeof *hub);
	if (!hub)
		return NULL;
	pthread_mutex_init(&hub->mu, NULL);
	pthread_cond_init(&hub->idle, NULL);
	hub->max_streams = 1;
	return hub;
}

void stream_hub_free(stream_hub *hub)
{
	if (!hub || hub == &global_hub)
		return;
	stream_hub_stop(hub);
	pthread_cond_destroy(&hub->idle);
	pthread_mutex_destroy(&hub->mu);
	free(hub);
}

void stream_hub_start(stream_hub *hub, int max_streams)
{
	pthread_mutex_lock(&hub->mu);
	hub->max_streams = max_streams > 0 ? max_streams : 1;
	hub->accepting = 1;
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

/* ------------------------------------------------------------ closing */

/* Close `s` for `why`; hub->mu held. A stream dropped as too slow loses its
 * queue: those frames are what it could not keep up with. */
static void close_locked(stream *s, close_why why)
{
	pthread_mutex_lock(&s->mu);
	if (s->why == CLOSE_NONE)
		s->why = why;
	if (why == CLOSE_SLOW) {
		while (s->qhead) {
			frame *f = s->qhead;
			s->qhead = f->next;
			free(f);
		}
		s->qtail = NULL;
		s->qlen = 0;
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
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&hub->mu);
	while (hub->count > 0)
		if (pthread_cond_timedwait(&hub->idle, &hub->mu, &until) == ETIMEDOUT)
			break;
	n = hub->count;
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
	pthread_condattr_t ca;
	if (!s)
		return NULL;
	s->hub = hub;
	s->owner = owner;
	s->name = strdup(name ? name : "");
	s->channel = strdup(channel);
	/* A monotonic clock, so the owner's waits survive wall-clock steps. */
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cv, &ca);
	pthread_condattr_destroy(&ca);
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

int stream_open(stream_hub *hub, const void *owner, const char *name, const char *channel,
                stream **out)
{
	stream *s;
	*out = NULL;
	if (!hub || !owner || !channel_ok(channel))
		return EVH_EINVAL;
	s = stream_new(hub, owner, name, channel);
	if (!s)
		return EVH_ENOMEM;
	pthread_mutex_lock(&hub->mu);
	if (!hub->accepting || hub->count >= hub->max_streams) {
		int rc = hub->accepting ? EVH_EBUSY : EVH_ESTATE;
		pthread_mutex_unlock(&hub->mu);
		stream_free(s);
		return rc;
	}
	hub->count++;
	s->next = hub->head;
	hub->head = s;
	s->linked = 1;
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
	return out;
}

/* ------------------------------------------------------------ publishing */

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
	return 1;
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
	if (s->qlen >= STREAM_QUEUE_MAX) {
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
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return 1;
}

int stream_publish(stream_hub *hub, const void *owner, const char *channel, const char *event,
                   const char *data, size_t len)
{
	char *text;
	size_t tlen;
	int n = 0, rc = EVH_OK;
	uint64_t id;

	if (!hub || !owner || !channel_ok(channel) || !event_ok(event) || (len && !data))
		return EVH_EINVAL;
	if (len > STREAM_DATA_MAX)
		return EVH_ETOOBIG;
	pthread_mutex_lock(&hub->mu);
	id = ++hub->next_id;
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
			rc = EVH_ENOMEM;
		}
	}
	pthread_mutex_unlock(&hub->mu);
	free(text);
	return rc == EVH_OK ? n : rc;
}

/* ------------------------------------------------------------ the owner */

static const char *why_text(close_why why)
{
	switch (why) {
	case CLOSE_OWNER: return "service stopping";
	case CLOSE_HUB: return "server stopping";
	case CLOSE_SLOW: return "dropped: client too slow";
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
	s->qlen = 0;
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
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
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

int stream_peer_gone(int fd)
{
	struct pollfd pfd = {fd, POLLRDHUP, 0};
	if (fd < 0)
		return 0;
	if (poll(&pfd, 1, 0) <= 0)
		return 0;
	return (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) != 0;
}
