"""The admin API (/admin/...) against the real daemon and real Kafka: the
bearer token, the plugin listing, the event log by aggregate id, reading and
redriving dead letters, and replay from the beginning, a time and offsets.
The probe fixture plugin is the subject: its handler's behaviour is steered
by the event data (see tests/fixtures/probe.c)."""

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

import evhost_testlib as lib

TOKEN = "admin-token-for-tests-0123456789"


def probe_conf(build_dir, **keys):
    conf = {"enabled": "true", "path": str(build_dir / "tests" / "fixtures" / "probe.so")}
    conf.update(keys)
    return conf


def admin_conf(tmp_path, token=TOKEN):
    f = tmp_path / "admin.token"
    f.write_text(token + "\n")
    return {"admin": {"token_file": str(f)}}


def auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def start(evhostd, build_dir, tmp_path, brokers, topic, group, config=None, **probe):
    conf = admin_conf(tmp_path)
    conf.update(config or {})
    conf["plugin.probe"] = probe_conf(build_dir, topic=topic, group=group, **probe)
    return evhostd(conf, brokers=brokers)


seen, wait_seen, slow_handler = lib.probe_seen, lib.probe_wait_seen, lib.probe_slow_handler
held_handler = lib.probe_held_handler


def wait_outbox_empty(d, timeout=30):
    def empty():
        p = d.get("/admin/plugins/probe", headers=auth()).json()
        return p["outbox_pending"] == 0
    lib.wait_until(empty, timeout=timeout, message="the probe's outbox to drain")


def dlq(d, **params):
    r = d.get("/admin/plugins/probe/dlq", headers=auth(), params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wait_log_since(d, mark, needle, timeout=30):
    """Wait until `needle` is in what the daemon logged past `mark` (a
    length of its log), as a request's wait says it began."""
    lib.wait_until(lambda: needle in d.log_text()[mark:], timeout=timeout,
                   message=f"{needle!r} in the log")


def wait_dlq(d, n, timeout=40):
    return lib.wait_until(lambda: (lambda b: b if len(b["messages"]) >= n else None)(dlq(d)),
                          timeout=timeout, message=f"{n} dead letters")


def one_dead_letter(d):
    """An event the probe rejects, once its dead letter is listed: that one."""
    assert d.post("/probe/publish?key=k9", json={"fail": "reject"}).status_code == 200
    [letter] = wait_dlq(d, 1)["messages"]
    return letter


# ------------------------------------------------------------------- access


def test_disabled_without_token_file(evhostd, build_dir):
    d = evhostd({"plugin.probe": probe_conf(build_dir, subscribe="false")})
    for path in ("/admin", "/admin/plugins", "/admin/events"):
        r = d.get(path, headers=auth())
        assert r.status_code == 404, path
        assert "disabled" in r.json()["detail"]
    # other paths are not the admin API's business
    assert d.get("/administrator").status_code == 404
    assert "no route" in d.get("/administrator").json()["detail"]


def test_an_unknown_query_parameter_is_refused(evhostd, build_dir, tmp_path):
    # A misspelt filter read as absent widened the answer (?plugn=probe: every
    # plugin's events), and one on a redrive went unheeded (?after=: all sent).
    conf = admin_conf(tmp_path)
    conf["plugin.probe"] = probe_conf(build_dir, subscribe="false")
    d = evhostd(conf)
    for method, path, name, takes in (
            ("GET", "/admin/events?plugn=probe", "plugn",
             "this route takes: plugin, aggregate, limit, after"),
            ("GET", "/admin/plugins/probe/dlq?limit=5&afer=0:1", "afer",
             "this route takes: limit, after, values"),
            ("POST", "/admin/plugins/probe/dlq/redrive?after=0:1", "after",
             "this route takes none"),
            ("POST", "/admin/reload?wiat=5", "wiat", "this route takes: wait"),
            ("GET", "/admin/plugins?x=1", "x", "this route takes none")):
        r = requests.request(method, d.url + path, headers=auth(), timeout=30)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["field"] == name, r.text
        assert r.json()["detail"] == f"unknown query parameter '{name}' ({takes})", r.text
    assert d.get("/admin/events?plugin=probe&limit=5", headers=auth()).status_code == 200
    assert "reload #" not in d.log_text()  # the misspelt reload was not run
    assert d.get("/admin/nope?x=1", headers=auth()).status_code == 404  # no such route
    r = d.get("/admin/events?limit=5&limit=1000", headers=auth())  # only the first was read
    assert r.status_code == 422 and r.json()["field"] == "limit", r.text
    assert r.json()["detail"] == "query parameter 'limit' given more than once", r.text


def test_a_plugin_a_reload_could_not_start_is_listed_failed(evhostd, build_dir, tmp_path):
    # A required plugin a reload could not start is down, not gone: /readyz
    # said so, /admin/plugins (the list, the one) left it out.
    conf = admin_conf(tmp_path)
    conf["plugin.probe"] = probe_conf(build_dir, subscribe="false")
    d = evhostd(conf)
    (d.config_dir / "conf.d" / "30-broken.conf").write_text(
        f"[plugin.broken]\npath = {build_dir / 'tests' / 'fixtures' / 'init_fails.so'}\n")
    r = requests.post(d.url + "/admin/reload", headers=auth(), timeout=60)
    assert r.status_code == 200 and r.json()["result"] == "applied", r.text
    assert {"name": "broken", "state": "failed"} in r.json()["plugins"], r.text
    assert {"name": "broken", "state": "failed"} in \
        d.get("/admin/plugins", headers=auth()).json()["plugins"]
    r = d.get("/admin/plugins/broken", headers=auth())
    assert r.status_code == 200 and r.json() == {"name": "broken", "state": "failed"}, r.text
    assert d.get("/readyz").json()["plugins"]["broken"] == "failed"
    # Its dead letters, redrives and replays: 409 saying so; 404 is for a
    # plugin no configuration names.
    for method, path, body in (("GET", "/admin/plugins/{}/dlq", None),
                               ("POST", "/admin/plugins/{}/dlq/redrive", {}),
                               ("POST", "/admin/plugins/{}/replay", {"from": "beginning"})):
        r = requests.request(method, d.url + path.format("broken"), headers=auth(), json=body,
                             timeout=30)
        assert r.status_code == 409, (path, r.text)
        assert r.json()["detail"] == ("plugin 'broken' is not running (a reload could not "
                                      "start it; the log says why): nothing was done"), r.text
        r = requests.request(method, d.url + path.format("nothere"), headers=auth(), json=body,
                             timeout=30)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["detail"] == "no plugin named 'nothere'", r.text


def test_token_is_required_and_checked(evhostd, build_dir, tmp_path):
    conf = admin_conf(tmp_path)
    conf["plugin.probe"] = probe_conf(build_dir, subscribe="false")
    d = evhostd(conf)
    r = d.get("/admin/plugins")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.headers["Content-Type"] == "application/problem+json"
    for bad in ("", TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        assert d.get("/admin/plugins", headers=auth(bad)).status_code == 401, bad
    assert d.get("/admin/plugins", headers={"Authorization": TOKEN}).status_code == 401
    d.wait_for_log(" ms, from 127.0.0.1: the admin API needs its bearer token")
    r = d.get("/admin/plugins", headers=auth())
    assert r.status_code == 200
    # Spaces after the token are no part of it (RFC 9110 5.5).
    assert d.get("/admin/plugins",
                 headers={"Authorization": f"Bearer {TOKEN}  "}).status_code == 200
    # HEAD: the GET's status and length, no body (RFC 9110 9.1).
    h = d.head("/admin/plugins", headers=auth())
    assert h.status_code == 200 and h.content == b"", (h.status_code, h.content)
    assert h.headers["Content-Length"] == str(len(r.content))
    assert d.get("/admin/nothing", headers=auth()).status_code == 404
    r = d.post("/admin/plugins", headers=auth())
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"
    r = d.get("/admin/plugins/probe/replay", headers=auth())
    assert r.status_code == 405 and r.headers["Allow"] == "POST"


def test_a_body_without_the_token_is_not_read(evhostd, build_dir, tmp_path):
    """The token is checked before the body is read: a client without it is
    answered 401 at once, not after the daemon waited for (and held) a body
    it announced, and the connection is closed on the unread body."""
    conf = admin_conf(tmp_path)
    conf["plugin.probe"] = probe_conf(build_dir, subscribe="false")
    d = evhostd(conf)
    for token in (None, "wrong-token-0123456789"):
        head = ("POST /admin/reload HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: 500000\r\n")
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        with socket.create_connection(("127.0.0.1", d.port), timeout=5) as s:
            s.sendall((head + "\r\n").encode())  # and no body: a reader would wait for it
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                assert chunk, f"closed before an answer: {data!r}"
                data += chunk
            status = data.split(b"\r\n", 1)[0]
            assert status.startswith(b"HTTP/1.1 401"), data
            assert b"\r\nConnection: close\r\n" in data, data
    # The token and its body: read, and carried out.
    r = d.post("/admin/reload", headers=auth(), json={})
    assert r.status_code == 200, r.text


def test_a_body_nested_deep_is_refused_before_it_is_parsed(evhostd, build_dir, tmp_path):
    """cJSON recurses once per level on the HTTP worker's stack, which about
    550 levels overflow: an admin body nested 900 deep ended the daemon
    (SIGSEGV). Admin bodies are nested 16 levels at most, or refused with 422
    saying so; the daemon goes on."""
    conf = admin_conf(tmp_path)
    conf["plugin.probe"] = probe_conf(build_dir, subscribe="false")
    d = evhostd(conf)
    deep = '{"subject":' + "[" * 900 + "]" * 900 + "}"
    at = len('{"subject":') + 15  # the 17th level's '['
    for path in ("/admin/sign-out", "/admin/plugins/probe/dlq/redrive",
                 "/admin/plugins/probe/replay", "/admin/backup"):
        r = d.post(path, headers={**auth(), "Content-Type": "application/json"}, data=deep,
                   timeout=30)
        assert r.status_code == 422, (path, r.status_code, r.text)
        assert r.json()["detail"] == \
            f"the body is nested deeper than 16 levels (at byte {at})", (path, r.text)
    # 16 levels (the object and 15 arrays): past the depth check, its content
    # refused as ever.
    r = d.post("/admin/sign-out", headers=auth(),
               json={"subject": [[[[[[[[[[[[[[[]]]]]]]]]]]]]]]})
    assert r.status_code == 422 and "nested" not in r.json()["detail"], r.text
    assert "subject" in r.json()["detail"], r.text
    assert d.get("/healthz").status_code == 200


def test_unreadable_or_short_token_refuses_to_start(evhostd, build_dir, tmp_path):
    conf = {"admin": {"token_file": str(tmp_path / "missing.token")},
            "plugin.probe": probe_conf(build_dir, subscribe="false")}
    d = evhostd(conf, wait=False)
    assert d.wait(30) == 1
    assert "missing.token" in d.log_text() and "cannot read" in d.log_text()
    d.expect_exit_code = None
    short = tmp_path / "short.token"
    short.write_text("short\n")
    conf["admin"]["token_file"] = str(short)
    d = evhostd(conf, wait=False)
    assert d.wait(30) == 1
    assert "must be 16 to 4096 bytes" in d.log_text()
    d.expect_exit_code = None
    # --check-config finds both, with file:line.
    for name, needle in (("missing.token", "cannot read"), ("short.token", "16 to 4096")):
        conf["admin"]["token_file"] = str(tmp_path / name)
        r = evhostd.run(["--check-config"], config=conf)
        assert r.returncode == 1 and "[admin] token_file" in r.stdout and needle in r.stdout


def test_event_retention_is_validated(evhostd):
    r = evhostd.run(["--check-config"], config={"store": {"event_retention": "3 weeks"}})
    assert r.returncode == 1
    assert "event_retention" in r.stdout and "expected a duration" in r.stdout
    r = evhostd.run(["--check-config"], config={"store": {"event_retention": "12h"}})
    assert r.returncode == 0, r.stdout
    r = evhostd.run(["--check-config"], config={"store": {"inbox_retention": "a month"}})
    assert r.returncode == 1
    assert "inbox_retention" in r.stdout and "expected a duration" in r.stdout
    r = evhostd.run(["--check-config"], config={"store": {"inbox_retention": "0"}})
    assert r.returncode == 0, r.stdout


# ---------------------------------------------------------- plugins, events


def test_plugins_listing(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    topic, group = unique_name("adm"), unique_name("g")
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, group,
              **{"retry.max_attempts": "4"})
    r = d.get("/admin/plugins", headers=auth())
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    (p,) = r.json()["plugins"]
    assert p["name"] == "probe" and p["version"] == "1.0" and p["state"] == "running"
    assert p["path"].endswith("/probe.so") and p["group"] == group
    assert p["outbox_pending"] == 0 and p["events_stored"] == 0 and p["storage"] == "ok"
    assert p["log_lines_dropped"] == 0
    (sub,) = p["subscriptions"]
    assert sub == {"topic": topic, "type": None, "max_attempts": 4, "backoff_ms": 50,
                   "backoff_max_ms": 1000, "dlq_topic": f"{topic}.probe.dlq"}
    assert d.get("/admin/plugins/probe", headers=auth()).json() == p
    assert d.get("/admin/plugins/nobody", headers=auth()).status_code == 404


def test_event_log_by_aggregate(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    topic = unique_name("adm")
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, unique_name("g"),
              subscribe="false")
    assert d.post("/probe/publish?key=order-1&n=3", json={"order": 1}).status_code == 200
    assert d.post("/probe/publish?key=order-2", json={"order": 2}).status_code == 200
    wait_outbox_empty(d)
    r = d.get("/admin/events", headers=auth(), params={"plugin": "probe",
                                                       "aggregate": "order-1"})
    assert r.status_code == 200
    evs = r.json()["events"]
    assert len(evs) == 3
    assert [e["key"] for e in evs] == ["order-1"] * 3
    assert evs[0]["seq"] < evs[1]["seq"] < evs[2]["seq"]
    assert all(e["data"] == {"order": 1} and e["type"] == "probe.event" and
               e["topic"] == topic and e["plugin"] == "probe" for e in evs)
    # Where each landed is where a plain Kafka client finds it.
    on_kafka = {m["headers"]["ce_id"]: m for m in
                lib.kafka_consume(topic, count=4, timeout=20, brokers=kafka_bootstrap)}
    for e in evs:
        m = on_kafka[e["id"]]
        assert (e["partition"], e["offset"]) == (m["partition"], m["offset"])
        assert e["traceparent"] == m["headers"]["traceparent"]
        assert e["time"] == m["headers"]["ce_time"]
        assert e["delivered_at"] >= e["time"]
    # All aggregates, paging, bad input.
    all_evs = d.get("/admin/events", headers=auth()).json()["events"]
    assert len(all_evs) == 4
    page = d.get("/admin/events", headers=auth(),
                 params={"plugin": "probe", "limit": 2}).json()["events"]
    rest = d.get("/admin/events", headers=auth(),
                 params={"plugin": "probe", "after": page[-1]["seq"]}).json()["events"]
    assert [e["id"] for e in page + rest] == [e["id"] for e in all_evs]
    assert d.get("/admin/events", headers=auth(), params={"plugin": "x"}).status_code == 404
    r = d.get("/admin/events", headers=auth(), params={"limit": "0"})
    assert r.status_code == 422 and r.json()["field"] == "limit"
    # Digits only: strtoll took a sign and leading blanks.
    for name, bad in (("limit", "+2"), ("limit", " 2"), ("after", "-0"), ("after", "+1")):
        r = d.get("/admin/events", headers=auth(), params={"plugin": "probe", name: bad})
        assert r.status_code == 422 and r.json()["field"] == name, (name, bad, r.text)
    p = d.get("/admin/plugins/probe", headers=auth()).json()
    assert p["events_stored"] == 4


def test_a_plugins_event_log_pages_in_seq_order_whatever_the_times(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # Event times need not follow seq (a publish outside a transaction is
    # stamped before the store's lock; a clock step). One plugin's page was
    # sorted by time, and next_after (its last event's seq) was then not its
    # highest: the next page showed events again.
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name("adm"),
              unique_name("g"), subscribe="false")
    assert d.post("/probe/publish?key=k&n=3", json={"x": 1}).status_code == 200
    wait_outbox_empty(d)
    db = sqlite3.connect(str(d.state_dir / "probe.db"))
    try:
        with db:
            db.execute("UPDATE evh_log SET time = '2999-01-01T00:00:00.000Z' "
                       "WHERE seq = (SELECT MIN(seq) FROM evh_log)")
    finally:
        db.close()
    seen, after = [], 0
    for _ in range(5):
        b = d.get("/admin/events", headers=auth(),
                  params={"plugin": "probe", "limit": 2, "after": after}).json()
        page = [e["seq"] for e in b["events"]]
        assert page == sorted(page), b
        seen += page
        if not page:
            break
        assert b["next_after"] == page[-1], b
        after = b["next_after"]
    assert len(seen) == 3 and seen == sorted(set(seen)), seen
    # Across plugins (no next_after) the order stays by time.
    evs = d.get("/admin/events", headers=auth()).json()["events"]
    assert [e["seq"] for e in evs] == seen[1:] + seen[:1], evs


def test_an_event_log_page_stops_at_16_mib_and_the_next_goes_on(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # A page was bounded by its count alone: 1000 events of 900 KB made an
    # answer of 895 MB, the daemon growing by 2.6 GB to build it (and with
    # no plugin=, 1000 from each plugin before the merge).
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name("adm"),
              unique_name("g"), subscribe="false",
              config={"plugin.crud": {"collections": "things",
                                      "collection.things.topic": unique_name("things")}})
    assert d.post("/probe/publish?key=big&n=6", json={"x": 1}).status_code == 200
    wait_outbox_empty(d)
    assert d.post("/crud/things", json={"a": 1}).status_code == 201  # later than all six
    lib.wait_until(lambda: d.get("/admin/plugins/crud", headers=auth()).json()
                   ["events_stored"] == 1, timeout=30, message="crud's event delivered")
    db = sqlite3.connect(str(d.state_dir / "probe.db"))
    try:
        seqs = [r[0] for r in db.execute("SELECT seq FROM evh_log ORDER BY seq")]
        with db:  # the four in the middle hold 6 MB each
            db.execute("UPDATE evh_log SET data = CAST('{\"x\":\"' || hex(zeroblob(3000000))"
                       " || '\"}' AS BLOB) WHERE seq > ? AND seq < ?", (seqs[0], seqs[-1]))
    finally:
        db.close()
    assert len(seqs) == 6
    b = d.get("/admin/events", headers=auth(), params={"plugin": "probe"}, timeout=60).json()
    # 0, 6, 12 and 12 MB before the first four: under 16 MiB; 18 MB before the fifth
    page = [e["seq"] for e in b["events"]]
    assert page == seqs[:4] and b["truncated"] is True and b["next_after"] == seqs[3]
    assert b["events"][0]["data"] == {"x": 1}
    assert [len(e["data"]["x"]) for e in b["events"][1:]] == [6000000] * 3
    rest = d.get("/admin/events", headers=auth(), timeout=60,
                 params={"plugin": "probe", "after": b["next_after"]}).json()
    assert [e["seq"] for e in rest["events"]] == seqs[4:] and rest["truncated"] is False
    # Across plugins, the same bound, and crud's event, later than the two
    # probe events the bound left out, is not shown before them.
    b = d.get("/admin/events", headers=auth(), timeout=60).json()
    assert [(e["plugin"], e["seq"]) for e in b["events"]] == \
        [("probe", s) for s in seqs[:4]] and b["truncated"] is True


def test_event_log_retention(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name("adm"),
              unique_name("g"), config={"store": {"event_retention": "2s"}}, subscribe="false")
    assert d.post("/probe/publish?key=short&n=2", json={"x": 1}).status_code == 200
    wait_outbox_empty(d)

    def count():
        return d.get("/admin/plugins/probe", headers=auth()).json()["events_stored"]
    assert count() == 2
    lib.wait_until(lambda: count() == 0, timeout=10, message="events pruned after 2 s")
    r = d.get("/admin/events", headers=auth(), params={"aggregate": "short"})
    assert r.json()["events"] == []


def test_inbox_retention(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name("adm"),
              unique_name("g"), config={"store": {"inbox_retention": "2s"}})
    assert d.post("/probe/publish?key=old&n=2", json={"x": 1}).status_code == 200
    wait_seen(d, 2)
    seen_at = time.monotonic()

    def inbox():
        con = sqlite3.connect(str(Path(d.state_dir) / "probe.db"), timeout=30)
        try:
            return con.execute("SELECT COUNT(*) FROM evh_inbox").fetchone()[0]
        finally:
            con.close()
    n = inbox()
    assert n == 2 or time.monotonic() - seen_at > 1.5, n
    lib.wait_until(lambda: inbox() == 0, timeout=15, message="inbox records pruned after 2 s")


# --------------------------------------------------------------------- DLQ


def test_dlq_values_over_64_kib_are_shortened_and_text_stays_text(evhostd, build_dir, tmp_path,
                                                                   kafka_bootstrap, unique_name):
    # The answer shows a value's first 64 KiB, value_size saying how long it
    # is. Text stays text (not base64), cut before a character the bound
    # would split: three values of 3-byte characters behind no, one or two
    # ASCII bytes, so that the bound falls inside a character in two of them.
    topic = unique_name("adm")
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, unique_name("g"))
    pads = {"ascii": "a" * 100000, **{f"euro{i}": "a" * i + "\u20ac" * 30000 for i in range(3)}}
    values = {key: json.dumps({"fail": "reject", "pad": pad}, ensure_ascii=False).encode()
              for key, pad in pads.items()}
    for key, value in values.items():
        r = d.post(f"/probe/publish?key={key}", data=value,
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
    msgs = {m["key"]: m for m in wait_dlq(d, len(pads))["messages"]}
    for key, value in values.items():
        m = msgs[key]
        assert m.get("value_shortened") is True and "value_base64" not in m, (key, m.keys())
        shown = m["value"].encode()
        assert m["value_size"] == len(value) and 65536 - 2 <= len(shown) <= 65536, (key, m)
        assert value.startswith(shown), key


def test_dlq_inspect_and_redrive(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    topic = unique_name("adm")
    flag = tmp_path / "dependency-down"
    flag.write_text("")
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, unique_name("g"),
              **{"retry.max_attempts": "2", "retry.backoff_ms": "50"})
    # Two that fail while the "dependency" is down, one poison, one fine.
    for i in range(2):
        r = d.post(f"/probe/publish?key=k{i}", json={"fail_while": str(flag), "n": i})
        assert r.status_code == 200
    assert d.post("/probe/publish?key=k9", json={"fail": "reject"}).status_code == 200
    assert d.post("/probe/publish?key=k0", json={"fine": True}).status_code == 200
    body = wait_dlq(d, 3)
    assert body["topics"] == [f"{topic}.probe.dlq"] and body["truncated"] is False
    msgs = body["messages"]
    assert len(msgs) == 3
    by_key = {m["key"]: m for m in msgs}
    m = by_key["k0"]
    h = m["headers"]
    assert h["evhost_dlq_topic"] == topic and h["evhost_dlq_plugin"] == "probe"
    assert h["evhost_dlq_attempts"] == "2"
    assert h["evhost_dlq_error"] == "probe: the fail_while file exists"
    assert h["ce_type"] == "probe.event" and h["ce_id"]
    assert m["value"] == f'{{"fail_while":"{flag}","n":0}}' or '"n": 0' in m["value"]
    assert m["redriven"] is False and m["value_size"] == len(m["value"])
    assert by_key["k9"]["headers"]["evhost_dlq_attempts"] == "1"
    assert by_key["k9"]["headers"]["evhost_dlq_error"] == "probe: rejected on request"
    assert len(dlq(d, limit=1)["messages"]) == 1 and dlq(d, limit=1)["truncated"] is True
    r = d.get("/admin/plugins/probe/dlq", headers=auth(), params={"limit": "x"})
    assert r.status_code == 422
    # values=false: each without its value (its size stays), the rest the same.
    lean = dlq(d, values="false")["messages"]
    assert [{k: v for k, v in m.items() if k != "value"} for m in msgs] == lean, lean
    assert all("value" not in m and m["value_size"] > 0 for m in lean), lean
    assert dlq(d, values="true")["messages"] == msgs
    for bad in ("no", "False", "1", ""):
        r = d.get("/admin/plugins/probe/dlq", headers=auth(), params={"values": bad})
        assert r.status_code == 422 and r.json()["field"] == "values", (bad, r.text)
        assert r.json()["detail"] == "values must be true or false", r.text

    # A partition or offset that is not an integer in range is refused, naming the
    # field, and nothing is redriven: not truncated (2.9 once meant 2), not wrapped
    # (partition 1e10 once came out negative, which meant "any partition").
    poison = by_key["k9"]
    part, off = poison["partition"], poison["offset"]
    bad_partitions = (1e10, 2 ** 31, -1, 2.5, part + 0.9, "1", 2 ** 53 + 2)
    # 2 ** 53 + 1 reads as 2 ** 53 (a double): it passed once, as another offset.
    bad_offsets = (1e20, -1, 2.5, off + 0.9, "1", 2 ** 53 + 2, 2 ** 53 + 1, 2 ** 53)
    for entry, field in ([({"partition": b, "offset": off}, "offsets[1].partition")
                          for b in bad_partitions] +
                         [({"partition": part, "offset": b}, "offsets[1].offset")
                          for b in bad_offsets] +
                         [(b, "offsets[1]") for b in bad_offsets] +
                         [({"topic": 7, "partition": part, "offset": off},
                           "offsets[1].topic")]):
        r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=60,
                   json={"offsets": [{"partition": part, "offset": 999999}, entry]})
        assert r.status_code == 422, (entry, r.text)
        assert r.json()["field"] == field, (entry, r.text)
        assert field in r.json()["detail"], r.text
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=60,
               json={"offsets": [{"topic": poison["topic"], "partition": 1e10,
                                  "offset": off + 0.9}]})
    assert r.status_code == 422, r.text
    for body in ([], "all", None):  # the body is an object, or nothing
        r = d.post("/admin/plugins/probe/dlq/redrive", timeout=60, data=json.dumps(body),
                   headers={**auth(), "Content-Type": "application/json"})
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"] == "the body must be a JSON object", r.text
    assert not any(m["redriven"] for m in dlq(d)["messages"])

    # The dependency is back: redrive the two (by offset), not the poison one.
    fine = wait_seen(d, 1)  # the event behind the failed one in its partition went on
    assert [r["data"] for r in fine] == [{"fine": True}]
    flag.unlink()
    before = 1
    dlq_topic = by_key["k0"]["topic"]
    offsets = [{"partition": by_key[k]["partition"], "offset": by_key[k]["offset"]}
               for k in ("k0", "k1")] + [999999] + [{"topic": dlq_topic, "partition": 0,
                                                     "offset": 888888}]
    if len({m["offset"] for m in msgs}) < 3:
        # A bare offset found in several partitions is refused, not guessed.
        r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(),
                   json={"offsets": [0]}, timeout=60)
        assert r.status_code == 422 and "partitions" in r.json()["detail"], r.text
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), json={"offsets": offsets},
               timeout=60)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["redriven"] == 2 and res["failed"] == 0 and res["not_found"] == [999999, 888888]
    # ... each as asked for: not_found's bare offsets could not say which partition.
    assert res["not_found_at"] == [{"offset": 999999}, {"topic": dlq_topic, "partition": 0,
                                                        "offset": 888888}], res
    for e in res["results"]:
        assert e["outcome"] == "redriven" and e["to_topic"] == topic and e["to_offset"] >= 0
    rows = wait_seen(d, before + 2)
    redriven_ids = {by_key["k0"]["headers"]["ce_id"], by_key["k1"]["headers"]["ce_id"]}
    assert {r["event_id"] for r in rows[before:]} == redriven_ids
    # Redriven copies on the topic keep their identity and say where they came from.
    copies = [m for m in lib.kafka_consume(topic, timeout=20, brokers=kafka_bootstrap)
              if m["headers"].get("evhost_redrive") == "1"]
    assert {m["headers"]["ce_id"] for m in copies} == redriven_ids
    assert all(m["headers"]["evhost_redrive_from"].startswith(f"{topic}.probe.dlq/")
               and "evhost_dlq_error" not in m["headers"] for m in copies)

    # Not twice: "all" now only sends the poison one, which is rejected again.
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=60)
    res = r.json()
    assert res["redriven"] == 1 and res["skipped"] == 2, res
    assert all(e["error"] == "already redriven" for e in res["results"]
               if e["outcome"] == "skipped")
    body = wait_dlq(d, 4)
    flags = {(m["key"], m["offset"]): m["redriven"] for m in body["messages"]}
    assert sum(flags.values()) == 3
    time.sleep(1)
    assert len(seen(d)) == before + 2  # each redriven event handled once
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), json={"offsets": "all"})
    assert r.status_code == 422 and r.json()["field"] == "offsets"
    # A misspelt field is refused, not read as "every dead letter" (its absence).
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), json={"offset": [0]})
    assert r.status_code == 422 and r.json()["field"] == "offset", r.text
    assert r.json()["detail"] == "unknown field 'offset': this request takes offsets, after"
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), json={"o" * 300: 1})
    assert r.status_code == 422 and r.json()["field"] == "o" * 100, r.text
    assert r.json()["detail"] == (f"unknown field '{'o' * 100}' (shortened): this request "
                                  "takes offsets, after"), r.text
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(),
               json={"offsets": [{"partiton": 1, "offset": 0}]})
    assert r.status_code == 422 and r.json()["field"] == "offsets[0].partiton", r.text
    assert "offsets[0] takes topic, partition, offset" in r.json()["detail"]
    assert sum(m["redriven"] for m in wait_dlq(d, 4)["messages"]) == 3  # nothing more
    assert d.post("/admin/plugins/nobody/dlq/redrive", headers=auth()).status_code == 404


def test_a_redrive_keeps_an_empty_value_and_the_id_its_consumer_gave(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    """A redriven copy is the original message: an empty value was sent back as
    a null one (a tombstone, which compaction acts on), and a ce_id its
    consumer did not take as the event's id (empty, past 255 bytes) was kept,
    so the copy was known by its own new position: a second copy of the same
    dead letter (written twice at a stop) was handled again."""
    topic = unique_name("adm")
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, unique_name("g"))
    assert d.post("/probe/publish?key=k0", json={"fine": True}).status_code == 200
    wait_seen(d, 1)  # the topic and the probe's partition are there
    lib.kafka_produce_many([
        {"topic": topic, "partition": 0, "key": b"empty", "value": b""},
        {"topic": topic, "partition": 0, "key": b"null", "value": None},
        {"topic": topic, "partition": 0, "key": b"no-id", "value": b"[]",
         "headers": [("ce_id", b"")]},
        {"topic": topic, "partition": 0, "key": b"long-id", "value": b"[]",
         "headers": [("ce_id", b"x" * 256)]},
        {"topic": topic, "partition": 0, "key": b"own-id", "value": b"[]",
         "headers": [("ce_id", b"x" * 255)]},
    ], brokers=kafka_bootstrap)
    letters = {m["key"]: m for m in wait_dlq(d, 5)["messages"]}
    assert letters["empty"]["value"] == "" and letters["null"]["value"] is None, letters
    assert letters["empty"]["value_size"] == letters["null"]["value_size"] == 0
    originals = {m["key"]: m for m in lib.kafka_consume(topic, brokers=kafka_bootstrap)}
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=60)
    assert r.status_code == 200 and r.json()["redriven"] == 5, r.text
    copies = {m["key"]: m for m in lib.kafka_consume(topic, brokers=kafka_bootstrap)
              if m["headers"].get("evhost_redrive") == "1"}
    assert copies["empty"]["value"] == "", copies["empty"]
    assert copies["null"]["value"] is None, copies["null"]
    for key in ("no-id", "long-id"):
        o = originals[key]
        assert copies[key]["headers"]["ce_id"] == f"{topic}/{o['partition']}/{o['offset']}"
        assert copies[key]["header_list"][0::2].count("ce_id") == 1, copies[key]
    assert copies["own-id"]["headers"]["ce_id"] == "x" * 255


def redriven_offsets(d):
    """The dead letters' offsets the probe's record of redrives holds."""
    db = sqlite3.connect(str(Path(d.state_dir) / "probe.db"), timeout=30)
    try:
        return sorted(o for (o,) in db.execute('SELECT "offset" FROM evh_dlq_redriven'))
    finally:
        db.close()


def test_a_redrive_forgets_the_records_of_dead_letters_gone_from_their_topic(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # Each dead letter redriven kept its record in evh_dlq_redriven for good
    # (about 100 MB a million). A record below its partition's log start
    # (retention, DeleteRecords) matches no dead letter again: a redrive
    # forgets it. Those still in the topic stay redriven, and are not sent
    # again; a partition emptied forgets them all.
    topic = unique_name("gone")
    dlq_topic = f"{topic}.probe.dlq"
    lib.create_topics([topic, dlq_topic], brokers=kafka_bootstrap, partitions=1)
    flag = tmp_path / "dependency-down"
    flag.write_text("")
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, unique_name("g"),
              **{"retry.max_attempts": "2", "retry.backoff_ms": "50"})
    for i in range(6):
        r = d.post(f"/probe/publish?key=k{i}", json={"fail_while": str(flag), "n": i})
        assert r.status_code == 200, r.text
    letters = wait_dlq(d, 6)["messages"]
    assert [(m["partition"], m["offset"]) for m in letters] == [(0, o) for o in range(6)]
    flag.unlink()
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=60,
               json={"offsets": [{"partition": 0, "offset": o} for o in range(4)]})
    assert r.status_code == 200 and r.json()["redriven"] == 4, r.text
    assert sorted(r["data"]["n"] for r in wait_seen(d, 4)) == [0, 1, 2, 3]
    assert redriven_offsets(d) == [0, 1, 2, 3]

    lib.delete_records(dlq_topic, {0: 2}, brokers=kafka_bootstrap)
    mark = len(d.log_text())
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=60)
    assert r.status_code == 200, r.text
    res = r.json()
    assert (res["redriven"], res["skipped"], res["failed"]) == (2, 2, 0), res
    assert sorted(e["offset"] for e in res["results"] if e["outcome"] == "skipped") == [2, 3]
    assert redriven_offsets(d) == [2, 3, 4, 5]
    assert "probe: forgot 2 redriven dead letter(s) no longer in their topic" in \
        d.log_text()[mark:], d.log_tail()
    body = dlq(d)
    assert [(m["offset"], m["redriven"]) for m in body["messages"]] == [
        (o, True) for o in range(2, 6)], body
    assert sorted(r["data"]["n"] for r in wait_seen(d, 6)) == list(range(6))

    # The partition emptied (its log start at its end): every record goes.
    lib.delete_records(dlq_topic, {0: 6}, brokers=kafka_bootstrap)
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=60)
    assert r.status_code == 200, r.text
    assert (r.json()["redriven"], r.json()["skipped"]) == (0, 0), r.text
    assert redriven_offsets(d) == []
    time.sleep(1)
    assert len(seen(d)) == 6, seen(d)  # each handled once
    assert d.stop() == 0, d.log_tail()


# ------------------------------------------------------------------ replay


def test_replay_beginning_time_and_offsets(evhostd, build_dir, tmp_path, kafka_bootstrap,
                                           unique_name):
    topic = unique_name("adm")
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, unique_name("g"))
    for i in range(3):
        assert d.post("/probe/publish?key=same", json={"n": i}).status_code == 200
    rows = wait_seen(d, 3)
    time.sleep(1.2)  # Kafka timestamps have ms resolution; leave a clear gap
    between = datetime.now(timezone.utc)
    time.sleep(0.3)
    for i in range(3, 5):
        assert d.post("/probe/publish?key=same", json={"n": i}).status_code == 200
    rows = wait_seen(d, 5)
    assert [r["data"]["n"] for r in rows] == [0, 1, 2, 3, 4]
    ids = [r["event_id"] for r in rows]

    # From the beginning: every event handled again, inbox records forgotten.
    r = d.post("/admin/plugins/probe/replay", headers=auth(), json={"from": "beginning"})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["inbox_deleted"] == 5
    assert sum(p["offset"] for p in res["partitions"]) == 0
    assert {p["topic"] for p in res["partitions"]} == {topic}
    rows = wait_seen(d, 10)
    assert [r["event_id"] for r in rows[5:]] == ids

    # From a time: only what was published after it.
    stamp = between.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    r = d.post("/admin/plugins/probe/replay", headers=auth(), json={"from": stamp})
    assert r.status_code == 200, r.text
    assert r.json()["inbox_deleted"] == 2
    rows = wait_seen(d, 12)
    assert [r["event_id"] for r in rows[10:]] == ids[3:]

    # To an offset of one partition.
    msgs = {m["headers"]["ce_id"]: m for m in
            lib.kafka_consume(topic, count=5, timeout=20, brokers=kafka_bootstrap)}
    last = msgs[ids[4]]
    r = d.post("/admin/plugins/probe/replay", headers=auth(),
               json={"from": {"offsets": {topic: {str(last["partition"]): last["offset"]}}}})
    assert r.status_code == 200, r.text
    (part,) = r.json()["partitions"]
    assert part == {"topic": topic, "partition": last["partition"], "offset": last["offset"],
                    "previous": last["offset"] + 1}
    rows = wait_seen(d, 13)
    assert rows[12]["event_id"] == ids[4]
    time.sleep(1)
    assert len(seen(d)) == 13

    # A time before 1970 is before every event: from the first. (Passed on
    # as -1, Kafka's "latest", it rewound nothing.)
    r = d.post("/admin/plugins/probe/replay", headers=auth(),
               json={"from": "1969-12-31T23:59:59.999Z"})
    assert r.status_code == 200, r.text
    assert r.json()["inbox_deleted"] == 5, r.text
    assert sum(p["offset"] for p in r.json()["partitions"]) == 0, r.text
    rows = wait_seen(d, 18)
    assert [r["event_id"] for r in rows[13:]] == ids

    # Refusals.
    for bad in ({}, {"from": "yesterday"}, {"from": "2026-13-01T00:00:00Z"},
                {"from": {"offsets": {}}}, {"from": "beginning", "topics": "x"}):
        r = d.post("/admin/plugins/probe/replay", headers=auth(), json=bad)
        assert r.status_code == 422, bad
    # Misspelt or misplaced fields are refused, not taken for "every topic".
    for bad, field in (({"from": "beginning", "topic": [topic]}, "topic"),
                       ({"from": {"offsets": {topic: {"0": 0}}, "at": 1}}, "from.at"),
                       ({"from": {"offsets": {topic: {"0": 0}}}, "topics": [topic]}, "topics")):
        r = d.post("/admin/plugins/probe/replay", headers=auth(), json=bad)
        assert r.status_code == 422 and r.json()["field"] == field, (bad, r.text)
    r = d.post("/admin/plugins/probe/replay", headers=auth(),
               json={"from": "beginning", "topics": ["not-consumed"]})
    assert r.status_code == 422 and "does not consume" in r.json()["detail"]
    r = d.post("/admin/plugins/probe/replay", headers=auth(),
               json={"from": "beginning", "topics": [topic, 7]})
    assert r.status_code == 422 and r.json()["field"] == "topics", r.text
    r = d.post("/admin/plugins/probe/replay", data="[]",
               headers={**auth(), "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"] == "the body must be a JSON object"
    r = d.post("/admin/plugins/probe/replay", headers=auth(),
               json={"from": {"offsets": {topic: {"0": 10 ** 9}}}})
    assert r.status_code == 422
    r = d.post("/admin/plugins/probe/replay", headers=auth(),
               json={"from": {"offsets": {"elsewhere": {"0": 0}}}})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "plugin probe does not consume topic elsewhere", r.text
    # A partition the topic does not have is not the consumer's: said.
    r = d.post("/admin/plugins/probe/replay", headers=auth(),
               json={"from": {"offsets": {topic: {"7": 0}}}})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == f"{topic} [7] is not assigned to this consumer", r.text
    # Offsets and partitions that are not integers in range: refused before any
    # rewind (2.5 once rewound to 2; "+0" and " 0" once read as partition 0).
    p0 = str(last["partition"])
    for offsets in ({p0: 2.5}, {p0: -1}, {p0: "1"}, {p0: 1e10 * 1e10}, {p0: 2 ** 53 + 2},
                    {p0: 2 ** 53 + 1},
                    {"-1": 0}, {"+0": 0}, {" 0": 0}, {"0.0": 0}, {"1e10": 0},
                    {"10000000000": 0}, {"": 0},
                    # "00" beside "0": one partition named twice, once rewound twice
                    {"0": 0, "00": 1}, {"01": 0}):
        r = d.post("/admin/plugins/probe/replay", headers=auth(),
                   json={"from": {"offsets": {topic: offsets}}})
        assert r.status_code == 422, (offsets, r.text)
        assert r.json()["field"] == "from.offsets", (offsets, r.text)
        assert topic in r.json()["detail"], r.text
    assert d.post("/admin/plugins/nobody/replay", headers=auth(),
                  json={"from": "beginning"}).status_code == 404
    time.sleep(0.5)
    assert len(seen(d)) == 18


ERROR_RESET = {"rdkafka.auto.offset.reset": "error"}
STRATEGIES = [None, "cooperative-sticky"]  # librdkafka's default: eager (range)


def reset_error_conf(strategy):
    kafka = dict(ERROR_RESET)
    if strategy:
        kafka["rdkafka.partition.assignment.strategy"] = strategy
    return {"kafka": kafka}


def produce_to(topic, brokers, *records):
    """(partition, n) records: {"n": n} to that partition."""
    lib.kafka_produce_many([{"topic": topic, "partition": p, "value": json.dumps({"n": n}).encode()}
                            for p, n in records], brokers=brokers)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_replay_sets_the_offsets_of_a_new_group_under_reset_error(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name, strategy):
    # auto.offset.reset = error: a new group's partitions fetch nothing until
    # a replay sets their offsets (operations.md). librdkafka refuses to seek
    # a partition it stopped for want of an offset: the replay answered 502
    # "seek of T [0] failed: Local: Erroneous state" and the partition stayed
    # stalled for good. One partition set at a time: the other, running by
    # then, goes on from where it was.
    topic = unique_name("noofs")
    lib.create_topics([topic], brokers=kafka_bootstrap, partitions=2)
    produce_to(topic, kafka_bootstrap, (0, 0), (0, 1), (0, 2), (1, 3), (1, 4))
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, unique_name("g"),
              config=reset_error_conf(strategy))
    wait_log_since(d, 0, "no previously committed offset")
    assert seen(d) == []
    r = d.post("/admin/plugins/probe/replay", headers=auth(),
               json={"from": {"offsets": {topic: {"0": 1}}}}, timeout=30)
    assert r.status_code == 200, r.text
    assert [(p["partition"], p["offset"]) for p in r.json()["partitions"]] == [(0, 1)]
    assert [r["data"]["n"] for r in wait_seen(d, 2)] == [1, 2]
    r = d.post("/admin/plugins/probe/replay", headers=auth(),
               json={"from": {"offsets": {topic: {"1": 0}}}}, timeout=30)
    assert r.status_code == 200, r.text
    assert sorted(r["data"]["n"] for r in wait_seen(d, 4)[2:]) == [3, 4]
    produce_to(topic, kafka_bootstrap, (0, 5), (1, 6))
    assert sorted(r["data"]["n"] for r in wait_seen(d, 6)[4:]) == [5, 6]
    r = d.post("/admin/plugins/probe/replay", headers=auth(), json={"from": "beginning"},
               timeout=30)
    assert r.status_code == 200, r.text
    rows = wait_seen(d, 13)
    time.sleep(1)
    assert len(seen(d)) == 13, (rows, d.log_tail())
    assert d.stop() == 0, d.log_tail()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_committed_offset_below_the_log_start_under_reset_error(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name, strategy):
    # A group whose committed offset fell below the partition's log start
    # (retention, delete-records), under auto.offset.reset = error: librdkafka
    # stops the partition. It had no evhost_consumer_lag series at all (its
    # committed offset was known, its watermarks were not), so the alert on
    # a stuck consumer could never fire; a replay from the beginning went
    # back to that committed offset, out of range again, and (seek refused
    # in that state) answered 502. Partition 1 stays in range and goes on.
    topic, group = unique_name("gone"), unique_name("g")
    lib.create_topics([topic], brokers=kafka_bootstrap, partitions=2)
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, group)
    produce_to(topic, kafka_bootstrap, (0, 0), (0, 1), (1, 2))
    wait_seen(d, 3)
    lib.wait_until(lambda: lib.committed_offsets(group, kafka_bootstrap) == {
        (topic, 0): 2, (topic, 1): 1}, timeout=20, message="offsets 2 and 1 committed")
    assert d.stop() == 0, d.log_tail()
    produce_to(topic, kafka_bootstrap, (0, 3), (0, 4), (0, 5))  # offsets 2, 3, 4
    lib.delete_records(topic, {0: 4}, brokers=kafka_bootstrap)
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, group,
              config=reset_error_conf(strategy))
    # Everything partition 0 holds waits: offset 4, the one event kept.
    lib.wait_until(lambda: lib.consumer_lag(d, topic) == {0: 1, 1: 0}, timeout=60, interval=0.5,
                   message=f"evhost_consumer_lag of {topic} at 1 and 0")
    produce_to(topic, kafka_bootstrap, (1, 6))
    assert [r["data"] for r in wait_seen(d, 1)] == [{"n": 6}]
    r = d.post("/admin/plugins/probe/replay", headers=auth(), json={"from": "beginning"},
               timeout=30)
    assert r.status_code == 200, r.text
    # Partition 0 from its log start: the committed offset 2 is gone.
    assert sorted((p["partition"], p["offset"]) for p in r.json()["partitions"]) == [
        (0, 4), (1, 0)]
    rows = wait_seen(d, 4)
    assert sorted(r["data"]["n"] for r in rows[1:]) == [2, 5, 6]
    produce_to(topic, kafka_bootstrap, (0, 7), (1, 8))
    rows = wait_seen(d, 6)
    assert sorted(r["data"]["n"] for r in rows[4:]) == [7, 8]
    lib.wait_until(lambda: lib.consumer_lag(d, topic) == {0: 0, 1: 0}, timeout=30, interval=0.5,
                   message=f"evhost_consumer_lag of {topic} back to 0")
    time.sleep(1)
    assert len(seen(d)) == 6
    assert d.stop() == 0, d.log_tail()


def test_a_replay_rewinds_every_partition_of_a_wide_topic(evhostd, build_dir, tmp_path,
                                                          kafka_bootstrap, unique_name):
    # 36 partitions, most of them empty (3 topics of 12 in a real install).
    # The offsets of them all are asked of the broker in one go: asked
    # partition by partition (each request waiting for the consumer's pending
    # fetch), a replay took 0.5 s a partition, 18 s here, past the 15 s this
    # client waits (the admin API's own wait for a consumer to take a replay).
    parts, n = 36, 40
    topic = unique_name("wide")
    lib.create_topics([topic], brokers=kafka_bootstrap, partitions=parts)
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, unique_name("g"))
    for i in range(n):
        assert d.post(f"/probe/publish?key=k{i}", json={"n": i}).status_code == 200
    ids = sorted(r["event_id"] for r in wait_seen(d, n))

    r = d.post("/admin/plugins/probe/replay", headers=auth(), json={"from": "beginning"},
               timeout=15)
    assert r.status_code == 200, r.text
    res = r.json()
    assert sorted(p["partition"] for p in res["partitions"]) == list(range(parts))
    assert {p["topic"] for p in res["partitions"]} == {topic}
    assert all(p["offset"] == 0 for p in res["partitions"]), res
    assert res["inbox_deleted"] == n
    ends = {p["partition"]: p["previous"] or 0 for p in res["partitions"]}  # null: none
    assert sum(ends.values()) == n and sum(1 for e in ends.values() if e == 0) > 0, ends
    rows = wait_seen(d, 2 * n)
    assert sorted(r["event_id"] for r in rows[n:]) == ids

    # From a time after every event: each partition at its end, nothing again.
    stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    time.sleep(0.1)
    r = d.post("/admin/plugins/probe/replay", headers=auth(), json={"from": stamp}, timeout=15)
    assert r.status_code == 200, r.text
    assert {p["partition"]: p["offset"] for p in r.json()["partitions"]} == ends
    assert r.json()["inbox_deleted"] == 0

    # From offsets, every partition at once: bounded by each one's own end.
    every = {str(p): 0 for p in range(parts)}
    r = d.post("/admin/plugins/probe/replay", headers=auth(),
               json={"from": {"offsets": {topic: every}}}, timeout=15)
    assert r.status_code == 200, r.text
    assert len(r.json()["partitions"]) == parts and r.json()["inbox_deleted"] == n
    rows = wait_seen(d, 3 * n)
    assert sorted(r["event_id"] for r in rows[2 * n:]) == ids
    empty = min(p for p, e in ends.items() if e == 0)
    r = d.post("/admin/plugins/probe/replay", headers=auth(),
               json={"from": {"offsets": {topic: {**every, str(empty): 1}}}}, timeout=15)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == f"{topic} [{empty}]: offset 1 is outside 0..0", r.text
    time.sleep(0.5)
    assert len(seen(d)) == 3 * n


def test_a_replay_the_consumer_cannot_take_now_is_refused_and_changes_nothing(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # The consumer is in a handler that does not return (until the test lets
    # it): a replay asked now waits 15 s for it, then is withdrawn (409,
    # nothing changed); one asked while that one waits is refused at once.
    # Both say to try again (Retry-After). Meanwhile readiness, metrics and
    # the event log answer: neither the handler's transaction nor the waiting
    # replay holds them up (they waited for both, readiness too: a probe with
    # a timeout failed).
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name("adm"),
              unique_name("g"))

    def answers_now():
        assert d.get("/readyz", timeout=5).json()["storage"] == "writable"
        assert d.get("/metrics", timeout=5).status_code == 200
        r = d.get("/admin/events", headers=auth(), timeout=5)
        # (the second once the relay has recorded its delivery: it waits for the handler)
        assert [e["data"]["n"] for e in r.json()["events"]] in ([0], [0, 1]), r.text
    with held_handler(d, tmp_path / "hold"):
        answers_now()
        with ThreadPoolExecutor(1) as pool:
            mark = len(d.log_text())
            first = pool.submit(d.post, "/admin/plugins/probe/replay", headers=auth(),
                                json={"from": "beginning"}, timeout=40)
            wait_log_since(d, mark, "probe: replay asked: waiting for the consumer")
            answers_now()
            r = d.post("/admin/plugins/probe/replay", headers=auth(),
                       json={"from": "beginning"}, timeout=30)
            assert r.status_code == 409, r.text
            assert r.json()["detail"] == "a replay of plugin probe is already running", r.text
            assert r.headers["Retry-After"] == "1"
            r = first.result(40)
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == ("plugin probe's consumer did not take the request within "
                                  "15000 ms (a handler is busy); nothing was changed"), r.text
    assert r.headers["Retry-After"] == "1"
    rows = wait_seen(d, 2)
    time.sleep(1)  # a replay that had happened would hand both events again now
    assert [x["data"]["n"] for x in seen(d)] == [0, 1], rows
    r = d.post("/admin/plugins/probe/replay", headers=auth(), json={"from": "beginning"},
               timeout=30)
    assert r.status_code == 200 and r.json()["inbox_deleted"] == 2, r.text


def test_a_replay_waiting_when_its_plugin_is_disabled_is_answered(evhostd, build_dir, tmp_path,
                                                                  kafka_bootstrap, unique_name):
    # A replay waits for the consumer (in a 4 s handler), and a dead-letter
    # listing for the database (the plugin pinned; at most the store's 5 s),
    # when a reload disables the plugin: the drain lets the handler finish,
    # the replay is answered that the consumer is stopping, the listing is
    # answered, and the reload completes (destroying the plugin once the
    # listing let it go).
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name("adm"),
              unique_name("g"))
    one_dead_letter(d)
    slow_handler(d, 4000)
    with ThreadPoolExecutor(2) as pool:
        replay = pool.submit(d.post, "/admin/plugins/probe/replay", headers=auth(),
                             json={"from": "beginning"}, timeout=40)
        listing = pool.submit(d.get, "/admin/plugins/probe/dlq", headers=auth(), timeout=40)
        time.sleep(0.5)
        (d.config_dir / "conf.d" / "90-off.conf").write_text("[plugin.probe]\nenabled = false\n")
        r = d.post("/admin/reload", headers=auth(), timeout=60)
        assert r.status_code == 200 and r.json()["plugins"] == [], r.text
        r, listing = replay.result(40), listing.result(40)
    assert r.status_code == 409, r.text
    assert r.json()["detail"] == "the consumer of plugin probe is stopping", r.text
    assert listing.status_code == 200 and len(listing.json()["messages"]) == 1, listing.text
    assert d.get("/healthz").status_code == 200


def dead_letter_topics(unique_name, plugin, counts, brokers):
    """A topic of plugin `plugin`'s, its dead-letter topic holding dead
    letters (produce_dead_letters, counts per partition) of a third topic,
    their origin, which nothing consumes: (topic, dlq topic, origin)."""
    topic = unique_name("adm")
    dlq_topic, origin = f"{topic}.{plugin}.dlq", f"{topic}.origin"
    lib.create_topics([topic, dlq_topic, origin], brokers=brokers, partitions=len(counts))
    produce_dead_letters(dlq_topic, origin, counts, brokers)
    return topic, dlq_topic, origin


def produce_dead_letters(dlq_topic, origin, counts, brokers, unsendable=0):
    """Synthetic dead letters of `origin` into `dlq_topic`: counts[p] in
    partition p, each {"fine": true} with ce_id dl-P-I; the first
    `unsendable` of partition 0 without evhost_dlq_topic (no redrive can
    send them)."""
    records = []
    for part, n in enumerate(counts):
        for i in range(n):
            to = [] if part == 0 and i < unsendable else [("evhost_dlq_topic", origin.encode())]
            records.append(dict(topic=dlq_topic, partition=part, key=f"k{i}".encode(),
                                value=b'{"fine": true}',
                                headers=[("ce_id", f"dl-{part}-{i}".encode()),
                                         ("ce_type", b"probe.event")] + to + [
                                         ("evhost_dlq_partition", b"0"),
                                         ("evhost_dlq_offset", str(i).encode()),
                                         ("evhost_dlq_plugin", b"probe"),
                                         ("evhost_dlq_attempts", b"1"),
                                         ("evhost_dlq_error", b"synthetic"),
                                         ("evhost_dlq_time", b"2026-12-05T00:00:00Z")]))
    lib.kafka_produce_many(records, brokers=brokers)


def test_a_reload_restarting_the_plugin_during_its_redrive_leaves_nothing_unrecorded(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # A redrive sent a round of dead letters holding nothing of the plugin,
    # then recorded them under its name: a reload restarting it meanwhile
    # took it out of the list, and the round (up to 1000) went unrecorded,
    # sent again by the next redrive of all. The plugin is pinned from the
    # send to its record now: the reload's drain waits for that (faults.so
    # holds the send here, and the new instance's init sleeps 3 s).
    topic, _, _ = dead_letter_topics(unique_name, "probe", (3,), kafka_bootstrap)
    probe = (f"[plugin.probe]\npath = {build_dir / 'tests' / 'fixtures' / 'probe.so'}\n"
             f"topic = {topic}\ngroup = {unique_name('g')}\n")
    hold = tmp_path / "hold-redrive"
    d = evhostd(admin_conf(tmp_path), brokers=kafka_bootstrap, dropins={"20-probe.conf": probe},
                env=lib.faults_preloaded(build_dir, redrive_hold=hold))

    def redrive():
        return d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), json={}, timeout=60)
    hold.touch()
    with ThreadPoolExecutor(1) as pool:
        try:
            first = pool.submit(redrive)
            lib.wait_until(lambda: Path(f"{hold}.waiting").exists(), timeout=30,
                           message="the redrive's send")
            (d.config_dir / "conf.d" / "20-probe.conf").write_text(probe + "init_sleep_ms = 3000\n")
            d.send_signal(signal.SIGHUP)
            d.wait_for_log("plugin 'probe': configuration changed", timeout=30)
            time.sleep(1.5)  # the old instance drained, the new one's init under way
        finally:
            hold.unlink()
        first = first.result(60)
    assert first.status_code == 200, first.text
    assert first.json()["redriven"] == 3 and "unrecorded" not in first.json(), first.text
    d.wait_for_log("reload done", timeout=30)
    assert "could not be recorded" not in d.log_text(), d.log_tail()
    second = redrive()
    assert second.status_code == 200, second.text
    assert (second.json()["redriven"], second.json()["skipped"]) == (0, 3), second.text


def test_a_dead_letter_page_is_bounded_in_bytes(evhostd, build_dir, tmp_path, kafka_bootstrap,
                                               unique_name):
    # A page counted dead letters only: its values are cut at 64 KiB, but
    # not its headers, so 1000 dead letters with large headers held their
    # gigabyte in memory, and even cut values made an 87 MiB answer (past
    # evhostctl's 64 MiB). A page now stops at 8 MiB of what it holds (one
    # letter at least), truncated, with next_after: paging sees each once.
    topic = unique_name("adm")
    dlq_topic = f"{topic}.probe.dlq"
    lib.create_topics([topic, dlq_topic], brokers=kafka_bootstrap, partitions=1)
    lib.kafka_produce_many([{"topic": dlq_topic, "value": b"v" * 100_000,
                             "headers": [("big", b"h" * 500_000),
                                         ("evhost_dlq_topic", topic.encode())]}
                            for _ in range(40)], brokers=kafka_bootstrap)
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, unique_name("g"))
    page = dlq(d, limit=1000)
    # 500 KB of header and 64 KiB of value kept each: 15 make 8 MiB.
    assert len(page["messages"]) == 15 and page["truncated"] is True, len(page["messages"])
    seen_offsets, after, pages = [], None, 0
    while True:
        page = dlq(d, limit=1000, **({"after": after} if after else {}))
        pages += 1
        seen_offsets += [m["offset"] for m in page["messages"]]
        if not page["truncated"]:
            break
        after = page["next_after"]
        assert pages < 10
    assert seen_offsets == list(range(40)) and pages == 3, (seen_offsets, pages)
    assert d.stop() == 0


@pytest.mark.near_bound  # the redrive of 10000 within REDRIVE_SCAN_MS (30 s)
def test_dead_letters_past_the_first_thousands(evhostd, build_dir, tmp_path, kafka_bootstrap,
                                               unique_name):
    # More dead letters than one read held (10000): each can be listed (paging
    # with after, in the order topic, partition, offset), redriven by id
    # (read where it is), and redriven by "all" (the whole topic, in chunks).
    # They come from a topic the plugin does not consume: the copies sent
    # back wait there, unhandled (10000 handler runs would be slow). The
    # first 50 cannot be sent (no evhost_dlq_topic): they do not count
    # against the 10000 a request sends, or a run of "all" alone would stop
    # at them every time once there were 10000.
    topic = unique_name("adm")
    dlq_topic = f"{topic}.probe.dlq"
    origin = f"{topic}.origin"
    lib.create_topics([topic, dlq_topic], brokers=kafka_bootstrap, partitions=3)
    lib.create_topics([origin], brokers=kafka_bootstrap, partitions=1)
    produce_dead_letters(dlq_topic, origin, (11050, 3, 3), kafka_bootstrap, unsendable=50)
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, unique_name("g"))

    def ids(body):
        return [f"{m['partition']}:{m['offset']}" for m in body["messages"]]
    first = dlq(d, limit=6)
    assert ids(first) == [f"0:{i}" for i in range(6)] and first["truncated"] is True
    assert first["next_after"] == f"{dlq_topic}:0:5", first["next_after"]
    page = dlq(d, limit=5, after="0:11048")
    assert ids(page) == ["0:11049", "1:0", "1:1", "1:2", "2:0"], ids(page)
    assert page["truncated"] is True and page["next_after"] == f"{dlq_topic}:2:0"
    page = dlq(d, limit=1000, after=page["next_after"])
    assert ids(page) == ["2:1", "2:2"] and page["truncated"] is False
    assert "next_after" not in page
    page = dlq(d, limit=1000, after="0:10999")
    assert len(page["messages"]) == 56 and ids(page)[0] == "0:11000" and not page["truncated"]
    for bad in ("5", "x:1", "0:", ":0:1", "0:-1", "0:1x"):
        r = d.get("/admin/plugins/probe/dlq", headers=auth(), params={"after": bad})
        assert r.status_code == 422 and r.json()["field"] == "after", (bad, r.text)

    # By id, far past the first 10000, and one that does not exist.
    t0 = time.monotonic()
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=60,
               json={"offsets": [{"partition": 0, "offset": 10040}, {"partition": 2,
                                                                    "offset": 1},
                                 {"partition": 1, "offset": 3}]})
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["redriven"] == 2 and res["not_found_at"] == [{"partition": 1, "offset": 3}], res
    assert time.monotonic() - t0 < 10

    # "all": one request sends 10000 (REDRIVE_MAX) exactly, stopping part
    # way through a read of 1000 (it sent up to 999 more, checking after
    # each read), then says where it stopped (truncated), each sent listed:
    # 0:50 to 0:10050 but 0:10040, sent before ...
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=120)
    assert r.status_code == 200, r.text[:500]
    res = r.json()
    counts = {k: v for k, v in res.items() if k != "results"}
    assert (res["redriven"], res["skipped"], res["failed"]) == (10000, 51, 0), counts
    assert res["truncated"] is True and res["next_after"] == f"{dlq_topic}:0:10050", counts
    assert [(e["partition"], e["offset"]) for e in res["results"]
            if e["outcome"] == "redriven"] == \
        [(0, i) for i in range(50, 10051) if i != 10040], counts
    # ... the next, after it, sends the rest: nothing skipped over, nothing
    # sent twice ...
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=120,
               json={"after": res["next_after"]})
    assert r.status_code == 200, r.text[:500]
    res = r.json()
    counts = {k: v for k, v in res.items() if k != "results"}
    assert (res["redriven"], res["skipped"], res["failed"]) == (999 + 5, 1, 0), counts
    assert res["truncated"] is False and "next_after" not in res, counts
    assert sorted((e["partition"], e["offset"], e["outcome"]) for e in res["results"]) == \
        [(0, i, "redriven") for i in range(10051, 11050)] + \
        [(1, 0, "redriven"), (1, 1, "redriven"), (1, 2, "redriven"), (2, 0, "redriven"),
         (2, 1, "skipped"), (2, 2, "redriven")], counts
    # ... and one of all, from the start, finds each one recorded: it sends
    # none, the first 100 skipped listed.
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=120)
    assert r.status_code == 200, r.text[:500]
    res = r.json()
    counts = {k: v for k, v in res.items() if k != "results"}
    assert (res["redriven"], res["skipped"], res["failed"]) == (0, 11056, 0), counts
    assert res["truncated"] is False and res["skipped_not_listed"] == 11056 - 100, counts
    assert len(res["results"]) == 100, counts
    assert all(m["redriven"] for m in dlq(d, limit=1000, after="0:10999")["messages"])

    # "all" after a position: only what follows it is read.
    lib.kafka_produce_many([dict(topic=dlq_topic, partition=1, value=b'{"fine": true}',
                                 headers=[("ce_id", b"dl-1-late"),
                                          ("evhost_dlq_topic", topic.encode())])],
                           brokers=kafka_bootstrap)
    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=60,
               json={"after": f"{dlq_topic}:1:2"})
    res = r.json()
    assert r.status_code == 200 and res["redriven"] == 1 and res["skipped"] == 3, res
    assert [(e["partition"], e["offset"]) for e in res["results"]
            if e["outcome"] == "redriven"] == [(1, 3)] and res["truncated"] is False, res
    for body, why in (({"after": 5}, "as a string"),
                      ({"after": "1:2", "offsets": [{"partition": 1, "offset": 3}]},
                       "not with offsets"),
                      ({"after": "1"}, "a dead letter's id"),
                      # another plugin's id: paged from an unrelated place before
                      ({"after": "other.dlq:1:2"},
                       "other.dlq is not one of this plugin's dead-letter topics")):
        r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=60, json=body)
        assert r.status_code == 422 and r.json()["field"] == "after", (body, r.text)
        assert why in r.json()["detail"], r.text
    r = subprocess.run([str(build_dir / "host" / "evhostctl"), "-c", str(d.config_file), "dlq",
                        "redrive", "probe", "--all", "--after", "1:2"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.endswith("0 redriven, 4 skipped, 0 failed\n"), \
        (r.stdout, r.stderr)


def test_a_redrive_that_cannot_read_what_was_redriven_before_sends_nothing(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # Which dead letters were redriven before is read from the plugin's
    # database. When that read fails (here its table is gone; a database
    # held by a long transaction, or a plugin a reload is restarting, does
    # the same), nothing is sent: 503, saying why. Before, each was taken
    # for never redriven and sent (again), and the record of it failed too.
    topic = unique_name("adm.unread")
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, unique_name("g"))
    one_dead_letter(d)
    with sqlite3.connect(d.state_dir / "probe.db") as db:
        db.execute("DROP TABLE evh_dlq_redriven")
    for method, path in (("POST", "/admin/plugins/probe/dlq/redrive"),
                         ("GET", "/admin/plugins/probe/dlq")):
        r = requests.request(method, d.url + path, headers=auth(), timeout=60)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1", (path, r.text)
        assert ("which dead letters of plugin 'probe' were redriven before cannot be read"
                in r.json()["detail"]), r.text
    assert "nothing was sent" in d.post("/admin/plugins/probe/dlq/redrive", headers=auth(),
                                        timeout=60).json()["detail"]
    time.sleep(1)
    copies = [m for m in lib.kafka_consume(topic, timeout=10, brokers=kafka_bootstrap)
              if m["headers"].get("evhost_redrive") == "1"]
    assert copies == []


def test_a_dead_letter_listing_behind_a_long_transaction_is_503(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # Which dead letters were redriven before is read under the plugin's
    # database lock: it waited for a handler's long transaction for as long
    # as it ran (here 9 s), holding an HTTP worker, where the docs promise a
    # 503 (after the store's 5 s wait).
    topic = unique_name("adm.held")
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, unique_name("g"))
    one_dead_letter(d)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(d.post, "/probe/publish?key=h&sleep_ms=9000", json={"x": 1},
                           timeout=60)
        d.wait_for_log("probe: sleeping 9000 ms", timeout=30)
        r = d.get("/admin/plugins/probe/dlq", headers=auth(), timeout=60)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
        assert "its database is held by a long transaction" in r.json()["detail"], r.text
        assert held.result().status_code == 200
    assert d.get("/admin/plugins/probe/dlq", headers=auth(), timeout=60).status_code == 200


def test_redrive_of_all_lists_at_most_the_first_skipped_and_failed(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # A redrive of all skips every dead letter redriven before: its answer
    # listed each one (growing with the whole topic, as did evhostctl's
    # output). It lists each redriven one, the first 100 skipped and the
    # first 1000 failed, and counts the rest; the counts stay exact.
    topic = unique_name("adm")
    dlq_topic = f"{topic}.probe.dlq"
    lib.create_topics([topic, dlq_topic], brokers=kafka_bootstrap, partitions=1)
    done, bad, good = 2500, 1100, 3
    records = []
    for i in range(done + bad + good):
        # The "bad" ones name a partition the topic lacks: they fail.
        part = b"99" if done <= i < done + bad else b"0"
        records.append(dict(topic=dlq_topic, partition=0, value=b'{"fine": true}',
                            headers=[("ce_id", f"dl-{i}".encode()), ("ce_type", b"probe.event"),
                                     ("evhost_dlq_topic", topic.encode()),
                                     ("evhost_dlq_partition", part),
                                     ("evhost_dlq_offset", str(i).encode())]))
    lib.kafka_produce_many(records, brokers=kafka_bootstrap)
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, unique_name("g"))
    con = sqlite3.connect(str(Path(d.state_dir) / "probe.db"), timeout=30)
    with con:
        con.executemany("INSERT INTO evh_dlq_redriven(dlq_topic, \"partition\", \"offset\","
                        " redriven_at) VALUES(?, 0, ?, '2026-12-05T00:00:00Z')",
                        [(dlq_topic, i) for i in range(done)])
    con.close()

    r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=120)
    assert r.status_code == 200, r.text[:500]
    res = r.json()
    counts = {k: v for k, v in res.items() if k != "results"}
    assert (res["redriven"], res["skipped"], res["failed"]) == (good, done, bad), counts
    assert res["skipped_not_listed"] == done - 100, counts
    assert res["failed_not_listed"] == bad - 1000, counts
    assert res["truncated"] is False, counts
    by = {}
    for e in res["results"]:
        by.setdefault(e["outcome"], []).append(e["offset"])
    assert by["skipped"] == list(range(100)), by["skipped"][:5]
    assert by["failed"] == list(range(done, done + 1000)), by["failed"][:5]
    assert by["redriven"] == list(range(done + bad, done + bad + good)), by["redriven"]

    # evhostctl: the entries listed, one line for the rest, then the counts.
    r = subprocess.run([str(build_dir / "host" / "evhostctl"), "-c", str(d.config_file), "dlq",
                        "redrive", "probe", "--all"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    lines = r.stdout.splitlines()
    assert r.returncode == 1 and r.stderr == \
        f"evhostctl: dlq redrive probe: {bad} failed, 0 not found, 0 unrecorded\n", \
        (r.stdout[-500:], r.stderr)
    assert len(lines) == 100 + 1000 + 2, (len(lines), lines[-3:])
    assert lines[-2] == (f"(not listed: {done + good - 100} more skipped, {bad - 1000} more "
                         f"failed; evhostctl -c {d.config_file} dlq list probe shows whether "
                         "each dead letter was redriven)"), lines[-2]
    assert lines[-1] == f"0 redriven, {done + good} skipped, {bad} failed", lines[-1]


def test_dlq_binary_header_values_cannot_collide_with_other_headers(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # A header value that is not text comes in "headers_base64" under its own
    # name: as "NAME_base64" in "headers" it met a real header of that name
    # (two members of one name), and a long name was cut.
    import base64
    topic = unique_name("adm")
    dlq_topic = f"{topic}.probe.dlq"
    lib.create_topics([topic, dlq_topic], brokers=kafka_bootstrap, partitions=1)
    long_name = "h" * 80
    lib.kafka_produce_many([dict(topic=dlq_topic, partition=0, value=b'{"fine": true}',
                                 headers=[("evhost_dlq_topic", topic.encode()),
                                          ("xbin", b"\xff\x00\x01"),
                                          ("xbin_base64", b"a real header"), (long_name, b"\xfe"),
                                          ("twice", b"\xff"), ("twice", b"text wins")])],
                           brokers=kafka_bootstrap)
    # Kafka takes any bytes in a header's name: one that is not UTF-8 is shown
    # with U+FFFD, not as bytes that made the whole answer JSON no strict
    # parser takes (kcat gets the bytes: surrogateescape).
    lib.kafka_produce(dlq_topic, b"not json \xff", key="k1",
                      headers={"evhost_dlq_topic": topic, "x-\udcff\udcfe": "v\udcff"},
                      brokers=kafka_bootstrap)
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, unique_name("g"))
    r = d.get("/admin/plugins/probe/dlq", headers=auth(), timeout=30)
    assert r.status_code == 200, r.text
    assert r.text.count('"xbin_base64"') == 1, r.text
    odd = json.loads(r.content.decode("utf-8"))["messages"][1]
    assert base64.b64decode(odd["headers_base64"]["x-\ufffd\ufffd"]) == b"v\xff", odd
    m = r.json()["messages"][0]
    assert m["headers"]["xbin_base64"] == "a real header" and "xbin" not in m["headers"]
    assert m["headers"]["twice"] == "text wins" and "twice" not in m["headers_base64"]
    assert base64.b64decode(m["headers_base64"]["xbin"]) == b"\xff\x00\x01", m
    assert base64.b64decode(m["headers_base64"][long_name]) == b"\xfe", m
    r = subprocess.run([str(build_dir / "host" / "evhostctl"), "-c", str(d.config_file), "dlq",
                        "show", "probe"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "    xbin (base64): /wAB\n" in r.stdout and "    xbin_base64: a real header\n" \
        in r.stdout, r.stdout


def test_dead_letters_read_and_redriven_behind_a_slow_handler_hold_up_nothing_else(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # Listing dead letters and recording a redrive wait for the plugin's
    # database, held by a handler (until the test lets it go); readiness
    # and metrics do not wait for them (they waited for the handler through
    # the plugin list's lock).
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name("adm"),
              unique_name("g"))
    letter = one_dead_letter(d)
    with ThreadPoolExecutor(2) as pool:
        with held_handler(d, tmp_path / "hold"):
            listing = pool.submit(d.get, "/admin/plugins/probe/dlq", headers=auth(), timeout=40)
            redrive = pool.submit(
                d.post, "/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=40,
                json={"offsets": [{"partition": letter["partition"],
                                   "offset": letter["offset"]}]})
            time.sleep(1.5)  # both wait for the handler now
            assert d.get("/readyz", timeout=5).json()["ready"] is True
            assert d.get("/metrics", timeout=5).status_code == 200
            assert d.get("/admin/plugins", headers=auth(), timeout=5).status_code == 200
            assert not listing.done() and not redrive.done()  # still waiting
        listing, redrive = listing.result(40), redrive.result(40)
    assert listing.status_code == 200, listing.text
    assert redrive.status_code == 200, redrive.text
    assert redrive.json()["redriven"] == 1, redrive.text
    assert dlq(d)["messages"][0]["redriven"] is True


def test_a_plugins_redrives_run_one_at_a_time_and_beside_other_plugins(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # A redrive of probe waits for its database (held by a handler). One of
    # probe2 (a second instance, its dead letters made here) runs and ends
    # meanwhile; a second redrive of probe waits for the first, then finds
    # the dead letter redriven (it would send it again if the two ran side
    # by side).
    topic2, _, origin2 = dead_letter_topics(unique_name, "probe2", (2,), kafka_bootstrap)
    probe2 = probe_conf(build_dir, routes="false", second_subscribes="true", topic=topic2,
                        group=unique_name("g2"))
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name("adm"),
              unique_name("g"), config={"plugin.probe2": probe2})
    letter = one_dead_letter(d)
    mine = {"offsets": [{"partition": letter["partition"], "offset": letter["offset"]}]}

    def redrive(name, body, timeout=40):
        return d.post(f"/admin/plugins/{name}/dlq/redrive", headers=auth(), json=body,
                      timeout=timeout)
    with ThreadPoolExecutor(2) as pool:
        with held_handler(d, tmp_path / "hold"):
            first = pool.submit(redrive, "probe", mine)
            time.sleep(1.0)  # it waits for probe's database now
            other = redrive("probe2", {}, timeout=20)  # behind the first: 60 s
            assert other.status_code == 200, other.text
            assert other.json()["redriven"] == 2, other.text
            assert not first.done()
            mark = len(d.log_text())
            second = pool.submit(redrive, "probe", mine)
            wait_log_since(d, mark, "probe: redrive waits for another redrive of it to end")
            assert not first.done() and not second.done()
        first, second = first.result(40), second.result(40)
    assert first.status_code == 200 and first.json()["redriven"] == 1, first.text
    assert second.status_code == 200, second.text
    assert (second.json()["redriven"], second.json()["skipped"]) == (0, 1), second.text
    assert [m["value"] for m in lib.kafka_consume(origin2, count=2, brokers=kafka_bootstrap)] \
        == ['{"fine": true}'] * 2

    # The daemon's stop answers a redrive waiting for another: 503. The one
    # it waited for goes on once the database is free, and stops before it
    # sends anything: what it did (nothing), "stopped" saying why.
    with ThreadPoolExecutor(2) as pool:
        with held_handler(d, tmp_path / "hold"):
            first = pool.submit(redrive, "probe", mine)
            time.sleep(1.0)
            mark = len(d.log_text())
            second = pool.submit(redrive, "probe", mine, 20)
            wait_log_since(d, mark, "probe: redrive waits for another redrive of it to end")
            d.send_signal(signal.SIGTERM)
            second = second.result(20)
            assert not first.done()
        first = first.result(40)
    assert second.status_code == 503 and second.headers["Retry-After"] == "1", second.text
    assert second.json()["detail"] == ("the daemon is stopping (this request waited for "
                                       "another redrive of plugin 'probe'); nothing was sent")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["stopped"] == "the daemon is stopping" and body["truncated"] is True, body
    assert (body["redriven"], body["skipped"], body["failed"], body["results"]) == \
        (0, 0, 0, []), body
    assert d.wait(30) == 0, d.log_tail()


def test_a_write_waiting_too_long_for_a_slow_handler_is_503_busy(evhostd, build_dir, tmp_path,
                                                                 kafka_bootstrap, unique_name):
    # A handler holds the plugin's database (until the test lets it go): a
    # request of the plugin that writes waits 5 s for it, then is answered
    # 503 with Retry-After (it waited for the whole handler, holding an
    # HTTP worker all along).
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name("adm"),
              unique_name("g"))
    with held_handler(d, tmp_path / "hold"):
        r = d.post("/probe/publish?key=j", json={"n": 2}, timeout=30)
    assert r.status_code == 503, r.text
    assert r.headers["Retry-After"] == "1"
    assert r.json()["detail"] == ("service 'probe' is busy (its storage is held by a long "
                                  "transaction); try again"), r.text
    line = next(x for x in d.log_text().splitlines() if "POST /probe/publish (route" in x)
    assert " WARN " in line and "failed: busy (storage: " in line, line
    assert "probe.db: another transaction (an event handler's, a long one) has held the " \
           "database for 5000 ms)" in line, line
    wait_seen(d, 2, timeout=30)
    assert d.post("/probe/publish?key=j", json={"n": 2}).status_code == 200


def test_a_slow_handler_holds_up_no_other_plugins_events(evhostd, build_dir, tmp_path,
                                                         kafka_bootstrap, unique_name):
    # A handler holds the probe's database (until the test lets it go) while
    # the relay's pruning of the probe's event log and inbox comes due (a
    # 2 s inbox retention: every second). crud's event is sent and its
    # delivery recorded meanwhile: the one relay thread waited for the
    # probe's database, and every plugin's events with it, until the handler
    # was done.
    topic = unique_name("things")
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name("adm"),
              unique_name("g"),
              config={"store": {"inbox_retention": "2"},
                      "plugin.crud": {"collections": "things",
                                      "collection.things.topic": topic}})
    with held_handler(d, tmp_path / "hold"):
        time.sleep(1.5)  # the probe's prune is due and waits for its database
        begun = time.monotonic()
        assert d.post("/crud/things", json={"a": 1}).status_code == 201

        def crud_done():
            p = d.get("/admin/plugins/crud", headers=auth(), timeout=5).json()
            return p["outbox_pending"] == 0 and p["events_stored"] == 1
        lib.wait_until(crud_done, timeout=10, message="crud's event sent and recorded")
        assert [m["headers"]["ce_type"]
                for m in lib.kafka_consume(topic, brokers=kafka_bootstrap)] \
            == ["crud.things.created"]
        assert "cannot prune" not in d.log_text()  # a busy database is no failure
        assert time.monotonic() - begun < 45  # the handler still holds (a minute at most)
    wait_seen(d, 2, timeout=30)


def test_replay_of_plugin_without_subscriptions_is_refused(evhostd, build_dir, tmp_path,
                                                           kafka_bootstrap, unique_name):
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name("adm"),
              unique_name("g"), subscribe="false")
    r = d.post("/admin/plugins/probe/replay", headers=auth(), json={"from": "beginning"})
    assert r.status_code == 409 and "consumes no topics" in r.json()["detail"]


def test_an_event_that_crashes_the_plugin_at_two_starts_is_dead_lettered(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # A handler that crashes on an event crashed the daemon at every start
    # (the offset is never committed): systemd's restarts ended in a failed
    # unit, every plugin down for one message. The crash is recorded; the
    # event is handled again at the next start (the crash may have had
    # another cause), and after a second crash on it, dead-lettered without
    # calling the handler, said; the events behind it flow.
    if lib.sanitizer(build_dir):
        pytest.skip("sanitizer runtimes report fatal signals themselves (no crash record)")
    topic, group = unique_name("probe.crash"), unique_name("probe-crash")
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, group, config=QUICK_REJOIN)
    assert d.post("/probe/publish", json={"warm": 1}).status_code == 200  # makes the topic
    wait_seen(d, 1)
    assert d.post("/probe/publish", json={"crash": 16}).status_code == 200
    assert d.wait(timeout=60) == -signal.SIGSEGV, d.log_tail()
    record = d.state_dir / "evhostd.crashed"
    count, _, offset, plugin, where, kept_id, _, how = record.read_text().split()
    assert (count, plugin, where, how) == ("1", "probe", topic, "crashed"), record.read_text()
    assert kept_id.startswith("h:"), record.read_text()  # the id's bytes in hex
    event_id = bytes.fromhex(kept_id[2:]).decode()

    # (It may crash before it answers /healthz: not waited for.)
    d = again_on(evhostd, d, build_dir, tmp_path, kafka_bootstrap, topic, group, wait=False)
    assert d.wait(timeout=60) == -signal.SIGSEGV, d.log_tail()
    text = d.log_text()
    assert f"the last run crashed in plugin 'probe' handling event {event_id} of {topic} [" in text
    assert ("(1 start in a row): it is handled again; should it crash again, the next start "
            "dead-letters it") in text, text
    assert ("it crashed on this event at 2 starts in a row: the next start dead-letters it "
            "without calling the handler") in text, text
    assert record.read_text().split()[0] == "2"

    d = again_on(evhostd, d, build_dir, tmp_path, kafka_bootstrap, topic, group)
    d.wait_for_log("(2 starts in a row): that event is dead-lettered without calling the "
                   "handler again", timeout=30)
    lib.wait_until(lambda: dlq(d)["messages"], timeout=60, message="the dead letter")
    # (A copy of it, which the relay sent again after the first crash, goes
    # the same way: found by its id.)
    letters = dlq(d)["messages"]
    assert offset in [str(m["headers"]["evhost_dlq_offset"]) for m in letters], letters
    for m in letters:
        assert m["headers"]["evhost_dlq_error"] == (
            "the plugin crashed handling this event at 2 starts in a row: dead-lettered "
            "without calling its handler again"), m
        assert m["headers"]["ce_id"] == event_id, m
    assert d.post("/probe/publish", json={"after": 1}).status_code == 200
    lib.wait_until(lambda: [e["data"] for e in seen(d)] == [{"warm": 1}, {"after": 1}],
                   timeout=60, message="the event behind it handled")

    # A redrive is the administrator's new try: its handler is called (and
    # this probe still crashes on it); the start after that dead-letters
    # the redriven copy, found at its place, without calling it.
    # The event is dead-lettered twice here (the relay's copy too, above,
    # depending on its timing; made sure of): "all" redrives both copies,
    # and the crash on one says the other, redriven with it, is no new try.
    letter = letters[0]
    lib.kafka_produce(letter["topic"], letter["value"], key=letter["key"],
                      headers=letter["headers"], brokers=kafka_bootstrap)
    # Found by its headers, the letter's own: the relay's copy may have been
    # dead-lettered after `letters` was read (its count then grew by two).
    lib.wait_until(lambda: sum(m["headers"] == letter["headers"]
                               for m in dlq(d)["messages"]) == 2, timeout=30,
                   message="the second dead letter")
    try:
        r = d.post("/admin/plugins/probe/dlq/redrive", headers=auth(), timeout=60)  # all
        assert r.status_code == 200 and r.json()["redriven"] >= 2, r.text
    except requests.ConnectionError:
        pass  # the first copy crashed the daemon before the answer: both are sent by then
    assert d.wait(timeout=60) == -signal.SIGSEGV, d.log_tail()
    assert record.read_text().split()[0] == "3", record.read_text()
    d = again_on(evhostd, d, build_dir, tmp_path, kafka_bootstrap, topic, group)
    d.wait_for_log("(3 starts in a row): that event is dead-lettered without calling the "
                   "handler again", timeout=30)
    lib.wait_until(lambda: sum(m["headers"].get("evhost_redrive") == "1" and
                               "at 3 starts in a row" in m["headers"]["evhost_dlq_error"]
                               for m in dlq(d)["messages"]) >= 2,  # 3 with the relay's
                   timeout=60, message="the redriven copies dead-lettered")
    assert d.post("/probe/publish", json={"after": 2}).status_code == 200
    lib.wait_until(lambda: [e["data"] for e in seen(d)][-1:] == [{"after": 2}], timeout=60,
                   message="the event behind them handled")
    assert d.stop() == 0
    assert not record.exists()  # a clean stop forgets it


# A crashed member's partitions go to the next one after its session times
# out: 3 s (scripts/kafka's brokers take 1 s and up), not librdkafka's 45 s,
# for the restarts above; a heartbeat a second, so that one late beat is no
# timeout.
QUICK_REJOIN = {"kafka": {"rdkafka.session.timeout.ms": "3000",
                          "rdkafka.heartbeat.interval.ms": "1000"}}


def again_on(evhostd, d, build_dir, tmp_path, brokers, topic, group, wait=True, config=None):
    """The same daemon started again: its config and state, a new process."""
    conf = {**admin_conf(tmp_path), **QUICK_REJOIN, **(config or {})}
    conf["plugin.probe"] = probe_conf(build_dir, topic=topic, group=group)
    return evhostd(conf, brokers=brokers, config_dir=d.config_dir, state_dir=d.state_dir,
                   port=d.port, wait=wait)


def kill_holding(d, hold, times, sig=signal.SIGKILL):
    """Wait for the probe's handler to hold its event (the `times`-th time
    in this log: the event comes again at each start), then SIGKILL evhostd
    (the OOM killer's way): no handler of evhostd's runs. Or `sig`: SIGABRT
    is systemd's watchdog's."""
    held = f"probe: event held while {hold} exists"
    lib.wait_until(lambda: d.log_text().count(held) >= times, timeout=60,
                   message=f"{held!r} {times} time(s) in the log")
    d.send_signal(sig)
    assert d.wait(timeout=30) == -sig


def test_an_event_in_hand_when_evhostd_ends_at_two_starts_is_dead_lettered(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name):
    # A handler that uses up the memory on an event (the OOM killer's
    # SIGKILL) or never returns on it (the stop's guard: exit 3) ended
    # evhostd at every start with no crash to record: under
    # Restart=on-failure a loop, its partition held for good. The event a
    # handler has in hand at such an end counts as a crash on it: handled
    # again once, dead-lettered at the second such start.
    topic, group = unique_name("probe.kill"), unique_name("probe-kill")
    hold = tmp_path / "hold"
    quick_stop = {"host": {"stop_timeout": "1s"}}
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, group,
              config={**QUICK_REJOIN, **quick_stop})
    assert d.post("/probe/publish", json={"warm": 1}).status_code == 200
    wait_seen(d, 1)
    hold.write_text("")
    assert d.post("/probe/publish", json={"hold_while": str(hold)}).status_code == 200
    kill_holding(d, hold, 1)
    assert (d.state_dir / "evhostd.inhand").exists()

    d = again_on(evhostd, d, build_dir, tmp_path, kafka_bootstrap, topic, group,
                 config=quick_stop)
    record = d.state_dir / "evhostd.crashed"
    count, partition, offset, plugin, where, kept_id, _, how = record.read_text().split()
    assert (count, plugin, where, how) == ("1", "probe", topic, "killed"), record.read_text()
    event_id = bytes.fromhex(kept_id[2:]).decode()
    d.wait_for_log(f"the last run did not stop cleanly while plugin 'probe' handled event "
                   f"{event_id} of {topic} [", timeout=10)
    d.wait_for_log("(killed: the OOM killer, SIGKILL, or the stop's guard; 1 start in a row): "
                   "it is handled again; should evhostd end so again on it, the next start "
                   "dead-letters it", timeout=10)
    # Held again: this time a stop whose guard ends it (the handler never
    # returns within stop_timeout and 10 s more).
    lib.wait_until(lambda: d.log_text().count(f"probe: event held while {hold} exists") >= 2,
                   timeout=60, message="the event held again")
    d.send_signal(signal.SIGTERM)
    assert d.wait(timeout=60) == 3, d.log_tail()
    assert "its consumer (an event handler that has not returned)" in d.log_text()
    # The guard names the event the handler holds, and what comes of it.
    assert (f"plugin 'probe' has event {event_id} of {topic} [{partition}] at offset {offset} "
            "in hand: "
            "the next start dead-letters it without calling the handler (the last run ended "
            "on it too)") in d.log_text(), d.log_tail()

    d = again_on(evhostd, d, build_dir, tmp_path, kafka_bootstrap, topic, group)
    d.wait_for_log("(killed: the OOM killer, SIGKILL, or the stop's guard; 2 starts in a row): "
                   "that event is dead-lettered without calling the handler again", timeout=10)
    letters = wait_dlq(d, 1, timeout=60)["messages"]
    assert offset in [str(m["headers"]["evhost_dlq_offset"]) for m in letters], letters
    for m in letters:
        assert m["headers"]["evhost_dlq_error"] == (
            "evhostd did not stop cleanly while the plugin handled this event (it crashed, or "
            "was killed: the OOM killer, SIGKILL, the stop's guard) at 2 starts in a row: "
            "dead-lettered without calling its handler again"), m
        assert m["headers"]["ce_id"] == event_id, m
    assert d.post("/probe/publish", json={"after": 1}).status_code == 200
    lib.wait_until(lambda: [e["data"] for e in seen(d)] == [{"warm": 1}, {"after": 1}],
                   timeout=60, message="the event behind it handled")
    assert d.log_text().count(f"probe: event held while {hold} exists") == 2  # not called
    assert d.stop() == 0
    assert not record.exists()  # a clean stop forgets it
    hold.unlink()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGABRT])
def test_an_event_in_hand_at_a_kill_is_handled_again_then_forgotten(
        evhostd, build_dir, tmp_path, kafka_bootstrap, unique_name, sig):
    # A kill may have had nothing to do with the event in hand (the OOM
    # killer chose evhostd for another's memory): the next start handles it
    # as usual, and once its handler returns, its record is gone. SIGABRT
    # sent by another process (systemd's watchdog, at a hung reload's drain)
    # is a kill too: its handler took it for a crash of the thread it landed
    # on, outside any plugin, and counted nothing.
    topic, group = unique_name("probe.kill"), unique_name("probe-kill")
    hold = tmp_path / "hold"
    d = start(evhostd, build_dir, tmp_path, kafka_bootstrap, topic, group, config=QUICK_REJOIN)
    assert d.post("/probe/publish", json={"warm": 1}).status_code == 200
    wait_seen(d, 1)
    hold.write_text("")
    assert d.post("/probe/publish", json={"n": 2, "hold_while": str(hold)}).status_code == 200
    kill_holding(d, hold, 1, sig)
    if sig == signal.SIGABRT and not lib.sanitizer(build_dir):
        assert f"FATAL: SIGABRT sent by process {os.getpid()}" in d.log_text()
    hold.unlink()
    d = again_on(evhostd, d, build_dir, tmp_path, kafka_bootstrap, topic, group)
    record = d.state_dir / "evhostd.crashed"
    d.wait_for_log("(killed: the OOM killer, SIGKILL, or the stop's guard; 1 start in a row): "
                   "it is handled again", timeout=10)
    lib.wait_until(lambda: [e["data"].get("n") for e in seen(d)] == [None, 2], timeout=60,
                   message="the event handled")
    lib.wait_until(lambda: not record.exists(), timeout=10, message="the record forgotten")
    assert dlq(d)["messages"] == []
    # The start said why its consumers may wait (for the broker to drop the
    # killed run's members); after a clean stop it does not.
    unclean = ("the last run did not stop cleanly (it crashed, was killed, or the stop's guard "
               "ended it): what it had not committed is handled again; its consumers did not "
               "leave their groups")
    assert d.log_text().count(unclean) == 1
    assert d.stop() == 0
    d = again_on(evhostd, d, build_dir, tmp_path, kafka_bootstrap, topic, group)
    assert d.log_text().count(unclean) == 1
    assert d.stop() == 0


# ------------------------------------------------------------------ backups


def backup_daemon(evhostd, build_dir, tmp_path):
    """A daemon with the admin API and the probe (no subscription: no Kafka
    needed) for the backup tests below."""
    conf = admin_conf(tmp_path)
    conf["plugin.probe"] = probe_conf(build_dir, subscribe="false")
    return evhostd(conf)


def test_a_backup_into_a_missing_directory_names_the_directory_it_could_not_make(
        evhostd, build_dir, tmp_path):
    # state_dir/backups is there, but a symbolic link to nowhere: making the
    # backup's own directory in it fails. The answer named state_dir/backups,
    # whose mkdir had said "it exists"; it names the directory that could
    # not be made now.
    d = backup_daemon(evhostd, build_dir, tmp_path)
    backups = d.state_dir / "backups"
    backups.symlink_to(tmp_path / "gone")
    r = d.post("/admin/backup", json={}, headers=auth(), timeout=60)
    assert r.status_code == 500, r.text
    detail = r.json()["detail"]
    assert re.search(rf"cannot create {re.escape(str(backups))}/\.partial-\d{{8}}T\d{{6}}"
                     rf"\.\d{{3}}Z: No such file or directory$", detail), detail
    backups.unlink()
    r = d.post("/admin/backup", json={}, headers=auth(), timeout=60)
    assert r.status_code == 200, r.text


@pytest.fixture
def tiny_backups_fs(tmp_path):
    """A mount point for a tmpfs too small for a backup; unmounted after the
    test. Skipped where mounting is not permitted (not root, a container
    without CAP_SYS_ADMIN)."""
    mounted = []

    def mount(path, size):
        if os.geteuid() != 0:
            pytest.skip("mounting a small filesystem for the backups needs root")
        path.mkdir(exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0750", "tmpfs",
                            str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(path)

    yield mount
    for path in mounted:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def test_a_backup_that_fills_the_disk_leaves_nothing_behind(evhostd, build_dir, tmp_path,
                                                            tiny_backups_fs):
    # The copy stopped by a full disk left NAME.db-journal (SQLite's, beside
    # the copy) in .partial-TIME, which was then not removed, and the next
    # backup said it was "left unfinished by an earlier daemon". Nothing is
    # left now, and nothing is said of it.
    # 6 MB of rows: more than SQLite's page cache (2 MiB), so the copy spills
    # pages, journaled, before the disk (64 KiB) is full.
    d = backup_daemon(evhostd, build_dir, tmp_path)
    r = d.post("/probe/exec", data="WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
               "FROM n WHERE i < 3000) INSERT INTO seen(data) SELECT hex(randomblob(1000)) "
               "FROM n", timeout=60)
    assert r.json() == {"rc": "ok", "error": ""}, r.text
    backups = d.state_dir / "backups"
    tiny_backups_fs(backups, "64k")
    for _ in range(2):
        r = d.post("/admin/backup", json={}, headers=auth(), timeout=60)
        assert r.status_code == 500, r.text
        assert "plugin 'probe'" in r.json()["detail"] and "full" in r.json()["detail"], r.text
        assert sorted(p.name for p in backups.rglob("*")) == [], list(backups.rglob("*"))
    assert "left unfinished by an earlier daemon" not in d.log_text()
