"""The cost of `body_errors`: one remedy whose source reads JSON answers with the `graphql` pack,
beside one whose source does not, both in front of the same nginx origin. Two answers: a small
GraphQL success (372 bytes, read whole) and a 10 MiB JSON answer (read up to the 64 KiB window,
then passed on unread).

1. User-space instructions per request under callgrind (wrk, 8 connections; the runs of N2 and N1
   requests, differenced), reproducible to about 1 %.
2. CPU time per request and requests per second under load (wrk, 32 connections for the small
   answer, 8 for the large one; the proxy pinned to a CPU of its own), medians of the rounds.
"""

import os
import re
import statistics
import signal
import sys

from instructions import count
from proxies import PINNED, REMEDY, cpu_ticks, pids_of, start, stop_all, wait_port, workdir, write_file
from proxies import wrk as run_wrk

ORIGIN = 18021
PORTS = {"without": 18022, "graphql": 18024}
ADMINS = {"without": 18023, "graphql": 18025}
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
TICK = os.sysconf("SC_CLK_TCK")
SMALL = ('{"data": {"shop": {"name": "Bench Shop", "orders": {"edges": [{"node": {"id": "gid://shopify/Order/1", '
         '"totalPrice": "10.00"}}, {"node": {"id": "gid://shopify/Order/2", "totalPrice": "12.50"}}]}}}, '
         '"extensions": {"cost": {"requestedQueryCost": 12, "actualQueryCost": 12, "throttleStatus": '
         '{"maximumAvailable": 2000.0, "currentlyAvailable": 1988, "restoreRate": 100.0}}}}')
# path, (N1, N2) under callgrind, connections under load
ANSWERS = {"/small.json": ((1000, 4000), 32), "/big.json": ((10, 40), 8)}


def setup(tmp):
    write_file(os.path.join(tmp, "small.json"), SMALL)
    order = '{"id": "gid://shopify/Order/450789469", "note": "ring the bell", "total": "10.00"},'
    n = (10 << 20) // len(order)
    write_file(os.path.join(tmp, "big.json"), '{"data": {"orders": [' + order * n + '{}]}}')
    write_file(os.path.join(tmp, "origin.conf"), f"""
worker_processes 1; daemon off; pid {tmp}/origin.pid; error_log {tmp}/origin.err;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000; default_type application/json;
  server {{ listen 127.0.0.1:{ORIGIN};
    location = /ok {{ return 200 "ok\\n"; }}
    location = /small.json {{ alias {tmp}/small.json; }}
    location = /big.json {{ alias {tmp}/big.json; }} }} }}
""")
    for name, port in PORTS.items():
        pack = "" if name == "without" else f", body_errors: {name}"
        write_file(os.path.join(tmp, f"{name}.yaml"), f"""
proxy: {{ listen: 127.0.0.1:{port}, max_connections: 4096 }}
admin: {{ listen: 127.0.0.1:{ADMINS[name]} }}
runtime: {{ worker_threads: 1 }}
shutdown: {{ drain_timeout: 1s, linger: 0s }}
sources:
  - {{ name: api, upstream: 'http://127.0.0.1:{ORIGIN}', match: {{ path_prefix: / }}{pack} }}
""")
    write_file(os.path.join(tmp, "stop.lua"),
               'local n = 0\nlocal limit = tonumber(os.getenv("N"))\n'
               'response = function() n = n + 1; if n >= limit then wrk.thread:stop() end end\n')


def counted_load(port, path, requests, tmp):
    wait_port(port, limit=60)
    report = run_wrk(["-t1", "-c8", "-d120s", "-s", os.path.join(tmp, "stop.lua"), f"http://127.0.0.1:{port}{path}"],
                     env={**os.environ, "N": str(requests)}, timeout=300)
    done = int(re.search(r"(\d+) requests in", report).group(1))
    if done < requests:
        raise SystemExit(f"only {done} of {requests} requests of {path} under callgrind")


def instructions(tmp):
    out = {}
    for name in PORTS:
        cmd = [REMEDY, "run", "--config", os.path.join(tmp, f"{name}.yaml")]
        for path, ((n1, n2), _) in ANSWERS.items():
            load = lambda n: counted_load(PORTS[name], path, n, tmp)
            a = count(cmd, signal.SIGTERM, lambda: load(n1), tmp)
            b = count(cmd, signal.SIGTERM, lambda: load(n2), tmp)
            out[name, path] = (b - a) / (n2 - n1)
            print(f"{name} {path}: {out[name, path]:.0f} instructions per request", file=sys.stderr, flush=True)
    return out


def cpu(tmp):
    procs = {name: start([REMEDY, "run", "--config", os.path.join(tmp, f"{name}.yaml")], proxy=True,
                         env={**os.environ, "REMEDY_LOG": "warn"}) for name in PORTS}
    for name in PORTS:
        wait_port(PORTS[name])
    samples = {}
    for rnd in range(ROUNDS):
        for path, (_, conns) in ANSWERS.items():
            for name in (list(PORTS) if rnd % 2 == 0 else list(reversed(PORTS))):
                pids = pids_of(procs[name])
                before = cpu_ticks(pids)
                report = run_wrk(["-t1", f"-c{conns}", f"-d{SECONDS}s", f"http://127.0.0.1:{PORTS[name]}{path}"],
                                 timeout=SECONDS + 60)
                used = (cpu_ticks(pids) - before) / TICK
                reqs = int(re.search(r"(\d+) requests in", report).group(1))
                samples.setdefault((name, path), []).append((reqs / SECONDS, used * 1e6 / reqs))
                print(f"round {rnd + 1} {name:8} {path:12} {reqs / SECONDS:9.0f} req/s "
                      f"{used * 1e6 / reqs:8.1f} us/req", file=sys.stderr, flush=True)
    return {k: (statistics.median(r for r, _ in v), statistics.median(c for _, c in v)) for k, v in samples.items()}


def main():
    tmp = workdir("remedy-bench-body-errors-")
    setup(tmp)
    if PINNED:
        os.sched_setaffinity(0, PINNED[0])
    origin = start(["/usr/sbin/nginx", "-c", os.path.join(tmp, "origin.conf"), "-p", tmp])
    try:
        wait_port(ORIGIN)
        counted = instructions(tmp)
        loaded = cpu(tmp)
    finally:
        stop_all()
        origin.wait(timeout=10)
    print("\nInstructions per request (callgrind; wrk -c8; the runs of N2 and N1 requests, differenced):\n")
    print("| answer | without body_errors | with the graphql pack | with / without |\n|---|---:|---:|---:|")
    for path in ANSWERS:
        w, g = counted["without", path], counted["graphql", path]
        print(f"| {path} | {w:.0f} | {g:.0f} | {g / w:.3f} |")
    print(f"\nUnder load ({ROUNDS} rounds x {SECONDS}s; medians):\n")
    print("| answer | target | req/s | CPU µs/req |\n|---|---|---:|---:|")
    for path in ANSWERS:
        for name in PORTS:
            r, c = loaded[name, path]
            print(f"| {path} | {name} | {r:.0f} | {c:.1f} |")
    for path in ANSWERS:
        ratio = loaded["graphql", path][1] / loaded["without", path][1]
        print(f"\n{path}: CPU per request with the pack is {ratio:.2f}x without.")


if __name__ == "__main__":
    main()
