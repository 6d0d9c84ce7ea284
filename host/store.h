/* Storage: one SQLite database (WAL) per plugin under state_dir, holding the
 * plugin's own tables plus the host's evh_* tables: evh_migrations,
 * evh_log (every event published, written once), evh_pending (those the
 * relay has yet to see acknowledged; view evh_outbox), evh_delivery (where
 * the broker put the others; view evh_events, the event log, kept for a
 * retention period), evh_inbox (event ids already handled) and
 * evh_dlq_redriven (dead letters sent back, forgotten once gone from
 * their topic).
 * Implements the SDK's transaction/exec/query calls.
 * One connection per plugin, guarded by a mutex held from tx_begin to
 * commit/rollback, so a plugin's transactions run one at a time; read
 * transactions (store_tx_begin_read) run beside them, each on a read-only
 * connection of its own. */
#ifndef EVHOST_STORE_H
#define EVHOST_STORE_H
#include <stdatomic.h>
#include <stdint.h>
#include <evhost/evhost.h>

typedef struct store store;

/* The size a database's WAL file is cut back to once it was checkpointed
 * whole, after it grew past it (a backup's copy held checkpoints back
 * meanwhile): 64 MiB, where a writer checkpoints by itself. */
#define STORE_WAL_KEEP_BYTES (64LL * 1024 * 1024)

/* Open (creating) the database at `path`. `synchronous` is "FULL" or "NORMAL". */
int store_open(store **s, const char *path, const char *synchronous, char *err, size_t errlen);
/* The most bytes one value or row takes (SQLite's SQLITE_LIMIT_LENGTH):
 * evh_store_max_bytes. Any thread. */
size_t store_max_bytes(store *s);
/* 1 while the database's writes fail for want of room (SQLITE_FULL: its
 * file system is full; a quota, EDQUOT; the file size limit, EFBIG; its file
 * system read-only, EROFS), from the failure until a commit
 * succeeds; logged with the file, at most once a minute. */
int store_full(store *s);
/* 1 while a write the file system refused other than for want of room
 * (EIO), or for being read-only (EROFS), was the last word: readiness says
 * not writable. Any thread. */
int store_writes_refused(store *s);
/* 1 once SQLite found the database file damaged (SQLITE_CORRUPT or
 * SQLITE_NOTADB from a statement) since it was opened; said once in the log. */
int store_damaged(store *s);
/* Mark the database damaged, as SQLite `found` it elsewhere (a backup's
 * copy): store_damaged says 1 from now on; said once in the log. */
void store_note_damaged(store *s, const char *found);
/* store_full, after looking again when it is 1: with 4 MiB free on the
 * database's file system, writes are expected to succeed again (readiness,
 * and metrics, which must not wait for a write that nothing sends while they
 * say full). Not while a transaction holds the store: store_full then, the
 * last answer, without waiting for it. */
int store_full_recheck(store *s);
void store_close(store *s);
/* The database's file (for the life of `s`). */
const char *store_path(store *s);
/* Write a consistent copy of the database file `src` (a store's, open or
 * not) to `dest`, a file it creates (mode 0640; one that exists is an
 * error): VACUUM INTO on a read-only connection of its own, so the plugin's
 * transactions go on meanwhile (the copy is the state committed at its
 * start, compacted); then the copy and its directory are synced. Its size
 * in *bytes. It gives up soon after *cancel (NULL: never) becomes nonzero
 * (the daemon stopping). A failure says why in `err` and leaves no file it made;
 * *damaged (NULL: not asked) says whether it was SQLite finding `src` damaged. */
int store_backup(const char *src, const char *dest, const atomic_int *cancel, int64_t *bytes,
                 int *damaged, char *err, size_t errlen);
/* fsync directory `path`, so that a rename or a file made in it lasts. 0 or -1. */
int store_sync_dir(const char *path);
/* Called after every commit that added outbox rows (wakes the relay), on
 * the committing thread, after the store's lock is let go; it must not take
 * that lock (a thread clearing the hook may hold it while it waits for the
 * call). Returns once no call of the hook it replaces is under way
 * (save one this thread is making: it may be called from inside the hook),
 * and that hook is never called again: after (s, NULL, NULL), `ud` may be
 * freed. Any thread; never waits for a transaction. store_close clears it. */
void store_set_commit_hook(store *s, void (*hook)(void *ud), void *ud);
/* How long after a quota or the file size limit last marked the store full
 * readiness (store_check_writable) tries a write to see whether it passes
 * again, no request having come to: STORE_FULL_PROBE_MS unless set (tests
 * set 0). */
void store_set_full_probe_ms(store *s, int ms);
/* Bound on outbox rows; store_outbox_add fails with EVH_EFULL beyond it (0 = none). */
void store_set_outbox_limit(store *s, int64_t max_rows);
/* Is the database writable right now (readiness)? EVH_OK; EVH_ENOMEM when
 * SQLite ran out of memory finding out (that says nothing of the disk);
 * another status when it is not. Never waits for a transaction under way
 * (a slow handler's): then the last check's answer (EVH_OK before any). */
int store_check_writable(store *s);

/* SDK implementations (see evhost.h for their contracts). */
int store_migrate(store *s, const evh_migration *m, size_t n, char *err, size_t errlen);
int store_tx_begin(store *s, evh_tx **tx);
/* A transaction that joins a group commit (see store.c): same contract as
 * store_tx_begin, and its commit returns once it is durable, but it may share
 * that commit (one fsync) with the transactions of other threads. Used for
 * plugins' own transactions (HTTP handlers, their threads); the consumer and
 * the relay use store_tx_begin. */
int store_tx_begin_grouped(store *s, evh_tx **tx);
/* store_tx_begin_grouped for a plugin's evh_tx_begin: the plugin's to end
 * (store_tx_plugin_own), and found by store_tx_left_open on the thread that
 * began it while it is open. */
int store_tx_begin_plugin(store *s, evh_tx **tx);
/* The SDK's evh_tx_begin_read: a snapshot of what was committed when it
 * began (never an open group's writes, nor this thread's open transaction's),
 * on a read-only connection of its own (at most STORE_READERS open; one more
 * waits for one to end, 5 s at most, then EVH_EBUSY), so it neither waits
 * for the writer nor holds it up. evh_query, evh_query_json and the rows
 * calls work on it; a write, evh_exec, evh_publish (store_outbox_add) and a
 * savepoint are refused with EVH_EINVAL (store_plugin_sql_refused says
 * why). store_tx_commit and store_tx_rollback end it, on its thread
 * (store_tx_mine); it is the plugin's to end (store_tx_plugin_own), and
 * found by store_tx_left_open. EVH_ESTATE once store_close began. */
int store_tx_begin_read(store *s, evh_tx **tx);
/* Is `tx` a read transaction (store_tx_begin_read)? */
int store_tx_reads_only(const evh_tx *tx);
int store_tx_plugin_own(const evh_tx *tx);
/* A transaction this thread began through evh_tx_begin or evh_tx_begin_read
 * on `s` and has not ended, or NULL: asked after a plugin's handler returns,
 * which must have ended it (the store stays locked for everyone else until
 * it is, or the read connection taken); again after ending it, as there
 * may be more. */
evh_tx *store_tx_left_open(store *s);
/* Is `tx` (or the transaction of rows `r`) this thread's: begun by it, so
 * that it holds the store's lock? Another thread's use would run SQLite on
 * a connection in use, and a commit there would leave the lock with the
 * first thread for good. Rows detached by their transaction's end count as
 * this thread's (they only say EVH_ESTATE). */
int store_tx_mine(const evh_tx *tx);
/* Around a plugin's SQL on `tx` (evh_exec, evh_query, evh_query_json): on,
 * the statement is judged by the plugin's limits (no transaction control,
 * no ATTACH, no PRAGMA but the schema-reading ones, no writes to evh_*
 * tables); off, a refusal is put in the transaction's error message, and
 * store_plugin_sql_refused says why (else NULL). */
void store_plugin_sql(evh_tx *tx, int on);
const char *store_plugin_sql_refused(const evh_tx *tx);
int store_rows_mine(const evh_rows *r);
/* Group commits so far and the transactions committed in them. */
void store_group_stats(store *s, uint64_t *groups, uint64_t *members);
/* Threads waiting for the lock to join a group, now (for tests). */
int store_group_queued(store *s);
/* Nonzero (once) if a group member this thread rolled back, or committed
 * with an error of its own, since the last call had waited for a group that
 * then failed to commit. Such a member may have read other members' writes,
 * or failed because of them (a UNIQUE conflict), which that failure undid,
 * and store_tx_rollback returns nothing (store_tx_commit its own error): the
 * HTTP layer asks here after each handler and answers 503 instead of what
 * was built on those reads. */
int store_take_lost_reads(void);
/* WAL checkpoints run so far by the store's checkpoint thread, and by a
 * committing writer because that thread had fallen far behind. */
void store_checkpoint_stats(store *s, uint64_t *by_thread, uint64_t *by_writer);
/* The bytes of the database's WAL in use at its last commit: what no
 * checkpoint has let it start again from (a read transaction open since
 * holds it, so does a backup's copy), growing with each commit. */
int64_t store_wal_bytes(store *s);
int store_tx_commit(evh_tx *tx);
void store_tx_rollback(evh_tx *tx);
const char *store_tx_error(evh_tx *tx);
/* The status `tx` failed with (0: none so far, or cleared by a savepoint's
 * rollback). */
int store_tx_failed(evh_tx *tx);
/* The message of the last storage failure on this thread since the last
 * clear ("" if none): what a handler's "storage error" was, for its log line
 * (no values: SQLite's messages name tables, columns and constraints). */
void store_thread_error_clear(void);
const char *store_thread_error(void);
/* How many SQLite calls on this thread have failed for want of room (a
 * full disk, a quota) since it began: compared before and after a piece of
 * work, whether that work met it, before store_full says so (the store is
 * marked full when the failing transaction lets go of it), and whatever an
 * earlier failure left that flag at. */
unsigned store_thread_room_lost(void);
/* One level of savepoint inside `tx` (the consumer handles a batch of events
 * in one transaction, each event inside a savepoint). Failures are tracked
 * per savepoint: store_tx_savepoint_release returns the first error of a
 * call made since it was opened (and leaves it open: roll it back then);
 * store_tx_savepoint_rollback undoes every write since it was opened
 * (outbox rows too) and clears that failure. Cursors opened since are
 * detached by both. EVH_ESTATE: none open (release/rollback) or one already
 * open (savepoint). A failed rollback (the database ended the transaction)
 * leaves `tx` failed: its commit then fails. */
int store_tx_savepoint(evh_tx *tx);
int store_tx_savepoint_release(evh_tx *tx);
int store_tx_savepoint_rollback(evh_tx *tx);
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
int64_t store_outbox_pending(store *s);
/* The outbox's bound (store_set_outbox_limit; 0: none), for /metrics. */
int64_t store_outbox_limit(store *s);
/* When (wall clock, ms since the epoch) outbox rows were last recorded as
 * delivered; the store's open until the first. */
int64_t store_outbox_delivered_ms(store *s);

/* A delivered outbox row and where the broker put it (-1: not known). */
typedef struct outbox_done {
	int64_t seq;
	int32_t partition;
	int64_t offset;
} outbox_done;
/* Record delivered rows: out of evh_pending, into evh_delivery (delivered_at
 * = now), in one transaction. Rows no longer pending are skipped.
 * EVH_EBUSY, nothing recorded, when another transaction (a slow event
 * handler's) holds the database for more than 200 ms: the caller tries
 * again later (one relay records every plugin's deliveries). A failure's
 * reason: store_thread_error. */
int store_outbox_delivered(store *s, const outbox_done *d, size_t n);

/* The event log (evh_events): every delivered event of the plugin, kept
 * `[store] event_retention` after its delivery. Thread-safe; not inside a
 * transaction of the calling thread (EVH_ESTATE). */
int64_t store_events_count(store *s); /* lock-free */
/* Delete events delivered more than retention_ms ago, looking at the `max`
 * oldest delivery records at most, and stopping once the events deleted
 * hold 16 MiB of data (past the first). *more (optional): call again now,
 * the batch was full (rows or bytes). EVH_EBUSY, nothing deleted, when
 * another transaction holds the database for more than 50 ms (so for
 * store_inbox_prune). */
int store_events_prune(store *s, int64_t retention_ms, int max, int64_t *deleted, int *more);
/* For tests: store_events_prune's byte bound (0: the default). */
void store_set_prune_bytes(int64_t n);
/* Delete inbox records handled more than retention_ms ago, looking at the
 * `max` oldest records at most (the inbox is appended to in time order, so
 * no index on handled_at is needed); *more: `max` were. Thread-safe, like
 * the above. */
int store_inbox_prune(store *s, int64_t retention_ms, int max, int64_t *deleted, int *more);
/* Events with key == `key` (NULL: all) and seq > after_seq, oldest first, at
 * most `limit` and, past the first, no more once those given hold
 * STORE_EVENTS_PAGE_BYTES of data (store_event_bytes), as a JSON array of
 * {seq,id,topic,key,type,source,time,traceparent,data,delivered_at,partition,
 * offset}; *json is malloc'd. Only
 * events below the lowest seq still pending are given (Kafka acknowledges
 * out of seq order), so a reader going on after the last seq it was given
 * misses none. Read
 * on a connection of its own, so it never waits for a transaction under way
 * (and sees only committed events); EVH_ESTATE for a store with no file. */
int store_events_json(store *s, const char *key, int64_t after_seq, int limit, char **json);
struct cJSON;
/* The same as a cJSON array (*out, the caller's), each event's data a raw
 * item (its text, never parsed: printed as it is). */
int store_events_list(store *s, const char *key, int64_t after_seq, int limit,
                      struct cJSON **out);
/* A page of the event log holds this much data at most (past its first
 * event): 1000 events of 900 KB made an answer of 895 MB, and the daemon
 * took 2.6 GB to build it. */
#define STORE_EVENTS_PAGE_BYTES ((size_t)16 << 20)
/* The bytes of an event of store_events_list's (its data's JSON text, or
 * its base64), as that bound counts them. */
size_t store_event_bytes(const struct cJSON *ev);

/* Replay: forget inbox records of events at or after a position, so the
 * events the consumer is rewound to are handled again. One transaction. */
typedef struct inbox_range {
	const char *topic;
	int32_t partition;
	int64_t from_offset;
} inbox_range;
int store_inbox_forget(store *s, const inbox_range *r, size_t n, int64_t *deleted);

/* Redrive bookkeeping: was this dead letter already produced back (1/0,
 * <0 error), and record that it was. A dead letter is its position and its
 * Kafka timestamp `time_ms` (-1: none), so that one at a position of a
 * topic deleted and made again is not taken for the one redriven before. */
int store_dlq_redriven(store *s, const char *dlq_topic, int32_t partition, int64_t offset,
                       int64_t time_ms);
int store_dlq_mark_redriven(store *s, const char *dlq_topic, int32_t partition, int64_t offset,
                            int64_t time_ms, const char *to_topic, int32_t to_partition,
                            int64_t to_offset);
/* Several at once (a redrive's chunk), in one transaction: a crash after
 * the broker's acknowledgements leaves them all unrecorded or none, and for
 * a moment rather than a sync per dead letter. A transaction that fails is
 * tried row by row; returns how many could not be recorded. */
typedef struct store_redriven {
	const char *dlq_topic, *to_topic;
	int32_t partition, to_partition; /* to_partition -1: not known */
	int64_t offset, time_ms, to_offset; /* time_ms, to_offset -1: not known */
} store_redriven;
size_t store_dlq_mark_redriven_all(store *s, const store_redriven *rows, size_t n);
/* A dead-letter partition's log start (its low watermark) as a read of the
 * partition saw it. The caller owns `topic`. */
typedef struct dlq_start {
	const char *topic;
	int32_t partition;
	int64_t offset;
} dlq_start;
/* Forget the redrives of dead letters gone from their topic: the records
 * below each partition's log start in `v` (retention or DeleteRecords moved
 * it past them: no dead letter there can match them again). At most `max`
 * rows, in one transaction, waiting STORE_LOCK_WAIT_MS at most for the
 * store (then EVH_EBUSY); *more: some may be left, call again. The caller
 * sees that no record is made between its read of the log starts and this
 * (a topic deleted and made again meanwhile numbers from 0 again). */
int store_dlq_forget_gone(store *s, const dlq_start *v, size_t n, int max, int64_t *deleted,
                          int *more);

/* Inbox, within the handler's transaction. */
/* The inbox check and record: records the event as handled in `tx` and
 * returns 1, or returns 0 if it already was (nothing written); <0 on error.
 * Rolled back with the handler's writes if the handler fails. `time_ms`:
 * the Kafka timestamp of a message whose id is its position, else -1 (a
 * ce_id, or no timestamp). A record of that position id with another time
 * is of another message (a topic deleted and made again starts its offsets
 * at 0 again): replaced, and the event claimed. */
int store_inbox_claim(evh_tx *tx, const char *event_id, const char *topic, int32_t partition,
                      int64_t offset, int64_t time_ms);
/* Take back the claim made in `tx` (EVH_EVENT_KEEP_AND_DEAD_LETTER: the
 * handler's writes commit, the event stays unhandled). EVH_OK or an error. */
int store_inbox_unclaim(evh_tx *tx, const char *event_id);
/* Whether an event id is recorded: 1 yes, 0 no, <0 error (inspection). */
int store_inbox_seen(evh_tx *tx, const char *event_id);
#endif
