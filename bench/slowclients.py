"""Slow clients, measured: slowhttptest's slow-header, slow-body and slow-read attacks against
remedy (release build) in front of an nginx origin, each for ATTACK_SECONDS (30), while a probe
sends a proxied GET every 100 ms. Reports, per attack, the probe's latency and failures, how
long slowhttptest's connections stayed open, and remedy's resident memory before, at peak and
SETTLE_SECONDS (60) after the attack."""

import csv
import os
import signal
import statistics
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass

from proxies import NGINX, remedy_in_front, workdir

ORIGIN, PROXY, ADMIN = 18201, 18202, 18203
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
        print(f"| {r.attack} | {r.probes} ({r.failed}) | {r.p50_ms:.1f} / {r.max_ms:.1f} ms | "
              f"{r.held_s:.0f} s | {r.rss_before / 1024:.1f} / {r.rss_peak / 1024:.1f} / "
              f"{r.rss_after / 1024:.1f} MiB |")
    ok = alive and all(r.failed == 0 for r in results)
    print("PASS" if ok else "FAIL: remedy exited or a probe failed")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
