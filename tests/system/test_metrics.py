"""GET /metrics against the real daemon: the Prometheus text exposition
(format 0.0.4) read over a real socket and parsed by a strict parser written
here, and the values moving as the daemon works: request counters per route
pattern (never the raw path) and their histograms, events published by the
outbox relay and handled by another plugin's consumer, plugin_up,
outbox_pending, consumer lag; and [metrics] enabled = false answering 404.
The embedded broker is enough: nothing here depends on durability."""

import json
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

import evhost_testlib as lib

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PASSWORD = "correct horse battery"
TEMPLATES = lib.TEMPLATES
DASHBOARD = lib.REPO_ROOT / "packaging" / "grafana" / "evhost.json"
ALERTS = lib.REPO_ROOT / "packaging" / "prometheus" / "evhost-alerts.yml"

# ---------------------------------------------------------------- the parser

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_HELP = re.compile(rf"^# HELP ({_NAME}) (.*)$")
_TYPE = re.compile(rf"^# TYPE ({_NAME}) (counter|gauge|histogram|summary|untyped)$")
_SAMPLE_NAME = re.compile(rf"^({_NAME})")
_LABEL = re.compile(rf'({_LABEL_NAME})="((?:[^"\\\n]|\\[\\"n])*)"')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


class ExpositionError(ValueError):
    pass


def _value(text, line):
    if text in ("+Inf", "-Inf", "NaN"):
        return float(text.replace("Inf", "inf"))
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
        raise ExpositionError(f"bad value in: {line!r}")
    return float(text)


def _labels(rest, line):
    """Parse '{a="x",b="y"} ' at the start of rest; return (labels, remainder)."""
    labels = {}
    if not rest.startswith("{"):
        return labels, rest
    pos = 1
    while rest[pos] != "}":
        m = _LABEL.match(rest, pos)
        if not m:
            raise ExpositionError(f"bad label at column {pos} in: {line!r}")
        name = m.group(1)
        if name in labels:
            raise ExpositionError(f"label {name} twice in: {line!r}")
        labels[name] = re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)], m.group(2))
        pos = m.end()
        if rest[pos] == ",":
            pos += 1
        elif rest[pos] != "}":
            raise ExpositionError(f"expected , or }} at column {pos} in: {line!r}")
    return labels, rest[pos + 1:]


def _family_of(sample_name, types):
    if sample_name in types:
        return sample_name
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample_name[: -len(suffix)]
        if sample_name.endswith(suffix) and types.get(base) in ("histogram", "summary"):
            return base
    raise ExpositionError(f"sample {sample_name} before (or without) its # TYPE")


def _check_histogram(name, samples):
    """Buckets ascending by le, cumulative, ending in +Inf == _count."""
    series = {}
    for sname, labels, value in samples:
        key = frozenset((k, v) for k, v in labels.items() if k != "le")
        series.setdefault(key, {"buckets": [], "sum": None, "count": None})
        s = series[key]
        if sname == name + "_bucket":
            if "le" not in labels:
                raise ExpositionError(f"{sname} without le")
            s["buckets"].append((_value(labels["le"], sname), value))
        elif sname == name + "_sum":
            s["sum"] = value
        elif sname == name + "_count":
            s["count"] = value
        else:
            raise ExpositionError(f"{sname} in histogram {name}")
    for key, s in series.items():
        les = [le for le, _ in s["buckets"]]
        counts = [c for _, c in s["buckets"]]
        if not les or les[-1] != math.inf or les != sorted(les) or len(set(les)) != len(les):
            raise ExpositionError(f"{name}{dict(key)}: le bounds {les}")
        if counts != sorted(counts):
            raise ExpositionError(f"{name}{dict(key)}: buckets not cumulative {counts}")
        if s["count"] is None or s["sum"] is None or s["count"] != counts[-1]:
            raise ExpositionError(f"{name}{dict(key)}: _count {s['count']} vs +Inf {counts[-1]}")


def _check_series_names(family, kind, types):
    """A family named as another one's series (a histogram X's X_bucket,
    X_sum, X_count), either declared first: Prometheus refuses the scrape."""
    for suffix in ("_bucket", "_sum", "_count"):
        base = family[: -len(suffix)]
        if family.endswith(suffix) and types.get(base) in ("histogram", "summary"):
            raise ExpositionError(f"{family} is a series of the {types[base]} {base}")
        if kind in ("histogram", "summary") and family + suffix in types:
            raise ExpositionError(f"{kind} {family}'s series {family + suffix} is a family")


def parse_exposition(text):
    """Parse Prometheus text format 0.0.4 strictly. Returns (types, samples):
    types {family: type}; samples {(sample name, frozenset(labels)): value}.
    Raises ExpositionError on anything malformed: unknown line kinds, bad
    escapes, a family split in two or typed twice, a duplicate series, a
    negative counter, an inconsistent histogram."""
    if not text.endswith("\n"):
        raise ExpositionError("no final newline")
    types, samples, finished, by_family = {}, {}, set(), {}
    current = None
    for line in text[:-1].split("\n"):
        if line.startswith("#"):
            m = _HELP.match(line) or _TYPE.match(line)
            if not m:
                raise ExpositionError(f"bad comment line: {line!r}")
            family = m.group(1)
            if line.startswith("# TYPE"):
                if family in types:
                    raise ExpositionError(f"{family} typed twice")
                _check_series_names(family, m.group(2), types)
                types[family] = m.group(2)
            if family != current:
                if family in finished:
                    raise ExpositionError(f"{family} is split")
                if current:
                    finished.add(current)
                current = family
            continue
        m = _SAMPLE_NAME.match(line)
        if not m:
            raise ExpositionError(f"bad line: {line!r}")
        name = m.group(1)
        labels, rest = _labels(line[m.end():], line)
        if not rest.startswith(" ") or " " in rest[1:]:
            raise ExpositionError(f"bad value part in: {line!r}")
        value = _value(rest[1:], line)
        family = _family_of(name, types)
        if family != current:
            raise ExpositionError(f"sample of {family} outside its group: {line!r}")
        key = (name, frozenset(labels.items()))
        if key in samples:
            raise ExpositionError(f"duplicate series: {line!r}")
        if types[family] == "counter" and value < 0:
            raise ExpositionError(f"negative counter: {line!r}")
        samples[key] = value
        by_family.setdefault(family, []).append((name, labels, value))
    for family, kind in types.items():
        if kind == "histogram":
            _check_histogram(family, by_family.get(family, []))
    return types, samples


def test_parser_rejects_malformed_exposition():
    good = ('# HELP a_total A.\n# TYPE a_total counter\na_total{x="q\\"\\\\\\n"} 1\n'
            '# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3\nh_count 2\n')
    types, samples = parse_exposition(good)
    assert types == {"a_total": "counter", "h": "histogram"}
    assert samples[("a_total", frozenset({("x", 'q"\\\n')}))] == 1
    for bad in [
        "a 1",                                            # no final newline
        "a 1\n",                                          # no TYPE
        "# TYPE a counter\na{x=\"\\t\"} 1\n",             # bad escape
        "# TYPE a counter\na{x=\"1\"}  1\n",              # two spaces
        "# TYPE a counter\na -1\n",                       # negative counter
        "# TYPE a counter\na 1\na 2\n",                   # duplicate series
        "# TYPE a gauge\n# TYPE b gauge\nb 1\n# HELP a x\na 1\n",  # split family
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        # A family named as a histogram's series, before or after it.
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"
        "# TYPE h_count counter\nh_count{x=\"1\"} 1\n",
        "# TYPE h_sum gauge\nh_sum{x=\"1\"} 1\n"
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n",
    ]:
        with pytest.raises(ExpositionError):
            parse_exposition(bad)


# ------------------------------------------------------------------ helpers


class Scrape:
    def __init__(self, d):
        r = requests.get(d.url + "/metrics", timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == CONTENT_TYPE
        self.text = r.text
        self.types, self.samples = parse_exposition(r.text)

    def get(self, name, default=None, **labels):
        return self.samples.get((name, frozenset(labels.items())), default)

    def series(self, name):
        return [(dict(k[1]), v) for k, v in self.samples.items() if k[0] == name]


def scrape_value(d, name, **labels):
    return Scrape(d).get(name, 0, **labels)


def config():
    return {
        "plugin.user": {"argon2_opslimit": "min", "argon2_memlimit": "min"},
        "plugin.notifications": {"transport": "maildir", "templates_dir": str(TEMPLATES),
                                 "retry.backoff_ms": 100},
    }


# -------------------------------------------------------------------- tests


def test_metrics_move_with_requests_and_events(evhostd):
    d = evhostd(config(), brokers="embedded")
    before = Scrape(d)
    assert before.types["evhost_http_requests_total"] == "counter"
    assert before.types["evhost_http_request_duration_seconds"] == "histogram"
    for family in ("evhost_events_published_total", "evhost_events_handled_total",
                   "evhost_dlq_messages_total"):
        assert before.types[family] == "counter"
    for family in ("evhost_outbox_pending", "evhost_outbox_last_delivery_timestamp_seconds",
                   "evhost_consumer_lag", "evhost_plugin_up", "evhost_store_full",
                   "evhost_store_damaged", "process_resident_memory_bytes",
                   "process_start_time_seconds"):
        assert before.types[family] == "gauge"
    # Nothing delivered yet: the plugin's start.
    started = before.get("evhost_outbox_last_delivery_timestamp_seconds", plugin="user")
    assert before.get("process_start_time_seconds") - 1 <= started <= time.time()
    assert before.types["evhost_event_handler_duration_seconds"] == "histogram"

    addr = f"m.{uuid.uuid4().hex[:10]}@example.com"
    posted = time.time()
    r = d.post("/users", json={"name": "Metric", "email": addr, "password": PASSWORD})
    assert r.status_code == 201, r.text
    uid = r.json()["id"]
    for _ in range(3):
        assert d.get(f"/users/{uid}").status_code == 200
    missing = str(uuid.uuid4())
    for _ in range(2):
        assert d.get(f"/users/{missing}").status_code == 404
    assert d.get("/no/such/path").status_code == 404

    after = Scrape(d)
    route = {"plugin": "user", "route": "/users/{id}", "method": "GET"}

    def delta(name, **labels):
        return after.get(name, 0, **labels) - before.get(name, 0, **labels)

    assert delta("evhost_http_requests_total", status="200", **route) == 3
    assert delta("evhost_http_requests_total", status="404", **route) == 2
    assert delta("evhost_http_request_duration_seconds_count", **route) == 5
    assert delta("evhost_http_request_duration_seconds_bucket", le="+Inf", **route) == 5
    assert after.get("evhost_http_request_duration_seconds_sum", **route) > 0
    assert delta("evhost_http_requests_total", plugin="user", route="/users", method="POST",
                 status="201") == 1
    assert delta("evhost_http_requests_total", plugin="", route="unmatched", method="GET",
                 status="404") == 1
    # The POST's transaction (and any other) was committed through a group.
    assert after.types["evhost_store_group_commits_total"] == "counter"
    assert after.types["evhost_store_group_members_total"] == "counter"
    commits = delta("evhost_store_group_commits_total", plugin="user")
    members = delta("evhost_store_group_members_total", plugin="user")
    assert members >= 1 and 1 <= commits <= members, (commits, members)
    # Route patterns only: no id or raw path becomes a label value.
    label_values = {v for (_, labels), _ in after.samples.items() for _, v in labels}
    assert uid not in label_values and missing not in label_values
    assert "/no/such/path" not in label_values

    # The event: published by the relay (delivery report), handled by notifications.
    published = dict(plugin="user", topic="USER_CREATED")
    handled = dict(plugin="notifications", topic="USER_CREATED", result="ok")
    lib.wait_until(lambda: scrape_value(d, "evhost_events_handled_total", **handled) >=
                   before.get("evhost_events_handled_total", 0, **handled) + 1,
                   timeout=30, message="events_handled_total{result=ok} to rise")
    events = Scrape(d)
    assert (events.get("evhost_events_published_total", 0, **published) -
            before.get("evhost_events_published_total", 0, **published)) == 1
    assert (events.get("evhost_events_handled_total", 0, **handled) -
            before.get("evhost_events_handled_total", 0, **handled)) == 1
    timing = dict(plugin="notifications", topic="USER_CREATED")
    assert events.get("evhost_event_handler_duration_seconds_count", 0, **timing) >= 1
    assert events.get("evhost_dlq_messages_total", 0, **published) == 0

    assert events.get("evhost_plugin_up", plugin="user") == 1
    assert events.get("evhost_plugin_up", plugin="notifications") == 1
    for plugin in ("user", "notifications"):
        pending = events.get("evhost_outbox_pending", plugin=plugin)
        assert pending is not None and pending >= 0
    # USER_CREATED left user's outbox after the POST (its delivery recorded).
    lib.wait_until(lambda: scrape_value(d, "evhost_outbox_pending", plugin="user") == 0,
                   timeout=15, message="user's outbox to empty")
    delivered = scrape_value(d, "evhost_outbox_last_delivery_timestamp_seconds", plugin="user")
    assert posted <= delivered <= time.time()

    def lag():
        # Reported by the consumer once a second: wait for the partitions, and
        # for a report made after the event was handled (one made before it
        # still says 1; a slow machine scrapes in between).
        values = [v for labels, v in Scrape(d).series("evhost_consumer_lag")
                  if labels["plugin"] == "notifications" and labels["topic"] == "USER_CREATED"]
        assert all(v >= 0 for v in values), values
        return values if values and sum(values) == 0 else None
    lib.wait_until(lag, timeout=15, message="evhost_consumer_lag of USER_CREATED to be 0")
    build = events.series("evhost_build_info")
    header = (lib.REPO_ROOT / "sdk" / "include" / "evhost" / "evhost.h").read_text()
    abi = ".".join(re.search(rf"#define EVH_ABI_{part} (\d+)", header).group(1)
                   for part in ("MAJOR", "MINOR"))
    version = re.search(r"project\(evhost VERSION ([0-9.]+)",
                        (lib.REPO_ROOT / "CMakeLists.txt").read_text()).group(1)
    assert build == [({"version": version, "abi": abi}, 1)]
    assert events.get("process_resident_memory_bytes") > 0
    assert events.get("process_start_time_seconds") > 1.6e9

    check_dashboard(events)
    check_alerts(events)

    # A poison message: rejected at once and dead-lettered.
    mock = re.search(r"mock cluster at (127\.0\.0\.1:\d+)", d.log_text()).group(1)
    lib.kafka_produce("USER_CREATED", "this is { not JSON", key="poison", brokers=mock,
                      headers={"ce_id": f"poison-{uuid.uuid4().hex}", "ce_type": "user.created"})
    dlq = dict(plugin="notifications", topic="USER_CREATED")
    lib.wait_until(lambda: scrape_value(d, "evhost_dlq_messages_total", **dlq) == 1, timeout=30,
                   message="evhost_dlq_messages_total to count the poison message")
    poisoned = Scrape(d)
    assert poisoned.get("evhost_events_handled_total", 0, result="reject", **dlq) == 1
    assert poisoned.get("evhost_events_handled_total", 0, result="ok", **dlq) == 1
    check_documented(poisoned)

    # Scrapes are requests too, under the host route.
    assert events.get("evhost_http_requests_total", plugin="", route="/metrics", method="GET",
                      status="200") >= 2
    r = d.post("/metrics")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD", r.headers
    head = requests.head(d.url + "/metrics", timeout=10)
    assert head.status_code == 200 and head.headers["Content-Type"] == CONTENT_TYPE


# Families exposed only once something happened (HTTPS on, a backup taken, a
# JWKS fetched), scraped by the tests named.
ONLY_WITH_HTTPS = {"evhost_tls_certificate_expiry_timestamp_seconds",  # test_https
                   "evhost_https_handshakes_failed_total",  # test_https
                   "evhost_backup_last_timestamp_seconds",  # test_https
                   "evhost_jwks_fetches_total",  # test_jwks_fetch
                   "evhost_jwks_last_success_timestamp_seconds",  # test_jwks_fetch
                   "evhost_jwks_keys_unusable"}  # test_jwks_fetch
OPERATIONS = lib.REPO_ROOT / "docs" / "operations.md"
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every series it scrapes
# The host's families, and the bundled plugins' own (operations.md's second table).
_FAMILY = re.compile(r"\b((?:evhost|process|notifications|user)_[a-z_]+)\b")
_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def documented_families(plugins=False):
    """docs/operations.md's table of series: {family: (type, label names)};
    with `plugins`, its second table instead: the bundled plugins' own."""
    text = OPERATIONS.read_text()
    tables = text.split("| series | type | labels | meaning |")
    table = tables[2 if plugins else 1].split("\n\n")[0]
    out = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        names = re.findall(r"`([a-z_]+)`", cells[0])
        kinds = re.findall(r"counter|gauge|histogram", cells[1])
        labels = set(re.findall(r"`([a-z_]+)`", cells[2]))
        assert names and kinds, row
        for i, name in enumerate(names):  # "counter, gauges": the first, then the rest
            out[name] = (kinds[min(i, len(kinds) - 1)], labels)
    assert len(out) > (1 if plugins else 20), out
    return out


def check_documented(scrape):
    """The table of series in docs/operations.md is the daemon's: every
    family exposed is documented with its type and exactly the labels its
    series have, and every documented family is exposed (but those that
    need HTTPS, a backup or a JWKS fetch)."""
    own = documented_families(plugins=True)
    documented = documented_families() | own
    labels = {}
    for (name, pairs), _ in scrape.samples.items():
        family = name if name in scrape.types else _SUFFIX.sub("", name)
        labels.setdefault(family, set()).update(
            k for k, _ in pairs if not (k == "le" and name.endswith("_bucket")))
    assert not set(scrape.types) - set(documented), \
        f"exposed, not in operations.md: {sorted(set(scrape.types) - set(documented))}"
    # A plugin's own are there when it runs (notifications' in most tests).
    missing = set(documented) - set(scrape.types) - ONLY_WITH_HTTPS - set(own)
    assert not missing, f"in operations.md, not exposed: {sorted(missing)}"
    for family, kind in scrape.types.items():
        assert re.search(rf"^# HELP {family} \S", scrape.text, re.M), f"{family} has no HELP"
        assert documented[family][0] == kind, (family, documented[family][0], kind)
        if family in labels:  # a family may have no series yet
            assert documented[family][1] == labels[family], \
                (family, "documented", documented[family][1], "exposed", labels[family])


def query_problems(expr, families, result_labels=()):
    """What is wrong with a PromQL query (an alert's expr, a panel's target)
    against the families evhostd exposes ({family: (type, labels)}): a
    series or label that does not exist, a grouping or legend/annotation
    label that no series of the query has or that its aggregation dropped,
    rate()/increase() of anything but a counter (or a histogram's series),
    deriv()/delta() of anything but a gauge, a histogram_quantile() without
    _bucket and le. Read with regular expressions: the shipped queries'
    forms, not PromQL in general."""
    problems = []
    e = expr.replace("$__rate_interval", "1m")

    def family(name):
        base = _SUFFIX.sub("", name)
        if name in families:
            return name, name
        if base in families and families[base][0] == "histogram":
            return base, name
        return None, name
    names = _FAMILY.findall(e)
    have = set(TARGET_LABELS)
    for name in names:
        fam, _ = family(name)
        if fam is None:
            problems.append(f"{name} is not exposed")
            continue
        have |= families[fam][1] | ({"le"} if name.endswith("_bucket") else set())
    for m in re.finditer(r"\b((?:evhost|process|notifications|user)_[a-z_]+)\{([^}]*)\}", e):
        fam, _ = family(m.group(1))
        for label in re.findall(r"([a-zA-Z_]+)\s*(?:=~|!~|!=|=)", m.group(2)):
            if fam and label not in families[fam][1] | TARGET_LABELS:
                problems.append(f"{m.group(1)} has no label {label}")
    for grouping in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", e):
        for label in filter(None, (x.strip() for x in grouping.split(","))):
            if label not in have:
                problems.append(f"{label} (grouping) is a label of none of {names}")
    kept = [{x.strip() for x in g.split(",")} for g in re.findall(r"\bby\s*\(([^)]*)\)", e)]
    for label in result_labels:
        if label not in have:
            problems.append(f"{label} (legend or annotation) is a label of none of {names}")
        elif kept and not any(label in k for k in kept):
            problems.append(f"{label} (legend or annotation) is aggregated away")
    for fn, name in re.findall(r"\b(rate|irate|increase|deriv|delta)\(\s*([a-z_]+)", e):
        fam, sample = family(name)
        kind = families[fam][0] if fam else None
        if fn in ("rate", "irate", "increase") and not (
                kind == "counter" or (kind == "histogram" and sample != fam)):
            problems.append(f"{fn}() of {name}, a {kind}")
        if fn in ("deriv", "delta") and kind != "gauge":
            problems.append(f"{fn}() of {name}, a {kind}")
    for m in re.finditer(r"histogram_quantile\(", e):
        inner = e[m.end():]
        if not re.search(r"_bucket\b", inner) or not re.search(r"\bby\s*\([^)]*\ble\b", inner):
            problems.append("histogram_quantile() without _bucket series summed by le")
    return problems


def test_query_problems_are_found():
    families = {"evhost_a_total": ("counter", {"plugin"}), "evhost_g": ("gauge", {"plugin"}),
                "evhost_h_seconds": ("histogram", {"route"})}
    assert query_problems('sum by (plugin) (rate(evhost_a_total{plugin=~"$plugin"}[5m]))',
                          families, {"plugin"}) == []
    assert query_problems("histogram_quantile(0.9, sum by (le, route) "
                          "(rate(evhost_h_seconds_bucket[5m])))", families, {"route"}) == []
    for bad, legend in [("evhost_nope", ()),                          # no such series
                        ('evhost_g{topic="x"}', ()),                  # no such label
                        ("sum by (topic) (evhost_g)", ()),            # grouping by it
                        ("evhost_g", {"topic"}),                      # legend of it
                        ("sum by (instance) (evhost_g)", {"plugin"}),  # aggregated away
                        ("rate(evhost_g[5m])", ()),                   # rate of a gauge
                        ("deriv(evhost_a_total[5m])", ()),            # deriv of a counter
                        ("rate(evhost_h_seconds[5m])", ()),           # not a series
                        ("histogram_quantile(0.9, rate(evhost_h_seconds_bucket[5m]))", ())]:
        assert query_problems(bad, families, legend), bad


def check_alerts(scrape):
    """The shipped alerting rules are Prometheus rule groups, each rule with a
    severity and a summary, and query only series, labels and types the
    daemon exposes; their annotations name only labels the result keeps."""
    check_documented(scrape)
    families = documented_families() | documented_families(plugins=True)
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {"EvhostPluginDown", "EvhostDeadLetters",
                                           "EvhostOutboxBacklog", "EvhostOutboxStuck",
                                           "EvhostConsumerLag"}
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert _FAMILY.findall(rule["expr"]), rule["alert"]
        used = set(re.findall(r"\$labels\.([a-z_]+)", " ".join(rule["annotations"].values())))
        assert not query_problems(rule["expr"], families, used), \
            (rule["alert"], query_problems(rule["expr"], families, used))


def check_dashboard(scrape):
    """The Grafana dashboard imports as it is (a Prometheus data source
    variable used by every panel) and queries only series, labels and types
    the daemon exposes, histograms through their _bucket series; every
    series with a plugin label follows the Plugin variable."""
    check_documented(scrape)
    families = documented_families() | documented_families(plugins=True)
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("instance", "plugin"):
        query = re.fullmatch(r"label_values\((.*), (\w+)\)", variables[name]["definition"])
        assert query and query.group(2) == name, variables[name]
        assert not query_problems(query.group(1), families, {name}), variables[name]
    targets = []
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        targets += [(panel["title"], t) for t in panel["targets"]]
    used = set()
    for title, target in targets:
        expr = target["expr"]
        legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        assert not query_problems(expr, families, legend), \
            (title, expr, query_problems(expr, families, legend))
        for m in re.finditer(r"\b((?:evhost|process|notifications|user)_[a-z_]+)(\{[^}]*\})?",
                             expr):
            family = _SUFFIX.sub("", m.group(1)) if m.group(1) not in families else m.group(1)
            used.add(family)
            assert 'instance=~"$instance"' in (m.group(2) or ""), (title, expr)
            if "plugin" in families[family][1]:
                assert 'plugin=~"$plugin"' in (m.group(2) or ""), (title, expr)
    for family in ("evhost_http_requests_total", "evhost_http_request_duration_seconds",
                   "evhost_events_published_total", "evhost_events_handled_total",
                   "evhost_event_handler_duration_seconds", "evhost_outbox_pending",
                   "evhost_outbox_max_rows",
                   "evhost_outbox_last_delivery_timestamp_seconds",
                   "evhost_consumer_lag", "evhost_dlq_messages_total", "evhost_plugin_up",
                   "evhost_store_group_commits_total", "evhost_store_group_members_total",
                   "evhost_store_full", "evhost_store_damaged", "process_resident_memory_bytes",
                   "evhost_tls_certificate_expiry_timestamp_seconds",
                   "evhost_admin_refusals_total", "evhost_plugin_http_requests_in_flight",
                   "evhost_plugin_log_lines_dropped_total", "evhost_wall_clock_steps_total",
                   "evhost_kafka_clients_left_running", "notifications_mails_total",
                   "notifications_maildir_full", "user_logins_total", "evhost_store_wal_bytes"):
        assert family in used, family


def test_store_wal_bytes_grows_while_a_read_transaction_holds_the_wal(evhostd):
    # evhost_store_wal_bytes: the plugin's WAL in use at its last commit.
    # Past 4000 pages a checkpoint lets the WAL start again from the
    # beginning, unless a read transaction still needs it (a plugin's, a
    # backup's copy, a sqlite3 shell left open): then it grows with every
    # commit, the file with it, and nothing said so.
    d = evhostd({"plugin.crud": {"collections": "things"}})
    session = requests.Session()
    pad = "x" * 200_000  # about 50 pages a document

    def post(n):
        for i in range(n):
            r = session.post(d.url + "/crud/things", json={"n": i, "pad": pad}, timeout=30)
            assert r.status_code == 201, r.text

    def wal():
        return scrape_value(d, "evhost_store_wal_bytes", plugin="crud")

    post(5)
    first = wal()
    assert 5 * 200_000 < first <= (d.state_dir / "crud.db-wal").stat().st_size
    reader = sqlite3.connect(d.state_dir / "crud.db", isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a snapshot held
        post(120)  # about 6000 pages, past the checkpoint's 4000
        held = wal()
        assert held > first + 100 * 200_000, (first, held)
        assert held > 4000 * 4096
    finally:
        reader.close()
    # Let go: the next checkpoint copies it all back, and a commit after it
    # starts the WAL again.
    lib.wait_until(lambda: post(1) or wal() < 2_000_000, timeout=60, interval=0.2,
                   message="the WAL started again once the read ended")


def test_alert_rules_pass_their_promtool_tests():
    """packaging/prometheus/evhost-alerts.test.yml: each alert against series
    shaped like the daemon's (a quiet plugin's outbox, mail failing at low
    traffic, workers held between scrapes, /readyz's 503s, evhostd down).
    promtool: the one on PATH, else the one scripts/deps takes out of
    Debian's prometheus package into evhost's cache; skipped without."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cached = cache / "evhost" / "promtool" / "promtool"
    promtool = shutil.which("promtool") or (str(cached) if os.access(cached, os.X_OK) else None)
    if not promtool:
        pytest.skip(f"no promtool on PATH or in {cached} (scripts/deps puts it there)")
    tests = ALERTS.with_name("evhost-alerts.test.yml")
    r = subprocess.run([promtool, "test", "rules", tests.name], cwd=tests.parent,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_counters_are_there_at_zero_from_the_start(evhostd):
    """Right after the start, before anything happened, every counter an
    alert or a panel takes increase() or rate() of is there at 0: the
    dead letters and handled results of each topic a plugin consumes, and
    the bundled plugins' own by each result. Made at their first count, a
    series first seen at 1 read as 0 to increase(): EvhostDeadLetters never
    saw a topic's first dead letter since the start."""
    d = evhostd(config(), brokers="embedded")
    scrape = Scrape(d)
    topic = dict(plugin="notifications", topic="USER_CREATED")
    assert scrape.get("evhost_dlq_messages_total", **topic) == 0, scrape.text
    for result in ("ok", "duplicate", "retry", "reject", "dlq"):
        assert scrape.get("evhost_events_handled_total", result=result, **topic) == 0, \
            (result, scrape.series("evhost_events_handled_total"))
    # Every topic with a handled series has its dead letters' too, and each result.
    topics = {(lbl["plugin"], lbl["topic"])
              for lbl, _ in scrape.series("evhost_events_handled_total")}
    for plugin, name in topics:
        assert scrape.get("evhost_dlq_messages_total", plugin=plugin, topic=name) == 0
        assert {lbl["result"] for lbl, _ in scrape.series("evhost_events_handled_total")
                if (lbl["plugin"], lbl["topic"]) == (plugin, name)} == \
            {"ok", "duplicate", "retry", "reject", "dlq"}
    mails = {lbl["result"]: v for lbl, v in scrape.series("notifications_mails_total")
             if lbl["plugin"] == "notifications"}
    assert mails == {"sent": 0, "failed": 0, "refused": 0}, mails
    assert scrape.get("notifications_maildir_full", plugin="notifications") == 0, scrape.text
    logins = {lbl["result"]: v for lbl, v in scrape.series("user_logins_total")
              if lbl["plugin"] == "user"}
    assert logins == {"ok": 0, "failed": 0, "locked": 0, "busy": 0}, logins
    check_alerts(scrape)


def test_a_failed_plugin_disabled_by_a_reload_is_not_down(evhostd, tmp_path):
    """notifications fails in init (no templates in its templates_dir) with
    required = false: evhost_plugin_up 0, kept by a reload that still
    enables it (it fails again). A reload that disables it takes the series
    away (operations.md: a disabled plugin has no series): it stayed at 0
    until a restart, and the critical EvhostPluginDown fired all along."""
    empty = tmp_path / "no-templates"
    empty.mkdir()
    conf = config()
    conf["plugin.notifications"].update(templates_dir=str(empty), required="false")
    d = evhostd(conf, brokers="embedded")
    assert Scrape(d).get("evhost_plugin_up", plugin="notifications") == 0
    assert Scrape(d).get("evhost_plugin_up", plugin="user") == 1

    def reload(config_now):
        evhostd.write_config(config_now, config_dir=d.config_dir, state_dir=d.state_dir,
                             port=d.port, brokers="embedded")
        done = d.log_text().count("reload done")
        d.send_signal(signal.SIGHUP)
        lib.wait_until(lambda: d.log_text().count("reload done") > done, timeout=30,
                       message="the reload to be done")

    reload(conf)  # still enabled, failing again: still down
    scrape = Scrape(d)
    assert scrape.get("evhost_plugin_up", plugin="notifications") == 0, scrape.text
    conf["plugin.notifications"]["enabled"] = "false"
    reload(conf)
    scrape = Scrape(d)
    assert [lbl for lbl, _ in scrape.series("evhost_plugin_up")] == [{"plugin": "user"}], \
        scrape.series("evhost_plugin_up")
    # Enabled again, with its templates: running.
    conf["plugin.notifications"].update(enabled="true", templates_dir=str(TEMPLATES))
    reload(conf)
    assert Scrape(d).get("evhost_plugin_up", plugin="notifications") == 1


def test_5xx_past_a_routes_statuses_still_reach_the_error_alert(evhostd, build_dir):
    """Past 15 distinct statuses of one route, the others count by class
    ("5xx", not "other", as until 2026-12): EvhostHttpErrors' own selector
    still finds every 5xx, checked against a real scrape."""
    probe = build_dir / "tests" / "fixtures" / "probe.so"
    d = evhostd({"plugin.probe": {"path": str(probe), "subscribe": "false"}},
                brokers="embedded")
    codes = list(range(200, 204)) + list(range(400, 411))  # 15 statuses: every slot
    for code in codes + [500, 503, 500, 418, 299]:
        r = d.get(f"/probe/status/{code}")
        assert r.status_code == code, (code, r.status_code)
    scrape = Scrape(d)
    statuses = {lbl["status"]: v for lbl, v in scrape.series("evhost_http_requests_total")
                if lbl["route"] == "/probe/status/{code}"}
    assert statuses == {**{str(c): 1 for c in codes}, "5xx": 3, "4xx": 1, "2xx": 1}, statuses
    rule = next(r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
                if r["alert"] == "EvhostHttpErrors")
    errors = re.search(r'evhost_http_requests_total\{[^}]*\bstatus=~"([^"]+)"[^}]*\}',
                       rule["expr"])
    assert errors, rule["expr"]
    counted = sum(v for status, v in statuses.items() if re.fullmatch(errors.group(1), status))
    assert counted == 3, (errors.group(1), statuses)
    check_alerts(scrape)
    check_dashboard(scrape)


@pytest.mark.parametrize("bound", [1234, 0])
def test_each_plugins_outbox_bound_is_exposed(evhostd, build_dir, bound):
    """evhost_outbox_max_rows: [store] outbox_max_rows as each outbox holds
    it, for EvhostOutboxNearlyFull's ratio; no series without a bound."""
    probe = build_dir / "tests" / "fixtures" / "probe.so"
    d = evhostd({"store": {"outbox_max_rows": bound},
                 "plugin.probe": {"path": str(probe), "subscribe": "false"}},
                brokers="embedded")
    scrape = Scrape(d)
    assert scrape.types["evhost_outbox_max_rows"] == "gauge"
    assert scrape.series("evhost_outbox_max_rows") == (
        [({"plugin": "probe"}, float(bound))] if bound else [])


def test_a_metric_declared_in_a_plugins_check_is_refused(evhostd, build_dir):
    """A check keeps no state: a metric it declared was served on /metrics for
    good, even for a configuration that never started. Refused, and said."""
    probe = build_dir / "tests" / "fixtures" / "probe.so"
    d = evhostd({"plugin.probe": {"path": str(probe), "subscribe": "false",
                                  "check_metric": "true"}}, brokers="embedded")
    d.wait_for_log("probe: check: evh_metric_new gave NULL")
    assert ("evh_metric_new: probe_checked_total: declare metrics in init, not in check"
            in d.log_text()), d.log_tail()
    assert "probe_checked_total" not in d.get("/metrics").text


def test_a_stream_event_published_in_a_plugins_check_is_refused(evhostd, build_dir):
    """A check has no side effects (evhost.h): an event it published to a
    stream went into the channel's resume history, under the running
    instance's name at a reload, for clients to be sent."""
    probe = build_dir / "tests" / "fixtures" / "probe.so"
    d = evhostd({"plugin.probe": {"path": str(probe), "subscribe": "false",
                                  "check_stream": "true"}}, brokers="embedded")
    d.wait_for_log("probe: check: evh_stream_publish gave not allowed in this state")
    assert "stream publish to 'checked': not in check" in d.log_text(), d.log_tail()


def test_a_token_signed_in_a_plugins_check_is_refused_for_what_it_is(evhostd, build_dir,
                                                                      tmp_path):
    # It was refused as "[auth] jwt_secret_file is not configured", with the
    # key configured: the keys are set up after the checks.
    probe = build_dir / "tests" / "fixtures" / "probe.so"
    secret = tmp_path / "jwt.secret"
    secret.write_text("s" * 40 + "\n")
    d = evhostd({"plugin.probe": {"path": str(probe), "subscribe": "false", "check_sign": "true"},
                 "auth": {"jwt_secret_file": str(secret)}}, brokers="embedded")
    d.wait_for_log("probe: check: evh_auth_sign gave ")
    text = d.log_text()
    assert "evh_auth_sign during check: refused (a check keeps no state)" in text, text
    assert "jwt_secret_file is not configured" not in text, text


CLASH_PLUGIN = r"""
/* Declares metrics and routes the host owns or that collide, and says what
 * it was given for each; starts anyway (a refusal is no reason not to). */
#include <evhost/evhost.h>

static const evh_config_key clash_config[] = {{NULL, 0, NULL, 0, NULL}};

static int hello(evh_request *req, evh_response *resp, void *ud)
{
	(void)req;
	(void)ud;
	return evh_resp_json(resp, 200, "{\"clash\":true}", 14);
}

static void metric(evh_plugin *p, evh_metric_type type, const char *name)
{
	evh_log(p, EVH_LOG_INFO, "clash: metric %s: %s", name,
	        evh_metric_new(p, type, name, "Clashing.", NULL) ? "taken" : "refused");
}

static int clash_init(evh_plugin *p, void **state)
{
	static const char *const route[][2] = {{"GET", "/healthz"}, {"GET", "/readyz"},
	                                       {"GET", "/metrics"}, {"POST", "/admin/plugins"},
	                                       {"GET", "/clash"}};
	(void)state;
	metric(p, EVH_METRIC_GAUGE, "process_open_fds");
	metric(p, EVH_METRIC_COUNTER, "process_cpu_seconds_total");
	metric(p, EVH_METRIC_HISTOGRAM, "clash_lat_seconds");
	metric(p, EVH_METRIC_COUNTER, "clash_lat_seconds_count");
	metric(p, EVH_METRIC_COUNTER, "clash_req_count");
	metric(p, EVH_METRIC_HISTOGRAM, "clash_req");
	for (unsigned i = 0; i < sizeof route / sizeof route[0]; i++)
		evh_log(p, EVH_LOG_INFO, "clash: route %s %s: %s", route[i][0], route[i][1],
		        evh_strerror(evh_http_route(p, route[i][0], route[i][1], hello, NULL)));
	return EVH_OK;
}

EVH_PLUGIN("clash", "1.0.0", "metrics and routes the host owns", clash_config, clash_init,
           NULL)
"""


def test_a_plugins_metrics_and_routes_the_host_owns_are_refused(evhostd, tmp_path):
    """A plugin's process_* metric (the host serves process_*), or one named as
    a histogram's _bucket/_sum/_count series, put two # TYPE blocks for one
    name on /metrics: Prometheus refused the whole scrape, the host's metrics
    with it. A plugin's route at /healthz, /readyz, /metrics or under /admin
    was taken and never reached (the host answers there first). All refused
    at declaration, the log saying which plugin, what and why."""
    src, so = tmp_path / "clash.c", tmp_path / "clash.so"
    src.write_text(CLASH_PLUGIN)
    r = subprocess.run(["cc", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
                        f"-I{lib.REPO_ROOT / 'sdk' / 'include'}", str(src), "-o", str(so)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = evhostd({"plugin.clash": {"path": str(so)}}, brokers="embedded")
    d.wait_for_log("clash: route GET /clash: ")
    log = d.log_text()
    said = dict(re.findall(r"clash: ((?:metric|route) [^:]+): (.+)", log))
    assert said == {
        "metric process_open_fds": "refused", "metric process_cpu_seconds_total": "refused",
        "metric clash_lat_seconds": "taken", "metric clash_lat_seconds_count": "refused",
        "metric clash_req_count": "taken", "metric clash_req": "refused",
        **{f"route {r}": "invalid argument"  # EVH_EINVAL
           for r in ("GET /healthz", "GET /readyz", "GET /metrics", "POST /admin/plugins")},
        "route GET /clash": "ok"}, log
    errors = [line for line in log.splitlines() if "ERROR" in line and "clash" in line]
    for why in ("evh_metric_new: process_open_fds: names starting with process_ are the host's",
                "evh_metric_new: clash_lat_seconds_count: the histogram clash_lat_seconds, "
                "declared already, serves a series of that name; choose another name",
                "evh_metric_new: clash_req: a histogram serves clash_req_count, declared "
                "already as a counter; choose another name",
                "route GET /metrics: the host serves /metrics",
                "route POST /admin/plugins: the host serves /admin and every path under it"):
        assert any(why in line for line in errors), (why, errors)
    # The scrape is whole (the strict parser takes it), the host's metrics in it.
    scrape = Scrape(d)
    assert scrape.types["process_open_fds"] == "gauge"
    assert scrape.types["clash_lat_seconds"] == "histogram"
    assert "clash_req" not in scrape.types and "clash_lat_seconds_count" not in scrape.types
    assert scrape.get("evhost_plugin_up", plugin="clash") == 1
    assert d.get("/healthz").json() == {"status": "ok"}
    assert d.get("/clash").json() == {"clash": True}


def test_a_plugin_gauge_is_set_and_added_to_through_the_sdk(evhostd, build_dir):
    """evh_metric_set and evh_metric_add on a plugin's own gauge, through the
    SDK's table as a third-party plugin calls them (the bundled plugins use
    counters and a histogram only)."""
    probe = build_dir / "tests" / "fixtures" / "probe.so"
    d = evhostd({"plugin.probe": {"path": str(probe), "subscribe": "false", "gauge": "true"}},
                brokers="embedded")
    scrape = Scrape(d)
    assert scrape.types.get("probe_level") == "gauge", scrape.text
    assert scrape.series("probe_level") == []  # declared, no value yet
    for query, want in (("kind=a&set=5", 5), ("kind=a&add=2", 7), ("kind=a&add=-10", -3),
                        ("kind=a&set=40", 40)):
        assert d.post(f"/probe/gauge?{query}").status_code == 204
        assert scrape_value(d, "probe_level", plugin="probe", kind="a") == want, query
    assert d.post("/probe/gauge?kind=b&set=-1").status_code == 204
    assert sorted(Scrape(d).series("probe_level"), key=lambda s: s[0]["kind"]) == \
        [({"plugin": "probe", "kind": "a"}, 40), ({"plugin": "probe", "kind": "b"}, -1)]


def test_consumer_lag_returns_to_zero_after_a_dead_letter(evhostd):
    """Welcome mails the SMTP server refuses: each retried (its partition's
    lag counts it and those behind it meanwhile), then dead-lettered, and
    the partition resumed past it. The lag goes back to 0 then; it used to stay at the value it had
    while the retry waited (rd_kafka_position says "invalid" after the seek
    until another message comes), a phantom backlog on the dashboard."""
    nobody = lib.free_port()  # nothing listens: every send fails at once
    cfg = config()
    cfg["plugin.notifications"] = {
        "transport": "smtp", "smtp_url": f"smtp://127.0.0.1:{nobody}", "smtp_timeout_ms": 1000,
        "templates_dir": str(TEMPLATES), "retry.max_attempts": 2, "retry.backoff_ms": 1500}
    d = evhostd(cfg, brokers="embedded")

    def lags():
        return {labels["partition"]: v for labels, v in Scrape(d).series("evhost_consumer_lag")
                if labels["plugin"] == "notifications" and labels["topic"] == "USER_CREATED"}
    def all_zero(want=()):
        v = lags()
        return v if v and set(v) >= set(want) and sum(v.values()) == 0 else None
    # Assigned and reported (empty partitions are): the lag is watched from before.
    first = lib.wait_until(all_zero, timeout=30,
                           message="USER_CREATED's partitions in evhost_consumer_lag")
    users = 8  # over the partitions, several in some: a lag is seen while they wait
    for i in range(users):
        r = d.post("/users", json={"name": f"Lag {i}", "password": PASSWORD,
                                   "email": f"l{i}.{uuid.uuid4().hex[:10]}@example.com"})
        assert r.status_code == 201, r.text
    lib.wait_until(lambda: sum(lags().values()) > 0, timeout=15,
                   message="a lag while the mails' retries wait")
    dlq = dict(plugin="notifications", topic="USER_CREATED")
    lib.wait_until(lambda: scrape_value(d, "evhost_dlq_messages_total", **dlq) == users,
                   timeout=60, message="the refused mails to be dead-lettered")
    lib.wait_until(lambda: all_zero(first), timeout=10,
                   message="evhost_consumer_lag of every USER_CREATED partition back to 0")
    # The refusal's reason is the OS's too: libcurl says "Couldn't connect"
    # alike when this side has no descriptor left (EMFILE).
    failed = [x for x in d.log_text().splitlines() if "Couldn't connect to server" in x]
    assert failed and all("(Connection refused)" in x for x in failed), failed[:3]


def test_auth_refusals_and_sign_outs_are_counted(evhostd, tmp_path):
    """Every refusal of the host's token check is counted by why (a spike
    of bad signatures, a client with an old token); the sign-outs, saved or
    not, and the subjects signed out."""
    secret = tmp_path / "jwt.key"
    secret.write_bytes(b"s" * 48)
    conf = config()
    conf["auth"] = {"jwt_secret_file": str(secret), "token_ttl_max": "1h"}
    conf["plugin.user"]["read_role"] = "auditor"
    d = evhostd(conf, brokers="embedded")
    before = Scrape(d)
    reasons = ("missing", "malformed", "signature", "expired", "not_yet_valid", "claims",
               "revoked", "lifetime", "unverifiable", "role")
    assert {lbl["reason"]: v for lbl, v in before.series("evhost_auth_refusals_total")} \
        == dict.fromkeys(reasons, 0), before.series("evhost_auth_refusals_total")
    assert before.get("evhost_auth_signed_out_subjects") == 0
    user = d.post("/users", json={"name": "M", "email": f"m.{uuid.uuid4().hex[:8]}@example.com",
                                  "password": PASSWORD}).json()
    key = secret.read_bytes()

    def rename(token, status=401):
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        r = d.patch(f"/users/{user['id']}", json={"name": "N"}, headers=headers)
        assert r.status_code == status, r.text

    rename(None)
    rename("not-a-token")
    rename(lib.sign_token(b"another key" * 4, user["id"]))
    rename(lib.sign_token(key, user["id"], ttl=-120))
    rename(lib.sign_token(key, user["id"], issuer="someone-else"))
    rename(lib.sign_token(key, user["id"], ttl=7200))
    good = lib.sign_token(key, user["id"])
    rename(good, 200)
    r = d.get("/users", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 403, r.text
    r = d.post("/auth/logout", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 204, r.text
    rename(good)
    after = Scrape(d)
    want = dict.fromkeys(reasons, 0)
    want.update(missing=1, malformed=1, signature=1, expired=1, claims=1, lifetime=1, role=1,
                revoked=1)
    assert {lbl["reason"]: v for lbl, v in after.series("evhost_auth_refusals_total")} == want
    assert after.get("evhost_auth_sign_outs_total", result="saved") == 1
    assert after.get("evhost_auth_sign_outs_total", result="failed") == 0
    assert after.get("evhost_auth_signed_out_subjects") == 1
    assert after.types["evhost_auth_signed_out_subjects"] == "gauge"


ADMIN_TOKEN = "admin-token-for-metrics-0123456789"
ADMIN_REASONS = ("missing", "malformed", "wrong")


def admin_refusals(scrape):
    return {lbl["reason"]: v for lbl, v in scrape.series("evhost_admin_refusals_total")}


def test_admin_refusals_are_counted(evhostd, tmp_path):
    """Every request the admin API refuses for its token (401) is counted by
    why: no Authorization header, one without a bearer token in it, or a
    bearer token that is not the one in [admin] token_file (someone trying
    tokens). Good requests are not counted, nor are the admin API's refusals
    counted as the plugin routes' token check's."""
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    conf = config()
    conf["admin"] = {"token_file": str(token_file)}
    d = evhostd(conf, brokers="embedded")
    before = Scrape(d)
    assert before.types["evhost_admin_refusals_total"] == "counter"
    assert admin_refusals(before) == dict.fromkeys(ADMIN_REASONS, 0), admin_refusals(before)

    def refused(method, path, headers):
        r = requests.request(method, d.url + path, headers=headers, timeout=10)
        assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="evhost-admin"'

    # No Authorization header: on a route, an unknown path, a POST.
    refused("GET", "/admin/plugins", {})
    refused("GET", "/admin/nothing", {})
    refused("POST", "/admin/reload", {})
    # A header with no bearer token in it: the bare token, another scheme, the
    # scheme alone, the scheme with only spaces after it.
    for value in (ADMIN_TOKEN, f"Basic {ADMIN_TOKEN}", "Bearer", "Bearer    "):
        refused("GET", "/admin/plugins", {"Authorization": value})
    # Bearer tokens that are not the token (the scheme in any case).
    for value in (f"Bearer {ADMIN_TOKEN[:-1]}", f"Bearer {ADMIN_TOKEN}x",
                  f"Bearer {ADMIN_TOKEN.upper()}", "bearer guess-0123456789abcdef",
                  f"BEARER {ADMIN_TOKEN[::-1]}"):
        refused("GET", "/admin/events", {"Authorization": value})
    refused("POST", "/admin/sign-out", {"Authorization": "Bearer not-the-token-at-all"})
    # The token itself, however the scheme is spelt: not refused, not counted.
    for scheme in ("Bearer", "bearer"):
        r = d.get("/admin/plugins", headers={"Authorization": f"{scheme} {ADMIN_TOKEN}"})
        assert r.status_code == 200, r.text

    after = Scrape(d)
    want = {"missing": 3, "malformed": 4, "wrong": 6}
    assert admin_refusals(after) == want, admin_refusals(after)
    assert {lbl["reason"]: v for lbl, v in after.series("evhost_auth_refusals_total")} \
        == {lbl["reason"]: v for lbl, v in before.series("evhost_auth_refusals_total")}
    answered = {(lbl["method"], lbl["status"]): v
                for lbl, v in after.series("evhost_http_requests_total")
                if lbl["route"] == "/admin"}
    assert answered == {("GET", "401"): 11, ("POST", "401"): 2, ("GET", "200"): 2}, answered
    check_alerts(after)  # and check_documented
    check_dashboard(after)  # which shows them
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert any('evhost_admin_refusals_total{reason="wrong"}' in r["expr"] for r in rules)


def test_admin_api_off_counts_no_refusals(evhostd):
    """Without [admin] token_file the admin API answers 404 to everyone: no
    token was refused, and the counter is there at 0 all the same (a reload
    may turn the API on)."""
    d = evhostd(config(), brokers="embedded")
    for headers in ({}, {"Authorization": "Bearer some-guess-0123456789"}):
        assert d.get("/admin/plugins", headers=headers).status_code == 404
    assert admin_refusals(Scrape(d)) == dict.fromkeys(ADMIN_REASONS, 0)


def test_metrics_disabled_answers_404(evhostd):
    d = evhostd({"metrics": {"enabled": False}}, brokers="embedded")
    r = d.get("/metrics")
    assert r.status_code == 404
    assert r.headers["Content-Type"] == "application/problem+json"
    assert d.get("/healthz").status_code == 200


@pytest.mark.parametrize("reset,lag", [("latest", 0), ("error", 5)])
def test_consumer_lag_of_a_new_group_follows_auto_offset_reset(
        evhostd, build_dir, unique_name, kafka_bootstrap, reset, lag):
    # A new group on a topic that holds 5 events. latest: it starts at the
    # end, past them (never handled): nothing waits, lag 0. error: it
    # starts nowhere, every event waits for the operator to set its offset
    # (a replay): lag 5, so the stuck consumer shows.
    topic = unique_name("reset")
    lib.create_topics([topic], brokers=kafka_bootstrap, partitions=1)
    for k in "abcde":
        lib.kafka_produce(topic, '{"n":1}', key=k, brokers=kafka_bootstrap)
    config = {"kafka": {"rdkafka.auto.offset.reset": reset},
              "plugin.probe": {"path": str(build_dir / "tests" / "fixtures" / "probe.so"),
                               "topic": topic, "group": unique_name("g")}}
    d = evhostd(config, brokers=kafka_bootstrap)
    found = lib.wait_until(lambda: lib.consumer_lag(d, topic) or None, timeout=30, interval=0.5,
                           message=f"evhost_consumer_lag of {topic}")
    time.sleep(2)  # a few more reports: the value holds
    assert lib.consumer_lag(d, topic) == {0: lag}, (found, d.log_tail())
    assert lib.probe_seen(d) == []
    assert d.stop() == 0, d.log_tail()
