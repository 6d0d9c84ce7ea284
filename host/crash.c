#define _GNU_SOURCE /* REG_RSP */
#include "crash.h"

#include <ctype.h>
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "fileio.h"
#include "log.h"

/* Pointers only: setting them costs nothing per request or event; the line
 * is made in the handler, with async-signal-safe steps alone. */
enum crash_kind { CRASH_NONE, CRASH_HTTP, CRASH_EVENT, CRASH_CALL };
static _Thread_local struct {
	enum crash_kind kind;
	const char *plugin, *a, *b, *c;
	int64_t n1, n2;
} ctx;

/* ------------------------------------------------------ events in hand */

/* A fatal signal's handler records the event it crashed on (below). A kill
 * (SIGKILL, the OOM killer, systemd's stop timeout) or the stop's guard
 * (stopguard.c) ends evhostd with no handler of ours running: an event on
 * which a plugin's handler uses up the memory, or never returns, came back
 * at every start, and ended the daemon again (the OOM killer) or held its
 * partition for good. So each thread that handles events keeps the event
 * in hand in a slot of a file mapped shared (state_dir/INHAND_FILE): its
 * pages are the kernel's, kept whatever ends the process, and filling a
 * slot is a few stores per event, no system call. The next start counts
 * each event still in hand as it counts a crash on it, unless the run ended
 * cleanly or a crash's handler named its own event (`ended`). */
#define INHAND_FILE "evhostd.inhand"
#define INHAND_SLOTS 64 /* threads handling events at once: a consumer's each */
#define INHAND_MAGIC "evhostd-inhand2" /* and its NUL: 16 bytes */
#define RECORD_ID_MAX 256
#define PLUGIN_FIELD 128
#define TOPIC_FIELD 256
enum { SLOT_IDLE, SLOT_IN_HAND };
struct inhand_slot {
	uint32_t state;  /* SLOT_*: the fields below are an event's while SLOT_IN_HAND */
	int32_t partition;
	int64_t offset;
	uint32_t id_len; /* 0: no id kept (none, or RECORD_ID_MAX bytes or more) */
	char plugin[PLUGIN_FIELD], topic[TOPIC_FIELD], id[RECORD_ID_MAX];
};
struct inhand_file {
	char magic[16];
	uint32_t ended;   /* 1: no slot in hand names the event that ended the run */
	uint32_t stopped; /* 1: the run's stop ended (its consumers left their groups) */
	uint32_t slots;
	struct inhand_slot slot[INHAND_SLOTS];
};
static char inhand_path[PATH_MAX];
static struct inhand_file *inhand; /* mapped at start, before any thread handles events */
static unsigned inhand_gen;        /* the mapping's: a slot taken is of one mapping */
static atomic_bool slot_taken[INHAND_SLOTS];
static atomic_int slots_out_said;
static _Thread_local struct {
	int index; /* this thread's slot, or -1 */
	unsigned gen;
} mine = {-1, 0};

/* This thread's slot, taken on its first event; NULL when there is no file
 * or no free slot (said once). */
static struct inhand_slot *my_slot(void)
{
	if (!inhand)
		return NULL;
	if (mine.index >= 0 && mine.gen == inhand_gen)
		return &inhand->slot[mine.index];
	mine.index = -1;
	for (int i = 0; i < INHAND_SLOTS; i++) {
		bool free_slot = false;
		if (atomic_compare_exchange_strong(&slot_taken[i], &free_slot, true)) {
			mine.index = i;
			mine.gen = inhand_gen;
			return &inhand->slot[i];
		}
	}
	if (!atomic_exchange(&slots_out_said, 1))
		log_warn("host", "more than %d threads handle events at once: the events of the others "
		                 "are not kept in hand in %s (should evhostd be killed while one is "
		                 "handled, the next start will not know it)",
		         INHAND_SLOTS, inhand_path);
	return NULL;
}

/* `src` into a slot's field of `cap` bytes, or "" when it does not fit (a
 * slot with an empty plugin or topic names no event). */
static void field_copy(char *dst, size_t cap, const char *src)
{
	size_t n = src ? strnlen(src, cap) : 0;
	if (n == cap)
		n = 0;
	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

static void slot_fill(struct inhand_slot *s, const char *plugin, const char *topic,
                      int32_t partition, int64_t offset, const char *id)
{
	size_t n = id ? strnlen(id, RECORD_ID_MAX) : 0;
	s->partition = partition;
	s->offset = offset;
	field_copy(s->plugin, sizeof s->plugin, plugin);
	field_copy(s->topic, sizeof s->topic, topic);
	s->id_len = n < RECORD_ID_MAX ? (uint32_t)n : 0;
	if (s->id_len)
		memcpy(s->id, id, s->id_len);
	/* Last: a kill in the middle leaves the slot idle, not half an event. */
	__atomic_store_n(&s->state, SLOT_IN_HAND, __ATOMIC_RELEASE);
}

static void slot_idle(void)
{
	if (inhand && mine.index >= 0 && mine.gen == inhand_gen)
		__atomic_store_n(&inhand->slot[mine.index].state, SLOT_IDLE, __ATOMIC_RELEASE);
}

/* The thread ends: its slot, idle, is free for another. */
static void slot_release(void)
{
	if (mine.index >= 0 && mine.gen == inhand_gen) {
		slot_idle();
		atomic_store(&slot_taken[mine.index], false);
	}
	mine.index = -1;
}

static void inhand_unmap(void)
{
	if (inhand)
		munmap(inhand, sizeof *inhand);
	inhand = NULL;
	inhand_gen++;
	for (int i = 0; i < INHAND_SLOTS; i++)
		atomic_store(&slot_taken[i], false);
}

/* The file for this run, every slot idle, mapped. Its blocks are allocated
 * first: a store into a page of a mapping the file system has no block for
 * (a sparse file, a full disk) is a SIGBUS, which ended evhostd at a start
 * on a full disk, and would at a first event. Without room, evhostd goes on
 * without it. Done after the last run's was read (inhand_take_last). */
static void inhand_map_new(void)
{
	struct inhand_file *f;
	int fd = open(inhand_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640), rc = 0;
	if (fd < 0 || (rc = posix_fallocate(fd, 0, sizeof *f)) != 0) {
		log_warn("host", "cannot keep the events in hand in %s: %s (should evhostd be killed "
		                 "while a handler runs, the OOM killer on an event that uses up the "
		                 "memory, the next start will not know the event)",
		         inhand_path, strerror(fd < 0 ? errno : rc));
		if (fd >= 0)
			close(fd);
		return;
	}
	f = mmap(NULL, sizeof *f, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (f == MAP_FAILED) {
		log_warn("host", "cannot map %s: %s (the events in hand are not kept)", inhand_path,
		         strerror(errno));
		return;
	}
	memset(f, 0, sizeof *f);
	f->slots = INHAND_SLOTS;
	memcpy(f->magic, INHAND_MAGIC, sizeof f->magic);
	inhand = f;
}

void crash_enter_http(const char *plugin, const char *method, const char *path,
                      const char *request_id)
{
	ctx.plugin = plugin;
	ctx.a = method;
	ctx.b = path;
	ctx.c = request_id;
	ctx.kind = CRASH_HTTP;
}

void crash_enter_event(const char *plugin, const char *topic, int32_t partition,
                       int64_t offset, const char *event_id)
{
	struct inhand_slot *s = my_slot();
	ctx.plugin = plugin;
	ctx.a = topic;
	ctx.n1 = partition;
	ctx.n2 = offset;
	ctx.c = event_id;
	ctx.kind = CRASH_EVENT;
	if (s)
		slot_fill(s, plugin, topic, partition, offset, event_id);
}

void crash_enter_call(const char *plugin, const char *what)
{
	ctx.plugin = plugin;
	ctx.a = what;
	ctx.kind = CRASH_CALL;
}

void crash_leave(void)
{
	if (ctx.kind == CRASH_EVENT)
		slot_idle();
	ctx.kind = CRASH_NONE;
}

const char *crash_plugin(void) { return ctx.kind == CRASH_NONE ? NULL : ctx.plugin; }

/* ------------------------------------------------------ lines */

/* Room for the FATAL line's longest: its own text, a plugin's name, a
 * topic's, and each field that came from outside cut at SHOWN_MAX; and for
 * a record's line. Filled with async-signal-safe steps alone. */
typedef struct {
	char buf[2048];
	size_t n;
} line;

static void put(line *l, const char *s)
{
	size_t k = s ? strlen(s) : 6;
	if (!s)
		s = "(null)";
	if (k > sizeof l->buf - 1 - l->n)
		k = sizeof l->buf - 1 - l->n;
	memcpy(l->buf + l->n, s, k);
	l->n += k;
}

/* put() each string argument in turn, up to a NULL. */
static void put_all(line *l, ...)
{
	va_list ap;
	const char *s;
	va_start(ap, l);
	while ((s = va_arg(ap, const char *)))
		put(l, s);
	va_end(ap);
}

static void put_int(line *l, int64_t v)
{
	char d[24];
	int i = (int)sizeof d;
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	d[--i] = '\0';
	do
		d[--i] = (char)('0' + u % 10);
	while ((u /= 10) && i > 1);
	if (v < 0)
		d[--i] = '-';
	put(l, d + i);
}

/* The record's ID field (record_id_read's). */
static void put_record_id(line *l, const char *id)
{
	size_t n = id ? strlen(id) : 0;
	if (!n || n >= RECORD_ID_MAX) {
		put(l, "-");
		return;
	}
	put(l, "h:");
	for (size_t i = 0; i < n && l->n + 2 < sizeof l->buf - 1; i++) {
		unsigned char c = (unsigned char)id[i];
		l->buf[l->n++] = "0123456789abcdef"[c >> 4];
		l->buf[l->n++] = "0123456789abcdef"[c & 15];
	}
}

/* ------------------------------------------------------ the crash record */

/* The events the last runs ended on (read at start), and where the next
 * ones go: a line each, "COUNT PARTITION OFFSET PLUGIN TOPIC ID AT_MS HOW",
 * COUNT the starts in a row that ended on that event; ID "h:" and the event
 * id's bytes in hex (an id is any bytes: one that began with a space or held
 * a newline came back another id, and its copies were not known), or "-"
 * for none or one of RECORD_ID_MAX bytes or more; AT_MS when the last of
 * those ends was recorded (ms since the epoch); HOW "crashed" when each of
 * them was a crash of the handler (its fatal signal's handler wrote the
 * line), "killed" when one was not (the event was in hand at a kill or at
 * the stop's guard: the start that found it wrote the line). An older
 * evhostd wrote one line of the first six fields (crashed, at the file's
 * time). The id also finds the event's copies at other offsets (the relay
 * sends an event again when it crashed before the broker's acknowledgement
 * was recorded). */
#define RECORDS_MAX INHAND_SLOTS /* each slot in hand at once, at least */
struct record {
	long count;
	int killed;
	int32_t partition;
	int64_t offset;
	int64_t at_ms;
	char plugin[PLUGIN_FIELD], topic[TOPIC_FIELD], id[RECORD_ID_MAX];
	atomic_int live; /* not handled since (crash_record_forget) */
};
static char record_path[PATH_MAX];
static struct record recs[RECORDS_MAX];
static int nrecs;          /* set at start, before any thread handles events */
static atomic_int nlive;   /* records live: none, the usual case, costs a load per event */
static atomic_int dying;   /* a fatal signal's handler writes the record: left to it */
static pthread_mutex_t record_lock = PTHREAD_MUTEX_INITIALIZER;

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The ID field of a record into `id` (RECORD_ID_MAX bytes): 0, or -1 when
 * it is not one. An older evhostd wrote the id as it was (its copies were
 * matched when it held no space or newline): taken as it is. */
static int record_id_read(const char *field, char *id)
{
	size_t n = strlen(field);
	if (!strcmp(field, "-")) {
		id[0] = '\0';
		return 0;
	}
	if (strncmp(field, "h:", 2)) {
		if (n >= RECORD_ID_MAX)
			return -1;
		memcpy(id, field, n + 1);
		return 0;
	}
	field += 2;
	n -= 2;
	if (n % 2 || n / 2 >= RECORD_ID_MAX)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (!isxdigit((unsigned char)field[2 * i]) ||
		    !isxdigit((unsigned char)field[2 * i + 1]) ||
		    sscanf(field + 2 * i, "%2x", &v) != 1 || !v)
			return -1;
		id[i] = (char)v;
	}
	id[n / 2] = '\0';
	return 0;
}

/* One line of the file into r: 0, or -1 when it is not one of ours. */
static int record_parse(const char *text, int64_t file_ms, struct record *r)
{
	char id[2 * RECORD_ID_MAX + 8], how[16];
	int n = sscanf(text, "%ld %" SCNd32 " %" SCNd64 " %127s %255s %519s %" SCNd64 " %15s",
	               &r->count, &r->partition, &r->offset, r->plugin, r->topic, id, &r->at_ms,
	               how);
	if (n == 6) { /* an older evhostd's */
		r->at_ms = file_ms;
		snprintf(how, sizeof how, "crashed");
	} else if (n != 8) {
		return -1;
	}
	r->killed = !strcmp(how, "killed");
	if (r->count <= 0 || r->count > 1000000 || (!r->killed && strcmp(how, "crashed")))
		return -1;
	return record_id_read(id, r->id);
}

static void put_record(line *l, const char *plugin, const char *topic, int64_t partition,
                       int64_t offset, const char *id, long count, int64_t at_ms, int killed)
{
	put_int(l, count);
	put(l, " ");
	put_int(l, partition);
	put(l, " ");
	put_int(l, offset);
	put_all(l, " ", plugin, " ", topic, " ", (char *)NULL);
	put_record_id(l, id);
	put(l, " ");
	put_int(l, at_ms);
	put(l, killed ? " killed\n" : " crashed\n");
}

/* Is the event at topic [partition] @offset with id `id` the one r names:
 * RECORD_HERE at its place, RECORD_COPY a copy of it (its id; an id longer
 * than the record keeps is not compared), else 0. */
enum { RECORD_COPY = 1, RECORD_HERE };
static int record_is(const struct record *r, const char *plugin, const char *topic,
                     int64_t partition, int64_t offset, const char *id)
{
	if (strcmp(r->plugin, plugin))
		return 0;
	if (r->partition == partition && r->offset == offset && !strcmp(r->topic, topic))
		return RECORD_HERE;
	return id && *id && strlen(id) < RECORD_ID_MAX && !strcmp(r->id, id) ? RECORD_COPY : 0;
}

/* The live record naming that event, or NULL. */
static struct record *record_find(const char *plugin, const char *topic, int64_t partition,
                                  int64_t offset, const char *id, int *where)
{
	for (int i = 0; i < nrecs; i++)
		if (atomic_load(&recs[i].live) &&
		    (*where = record_is(&recs[i], plugin, topic, partition, offset, id)))
			return &recs[i];
	return NULL;
}

void crash_inhand_log(void)
{
	if (!inhand)
		return;
	for (int i = 0; i < INHAND_SLOTS; i++) {
		const struct inhand_slot *s = &inhand->slot[i];
		const struct record *r;
		char id[RECORD_ID_MAX];
		int where;
		if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != SLOT_IN_HAND)
			continue;
		memcpy(id, s->id, s->id_len);
		id[s->id_len] = '\0';
		r = atomic_load(&nlive)
		        ? record_find(s->plugin, s->topic, s->partition, s->offset, id, &where)
		        : NULL;
		log_error("host", "plugin '%s' has event %s of %s [%d] at offset %" PRId64 " in hand: "
		                  "%s",
		          s->plugin, id[0] ? id : "(no id)", s->topic, (int)s->partition, s->offset,
		          r && r->count + 1 >= CRASH_RECORD_LIMIT
		              ? "the next start dead-letters it without calling the handler (the "
		                "last run ended on it too)"
		              : "the next start handles it again, and should evhostd end so on it "
		                "again, the start after that dead-letters it");
	}
}

/* The file, as the live records are now: removed when none is. Under
 * record_lock, or before any thread handles events. */
static void records_write(void)
{
	static char text[RECORDS_MAX * sizeof(((line *)0)->buf)];
	size_t len = 0;
	char err[256];
	for (int i = 0; i < nrecs; i++) {
		struct record *r = &recs[i];
		line l = {.n = 0};
		if (!atomic_load(&r->live))
			continue;
		put_record(&l, r->plugin, r->topic, r->partition, r->offset, r->id, r->count,
		           r->at_ms, r->killed);
		memcpy(text + len, l.buf, l.n);
		len += l.n;
	}
	if (atomic_load(&dying))
		return;
	if (!len) {
		if (unlink(record_path) != 0 && errno != ENOENT)
			log_warn("host", "cannot remove %s: %s", record_path, strerror(errno));
	} else if (file_replace(record_path, text, len, 0640, (uid_t)-1, (gid_t)-1, err,
	                        sizeof err) < 0) {
		log_warn("host", "cannot write %s: %s (a crash loop on the events it names may go on "
		                 "longer)",
		         record_path, err);
	}
}

/* The file's records into recs; 1 when it held a line that is not one
 * (dropped: the file is written again), else 0. */
static int records_read(void)
{
	char text[2048];
	struct stat st;
	int64_t file_ms;
	int bad = 0;
	FILE *f = fopen(record_path, "re");
	if (!f)
		return 0;
	file_ms = fstat(fileno(f), &st) ? 0
	                                : (int64_t)st.st_mtim.tv_sec * 1000 +
	                                      st.st_mtim.tv_nsec / 1000000;
	while (fgets(text, sizeof text, f)) {
		if (nrecs == RECORDS_MAX || record_parse(text, file_ms, &recs[nrecs]) != 0) {
			bad = 1; /* cut short (a full disk at the crash), or not one of ours */
			continue;
		}
		atomic_store(&recs[nrecs++].live, 1);
	}
	fclose(f);
	return bad;
}

/* The slots the last run left in hand, counted into the records; the file
 * emptied. How many records changed. */
static int inhand_take_last(void)
{
	struct inhand_file *old = malloc(sizeof *old);
	int fd = open(inhand_path, O_RDWR | O_CLOEXEC | O_NOFOLLOW), changed = 0, ours;
	int64_t at = now_ms();
	if (fd < 0 || !old) {
		if (fd >= 0)
			close(fd);
		free(old);
		return 0;
	}
	ours = pread(fd, old, sizeof *old, 0) == (ssize_t)sizeof *old &&
	       !memcmp(old->magic, INHAND_MAGIC, sizeof old->magic) && old->slots == INHAND_SLOTS;
	/* After a restart the consumers wait for their partitions, the
	 * broker's to give once it drops the old members: said, so that the
	 * wait is not taken for a fault. */
	if (ours && !old->stopped)
		log_warn("host", "the last run did not stop cleanly (it crashed, was killed, or the "
		                 "stop's guard ended it): what it had not committed is handled again; "
		                 "its consumers did not leave their groups, so the broker gives this "
		                 "run's their partitions once it drops them, after session.timeout.ms "
		                 "(45 s by default: [kafka] rdkafka.session.timeout.ms)");
	if (ours && !old->ended) {
		for (int i = 0; i < INHAND_SLOTS; i++) {
			struct inhand_slot *s = &old->slot[i];
			struct record *r;
			int where;
			if (s->state != SLOT_IN_HAND || s->id_len >= RECORD_ID_MAX ||
			    !memchr(s->plugin, '\0', sizeof s->plugin) || !s->plugin[0] ||
			    !memchr(s->topic, '\0', sizeof s->topic) || !s->topic[0] ||
			    memchr(s->id, '\0', s->id_len))
				continue;
			s->id[s->id_len] = '\0';
			r = record_find(s->plugin, s->topic, s->partition, s->offset, s->id, &where);
			if (r) {
				r->count++;
			} else if (nrecs < RECORDS_MAX) {
				r = &recs[nrecs++];
				r->count = 1;
				memcpy(r->plugin, s->plugin, sizeof r->plugin);
				memcpy(r->id, s->id, s->id_len + 1);
				atomic_store(&r->live, 1);
			} else {
				log_warn("host", "the last run was killed while plugin '%s' handled an event "
				                 "of %s [%d] at offset %" PRId64 ", not recorded: %d events "
				                 "are already",
				         s->plugin, s->topic, (int)s->partition, s->offset, RECORDS_MAX);
				continue;
			}
			r->killed = 1;
			memcpy(r->topic, s->topic, sizeof r->topic); /* where it was (a copy's place) */
			r->partition = s->partition;
			r->offset = s->offset;
			r->at_ms = at;
			changed++;
		}
	}
	/* Spent before the record is written: a kill in between loses this
	 * count, rather than counting the same end twice. Its magic written
	 * over, not the file cut: its blocks serve the next run's mapping,
	 * which a full disk may have none for. */
	if (ours && pwrite(fd, "\0", 1, 0) != 1)
		log_warn("host", "cannot mark %s read: %s", inhand_path, strerror(errno));
	close(fd);
	free(old);
	return changed;
}

static void record_say(const struct record *r)
{
	const char *then = r->count >= CRASH_RECORD_LIMIT
	                       ? ": that event is dead-lettered without calling the handler again"
	                       : r->killed ? ": it is handled again; should evhostd end so again on "
	                                     "it, the next start dead-letters it"
	                                   : ": it is handled again; should it crash again, the "
	                                     "next start dead-letters it";
	if (r->killed)
		log_warn("host", "the last run did not stop cleanly while plugin '%s' handled event "
		                 "%s of %s [%d] at offset %" PRId64 " (killed: the OOM killer, SIGKILL, "
		                 "or the stop's guard; %ld start%s in a row)%s",
		         r->plugin, r->id[0] ? r->id : "(no id)", r->topic, (int)r->partition,
		         r->offset, r->count, r->count == 1 ? "" : "s", then);
	else
		log_warn("host", "the last run crashed in plugin '%s' handling event %s of %s [%d] "
		                 "at offset %" PRId64 " (%ld start%s in a row)%s",
		         r->plugin, r->id[0] ? r->id : "(no id)", r->topic, (int)r->partition,
		         r->offset, r->count, r->count == 1 ? "" : "s", then);
}

void crash_record_open(const char *state_dir)
{
	int rewrite;
	nrecs = 0;
	atomic_store(&nlive, 0);
	atomic_store(&dying, 0);
	inhand_unmap();
	if (snprintf(record_path, sizeof record_path, "%s/" CRASH_RECORD_FILE, state_dir) >=
	        (int)sizeof record_path ||
	    snprintf(inhand_path, sizeof inhand_path, "%s/" INHAND_FILE, state_dir) >=
	        (int)sizeof inhand_path) {
		record_path[0] = inhand_path[0] = '\0';
		return;
	}
	rewrite = records_read();
	rewrite |= inhand_take_last() > 0;
	atomic_store(&nlive, nrecs);
	if (rewrite)
		records_write();
	for (int i = 0; i < nrecs; i++)
		record_say(&recs[i]);
	inhand_map_new();
}

long crash_record_match(const char *plugin, const char *topic, int32_t partition,
                        int64_t offset, const char *id, crash_match *m)
{
	struct record *r;
	int where = 0;
	m->index = -1;
	m->at_place = 0;
	m->killed = 0;
	m->at_ms = 0;
	if (!atomic_load(&nlive) ||
	    !(r = record_find(plugin, topic, partition, offset, id, &where)))
		return 0;
	m->index = (int)(r - recs);
	m->at_place = where == RECORD_HERE;
	m->killed = r->killed;
	m->at_ms = r->at_ms;
	return r->count;
}

void crash_record_forget(const crash_match *m)
{
	if (m->index < 0 || m->index >= nrecs || !atomic_exchange(&recs[m->index].live, 0))
		return;
	atomic_fetch_sub(&nlive, 1);
	pthread_mutex_lock(&record_lock);
	records_write();
	pthread_mutex_unlock(&record_lock);
}

void crash_record_consumers_left(void)
{
	if (inhand) {
		__atomic_store_n(&inhand->ended, 1, __ATOMIC_RELEASE);
		__atomic_store_n(&inhand->stopped, 1, __ATOMIC_RELEASE);
	}
}

void crash_record_stopped(int clean)
{
	crash_record_consumers_left();
	if (!clean)
		return;
	pthread_mutex_lock(&record_lock);
	for (int i = 0; i < nrecs; i++)
		if (atomic_exchange(&recs[i].live, 0))
			atomic_fetch_sub(&nlive, 1);
	if (record_path[0] && unlink(record_path) != 0 && errno != ENOENT)
		log_warn("host", "cannot remove %s: %s", record_path, strerror(errno));
	pthread_mutex_unlock(&record_lock);
}

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)

#define SHOWN_MAX 256

/* How far above the handler's frame a fault counts as on this thread's
 * stack: a large local array in a plugin's handler jumps past the stack's
 * end by its size. */
#define STACK_HINT_BYTES (4u << 20)
#define ALTSTACK_BYTES (64 * 1024)
#define ALTSTACK_GUARD 4096

/* put() of text that came from outside (a request's decoded path, an
 * event's id): a byte below 0x20 or 0x7f as \xNN, so that a path holding
 * "%0A{...}" neither splits the line nor forges a second one; past
 * SHOWN_MAX bytes of it, "...", so that what follows it (the event's place,
 * the line's end) is not cut off. */
static void put_escaped(line *l, const char *s)
{
	size_t end = l->n + SHOWN_MAX;
	for (; s && *s && l->n + 4 < sizeof l->buf - 1; s++) {
		if (l->n + 4 > end) {
			put(l, "...");
			return;
		}
		unsigned char c = (unsigned char)*s;
		if (c >= 0x20 && c != 0x7f) {
			l->buf[l->n++] = (char)c;
			continue;
		}
		l->buf[l->n++] = '\\';
		l->buf[l->n++] = 'x';
		l->buf[l->n++] = "0123456789abcdef"[c >> 4];
		l->buf[l->n++] = "0123456789abcdef"[c & 15];
	}
	if (!s)
		put(l, NULL);
}

static void put_hex(line *l, uintptr_t v)
{
	char d[2 + 2 * sizeof v + 1];
	int i = (int)sizeof d;
	d[--i] = '\0';
	do
		d[--i] = "0123456789abcdef"[v & 15];
	while ((v >>= 4) && i > 2);
	d[--i] = 'x';
	d[--i] = '0';
	put(l, d + i);
}

/* The event this thread crashed on, for the next start (crash_record_*),
 * with the live records of others: open, write, clock_gettime, futimens and
 * fsync are async-signal-safe. Said on the line. The record's time is the
 * crash's to the nanosecond: the file system stamps a write from a clock up
 * to a tick (4 ms) behind, and a copy redriven a moment before the crash
 * (with the one it crashed on) would look redriven after it, a new try
 * (crash_match.at_ms). A thread forgetting a record (records_write) while
 * this runs could still rename its file over this one: `dying`, set first,
 * leaves it a few instructions to do so. */
static void record_event(line *l)
{
	line r = {.n = 0};
	long count = 1;
	struct timespec when[2];
	struct record *same = NULL;
	int fd, written, killed = 0, where = 0;
	int64_t at;
	if (!record_path[0])
		return;
	clock_gettime(CLOCK_REALTIME, &when[0]);
	when[1] = when[0];
	at = (int64_t)when[0].tv_sec * 1000 + when[0].tv_nsec / 1000000;
	if (atomic_load(&nlive))
		same = record_find(ctx.plugin, ctx.a, ctx.n1, ctx.n2, ctx.c, &where);
	if (same) {
		count = same->count + 1;
		killed = same->killed;
	}
	fd = open(record_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
	written = fd >= 0;
	for (int i = 0; written && i < nrecs; i++) {
		struct record *o = &recs[i];
		if (o == same || !atomic_load(&o->live))
			continue;
		r.n = 0;
		put_record(&r, o->plugin, o->topic, o->partition, o->offset, o->id, o->count,
		           o->at_ms, o->killed);
		written = write(fd, r.buf, r.n) == (ssize_t)r.n;
	}
	r.n = 0;
	put_record(&r, ctx.plugin, ctx.a, ctx.n1, ctx.n2, ctx.c, count, at, killed);
	written = written && write(fd, r.buf, r.n) == (ssize_t)r.n;
	if (written)
		(void)futimens(fd, when); /* else the file system's stamp, a tick at most off */
	if (!written || fsync(fd) != 0) {
		put(l, " (the crash could not be recorded for the next start)");
	} else if (count >= CRASH_RECORD_LIMIT) {
		put(l, "; it crashed on this event at ");
		put_int(l, count);
		put(l, " starts in a row: the next start dead-letters it without calling the "
		       "handler");
	}
	if (fd >= 0)
		close(fd);
}

static const char *signal_name(int sig)
{
	switch (sig) {
	case SIGSEGV: return "SIGSEGV";
	case SIGBUS: return "SIGBUS";
	case SIGILL: return "SIGILL";
	case SIGFPE: return "SIGFPE";
	case SIGABRT: return "SIGABRT";
	default: return "a fatal signal";
	}
}

/* The stack pointer of the code the signal interrupted (the handler runs
 * on a stack of its own, crash_thread_enter); where it is not known, the
 * handler's own frame, which is on that stack when there is no other. */
static uintptr_t interrupted_sp(const void *uc, const void *frame)
{
#if defined(__x86_64__)
	return (uintptr_t)((const ucontext_t *)uc)->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
	return (uintptr_t)((const ucontext_t *)uc)->uc_mcontext.sp;
#else
	(void)uc;
	return (uintptr_t)frame;
#endif
}

/* stderr is the journal's stream (crash_handlers_install looked). */
static int to_journal;

static void on_fatal(int sig, siginfo_t *si, void *uc)
{
	line l = {.n = 0};
	void *frames[48];
	int n;
	/* Sent by another process (systemd's watchdog aborting a hung daemon,
	 * kill -ABRT for a core): the thread it landed on did not crash, and
	 * the events in hand are counted at the next start, as at a kill. */
	int sent = si->si_code <= 0 && si->si_pid != getpid();
	/* A crash names its own event, if any: the events other threads had
	 * in hand are not held against them. */
	atomic_store(&dying, 1);
	if (inhand && !sent)
		__atomic_store_n(&inhand->ended, 1, __ATOMIC_RELEASE);
	if (to_journal) /* syslog's crit, for journald (log_stderr_is_journal) */
		put(&l, "<2>");
	put(&l, "evhostd: FATAL: ");
	put(&l, signal_name(sig));
	if (sent) {
		put(&l, " sent by process ");
		put_int(&l, si->si_pid);
	}
	if (sig == SIGSEGV || sig == SIGBUS) {
		uintptr_t at = (uintptr_t)si->si_addr, sp = interrupted_sp(uc, &l);
		put(&l, " at address ");
		put_hex(&l, at);
		/* At the stack pointer of the code that faulted, or just above
		 * it: the thread's stack, grown past its end. */
		if (sig == SIGSEGV && (at >= sp ? at - sp < STACK_HINT_BYTES : sp - at <= 4096))
			put(&l, " (this thread's stack: a stack overflow? HTTP workers have 100 KiB "
			        "stacks; keep large buffers on the heap)");
	}
	switch (ctx.kind) {
	case CRASH_NONE: put(&l, " outside any plugin call"); break;
	case CRASH_HTTP:
		put_all(&l, " in plugin '", ctx.plugin, "', handling HTTP ", ctx.a, " ", (char *)NULL);
		put_escaped(&l, ctx.b);
		put(&l, " (request id ");
		put_escaped(&l, ctx.c);
		put(&l, ")");
		break;
	case CRASH_EVENT:
		put_all(&l, " in plugin '", ctx.plugin, "', handling event ", (char *)NULL);
		put_escaped(&l, ctx.c);
		put_all(&l, " of ", ctx.a, " [", (char *)NULL);
		put_int(&l, ctx.n1);
		put(&l, "] at offset ");
		put_int(&l, ctx.n2);
		put(&l, " (not committed: it is handled again after the restart)");
		break;
	case CRASH_CALL: put_all(&l, " in plugin '", ctx.plugin, "', in its ", ctx.a, (char *)NULL);
	}
	if (ctx.kind == CRASH_EVENT && !sent)
		record_event(&l);
	put(&l, "; the daemon stops. Backtrace:\n");
	if (l.buf[l.n - 1] != '\n') /* cut short: still one line */
		l.buf[l.n - 1] = '\n';
	(void)!write(STDERR_FILENO, l.buf, l.n);
	n = backtrace(frames, (int)(sizeof frames / sizeof frames[0]));
	backtrace_symbols_fd(frames, n, STDERR_FILENO);
	/* SA_RESETHAND put the default action back: a fault recurs when this
	 * returns; a signal sent (abort, kill) is raised again. A core dump
	 * either way. */
	if (si->si_code <= 0)
		raise(sig);
}

/* The handler's own stack, per thread that runs plugin code: a stack that
 * overflowed has no room left for the handler, which the kernel could not
 * start then (the daemon died without its line). Guarded below. */
void *crash_thread_enter(void)
{
	stack_t ss;
	char *m = mmap(NULL, ALTSTACK_GUARD + ALTSTACK_BYTES, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return NULL; /* the thread's own stack, as before */
	(void)mprotect(m, ALTSTACK_GUARD, PROT_NONE);
	memset(&ss, 0, sizeof ss);
	ss.ss_sp = m + ALTSTACK_GUARD;
	ss.ss_size = ALTSTACK_BYTES;
	if (sigaltstack(&ss, NULL) != 0) {
		munmap(m, ALTSTACK_GUARD + ALTSTACK_BYTES);
		return NULL;
	}
	return m;
}

static void altstack_leave(void *stack)
{
	stack_t ss;
	if (!stack)
		return;
	memset(&ss, 0, sizeof ss);
	ss.ss_flags = SS_DISABLE;
	(void)sigaltstack(&ss, NULL);
	munmap(stack, ALTSTACK_GUARD + ALTSTACK_BYTES);
}

void crash_handlers_install(void)
{
	static const int sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
	struct sigaction sa;
	void *warm[1];
	/* backtrace() loads libgcc on its first call, which allocates: not in
	 * a signal handler. */
	(void)backtrace(warm, 1);
	to_journal = log_stderr_is_journal(); /* not in the handler: getenv, sscanf */
	(void)crash_thread_enter(); /* the main thread's (init, fini): for good */
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_fatal;
	sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaction(sigs[i], &sa, NULL);
}
#else
void crash_handlers_install(void) {}
void *crash_thread_enter(void) { return NULL; }
static void altstack_leave(void *stack) { (void)stack; }
#endif

void crash_thread_leave(void *stack)
{
	slot_release();
	altstack_leave(stack);
}
