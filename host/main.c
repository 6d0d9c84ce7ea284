/* evhostd: command line, signals, and the main thread's wait. All signals
 * are blocked before any thread starts and taken with sigtimedwait() here,
 * so no handler ever runs on a worker thread in the middle of a transaction.
 * Under systemd (Type=notify) the main thread also reports readiness and
 * stopping, and pings the watchdog between signals. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "admin.h"
#include "clock.h"
#include "crash.h"
#include "diag.h"
#include "events.h"
#include "host.h"
#include "http.h"
#include "kafka.h"
#include "log.h"
#include "metrics.h"
#include "plugins.h"
#include "stopguard.h"
#include "stream.h"

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: evhostd [-c FILE] [--check-config] [--version] [--help]\n"
	        "\n"
	        "Hosts event-driven service plugins on Apache Kafka.\n"
	        "\n"
	        "  -c, --config FILE   main configuration (default %s);\n"
	        "                      drop-ins are read from its conf.d directory\n"
	        "  -t, --check-config  validate configuration and plugins, print\n"
	        "                      file:line: message for each problem, exit 0 if all is well\n"
	        "  -V, --version       print version and plugin ABI, then exit\n"
	        "  -h, --help          this text\n"
	        "\n"
	        "Signals: SIGTERM/SIGINT stop cleanly (in-flight requests finish, the outbox is\n"
	        "flushed, offsets are committed); SIGHUP re-reads the configuration and starts,\n"
	        "stops or restarts only the plugins whose sections changed.\n",
	        EVHOST_DEFAULT_CONF);
}

/* systemd's watchdog interval while a reload runs. The main thread pings,
 * and a reload holds it: it drains the plugins it stops or restarts, which
 * waits for a handler running (an SMTP send, up to its timeout; a slow
 * handler as long as it takes), and it runs the new plugins' init. With
 * the unit's WatchdogSec (30 s) a reload that drained a handler of 30 s was
 * taken for a hang, and systemd killed the daemon in the middle of it. A
 * reload longer than this still is. */
#define RELOAD_WATCHDOG_USEC (600ULL * 1000000ULL)

/* How long the main thread may sleep between signals: a second, or half
 * the watchdog interval when systemd expects pings (*usec: WATCHDOG_USEC,
 * else 0) and that is shorter. Its looks between signals (closed streams
 * stuck writing, the plugins' log budgets, the wall clock) come as often
 * under the packaged unit's watchdog (30 s) as without it; with the slice
 * at half that interval, a stuck stream held its worker 15 s longer. A
 * ping a second is one datagram to systemd. */
static struct timespec wait_slice(uint64_t *usec)
{
	struct timespec ts = {1, 0};

	if (sd_watchdog_enabled(0, usec) <= 0)
		*usec = 0;
	if (*usec && *usec / 2 < 1000000) {
		ts.tv_sec = 0; /* not under a millisecond: no spinning */
		ts.tv_nsec = (long)(*usec / 2 < 1000 ? 1000000 : *usec / 2 * 1000);
	}
	return ts;
}

/* A reload runs on the main thread, which takes no signal meanwhile; its
 * drain waits for the handlers it stops, however long they run. So does the
 * start, whose plugins' init may run long migrations. This thread takes
 * SIGTERM and SIGINT for them: the stop is asked at once (the guard armed:
 * the reload, or the start's plugin under way, and the stop after it end
 * within [host] stop_timeout and STOP_GRACE_MS), and begins when the reload
 * ends (the start: once the plugin starting then is started, the others
 * left). SIGHUP stays pending for the main thread's next wait. The main
 * thread wakes it with WATCH_WAKE_SIG when it is done, so that the next
 * signal (a SIGHUP or SIGTERM right after) is not held for the rest of a
 * slice. */
struct reload_watch {
	atomic_int done;
	int sig, budget_ms;
	const char *during, *then; /* "a reload", "once the reload ends" */
	atomic_int *asked;         /* set to the signal when one comes (NULL: none) */
};

/* Blocked in every thread (block_signals), sent only to the watcher: the
 * first real-time signal glibc leaves to applications. */
#define WATCH_WAKE_SIG SIGRTMIN

static void *reload_watch_main(void *arg)
{
	struct reload_watch *w = arg;
	/* Only a backstop: the end of the reload wakes it. */
	struct timespec slice = {1, 0};
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, WATCH_WAKE_SIG);
	/* Until the reload ends, even after a stop was asked: the guard may
	 * end the process first, and a thread that had returned unjoined then
	 * would be a leak to ThreadSanitizer. */
	while (!atomic_load(&w->done)) {
		int sig = sigtimedwait(&set, NULL, &slice);
		const char *name = sig == SIGTERM ? "SIGTERM" : "SIGINT";
		if (sig != SIGTERM && sig != SIGINT)
			continue;
		if (w->sig) {
			log_info("host", "%s during %s: already stopping %s", name, w->during, w->then);
			continue;
		}
		w->sig = sig;
		if (w->asked)
			atomic_store(w->asked, sig);
		log_info("host", "%s during %s: stopping %s", name, w->during, w->then);
		sd_notifyf(0, "STOPPING=1\nSTATUS=stopping after %s under way", w->during);
		stopguard_arm(w->budget_ms, name);
	}
	return NULL;
}

/* The watcher for `w` (its thread in *t); 1 when it runs. */
static int watch_begin(struct reload_watch *w, pthread_t *t)
{
	if (pthread_create(t, NULL, reload_watch_main, w) == 0)
		return 1;
	log_warn("host", "cannot start the thread that takes SIGTERM during %s: a stop asked "
	                 "meanwhile waits for its end",
	         w->during);
	return 0;
}

static void watch_end(struct reload_watch *w, pthread_t t, int watching)
{
	if (!watching)
		return;
	atomic_store(&w->done, 1);
	/* Pending for the watcher if it is not waiting yet: its next
	 * sigtimedwait returns at once and sees `done`. */
	pthread_kill(t, WATCH_WAKE_SIG);
	pthread_join(t, NULL);
}

static int stop_budget_ms(const host *h)
{
	return h->set.stop_timeout_ms > 0 ? h->set.stop_timeout_ms : STOP_TIMEOUT_MS;
}

/* SIGHUP: tell systemd a reload is under way (RELOADING=1 with the
 * monotonic time it started, as sd_notify(3) asks), and READY=1 once the
 * new configuration runs or was refused. With a watchdog (`usec`, its
 * interval; 0: none) the interval is RELOAD_WATCHDOG_USEC meanwhile
 * (draining a plugin may take a while), and `usec` again after it.
 * Returns SIGTERM or SIGINT when one came during the reload, else 0. */
static int reload(host *h, uint64_t usec)
{
	struct reload_watch w = {.budget_ms = stop_budget_ms(h),
	                         .during = "a reload",
	                         .then = "once the reload ends",
	                         .asked = &h->reload_stop};
	struct timespec now;
	pthread_t watcher;
	int rc, watching;

	clock_gettime(CLOCK_MONOTONIC, &now);
	sd_notifyf(0, "RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC=%llu",
	           (unsigned long long)now.tv_sec * 1000000ULL +
	               (unsigned long long)now.tv_nsec / 1000ULL);
	if (usec && usec < RELOAD_WATCHDOG_USEC)
		sd_notifyf(0, "WATCHDOG=1\nWATCHDOG_USEC=%llu", RELOAD_WATCHDOG_USEC);
	else if (usec)
		sd_notify(0, "WATCHDOG=1");
	watching = watch_begin(&w, &watcher);
	rc = 0;
	if (admin_reload_begin(h) == 0) { /* else a stop came first: w.sig says which */
		rc = host_reload(h);
		admin_reload_end(h, rc);
	}
	watch_end(&w, watcher, watching);
	if (w.sig)
		return w.sig;
	if (usec && usec < RELOAD_WATCHDOG_USEC)
		sd_notifyf(0, "WATCHDOG_USEC=%llu\nWATCHDOG=1", (unsigned long long)usec);
	sd_notifyf(0, "READY=1\nSTATUS=serving %zu plugin%s%s", h->nplugins,
	           h->nplugins == 1 ? "" : "s",
	           rc == 0 ? "" : " (the last reload was refused, see the log)");
	return 0;
}

/* A step of the wall clock of at least this much between two looks is said
 * (NTP slews it by at most half a millisecond a second). */
#define CLOCK_STEP_SAY_MS 1000

/* The main thread compares the wall clock with the monotonic one between
 * signals: a change of their difference is a step of the wall clock (NTP's
 * first synchronisation, `date -s`; a suspend looks like a step forward).
 * evhostd's own waits do not mind it; librdkafka's do (operations.md,
 * "Clock changes"), so a step back is said at WARN. */
static void watch_wall_clock(void)
{
	static int64_t last;
	static int looked;
	int64_t skew = clock_wall_ms() - clock_mono_ms(), step = skew - last;
	if (looked && step <= -CLOCK_STEP_SAY_MS) {
		long long held = events_time_held_ms();
		char events[224] = "";
		metrics_wall_clock_step(1);
		/* Events' time never goes back: one stamped while the clock ran
		 * ahead holds the next ones' there. A clock set ahead by mistake
		 * (a wrong year) and corrected would hold it for as long. */
		if (held >= CLOCK_STEP_SAY_MS)
			snprintf(events, sizeof events,
			         "; events published until it catches up carry the latest time given, "
			         "%lld.%03lld s ahead of it (a clock that was set ahead by mistake: "
			         "restart evhostd to let it go)",
			         held / 1000, held % 1000);
		log_warn("host",
		         "the wall clock went back %" PRId64 ".%03" PRId64 " s: evhostd's own timeouts "
		         "run on the monotonic clock, but librdkafka's waits under way may last that "
		         "much longer; should Kafka traffic stop, restart evhostd (operations.md, "
		         "\"Clock changes\")%s",
		         -step / 1000, -step % 1000, events);
	} else if (looked && step >= CLOCK_STEP_SAY_MS) {
		metrics_wall_clock_step(0);
		log_info("host",
		         "the wall clock went forward %" PRId64 ".%03" PRId64 " s (or the machine was "
		         "suspended): the times logged and stored jump with it",
		         step / 1000, step % 1000);
	}
	last = skew;
	looked = 1;
}

static int wait_for_stop(host *h)
{
	sigset_t set;
	struct timespec slice;
	int sig, e;
	uint64_t usec;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	slice = wait_slice(&usec);
	watch_wall_clock();
	for (;;) {
		if (usec)
			sd_notify(0, "WATCHDOG=1");
		sig = sigtimedwait(&set, NULL, &slice);
		e = errno; /* before the looks below, whose calls may set it */
		host_log_sweep(h);
		watch_wall_clock();
		if (sig < 0) {
			if (e == EAGAIN || e == EINTR) {
				/* Between signals (a stop cuts streams itself, after
				 * their STREAM_STOP_GRACE_MS): a closed stream whose
				 * worker waits on a client that stopped reading lets
				 * go of that worker. */
				stream_hub_reclaim(stream_hub_global());
				/* And a request body trickled past its time lets go of
				 * its worker. */
				http_cut_slow_bodies();
				continue;
			}
			log_error("host", "sigtimedwait: %s", strerror(e));
			return -1;
		}
		if (sig == SIGHUP && (sig = reload(h, usec)) == 0)
			continue;
		log_info("host", "%s: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
		return sig;
	}
}

static void block_signals(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, WATCH_WAKE_SIG);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	/* A client closing its socket mid-write must not kill the daemon, nor a
	 * write past the file size limit (LimitFSIZE=, ulimit -f): that one
	 * fails with EFBIG, and the store takes it as a want of room. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);
}

/* Descriptors: the soft limit raised to the hard one (at most 65536; the
 * daemon and its libraries use poll, never select, so a number past 1024 is
 * no harm), as the packaged unit sets. Run by hand, the soft limit is often
 * 1024, and at it civetweb's accept loop spins on EMFILE without a word,
 * answering nothing. A limit lower than what a loaded daemon may hold
 * (about 50 descriptors, plus one per HTTP worker's connection, per broker
 * connection and per database) is said. */
static void raise_fd_limit(const host *h)
{
	struct rlimit rl;
	rlim_t want = 65536, need;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_cur < want && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	need = 128 + (rlim_t)(h->set.http_threads > 0 ? h->set.http_threads : 32) * 2 +
	       (rlim_t)h->nplugins * 16;
	if (rl.rlim_cur < need)
		log_warn("host", "open files are limited to %llu (ulimit -n, systemd LimitNOFILE=): "
		                 "with %zu plugin%s and [http] threads = %d, a loaded daemon may need "
		                 "about %llu; at the limit it cannot accept connections or open "
		                 "files, and says little",
		         (unsigned long long)rl.rlim_cur, h->nplugins, h->nplugins == 1 ? "" : "s",
		         h->set.http_threads, (unsigned long long)need);
}

/* Leave with `rc`, after host_stop. A plugin library whose file was written
 * over in place while loaded has the file's bytes for its pointers, its
 * destructors' too, which exit() would call: then _exit, the output
 * flushed, with nothing left to run. */
static int leave(int rc)
{
	if (plugins_changed_loaded()) {
		fflush(NULL);
		_exit(rc);
	}
	return rc;
}

/* Standard input, output and error open, on /dev/null where one was
 * closed (a supervisor's "2>&-"): else the first file the daemon opens
 * takes that number, and every log line is written into it (the state
 * directory's lock file, its pid overwritten). */
static void std_fds_open(void)
{
	/* In order: the lowest number free is this one, which open takes. */
	for (int fd = 0; fd <= 2; fd++)
		if (fcntl(fd, F_GETFD) == -1 && errno == EBADF)
			(void)!open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"check-config", no_argument, NULL, 't'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *conf = EVHOST_DEFAULT_CONF;
	int check = 0, opt, rc, sig;
	host h;
	diag d = {0};

	std_fds_open();
	while ((opt = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': conf = optarg; break;
		case 't': check = 1; break;
		case 'V':
			printf("evhostd %s (plugin ABI %d.%d)\n", EVHOST_VERSION, EVH_ABI_MAJOR,
			       EVH_ABI_MINOR);
			return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "evhostd: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}

	memset(&h, 0, sizeof h);
	block_signals();
	crash_handlers_install();
	rc = host_configure(&h, conf, &d);
	if (check && rc == 0) {
		/* What only making a client shows (certificates, keys, SASL). */
		rc = kafka_check_clients(&h.set, &d);
		kafka_known_issues(&h.set);
	}
	/* What the start warns of: [http] threads = 1 serves no event stream.
	 * A note in the verdict, not a problem (nor a log line, which [log]
	 * level = error would hide). */
	if (check && http_max_streams(&h.set, 0) == 0) {
		const cfg_entry *e = cfg_find(&h.cfg, "http", "threads");
		if (e)
			printf("%s:%d: note: " HTTP_NO_STREAMS "\n", e->file, e->line);
		else
			printf("note: " HTTP_NO_STREAMS "\n");
	}
	/* What only the plugins' init would show: two plugins whose declared
	 * routes clash (plugins.h). */
	if (check && plugins_check_instances(&h, &d, stdout) != 0)
		rc = -1;
	if (rc != 0 || check) {
		/* A refused start's lines go to the journal under systemd: at
		 * syslog's err there, as log.c's errors are. */
		const char *prio = !check && log_stderr_is_journal() ? "<3>" : "";
		diag_print_as(&d, check ? stdout : stderr, prio);
		if (check)
			host_check_disabled(&h, stdout);
		if (check && rc == 0)
			printf("%s: configuration OK (%zu plugin%s)\n", conf, h.nplugins,
			       h.nplugins == 1 ? "" : "s");
		else if (rc != 0)
			fprintf(check ? stdout : stderr, "%s%s: %zu problem%s found\n", prio, conf,
			        diag_count(&d), diag_count(&d) == 1 ? "" : "s");
		/* The verdict must reach its reader (evhostctl check runs this):
		 * a full disk or a closed stdout is said, never a silent 0. */
		errno = 0;
		if (check && (fflush(stdout) != 0 || ferror(stdout))) {
			fprintf(stderr, "evhostd: cannot write to standard output: %s\n",
			        strerror(errno ? errno : EIO));
			rc = -1;
		}
		diag_free(&d);
		host_stop(&h);
		return leave(rc == 0 ? 0 : 1);
	}
	diag_free(&d);
	log_setup(h.set.log_level, h.set.log_fmt);

	/* A plugin's init may run long migrations: a stop asked meanwhile is
	 * taken at once (said, the guard armed), and the start ends after the
	 * plugin under way. */
	struct reload_watch start_watch = {
	    .budget_ms = stop_budget_ms(&h),
	    .during = "the start",
	    .then = "once the plugin starting now has started (the others are left)",
	    .asked = &h.start_stop};
	pthread_t start_watcher;
	int start_watching = watch_begin(&start_watch, &start_watcher);

	raise_fd_limit(&h);
	rc = host_start(&h);
	watch_end(&start_watch, start_watcher, start_watching);
	if (rc < 0) {
		sd_notify(0, "STATUS=start failed, see the log");
		host_stop(&h); /* marks its consumers as gone (crash_record_consumers_left) */
		return leave(1);
	}
	if (start_watch.sig) {
		sig = start_watch.sig;
	} else {
		/* systemd (Type=notify) treats the unit as started only now, so
		 * units ordered after evhostd find its routes and consumers up. */
		sd_notifyf(0, "READY=1\nSTATUS=serving %zu plugin%s on %s", h.nplugins,
		           h.nplugins == 1 ? "" : "s", h.http_bound);
		/* Waiting for signals can only fail on a bug (sigtimedwait's
		 * EINVAL): stopped then, but not cleanly, so that systemd's
		 * Restart=on-failure starts it again. */
		sig = wait_for_stop(&h);
	}
	rc = sig < 0 ? 1 : 0;
	sd_notify(0, "STOPPING=1\nSTATUS=stopping: draining requests, committing offsets");
	/* A handler that does not return would hold the stop for good. */
	stopguard_arm(stop_budget_ms(&h), sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM"
	                                                                            : "stopping");
	host_stop(&h);
	stopguard_done();
	/* No handler runs now. A clean stop: the last run did not crash,
	 * whatever the one before did (its event, not seen again since, is not
	 * held against it). */
	crash_record_stopped(rc == 0);
	log_info("host", "stopped");
	return leave(rc);
}
