"""HTTP/2 through HTTPS_PROXY: remedy intercepting CONNECT and serving h2 inside the tunnel,
beside nginx terminating TLS itself with HTTP/2 (`listen ... ssl http2`, as nginx 1.22 writes it).

The same TLS nginx origin (HTTP/1.1) is behind both, with keep-alive; both present
certificates of one CA (remedy brings it as ca_cert_file/ca_key_file). The load is
examples/h2load.rs: CONNS connections, STREAMS concurrent GETs of /ok on each, the client
pinned to one CPU and the proxies to the other; nginx directly, remedy through CONNECT, taking
turns for several rounds. Prints requests per second and the proxy's CPU per request.
"""

import os
import re
import statistics
import subprocess
import sys
import time

from https import HOST, certificates, configs, wait_ready
from proxies import NGINX, PINNED, REMEDY, ROOT, cpu_ticks, pids_of, start, stop_all, workdir, write_file

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNS, STREAMS = 4, 8
PORTS = {"direct": 18011, "remedy": 18012, "nginx": 18013}
ADMIN = 18015
TICK = os.sysconf("SC_CLK_TCK")
H2LOAD = os.path.join(ROOT, "target/bench-tools/release/examples/h2load")


def front_h2(tmp):
    """nginx terminating TLS with HTTP/2, in front of the origin, as https.py's front with h2."""
    p = lambda name: os.path.join(tmp, name)
    write_file(p("front-h2.conf"), f"""
worker_processes 1; daemon off; pid {tmp}/front-h2.pid; error_log {tmp}/front-h2.err;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; http2_max_concurrent_streams 128;
  upstream origin {{ server 127.0.0.1:{PORTS['direct']}; keepalive 512; keepalive_requests 1000000; }}
  server {{ listen 127.0.0.1:{PORTS['nginx']} ssl http2;
    ssl_certificate {p('front.crt')}; ssl_certificate_key {p('front.key')};
    location / {{ proxy_pass https://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_session_reuse on; proxy_ssl_verify on; proxy_ssl_name origin.bench.test;
      proxy_ssl_trusted_certificate {p('ca.crt')}; }} }} }}
""")


def load(target, tmp):
    """One run of h2load; (requests, req/s, p99 µs)."""
    args = [H2LOAD, "--ca", os.path.join(tmp, "ca.crt"), "-c", str(CONNS), "-m", str(STREAMS),
            "-d", str(SECONDS)]
    if target == "remedy":
        args += ["--proxy", f"127.0.0.1:{PORTS['remedy']}", f"https://{HOST}/ok"]
    else:
        args += ["--connect", f"127.0.0.1:{PORTS['nginx']}", f"https://{HOST}/ok"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=SECONDS + 60)
    if run.returncode:
        raise SystemExit(f"h2load against {target} failed: {run.stderr.strip()}")
    out = run.stdout
    m = re.search(r"requests (\d+) seconds ([\d.]+) p99_us (\d+) non_200 (\d+)", out)
    if not m or int(m.group(4)) or not int(m.group(1)):
        raise SystemExit(f"h2load against {target}: {out}")
    reqs = int(m.group(1))
    return reqs, reqs / float(m.group(2)), float(m.group(3))


def main():
    tmp = workdir("remedy-bench-http2-")
    certificates(tmp)
    configs(tmp)
    front_h2(tmp)
    if PINNED:
        os.sched_setaffinity(0, PINNED[0])
    start([NGINX, "-c", os.path.join(tmp, "origin-tls.conf"), "-p", tmp])
    procs = {
        "nginx": start([NGINX, "-c", os.path.join(tmp, "front-h2.conf"), "-p", tmp], proxy=True),
        "remedy": start([REMEDY, "run", "--config", os.path.join(tmp, "remedy-tls.yaml")], proxy=True,
                        env={**os.environ, "REMEDY_LOG": "warn"}),
    }
    wait_ready(f"http://127.0.0.1:{ADMIN}/-/ready")
    time.sleep(1)
    results = {}
    for rnd in range(ROUNDS):
        for target in (["nginx", "remedy"] if rnd % 2 == 0 else ["remedy", "nginx"]):
            p = procs[target]
            before = cpu_ticks(pids_of(p))
            reqs, rps, p99 = load(target, tmp)
            cpu = (cpu_ticks(pids_of(p)) - before) / TICK * 1e6 / reqs
            results.setdefault(target, []).append((rps, p99, cpu))
            print(f"round {rnd + 1} h2 {target:7} {rps:9.0f} req/s p99 {p99:8.0f}us cpu {cpu:6.1f}us/req",
                  file=sys.stderr, flush=True)
    med = statistics.median
    print(f"\nHTTP/2: {ROUNDS} rounds x {SECONDS}s, {CONNS} connections x {STREAMS} streams (examples/h2load); "
          "remedy through CONNECT with h2 inside the tunnel, nginx 1.22 terminating TLS with `listen ... ssl http2`; medians.\n")
    print("| target | req/s | p99 µs | CPU µs/req |\n|---|---:|---:|---:|")
    for target in ("nginx", "remedy"):
        r = results[target]
        print(f"| {target} | {med([x[0] for x in r]):.0f} | {med([x[1] for x in r]):.0f} | "
              f"{med([x[2] for x in r]):.1f} |")
    ratio = med([x[2] for x in results["remedy"]]) / med([x[2] for x in results["nginx"]])
    print(f"\nremedy's CPU per request is {ratio:.2f}x nginx's.")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
