/* Tests: a second member in a group commit, on a thread of its own, and
 * SQLite writes that fail (so a COMMIT fails).
 *
 * member_start(m) runs, on a new thread: begin a grouped transaction on
 * m->s, run m->sql, then wait (up to 10 s) for another thread to queue for
 * the store's lock, and commit; m->status is that commit's result. The
 * calling thread waits until the statement has run, then begins its own
 * grouped transaction: it queues, so the member's commit leaves the group
 * open for it, and the caller joins that same group. member_join(m) joins
 * the thread.
 *
 * SQLite's writes go through the unix VFS's pwrite64, which these replace
 * (xSetSystemCall) with one that can fail (EIO), so that a COMMIT fails:
 * wal_writes_fail(1) makes every thread's writes fail from then on, and
 * wal_writes_fail(0) ends that (wal_writes_fail_with: another errno, e.g.
 * ENOSPC for a full disk); wal_next_write_fails_here() makes only the
 * calling thread's next write fail, once. Both return SQLite's status.
 *
 * fsync is not among the unix VFS's replaceable calls, so a failing sync
 * goes through a VFS of its own, "faults", wrapping the default one:
 * sync_faults_install() makes it the default (for connections opened after
 * it), sync_faults_fail(err) makes every sync of a WAL file fail with errno
 * `err` (SQLITE_IOERR_FSYNC, and that errno as the file's last, as the unix
 * VFS keeps it), sync_faults_fail(0) ends that, sync_faults_uninstall() puts
 * the default back once those connections are closed. */
#ifndef EVHOST_TEST_STORE_FAULTS_H
#define EVHOST_TEST_STORE_FAULTS_H
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>

#include "store.h"

typedef struct other_member {
	store *s;
	const char *sql; /* the member's one write */
	int status;      /* its commit's result */
	char failure[256];
	atomic_int ran; /* its statement has run */
	pthread_t th;
} other_member;

static inline void member_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static inline void *member_main(void *arg)
{
	other_member *m = arg;
	evh_tx *tx;
	int waited = 0;
	if (store_tx_begin_grouped(m->s, &tx) != EVH_OK) {
		snprintf(m->failure, sizeof m->failure, "member: begin failed");
		atomic_store(&m->ran, 1);
		return NULL;
	}
	if (store_exec(tx, m->sql, NULL, 0, NULL) != EVH_OK)
		snprintf(m->failure, sizeof m->failure, "member: %s: %s", m->sql, store_tx_error(tx));
	atomic_store(&m->ran, 1);
	while (store_group_queued(m->s) < 1 && waited < 10000) {
		member_sleep_ms(5);
		waited += 5;
	}
	if (waited >= 10000)
		snprintf(m->failure, sizeof m->failure, "member: nobody queued for the group in 10 s");
	m->status = store_tx_commit(tx);
	return NULL;
}

/* Start the member and wait until its statement has run (up to 10 s). */
static inline int member_start(other_member *m)
{
	atomic_store(&m->ran, 0);
	m->failure[0] = '\0';
	if (pthread_create(&m->th, NULL, member_main, m) != 0)
		return -1;
	for (int waited = 0; !atomic_load(&m->ran); waited += 5) {
		if (waited >= 10000)
			return -1;
		member_sleep_ms(5);
	}
	return 0;
}

static inline void member_join(other_member *m) { pthread_join(m->th, NULL); }

typedef ssize_t (*faults_pwrite_fn)(int, const void *, size_t, off_t);
static faults_pwrite_fn faults_real_pwrite;
static atomic_int faults_all_fail;
static atomic_int faults_errno = EIO;
static _Thread_local int faults_fail_once;

static inline ssize_t faults_pwrite(int fd, const void *buf, size_t n, off_t off)
{
	if (atomic_load(&faults_all_fail) || faults_fail_once) {
		faults_fail_once = 0;
		errno = atomic_load(&faults_errno);
		return -1;
	}
	return faults_real_pwrite(fd, buf, n, off);
}

static inline int faults_install(void)
{
	sqlite3_vfs *vfs = sqlite3_vfs_find(NULL);
	if (faults_real_pwrite)
		return SQLITE_OK;
	faults_real_pwrite = (faults_pwrite_fn)vfs->xGetSystemCall(vfs, "pwrite64");
	if (!faults_real_pwrite)
		return SQLITE_NOTFOUND;
	return vfs->xSetSystemCall(vfs, "pwrite64", (sqlite3_syscall_ptr)faults_pwrite);
}

static inline int wal_writes_fail(int on)
{
	int rc = faults_install();
	atomic_store(&faults_errno, EIO);
	atomic_store(&faults_all_fail, on);
	return rc;
}

/* wal_writes_fail, with `err` (ENOSPC: SQLite's SQLITE_FULL) instead of EIO. */
static inline int wal_writes_fail_with(int on, int err)
{
	int rc = faults_install();
	atomic_store(&faults_errno, err);
	atomic_store(&faults_all_fail, on);
	return rc;
}

static inline int wal_next_write_fails_here(void)
{
	int rc = faults_install();
	faults_fail_once = 1;
	return rc;
}

/* A file of the "faults" VFS: the default VFS's file right after it. */
typedef struct faults_file {
	sqlite3_file base;
	sqlite3_file *real;
	int wal;        /* a WAL file: its syncs may fail */
	int last_errno; /* that failure's errno, for SQLITE_FCNTL_LAST_ERRNO */
} faults_file;

static sqlite3_vfs *faults_real_vfs;
static sqlite3_vfs faults_vfs;
static atomic_int faults_sync_errno;

#define FAULTS_REAL(f) (((faults_file *)(f))->real)

static inline int faults_close(sqlite3_file *f)
{
	return FAULTS_REAL(f)->pMethods->xClose(FAULTS_REAL(f));
}
static inline int faults_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o)
{
	return FAULTS_REAL(f)->pMethods->xRead(FAULTS_REAL(f), b, n, o);
}
static inline int faults_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
	return FAULTS_REAL(f)->pMethods->xWrite(FAULTS_REAL(f), b, n, o);
}
static inline int faults_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	return FAULTS_REAL(f)->pMethods->xTruncate(FAULTS_REAL(f), size);
}
static inline int faults_sync(sqlite3_file *f, int flags)
{
	faults_file *ff = (faults_file *)f;
	int e = atomic_load(&faults_sync_errno);
	if (ff->wal && e) {
		ff->last_errno = e;
		return SQLITE_IOERR_FSYNC;
	}
	return ff->real->pMethods->xSync(ff->real, flags);
}
static inline int faults_size(sqlite3_file *f, sqlite3_int64 *size)
{
	return FAULTS_REAL(f)->pMethods->xFileSize(FAULTS_REAL(f), size);
}
static inline int faults_lock(sqlite3_file *f, int l)
{
	return FAULTS_REAL(f)->pMethods->xLock(FAULTS_REAL(f), l);
}
static inline int faults_unlock(sqlite3_file *f, int l)
{
	return FAULTS_REAL(f)->pMethods->xUnlock(FAULTS_REAL(f), l);
}
static inline int faults_reserved(sqlite3_file *f, int *out)
{
	return FAULTS_REAL(f)->pMethods->xCheckReservedLock(FAULTS_REAL(f), out);
}
static inline int faults_fcntl(sqlite3_file *f, int op, void *arg)
{
	faults_file *ff = (faults_file *)f;
	if (op == SQLITE_FCNTL_LAST_ERRNO && ff->last_errno) {
		*(int *)arg = ff->last_errno;
		return SQLITE_OK;
	}
	return ff->real->pMethods->xFileControl(ff->real, op, arg);
}
static inline int faults_sector(sqlite3_file *f)
{
	return FAULTS_REAL(f)->pMethods->xSectorSize(FAULTS_REAL(f));
}
static inline int faults_devchar(sqlite3_file *f)
{
	return FAULTS_REAL(f)->pMethods->xDeviceCharacteristics(FAULTS_REAL(f));
}
static inline int faults_shm_map(sqlite3_file *f, int pg, int sz, int extend, void volatile **p)
{
	return FAULTS_REAL(f)->pMethods->xShmMap(FAULTS_REAL(f), pg, sz, extend, p);
}
static inline int faults_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
	return FAULTS_REAL(f)->pMethods->xShmLock(FAULTS_REAL(f), off, n, flags);
}
static inline void faults_shm_barrier(sqlite3_file *f)
{
	FAULTS_REAL(f)->pMethods->xShmBarrier(FAULTS_REAL(f));
}
static inline int faults_shm_unmap(sqlite3_file *f, int del)
{
	return FAULTS_REAL(f)->pMethods->xShmUnmap(FAULTS_REAL(f), del);
}

/* Version 2 (shared memory, for WAL); no memory mapping (version 3). */
static const sqlite3_io_methods faults_methods = {
    2,
    faults_close,
    faults_read,
    faults_write,
    faults_truncate,
    faults_sync,
    faults_size,
    faults_lock,
    faults_unlock,
    faults_reserved,
    faults_fcntl,
    faults_sector,
    faults_devchar,
    faults_shm_map,
    faults_shm_lock,
    faults_shm_barrier,
    faults_shm_unmap,
    NULL,
    NULL,
};

static inline int faults_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags,
                              int *out_flags)
{
	faults_file *ff = (faults_file *)f;
	int rc;
	(void)vfs;
	ff->real = (sqlite3_file *)(ff + 1);
	ff->wal = (flags & SQLITE_OPEN_WAL) != 0;
	ff->last_errno = 0;
	rc = faults_real_vfs->xOpen(faults_real_vfs, name, ff->real, flags, out_flags);
	/* A file the default VFS did not open is closed by nobody. */
	f->pMethods = ff->real->pMethods ? &faults_methods : NULL;
	return rc;
}

static inline int sync_faults_install(void)
{
	if (!faults_real_vfs) {
		faults_real_vfs = sqlite3_vfs_find(NULL);
		faults_vfs = *faults_real_vfs;
		faults_vfs.zName = "faults";
		faults_vfs.szOsFile = (int)sizeof(faults_file) + faults_real_vfs->szOsFile;
		faults_vfs.xOpen = faults_open;
	}
	return sqlite3_vfs_register(&faults_vfs, 1);
}

static inline void sync_faults_fail(int err) { atomic_store(&faults_sync_errno, err); }

static inline int sync_faults_uninstall(void)
{
	int rc = sqlite3_vfs_unregister(&faults_vfs);
	return rc == SQLITE_OK ? sqlite3_vfs_register(faults_real_vfs, 1) : rc;
}

#endif
