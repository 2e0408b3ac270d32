#!/usr/bin/env python3
"""Abuse cases against a real `upcache serve`, on loopback (issue 23).

1. heads:   1,500 connections from 30 loopback addresses (50 each, under
            max_connections_per_ip), each holding an unfinished 63 KB head:
            the server's anonymous RSS before and after (RssAnon), and how
            many connections it still holds.
2. lockout: 300 silent sockets from 127.0.0.1 on the admin listener; does
            /healthz answer 127.0.0.2?
3. readers: 50 clients (HTTP/1.0 and hyper's HTTP/1.1) that never read a
            64 MiB file, max_connections = 50, send_timeout_secs = 2: when
            does the content listener's /healthz answer again?
4. wrong:   HTTP/1.0, a file of unknown length (no size in the catalog,
            none from the origin), one byte flipped: how does the read end?

Usage: scripts/abuse.py [UPCACHE_BINARY]   (default target/release/upcache)
"""

import hashlib
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/upcache")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`upcache serve` on free loopback ports with `settings` in its file."""

    def __init__(self, work, settings=""):
        self.content, self.admin = free_port(), free_port()
        config = os.path.join(work, "upcache.toml")
        with open(config, "w") as f:
            f.write(settings)
        data = os.path.join(work, "data")
        shutil.rmtree(data, ignore_errors=True)
        self.proc = subprocess.Popen(
            [BIN, "serve", "--config", config, "--data-dir", data,
             "--listen", f"127.0.0.1:{self.content}", "--admin-listen", f"127.0.0.1:{self.admin}"],
            env={**os.environ, "RUST_LOG": "upcache=error"}, stdout=subprocess.DEVNULL)
        for _ in range(200):
            if self.healthz("admin", 1):
                return
            time.sleep(0.05)
        raise RuntimeError("upcache did not start")

    def healthz(self, which, timeout, source="127.0.0.1"):
        port = self.admin if which == "admin" else self.content
        try:
            with socket.create_connection(("127.0.0.1", port), timeout, (source, 0)) as s:
                s.settimeout(timeout)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def rss_anon_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        return 0

    def api(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin}{path}", data=data, method=method,
                                     headers={"content-type": "application/json"} if data else {})
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.read()

    def metric(self, series):
        text = self.api("GET", "/metrics").decode()
        for line in text.splitlines():
            if line.startswith(series + " "):
                return int(float(line.split()[1]))
        return 0

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def heads(work, kb=63):
    server = Server(work)
    try:
        time.sleep(0.5)
        before = server.rss_anon_kb()
        head = b"GET /Content/AB/x.cab HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (kb * 1024 - 60)
        held = []
        for i in range(1500):
            s = socket.create_connection(("127.0.0.1", server.content), 5, (f"127.0.0.{2 + i // 50}", 0))
            s.setblocking(False)
            try:
                s.sendall(head)  # unfinished: no blank line
            except (BlockingIOError, OSError):
                pass
            held.append(s)
        time.sleep(3)
        after = server.rss_anon_kb()
        open_now = 0
        for s in held:
            try:
                s.recv(1, socket.MSG_PEEK)  # an answer (431) or the end: not held
            except BlockingIOError:
                open_now += 1  # nothing to read, not closed: still held
            except OSError:
                pass
        for s in held:
            s.close()
        print(f"heads: RssAnon {before / 1024:.0f} MB before, {after / 1024:.0f} MB with 1,500 "
              f"unfinished {kb} KB heads ({(after - before) / 1500:.1f} KB each); "
              f"{open_now} of 1,500 connections still held")
    finally:
        server.stop()


def lockout(work):
    server = Server(work)
    try:
        silent = [socket.create_connection(("127.0.0.1", server.admin), 5) for _ in range(300)]
        answered, slowest = 0, 0.0
        for _ in range(7):
            t = time.time()
            if server.healthz("admin", 3, source="127.0.0.2"):
                answered += 1
                slowest = max(slowest, time.time() - t)
            time.sleep(1)
        for s in silent:
            s.close()
        time.sleep(0.5)  # the metrics are asked from 127.0.0.1 too
        print(f"lockout: with 300 silent admin sockets from 127.0.0.1, /healthz from 127.0.0.2 "
              f"answered {answered} of 7 times (slowest {slowest * 1000:.0f} ms); "
              f"{server.metric('upcache_connections_over_ip_cap_total')} connections over the per-address cap")
    finally:
        server.stop()


class Origin:
    """The upstream: /big.cab with a length, /bad.cab without one and one byte flipped."""

    def __init__(self, big, bad):
        files = {"/big.cab": (big, True), "/bad.cab": (bad[:len(bad) // 2] + bytes([bad[len(bad) // 2] ^ 0xFF])
                                                        + bad[len(bad) // 2 + 1:], False)}

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self):
                body, with_length = files.get(self.path, (None, False))
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                if with_length:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def content_path(sha1):
    return f"/Content/{sha1[-2:].upper()}/{sha1.upper()}.cab"


def catalog_with(server, origin, big, bad):
    def update(i, name, body, size):
        f = {"name": name, "sha1": hashlib.sha1(body).hexdigest(),
             "url": f"http://127.0.0.1:{origin.port}/{name}"}
        if size:
            f["size"] = len(body)
        return {"id": f"00000000-0000-4000-8000-00000000000{i}", "revision": 1, "title": name,
                "classification": "Security Updates", "products": ["Windows 11"],
                "release_date": "2024-01-09", "files": [f]}
    server.api("POST", "/api/v1/catalog", {"updates": [update(1, "big.cab", big, True),
                                                        update(2, "bad.cab", bad, False)]})
    for i in (1, 2):
        server.api("POST", f"/api/v1/updates/00000000-0000-4000-8000-00000000000{i}/approve")


def readers(work, origin, big, bad):
    server = Server(work, "max_connections = 50\nidle_timeout_secs = 10\nsend_timeout_secs = 2\n")
    try:
        catalog_with(server, origin, big, bad)
        path = content_path(hashlib.sha1(big).hexdigest())
        with urllib.request.urlopen(f"http://127.0.0.1:{server.content}{path}", timeout=60) as r:
            r.read()  # stored: later clients are served from the store
        clients = []
        for i in range(50):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", server.content))
            if i % 2:
                s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            else:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n".encode())
            clients.append(s)
        started = time.time()
        answers = []
        while time.time() - started < 12:
            t = time.time()
            ok = server.healthz("content", 2)
            answers.append((round(time.time() - started, 1), ok))  # when answered (or given up)
            time.sleep(max(0.0, 1 - (time.time() - t)))
        first = next((t for t, ok in answers if ok), None)
        print(f"readers: 50 clients that never read a 64 MiB file (max_connections 50, send_timeout_secs 2): "
              f"/healthz answered {sum(ok for _, ok in answers)} of {len(answers)} probes over 12 s, "
              f"first at {first} s; {server.metric('upcache_send_timeouts_total')} responses cut")
        for s in clients:
            s.close()
    finally:
        server.stop()


def wrong(work, origin, big, bad):
    server = Server(work)
    try:
        catalog_with(server, origin, big, bad)
        path = content_path(hashlib.sha1(bad).hexdigest())
        s = socket.create_connection(("127.0.0.1", server.content), 30)
        s.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        got, end = b"", "clean end of the connection (FIN)"
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                end = "connection reset (RST)"
                break
            if not chunk:
                break
            got += chunk
        status = got.split(b"\r\n", 1)[0].decode(errors="replace")
        body = len(got.split(b"\r\n\r\n", 1)[1]) if b"\r\n\r\n" in got else 0
        print(f"wrong: HTTP/1.0, unknown length, one byte flipped: '{status}', {body} of {len(bad)} "
              f"body bytes, then {end}")
    finally:
        server.stop()


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    big = os.urandom(64 << 20)
    bad = os.urandom(3 << 20)
    origin = Origin(big, bad)
    with tempfile.TemporaryDirectory() as work:
        wanted = sys.argv[2:] or ["heads", "lockout", "readers", "wrong"]
        if "heads" in wanted:
            heads(work)
            heads(work, 15)  # the largest head the 16 KiB cap holds
        if "lockout" in wanted:
            lockout(work)
        if "readers" in wanted:
            readers(work, origin, big, bad)
        if "wrong" in wanted:
            wrong(work, origin, big, bad)


if __name__ == "__main__":
    main()
