"""The test library's own promises that other tests lean on."""

import collections
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import evhost_testlib as lib


def test_a_reserved_port_is_not_given_to_another_run_until_released(monkeypatch):
    # A broker stopped and started again within a test leaves its ports
    # unbound meanwhile: another test run on the machine (its own pytest
    # session, its own xdist slices) must not be given them. A narrow slice
    # (2000 workers: 11 ports each) makes a collision near certain otherwise.
    env = dict(os.environ, PYTEST_XDIST_WORKER_COUNT="2000", PYTEST_XDIST_WORKER="gw7")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", env["PYTEST_XDIST_WORKER_COUNT"])
    monkeypatch.setenv("PYTEST_XDIST_WORKER", env["PYTEST_XDIST_WORKER"])
    held = [lib.reserve_port() for _ in range(6)]
    other = ("import evhost_testlib as lib\n"
             "print(' '.join(str(lib.free_port()) for _ in range(300)))\n")

    def ports_of_another_run():
        r = subprocess.run([sys.executable, "-c", other], cwd=os.path.dirname(lib.__file__),
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=60, check=True)
        return {int(p) for p in r.stdout.split()}
    try:
        assert not ports_of_another_run() & set(held)
        assert len(set(held)) == len(held)
        assert not {lib.free_port() for _ in range(300)} & set(held)  # nor this run's
    finally:
        for port in held:
            lib.release_port(port)
    assert ports_of_another_run() & set(held)  # released: given out again


def test_a_port_just_handed_out_is_not_handed_out_again(monkeypatch):
    # A test that takes two ports (an HTTPS listener's, then the daemon's
    # own) before anything binds either must get two: the daemon did not
    # start when they were the same.
    first, second = lib.free_port(), lib.free_port()
    monkeypatch.setattr(lib, "_handed_out", collections.deque(maxlen=512))
    draws = iter([first, first, first, second])
    monkeypatch.setattr(lib.random, "randint", lambda lo, hi: next(draws))
    assert lib.free_port() == first
    assert lib.free_port() == second


def test_the_collector_from_a_build_under_way_is_waited_for(tmp_path):
    # scripts/test builds the collector in the background while the first
    # pass runs: a test that needs it waits for the build's end (.rc, written
    # last), then takes the path's last line.
    prefix = str(tmp_path / "otelcol")
    (tmp_path / "otelcol.path").write_text("")
    (tmp_path / "otelcol.log").write_text("otelcol: building\n")

    def finish():
        # As scripts/test writes it: the .rc whole, by a rename (a file being
        # written could be seen empty, a failure with no status).
        (tmp_path / "otelcol.path").write_text("/cache/otelcol-evhost-test-1234\n")
        (tmp_path / "otelcol.rc.tmp").write_text("0\n")
        (tmp_path / "otelcol.rc.tmp").rename(tmp_path / "otelcol.rc")

    timer = threading.Timer(1.0, finish)
    timer.start()
    try:
        assert lib.otelcol_pending(prefix, timeout=30) == "/cache/otelcol-evhost-test-1234"
    finally:
        timer.cancel()


def test_a_failed_or_endless_collector_build_is_an_error_saying_so(tmp_path):
    prefix = str(tmp_path / "otelcol")
    with pytest.raises(RuntimeError, match="had not ended after 1 s"):
        lib.otelcol_pending(prefix, timeout=1)
    (tmp_path / "otelcol.path").write_text("")
    (tmp_path / "otelcol.log").write_text("otelcol: error: building the test collector failed\n")
    (tmp_path / "otelcol.rc").write_text("1\n")
    with pytest.raises(RuntimeError, match=r"(?s)exited 1\).*collector failed"):
        lib.otelcol_pending(prefix, timeout=1)


def test_a_collector_build_that_failed_is_waited_for_once(tmp_path, monkeypatch):
    # Each worker waits for scripts/test's build once: a failed (or endless)
    # one fails every later test at once, not after another wait.
    monkeypatch.delenv("EVHOST_OTELCOL", raising=False)
    monkeypatch.setenv("EVHOST_OTELCOL_PENDING", str(tmp_path / "otelcol"))
    monkeypatch.setattr(lib, "_otelcol_build", None)
    waits = []
    real = lib.otelcol_pending

    def counted(prefix):
        waits.append(prefix)
        return real(prefix, timeout=0.5)

    monkeypatch.setattr(lib, "otelcol_pending", counted)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="had not ended after 0 s"):
            lib.otelcol_binary()
    assert waits == [str(tmp_path / "otelcol")]


class _Logged:
    """A stand-in for a stopped Daemon: its log's text and the flag."""

    def __init__(self, text):
        self.text, self.librdkafka_hung = text, False

    def log_text(self):
        return self.text


_GUARD = ("ERROR [host] SIGTERM: the stop has not ended within [host] stop_timeout "
          "(10000 ms) and 10 s more: " + lib.LIBRDKAFKA_DESTROY_HUNG.format("probe") +
          " without the plugins' fini.\n")
_RDK_LEAK = ("==================\nWARNING: ThreadSanitizer: thread leak (pid=2588)\n"
             "  Thread T8 'rdk:broker-1' (tid=2620, finished) created by main thread at:\n"
             "    #0 pthread_create\n\n  And 1 more similar thread leaks.\n\n"
             "SUMMARY: ThreadSanitizer: thread leak tsan_thrd.c:83 in thrd_create\n")


_LEFT = ("ERROR [kafka] " + lib.LIBRDKAFKA_DESTROY_LEFT.format("probe") + " it may never "
         "get back (librdkafka 2.0.2 does so after a topic was deleted under a consumer: "
         "librdkafka#4724, fixed in 2.5.0); left running with its threads and connections, "
         "its memory kept, until evhostd stops\n")


def test_librdkafkas_destroy_hang_is_told_apart_and_forgives_only_its_thread_leaks():
    # test_delivery takes a consumer librdkafka never destroyed
    # (librdkafka#4724) for that bug only with status 0 and the line that left
    # that plugin's Kafka client running, or status 3 and the stop guard's
    # line naming it; then a sanitizer report is forgiven only when every one
    # is a thread leak of librdkafka's threads.
    assert not lib.librdkafka_destroy_hung(_Logged(_GUARD), 0, "probe")
    assert not lib.librdkafka_destroy_hung(_Logged(_GUARD), 3, "crud")
    assert not lib.librdkafka_destroy_hung(_Logged(_GUARD.replace("Kafka client ending",
                                                                  "fini")), 3, "probe")
    assert not lib.librdkafka_destroy_hung(_Logged(_LEFT), 3, "probe")
    assert not lib.librdkafka_destroy_hung(_Logged(_LEFT), 0, "crud")
    assert not lib.librdkafka_destroy_hung(_Logged(""), 0, "probe")
    for text, code in ((_GUARD, 3), (_LEFT, 0)):
        d = _Logged(text + _RDK_LEAK)
        assert lib.librdkafka_destroy_hung(d, code, "probe") and d.librdkafka_hung
        assert lib.Daemon.sanitizer_report(d) is None
    for other in (_RDK_LEAK.replace("rdk:broker-1", "http-worker"),
                  _RDK_LEAK + "WARNING: ThreadSanitizer: data race (pid=2588)\n  Write",
                  _RDK_LEAK + "ERROR: AddressSanitizer: heap-use-after-free"):
        d = _Logged(_GUARD + other)
        assert lib.librdkafka_destroy_hung(d, 3, "probe")
        assert lib.Daemon.sanitizer_report(d), other
    assert lib.Daemon.sanitizer_report(_Logged(_RDK_LEAK)), "no hang seen: reported"


def test_kafka_tls_takes_a_certificates_dir_with_a_space():
    # scripts/kafka tls prints the two addresses, then the directory, which is
    # under $TMPDIR for a broker of the tests: it may hold a space.
    tls = lib.KafkaTls("127.0.0.1:19094 127.0.0.1:19095 /tmp/my tests/kafka/tls\n")
    assert (tls.ssl, tls.sasl, tls.dir) == ("127.0.0.1:19094", "127.0.0.1:19095",
                                            Path("/tmp/my tests/kafka/tls"))
