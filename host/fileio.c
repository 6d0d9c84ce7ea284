/* Files replaced whole, and databases created private (fileio.h). */
#define _GNU_SOURCE /* mkostemp */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int file_replace(const char *path, const char *text, size_t len, mode_t mode, uid_t uid,
                 gid_t gid, char *err, size_t errlen)
{
	char dir[PATH_MAX], tmp[PATH_MAX + 16];
	const char *slash = strrchr(path, '/'), *name = slash ? slash + 1 : path;
	int fd, dfd;

	if (snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1,
	             slash ? path : ".") >= (int)sizeof dir ||
	    snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", slash ? dir : ".", name) >= (int)sizeof tmp) {
		snprintf(err, errlen, "%s: the path is too long", path);
		return -1;
	}
	if (slash == path)
		snprintf(dir, sizeof dir, "/");
	if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "cannot create a file in %s: %s", dir, strerror(errno));
		return -1;
	}
	/* The owner before the mode: a change of owner may clear set-id bits. */
	if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) != 0) {
		snprintf(err, errlen, "cannot give %s the owner of %s (uid %ld, gid %ld): %s", tmp,
		         path, (long)uid, (long)gid, strerror(errno));
		close(fd);
		unlink(tmp);
		return -1;
	}
	if (fchmod(fd, mode) != 0 || write_all(fd, text, len) != 0 || fsync(fd) != 0) {
		snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		return -1;
	}
	close(fd);
	if (rename(tmp, path) != 0) {
		snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
		unlink(tmp);
		return -1;
	}
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 || fsync(dfd) != 0) {
		snprintf(err, errlen, "cannot sync %s after replacing %s: %s", dir, name,
		         strerror(errno));
		if (dfd >= 0)
			close(dfd);
		return 1;
	}
	close(dfd);
	return 0;
}

void file_create_db(const char *path)
{
	/* They hold password hashes, users' data, sign-outs: not for every
	 * local account, whatever umask the daemon was started with. */
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd >= 0)
		close(fd);
}
