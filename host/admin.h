/* The admin API: host routes under /admin for operators, protected by a
 * bearer token read from [admin] token_file at start (no token_file: the
 * API is disabled and answers 404).
 *
 *   GET  /admin/plugins                       every plugin: state, group,
 *                                             subscriptions, outbox, event log
 *   GET  /admin/plugins/NAME                  one of them
 *   GET  /admin/plugins/NAME/dlq?limit=       its dead letters with their headers
 *   POST /admin/plugins/NAME/dlq/redrive      {"offsets":[...]} (default: all)
 *   POST /admin/plugins/NAME/replay           {"from":"beginning" | RFC 3339 time |
 *                                              {"offsets":{topic:{partition:offset}}},
 *                                              "topics":[...], "keep_inbox": bool}
 *   GET  /admin/events?plugin=&aggregate=&limit=&after=
 *                                             the event log, by aggregate id (key)
 *   POST /admin/backup                        {"keep": N}: every running plugin's
 *                                             database copied to
 *                                             state_dir/backups/TIME/ (never while
 *                                             a reload runs: it waits for it)
 *   POST /admin/reload                        the SIGHUP reload, run by the main
 *                                             thread; answers once it is done:
 *                                             200 applied (with the plugins),
 *                                             409 refused, 202 still running
 *
 * Answers are JSON, errors problem+json. Uses only the SDK request/response
 * calls of http.h, so it runs on HTTP worker threads like any handler. */
#ifndef EVHOST_ADMIN_H
#define EVHOST_ADMIN_H
#include <evhost/evhost.h>
#include "host.h"

/* Read the token (when [admin] token_file is set) into h->admin. Returns 0,
 * or -1 after logging why (unreadable or too short a token: the daemon must
 * not start with an admin API nobody can use, or anybody could). Main
 * thread, before HTTP starts. */
int admin_start(host *h);
/* Free h->admin (after HTTP stopped). */
void admin_stop(host *h);
/* Reload: the new settings' [admin] token (read with the configuration,
 * which refuses an unreadable or short one) applies at once when it
 * changed, or none turns the admin API off. */
void admin_reload_token(host *h, const settings *next);
/* [admin] https: whether the admin API answers over [http] tls_listen too
 * (read per request; a reload may change it). */
int admin_over_https(host *h);
/* Whether `req`, for /admin or below, carries the admin token: 1, or 0
 * after answering 404 (the admin API is off) or 401. Before its body is
 * read: nobody without the token makes the daemon read (and hold) one.
 * HTTP worker threads. */
int admin_authorize(host *h, evh_request *req, evh_response *resp);
/* Answer `req`, for /admin or below, that admin_authorize let through; the
 * caller must have read its body (POST routes take JSON). HTTP worker threads. */
void admin_handle(host *h, evh_request *req, evh_response *resp);
/* Around every host_reload (main thread): tell requests waiting in POST
 * /admin/reload which of them the reload covers and how it went (`rc` from
 * host_reload). admin_reload_begin first waits for a backup under way to
 * end, and backups wait for admin_reload_end: a plugin the reload stops or
 * restarts would be missing from one; it gives up (-1: run no reload, nor
 * admin_reload_end) once a stop is asked meanwhile (h->reload_stop), else
 * returns 0. No-ops before admin_start. */
int admin_reload_begin(host *h);
void admin_reload_end(host *h, int rc);
/* When the newest complete backup under `state_dir`/backups was taken (its
 * name), in ms since the epoch; 0 when there is none. Backups named after
 * `now_ms` (made while the wall clock was ahead: when, is unknown) are not
 * counted. Any thread. */
int64_t admin_backup_newest_ms(const char *state_dir, int64_t now_ms);
#endif
