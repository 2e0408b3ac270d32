#!/usr/bin/env python3
"""The access log's cost on the ranges benchmark: the same upcache, the same
warm files and the same wrk load (64 KiB random ranges), with the access log
off and on (each format), runs alternating, best of --rounds each.

    benches/load/access_log.py [--rounds 3] [--duration 8]

Needs nginx (the upstream the files are fetched from once) and wrk, like
run.py, whose helpers it uses. Writes its table beside run.py's results.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as load  # noqa: E402


def start_upcache(work, content_port, admin_port, log_setting):
    config = os.path.join(work, "upcache.toml")
    with open(config, "w") as f:
        f.write(log_setting)
    proc = subprocess.Popen(
        [os.path.join(load.ROOT, "target/release/upcache"), "serve", "--config", config,
         "--data-dir", os.path.join(work, "data"),
         "--listen", f"127.0.0.1:{content_port}", "--admin-listen", f"127.0.0.1:{admin_port}"],
        env={**os.environ, "RUST_LOG": "upcache=warn",
             # every load client is on loopback: lift the per-address cap
             "UPCACHE_MAX_CONNECTIONS_PER_IP": "1000000"}, stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            load.http("GET", f"http://127.0.0.1:{admin_port}/healthz")
            return proc
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("upcache did not start")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--out", default=os.path.join(load.ROOT, "benches/load/results"))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="upcache-accesslog-")
    files_dir = os.path.join(work, "www/files")
    os.makedirs(files_dir)
    files = [load.make_file(files_dir, 5500000 + i, a.mb << 20) for i in range(a.files)]
    nginx_port, h2port, content_port, admin_port = (load.free_port() for _ in range(4))
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(load.NGINX_CONF.format(work=work, port=nginx_port, h2port=h2port, rate="0"))
    nginx = subprocess.Popen(["nginx", "-c", os.path.join(work, "nginx.conf"), "-p", work])
    log_path = os.path.join(work, "upcache-access.log")
    variants = {
        "off": "",
        "combined": f'access_log = "{log_path}"\naccess_log_format = "combined"\n',
        "json": f'access_log = "{log_path}"\naccess_log_format = "json"\n',
    }
    runs = {name: [] for name in variants}
    try:
        time.sleep(0.5)
        up = f"http://127.0.0.1:{nginx_port}"
        admin = f"http://127.0.0.1:{admin_port}"
        content = f"http://127.0.0.1:{content_port}"
        proc = start_upcache(work, content_port, admin_port, "")
        updates = [{"id": f"log-{i}", "title": f["name"], "files": [
            {**{k: f[k] for k in ("name", "sha1", "size")}, "url": f"{up}/files/{f['name']}"}]}
            for i, f in enumerate(files)]
        load.http("POST", f"{admin}/api/v1/catalog", json.dumps({"updates": updates}).encode())
        for u in updates:
            load.http("POST", f"{admin}/api/v1/updates/{u['id']}/approve")
        for f in files:
            load.http("GET", content + load.content_path(f))
        proc.terminate()
        proc.wait()
        paths = load.write_paths(work, "ranges", files, load.content_path)
        for round_ in range(a.rounds):
            for name, setting in variants.items():
                proc = start_upcache(work, content_port, admin_port, setting)
                r = load.wrk(content + "/", paths, 64 * 1024, a.connections, a.duration, work, f"r-{name}")
                proc.terminate()
                proc.wait()
                runs[name].append(r.get("rps", 0))
                print(f"round {round_ + 1}: {name}: {r.get('rps', 0):.0f} req/s", flush=True)
        lines = open(log_path).read().count("\n") if os.path.exists(log_path) else 0
    finally:
        nginx.terminate()
        nginx.wait()
    best = {name: max(r) for name, r in runs.items()}
    median = {name: sorted(r)[len(r) // 2] for name, r in runs.items()}
    rows = ["| access log | best req/s | cost (best) | median req/s | cost (median) |", "|---|---|---|---|---|"]
    for name in variants:
        cost = lambda table: "" if name == "off" else f"{(1 - table[name] / table['off']) * 100:+.1f} %"
        rows.append(f"| {name} | {best[name]:.0f} | {cost(best)} | {median[name]:.0f} | {cost(median)} |")
    table = (f"64 KiB random ranges, {a.connections} connections, wrk -t2, {a.duration} s runs, "
             f"best of {a.rounds} alternating rounds; {lines} lines logged\n\n" + "\n".join(rows))
    print("\n" + table)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"access-log-{time.strftime('%Y%m%d-%H%M%S')}.md")
    with open(path, "w") as f:
        f.write(table + "\n")
    print(f"\nwritten to {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
