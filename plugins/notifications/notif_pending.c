#include "notif_pending.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int notif_pending_init(notif_pending *pd, size_t max)
{
	memset(pd, 0, sizeof *pd);
	pd->max = max ? max : 1;
	pd->v = calloc(pd->max, sizeof *pd->v);
	if (!pd->v)
		return -1;
	if (pthread_mutex_init(&pd->mu, NULL) != 0) {
		free(pd->v);
		pd->v = NULL;
		return -1;
	}
	return 0;
}

void notif_entry_clear(notif_entry *e)
{
	free(e->event_id);
	free(e->recipient);
	free(e->tmpl);
	free(e->last_error);
	memset(e, 0, sizeof *e);
}

void notif_entries_free(notif_entry *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		notif_entry_clear(&v[i]);
	free(v);
}

void notif_pending_destroy(notif_pending *pd)
{
	if (!pd->v)
		return;
	for (size_t i = 0; i < pd->n; i++)
		notif_entry_clear(&pd->v[i]);
	free(pd->v);
	pthread_mutex_destroy(&pd->mu);
	memset(pd, 0, sizeof *pd);
}

int notif_key_cmp(const char *ca, const char *ia, const char *cb, const char *ib)
{
	int c = strcmp(ca, cb);
	return c ? c : strcmp(ia, ib);
}

static notif_entry *find_locked(notif_pending *pd, const char *event_id)
{
	for (size_t i = 0; i < pd->n; i++)
		if (!strcmp(pd->v[i].event_id, event_id))
			return &pd->v[i];
	return NULL;
}

/* Which entry goes first when the table is full: "failed" (its row is
 * written with it; should that row not commit, the redo only meets the
 * same refusal again) and "dead_lettered" (given up at the last attempt,
 * its row written with it; without the entry a redo tries the mail again,
 * as it must), then "sent" (the oldest first: those of committed parts; a
 * part's own are the newest, and must stay until it commits, or its redo
 * mails them again), then the rest ("retrying": the log's only record of
 * them). Those first stay until evicted: a table full of them pushed out
 * the current part's "sent" ones (a last attempt may give up thousands). */
static int evict_rank(const notif_entry *e)
{
	if (!strcmp(e->status, NOTIF_FAILED) || !strcmp(e->status, NOTIF_DEAD_LETTERED))
		return 0;
	return !strcmp(e->status, NOTIF_SENT) ? 1 : 2;
}

static void remove_locked(notif_pending *pd, size_t i)
{
	notif_entry_clear(&pd->v[i]);
	pd->v[i] = pd->v[pd->n - 1];
	memset(&pd->v[pd->n - 1], 0, sizeof pd->v[0]);
	pd->n--;
}

/* Drop one entry to make room: lowest rank, then oldest update. */
static void evict_one_locked(notif_pending *pd)
{
	size_t victim = 0;

	for (size_t i = 1; i < pd->n; i++) {
		int ri = evict_rank(&pd->v[i]), rv = evict_rank(&pd->v[victim]);
		const char *ti = pd->v[i].updated_at, *tv = pd->v[victim].updated_at;
		if (ri < rv || (ri == rv && strcmp(ti, tv) < 0))
			victim = i;
	}
	remove_locked(pd, victim);
}

int notif_pending_forget_retrying(notif_pending *pd, const char *id, int prefix)
{
	size_t len = strlen(id);
	int n = 0;

	pthread_mutex_lock(&pd->mu);
	for (size_t i = pd->n; i-- > 0;) {
		const notif_entry *e = &pd->v[i];
		if (strcmp(e->status, NOTIF_RETRYING) ||
		    (prefix ? strncmp(e->event_id, id, len) : strcmp(e->event_id, id)))
			continue;
		remove_locked(pd, i);
		n++;
	}
	pthread_mutex_unlock(&pd->mu);
	return n;
}

static int dup_or_null(const char *s, char **out)
{
	*out = NULL;
	if (!s)
		return 0;
	*out = strdup(s);
	return *out ? 0 : -1;
}

static void copy_time(char dst[NOTIF_TIME_LEN], const char *src)
{
	snprintf(dst, NOTIF_TIME_LEN, "%s", src);
}

int notif_pending_put(notif_pending *pd, const char *event_id, const char *recipient,
                      const char *tmpl, const char *status, int attempts, const char *last_error,
                      const char *now)
{
	notif_entry fresh, *e;
	int rc = -1;

	memset(&fresh, 0, sizeof fresh);
	if (dup_or_null(event_id, &fresh.event_id) || dup_or_null(recipient, &fresh.recipient) ||
	    dup_or_null(tmpl, &fresh.tmpl) || dup_or_null(last_error, &fresh.last_error))
		goto out;
	snprintf(fresh.status, sizeof fresh.status, "%s", status);
	fresh.attempts = attempts;
	copy_time(fresh.created_at, now);
	copy_time(fresh.updated_at, now);

	pthread_mutex_lock(&pd->mu);
	e = find_locked(pd, event_id);
	if (e) {
		copy_time(fresh.created_at, e->created_at);
		notif_entry_clear(e);
	} else {
		if (pd->n == pd->max)
			evict_one_locked(pd);
		e = &pd->v[pd->n++];
	}
	*e = fresh;
	pthread_mutex_unlock(&pd->mu);
	return 0;
out:
	notif_entry_clear(&fresh);
	return rc;
}

static int entry_copy(const notif_entry *src, notif_entry *dst)
{
	*dst = *src;
	dst->event_id = dst->recipient = dst->tmpl = dst->last_error = NULL;
	if (dup_or_null(src->event_id, &dst->event_id) ||
	    dup_or_null(src->recipient, &dst->recipient) || dup_or_null(src->tmpl, &dst->tmpl) ||
	    dup_or_null(src->last_error, &dst->last_error)) {
		notif_entry_clear(dst);
		return -1;
	}
	return 0;
}

int notif_pending_get(notif_pending *pd, const char *event_id, notif_entry *out)
{
	notif_entry *e;
	int found = 0;

	pthread_mutex_lock(&pd->mu);
	e = find_locked(pd, event_id);
	if (e)
		found = entry_copy(e, out) == 0 ? 1 : -1;
	pthread_mutex_unlock(&pd->mu);
	return found;
}

static int newest_first(const void *a, const void *b)
{
	const notif_entry *x = a, *y = b;
	return notif_key_cmp(y->created_at, y->event_id, x->created_at, x->event_id);
}

static int page_wants(const notif_entry *e, const char *recipient, const char *after_created,
                      const char *after_id)
{
	if (!strcmp(e->status, NOTIF_SENT))
		return 0;
	if (recipient && strcmp(e->recipient, recipient))
		return 0;
	if (after_created && after_id &&
	    notif_key_cmp(e->created_at, e->event_id, after_created, after_id) >= 0)
		return 0;
	return 1;
}

int notif_pending_page(notif_pending *pd, const char *recipient, const char *after_created,
                       const char *after_id, size_t max, notif_entry **out)
{
	notif_entry *v;
	size_t n = 0;

	*out = NULL;
	pthread_mutex_lock(&pd->mu);
	v = calloc(pd->n ? pd->n : 1, sizeof *v);
	if (!v) {
		pthread_mutex_unlock(&pd->mu);
		return -1;
	}
	for (size_t i = 0; i < pd->n; i++) {
		if (!page_wants(&pd->v[i], recipient, after_created, after_id))
			continue;
		if (entry_copy(&pd->v[i], &v[n]) < 0) {
			pthread_mutex_unlock(&pd->mu);
			notif_entries_free(v, n);
			return -1;
		}
		n++;
	}
	pthread_mutex_unlock(&pd->mu);
	qsort(v, n, sizeof *v, newest_first);
	while (n > max)
		notif_entry_clear(&v[--n]);
	*out = v;
	return (int)n;
}
