/* The notifications plugin's shared state and the pieces its files share:
 * configuration and templates (notifications.c), event handlers
 * (notif_events.c) and HTTP routes (notif_http.c). Uses the SDK. */
#ifndef NOTIF_PLUGIN_H
#define NOTIF_PLUGIN_H
#include <evhost/evhost.h>
#include <pthread.h>

#include "notif_mail.h"
#include "notif_pending.h"
#include "notif_template.h"
#include "notif_transport.h"

#define NOTIF_BROADCAST_TYPE "NOTIFICATION_BROADCAST"
#define NOTIF_SUBJECT_MAX 998 /* one RFC 5322 line, before encoding */

typedef struct notif_text {
	char *p;
	size_t n;
} notif_text;

typedef struct notif_templates {
	notif_text welcome_subject, welcome_txt, welcome_html;
	notif_text broadcast_txt, broadcast_html;
} notif_templates;

#define NOTIF_DOWN_ERR_LEN 600 /* a mail not tried: "not tried: ..." and the error */

/* A broadcast going on in parts (EVH_EVENT_KEEP_AND_CONTINUE): the event
 * (where it lies, and the attempt) and the recipient its next part begins
 * at. At the last attempt, the mails an earlier part gave up, before that
 * one, are not tried again, by a later part nor by a redo of one whose
 * commit failed (notif_events.c). Once the server was found down, the
 * recipient from which on none is tried in this attempt, and their error:
 * the later parts give those up without waiting on the server again.
 * `keyset`: every recipient up to `after_id` is settled for this attempt,
 * so the next part loads the recipients after it only, not the whole list
 * again (a broadcast's work would grow with the square of its recipients)
 * -- once the delivery log row `mark_id` still says what this part wrote
 * (mark_*): then its commit went through. A redo of the part (its commit
 * failed) walks the list from the first. `seen`, `already`, `parked` and
 * `untried`: the tallies of the recipients up to after_id, for the next
 * part's counts. Kept until the next broadcast's call. `topic` NULL: none.
 * Consumer thread only. */
typedef struct notif_last_parts {
	char *topic, *next_id;
	char *down_from; /* NULL: the server was not found down */
	int32_t partition;
	int64_t offset;
	int attempt;
	char last_err[512]; /* a mail's given up, for the event's error */
	char down_err[NOTIF_DOWN_ERR_LEN];
	int keyset;
	char *after_id, *mark_id;
	char mark_status[NOTIF_STATUS_LEN];
	int mark_attempts;
	char mark_at[NOTIF_TIME_LEN];
	size_t seen;
	int already, parked, untried;
} notif_last_parts;

typedef struct notif_state {
	evh_plugin *p;
	const char *topic_created, *topic_updated, *topic_deleted, *topic_broadcast;
	char from_name[256];
	char from_addr[NOTIF_ADDR_MAX + 1];
	int max_attempts; /* 0: the host's default, which the plugin cannot see */
	int commit_every; /* broadcast_commit_every (0: no bound) */
	int use_smtp;
	char server_address[256]; /* smtp_url's host, for spans (never its user or password) */
	notif_smtp smtp;
	notif_maildir maildir;
	notif_pending pending;
	notif_last_parts last_parts;
	notif_templates tpl;
	int64_t log_retention_ms; /* log_retention; 0: kept forever */
	/* The pruning thread (notif_prune.c), when log_retention is not 0. */
	pthread_t prune_thread;
	pthread_mutex_t prune_mu;
	pthread_cond_t prune_cv;
	int prune_started;
	int prune_stop; /* under prune_mu: fini's word to the thread */
	/* Served on /metrics (ABI 1.9; NULL on an older host, or refused): */
	evh_metric *mails;     /* notifications_mails_total{result}, sent/failed/refused */
	evh_metric *send_time; /* notifications_send_seconds: one SMTP or Maildir delivery */
	evh_metric *maildir_full; /* notifications_maildir_full: 1 after a write found no room */
} notif_state;

/* What one message to one recipient consists of, before rendering. */
typedef struct notif_content {
	const char *tmpl_name; /* "welcome" / "broadcast": the log's template column */
	const notif_text *subject_tpl; /* NULL: `subject` is used as given */
	const char *subject;
	const notif_text *txt, *html;
	const notif_var *vars;
	size_t nvars;
} notif_content;

/* Render, build and send one message: the delivery `key` (its log id)
 * makes its Message-ID (notif_delivery_unique), the same at each attempt. */
notif_send_result notif_deliver(notif_state *st, const notif_content *c, const char *key,
                                const char *to_addr, const char *to_name, char *err,
                                size_t errlen);

/* notif_events.c */
void notif_last_parts_clear(notif_last_parts *lp);
evh_event_result notif_on_user_created(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud);
evh_event_result notif_on_user_updated(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud);
evh_event_result notif_on_user_deleted(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud);
evh_event_result notif_on_broadcast(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud);

/* notif_prune.c: start the thread that keeps the delivery log and the
 * deleted users to log_retention (none when it is 0): EVH_OK, or why not
 * (said in the log). Stop joins it; nothing when it was not started. */
int notif_prune_start(notif_state *st);
void notif_prune_stop(notif_state *st);

/* notif_http.c */
int notif_http_list(evh_request *req, evh_response *resp, void *ud);
int notif_http_broadcast(evh_request *req, evh_response *resp, void *ud);
int notif_http_stream(evh_request *req, evh_response *resp, void *ud);
#endif
