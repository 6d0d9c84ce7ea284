"""The daemon itself: start-up, refusals, --check-config, HTTP edge cases,
the out-of-tree SDK path, publishing through the outbox to real Kafka, and a
clean SIGTERM. Plugins used: tests/fixtures (probe, broken ones) and the SDK
example (hello)."""

import base64
import concurrent.futures
import contextlib
import ctypes
import datetime
import errno
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

import evhost_testlib as lib


def fixture_dir(build_dir):
    return build_dir / "tests" / "fixtures"


def probe_conf(build_dir, **keys):
    conf = {"enabled": "true", "path": str(fixture_dir(build_dir) / "probe.so")}
    conf.update(keys)
    return conf


# ------------------------------------------------------------------ start-up


def test_starts_on_embedded_broker_and_is_ready(evhostd, build_dir):
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    r = d.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = lib.wait_until(lambda: (lambda x: x if x.status_code == 200 else None)(d.get("/readyz")),
                       timeout=20, message="readyz never became 200")
    body = r.json()
    assert body["ready"] is True
    assert body["plugins"] == {"probe": "running"}
    assert body["kafka"] == "reachable"
    assert "embedded" in d.log_text() and "durable" in d.log_text()
    assert r.headers.get("X-Request-Id")


def test_version_and_help(build_dir):
    binary = str(build_dir / "host" / "evhostd")
    r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "ABI 1." in r.stdout
    r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "--check-config" in r.stdout
    r = subprocess.run([binary, "--bogus"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2


@pytest.mark.inputs
@pytest.mark.parametrize("fixture,needle", [
    ("not_elf.so", "not a shared object"),
    ("no_entry.so", "no symbol evh_plugin_entry_v1"),
    ("abi_v2_entry.so", "built for ABI 2"),
    ("wrong_abi_major.so", "built for ABI 7.2, this host supports ABI 1.0"),
    ("needs_newer_minor.so", "needs ABI 1.99"),
    ("missing.so", "No such file"),
])
def test_refuses_bad_plugin(evhostd, build_dir, fixture, needle):
    path = fixture_dir(build_dir) / fixture
    r = evhostd.run([], config={"plugin.bad": {"path": str(path)}}, timeout=30)
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if needle in l]
    assert lines, r.stderr
    # one precise line: where it was configured, which file, what was wrong
    assert "evhost.conf:" in lines[0] and str(path) in lines[0]


@pytest.mark.inputs
@pytest.mark.parametrize("variant,needle", [
    (7, "its configuration schema lists 'topic' twice (entries 2 and 5): "
        "a plugin bug, rebuild it"),
    (8, "its configuration schema's entry 2 has an empty name: a plugin bug, rebuild it"),
    # the newline in the name shown escaped: it does not split the line
    (9, "its configuration schema's entry 3, 'max size=\\x0a', is not a key name (letters, "
        "digits, '_' and '-' in parts separated by '.', or a part '*' alone): "
        "a plugin bug, rebuild it"),
    # a type no host knows (a typo, a cast): refused at the admin's own line
    # as the schema's unknown type before, whatever was set
    (15, "its configuration schema's entry 2, 'retries', has type 8, which this host does "
         "not know: a plugin bug, rebuild it"),
], ids=["twice", "empty", "not-a-key", "unknown-type"])
def test_refuses_a_plugin_whose_schema_lists_a_key_twice_or_a_name_that_is_no_key(
        evhostd, build_dir, variant, needle):
    # bad_desc.c's schemas: a key listed twice, an empty name, a name with a
    # space, an '=' and a newline. Refused when the descriptor is read (the
    # old host said "configuration OK"), in one line naming where the plugin
    # was configured, its section and file and the key, and nothing else
    # said of the section (which sets a key of the schema, fine in itself).
    path = fixture_dir(build_dir) / f"bad_desc_{variant}.so"
    r = evhostd.run(["--check-config"], config={"plugin.bad": {"path": str(path),
                                                               "limit": "7"}}, timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [l for l in (r.stdout + r.stderr).splitlines() if "[plugin.bad]" in l]
    assert len(lines) == 1, r.stdout + r.stderr
    assert re.fullmatch(r".*evhost\.conf:\d+: \[plugin\.bad\] " + re.escape(f"{path}: {needle}"),
                        lines[0]), lines[0]
    assert "configuration OK" not in r.stdout


def run_with_stream(evhostd, tmp_path, config, journal):
    """evhostd run on `config` until it exits, its stderr a file and
    JOURNAL_STREAM naming that file (or, not `journal`, another): the lines."""
    config_dir, _, _ = evhostd.write_config(config)
    out = tmp_path / "stderr"
    with open(out, "wb") as f:
        st = os.fstat(f.fileno())
        ino = st.st_ino if journal else st.st_ino + 1
        r = subprocess.run([str(evhostd.binary), "-c", str(config_dir / "evhost.conf")],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=f,
                           env=dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{ino}"),
                           timeout=60)
    assert r.returncode == 1
    return out.read_text().splitlines()


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "redirected"])
def test_log_lines_carry_their_priority_on_the_journals_stream(evhostd, build_dir, tmp_path,
                                                               journal):
    # Under systemd (stderr the journal's stream, JOURNAL_STREAM naming it)
    # each line was stored at info, errors too: journalctl -p err showed
    # none, and the access log's flood spent the errors' rate-limit budget
    # (journald keeps one per priority). A line begins with its syslog
    # priority there, a refused configuration's too; a stream redirected
    # elsewhere gets none.
    lines = run_with_stream(evhostd, tmp_path, {"plugin.broken": {
        "path": str(fixture_dir(build_dir) / "init_fails.so")}}, journal)
    levels = {" ERROR ": "<3>", " WARN  ": "<4>", " INFO  ": "<6>", " DEBUG ": "<7>"}
    seen = set()
    for line in lines:
        level = next((w for w in levels if w in line[:40]), None)
        if level is None:
            continue  # a line of the backtrace kind, or civetweb's own
        seen.add(level)
        assert line.startswith(levels[level]) == journal, line
        assert not journal or line[3:4].isdigit(), line  # then the timestamp
    assert {" ERROR ", " INFO  "} <= seen, lines
    assert any("cannot reach the license server" in l for l in lines), lines
    lines = run_with_stream(evhostd, tmp_path, {"plugin.gone": {
        "path": "/nonexistent/gone.so"}}, journal)
    refused = [l for l in lines if "gone.so: cannot open plugin" in l or "problem" in l]
    assert len(refused) == 2, lines
    assert all(l.startswith("<3>") == journal for l in refused), lines


def test_a_closed_stderr_does_not_write_the_log_into_the_lock_file(evhostd):
    # Started with fd 2 closed ("2>&-"), the first file the daemon kept open
    # (state_dir/evhostd.lock) took its number: every log line went into
    # it, over the pid it keeps for "another evhostd pid N is running".
    config_dir, state_dir, port = evhostd.write_config({})
    proc = subprocess.Popen([str(evhostd.binary), "-c", str(config_dir / "evhost.conf")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            preexec_fn=lambda: os.close(2))
    try:
        lib.wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), timeout=30,
                       message="the daemon never answered /healthz")
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    # Its pid, then (for evhostctl) the address it listens on.
    assert re.fullmatch(rb"%d\n127\.0\.0\.1:%d\n" % (proc.pid, port),
                        (state_dir / "evhostd.lock").read_bytes())


def _answers(url):
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_refuses_plugin_whose_init_fails(evhostd, build_dir):
    path = fixture_dir(build_dir) / "init_fails.so"
    d = evhostd({"plugin.init_fails": {"path": str(path)}}, wait=False)
    code = d.wait(timeout=30)
    assert code == 1
    text = d.log_text()
    assert "init failed" in text and "cannot reach the license server" in text
    d.expect_exit_code = None
    # A start that failed stopped what it had started: the next start does
    # not tell of consumers that did not leave their groups.
    again = evhostd({}, config_dir=d.config_dir, state_dir=d.state_dir, port=d.port)
    assert again.stop() == 0
    assert "did not stop cleanly" not in again.log_text()


def test_a_port_in_use_stops_the_start_before_any_plugin(evhostd, build_dir):
    # The port was bound only after every plugin had started: their
    # migrations ran and the consumers joined their groups (a rebalance for
    # the other members) before the start failed, every 2 s under
    # Restart=on-failure. Now the start fails first, naming the address.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = evhostd.run([], config={"http": {"listen": f"127.0.0.1:{port}"},
                                    "plugin.probe": probe_conf(build_dir, subscribe="false")},
                        timeout=30)
    assert r.returncode == 1, r.stderr
    assert f"http: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr, \
        r.stderr
    assert "probe: warning for the log test" not in r.stderr, r.stderr  # its init never ran


def test_a_subscription_without_a_topic_is_refused_and_said(evhostd, build_dir):
    r = evhostd.run([], config={"plugin.probe": probe_conf(build_dir, topic="")}, timeout=30)
    assert r.returncode != 0, r.stderr
    assert re.search(r"ERROR +\[probe\] subscribe: no topic", r.stderr), r.stderr
    # and the refusal quotes it, as it quotes the plugin's own ERROR lines
    assert "plugin 'probe' init failed (invalid argument): subscribe: no topic" in r.stderr, \
        r.stderr


@pytest.mark.inputs
@pytest.mark.parametrize("keys,needle", [
    ({"retry.max_attempts": 1001}, "max_attempts 1001 is out of range (0 for the host's "
                                   "[kafka] retry.max_attempts, or 1 to 1000)"),
    ({"retry.max_attempts": -1}, "max_attempts -1 is out of range"),
    ({"retry.backoff_ms": 3600001}, "backoff_ms 3600001 is out of range"),
    # the probe's backoff_max_ms is 1000
    ({"retry.backoff_ms": 2000}, "backoff_max_ms (1000) must not be below backoff_ms (2000)"),
])
def test_subscription_with_a_retry_policy_out_of_range_is_refused(evhostd, build_dir, keys,
                                                                    needle):
    conf = probe_conf(build_dir, topic="probe.retry.range", **{k: str(v) for k, v in keys.items()})
    r = evhostd.run([], config={"plugin.probe": conf}, timeout=30)
    assert r.returncode != 0, r.stderr
    lines = [l for l in r.stderr.splitlines() if needle in l]
    assert lines, r.stderr
    # names the plugin (the line's component) and the topic
    assert "probe" in lines[0] and "subscription to probe.retry.range refused" in lines[0]


def test_a_subscription_cap_below_the_hosts_backoff_is_raised_to_it(evhostd, build_dir,
                                                                      tmp_path):
    # backoff_ms 0 takes the host's [kafka] retry.backoff_ms (2000 here),
    # above the probe's backoff_max_ms of 1000: the cap is raised to 2000 for
    # every wait (the retry delay raised it, the other waits used 1000), and
    # not refused, which --check-config, blind to [kafka] retry.* in a
    # plugin's check, could not have said.
    token = tmp_path / "admin.token"
    token.write_text("admin-token-for-tests-0123456789\n")
    conf = probe_conf(build_dir, topic="probe.retry.host", **{"retry.backoff_ms": "0"})
    d = evhostd({"plugin.probe": conf, "admin": {"token_file": str(token)},
                 "kafka": {"retry.backoff_ms": "2000", "retry.backoff_max_ms": "5000"}})
    r = d.get("/admin/plugins",
              headers={"Authorization": "Bearer admin-token-for-tests-0123456789"})
    assert r.status_code == 200, r.text
    (probe,) = [p for p in r.json()["plugins"] if p["name"] == "probe"]
    (sub,) = probe["subscriptions"]
    assert (sub["backoff_ms"], sub["backoff_max_ms"]) == (2000, 2000), sub


def test_optional_plugin_failure_is_a_warning(evhostd, build_dir):
    bad = fixture_dir(build_dir) / "init_fails.so"
    d = evhostd({
        "plugin.init_fails": {"path": str(bad), "required": "false"},
        "plugin.probe": probe_conf(build_dir, subscribe="false"),
    })
    assert d.get("/healthz").status_code == 200
    assert "required = false" in d.log_text()
    r = lib.wait_until(lambda: (lambda x: x if x.status_code == 200 else None)(d.get("/readyz")),
                       timeout=20)
    assert r.json()["plugins"] == {"probe": "running"}


def test_second_daemon_on_the_same_state_dir_is_refused(evhostd, build_dir):
    first = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    second = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")},
                     state_dir=first.state_dir, wait=False)
    assert second.wait(timeout=30) == 1
    second.expect_exit_code = None
    text = second.log_text()
    assert f"another evhostd pid {first.proc.pid} is running with state_dir" in text, text
    assert first.get("/healthz").status_code == 200
    # Released at exit: a daemon started after the first one stopped runs.
    assert first.stop() == 0
    evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")},
            state_dir=first.state_dir)


@pytest.mark.parametrize("damage", ["pages", "not_a_database"])
def test_a_damaged_database_stops_the_start_and_is_left_as_it_is(evhostd, build_dir, damage):
    first = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    assert first.stop() == 0
    db = Path(first.state_dir) / "probe.db"
    data = db.read_bytes()
    assert len(data) > 8192 and data.startswith(b"SQLite format 3\0")
    if damage == "pages":  # the header kept, every page after the first overwritten
        db.write_bytes(data[:4096] + b"\xa5" * (len(data) - 4096))
        said = "database disk image is malformed"
    else:  # e.g. a wrong file restored
        db.write_text("not a database\n")
        said = "file is not a database"
    before = db.read_bytes()
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")},
                state_dir=first.state_dir, wait=False)
    assert d.wait(timeout=30) == 1
    d.expect_exit_code = None
    line = next((l for l in d.log_text().splitlines() if "ERROR" in l and said in l), None)
    assert line, d.log_text()
    # which plugin, which file, what happened, what to do; said once
    assert "plugin 'probe'" in line and line.count(str(db)) == 1, line
    assert "restore it from a backup" in line, line
    assert db.read_bytes() == before


def crud_with_60_notes(evhostd, tmp_path):
    """A crud daemon with an admin token, 60 notes of 1 KB created (and their
    events delivered and logged), stopped: its configuration, state
    directory and admin header."""
    token = tmp_path / "admin.token"
    token.write_text("damage-admin-token-0123456789\n")
    admin = {"Authorization": "Bearer damage-admin-token-0123456789"}
    conf = {"plugin.crud": {"collections": "notes"}, "admin": {"token_file": str(token)}}
    first = evhostd(conf)
    for i in range(60):
        r = first.post("/crud/notes", json={"n": i, "text": "x" * 1000})
        assert r.status_code == 201, r.text
    lib.wait_until(lambda: len(first.get("/admin/events", headers=admin,
                                         params={"plugin": "crud", "limit": 100}
                                         ).json()["events"]) == 60,
                   timeout=30, message="the 60 events delivered and logged")
    assert first.stop() == 0
    return conf, first.state_dir, admin


def damage_pages(db, table):
    """Three of `table`'s leaf pages in the database file `db` overwritten
    (the schema and the other tables intact)."""
    with contextlib.closing(sqlite3.connect(db)) as c:
        size = c.execute("PRAGMA page_size").fetchone()[0]
        leaves = [p for (p,) in c.execute("SELECT pageno FROM dbstat WHERE name = ? "
                                          "AND pagetype = 'leaf'", (table,))]
    assert len(leaves) >= 4, leaves
    with open(db, "r+b") as f:
        for page in leaves[:3]:
            f.seek((page - 1) * size)
            f.write(b"\xa5" * size)


@pytest.mark.parametrize("found_by", ["request", "backup"])
def test_damage_found_while_running_is_said_once_and_measured(evhostd, build_dir, tmp_path,
                                                              found_by):
    conf, state_dir, admin = crud_with_60_notes(evhostd, tmp_path)
    db = Path(state_dir) / "crud.db"
    damage_pages(db, "documents")

    def damaged():
        m = re.search(r'^evhost_store_damaged\{plugin="crud"\} (\d)$', d.get("/metrics").text,
                      re.M)
        return int(m.group(1))

    d = evhostd(conf, state_dir=state_dir)
    assert damaged() == 0
    if found_by == "backup":  # it reads every page: it finds the damage before any request
        r = d.post("/admin/backup", json={}, headers=admin, timeout=60)
        assert r.status_code == 500, r.text
        assert "the database is damaged; restore it from an earlier backup" in r.json()["detail"]
        assert damaged() == 1
    for _ in range(2):
        r = d.get("/crud/notes", params={"limit": 100})
        assert r.status_code == 500, r.text
    assert damaged() == 1
    assert d.get("/admin/plugins/crud", headers=admin).json()["storage"] == "damaged"
    said = [l for l in d.log_text().splitlines() if "SQLite finds the database damaged" in l]
    assert len(said) == 1, said
    assert str(db) in said[0] and "restore the file from a backup" in said[0], said[0]
    found = "found by a backup" if found_by == "backup" else "database disk image is malformed"
    assert f"damaged ({found})" in said[0], said[0]
    # The rest is served: the daemon stays up and ready, and says what is damaged.
    r = d.get("/readyz")
    assert r.status_code == 200 and r.json()["damaged"] == ["crud"], r.text
    r = subprocess.run([str(build_dir / "host" / "evhostctl"), "-c", str(d.config_file),
                        "status"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "plugin crud: its database is damaged; restore it from a backup" in r.stdout
    assert d.post("/crud/notes", json={"n": 60}).status_code == 201


def test_damage_found_by_the_event_log_is_said_and_measured(evhostd, build_dir, tmp_path):
    # The event log is read on a connection of its own (GET /admin/events), as
    # the relay reads the outbox: damage found there marks the store damaged
    # too, said once, rather than only failing the read.
    conf, state_dir, admin = crud_with_60_notes(evhostd, tmp_path)
    db = Path(state_dir) / "crud.db"
    damage_pages(db, "evh_log")
    d = evhostd(conf, state_dir=state_dir)
    r = d.get("/admin/events", headers=admin, params={"plugin": "crud", "limit": 100})
    assert r.status_code == 500, r.text
    m = re.search(r'^evhost_store_damaged\{plugin="crud"\} (\d)$', d.get("/metrics").text, re.M)
    assert m and m.group(1) == "1", d.get("/metrics").text
    said = [l for l in d.log_text().splitlines() if "SQLite finds the database damaged" in l]
    assert len(said) == 1 and str(db) in said[0], said


def test_disabled_plugin_is_not_loaded(evhostd, build_dir):
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false", enabled="false")})
    assert d.get("/probe/seen").status_code == 404


def test_plugin_log_level_overrides_the_global_one(evhostd, build_dir):
    d = evhostd({"log": {"level": "warn"},
                 "plugin.probe": probe_conf(build_dir, subscribe="false", log_level="debug")})
    text = d.log_text()
    assert "probe: debug detail" in text
    assert "ready:" not in text  # the host's INFO lines stay below [log] level = warn
    d.stop()
    d = evhostd({"log": {"level": "debug"},
                 "plugin.probe": probe_conf(build_dir, subscribe="false", log_level="error")})
    # "ready:" is logged once HTTP is up, so it can come after the fixture
    # saw the daemon answer (a TSan build is slow enough): wait for it.
    d.wait_for_log("ready:")
    text = d.log_text()
    assert "probe: debug detail" not in text and "probe: warning" not in text
    r = evhostd.run(["--check-config"], config={
        "plugin.probe": probe_conf(build_dir, log_level="verbose")})
    assert r.returncode != 0
    assert "expected error, warn, info or debug" in r.stdout + r.stderr


def test_a_request_before_the_routes_are_set_is_503_starting(evhostd, build_dir):
    # civetweb listens before evhost's handler is set; a request in between
    # (a load balancer's health check at start) was civetweb's 404 for
    # /healthz itself. Now 503 with Retry-After: the server is starting.
    # The window is widened to 3 s (faults.so) to be hit on purpose.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")}, wait=False,
                env=lib.faults_preloaded(build_dir, routes_delay_ms=3000))

    def answer():
        """[the answer], or None while nothing listens (in a list: a
        Response is false when its status is 4xx or 5xx)."""
        try:
            return [requests.get(f"{d.url}/healthz", timeout=5)]
        except requests.ConnectionError:
            return None
    [r] = lib.wait_until(answer, timeout=30, interval=0.05, message="a first answer")
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["Retry-After"] == "1"
    assert r.json()["detail"] == "the server is starting; try again", r.text
    # Any method (civetweb's begin_request, before its own handling).
    for method in ("OPTIONS", "PUT", "DELETE", "POST"):
        r = requests.request(method, f"{d.url}/crud/products/1", data=b"{}", timeout=5)
        assert r.status_code == 503, (method, r.status_code, r.text)
        assert r.json()["detail"] == "the server is starting; try again", r.text
    lib.wait_until(lambda: (answer() or [r])[0].status_code == 200, timeout=30,
                   message="/healthz 200 once routed")
    assert d.get("/nowhere").status_code == 404  # civetweb's 404s are evhost's own again
    assert "no route" in d.get("/nowhere").json()["detail"]


def test_a_browsers_preflight_is_not_approved(evhostd, build_dir):
    # evhost sends no CORS headers. civetweb answered a browser's preflight
    # itself, 200 allowing any origin and the method asked, so a page on any
    # site could have its visitors' browsers send JSON writes to the routes
    # open by default (POST /users, /crud). The router answers it now, as
    # any OPTIONS (no route for it), and no answer allows another origin.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    origin = {"Origin": "https://elsewhere.example"}
    r = requests.options(f"{d.url}/probe/publish", timeout=5,
                         headers={**origin, "Access-Control-Request-Method": "POST",
                                  "Access-Control-Request-Headers": "content-type"})
    assert r.status_code in (404, 405), (r.status_code, r.headers, r.text)
    assert not any(h.lower().startswith("access-control-") for h in r.headers), r.headers
    r = requests.get(f"{d.url}/healthz", headers=origin, timeout=5)
    assert r.status_code == 200
    assert not any(h.lower().startswith("access-control-") for h in r.headers), r.headers


# ------------------------------------------------------------- check-config


def test_check_config_ok(evhostd, build_dir):
    r = evhostd.run(["--check-config"], config={"plugin.probe": probe_conf(build_dir)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "configuration OK" in r.stdout


def test_check_config_reports_file_and_line(evhostd, build_dir):
    dropins = {
        "20-probe.conf": (
            "[plugin.probe]\n"
            f"path = {fixture_dir(build_dir) / 'probe.so'}\n"
            "retry.max_attempts = many\n"
            "colour = blue\n"
        ),
        "30-http.conf": "[http]\nthreads = lots\nlisten_address = 1.2.3.4\n",
    }
    r = evhostd.run(["--check-config"], dropins=dropins)
    assert r.returncode == 1
    out = r.stdout
    assert "conf.d/20-probe.conf:3:" in out and "retry.max_attempts" in out
    assert "conf.d/20-probe.conf:4:" in out and "colour" in out
    assert "conf.d/30-http.conf:2:" in out and "threads" in out
    assert "conf.d/30-http.conf:3:" in out and "listen_address" in out


def test_check_config_refuses_an_ipv6_listen_address_civetweb_cannot_bind(evhostd):
    # Debian 12's civetweb is built without IPv6: such an address passed the
    # check, and the start failed only after the plugins had started.
    r = evhostd.run(["--check-config"],
                    dropins={"30-http.conf": "[http]\nlisten = [::1]:8080\n"})
    if "configuration OK" in r.stdout:
        pytest.skip("this civetweb listens on IPv6")
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("conf.d/30-http.conf:2: [http] listen = [::1]:8080: this civetweb build has no "
            "IPv6 support; use an IPv4 address") in r.stdout, r.stdout


TEMPLATES = lib.TEMPLATES


def test_check_config_runs_the_plugins_checks_of_their_values(evhostd):
    # ABI 1.7: a plugin's own values (checked only by its init before) are
    # refused by --check-config, at the drop-in's file:line of the key.
    dropins = {
        "30-notifications.conf": ("[plugin.notifications]\n"
                                  f"templates_dir = {TEMPLATES}\n"
                                  "transport = pigeon\n"),
        "10-user.conf": "[plugin.user]\n\npassword_min_length = 0\n",
    }
    r = evhostd.run(["--check-config"], dropins=dropins)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert ("conf.d/30-notifications.conf:3: [plugin.notifications] transport: must be smtp "
            "or maildir (got \"pigeon\")") in out, out
    assert ("conf.d/10-user.conf:3: [plugin.user] password_min_length: must be between 1 and "
            "1024 (got 0)") in out, out
    assert "2 problems found" in out, out
    # A key left to its default is said at the section's header:
    # topic.user_updated's default is the topic topic.user_created names.
    r = evhostd.run(["--check-config"], dropins={
        "30-notifications.conf": ("# mail\n[plugin.notifications]\n"
                                  f"templates_dir = {TEMPLATES}\n"
                                  "topic.user_created = USER_UPDATED\n")})
    assert r.returncode == 1
    assert ("conf.d/30-notifications.conf:2: [plugin.notifications] topic.user_updated: "
            "'USER_UPDATED' is topic.user_created's topic too") in r.stdout, r.stdout
    r = evhostd.run(["--check-config"], dropins={
        "20-crud.conf": "[plugin.crud]\ncollections = products, orders\n"
                        "collection.orders.types = total:float\n"})
    assert r.returncode == 1
    assert ("conf.d/20-crud.conf:3: [plugin.crud] collection.orders.types: 'float' is not one "
            "of string") in r.stdout, r.stdout
    r = evhostd.run(["--check-config"], dropins={
        "10-user.conf": "# users\n[plugin.user]\nadmin_email = root@example.org\n"})
    assert r.returncode == 1
    assert ("conf.d/10-user.conf:3: [plugin.user] admin_email: is set but admin_password_file "
            "is not") in r.stdout, r.stdout
    # Good values pass.
    r = evhostd.run(["--check-config"], dropins={
        "30-notifications.conf": f"[plugin.notifications]\ntemplates_dir = {TEMPLATES}\n",
        "10-user.conf": "[plugin.user]\npassword_min_length = 12\n"})
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_check_that_fails_without_naming_a_key_is_still_said(evhostd, build_dir):
    """A plugin's check that returns an error without evh_config_error is
    refused at its section's line, with its last ERROR line when it logged one."""
    probe = fixture_dir(build_dir) / "probe.so"
    for fails, said in (("silent", "the plugin's check failed (invalid argument)"),
                        ("logged", "the plugin's check failed (failure): probe: "
                                   "check: the weather is wrong")):
        r = evhostd.run(["--check-config"], dropins={"50-probe.conf": (
            f"# probe\n[plugin.probe]\npath = {probe}\ncheck_fails = {fails}\n")})
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"conf.d/50-probe.conf:2: [plugin.probe] {said}" in r.stdout, r.stdout


def test_check_config_refuses_a_second_instance_of_a_plugin_with_fixed_routes(
        evhostd, build_dir, tmp_path):
    """Two sections loading user.so passed --check-config, and the start
    failed: the second instance's init registered POST /users again. Now
    the check says it with the start's words, naming both sections and
    files; also for the plugin under another name from a copy of its file."""
    user = build_dir / "plugins" / "user.so"
    conf = "[plugin.user]\n\n[plugin.user2]\npath = user.so\n"
    r = evhostd.run([], dropins={"10-user.conf": conf}, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    said = "route POST /users already registered by plugin 'user'"
    assert said in r.stderr, r.stderr
    r = evhostd.run(["--check-config"], dropins={"10-user.conf": conf})
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if said in l]
    assert len(lines) == 1, r.stdout
    assert re.fullmatch(
        r".*conf\.d/10-user\.conf:3: \[plugin\.user2\] " + re.escape(f"{user}: {said} ")
        + r"\(\[plugin\.user\] at .*conf\.d/10-user\.conf:1, " + re.escape(f"{user}): ")
        + "plugin 'user' registers fixed routes, so a second instance of it fails at start",
        lines[0]), lines[0]
    assert "1 problem found" in r.stdout, r.stdout
    copy = tmp_path / "accounts.so"
    shutil.copy(user, copy)
    r = evhostd.run(["--check-config"], dropins={
        "10-user.conf": "[plugin.user]\n",
        "20-crud.conf": "[plugin.crud]\n[plugin.crud_b]\npath = crud.so\n",
        "30-accounts.conf": f"[plugin.accounts]\npath = {copy}\n"})
    assert r.returncode == 1, r.stdout + r.stderr
    # The plugins start in the order of their names: accounts, then user.
    assert (f"conf.d/10-user.conf:1: [plugin.user] {user}: route POST /users already "
            f"registered by plugin 'accounts' ([plugin.accounts] at " in r.stdout and
            f"conf.d/30-accounts.conf:1, {copy}): plugin 'user' registers" in r.stdout), r.stdout
    assert ("conf.d/20-crud.conf:2: [plugin.crud_b] " in r.stdout and
            "route POST /crud/{collection} already registered by plugin 'crud'" in r.stdout), \
        r.stdout
    assert "2 problems found" in r.stdout, r.stdout
    r = evhostd.run([], dropins={
        "20-crud.conf": "[plugin.crud]\n[plugin.crud_b]\npath = crud.so\n"}, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "route POST /crud/{collection} already registered by plugin 'crud'" in r.stderr, \
        r.stderr
    # required = false: the start goes on without it; said, not refused.
    r = evhostd.run(["--check-config"], dropins={
        "10-user.conf": "[plugin.user]\n[plugin.user2]\npath = user.so\nrequired = false\n"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert (f"{said} " in r.stdout and
            "(required = false: the start goes on without it)" in r.stdout), r.stdout
    # A plugin made for two instances (probe's second registers no route)
    # is not refused: probe declares no routes (ABI 1.12), so only its
    # init could find a clash.
    r = evhostd.run(["--check-config"], config={
        "plugin.probe": probe_conf(build_dir, subscribe="false"),
        "plugin.probe2": {**probe_conf(build_dir, subscribe="false"), "routes": "false"}})
    assert r.returncode == 0 and "configuration OK (2 plugins)" in r.stdout, \
        r.stdout + r.stderr


def test_the_start_refuses_a_second_instance_before_any_plugins_init(evhostd, build_dir,
                                                                     tmp_path):
    """The start ran the first instance's init (its migrations too) and only
    then failed on the second's route. Now it refuses it before any plugin's
    init, with --check-config's words; one with required = false is left
    out, said at WARN, and the others start."""
    user = build_dir / "plugins" / "user.so"
    state = tmp_path / "refused-state"
    conf = "[plugin.user]\n\n[plugin.user2]\npath = user.so\n"
    r = evhostd.run([], dropins={"10-user.conf": conf}, state_dir=state, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    said = "route POST /users already registered by plugin 'user'"
    lines = [l for l in r.stderr.splitlines() if said in l]
    assert len(lines) == 1, r.stderr
    assert re.search(
        r"conf\.d/10-user\.conf:3: \[plugin\.user2\] " + re.escape(f"{user}: {said} ")
        + r"\(\[plugin\.user\] at .*conf\.d/10-user\.conf:1, " + re.escape(f"{user}): ")
        + "plugin 'user' registers fixed routes, so a second instance of it fails at start$",
        lines[0]), lines[0]
    # No plugin's init ran: no database was made, no migration applied.
    assert "running (" not in r.stderr and "init failed" not in r.stderr, r.stderr
    assert not list(state.glob("*.db")), list(state.iterdir())
    # required = false: left out before its init, the others start.
    d = evhostd(dropins={"10-user.conf": conf + "required = false\n"})
    text = d.log_text()
    assert re.search(r"conf\.d/10-user\.conf:3: \[plugin\.user2\] .*" + re.escape(said)
                     + r".* \(required = false: left out, the start goes on without it\)",
                     text), text
    assert "plugin 'user2'" not in text, text
    assert not (d.state_dir / "user2.db").exists()
    assert d.get("/readyz").json()["plugins"] == {"user": "running"}
    r = d.post("/users", json={"name": "Ada", "email": "ada@example.com",
                               "password": "correct horse battery"})
    assert r.status_code == 201, r.text


def test_check_config_warns_that_one_http_thread_serves_no_event_stream(evhostd):
    """The start warned that [http] threads = 1 serves no event stream;
    --check-config said nothing. Now it says the same, at the line of
    threads, as a note in its verdict (not a log line, which [log] level =
    error hid): the configuration is OK."""
    for log in ({}, {"log": {"level": "error"}}):
        r = evhostd.run(["--check-config"], config=log,
                        dropins={"30-http.conf": "[http]\n# one\nthreads = 1\n"})
        assert r.returncode == 0 and "configuration OK" in r.stdout, r.stdout + r.stderr
        assert re.search(r"conf\.d/30-http\.conf:3: note: \[http\] threads = 1: no event stream "
                         r"is served \(each would hold the only worker; a stream route answers "
                         r"503\): give the server at least 2 threads to serve streams",
                         r.stdout), (log, r.stdout)
    r = evhostd.run(["--check-config"], dropins={"30-http.conf": "[http]\nthreads = 2\n"})
    assert r.returncode == 0 and "no event stream" not in r.stdout + r.stderr, \
        r.stdout + r.stderr


def test_one_http_thread_serves_no_event_stream(evhostd, build_dir, tmp_path, unique_name):
    """[http] max_streams = 1 with threads = 1 is refused (a stream would hold
    the only worker), yet that was the default then: 1, and a stream took the
    only worker. Now the default with one thread is none, which the start
    says, and a stream route answers 503 (no Retry-After: none ever comes)."""
    from test_sse import Sse, new_user, notif_config
    r = evhostd.run(["--check-config"], config={"http": {"threads": 1, "max_streams": 1}})
    assert r.returncode == 1 and "max_streams (1) must be below threads (1)" in r.stdout, \
        r.stdout
    conf = notif_config(tmp_path, unique_name, build_dir)
    conf["http"] = {"threads": 1}
    d = evhostd(conf)
    assert re.search(r"^evhost_sse_streams_max 0$", d.get("/metrics").text, re.M), \
        d.get("/metrics").text
    d.wait_for_log("[http] threads = 1: no event stream is served", timeout=10)
    _, _, token = new_user(d, "Nia")
    s = Sse(d.port, token=token)
    assert s.status == 503 and "retry-after" not in s.headers, (s.status, s.headers)
    assert json.loads(s.body())["detail"] == ("this server serves no event streams ([http] "
                                              "threads = 1 leaves no worker for one)")
    s.close()  # its connection would hold the only worker until keep_alive_timeout
    assert d.get("/healthz").status_code == 200


def test_check_config_refuses_password_hashes_that_together_exceed_the_memory(evhostd):
    """Each of hash_concurrency hashes holds argon2_memlimit: 1 GiB each was
    refused only when one alone was more than the machine's memory."""
    gib = 1 << 30
    phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    many = phys // gib + 1
    if phys < 2 * gib or many > 256:
        pytest.skip(f"the machine's memory ({phys} bytes) is outside what this test sizes")
    r = evhostd.run(["--check-config"], dropins={
        "10-user.conf": f"# users\n[plugin.user]\nargon2_memlimit = 1G\n"
                        f"hash_concurrency = {many}\n"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(
        rf"conf\.d/10-user\.conf:4: \[plugin\.user\] hash_concurrency: {many} hashes at once "
        rf"of 1 GiB each \(argon2_memlimit\) may take {many} GiB, more than this machine's "
        r"memory \([0-9.]+ [KMG]iB\): lower hash_concurrency or argon2_memlimit", r.stdout), \
        r.stdout
    # As many as fit pass; so does the default (the cores, held to what fits).
    r = evhostd.run(["--check-config"], dropins={
        "10-user.conf": f"[plugin.user]\nargon2_memlimit = 1G\nhash_concurrency = {many - 1}\n"})
    assert r.returncode == 0, r.stdout + r.stderr
    r = evhostd.run(["--check-config"], dropins={
        "10-user.conf": "[plugin.user]\nargon2_memlimit = 1G\n"})
    assert r.returncode == 0, r.stdout + r.stderr


def test_check_config_warns_of_what_would_refuse_a_disabled_plugin(evhostd, build_dir):
    """A disabled plugin's section was not read at all: a typo in it showed
    only when `evhostctl enable` reloaded (refused). --check-config says it
    now, as a warning: the configuration as it is still passes."""
    disabled = " (the plugin is disabled: enabling it would be refused)"
    r = evhostd.run(["--check-config"], dropins={
        "20-crud.conf": "[plugin.crud]\nenabled = false\ncolections = products\n",
        "30-notifications.conf": ("[plugin.notifications]\nenabled = false\n"
                                  f"templates_dir = {TEMPLATES}\ntransport = pigeon\n"),
        "40-gone.conf": "[plugin.gone]\nenabled = false\n",
        "50-probe.conf": (f"[plugin.probe]\nenabled = false\n"
                          f"path = {fixture_dir(build_dir) / 'probe.so'}\n")})
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "conf.d/20-crud.conf:3:" in out and "colections" in out, out
    assert ("conf.d/30-notifications.conf:4: [plugin.notifications] transport: must be smtp "
            "or maildir (got \"pigeon\")" + disabled) in out, out
    assert "conf.d/40-gone.conf:1: [plugin.gone]" in out and "gone.so" in out, out
    assert "probe" not in out.replace("plugin.probe", ""), out  # good values: nothing said
    assert sum(line.endswith(disabled) for line in out.splitlines()) == 3, out
    assert "configuration OK" in out


def test_the_hello_example_checks_its_topics(evhostd, build_dir):
    """sdk/examples/hello, which third parties copy, has a check (ABI 1.7):
    a topic that is not a Kafka topic name is said at its line by
    --check-config (every bad one), and refused at a start before init."""
    hello = str(build_dir / "plugins" / "hello.so")
    r = evhostd.run(["--check-config"], dropins={"50-hello.conf": (
        "[plugin.hello]\n"
        f"path = {hello}\n"
        "topic = hello events\n"
        "greeting_topic = ..\n")})
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("conf.d/50-hello.conf:3: [plugin.hello] topic: 'hello events' is not a Kafka "
            "topic name") in r.stdout, r.stdout
    assert ("conf.d/50-hello.conf:4: [plugin.hello] greeting_topic: '..' is not a Kafka "
            "topic name") in r.stdout, r.stdout
    assert "2 problems found" in r.stdout, r.stdout
    r = evhostd.run([], dropins={"50-hello.conf": (
        f"[plugin.hello]\npath = {hello}\ngreeting_topic = greet/ings\n")}, timeout=30)
    assert r.returncode == 1
    assert "conf.d/50-hello.conf:3: [plugin.hello] greeting_topic: 'greet/ings'" in r.stderr, \
        r.stderr
    assert "init failed" not in r.stderr, r.stderr
    r = evhostd.run(["--check-config"], dropins={"50-hello.conf": (
        f"[plugin.hello]\npath = {hello}\ntopic = hello.events-2\n")})
    assert r.returncode == 0 and "configuration OK (1 plugin)" in r.stdout, r.stdout + r.stderr


def test_the_hello_example_refuses_a_name_that_is_not_utf8_as_the_clients_mistake(
        evhostd, build_dir):
    """hello's name check let bytes that are not UTF-8 through (a %FF is
    decoded into the capture); evh_publish refused the greeting's data for
    them, and the handler returned that: a 500 and an ERROR line for the
    client's mistake. It answers 422 now, like the name's other faults."""
    d = evhostd({"plugin.hello": {"path": str(build_dir / "plugins" / "hello.so")}})
    # A stray byte, an overlong '/', a surrogate, past U+10FFFF, a character cut short.
    for name in ("%FF", "a%C0%AF", "%ED%A0%80", "%F4%90%80%80", "x%E2%82"):
        r = d.get(f"/hello/{name}")
        assert r.status_code == 422, (name, r.status_code, r.text)
        assert "UTF-8" in r.json()["detail"], r.text
    assert d.get("/hello/%C3%A9t%C3%A9").json() == {"hello": "\u00e9t\u00e9", "greeted": 1}
    assert d.get("/hello/%F0%9F%98%80").json()["hello"] == "\U0001F600"
    assert " ERROR " not in d.log_text(), d.log_tail()


def test_a_plugins_check_at_start_says_the_file_and_line(evhostd):
    r = evhostd.run([], dropins={"30-notifications.conf": (
        "[plugin.notifications]\n"
        f"templates_dir = {TEMPLATES}\n"
        "transport = pigeon\n")}, timeout=30)
    assert r.returncode == 1
    assert ("conf.d/30-notifications.conf:3: [plugin.notifications] transport: must be smtp "
            "or maildir") in r.stderr, r.stderr
    # Refused before anything started (init would have logged its own line).
    assert "init failed" not in r.stderr, r.stderr


def test_a_plugin_not_required_whose_check_fails_is_skipped(evhostd, build_dir):
    d = evhostd({
        "plugin.notifications": {"templates_dir": str(TEMPLATES), "transport": "pigeon",
                                 "required": "false"},
        "plugin.probe": probe_conf(build_dir, subscribe="false"),
    })
    text = d.log_text()
    assert "[plugin.notifications] transport: must be smtp or maildir" in text, text
    assert "[plugin.notifications] skipped (required = false)" in text, text
    r = lib.wait_until(lambda: (lambda x: x if x.status_code == 200 else None)(d.get("/readyz")),
                       timeout=20)
    assert r.json()["plugins"] == {"probe": "running"}
    r = evhostd.run(["--check-config"], config={
        "plugin.notifications": {"templates_dir": str(TEMPLATES), "transport": "pigeon",
                                 "required": "false"}})
    assert r.returncode == 0 and "configuration OK (0 plugins)" in r.stdout, r.stdout
    # The schema's refusals (an unknown key, a directory that is not there)
    # go the same way: they refused the start, against configuration.md.
    for bad, said in (({"templates_dirr": str(TEMPLATES)}, "unknown key 'templates_dirr'"),
                      ({"templates_dir": "/nonexistent"}, "cannot read '/nonexistent'")):
        r = evhostd.run(["--check-config"], config={
            "plugin.notifications": {**bad, "required": "false"}})
        assert r.returncode == 0 and "configuration OK (0 plugins)" in r.stdout, r.stdout
        assert said in r.stderr and "skipped (required = false)" in r.stderr, r.stderr
        r = evhostd.run(["--check-config"], config={"plugin.notifications": bad})
        assert r.returncode == 1 and said in r.stdout, r.stdout


def test_rdkafka_keys_evhost_sets_itself_are_refused_at_their_line(evhostd):
    # They were ignored with a warning per client at every start: the admin
    # who wrote acks = 1 was told nothing at --check-config.
    for key, hint in (("acks", ""), ("enable.idempotence", ""),
                      ("bootstrap.servers", "; the brokers are [kafka] brokers"),
                      ("group.id", "; a plugin's group is its group key")):
        r = evhostd.run(["--check-config"], config={"kafka": {f"rdkafka.{key}": "1"}})
        assert r.returncode == 1, r.stdout
        assert re.search(rf"evhost\.conf:\d+: \[kafka\] rdkafka\.{re.escape(key)}: evhost sets "
                         rf"it itself \(its delivery guarantees depend on it{re.escape(hint)}\); "
                         rf"remove the key", r.stdout), r.stdout
    # An empty _file key: said, not "cannot read '<the configuration's directory>'".
    r = evhostd.run(["--check-config"], config={"kafka": {"rdkafka.sasl.password_file": ""}})
    assert r.returncode == 1 and "expected the path of a file holding the value" in r.stdout, \
        r.stdout


def test_listen_on_port_0_says_the_port_it_got(evhostd):
    # Port 0 lets the system choose; the ready line said ":0", which nobody
    # could connect to.
    d = evhostd({"http": {"listen": "127.0.0.1:0"}}, wait=False)
    d.wait_for_log(" ready: ", timeout=30)
    port = int(re.search(r" ready: .*http on 127\.0\.0\.1:(\d+),", d.log_text()).group(1))
    assert port > 0
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200


def test_a_start_short_of_threads_fails_saying_so(evhostd, build_dir):
    # civetweb 1.15 goes on when it cannot create a worker, or its accept
    # thread, at the process's thread limit: evhostd said "ready" (and told
    # systemd so) with no thread accepting connections. The limit binds only
    # users other than root: the daemon runs as nobody here.
    import resource
    import tempfile
    binary = build_dir / "host" / "evhostd"
    if os.geteuid() != 0:
        pytest.skip("running the daemon as another user needs root")
    for part in [binary, *binary.parents]:
        if part.stat().st_mode & 0o005 != 0o005:
            pytest.skip(f"{part} is not readable by others (the daemon runs as nobody)")
    top = Path(tempfile.mkdtemp(prefix="evhost-nproc-"))
    try:
        top.chmod(0o755)
        (top / "state").mkdir()
        os.chown(top / "state", 65534, 65534)
        config_dir, _, port = evhostd.write_config(
            {"http": {"threads": 200}}, config_dir=top / "etc", state_dir=top / "state")
        for f in [config_dir, *config_dir.rglob("*")]:
            f.chmod(0o755 if f.is_dir() else 0o644)

        # The limit counts every thread of the user's: those nobody has now,
        # and room for 100 more (the daemon's first ones, not 200 workers).
        theirs = 0
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            uid = re.search(r"^Uid:\s+(\d+)", text, re.M)
            threads = re.search(r"^Threads:\s+(\d+)", text, re.M)
            if uid and threads and uid.group(1) == "65534":
                theirs += int(threads.group(1))

        def as_nobody_with_few_threads():
            resource.setrlimit(resource.RLIMIT_NPROC, (theirs + 100, theirs + 100))
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)

        r = subprocess.run([str(binary), "-c", str(config_dir / "evhost.conf")],
                           preexec_fn=as_nobody_with_few_threads, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        assert r.returncode == 1, r.stderr[-2000:]
        assert re.search(r"cannot start the HTTP server's threads \(\d+ of \[http\] threads = "
                         r"200.*civetweb: Cannot start worker thread", r.stderr), r.stderr[-2000:]
        assert " ready: " not in r.stderr, r.stderr[-2000:]
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_the_open_files_limit_is_raised_to_the_hard_one_or_said_too_low(evhostd, tmp_path):
    # Run by hand the soft limit is often 1024; at the limit civetweb's accept
    # loop spun on EMFILE without a word, answering nothing.
    import resource
    config_dir, _, port = evhostd.write_config({})
    for soft, hard, low in ((64, 4096, False), (100, 100, True)):
        log = tmp_path / f"nofile-{soft}.log"
        with open(log, "wb") as out:
            p = subprocess.Popen(
                [str(evhostd.binary), "-c", str(config_dir / "evhost.conf")],
                stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
        try:
            lib.wait_until(lambda: " ready: " in log.read_text(), timeout=60,
                           message=f"evhostd ready under ulimit -n {soft}")
            limits = Path(f"/proc/{p.pid}/limits").read_text()
            got = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()
            assert got == (str(hard), str(hard)), limits
            said = "open files are limited to 100 (ulimit -n, systemd LimitNOFILE=)" in \
                log.read_text()
            assert said == low, log.read_text()[-2000:]
        finally:
            p.terminate()
            assert p.wait(timeout=60) == 0


def test_a_default_directory_that_is_not_there_is_refused_by_the_check(evhostd, tmp_path):
    # templates_dir's default (where the package installs the templates) was
    # never looked at: the check said OK and notifications' init failed.
    r = evhostd.run(["--check-config"], config={"plugin.notifications": {}})
    default = re.search(r"templates_dir: cannot read '([^']+)' \(its default: set it\)", r.stdout)
    if r.returncode == 0:
        pytest.skip("the default templates_dir exists on this machine")
    assert r.returncode == 1 and default, r.stdout
    assert re.search(r"evhost\.conf:\d+: \[plugin\.notifications\] templates_dir", r.stdout)
    assert not Path(default.group(1)).is_dir()


@pytest.mark.inputs
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_check_config_logs_in_the_configured_format(evhostd, build_dir, fmt):
    """--check-config's log lines (a plugin's own from its check, and the
    host's about a check that refused a plugin not required) follow [log]
    format: they came out as JSON before [log] was applied (stderr is no
    terminal here), whatever it said."""
    r = evhostd.run(["--check-config"], config={
        "log": {"format": fmt},
        "plugin.probe": probe_conf(build_dir, check_note="a line from the check"),
        "plugin.notifications": {"templates_dir": str(TEMPLATES), "transport": "pigeon",
                                 "required": "false"}})
    assert r.returncode == 0 and "configuration OK (1 plugin)" in r.stdout, r.stdout + r.stderr
    note = [x for x in r.stderr.splitlines() if "probe: check: a line from the check" in x]
    skipped = [x for x in r.stderr.splitlines() if "transport: must be smtp or maildir" in x]
    assert len(note) == 1 and len(skipped) == 1, r.stderr
    if fmt == "json":
        assert json.loads(note[0])["component"] == "probe", note
        assert json.loads(skipped[0])["level"] == "warn", skipped
    else:
        assert re.match(r"^\S+ WARN  \[probe\] probe: check: a line from the check$", note[0]), note
        assert re.match(r"^\S+ WARN  \[host\] .*\[plugin.notifications\] transport: ", skipped[0]), \
            skipped
        assert not any(x.startswith("{") for x in r.stderr.splitlines()), r.stderr


def test_a_plugin_built_for_an_old_abi_still_loads(evhostd, build_dir):
    # abi_1_0.so: descriptor 1.0, and in the slot ABI 1.7 calls check (its
    # reserved[0]) a function that refuses everything: not called for it.
    conf = {"plugin.abi10": {"path": str(fixture_dir(build_dir) / "abi_1_0.so")}}
    r = evhostd.run(["--check-config"], config=conf)
    assert r.returncode == 0 and "configuration OK (1 plugin)" in r.stdout, r.stdout + r.stderr
    d = evhostd(conf)
    assert d.get("/abi10").json() == {"abi": "1.0"}


def test_bad_config_at_start_exits_nonzero_with_same_messages(evhostd):
    r = evhostd.run([], dropins={"10-x.conf": "[kafka]\nretry.backoff_ms = soon\n"})
    assert r.returncode == 1
    assert "conf.d/10-x.conf:2:" in r.stderr


def test_later_dropin_overrides_earlier(evhostd, build_dir):
    dropins = {
        "10-a.conf": {"plugin.probe": probe_conf(build_dir, subscribe="false",
                                                 topic="first.topic")},
        "20-b.conf": {"plugin.probe": {"enabled": "false"}},
    }
    d = evhostd(dropins=dropins)
    assert d.get("/probe/seen").status_code == 404


# -------------------------------------------------------------------- HTTP


def test_http_errors_are_problem_json(evhostd, build_dir):
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false"),
                 "http": {"max_body_bytes": "1k"}})
    r = d.get("/nope")
    assert r.status_code == 404
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert r.json()["status"] == 404

    r = d.delete("/probe/seen")
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET, HEAD"  # a GET route answers HEAD too

    # A method civetweb does not know (or TRACE): 501 naming it (RFC 9110
    # 15.6.2), not a bare 400 "Bad request".
    for method in ("FOO", "TRACE"):
        r = requests.request(method, d.url + "/probe/seen", timeout=10)
        assert r.status_code == 501, (method, r.text)
        assert r.json()["type"].endswith("/not-implemented"), r.text
        assert r.json()["detail"] == f"this server does not support the method {method}"
    # A known method refused for something else stays 400; a version civetweb
    # does not speak is 505 with its own type and title.
    for line, status, kind in ((b"GET /probe/seen", 400, "bad-request"),
                               (b"GET /probe/seen HTTP/9.9", 505, "http-version-not-supported")):
        with socket.create_connection(("127.0.0.1", d.port), timeout=10) as c:
            c.sendall(line + b"\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b"}"):
                chunk = c.recv(4096)
                assert chunk, answer
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer
        body = json.loads(answer[answer.index(b"{"):])
        assert body["type"].endswith("/" + kind) and body["status"] == status, body
        assert status != 505 or body["title"] == "HTTP Version Not Supported", body
    # A byte past ASCII in the method: civetweb 1.15 never ends the method
    # there, which then ran to the end of the head, and the access log wrote
    # every header (a bearer token too) and text the client chose.
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as c:
        c.sendall(b"G\xc2\x85T /probe/seen HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer TOPSECRETTOKEN\r\n\r\n")
        answer = b""
        while not answer.endswith(b"}"):
            chunk = c.recv(4096)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    lib.wait_until(lambda: any(" 400 " in x and "Bad request" in x
                               for x in d.log_text().splitlines()),
                   message="the access line of the malformed request")
    assert "TOPSECRET" not in d.log_text() and "Authorization" not in d.log_text(), \
        [x for x in d.log_text().splitlines() if "Bad request" in x]

    r = d.post("/probe/publish", data="{\"a\": [1, 2", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    p = r.json()
    assert p["type"].endswith("malformed-json") and p["detail"]

    r = d.post("/probe/publish", data="x" * 2048, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.headers["Content-Type"].startswith("application/problem+json")

    deep = "[" * 100 + "]" * 100
    r = d.post("/probe/publish", data=deep, headers={"Content-Type": "application/json"})
    assert r.status_code == 400

    # a number no double holds: cJSON would read infinity and write null
    r = d.post("/probe/publish", data='{"price": 1e999}',
               headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    p = r.json()
    assert p["type"].endswith("malformed-json")
    assert p["detail"] == ("the number at byte 10 is beyond the range of a double"
                           " (about 1.8e308)")
    assert d.post("/probe/publish", data='{"price": 1e308}',
                  headers={"Content-Type": "application/json"}).status_code == 200

    # \u0000 is JSON, but the plugin's C string would end there
    r = d.post("/probe/publish", data='{"name": "lamp\\u0000 hidden"}',
               headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["detail"] == "\\u0000 in a string at byte 14 (the string would end there)"

    # bytes that are no JSON text: a raw NUL, invalid UTF-8; and a name twice
    for body, detail in ((b'{"name": "lamp\x00"}', "NUL byte in the JSON body at byte 14"),
                         (b'{"name": "l\xe9mp"}', "invalid UTF-8 at byte 11"),
                         (b'{"a": 1, "a": 2}', 'the member name "a" appears twice in one object'
                          " (parsers disagree on which value counts)"),
                         # cut at 100 bytes where a character begins (byte 100 is in an "é")
                         (('{"a%s": 1, "a%s": 2}' % ("é" * 60, "é" * 60)).encode(),
                          'the member name "a%s" (shortened) appears twice in one object'
                          " (parsers disagree on which value counts)" % ("é" * 49))):
        r = d.post("/probe/publish", data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["detail"] == detail, (body, r.text)
        assert r.json()["type"].endswith("malformed-json"), r.text

    r = d.post("/probe/publish", data="{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


def test_the_hosts_own_headers_are_refused_to_plugins_and_205_has_no_content(evhostd,
                                                                              build_dir):
    # X-Request-Id and Date are the host's, as Content-Length is: a plugin's
    # copy went out beside them (two request ids for the client to quote).
    # A 205 went out with the handler's body: RFC 9110 forbids content, and
    # the client reads none (Content-Length: 0), so the body's bytes were
    # taken for the start of the next answer on the connection.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    for name in ("X-Request-Id", "Date", "x-request-id", "DATE", "Content-Length"):
        r = d.get(f"/probe/status/200?header={name}")
        assert r.headers["X-Probe-Header-Rc"] == "invalid argument", (name, r.headers)
        status, headers, body, _ = raw_exchange(
            d.port, f"GET /probe/status/200?header={name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert "probe" not in headers[name.lower()], (name, headers)
    r = d.get("/probe/status/200?header=X-Custom")
    assert (r.headers["X-Probe-Header-Rc"], r.headers["X-Custom"]) == ("ok", "probe")

    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        s.sendall(b"GET /probe/status/205 HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 205 Reset Content\r\n"), head
        assert b"\r\nContent-Length: 0\r\n" in head + b"\r\n", head
        assert b"Content-Type" not in head, head
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        while b"HTTP/1.1 200" not in rest and len(rest) < 64:
            chunk = s.recv(65536)
            assert chunk, rest
            rest += chunk
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n"), rest


def raw_exchange(port, request, read_until_close=False, timeout=5.0):
    """Send raw request bytes on a fresh socket; return (status line, headers,
    body, closed) for the first response, read by its Content-Length; closed
    (with read_until_close) tells whether the server closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, f"connection closed before a response head: {data!r}"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        length = 0 if request.startswith(b"HEAD ") else int(headers.get("content-length", 0))
        while len(rest) < length:
            chunk = s.recv(65536)
            assert chunk, "connection closed inside the body"
            rest += chunk
        closed = False
        if read_until_close:
            # Ask again on the same connection: a server that closed it sends
            # nothing back (not even after its idle keep-alive timeout, which
            # would make waiting for the close itself prove nothing).
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                closed = s.recv(65536) == b""
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        return lines[0], headers, rest[:length], closed


def test_a_callers_traceparent_with_spaces_around_is_taken_two_are_ignored(evhostd, build_dir):
    # HTTP's optional whitespace around a header's value (civetweb keeps it at
    # the end) is no part of it: the caller's trace goes on. Two traceparent
    # headers are ignored, as W3C says (a new trace), not the first taken.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})

    def trace_of(*values):
        rid = os.urandom(8).hex()
        head = "".join(f"traceparent: {v}\r\n" for v in values)
        with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
            s.sendall(f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: {rid}\r\n{head}"
                      "Connection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data
        d.wait_for_log(f"request_id={rid}", timeout=10)
        line = next(x for x in d.log_text().splitlines() if f"request_id={rid}" in x)
        return re.search(r"trace_id=([0-9a-f]{32})", line).group(1)

    t1, t2 = os.urandom(16).hex(), os.urandom(16).hex()
    assert trace_of(f"00-{t1}-{os.urandom(8).hex()}-01  ") == t1
    assert trace_of(f"00-{t1}-{os.urandom(8).hex()}-01") == t1
    two = trace_of(f"00-{t1}-{os.urandom(8).hex()}-01", f"00-{t2}-{os.urandom(8).hex()}-01")
    assert two not in (t1, t2)


def test_response_framing_and_keep_alive_on_raw_sockets(evhostd, build_dir):
    """evhostd writes the status line and headers itself (one send with a
    small body): the framing, Date and the Connection header must match what
    civetweb then does with the connection."""
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    # Requests on one kept-alive connection, an error among them, each framed
    # by Content-Length.
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
        for path, status in (("/healthz", "200 OK"), ("/nope", "404 Not Found"),
                             ("/healthz", "200 OK")):
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                assert chunk, f"closed after {data!r}"
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            head = head.decode()
            length = int(head.split("Content-Length: ")[1].split("\r\n")[0])
            while len(body) < length:
                body += s.recv(65536)
            assert len(body) == length and json.loads(body)
            assert head.startswith(f"HTTP/1.1 {status}\r\n"), head
            assert "Connection: keep-alive" in head, head
            assert "Date: " in head and "X-Request-Id: " in head
    # HEAD: the GET's headers, no body.
    status, headers, body, _ = raw_exchange(d.port, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == "HTTP/1.1 200 OK" and headers["content-length"] == "15" and body == b""
    # HTTP/1.0 without keep-alive, and a client asking to close: closed after.
    for req in (b"GET /healthz HTTP/1.0\r\n\r\n",
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
        status, headers, body, closed = raw_exchange(d.port, req, read_until_close=True)
        assert status.endswith(" 200 OK") and body == b'{"status":"ok"}'
        assert headers["connection"] == "close" and closed, (req, headers)


def test_a_head_with_64_header_fields_or_more_is_refused_not_cut(evhostd, build_dir):
    # civetweb keeps a head's first 64 header fields and drops the rest: a
    # Content-Length past them framed the message for a proxy in front but
    # not here, and its body was answered as a second request (smuggling).
    # 64 or more are refused with 431 and the connection closed; 63 pass.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})

    def head(pads):
        return "GET /healthz HTTP/1.1\r\nHost: x\r\n" + \
            "".join(f"X-Pad-{i}: a\r\n" for i in range(pads))

    status, _, body, closed = raw_exchange(d.port, (head(62) + "\r\n").encode(),
                                           read_until_close=True)
    assert status == "HTTP/1.1 200 OK" and not closed, (status, body)
    smuggled = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    for pads, tail in ((63, b""),
                       (64, f"Content-Length: {len(smuggled)}\r\n".encode())):
        with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
            s.sendall(head(pads).encode() + tail + b"\r\n" + smuggled)
            data = b""
            while chunk := s.recv(65536):  # to the close: one answer only
                data += chunk
        first, _, rest = data.partition(b"\r\n\r\n")
        assert first.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), data
        assert b"\r\nConnection: close" in first, first
        problem = json.loads(rest)
        assert problem["detail"] == "64 header fields or more; this server takes at most 63"
        assert problem["type"].endswith("/headers-too-large"), problem
        assert data.count(b"HTTP/1.1 ") == 1, data  # the smuggled GET not answered


def one_response(s):
    """Read one response (framed by Content-Length) from socket s: its head
    as text, or None when the server closed the connection first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            assert not data, f"closed inside a response head: {data!r}"
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    head = head.decode("latin-1")
    length = int(head.lower().split("content-length: ")[1].split("\r\n")[0])
    while len(body) < length:
        chunk = s.recv(65536)
        assert chunk, "closed inside a body"
        body += chunk
    return head


def ask_after_idle(port, idle_s):
    """One request, idle_s seconds of silence, then a second request on the
    same connection: the heads of both answers (the second None when the
    server had closed the connection meanwhile)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = one_response(s)
        time.sleep(idle_s)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            second = one_response(s)
        except (BrokenPipeError, ConnectionResetError):
            second = None
        return first, second


def test_keep_alive_timeout_sets_how_long_an_idle_connection_is_kept(evhostd, build_dir):
    # A reverse proxy that keeps upstream connections open (nginx's
    # keepalive) must close them before evhostd does, or a request it sends
    # just as evhostd closes fails; [http] keep_alive_timeout is evhostd's side.
    conf = probe_conf(build_dir, subscribe="false")
    d = evhostd({"plugin.probe": conf})  # the default: 500 ms
    first, second = ask_after_idle(d.port, 0.1)
    assert "Connection: keep-alive" in first and second.startswith("HTTP/1.1 200 "), second
    first, second = ask_after_idle(d.port, 1.5)
    assert "Connection: keep-alive" in first and second is None, second
    d.stop()

    d = evhostd({"http": {"keep_alive_timeout": "4s"}, "plugin.probe": conf})
    first, second = ask_after_idle(d.port, 1.5)
    assert second is not None and second.startswith("HTTP/1.1 200 "), second
    assert "Connection: keep-alive" in second
    d.stop()

    # 0: no keep-alive; every answer says so and the connection is closed.
    d = evhostd({"http": {"keep_alive_timeout": "0"}, "plugin.probe": conf})
    first, second = ask_after_idle(d.port, 0)
    assert first.startswith("HTTP/1.1 200 ") and "Connection: close" in first, first
    assert second is None
    assert d.get("/healthz").status_code == 200


def test_a_head_civetweb_refuses_is_answered_logged_and_counted(evhostd):
    """civetweb refuses a head over [http] max_head_bytes (16 KB), or one
    that is not HTTP, before evhostd sees the request: still a problem+json
    answer that says what may be wrong (civetweb 1.15 says "Malformed
    message" of all three), a line in the access log, and a count on
    /metrics."""
    d = evhostd()
    heads = [b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 17000 + b"\r\n\r\n",
             b"GET /healthz?" + b"q" * 17000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
             b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"]  # TLS to plain HTTP
    for head in heads:
        status, headers, body, closed = raw_exchange(d.port, head, read_until_close=True)
        assert status == "HTTP/1.1 400 Bad Request", (head[:40], status)
        assert headers["content-type"] == "application/problem+json" and closed
        problem = json.loads(body)
        assert problem["detail"] == ("the request's head was malformed, larger than 16384 "
                                     "bytes ([http] max_head_bytes: the request line and "
                                     "headers), or incomplete at [http] request_timeout"), problem
    lines = [ln for ln in d.log_text().splitlines()
             if "[http] - - 400 " in ln and "from 127.0.0.1: the request's head was" in ln]
    assert len(lines) == 3 and all("request_id=" in ln for ln in lines), d.log_tail()
    # Just below the limit, the same head is served.
    ok = b"GET /healthz HTTP/1.1\r\nHost: x\r\nCookie: " + b"c" * 16000 + b"\r\n\r\n"
    assert raw_exchange(d.port, ok)[0] == "HTTP/1.1 200 OK"
    text = d.get("/metrics").text
    counted = [ln for ln in text.splitlines() if ln.startswith("evhost_http_requests_total{")
               and all(f'{k}="{v}"' in ln for k, v in (("plugin", ""), ("route", "unmatched"),
                                                      ("method", "other"), ("status", "400")))]
    assert len(counted) == 1 and counted[0].endswith(" 3"), text
    # When they began is civetweb's: no duration observed (not 0 s).
    assert 'evhost_http_request_duration_seconds_count{plugin="",route="unmatched",' \
           'method="other"}' not in text, text
    d.stop()

    # A larger limit (large tokens or cookies) takes the 17 KB head.
    d = evhostd({"http": {"max_head_bytes": "32K"}})
    assert raw_exchange(d.port, heads[0])[0] == "HTTP/1.1 200 OK"
    status, _, body, _ = raw_exchange(d.port, heads[0].replace(b"c" * 17000, b"c" * 33000))
    assert status == "HTTP/1.1 400 Bad Request" and b"larger than 32768 bytes" in body, body


def test_absolute_form_request_targets_are_served(evhostd, build_dir):
    """RFC 9112 3.2.2: a server must accept `GET http://host:port/path`.
    civetweb 1.15 serves it only when the port is the one the connection
    came in on, and by default only when the host is its
    authentication_domain ("mydomain.com"), closing the connection without
    a word otherwise: evhostd turns that check off, so the path is served
    whatever host the target names (the Host header is ignored, as RFC
    asks)."""
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    for target, status in ((f"http://127.0.0.1:{d.port}/healthz", "200 OK"),
                           (f"HTTP://api.example.com:{d.port}/healthz?x=1", "200 OK"),
                           (f"http://localhost:{d.port}/probe/status/201", "201 Created"),
                           (f"http://127.0.0.1:{d.port}/nope", "404 Not Found")):
        head = f"GET {target} HTTP/1.1\r\nHost: other.example\r\n\r\n".encode()
        line, headers, body, closed = raw_exchange(d.port, head, read_until_close=True)
        assert line == f"HTTP/1.1 {status}", (target, line)
        assert headers["connection"] == "keep-alive" and not closed, (target, headers)
        if status == "200 OK":
            assert body == b'{"status":"ok"}', body
    assert "GET /probe/status/201 201 " in d.log_text(), d.log_tail()
    # Another port than the connection's (a port-mapping proxy in front, or
    # a client that took evhostd for a forward proxy): civetweb 1.15 closes
    # the connection in process_new_connection before any callback, so
    # evhostd cannot answer (docs/operations.md). If this starts to fail, the
    # installed civetweb answers these now: update the docs with the test.
    for target in ("http://example.com/healthz", f"http://127.0.0.1:{d.port + 1}/healthz"):
        with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
            s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert s.recv(65536) == b"", target


def expect_refused_head(d, head, detail):
    """`head` on a connection of its own is a 400 problem+json whose detail
    is `detail`, and the connection is closed (nothing after the head, a
    second request included, is answered)."""
    line, headers, body, closed = raw_exchange(d.port, head, read_until_close=True)
    assert line == "HTTP/1.1 400 Bad Request", (head, line, body)
    assert headers["content-type"] == "application/problem+json", headers
    problem = json.loads(body)
    assert problem["type"].endswith("/bad-request") and problem["status"] == 400, problem
    assert problem["detail"] == detail, (head, problem)
    assert headers["connection"] == "close" and closed, (head, headers)


def test_a_nul_byte_in_the_head_is_a_400(evhostd):
    """civetweb 1.15 refuses any control character in a head but CR, LF and
    TAB (get_http_header_len, "Malformed message"): the same 400 as for the
    other heads it cannot read, whichever part holds the NUL."""
    d = evhostd()
    detail = ("the request's head was malformed, larger than 16384 bytes ([http] "
              "max_head_bytes: the request line and headers), or incomplete at [http] "
              "request_timeout")
    for head in (b"GET /hea\x00lthz HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"\x00GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"GET /healthz HTTP/1.1\x00\r\nHost: x\r\n\r\n",
                 b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"):
        expect_refused_head(d, head, detail)


def test_a_content_length_that_is_not_a_length_is_a_400_naming_it(evhostd):
    """RFC 9112 6.3: an invalid Content-Length is a 400 and the connection
    closed (a proxy in front may have framed the message otherwise). civetweb
    1.15 answers a negative or empty one itself, with 411 Length Required;
    evhostd answers those as it does the rest, which reach its handler."""
    d = evhostd()
    smuggled = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
    for value, detail in ((b"-1", "Content-Length: -1 is not a length"),
                          (b"-0", "Content-Length: -0 is not a length"),
                          (b"", "an empty Content-Length is not a length"),
                          (b"1x", "Content-Length: 1x is not a length"),
                          (b"+1", "Content-Length: +1 is not a length"),
                          (b"1, 1", "Content-Length: 1, 1 is not a length")):
        for method in (b"POST", b"GET", b"PUT"):
            head = (method + b" /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: " + value +
                    b"\r\n\r\nx" + smuggled)
            expect_refused_head(d, head, detail)
    expect_refused_head(d, b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                           b"Content-Length: 2\r\n\r\nxy" + smuggled,
                        "two different Content-Length headers")
    expect_refused_head(d, b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n"
                           b"Content-Length: 2\r\n\r\nxy" + smuggled,
                        "Content-Length: -1 is not a length")
    # in the access log as civetweb's other refusals are (no path: civetweb
    # refused the request before it had one)
    assert re.search(
        r"\] POST - 400 \d+ bytes, from 127\.0\.0\.1: Content-Length: -1 is not a length ",
        d.log_text()), d.log_tail()


def http_gauge(d, name):
    """The value of the unlabelled gauge `name` on d's /metrics (a scrape
    whose own connection holds a worker while it is answered)."""
    m = re.search(rf"^{name} (\d+)$", d.get("/metrics").text, re.M)
    assert m, name
    return int(m.group(1))


def test_connections_holding_workers_are_on_metrics(evhostd):
    # civetweb gives each open connection a worker: evhost_http_connections
    # against evhost_http_threads says how close the service is to making new
    # clients wait, whatever holds the workers (idle or kept-alive clients,
    # slow requests, streams).
    d = evhostd({"http": {"threads": 6, "keep_alive_timeout": "10s"}})
    assert http_gauge(d, "evhost_http_threads") == 6
    lib.wait_until(lambda: http_gauge(d, "evhost_http_connections") == 1, timeout=10,
                   message="only the scrape's own connection")
    idle = [socket.create_connection(("127.0.0.1", d.port), timeout=10) for _ in range(2)]
    kept = socket.create_connection(("127.0.0.1", d.port), timeout=10)
    try:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200 ")  # then kept alive, idle
        lib.wait_until(lambda: http_gauge(d, "evhost_http_connections") == 4, timeout=10,
                       message="2 idle, 1 kept alive and the scrape")
    finally:
        for s in idle + [kept]:
            s.close()
    lib.wait_until(lambda: http_gauge(d, "evhost_http_connections") == 1, timeout=10,
                   message="the closed connections to let their workers go")


def test_idle_connections_free_their_workers_after_request_timeout(evhostd, build_dir):
    # civetweb gives each connection a worker: as many idle connections as
    # there are workers would stop the service until [http] request_timeout
    # frees them (30 s before it was a setting; 10 s by default now).
    d = evhostd({"http": {"threads": 4, "request_timeout": "2s"},
                 "plugin.probe": probe_conf(build_dir, subscribe="false")})
    idle = [socket.create_connection(("127.0.0.1", d.port), timeout=10) for _ in range(6)]
    try:
        idle[0].sendall(b"GET /healthz HTTP/1.1\r\nHo")  # a head that never ends
        # served once the timeout frees a worker (with the old fixed 30 s, the
        # client gives up first)
        assert d.get("/healthz", timeout=15).status_code == 200
        # told, or closed by the server, not left for the client to give up on
        assert idle[0].recv(100).startswith(b"HTTP/1.1 400 ")  # civetweb: timed out
        assert idle[1].recv(100) == b""
    finally:
        for s in idle:
            s.close()


def recv_problem(c):
    """A whole answer with a problem+json body from socket `c` (its "}")."""
    answer = b""
    while b"}" not in answer:
        chunk = c.recv(4096)
        assert chunk, answer
        answer += chunk
    return answer


def test_a_body_that_stops_short_is_said_to_have_timed_out(evhostd, build_dir):
    # civetweb waits request_timeout for the rest of a read: the next read
    # waited as long again, and the 400 blamed a closed connection that was
    # still open.
    d = evhostd({"http": {"request_timeout": "1s"},
                 "plugin.probe": probe_conf(build_dir, subscribe="false")})
    for head, part, said in (
            (b"Content-Length: 100", b'{"n": 1}', "after 8 of 100 bytes"),
            (b"Transfer-Encoding: chunked", b"3\r\n{}\n", "after ")):
        with socket.create_connection(("127.0.0.1", d.port), timeout=30) as c:
            c.sendall(b"POST /probe/publish?mode=notx HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/json\r\n" + head + b"\r\n\r\n" + part)
            answer = recv_problem(c)
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        detail = json.loads(answer[answer.index(b"{"):])["detail"]
        assert said in detail and detail.endswith(
            "nothing more came within [http] request_timeout (1000 ms)"), detail


def test_a_body_trickled_slower_than_a_kib_a_second_is_cut_at_its_time(evhostd, build_dir):
    # request_timeout bounds each wait for a body's next bytes, and civetweb's
    # read returns only once all it was asked for came: a byte every 0.3 s
    # (no wait near the 1 s timeout) held the worker for as long as the
    # client liked. A body has request_timeout, then a second per 1024 bytes
    # of its length: 1 s + 2 s here.
    d = evhostd({"http": {"request_timeout": "1s"},
                 "plugin.probe": probe_conf(build_dir, subscribe="false")})
    with socket.create_connection(("127.0.0.1", d.port), timeout=30) as c:
        c.sendall(b"POST /probe/publish?mode=notx HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 2048\r\n\r\n")
        c.settimeout(0.3)
        answer = b""
        for _ in range(100):  # 30 s at most: the cut comes after about 3
            try:
                c.sendall(b" ")
            except OSError:  # the server closed it: its answer is in
                pass
            try:
                chunk = c.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                break
            answer += chunk
            if b"}" in answer:
                break
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    detail = json.loads(answer[answer.index(b"{"):])["detail"]
    assert re.fullmatch(r"the body did not come whole in time: \d+ of 2048 bytes came within "
                        r"3000 ms \(\[http\] request_timeout, then a second for each 1024 bytes "
                        r"it may have\)", detail), detail
    assert d.get("/healthz").status_code == 200


def test_a_chunked_body_trickled_past_request_timeout_is_taken_whole(evhostd, build_dir):
    # Chunks 0.3 s apart, the whole body over more than [http]
    # request_timeout (1 s), none of the waits near it: civetweb hands the
    # read over when the last chunk comes, short of what was asked, after
    # most of the timeout. That ended a body, not stopped one: it was
    # refused as stalled (400 "the body stopped after 9 bytes").
    d = evhostd({"http": {"request_timeout": "1s"},
                 "plugin.probe": probe_conf(build_dir, subscribe="false")})
    with socket.create_connection(("127.0.0.1", d.port), timeout=30) as c:
        c.sendall(b"POST /probe/publish?mode=notx HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for part in (b'{"n"', b": 1", b', "m"', b": 2", b"}"):
            time.sleep(0.3)
            c.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        time.sleep(0.3)
        c.sendall(b"0\r\n\r\n")
        head = one_response(c)
    assert head and head.startswith("HTTP/1.1 200 "), head


def test_kafka_unreachable_is_said_at_start_and_probes_do_not_hold_workers(evhostd):
    # No broker listens. The start says so after "ready:" (librdkafka's own
    # lines name a broker, not what that means here). While no broker
    # answers, each look at the cluster waits 2 s: one /readyz probe asks at
    # a time, the others get the last answer at once. Before, each probe
    # held a worker 2 s: eight of them on two workers, the last was answered
    # after 8 s, past the client's 5 s.
    down = f"127.0.0.1:{lib.free_port()}"
    d = evhostd({"http": {"threads": 2}}, brokers=down)
    d.wait_for_log(f"kafka: no broker of {down} answered within 1000 ms: events wait in the "
                   "plugins' outboxes", timeout=30)
    assert d.log_text().index(" ready: ") < d.log_text().index("kafka: no broker of")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        probes = [pool.submit(d.get, "/readyz", timeout=5) for _ in range(8)]
        answers = [f.result(30) for f in probes]
    for r in answers:
        assert r.status_code == 503, r.text
        assert r.json()["kafka"] == "unreachable", r.text
    assert d.get("/healthz", timeout=5).status_code == 200


def test_one_plugins_slow_requests_leave_workers_for_the_rest(evhostd, build_dir):
    # [http] max_plugin_requests = 2 of 4 workers: with two of the probe's
    # requests asleep in its handler, a third is refused at once (503, said
    # once at WARN) instead of taking a worker; hello's routes, /healthz and
    # /readyz are answered meanwhile, and the probe's requests once a slot is
    # free. Without the limit, slow routes of one plugin took every worker.
    d = evhostd({"http": {"threads": 4, "max_plugin_requests": 2},
                 "plugin.probe": probe_conf(build_dir, subscribe="false"),
                 "plugin.hello": {"path": str(build_dir / "plugins" / "hello.so")}})
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(d.post, "/probe/publish?mode=notx&sleep_ms=4000", json={"n": i},
                            timeout=30) for i in range(2)]
        lib.wait_until(lambda: d.log_text().count("probe: sleeping 4000 ms") == 2, timeout=10,
                       message="both slow requests in the probe's handler")
        for _ in range(2):
            r = d.post("/probe/publish?mode=notx", json={"n": 9}, timeout=5)
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] == "1"
            assert r.json()["detail"] == ("service 'probe' is serving as many requests as it "
                                          "may at once; try again"), r.text
        assert d.get("/hello", timeout=5).status_code == 200
        assert d.get("/healthz", timeout=5).status_code == 200
        assert d.get("/readyz", timeout=5).status_code == 200
        metrics = d.get("/metrics", timeout=5).text
        assert 'evhost_plugin_http_requests_in_flight{plugin="probe"} 2\n' in metrics
        assert 'evhost_plugin_http_requests_in_flight{plugin="hello"} 0\n' in metrics
        assert [f.result(30).status_code for f in slow] == [200, 200]
    assert d.post("/probe/publish?mode=notx", json={"n": 3}, timeout=5).status_code == 200
    assert 'evhost_plugin_http_requests_in_flight{plugin="probe"} 0\n' in d.get("/metrics").text
    lines = [x for x in d.log_text().splitlines() if "max_plugin_requests" in x]
    assert len(lines) == 1 and " WARN " in lines[0], lines  # once a minute at most
    assert "POST /probe/publish: plugin 'probe' is serving 2 requests already" in lines[0]


def test_max_plugin_requests_must_leave_a_worker_free(evhostd):
    r = evhostd.run(["--check-config"], config={"http": {"threads": 4,
                                                         "max_plugin_requests": 4}})
    assert r.returncode != 0
    lines = [x for x in (r.stdout + r.stderr).splitlines() if "max_plugin_requests" in x]
    assert lines and re.search(r"evhost\.conf:\d+: \[http\] max_plugin_requests \(4\) must be "
                               r"below threads \(4\)", lines[0]), lines
    r = evhostd.run(["--check-config"], config={"http": {"max_plugin_requests": -1}})
    assert r.returncode != 0 and "max_plugin_requests" in r.stdout + r.stderr
    r = evhostd.run(["--check-config"], config={"http": {"threads": 4,
                                                         "max_plugin_requests": 3}})
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------ SDK install


def test_configures_without_the_tests(tmp_path):
    # -DBUILD_TESTING=OFF (CTest's switch; debhelper passes it for nocheck)
    # builds the daemon, the SDK and the plugins alone: the configure step
    # failed, on test targets that depend on modules made only for testing.
    build = tmp_path / "build"
    r = subprocess.run(["cmake", "-S", str(lib.REPO_ROOT), "-B", str(build), "-DBUILD_TESTING=OFF",
                        "-DEVHOST_BENCH=OFF"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["cmake", "--build", str(build), "--target", "help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    targets = r.stdout
    for wanted in ("evhostd", "evhostctl", "user", "crud", "notifications"):
        assert re.search(rf"^\.\.\. {wanted}\b", targets, re.M), (wanted, targets)
    assert "test_store" not in targets and "_faults" not in targets, targets


@pytest.mark.inputs
@pytest.mark.parametrize("prefix", ["/usr", "/usr/local", "/opt/evtest"])
def test_the_configuration_installs_where_the_daemon_looks(tmp_path, prefix):
    # The configuration files install into the directory of the default
    # configuration file compiled into evhostd. Under /opt/NAME they went to
    # /opt/NAME/etc/evhost, the daemon looking in /etc/opt/NAME/evhost
    # (GNUInstallDirs), and it did not start.
    build = tmp_path / "build"
    r = subprocess.run(["cmake", "-S", str(lib.REPO_ROOT), "-B", str(build), "-DBUILD_TESTING=OFF",
                        "-DEVHOST_BENCH=OFF", f"-DCMAKE_INSTALL_PREFIX={prefix}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    flags = (build / "host" / "CMakeFiles" / "evhostd.dir" / "flags.make").read_text()
    compiled = re.search(r'EVHOST_DEFAULT_CONF=\\"([^"\\]+)\\"', flags).group(1)
    dest = re.search(r'set\(EVHOST_CONF_DEST "([^"]+)"\)',
                     (build / "cmake_install.cmake").read_text()).group(1)
    assert os.path.join(prefix, dest) == os.path.dirname(compiled), (dest, compiled)
    if prefix == "/usr/local":
        # Relative: `cmake --install --prefix DIR` stays in DIR.
        assert dest == "etc/evhost"


def test_example_plugin_builds_against_installed_sdk(evhostd, build_dir, tmp_path):
    prefix = tmp_path / "prefix"
    r = subprocess.run(["cmake", "--install", str(build_dir), "--prefix", str(prefix)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (prefix / "include" / "evhost" / "evhost.h").exists()
    pcdir = next(prefix.glob("lib*/**/pkgconfig"), prefix / "lib" / "pkgconfig")  # <libdir>
    assert (pcdir / "evhost-sdk.pc").exists()
    src = prefix / "share" / "doc" / "evhost-dev" / "examples" / "hello" / "hello.c"
    assert src.exists()

    env = dict(os.environ, PKG_CONFIG_PATH=str(pcdir))
    cflags = subprocess.run(["pkg-config", "--cflags", "evhost-sdk"], env=env,
                            capture_output=True, text=True, check=True).stdout.split()
    out = tmp_path / "hello.so"
    # The README's command, plus warnings as errors.
    r = subprocess.run(["cc", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
                        "-Wl,--no-undefined", str(src), *cflags, "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr

    d = evhostd({"plugin.hello": {"path": str(out), "topic": "hello.events"}})
    r = d.get("/hello")
    assert r.status_code == 200
    assert r.json() == {"hello": "world", "greeted": 1}
    assert d.get("/hello/ada").json() == {"hello": "ada", "greeted": 1}
    assert d.get("/hello/ada").json()["greeted"] == 2
    # Its own metric, on the host's /metrics.
    assert "\nhello_greetings_total{plugin=\"hello\"} 3\n" in d.get("/metrics").text


def test_a_second_source_install_keeps_the_admins_configuration(build_dir, tmp_path):
    # `cmake --install` again (a rebuild, an upgrade from source) replaced
    # evhost.conf and the shipped drop-ins: a service the admin disabled in
    # its drop-in came back on. An edited file is kept, the shipped one put
    # beside it as FILE.dist (never read: conf.d takes *.conf); an unedited
    # one is left as it is; a removed one is installed again.
    prefix = tmp_path / "prefix"

    def install():
        r = subprocess.run(["cmake", "--install", str(build_dir), "--prefix", str(prefix)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    install()
    conf = prefix / "etc" / "evhost"
    shipped = lib.REPO_ROOT / "conf.d"
    assert (conf / "evhost.conf").read_text() == (shipped / "evhost.conf").read_text()
    crud = conf / "conf.d" / "20-crud.conf"
    edited = crud.read_text().replace("enabled = true", "enabled = false")
    assert edited != crud.read_text()
    crud.write_text(edited)
    (conf / "evhost.conf").write_text((shipped / "evhost.conf").read_text() + "# mine\n")
    (conf / "conf.d" / "30-notifications.conf").unlink()

    out = install()
    assert crud.read_text() == edited
    assert (conf / "evhost.conf").read_text().endswith("# mine\n")
    assert (conf / "conf.d" / "20-crud.conf.dist").read_text() == \
        (shipped / "20-crud.conf").read_text()
    assert (conf / "evhost.conf.dist").read_text() == (shipped / "evhost.conf").read_text()
    assert not (conf / "conf.d" / "10-user.conf.dist").exists()
    assert (conf / "conf.d" / "30-notifications.conf").read_text() == \
        (shipped / "30-notifications.conf").read_text()
    assert f"Keeping: {crud}: it differs from the one this version ships" in out, out
    assert f"Up-to-date: {conf / 'conf.d' / '10-user.conf'}" in out, out


CXX_PLUGIN = r"""
// A plugin written in C++: EVH_PLUGIN must give its entry C linkage.
#include <evhost/evhost.h>

#include <string>

namespace {

const evh_config_key cxx_config[] = {
    {"greeting", EVH_CFG_STRING, "hi", 0, "what to say"},
    {nullptr, EVH_CFG_STRING, nullptr, 0, nullptr},
};

struct state {
    std::string body;
};

int greet(evh_request *, evh_response *resp, void *ud)
{
    const std::string &body = static_cast<state *>(ud)->body;
    return evh_resp_json(resp, 200, body.data(), body.size());
}

const evh_migration cxx_migrations[] = {{1, "CREATE TABLE said (what TEXT, n INTEGER)"}};

// The value macros (EVH_TEXT, EVH_INT...) in C++: no compound literals.
int remember(evh_plugin *p, const char *what)
{
    evh_tx *tx = nullptr;
    int rc = evh_migrate(p, cxx_migrations, 1);
    if (rc == EVH_OK)
        rc = evh_tx_begin(p, &tx);
    if (rc != EVH_OK)
        return rc;
    evh_value args[] = {EVH_TEXT(what), EVH_INT(1), EVH_NULL(), EVH_REAL(0.5)};
    rc = evh_exec(tx, "INSERT INTO said (what, n) SELECT ?, ? + coalesce(?, 0) + ?", args, 4,
                  nullptr);
    if (rc != EVH_OK) {
        evh_tx_rollback(tx);
        return rc;
    }
    return evh_tx_commit(tx);
}

int cxx_init(evh_plugin *p, void **out)
{
    state *s = new state{std::string("{\"greeting\":\"") + evh_config_str(p, "greeting") +
                         "\",\"lang\":\"c++\"}"};
    *out = s;
    int rc = remember(p, evh_config_str(p, "greeting"));
    return rc != EVH_OK ? rc : evh_http_route(p, "GET", "/cxx", greet, s);
}

void cxx_fini(evh_plugin *, void *st) { delete static_cast<state *>(st); }

} // namespace

EVH_PLUGIN("cxx", "1.0.0", "a C++ plugin", cxx_config, cxx_init, cxx_fini)
"""


def test_cxx_plugin_builds_exports_a_c_entry_and_loads(evhostd, tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if not cxx:
        pytest.skip("no C++ compiler (g++) is installed")
    src = tmp_path / "cxx.cpp"
    src.write_text(CXX_PLUGIN)
    out = tmp_path / "cxx.so"
    r = subprocess.run([cxx, "-std=c++17", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
                        "-pedantic", "-Wold-style-cast",
                        "-Wl,--no-undefined", f"-I{lib.REPO_ROOT / 'sdk' / 'include'}",
                        str(src), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    # clang++ too, whose -Wold-style-cast also reads the header's inline
    # functions (a C cast there failed a -Werror build, where g++ said nothing).
    if shutil.which("clang++"):
        r = subprocess.run(["clang++", "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra",
                            "-Werror", "-pedantic", "-Wold-style-cast",
                            f"-I{lib.REPO_ROOT / 'sdk' / 'include'}", str(src)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    if shutil.which("nm"):
        syms = subprocess.run(["nm", "-D", "--defined-only", str(out)], capture_output=True,
                              text=True, check=True).stdout.split()
        assert "evh_plugin_entry_v1" in syms, syms
        assert not [s for s in syms if "evh_plugin_entry" in s and s.startswith("_Z")], syms

    d = evhostd({"plugin.cxx": {"path": str(out), "greeting": "hallo"}})
    r = d.get("/cxx")
    assert r.status_code == 200, r.text
    assert r.json() == {"greeting": "hallo", "lang": "c++"}
    d.stop()
    db = sqlite3.connect(d.state_dir / "cxx.db")
    try:
        assert db.execute("SELECT what, n FROM said").fetchall() == [("hallo", 1.5)]
    finally:
        db.close()


CHECK_MISUSE_PLUGIN = r"""
#include <evhost/evhost.h>
static const evh_config_key cfg[] = {{NULL, EVH_CFG_STRING, NULL, 0, NULL}};
static const evh_migration mig[] = {{1, "CREATE TABLE t(x);"}};
static int chk(evh_plugin *p)
{
	evh_tx *tx = NULL;
	int b = evh_tx_begin(p, &tx), m = evh_migrate(p, mig, 1);
	int pub = evh_publish(p, NULL, "t", "k", "T", "{}", 2);
	evh_log(p, EVH_LOG_WARN, "in check: tx_begin %d migrate %d publish %d", b, m, pub);
	return EVH_OK;
}
static int ini(evh_plugin *p, void **s) { (void)p; (void)s; return EVH_OK; }
static void fin(evh_plugin *p, void *s) { (void)p; (void)s; }
EVH_PLUGIN_CHECKED("misuse", "1.0", "storage calls in check", cfg, chk, ini, fin)
"""


def test_storage_calls_in_check_are_refused_with_estate(evhostd, tmp_path):
    """sdk.md: check may not touch storage; evh_tx_begin, evh_migrate and
    evh_publish all answer EVH_ESTATE (-9) there (evh_tx_begin said EVH_EINVAL)."""
    src = tmp_path / "misuse.c"
    src.write_text(CHECK_MISUSE_PLUGIN)
    out = tmp_path / "misuse.so"
    r = subprocess.run(["cc", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
                        f"-I{lib.REPO_ROOT / 'sdk' / 'include'}", str(src), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = evhostd.run(["--check-config"], {"plugin.misuse": {"path": str(out)}})
    assert r.returncode == 0, r.stderr
    assert "in check: tx_begin -9 migrate -9 publish -9" in r.stderr, r.stderr


# ------------------------------------------------- events through real Kafka


def published_seen(d, n, timeout=30):
    def ready():
        rows = d.get("/probe/seen").json()
        return rows if len(rows) >= n else None
    return lib.wait_until(ready, timeout=timeout, message=f"probe saw fewer than {n} events")


def test_event_published_in_tx_reaches_subscriber_on_real_kafka(evhostd, build_dir,
                                                                 kafka_bootstrap, unique_name):
    topic = unique_name("probe")
    d = evhostd({"plugin.probe": probe_conf(build_dir, topic=topic, group=unique_name("g"))},
                brokers=kafka_bootstrap)
    r = d.post(f"/probe/publish?key=order-7", json={"order": 7, "total": 12.5})
    assert r.status_code == 200, r.text
    rows = published_seen(d, 1)
    ev = rows[0]
    assert ev["type"] == "probe.event"
    assert ev["key"] == "order-7"
    assert ev["data"] == {"order": 7, "total": 12.5}
    assert ev["source"].endswith("/probe")
    assert ev["traceparent"].startswith("00-")

    # The same message as a client that is not evhostd sees it.
    msgs = lib.kafka_consume(topic, count=1, timeout=20, brokers=kafka_bootstrap)
    assert len(msgs) == 1
    m = msgs[0]
    assert m["key"] == "order-7"
    assert m["value"] == '{"order": 7, "total": 12.5}' or m["value"] == '{"order":7,"total":12.5}'
    h = m["headers"]
    assert h["ce_specversion"] == "1.0"
    assert h["ce_type"] == "probe.event"
    assert h["ce_id"] == ev["event_id"]
    assert h["ce_source"].endswith("/probe")
    assert "T" in h["ce_time"] and h["ce_time"].endswith("Z")
    assert h["content-type"] == "application/json"
    # No traceparent on the request: the request started the trace, whose id
    # is its request id; the event carries it with a span id of its own.
    assert h["traceparent"] == ev["traceparent"]
    assert h["traceparent"].split("-")[1] == r.headers["X-Request-Id"]

    # A caller's traceparent: the event continues the caller's trace. With
    # [tracing] off evhost records no span, so the event names the caller's
    # span as its parent (test_tracing.py: with tracing on, its create span).
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = d.post("/probe/publish?key=order-8", json={"order": 8},
               headers={"traceparent": caller})
    assert r.status_code == 200, r.text
    ev = [e for e in published_seen(d, 2) if e["key"] == "order-8"][0]
    assert ev["traceparent"] == caller
    assert f"trace_id=4bf92f3577b34da6a3ce929d0e0e4736" in d.log_text() or \
        '"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"' in d.log_text()

    # A caller's request id that cannot be a trace id, and no traceparent: the
    # request starts a new trace, which its log lines and its event share.
    r = d.post("/probe/publish?key=order-9", json={"order": 9},
               headers={"X-Request-Id": "checkout-9"})
    assert r.status_code == 200, r.text
    assert r.headers["X-Request-Id"] == "checkout-9"
    ev = [e for e in published_seen(d, 3) if e["key"] == "order-9"][0]
    trace = ev["traceparent"].split("-")[1]
    assert re.fullmatch(r"[0-9a-f]{32}", trace) and trace != "0" * 32
    lines = [l for l in d.log_text().splitlines() if "checkout-9" in l]
    assert lines and all(trace in l for l in lines), (trace, lines)
    # The access log line, with the peer's address, is one of them.
    lib.wait_until(lambda: any("POST /probe/publish 200 " in l and ", from 127.0.0.1" in l
                               for l in d.log_text().splitlines() if "checkout-9" in l),
                   timeout=10, message="the access log line of checkout-9")

    # An upper-case traceparent (W3C asks for lower case) is the same trace.
    r = d.post("/probe/publish?key=order-10", json={"order": 10},
               headers={"traceparent": caller.upper()})
    assert r.status_code == 200, r.text
    ev = [e for e in published_seen(d, 4) if e["key"] == "order-10"][0]
    assert ev["traceparent"].split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_full_producer_queue_holds_the_relay_back_and_loses_nothing(evhostd, build_dir,
                                                                     kafka_bootstrap,
                                                                     unique_name):
    # librdkafka's local queue at 10 messages: the relay finds it full again
    # and again, waits for deliveries to drain it and goes on. Each of 3000
    # events on one key is handled once, in the order published.
    topic = unique_name("qfull")
    d = evhostd({"kafka": {"rdkafka.queue.buffering.max.messages": 10},
                 "plugin.probe": probe_conf(build_dir, topic=topic, group=unique_name("g"))},
                brokers=kafka_bootstrap)
    for _ in range(3):
        assert d.post("/probe/publish?key=q&n=1000", json={"x": 1}).status_code == 200
    seen = published_seen(d, 3000, timeout=120)
    db = sqlite3.connect(str(Path(d.state_dir) / "probe.db"), timeout=30)
    try:
        published = [r[0] for r in db.execute("SELECT id FROM evh_log ORDER BY seq")]
    finally:
        db.close()
    assert len(seen) == 3000 and [e["event_id"] for e in seen] == published
    # Delivered rows leave the outbox once the relay records their delivery:
    # a second later when the consumer's transaction held the database (an
    # ASan run checked at once and found 1003 still there).
    lib.wait_until(lambda: lib.count_rows(d.state_dir, "probe", "evh_outbox") == 0,
                   timeout=30, message="the outbox emptied")


def test_rolled_back_transaction_publishes_nothing(evhostd, build_dir, kafka_bootstrap,
                                                  unique_name):
    topic = unique_name("probe")
    d = evhostd({"plugin.probe": probe_conf(build_dir, topic=topic, group=unique_name("g"))},
                brokers=kafka_bootstrap)
    r = d.post("/probe/publish?mode=rollback&n=3", json={"ghost": True})
    assert r.status_code == 200
    r = d.post("/probe/publish?mode=commit", json={"marker": True})
    assert r.status_code == 200
    rows = published_seen(d, 1)
    time.sleep(1.0)  # give any wrongly sent ghost time to show up
    rows = d.get("/probe/seen").json()
    assert [r["data"] for r in rows] == [{"marker": True}]
    msgs = lib.kafka_consume(topic, timeout=15, brokers=kafka_bootstrap)
    assert [m["value"] for m in msgs] == ['{"marker": true}']


def test_a_full_outbox_is_said_once_not_per_refused_request(evhostd, build_dir):
    """A burst of writes refused at [store] outbox_max_rows (no broker to
    drain the outboxes) is said in one line per plugin, the store's, naming
    the database and the bound: not a line per request from the host (a
    plugin returning EVH_EFULL for the host to answer: the probe with
    host_answers=1) nor from the bundled plugins (crud, user: they answer
    the 503 themselves). Every request is still answered 503 with
    Retry-After."""
    d = evhostd({"store": {"outbox_max_rows": 2}, "host": {"stop_timeout": "2s"},
                 "plugin.probe": probe_conf(build_dir, subscribe="false"),
                 "plugin.crud": {"collections": "things"},
                 "plugin.user": {"argon2_opslimit": "min", "argon2_memlimit": "min"}},
                brokers=f"127.0.0.1:{lib.free_port()}")  # nothing listens there
    run = os.urandom(4).hex()

    def user(i):
        return {"name": f"N{i}", "password": "correct horse battery staple",
                "email": f"full{i}.{run}@example.org"}
    writes = (lambda i: ("/probe/publish?host_answers=1", {"n": i}),
              lambda i: ("/crud/things", {"n": i}),
              lambda i: ("/users", user(i)))
    for i in range(2):
        for w in writes:
            path, body = w(i)
            assert d.post(path, json=body).status_code in (200, 201), path
    codes = []

    def burst(k):
        with requests.Session() as s:
            for i in range(60):
                for w in writes:
                    path, body = w(f"{k}.{i}")
                    r = s.post(d.url + path, json=body, timeout=10)
                    codes.append((r.status_code, "Retry-After" in r.headers))
    threads = [threading.Thread(target=burst, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [(503, True)] * 720, sorted(set(codes))
    assert d.stop(timeout=60) == 0
    lines = [x for x in d.log_text().splitlines() if "outbox full" in x]
    assert len(lines) == 3, (len(lines), lines[:4])
    for db in ("probe.db", "crud.db", "user.db"):
        line = next((x for x in lines if f"{db}: outbox full" in x), None)
        assert line and "(2 events waiting, [store] outbox_max_rows 2)" in line, (db, lines)
        assert "0 more refused since the last such line (at most one a minute)" in line
        assert "request_id" not in line, line


def test_publish_of_data_that_is_not_json_is_refused(evhostd, build_dir):
    """evh_publish checks its data (host/json.c): text that is not JSON is
    EVH_EINVAL, logged with where it broke, and nothing reaches the outbox."""
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    # the body passes the host's check; its first 6 bytes, '{"orde', do not
    r = d.post("/probe/publish?truncate=6", json={"order": 7})
    assert r.status_code == 500
    d.wait_for_log("publish to probe.events: data is not valid JSON (syntax error at byte 6)")
    r = d.post("/probe/publish?mode=notx&truncate=6", json={"order": 7})
    assert r.status_code == 500
    assert lib.count_rows(d.state_dir, "probe", "evh_log") == 0
    # nested deeper than the check follows (1000 levels, as cJSON): 999
    # arrays around the object are 1000 levels, 1000 arrays one too many
    r = d.post("/probe/publish?mode=notx&wrap=1000", json={"order": 7})
    assert r.status_code == 500
    d.wait_for_log("publish to probe.events: data is not valid JSON (nested deeper than 1000"
                   " levels at byte 1000)")
    assert lib.count_rows(d.state_dir, "probe", "evh_log") == 0
    # 10^400 x 10^-100 passes the HTTP check; cut to 10^400 x 10^-1 it is
    # beyond a double's range (consumers would read infinity)
    big = "[1" + "0" * 400 + "e-100]"
    r = d.post(f"/probe/publish?mode=notx&truncate={len(big) - 3}", data=big,
               headers={"Content-Type": "application/json"})
    assert r.status_code == 500
    d.wait_for_log("publish to probe.events: the number at byte 1 of the data is beyond the"
                   " range of a double")
    assert lib.count_rows(d.state_dir, "probe", "evh_log") == 0
    # cut inside the two bytes of an e-acute: not UTF-8, which JSON between
    # systems must be (a Python or Java consumer would fail to decode it)
    r = d.post("/probe/publish?mode=notx&truncate=3", data='["\u00e9"]'.encode(),
               headers={"Content-Type": "application/json"})
    assert r.status_code == 500
    d.wait_for_log("publish to probe.events: data is not valid UTF-8 (at byte 2)")
    assert lib.count_rows(d.state_dir, "probe", "evh_log") == 0
    # an escaped NUL (from the query string, past the HTTP body check): cJSON,
    # and C consumers, would end the string there
    r = d.post("/probe/publish?mode=notx", params={"data": '{"name":"lamp\\u0000 (old)"}'},
               json={})
    assert r.status_code == 500
    d.wait_for_log("publish to probe.events: data holds \\u0000 in a string at byte 13"
                   " (consumers' strings would end there)")
    assert lib.count_rows(d.state_dir, "probe", "evh_log") == 0
    # a type its ce_type header cannot hold whole (255 bytes at most)
    r = d.post("/probe/publish?mode=notx", params={"type": "t" * 256}, json={"order": 7})
    assert r.status_code == 500
    d.wait_for_log("publish to probe.events: type is longer than 255 bytes (its ce_type"
                   " header would be cut)")
    assert lib.count_rows(d.state_dir, "probe", "evh_log") == 0
    assert d.post("/probe/publish?mode=notx&wrap=999", json={"order": 7}).status_code == 200
    assert lib.count_rows(d.state_dir, "probe", "evh_log") == 1
    # the same body, whole, is published (one event, waiting or delivered)
    assert d.post("/probe/publish?mode=notx", json={"order": 7}).status_code == 200
    assert lib.count_rows(d.state_dir, "probe", "evh_log") == 2


def test_what_a_plugin_may_not_do_after_init_is_refused_and_said(evhostd, build_dir):
    """From a request handler: a route, a subscription or a migration (init
    only) is EVH_ESTATE (-9); a publish to a name Kafka would refuse, without a type
    or without data is EVH_EINVAL (-3). Each is said in the log, naming the
    plugin; nothing reaches the outbox and the daemon serves on."""
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    r = d.get("/probe/misuse")
    assert r.status_code == 200, r.text
    assert r.json() == {"route": -9, "subscribe": -9, "migrate": -9, "topic": -3, "type": -3,
                        "data": -3}
    for line in ("routes can only be registered during init",
                 "subscriptions can only be added during init",
                 "migrations can only be run during init",
                 "publish: topic 'no topic!' is not a Kafka topic name",
                 "publish to probe.misuse: no type (the event's ce_type)",
                 "publish to probe.misuse: no data (NULL)"):
        d.wait_for_log(line)
        assert any("probe" in x for x in d.log_text().splitlines() if line in x), line
    assert d.get("/probe/late").status_code == 404
    assert lib.count_rows(d.state_dir, "probe", "evh_log") == 0
    assert d.get("/readyz").status_code == 200


def test_sigterm_exits_zero_with_empty_outbox(evhostd, build_dir, kafka_bootstrap, unique_name):
    topic = unique_name("probe")
    d = evhostd({"plugin.probe": probe_conf(build_dir, topic=topic, subscribe="false")},
                brokers=kafka_bootstrap)
    for _ in range(5):
        r = d.post("/probe/publish?n=200", json={"bulk": True})
        assert r.status_code == 200
    code = d.stop(signal.SIGTERM, timeout=60)
    assert code == 0, d.log_tail()
    assert lib.outbox_count(d.state_dir, "probe") == 0
    msgs = lib.kafka_consume(topic, timeout=20, brokers=kafka_bootstrap)
    assert len(msgs) == 1000


def slow_publish(d, ms):
    """POST /probe/publish taking `ms` ms, from a thread, once the probe says
    it sleeps; returns the thread and {"r": response} or {"e": exception}."""
    out = {}

    def slow():
        try:
            out["r"] = d.post(f"/probe/publish?sleep_ms={ms}", json={"x": 1}, timeout=20)
        except requests.RequestException as e:
            out["e"] = e

    t = threading.Thread(target=slow)
    t.start()
    d.wait_for_log(f"probe: sleeping {ms} ms")
    return t, out


def test_sigterm_answers_the_requests_in_flight(evhostd, build_dir):
    # A request that came before SIGTERM is finished and its answer written
    # before civetweb stops (after mg_stop every write fails: the client got
    # an empty reply for a committed write); one that comes meanwhile gets a
    # 503 that says why.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    t, out = slow_publish(d, 1500)
    d.send_signal(signal.SIGTERM)
    d.wait_for_log("SIGTERM: stopping")
    time.sleep(0.2)
    late = d.get("/healthz", timeout=5)
    t.join(20)
    assert "e" not in out, out.get("e")
    assert out["r"].status_code == 200, out["r"].text
    assert out["r"].json() == {"published": 1, "mode": "commit"}
    assert late.status_code == 503, late.text
    assert late.headers.get("Connection", "").lower() == "close"
    assert late.json()["detail"] == "the server is stopping"
    assert d.wait(timeout=30) == 0, d.log_tail()
    assert re.search(r"POST /probe/publish 200 [1-9]\d* bytes", d.log_text()), d.log_tail()
    assert lib.count_rows(d.state_dir, "probe", "evh_log") == 1


def test_sigterm_stops_the_consumers_while_http_drains(evhostd, build_dir, kafka_bootstrap,
                                                        unique_name):
    # Each consumer finishes the message in hand and takes no other, even
    # while HTTP waits for a request in flight: the consumers were told to
    # stop only once HTTP had drained, so events not in hand at the signal
    # were handled meanwhile (a mail sent during the stop, sent again after
    # the start; a stop past its guard). The event left is handled at the
    # next start.
    conf = {"plugin.probe": probe_conf(build_dir, topic=unique_name("drain"),
                                       group=unique_name("g"))}
    d = evhostd(conf, brokers=kafka_bootstrap)
    # One partition, the second behind the first, which takes 4 s.
    assert d.post("/probe/publish?key=k", json={"sleep_ms": 4000}).status_code == 200
    assert d.post("/probe/publish?key=k", json={"n": 2}).status_code == 200
    d.wait_for_log("probe: handler sleeping 4000 ms", timeout=60)
    out = {}

    def slow():  # holds HTTP's drain past the first event, and no database
        try:
            out["r"] = d.get("/probe/status/200?sleep_ms=7000", timeout=20)
        except requests.RequestException as e:
            out["e"] = e

    t = threading.Thread(target=slow)
    t.start()
    d.wait_for_log("probe: status sleeping 7000 ms")
    d.send_signal(signal.SIGTERM)
    t.join(20)
    assert out.get("r") is not None and out["r"].status_code == 200, out
    assert d.wait(timeout=60) == 0, d.log_tail()
    db = sqlite3.connect(str(d.state_dir / "probe.db"))
    try:
        handled = [json.loads(r[0]) for r in db.execute("SELECT data FROM seen ORDER BY n")]
    finally:
        db.close()
    assert handled == [{"sleep_ms": 4000}], handled

    again = evhostd(conf, brokers=kafka_bootstrap, state_dir=d.state_dir)
    seen = lib.probe_wait_seen(again, 2, timeout=60)
    assert [e["data"] for e in seen] == [{"sleep_ms": 4000}, {"n": 2}], seen
    assert again.stop() == 0, again.log_tail()


def test_sigterm_waits_for_requests_in_flight_only_as_long_as_stop_timeout(evhostd, build_dir):
    # A request still running at [host] stop_timeout is named in a warning
    # and the stop goes on: its client gets no answer, the exit is clean.
    d = evhostd({"host": {"stop_timeout": "1s"},
                 "plugin.probe": probe_conf(build_dir, subscribe="false")})
    t, out = slow_publish(d, 4000)
    d.send_signal(signal.SIGTERM)
    d.wait_for_log("1 request(s) still running after [host] stop_timeout (1000 ms); their "
                   "clients get no answer")
    # Named: the line said how many, and the docs promised which.
    d.wait_for_log("still running after 1000 ms of the stop, left without an answer: POST "
                   "/probe/publish (request ")
    t.join(20)
    assert "e" in out, out
    assert d.wait(timeout=30) == 0, d.log_tail()


def test_a_body_still_coming_at_a_stop_is_answered_503_not_waited_for(evhostd, build_dir):
    # A client sending its body slowly held the stop's drain for all of
    # stop_timeout (and the consumers with it), then got no answer. Nothing
    # has been done with a body not read whole: it is answered 503 with
    # Retry-After at once, and the stop goes on.
    d = evhostd({"host": {"stop_timeout": "30s"}, "http": {"request_timeout": "30s"},
                 "plugin.probe": probe_conf(build_dir, subscribe="false")})
    with socket.create_connection(("127.0.0.1", d.port), timeout=30) as c:
        c.sendall(b"POST /probe/publish HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        # The 100 Continue: the server is reading the body.
        assert c.recv(100).startswith(b"HTTP/1.1 100 "), "no 100 Continue"
        c.sendall(b'{"n": 1')
        d.send_signal(signal.SIGTERM)
        answer = recv_problem(c)
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert b"\r\nRetry-After: 1\r\n" in answer, answer
    detail = json.loads(answer[answer.index(b"{"):])["detail"]
    assert detail.startswith("the server is stopping: the body was not read whole (7 of 100 "
                             "bytes came)"), detail
    assert d.wait(timeout=20) == 0, d.log_tail()
    assert lib.count_rows(d.state_dir, "probe", "evh_log") == 0


def test_a_stop_held_by_a_handler_that_does_not_return_ends_after_stop_timeout(
        evhostd, build_dir, kafka_bootstrap, unique_name, tmp_path):
    # An event handler that does not return held SIGTERM as long as it ran:
    # its consumer is joined. At [host] stop_timeout and 10 s more the stop's
    # guard ends the process (status 3), naming what the stop waited for. The
    # event was not committed: the next start handles it again. (The killed
    # consumer never left its group: the next start waits for its session
    # to time out, Kafka's least (6 s) here, not librdkafka's 45 s.)
    conf = {"host": {"stop_timeout": "1s"},
            "kafka": {"rdkafka.session.timeout.ms": "6000"},
            "plugin.probe": probe_conf(build_dir, topic=unique_name("hold"),
                                       group=unique_name("g"))}
    d = evhostd(conf, brokers=kafka_bootstrap)
    hold = tmp_path / "hold"
    hold.write_text("")
    assert d.post("/probe/publish?key=k", json={"hold_while": str(hold)}).status_code == 200
    d.wait_for_log("probe: event held while", timeout=60)
    asked = time.monotonic()
    d.send_signal(signal.SIGTERM)
    code = d.wait(timeout=120)
    took = time.monotonic() - asked
    assert code == 3, d.log_tail()
    # The handler would have held it for a minute (hold_while's own limit).
    assert 11 <= took < 50, (took, d.log_tail())
    assert ("SIGTERM: the stop has not ended within [host] stop_timeout (1000 ms) and 10 s "
            "more: still waiting for plugin 'probe': its consumer (an event handler that has "
            "not returned); exiting now (status 3) without the plugins' fini") in d.log_text()
    hold.unlink()

    again = evhostd(conf, brokers=kafka_bootstrap, state_dir=d.state_dir)
    seen = lib.probe_wait_seen(again, 1, timeout=60)
    assert len(seen) == 1, seen
    assert again.stop() == 0, again.log_tail()


def test_databases_are_created_unreadable_to_other_accounts(evhostd, build_dir):
    # SQLite creates a database 0644 less the umask: under a umask of 022
    # (a start by hand, not the unit's 0027) every local account could read
    # user.db's password hashes. Created 0640; the -wal and -shm files take
    # the database's mode.
    old = os.umask(0o022)
    try:
        d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    finally:
        os.umask(old)
    assert d.post("/probe/publish?key=k", json={"n": 1}).status_code == 200
    files = [f for f in d.state_dir.iterdir() if ".db" in f.name]
    names = {f.name for f in files}
    assert {"probe.db", "probe.db-wal", "probe.db-shm"} <= names, names
    modes = {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in files}
    assert set(modes.values()) == {"0o640"}, modes


def test_a_secret_file_every_account_can_read_is_said(evhostd, tmp_path):
    # jwt_secret_file, [admin] token_file, [tracing] otlp_headers_file and
    # rdkafka.*_file hold secrets: one readable by every local account is
    # said at its line (a warning: not refused), by --check-config, at start,
    # and by a reload when it is new; evhostctl, reading them as an admin,
    # says nothing of them.
    secret, token = tmp_path / "jwt.secret", tmp_path / "admin.token"
    secret.write_text("s" * 40 + "\n")
    token.write_text("t" * 40 + "\n")
    config = {"auth": {"jwt_secret_file": str(secret)}, "admin": {"token_file": str(token)}}
    for mode in (0o644, 0o604):
        secret.chmod(mode)
        token.chmod(0o640)
        r = evhostd.run(["--check-config"], config=config)
        assert r.returncode == 0, r.stdout + r.stderr
        said = [l for l in r.stderr.splitlines() if "readable by every local account" in l]
        assert len(said) == 1, r.stderr
        assert re.search(rf"evhost\.conf:\d+: \[auth\] jwt_secret_file: '{re.escape(str(secret))}' "
                         rf"is readable by every local account \(mode 0{mode:o}\): chmod o-r it",
                         said[0]), said
    secret.chmod(0o640)
    token.chmod(0o644)
    r = evhostd.run(["--check-config"], config=config)
    said = [l for l in r.stderr.splitlines() if "readable by every local account" in l]
    assert len(said) == 1 and "[admin] token_file:" in said[0], r.stderr
    token.chmod(0o600)
    r = evhostd.run(["--check-config"], config=config)
    assert r.returncode == 0 and "readable by every" not in r.stdout + r.stderr, r.stderr
    # At start; at a reload only what the running configuration did not have.
    secret.chmod(0o644)
    d = evhostd(config)
    assert d.log_text().count("readable by every local account") == 1, d.log_tail()
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("reload done")
    assert d.log_text().count("readable by every local account") == 1, d.log_tail()
    token.chmod(0o604)
    d.send_signal(signal.SIGHUP)
    lib.wait_until(lambda: d.log_text().count("reload done") == 2, timeout=10)
    assert d.log_text().count("readable by every local account") == 2, d.log_tail()
    assert "[admin] token_file: '" in d.log_text().split("readable by every")[-2], d.log_tail()


def test_timed_waits_ignore_the_wall_clock(evhostd, build_dir, kafka_bootstrap, unique_name,
                                          otel_collector, tmp_path):
    # evhostd's own readings of the wall clock are 10 minutes ahead of the
    # kernel's (faults.so): a wait to a deadline taken from the wall clock
    # would last 10 minutes longer, as after NTP stepped the clock back at
    # boot. The exporter's interval, the relay's pruning of the event log
    # (with nothing else to wake it), a write's wait for a database a slow
    # handler holds, and the stop's wait for a request in flight each end
    # when they should.
    ahead, before = 600, time.time()
    d = evhostd({"host": {"stop_timeout": "2s"}, "store": {"event_retention": "2"},
                 "tracing": {"otlp_endpoint": otel_collector.endpoint,
                             "export_interval": "200ms"},
                 "plugin.probe": probe_conf(build_dir, topic=unique_name("clk"),
                                            group=unique_name("g"))},
                brokers=kafka_bootstrap,
                env=lib.faults_preloaded(build_dir, wall_clock_ahead_s=ahead))
    stamp = d.log_text().splitlines()[0].split(" ", 1)[0]
    logged = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    assert ahead - 60 < logged - before < ahead + 60, (stamp, before)  # the fault holds

    trace = os.urandom(16).hex()
    r = d.get("/probe/seen", headers={"traceparent": f"00-{trace}-{os.urandom(8).hex()}-01"})
    assert r.status_code == 200, r.text
    otel_collector.wait_spans(lambda s: s["traceId"] == trace, timeout=15)

    assert d.post("/probe/publish?key=k", json={"n": -1}).status_code == 200
    lib.wait_until(lambda: lib.count_rows(d.state_dir, "probe", "evh_events") == 1, timeout=15,
                   message="the event in the probe's event log")
    lib.wait_until(lambda: lib.count_rows(d.state_dir, "probe", "evh_events") == 0, timeout=15,
                   message="the event pruned from the event log (event_retention 2 s)")

    with lib.probe_held_handler(d, tmp_path / "hold"):
        r = d.post("/probe/publish?key=j", json={"n": 2}, timeout=30)
    assert r.status_code == 503, r.text
    assert "held the database for 5000 ms" in d.log_text(), d.log_tail()

    lib.probe_wait_seen(d, 3)
    t, out = slow_publish(d, 6000)
    d.send_signal(signal.SIGTERM)
    d.wait_for_log("1 request(s) still running after [host] stop_timeout (2000 ms)", timeout=5)
    t.join(20)
    assert d.wait(timeout=30) == 0, d.log_tail()


def test_a_step_of_the_wall_clock_is_said(evhostd, build_dir, tmp_path):
    # The main thread compares the wall clock with the monotonic clock every
    # second: evhostd's wall clock put 10 minutes ahead (faults.so, while a
    # file exists), then back, each step said and counted; back at WARN
    # (librdkafka's waits under way are stretched by it).
    def steps():
        text = d.get("/metrics").text
        return {k: int(float(v)) for k, v in re.findall(
            r'^evhost_wall_clock_steps_total\{direction="(\w+)"\} (\S+)$', text, re.M)}

    switch = tmp_path / "clock-ahead"
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")},
                env=lib.faults_preloaded(build_dir, wall_clock_ahead_s=600,
                                         wall_clock_ahead_file=switch))
    assert steps() == {"back": 0, "forward": 0}
    switch.touch()
    d.wait_for_log("[host] the wall clock went forward ", timeout=10)
    switch.unlink()
    d.wait_for_log("[host] the wall clock went back ", timeout=10)
    log = d.log_text()
    assert re.search(r" INFO  \[host\] the wall clock went forward (599\.99\d|600\.00\d) s ", log), log
    assert re.search(r" WARN  \[host\] the wall clock went back (599\.99\d|600\.00\d) s: ", log), log
    assert len(re.findall(r"the wall clock went", log)) == 2, log
    assert "events published until" not in log, log  # none was: no time held
    assert steps() == {"back": 1, "forward": 1}


def test_a_failed_wait_for_signals_stops_the_daemon_as_a_failure(evhostd, build_dir, tmp_path):
    # sigtimedwait fails only on a bug (EINVAL): the main thread cannot wait
    # for SIGTERM or SIGHUP any more, so evhostd stops, cleanly, but exits 1
    # so that systemd's Restart=on-failure starts it again (evhostd(8)).
    switch = tmp_path / "sigwait-fails"
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")},
                env=lib.faults_preloaded(build_dir, sigwait_file=switch))
    assert d.get("/probe/seen").status_code == 200
    switch.touch()
    assert d.wait(timeout=30) == 1, d.log_tail()
    log = d.log_text()
    assert re.search(r" ERROR \[host\] sigtimedwait: Invalid argument\n", log), log
    assert log.index("sigtimedwait: Invalid argument") < log.index("[host] stopped"), log


def test_a_storage_error_a_handler_returns_is_logged_with_its_message(evhostd, build_dir):
    # The handler's transaction (and its message) was gone when the host
    # logged "failed: storage error": the line now says what SQLite said,
    # and an event given up on without a reason of its own gets it too.
    d = evhostd({"plugin.probe": probe_conf(build_dir)})
    r = d.post("/probe/publish?bad_sql=1", json={"x": 1})
    assert r.status_code == 500, r.text
    assert ("POST /probe/publish (route /probe/publish of plugin 'probe') failed: storage "
            "error (storage: no such table: no_such_table)") in d.log_text(), d.log_tail()
    # Folded to a line a minute only while the database cannot be written (a
    # disk full or failing): a plugin's SQL error is each request's own.
    assert d.post("/probe/publish?bad_sql=1", json={"x": 2}).status_code == 500
    assert d.log_text().count("no such table: no_such_table)") == 2, d.log_tail()
    d.wait_for_log("probe: assigned", timeout=30)
    assert d.post("/probe/publish", json={"bad_sql": 1}).status_code == 200
    d.wait_for_log(" dead-lettered to ", timeout=30)
    line = next(ln for ln in d.log_text().splitlines() if " dead-lettered to " in ln)
    assert "after 1 attempt(s): storage: no such table: no_such_table" in line, line


# Where the EVH_ETOOBIG a handler returns came from: its answer, the words
# that say why, and the level of the host's line about it and what it adds.
TOOBIG_SOURCES = {
    "event": (413, "payload-too-large", "Content Too Large",
              "the event this request publishes would be larger than a Kafka message may be",
              "WARN", " (request_id="),
    "stored": (413, "payload-too-large", "Content Too Large",
               "a value this request stores is larger than the storage of service 'probe'"
               " takes", "WARN", " (storage: string or blob too big)"),
    # the plugin's own limits: nothing the client sent was too large
    "headers": (500, "internal", "Internal Server Error", "the request could not be handled",
                "ERROR", " (more response headers than the host keeps)"),
    "stream": (500, "internal", "Internal Server Error", "the request could not be handled",
               "ERROR", " (a stream event's data, more than one may carry)"),
    "own": (500, "internal", "Internal Server Error", "the request could not be handled",
            "ERROR", " (none of the host's limits: the plugin's own code)"),
}


@pytest.mark.parametrize("source", sorted(TOOBIG_SOURCES))
def test_a_handlers_too_big_is_a_413_only_when_the_client_sent_too_much(evhostd, build_dir,
                                                                       source):
    # A 413 tells the client to send less: right for an event larger than a
    # Kafka message (message.max.bytes at its least: an event of 1024 bytes
    # at most) and for a value larger than SQLite takes, each saying which;
    # wrong when the plugin hit a limit of its own (more response headers than
    # the host keeps, a stream event over 64 KiB) or returned the code for a
    # reason the host cannot know: a 500, logged as an error. One worker
    # thread, and first a refusal the handler dealt with itself: not taken
    # for the next request's on the same thread.
    status, slug, title, detail, level, why = TOOBIG_SOURCES[source]
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false"),
                 "kafka": {"rdkafka.message.max.bytes": "2048"},
                 "http": {"threads": "1"}})
    r = d.get("/probe/toobig/handled")
    assert r.status_code == 200 and r.json() == {"publish": -12}, r.text
    r = d.get(f"/probe/toobig/{source}")
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    p = r.json()
    assert p["type"].endswith("/" + slug), p
    assert (p["title"], p["detail"]) == (title, detail), p
    said = (f"GET /probe/toobig/{source} (route /probe/toobig/{{from}} of plugin 'probe')"
            " failed: too big" + why)
    line = lib.wait_until(lambda: next(
        (l for l in d.log_text().splitlines() if said in l), None), message=said)
    assert re.search(rf"\b{level} +\[http\]", line), line
    # an event under the line is published
    r = d.get("/probe/toobig/event?bytes=1000")
    assert r.status_code == 200, r.text


def test_the_lines_about_an_events_retry_and_dead_letter_carry_its_trace(evhostd, build_dir):
    # They were logged after the attempt's span had ended, without trace_id:
    # grepping a trace showed the plugin's lines but not the retries.
    d = evhostd({"plugin.probe": probe_conf(build_dir, **{"retry.max_attempts": "2"})})
    d.wait_for_log("probe: assigned", timeout=30)
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert d.post("/probe/publish", json={"fail": "retry"},
                  headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}).status_code == 200
    d.wait_for_log(" dead-lettered to ", timeout=30)
    lines = d.log_text().splitlines()
    failed = [ln for ln in lines if " attempt 1/2 failed " in ln]
    dead = [ln for ln in lines if " dead-lettered to " in ln]
    assert failed and dead, d.log_tail()
    assert f"trace_id={trace}" in failed[0] and f"trace_id={trace}" in dead[0], (failed, dead)


@pytest.mark.parametrize("where", ["http", "event"])
def test_a_plugin_crash_says_which_plugin_and_what_it_ran(evhostd, build_dir, where):
    # A plugin's bad pointer ends the daemon (its memory can no longer be
    # trusted), but no longer without a word: the last line names the
    # plugin and the request or event, with a backtrace through its file;
    # then the default action (a core dump) and systemd's restart.
    if lib.sanitizer(build_dir):
        pytest.skip("sanitizer runtimes report fatal signals themselves")
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe=str(where == "event").lower())})
    if where == "http":
        with pytest.raises(requests.ConnectionError):
            d.post("/probe/publish?crash=16", json={"x": 1}, timeout=10)
        want = (r"in plugin 'probe', handling HTTP POST /probe/publish \(request id "
                r"[0-9a-f]{32}\)")
    else:
        d.wait_for_log("probe: assigned", timeout=30)
        assert d.post("/probe/publish", json={"crash": 16}).status_code == 200
        want = (r"in plugin 'probe', handling event [0-9a-f-]{36} of probe\.events \[\d+\] at "
                r"offset \d+ \(not committed: it is handled again after the restart\)")
    assert d.wait(timeout=30) == -signal.SIGSEGV, d.log_tail()
    text = d.log_text()
    m = re.search(r"evhostd: FATAL: SIGSEGV at address 0x10 " + want +
                  r"; the daemon stops\. Backtrace:\n", text)
    assert m, d.log_tail()
    assert "probe.so(" in text[m.end():], text[m.end():]


def test_a_handler_leaving_its_transaction_open_gets_500_and_the_plugin_serves_on(
        evhostd, build_dir):
    # A third party's handler that returns without evh_tx_commit or
    # evh_tx_rollback held its plugin's database for good: the answer said
    # 200 for writes that never committed, every later write of the plugin
    # waited 5 s for a 503, and a reload or stop waited forever (only
    # SIGKILL ended it). The host rolls it back after the handler, answers
    # 500 and says why; the plugin, a reload and the stop go on as usual.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    r = d.post("/probe/publish?mode=leave_open", json={"x": 1})
    assert r.status_code == 500, r.text
    assert r.json()["detail"] == "the service did not finish its transaction"
    d.wait_for_log("POST /probe/publish (route /probe/publish of plugin 'probe') returned "
                   "with a transaction it began still open (no evh_tx_commit or "
                   "evh_tx_rollback): rolled back, answered 500 instead of 200")
    r = d.post("/probe/publish", json={"x": 2}, timeout=4)
    assert r.status_code == 200, r.text
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("reload done", timeout=20)
    assert d.stop(timeout=20) == 0


def test_a_read_transaction_is_answered_while_a_write_one_holds_the_database(
        evhostd, build_dir):
    # evh_tx_begin_read (ABI 1.15) runs beside the plugin's write
    # transactions: a read is answered while a publish holds the database
    # for 6 s (with evh_tx_begin it waited 5 s for it, then 503), and sees
    # only what was committed.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    assert d.post("/probe/publish", json={"x": 1}).status_code == 200
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(d.post, "/probe/publish?sleep_ms=6000", json={"x": 2}, timeout=30)
        d.wait_for_log("probe: sleeping 6000 ms")
        r = d.get("/probe/read", timeout=30)
        assert r.status_code == 200, r.text
        assert r.json() == {"events": 1}
        assert held.result().status_code == 200
    assert d.get("/probe/read").json() == {"events": 2}


def test_a_handler_leaving_a_read_transaction_open_gets_500_and_the_plugin_reads_on(
        evhostd, build_dir):
    # A read transaction left open held one of the plugin's four read
    # connections for good: the fifth such request waited 5 s for a 503, and
    # every read after it. The host ends it after the handler, as a write one.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    for _ in range(5):
        r = d.get("/probe/read?leave_open=1", timeout=30)
        assert r.status_code == 500, r.text
        assert r.json()["detail"] == "the service did not finish its transaction"
    d.wait_for_log("GET /probe/read (route /probe/read of plugin 'probe') returned with a "
                   "transaction it began still open")
    r = d.get("/probe/read", timeout=30)
    assert r.status_code == 200, r.text
    assert d.stop(timeout=20) == 0


@pytest.mark.parametrize("how", ["commit", "exec", "rows"])
def test_a_transaction_used_by_another_thread_is_refused_and_the_plugin_serves_on(
        evhostd, build_dir, how):
    # A transaction belongs to the thread that began it (which holds the
    # plugin's database). Committed by a thread of the plugin's own, it
    # returned OK but left the lock with the handler's thread for good:
    # every later write waited 5 s for a 503, and SIGTERM hung. Written
    # through from several threads, SQLite ran on one connection at once.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    r = d.post(f"/probe/publish?foreign={how}", json={"x": 1})
    assert r.status_code == 200, r.text  # the handler's own commit, after
    d.wait_for_log(f"probe: foreign {how} gave ", timeout=10)
    text = d.log_text()
    assert f"probe: foreign {how} gave {'not allowed in this state'}" in text, d.log_tail()
    call = {"commit": "tx_commit", "exec": "exec", "rows": "rows_next"}[how]
    assert (f"a plugin's own thread: evh_{call} on a transaction another thread began: "
            "refused") in text, d.log_tail()
    assert d.post("/probe/publish", json={"x": 2}, timeout=4).status_code == 200
    assert d.stop(timeout=20) == 0


def test_a_plugins_sql_may_not_do_what_is_the_hosts(evhostd, build_dir, tmp_path):
    # Raw SQL could end the host's transaction (a COMMIT in an event handler
    # committed the inbox record with half the work, and its retry never
    # came), write the host's tables (a row put in evh_log by hand skipped
    # every check of evh_publish and held the relay up for good), and ATTACH
    # other databases (the sign-outs, other plugins' tables). Refused at
    # prepare, said; what a plugin does with its own tables goes on.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    other = tmp_path / "other.db"
    refused = {
        "COMMIT": "BEGIN, COMMIT, ROLLBACK and savepoints are the host's",
        "SAVEPOINT x": "BEGIN, COMMIT, ROLLBACK and savepoints are the host's",
        f"ATTACH DATABASE '{other}' AS o": "a plugin's SQL sees its own database only",
        "PRAGMA journal_mode = DELETE": "this PRAGMA is the host's",
        "DELETE FROM evh_inbox": "the evh_ tables are the host's",
        "UPDATE evh_migrations SET version = 99": "the evh_ tables are the host's",
        "DROP TABLE evh_log": "the evh_ tables are the host's",
        "CREATE TABLE evh_mine(x)": "the evh_ tables are the host's",
    }
    for sql, why in refused.items():
        r = d.post("/probe/exec", data=sql)
        assert r.status_code == 200, (sql, r.text)
        assert r.json()["rc"] != "ok" and why in r.json()["error"], (sql, r.json())
        line = [x for x in d.log_text().splitlines() if f'evh_exec "{sql}": refused: ' in x]
        assert line and why in line[0], (sql, d.log_tail())
    assert not other.exists()
    for sql in ("INSERT INTO seen(event_id, type, data) VALUES('x', 't', '{}')",
                "SELECT count(*) FROM evh_inbox", "PRAGMA table_info(seen)"):
        r = d.post("/probe/exec", data=sql)
        assert r.json() == {"rc": "ok", "error": ""}, (sql, r.text)
    assert d.post("/probe/publish", json={"x": 1}).status_code == 200
    assert d.stop(timeout=20) == 0


def test_publish_and_subscribe_refuse_what_could_never_be_delivered(evhostd, build_dir):
    # evh_publish in fini returned OK and its event stayed in the outbox with
    # the relay stopped for the plugin (for good, if a reload removed it);
    # a type with control characters went out as the ce_type header; a
    # subscription to a name Kafka refuses was taken and waited for ever.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false", fini_publish="true")})
    r = d.post("/probe/publish?type=a%0Ab", json={"x": 1})
    assert r.status_code == 500, r.text
    assert ("publish to probe.events: the type holds a control character or is not UTF-8"
            in d.log_text()), d.log_tail()
    assert d.stop(timeout=20) == 0
    text = d.log_text()
    assert "probe: fini publish gave not allowed in this state" in text, text
    assert "in fini: refused (the plugin's events are no longer sent" in text, text
    d = evhostd({"plugin.probe": probe_conf(build_dir, topic="has space")}, wait=False)
    assert d.wait(timeout=30) == 1
    assert "subscribe: topic 'has space' is not a Kafka topic name" in d.log_text(), d.log_tail()
    # A topic whose dead-letter topic (<topic>.<plugin>.dlq) is past Kafka's
    # 249 characters: taken, its first dead letter retried for good.
    long = "t" * 240
    d = evhostd({"plugin.probe": probe_conf(build_dir, topic=long)}, wait=False)
    assert d.wait(timeout=30) == 1
    assert (f"subscribe to {long}: its dead-letter topic (the topic's name then .probe.dlq) "
            "would be 250 characters, past Kafka's 249") in d.log_text(), d.log_tail()


def test_a_transaction_begun_on_another_instance_is_refused(evhostd, build_dir):
    # Two instances of one .so share its statics: a handler of one could
    # begin a transaction on the other's database, which the check after the
    # handler (its own plugin's) never saw: that database was held for good.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false"),
                 "plugin.probe2": {**probe_conf(build_dir, subscribe="false"),
                                   "routes": "false"}})
    assert d.post("/probe/publish?other=1", json={"x": 1}).status_code == 200
    d.wait_for_log("probe: other instance's tx_begin gave ", timeout=10)
    text = d.log_text()
    assert f"probe: other instance's tx_begin gave {'not allowed in this state'}" in text, text
    assert ("plugin 'probe': evh_tx_begin on plugin 'probe2': refused (a plugin's callbacks "
            "use the evh_plugin they were given)") in text, text
    d.wait_for_log("probe: other instance's publish gave ", timeout=10)
    text = d.log_text()
    assert f"probe: other instance's publish gave {'not allowed in this state'}" in text, text
    assert "plugin 'probe': evh_publish on plugin 'probe2': refused" in text, text
    assert d.stop(timeout=20) == 0


@pytest.mark.parametrize("how", ["commit", "rollback"])
def test_an_event_handler_ending_the_transaction_it_was_given_is_refused(
        evhostd, build_dir, how):
    # That transaction is the host's: it commits it with the event's inbox
    # record. Committed or rolled back by the handler, it was freed under the
    # consumer, which crashed (at every restart, the offset never committed).
    # Now the call is refused, said, and the event is handled as usual.
    d = evhostd({"plugin.probe": probe_conf(build_dir)})
    d.wait_for_log("probe: assigned", timeout=30)
    assert d.post("/probe/publish", json={"end_tx": how}).status_code == 200
    lib.wait_until(lambda: [e["data"] for e in d.get("/probe/seen").json()] ==
                   [{"end_tx": how}], timeout=30, message="the event handled once")
    text = d.log_text()
    assert (f"plugin 'probe': evh_tx_{how} on the transaction its event handler was given: "
            "refused (the host ends it with the event") in text, d.log_tail()
    assert f"probe: evh_tx_{how} gave {-9 if how == 'commit' else 0}" in text, d.log_tail()
    # Its own transaction, or a publish without one, is refused too, said.
    assert d.post("/probe/publish", json={"inner_tx": 1}).status_code == 200
    d.wait_for_log("probe: evh_tx_begin gave -9, evh_publish without tx gave -9", timeout=30)
    text = d.log_text()
    assert ("evh_tx_begin: this thread has a transaction open on the plugin's database "
            "already (an event handler's: write through the tx it is given") in text, text
    assert ("publish to probe.elsewhere without a transaction: this thread has one open on "
            "the plugin's database already (an event handler's: publish through the tx it "
            "is given)") in text, text
    lib.wait_until(lambda: len(d.get("/probe/seen").json()) == 2, timeout=30,
                   message="the event handled")
    assert d.post("/probe/publish", json={"after": 1}).status_code == 200
    lib.wait_until(lambda: len(d.get("/probe/seen").json()) == 3, timeout=30,
                   message="the next event handled")
    assert d.stop() == 0


def test_an_event_handler_leaving_a_read_transaction_open_is_mended(evhostd, build_dir):
    # A read transaction (evh_tx_begin_read) an event handler began and left
    # open held one of the plugin's four read connections for good: the
    # fifth such handler, and every read of the plugin's after it, waited 5 s
    # for EVH_EBUSY. The host ends it after the handler, said; the event's
    # outcome stands (it wrote nothing).
    d = evhostd({"plugin.probe": probe_conf(build_dir)})
    d.wait_for_log("probe: assigned", timeout=30)
    for i in range(5):
        assert d.post("/probe/publish", json={"leave_read": 1, "i": i}).status_code == 200
    lib.wait_until(lambda: len(d.get("/probe/seen").json()) == 5, timeout=60,
                   message="the events handled")
    text = d.log_text()
    assert text.count("probe: evh_tx_begin_read gave 0") == 5, d.log_tail()
    assert text.count("returned with 1 read transaction it began still open (no "
                      "evh_tx_commit or evh_tx_rollback): ended") == 5, d.log_tail()
    r = d.get("/probe/read", timeout=30)
    assert r.status_code == 200, r.text
    assert d.stop() == 0


def test_an_init_leaving_its_transaction_open_fails_and_the_start_ends(evhostd, build_dir):
    # Left open, it held the plugin's database: the plugin's first write, and
    # the stop's close of it, would wait for good. Rolled back, said, and the
    # plugin not started (a required one: the start fails, exit 1).
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false",
                                            init_leaves_tx="true")}, wait=False)
    assert d.wait(timeout=60) == 1, d.log_tail()
    assert ("plugin 'probe' init returned with a transaction it began still open (no "
            "evh_tx_commit or evh_tx_rollback): rolled back, and the plugin is not started"
            ) in d.log_text(), d.log_tail()
    with sqlite3.connect(d.state_dir / "probe.db") as db:
        assert db.execute("SELECT count(*) FROM seen").fetchone() == (0,)


def test_a_crash_record_that_is_not_one_is_removed_without_a_word(evhostd, build_dir,
                                                                   tmp_path):
    # state_dir/evhostd.crashed cut short (a full disk at the crash) or not
    # evhostd's: no event to name, so nothing is dead-lettered for it.
    state = tmp_path / "state"
    state.mkdir()
    (state / "evhostd.crashed").write_text("garbage\n")
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")}, state_dir=state)
    assert d.get("/healthz").status_code == 200
    assert not (state / "evhostd.crashed").exists()
    assert "the last run crashed" not in d.log_text()


def test_a_plugin_reading_a_key_its_schema_lacks_is_told_so(evhostd, build_dir):
    # A typo in the plugin's code (evh_config_str(p, "topik")) read as unset
    # for good, without a word: the author looked for the fault in the
    # configuration.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false", read_typo="true")})
    d.wait_for_log("probe: topik is unset")
    assert ("evh_config: 'topik' is not a key of the plugin's configuration schema (a typo?): "
            "read as unset") in d.log_text(), d.log_tail()


def test_a_plugin_overflowing_its_stack_is_told_so(evhostd, build_dir):
    # A handler recursing past an HTTP worker's 100 KiB stack killed the
    # daemon without a word: no room was left on that stack for the crash
    # handler. It has a stack of its own on every thread that runs plugin
    # code now, and the line says the address is the thread's stack (it
    # sent authors looking for a bad pointer).
    if lib.sanitizer(build_dir):
        pytest.skip("sanitizer runtimes report fatal signals themselves")
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    with pytest.raises(requests.ConnectionError):
        d.post("/probe/publish?overflow=1", json={"x": 1}, timeout=10)
    assert d.wait(timeout=30) == -signal.SIGSEGV, d.log_tail()
    assert re.search(r"evhostd: FATAL: SIGSEGV at address 0x[0-9a-f]+ \(this thread's stack: "
                     r"a stack overflow\? HTTP workers have 100 KiB stacks; keep large "
                     r"buffers on the heap\) in plugin 'probe', handling HTTP POST "
                     r"/probe/publish", d.log_text()), d.log_tail()


@pytest.mark.parametrize("how,sig,at", [("abort", signal.SIGABRT, ""),
                                        ("bus", signal.SIGBUS, r" at address 0x[0-9a-f]+")])
def test_a_plugin_abort_or_bus_error_is_said_too(evhostd, build_dir, how, sig, at):
    # abort() is a signal sent (raised again after the line), a bus error a
    # fault at an address (recurs after it): both end in the default action.
    if lib.sanitizer(build_dir):
        pytest.skip("sanitizer runtimes report fatal signals themselves")
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    with pytest.raises(requests.ConnectionError):
        d.post(f"/probe/publish?{how}=1", json={"x": 1}, timeout=10)
    assert d.wait(timeout=30) == -sig, d.log_tail()
    assert re.search(rf"evhostd: FATAL: {sig.name}{at} in plugin 'probe', handling HTTP POST "
                     r"/probe/publish \(request id [0-9a-f]{32}\); the daemon stops\. "
                     r"Backtrace:\n", d.log_text()), d.log_tail()


def test_sigterm_on_the_embedded_broker_lowers_its_threads_first(evhostd, build_dir):
    # librdkafka 2.0's mock cluster can sleep out a 1 s poll when it is
    # destroyed; evhostd lowers that cluster's broker threads first (see
    # kafka.c, idle_mock_threads). Its debug line says whether it found and
    # lowered them; without them found, every stop took a second.
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    assert d.post("/probe/publish?n=3", json={"x": 1}).status_code == 200
    assert d.stop(signal.SIGTERM, timeout=30) == 0, d.log_tail()
    m = re.search(r"embedded cluster: (\d+) broker thread\(s\) lowered for its stop",
                  d.log_text())
    assert m and int(m.group(1)) >= 1, d.log_tail()


def test_first_event_to_a_topic_asks_for_its_partitions_at_once(evhostd, build_dir,
                                                                kafka_bootstrap, unique_name):
    # Producing by topic name alone, librdkafka 2.0 learns a new topic's
    # partitions only at its topic scan, once a second: the first event to
    # every topic waited up to a second. evhostd makes a topic handle first,
    # which asks at once ("leader query" in librdkafka's metadata debug log).
    topic = unique_name("probe")
    d = evhostd({"plugin.probe": probe_conf(build_dir, topic=topic, subscribe="false"),
                 "kafka": {"rdkafka.debug": "metadata"}}, brokers=kafka_bootstrap)
    assert d.post("/probe/publish?n=1", json={"x": 1}).status_code == 200
    lib.wait_until(lambda: lib.outbox_count(d.state_dir, "probe") == 0, timeout=20,
                   message="the event delivered")
    assert re.search(r"Requesting metadata for 1/1 topics: leader query", d.log_text()), \
        d.log_tail()


def test_publish_without_tx_is_durable(evhostd, build_dir, kafka_bootstrap, unique_name):
    topic = unique_name("probe")
    d = evhostd({"plugin.probe": probe_conf(build_dir, topic=topic, group=unique_name("g"))},
                brokers=kafka_bootstrap)
    assert d.post("/probe/publish?mode=notx&n=2", json={"x": 1}).status_code == 200
    rows = published_seen(d, 2)
    assert len({r["event_id"] for r in rows}) == 2


def test_plugins_read_a_header_as_rfc_9110_has_it(evhostd, build_dir):
    """evh_req_header: the value without the spaces and tabs around it
    (civetweb keeps those after it); a field on several lines is one list in
    their order (Cookie's joined by "; "), empty lines left out; of a
    single-valued field, the first line's."""
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")}, brokers="embedded")

    def header(name, *lines):
        status, _, body, _ = raw_exchange(d.port, b"GET /probe/header/" + name.encode() +
                                          b" HTTP/1.1\r\nHost: x\r\n" + b"".join(
                                              line + b"\r\n" for line in lines) + b"\r\n")
        return status.split(" ")[1], body

    # (civetweb refuses a tab in a header line outright: 400.)
    assert header("If-Match", b'If-Match: "3"   ') == ("200", b'["3"]')
    assert header("X-Plain", b"X-Plain: a  b") == ("200", b"[a  b]")
    assert header("if-match", b'If-Match: "1"', b"If-Match:", b'if-match:   "2" , "4" ',
                  b"X-Other: y") == ("200", b'["1", "2" , "4"]')
    assert header("Cookie", b"Cookie: a=1 ", b"Cookie: b=2") == ("200", b"[a=1; b=2]")
    assert header("Content-Type", b"Content-Type: text/plain ",
                  b"Content-Type: text/html") == ("200", b"[text/plain]")
    assert header("X-Empty", b"X-Empty: ", b"X-Empty:") == ("200", b"[]")
    assert header("X-Absent", b"X-Present: 1")[0] == "404"
    # Many names read in one request, each given its own value (and a second
    # read the same); the request's most header lines, all of them copies.
    lines = [f"X-H{i}: v{i} ".encode() for i in range(62)]
    names = ",".join(f"x-h{i}" for i in range(62)) + ",X-None"
    assert header(names, *lines) == (
        "200", "".join(f"[v{i}]" for i in range(62)).encode() + b"[-]")


def test_client_address_behind_a_trusted_proxy(evhostd, build_dir):
    """[http] trusted_proxies: from such a peer, X-Forwarded-For names the
    client (the first untrusted address from the right; what the client
    wrote itself is not believed), in the access log, in the span and to
    plugins (evh_req_client_addr). Without it the header is ignored."""
    spoof = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}
    d = evhostd({"plugin.probe": probe_conf(build_dir)}, brokers="embedded")
    r = d.get("/probe/addr", headers=spoof)
    assert r.status_code == 200 and r.text == "127.0.0.1", r.text
    line = lib.wait_until(lambda: next((l for l in d.log_text().splitlines()
                                        if "GET /probe/addr 200 9 bytes" in l), None), timeout=10)
    assert ", from 127.0.0.1" in line and " via " not in line, line
    d.stop()

    d = evhostd({"plugin.probe": probe_conf(build_dir),
                 "http": {"trusted_proxies": "127.0.0.1, ::1, 10.0.0.0/8"}}, brokers="embedded")
    r = d.get("/probe/addr", headers=spoof)
    assert r.status_code == 200 and r.text == "203.0.113.9", r.text
    # Two headers are one list, in order; a hop inside 10/8 is a proxy too.
    status, _, body, _ = raw_exchange(d.port, b"GET /probe/addr HTTP/1.1\r\nHost: x\r\n"
                                               b"X-Forwarded-For: 198.51.100.4\r\n"
                                               b"X-Forwarded-For: 10.9.8.7\r\n\r\n")
    assert " 200 " in status and body == b"198.51.100.4", (status, body)
    # A long list is read from the right like a short one: what a client
    # wrote on the left (here 6 KiB) does not push out what the proxy added.
    # (Over 2 KiB, it did, and every such client was the proxy.)
    r = d.get("/probe/addr",
              headers={"X-Forwarded-For": ", ".join(["6.6.6.6"] * 800 + ["203.0.113.9"])})
    assert r.status_code == 200 and r.text == "203.0.113.9", r.text
    status, _, body, _ = raw_exchange(d.port, b"GET /probe/addr HTTP/1.1\r\nHost: x\r\n" +
                                      b"X-Forwarded-For: " + b"6.6.6.6, " * 400 +
                                      b"6.6.6.6\r\nX-Forwarded-For: 198.51.100.4\r\n\r\n")
    assert " 200 " in status and body == b"198.51.100.4", (status, body)
    lib.wait_until(lambda: "GET /probe/addr 200 11 bytes" in d.log_text() and
                   ", from 203.0.113.9 via 127.0.0.1" in d.log_text(), timeout=10,
                   message="the access log line of the forwarded request")


def test_trusted_proxies_is_checked_at_its_line(evhostd):
    # Empty is none, as configuration.md says (it was refused).
    r = evhostd.run(["--check-config"], config={"http": {"trusted_proxies": ""}},
                    brokers="embedded")
    assert r.returncode == 0, r.stderr
    r = evhostd.run(["--check-config"], config={"http": {"trusted_proxies": "10.0.0.1/8"}},
                    brokers="embedded")
    assert r.returncode == 1, r.stdout
    assert re.search(r"evhost\.conf:\d+: \[http\] trusted_proxies: '10\.0\.0\.1/8': has bits set "
                     r"after the first 8", r.stdout), r.stdout


# ------------------------------------------------------------ out of memory


def services_config(tmp_path, maildir=None, smtp=None):
    """The three services' configuration, as (config, dropins): mail to the
    SmtpSink `smtp`, or else into the Maildir `maildir` (tmp_path/maildir)."""
    secret = tmp_path / "jwt.secret"
    if not secret.exists():  # once: the start-up sweep's runs read it side by side
        secret.write_text("out-of-memory-test-secret-0123456789abcdef\n")
        secret.chmod(0o600)
    return {"auth": {"jwt_secret_file": str(secret)}}, {
        "10-user.conf": {"plugin.user": {"argon2_opslimit": "min",
                                         "argon2_memlimit": "min"}},
        "20-crud.conf": {"plugin.crud": {"collections": "products"}},
        "30-notifications.conf": {"plugin.notifications": dict(
            {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp.port}"} if smtp else
            {"transport": "maildir", "maildir": str(maildir or tmp_path / "maildir")},
            templates_dir=str(TEMPLATES))},
    }


@pytest.mark.parametrize("required", ["true", "false"])
def test_check_config_out_of_memory_is_said(evhostd, build_dir, tmp_path, required):
    # --check-config with the three services (loaded from tests/fault-plugins,
    # so their checks' allocations count too), each allocation failed in
    # turn (lib.oom_stride): the same verdict as without, or exit 1 saying
    # out of memory; never a crash, never "OK" for a check that did not run.
    # With required = false, memory running out while a plugin's section is
    # read, or in its own check (EVH_ENOMEM), is an error too, not the plugin
    # left out with a warning as for a value refused ("OK (2 plugins)"; a
    # reload would stop it). The secret file is readable by every account:
    # the warning noted for it runs out of memory too (then goes unsaid).
    binary = build_dir / "tests" / "fixtures" / "evhostd_faults"
    evhostd.plugin_dir = build_dir / "tests" / "fault-plugins"
    config, dropins = services_config(tmp_path)
    (tmp_path / "jwt.secret").chmod(0o644)
    for name in dropins:
        for keys in dropins[name].values():
            keys["required"] = required
    config_dir, _, _ = evhostd.write_config(config, dropins)
    args = ["-c", str(config_dir / "evhost.conf"), "--check-config"]
    want, _ = lib.run_failing([binary, *args], None)
    assert want.returncode == 0 and "configuration OK" in want.stdout, want.stdout + want.stderr
    assert "jwt.secret' is readable by every local account" in want.stderr, want.stderr
    for n in range(0, 20000, lib.oom_stride(build_dir, 1)):
        r, failed = lib.run_failing([binary, *args], n)
        out = r.stdout + r.stderr
        assert "Sanitizer" not in out and "runtime error" not in out, (n, out)
        if not failed:
            assert (r.returncode, r.stdout) == (0, want.stdout), (n, out)
            break
        if r.returncode == 0:
            assert r.stdout == want.stdout, (n, out)
        else:
            assert r.returncode == 1, (n, r.returncode, out)
            assert re.search("out of memory|Cannot allocate memory", out), (n, out)
            assert "configuration OK" not in out, (n, out)
    else:
        pytest.fail("20000 allocations and counting")
    print(f"--check-config: {n} allocations")


def mail_for(maildir, address):
    """Whether a mail in maildir/new is addressed to `address`."""
    new = Path(maildir) / "new"
    return new.is_dir() and any(f"<{address}>" in f.read_text(errors="replace")
                                for f in new.iterdir())


class PortPool:
    """free_port() for runs side by side: never one another run still holds."""

    def __init__(self):
        self.lock, self.taken = threading.Lock(), set()

    def take(self):
        with self.lock:
            while (port := lib.free_port()) in self.taken:
                pass
            self.taken.add(port)
            return port

    def give_back(self, *ports):
        with self.lock:
            self.taken.difference_update(ports)


def start_failing(evhostd, binary, tmp_path, n, check_flow=True, flows=None, smtp=None,
                  features=None, ports=None):
    """One run of the start-up sweep below: a first start of evhostd_faults
    on empty state with its Nth allocation failed (none for n=None), the
    flow checked when it was failed before "ready" (`check_flow`); returns
    how many allocations it made (start and stop, and the flow if checked)
    when none was failed, else None."""
    tag = "none" if n is None else n
    maildir = tmp_path / f"maildir-{tag}"
    config, dropins = services_config(tmp_path, maildir, smtp)
    config["log"] = {"level": "info"}
    ports = ports or PortPool()
    mine = [ports.take(), ports.take()]
    if features:  # HTTPS, the admin API, tracing
        config["http"] = {"tls_listen": f"127.0.0.1:{mine[1]}",
                          "tls_certificate": str(features["pem"])}
        config["admin"] = {"token_file": str(features["token"])}
        config["tracing"] = {"otlp_endpoint": f"http://127.0.0.1:{features['otlp_port']}"}
    try:
        return start_failing_on(evhostd, binary, n, check_flow, flows, smtp, maildir, config,
                                dropins, tmp_path / f"evhost-{tag}", mine[0])
    finally:
        ports.give_back(*mine)


def start_faulty(evhostd, binary, config_dir, state_dir, port, n, **env):
    """evhostd_faults started (not waited for) with its Nth allocation failed
    (none: n=None), `env` added to the environment; its exit code is the
    caller's to check."""
    env = dict(os.environ, **env)
    env.pop("EVH_FAULT_ALLOC_AT", None)
    if n is not None:
        env["EVH_FAULT_ALLOC_AT"] = str(n)
    d = lib.Daemon(binary, config_dir, state_dir, port, env=env)
    d.expect_exit_code = None
    evhostd.daemons.append(d)
    d.start()
    return d


def start_failing_on(evhostd, binary, n, check_flow, flows, smtp, maildir, config, dropins,
                     config_dir, port):
    tag = "none" if n is None else n
    config_dir, state_dir, port = evhostd.write_config(config, dropins, config_dir=config_dir,
                                                       port=port)
    d = start_faulty(evhostd, binary, config_dir, state_dir, port, n)

    def ready_or_exited():
        if not d.running():
            return "exited"
        with contextlib.suppress(requests.RequestException):
            if requests.get(d.url + "/readyz", timeout=2).status_code == 200:
                return "ready"
        return None
    state = lib.wait_until(ready_or_exited, timeout=60, interval=0.02,
                           message=f"run {tag}: evhostd ready or exited")
    if state == "ready":
        # Failed before it said ready: it must serve as if nothing had been.
        if check_flow and (n is None or f"evh-fault: failing allocation {n}\n" in d.log_text()):
            email = f"oom-{tag}@example.com"
            r = requests.post(d.url + "/users", timeout=10, json={
                "name": "Oom", "email": email, "password": "a password!"})
            assert r.status_code == 201, (tag, r.status_code, r.text, d.log_tail())
            if smtp:
                smtp.wait_for(lambda m: m.envelope_to == [email], timeout=30)
            else:
                lib.wait_until(lambda: mail_for(maildir, email), timeout=30,
                               message=f"run {tag}: the welcome mail to {email}\n{d.log_tail()}")
            if flows is not None:
                flows.append(n)
        code = d.stop(timeout=30)
    else:
        code = d.proc.wait(10)
    d._close_log()
    log = d.log_text()
    assert not any(m in log for m in lib.SANITIZER_MARKERS), (tag, log)
    if f"evh-fault: allocation {n} failed" not in log:
        assert (state, code) == ("ready", 0), (tag, state, code, log)
        made = re.search(r"evh-fault: no allocation failed \((\d+) made\)", log)
        assert made, (tag, log)
        shutil.rmtree(config_dir)
        return int(made.group(1))
    if state == "exited":
        # Plugins its check loaded and unloaded can crash LeakSanitizer's
        # tracer at exit (lsan_tracer_crashed: warned of, its leak check not
        # run); the log still says what the run did.
        assert code == 1 or lib.lsan_tracer_crashed(code, log), (tag, code, log)
        assert re.search("out of memory|Cannot allocate memory", log), (tag, log)
        # Told as what it is: not a bad value, nor a file to move away.
        assert "invalid argument" not in log and "move the file away" not in log, (tag, log)
    else:
        assert code == 0, (tag, code, log)
    shutil.rmtree(config_dir)
    return None


def side_by_side(fn, calls):
    """fn(*args) for each args of `calls`, EVH_OOM_PARALLEL (default 6) at a
    time; the first failure is raised, the calls still queued cancelled."""
    parallel = int(os.environ.get("EVH_OOM_PARALLEL", "6"))
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        try:
            for f in futures:
                f.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def reload_failing(evhostd, binary, tmp_path, n, ports, features=None):
    """One run of the reload sweep below: evhostd_faults started with user
    and crud (notifications off), then reloaded (notifications on, crud's
    collections changed, a [log] key changed; with `features`, HTTPS and the
    admin API on, and the reload also replaces the admin token and the key
    tokens are signed with, and reads the certificate again), the Nth
    allocation of its main thread after SIGUSR2 failed (none for n=None):
    the reload's and, after it, the stop's. Returns how many those made when
    none failed, else None."""
    tag = "none" if n is None else n
    maildir = tmp_path / f"maildir-r{tag}"
    config, dropins = services_config(tmp_path, maildir)
    config["log"] = {"level": "info"}
    dropins["30-notifications.conf"]["plugin.notifications"]["enabled"] = "false"
    port, tls_port = ports.take(), ports.take()
    if features:
        config["http"] = {"tls_listen": f"127.0.0.1:{tls_port}",
                          "tls_certificate": str(features["pem"])}
        config["admin"] = {"token_file": str(features["token"])}
    try:
        config_dir, state_dir, port = evhostd.write_config(
            config, dropins, config_dir=tmp_path / f"evhost-r{tag}", port=port)
        d = start_faulty(evhostd, binary, config_dir, state_dir, port, n,
                         EVH_FAULT_ALLOC_ON_USR2="1", EVH_FAULT_ALLOC_THREADS=binary.name[:15])
        d.wait_healthy(timeout=60)
        d.wait_for_log("ready:", timeout=30)
        assert "failing allocation" not in d.log_text(), (tag, d.log_tail())
        confd = config_dir / "conf.d"
        (confd / "30-notifications.conf").write_text(
            (confd / "30-notifications.conf").read_text().replace("enabled = false",
                                                                  "enabled = true"))
        lib.write_ini(confd / "20-crud.conf", {"plugin.crud": {"collections": "products,orders"}})
        (confd / "40-log.conf").write_text("[log]\nplugin_rate_limit_burst = 4000\n")
        if features:
            lib.write_ini(confd / "50-keys.conf", {
                "auth": {"jwt_secret_file": str(features["secret"]),
                         "jwt_previous_secret_file": config["auth"]["jwt_secret_file"]},
                "admin": {"token_file": str(features["token2"])}})

        def reloaded(count):
            """Once the reload number `count` is over, done or refused."""
            ends = re.findall(r"reload done|reload refused: .*the running configuration stays",
                              d.log_text())
            return len(ends) >= count
        d.send_signal(signal.SIGUSR2)  # from here, the main thread's allocations count
        d.send_signal(signal.SIGHUP)
        lib.wait_until(lambda: reloaded(1) or not d.running(), timeout=60,
                       message=f"run {tag}: the reload's end\n{d.log_tail()}")
        assert d.running(), (tag, d.log_tail())
        assert requests.get(d.url + "/healthz", timeout=10).status_code == 200
        # What the reload left running still works, and one more reload (the
        # log's advice, with nothing failed now) applies all of it.
        r = requests.post(d.url + "/users", timeout=10, json={
            "name": "Oom", "email": f"oom-r{tag}@example.com", "password": "a password!"})
        assert r.status_code in (201, 503), (tag, r.status_code, r.text, d.log_tail())
        # A plugin the reload left off reads 0 in evhost_plugin_up (its series
        # went missing when memory for its place ran out before its start).
        metrics = requests.get(d.url + "/metrics", timeout=10).text
        for off in re.findall(r"reload: plugin '(\w+)' could not be started; it stays off",
                              d.log_text()):
            assert f'evhost_plugin_up{{plugin="{off}"}} 0' in metrics, (tag, off, metrics)
        if n is not None and f"evh-fault: failing allocation {n}\n" in d.log_text():
            d.send_signal(signal.SIGHUP)
            lib.wait_until(lambda: reloaded(2), timeout=60,
                           message=f"run {tag}: the second reload\n{d.log_tail()}")

        def ready():
            """[/readyz's answer] once 200 (a list: a 503 Response is false)."""
            r = requests.get(d.url + "/readyz", timeout=10)
            return [r] if r.status_code == 200 else None
        plugins = lib.wait_until(ready, timeout=30, message=f"run {tag}: ready\n{d.log_tail()}")[
            0].json()["plugins"]
        assert plugins == dict.fromkeys(("user", "crud", "notifications"), "running"), \
            (tag, plugins)
        email = f"oom-r{tag}-2@example.com"
        r = requests.post(d.url + "/users", timeout=10, json={
            "name": "Oom", "email": email, "password": "a password!"})
        assert r.status_code == 201, (tag, r.status_code, r.text, d.log_tail())
        lib.wait_until(lambda: mail_for(maildir, email), timeout=30,
                       message=f"run {tag}: the welcome mail to {email}\n{d.log_tail()}")
        if features:
            check_reloaded_features(d, tag, features, email, tls_port)
        code = d.stop(timeout=30)
        d._close_log()
        log = d.log_text()
        assert not any(m in log for m in lib.SANITIZER_MARKERS), (tag, log)
        assert code == 0, (tag, code, log)
        shutil.rmtree(config_dir)
        if f"evh-fault: allocation {n} failed" in log:
            return None
        made = re.search(r"evh-fault: no allocation failed \((\d+) made\)", log)
        assert made, (tag, log)
        return int(made.group(1))
    finally:
        ports.give_back(port, tls_port)


def check_reloaded_features(d, tag, features, email, tls_port):
    """What the features variant's reload replaced is in use: the new admin
    token (the old one refused), tokens signed with the new key, HTTPS."""
    admin = features["token2"].read_text().strip()
    old_admin = features["token"].read_text().strip()
    assert d.get("/admin/plugins", headers={"Authorization": f"Bearer {admin}"}) \
        .status_code == 200, (tag, d.log_tail())
    assert d.get("/admin/plugins", headers={"Authorization": f"Bearer {old_admin}"}) \
        .status_code == 401, tag
    r = d.post("/auth/login", json={"email": email, "password": "a password!"})
    assert r.status_code == 200, (tag, r.status_code, r.text)
    token = r.json()["token"]
    key = features["secret"].read_text().strip().encode()
    signature = base64.urlsafe_b64encode(hmac.new(key, token.rsplit(".", 1)[0].encode(),
                                                  hashlib.sha256).digest()).rstrip(b"=")
    assert token.rsplit(".", 1)[1] == signature.decode(), (tag, "not signed with the new key")
    payload = token.split(".")[1]
    sub = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]
    assert d.get(f"/users/{sub}", headers={"Authorization": f"Bearer {token}"}) \
        .status_code == 200, tag
    r = requests.get(f"https://127.0.0.1:{tls_port}/healthz", verify=str(features["ca"]),
                     timeout=10)
    assert r.status_code == 200, (tag, r.status_code)


@pytest.mark.parametrize("variant", ["plugins", "features"])
def test_reload_out_of_memory_keeps_serving_and_a_second_reload_applies_it(evhostd, build_dir,
                                                                          tmp_path, variant):
    # A running evhostd_faults (the three services from tests/fault-plugins)
    # reloaded into a configuration that starts a plugin, restarts one with new
    # values and changes [log]; its main thread's Nth allocation from the
    # reload on failed (the reload's work is that thread's), for some N
    # spread over the reload and the stop (below). The daemon never crashes nor
    # exits: it answers, a user can be created (or 503 when a plugin is off
    # for now), and a second reload applies the whole configuration: every
    # plugin running and the welcome mail sent ("features": with HTTPS and
    # the admin API, the reload also replacing the admin token and the
    # tokens' key, all in use after it). SIGTERM stops it with 0.
    binary = build_dir / "tests" / "fixtures" / "evhostd_faults"
    evhostd.plugin_dir = build_dir / "tests" / "fault-plugins"
    features = None
    if variant == "features":
        certs = lib.TlsCerts(tmp_path / "certs")
        features = {"pem": tmp_path / "server.pem", "ca": certs.ca_crt,
                    "token": tmp_path / "admin.token", "token2": tmp_path / "admin2.token",
                    "secret": tmp_path / "jwt2.secret"}
        features["pem"].write_text(certs.server_key.read_text() + certs.server_crt.read_text())
        features["token"].write_text("reload-out-of-memory-admin-token-0123456789\n")
        features["token2"].write_text("reload-out-of-memory-second-token-0123456789\n")
        features["secret"].write_text("reload-out-of-memory-second-secret-0123456789ab\n")
        for f in ("token", "token2", "secret"):
            features[f].chmod(0o600)
    ports = PortPool()
    started = time.monotonic()
    total = reload_failing(evhostd, binary, tmp_path, None, ports, features)
    assert total and total > 100, total
    # About 30 runs (12 in a sanitized build), each build from its own offset
    # so that the three passes fail different allocations; EVH_OOM_STRIDE=1
    # tries every one (about 500: 5 to 9 minutes).
    kind = lib.sanitizer(build_dir)
    stride = int(os.environ.get("EVH_OOM_STRIDE") or max(1, total // (12 if kind else 30)))
    offset = {None: 0, "asan": stride // 3, "tsan": 2 * stride // 3}[kind]
    runs = list(range(offset if stride > 1 else 0, total, stride))
    side_by_side(reload_failing, [(evhostd, binary, tmp_path, n, ports, features)
                                  for n in runs])
    print(f"reload ({variant}): {total} allocations, {len(runs)} runs (one in {stride}), "
          f"{time.monotonic() - started:.0f} s")


def test_signals_a_handler_takes_leave_the_embedded_broker_serving(evhostd, build_dir, tmp_path):
    # A signal with a handler (a plugin's, or here the fault fixture's
    # SIGUSR2, counting no failure) goes to any thread that does not block
    # it: one that landed on the embedded broker's thread interrupted its
    # poll, and librdkafka's mock cluster then stopped for good (the reload
    # sweep above once lost its broker that way). Sent to each thread that
    # does not block it, 20 times: every thread carries on (an interrupted
    # wait is waited again), the flow works, and the log says nothing failed.
    binary = build_dir / "tests" / "fixtures" / "evhostd_faults"
    evhostd.plugin_dir = build_dir / "tests" / "fault-plugins"
    maildir = tmp_path / "maildir"
    config, dropins = services_config(tmp_path, maildir)
    config_dir, state_dir, port = evhostd.write_config(config, dropins)
    d = start_faulty(evhostd, binary, config_dir, state_dir, port, None,
                     EVH_FAULT_ALLOC_ON_USR2="1")
    d.wait_healthy(timeout=60)
    d.wait_for_log("ready:", timeout=30)
    tgkill = ctypes.CDLL(None, use_errno=True).tgkill
    threads = 0
    for tid in os.listdir(f"/proc/{d.proc.pid}/task"):
        try:
            status = Path(f"/proc/{d.proc.pid}/task/{tid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            continue
        blocked = int(re.search(r"^SigBlk:\s*([0-9a-f]+)", status, re.M).group(1), 16)
        if not blocked & (1 << (signal.SIGUSR2 - 1)):
            threads += 1
            for _ in range(20):
                assert tgkill(d.proc.pid, int(tid), signal.SIGUSR2) == 0 \
                    or ctypes.get_errno() == errno.ESRCH  # a thread that ended meanwhile
    assert threads > 1, threads
    email = "signals@example.com"
    r = requests.post(d.url + "/users", timeout=10, json={
        "name": "Signals", "email": email, "password": "a password!"})
    assert r.status_code == 201, (r.status_code, r.text, d.log_tail())
    lib.wait_until(lambda: mail_for(maildir, email), timeout=30,
                   message=f"the welcome mail to {email}\n{d.log_tail()}")
    assert d.stop(timeout=30) == 0, d.log_tail()
    log = d.log_text()
    assert "Mock cluster failed" not in log and "Interrupted system call" not in log, log


@pytest.mark.parametrize("variant", ["maildir", "smtp", "features"])
def test_start_out_of_memory_exits_saying_so_or_serves(evhostd, build_dir, tmp_path, variant,
                                                       request):
    # evhostd started with the three services (from tests/fault-plugins, their
    # allocations counted too), mail to a Maildir, or over SMTP to a real
    # SMTP server ("smtp"), or to a Maildir with HTTPS, the admin API and
    # tracing on ("features"), its Nth allocation failed, for every Nth in
    # lib.oom_stride (3, or 6 for the other two; three times that in a
    # sanitized build) of those a start, a user's creation, its welcome mail
    # and a stop make; each run a first start on empty state,
    # EVH_OOM_PARALLEL (default 6) at a time (each waits 3 s for the embedded
    # broker's consumer group). It either exits 1 soon, saying out of memory,
    # or becomes ready; then, if the allocation was failed before it said
    # ready, the flow works: a user created gets the welcome mail. Either way
    # SIGTERM stops it with 0. Never a crash, a hang, or a silent loss.
    binary = build_dir / "tests" / "fixtures" / "evhostd_faults"
    evhostd.plugin_dir = build_dir / "tests" / "fault-plugins"
    smtp = request.getfixturevalue("smtp_server") if variant == "smtp" else None
    features = None
    if variant == "features":
        certs = lib.TlsCerts(tmp_path / "certs")
        features = {"pem": tmp_path / "server.pem", "token": tmp_path / "admin.token",
                    "otlp_port": lib.free_port()}  # nobody listens: spans are dropped
        features["pem"].write_text(certs.server_key.read_text() + certs.server_crt.read_text())
        features["token"].write_text("out-of-memory-admin-token-0123456789\n")
        features["token"].chmod(0o600)
    stride = lib.oom_stride(build_dir, 3 if variant == "maildir" else 6)
    started = time.monotonic()
    total = start_failing(evhostd, binary, tmp_path, None, check_flow=False, smtp=smtp,
                          features=features)
    runs, flows, ports = list(range(0, total, stride)), [], PortPool()
    side_by_side(lambda n: start_failing(evhostd, binary, tmp_path, n, flows=flows, smtp=smtp,
                                         features=features, ports=ports),
                 [(n,) for n in runs])
    print(f"start-up ({variant}): {total} allocations, {len(runs)} runs (one in {stride}), "
          f"{len(flows)} ready after the failure and checked, "
          f"{time.monotonic() - started:.0f} s")
    # Some failures are survived (a log line without its decoration, say):
    # the flow was checked after them (about one run in eight: a sparser
    # sweep may meet none).
    assert flows or len(runs) < 80
