"""The test OpenTelemetry Collector harness itself (lib.Collector, the
otel_collector fixture): a span POSTed as OTLP/HTTP JSON, the way evhostd
exports them, comes back from spans() flattened, and the collector can be
stopped and started again on its port. No evhostd or Kafka involved.
"""

import json
import os
import socket

import pytest
import requests

import evhost_testlib as lib


def otlp_request(name, trace_id=None, attributes=None):
    trace_id = trace_id or os.urandom(16).hex()
    span = {
        "traceId": trace_id,
        "spanId": os.urandom(8).hex(),
        "parentSpanId": os.urandom(8).hex(),
        "name": name,
        "kind": 2,
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000250000000",
        "attributes": attributes or [],
        "status": {"code": 2, "message": "boom"},
    }
    return {"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "evhostd"}},
            {"key": "process.pid", "value": {"intValue": "4242"}},
        ]},
        "scopeSpans": [{"scope": {"name": "evhost", "version": "1.2.3"}, "spans": [span]}],
    }]}


def post(collector, body):
    r = requests.post(collector.endpoint + "/v1/traces", data=json.dumps(body),
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text
    return r


def test_span_round_trip(otel_collector):
    assert otel_collector.endpoint == f"http://127.0.0.1:{otel_collector.port}"
    trace_id = os.urandom(16).hex()
    body = otlp_request("GET /v1/things", trace_id, [
        {"key": "http.request.method", "value": {"stringValue": "GET"}},
        {"key": "http.response.status_code", "value": {"intValue": "503"}},
        {"key": "evhost.retry", "value": {"boolValue": True}},
        {"key": "evhost.ratio", "value": {"doubleValue": 0.5}},
    ])
    post(otel_collector, body)

    [span] = otel_collector.wait_spans(lambda s: s["traceId"] == trace_id, timeout=15)
    sent = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["name"] == "GET /v1/things"
    assert span["spanId"] == sent["spanId"]
    assert span["parentSpanId"] == sent["parentSpanId"]
    assert span["kind"] == 2
    assert span["startTimeUnixNano"] == "1700000000000000000"
    assert span["endTimeUnixNano"] == "1700000000250000000"
    assert span["status"] == {"code": 2, "message": "boom"}
    assert span["attributes"] == {"http.request.method": "GET",
                                  "http.response.status_code": 503,
                                  "evhost.retry": True, "evhost.ratio": 0.5}
    assert span["resource"] == {"service.name": "evhostd", "process.pid": 4242}
    assert span["scope"] == {"name": "evhost", "version": "1.2.3"}


def test_restart_on_the_same_port(otel_collector):
    port = otel_collector.port
    post(otel_collector, otlp_request("before"))
    otel_collector.wait_spans(lambda s: s["name"] == "before", timeout=15)

    otel_collector.stop()
    assert not otel_collector.running()
    with pytest.raises(requests.ConnectionError):
        post(otel_collector, otlp_request("while down"))

    otel_collector.start()
    assert otel_collector.port == port
    post(otel_collector, otlp_request("after"))
    otel_collector.wait_spans(lambda s: s["name"] == "after", timeout=15)
    # The spans file is appended to, not truncated, across restarts.
    assert [s["name"] for s in otel_collector.spans()] == ["before", "after"]

    otel_collector.restart()
    assert otel_collector.port == port
    post(otel_collector, otlp_request("again"))
    otel_collector.wait_spans(lambda s: s["name"] == "again", timeout=15)


def test_wait_spans_times_out_naming_what_it_saw(otel_collector):
    post(otel_collector, otlp_request("only this one"))
    otel_collector.wait_spans(timeout=15)
    with pytest.raises(AssertionError, match="only this one"):
        otel_collector.wait_spans(lambda s: s["name"] == "never", timeout=0.5)


def test_context_manager_and_partial_last_line(tmp_path):
    with lib.Collector(tmp_path / "c") as collector:
        assert collector.running()
        with socket.create_connection(("127.0.0.1", collector.port), timeout=5):
            pass
    assert not collector.running()
    # A batch the exporter is still writing: the half line is left for later.
    line = json.dumps(otlp_request("whole"))
    collector.spans_file.write_text(line + "\n" + line[:len(line) // 2])
    assert [s["name"] for s in collector.spans()] == ["whole"]
    collector.spans_file.write_text(line + "\n" + line)
    assert [s["name"] for s in collector.spans()] == ["whole", "whole"]


def test_attrs():
    assert lib.attrs([
        {"key": "s", "value": {"stringValue": "x"}},
        {"key": "i", "value": {"intValue": "-12"}},
        {"key": "b", "value": {"boolValue": False}},
        {"key": "d", "value": {"doubleValue": 1}},
        {"key": "a", "value": {"arrayValue": {"values": [{"intValue": "1"},
                                                         {"stringValue": "y"}]}}},
        {"key": "e", "value": {}},
    ]) == {"s": "x", "i": -12, "b": False, "d": 1.0, "a": [1, "y"], "e": None}
    assert lib.attrs(None) == {}
