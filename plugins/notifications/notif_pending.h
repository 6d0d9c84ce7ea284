/* In-memory delivery state, keyed by log event id. What happened in an
 * attempt that ends in a retry ("retrying", with its error) is not written
 * to the database (a RETRY rolls the handler's writes back; with
 * KEEP_AND_RETRY the retry, which Kafka keeps, is what must outlive a
 * restart); it lives here, and GET /notifications merges it with the
 * table. Entries
 * that are "sent" or "failed" remember an outcome whose row was not yet
 * committed, so a retry writes the row instead of sending again;
 * "dead_lettered", a mail given up at the last attempt (a retry tries it
 * again). Bounded: when full, the least recently updated entry goes,
 * "failed" and "dead_lettered" ones first, then "sent", then "retrying".
 * SDK-free; thread-safe (the consumer thread writes, HTTP worker threads
 * read). */
#ifndef NOTIF_PENDING_H
#define NOTIF_PENDING_H
#include <pthread.h>
#include <stddef.h>
#include "notif_util.h"

#define NOTIF_SENT "sent"
#define NOTIF_RETRYING "retrying"
#define NOTIF_FAILED "failed"
#define NOTIF_DEAD_LETTERED "dead_lettered" /* the last attempt failed: waits for a redrive */
#define NOTIF_STATUS_LEN 16 /* the longest status, with its NUL, fits */
_Static_assert(sizeof NOTIF_DEAD_LETTERED <= NOTIF_STATUS_LEN, "status buffers too short");

typedef struct notif_entry {
	char *event_id, *recipient, *tmpl;
	char *last_error; /* NULL when none */
	char status[NOTIF_STATUS_LEN];
	int attempts;
	char created_at[NOTIF_TIME_LEN], updated_at[NOTIF_TIME_LEN];
} notif_entry;

typedef struct notif_pending {
	pthread_mutex_t mu;
	notif_entry *v;
	size_t n, max;
} notif_pending;

int notif_pending_init(notif_pending *pd, size_t max);
void notif_pending_destroy(notif_pending *pd);

/* Record one delivery's state. An existing entry keeps its created_at;
 * `now` sets updated_at (and created_at when new). 0, or -1 out of memory. */
int notif_pending_put(notif_pending *pd, const char *event_id, const char *recipient,
                      const char *tmpl, const char *status, int attempts, const char *last_error,
                      const char *now);
/* Forget the "retrying" entry of log event id `id` (with `prefix`, of every
 * id that begins with it): deliveries no attempt will make, their recipient
 * deleted meanwhile, which the log would show retrying for good. Returns
 * how many went. */
int notif_pending_forget_retrying(notif_pending *pd, const char *id, int prefix);
/* A copy of the entry for `event_id`: 1 (free with notif_entry_clear), 0
 * when there is none, or -1 when there is one but no memory for the copy
 * (not "none": a message it says was sent must not be sent again). */
int notif_pending_get(notif_pending *pd, const char *event_id, notif_entry *out);

/* Entries not "sent", for `recipient` (NULL: all), strictly after the
 * cursor key (after_created, after_id) in newest-first order when those
 * are non-NULL; at most `max`, newest first. Returns how many, with *out a
 * malloc'd array (free with notif_entries_free), or -1 out of memory. */
int notif_pending_page(notif_pending *pd, const char *recipient, const char *after_created,
                       const char *after_id, size_t max, notif_entry **out);

void notif_entry_clear(notif_entry *e);
void notif_entries_free(notif_entry *v, size_t n);
/* Order of the log's pages: by created_at, then event_id (byte order, as
 * SQLite's BINARY collation). <0, 0, >0 like strcmp. */
int notif_key_cmp(const char *ca, const char *ia, const char *cb, const char *ib);
#endif
