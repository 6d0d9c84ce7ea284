#!/usr/bin/python3
"""One request each of the two inputs that were quadratic (2026-12-08), timed
on BUILD_DIR's evhostd, for a before/after figure (docs/benchmarks.md,
"Quadratic inputs"):

  bench/quadratic.py BUILD_DIR [--brokers HOST:PORT] [--names N] [--headers H]

  crud:  PATCH /crud/products/ID (application/merge-patch+json) of N distinct
         names onto a document of one member, then the same patch again onto
         the document of N + 1 members it made (N = 120000: a body of 960 KB,
         under the 1 MiB limit).
  dlq:   GET /admin/plugins/probe/dlq of one dead letter with H distinct
         header names (the probe plugin of tests/fixtures), produced to the
         broker given (a real one: librdkafka's embedded broker keeps no
         headers).

Needs Debian's python3 with requests and kafka-python (scripts/deps), and the
build's tests/fixtures/probe.so (target evhost_fixtures). Nothing asserted;
requests wait up to 15 minutes.
"""

import argparse
import string
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "system"))
import evhost_testlib as lib  # noqa: E402

TOKEN = "quadratic-bench-token-0123456789abcdef"
ALPHABET = string.digits + string.ascii_letters


def short_name(i):
    """i in base 62: names of 3 characters up to 238327."""
    out = ""
    while True:
        i, r = divmod(i, 62)
        out = ALPHABET[r] + out
        if not i:
            return out


def timed(what, call):
    t = time.monotonic()
    r = call()
    took = time.monotonic() - t
    print(f"{what}: {r.status_code} in {took:.2f} s", flush=True)
    if r.status_code >= 300:
        print(r.text[:500])
    return r


def crud(factory, names):
    d = factory({"plugin.crud": {"collections": "products"}})
    doc = d.post("/crud/products", json={"name": "lamp"}).json()
    # "id" is the document's own (a patch may not change it)
    keys = [k for k in map(short_name, range(names + 1)) if k != "id"][:names]
    body = "{" + ",".join(f'"{k}":1' for k in keys) + "}"
    hdrs = {"Content-Type": "application/merge-patch+json"}
    print(f"patch body: {len(body)} bytes, {names} names")
    for what in ("PATCH onto 1 member", f"PATCH onto {names + 1} members"):
        timed(what, lambda: d.patch(f"/crud/products/{doc['id']}", data=body, headers=hdrs,
                                    timeout=900))


def dlq(factory, tmp, brokers, headers):
    topic = f"bench.{uuid.uuid4().hex[:12]}"
    lib.create_topics([topic, f"{topic}.probe.dlq"], brokers=brokers, partitions=1)
    hs = [("evhost_dlq_topic", topic.encode())] + [(short_name(i), b"v")
                                                   for i in range(headers)]
    lib.kafka_produce_many([dict(topic=f"{topic}.probe.dlq", partition=0, value=b"{}",
                                 headers=hs)], brokers=brokers)
    (tmp / "admin.token").write_text(TOKEN + "\n")
    d = factory({"admin": {"token_file": str(tmp / "admin.token")},
                 "plugin.probe": {"enabled": "true", "topic": topic,
                                  "group": f"g.{uuid.uuid4().hex[:12]}",
                                  "path": str(factory.build_dir / "tests" / "fixtures" /
                                              "probe.so")}},
                brokers=brokers)
    print(f"dead letter: {headers} header names")
    r = timed("GET .../dlq", lambda: d.get("/admin/plugins/probe/dlq",
                                           headers={"Authorization": f"Bearer {TOKEN}"},
                                           timeout=900))
    if r.status_code == 200:
        print(f"  headers shown: {len(r.json()['messages'][0]['headers'])}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build_dir", type=Path)
    ap.add_argument("--brokers", default="127.0.0.1:19092")
    ap.add_argument("--names", type=int, default=120000)
    ap.add_argument("--headers", type=int, default=60000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="evhost-quadratic-") as tmp:
        factory = lib.DaemonFactory(args.build_dir, tmp)
        try:
            crud(factory, args.names)
            dlq(factory, Path(tmp), args.brokers, args.headers)
        finally:
            problems = factory.teardown()
            if problems:
                print("\n".join(problems))


if __name__ == "__main__":
    main()
