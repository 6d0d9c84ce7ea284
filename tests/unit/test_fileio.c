/* file_replace (fileio.c): a file replaced whole or not at all, and each way
 * it can fail said. The syncs that fail are fsync's, wrapped (--wrap=fsync,
 * tests/CMakeLists.txt): a disk's errors cannot be had otherwise, and root
 * (as the tests run here) passes every permission check. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fileio.h"

/* file_replace's owner: the caller's, as the temporary file was made. */
#define AS_MADE (uid_t)-1, (gid_t)-1

/* Which syncs fail, with EIO: none, a regular file's, or a directory's. */
enum { SYNC_OK, SYNC_FILE_FAILS, SYNC_DIR_FAILS };
static int sync_mode;
static int syncs_failed;

int __real_fsync(int fd);
int __wrap_fsync(int fd);
int __wrap_fsync(int fd)
{
	struct stat st;
	if (sync_mode != SYNC_OK && fstat(fd, &st) == 0 &&
	    (S_ISDIR(st.st_mode) ? sync_mode == SYNC_DIR_FAILS : sync_mode == SYNC_FILE_FAILS)) {
		syncs_failed++;
		errno = EIO;
		return -1;
	}
	return __real_fsync(fd);
}

typedef struct fixture {
	char dir[64];
	char path[128];
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	if (!f)
		return -1;
	snprintf(f->dir, sizeof f->dir, "/tmp/evh-fileio-XXXXXX");
	if (!mkdtemp(f->dir)) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof f->path, "%s/jwks.json", f->dir);
	sync_mode = SYNC_OK;
	syncs_failed = 0;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

/* The file's whole content, or "(none)". */
static const char *content(const char *path)
{
	static char buf[256];
	FILE *fp = fopen(path, "r");
	size_t n;
	if (!fp)
		return "(none)";
	n = fread(buf, 1, sizeof buf - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

/* The names in dir, space-separated, in readdir's order (at most two are
 * expected, so the order only matters for a failure's message). */
static const char *names(const char *dir)
{
	static char buf[512];
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;
	buf[0] = '\0';
	if (!d)
		return "(no directory)";
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n += (size_t)snprintf(buf + n, n < sizeof buf ? sizeof buf - n : 0, "%s%s",
			                      n ? " " : "", e->d_name);
	closedir(d);
	return buf;
}

static void expect_in(const char *text, const char *want)
{
	if (!strstr(text, want))
		fail_msg("expected '%s' in '%s'", want, text);
}

static void test_replaces_whole_with_its_mode(void **state)
{
	fixture *f = *state;
	char err[512] = "";
	struct stat st;
	assert_int_equal(file_replace(f->path, "{\"keys\":[]}", 11, 0640, AS_MADE, err, sizeof err), 0);
	assert_string_equal(content(f->path), "{\"keys\":[]}");
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	/* Again, shorter: the old bytes are gone, and no temporary file stays. */
	assert_int_equal(file_replace(f->path, "{}", 2, 0644, AS_MADE, err, sizeof err), 0);
	assert_string_equal(content(f->path), "{}");
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_string_equal(names(f->dir), "jwks.json");
	assert_string_equal(err, "");
}

/* Given an owner, the file has it (and the mode after it: a change of
 * owner clears set-id bits); one that may not be given is said, and
 * nothing replaced. The tests run as root, which may give any. */
static void test_replaces_with_the_owner_given(void **state)
{
	fixture *f = *state;
	char err[512] = "";
	struct stat st;
	assert_int_equal(file_replace(f->path, "a", 1, 02640, 4321, 8765, err, sizeof err), 0);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_uid, 4321);
	assert_int_equal(st.st_gid, 8765);
	assert_int_equal(st.st_mode & 07777, 02640);
	/* The group alone. */
	assert_int_equal(file_replace(f->path, "b", 1, 0640, (uid_t)-1, 1234, err, sizeof err), 0);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_uid, geteuid());
	assert_int_equal(st.st_gid, 1234);
	assert_string_equal(content(f->path), "b");
	if (geteuid() != 0) /* below: refused as only root is */
		return;
	/* Refused: a user may not give a file away (in a directory where it
	 * may make one). */
	assert_int_equal(chmod(f->dir, 01777), 0);
	if (fork() == 0) {
		int rc;
		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(2);
		rc = file_replace(f->path, "c", 1, 0644, 4321, 8765, err, sizeof err);
		_exit(rc == -1 && strstr(err, "cannot give") && strstr(err, "uid 4321, gid 8765") ? 0
		                                                                                : 1);
	}
	{
		int status;
		assert_true(wait(&status) > 0);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_string_equal(content(f->path), "b");
	assert_string_equal(names(f->dir), "jwks.json");
}

/* A bare name is in the working directory. */
static void test_a_bare_name_is_in_the_working_directory(void **state)
{
	fixture *f = *state;
	char err[512] = "", cwd[PATH_MAX];
	int rc;
	assert_non_null(getcwd(cwd, sizeof cwd));
	assert_int_equal(chdir(f->dir), 0);
	rc = file_replace("here.conf", "x = 1\n", 6, 0644, AS_MADE, err, sizeof err);
	assert_int_equal(chdir(cwd), 0);
	assert_int_equal(rc, 0);
	assert_string_equal(names(f->dir), "here.conf");
	snprintf(cwd, sizeof cwd, "%s/here.conf", f->dir);
	assert_string_equal(content(cwd), "x = 1\n");
}

static void test_a_missing_directory_is_said(void **state)
{
	fixture *f = *state;
	char err[512] = "", path[192];
	snprintf(path, sizeof path, "%s/gone/jwks.json", f->dir);
	assert_int_equal(file_replace(path, "{}", 2, 0640, AS_MADE, err, sizeof err), -1);
	expect_in(err, "cannot create a file in ");
	expect_in(err, "/gone: No such file or directory");
}

/* The new file's sync fails: nothing is replaced, and the temporary file
 * is removed. */
static void test_a_failed_write_replaces_nothing(void **state)
{
	fixture *f = *state;
	char err[512] = "";
	assert_int_equal(file_replace(f->path, "old", 3, 0640, AS_MADE, err, sizeof err), 0);
	sync_mode = SYNC_FILE_FAILS;
	assert_int_equal(file_replace(f->path, "new", 3, 0640, AS_MADE, err, sizeof err), -1);
	assert_int_equal(syncs_failed, 1);
	expect_in(err, "cannot write ");
	expect_in(err, "/.jwks.json.");
	expect_in(err, ": Input/output error");
	assert_string_equal(content(f->path), "old");
	assert_string_equal(names(f->dir), "jwks.json");
}

/* The rename fails (here: the name is a directory's): nothing is replaced,
 * the temporary file is removed, and both names are in the message. */
static void test_a_failed_rename_replaces_nothing(void **state)
{
	fixture *f = *state;
	char err[512] = "", inside[192];
	assert_int_equal(mkdir(f->path, 0755), 0);
	snprintf(inside, sizeof inside, "%s/kept", f->path);
	assert_int_equal(file_replace(inside, "k", 1, 0640, AS_MADE, err, sizeof err), 0);
	assert_int_equal(file_replace(f->path, "{}", 2, 0640, AS_MADE, err, sizeof err), -1);
	expect_in(err, "cannot rename ");
	expect_in(err, "/.jwks.json.");
	expect_in(err, " to ");
	expect_in(err, "/jwks.json: Is a directory");
	assert_string_equal(names(f->dir), "jwks.json");
	assert_string_equal(content(inside), "k");
}

/* The directory's sync fails after the rename: the file is in place (1, not
 * -1), and the message says what may not survive a crash. */
static void test_a_failed_directory_sync_is_said_with_the_file_in_place(void **state)
{
	fixture *f = *state;
	char err[512] = "";
	assert_int_equal(file_replace(f->path, "old", 3, 0640, AS_MADE, err, sizeof err), 0);
	sync_mode = SYNC_DIR_FAILS;
	assert_int_equal(file_replace(f->path, "new", 3, 0640, AS_MADE, err, sizeof err), 1);
	assert_int_equal(syncs_failed, 1);
	expect_in(err, "cannot sync ");
	expect_in(err, " after replacing jwks.json: Input/output error");
	assert_string_equal(content(f->path), "new");
	assert_string_equal(names(f->dir), "jwks.json");
}

/* A database is created 0640 whatever the umask; one that exists keeps its
 * mode and bytes (an admin's chmod 0600 stays); one that cannot be created
 * is left to SQLite's open to say (it fails the same way), nothing made. */
static void test_a_database_file_is_created_private_once(void **state)
{
	fixture *f = *state;
	char path[192];
	struct stat st;
	mode_t old = umask(0);

	snprintf(path, sizeof path, "%s/user.db", f->dir);
	file_create_db(path);
	umask(old);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_size, 0);

	assert_int_equal(chmod(path, 0600), 0);
	{
		FILE *fp = fopen(path, "w");
		assert_non_null(fp);
		fputs("SQLite format 3", fp);
		assert_int_equal(fclose(fp), 0);
	}
	file_create_db(path);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_string_equal(content(path), "SQLite format 3");

	snprintf(path, sizeof path, "%s/gone/user.db", f->dir);
	file_create_db(path);
	assert_string_equal(names(f->dir), "user.db");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_replaces_whole_with_its_mode),
	    T(test_replaces_with_the_owner_given),
	    T(test_a_bare_name_is_in_the_working_directory),
	    T(test_a_missing_directory_is_said),
	    T(test_a_failed_write_replaces_nothing),
	    T(test_a_failed_rename_replaces_nothing),
	    T(test_a_failed_directory_sync_is_said_with_the_file_in_place),
	    T(test_a_database_file_is_created_private_once),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
