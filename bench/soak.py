#!/usr/bin/env python3
"""Soak: evhostd with its three plugins under a steady, mixed, modest load for a
while, sampled for growth and checked for loss. Run by `scripts/bench --soak
MINUTES`, which starts the broker.

The load (paced, far below what the machine can take: the point is time, not speed):
users registered, logging in, renaming themselves, a third of them deleting
themselves, signing out; crud documents created, read, replaced under If-Match,
listed with a filter and deleted; event streams opened by a user for a few seconds
and closed; an admin broadcast every few minutes; /metrics scraped; a reload every
minute, every other one turning crud off and, the next, on again (its plugin
unloaded and loaded).

Sampled every 10 s: evhostd's resident memory, open files, threads, the state
directory's databases and WAL files, the outbox, the mails written. At the end,
every user created must have its welcome mail: the mails missing are reported
(loss), as are the requests that failed. Figures are printed and written to
--out; nothing is asserted (docs/benchmarks.md, "Soak")."""

import argparse
import datetime
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (Proc, rss_kb, free_port, wait_until, versions)

SAMPLE_S = 10
DRAIN_S = 300  # at most, after the load, for the mails still to come
WARMUP_S = 60  # growth is measured from the end of the first minute
RELOGIN_S = 1800  # a long-lived client's new token, well inside user.so's token_ttl (1 h)
ADMIN_EMAIL = "soak-admin@example.com"
ADMIN_PASSWORD = "soak admin password"
PASSWORD = "soak password 1"


class Soak:
    def __init__(self, args):
        self.build = Path(args.build_dir).resolve()
        self.work = Path(args.work).resolve()
        self.brokers = args.brokers
        self.seconds = args.minutes * 60
        self.dir = self.work / "soak"
        self.state = self.dir / "state"
        self.maildir = self.dir / "maildir"
        self.confd = self.dir / "conf.d"
        self.port = bench.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.statuses = {}  # "route status" -> count
        self.failures = []  # first few unexpected answers, for the report
        self.emails = []  # every user created
        self.deleted_emails = set()  # those deleted again
        self.counts = {"users": 0, "deleted": 0, "docs": 0, "streams": 0,
                       "stream_events": 0, "broadcasts": 0, "reloads": 0}
        self.crud_on = True
        self.crud_changed = 0.0
        self.read_mails, self.welcomed = set(), set()  # welcome_missing's

    # ------------------------------------------------------------ daemon

    def write_config(self):
        for d in (self.state, self.maildir, self.confd):
            d.mkdir(parents=True, exist_ok=True)
        (self.dir / "jwt.key").write_text("soak-" + "k" * 40 + "\n")
        (self.dir / "admin.password").write_text(ADMIN_PASSWORD + "\n")
        (self.dir / "evhost.conf").write_text(
            "[host]\n"
            f"plugin_dir = {self.build / 'plugins'}\n"
            f"state_dir = {self.state}\n"
            "source = evhost://soak\n"
            "[http]\n"
            f"listen = 127.0.0.1:{self.port}\n"
            "[kafka]\n"
            f"brokers = {self.brokers}\n"
            "[auth]\n"
            f"jwt_secret_file = {self.dir / 'jwt.key'}\n"
            "[log]\n"
            "level = warn\n"
            "format = text\n")
        (self.confd / "10-user.conf").write_text(
            "[plugin.user]\nenabled = true\n"
            "argon2_opslimit = min\nargon2_memlimit = min\n"
            f"admin_email = {ADMIN_EMAIL}\n"
            f"admin_password_file = {self.dir / 'admin.password'}\n")
        self.write_crud(True)
        (self.confd / "30-notifications.conf").write_text(
            "[plugin.notifications]\nenabled = true\ntransport = maildir\n"
            f"maildir = {self.maildir}\n"
            f"templates_dir = {bench.ROOT / 'plugins' / 'notifications' / 'templates'}\n")

    def write_crud(self, on):
        (self.confd / "20-crud.conf").write_text(
            f"[plugin.crud]\nenabled = {'true' if on else 'false'}\n"
            "collections = products\n"
            "collection.products.required = name, price\n"
            "collection.products.types = name:string, price:number, stock:integer\n")

    def start(self):
        self.write_config()
        self.proc = bench.Proc("evhostd-soak", [self.build / "host" / "evhostd", "-c",
                                                self.dir / "evhost.conf"], self.work)
        bench.wait_until(lambda: requests.get(self.url + "/readyz", timeout=2).status_code
                         == 200, 60, f"{self.url}/readyz", 0.1, self.proc)

    # ----------------------------------------------------------- requests

    def note(self, route, status, ok, detail=""):
        with self.lock:
            key = f"{route} {status}"
            self.statuses[key] = self.statuses.get(key, 0) + 1
            if not ok and len(self.failures) < 20:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {key} {detail[:200]}")

    def call(self, conn, route, method, path, body=None, headers=None, expect=(200,),
             tolerate=()):
        """One request on a kept-alive connection; the status, the parsed body.
        `tolerate`: statuses counted but not unexpected (a function giving
        them, asked when the answer comes). A connection the server closed
        while it was idle (civetweb's keep_alive_timeout_ms, 500 ms) is
        opened again and the request sent once more, as HTTP clients do:
        the server never read it."""
        h = {"Content-Type": "application/json"} if body is not None else {}
        h.update(headers or {})
        for attempt in (1, 2):
            try:
                conn.request(method, path, None if body is None else json.dumps(body), h)
                r = conn.getresponse()
                raw = r.read()
                status, rh = r.status, dict(r.getheaders())
                break
            except (http.client.RemoteDisconnected, BrokenPipeError,
                    ConnectionResetError) as e:
                conn.close()
                if attempt == 2:
                    self.note(route, "error", False, repr(e))
                    return None, None, {}
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self.note(route, "error", False, repr(e))
                return None, None, {}
        if callable(tolerate):
            tolerate = tolerate()
        ok = status in expect or status in tolerate
        self.note(route, status, ok, raw.decode(errors="replace"))
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        return status, doc, rh

    def pace(self, every, t0, i):
        delay = t0 + i * every - time.monotonic()
        if delay > 0:
            self.stop_flag.wait(delay)

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def login(self, c, email, password):
        st, doc, _ = self.call(c, "login", "POST", "/auth/login",
                               {"email": email, "password": password})
        return doc["token"] if st == 200 and doc else None

    # ------------------------------------------------------------ workers

    def users(self, per_s):
        c, t0, i = self.conn(), time.monotonic(), 0
        while not self.stop_flag.is_set():
            self.pace(1 / per_s, t0, i)
            i += 1
            email = f"soak-{os.getpid()}-{i}@example.com"
            st, doc, _ = self.call(c, "users.create", "POST", "/users",
                                   {"name": f"Soak {i}", "email": email,
                                    "password": PASSWORD}, expect=(201,))
            if st != 201 or not doc:
                continue
            with self.lock:
                self.emails.append(email)
                self.counts["users"] += 1
            uid = doc["id"]
            tok = self.login(c, email, PASSWORD)
            if not tok:
                continue
            auth = {"Authorization": f"Bearer {tok}"}
            self.call(c, "users.patch", "PATCH", f"/users/{uid}", {"name": f"Soak {i}b"},
                      auth)
            self.call(c, "users.get", "GET", f"/users/{uid}")
            if i % 3 == 0:
                st, _, _ = self.call(c, "users.delete", "DELETE", f"/users/{uid}",
                                     headers=auth, expect=(204,))
                if st == 204:
                    with self.lock:
                        self.counts["deleted"] += 1
                        self.deleted_emails.add(email)
            else:
                self.call(c, "logout", "POST", "/auth/logout", headers=auth, expect=(204,))
        c.close()

    def crud(self, per_s):
        c, t0, i = self.conn(), time.monotonic(), 0
        while not self.stop_flag.is_set():
            self.pace(1 / per_s, t0, i)
            i += 1
            tol = self.crud_tolerated
            st, doc, rh = self.call(c, "crud.create", "POST", "/crud/products",
                                    {"name": f"w{i}", "price": i % 100 + 0.5,
                                     "stock": i % 7, "tags": ["soak"]},
                                    expect=(201,), tolerate=tol)
            if st != 201 or not doc:
                continue
            with self.lock:
                self.counts["docs"] += 1
            path = f"/crud/products/{doc['id']}"
            st, _, rh = self.call(c, "crud.get", "GET", path, tolerate=tol)
            etag = rh.get("ETag")
            if st == 200 and etag:
                self.call(c, "crud.put", "PUT", path, {"name": f"w{i}", "price": 1.0,
                                                       "stock": 1},
                          {"If-Match": etag}, tolerate=tol)
            self.call(c, "crud.list", "GET", f"/crud/products?limit=5&stock={i % 7}",
                      tolerate=tol)
            if i % 2 == 0:
                self.call(c, "crud.delete", "DELETE", path, expect=(204,), tolerate=tol)
        c.close()

    def crud_tolerated(self):
        """crud is off, or was turned on or off in the last 5 s: 404 (no
        route) and 503 (draining, restarting) are its answers then."""
        off = not self.crud_on or time.monotonic() - self.crud_changed < 5
        return (404, 503) if off else ()

    def streams(self):
        """A user of its own opens its event stream for 3 s, reads it, closes it."""
        c = self.conn()
        email = f"soak-watcher-{os.getpid()}@example.com"
        st, doc, _ = self.call(c, "users.create", "POST", "/users",
                               {"name": "Watcher", "email": email, "password": PASSWORD},
                               expect=(201,))
        tok = self.login(c, email, PASSWORD) if st == 201 else None
        c.close()
        if not tok:
            return
        with self.lock:
            self.emails.append(email)
            self.counts["users"] += 1
        logged_in = time.monotonic()
        while not self.stop_flag.is_set():
            if time.monotonic() - logged_in > RELOGIN_S:  # user.so's tokens last an hour
                c = self.conn()
                tok, logged_in = self.login(c, email, PASSWORD) or tok, time.monotonic()
                c.close()
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                s.sendall(("GET /notifications/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           f"Authorization: Bearer {tok}\r\nAccept: text/event-stream\r\n"
                           "\r\n").encode())
                s.settimeout(0.5)
                end, got = time.monotonic() + 3, b""
                while time.monotonic() < end:
                    try:
                        chunk = s.recv(65536)
                    except socket.timeout:
                        continue
                    if not chunk:
                        break
                    got += chunk
                s.close()
                status = got.split(b" ", 2)[1].decode() if got.startswith(b"HTTP/") else "none"
                self.note("stream", status, status == "200", got[:200].decode(errors="replace"))
                with self.lock:
                    self.counts["streams"] += 1
                    self.counts["stream_events"] += got.count(b"\ndata:")
            except OSError as e:
                self.note("stream", "error", False, repr(e))
            self.stop_flag.wait(0.5)

    def admin(self, broadcast_every):
        c = self.conn()
        tok, last_broadcast = self.login(c, ADMIN_EMAIL, ADMIN_PASSWORD), time.monotonic()
        logged_in = time.monotonic()
        while not self.stop_flag.wait(5):
            if time.monotonic() - logged_in > RELOGIN_S:
                tok, logged_in = self.login(c, ADMIN_EMAIL, ADMIN_PASSWORD) or tok, time.monotonic()
            self.call(c, "metrics", "GET", "/metrics")
            if tok and time.monotonic() - last_broadcast >= broadcast_every:
                last_broadcast = time.monotonic()
                st, _, _ = self.call(c, "broadcast", "POST", "/notifications/broadcast",
                                     {"subject": "Soak", "message": "a soak broadcast"},
                                     {"Authorization": f"Bearer {tok}"}, expect=(202,))
                if st == 202:
                    with self.lock:
                        self.counts["broadcasts"] += 1
        c.close()

    def reloads(self, every):
        n = 0
        while not self.stop_flag.wait(every):
            n += 1
            if n % 2 == 0:
                self.crud_on = not self.crud_on
                self.crud_changed = time.monotonic()
                self.write_crud(self.crud_on)
            os.kill(self.proc.pid, signal.SIGHUP)
            with self.lock:
                self.counts["reloads"] += 1
        if not self.crud_on:  # end with crud loaded, as it started
            self.crud_on = True
            self.crud_changed = time.monotonic()
            self.write_crud(True)
            os.kill(self.proc.pid, signal.SIGHUP)

    # ----------------------------------------------------------- sampling

    def metric(self, text, name, label=None):
        """The series of `name` summed (those with `label`, 'k="v"', if given),
        or None when there is none."""
        total = None
        for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M):
            if label is None or label in (m.group(1) or ""):
                total = (total or 0) + float(m.group(2))
        return total

    def lag(self, plugin):
        """evhost_consumer_lag summed over the plugin's partitions, or None."""
        try:
            text = requests.get(self.url + "/metrics", timeout=10).text
        except requests.RequestException:
            return None
        return self.metric(text, "evhost_consumer_lag", f'plugin="{plugin}"')

    def mails(self):
        return sum(len(os.listdir(self.maildir / d)) for d in ("new", "cur")
                   if (self.maildir / d).is_dir())

    def sample(self, t0):
        pid = self.proc.pid
        with open(f"/proc/{pid}/status") as f:
            threads = int(next(l for l in f if l.startswith("Threads:")).split()[1])
        files = {p.name: p.stat().st_size for p in self.state.rglob("*")
                 if p.is_file() and re.search(r"\.db(-wal)?$", p.name)}
        try:
            text = requests.get(self.url + "/metrics", timeout=10).text
        except requests.RequestException:
            text = ""
        return {
            "t": round(time.monotonic() - t0),
            "rss_kb": bench.rss_kb(pid),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": threads,
            "db_kb": round(sum(v for k, v in files.items() if k.endswith(".db")) / 1024),
            "wal_kb": round(sum(v for k, v in files.items() if k.endswith("-wal")) / 1024),
            "outbox": self.metric(text, "evhost_outbox_pending"),
            "mails": self.mails(),
            "users": self.counts["users"],
        }

    # -------------------------------------------------------------- report

    def welcome_missing(self):
        """Emails of users created, and not deleted, without a welcome mail
        in the maildir. A user deleted before notifications.so handled its
        creation (USER_DELETED and USER_CREATED are on different topics)
        gets none, by design: those are welcome_skipped_deleted."""
        for d in ("new", "cur"):
            for p in (self.maildir / d).iterdir() if (self.maildir / d).is_dir() else ():
                if p.name in self.read_mails:  # a mail's file never changes
                    continue
                head = p.read_bytes()[:4096].decode(errors="replace")
                m = re.search(r"^To: .*?<([^>]+)>", head, re.M)
                welcome = re.search(r"^Subject: Welcome", head, re.M | re.I)
                self.read_mails.add(p.name)
                if welcome and m:
                    self.welcomed.add(m.group(1))
        return [e for e in self.emails if e not in self.welcomed and
                e not in self.deleted_emails]

    def welcome_skipped_deleted(self):
        return len([e for e in self.deleted_emails if e not in self.welcomed])


def slope_per_min(samples, key):
    """Least-squares slope of `key` over the samples after the warm-up, per minute."""
    pts = [(s["t"], s[key]) for s in samples if s["t"] >= WARMUP_S and s[key] is not None]
    if len(pts) < 3:
        return None
    n = len(pts)
    mx, my = sum(p[0] for p in pts) / n, sum(p[1] for p in pts) / n
    den = sum((p[0] - mx) ** 2 for p in pts)
    return round(60 * sum((p[0] - mx) * (p[1] - my) for p in pts) / den, 1) if den else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="scripts/bench --soak")
    ap.add_argument("--users-per-s", type=float, default=4)
    ap.add_argument("--crud-per-s", type=float, default=20)
    ap.add_argument("--broadcast-every", type=float, default=180, metavar="SECONDS")
    args = ap.parse_args()
    s = Soak(args)
    s.start()
    bench.say(f"soak: evhostd pid {s.proc.pid} on {s.url}, {args.minutes:g} min; "
              f"its log is copied beside the results at the end")
    workers = [threading.Thread(target=s.users, args=(args.users_per_s,), daemon=True),
               threading.Thread(target=s.crud, args=(args.crud_per_s,), daemon=True),
               threading.Thread(target=s.streams, daemon=True),
               threading.Thread(target=s.admin, args=(args.broadcast_every,), daemon=True),
               threading.Thread(target=s.reloads, args=(60,), daemon=True)]
    t0 = time.monotonic()
    for w in workers:
        w.start()
    samples, died = [], None
    while time.monotonic() - t0 < s.seconds:
        time.sleep(min(SAMPLE_S, max(0.1, s.seconds - (time.monotonic() - t0))))
        if not s.proc.alive():
            died = s.proc.log_tail()
            break
        samples.append(s.sample(t0))
        last = samples[-1]
        if last["t"] % 60 < SAMPLE_S:
            bench.say("soak: t={t}s rss={rss_kb} kB fds={fds} threads={threads} "
                      "db={db_kb} kB wal={wal_kb} kB outbox={outbox} mails={mails} "
                      "users={users}".format(**last))
    s.stop_flag.set()
    for w in workers:
        w.join(60)
    missing, lag = s.emails, None
    if died is None:
        # The mails still to come: the notifications consumer's backlog (a
        # broadcast to thousands of users is ahead of the last welcomes) is
        # waited for while it shrinks, at most DRAIN_S.
        deadline, caught_up = time.monotonic() + DRAIN_S, None
        while (missing := s.welcome_missing()) and time.monotonic() < deadline:
            lag = s.lag("notifications")
            if lag == 0:  # nothing left to handle for 5 s: what is missing is lost
                caught_up = caught_up or time.monotonic()
                if time.monotonic() - caught_up >= 5:
                    break
            else:
                caught_up = None
            time.sleep(1)
        lag = s.lag("notifications")
        samples.append(s.sample(t0))
    s.proc.stop()
    after = [x for x in samples if x["t"] >= WARMUP_S] or samples
    fig = {
        "minutes": args.minutes,
        "rss_kb_after_warmup": after[0]["rss_kb"] if after else None,
        "rss_kb_end": samples[-1]["rss_kb"] if samples else None,
        "rss_kb_max": max((x["rss_kb"] for x in samples), default=None),
        "rss_kb_per_min": slope_per_min(samples, "rss_kb"),
        "fds_after_warmup": after[0]["fds"] if after else None,
        "fds_end": samples[-1]["fds"] if samples else None,
        "fds_max": max((x["fds"] for x in samples), default=None),
        "threads_after_warmup": after[0]["threads"] if after else None,
        "threads_end": samples[-1]["threads"] if samples else None,
        "threads_max": max((x["threads"] for x in samples), default=None),
        "wal_kb_max": max((x["wal_kb"] for x in samples), default=None),
        "db_kb_end": samples[-1]["db_kb"] if samples else None,
        **s.counts,
        "mails": samples[-1]["mails"] if samples else None,
        "welcome_missing": len(missing),
        "welcome_skipped_deleted": s.welcome_skipped_deleted(),
        "notifications_lag_end": lag,
        "daemon_died": died is not None,
        "exit_code": s.proc.p.returncode,
    }
    doc = {"figures": fig, "statuses": dict(sorted(s.statuses.items())),
           "unexpected": s.failures, "samples": samples,
           "settings": {"users_per_s": args.users_per_s, "crud_per_s": args.crud_per_s,
                        "sample_s": SAMPLE_S, "warmup_s": WARMUP_S,
                        "reload_every_s": 60, "broadcast_every_s": args.broadcast_every},
           "machine": bench.machine(), "command": args.command,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    # scripts/bench removes its work directory after a run that passed: the
    # daemon's log (a sanitized build's reports, warnings) is kept here.
    log_copy = out.with_suffix(".evhostd.log")
    shutil.copyfile(s.proc.log_path, log_copy)
    print(f"evhostd's log: {log_copy}")
    width = max(len(k) for k in fig)
    for k, v in fig.items():
        print(f"{k:<{width}}  {v}")
    bad = {k: v for k, v in s.statuses.items()
           if not k.split()[1].isdigit() or int(k.split()[1]) >= 500}
    print(f"answers: {sum(s.statuses.values())}; 5xx or no answer: {sum(bad.values())} "
          f"{bad if bad else ''}; unexpected (not while crud was being turned on or off): "
          f"{len(s.failures)}")
    for line in s.failures:
        print(f"  unexpected: {line}")
    if died is not None:
        print(f"evhostd died during the soak:\n{died}")
    print(f"results in {out}")
    return 1 if died is not None or missing or s.proc.p.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
