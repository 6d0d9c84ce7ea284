/* Storage: one SQLite connection per plugin database, in WAL mode (plus one
 * for the relay's reads, and one for checkpoints).
 *
 * Locking: every use of the connection happens with s->mu held. A transaction
 * holds it from store_tx_begin to commit/rollback, so one plugin's
 * transactions run one at a time and the connection can be opened NOMUTEX.
 * The mutex is error-checking: a thread that already holds a transaction and
 * begins another (or records deliveries) gets EVH_ESTATE instead of
 * deadlocking. The relay reads the outbox on its own connection (rdb), without
 * mu; its delivery records go before transactions that have not begun yet
 * (store_lock_first), so a plugin writing without pause cannot hold its events in
 * the outbox until it stops. The relay's writes (delivery records, pruning)
 * wait for mu a bounded time, then give up until later: one relay serves
 * every plugin, and one plugin's long transaction (a slow event handler's)
 * must not hold up the others' events.
 *
 * Failure rule: any call on a transaction that returns an error marks it
 * failed; committing a failed transaction rolls it back and returns the first
 * error. So a plugin that ignores an error (say, EVH_EFULL from publish)
 * cannot commit a state change without the event describing it.
 *
 * Group commit: transactions begun through store_tx_begin_grouped (the
 * SDK's evh_tx_begin and evh_publish outside a handler) share one SQLite
 * transaction, each inside a SAVEPOINT of its own. A member's commit releases
 * its savepoint and then, if other members are queued for the lock, leaves
 * the group open for them and waits; the member that finds nobody queued (or
 * the group full) COMMITs for all, one fsync for the group, and wakes them
 * (when the group, or the one before it, has two members or more, it first
 * yields the CPU once, so that writers runnable but not running can queue
 * and join it).
 * Every member returns only once the group is durable, with the group's
 * result, so "commit returned OK" still means "on disk". A member that
 * rolls back undoes only its savepoint, but still waits when the group held
 * others' writes (it may have read them). Anyone else taking the lock (the
 * mover, the consumer, admin reads) first commits an open group, so no read
 * outside the group ever sees a member's writes before they are durable; the
 * relay's reader connection sees only committed, durable data anyway.
 *
 * Read transactions (store_tx_begin_read, the SDK's evh_tx_begin_read) take
 * no lock: each runs on one of STORE_READERS read-only connections of its
 * own (opened when first needed), in a BEGIN whose first read fixes its WAL
 * snapshot, so it sees only committed, durable data (never an open group's
 * writes) and neither waits for the writer nor holds it up. The plugin-SQL
 * authorizer runs there too, refusing every write with its reason.
 *
 * Checkpoints: SQLite's automatic checkpoint runs inside whichever COMMIT
 * crosses the WAL threshold, so an HTTP request or the consumer would pay
 * for copying pages and syncing the database file. Instead a thread per
 * store, on a connection of its own, runs a PASSIVE checkpoint when the WAL
 * hook reports the threshold crossed; writers are not blocked by it. Should
 * it fall far behind, the committing writer checkpoints as before.
 *
 * Statements are prepared once and kept in a small LRU cache keyed by SQL
 * text. A cached statement checked out by an open cursor is marked busy; a
 * second user of the same SQL meanwhile gets a private, uncached statement. */
#define _GNU_SOURCE /* pthread_mutex_clocklock */
#include "store.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "clock.h"
#include "fileio.h"
#include "json.h"
#include "jsonb.h"
#include "log.h"
#include "toobig.h"

#define STORE_LOG "store"

#define STORE_CACHE_SIZE 64
#define STORE_HOST_STMTS 24
#define STORE_ERR_LEN 512
#define STORE_BUSY_TIMEOUT_MS 5000
/* How long a plugin's own transaction (evh_tx_begin, evh_publish without
 * one) waits for the lock another holds (an event handler's batch runs as
 * long as its handlers do): then EVH_EBUSY, which the HTTP layer answers 503
 * with Retry-After, so a slow handler cannot hold every HTTP worker. */
#define STORE_LOCK_WAIT_MS 5000
/* How long the relay's record of deliveries, and its pruning of the event
 * log and inbox, wait for the lock: then EVH_EBUSY, tried again later. One
 * relay serves every plugin: one plugin's long transaction must not hold
 * up the others' events. */
#define STORE_RECORD_WAIT_MS 200
/* How long a group member waits for its group's end before it looks
 * whether anyone is left to end it (group_wait). */
#define STORE_GROUP_ORPHAN_MS 1000
#define STORE_PRUNE_WAIT_MS 50
#define STORE_NOW_SQL "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
/* Members of one group commit at most: bounds how long a member waits. */
#define STORE_GROUP_MAX 64
/* WAL pages after which the checkpointer thread copies the WAL back into
 * the database (16 MB; SQLite's own default is 1000 pages: a page written
 * by many commits between two checkpoints is copied once, and 4000 took
 * the HTTP write benchmark from about 6900 to 8100 requests/s), and the
 * multiple of it at which a writer stops waiting for that thread and
 * checkpoints itself (a WAL of 64 MB). */
#define STORE_CHECKPOINT_PAGES 4000
#define STORE_CHECKPOINT_INLINE 4
/* Read transactions open at once on one store (each on a connection of its
 * own, opened when first needed); one more waits for one to end, at most
 * STORE_LOCK_WAIT_MS, then EVH_EBUSY as a write transaction's wait. Few:
 * each connection keeps a page cache, and a plugin's reads are short. */
#define STORE_READERS 4
/* After a quota or the file size limit marked the store full, readiness
 * tries a write once none met it for this long (the 503's Retry-After). */
#define STORE_FULL_PROBE_MS 30000
/* Why a read transaction's statement that would write is refused. */
#define READ_ONLY_WHY                                                                        \
	"a read transaction (evh_tx_begin_read) writes nothing: write in one of evh_tx_begin"

typedef struct cached_stmt {
	char *sql; /* NULL: slot empty */
	uint32_t hash;
	sqlite3_stmt *st;
	uint64_t last_used; /* LRU clock value */
	int busy;           /* checked out right now */
	int plugin;         /* prepared as a plugin's SQL (the authorizer judged it) */
} cached_stmt;

/* A statement in use: from the cache (slot != NULL) or private to one use. */
typedef struct stmt_ref {
	sqlite3_stmt *st;
	cached_stmt *slot;
} stmt_ref;

/* A connection, its statement cache, and the state of the authorizer that
 * judges a plugin's SQL on it: the writer's (store.w, used under mu), and
 * each read transaction's (store.readers, used by the thread whose read
 * transaction holds it). */
typedef struct conn {
	sqlite3 *db;
	cached_stmt cache[STORE_CACHE_SIZE];
	uint64_t clock;
	/* A plugin's SQL is being prepared (store_plugin_sql): plugin_sql_auth
	 * refuses what is the host's, and says why in auth_why. */
	int plugin_sql;
	int read_only; /* a read transaction's: plugin_sql_auth refuses any write too */
	char auth_why[160];
} conn;

/* A read transaction's connection (store_tx_begin_read): opened read-only
 * on first use, kept until store_close. */
typedef struct reader {
	conn c;
	evh_tx *tx; /* the read transaction using it; NULL: free (under read_mu) */
} reader;

struct store {
	conn w; /* the writer: every use under mu */
	pthread_mutex_t mu;
	/* The transaction a plugin began (evh_tx_begin) and has not ended; under
	 * mu, which its thread holds while it is open. */
	evh_tx *plugin_tx;
	/* The host's own hot statements (host_run): keyed by the address of
	 * their string literal, so finding one is a pointer comparison, not a
	 * hash and a strcmp of the SQL as in `cache` (which the plugins' SQL,
	 * in buffers of theirs, needs). */
	cached_stmt host[STORE_HOST_STMTS];
	/* Committed outbox rows; atomic so metrics/readiness never wait for a tx. */
	_Atomic int64_t pending;
	_Atomic int64_t events; /* delivered events in the log (evh_delivery), likewise */
	_Atomic int64_t delivered_ms; /* wall clock: rows last left the outbox, or the open */
	/* 0 = unbounded. Set under the lock; atomic for /metrics, which reads
	 * it without (store_outbox_limit). */
	_Atomic int64_t outbox_limit;
	log_every outbox_full_said; /* publishes refused at outbox_limit: said once a minute */
	int hook_due; /* outbox rows became visible: call the hook at unlock (under mu) */
	/* The commit hook (store_set_commit_hook), under hook_mu, not mu: it is
	 * set without waiting for a transaction, and runs after mu is let go.
	 * hook_calls: calls under way (counted before mu is let go); hook_cv is
	 * broadcast when they end. hook_parked: those of them whose thread waits
	 * in store_set_commit_hook (it set the hook from inside the hook: not
	 * waited for, by itself or another such thread). Order: mu, then
	 * hook_mu; the hook is called under neither. */
	pthread_mutex_t hook_mu;
	pthread_cond_t hook_cv;
	void (*commit_hook)(void *ud);
	void *commit_hook_ud;
	int hook_calls, hook_parked;
	int sync_full; /* synchronous = FULL (else NORMAL) */
	int sync_lazy; /* lazy_sync could not set FULL again: NORMAL is in force (under mu) */
	_Atomic int full;       /* the last write failed for want of room (store_full) */
	int64_t full_logged_ms; /* when full_note last said so; 0: not since full_clear */
	int full_quota;         /* ...a quota's (EDQUOT) or a size limit's (EFBIG), under mu */
	int64_t full_ms;        /* when a want of room last marked it full (mono), under mu */
	int full_probe_ms;      /* store_set_full_probe_ms: readiness's write, that long after */
	_Atomic int damaged;    /* SQLite found the file damaged since the open (store_damaged) */
	_Atomic int writable;   /* the last store_check_writable's answer (EVH_OK at first) */
	/* A write failed with an I/O error, not for want of room (a file system
	 * gone read-only, EIO): readiness says not writable until a commit goes
	 * through (store_check_writable tries one). io_logged_ms as full's. */
	_Atomic int io_failed;
	int64_t io_logged_ms;
	/* Group commit (see the top of the file); all under mu but gqueued. */
	/* Members wait for their group's end on gcv under gmu, not under mu:
	 * woken, they need not take the store's lock again (the next group's
	 * member holds it while it runs its statements). */
	pthread_mutex_t gmu;
	pthread_cond_t gcv;      /* broadcast when a group ends */
	int gopen;               /* a group's transaction is open */
	int gfailed;             /* a member's rollback failed: it must not commit */
	int gmembers;            /* members committed into it so far */
	int glast;               /* members of the group committed before it */
	int64_t goutbox;         /* their outbox rows, pending once it commits */
	evh_tx *gwait;           /* members waiting for it to end */
	_Atomic int gqueued;     /* threads on their way into a group */
	_Atomic uint64_t groups, grouped; /* groups committed, members in them */
	/* The relay's delivery records go first (store_lock_first): they hold mu
	 * briefly and keep the outbox draining. A transaction about to begin
	 * waits on first_cv while one of them waits for mu: mutexes are not
	 * fair, and a plugin committing transactions back to back takes mu
	 * again before the woken mover runs, starving it while it writes. */
	_Atomic int first_waiting;
	pthread_mutex_t first_mu;
	pthread_cond_t first_cv;
	_Atomic uintptr_t holder; /* the thread holding mu (its thread_token), or 0 */
	/* The relay's reads of the outbox, on a connection of their own under
	 * rmu, not mu: WAL readers do not wait for the writer, so reading 500
	 * rows does not hold up the plugin's transactions, and they see only
	 * what is committed (and, with synchronous = FULL, on disk). */
	sqlite3 *rdb;
	sqlite3_stmt *rfetch;
	pthread_mutex_t rmu;
	/* The checkpointer (see the top of the file). */
	sqlite3 *ckpt_db;
	pthread_t ckpt_thread;
	int ckpt_running;
	pthread_mutex_t ckpt_mu;
	pthread_cond_t ckpt_cv;
	int ckpt_due, ckpt_stop;
	_Atomic uint64_t ckpt_thread_runs, ckpt_inline_runs;
	/* The WAL's length at the last commit, in frames (wal_hook), and the
	 * database's page size: evhost_store_wal_bytes. */
	_Atomic int64_t wal_frames, page_size;
	/* Read transactions (store_tx_begin_read), each on a connection of
	 * readers of its own, without mu: WAL readers do not wait for the
	 * writer, nor it for them. read_cv is signalled when one ends. Under
	 * read_mu. */
	reader readers[STORE_READERS];
	int read_open;    /* read transactions open */
	int read_closing; /* store_close began: none begins */
	pthread_mutex_t read_mu;
	pthread_cond_t read_cv;
};

struct evh_tx {
	store *s;
	int64_t outbox_added; /* rows this tx added; pending only once it commits */
	int failed;           /* first error status, 0 while healthy */
	evh_rows *open_rows;  /* cursors to detach at commit/rollback */
	int in_savepoint;     /* store_tx_savepoint open (one level) */
	int64_t sp_outbox_added; /* outbox_added when it was opened */
	int grouped;             /* a member of a group commit */
	int plugin_own;          /* begun by the plugin (evh_tx_begin): its to end */
	int gdone, gstatus;      /* its group ended, with this status */
	evh_tx *gnext;           /* in s->gwait */
	reader *rd;              /* a read transaction's connection; NULL: the writer's */
	uintptr_t thread;        /* a read transaction's: the thread_token of its thread */
	char err[STORE_ERR_LEN];
};

/* The connection `tx` runs its statements on. */
static conn *tx_conn(const evh_tx *tx) { return tx->rd ? &tx->rd->c : &tx->s->w; }

typedef enum rows_state { ROWS_READY, ROWS_ON_ROW, ROWS_DONE, ROWS_DETACHED } rows_state;

struct evh_rows {
	evh_tx *tx;
	stmt_ref ref;
	rows_state state;
	evh_rows *next;
	int plugin; /* a plugin's query: judged again should SQLite prepare it again */
};

/* ------------------------------------------------------------ helpers */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Free space that ends a full store's "full" for readiness (store_full_recheck):
 * room for a few group commits' WAL frames. */
#define STORE_ROOM_BYTES ((int64_t)4 << 20)

/* Why a write found no room (room_lost), set on the thread whose SQLite
 * call failed that way until full_note hands it to the store. */
/* ROOM_READONLY: a file system gone read-only (EROFS), taken as full (the
 * writes wait, answer 503) and as not writable (io_note) alike. */
enum { ROOM_OK, ROOM_DISK, ROOM_QUOTA, ROOM_LIMIT, ROOM_READONLY };
static _Thread_local int full_seen;
static _Thread_local unsigned room_lost_count; /* store_thread_room_lost */
/* SQLITE_CORRUPT or SQLITE_NOTADB, seen on this thread (sqlite_fail) until
 * full_note hands it to the store; 0: none. */
static _Thread_local int damage_seen;
/* A write that failed with an I/O error other than a want of room, seen on
 * this thread (sqlite_fail) until full_note hands it to the store: its
 * error, with the OS's reason ("" none). */
static _Thread_local char io_seen[STORE_ERR_LEN - 64];

/* Where every message about a damaged database sends the admin. */
#define DAMAGE_DOC "(docs/operations.md \"Backup and restore\")"

/* Did SQLite find the file damaged, or not a database at all? */
static int is_damage(int rc)
{
	return (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB;
}

static int status_of(int rc)
{
	if (rc == SQLITE_IOERR_NOMEM) /* out of memory in the VFS: not the disk */
		return EVH_ENOMEM;
	switch (rc & 0xff) {
	case SQLITE_CONSTRAINT:
		return EVH_ECONSTRAINT;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return EVH_EBUSY;
	case SQLITE_NOMEM:
		return EVH_ENOMEM;
	case SQLITE_TOOBIG:
		/* A value past SQLite's length limit: for a request that stores
		 * it, too large a request (toobig.h). */
		toobig_note(TOOBIG_STORED);
		return EVH_ETOOBIG;
	default:
		return EVH_ESTORE;
	}
}

/* The errno of the last failed system call on db's WAL (0: none known).
 * SQLite keeps it with the file; a writer in WAL mode writes and syncs only
 * the WAL, which the pager hands out as its journal. */
static int wal_errno(sqlite3 *db)
{
	sqlite3_file *wal = NULL;
	int e = 0;
	if (sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal) != SQLITE_OK ||
	    !wal || !wal->pMethods ||
	    wal->pMethods->xFileControl(wal, SQLITE_FCNTL_LAST_ERRNO, &e) != SQLITE_OK)
		return 0;
	return e;
}

/* Whether db's failed call (rc) was a want of room: ROOM_QUOTA, ROOM_LIMIT
 * (EFBIG: a write past the process's file size limit), ROOM_DISK or ROOM_OK.
 * SQLite says SQLITE_FULL only for ENOSPC from write(); a disk quota
 * (EDQUOT), EFBIG, or ENOSPC from an fsync, comes back as an I/O error. */
static int room_lost(sqlite3 *db, int rc)
{
	int e;
	if ((rc & 0xff) == SQLITE_FULL)
		return ROOM_DISK;
	if (rc != SQLITE_IOERR_WRITE && rc != SQLITE_IOERR_FSYNC && rc != SQLITE_IOERR_TRUNCATE)
		return ROOM_OK;
	e = wal_errno(db);
	return e == EDQUOT   ? ROOM_QUOTA
	       : e == EFBIG  ? ROOM_LIMIT
	       : e == ENOSPC ? ROOM_DISK
	       : e == EROFS  ? ROOM_READONLY
	                     : ROOM_OK;
}

/* Whether a failed call (rc) was a write the file system refused, other than
 * for want of room: a read-only file system (EROFS), a failing disk (EIO). */
static int write_refused(int rc)
{
	return rc == SQLITE_IOERR_WRITE || rc == SQLITE_IOERR_FSYNC ||
	       rc == SQLITE_IOERR_TRUNCATE || rc == SQLITE_IOERR_DIR_FSYNC ||
	       (rc & 0xff) == SQLITE_READONLY;
}

/* SQLite's message on `db` (or of `rc` without one), with the OS's reason
 * when it has one, into buf: "unable to open database file" says nothing of
 * a descriptor limit reached (EMFILE), a permission or a missing directory. */
static const char *db_errmsg(sqlite3 *db, int rc, char *buf, size_t size)
{
	int e = db ? sqlite3_system_errno(db) : 0;
	int code = (db ? sqlite3_extended_errcode(db) : rc) & 0xff;
	if (e && (code == SQLITE_CANTOPEN || code == SQLITE_IOERR))
		snprintf(buf, size, "%s (%s)", sqlite3_errmsg(db), strerror(e));
	else
		snprintf(buf, size, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	return buf;
}

/* Report a failed SQLite call: its message into err (with the reason when
 * SQLite's says only "disk I/O error"), its status back. Every statement
 * goes through here, so a want of room is noted here (full_seen), and
 * damage SQLite found in the file (damage_seen). */
static int sqlite_fail(sqlite3 *db, int rc, char *err, size_t errlen)
{
	/* A read transaction's connection (read-only) writes nothing of the
	 * store's: a want of room or a refused write it meets (a sort's
	 * temporary file) says nothing of the store's writes, and must not
	 * mark it (nor, through this thread's notes, another store) full or
	 * not writable. Damage it finds is the store's. */
	int ro = db && sqlite3_db_readonly(db, "main") == 1;
	int room = ro ? ROOM_OK : room_lost(db, rc), e;
	if (room) {
		full_seen = room;
		room_lost_count++;
	}
	if (is_damage(rc))
		damage_seen = rc & 0xff;
	if (room && (rc & 0xff) == SQLITE_IOERR)
		set_err(err, errlen, "%s (%s)", sqlite3_errmsg(db),
		        room == ROOM_QUOTA      ? "disk quota exceeded"
		        : room == ROOM_LIMIT    ? "file too large: past the file size limit"
		        : room == ROOM_READONLY ? strerror(EROFS)
		                                : "no space left on device");
	else if (((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_CANTOPEN) &&
	         rc != SQLITE_IOERR_NOMEM && ((e = sqlite3_system_errno(db)) || (e = wal_errno(db))))
		/* "disk I/O error" alone says nothing: EROFS, EIO, ...; nor
		 * "unable to open database file": EMFILE, EACCES, ... */
		set_err(err, errlen, "%s (%s)", sqlite3_errmsg(db), strerror(e));
	else
		set_err(err, errlen, "%s", sqlite3_errmsg(db));
	if (!ro && (!room || room == ROOM_READONLY) && write_refused(rc))
		snprintf(io_seen, sizeof io_seen, "%s", err && errlen ? err : sqlite3_errmsg(db));
	return status_of(rc);
}

/* sqlite_fail for a statement's step. A statement that only reads, and
 * failed as too big, read a value past SQLite's length limit (stored under
 * a higher one, or made by the query): the service's failure, not a
 * request too large (toobig.h). */
static int step_fail(sqlite3 *db, sqlite3_stmt *st, int rc, char *err, size_t errlen)
{
	int status = sqlite_fail(db, rc, err, errlen);
	if (status == EVH_ETOOBIG && sqlite3_stmt_readonly(st))
		toobig_note(TOOBIG_READ);
	return status;
}

static void rollback_if_open(sqlite3 *db);

/* Who holds mu: the address of a thread-local, unique per live thread. */
static _Thread_local char thread_token;

/* The last storage failure on this thread, for the line that reports a
 * handler's failure (the plugin may have rolled its transaction back, and
 * its message with it, before returning). */
static _Thread_local char thread_error[STORE_ERR_LEN];

/* What locking mu gave (`e`, an errno value) as a status; the holder noted
 * when it is this thread's now. A store left at synchronous = NORMAL by a
 * lazy_sync that could not undo itself is set to FULL first: nothing is
 * written under the lock until it is (EVH_ENOMEM, the lock let go), or a
 * commit would report done what a power cut could still take. */
static int lock_taken(store *s, int e)
{
	if (e == EDEADLK)
		return EVH_ESTATE; /* this thread already holds a transaction */
	if (e)
		return EVH_ERR;
	if (s->sync_lazy) {
		/* The relay's transaction a failed ROLLBACK left open (memory short
		 * for both): SQLite sets no safety level inside one, and nothing
		 * else would end it (begin_immediate does, after this). No group is
		 * open: every lock taker since the relay's came through here. */
		if (!s->gopen)
			rollback_if_open(s->w.db);
		if (sqlite3_exec(s->w.db, "PRAGMA synchronous=FULL", NULL, NULL, NULL) != SQLITE_OK) {
			snprintf(thread_error, sizeof thread_error,
			         "%s: out of memory setting synchronous = FULL again",
			         sqlite3_db_filename(s->w.db, "main"));
			pthread_mutex_unlock(&s->mu);
			return EVH_ENOMEM;
		}
		s->sync_lazy = 0;
	}
	atomic_store(&s->holder, (uintptr_t)&thread_token);
	return EVH_OK;
}

static int lock_raw(store *s) { return lock_taken(s, pthread_mutex_lock(&s->mu)); }

#if defined(__SANITIZE_THREAD__)
#define STORE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define STORE_TSAN 1
#endif
#endif

/* Longest wait of mutex_lock_until's on one wall-clock deadline (TSan builds). */
#define LOCK_SLICE_MS 100

/* pthread_mutex_lock, giving up at `until_ms` (clock_mono_ms): ETIMEDOUT
 * then, else what locking returned. On the monotonic clock, so a step of the
 * wall clock neither stretches nor cuts the wait. ThreadSanitizer does not
 * intercept pthread_mutex_clocklock (it would miss the lock, and report
 * races that are not): its builds wait in slices of at most LOCK_SLICE_MS on
 * pthread_mutex_timedlock's wall clock, each to a deadline computed afresh,
 * where a step during a slice stretches that slice by the step. */
static int mutex_lock_until(pthread_mutex_t *mu, int64_t until_ms)
{
#ifndef STORE_TSAN
	struct timespec t = {.tv_sec = (time_t)(until_ms / 1000),
	                     .tv_nsec = (long)(until_ms % 1000) * 1000000L};
	return pthread_mutex_clocklock(mu, CLOCK_MONOTONIC, &t);
#else
	int e = pthread_mutex_trylock(mu);
	while (e == EBUSY) {
		int64_t left = until_ms - clock_mono_ms();
		struct timespec t;
		if (left <= 0)
			return ETIMEDOUT;
		t = clock_after_ms(CLOCK_REALTIME, left < LOCK_SLICE_MS ? left : LOCK_SLICE_MS);
		e = pthread_mutex_timedlock(mu, &t);
		if (e == ETIMEDOUT)
			e = EBUSY;
	}
	return e;
#endif
}

/* lock_raw without waiting: EVH_EBUSY when another thread (or this one)
 * holds the lock. */
static int lock_try(store *s)
{
	int e = pthread_mutex_trylock(&s->mu);
	return e == EBUSY ? EVH_EBUSY : lock_taken(s, e);
}

static void unlock_raw(store *s)
{
	atomic_store(&s->holder, 0);
	pthread_mutex_unlock(&s->mu);
}

/* Before a transaction takes the lock: let the relay's waiting call go
 * first. Not when this thread holds the lock already (lock_raw reports
 * that; waiting here would deadlock). With `until_ms` >= 0 (clock_mono_ms),
 * at most until then: -1 when it passed first. */
static int yield_first(store *s, int64_t until_ms)
{
	int rc = 0;
	struct timespec until;
	if (!atomic_load(&s->first_waiting) ||
	    atomic_load(&s->holder) == (uintptr_t)&thread_token)
		return 0;
	if (until_ms >= 0)
		until = clock_after_ms(CLOCK_MONOTONIC, until_ms - clock_mono_ms());
	pthread_mutex_lock(&s->first_mu);
	while (!rc && atomic_load(&s->first_waiting))
		if (until_ms < 0)
			pthread_cond_wait(&s->first_cv, &s->first_mu);
		else if (pthread_cond_timedwait(&s->first_cv, &s->first_mu, &until) == ETIMEDOUT)
			rc = -1;
	pthread_mutex_unlock(&s->first_mu);
	return rc;
}

static void group_commit_locked(store *s);
static void store_unlock(store *s);

/* The lock just taken (status EVH_OK) by anything but a group member: an
 * open group is committed first, so what follows never sees (or mixes with)
 * a member's writes; then a transaction a failed ROLLBACK left open (the
 * group's, or another's: rollback_if_open) is ended, else a statement run
 * next in autocommit (a redrive's mark) went into it, was reported done,
 * and was rolled back with it by the next BEGIN. EVH_ENOMEM, unlocked,
 * when it cannot be. */
static int lock_settled(store *s, int status)
{
	if (status)
		return status;
	if (s->gopen)
		group_commit_locked(s);
	if (!sqlite3_get_autocommit(s->w.db))
		rollback_if_open(s->w.db);
	if (sqlite3_get_autocommit(s->w.db))
		return EVH_OK;
	snprintf(thread_error, sizeof thread_error,
	         "%s: out of memory ending a transaction left open",
	         sqlite3_db_filename(s->w.db, "main"));
	store_unlock(s);
	return EVH_ENOMEM;
}

/* The lock for anything but a group member (lock_settled). */
static int store_lock(store *s) { return lock_settled(s, lock_raw(s)); }

/* store_lock for the relay's delivery records, waiting at most `ms`
 * (then EVH_EBUSY): transactions about to begin wait until it has the lock
 * (see first_waiting). Bounded, because one mover records every plugin's
 * deliveries: a plugin's long transaction (a slow event handler's) must
 * not hold up the others'. */
static int store_lock_first(store *s, int ms)
{
	int status, e;
	atomic_fetch_add(&s->first_waiting, 1);
	e = mutex_lock_until(&s->mu, clock_mono_ms() + ms);
	status = e == ETIMEDOUT ? EVH_EBUSY : lock_taken(s, e);
	if (atomic_fetch_sub(&s->first_waiting, 1) == 1) {
		pthread_mutex_lock(&s->first_mu);
		pthread_cond_broadcast(&s->first_cv);
		pthread_mutex_unlock(&s->first_mu);
	}
	return lock_settled(s, status);
}

void store_note_damaged(store *s, const char *found)
{
	if (!s || atomic_exchange(&s->damaged, 1))
		return;
	log_error("store", "%s: SQLite finds the database damaged (%s): what it cannot read "
	                   "fails (HTTP 500, events retried, then dead-lettered) while the rest is "
	                   "served; stop the daemon and restore the file from a backup " DAMAGE_DOC
	                   "; said once",
	          sqlite3_db_filename(s->w.db, "main"), found);
}

/* A failed step on a reading connection of its own (the relay's, the
 * event log's): its status, and damage it found marks the store as the
 * writer's statements do (sqlite_fail), or an outbox stuck on a damaged
 * page said nothing but "will retry". */
static int reader_status(store *s, int rc)
{
	if (is_damage(rc))
		store_note_damaged(s, sqlite3_errstr(rc));
	return status_of(rc);
}

/* Damage SQLite found on this thread marks the store damaged (under mu). */
static void damage_note(store *s)
{
	int code = damage_seen;
	damage_seen = 0;
	if (code)
		store_note_damaged(s, sqlite3_errstr(code));
}

int store_damaged(store *s) { return s ? atomic_load(&s->damaged) : 0; }

/* A write this thread saw refused (sqlite_fail's io_seen) marks the store
 * not writable (under mu): said once a minute at most, with the file and
 * the OS's reason, until a commit goes through (io_clear). */
static void io_note(store *s)
{
	if (!io_seen[0])
		return;
	atomic_store(&s->io_failed, 1);
	if (log_due(&s->io_logged_ms, clock_mono_ms(), 60000))
		log_error("store", "%s: cannot write: %s: writes fail%s, and readiness says "
		                   "storage not writable, until a write goes through (at most one "
		                   "such line a minute)",
		          sqlite3_db_filename(s->w.db, "main"), io_seen,
		          full_seen == ROOM_READONLY ? " (HTTP 503, events wait unhandled)" : "");
	io_seen[0] = '\0';
}

/* A commit went through (under mu): the writes refused before pass again. */
static void io_clear(store *s)
{
	if (!atomic_exchange(&s->io_failed, 0))
		return;
	if (s->io_logged_ms)
		log_info("store", "%s: writes go through again",
		         sqlite3_db_filename(s->w.db, "main"));
	s->io_logged_ms = 0;
}

/* What this thread's failed calls found, handed to the store (under mu):
 * damage (damage_note), and a want of room, which marks the store full:
 * said once a minute at most, with the file, until a commit succeeds again. */
static void full_note(store *s)
{
	int64_t now;
	int seen = full_seen,
	    quota = seen == ROOM_QUOTA || seen == ROOM_LIMIT || seen == ROOM_READONLY;
	damage_note(s);
	io_note(s);
	if (!full_seen)
		return;
	full_seen = ROOM_OK;
	atomic_store(&s->full, 1);
	s->full_quota = quota;
	now = clock_mono_ms();
	s->full_ms = now;
	/* Read-only: said by io_note, and ended with its "go through again". */
	if (seen == ROOM_READONLY || !log_due(&s->full_logged_ms, now, 60000))
		return;
	if (seen == ROOM_LIMIT)
		log_error("store", "%s: file too large (past the daemon's file size limit, "
		                   "LimitFSIZE= or ulimit -f): writes fail (HTTP 503, events wait "
		                   "unhandled) until a write goes through (a checkpoint makes room "
		                   "in the WAL) or the limit is raised (at most one such line a "
		                   "minute)",
		          sqlite3_db_filename(s->w.db, "main"));
	else if (quota)
		log_error("store", "%s: disk quota exceeded: writes fail (HTTP 503, events wait "
		                   "unhandled) until its owner's quota has room (at most one such "
		                   "line a minute)",
		          sqlite3_db_filename(s->w.db, "main"));
	else
		log_error("store", "%s: database or disk is full: writes fail (HTTP 503, events "
		                   "wait unhandled) until its file system has room (at most one "
		                   "such line a minute)",
		          sqlite3_db_filename(s->w.db, "main"));
}

/* Room again (under mu): `why`, e.g. a commit went through. */
static void full_clear(store *s, const char *why)
{
	if (!atomic_load(&s->full))
		return;
	atomic_store(&s->full, 0);
	if (s->full_logged_ms)
		log_info("store", "%s: %s", sqlite3_db_filename(s->w.db, "main"), why);
	s->full_logged_ms = 0;
}

int store_full(store *s) { return s ? atomic_load(&s->full) : 0; }

int store_writes_refused(store *s) { return s ? atomic_load(&s->io_failed) : 0; }

unsigned store_thread_room_lost(void) { return room_lost_count; }

/* The stores whose commit hook this thread is calling, innermost first (on
 * its stack): store_set_commit_hook called from inside a hook does not wait
 * for that call to end, its own. */
typedef struct hook_frame {
	store *s;
	struct hook_frame *up;
} hook_frame;
static _Thread_local hook_frame *hook_frames;

/* Unlock, then wake the relay if a commit made outbox rows visible (outside
 * the lock: the hook takes the outbox's). The call is counted before the
 * lock is let go, so that store_set_commit_hook, once it returns, has waited
 * for every call of the hook it replaced that a commit made. */
static void store_unlock(store *s)
{
	void (*hook)(void *) = NULL;
	void *ud = NULL;
	full_note(s);
	if (s->hook_due) {
		s->hook_due = 0;
		pthread_mutex_lock(&s->hook_mu);
		if ((hook = s->commit_hook)) {
			ud = s->commit_hook_ud;
			s->hook_calls++;
		}
		pthread_mutex_unlock(&s->hook_mu);
	}
	unlock_raw(s);
	if (hook) {
		hook_frame frame = {s, hook_frames};
		hook_frames = &frame;
		hook(ud);
		hook_frames = frame.up;
		pthread_mutex_lock(&s->hook_mu);
		if (--s->hook_calls <= s->hook_parked)
			pthread_cond_broadcast(&s->hook_cv);
		pthread_mutex_unlock(&s->hook_mu);
	}
}

/* Bytes free to unprivileged writers on the file system of `path`, or -1. */
static int64_t free_bytes(const char *path)
{
	struct statvfs v;
	if (statvfs(path, &v) != 0)
		return -1;
	return (int64_t)((uint64_t)v.f_bavail * v.f_frsize);
}

int store_full_recheck(store *s)
{
	/* Readiness and metrics ask: not waiting for a transaction under way
	 * (a handler's batch may take seconds; /readyz holds the plugins' lock
	 * meanwhile). The last answer stands until the next look. */
	if (!store_full(s) || lock_try(s))
		return store_full(s);
	if (s->gopen)
		group_commit_locked(s);
	/* Free blocks say nothing of a quota: that "full" ends with a commit. */
	if (!s->full_quota &&
	    free_bytes(sqlite3_db_filename(s->w.db, "main")) >= STORE_ROOM_BYTES)
		full_clear(s, "its file system has room again");
	store_unlock(s);
	return store_full(s);
}

/* A database opened with less than STORE_ROOM_BYTES free beside it starts
 * out full (readiness, metrics) until a write goes through or room is made:
 * a restart on a full disk must not look ready until its first write fails. */
static void full_at_open(store *s, const char *path)
{
	int64_t avail = free_bytes(path);
	if (avail < 0 || avail >= STORE_ROOM_BYTES)
		return;
	atomic_store(&s->full, 1);
	s->full_logged_ms = clock_mono_ms();
	log_warn("store", "%s: only %" PRId64 " KiB free on its file system: writes may fail "
	                  "for want of room (readiness says storage full until there is room)",
	         path, avail / 1024);
}

/* Run fixed SQL with no binds and no result (BEGIN, COMMIT, pragmas). */
static int run_simple(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
	int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? EVH_OK : sqlite_fail(db, rc, err, errlen);
}

/* ROLLBACK only when a transaction is still open: SQLite rolls back by itself
 * after some errors (disk full, I/O), and a second ROLLBACK would fail.
 * ROLLBACK itself can fail for want of memory (sqlite3_exec prepares it):
 * tried again a few times; a transaction still open is said, and the next
 * begin_immediate rolls it back before its BEGIN (else every later BEGIN
 * would fail with "cannot start a transaction within a transaction", and
 * the write lock stay held, for good). */
#define ROLLBACK_TRIES 5
static void rollback_if_open(sqlite3 *db)
{
	int rc = SQLITE_OK;
	for (int i = 0; i < ROLLBACK_TRIES && !sqlite3_get_autocommit(db); i++) {
		if (i)
			usleep(1000);
		rc = sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	}
	if (!sqlite3_get_autocommit(db))
		log_error(STORE_LOG, "%s: cannot roll back (%s); the transaction stays open until "
		                     "the next one begins, which rolls it back first",
		          sqlite3_db_filename(db, "main"), sqlite3_errstr(rc));
}

/* ---------------------------------------------------- statement cache */

static uint32_t sql_hash(const char *sql)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (; *sql; sql++)
		h = (h ^ (unsigned char)*sql) * 16777619u;
	return h;
}

/* Is there another statement after `tail`? Whitespace, comments and stray
 * semicolons prepare to no statement and are allowed. */
static int tail_has_statement(sqlite3 *db, const char *tail)
{
	while (tail && *tail) {
		sqlite3_stmt *st = NULL;
		const char *next = NULL;
		while (isspace((unsigned char)*tail))
			tail++;
		if (!*tail)
			return 0;
		if (sqlite3_prepare_v2(db, tail, -1, &st, &next) != SQLITE_OK)
			return 1;
		if (st) {
			sqlite3_finalize(st);
			return 1;
		}
		if (!next || next <= tail)
			return 1;
		tail = next;
	}
	return 0;
}

static int stmt_prepare(sqlite3 *db, const char *sql, unsigned flags, sqlite3_stmt **out,
                        char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	const char *tail = NULL;
	int rc = sqlite3_prepare_v3(db, sql, -1, flags, &st, &tail);
	*out = NULL;
	if (rc != SQLITE_OK)
		return sqlite_fail(db, rc, err, errlen);
	if (!st) {
		set_err(err, errlen, "empty SQL statement");
		return EVH_EINVAL;
	}
	if (tail_has_statement(db, tail)) {
		sqlite3_finalize(st);
		set_err(err, errlen, "multiple statements in one call; run them one at a time");
		return EVH_EINVAL;
	}
	*out = st;
	return EVH_OK;
}

static cached_stmt *cache_find(conn *k, const char *sql, uint32_t hash)
{
	for (size_t i = 0; i < STORE_CACHE_SIZE; i++) {
		cached_stmt *c = &k->cache[i];
		/* A plugin's SQL finds only statements the authorizer judged: the
		 * host's own (writes to evh_* tables) are not the plugin's, whatever
		 * their text. */
		if (c->sql && c->hash == hash && c->plugin == k->plugin_sql && !strcmp(c->sql, sql))
			return c;
	}
	return NULL;
}

/* An empty slot, else the least recently used idle one (emptied), else NULL. */
static cached_stmt *cache_victim(conn *k)
{
	cached_stmt *victim = NULL;
	for (size_t i = 0; i < STORE_CACHE_SIZE; i++) {
		cached_stmt *c = &k->cache[i];
		if (!c->sql)
			return c;
		if (!c->busy && (!victim || c->last_used < victim->last_used))
			victim = c;
	}
	if (victim) {
		sqlite3_finalize(victim->st);
		free(victim->sql);
		memset(victim, 0, sizeof *victim);
	}
	return victim;
}

/* Check out a prepared statement for `sql`. Release with stmt_release. */
static int stmt_acquire(conn *k, const char *sql, stmt_ref *ref, char *err, size_t errlen)
{
	uint32_t hash = sql_hash(sql);
	cached_stmt *c = cache_find(k, sql, hash);
	char *copy;
	int rc;

	ref->st = NULL;
	ref->slot = NULL;
	if (c && !c->busy) {
		c->busy = 1;
		c->last_used = ++k->clock;
		*ref = (stmt_ref){c->st, c};
		return EVH_OK;
	}
	if (c) /* same SQL already checked out by an open cursor */
		return stmt_prepare(k->db, sql, 0, &ref->st, err, errlen);
	c = cache_victim(k);
	if (!c)
		return stmt_prepare(k->db, sql, 0, &ref->st, err, errlen);
	rc = stmt_prepare(k->db, sql, SQLITE_PREPARE_PERSISTENT, &ref->st, err, errlen);
	if (rc)
		return rc;
	copy = strdup(sql);
	if (!copy)
		return EVH_OK; /* usable, just not cached */
	*c = (cached_stmt){copy, hash, ref->st, ++k->clock, 1, k->plugin_sql};
	ref->slot = c;
	return EVH_OK;
}

static void stmt_release(stmt_ref *ref)
{
	if (!ref->st)
		return;
	if (ref->slot) {
		sqlite3_reset(ref->st);
		sqlite3_clear_bindings(ref->st);
		ref->slot->busy = 0;
	} else {
		sqlite3_finalize(ref->st);
	}
	ref->st = NULL;
	ref->slot = NULL;
}

static void conn_cache_clear(conn *k)
{
	for (size_t i = 0; i < STORE_CACHE_SIZE; i++) {
		sqlite3_finalize(k->cache[i].st);
		free(k->cache[i].sql);
		memset(&k->cache[i], 0, sizeof k->cache[i]);
	}
}

static void cache_clear(store *s)
{
	conn_cache_clear(&s->w);
	for (size_t i = 0; i < STORE_HOST_STMTS; i++) { /* sql: a literal, not ours */
		sqlite3_finalize(s->host[i].st);
		memset(&s->host[i], 0, sizeof s->host[i]);
	}
}

/* Check out the host statement whose SQL is the string literal `sql`:
 * found by its address, prepared on first use. Falls back to the shared
 * cache when the slots are full or it is already checked out. */
static int host_acquire(store *s, const char *sql, stmt_ref *ref, char *err, size_t errlen)
{
	for (size_t i = 0; i < STORE_HOST_STMTS; i++) {
		cached_stmt *c = &s->host[i];
		if (c->sql == sql) {
			if (c->busy)
				break;
			c->busy = 1;
			*ref = (stmt_ref){c->st, c};
			return EVH_OK;
		}
		if (!c->sql) {
			int rc;
			ref->slot = NULL;
			rc = stmt_prepare(s->w.db, sql, SQLITE_PREPARE_PERSISTENT, &ref->st, err, errlen);
			if (rc)
				return rc;
			*c = (cached_stmt){(char *)sql, 0, ref->st, 0, 1, 0};
			ref->slot = c;
			return EVH_OK;
		}
	}
	return stmt_acquire(&s->w, sql, ref, err, errlen);
}

/* ------------------------------------------------------------- binding */

static int bind_one(sqlite3_stmt *st, int idx, const evh_value *v)
{
	switch (v->type) {
	case EVH_VAL_NULL:
		return sqlite3_bind_null(st, idx);
	case EVH_VAL_INT:
		return sqlite3_bind_int64(st, idx, v->i);
	case EVH_VAL_REAL:
		return sqlite3_bind_double(st, idx, v->r);
	case EVH_VAL_TEXT: /* EVH_TEXT(NULL) binds SQL NULL */
		if (!v->p)
			return v->n ? SQLITE_MISUSE : sqlite3_bind_null(st, idx);
		return sqlite3_bind_text64(st, idx, v->p, v->n, SQLITE_TRANSIENT, SQLITE_UTF8);
	case EVH_VAL_BLOB: /* EVH_BLOB(NULL, 0) is an empty blob, not NULL */
		if (!v->p)
			return v->n ? SQLITE_MISUSE : sqlite3_bind_zeroblob(st, idx, 0);
		return sqlite3_bind_blob64(st, idx, v->p, v->n, SQLITE_TRANSIENT);
	}
	return SQLITE_MISUSE;
}

static int stmt_bind(sqlite3 *db, sqlite3_stmt *st, const evh_value *args, size_t nargs,
                     char *err, size_t errlen)
{
	int want = sqlite3_bind_parameter_count(st);
	if ((size_t)want != nargs) {
		set_err(err, errlen, "statement has %d parameter%s but %zu value%s given", want,
		        want == 1 ? "" : "s", nargs, nargs == 1 ? " was" : "s were");
		return EVH_EINVAL;
	}
	if (nargs && !args) {
		set_err(err, errlen, "%zu values announced but args is NULL", nargs);
		return EVH_EINVAL;
	}
	for (size_t i = 0; i < nargs; i++) {
		int rc = bind_one(st, (int)i + 1, &args[i]);
		if (rc == SQLITE_MISUSE) {
			set_err(err, errlen, "value %zu: bad type %d or NULL bytes with a length",
			        i + 1, (int)args[i].type);
			return EVH_EINVAL;
		}
		if (rc != SQLITE_OK)
			return sqlite_fail(db, rc, err, errlen);
	}
	return EVH_OK;
}

/* Prepare, bind and step `sql` to completion. *had_row (optional): it
 * produced at least one row; *changes (optional): rows it changed. */
static int run_ref(conn *k, stmt_ref ref, const evh_value *args, size_t nargs,
                   int64_t *changes, int *had_row, char *err, size_t errlen)
{
	int rc, status;

	status = stmt_bind(k->db, ref.st, args, nargs, err, errlen);
	if (status)
		goto out;
	if (had_row)
		*had_row = 0;
	while ((rc = sqlite3_step(ref.st)) == SQLITE_ROW)
		if (had_row)
			*had_row = 1;
	if (rc != SQLITE_DONE) {
		status = step_fail(k->db, ref.st, rc, err, errlen);
		goto out;
	}
	if (changes)
		*changes = sqlite3_changes64(k->db);
out:
	stmt_release(&ref);
	return status;
}

static int stmt_run(store *s, const char *sql, const evh_value *args, size_t nargs,
                    int64_t *changes, int *had_row, char *err, size_t errlen)
{
	stmt_ref ref;
	int status = stmt_acquire(&s->w, sql, &ref, err, errlen);
	return status ? status : run_ref(&s->w, ref, args, nargs, changes, had_row, err, errlen);
}

/* stmt_run for the host's own SQL, a string literal (see store.host). */
static int host_run(store *s, const char *sql, const evh_value *args, size_t nargs,
                    int64_t *changes, int *had_row, char *err, size_t errlen)
{
	stmt_ref ref;
	int status = host_acquire(s, sql, &ref, err, errlen);
	return status ? status : run_ref(&s->w, ref, args, nargs, changes, had_row, err, errlen);
}

/* run_simple on the writer connection, prepared once (BEGIN, COMMIT). */
static int host_simple(store *s, const char *sql, char *err, size_t errlen)
{
	return host_run(s, sql, NULL, 0, NULL, NULL, err, errlen);
}

/* BEGIN IMMEDIATE on the writer (under the store's lock, no transaction of
 * the store's open): first rolls back one a failed ROLLBACK left open. */
static int begin_immediate(store *s, char *err, size_t errlen)
{
	rollback_if_open(s->w.db);
	return host_simple(s, "BEGIN IMMEDIATE", err, errlen);
}

/* ---------------------------------------------------------------- open */

static int check_synchronous(const char *sync, char *err, size_t errlen)
{
	if (!strcasecmp(sync, "FULL") || !strcasecmp(sync, "NORMAL"))
		return EVH_OK;
	set_err(err, errlen, "synchronous must be FULL or NORMAL, not '%s'", sync);
	return EVH_EINVAL;
}

static int enable_wal(sqlite3 *db, const char *path, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	const char *mode;
	char why[300];
	int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
	int status = EVH_OK;

	if (rc != SQLITE_OK) {
		set_err(err, errlen, "%s: journal_mode=WAL: %s", path,
		        db_errmsg(db, rc, why, sizeof why));
		return status_of(rc);
	}
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		set_err(err, errlen, "%s: journal_mode=WAL: %s", path,
		        db_errmsg(db, rc, why, sizeof why));
		status = status_of(rc);
		goto out;
	}
	mode = (const char *)sqlite3_column_text(st, 0);
	if (!mode || strcasecmp(mode, "wal")) {
		set_err(err, errlen, "%s: the database refused WAL mode (journal_mode is '%s')",
		        path, mode ? mode : "?");
		status = EVH_ESTORE;
	}
out:
	sqlite3_finalize(st);
	return status;
}

/* The host's tables. Every event a plugin publishes is one row of evh_log,
 * written once, in the plugin's transaction: the outbox and the event log
 * are two views of it. evh_pending holds the seq of each row the relay has
 * not seen acknowledged; evh_delivery, where the broker put each row that
 * was (a delivery replaces the row's seq in evh_pending by a record in
 * evh_delivery, so delivering never copies or rewrites an event). seq is
 * AUTOINCREMENT: never reused, even once retention emptied the log. Deleting
 * a delivery record (retention) deletes its event. The outbox view reads
 * evh_pending first (CROSS JOIN fixes the order: the log is the big one,
 * and without statistics the planner may scan it). The views keep the names
 * and columns of the first schema (migrate_v1): evh_outbox, the events
 * waiting for the relay; evh_events, the delivered ones. */
static const char host_tables[] =
    "CREATE TABLE IF NOT EXISTS evh_migrations("
    " version INTEGER PRIMARY KEY, applied_at TEXT);"
    "CREATE TABLE IF NOT EXISTS evh_log("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, topic TEXT NOT NULL, key TEXT,"
    " type TEXT NOT NULL, source TEXT, time TEXT NOT NULL, traceparent TEXT,"
    " data BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS evh_log_by_key ON evh_log(key, seq);"
    "CREATE TABLE IF NOT EXISTS evh_pending(seq INTEGER PRIMARY KEY);"
    "CREATE TABLE IF NOT EXISTS evh_delivery("
    " seq INTEGER PRIMARY KEY, delivered_at TEXT NOT NULL, \"partition\" INTEGER,"
    " \"offset\" INTEGER);"
    "CREATE TRIGGER IF NOT EXISTS evh_delivery_delete AFTER DELETE ON evh_delivery"
    " BEGIN DELETE FROM evh_log WHERE seq = old.seq; END;"
    /* msg_time_ms: the Kafka timestamp of a message whose id is its position
     * (store_inbox_claim), NULL for a ce_id. */
    "CREATE TABLE IF NOT EXISTS evh_inbox("
    " event_id TEXT PRIMARY KEY, topic TEXT, \"partition\" INTEGER, \"offset\" INTEGER,"
    " handled_at TEXT, msg_time_ms INTEGER);"
    /* Dead letters produced back to their topic (admin redrive), so none is
     * redriven twice. */
    "CREATE TABLE IF NOT EXISTS evh_dlq_redriven("
    " dlq_topic TEXT NOT NULL, \"partition\" INTEGER NOT NULL, \"offset\" INTEGER NOT NULL,"
    " to_topic TEXT, to_partition INTEGER, to_offset INTEGER, redriven_at TEXT NOT NULL,"
    " dlq_time_ms INTEGER,"
    " PRIMARY KEY(dlq_topic, \"partition\", \"offset\"));";
/* The host's views, as SQLite keeps their text in sqlite_master. A database
 * made by an earlier evhost may hold an older definition: ensure_views
 * replaces any view whose text differs, and leaves the schema alone (no
 * schema change for other connections) when all match. */
static const struct {
	const char *name, *sql;
} host_views[] = {
    {"evh_outbox",
     "CREATE VIEW evh_outbox AS"
     " SELECT p.seq AS seq, l.id, l.topic, l.key, l.type, l.source, l.time, l.traceparent, l.data"
     " FROM evh_pending AS p CROSS JOIN evh_log AS l ON l.seq = p.seq"},
    {"evh_events",
     "CREATE VIEW evh_events AS"
     " SELECT l.seq, l.id, l.topic, l.key, l.type, l.source, l.time, l.traceparent, l.data,"
     " d.delivered_at, d.\"partition\", d.\"offset\""
     " FROM evh_delivery AS d JOIN evh_log AS l ON l.seq = d.seq"},
};
#define HOST_VIEWS (sizeof host_views / sizeof host_views[0])

/* A database of evhost 0.1's first schema kept the outbox (evh_outbox) and
 * the event log (evh_events) as two tables, a delivered row being copied
 * from one to the other. Move both into evh_log, evh_pending and
 * evh_delivery (just created by host_tables, so empty), in one transaction,
 * keeping every seq and the AUTOINCREMENT high-water mark, so nothing
 * waiting is lost and no seq is reused. Then host_views can take the old
 * tables' names. */
static const char migrate_v1_sql[] =
    "INSERT INTO evh_log SELECT seq, id, topic, key, type, source, time, traceparent, data"
    " FROM evh_events ORDER BY seq;"
    "INSERT INTO evh_delivery SELECT seq, delivered_at, \"partition\", \"offset\""
    " FROM evh_events ORDER BY seq;"
    "INSERT OR IGNORE INTO evh_log SELECT seq, id, topic, key, type, source, time, traceparent,"
    " data FROM evh_outbox ORDER BY seq;"
    "INSERT OR IGNORE INTO evh_pending SELECT seq FROM evh_outbox ORDER BY seq;"
    "DELETE FROM sqlite_sequence WHERE name = 'evh_log';"
    "INSERT INTO sqlite_sequence(name, seq) SELECT 'evh_log', MAX(s) FROM ("
    " SELECT COALESCE(MAX(seq), 0) AS s FROM evh_log UNION ALL"
    " SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'evh_outbox');"
    "DROP TABLE evh_outbox;"
    "DROP TABLE evh_events;";

/* Is view `name` defined as `sql`? */
static int view_is(sqlite3 *db, const char *name, const char *sql)
{
	sqlite3_stmt *st = NULL;
	int same = 0;
	if (sqlite3_prepare_v2(db, "SELECT sql FROM sqlite_master WHERE type = 'view' AND name = ?",
	                       -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW) {
		const char *now = (const char *)sqlite3_column_text(st, 0);
		same = now && strcmp(now, sql) == 0;
	}
	sqlite3_finalize(st);
	return same;
}

static int ensure_views(sqlite3 *db, char *msg, size_t len)
{
	size_t stale[HOST_VIEWS], nstale = 0;
	int status;
	for (size_t i = 0; i < HOST_VIEWS; i++)
		if (!view_is(db, host_views[i].name, host_views[i].sql))
			stale[nstale++] = i;
	if (!nstale)
		return EVH_OK;
	status = run_simple(db, "BEGIN IMMEDIATE", msg, len);
	for (size_t j = 0; !status && j < nstale; j++) {
		char drop[64];
		snprintf(drop, sizeof drop, "DROP VIEW IF EXISTS %s", host_views[stale[j]].name);
		status = run_simple(db, drop, msg, len);
		if (!status)
			status = run_simple(db, host_views[stale[j]].sql, msg, len);
	}
	if (!status)
		return run_simple(db, "COMMIT", msg, len);
	rollback_if_open(db);
	return status;
}

static int query_int(store *s, const char *sql, _Atomic int64_t *out, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(s->w.db, sql, -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		atomic_store(out, sqlite3_column_int64(st, 0));
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_OK)
		set_err(err, errlen, "%s: %s", sql, sqlite3_errmsg(s->w.db));
	sqlite3_finalize(st);
	return rc == SQLITE_OK ? EVH_OK : status_of(rc);
}

static int migrate_v1(store *s, const char *path, char *err, size_t errlen)
{
	_Atomic int64_t old = 0;
	char msg[STORE_ERR_LEN];
	int status;

	/* The first schema's outbox is a table; this one's is a view. */
	status = query_int(s,
	                   "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
	                   " AND name = 'evh_outbox'",
	                   &old, err, errlen);
	if (status || !atomic_load(&old))
		return status;
	status = run_simple(s->w.db, "BEGIN IMMEDIATE", msg, sizeof msg);
	if (!status)
		status = run_simple(s->w.db, migrate_v1_sql, msg, sizeof msg);
	if (!status)
		status = run_simple(s->w.db, "COMMIT", msg, sizeof msg);
	if (status) {
		rollback_if_open(s->w.db);
		set_err(err, errlen, "%s: moving the outbox and the event log to the current schema: %s",
		        path, msg);
		return status;
	}
	log_info(STORE_LOG, "%s: outbox and event log moved to the current schema", path);
	return EVH_OK;
}

/* Add INTEGER column `col` to the host's table `table` of a database made
 * before it, its rows left without a value (NULL); `what` names it in the
 * error. Tables and columns are the host's literals. */
static int add_column(store *s, const char *path, const char *table, const char *col,
                      const char *what, char *err, size_t errlen)
{
	_Atomic int64_t has = 0;
	char msg[STORE_ERR_LEN], sql[160];
	int status;
	snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM pragma_table_info('%s') WHERE name = '%s'",
	         table, col);
	status = query_int(s, sql, &has, err, errlen);
	if (status || atomic_load(&has))
		return status;
	snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN %s INTEGER", table, col);
	status = run_simple(s->w.db, sql, msg, sizeof msg);
	if (status)
		set_err(err, errlen, "%s: adding %s to %s: %s", path, what, table, msg);
	return status;
}

/* evh_dlq_redriven before dlq_time_ms (the dead letter's Kafka timestamp):
 * its rows match a dead letter at their position whatever its time, as they
 * did. evh_inbox before msg_time_ms: its position ids' records stay
 * duplicates of any message at their position, as they were. */
static int migrate_times(store *s, const char *path, char *err, size_t errlen)
{
	int status = add_column(s, path, "evh_dlq_redriven", "dlq_time_ms",
	                        "the dead letters' time", err, errlen);
	return status ? status
	              : add_column(s, path, "evh_inbox", "msg_time_ms",
	                           "the time of messages known by their position", err, errlen);
}

static int count_rows(store *s, const char *table, _Atomic int64_t *out, char *err,
                      size_t errlen)
{
	char sql[64];
	snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", table);
	return query_int(s, sql, out, err, errlen);
}

static int count_outbox(store *s, const char *path, char *err, size_t errlen)
{
	char why[256] = "";
	int status = count_rows(s, "evh_pending", &s->pending, why, sizeof why);
	if (!status)
		status = count_rows(s, "evh_delivery", &s->events, why, sizeof why);
	if (status)
		set_err(err, errlen, "%s: %s", path, why);
	atomic_store(&s->delivered_ms, clock_wall_ms());
	return status;
}

/* Whether a table name is one of the host's (evh_log, evh_inbox, ...). */
static int host_table(const char *name)
{
	return name && !strncasecmp(name, "evh_", 4);
}

/* SQLite's authorizer, at every prepare on a plugin's connection: only
 * a plugin's SQL (conn.plugin_sql) is judged. Its transaction is the host's
 * (a COMMIT in a handler committed the inbox record with half the work, and
 * the retry never came), the host's tables are the host's (a row written
 * into evh_log by hand skipped every check of evh_publish and held the
 * relay up for good), and it sees its own database only (ATTACH read the
 * sign-outs and the other plugins' tables). */
static int plugin_sql_auth(void *ud, int action, const char *a, const char *b, const char *dbname,
                           const char *trigger)
{
	static const char *const read_pragmas[] = {
	    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
	    "foreign_key_list", "foreign_key_check", "quick_check", "integrity_check", NULL};
	conn *k = ud;
	const char *why = NULL;
	(void)dbname, (void)trigger;
	if (!k->plugin_sql)
		return SQLITE_OK;
	switch (action) {
	case SQLITE_READ:
	case SQLITE_SELECT:
	case SQLITE_FUNCTION:
	case SQLITE_RECURSIVE:
		return SQLITE_OK;
	case SQLITE_TRANSACTION:
	case SQLITE_SAVEPOINT:
		why = "BEGIN, COMMIT, ROLLBACK and savepoints are the host's (evh_tx_begin, "
		      "evh_tx_commit, evh_tx_rollback; an event handler returns its outcome)";
		break;
	case SQLITE_ATTACH:
	case SQLITE_DETACH:
		why = "ATTACH and DETACH: a plugin's SQL sees its own database only";
		break;
	case SQLITE_PRAGMA:
		for (size_t i = 0; a && read_pragmas[i]; i++)
			if (!strcasecmp(a, read_pragmas[i]))
				return SQLITE_OK;
		why = "this PRAGMA is the host's (only the schema-reading ones are a plugin's)";
		break;
	default:
		/* Every other action writes or changes something. */
		if (k->read_only)
			why = READ_ONLY_WHY;
		else if (host_table(a) || host_table(b))
			why = "the evh_ tables are the host's: read them, never write or change them";
	}
	if (!why)
		return SQLITE_OK;
	snprintf(k->auth_why, sizeof k->auth_why, "%s", why);
	return SQLITE_DENY;
}

/* Judge what is prepared from now on as a plugin's SQL (on), or no longer:
 * then the authorizer's refusal, if any ("" when none). */
static const char *plugin_sql_set(conn *k, int on)
{
	k->plugin_sql = on;
	if (on)
		k->auth_why[0] = '\0';
	return k->auth_why;
}

void store_plugin_sql(evh_tx *tx, int on)
{
	const char *why;
	if (!tx)
		return;
	why = plugin_sql_set(tx_conn(tx), on);
	if (!on && *why) /* SQLite says "not authorized": say what */
		set_err(tx->err, sizeof tx->err, "refused: %s", why);
}

const char *store_plugin_sql_refused(const evh_tx *tx)
{
	return tx && tx_conn(tx)->auth_why[0] ? tx_conn(tx)->auth_why : NULL;
}

static int configure_db(store *s, const char *path, const char *sync, char *err, size_t errlen)
{
	char sql[64], msg[STORE_ERR_LEN];
	int status;

	sqlite3_extended_result_codes(s->w.db, 1);
	sqlite3_set_authorizer(s->w.db, plugin_sql_auth, &s->w);
	sqlite3_busy_timeout(s->w.db, STORE_BUSY_TIMEOUT_MS);
	status = enable_wal(s->w.db, path, err, errlen);
	if (status)
		return status;
	snprintf(sql, sizeof sql, "PRAGMA synchronous=%s", sync);
	s->sync_full = !strcasecmp(sync, "FULL");
	status = run_simple(s->w.db, sql, msg, sizeof msg);
	/* Without a limit SQLite keeps the WAL file at the largest size it ever
	 * reached (reused from its start), until the daemon stops. */
	if (!status) {
		snprintf(sql, sizeof sql, "PRAGMA journal_size_limit=%lld", STORE_WAL_KEEP_BYTES);
		status = run_simple(s->w.db, sql, msg, sizeof msg);
	}
	if (!status)
		status = run_simple(s->w.db, "PRAGMA foreign_keys=ON", msg, sizeof msg);
	if (status) {
		set_err(err, errlen, "%s: %s", path, msg);
		return status;
	}
	status = run_simple(s->w.db, host_tables, msg, sizeof msg);
	if (status) {
		set_err(err, errlen, "%s: %s", path, msg);
		return status;
	}
	status = migrate_v1(s, path, err, errlen);
	if (!status)
		status = migrate_times(s, path, err, errlen);
	if (status)
		return status;
	status = ensure_views(s->w.db, msg, sizeof msg);
	if (status) {
		set_err(err, errlen, "%s: %s", path, msg);
		return status;
	}
	return count_outbox(s, path, err, errlen);
}

/* ---------------------------------------------------------- checkpoints */

static void *checkpointer(void *arg)
{
	store *s = arg;
	const char *path = sqlite3_db_filename(s->ckpt_db, "main"), *base;
	base = path ? strrchr(path, '/') : NULL;
	log_thread_name("evh-ck:", base ? base + 1 : path);
	pthread_mutex_lock(&s->ckpt_mu);
	for (;;) {
		while (!s->ckpt_due && !s->ckpt_stop)
			pthread_cond_wait(&s->ckpt_cv, &s->ckpt_mu);
		if (s->ckpt_stop)
			break;
		s->ckpt_due = 0;
		pthread_mutex_unlock(&s->ckpt_mu);
		/* PASSIVE: copies what no reader still needs, never waits for the
		 * writer; what it could not copy is taken next time. */
		sqlite3_wal_checkpoint_v2(s->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
		atomic_fetch_add(&s->ckpt_thread_runs, 1);
		pthread_mutex_lock(&s->ckpt_mu);
	}
	pthread_mutex_unlock(&s->ckpt_mu);
	return NULL;
}

/* Called by SQLite after each commit on the writer connection (under the
 * store's lock), with the WAL's size in pages. */
static int wal_hook(void *ud, sqlite3 *db, const char *name, int pages)
{
	store *s = ud;
	atomic_store_explicit(&s->wal_frames, pages, memory_order_relaxed);
	if (pages >= STORE_CHECKPOINT_PAGES * STORE_CHECKPOINT_INLINE) {
		sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
		atomic_fetch_add(&s->ckpt_inline_runs, 1);
		return SQLITE_OK;
	}
	if (pages >= STORE_CHECKPOINT_PAGES) {
		pthread_mutex_lock(&s->ckpt_mu);
		if (!s->ckpt_due) {
			s->ckpt_due = 1;
			pthread_cond_signal(&s->ckpt_cv);
		}
		pthread_mutex_unlock(&s->ckpt_mu);
	}
	return SQLITE_OK;
}

static int checkpointer_start(store *s, const char *path, const char *sync, char *err,
                              size_t errlen)
{
	const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
	char sql[64], why[300];
	int rc = sqlite3_open_v2(path, &s->ckpt_db, flags, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(s->ckpt_db, STORE_BUSY_TIMEOUT_MS);
		snprintf(sql, sizeof sql, "PRAGMA synchronous=%s", sync);
		rc = sqlite3_exec(s->ckpt_db, sql, NULL, NULL, NULL);
	}
	if (rc != SQLITE_OK) {
		set_err(err, errlen, "%s: checkpoint connection: %s", path,
		        db_errmsg(s->ckpt_db, rc, why, sizeof why));
		return status_of(rc);
	}
	if ((rc = query_int(s, "PRAGMA page_size", &s->page_size, err, errlen)) != EVH_OK)
		return rc;
	if (pthread_create(&s->ckpt_thread, NULL, checkpointer, s)) {
		set_err(err, errlen, "%s: cannot start the checkpoint thread", path);
		return EVH_ENOMEM;
	}
	s->ckpt_running = 1;
	sqlite3_wal_hook(s->w.db, wal_hook, s); /* replaces SQLite's autocheckpoint */
	return EVH_OK;
}

const char *store_path(store *s)
{
	return sqlite3_db_filename(s->w.db, "main");
}

/* fsync `path` (a file, or with O_DIRECTORY a directory). */
static int sync_path(const char *path, int flags)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | flags), rc;
	if (fd < 0)
		return -1;
	rc = fsync(fd);
	close(fd);
	return rc;
}

int store_sync_dir(const char *path)
{
	return sync_path(path, O_DIRECTORY);
}

/* sqlite3_progress_handler: nonzero interrupts the statement. */
static int backup_cancelled(void *cancel)
{
	return atomic_load((const atomic_int *)cancel) != 0;
}

int store_backup(const char *src, const char *dest, const atomic_int *cancel, int64_t *bytes,
                 int *damaged, char *err, size_t errlen)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	char *dir, *slash; /* on the heap: HTTP workers' stacks are 100 KiB */
	struct stat sb;
	int rc, fd, synced;
	*bytes = 0;
	if (damaged)
		*damaged = 0;
	/* Ours alone, and not readable by others (it holds what the plugin
	 * stores, password hashes included); VACUUM INTO fills an empty file. */
	fd = open(dest, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0) {
		set_err(err, errlen, "cannot create %s: %s", dest, strerror(errno));
		return EVH_ESTORE;
	}
	close(fd);
	rc = sqlite3_open_v2(src, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
		if (cancel)
			sqlite3_progress_handler(db, 100, backup_cancelled, (void *)cancel);
		rc = sqlite3_prepare_v2(db, "VACUUM INTO ?1", -1, &st, NULL);
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 1, dest, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_DONE)
		rc = SQLITE_OK;
	if (rc == SQLITE_INTERRUPT)
		set_err(err, errlen, "copying %s: given up, the daemon is stopping", src);
	else if (is_damage(rc)) {
		/* VACUUM reads every page: a backup finds damage requests have not met yet. */
		set_err(err, errlen, "copying %s: %s: the database is damaged; restore it from an "
		                     "earlier backup " DAMAGE_DOC, src,
		        db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		if (damaged)
			*damaged = 1;
	} else if (rc != SQLITE_OK && db && (rc & 0xff) == SQLITE_IOERR && sqlite3_system_errno(db))
		/* Either file's: both named, with the OS's reason. */
		set_err(err, errlen, "copying %s to %s: %s (%s)", src, dest, sqlite3_errmsg(db),
		        strerror(sqlite3_system_errno(db)));
	else if (rc != SQLITE_OK) /* the destination's "database or disk is full" too */
		set_err(err, errlen, "copying %s to %s: %s", src, dest,
		        db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
	sqlite3_finalize(st);
	sqlite3_close(db);
	if (rc != SQLITE_OK) {
		unlink(dest);
		return status_of(rc);
	}
	if (!(dir = strdup(dest))) {
		set_err(err, errlen, "syncing %s: out of memory", dest);
		unlink(dest);
		return EVH_ENOMEM;
	}
	slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	synced = sync_path(dest, 0) == 0 && sync_path(slash ? dir : ".", O_DIRECTORY) == 0;
	free(dir);
	if (!synced || stat(dest, &sb) != 0) {
		set_err(err, errlen, "syncing %s: %s", dest, strerror(errno));
		unlink(dest);
		return EVH_ESTORE;
	}
	*bytes = (int64_t)sb.st_size;
	return EVH_OK;
}

/* The relay's reader connection (see rdb). query_only: it never writes. It
 * reads each row once, just after the writer wrote it: a small page cache
 * (512 KiB, a quarter of SQLite's default) is enough. */
static int reader_open(store *s, const char *path, char *err, size_t errlen)
{
	const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
	int rc = sqlite3_open_v2(path, &s->rdb, flags, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(s->rdb, STORE_BUSY_TIMEOUT_MS);
		rc = sqlite3_exec(s->rdb, "PRAGMA query_only=1; PRAGMA cache_size=-512", NULL, NULL,
		                  NULL);
	}
	if (rc != SQLITE_OK) {
		set_err(err, errlen, "%s: outbox reader connection: %s", path,
		        s->rdb ? sqlite3_errmsg(s->rdb) : sqlite3_errstr(rc));
		return status_of(rc);
	}
	return EVH_OK;
}

static void reader_close(store *s)
{
	sqlite3_finalize(s->rfetch);
	s->rfetch = NULL;
	if (s->rdb)
		sqlite3_close(s->rdb);
	s->rdb = NULL;
}

static void checkpointer_stop(store *s)
{
	if (s->ckpt_running) {
		pthread_mutex_lock(&s->ckpt_mu);
		s->ckpt_stop = 1;
		pthread_cond_signal(&s->ckpt_cv);
		pthread_mutex_unlock(&s->ckpt_mu);
		pthread_join(s->ckpt_thread, NULL);
		s->ckpt_running = 0;
	}
	if (s->w.db)
		sqlite3_wal_hook(s->w.db, NULL, NULL);
	if (s->ckpt_db)
		sqlite3_close(s->ckpt_db);
	s->ckpt_db = NULL;
}

static int init_mutex(pthread_mutex_t *mu)
{
	pthread_mutexattr_t attr;
	int e = pthread_mutexattr_init(&attr);
	if (e)
		return e;
	e = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
	if (!e)
		e = pthread_mutex_init(mu, &attr);
	pthread_mutexattr_destroy(&attr);
	return e;
}

/* After a failed open: when SQLite found the file damaged, or not a
 * database at all (a wrong file restored, a truncated copy), say what to do
 * after what happened. */
static void say_if_damaged(store *s, char *err, size_t errlen)
{
	size_t len = err ? strlen(err) : 0;
	if (s->w.db && is_damage(sqlite3_errcode(s->w.db)) && len + 1 < errlen)
		snprintf(err + len, errlen - len,
		         " (the file is damaged or not an SQLite database: restore it from a "
		         "backup, docs/operations.md \"Backup and restore\")");
}

size_t store_max_bytes(store *s)
{
	/* A limit of the connection, set when it was opened: read without the
	 * store's mutex (sqlite3_limit only reads it with -1). */
	int n = s ? sqlite3_limit(s->w.db, SQLITE_LIMIT_LENGTH, -1) : 0;
	return n > 0 ? (size_t)n : 0;
}

int store_open(store **out, const char *path, const char *synchronous, char *err, size_t errlen)
{
	const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
	store *s;
	char why[300];
	int rc, status;

	if (!out || !path || !*path) {
		set_err(err, errlen, "store_open: no database path given");
		return EVH_EINVAL;
	}
	*out = NULL;
	if (!synchronous)
		synchronous = "FULL";
	status = check_synchronous(synchronous, err, errlen);
	if (status)
		return status;
	s = calloc(1, sizeof *s);
	if (s)
		s->full_probe_ms = STORE_FULL_PROBE_MS;
	if (!s || init_mutex(&s->mu)) {
		free(s);
		set_err(err, errlen, "%s: out of memory opening the database", path);
		return EVH_ENOMEM;
	}
	if (pthread_cond_init(&s->gcv, NULL) || pthread_cond_init(&s->ckpt_cv, NULL) ||
	    pthread_mutex_init(&s->ckpt_mu, NULL) || pthread_mutex_init(&s->gmu, NULL) ||
	    clock_cond_init(&s->first_cv) || pthread_mutex_init(&s->first_mu, NULL) ||
	    pthread_mutex_init(&s->rmu, NULL) || pthread_mutex_init(&s->hook_mu, NULL) ||
	    pthread_cond_init(&s->hook_cv, NULL) || pthread_mutex_init(&s->read_mu, NULL) ||
	    clock_cond_init(&s->read_cv)) {
		pthread_mutex_destroy(&s->mu);
		free(s);
		set_err(err, errlen, "%s: out of memory opening the database", path);
		return EVH_ENOMEM;
	}
	file_create_db(path);
	rc = sqlite3_open_v2(path, &s->w.db, flags, NULL);
	if (rc != SQLITE_OK) {
		set_err(err, errlen, "%s: cannot open database: %s", path,
		        db_errmsg(s->w.db, rc, why, sizeof why));
		say_if_damaged(s, err, errlen);
		store_close(s);
		return status_of(rc);
	}
	status = configure_db(s, path, synchronous, err, errlen);
	if (!status)
		status = checkpointer_start(s, path, synchronous, err, errlen);
	if (!status)
		status = reader_open(s, path, err, errlen);
	if (status) {
		full_seen = ROOM_OK; /* said in err; not another store's to take at its unlock */
		damage_seen = 0;
		io_seen[0] = '\0';
		say_if_damaged(s, err, errlen);
		store_close(s);
		return status;
	}
	full_at_open(s, path);
	*out = s;
	return EVH_OK;
}

/* At store_close: no read transaction begins any more; those open end
 * first, waited for STORE_LOCK_WAIT_MS at most (a plugin's thread that
 * outlived its fini may hold one). 0: the read connections are closed; -1,
 * said: one is still in use, and they all stay open, with `s`. */
static int readers_close(store *s)
{
	struct timespec until = clock_after_ms(CLOCK_MONOTONIC, STORE_LOCK_WAIT_MS);
	int open;
	pthread_mutex_lock(&s->read_mu);
	s->read_closing = 1;
	while (s->read_open > 0 &&
	       pthread_cond_timedwait(&s->read_cv, &s->read_mu, &until) != ETIMEDOUT)
		;
	open = s->read_open;
	pthread_mutex_unlock(&s->read_mu);
	if (open) {
		log_error(STORE_LOG, "%s: closing, %d read transaction%s still open after %d ms (a "
		                     "plugin's thread that outlived its fini?): the database stays "
		                     "open until the daemon stops",
		          store_path(s), open, open == 1 ? " is" : "s are", STORE_LOCK_WAIT_MS);
		return -1;
	}
	for (size_t i = 0; i < STORE_READERS; i++) {
		conn_cache_clear(&s->readers[i].c);
		if (s->readers[i].c.db)
			sqlite3_close(s->readers[i].c.db);
		s->readers[i].c.db = NULL;
	}
	return 0;
}

void store_close(store *s)
{
	if (!s)
		return;
	if (s->gopen && !lock_raw(s)) { /* every member has ended: nobody waits */
		group_commit_locked(s);
		unlock_raw(s);
	}
	/* A hook call a last commit began ends before its counter goes. */
	store_set_commit_hook(s, NULL, NULL);
	reader_close(s);
	checkpointer_stop(s);
	/* One still in use (said) needs `s` and its writer's file name: kept. */
	if (readers_close(s))
		return;
	cache_clear(s);
	if (s->w.db)
		sqlite3_close(s->w.db); /* the last connection: checkpoints the rest */
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->gcv);
	pthread_mutex_destroy(&s->gmu);
	pthread_mutex_destroy(&s->ckpt_mu);
	pthread_cond_destroy(&s->ckpt_cv);
	pthread_mutex_destroy(&s->first_mu);
	pthread_cond_destroy(&s->first_cv);
	pthread_mutex_destroy(&s->rmu);
	pthread_mutex_destroy(&s->hook_mu);
	pthread_cond_destroy(&s->hook_cv);
	pthread_mutex_destroy(&s->read_mu);
	pthread_cond_destroy(&s->read_cv);
	free(s);
}

void store_set_commit_hook(store *s, void (*hook)(void *ud), void *ud)
{
	int mine = 0;
	for (const hook_frame *f = hook_frames; f; f = f->up)
		mine += f->s == s;
	pthread_mutex_lock(&s->hook_mu);
	s->commit_hook = hook;
	s->commit_hook_ud = ud;
	/* Calls of the hook replaced that are under way end first; this
	 * thread's own (it is inside one) cannot, nor can those of other
	 * threads that wait here from inside one too. */
	if (mine) {
		s->hook_parked += mine;
		pthread_cond_broadcast(&s->hook_cv);
	}
	while (s->hook_calls > s->hook_parked)
		pthread_cond_wait(&s->hook_cv, &s->hook_mu);
	s->hook_parked -= mine;
	pthread_mutex_unlock(&s->hook_mu);
}

void store_set_full_probe_ms(store *s, int ms)
{
	if (store_lock(s))
		return;
	s->full_probe_ms = ms > 0 ? ms : 0;
	store_unlock(s);
}

void store_set_outbox_limit(store *s, int64_t max_rows)
{
	if (store_lock(s))
		return;
	atomic_store(&s->outbox_limit, max_rows > 0 ? max_rows : 0);
	store_unlock(s);
}

/* In the transaction BEGIN IMMEDIATE opened: write the database's header
 * (its user_version, which the host does not use, set to what it is) and
 * commit, synced as every commit is. EVH_OK clears io_failed. */
static int write_probe(store *s)
{
	char msg[STORE_ERR_LEN], sql[64];
	sqlite3_stmt *st = NULL;
	int version = 0, status;
	if (sqlite3_prepare_v2(s->w.db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	snprintf(sql, sizeof sql, "PRAGMA user_version=%d", version);
	status = run_simple(s->w.db, sql, msg, sizeof msg);
	if (!status)
		status = run_simple(s->w.db, "COMMIT", msg, sizeof msg);
	if (!status) {
		io_clear(s);
		full_clear(s, "writes succeed again"); /* a read-only file system's */
	}
	return status;
}

int store_check_writable(store *s)
{
	int status;
	if (!s)
		return EVH_ESTORE;
	/* A transaction under way (a handler's batch may take seconds) holds
	 * the lock: readiness does not wait for it, the last answer stands. */
	status = lock_try(s);
	if (status == EVH_EBUSY)
		return atomic_load(&s->writable);
	if (status)
		return EVH_ESTORE;
	if (s->gopen)
		group_commit_locked(s);
	status = begin_immediate(s, NULL, 0);
	/* In WAL mode BEGIN touches nothing on disk: after a write was refused
	 * (a file system gone read-only), only a commit tells it passes again;
	 * so after a quota's or the file size limit's "full", which free blocks
	 * say nothing of: without it, a plugin no write came to (readiness
	 * routes none to it) stayed "full" after the quota was raised. That one
	 * is looked at once no write met it for full_probe_ms: a small write may
	 * pass where the requests' larger ones fail, and readiness would flap. */
	if (!status && (atomic_load(&s->io_failed) ||
	                (store_full(s) && s->full_quota &&
	                 clock_mono_ms() - s->full_ms >= s->full_probe_ms)))
		status = write_probe(s);
	if (!status)
		rollback_if_open(s->w.db);
	store_unlock(s);
	if (status != EVH_ENOMEM) /* that says nothing of the disk */
		atomic_store(&s->writable, status);
	return status;
}

/* ---------------------------------------------------------- migrations */

static int migration_cmp(const void *a, const void *b)
{
	const evh_migration *x = a, *y = b;
	return (x->version > y->version) - (x->version < y->version);
}

/* Sorted copy of `m`, checked: versions > 0, distinct, SQL present. */
static int migrations_sorted(const evh_migration *m, size_t n, evh_migration **out, char *err,
                             size_t errlen)
{
	evh_migration *v;
	if (n > SIZE_MAX / sizeof *v) { /* a count no array can hold */
		set_err(err, errlen, "%zu migrations: more than memory can hold", n);
		return EVH_EINVAL;
	}
	v = malloc(n * sizeof *v);
	if (!v) {
		set_err(err, errlen, "out of memory sorting migrations");
		return EVH_ENOMEM;
	}
	memcpy(v, m, n * sizeof *v);
	qsort(v, n, sizeof *v, migration_cmp);
	for (size_t i = 0; i < n; i++) {
		if (v[i].version <= 0 || !v[i].sql) {
			set_err(err, errlen, "migration %d is invalid (versions start at 1;"
			        " each needs SQL)", v[i].version);
			goto bad;
		}
		if (i && v[i].version == v[i - 1].version) {
			set_err(err, errlen, "migration %d is listed twice", v[i].version);
			goto bad;
		}
	}
	*out = v;
	return EVH_OK;
bad:
	free(v);
	return EVH_EINVAL;
}

static int db_version(store *s, int64_t *version, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(s->w.db, "SELECT COALESCE(MAX(version), 0) FROM evh_migrations",
	                            -1, &st, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		*version = sqlite3_column_int64(st, 0);
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_OK)
		set_err(err, errlen, "reading applied migrations: %s", sqlite3_errmsg(s->w.db));
	sqlite3_finalize(st);
	return rc == SQLITE_OK ? EVH_OK : status_of(rc);
}

/* One migration in its own transaction, recorded in evh_migrations. Its SQL
 * may hold several statements, so it goes through sqlite3_exec. */
static int migration_apply(store *s, const evh_migration *m, char *err, size_t errlen)
{
	char msg[STORE_ERR_LEN] = "";
	evh_value ver = EVH_INT(m->version);
	int status = run_simple(s->w.db, "BEGIN IMMEDIATE", msg, sizeof msg);
	if (!status) {
		const char *why;
		plugin_sql_set(&s->w, 1);
		status = run_simple(s->w.db, m->sql, msg, sizeof msg);
		why = plugin_sql_set(&s->w, 0);
		if (status && *why)
			snprintf(msg, sizeof msg, "refused: %s", why);
	}
	if (!status)
		status = stmt_run(s, "INSERT INTO evh_migrations(version, applied_at) VALUES(?, "
		                  STORE_NOW_SQL ")", &ver, 1, NULL, NULL, msg, sizeof msg);
	if (!status)
		status = run_simple(s->w.db, "COMMIT", msg, sizeof msg);
	if (status) {
		rollback_if_open(s->w.db);
		set_err(err, errlen, "migration %d failed: %s", m->version, msg);
	}
	return status;
}

static int migration_applied(store *s, int version, int *applied, char *err, size_t errlen)
{
	evh_value v = EVH_INT(version);
	return stmt_run(s, "SELECT 1 FROM evh_migrations WHERE version = ?", &v, 1, NULL, applied,
	                err, errlen);
}

static int migrate_locked(store *s, const evh_migration *m, size_t n, char *err, size_t errlen)
{
	int64_t current = 0;
	int known = n ? m[n - 1].version : 0;
	int status = db_version(s, &current, err, errlen);

	if (status)
		return status;
	if (current > known) {
		set_err(err, errlen, "database is at migration %" PRId64
		        ", plugin knows up to %d (downgrade?)", current, known);
		return EVH_ESTORE;
	}
	for (size_t i = 0; i < n; i++) {
		int applied = 0;
		status = migration_applied(s, m[i].version, &applied, err, errlen);
		if (!status && !applied)
			status = migration_apply(s, &m[i], err, errlen);
		if (status)
			return status;
	}
	return EVH_OK;
}

int store_migrate(store *s, const evh_migration *m, size_t n, char *err, size_t errlen)
{
	evh_migration *sorted = NULL;
	int status;

	if (!s || (n && !m)) {
		set_err(err, errlen, "store_migrate: no store or no migrations array");
		return EVH_EINVAL;
	}
	if (n) {
		status = migrations_sorted(m, n, &sorted, err, errlen);
		if (status)
			return status;
	}
	status = store_lock(s);
	if (status) {
		set_err(err, errlen, "migrations cannot run inside a transaction");
		free(sorted);
		return status;
	}
	status = migrate_locked(s, sorted, n, err, errlen);
	store_unlock(s);
	free(sorted);
	return status;
}

/* -------------------------------------------------------- transactions */

/* Record an error on `tx` (the message is already in tx->err). */
static int tx_fail(evh_tx *tx, int status)
{
	if (!tx->failed)
		tx->failed = status;
	snprintf(thread_error, sizeof thread_error, "%s", tx->err);
	return status;
}

void store_thread_error_clear(void)
{
	thread_error[0] = '\0';
}

const char *store_thread_error(void)
{
	return thread_error;
}

int store_tx_failed(evh_tx *tx)
{
	return tx ? tx->failed : EVH_EINVAL;
}

static int tx_fail_msg(evh_tx *tx, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int tx_fail_msg(evh_tx *tx, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tx->err, sizeof tx->err, fmt, ap);
	va_end(ap);
	return tx_fail(tx, status);
}

/* After some errors (I/O, disk full) SQLite rolls the whole transaction back
 * by itself; a later statement would then run, and commit, on its own. */
static int tx_alive(evh_tx *tx)
{
	if (!sqlite3_get_autocommit(tx_conn(tx)->db))
		return EVH_OK;
	return tx_fail_msg(tx, EVH_ESTORE,
	                   "the database rolled the transaction back after an earlier error");
}

/* ---------------------------------------------------- read transactions */

static void tx_detach_rows(evh_tx *tx);

/* `what` asked of read transaction `tx`, which only reads: refused, said
 * as the authorizer's refusals are (store_plugin_sql_refused). */
static int read_refused(evh_tx *tx, const char *what)
{
	snprintf(tx->rd->c.auth_why, sizeof tx->rd->c.auth_why, "%s: %s", what, READ_ONLY_WHY);
	return tx_fail_msg(tx, EVH_EINVAL, "refused: %s", tx->rd->c.auth_why);
}

/* A free read connection of `s` for `tx`, waiting STORE_LOCK_WAIT_MS at
 * most for one: an opened one first, then one to open. EVH_EBUSY after
 * that wait, EVH_ESTATE once store_close began; said on this thread
 * (store_thread_error). */
static int read_take(store *s, evh_tx *tx, reader **out)
{
	struct timespec until = clock_after_ms(CLOCK_MONOTONIC, STORE_LOCK_WAIT_MS);
	int e = 0, status = EVH_OK;
	*out = NULL;
	pthread_mutex_lock(&s->read_mu);
	while (!s->read_closing && !*out && !status) {
		for (size_t i = 0; i < STORE_READERS; i++)
			if (!s->readers[i].tx && (!*out || (!(*out)->c.db && s->readers[i].c.db)))
				*out = &s->readers[i];
		if (*out) {
			(*out)->tx = tx;
			s->read_open++;
		} else if (e == ETIMEDOUT) {
			status = EVH_EBUSY;
		} else {
			e = pthread_cond_timedwait(&s->read_cv, &s->read_mu, &until);
		}
	}
	if (!*out && !status)
		status = EVH_ESTATE;
	pthread_mutex_unlock(&s->read_mu);
	if (status == EVH_ESTATE)
		snprintf(thread_error, sizeof thread_error, "%s: the database is being closed",
		         store_path(s));
	else if (status)
		snprintf(thread_error, sizeof thread_error,
		         "%s: all %d read transactions' connections were in use for %d ms",
		         store_path(s), STORE_READERS, STORE_LOCK_WAIT_MS);
	return status;
}

/* `rd` is free again: a reader waiting in read_take, or store_close, goes on. */
static void read_give(store *s, reader *rd)
{
	pthread_mutex_lock(&s->read_mu);
	rd->tx = NULL;
	s->read_open--;
	pthread_cond_broadcast(&s->read_cv);
	pthread_mutex_unlock(&s->read_mu);
}

/* Open `rd`'s connection: read-only (it cannot write the file, whatever
 * gets past the authorizer), under the authorizer of a plugin's SQL, which
 * refuses writes on it (read_only) with a reason. */
static int read_conn_open(store *s, reader *rd, char *err, size_t errlen)
{
	const int flags = SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX;
	char why[300];
	int rc = sqlite3_open_v2(store_path(s), &rd->c.db, flags, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_extended_result_codes(rd->c.db, 1);
		sqlite3_busy_timeout(rd->c.db, STORE_BUSY_TIMEOUT_MS);
		rc = sqlite3_set_authorizer(rd->c.db, plugin_sql_auth, &rd->c);
		rd->c.read_only = 1;
	}
	if (rc == SQLITE_OK)
		return EVH_OK;
	set_err(err, errlen, "read connection: %s", db_errmsg(rd->c.db, rc, why, sizeof why));
	sqlite3_close(rd->c.db);
	rd->c.db = NULL;
	return status_of(rc);
}

/* A host statement on a read connection (BEGIN, COMMIT), cached there. */
static int read_simple(conn *k, const char *sql, char *err, size_t errlen)
{
	stmt_ref ref;
	int status = stmt_acquire(k, sql, &ref, err, errlen);
	return status ? status : run_ref(k, ref, NULL, 0, NULL, NULL, err, errlen);
}

/* A transaction on `rd`, its snapshot taken now: the schema's version is
 * read inside it, so it sees what was committed before this returns, and
 * nothing committed after. */
static int read_begin(store *s, reader *rd, char *err, size_t errlen)
{
	int status = rd->c.db ? EVH_OK : read_conn_open(s, rd, err, errlen);
	if (!status)
		rollback_if_open(rd->c.db); /* one a failed end left open */
	if (!status)
		status = read_simple(&rd->c, "BEGIN", err, errlen);
	if (!status)
		status = read_simple(&rd->c, "PRAGMA schema_version", err, errlen);
	if (status && rd->c.db)
		rollback_if_open(rd->c.db);
	return status;
}

/* A transaction to begin on `s` for *out (NULL meanwhile): NULL, and
 * *status says why, for NULL arguments or want of memory. */
static evh_tx *tx_new(store *s, evh_tx **out, int *status)
{
	evh_tx *tx;
	*status = EVH_EINVAL;
	if (!s || !out)
		return NULL;
	*out = NULL;
	tx = calloc(1, sizeof *tx);
	*status = tx ? EVH_OK : EVH_ENOMEM;
	return tx;
}

int store_tx_begin_read(store *s, evh_tx **out)
{
	char why[256];
	reader *rd;
	int status;
	evh_tx *tx = tx_new(s, out, &status);

	if (!tx)
		return status;
	tx->thread = (uintptr_t)&thread_token;
	status = read_take(s, tx, &rd);
	if (status) {
		free(tx);
		return status;
	}
	status = read_begin(s, rd, why, sizeof why);
	if (status) {
		snprintf(thread_error, sizeof thread_error, "%s: BEGIN (read): %s", store_path(s),
		         why);
		damage_note(s);
		read_give(s, rd);
		free(tx);
		return status;
	}
	tx->s = s;
	tx->rd = rd;
	tx->plugin_own = 1;
	*out = tx;
	return EVH_OK;
}

/* End read transaction `tx` (commit and rollback alike: it wrote nothing)
 * and free it: its first failure, or EVH_OK. */
static int read_end(evh_tx *tx)
{
	store *s = tx->s;
	reader *rd = tx->rd;
	int status = tx->failed;
	tx_detach_rows(tx);
	if (!sqlite3_get_autocommit(rd->c.db) && read_simple(&rd->c, "COMMIT", NULL, 0))
		rollback_if_open(rd->c.db);
	/* Damage its reads found is the store's (sqlite_fail notes nothing else
	 * of a read connection's: a write transaction of this thread keeps its
	 * own notes of a want of room). */
	damage_note(s);
	read_give(s, rd);
	free(tx);
	return status;
}

int store_tx_reads_only(const evh_tx *tx) { return tx && tx->rd; }

int store_tx_begin(store *s, evh_tx **out)
{
	char why[256];
	int status;
	evh_tx *tx = tx_new(s, out, &status);

	if (!tx)
		return status;
	yield_first(s, -1);
	status = store_lock(s);
	if (status) {
		free(tx);
		return status;
	}
	status = begin_immediate(s, why, sizeof why);
	if (status) {
		/* Said by the caller (store_thread_error), with the file. */
		snprintf(thread_error, sizeof thread_error, "%s: BEGIN: %s",
		         sqlite3_db_filename(s->w.db, "main"), why);
		store_unlock(s);
		free(tx);
		return status;
	}
	tx->s = s;
	*out = tx;
	return EVH_OK;
}

static void group_commit_run(store *s);

/* Commit the open group (under mu): every waiting member gets the result.
 * Whichever thread takes the lock does it: a want of room it meets is the
 * members' (and the store's, marked full at the unlock), not the work of
 * the thread that happened to run it (store_thread_room_lost: a consumer's
 * handler that retried on its own must not be taken to have met it). */
static void group_commit_locked(store *s)
{
	unsigned lost = room_lost_count;
	group_commit_run(s);
	room_lost_count = lost;
}

static void group_commit_run(store *s)
{
	char msg[STORE_ERR_LEN - 32] = ""; /* leaves room for the prefix below */
	int status = EVH_OK, waiting = 0;

	if (!s->gopen)
		return;
	if (s->gfailed) {
		/* A member's rollback failed (out of memory): its writes are in. */
		rollback_if_open(s->w.db);
		s->gfailed = 0;
		snprintf(msg, sizeof msg, "a member's writes could not be undone; none kept");
		status = EVH_ESTORE;
	} else if (sqlite3_get_autocommit(s->w.db)) {
		/* SQLite ended the transaction itself (I/O error, disk full). */
		snprintf(msg, sizeof msg, "the database rolled the transaction back");
		status = EVH_ESTORE;
	} else {
		status = host_simple(s, "COMMIT", msg, sizeof msg);
		if (status)
			rollback_if_open(s->w.db);
	}
	/* Before the members wake: they look at store_full to say why. */
	if (status)
		full_note(s);
	else if (s->gmembers) {
		full_clear(s, "writes succeed again");
		io_clear(s);
	}
	if (status == EVH_OK && s->goutbox) {
		atomic_fetch_add(&s->pending, s->goutbox);
		s->hook_due = 1;
	}
	pthread_mutex_lock(&s->gmu);
	for (evh_tx *t = s->gwait; t; t = t->gnext) {
		t->gdone = 1;
		t->gstatus = status;
		if (status)
			snprintf(t->err, sizeof t->err, "group commit: %s", msg);
		waiting++;
	}
	pthread_mutex_unlock(&s->gmu);
	if (status == EVH_OK && s->gmembers) {
		atomic_fetch_add(&s->groups, 1);
		atomic_fetch_add(&s->grouped, (uint64_t)s->gmembers);
	}
	s->gwait = NULL;
	s->gopen = 0;
	s->glast = s->gmembers;
	s->gmembers = 0;
	s->goutbox = 0;
	if (waiting)
		pthread_cond_broadcast(&s->gcv);
}

/* yield_first then lock_raw, both within `ms`: EVH_EBUSY then, said on
 * this thread (store_thread_error). `member`: a group member's wait
 * (counted in gqueued, which keeps the group open for it). */
static int lock_within(store *s, int ms, int member)
{
	int64_t until = clock_mono_ms() + ms;
	int e = yield_first(s, until) ? ETIMEDOUT : 0;
	if (!e) {
		if (member)
			atomic_fetch_add(&s->gqueued, 1);
		e = mutex_lock_until(&s->mu, until);
		if (member)
			atomic_fetch_sub(&s->gqueued, 1);
	}
	if (e == ETIMEDOUT) {
		snprintf(thread_error, sizeof thread_error,
		         "%s: another transaction (an event handler's, a long one) has held the "
		         "database for %d ms",
		         sqlite3_db_filename(s->w.db, "main"), ms);
		return EVH_EBUSY;
	}
	return lock_taken(s, e);
}

/* store_lock, waiting at most `ms` (lock_within): for the relay's upkeep,
 * which a plugin's long transaction must not hold up. */
static int store_lock_within(store *s, int ms) { return lock_settled(s, lock_within(s, ms, 0)); }

int store_tx_begin_plugin(store *s, evh_tx **out)
{
	int status = store_tx_begin_grouped(s, out);
	if (status == EVH_OK) {
		(*out)->plugin_own = 1;
		s->plugin_tx = *out;
	}
	return status;
}

int store_tx_mine(const evh_tx *tx)
{
	if (tx && tx->rd)
		return tx->thread == (uintptr_t)&thread_token;
	return tx && atomic_load(&tx->s->holder) == (uintptr_t)&thread_token;
}

int store_rows_mine(const evh_rows *r)
{
	return r && (r->state == ROWS_DETACHED || store_tx_mine(r->tx));
}

int store_tx_plugin_own(const evh_tx *tx)
{
	return tx && tx->plugin_own;
}

evh_tx *store_tx_left_open(store *s)
{
	evh_tx *left = NULL;
	if (!s)
		return NULL;
	/* Only this thread writes plugin_tx while it holds mu. */
	if (atomic_load(&s->holder) == (uintptr_t)&thread_token && s->plugin_tx)
		return s->plugin_tx;
	pthread_mutex_lock(&s->read_mu);
	for (size_t i = 0; !left && s->read_open && i < STORE_READERS; i++)
		if (s->readers[i].tx && s->readers[i].tx->thread == (uintptr_t)&thread_token)
			left = s->readers[i].tx;
	pthread_mutex_unlock(&s->read_mu);
	return left;
}

int store_tx_begin_grouped(store *s, evh_tx **out)
{
	evh_tx *tx;
	int status = EVH_OK;

	if (!s || !out)
		return EVH_EINVAL;
	*out = NULL;
	tx = calloc(1, sizeof *tx);
	if (!tx)
		return EVH_ENOMEM;
	status = lock_within(s, STORE_LOCK_WAIT_MS, 1);
	if (status) {
		free(tx);
		return status;
	}
	tx->s = s;
	tx->grouped = 1;
	/* The group's transaction ended under it (SQLite rolled it back after an
	 * I/O error, or a member's rollback failed): its members fail, and this
	 * one starts a group of its own, not a transaction SAVEPOINT would open
	 * and its RELEASE commit alone. */
	if (s->gopen && (s->gfailed || sqlite3_get_autocommit(s->w.db)))
		group_commit_locked(s);
	if (!s->gopen) {
		status = begin_immediate(s, NULL, 0);
		s->gopen = status == EVH_OK;
	}
	if (!status)
		status = host_run(s, "SAVEPOINT evh_member", NULL, 0, NULL, NULL, tx->err,
		                  sizeof tx->err);
	if (status) {
		group_commit_locked(s); /* members waiting on it must not wait on */
		store_unlock(s);
		free(tx);
		return status;
	}
	*out = tx;
	return EVH_OK;
}

/* Cursors still open at commit/rollback: give their statements back (a
 * pending read would block COMMIT) and leave a husk that rows_close frees. */
static void tx_detach_rows(evh_tx *tx)
{
	evh_rows *r = tx->open_rows;
	while (r) {
		evh_rows *next = r->next;
		stmt_release(&r->ref);
		r->tx = NULL;
		r->next = NULL;
		r->state = ROWS_DETACHED;
		r = next;
	}
	tx->open_rows = NULL;
}

/* End `tx`: release the lock (waking the relay if this commit made new
 * outbox rows visible) and free it. */
static void tx_finish(evh_tx *tx, int committed)
{
	store *s = tx->s;
	if (committed && tx->outbox_added) {
		atomic_fetch_add(&s->pending, tx->outbox_added);
		s->hook_due = 1;
	}
	store_unlock(s);
	free(tx);
}

/* Deferred foreign keys (DEFERRABLE INITIALLY DEFERRED, or PRAGMA
 * defer_foreign_keys) are checked by SQLite only at COMMIT. A group's COMMIT,
 * and a consumer batch's, is shared: one member's dangling reference would
 * fail every member's commit. So a member, and an event's savepoint, checks
 * them at its own end: none were outstanding when it began (the previous one
 * was checked the same way), so any outstanding now are its own. */
static int deferred_fk_check(evh_tx *tx)
{
	int now = 0, high = 0;
	if (sqlite3_db_status(tx->s->w.db, SQLITE_DBSTATUS_DEFERRED_FKS, &now, &high, 0) != SQLITE_OK ||
	    now == 0)
		return EVH_OK;
	return tx_fail_msg(tx, EVH_ECONSTRAINT,
	                   "FOREIGN KEY constraint failed (a deferred foreign key still "
	                   "refers to no row at the end of the transaction)");
}

/* Set on a thread whose rolled-back (or failed) group member waited for a
 * group that then failed to commit: what it read may have been other
 * members' writes, which are now gone. store_take_lost_reads hands it over. */
static _Thread_local int reads_lost;

int store_take_lost_reads(void)
{
	int lost = reads_lost;
	reads_lost = 0;
	return lost;
}

/* Wait until the group of `tx` has ended. A member leaves its group open
 * while another thread is counted in gqueued, for that one to join it; but
 * that thread may give up its wait for the lock (lock_within's deadline)
 * without ever taking it, and the group then waits for whoever takes the
 * lock next: with nobody, for ever, its members' writes uncommitted. So
 * every STORE_GROUP_ORPHAN_MS a waiting member takes the lock if it is free,
 * which ends an open group (as any lock taker does); a holder of the lock
 * ends it or hands it on as usual. */
static void group_wait(store *s, evh_tx *tx)
{
	pthread_mutex_lock(&s->gmu);
	while (!tx->gdone) {
		struct timespec until = clock_after_ms(CLOCK_REALTIME, STORE_GROUP_ORPHAN_MS);
		if (pthread_cond_timedwait(&s->gcv, &s->gmu, &until) != ETIMEDOUT || tx->gdone)
			continue;
		pthread_mutex_unlock(&s->gmu);
		if (lock_try(s) == EVH_OK) {
			if (s->gopen)
				group_commit_locked(s);
			store_unlock(s);
		}
		pthread_mutex_lock(&s->gmu);
	}
	pthread_mutex_unlock(&s->gmu);
}

/* End a group member: keep its writes (commit) or undo them, then wait for
 * the group to be committed, by this thread or by a later member. */
static int member_end(evh_tx *tx, int keep)
{
	store *s = tx->s;
	int status = EVH_OK, wait = 0, ended;

	if (tx->plugin_own)
		s->plugin_tx = NULL;
	tx_detach_rows(tx);
	if (keep && tx->failed)
		status = tx->failed;
	else if (keep)
		status = deferred_fk_check(tx);
	if (keep && !status)
		status = host_run(s, "RELEASE evh_member", NULL, 0, NULL, NULL, tx->err,
		                  sizeof tx->err);
	if (!keep || status) {
		char ignore[STORE_ERR_LEN];
		/* (SQLite may have ended the group's transaction: nothing to undo.) */
		if (!sqlite3_get_autocommit(s->w.db)) {
			if (host_run(s, "ROLLBACK TO evh_member", NULL, 0, NULL, NULL, ignore,
			             sizeof ignore) == EVH_OK)
				host_run(s, "RELEASE evh_member", NULL, 0, NULL, NULL, ignore,
				         sizeof ignore);
			else { /* out of memory: its writes must not commit with the group's;
			        * none do, the group fails (store_tx_begin_grouped ends it) */
				s->gfailed = 1;
				rollback_if_open(s->w.db);
			}
		}
		/* A rollback still waits if the group held others' writes: it may
		 * have read them, and they are not durable yet. */
		wait = s->gmembers > 0;
	} else {
		s->gmembers++;
		s->goutbox += tx->outbox_added;
		wait = 1;
	}
	if (wait) {
		tx->gnext = s->gwait;
		s->gwait = tx;
	}
	/* Under concurrent load (this group, or the one before it, has two
	 * members or more), give the threads that are runnable but not running
	 * (two cores, many HTTP workers) one chance to queue for the lock before
	 * the group commits: they join this group instead of waiting for its
	 * fsync and making the next one. Groups of the HTTP write benchmark went
	 * from 10.5 to 14 members, its requests/s up by a fifth or more
	 * (docs/benchmarks.md). A lone writer at light load (groups of one)
	 * never yields. */
	ended = sqlite3_get_autocommit(s->w.db); /* by SQLite, after an error */
	if (!ended && atomic_load(&s->gqueued) == 0 && s->gmembers >= 1 &&
	    (s->gmembers >= 2 || s->glast >= 2) && s->gmembers < STORE_GROUP_MAX)
		sched_yield();
	if (ended || atomic_load(&s->gqueued) == 0 || s->gmembers >= STORE_GROUP_MAX)
		group_commit_locked(s);
	store_unlock(s);
	if (wait) {
		group_wait(s, tx);
		if (keep && !status && (status = tx->gstatus) != EVH_OK)
			/* Said by the caller (store_thread_error), with the file, as
			 * a commit of its own is: the group's reason. */
			set_err(thread_error, sizeof thread_error, "%s: %s",
			        sqlite3_db_filename(s->w.db, "main"), tx->err);
		else if (tx->gstatus != EVH_OK)
			/* Rolled back, or kept with an error of its own: what it read,
			 * and what its error was about (a UNIQUE conflict with an
			 * earlier member's row), may be writes that are now gone. */
			reads_lost = 1;
	}
	free(tx);
	return status;
}

int store_tx_commit(evh_tx *tx)
{
	char why[256];
	sqlite3 *db;
	int status;

	if (!tx)
		return EVH_EINVAL;
	if (tx->rd)
		return read_end(tx);
	if (tx->grouped)
		return member_end(tx, 1);
	db = tx->s->w.db;
	tx_detach_rows(tx);
	if (tx->failed) {
		status = tx->failed;
		rollback_if_open(db);
		tx_finish(tx, 0);
		return status;
	}
	status = host_simple(tx->s, "COMMIT", why, sizeof why);
	if (status) {
		/* Said by the caller (store_thread_error), with the file. */
		snprintf(thread_error, sizeof thread_error, "%s: COMMIT: %s",
		         sqlite3_db_filename(db, "main"), why);
		rollback_if_open(db);
	} else {
		full_clear(tx->s, "writes succeed again");
		io_clear(tx->s);
	}
	tx_finish(tx, status == EVH_OK);
	return status;
}

void store_tx_rollback(evh_tx *tx)
{
	if (!tx)
		return;
	if (tx->rd) {
		read_end(tx);
		return;
	}
	if (tx->grouped) {
		member_end(tx, 0);
		return;
	}
	tx_detach_rows(tx);
	rollback_if_open(tx->s->w.db);
	tx_finish(tx, 0);
}

/* Savepoints are host statements (`sql`: a literal): the consumer opens one
 * per event, and re-parsing the SQL each time would cost more than the work. */
static int savepoint_sql(evh_tx *tx, const char *sql)
{
	return host_run(tx->s, sql, NULL, 0, NULL, NULL, tx->err, sizeof tx->err);
}

int store_tx_savepoint(evh_tx *tx)
{
	int status;
	if (!tx)
		return EVH_EINVAL;
	if (tx->rd)
		return read_refused(tx, "a savepoint");
	if (tx->in_savepoint)
		return tx_fail_msg(tx, EVH_ESTATE, "a savepoint is already open");
	if (tx->failed)
		return tx->failed;
	status = savepoint_sql(tx, "SAVEPOINT evh_event");
	if (status)
		return tx_fail(tx, status);
	tx->in_savepoint = 1;
	tx->sp_outbox_added = tx->outbox_added;
	return EVH_OK;
}

int store_tx_savepoint_release(evh_tx *tx)
{
	int status;
	if (!tx)
		return EVH_EINVAL;
	if (!tx->in_savepoint)
		return tx_fail_msg(tx, EVH_ESTATE, "no savepoint is open");
	/* The handler's cursors end with it: an open read would hold up the
	 * batch's COMMIT. */
	tx_detach_rows(tx);
	if (tx->failed)
		return tx->failed; /* still open: the caller rolls it back */
	status = deferred_fk_check(tx);
	if (status)
		return status; /* likewise */
	status = savepoint_sql(tx, "RELEASE evh_event");
	if (status)
		return tx_fail(tx, status);
	tx->in_savepoint = 0;
	return EVH_OK;
}

int store_tx_savepoint_rollback(evh_tx *tx)
{
	int status;
	if (!tx)
		return EVH_EINVAL;
	if (!tx->in_savepoint)
		return tx_fail_msg(tx, EVH_ESTATE, "no savepoint is open");
	tx_detach_rows(tx);
	tx->in_savepoint = 0;
	status = savepoint_sql(tx, "ROLLBACK TO evh_event");
	if (!status)
		status = savepoint_sql(tx, "RELEASE evh_event");
	/* After some errors (I/O, disk full) SQLite has rolled back the whole
	 * transaction by itself: nothing before the savepoint survives either. */
	if (!status && sqlite3_get_autocommit(tx->s->w.db)) {
		snprintf(tx->err, sizeof tx->err, "the database rolled the transaction back");
		status = EVH_ESTORE;
	}
	if (status) {
		tx->failed = status;
		return status;
	}
	tx->failed = 0;
	tx->outbox_added = tx->sp_outbox_added;
	return EVH_OK;
}

const char *store_tx_error(evh_tx *tx)
{
	if (!tx)
		return "no transaction (NULL)";
	return tx->err;
}

store *store_of_tx(evh_tx *tx) { return tx ? tx->s : NULL; }

int store_exec(evh_tx *tx, const char *sql, const evh_value *args, size_t nargs,
               int64_t *changes)
{
	int status;
	if (!tx)
		return EVH_EINVAL;
	if (!sql)
		return tx_fail_msg(tx, EVH_EINVAL, "no SQL given");
	if (tx->rd)
		return read_refused(tx, "evh_exec");
	if (tx_alive(tx))
		return tx->failed;
	status = stmt_run(tx->s, sql, args, nargs, changes, NULL, tx->err, sizeof tx->err);
	return status ? tx_fail(tx, status) : EVH_OK;
}

/* ---------------------------------------------------------------- rows */

int store_query(evh_tx *tx, const char *sql, const evh_value *args, size_t nargs,
                evh_rows **rows)
{
	evh_rows *r;
	int status;

	if (!tx)
		return EVH_EINVAL;
	if (!sql || !rows)
		return tx_fail_msg(tx, EVH_EINVAL, "query needs SQL and a rows pointer");
	*rows = NULL;
	if (tx_alive(tx))
		return tx->failed;
	r = calloc(1, sizeof *r);
	if (!r)
		return tx_fail_msg(tx, EVH_ENOMEM, "out of memory");
	status = stmt_acquire(tx_conn(tx), sql, &r->ref, tx->err, sizeof tx->err);
	if (!status)
		status = stmt_bind(tx_conn(tx)->db, r->ref.st, args, nargs, tx->err, sizeof tx->err);
	if (status) {
		stmt_release(&r->ref);
		free(r);
		return tx_fail(tx, status);
	}
	r->tx = tx;
	r->plugin = tx_conn(tx)->plugin_sql;
	r->state = ROWS_READY;
	r->next = tx->open_rows;
	tx->open_rows = r;
	*rows = r;
	return EVH_OK;
}

int store_rows_next(evh_rows *r)
{
	int rc;
	if (!r)
		return EVH_EINVAL;
	if (r->state == ROWS_DETACHED)
		return EVH_ESTATE;
	if (r->state == ROWS_DONE)
		return 0; /* stepping again would silently rerun the query */
	/* SQLite rolled the transaction back after an error since the cursor
	 * was opened: a step now would run outside it, and a write there (an
	 * INSERT ... RETURNING) commit on its own. */
	if (tx_alive(r->tx) != EVH_OK) {
		r->state = ROWS_DONE;
		return EVH_ESTORE;
	}
	/* A step may prepare the statement again (the schema changed since):
	 * a plugin's, under the authorizer, as when it was first prepared. */
	if (r->plugin)
		plugin_sql_set(tx_conn(r->tx), 1);
	rc = sqlite3_step(r->ref.st);
	if (r->plugin)
		plugin_sql_set(tx_conn(r->tx), 0);
	if (rc == SQLITE_ROW) {
		r->state = ROWS_ON_ROW;
		return 1;
	}
	r->state = ROWS_DONE;
	if (rc == SQLITE_DONE)
		return 0;
	return tx_fail(r->tx,
	               step_fail(tx_conn(r->tx)->db, r->ref.st, rc, r->tx->err, sizeof r->tx->err));
}

int store_rows_count(evh_rows *r)
{
	return r && r->ref.st ? sqlite3_column_count(r->ref.st) : 0;
}

const char *store_rows_name(evh_rows *r, int col)
{
	if (col < 0 || col >= store_rows_count(r))
		return NULL;
	return sqlite3_column_name(r->ref.st, col);
}

/* Column accessors only make sense on a current row and a real column. */
static int rows_col_ok(evh_rows *r, int col)
{
	return r && r->state == ROWS_ON_ROW && col >= 0 && col < sqlite3_column_count(r->ref.st);
}

evh_value_type store_rows_type(evh_rows *r, int col)
{
	if (!rows_col_ok(r, col))
		return EVH_VAL_NULL;
	switch (sqlite3_column_type(r->ref.st, col)) {
	case SQLITE_INTEGER:
		return EVH_VAL_INT;
	case SQLITE_FLOAT:
		return EVH_VAL_REAL;
	case SQLITE_TEXT:
		return EVH_VAL_TEXT;
	case SQLITE_BLOB:
		return EVH_VAL_BLOB;
	default:
		return EVH_VAL_NULL;
	}
}

int64_t store_rows_int(evh_rows *r, int col)
{
	return rows_col_ok(r, col) ? sqlite3_column_int64(r->ref.st, col) : 0;
}

double store_rows_real(evh_rows *r, int col)
{
	return rows_col_ok(r, col) ? sqlite3_column_double(r->ref.st, col) : 0.0;
}

const char *store_rows_text(evh_rows *r, int col, size_t *len)
{
	const char *text = NULL;
	if (rows_col_ok(r, col))
		text = (const char *)sqlite3_column_text(r->ref.st, col);
	if (len) /* column_bytes after column_text: the length of the text form */
		*len = text ? (size_t)sqlite3_column_bytes(r->ref.st, col) : 0;
	return text;
}

static void rows_unlink(evh_rows *r)
{
	for (evh_rows **pp = &r->tx->open_rows; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			return;
		}
	}
}

void store_rows_close(evh_rows *r)
{
	if (!r)
		return;
	if (r->tx)
		rows_unlink(r);
	stmt_release(&r->ref);
	free(r);
}

/* ---------------------------------------------------------- query_json */

static char *base64_encode(const unsigned char *p, size_t n)
{
	static const char abc[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < n)
			v |= p[i + 2];
		*o++ = abc[(v >> 18) & 63];
		*o++ = abc[(v >> 12) & 63];
		*o++ = i + 1 < n ? abc[(v >> 6) & 63] : '=';
		*o++ = i + 2 < n ? abc[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

static int is_json_column(const char *name)
{
	size_t n = name ? strlen(name) : 0;
	return n > 5 && !strcmp(name + n - 5, "_json");
}

/* A TEXT value of a *_json column, parsed, its bytes that are not UTF-8
 * as U+FFFD (as a TEXT column's: json_scalar); NULL when it is not JSON or
 * is nested deeper than JSON_WORKER_DEPTH (this runs on HTTP workers), or
 * when it is but memory ran out (*oom set). */
static cJSON *json_embedded(sqlite3_stmt *st, int col, int *oom)
{
	const char *text = (const char *)sqlite3_column_text(st, col);
	size_t len = (size_t)sqlite3_column_bytes(st, col);
	char *clean;
	cJSON *v;
	int json;
	*oom = 0;
	if (!text || strlen(text) != len) /* an embedded NUL would hide the rest */
		return NULL;
	if ((clean = json_utf8_scrub(text, oom)) != NULL) {
		text = clean;
		len = strlen(clean);
	} else if (*oom) {
		return NULL;
	}
	json = json_check(text, len, JSON_WORKER_DEPTH, NULL) == JSON_OK;
	v = json ? cJSON_ParseWithLengthOpts(text, len + 1, NULL, 1) : NULL;
	*oom = json && !v;
	free(clean);
	return v;
}

static cJSON *json_scalar(sqlite3_stmt *st, int col)
{
	char num[32];
	switch (sqlite3_column_type(st, col)) {
	case SQLITE_INTEGER: /* raw, so 64-bit ids survive (a double keeps 53 bits) */
		snprintf(num, sizeof num, "%" PRId64, (int64_t)sqlite3_column_int64(st, col));
		return cJSON_CreateRaw(num);
	case SQLITE_FLOAT:
		return cJSON_CreateNumber(sqlite3_column_double(st, col));
	case SQLITE_TEXT: {
		/* Stored as given (a client's %FF decoded into a capture, say):
		 * bytes that are not UTF-8 become U+FFFD, or the whole answer
		 * would not be JSON a client's parser takes. */
		const char *t = (const char *)sqlite3_column_text(st, col);
		int oom = 0;
		char *clean = t ? json_utf8_scrub(t, &oom) : NULL;
		cJSON *v = oom ? NULL : cJSON_CreateString(clean ? clean : t);
		free(clean);
		return v;
	}
	case SQLITE_BLOB: {
		char *b64 = base64_encode(sqlite3_column_blob(st, col),
		                          (size_t)sqlite3_column_bytes(st, col));
		cJSON *v = b64 ? cJSON_CreateString(b64) : NULL;
		free(b64);
		return v;
	}
	default:
		return cJSON_CreateNull();
	}
}

/* One column of the current row into `obj`. A TEXT column named "<x>_json" is
 * embedded as JSON under the key "<x>" (so "doc_json" becomes "doc"). The key
 * loses the suffix whatever the value's type (NULL, say), so all rows of a
 * result have the same keys. */
static int json_column(evh_rows *r, cJSON *obj, int col, const char *name, size_t rowno)
{
	sqlite3_stmt *st = r->ref.st;
	int embed = is_json_column(name);
	char *key = embed ? strndup(name, strlen(name) - 5) : NULL;
	cJSON *v = NULL;
	int status = EVH_OK, oom = 0;

	if (embed && !key)
		return tx_fail_msg(r->tx, EVH_ENOMEM, "out of memory");
	if (embed && sqlite3_column_type(st, col) == SQLITE_TEXT) {
		v = json_embedded(st, col, &oom);
		if (!v && oom) {
			status = tx_fail_msg(r->tx, EVH_ENOMEM, "out of memory");
			goto out;
		}
		if (!v) {
			status = tx_fail_msg(r->tx, EVH_ESTORE,
			                     "column %s of row %zu is not valid JSON (or is nested "
			                     "deeper than %d levels)",
			                     name, rowno, JSON_WORKER_DEPTH);
			goto out;
		}
	} else {
		v = json_scalar(st, col);
	}
	if (!v || !cJSON_AddItemToObject(obj, embed ? key : name, v)) {
		cJSON_Delete(v);
		status = tx_fail_msg(r->tx, EVH_ENOMEM, "out of memory");
	}
out:
	free(key);
	return status;
}

/* One row as a JSON object appended to `arr`. */
static int json_row(evh_rows *r, cJSON *arr, size_t rowno)
{
	sqlite3_stmt *st = r->ref.st;
	int ncol = sqlite3_column_count(st);
	cJSON *obj = cJSON_CreateObject();

	if (!obj || !cJSON_AddItemToArray(arr, obj)) {
		cJSON_Delete(obj);
		return tx_fail_msg(r->tx, EVH_ENOMEM, "out of memory");
	}
	for (int c = 0; c < ncol; c++) {
		const char *name = sqlite3_column_name(st, c);
		int status = json_column(r, obj, c, name ? name : "", rowno);
		if (status)
			return status;
	}
	return EVH_OK;
}

int store_query_json(evh_tx *tx, const char *sql, const evh_value *args, size_t nargs,
                     char **json, size_t *len)
{
	evh_rows *r = NULL;
	cJSON *arr = NULL;
	size_t rowno = 0;
	int status, rc;

	if (!tx)
		return EVH_EINVAL;
	if (!json)
		return tx_fail_msg(tx, EVH_EINVAL, "query_json needs a json pointer");
	*json = NULL;
	status = store_query(tx, sql, args, nargs, &r);
	if (status)
		return status;
	arr = cJSON_CreateArray();
	if (!arr) {
		status = tx_fail_msg(tx, EVH_ENOMEM, "out of memory");
		goto out;
	}
	while ((rc = store_rows_next(r)) == 1) {
		status = json_row(r, arr, ++rowno);
		if (status)
			goto out;
	}
	if (rc < 0) {
		status = rc;
		goto out;
	}
	*json = jsonb_print(arr);
	if (!*json) {
		status = tx_fail_msg(tx, EVH_ENOMEM, "out of memory");
		goto out;
	}
	if (len)
		*len = strlen(*json);
out:
	cJSON_Delete(arr);
	store_rows_close(r);
	return status;
}

/* -------------------------------------------------------------- outbox */

/* A publish refused at outbox_limit. A burst of requests meets the bound
 * many times a second, each answered 503 (HTTP) or retried (an event):
 * one line says it, and the next, a minute later at most, how many were
 * refused meanwhile. Neither the HTTP layer nor the bundled plugins say
 * each refusal again. No request's context: the line is for all of them. */
static void outbox_full_say(store *s, int64_t waiting)
{
	int64_t unsaid;
	if (!log_every_due(&s->outbox_full_said, clock_mono_ms(), 60000, &unsaid))
		return;
	log_msg_no_context(EVH_LOG_WARN, STORE_LOG,
	                   "%s: outbox full (%" PRId64 " events waiting, [store] outbox_max_rows "
	                   "%" PRId64 "): publishing is refused (HTTP 503 with Retry-After) until "
	                   "the relay sends events to Kafka; %" PRId64 " more refused since the "
	                   "last such line (at most one a minute)",
	                   sqlite3_db_filename(s->w.db, "main"), waiting, atomic_load(&s->outbox_limit),
	                   unsaid);
}

/* The relay made room below outbox_limit after a refusal was said: say
 * so, with the refusals since that line (a burst that ended within the
 * minute is counted here, not only at the next refusal, whenever that
 * is), and say the next refusal at once. Under the store's lock, as
 * store_outbox_add. */
static void outbox_room_say(store *s, int64_t waiting)
{
	int64_t unsaid, limit = atomic_load(&s->outbox_limit);
	if (!atomic_load(&s->outbox_full_said.last_ms) || (limit && waiting >= limit))
		return;
	unsaid = atomic_exchange(&s->outbox_full_said.unsaid, 0);
	atomic_store(&s->outbox_full_said.last_ms, 0);
	log_msg_no_context(EVH_LOG_INFO, STORE_LOG,
	                   "%s: the outbox has room again (%" PRId64 " events waiting); %" PRId64
	                   " more publishes were refused since the last 'outbox full' line",
	                   sqlite3_db_filename(s->w.db, "main"), waiting, unsaid);
}

int store_outbox_add(evh_tx *tx, const outbox_row *row)
{
	store *s;
	int64_t pending, seq, limit;
	int status;

	if (!tx)
		return EVH_EINVAL;
	if (tx->rd)
		return read_refused(tx, "evh_publish");
	if (!row || !row->id || !row->topic || !row->type || !row->time ||
	    (!row->data && row->data_len))
		return tx_fail_msg(tx, EVH_EINVAL,
		                   "outbox row needs id, topic, type, time and data");
	s = tx->s;
	if (tx_alive(tx))
		return tx->failed;
	pending = atomic_load(&s->pending) + s->goutbox; /* + the open group's */
	limit = atomic_load(&s->outbox_limit);
	if (limit && pending + tx->outbox_added >= limit) {
		outbox_full_say(s, pending + tx->outbox_added);
		return tx_fail_msg(tx, EVH_EFULL, "outbox full (%" PRId64 " events waiting)",
		                   pending + tx->outbox_added);
	}
	evh_value v[8] = {
	    EVH_TEXT(row->id),     EVH_TEXT(row->topic),  EVH_TEXT(row->key),
	    EVH_TEXT(row->type),   EVH_TEXT(row->source), EVH_TEXT(row->time),
	    EVH_TEXT(row->traceparent), EVH_BLOB(row->data, row->data_len),
	};
	status = host_run(s,
	                  "INSERT INTO evh_log(id, topic, key, type, source, time, traceparent,"
	                  " data) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
	                  v, 8, NULL, NULL, tx->err, sizeof tx->err);
	if (status)
		return tx_fail(tx, status);
	seq = sqlite3_last_insert_rowid(s->w.db);
	v[0] = EVH_INT(seq);
	status = host_run(s, "INSERT INTO evh_pending(seq) VALUES(?)", v, 1, NULL, NULL, tx->err,
	                  sizeof tx->err);
	if (status)
		return tx_fail(tx, status);
	tx->outbox_added++;
	return EVH_OK;
}

/* One allocation per row (the relay reads thousands a second): the data,
 * NUL-terminated as it is usually JSON, then the text columns, in one block
 * that row->data points to; store_outbox_rows_free frees that. */
static int outbox_row_load(sqlite3_stmt *st, outbox_row *row)
{
	char **dst[7] = {&row->id,     &row->topic, &row->key,        &row->type,
	                 &row->source, &row->time,  &row->traceparent};
	const char *text[7];
	size_t len[7], total;
	const void *data = sqlite3_column_blob(st, 8);
	char *p;

	row->seq = sqlite3_column_int64(st, 0);
	row->data_len = (size_t)sqlite3_column_bytes(st, 8);
	total = row->data_len + 1;
	for (int c = 0; c < 7; c++) { /* column_text before column_bytes */
		text[c] = (const char *)sqlite3_column_text(st, c + 1);
		len[c] = text[c] ? strlen(text[c]) + 1 : 0;
		total += len[c];
	}
	p = malloc(total);
	if (!p)
		return EVH_ENOMEM;
	row->data = p;
	if (row->data_len)
		memcpy(p, data, row->data_len);
	p[row->data_len] = '\0';
	p += row->data_len + 1;
	for (int c = 0; c < 7; c++) {
		*dst[c] = text[c] ? memcpy(p, text[c], len[c]) : NULL;
		p += len[c];
	}
	return EVH_OK;
}

/* Rows of evh_pending after `after_seq`, in order, through the reader
 * connection (under rmu). */
static int outbox_fetch_reader(store *s, int64_t after_seq, size_t max, outbox_row *rows,
                               size_t *n)
{
	static const char sql[] = "SELECT l.seq, id, topic, key, type, source, time, traceparent,"
	                          " data FROM evh_pending AS p JOIN evh_log AS l ON l.seq = p.seq"
	                          " WHERE p.seq > ? ORDER BY p.seq LIMIT ?";
	int rc = SQLITE_OK, status = EVH_OK;

	if (!s->rfetch)
		rc = sqlite3_prepare_v3(s->rdb, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->rfetch, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_bind_int64(s->rfetch, 1, after_seq)) == SQLITE_OK)
		rc = sqlite3_bind_int64(s->rfetch, 2, max > INT64_MAX ? INT64_MAX : (int64_t)max);
	while (rc == SQLITE_OK && !status && *n < max &&
	       (rc = sqlite3_step(s->rfetch)) == SQLITE_ROW) {
		status = outbox_row_load(s->rfetch, &rows[(*n)++]);
		rc = SQLITE_OK;
	}
	if (rc != SQLITE_OK && rc != SQLITE_DONE) {
		log_error(STORE_LOG, "%s: outbox read: %s", sqlite3_db_filename(s->rdb, "main"),
		          sqlite3_errmsg(s->rdb));
		status = reader_status(s, rc);
	}
	if (s->rfetch)
		sqlite3_reset(s->rfetch); /* ends the read: checkpoints may pass it */
	return status;
}

int store_outbox_fetch(store *s, int64_t after_seq, size_t max, outbox_row **rows, size_t *n)
{
	outbox_row *out;
	size_t got = 0;
	int status;

	if (!s || !rows || !n)
		return EVH_EINVAL;
	*rows = NULL;
	*n = 0;
	if (!max)
		return EVH_OK;
	out = calloc(max, sizeof *out);
	if (!out)
		return EVH_ENOMEM;
	pthread_mutex_lock(&s->rmu);
	status = outbox_fetch_reader(s, after_seq, max, out, &got);
	pthread_mutex_unlock(&s->rmu);
	if (status) {
		store_outbox_rows_free(out, got);
		return status;
	}
	*rows = out;
	*n = got;
	return EVH_OK;
}

void store_outbox_rows_free(outbox_row *rows, size_t n)
{
	if (!rows)
		return;
	for (size_t i = 0; i < n; i++)
		free(rows[i].data); /* the row's one block (outbox_row_load) */
	free(rows);
}

/* Delivery records are written by statements of a few fixed sizes (so they
 * stay in the statement cache), each joining a VALUES list of (seq,
 * partition, offset) to evh_pending; then the rows leave evh_pending by runs
 * of consecutive seq. Per row statements cost the relay more than the rows. */
static const size_t move_chunks[] = {64, 16, 4, 1};

/* Now, as STORE_NOW_SQL writes it (2026-01-02T03:04:05.678Z); the date and
 * time up to the second are formatted once a second per thread (the
 * consumer stamps every inbox record). */
static void now_text(char out[32])
{
	static __thread time_t last = -1;
	static __thread char prefix[24];
	struct timespec ts;
	long ms;
	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != last) {
		struct tm tm;
		gmtime_r(&ts.tv_sec, &tm);
		strftime(prefix, sizeof prefix, "%Y-%m-%dT%H:%M:%S", &tm);
		last = ts.tv_sec;
	}
	ms = ts.tv_nsec / 1000000L;
	memcpy(out, prefix, 19);
	out[19] = '.';
	out[20] = (char)('0' + ms / 100);
	out[21] = (char)('0' + ms / 10 % 10);
	out[22] = (char)('0' + ms % 10);
	out[23] = 'Z';
	out[24] = '\0';
}

static int delivery_chunk(store *s, const outbox_done *d, size_t n, const char *now,
                          int64_t *logged, char *err, size_t errlen)
{
	char sql[2048];
	evh_value v[1 + 3 * 64];
	size_t len, nv = 0;
	int64_t changes = 0;
	int status;

	len = (size_t)snprintf(sql, sizeof sql,
	                       "INSERT OR IGNORE INTO evh_delivery(seq, delivered_at, \"partition\","
	                       " \"offset\") SELECT v.column1, ?, v.column2, v.column3 FROM (VALUES ");
	v[nv++] = EVH_TEXT(now);
	for (size_t i = 0; i < n; i++) {
		len += (size_t)snprintf(sql + len, sizeof sql - len, "%s(?, ?, ?)", i ? ", " : "");
		v[nv++] = EVH_INT(d[i].seq);
		v[nv++] = d[i].partition < 0 ? EVH_NULL() : EVH_INT(d[i].partition);
		v[nv++] = d[i].offset < 0 ? EVH_NULL() : EVH_INT(d[i].offset);
	}
	/* Only rows still waiting: one delivered twice (sent again after a
	 * failure) keeps its first record. */
	snprintf(sql + len, sizeof sql - len,
	         ") AS v JOIN evh_pending AS p ON p.seq = v.column1");
	status = stmt_run(s, sql, v, nv, &changes, NULL, err, errlen);
	if (!status)
		*logged += changes;
	return status;
}

static int done_cmp(const void *a, const void *b)
{
	int64_t x = ((const outbox_done *)a)->seq, y = ((const outbox_done *)b)->seq;
	return (x > y) - (x < y);
}

/* `d` sorted by seq: delete it by runs of consecutive seq. */
static int outbox_delete_runs(store *s, const outbox_done *d, size_t n, int64_t *moved,
                              char *err, size_t errlen)
{
	int status = EVH_OK;

	for (size_t i = 0, j; !status && i < n; i = j) {
		evh_value v[2];
		int64_t changes = 0;
		for (j = i + 1; j < n && d[j].seq <= d[j - 1].seq + 1; j++)
			;
		v[0] = EVH_INT(d[i].seq);
		v[1] = EVH_INT(d[j - 1].seq);
		status = host_run(s, "DELETE FROM evh_pending WHERE seq BETWEEN ? AND ?", v, 2,
		                  &changes, NULL, err, errlen);
		*moved += changes;
	}
	return status;
}

/* The relay's bookkeeping need not be durable at once: lost in a power
 * failure, its deletions are redone after the events are produced again
 * (at least once, as always). So its transactions commit without an fsync
 * of their own (SQLite's synchronous = NORMAL, which may only be set
 * outside a transaction); the next durable commit syncs them anyway. */
static void lazy_sync(store *s, int on)
{
	/* Not through the statement cache: this pragma takes effect when it is
	 * prepared, not when a prepared copy runs again. Setting FULL again may
	 * fail (out of memory preparing it): the next lock taker does it
	 * (lock_taken). */
	if (s->sync_full &&
	    sqlite3_exec(s->w.db, on ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL",
	                 NULL, NULL, NULL) != SQLITE_OK &&
	    !on)
		s->sync_lazy = 1;
}

/* `d` sorted by seq, so the delivery records are appended in order. A
 * failure's reason goes to store_thread_error. */
static int outbox_delivered_locked(store *s, const outbox_done *d, size_t n, int64_t *moved,
                                   int64_t *logged)
{
	char now[32], err[STORE_ERR_LEN] = "";
	size_t i = 0, k = 0;
	int status;

	lazy_sync(s, 1);
	status = begin_immediate(s, err, sizeof err);

	now_text(now);
	while (!status && i < n) {
		while (move_chunks[k] > n - i)
			k++;
		status = delivery_chunk(s, d + i, move_chunks[k], now, logged, err, sizeof err);
		i += move_chunks[k];
	}
	if (!status)
		status = outbox_delete_runs(s, d, n, moved, err, sizeof err);
	if (!status)
		status = host_simple(s, "COMMIT", err, sizeof err);
	if (status) {
		rollback_if_open(s->w.db);
		*moved = *logged = 0;
		if (err[0])
			snprintf(thread_error, sizeof thread_error, "%s", err);
	}
	lazy_sync(s, 0);
	return status;
}

int store_outbox_delivered(store *s, const outbox_done *d, size_t n)
{
	outbox_done *sorted;
	int64_t moved = 0, logged = 0;
	int status;

	if (!s || (n && !d))
		return EVH_EINVAL;
	if (!n)
		return EVH_OK;
	sorted = malloc(n * sizeof *sorted);
	if (!sorted) {
		snprintf(thread_error, sizeof thread_error, "out of memory");
		return EVH_ENOMEM;
	}
	memcpy(sorted, d, n * sizeof *sorted);
	qsort(sorted, n, sizeof *sorted, done_cmp);
	status = store_lock_first(s, STORE_RECORD_WAIT_MS);
	if (status) {
		free(sorted);
		return status;
	}
	status = outbox_delivered_locked(s, sorted, n, &moved, &logged);
	free(sorted);
	if (moved) {
		int64_t left;
		atomic_store(&s->delivered_ms, clock_wall_ms()); /* first: seen with the count */
		left = atomic_fetch_sub(&s->pending, moved) - moved;
		if (left < 0) /* only if someone deleted rows behind our back */
			atomic_store(&s->pending, 0);
		outbox_room_say(s, left < 0 ? 0 : left);
	}
	atomic_fetch_add(&s->events, logged);
	store_unlock(s);
	return status;
}

int64_t store_outbox_pending(store *s) { return s ? atomic_load(&s->pending) : 0; }

int64_t store_outbox_delivered_ms(store *s) { return s ? atomic_load(&s->delivered_ms) : 0; }

int64_t store_outbox_limit(store *s) { return s ? atomic_load(&s->outbox_limit) : 0; }

void store_checkpoint_stats(store *s, uint64_t *by_thread, uint64_t *by_writer)
{
	*by_thread = s ? atomic_load(&s->ckpt_thread_runs) : 0;
	*by_writer = s ? atomic_load(&s->ckpt_inline_runs) : 0;
}

int64_t store_wal_bytes(store *s)
{
	int64_t frames = s ? atomic_load_explicit(&s->wal_frames, memory_order_relaxed) : 0;
	/* A WAL file: a 32-byte header, then frames of a 24-byte header and a
	 * page each. */
	return frames > 0 ? 32 + frames * (24 + atomic_load(&s->page_size)) : 0;
}

int store_group_queued(store *s) { return s ? atomic_load(&s->gqueued) : 0; }

void store_group_stats(store *s, uint64_t *groups, uint64_t *members)
{
	*groups = s ? atomic_load(&s->groups) : 0;
	*members = s ? atomic_load(&s->grouped) : 0;
}

/* --------------------------------------------------------------- inbox */

int store_inbox_seen(evh_tx *tx, const char *event_id)
{
	evh_value v;
	int seen = 0, status;

	if (!tx)
		return EVH_EINVAL;
	if (!event_id)
		return tx_fail_msg(tx, EVH_EINVAL, "no event id");
	v = EVH_TEXT(event_id);
	status = host_run(tx->s, "SELECT 1 FROM evh_inbox WHERE event_id = ?", &v, 1, NULL, &seen,
	                  tx->err, sizeof tx->err);
	if (status)
		return tx_fail(tx, status);
	return seen;
}

int store_inbox_unclaim(evh_tx *tx, const char *event_id)
{
	evh_value v = EVH_TEXT(event_id);
	if (tx && !event_id)
		return tx_fail_msg(tx, EVH_EINVAL, "no event id");
	return store_exec(tx, "DELETE FROM evh_inbox WHERE event_id = ?", &v, 1, NULL);
}

/* A record of position id `v[0]` whose message had another timestamp than
 * `v[1]` is of another message at that position: one of a topic deleted and
 * made again, whose offsets start at 0 again. It goes, so the new one is
 * claimed; deleted and written anew (not updated in place), so the inbox
 * stays in handled_at order for store_inbox_prune. Records without a time
 * (a ce_id's, or written before there was one) never match. */
static int inbox_take_over(evh_tx *tx, const evh_value v[2])
{
	return host_run(tx->s, "DELETE FROM evh_inbox WHERE event_id = ? AND msg_time_ms != ?", v, 2,
	                NULL, NULL, tx->err, sizeof tx->err);
}

int store_inbox_claim(evh_tx *tx, const char *event_id, const char *topic, int32_t partition,
                      int64_t offset, int64_t time_ms)
{
	char now[32];
	evh_value v[6];
	int64_t added = 0;
	int status;

	if (!tx)
		return EVH_EINVAL;
	if (!event_id)
		return tx_fail_msg(tx, EVH_EINVAL, "no event id");
	if (tx_alive(tx))
		return tx->failed;
	v[0] = EVH_TEXT(event_id);
	v[1] = EVH_TEXT(topic);
	v[2] = EVH_INT(partition);
	v[3] = EVH_INT(offset);
	now_text(now); /* the same text as STORE_NOW_SQL, without SQLite's date parser */
	v[4] = EVH_TEXT(now);
	v[5] = time_ms >= 0 ? EVH_INT(time_ms) : EVH_NULL();
	status = time_ms >= 0 ? inbox_take_over(tx, (const evh_value[2]){v[0], v[5]}) : EVH_OK;
	if (!status)
		status = host_run(tx->s,
		                  "INSERT INTO evh_inbox(event_id, topic, \"partition\", \"offset\","
		                  " handled_at, msg_time_ms) VALUES(?, ?, ?, ?, ?, ?)"
		                  " ON CONFLICT(event_id) DO NOTHING",
		                  v, 6, &added, NULL, tx->err, sizeof tx->err);
	return status ? tx_fail(tx, status) : added > 0;
}

/* ----------------------------------------------------------- event log */

int64_t store_events_count(store *s) { return s ? atomic_load(&s->events) : 0; }

/* Bytes of event data a call of store_events_prune deletes at most (past
 * its first event): under secure_delete (Debian's SQLite is built with it)
 * every freed page is zeroed and written, and 2000 events of 900 KB held the
 * plugin's lock for 15 s, its requests and consumer waiting. */
#define STORE_PRUNE_BYTES (16 << 20)
static _Atomic int64_t prune_bytes = STORE_PRUNE_BYTES;

void store_set_prune_bytes(int64_t n) { atomic_store(&prune_bytes, n > 0 ? n : STORE_PRUNE_BYTES); }

/* A bounded prune: `sql` binds (age, max[, bytes]): "-<seconds> seconds"
 * for SQLite's date modifiers, the most rows to delete or look at, and (if
 * bytes > 0) the data bytes after which to stop. Under the lock, without an
 * fsync of its own (lazy_sync: redone after a crash). *more: the batch was
 * full, by rows, or (more_sql, binding age, gives a row) otherwise cut
 * short with old rows left. A failure's reason goes to store_thread_error.
 * `count` (optional): the table's row counter, kept up to date. */
struct prune_sql {
	const char *sql, *more_sql;
	_Atomic int64_t *count;
	int64_t bytes;
};

static int prune(store *s, const struct prune_sql *q, int64_t retention_ms, int max,
                 int64_t *deleted, int *more)
{
	char age[64], err[STORE_ERR_LEN] = "";
	evh_value v[3];
	int64_t changes = 0;
	int status, left = 0;

	if (deleted)
		*deleted = 0;
	if (more)
		*more = 0;
	if (!s || retention_ms <= 0 || max <= 0)
		return s ? EVH_OK : EVH_EINVAL;
	snprintf(age, sizeof age, "-%" PRId64 ".%03d seconds", retention_ms / 1000,
	         (int)(retention_ms % 1000));
	v[0] = EVH_TEXT(age);
	v[1] = EVH_INT(max);
	v[2] = EVH_INT(q->bytes);
	status = store_lock_within(s, STORE_PRUNE_WAIT_MS);
	if (status)
		return status;
	lazy_sync(s, 1);
	status = host_run(s, q->sql, v, q->bytes > 0 ? 3 : 2, &changes, NULL, err, sizeof err);
	lazy_sync(s, 0);
	if (!status && changes && changes < max && q->more_sql)
		status = host_run(s, q->more_sql, v, 1, NULL, &left, err, sizeof err);
	if (status && err[0])
		snprintf(thread_error, sizeof thread_error, "%s", err);
	if (changes && q->count && atomic_fetch_sub(q->count, changes) - changes < 0)
		atomic_store(q->count, 0);
	store_unlock(s);
	if (deleted)
		*deleted = changes;
	if (more)
		*more = !status && (changes == max || left);
	return status;
}

int store_events_prune(store *s, int64_t retention_ms, int max, int64_t *deleted, int *more)
{
	/* Bounded per call, by rows and by bytes, so a big backlog never holds
	 * the plugin's transactions up for long; the relay calls again while
	 * *more. Events are delivered about in seq order, so the oldest `max`
	 * delivery records are the candidates (no index on delivered_at to
	 * maintain), taken in seq order while the data before each is under
	 * the bound (length() of a BLOB reads its size, not its pages); an
	 * event delivered late waits until it is old itself. The trigger
	 * evh_delivery_delete deletes each record's event. Cut by bytes, the
	 * oldest record left is old: *more. */
	struct prune_sql q = {
	    "DELETE FROM evh_delivery WHERE seq IN (SELECT seq FROM"
	    " (SELECT d.seq, SUM(COALESCE(length(l.data), 0)) OVER (ORDER BY d.seq ROWS BETWEEN"
	    " UNBOUNDED PRECEDING AND 1 PRECEDING) AS before FROM (SELECT seq FROM"
	    " (SELECT seq, delivered_at FROM evh_delivery ORDER BY seq LIMIT ?2)"
	    " WHERE delivered_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?1)) AS d"
	    " LEFT JOIN evh_log AS l ON l.seq = d.seq)"
	    " WHERE before IS NULL OR before < ?3)",
	    "SELECT 1 FROM (SELECT delivered_at FROM evh_delivery ORDER BY seq LIMIT 1)"
	    " WHERE delivered_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?1)",
	    s ? &s->events : NULL, atomic_load(&prune_bytes)};
	return prune(s, &q, retention_ms, max, deleted, more);
}

int store_inbox_prune(store *s, int64_t retention_ms, int max, int64_t *deleted, int *more)
{
	struct prune_sql q = {
	    "DELETE FROM evh_inbox WHERE rowid IN (SELECT rowid FROM"
	    " (SELECT rowid, handled_at FROM evh_inbox ORDER BY rowid LIMIT ?2)"
	    " WHERE handled_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?1))",
	    NULL, NULL, 0};
	return prune(s, &q, retention_ms, max, deleted, more);
}

/* A TEXT or INTEGER column into `o` (see jsonb.h); SQL NULL as null. */
static void json_put_text_col(cJSON *o, const char *name, sqlite3_stmt *st, int col, int *ok)
{
	const char *t = (const char *)sqlite3_column_text(st, col);
	if (!t && sqlite3_column_type(st, col) != SQLITE_NULL)
		*ok = 0; /* SQLite out of memory */
	else
		jsonb_put_str(o, name, t, ok);
}

static void json_put_int_col(cJSON *o, const char *name, sqlite3_stmt *st, int col, int *ok)
{
	if (sqlite3_column_type(st, col) == SQLITE_NULL)
		jsonb_put_str(o, name, NULL, ok);
	else
		jsonb_put_num(o, name, (double)sqlite3_column_int64(st, col), ok);
}

/* The event's data as the JSON text it is (a raw item, printed as it
 * stands): never parsed, so a listing of large data takes memory in
 * proportion to its text, not a cJSON node per value (about 40 times more
 * for data of small values). Data that is not JSON (another producer's),
 * or is nested deeper than JSON_WORKER_DEPTH (a plugin may publish up to
 * JSON_MAX_DEPTH: a client parsing the whole listing with cJSON, as
 * evhostctl does, could not take it), comes as its bytes, in base64. */
static int json_add_event_data(cJSON *o, sqlite3_stmt *st, int col)
{
	const char *p = sqlite3_column_blob(st, col);
	size_t n = (size_t)sqlite3_column_bytes(st, col);
	cJSON *v = NULL;
	char *b64;

	/* The column as text is the same bytes, NUL-terminated by SQLite, and
	 * json_check refuses NUL bytes: cJSON's copy of it is the whole text. */
	if (p && n && json_check(p, n, JSON_WORKER_DEPTH, NULL) == JSON_OK) {
		const char *text = (const char *)sqlite3_column_text(st, col);
		v = text ? cJSON_CreateRaw(text) : NULL;
		return v && cJSON_AddItemToObject(o, "data", v) ? 0 : (cJSON_Delete(v), -1);
	}
	b64 = base64_encode((const unsigned char *)(p ? p : ""), p ? n : 0);
	v = b64 ? cJSON_CreateString(b64) : NULL;
	free(b64);
	return v && cJSON_AddItemToObject(o, "data_base64", v) ? 0 : (cJSON_Delete(v), -1);
}

size_t store_event_bytes(const cJSON *ev)
{
	const cJSON *d = cJSON_GetObjectItemCaseSensitive(ev, "data");
	if (!d)
		d = cJSON_GetObjectItemCaseSensitive(ev, "data_base64");
	return d && d->valuestring ? strlen(d->valuestring) : 0;
}

static cJSON *event_json(sqlite3_stmt *st)
{
	static const char *const text_cols[] = {"id", "topic", "key", "type", "source", "time",
	                                        "traceparent"};
	cJSON *o = cJSON_CreateObject();
	int ok = o != NULL;

	json_put_int_col(o, "seq", st, 0, &ok);
	for (int i = 0; ok && i < 7; i++)
		json_put_text_col(o, text_cols[i], st, i + 1, &ok);
	if (ok && json_add_event_data(o, st, 8))
		ok = 0;
	json_put_text_col(o, "delivered_at", st, 9, &ok);
	json_put_int_col(o, "partition", st, 10, &ok);
	json_put_int_col(o, "offset", st, 11, &ok);
	if (!ok) {
		cJSON_Delete(o);
		return NULL;
	}
	return o;
}

/* The event log for the admin API, read on a connection of its own, not
 * under mu: a WAL reader waits for no writer (a slow handler's batch holds
 * mu for as long as it runs) and sees only committed (durable) rows.
 *
 * Only rows below the lowest seq still pending are shown: Kafka acknowledges
 * rows out of seq order (across partitions), so a page holding seq N + 1
 * while N waits would have a client following the log with after= skip N
 * for good. seq is given out in commit order (SQLite has one writer), so
 * below that bound nothing can appear later. The bound is one look-up in
 * evh_pending's primary key, in the same statement, so the same snapshot.
 * Rows are read while those before hold less than STORE_EVENTS_PAGE_BYTES:
 * the next is not even stepped to (its data would be loaded). */
static int events_json_read(store *s, const char *path, const char *key, int64_t after_seq,
                            int limit, cJSON *arr)
{
	static const char cols[] =
	    "SELECT l.seq, id, topic, key, type, source, time, traceparent, data, delivered_at,"
	    " \"partition\", \"offset\" FROM evh_log AS l JOIN evh_delivery AS d ON d.seq = l.seq";
	char sql[768];
	evh_value v[3];
	size_t nv = 0;
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	size_t bytes = 0;
	int rc, status;

	snprintf(sql, sizeof sql,
	         "%s WHERE %sl.seq > ? AND l.seq < (SELECT COALESCE(MIN(seq), %" PRId64
	         ") FROM evh_pending) ORDER BY l.seq LIMIT ?",
	         cols, key ? "l.key = ? AND " : "", INT64_MAX);
	if (key)
		v[nv++] = EVH_TEXT(key);
	v[nv++] = EVH_INT(after_seq);
	v[nv++] = EVH_INT(limit);
	rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
		rc = sqlite3_exec(db, "PRAGMA query_only=1", NULL, NULL, NULL);
	}
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	status = rc == SQLITE_OK ? EVH_OK : reader_status(s, rc);
	if (!status)
		status = stmt_bind(db, st, v, nv, NULL, 0);
	while (!status && bytes < STORE_EVENTS_PAGE_BYTES && (rc = sqlite3_step(st)) != SQLITE_DONE) {
		cJSON *o;
		if (rc != SQLITE_ROW) {
			status = reader_status(s, rc);
			break;
		}
		o = event_json(st);
		if (!o || !cJSON_AddItemToArray(arr, o)) {
			cJSON_Delete(o);
			status = EVH_ENOMEM;
		} else {
			bytes += store_event_bytes(o);
		}
	}
	if (status && db)
		log_warn(STORE_LOG, "%s: reading the event log: %s", path, sqlite3_errmsg(db));
	sqlite3_finalize(st);
	sqlite3_close(db); /* NULL: a no-op */
	return status;
}

int store_events_list(store *s, const char *key, int64_t after_seq, int limit, cJSON **out)
{
	const char *path;
	int status;

	if (!s || !out || limit <= 0)
		return EVH_EINVAL;
	*out = NULL;
	path = sqlite3_db_filename(s->w.db, "main");
	if (!path || !*path)
		return EVH_ESTATE; /* not a file: no second connection reaches it */
	if (!(*out = cJSON_CreateArray()))
		return EVH_ENOMEM;
	status = events_json_read(s, path, key, after_seq, limit, *out);
	if (status) {
		cJSON_Delete(*out);
		*out = NULL;
	}
	return status;
}

int store_events_json(store *s, const char *key, int64_t after_seq, int limit, char **json)
{
	cJSON *arr;
	int status;

	if (!json)
		return EVH_EINVAL;
	*json = NULL;
	status = store_events_list(s, key, after_seq, limit, &arr);
	if (!status && !(*json = jsonb_print(arr)))
		status = EVH_ENOMEM;
	cJSON_Delete(arr);
	return status;
}

/* ---------------------------------------------------- replay and redrive */

/* Partitions per DELETE of inbox_forget_locked: evh_inbox has no index on
 * the position (one would cost every consumed event's insert), so each
 * statement scans the whole inbox once. One statement per range took a
 * scan per partition: a replay of 36 partitions over an inbox of 2 million
 * events held the store's lock for 5.9 s; one statement per topic, the
 * offset looked up by partition in a CASE, 0.5 s (measured by hand, the
 * same SQL, SQLite 3.40). Its text is the same whatever the count (unused
 * arms repeat the first), so it is prepared once. */
#define FORGET_PARTS 64
static char forget_sql[96 + FORGET_PARTS * 32];
static pthread_once_t forget_sql_once = PTHREAD_ONCE_INIT;

static void forget_sql_make(void)
{
	size_t len = (size_t)snprintf(forget_sql, sizeof forget_sql,
	                              "DELETE FROM evh_inbox WHERE topic = ?1 AND"
	                              " \"offset\" >= CASE \"partition\"");
	for (int k = 0; k < FORGET_PARTS; k++)
		len += (size_t)snprintf(forget_sql + len, sizeof forget_sql - len, " WHEN ?%d THEN ?%d",
		                        2 * k + 2, 2 * k + 3);
	snprintf(forget_sql + len, sizeof forget_sql - len, " END");
}

/* Forget the ranges of r[from]'s topic not yet `done`, at most FORGET_PARTS
 * partitions of them (a partition given twice: from the lower offset). */
static int forget_some(store *s, const inbox_range *r, size_t n, size_t from, char *done,
                       int64_t *deleted)
{
	evh_value v[1 + 2 * FORGET_PARTS];
	int64_t changes = 0;
	size_t k = 0;
	int status;

	v[0] = EVH_TEXT(r[from].topic);
	for (size_t i = from; i < n && k < FORGET_PARTS; i++) {
		size_t j;
		if (done[i] || strcmp(r[i].topic, r[from].topic))
			continue;
		done[i] = 1;
		for (j = 0; j < k && v[1 + 2 * j].i != r[i].partition; j++)
			;
		if (j < k) {
			if (r[i].from_offset < v[2 + 2 * j].i)
				v[2 + 2 * j].i = r[i].from_offset;
			continue;
		}
		v[1 + 2 * k] = EVH_INT(r[i].partition);
		v[2 + 2 * k++] = EVH_INT(r[i].from_offset);
	}
	for (size_t j = k; j < FORGET_PARTS; j++) {
		v[1 + 2 * j] = v[1];
		v[2 + 2 * j] = v[2];
	}
	status = stmt_run(s, forget_sql, v, 1 + 2 * FORGET_PARTS, &changes, NULL, NULL, 0);
	*deleted += changes;
	return status;
}

static int inbox_forget_locked(store *s, const inbox_range *r, size_t n, int64_t *deleted)
{
	char *done = calloc(n ? n : 1, 1);
	int status = done ? EVH_OK : EVH_ENOMEM;

	pthread_once(&forget_sql_once, forget_sql_make);
	if (!status)
		status = run_simple(s->w.db, "BEGIN IMMEDIATE", NULL, 0);
	for (size_t i = 0; !status && i < n; i++)
		if (!done[i]) /* with the later ones of its topic */
			status = forget_some(s, r, n, i, done, deleted);
	if (!status)
		status = run_simple(s->w.db, "COMMIT", NULL, 0);
	if (status) {
		rollback_if_open(s->w.db);
		*deleted = 0;
	}
	free(done);
	return status;
}

int store_inbox_forget(store *s, const inbox_range *r, size_t n, int64_t *deleted)
{
	int64_t count = 0;
	int status;

	if (deleted)
		*deleted = 0;
	if (!s || (n && !r))
		return EVH_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!r[i].topic)
			return EVH_EINVAL;
	status = store_lock(s);
	if (status)
		return status;
	status = inbox_forget_locked(s, r, n, &count);
	store_unlock(s);
	if (deleted)
		*deleted = count;
	return status;
}

int store_dlq_redriven(store *s, const char *dlq_topic, int32_t partition, int64_t offset,
                       int64_t time_ms)
{
	evh_value v[4];
	int found = 0, status;

	if (!s || !dlq_topic)
		return EVH_EINVAL;
	v[0] = EVH_TEXT(dlq_topic);
	v[1] = EVH_INT(partition);
	v[2] = EVH_INT(offset);
	v[3] = time_ms >= 0 ? EVH_INT(time_ms) : EVH_NULL();
	/* For the admin API, which answers 503 rather than hold a worker behind
	 * a handler's long transaction for as long as it runs. */
	status = store_lock_within(s, STORE_LOCK_WAIT_MS);
	if (status)
		return status;
	/* At that position, and the same dead letter: a topic deleted and made
	 * again numbers its new ones from 0 (a time not known, either side,
	 * goes by the position alone). */
	status = stmt_run(s,
	                  "SELECT 1 FROM evh_dlq_redriven WHERE dlq_topic = ?1 AND \"partition\" = ?2"
	                  " AND \"offset\" = ?3 AND (dlq_time_ms IS NULL OR ?4 IS NULL"
	                  " OR dlq_time_ms = ?4)",
	                  v, 4, NULL, &found, NULL, 0);
	store_unlock(s);
	return status ? status : found;
}

/* One row of evh_dlq_redriven, in the transaction open or as one of its
 * own; under the store's lock. */
static int mark_redriven(store *s, const store_redriven *r, char *err, size_t errlen)
{
	evh_value v[7];
	v[0] = EVH_TEXT(r->dlq_topic);
	v[1] = EVH_INT(r->partition);
	v[2] = EVH_INT(r->offset);
	v[3] = EVH_TEXT(r->to_topic);
	v[4] = r->to_partition >= 0 ? EVH_INT(r->to_partition) : EVH_NULL();
	v[5] = r->to_offset >= 0 ? EVH_INT(r->to_offset) : EVH_NULL();
	v[6] = r->time_ms >= 0 ? EVH_INT(r->time_ms) : EVH_NULL();
	return host_run(s,
	                "INSERT OR REPLACE INTO evh_dlq_redriven(dlq_topic, \"partition\","
	                " \"offset\", to_topic, to_partition, to_offset, dlq_time_ms,"
	                " redriven_at) VALUES(?, ?, ?, ?, ?, ?, ?, " STORE_NOW_SQL ")",
	                v, 7, NULL, NULL, err, errlen);
}

/* store_dlq_mark_redriven_all, *status the last failure's (EVH_OK: none). */
static size_t mark_all(store *s, const store_redriven *rows, size_t n, int *status)
{
	char err[STORE_ERR_LEN] = "";
	size_t lost = 0;
	int st;

	*status = EVH_EINVAL;
	thread_error[0] = '\0';
	if (!s)
		return n;
	for (size_t i = 0; i < n; i++)
		if (!rows[i].dlq_topic || !rows[i].to_topic)
			return n;
	if ((*status = store_lock(s)) != EVH_OK)
		return n;
	st = n > 1 ? begin_immediate(s, err, sizeof err) : EVH_OK;
	for (size_t i = 0; !st && i < n; i++)
		st = mark_redriven(s, &rows[i], err, sizeof err);
	if (!st && n > 1)
		st = host_simple(s, "COMMIT", err, sizeof err);
	*status = st;
	if (st && n > 1) {
		/* One row that cannot be written costs the others nothing. */
		rollback_if_open(s->w.db);
		*status = EVH_OK;
		for (size_t i = 0; i < n; i++)
			if ((st = mark_redriven(s, &rows[i], err, sizeof err)) != EVH_OK) {
				*status = st;
				lost++;
			}
	} else if (st) {
		lost = 1;
	}
	if (lost && err[0]) /* the reason, for the caller's log (store_thread_error) */
		snprintf(thread_error, sizeof thread_error, "%s", err);
	store_unlock(s);
	return lost;
}

int store_dlq_mark_redriven(store *s, const char *dlq_topic, int32_t partition, int64_t offset,
                            int64_t time_ms, const char *to_topic, int32_t to_partition,
                            int64_t to_offset)
{
	store_redriven r = {dlq_topic, to_topic, partition, to_partition, offset, time_ms, to_offset};
	int status;
	(void)mark_all(s, &r, 1, &status);
	return status;
}

size_t store_dlq_mark_redriven_all(store *s, const store_redriven *rows, size_t n)
{
	int status;
	return n ? mark_all(s, rows, n, &status) : 0;
}

/* The rows of one partition below its log start, at most `max`, through
 * the primary key's range. */
static int forget_gone_one(store *s, const dlq_start *d, int max, int64_t *deleted, char *err,
                           size_t errlen)
{
	evh_value v[4];
	int64_t changes = 0;
	int status;

	v[0] = EVH_TEXT(d->topic);
	v[1] = EVH_INT(d->partition);
	v[2] = EVH_INT(d->offset);
	v[3] = EVH_INT(max);
	status = host_run(s,
	                  "DELETE FROM evh_dlq_redriven WHERE rowid IN (SELECT rowid FROM"
	                  " evh_dlq_redriven WHERE dlq_topic = ?1 AND \"partition\" = ?2"
	                  " AND \"offset\" < ?3 LIMIT ?4)",
	                  v, 4, &changes, NULL, err, errlen);
	*deleted += changes;
	return status;
}

int store_dlq_forget_gone(store *s, const dlq_start *v, size_t n, int max, int64_t *deleted,
                          int *more)
{
	char err[STORE_ERR_LEN] = "";
	int64_t count = 0;
	int status;

	*deleted = 0;
	*more = 0;
	if (!s || (n && !v) || max <= 0)
		return EVH_EINVAL;
	for (size_t i = 0; i < n; i++)
		if (!v[i].topic)
			return EVH_EINVAL;
	status = store_lock_within(s, STORE_LOCK_WAIT_MS);
	if (status)
		return status;
	/* Not durable at once: a deletion lost in a power failure leaves rows
	 * the next one deletes, and a row kept too long redrives nothing. */
	lazy_sync(s, 1);
	status = begin_immediate(s, err, sizeof err);
	for (size_t i = 0; !status && i < n && count < max; i++)
		status = forget_gone_one(s, &v[i], max - (int)count, &count, err, sizeof err);
	if (!status)
		status = host_simple(s, "COMMIT", err, sizeof err);
	if (status) {
		rollback_if_open(s->w.db);
		count = 0;
		if (err[0]) /* the reason, for the caller's log (store_thread_error) */
			snprintf(thread_error, sizeof thread_error, "%s", err);
	}
	lazy_sync(s, 0);
	store_unlock(s);
	*deleted = count;
	*more = !status && count >= max;
	return status;
}
