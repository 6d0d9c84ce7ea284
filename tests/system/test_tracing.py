"""OpenTelemetry spans, exported to a real OpenTelemetry Collector (built from
tests/otelcol by scripts/otelcol, its file exporter read back by the
testlib's Collector): the user -> USER_CREATED -> welcome mail flow on real
Kafka is one trace of an HTTP server span, the event's create span, the
notifications plugin's process span and the plugin's own span around the SMTP
send (SDK, evh_span_begin); the event's traceparent header names its create
span; sampling follows a caller's flag and [tracing] sample_ratio; a
collector that is down costs spans, counted and logged, never a request or a
mail; what is queued at the stop is sent; an https:// collector's
certificate is checked and the headers file's headers reach it; a bad
endpoint is refused at its file and line."""

import base64
import os
import re
import socket
import threading
import time
import uuid

import pytest

import evhost_testlib as lib
from test_metrics import scrape_value
from test_notifications import PASSWORD, Env, welcome_to

INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = 1, 2, 3, 4, 5


def tracing(collector, **more):
    conf = {"otlp_endpoint": collector.endpoint, "export_interval": "100ms",
            "service_name": "evhost-tests"}
    conf.update(more)
    return {"tracing": conf}


def caller(sampled=True):
    """A caller's traceparent: (header, its trace id, its span id)."""
    trace, span = os.urandom(16).hex(), os.urandom(8).hex()
    return f"00-{trace}-{span}-{'01' if sampled else '00'}", trace, span


def create_user(env, headers=None):
    addr = f"trace.{uuid.uuid4().hex[:8]}@example.com"
    r = env.d.post("/users", json={"name": "Tracy", "email": addr, "password": PASSWORD},
                   headers=headers or {})
    assert r.status_code == 201, r.text
    return r, addr


def event_of(env, user_id):
    """The USER_CREATED message of `user_id` as Kafka has it."""
    found = []

    def look():
        found[:] = [m for m in lib.kafka_consume(env.topics["created"], timeout=10,
                                                 brokers=env.brokers)
                    if user_id in (m["value"] or "")]
        return found
    lib.wait_until(look, timeout=30, message=f"no USER_CREATED for {user_id} in Kafka")
    return found[0]


def in_trace(trace):
    return lambda s: s["traceId"] == trace


def test_user_flow_is_one_trace(evhostd, tmp_path, unique_name, kafka_bootstrap, smtp_server,
                                otel_collector):
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"},
              extra=tracing(otel_collector))
    header, trace, caller_span = caller()
    r, addr = create_user(env, {"traceparent": header})
    user = r.json()
    smtp_server.wait_for(welcome_to(addr), timeout=60)

    spans = otel_collector.wait_spans(in_trace(trace), count=4, timeout=30)
    assert len(spans) == 4, [s["name"] for s in spans]
    by_kind = {s["kind"]: s for s in spans}
    server, create, process = by_kind[SERVER], by_kind[PRODUCER], by_kind[CONSUMER]
    send = by_kind[CLIENT]
    topic = env.topics["created"]

    # POST /users: a child of the caller's span.
    assert server["name"] == "POST /users"
    assert server["parentSpanId"] == caller_span
    a = server["attributes"]
    assert a["http.request.method"] == "POST" and a["http.route"] == "/users"
    assert a["url.path"] == "/users" and a["http.response.status_code"] == 201
    assert a["evhost.plugin"] == "user"
    assert a["evhost.request_id"] == r.headers["X-Request-Id"]
    assert a["client.address"] == "127.0.0.1"
    assert int(server["endTimeUnixNano"]) >= int(server["startTimeUnixNano"]) > 0

    # The event's creation, within the request.
    assert create["name"] == f"create {topic}"
    assert create["parentSpanId"] == server["spanId"]
    a = create["attributes"]
    assert a["messaging.system"] == "kafka" and a["messaging.operation.type"] == "create"
    assert a["messaging.destination.name"] == topic
    assert a["cloudevents.event_type"] == "user.created"
    assert a["messaging.kafka.message.key"] == user["id"]
    assert a["evhost.plugin"] == "user"
    assert int(server["startTimeUnixNano"]) <= int(create["startTimeUnixNano"])
    assert int(create["endTimeUnixNano"]) <= int(server["endTimeUnixNano"])

    # Kafka carries the create span as the event's parent.
    msg = event_of(env, user["id"])
    assert msg["headers"]["traceparent"] == f"00-{trace}-{create['spanId']}-01"
    assert msg["headers"]["ce_id"] == a["messaging.message.id"] == a["cloudevents.event_id"]

    # Its handling by the notifications plugin, a child of the create span.
    assert process["name"] == f"process {topic}"
    assert process["parentSpanId"] == create["spanId"]
    a = process["attributes"]
    assert a["messaging.operation.type"] == "process"
    assert a["messaging.destination.name"] == topic
    assert a["messaging.consumer.group.name"] == env.config["plugin.notifications"]["group"]
    assert a["messaging.kafka.offset"] == msg["offset"]
    assert a["messaging.destination.partition.id"] == str(msg["partition"])
    assert a["messaging.message.id"] == msg["headers"]["ce_id"]
    assert a["evhost.plugin"] == "notifications" and a["evhost.attempt"] == 1
    assert a["evhost.outcome"] == "handled"
    assert "status" not in process or process["status"].get("code", 0) != 2

    # The plugin's own span (SDK, evh_span_begin): the SMTP send, within
    # the handling.
    assert send["name"] == "smtp send"
    assert send["parentSpanId"] == process["spanId"]
    assert send["attributes"] == {"evhost.plugin": "notifications",
                                  "evhost.notification.template": "welcome",
                                  "server.address": "127.0.0.1"}
    assert int(process["startTimeUnixNano"]) <= int(send["startTimeUnixNano"])
    assert int(send["endTimeUnixNano"]) <= int(process["endTimeUnixNano"])

    for s in spans:
        assert s["resource"]["service.name"] == "evhost-tests"
        assert s["resource"]["process.pid"] == env.d.proc.pid
        assert re.fullmatch(r"\d+\.\d+\.\d+.*", s["resource"]["service.version"])
        assert s["scope"]["name"] == "evhost"
    # The mail's log line is in the same trace.
    assert any(trace in line and "welcome mail" in line
               for line in env.d.log_text().splitlines())
    # Probes are not traced (the test harness polled /healthz at start).
    assert not [s for s in otel_collector.spans()
                if s["attributes"].get("url.path") in ("/healthz", "/readyz", "/metrics")]
    lib.wait_until(lambda: scrape_value(env.d, "evhost_trace_spans_total",
                                        outcome="exported") >= 3, timeout=10)


def test_sampling_follows_the_caller_and_the_ratio(evhostd, tmp_path, unique_name,
                                                  kafka_bootstrap, otel_collector):
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "maildir", "maildir": str(tmp_path / "mail")},
              extra=tracing(otel_collector, sample_ratio="0"))
    # A caller that did not sample: nothing recorded, the flag passed on.
    header, unsampled, _ = caller(sampled=False)
    r, _ = create_user(env, {"traceparent": header})
    msg = event_of(env, r.json()["id"])
    assert re.fullmatch(rf"00-{unsampled}-[0-9a-f]{{16}}-00", msg["headers"]["traceparent"])
    # A trace evhost begins, at sample_ratio 0: nothing recorded either.
    r, _ = create_user(env)
    own = r.headers["X-Request-Id"]
    msg = event_of(env, r.json()["id"])
    assert re.fullmatch(rf"00-{own}-[0-9a-f]{{16}}-00", msg["headers"]["traceparent"])
    # A caller that sampled: recorded, whatever the ratio, both plugins.
    header, sampled, _ = caller()
    create_user(env, {"traceparent": header})
    spans = otel_collector.wait_spans(in_trace(sampled), count=4, timeout=30)
    assert sorted(s["kind"] for s in spans) == [INTERNAL, SERVER, PRODUCER, CONSUMER]
    assert [s["name"] for s in spans if s["kind"] == INTERNAL] == ["maildir write"]
    # Every handling has ended (the inbox has all three), and the exporter
    # sends in order: had the others been recorded, they would be here.
    lib.wait_until(lambda: scrape_value(env.d, "evhost_events_handled_total",
                                        plugin="notifications", topic=env.topics["created"],
                                        result="ok") >= 3, timeout=30)
    env.d.get("/users/nobody")  # a request after them all, sampled by nobody
    time.sleep(0.5)
    traces = {s["traceId"] for s in otel_collector.spans()}
    assert unsampled not in traces and own not in traces


@pytest.mark.slow  # mostly waiting out the exporter's retries
def test_collector_down_costs_spans_not_requests(evhostd, tmp_path, unique_name,
                                                kafka_bootstrap, smtp_server, otel_collector):
    otel_collector.stop()
    env = Env(evhostd, tmp_path, unique_name, kafka_bootstrap,
              {"transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}"},
              extra=tracing(otel_collector))
    header, lost, _ = caller()
    _, addr = create_user(env, {"traceparent": header})
    smtp_server.wait_for(welcome_to(addr), timeout=60)
    # Each batch gets three more tries, 0.5, 1 and 2 s apart, then is
    # dropped: wait until the count has not moved for longer than that, so
    # no batch of the first flow is still being tried.
    last = [None, time.monotonic()]

    def settled():
        v = scrape_value(env.d, "evhost_trace_spans_total", outcome="dropped_export_failed")
        if v != last[0]:
            last[:] = [v, time.monotonic()]
        return v >= 3 and time.monotonic() - last[1] > 4.5
    lib.wait_until(settled, timeout=60, interval=0.25)
    assert scrape_value(env.d, "evhost_trace_spans_total", outcome="exported") == 0
    port = otel_collector.endpoint.rsplit(":", 1)[1]
    assert re.search(rf"spans dropped: cannot connect to 127\.0\.0\.1:{port}",
                     env.d.log_text()), env.d.log_tail()
    # Back up: later spans arrive; the lost ones stay lost (and counted).
    otel_collector.start()
    header, found, _ = caller()
    _, addr = create_user(env, {"traceparent": header})
    smtp_server.wait_for(welcome_to(addr), timeout=60)
    otel_collector.wait_spans(in_trace(found), count=4, timeout=30)
    assert not otel_collector.wait_spans(in_trace(lost), count=0, timeout=0)
    assert env.d.log_text().count("spans dropped") == 1  # at most one a minute


def test_queued_spans_are_sent_at_the_stop(evhostd, tmp_path, otel_collector):
    secret = tmp_path / "jwt.key"
    secret.write_text("k" * 48)
    d = evhostd({"auth": {"jwt_secret_file": str(secret)},
                 "plugin.user": {"argon2_opslimit": "min", "argon2_memlimit": "min"},
                 **tracing(otel_collector, export_interval="1h", batch_size="100")},
                brokers="embedded")
    header, trace, _ = caller()
    r = d.get("/users/nobody", headers={"traceparent": header})
    assert r.status_code == 404, r.text
    time.sleep(0.5)
    assert not [s for s in otel_collector.spans() if s["traceId"] == trace]
    assert d.stop(timeout=30) == 0
    [span] = otel_collector.wait_spans(in_trace(trace), timeout=5)
    assert span["name"] == "GET /users/{id}"
    assert span["attributes"]["http.response.status_code"] == 404
    assert span["attributes"]["url.path"] == "/users/nobody"


def traced_404(evhostd, secret, tracing_conf, env):
    """A daemon (user plugin, tokens signed with `secret`) exporting spans
    as `tracing_conf` says, and the trace id of a request it answered 404."""
    d = evhostd({"auth": {"jwt_secret_file": str(secret)},
                 "plugin.user": {"argon2_opslimit": "min", "argon2_memlimit": "min"},
                 **tracing_conf}, brokers="embedded", env=env)
    header, trace, _ = caller()
    assert d.get("/users/nobody", headers={"traceparent": header}).status_code == 404
    return d, trace


def test_spans_to_a_plain_collector_elsewhere_go_through_http_proxy(evhostd, tmp_path,
                                                                    otel_collector):
    """An http:// collector beyond this host, reached through the network's
    proxy (http_proxy, as curl takes it): the request goes to the proxy,
    naming the collector, with the proxy's credentials; the collector gets
    the spans. A collector on loopback, or in no_proxy, goes direct."""
    secret = tmp_path / "jwt.key"
    secret.write_text("k" * 48)
    port = otel_collector.port
    with lib.ConnectProxy(routes={"collector.example": "127.0.0.1"}) as proxy:
        def daemon(endpoint, env):
            return traced_404(evhostd, secret, tracing(otel_collector, otlp_endpoint=endpoint),
                              env)

        via = {"http_proxy": f"http://ada:s%40cr3t@127.0.0.1:{proxy.port}",
               "HTTPS_PROXY": "http://unused.example:3128"}
        d, trace = daemon(f"http://collector.example:{port}", via)
        [span] = otel_collector.wait_spans(in_trace(trace), timeout=15)
        assert span["name"] == "GET /users/{id}"
        assert ("POST", f"http://collector.example:{port}/v1/traces") in proxy.forwards, \
            proxy.forwards
        assert not proxy.connects
        assert set(proxy.auths) == {"Basic " + base64.b64encode(b"ada:s@cr3t").decode()}
        log = d.log_text()
        assert (f"outgoing HTTP (spans) goes through the proxy 127.0.0.1:{proxy.port} "
                f"(http_proxy, with its credentials)") in log, d.log_tail()
        assert "outgoing HTTPS" not in log and "s%40cr3t" not in log
        # A proxy asking for credentials: said, with where they go.
        proxy.refuse = "407 Proxy Authentication Required"
        assert d.get("/users/nobody").status_code == 404  # a span to send
        assert d.stop(timeout=30) == 0
        assert (f"spans dropped: http://collector.example:{port}/v1/traces answered 407 (from "
                f"the proxy: it wants credentials, http_proxy=http://USER:PASSWORD@HOST:PORT)"
                ) in d.log_text(), d.log_tail()
        proxy.refuse = None
        sent = len(proxy.forwards)
        # Loopback, and what no_proxy names, go direct.
        for endpoint, env in ((f"http://127.0.0.1:{port}", via),
                              (f"http://0.0.0.0:{port}", dict(via, no_proxy="0.0.0.0"))):
            d, trace = daemon(endpoint, env)
            otel_collector.wait_spans(in_trace(trace), timeout=15)
            assert d.stop(timeout=30) == 0
            assert len(proxy.forwards) == sent, proxy.forwards
    # A malformed http_proxy is said where it would be used, not elsewhere.
    tr = {"tracing": {"otlp_endpoint": "http://collector.example:4318"}}
    p = evhostd.run(["--check-config"], tr, brokers="embedded",
                    env={"http_proxy": "socks5://127.0.0.1:1080"})
    assert p.returncode != 0, p.stdout + p.stderr
    out = p.stdout + p.stderr
    assert ("evhost.conf: environment: http_proxy 'socks5://127.0.0.1:1080': only an http:// "
            "proxy is supported") in out and "CONNECT" not in out, out
    tr = {"tracing": {"otlp_endpoint": "http://127.0.0.1:4318"}}
    p = evhostd.run(["--check-config"], tr, brokers="embedded",
                    env={"http_proxy": "socks5://127.0.0.1:1080"})
    assert p.returncode == 0, p.stdout + p.stderr


def test_spans_over_tls_carry_the_headers_file(evhostd, tmp_path):
    """An https:// collector: its certificate is checked against
    otlp_ca_file, otlp_client_certificate is shown when it asks for one, and
    otlp_headers_file's headers go with every export (this collector refuses
    a request without its bearer token). Another CA, another token, no
    client certificate, a certificate for another name, or a peer that never
    answers the handshake costs the spans and the log says why."""
    certs = lib.TlsCerts(tmp_path / "certs")
    client = tmp_path / "client.pem"  # key and chain in one file, as [http] tls_certificate
    client.write_text(certs.client_key.read_text() + certs.client_crt.read_text())
    token = "tok-" + uuid.uuid4().hex
    good, wrong = tmp_path / "good.headers", tmp_path / "wrong.headers"
    good.write_text(f"# the collector's token\nAuthorization: Bearer {token}\n"
                    f"X-Scope-OrgID: shop\n")
    wrong.write_text("Authorization: Bearer not-the-token\n")
    secret = tmp_path / "jwt.key"
    secret.write_text("k" * 48)
    with lib.Collector(tmp_path / "otelcol", bearer_token=token,
                       tls=(certs.server_crt, certs.server_key, certs.ca_crt)) as collector:
        def daemon(env=None, **keys):
            conf = {"otlp_ca_file": str(certs.ca_crt), "otlp_headers_file": str(good),
                    "otlp_client_certificate": str(client)}
            conf.update(keys)
            return traced_404(evhostd, secret,
                              tracing(collector, **{k: v for k, v in conf.items() if v}), env)

        # By name: sent as SNI, matched against the certificate's DNS names.
        d, trace = daemon(otlp_endpoint=f"https://localhost:{collector.port}")
        [span] = collector.wait_spans(in_trace(trace), timeout=15)
        assert span["name"] == "GET /users/{id}"
        assert "Bearer" not in d.log_text()  # the headers are a secret
        assert (f"its certificate checked against {certs.ca_crt}; client certificate {client}; "
                f"2 header(s) from {good})") in d.log_text()
        assert d.stop(timeout=30) == 0
        endpoint = re.escape(collector.endpoint)
        for keys, want in (
                ({"otlp_ca_file": str(certs.other_ca_crt)},
                 rf"spans dropped: TLS with 127\.0\.0\.1:{collector.port} failed: the server's "
                 r"certificate was refused: unable to get local issuer.*; not tried again "
                 r"\(\[tracing\] otlp_ca_file, or the collector's certificate\)"),
                ({"otlp_headers_file": str(wrong)},
                 rf"spans dropped: {endpoint}/v1/traces answered 401"),
                ({"otlp_client_certificate": None},
                 # TLS 1.3: refused after the handshake, while sending or before the answer
                 rf"spans dropped: (sending to {endpoint}/v1/traces failed: .*TLS alert: "
                 rf"|{endpoint}/v1/traces gave no HTTP answer: |TLS with .* failed: )"
                 r"tlsv13 alert certificate required")):
            d, trace = daemon(**keys)
            if "otlp_ca_file" in keys:
                # A certificate that does not verify will not pass by itself:
                # the batch is dropped at its first try, not after 3 more
                # 0.5, 1 and 2 s apart.
                lib.wait_until(lambda: scrape_value(d, "evhost_trace_spans_total",
                                                    outcome="dropped_export_failed") >= 1,
                               timeout=2, message="the batch dropped at once")
            assert d.stop(timeout=30) == 0  # the stop's last try logs what it met
            assert re.search(want, d.log_text()), d.log_tail()
            assert not collector.wait_spans(in_trace(trace), count=0, timeout=0)
        # A certificate of our CA, but for another name.
        collector.tls = (certs.elsewhere_crt, certs.elsewhere_key, certs.ca_crt)
        collector.restart()
        d, trace = daemon(otlp_endpoint=f"https://localhost:{collector.port}")
        assert d.stop(timeout=30) == 0
        assert re.search(r"spans dropped: TLS with localhost:\d+ failed: the server's certificate "
                         r"was refused: hostname mismatch", d.log_text()), d.log_tail()
        # By address: matched against its IP addresses, which it has none of.
        d, trace = daemon(otlp_endpoint=f"https://127.0.0.1:{collector.port}")
        assert d.stop(timeout=30) == 0
        assert re.search(r"spans dropped: TLS with 127\.0\.0\.1:\d+ failed: the server's "
                         r"certificate was refused: IP address mismatch", d.log_text()), \
            d.log_tail()
        # Through the environment's proxy, by the name on that certificate,
        # which only the proxy resolves: a CONNECT tunnel, checked end to end.
        with lib.ConnectProxy(routes={"elsewhere.example": "127.0.0.1"}) as proxy:
            d, trace = daemon(otlp_endpoint=f"https://elsewhere.example:{collector.port}",
                              env={"HTTPS_PROXY": f"http://127.0.0.1:{proxy.port}"})
            [span] = collector.wait_spans(in_trace(trace), timeout=15)
            assert proxy.connects and set(proxy.connects) == {
                f"elsewhere.example:{collector.port}"}, proxy.connects
            assert (f"outgoing HTTPS (spans) goes through the proxy 127.0.0.1:{proxy.port} "
                    f"(HTTPS_PROXY)") in d.log_text()
            assert d.stop(timeout=30) == 0
    # A peer that takes the connection and never answers the handshake: the
    # handshake is bounded by export_timeout, like a connect.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        d = evhostd({"tracing": {"otlp_endpoint": f"https://127.0.0.1:{port}",
                                 "otlp_ca_file": str(certs.ca_crt), "export_timeout": "300ms"}},
                    brokers="embedded")
        assert d.get("/nowhere").status_code == 404  # a span to send
        began = time.monotonic()
        assert d.stop(timeout=30) == 0
        assert time.monotonic() - began < 10
        assert re.search(rf"TLS with 127\.0\.0\.1:{port} failed: timed out", d.log_text()), \
            d.log_tail()


def read_post(conn):
    """A request's head and its Content-Length body from `conn`: the body,
    or None when the connection closed before the end."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length: *(\d+)", head)
    while m and len(body) < int(m.group(1)):
        more = conn.recv(65536)
        if not more:
            return None
        body += more
    return body


class HoldingCollector:
    """A fake OTLP collector on loopback that reads each POST (its head and
    Content-Length body), then either answers 200 with a Content-Length but
    keeps the connection open ("keepalive"), Connection: close
    notwithstanding, or never answers ("hang"); either way it holds the
    connection until the exporter closes it."""

    def __init__(self, mode):
        self.mode, self.posts, self.held = mode, 0, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            if read_post(conn) is None:
                return
            with self.lock:
                self.posts += 1
                self.held += 1
            if self.mode == "keepalive":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 2\r\n\r\n{}")
            conn.settimeout(60)
            try:
                while conn.recv(65536):  # until the exporter closes it
                    pass
            except OSError:
                pass
            with self.lock:
                self.held -= 1

    def close(self):
        self.sock.close()


def test_collector_holding_the_connection(evhostd):
    """A collector that answers but keeps the connection open costs an export
    no more than its answer; one that never answers holds the stop no longer
    than [host] stop_timeout, whatever export_timeout allows, and the log
    says which limit ended the wait."""
    coll = HoldingCollector("keepalive")
    try:
        d = evhostd({"tracing": tracing(coll, export_timeout="10s")["tracing"]},
                    brokers="embedded")
        for n in (1, 2):
            assert d.get("/nowhere").status_code == 404  # a span to send
            lib.wait_until(lambda: scrape_value(d, "evhost_trace_spans_total",
                                                outcome="exported") >= n, timeout=4,
                           message="the export waited for the close, not the answer")
        assert d.stop(timeout=30) == 0
        assert "spans dropped" not in d.log_text(), d.log_tail()
    finally:
        coll.close()
    coll = HoldingCollector("hang")
    try:
        d = evhostd({"host": {"stop_timeout": "2s"},
                     "tracing": tracing(coll, export_timeout="30s")["tracing"]},
                    brokers="embedded")
        assert d.get("/nowhere").status_code == 404
        lib.wait_until(lambda: coll.held, timeout=10, message="no export reached the collector")
        began = time.monotonic()
        assert d.stop(timeout=30) == 0, d.log_tail()
        assert time.monotonic() - began < 6, d.log_tail()
        assert re.search(rf"spans dropped: {re.escape(coll.endpoint)}/v1/traces gave no HTTP "
                         rf"answer before the stop's deadline \(\d+ ms: \[host\] stop_timeout\)",
                         d.log_text()), d.log_tail()
        lib.wait_until(lambda: coll.held == 0, timeout=5,
                       message="the exporter left the connection open")
    finally:
        coll.close()


class ScriptedCollector:
    """A fake OTLP collector on loopback answering each POST (its head and
    Content-Length body read) with the next of `answers` (raw HTTP, then the
    close), 200 once they run out; when each POST came is kept."""

    def __init__(self, answers):
        self.answers, self.times = list(answers), []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                read_post(conn)
                self.times.append(time.monotonic())
                answer = (self.answers.pop(0) if self.answers else
                          "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                conn.sendall(answer.encode())

    def close(self):
        self.sock.close()


def test_collector_asking_to_wait(evhostd):
    """A 429 with Retry-After (seconds) holds the next request to the
    collector until then (not the exporter's own 0.5 s); spans ended
    meanwhile queue, and those the queue has no room for are dropped,
    counted, and said once, without the request that met the full queue.
    Each reason has its own line a minute: a refusal after the queue was
    full is said too."""
    coll = ScriptedCollector(["HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\n"
                              "Content-Length: 0\r\n\r\n"] +
                             ["HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"] * 3 +
                             ["HTTP/1.1 400 Bad Request\r\nContent-Length: 9\r\n\r\nno spans!"])
    try:
        d = evhostd(tracing(coll, queue_size="2", batch_size="1"), brokers="embedded")
        assert d.get("/nowhere").status_code == 404  # a span to send: 429
        lib.wait_until(lambda: coll.times, timeout=10, message="no export reached the collector")
        ids = [d.get("/nowhere").headers["X-Request-Id"] for _ in range(5)]  # 2 queue, 3 not
        lib.wait_until(lambda: scrape_value(d, "evhost_trace_spans_total",
                                            outcome="exported") >= 3, timeout=15)
        assert len(coll.times) >= 2 and coll.times[1] - coll.times[0] >= 2.9, coll.times
        assert scrape_value(d, "evhost_trace_spans_total", outcome="dropped_queue_full") == 3
        assert d.get("/nowhere").status_code == 404  # refused: 400
        lib.wait_until(lambda: "answered 400" in d.log_text(), timeout=10,
                       message="the refusal was not said within the minute")
        assert d.stop(timeout=30) == 0
        lines = d.log_text().splitlines()
        full = [line for line in lines if "spans dropped: the queue is full" in line]
        assert len(full) == 1, full
        assert "request_id" not in full[0] and not any(i in full[0] for i in ids), full[0]
        assert any(f"spans dropped: {coll.endpoint}/v1/traces answered 400: no spans!" in line
                   for line in lines), d.log_tail()
    finally:
        coll.close()


def test_collector_interim_answers_are_not_its_answer(evhostd):
    """Interim answers (100 Continue, 103 Early Hints) before the
    collector's final one are read and set aside (RFC 9110, 15.2): the 200
    after them exports the batch, and the 400 after a 103 (whose Location
    is not the final answer's) is the refusal the log names."""
    coll = ScriptedCollector(["HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
                              "Link: </style.css>; rel=preload\r\n\r\n"
                              "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
                              "HTTP/1.1 103 Early Hints\r\nLocation: /early\r\n\r\n"
                              "HTTP/1.1 400 Bad Request\r\nContent-Length: 9\r\n\r\nno spans!"])
    try:
        d = evhostd(tracing(coll, batch_size="1"), brokers="embedded")
        assert d.get("/nowhere").status_code == 404  # a span to send: 100, 103, 200
        lib.wait_until(lambda: scrape_value(d, "evhost_trace_spans_total",
                                            outcome="exported") >= 1, timeout=10,
                       message="the batch after the interim answers was not exported")
        assert d.get("/nowhere").status_code == 404  # 103, 400
        lib.wait_until(lambda: "answered 400" in d.log_text(), timeout=10,
                       message="the refusal after the 103 was not said")
        assert d.stop(timeout=30) == 0
        log = d.log_text()
        assert f"spans dropped: {coll.endpoint}/v1/traces answered 400: no spans!" in log, log
        assert "answered 10" not in log and "/early" not in log, log
    finally:
        coll.close()


ASK_TO_WAIT_1S = ("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n"
                  "Content-Length: 0\r\n\r\n")


def test_retry_after_is_no_failure_and_retry_max_time_bounds_a_batch(evhostd):
    """A collector shedding load (503, Retry-After: 1) five times in a row
    gets the batch on the sixth request: its waits use up none of the 3
    retries. One that keeps asking costs a batch once [tracing]
    retry_max_time has passed since its first try, said with that key, and
    the next batch is still sent no sooner than the collector asked."""
    coll = ScriptedCollector([ASK_TO_WAIT_1S] * 5 +
                             ["HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"] +
                             [ASK_TO_WAIT_1S] * 3)
    try:
        d = evhostd(tracing(coll, batch_size="1", retry_max_time="2500ms"),
                    brokers="embedded")
        assert d.get("/nowhere").status_code == 404
        # 2500 ms is too short for five waits of a second: this batch is lost.
        lib.wait_until(lambda: scrape_value(d, "evhost_trace_spans_total",
                                            outcome="dropped_export_failed") == 1,
                       timeout=15, message="the batch was not given up")
        assert len(coll.times) == 3, coll.times
        lib.wait_until(lambda: "retry_max_time (2500 ms)" in d.log_text(), timeout=5)
        line = next(x for x in d.log_text().splitlines() if "retry_max_time (2500 ms)" in x)
        assert "answered 503 (Retry-After 1 s: nothing sent before then); 3 tries in" in line
        assert d.stop(timeout=30) == 0
        coll.answers = [ASK_TO_WAIT_1S] * 5  # then 200
        coll.times.clear()
        d = evhostd(tracing(coll, batch_size="1", retry_max_time="1m"), brokers="embedded")
        assert d.get("/nowhere").status_code == 404
        lib.wait_until(lambda: scrape_value(d, "evhost_trace_spans_total",
                                            outcome="exported") >= 1, timeout=20,
                       message="the batch was not sent after the collector's waits")
        assert scrape_value(d, "evhost_trace_spans_total", outcome="dropped_export_failed") == 0
        assert len(coll.times) == 6, coll.times
        assert all(b - a >= 0.9 for a, b in zip(coll.times, coll.times[1:6])), coll.times
        assert d.stop(timeout=30) == 0
    finally:
        coll.close()


def test_bad_endpoint_is_refused_at_its_line(evhostd, tmp_path):
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    for conf, key, want in (
            ({"otlp_endpoint": "ftp://127.0.0.1:4318"}, "otlp_endpoint",
             "expected http://HOST[:PORT][/PATH]"),
            ({"otlp_endpoint": "https://127.0.0.1:4318", "otlp_ca_file": str(not_pem)},
             "otlp_ca_file", f"cannot load CA certificates from '{not_pem}'"),
            ({"otlp_endpoint": "https://127.0.0.1:4318", "otlp_client_certificate": str(not_pem)},
             "otlp_client_certificate",
             f"client certificate '{not_pem}': no certificate OpenSSL can read in it"),
            # Both wrong: the CAs are said first.
            ({"otlp_endpoint": "https://127.0.0.1:4318", "otlp_ca_file": str(not_pem),
              "otlp_client_certificate": str(not_pem)},
             "otlp_ca_file", f"cannot load CA certificates from '{not_pem}'")):
        p = evhostd.run(["--check-config"], config={"tracing": conf}, brokers="embedded")
        assert p.returncode != 0, p.stdout + p.stderr
        out = p.stdout + p.stderr
        assert re.search(rf"evhost\.conf:\d+: \[tracing\] {key}: .*" + re.escape(want),
                         out), out


def test_tracing_keys_without_an_endpoint_are_said_at_start(evhostd):
    """otlp_endpoint commented out, the other keys left: tracing is off, and
    the start says so for each key, with where it is set."""
    d = evhostd(dropins={"30-tracing.conf": {"tracing": {"sample_ratio": 0.5,
                                                          "service_name": "shop"}}},
                brokers="embedded")
    text = d.log_text()
    for key, line in (("sample_ratio", 2), ("service_name", 3)):
        assert (f"[tracing] {key} (" in text and f"30-tracing.conf:{line}) is set but "
                f"otlp_endpoint is not: tracing is off" in text), text
    assert d.get("/healthz").status_code == 200
