"""notifications.so against the real daemon, real Kafka and a real SMTP server:
welcome mails for users created through user.so, Maildir delivery, no second
mail for a redelivered event, admin broadcasts to every recipient, the delivery
log (GET /notifications) with its retrying/failed states, SMTP AUTH, STARTTLS
and smtps:// with a private CA (smtp_ca_file), setup trouble (an untrusted
certificate, a wrong password, no STARTTLS) dead-lettered rather than failed,
and poison messages going to the dead-letter topic without stopping the ones
after them."""

import base64
import collections
import contextlib
import datetime
import email
import email.header
import email.utils
import json
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest

import evhost_testlib as lib

TEMPLATES = lib.TEMPLATES
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "admin-password-1"
PASSWORD = "correct horse battery"


# ------------------------------------------------------------------ helpers


def decoded(value):
    """A header value with RFC 2047 encoded-words decoded."""
    return str(email.header.make_header(email.header.decode_header(value or "")))


def token_subject(token):
    """The sub claim of a JWT (not verified: the daemon's own)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]


def subject(msg):
    return decoded(msg.get("Subject"))


def to_addr(msg):
    """(display name, address) of the To header; the name decoded after
    splitting, since a decoded name may itself contain '<' or ','."""
    name, addr = email.utils.parseaddr(msg.get("To"))
    return decoded(name), addr


def part(msg, ctype):
    for p in msg.walk():
        if p.get_content_type() == ctype:
            return p.get_payload(decode=True).decode(p.get_content_charset() or "utf-8")
    return None


class Env:
    """One daemon with user.so and notifications.so on their own topics."""

    def __init__(self, evhostd, tmp_path, unique_name, kafka_bootstrap, notif=None, user=True,
                 state_dir=None, extra=None, env=None, create_topics=False):
        self.topics = {k: unique_name(k) for k in ("created", "updated", "deleted", "broadcast")}
        if create_topics:  # else the first event's topic is seen at a metadata refresh
            lib.create_topics(list(self.topics.values()), brokers=kafka_bootstrap)
        self.tmp = tmp_path
        secret = tmp_path / "jwt.key"
        secret.write_text(secrets.token_urlsafe(48))
        admin_pw = tmp_path / "admin.password"
        admin_pw.write_text(ADMIN_PASSWORD + "\n")
        notif_conf = {
            **lib.notifications_topics(self.topics),
            "templates_dir": str(TEMPLATES),
            "group": unique_name("g"),
            "from": "Evhost Tests <noreply@example.org>",
            "retry.max_attempts": 4,
            "retry.backoff_ms": 100,
            "retry.backoff_max_ms": 400,
        }
        notif_conf.update(notif or {})
        config = {"auth": {"jwt_secret_file": str(secret)}, "plugin.notifications": notif_conf}
        if user:
            config["plugin.user"] = {
                "topic.created": self.topics["created"],
                "topic.updated": self.topics["updated"],
                "topic.deleted": self.topics["deleted"],
                "admin_email": ADMIN_EMAIL,
                "admin_password_file": str(admin_pw),
                "argon2_opslimit": "min",
                "argon2_memlimit": "min",
            }
        config.update(extra or {})  # more sections, e.g. {"kafka": {...}}
        self.config = config
        self.d = evhostd(config, brokers=kafka_bootstrap, state_dir=state_dir, env=env)
        self.brokers = kafka_bootstrap

    def create_user(self, name, addr):
        r = self.d.post("/users", json={"name": name, "email": addr, "password": PASSWORD})
        assert r.status_code == 201, r.text
        return r.json()

    def token(self, addr=ADMIN_EMAIL, password=ADMIN_PASSWORD):
        r = self.d.post("/auth/login", json={"email": addr, "password": password})
        assert r.status_code == 200, r.text
        return r.json()["token"]

    def auth(self, token=None):
        return {"Authorization": f"Bearer {token or self.token()}"}

    def log(self, token=None, **params):
        r = self.d.get("/notifications", params=params, headers=self.auth(token))
        assert r.status_code == 200, r.text
        return r.json()

    def log_entry(self, event_id, token=None, status=None, timeout=20):
        token = token or self.token()

        def find():
            for item in self.log(token, limit=100)["items"]:
                if item["event_id"] == event_id and (status is None or item["status"] == status):
                    return item
            return None
        return lib.wait_until(find, timeout=timeout,
                              message=f"log entry {event_id} with status {status}")

    def created(self, event_id, user_id="u-md"):
        """user.created for a new address, produced to the topic as user.so
        would; returns the address."""
        addr = f"md.{uuid.uuid4().hex[:8]}@example.com"
        lib.kafka_produce(self.topics["created"], {"id": user_id, "name": "M", "email": addr},
                          key=user_id, brokers=self.brokers,
                          headers={"ce_id": event_id, "ce_type": "user.created"})
        return addr

    def entry_once(self, event_id, status, attempts=1, timeout=30):
        """The log entry of `event_id` once it is `status` after `attempts`
        or more; GET /notifications without a token (list_role = "")."""
        return lib.wait_until(
            lambda: next((i for i in self.d.get("/notifications").json()["items"]
                          if i["event_id"] == event_id and i["status"] == status
                          and i["attempts"] >= attempts), None),
            timeout=timeout, message=f"{event_id} {status} after {attempts} attempt(s)")

    def db(self):
        return sqlite3.connect(str(Path(self.d.state_dir) / "notifications.db"), timeout=10)

    def recipients(self):
        con = self.db()
        try:
            return {r[0]: (r[1], r[2]) for r in
                    con.execute("SELECT user_id, email, name FROM recipients")}
        finally:
            con.close()


class RawSmtp:
    """A hand-written SMTP server on 127.0.0.1 that misbehaves on cue, where
    aiosmtpd (SmtpSink) cannot: `greet = False` accepts connections but never
    says a word; `late = (seconds, reply)` answers the end of the first
    message's data only after `seconds`, with `reply`, then goes on as usual
    (`late = (None, None)`: never answers on that connection again).
    It keeps what each connection was told (`conns`: a list of command
    lists), the messages it accepted (`accepted`: (connection index,
    recipient) pairs) and every message whose data ended, answered or not
    (`data`: (connection index, recipient, header lines) triples).
    `replies` {verb: [reply, ...]} answers the next uses of a command
    ("GREET": the greeting) with those replies, one each, in turn (None: no
    answer, ever, on that connection); then as usual.
    `bye` (a reply line): said after each accepted message, unasked, before
    hanging up, as a server whose idle timeout ran out does. `slow`: seconds
    it takes over each message before it accepts it.
    Every wait is bounded and every thread ends by itself
    (a silent client is dropped after 30 s)."""

    def __init__(self, greet=True, late=None, replies=None, bye=None, slow=0):
        self.slow = slow
        self.greet = greet
        self.late = late
        self.replies = replies or {}
        self.bye = bye
        self.conns = []
        self.accepted = []
        self.data = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self):
        self._stop.set()
        self._sock.close()

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                self.conns.append([])
                i = len(self.conns) - 1
            threading.Thread(target=self._serve, args=(c, i), daemon=True).start()

    def _said(self, i, line):
        with self._lock:
            self.conns[i].append(line)

    def _scripted(self, verb):
        """(True, reply) when `replies` has one left for `verb`."""
        with self._lock:
            queue = self.replies.get(verb)
            return (True, queue.pop(0)) if queue else (False, None)

    def _serve(self, c, i):
        c.settimeout(0.5)
        buf, idle, data, rcpt, mute = b"", 0.0, None, None, False
        try:
            if not self.greet:  # hold the connection, silent, until the client goes
                while not self._stop.is_set() and idle < 30:
                    try:
                        if not c.recv(4096):
                            return
                    except socket.timeout:
                        idle += 0.5
                return
            scripted, reply = self._scripted("GREET")
            mute = scripted and reply is None
            if not mute:
                c.sendall((reply if scripted else "220 raw ESMTP").encode() + b"\r\n")
            while not self._stop.is_set() and idle < 30:
                try:
                    chunk = c.recv(65536)
                except socket.timeout:
                    idle += 0.5
                    continue
                if not chunk:
                    return
                idle, buf = 0.0, buf + chunk
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    if data is not None:
                        if line != b".":
                            data.append(line.decode(errors="replace"))
                            continue
                        with self._lock:
                            self.data.append((i, rcpt, data[:data.index("")]
                                              if "" in data else data))
                        data = None
                        self._said(i, ".")
                        with self._lock:
                            late, self.late = self.late, None
                        if late and late[0] is None:
                            mute = True
                            continue
                        if late:
                            time.sleep(late[0])
                            c.sendall(late[1].encode() + b"\r\n")
                            continue
                        if self.slow:
                            time.sleep(self.slow)
                        with self._lock:
                            self.accepted.append((i, rcpt))
                        c.sendall(b"250 queued\r\n")
                        if self.bye:
                            c.sendall(self.bye.encode() + b"\r\n")
                            return
                        continue
                    text = line.decode(errors="replace")
                    self._said(i, text)
                    if mute:
                        continue
                    verb = text.split(" ")[0].upper()
                    scripted, reply = self._scripted(verb)
                    if scripted:
                        mute = reply is None
                        if not mute:
                            c.sendall(reply.encode() + b"\r\n")
                        continue
                    if verb == "EHLO":
                        c.sendall(b"250-raw\r\n250 8BITMIME\r\n")
                    elif verb == "RCPT":
                        rcpt = text.split("<", 1)[-1].rstrip(">")
                        c.sendall(b"250 ok\r\n")
                    elif verb == "DATA":
                        data = []
                        c.sendall(b"354 go ahead\r\n")
                    elif verb == "QUIT":
                        c.sendall(b"221 bye\r\n")
                        return
                    else:  # HELO, MAIL, RSET, NOOP
                        c.sendall(b"250 ok\r\n")
        except OSError:
            pass
        finally:
            c.close()


def welcome_to(addr):
    return lambda m: m.envelope_to == [addr] and subject(m).startswith("Welcome, ")


# ------------------------------------------------------------- welcome (SMTP)


def test_welcome_mail_via_smtp_greets_user_by_name(evhostd, tmp_path, unique_name,
                                                   kafka_bootstrap, smtp_server):
    # The templates as an editor that writes a byte order mark saved them:
    # the mark is no character of the mail's.
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES, templates)
    for f in ("welcome.subject", "welcome.txt"):
        (templates / f).write_bytes(b"\xef\xbb\xbf" + (TEMPLATES / f).read_bytes())
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
               "templates_dir": str(templates)})
    name = "Zoë Ångström <Zo> & Co"
    addr = f"zoe.{uuid.uuid4().hex[:8]}@example.com"

    started = time.monotonic()
    user = env.create_user(name, addr)
    msg = smtp_server.wait_for(welcome_to(addr), timeout=60)
    elapsed = time.monotonic() - started
    print(f"\nwelcome mail arrived {elapsed * 1000:.0f} ms after POST /users returned 201")

    assert subject(msg) == f"Welcome, {name}!"
    assert msg.tls is False  # plain smtp:// without smtp_starttls
    assert to_addr(msg) == (name, addr)
    assert msg.envelope_from == "noreply@example.org"
    assert email.utils.parseaddr(decoded(msg["From"])) == ("Evhost Tests", "noreply@example.org")
    assert msg["Message-ID"].endswith("@example.org>")
    assert email.utils.parsedate_to_datetime(msg["Date"]) is not None
    assert msg.get_content_type() == "multipart/alternative"
    text = part(msg, "text/plain")
    html = part(msg, "text/html")
    assert text.startswith(f"Hello {name},") and addr in text and user["id"] in text, text[:40]
    # Values are escaped in HTML, not in text.
    assert "Zoë Ångström &lt;Zo&gt; &amp; Co" in html and "<Zo>" not in html

    # The administrator user.so created at start was greeted too.
    smtp_server.wait_for(welcome_to(ADMIN_EMAIL), timeout=30)

    # The first mail includes creating the topic and the consumer finding it;
    # once both exist, the path is outbox -> Kafka -> consumer -> SMTP only.
    second = f"second.{uuid.uuid4().hex[:8]}@example.com"
    started = time.monotonic()
    env.create_user("Second", second)
    smtp_server.wait_for(welcome_to(second), timeout=30)
    print(f"next welcome mail arrived {(time.monotonic() - started) * 1000:.0f} ms after 201")

    # The delivery log says so (admin only).
    assert env.d.get("/notifications").status_code == 401
    entry = env.log(recipient=addr)["items"]
    assert len(entry) == 1
    e = entry[0]
    assert e["recipient"] == addr and e["template"] == "welcome" and e["status"] == "sent"
    assert e["attempts"] == 1 and e["last_error"] is None
    assert e["created_at"].endswith("Z") and e["updated_at"] >= e["created_at"]
    ids = [m["headers"].get("ce_id") for m in
           lib.kafka_consume(env.topics["created"], timeout=15, brokers=kafka_bootstrap)]
    assert e["event_id"] in ids


@pytest.mark.inputs
@pytest.mark.parametrize("written,password,mode", [
    ("s3cret-Passw0rd\n", "s3cret-Passw0rd", 0o600),
    ("s3cret-Passw0rd\r\n", "s3cret-Passw0rd", 0o640),
    # Readable by every local account: used, and said, as the host says of
    # its own secret files.
    ("s3cret-Passw0rd", "s3cret-Passw0rd", 0o644),
    # Only the newline an editor adds goes: blanks are the password's.
    ("s3cret Passw0rd \t\n", "s3cret Passw0rd \t", 0o600),
])
def test_smtp_auth_with_password_file(evhostd, tmp_path, unique_name, kafka_bootstrap, written,
                                      password, mode):
    sink = lib.SmtpSink(auth=("mailer", password)).start()
    try:
        pw = tmp_path / "smtp.password"
        pw.write_bytes(written.encode())
        pw.chmod(mode)
        env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
                  {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{sink.port}",
                   "smtp_user": "mailer", "smtp_password_file": str(pw)})
        addr = f"auth.{uuid.uuid4().hex[:8]}@example.com"
        env.create_user("Authed", addr)
        sink.wait_for(welcome_to(addr), timeout=60)
        assert "Passw0rd" not in env.d.log_text()
        assert NO_AUTH not in env.d.log_text()  # it logged in
        said = [l for l in env.d.log_text().splitlines()
                if "smtp_password_file" in l and "readable by every" in l]
        if mode & 0o004:
            assert len(said) == 1 and (f"smtp_password_file: '{pw}' is readable by every local "
                                       f"account (mode 0644): chmod o-r it") in said[0], said
        else:
            assert not said, said
    finally:
        sink.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return lib.TlsCerts(tmp_path_factory.mktemp("certs"))


def test_welcome_mail_over_starttls_with_auth_and_a_private_ca(evhostd, tmp_path, unique_name,
                                                                kafka_bootstrap, certs):
    # The server takes AUTH only after STARTTLS, with a certificate from a CA
    # that only smtp_ca_file names.
    sink = lib.SmtpSink(auth=("mailer", "s3cret-Passw0rd"), tls="starttls", certs=certs).start()
    try:
        pw = tmp_path / "smtp.password"
        pw.write_text("s3cret-Passw0rd\n")
        env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
                  {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{sink.port}",
                   "smtp_starttls": True, "smtp_ca_file": str(certs.ca_crt),
                   "smtp_user": "mailer", "smtp_password_file": str(pw)})
        addr = f"starttls.{uuid.uuid4().hex[:8]}@example.com"
        env.create_user("Stella", addr)
        assert sink.wait_for(welcome_to(addr), timeout=60).tls
        # Its first EHLO, before STARTTLS, offered no AUTH; the one after did.
        assert NO_AUTH not in env.d.log_text()
    finally:
        sink.stop()


def test_welcome_mail_over_smtps(evhostd, tmp_path, unique_name, kafka_bootstrap, certs):
    sink = lib.SmtpSink(tls="implicit", certs=certs).start()
    try:
        env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
                  {"transport": "smtp", "smtp_url": f"smtps://127.0.0.1:{sink.port}",
                   "smtp_ca_file": str(certs.ca_crt)})
        addr = f"smtps.{uuid.uuid4().hex[:8]}@example.com"
        env.create_user("Simon", addr)
        assert sink.wait_for(welcome_to(addr), timeout=60).tls
    finally:
        sink.stop()


@pytest.mark.inputs
@pytest.mark.parametrize("trouble", ["untrusted certificate", "wrong password", "no STARTTLS",
                                     "STARTTLS required"])
def test_mail_setup_trouble_is_dead_lettered_not_failed(evhostd, tmp_path, unique_name,
                                                        kafka_bootstrap, certs, trouble):
    # What is wrong with the setup, not with the mail, must not lose it: it is
    # retried, then dead-lettered for a redrive once mended.
    pw = tmp_path / "smtp.password"
    pw.write_text("not-the-password\n")
    notif = {"transport": "smtp", "list_role": "", "retry.max_attempts": 2,
             "retry.backoff_ms": 100, "retry.backoff_max_ms": 200, "smtp_timeout_ms": 5000}
    if trouble == "untrusted certificate":
        sink = lib.SmtpSink(tls="implicit", certs=certs).start()
        notif.update(smtp_url=f"smtps://127.0.0.1:{sink.port}",
                     smtp_ca_file=str(certs.other_ca_crt))
        expect = "certificate"
    elif trouble == "wrong password":
        sink = lib.SmtpSink(auth=("mailer", "s3cret-Passw0rd"), tls="starttls",
                            certs=certs).start()
        notif.update(smtp_url=f"smtp://127.0.0.1:{sink.port}", smtp_starttls=True,
                     smtp_ca_file=str(certs.ca_crt), smtp_user="mailer",
                     smtp_password_file=str(pw))
        expect = "Login denied"
    elif trouble == "no STARTTLS":
        sink = lib.SmtpSink().start()
        notif.update(smtp_url=f"smtp://127.0.0.1:{sink.port}", smtp_starttls=True)
        expect = "SSL"
    else:  # the server wants STARTTLS, evhost is not told to use it
        sink = lib.SmtpSink(tls="starttls", certs=certs).start()
        notif.update(smtp_url=f"smtp://127.0.0.1:{sink.port}")
        expect = "530"
    try:
        env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap, notif, user=False)
        addr = f"setup.{uuid.uuid4().hex[:8]}@example.com"
        lib.kafka_produce(env.topics["created"], {"id": "u-s", "name": "S", "email": addr},
                          key="u-s", brokers=kafka_bootstrap,
                          headers={"ce_id": "setup-1", "ce_type": "user.created"})
        entry = lib.wait_until(
            lambda: next((i for i in env.d.get("/notifications").json()["items"]
                          if i["event_id"] == "setup-1" and i["status"] == "dead_lettered"),
                         None), timeout=60, message="a dead_lettered entry")
        assert entry["attempts"] == 2 and expect in entry["last_error"], entry
        letters = lib.kafka_consume(f"{env.topics['created']}.notifications.dlq", count=1,
                                    timeout=30, brokers=kafka_bootstrap)
        assert [m["headers"]["ce_id"] for m in letters] == ["setup-1"]
        assert sink.messages == []
    finally:
        sink.stop()


@pytest.mark.inputs
@pytest.mark.parametrize("line,said", [
    ("topic.broadcast = has space", "topic.broadcast: 'has space' is not a Kafka topic name "
                                    "(1 to 249 of a-z A-Z 0-9 . _ -, not . or ..)"),
    ("topic.user_created = .", "topic.user_created: '.' is not a Kafka topic name"),
    ("smtp_url = smtp://", "smtp_url: names no host (smtp://host:port or smtps://host:port)"),
    ("smtp_url = smtps://mailer:secret@:465", "smtp_url: names no host"),
    ("smtp_url = smtp://x:99999999",
     "smtp_url: has port \"99999999\": a port is a number from 1 to 65535"),
    # A password with a '/' or an '@' not percent-encoded: nothing of it said.
    ("smtp_url = smtp://mailer:secret/x@relay.example:25",
     "smtp_url: has an @ after a / ? or # (not shown: it may hold a password); in a user or "
     "password, write / ? # @ as %2F %3F %23 %40"),
    ("smtp_url = smtps://mailer:p@secret@relay.example",
     "smtp_url: has more than one @ before the host (not shown: it may hold a password)"),
])
def test_topics_and_smtp_url_are_checked_before_the_start(evhostd, line, said):
    """--check-config and a real start refuse the same values, at the
    drop-in's file:line, before notifications.so subscribes or sends."""
    url = "" if line.startswith("smtp_url") else "smtp_url = smtp://127.0.0.1:25\n"
    dropins = {"30-notifications.conf": ("# mail\n[plugin.notifications]\n"
                                         f"templates_dir = {TEMPLATES}\n"
                                         "transport = smtp\n"
                                         f"{line}\n{url}")}
    needle = f"conf.d/30-notifications.conf:5: [plugin.notifications] {said}"
    r = evhostd.run(["--check-config"], dropins=dropins)
    assert r.returncode == 1 and needle in r.stdout, r.stdout
    assert "secret" not in r.stdout
    r = evhostd.run([], dropins=dropins, timeout=30)
    assert r.returncode == 1 and needle in r.stderr, r.stderr
    assert "init failed" not in r.stderr, r.stderr


CLEAR = ("but smtp_url is smtp:// to {host} without smtp_starttls = true: the password would"
         " go out in clear; use smtps:// or set smtp_starttls = true (a login in clear is"
         " allowed only to a loopback address: localhost, 127.0.0.0/8, ::1)")


@pytest.mark.inputs
@pytest.mark.parametrize("keys,said", [
    ({"smtp_url": "smtp://relay.example:25", "smtp_user": "mailer"},
     "smtp_user: is set, " + CLEAR.format(host="relay.example")),
    ({"smtp_url": "smtp://[2001:db8::1]:587", "smtp_user": "mailer"},
     "smtp_user: is set, " + CLEAR.format(host="2001:db8::1")),
    ({"smtp_url": "smtp://127.0.0.2.example:25", "smtp_user": "mailer"},
     "smtp_user: is set, " + CLEAR.format(host="127.0.0.2.example")),
    # Credentials in the URL are sent the same way.
    ({"smtp_url": "smtp://mailer:secret@relay.example"},
     "smtp_url: names a user, " + CLEAR.format(host="relay.example")),
    ({"smtp_url": "smtp://relay.example:25", "smtp_user": "mailer", "smtp_starttls": False},
     "smtp_user: is set, " + CLEAR.format(host="relay.example")),
    # Allowed: over TLS, to this host, or no login at all.
    ({"smtp_url": "smtp://relay.example:587", "smtp_user": "mailer", "smtp_starttls": True},
     None),
    ({"smtp_url": "smtps://relay.example", "smtp_user": "mailer"}, None),
    ({"smtp_url": "smtps://mailer:secret@relay.example"}, None),
    ({"smtp_url": "smtp://127.0.0.1:25", "smtp_user": "mailer"}, None),
    ({"smtp_url": "smtp://127.9.8.7:25", "smtp_user": "mailer"}, None),
    ({"smtp_url": "smtp://LocalHost:25", "smtp_user": "mailer"}, None),
    ({"smtp_url": "smtp://[::1]:25", "smtp_user": "mailer"}, None),
    ({"smtp_url": "smtp://relay.example:25"}, None),
])
def test_a_login_in_clear_is_refused_unless_to_this_host(evhostd, tmp_path, keys, said):
    """smtp_user (or a user in the URL) on smtp:// without STARTTLS would
    send the password in clear (AUTH PLAIN or LOGIN): refused at the key's
    line, unless the server is on a loopback address."""
    (tmp_path / "smtp.password").write_text("pw\n")
    conf = {"transport": "smtp", "templates_dir": str(TEMPLATES), **keys}
    if "smtp_user" in keys:
        conf["smtp_password_file"] = str(tmp_path / "smtp.password")
    r = evhostd.run(["--check-config"], config={"plugin.notifications": conf})
    if said is None:
        assert r.returncode == 0, r.stdout + r.stderr
        return
    assert r.returncode == 1 and "evhost.conf:" in r.stdout, r.stdout
    assert f"[plugin.notifications] {said}" in r.stdout, r.stdout
    assert "secret" not in r.stdout
    r = evhostd.run([], config={"plugin.notifications": conf}, timeout=30)
    assert r.returncode == 1 and said in r.stderr, r.stderr


@pytest.mark.inputs
@pytest.mark.parametrize("key", ["smtp_ca_file", "smtp_password_file"])
def test_unreadable_smtp_file_is_a_configuration_error(evhostd, tmp_path, key):
    # An EVH_CFG_FILE key: --check-config finds it, at its line, and the
    # start stops with the same message before any plugin starts.
    missing = tmp_path / "no-such-file"
    config = {"plugin.notifications": {
        "transport": "smtp", "smtp_url": "smtps://127.0.0.1:9", "smtp_user": "mailer",
        "smtp_password_file": str(tmp_path / "smtp.password"), "templates_dir": str(TEMPLATES)}}
    (tmp_path / "smtp.password").write_text("pw\n")
    config["plugin.notifications"][key] = str(missing)
    needle = (f"[plugin.notifications] {key}: cannot read '{missing}': "
              f"No such file or directory")
    r = evhostd.run(["--check-config"], config=config)
    assert r.returncode == 1 and "evhost.conf:" in r.stdout and needle in r.stdout, r.stdout
    r = evhostd.run([], config=config, timeout=60)
    assert r.returncode == 1 and needle in r.stderr, r.stderr


# ------------------------------------------------------------------ Maildir


def test_maildir_transport_writes_a_file(evhostd, tmp_path, unique_name, kafka_bootstrap):
    box = tmp_path / "mail" / "box"
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "maildir", "maildir": str(box)})
    addr = f"md.{uuid.uuid4().hex[:8]}@example.com"
    env.create_user("Marie Dir", addr)

    def delivered():
        for f in (box / "new").iterdir():
            m = email.message_from_bytes(f.read_bytes())
            if to_addr(m)[1] == addr:
                return f, m
        return None
    f, msg = lib.wait_until(delivered, timeout=60, message=f"a Maildir file for {addr}")
    assert subject(msg) == "Welcome, Marie Dir!"
    assert "Hello Marie Dir," in part(msg, "text/plain")
    assert list((box / "tmp").iterdir()) == []
    assert (box / "cur").is_dir()
    assert f.stat().st_mode & 0o077 == 0  # mail is nobody else's business


def test_a_removed_maildir_is_made_again(evhostd, tmp_path, unique_name, kafka_bootstrap):
    # The whole Maildir removed under the running daemon (a clean-up gone
    # wrong): made again for the next mail, with a warning that says so.
    box = tmp_path / "box"
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "maildir", "maildir": str(box), "list_role": ""}, user=False)
    shutil.rmtree(box)
    env.created("md-1")
    assert env.entry_once("md-1", "sent", timeout=60)["attempts"] == 1
    assert len(list((box / "new").iterdir())) == 1
    assert list((box / "tmp").iterdir()) == [] and (box / "cur").is_dir()
    warning = f"maildir: {box}, or its tmp/ or new/, was removed: made again"
    assert warning in env.d.log_text(), env.d.log_tail()


def test_a_removed_maildir_that_cannot_be_made_again_is_retried(evhostd, tmp_path, unique_name,
                                                               kafka_bootstrap):
    # The Maildir replaced by a link to a place that is gone (a mount that
    # went away): it cannot be made again, which fails the attempt, naming
    # the file; the mail is retried, not failed, and once the link is gone
    # the Maildir is made again and the mail written, once.
    box = tmp_path / "box"
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "maildir", "maildir": str(box), "list_role": "",
               "retry.max_attempts": 50, "retry.backoff_ms": 200, "retry.backoff_max_ms": 500},
              user=False)
    shutil.rmtree(box)
    box.symlink_to(tmp_path / "gone" / "box")
    env.created("md-1")
    retrying = env.entry_once("md-1", "retrying", attempts=2)
    assert retrying["last_error"].startswith(f"maildir: cannot write {box}/tmp/"), retrying
    assert retrying["last_error"].endswith(": No such file or directory"), retrying
    assert "made again" not in env.d.log_text() and not (tmp_path / "gone").exists()
    box.unlink()
    assert env.entry_once("md-1", "sent", timeout=60)["attempts"] > 2
    assert len(list((box / "new").iterdir())) == 1
    assert list((box / "tmp").iterdir()) == [] and (box / "cur").is_dir()
    warning = f"maildir: {box}, or its tmp/ or new/, was removed: made again"
    assert env.d.log_text().count(warning) == 1, env.d.log_tail()


def test_a_mail_not_known_to_be_on_disk_is_taken_back(evhostd, build_dir, tmp_path, unique_name,
                                                     kafka_bootstrap):
    # new/ cannot be synced after the rename (faults.so: its fsync fails with
    # EIO): the mail may not survive a power cut, so it is not counted as
    # written. It is taken out of new/ and tried again, never left twice.
    box = tmp_path / "box"
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "maildir", "maildir": str(box), "list_role": "",
               "retry.max_attempts": 50, "retry.backoff_ms": 100, "retry.backoff_max_ms": 200},
              user=False, env=lib.faults_preloaded(build_dir, fsync_dir=box / "new"))
    env.created("md-1")
    retrying = env.entry_once("md-1", "retrying", attempts=3)
    assert retrying["last_error"].startswith(f"maildir: cannot write {box}/new/"), retrying
    assert retrying["last_error"].endswith(": Input/output error"), retrying
    assert list((box / "new").iterdir()) == [] and list((box / "tmp").iterdir()) == []


@pytest.mark.parametrize("broken", ["tmp", "new"])
def test_a_maildir_that_cannot_be_written_is_retried_not_failed(evhostd, tmp_path, unique_name,
                                                               kafka_bootstrap, broken):
    # The Maildir's tmp/ (the file cannot be made) or new/ (it cannot be
    # moved there) replaced by a file under the running daemon: the setup's
    # trouble, not the mail's. The mail is retried, and written once mended.
    box = tmp_path / "box"
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "maildir", "maildir": str(box), "list_role": "",
               "retry.max_attempts": 50, "retry.backoff_ms": 200, "retry.backoff_max_ms": 500},
              user=False)
    (box / broken).rmdir()
    (box / broken).write_text("")
    env.created("md-1")
    retrying = env.entry_once("md-1", "retrying", attempts=2)
    assert retrying["last_error"].startswith(f"maildir: cannot write {box}/{broken}/"), retrying
    assert retrying["last_error"].endswith(": Not a directory"), retrying
    if broken == "new":
        assert list((box / "tmp").iterdir()) == []  # nothing left behind
    (box / broken).unlink()
    (box / broken).mkdir()
    env.entry_once("md-1", "sent")
    assert len(list((box / "new").iterdir())) == 1
    assert list((box / "tmp").iterdir()) == []
    assert "was removed: made again" not in env.d.log_text()


# --------------------------------------------------------------- redelivery


def test_redelivered_event_sends_no_second_mail(evhostd, tmp_path, unique_name, kafka_bootstrap,
                                                smtp_server):
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"})
    addr = f"once.{uuid.uuid4().hex[:8]}@example.com"
    user = env.create_user("Only Once", addr)
    smtp_server.wait_for(welcome_to(addr), timeout=60)

    [original] = [m for m in lib.kafka_consume(env.topics["created"], timeout=15,
                                               brokers=kafka_bootstrap)
                  if m["key"] == user["id"]]
    # The same message again, as a broker redelivery or a replaying producer would.
    lib.kafka_produce(env.topics["created"], original["value"], key=original["key"],
                      headers=original["headers"], brokers=kafka_bootstrap)
    # A marker behind it on the same key (same partition, so handled after it).
    marker = f"marker.{uuid.uuid4().hex[:8]}@example.com"
    lib.kafka_produce(env.topics["created"],
                      {"id": f"{user['id']}-marker", "name": "Marker", "email": marker},
                      key=original["key"], brokers=kafka_bootstrap,
                      headers={"ce_id": str(uuid.uuid4()), "ce_type": "user.created",
                               "ce_source": "tests", "ce_specversion": "1.0"})
    smtp_server.wait_for(welcome_to(marker), timeout=60)

    assert len([m for m in smtp_server.messages if m.envelope_to == [addr]]) == 1
    items = env.log(recipient=addr)["items"]
    assert [(i["event_id"], i["status"], i["attempts"]) for i in items] == \
        [(original["headers"]["ce_id"], "sent", 1)]


# ---------------------------------------------------------------- poison


def test_poison_message_goes_to_dlq_and_the_next_one_is_handled(evhostd, tmp_path, unique_name,
                                                                kafka_bootstrap, smtp_server):
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"},
              user=False)
    topic = env.topics["created"]
    key = "poison-key"
    lib.kafka_produce(topic, "this is { not JSON", key=key, brokers=kafka_bootstrap,
                      headers={"ce_id": "poison-1", "ce_type": "user.created"})
    lib.kafka_produce(topic, {"id": "u-no-mail", "name": "No Mail"}, key=key,
                      brokers=kafka_bootstrap,
                      headers={"ce_id": "poison-2", "ce_type": "user.created"})
    addr = f"after.{uuid.uuid4().hex[:8]}@example.com"
    lib.kafka_produce(topic, {"id": "u-after", "name": "After Poison", "email": addr}, key=key,
                      brokers=kafka_bootstrap,
                      headers={"ce_id": "good-1", "ce_type": "user.created"})

    msg = smtp_server.wait_for(welcome_to(addr), timeout=60)
    assert subject(msg) == "Welcome, After Poison!"

    dlq = lib.kafka_consume(f"{topic}.notifications.dlq", count=2, timeout=30,
                            brokers=kafka_bootstrap)
    assert sorted(m["value"] for m in dlq) == sorted(['this is { not JSON',
                                                      '{"id": "u-no-mail", "name": "No Mail"}'])
    errors = {m["headers"]["ce_id"]: m["headers"]["evhost_dlq_error"] for m in dlq}
    assert errors["poison-1"] == "event data is not valid JSON: malformed at byte 0"
    assert "no \"email\"" in errors["poison-2"]
    assert all(m["headers"]["evhost_dlq_plugin"] == "notifications" for m in dlq)
    # Rejected at once: no retries for poison.
    assert all(m["headers"]["evhost_dlq_attempts"] == "1" for m in dlq)
    assert len(smtp_server.messages) == 1


ADMIN_TOKEN = "admin-token-for-notification-tests-0123"


def test_event_data_is_held_to_what_an_http_body_is(evhostd, tmp_path, unique_name,
                                                    kafka_bootstrap, smtp_server):
    """Event data from a producer other than evhost (the host checks only
    what plugins publish) is checked as strictly as an HTTP body: what
    cJSON would read otherwise than it was written (a name cut at \\u0000,
    an id of 1e400 as "inf", one beyond 2^53 rounded, a member given twice
    read as the first where other consumers read the last, bytes that are
    not UTF-8) is dead-lettered at once with a reason saying what and
    where, and never its values; no mail goes out for it, and the event
    after it is delivered."""
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"},
              user=False, extra={"admin": {"token_file": str(token_file)}})
    topic = env.topics["created"]
    tag = uuid.uuid4().hex[:8]

    def bad_addr(what):
        return f"bad.{what}.{tag}@example.com"

    utf8 = ('{"id":"u-utf8","name":"Bad \xff Name","email":"%s"}' % bad_addr("utf8")).encode(
        "latin-1")
    nul = '{"id":"u-nul","name":"Al\\u0000ice","email":"%s"}' % bad_addr("nul")
    surrogate = '{"id":"u-sur","name":"\\ud800","email":"%s"}' % bad_addr("sur")
    twice = '{"id":"u-dup","email":"%s","email":"%s","name":"Dup"}' % (
        bad_addr("first"), bad_addr("last"))
    inf = '{"id":1e400,"name":"Inf","email":"%s"}' % bad_addr("inf")
    big = '{"id":9007199254740993,"name":"Big","email":"%s"}' % bad_addr("big")
    frac = '{"id":1.5,"name":"Half","email":"%s"}' % bad_addr("frac")
    bad = {
        "bad-utf8": (utf8, "event data is not valid JSON: invalid UTF-8 at byte %d"
                     % utf8.index(b"\xff")),
        "bad-nul": (nul, "event data is not valid JSON: \\u0000 in a string at byte %d"
                    % nul.index("\\u0000")),
        "bad-surrogate": (surrogate, "event data is not valid JSON: a lone surrogate escape "
                          "at byte %d" % surrogate.index("\\ud800")),
        "bad-twice": (twice, 'event data names member "email" twice'),
        "bad-inf": (inf, "event data is not valid JSON: a number out of range at byte 6"),
        "bad-big": (big, 'event data\'s "id" is a number but not an integer of at most '
                    "2^53 - 1 (9007199254740991) in magnitude: send it as a string"),
        "bad-frac": (frac, 'event data\'s "id" is a number but not an integer of at most '
                     "2^53 - 1 (9007199254740991) in magnitude: send it as a string"),
    }
    key = "strict-key"  # one partition: the good event comes after the bad ones
    for ce_id, (value, _) in bad.items():
        lib.kafka_produce(topic, value, key=key, brokers=kafka_bootstrap,
                          headers={"ce_id": ce_id, "ce_type": "user.created"})
    good = f"good.{tag}@example.com"
    lib.kafka_produce(topic, {"id": 9007199254740991, "name": "Gó Od", "email": good}, key=key,
                      brokers=kafka_bootstrap,
                      headers={"ce_id": "good-strict", "ce_type": "user.created"})
    # -0 is the integer 0 written the other way: the recipient "0", not "-0".
    zero = f"zero.{tag}@example.com"
    lib.kafka_produce(topic, '{"id":-0,"name":"Zero","email":"%s"}' % zero, key=key,
                      brokers=kafka_bootstrap,
                      headers={"ce_id": "good-zero", "ce_type": "user.created"})

    msg = smtp_server.wait_for(welcome_to(good), timeout=60)
    assert subject(msg) == "Welcome, Gó Od!"
    smtp_server.wait_for(welcome_to(zero), timeout=60)

    def dead_letters():
        r = env.d.get("/admin/plugins/notifications/dlq", params={"limit": 100},
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
        assert r.status_code == 200, r.text
        msgs = r.json()["messages"]
        return msgs if len(msgs) >= len(bad) else None
    letters = lib.wait_until(dead_letters, timeout=40, message="the dead letters")
    errors = {m["headers"]["ce_id"]: m["headers"]["evhost_dlq_error"] for m in letters}
    assert errors == {ce_id: why for ce_id, (_, why) in bad.items()}
    # Rejected at once, and kept whole: the invalid UTF-8 comes back as it was.
    assert all(m["headers"]["evhost_dlq_attempts"] == "1" for m in letters)
    by_id = {m["headers"]["ce_id"]: m for m in letters}
    assert base64.b64decode(by_id["bad-utf8"]["value_base64"]) == utf8
    assert by_id["bad-nul"]["value"] == nul
    # No reason quotes a value (the addresses are personal data).
    assert not any(tag in why for why in errors.values())

    # Only the good event was mailed, and only its recipient stored.
    time.sleep(1)
    assert [m.envelope_to for m in smtp_server.messages] == [[good], [zero]]
    assert env.recipients() == {"9007199254740991": (good, "Gó Od"), "0": (zero, "Zero")}


# ------------------------------------------------------- retrying / failed


# What the server says to RCPT TO when the setup is at fault: Postfix (with
# smtpd_delay_reject, its default) says a sender refused only there, and a
# relay refuses to pass on a mail without the login.
RCPT_SETUP_REPLIES = {
    "relay denied": ("554 5.7.1 <noreply@localhost>: Relay access denied",
                     "554 5.7.1 <address> Relay access denied"),
    "sender at RCPT": ("504 5.5.2 <noreply@localhost>: Sender address rejected: need "
                       "fully-qualified address",
                       "504 5.5.2 <address> Sender address rejected: need fully-qualified "
                       "address"),
}


@pytest.mark.parametrize("refused", ["data", "sender", *RCPT_SETUP_REPLIES])
def test_mail_server_trouble_shows_retrying_then_sent(evhostd, tmp_path, unique_name,
                                                      kafka_bootstrap, smtp_server, refused):
    # A 4xx to the message, or a 5xx to MAIL FROM: the sender refused (not
    # "owned by user", a domain it does not know), which turns every mail
    # away alike, whoever it is for: the setup to mend, never a mail failed
    # for good. So is a 5xx to RCPT TO whose enhanced code is not one about
    # the recipient (5.7.1 relay denied, 5.5.2 a sender not fully qualified),
    # whatever its wording: the mail is retried, and sent once the server
    # takes it.
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
               "retry.max_attempts": 50, "retry.backoff_ms": 200, "retry.backoff_max_ms": 500,
               "list_role": ""},
              user=False)
    code = {"data": "451", "sender": "553"}.get(refused) or RCPT_SETUP_REPLIES[refused][0][:3]
    if refused == "data":
        smtp_server.reply = "451 4.3.0 Try again later"
    elif refused == "sender":
        smtp_server.mail_reply = "553 5.7.1 Sender address rejected: not owned by user"
    else:
        smtp_server.rcpt_reply = RCPT_SETUP_REPLIES[refused][0]
    addr = f"retry.{uuid.uuid4().hex[:8]}@example.com"
    lib.kafka_produce(env.topics["created"], {"id": "u-retry", "name": "Re Try", "email": addr},
                      key="u-retry", brokers=kafka_bootstrap,
                      headers={"ce_id": "retry-1", "ce_type": "user.created"})
    # list_role is empty: the log needs no token in this instance.
    assert env.d.get("/notifications").status_code == 200
    retrying = lib.wait_until(
        lambda: next((i for i in env.d.get("/notifications").json()["items"]
                      if i["event_id"] == "retry-1" and i["status"] == "retrying"
                      and i["attempts"] >= 2), None),
        timeout=30, message="a retrying entry after two attempts")
    assert code in retrying["last_error"] and retrying["recipient"] == addr
    assert retrying["template"] == "welcome"
    if refused in RCPT_SETUP_REPLIES:  # the server's reply said as ever
        said = RCPT_SETUP_REPLIES[refused][1]
        assert retrying["last_error"].endswith(f'(server replied "{said}")'), retrying

    smtp_server.reply = smtp_server.mail_reply = smtp_server.rcpt_reply = None
    smtp_server.wait_for(welcome_to(addr), timeout=30)
    sent = lib.wait_until(
        lambda: next((i for i in env.d.get("/notifications").json()["items"]
                      if i["event_id"] == "retry-1" and i["status"] == "sent"), None),
        timeout=15, message="the entry to turn sent")
    assert sent["attempts"] > retrying["attempts"]
    assert sent["created_at"] == retrying["created_at"]
    assert sent["last_error"] is None
    assert len([m for m in smtp_server.messages if m.envelope_to == [addr]]) == 1
    # The plugin's own metrics: each try counted by result, each timed.
    mails, timed = mail_metrics(env.d)
    assert mails == {"sent": 1, "failed": sent["attempts"] - 1}, mails
    assert timed == sent["attempts"]


@pytest.mark.parametrize("reply,said", [
    ("550 5.1.1 {addr}: Recipient address rejected: User unknown in virtual mailbox table",
     "550 5.1.1 <address> Recipient address rejected: User unknown in virtual mailbox table"),
    ("552 5.2.2 {addr}: Mailbox full", "552 5.2.2 <address> Mailbox full"),
    ("550 No such user here", "550 No such user here"),
    ("554 5.x.1 {addr}: Access denied", "554 5.x.1 <address> Access denied"),
], ids=["5.1.1 user unknown", "5.2.2 mailbox full", "no enhanced code", "malformed code"])
def test_a_recipient_refused_for_good_at_rcpt_is_failed_not_retried(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server, reply, said):
    # A 5xx to RCPT TO whose enhanced code is about the recipient (no such
    # mailbox, a full one), or that has none of RFC 3463's form to tell: the
    # server's verdict on this mail. Failed at its first attempt, the reply
    # in last_error, and never tried again: not when the server would take
    # it either.
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
               "retry.max_attempts": 3, "retry.backoff_ms": 100, "retry.backoff_max_ms": 200,
               "list_role": ""},
              user=False)
    addr = f"gone.{uuid.uuid4().hex[:8]}@example.com"
    smtp_server.rcpt_replies[addr] = reply.format(addr=f"<{addr}>")
    lib.kafka_produce(env.topics["created"], {"id": "u-gone", "name": "Gone", "email": addr},
                      key="u-gone", brokers=kafka_bootstrap,
                      headers={"ce_id": "gone-1", "ce_type": "user.created"})
    failed = env.entry_once("gone-1", "failed")
    assert failed["attempts"] == 1 and failed["recipient"] == addr, failed
    assert failed["last_error"].endswith(f'(server replied "{said}")'), failed

    # No retry comes (a retry would be due within 0.2 s), and the event is
    # handled: a welcome after it goes at once.
    smtp_server.rcpt_replies.clear()
    after = env.created("after-1", user_id="u-after")
    assert env.entry_once("after-1", "sent")["attempts"] == 1
    time.sleep(1)
    assert [m.envelope_to for m in smtp_server.messages] == [[after]]
    items = {i["event_id"]: i for i in env.d.get("/notifications").json()["items"]}
    assert items["gone-1"]["status"] == "failed" and items["gone-1"]["attempts"] == 1
    mails, _ = mail_metrics(env.d)
    assert mails == {"sent": 1, "refused": 1}, mails


def test_a_recipients_policy_refusal_at_rcpt_is_retried_and_stops_no_broadcast(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    # A 5.7.1 to RCPT TO may be the setup's (relay denied) or this
    # recipient's own (Postfix's check_recipient_access): retried, then
    # given up for a redrive, never failed for good. Being perhaps this
    # recipient's, it does not stop the broadcast as a server down does:
    # the recipients after it (in the same order at each attempt) get theirs.
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
               "retry.max_attempts": 2, "retry.backoff_ms": 100, "retry.backoff_max_ms": 200,
               "list_role": ""},
              user=False)
    ids = add_recipients(env, 4)
    refused = f"{ids[1]}@example.com"
    smtp_server.rcpt_replies[refused] = \
        f"554 5.7.1 <{refused}>: Recipient address rejected: Access denied"
    broadcast_raw(env, "policy-1", "Policy")
    env.d.wait_for_log("broadcast policy-1: 0 sent, 3 already done, 0 failed, 0 to retry, "
                       "1 given up for a redrive (attempt 2)", timeout=60)
    assert broadcast_mails(smtp_server, "Policy") == \
        {f"{u}@example.com": 1 for u in ids if u != ids[1]}
    parked = env.entry_once(f"policy-1:{ids[1]}", "dead_lettered", attempts=2)
    assert parked["last_error"].endswith(
        '(server replied "554 5.7.1 <address> Recipient address rejected: Access denied")'), \
        parked
    letters = lib.kafka_consume(f"{env.topics['broadcast']}.notifications.dlq", count=1,
                                timeout=30, brokers=kafka_bootstrap)
    assert [m["headers"]["ce_id"] for m in letters] == ["ev-policy-1"]
    assert "not tried" not in env.d.log_text()


def add_recipients(env, n):
    """n recipients u-00, u-01, ... (addresses uid@example.com), through
    updates, which send nothing; their ids once all are there."""
    ids = [f"u-{i:02d}" for i in range(n)]
    for uid in ids:
        lib.kafka_produce(env.topics["updated"],
                          {"id": uid, "name": uid, "email": f"{uid}@example.com"},
                          key=uid, brokers=env.brokers)
    lib.wait_until(lambda: len(env.recipients()) == n, timeout=30, message=f"{n} recipients")
    return ids


def raw_smtp_env(evhostd, tmp_path, unique_name, kafka_bootstrap, srv, attempts, **keys):
    """notifications alone, mailing through RawSmtp `srv` with a 1 s timeout
    and `attempts` quick retries; `keys` more of its settings."""
    return Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
               {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{srv.port}",
                "smtp_timeout_ms": 1000, "list_role": "", "retry.max_attempts": attempts,
                "retry.backoff_ms": 100, "retry.backoff_max_ms": 200, **keys},
               user=False)


@pytest.mark.parametrize("late", [(1.6, "554 5.7.1 content rejected"), (None, None)],
                         ids=["late 554", "no answer"])
def test_a_reply_after_the_timeout_is_not_read_as_the_next_mails(evhostd, tmp_path, unique_name,
                                                                  kafka_bootstrap, late):
    # The server answers the end of the first message's data only after
    # smtp_data_timeout_ms, with a refusal, or never. That connection must not
    # carry another mail: its next command would read the late 554 as its
    # own answer (the retry then "failed" for good though never offered), or
    # wait on a server that says nothing any more (every retry timed out).
    # Nor may dropping it wait on that server (a polite QUIT's reply).
    srv = RawSmtp(late=late)
    try:
        env = raw_smtp_env(evhostd, tmp_path, unique_name, kafka_bootstrap, srv, attempts=5,
                           smtp_data_timeout_ms=1000)
        first = env.created("late-1", user_id="u-late-1")
        started = time.monotonic()
        sent = env.entry_once("late-1", "sent", timeout=30)
        assert time.monotonic() - started < 10
        assert sent["attempts"] == 2 and sent["last_error"] is None, sent
        second = env.created("late-2", user_id="u-late-2")
        assert env.entry_once("late-2", "sent", timeout=30)["attempts"] == 1
        # Each accepted once; the retry on a connection of its own.
        accepted = list(srv.accepted)
        assert sorted(r for _, r in accepted) == sorted([first, second]), accepted
        assert accepted[0][0] != 0, (accepted, srv.conns)
        # The connection that timed out carried nothing after its data.
        timed_out = srv.conns[0]
        assert timed_out.count(".") == 1, timed_out
        assert not any(c.upper().startswith(("MAIL", "RCPT", "DATA"))
                       for c in timed_out[timed_out.index(".") + 1:]), timed_out
    finally:
        srv.stop()


def test_a_kept_connection_dropped_without_a_word_is_replaced_at_once(
        evhostd, tmp_path, unique_name, kafka_bootstrap):
    # A firewall or NAT drops the idle kept connection silently: the next
    # mail's MAIL gets no answer (here the server goes mute on it). No reply
    # came to that send, so the server took nothing of it: it is sent again
    # at once on a new connection, in the same attempt (not a retry of the
    # event after a backoff, nor, in a broadcast, everyone after it left
    # untried for the server "down").
    srv = RawSmtp(replies={"MAIL": ["250 ok", None]})
    try:
        env = raw_smtp_env(evhostd, tmp_path, unique_name, kafka_bootstrap, srv, attempts=5)
        first = env.created("kept-1", user_id="u-kept-1")
        assert env.entry_once("kept-1", "sent", timeout=30)["attempts"] == 1
        second = env.created("kept-2", user_id="u-kept-2")
        sent = env.entry_once("kept-2", "sent", timeout=30)
        assert sent["attempts"] == 1 and sent["last_error"] is None, sent
        assert list(srv.accepted) == [(0, first), (1, second)], (srv.accepted, srv.conns)
        # The mute connection carried the MAIL, and nothing after it.
        assert [c.split(":")[0].upper() for c in srv.conns[0][-1:]] == ["MAIL FROM"], srv.conns
    finally:
        srv.stop()


def message_id(lines):
    return next(ln.split(":", 1)[1].strip() for ln in lines
                if ln.lower().startswith("message-id:"))


def test_the_path_of_smtp_url_is_the_name_said_in_ehlo(evhostd, tmp_path, unique_name,
                                                       kafka_bootstrap):
    # As services.md says: libcurl takes the URL's path for its EHLO
    # (without one it says gethostname(), often a short name that Postfix's
    # reject_non_fqdn_helo_hostname refuses).
    srv = RawSmtp()
    try:
        env = raw_smtp_env(evhostd, tmp_path, unique_name, kafka_bootstrap, srv, attempts=1,
                           smtp_url=f"smtp://127.0.0.1:{srv.port}/mailer.example.org")
        env.created("ehlo-1", user_id="u-ehlo-1")
        assert env.entry_once("ehlo-1", "sent")["attempts"] == 1
        assert srv.conns[0][0] == "EHLO mailer.example.org", srv.conns
    finally:
        srv.stop()


def test_a_mail_the_server_is_slow_to_accept_is_sent_once(evhostd, tmp_path, unique_name,
                                                          kafka_bootstrap):
    # The server takes 1.5 s over the end of the data (a before-queue
    # content filter or milter) before its "250 queued", longer than
    # smtp_timeout_ms: it has the message and queues it. The wait for that
    # reply is smtp_data_timeout_ms (2 minutes), not smtp_timeout_ms: read
    # as "server down", the mail was sent again at each attempt (three
    # copies, the row dead_lettered, a redrive sending a fourth).
    srv = RawSmtp(slow=1.5)
    try:
        env = raw_smtp_env(evhostd, tmp_path, unique_name, kafka_bootstrap, srv, attempts=3)
        addr = env.created("slow-1", user_id="u-slow-1")
        entry = settled(env, "slow-1")
        assert entry["status"] == "sent" and entry["attempts"] == 1, entry
        assert [r for _, r in srv.accepted] == [addr]
    finally:
        srv.stop()


def test_mail_never_goes_through_a_proxy(evhostd, tmp_path, unique_name, kafka_bootstrap,
                                        smtp_server):
    # ALL_PROXY or smtp_proxy in the daemon's environment: libcurl tunnelled
    # the SMTP session (the login with it) through that proxy.
    with lib.ConnectProxy(routes={}) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
                  {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"},
                  env={"ALL_PROXY": url, "all_proxy": url, "smtp_proxy": url, "no_proxy": ""})
        addr = f"px.{uuid.uuid4().hex[:8]}@example.com"
        env.create_user("Px", addr)
        smtp_server.wait_for(welcome_to(addr), timeout=60)
        assert not proxy.connects and not proxy.forwards, (proxy.connects, proxy.forwards)


def test_a_stop_cuts_the_wait_for_the_reply_to_the_data_short(evhostd, tmp_path, unique_name,
                                                               kafka_bootstrap):
    # SIGTERM while the server holds its reply to the end of a mail's data
    # (smtp_data_timeout_ms is a minute here, 2 by default): the wait gets
    # smtp_timeout_ms more, then is cut short, the mail left for the start
    # (its only attempt: not dead-lettered), and the daemon stops cleanly.
    # It outlasted stop_timeout, and the stop's guard ended the process
    # (status 3) with the event's work lost.
    srv = RawSmtp(late=(None, None))
    try:
        env = raw_smtp_env(evhostd, tmp_path, unique_name, kafka_bootstrap, srv, attempts=1,
                           smtp_data_timeout_ms=60000)
        env.created("cut-1", user_id="u-cut-1")
        lib.wait_until(lambda: srv.data, timeout=30, message="the end of the mail's data")
        assert env.d.stop(timeout=60) == 0, env.d.log_tail()
        text = env.d.log_text()
        assert ("smtp: cut short at DATA: the plugin is stopping, and the send was not done "
                "within 1000 ms (smtp_timeout_ms) of that") in text, env.d.log_tail()
        assert "dead-lettered" not in text, env.d.log_tail()
        assert "exiting now" not in text, env.d.log_tail()
        # Sent after the start, with the Message-ID of the copy the server
        # may have kept.
        env.d.start().wait_healthy()
        assert env.entry_once("cut-1", "sent", timeout=60)["attempts"] == 1
        ids = [message_id(lines) for _, _, lines in srv.data]
        assert len(ids) == 2 and ids[0] == ids[1], srv.data
    finally:
        srv.stop()


def test_no_reply_to_the_data_is_sent_again_with_its_message_id_and_stops_no_broadcast(
        evhostd, tmp_path, unique_name, kafka_bootstrap):
    # The end of u-00's data gets no reply within smtp_data_timeout_ms: the
    # server may have the mail, or not. That is no sign of a server down:
    # the broadcast goes on to u-01 and u-02 in the same attempt (it used to
    # stop at u-00, every attempt mailing u-00 again and no one after it).
    # u-00's mail is sent again at the next attempt, with the Message-ID of
    # the first copy, so that a receiver can drop the second.
    srv = RawSmtp(late=(None, None))
    try:
        env = raw_smtp_env(evhostd, tmp_path, unique_name, kafka_bootstrap, srv, attempts=2,
                           smtp_data_timeout_ms=1000)
        ids = sorted(add_recipients(env, 3))
        addrs = [f"{uid}@example.com" for uid in ids]
        broadcast_raw(env, "unknown-1", "Unknown")
        env.d.wait_for_log("broadcast unknown-1: 1 sent, 2 already done, 0 failed, 0 to "
                           "retry, 0 given up for a redrive (attempt 2)", timeout=60)
        assert "broadcast unknown-1: 2 sent, 0 already done, 0 failed, 1 to retry" in \
            env.d.log_text()
        assert "not tried" not in env.d.log_text()
        assert [r for _, r in srv.accepted] == [addrs[1], addrs[2], addrs[0]], srv.accepted
        assert broadcast_rows(env, "unknown-1") == {u: ["sent"] for u in ids}
        copies = [message_id(lines) for _, r, lines in srv.data if r == addrs[0]]
        others = {message_id(lines) for _, r, lines in srv.data if r != addrs[0]}
        assert len(copies) == 2 and copies[0] == copies[1], srv.data
        assert len(others) == 2 and copies[0] not in others, srv.data
    finally:
        srv.stop()


def test_no_reply_before_the_data_stops_a_broadcast(evhostd, tmp_path, unique_name,
                                                    kafka_bootstrap):
    # Unlike a missing reply to the end of the data, one missing before it
    # (here to u-00's RCPT TO) is a server that cannot be talked to: the
    # server took nothing, and the next recipient would wait out the same
    # timeout. The broadcast stops there; the rest are given up untried.
    srv = RawSmtp(replies={"RCPT": [None]})
    try:
        env = raw_smtp_env(evhostd, tmp_path, unique_name, kafka_bootstrap, srv, attempts=1)
        ids = sorted(add_recipients(env, 3))
        broadcast_raw(env, "mute-rcpt", "Mute")
        env.d.wait_for_log("broadcast mute-rcpt: 0 sent, 0 already done, 0 failed, 0 to "
                           "retry, 3 given up for a redrive (attempt 1)", timeout=60)
        assert srv.accepted == [] and len(srv.conns) == 1, srv.conns

        def rows():  # the list reads what is committed: the part may commit after its line
            items = {i["event_id"]: i for i in env.d.get("/notifications").json()["items"]}
            return items if all(f"mute-rcpt:{u}" in items for u in ids) else None
        items = lib.wait_until(rows, timeout=30, message="the three rows of mute-rcpt")
        first = items[f"mute-rcpt:{ids[0]}"]["last_error"]
        assert first.startswith("smtp: Timeout was reached: not done within 1000 ms "
                                "(smtp_timeout_ms), at RCPT"), first
        assert all(items[f"mute-rcpt:{u}"]["last_error"].startswith("not tried")
                   for u in ids[1:]), items
    finally:
        srv.stop()


@pytest.mark.parametrize("reply,status", [
    ("550 5.7.26 Unauthenticated email from example.org is not accepted due to domain's "
     "DMARC policy", "dead_lettered"),
    ("554 5.7.1 Message rejected", "dead_lettered"),
    ("554 5.6.0 Message content rejected", "failed"),
    ("552 5.3.4 Message size exceeds fixed limit", "failed"),
    ("554 Transaction failed", "failed"),
], ids=["5.7.26 DMARC", "5.7.1 policy", "5.6.0 content", "5.3.4 too big", "no code"])
def test_a_refusal_of_the_data_is_final_only_when_it_is_the_mails(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server, reply, status):
    # A 5xx to the message's data is read by its enhanced code, as one to
    # RCPT is. Its content or size refused (5.6.x, 5.3.4), or no code to
    # tell: failed for good. A policy (5.7.x: a sender's SPF or DMARC
    # failing, 5.7.26) refuses every mail alike until the setup is mended:
    # retried, then dead-lettered for a redrive, never failed (it was, and
    # nothing was sent again once DNS was fixed).
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
               "retry.max_attempts": 2, "retry.backoff_ms": 100, "retry.backoff_max_ms": 200,
               "list_role": ""},
              user=False)
    smtp_server.reply = reply
    env.created("data-1", user_id="u-data-1")
    entry = settled(env, "data-1")
    assert entry["status"] == status, entry
    assert entry["attempts"] == (2 if status == "dead_lettered" else 1), entry
    assert reply.split(" ")[0] in entry["last_error"], entry


def chunked_env(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server, attempts):
    """notifications alone, every 3 mails of a broadcast committed
    (broadcast_commit_every), with 10 recipients u-0 ... u-9; `attempts` quick
    retries. (env, the recipients' addresses in order)."""
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
               "broadcast_commit_every": 3, "retry.max_attempts": attempts,
               "retry.backoff_ms": 100, "retry.backoff_max_ms": 200, "list_role": ""},
              user=False)
    ids = add_recipients(env, 10)
    return env, [f"{uid}@example.com" for uid in sorted(ids)]


def broadcast_mails(smtp_server, subject_text):
    return collections.Counter(a for m in smtp_server.messages if subject(m) == subject_text
                               for a in m.envelope_to)


def test_a_long_broadcast_commits_every_few_mails_and_goes_on(evhostd, tmp_path, unique_name,
                                                              kafka_bootstrap, smtp_server):
    # broadcast_commit_every = 3: the handler commits each part of 3 mails
    # and asks the host to go on at once (EVH_EVENT_KEEP_AND_CONTINUE, ABI
    # 1.14), which uses up no attempt: with retry.max_attempts = 1 the four
    # calls all run as attempt 1, and nothing is dead-lettered. Each
    # recipient gets one mail.
    env, addrs = chunked_env(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server, 1)
    broadcast_raw(env, "parts-1", "In parts")
    env.d.wait_for_log("broadcast parts-1: 1 sent, 9 already done, 0 failed, 0 to retry, "
                       "0 given up for a redrive (attempt 1)", timeout=60)
    text = env.d.log_text()
    for done, left in ((0, 7), (3, 4), (6, 1)):
        assert (f"broadcast parts-1: a part done (3 sent, {done} already done, 0 failed, 0 to "
                f"retry); {10 - left} recipient(s) gone past, the rest left for the next "
                "part, once this one commits (attempt 1)") in text, text
    assert broadcast_mails(smtp_server, "In parts") == {a: 1 for a in addrs}
    assert "dead-lettered" not in text
    wait_handled(env, "ev-parts-1")


def test_each_part_of_a_broadcast_loads_only_the_recipients_after_the_last_one(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    # Each part used to load every recipient and walk them from the first, a
    # log lookup for each one an earlier part had settled: at a million
    # recipients and 500 a part, 2000 parts each loading a million rows, the
    # work growing with the square of the list, inside the transaction that
    # holds the plugin's database. A part goes on after the last recipient
    # the one before it went past, a page of broadcast_commit_every (2) at a
    # time; only the first part starts from the first. The counts stay those
    # of the whole attempt.
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
               "broadcast_commit_every": 2, "retry.max_attempts": 1, "list_role": ""},
              user=False)
    ids = sorted(add_recipients(env, 10))
    broadcast_raw(env, "keyset", "Keyset")
    env.d.wait_for_log("broadcast keyset: 2 sent, 8 already done, 0 failed, 0 to retry, "
                       "0 given up for a redrive (attempt 1)", timeout=60)
    text = env.d.log_text()
    loads = re.findall(r"broadcast keyset: (\d+) recipient\(s\) loaded "
                       r"(from the first|after ([\w-]+))", text)
    assert loads and loads[0][1] == "from the first", text
    assert all(where != "from the first" for _, where, _ in loads[1:]), loads
    assert max(int(n) for n, _, _ in loads) <= 2, loads
    assert sum(int(n) for n, _, _ in loads) <= 2 * len(ids), loads  # was 10 a part: 50
    # Each part after the first goes on after the last the one before went
    # past (and its second page after the last of its first).
    assert sorted({after for _, _, after in loads[1:]}) == ids[1::2], loads
    for done in (0, 2, 4, 6):
        assert (f"broadcast keyset: a part done (2 sent, {done} already done, 0 failed, 0 to "
                f"retry); {done + 2} recipient(s) gone past, the rest left for the next part, "
                "once this one commits (attempt 1)") in text, text
    assert broadcast_mails(smtp_server, "Keyset") == {f"{u}@example.com": 1 for u in ids}
    assert broadcast_rows(env, "keyset") == {u: ["sent"] for u in ids}
    wait_handled(env, "ev-keyset")


def test_a_broadcast_part_with_mails_to_retry_waits_for_the_next_attempt(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    # A part with a mail to retry (greylisted u-1) ends as a retry: the rest
    # waits for the backoff, an attempt used. The last attempt gives u-1 up
    # for a redrive and goes on in parts too (its next part does not try u-1
    # again; a mail given up counts as one of the part's 3); everyone else
    # has one mail.
    env, addrs = chunked_env(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server, 3)
    smtp_server.replies[addrs[1]] = "451 4.7.1 greylisted, try again later"
    broadcast_raw(env, "parts-2", "Greylisted part")
    env.d.wait_for_log("broadcast parts-2: 3 sent, 6 already done, 0 failed, 0 to retry, "
                       "1 given up for a redrive (attempt 3)", timeout=60)
    text = env.d.log_text()
    assert ("broadcast parts-2: a part done (2 sent, 4 already done, 0 failed, 0 to retry, "
            "1 given up for a redrive); 7 recipient(s) gone past, the rest left for the next "
            "part, once this one commits (attempt 3)") in text, text
    assert smtp_server.refused == {addrs[1]: 3}
    # Each attempt walks the list from the first, for u-1; its later parts
    # go on after where the one before stopped.
    assert text.count("broadcast parts-2: 3 recipient(s) loaded from the first") == 3, text
    assert ("broadcast parts-2: a part done (2 sent, 0 already done, 0 failed, 1 to retry); "
            "3 recipient(s) gone past, the rest left for the event's next attempt (attempt 1)") in text, text
    assert ("broadcast parts-2: a part done (2 sent, 2 already done, 0 failed, 1 to retry); "
            "5 recipient(s) gone past, the rest left for the event's next attempt (attempt 2)") in text, text
    assert broadcast_mails(smtp_server, "Greylisted part") == \
        {a: 1 for i, a in enumerate(addrs) if i != 1}
    assert env.entry_once(f"parts-2:{addrs[1].split('@')[0]}", "dead_lettered",
                          attempts=3)["recipient"] == addrs[1]


def test_a_last_attempt_past_the_memory_commits_in_parts_and_mails_no_one_twice(
        evhostd, build_dir, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    # Every attempt is the last (retry.max_attempts = 1), and the first
    # recipient's mail is given up (greylisted). The attempt used to go
    # through the rest in one transaction then, past broadcast_commit_every:
    # its "sent" entries outgrew the plugin's delivery memory (64 entries in
    # tests/small-memory-plugins, 16384 in the real one), which pushed out
    # the first ones, and once the commit failed (a full disk at the COMMIT,
    # after the last mail) the redo mailed those recipients again. The last
    # attempt commits in parts too; neither its later parts nor the redo try
    # again the mail an earlier one gave up, and the event is dead-lettered
    # for it.
    switch = tmp_path / "next-write-fails"
    evhostd.plugin_dir = build_dir / "tests" / "small-memory-plugins"
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
               "broadcast_commit_every": 3, "retry.max_attempts": 1, "list_role": ""},
              user=False, env=lib.faults_preloaded(build_dir, sqlite_write_file=switch,
                                                   sqlite_db="notifications.db"))
    addrs = [f"{uid}@example.com" for uid in sorted(add_recipients(env, 80))]
    smtp_server.replies[addrs[0]] = "451 4.7.1 greylisted, try again later"
    fired = []

    def fail_the_next_commit(msg):  # once: at the first mail to the last recipient
        if msg.envelope_to == [addrs[-1]] and not fired:
            fired.append(msg)
            switch.touch()

    smtp_server.on_kept = fail_the_next_commit
    broadcast_raw(env, "past-memory", "Past memory")
    letters = lib.kafka_consume(f"{env.topics['broadcast']}.notifications.dlq", count=1,
                                timeout=120, brokers=kafka_bootstrap)
    assert [m["headers"]["ce_id"] for m in letters] == ["ev-past-memory"]
    assert not switch.exists()  # the COMMIT after the last mail failed
    text = env.d.log_text()
    assert "COMMIT: database or disk is full" in text, text
    assert broadcast_mails(smtp_server, "Past memory") == {a: 1 for a in addrs[1:]}
    assert ("broadcast past-memory: a part done (2 sent, 0 already done, 0 failed, 0 to retry, "
            "1 given up for a redrive); 3 recipient(s) gone past, the rest left for the next "
            "part, once this one commits (attempt 1)") in text, text
    # Tried once: not again by the later parts, nor by the redo of the last.
    assert smtp_server.refused == {addrs[0]: 1}, smtp_server.refused
    con = env.db()
    try:
        rows = con.execute("SELECT recipient, status FROM notifications_log"
                           " WHERE event_id = 'past-memory:u-00'").fetchall()
    finally:
        con.close()
    assert rows == [(addrs[0], "dead_lettered")], rows


class RepliesInTurn(dict):
    """SmtpSink.rcpt_replies whose values are lists: each RCPT TO an address
    takes its next reply, the last one for good."""

    def get(self, key, default=None):
        said = super().get(key)
        if not said:
            return default
        return said.pop(0) if len(said) > 1 else said[0]


def broadcast_rows(env, bid):
    """{recipient's user id: [status, ...]} of the broadcast's log rows."""
    con = env.db()
    try:
        rows = con.execute("SELECT event_id, status FROM notifications_log"
                           " WHERE event_id LIKE ?", (f"{bid}:%",)).fetchall()
    finally:
        con.close()
    out = collections.defaultdict(list)
    for event_id, status in rows:
        out[event_id.split(":", 1)[1]].append(status)
    return dict(out)


def test_a_broadcast_counts_as_not_tried_only_the_mails_not_done_before(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    # u-1 is greylisted at the first attempt (its part ends there: u-0 and
    # u-2 sent), then the server closes the session at it (421: down). The
    # recipients after it are not tried, but u-2 was mailed at attempt 1:
    # the log used to count it among those "not tried" (8 of 10, not 7), at
    # the next attempt and at the last. The last attempt, the server found
    # down, gives the rest up in parts of broadcast_commit_every (3) rows,
    # not in one transaction, and counts as given up the ones before.
    env, addrs = chunked_env(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server, 3)
    smtp_server.rcpt_replies = RepliesInTurn(
        {addrs[1]: ["451 4.7.1 greylisted, try again later",
                    "421 4.3.2 service shutting down"]})
    broadcast_raw(env, "untried", "Untried")
    letters = lib.kafka_consume(f"{env.topics['broadcast']}.notifications.dlq", count=1,
                                timeout=60, brokers=kafka_bootstrap)
    assert [m["headers"]["ce_id"] for m in letters] == ["ev-untried"]
    text = env.d.log_text()
    assert ("broadcast untried: 0 sent, 2 already done, 0 failed, 8 to retry, 0 given up "
            "for a redrive (attempt 2)") in text, text
    for attempt, how in ((2, "left to the event's next attempt"),
                         (3, "given up for a redrive (those not sent before)")):
        line = re.search(rf"broadcast untried: the mail server could not be reached "
                         rf"\(.*\): (\d+) of 10 recipient\(s\) not tried in attempt "
                         rf"{attempt}, {re.escape(how)}", text)
        assert line and line.group(1) == "7", (attempt, text)
    for given_up, untried, left in ((3, 2, 5), (6, 5, 2)):
        assert (f"broadcast untried: a part done (0 sent, 2 already done, 0 failed, 0 to "
                f"retry, {given_up} given up for a redrive, {untried} of them not tried); "
                f"{10 - left} recipient(s) gone past, the rest left for the next part, "
                "once this one commits (attempt 3)") in text, text
    assert ("broadcast untried: 0 sent, 2 already done, 0 failed, 0 to retry, 8 given up "
            "for a redrive (attempt 3)") in text, text
    assert broadcast_mails(smtp_server, "Untried") == {addrs[0]: 1, addrs[2]: 1}
    ids = [a.split("@")[0] for a in addrs]
    assert broadcast_rows(env, "untried") == \
        {u: ["sent" if i in (0, 2) else "dead_lettered"] for i, u in enumerate(ids)}


def test_a_last_attempt_with_the_server_down_gives_the_rest_up_in_parts(
        evhostd, build_dir, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    # The single attempt finds the server down at the third recipient (421):
    # the rest are not tried, each gets its "dead_lettered" row for the
    # redrive. Those rows used to go in one transaction, however many (the
    # commit-in-parts bound counted mails tried only); they go in parts of
    # broadcast_commit_every (5) too. The first part's COMMIT fails (a full
    # disk, switched on at the second mail): its redo mails no one again,
    # and each recipient ends with exactly one row.
    switch = tmp_path / "next-write-fails"
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
               "broadcast_commit_every": 5, "retry.max_attempts": 1, "list_role": ""},
              user=False, env=lib.faults_preloaded(build_dir, sqlite_write_file=switch,
                                                   sqlite_db="notifications.db"))
    ids = sorted(add_recipients(env, 20))
    addrs = [f"{uid}@example.com" for uid in ids]
    smtp_server.rcpt_replies[addrs[2]] = "421 4.3.2 service shutting down"
    smtp_server.on_kept = lambda msg: msg.envelope_to == [addrs[1]] and switch.touch()
    broadcast_raw(env, "down-parts", "Down parts")
    letters = lib.kafka_consume(f"{env.topics['broadcast']}.notifications.dlq", count=1,
                                timeout=60, brokers=kafka_bootstrap)
    assert [m["headers"]["ce_id"] for m in letters] == ["ev-down-parts"]
    assert not switch.exists()
    text = env.d.log_text()
    assert "COMMIT: database or disk is full" in text, text
    # The part that failed to commit, then its redo and the parts after it.
    assert ("broadcast down-parts: a part done (2 sent, 0 already done, 0 failed, 0 to retry, "
            "3 given up for a redrive, 2 of them not tried); 5 recipient(s) gone past, the "
            "rest left for the next part, once this one commits (attempt 1)") in text, text
    for given_up, left in ((5, 13), (10, 8), (15, 3)):
        assert (f"broadcast down-parts: a part done (0 sent, 2 already done, 0 failed, 0 to "
                f"retry, {given_up} given up for a redrive, {given_up - 1} of them not "
                f"tried); {20 - left} recipient(s) gone past, the rest left for the next "
                "part, once this one commits (attempt 1)") in text, text
    assert ("broadcast down-parts: 0 sent, 2 already done, 0 failed, 0 to retry, 18 given up "
            "for a redrive (attempt 1)") in text, text
    assert "17 of 20 recipient(s) not tried in attempt 1" in text, text
    # The redo of the part whose commit failed walks from the first: that
    # part's rows are not there to skip. The later parts go on after it.
    assert text.count("broadcast down-parts: 5 recipient(s) loaded from the first") == 2, text
    assert broadcast_mails(smtp_server, "Down parts") == {addrs[0]: 1, addrs[1]: 1}
    assert broadcast_rows(env, "down-parts") == \
        {u: ["sent" if i < 2 else "dead_lettered"] for i, u in enumerate(ids)}


def test_a_server_that_never_greets_stops_a_broadcast_at_the_first_recipient(
        evhostd, tmp_path, unique_name, kafka_bootstrap):
    # Each mail to a server that accepts the connection but never greets
    # waits out smtp_timeout_ms: a broadcast trying all 20 would hold the
    # consumer (and every welcome behind it) for 20 timeouts per attempt. It
    # stops at the first; the others wait for the next attempt, and at the
    # last are dead-lettered for a redrive, untried.
    srv = RawSmtp(greet=False)
    try:
        env = raw_smtp_env(evhostd, tmp_path, unique_name, kafka_bootstrap, srv, attempts=2)
        ids = add_recipients(env, 20)
        started = time.monotonic()
        broadcast_raw(env, "stall-1", "S")

        def parked():
            r = env.d.get("/notifications", params={"limit": 100})
            if r.status_code != 200:  # 503 while a mail holds the plugin's store
                return None
            items = {i["event_id"]: i for i in r.json()["items"]
                     if i["status"] == "dead_lettered"}
            return items if len(items) == 20 else None
        items = lib.wait_until(parked, timeout=15, message="20 dead_lettered rows")
        elapsed = time.monotonic() - started
        # Two attempts of one timeout each, not 2 x 20.
        assert elapsed < 10, elapsed
        assert len(srv.conns) == 2, len(srv.conns)
        assert set(items) == {f"stall-1:{uid}" for uid in ids}
        untried = [i for i in items.values() if "not tried" in i["last_error"]]
        assert len(untried) == 19, [i["last_error"] for i in items.values()]
        letters = lib.kafka_consume(f"{env.topics['broadcast']}.notifications.dlq", count=1,
                                    timeout=30, brokers=kafka_bootstrap)
        assert [m["headers"]["ce_id"] for m in letters] == ["ev-stall-1"]
        env.d.wait_for_log("recipient(s) not tried in attempt 1", timeout=5)

        # The server back: the next welcome goes.
        srv.greet = True
        addr = env.created("after-stall", user_id="u-after")
        assert env.entry_once("after-stall", "sent", timeout=30)["attempts"] == 1
        assert [r for _, r in srv.accepted] == [addr]
    finally:
        srv.stop()


def test_a_stop_during_a_broadcast_leaves_the_rest_for_the_start(evhostd, tmp_path, unique_name,
                                                                 kafka_bootstrap):
    # A broadcast to 20 recipients through a server that takes 0.5 s a mail.
    # The stop does not wait for all of it: with thousands of recipients it
    # would run past stop_timeout + 10 s, when the daemon gives up (status
    # 3), and the rows of the mails sent would go with the transaction, each
    # mail sent again after the start. The handler sees evh_stopping between
    # mails: what it sent commits, the rest wait for the event's delivery
    # after the start, which mails each of them once.
    srv = RawSmtp(slow=0.5)
    try:
        env = raw_smtp_env(evhostd, tmp_path, unique_name, kafka_bootstrap, srv, attempts=1)
        ids = add_recipients(env, 20)
        broadcast_raw(env, "cut", "Cut short")
        lib.wait_until(lambda: len(srv.accepted) >= 3, timeout=30, message="3 mails sent")
        # At its single attempt: what is left is not dead-lettered either.
        assert env.d.stop(timeout=60) == 0, env.d.log_tail()
        sent = [r for _, r in srv.accepted]
        assert 3 <= len(sent) < 20, sent
        env.d.wait_for_log(f"broadcast cut: stopping: {len(sent)} recipient(s) gone past, "
                           "the rest left",
                           timeout=1)
        assert "dead-lettered" not in env.d.log_text()

        srv.slow = 0
        env.d.start().wait_healthy()
        env.d.wait_for_log(f"broadcast cut: {20 - len(sent)} sent, {len(sent)} already done",
                           timeout=60)
        assert sorted(r for _, r in srv.accepted) == sorted(f"{u}@example.com" for u in ids)
    finally:
        srv.stop()


def test_a_mail_holding_the_store_past_its_busy_wait_is_a_503_with_retry_after(
        evhostd, tmp_path, unique_name, kafka_bootstrap):
    # A welcome to a server that never greets holds the plugin's store (its
    # handler's transaction) for smtp_timeout_ms. A broadcast's outbox write
    # waits 5 s for it, then answers as services.md says: 503 with
    # Retry-After: 1, from the host (it answered 500 "publish"). The list
    # reads in a read transaction: answered at once (it waited 5 s too, then
    # answered 503).
    srv = RawSmtp(greet=False)
    try:
        env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
                  {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{srv.port}",
                   "smtp_timeout_ms": 60000, "list_role": "", "retry.max_attempts": 1},
                  user=False)
        lib.kafka_produce(env.topics["created"],
                          {"id": "u-hold", "name": "Hold", "email": "hold@example.com"},
                          key="u-hold", brokers=kafka_bootstrap,
                          headers={"ce_id": "hold-1", "ce_type": "user.created"})
        lib.wait_until(lambda: len(srv.conns) >= 1, timeout=30,
                       message="the welcome's connection")
        r = env.d.get("/notifications", timeout=30)
        assert r.status_code == 200, r.text
        admin = lib.sign_token((tmp_path / "jwt.key").read_bytes(), "ops", roles=("admin",))
        r = env.d.post("/notifications/broadcast", json={"subject": "S", "message": "M"},
                       headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        assert r.status_code == 503 and r.headers.get("Retry-After") == "1", r.text
        assert len(srv.conns) == 1  # the same mail held it throughout
        # The server gone, the held mail fails at once (one attempt): its
        # dead letter is in Kafka before the daemon's stop, which then has
        # none left to finish.
        srv.stop()
        letters = lib.kafka_consume(f"{env.topics['created']}.notifications.dlq", count=1,
                                    timeout=30, brokers=kafka_bootstrap)
        assert [m["headers"]["ce_id"] for m in letters] == ["hold-1"]
    finally:
        srv.stop()


def settled(env, event_id, timeout=30):
    """The log entry of `event_id` once it is sent, failed or dead_lettered."""
    return lib.wait_until(
        lambda: next((i for i in env.d.get("/notifications").json()["items"]
                      if i["event_id"] == event_id
                      and i["status"] in ("sent", "failed", "dead_lettered")), None),
        timeout=timeout, message=f"{event_id} sent, failed or dead_lettered")


@pytest.mark.parametrize("replies", [
    {"GREET": ["554 5.3.2 No SMTP service here, try later"]},
    {"EHLO": ["502 5.5.2 EHLO not known"], "HELO": ["550 5.7.1 Not now"]},
], ids=["554 greeting", "HELO refused"])
def test_a_5xx_before_the_mail_is_retried_not_failed(evhostd, tmp_path, unique_name,
                                                      kafka_bootstrap, replies):
    # A 5xx greeting or HELO refuses the session, whoever the mail is for:
    # the server's trouble, not the recipient's. Failed for good, the
    # welcome mail would be lost (and a broadcast lost for every recipient);
    # it is retried, and sent once the server greets again.
    srv = RawSmtp(replies=replies)
    try:
        env = raw_smtp_env(evhostd, tmp_path, unique_name, kafka_bootstrap, srv, attempts=3)
        addr = env.created("greet-1", user_id="u-greet-1")
        entry = settled(env, "greet-1")
        assert entry["status"] == "sent" and entry["attempts"] == 2, entry
        assert [r for _, r in srv.accepted] == [addr]
    finally:
        srv.stop()


def test_a_connection_the_server_closed_while_idle_is_not_reused(evhostd, tmp_path, unique_name,
                                                                 kafka_bootstrap):
    # Postfix and Exim end a connection left idle too long with "421 4.4.2
    # timeout" and hang up. The next mail must go on a new connection, at
    # its first attempt: read as the answer to its MAIL, that 421 would fail
    # a mail the server never saw (a dead letter at the last attempt).
    srv = RawSmtp(bye="421 4.4.2 raw Error: timeout exceeded")
    try:
        env = raw_smtp_env(evhostd, tmp_path, unique_name, kafka_bootstrap, srv, attempts=3)
        first = env.created("bye-1", user_id="u-bye-1")
        assert env.entry_once("bye-1", "sent")["attempts"] == 1
        second = env.created("bye-2", user_id="u-bye-2")
        entry = settled(env, "bye-2")
        assert entry["status"] == "sent" and entry["attempts"] == 1, entry
        assert [r for _, r in srv.accepted] == [first, second]
        assert len(srv.conns) == 2, srv.conns
    finally:
        srv.stop()


NO_AUTH = ", but 127.0.0.1 offered no AUTH"


@pytest.mark.parametrize("where", ["smtp_user", "smtp_url"])
def test_a_user_set_for_a_server_that_offers_no_auth_is_warned_of(evhostd, tmp_path, where,
                                                                  unique_name, kafka_bootstrap):
    # libcurl skips AUTH without a word when the server's EHLO lists none:
    # the credentials an admin set would go unused, unseen. The mail still
    # goes out (a relay that trusts this host takes it), and that is said,
    # once: not again for the next connection's mail. libcurl logs in with a
    # user in the URL as with smtp_user: that one is warned of too.
    srv = RawSmtp(bye="421 4.4.2 raw Error: timeout exceeded")  # a connection per mail
    try:
        pw = tmp_path / "smtp.password"
        pw.write_text("s3cret-Passw0rd\n")
        pw.chmod(0o600)
        keys = ({"smtp_url": f"smtp://127.0.0.1:{srv.port}", "smtp_user": "mailer",
                 "smtp_password_file": str(pw)} if where == "smtp_user"
                else {"smtp_url": f"smtp://mailer@127.0.0.1:{srv.port}"})
        env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
                  {"transport": "smtp", "list_role": "", **keys}, user=False)
        env.created("noauth-1", user_id="u-noauth-1")
        assert env.entry_once("noauth-1", "sent")["attempts"] == 1
        env.created("noauth-2", user_id="u-noauth-2")
        assert settled(env, "noauth-2")["status"] == "sent"
        assert len(srv.accepted) == 2 and len(srv.conns) == 2, srv.conns
        assert not any(c.upper().startswith("AUTH") for conn in srv.conns for c in conn)
        said = [ln for ln in env.d.log_text().splitlines() if NO_AUTH in ln]
        assert len(said) == 1 and "WARN" in said[0], said
        assert ("smtp_user is set" if where == "smtp_user"
                else "smtp_url names a user") + NO_AUTH in said[0], said
        assert "smtp_starttls = true" in said[0]
    finally:
        srv.stop()


def test_a_server_gone_silent_does_not_hold_the_stop(evhostd, tmp_path, unique_name,
                                                     kafka_bootstrap):
    # The connection kept for the next mail is closed at the stop with a
    # QUIT. A server that no longer answers (a firewall dropped the idle
    # connection) must not hold the stop for smtp_timeout_ms, waiting for
    # the reply: past stop_timeout + 10 s the daemon gives up with status 3.
    srv = RawSmtp(replies={"QUIT": [None]})
    try:
        env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
                  {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{srv.port}",
                   "smtp_timeout_ms": 120000, "list_role": ""},
                  user=False)
        env.created("quiet-1", user_id="u-quiet-1")
        assert env.entry_once("quiet-1", "sent")["attempts"] == 1
        assert env.d.stop(timeout=60) == 0, env.d.log_tail()
        assert srv.conns[-1][-1] == "QUIT", srv.conns  # said, its reply not awaited
    finally:
        srv.stop()


def test_the_error_of_a_mail_quotes_the_reply_to_it_and_no_other(evhostd, tmp_path, unique_name,
                                                                 kafka_bootstrap):
    # libcurl says QUIT after a refusal: its "221" must not hide the reply
    # that refused the mail (a greylisting is told from a full mailbox by
    # its text). And a command the server never answered has no reply: the
    # "250" to the one before it is not quoted as the server's answer.
    srv = RawSmtp(replies={"RCPT": ["550 5.1.1 <x@example.com>: Recipient address rejected",
                                    None]})
    try:
        env = raw_smtp_env(evhostd, tmp_path, unique_name, kafka_bootstrap, srv, attempts=1)
        env.created("quote-1", user_id="u-quote-1")
        failed = settled(env, "quote-1")
        assert failed["status"] == "failed", failed
        assert failed["last_error"].endswith(
            '(server replied "550 5.1.1 <address> Recipient address rejected")'), failed
        env.created("quote-2", user_id="u-quote-2")
        parked = settled(env, "quote-2")
        assert parked["status"] == "dead_lettered", parked
        assert "Timeout was reached" in parked["last_error"], parked
        assert "server replied" not in parked["last_error"], parked
    finally:
        srv.stop()


def mail_metrics(d):
    """notifications_mails_total by result, and how many sends
    notifications_send_seconds counted, from /metrics."""
    text = d.get("/metrics").text
    mails = {m.group(1): int(m.group(2)) for m in re.finditer(
        r'^notifications_mails_total\{plugin="notifications",result="(\w+)"\} (\d+)$', text,
        re.M) if int(m.group(2))}  # those at 0, there from the start, left out
    count = re.search(r'^notifications_send_seconds_count\{plugin="notifications"\} (\d+)$',
                      text, re.M)
    return mails, int(count.group(1)) if count else 0


def test_undeliverable_mail_is_failed_or_dead_lettered_and_the_user_kept(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
               "list_role": "", "retry.max_attempts": 3, "retry.backoff_ms": 100,
               "retry.backoff_max_ms": 200},
              user=False)

    def entry(event_id, status):
        return lib.wait_until(
            lambda: next((i for i in env.d.get("/notifications").json()["items"]
                          if i["event_id"] == event_id and i["status"] == status), None),
            timeout=30, message=f"a {status} entry for {event_id}")

    # Refused for good (5xx): failed at once, and that is the end of it.
    smtp_server.reply = "550 5.1.1 Mailbox unavailable"
    gone = f"gone.{uuid.uuid4().hex[:8]}@example.com"
    lib.kafka_produce(env.topics["created"], {"id": "u-gone", "name": "Gone", "email": gone},
                      key="u-gone", brokers=kafka_bootstrap,
                      headers={"ce_id": "gone-1", "ce_type": "user.created"})
    failed = entry("gone-1", "failed")
    assert failed["attempts"] == 1 and "550" in failed["last_error"]
    assert failed["recipient"] == gone

    # Temporary trouble that outlasts the retries: dead_lettered after the
    # last one, and the event waits in the dead-letter topic for a redrive.
    smtp_server.reply = "451 4.3.0 Try again later"
    busy = f"busy.{uuid.uuid4().hex[:8]}@example.com"
    lib.kafka_produce(env.topics["created"], {"id": "u-busy", "name": "Busy", "email": busy},
                      key="u-busy", brokers=kafka_bootstrap,
                      headers={"ce_id": "busy-1", "ce_type": "user.created"})
    parked = entry("busy-1", "dead_lettered")
    assert parked["attempts"] == 3 and "451" in parked["last_error"]
    # The row commits first; the dead letter follows it.
    letters = lib.kafka_consume(f"{env.topics['created']}.notifications.dlq", count=1,
                                timeout=30, brokers=kafka_bootstrap)
    assert [m["headers"]["ce_id"] for m in letters] == ["busy-1"]
    assert "451" in letters[0]["headers"]["evhost_dlq_error"]

    # Mail trouble is not bad data: both users stay recipients (of later
    # broadcasts).
    assert set(env.recipients()) == {"u-gone", "u-busy"}
    # The outcome is in the table: a restart keeps it.
    env.d.stop()
    d2 = evhostd(env.config, config_dir=env.d.config_dir, state_dir=env.d.state_dir,
                 brokers=kafka_bootstrap)
    items = {i["event_id"]: i for i in d2.get("/notifications").json()["items"]}
    assert items["gone-1"]["status"] == "failed"
    assert items["busy-1"]["status"] == "dead_lettered"
    assert smtp_server.messages == []


# The delivery log as the plugin's first schema (migration 1) made it.
LOG_V1 = """
CREATE TABLE evh_migrations(version INTEGER PRIMARY KEY, applied_at TEXT);
INSERT INTO evh_migrations VALUES (1, '2026-11-01T00:00:00.000Z');
CREATE TABLE recipients (user_id TEXT PRIMARY KEY, email TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '', updated_at TEXT NOT NULL);
CREATE TABLE notifications_log (event_id TEXT PRIMARY KEY, recipient TEXT NOT NULL,
  template TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('sent', 'retrying', 'failed')),
  attempts INTEGER NOT NULL, last_error TEXT, created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL);
CREATE INDEX notifications_log_page ON notifications_log (created_at, event_id);
CREATE INDEX notifications_log_recipient ON notifications_log (recipient, created_at, event_id);
INSERT INTO notifications_log VALUES ('old-1', 'old@example.com', 'welcome', 'failed', 1,
  '550 gone', '2026-11-01T00:00:00.000Z', '2026-11-01T00:00:01.000Z');
"""


def test_delivery_log_of_the_first_schema_is_upgraded(evhostd, tmp_path, unique_name,
                                                      kafka_bootstrap):
    state = tmp_path / "old-state"
    state.mkdir()
    db = sqlite3.connect(state / "notifications.db")
    db.executescript(LOG_V1)
    db.close()
    # log_retention = 0: the row's date, fixed, is past the default one day.
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"list_role": "", "log_retention": 0}, user=False, state_dir=state)
    items = {i["event_id"]: i for i in env.d.get("/notifications").json()["items"]}
    assert items["old-1"]["status"] == "failed"
    assert items["old-1"]["last_error"] == "550 gone"
    assert items["old-1"]["created_at"] == "2026-11-01T00:00:00.000Z"
    db = sqlite3.connect(state / "notifications.db")
    try:
        assert [r[0] for r in db.execute("SELECT version FROM evh_migrations ORDER BY 1")] \
            == [1, 2, 3, 4, 5]
        assert db.execute("SELECT COUNT(*) FROM deleted_recipients").fetchone() == (0,)
        indexes = {r[0] for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'notifications_log'"
            " AND sql IS NOT NULL")}
        assert indexes == {"notifications_log_page", "notifications_log_recipient",
                           "notifications_log_parked"}
        with db:
            db.execute("INSERT INTO notifications_log VALUES ('new-1', 'new@example.com',"
                       " 'welcome', 'dead_lettered', 5, 'down', 'x', 'x')")
    finally:
        db.close()


def stamp(days_ago):
    """A created_at/updated_at/deleted_at of `days_ago` days ago, as the
    plugin writes them."""
    t = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days_ago)
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_log_retention_prunes_what_is_settled_past_it_and_keeps_the_rest(
        evhostd, tmp_path, unique_name, kafka_bootstrap):
    """log_retention: the delivery log's rows and the deleted users older
    than it go, in batches (more than one of each here), at the start and
    every minute; rows changed within it stay, and so do the settled rows
    of a broadcast with a mail dead-lettered within it (its redrive must not
    mail them again)."""
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"list_role": "", "log_retention": "30d"}, user=False)
    old, older, recent = stamp(40), stamp(45), stamp(1)
    rows = [  # event_id, template, status, created_at, updated_at
        ("w-old-sent", "welcome", "sent", old, old),
        ("w-old-failed", "welcome", "failed", old, old),
        ("w-old-parked", "welcome", "dead_lettered", old, old),
        ("w-redriven", "welcome", "sent", old, recent),
        ("w-new", "welcome", "sent", recent, recent),
        # Waits for its redrive: its sent mail's row stays with it.
        ("b1:u1", "broadcast", "sent", older, older),
        ("b1:u2", "broadcast", "dead_lettered", older, recent),
        # Dead-lettered longer ago than the retention: all of it goes.
        ("b2:u1", "broadcast", "sent", older, older),
        ("b2:u2", "broadcast", "dead_lettered", older, older),
        # A broadcast id with a ':' in it.
        ("b:3:u1", "broadcast", "failed", older, older),
        ("b:3:u2", "broadcast", "dead_lettered", older, recent),
    ]
    # Past two full batches (1000 rows), after the rows kept above.
    rows += [(f"bulk-{i:04d}", "welcome", "sent", old, old) for i in range(2500)]
    con = env.db()
    try:
        with con:
            con.executemany(
                "INSERT INTO notifications_log (event_id, recipient, template, status,"
                " attempts, last_error, created_at, updated_at)"
                " VALUES (?, 'someone@example.com', ?, ?, 1, NULL, ?, ?)", rows)
            con.executemany("INSERT INTO deleted_recipients (user_id, deleted_at) VALUES (?, ?)",
                            [("gone-new", recent)] +
                            [(f"gone-{i:04d}", old) for i in range(1200)])
    finally:
        con.close()
    # The start prunes at once (the running one's next round is a minute off).
    env.d.stop()
    d2 = evhostd(env.config, config_dir=env.d.config_dir, state_dir=env.d.state_dir,
                 brokers=kafka_bootstrap)
    d2.wait_for_log("[notifications] log_retention: ", timeout=30)
    assert ("log_retention: 2505 delivery log row(s) and 1200 deleted user(s) older than "
            in d2.log_text()), d2.log_tail()
    con = env.db()
    try:
        left = {r[0] for r in con.execute("SELECT event_id FROM notifications_log")}
        gone = {r[0] for r in con.execute("SELECT user_id FROM deleted_recipients")}
    finally:
        con.close()
    assert left == {"w-redriven", "w-new", "b1:u1", "b1:u2", "b:3:u1", "b:3:u2"}
    assert gone == {"gone-new"}
    assert {i["event_id"] for i in d2.get("/notifications").json()["items"]} == left


def test_log_retention_is_checked_before_the_start(evhostd):
    for value, said in [
            ("90 days", 'log_retention: must be a duration such as 90d, 36h or 2160h, or 0 to '
                        'keep forever (got "90 days")'),
            ("-1d", 'log_retention: must be a duration such as 90d, 36h or 2160h, or 0 to keep '
                    'forever (got "-1d")'),
            ("12h", 'log_retention: must be 0 (keep forever) or from 1d to 36500d (got "12h"): '
                    'the rows of a broadcast are what keeps its retries and redrive from '
                    'mailing again those it reached'),
            ("86399999ms", 'log_retention: must be 0 (keep forever) or from 1d to 36500d (got '
                           '"86399999ms")'),
            ("36501d", 'log_retention: must be 0 (keep forever) or from 1d to 36500d (got '
                       '"36501d")')]:
        dropins = {"30-notifications.conf": ("# mail\n[plugin.notifications]\n"
                                             f"templates_dir = {TEMPLATES}\n"
                                             f"log_retention = {value}\n")}
        needle = f"conf.d/30-notifications.conf:4: [plugin.notifications] {said}"
        r = evhostd.run(["--check-config"], dropins=dropins)
        assert r.returncode == 1 and needle in r.stdout, r.stdout
    # 0, a day and the host's units are taken.
    for value in ("0", "1d", "24h", "86400", "86400000ms", "2160h", "36500d"):
        r = evhostd.run(["--check-config"], config={"plugin.notifications": {
            "templates_dir": str(TEMPLATES), "log_retention": value}})
        assert r.returncode == 0, (value, r.stdout, r.stderr)


# ---------------------------------------------------------------- broadcast


def test_an_update_after_the_clock_was_set_back_is_not_taken_for_an_older_one(
        evhostd, build_dir, tmp_path, unique_name, kafka_bootstrap):
    # The daemon's wall clock 2 minutes ahead (faults.so, while the file
    # exists) when a user's address changes to A, then set back, and the
    # address changes to B. notifications orders a user's updates by
    # ce_time: B, stamped 2 minutes before A, was taken for the older and
    # ignored, broadcasts going to A until a later update. ce_time is held at
    # the latest given now, until the clock catches up.
    switch = tmp_path / "clock-ahead"
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              env=lib.faults_preloaded(build_dir, wall_clock_ahead_s=120,
                                       wall_clock_ahead_file=switch))
    tag = uuid.uuid4().hex[:8]
    user = env.create_user("Ada", f"ada.{tag}@example.com")
    admin = env.auth()
    switch.touch()
    a, b = f"ada.a.{tag}@example.com", f"ada.b.{tag}@example.com"
    assert env.d.patch(f"/users/{user['id']}", json={"email": a}, headers=admin).status_code == 200
    lib.wait_until(lambda: env.recipients().get(user["id"], (None,))[0] == a, timeout=30,
                   message="the recipient at A")
    switch.unlink()
    assert env.d.patch(f"/users/{user['id']}", json={"email": b}, headers=admin).status_code == 200
    lib.wait_until(lambda: env.recipients().get(user["id"], (None,))[0] == b, timeout=30,
                   message="the recipient at B, the later update")
    # The step back says how far ahead events' time is held (a clock set
    # ahead by mistake would hold it there until a restart).
    env.d.wait_for_log("[host] the wall clock went back ", timeout=10)
    held = re.search(r"\[host\] the wall clock went back .*; events published until it catches "
                     r"up carry the latest time given, (\d+)\.\d{3} s ahead of it ",
                     env.d.log_text())
    assert held and 60 <= int(held.group(1)) <= 120, env.d.log_text()


def test_broadcast_reaches_every_current_user(evhostd, tmp_path, unique_name, kafka_bootstrap,
                                              smtp_server):
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"})
    tag = uuid.uuid4().hex[:8]
    ada = env.create_user("Ada", f"ada.{tag}@example.com")
    bob = env.create_user("Bob", f"bob.{tag}@example.com")
    cyd = env.create_user("Cyd", f"cyd.{tag}@example.com")
    for a in (ADMIN_EMAIL, ada["email"], bob["email"], cyd["email"]):
        smtp_server.wait_for(welcome_to(a), timeout=60)
    admin = env.token()

    # Bob moves to a new address, Cyd leaves: the read model follows.
    bob_new = f"bob.new.{tag}@example.com"
    r = env.d.patch(f"/users/{bob['id']}", json={"email": bob_new}, headers=env.auth(admin))
    assert r.status_code == 200, r.text
    assert env.d.delete(f"/users/{cyd['id']}", headers=env.auth(admin)).status_code == 204
    lib.wait_until(lambda: env.recipients().get(bob["id"], (None,))[0] == bob_new
                   and cyd["id"] not in env.recipients(),
                   timeout=30, message="recipients to follow the update and the delete")

    # Who may broadcast, and what a broadcast needs.
    body = {"subject": "Maintenance tonight ✓", "message": "We will be down 22:00–23:00.\nSorry!"}
    assert env.d.post("/notifications/broadcast", json=body).status_code == 401
    r = env.d.post("/notifications/broadcast", json=body,
                   headers=env.auth(env.token(ada["email"], PASSWORD)))
    assert r.status_code == 403
    for bad, field in (({"message": "m"}, "subject"), ({"subject": "s"}, "message"),
                       ({"subject": "  ", "message": "m"}, "subject"),
                       ({"subject": "s", "message": 7}, "message"),
                       ({"subject": "x" * 999, "message": "m"}, "subject")):
        r = env.d.post("/notifications/broadcast", json=bad, headers=env.auth(admin))
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert r.json().get("field") == field, r.text
    for bad in ([], ["subject", "message"], "a text", 7, None):
        r = env.d.post("/notifications/broadcast", data=json.dumps(bad),
                       headers={**env.auth(admin), "Content-Type": "application/json"})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["detail"] == "the body must be a JSON object", r.text

    # under the body limit (1 MiB), over what one Kafka message may carry: its
    # event could never be sent (and would hold back every broadcast after it).
    # The 413 says the event's size (its data and its key, the 36-byte id) and
    # the limit, the numbers of the host's warning; not "see the log".
    r = env.d.post("/notifications/broadcast", json={"subject": "s", "message": "m" * 1_030_000},
                   headers=env.auth(admin))
    assert r.status_code == 413, r.text
    p = r.json()
    assert p["field"] == "message"
    event = {"broadcast_id": "0" * 36, "subject": "s", "message": "m" * 1_030_000,
             "requested_by": token_subject(admin)}
    size = len(json.dumps(event, separators=(",", ":"))) + 36
    assert f"the broadcast's event would be {size} bytes" in p["detail"], p
    assert "at most 998976 bytes" in p["detail"], p
    assert "log" not in p["detail"], p
    env.d.wait_for_log(f"the event's key and data are {size} bytes, more than a message may"
                       " carry (998976")

    r = env.d.post("/notifications/broadcast", json=body, headers=env.auth(admin))
    assert r.status_code == 202, r.text
    bid = r.json()["broadcast_id"]
    uuid.UUID(bid)

    expected = {ADMIN_EMAIL, ada["email"], bob_new}
    is_broadcast = lambda m: subject(m) == body["subject"]  # noqa: E731
    lib.wait_until(lambda: {m.envelope_to[0] for m in smtp_server.messages
                            if is_broadcast(m)} >= expected,
                   timeout=60, message=f"the broadcast at {expected}")
    time.sleep(1.0)  # anything wrongly sent twice or to Cyd/Bob's old address shows up now
    got = sorted(m.envelope_to[0] for m in smtp_server.messages if is_broadcast(m))
    assert got == sorted(expected)
    m = next(m for m in smtp_server.messages if is_broadcast(m) and
             m.envelope_to == [ada["email"]])
    assert "Hello Ada," in part(m, "text/plain")
    assert "We will be down 22:00–23:00.\r\nSorry!" in part(m, "text/plain") or \
        "We will be down 22:00–23:00.\nSorry!" in part(m, "text/plain")

    # Each delivery is in the log as <broadcast_id>:<user_id>.
    entry = env.log_entry(f"{bid}:{ada['id']}", token=admin, status="sent")
    assert entry["template"] == "broadcast" and entry["recipient"] == ada["email"]
    env.log_entry(f"{bid}:{bob['id']}", token=admin, status="sent")

    # The broadcast event on Kafka, as any consumer sees it.
    [ev] = lib.kafka_consume(env.topics["broadcast"], count=1, timeout=15,
                             brokers=kafka_bootstrap)
    assert ev["key"] == bid and ev["headers"]["ce_type"] == "NOTIFICATION_BROADCAST"


def test_broadcast_redelivery_sends_nothing_twice(evhostd, tmp_path, unique_name,
                                                  kafka_bootstrap, smtp_server):
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"})
    tag = uuid.uuid4().hex[:8]
    ada = env.create_user("Ada", f"ada.{tag}@example.com")
    smtp_server.wait_for(welcome_to(ada["email"]), timeout=60)
    smtp_server.wait_for(welcome_to(ADMIN_EMAIL), timeout=30)
    admin = env.token()
    r = env.d.post("/notifications/broadcast", json={"subject": "Once", "message": "only once"},
                   headers=env.auth(admin))
    assert r.status_code == 202
    bid = r.json()["broadcast_id"]
    smtp_server.wait_for_count(4, timeout=60)  # 2 welcomes + 2 broadcast mails

    # Replayed under a new event id (e.g. re-produced from a DLQ): the log's
    # <broadcast_id>:<user_id> keys still stop a second mail.
    [ev] = lib.kafka_consume(env.topics["broadcast"], count=1, timeout=15,
                             brokers=kafka_bootstrap)
    headers = dict(ev["headers"], ce_id=str(uuid.uuid4()))
    lib.kafka_produce(env.topics["broadcast"], ev["value"], key=ev["key"], headers=headers,
                      brokers=kafka_bootstrap)
    env.d.wait_for_log(f"broadcast {bid}: 0 sent, 2 already done", timeout=30)
    assert len([m for m in smtp_server.messages if subject(m) == "Once"]) == 2


def test_broadcast_retried_after_a_restart_mails_only_those_not_served(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    # One recipient's mail fails for a reason that may pass: the broadcast is
    # retried (KEEP_AND_RETRY), the rows of the mails that left committed.
    # A restart meanwhile forgets the memory, not the rows: the retry mails
    # only the recipient not served (RETRY rolled them back, and every
    # recipient got the broadcast again).
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
               "retry.max_attempts": 20, "retry.backoff_ms": 3000,
               "retry.backoff_max_ms": 3000})
    tag = uuid.uuid4().hex[:8]
    ada = env.create_user("Ada", f"ada.{tag}@example.com")
    bob = env.create_user("Bob", f"bob.{tag}@example.com")
    for addr in (ada["email"], bob["email"], ADMIN_EMAIL):
        smtp_server.wait_for(welcome_to(addr), timeout=60)
    admin = env.token()
    smtp_server.replies[bob["email"]] = "451 4.3.0 try again later"
    try:
        r = env.d.post("/notifications/broadcast", json={"subject": "Kept", "message": "once"},
                       headers=env.auth(admin))
        assert r.status_code == 202, r.text
        bid = r.json()["broadcast_id"]
        env.d.wait_for_log(f"broadcast {bid}: 2 sent, 0 already done, 0 failed, 1 to retry",
                           timeout=60)
        assert env.d.stop() == 0  # within the 3 s backoff: the event is not committed
    finally:
        smtp_server.replies.pop(bob["email"], None)
    env.d.start().wait_healthy()
    env.d.wait_for_log(f"broadcast {bid}: 1 sent, 2 already done", timeout=60)
    kept = [m for m in smtp_server.messages if subject(m) == "Kept"]
    assert sorted(m.envelope_to[0] for m in kept) == sorted(
        [ada["email"], bob["email"], ADMIN_EMAIL]), [m.envelope_to for m in kept]


@contextlib.contextmanager
def greylisted(smtp_server, addr):
    """The SMTP server answers mail to `addr` 451 (greylisting) meanwhile."""
    smtp_server.replies[addr] = "451 4.7.1 greylisted, try again later"
    try:
        yield
    finally:
        smtp_server.replies.pop(addr, None)


def greylisted_env(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    """An Env whose welcome mails are retried up to 100 times, each after a
    delay drawn from 0-1.5 s (full jitter: 0.75 s on average). The budget,
    about 75 s, outlasts the tests' 60 s waits while a mail is retried: with
    20 attempts (15 s) a loaded sanitizer run could use them all up first."""
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
               "retry.max_attempts": 100, "retry.backoff_ms": 1500,
               "retry.backoff_max_ms": 1500}, create_topics=True)
    smtp_server.wait_for(welcome_to(ADMIN_EMAIL), timeout=60)
    return env


def test_a_user_deleted_while_its_welcome_mail_is_retried_stays_deleted(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    # The welcome mail fails for a reason that may pass (greylisting's 451),
    # and the user deletes the account before the retry. The deletion (on
    # another topic) is handled meanwhile; the retry must neither mail the
    # deleted account nor bring its recipient back, which every broadcast
    # would then mail.
    env = greylisted_env(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server)
    addr = f"grey.{uuid.uuid4().hex[:8]}@example.com"
    with greylisted(smtp_server, addr):
        user = env.create_user("Grey", addr)
        # The server's reply is said, not only its code.
        env.d.wait_for_log('attempt 2/100 failed (smtp: Weird server reply (server replied '
                           '"451 4.7.1 greylisted, try again later"))', timeout=60)
        admin = env.token()
        r = env.d.delete(f"/users/{user['id']}", headers=env.auth(admin))
        assert r.status_code == 204, r.text
        lib.wait_until(lambda: user["id"] not in env.recipients(), timeout=30,
                       message="the recipient removed")
    env.d.wait_for_log(f"user {user['id']} was deleted", timeout=60)
    assert user["id"] not in env.recipients()
    r = env.d.post("/notifications/broadcast", json={"subject": "After", "message": "hi"},
                   headers=env.auth(admin))
    assert r.status_code == 202, r.text
    env.d.wait_for_log(f"broadcast {r.json()['broadcast_id']}: 1 sent", timeout=60)
    assert not [m for m in smtp_server.messages if addr in m.envelope_to], \
        [(m.envelope_to, subject(m)) for m in smtp_server.messages]


def broadcast_to_the_greylisted(env, admin, subject_text):
    """POST a broadcast as `admin` and wait for its first attempt: the
    administrator mailed, the greylisted user to retry. Its id."""
    r = env.d.post("/notifications/broadcast", json={"subject": subject_text, "message": "hi"},
                   headers=env.auth(admin))
    assert r.status_code == 202, r.text
    bid = r.json()["broadcast_id"]
    env.d.wait_for_log(f"broadcast {bid}: 1 sent, 0 already done, 0 failed, 1 to retry",
                       timeout=60)
    return bid


def test_a_deleted_users_retried_mails_do_not_stay_retrying_in_the_log(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    # The welcome mail and a broadcast to a greylisted user are retried
    # ("retrying" in the log, from memory); the user is deleted. The next
    # attempts find no one to mail, and the log no longer says retrying:
    # before, both stayed "retrying" until a restart, though no attempt was
    # left to make.
    env = greylisted_env(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server)
    addr = f"gone.{uuid.uuid4().hex[:8]}@example.com"

    def retrying(admin):
        return sorted(i["template"] for i in env.log(admin, limit=100)["items"]
                      if i["recipient"] == addr and i["status"] == "retrying")
    with greylisted(smtp_server, addr):
        user = env.create_user("Gone", addr)
        env.d.wait_for_log("attempt 2/100 failed", timeout=60)
        admin = env.token()
        bid = broadcast_to_the_greylisted(env, admin, "Soon")
        assert retrying(admin) == ["broadcast", "welcome"]
        r = env.d.delete(f"/users/{user['id']}", headers=env.auth(admin))
        assert r.status_code == 204, r.text
        env.d.wait_for_log(f"user {user['id']} was deleted", timeout=60)
        env.d.wait_for_log(f"broadcast {bid}: 0 sent, 1 already done, 0 failed, 0 to retry",
                           timeout=60)
    assert retrying(admin) == [], env.log(admin, limit=100)
    assert not [m for m in smtp_server.messages if addr in m.envelope_to]


def test_a_user_whose_welcome_mail_is_retried_gets_the_broadcasts_sent_meanwhile(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    # The welcome mail is greylisted (451) and retried. The user is a
    # recipient from the first attempt on (KEEP_AND_RETRY commits the row;
    # RETRY rolled it back): a broadcast sent meanwhile reaches the user once
    # the server takes its mail.
    env = greylisted_env(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server)
    addr = f"grey.{uuid.uuid4().hex[:8]}@example.com"
    with greylisted(smtp_server, addr):
        user = env.create_user("Grey", addr)
        env.d.wait_for_log("attempt 2/100 failed", timeout=60)
        assert env.recipients().get(user["id"]) == (addr, "Grey")
        broadcast_to_the_greylisted(env, env.token(), "Meanwhile")
    smtp_server.wait_for(welcome_to(addr), timeout=60)
    smtp_server.wait_for(lambda m: addr in m.envelope_to and subject(m) == "Meanwhile",
                         timeout=60)


def test_an_address_changed_while_the_welcome_mail_is_retried_gets_it(
        evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server):
    # The address given at sign-up is greylisted (or mistyped); the user
    # changes it while the welcome mail is retried. The retry sends it to the
    # new address, and the creation does not put the old one back.
    env = greylisted_env(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server)
    tag = uuid.uuid4().hex[:8]
    old, new = f"typo.{tag}@example.com", f"fixed.{tag}@example.com"
    with greylisted(smtp_server, old):
        user = env.create_user("Moved", old)
        env.d.wait_for_log("attempt 2/100 failed", timeout=60)
        r = env.d.patch(f"/users/{user['id']}", json={"email": new},
                        headers=env.auth(env.token()))
        assert r.status_code == 200, r.text
        smtp_server.wait_for(welcome_to(new), timeout=60)
        assert env.recipients().get(user["id"]) == (new, "Moved")
        assert not [m for m in smtp_server.messages if old in m.envelope_to]


# ------------------------------------------- a user's events handled out of order


def event_times(n):
    """n RFC 3339 times (milliseconds, UTC), a second apart, in the past."""
    base = int(time.time()) - 300
    return [time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + i)) + ".250Z"
            for i in range(n)]


def user_event(env, kind, data, event_id, when=None, seq=None):
    """A user event produced to its topic as user.so's host would: ce_time
    (when it was published) and evhost_seq (its place in the outbox), when
    given. Returns once the broker has it."""
    headers = {"ce_id": event_id, "ce_type": f"user.{kind}", "ce_source": "tests/user"}
    if when is not None:
        headers["ce_time"] = when
    if seq is not None:
        headers["evhost_seq"] = str(seq)
    lib.kafka_produce(env.topics[kind], data, key=data["id"], brokers=env.brokers,
                      headers=headers)


def wait_handled(env, event_id, timeout=30):
    """Until the plugin's inbox records `event_id` (handled and committed)."""
    def seen():
        con = env.db()
        try:
            return con.execute("SELECT 1 FROM evh_inbox WHERE event_id = ?",
                               (event_id,)).fetchone()
        except sqlite3.OperationalError:  # the store not made yet, or busy
            return None
        finally:
            con.close()
    lib.wait_until(seen, timeout=timeout, message=f"event {event_id} handled")


def raw_user_env(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server, state_dir=None,
                 notif=None):
    """notifications.so alone (no user.so): the test produces the user events."""
    return Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
               {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
                "list_role": "", **(notif or {})}, user=False, create_topics=True,
               state_dir=state_dir)


def broadcast_raw(env, bid, subject_text):
    lib.kafka_produce(env.topics["broadcast"],
                      {"broadcast_id": bid, "subject": subject_text, "message": "hi"},
                      key=bid, brokers=env.brokers,
                      headers={"ce_id": f"ev-{bid}", "ce_type": "NOTIFICATION_BROADCAST"})


def test_an_update_handled_before_the_creation_is_not_lost(evhostd, tmp_path, unique_name,
                                                           kafka_bootstrap, smtp_server):
    # The user events travel on three topics: the user's update (published
    # after its creation) can be handled before the creation. The newer data
    # must win: the name of a name-only update, the address of an
    # address-only one; the creation fills in only what no update gave.
    env = raw_user_env(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server)
    tag = uuid.uuid4().hex[:8]
    t_created, t_updated = event_times(2)
    named, moved = f"named-{tag}", f"moved-{tag}"
    first, old, new = (f"{x}.{tag}@example.com" for x in ("first", "old", "new"))

    user_event(env, "updated", {"id": named, "name": "Renamed"}, f"up-{named}", t_updated, 2)
    user_event(env, "updated", {"id": moved, "email": new}, f"up-{moved}", t_updated, 4)
    wait_handled(env, f"up-{named}")
    wait_handled(env, f"up-{moved}")
    # A name-only update of a user not yet created makes no recipient yet:
    # there is no address to mail.
    broadcast_raw(env, f"b1-{tag}", "Before")
    env.d.wait_for_log(f"broadcast b1-{tag}: 1 sent", timeout=60)
    assert not [m for m in smtp_server.messages if subject(m) == "Before"
                and m.envelope_to != [new]]

    user_event(env, "created", {"id": named, "name": "Original", "email": first},
               f"cr-{named}", t_created, 1)
    user_event(env, "created", {"id": moved, "name": "Ada", "email": old},
               f"cr-{moved}", t_created, 3)
    msg = smtp_server.wait_for(welcome_to(first), timeout=60)
    assert subject(msg) == "Welcome, Renamed!" and to_addr(msg) == ("Renamed", first)
    msg = smtp_server.wait_for(welcome_to(new), timeout=60)
    assert subject(msg) == "Welcome, Ada!" and to_addr(msg) == ("Ada", new)
    assert not [m for m in smtp_server.messages if old in m.envelope_to]
    wait_handled(env, f"cr-{named}")  # the mail leaves before the commit
    wait_handled(env, f"cr-{moved}")
    recipients = env.recipients()
    assert recipients[named] == (first, "Renamed")
    assert recipients[moved] == (new, "Ada")


def test_user_updates_handled_out_of_order_keep_the_newest(evhostd, tmp_path, unique_name,
                                                           kafka_bootstrap, smtp_server):
    # Two updates of one user handled in the wrong order (a dead-lettered
    # update redriven after a newer one, a producer spreading one user over
    # partitions): the older must not overwrite the newer. Ordered by the
    # events' own ce_time, then evhost_seq; the creation is older than any
    # update. A deleted user stays deleted, whatever update comes late. A
    # deletion reads only the id: an "email" it has no use for (blank here,
    # from another producer) does not turn it away.
    env = raw_user_env(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server)
    tag = uuid.uuid4().hex[:8]
    t0, t1, t2, t3 = event_times(4)
    late, tie, gone = f"late-{tag}", f"tie-{tag}", f"gone-{tag}"
    addr = {k: f"{k}.{tag}@example.com" for k in ("a0", "a1", "a2", "b0", "b1", "b2", "g0", "g1")}

    user_event(env, "created", {"id": late, "name": "V0", "email": addr["a0"]}, f"c-{late}",
               t0, 1)
    user_event(env, "created", {"id": tie, "name": "W0", "email": addr["b0"]}, f"c-{tie}",
               t0, 2)
    user_event(env, "created", {"id": gone, "name": "G0", "email": addr["g0"]}, f"c-{gone}",
               t0, 3)
    for a in ("a0", "b0", "g0"):
        smtp_server.wait_for(welcome_to(addr[a]), timeout=60)

    # Newer first, then older: by time, and (same ce_time) by evhost_seq.
    user_event(env, "updated", {"id": late, "name": "V2", "email": addr["a2"]}, f"u2-{late}",
               t2, 20)
    user_event(env, "updated", {"id": tie, "name": "W2", "email": addr["b2"]}, f"u2-{tie}",
               t1, 21)
    wait_handled(env, f"u2-{late}")
    wait_handled(env, f"u2-{tie}")
    user_event(env, "updated", {"id": late, "name": "V1", "email": addr["a1"]}, f"u1-{late}",
               t1, 10)
    user_event(env, "updated", {"id": tie, "name": "W1", "email": addr["b1"]}, f"u1-{tie}",
               t1, 11)
    # Deleted, then an update with a later time: no resurrection.
    user_event(env, "deleted", {"id": gone, "email": ""}, f"d-{gone}", t2, 30)
    wait_handled(env, f"d-{gone}")
    user_event(env, "updated", {"id": gone, "name": "G1", "email": addr["g1"]}, f"u-{gone}",
               t3, 31)
    user_event(env, "updated", {"id": gone, "name": "G2"}, f"un-{gone}", t3, 32)
    for e in (f"u1-{late}", f"u1-{tie}", f"u-{gone}", f"un-{gone}"):
        wait_handled(env, e)

    recipients = env.recipients()
    assert recipients.get(late) == (addr["a2"], "V2")
    assert recipients.get(tie) == (addr["b2"], "W2")
    assert gone not in recipients
    broadcast_raw(env, f"b-{tag}", "News")
    env.d.wait_for_log(f"broadcast b-{tag}: 2 sent", timeout=60)
    news = {m.envelope_to[0]: to_addr(m)[0] for m in smtp_server.messages
            if subject(m) == "News"}
    assert news == {addr["a2"]: "V2", addr["b2"]: "W2"}

    # An update without ce_time (a plain producer's) counts as of its
    # handling: it is the newest.
    user_event(env, "updated", {"id": late, "name": "Plain"}, f"p-{late}")
    wait_handled(env, f"p-{late}")
    assert env.recipients().get(late) == (addr["a2"], "Plain")


def test_an_old_update_from_user_so_handled_late_changes_nothing(evhostd, tmp_path, unique_name,
                                                                kafka_bootstrap, smtp_server):
    # user.so's host stamps its events with ce_time and evhost_seq. A copy of
    # an old update handled after a newer one (a dead letter redriven comes
    # after the newer events of its key) must not undo the newer one.
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"},
              create_topics=True)
    addr = f"redrive.{uuid.uuid4().hex[:8]}@example.com"
    user = env.create_user("First", addr)
    smtp_server.wait_for(welcome_to(addr), timeout=60)
    admin = env.auth(env.token())
    for name in ("Second", "Third"):
        r = env.d.patch(f"/users/{user['id']}", json={"name": name}, headers=admin)
        assert r.status_code == 200, r.text
    lib.wait_until(lambda: env.recipients().get(user["id"]) == (addr, "Third"), timeout=30,
                   message="the recipient renamed twice")
    old = next(m for m in lib.kafka_consume(env.topics["updated"], timeout=15,
                                            brokers=kafka_bootstrap)
               if m["key"] == user["id"] and json.loads(m["value"])["name"] == "Second")
    assert old["headers"].get("ce_time") and old["headers"].get("evhost_seq"), old["headers"]
    headers = dict(old["headers"], ce_id=f"again-{old['headers']['ce_id']}")
    lib.kafka_produce(env.topics["updated"], old["value"], key=user["id"],
                      brokers=kafka_bootstrap, headers=headers)
    wait_handled(env, headers["ce_id"])
    assert env.recipients()[user["id"]] == (addr, "Third")


RECIPIENTS_V3 = """
CREATE TABLE evh_migrations(version INTEGER PRIMARY KEY, applied_at TEXT);
INSERT INTO evh_migrations VALUES (1, '2026-11-01T00:00:00.000Z'),
  (2, '2026-11-01T00:00:00.000Z'), (3, '2026-11-01T00:00:00.000Z');
CREATE TABLE recipients (user_id TEXT PRIMARY KEY, email TEXT NOT NULL,
  name TEXT NOT NULL DEFAULT '', updated_at TEXT NOT NULL);
CREATE TABLE notifications_log (event_id TEXT PRIMARY KEY, recipient TEXT NOT NULL,
  template TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('sent', 'retrying', 'failed', 'dead_lettered')),
  attempts INTEGER NOT NULL, last_error TEXT, created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL);
CREATE INDEX notifications_log_page ON notifications_log (created_at, event_id);
CREATE INDEX notifications_log_recipient ON notifications_log (recipient, created_at, event_id);
CREATE TABLE deleted_recipients (user_id TEXT PRIMARY KEY, deleted_at TEXT NOT NULL);
INSERT INTO recipients VALUES ('old-user', 'old.user@example.com', 'Old Name',
  '2026-11-01T00:00:00.000Z');
INSERT INTO deleted_recipients VALUES ('old-gone', '2026-11-01T00:00:00.000Z');
"""


def test_recipients_of_the_third_schema_are_upgraded_in_place(evhostd, tmp_path, unique_name,
                                                             kafka_bootstrap, smtp_server):
    state = tmp_path / "v3-state"
    state.mkdir()
    db = sqlite3.connect(state / "notifications.db")
    db.executescript(RECIPIENTS_V3)
    db.close()
    # log_retention = 0: old-gone's date, fixed, is past the default one day.
    env = raw_user_env(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server,
                       state_dir=state, notif={"log_retention": 0})
    con = env.db()
    try:
        assert [r[0] for r in con.execute("SELECT version FROM evh_migrations ORDER BY 1")] \
            == [1, 2, 3, 4, 5]
        assert con.execute("SELECT user_id FROM deleted_recipients").fetchall() == [("old-gone",)]
    finally:
        con.close()
    assert env.recipients() == {"old-user": ("old.user@example.com", "Old Name")}
    t_created, t_updated = event_times(2)

    # What was there before is newer than any creation (a replayed or
    # retried one changes nothing), older than any update.
    user_event(env, "created", {"id": "old-user", "name": "Creation", "email": "c@example.com"},
               "old-c", t_created, 1)
    msg = smtp_server.wait_for(welcome_to("old.user@example.com"), timeout=60)
    assert subject(msg) == "Welcome, Old Name!"
    user_event(env, "updated", {"id": "old-user", "name": "New Name"}, "old-u", t_updated, 2)
    wait_handled(env, "old-u")
    assert env.recipients()["old-user"] == ("old.user@example.com", "New Name")

    # A waiting recipient (no address yet) whose creation never came is
    # dropped after 30 days, when the next one is written.
    con = env.db()
    try:
        with con:
            con.execute("INSERT INTO recipients (user_id, email, name, updated_at, email_version,"
                        " name_version) VALUES ('stale', NULL, 'S', '2000-01-01T00:00:00.000Z',"
                        " NULL, 'x')")
    finally:
        con.close()
    user_event(env, "updated", {"id": "fresh", "name": "F"}, "fresh-u", t_updated, 3)
    wait_handled(env, "fresh-u")
    recipients = env.recipients()
    assert "stale" not in recipients and recipients["fresh"] == (None, "F")


# ---------------------------------------------------------------- the log


def test_log_pages_and_rejects_bad_paging(evhostd, tmp_path, unique_name, kafka_bootstrap):
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap, {"transport": "maildir"})
    tag = uuid.uuid4().hex[:8]
    for i in range(4):
        env.create_user(f"User {i}", f"u{i}.{tag}@example.com")
    admin = env.token()
    lib.wait_until(lambda: len(env.log(admin)["items"]) >= 5, timeout=60,
                   message="5 welcome mails (4 users + admin) in the log")

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = env.log(admin, **params)
        assert len(page["items"]) <= 2
        seen += page["items"]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
        assert pages < 10
    assert pages == 3 and len(seen) == 5
    assert len({i["event_id"] for i in seen}) == 5
    keys = [(i["created_at"], i["event_id"]) for i in seen]
    assert keys == sorted(keys, reverse=True)  # newest first

    one = env.log(admin, recipient=f"u2.{tag}@example.com")["items"]
    assert [i["recipient"] for i in one] == [f"u2.{tag}@example.com"]
    assert env.log(admin, recipient="nobody@example.com")["items"] == []

    for params, field in (({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"),
                          ({"limit": "ten"}, "limit"), ({"cursor": "not-a-cursor!"}, "cursor"),
                          ({"cursor": "eWVzdGVyZGF5fHg"}, "cursor"),
                          # given empty: refused, as user and crud refuse theirs, not read
                          # as absent (the first page, every recipient's rows)
                          ({"cursor": ""}, "cursor"), ({"recipient": ""}, "recipient"),
                          ({"limit": ""}, "limit"),
                          # given twice: the first was read, the second dropped unsaid
                          ({"recipient": ["a@example.com", "b@example.com"]}, "recipient"),
                          ({"limit": ["2", "x"]}, "limit")):
        r = env.d.get("/notifications", params=params, headers=env.auth(admin))
        assert r.status_code == 422, (params, r.text)
        assert r.json().get("field") == field
        assert field in r.json()["detail"], r.json()
    # A filter whose escape is broken is refused, not dropped (every recipient's
    # rows), naming the parameter as crud does; a broken name is said, unnamed.
    rule = "(each % must be followed by two hex digits, and %00 is not allowed)"
    for query, field in (("recipient=u2%2", "recipient"), ("recipient=%zz", "recipient"),
                         ("recipient=a%00b", "recipient"), ("limit=2&cursor=%4", "cursor"),
                         ("recip%69ent=%zz", "recipient"), ("recip%zzent=a", None)):
        status, _, body = env.d.get_raw("/notifications?" + query, headers=env.auth(admin))
        assert status == 422, (query, body)
        assert body.get("field") == field, (query, body)
        if field:
            assert body["detail"] == (f"the value of query parameter '{field}' has a malformed"
                                      f" percent-escape {rule}"), (query, body)
        else:
            assert body["detail"] == ("a parameter name in the query string has a malformed"
                                      f" percent-escape {rule}"), (query, body)
    # Bytes that are not UTF-8 (Latin-1's %E9): an empty page, as if nobody
    # had been written to; now said.
    for query in ("recipient=caf%E9%40example.com", "recipient=%FF"):
        status, _, body = env.d.get_raw("/notifications?" + query, headers=env.auth(admin))
        assert (status, body.get("field")) == (422, "recipient"), (query, body)
        assert body["detail"].startswith("the value of query parameter 'recipient' is not UTF-8"
                                         " once percent-decoded (byte 0x"), body


def test_bad_configuration_is_refused_with_a_reason(evhostd, tmp_path):
    cases = [
        ({"transport": "pigeon"}, "transport: must be smtp or maildir"),
        ({"transport": "smtp"}, "smtp_url: must start with smtp:// or smtps://"),
        ({"transport": "smtp", "smtp_url": "http://x"}, "smtp_url: must start"),
        ({"from": "not an address"}, "from: must be"),
        ({"templates_dir": str(tmp_path / "none")},
         f"[plugin.notifications] templates_dir: cannot read '{tmp_path / 'none'}'"),
        # A directory without the templates: the plugin's own check.
        ({"templates_dir": str(tmp_path)}, "welcome.subject"),
        ({"transport": "smtp", "smtp_url": "smtp://127.0.0.1:1", "smtp_user": "u"},
         "smtp_password_file is not"),
        ({"topic.user_updated": "USER_CREATED"}, "must differ"),
        ({"topic.broadcast": "has space"},
         "topic.broadcast: 'has space' is not a Kafka topic name"),
        ({"topic.user_deleted": "t" * 250}, "topic.user_deleted: 'ttt"),
        ({"broadcast_commit_every": 0},
         "broadcast_commit_every: must be between 1 and 4096 (got 0)"),
        ({"broadcast_commit_every": 4097},
         "broadcast_commit_every: must be between 1 and 4096 (got 4097)"),
        ({"transport": "smtp", "smtp_url": "smtp://"}, "smtp_url: names no host"),
        ({"transport": "smtp", "smtp_url": "smtp://x:99999999"},
         "smtp_url: has port \"99999999\": a port is a number from 1 to 65535"),
        # The host's [kafka] retry.* ranges; 0 takes the host's value.
        ({"retry.max_attempts": 1000000},
         "retry.max_attempts: must be 0 (the host's [kafka] retry.max_attempts) or between "
         "1 and 1000 (got 1000000)"),
        ({"retry.max_attempts": 1001}, "retry.max_attempts: must be 0"),
        ({"retry.max_attempts": -1}, "retry.max_attempts: must be 0"),
        ({"retry.backoff_ms": 3600001},
         "retry.backoff_ms: must be 0 (the host's [kafka] retry.backoff_ms) or between 1 and "
         "3600000"),
        ({"retry.backoff_max_ms": 86400001}, "or between 1 and 86400000 (got 86400001)"),
        ({"retry.backoff_ms": 500, "retry.backoff_max_ms": 400},
         "retry.backoff_max_ms: 400 must not be below retry.backoff_ms (500)"),
    ]
    for keys, needle in cases:
        conf = {"templates_dir": str(TEMPLATES), **keys}
        r = evhostd.run([], config={"plugin.notifications": conf}, timeout=30)
        assert r.returncode != 0, keys
        assert needle in r.stderr, (keys, r.stderr)

    bad = tmp_path / "bad-templates"
    bad.mkdir()
    for f in TEMPLATES.iterdir():
        (bad / f.name).write_text(f.read_text())
    (bad / "welcome.txt").write_text("Hi {{nmae}}\n")
    r = evhostd.run([], config={"plugin.notifications": {"templates_dir": str(bad)}}, timeout=30)
    assert r.returncode != 0 and "unknown placeholder {{nmae}}" in r.stderr, r.stderr

    # A template saved as Latin-1 would go out labelled UTF-8, showing stray
    # characters: refused, naming the file and the byte.
    (bad / "welcome.txt").write_text((TEMPLATES / "welcome.txt").read_text())
    (bad / "welcome.subject").write_bytes(b"\xa1Bienvenido, {{name}}!\n")
    r = evhostd.run([], config={"plugin.notifications": {"templates_dir": str(bad)}}, timeout=30)
    assert r.returncode != 0 and \
        f"{bad}/welcome.subject: invalid UTF-8 at byte 0 (save the file as UTF-8)" in r.stderr, \
        r.stderr

    # `from` likewise (the configuration's values are bytes as written), and a
    # display name too long for the header's buffer is refused, not cut.
    config_dir, _, _ = evhostd.write_config(
        {"plugin.notifications": {"templates_dir": str(TEMPLATES),
                                  "from": "Notificacion <noreply@example.org>"}})
    conf = config_dir / "evhost.conf"
    conf.write_bytes(conf.read_bytes().replace(b"Notificacion", b"Notificaci\xf3n"))
    r = subprocess.run([str(evhostd.binary), "-c", str(conf), "--check-config"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 1 and \
        b"from: invalid UTF-8 at byte 10 (save the file as UTF-8)" in r.stdout, r.stdout
    r = evhostd.run([], config={"plugin.notifications": {
        "templates_dir": str(TEMPLATES), "from": "\u00e9" * 128 + " <noreply@example.org>"}},
        timeout=30)
    assert r.returncode != 0 and "from: the display name is longer than 255 bytes" in r.stderr, \
        r.stderr

    # An EVH_CFG_DIR key: --check-config finds a missing directory at its line.
    r = evhostd.run(["--check-config"],
                    config={"plugin.notifications": {"templates_dir": str(tmp_path / "none")}})
    assert r.returncode == 1 and "evhost.conf:" in r.stdout, r.stdout
    assert f"templates_dir: cannot read '{tmp_path / 'none'}': No such file" in r.stdout
