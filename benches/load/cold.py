#!/usr/bin/env python3
"""One client, one cold file: the time to download it through upcache (which
hashes it, writes it to the store and commits it) against the time straight
from the upstream (nginx, sendfile, no limit). Twice a round: with a catalog
that gives the file's SHA-1 only (package.xml; upcache computes SHA-1 and
SHA-256) and one that gives its SHA-256 too (SHA-256 alone).

    benches/load/cold.py [--mb 512] [--rounds 3]

Each run starts upcache on an empty data directory; the upstream's file
is in the page cache for both. Uses run.py's helpers; writes its table
beside run.py's results.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as load  # noqa: E402


def timed_get(url):
    t0 = time.perf_counter()
    n = 0
    with urllib.request.urlopen(url, timeout=600) as r:
        while True:
            chunk = r.read(1 << 20)
            if not chunk:
                break
            n += len(chunk)
    return time.perf_counter() - t0, n


def summarize_profile(work, a, declare_sha256):
    name, what = ("perf-cold-sha256", "catalog gives SHA-256") if declare_sha256 else ("perf-cold", "catalog gives SHA-1")
    path = load.write_profile(work, a.out, name,
                              f"perf record -F 999 -g on upcache during one cold {a.mb} MiB download "
                              f"(one client, {what}); self time by thread, DSO and symbol", sort="comm,dso,symbol")
    print(f"profile: {path}")


def through_upcache(work, f, upstream, declare_sha256, perf_out=None):
    """Starts upcache on an empty data directory, has it download `f` for one
    client; returns (seconds, upcache's CPU seconds). With `declare_sha256`
    the catalog gives the file's SHA-256 besides its SHA-1 (as the WSUS sync
    metadata and an upstream upcache's catalog do), and upcache verifies by
    SHA-256 alone."""
    content, admin = load.free_port(), load.free_port()
    data = os.path.join(work, "data")
    shutil.rmtree(data, ignore_errors=True)
    proc = subprocess.Popen(
        [os.path.join(load.ROOT, "target/release/upcache"), "serve", "--data-dir", data,
         "--listen", f"127.0.0.1:{content}", "--admin-listen", f"127.0.0.1:{admin}"],
        env={**os.environ, "RUST_LOG": "upcache=warn",
             # every load client is on loopback: lift the per-address cap
             "UPCACHE_MAX_CONNECTIONS_PER_IP": "1000000"}, stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                load.http("GET", f"http://127.0.0.1:{admin}/healthz")
                break
            except OSError:
                time.sleep(0.05)
        entry = {"name": f["name"], "sha1": f["sha1"], "size": f["size"], "url": upstream}
        if declare_sha256:
            entry["sha256"] = f["sha256"]
        doc = {"updates": [{"id": "cold-1", "title": "cold", "files": [entry]}]}
        load.http("POST", f"http://127.0.0.1:{admin}/api/v1/catalog", json.dumps(doc).encode())
        load.http("POST", f"http://127.0.0.1:{admin}/api/v1/updates/cold-1/approve")
        perf = None
        if perf_out:
            perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-p", str(proc.pid), "-o", perf_out],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        cpu0 = load.cpu_seconds([proc.pid])
        took, n = timed_get(f"http://127.0.0.1:{content}" + load.content_path(f))
        cpu = load.cpu_seconds([proc.pid]) - cpu0
        if perf:
            perf.send_signal(2)
            perf.wait()
        assert n == f["size"], n
        return took, cpu
    finally:
        proc.terminate()
        proc.wait()


def row(label, times, cpus, mb):
    best = min(times)
    return (f"| {label} | {best:.2f} | {', '.join(f'{x:.2f}' for x in times)} | {mb * 1.048576 / best:.0f} "
            f"| {cpus[times.index(best)]:.2f} |\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(load.ROOT, "benches/load/results"))
    ap.add_argument("--profile", action="store_true",
                    help="perf record upcache during the last round's downloads; "
                         "text summaries go beside the results")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="upcache-cold-")
    files_dir = os.path.join(work, "www/files")
    os.makedirs(files_dir)
    f = load.make_file(files_dir, 5600000, a.mb << 20)
    nginx_port, h2port = load.free_port(), load.free_port()
    with open(os.path.join(work, "nginx.conf"), "w") as c:
        c.write(load.NGINX_CONF.format(work=work, port=nginx_port, h2port=h2port, rate="0"))
    nginx = subprocess.Popen(["nginx", "-c", os.path.join(work, "nginx.conf"), "-p", work])
    direct = []
    through = {False: ([], []), True: ([], [])}
    try:
        time.sleep(0.5)
        upstream = f"http://127.0.0.1:{nginx_port}/files/{f['name']}"
        timed_get(upstream)  # into the page cache
        for r in range(a.rounds):
            direct.append(timed_get(upstream)[0])
            for declare_sha256 in (False, True):
                profile = a.profile and r == a.rounds - 1
                took, cpu = through_upcache(work, f, upstream, declare_sha256,
                                            os.path.join(work, "perf.data") if profile else None)
                if profile:
                    summarize_profile(work, a, declare_sha256)
                through[declare_sha256][0].append(took)
                through[declare_sha256][1].append(cpu)
    finally:
        nginx.terminate()
        nginx.wait()
    best_direct = min(direct)
    table = (f"one client, a cold {a.mb} MiB file, best of {a.rounds} (upcache on an empty store each run)\n\n"
             "| | seconds (best) | all rounds | MB/s | upcache CPU-s (user + system, both cores) |\n"
             "|---|---|---|---|---|\n"
             f"| straight from the upstream (nginx) | {best_direct:.2f} | {', '.join(f'{x:.2f}' for x in direct)} "
             f"| {a.mb * 1.048576 / best_direct:.0f} | |\n"
             + row("through upcache, catalog gives SHA-1 (SHA-1 and SHA-256 computed)", *through[False], a.mb)
             + row("through upcache, catalog gives SHA-256 too (SHA-256 alone)", *through[True], a.mb)
             + "\n| upstream time / upcache time | SHA-1 only | with SHA-256 | target |\n|---|---|---|---|\n"
             f"| | **{best_direct / min(through[False][0]):.2f}×** | **{best_direct / min(through[True][0]):.2f}×** "
             "| ≥ 0.6× |\n")
    print(table)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"cold-{time.strftime('%Y%m%d-%H%M%S')}.md")
    with open(path, "w") as out:
        out.write(table)
    print(f"written to {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
