"""Slow clients, measured: slowhttptest's slow-header, slow-body and slow-read attacks against
remedy (release build) in front of an nginx origin, each for ATTACK_SECONDS (30), while a probe
sends a proxied GET every 100 ms. Reports, per attack, the probe's latency and failures, how
long slowhttptest's connections stayed open, and remedy's resident memory before, at peak and
SETTLE_SECONDS (60) after the attack.

Then idle tunnels: remedy intercepting CONNECT at `max_connections: 100`, and 150 tunnels kept
open and idle (100 that finish their TLS handshake and send nothing, 50 that send no
ClientHello; each one remedy closes is opened again at once), while the probe makes an
intercepted HTTPS request through HTTPS_PROXY every 100 ms."""

import csv
import multiprocessing
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass

from proxies import NGINX, REMEDY, remedy_in_front, workdir

ORIGIN, PROXY, ADMIN = 18201, 18202, 18203
TUNNEL_PROXY, TUNNEL_ADMIN = 18204, 18205
HOST = "origin.bench.test"
ATTACK_SECONDS = int(os.environ.get("ATTACK_SECONDS", "30"))
SETTLE_SECONDS = int(os.environ.get("SETTLE_SECONDS", "60"))

# name, slowhttptest arguments (connections as the security review ran them)
ATTACKS = [
    ("slow headers", ["-H", "-c", "900", "-r", "300", "-i", "10", "-x", "24",
                      "-u", f"http://127.0.0.1:{PROXY}/ok"]),
    ("slow body", ["-B", "-c", "500", "-r", "250", "-i", "10", "-x", "24", "-s", "8192",
                   "-u", f"http://127.0.0.1:{PROXY}/ok"]),
    ("slow read", ["-X", "-c", "300", "-r", "150", "-w", "512", "-y", "1024", "-n", "5",
                   "-z", "32", "-k", "3", "-u", f"http://127.0.0.1:{PROXY}/1m"]),
]


@dataclass
class Result:
    attack: str
    probes: int
    failed: int
    p50_ms: float
    max_ms: float
    held_s: float
    rss_before: int
    rss_peak: int
    rss_after: int


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def get(path, timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{PROXY}{path}", timeout=timeout) as r:
        r.read()
        return r.status


def held_seconds(stats_csv):
    """Seconds from the start until slowhttptest had no connection open any more (its CSV:
    seconds, closed, pending, connected, service available)."""
    last_open = 0.0
    with open(stats_csv) as f:
        for row in csv.reader(f):
            if not row or not row[0].strip().isdigit():
                continue
            seconds, connected = float(row[0]), int(row[3])
            if connected > 0:
                last_open = seconds
    return last_open


def attack(name, args, pid, tmp):
    rss_before = rss_kib(pid)
    peak = [rss_before]
    latencies, failed = [], [0]
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            t = time.perf_counter()
            try:
                ok = get("/ok") == 200
            except OSError:
                ok = False
            if ok:
                latencies.append((time.perf_counter() - t) * 1e3)
            else:
                failed[0] += 1
            peak[0] = max(peak[0], rss_kib(pid))
            stop.wait(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    out = os.path.join(tmp, name.replace(" ", "-"))
    subprocess.run(["slowhttptest", *args, "-l", str(ATTACK_SECONDS), "-p", "3", "-g", "-o", out],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   timeout=ATTACK_SECONDS + 120)
    stop.set()
    prober.join()
    settle_until = time.time() + SETTLE_SECONDS
    while time.time() < settle_until:
        peak[0] = max(peak[0], rss_kib(pid))
        time.sleep(0.5)
    return Result(
        attack=name,
        probes=len(latencies) + failed[0],
        failed=failed[0],
        p50_ms=statistics.median(latencies) if latencies else float("nan"),
        max_ms=max(latencies) if latencies else float("nan"),
        held_s=held_seconds(out + ".csv"),
        rss_before=rss_before,
        rss_peak=peak[0],
        rss_after=rss_kib(pid),
    )


def open_tunnel(bundle, handshake):
    """A CONNECT through remedy, answered 200, then TLS (or nothing); the socket."""
    sock = socket.create_connection(("127.0.0.1", TUNNEL_PROXY), timeout=10)
    sock.sendall(f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n".encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise OSError("closed before the CONNECT was answered")
        head += chunk
    if handshake:
        sock = ssl.create_default_context(cafile=bundle).wrap_socket(sock, server_hostname=HOST)
    return sock


def hold_tunnels(bundle, stop, opened):
    """150 idle tunnels until `stop` is set, each one remedy closes opened again at once; run in
    a process of its own, so that its threads do not starve the probe of Python's GIL (a probe
    kept from sending its request for a second would be cut like an idle tunnel)."""

    def keep_one_idle(handshake):
        while not stop.is_set():
            try:
                sock = open_tunnel(bundle, handshake)
                with opened.get_lock():
                    opened.value += 1
                sock.settimeout(1)
                while not stop.is_set():
                    try:
                        if not sock.recv(1):
                            break
                    except socket.timeout:
                        continue
                sock.close()
            except OSError:
                stop.wait(0.05)

    idlers = [threading.Thread(target=keep_one_idle, args=(i < 100,)) for i in range(150)]
    for t in idlers:
        t.start()
    for t in idlers:
        t.join()


def idle_tunnels(tmp, pid, bundle):
    """150 idle tunnels at max_connections 100 for ATTACK_SECONDS, the probe going through
    HTTPS_PROXY meanwhile."""
    stop = multiprocessing.Event()
    opened = multiprocessing.Value("i", 0)
    holder = multiprocessing.Process(target=hold_tunnels, args=(bundle, stop, opened))
    holder.start()
    time.sleep(2)
    latencies, failed = [], 0
    tls = ssl.create_default_context(cafile=bundle)
    through = urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": f"http://127.0.0.1:{TUNNEL_PROXY}"}),
        urllib.request.HTTPSHandler(context=tls))
    rss_before = rss_kib(pid)
    peak = rss_before
    until = time.time() + ATTACK_SECONDS
    while time.time() < until:
        t = time.perf_counter()
        try:
            with through.open(f"https://{HOST}/ok", timeout=15) as r:
                r.read()
            latencies.append((time.perf_counter() - t) * 1e3)
        except OSError as e:
            failed += 1
            print(f"probe failed after {time.perf_counter() - t:.2f} s: {e!r}", file=sys.stderr)
        peak = max(peak, rss_kib(pid))
        time.sleep(0.1)
    stop.set()
    holder.join(timeout=30)
    return Result(
        attack=f"150 idle tunnels at max_connections 100 ({opened.value} opened)",
        probes=len(latencies) + failed,
        failed=failed,
        p50_ms=statistics.median(latencies) if latencies else float("nan"),
        max_ms=max(latencies) if latencies else float("nan"),
        held_s=float("nan"),
        rss_before=rss_before,
        rss_peak=peak,
        rss_after=rss_kib(pid),
    )


def intercepting(tmp):
    """remedy intercepting HOST for the origin, at max_connections 100; its process and bundle."""
    ca_dir = os.path.join(tmp, "ca")
    config = os.path.join(tmp, "intercepting.yaml")
    with open(config, "w") as f:
        f.write(f"""
proxy: {{ listen: 127.0.0.1:{TUNNEL_PROXY}, max_connections: 100, intercept: {{ enabled: true, ca_dir: '{ca_dir}' }} }}
admin: {{ listen: 127.0.0.1:{TUNNEL_ADMIN} }}
shutdown: {{ drain_timeout: 1s, linger: 0s }}
sources:
  - {{ name: origin, upstream: 'http://127.0.0.1:{ORIGIN}', match: {{ hosts: [{HOST}] }} }}
""")
    remedy = subprocess.Popen([REMEDY, "run", "--config", config], env={**os.environ, "REMEDY_LOG": "warn"},
                              stderr=subprocess.DEVNULL)
    deadline = time.time() + 15
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{TUNNEL_ADMIN}/-/ready", timeout=1):
                return remedy, os.path.join(ca_dir, "bundle.pem")
        except OSError:
            if time.time() > deadline:
                remedy.kill()
                raise SystemExit("the intercepting remedy did not become ready")
            time.sleep(0.05)


def main():
    tmp = workdir("remedy-slow-")
    with open(os.path.join(tmp, "1m.bin"), "wb") as f:
        f.write(b"x" * (1 << 20))
    with open(os.path.join(tmp, "origin.conf"), "w") as f:
        f.write(f"""
worker_processes 1; daemon off; pid {tmp}/origin.pid; error_log {tmp}/origin.err;
events {{ worker_connections 4096; }}
http {{ access_log off;
  server {{ listen 127.0.0.1:{ORIGIN};
    location = /ok {{ return 200 "ok\\n"; }}
    location = /1m {{ default_type application/octet-stream; alias {tmp}/1m.bin; }} }} }}
""")
    origin = subprocess.Popen([NGINX, "-c", f"{tmp}/origin.conf", "-p", tmp])
    remedy = remedy_in_front(tmp, ORIGIN, PROXY, ADMIN)
    try:
        for _ in range(100):
            get("/ok")
        results = [attack(name, args, remedy.pid, tmp) for name, args in ATTACKS]
        alive = remedy.poll() is None
        tunnels, bundle = intercepting(tmp)
        try:
            results.append(idle_tunnels(tmp, tunnels.pid, bundle))
            alive = alive and tunnels.poll() is None
        finally:
            tunnels.send_signal(signal.SIGTERM)
            tunnels.wait(timeout=10)
    finally:
        for p in (remedy, origin):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
    print(f"{ATTACK_SECONDS} s per attack, memory read {SETTLE_SECONDS} s after it\n")
    print("| attack | probes (failed) | probe p50 / max | slow connections held | "
          "RSS before / peak / after |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        held = "—" if r.held_s != r.held_s else f"{r.held_s:.0f} s"
        print(f"| {r.attack} | {r.probes} ({r.failed}) | {r.p50_ms:.1f} / {r.max_ms:.1f} ms | "
              f"{held} | {r.rss_before / 1024:.1f} / {r.rss_peak / 1024:.1f} / "
              f"{r.rss_after / 1024:.1f} MiB |")
    ok = alive and all(r.failed == 0 for r in results)
    print("PASS" if ok else "FAIL: remedy exited or a probe failed")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
