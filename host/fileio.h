/* Files replaced whole (evhostd's JWKS cache, evhostctl's drop-ins), and
 * databases created private. */
#ifndef EVHOST_FILEIO_H
#define EVHOST_FILEIO_H
#include <stddef.h>
#include <sys/types.h>

/* Replace `path` with text[0..len), all or nothing: a temporary file beside
 * it (".NAME.XXXXXX", which a reload never reads as a drop-in), given owner
 * `uid`:`gid` ((uid_t)-1 and (gid_t)-1: the caller's, as created) and
 * `mode`, written, synced, renamed over `path`, then the directory synced.
 * 0; 1 when the file is in place but the directory could not be synced
 * (the reason in err); -1 when nothing was replaced, the reason in err. */
int file_replace(const char *path, const char *text, size_t len, mode_t mode, uid_t uid,
                 gid_t gid, char *err, size_t errlen);

/* An SQLite database about to be opened: created empty with mode 0640 when
 * it is not there (less the umask), rather than SQLite's 0644. Its -wal,
 * -shm and -journal files take the database's mode. An error is left for
 * the open that follows to say. */
void file_create_db(const char *path);
#endif
