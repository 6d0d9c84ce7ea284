"""evhostctl, the admin API's command-line client, against the real daemon:
every subcommand, its exit statuses (0 ok, 1 failed, 2 usage, 3 unreachable,
4 auth), enable/disable through a conf.d drop-in and POST /admin/reload (the
plugin's route really goes 404/200), the --systemd fallback, and the dead
letter and replay commands against real Kafka."""

import contextlib
import fcntl
import http.server
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

import evhost_testlib as lib

TOKEN = "admin-token-for-tests-0123456789"
DROPIN = "90-evhostctl-probe.conf"


def ctl(build_dir, d, *args, timeout=120, env=None, conf=None):
    """Run evhostctl -c <the daemon's evhost.conf> ARGS; return the CompletedProcess."""
    cmd = [str(build_dir / "host" / "evhostctl"), "-c", str(conf or d.config_file), *args]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def assert_one_error(r, code, needle):
    """Exit status `code` and one "evhostctl: ..." line on stderr containing `needle`."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines and all(line.startswith("evhostctl: ") for line in lines), r.stderr
    assert needle in r.stderr, r.stderr


def probe_conf(build_dir, **keys):
    conf = {"path": str(build_dir / "tests" / "fixtures" / "probe.so")}
    conf.update(keys)
    return conf


def admin_daemon(evhostd, build_dir, tmp_path, brokers=None, sign=False, **probe):
    """hello.so and the probe plugin, an admin token, and with `sign` an
    [auth] key (for sign-out)."""
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    config = {"admin": {"token_file": str(token)}}
    if sign:
        secret = tmp_path / "jwt.key"
        secret.write_bytes(os.urandom(48).hex().encode())
        config["auth"] = {"jwt_secret_file": str(secret)}
    return evhostd(config, dropins={
        "10-hello.conf": {"plugin.hello": {"path": str(build_dir / "plugins" / "hello.so")}},
        "20-probe.conf": {"plugin.probe": probe_conf(build_dir, **probe)},
    }, brokers=brokers)


def auth():
    return {"Authorization": f"Bearer {TOKEN}"}


def dropin_text(enabled):
    return (f"; written by evhostctl {'enable' if enabled else 'disable'}: "
            f"evhostctl enable|disable probe changes it\n"
            f"[plugin.probe]\nenabled = {'true' if enabled else 'false'}\n")


# ------------------------------------------------------ embedded broker


def test_status_plugins_events(evhostd, build_dir, tmp_path):
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    r = ctl(build_dir, d, "status")
    assert r.returncode == 0, r.stderr
    assert f"evhostd at {d.url}: serving, ready" in r.stdout
    assert "kafka: reachable, storage: writable" in r.stdout
    rows = {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()[3:]}
    assert rows == {"hello": "running", "probe": "running"}
    r = ctl(build_dir, d, "status", "--json")
    assert json.loads(r.stdout) == d.get("/readyz").json()

    r = ctl(build_dir, d, "plugins")
    assert r.returncode == 0, r.stderr
    head, *lines = r.stdout.splitlines()
    assert head.split() == ["NAME", "STATE", "VERSION", "GROUP", "OUTBOX", "EVENTS",
                            "STORAGE", "SUBSCRIPTIONS"]
    cols = {line.split()[0]: line.split() for line in lines}
    assert cols["probe"] == ["probe", "running", "1.0", "evhost.probe", "0", "0", "ok", "-"]
    assert cols["hello"][1] == "running" and cols["hello"][7] == "hello.events"
    r = ctl(build_dir, d, "--json", "plugins")
    assert json.loads(r.stdout) == d.get("/admin/plugins", headers=auth()).json()

    assert d.post("/probe/publish?key=order-7&n=2", json={"o": 7}).status_code == 200
    assert d.post("/probe/publish?key=order-8", json={"o": 8}).status_code == 200

    def events():
        r = ctl(build_dir, d, "events", "--plugin", "probe", "--aggregate", "order-7")
        return r if r.returncode == 0 and len(r.stdout.splitlines()) == 3 else None
    r = lib.wait_until(events, timeout=20, message="two events of order-7")
    head, *lines = r.stdout.splitlines()
    assert head.split() == ["TIME", "PLUGIN", "TYPE", "KEY", "WHERE", "ID"]
    assert all(line.split()[1:4] == ["probe", "probe.event", "order-7"] for line in lines)
    r = ctl(build_dir, d, "events", "--json", "--limit", "1")
    assert len(json.loads(r.stdout)["events"]) == 1
    r = ctl(build_dir, d, "events", "--aggregate", "nobody")
    assert r.returncode == 0 and r.stdout == "no events\n"
    assert_one_error(ctl(build_dir, d, "events", "--plugin", "nobody"), 1, "no plugin named")


def test_no_proxy_is_handed_the_admin_token(evhostd, build_dir, tmp_path):
    # A proxy in evhostctl's environment (sudo brings http_proxy along from
    # /etc/environment) is not used: it would get the admin token, and the
    # request would reach the proxy's own loopback, not the daemon.
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    with lib.ConnectProxy(routes={}) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        r = ctl(build_dir, d, "plugins", env={"http_proxy": url, "HTTPS_PROXY": url,
                                              "ALL_PROXY": url, "no_proxy": ""})
        assert r.returncode == 0, r.stderr
        assert not proxy.forwards and not proxy.connects, (proxy.forwards, proxy.connects)


def test_a_typo_in_a_dropin_stops_only_what_it_may_hide(evhostd, build_dir, tmp_path):
    # The daemon runs what it read before the typo; evhostctl says the typo
    # and goes on, unless a key it needs is unset and could have been in
    # the lines the typo kept from being read.
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    probe = d.config_dir / "conf.d" / "20-probe.conf"
    probe.write_text(probe.read_text() + "this line is a typo\n")
    for args in (["status"], ["plugins"]):
        r = ctl(build_dir, d, *args)
        assert r.returncode == 0, r.stderr
        assert r.stderr == (f"evhostctl: warning: {probe}:4: syntax error (expected "
                            "'[section]' or 'key = value') (the daemon refuses this "
                            "configuration at its next reload or start; 'evhostctl check' "
                            "says all)\n"), r.stderr
    # A key evhostctl needs set past the typo (the daemon read it before the
    # typo was made): not taken from what was read before it.
    main = tmp_path / "main.conf"
    confd = tmp_path / "other.d"
    confd.mkdir()
    main.write_text(f"[host]\nconfdir = {confd}\n[http]\nlisten = 127.0.0.1:9\n")
    dropin = confd / "50-local.conf"
    dropin.write_text(f"[http]\nthis line is a typo\nlisten = {d.url.split('//')[1]}\n")
    r = ctl(build_dir, d, "status", conf=main)
    assert r.returncode == 1, r.stderr
    assert (f"evhostctl: {dropin}:3 sets [http] listen past a line that could not be read "
            f"({dropin}:2: syntax error (expected '[section]' or 'key = value')); evhostctl "
            "does not know where the daemon listens (fix it, or pass --url)\n") in r.stderr, \
        r.stderr
    # The section header itself broken: its section unknown, the key counts.
    dropin.write_text(f"[http\nlisten = {d.url.split('//')[1]}\n")
    r = ctl(build_dir, d, "status", conf=main)
    assert r.returncode == 1 and f"{dropin}:2 sets [http] listen past a line" in r.stderr, \
        r.stderr
    # Set nowhere past the typo: what was read stands.
    dropin.write_text("[http]\nthis line is a typo\n")
    main.write_text(f"[host]\nconfdir = {confd}\n[http]\nlisten = {d.url.split('//')[1]}\n")
    assert ctl(build_dir, d, "status", conf=main).returncode == 0
    # A drop-in that cannot be read at all (a link to nothing): a key
    # evhostctl needs, set nowhere it read, is not guessed; set, it stands.
    dropin.unlink()
    gone = confd / "60-gone.conf"
    gone.symlink_to(tmp_path / "nothing-here.conf")
    main.write_text(f"[host]\nconfdir = {confd}\n")
    r = ctl(build_dir, d, "status", conf=main)
    assert r.returncode == 1, r.stderr
    assert (f"evhostctl: {gone}: cannot read: No such file or directory: [http] listen may be "
            "in what could not be read; evhostctl does not know where the daemon listens (fix "
            "it, or pass --url)\n") in r.stderr, r.stderr
    main.write_text(f"[host]\nconfdir = {confd}\n[http]\nlisten = {d.url.split('//')[1]}\n")
    assert ctl(build_dir, d, "status", conf=main).returncode == 0
    gone.unlink()
    # The conf.d after a typo in the main file: not guessed either.
    main.write_text(f"oops\n[host]\nconfdir = {confd}\n")
    r = ctl(build_dir, d, "disable", "probe", "--url", d.url, conf=main)
    assert r.returncode == 1, r.stderr
    assert (f"evhostctl: {main}:3 sets [host] confdir past a line that could not be read "
            f"({main}:1: syntax error (expected '[section]' or 'key = value')); evhostctl does "
            "not know which conf.d the daemon reads (fix it)\n") in r.stderr, r.stderr


def test_a_typo_anywhere_stops_enable_and_disable_before_they_write(build_dir, tmp_path):
    # The daemon refuses to reload a configuration with a syntax error in
    # any file: enable and disable wrote the drop-in, could not read the
    # configuration again to check it ("cannot read the configuration again
    # to check ...", as if it were evhostctl's own problem), and put it back.
    # Now said first, as what the daemon would do, and nothing written.
    token, confd, conf = stand_in_install(tmp_path)
    crud = confd / "20-crud.conf"
    crud.write_text("[plugin.crud]\nenabled = true\ncollections = products\n"
                    "this line is a typo\n")
    asked = []
    for cmd, dropin in (("disable", None), ("enable", dropin_text(False))):
        if dropin:
            (confd / DROPIN).write_text(dropin)
        with served_by(routed(APPLIED, asked)) as url:
            r = run_ctl(build_dir, "-c", str(conf), "--url", url, "--token-file", str(token),
                        cmd, "probe")
        assert_one_error(r, 1, "")
        assert r.stderr == (f"evhostctl: {crud}:4: syntax error (expected '[section]' or 'key = "
                            "value'): the daemon would refuse the reload; fix it first "
                            f"('evhostctl -c {conf} check' says all); nothing was written\n"), \
            r.stderr
        if dropin:
            assert (confd / DROPIN).read_text() == dropin
        else:
            assert not (confd / DROPIN).exists()
        assert not any(isinstance(a, tuple) for a in asked), asked  # no reload asked


def test_events_follow_the_log_with_after(evhostd, build_dir, tmp_path):
    # A page says where to continue (next_after, truncated); --after follows
    # one plugin's log page by page, each event once, and the footer gives the
    # command for the next page.
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    assert d.post("/probe/publish?key=k&n=5", json={"o": 1}).status_code == 200

    def all_five():
        b = d.get("/admin/events", headers=auth(), params={"plugin": "probe"}).json()
        return b if len(b["events"]) == 5 else None
    body = lib.wait_until(all_five, timeout=20, message="five events in the log")
    seqs = [e["seq"] for e in body["events"]]
    assert body["truncated"] is False and body["next_after"] == seqs[-1], body
    page = d.get("/admin/events", headers=auth(),
                 params={"plugin": "probe", "limit": 2, "after": seqs[1]}).json()
    assert [e["seq"] for e in page["events"]] == seqs[2:4]
    assert page["truncated"] is True and page["next_after"] == seqs[3], page
    end = d.get("/admin/events", headers=auth(),
                params={"plugin": "probe", "after": seqs[-1]}).json()
    assert end["events"] == [] and end["next_after"] == seqs[-1] and not end["truncated"]

    got, after = [], None
    for _ in range(5):
        args = ["events", "--plugin", "probe", "--limit", "2"]
        r = ctl(build_dir, d, *args, *(["--after", after] if after else []))
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        more = [x for x in lines if x.startswith("(there may be more events: ")]
        got += [x.split()[-1] for x in lines[1:] if not x.startswith("(")]
        if not more:
            break
        # The same daemon (-c) and page size (--limit) as this run's.
        assert more[0] == f"(there may be more events: evhostctl -c {d.config_file} events " \
            f"--plugin probe --limit 2 --after {seqs[len(got) - 1]})", r.stdout
        after = more[0].rstrip(")").split()[-1]
    assert got == [e["id"] for e in body["events"]], (got, r.stdout)
    assert_one_error(ctl(build_dir, d, "events", "--after", "3"), 2, "--after needs --plugin")
    assert_one_error(ctl(build_dir, d, "events", "--plugin", "probe", "--after", "-1"), 2,
                     "--after takes an event's seq")
    assert_one_error(ctl(build_dir, d, "status", "--after", "3"), 2,
                     "--after does not apply to 'status'")


def test_enable_disable_toggle_the_plugin(evhostd, build_dir, tmp_path):
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    confd = d.config_dir / "conf.d"
    dropin = confd / DROPIN
    assert d.get("/probe/seen").status_code == 200

    r = ctl(build_dir, d, "disable", "probe")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"probe: disabled, stopped ({dropin})\n"
    assert dropin.read_text() == dropin_text(False)
    assert stat.S_IMODE(dropin.stat().st_mode) == 0o644
    assert d.get("/probe/seen").status_code == 404
    assert d.get("/hello").status_code == 200
    names = [p["name"] for p in d.get("/admin/plugins", headers=auth()).json()["plugins"]]
    assert names == ["hello"]
    assert "reload done: 0 started, 1 stopped, 1 unchanged" in d.log_text()

    r = ctl(build_dir, d, "enable", "probe")
    assert r.returncode == 0, r.stderr
    assert dropin.read_text() == dropin_text(True)
    assert d.get("/probe/seen").status_code == 200
    # Written atomically: no temporary file is left beside it.
    assert sorted(p.name for p in confd.iterdir()) == ["10-hello.conf", "20-probe.conf", DROPIN]

    # A refused reload (an error elsewhere) puts the drop-in back and changes nothing.
    (confd / "50-bad.conf").write_text("[http]\nthreads = many\n")
    r = ctl(build_dir, d, "disable", "probe")
    assert_one_error(r, 1, "refused the new configuration")
    assert dropin.read_text() == dropin_text(True)
    assert d.get("/probe/seen").status_code == 200
    assert "reload refused: " in d.log_text() and "50-bad.conf:2:" in d.log_text()
    r = ctl(build_dir, d, "check")
    assert r.returncode == 1 and "50-bad.conf:2: [http] threads" in r.stdout, r.stdout
    (confd / "50-bad.conf").unlink()
    r = ctl(build_dir, d, "check")
    assert r.returncode == 0 and "configuration OK (2 plugins)" in r.stdout, r.stdout

    # A later drop-in would override ours: refused before any reload.
    (confd / "95-local.conf").write_text("[plugin.probe]\nenabled = true\n")
    r = ctl(build_dir, d, "disable", "probe")
    assert_one_error(r, 1, "95-local.conf:2 sets [plugin.probe] enabled after " + DROPIN)
    assert dropin.read_text() == dropin_text(True)
    assert d.get("/probe/seen").status_code == 200
    (confd / "95-local.conf").unlink()

    # A plugin that does not start: the enable fails and the drop-in goes away.
    dropin.unlink()
    assert ctl(build_dir, d, "disable", "probe").returncode == 0
    dropin.unlink()  # disabled now by the 20-probe.conf below, not by us
    (confd / "20-probe.conf").write_text(
        "[plugin.probe]\nenabled = false\n"
        f"path = {build_dir / 'tests' / 'fixtures' / 'init_fails.so'}\n")
    r = ctl(build_dir, d, "enable", "probe")
    assert r.returncode == 1 and "did not start" in r.stderr, r.stderr
    assert not dropin.exists()
    assert d.get("/probe/seen").status_code == 404

    assert_one_error(ctl(build_dir, d, "enable", "nobody"), 1, "no [plugin.nobody] section")
    assert not (confd / "90-evhostctl-nobody.conf").exists()


def test_a_reload_longer_than_the_timeout(evhostd, build_dir, tmp_path):
    # The probe's init takes 3 s: `enable --timeout 1` does not wait for the
    # daemon's own 60 s, it asks for an answer within its timeout (202, the
    # reload still running) and says the plugin is not running yet; the
    # drop-in stays, and the reload ends by itself.
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    dropin = d.config_dir / "conf.d" / DROPIN
    assert ctl(build_dir, d, "disable", "probe").returncode == 0
    probe = d.config_dir / "conf.d" / "20-probe.conf"
    probe.write_text(probe.read_text() + "init_sleep_ms = 3000\n")
    r = ctl(build_dir, d, "--timeout", "1", "enable", "probe")
    assert_one_error(r, 1, f"plugin 'probe' is not running after 1 s; {dropin} stays written")
    assert d.get("/probe/seen").status_code != 200  # the reload runs on
    assert dropin.read_text() == dropin_text(True)
    lib.wait_until(lambda: d.get("/probe/seen").status_code == 200, timeout=30,
                   message="the probe running once its init is done")
    assert "probe: init sleeping 3000 ms" in d.log_text()
    # --json prints the daemon's 202 as it is.
    assert ctl(build_dir, d, "disable", "probe").returncode == 0
    r = ctl(build_dir, d, "--json", "--timeout", "1", "enable", "probe")
    assert r.returncode == 1, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["result"] == "pending", r.stdout
    lib.wait_until(lambda: d.get("/probe/seen").status_code == 200, timeout=30,
                   message="the probe running again")


def test_a_plugin_that_did_not_start_is_reloaded_off_again(evhostd, build_dir, tmp_path):
    # `enable` applied, but the plugin's init failed (its values passed the
    # check: a templates_dir without templates, here init_fails.so): the
    # drop-in is put back, and one more reload makes the daemon run what the
    # files say again. Before, the plugin stayed listed as failed, /readyz
    # 503 and `status` NOT READY until someone reloaded.
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    confd = d.config_dir / "conf.d"
    dropin = confd / DROPIN
    assert ctl(build_dir, d, "disable", "probe").returncode == 0
    (confd / "20-probe.conf").write_text(
        f"[plugin.probe]\npath = {build_dir / 'tests' / 'fixtures' / 'init_fails.so'}\n")
    r = ctl(build_dir, d, "enable", "probe")
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == [
        "evhostctl: the reload was applied but plugin 'probe' did not start (see the "
        "daemon's log)",
        f"evhostctl: {dropin} was put back as it was",
        f"evhostctl: reloaded again with {dropin} put back, so that what runs matches the "
        "files: plugin 'probe' is off"], r.stderr
    assert dropin.read_text() == dropin_text(False)
    assert "cannot reach the license server" in d.log_text()
    ready = d.get("/readyz")
    assert ready.status_code == 200 and "probe" not in ready.json()["plugins"], ready.text
    r = ctl(build_dir, d, "status")
    assert r.returncode == 0 and "serving, ready" in r.stdout, (r.stdout, r.stderr)
    # --json: both of the daemon's answers, one a line.
    r = ctl(build_dir, d, "--json", "enable", "probe")
    assert r.returncode == 1, r.stderr
    answers = [json.loads(line) for line in r.stdout.splitlines()]
    assert [a["result"] for a in answers] == ["applied", "applied"], r.stdout
    # The first lists the plugin that could not start, failed (it was left out).
    assert {"name": "probe", "state": "failed"} in answers[0]["plugins"], answers[0]
    assert "probe" not in [p["name"] for p in answers[1]["plugins"]], answers[1]
    assert d.get("/readyz").status_code == 200


def test_a_disable_whose_drain_outlasts_the_timeout_is_not_called_done(evhostd, build_dir,
                                                                        tmp_path):
    # A request of the plugin still in its handler holds the reload's drain:
    # the plugin is out of the running list, but not stopped. It is listed
    # "stopping" (/admin/plugins, /readyz) until its drain and fini are
    # done, and evhostctl, whose --timeout runs out meanwhile, says it is not
    # stopped (exit 1). Before, the plugin's absence from the list was taken
    # for done: "probe: disabled, stopped", exit 0, its handler still running.
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    slow = {}
    t = threading.Thread(target=lambda: slow.update(r=d.post(
        "/probe/publish?sleep_ms=15000", json={"slow": 1}, timeout=60)))
    t.start()
    d.wait_for_log("probe: sleeping 15000 ms", timeout=10)
    r = ctl(build_dir, d, "disable", "probe", "--timeout", "2")
    assert_one_error(r, 1, "plugin 'probe' is not stopped after 2 s")
    states = {p["name"]: p["state"]
              for p in d.get("/admin/plugins", headers=auth()).json()["plugins"]}
    assert states == {"hello": "running", "probe": "stopping"}, states
    # Its dead letters, redrives and replays meanwhile: 409, not 404 (it
    # exists) nor 503 (it will not run again by itself).
    for method, path, body in (("GET", "/admin/plugins/probe/dlq", None),
                               ("POST", "/admin/plugins/probe/dlq/redrive", {}),
                               ("POST", "/admin/plugins/probe/replay", {"from": "beginning"})):
        r = requests.request(method, d.url + path, headers=auth(), json=body, timeout=30)
        assert r.status_code == 409, (path, r.text)
        assert r.json()["detail"] == ("plugin 'probe' is not running (a reload is stopping "
                                      "it): nothing was done"), (path, r.text)
    ready = d.get("/readyz")
    assert ready.status_code == 200 and ready.json()["plugins"]["probe"] == "stopping", ready.text
    listed = ctl(build_dir, d, "plugins")
    assert re.search(r"^probe +stopping +- +- +- +- +- +-$", listed.stdout, re.M), listed.stdout
    t.join(60)
    assert slow["r"].status_code == 200, slow["r"].text
    d.wait_for_log("reload done: 0 started, 1 stopped, 1 unchanged", timeout=30)
    names = [p["name"] for p in d.get("/admin/plugins", headers=auth()).json()["plugins"]]
    assert names == ["hello"]
    assert "probe" not in d.get("/readyz").json()["plugins"]


def test_a_plugin_that_still_runs_after_disable_is_reloaded_as_the_files_say(
        evhostd, build_dir, tmp_path):
    # The other way round: `disable` applied, but the plugin still runs (a
    # drop-in that enables it again came after evhostctl's check and before
    # the reload read the files). The drop-in is put back and the daemon
    # reloaded again, so that its configuration is the files' once more.
    # The window: a reload already running (a second probe whose init takes
    # 4 s), which evhostctl's reload waits behind.
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    confd = d.config_dir / "conf.d"
    dropin = confd / DROPIN
    (confd / "30-slow.conf").write_text(
        f"[plugin.slow]\npath = {build_dir / 'tests' / 'fixtures' / 'probe.so'}\n"
        "routes = false\nsubscribe = false\ninit_sleep_ms = 4000\n")
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("probe: init sleeping 4000 ms", timeout=20)
    cmd = [str(build_dir / "host" / "evhostctl"), "-c", str(d.config_file), "disable", "probe"]
    with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as ctl_proc:
        lib.wait_until(lambda: dropin.exists() and dropin.read_text() == dropin_text(False),
                       timeout=3, interval=0.02, message="the drop-in written")
        time.sleep(0.3)  # evhostctl's check of later drop-ins is done: now its reload waits
        (confd / "95-local.conf").write_text("[plugin.probe]\nenabled = true\n")
        out, err = ctl_proc.communicate(timeout=120)
    assert ctl_proc.returncode == 1, (out, err)
    assert err.splitlines() == [
        "evhostctl: the reload was applied but plugin 'probe' still runs (see the daemon's "
        "log)",
        f"evhostctl: {dropin} was removed (there was none before)",
        f"evhostctl: reloaded again with {dropin} put back, so that what runs matches the "
        "files: plugin 'probe' is running"], err
    assert not dropin.exists()
    assert d.get("/probe/seen").status_code == 200
    assert d.log_text().count("reload #") == 2, d.log_tail()


def test_toggles_run_at_once_take_turns(evhostd, build_dir, tmp_path):
    # 20 runs at once, enable and disable of one plugin and disable of five
    # others: each holds a lock on conf.d (flock of the directory) from
    # reading its drop-in until its reload is done, so each sees its own
    # change applied (exit 0), and none puts back a drop-in another wrote.
    # Before, a run saw another's change in the daemon's answer ("did not
    # start", "still runs"), put back what it had read before that other
    # run wrote, and the files ended as neither had asked.
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    confd = d.config_dir / "conf.d"
    others = [f"q{i}" for i in range(5)]
    for name in others:
        (confd / f"30-{name}.conf").write_text(
            f"[plugin.{name}]\npath = {build_dir / 'tests' / 'fixtures' / 'probe.so'}\n"
            "routes = false\nsubscribe = false\n")
    assert d.post("/admin/reload", headers=auth(), timeout=70).status_code == 200
    runs = [("enable" if i % 2 else "disable", "probe") for i in range(15)]
    for i, name in enumerate(others):
        runs.insert(3 * i + 1, ("disable", name))
    exe = str(build_dir / "host" / "evhostctl")
    procs = [subprocess.Popen([exe, "-c", str(d.config_file), cmd, name],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for cmd, name in runs]
    for (cmd, name), p in zip(runs, procs):
        out, err = p.communicate(timeout=120)
        done = "enabled, running" if cmd == "enable" else "disabled, stopped"
        assert (p.returncode, out, err) == \
            (0, f"{name}: {done} ({confd / f'90-evhostctl-{name}.conf'})\n", ""), (cmd, name)
    assert sorted(p.name for p in confd.iterdir()) == sorted(
        ["10-hello.conf", "20-probe.conf", DROPIN] + [f"30-{n}.conf" for n in others] +
        [f"90-evhostctl-{n}.conf" for n in others])
    for name in others:
        assert (confd / f"90-evhostctl-{name}.conf").read_text() == \
            dropin_text(False).replace("probe", name)
    # What runs is what the files say.
    on = (confd / DROPIN).read_text() == dropin_text(True)
    assert on or (confd / DROPIN).read_text() == dropin_text(False)
    names = sorted(p["name"] for p in d.get("/admin/plugins", headers=auth()).json()["plugins"])
    assert names == (["hello", "probe"] if on else ["hello"])
    # A run that cannot have the lock within --timeout writes nothing, and
    # names who holds it (this test's process).
    held = os.open(confd, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        r = ctl(build_dir, d, "--timeout", "1", "enable", "q0")
    finally:
        os.close(held)
    assert_one_error(r, 1, f"evhostctl: process {os.getpid()} (")
    assert r.stderr.endswith(f") has held the lock on {confd} past --timeout (1 s); nothing "
                             "was written: run the command again once it is done\n"), r.stderr
    assert (confd / "90-evhostctl-q0.conf").read_text() == dropin_text(False).replace("probe", "q0")


# Takes an exclusive flock(2) on directory argv[1], says "locked", holds it
# argv[2] seconds.
HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


# A daemon's answers for a stand-in (routed): probe runs, a reload applies.
LISTED = b'{"plugins": [{"name": "probe", "state": "running"}]}'
APPLIED = {"/admin/plugins": (200, LISTED),
           "/admin/reload": (200, b'{"result": "applied", "plugins": []}')}


def stand_in_install(tmp_path):
    """An install's files for evhostctl against a stand-in daemon: the admin
    token, conf.d with probe enabled, evhost.conf. (token, confd, conf)."""
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    confd = tmp_path / "conf.d"
    confd.mkdir()
    (confd / "20-probe.conf").write_text("[plugin.probe]\nenabled = true\n")
    conf = tmp_path / "evhost.conf"
    conf.write_text("[kafka]\nbrokers = embedded\n")
    return token, confd, conf


def ctl_while_locked(build_dir, confd, args, hold_s, timeout, asked, wrap=()):
    """evhostctl ARGS --timeout TIMEOUT against a stand-in daemon (APPLIED; the
    requests it had in `asked`) while another process holds the lock on conf.d
    for hold_s seconds (killed once evhostctl is done). (result, its pid)."""
    with served_by(routed(APPLIED, asked)) as url, \
            subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(confd), str(hold_s)],
                             stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout.readline() == "locked\n"
        r = run_ctl(build_dir, "--url", url, "--timeout", str(timeout), *args, wrap=wrap)
        holder.kill()
    return r, holder.pid


def test_the_wait_for_the_lock_counts_in_the_timeout(build_dir, tmp_path):
    # --timeout bounds the whole of enable and disable. The wait for the
    # lock on conf.d came on top of it: a run that waited 5 s of its 10 for
    # the lock still gave the reload all 10 (?wait=10). Now what is left.
    # And a run whose --timeout ends in that wait names the lock's holder.
    token, confd, conf = stand_in_install(tmp_path)
    args = ["-c", str(conf), "--token-file", str(token), "disable", "probe"]
    asked = []
    # Held 5 s: evhostctl, started up to 4 s late on a loaded machine, still
    # waits a second of it.
    r, _ = ctl_while_locked(build_dir, confd, args, 5, 10, asked)
    assert r.returncode == 0, r.stderr
    posts = [a[0] for a in asked if isinstance(a, tuple)]
    assert len(posts) == 1, asked
    wait = re.fullmatch(r"/admin/reload\?wait=(\d+)", posts[0])
    assert wait and 1 <= int(wait.group(1)) <= 9, posts
    (confd / DROPIN).unlink()

    # Held past --timeout: said, with the holder, and nothing written.
    del asked[:]
    r, pid = ctl_while_locked(build_dir, confd, args, 60, 1, asked)
    assert_one_error(r, 1, f"evhostctl: process {pid} ({sys.executable} -c ?import "
                           f"fcntl, os, sys, time?")
    assert f") has held the lock on {confd} past --timeout (1 s); nothing was written" in \
        r.stderr, r.stderr
    assert not (confd / DROPIN).exists()
    assert all(isinstance(a, str) for a in asked), asked  # no reload asked


def test_a_lock_holder_out_of_sight_is_left_unnamed(build_dir, tmp_path):
    # evhostctl in a PID namespace of its own (a container beside the host's
    # runs) sees none of the host's locks in /proc/locks: it cannot name the
    # holder, says it is another run and where to look.
    ns = ["unshare", "--pid", "--fork", "--mount-proc"]
    if subprocess.run([*ns, "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare --pid is refused here")
    token, confd, conf = stand_in_install(tmp_path)
    args = ["-c", str(conf), "--token-file", str(token), "disable", "probe"]
    asked = []
    r, _ = ctl_while_locked(build_dir, confd, args, 60, 1, asked, wrap=ns)
    assert_one_error(r, 1, f"evhostctl: another evhostctl enable or disable has held the lock "
                           f"on {confd} past --timeout (1 s); nothing was written: run the "
                           "command again once it is done (lslocks names who holds it)\n")
    assert not (confd / DROPIN).exists()
    assert all(isinstance(a, str) for a in asked), asked  # no reload asked


def test_a_refused_reload_says_its_problems_as_the_daemon_read_them(evhostd, build_dir,
                                                                    tmp_path):
    # The daemon's answer lists them: `check`, run as root, may read a file
    # the daemon's user may not, and pass (it sent the operator there).
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    confd = d.config_dir / "conf.d"
    (confd / "50-bad.conf").write_text("[http]\nthreads = many\n")
    (confd / "60-bad.conf").write_text("[log]\nlevel = loud\n")
    r = ctl(build_dir, d, "disable", "probe")
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0] == ("evhostctl: the daemon refused the new configuration, the running one "
                        "stays:"), r.stderr
    assert len(lines) == 4 and lines[1].startswith(f"evhostctl:   {confd / '50-bad.conf'}:2: "
                                                   "[http] threads: "), r.stderr
    assert lines[2].startswith(f"evhostctl:   {confd / '60-bad.conf'}:2: [log] level: "), r.stderr
    # There was none: said as removed, not as put back.
    assert lines[3] == f"evhostctl: {confd / DROPIN} was removed (there was none before)", \
        r.stderr
    assert not (confd / DROPIN).exists()
    r = d.post("/admin/reload", headers=auth(), timeout=70)
    assert r.status_code == 409, r.text
    assert [p.split(": [")[0] for p in r.json()["problems"]] == [
        f"{confd / '50-bad.conf'}:2", f"{confd / '60-bad.conf'}:2"], r.text
    assert "problems_not_shown" not in r.json()
    # Past 32, the rest counted.
    (confd / "70-many.conf").write_text("".join(f"[plugin.p{i}]\nretry.max_attempts = x\n"
                                                for i in range(40)))
    r = d.post("/admin/reload", headers=auth(), timeout=70)
    assert r.status_code == 409 and len(r.json()["problems"]) == 32, r.text
    assert r.json()["problems_not_shown"] >= 10, r.text
    # Applied, after a refused one: nothing left of its problems.
    for f in ("50-bad.conf", "60-bad.conf", "70-many.conf"):
        (confd / f).unlink()
    r = d.post("/admin/reload", headers=auth(), timeout=70)
    assert r.status_code == 200 and "problems" not in r.json(), r.text


@contextlib.contextmanager
def served_once(body):
    """A loopback server that answers one request 200 with `body` (JSON),
    then stops listening: a daemon gone after evhostctl's first request.
    Yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        listener.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        t.join(timeout=60)


def test_a_reload_that_could_not_be_asked_for_puts_the_dropin_back(build_dir, tmp_path):
    # The drop-in written, then the reload could not be asked for (out of
    # memory making the request, the daemon gone since evhostctl checked
    # it): the daemon runs without it, so it is put back, and said. Before,
    # it stayed written, said as nothing but "out of memory" or
    # "unreachable", and a later reload for anything else applied it.
    token, confd, conf = stand_in_install(tmp_path)
    dropin = confd / DROPIN
    # The daemon gone after the check: the drop-in that was there is put back.
    dropin.write_text(dropin_text(True))
    with served_once(LISTED) as url:
        r = run_ctl(build_dir, "-c", str(conf), "--url", url, "--token-file", str(token),
                    "disable", "probe")
    assert r.returncode == 3, r.stderr
    assert r.stderr == (
        f"evhostctl: POST {url}/admin/reload?wait=60: the daemon is unreachable: Couldn't "
        "connect to server\n"
        f"evhostctl: {dropin} was put back as it was\n"
        "evhostctl: the daemon was not asked to reload, so nothing changed: run the command "
        "again\n"), r.stderr
    assert dropin.read_text() == dropin_text(True)
    dropin.unlink()

    # Each allocation failed in turn (every one: against a stand-in the
    # sweep takes a second): the drop-in is there after a run exactly when
    # the reload was asked for.
    asked, not_asked = [], 0
    with served_by(routed(APPLIED, asked)) as url:
        cmd = [build_dir / "tests" / "fixtures" / "evhostctl_faults", "-c", conf, "--url", url,
               "--token-file", token, "disable", "probe"]
        for n in range(1000):
            del asked[:]
            r, failed = lib.run_failing(cmd, n)
            reloaded = any(isinstance(a, tuple) for a in asked)  # a POST
            assert dropin.exists() == reloaded, (n, r.returncode, r.stderr)
            if not failed:
                assert r.returncode == 0, r.stderr
                break
            assert_one_error(r, 1, "out of memory")
            if not reloaded and "/admin/reload" in r.stderr:
                not_asked += 1
                assert r.stderr == (
                    "evhostctl: POST /admin/reload?wait=60: out of memory: the request was "
                    "not sent\n"
                    f"evhostctl: {dropin} was removed (there was none before)\n"
                    "evhostctl: the daemon was not asked to reload, so nothing changed: run "
                    "the command again\n"), (n, r.stderr)
            dropin.unlink(missing_ok=True)
        else:
            pytest.fail("1000 allocations and counting")
    assert not_asked == 2, "the request's URL and its Authorization header"


def test_a_reload_answer_that_does_not_say_it_was_not_run_keeps_the_dropin(build_dir,
                                                                           tmp_path):
    # The daemon answers 500 when it runs out of memory writing the answer
    # of a reload it applied, and a proxy 502 or 504 while the reload goes
    # on: the drop-in was put back, and the files no longer had what the
    # daemon ran. Only the daemon's refusals (409, and 401, 403, 404, 422,
    # 501, which come before the reload) put it back; another answer is one
    # lost.
    token, confd, conf = stand_in_install(tmp_path)
    dropin = confd / DROPIN
    args = ["-c", str(conf), "--token-file", str(token), "disable", "probe"]
    unknown = (f"evhostctl: {dropin} stays written; whether the daemon reloaded with it is not "
               "known: 'evhostctl plugins' shows what runs, and 'systemctl reload evhostd' "
               "makes it what the files say\n")
    lost = [(500, b'{"status": 500, "detail": "out of memory writing the answer; the new '
                  b'configuration was applied"}'),
            (502, b"<html><body>502 Bad Gateway</body></html>", "text/html"),
            (504, b"<html><body>504 Gateway Time-out</body></html>", "text/html"),
            (200, b"<html><body>It works!</body></html>", "text/html"),
            (409, b"<html><body>409 Conflict</body></html>", "text/html")]
    for answer in lost:
        with served_by(routed({"/admin/plugins": (200, LISTED),
                               "/admin/reload": answer})) as url:
            r = run_ctl(build_dir, "--url", url, *args)
        assert r.returncode == 1, (answer, r.stderr)
        assert r.stderr.startswith("evhostctl: POST /admin/reload: "), (answer, r.stderr)
        assert r.stderr.endswith(unknown) and len(r.stderr.splitlines()) == 2, \
            (answer, r.stderr)
        assert dropin.read_text() == dropin_text(False), answer
        dropin.unlink()
    refusals = [(401, b'{"status": 401, "detail": "a bearer token is required"}'),
                (403, b'{"status": 403, "detail": "forbidden"}'),
                (404, b'{"status": 404, "detail": "no such route"}'),
                (422, b'{"status": 422, "detail": "wait must be an integer from 0 to 3600"}'),
                (501, b'{"status": 501, "detail": "this process cannot reload (SIGHUP is not '
                      b'taken by a main thread)"}')]
    for answer in refusals:
        with served_by(routed({"/admin/plugins": (200, LISTED),
                               "/admin/reload": answer})) as url:
            r = run_ctl(build_dir, "--url", url, *args)
        assert r.returncode == (4 if answer[0] == 401 else 1), (answer, r.stderr)
        assert r.stderr.endswith(f"evhostctl: {dropin} was removed (there was none before)\n"), \
            (answer, r.stderr)
        assert not dropin.exists(), answer
    # So with the second reload, after one applied that left the plugin
    # running: it was said to run what evhostctl wrote.
    answers = [(200, b'{"result": "applied", "plugins": [{"name": "probe", '
                     b'"state": "running"}]}'),
               (502, b"<html><body>502 Bad Gateway</body></html>", "text/html")]
    with served_by(routed({"/admin/plugins": (200, LISTED),
                           "/admin/reload": lambda path: answers.pop(0)})) as url:
        r = run_ctl(build_dir, "--url", url, *args)
    assert r.returncode == 1, r.stderr
    assert r.stderr.endswith(f"evhostctl: whether the daemon reloaded with {dropin} put back is "
                             "not known: 'evhostctl plugins' shows what runs, and 'systemctl "
                             "reload evhostd' makes it what the files say\n"), r.stderr
    assert not answers and not dropin.exists()


def test_reload_endpoint(evhostd, build_dir, tmp_path):
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    r = d.post("/admin/reload", headers=auth(), timeout=70)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"] == "applied"
    assert sorted(p["name"] for p in body["plugins"]) == ["hello", "probe"]
    assert d.post("/admin/reload").status_code == 401
    for wait in ("3601", "-1", "1.5", "soon", ""):
        r = d.post(f"/admin/reload?wait={wait}", headers=auth())
        assert r.status_code == 422, (wait, r.text)
        assert r.json()["detail"] == "wait must be an integer from 0 to 3600", r.text
    r = d.post("/admin/reload?wait=30", headers=auth(), timeout=40)
    assert r.status_code == 200 and r.json()["result"] == "applied", r.text
    r = d.get("/admin/reload", headers=auth())
    assert r.status_code == 405 and r.headers["Allow"] == "POST"
    (d.config_dir / "conf.d" / "50-bad.conf").write_text("[http]\nthreads = many\n")
    r = d.post("/admin/reload", headers=auth(), timeout=70)
    assert r.status_code == 409 and r.json()["type"].endswith("reload-refused"), r.text


def test_exit_codes(evhostd, build_dir, tmp_path):
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    down = f"http://127.0.0.1:{lib.free_port()}"
    for args in (["status"], ["plugins"], ["enable", "probe"]):
        assert_one_error(ctl(build_dir, d, "--url", down, *args), 3, "unreachable")
    assert not (d.config_dir / "conf.d" / DROPIN).exists()

    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token-0123456789\n")
    for args in (["plugins"], ["dlq", "list", "probe"], ["disable", "probe"]):
        assert_one_error(ctl(build_dir, d, "--token-file", str(wrong), *args), 4,
                         "refused the admin token (401)")
    assert not (d.config_dir / "conf.d" / DROPIN).exists()
    assert_one_error(ctl(build_dir, d, "--token-file", str(tmp_path / "none"), "plugins"), 4,
                     "cannot read the admin token")
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    assert_one_error(ctl(build_dir, d, "--token-file", str(empty), "plugins"), 4,
                     f"the admin token file {empty} is empty")

    assert_one_error(ctl(build_dir, d, "dlq", "list", "nobody"), 1, "no plugin named 'nobody'")
    assert_one_error(ctl(build_dir, d, "replay", "nobody", "--from", "beginning"), 1,
                     "no plugin named 'nobody'")
    assert_one_error(ctl(build_dir, d, "disable", "nobody"), 1, "no plugin 'nobody'")
    assert_one_error(ctl(build_dir, d, "replay", "probe", "--from", "beginning"), 1,
                     "consumes no topics (409)")
    assert_one_error(ctl(build_dir, d, "plugins", conf=tmp_path / "none.conf"), 1,
                     f"evhostctl: cannot read the configuration: {tmp_path / 'none.conf'}: "
                     "cannot read: No such file or directory\n")

    for args, needle in (([], "no command given"), (["frob"], "unknown command 'frob'"),
                         (["--bogus", "status"], "'--bogus' is unknown"),
                         (["-x", "status"], "option '-x' is unknown"),
                         (["status", "--url"], "option '--url' needs a value"),
                         (["plugins", "--limit", "3"], "--limit does not apply to 'plugins'"),
                         (["dlq", "list"], "needs a plugin name"),
                         (["dlq", "purge", "probe"], "dlq takes list, show or redrive"),
                         (["dlq", "show", "probe", "--limit", "0"], "--limit takes a number"),
                         (["dlq", "redrive", "probe"], "needs --all or dead-letter ids"),
                         (["dlq", "redrive", "probe", "--all", "0:1"], "not both"),
                         (["dlq", "redrive", "probe", "1:x"], "'1:x' is not a dead-letter id"),
                         (["dlq", "redrive", "probe", "1:+2"], "'1:+2' is not a dead-letter id"),
                         (["dlq", "redrive", "probe", "1: 2"], "'1: 2' is not a dead-letter id"),
                         (["dlq", "redrive", "probe", "2147483648:0"], "is not a dead-letter"),
                         (["dlq", "redrive", "probe", "0:9007199254740993"],
                          "'0:9007199254740993' is not a dead-letter id"),
                         (["dlq", "redrive", "probe", "99999999999999999999"],
                          "is not a dead-letter id"),
                         (["replay", "probe"], "needs --from"),
                         (["enable", "../etc"], "is not a plugin name"),
                         (["status", "extra"], "takes 0 arguments")):
        assert_one_error(ctl(build_dir, d, *args), 2, needle)

    r = ctl(build_dir, d, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: evhostctl")
    r = ctl(build_dir, d, "--version")
    assert r.returncode == 0 and r.stdout.startswith("evhostctl 0.")


def test_unreachable_after_a_reload_of_listen_names_where_the_daemon_is(evhostd, build_dir,
                                                                           tmp_path):
    # A reload does not apply a changed [http] listen (it needs a restart),
    # but evhostctl reads the files' new address: it says where the daemon
    # that holds state_dir's lock still listens, and what reaches it.
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    moved = lib.free_port()
    text = d.config_file.read_text()
    assert f"127.0.0.1:{d.port}" in text
    d.config_file.write_text(text.replace(f"127.0.0.1:{d.port}", f"127.0.0.1:{moved}"))
    assert d.post("/admin/reload", headers=auth(), timeout=70).status_code == 200
    assert "[http] listen changed" in d.log_text() and "needs a restart" in d.log_text()
    r = ctl(build_dir, d, "status")
    assert_one_error(r, 3, f"GET http://127.0.0.1:{moved}/healthz: the daemon is unreachable")
    assert (f"evhostctl: evhostd pid {d.proc.pid}, running with state_dir {d.state_dir}, "
            f"listens on 127.0.0.1:{d.port}: a change of [http] listen since it started "
            f"applies at its restart, not at a reload (until then, pass --url {d.url})\n"
            in r.stderr), r.stderr
    r = ctl(build_dir, d, "--url", d.url, "status")
    assert r.returncode == 0, r.stderr
    # Once the daemon is gone, its lock file (with its address) is no hint.
    assert d.stop() == 0
    r = ctl(build_dir, d, "status")
    assert r.returncode == 3 and len(r.stderr.splitlines()) == 1, r.stderr


def test_a_daemon_starting_is_not_said_to_be_gone(evhostd, build_dir, tmp_path):
    # HTTP listens once every plugin's init is done (a long migration, say):
    # until then the daemon holds state_dir's lock, its pid in it, and
    # answers nothing. Said only as unreachable, like a daemon stopped, it
    # was restarted in the middle of its migration.
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    d = evhostd({"admin": {"token_file": str(token)}}, dropins={
        "20-probe.conf": {"plugin.probe": probe_conf(build_dir, subscribe="false",
                                                     init_sleep_ms=8000)}}, wait=False)
    d.wait_for_log("probe: init sleeping", timeout=60)
    for args in (["status"], ["plugins"]):
        r = ctl(build_dir, d, *args)
        assert r.returncode == 3, r.stderr
        assert r.stderr.splitlines()[1:] == [
            f"evhostctl: evhostd pid {d.proc.pid} holds the lock in state_dir {d.state_dir} but "
            "does not answer yet: it is starting (HTTP listens once every plugin's init, a "
            "migration among them, is done); let it finish rather than restart it (journalctl "
            "-u evhostd shows how far it is)"], r.stderr
    d.wait_healthy(60)
    assert ctl(build_dir, d, "status").returncode == 0


def test_a_daemon_stopping_is_said_as_that(build_dir, tmp_path):
    # Between its listener's stop and its exit the daemon still holds the
    # lock, its address in it, and does not answer there. (This process
    # holds a lock file as the daemon leaves it.)
    port = lib.free_port()
    state = tmp_path / "state"
    state.mkdir()
    conf = tmp_path / "evhost.conf"
    conf.write_text(f"[host]\nstate_dir = {state}\n[http]\nlisten = 127.0.0.1:{port}\n"
                    "[kafka]\nbrokers = embedded\n")
    lock = state / "evhostd.lock"
    lock.write_text(f"{os.getpid()}\n127.0.0.1:{port}\n")
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = run_ctl(build_dir, "-c", str(conf), "status")
        assert r.returncode == 3, r.stderr
        assert r.stderr.splitlines()[1:] == [
            f"evhostctl: evhostd pid {os.getpid()} holds the lock in state_dir {state} but no "
            f"longer answers on 127.0.0.1:{port}: it is stopping (journalctl -u evhostd shows "
            "how far it is)"], r.stderr
        # Taken, its pid not written yet: the holder named from /proc/locks.
        os.truncate(fd, 0)
        r = run_ctl(build_dir, "-c", str(conf), "status")
        assert r.returncode == 3, r.stderr
        assert re.fullmatch(
            rf"evhostctl: process {os.getpid()} \(.*\) holds the lock in state_dir "
            rf"{re.escape(str(state))} but does not answer yet: evhostd is starting; let it "
            r"finish rather than restart it \(journalctl -u evhostd shows how far it is\)",
            r.stderr.splitlines()[1]), r.stderr
    finally:
        os.close(fd)
    # Let go: a daemon gone, its file left behind.
    r = run_ctl(build_dir, "-c", str(conf), "status")
    assert r.returncode == 3 and len(r.stderr.splitlines()) == 1, r.stderr


def run_ctl(build_dir, *args, user=None, wrap=()):
    """evhostctl ARGS as it is (no -c added); as `user` (uid) with setpriv;
    under the command `wrap` (a list) if given."""
    cmd = [str(build_dir / "host" / "evhostctl"), *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    cmd = [*wrap, *cmd]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)


def test_malformed_arguments_are_usage_errors(build_dir, tmp_path):
    # Said before anything is asked (no daemon here), and exit 2 rather than
    # the daemon's refusal (1) or unreachable (3).
    conf = tmp_path / "evhost.conf"
    conf.write_text("[kafka]\nbrokers = embedded\n")
    c = ["-c", str(conf)]
    for args, needle in (
            (["replay", "probe", "--from", "yesterday"],
             "--from takes 'beginning' or an RFC 3339 time such as 2026-11-28T06:00:00Z, "
             "not 'yesterday'"),
            (["replay", "probe", "--from", "2026-13-45T99:00:00Z"], "not '2026-13-45T99"),
            (["replay", "probe", "--from", "2026-02-29T00:00:00Z"], "not '2026-02-29"),
            (["replay", "probe", "--from", "2026-11-28T06:00:00"], "RFC 3339"),
            (["replay", "probe", "--from", "2026-11-28T06:00:00.Z"], "RFC 3339"),
            (["replay", "probe", "--from", "2026-11-28T06:00:00+1:00"], "RFC 3339"),
            (["replay", "probe", "--from", "Beginning"], "RFC 3339"),
            (["sign-out", ""], "'sign-out' takes a subject of 1 to 127 bytes, not 0"),
            (["sign-out", "é" * 64], "1 to 127 bytes, not 128"),
            (["--url", "notaurl", "status"],
             "--url takes http://HOST[:PORT] or https://HOST[:PORT], not 'notaurl'"),
            (["--url", "127.0.0.1:8080", "status"], "not '127.0.0.1:8080'"),
            (["--url", "ftp://127.0.0.1/", "status"], "not 'ftp://127.0.0.1/'"),
            (["--url", "http://", "status"], "not 'http://'"),
            (["--url", "http://127.0.0.1:99999", "status"], "not 'http://127.0.0.1:99999'"),
            (["--url", "http://u:p@127.0.0.1:8080", "status"], "not 'http://u:p@"),
            (["--url", "http://127.0.0.1:8080/?x=1", "status"], "not 'http://127.0.0.1:8080/?x"),
            # evhostd's text is passed on: there is no JSON to print.
            (["--json", "check"], "--json does not apply to 'check'"),
            # Not "unknown option" for an option that is known.
            (["--json=1", "status"], "option '--json' takes no value"),
            (["--help=x"], "option '--help' takes no value"),
            (["--version=x"], "option '--version' takes no value"),
            # Not "--limit does not apply to 'frob'": the command is what is wrong.
            (["frob", "--limit", "3"], "unknown command 'frob'"),
            # As the plugin argument of dlq, replay, enable: not the daemon's 404.
            (["events", "--plugin", "../x"],
             "--plugin takes a plugin name (letters, digits, '_', '-'), not '../x'"),
            (["events", "--plugin", ""], "--plugin takes a plugin name")):
        assert_one_error(run_ctl(build_dir, *c, *args), 2, needle)
    # Not UTF-8: what the daemon would refuse as not a subject.
    r = subprocess.run([build_dir / "host" / "evhostctl", *c, "sign-out", b"ab\xff"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert r.returncode == 2 and b"byte 3 is not UTF-8" in r.stderr, r.stderr
    # Well-formed: what the daemon would take gets as far as asking it.
    down = f"http://127.0.0.1:{lib.free_port()}"
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    for when in ("beginning", "2024-02-29T23:59:60.123456+14:00", "2026-11-28t06:00:00z",
                 "2026-11-28 06:00:00-00:30"):
        assert_one_error(run_ctl(build_dir, *c, "--url", down, "--token-file", str(token),
                                 "replay", "probe", "--from", when), 3, "unreachable")
    assert_one_error(run_ctl(build_dir, *c, "--url", down + "/evhost/", "--token-file",
                             str(token), "sign-out", "é" * 63), 3,
                     f"POST {down}/evhost/admin/sign-out: the daemon is unreachable")
    # A host that does not resolve is the network's answer, not the argument's.
    assert_one_error(run_ctl(build_dir, *c, "--url", "http://evhost.invalid:8080", "status"),
                     3, "the daemon is unreachable: Couldn't resolve host name")


def test_help_and_man_page_name_every_command_and_option(build_dir):
    # --help, evhostctl(1) and the tool agree: each long option the tool
    # takes is in both, and neither names one it does not take (evhostd's
    # --check-config aside); each command is in both, and is one.
    src = (lib.REPO_ROOT / "host" / "evhostctl.c").read_text()
    options = set(re.findall(r'\{"([a-z-]+)", (?:no|required)_argument', src))
    commands = re.search(r'#define COMMANDS\s*\\\s*"\|(.*?)\|"\s*\\\s*"(.*?)\|"', src)
    commands = (commands.group(1) + "|" + commands.group(2)).split("|")
    assert len(options) == 17 and len(commands) == 12, (options, commands)
    usage = run_ctl(build_dir, "--help").stdout
    man = (lib.REPO_ROOT / "packaging" / "man" / "evhostctl.1").read_text().replace("\\-", "-")
    for text in (usage, man):
        assert set(re.findall(r"--([a-z][a-z-]*)", text)) == options | {"check-config"}
    listed = usage.split("Commands:")[1].split("Options:")[0]
    for cmd in commands:
        assert re.search(rf"^  (.* \| )?{cmd}\b", listed, re.M), cmd
        assert re.search(rf"^\.(TP|TQ)\n\.BI? \"?{cmd}\b", man, re.M), cmd
        r = run_ctl(build_dir, "-c", "/nonexistent.conf", *cmd.split())
        assert r.returncode != 0 and "unknown command" not in r.stderr, (cmd, r.stderr)
    for opt in options:
        r = run_ctl(build_dir, f"--{opt}=x" if opt not in ("help", "version") else f"--{opt}")
        assert "is unknown" not in r.stderr, (opt, r.stderr)


def test_a_bad_value_of_a_key_evhostctl_uses_is_said_not_defaulted(build_dir, tmp_path):
    # [http] listen, [admin] token_file and [host] confdir with a value the
    # daemon refuses: evhostctl says so where it is, exit 1, rather than use
    # the default in its place (http://127.0.0.1:8080 may be another daemon).
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "20-probe.conf").write_text("[plugin.probe]\nenabled = true\n")
    conf = tmp_path / "evhost.conf"
    conf.write_text(f"[kafka]\nbrokers = embedded\n[http]\nlisten = 18931\n"
                    f"[admin]\ntoken_file = {token}\n")
    for args in (["status"], ["plugins"], ["disable", "probe"]):
        assert_one_error(run_ctl(build_dir, "-c", str(conf), *args), 1,
                         f"evhostctl: {conf}:4: [http] listen: expected IP:port with a port of "
                         "0-65535, e.g. 127.0.0.1:8080, got '18931'; evhostctl "
                         "does not know where the daemon listens (fix it, or pass --url)\n")
    assert not (tmp_path / "conf.d" / DROPIN).exists()
    # --url given: the key does not matter.
    with served_by(answering(b'{"plugins":[]}', "application/json")) as url:
        r = run_ctl(build_dir, "-c", str(conf), "--url", url, "plugins")
        assert r.returncode == 0 and r.stdout == "no plugins are running\n", r.stderr

        conf.write_text(f"[kafka]\nbrokers = embedded\n[http]\nlisten = 127.0.0.1:1\n"
                        "[admin]\ntoken_file =\n")
        assert_one_error(run_ctl(build_dir, "-c", str(conf), "plugins"), 1,
                         f"evhostctl: {conf}:6: [admin] token_file: expected a path, got ''; "
                         "evhostctl has no admin token (fix it, or pass --token-file)\n")
        r = run_ctl(build_dir, "-c", str(conf), "--url", url, "--token-file", str(token),
                    "plugins")
        assert r.returncode == 0, r.stderr

        conf.write_text(f"[host]\nconfdir =\n[kafka]\nbrokers = embedded\n"
                        f"[admin]\ntoken_file = {token}\n")
        assert_one_error(run_ctl(build_dir, "-c", str(conf), "--url", url, "enable", "probe"),
                         1, f"evhostctl: {conf}:2: [host] confdir: expected a path, got ''; "
                            "evhostctl does not know which conf.d the daemon reads (fix it)\n")
        assert not (tmp_path / "conf.d" / DROPIN).exists()


def test_a_bad_value_of_a_key_evhostctl_uses_is_said_even_out_of_memory(build_dir, tmp_path):
    # evhostctl told a refused [http] listen by the text of its problem: with
    # that problem's allocation failed (not recorded), it went on with the
    # default, http://127.0.0.1:8080 (another daemon's, or none: exit 3). It
    # is told by the entry the parser noted as refused: each allocation
    # failed in turn, the run says the refusal or out of memory, exit 1.
    conf = tmp_path / "evhost.conf"
    conf.write_text("[kafka]\nbrokers = embedded\n[http]\nlisten = 18931\n")
    refusal = (f"evhostctl: {conf}:4: [http] listen: expected IP:port with a port of 0-65535, "
               "e.g. 127.0.0.1:8080, got '18931'; evhostctl does not know where "
               "the daemon listens (fix it, or pass --url)\n")
    unrecorded = (f"evhostctl: {conf}:4: [http] listen: the daemon refuses its value "
                  "(evhostctl check says why); evhostctl does not know where the daemon "
                  "listens (fix it, or pass --url)\n")
    cmd = [build_dir / "tests" / "fixtures" / "evhostctl_faults", "-c", conf, "status"]
    r, _ = lib.run_failing(cmd, None)
    assert (r.returncode, r.stderr) == (1, refusal), r.stderr
    said, stride = set(), lib.oom_stride(build_dir, 1)
    for n in range(0, 5000, stride):
        r, failed = lib.run_failing(cmd, n)
        if not failed:
            break
        assert r.returncode == 1 and r.stdout == "", (n, r.returncode, r.stderr)
        assert r.stderr in (refusal, unrecorded) or (
            re.fullmatch(r"evhostctl: [^\n]*(out of memory|Cannot allocate memory)[^\n]*\n",
                         r.stderr)), (n, r.stderr)
        said.add(r.stderr if r.stderr in (refusal, unrecorded) else "oom")
    else:
        pytest.fail("5000 allocations and counting")
    # (The problem's two allocations, text and "FILE:LINE: " prefix, may
    # both fall between a sanitized build's strides.)
    assert unrecorded in said or stride > 1, said


def test_enable_without_a_confdir_directory_writes_nothing_and_says_why(build_dir, tmp_path):
    # enable and disable lock conf.d itself (confdir_lock) before writing a
    # drop-in into it. Missing (the daemon reads none then), or a file in its
    # place (made so after the configuration was read): said, with what to
    # do, exit 1, nothing written, no reload asked for.
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    conf = tmp_path / "evhost.conf"
    conf.write_text("[kafka]\nbrokers = embedded\n[plugin.probe]\nenabled = true\n")
    confd = tmp_path / "conf.d"
    asked = []
    with served_by(routed({"/admin/plugins": (200, b'{"plugins": []}')}, asked)) as url:
        r = run_ctl(build_dir, "-c", str(conf), "--url", url, "--token-file", str(token),
                    "disable", "probe")
    assert_one_error(r, 1, f"evhostctl: cannot open {confd} to take turns with other "
                           "evhostctl enable and disable runs: No such file or directory; "
                           "nothing was written (enable and disable write a drop-in there, "
                           "for the daemon to read: create the directory)\n")
    assert not confd.exists() and asked == ["/admin/plugins"], asked

    class Swap(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            confd.rmdir()
            confd.write_text("not a directory\n")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "15")
            self.end_headers()
            self.wfile.write(b'{"plugins": []}')
        do_POST = do_GET

        def log_message(self, *args):
            pass
    confd.mkdir()
    del asked[:]
    with served_by(Swap) as url:
        r = run_ctl(build_dir, "-c", str(conf), "--url", url, "--token-file", str(token),
                    "enable", "probe")
    assert_one_error(r, 1, f"evhostctl: cannot open {confd} to take turns with other "
                           "evhostctl enable and disable runs: Not a directory; nothing was "
                           "written (enable and disable write a drop-in there, for the daemon "
                           "to read: it must be a directory)\n")
    assert confd.read_text() == "not a directory\n" and asked == ["/admin/plugins"], asked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin.token", "conf.d",
                                                          "evhost.conf"]


def test_permission_problems_say_who_may(build_dir, tmp_path):
    # conf.d is root's (root:root 0755 in the package), the admin token
    # root:evhost 0640: as another user the error says who may, not only
    # "Permission denied". (Run as nobody, from a directory it may read.)
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv, to run evhostctl as another user")
    with contextlib.ExitStack() as stack:
        top = Path(tempfile.mkdtemp(prefix="evhostctl-perm-", dir="/tmp"))
        stack.callback(shutil.rmtree, top)
        top.chmod(0o755)
        (top / "conf.d").mkdir(mode=0o755)
        (top / "conf.d" / "20-probe.conf").write_text("[plugin.probe]\nenabled = true\n")
        private = top / "admin.token"
        private.write_text(TOKEN + "\n")
        private.chmod(0o640)
        readable = top / "readable.token"
        readable.write_text(TOKEN + "\n")
        readable.chmod(0o644)
        url = stack.enter_context(served_by(answering(b'{"plugins":[]}', "application/json")))
        conf = top / "evhost.conf"
        port = url.rsplit(":", 1)[1]
        conf.write_text(f"[kafka]\nbrokers = embedded\n[http]\nlisten = 127.0.0.1:{port}\n"
                        f"[admin]\ntoken_file = {private}\n")
        conf.chmod(0o644)
        nobody = 65534
        r = run_ctl(build_dir, "-c", str(conf), "plugins", user=nobody)
        assert_one_error(r, 4, f"evhostctl: cannot read the admin token from {private}: "
                               "Permission denied (run evhostctl as root or as a member of "
                               "group evhost, who may read it)\n")
        r = run_ctl(build_dir, "-c", str(conf), "--token-file", str(readable), "disable",
                    "probe", user=nobody)
        assert_one_error(r, 1, f"evhostctl: cannot create a file in {top / 'conf.d'}: "
                               "Permission denied (enable and disable write drop-ins into "
                               "conf.d: run them as root)\n")
        assert sorted(p.name for p in (top / "conf.d").iterdir()) == ["20-probe.conf"]
        # A drop-in root's alone (0600): evhostctl may not read it, the
        # daemon may. It was said as a file the daemon refuses at its next
        # reload or start.
        secret = top / "conf.d" / "30-secret.conf"
        secret.write_text("[plugin.probe]\nsecret = x\n")
        secret.chmod(0o600)
        r = run_ctl(build_dir, "-c", str(conf), "--token-file", str(readable), "plugins",
                    user=nobody)
        assert r.returncode == 0, r.stderr
        assert r.stderr == (f"evhostctl: warning: {secret}: cannot read: Permission denied "
                            f"(evhostctl, uid {nobody}, may not read it; the daemon may: run "
                            "evhostctl as root)\n"), r.stderr
        r = run_ctl(build_dir, "-c", str(conf), "--token-file", str(readable), "disable",
                    "probe", user=nobody)
        assert_one_error(r, 1, f"evhostctl: {secret}: cannot read: Permission denied: evhostctl "
                               f"(uid {nobody}) may not read it, and enable and disable read "
                               "every file, to check that none sets enabled after their "
                               "drop-in (run them as root); nothing was written\n")
        secret.unlink()
        # Root refused (without CAP_DAC_OVERRIDE here): not told to run as root.
        owned = stack.enter_context(tempfile.TemporaryDirectory(dir="/tmp"))
        os.chown(owned, nobody, nobody)
        os.chmod(owned, 0o755)
        shutil.copy(top / "conf.d" / "20-probe.conf", owned)
        rootconf = top / "root.conf"
        rootconf.write_text(conf.read_text() + f"[host]\nconfdir = {owned}\n")
        r = run_ctl(build_dir, "-c", str(rootconf), "--token-file", str(private), "disable",
                    "probe", wrap=["setpriv", "--bounding-set=-dac_override,-dac_read_search"])
        assert_one_error(r, 1, f"evhostctl: cannot create a file in {owned}: Permission "
                               "denied\n")
        # Not missing permissions: no such hint.
        assert_one_error(run_ctl(build_dir, "-c", str(conf), "--token-file", str(top / "none"),
                                 "plugins", user=nobody), 4,
                         f"{top / 'none'}: No such file or directory\n")


def test_a_token_file_that_cannot_be_read_is_said_as_that(build_dir, tmp_path):
    # A directory opens, then fails to read: it was said as an empty token
    # file. Whether given with --token-file or as [admin] token_file.
    down = f"http://127.0.0.1:{lib.free_port()}"
    conf = tmp_path / "evhost.conf"
    conf.write_text("[kafka]\nbrokers = embedded\n")
    r = run_ctl(build_dir, "-c", str(conf), "--url", down, "--token-file", str(tmp_path),
                "plugins")
    assert_one_error(r, 4, f"evhostctl: cannot read the admin token from {tmp_path}: "
                           "Is a directory\n")
    conf.write_text(f"[kafka]\nbrokers = embedded\n[admin]\ntoken_file = {tmp_path}\n")
    r = run_ctl(build_dir, "-c", str(conf), "--url", down, "dlq", "list", "probe")
    assert_one_error(r, 4, f"evhostctl: cannot read the admin token from {tmp_path}: "
                           "Is a directory\n")


def test_the_dropin_is_written_readable_and_put_back_as_it_was(evhostd, build_dir, tmp_path):
    # evhostd reads conf.d as user evhost: the drop-in is 0644 whatever the
    # umask of whoever runs evhostctl. One that was there before (an admin's,
    # 0600) is put back as it was after a refused reload, its permissions
    # too (it came back 0644); nothing else is left in conf.d.
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    confd = d.config_dir / "conf.d"
    dropin = confd / DROPIN
    r = subprocess.run(["sh", "-c", 'umask 077 && exec "$@"', "sh",
                        str(build_dir / "host" / "evhostctl"), "-c", str(d.config_file),
                        "disable", "probe"], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(dropin.stat().st_mode) == 0o644
    assert d.get("/probe/seen").status_code == 404

    dropin.write_text(dropin_text(True))
    dropin.chmod(0o600)
    (confd / "50-bad.conf").write_text("[http]\nthreads = many\n")
    assert_one_error(ctl(build_dir, d, "disable", "probe"), 1,
                     "refused the new configuration")
    assert dropin.read_text() == dropin_text(True)
    assert stat.S_IMODE(dropin.stat().st_mode) == 0o600
    assert sorted(p.name for p in confd.iterdir()) == \
        ["10-hello.conf", "20-probe.conf", "50-bad.conf", DROPIN]
    (confd / "50-bad.conf").unlink()

    # Something else in its place: said before anything is written.
    dropin.unlink()
    dropin.mkdir()
    assert_one_error(ctl(build_dir, d, "enable", "probe"), 1,
                     f"evhostctl: cannot read {dropin}: Is a directory\n")
    assert sorted(p.name for p in confd.iterdir()) == ["10-hello.conf", "20-probe.conf", DROPIN]
    assert dropin.is_dir() and d.get("/probe/seen").status_code == 404


def test_an_admins_lines_in_the_dropin_are_kept(evhostd, build_dir, tmp_path):
    # The drop-in is the admin's to edit too (operations.md): enable and
    # disable change the section's `enabled` lines only. Keys, comments,
    # other sections, "\r\n" endings, the file's mode, owner and group stay
    # (an admin's root:evhost 0640 must stay readable by evhostd), after a
    # refused reload too; so do the `enabled` line's indentation, separator
    # and inline comment (they were dropped). A link is not replaced by a
    # file.
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    confd = d.config_dir / "conf.d"
    dropin = confd / DROPIN
    own = ("# off until the vendor's fix: ticket 42\n"
           "[plugin.hello]\n"
           "; nothing to say about hello\n"
           "[plugin.probe]\r\n"
           "  enabled : true  ; off until ticket 42 is fixed\r\n"
           "subscribe = false\n")
    dropin.write_text(own, newline="")
    os.chown(dropin, 0, 4321)
    dropin.chmod(0o640)
    r = ctl(build_dir, d, "disable", "probe")
    assert r.returncode == 0, r.stderr
    assert dropin.read_bytes().decode() == own.replace("enabled : true", "enabled : false")
    st = dropin.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 4321, 0o640)
    assert d.get("/probe/seen").status_code == 404
    r = ctl(build_dir, d, "enable", "probe")
    assert r.returncode == 0, r.stderr
    assert dropin.read_bytes().decode() == own
    assert d.get("/probe/seen").status_code == 200

    # Refused elsewhere: put back as it was, owner and group too.
    (confd / "50-bad.conf").write_text("[http]\nthreads = many\n")
    assert_one_error(ctl(build_dir, d, "disable", "probe"), 1, "refused the new configuration")
    assert dropin.read_bytes().decode() == own
    st = dropin.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 4321, 0o640)
    (confd / "50-bad.conf").unlink()

    # Every way of writing the line: its value alone changes.
    for before, after in (("enabled=true", "enabled=false"),
                          ("\tenabled = true\t# why", "\tenabled = false\t# why"),
                          ("enabled = ; not set", "enabled = false ; not set"),
                          ("enabled =", "enabled =false"),
                          ("enabled = yes;no", "enabled = false")):
        dropin.write_text(f"[plugin.probe]\n{before}\n")
        assert ctl(build_dir, d, "disable", "probe").returncode == 0
        assert dropin.read_text() == f"[plugin.probe]\n{after}\n", before

    # No `enabled` in the section: one under its header. No section: added.
    dropin.write_text("[plugin.probe]\nsubscribe = false")  # no last newline
    assert ctl(build_dir, d, "disable", "probe").returncode == 0
    assert dropin.read_text() == "[plugin.probe]\nenabled = false\nsubscribe = false\n"
    dropin.write_text("; the admin's\n")
    assert ctl(build_dir, d, "enable", "probe").returncode == 0
    assert dropin.read_text() == "; the admin's\n[plugin.probe]\nenabled = true\n"
    assert d.get("/probe/seen").status_code == 200

    # A link (configuration management's, say): left as it is, said.
    managed = tmp_path / "managed-probe.conf"
    managed.write_text("[plugin.probe]\nenabled = true\n")
    dropin.unlink()
    dropin.symlink_to(managed)
    assert_one_error(ctl(build_dir, d, "disable", "probe"), 1,
                     f"evhostctl: {dropin} is a symbolic link: evhostctl will not replace it "
                     "with a file; set enabled in [plugin.probe] where it points, or remove "
                     "the link\n")
    assert dropin.is_symlink() and managed.read_text() == "[plugin.probe]\nenabled = true\n"
    assert d.get("/probe/seen").status_code == 200


def crud_daemon(evhostd, tmp_path, **kw):
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    return evhostd({"admin": {"token_file": str(token)},
                    "plugin.crud": {"collections": "products"},
                    "plugin.user": {"argon2_opslimit": "min", "argon2_memlimit": "min"}}, **kw)


def test_sign_out_a_subject(evhostd, build_dir, tmp_path):
    """The operator's sign-out (an account taken over; a plugin that does not
    sign its users out itself): what evh_auth_revoke does, by subject."""
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    secret = tmp_path / "jwt.key"
    secret.write_bytes(os.urandom(48).hex().encode())
    config = {"admin": {"token_file": str(token)}, "auth": {"jwt_secret_file": str(secret)},
              "plugin.user": {"argon2_opslimit": "min", "argon2_memlimit": "min"}}
    d = evhostd(config)
    addr = "ctl.sign.out@example.com"
    user = d.post("/users", json={"name": "Ctl", "email": addr, "password": "a password!"}).json()

    def login():
        r = d.post("/auth/login", json={"email": addr, "password": "a password!"})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def rename(headers):
        return d.patch(f"/users/{user['id']}", json={"name": "X"}, headers=headers)
    before, other = login(), lib.sign_token(secret.read_bytes(), "someone-else")
    r = ctl(build_dir, d, "sign-out", user["id"])
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(rf"{user['id']} signed out at (\S+): the tokens the daemon signed for it "
                     r"before are refused", r.stdout.strip())
    assert m, r.stdout
    assert rename(before).status_code == 401
    assert rename(login()).status_code == 200
    assert f"signed {user['id']} out" in d.log_text()
    # --json: the daemon's answer as it is.
    r = ctl(build_dir, d, "--json", "sign-out", "someone-else")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["subject"] == "someone-else"
    r = d.patch(f"/users/{user['id']}", json={"name": "X"},
                headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 401 and r.json()["detail"].startswith("token revoked"), r.text
    # What is not a subject.
    assert_one_error(ctl(build_dir, d, "sign-out"), 2, "'sign-out' takes one subject")
    assert_one_error(ctl(build_dir, d, "sign-out", "a" * 128), 2, "1 to 127 bytes")
    for body in ({}, {"subject": ""}, {"subject": 7}, '{"subject":"a\\u0000b"}',
                 {"subject": "x", "subjects": ["y"]}):
        r = d.post("/admin/sign-out", headers=auth(),
                   **({"data": body} if isinstance(body, str) else {"json": body}))
        assert r.status_code == 422, (body, r.text)
    assert d.get("/admin/sign-out", headers=auth()).status_code == 405
    assert d.post("/admin/sign-out", json={"subject": "x"}).status_code == 401
    # A backup has the sign-outs; a host restored with them refuses those tokens.
    r = ctl(build_dir, d, "--json", "backup")
    assert r.returncode == 0, r.stderr
    copy = Path(json.loads(r.stdout)["sign_outs"]["file"])
    assert copy.name == "evhostd.auth.db" and copy.parent.parent == d.state_dir / "backups"
    state_dir = d.state_dir
    assert d.stop() == 0
    for suffix in ("", "-wal", "-shm"):
        (state_dir / f"evhostd.auth.db{suffix}").unlink(missing_ok=True)
    shutil.copyfile(copy, state_dir / "evhostd.auth.db")
    d = evhostd(config, state_dir=state_dir)
    assert rename(before).status_code == 401
    assert "2 signed-out subjects" in d.log_text()
    after_restore = login()
    d.stop()
    # Without a key the sign-out is made all the same: the key given back
    # (a reload, a restart) would bring the signed-out tokens back with it.
    del config["auth"]
    d = evhostd(config, state_dir=state_dir)
    r = d.post("/admin/sign-out", headers=auth(), json={"subject": user["id"]})
    assert r.status_code == 200, r.text
    d.stop()
    config["auth"] = {"jwt_secret_file": str(secret)}
    d = evhostd(config, state_dir=state_dir)
    assert rename(after_restore).status_code == 401


def backup_gauge(d):
    """evhost_backup_last_timestamp_seconds (what EvhostBackupOld watches),
    or None when it is not exposed."""
    m = re.search(r"^evhost_backup_last_timestamp_seconds ([0-9.]+)$", d.get("/metrics").text,
                  re.M)
    return float(m.group(1)) if m else None


def test_backup_and_restore(evhostd, build_dir, tmp_path):
    d = crud_daemon(evhostd, tmp_path)
    kept = d.post("/crud/products", json={"name": "kept"}).json()
    # what a daemon killed in the middle of a backup leaves: not a backup
    unfinished = d.state_dir / "backups" / ".partial-20260101T000000.000Z"
    unfinished.mkdir(parents=True)
    (unfinished / "crud.db").write_bytes(b"SQLite format 3\0 cut short")
    assert backup_gauge(d) is None
    r = ctl(build_dir, d, "backup")
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(r"backup in (\S+), taken at (\S+)", r.stdout.strip().splitlines()[-1])
    assert m, r.stdout
    where = Path(m.group(1))
    assert where.parent == d.state_dir / "backups"
    taken = datetime.fromisoformat(m.group(2).replace("Z", "+00:00"))
    assert abs((datetime.now(timezone.utc) - taken).total_seconds()) < 60
    copy = where / "crud.db"
    assert f"crud: {copy} (" in r.stdout and f"user: {where / 'user.db'} (" in r.stdout
    assert f"sign-outs: {where / 'evhostd.auth.db'} (" in r.stdout
    assert stat.S_IMODE(copy.stat().st_mode) == 0o640
    assert not unfinished.exists()
    assert f"removed {unfinished}, left unfinished by an earlier daemon" in d.log_text()
    # the metric EvhostBackupOld watches: when the newest backup was taken
    gauge = backup_gauge(d)
    assert gauge is not None and abs(gauge - taken.timestamp()) < 0.002, gauge
    db = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM documents WHERE id = ?",
                          (kept["id"],)).fetchone()[0] == 1
    finally:
        db.close()
    saved = tmp_path / "crud.db.saved"  # for the restore below (--keep removes `where`)
    shutil.copyfile(copy, saved)
    later = d.post("/crud/products", json={"name": "after the backup"}).json()
    r = ctl(build_dir, d, "--json", "backup")
    assert r.returncode == 0, r.stderr
    second = json.loads(r.stdout)
    assert sorted(p["plugin"] for p in second["plugins"]) == ["crud", "user"]
    assert len(list((d.state_dir / "backups").iterdir())) == 2
    # the gauge follows the newest of several
    gauge = backup_gauge(d)
    newer = datetime.fromisoformat(second["time"].replace("Z", "+00:00")).timestamp()
    assert gauge is not None and abs(gauge - newer) < 0.002, gauge
    # --keep: the newest N stay; what evhostd did not make is not its to remove
    (d.state_dir / "backups" / "copied-by-hand").mkdir()
    r = ctl(build_dir, d, "backup", "--keep", "1")
    assert r.returncode == 0, r.stderr
    newest = Path(r.stdout.strip().splitlines()[-1].split()[2].rstrip(","))
    assert f"removed the older backup {where}" in r.stdout
    assert sorted(p.name for p in (d.state_dir / "backups").iterdir()) == \
        sorted([newest.name, "copied-by-hand"])
    assert_one_error(ctl(build_dir, d, "backup", "--keep", "0"), 2, "--keep")
    for keep in ("all", 0, 1.5, 1e300):
        r = d.post("/admin/backup", json={"keep": keep}, headers=auth())
        assert r.status_code == 422 and r.json()["field"] == "keep", (keep, r.text)
    r = d.post("/admin/backup", json={"kept": 1}, headers=auth())
    assert r.status_code == 422 and r.json()["field"] == "kept", r.text
    assert_one_error(ctl(build_dir, d, "events", "--keep", "1"), 2,
                     "--keep does not apply to 'events'")

    # Restore as operations.md says: stop, put the copy in place of the
    # database and its WAL, start.
    assert d.stop() == 0
    for suffix in ("", "-wal", "-shm"):
        (d.state_dir / f"crud.db{suffix}").unlink(missing_ok=True)
    shutil.copyfile(saved, d.state_dir / "crud.db")
    d2 = crud_daemon(evhostd, tmp_path, state_dir=d.state_dir)
    assert d2.get(f"/crud/products/{kept['id']}").status_code == 200
    assert d2.get(f"/crud/products/{later['id']}").status_code == 404


@pytest.mark.slow  # mostly waiting for consumer groups: the plain pass runs it
def test_restore_then_catch_up_with_replay_keeping_the_inbox(evhostd, build_dir, tmp_path,
                                                             kafka_bootstrap, unique_name):
    # operations.md, "Backup and restore": after a restore, the plugin's group
    # has committed past what the copy knows; replay from before the backup,
    # keeping the copy's inbox, handles what came after it and nothing twice.
    topic, group = unique_name("bk"), unique_name("g")
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    config = {"admin": {"token_file": str(token)},
              "plugin.probe": probe_conf(build_dir, topic=topic, group=group)}
    d = evhostd(config, brokers=kafka_bootstrap)

    def keys(daemon):
        return sorted(e["key"] for e in daemon.get("/probe/seen").json())
    for key in ("a", "b", "c"):  # several partitions
        assert d.post(f"/probe/publish?key=before-{key}", json={}).status_code == 200
    lib.wait_until(lambda: len(keys(d)) == 3, timeout=30, message="three handled")
    r = ctl(build_dir, d, "--json", "backup")
    assert r.returncode == 0, r.stderr
    backup = json.loads(r.stdout)
    copy = Path(next(p["file"] for p in backup["plugins"] if p["plugin"] == "probe"))
    for key in ("a", "b", "c"):
        assert d.post(f"/probe/publish?key=after-{key}", json={}).status_code == 200
    lib.wait_until(lambda: len(keys(d)) == 6, timeout=30, message="six handled")
    assert d.stop() == 0

    for suffix in ("", "-wal", "-shm"):
        (d.state_dir / f"probe.db{suffix}").unlink(missing_ok=True)
    shutil.copyfile(copy, d.state_dir / "probe.db")
    d2 = evhostd(config, brokers=kafka_bootstrap, state_dir=d.state_dir)
    assert keys(d2) == ["before-a", "before-b", "before-c"]
    since = (datetime.fromisoformat(backup["time"].replace("Z", "+00:00")) -
             timedelta(minutes=10)).isoformat(timespec="seconds").replace("+00:00", "Z")
    r = lib.wait_until(lambda: (lambda r: r if r.returncode == 0 else None)(
        ctl(build_dir, d2, "replay", "probe", "--from", since, "--keep-inbox")),
        timeout=60, message="the replay taken (the consumer assigned)")
    assert "probe: rewound; its inbox kept" in r.stdout, r.stdout
    bad = d2.post("/admin/plugins/probe/replay", headers=auth(),
                  json={"from": "beginning", "keep_inbox": "yes"})
    assert bad.status_code == 422 and bad.json()["field"] == "keep_inbox", bad.text
    lib.wait_until(lambda: len(keys(d2)) >= 6, timeout=30, message="the later three handled")
    assert keys(d2) == ["after-a", "after-b", "after-c", "before-a", "before-b", "before-c"]


def test_an_old_backup_that_cannot_all_be_removed_is_no_longer_a_backup(evhostd, build_dir,
                                                                        tmp_path):
    # A directory someone put in an old backup stops its removal part way:
    # what is left is renamed out of the backups' names (never a "backup"
    # with its databases gone) and said; once that directory is gone (by
    # hand), the next backup removes the rest.
    d = crud_daemon(evhostd, tmp_path)
    backups = d.state_dir / "backups"
    made = []
    for _ in range(3):
        r = ctl(build_dir, d, "--json", "backup", *(["--keep", "1"] if len(made) == 2 else []))
        assert r.returncode == 0, r.stderr
        made.append(Path(json.loads(r.stdout)["dir"]))
        if len(made) == 1:
            (made[0] / "notes by hand").mkdir()
    oldest, middle, newest = made
    remains = backups / (".removing-" + oldest.name)
    assert sorted(p.name for p in backups.iterdir()) == sorted([newest.name, remains.name])
    assert (remains / "notes by hand").is_dir() and not (remains / "crud.db").exists()
    assert (f"backup: {oldest} is no longer a backup, but not all of it could be removed "
            f"(Is a directory): what is left, in {remains}, holds a directory: remove it by "
            "hand") in d.log_text(), d.log_tail()
    assert json.loads(r.stdout)["removed"] == [str(oldest), str(middle)]
    (remains / "notes by hand").rmdir()
    r = ctl(build_dir, d, "--json", "backup")
    assert r.returncode == 0, r.stderr
    fourth = json.loads(r.stdout)["dir"]
    assert not remains.exists()
    assert f"backup: removed {remains}, left by the removal of an old backup" in d.log_text()

    # Remains that cannot be removed either (here, named for the next backup
    # to go) are said, and block that backup's renaming: it stays whole, still
    # a backup; the other old one goes.
    nxt = newest
    stuck = backups / (".removing-" + nxt.name)
    (stuck / "in the way").mkdir(parents=True)
    r = ctl(build_dir, d, "--json", "backup", "--keep", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["removed"] == [fourth], r.stdout
    log = d.log_text()
    assert (f"backup: cannot remove {backups}/{stuck.name}, left by the removal of an old "
            f"backup: Is a directory (a directory in it: remove it by hand)") in log, d.log_tail()
    assert f"backup: cannot remove the old backup {backups}/{nxt.name}: " in log, d.log_tail()
    assert (nxt / "crud.db").is_file() and (nxt / "user.db").is_file()


def test_a_backup_named_while_the_clock_was_ahead(evhostd, build_dir, tmp_path):
    # A backup made while the wall clock was far ahead (a bad RTC at boot,
    # before NTP set it back) sorts after every later one. The gauge does
    # not count it (when it was made is unknown: EvhostBackupOld would not
    # fire until long after), and --keep removes it before older ones it
    # can date, and never the backup just made.
    d = crud_daemon(evhostd, tmp_path)
    ahead = d.state_dir / "backups" / "29991231T235959.999Z"
    ahead.mkdir(parents=True)
    (ahead / "crud.db").write_bytes(b"")
    assert backup_gauge(d) is None
    r = ctl(build_dir, d, "--json", "backup")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    gauge = backup_gauge(d)
    taken = datetime.fromisoformat(first["time"].replace("Z", "+00:00")).timestamp()
    assert gauge is not None and abs(gauge - taken) < 0.002, gauge
    r = ctl(build_dir, d, "--json", "backup", "--keep", "2")
    assert r.returncode == 0, r.stderr
    second = json.loads(r.stdout)
    assert second["removed"] == [str(ahead)], r.stdout
    r = ctl(build_dir, d, "--json", "backup", "--keep", "1")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["removed"] == [first["dir"], second["dir"]], r.stdout
    assert [p.name for p in (d.state_dir / "backups").iterdir()] == [Path(made["dir"]).name]
    gauge = backup_gauge(d)
    taken = datetime.fromisoformat(made["time"].replace("Z", "+00:00")).timestamp()
    assert gauge is not None and abs(gauge - taken) < 0.002, gauge


def test_a_failed_backup_keeps_nothing(evhostd, build_dir, tmp_path):
    d = crud_daemon(evhostd, tmp_path)
    backups = d.state_dir / "backups"
    # user.db cannot be read (it is copied after crud.db): crud's copy goes too
    (d.state_dir / "user.db").rename(d.state_dir / "user.db.away")
    try:
        assert_one_error(ctl(build_dir, d, "backup"), 1, "plugin 'user': copying")
    finally:
        (d.state_dir / "user.db.away").rename(d.state_dir / "user.db")
    assert list(backups.iterdir()) == []
    backups.rmdir()
    backups.write_text("in the way")
    assert_one_error(ctl(build_dir, d, "backup"), 1, f"cannot create {backups}")
    assert "backup failed, nothing kept" in d.log_text()


def test_a_backup_that_cannot_be_renamed_whole_keeps_nothing(evhostd, build_dir, tmp_path):
    # Written under .partial-NAME, renamed to NAME once whole: a rename that
    # fails leaves no backup, and no partial one either.
    d = crud_daemon(evhostd, tmp_path, env=lib.faults_preloaded(build_dir, rename="/.partial-"))
    assert d.post("/crud/products", json={"name": "kept"}).status_code == 201
    r = ctl(build_dir, d, "backup")
    assert_one_error(r, 1, "cannot rename ")
    backups = d.state_dir / "backups"
    m = re.search(r"cannot rename (\S+) to (\S+): Input/output error", r.stderr)
    assert m and Path(m.group(1)).parent == backups, r.stderr
    assert Path(m.group(1)).name == ".partial-" + Path(m.group(2)).name, r.stderr
    assert list(backups.iterdir()) == []
    assert "backup failed, nothing kept: cannot rename " in d.log_text(), d.log_tail()
    assert backup_gauge(d) is None


def test_a_backup_whose_directory_cannot_be_synced_is_not_kept(evhostd, build_dir, tmp_path):
    # Renamed whole, but the rename may not survive a crash while the
    # directory holding it is not synced: not a backup to answer for.
    backups = tmp_path / "state" / "backups"
    d = crud_daemon(evhostd, tmp_path, state_dir=tmp_path / "state",
                    env=lib.faults_preloaded(build_dir, fsync_dir=backups))
    assert d.post("/crud/products", json={"name": "kept"}).status_code == 201
    r = ctl(build_dir, d, "backup")
    assert_one_error(r, 1, f"cannot sync {backups} after renaming the backup into it: "
                           "Input/output error")
    assert list(backups.iterdir()) == []
    assert "backup failed, nothing kept: cannot sync " in d.log_text(), d.log_tail()
    assert backup_gauge(d) is None


def test_a_dropin_whose_directory_cannot_be_synced_is_used_and_said(evhostd, build_dir,
                                                                   tmp_path):
    d = admin_daemon(evhostd, build_dir, tmp_path, subscribe="false")
    confd = d.config_dir / "conf.d"
    r = ctl(build_dir, d, "disable", "probe",
            env=lib.faults_preloaded(build_dir, fsync_dir=confd))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"probe: disabled, stopped ({confd / DROPIN})\n"
    assert r.stderr == (f"evhostctl: warning: cannot sync {confd} after replacing {DROPIN}: "
                        f"Input/output error; {confd / DROPIN} is written, but a crash of this "
                        "machine before its disk catches up may undo that\n"), r.stderr
    assert (confd / DROPIN).read_text() == dropin_text(False)
    assert d.get("/probe/seen").status_code == 404


def test_without_admin_api(evhostd, build_dir, tmp_path):
    d = evhostd(dropins={"20-probe.conf": {"plugin.probe": probe_conf(build_dir,
                                                                       subscribe="false")}})
    dropin = d.config_dir / "conf.d" / DROPIN
    assert ctl(build_dir, d, "status").returncode == 0
    assert_one_error(ctl(build_dir, d, "plugins"), 1, "admin API is disabled")
    r = ctl(build_dir, d, "disable", "probe")
    assert_one_error(r, 1, "pass --systemd")
    assert not dropin.exists()
    # The token given anyway: the daemon itself says its API is off.
    token = tmp_path / "t"
    token.write_text(TOKEN)
    assert_one_error(ctl(build_dir, d, "--token-file", str(token), "plugins"), 1,
                     "the admin API is disabled")

    # --systemd: `systemctl reload evhostd` (a stand-in that sends SIGHUP), then
    # /readyz is watched.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    args = tmp_path / "systemctl.args"
    fake = bindir / "systemctl"
    fake.write_text(f"#!/bin/sh\necho \"$@\" > {args}\nkill -HUP {d.proc.pid}\n")
    fake.chmod(0o755)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    r = ctl(build_dir, d, "disable", "probe", "--systemd", "--timeout", "20", env=env)
    assert r.returncode == 0, r.stderr
    assert args.read_text() == "reload evhostd\n"
    assert dropin.read_text() == dropin_text(False)
    # /readyz drops the plugin when it starts draining; the real `systemctl
    # reload` returns only after the daemon's READY=1 (after the drain).
    lib.wait_until(lambda: d.get("/probe/seen").status_code == 404, timeout=10,
                   message="/probe/seen 404 once drained")
    r = ctl(build_dir, d, "enable", "probe", "--systemd", env=env)
    assert r.returncode == 0, r.stderr
    assert d.get("/probe/seen").status_code == 200
    fake.write_text("#!/bin/sh\nexit 1\n")
    r = ctl(build_dir, d, "disable", "probe", "--systemd", env=env)
    assert r.returncode == 1 and "systemctl reload evhostd failed" in r.stderr
    assert dropin.read_text() == dropin_text(True)


# ------------------------------------------------------------ real Kafka


def test_dlq_and_replay(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    topic = unique_name("ctl")
    d = admin_daemon(evhostd, build_dir, tmp_path, brokers=kafka_bootstrap, topic=topic,
                     group=unique_name("g"), **{"retry.max_attempts": "2"})
    for i in range(2):
        assert d.post(f"/probe/publish?key=bad{i}", json={"fail": "reject"}).status_code == 200
    assert d.post("/probe/publish?key=good", json={"fine": 1}).status_code == 200

    def dead(n):
        r = ctl(build_dir, d, "--json", "dlq", "list", "probe")
        assert r.returncode == 0, r.stderr
        body = json.loads(r.stdout)
        return body if len(body["messages"]) >= n else None
    body = lib.wait_until(lambda: dead(2), timeout=40, message="two dead letters")
    msgs = body["messages"]
    ids = [f"{m['partition']}:{m['offset']}" for m in msgs]

    r = ctl(build_dir, d, "dlq", "list", "probe")
    assert r.returncode == 0, r.stderr
    head, *lines = r.stdout.splitlines()
    assert head.split()[:4] == ["ID", "KEY", "ATTEMPTS", "REDRIVEN"]
    assert sorted(line.split()[0] for line in lines) == sorted(ids)
    assert all("probe: rejected on request" in line and line.split()[2:4] == ["1", "no"]
               for line in lines)

    r = ctl(build_dir, d, "dlq", "show", "probe", "--limit", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{topic}.probe.dlq:")
    assert f"from:      {topic}/" in r.stdout
    assert "error:     probe: rejected on request" in r.stdout
    assert "evhost_dlq_plugin: probe" in r.stdout
    assert 'value (18 bytes):\n    {"fail": "reject"}\n' in r.stdout
    # The footer says how to see the next (--limit is at most 1000: raising it is
    # not always a way), and following it shows the rest, each once.
    first = min(msgs, key=lambda m: (m["partition"], m["offset"]))
    nxt = f"{topic}.probe.dlq:{first['partition']}:{first['offset']}"
    assert r.stdout.startswith(f"{nxt}\n"), r.stdout
    assert r.stdout.rstrip().endswith(
        f"(there are more dead letters: evhostctl -c {d.config_file} dlq show probe --limit 1 "
        f"--after {nxt})"), \
        r.stdout
    r = ctl(build_dir, d, "dlq", "list", "probe", "--after", nxt)
    assert r.returncode == 0, r.stderr
    rest = [line.split()[0] for line in r.stdout.splitlines()[1:]]
    assert sorted(rest + [f"{first['partition']}:{first['offset']}"]) == sorted(ids), r.stdout
    assert "there are more" not in r.stdout
    assert_one_error(ctl(build_dir, d, "dlq", "list", "probe", "--after", "5"), 2,
                     "--after takes a dead-letter id")

    r = ctl(build_dir, d, "dlq", "redrive", "probe", ids[0])
    assert r.returncode == 0, r.stderr
    assert f"{topic}.probe.dlq:{ids[0]}: redriven to {topic}/" in r.stdout
    assert r.stdout.endswith("1 redriven, 0 skipped, 0 failed\n")
    # Offsets beyond 10^15 reach the daemon exactly (cJSON's printer sent
    # 1.23456789012346e+15).
    r = ctl(build_dir, d, "dlq", "redrive", "probe", ids[0], "0:999999", "0:1234567890123456")
    assert r.returncode == 1, r.stdout
    # Each said as it was asked for: which partition too (a bare offset once).
    assert "already redriven" in r.stdout and "\n0:999999: not found" in r.stdout, r.stdout
    assert "\n0:1234567890123456: not found" in r.stdout, r.stdout
    # Its exit status 1 said on stderr too, as every other one is (it was not).
    assert r.stderr == ("evhostctl: dlq redrive probe: 0 failed, 2 not found, "
                        "0 unrecorded\n"), r.stderr
    r = ctl(build_dir, d, "--json", "dlq", "redrive", "probe", "0:999999")
    assert r.returncode == 1 and json.loads(r.stdout)["not_found"] == [999999], r.stdout
    assert r.stderr == ("evhostctl: dlq redrive probe: 0 failed, 1 not found, "
                        "0 unrecorded\n"), r.stderr
    # 2^53 is beyond what the daemon takes (2^53 + 1 would reach it as 2^53).
    r = ctl(build_dir, d, "dlq", "redrive", "probe", "0:9007199254740992")
    assert r.returncode == 2 and "is not a dead-letter id" in r.stderr, (r.stdout, r.stderr)
    r = ctl(build_dir, d, "dlq", "redrive", "probe", "--all")
    assert r.returncode == 0, r.stderr
    assert f"{ids[1]}: redriven" in r.stdout and "1 skipped" in r.stdout

    # Replay: the good event is handled again.
    lib.wait_until(lambda: len(d.get("/probe/seen").json()) >= 1, timeout=30,
                   message="the good event handled")
    r = ctl(build_dir, d, "replay", "probe", "--from", "beginning")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith(" inbox record(s) deleted\n"), r.stdout
    assert "probe: rewound; 0 inbox" not in r.stdout
    assert f"{topic}/" in r.stdout and ": offset 0 (was " in r.stdout
    lib.wait_until(lambda: len(d.get("/probe/seen").json()) == 2, timeout=30,
                   message="the good event handled again")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    r = ctl(build_dir, d, "replay", "probe", "--from", now, "--topic", topic)
    assert r.returncode == 0, r.stderr
    assert "probe: rewound; " in r.stdout
    assert_one_error(ctl(build_dir, d, "replay", "probe", "--from", "yesterday"), 2,
                     "--from takes 'beginning' or an RFC 3339 time")
    assert_one_error(ctl(build_dir, d, "replay", "probe", "--from", "beginning",
                         "--topic", "elsewhere"), 1, "does not consume")


def notifications_daemon(evhostd, tmp_path, kafka_bootstrap, unique_name):
    """evhostd with the admin API and notifications (maildir) on four topics
    of its own, so four dead-letter topics; returns (daemon, topics)."""
    topics = {k: unique_name(k) for k in ("created", "updated", "deleted", "broadcast")}
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    d = evhostd({"admin": {"token_file": str(token)},
                 "plugin.notifications": {
                     **lib.notifications_topics(topics), "templates_dir": str(lib.TEMPLATES),
                     "transport": "maildir", "maildir": str(tmp_path / "mail"),
                     "from": "Evhost Tests <noreply@example.org>",
                     "group": unique_name("g")}}, brokers=kafka_bootstrap)
    return d, topics


def test_dlq_ids_name_their_topic_when_the_plugin_has_several(evhostd, build_dir, tmp_path,
                                                              kafka_bootstrap, unique_name):
    # notifications consumes four topics, so four dead-letter topics: `dlq list`
    # shows TOPIC:PARTITION:OFFSET, and `dlq redrive` takes it back.
    d, topics = notifications_daemon(evhostd, tmp_path, kafka_bootstrap, unique_name)
    r = ctl(build_dir, d, "dlq", "list", "notifications")
    assert r.returncode == 0 and r.stdout.endswith("no dead letters for notifications\n"), \
        (r.stdout, r.stderr)
    lib.kafka_produce(topics["created"], b"not json", key="k", brokers=kafka_bootstrap)

    def listed():
        r = ctl(build_dir, d, "dlq", "list", "notifications")
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()[1:] or None
    (line,) = lib.wait_until(listed, timeout=60, message="a dead letter listed")
    dead = f"{topics['created']}.notifications.dlq"
    ident = line.split()[0]
    assert ident.startswith(dead + ":") and ident.count(":") == 2, line
    r = ctl(build_dir, d, "dlq", "redrive", "notifications", ident)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"{ident}: redriven to {topics['created']}/" in r.stdout, r.stdout
    # A partition and offset without their topic, or a topic without them: refused.
    assert_one_error(ctl(build_dir, d, "dlq", "redrive", "notifications",
                         ident[len(dead):]), 2, "is not a dead-letter id")
    assert_one_error(ctl(build_dir, d, "dlq", "redrive", "notifications", dead + ":x:1"), 2,
                     "is not a dead-letter id")


def test_an_ambiguous_dead_letter_offset_is_named_as_the_command_line_takes_it(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # Offset 0 is a dead letter in two of notifications' dead-letter topics:
    # a bare `0` names both. The daemon's hint is its JSON form ({"partition":
    # P, "offset": 0}); evhostctl names the two as `dlq list` shows them,
    # which `dlq redrive` takes.
    d, topics = notifications_daemon(evhostd, tmp_path, kafka_bootstrap, unique_name)
    for which in ("created", "updated"):
        lib.kafka_produce(topics[which], b"not json", key="k", brokers=kafka_bootstrap)

    def listed():
        r = ctl(build_dir, d, "--json", "dlq", "list", "notifications")
        assert r.returncode == 0, r.stderr
        msgs = json.loads(r.stdout)["messages"]
        return msgs if len(msgs) == 2 else None
    msgs = lib.wait_until(listed, timeout=60, message="two dead letters listed")
    assert [m["offset"] for m in msgs] == [0, 0], msgs
    ids = [f"{m['topic']}:{m['partition']}:{m['offset']}" for m in msgs]
    r = ctl(build_dir, d, "dlq", "redrive", "notifications", "0")
    assert_one_error(r, 1, "evhostctl: POST /admin/plugins/notifications/dlq/redrive: '0' "
                           f"names 2 dead letters: name one of {ids[0]}, {ids[1]} (as "
                           "'evhostctl dlq list notifications' shows them)\n")
    assert r.stdout == ""
    # --json: the daemon's answer on stdout as it is, the same line on stderr.
    r = ctl(build_dir, d, "--json", "dlq", "redrive", "notifications", "0")
    assert r.returncode == 1 and json.loads(r.stdout)["field"] == "offsets", r.stdout
    assert f"name one of {ids[0]}, {ids[1]}" in r.stderr, r.stderr
    r = ctl(build_dir, d, "dlq", "redrive", "notifications", ids[1])
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.endswith("1 redriven, 0 skipped, 0 failed\n"), r.stdout


def test_an_ambiguous_dead_letter_id_past_the_first_thousand_names_each_one(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # Offset 0 is a dead letter in each of three partitions, the third's past
    # the first 1000 in the order `dlq list` shows (partition 1 holds 1000).
    # The names came from a listing of those first 1000: "'0' names 2 dead
    # letters", the third left out. The daemon's 422 names each one it read
    # where it is ("candidates"), for evhostctl and for scripts.
    topic = unique_name("amb")
    dlq_topic = f"{topic}.probe.dlq"
    lib.create_topics([topic, dlq_topic], brokers=kafka_bootstrap, partitions=3)
    lib.kafka_produce_many([dict(topic=dlq_topic, partition=part, value=b'{"fine": true}',
                                 headers=[("ce_id", f"dl-{part}-{i}".encode())])
                            for part, n in enumerate((2, 1000, 2)) for i in range(n)],
                           brokers=kafka_bootstrap)
    d = admin_daemon(evhostd, build_dir, tmp_path, brokers=kafka_bootstrap, topic=topic,
                     group=unique_name("g"))
    r = ctl(build_dir, d, "dlq", "redrive", "probe", "0")
    assert_one_error(r, 1, "evhostctl: POST /admin/plugins/probe/dlq/redrive: '0' names 3 "
                           "dead letters: name one of 0:0, 1:0, 2:0 (as 'evhostctl dlq list "
                           "probe' shows them)\n")
    assert r.stdout == ""
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=60,
               json={"offsets": [5, 0]})
    body = r.json()
    assert r.status_code == 422 and body["field"] == "offsets", r.text
    assert body["ambiguous"] == 1 and body["candidates"] == [
        {"topic": dlq_topic, "partition": p, "offset": 0} for p in range(3)], body
    assert "offset 0 is in 3 dead-letter partitions" in body["detail"], body


def test_an_ambiguous_id_from_a_daemon_without_candidates_is_named_from_a_whole_listing(
        build_dir, tmp_path):
    # A daemon from before "candidates": the names come from the first 1000
    # dead letters listed, and only when that is all of them (a page of them
    # would name some as all); else the daemon's own answer is said.
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    conf = tmp_path / "evhost.conf"
    conf.write_text("[kafka]\nbrokers = embedded\n")
    refusal = json.dumps({"type": "https://evhost.dev/problems/validation", "status": 422,
                          "title": "Unprocessable Content", "field": "offsets",
                          "detail": "offset 0 is in 3 dead-letter partitions; name one: "
                                    '{"partition": P, "offset": 0}'}).encode()
    for truncated, want in ((False, "'0' names 2 dead letters: name one of 0:0, 1:0 (as "
                                    "'evhostctl dlq list probe' shows them)\n"),
                            (True, "offset 0 is in 3 dead-letter partitions; name one: "
                                   '{"partition": P, "offset": 0} (422)\n')):
        listing = json.dumps({"topics": ["t"], "truncated": truncated, "messages": [
            {"topic": "t", "partition": p, "offset": o} for p, o in ((0, 0), (1, 0), (1, 1))
        ]}).encode()
        routes = {"/admin/plugins/probe/dlq/redrive": (422, refusal),
                  "/admin/plugins/probe/dlq": (200, listing)}
        with served_by(routed(routes)) as url:
            r = ctl_bytes(build_dir, conf, url, token, "dlq", "redrive", "probe", "0")
        assert r.returncode == 1 and r.stdout == b"", r
        err = r.stderr.decode()
        assert err.startswith("evhostctl: POST /admin/plugins/probe/dlq/redrive")
        assert err.count("\n") == 1 and err.endswith(want), (truncated, err)


def test_status_not_ready(evhostd, build_dir):
    # A broker nobody listens on: the daemon serves, but is not ready.
    d = evhostd(brokers=f"127.0.0.1:{lib.free_port()}")
    r = ctl(build_dir, d, "status")
    assert_one_error(r, 1, "the daemon is not ready (GET /readyz: 503)")
    assert f"evhostd at {d.url}: serving, NOT READY" in r.stdout
    assert "kafka: unreachable" in r.stdout and "no plugins" in r.stdout


def ctl_failing(build_dir, d, n, *args):
    """evhostctl (tests/fixtures/evhostctl_faults) with its Nth allocation
    failed: lib.run_failing."""
    return lib.run_failing([build_dir / "tests" / "fixtures" / "evhostctl_faults", "-c",
                            d.config_file, *args], n)


def replay_daemon(evhostd, build_dir, tmp_path, request):
    """The probe consuming a topic of its own of one partition on real Kafka,
    and the admin API: what the out-of-memory sweep of `replay` runs against.
    The daemon took about half a second per partition to rewind (its offset
    look-ups, one partition at a time; now one for them all, which still
    waits up to half a second for the consumer's pending fetch), and each
    run whose failed allocation comes after the request (the answer's
    parsing and printing, 23 of them) rewinds: hello's four partitions on
    the embedded broker made that sweep take 54-139 s (176 allocations);
    one partition makes it about 15 (123). The other three
    partitions only repeated the first one's allocations: each of the 65
    stacks failed in that sweep (ALLOC_FAULTS_TRACE) is failed in this one.
    Nothing is published to the topic, so every replay answers alike."""
    kafka, unique = request.getfixturevalue("kafka_bootstrap"), request.getfixturevalue(
        "unique_name")
    topic = unique("oom")
    lib.create_topics([topic], brokers=kafka, partitions=1)
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    return evhostd({"admin": {"token_file": str(token)},
                    "plugin.probe": probe_conf(build_dir, topic=topic, group=unique("g"))},
                   brokers=kafka)


def toggle_daemon(evhostd, build_dir, tmp_path, disabling):
    """hello.so and the admin API: what the out-of-memory sweeps of `enable`
    and `disable` run against. Disabling, the probe too (not consuming), so
    that the plugin lists evhostctl parses, hello out of them, still hold a
    plugin (an object in an array: cJSON stacks of their own). Enabling, a
    second plugin only repeated hello's allocations: each stack failed with
    the probe there (ALLOC_FAULTS_TRACE) is failed without it, in 276 runs
    instead of 371."""
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    hello = {"path": str(build_dir / "plugins" / "hello.so")}
    dropins = {"10-hello.conf": {"plugin.hello": hello}}
    if disabling:
        dropins["20-probe.conf"] = {"plugin.probe": probe_conf(build_dir, subscribe="false")}
    return evhostd({"admin": {"token_file": str(token)}}, dropins=dropins)


class ToggleTraces:
    """What a run of enable/disable may have left: conf.d's files (a file
    written anew counts, though its text be the same) and the reloads asked
    of the daemon (its log says each before answering, so by the time
    evhostctl has exited). A failed run that left neither changed nothing:
    running the toggle again would only repeat the run before it."""

    def __init__(self, d):
        self.d, self.log_at = d, d.log_file.stat().st_size
        self.files = self._files()

    def _files(self):
        return sorted((f.name, st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)
                      for f in (self.d.config_dir / "conf.d").iterdir() for st in [f.stat()])

    def changed(self):
        with open(self.d.log_file, "rb") as f:
            f.seek(self.log_at)
            new = f.read()
        self.log_at += len(new)
        files, self.files = self.files, self._files()
        return b"asked through the admin API" in new or files != self.files


@pytest.mark.parametrize("args", [["status"], ["plugins"], ["--json", "plugins"],
                                  ["events", "--limit", "5"], ["disable", "hello"],
                                  ["enable", "hello"], ["backup", "--keep", "1"],
                                  ["dlq", "list", "hello"], ["dlq", "show", "hello"],
                                  ["replay", "probe", "--from", "beginning"],
                                  ["sign-out", "u-1"]],
                         ids=" ".join)
def test_out_of_memory_is_said_never_a_crash(evhostd, build_dir, tmp_path, request, args):
    # Each allocation of the command (its own and cJSON's) failed in turn
    # (lib.oom_stride: every one in the plain build, one in 3 under ASan):
    # the command does what it does without failures, or exits 1 saying
    # out of memory, the lines before it true. A toggle it could not finish
    # is finished by running it again (after a run that wrote a file in
    # conf.d or asked for a reload: ToggleTraces). (A backup's names and sizes, and a
    # sign-out's time, change from one to the next: their digits are not
    # compared.)
    if lib.sanitizer(build_dir) == "tsan":
        pytest.skip("evhostctl runs one thread: ThreadSanitizer has nothing to find in it "
                    "(the plain and ASan passes sweep it)")
    if args[0] == "replay":
        d = replay_daemon(evhostd, build_dir, tmp_path, request)
    elif args[0] in ("enable", "disable"):
        d = toggle_daemon(evhostd, build_dir, tmp_path, args[0] == "disable")
    else:
        d = admin_daemon(evhostd, build_dir, tmp_path, sign=args[0] == "sign-out",
                         subscribe="false")
        assert d.post("/probe/publish?key=k", json={"o": 1}).status_code == 200
        lib.wait_until(lambda: "probe.event" in ctl(build_dir, d, "events").stdout,
                       timeout=20, message="the event in the event log")

    def out(r):
        return re.sub(r"\d+", "N", r.stdout) if args[0] in ("backup", "sign-out") else r.stdout
    if args[0] == "backup":  # then each run removes the one before it, as `want` does
        assert ctl(build_dir, d, *args).returncode == 0
    if args[0] == "replay":  # once probe's consumer has its partition
        lib.wait_until(lambda: ctl(build_dir, d, *args).returncode == 0, timeout=60,
                       message="a replay that probe's consumer takes")
    want = ctl(build_dir, d, *args)
    assert want.returncode == 0, want.stderr
    hello_on = args != ["disable", "hello"]
    traces = ToggleTraces(d) if args[0] in ("enable", "disable") else None
    for n in range(0, 5000, lib.oom_stride(build_dir, 1)):
        r, failed = ctl_failing(build_dir, d, n, *args)
        assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, (n, r.stderr)
        if not failed:
            assert (r.returncode, out(r), r.stderr) == (0, out(want), ""), (n, r.stderr)
            break
        if r.returncode == 0:
            assert out(r) == out(want) and r.stderr == "", (n, r.stdout, r.stderr)
        else:
            assert_one_error(r, 1, "")
            assert re.search("out of memory|Cannot allocate memory", r.stderr), (n, r.stderr)
            assert out(want).startswith(out(r)), (n, r.stdout)
        if traces:
            # Run again after a run that wrote or reloaded (the reloads are
            # most of the sweep's time; half the runs, 146 of enable's 276,
            # fail before either, reading the configuration and the plugins)
            if traces.changed():
                assert ctl(build_dir, d, *args).returncode == 0
                traces.changed()
            assert (d.get("/hello").status_code == 200) == hello_on
    else:
        pytest.fail("5000 allocations and counting")
    print(f"{' '.join(args)}: {n} allocations")


@contextlib.contextmanager
def served_by(handler, host="127.0.0.1"):
    """A throwaway HTTP server on `host` (loopback) answering with `handler`
    (a BaseHTTPRequestHandler class); yields its URL."""
    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = Server((host, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{f'[{host}]' if ':' in host else host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def answering(body, content_type, asked=None):
    """A BaseHTTPRequestHandler class answering every GET 200 with `body`;
    each request's (path, Authorization) goes to `asked` when given."""
    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if asked is not None:
                asked.append((self.path, self.headers["Authorization"]))
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    return Answer


def ctl_at(build_dir, tmp_path, url, *args):
    """evhostctl --url URL ARGS with a configuration of no daemon of its own."""
    conf = tmp_path / "evhost.conf"
    conf.write_text("[kafka]\nbrokers = embedded\n")
    return subprocess.run([str(build_dir / "host" / "evhostctl"), "-c", str(conf), "--url", url,
                           *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)


def test_dlq_list_asks_for_no_values_and_show_for_them(build_dir, tmp_path):
    # dlq list prints no values: it asks for none (a thousand values of 64 KiB
    # in base64 passed the 64 MiB an answer may have). dlq show and --json ask
    # for them, as before. A daemon from before ?values= refuses it (422
    # naming it): list asks again without.
    asked = []
    letter = {"topic": "t.probe.dlq", "partition": 0, "offset": 7, "key": "k",
              "value_size": 3, "redriven": False,
              "headers": {"evhost_dlq_attempts": "1", "evhost_dlq_time": "2026-12-06T19:00:00Z",
                          "evhost_dlq_error": "probe: rejected", "evhost_dlq_topic": "t",
                          "evhost_dlq_partition": "0", "evhost_dlq_offset": "7"}}

    def stand_in(knows_values):
        def dlq(path):
            lean = "values=false" in path
            if lean and not knows_values:
                return 422, json.dumps({"status": 422, "field": "values",
                                        "detail": "unknown query parameter 'values' "
                                                  "(this route takes: limit, after)"}).encode()
            m = dict(letter) if lean else {**letter, "value": "abc"}
            return 200, json.dumps({"plugin": "probe", "topics": ["t.probe.dlq"],
                                    "messages": [m], "truncated": False}).encode()
        return routed({"/admin/plugins/probe/dlq": dlq}, asked)

    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    for knows_values in (True, False):
        asked.clear()
        with served_by(stand_in(knows_values)) as served:
            url = [served, "--token-file", str(token)]
            r = ctl_at(build_dir, tmp_path, *url, "dlq", "list", "probe")
            assert r.returncode == 0, r.stderr
            assert r.stdout.splitlines()[1].split()[:4] == ["0:7", "k", "1", "no"], r.stdout
            assert asked[0] == "/admin/plugins/probe/dlq?limit=1000&values=false", asked
            assert asked[1:] == ([] if knows_values else ["/admin/plugins/probe/dlq?limit=1000"])
            del asked[:]
            r = ctl_at(build_dir, tmp_path, *url, "dlq", "show", "probe")
            assert r.returncode == 0 and "value (3 bytes):\n    abc\n" in r.stdout, r.stdout
            r = ctl_at(build_dir, tmp_path, *url, "--json", "dlq", "list", "probe")
            assert r.returncode == 0 and json.loads(r.stdout)["messages"][0]["value"] == "abc"
            assert asked == ["/admin/plugins/probe/dlq?limit=10",
                             "/admin/plugins/probe/dlq?limit=1000"], asked
    # Nothing after --after's id: said as that, not as no dead letters at all.
    empty = json.dumps({"plugin": "probe", "topics": ["t.probe.dlq"], "messages": [],
                        "truncated": False}).encode()
    with served_by(routed({"/admin/plugins/probe/dlq": (200, empty)})) as url:
        for cmd in ("list", "show"):
            r = ctl_at(build_dir, tmp_path, url, "--token-file", str(token), "dlq", cmd, "probe",
                       "--after", "0:7")
            assert r.returncode == 0 and r.stdout == "no dead letters for probe after 0:7\n", \
                (r.stdout, r.stderr)


@pytest.mark.parametrize("wildcard, loopback", [("0.0.0.0", "127.0.0.1"), ("[::]", "::1")])
def test_a_wildcard_listen_address_is_reached_on_loopback(build_dir, tmp_path, wildcard,
                                                          loopback):
    # [http] listen on every address (0.0.0.0 or [::]): evhostctl, which has
    # no --url, asks the daemon on loopback, where it listens too. (A stand-in
    # on loopback answers: the tests bind nothing but loopback. Linux takes a
    # connection to the wildcard itself for one to loopback, so this checks
    # that the address is read and reached, brackets and all.)
    asked = []
    if ":" in loopback and not socket.has_ipv6:
        pytest.skip("no IPv6")
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    with served_by(answering(b'{"plugins":[]}', "application/json", asked), loopback) as url:
        port = url.rsplit(":", 1)[1]
        conf = tmp_path / "evhost.conf"
        conf.write_text(f"[http]\nlisten = {wildcard}:{port}\n[kafka]\nbrokers = embedded\n"
                        f"[admin]\ntoken_file = {token}\n")
        r = subprocess.run([str(build_dir / "host" / "evhostctl"), "-c", str(conf), "plugins"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert asked == [("/admin/plugins", f"Bearer {TOKEN}")], asked


def test_an_answer_that_is_not_json_is_said_as_that(build_dir, tmp_path):
    # Something else than evhostd at --url (a proxy's error page) answers
    # 200 with HTML: said, exit 1, not taken for an empty plugin list.
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    with served_by(answering(b"<html><body>It works!</body></html>", "text/html")) as url:
        r = ctl_at(build_dir, tmp_path, url, "--token-file", str(token), "plugins")
        assert_one_error(r, 1, "GET /admin/plugins: the answer is not JSON (200)")
        assert r.stdout == ""
        # --json: stdout is for the daemon's JSON, which a script parses; the
        # page is not printed there (it was, before the error on stderr).
        r = ctl_at(build_dir, tmp_path, url, "--token-file", str(token), "--json", "plugins")
        assert_one_error(r, 1, "GET /admin/plugins: the answer is not JSON (200)")
        assert r.stdout == ""
    # JSON followed by something else is not JSON either (cJSON alone stops
    # at the value's end, and took the answer for an empty list).
    body = b'{"plugins": []}\n<html><body>It works!</body></html>'
    with served_by(answering(body, "application/json")) as url:
        for args in (["plugins"], ["--json", "plugins"]):
            r = ctl_at(build_dir, tmp_path, url, "--token-file", str(token), *args)
            assert_one_error(r, 1, "GET /admin/plugins: the answer is not JSON (200)")
            assert r.stdout == "", args
    # White space after it is JSON's own.
    with served_by(answering(b'{"plugins": []} \r\n', "application/json")) as url:
        r = ctl_at(build_dir, tmp_path, url, "--token-file", str(token), "--json", "plugins")
    assert r.returncode == 0 and json.loads(r.stdout) == {"plugins": []}, (r.stdout, r.stderr)
    # A proxy's error page, not the daemon's problem details: said as that,
    # not as the daemon's answer without details ("no details (502)").
    page = b"<html><body>502 Bad Gateway</body></html>"
    with served_by(routed({"/admin/plugins": (502, page, "text/html"),
                           "/healthz": (200, b"ok", "text/plain"),
                           "/readyz": (503, page, "text/html")})) as url:
        r = ctl_at(build_dir, tmp_path, url, "--token-file", str(token), "plugins")
        assert_one_error(r, 1, "evhostctl: GET /admin/plugins: the answer (502) is not the "
                               "daemon's JSON (a proxy's page?)\n")
        r = ctl_at(build_dir, tmp_path, url, "status")
        assert_one_error(r, 1, "evhostctl: GET /readyz: the answer (503) is not the daemon's "
                               "JSON (a proxy's page?)\n")
    # A proxy asking for a login of its own: not the daemon refusing the
    # token (it answers 401 with problem details), which sent the operator
    # to check a token that is right.
    with served_by(routed({"/admin/plugins": (401, b"<html>Log in</html>", "text/html")})) as url:
        r = ctl_at(build_dir, tmp_path, url, "--token-file", str(token), "plugins")
        assert_one_error(r, 4, "evhostctl: GET /admin/plugins: the answer (401) is not the "
                               "daemon's JSON: a proxy in front of it asks for credentials of "
                               "its own (evhostctl sends the admin token only)\n")


def routed(routes, asked=None):
    """A BaseHTTPRequestHandler class answering GET and POST of each path
    (its query left off) in `routes` with (status, JSON body bytes) or
    (status, body bytes, Content-Type), or with what a function there returns
    for the path with its query; others 404.
    Each request's path with its query goes to `asked` when given, a POST's
    as (path, its body parsed)."""
    class Answer(http.server.BaseHTTPRequestHandler):
        def answer(self):
            n = int(self.headers.get("Content-Length") or 0)
            posted = self.rfile.read(n) if n else b""
            if asked is not None:
                asked.append((self.path, json.loads(posted or b"null"))
                             if self.command == "POST" else self.path)
            route = routes.get(self.path.split("?")[0], (404, b'{"detail": "no"}'))
            status, body, *ctype = route(self.path) if callable(route) else route
            self.send_response(status)
            self.send_header("Content-Type", ctype[0] if ctype else "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        do_GET = do_POST = answer

        def log_message(self, *args):
            pass
    return Answer


def ctl_bytes(build_dir, conf, url, token, *args):
    """evhostctl -c CONF --url URL --token-file TOKEN ARGS, its output as bytes
    (text mode would turn a carriage return into a newline)."""
    return subprocess.run([str(build_dir / "host" / "evhostctl"), "-c", str(conf), "--url", url,
                           "--token-file", str(token), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=60)


# What a hostile or broken answer could do to a terminal: erase the line and
# go back to its start, set the window title, CSI as C1 (U+009B), DEL.
HOSTILE = '"x\\u001b[2K\\r\\u001b]0;pwned\\u0007\\u009b31m\\u007fy"'


def test_what_the_daemon_says_reaches_the_terminal_without_control_characters(build_dir,
                                                                             tmp_path):
    # Every string of an answer printed as text (problem details, plugin
    # names, event fields, redrive, replay and backup output) has its control
    # characters shown as '?', as table cells had; --json prints the answer
    # as it came, byte for byte (JSON escapes them there).
    h = HOSTILE
    dead = (f'{{"topic": {h}, "partition": 0, "offset": 1, "key": {h}, "value": {h}, '
            f'"value_size": 3, "headers": {{{h}: {h}, "evhost_dlq_error": {h}}}, '
            f'"headers_base64": {{{h}: "AA=="}}}}')
    routes = {
        "/healthz": (200, b"{}"),
        "/readyz": (200, f'{{"ready": true, "kafka": {h}, "storage": {h}, "damaged": [{h}], '
                         f'"plugins": {{{h}: {h}}}}}'.encode()),
        "/admin/plugins": (500, f'{{"detail": {h}}}'.encode()),
        "/admin/plugins/probe/dlq": (200, f'{{"messages": [{dead}], "topics": [{h}], '
                                          f'"truncated": true, "next_after": {h}}}'.encode()),
        "/admin/plugins/probe/dlq/redrive": (
            200, f'{{"results": [{{"topic": {h}, "partition": 0, "offset": 1, "outcome": {h}, '
                 f'"error": {h}}}, {{"topic": "t", "partition": 0, "offset": 2, '
                 f'"outcome": "redriven", "to_topic": {h}, "to_partition": 0, '
                 f'"to_offset": 7}}], "not_found_at": [{{"topic": {h}, "partition": 0, '
                 f'"offset": 3}}], "stopped": {h}, "truncated": true, "next_after": {h}, '
                 f'"redriven": 1, "skipped": 0, "failed": 0}}'.encode()),
        "/admin/plugins/probe/replay": (
            200, f'{{"partitions": [{{"topic": {h}, "partition": 0, "offset": 0}}], '
                 f'"inbox_deleted": 0}}'.encode()),
        "/admin/events": (200, f'{{"events": [{{"time": {h}, "plugin": {h}, "type": {h}, '
                               f'"key": {h}, "topic": {h}, "partition": 0, "offset": 1, '
                               f'"id": {h}, "seq": 1}}], "truncated": true, '
                               f'"next_after": 1}}'.encode()),
        "/admin/backup": (200, f'{{"plugins": [{{"plugin": {h}, "file": {h}, "bytes": 1}}], '
                               f'"sign_outs": {{"file": {h}, "bytes": 1}}, "removed": [{h}], '
                               f'"dir": {h}, "time": {h}}}'.encode()),
        "/admin/sign-out": (200, f'{{"subject": {h}, "signed_out_at": {h}}}'.encode()),
    }
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    conf = tmp_path / "evhost.conf"
    conf.write_text("[kafka]\nbrokers = embedded\n")
    commands = (["status"], ["plugins"], ["dlq", "list", "probe"], ["dlq", "show", "probe"],
                ["dlq", "redrive", "probe", "--all"], ["replay", "probe", "--from", "beginning"],
                ["events", "--plugin", "probe"], ["backup"], ["sign-out", "someone"])
    controls = re.compile(rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]")
    with served_by(routed(routes)) as url:
        for args in commands:
            r = ctl_bytes(build_dir, conf, url, token, *args)
            out = r.stdout + r.stderr
            assert not controls.search(out), (args, out)
            # What was said is there, each control character as '?'.
            assert b"x?[2K??]0;pwned??31m?y" in out, (args, out)
        r = ctl_bytes(build_dir, conf, url, token, "plugins")
        assert r.returncode == 1 and r.stderr == (
            b"evhostctl: GET /admin/plugins: x?[2K??]0;pwned??31m?y (500)\n"), r.stderr
        for args in (["status"], ["events"], ["dlq", "show", "probe"], ["backup"]):
            r = ctl_bytes(build_dir, conf, url, token, "--json", *args)
            body = routes["/readyz" if args == ["status"] else
                          "/admin/plugins/probe/dlq" if args[0] == "dlq" else
                          "/admin/" + args[0]][1]
            assert r.returncode == 0 and r.stdout == body + b"\n", (args, r.stdout, r.stderr)


def test_bytes_that_are_not_utf8_reach_the_terminal_as_question_marks(build_dir, tmp_path):
    # A raw 0x9B in an answer's string is CSI to a terminal that reads 8
    # bits a character; only C1 written as UTF-8 (U+009B) was scrubbed, and
    # the raw byte went through. Each byte that is not part of well-formed
    # UTF-8 (a stray continuation byte, an overlong form, a surrogate, a
    # sequence cut short, one past U+10FFFF) is now a '?' as well; UTF-8
    # characters pass as they are.
    bad = b"a\x9b31mb\xc0\x9bc\xed\xa0\x80d\xe2\x82e\xff\x80f\xf4\x90\x80\x80g"
    good = "é€😀".encode()
    shown = b"a?31mb??c???d??e??f????g" + good
    routes = {
        "/admin/plugins": (200, b'{"plugins": [{"name": "' + bad + good + b'", '
                                b'"state": "running"}]}'),
        "/admin/events": (500, b'{"detail": "' + bad + good + b'"}'),
    }
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    conf = tmp_path / "evhost.conf"
    conf.write_text("[kafka]\nbrokers = embedded\n")
    with served_by(routed(routes)) as url:
        r = ctl_bytes(build_dir, conf, url, token, "plugins")
        assert r.returncode == 0, r.stderr
        name = r.stdout.splitlines()[1].split()[0]
        assert name == shown, r.stdout
        r = ctl_bytes(build_dir, conf, url, token, "events")
        assert r.returncode == 1 and r.stderr.endswith(b": " + shown + b" (500)\n"), r.stderr
        # --json: the answer as it came, for a parser.
        r = ctl_bytes(build_dir, conf, url, token, "--json", "plugins")
        assert r.stdout == routes["/admin/plugins"][1] + b"\n", r.stdout


def test_the_next_page_hint_is_the_same_listing_pasted_into_a_shell(build_dir, tmp_path):
    # "(there may be more events: ...)" and "(there are more dead letters: ...)"
    # give a command that, pasted into a shell, asks the same daemon (-c,
    # --url, --token-file as given), with the same --aggregate and --limit,
    # for the page after; values the shell would split or expand are quoted.
    odd = tmp_path / "it's a $HOME `x` \"dir\" !"
    odd.mkdir()
    token = odd / "admin.token"
    token.write_text(TOKEN + "\n")
    conf = odd / "evhost.conf"
    conf.write_text("[kafka]\nbrokers = embedded\n")
    agg = "order 42; echo 'gone' $(id)"
    asked = []
    routes = {
        "/admin/events": (200, b'{"events": [], "truncated": true, "next_after": 17}'),
        "/admin/plugins/probe/dlq": (200, b'{"messages": [], "truncated": true, '
                                          b'"next_after": "t;$(id) x:0:5"}'),
        "/admin/plugins/probe/dlq/redrive": (
            200, b'{"results": [], "truncated": true, "next_after": "t;$(id) x:0:5", '
                 b'"redriven": 0, "skipped": 0, "failed": 0}'),
    }
    env = dict(os.environ, PATH=f"{build_dir / 'host'}:{os.environ['PATH']}")
    with served_by(routed(routes, asked)) as url:
        for args, hint, want in (
                (["events", "--plugin", "probe", "--aggregate", agg, "--limit", "7"],
                 "(there may be more events: ",
                 "/admin/events?plugin=probe&after=17&aggregate=order%2042%3B%20echo%20%27gone"
                 "%27%20%24%28id%29&limit=7"),
                (["dlq", "list", "probe", "--limit", "3"], "(there are more dead letters: ",
                 "/admin/plugins/probe/dlq?limit=3&after=t%3B%24%28id%29%20x%3A0%3A5"
                 "&values=false"),
                (["dlq", "redrive", "probe", "--all"], "(more dead letters may wait: ",
                 ("/admin/plugins/probe/dlq/redrive", {"after": "t;$(id) x:0:5"}))):
            # A redrive cut short is unfinished: exit 1, said on stderr.
            status = 1 if args[0] == "dlq" and args[1] == "redrive" else 0
            r = ctl_bytes(build_dir, conf, url, token, *args)
            assert r.returncode == status, (r.stdout, r.stderr)
            if status:
                assert r.stderr.decode().endswith(
                    "; stopped part way: more dead letters may wait\n"), r.stderr
            line = [x for x in r.stdout.decode().splitlines() if x.startswith(hint)]
            assert len(line) == 1, r.stdout
            command = line[0][len(hint):].split(" goes on after")[0].rstrip(")")
            assert command.startswith("evhostctl -c "), command
            del asked[:]
            r = subprocess.run(["sh", "-c", command], env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=60, cwd=tmp_path)
            assert r.returncode == status, (command, r.stdout, r.stderr)
            assert asked == [want], (command, asked)
            assert not (tmp_path / "gone").exists()


def test_numbers_on_the_command_line_are_digits_only(build_dir, tmp_path):
    # strtol alone takes " 5", "+5", "-0": the man page says digits.
    conf = tmp_path / "evhost.conf"
    conf.write_text("[kafka]\nbrokers = embedded\n")
    exe = str(build_dir / "host" / "evhostctl")
    for opt, value, cmd in (("--limit", " 5", ["events"]), ("--limit", "+5", ["events"]),
                            ("--limit", "5 ", ["events"]), ("--keep", "+2", ["backup"]),
                            ("--timeout", " 9", ["disable", "probe"])):
        r = subprocess.run([exe, "-c", str(conf), *cmd, opt, value], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
        assert_one_error(r, 2, f"{opt} takes a number from 1 to ")
        assert f"not '{value}'" in r.stderr, r.stderr


def test_an_ambiguous_abbreviation_names_the_options_it_could_be(build_dir, tmp_path):
    # getopt_long takes "--k" for nothing: it begins --keep and --keep-inbox.
    # Said as that (it was "unknown", as if no option began so).
    conf = tmp_path / "evhost.conf"
    conf.write_text("[kafka]\nbrokers = embedded\n")
    exe = str(build_dir / "host" / "evhostctl")
    for arg, needle in (("--k", "option '--k' is ambiguous: it could be any of '--keep', "
                                "'--keep-inbox'"),
                        ("--kee=3", "option '--kee' is ambiguous: it could be any of "
                                    "'--keep', '--keep-inbox'"),
                        ("--t", "option '--t' is ambiguous: it could be any of "
                                "'--token-file', '--topic', '--timeout'"),
                        ("--kx", "option '--kx' is unknown")):
        r = subprocess.run([exe, "-c", str(conf), arg, "backup"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=60)
        assert_one_error(r, 2, needle)
    # An abbreviation that begins one option is that option.
    r = subprocess.run([exe, "-c", str(conf), "--keep-i", "backup"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert_one_error(r, 2, "--keep-inbox does not apply to 'backup'")


def test_output_that_cannot_be_written_is_said(build_dir, tmp_path):
    # What evhostctl prints must reach its reader: a full disk, a closed
    # stdout, or a reader gone while SIGPIPE is ignored (systemd's default
    # for services, inherited by what they run) lost the output with exit
    # status 0, and a script took the cut --json answer, or none, for the
    # whole. Said on stderr, exit 1. With SIGPIPE as it usually is, a reader
    # gone (`evhostctl ... | head -1`) ends evhostctl quietly by that signal.
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    big = json.dumps({"plugins": [{"name": f"p{i}", "state": "running"}
                                  for i in range(5000)]}).encode()  # > a pipe's buffer
    base = [str(build_dir / "host" / "evhostctl"), "-c", str(tmp_path / "evhost.conf"),
            "--token-file", str(token)]
    (tmp_path / "evhost.conf").write_text("[kafka]\nbrokers = embedded\n")
    with served_by(answering(big, "application/json")) as url, \
            open("/dev/full", "w") as full:
        for args in (["--json", "plugins"], ["plugins"], ["--help"], ["--version"]):
            r = subprocess.run([*base, "--url", url, *args], stdin=subprocess.DEVNULL,
                               stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
            assert_one_error(r, 1, "evhostctl: cannot write to standard output: No space left "
                                   "on device\n")
        r = subprocess.run([*base, "--url", url, "--json", "plugins"], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        assert r.returncode == 0 and json.loads(r.stdout) == json.loads(big), r.stderr
        # A reader that goes after the first bytes. restore_signals=False:
        # evhostctl inherits this Python's SIGPIPE, ignored.
        assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
        for restore, want in ((False, 1), (True, -signal.SIGPIPE)):
            with subprocess.Popen([*base, "--url", url, "--json", "plugins"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, restore_signals=restore) as p:
                assert p.stdout.read(20) == big[:20]
                p.stdout.close()
                err = p.stderr.read().decode()
                p.wait(timeout=60)
            if restore:
                assert (p.returncode, err) == (want, ""), (p.returncode, err)
            else:
                assert p.returncode == want, (p.returncode, err)
                assert err == "evhostctl: cannot write to standard output: Broken pipe\n", err


def test_every_command_whose_output_cannot_be_written_says_so(build_dir, tmp_path):
    # stdout on /dev/full (ENOSPC): each command exits non-zero saying so on
    # stderr, never a silent 0. `check` runs evhostd --check-config in its
    # place, which said nothing and exited 0: evhostd says it now.
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    conf = tmp_path / "evhost.conf"
    conf.write_text("[kafka]\nbrokers = embedded\n")
    routes = {
        "/healthz": (200, b'{"status": "ok"}'),
        "/readyz": (200, b'{"ready": true, "kafka": "ok", "storage": "ok", "plugins": {}}'),
        "/admin/events": (200, b'{"events": [], "truncated": false}'),
        "/admin/plugins/probe/dlq": (200, b'{"topics": ["t"], "messages": [], '
                                          b'"truncated": false}'),
        "/admin/plugins/probe/dlq/redrive": (200, b'{"results": [], "redriven": 0, '
                                                  b'"skipped": 0, "failed": 0, '
                                                  b'"not_found": [], "truncated": false}'),
    }
    exe = str(build_dir / "host" / "evhostctl")
    with served_by(routed(routes)) as url, open("/dev/full", "w") as full:
        for args in (["status"], ["--json", "status"], ["events"], ["dlq", "list", "probe"],
                     ["dlq", "show", "probe"], ["dlq", "redrive", "probe", "--all"]):
            r = subprocess.run([exe, "-c", str(conf), "--url", url, "--token-file", str(token),
                                *args], stdin=subprocess.DEVNULL, stdout=full,
                               stderr=subprocess.PIPE, text=True, timeout=60)
            assert_one_error(r, 1, "evhostctl: cannot write to standard output: No space "
                                   "left on device\n")
            r = subprocess.run([exe, "-c", str(conf), "--url", url, "--token-file", str(token),
                                *args], stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=60)
            assert r.returncode == 0 and r.stdout and not r.stderr, (args, r.stderr)
        r = subprocess.run([exe, "-c", str(conf), "check"], stdin=subprocess.DEVNULL,
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
        assert (r.returncode, r.stderr) == (
            1, "evhostd: cannot write to standard output: No space left on device\n"), \
            (r.returncode, r.stderr)
    r = subprocess.run([exe, "-c", str(conf), "check"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, f"{conf}: configuration OK (0 plugins)\n"), r


def test_an_answer_too_large_is_said_as_that(build_dir, tmp_path):
    # A server at --url that answers 200 with 65 MiB: evhostctl stops reading
    # at 64 MiB and says so (exit 1), not that the daemon is unreachable.
    class Huge(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            size, chunk = 65 * 1024 * 1024, b"x" * (1024 * 1024)
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            with contextlib.suppress(OSError):  # evhostctl hangs up at 64 MiB
                for _ in range(size // len(chunk)):
                    self.wfile.write(chunk)

        def log_message(self, *args):
            pass

    with served_by(Huge) as url:
        r = ctl_at(build_dir, tmp_path, url, "status")
    assert_one_error(r, 1, f"GET {url}/healthz: the answer is larger than 64 MiB")
