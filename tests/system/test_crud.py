"""crud.so against the real daemon: documents with server ids, field rules,
ETag / If-Match / If-None-Match, replace and JSON merge patch, deletes,
paging and filters, collections kept apart, start-up refusals for bad rules,
and the crud.<collection>.* events as a plain Kafka client (kcat) sees them
on a real broker. HTTP-only tests use the embedded broker."""

import http.client
import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests

import evhost_testlib as lib

PRODUCTS = {
    "collections": "products, orders",
    "collection.products.required": "name, price",
    "collection.products.types": "name:string, price:number, stock:integer, active:boolean, "
                                 "code:string, tags:array, meta:object",
}
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


# ------------------------------------------------------------------ helpers


@pytest.fixture
def d(evhostd):
    """A daemon with crud.so (products with rules, orders without) on the embedded broker."""
    return evhostd({"plugin.crud": dict(PRODUCTS)})


def create(d, doc, collection="products"):
    r = d.post(f"/crud/{collection}", json=doc)
    assert r.status_code == 201, r.text
    return r.json()


def problem(r, status, slug, field=None):
    """Assert `r` is an RFC 9457 problem with this status, type and field."""
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    p = r.json()
    assert p["status"] == status
    assert p["type"].endswith(slug), p
    assert p.get("detail"), p
    assert p.get("field") == field, p
    return p


def listing(d, query="", collection="products"):
    r = d.get(f"/crud/{collection}" + (f"?{query}" if query else ""))
    assert r.status_code == 200, r.text
    return r.json()


def names(d, query=""):
    return [doc.get("name") for doc in listing(d, query)["items"]]


# ------------------------------------------------------------------ create


def test_create_assigns_an_id_and_version_1(d):
    r = d.post("/crud/products", json={"name": "lamp", "price": 12.5, "color": "red",
                                       "dims": {"h": 30, "w": [1, 2]}})
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    doc = r.json()
    assert list(doc)[0] == "id"  # the id comes first
    assert uuid.UUID(doc["id"]).version == 7  # time-ordered (RFC 9562)
    # its first 48 bits are the creation time in Unix milliseconds
    assert abs(int(doc["id"].replace("-", "")[:12], 16) / 1000 - time.time()) < 60
    assert doc == {"id": doc["id"], "name": "lamp", "price": 12.5, "color": "red",
                   "dims": {"h": 30, "w": [1, 2]}}
    assert r.headers["ETag"] == '"1"'
    assert r.headers["Location"] == f"/crud/products/{doc['id']}"

    r = d.get(r.headers["Location"])
    assert r.status_code == 200
    assert r.json() == doc and r.headers["ETag"] == '"1"'


def test_collection_without_rules_takes_any_object(d):
    doc = create(d, {"anything": [1, None, {"deep": True}], "": "empty key"}, "orders")
    assert doc["anything"] == [1, None, {"deep": True}] and doc[""] == "empty key"


@pytest.mark.inputs
@pytest.mark.parametrize("body,field", [
    ({"price": 1}, "name"),
    ({"name": None, "price": 1}, "name"),
    ({"name": "lamp"}, "price"),
    ({"name": 7, "price": 1}, "name"),
    ({"name": "lamp", "price": "12"}, "price"),
    ({"name": "lamp", "price": 1, "stock": 2.5}, "stock"),
    ({"name": "lamp", "price": 1, "stock": "3"}, "stock"),
    ({"name": "lamp", "price": 1, "active": "yes"}, "active"),
    ({"name": "lamp", "price": 1, "tags": "a,b"}, "tags"),
    ({"name": "lamp", "price": 1, "meta": [1]}, "meta"),
    ({"id": "my-own-id", "name": "lamp", "price": 1}, "id"),
])
def test_create_enforces_the_collection_rules(d, body, field):
    p = problem(d.post("/crud/products", json=body), 422, "validation", field)
    assert field in p["detail"]
    assert listing(d)["items"] == []


def test_integer_accepts_whole_numbers_only(d):
    assert d.post("/crud/products", json={"name": "a", "price": 1, "stock": 3}).status_code == 201
    assert d.post("/crud/products", data='{"name": "b", "price": 1, "stock": 4.0}',
                  headers={"Content-Type": "application/json"}).status_code == 201
    problem(d.post("/crud/products", json={"name": "c", "price": 1, "stock": 1e300}),
            422, "validation", "stock")
    # exact integers only: 2^53 + 1 would be stored as 2^53, so neither passes
    for n in ("9007199254740993", "9007199254740992"):
        problem(d.post("/crud/products", data='{"name": "d", "price": 1, "stock": %s}' % n,
                       headers={"Content-Type": "application/json"}), 422, "validation", "stock")
    assert d.post("/crud/products", data='{"name": "e", "price": 1, "stock": 9007199254740991}',
                  headers={"Content-Type": "application/json"}).status_code == 201


@pytest.mark.parametrize("n", ["9007199254740993", "9223372036854775807", "-18014398509481985"])
def test_a_filter_finds_the_large_integer_it_was_written_with(d, n):
    # stored as the nearest double (cJSON's reading): the filter looks for
    # that double too, not for the exact integer no document holds
    r = d.post("/crud/orders", data='{"n": %s}' % n, headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    page = d.get("/crud/orders", params={"n": n}).json()
    assert [i["id"] for i in page["items"]] == [r.json()["id"]], page


@pytest.mark.inputs
@pytest.mark.parametrize("body", ["[]", "[{\"name\": \"lamp\"}]", "\"lamp\"", "3", "null"])
def test_create_needs_a_json_object(d, body):
    r = d.post("/crud/orders", data=body, headers={"Content-Type": "application/json"})
    problem(r, 422, "validation", None)


def test_malformed_json_is_refused_by_the_host(d):
    r = d.post("/crud/orders", data="{\"a\": ", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_a_member_named_twice_is_refused_not_stored(d):
    # crud checks the first "price" (cJSON's reading), a consumer in Python
    # or JavaScript reads the last: {"price":1,"price":"free"} passed the
    # collection's rules and reached them as a string. The host refuses
    # such a body before any plugin sees it, however the name is written.
    for body in ('{"name":"x","price":1,"price":"free"}',
                 '{"name":"x","price":1,"\\u0070rice":"free"}'):
        r = d.post("/crud/products", data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, r.text
        assert r.json()["detail"] == ('the member name "price" appears twice in one object '
                                      '(parsers disagree on which value counts)'), r.text
    created = create(d, {"name": "x", "price": 1})
    r = d.patch(f"/crud/products/{created['id']}", data='{"price":2,"price":"free"}',
                headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert [p["id"] for p in d.get("/crud/products").json()["items"]] == [created["id"]]


def test_a_number_beyond_a_double_is_refused_not_stored_as_null(d):
    # cJSON reads 1e999 as infinity and writes it as null: a required number
    # would be stored as null, and the product's price lost without a word
    r = d.post("/crud/products", data='{"name": "lamp", "price": 1e999}',
               headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "beyond the range of a double" in r.json()["detail"]
    doc = create(d, {"name": "lamp", "price": 1})
    url = f"/crud/products/{doc['id']}"
    for method in (d.put, d.patch):
        r = method(url, data='{"name": "lamp", "price": -2E+400}',
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 400
    assert d.get(url).json() == doc
    assert [p["id"] for p in d.get("/crud/products").json()["items"]] == [doc["id"]]


# Numbers as a client sends them (raw text) and the value JSON gives them.
# cJSON printed a number with 15 digits whenever they read back *nearly* as
# the same double: 9007199254740991 was stored and published as
# 9.00719925474099e+15 (9007199254740990).
EXACT_NUMBERS = {
    "big": ("9007199254740991", 9007199254740991),
    "neg": ("-9007199254740991", -9007199254740991),
    "odd": ("8000000000000001", 8000000000000001),
    "sum": ("0.30000000000000004", 0.30000000000000004),
    "tenth": ("0.1", 0.1),
    "huge": ("1e21", 1e21),
    "tiny": ("5e-324", 5e-324),
    "int": ("123", 123),
    "half": ("1.5", 1.5),
}


def exact_numbers_body(**extra):
    members = [f'"{k}": {text}' for k, (text, _) in EXACT_NUMBERS.items()]
    members += [f'"{k}": {json.dumps(v)}' for k, v in extra.items()]
    return "{" + ", ".join(members) + "}"


def assert_numbers_exact(text, where):
    doc = json.loads(text)
    for k, (_, value) in EXACT_NUMBERS.items():
        assert doc[k] == value and type(doc[k]) is type(value), (where, k, text)
    for k in ("big", "neg", "odd"):  # integers in plain digits, not 9.0...e+15
        assert f'"{k}":{EXACT_NUMBERS[k][0]}' in text, (where, text)
    assert '"sum":0.30000000000000004' in text, (where, text)
    return doc


def test_a_body_at_the_deepest_json_max_depth_is_served(evhostd):
    """[http] json_max_depth at its highest (128): a body nested that deep is
    parsed by crud (cJSON recurses once per level on the HTTP worker's 100
    KiB stack), stored, read back and listed; one level more is refused by
    the host. It used to go up to 1024, and about 550 ended the daemon on a
    stack overflow."""
    d = evhostd({"http": {"json_max_depth": 128}, "plugin.crud": {"collections": "deep"}})

    def nested(depth):  # the object counts as one level
        return '{"a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"

    r = d.post("/crud/deep", data=nested(128), headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert d.get(f"/crud/deep/{doc['id']}").json() == doc
    assert listing(d, collection="deep")["items"] == [doc]
    r = d.post("/crud/deep", data=nested(129), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert d.proc.poll() is None


def test_numbers_are_kept_exactly(evhostd, tmp_path):
    """What is stored, answered, listed and published is the number sent:
    integers exact up to 2^53, every double read back as itself; and so is
    what the admin API shows of the events."""
    token = "admin-token-for-tests-0123456789"
    (tmp_path / "admin.token").write_text(token + "\n")
    d = evhostd({"plugin.crud": dict(PRODUCTS),
                 "admin": {"token_file": str(tmp_path / "admin.token")}})
    hdrs = {"Content-Type": "application/json"}
    r = d.post("/crud/orders", data=exact_numbers_body(), headers=hdrs)
    assert r.status_code == 201, r.text
    doc_id = assert_numbers_exact(r.text, "POST")["id"]
    url = f"/crud/orders/{doc_id}"
    assert_numbers_exact(d.get(url).text, "GET")
    (item,) = listing(d, collection="orders")["items"]
    assert_numbers_exact(json.dumps(item, separators=(",", ":")), "list")
    r = d.get("/crud/orders")
    assert '"big":9007199254740991' in r.text and '"sum":0.30000000000000004' in r.text, r.text
    r = d.put(url, data=exact_numbers_body(v=1), headers=hdrs)
    assert r.status_code == 200, r.text
    assert_numbers_exact(r.text, "PUT")
    r = d.patch(url, data='{"v": 2, "more": 9007199254740993}', headers=MERGE_PATCH)
    assert r.status_code == 200, r.text
    assert_numbers_exact(r.text, "PATCH")
    assert '"more":9007199254740992' in r.text  # beyond 2^53: the nearest double, exactly
    assert_numbers_exact(d.get(url).text, "GET after PATCH")
    # The events carry the same text (crud publishes the document as stored).
    assert wait_outbox_empty(d), d.log_tail()
    r = d.get("/admin/events", params={"plugin": "crud"},
              headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert [e["type"] for e in r.json()["events"]] == ["crud.orders.created",
                                                       "crud.orders.updated",
                                                       "crud.orders.updated"], r.text
    for e in r.json()["events"]:
        assert_numbers_exact(json.dumps(e["data"], separators=(",", ":")), "admin")
    assert r.text.count('"big":9007199254740991') == 3, r.text
    db = sqlite3.connect(str(Path(d.state_dir) / "crud.db"))
    try:
        events = [v if isinstance(v, str) else bytes(v).decode() for (v,) in
                  db.execute("SELECT data FROM evh_log ORDER BY seq").fetchall()]
    finally:
        db.close()
    assert len(events) == 3, events
    for i, text in enumerate(events):
        assert_numbers_exact(text, f"event {i}")


@pytest.mark.inputs
@pytest.mark.parametrize("text,value", [("1.7976931348623157e308", 1.7976931348623157e308),
                                        ("-1.7976931348623157e308", -1.7976931348623157e308)])
def test_the_largest_double_is_stored(d, text, value):
    # Printed with 15 digits it was 1.79769313486232e+308, beyond a double's
    # range: the host refused the event and the client got 500.
    r = d.post("/crud/orders", data='{"max": %s}' % text,
               headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    assert r.json()["max"] == value
    assert d.get(f"/crud/orders/{r.json()['id']}").json()["max"] == value


def test_a_nul_escape_is_refused_not_cut_short(d):
    # cJSON reads "lamp\u0000 (discontinued)" as "lamp"
    r = d.post("/crud/products", data='{"name": "lamp\\u0000 (discontinued)", "price": 1}',
               headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "\\u0000 in a string at byte 14" in r.json()["detail"]
    assert d.get("/crud/products").json()["items"] == []


def wait_outbox_empty(d, timeout=30):
    deadline = time.monotonic() + timeout
    while lib.outbox_count(d.state_dir, "crud") and time.monotonic() < deadline:
        time.sleep(0.05)
    return lib.outbox_count(d.state_dir, "crud") == 0


def test_a_document_whose_event_cannot_be_a_kafka_message_is_refused(d):
    """Under the HTTP body limit (1 MiB) but over what one Kafka message may
    carry (the producer's message.max.bytes, 1,000,000): its event could never
    be sent, and in the outbox it would hold back every event after it. Refused
    with 413, nothing stored; one just under the line is stored and sent.
    The 413 tells the client the document's size and the limit in bytes (the
    event's 998976 less its key, the 36-byte id); a client's mistake is a
    warning in the log, never an ERROR line."""
    r = d.post("/crud/orders", json={"text": "x" * 1_030_000})
    p = problem(r, 413, "payload-too-large")
    stored = len(json.dumps({"id": "0" * 36, "text": "x" * 1_030_000}, separators=(",", ":")))
    assert f"the document is {stored} bytes" in p["detail"], p
    assert "at most 998940 bytes" in p["detail"], p
    assert "log" not in p["detail"] and "message.max.bytes" not in p["detail"], p
    d.wait_for_log("more than a message may carry (998976: the producer's"
                   " message.max.bytes, 1000000, less room for headers)")
    assert d.get("/crud/orders").json()["items"] == []
    doc = create(d, {"text": "small"}, collection="orders")
    r = d.patch(f"/crud/orders/{doc['id']}", json={"text": "x" * 1_030_000})
    p = problem(r, 413, "payload-too-large")
    assert f"the document is {stored} bytes" in p["detail"], p
    assert d.get(f"/crud/orders/{doc['id']}").json()["text"] == "small"
    assert " ERROR " not in d.log_text(), d.log_tail()
    d.delete(f"/crud/orders/{doc['id']}")
    big = create(d, {"text": "x" * 990_000}, collection="orders")
    small = create(d, {"text": "small"}, collection="orders")
    assert wait_outbox_empty(d), d.log_tail()
    assert {o["id"] for o in d.get("/crud/orders").json()["items"]} == {big["id"], small["id"]}


# SQLite's length limit lowered to 64 KiB for crud.db (tests/fixtures/faults.c):
# a value or row past it is refused (SQLITE_TOOBIG), which SQLite's default
# limit, 10^9 bytes, does only to a body near the largest evhostd may read.
STORAGE_LIMIT = 65536


def stored_size(text):
    """The size of {"text": text} as crud stores it: compact, its id first."""
    return len(json.dumps({"id": "0" * 36, "text": text}, separators=(",", ":")))


def limited_storage(build_dir):
    return lib.faults_preloaded(build_dir, sqlite_length=STORAGE_LIMIT, sqlite_db="crud.db")


def test_a_document_larger_than_the_storage_takes_is_413_naming_the_document(evhostd,
                                                                             build_dir):
    """A document the storage refuses is a 413 that says so, with its size,
    and says nothing of its event (far within a Kafka message), where the
    answer named both for want of telling them apart. A document the storage
    takes whose event it cannot keep until it is sent (the event's row is
    the document and its headers) names the event. Nothing is stored, and
    the client's mistake is a warning, never an ERROR line."""
    d = evhostd({"plugin.crud": {"collections": "orders"}}, env=limited_storage(build_dir))
    big = "x" * 100_000
    stored = (f"the document is {stored_size(big)} bytes as it would be stored, more than the"
              f" storage of this service takes ({STORAGE_LIMIT} bytes a value or row)")
    p = problem(d.post("/crud/orders", json={"text": big}), 413, "payload-too-large")
    assert p["detail"] == stored, p
    assert d.get("/crud/orders").json()["items"] == []
    doc = create(d, {"text": "small"}, collection="orders")
    for r in (d.put(f"/crud/orders/{doc['id']}", json={"text": big}),
              d.patch(f"/crud/orders/{doc['id']}", json={"text": big})):
        assert problem(r, 413, "payload-too-large")["detail"] == stored, r.text
    assert d.get(f"/crud/orders/{doc['id']}").json() == doc
    # The document's row is the document and 100 bytes (the collection, the
    # id, two times, SQLite's record header): within the limit at 20 under
    # it. The event's is the document and at least 150 (its id, topic, key,
    # type, source, time, traceparent): past it.
    text = "x" * (STORAGE_LIMIT - 120 - stored_size(""))
    p = problem(d.post("/crud/orders", json={"text": text}), 413, "payload-too-large")
    assert p["detail"] == (f"the event announcing the new document is {stored_size(text) + 36}"
                           " bytes (its key and data), more than the storage of this service"
                           f" takes to keep it until it is sent ({STORAGE_LIMIT} bytes a row)"), p
    assert [o["id"] for o in d.get("/crud/orders").json()["items"]] == [doc["id"]]
    assert " ERROR " not in d.log_text(), d.log_tail()


def test_a_document_the_storage_can_no_longer_read_is_a_500_not_a_413(evhostd, build_dir,
                                                                      tmp_path):
    """A document stored before the storage's limit went below its size
    cannot be read: the service's failure, a 500 logged as an error. It was
    a 413 saying "this change, or the event it publishes, is larger than the
    service takes", to requests that sent nothing too large, or nothing.
    What does not need it read still works: a replacement (PUT), which
    mends it, and a deletion."""
    state = tmp_path / "state"
    d = evhostd({"plugin.crud": {"collections": "orders"}}, state_dir=state)
    mended, deleted = (create(d, {"text": "x" * 100_000}, collection="orders") for _ in "12")
    assert wait_outbox_empty(d), d.log_tail()
    assert d.stop() == 0
    d = evhostd({"plugin.crud": {"collections": "orders"}}, state_dir=state,
                env=limited_storage(build_dir))
    for r in (d.get(f"/crud/orders/{mended['id']}"), d.get("/crud/orders"),
              d.patch(f"/crud/orders/{mended['id']}", json={"text": "small"})):
        problem(r, 500, "internal")
    line = lib.wait_until(lambda: next(
        (l for l in d.log_text().splitlines() if f"GET /crud/orders/{mended['id']} (route" in l),
        None))
    assert " ERROR " in line and "storage: string or blob too big" in line, line
    r = d.put(f"/crud/orders/{mended['id']}", json={"text": "small"},
              headers={"If-Match": '"1"'})
    assert r.status_code == 200, r.text
    assert r.json() == {"id": mended["id"], "text": "small"} and r.headers["ETag"] == '"2"'
    assert d.delete(f"/crud/orders/{deleted['id']}").status_code == 204
    problem(d.get(f"/crud/orders/{deleted['id']}"), 404, "not-found")
    assert d.get("/crud/orders").json()["items"] == [{"id": mended["id"], "text": "small"}]


def test_unknown_collection_is_404_on_every_route(d):
    doc_id = create(d, {"name": "lamp", "price": 1})["id"]
    for r in (d.post("/crud/nope", json={"a": 1}), d.get("/crud/nope"),
              d.get(f"/crud/nope/{doc_id}"), d.put(f"/crud/nope/{doc_id}", json={"a": 1}),
              d.patch(f"/crud/nope/{doc_id}", json={"a": 1}),
              d.delete(f"/crud/nope/{doc_id}")):
        problem(r, 404, "not-found")


def test_collections_are_kept_apart(d):
    p = create(d, {"name": "lamp", "price": 1})
    o = create(d, {"name": "order 1"}, "orders")
    assert [x["id"] for x in listing(d)["items"]] == [p["id"]]
    assert [x["id"] for x in listing(d, collection="orders")["items"]] == [o["id"]]
    problem(d.get(f"/crud/orders/{p['id']}"), 404, "not-found")
    problem(d.delete(f"/crud/orders/{p['id']}"), 404, "not-found")
    assert d.get(f"/crud/products/{p['id']}").status_code == 200


# -------------------------------------------------------------------- read


def test_get_with_if_none_match(d):
    doc = create(d, {"name": "lamp", "price": 1})
    url = f"/crud/products/{doc['id']}"
    for tag in ('"1"', 'W/"1"', '"7", "1"', "*"):
        r = d.get(url, headers={"If-None-Match": tag})
        assert r.status_code == 304, tag
        assert r.content == b"" and r.headers["ETag"] == '"1"'
    r = d.get(url, headers={"If-None-Match": '"2"'})
    assert r.status_code == 200 and r.json() == doc


def test_get_with_if_match(d):
    # If-Match is evaluated on a GET too, before If-None-Match (RFC 9110
    # 13.2.2): it was not read, and a stale tag got the current document.
    doc = create(d, {"name": "lamp", "price": 1})
    url = f"/crud/products/{doc['id']}"
    r = d.get(url, headers={"If-Match": '"2"'})
    problem(r, 412, "precondition-failed")
    assert r.headers["ETag"] == '"1"'
    r = d.get(url, headers={"If-Match": '"2"', "If-None-Match": '"1"'})
    problem(r, 412, "precondition-failed")
    r = d.get(url, headers={"If-Match": '"1"', "If-None-Match": '"1"'})
    assert r.status_code == 304 and r.content == b""
    for tag in ('"1"', '"7", "1"', "*"):
        r = d.get(url, headers={"If-Match": tag})
        assert r.status_code == 200 and r.json() == doc, tag


def test_a_malformed_precondition_is_400_and_changes_nothing(d):
    # A list that is no list of entity tags: read as matching nothing, an
    # If-None-Match meant to stop an overwrite let it through.
    doc = create(d, {"name": "lamp", "price": 1})
    url = f"/crud/products/{doc['id']}"
    for header, value in (("If-None-Match", "1"), ("If-None-Match", '"0", x, "1"'),
                          ("If-Match", '"1" "2"'), ("If-Match", 'W/1')):
        for r in (d.put(url, json={"name": "x", "price": 2}, headers={header: value}),
                  d.patch(url, json={"price": 3}, headers={header: value}),
                  d.delete(url, headers={header: value}),
                  d.get(url, headers={header: value})):
            p = problem(r, 400, "bad-request")
            assert p["detail"] == (f"{header} is not a list of entity tags "
                                   '("3", W/"3") or *'), p
    assert d.get(url).json() == doc
    # An empty list is a list: If-None-Match matches nothing, If-Match too.
    r = d.put(url, json={"name": "x", "price": 2}, headers={"If-Match": ""})
    problem(r, 412, "precondition-failed")
    r = d.put(url, json={"name": "x", "price": 2}, headers={"If-None-Match": ""})
    assert r.status_code == 200 and r.headers["ETag"] == '"2"', r.text


def test_put_of_a_patch_is_415_and_changes_nothing(d):
    # A merge patch PUT as the document dropped every field it left out.
    doc = create(d, {"name": "x", "note": "kept"}, collection="orders")
    url = f"/crud/orders/{doc['id']}"
    for ctype in ("application/merge-patch+json", "application/json-patch+json"):
        r = d.put(url, data=json.dumps({"note": "changed"}), headers={"Content-Type": ctype})
        p = problem(r, 415, "unsupported-media-type")
        assert "merge patch by PATCH" in p["detail"], p
    assert d.get(url).json() == doc
    r = d.patch(url, data=json.dumps({"note": "changed"}),
                headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200 and r.json() == dict(doc, note="changed"), r.text


def test_a_write_answers_404_then_412_then_422(d):
    # RFC 9110 13.2.1: the preconditions before the content. A body with
    # another id, or no object at all, was 422 before an If-Match that did
    # not hold, and before a document that does not exist.
    doc = create(d, {"name": "lamp", "price": 1})
    url = f"/crud/products/{doc['id']}"
    for body, field in (({"id": "other", "name": "x", "price": 1}, "id"), ([], None),
                        ({"name": "x"}, "price")):
        problem(d.put(url, json=body, headers={"If-Match": '"7"'}), 412, "precondition-failed")
        problem(d.patch(url, json=body, headers={"If-Match": '"7"'}), 412,
                "precondition-failed")
        problem(d.put(f"/crud/products/{uuid.uuid4()}", json=body), 404, "not-found")
        problem(d.put(url, json=body), 422, "validation", field)
    assert d.get(url).json() == doc


def test_get_unknown_document_is_404(d):
    problem(d.get(f"/crud/products/{uuid.uuid4()}"), 404, "not-found")


def test_problems_are_utf8_whatever_the_request_held(d):
    """A path or a parameter name decoded from %ff went into the problem's
    instance or field as that byte: not UTF-8, so not JSON a client could
    parse. The path's such bytes are U+FFFD there now; a parameter name that
    is not UTF-8 is no field to name (as U+FFFD it named none the client
    sent): the detail says what is wrong with it."""
    r = d.get("/crud/products?%ff=1")
    assert r.status_code == 422, r.content
    body = json.loads(r.content.decode("utf-8"))  # strict: raises on bytes not UTF-8
    assert "field" not in body and body["detail"] == (
        "filter names must be field names: a query parameter's name is not UTF-8 once "
        "percent-decoded"), body
    r = d.get("/crud/products/%ff%c3")
    assert r.status_code == 404, r.content
    json.loads(r.content.decode("utf-8"))


# ----------------------------------------------------------------- replace


def test_put_replaces_the_whole_document(d):
    doc = create(d, {"name": "lamp", "price": 1, "color": "red"})
    url = f"/crud/products/{doc['id']}"
    r = d.put(url, json={"name": "desk lamp", "price": 20})
    assert r.status_code == 200, r.text
    assert r.json() == {"id": doc["id"], "name": "desk lamp", "price": 20}
    assert r.headers["ETag"] == '"2"'
    # Sending back what was read, id included, is fine.
    got = d.get(url).json()
    got["price"] = 21
    r = d.put(url, json=got)
    assert r.status_code == 200 and r.json() == got and r.headers["ETag"] == '"3"'


def test_put_honours_if_match(d):
    doc = create(d, {"name": "lamp", "price": 1})
    url = f"/crud/products/{doc['id']}"
    r = d.put(url, json={"name": "x", "price": 2}, headers={"If-Match": '"2"'})
    problem(r, 412, "precondition-failed")
    assert r.headers["ETag"] == '"1"'
    problem(d.put(url, json={"name": "x", "price": 2}, headers={"If-Match": 'W/"1"'}),
            412, "precondition-failed")
    assert d.get(url).json() == doc
    r = d.put(url, json={"name": "x", "price": 2}, headers={"If-Match": '"0", "1"'})
    assert r.status_code == 200 and r.headers["ETag"] == '"2"'
    r = d.put(url, json={"name": "y", "price": 3}, headers={"If-Match": "*"})
    assert r.status_code == 200 and r.headers["ETag"] == '"3"'
    # The list on two lines is the same list (RFC 9110 5.3): the second
    # line's tag matches. (Only the first line's was read: 412.)
    body = json.dumps({"name": "z", "price": 4}).encode()
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    try:
        c.putrequest("PUT", url)
        for value in ('"0"', '"3" '):
            c.putheader("If-Match", value)
        c.putheader("Content-Type", "application/json")
        c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        assert r.status == 200 and r.getheader("ETag") == '"4"', (r.status, r.read())
    finally:
        c.close()


@pytest.mark.inputs
@pytest.mark.parametrize("body,field", [
    ({"name": "x"}, "price"),
    ({"name": "x", "price": "free"}, "price"),
    ({"id": "another-id", "name": "x", "price": 1}, "id"),
    ({"id": None, "name": "x", "price": 1}, "id"),
])
def test_put_enforces_rules_and_keeps_the_id(d, body, field):
    doc = create(d, {"name": "lamp", "price": 1})
    problem(d.put(f"/crud/products/{doc['id']}", json=body), 422, "validation", field)
    r = d.get(f"/crud/products/{doc['id']}")
    assert r.json() == doc and r.headers["ETag"] == '"1"'


def test_put_unknown_document_is_404(d):
    problem(d.put(f"/crud/products/{uuid.uuid4()}", json={"name": "x", "price": 1}),
            404, "not-found")


def test_concurrent_updates_with_if_match_let_one_win(d):
    doc = create(d, {"name": "lamp", "price": 1})
    url = d.url + f"/crud/products/{doc['id']}"
    results = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def go(i):
        start.wait()
        r = requests.put(url, json={"name": f"writer {i}", "price": i},
                         headers={"If-Match": '"1"'}, timeout=30)
        with lock:
            results.append((r.status_code, i))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] + [412] * 5
    winner = [i for s, i in results if s == 200][0]
    r = d.get(f"/crud/products/{doc['id']}")
    assert r.json()["name"] == f"writer {winner}" and r.headers["ETag"] == '"2"'


# ------------------------------------------------------------------- patch


def test_patch_merges_per_rfc7396(d):
    doc = create(d, {"name": "lamp", "price": 1, "color": "red",
                     "meta": {"a": 1, "b": {"c": 2}}, "tags": ["x", "y"]})
    url = f"/crud/products/{doc['id']}"
    r = d.patch(url, headers=MERGE_PATCH, data=json.dumps(
        {"color": None, "price": 2.5, "meta": {"b": {"d": 3}, "a": None}, "tags": ["z"],
         "new": {"n": None, "m": 1}}))
    assert r.status_code == 200, r.text
    want = {"id": doc["id"], "name": "lamp", "price": 2.5, "meta": {"b": {"c": 2, "d": 3}},
            "tags": ["z"], "new": {"m": 1}}
    assert r.json() == want
    assert r.headers["ETag"] == '"2"'
    assert d.get(url).json() == want
    # Plain application/json is a merge patch too.
    r = d.patch(url, json={"name": "big lamp"})
    assert r.status_code == 200 and r.json()["name"] == "big lamp"
    assert r.headers["ETag"] == '"3"'
    # An empty patch changes nothing but still makes a new version.
    r = d.patch(url, json={})
    assert r.status_code == 200 and r.json()["name"] == "big lamp"
    assert r.headers["ETag"] == '"4"'


def test_patch_checks_rules_on_the_result(d):
    doc = create(d, {"name": "lamp", "price": 1})
    url = f"/crud/products/{doc['id']}"
    problem(d.patch(url, headers=MERGE_PATCH, data='{"price": null}'),
            422, "validation", "price")
    problem(d.patch(url, json={"stock": 1.5}), 422, "validation", "stock")
    problem(d.patch(url, json={"id": "other"}), 422, "validation", "id")
    problem(d.patch(url, json={"id": None}), 422, "validation", "id")
    r = d.get(url)
    assert r.json() == doc and r.headers["ETag"] == '"1"'
    r = d.patch(url, json={"id": doc["id"], "stock": 3})
    assert r.status_code == 200 and r.json()["stock"] == 3


def test_writes_honour_if_none_match(d):
    # RFC 9110 13.1.2: a write whose If-None-Match names the current tag,
    # or is * (the document exists), is not performed: 412, as for If-Match.
    # It was ignored: "do not overwrite" overwrote.
    doc = create(d, {"name": "lamp", "price": 1})
    url = f"/crud/products/{doc['id']}"
    for method, kw in (("put", {"json": {"name": "x", "price": 2}}),
                       ("patch", {"json": {"price": 2}}), ("delete", {})):
        for inm in ("*", '"1"', 'W/"1"', '"0", W/"1"'):
            r = getattr(d, method)(url, headers={"If-None-Match": inm}, **kw)
            problem(r, 412, "precondition-failed")
            assert r.headers["ETag"] == '"1"', (method, inm)
    assert d.get(url).json() == doc
    # another tag: the write goes on
    r = d.patch(url, json={"price": 2}, headers={"If-None-Match": '"7"'})
    assert r.status_code == 200 and r.headers["ETag"] == '"2"'
    # If-Match first: a matching If-Match with a matching If-None-Match is 412
    r = d.put(url, json={"name": "y", "price": 3}, headers={"If-Match": '"2"',
                                                             "If-None-Match": '"2"'})
    problem(r, 412, "precondition-failed")
    r = d.delete(url, headers={"If-None-Match": '"1"'})
    assert r.status_code == 204


def test_patch_honours_if_match(d):
    doc = create(d, {"name": "lamp", "price": 1})
    url = f"/crud/products/{doc['id']}"
    r = d.patch(url, json={"price": 2}, headers={"If-Match": '"5"'})
    problem(r, 412, "precondition-failed")
    assert r.headers["ETag"] == '"1"'
    r = d.patch(url, json={"price": 2}, headers={"If-Match": '"1"'})
    assert r.status_code == 200 and r.headers["ETag"] == '"2"'


def test_patch_takes_only_merge_patches(d):
    doc = create(d, {"name": "lamp", "price": 1})
    url = f"/crud/products/{doc['id']}"
    r = d.patch(url, data='[{"op": "remove", "path": "/price"}]',
                headers={"Content-Type": "application/json-patch+json"})
    problem(r, 415, "unsupported-media-type")
    r = d.patch(url, data="[]", headers=MERGE_PATCH)
    problem(r, 422, "validation", None)
    assert d.get(url).json() == doc


def test_patch_unknown_document_is_404(d):
    problem(d.patch(f"/crud/products/{uuid.uuid4()}", json={"price": 2}), 404, "not-found")


# ------------------------------------------------------------------ delete


def test_delete_honours_if_match_then_removes(d):
    doc = create(d, {"name": "lamp", "price": 1})
    url = f"/crud/products/{doc['id']}"
    r = d.delete(url, headers={"If-Match": '"2"'})
    problem(r, 412, "precondition-failed")
    assert r.headers["ETag"] == '"1"'
    assert d.get(url).status_code == 200
    r = d.delete(url, headers={"If-Match": '"1"'})
    assert r.status_code == 204 and r.content == b""
    problem(d.get(url), 404, "not-found")
    problem(d.delete(url), 404, "not-found")
    assert listing(d)["items"] == []


def test_delete_without_if_match_is_unconditional(d):
    doc = create(d, {"name": "lamp", "price": 1})
    d.patch(f"/crud/products/{doc['id']}", json={"price": 2})
    assert d.delete(f"/crud/products/{doc['id']}").status_code == 204


# -------------------------------------------------------------------- list


def test_list_pages_in_creation_order(d):
    ids = [create(d, {"name": f"p{i}", "price": i})["id"] for i in range(7)]
    page = listing(d)
    assert set(page) == {"items", "next_cursor"}
    assert [x["id"] for x in page["items"]] == ids and page["next_cursor"] is None

    seen, cursor = [], None
    for _ in range(10):
        page = listing(d, "limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert len(page["items"]) <= 3
        seen += [x["id"] for x in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids
    # Deleting the item a cursor points after does not lose the rest.
    first = listing(d, "limit=3")
    assert d.delete(f"/crud/products/{ids[2]}").status_code == 204
    rest = listing(d, f"limit=100&cursor={first['next_cursor']}")
    assert [x["id"] for x in rest["items"]] == ids[3:]


def test_a_page_of_large_documents_takes_memory_in_proportion(evhostd, tmp_path, build_dir):
    # Each document of a page was parsed into a tree, a cJSON node per value:
    # 20 documents of 400k small values (800 KB each) took about 640 MB
    # while the page was built, and a few such listings at once ended the
    # daemon. They go into the page as the text they are stored as now. So
    # do the events' data in the admin API's event log (parsed twice there:
    # 1.3 GB for the same 20).
    token = "admin-token-for-tests-0123456789"
    (tmp_path / "admin.token").write_text(token + "\n")
    d = evhostd({"plugin.crud": dict(PRODUCTS),
                 "admin": {"token_file": str(tmp_path / "admin.token")}})
    doc = {"a": [0] * 400_000}
    body = json.dumps(doc, separators=(",", ":"))
    for _ in range(20):
        r = d.post("/crud/orders", data=body, timeout=60,
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text
    assert wait_outbox_empty(d, 120), d.log_tail()
    # ThreadSanitizer's shadow memory grows with what a page touches.
    bounded = lib.sanitizer(build_dir) != "tsan"
    before = lib.peak_rss_kb(d)
    page = listing(d, "limit=20", "orders")
    # (A page stops past 8 MiB of documents: 11 of these.)
    assert len(page["items"]) == 11 and page["items"][0]["a"] == doc["a"]
    assert page["next_cursor"]
    assert not bounded or lib.peak_rss_kb(d) - before < 150 * 1024
    assert len(walk(d, "limit=20")[0]) == 20
    before = lib.peak_rss_kb(d)
    r = d.get("/admin/events", params={"plugin": "crud", "limit": 20}, timeout=60,
              headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text[:300]
    events = r.json()["events"]
    assert len(events) == 20 and events[0]["data"]["a"] == doc["a"]
    assert not bounded or lib.peak_rss_kb(d) - before < 150 * 1024


def test_list_default_limit_is_20(d):
    for i in range(21):
        create(d, {"n": i}, "orders")
    page = listing(d, collection="orders")
    assert len(page["items"]) == 20 and page["next_cursor"]
    assert len(listing(d, f"cursor={page['next_cursor']}", "orders")["items"]) == 1


@pytest.mark.inputs
@pytest.mark.parametrize("query,field", [
    ("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit"), ("limit=", "limit"),
    ("cursor=%21%21", "cursor"), ("cursor=YWJj", "cursor"), ("cursor=", "cursor"),
    # given twice: the first was read, the second dropped without a word
    ("limit=5&limit=abc", "limit"), ("limi%74=5&limit=5", "limit"), ("cursor=a&cursor=b", "cursor"),
])
def test_list_rejects_bad_limit_and_cursor(d, query, field):
    problem(d.get("/crud/products?" + query), 422, "validation", field)


def test_list_filters_on_fields(d):
    create(d, {"name": "lamp", "price": 12.5, "active": True, "code": "42", "color": "red",
               "size": 3})
    create(d, {"name": "desk", "price": 3, "active": False, "code": "7", "color": "red",
               "size": "3"})
    create(d, {"name": "chair", "price": 3.0, "active": True, "code": "8", "color": "blue",
               "size": 3.0})

    assert names(d, "color=red") == ["lamp", "desk"]
    assert names(d, "color=red&active=true") == ["lamp"]
    assert names(d, "active=false") == ["desk"]
    assert names(d, "price=3") == ["desk", "chair"]
    assert names(d, "price=3.0") == ["desk", "chair"]
    assert names(d, "price=12.5") == ["lamp"]
    assert names(d, "code=42") == ["lamp"]  # declared string: compared as text
    # undeclared: a JSON number matches numbers only, text matches text only
    assert names(d, "size=3") == ["lamp", "chair"]
    assert names(d, "color=green") == []
    assert names(d, "nothing=here") == []
    assert names(d, "name=desk&limit=1") == ["desk"]
    assert names(d, "name=big+lamp") == []
    create(d, {"name": "big lamp", "price": 1})
    assert names(d, "name=big+lamp") == ["big lamp"]
    assert names(d, "name=big%20lamp") == ["big lamp"]


def test_list_filter_paging_keeps_the_filter(d):
    for i in range(5):
        create(d, {"name": f"r{i}", "price": i, "color": "red"})
        create(d, {"name": f"b{i}", "price": i, "color": "blue"})
    page = listing(d, "color=red&limit=2")
    got = [x["name"] for x in page["items"]]
    while page["next_cursor"]:
        page = listing(d, f"color=red&limit=2&cursor={page['next_cursor']}")
        got += [x["name"] for x in page["items"]]
    assert got == [f"r{i}" for i in range(5)]


SCAN_MAX = 10_000  # CRUD_SCAN_MAX (plugins/crud/crud.h)


def walk(d, query, collection="orders", pages=10):
    """Follow next_cursor until there is none (at most `pages` pages);
    return the pages' items, in order, and how many pages it took."""
    items, cursor = [], None
    for n in range(1, pages + 1):
        page = listing(d, query + (f"&cursor={cursor}" if cursor else ""), collection)
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return items, n
    raise AssertionError(f"{query}: still a next_cursor after {pages} pages")


def orders_written(evhostd, tmp_path, docs):
    """A daemon with the collection orders holding `docs` (JSON texts; the
    ids d0, d1, ...), written into crud's database while it is stopped, as
    crud writes them: many times faster than POSTs."""
    state = tmp_path / "state"
    d = evhostd({"plugin.crud": {"collections": "orders"}}, state_dir=state)
    assert d.stop() == 0
    db = sqlite3.connect(str(state / "crud.db"))
    try:
        with db:
            db.executemany(
                "INSERT INTO documents(collection, id, doc, version, created_at, updated_at)"
                " VALUES('orders', ?, ?, 1, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                ((f"d{i}", doc) for i, doc in enumerate(docs)))
    finally:
        db.close()
    return evhostd({"plugin.crud": {"collections": "orders"}}, state_dir=state)


def test_a_filtered_page_examines_a_bounded_number_of_documents(evhostd, tmp_path):
    """A filtered list checked every document after the cursor (its JSON
    parsed) while holding crud's one transaction: a value matching nothing
    in 2 million documents held every write for 2 s, and a few such GETs
    made writes 503. A page examines SCAN_MAX documents at most now and
    says where to go on: it may be short or empty with a next_cursor, and
    following the cursors still finds every match, once."""
    total = 2 * SCAN_MAX + SCAN_MAX // 2
    red = [5, SCAN_MAX + 2_000, SCAN_MAX + 2_001, total - 1]  # past the first window too
    d = orders_written(evhostd, tmp_path,
                       (json.dumps({"n": i, "color": "red" if i in red else "blue"},
                                   separators=(",", ":")) for i in range(total)))

    first = listing(d, "color=red&limit=100", "orders")
    assert [x["n"] for x in first["items"]] == [5] and first["next_cursor"], first
    second = listing(d, f"color=red&limit=100&cursor={first['next_cursor']}", "orders")
    assert [x["n"] for x in second["items"]] == red[1:3] and second["next_cursor"], second
    for limit in (100, 2, 1):
        items, _ = walk(d, f"color=red&limit={limit}")
        assert [x["n"] for x in items] == red, limit
    # Matching nothing: empty pages, each with a cursor, until the end.
    page = listing(d, "color=green", "orders")
    assert page["items"] == [] and page["next_cursor"], page
    assert walk(d, "color=green") == ([], 3)
    # Unfiltered pages are full as before.
    page = listing(d, "limit=100", "orders")
    assert [x["n"] for x in page["items"]] == list(range(100)) and page["next_cursor"]


SCAN_BYTES = 8 << 20  # CRUD_SCAN_BYTES (plugins/crud/crud.h)


def test_a_filtered_page_examines_a_bounded_number_of_bytes(evhostd, tmp_path):
    """Counting documents alone let a filtered page parse 10,000 documents
    of 900 KB (9 GB, some 10 s in one read transaction). A page stops once
    the documents it examined reach SCAN_BYTES, the one that reaches it
    included, and always examines one, even one larger than the bound: the
    pages are cut there, with a next_cursor after the last one examined, and
    following the cursors finds every match once."""
    size, giant = 1_000_000, 9 << 20  # the body limit (1 MiB) allows the first
    per_page = -(-SCAN_BYTES // size)  # documents of `size` a page examines: 9
    sizes = [size] * per_page + [giant] + [size] * (2 * per_page)
    red = [n for n in range(len(sizes)) if n % 2 == 0 or n == per_page]

    def doc(n):
        head = {"n": n, "color": "red" if n in red else "blue", "pad": ""}
        text = json.dumps(head, separators=(",", ":"))
        return text[:-2] + "x" * (sizes[n] - len(text)) + '"}'

    d = orders_written(evhostd, tmp_path, map(doc, range(len(sizes))))

    # The documents each page examines: up to SCAN_BYTES, then the giant
    # alone, then up to SCAN_BYTES twice, the last one ending the collection
    # (so no empty page follows it).
    spans = [range(0, per_page), range(per_page, per_page + 1),
             range(per_page + 1, 2 * per_page + 1), range(2 * per_page + 1, len(sizes))]
    cursor = None
    for span in spans:
        page = listing(d, "color=red&limit=100" + (f"&cursor={cursor}" if cursor else ""),
                       "orders")
        assert [x["n"] for x in page["items"]] == [n for n in span if n in red], span
        cursor = page["next_cursor"]
        assert bool(cursor) == (span != spans[-1]), (span, page["next_cursor"])
    for limit in (100, 3, 1):  # cut by the limit as well: still each match once
        items, _ = walk(d, f"color=red&limit={limit}", pages=30)
        assert [x["n"] for x in items] == red, limit
    # Matching nothing: an empty page per span, each with a cursor but the last.
    assert walk(d, "color=green") == ([], len(spans))
    # Unfiltered pages stop there too (100 documents of 1 MiB made a 100
    # MiB answer), limit or not; and are full when their documents are small.
    page = listing(d, "limit=12", "orders")
    assert [x["n"] for x in page["items"]] == list(range(per_page)) and page["next_cursor"]
    assert walk(d, "limit=100") == ([json.loads(doc(n)) for n in range(len(sizes))],
                                    len(spans))
    page = listing(d, "limit=5", "orders")
    assert [x["n"] for x in page["items"]] == list(range(5)) and page["next_cursor"]


@pytest.mark.inputs
@pytest.mark.parametrize("query,field", [
    ("price=cheap", "price"),
    ("stock=1.x", "stock"),
    ("active=yes", "active"),
    ("tags=a", "tags"),
    ("meta=a", "meta"),
    ("a.b=1", "a.b"),
    ("name')%20OR%201=1--=x", "name') OR 1"),
    ("a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9", "i"),
    ("x" * 65 + "=1", "x" * 65),
])
def test_list_rejects_bad_filters(d, query, field):
    create(d, {"name": "lamp", "price": 1})
    problem(d.get("/crud/products?" + query), 422, "validation", field)


def test_list_filter_values_are_data_not_sql(d):
    create(d, {"name": "lamp", "price": 1})
    assert names(d, "name=%27%20OR%20%271%27=%271") == []
    assert names(d, "name=lamp%22%29%20--") == []
    assert names(d, "name=lamp") == ["lamp"]


ESCAPE_RULE = "(each % must be followed by two hex digits, and %00 is not allowed)"


@pytest.mark.inputs
@pytest.mark.parametrize("query,field,detail", [
    # a value that cannot be decoded: the parameter is named, as limit and cursor are
    ("name=%zz", "name", "the value of query parameter 'name' has a malformed percent-escape "
                         + ESCAPE_RULE),
    ("name=%4", "name", "'name' has a malformed percent-escape"),
    ("name=%00", "name", "'name' has a malformed percent-escape"),
    ("color=red&limit=%zz", "limit", "'limit' has a malformed percent-escape"),
    ("cursor=%", "cursor", "'cursor' has a malformed percent-escape"),
    ("name=" + "a" * 600, "name",
     "the value of query parameter 'name' is longer than 512 bytes"),
    # one byte over: the same answer (it was one without the name)
    ("name=" + "a" * 513, "name",
     "the value of query parameter 'name' is longer than 512 bytes"),
    ("color=" + "a" * 513, "color",
     "the value of query parameter 'color' is longer than 512 bytes"),
    # a name that cannot be: said, without a field
    ("na%zzme=lamp", None, "a parameter name in the query string has a malformed "
                           "percent-escape " + ESCAPE_RULE),
    # a name that is not UTF-8 is not put in the JSON answer
    ("%ff=%zz", None, "the value of a query parameter has a malformed percent-escape "
                      + ESCAPE_RULE),
    ("x" * 300 + "=1", None, "a parameter name in the query string is longer than 255 bytes"),
])
def test_list_malformed_query_string(d, query, field, detail):
    """The 422 says which parameter and what is wrong with it, as user's and
    notifications' do for theirs."""
    status, ctype, body = d.get_raw("/crud/products?" + query)
    assert status == 422
    assert ctype.startswith("application/problem+json")
    assert body["type"].endswith("validation") and body.get("field") == field, body
    assert detail in body["detail"], body


NOT_UTF8 = "is not UTF-8 once percent-decoded"


@pytest.mark.inputs
@pytest.mark.parametrize("query,field", [
    ("name=%FF", "name"),              # a byte no UTF-8 has
    ("color=red%C3", "color"),         # cut short, on a field without a type
    ("code=%ED%A0%80", "code"),        # a surrogate
    ("name=%C0%AF", "name"),           # an overlong '/'
    ("price=%FF", "price"),            # said as such, not as "not a JSON number"
    ("color=red&name=ok%E9", "name"),  # Latin-1, after a good filter
    ("limit=%FF", "limit"), ("cursor=%FF", "cursor"),
])
def test_list_filter_value_not_utf8_is_422_naming_it(d, query, field):
    """A value that decodes to bytes that are not UTF-8 can match no
    document (they are all JSON, so UTF-8): it was an empty page, as if
    nothing matched, for what is the client's mistake."""
    create(d, {"name": "lamp", "price": 1, "color": "red"})
    status, ctype, body = d.get_raw("/crud/products?" + query)
    assert status == 422, body
    assert ctype.startswith("application/problem+json")
    assert body["type"].endswith("validation") and body.get("field") == field, body
    if field not in ("limit", "cursor"):  # those say what they must be
        assert f"the value of query parameter '{field}' {NOT_UTF8}" in body["detail"], body


def test_list_filter_value_in_utf8_is_taken(d):
    create(d, {"name": "caf\u00e9", "price": 1})
    create(d, {"name": "\U0001f4a1 lamp", "price": 2})
    assert names(d, "name=caf%C3%A9") == ["caf\u00e9"]
    assert names(d, "name=%F0%9F%92%A1+lamp") == ["\U0001f4a1 lamp"]


def test_a_filter_value_of_512_bytes_is_taken(d):
    create(d, {"name": "a" * 512, "price": 1})
    assert names(d, "name=" + "a" * 512) == ["a" * 512]


# ------------------------------------------------------------- configuration


@pytest.mark.inputs
@pytest.mark.parametrize("keys,needle", [
    ({"collection.products.types": "price:float"}, "collection.products"),
    ({"collection.products.types": "price"}, "collection.products"),
    ({"collection.products.types": "price:number,price:string"}, "twice"),
    ({"collection.products.required": "id"}, "'id'"),
    ({"collections": "products, products"}, "twice"),
    ({"collections": "pro.ducts"}, "pro.ducts"),
    ({"collection.products.topic": "bad topic!"}, "collection.products.topic"),
    # checked as written, not cut to the 249 characters it was copied into
    ({"collection.products.topic": "t" * 250}, "collection.products.topic: 'ttt"),
    # empty: said, not taken as the default (crud.products) unsaid
    ({"collection.products.topic": ""},
     "collection.products.topic: '' is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -, "
     "not . or ..); leave the key out for crud.products"),
    ({"collection.products.required": "name, price, name"},
     "collection.products.required: 'name' is listed twice"),
])
def test_bad_rules_stop_the_start(evhostd, keys, needle):
    conf = dict(PRODUCTS)
    conf.update(keys)
    d = evhostd({"plugin.crud": conf}, wait=False)
    assert d.wait(timeout=30) != 0
    assert needle in d.log_text()


@pytest.mark.inputs
@pytest.mark.parametrize("line,said", [
    # A bad name in types is said at the types key and its line, not at
    # required's (which these rules do not even set).
    ("collection.products.types = name:string, na-me:number",
     "collection.products.types: 'na-me' is not a field name"),
    ("collection.products.types = id:string",
     "collection.products.types: 'id' is assigned by the server and takes no rules"),
    ("collection.products.required = name, name",
     "collection.products.required: 'name' is listed twice"),
    # A rule for a collection that is not listed applied to nothing, unsaid.
    ("collection.prodcts.required = name",
     "collection.prodcts.required: 'prodcts' is not one of collections (products): this rule "
     "would apply to nothing"),
    ("collection.orders.topic = crud.orders",
     "collection.orders.topic: 'orders' is not one of collections (products)"),
])
def test_rule_mistakes_are_said_at_their_key_and_line(evhostd, line, said):
    """--check-config and a real start say the same, at the drop-in's line."""
    dropins = {"20-crud.conf": f"# crud\n[plugin.crud]\ncollections = products\n{line}\n"}
    where = f"conf.d/20-crud.conf:4: [plugin.crud] {said}"
    r = evhostd.run(["--check-config"], dropins=dropins)
    assert r.returncode == 1 and where in r.stdout, r.stdout
    r = evhostd.run([], dropins=dropins, timeout=30)
    assert r.returncode == 1 and where in r.stderr, r.stderr


def test_default_collection_is_products(evhostd):
    d = evhostd({"plugin.crud": {}})
    assert create(d, {"anything": 1})["anything"] == 1
    problem(d.get("/crud/orders"), 404, "not-found")


# --------------------------------------------------- events on real Kafka


def test_events_reach_kafka_per_collection(evhostd, kafka_bootstrap, unique_name):
    topic = unique_name("crud.products")
    conf = dict(PRODUCTS)
    conf["collection.products.topic"] = topic
    d = evhostd({"plugin.crud": conf}, brokers=kafka_bootstrap)

    doc = create(d, {"name": "lamp", "price": 12.5})
    url = f"/crud/products/{doc['id']}"
    assert d.patch(url, json={"price": 10, "color": "red"}).status_code == 200
    problem(d.patch(url, json={"price": "free"}), 422, "validation", "price")  # publishes nothing
    r = d.put(url, json={"name": "lamp", "price": 9}, headers={"If-Match": '"2"'})
    assert r.status_code == 200
    assert d.delete(url).status_code == 204

    msgs = lib.kafka_consume(topic, count=4, timeout=60, brokers=kafka_bootstrap)
    assert [m["headers"]["ce_type"] for m in msgs] == [
        "crud.products.created", "crud.products.updated", "crud.products.updated",
        "crud.products.deleted"]
    assert {m["key"] for m in msgs} == {doc["id"]}
    assert len({m["partition"] for m in msgs}) == 1  # one key, one partition, in order
    assert [json.loads(m["value"]) for m in msgs] == [
        {"id": doc["id"], "name": "lamp", "price": 12.5},
        {"id": doc["id"], "name": "lamp", "price": 10, "color": "red"},
        {"id": doc["id"], "name": "lamp", "price": 9},
        {"id": doc["id"]},
    ]
    for m in msgs:
        h = m["headers"]
        assert h["ce_specversion"] == "1.0" and h["ce_id"] and h["ce_source"].endswith("/crud")
        assert h["content-type"].startswith("application/json")
    assert len({m["headers"]["ce_id"] for m in msgs}) == 4
    # Nothing else arrived (the refused patch published nothing).
    assert len(lib.kafka_consume(topic, timeout=10, brokers=kafka_bootstrap)) == 4


def test_default_topic_is_crud_dot_collection(evhostd, kafka_bootstrap, unique_name):
    name = unique_name("c").replace(".", "_")
    d = evhostd({"plugin.crud": {"collections": name}}, brokers=kafka_bootstrap)
    doc = create(d, {"x": 1}, name)
    [m] = lib.kafka_consume(f"crud.{name}", count=1, timeout=60, brokers=kafka_bootstrap)
    assert m["key"] == doc["id"] and m["headers"]["ce_type"] == f"crud.{name}.created"
    assert json.loads(m["value"]) == doc


def test_read_role_and_write_role_require_a_token_with_that_role(evhostd, tmp_path):
    """Unset (the default), every route is open to whoever reaches the
    listener, as in the fixtures above. Set, a route needs a bearer token
    carrying the role: 401 without a token, 403 with one lacking it."""
    secret = tmp_path / "jwt.key"
    secret.write_bytes(b"k" * 48)
    d = evhostd({"auth": {"jwt_secret_file": str(secret)},
                 "plugin.crud": dict(PRODUCTS, read_role="reader", write_role="writer")})

    def auth(*roles):
        return {"Authorization": "Bearer " + lib.sign_token(b"k" * 48, "u-1", roles=roles)}
    doc = {"name": "lamp", "price": 3}
    assert d.post("/crud/products", json=doc).status_code == 401
    assert d.post("/crud/products", json=doc, headers=auth("reader")).status_code == 403
    r = d.post("/crud/products", json=doc, headers=auth("writer"))
    assert r.status_code == 201, r.text
    path = f"/crud/products/{r.json()['id']}"
    for p in (path, "/crud/products"):
        assert d.get(p).status_code == 401
        assert d.get(p, headers=auth("writer")).status_code == 403
        assert d.get(p, headers=auth("reader")).status_code == 200
    for method, body in (("put", dict(doc, price=4)), ("patch", {"price": 5}),
                         ("delete", None)):
        kw = {"json": body} if body is not None else {}
        assert getattr(d, method)(path, **kw).status_code == 401, method
        assert getattr(d, method)(path, headers=auth("reader"), **kw).status_code == 403, method
    headers = dict(auth("writer"), **{"Content-Type": "application/merge-patch+json"})
    assert d.put(path, json=dict(doc, price=4), headers=auth("writer")).status_code == 200
    assert d.patch(path, data=json.dumps({"price": 5}), headers=headers).status_code == 200
    assert d.delete(path, headers=auth("writer")).status_code == 204
