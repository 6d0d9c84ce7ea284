/* Storage: one SQLite database (WAL) per plugin under state_dir, holding the
 * plugin's own tables plus the host's evh_* tables: evh_migrations,
 * evh_outbox (events waiting for the relay) and evh_inbox (event ids already
 * handled). Implements the SDK's transaction/exec/query calls.
 * One connection per plugin, guarded by a mutex held from tx_begin to
 * commit/rollback, so a plugin's transactions run one at a time. */
#ifndef EVHOST_STORE_H
#define EVHOST_STORE_H
#include <stdint.h>
#include <evhost/evhost.h>

typedef struct store store;

/* Open (creating) the database at `path`. `synchronous` is "FULL" or "NORMAL". */
int store_open(store **s, const char *path, const char *synchronous, char *err, size_t errlen);
void store_close(store *s);
/* Called after every commit that added outbox rows (wakes the relay). */
void store_set_commit_hook(store *s, void (*hook)(void *ud), void *ud);
/* Bound on outbox rows; store_outbox_add fails with EVH_EFULL beyond it (0 = none). */
void store_set_outbox_limit(store *s, int64_t max_rows);
/* Is the database writable right now (readiness)? */
int store_check_writable(store *s);

/* SDK implementations (see evhost.h for their contracts). */
int store_migrate(store *s, const evh_migration *m, size_t n, char *err, size_t errlen);
int store_tx_begin(store *s, evh_tx **tx);
int store_tx_commit(evh_tx *tx);
void store_tx_rollback(evh_tx *tx);
const char *store_tx_error(evh_tx *tx);
int store_exec(evh_tx *tx, const char *sql, const evh_value *args, size_t nargs, int64_t *changes);
int store_query(evh_tx *tx, const char *sql, const evh_value *args, size_t nargs, evh_rows **rows);
int store_rows_next(evh_rows *r);
int store_rows_count(evh_rows *r);
const char *store_rows_name(evh_rows *r, int col);
evh_value_type store_rows_type(evh_rows *r, int col);
int64_t store_rows_int(evh_rows *r, int col);
double store_rows_real(evh_rows *r, int col);
const char *store_rows_text(evh_rows *r, int col, size_t *len);
void store_rows_close(evh_rows *r);
int store_query_json(evh_tx *tx, const char *sql, const evh_value *args, size_t nargs, char **json,
                     size_t *len);
store *store_of_tx(evh_tx *tx);

/* One outbox row: an event waiting to be produced. */
typedef struct outbox_row {
	int64_t seq; /* rowid, increasing */
	char *id, *topic, *key, *type, *source, *time, *traceparent;
	char *data;
	size_t data_len;
} outbox_row;

/* Insert into the outbox within `tx`. EVH_EFULL at the bound. */
int store_outbox_add(evh_tx *tx, const outbox_row *row);
/* Up to `max` rows with seq > after_seq, in seq order. Free with store_outbox_rows_free. */
int store_outbox_fetch(store *s, int64_t after_seq, size_t max, outbox_row **rows, size_t *n);
void store_outbox_rows_free(outbox_row *rows, size_t n);
/* Delete delivered rows (one transaction). */
int store_outbox_delete(store *s, const int64_t *seqs, size_t n);
int64_t store_outbox_pending(store *s);

/* Inbox, within the handler's transaction. */
int store_inbox_seen(evh_tx *tx, const char *event_id);                   /* 1 seen, 0 not, <0 err */
int store_inbox_record(evh_tx *tx, const char *event_id, const char *topic, int32_t partition,
                       int64_t offset);
#endif
