/* Server-Sent Events hub: which open streams listen to which (plugin,
 * channel), and one bounded queue per stream between the publishers and the
 * HTTP worker thread that owns the stream's connection.
 *
 * Threading. A stream belongs to one thread (its owner: the HTTP worker that
 * opened it), which alone calls stream_wait and stream_release on it. Every
 * other call is safe from any thread. Publishing never blocks on a client:
 * it takes the hub's lock and each matching stream's lock only long enough
 * to append a copy of the frame; a stream whose queue is full is dropped
 * (its owner writes a final comment and ends the response) instead.
 *
 * Lifetime. The hub never frees a stream: closing one (its plugin stops, the
 * hub stops, the queue overflowed) unlinks it and wakes its owner, and the
 * owner frees it with stream_release. Owners ("owner" below: the plugin) are
 * compared as pointers, never dereferenced, so a stream may outlive the
 * plugin it was opened for.
 *
 * Resuming. The hub keeps the most recent frames (STREAM_HISTORY_MAX of
 * them, at most STREAM_HISTORY_BYTES) with the plugin's name and the
 * channel. A client that reconnects with the last id it saw (the
 * Last-Event-ID header, or the STREAM_LAST_ID_PARAM query parameter) first
 * gets the frames of its (plugin name, channel) published since, then the
 * live ones: none lost, none twice. The name, not the owner pointer, is
 * what matches, because a reloaded plugin gets a new owner pointer and its
 * clients reconnect to it. When frames after that id may be gone, or are
 * more than a stream queues, the client gets a STREAM_MISSED_EVENT instead
 * (see stream_open), and re-reads what the stream is about. Ids start at
 * the wall-clock time in microseconds, so an id of an earlier process is
 * below every id of this one (stream.c, ids). */
#ifndef EVHOST_STREAM_H
#define EVHOST_STREAM_H
#include <stddef.h>
#include <stdint.h>

#define STREAM_KEEPALIVE_MS 15000 /* ": keepalive" after this long without a write */
#define STREAM_POLL_MS 500        /* how often an idle owner checks the client is still there */
#define STREAM_RETRY_MS 3000      /* the "retry:" reconnection delay announced to clients */
#define STREAM_QUEUE_MAX 64       /* frames queued per stream before it is dropped */
/* ... and bytes of them: a frame is at most about 450 KiB (STREAM_DATA_MAX
 * of line breaks, each a "data: " line), so 64 of them held up to 28 MiB
 * per stalled client (twice that while its worker wrote what it took). */
#define STREAM_QUEUE_BYTES (1024 * 1024)
#define STREAM_CHANNEL_MAX 256    /* bytes in a channel name */
#define STREAM_EVENT_MAX 64       /* bytes in an event name */
#define STREAM_DATA_MAX (64 * 1024) /* bytes of data in one event */
/* The history resuming clients are served from: the newest frames of every
 * plugin and channel, up to this many, and up to this many bytes of frame
 * text with its plugin and channel names (a frame is at most about 450 KiB:
 * STREAM_DATA_MAX of line breaks, each one a "data: " line). 1024 frames
 * cover a reconnect of a few seconds at hundreds of events a second. */
#define STREAM_HISTORY_MAX 1024
/* Evicted frames are remembered per plugin and channel, hashed into this
 * many buckets: a client is told of a gap only when its own channel (or
 * one sharing its bucket) lost frames after its last id. */
#define STREAM_LOST_BUCKETS 4096
#define STREAM_HISTORY_BYTES (4 * 1024 * 1024)
/* The most frames, and bytes of them, a resuming client is sent (half a
 * queue, so live frames published right after still fit). */
#define STREAM_REPLAY_MAX (STREAM_QUEUE_MAX / 2)
#define STREAM_REPLAY_BYTES (STREAM_QUEUE_BYTES / 2)
/* The event that tells a resuming client it may have missed frames. Event
 * names starting with STREAM_HOST_PREFIX are the host's: plugins may not
 * publish them. */
#define STREAM_MISSED_EVENT "evhost.missed"
#define STREAM_HOST_PREFIX "evhost."
/* The query parameter that stands in for a missing Last-Event-ID header
 * (named as EventSource's lastEventId property): a page whose EventSource
 * was refused (a 503 at max_streams, a 404, a 401) makes a new one, which
 * cannot send headers, with "?lastEventId=N" in its URL. http.c passes its
 * decoded value to stream_open when the request has no Last-Event-ID. */
#define STREAM_LAST_ID_PARAM "lastEventId"

typedef struct stream_hub stream_hub;
typedef struct stream stream;

/* What stream_wait found. */
typedef enum stream_wait_result {
	STREAM_FRAMES = 0, /* *out holds frames to write */
	STREAM_IDLE = 1,   /* the timeout passed with nothing queued */
	STREAM_CLOSED = 2, /* the stream was closed; *out holds its last words */
} stream_wait_result;

/* The daemon's hub (static storage, lives as long as the process, so
 * publishers never race its teardown). It accepts streams between
 * stream_hub_start and stream_hub_stop. */
stream_hub *stream_hub_global(void);
/* A private hub, for tests. Free only after every stream was released. */
stream_hub *stream_hub_new(void);
void stream_hub_free(stream_hub *hub);
/* Accept new streams, at most `max_streams` at a time (0: none, each refused
 * EVH_EBUSY; [http] threads = 1 leaves no worker for one). */
void stream_hub_start(stream_hub *hub, int max_streams);
/* How long what a stream sent may go unacknowledged before its connection
 * ends (TCP_USER_TIMEOUT, given to each stream's socket by
 * stream_set_socket): [http] stream_unacked_timeout. A client gone without
 * a word (its network lost: no FIN, no reset) is then dropped, not after
 * the kernel's retransmissions (about 15 minutes) during which it held its
 * place under max_streams. 0 (until set): the kernel's default. */
void stream_hub_set_unacked_ms(stream_hub *hub, unsigned int ms);
/* Refuse new streams and close every open one (daemon stop). Returns how
 * many were closed. */
size_t stream_hub_stop(stream_hub *hub);
/* Wait up to `timeout_ms` for every stream to be released (after
 * stream_hub_stop: for their owners to write their last words). Returns
 * how many are still held. */
int stream_hub_wait_idle(stream_hub *hub, int timeout_ms);
#define STREAM_STOP_GRACE_MS 1000 /* what a daemon stop grants open streams */
/* What a stream closed while the daemon runs (its plugin stopped or was
 * reloaded, its queue overflowed) has to write its last words and let go.
 * Until then it counts against max_streams; past it, its connection is cut
 * (as stream_hub_cut): by the periodic stream_hub_reclaim, or at once by a
 * stream_open that finds the hub full, which takes its place. So a client
 * that stopped reading holds neither a slot nor a worker thread for [http]
 * request_timeout (civetweb's wait restarts with every byte taken: one
 * that takes a few now and then holds it much longer). Below
 * STREAM_RETRY_MS: the clients a reload ended find their places free when
 * they reconnect. */
#define STREAM_CLOSE_GRACE_MS 1000
/* Shut down (shutdown(2), both ways) the connection of every stream still
 * held whose socket is known (stream_set_socket): an owner blocked writing
 * to a client that stopped reading fails at once instead of waiting out
 * the write timeout. For a stop whose grace has passed. Returns how many. */
size_t stream_hub_cut(stream_hub *hub);
/* Cut the connection of every stream closed more than
 * STREAM_CLOSE_GRACE_MS ago that its owner still holds (its socket known):
 * the owner waits in a write to a client that stopped reading, and lets go
 * of its worker thread without waiting for a new stream to need the place.
 * Those no longer count against max_streams. Any thread, periodically (the
 * main thread's wait, host/main.c). Returns how many. */
size_t stream_hub_reclaim(stream_hub *hub);
/* Streams opened and not yet released, closed or not. */
int stream_hub_count(stream_hub *hub);
/* The hub's figures now, for /metrics. */
typedef struct stream_hub_stats {
	int max_streams; /* the limit (stream_hub_start) */
	int counted;     /* streams counting against it: open or closing */
	int open;        /* open: linked, receiving what is published */
	int closing;     /* closed, still counted: owners writing their last words */
} stream_hub_stats;
void stream_hub_stats_get(stream_hub *hub, stream_hub_stats *out);
/* Open streams of `owner` (compared as a pointer, never dereferenced). */
int stream_owner_count(stream_hub *hub, const void *owner);

/* Open a stream of `owner` on `channel` (1..STREAM_CHANNEL_MAX bytes). From
 * now on events published to (owner, channel) are queued for it. `name` is
 * the owner's name (copied): it appears in log lines and matches the
 * history. EVH_EBUSY: the limit is reached; EVH_ESTATE: the hub is not
 * accepting; EVH_EINVAL: bad channel; EVH_ENOMEM. A full hub first cuts
 * the streams closed more than STREAM_CLOSE_GRACE_MS ago whose owners still
 * hold them (their sockets known): those no longer count.
 *
 * `last_event_id` is the client's Last-Event-ID header (or, without one,
 * its STREAM_LAST_ID_PARAM query parameter), or NULL. A decimal
 * uint64 (blanks around it allowed) is the last id the client saw; anything
 * else counts as no header. With one, the stream starts with the history's
 * frames of (name, channel) newer than it, in order, queued in the same
 * hold of the hub's lock as the stream joins the hub (so a frame published
 * meanwhile comes once: replayed or live). When the history cannot vouch
 * for every frame after it, the stream starts instead with one
 * STREAM_MISSED_EVENT whose data is {"last_event_id":"N","reason":R}:
 *   "restart"  the id is below the hub's first (an earlier process's);
 *   "history"  frames after it were evicted (or could not be kept);
 *   "too-many" the frames are kept but more than STREAM_REPLAY_MAX.
 * After a "restart" or "history" notice the retained frames follow when
 * they fit in the queue with it, and the notice carries the client's own
 * id; otherwise the notice comes alone with the newest id published, so the
 * client's next reconnect starts from there. An id newer than any published
 * replays nothing and is no gap. */
int stream_open(stream_hub *hub, const void *owner, const char *name, const char *channel,
                const char *last_event_id, stream **out);
/* Queue one event for every open stream of (owner, channel) and keep it in
 * the history under (name, channel). `name` is the owner's name (NULL: "").
 * `event` may be NULL (clients see "message"); it must not contain control
 * characters or start with STREAM_HOST_PREFIX. `data` may hold line breaks (LF, CR or CRLF): each line
 * becomes one "data:" field. Returns the number of streams it was queued
 * for (>= 0), or EVH_EINVAL / EVH_ETOOBIG / EVH_ENOMEM (no frame made: no
 * stream and no history has it). A stream it cannot be queued for, for
 * want of memory, is closed ("dropped: out of memory"): its client
 * reconnects and gets it from the history. */
int stream_publish(stream_hub *hub, const void *owner, const char *name, const char *channel,
                   const char *event, const char *data, size_t len);
/* Close every stream of `owner` (its plugin stops). Returns how many. */
size_t stream_close_owner(stream_hub *hub, const void *owner);

/* Owner side. Wait up to `timeout_ms` for frames. On STREAM_FRAMES and
 * STREAM_CLOSED, *out (malloc'd, free it) holds *len bytes to write: the
 * queued frames, and after a close a final comment saying why. */
stream_wait_result stream_wait(stream *s, int timeout_ms, char **out, size_t *len);
/* Tell the hub the socket of the stream's connection (stream_find_socket;
 * -1: unknown), for stream_hub_cut, and give the socket the hub's
 * unacknowledged timeout (stream_hub_set_unacked_ms). Owner thread; the
 * socket must stay open until stream_release. */
void stream_set_socket(stream *s, int fd);
/* Why the stream was closed ("" while open); static text. */
const char *stream_close_reason(stream *s);
/* Unlink (if still linked) and free. Owner thread. */
void stream_release(stream *s);

/* One SSE event as text: "id: N\nevent: E\ndata: ...\n\n", one data line
 * per line of `data`. Returns a malloc'd string (its length in *outlen), or
 * NULL when out of memory. */
char *stream_frame(uint64_t id, const char *event, const char *data, size_t len,
                   size_t *outlen);

/* The socket of the TCP connection whose local port is `local_port` and
 * whose peer is `peer_addr`:`peer_port` (as civetweb reports them), found
 * among this process's descriptors; -1 when not found. civetweb does not
 * expose a connection's socket, and without it a departed client is only
 * noticed when a write fails (a keepalive later). */
int stream_find_socket(const char *peer_addr, int peer_port, int local_port);
/* Whether the peer of `fd` has closed or reset the connection (never
 * blocks; 0 when fd < 0). */
int stream_peer_gone(int fd);
/* The pending error of socket `fd` (SO_ERROR, which it clears): ETIMEDOUT
 * after the hub's unacknowledged timeout ran out; 0 for none, or when
 * fd < 0. */
int stream_socket_error(int fd);
#endif
