/* log_retention: a thread of the plugin's own removes the delivery log's
 * rows (notifications_log) and the deleted users (deleted_recipients) older
 * than the retention, as the host's relay prunes a plugin's inbox
 * (outbox.c): at the start, then every PRUNE_EVERY_MS, PRUNE_BATCH rows a
 * transaction, so that none holds the database for long (the consumer's
 * and the routes' transactions wait for it), the next batch at once while
 * batches come back full.
 *
 * What stays however old (the log's rows are also what keeps a mail from
 * going twice: deliver_once skips one whose row is "sent" or "failed"):
 * a row changed within the retention (updated_at: a mail redriven lately),
 * and the settled rows of a broadcast with a mail dead-lettered within the
 * retention, whose redrive must not mail again those it reached. A
 * broadcast's rows are "<broadcast id>:<user id>", and either id may hold a
 * ':': rows are taken for one broadcast's when they agree up to their first
 * ':', which keeps a few more than needed, never fewer. */
#define _GNU_SOURCE /* pthread_setname_np */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../host/clock.h"
#include "notif_plugin.h"
#include "notif_util.h"

#define PRUNE_EVERY_MS 60000
#define PRUNE_BATCH 1000

/* The log's window of this batch: the PRUNE_BATCH rows older than the
 * cutoff after the cursor (created_at, event_id), in the order of
 * notifications_log_page. The first of those a row is looked at in each
 * batch: the rows kept do not hold the ones after them up. */
#define LOG_WINDOW                                                                         \
	"SELECT event_id FROM notifications_log WHERE created_at < ?1"                         \
	" AND (created_at, event_id) > (?2, ?3) ORDER BY created_at, event_id LIMIT ?4"

/* Where the next batch begins: the window's last row, or none (the window
 * reaches the cutoff: this is the round's last batch). */
static const char log_window_end[] =
    "SELECT created_at, event_id FROM notifications_log WHERE created_at < ?1"
    " AND (created_at, event_id) > (?2, ?3) ORDER BY created_at, event_id"
    " LIMIT 1 OFFSET ?4 - 1";

/* The window's rows that are past the retention. The EXISTS finds a
 * broadcast's dead-lettered mail in notifications_log_parked (migration 5),
 * whose expression it repeats word for word so SQLite uses it. */
static const char log_prune[] =
    "DELETE FROM notifications_log AS l WHERE event_id IN (" LOG_WINDOW ")"
    " AND updated_at < ?1"
    " AND NOT (template = 'broadcast' AND status IN ('sent', 'failed') AND EXISTS ("
    "  SELECT 1 FROM notifications_log AS d WHERE d.status = 'dead_lettered'"
    "  AND d.template = 'broadcast'"
    "  AND substr(d.event_id, 1, instr(d.event_id, ':'))"
    "   = substr(l.event_id, 1, instr(l.event_id, ':'))"
    "  AND d.updated_at >= ?1))";

static const char deleted_prune[] =
    "DELETE FROM deleted_recipients WHERE user_id IN (SELECT user_id FROM deleted_recipients"
    " WHERE deleted_at < ?1 ORDER BY deleted_at LIMIT ?2)";

/* Where a round of the log's pruning is: after (created_at, event_id). */
typedef struct log_cursor {
	char created_at[NOTIF_TIME_LEN];
	char *event_id; /* NULL: before the first row */
} log_cursor;

/* Why a batch did not go through, for the round's WARN line; EVH_EBUSY (a
 * long transaction, a broadcast's part, held the database) is no news. */
static int batch_failed(notif_state *st, evh_tx *tx, int rc, const char *what)
{
	const char *e = tx ? evh_tx_error(tx) : NULL;
	char why[512];

	snprintf(why, sizeof why, "%s", e && *e ? e : evh_strerror(rc));
	if (tx)
		evh_tx_rollback(tx);
	if (rc == EVH_EBUSY)
		evh_log(st->p, EVH_LOG_DEBUG, "log_retention: %s: the database is busy; next round",
		        what);
	else
		evh_log(st->p, EVH_LOG_WARN, "log_retention: cannot prune %s (%s); tried again in %d s",
		        what, why, PRUNE_EVERY_MS / 1000);
	return -1;
}

/* The window's last row into `next` (event_id malloc'd; NULL when the
 * window reaches the cutoff). EVH_OK or an evh_status. */
static int window_end(evh_tx *tx, const evh_value *args, log_cursor *next)
{
	evh_rows *rows;
	const char *created, *id;
	int rc;

	next->event_id = NULL;
	if ((rc = evh_query(tx, log_window_end, args, 4, &rows)) != EVH_OK)
		return rc;
	rc = evh_rows_next(rows);
	if (rc == 1) {
		created = evh_rows_text(rows, 0, NULL);
		id = evh_rows_text(rows, 1, NULL);
		snprintf(next->created_at, sizeof next->created_at, "%s", created ? created : "");
		if (!(next->event_id = strdup(id ? id : "")))
			rc = EVH_ENOMEM;
	}
	evh_rows_close(rows);
	return rc < 0 ? rc : EVH_OK;
}

/* One batch of the log after `cur`, which moves to the window's end. 1:
 * more rows wait past it; 0: the round is done; -1: failed (said). */
static int log_batch(notif_state *st, const char *cutoff, log_cursor *cur, int64_t *deleted)
{
	evh_value args[4] = {EVH_TEXT(cutoff), EVH_TEXT(cur->created_at),
	                     EVH_TEXT(cur->event_id ? cur->event_id : ""), EVH_INT(PRUNE_BATCH)};
	log_cursor next;
	evh_tx *tx = NULL;
	int64_t n = 0;
	int rc;

	if ((rc = evh_tx_begin(st->p, &tx)) != EVH_OK)
		return batch_failed(st, NULL, rc, "the delivery log");
	if ((rc = window_end(tx, args, &next)) != EVH_OK ||
	    (rc = evh_exec(tx, log_prune, args, 4, &n)) != EVH_OK) {
		free(next.event_id);
		return batch_failed(st, tx, rc, "the delivery log");
	}
	if ((rc = evh_tx_commit(tx)) != EVH_OK) {
		free(next.event_id);
		return batch_failed(st, NULL, rc, "the delivery log");
	}
	*deleted += n;
	free(cur->event_id);
	*cur = next;
	return cur->event_id != NULL;
}

/* One batch of the deleted users: 1 when it came back full, 0 when done,
 * -1 when it failed (said). */
static int deleted_batch(notif_state *st, const char *cutoff, int64_t *deleted)
{
	evh_value args[2] = {EVH_TEXT(cutoff), EVH_INT(PRUNE_BATCH)};
	evh_tx *tx = NULL;
	int64_t n = 0;
	int rc;

	if ((rc = evh_tx_begin(st->p, &tx)) != EVH_OK)
		return batch_failed(st, NULL, rc, "deleted_recipients");
	if ((rc = evh_exec(tx, deleted_prune, args, 2, &n)) != EVH_OK)
		return batch_failed(st, tx, rc, "deleted_recipients");
	if ((rc = evh_tx_commit(tx)) != EVH_OK)
		return batch_failed(st, NULL, rc, "deleted_recipients");
	*deleted += n;
	return n == PRUNE_BATCH;
}

static int prune_should_stop(notif_state *st)
{
	int stop;

	pthread_mutex_lock(&st->prune_mu);
	stop = st->prune_stop;
	pthread_mutex_unlock(&st->prune_mu);
	return stop || evh_stopping(st->p);
}

/* One round: every row past the retention, unless a stop comes first. */
static void prune_round(notif_state *st)
{
	char cutoff[NOTIF_TIME_LEN];
	log_cursor cur;
	int64_t rows = 0, users = 0;
	int more = 1;

	notif_ago_rfc3339((long)(st->log_retention_ms / 1000), cutoff);
	memset(&cur, 0, sizeof cur);
	while (more > 0 && !prune_should_stop(st))
		more = log_batch(st, cutoff, &cur, &rows);
	free(cur.event_id);
	more = 1;
	while (more > 0 && !prune_should_stop(st))
		more = deleted_batch(st, cutoff, &users);
	if (rows || users)
		evh_log(st->p, EVH_LOG_INFO,
		        "log_retention: %" PRId64 " delivery log row(s) and %" PRId64
		        " deleted user(s) older than %s removed",
		        rows, users, cutoff);
}

static void *prune_main(void *arg)
{
	notif_state *st = arg;
	struct timespec until;

	pthread_setname_np(pthread_self(), "notif-prune"); /* top -H, operations.md "Threads" */
	pthread_mutex_lock(&st->prune_mu);
	while (!st->prune_stop) {
		pthread_mutex_unlock(&st->prune_mu);
		prune_round(st);
		until = clock_after_ms(CLOCK_MONOTONIC, PRUNE_EVERY_MS);
		pthread_mutex_lock(&st->prune_mu);
		while (!st->prune_stop &&
		       pthread_cond_timedwait(&st->prune_cv, &st->prune_mu, &until) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&st->prune_mu);
	return NULL;
}

int notif_prune_start(notif_state *st)
{
	int rc;

	if (st->log_retention_ms <= 0)
		return EVH_OK; /* 0: kept forever */
	if ((rc = clock_cond_init(&st->prune_cv)) != 0)
		goto fail;
	if ((rc = pthread_mutex_init(&st->prune_mu, NULL)) != 0) {
		pthread_cond_destroy(&st->prune_cv);
		goto fail;
	}
	if ((rc = pthread_create(&st->prune_thread, NULL, prune_main, st)) != 0) {
		pthread_mutex_destroy(&st->prune_mu);
		pthread_cond_destroy(&st->prune_cv);
		goto fail;
	}
	st->prune_started = 1;
	return EVH_OK;
fail:
	evh_log(st->p, EVH_LOG_ERROR, "log_retention: cannot start the pruning thread: %s",
	        strerror(rc));
	return rc == ENOMEM || rc == EAGAIN ? EVH_ENOMEM : EVH_ERR;
}

void notif_prune_stop(notif_state *st)
{
	if (!st->prune_started)
		return;
	pthread_mutex_lock(&st->prune_mu);
	st->prune_stop = 1;
	pthread_cond_signal(&st->prune_cv);
	pthread_mutex_unlock(&st->prune_mu);
	pthread_join(st->prune_thread, NULL);
	pthread_mutex_destroy(&st->prune_mu);
	pthread_cond_destroy(&st->prune_cv);
	st->prune_started = 0;
}
