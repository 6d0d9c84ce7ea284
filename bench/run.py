#!/usr/bin/python3
"""The measurements behind scripts/bench (which builds, starts Kafka and calls
this with Debian's python3). Every pair runs back to back on the same broker
with the same settings; the table and bench/results/latest.json give both
sides and their ratio next to the issue's target. Nothing is asserted: the
machine is shared and the absolute numbers drift, so read the ratios.

Order, so that nothing measured runs next to something else loading the CPU:
  1. HTTP: evhostd with user, crud and notifications (RSS idle), wrk GET
     /crud/products/ID, then bare civetweb with the same bytes; wrk POST
     /crud/products (RSS at the end).
  2. Node (Express + KafkaJS api, KafkaJS sink): RSS idle, wrk POST, RSS at
     the end; end to end POST -> sink at a fixed rate.
  3. evhostd with crud and the bench plugin: end to end POST /crud/e2e ->
     the bench plugin's handler at the same rate; then the floor under both,
     a bare librdkafka producer -> consumer at that rate (no HTTP, storage or
     dispatch): what this machine and broker allow this hour.
  4. publish: the bench plugin through the SDK until delivered, then the
     bare librdkafka producer, same messages and producer settings.
  5. consume the events of 4: bare librdkafka, bare librdkafka with a durable
     SQLite inbox, KafkaJS, evhostd's handler.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "bench" / "node-baseline"
WRK_SCRIPT = ROOT / "bench" / "wrk.lua"

PROFILES = {
    # Every key is produced by both; quick only shortens the runs.
    "quick": {"http_seconds": 3, "http_warmup_seconds": 1, "events": 5000, "e2e_seconds": 3,
              "settle_seconds": 1},
    "full": {"http_seconds": 15, "http_warmup_seconds": 3, "events": 300000,
             "e2e_seconds": 20, "settle_seconds": 3},
}
COMMON = {
    "wrk_threads": 2,
    "wrk_connections": 16,
    "http_threads": 32,  # evhostd's [http] threads default; bare civetweb gets the same
    "e2e_rate": 500,
    # Client connections of the end-to-end runs (both sides). Fewer than
    # http_threads: civetweb keeps a worker on each kept-alive connection, so
    # a connection beyond the workers waits, unserved, until one closes.
    "e2e_connections": 24,
    "event_bytes": 256,
    "events_per_tx": 1000,
    "partitions": 3,
    "linger_ms": 5,  # evhostd's producer default; the bare producer gets the same
    "acks": "all",
    "idempotence": True,
    "store_synchronous": "FULL",
}
TARGETS = {
    "http_get": ("HTTP read >= 60% of bare civetweb", 0.60),
    "http_post": ("HTTP write >= 5x Node", 5.0),
    "publish": ("publish >= 50% of bare librdkafka", 0.50),
    "consume": ("consume >= 50% of bare librdkafka", 0.50),
    "e2e": ("end-to-end p99 <= 25 ms at 500/s", 25.0),
    "rss_idle": ("evhostd RSS <= 20 MB idle", 20 * 1024),
    "rss_load": ("evhostd RSS <= 1/5 of Node's under load", 0.20),
}
TOPICS = ["crud.products", "crud.e2e", "node.products", "node.e2e", "bare.e2e", "bench.events",
          "bench.events.base", "bench.warmup", "USER_CREATED", "USER_UPDATED", "USER_DELETED",
          "notifications.broadcast"]
PRODUCT = {"name": "bench widget", "price": 9.99, "stock": 3, "tags": ["bench", "evhost"]}


def say(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ------------------------------------------------------------------ processes


class Proc:
    """A child process with its output in a log file; stop() is bounded."""

    def __init__(self, name, argv, log_dir, env=None, cwd=None):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL,
                                  stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def log_tail(self, n=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout=30):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                say(f"{self.name} (pid {self.pid}) ignored SIGTERM for {timeout}s; killing it")
                self.p.kill()
                self.p.wait(10)
        self._log.close()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(fn, timeout, what, interval=0.05, proc=None):
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and not proc.alive():
            raise BenchError(f"{proc.name} exited while waiting for {what}:\n{proc.log_tail()}")
        try:
            v = fn()
            if v:
                return v
        except (requests.RequestException, OSError):
            pass
        if time.monotonic() >= deadline:
            extra = f"\n{proc.log_tail()}" if proc is not None else ""
            raise BenchError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


def stats_when(url, done):
    """A function for wait_until: GET url's JSON, returned once done(it) holds."""
    def fetch():
        st = requests.get(url, timeout=10).json()
        return st if done(st) else None
    return fetch


def wait_http_ok(url, timeout, proc):
    wait_until(lambda: requests.get(url, timeout=2).status_code == 200, timeout,
               f"GET {url} == 200", 0.1, proc)


# -------------------------------------------------------------------- evhostd


class Evhostd:
    """evhostd with a config of our own: [host]/[http]/[kafka]/[store]/[log]
    here, plugin sections from `dropins` {file name: text}."""

    def __init__(self, ctx, name, dropins, store=""):
        self.ctx = ctx
        self.dir = ctx.work / name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        confd = self.dir / "conf.d"
        (self.dir / "state").mkdir(parents=True, exist_ok=True)
        confd.mkdir(parents=True, exist_ok=True)
        (self.dir / "evhost.conf").write_text(
            "[host]\n"
            f"plugin_dir = {ctx.build / 'plugins'}\n"
            f"state_dir = {self.dir / 'state'}\n"
            "source = evhost://bench\n"
            "[http]\n"
            f"listen = 127.0.0.1:{self.port}\n"
            f"threads = {ctx.s['http_threads']}\n"
            "[kafka]\n"
            f"brokers = {ctx.brokers}\n"
            "[store]\n"
            f"synchronous = {ctx.s['store_synchronous']}\n"
            f"{store}"
            "[log]\n"
            "level = warn\n"
            "format = text\n")
        for fname, text in dropins.items():
            (confd / fname).write_text(text)
        self.proc = Proc(f"evhostd-{name}", [ctx.build / "host" / "evhostd", "-c",
                                             self.dir / "evhost.conf"], ctx.work)
        wait_http_ok(self.url + "/healthz", 60, self.proc)
        wait_until(lambda: requests.get(self.url + "/readyz", timeout=2).status_code == 200,
                   60, f"{self.url}/readyz", 0.1, self.proc)

    def rss(self):
        return rss_kb(self.proc.pid)

    def stop(self):
        self.proc.stop()
        if self.proc.p.returncode not in (0, None):
            say(f"evhostd exited with {self.proc.p.returncode}; log: {self.proc.log_path}")


def shipped_dropins(*names):
    """The repository's conf.d drop-ins, as the package installs them."""
    return {n: (ROOT / "conf.d" / n).read_text() for n in names}


def crud_override():
    return ("[plugin.crud]\n"
            "collections = products, e2e\n"
            "collection.products.required = name, price\n"
            "collection.products.types = name:string, price:number, stock:integer\n")


# ------------------------------------------------------------------------ wrk


def run_wrk(ctx, url, body=None):
    """A warm-up run of http_warmup_seconds (not counted: every server, and the
    broker behind it, is measured warm, whichever side of a pair goes first),
    then the measured run of http_seconds."""
    s = ctx.s
    env = dict(os.environ)
    if body is not None:
        body_file = ctx.work / "post-body.json"
        body_file.write_text(json.dumps(body))
        env["WRK_BODY_FILE"] = str(body_file)
    wrk_once(ctx, url, env, s["http_warmup_seconds"])
    w = wrk_once(ctx, url, env, s["http_seconds"])
    errors = (w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["timeouts"] +
              w["non_2xx"])
    if errors:
        say(f"wrk {url}: {errors} failed requests of {w['requests']} ({w})")
    ok = w["requests"] - w["non_2xx"]
    return {"rps": round(ok / (w["duration_us"] / 1e6), 1), "p50_ms": w["p50_us"] / 1000,
            "p99_ms": w["p99_us"] / 1000, "requests": w["requests"], "errors": errors}


def wrk_once(ctx, url, env, seconds):
    s = ctx.s
    argv = ["wrk", f"-t{s['wrk_threads']}", f"-c{s['wrk_connections']}", f"-d{seconds}s",
            "--timeout", "10s", "-s", str(WRK_SCRIPT), url]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       env=env, timeout=seconds + 60)
    m = re.search(r"^WRKJSON (\{.*\})$", r.stdout, re.M)
    if r.returncode != 0 or not m:
        raise BenchError(f"wrk {url} failed ({r.returncode}):\n{r.stdout[-2000:]}")
    return json.loads(m.group(1))


# ---------------------------------------------------------------- end to end


def paced_posts(url, rate, seconds, workers, t_field=True):
    """POST /crud/e2e-like bodies at a fixed rate (open loop: request i is due
    at start + i/rate, whatever happened to the others). Each body carries
    "t", the wall-clock µs just before it was sent. Enough connections that a
    slow answer (up to workers/rate seconds) does not lower the rate. Returns
    counts and the rate achieved."""
    u = requests.utils.urlparse(url)
    n = int(rate * seconds)
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "errors": 0, "late": 0}
    start = time.monotonic() + 0.05

    def worker():
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        while True:
            with lock:
                i = state["next"]
                state["next"] += 1
            if i >= n:
                break
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.005:
                with lock:
                    state["late"] += 1
            body = {"name": "e2e", "price": 1.5}
            if t_field:
                body["t"] = time.time_ns() // 1000
            try:
                conn.request("POST", u.path, json.dumps(body),
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                good = resp.status == 201
            except (OSError, http.client.HTTPException):
                good = False
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
            with lock:
                state["ok" if good else "errors"] += 1
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    elapsed = time.monotonic() - t0
    return {"sent": n, "ok": state["ok"], "errors": state["errors"], "late": state["late"],
            "rate": round(n / elapsed, 1)}


def percentile(values, p):
    """Nearest-rank percentile of a non-empty list."""
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def e2e_measure(ctx, post_url, stats_url, reset_url, proc):
    """Warm up (consumer assigned, connections open), then the measured run."""
    warm = paced_posts(post_url, 100, 0.3, ctx.s["e2e_connections"])
    wait_until(stats_when(stats_url, lambda st: len(st["e2e_us"]) >= warm["ok"]), 60,
               "the warm-up events to arrive", 0.1, proc)
    requests.post(reset_url, timeout=5)
    run = paced_posts(post_url, ctx.s["e2e_rate"], ctx.s["e2e_seconds"],
                      ctx.s["e2e_connections"])
    stats = wait_until(stats_when(stats_url, lambda st: len(st["e2e_us"]) >= run["ok"]), 60,
                       "every event to reach the handler", 0.1, proc)
    lat = stats["e2e_us"]
    if not lat:
        raise BenchError(f"no end-to-end samples from {stats_url}")
    if run["errors"]:
        say(f"warning: {run['errors']} of {run['sent']} POSTs to {post_url} failed or timed out")
    if run["rate"] < 0.95 * ctx.s["e2e_rate"]:
        say(f"warning: {post_url} took only {run['rate']}/s of {ctx.s['e2e_rate']}/s "
            f"(answers too slow?): its latencies are not at the intended rate")
    return {"p50_ms": round(percentile(lat, 50) / 1000, 2),
            "p99_ms": round(percentile(lat, 99) / 1000, 2),
            "max_ms": round(max(lat) / 1000, 2), "samples": len(lat), "client": run}


# --------------------------------------------------------------------- phases


def phase_http(ctx, r):
    say("HTTP: evhostd with user, crud and notifications")
    templates = ROOT / "plugins" / "notifications" / "templates"
    d = Evhostd(ctx, "svc", {**shipped_dropins("10-user.conf", "20-crud.conf",
                                               "30-notifications.conf"),
                             "90-bench.conf": crud_override() +
                             f"[plugin.notifications]\ntemplates_dir = {templates}\n"})
    try:
        time.sleep(ctx.s["settle_seconds"])
        r["rss_idle_kb"] = d.rss()
        created = requests.post(d.url + "/crud/products", json=PRODUCT, timeout=10)
        if created.status_code != 201:
            raise BenchError(f"POST /crud/products: {created.status_code} {created.text}")
        path = f"/crud/products/{created.json()['id']}"
        got = requests.get(d.url + path, timeout=10)
        if got.status_code != 200:
            raise BenchError(f"GET {path}: {got.status_code} {got.text}")

        say(f"HTTP read: wrk GET {path} on evhostd")
        get = run_wrk(ctx, d.url + path)
        say("HTTP read: the same bytes from bare civetweb")
        base = http_get_baseline(ctx, path, got)

        say("HTTP write: wrk POST /crud/products on evhostd")
        post = run_wrk(ctx, d.url + "/crud/products", body=PRODUCT)
        r["rss_load_kb"] = d.rss()
        ctx.detail["http_post_group_commit"] = group_commits(d.url, "crud")
    finally:
        d.stop()
    r.update({"http_get_rps": get["rps"], "http_get_p50_ms": get["p50_ms"],
              "http_get_p99_ms": get["p99_ms"], "http_get_baseline_rps": base["rps"],
              "http_get_baseline_p50_ms": base["p50_ms"],
              "http_get_baseline_p99_ms": base["p99_ms"], "http_post_rps": post["rps"],
              "http_post_p50_ms": post["p50_ms"], "http_post_p99_ms": post["p99_ms"],
              "http_get_body_bytes": len(got.content)})
    ctx.errors["http_get"] = get["errors"]
    ctx.errors["http_get_baseline"] = base["errors"]
    ctx.errors["http_post"] = post["errors"]


def group_commits(url, plugin):
    """The plugin's group commits so far, from /metrics: how many requests
    shared each fsync."""
    text = requests.get(url + "/metrics", timeout=10).text
    found = {}
    for name in ("evhost_store_group_commits_total", "evhost_store_group_members_total"):
        m = re.search(r'^%s\{plugin="%s"\} (\d+)$' % (name, plugin), text, re.M)
        found[name] = int(m.group(1)) if m else 0
    groups = found["evhost_store_group_commits_total"]
    members = found["evhost_store_group_members_total"]
    return {"commits": groups, "transactions": members,
            "mean_group": round(members / groups, 2) if groups else None}


def http_get_baseline(ctx, path, got):
    skip = {"content-length", "date", "connection", "keep-alive"}
    headers = "".join(f"{k}: {v}\n" for k, v in got.headers.items() if k.lower() not in skip)
    (ctx.work / "get-headers.txt").write_text(headers)
    (ctx.work / "get-body.bin").write_bytes(got.content)
    port = free_port()
    p = Proc("bench_civetweb", [ctx.build / "bench" / "bench_civetweb", "-l",
                                f"127.0.0.1:{port}", "-t", ctx.s["http_threads"], "-H",
                                ctx.work / "get-headers.txt", "-B", ctx.work / "get-body.bin"],
             ctx.work)
    try:
        url = f"http://127.0.0.1:{port}{path}"
        wait_http_ok(url, 30, p)
        check = requests.get(url, timeout=5)
        if check.content != got.content:
            raise BenchError("bench_civetweb does not answer evhostd's bytes")
        return run_wrk(ctx, url)
    finally:
        p.stop()


def node_env():
    env = dict(os.environ)
    env["NODE_ENV"] = "production"
    return env


def phase_node(ctx, r):
    say("Node: Express + KafkaJS api and a KafkaJS sink")
    api_port, sink_port = free_port(), free_port()
    api = Proc("node-api", ["node", NODE_DIR / "index.js", "api", "--port", api_port,
                            "--brokers", ctx.brokers], ctx.work, env=node_env())
    sink = Proc("node-sink", ["node", NODE_DIR / "index.js", "sink", "--port", sink_port,
                              "--brokers", ctx.brokers, "--topic", "node.e2e", "--group",
                              f"node-sink-{ctx.run_id}"], ctx.work, env=node_env())
    api_url, sink_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{sink_port}"
    try:
        wait_http_ok(api_url + "/healthz", 60, api)
        wait_http_ok(sink_url + "/healthz", 60, sink)
        time.sleep(ctx.s["settle_seconds"])
        r["rss_node_idle_kb"] = rss_kb(api.pid) + rss_kb(sink.pid)
        say("HTTP write: wrk POST /crud/products on Node")
        post = run_wrk(ctx, api_url + "/crud/products", body=PRODUCT)
        r["rss_node_kb"] = rss_kb(api.pid) + rss_kb(sink.pid)
        r["rss_node_api_kb"] = rss_kb(api.pid)
        r["http_post_node_rps"] = post["rps"]
        r["http_post_node_p50_ms"] = post["p50_ms"]
        r["http_post_node_p99_ms"] = post["p99_ms"]
        ctx.errors["http_post_node"] = post["errors"]
        say(f"end to end: Node POST -> KafkaJS sink at {ctx.s['e2e_rate']}/s")
        e2e = e2e_measure(ctx, api_url + "/crud/e2e", sink_url + "/stats", sink_url + "/reset",
                          sink)
        r["e2e_node_p50_ms"], r["e2e_node_p99_ms"] = e2e["p50_ms"], e2e["p99_ms"]
        r["e2e_node_rate"] = e2e["client"]["rate"]
        ctx.errors["e2e_node"] = e2e["client"]["errors"]
        ctx.detail["e2e_node"] = e2e
    finally:
        api.stop()
        sink.stop()


def phase_e2e(ctx, r):
    say(f"end to end: evhostd POST /crud/e2e -> bench plugin handler at {ctx.s['e2e_rate']}/s")
    d = Evhostd(ctx, "e2e", {**shipped_dropins("20-crud.conf"), "90-bench.conf":
                             crud_override() + "[plugin.bench]\ne2e.topic = crud.e2e\n"
                             f"group = bench-e2e-{ctx.run_id}\n"})
    try:
        e2e = e2e_measure(ctx, d.url + "/crud/e2e", d.url + "/bench/stats",
                          d.url + "/bench/reset", d.proc)
    finally:
        d.stop()
    r["e2e_p50_ms"], r["e2e_p99_ms"] = e2e["p50_ms"], e2e["p99_ms"]
    r["e2e_rate"] = e2e["client"]["rate"]
    ctx.errors["e2e"] = e2e["client"]["errors"]
    ctx.detail["e2e"] = e2e
    s = ctx.s
    say(f"end to end: bare librdkafka producer -> consumer at {s['e2e_rate']}/s (the floor)")
    floor = run_json([ctx.build / "bench" / "bench_kafka", "e2e", "-b", ctx.brokers, "-t",
                      "bare.e2e", "-n", s["e2e_rate"] * s["e2e_seconds"], "-r", s["e2e_rate"],
                      "-g", f"bench-floor-{ctx.run_id}", "-s", s["event_bytes"], "-l",
                      s["linger_ms"]], 120 + s["e2e_seconds"])
    r["e2e_baseline_p50_ms"], r["e2e_baseline_p99_ms"] = floor["p50_ms"], floor["p99_ms"]
    ctx.detail["e2e_baseline"] = floor


def outbox_empty(url):
    return requests.get(url + "/bench/outbox", timeout=10).json()["empty"]


def evhost_publish(d, n, per_tx):
    t0 = time.monotonic()
    resp = requests.post(f"{d.url}/bench/publish?n={n}&per_tx={per_tx}", timeout=600)
    if resp.status_code != 200:
        raise BenchError(f"POST /bench/publish: {resp.status_code} {resp.text}")
    wait_until(lambda: outbox_empty(d.url), 600, "the outbox to drain", 0.01, d.proc)
    return time.monotonic() - t0, resp.json()["ms"] / 1000


def warm_broker(ctx):
    """The broker (a JVM) compiles its hot paths in the first seconds of load;
    without a warm-up the side measured first in a pair pays for that (in
    the HTTP write pair, evhostd: the JIT compiler took 11% of the machine
    during its run). Once, before the first phase: produce a third of the
    publish run from the bare producer and read it back."""
    n, s = ctx.s["events"] // 3, ctx.s
    say(f"warming the broker up: {n} events produced and consumed by bare librdkafka")
    run_json([ctx.build / "bench" / "bench_kafka", "produce", "-b", ctx.brokers, "-t",
              "bench.warmup", "-n", n, "-s", s["event_bytes"], "-l", s["linger_ms"]], 300)
    run_json([ctx.build / "bench" / "bench_kafka", "consume", "-b", ctx.brokers, "-t",
              "bench.warmup", "-n", n, "-g", f"bench-warmup-{ctx.run_id}"], 300)


def phase_publish(ctx, r):
    n, s = ctx.s["events"], ctx.s
    say(f"publish: {n} events through the bench plugin (SDK, outbox, relay) until delivered")
    # The whole run is one burst into the outbox: its bound (100000 by
    # default, a safety limit for a broker outage) is raised above it.
    d = Evhostd(ctx, "pub", {"90-bench.conf": "[plugin.bench]\npublish.topic = bench.events\n"
                             f"publish.size = {s['event_bytes']}\n"},
                store=f"outbox_max_rows = {n + 10 * ctx.warmup_events}\n")
    try:
        # First the producer connects and learns the topic, as the bare one does.
        evhost_publish(d, ctx.warmup_events, ctx.warmup_events)
        seconds, commit_s = evhost_publish(d, n, s["events_per_tx"])
    finally:
        d.stop()
    say(f"publish: {n} events from the bare librdkafka producer")
    out = run_json([ctx.build / "bench" / "bench_kafka", "produce", "-b", ctx.brokers, "-t",
                    "bench.events.base", "-n", n, "-s", s["event_bytes"], "-l", s["linger_ms"]],
                   300)
    r["publish_eps"] = round(n / seconds, 1)
    r["publish_baseline_eps"] = round(out["delivered"] / out["seconds"], 1)
    ctx.detail["publish"] = {"seconds": round(seconds, 3), "commit_seconds": round(commit_s, 3)}
    ctx.detail["publish_baseline"] = out


def run_json(argv, timeout, env=None):
    r = subprocess.run([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout, env=env)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        raise BenchError(f"{Path(str(argv[0])).name} {argv[1]} failed ({r.returncode}):\n"
                         f"{r.stdout[-1000:]}{r.stderr[-2000:]}")
    return json.loads(lines[-1])


def rate(count, seconds):
    return round((count - 1) / seconds, 1) if seconds > 0 and count > 1 else 0.0


def phase_consume(ctx, r):
    total = ctx.s["events"] + ctx.warmup_events
    say(f"consume: {total} events of bench.events with bare librdkafka")
    bare = run_json([ctx.build / "bench" / "bench_kafka", "consume", "-b", ctx.brokers, "-t",
                     "bench.events", "-n", total, "-g", f"bench-bare-{ctx.run_id}"], 300)
    say("consume: the same with bare librdkafka and a durable SQLite inbox")
    durable = run_json([ctx.build / "bench" / "bench_kafka", "consume", "-b", ctx.brokers, "-t",
                        "bench.events", "-n", total, "-g", f"bench-durable-{ctx.run_id}", "-d",
                        ctx.work / "durable-inbox.db"], 300)
    say("consume: the same with KafkaJS")
    node = run_json(["node", NODE_DIR / "index.js", "consume", "--brokers", ctx.brokers,
                     "--topic", "bench.events", "--group", f"bench-node-{ctx.run_id}",
                     "--count", total, "--timeout", 300], 330, env=node_env())
    say("consume: the same through the bench plugin's handler (inbox, commit)")
    d = Evhostd(ctx, "consume", {"90-bench.conf": "[plugin.bench]\n"
                                 "consume.topic = bench.events\n"
                                 f"group = bench-evhost-{ctx.run_id}\n"})
    try:
        st = wait_until(stats_when(d.url + "/bench/stats", lambda x: x["consumed"] >= total),
                        900, f"{total} events through the handler", 0.1, d.proc)
    finally:
        d.stop()
    seconds = (st["last_us"] - st["first_us"]) / 1e6
    r["consume_eps"] = rate(st["consumed"], seconds)
    r["consume_baseline_eps"] = rate(bare["consumed"], bare["seconds"])
    r["consume_node_eps"] = rate(node["consumed"], node["seconds"])
    r["consume_durable_baseline_eps"] = rate(durable["consumed"], durable["seconds"])
    ctx.detail["consume"] = {"consumed": st["consumed"], "seconds": round(seconds, 3)}
    ctx.detail["consume_baseline"] = bare
    ctx.detail["consume_node"] = node
    ctx.detail["consume_durable_baseline"] = durable


# ---------------------------------------------------------------- the report


def versions(ctx):
    def out(argv):
        try:
            return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            return f"unknown ({exc})"

    def npm_version(name):
        try:
            lock = json.loads((NODE_DIR / "package-lock.json").read_text())
            return lock["packages"][f"node_modules/{name}"]["version"]
        except (OSError, KeyError, ValueError):
            return "unknown"

    civet = out(["dpkg-query", "-W", "-f", "${Version}", "libcivetweb1"])
    return {
        "evhostd": out([str(ctx.build / "host" / "evhostd"), "--version"]),
        "librdkafka": out([str(ctx.build / "bench" / "bench_kafka"), "version"]),
        "civetweb": civet,
        "sqlite": sqlite3.sqlite_version,
        "kafka": os.environ.get("EVHOST_KAFKA_VERSION", "4.1.1"),
        "node": out(["node", "--version"]),
        "express": npm_version("express"),
        "kafkajs": npm_version("kafkajs"),
        "wrk": out(["wrk", "--version"]).splitlines()[0] if shutil.which("wrk") else "missing",
        "kernel": platform.release(),
    }


def machine():
    model = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "memory_kb": mem_kb,
            "loadavg_at_start": os.getloadavg()}


def ratios(r):
    def div(a, b):
        return round(a / b, 3) if b else None
    return {
        "http_get": div(r["http_get_rps"], r["http_get_baseline_rps"]),
        "http_post": div(r["http_post_rps"], r["http_post_node_rps"]),
        "publish": div(r["publish_eps"], r["publish_baseline_eps"]),
        "consume": div(r["consume_eps"], r["consume_baseline_eps"]),
        "consume_vs_node": div(r["consume_eps"], r["consume_node_eps"]),
        "consume_vs_durable": div(r["consume_eps"], r.get("consume_durable_baseline_eps")),
        "e2e": r["e2e_p99_ms"],
        "rss_idle": r["rss_idle_kb"],
        "rss_load": div(r["rss_load_kb"], r["rss_node_kb"]),
    }


def met(key, value):
    limit = TARGETS[key][1]
    if value is None:
        return "n/a"
    if key in ("e2e", "rss_idle", "rss_load"):
        return "met" if value <= limit else "MISSED"
    return "met" if value >= limit else "MISSED"


def e2e_ratio(r):
    ours, node = r["e2e_p99_ms"], r["e2e_node_p99_ms"]
    if not ours or not node:
        return "-"
    return f"{node / ours:.1f}x lower p99" if ours <= node else f"{ours / node:.1f}x higher p99"


def pct(x):
    return f"{x * 100:.1f}%" if x < 0.1 else f"{x * 100:.0f}%"


def table(r, q):
    rows = [
        ("HTTP read (req/s)", f"{r['http_get_rps']:.0f} (p99 {r['http_get_p99_ms']:.2f} ms)",
         f"civetweb {r['http_get_baseline_rps']:.0f} (p99 {r['http_get_baseline_p99_ms']:.2f} ms)",
         pct(q["http_get"]), "http_get"),
        ("HTTP write (req/s)", f"{r['http_post_rps']:.0f} (p99 {r['http_post_p99_ms']:.2f} ms)",
         f"Node {r['http_post_node_rps']:.0f} (p99 {r['http_post_node_p99_ms']:.2f} ms)",
         f"{q['http_post']:.2f}x" if q["http_post"] < 1 else f"{q['http_post']:.1f}x", "http_post"),
        ("publish (events/s)", f"{r['publish_eps']:.0f}",
         f"librdkafka {r['publish_baseline_eps']:.0f}", pct(q["publish"]), "publish"),
        ("consume (events/s)", f"{r['consume_eps']:.0f}",
         f"librdkafka {r['consume_baseline_eps']:.0f}; with a durable inbox "
         f"{r['consume_durable_baseline_eps']:.0f}; KafkaJS {r['consume_node_eps']:.0f}",
         f"{pct(q['consume'])}; {pct(q['consume_vs_durable'])} of durable; "
         f"{q['consume_vs_node']:.2f}x KafkaJS", "consume"),
        (f"end to end @{r['e2e_rate']:.0f}/s; Node @{r['e2e_node_rate']:.0f}/s",
         f"p50 {r['e2e_p50_ms']:.1f} / p99 {r['e2e_p99_ms']:.1f} ms",
         f"Node p50 {r['e2e_node_p50_ms']:.1f} / p99 {r['e2e_node_p99_ms']:.1f} ms; "
         f"bare librdkafka p50 {r['e2e_baseline_p50_ms']:.1f} / p99 "
         f"{r['e2e_baseline_p99_ms']:.1f} ms",
         e2e_ratio(r), "e2e"),
        ("RSS idle", f"{r['rss_idle_kb'] / 1024:.1f} MB",
         f"Node {r['rss_node_idle_kb'] / 1024:.1f} MB", "-", "rss_idle"),
        ("RSS end of write run", f"{r['rss_load_kb'] / 1024:.1f} MB",
         f"Node {r['rss_node_kb'] / 1024:.1f} MB", pct(q["rss_load"]), "rss_load"),
    ]
    head = ("figure", "evhost", "baseline (same run)", "ratio", "target")
    cells = [(a, b, c, d, f"{TARGETS[k][0]}: {met(k, q[k])}") for a, b, c, d, k in rows]
    widths = [max(len(str(x[i])) for x in [head] + cells) for i in range(5)]
    def fmt(row):
        return "| " + " | ".join(str(v).ljust(w) for v, w in zip(row, widths)) + " |"
    lines = [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [fmt(c) for c in cells]
    return "\n".join(lines)


REQUIRED_KEYS = ["http_get_rps", "http_get_baseline_rps", "http_post_rps", "http_post_node_rps",
                 "publish_eps", "publish_baseline_eps", "consume_eps", "consume_baseline_eps",
                 "consume_node_eps", "consume_durable_baseline_eps", "e2e_p50_ms", "e2e_p99_ms",
                 "e2e_node_p99_ms", "e2e_baseline_p50_ms", "e2e_baseline_p99_ms",
                 "rss_idle_kb", "rss_load_kb", "rss_node_kb",
                 "http_get_p99_ms", "http_get_baseline_p99_ms", "http_post_p99_ms",
                 "http_post_node_p99_ms"]


class Ctx:
    def __init__(self, args):
        self.profile = "quick" if args.quick else "full"
        self.s = {**COMMON, **PROFILES[self.profile]}
        self.build = Path(args.build_dir).resolve()
        self.work = Path(args.work).resolve()
        self.brokers = args.brokers
        self.run_id = str(int(time.time()))
        self.warmup_events = 10
        self.errors = {}
        self.detail = {}


PHASES = {"http": phase_http, "node": phase_node, "e2e": phase_e2e, "publish": phase_publish,
          "consume": phase_consume}


def median(values):
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def round_figure(key, value):
    """One round's figure for a target, as the target states it."""
    if value is None:
        return "n/a"
    if key == "http_post":
        return f"{value:.1f}x"
    if key == "e2e":
        return f"{value:.1f} ms"
    if key == "rss_idle":
        return f"{value / 1024:.1f} MB"
    return pct(value)


def combine(files, out, command):
    """The results of several whole runs (scripts/bench --rounds) as one: the
    median of each figure and of each ratio (a ratio is taken within its
    round, where both sides ran back to back, then the median over rounds),
    and for each target the rounds that met it."""
    runs = []
    for f in files:
        doc = json.loads(Path(f).read_text())
        missing = [k for k in REQUIRED_KEYS if doc.get(k) is None]
        if missing:
            say(f"error: {f}: keys missing: {', '.join(missing)}")
            return 1
        runs.append(doc)
    figures = sorted({k for d in runs for k, v in d.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)} - {"seconds"})
    r = {k: median([d[k] for d in runs if d.get(k) is not None]) for k in figures}
    q = {k: median([d["ratios"][k] for d in runs]) if all(
        d["ratios"].get(k) is not None for d in runs) else None for k in runs[0]["ratios"]}
    rounds_met = {k: sum(met(k, d["ratios"][k]) == "met" for d in runs) for k in TARGETS}
    first = runs[0]
    doc = {
        **r,
        "ratios": q,
        "targets": {k: {"target": v[0], "result": met(k, q[k]),
                        "rounds_met": f"{rounds_met[k]} of {len(runs)}"}
                    for k, v in TARGETS.items()},
        "rounds": [{"date": d["date"], "seconds": d["seconds"], "ratios": d["ratios"],
                    "figures": {k: d[k] for k in REQUIRED_KEYS},
                    "failed_requests": d["failed_requests"]} for d in runs],
        "profile": first["profile"],
        "settings": first["settings"],
        "machine": first["machine"],
        "versions": first["versions"],
        "command": command,
        "date": first["date"],
        "seconds": round(sum(d["seconds"] for d in runs), 1),
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(doc, indent=2) + "\n")
    print(table(r, q))
    print(f"\nmedians of {len(runs)} rounds (each ratio within its round); targets met per "
          "round:")
    for k in TARGETS:
        per = ", ".join(round_figure(k, d["ratios"][k]) for d in runs)
        print(f"  {TARGETS[k][0]}: {rounds_met[k]} of {len(runs)} ({per})")
    print(f"{first['profile']} runs, {doc['seconds']} s, {first['machine']['cores']} cores; "
          f"linger.ms={first['settings']['linger_ms']}, acks=all, idempotent; results in {out}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--build-dir")
    ap.add_argument("--brokers")
    ap.add_argument("--work")
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="scripts/bench")
    ap.add_argument("--only", help="comma-separated phases (%s): run just these, print their "
                    "figures, write no results file" % ",".join(PHASES))
    ap.add_argument("--combine", nargs="+", metavar="ROUND_JSON",
                    help="write the medians of these runs' results to --out; run nothing")
    args = ap.parse_args()
    if args.combine:
        return combine(args.combine, args.out, args.command)
    for name in ("build_dir", "brokers", "work"):
        if not getattr(args, name):
            ap.error(f"--{name.replace('_', '-')} is required")
    only = args.only.split(",") if args.only else list(PHASES)
    unknown = [p for p in only if p not in PHASES]
    if unknown:
        ap.error(f"unknown phase {', '.join(unknown)} (phases: {', '.join(PHASES)})")
    if "consume" in only and "publish" not in only:
        ap.error("consume reads what publish wrote: --only publish,consume")
    ctx = Ctx(args)
    started = time.monotonic()
    r = {}
    info = {"machine": machine(), "versions": versions(ctx)}
    subprocess.run([str(ctx.build / "bench" / "bench_kafka"), "create", "-b", ctx.brokers, "-p",
                    str(ctx.s["partitions"]), *TOPICS], check=True, timeout=60)
    try:
        warm_broker(ctx)
        for name in PHASES:
            if name in only:
                PHASES[name](ctx, r)
    except (BenchError, requests.RequestException, subprocess.SubprocessError) as exc:
        say(f"error: {exc}")
        say(f"logs are in {ctx.work}")
        return 1
    if args.only:
        print(json.dumps({"figures": r, "failed_requests": ctx.errors, "detail": ctx.detail},
                         indent=2))
        return 0
    q = ratios(r)
    doc = {
        **r,
        "ratios": q,
        "targets": {k: {"target": v[0], "result": met(k, q[k])} for k, v in TARGETS.items()},
        "failed_requests": ctx.errors,
        "detail": ctx.detail,
        "profile": ctx.profile,
        "settings": ctx.s,
        **info,
        "command": args.command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
    }
    missing = [k for k in REQUIRED_KEYS if doc.get(k) is None]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(r, q))
    print(f"\n{ctx.profile} run, {doc['seconds']} s, {info['machine']['cores']} cores; "
          f"linger.ms={ctx.s['linger_ms']}, acks=all, idempotent; results in {out}")
    if missing:
        say(f"error: keys missing from the results: {', '.join(missing)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
