#!/usr/bin/env python3
"""Load benchmark: upcache and nginx serving the same files, same machine, same run.

nginx plays two parts: the upstream upcache fetches from (cold start, through a
rate-limited location), and the reference server (sendfile on) that the warm
numbers are compared with. Everything listens on 127.0.0.1 and every load run
is bounded in time. Prints a table of upcache/nginx ratios and writes it as
JSON and markdown. See benches/load/run.sh for the one-command entry point.
"""
import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_file(directory, kb, size):
    """Random bytes; returns the catalog facts."""
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()
    tmp = os.path.join(directory, f"tmp-{kb}")
    with open(tmp, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            sha1.update(chunk)
            sha256.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    name = f"windows10.0-kb{kb}-x64_{sha1.hexdigest()}.cab"
    os.rename(tmp, os.path.join(directory, name))
    return {"name": name, "sha1": sha1.hexdigest(), "sha256": sha256.hexdigest(), "size": size}


def self_signed_certificate(work):
    """cert.pem and key.pem in `work`, for both servers' HTTPS listeners
    (CA:FALSE: rustls refuses a CA certificate as a server's)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-addext", "basicConstraints=critical,CA:FALSE",
                    "-keyout", os.path.join(work, "key.pem"), "-out", os.path.join(work, "cert.pem")],
                   check=True, capture_output=True)


def content_path(f):
    sha1 = f["sha1"]
    return f"/Content/{sha1[-2:].upper()}/{sha1.upper()}.cab"


def http(method, url, body=None):
    req = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return r.read()


NGINX_CONF = """
user root;
worker_processes auto;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log {work}/access.log;
    sendfile on;
    # tcp_nopush (TCP_CORK) costs nginx ~40 ms per 64 KiB range response here
    # (delayed-ACK interplay: 1.7k vs 37k req/s); off is nginx at its best.
    tcp_nopush off;
    tcp_nodelay on;
    # Descriptors kept open across requests, as upcache keeps its own.
    open_file_cache max=10000 inactive=60s;
    open_file_cache_valid 60s;
    keepalive_requests 1000000;
    keepalive_timeout 60;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {work}/www;
        location /files/ {{ }}
        location /slow/ {{ alias {work}/www/files/; limit_rate {rate}; }}
    }}
    server {{
        # HTTPS (OpenSSL; no kTLS here, so no sendfile under TLS either).
        listen 127.0.0.1:{tlsport} ssl backlog=4096;
        ssl_certificate {work}/cert.pem;
        ssl_certificate_key {work}/key.pem;
        root {work}/www;
        location /files/ {{ }}
    }}
    server {{
        # Cleartext HTTP/2 (prior knowledge), for the h2load row.
        listen 127.0.0.1:{h2port} http2 backlog=4096;
        root {work}/www;
        location /files/ {{ }}
    }}
}}
"""

RANGE_LUA = """
local paths, sizes = {}, {}
for line in io.lines("%s") do
  local p, s = line:match("(%%S+) (%%d+)")
  paths[#paths + 1] = p; sizes[#sizes + 1] = tonumber(s)
end
math.randomseed(os.time())
local span = %d
request = function()
  local i = math.random(#paths)
  local path, size = paths[i], sizes[i]
  if span > 0 then
    local start = math.random(0, size - span)
    return wrk.format("GET", path, {["Range"] = "bytes=" .. start .. "-" .. (start + span - 1)})
  end
  return wrk.format("GET", path)
end
"""


def wrk(url, lua_paths, span, connections, duration, work, tag):
    script = os.path.join(work, f"{tag}.lua")
    with open(script, "w") as f:
        f.write(RANGE_LUA % (lua_paths, span))
    threads = min(2, connections)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", script, url],
        capture_output=True, text=True, check=True).stdout
    result = {"raw": out}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(parts[1])
        elif line.startswith("Transfer/sec:"):
            result["mbps"] = to_mb(parts[1])
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            result["p" + parts[0][:-1]] = to_ms(parts[1])
        elif "Non-2xx" in line:
            result["errors"] = int(parts[-1])
    return result


def cpu_seconds(pids):
    """User + system CPU time the processes (all their threads) have used."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except FileNotFoundError:
            pass
    return total


def machine_busy_seconds():
    """CPU time every core has spent busy (user, nice, system, irq, softirq;
    not idle, iowait or steal), from /proc/stat: the server, the load tool
    and the kernel's TCP work between them, wherever it was charged."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def server_pids(proc):
    """The processes that serve: nginx's workers (children of the master), or upcache itself."""
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in children] or [proc.pid]


def keep_best(results, server, run, key):
    """Keeps the best of a server's rounds by `key`, and every round's figure."""
    best = results.get(server)
    rounds = (best or {}).get("rounds", []) + [run.get(key, 0)]
    if best is None or run.get(key, 0) > best.get(key, 0):
        best = run
    results[server] = {**best, "rounds": rounds}


def h2load(urls, span, connections, streams, duration, work, tag):
    """HTTP/2 cleartext (prior knowledge) load with a fixed 64 KiB range:
    h2load cannot vary a header per request, and a warm file makes the
    offset irrelevant."""
    uri_file = os.path.join(work, f"h2-{tag}.uris")
    with open(uri_file, "w") as f:
        f.write("\n".join(urls) + "\n")
    out = subprocess.run(
        ["h2load", "-t", "2", "-c", str(connections), "-m", str(streams), "-D", str(duration),
         "-H", f"range: bytes=1048576-{1048576 + span - 1}", "-i", uri_file],
        capture_output=True, text=True, check=True).stdout
    result = {"raw": out}
    for line in out.splitlines():
        if line.startswith("finished in"):
            result["rps"] = float(line.split(",")[1].split()[0])
        elif line.startswith("status codes:"):
            result["status"] = line.split(":", 1)[1].strip()
    return result


def start_profile(pid, work, duration):
    """perf record (software clock: no hardware counters needed) on upcache
    for most of a run."""
    return subprocess.Popen(["perf", "record", "-F", "499", "-g", "-p", str(pid), "-o",
                             os.path.join(work, "perf.data"), "--", "sleep", str(max(1, duration - 2))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish_profile(perf, work, a):
    """The profile as text: top symbols by self time, with their DSO."""
    perf.wait()
    path = write_profile(work, a.out, f"perf-ranges-{'hyper' if a.no_fast_path else 'fastpath'}",
                         f"perf record -F 499 -g on upcache (fast_path = {not a.no_fast_path}) under wrk, "
                         f"64 KiB ranges, {a.connections} connections; self time by DSO and symbol")
    return {"summary": path}


def write_profile(work, out, name, title, sort="dso,symbol"):
    """`perf report` of work/perf.data as a text summary in out/name-<stamp>.txt."""
    report = subprocess.run(["perf", "report", "-i", os.path.join(work, "perf.data"), "--stdio",
                             "--no-children", "--sort", sort, "--percent-limit", "0.7", "-g", "none"],
                            capture_output=True, text=True).stdout
    lines = [l for l in report.splitlines() if l.strip() and not l.startswith("#")]
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.txt")
    with open(path, "w") as f:
        f.write(title + "\n\n")
        f.write("\n".join(lines[:60]) + "\n")
    return path


def to_mb(s):
    units = {"B": 1e-6, "KB": 1e-3 * 1.024, "MB": 1.048576, "GB": 1073.741824}
    for u in ("GB", "MB", "KB", "B"):
        if s.endswith(u):
            return float(s[:-len(u)]) * units[u]
    return float(s)


def to_ms(s):
    for u, k in (("us", 1e-3), ("ms", 1.0), ("s", 1000.0)):
        if s.endswith(u):
            return float(s[:-len(u)]) * k
    return float(s)


def write_paths(work, tag, files, path_of):
    p = os.path.join(work, f"{tag}.paths")
    with open(p, "w") as f:
        for x in files:
            f.write(f"{path_of(x)} {x['size']}\n")
    return p


def ttfb_tool(port, path, clients):
    """Each client's time to first body byte (seconds), all asking at once,
    measured by the Rust tool beside this script; and whether its body was whole."""
    tool = os.path.join(ROOT, "target/release/examples/ttfb")
    out = json.loads(subprocess.run([tool, f"127.0.0.1:{port}", path, str(clients)],
                                    capture_output=True, text=True, check=True).stdout)
    ok = out["whole"] == clients
    return [(t / 1e3, ok) for t in out["ttfb_ms"]]


def cold_burst(cold, nginx_port, content_port, work, clients):
    """One round of the cold-start test on a file upcache has not fetched:
    a lone request to the upstream, the burst straight at the upstream, then
    the burst through upcache (timed by the same tool), and how many requests
    the upstream saw from upcache."""
    print(f"cold start ({cold['name'][:20]}...) ...", flush=True)
    upstream_ttfb = ttfb_tool(nginx_port, f"/slow/{cold['name']}", 1)[0][0]
    # What the clients on these two cores see from a server that need not fetch.
    direct = sorted(t for t, _ in ttfb_tool(nginx_port, f"/slow/{cold['name']}", clients))

    def upstream_log_lines():
        with open(os.path.join(work, "access.log")) as log:
            return sum(1 for line in log if f"/slow/{cold['name']}" in line)
    before = upstream_log_lines()
    times = ttfb_tool(content_port, content_path(cold), clients)
    ttfbs = sorted(t for t, _ in times)
    return {
        "upstream_requests": upstream_log_lines() - before,
        "all_bodies_whole": all(ok for _, ok in times),
        "upstream_ttfb_ms": upstream_ttfb * 1e3,
        "upstream_burst_ttfb_ms_p50": direct[len(direct) // 2] * 1e3,
        "upstream_burst_ttfb_ms_max": direct[-1] * 1e3,
        "client_ttfb_ms_p50": ttfbs[len(ttfbs) // 2] * 1e3,
        "client_ttfb_ms_max": ttfbs[-1] * 1e3,
    }


def sample_rss(pid, stop, peaks, once=False):
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("VmRSS", "RssAnon", "RssFile"):
                        peaks[k] = max(peaks.get(k, 0), int(v.split()[0]) // 1024)
        except FileNotFoundError:
            return
        if once:
            return
        time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--large-count", type=int, default=4)
    ap.add_argument("--large-mb", type=int, default=256)
    ap.add_argument("--small-count", type=int, default=1000)
    ap.add_argument("--small-kb", type=int, default=1024)
    ap.add_argument("--duration", type=int, default=10, help="seconds per load run")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per workload; the best of each server is reported")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--cold-clients", type=int, default=100)
    ap.add_argument("--cold-mb", type=int, default=64)
    ap.add_argument("--cold-rate", default="20m", help="nginx limit_rate of the upstream for the cold test")
    ap.add_argument("--rss-connections", type=int, default=1000)
    ap.add_argument("--rss-mb", type=int, default=1024)
    ap.add_argument("--out", default=os.path.join(ROOT, "benches/load/results"))
    ap.add_argument("--h2-streams", type=int, default=10, help="concurrent streams per h2 connection")
    ap.add_argument("--no-fast-path", action="store_true", help="run upcache with fast_path = false (hyper for everything)")
    ap.add_argument("--profile", action="store_true",
                    help="perf record upcache during its ranges run; a text summary goes beside the results")
    a = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work = tempfile.mkdtemp(prefix="upcache-load-")
    files_dir = os.path.join(work, "www/files")
    os.makedirs(files_dir)
    print(f"generating files in {work} ...", flush=True)
    large = [make_file(files_dir, 5100000 + i, a.large_mb << 20) for i in range(a.large_count)]
    small = [make_file(files_dir, 5200000 + i, a.small_kb << 10) for i in range(a.small_count)]
    # One cold file per round: a burst is cold only once.
    colds = [make_file(files_dir, 5300000 + i, a.cold_mb << 20) for i in range(a.rounds)]
    huge = make_file(files_dir, 5400000, a.rss_mb << 20)

    nginx_port, content_port, admin_port = free_port(), free_port(), free_port()
    nginx_h2_port = free_port()
    nginx_tls_port, content_tls_port = free_port(), free_port()
    self_signed_certificate(work)
    with open(os.path.join(work, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(work=work, port=nginx_port, h2port=nginx_h2_port, tlsport=nginx_tls_port,
                                  rate=a.cold_rate))
    upcache_config = os.path.join(work, "upcache.toml")
    with open(upcache_config, "w") as f:
        f.write(f"fast_path = {'false' if a.no_fast_path else 'true'}\n")
        # nginx logs every request here too: like for like.
        f.write(f"access_log = \"{os.path.join(work, 'upcache-access.log')}\"\n")
        f.write(f"listen_tls = \"127.0.0.1:{content_tls_port}\"\n")
        f.write(f"tls_cert = \"{work}/cert.pem\"\ntls_key = \"{work}/key.pem\"\n")
    nginx = subprocess.Popen(["nginx", "-c", os.path.join(work, "nginx.conf"), "-p", work])
    upcache_bin = os.path.join(ROOT, "target/release/upcache")
    upcache = subprocess.Popen(
        [upcache_bin, "serve", "--config", upcache_config, "--data-dir", os.path.join(work, "data"),
         "--listen", f"127.0.0.1:{content_port}", "--admin-listen", f"127.0.0.1:{admin_port}"],
        env={**os.environ, "RUST_LOG": "upcache=warn",
             # every load client is on loopback: lift the per-address cap
             "UPCACHE_MAX_CONNECTIONS_PER_IP": "1000000"}, stdout=subprocess.DEVNULL)
    results = {}
    try:
        time.sleep(1.0)
        admin = f"http://127.0.0.1:{admin_port}"
        up = f"http://127.0.0.1:{nginx_port}"
        updates = []
        for i, f in enumerate(large + small + [huge]):
            updates.append({"id": f"load-{i}", "title": f["name"], "files": [
                {**{k: f[k] for k in ("name", "sha1", "size")}, "url": f"{up}/files/{f['name']}"}]})
        for i, cold in enumerate(colds):
            updates.append({"id": f"load-cold-{i}", "title": "cold", "files": [
                {**{k: cold[k] for k in ("name", "sha1", "size")}, "url": f"{up}/slow/{cold['name']}"}]})
        http("POST", f"{admin}/api/v1/catalog", json.dumps({"updates": updates}).encode())
        for u in updates:
            http("POST", f"{admin}/api/v1/updates/{u['id']}/approve")

        print("warming upcache (first download of every file) ...", flush=True)
        content = f"http://127.0.0.1:{content_port}"
        threads = [threading.Thread(target=http, args=("GET", content + content_path(f))) for f in large + [huge]]
        for t in threads:
            t.start()
        for f in small:
            http("GET", content + content_path(f))
        for t in threads:
            t.join()
        while json.loads(http("GET", f"{admin}/api/v1/status"))["fetches"]:
            time.sleep(0.2)

        nginx_path = lambda f: f"/files/{f['name']}"
        targets = {"nginx": (up, nginx_path), "upcache": (content, content_path)}
        tls_targets = {"nginx": (f"https://127.0.0.1:{nginx_tls_port}", nginx_path),
                       "upcache": (f"https://127.0.0.1:{content_tls_port}", content_path)}
        # Server CPU per request: steadier than req/s on cores shared with wrk.
        pids = {"nginx": server_pids(nginx), "upcache": [upcache.pid]}
        runs = [
            ("ranges_64KiB", large, 64 * 1024, a.connections, targets),
            ("large_whole", large, 0, 4, targets),
            ("small_whole", small, 0, a.connections, targets),
            ("https_ranges_64KiB", large, 64 * 1024, a.connections, tls_targets),
            ("https_small_whole", small, 0, a.connections, tls_targets),
        ]
        for name, files, span, conns, servers in runs:
            key = "mbps" if span == 0 and conns == 4 else "rps"
            for round_ in range(a.rounds):  # alternating: nginx, upcache, nginx, upcache ...
                for server, (base, path_of) in servers.items():
                    print(f"{name}: {server} (round {round_ + 1}) ...", flush=True)
                    paths = write_paths(work, f"{name}-{server}", files, path_of)
                    cpu0, busy0 = cpu_seconds(pids[server]), machine_busy_seconds()
                    run = wrk(base + "/", paths, span, conns, a.duration, work, f"{name}-{server}")
                    served = run.get("rps", 0) * a.duration
                    run["cpu_us_per_request"] = (cpu_seconds(pids[server]) - cpu0) / served * 1e6 if served else 0
                    run["machine_cpu_us_per_request"] = (machine_busy_seconds() - busy0) / served * 1e6 if served else 0
                    keep_best(results.setdefault(name, {}), server, run, key)
        if a.profile:
            # An extra run, not measured: perf itself takes CPU from the server.
            print("profiling upcache under the ranges load ...", flush=True)
            base, path_of = targets["upcache"]
            perf = start_profile(upcache.pid, work, a.duration)
            wrk(base + "/", write_paths(work, "profile", large, path_of), 64 * 1024, a.connections, a.duration, work, "profile")
            results["profile"] = finish_profile(perf, work, a)

        print("h2c ranges (h2load) ...", flush=True)
        span = 64 * 1024
        h2_targets = {"nginx": (f"http://127.0.0.1:{nginx_h2_port}", lambda f: f"/files/{f['name']}"),
                      "upcache": (content, content_path)}
        for _ in range(a.rounds):
            for server, (base, path_of) in h2_targets.items():
                run = h2load([base + path_of(f) for f in large], span, a.connections, a.h2_streams,
                             a.duration, work, server)
                keep_best(results.setdefault("h2_ranges_64KiB", {}), server, run, "rps")

        rounds = [cold_burst(cold, nginx_port, content_port, work, a.cold_clients) for cold in colds]
        best = min(rounds, key=lambda r: r["client_ttfb_ms_max"])
        results["cold_start"] = {
            **best,
            "clients": a.cold_clients,
            # Every round, not just the best, must have cost one upstream request.
            "upstream_requests": max(r["upstream_requests"] for r in rounds),
            "all_bodies_whole": all(r["all_bodies_whole"] for r in rounds),
            "rounds": rounds,
        }

        print(f"RSS with {a.rss_connections} connections downloading a {a.rss_mb} MiB file ...", flush=True)
        # What the process holds before the test: the allocator keeps some of
        # what the earlier workloads (the warm-up's downloads above all) freed.
        before = {}
        sample_rss(upcache.pid, threading.Event(), before, once=True)
        peaks, stop = {}, threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(upcache.pid, stop, peaks))
        sampler.start()
        paths = write_paths(work, "rss", [huge], content_path)
        rss_run = wrk(content + "/", paths, 0, a.rss_connections, a.duration, work, "rss")
        stop.set()
        sampler.join()
        results["rss"] = {"connections": a.rss_connections, "file_mb": a.rss_mb, "peak_rss_mb": peaks.get("VmRSS"),
                          "peak_anon_mb": peaks.get("RssAnon"), "peak_file_mapped_mb": peaks.get("RssFile"),
                          "anon_before_mb": before.get("RssAnon"), "mbps": rss_run.get("mbps")}
    finally:
        upcache.terminate()
        nginx.terminate()
        upcache.wait()
        nginx.wait()

    report(results, a, work)
    shutil.rmtree(work, ignore_errors=True)


def cpu_rows(lines, label, results, name, ratio):
    """CPU per request of the best round: charged to the server's process,
    and busy on the whole machine. On loopback the kernel charges much of
    one side's TCP work to the other (a send runs the receiver's softirq),
    so the process figure alone can mislead; the machine's is what a
    request costs."""
    r = results[name]
    for key, what in (("cpu_us_per_request", "server process"),
                      ("machine_cpu_us_per_request", "whole machine (server, wrk, kernel)")):
        lines.append(f"| {label}: CPU per request (best round), {what}, µs; ratio = nginx / upcache "
                     f"| {r['nginx'].get(key, 0):.1f} | {r['upcache'].get(key, 0):.1f} | {ratio(name, key, False) or 0:.2f}× | |")


def report(results, a, work):
    rows = []

    def cell(run, key):
        """The best figure, and every round's when there were several."""
        rounds = run.get("rounds", [])
        every = f" ({' / '.join(f'{x:.0f}' for x in rounds)})" if len(rounds) > 1 else ""
        return f"{run.get(key, 0):.0f}{every}"

    def ratio(name, key, higher_better=True):
        n, u = results[name]["nginx"].get(key), results[name]["upcache"].get(key)
        if not n or not u:
            return None
        return u / n if higher_better else n / u

    lines = [f"Machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()}; "
             f"wrk, {a.duration} s per run, best of {a.rounds} alternating rounds (all rounds in the JSON); nginx {subprocess.run(['nginx', '-v'], capture_output=True, text=True).stderr.strip().split('/')[-1]} "
             "with sendfile on.", "",
             "| test | nginx | upcache | upcache / nginx | target |", "|---|---|---|---|---|"]
    r = results["ranges_64KiB"]
    lines.append(f"| warm 64 KiB ranges, {a.connections} conns: req/s | {cell(r['nginx'], 'rps')} | {cell(r['upcache'], 'rps')} | {ratio('ranges_64KiB', 'rps'):.2f}× | ≥ 1.25× |")
    lines.append(f"| ranges p50 / p99 latency, ms | {r['nginx'].get('p50', 0):.2f} / {r['nginx'].get('p99', 0):.2f} | {r['upcache'].get('p50', 0):.2f} / {r['upcache'].get('p99', 0):.2f} | | |")
    cpu_rows(lines, "ranges", results, "ranges_64KiB", ratio)
    r = results["large_whole"]
    lines.append(f"| whole {a.large_mb} MiB files, 4 conns: MB/s | {cell(r['nginx'], 'mbps')} | {cell(r['upcache'], 'mbps')} | {ratio('large_whole', 'mbps'):.2f}× | ≥ 1.0× |")
    r = results["small_whole"]
    lines.append(f"| whole {a.small_kb} KiB files, {a.connections} conns: req/s | {cell(r['nginx'], 'rps')} | {cell(r['upcache'], 'rps')} | {ratio('small_whole', 'rps'):.2f}× | ≥ 1.1× |")
    cpu_rows(lines, f"whole {a.small_kb} KiB files", results, "small_whole", ratio)
    r = results["https_ranges_64KiB"]
    lines.append(f"| HTTPS 64 KiB ranges (TLS 1.3, rustls against OpenSSL), {a.connections} conns: req/s | {cell(r['nginx'], 'rps')} | {cell(r['upcache'], 'rps')} | {ratio('https_ranges_64KiB', 'rps'):.2f}× | |")
    cpu_rows(lines, "HTTPS ranges", results, "https_ranges_64KiB", ratio)
    r = results["https_small_whole"]
    lines.append(f"| HTTPS whole {a.small_kb} KiB files, {a.connections} conns: req/s | {cell(r['nginx'], 'rps')} | {cell(r['upcache'], 'rps')} | {ratio('https_small_whole', 'rps'):.2f}× | |")
    cpu_rows(lines, f"HTTPS whole {a.small_kb} KiB files", results, "https_small_whole", ratio)
    r = results["h2_ranges_64KiB"]
    lines.append(f"| h2c 64 KiB ranges (h2load, {a.connections} conns × {a.h2_streams} streams): req/s | {cell(r['nginx'], 'rps')} | {cell(r['upcache'], 'rps')} | {ratio('h2_ranges_64KiB', 'rps'):.2f}× | ≥ 1.0× |")
    c = results["cold_start"]
    lines.append(f"| cold start, {c['clients']} clients on one file: upstream requests | | {c['upstream_requests']} | | 1 |")
    maxes = " / ".join(f"{r['client_ttfb_ms_max']:.1f}" for r in c["rounds"])
    lines.append(f"| cold start: client TTFB p50 / max vs one request to the upstream, ms (max of each round: {maxes}) | {c['upstream_ttfb_ms']:.1f} | {c['client_ttfb_ms_p50']:.1f} / {c['client_ttfb_ms_max']:.1f} | {c['client_ttfb_ms_max'] - c['upstream_ttfb_ms']:+.1f} ms | ≤ +5 ms |")
    lines.append(f"| cold start: vs the same {c['clients']} clients straight at the upstream (p50 / max), ms | {c['upstream_burst_ttfb_ms_p50']:.1f} / {c['upstream_burst_ttfb_ms_max']:.1f} | {c['client_ttfb_ms_p50']:.1f} / {c['client_ttfb_ms_max']:.1f} | {c['client_ttfb_ms_max'] - c['upstream_burst_ttfb_ms_max']:+.1f} ms | |")
    s = results["rss"]
    lines.append(f"| {s['connections']} conns downloading a {s['file_mb']} MiB file: peak RSS: anonymous (+ mapped store files, page cache), MiB; anonymous before the test | | {s['peak_anon_mb']} (+ {s['peak_file_mapped_mb']}); {s.get('anon_before_mb')} | | < 100 |")
    if "profile" in results:
        lines.append(f"\nprofile: {results['profile']['summary']}")
    if a.no_fast_path:
        lines.append("\n(upcache ran with fast_path = false: hyper for everything)")
    table = "\n".join(lines)
    print("\n" + table)
    os.makedirs(a.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for r in results.values():
        for v in (r.values() if isinstance(r, dict) else []):
            if isinstance(v, dict):
                v.pop("raw", None)
    with open(os.path.join(a.out, f"load-{stamp}.json"), "w") as f:
        json.dump({"args": vars(a), "results": results}, f, indent=2)
    with open(os.path.join(a.out, f"load-{stamp}.md"), "w") as f:
        f.write(table + "\n")
    print(f"\nwritten to {a.out}/load-{stamp}.{{json,md}}")


if __name__ == "__main__":
    sys.exit(main())
