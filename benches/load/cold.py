#!/usr/bin/env python3
"""One client, one cold file: the time to download it through upcache (which
hashes it with SHA-1 and SHA-256, writes it to the store and commits it)
against the time straight from the upstream (nginx, sendfile, no limit).

    benches/load/cold.py [--mb 512] [--rounds 3]

Each round starts upcache on an empty data directory; the upstream's file
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


def summarize_profile(work, a):
    path = load.write_profile(work, a.out, "perf-cold",
                              f"perf record -F 999 -g on upcache during one cold {a.mb} MiB download "
                              "(one client); self time by thread, DSO and symbol", sort="comm,dso,symbol")
    print(f"profile: {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(load.ROOT, "benches/load/results"))
    ap.add_argument("--profile", action="store_true",
                    help="perf record upcache during the last round's download; a text summary goes beside the results")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="upcache-cold-")
    files_dir = os.path.join(work, "www/files")
    os.makedirs(files_dir)
    f = load.make_file(files_dir, 5600000, a.mb << 20)
    nginx_port, h2port = load.free_port(), load.free_port()
    with open(os.path.join(work, "nginx.conf"), "w") as c:
        c.write(load.NGINX_CONF.format(work=work, port=nginx_port, h2port=h2port, rate="0"))
    nginx = subprocess.Popen(["nginx", "-c", os.path.join(work, "nginx.conf"), "-p", work])
    direct, through, cpu = [], [], []
    try:
        time.sleep(0.5)
        upstream = f"http://127.0.0.1:{nginx_port}/files/{f['name']}"
        timed_get(upstream)  # into the page cache
        for _ in range(a.rounds):
            direct.append(timed_get(upstream)[0])
            content, admin = load.free_port(), load.free_port()
            data = os.path.join(work, "data")
            shutil.rmtree(data, ignore_errors=True)
            proc = subprocess.Popen(
                [os.path.join(load.ROOT, "target/release/upcache"), "serve", "--data-dir", data,
                 "--listen", f"127.0.0.1:{content}", "--admin-listen", f"127.0.0.1:{admin}"],
                env={**os.environ, "RUST_LOG": "upcache=warn"}, stdout=subprocess.DEVNULL)
            try:
                for _ in range(100):
                    try:
                        load.http("GET", f"http://127.0.0.1:{admin}/healthz")
                        break
                    except OSError:
                        time.sleep(0.05)
                doc = {"updates": [{"id": "cold-1", "title": "cold", "files": [
                    {"name": f["name"], "sha1": f["sha1"], "size": f["size"], "url": upstream}]}]}
                load.http("POST", f"http://127.0.0.1:{admin}/api/v1/catalog", json.dumps(doc).encode())
                load.http("POST", f"http://127.0.0.1:{admin}/api/v1/updates/cold-1/approve")
                perf = None
                if a.profile and len(through) == a.rounds - 1:
                    perf = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-p", str(proc.pid), "-o",
                                             os.path.join(work, "perf.data")],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(0.5)
                cpu0 = load.cpu_seconds([proc.pid])
                took, n = timed_get(f"http://127.0.0.1:{content}" + load.content_path(f))
                cpu.append(load.cpu_seconds([proc.pid]) - cpu0)
                if perf:
                    perf.send_signal(2)
                    perf.wait()
                    summarize_profile(work, a)
                assert n == f["size"], n
                through.append(took)
            finally:
                proc.terminate()
                proc.wait()
    finally:
        nginx.terminate()
        nginx.wait()
    best_direct, best_through = min(direct), min(through)
    table = (f"one client, a cold {a.mb} MiB file, best of {a.rounds} (upcache on an empty store each round)\n\n"
             "| | seconds (best) | all rounds | MB/s |\n|---|---|---|---|\n"
             f"| straight from the upstream (nginx) | {best_direct:.2f} | {', '.join(f'{x:.2f}' for x in direct)} | {a.mb * 1.048576 / best_direct:.0f} |\n"
             f"| through upcache (hash, store, commit) | {best_through:.2f} | {', '.join(f'{x:.2f}' for x in through)} | {a.mb * 1.048576 / best_through:.0f} |\n"
             f"| upcache's CPU during the download (user + system, both cores) | {cpu[through.index(best_through)]:.2f} | {', '.join(f'{x:.2f}' for x in cpu)} | |\n"
             f"| upstream time / upcache time | **{best_direct / best_through:.2f}×** | | target ≥ 0.6× |\n")
    print(table)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"cold-{time.strftime('%Y%m%d-%H%M%S')}.md")
    with open(path, "w") as out:
        out.write(table)
    print(f"written to {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
