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
 * calling thread's next write fail, once. Both return SQLite's status. */
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

#endif
