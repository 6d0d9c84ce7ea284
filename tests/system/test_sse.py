"""GET /notifications/stream (Server-Sent Events) against the real daemon,
over raw sockets: 401 without a token; the stream's headers; a broadcast
reaching each user's own stream and nobody else's; a welcome mail reaching
the stream of a user created after it opened; [http] max_streams (503
with Retry-After); a departed client freeing its slot; a client reconnecting
with Last-Event-ID getting exactly what it missed, and an evhost.missed notice
first when its id is older than the history; a new stream after a refusal
resuming from ?lastEventId= (the header winning over it); a reload closing the plugin's
streams; a plugin turned off and on again by conf.d ending its streams and
resuming its clients from the history; a stream ending when its token
expires or its user signs out; a
quiet stream's keepalive comment;
SIGTERM with streams open exiting 0 at once, and cutting after a second the
connection of one whose client stopped reading; a stream a reload closed
while its client stopped reading giving up its max_streams place to a new
client, and its connection cut with no new client too (its worker freed);
the open streams per plugin on /metrics; a plugin built against
ABI 1.0 still loading next to it; and a client gone without a word (its
packets dropped, in a network namespace of the daemon's own) letting go
of its stream once what it was sent went unacknowledged for [http]
stream_unacked_timeout.

The embedded broker is enough for most of it: the point is the HTTP side,
not Kafka. The welcome test produces a USER_CREATED event itself, so it
uses the real broker (kafka_bootstrap)."""

import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import evhost_testlib as lib

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-1"
PASSWORD = "correct horse battery"
STREAM = "/notifications/stream"
MAX_STREAMS = 2


class Sse:
    """One HTTP request on its own socket, read as an event stream."""

    def __init__(self, port, path=STREAM, token=None, timeout=10.0, last_event_id=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        if token:
            req += f"Authorization: Bearer {token}\r\n"
        if last_event_id is not None:
            req += f"Last-Event-ID: {last_event_id}\r\n"
        self.sock.sendall((req + "\r\n").encode())
        self.buf = b""
        self.eof = False
        self.events = []    # every event read: {"id", "event", "data"}
        self.comments = []  # every ": ..." line read
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(deadline), f"no response head: {self.buf!r}"
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            self.headers[k.strip().lower()] = v.strip()

    def _fill(self, deadline):
        """Read more; False at EOF or when the deadline passed."""
        left = deadline - time.monotonic()
        if left <= 0 or self.eof:
            return False
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def body(self, timeout=10.0):
        """The rest of a plain (Content-Length) response."""
        n = int(self.headers.get("content-length", "0"))
        deadline = time.monotonic() + timeout
        while len(self.buf) < n and self._fill(deadline):
            pass
        return self.buf[:n].decode()

    def _parse_block(self, block):
        ev = {"data": []}
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                ev["data"].append(value)
            elif field in ("id", "event", "retry"):
                ev[field] = value
        if not ev["data"]:
            return None
        ev["data"] = "\n".join(ev["data"])
        self.events.append(ev)
        return ev

    def next_event(self, timeout=10.0):
        """The next event, or None at EOF / timeout. Comments are collected."""
        deadline = time.monotonic() + timeout
        while True:
            while b"\n\n" in self.buf:
                block, self.buf = self.buf.split(b"\n\n", 1)
                ev = self._parse_block(block.decode())
                if ev:
                    return ev
            if not self._fill(deadline):
                return None

    def wait_for(self, pred, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            ev = self.next_event(max(0.0, deadline - time.monotonic()))
            if ev is None:
                raise AssertionError(f"no matching event within {timeout:g}s; got "
                                     f"{self.events} comments {self.comments} eof={self.eof}")
            if pred(ev):
                return ev

    def read_to_eof(self, timeout=10.0):
        """Everything until the server closes; True if it did in time."""
        while self.next_event(timeout) is not None:
            pass
        return self.eof

    def close(self):
        self.sock.close()


def notif_config(tmp_path, unique_name, build_dir):
    topics = {k: unique_name(k) for k in ("created", "updated", "deleted", "broadcast")}
    secret = tmp_path / "jwt.key"
    if not secret.exists():
        secret.write_text(secrets.token_urlsafe(48))
    admin_pw = tmp_path / "admin.password"
    admin_pw.write_text(ADMIN_PASSWORD + "\n")
    return {
        "http": {"threads": 6, "max_streams": MAX_STREAMS},
        "auth": {"jwt_secret_file": str(secret)},
        "plugin.user": {
            "topic.created": topics["created"], "topic.updated": topics["updated"],
            "topic.deleted": topics["deleted"], "admin_email": ADMIN_EMAIL,
            "admin_password_file": str(admin_pw),
            "argon2_opslimit": "min", "argon2_memlimit": "min",
        },
        "plugin.notifications": {
            **lib.notifications_topics(topics), "templates_dir": str(lib.TEMPLATES),
            "transport": "maildir", "maildir": str(tmp_path / "mail"),
            "from": "Evhost Tests <noreply@example.org>",
            "group": unique_name("g"),
        },
        # Built against ABI 1.0 (descriptor 1.0, no streaming calls).
        "plugin.abi10": {"path": str(build_dir / "tests" / "fixtures" / "abi_1_0.so")},
    }


def login(d, addr, password):
    r = d.post("/auth/login", json={"email": addr, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["token"]


def new_user(d, name):
    addr = f"{name.lower()}.{uuid.uuid4().hex[:8]}@example.com"
    r = d.post("/users", json={"name": name, "email": addr, "password": PASSWORD})
    assert r.status_code == 201, r.text
    return r.json()["id"], addr, login(d, addr, PASSWORD)


def open_stream(d, token):
    s = Sse(d.port, token=token)
    assert s.status == 200, (s.status, s.headers, s.body())
    return s


def is_broadcast(bid):
    return lambda ev: (ev.get("event") == "notification"
                       and json.loads(ev["data"])["event_id"].startswith(bid + ":"))


def expect_broadcast(d, admin, s, subject, user_id):
    """An admin's broadcast reaches stream s, as user_id's notification."""
    r = d.post("/notifications/broadcast", json={"subject": subject, "message": "x"},
               headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 202, r.text
    ev = s.wait_for(is_broadcast(r.json()["broadcast_id"]), timeout=30)
    assert json.loads(ev["data"])["user_id"] == user_id


def test_stream_pushes_each_user_only_their_notifications(evhostd, tmp_path, unique_name,
                                                          build_dir):
    config = notif_config(tmp_path, unique_name, build_dir)
    d = evhostd(config, brokers="embedded")

    # A plugin built against ABI 1.0 loads and serves next to the new calls.
    r = d.get("/abi10")
    assert r.status_code == 200 and r.json() == {"abi": "1.0"}
    assert d.get("/readyz").json()["plugins"]["abi10"] == "running"

    # No token, a bad token: 401 problem+json, no stream.
    s = Sse(d.port)
    assert s.status == 401
    assert s.headers["content-type"] == "application/problem+json"
    assert json.loads(s.body())["status"] == 401
    s.close()
    s = Sse(d.port, token="not.a.token")
    assert s.status == 401
    s.close()

    admin = login(d, ADMIN_EMAIL, ADMIN_PASSWORD)
    a_id, a_addr, a_token = new_user(d, "Alice")
    b_id, b_addr, b_token = new_user(d, "Bob")

    sa = open_stream(d, a_token)
    assert sa.headers["content-type"] == "text/event-stream"
    assert sa.headers["cache-control"] == "no-store"
    assert sa.headers["x-accel-buffering"] == "no"
    assert sa.headers.get("x-request-id")
    assert "content-length" not in sa.headers
    sb = open_stream(d, b_token)

    # max_streams are open: the next one is refused, not queued.
    extra = Sse(d.port, token=admin)
    assert extra.status == 503
    assert extra.headers["content-type"] == "application/problem+json"
    assert int(extra.headers["retry-after"]) > 0
    assert "max_streams" in json.loads(extra.body())["detail"]
    extra.close()
    # ... while ordinary requests still have workers.
    assert d.get("/healthz").status_code == 200

    started = time.monotonic()
    r = d.post("/notifications/broadcast", json={"subject": "Live news", "message": "Hi"},
               headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 202, r.text
    bid = r.json()["broadcast_id"]

    ev = sa.wait_for(is_broadcast(bid), timeout=30)
    print(f"\nbroadcast reached the stream {(time.monotonic() - started) * 1000:.0f} ms "
          f"after 202")
    data = json.loads(ev["data"])
    assert data["event_id"] == f"{bid}:{a_id}"
    assert data["template"] == "broadcast" and data["status"] == "sent"
    assert data["user_id"] == a_id and data["recipient"] == a_addr
    assert data["subject"] == "Live news" and data["time"].endswith("Z")
    assert int(ev["id"]) > 0
    evb = sb.wait_for(is_broadcast(bid), timeout=30)
    assert json.loads(evb["data"])["user_id"] == b_id
    assert int(evb["id"]) != int(ev["id"])

    # Each stream heard only about its own user (welcome mails included,
    # when they were delivered after the stream opened).
    for stream, uid, addr in ((sa, a_id, a_addr), (sb, b_id, b_addr)):
        for e in stream.events:
            assert e["event"] == "notification"
            item = json.loads(e["data"])
            assert item["user_id"] == uid and item["recipient"] == addr, item
    # The log agrees with what was pushed, once the part commits: the stream
    # hears of a mail when it is sent, the list (a read transaction) of the
    # rows committed.
    def logged():
        log = d.get("/notifications", params={"recipient": a_addr, "limit": 100},
                    headers={"Authorization": f"Bearer {admin}"}).json()["items"]
        return any(i["event_id"] == f"{bid}:{a_id}" and i["status"] == "sent" for i in log)
    lib.wait_until(logged, timeout=30, message="the broadcast's row in the log")

    # A client that leaves frees its slot within about a second, without
    # waiting for a keepalive write to fail.
    sa.close()

    def reopened():
        s = Sse(d.port, token=a_token)
        if s.status == 200:
            return s
        s.body()
        s.close()
        return None
    t0 = time.monotonic()
    sa = lib.wait_until(reopened, timeout=5, interval=0.2, message="a freed stream slot")
    print(f"slot freed {(time.monotonic() - t0) * 1000:.0f} ms after the client left")

    # SIGTERM with streams open: they end at once and the daemon exits 0.
    t0 = time.monotonic()
    d.send_signal(signal.SIGTERM)
    assert sb.read_to_eof(timeout=5) and sa.read_to_eof(timeout=5)
    assert "server stopping" in sb.comments
    assert d.wait(timeout=10) == 0
    took = time.monotonic() - t0
    print(f"SIGTERM with 2 open streams: exited in {took * 1000:.0f} ms")
    assert took < 5
    sa.close()
    sb.close()


def broadcast(d, admin, subject):
    r = d.post("/notifications/broadcast", json={"subject": subject, "message": "x"},
               headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 202, r.text
    return r.json()["broadcast_id"]


def wait_logged(d, admin, addr, pred):
    """The log row of `addr` that `pred` accepts, once it is there. The
    plugin pushes a final outcome before it writes the row, so by then the
    event was published."""
    def row():
        r = d.get("/notifications", params={"recipient": addr, "limit": 100},
                  headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 200, r.text
        return next((i for i in r.json()["items"] if pred(i)), None)
    return lib.wait_until(row, timeout=30, interval=0.1, message=f"a log row of {addr}")


def resume(d, token, last_event_id=None, timeout=5, path=STREAM):
    """A stream (sent with Last-Event-ID when given), once a slot is free (a
    closed one is freed within about a second): 503 until then."""
    def opened():
        s = Sse(d.port, path=path, token=token, last_event_id=last_event_id)
        if s.status == 200:
            return s
        assert s.status == 503, (s.status, s.body())
        s.body()
        s.close()
        return None
    return lib.wait_until(opened, timeout=timeout, interval=0.2, message="a free stream slot")


def welcomed_user(evhostd, tmp_path, unique_name, build_dir, name):
    """A daemon (embedded broker), an admin token, and a user whose welcome
    mail was sent (so pushed before any stream of theirs opens, and never
    among what a stream misses): (d, admin, uid, addr, token)."""
    d = evhostd(notif_config(tmp_path, unique_name, build_dir), brokers="embedded")
    admin = login(d, ADMIN_EMAIL, ADMIN_PASSWORD)
    uid, addr, token = new_user(d, name)
    wait_logged(d, admin, addr, lambda i: i["template"] == "welcome" and i["status"] == "sent")
    return d, admin, uid, addr, token


def test_reconnect_with_last_event_id_gets_what_it_missed(evhostd, tmp_path, unique_name,
                                                         build_dir):
    d, admin, uid, addr, token = welcomed_user(evhostd, tmp_path, unique_name, build_dir,
                                               "Erin")

    s = open_stream(d, token)
    bid1 = broadcast(d, admin, "Before the drop")
    ev1 = s.wait_for(is_broadcast(bid1), timeout=30)
    s.close()

    # While the client is away, another notification is pushed.
    bid2 = broadcast(d, admin, "While away")
    wait_logged(d, admin, addr, lambda i: i["event_id"] == f"{bid2}:{uid}")

    # Back with the last id it saw: exactly the one it missed, then live ones.
    s = resume(d, token, ev1["id"])
    ev2 = s.next_event(timeout=10)
    assert ev2 is not None and is_broadcast(bid2)(ev2), (ev2, s.comments)
    assert int(ev2["id"]) > int(ev1["id"])
    assert json.loads(ev2["data"])["user_id"] == uid
    assert s.next_event(timeout=1) is None and s.events == [ev2], s.events
    bid3 = broadcast(d, admin, "Live again")
    ev3 = s.wait_for(is_broadcast(bid3), timeout=30)
    assert int(ev3["id"]) > int(ev2["id"]) and s.events == [ev2, ev3], s.events
    s.close()

    # An id older than the history can vouch for (from before this
    # process): the notice first, then what the history still holds.
    s = resume(d, token, "1")
    missed = s.next_event(timeout=10)
    assert missed is not None and missed["event"] == "evhost.missed", (missed, s.comments)
    assert json.loads(missed["data"]) == {"last_event_id": "1", "reason": "restart"}
    rest = [s.next_event(timeout=10) for _ in range(4)]
    assert all(e is not None and e["event"] == "notification" for e in rest), rest
    items = [json.loads(e["data"]) for e in rest]
    assert [i["template"] for i in items] == ["welcome", "broadcast", "broadcast", "broadcast"]
    assert [i["event_id"] for i in items[1:]] == [f"{b}:{uid}" for b in (bid1, bid2, bid3)]
    assert [e["id"] for e in rest[1:]] == [ev1["id"], ev2["id"], ev3["id"]]
    assert s.next_event(timeout=1) is None, s.events

    # A value that is not an id is no header: nothing replayed, no notice.
    s.close()
    s = resume(d, token, "not-an-id")
    assert s.next_event(timeout=1) is None and s.events == [], s.events
    s.close()


def test_a_new_stream_after_a_refusal_resumes_from_the_lastEventId_parameter(
        evhostd, tmp_path, unique_name, build_dir):
    """A browser's EventSource refused (503 at max_streams) is closed for
    good, and the new one the page makes cannot send Last-Event-ID: it
    names the last id in the URL (?lastEventId=N) and gets exactly what it
    missed. A Last-Event-ID header wins over the parameter; a value that is
    not an id is no id, as in the header."""
    d, admin, uid, addr, token = welcomed_user(evhostd, tmp_path, unique_name, build_dir,
                                               "Gus")

    s = open_stream(d, token)
    ev1 = s.wait_for(is_broadcast(broadcast(d, admin, "Seen")), timeout=30)
    # Its connection drops, and other clients take every place meanwhile.
    s.close()
    fillers = [resume(d, admin) for _ in range(MAX_STREAMS)]
    refused = Sse(d.port, token=token, last_event_id=ev1["id"])
    assert refused.status == 503 and refused.headers.get("retry-after"), refused.status
    refused.body()
    refused.close()
    bid2 = broadcast(d, admin, "Missed while refused")
    wait_logged(d, admin, addr, lambda i: i["event_id"] == f"{bid2}:{uid}")
    for f in fillers:
        f.close()

    # The page's new EventSource: the id in the query (among the page's own
    # parameters), no header. Exactly the one it missed, then live ones.
    s = resume(d, token, path=f"{STREAM}?view=compact&lastEventId={ev1['id']}")
    ev2 = s.next_event(timeout=10)
    assert ev2 is not None and is_broadcast(bid2)(ev2), (ev2, s.events, s.comments)
    assert s.next_event(timeout=1) is None and s.events == [ev2], s.events
    bid3 = broadcast(d, admin, "Live again")
    ev3 = s.wait_for(is_broadcast(bid3), timeout=30)
    assert s.events == [ev2, ev3], s.events
    s.close()

    # The same EventSource reconnecting by itself keeps its URL and sends the
    # newer id as Last-Event-ID: the header wins (the parameter's id would
    # replay ev2 and ev3 again; "1" would be an evhost.missed notice).
    s = resume(d, token, ev2["id"], path=f"{STREAM}?lastEventId={ev1['id']}")
    assert s.next_event(timeout=10) == ev3, (s.events, s.comments)
    assert s.next_event(timeout=1) is None and s.events == [ev3], s.events
    s.close()
    s = resume(d, token, ev3["id"], path=f"{STREAM}?lastEventId=1")
    assert s.next_event(timeout=1) is None and s.events == [], s.events
    s.close()

    # Decoded like any query parameter: %20 and + are the blanks an id may
    # have around it.
    s = resume(d, token, path=f"{STREAM}?lastEventId=%20{ev2['id']}+")
    assert s.next_event(timeout=10) == ev3, (s.events, s.comments)
    s.close()
    # An id from before this process: the notice, as with the header.
    s = resume(d, token, path=f"{STREAM}?lastEventId=1")
    missed = s.next_event(timeout=10)
    assert missed is not None and missed["event"] == "evhost.missed", (missed, s.comments)
    assert json.loads(missed["data"]) == {"last_event_id": "1", "reason": "restart"}
    s.close()

    # Not an id (as a header, these are no header): nothing replayed, no
    # notice, no error; the live events still come.
    for bad in ("not-an-id", "", f"{ev1['id']}x", "-1", "99999999999999999999999",
                "%zz", f"{ev1['id']}%00"):
        s = resume(d, token, path=f"{STREAM}?lastEventId={bad}")
        assert s.next_event(timeout=1) is None and s.events == [], (bad, s.events)
        s.close()
    # ... and an invalid header is no header: the parameter does not stand in.
    s = resume(d, token, "not-an-id", path=f"{STREAM}?lastEventId={ev1['id']}")
    assert s.next_event(timeout=1) is None and s.events == [], s.events
    bid4 = broadcast(d, admin, "Live after all")
    s.wait_for(is_broadcast(bid4), timeout=30)
    assert len(s.events) == 1, s.events
    s.close()


def test_reload_closes_the_plugins_streams(evhostd, tmp_path, unique_name, build_dir):
    config = notif_config(tmp_path, unique_name, build_dir)
    d = evhostd(config, brokers="embedded")
    a_id, a_addr, a_token = new_user(d, "Carol")
    s = open_stream(d, a_token)

    # Change the notifications section: the plugin is drained and restarted,
    # and its streams end with a comment saying why. (A new consumer group,
    # so the restarted consumer need not wait out the old member's session
    # on the embedded broker.)
    notif = dict(config["plugin.notifications"], group=unique_name("g"))
    sections = dict(config, **{"plugin.notifications": notif},
                    host={"plugin_dir": str(build_dir / "plugins"), "state_dir": str(d.state_dir)},
                    kafka={"brokers": "embedded"}, log={"format": "text", "level": "debug"})
    sections["http"] = dict(sections["http"], listen=f"127.0.0.1:{d.port}")
    lib.write_ini(d.config_file, sections)
    d.send_signal(signal.SIGHUP)
    assert s.read_to_eof(timeout=15), s.comments
    assert "service stopping" in s.comments
    s.close()
    d.wait_for_log("reload done", timeout=15)

    # The restarted plugin streams again.
    s = lib.wait_until(lambda: (lambda x: x if x.status == 200 else x.close())(
        Sse(d.port, token=a_token)), timeout=10, interval=0.2, message="a stream after reload")
    admin = login(d, ADMIN_EMAIL, ADMIN_PASSWORD)
    # Carol is a recipient once her USER_CREATED is handled: neither instance
    # may have had its partitions before the reload, and the restarted one
    # reads the users' topic and the broadcasts' side by side (a broadcast
    # handled first reached 0 recipients, under ThreadSanitizer).
    wait_logged(d, admin, a_addr, lambda i: i["template"] == "welcome")
    expect_broadcast(d, admin, s, "After reload", a_id)
    s.close()


def test_a_plugin_turned_off_and_on_again_resumes_its_clients(evhostd, tmp_path, unique_name,
                                                              build_dir):
    """conf.d turns the plugin off: its streams end with `: service stopping`,
    its path is 404 while it is off, and the history it published is kept
    (by its name, not the unloaded instance): once it is on again, a client
    with the last id it saw gets what it missed, from the new instance."""
    d, admin, uid, addr, token = welcomed_user(evhostd, tmp_path, unique_name, build_dir,
                                               "Fay")
    s = open_stream(d, token)
    ev1 = s.wait_for(is_broadcast(broadcast(d, admin, "Seen")), timeout=30)
    s.close()
    bid2 = broadcast(d, admin, "Missed")
    wait_logged(d, admin, addr, lambda i: i["event_id"] == f"{bid2}:{uid}")
    s = open_stream(d, token)

    off = d.config_dir / "conf.d" / "50-notifications-off.conf"
    off.write_text("[plugin.notifications]\nenabled = false\n")
    d.send_signal(signal.SIGHUP)
    assert s.read_to_eof(timeout=15) and "service stopping" in s.comments, s.comments
    s.close()
    d.wait_for_log("reload done: 0 started, 1 stopped", timeout=15)
    gone = Sse(d.port, token=token, last_event_id=ev1["id"])
    assert gone.status == 404, gone.status
    gone.close()

    off.unlink()
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("reload done: 1 started", timeout=15)
    s = resume(d, token, ev1["id"])
    ev2 = s.next_event(timeout=10)
    assert ev2 is not None and is_broadcast(bid2)(ev2), (ev2, s.comments)
    assert s.next_event(timeout=1) is None and s.events == [ev2], s.events
    s.close()


def test_a_stream_ends_when_its_token_expires(evhostd, tmp_path, unique_name, build_dir):
    """A token is good for exp plus 30 s of leeway; a stream it opened lasted
    until the client left, so an expired token (or one of a key rotated out
    since) kept receiving the user's notifications."""
    config = notif_config(tmp_path, unique_name, build_dir)
    d = evhostd(config, brokers="embedded")
    a_id, _, a_token = new_user(d, "Erin")
    secret = (tmp_path / "jwt.key").read_bytes().rstrip(b"\n")
    lasting = open_stream(d, a_token)
    # Accepted now, within the leeway; past it two seconds later.
    s = open_stream(d, lib.sign_token(secret, a_id, ttl=-28))
    t0 = time.monotonic()
    assert s.read_to_eof(timeout=10), s.comments
    assert "token expired" in s.comments and time.monotonic() - t0 < 6
    s.close()
    d.wait_for_log(f"GET {STREAM}: event stream ended (token expired)")
    # A stream of a token still good is not touched (its welcome may come).
    while lasting.next_event(timeout=1) is not None:
        pass
    assert not lasting.eof, lasting.comments
    lasting.close()


def test_a_stream_ends_when_token_ttl_max_is_lowered_below_its_token(evhostd, tmp_path,
                                                                       unique_name, build_dir):
    """Lowering [auth] token_ttl_max refuses the tokens signed to live longer
    at once (configuration.md): the next request with one was refused, but
    its open stream went on until the token's exp. Checked again every 5 s
    with the rest."""
    config = notif_config(tmp_path, unique_name, build_dir)
    d = evhostd(config, brokers="embedded")
    _, _, a_token = new_user(d, "Ida")  # user.so signs for an hour
    s = open_stream(d, a_token)
    (d.config_dir / "conf.d" / "90-auth.conf").write_text("[auth]\ntoken_ttl_max = 10m\n")
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("reload done")
    assert Sse(d.port, token=a_token).status == 401
    assert s.read_to_eof(timeout=15), s.comments
    assert "token no longer valid" in s.comments, s.comments
    s.close()
    d.wait_for_log(f"GET {STREAM}: event stream ended (token no longer valid)")


def test_a_stream_ends_when_its_key_is_taken_out(evhostd, tmp_path, unique_name, build_dir):
    """A reload that took the token's key out (a leaked key's remedy: a new
    jwt_secret_file and no previous one) refused the next request with the
    token, but its open stream went on receiving the user's notifications
    until the token's exp. The stream's token is checked again with the keys
    in force every 5 s."""
    config = notif_config(tmp_path, unique_name, build_dir)
    d = evhostd(config, brokers="embedded")
    _, _, a_token = new_user(d, "Ida")
    s = open_stream(d, a_token)
    new_key = tmp_path / "jwt.new.key"
    new_key.write_text(secrets.token_urlsafe(48))
    (d.config_dir / "conf.d" / "90-auth.conf").write_text(
        f"[auth]\njwt_secret_file = {new_key}\n")
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("reload done")
    assert Sse(d.port, token=a_token).status == 401
    t0 = time.monotonic()
    assert s.read_to_eof(timeout=15), s.comments
    assert "token no longer valid" in s.comments and time.monotonic() - t0 < 8, s.comments
    s.close()
    d.wait_for_log(f"GET {STREAM}: event stream ended (token no longer valid)")
    # A token of the key in force streams (and is checked again unharmed).
    _, _, b_token = new_user(d, "Jon")
    b = open_stream(d, b_token)
    deadline = time.monotonic() + 7
    while time.monotonic() < deadline:
        b.next_event(timeout=1)
    assert not b.eof, b.comments
    b.close()


def test_a_stream_ends_when_its_user_signs_out(evhostd, tmp_path, unique_name, build_dir):
    """A stream outlived a sign-out: a token signed out (a logout, a new
    password) kept receiving the user's notifications until it expired."""
    config = notif_config(tmp_path, unique_name, build_dir)
    d = evhostd(config, brokers="embedded")
    _, _, a_token = new_user(d, "Fay")
    _, _, b_token = new_user(d, "Gus")
    a_stream, b_stream = open_stream(d, a_token), open_stream(d, b_token)
    r = d.post("/auth/logout", headers={"Authorization": f"Bearer {a_token}"})
    assert r.status_code == 204, r.text
    t0 = time.monotonic()
    assert a_stream.read_to_eof(timeout=10), a_stream.comments
    assert "token revoked" in a_stream.comments and time.monotonic() - t0 < 6
    a_stream.close()
    d.wait_for_log(f"GET {STREAM}: event stream ended (token revoked)")
    assert Sse(d.port, token=a_token).status == 401
    # Another user's stream is not touched.
    while b_stream.next_event(timeout=1) is not None:
        pass
    assert not b_stream.eof, b_stream.comments
    b_stream.close()


def test_a_signed_out_stream_gets_no_event_published_after(evhostd, tmp_path, unique_name,
                                                           build_dir):
    """The token was asked about only before a stream waited (up to half a
    second): an event published right after a sign-out still reached the
    signed-out stream."""
    config = notif_config(tmp_path, unique_name, build_dir)
    d = evhostd(config, brokers="embedded")
    admin = login(d, ADMIN_EMAIL, ADMIN_PASSWORD)
    streams = []
    for name in ("Hal", "Ida"):
        _, _, token = new_user(d, name)
        streams.append((open_stream(d, token), token))
    time.sleep(1)  # the welcome mails' events, if any, have come
    for s, _ in streams:
        while s.next_event(timeout=0.5) is not None:
            pass
    for _ in range(3):
        before = [len(s.events) for s, _ in streams]
        for s, token in streams:
            r = d.post("/auth/logout", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 204, r.text
        r = d.post("/notifications/broadcast", json={"subject": "After", "message": "x"},
                   headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 202, r.text
        bid = r.json()["broadcast_id"]
        for (s, _), n in zip(streams, before):
            assert s.read_to_eof(timeout=10), s.comments
            assert "token revoked" in s.comments
            assert not any(is_broadcast(bid)(e) for e in s.events[n:]), s.events[n:]
            s.close()
        streams = []
        for name in ("Kim", "Lou"):
            _, _, token = new_user(d, name)
            streams.append((open_stream(d, token), token))
        time.sleep(1)
        for s, _ in streams:
            while s.next_event(timeout=0.5) is not None:
                pass
    for s, _ in streams:
        s.close()


def test_a_quiet_stream_gets_a_keepalive_comment_and_stays_open(evhostd, tmp_path, unique_name,
                                                                build_dir):
    """docs/services.md: a `: keepalive` comment after 15 s of silence, so
    that a proxy's idle timeout does not close a quiet stream; the stream
    goes on carrying events after it."""
    config = notif_config(tmp_path, unique_name, build_dir)
    d = evhostd(config, brokers="embedded")
    admin = login(d, ADMIN_EMAIL, ADMIN_PASSWORD)
    a_id, _, a_token = new_user(d, "Max")
    s = open_stream(d, a_token)
    t0 = time.monotonic()
    # Events (the welcome mail's) may come first; then silence.
    while "keepalive" not in s.comments and time.monotonic() - t0 < 25:
        s.next_event(timeout=1)
    waited = time.monotonic() - t0
    assert "keepalive" in s.comments and not s.eof, (s.comments, s.events, s.eof)
    assert waited >= 14, f"a keepalive after {waited:.1f} s, not after 15 s of silence"
    expect_broadcast(d, admin, s, "Still there", a_id)
    s.close()


def test_a_client_that_stopped_reading_gets_only_whole_events(evhostd, tmp_path, unique_name,
                                                              build_dir):
    # A client that never reads: once the socket's buffers are full, a write
    # to it waits out [http] request_timeout, and civetweb then returns a
    # short count. That was taken for the whole frame: the stream went on,
    # or wrote its ": dropped: client too slow" comment right after half an
    # event, which an EventSource would take as the event's broken rest. Now
    # the stream ends there: every event received is whole.
    conf = notif_config(tmp_path, unique_name, build_dir)
    conf["http"]["request_timeout"] = "1s"
    d = evhostd(conf)
    admin = login(d, ADMIN_EMAIL, ADMIN_PASSWORD)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", d.port))
    sock.sendall((f"GET {STREAM} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Authorization: Bearer {admin}\r\n\r\n").encode())
    time.sleep(0.5)
    session, filler = requests.Session(), "z" * 900
    # Up to about 3 MB of events, more than loopback's buffers hold; no more
    # once the stream has ended (it does after a few hundred: 50 s of posts
    # under ThreadSanitizer went on for nothing).
    for i in range(2600):
        r = session.post(d.url + "/notifications/broadcast",
                         json={"subject": f"s{i} {filler}", "message": "m"},
                         headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        assert r.status_code == 202, r.text
        if i % 100 == 99 and "event stream ended" in d.log_text():
            break
    lib.wait_until(lambda: "event stream ended" in d.log_text() or None, timeout=60,
                   message="the stream dropped")
    sock.settimeout(5)
    data = b""
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    sock.close()
    body = data.split(b"\r\n\r\n", 1)[1]
    blocks = body.split(b"\n\n")
    tail = blocks.pop()  # what follows the last blank line: nothing, or a frame cut short
    assert not tail.startswith(b":"), tail[-200:]
    events = 0
    for block in blocks:
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                json.loads(line[6:])  # whole
                events += 1
    assert 100 < events < 2600, events
    assert d.get("/healthz").status_code == 200


def test_max_streams_must_leave_a_worker_free(evhostd):
    r = evhostd.run(["--check-config"], config={"http": {"threads": 4, "max_streams": 4}})
    assert r.returncode != 0
    lines = [l for l in (r.stdout + r.stderr).splitlines() if "max_streams" in l]
    assert lines and "max_streams (4) must be below threads (4)" in lines[0]
    assert "evhost.conf:" in lines[0]  # file:line
    r = evhostd.run(["--check-config"], config={"http": {"max_streams": 0}})
    assert r.returncode != 0 and "max_streams" in r.stdout + r.stderr
    r = evhostd.run(["--check-config"], config={"http": {"threads": 4, "max_streams": 3}})
    assert r.returncode == 0, r.stdout + r.stderr


def test_welcome_mail_of_a_user_created_later_reaches_their_stream(evhostd, tmp_path,
                                                                   unique_name, build_dir,
                                                                   kafka_bootstrap):
    config = notif_config(tmp_path, unique_name, build_dir)
    del config["plugin.user"]  # the user events come straight from Kafka here
    d = evhostd(config, brokers=kafka_bootstrap)
    secret = (tmp_path / "jwt.key").read_bytes()
    uid, other = str(uuid.uuid4()), str(uuid.uuid4())
    addr = f"dora.{uid[:8]}@example.com"

    # Streams open before the user exists: the channel is just the token's subject.
    s = open_stream(d, lib.sign_token(secret, uid))
    s_other = open_stream(d, lib.sign_token(secret, other))
    lib.kafka_produce(config["plugin.notifications"]["topic.user_created"],
                      {"id": uid, "email": addr, "name": "Dora"}, key=uid, brokers=kafka_bootstrap)

    ev = s.wait_for(lambda e: e.get("event") == "notification", timeout=60)
    item = json.loads(ev["data"])
    assert item["template"] == "welcome" and item["status"] == "sent"
    assert item["user_id"] == uid and item["recipient"] == addr
    assert "subject" not in item and item["attempts"] == 1
    # Nobody else hears about it.
    assert s_other.next_event(timeout=2) is None and s_other.events == []
    s.close()
    s_other.close()


def test_welcome_mail_parked_for_a_redrive_is_streamed_as_dead_lettered(evhostd, tmp_path,
                                                                        unique_name, build_dir,
                                                                        kafka_bootstrap):
    # No mail server where the plugin sends: every attempt fails for a reason
    # that may pass, and at the plugin's last one the mail waits for a redrive.
    config = notif_config(tmp_path, unique_name, build_dir)
    del config["plugin.user"]
    config["plugin.notifications"].update({
        "transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{lib.free_port()}",
        "retry.max_attempts": 2, "retry.backoff_ms": 100, "retry.backoff_max_ms": 200})
    del config["plugin.notifications"]["maildir"]
    d = evhostd(config, brokers=kafka_bootstrap)
    uid = str(uuid.uuid4())
    s = open_stream(d, lib.sign_token((tmp_path / "jwt.key").read_bytes(), uid))
    lib.kafka_produce(config["plugin.notifications"]["topic.user_created"],
                      {"id": uid, "email": f"eve.{uid[:8]}@example.com", "name": "Eve"},
                      key=uid, brokers=kafka_bootstrap)

    ev = s.wait_for(lambda e: e.get("event") == "notification", timeout=60)
    item = json.loads(ev["data"])
    assert item["status"] == "dead_lettered" and item["attempts"] == 2, item
    assert item["user_id"] == uid and item["template"] == "welcome"
    # Nothing was pushed for the first attempt ("retrying" is never streamed).
    assert [e for e in s.events if e.get("event") == "notification"] == [ev]
    s.close()


def stream_ended(d, rid):
    """Whether the log has the end of the stream of request id `rid`."""
    return any("event stream ended" in line and f"request_id={rid} " in line
               for line in d.log_text().splitlines())


def send_queue(d, client_port):
    """Bytes the daemon's socket of the connection from `client_port` has
    not had taken by the client yet (tx_queue in /proc/PID/net/tcp)."""
    for line in (Path(f"/proc/{d.proc.pid}/net/tcp").read_text().splitlines()[1:]
                 + Path(f"/proc/{d.proc.pid}/net/tcp6").read_text().splitlines()[1:]):
        f = line.split()
        if (int(f[1].rsplit(":", 1)[1], 16) == d.port
                and int(f[2].rsplit(":", 1)[1], 16) == client_port):
            return int(f[4].split(":")[0], 16)
    raise AssertionError(f"no connection from port {client_port}")


def stall_a_stream(d, token, settle=0.0):
    """A stream whose client never reads, and events published to it until
    the worker serving it waits in a write, then 20 more, which wait in its
    queue. The client's small receive buffer and segments (TCP_MAXSEG 536)
    keep what the daemon's send buffer grows to at a few hundred KB. Events
    go out ten at a time, each ten once a second stream of the channel, read
    all along, got them: a burst of 64 would fill the queue and drop the
    stream before its writes ever waited. With `settle` (seconds), the send
    queue must also take nothing more for that long after the batches that
    found the worker waiting: batches a tenth of a second apart (a fast
    broker) can find it waiting only until the client's kernel makes room.
    Returns (socket, request id, events published)."""
    rid = f"stalled-{uuid.uuid4().hex[:12]}"
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.connect(("127.0.0.1", d.port))
    sock.sendall((f"GET {STREAM} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: {rid}\r\n"
                  f"Authorization: Bearer {token}\r\n\r\n").encode())
    reader = open_stream(d, token)
    session, filler = requests.Session(), "z" * 900

    def publish(n):
        for i in range(n):
            r = session.post(d.url + "/notifications/broadcast",
                             json={"subject": f"s{i} {filler}", "message": "m"},
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert r.status_code == 202, r.text
        reader.wait_for(is_broadcast(r.json()["broadcast_id"]), timeout=30)

    def settled():
        until = time.monotonic() + settle
        while time.monotonic() < until:
            time.sleep(0.1)
            if send_queue(d, sock.getsockname()[1]) != queued:
                return False  # the next batch's growth counts it
        return True

    published, queued, growth = 0, send_queue(d, sock.getsockname()[1]), []
    for _ in range(200):  # 2000 events at most: megabytes
        publish(10)
        published += 10
        now = send_queue(d, sock.getsockname()[1])
        growth.append(now - queued)
        queued = now
        if (queued > 0 and growth[-1] < 1000 and len(growth) > 1 and growth[-2] < 1000
                and settled()):
            break  # twice 10 events and the send queue did not take one more: waiting
    else:
        raise AssertionError(f"the stream's writes never waited: {growth}")
    publish(20)
    reader.close()
    session.close()
    assert not stream_ended(d, rid), d.log_tail()
    return sock, rid, published + 20


@pytest.mark.parametrize("plugin_off_first", [False, True], ids=["open", "closed-by-reload"])
def test_sigterm_cuts_a_stream_whose_client_stopped_reading(evhostd, tmp_path, unique_name,
                                                             build_dir, plugin_off_first):
    # A stream whose worker waits in a write to a client that stopped
    # reading. SIGTERM gives streams a second, then went on waiting for
    # that worker: until the write timed out ([http] request_timeout) or
    # [host] stop_timeout passed, a minute here, with every other part of
    # the stop (consumers, outboxes) behind it. Now its connection is cut
    # after the second, and the stop goes on; also when a reload turned
    # its plugin off before (the stream closed, its worker still writing:
    # the main thread's look between signals may cut it first, a second
    # after the close; test_stream.c's test_stop_cuts_a_stream_stuck_writing
    # holds the stop's cut of a closed stream alone).
    conf = notif_config(tmp_path, unique_name, build_dir)
    # (the stall's connection for its batches kept between them however slow)
    conf["http"].update(request_timeout="10m", keep_alive_timeout="10s")
    conf["host"] = {"stop_timeout": "60s"}
    d = evhostd(conf)
    admin = login(d, ADMIN_EMAIL, ADMIN_PASSWORD)
    sock, rid, published = stall_a_stream(d, admin)
    if plugin_off_first:
        (d.config_dir / "conf.d" / "50-off.conf").write_text(
            "[plugin.notifications]\nenabled = false\n")
        d.send_signal(signal.SIGHUP)
        d.wait_for_log("reload done: 0 started, 1 stopped", timeout=15)

    assert d.stop(timeout=30) == 0, d.log_tail()
    log = d.log_text()
    if not plugin_off_first:
        assert "1 event stream(s) still writing after 1000 ms" in log, d.log_tail()
        assert "1 of their connections cut" in log
    assert ("event stream ended (a write failed: the client left or stopped reading) "
            f"(request_id={rid}") in log
    # What the client got before the cut is whole events, then the end.
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(1 << 20):
        data += chunk
    sock.close()
    blocks = data.split(b"\r\n\r\n", 1)[1].split(b"\n\n")
    blocks.pop()  # nothing, or the frame the cut cut short
    events = [b for b in blocks if b.startswith(b"id: ")]
    assert 0 < len(events) < published, (len(events), published)  # the writes waited
    for block in events:
        json.loads(block.split(b"\ndata: ", 1)[1])


def sse_metrics(d):
    """The event streams' series on /metrics: {name or (name, plugin): value}."""
    r = requests.get(d.url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    out = {}
    for m in re.finditer(r'^(evhost_sse_streams\w*)(?:\{plugin="([^"]*)"\})? (\S+)$', r.text,
                         re.M):
        out[(m.group(1), m.group(2)) if m.group(2) is not None else m.group(1)] = \
            float(m.group(3))
    return out


def test_open_streams_are_on_metrics_per_plugin(evhostd, tmp_path, unique_name, build_dir):
    """There was no figure of the open streams: how close max_streams was
    could not be seen, nor which plugin held them."""
    d = evhostd(notif_config(tmp_path, unique_name, build_dir), brokers="embedded")
    _, _, token = new_user(d, "Nia")
    m = sse_metrics(d)
    assert m[("evhost_sse_streams", "notifications")] == 0, m
    assert m[("evhost_sse_streams", "user")] == 0, m
    assert m["evhost_sse_streams_closing"] == 0 and m["evhost_sse_streams_max"] == MAX_STREAMS
    a, b = open_stream(d, token), open_stream(d, token)
    m = sse_metrics(d)
    assert m[("evhost_sse_streams", "notifications")] == 2, m
    assert m[("evhost_sse_streams", "user")] == 0, m
    a.close()
    lib.wait_until(lambda: sse_metrics(d)[("evhost_sse_streams", "notifications")] == 1 or None,
                   timeout=10, interval=0.2, message="the departed client's stream gone")
    b.close()


def test_a_stream_a_reload_closed_gives_up_its_place_when_its_client_stopped_reading(
        evhostd, tmp_path, unique_name, build_dir):
    # A reload restarts the plugin while the worker of one of its streams
    # waits in a write to a client that stopped reading. The stream is
    # closed, but it kept its place under max_streams until that write gave
    # up: [http] request_timeout (10 s by default, up to an hour; restarted
    # by every byte a trickling client takes). Meanwhile every new client
    # was refused 503, which a browser's EventSource does not retry. Now a
    # new stream that finds no place cuts the connection of one closed more
    # than a second ago, and takes its place; else the main thread's look
    # between signals cuts it a second after the close, whichever comes
    # first (test_stream.c's test_a_closed_stream_stuck_writing_gives_up_its_place
    # holds the new stream's cut alone).
    conf = notif_config(tmp_path, unique_name, build_dir)
    conf["http"].update(request_timeout="10m", keep_alive_timeout="10s")
    d = evhostd(conf)
    admin = login(d, ADMIN_EMAIL, ADMIN_PASSWORD)
    sock, rid, _ = stall_a_stream(d, admin)
    (d.config_dir / "conf.d" / "50-restart.conf").write_text(
        f"[plugin.notifications]\ngroup = {unique_name('g2')}\n")
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("reload done", timeout=30)
    m = sse_metrics(d)
    assert m["evhost_sse_streams_closing"] <= 1 and m["evhost_sse_streams_max"] == MAX_STREAMS, m
    assert m[("evhost_sse_streams", "notifications")] == 0, m

    # Both places: the one free, and the stuck stream's (10 minutes before).
    streams = [resume(d, admin, timeout=15) for _ in range(MAX_STREAMS)]
    lib.wait_until(lambda: stream_ended(d, rid) or None, timeout=10,
                   message="the stuck stream's end")
    assert ("event stream ended (a write failed: the client left or stopped reading) "
            f"(request_id={rid}") in d.log_text()
    m = sse_metrics(d)
    assert m["evhost_sse_streams_closing"] == 0, m
    assert m[("evhost_sse_streams", "notifications")] == MAX_STREAMS, m
    # The cut client sees its connection end.
    sock.settimeout(10)
    while sock.recv(1 << 20):
        pass
    sock.close()
    # The new streams carry events.
    r = d.post("/notifications/broadcast", json={"subject": "After", "message": "x"},
               headers={"Authorization": f"Bearer {admin}"})
    assert r.status_code == 202, r.text
    for s in streams:
        s.wait_for(is_broadcast(r.json()["broadcast_id"]), timeout=30)
        s.close()


def test_a_closed_stream_whose_client_stopped_reading_lets_go_of_its_worker(
        evhostd, tmp_path, unique_name, build_dir):
    # A reload turns the plugin off while the worker of one of its streams
    # waits in a write to a client that stopped reading. The stream was
    # closed, but its connection was cut only when a new stream found the
    # hub full: with none, the worker went on waiting for [http]
    # request_timeout (restarted by every byte a trickling client takes),
    # one HTTP worker less for as long. Now the main thread cuts it about a
    # second after the close, no new stream needed. (The same holds for a
    # stream dropped as too slow: closed the same way.)
    conf = notif_config(tmp_path, unique_name, build_dir)
    # The stall's batches reach the streams in a tenth of a second, not half
    # of one (librdkafka's fetch.wait.max.ms on the embedded broker), and
    # its connection for them is kept between batches however slow.
    conf["kafka"] = {"rdkafka.fetch.wait.max.ms": "10"}
    conf["http"].update(request_timeout="10m", keep_alive_timeout="10s")
    # Under the packaged unit's watchdog interval: the main thread slept
    # half of it (15 s) between its looks.
    d = evhostd(conf, brokers="embedded", env={"WATCHDOG_USEC": "30000000"})
    admin = login(d, ADMIN_EMAIL, ADMIN_PASSWORD)
    sock, rid, _ = stall_a_stream(d, admin, settle=1.5)
    (d.config_dir / "conf.d" / "50-off.conf").write_text(
        "[plugin.notifications]\nenabled = false\n")
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("reload done: 0 started, 1 stopped", timeout=15)

    lib.wait_until(lambda: stream_ended(d, rid) or None, timeout=10,
                   message="the closed stream's end, with no new stream opened")
    assert ("event stream ended (a write failed: the client left or stopped reading) "
            f"(request_id={rid}") in d.log_text()
    assert sse_metrics(d)["evhost_sse_streams_closing"] == 0
    # The client sees its connection end, after what was sent before the cut.
    sock.settimeout(10)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    sock.close()


def _netns_usable():
    """Why this machine cannot run a daemon in a network namespace of its
    own (unshare -n: root; ip: iproute2), or None when it can."""
    if not shutil.which("ip") or not shutil.which("nsenter"):
        return "no ip (iproute2) or nsenter (util-linux)"
    r = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    return None if r.returncode == 0 else f"unshare -n: {r.stderr.strip()}"


class NetnsDaemon(lib.Daemon):
    """evhostd alone in a network namespace of its own, loopback up: a route
    added there drops its packets to one address and no other process's."""

    def command(self):
        return ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                *super().command()]

    def ns_run(self, *argv):
        subprocess.run(["nsenter", f"--net=/proc/{self.proc.pid}/ns/net", *argv], check=True)


def in_netns(pid):
    """A thread initializer: the thread's sockets are in process pid's
    network namespace (setns affects the calling thread alone), once it
    has one of its own (unshare may not have made it yet)."""
    libc = ctypes.CDLL(None, use_errno=True)
    lib.wait_until(lambda: os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net"),
                   timeout=10, interval=0.01, message=f"process {pid}'s network namespace")
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


def test_a_client_gone_without_a_word_lets_go_of_its_stream(evhostd, tmp_path, unique_name,
                                                              build_dir):
    # A client whose network is lost sends no FIN and no reset: the daemon
    # learns of it only when what it sends goes unacknowledged. The kernel
    # retransmits for about 15 minutes, during which the stream held its
    # place under max_streams and its worker; the socket's TCP_USER_TIMEOUT
    # ([http] stream_unacked_timeout: 60 s by default, 4 s here) ends it
    # sooner. The loss: every packet to the client's address (127.0.0.2)
    # dropped by a blackhole route, in a namespace of the daemon's own; a
    # broadcast right after gives the stream something to send, not to be
    # acknowledged. (The default, 60 s: test_config.c; the hub giving a
    # stream's socket its value: test_stream.c.)
    why = _netns_usable()
    if why:
        pytest.skip(f"needs a network namespace of its own: {why}")
    config = notif_config(tmp_path, unique_name, build_dir)
    config["http"]["stream_unacked_timeout"] = "4s"
    config_dir, state_dir, port = evhostd.write_config(config, brokers="embedded")
    d = NetnsDaemon(evhostd.binary, config_dir, state_dir, port, env=dict(os.environ))
    evhostd.daemons.append(d)  # stopped and checked (exit code, sanitizers) at teardown
    d.start()

    def scenario():
        d.wait_healthy(lib.health_timeout())
        admin = login(d, ADMIN_EMAIL, ADMIN_PASSWORD)
        _, _, token = new_user(d, "Gone")
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {STREAM} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Authorization: Bearer {token}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 "), "the stream's head"
        lib.wait_until(lambda: sse_metrics(d)[("evhost_sse_streams", "notifications")] == 1,
                       timeout=10, message="the stream counted open")
        d.ns_run("ip", "route", "add", "blackhole", "127.0.0.2/32", "table", "local")
        t0 = time.monotonic()
        broadcast(d, admin, "to nobody who can hear")
        lib.wait_until(lambda: sse_metrics(d)[("evhost_sse_streams", "notifications")] == 0,
                       timeout=60, interval=0.5,
                       message="the stream of the unreachable client let go")
        gone = time.monotonic() - t0
        sock.close()
        return gone
    with ThreadPoolExecutor(1, initializer=in_netns, initargs=(d.proc.pid,)) as pool:
        gone = pool.submit(scenario).result(timeout=300)
    print(f"the unreachable client's stream ended {gone:.1f} s after the loss")
    # Not before the timeout: the loss, not something else, ended it.
    assert gone >= 4, gone
    assert ("event stream ended (client unreachable: what it was sent went unacknowledged "
            "for [http] stream_unacked_timeout (4000 ms))") in d.log_text()
