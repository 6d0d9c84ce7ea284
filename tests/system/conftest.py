"""pytest fixtures for evhost's system tests (see evhost_testlib.py for the
helpers behind them).

    build_dir        the CMake build tree under test (EVHOST_BUILD_DIR, default build/)
    kafka_bootstrap  "127.0.0.1:PORT" of a real Apache Kafka: EVHOST_TEST_KAFKA as set by
                     scripts/test, else one started by scripts/kafka for this session
    kafka_tls        that broker's TLS listeners and certificates (lib.KafkaTls)
    smtp_server      an SmtpSink: collects mail, can be stopped and started on its port
    evhostd          a DaemonFactory: evhostd(config, dropins, brokers=...) -> Daemon
    unique_name      unique_name("users") -> "users.<random>" for topics and groups
    otel_collector   a started lib.Collector: a real OpenTelemetry Collector on 127.0.0.1
                     (EVHOST_OTELCOL, or scripts/test's build under way once it ends:
                     EVHOST_OTELCOL_PENDING; else built by scripts/otelcol); .endpoint, .spans(),
                     .wait_spans(pred), stop() and start() again on the same port
"""

import os
import uuid
from pathlib import Path

import pytest

import evhost_testlib as lib


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the item so fixtures can tell, at teardown,
    # whether the test failed.
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _build_dir():
    d = Path(os.environ.get("EVHOST_BUILD_DIR", "build"))
    return d if d.is_absolute() else lib.REPO_ROOT / d


_ONE_CASE = ("ThreadSanitizer runs the first case of an input sweep (the cases take "
             "the same threads through the same code); the plain and ASan passes run "
             "every case")
_NEAR_BOUND = ("needs the daemon to do a fixed amount of work within a bound of the "
               "product's own, which ThreadSanitizer's slowdown on a loaded pass comes near: "
               "the plain and ASan passes run it")
_NO_BUILD = ("runs no program of the build under test (the harness, the docs, promtool, "
             "a build of its own): the plain pass runs it")


@pytest.hookimpl(trylast=True)  # after -k and -m: the first case of those selected
def pytest_collection_modifyitems(config, items):
    # A test that takes neither build_dir nor evhostd (nor a fixture built
    # on them) runs nothing a sanitizer watches: the same again under ASan
    # and TSan would only cost their passes time.
    sanitizer = lib.sanitizer(_build_dir())
    if sanitizer:
        for item in items:
            if not {"build_dir", "evhostd"} & set(getattr(item, "fixturenames", ())):
                item.add_marker(pytest.mark.skip(reason=_NO_BUILD))
    # Under ThreadSanitizer a test marked `near_bound` is left out: its
    # work against one of the product's time bounds (10000 dead letters
    # redriven within a scan of 30 s) took 24.5 s of the 30 in a TSan pass of
    # 8 workers, and ran out at 10. The races are those of the shorter
    # redrives, which run.
    # Under ThreadSanitizer a test marked `inputs` (a parametrized sweep of
    # requests or settings through the same code) runs its first case only:
    # what the cases change is a parser's or a check's input, in one thread,
    # which is AddressSanitizer's and the plain pass's to sweep; the races
    # ThreadSanitizer looks for are the same in each case.
    if sanitizer == "tsan":
        seen = set()
        for item in items:
            if item.get_closest_marker("near_bound") is not None:
                item.add_marker(pytest.mark.skip(reason=_NEAR_BOUND))
                continue
            if item.get_closest_marker("inputs") is None or not hasattr(item, "callspec"):
                continue
            fn = (item.path, item.originalname)
            if fn in seen:
                item.add_marker(pytest.mark.skip(reason=_ONE_CASE))
            seen.add(fn)

    # Tests marked slow mostly wait (a broker outage, a timeout running out):
    # first in the order, so that a pass starts them early and their waits
    # overlap the rest, instead of ending the pass on a worker that took one
    # last. Those that need the OpenTelemetry Collector come last: the first
    # pass starts while scripts/test still builds it (a cold build takes
    # minutes), and a test waiting for it holds its worker idle. A stable
    # sort: every worker collects the same order.
    items.sort(key=lambda item: ("otel_collector" in getattr(item, "fixturenames", ()),
                                 item.get_closest_marker("slow") is None))


def _failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


@pytest.fixture(scope="session")
def build_dir():
    d = _build_dir()
    if not (d / "host" / "evhostd").exists():
        pytest.fail(f"{d}/host/evhostd not found: build first (cmake -S . -B build && "
                    f"cmake --build build), or point EVHOST_BUILD_DIR at a build tree")
    return d


_session_broker = None


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    global _session_broker
    given = os.environ.get("EVHOST_TEST_KAFKA")
    if given:
        lib.default_brokers = given
        yield given
        return
    _session_broker = lib.KafkaBroker(tmp_path_factory.mktemp("kafka") / "broker")
    lib.default_brokers = _session_broker.start()
    try:
        yield _session_broker.bootstrap
    finally:
        _session_broker.stop()
        _session_broker = None


@pytest.fixture(scope="session")
def kafka_tls(kafka_bootstrap):
    if _session_broker is not None:
        return _session_broker.tls()
    # EVHOST_TEST_KAFKA's broker, started by scripts/kafka: the same script
    # finds it by its port and data dir (KAFKA_PORT and EVHOST_KAFKA_DIR, as
    # scripts/test exports them; else the defaults for that port).
    env = dict(os.environ)
    env.setdefault("KAFKA_PORT", kafka_bootstrap.rsplit(":", 1)[1])
    return lib.kafka_tls(env)


@pytest.fixture
def smtp_server():
    sink = lib.SmtpSink().start()
    try:
        yield sink
    finally:
        sink.stop()


@pytest.fixture
def evhostd(build_dir, tmp_path, request):
    factory = lib.DaemonFactory(build_dir, tmp_path)
    try:
        yield factory
    finally:
        failed = _failed(request)
        problems = factory.teardown()
        if failed:
            for d in factory.daemons:
                print(f"--- evhostd log ({d.log_file}), last lines ---\n{d.log_tail(80)}")
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def unique_name():
    def make(prefix="t"):
        return f"{prefix}.{uuid.uuid4().hex[:12]}"
    return make


@pytest.fixture
def otel_collector(tmp_path, request):
    # No collector is a failure, never a skip: the tracing tests would pass vacuously.
    collector = lib.Collector(tmp_path / "otelcol")
    problem = None
    try:
        collector.start()
    except (RuntimeError, AssertionError) as exc:
        collector.stop()
        problem = str(exc)
    if problem:
        pytest.fail(f"otel_collector: {problem}", pytrace=False)
    try:
        yield collector
    finally:
        collector.stop()
        if _failed(request):
            print(f"--- OpenTelemetry Collector log ({collector.log_file}), last lines ---\n"
                  f"{collector.log_tail(80)}")
