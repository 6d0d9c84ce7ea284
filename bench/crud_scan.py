#!/usr/bin/python3
"""A filtered crud list over large documents, timed on BUILD_DIR's evhostd,
for a before/after figure (docs/benchmarks.md, "Filtered lists of large
documents"):

  bench/crud_scan.py BUILD_DIR [--docs N] [--kb K]

Writes N documents of about K KB each (default 2000 of 900 KB: the 1 MiB
body limit allows such documents) straight into crud's database, as crud
writes them, then times GET /crud/orders?color=green&limit=100, a filter no
document matches: the first page alone, then every page following
next_cursor until it is null. The documents are objects of an `n`, a `color`
and `words`, an array of 8-letter strings (JSON of many small values, as
the review's were). Needs Debian's python3 with requests (scripts/deps).
Nothing asserted; requests wait up to 15 minutes.
"""

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "system"))
import evhost_testlib as lib  # noqa: E402

CONFIG = {"plugin.crud": {"collections": "orders"}}
NOW = "2026-01-01T00:00:00Z"


def fill(db_path, docs, kb):
    words = json.dumps(["abcdefgh"] * (kb * 1000 // 11), separators=(",", ":"))
    db = sqlite3.connect(str(db_path))
    try:
        with db:
            db.executemany(
                "INSERT INTO documents(collection, id, doc, version, created_at, updated_at)"
                " VALUES('orders', ?, ?, 1, ?, ?)",
                ((f"d{i}", f'{{"n":{i},"color":"blue","words":{words}}}', NOW, NOW)
                 for i in range(docs)))
    finally:
        db.close()
    return len(words)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build_dir", type=Path)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--kb", type=int, default=900)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="evhost-crud-scan-") as tmp:
        factory = lib.DaemonFactory(args.build_dir, tmp)
        state = Path(tmp) / "state"
        try:
            d = factory(CONFIG, state_dir=state)
            d.stop()
            t = time.monotonic()
            size = fill(state / "crud.db", args.docs, args.kb)
            print(f"{args.docs} documents of {size} bytes written in "
                  f"{time.monotonic() - t:.1f} s", flush=True)
            d = factory(CONFIG, state_dir=state)
            cursor, pages, total, first = None, 0, 0.0, None
            while True:
                query = "color=green&limit=100" + (f"&cursor={cursor}" if cursor else "")
                t = time.monotonic()
                r = d.get(f"/crud/orders?{query}", timeout=900)
                took = time.monotonic() - t
                if r.status_code != 200:
                    print(f"page {pages + 1}: {r.status_code} {r.text[:500]}")
                    break
                pages += 1
                total += took
                if first is None:
                    first = took
                    print(f"first page: {took:.3f} s", flush=True)
                cursor = r.json()["next_cursor"]
                if not cursor:
                    break
            print(f"all {pages} pages: {total:.2f} s, {total / pages:.3f} s a page on average")
        finally:
            problems = factory.teardown()
            if problems:
                print("\n".join(problems))


if __name__ == "__main__":
    main()
