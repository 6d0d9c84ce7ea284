/* evhostd: command line, signals, and the main thread's wait. All signals
 * are blocked before any thread starts and taken with sigwait() here, so no
 * handler ever runs on a worker thread in the middle of a transaction. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diag.h"
#include "host.h"
#include "log.h"

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

static int wait_for_stop(host *h)
{
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			return -1;
		if (sig == SIGHUP) {
			host_reload(h);
			continue;
		}
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
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	/* A client closing its socket mid-write must not kill the daemon. */
	signal(SIGPIPE, SIG_IGN);
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
	int check = 0, opt, rc;
	host h;
	diag d = {0};

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
	rc = host_configure(&h, conf, &d);
	if (rc != 0 || check) {
		diag_print(&d, check ? stdout : stderr);
		if (check && rc == 0)
			printf("%s: configuration OK (%zu plugin%s)\n", conf, h.nplugins,
			       h.nplugins == 1 ? "" : "s");
		else if (rc != 0)
			fprintf(check ? stdout : stderr, "%s: %zu problem%s found\n", conf, d.n,
			        d.n == 1 ? "" : "s");
		diag_free(&d);
		host_stop(&h);
		return rc == 0 ? 0 : 1;
	}
	diag_free(&d);
	log_setup(h.set.log_level, h.set.log_fmt);

	if (host_start(&h) != 0) {
		host_stop(&h);
		return 1;
	}
	wait_for_stop(&h);
	host_stop(&h);
	log_info("host", "stopped");
	return 0;
}
