#include "notif_transport.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "notif_buf.h"
#include "notif_util.h"

/* mkdir -p: create every missing component of `path`. 0, -1 with `err`
 * set, or -2 out of memory. */
static int mkdir_parents(const char *path, char *err, size_t errlen)
{
	char *copy = strdup(path);
	int rc = -1;

	if (!copy) {
		snprintf(err, errlen, "out of memory");
		return -2;
	}
	for (char *p = copy + 1;; p++) {
		char saved = *p;
		if (saved != '/' && saved != '\0')
			continue;
		*p = '\0';
		if (mkdir(copy, 0700) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "cannot create directory %s: %s", copy,
			         strerror(errno));
			goto out;
		}
		*p = saved;
		if (!saved)
			break;
	}
	rc = 0;
out:
	free(copy);
	return rc;
}

static void safe_hostname(char *out, size_t outlen)
{
	if (gethostname(out, outlen) < 0 || !*out)
		snprintf(out, outlen, "localhost");
	out[outlen - 1] = '\0';
	/* '/' and ':' have meaning in Maildir file names. */
	for (char *p = out; *p; p++)
		if (*p == '/' || *p == ':')
			*p = '_';
}

/* `dir` (and its parents) with tmp/ new/ cur/, each made when missing. 0,
 * -1 with `err` set, or -2 out of memory. */
static int make_maildir(const char *dir, char *err, size_t errlen)
{
	static const char *const subdirs[] = {"tmp", "new", "cur"};
	char path[4096];
	int rc;

	if ((rc = mkdir_parents(dir, err, errlen)) < 0)
		return rc;
	for (size_t i = 0; i < 3; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, subdirs[i]);
		if (mkdir(path, 0700) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "cannot create directory %s: %s", path,
			         strerror(errno));
			return -1;
		}
	}
	return 0;
}

int notif_maildir_open(notif_maildir *m, const char *dir, char *err, size_t errlen)
{
	char path[4096];
	int rc;

	memset(m, 0, sizeof *m);
	if ((rc = make_maildir(dir, err, errlen)) < 0)
		return rc;
	snprintf(path, sizeof path, "%s/tmp", dir);
	if (access(path, W_OK) < 0) {
		snprintf(err, errlen, "maildir %s is not writable: %s", path, strerror(errno));
		return -1;
	}
	m->dir = strdup(dir);
	if (!m->dir) {
		snprintf(err, errlen, "out of memory");
		return -2;
	}
	safe_hostname(m->host, sizeof m->host);
	return 0;
}

void notif_maildir_close(notif_maildir *m)
{
	free(m->dir);
	m->dir = NULL;
}

static char *to_lf(const char *msg, size_t len, size_t *outlen)
{
	nbuf b;
	size_t run = 0;

	nbuf_init(&b);
	for (size_t i = 0; i + 1 < len; i++) {
		if (msg[i] == '\r' && msg[i + 1] == '\n') {
			nbuf_add(&b, msg + run, i - run);
			run = i + 1;
		}
	}
	nbuf_add(&b, msg + run, len - run);
	return nbuf_take(&b, outlen);
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* fsync `dir`/`sub` (`sub` NULL: `dir` itself): a new entry in a directory
 * survives a crash only once the directory is on disk. 0, or -1 with errno. */
static int sync_dir(const char *dir, const char *sub)
{
	char path[4352];
	int fd, rc, e;

	snprintf(path, sizeof path, "%s%s%s", dir, sub ? "/" : "", sub ? sub : "");
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	rc = fsync(fd);
	e = errno;
	close(fd);
	errno = e;
	return rc;
}

/* After a call failed with ENOENT: the Maildir, or its tmp/ or new/, was
 * removed under the running daemon. Made again, as mail delivery agents do,
 * once per message (`*tried`). 1 when made again; 0 otherwise, errno kept
 * (ENOENT when it cannot be made again). */
static int remake(notif_maildir *m, int *tried)
{
	char scratch[256];

	if (*tried || errno != ENOENT)
		return 0;
	*tried = 1;
	if (make_maildir(m->dir, scratch, sizeof scratch) < 0) {
		errno = ENOENT;
		return 0;
	}
	(void)sync_dir(m->dir, NULL); /* the subdirectories made again */
	__atomic_fetch_add(&m->remade, 1, __ATOMIC_RELAXED);
	return 1;
}

notif_send_result notif_maildir_deliver(notif_maildir *m, const char *msg, size_t len, char *name,
                                        size_t namelen, char *err, size_t errlen)
{
	char rnd[17], unique[256], tmp[4352], dst[4352];
	struct timeval tv;
	const char *failed_path;
	char *lf = NULL;
	size_t lflen;
	int fd = -1, e, tried = 0, placed = 0;

	gettimeofday(&tv, NULL);
	if (notif_random_hex(rnd, 8) < 0) {
		snprintf(err, errlen, "maildir: no random bytes for a unique name");
		return NOTIF_SEND_TRANSIENT;
	}
	snprintf(unique, sizeof unique, "%lld.M%06ldP%ldR%s.%s", (long long)tv.tv_sec,
	         (long)tv.tv_usec, (long)getpid(), rnd, m->host);
	snprintf(tmp, sizeof tmp, "%s/tmp/%s", m->dir, unique);
	snprintf(dst, sizeof dst, "%s/new/%s", m->dir, unique);
	lf = to_lf(msg, len, &lflen);
	if (!lf) {
		snprintf(err, errlen, "maildir: out of memory");
		return NOTIF_SEND_TRANSIENT;
	}
	failed_path = tmp;
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 && remake(m, &tried))
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write_all(fd, lf, lflen) < 0 || fsync(fd) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	failed_path = dst;
	if (rename(tmp, dst) < 0 && !(remake(m, &tried) && rename(tmp, dst) == 0))
		goto fail;
	/* The mail is handled (and its event committed) once this returns: its
	 * name in new/ must be on disk first. */
	placed = 1;
	if (sync_dir(m->dir, "new") < 0)
		goto fail;
	free(lf);
	if (name)
		snprintf(name, namelen, "%s", unique);
	return NOTIF_SEND_OK;
fail:
	e = errno;
	if (snprintf(err, errlen, "maildir: cannot write %s: %s", failed_path, strerror(e)) >=
	        (int)errlen &&
	    errlen > 4)
		memcpy(err + errlen - 4, "...", 4); /* a long path: say the message was cut */
	if (fd >= 0)
		close(fd);
	/* Not known to be on disk: taken back, so that the retry writes it once. */
	unlink(placed ? dst : tmp);
	free(lf);
	/* No room (a full disk, a quota) passes without a fix: the event waits
	 * for it, as for a full database. Any other error is the setup's: a
	 * Maildir made read-only, not ours or a file, or a mail larger than the
	 * file size limit (EFBIG: a file of its own, it never fits however long
	 * it waits). Tried again, then dead-lettered for a redrive once mended,
	 * as SMTP's setup trouble is. */
	return e == ENOSPC || e == EDQUOT ? NOTIF_SEND_NO_ROOM : NOTIF_SEND_TRANSIENT;
}
