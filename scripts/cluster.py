#!/usr/bin/env python3
"""A whole upcache cluster on one machine, and a check of what it promises.

SeaweedFS (`weed server -s3`) is the shared S3 tier; one primary upcache and
two followers (`--follow`) all use it; HAProxy (dist/haproxy/upcache.cfg:
`balance uri`, consistent hashing, health checks on /healthz) spreads
requests; a small origin serves the update files and counts requests.

Checks, with figures printed at the end:
  1. N approved files, each requested by C clients through HAProxy at once,
     reach the origin exactly once each;
  2. with one node killed (kill -9), every request still succeeds, and the
     files that node held come from S3 with no new origin request;
  3. with the node back, the share of files that move stays near 1/N;
  4. an approval made on the primary is served through HAProxy within one
     follow interval.

Run it through scripts/cluster.sh (installs what is missing, builds).
"""
import argparse
import concurrent.futures as futures
import hashlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/upcache")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "cluster", "AWS_SECRET_ACCESS_KEY": "cluster-secret"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=60):
    req = urllib.request.Request(url, data=body, method=method,
                                 headers={"content-type": "application/json"} if body else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.headers, r.read()


def wait_until(what, check, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if check():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


class Origin:
    """The 'Microsoft Update' of the test: serves files, counts requests per path."""

    def __init__(self, files):
        self.files, self.counts, self.lock = files, {}, threading.Lock()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = origin.files.get(self.path)
                with origin.lock:
                    origin.counts[self.path] = origin.counts.get(self.path, 0) + 1
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, path):
        with self.lock:
            return self.counts.get(path, 0)


class Node:
    def __init__(self, name, work, s3, follow=None, interval=5):
        self.name, self.content, self.admin = name, free_port(), free_port()
        self.data = os.path.join(work, name)
        self.args = [BIN, "serve", "--data-dir", self.data,
                     "--listen", f"127.0.0.1:{self.content}", "--admin-listen", f"127.0.0.1:{self.admin}",
                     "--s3-endpoint", s3, "--s3-bucket", "upcache"]
        if follow:
            self.args += ["--follow", follow]
        config = os.path.join(work, f"{name}.toml")
        with open(config, "w") as f:
            f.write(f"follow_interval_secs = {interval}\n")
            # HAProxy (on loopback here) sends PROXY protocol v2 headers.
            f.write('proxy_protocol_from = ["127.0.0.1"]\n')
        self.args += ["--config", config]
        self.log = open(os.path.join(work, f"{name}.log"), "w")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self.log,
                                     env={**os.environ, **CREDENTIALS, "RUST_LOG": "upcache=info",
                                          "UPCACHE_MAX_CONNECTIONS_PER_IP": "1000000"})
        wait_until(f"{self.name} up", lambda: http("GET", f"http://127.0.0.1:{self.content}/healthz")[0] == 200)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def status(self):
        return json.loads(http("GET", f"http://127.0.0.1:{self.admin}/api/v1/status")[2])


def content_path(f):
    return f"/Content/{f['sha1'][-2:].upper()}/{f['sha1'].upper()}.cab"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=50)
    ap.add_argument("--clients", type=int, default=20, help="clients per file")
    ap.add_argument("--kb", type=int, default=512, help="size of each file")
    ap.add_argument("--interval", type=int, default=5, help="follow_interval_secs of the followers")
    ap.add_argument("--keep", action="store_true", help="leave the work directory")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="upcache-cluster-")
    procs = []
    try:
        # The files and the origin.
        files, served = [], {}
        for i in range(a.files + 5):
            body = os.urandom(a.kb << 10)
            sha1 = hashlib.sha1(body).hexdigest()
            name = f"windows10.0-kb{6000000 + i}-x64_{sha1}.cab"
            path = f"/c/msdownload/update/software/secu/2026/11/{name}"
            served[path] = body
            files.append({"name": name, "sha1": sha1, "size": len(body), "path": path, "body": body})
        origin = Origin(served)

        # The shared tier.
        base = 30000 + os.getpid() % 1000 * 10
        weed = subprocess.Popen(["weed", "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={work}",
                                 f"-master.port={base}", f"-volume.port={base + 1}", f"-filer.port={base + 2}",
                                 "-s3", f"-s3.port={base + 3}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                                 "-volume.max=16"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(weed)
        s3 = f"http://127.0.0.1:{base + 3}"
        wait_until("SeaweedFS", lambda: http("PUT", f"{s3}/upcache")[0] == 200)

        # One primary, two followers.
        primary = Node("primary", work, s3)
        primary.start()
        procs.append(primary.proc)
        follow = f"http://127.0.0.1:{primary.admin}"
        followers = [Node(f"follower{i}", work, s3, follow, a.interval) for i in (1, 2)]
        for n in followers:
            n.start()
            procs.append(n.proc)
        nodes = [primary] + followers

        # HAProxy.
        front, stats = free_port(), free_port()
        with open(os.path.join(ROOT, "dist/haproxy/upcache.cfg")) as f:
            cfg = f.read()
        servers = "\n".join(f"    server {n.name} 127.0.0.1:{n.content} check" for n in nodes)
        cfg = cfg.replace("@@SERVERS@@", servers).replace("@@FRONT@@", f"127.0.0.1:{front}") \
                 .replace("@@STATS@@", f"127.0.0.1:{stats}").replace("log stdout format raw local0 info", "")
        cfg_path = os.path.join(work, "haproxy.cfg")
        with open(cfg_path, "w") as f:
            f.write(cfg)
        haproxy = subprocess.Popen(["haproxy", "-f", cfg_path], stdout=subprocess.DEVNULL,
                                   stderr=open(os.path.join(work, "haproxy.log"), "w"))
        procs.append(haproxy)
        lb = f"http://127.0.0.1:{front}"

        # The catalog on the primary: the first N approved, 5 kept for check 4.
        admin = f"http://127.0.0.1:{primary.admin}"
        up = f"http://127.0.0.1:{origin.port}"
        updates = [{"id": f"00000000-0000-4000-8000-{i:012d}", "title": f["name"], "kb": str(6000000 + i),
                    "files": [{"name": f["name"], "sha1": f["sha1"], "size": f["size"], "url": up + f["path"]}]}
                   for i, f in enumerate(files)]
        http("POST", f"{admin}/api/v1/catalog", json.dumps({"updates": updates}).encode())
        for u in updates[:a.files]:
            http("POST", f"{admin}/api/v1/updates/{u['id']}/approve")
        for n in followers:
            wait_until(f"{n.name} in step", lambda n=n: n.status()["catalog"]["updates_approved"] == a.files,
                       seconds=3 * a.interval + 10)
        def up_in_haproxy():
            csv = http("GET", f"http://127.0.0.1:{stats}/;csv")[2].decode()
            return {row.split(",")[1] for row in csv.splitlines()
                    if row.startswith("upcache,") and row.split(",")[17] == "UP"}

        wait_until("HAProxy sees 3 nodes up", lambda: up_in_haproxy() >= {n.name for n in nodes})
        wanted = files[:a.files]

        def fetch(f):
            status, headers, body = http("GET", lb + content_path(f), timeout=120)
            return status == 200 and body == f["body"], headers.get("X-Upcache-Node")

        def round_of_requests(clients):
            jobs = [f for f in wanted for _ in range(clients)]
            with futures.ThreadPoolExecutor(max_workers=64) as pool:
                results = list(pool.map(lambda f: (f["sha1"],) + fetch(f), jobs))
            ok = sum(1 for _, good, _ in results if good)
            owner = {}
            for sha1, _, node in results:
                owner.setdefault(sha1, set()).add(node)
            return ok, len(results), {k: sorted(v) for k, v in owner.items()}

        # 1. Exactly one origin request per file.
        t0 = time.time()
        ok1, total1, owners1 = round_of_requests(a.clients)
        took1 = time.time() - t0
        origin_once = sum(1 for f in wanted if origin.count(f["path"]) == 1)
        spread = {n.name: sum(1 for v in owners1.values() if v == [n.name]) for n in nodes}
        single_owner = sum(1 for v in owners1.values() if len(v) == 1)
        # Uploads to S3 run in the background: wait for all of them.
        wait_until("uploads to S3", lambda: sum(
            n.status()["traffic"]["requests"]["miss"] for n in nodes) == a.files)
        time.sleep(1)

        # 2. One node killed.
        victim = followers[1]
        held = [f for f in wanted if owners1[f["sha1"]] == [victim.name]]
        before = {f["path"]: origin.count(f["path"]) for f in wanted}
        victim.kill()
        t0 = time.time()
        ok2, total2, owners2 = round_of_requests(a.clients)
        took2 = time.time() - t0
        new_origin = sum(origin.count(f["path"]) - before[f["path"]] for f in wanted)
        held_from_s3 = sum(1 for f in held if origin.count(f["path"]) == before[f["path"]])

        # 3. The node back: which files move.
        victim.start()
        procs.append(victim.proc)
        wait_until("HAProxy sees the node again", lambda: victim.name in up_in_haproxy(), seconds=30)
        _, _, owners3 = round_of_requests(1)
        moved_back = sum(1 for k in owners3 if owners3[k] != owners2.get(k))
        moved_out = sum(1 for k in owners2 if owners2[k] != owners1.get(k))

        # 4. An approval on the primary, served through HAProxy.
        delays = []
        for u, f in zip(updates[a.files:], files[a.files:]):
            status = None
            try:
                status = http("GET", lb + content_path(f))[0]
            except urllib.error.HTTPError as e:
                status = e.code
            assert status == 403, status
            t0 = time.time()
            http("POST", f"{admin}/api/v1/updates/{u['id']}/approve")
            wait_until("the approval through HAProxy", lambda f=f: fetch(f)[0], seconds=3 * a.interval + 10)
            delays.append(time.time() - t0)

        n = len(nodes)
        report = [
            f"cluster: SeaweedFS S3, 1 primary + 2 followers (follow every {a.interval} s), HAProxy balance uri consistent",
            f"1. {a.files} files x {a.clients} clients through HAProxy: {ok1}/{total1} whole and right in {took1:.1f} s; "
            f"origin requested exactly once for {origin_once}/{a.files} files; each file served by one node: {single_owner}/{a.files} "
            f"({', '.join(f'{k} {v}' for k, v in spread.items())})",
            f"2. {victim.name} killed (held {len(held)} files): {ok2}/{total2} requests succeeded in {took2:.1f} s; "
            f"new origin requests: {new_origin}; its files served from S3 without the origin: {held_from_s3}/{len(held)}",
            f"3. {victim.name} back: files that moved when it left {moved_out}/{a.files} ({moved_out / a.files:.0%}), "
            f"when it came back {moved_back}/{a.files} ({moved_back / a.files:.0%}); 1/N = {1 / n:.0%}",
            f"4. approvals on the primary served through HAProxy after {', '.join(f'{d:.1f}' for d in delays)} s "
            f"(follow interval {a.interval} s): max {max(delays):.1f} s",
        ]
        print("\n".join(report))
        out = os.path.join(ROOT, "benches/load/results", f"cluster-{time.strftime('%Y%m%d-%H%M%S')}.txt")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            f.write("\n".join(report) + "\n")
        passed = (ok1 == total1 and origin_once == a.files and ok2 == total2 and new_origin == 0
                  and held_from_s3 == len(held) and max(delays) <= a.interval + 1.0)
        print("PASS" if passed else "FAIL")
        return 0 if passed else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if a.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
