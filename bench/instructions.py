"""User-space instructions per proxied request, counted by callgrind: nginx, HAProxy and
remedy side by side, each with one worker in front of the same nginx origin.

Wall-clock figures on a shared machine move by tens of percent between runs; instruction
counts do not (the same binary and inputs give the same count within about 1 %). Each proxy
runs under `valgrind --tool=callgrind` twice, for N1 and N2 requests from wrk (8 connections,
`/ok`); the difference divided by N2 - N1 removes start-up and shutdown. Kernel work (the
syscalls, which strace shows are the same for all three) is not counted.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

N1, N2 = 1000, 4000
ORIGIN, PROXY, ADMIN = 18101, 18102, 18103
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wait_port(port, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ok", timeout=2).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"nothing answers on port {port}")


def count(cmd, stop_signal, requests, tmp):
    out = os.path.join(tmp, "callgrind.out")
    if os.path.exists(out):
        os.remove(out)
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "REMEDY_LOG": "warn"})
    try:
        wait_port(PROXY)
        # wrk stops sending after `requests` answers; its main thread still sleeps out -d.
        report = subprocess.run(["wrk", "-t1", "-c8", "-d40s", "-s", os.path.join(tmp, "stop.lua"),
                              f"http://127.0.0.1:{PROXY}/ok"], env={**os.environ, "N": str(requests)},
                             capture_output=True, text=True, check=True, timeout=120).stdout
        done = int(re.search(r"(\d+) requests in", report).group(1))
        if done < requests:
            raise SystemExit(f"only {done} of {requests} requests within 40 s under callgrind")
    finally:
        p.send_signal(stop_signal)
        p.wait(timeout=60)
    for line in open(out):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {out}")


def main():
    tmp = tempfile.mkdtemp(prefix="remedy-instructions-")
    open(os.path.join(tmp, "stop.lua"), "w").write(
        'local n = 0\nlocal limit = tonumber(os.getenv("N"))\n'
        'response = function() n = n + 1; if n >= limit then wrk.thread:stop() end end\n')
    open(os.path.join(tmp, "origin.conf"), "w").write(f"""
worker_processes 1; daemon off; pid {tmp}/origin.pid; error_log {tmp}/origin.err;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{ORIGIN}; location = /ok {{ return 200 "ok\\n"; }} }} }}
""")
    open(os.path.join(tmp, "nginx.conf"), "w").write(f"""
master_process off; daemon off; pid {tmp}/proxy.pid; error_log {tmp}/proxy.err;
events {{ worker_connections 1024; }}
http {{ access_log off; keepalive_requests 1000000;
  upstream origin {{ server 127.0.0.1:{ORIGIN}; keepalive 64; }}
  server {{ listen 127.0.0.1:{PROXY};
    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
    open(os.path.join(tmp, "haproxy.cfg"), "w").write(f"""
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:{PROXY}
  default_backend origin
backend origin
  server o1 127.0.0.1:{ORIGIN}
""")
    open(os.path.join(tmp, "remedy.yaml"), "w").write(f"""
proxy: {{ listen: 127.0.0.1:{PROXY} }}
admin: {{ listen: 127.0.0.1:{ADMIN} }}
runtime: {{ worker_threads: 1 }}
shutdown: {{ drain_timeout: 1s, linger: 0s }}
sources:
  - {{ name: origin, upstream: 'http://127.0.0.1:{ORIGIN}', match: {{ path_prefix: / }} }}
""")
    origin = subprocess.Popen(["/usr/sbin/nginx", "-c", os.path.join(tmp, "origin.conf"), "-p", tmp],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(ORIGIN)
        proxies = [
            ("nginx", ["/usr/sbin/nginx", "-c", os.path.join(tmp, "nginx.conf"), "-p", tmp], signal.SIGQUIT),
            ("haproxy", ["/usr/sbin/haproxy", "-db", "-f", os.path.join(tmp, "haproxy.cfg")], signal.SIGUSR1),
            ("remedy", [os.path.join(ROOT, "target/release/remedy"), "run", "--config",
                        os.path.join(tmp, "remedy.yaml")], signal.SIGTERM),
        ]
        per_request = {}
        for name, cmd, sig in proxies:
            a = count(cmd, sig, N1, tmp)
            b = count(cmd, sig, N2, tmp)
            per_request[name] = (b - a) / (N2 - N1)
            print(f"{name}: {per_request[name]:.0f} instructions per request", file=sys.stderr, flush=True)
    finally:
        origin.terminate()
        origin.wait(timeout=10)

    print(f"\nUser-space instructions per proxied `/ok` request (callgrind; wrk -c8; the runs of "
          f"{N2} and {N1} requests, differenced):\n")
    print("| proxy | instructions per request | remedy / this |\n|---|---:|---:|")
    for name, n in per_request.items():
        print(f"| {name} | {n:.0f} | {per_request['remedy'] / n:.2f} |")


main()
