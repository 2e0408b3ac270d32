#!/usr/bin/env python3
"""Delivery Optimization, side by side with lancache (issue 27).

One origin, two caches in front of it, the same DO-like clients:

- the origin: nginx serving the object as a static file on
  127.0.27.1:80 (an IP-literal origin, as DO now names them), every
  response logged with its body bytes;
- lancache: nginx as lancache configures it (lancachenet/monolithic):
  `slice 1m`, `proxy_cache_key $uri$slice_range` (the query, DO's token,
  ignored), `proxy_cache_lock on` with lancache's lock age and timeout,
  `aio threads`, `sendfile`, `tcp_nopush`; keep-alive to the origin;
- upcache, with `do_origin_networks = ["127.0.27.1/32"]` so that the
  loopback origin is allowed.

Each round, for each server in turn (the order alternates from round to
round): the server starts on an empty cache; 50 clients (each its own
connection and token) fetch every 1 MiB range of a 256 MiB object in their
own shuffled order (`do_ranges cold`); then the same clients ask for the
same ranges again for a fixed time (`do_ranges warm`). Reported per round:
the bytes and requests the origin served, the time until every client had
its last byte, the CPU the cold run took (the server's, and the whole
machine's), warm requests a second, and the CPU per warm request. The
report names the kernel's TCP congestion control, which moves every
figure (benches/README.md).

    benches/load/do.sh [--rounds 3] [--clients 50] [--mib 256] [--warm-secs 10] [--pin]
"""
import argparse
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as load  # noqa: E402

ORIGIN = "127.0.27.1"
GUID = "a5e9d3c2-6b7f-4e21-9c3d-2f1e0b7a9d64"
PATH = f"/filestreamingservice/files/{GUID}"

ORIGIN_CONF = """
user root;
worker_processes auto;
daemon off;
pid {work}/origin.pid;
error_log {work}/origin-error.log warn;
events {{ worker_connections 8192; }}
http {{
    log_format bytes '$body_bytes_sent $status "$request"';
    access_log {work}/origin-access.log bytes;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    server {{
        listen {origin}:80 backlog=4096;
        # 0: unlimited; else bytes a second per response (a CDN's per-flow pace).
        limit_rate {rate};
        location /filestreamingservice/files/ {{ alias {work}/origin/; }}
    }}
}}
"""

# lancache's settings (overlay/etc/nginx: nginx.conf, conf.d/20_proxy_cache_path.conf,
# sites-available/cache.conf.d/10_root.conf and root/*.conf), with the key.
LANCACHE_CONF = """
user root;
worker_processes auto;
daemon off;
pid {work}/lancache.pid;
error_log {work}/lancache-error.log warn;
events {{ worker_connections 8192; multi_accept on; use epoll; }}
http {{
    aio threads;
    sendfile on;
    tcp_nopush {nopush};
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    access_log {work}/lancache-access.log;
    proxy_cache_path {work}/lancache-cache levels=2:2 keys_zone=generic:64m inactive=200d max_size=100g
                     loader_files=1000 loader_sleep=50ms loader_threshold=300ms use_temp_path=off;
    upstream origin {{ server {origin}:80; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            slice 1m;
            proxy_cache generic;
            proxy_ignore_headers Expires Cache-Control;
            proxy_cache_valid 200 206 3650d;
            proxy_cache_lock on;
            proxy_cache_lock_age 2m;
            proxy_cache_lock_timeout 1h;
            proxy_cache_use_stale error timeout invalid_header updating http_500 http_502 http_503 http_504;
            proxy_cache_revalidate on;
            proxy_max_temp_file_size 40960m;
            proxy_cache_key $uri$slice_range;
            proxy_set_header Range $slice_range;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ignore_client_abort on;
            proxy_pass http://origin$uri$is_args$args;
        }}
    }}
}}
"""


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def origin_tally(log, since):
    """(body bytes, responses) the origin logged after byte `since` of its log."""
    with open(log) as f:
        f.seek(since)
        lines = f.read().splitlines()
    return sum(int(l.split()[0]) for l in lines), len(lines)


# `--pin`: the caches on core 1, the origin and the clients on core 0.
PIN_LOAD = []
PIN_SERVER = []


def tool(*args):
    out = subprocess.run(PIN_LOAD + [os.path.join(load.ROOT, "target/release/examples/do_ranges"), *map(str, args)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else None


class Server:
    """One cache under test, started on an empty cache for each round."""

    def __init__(self, name, work, a):
        self.name, self.work, self.a = name, work, a
        self.port = load.free_port()
        self.proc = None

    def start(self):
        if self.name == "lancache":
            cache = os.path.join(self.work, "lancache-cache")
            shutil.rmtree(cache, ignore_errors=True)
            conf = os.path.join(self.work, "lancache.conf")
            with open(conf, "w") as f:
                f.write(LANCACHE_CONF.format(work=self.work, port=self.port, origin=ORIGIN,
                                             nopush=self.a.nginx_nopush))
            self.proc = subprocess.Popen(PIN_SERVER + ["nginx", "-c", conf, "-p", self.work])
            wait_port(self.port)
            time.sleep(0.3)  # the workers, after the master's listen
            self.pids = load.server_pids(self.proc)
        else:
            data = os.path.join(self.work, "data")
            shutil.rmtree(data, ignore_errors=True)
            conf = os.path.join(self.work, "upcache.toml")
            with open(conf, "w") as f:
                f.write(f'do_origin_networks = ["{ORIGIN}/32"]\n')
                # nginx logs every request too: like for like.
                f.write(f'access_log = "{os.path.join(self.work, "upcache-access.log")}"\n')
            self.admin = load.free_port()
            self.proc = subprocess.Popen(
                PIN_SERVER + [os.path.join(load.ROOT, "target/release/upcache"), "serve", "--config", conf, "--data-dir", data,
                 "--listen", f"127.0.0.1:{self.port}", "--admin-listen", f"127.0.0.1:{self.admin}"],
                env={**os.environ, "RUST_LOG": "upcache=warn", "UPCACHE_MAX_CONNECTIONS_PER_IP": "1000000"},
                stdout=subprocess.DEVNULL)
            wait_port(self.port)
            self.pids = [self.proc.pid]

    def stop(self):
        self.proc.terminate()
        self.proc.wait()

    def status(self):
        if self.name != "upcache":
            return None
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/api/v1/status", timeout=10) as r:
            return json.loads(r.read()).get("delivery")


def one_round(server, a, work):
    origin_log = os.path.join(work, "origin-access.log")
    server.start()
    try:
        since = os.path.getsize(origin_log)
        target = (f"127.0.0.1:{server.port}", PATH, ORIGIN, a.clients, a.mib)
        cold_cpu0, cold_busy0 = load.cpu_seconds(server.pids), load.machine_busy_seconds()
        cold = tool("cold", *target)
        cold_cpu = load.cpu_seconds(server.pids) - cold_cpu0
        cold_busy = load.machine_busy_seconds() - cold_busy0
        origin_bytes, origin_requests = origin_tally(origin_log, since)
        cpu0, busy0 = load.cpu_seconds(server.pids), load.machine_busy_seconds()
        warm = tool("warm", *target, a.warm_secs)
        cpu = load.cpu_seconds(server.pids) - cpu0
        busy = load.machine_busy_seconds() - busy0
        warm_origin_bytes, _ = origin_tally(origin_log, since)
        return {
            "ttlb_s": cold["ttlb_s"],
            "clients_s_median": cold["clients_s"][len(cold["clients_s"]) // 2],
            "cold_cpu_s": cold_cpu, "cold_machine_s": cold_busy,
            "cold_retries": cold["retries"], "cold_bad": cold["bad"],
            "origin_bytes": origin_bytes, "origin_requests": origin_requests,
            "origin_bytes_after_warm": warm_origin_bytes,
            "warm_rps": warm["rps"], "warm_retries": warm["retries"], "warm_bad": warm["bad"],
            "warm_cpu_us": cpu / max(warm["requests"], 1) * 1e6,
            "warm_machine_us": busy / max(warm["requests"], 1) * 1e6,
            "status": server.status(),
        }
    finally:
        server.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--warm-secs", type=float, default=10)
    ap.add_argument("--nginx-nopush", default="on", choices=["on", "off"],
                    help="lancache's tcp_nopush (on); off measured faster for small ranges in run.py")
    ap.add_argument("--origin-rate", default="0",
                    help="nginx limit_rate of each origin response (e.g. 20m); 0: unlimited")
    ap.add_argument("--only", choices=["lancache", "upcache"], help="one server (for profiling)")
    ap.add_argument("--out", default=os.path.join(load.ROOT, "benches/load/results"))
    ap.add_argument("--pin", action="store_true",
                    help="the cache on core 1, the origin and clients on core 0 (taskset): "
                         "each cache gets one core of its own instead of sharing both with the load")
    a = ap.parse_args()
    if a.pin:
        PIN_LOAD[:] = ["taskset", "-c", "0"]
        PIN_SERVER[:] = ["taskset", "-c", "1"]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work = tempfile.mkdtemp(prefix="upcache-do-")
    os.makedirs(os.path.join(work, "origin"))
    tool("make", os.path.join(work, "origin", GUID), a.mib)
    with open(os.path.join(work, "origin.conf"), "w") as f:
        f.write(ORIGIN_CONF.format(work=work, origin=ORIGIN, rate=a.origin_rate))
    open(os.path.join(work, "origin-access.log"), "w").close()
    origin = subprocess.Popen(PIN_LOAD + ["nginx", "-c", os.path.join(work, "origin.conf"), "-p", work])
    names = [a.only] if a.only else ["lancache", "upcache"]
    servers = {n: Server(n, work, a) for n in names}
    rounds = []
    try:
        time.sleep(0.5)
        if origin.poll() is not None:
            raise RuntimeError(f"the origin did not start on {ORIGIN}:80 (see {work}/origin-error.log)")
        # The object in the page cache, as a busy origin would have it.
        with open(os.path.join(work, "origin", GUID), "rb") as f:
            while f.read(8 << 20):
                pass
        for r in range(a.rounds):
            order = names if r % 2 == 0 else names[::-1]
            row = {}
            for n in order:
                print(f"round {r + 1}: {n} ...", flush=True)
                row[n] = one_round(servers[n], a, work)
                print(f"  {json.dumps(row[n])}", flush=True)
            rounds.append(row)
    finally:
        origin.terminate()
        origin.wait()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    os.makedirs(a.out, exist_ok=True)
    facts = {"clients": a.clients, "mib": a.mib, "warm_secs": a.warm_secs, "nginx_nopush": a.nginx_nopush,
             "origin_rate": a.origin_rate, "pinned": a.pin, "congestion_control": congestion_control(),
             "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
             "kernel": platform.release(), "rounds": rounds}
    with open(os.path.join(a.out, f"do-{stamp}.json"), "w") as f:
        json.dump(facts, f, indent=1)
    lines = report(rounds, a)
    with open(os.path.join(a.out, f"do-{stamp}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


def congestion_control():
    """The kernel's TCP congestion control: BBR paces every flow with
    timers, which on loopback costs nginx far more than upcache (see
    benches/README.md), so each report names it."""
    try:
        with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def report(rounds, a):
    pinned = "cache on core 1, origin and clients on core 0" if a.pin else "all on both cores"
    lines = [f"DO side by side: {a.clients} clients × {a.mib} MiB object, shuffled 1 MiB ranges, "
             f"warm {a.warm_secs:g} s; lancache tcp_nopush {a.nginx_nopush}; origin limit_rate {a.origin_rate}; "
             f"TCP {congestion_control()}; {pinned}", "",
             "| round | server | origin MiB (requests) | time to last byte, s (median client) "
             "| cold CPU s (server; machine) | warm req/s "
             "| warm CPU µs/req (server; machine) | retries cold/warm |",
             "|---|---|---|---|---|---|---|---|"]
    for i, row in enumerate(rounds):
        for n, r in row.items():
            lines.append(f"| {i + 1} | {n} | {r['origin_bytes'] / (1 << 20):.1f} ({r['origin_requests']}) "
                         f"| {r['ttlb_s']:.2f} ({r['clients_s_median']:.2f}) "
                         f"| {r['cold_cpu_s']:.2f}; {r['cold_machine_s']:.2f} | {r['warm_rps']:.0f} "
                         f"| {r['warm_cpu_us']:.0f}; {r['warm_machine_us']:.0f} "
                         f"| {r['cold_retries']}/{r['warm_retries']} |")
    if all("lancache" in row and "upcache" in row for row in rounds):
        lines.append("")
        lines.append("| round | TTLB lancache / upcache | warm req/s upcache / lancache | origin bytes upcache / lancache |")
        lines.append("|---|---|---|---|")
        for i, row in enumerate(rounds):
            l, u = row["lancache"], row["upcache"]
            lines.append(f"| {i + 1} | {l['ttlb_s'] / u['ttlb_s']:.2f}× | {u['warm_rps'] / l['warm_rps']:.2f}× "
                         f"| {u['origin_bytes'] / max(l['origin_bytes'], 1):.2f} |")
    return lines


if __name__ == "__main__":
    main()
