#!/usr/bin/python3
"""Instructions per HTTP request, counted by valgrind's callgrind: a figure
that does not drift with the load of a shared machine (which has no hardware
counters for perf), for A/B comparisons of one change on the request path.

  bench/instructions.py BUILD_DIR [--mode get|post] [-n N] [--top K]

Runs BUILD_DIR's evhostd under callgrind with crud.so (collection "products")
on librdkafka's embedded broker, warms up with 100 requests, zeroes the
counters, makes N requests (GET /crud/products/ID of one document, or POST
/crud/products of N new ones) over one keep-alive connection, dumps, and
prints the instructions per request of the whole process (every thread: the
HTTP workers, the store, the outbox relay and the embedded broker) and the K
functions with the most inclusive instructions. Start-up is not counted.
Debian's python3 with python3-requests (scripts/deps), and valgrind (apt-get install
valgrind).
"""

import argparse
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(work, build, port):
    (work / "state").mkdir()
    conf = work / "evhost.conf"
    conf.write_text(
        "[host]\n"
        f"plugin_dir = {build / 'plugins'}\n"
        f"state_dir = {work / 'state'}\n"
        "[http]\n"
        f"listen = 127.0.0.1:{port}\n"
        "[kafka]\n"
        "brokers = embedded\n"
        "[log]\n"
        "level = warn\n"
        "[plugin.crud]\n"
        f"path = {build / 'plugins' / 'crud.so'}\n"
        "collections = products\n"
        "collection.products.required = name, price\n"
        "collection.products.types = name:string, price:number, stock:integer\n")
    return conf


def wait_ready(url, proc, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"instructions: evhostd exited with {proc.returncode}")
        try:
            if requests.get(url + "/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    sys.exit(f"instructions: evhostd not ready within {timeout} s")


def requests_made(session, url, mode, n, doc_id):
    for i in range(n):
        if mode == "get":
            r = session.get(f"{url}/crud/products/{doc_id}", timeout=60)
            ok = r.status_code == 200
        else:
            r = session.post(f"{url}/crud/products", timeout=60,
                             json={"name": f"widget {i}", "price": 9.99, "stock": i,
                                   "tags": ["a", "b"], "note": "x" * 40})
            ok = r.status_code == 201
        if not ok:
            sys.exit(f"instructions: {r.status_code} {r.text}")


def callgrind_control(*args):
    subprocess.run(["callgrind_control", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL,
                   timeout=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build", type=Path)
    ap.add_argument("--mode", choices=("get", "post"), default="get")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    build = args.build.resolve()
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if not shutil.which(tool):
            sys.exit(f"instructions: {tool} not found (apt-get install valgrind)")
    work = Path(tempfile.mkdtemp(prefix="evhost-instr."))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    conf = write_config(work, build, port)
    out = work / "callgrind.out"
    with open(work / "evhostd.log", "w") as log:
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                 str(build / "host" / "evhostd"), "-c", str(conf)],
                                stdout=log, stderr=subprocess.STDOUT, cwd=work)
    try:
        wait_ready(url, proc)
        s = requests.Session()
        r = s.post(f"{url}/crud/products", json={"name": "widget", "price": 9.99, "stock": 3},
                   timeout=60)
        doc_id = r.json()["id"]
        requests_made(s, url, args.mode, 100, doc_id)
        callgrind_control("-z", str(proc.pid))
        requests_made(s, url, args.mode, args.n, doc_id)
        callgrind_control("-d", str(proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    dumps = sorted(glob.glob(f"{out}.*"), key=os.path.getmtime)
    if not dumps:
        sys.exit(f"instructions: no callgrind dump in {work}")
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", dumps[-1]], check=True,
                          capture_output=True, text=True, timeout=300).stdout
    total = int(re.search(r"^([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text, re.M)
                .group(1).replace(",", ""))
    print(f"{build}: {args.mode} x {args.n}: {total / args.n:,.0f} instructions per request")
    rows = [ln for ln in text.splitlines() if re.match(r"^\s*[\d,]+ \(\s*[\d.]+%\)\s+\S", ln)
            and "PROGRAM TOTALS" not in ln]
    for ln in rows[:args.top]:
        n, rest = ln.split(None, 1)
        print(f"  {int(n.replace(',', '')) / args.n:>10,.0f}  {rest.split(')', 1)[1].strip()}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
