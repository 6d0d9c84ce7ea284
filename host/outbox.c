/* Outbox relay: one thread moves every plugin's outbox rows to Kafka.
 *
 * Per plugin it remembers `sent_upto`: rows with seq <= sent_upto are in
 * flight or delivered. A row leaves the outbox only when its delivery report
 * says the broker acknowledged it; in the same transaction it is recorded as
 * delivered, with the partition and offset the broker gave it, which puts
 * it in the plugin's event log (the row itself stays where the plugin's
 * transaction wrote it; see store.c). The relay also prunes that log to `[store]
 * event_retention`, and the plugin's inbox to `[store] inbox_retention`
 * (checked every PRUNE_EVERY_MS per plugin, or every half of the shorter
 * retention when that is shorter). A broker away fails nothing: the
 * producer has no message.timeout.ms unless the operator sets one (kafka.c,
 * producer_conf), and retries in order until it answers. When a delivery
 * fails for good (a topic refusing the row: its max.message.bytes, no
 * right to write, no such topic; or the operator's message.timeout.ms
 * passed), the relay waits until nothing of that plugin is in
 * flight any more, then rewinds sent_upto to just below the failed row and
 * sends again from there: each row that failed alone, the rows behind it
 * only once it is delivered (however librdkafka would batch them, a row
 * refused for good cannot be overtaken by one sent with it), so per-key
 * order is kept for every row produced after the failure is known. (Up to
 * PROBES_MAX failed rows are remembered at once; past that, a broker away
 * for long having failed a whole window, the later ones go out in batches
 * again once the first is delivered.) A relay's first send (the plugin's
 * start, after a restart or a reload's) is its oldest row alone too, the
 * rest once it is delivered: a row refused before the restart is held back
 * with every later one again, not sent in a batch they could pass it in
 * (the oldest only: the other failed rows are not remembered across it).
 * A stop sends what it can in its time, but a failure while stopping ends
 * that plugin's sending (its rows stay, in order, for the next start): the
 * stop does not wait for a row the broker refuses for good. Rows that were in
 * flight behind the failed one may be sent twice, which consumers absorb
 * (the event id is the row's id, stable across re-sends), and, when the
 * broker refused the failed one for good (a topic's max.message.bytes), one
 * of them may already have been delivered ahead of it: librdkafka's
 * idempotent producer keeps a partition's order only while nothing fails
 * (enable.gapless.guarantee would stop the producer instead); so may one,
 * when an operator's message.timeout.ms passed, that the producer still
 * held (it drops the timed-out messages and sends the rest). Under load it
 * sends in waves, to keep librdkafka's broker thread from spinning (see
 * "Waves" below).
 *
 * Locking: o->mu guards the relay list and the wake/stop flags; each
 * relay's own mutex guards what delivery callbacks touch (they may run on
 * any thread that polls the producer, even after the outbox is gone, so a
 * relay is reference counted: the list holds one reference and every
 * message in flight one more). Order: o->mu before relay->mu. No store call
 * is made under o->mu, because store commit hooks take it (and clearing a
 * store's hook waits for a call of it under way).
 *
 * A store calls its hook (outbox_wake) after its commit, on the committing
 * thread; store_set_commit_hook waits for a call under way, and the relay
 * clears the hook of every store it serves before it lets go of the store
 * (outbox_remove_plugin) or the outbox is freed (outbox_stop): no call can
 * reach a freed outbox.
 *
 * Recording deliveries is a second thread's work (the mover), so the relay
 * thread spends its time reading the outbox and producing: on a busy host
 * the two run on different cores. A relay's
 * move_mu guards what the move touches (del, and st against detaching);
 * it is never taken under o->mu (a move's commit may wake the relay, which
 * takes o->mu), and relay->mu may be taken under it. */
#include "outbox.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "host.h"
#include "log.h"
#include "metrics.h"
#include "plugins.h"
#include "store.h"

#define OUTBOX_LOG "outbox"
#define FETCH_ROWS 500
#define MOVE_ROWS 500
#define IDLE_WAIT_MS 500
#define INFLIGHT_POLL_MS 10
#define QUEUE_FULL_POLL_MS 100
/* How long one send waits for room in a full local queue before it gives
 * the thread back (other plugins' relays, a reload removing this plugin)
 * and tries again on a later round. */
#define QUEUE_FULL_WAIT_MS 1000
#define RESEND_DELAY_MS 1000
#define FAILURE_WARN_EVERY_MS 60000 /* the same row's failed delivery (or record), said again */
#define REMOVE_DRAIN_MS 5000
#define PRUNE_EVERY_MS 60000
#define PRUNE_MIN_EVERY_MS 1000
#define PRUNE_BATCH 2000
#define PROBES_MAX 64 /* failed rows remembered, each to be sent again alone */

struct relay {
	pthread_mutex_t mu;
	/* under mu */
	int refs;
	int64_t inflight;
	outbox_done *done; /* delivered rows, not yet recorded in the store */
	size_t ndone, capdone;
	int64_t rewind_to; /* -1, or resend rows with seq > rewind_to */
	char fail_error[256]; /* why the row rewind_to + 1 failed */
	int64_t failed[PROBES_MAX]; /* the rows that failed since the last rewind */
	int nfailed;
	/* under the outbox's mu */
	int removing, detached;
	int64_t remove_deadline;
	int flushed; /* relay thread only: being removed, its last rows sent */
	int64_t send_until; /* relay thread only: being removed, remove_deadline (a full
	                     * queue is not waited for past it; 0: no bound but the stop's) */
	/* under move_mu (the mover, and the relay thread detaching or stopping) */
	pthread_mutex_t move_mu;
	outbox_done *del; /* rows to move (retried when that fails) */
	size_t ndel, capdel;
	_Atomic int64_t move_again_at; /* after a failed move: when to try again (0: none) */
	int64_t busy_until; /* the store was busy (EVH_EBUSY): no move before then */
	int64_t record_warned_ms; /* a failed record last said at warn level (every second else) */
	/* relay thread only (st: changed under move_mu too) */
	evh_plugin *p;
	store *st;
	int64_t sent_upto;
	int64_t resend_at;
	int64_t last_error_seq;
	int64_t warned_seq, warned_ms; /* the last failed delivery said at warn level, when */
	int64_t last_fetch_ms;
	int need_fetch; /* rewound, or a batch was full */
	int wave;       /* sending in waves (see "Waves") */
	/* After a failed delivery, the row is sent again alone, and the rows
	 * behind it only once it is delivered: a row the broker refuses for
	 * good (a topic's max.message.bytes) holds back every later one of its
	 * plugin, however librdkafka batches them. So is a new relay's first
	 * row (relay_new). */
	enum { PROBE_NONE, PROBE_DUE, PROBE_SENT } probe;
	int64_t probes[PROBES_MAX]; /* rows that failed, not sent again yet: ascending */
	int nprobes;
	int64_t next_prune_ms;
	/* Stopping: a delivery failed again since the stop began (a row the
	 * broker refuses for good), so nothing more is sent (the rows behind
	 * it wait, in order) and the stop does not wait for them. */
	int64_t held_at; /* that row (0: none) */
	char held_error[256];
};

struct outbox {
	kafka *k;
	char *source;
	pthread_mutex_t mu;
	pthread_cond_t cv;      /* wakes the relay */
	pthread_cond_t removed; /* a relay was detached */
	struct relay **relays;
	size_t n, cap;
	int wake, stop, exited;
	int64_t stop_deadline;
	pthread_t thread;
	/* the mover: under mu */
	pthread_cond_t move_cv;
	int move_wake, move_stop;
	pthread_t mover;
	int mover_running;
};

/* One message in flight. */
struct inflight_msg {
	struct relay *r;
	int64_t seq;
	metrics_series *published; /* counted on a successful delivery report */
};

/* How long an idle relay sleeps when no commit wakes it: the bound on a
 * missed wake-up (IDLE_WAIT_MS; tests lengthen it to show none is missed). */
static _Atomic int idle_wait_ms = IDLE_WAIT_MS;

void outbox_set_idle_wait_ms(int ms) { atomic_store(&idle_wait_ms, ms > 0 ? ms : IDLE_WAIT_MS); }

/* INFLIGHT_POLL_MS, lengthened by tests (outbox_set_inflight_poll_ms). */
static _Atomic int inflight_poll_ms = INFLIGHT_POLL_MS;

void outbox_set_inflight_poll_ms(int ms)
{
	atomic_store(&inflight_poll_ms, ms > 0 ? ms : INFLIGHT_POLL_MS);
}

/* RESEND_DELAY_MS, shortened by tests (outbox_set_resend_delay_ms). */
static _Atomic int resend_delay_ms = RESEND_DELAY_MS;

void outbox_set_resend_delay_ms(int ms)
{
	atomic_store(&resend_delay_ms, ms > 0 ? ms : RESEND_DELAY_MS);
}

/* Double the room of an outbox_done array. */
static int grow_done(outbox_done **v, size_t *cap)
{
	size_t c = *cap ? *cap * 2 : 64;
	outbox_done *nv = realloc(*v, c * sizeof *nv);
	if (!nv)
		return -1;
	*v = nv;
	*cap = c;
	return 0;
}

static int push_done(outbox_done **v, size_t *n, size_t *cap, outbox_done d)
{
	if (*n == *cap && grow_done(v, cap))
		return -1;
	(*v)[(*n)++] = d;
	return 0;
}

static void relay_release(struct relay *r)
{
	int last;
	pthread_mutex_lock(&r->mu);
	last = --r->refs == 0;
	pthread_mutex_unlock(&r->mu);
	if (!last)
		return;
	pthread_mutex_destroy(&r->mu);
	pthread_mutex_destroy(&r->move_mu);
	free(r->done);
	free(r->del);
	free(r);
}

/* For tests (outbox_test_refuse): delivery reports of these rows taken as
 * failures, `times` more times each (-1: until cleared). */
static struct {
	pthread_mutex_t mu;
	_Atomic int any;
	int n;
	int64_t seq[8];
	int times[8];
	int refused;
} test_refusals = {.mu = PTHREAD_MUTEX_INITIALIZER};

void outbox_test_refuse(int64_t seq, int times)
{
	pthread_mutex_lock(&test_refusals.mu);
	if (seq < 0) {
		test_refusals.n = 0;
		test_refusals.refused = 0;
	} else if (test_refusals.n < 8) {
		test_refusals.seq[test_refusals.n] = seq;
		test_refusals.times[test_refusals.n++] = times;
	}
	atomic_store(&test_refusals.any, test_refusals.n > 0);
	pthread_mutex_unlock(&test_refusals.mu);
}

int outbox_test_refused(void)
{
	int n;
	pthread_mutex_lock(&test_refusals.mu);
	n = test_refusals.refused;
	pthread_mutex_unlock(&test_refusals.mu);
	return n;
}

static int test_refused(int64_t seq)
{
	int hit = 0;
	if (!atomic_load(&test_refusals.any))
		return 0;
	pthread_mutex_lock(&test_refusals.mu);
	for (int i = 0; i < test_refusals.n && !hit; i++)
		if (test_refusals.seq[i] == seq && test_refusals.times[i] != 0) {
			if (test_refusals.times[i] > 0)
				test_refusals.times[i]--;
			test_refusals.refused++;
			hit = 1;
		}
	pthread_mutex_unlock(&test_refusals.mu);
	return hit;
}

/* Delivery report; any thread. */
static void relay_delivered(void *opaque, int ok, const char *error, int32_t partition,
                            int64_t offset)
{
	struct inflight_msg *m = opaque;
	struct relay *r = m->r;
	outbox_done d = {m->seq, partition, offset};
	char why[64];
	if (ok && test_refused(m->seq)) {
		ok = 0;
		snprintf(why, sizeof why, "refused by a test (row %" PRId64 ")", m->seq);
		error = why;
	}
	if (ok)
		metrics_count(m->published);
	pthread_mutex_lock(&r->mu);
	if (ok) {
		r->done[r->ndone++] = d; /* room reserved by relay_produce */
	} else {
		/* The reason logged is the rewound row's: the lowest's. */
		if (r->rewind_to < 0 || m->seq - 1 < r->rewind_to) {
			r->rewind_to = m->seq - 1;
			snprintf(r->fail_error, sizeof r->fail_error, "%s",
			         error ? error : "unknown error");
		}
		if (r->nfailed < PROBES_MAX)
			r->failed[r->nfailed++] = m->seq;
	}
	r->inflight--;
	pthread_mutex_unlock(&r->mu);
	relay_release(r);
	free(m);
}

static int64_t relay_inflight(struct relay *r)
{
	int64_t n;
	pthread_mutex_lock(&r->mu);
	n = r->inflight;
	pthread_mutex_unlock(&r->mu);
	return n;
}

/* Record what was delivered (store_outbox_delivered). Rows whose record
 * fails stay queued, to be tried again after the resend delay (they are
 * below sent_upto, so not re-sent); returns 1 then. Any thread; under
 * move_mu. */
static int relay_delete_done(struct relay *r)
{
	int again;
	size_t i, left;
	pthread_mutex_lock(&r->move_mu);
	pthread_mutex_lock(&r->mu);
	for (i = 0; i < r->ndone; i++)
		if (push_done(&r->del, &r->ndel, &r->capdel, r->done[i]))
			break; /* out of memory: keep the rest in `done` */
	if (i < r->ndone)
		memmove(r->done, r->done + i, (r->ndone - i) * sizeof *r->done);
	r->ndone -= i;
	left = r->ndone;
	pthread_mutex_unlock(&r->mu);
	/* In transactions of at most MOVE_ROWS, in delivery order: a backlog
	 * must not hold the plugin's store (and its HTTP requests) for long.
	 * A store another transaction holds (a slow event handler's) is left
	 * alone until the retry: the other plugins' moves go on meanwhile. */
	i = 0;
	while (i < r->ndel && r->st && clock_mono_ms() >= r->busy_until) {
		size_t n = r->ndel - i < MOVE_ROWS ? r->ndel - i : MOVE_ROWS;
		int status;
		store_thread_error_clear();
		status = store_outbox_delivered(r->st, r->del + i, n);
		if (status == EVH_EBUSY) {
			r->busy_until = clock_mono_ms() + atomic_load(&resend_delay_ms);
			log_debug(OUTBOX_LOG,
			          "%s: its database is held by a long transaction; %zu delivered "
			          "outbox row(s) recorded later",
			          r->p->name, r->ndel - i);
			break;
		}
		if (status != EVH_OK) {
			log_msg(log_due(&r->record_warned_ms, clock_mono_ms(), FAILURE_WARN_EVERY_MS)
			            ? EVH_LOG_WARN
			            : EVH_LOG_DEBUG,
			        OUTBOX_LOG,
			        "%s: cannot record %zu delivered outbox row(s) (%s); will retry",
			        r->p->name, r->ndel - i,
			        store_thread_error()[0] ? store_thread_error()
			                                : host_strerror(status));
			break;
		}
		i += n;
	}
	if (i)
		memmove(r->del, r->del + i, (r->ndel - i) * sizeof *r->del);
	r->ndel -= i;
	/* No delivery report may come to kick the mover again: the relay does
	 * (rows left in `done` for want of memory too). */
	again = r->ndel > 0 || left > 0;
	atomic_store(&r->move_again_at,
	             again ? clock_mono_ms() + atomic_load(&resend_delay_ms) : 0);
	pthread_mutex_unlock(&r->move_mu);
	return again;
}

/* The plugin's store is going away: no more moves. Not under o->mu (a move
 * may be committing, and a commit can wake the relay, which takes o->mu). */
static void relay_forget_store(struct relay *r)
{
	pthread_mutex_lock(&r->move_mu);
	r->st = NULL;
	pthread_mutex_unlock(&r->move_mu);
}

static int relay_has_done(struct relay *r)
{
	int any;
	pthread_mutex_lock(&r->mu);
	any = r->ndone > 0;
	pthread_mutex_unlock(&r->mu);
	return any;
}

static size_t relay_pending_moves(struct relay *r)
{
	size_t n;
	pthread_mutex_lock(&r->move_mu);
	n = r->ndel;
	pthread_mutex_unlock(&r->move_mu);
	return n;
}

/* Whether a failed delivery waits for its rewind with nothing in flight
 * (relay_handle_failure's to do: owed now). */
static int relay_rewind_due(struct relay *r)
{
	int due;
	pthread_mutex_lock(&r->mu);
	due = r->rewind_to >= 0 && r->inflight == 0;
	pthread_mutex_unlock(&r->mu);
	return due;
}

/* Remember that row `seq` failed: it is sent again alone (relay_send). In
 * order; the lowest PROBES_MAX kept. */
static void probes_add(struct relay *r, int64_t seq)
{
	int i = 0;
	while (i < r->nprobes && r->probes[i] < seq)
		i++;
	if ((i < r->nprobes && r->probes[i] == seq) || i == PROBES_MAX)
		return;
	if (r->nprobes == PROBES_MAX)
		r->nprobes--; /* the highest goes */
	memmove(r->probes + i + 1, r->probes + i, (size_t)(r->nprobes - i) * sizeof *r->probes);
	r->probes[i] = seq;
	r->nprobes++;
}

/* Forget the remembered failed rows up to `seq`: sent again, or gone. */
static void probes_drop_upto(struct relay *r, int64_t seq)
{
	int i = 0;
	while (i < r->nprobes && r->probes[i] <= seq)
		i++;
	memmove(r->probes, r->probes + i, (size_t)(r->nprobes - i) * sizeof *r->probes);
	r->nprobes -= i;
}

/* After a failed delivery: once nothing is in flight, rewind. Returns 1
 * while the plugin must not send (waiting to rewind or to resend). The
 * rewind and its reason are taken together, under the lock: a last report
 * arriving between a look and a second one had the rewind said without its
 * reason, and done twice. While `stopping`, a failure holds the relay for
 * the rest of the stop (held_at): sent again, the row would fail again (a
 * broker refusing it for good), and the stop waited its whole time for a
 * row that could not go. */
static int relay_handle_failure(struct relay *r, int stopping)
{
	int64_t rewind_to, failed[PROBES_MAX];
	int nfailed = 0;
	char error[256] = "";
	pthread_mutex_lock(&r->mu);
	rewind_to = r->rewind_to;
	if (rewind_to >= 0 && r->inflight > 0) {
		pthread_mutex_unlock(&r->mu);
		return 1;
	}
	if (rewind_to >= 0) {
		r->rewind_to = -1;
		snprintf(error, sizeof error, "%s", r->fail_error);
		nfailed = r->nfailed;
		memcpy(failed, r->failed, (size_t)nfailed * sizeof *failed);
		r->nfailed = 0;
	}
	pthread_mutex_unlock(&r->mu);
	for (int i = 0; i < nfailed; i++)
		probes_add(r, failed[i]);
	if (rewind_to >= 0) {
		int64_t now = clock_mono_ms();
		/* A refusal for good comes back every resend: said once a minute. */
		if (r->warned_seq != rewind_to + 1)
			r->warned_ms = 0;
		r->warned_seq = rewind_to + 1;
		log_msg(log_due(&r->warned_ms, now, FAILURE_WARN_EVERY_MS) ? EVH_LOG_WARN
		                                                           : EVH_LOG_DEBUG,
		        OUTBOX_LOG,
		        "%s: delivery of outbox row %" PRId64 " failed (%s); sending again from "
		        "there, the plugin's later events behind it",
		        r->p->name, rewind_to + 1, error);
		if (rewind_to < r->sent_upto)
			r->sent_upto = rewind_to;
		if (stopping && !r->held_at) {
			r->held_at = rewind_to + 1;
			snprintf(r->held_error, sizeof r->held_error, "%s", error);
		}
		r->resend_at = now + atomic_load(&resend_delay_ms);
		r->need_fetch = 1;
		r->probe = PROBE_DUE;
	}
	return clock_mono_ms() < r->resend_at;
}

static int relay_produce(outbox *o, struct relay *r, const outbox_row *row)
{
	struct inflight_msg *m = malloc(sizeof *m);
	int rc;
	if (!m)
		return EVH_ENOMEM;
	m->r = r;
	m->seq = row->seq;
	m->published = metrics_published(r->p->name, row->topic);
	pthread_mutex_lock(&r->mu);
	/* A delivery failed: no row after it goes out before it is sent again
	 * (relay_handle_failure), or one of its key would pass it. */
	if (r->rewind_to >= 0) {
		pthread_mutex_unlock(&r->mu);
		free(m);
		return EVH_ESTATE;
	}
	/* Room in `done` for every report in flight, this one's too, so that
	 * recording a delivery never fails for want of memory: its row would
	 * stay in the outbox, past sent_upto, not sent again before a restart. */
	if (r->ndone + (size_t)r->inflight >= r->capdone &&
	    grow_done(&r->done, &r->capdone)) {
		pthread_mutex_unlock(&r->mu);
		free(m);
		return EVH_ENOMEM;
	}
	r->refs++;
	r->inflight++;
	pthread_mutex_unlock(&r->mu);
	rc = kafka_produce_row_pos(o->k, row, o->source, relay_delivered, m);
	if (rc == EVH_OK)
		return EVH_OK;
	pthread_mutex_lock(&r->mu);
	r->refs--; /* the list still holds one */
	r->inflight--;
	pthread_mutex_unlock(&r->mu);
	free(m);
	return rc;
}

static int stop_expired(outbox *o)
{
	int expired;
	pthread_mutex_lock(&o->mu);
	expired = o->stop && clock_mono_ms() >= o->stop_deadline;
	pthread_mutex_unlock(&o->mu);
	return expired;
}

/* Send the next batch of rows (`*sent` of them). Returns 1 when more rows
 * may be waiting. */
static int relay_send(outbox *o, struct relay *r, size_t *sent)
{
	outbox_row *rows = NULL;
	size_t n = 0, i = 0;
	int64_t busy_since = 0;
	int rc, stop_before = 0, sent_alone = 0;
	*sent = 0;
	r->last_fetch_ms = clock_mono_ms();
	r->need_fetch = 0;
	if (store_outbox_fetch(r->st, r->sent_upto, r->probe == PROBE_DUE ? 1 : FETCH_ROWS, &rows,
	                       &n) != EVH_OK) {
		log_warn(OUTBOX_LOG, "%s: cannot read the outbox; will retry", r->p->name);
		r->resend_at = clock_mono_ms() + atomic_load(&resend_delay_ms);
		r->need_fetch = 1;
		return 0;
	}
	while (i < n) {
		/* A row that failed goes alone: not behind others in a batch (the
		 * next round sends it first), and nothing behind it before its
		 * delivery report. */
		int probe = r->nprobes && rows[i].seq == r->probes[0];
		if (probe && i > 0) {
			stop_before = 1;
			break;
		}
		rc = relay_produce(o, r, &rows[i]);
		if (rc == EVH_ESTATE) /* a failure came back meanwhile: rewind first */
			break;
		if (rc == EVH_EBUSY) { /* local queue full: let deliveries drain it */
			if (!busy_since)
				busy_since = clock_mono_ms();
			kafka_poll_producer(o->k, QUEUE_FULL_POLL_MS);
			if (stop_expired(o) || (r->send_until && clock_mono_ms() >= r->send_until))
				break;
			/* Not for ever (a broker away: no room until it is back):
			 * the rest of the round, and another, go on. */
			if (clock_mono_ms() - busy_since >= QUEUE_FULL_WAIT_MS) {
				r->resend_at = clock_mono_ms() + QUEUE_FULL_POLL_MS;
				r->need_fetch = 1;
				break;
			}
			continue;
		}
		busy_since = 0;
		if (rc != EVH_OK) {
			if (r->last_error_seq != rows[i].seq)
				log_error(OUTBOX_LOG,
				          "%s: cannot produce outbox row %" PRId64
				          " to %s (%s); will retry",
				          r->p->name, rows[i].seq, rows[i].topic,
				          rc == EVH_ENOMEM      ? "out of memory"
				          : rc == EVH_ENOTFOUND ? KAFKA_NO_TOPIC "; the plugin's events "
				                                  "wait in its outbox, in order, until then"
				                                : "see above");
			r->last_error_seq = rows[i].seq;
			r->resend_at = clock_mono_ms() + atomic_load(&resend_delay_ms);
			r->need_fetch = 1;
			break;
		}
		r->sent_upto = rows[i].seq;
		i++;
		if (probe) {
			sent_alone = 1;
			break;
		}
	}
	/* Failed rows passed without being sent again are gone from the outbox. */
	probes_drop_upto(r, r->sent_upto);
	store_outbox_rows_free(rows, n);
	*sent = i;
	if (r->probe == PROBE_DUE || sent_alone || stop_before) {
		if (sent_alone || (r->probe == PROBE_DUE && i))
			r->probe = PROBE_SENT; /* the failed row, alone: the rest once it is delivered */
		else if (r->probe == PROBE_DUE && n == 0)
			r->probe = PROBE_NONE; /* gone from the outbox meanwhile */
		r->need_fetch = 1;
		return 0;
	}
	if (i == FETCH_ROWS)
		r->need_fetch = 1;
	return i == FETCH_ROWS;
}

/* Waves. librdkafka 2.0.2 (Debian 12's) lets an idempotent producer send a
 * partition's next request only while fewer than five *messages* of that
 * partition are in flight (rdkafka_broker.c compares a message count with a
 * limit of five requests). Under load that is one request per partition at
 * a time, and while it waits for the broker's answer, messages queued behind
 * it whose linger.ms has passed make its broker thread poll() with a zero
 * timeout, over and over: about a quarter of a core on this project's
 * benchmark machine, taken from the HTTP workers and the broker.
 *
 * So once OUTBOX_WAVE_ENTER of a plugin's rows are in flight at once, its relay
 * sends in waves: the rows pending (at most OUTBOX_WAVE_MAX), then nothing more
 * until every one of them has its delivery report. Between waves nothing
 * waits in librdkafka's queues, so its broker thread sleeps; rows committed
 * meanwhile wait in the outbox instead, about as long as they would have
 * waited in those queues. A wave of fewer than OUTBOX_WAVE_EXIT rows means the load
 * has passed: rows are sent as they come again (at a few hundred events a
 * second nothing changes, so neither does their latency). */

/* Send what is pending now; switch to waves when too much is in flight. */
static int relay_send_now(outbox *o, struct relay *r)
{
	size_t sent;
	int more = relay_send(o, r, &sent);
	if (relay_inflight(r) >= OUTBOX_WAVE_ENTER)
		r->wave = 1;
	return more;
}

/* Send one wave (nothing of this plugin is in flight). Returns 0: the next
 * wave waits for this one's delivery reports (need_fetch says more rows may
 * be pending). */
static int relay_send_wave(outbox *o, struct relay *r)
{
	size_t sent, total = 0;
	int more;
	do {
		more = relay_send(o, r, &sent);
		total += sent;
	} while (more && total < OUTBOX_WAVE_MAX && !stop_expired(o));
	if (total < OUTBOX_WAVE_EXIT)
		r->wave = 0;
	return 0;
}

/* The plugin's [store] event_retention and inbox_retention (unit tests run
 * plugins without a host: they get the defaults). */
static int64_t relay_retention_ms(const struct relay *r)
{
	return r->p->host ? r->p->host->set.event_retention_ms : SETTINGS_EVENT_RETENTION_MS;
}

static int64_t relay_inbox_retention_ms(const struct relay *r)
{
	return r->p->host ? r->p->host->set.inbox_retention_ms : SETTINGS_INBOX_RETENTION_MS;
}

/* One prune call; returns 1 if it came back full (more to do now), -1 if
 * the store was busy (a long transaction holds it: soon again). */
static int prune_step(struct relay *r, int (*fn)(store *, int64_t, int, int64_t *, int *),
                      int64_t retention, const char *what)
{
	int64_t deleted = 0;
	int status, more = 0;
	if (retention <= 0)
		return 0;
	store_thread_error_clear();
	status = fn(r->st, retention, PRUNE_BATCH, &deleted, &more);
	if (status == EVH_EBUSY)
		return -1;
	if (status != EVH_OK) {
		log_warn(OUTBOX_LOG, "%s: cannot prune the %s (%s); will retry", r->p->name, what,
		         store_thread_error()[0] ? store_thread_error() : host_strerror(status));
		return 0;
	}
	if (deleted)
		log_debug(OUTBOX_LOG, "%s: %" PRId64 " record(s) past retention removed from the %s",
		          r->p->name, deleted, what);
	return more; /* full, by rows or (the event log) by bytes */
}

/* Drop events older than the retention from the event log, and inbox
 * records older than theirs, a batch at a time: again next round while
 * batches come back full. */
static void relay_prune(struct relay *r)
{
	int64_t now = clock_mono_ms(), events = relay_retention_ms(r), inbox = relay_inbox_retention_ms(r);
	int64_t shortest = events > 0 && (inbox <= 0 || events < inbox) ? events : inbox;
	int64_t every = shortest / 2 < PRUNE_EVERY_MS ? shortest / 2 : PRUNE_EVERY_MS;
	int a, b;
	if (now < r->next_prune_ms || shortest <= 0)
		return;
	/* A short retention (tests, tiny disks) is kept to within half of it. */
	r->next_prune_ms = now + (every < PRUNE_MIN_EVERY_MS ? PRUNE_MIN_EVERY_MS : every);
	a = prune_step(r, store_events_prune, events, "event log");
	b = prune_step(r, store_inbox_prune, inbox, "inbox");
	if (a > 0 || b > 0)
		r->next_prune_ms = now;
	else if (a < 0 || b < 0) /* between two of the long transactions, maybe */
		r->next_prune_ms = now + PRUNE_MIN_EVERY_MS;
}

/* A relay being removed sends what its outbox holds now, in full batches
 * until none is left or the drain's time is up, before it is detached: a
 * request that was in its handler when the drain began may have committed
 * since the relay last looked (its wake-up and the removal can come in
 * either order). Not after a failed delivery (rewound, or its row sent
 * again alone), nor before a new relay's first row is delivered: that row
 * and the later ones wait for the plugin's next start, in order. Returns 1
 * when more rows may wait, and on the round it is done: its detach is then
 * not held up by a wait for other plugins' delivery reports. */
static int relay_send_last(outbox *o, struct relay *r)
{
	size_t sent;
	int failed;
	if (r->flushed)
		return 0;
	if (!r->send_until) {
		pthread_mutex_lock(&o->mu);
		r->send_until = r->remove_deadline;
		pthread_mutex_unlock(&o->mu);
	}
	pthread_mutex_lock(&r->mu);
	failed = r->rewind_to >= 0;
	pthread_mutex_unlock(&r->mu);
	if (!failed && r->probe == PROBE_NONE && clock_mono_ms() < r->send_until &&
	    relay_send(o, r, &sent))
		return 1;
	r->flushed = 1;
	return 1;
}

/* One round for one plugin. The outbox is read when a commit woke the
 * relay, when something is owed (rewind, full batch, error), and every
 * IDLE_WAIT_MS in case a wake-up was missed; not on every delivery poll.
 * Returns 1 when it has more to send now. */
static int relay_run(outbox *o, struct relay *r, int removing, int woken, int stopping)
{
	if (stopping || !o->mover_running)
		relay_delete_done(r); /* no waiting for the mover while draining */
	if (removing)
		return relay_send_last(o, r);
	if (relay_handle_failure(r, stopping) || (stopping && r->held_at))
		return 0;
	relay_prune(r);
	if (r->probe == PROBE_SENT) {
		int settled;
		pthread_mutex_lock(&r->mu);
		settled = r->inflight == 0 && r->rewind_to < 0;
		pthread_mutex_unlock(&r->mu);
		if (!settled)
			return 0; /* the resent row's report first (a failure: rewound next round) */
		r->probe = PROBE_NONE; /* delivered */
	}
	if (r->wave && relay_inflight(r) > 0) {
		if (woken)
			r->need_fetch = 1;
		return 0;
	}
	if (!woken && !r->need_fetch &&
	    clock_mono_ms() - r->last_fetch_ms < atomic_load(&idle_wait_ms))
		return 0;
	return r->wave ? relay_send_wave(o, r) : relay_send_now(o, r);
}

static int64_t total_inflight(outbox *o)
{
	int64_t n = 0;
	for (size_t i = 0; i < o->n; i++)
		n += relay_inflight(o->relays[i]);
	return n;
}

int64_t outbox_inflight(outbox *o)
{
	int64_t n;
	pthread_mutex_lock(&o->mu);
	n = total_inflight(o);
	pthread_mutex_unlock(&o->mu);
	return n;
}

/* Detach relays being removed once their last rows were sent and their
 * messages settled (or their drain time ran out: late reports then only
 * touch the refcounted relay). */
static void relay_detach_removed(outbox *o)
{
	int64_t now = clock_mono_ms();
	pthread_mutex_lock(&o->mu);
	for (size_t i = 0; i < o->n;) {
		struct relay *r = o->relays[i];
		if (!r->removing ||
		    ((!r->flushed || relay_inflight(r) > 0) && now < r->remove_deadline)) {
			i++;
			continue;
		}
		pthread_mutex_unlock(&o->mu);
		relay_delete_done(r); /* the store is open until the remover returns */
		relay_forget_store(r);
		pthread_mutex_lock(&o->mu);
		o->relays[i] = o->relays[--o->n];
		r->detached = 1;
		relay_release(r);
	}
	pthread_cond_broadcast(&o->removed);
	pthread_mutex_unlock(&o->mu);
}

/* Everything delivered and deleted, or held behind a row that failed
 * again while stopping? Only asked while stopping. */
static int relay_drained(outbox *o, struct relay **list, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct relay *r = list[i];
		if (relay_inflight(r) > 0 || relay_pending_moves(r) ||
		    (r->st && !r->held_at && store_outbox_pending(r->st) > 0))
			return 0;
	}
	return 1;
}

/* Copy the list under o->mu so the round runs without it. */
static struct relay **relay_snapshot(outbox *o, size_t *n, int **removing)
{
	struct relay **list = malloc((o->n ? o->n : 1) * sizeof *list);
	*removing = malloc((o->n ? o->n : 1) * sizeof **removing);
	*n = 0;
	if (!list || !*removing) {
		free(list);
		free(*removing);
		*removing = NULL;
		return NULL;
	}
	for (size_t i = 0; i < o->n; i++) {
		list[i] = o->relays[i];
		(*removing)[i] = o->relays[i]->removing;
	}
	*n = o->n;
	return list;
}

/* The sooner of `in` milliseconds from now and time `at`, in ms from now. */
static int64_t owed_sooner(int64_t in, int64_t at, int64_t now)
{
	return at - now >= in ? in : at > now ? at - now : 0;
}

/* In how many milliseconds work is owed (0: now; the idle wait if none),
 * with nothing in flight to poll for: a wave ended with rows committed
 * behind it (their commit's wake-up came while it was in flight), a full
 * batch, a failed delivery to rewind to (its report came with the last
 * poll: without this, the rewind and its resend delay waited for the idle
 * wait first), or a read, send or move to try again after an error. Under
 * o->mu, on the relay thread (need_fetch and resend_at are its own). */
static int64_t relay_owed_in(outbox *o)
{
	int64_t now = clock_mono_ms(), in = atomic_load(&idle_wait_ms), at;
	for (size_t i = 0; i < o->n; i++) {
		struct relay *r = o->relays[i];
		if (r->removing)
			continue;
		if (relay_rewind_due(r))
			return 0;
		if (r->need_fetch)
			in = owed_sooner(in, r->resend_at, now);
		if ((at = atomic_load(&r->move_again_at)))
			in = owed_sooner(in, at, now);
	}
	return in;
}

/* Wait on `cv` (under o->mu) for at most `ms`. */
static void wait_ms_on(outbox *o, pthread_cond_t *cv, int64_t ms)
{
	struct timespec until = clock_after_ms(CLOCK_MONOTONIC, ms);
	pthread_cond_timedwait(cv, &o->mu, &until);
}

static void wait_for_work(outbox *o)
{
	int64_t wait_ms;
	if (o->wake || o->stop || total_inflight(o) > 0 || !(wait_ms = relay_owed_in(o)))
		return;
	wait_ms_on(o, &o->cv, wait_ms);
}

/* Wake the mover if a delivery report left rows to move, or a move that
 * failed is due to be tried again; without a list (out of memory), in case. */
static void mover_kick(outbox *o, struct relay **list, size_t n)
{
	int64_t now = clock_mono_ms(), again;
	int any = !list;
	for (size_t i = 0; list && i < n && !any; i++)
		any = relay_has_done(list[i]) ||
		      ((again = atomic_load(&list[i]->move_again_at)) && now >= again);
	if (!any)
		return;
	pthread_mutex_lock(&o->mu);
	o->move_wake = 1;
	pthread_cond_signal(&o->move_cv);
	pthread_mutex_unlock(&o->mu);
}

static void *mover_main(void *arg)
{
	outbox *o = arg;
	log_thread_name("evh-mover", NULL);
	pthread_mutex_lock(&o->mu);
	while (!o->move_stop) {
		struct relay **list;
		size_t n = 0;
		int again = 0;
		if (!o->move_wake) {
			pthread_cond_wait(&o->move_cv, &o->mu);
			continue;
		}
		o->move_wake = 0;
		list = malloc((o->n ? o->n : 1) * sizeof *list);
		if (!list) { /* out of memory: nothing moved; again after the resend delay */
			wait_ms_on(o, &o->move_cv, atomic_load(&resend_delay_ms));
			o->move_wake = 1;
			continue;
		}
		for (size_t i = 0; i < o->n; i++) {
			struct relay *r = o->relays[i];
			pthread_mutex_lock(&r->mu);
			r->refs++; /* kept while moving without o->mu */
			pthread_mutex_unlock(&r->mu);
			list[n++] = r;
		}
		pthread_mutex_unlock(&o->mu);
		for (size_t i = 0; i < n; i++) {
			again |= relay_delete_done(list[i]);
			relay_release(list[i]);
		}
		free(list);
		pthread_mutex_lock(&o->mu);
		if (again) /* an idle relay's wait must end in time to kick us again */
			pthread_cond_signal(&o->cv);
	}
	pthread_mutex_unlock(&o->mu);
	return NULL;
}

static void *relay_main(void *arg)
{
	outbox *o = arg;
	log_thread_name("evh-relay", NULL);
	for (;;) {
		struct relay **list;
		int *removing, more = 0, stop, woken;
		size_t n;
		pthread_mutex_lock(&o->mu);
		wait_for_work(o);
		woken = o->wake;
		o->wake = 0;
		stop = o->stop;
		list = relay_snapshot(o, &n, &removing);
		if (!list && woken)
			o->wake = 1; /* out of memory: no relay ran, the commit's wake-up is kept */
		pthread_mutex_unlock(&o->mu);
		for (size_t i = 0; list && i < n; i++)
			more |= relay_run(o, list[i], removing[i], woken, stop);
		kafka_poll_producer(o->k, more ? 0 : atomic_load(&inflight_poll_ms));
		mover_kick(o, list, n);
		/* Without a list (out of memory) nothing is known to be drained. */
		if (stop && ((list && relay_drained(o, list, n)) || stop_expired(o))) {
			free(list);
			free(removing);
			break;
		}
		free(list);
		free(removing);
		relay_detach_removed(o);
		if (more) {
			pthread_mutex_lock(&o->mu);
			o->wake = 1;
			pthread_mutex_unlock(&o->mu);
		}
	}
	pthread_mutex_lock(&o->mu);
	o->exited = 1;
	pthread_cond_broadcast(&o->removed);
	pthread_mutex_unlock(&o->mu);
	return NULL;
}

static void mover_stop(outbox *o)
{
	if (!o->mover_running)
		return;
	pthread_mutex_lock(&o->mu);
	o->move_stop = 1;
	pthread_cond_signal(&o->move_cv);
	pthread_mutex_unlock(&o->mu);
	pthread_join(o->mover, NULL);
	o->mover_running = 0;
}

int outbox_start(outbox **out, kafka *k, const char *source)
{
	outbox *o = calloc(1, sizeof *o);
	int rc;
	*out = NULL;
	if (!o || !(o->source = strdup(source ? source : ""))) {
		free(o);
		log_error(OUTBOX_LOG, "cannot start the outbox relay: out of memory");
		return -1;
	}
	o->k = k;
	pthread_mutex_init(&o->mu, NULL);
	clock_cond_init(&o->cv);
	clock_cond_init(&o->removed);
	clock_cond_init(&o->move_cv);
	/* Without the mover (no thread to be had) the relay moves rows itself. */
	/* pthread_create returns its error; errno is not set. */
	if ((rc = pthread_create(&o->mover, NULL, mover_main, o)) == 0) {
		o->mover_running = 1;
	} else {
		log_warn(OUTBOX_LOG, "no mover thread (%s): the relay moves delivered rows itself",
		         strerror(rc));
	}
	if ((rc = pthread_create(&o->thread, NULL, relay_main, o)) != 0) {
		log_error(OUTBOX_LOG, "cannot start the outbox relay thread: %s", strerror(rc));
		mover_stop(o);
		pthread_cond_destroy(&o->move_cv);
		pthread_cond_destroy(&o->removed);
		pthread_cond_destroy(&o->cv);
		pthread_mutex_destroy(&o->mu);
		free(o->source);
		free(o);
		return -1;
	}
	*out = o;
	return 0;
}

static struct relay *relay_new(evh_plugin *p)
{
	struct relay *r = calloc(1, sizeof *r);
	if (!r)
		return NULL;
	pthread_mutex_init(&r->mu, NULL);
	pthread_mutex_init(&r->move_mu, NULL);
	r->refs = 1;
	r->rewind_to = -1;
	r->last_error_seq = -1;
	r->p = p;
	r->st = p->store;
	/* The first row alone, the rest once it is delivered: a row refused for
	 * good before a restart (or a reload's) is held back with every later
	 * one, as it was while this plugin ran, not sent in a batch they could
	 * pass it in. An empty outbox costs nothing; rows left there, one round
	 * trip. */
	r->probe = PROBE_DUE;
	return r;
}

/* Wake the relay thread (under o->mu) wherever it waits: on cv when idle,
 * or, while events are in flight, in the producer's poll for their delivery
 * reports (up to INFLIGHT_POLL_MS), which the signal does not reach: without
 * the yield a row committed meanwhile waited for the next report (at 500
 * events a second, 4 ms of a 10 ms end-to-end median). The yield takes only
 * the queue's lock, under which librdkafka runs no callback, so it may be
 * called under o->mu. */
static void relay_kick(outbox *o)
{
	pthread_cond_signal(&o->cv);
	kafka_wake_producer(o->k);
}

int outbox_add_plugin(outbox *o, evh_plugin *p)
{
	struct relay *r;
	if (!p->store)
		return 0;
	pthread_mutex_lock(&o->mu);
	for (size_t i = 0; i < o->n; i++)
		if (o->relays[i]->p == p && !o->relays[i]->removing) {
			pthread_mutex_unlock(&o->mu);
			return 0;
		}
	if (o->n == o->cap) {
		size_t cap = o->cap ? o->cap * 2 : 8;
		struct relay **nv = realloc(o->relays, cap * sizeof *nv);
		if (!nv)
			goto oom;
		o->relays = nv;
		o->cap = cap;
	}
	if (!(r = relay_new(p)))
		goto oom;
	o->relays[o->n++] = r;
	o->wake = 1; /* rows left from a previous run go out now */
	relay_kick(o);
	pthread_mutex_unlock(&o->mu);
	store_set_commit_hook(p->store, outbox_wake, o);
	return 0;
oom:
	pthread_mutex_unlock(&o->mu);
	return -1;
}

void outbox_remove_plugin(outbox *o, evh_plugin *p)
{
	struct relay *r = NULL;
	int detached;
	/* Waits for a wake-up under way: none comes after (not under o->mu,
	 * which the wake-up takes). */
	if (p->store)
		store_set_commit_hook(p->store, NULL, NULL);
	pthread_mutex_lock(&o->mu);
	for (size_t i = 0; i < o->n && !r; i++)
		if (o->relays[i]->p == p)
			r = o->relays[i];
	if (!r) {
		pthread_mutex_unlock(&o->mu);
		return;
	}
	/* Our own reference: the relay thread drops the list's when it detaches. */
	pthread_mutex_lock(&r->mu);
	r->refs++;
	pthread_mutex_unlock(&r->mu);
	r->removing = 1;
	r->remove_deadline = clock_mono_ms() + REMOVE_DRAIN_MS;
	o->wake = 1;
	relay_kick(o);
	while (!r->detached && !o->exited)
		pthread_cond_wait(&o->removed, &o->mu);
	detached = r->detached;
	pthread_mutex_unlock(&o->mu);
	if (!detached) /* relay thread gone: outbox_stop releases the list's reference */
		relay_forget_store(r);
	relay_release(r);
}

void outbox_wake(void *arg)
{
	outbox *o = arg; /* alive: its stores' hooks are cleared before it goes */
	pthread_mutex_lock(&o->mu);
	o->wake = 1;
	relay_kick(o);
	pthread_mutex_unlock(&o->mu);
}

int64_t outbox_stop(outbox *o, int timeout_ms)
{
	int64_t left = 0, n;
	if (!o)
		return 0;
	/* The producer goes after the relay, before fini: the plugins' threads
	 * publishing meanwhile must not read it (their events stay on disk).
	 * Those reading it take no lock: waited for under mu. */
	pthread_mutex_lock(&o->mu);
	for (size_t i = 0; i < o->n; i++) {
		api_plugin_host_stopping(o->relays[i]->p);
		api_plugin_host_stopping_wait(o->relays[i]->p);
	}
	o->stop = 1;
	o->stop_deadline = clock_mono_ms() + timeout_ms;
	relay_kick(o);
	pthread_mutex_unlock(&o->mu);
	pthread_join(o->thread, NULL);
	mover_stop(o);
	/* Every store that can call outbox_wake is one of these (a relay taken
	 * out cleared its store's hook first): once each is cleared, which
	 * waits for a wake-up under way, none can reach o. */
	for (size_t i = 0; i < o->n; i++) {
		struct relay *r = o->relays[i];
		if (r->st) {
			store_set_commit_hook(r->st, NULL, NULL);
			/* What the relay's last poll had delivered, recorded: not
			 * counted as left below, nor sent again at the next start. */
			relay_delete_done(r);
			n = store_outbox_pending(r->st);
			if (n > 0 && r->held_at)
				log_warn(OUTBOX_LOG,
				         "%s: %" PRId64 " event(s) not yet delivered, held behind outbox "
				         "row %" PRId64 ", which failed again while stopping (%s); they "
				         "stay in the outbox for the next start",
				         r->p->name, n, r->held_at, r->held_error);
			else if (n > 0)
				log_warn(OUTBOX_LOG,
				         "%s: %" PRId64 " event(s) not yet delivered; they stay "
				         "in the outbox for the next start",
				         r->p->name, n);
			left += n > 0 ? n : 0;
		}
		relay_release(r);
	}
	free(o->relays);
	pthread_cond_destroy(&o->move_cv);
	pthread_cond_destroy(&o->removed);
	pthread_cond_destroy(&o->cv);
	pthread_mutex_destroy(&o->mu);
	free(o->source);
	free(o);
	return left;
}
