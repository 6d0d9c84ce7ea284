"""Live reload on SIGHUP: plugins toggled in conf.d start and stop without
disturbing the others; a bad configuration is refused whole; a changed
section restarts only its plugin; [log] applies at once, other host sections
need a restart."""

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

import evhost_testlib as lib


def fixture_plugin(build_dir, name):
    return str(build_dir / "tests" / "fixtures" / f"{name}.so")


class Load:
    """GET `path` in a loop from two threads until stopped; count outcomes."""

    def __init__(self, url, path):
        self.url, self.path = url, path
        self.ok = 0
        self.failed = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self):
        s = requests.Session()
        deadline = time.monotonic() + 120  # bounded even if stop() is never called
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                r = s.get(self.url + self.path, timeout=10)
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.failed.append(r.status_code)
            except requests.RequestException as exc:
                self.failed.append(repr(exc))

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def reload(d, log_needle, timeout=30):
    before = d.log_text().count(log_needle)
    d.send_signal(signal.SIGHUP)
    lib.wait_until(lambda: d.log_text().count(log_needle) > before, timeout=timeout,
                   message=f"no '{log_needle}' in the log after SIGHUP")


def write_dropin(d, name, text):
    (d.config_dir / "conf.d" / name).write_text(text)


def probe_dropin(build_dir, enabled=True, topic="probe.reload"):
    return (f"[plugin.probe]\nenabled = {'true' if enabled else 'false'}\n"
            f"path = {fixture_plugin(build_dir, 'probe')}\ntopic = {topic}\n")


def probe_on_kafka(build_dir, kafka_bootstrap, unique_name, topic=None):
    """A probe drop-in for the real broker: a topic of its own (created
    first, so its consumer finds it at once) and a group of its own. A new
    group there is joined at once (group.initial.rebalance.delay.ms = 0),
    where the embedded cluster holds it 3 s, and a restarted plugin rejoins
    at once where it holds the group for the session timeout less a second:
    the tests whose subject is not that broker take the real one."""
    topic = topic or unique_name("probe")
    lib.create_topics([topic], brokers=kafka_bootstrap)
    return probe_dropin(build_dir, topic=topic) + f"group = {unique_name('g')}\n"


def test_toggle_plugin_under_load_loses_no_request_to_others(evhostd, build_dir):
    d = evhostd(dropins={
        "10-hello.conf": {"plugin.hello": {"path": str(build_dir / "plugins" / "hello.so")}},
        "20-probe.conf": probe_dropin(build_dir),
    })
    assert d.get("/probe/seen").status_code == 200
    with Load(d.url, "/hello") as load:
        time.sleep(0.5)
        write_dropin(d, "20-probe.conf", probe_dropin(build_dir, enabled=False))
        reload(d, "reload done")
        assert d.get("/probe/seen").status_code == 404
        time.sleep(0.5)
        write_dropin(d, "20-probe.conf", probe_dropin(build_dir, enabled=True))
        reload(d, "reload done")
        assert d.get("/probe/seen").status_code == 200
        time.sleep(0.5)
    print(f"load on /hello during two reloads: {load.ok} ok, {len(load.failed)} failed")
    assert load.ok > 20
    assert load.failed == []
    assert "1 stopped" in d.log_text() and "1 started" in d.log_text()


def test_the_admin_api_says_a_restarting_plugin_is_restarting(
        evhostd, build_dir, kafka_bootstrap, unique_name, tmp_path):
    # While a reload restarts a plugin, its dead letters, redrive and replay
    # answered 404 "no plugin named 'probe'" (GET /admin/plugins/probe said
    # "restarting"): a script that retries on 503 gave up. 503 with
    # Retry-After: 1 now; a name no plugin has is still 404. So for its
    # events, and the events of all plugins, which answered 200 without
    # its (evhostctl events printed "no events" and exited 0).
    token = "admin-token-for-the-reload-tests-0123"
    (tmp_path / "admin.token").write_text(token + "\n")
    (tmp_path / "admin.token").chmod(0o600)
    auth = {"Authorization": f"Bearer {token}"}
    probe = probe_on_kafka(build_dir, kafka_bootstrap, unique_name)
    d = evhostd({"admin": {"token_file": str(tmp_path / "admin.token")}},
                brokers=kafka_bootstrap, dropins={"20-probe.conf": probe})
    assert d.get("/admin/plugins/probe/dlq", headers=auth, timeout=30).status_code == 200
    write_dropin(d, "20-probe.conf", probe + "init_sleep_ms = 4000\n")
    d.send_signal(signal.SIGHUP)
    lib.wait_until(lambda: "probe: init sleeping 4000 ms" in d.log_text(), timeout=30,
                   message="the new instance's init")
    asked = (("GET", "/admin/plugins/probe/dlq", None),
             ("POST", "/admin/plugins/probe/dlq/redrive", {}),
             ("POST", "/admin/plugins/probe/replay", {"from": "beginning"}),
             ("GET", "/admin/events?plugin=probe", None),
             ("GET", "/admin/events", None))
    for method, path, body in asked:
        r = requests.request(method, d.url + path, headers=auth, json=body, timeout=30)
        assert r.status_code == 503 and r.headers.get("Retry-After") == "1", (path, r.text)
        assert r.json()["detail"] == ("plugin 'probe' is restarting (a reload): nothing was "
                                      "done; try again once it runs"), r.text
    ctl = subprocess.run([str(build_dir / "host" / "evhostctl"), "-c", str(d.config_file),
                          "events"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=30)
    assert ctl.returncode != 0 and "no events" not in ctl.stdout, (ctl.stdout, ctl.stderr)
    assert "plugin 'probe' is restarting" in ctl.stderr, ctl.stderr
    assert d.get("/admin/plugins/probe", headers=auth).json()["state"] == "restarting"
    lib.wait_until(lambda: "reload done" in d.log_text(), timeout=30, message="the reload")
    assert d.get("/admin/plugins/probe/dlq", headers=auth, timeout=30).status_code == 200
    assert d.get("/admin/events", headers=auth).status_code == 200
    r = d.get("/admin/plugins/nothere/dlq", headers=auth)
    assert r.status_code == 404 and r.json()["detail"] == "no plugin named 'nothere'", r.text
    r = d.get("/admin/events?plugin=nothere", headers=auth)
    assert r.status_code == 404 and r.json()["detail"] == "no plugin named 'nothere'", r.text


def test_bad_config_is_refused_and_running_set_stays(evhostd, build_dir):
    d = evhostd(dropins={"20-probe.conf": probe_dropin(build_dir)})
    write_dropin(d, "20-probe.conf", probe_dropin(build_dir) + "colour = blue\n")
    write_dropin(d, "30-http.conf", "[http]\nthreads = many\n")
    reload(d, "reload refused:")
    text = d.log_text()
    assert "conf.d/20-probe.conf:5:" in text and "colour" in text
    assert "conf.d/30-http.conf:2:" in text
    assert d.get("/probe/seen").status_code == 200
    assert d.get("/readyz").json()["plugins"] == {"probe": "running"}


def test_changed_section_restarts_only_that_plugin(evhostd, build_dir):
    d = evhostd(dropins={
        "10-hello.conf": {"plugin.hello": {"path": str(build_dir / "plugins" / "hello.so")}},
        "20-probe.conf": probe_dropin(build_dir, topic="probe.one"),
    })
    # Reordering keys or moving them between files is not a change.
    write_dropin(d, "10-hello.conf",
                 f"[plugin.hello]\n; same content, new comment\npath = "
                 f"{build_dir / 'plugins' / 'hello.so'}\n")
    reload(d, "reload done")
    assert "0 started, 0 stopped, 2 unchanged" in d.log_text()

    write_dropin(d, "20-probe.conf", probe_dropin(build_dir, topic="probe.two"))
    reload(d, "1 started, 1 stopped, 1 unchanged")
    text = d.log_text()
    assert "plugin 'probe': configuration changed" in text
    assert "plugin 'hello': configuration changed" not in text
    assert d.get("/hello").status_code == 200
    assert d.get("/probe/seen").status_code == 200


def test_a_plugin_a_reload_enables_is_starting_until_it_runs(evhostd, build_dir, tmp_path):
    """A plugin a reload enables was in no list while its init ran: /readyz
    answered 200 (ready) without it, and /admin/plugins did not name it,
    while its routes said 503. It is "starting" now, and /readyz 503."""
    token = "admin-token-for-the-starting-test-0123"
    (tmp_path / "admin.token").write_text(token + "\n")
    (tmp_path / "admin.token").chmod(0o600)
    auth = {"Authorization": f"Bearer {token}"}
    d = evhostd({"admin": {"token_file": str(tmp_path / "admin.token")}},
                dropins={"20-probe.conf": probe_dropin(build_dir, enabled=False)
                         + "subscribe = false\n"})
    assert d.get("/readyz").status_code == 200
    write_dropin(d, "20-probe.conf", probe_dropin(build_dir) + "subscribe = false\n"
                 "init_sleep_ms = 3000\n")
    d.send_signal(signal.SIGHUP)
    lib.wait_until(lambda: "probe: init sleeping 3000 ms" in d.log_text(), timeout=30,
                   message="the plugin's init")
    r = d.get("/readyz")
    assert r.status_code == 503 and r.json()["plugins"]["probe"] == "starting", r.text
    states = {p["name"]: p["state"] for p in
              d.get("/admin/plugins", headers=auth).json()["plugins"] if "state" in p}
    assert states.get("probe") == "starting", states
    r = d.get("/admin/plugins/probe/dlq", headers=auth)
    assert r.status_code == 503 and "is starting (a reload)" in r.json()["detail"], r.text
    lib.wait_until(lambda: "reload done" in d.log_text(), timeout=30, message="the reload")
    r = d.get("/readyz")
    assert r.status_code == 200 and r.json()["plugins"]["probe"] == "running", r.text


def test_a_relative_path_moved_to_another_directory_is_a_change(evhostd, build_dir, tmp_path):
    """A relative path of a plugin's key is resolved against the directory of
    the file that sets it: moved from evhost.conf into conf.d, the same text
    names another directory. The reload compared the text, called the plugin
    unchanged, and left it running with the old directory."""
    cfg = tmp_path / "cfg"
    for where in (cfg / "assets", cfg / "conf.d" / "assets"):
        where.mkdir(parents=True)
    section = {"path": fixture_plugin(build_dir, "good"), "assets_dir": "assets"}
    d = evhostd({"plugin.good": section}, config_dir=cfg)
    lines = "".join(f"{k} = {v}\n" for k, v in section.items())
    text = d.config_file.read_text()
    start = text.index("[plugin.good]")
    end = text.find("\n[", start + 1)
    d.config_file.write_text(text[:start] + (text[end + 1:] if end >= 0 else ""))
    write_dropin(d, "10-good.conf", "[plugin.good]\n" + lines)
    reload(d, "reload done")
    assert "1 started, 1 stopped, 0 unchanged" in d.log_text(), d.log_tail()
    assert "plugin 'good': configuration changed" in d.log_text()
    # Moved within conf.d (one directory): the same path, not a change.
    write_dropin(d, "10-good.conf", "")
    write_dropin(d, "20-good.conf", "[plugin.good]\n" + lines)
    reload(d, "0 started, 0 stopped, 1 unchanged")


def test_a_restarted_plugins_paths_answer_503_until_its_new_instance_routes_them(
        evhostd, build_dir, kafka_bootstrap, unique_name):
    # Its routes left the router before its new instance's init routed them
    # again: for that long its paths answered 404, as if the service were
    # gone. Placeholders answer 503 "restarting" now, until the new
    # instance's routes take their places (the init below sleeps 1.5 s first).
    # /readyz named it neither: it was missing from "plugins", and "ready"
    # said true meanwhile; it says "restarting" (503) now.
    probe = probe_on_kafka(build_dir, kafka_bootstrap, unique_name)
    d = evhostd(brokers=kafka_bootstrap, dropins={"20-probe.conf": probe})
    assert d.get("/probe/seen").status_code == 200
    write_dropin(d, "20-probe.conf", probe + "init_sleep_ms = 1500\n")
    seen, ready, stop = [], [], threading.Event()

    def poll():
        s = requests.Session()
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            r = s.get(d.url + "/probe/seen", timeout=10)
            seen.append((r.status_code, r.headers.get("Retry-After"),
                         r.json().get("detail") if r.status_code != 200 else None))
            r = s.get(d.url + "/readyz", timeout=10)
            ready.append((r.status_code, r.json()["plugins"].get("probe")))
            time.sleep(0.01)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        reload(d, "reload done")
    finally:
        stop.set()
        t.join(timeout=30)
    assert "probe: init sleeping 1500 ms" in d.log_text()
    codes = {c for c, _, _ in seen}
    assert 404 not in codes, seen
    assert (503, "1", "service 'probe' is restarting") in seen, seen
    assert codes <= {200, 503}, seen
    # 200 (the old instance, until it drains), 503, then 200 (the new one) and
    # never 503 again. The poller's last answer may still be a 503: asked just
    # before "reload done" and read after it; a request after that is served.
    order = "".join("o" if c == 200 else "r" for c, _, _ in seen)
    assert re.fullmatch(r"o*r+o*", order), seen
    assert d.get("/probe/seen").status_code == 200
    assert (503, "restarting") in ready, ready
    assert set(ready) <= {(200, "running"), (503, "draining"), (503, "restarting")}, ready
    # A plugin that is removed has no new instance: 503 "stopping" while its
    # consumer finishes the event in hand, 404 once it is gone.
    hold = hold_probe_in_a_reload(d, build_dir)
    try:
        r = d.get("/probe/seen")
        assert (r.status_code, r.json()["detail"]) == (503, "service 'probe' is stopping")
    finally:
        hold.unlink()
    lib.wait_until(lambda: d.log_text().count("reload done") == 2, timeout=30,
                   message="the end of the second reload")
    assert d.get("/probe/seen").status_code == 404


def test_a_new_instance_routed_before_its_start_ends_answers_503_starting(evhostd, build_dir):
    # A restarted plugin's new instance routes its paths in init; it runs
    # once init has returned and its relay and consumer started. Requests in
    # between got 503 "service 'X' is not running", as if it were down; they
    # are told it is starting now (the fixture's init sleeps after routing).
    def dropin(sleep_ms):
        return (f"[plugin.slow_start]\nenabled = true\n"
                f"path = {fixture_plugin(build_dir, 'slow_start')}\n"
                f"after_routes_sleep_ms = {sleep_ms}\n")

    d = evhostd(dropins={"20-slow.conf": dropin(0)})
    assert d.get("/slow_start/ping").status_code == 200
    write_dropin(d, "20-slow.conf", dropin(4000))
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("slow_start: routed, sleeping 4000 ms", timeout=30)
    r = d.get("/slow_start/ping")
    assert (r.status_code, r.headers.get("Retry-After"), r.json()["detail"]) == \
        (503, "1", "service 'slow_start' is starting"), r.text
    d.wait_for_log("reload done", timeout=30)
    assert d.get("/slow_start/ping").status_code == 200


ADMIN_TOKEN = "reload-admin-token-0123456789abcdef"


def test_a_backup_during_a_reload_that_restarts_a_plugin_has_its_database(evhostd, build_dir,
                                                                           tmp_path):
    # A plugin a reload restarts is out of the running list from its drain to
    # the end of its new instance's init, and a backup taken meanwhile
    # answered 200 without its database (or 409 "no plugin with a database
    # is running" when it was the only one). The backup waits for the reload
    # now, and has it (the new init below sleeps 2 s with its database open).
    token = tmp_path / "admin.token"
    token.write_text(ADMIN_TOKEN + "\n")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    d = evhostd({"admin": {"token_file": str(token)}},
                dropins={"20-probe.conf": probe_dropin(build_dir, topic="probe.one")})
    r = d.post("/admin/backup", json={}, headers=admin, timeout=60)
    assert r.status_code == 200, r.text
    assert [p["plugin"] for p in r.json()["plugins"]] == ["probe"], r.text
    write_dropin(d, "20-probe.conf",
                 probe_dropin(build_dir, topic="probe.two") + "init_sleep_ms = 2000\n")
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("probe: init sleeping 2000 ms", timeout=30)
    assert "reload done" not in d.log_text()
    r = d.post("/admin/backup", json={}, headers=admin, timeout=60)
    assert r.status_code == 200, r.text
    assert [p["plugin"] for p in r.json()["plugins"]] == ["probe"], r.text
    copy = Path(r.json()["plugins"][0]["file"])
    assert copy.is_file() and copy.stat().st_size > 0
    text = d.log_text()
    assert text.index("reload done") < text.rindex("backup of 1 plugin database(s)"), \
        d.log_tail()


@contextlib.contextmanager
def a_reload_waiting_for_a_backup(evhostd, build_dir, tmp_path):
    """A backup held under way (faults.so holds its read-only open of the
    plugin's database) and a reload that restarts the probe asked meanwhile,
    waiting for it: yields (daemon, answer), answer["r"] the backup's answer
    once the block has ended (the hold then lifted)."""
    token = tmp_path / "admin.token"
    token.write_text(ADMIN_TOKEN + "\n")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    hold = tmp_path / "hold-backup"
    d = evhostd({"admin": {"token_file": str(token)}},
                dropins={"20-probe.conf": probe_dropin(build_dir, topic="probe.one")},
                env=lib.faults_preloaded(build_dir, sqlite_readonly_hold=hold))
    hold.touch()
    answer = {}
    backup = threading.Thread(target=lambda: answer.update(
        r=d.post("/admin/backup", json={}, headers=admin, timeout=60)))
    backup.start()
    try:
        lib.wait_until(lambda: Path(f"{hold}.waiting").exists(), timeout=30,
                       message="the backup under way")
        write_dropin(d, "20-probe.conf", probe_dropin(build_dir, topic="probe.two"))
        d.send_signal(signal.SIGHUP)
        d.wait_for_log("reload: waiting for the backup under way to end", timeout=30)
        yield d, answer
    finally:
        hold.unlink()
        backup.join(60)


def test_a_reload_waits_for_the_backup_under_way(evhostd, build_dir, tmp_path):
    # A reload asked during a backup says it waits, applies nothing until the
    # backup ends, and then runs. Without the wait, the reload stopped the
    # plugin whose database the backup was copying.
    with a_reload_waiting_for_a_backup(evhostd, build_dir, tmp_path) as (d, answer):
        time.sleep(1)  # the reload would be done by now, were it not waiting
        assert "reload done" not in d.log_text(), d.log_tail()
        assert d.log_text().count("plugin 'probe' 1.0 running") == 1, d.log_tail()
    assert answer["r"].status_code == 200, answer["r"].text
    assert [p["plugin"] for p in answer["r"].json()["plugins"]] == ["probe"]
    d.wait_for_log("reload done", timeout=30)
    text = d.log_text()
    assert text.index("backup of 1 plugin database(s)") < text.index("reload done"), \
        d.log_tail()
    assert d.log_text().count("plugin 'probe' 1.0 running") == 2, d.log_tail()


def test_sigterm_while_a_reload_waits_for_a_backup_stops_at_once(evhostd, build_dir, tmp_path):
    # A reload waiting for the backup under way kept waiting after SIGTERM,
    # and the backup gives up only once the daemon stops, which began after
    # the reload: the backup ran on, and the stop guard ended the process
    # (status 3) with the backup's partial directory left; a backup that did
    # end was followed by the whole reload, plugins restarted for nothing.
    # The stop now begins at once, the reload is not run, and the backup
    # gives up, leaving nothing.
    with a_reload_waiting_for_a_backup(evhostd, build_dir, tmp_path) as (d, answer):
        d.send_signal(signal.SIGTERM)
        # With the backup still held: the stop does not wait for it to end.
        d.wait_for_log("SIGTERM: stopping", timeout=10)
    assert d.wait(timeout=60) == 0, d.log_tail()
    text = d.log_text()
    assert "reload: not run, a stop was asked while it waited for the backup under way" in text
    assert "reload done" not in text and text.count("plugin 'probe' 1.0 running") == 1, text
    assert "given up, the daemon is stopping" in text, text
    assert "exiting now" not in text, text
    assert answer["r"].status_code != 200, answer["r"].text
    backups = d.state_dir / "backups"
    assert not backups.exists() or list(backups.iterdir()) == [], list(backups.iterdir())


def hold_probe_in_a_reload(d, build_dir):
    """The probe holds an event while the file returned exists; the probe
    is disabled and a reload begun, whose drain waits for that handler."""
    hold = d.config_dir / "hold"
    hold.write_text("")
    assert d.post("/probe/publish", json={"hold_while": str(hold)}).status_code == 200
    lib.wait_until(lambda: "probe: event held while" in d.log_text(), timeout=60,
                   message="the probe holding the event")
    write_dropin(d, "20-probe.conf", probe_dropin(build_dir, enabled=False))
    d.send_signal(signal.SIGHUP)
    try:
        lib.wait_until(lambda: "plugin 'probe': disabled, draining" in d.log_text(),
                       timeout=30, message="the probe draining")
    except BaseException:
        hold.unlink()  # the handler returns: the daemon can stop
        raise
    return hold


def test_sigterm_during_a_reload_is_taken_at_once_and_bounded(evhostd, build_dir,
                                                              kafka_bootstrap, unique_name):
    # The main thread takes no signal while a reload runs, and the drain
    # waits for a handler however long it runs: SIGTERM went unseen until
    # the handler returned. It is now said at once, and the reload and the
    # stop after it end within [host] stop_timeout and 10 s more (status 3,
    # naming the drain).
    d = evhostd({"host": {"stop_timeout": "1s"}}, brokers=kafka_bootstrap,
                dropins={"20-probe.conf": probe_on_kafka(build_dir, kafka_bootstrap, unique_name)})
    hold = hold_probe_in_a_reload(d, build_dir)
    try:
        asked = time.monotonic()
        d.send_signal(signal.SIGTERM)
        d.wait_for_log("SIGTERM during a reload: stopping once the reload ends", timeout=5)
        code = d.wait(timeout=120)
        took = time.monotonic() - asked
    finally:
        hold.unlink()
    assert code == 3, d.log_tail()
    assert 11 <= took < 50, (took, d.log_tail())
    assert ("still waiting for a reload's drain of plugin 'probe': its consumer (an event "
            "handler that has not returned); exiting now (status 3)") in d.log_text()


def test_sigterm_during_a_reload_stops_cleanly_once_the_reload_ends(evhostd, build_dir,
                                                                    kafka_bootstrap, unique_name):
    # The handler returns within the stop's time: the reload ends, then the
    # stop asked meanwhile runs as any other (status 0); SIGHUP still works
    # up to then.
    d = evhostd({"host": {"stop_timeout": "5s"}}, brokers=kafka_bootstrap,
                dropins={"20-probe.conf": probe_on_kafka(build_dir, kafka_bootstrap, unique_name)})
    hold = hold_probe_in_a_reload(d, build_dir)
    d.send_signal(signal.SIGTERM)
    d.wait_for_log("SIGTERM during a reload: stopping once the reload ends", timeout=5)
    assert d.proc.poll() is None
    hold.unlink()
    assert d.wait(timeout=60) == 0, d.log_tail()
    text = d.log_text()
    assert text.index("SIGTERM during a reload") < text.index("reload done") < \
        text.index("SIGTERM: stopping") < text.rindex("stopped"), d.log_tail()
    assert "exiting now" not in text


def test_a_stop_asked_during_the_start_ends_it_after_the_plugin_under_way(evhostd, build_dir):
    # SIGTERM while a plugin's init runs (a long migration, here a sleep):
    # taken at once and said, the start ends once that plugin has started,
    # the one after it is not started, and the daemon stops cleanly. Before,
    # the signal waited for the whole start (systemd's TimeoutStopSec then
    # killed a daemon whose migrations outlasted it, saying only "timeout").
    probe = fixture_plugin(build_dir, "probe")
    slow = "routes = false\nsubscribe = false\ninit_sleep_ms = 3000\n"
    d = evhostd(dropins={"20-a.conf": f"[plugin.a]\npath = {probe}\n{slow}",
                         "30-b.conf": f"[plugin.b]\npath = {probe}\n{slow}"}, wait=False)
    d.wait_for_log("probe: init sleeping 3000 ms", timeout=30)
    assert d.stop(timeout=60) == 0, d.log_tail()
    text = d.log_text()
    assert ("SIGTERM during the start: stopping once the plugin starting now has started (the "
            "others are left)") in text, text
    assert "the start ends here, a stop was asked: 1 plugin not started" in text, text
    assert "plugin 'a' 1.0 running" in text and "plugin 'b'" not in text, text
    assert text.count("probe: init sleeping") == 1 and "ready:" not in text, text
    assert text.rstrip().endswith("stopped"), text


@pytest.mark.parametrize("during", ["start", "reload"])
def test_evh_stopping_says_1_from_a_signal_during_the_start_or_a_reload(evhostd, build_dir,
                                                                       during):
    # A plugin's init (a long migration that asks evh_stopping, as sdk.md
    # says to) learns of the stop from the signal on: it said 0 until the
    # start or reload ended, so the init ran on until the stop's guard ended
    # the process (status 3) while its work was lost.
    dropin = (f"[plugin.a]\npath = {fixture_plugin(build_dir, 'probe')}\nroutes = false\n"
              "subscribe = false\ninit_stop_wait_ms = 60000\n")
    if during == "start":
        d = evhostd(dropins={"20-a.conf": dropin}, wait=False)
    else:
        d = evhostd()
        write_dropin(d, "20-a.conf", dropin)
        d.send_signal(signal.SIGHUP)
    d.wait_for_log("probe: init waiting for evh_stopping", timeout=30)
    assert d.stop(timeout=60) == 0, d.log_tail()
    text = d.log_text()
    assert "probe: evh_stopping said 1 in init" in text, d.log_tail()
    assert f"SIGTERM during {'the start' if during == 'start' else 'a reload'}" in text, text
    assert "exiting now" not in text and text.rstrip().endswith("stopped"), text


def test_a_reload_whose_signal_thread_cannot_start_takes_sigterm_after_it(evhostd, build_dir,
                                                                         tmp_path, kafka_bootstrap,
                                                                         unique_name):
    # The thread that takes SIGTERM during a reload cannot start (faults.so:
    # the program's next thread fails, as at the process's thread limit):
    # said, and the reload goes on; a SIGTERM meanwhile stays pending until
    # it ends, as before that thread, then stops the daemon cleanly.
    switch = tmp_path / "thread-fails"
    d = evhostd({"host": {"stop_timeout": "5s"}}, brokers=kafka_bootstrap,
                dropins={"20-probe.conf": probe_on_kafka(build_dir, kafka_bootstrap, unique_name)},
                env=lib.faults_preloaded(build_dir, thread_file=switch))
    switch.write_text("")
    hold = hold_probe_in_a_reload(d, build_dir)
    try:
        assert not switch.exists()  # the watcher's was the thread failed
        assert ("cannot start the thread that takes SIGTERM during a reload: a stop asked "
                "meanwhile waits for its end") in d.log_text(), d.log_tail()
        d.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert d.proc.poll() is None
        assert "SIGTERM during a reload: stopping" not in d.log_text(), d.log_tail()
        assert "SIGTERM: stopping" not in d.log_text(), d.log_tail()
    finally:
        hold.unlink()
    assert d.wait(timeout=60) == 0, d.log_tail()
    text = d.log_text()
    assert text.index("reload done") < text.index("SIGTERM: stopping") < \
        text.rindex("stopped"), d.log_tail()


def test_a_stop_whose_guard_cannot_start_says_so_and_waits(evhostd, build_dir, tmp_path,
                                                           kafka_bootstrap, unique_name):
    # The stop's guard thread cannot start (faults.so, as above): said, and
    # the stop is bounded only by what it waits for, as before the guard:
    # past stop_timeout it still waits for the handler, then ends cleanly.
    switch = tmp_path / "thread-fails"
    d = evhostd({"host": {"stop_timeout": "1s"}}, brokers=kafka_bootstrap,
                dropins={"20-probe.conf": probe_on_kafka(build_dir, kafka_bootstrap, unique_name)},
                env=lib.faults_preloaded(build_dir, thread_file=switch))
    hold = d.config_dir / "hold"
    hold.write_text("")
    try:
        assert d.post("/probe/publish", json={"hold_while": str(hold)}).status_code == 200
        lib.wait_until(lambda: "probe: event held while" in d.log_text(), timeout=60,
                       message="the probe holding the event")
        switch.write_text("")
        d.send_signal(signal.SIGTERM)
        d.wait_for_log("SIGTERM: cannot start the stop's guard thread: the stop is bounded "
                       "only by what it waits for", timeout=5)
        assert not switch.exists()
        time.sleep(2)  # past stop_timeout
        assert d.proc.poll() is None, d.log_tail()
    finally:
        hold.unlink()
    assert d.wait(timeout=60) == 0, d.log_tail()
    assert "exiting now" not in d.log_text()


def build_hello(tmp_path, version, greeting, fail_init=False, greetings_type="COUNTER"):
    """The SDK's example plugin built as `version`, greeting `greeting` when
    no name is given (GET /hello), or failing in init, its greetings metric
    declared as a `greetings_type` (EVH_METRIC_*); returns the .so file."""
    src = (lib.REPO_ROOT / "sdk" / "examples" / "hello" / "hello.c").read_text()
    assert src.count('"1.0.0"') == 1 and src.count('name = "world";') == 1
    assert src.count("\th->p = p;\n") == 1 and src.count("EVH_METRIC_COUNTER") == 1
    src = src.replace('"1.0.0"', f'"{version}"').replace('name = "world";',
                                                         f'name = "{greeting}";')
    src = src.replace("EVH_METRIC_COUNTER", f"EVH_METRIC_{greetings_type}")
    if fail_init:
        src = src.replace("\th->p = p;\n", '\tfree(h);\n\tevh_log(p, EVH_LOG_ERROR, '
                          '"hello: this build refuses to start");\n\treturn EVH_EINVAL;\n')
    c, out = tmp_path / f"hello-{version}.c", tmp_path / f"hello-{version}.so"
    c.write_text(src)
    r = subprocess.run(["cc", "-shared", "-fPIC", "-O1", f"-I{lib.REPO_ROOT / 'sdk' / 'include'}",
                        str(c), "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


def test_a_plugin_file_replaced_by_a_new_build_restarts_it_on_reload(evhostd, build_dir,
                                                                     tmp_path):
    v1, v2, v3 = (build_hello(tmp_path, v, g) for v, g in
                  (("1.0.0", "world"), ("2.0.0", "again"), ("3.0.0", "third")))
    installed = tmp_path / "plugins" / "hello.so"
    installed.parent.mkdir()

    def install(build):  # as install(1) and package upgrades do: a new file, renamed in place
        shutil.copyfile(build, installed.with_suffix(".new"))
        os.replace(installed.with_suffix(".new"), installed)

    install(v1)
    d = evhostd(dropins={
        "10-hello.conf": {"plugin.hello": {"path": str(installed)}},
        "20-probe.conf": probe_dropin(build_dir),
    })
    assert d.get("/hello").json()["hello"] == "world"
    assert d.get("/hello/ada").json() == {"hello": "ada", "greeted": 1}

    # A reload with nothing changed keeps it.
    reload(d, "reload done")
    assert "0 started, 0 stopped, 2 unchanged" in d.log_text()

    # The new build replaces the file; the reload restarts that plugin alone.
    install(v2)
    with Load(d.url, "/probe/seen") as load:
        reload(d, "1 started, 1 stopped, 1 unchanged")
    assert load.failed == [] and load.ok > 0
    text = d.log_text()
    assert "plugin 'hello': its file was replaced (a new build), draining" in text
    assert f"plugin 'hello' 2.0.0 running ({installed}" in text
    assert d.get("/hello").json()["hello"] == "again"
    # Its data stays: the second greeting of ada counts on from the first.
    assert d.get("/hello/ada").json() == {"hello": "ada", "greeted": 2}

    # Once more (the running build now came in by a descriptor), and a reload
    # after it changes nothing.
    install(v3)
    reload(d, "1 started, 1 stopped, 1 unchanged")
    assert d.get("/hello").json()["hello"] == "third"
    reload(d, "0 started, 0 stopped, 2 unchanged")

    # A file that is not a plugin for this host is refused; the running build stays.
    shutil.copyfile(fixture_plugin(build_dir, "wrong_abi_major"), installed.with_suffix(".new"))
    os.replace(installed.with_suffix(".new"), installed)
    reload(d, "reload refused:")
    assert "built for ABI 7.2" in d.log_text()
    assert d.get("/hello").json()["hello"] == "third"

    # Written over in place (the same file): refused, the loaded build runs on.
    install(v3)  # a new file again: restarted with it
    reload(d, "1 started, 1 stopped, 1 unchanged")
    os.utime(installed, ns=(time.time_ns(), time.time_ns() + 10**9))
    reload(d, "reload refused:")
    assert f"{installed} was written over in place while loaded" in d.log_text()
    assert d.get("/hello").json()["hello"] == "third"
    # A new file again is loaded as any new build.
    install(v1)
    reload(d, "1 started, 1 stopped, 1 unchanged")
    assert d.get("/hello").json()["hello"] == "world"

    # A new build whose init fails: the build that ran starts again (it
    # stayed off before), with its data, and the log says so.
    install(build_hello(tmp_path, "5.0.0", "never", fail_init=True))
    text = reload_log(d, "reload done")
    assert "hello: this build refuses to start" in text, text
    assert ("reload: plugin 'hello' could not be started with its new build; it runs again "
            "as it ran before (1.0.0): the error above says why; reload to try again") in text, text
    assert d.get("/hello").json()["hello"] == "world"
    assert d.get("/hello/ada").json() == {"hello": "ada", "greeted": 3}
    assert d.get("/readyz").json()["plugins"]["hello"] == "running"
    # And once more: the build that runs is the one loaded at the reload before.
    install(v2)
    reload(d, "1 started, 1 stopped, 1 unchanged")
    assert d.get("/hello").json()["hello"] == "again"

    # Its own metric (evh_metric_new) counted on through every restart: the
    # greetings of every build. Disabled, it leaves /metrics; enabled again,
    # it is back with its count.
    def greetings():
        m = re.search(r'^hello_greetings_total\{plugin="hello"\} (\d+)$',
                      d.get("/metrics").text, re.M)
        return int(m.group(1)) if m else None
    assert greetings() == 11
    (d.config_dir / "conf.d" / "10-hello.conf").write_text(
        f"[plugin.hello]\npath = {installed}\nenabled = false\n")
    reload(d, "0 started, 1 stopped, 1 unchanged")
    assert greetings() is None
    (d.config_dir / "conf.d" / "10-hello.conf").write_text(f"[plugin.hello]\npath = {installed}\n")
    reload(d, "1 started, 0 stopped, 1 unchanged")
    assert greetings() == 11
    assert d.get("/hello").json()["hello"] == "again"
    assert greetings() == 12

    # A build that declares the same metric as another type is refused it:
    # the log says why, the plugin runs without it (its updates do nothing),
    # and the series keeps what the counter counted.
    install(build_hello(tmp_path, "6.0.0", "gauged", greetings_type="GAUGE"))
    text = reload_log(d, "reload done")
    assert ("evh_metric_new: hello_greetings_total is declared already, as a counter "
            "without a label") in text, text
    assert d.get("/hello").json()["hello"] == "gauged"
    assert d.get("/readyz").json()["plugins"]["hello"] == "running"
    assert greetings() == 12


def test_a_plugin_file_written_over_by_cp_refuses_the_reload(evhostd, build_dir, tmp_path):
    # cp onto the loaded file truncates it, which takes even the library's
    # relocated pages away, then writes another build into the mapping: the
    # reload looked a symbol up in it and ld.so crashed. Now the reload is
    # refused before anything looks into that library, and says to restart.
    # The restart's stop calls nothing in that build (its fini, its
    # destructors at exit: their pointers are the file's, unrelocated), and
    # exits 0.
    v1, v2 = (build_hello(tmp_path, v, g) for v, g in (("1.0.0", "world"), ("2.0.0", "again")))
    installed = tmp_path / "hello.so"
    shutil.copyfile(v1, installed)
    d = evhostd(dropins={"10-hello.conf": {"plugin.hello": {"path": str(installed)}}},
                brokers="embedded")
    assert d.get("/hello").json()["hello"] == "world"
    shutil.copyfile(v2, installed)
    reload(d, "reload refused:")
    assert (f"{installed} was written over in place while loaded (cp onto it?): the running "
            "build's code changed under it and may crash; restart evhostd") in d.log_text()
    assert d.get("/healthz").status_code == 200
    assert d.stop() == 0
    assert (f"plugin 'hello': {installed} was written over in place while loaded: its fini "
            "is not called (its code changed under it)") in d.log_text()
    assert "FATAL" not in d.log_text()


def test_a_plugin_file_written_over_then_replaced_restarts_it_without_its_fini(
        evhostd, build_dir, tmp_path):
    # The mended install after a cp (install(1) or mv): the reload loads the
    # new file and stops the old build without calling into it. A new build
    # whose init fails has no way back to it (the plugin stays off); the
    # next good one runs. The stop calls the running build's fini as usual,
    # and nothing of the old one.
    v1, v2, v3 = (build_hello(tmp_path, v, g)
                  for v, g in (("1.0.0", "world"), ("2.0.0", "again"), ("3.0.0", "third")))
    failing = build_hello(tmp_path, "4.0.0", "never", fail_init=True)
    installed = tmp_path / "hello.so"

    def install(build):
        shutil.copyfile(build, installed.with_suffix(".new"))
        os.replace(installed.with_suffix(".new"), installed)

    shutil.copyfile(v1, installed)
    d = evhostd(dropins={"10-hello.conf": {"plugin.hello": {"path": str(installed)}}},
                brokers="embedded")
    assert d.get("/hello").json()["hello"] == "world"
    shutil.copyfile(v2, installed)
    install(failing)
    text = reload_log(d, "reload done")
    assert (f"plugin 'hello': {installed} was written over in place while loaded: its fini "
            "is not called (its code changed under it)") in text, text
    assert (f"reload: plugin 'hello': no way back should its new configuration fail: "
            f"{installed}: the build that ran was written over in place while loaded") in text
    assert "runs again as it ran before" not in text, text
    assert d.get("/readyz").json()["plugins"]["hello"] == "failed"
    install(v3)
    reload(d, "reload done")
    assert d.get("/hello").json()["hello"] == "third"
    assert d.stop() == 0
    assert "FATAL" not in d.log_text()


def test_restarted_consumer_on_the_embedded_broker_rejoins_its_group_soon(evhostd, build_dir):
    # When a group's last member leaves, librdkafka's embedded cluster
    # rebalances it for the consumers' session timeout less a second, and a
    # member joining meanwhile waits for all of it: 44 s with librdkafka's
    # default, so a plugin restarted by a reload consumed nothing for that
    # long. evhostd's consumers on the embedded broker use 6 s.
    d = evhostd(dropins={"20-probe.conf": probe_dropin(build_dir, topic="probe.rejoin")})
    d.wait_for_log("probe: assigned", timeout=30)
    write_dropin(d, "20-probe.conf",
                 probe_dropin(build_dir, topic="probe.rejoin") + "retry.backoff_ms = 60\n")
    reload(d, "1 started, 1 stopped, 0 unchanged")
    assert d.post("/probe/publish", json={"after": "reload"}).status_code == 200
    # Well under the 44 s it took.
    lib.wait_until(lambda: any(r["data"] == {"after": "reload"}
                               for r in d.get("/probe/seen").json()),
                   timeout=20, message="the restarted plugin consumed its event")


def probe_waiting_for_the_stop(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    """A daemon whose probe (one attempt per event) is in a handler that
    waits for evh_stopping while the file returned exists: the daemon, the
    probe's drop-in and that file."""
    probe = probe_on_kafka(build_dir, kafka_bootstrap, unique_name) + "retry.max_attempts = 1\n"
    d = evhostd(brokers=kafka_bootstrap, dropins={"20-probe.conf": probe})
    d.wait_for_log("probe: assigned", timeout=30)
    flag = tmp_path / "wait-for-the-stop"
    flag.write_text("")
    assert d.post("/probe/publish", json={"n": 1, "stop_wait_while": str(flag)}).status_code == 200
    d.wait_for_log("probe: handler waiting for evh_stopping", timeout=30)
    return d, probe, flag


def test_a_handler_cut_short_by_a_reloads_drain_leaves_its_event_to_the_new_instance(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # A reload that restarts the probe drains it while its handler works
    # through a long list: evh_stopping (ABI 1.13) says 1 from the drain's
    # start, and the handler returns RETRY. At its only attempt that is no
    # dead letter: the plugin winding down asked for it. The event goes to
    # the new instance, which handles it.
    d, probe, flag = probe_waiting_for_the_stop(evhostd, build_dir, tmp_path, kafka_bootstrap,
                                                unique_name)
    flag.unlink()  # the new instance handles it at once
    write_dropin(d, "20-probe.conf", probe + "retry.backoff_ms = 60\n")
    reload(d, "1 started, 1 stopped, 0 unchanged")
    assert "probe: evh_stopping said 1" in d.log_text()
    lib.wait_until(lambda: [r for r in d.get("/probe/seen").json() if r["data"].get("n") == 1],
                   timeout=30, message="the new instance handled the event")
    assert "dead-lettered" not in d.log_text()


def test_a_handler_cut_short_by_a_stop_asked_during_a_reload_is_not_dead_lettered(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # SIGTERM while a reload starts another plugin (its init sleeps): the
    # probe, kept, sees evh_stopping say 1 in its handler and returns RETRY
    # at its only attempt. The host dead-lettered it: only a plugin's own
    # drain or the stop (not yet begun) counted as winding down.
    d, _, _ = probe_waiting_for_the_stop(evhostd, build_dir, tmp_path, kafka_bootstrap,
                                         unique_name)
    write_dropin(d, "30-slow.conf", f"[plugin.slow]\npath = {fixture_plugin(build_dir, 'probe')}\n"
                 "routes = false\nsubscribe = false\ninit_sleep_ms = 3000\n")
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("probe: init sleeping 3000 ms", timeout=30)
    assert d.stop(timeout=60) == 0, d.log_tail()
    text = d.log_text()
    assert "probe: evh_stopping said 1" in text, d.log_tail()
    assert "dead-lettered" not in text, d.log_tail()


def test_an_event_committed_while_its_plugin_is_disabled_is_sent(evhostd, build_dir,
                                                                  kafka_bootstrap, unique_name):
    # A reload disables the probe while a request of its sleeps in its
    # transaction; the request commits after the drain began. Its event goes
    # out before the plugin does: the relay is detached once the requests in
    # flight are done. Before, it was detached first, and the event stayed in
    # the outbox until the plugin was enabled again.
    topic = unique_name("late")
    probe = probe_on_kafka(build_dir, kafka_bootstrap, unique_name, topic=topic)
    d = evhostd(brokers=kafka_bootstrap, dropins={"20-probe.conf": probe})
    d.wait_for_log("probe: assigned", timeout=30)
    answer = {}
    t = threading.Thread(target=lambda: answer.update(r=d.post(
        "/probe/publish?sleep_ms=3000&key=late", json={"late": 1}, timeout=60)))
    t.start()
    d.wait_for_log("probe: sleeping 3000 ms", timeout=10)
    write_dropin(d, "20-probe.conf", probe.replace("enabled = true", "enabled = false"))
    reload(d, "reload done: 0 started, 1 stopped")
    t.join(timeout=60)
    assert answer["r"].status_code == 200, answer["r"].text
    sent = [m for m in lib.kafka_consume(topic, count=1, timeout=10, brokers=kafka_bootstrap)
            if m["key"] == "late"]
    assert len(sent) == 1, d.log_tail()


def test_a_stop_while_a_rebalance_waits_for_a_busy_handler_ends(evhostd, build_dir,
                                                                kafka_bootstrap, unique_name):
    # A handler (15 s) holds the consumer's thread while the group rebalances (the
    # topic got partitions), then the daemon is stopped. The close's revoke
    # committed again, waiting for the broker; the answer to the LeaveGroup
    # the close sends came first ("Unknown member"), librdkafka 2.0.2 ended
    # the group and never answered the revoke's rd_kafka_assign: the close
    # hung until the stop's guard ended the daemon with status 3.
    topic = unique_name("busy")
    probe = probe_on_kafka(build_dir, kafka_bootstrap, unique_name, topic=topic)
    d = evhostd({"kafka": {"rdkafka.debug": "cgrp"}}, brokers=kafka_bootstrap,
                dropins={"20-probe.conf": probe})
    d.wait_for_log("probe: assigned", timeout=30)
    assert d.post("/probe/publish", json={"n": 1, "sleep_ms": 15000}).status_code == 200
    d.wait_for_log("probe: handler sleeping 15000 ms", timeout=30)
    lib.add_partitions(topic, 6, brokers=kafka_bootstrap)
    d.wait_for_log("initiating rebalance (EAGER) in state up (join-state steady)", timeout=12)
    assert d.stop(timeout=60) == 0, d.log_tail()
    assert "exiting now (status 3)" not in d.log_text()


def reload_log(d, log_needle):
    """Reload, and return what the log gained."""
    mark = len(d.log_text())
    reload(d, log_needle)
    return d.log_text()[mark:]


def test_host_section_change_needs_restart(evhostd, build_dir):
    """Each key a reload cannot apply is named, with where it is set, but
    not its value ([kafka] may hold credentials)."""
    d = evhostd(dropins={"20-probe.conf": probe_dropin(build_dir)})
    write_dropin(d, "40-kafka.conf", "[kafka]\nretry.backoff_ms = 387\n")
    text = reload_log(d, "reload done")
    assert "need a restart" in text
    line = next((l for l in text.splitlines() if "[kafka] retry.backoff_ms set" in l), None)
    assert line and "40-kafka.conf:2): needs a restart, not applied" in line, text
    # Not the value. The message only: the line's time may hold the same
    # digits (10:38:47.387 did once), and so may the file's path, under
    # pytest's numbered temporary directory.
    message = line.split(" [host] ", 1)[1]
    assert "387" not in message.replace(str(d.config_dir), ""), line

    # Compared with what runs, not with the previous reload: still not applied.
    write_dropin(d, "40-kafka.conf", "[kafka]\nretry.backoff_ms = 400\n")
    assert "[kafka] retry.backoff_ms set" in reload_log(d, "reload done")


def test_restart_only_keys_changed_and_removed_are_named(evhostd):
    d = evhostd(dropins={"40-kafka.conf": "[kafka]\nretry.backoff_ms = 300\n"})
    write_dropin(d, "40-kafka.conf", "[kafka]\nretry.backoff_ms = 400\n")
    assert "[kafka] retry.backoff_ms changed (" in reload_log(d, "reload done")
    (d.config_dir / "conf.d" / "40-kafka.conf").unlink()
    text = reload_log(d, "reload done")
    assert "[kafka] retry.backoff_ms removed (was set at " in text
    assert "40-kafka.conf:2): needs a restart, not applied" in text
    # Only what changed is named.
    assert len([l for l in text.splitlines() if "needs a restart, not applied" in l]) == 1, text


def test_log_section_applies_on_reload(evhostd, build_dir):
    d = evhostd({"log": {"level": "warn"}}, dropins={"20-probe.conf": probe_dropin(build_dir)})
    assert "ready:" not in d.log_text()  # INFO stays below warn
    # Up to info: said, applied, and no restart asked for.
    write_dropin(d, "40-log.conf", "[log]\nlevel = info\n")
    reload(d, "reload done")
    text = d.log_text()
    assert "reload: [log] level warn -> info, format text -> text" in text
    assert "need a restart" not in text
    # Back down to warn: the change is said at info, then INFO lines stop.
    write_dropin(d, "40-log.conf", "[log]\nlevel = warn\n")
    reload(d, "reload: [log] level info -> warn")
    text = d.log_text()
    # The end of the same reload is INFO: written before the change would
    # be missing now; give it the time a reload takes to show it is not.
    time.sleep(1)
    assert d.log_text().count("reload done") == text.count("reload done") == 1
    # Neither level shows INFO: the change is still on record, as a warning,
    # and so are the other keys' changes in the same reload.
    write_dropin(d, "40-log.conf", "[log]\nlevel = error\naccess = off\n"
                 "plugin_rate_limit_burst = 7\n")
    reload(d, "WARN  [host] reload: [log] level warn -> error")
    text = d.log_text()
    assert "WARN  [host] reload: [log] access all -> off" in text, text
    assert "WARN  [host] reload: [log] plugin_rate_limit_burst 5000 -> 7" in text, text
    assert d.get("/probe/seen").status_code == 200


def test_access_log_lines_are_chosen_and_changed_by_a_reload(evhostd, build_dir):
    # [log] access = errors: only requests answered 4xx or 5xx get their
    # line (a civetweb refusal too); off: none; all (the default): every one.
    # A reload changes it and says so. Metrics count every request anyway.
    d = evhostd({"log": {"access": "errors"}}, dropins={"20-probe.conf": probe_dropin(build_dir)})

    def seen():
        """Each access log line's method, path and status."""
        return [x.split("[http] ", 1)[1].split(" bytes")[0].rsplit(" ", 1)[0]
                for x in d.log_text().splitlines() if "[http] " in x and " bytes" in x]
    # (a readiness probe that came before the routes may have its 404 line)
    before = len(seen())
    assert d.get("/probe/status/200").status_code == 200
    assert d.get("/probe/status/503").status_code == 503
    assert d.get("/nowhere").status_code == 404
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"NOT HTTP\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")
    lib.wait_until(lambda: len(seen()) >= before + 3, timeout=5,
                   message="three access log lines")
    time.sleep(0.3)
    # (In any order: a worker writes its line after its answer, so the next
    # request's line may come first.)
    assert sorted(seen()[before:]) == sorted(
        ["GET /probe/status/503 503", "GET /nowhere 404", "NOT - 400"]), seen()
    write_dropin(d, "40-log.conf", "[log]\naccess = off\n")
    reload(d, "reload: [log] access errors -> off")
    assert d.get("/nowhere").status_code == 404
    assert d.get("/probe/status/200").status_code == 200
    write_dropin(d, "40-log.conf", "[log]\naccess = all\n")
    reload(d, "reload: [log] access off -> all")
    assert d.get("/probe/status/200").status_code == 200
    time.sleep(0.3)
    assert seen()[before + 3:] == ["GET /probe/status/200 200"], seen()
    assert "need a restart" not in d.log_text()
    r = evhostd.run(["--check-config"], config={"log": {"access": "some"}})
    assert r.returncode != 0 and re.search(r"evhost\.conf:\d+: \[log\] access.*expected all, "
                                           r"errors or off", r.stdout + r.stderr), r.stdout


def test_a_plugin_logging_in_a_loop_is_rationed_and_a_reload_changes_it(evhostd, build_dir):
    # [log] plugin_rate_limit_burst lines per plugin_rate_limit_interval: the
    # rest of the interval's lines of that plugin are dropped (said at the
    # first, counted when the interval ends, on /metrics); the host's own
    # lines go on. A reload changes the limit; 0 is none.
    # An hour's interval first, so that the burst cannot straddle two.
    d = evhostd({"log": {"plugin_rate_limit_burst": 10, "plugin_rate_limit_interval": "1h"}},
                dropins={"20-probe.conf": probe_dropin(build_dir)})

    def lines(text, total):
        return [int(x) for x in re.findall(rf"probe: line (\d+) of {total}\b", text)]
    mark = len(d.log_text())
    assert d.post("/probe/log?lines=25&level=error").status_code == 204
    # The request's own access log line is the host's: not rationed.
    d.wait_for_log("POST /probe/log 204")
    text = d.log_text()[mark:]
    # (the two lines of its start count in the same interval)
    passed = len(lines(text, 25))
    assert passed == 8 and lines(text, 25) == list(range(1, passed + 1)), text
    assert re.search(r"WARN  \[probe\] logging too fast: more than 10 lines in 3600 s, its own "
                     r"and the host's about its calls and events \(\[log\] "
                     r"plugin_rate_limit_burst, plugin_rate_limit_interval\); the rest are "
                     r"dropped for the next 3\d\d\d s", text), text
    # A shorter interval by a reload: once it is over, the drops are said
    # with no further line of the plugin's. Given in ms, it is said as given.
    write_dropin(d, "40-log.conf", "[log]\nplugin_rate_limit_interval = 1500ms\n")
    assert "reload: [log] plugin_rate_limit_interval 3600 s -> 1.5 s" in reload_log(
        d, "reload done")
    dropped = 25 - passed
    d.wait_for_log(f"logging too fast: {dropped} of its lines ({dropped} of them errors) were "
                   "dropped in the last ", timeout=10)
    metrics = d.get("/metrics").text
    assert f'evhost_plugin_log_lines_dropped_total{{plugin="probe"}} {dropped}\n' in metrics, \
        metrics
    # A new interval: its lines again.
    mark = len(d.log_text())
    assert d.post("/probe/log?lines=3").status_code == 204
    d.wait_for_log("probe: line 3 of 3")
    assert lines(d.log_text()[mark:], 3) == [1, 2, 3]
    write_dropin(d, "40-log.conf", "[log]\nplugin_rate_limit_burst = 0\n"
                 "plugin_rate_limit_interval = 1m\n")
    text = reload_log(d, "reload done")
    assert "reload: [log] plugin_rate_limit_burst 10 -> 0" in text, text
    assert "reload: [log] plugin_rate_limit_interval 1.5 s -> 60 s" in text, text
    mark = len(d.log_text())
    assert d.post("/probe/log?lines=40").status_code == 204
    d.wait_for_log("probe: line 40 of 40")
    text = d.log_text()[mark:]
    assert lines(text, 40) == list(range(1, 41)) and "logging too fast" not in text, text
    r = evhostd.run(["--check-config"], config={"log": {"plugin_rate_limit_burst": "-1",
                                                        "plugin_rate_limit_interval": "0"}})
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert re.search(r"\[log\] plugin_rate_limit_burst: must be between 0 and", out), out
    assert re.search(r"\[log\] plugin_rate_limit_interval: expected a duration from 1s to 1h",
                     out), out


def test_a_plugins_events_failing_by_the_dozen_are_logged_within_its_share(evhostd, build_dir,
                                                                          tmp_path,
                                                                          kafka_bootstrap,
                                                                          unique_name):
    # The host's lines about one plugin's events (an attempt failed, a dead
    # letter) count in that plugin's share of the log, as its own lines do:
    # 20 events dead-lettered at once log no more than the share, and all 20
    # dead letters are written all the same. The admin API counts the drops.
    token = secrets.token_hex(16)
    (tmp_path / "admin.token").write_text(token + "\n")
    topic = unique_name("probe")
    lib.create_topics([f"{topic}.probe.dlq"], brokers=kafka_bootstrap)
    d = evhostd({"log": {"plugin_rate_limit_burst": 10, "plugin_rate_limit_interval": "1h"},
                 "admin": {"token_file": str(tmp_path / "admin.token")}},
                brokers=kafka_bootstrap,
                dropins={"20-probe.conf": probe_on_kafka(build_dir, kafka_bootstrap, unique_name,
                                                         topic=topic)})
    assert d.post("/probe/publish?n=20", json={"fail": "reject"}).status_code == 200

    def dead_letters():
        m = re.findall(r'^evhost_dlq_messages_total\{plugin="probe",[^}]*\} (\d+)$',
                       d.get("/metrics").text, re.M)
        return sum(int(x) for x in m)
    lib.wait_until(lambda: dead_letters() == 20, timeout=60, message="20 dead letters")
    text = d.log_text()
    said = text.count(f"dead-lettered to {topic}.probe.dlq")
    assert 1 <= said <= 10, text
    assert "WARN  [probe] logging too fast: more than 10 lines in 3600 s" in text, text
    metrics = d.get("/metrics").text
    dropped = int(re.search(r'^evhost_plugin_log_lines_dropped_total\{plugin="probe"\} (\d+)$',
                            metrics, re.M).group(1))
    assert dropped >= 20 - said, (dropped, said)
    listed = d.get("/admin/plugins/probe", headers={"Authorization": f"Bearer {token}"}).json()
    assert listed["log_lines_dropped"] == dropped, listed


def test_auth_keys_rotate_on_reload(evhostd, build_dir, tmp_path):
    old_key, new_key = tmp_path / "old.key", tmp_path / "new.key"
    old_key.write_text(secrets.token_hex(32))
    new_key.write_text(secrets.token_hex(32))
    d = evhostd({"auth": {"jwt_secret_file": str(old_key)}},
                dropins={"20-probe.conf": probe_dropin(build_dir)})

    def who(token):
        return d.get("/probe/whoami", headers={"Authorization": f"Bearer {token}"})

    old_token = lib.sign_token(old_key.read_bytes(), "alice")
    assert who(old_token).text == "alice"
    # Rotation: the new key signs and checks; the old one still checks the
    # tokens it signed, until they expire.
    write_dropin(d, "40-auth.conf", f"[auth]\njwt_secret_file = {new_key}\n"
                                    f"jwt_previous_secret_file = {old_key}\n")
    reload(d, "reload done")
    text = d.log_text()
    assert f"tokens are now signed and checked with the key in {new_key}" in text
    assert f"tokens signed with the key in {old_key} are accepted until they expire" in text
    assert "need a restart" not in text
    new_token = lib.sign_token(new_key.read_bytes(), "bob")
    assert who(new_token).text == "bob"
    assert who(old_token).text == "alice"
    # The old key retired: its tokens are refused, the new ones are not.
    write_dropin(d, "40-auth.conf", f"[auth]\njwt_secret_file = {new_key}\n")
    reload(d, "no previous key")
    r = who(old_token)
    assert r.status_code == 401 and "bad signature" in r.text
    assert who(new_token).text == "bob"
    # A key file replaced in place is read again.
    new_key.write_text(secrets.token_hex(32))
    reload(d, "tokens are now signed and checked")
    assert who(new_token).status_code == 401
    assert who(lib.sign_token(new_key.read_bytes(), "carol")).text == "carol"
    # A reload that changes nothing says nothing about keys.
    before = d.log_text().count("[auth]")
    reload(d, "reload done")
    assert d.log_text().count("[auth]") == before
    for key in (old_key, new_key):
        assert key.read_text() not in d.log_text()


def test_auth_issuer_ttl_max_and_key_removal_apply_on_reload(evhostd, build_dir, tmp_path):
    # Each [auth] change a reload applies, said in the log, and true for the
    # next request: another issuer refuses the old one's tokens; a lower
    # token_ttl_max refuses those signed to live longer; no key refuses all.
    key = tmp_path / "jwt.key"
    key.write_text(secrets.token_hex(32))
    secret = key.read_bytes()
    d = evhostd(dropins={"20-probe.conf": probe_dropin(build_dir),
                         "40-auth.conf": f"[auth]\njwt_secret_file = {key}\n"})

    def who(token):
        return d.get("/probe/whoami", headers={"Authorization": f"Bearer {token}"})

    long_lived = lib.sign_token(secret, "alice", ttl=7200)
    assert who(long_lived).text == "alice"
    write_dropin(d, "40-auth.conf", f"[auth]\njwt_secret_file = {key}\nissuer = shop\n")
    reload(d, "reload: [auth] issuer evhost -> shop")
    r = who(long_lived)
    assert r.status_code == 401, r.text
    shop = lib.sign_token(secret, "bob", ttl=7200, issuer="shop")
    assert who(shop).text == "bob"

    write_dropin(d, "40-auth.conf",
                 f"[auth]\njwt_secret_file = {key}\nissuer = shop\ntoken_ttl_max = 1h\n")
    reload(d, "reload: [auth] token_ttl_max 2592000 s -> 3600 s: tokens signed to live "
              "longer are refused")
    assert who(shop).status_code == 401
    assert who(lib.sign_token(secret, "carol", ttl=3600, issuer="shop")).text == "carol"

    write_dropin(d, "40-auth.conf", "[auth]\nissuer = shop\ntoken_ttl_max = 1h\n")
    reload(d, "reload: [auth] no jwt_secret_file: routes that need a token now refuse every "
              "request (503: no key to check tokens with)")
    r = who(lib.sign_token(secret, "dave", ttl=3600, issuer="shop"))
    assert r.status_code == 503 and r.json()["detail"].startswith(
        "this server cannot check tokens: [auth] sets no key"), r.text
    assert d.get("/probe/seen").status_code == 200  # routes without a token serve on


def memory_holding(pid, needles):
    """Which of `needles` (bytes) are in the process's writable memory that
    no file backs (the heap, stacks, anonymous mappings): where a key set
    kept, or freed without being zeroed, would be. Mappings over 1 GiB (a
    sanitizer's shadow, reserved, not used) are left out."""
    found, longest = set(), max(len(n) for n in needles)
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            name = fields[5] if len(fields) > 5 else ""
            if fields[1][:2] != "rw" or hi - lo > 1 << 30 or (
                    name and not name.startswith("[heap") and not name.startswith("[stack")
                    and not name.startswith("[anon")):
                continue
            at, tail = lo, b""
            while at < hi:
                try:
                    mem.seek(at)
                    chunk = tail + mem.read(min(16 << 20, hi - at))
                except OSError:
                    break
                found.update(n for n in needles if n in chunk)
                tail = chunk[-(longest - 1):]
                at += min(16 << 20, hi - at)
    return found


def test_keys_a_reload_rotated_out_leave_memory_while_tokens_are_checked(evhostd, build_dir,
                                                                         tmp_path):
    # Each reload that changes [auth] makes a new key set; the one it
    # replaces is freed, its key zeroed, once the requests holding it are
    # answered (until 2026-12-05 every set stayed until exit: memory grew
    # with each reload, and every rotated-out key stayed in the process).
    # Requests with tokens go on through 8 rotations: each is answered 200
    # (its key still in force) or 401 (rotated out), never 5xx.
    key = tmp_path / "jwt.key"
    keys = [secrets.token_hex(32).encode() for _ in range(9)]
    key.write_bytes(keys[0])
    d = evhostd(dropins={"20-probe.conf": probe_dropin(build_dir),
                         "40-auth.conf": f"[auth]\njwt_secret_file = {key}\n"})
    current = [keys[0]]
    answers = {"ok": 0, "refused": 0, "other": []}
    stop = threading.Event()

    def hammer():
        s = requests.Session()
        deadline = time.monotonic() + 300  # bounded even if the test fails first
        while not stop.is_set() and time.monotonic() < deadline:
            token = lib.sign_token(current[0], "alice")
            try:
                r = s.get(d.url + "/probe/whoami", headers={"Authorization": f"Bearer {token}"},
                          timeout=10)
            except requests.RequestException as exc:
                answers["other"].append(repr(exc))
                continue
            if r.status_code == 200 and r.text == "alice":
                answers["ok"] += 1
            elif r.status_code == 401:
                answers["refused"] += 1
            else:
                answers["other"].append((r.status_code, r.text))

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for new in keys[1:]:
            key.write_bytes(new)
            reload(d, "tokens are now signed and checked")
            current[0] = new
            r = d.get("/probe/whoami",
                      headers={"Authorization": f"Bearer {lib.sign_token(new, 'bob')}"})
            assert r.status_code == 200 and r.text == "bob", r.text
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not answers["other"], answers["other"][:5]
    assert answers["ok"] > 0, answers
    held = memory_holding(d.proc.pid, keys)
    assert keys[-1] in held  # the key in force: the search finds a key where it is
    rotated_out = [i for i, k in enumerate(keys[:-1]) if k in held]
    assert not rotated_out, f"keys rotated out still in evhostd's memory: {rotated_out}"
    assert d.running()


def test_admin_token_rotates_on_reload(evhostd, build_dir, tmp_path):
    tokens = {}
    for name in ("first", "second"):
        tokens[name] = secrets.token_hex(16)
        (tmp_path / f"{name}.token").write_text(tokens[name] + "\n")
    d = evhostd(dropins={"20-probe.conf": probe_dropin(build_dir),
                         "40-admin.conf": f"[admin]\ntoken_file = {tmp_path / 'first.token'}\n"})

    def status(token):
        return d.get("/admin/plugins", headers={"Authorization": f"Bearer {token}"}).status_code

    assert status(tokens["first"]) == 200 and status(tokens["second"]) == 401
    write_dropin(d, "40-admin.conf", f"[admin]\ntoken_file = {tmp_path / 'second.token'}\n")
    reload(d, "reload done")
    assert "the admin API now takes the token in" in d.log_text()
    assert "need a restart" not in d.log_text()
    assert status(tokens["first"]) == 401 and status(tokens["second"]) == 200
    # An unreadable token file is a configuration error: the reload is
    # refused whole, the running token stays.
    write_dropin(d, "40-admin.conf", f"[admin]\ntoken_file = {tmp_path / 'gone.token'}\n")
    reload(d, "reload refused: ")
    assert "40-admin.conf:2: [admin] token_file: cannot read" in d.log_text()
    assert status(tokens["second"]) == 200
    # Without a token file the admin API is off.
    (d.config_dir / "conf.d" / "40-admin.conf").unlink()
    reload(d, "the admin API is disabled")
    assert status(tokens["second"]) == 404
    for token in tokens.values():
        assert token not in d.log_text()


def test_a_new_configuration_the_plugin_refuses_keeps_it_running_as_before(
        evhostd, build_dir, tmp_path, unique_name, kafka_bootstrap):
    # What only init sees (files, the network; values are refused by the
    # plugin's check in step 1, test below): a reload whose new
    # configuration fails in init stopped the plugin and left it off, with
    # /readyz still 200. Now it runs again as it ran before (its old
    # values), and when even that fails it is down on /readyz until a
    # reload starts it. Here: a templates_dir that is a directory, without
    # the templates.
    from test_sse import notif_config
    config = notif_config(tmp_path, unique_name, build_dir)
    del config["plugin.abi10"]
    mail = tmp_path / "mail"
    empty = tmp_path / "no-templates"
    empty.mkdir()
    # The real broker (topics created first, see probe_on_kafka): the
    # notifications plugin started again joins its group at once.
    lib.create_topics([v for k, v in config["plugin.notifications"].items()
                       if k.startswith("topic.")], brokers=kafka_bootstrap)
    d = evhostd(config, brokers=kafka_bootstrap)

    def readyz():
        r = d.get("/readyz")
        return r.status_code, r.json()["plugins"]

    assert readyz() == (200, {"user": "running", "notifications": "running"})
    write_dropin(d, "50-local.conf", f"[plugin.notifications]\ntemplates_dir = {empty}\n")
    text = reload_log(d, "reload done")
    assert f"templates_dir: cannot open {empty}/welcome.subject" in text, text
    assert ("reload: plugin 'notifications' could not be started with its new configuration; "
            "it runs again as it ran before (1.0.0): the error above says why; "
            "reload to try again") in text, text
    assert ("reload done: 1 started, 1 stopped, 1 unchanged; 1 of those started run as "
            "before the reload (their new configuration or build failed)") in text, text
    assert readyz() == (200, {"user": "running", "notifications": "running"})
    r = d.post("/users", json={"name": "Ada", "email": "ada@example.com",
                               "password": "correct horse battery"})
    assert r.status_code == 201, r.text
    lib.wait_until(lambda: any((mail / "new").glob("*")), timeout=30,
                   message="the welcome mail of the plugin started again")
    # Neither the new configuration nor the old one starts (its maildir is
    # a file now): down, and /readyz says so.
    mail.rename(tmp_path / "mail.away")
    mail.write_text("not a directory")
    text = reload_log(d, "reload done")
    assert ("reload: plugin 'notifications' could not be started; it stays off (/readyz says "
            "so until a reload starts it)") in text, text
    assert readyz() == (503, {"user": "running", "notifications": "failed"})
    # Mended: started, ready again.
    mail.unlink()
    (tmp_path / "mail.away").rename(mail)
    (d.config_dir / "conf.d" / "50-local.conf").unlink()
    text = reload_log(d, "reload done")
    assert "1 started, 0 stopped, 1 unchanged" in text, text
    assert readyz() == (200, {"user": "running", "notifications": "running"})


def test_a_restart_without_the_build_that_ran_says_there_is_no_way_back(evhostd, build_dir,
                                                                        unique_name,
                                                                        kafka_bootstrap):
    # A restarted plugin's way back, should its new configuration fail in
    # init, is the build that ran, found again by the name it was loaded by
    # (plugin_reopen). Here that look-up finds nothing (faults.so: dlopen with
    # RTLD_NOLOAD of the probe's file), as if the library were gone: the
    # reload says there is no way back and goes on. A new configuration that
    # starts runs, with the plugin's data; one that fails leaves the plugin
    # off (/readyz says so) where the build that ran would have run again,
    # until a reload mends it. The other plugin serves throughout.
    probe = fixture_plugin(build_dir, "probe")
    dropin = probe_on_kafka(build_dir, kafka_bootstrap, unique_name)
    d = evhostd(brokers=kafka_bootstrap, dropins={
        "10-hello.conf": {"plugin.hello": {"path": str(build_dir / "plugins" / "hello.so")}},
        "20-probe.conf": dropin,
    }, env=lib.faults_preloaded(build_dir, dlopen_noload=probe))
    no_way_back = (f"reload: plugin 'probe': no way back should its new configuration fail: "
                   f"{probe}: the build that ran is not loaded")
    assert d.post("/probe/publish", json={"kept": 1}).status_code == 200
    lib.wait_until(lambda: len(d.get("/probe/seen").json()) == 1, timeout=60,
                   message="the probe handling its event")

    def readyz():
        r = d.get("/readyz")
        return r.status_code, r.json()["plugins"]

    write_dropin(d, "20-probe.conf", dropin + "retry.backoff_ms = 60\n")
    text = reload_log(d, "reload done")
    assert no_way_back in text, text
    assert "1 started, 1 stopped, 1 unchanged" in text, text
    assert [e["data"] for e in d.get("/probe/seen").json()] == [{"kept": 1}]
    assert readyz() == (200, {"hello": "running", "probe": "running"})

    write_dropin(d, "20-probe.conf", dropin + "retry.max_attempts = -1\n")
    text = reload_log(d, "reload done")
    assert no_way_back in text, text
    assert "max_attempts -1 is out of range" in text, text
    assert ("reload: plugin 'probe' could not be started; it stays off (/readyz says so "
            "until a reload starts it)") in text, text
    assert "runs again as it ran before" not in text, text
    assert readyz() == (503, {"hello": "running", "probe": "failed"})
    assert d.get("/probe/seen").status_code == 404
    assert d.get("/hello").status_code == 200

    write_dropin(d, "20-probe.conf", dropin)
    text = reload_log(d, "reload done")
    assert "1 started, 0 stopped, 1 unchanged" in text, text
    assert readyz() == (200, {"hello": "running", "probe": "running"})
    assert [e["data"] for e in d.get("/probe/seen").json()] == [{"kept": 1}]


def test_a_new_value_the_plugins_check_refuses_refuses_the_reload_whole(
        evhostd, build_dir, tmp_path, unique_name):
    # ABI 1.7: the plugin checks its values in step 1, before anything is
    # stopped. A notifications transport it does not know used to stop the
    # plugin, fail its init and start the old instance again; now the reload
    # is refused at the value's file:line and the plugin is not touched.
    from test_sse import notif_config
    config = notif_config(tmp_path, unique_name, build_dir)
    del config["plugin.abi10"]
    d = evhostd(config, brokers="embedded")
    dropin = d.config_dir / "conf.d" / "50-local.conf"
    write_dropin(d, "50-local.conf", "[plugin.notifications]\n# a carrier\ntransport = pigeon\n")
    text = reload_log(d, "reload refused: 1 problem")
    assert (f"reload refused: {dropin}:3: [plugin.notifications] transport: must be smtp or "
            f"maildir (got \"pigeon\")") in text, text
    assert "draining" not in text and "could not be started" not in text, text
    assert "init failed" not in text, text
    assert d.get("/readyz").json()["plugins"] == {"user": "running", "notifications": "running"}
    # user's password_min_length = 0, said at its line; user keeps serving.
    write_dropin(d, "50-local.conf", "[plugin.user]\npassword_min_length = 0\n")
    text = reload_log(d, "reload refused: 1 problem")
    assert (f"reload refused: {dropin}:2: [plugin.user] password_min_length: must be between "
            "1 and 1024 (got 0)") in text, text
    assert "draining" not in text, text
    r = d.post("/users", json={"name": "Ada", "email": "ada@example.com",
                               "password": "correct horse battery"})
    assert r.status_code == 201, r.text
    # Mended: the reload is applied (nothing changed, nothing restarted).
    dropin.unlink()
    text = reload_log(d, "reload done")
    assert "0 started, 0 stopped, 2 unchanged" in text, text


def test_a_plugin_not_required_whose_check_fails_keeps_running_at_a_reload(
        evhostd, build_dir, tmp_path, unique_name):
    # required = false: a failed check leaves the plugin out like a file
    # that cannot be loaded, but a reload does not stop the instance that
    # runs; the rest of the reload is applied.
    from test_sse import notif_config
    config = notif_config(tmp_path, unique_name, build_dir)
    del config["plugin.abi10"]
    config["plugin.notifications"]["required"] = "false"
    d = evhostd(config, brokers="embedded")
    write_dropin(d, "50-local.conf", "[plugin.notifications]\ntransport = pigeon\n"
                                     "[log]\nlevel = info\n")
    text = reload_log(d, "reload done")
    dropin = d.config_dir / "conf.d" / "50-local.conf"
    assert (f"{dropin}:2: [plugin.notifications] transport: must be smtp or maildir") in text, text
    assert "skipped (required = false)" in text, text
    assert ("reload: plugin 'notifications' (required = false) keeps running as it ran") in text
    assert "draining" not in text, text
    assert "level debug -> info" in text, text
    assert d.get("/readyz").json()["plugins"] == {"user": "running", "notifications": "running"}


@pytest.mark.parametrize("how", ["another ABI", "no file"])
def test_a_plugin_not_required_whose_new_build_cannot_load_keeps_running_at_a_reload(
        evhostd, build_dir, tmp_path, how):
    # required = false: a build that cannot be loaded leaves the plugin out
    # like a refused value. A reload keeps the instance that runs, as it
    # keeps it for a refused value; before, it took the plugin for disabled
    # and stopped it ("reload done: 0 started, 1 stopped").
    installed = tmp_path / "probe.so"
    shutil.copyfile(fixture_plugin(build_dir, "probe"), installed)
    d = evhostd(dropins={"20-probe.conf": f"[plugin.probe]\npath = {installed}\n"
                                          "required = false\nsubscribe = false\n"})
    assert d.get("/probe/seen").status_code == 200
    if how == "another ABI":
        shutil.copyfile(fixture_plugin(build_dir, "wrong_abi_major"), tmp_path / "new.so")
        os.replace(tmp_path / "new.so", installed)
    else:
        installed.unlink()
    text = reload_log(d, "reload done")
    assert "skipped (required = false)" in text, text
    assert ("reload: plugin 'probe' (required = false) keeps running as it ran: its new build "
            "or values were refused") in text, text
    assert "draining" not in text and "0 started, 0 stopped, 0 unchanged" in text, text
    assert d.get("/readyz").json()["plugins"] == {"probe": "running"}
    assert d.get("/probe/seen").status_code == 200


def test_a_reload_keeps_the_plugin_dir_and_confdir_it_started_with(evhostd, build_dir,
                                                                   tmp_path):
    # [host] takes effect at a restart, as the reload says of a change:
    # plugin_dir and confdir too. Before, the reload resolved the plugins'
    # paths against the new plugin_dir (the copy there taken for a new
    # build: restarted) and read the new confdir's drop-ins (a plugin only
    # there started), while it said neither change was applied.
    other = tmp_path / "other-plugins"
    other.mkdir()
    shutil.copyfile(build_dir / "plugins" / "hello.so", other / "hello.so")
    other_confd = tmp_path / "other-conf.d"
    other_confd.mkdir()
    (other_confd / "10-hello.conf").write_text("[plugin.hello]\npath = hello.so\n")
    (other_confd / "20-probe.conf").write_text(probe_dropin(build_dir))
    d = evhostd(dropins={"10-hello.conf": "[plugin.hello]\npath = hello.so\n"})
    conf = d.config_file.read_text()
    conf = re.sub(r"^plugin_dir = .*$", f"plugin_dir = {other}\nconfdir = {other_confd}", conf,
                  count=1, flags=re.M)
    d.config_file.write_text(conf)
    text = reload_log(d, "reload done")
    assert "0 started, 0 stopped, 1 unchanged" in text, text
    assert "reload: [host] plugin_dir changed" in text, text
    assert "reload: [host] confdir set" in text, text
    assert d.get("/readyz").json()["plugins"] == {"hello": "running"}


def test_a_reload_draining_a_slow_handler_keeps_systemds_watchdog_fed(evhostd, build_dir,
                                                                       kafka_bootstrap,
                                                                       unique_name):
    # systemd's watchdog (the unit's WatchdogSec) wants a ping from the main
    # thread every interval, and a reload holds that thread while it drains
    # a plugin whose handler runs: a reload that waited 8 s for one went 8 s
    # without a ping (at the unit's 30 s, systemd killed the daemon in the
    # middle of such a reload). The reload lengthens the interval to 10
    # minutes for its time, and sets it back after.
    notify = lib.NotifySocket()
    try:
        probe = {"path": str(fixture_plugin(build_dir, "probe")), "topic": unique_name("wd"),
                 "group": unique_name("g")}
        d = evhostd({"plugin.probe": probe}, brokers=kafka_bootstrap,
                    env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"})
        assert d.post("/probe/publish?key=k", json={"n": 1, "sleep_ms": 8000}).status_code == 200
        d.wait_for_log("probe: handler sleeping 8000 ms", timeout=30)
        conf = d.config_dir / "evhost.conf"
        conf.write_text(conf.read_text().replace("[plugin.probe]", "[plugin.probe]\nretry."
                                                 "max_attempts = 4"))
        d.send_signal(signal.SIGHUP)
        d.wait_for_log("reload done: 1 started, 1 stopped", timeout=30)
        time.sleep(2.5)
        texts = notify.texts()
        start = next(i for i, m in enumerate(texts) if m.startswith("RELOADING=1"))
        assert texts[start + 1] == "WATCHDOG=1\nWATCHDOG_USEC=600000000", texts[start:]
        back = texts.index("WATCHDOG_USEC=2000000\nWATCHDOG=1", start)
        assert texts[back + 1].startswith("READY=1"), texts[back:]
        t_back = notify.messages[back][0]
        assert t_back - notify.messages[start][0] > 5  # it drained the handler
        pings = [t for t, m in notify.messages[back:] if m == "WATCHDOG=1"]
        assert len(pings) >= 2 and max(b - a for a, b in zip([t_back] + pings, pings)) < 2
    finally:
        notify.close()


def test_a_drop_in_adding_a_second_instance_of_a_plugin_with_fixed_routes_is_refused(
        evhostd, build_dir):
    # The reload started the second instance of user, whose init failed on
    # POST /users (held by the first): "could not be started; it stays off",
    # /readyz not ready, its database made. Now the reload is refused whole
    # at its check step, at the drop-in's line, and nothing is touched.
    user = build_dir / "plugins" / "user.so"
    d = evhostd(dropins={"10-user.conf": "[plugin.user]\n"})
    write_dropin(d, "20-user2.conf", f"# a second one\n[plugin.user2]\npath = {user}\n")
    dropin = d.config_dir / "conf.d" / "20-user2.conf"
    mark = len(d.log_text())
    d.send_signal(signal.SIGHUP)
    lib.wait_until(lambda: any(s in d.log_text()[mark:] for s in ("reload refused: 1 problem",
                                                                  "reload done")),
                   timeout=30, message="the reload did not end")
    text = d.log_text()[mark:]
    assert (f"reload refused: {dropin}:2: [plugin.user2] {user}: route POST /users already "
            f"registered by plugin 'user' ([plugin.user] at ") in text, text
    assert "reload refused: 1 problem; the running configuration stays" in text, text
    assert "could not be started" not in text and "draining" not in text, text
    assert not (d.state_dir / "user2.db").exists()
    assert d.get("/readyz").json()["plugins"] == {"user": "running"}
    r = d.post("/users", json={"name": "Ada", "email": "ada@example.com",
                               "password": "correct horse battery"})
    assert r.status_code == 201, r.text
    # required = false: left out, the rest of the reload applies.
    write_dropin(d, "20-user2.conf", f"[plugin.user2]\npath = {user}\nrequired = false\n"
                                     "[log]\nlevel = info\n")
    text = reload_log(d, "reload done")
    assert (f"reload: {dropin}:1: [plugin.user2] {user}: route POST /users already "
            "registered by plugin 'user'") in text, text
    assert "(required = false: left out)" in text, text
    assert "0 started, 0 stopped, 1 unchanged" in text, text
    assert "level debug -> info" in text, text
    assert not (d.state_dir / "user2.db").exists()
    assert d.get("/readyz").json()["plugins"] == {"user": "running"}


def test_a_running_plugin_left_out_for_a_route_clash_is_not_said_disabled(evhostd, build_dir):
    # A new instance of user (fixed routes), before the running one
    # (required = false) in the plugins' order: the running one is the second
    # to declare POST /users, left out and stopped. Its stop said "disabled",
    # which the admin did not do; it says why now. A disabled one, and a
    # removed one, still say so.
    user = build_dir / "plugins" / "user.so"
    d = evhostd(dropins={"10-user.conf": f"[plugin.zuser]\npath = {user}\nrequired = false\n",
                         "20-probe.conf": probe_dropin(build_dir)})
    write_dropin(d, "30-user.conf", f"[plugin.user]\npath = {user}\n")
    text = reload_log(d, "reload done")
    assert "route POST /users already registered by plugin 'user'" in text, text
    assert ("plugin 'zuser': left out (required = false): its declared routes clash with "
            "another plugin's (the warning above says which), draining") in text, text
    assert "disabled" not in text, text
    assert d.get("/readyz").json()["plugins"] == {"user": "running", "probe": "running"}
    write_dropin(d, "20-probe.conf", probe_dropin(build_dir, enabled=False))
    assert "plugin 'probe': disabled, draining" in reload_log(d, "reload done")
    write_dropin(d, "20-probe.conf", probe_dropin(build_dir))
    reload_log(d, "reload done")
    (d.config_dir / "conf.d" / "20-probe.conf").unlink()
    assert ("plugin 'probe': removed from the configuration, draining"
            in reload_log(d, "reload done"))
