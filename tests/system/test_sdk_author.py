"""A plugin as a third party writes it: sdk/examples/orders, built outside the
tree against the installed SDK (pkg-config and CMake's find_package, as
docs/sdk.md says), loaded in the real daemon with the real Kafka and driven
over HTTP, checking what docs/sdk.md promises it: routes with a token and a
role, a write and its event in one transaction (the outbox), an event
handler's every result (OK with the inbox's de-duplication, RETRY,
KEEP_AND_RETRY, KEEP_AND_DEAD_LETTER, REJECT), a Server-Sent Events stream,
the descriptor's check, metrics of its own.

A second small plugin (MISTAKES below) makes the mistakes the docs warn about
and checks the host answers as documented: a body set before a commit that
fails is sent; OK after a failed statement is a retry; an unknown result is a
retry; an empty value reads as "" (not the default); a route with a role but
no EVH_ROUTE_AUTH is refused. These guard the documentation (they pass on the
code as it was) rather than a fix.
"""

import json
import os
import re
import socket
import sqlite3
import signal
import subprocess
import time
import uuid

import pytest

import evhost_testlib as lib

EXAMPLE = lib.REPO_ROOT / "sdk" / "examples" / "orders"
SECRET = b"orders-test-secret-0123456789-abcdefghijklmnop"
EVH_ESTATE = -9
WARNINGS = ["-Wall", "-Wextra", "-Wshadow", "-Wconversion", "-Werror"]


@pytest.fixture(scope="module")
def sdk_prefix(build_dir, tmp_path_factory):
    """The SDK installed as docs/sdk.md says: cmake --install --component dev."""
    prefix = tmp_path_factory.mktemp("sdk") / "prefix"
    r = subprocess.run(["cmake", "--install", str(build_dir), "--component", "dev", "--prefix",
                        str(prefix)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return prefix


def pkg_config(prefix, *args):
    pcdir = next(prefix.glob("lib*/**/pkgconfig"), prefix / "lib" / "pkgconfig")
    env = dict(os.environ, PKG_CONFIG_PATH=str(pcdir))
    r = subprocess.run(["pkg-config", *args], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def cc_plugin(prefix, src, out, libs=()):
    """The docs' command line, with warnings as errors."""
    cflags = pkg_config(prefix, "--cflags", "evhost-sdk", *libs)
    ldflags = pkg_config(prefix, "--libs", *libs) if libs else []
    r = subprocess.run(["cc", "-shared", "-fPIC", *WARNINGS, "-Wl,--no-undefined", str(src),
                        *cflags, *ldflags, "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def orders_so(sdk_prefix, tmp_path_factory):
    src = sdk_prefix / "share" / "doc" / "evhost-dev" / "examples" / "orders" / "orders.c"
    assert src.exists(), "the orders example is installed with the SDK"
    return cc_plugin(sdk_prefix, src, tmp_path_factory.mktemp("orders") / "orders.so",
                     libs=("libcjson",))


def token(subject, *roles):
    return lib.sign_token(SECRET, subject, roles=roles)


def auth(subject, *roles):
    return {"Authorization": f"Bearer {token(subject, *roles)}"}


def orders_daemon(evhostd, tmp_path, so, brokers, **keys):
    secret = tmp_path / "jwt.key"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)
    section = {"path": str(so), **keys}
    return evhostd({"auth": {"jwt_secret_file": str(secret)}, "plugin.orders": section},
                   brokers=brokers)


def place(d, subject, item="book", quantity=2):
    r = d.post("/orders", json={"item": item, "quantity": quantity}, headers=auth(subject))
    assert r.status_code == 201, r.text
    return r.json()["id"], r


def order(d, oid, subject="alice"):
    return d.get(f"/orders/{oid}", headers=auth(subject))


def test_orders_builds_with_cmake_find_package(sdk_prefix, tmp_path):
    # The example's own CMakeLists.txt, against the installed prefix.
    build = tmp_path / "build"
    r = subprocess.run(["cmake", "-S", str(EXAMPLE), "-B", str(build),
                        f"-DCMAKE_PREFIX_PATH={sdk_prefix}", "-DCMAKE_C_FLAGS=-Werror"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["cmake", "--build", str(build)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (build / "orders.so").exists()


def test_orders_builds_against_a_build_tree_with_pkg_config(build_dir, tmp_path):
    # Not installed: PKG_CONFIG_PATH=<build>/sdk finds evhost-sdk-uninstalled.pc,
    # which pkg-config prefers, naming the source tree's headers.
    env = dict(os.environ, PKG_CONFIG_PATH=str(build_dir / "sdk"))
    r = subprocess.run(["pkg-config", "--cflags", "evhost-sdk", "libcjson"], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"-I{lib.REPO_ROOT / 'sdk' / 'include'}" in r.stdout.split(), r.stdout
    libs = subprocess.run(["pkg-config", "--libs", "libcjson"], capture_output=True, text=True,
                          check=True).stdout.split()
    r = subprocess.run(["cc", "-shared", "-fPIC", *WARNINGS, "-Wl,--no-undefined",
                        str(EXAMPLE / "orders.c"), *r.stdout.split(), *libs,
                        "-o", str(tmp_path / "orders.so")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "orders.so").exists()


def test_check_config_names_each_bad_value_at_its_line(evhostd, orders_so):
    # `admin_role =` is set to nothing: "" (not the default), which the check refuses.
    dropin = ("[plugin.orders]\n"
              f"path = {orders_so}\n"
              "max_quantity = 0\n"
              "admin_role =\n"
              "retry.max_attempts = 5000\n"
              "payments_topic = not a topic\n")
    r = evhostd.run(["--check-config"], dropins={"50-orders.conf": dropin})
    assert r.returncode != 0
    out = r.stdout + r.stderr
    for line, key in ((3, "max_quantity"), (4, "admin_role"), (5, "retry.max_attempts"),
                      (6, "payments_topic")):
        assert f"50-orders.conf:{line}: [plugin.orders] {key}: " in out, out
    ok = evhostd.run(["--check-config"], dropins={
        "50-orders.conf": f"[plugin.orders]\npath = {orders_so}\n"})
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_routes_token_role_and_the_outbox(evhostd, tmp_path, orders_so, kafka_bootstrap,
                                          unique_name):
    topic, payments = unique_name("orders"), unique_name("payments")
    d = orders_daemon(evhostd, tmp_path, orders_so, kafka_bootstrap, topic=topic,
                      payments_topic=payments)

    # The host answers 401/403/400 itself, before the handler.
    assert d.post("/orders", json={"item": "x", "quantity": 1}).status_code == 401
    r = d.post("/orders", data="{\"item\":", headers={**auth("alice"),
                                                      "Content-Type": "application/json"})
    assert r.status_code == 400 and r.headers["Content-Type"] == "application/problem+json"
    assert d.get("/orders", headers=auth("alice")).status_code == 403

    r = d.post("/orders", json={"item": "book", "quantity": 0}, headers=auth("alice"))
    assert r.status_code == 422 and r.json()["field"] == "quantity"

    oid, r = place(d, "alice")
    assert r.headers["Location"] == f"/orders/{oid}"
    got = order(d, oid)
    assert got.status_code == 200
    assert got.json() == {"id": oid, "owner": "alice", "item": "book", "quantity": 2,
                          "status": "new"}
    assert order(d, oid, "mallory").status_code == 404
    listed = d.get("/orders", headers=auth("boss", "orders-admin"))
    assert listed.status_code == 200 and [o["id"] for o in listed.json()] == [oid]

    # The event left through the outbox, keyed by the order, with its CloudEvents type.
    msgs = lib.kafka_consume(topic, count=1, timeout=30)
    assert len(msgs) == 1
    m = msgs[0]
    assert m["key"] == oid and m["headers"]["ce_type"] == "ORDER_PLACED"
    assert json.loads(m["value"]) == {"id": oid, "owner": "alice", "item": "book",
                                      "quantity": 2}
    assert 'orders_placed_total{plugin="orders",kind="normal"} 1' in d.get("/metrics").text


def test_an_owner_is_named_only_by_a_token_of_this_host(evhostd, tmp_path, orders_so,
                                                        kafka_bootstrap, unique_name):
    """An order's owner is a token's subject, unique only within its issuer
    (docs/sdk.md): POST /orders and GET /orders/{id} took an identity
    provider's token whose `sub` equalled a local user's id as that user,
    who could then read their orders. Those routes answer 403 to another
    issuer's token now, as /orders-feed did; its admin_role still counts."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from test_auth import ISSUER, claims, pem, sign
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "idp.pem"
    key_file.write_bytes(pem(key))
    secret = tmp_path / "jwt.key"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)
    d = evhostd({"auth": {"jwt_secret_file": str(secret), "jwt_public_key_file": str(key_file),
                          "jwt_public_key_issuer": ISSUER,
                          "jwt_public_key_roles_claim": "realm_access.roles"},
                 "plugin.orders": {"path": str(orders_so), "topic": unique_name("orders"),
                                   "payments_topic": unique_name("payments")}},
                brokers=kafka_bootstrap)

    def provider(sub, *roles):
        token = sign(key, "RS256", claims(sub=sub, aud=None, realm_access={"roles": roles}))
        return {"Authorization": f"Bearer {token}"}

    oid, _ = place(d, "alice")
    for name, r in (("GET", d.get(f"/orders/{oid}", headers=provider("alice"))),
                    ("POST", d.post("/orders", json={"item": "book", "quantity": 1},
                                    headers=provider("alice"))),
                    ("feed", d.get("/orders-feed", headers=provider("alice")))):
        assert r.status_code == 403, (name, r.status_code, r.text)
        assert r.json()["detail"] == "a token of this host is needed", r.text
    got = d.get(f"/orders/{oid}", headers=provider("boss", "orders-admin"))
    assert got.status_code == 200 and got.json()["owner"] == "alice", got.text
    assert order(d, oid).json()["owner"] == "alice"
    listed = d.get("/orders", headers=auth("boss", "orders-admin")).json()
    assert [o["id"] for o in listed] == [oid], listed


class Sse:
    """GET `path` on a raw socket; events read as {"event", "data"}."""

    def __init__(self, port, path, headers):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        req += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.sock.sendall((req + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill(time.monotonic() + 10)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split()[1])

    def _fill(self, deadline):
        self.sock.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = self.sock.recv(65536)
        assert chunk, f"stream closed: {self.buf!r}"
        self.buf += chunk

    def next_event(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            while b"\n\n" in self.buf:
                block, self.buf = self.buf.split(b"\n\n", 1)
                ev = {"data": []}
                for line in block.decode().split("\n"):
                    field, _, value = line.partition(": ")
                    if field == "data":
                        ev["data"].append(value)
                    elif field == "event":
                        ev["event"] = value
                if ev["data"]:
                    ev["data"] = json.loads("\n".join(ev["data"]))
                    return ev
            assert time.monotonic() < deadline, f"no event within {timeout:g}s: {self.buf!r}"
            self._fill(deadline)

    def close(self):
        self.sock.close()


def produce_payment(topic, ce_id, oid, result):
    lib.kafka_produce(topic, {"order_id": oid, "result": result}, key=oid,
                      headers={"ce_id": ce_id, "ce_type": "PAYMENT_RESULT"})


def test_payment_results_inbox_retries_and_dead_letters(evhostd, tmp_path, orders_so,
                                                        kafka_bootstrap, unique_name):
    topic, payments = unique_name("orders"), unique_name("payments")
    lib.create_topics([payments], kafka_bootstrap, partitions=1)
    d = orders_daemon(evhostd, tmp_path, orders_so, kafka_bootstrap, topic=topic,
                      payments_topic=payments, **{"retry.backoff_ms": 20})
    paid, flaky, partial, give_up = (place(d, "alice")[0] for _ in range(4))

    feed = Sse(d.port, "/orders-feed", auth("alice"))
    try:
        assert feed.status == 200
        # A write committed by an HTTP handler reaches its owner's stream.
        late, _ = place(d, "alice", item="pen", quantity=1)
        assert feed.next_event() == {"event": "order", "data": {"id": late, "status": "new"}}

        # The same ce_id twice: handled once (the inbox).
        dup = f"pay-{uuid.uuid4()}"
        produce_payment(payments, dup, paid, "paid")
        produce_payment(payments, dup, paid, "paid")
        produce_payment(payments, f"pay-{uuid.uuid4()}", flaky, "flaky")
        produce_payment(payments, f"pay-{uuid.uuid4()}", partial, "partial")
        produce_payment(payments, "pay-give-up", give_up, "give-up")
        lib.kafka_produce(payments, "not json", headers={"ce_id": "pay-garbage",
                                                         "ce_type": "PAYMENT_RESULT"})
        seen = [feed.next_event() for _ in range(2)]
        assert {"event": "order", "data": {"id": paid, "status": "paid"}} in seen
    finally:
        feed.close()

    lib.wait_until(lambda: all(order(d, o).json()["status"] == "paid"
                               for o in (paid, flaky, partial)), timeout=30)
    dlq = lib.kafka_consume(f"{payments}.orders.dlq", count=2, timeout=30)
    errors = {m["headers"]["ce_id"]: m["headers"]["evhost_dlq_error"] for m in dlq}
    assert errors == {"pay-give-up": "refund requested, ledger unreachable",
                      "pay-garbage": "not a payment result (order_id, result)"}
    assert order(d, give_up).json()["status"] == "new"

    # ORDER_PAID once per order paid (the duplicate was not handled again),
    # after the ORDER_PLACED of the five orders.
    events = lib.kafka_consume(topic, count=8, timeout=30)
    paid_events = sorted(m["key"] for m in events if m["headers"]["ce_type"] == "ORDER_PAID")
    assert paid_events == sorted([paid, flaky, partial])
    d.wait_for_log(f"event {dup} already handled, skipped")
    d.wait_for_log("attempt 1/3 failed (payment gateway busy)")

    # What KEEP_AND_RETRY and KEEP_AND_DEAD_LETTER kept is on disk; what RETRY
    # did not keep is not.
    with sqlite3.connect(f"file:{d.state_dir}/orders.db?mode=ro", uri=True) as db:
        steps = dict(db.execute("SELECT order_id, step FROM payment_steps").fetchall())
    assert steps == {partial: "receipt", give_up: "refund-requested"}
    metrics = d.get("/metrics").text
    for result, n in (("paid", 3), ("retried", 1), ("kept", 1), ("dead-lettered", 1),
                      ("rejected", 1)):
        assert f'orders_payment_events_total{{plugin="orders",result="{result}"}} {n}' \
            in metrics, metrics
    assert 'orders_payment_handling_seconds_count{plugin="orders"} 7' in metrics


MISTAKES = r"""
#include <string.h>
#include <evhost/evhost.h>

static const evh_config_key cfg[] = {
    {"word", EVH_CFG_STRING, "the-default", 0, "a word"},
    {"topic", EVH_CFG_STRING, NULL, 1, "topic"},
    {NULL, 0, NULL, 0, NULL},
};
static const evh_migration mig[] = {
    {1, "CREATE TABLE parent(id INTEGER PRIMARY KEY);"
        "CREATE TABLE child(id INTEGER PRIMARY KEY,"
        " pid INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
        "CREATE TABLE seen(id TEXT PRIMARY KEY);"},
};

static int ok(evh_request *req, evh_response *resp, void *ud)
{
	(void)req; (void)ud;
	return evh_resp_json(resp, 200, "{}", 2);
}

/* The mistake: the 201's body set before a commit that then fails. */
static int body_then_commit(evh_request *req, evh_response *resp, void *ud)
{
	evh_plugin *p = ud;
	evh_tx *tx;
	int rc;
	(void)req;
	if ((rc = evh_tx_begin(p, &tx)) != EVH_OK)
		return rc;
	evh_exec(tx, "INSERT INTO child(id, pid) VALUES(1, 999)", NULL, 0, NULL);
	evh_resp_json(resp, 201, "{\"created\":true}", 16);
	return evh_tx_commit(tx); /* EVH_ECONSTRAINT: the deferred key */
}

/* The same, the body set only after the commit said so. */
static int commit_then_body(evh_request *req, evh_response *resp, void *ud)
{
	evh_plugin *p = ud;
	evh_tx *tx;
	int rc;
	(void)req;
	if ((rc = evh_tx_begin(p, &tx)) != EVH_OK)
		return rc;
	evh_exec(tx, "INSERT INTO child(id, pid) VALUES(2, 999)", NULL, 0, NULL);
	evh_resp_status(resp, 201);
	if ((rc = evh_tx_commit(tx)) != EVH_OK)
		return rc;
	return evh_resp_json(resp, 201, "{\"created\":true}", 16);
}

static evh_event_result on_event(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud)
{
	const char *data = evh_event_data(ev, NULL);
	evh_value id[] = {EVH_TEXT(evh_event_id(ev))};
	(void)ud;
	evh_log(p, EVH_LOG_INFO, "handling %s attempt %d", data, evh_event_attempt(ev));
	evh_exec(tx, "INSERT INTO seen(id) VALUES(?) ON CONFLICT DO NOTHING", id, 1, NULL);
	if (!strcmp(data, "unknown-result"))
		return (evh_event_result)7;
	if (!strcmp(data, "ok-after-failure"))
		evh_exec(tx, "INSERT INTO no_such_table VALUES(1)", NULL, 0, NULL);
	return EVH_EVENT_OK;
}

static int init(evh_plugin *p, void **state)
{
	const char *word = evh_config_str(p, "word");
	*state = NULL;
	evh_log(p, EVH_LOG_INFO, "word is [%s]", word ? word : "(null)");
	if (evh_migrate(p, mig, 1) != EVH_OK)
		return EVH_ERR;
	evh_route r = {.struct_size = sizeof r, .method = "GET", .pattern = "/m/role",
	               .handler = ok, .role = "admin"};
	evh_log(p, EVH_LOG_INFO, "role without auth: %s", evh_strerror(evh_http_route_ex(p, &r)));
	if (evh_http_route(p, "POST", "/m/body-then-commit", body_then_commit, p) ||
	    evh_http_route(p, "POST", "/m/commit-then-body", commit_then_body, p))
		return EVH_ERR;
	evh_subscription s = {.struct_size = sizeof s, .topic = evh_config_str(p, "topic"),
	                      .handler = on_event, .max_attempts = 2, .backoff_ms = 10,
	                      .backoff_max_ms = 10};
	return evh_subscribe(p, &s);
}

static void fini(evh_plugin *p, void *state) { (void)p; (void)state; }

EVH_PLUGIN("mistakes", "0", "makes the mistakes docs/sdk.md warns of", cfg, init, fini)
"""


def test_the_mistakes_the_docs_warn_of(evhostd, sdk_prefix, tmp_path, kafka_bootstrap,
                                       unique_name):
    src = tmp_path / "mistakes.c"
    src.write_text(MISTAKES)
    so = cc_plugin(sdk_prefix, src, tmp_path / "mistakes.so")
    topic = unique_name("mistakes")
    lib.create_topics([topic], kafka_bootstrap, partitions=1)
    d = evhostd({"plugin.mistakes": {"path": str(so), "topic": topic, "word": ""}},
                brokers=kafka_bootstrap)
    log = d.log_text()
    # A key set to nothing reads as "", not as its default.
    assert "[mistakes] word is []" in log
    # A role without EVH_ROUTE_AUTH is refused at registration, saying why.
    assert "a role needs EVH_ROUTE_AUTH" in log
    assert "role without auth: OK" not in log and "role without auth: " in log
    assert d.get("/m/role").status_code == 404

    # A body set before the commit is an answer: sent though nothing was stored.
    r = d.post("/m/body-then-commit", data="")
    assert r.status_code == 201 and r.json() == {"created": True}
    d.wait_for_log("after making its 201 answer; the answer is sent")
    # Set after the commit said EVH_OK, it never goes out for a failed one.
    r = d.post("/m/commit-then-body", data="")
    assert r.status_code == 500, r.text
    with sqlite3.connect(f"file:{d.state_dir}/mistakes.db?mode=ro", uri=True) as db:
        assert db.execute("SELECT count(*) FROM child").fetchone() == (0,)

    # OK after a failed statement, and a result that is none: retried, then
    # dead-lettered after max_attempts (2), their writes undone.
    for data in ("ok-after-failure", "unknown-result"):
        lib.kafka_produce(topic, data, headers={"ce_id": data})
    dlq = lib.kafka_consume(f"{topic}.mistakes.dlq", count=2, timeout=30)
    reasons = {m["value"]: m["headers"]["evhost_dlq_error"] for m in dlq}
    assert reasons == {"ok-after-failure": "storage: no such table: no_such_table",
                       "unknown-result": "handler returned unknown result 7"}
    assert all(m["headers"]["evhost_dlq_attempts"] == "2" for m in dlq)
    with sqlite3.connect(f"file:{d.state_dir}/mistakes.db?mode=ro", uri=True) as db:
        assert db.execute("SELECT count(*) FROM seen").fetchone() == (0,)


FULL = r"""
#include <stdlib.h>
#include <evhost/evhost.h>

static const evh_config_key cfg[] = {
    {"topic", EVH_CFG_STRING, NULL, 1, "consumed"},
    {"out", EVH_CFG_STRING, NULL, 1, "published to"},
    {NULL, 0, NULL, 0, NULL},
};

/* Publishes as many events as the event's data says, in the handler's tx:
 * with [store] outbox_max_rows = 1, the second is refused (EVH_EFULL). */
static evh_event_result on_event(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud)
{
	const char *data = evh_event_data(ev, NULL);
	long n = data ? strtol(data, NULL, 10) : 0;
	for (long i = 0; i < n; i++)
		if (evh_publish(p, tx, (const char *)ud, "k", "full.out", "{}", 2) != EVH_OK)
			return EVH_EVENT_RETRY;
	return EVH_EVENT_OK;
}

static int init(evh_plugin *p, void **state)
{
	evh_subscription s = {.struct_size = sizeof s, .topic = evh_config_str(p, "topic"),
	                      .handler = on_event, .ud = (void *)evh_config_str(p, "out"),
	                      .max_attempts = 4, .backoff_ms = 10, .backoff_max_ms = 10};
	*state = NULL;
	return evh_subscribe(p, &s);
}

static void fini(evh_plugin *p, void *state) { (void)p; (void)state; }

EVH_PLUGIN("full", "0", "publishes from its handler into a full outbox", cfg, init, fini)
"""


def handled_total(d, topic, result):
    for labels, v in re.findall(r'^evhost_events_handled_total\{([^}]*)\} (\S+)$',
                                d.get("/metrics").text, re.M):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if lab.get("plugin") == "full" and lab.get("topic") == topic and \
                lab.get("result") == result:
            return float(v)
    return 0


def test_a_handler_whose_publishes_never_fit_the_outbox_is_dead_lettered(
        evhostd, sdk_prefix, tmp_path, kafka_bootstrap, unique_name):
    # A handler's publish refused for a full outbox waits for room (no
    # attempt used up) -- unless the outbox is empty and the event's own
    # publishes exceed [store] outbox_max_rows: no room would ever come, so
    # it is retried as any failed attempt (each one counted) and
    # dead-lettered after the last, and the others flow on.
    src = tmp_path / "full.c"
    src.write_text(FULL)
    so = cc_plugin(sdk_prefix, src, tmp_path / "full.so")
    topic, out = unique_name("full"), unique_name("fullout")
    lib.create_topics([topic, out], kafka_bootstrap, partitions=1)
    d = evhostd({"log": {"level": "info"}, "store": {"outbox_max_rows": 1},
                 "plugin.full": {"path": str(so), "topic": topic, "out": out,
                                 "group": unique_name("g")}},
                brokers=kafka_bootstrap)
    for i in range(3):  # two publishes each: never room for both
        lib.kafka_produce(topic, "2", headers={"ce_id": f"two-{i}"}, brokers=kafka_bootstrap)
    dlq = lib.kafka_consume(f"{topic}.full.dlq", count=3, timeout=60, brokers=kafka_bootstrap)
    assert sorted(m["headers"]["ce_id"] for m in dlq) == ["two-0", "two-1", "two-2"], dlq
    assert all(m["headers"]["evhost_dlq_attempts"] == "4" for m in dlq), dlq
    assert all("outbox full" in m["headers"]["evhost_dlq_error"] for m in dlq), dlq
    # One publish has room: handled.
    lib.kafka_produce(topic, "1", headers={"ce_id": "one"}, brokers=kafka_bootstrap)
    sent = lib.kafka_consume(out, count=1, timeout=60, brokers=kafka_bootstrap)
    assert len(sent) == 1, sent
    lib.wait_until(lambda: handled_total(d, topic, "ok") == 1, timeout=10)
    log = d.log_text()
    retry_lines = [ln for ln in log.splitlines()
                   if re.search(r"attempt \d/4 failed \(storage: outbox full.*the outbox "
                                r"is empty, yet its publishes do not fit", ln)]
    assert len(retry_lines) == 9, "\n".join(retry_lines)  # 3 events x attempts 1-3
    assert handled_total(d, topic, "dlq") == 3
    assert d.stop() == 0, d.log_tail()


WAITER = r"""
#include <stdio.h>
#include <string.h>
#include <evhost/evhost.h>

static const evh_config_key cfg[] = {
    {"topic", EVH_CFG_STRING, NULL, 1, "consumed"},
    {"out", EVH_CFG_STRING, NULL, 1, "published to"},
    {NULL, 0, NULL, 0, NULL},
};

/* Publishes one event per event: its partition, offset and attempt, padded
 * to 1000 bytes (above the out topic's max.message.bytes in the test, so
 * the relay cannot send it and the outbox stays full). */
static evh_event_result on_event(evh_plugin *p, const evh_event *ev, evh_tx *tx, void *ud)
{
	char json[1100];
	int n = snprintf(json, sizeof json, "{\"p\":%d,\"o\":%lld,\"a\":%d,\"pad\":\"",
	                 (int)evh_event_partition(ev), (long long)evh_event_offset(ev),
	                 evh_event_attempt(ev));
	memset(json + n, 'x', 1000 - (size_t)n);
	memcpy(json + 1000, "\"}", 3);
	if (evh_publish(p, tx, (const char *)ud, "k", "waiter.out", json, strlen(json)) != EVH_OK)
		return EVH_EVENT_RETRY; /* EVH_EFULL: the host waits for room */
	return EVH_EVENT_OK;
}

static int init(evh_plugin *p, void **state)
{
	evh_subscription s = {.struct_size = sizeof s, .topic = evh_config_str(p, "topic"),
	                      .handler = on_event, .ud = (void *)evh_config_str(p, "out"),
	                      .max_attempts = 2, .backoff_ms = 10, .backoff_max_ms = 50};
	*state = NULL;
	return evh_subscribe(p, &s);
}

static void fini(evh_plugin *p, void *state) { (void)p; (void)state; }

EVH_PLUGIN("full", "0", "publishes one event per event", cfg, init, fini)
"""


def test_a_handler_meeting_a_full_outbox_waits_without_using_attempts(
        evhostd, sdk_prefix, tmp_path, kafka_bootstrap, unique_name):
    # The relay cannot send (the out topic refuses the events as too big),
    # so the outbox ([store] outbox_max_rows 2) stays full. The events that
    # meet it used to be retried, each retry an attempt, and dead-lettered
    # after max_attempts (2) though nothing was wrong with them. Now they
    # wait as for a full database: no attempt used up, none dead-lettered;
    # once the topic takes the events, every one is handled once, at its
    # first attempt, in order in its partition. One line when the waiting
    # starts, one with the count when it goes on.
    src = tmp_path / "waiter.c"
    src.write_text(WAITER)
    so = cc_plugin(sdk_prefix, src, tmp_path / "waiter.so")
    topic, out = unique_name("wait"), unique_name("waitout")
    lib.create_topics([topic], kafka_bootstrap, partitions=2)
    lib.create_topics([out], kafka_bootstrap, partitions=1,
                      configs={"max.message.bytes": "600"})
    d = evhostd({"log": {"level": "info"}, "store": {"outbox_max_rows": 2},
                 "plugin.full": {"path": str(so), "topic": topic, "out": out,
                                 "group": unique_name("g")}},
                brokers=kafka_bootstrap)
    n = 8
    for i in range(n):
        lib.kafka_produce(topic, "{}", key=f"k{i % 4}", headers={"ce_id": f"ev-{i}"},
                          brokers=kafka_bootstrap)
    # Far more tries than max_attempts would allow (old code: dead letters).
    lib.wait_until(lambda: handled_total(d, topic, "retry") >= 20 or
                   handled_total(d, topic, "dlq") > 0, timeout=60,
                   message="events to wait for room in the outbox")
    assert handled_total(d, topic, "dlq") == 0, d.log_tail()
    assert handled_total(d, topic, "ok") == 2  # the two the outbox took
    lib.alter_topic(out, {"max.message.bytes": "1048588"}, kafka_bootstrap)
    lib.wait_until(lambda: handled_total(d, topic, "ok") == n, timeout=60,
                   message="every event handled once the relay sends")
    sent = lib.kafka_consume(out, count=n, timeout=60, brokers=kafka_bootstrap)
    got = [json.loads(m["value"]) for m in sent]
    assert len(got) == n, got
    assert all(g["a"] == 1 for g in got), [(g["p"], g["o"], g["a"]) for g in got]
    for part in {g["p"] for g in got}:  # each once, in its partition's order
        offs = [g["o"] for g in got if g["p"] == part]
        assert offs == sorted(set(offs)), (part, offs)
    assert handled_total(d, topic, "dlq") == 0
    assert handled_total(d, topic, "reject") == 0
    tries = handled_total(d, topic, "retry")
    assert d.stop() == 0, d.log_tail()
    log = d.log_text()
    assert not re.search(r"attempt \d/2 failed", log), d.log_tail()
    starts = len(re.findall(r"waits: a handler's publish met a full outbox", log))
    ends = len(re.findall(r"the handlers' publishes go into the outbox again; \d+ more "
                          r"waits? for a full outbox", log))
    assert starts >= 1 and starts == ends, d.log_tail()
    assert starts < tries / 4  # not a line per try


LEFTOVER = r"""
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <evhost/evhost.h>

static const evh_config_key cfg[] = {
    {"topic", EVH_CFG_STRING, NULL, 1, "published to"},
    {"rc_file", EVH_CFG_STRING, NULL, 1, "where the thread writes what evh_publish gave"},
    {"join", EVH_CFG_BOOL, "false", 0, "fini stops and joins the thread (as it must)"},
    {"pause_us", EVH_CFG_INT, "1000", 0, "the thread's pause between rounds"},
    {NULL, 0, NULL, 0, NULL},
};

/* The plugin's mistake: a thread that calls the SDK in a loop, started in
 * init and never joined (fini does not stop it), unless join = true. */
static struct leftover {
	evh_plugin *p;
	char topic[256], rc_file[512];
	long pause_us;
	int join;
	pthread_t t;
	volatile int stop;
} left;

static void *loop(void *arg)
{
	struct leftover *l = arg;
	struct timespec pause = {0, l->pause_us * 1000};
	for (long i = 0; !l->stop; i++) {
		int rc = evh_publish(l->p, NULL, l->topic, "k", "leftover.tick", "{}", 2);
		evh_tx *tx = NULL;
		int begun = evh_tx_begin(l->p, &tx);
		FILE *f;
		if (begun == EVH_OK)
			evh_tx_rollback(tx);
		evh_log(l->p, EVH_LOG_DEBUG, "leftover: tick %ld", i);
		if (i % 16 == 0 && (f = fopen(l->rc_file, "w"))) {
			fprintf(f, "%d %d %s\n", rc, begun, evh_config_str(l->p, "topic") ? "cfg" : "-");
			fclose(f);
		}
		if (l->pause_us)
			nanosleep(&pause, NULL);
	}
	return NULL;
}

static int init(evh_plugin *p, void **state)
{
	left.p = p;
	snprintf(left.topic, sizeof left.topic, "%s", evh_config_str(p, "topic"));
	snprintf(left.rc_file, sizeof left.rc_file, "%s", evh_config_str(p, "rc_file"));
	left.pause_us = (long)evh_config_int(p, "pause_us", 1000);
	left.join = evh_config_bool(p, "join", 0);
	*state = NULL;
	if (pthread_create(&left.t, NULL, loop, &left) != 0)
		return EVH_ERR;
	*state = &left;
	return EVH_OK;
}

static void fini(evh_plugin *p, void *state)
{
	struct leftover *l = state;
	(void)p;
	if (!l || !l->join)
		return;
	l->stop = 1;
	pthread_join(l->t, NULL);
}

EVH_PLUGIN("leftover", "0", "leaves a thread calling the SDK after fini", cfg, init, fini)
"""


def test_a_thread_left_running_after_fini_is_refused_not_a_crash(
        evhostd, sdk_prefix, tmp_path, kafka_bootstrap, unique_name):
    # docs/sdk.md: a plugin joins its threads in fini. One that does not
    # (its thread calls evh_publish, evh_tx_begin, evh_log, evh_config in a
    # loop) made the host read the plugin's freed handle (AddressSanitizer:
    # heap-use-after-free) and, once its library was unloaded, run code
    # that was no longer mapped (SIGSEGV). Now its calls are refused
    # (EVH_ESTATE), said once, and its library stays loaded.
    src = tmp_path / "leftover.c"
    src.write_text(LEFTOVER)
    so = cc_plugin(sdk_prefix, src, tmp_path / "leftover.so")
    topic, rc_file = unique_name("left"), tmp_path / "rc"
    lib.create_topics([topic], kafka_bootstrap, partitions=1)
    leftover = {"path": str(so), "topic": topic, "rc_file": str(rc_file)}
    d = evhostd(dropins={"50-leftover.conf": {"plugin.leftover": leftover}},
                brokers=kafka_bootstrap)
    lib.wait_until(lambda: rc_file.exists() and rc_file.read_text().startswith("0 0 cfg"),
                   timeout=30, message="the leftover thread publishing")
    # The plugin stopped by a reload (its drop-in gone): its thread runs on.
    (d.config_dir / "conf.d" / "50-leftover.conf").unlink()
    d.send_signal(signal.SIGHUP)
    d.wait_for_log("plugin 'leftover': evh_", timeout=30)
    lib.wait_until(lambda: rc_file.read_text() == f"{EVH_ESTATE} {EVH_ESTATE} -\n",
                   timeout=30, message="the leftover thread refused")
    time.sleep(0.5)  # more calls, none said again
    log = d.log_text()
    assert log.count("called after the plugin's fini returned") == 1, d.log_tail()
    assert "plugin 'leftover': evh_" in log
    assert d.get("/healthz").status_code == 200
    assert d.stop() == 0, d.log_tail()
    assert d.sanitizer_report() is None, d.sanitizer_report()

    # Stopped with the daemon (SIGTERM): the same, and a clean exit.
    rc_file.unlink()
    d = evhostd(dropins={"50-leftover.conf": {"plugin.leftover": leftover}},
                brokers=kafka_bootstrap)
    lib.wait_until(lambda: rc_file.exists() and rc_file.read_text().startswith("0 0 cfg"),
                   timeout=30, message="the leftover thread publishing")
    assert d.stop() == 0, d.log_tail()
    assert d.log_text().count("called after the plugin's fini returned") <= 1, d.log_tail()
    assert d.sanitizer_report() is None, d.sanitizer_report()


def test_a_plugin_thread_publishing_while_the_daemon_stops_is_safe(
        evhostd, sdk_prefix, tmp_path, kafka_bootstrap, unique_name):
    # A plugin that does it right: its thread publishes until fini joins
    # it. The daemon's stop freed the outbox before fini, and a publish
    # committed just before woke it after (the store calls the commit hook
    # once its lock is let go): heap-use-after-free in outbox_wake, seen by
    # AddressSanitizer. Stopped a few times with the thread never pausing.
    src = tmp_path / "leftover.c"
    src.write_text(LEFTOVER)
    so = cc_plugin(sdk_prefix, src, tmp_path / "leftover.so")
    topic, rc_file = unique_name("joined"), tmp_path / "rc"
    lib.create_topics([topic], kafka_bootstrap, partitions=1)
    section = {"path": str(so), "topic": topic, "rc_file": str(rc_file), "join": "true",
               "pause_us": 0}
    for _ in range(4):
        if rc_file.exists():
            rc_file.unlink()
        d = evhostd({"plugin.leftover": section}, brokers=kafka_bootstrap)
        lib.wait_until(lambda: rc_file.exists() and rc_file.read_text().startswith("0 0 cfg"),
                       timeout=30, message="the thread publishing")
        assert d.stop() == 0, d.log_tail()
        assert d.sanitizer_report() is None, d.sanitizer_report()
        assert "called after the plugin's fini returned" not in d.log_text()


# A plugin that declares its routes (ABI 1.12, EVH_PLUGIN_ROUTES) and
# registers each at init, and the one route its "extra" key names beside
# them. @ROUTES@ and @ENTRY@ are filled in per test.
ROUTED = r"""
#include <stdio.h>
#include <string.h>
#include <evhost/evhost.h>

static const evh_config_key cfg[] = {
    {"extra", EVH_CFG_STRING, "", 0, "one more route to register, \"METHOD /pattern\""},
    {NULL, EVH_CFG_STRING, NULL, 0, NULL},
};

static int answer(evh_request *req, evh_response *resp, void *ud)
{
	(void)ud;
	char body[256];
	int n = snprintf(body, sizeof body, "{\"path\":\"%s\"}", evh_req_path(req));
	return evh_resp_json(resp, 200, body, (size_t)n);
}

/* "METHOD /pattern", as declared. */
static int route(evh_plugin *p, const char *entry)
{
	char method[32];
	const char *sp = strchr(entry, ' ');
	snprintf(method, sizeof method, "%.*s", (int)(sp - entry), entry);
	return evh_http_route(p, method, sp + 1, answer, NULL);
}

static const char *const routes[] = {@ROUTES@ NULL};

static int init(evh_plugin *p, void **state)
{
	const char *extra = evh_config_str(p, "extra");
	int rc;
	*state = NULL;
	for (size_t i = 0; routes[i]; i++)
		if ((rc = route(p, routes[i])) != EVH_OK)
			return rc;
	return extra && *extra ? route(p, extra) : EVH_OK;
}

static void fini(evh_plugin *p, void *state) { (void)p; (void)state; }

@ENTRY@
"""
DECLARED = 'EVH_PLUGIN_ROUTES("widgets", "0", "declares its routes", cfg, NULL, routes, init, fini)'
UNDECLARED = 'EVH_PLUGIN("widgets", "0", "declares no routes (as before ABI 1.12)", cfg, init, fini)'


def routed_so(sdk_prefix, tmp_path, name, routes, entry=DECLARED):
    src = tmp_path / f"{name}.c"
    src.write_text(ROUTED.replace("@ROUTES@", "".join(f'"{r}", ' for r in routes))
                   .replace("@ENTRY@", entry))
    return cc_plugin(sdk_prefix, src, tmp_path / f"{name}.so")


def test_a_declared_route_clashing_with_another_plugins_is_found_before_any_init(
        evhostd, build_dir, sdk_prefix, tmp_path):
    # A third party's plugin that also routes POST /users, beside user:
    # --check-config said OK, and the start ran user's init (its database,
    # its migrations) before the plugin's init failed on the route. Now its
    # declaration (ABI 1.12) is checked with user's before any init, naming
    # both sections, files and the route.
    so = routed_so(sdk_prefix, tmp_path, "widgets", ["GET /widgets", "POST /users"])
    user = build_dir / "plugins" / "user.so"
    conf = {"10-user.conf": "[plugin.user]\n",
            "50-widgets.conf": f"# a third party's\n[plugin.widgets]\npath = {so}\n"}
    said = "route POST /users already registered by plugin 'user' ([plugin.user] at "
    r = evhostd.run(["--check-config"], dropins=conf)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [l for l in r.stdout.splitlines() if said in l]
    assert len(lines) == 1, r.stdout
    assert re.search(r"conf\.d/50-widgets\.conf:2: \[plugin\.widgets\] " + re.escape(f"{so}: ")
                     + re.escape(said) + r".*conf\.d/10-user\.conf:1, " + re.escape(f"{user}): ")
                     + "both declare it", lines[0]), lines[0]
    assert "1 problem found" in r.stdout, r.stdout

    # The start: refused before any plugin's init, no database made.
    state = tmp_path / "refused-state"
    r = evhostd.run([], dropins=conf, state_dir=state, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert said in r.stderr and "[plugin.widgets]" in r.stderr, r.stderr
    assert "running (" not in r.stderr and "init failed" not in r.stderr, r.stderr
    assert not list(state.glob("*.db")), list(state.iterdir())

    # Another capture name at the same path is the same route to the router.
    so2 = routed_so(sdk_prefix, tmp_path, "widgets2", ["DELETE /users/{uid}"])
    r = evhostd.run(["--check-config"], dropins={
        "10-user.conf": "[plugin.user]\n", "50-widgets.conf": f"[plugin.widgets]\npath = {so2}\n"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("route DELETE /users/{uid} conflicts with DELETE /users/{id} (same path) of plugin "
            "'user'") in r.stdout, r.stdout

    # required = false: left out before its init, said; user starts and serves.
    conf["50-widgets.conf"] += "required = false\n"
    r = evhostd.run(["--check-config"], dropins=conf)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "(required = false: the start goes on without it)" in r.stdout, r.stdout
    d = evhostd(dropins=conf)
    text = d.log_text()
    assert re.search(r"conf\.d/50-widgets\.conf:2: \[plugin\.widgets\] .*" + re.escape(said)
                     + r".*\(required = false: left out, the start goes on without it\)",
                     text), text
    assert not (d.state_dir / "widgets.db").exists()
    assert d.get("/readyz").json()["plugins"] == {"user": "running"}
    assert d.get("/widgets").status_code == 404
    r = d.post("/users", json={"name": "Ada", "email": "ada@example.com",
                               "password": "correct horse battery"})
    assert r.status_code == 201, r.text


def test_a_reload_adding_a_clashing_declared_route_is_refused_with_nothing_stopped(
        evhostd, sdk_prefix, tmp_path):
    so = routed_so(sdk_prefix, tmp_path, "widgets", ["GET /widgets", "POST /users"])
    d = evhostd(dropins={"10-user.conf": "[plugin.user]\n"})
    dropin = d.config_dir / "conf.d" / "50-widgets.conf"
    dropin.write_text(f"[plugin.widgets]\npath = {so}\n")
    mark = len(d.log_text())
    d.send_signal(signal.SIGHUP)
    lib.wait_until(lambda: any(s in d.log_text()[mark:] for s in ("reload refused: 1 problem",
                                                                  "reload done")),
                   timeout=30, message="the reload did not end")
    text = d.log_text()[mark:]
    assert (f"reload refused: {dropin}:1: [plugin.widgets] {so}: route POST /users already "
            "registered by plugin 'user' ([plugin.user] at ") in text, text
    assert "reload refused: 1 problem; the running configuration stays" in text, text
    assert "draining" not in text and "could not be started" not in text, text
    assert not (d.state_dir / "widgets.db").exists()
    assert d.get("/readyz").json()["plugins"] == {"user": "running"}
    r = d.post("/users", json={"name": "Ada", "email": "ada@example.com",
                               "password": "correct horse battery"})
    assert r.status_code == 201, r.text


def test_a_route_registered_but_not_declared_is_refused_at_init(evhostd, sdk_prefix,
                                                               tmp_path):
    # With a declaration, init may register only what it declares, so the
    # declaration the checks read cannot drift from what the plugin routes.
    # Declared but not registered is fine (routes may depend on its keys).
    so = routed_so(sdk_prefix, tmp_path, "widgets", ["GET /widgets", "GET /widgets/{id}"])
    r = evhostd.run([], config={"plugin.widgets": {"path": str(so),
                                                   "extra": "GET /gadgets"}}, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert ("route GET /gadgets refused: not in the plugin's declared routes "
            "(EVH_PLUGIN_ROUTES): declare it there") in r.stderr, r.stderr
    assert "plugin 'widgets' init failed (invalid argument)" in r.stderr, r.stderr
    # The same route under another capture name is not the declared one.
    r = evhostd.run([], config={"plugin.widgets": {"path": str(so),
                                                   "extra": "GET /widgets/{name}/x"}},
                    timeout=60)
    assert r.returncode == 1 and "route GET /widgets/{name}/x refused" in r.stderr, r.stderr
    # A route no declaration could hold is said for what is wrong with it, not
    # sent to be declared (a lower-case method is refused there too).
    r = evhostd.run([], config={"plugin.widgets": {"path": str(so), "extra": "get /widgets"}},
                    timeout=60)
    assert r.returncode == 1 and "method must be upper-case letters" in r.stderr, r.stderr
    assert "declare it there" not in r.stderr, r.stderr
    so = routed_so(sdk_prefix, tmp_path, "more", ["GET /widgets", "GET /gadgets",
                                                  "PUT /widgets/{id}"])
    d = evhostd({"plugin.widgets": {"path": str(so)}})
    assert d.get("/widgets").json() == {"path": "/widgets"}
    assert d.get("/gadgets").json() == {"path": "/gadgets"}
    assert d.get("/nothing").status_code == 404


def test_a_bad_declaration_is_refused_at_load_naming_the_entry(evhostd, sdk_prefix, tmp_path):
    for routes, said in (
            (["GET /widgets", "GET/nospace"],
             "its declared routes' entry 2, 'GET/nospace', is not \"METHOD /pattern\""),
            (["get /widgets"], "its declared routes' entry 1, 'get /widgets', is not a route: "
                               "method must be upper-case letters"),
            (["GET /widgets", "GET /healthz"], "its declared routes' entry 2, 'GET /healthz': "
                                               "the host serves /healthz (liveness) itself"),
            (["GET /admin/widgets"], "its declared routes' entry 1, 'GET /admin/widgets': the "
                                     "host serves /admin and every path under it")):
        so = routed_so(sdk_prefix, tmp_path, "bad", routes)
        r = evhostd.run(["--check-config"], config={"plugin.widgets": {"path": str(so)}})
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"[plugin.widgets] {so}: {said}" in r.stdout, r.stdout


def test_a_plugin_without_a_declaration_loads_serves_and_clashes_at_init(
        evhostd, sdk_prefix, tmp_path):
    # EVH_PLUGIN without routes (a plugin as written for ABI 1.11): it
    # loads and serves what it registers, and a clash of its is found as
    # before, by its init.
    so = routed_so(sdk_prefix, tmp_path, "legacy", ["GET /widgets", "GET /widgets/{id}"],
                   entry=UNDECLARED)
    d = evhostd({"plugin.widgets": {"path": str(so), "extra": "GET /gadgets"}})
    assert d.get("/widgets/7").json() == {"path": "/widgets/7"}
    assert d.get("/gadgets").json() == {"path": "/gadgets"}
    d.stop()
    conf = {"10-user.conf": "[plugin.user]\n",
            "50-widgets.conf": f"[plugin.widgets]\npath = {so}\nextra = POST /users\n"}
    r = evhostd.run(["--check-config"], dropins=conf)
    assert r.returncode == 0 and "configuration OK (2 plugins)" in r.stdout, r.stdout + r.stderr
    r = evhostd.run([], dropins=conf, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "plugin 'widgets' init failed" in r.stderr and "POST /users" in r.stderr, r.stderr


def test_a_cxx_plugin_declares_its_routes(evhostd, tmp_path):
    # EVH_PLUGIN_ROUTES in C++ (no designated initializers, -pedantic).
    import shutil
    cxx = shutil.which("g++") or shutil.which("c++")
    if not cxx:
        pytest.skip("no C++ compiler (g++) is installed")
    src = tmp_path / "routed.cpp"
    src.write_text(ROUTED.replace("@ROUTES@", '"GET /widgets", ').replace("@ENTRY@", DECLARED)
                   .replace("(int)(sp - entry)", "static_cast<int>(sp - entry)")
                   .replace("(size_t)n", "static_cast<size_t>(n)"))
    out = tmp_path / "routed.so"
    r = subprocess.run([cxx, "-std=c++17", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
                        "-pedantic", "-Wold-style-cast", "-Wl,--no-undefined",
                        f"-I{lib.REPO_ROOT / 'sdk' / 'include'}", str(src), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = evhostd({"plugin.widgets": {"path": str(out)}})
    assert d.get("/widgets").json() == {"path": "/widgets"}


HEADER = lib.REPO_ROOT / "sdk" / "include" / "evhost" / "evhost.h"
SDK_MD = lib.REPO_ROOT / "docs" / "sdk.md"
ENTRY_ARGS = {"EVH_PLUGIN": ("config", "init", "fini"),
              "EVH_PLUGIN_CHECKED": ("config", "check", "init", "fini"),
              "EVH_PLUGIN_ROUTES": ("config", "check", "routes", "init", "fini")}
# The smallest definition of each thing a usage line names (its config
# table, check, routes, init, fini), for the line to build as written.
ENTRY_DEFINITIONS = {
    "config": "static const evh_config_key {}[] = {{{{NULL, 0, NULL, 0, NULL}}}};",
    "check": "static int {}(evh_plugin *p) {{ (void)p; return EVH_OK; }}",
    "routes": "static const char *const {}[] = {{NULL}};",
    "init": "static int {}(evh_plugin *p, void **s) {{ (void)p; (void)s; return EVH_OK; }}",
    "fini": "static void {}(evh_plugin *p, void *s) {{ (void)p; (void)s; }}",
}


def entry_usages():
    """The entry macros as the header's comments and sdk.md show them: each
    usage comment's lines, and each statement sdk.md's C blocks write."""
    usages = []
    for m in re.finditer(r"/\*((?:(?!\*/).)*)\*/\n#define (EVH_PLUGIN\w*)\(",
                         HEADER.read_text(), re.S):
        lines = re.findall(r"^ \*   (.*)$", m.group(1), re.M)
        assert lines, f"the comment above {m.group(2)} shows its use"
        usages.append((f"evhost.h, above {m.group(2)}", "\n".join(lines)))
    for block in re.findall(r"^```c\n(.*?)^```", SDK_MD.read_text(), re.S | re.M):
        for m in re.finditer(r"^EVH_PLUGIN\w*\([^)]*\)[^\n]*", block, re.M):
            usages.append(("sdk.md", m.group(0)))
    assert {re.search(r"EVH_PLUGIN\w*(?=\()", u).group(0) for _, u in usages} \
        >= set(ENTRY_ARGS), usages
    return usages


def test_the_entry_macros_are_shown_as_they_build_with_pedantic_warnings(tmp_path):
    # The header's usage comments wrote `EVH_PLUGIN(...);`: the macro ends in
    # a function's body, so that `;` is an empty declaration at file scope,
    # which gcc -pedantic ("ISO C does not allow extra ';' outside of a
    # function") and clang -Wextra-semi refuse under -Werror.
    import shutil
    compilers = [c for c in ("cc", "clang") if shutil.which(c)]
    for i, (where, usage) in enumerate(entry_usages()):
        call = re.search(r"(EVH_PLUGIN\w*)\(([^)]*)\)", usage)
        names = [a.strip() for a in call.group(2).split(",")[3:]]
        kinds = ENTRY_ARGS[call.group(1)]
        assert len(names) == len(kinds), (where, usage)
        defs = [ENTRY_DEFINITIONS[k].format(n) for k, n in zip(kinds, names)
                 if n != "NULL" and not re.search(rf"\b{n}\s*\[\]\s*=", usage)]
        src = tmp_path / f"usage{i}.c"
        src.write_text("#include <evhost/evhost.h>\n" + "\n".join(defs) + "\n" + usage + "\n")
        for cc in compilers:
            extra = ["-Wextra-semi"] if cc == "clang" else []
            r = subprocess.run([cc, "-std=c11", "-fsyntax-only", "-pedantic", "-Wall", "-Wextra",
                                *extra, "-Werror", f"-I{lib.REPO_ROOT / 'sdk' / 'include'}",
                                str(src)], capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, f"{where}, built by {cc}:\n{usage}\n{r.stderr}"
