"""Where each proxy's CPU goes: kernel against user space, per proxied request, and remedy's
busiest user-space functions, at 32 and at 256 connections.

The same cast and placement as `side_by_side.py`. For each proxy, wrk drives `/ok` for
PROFILE_SECONDS while `perf record -e cpu-clock` samples the proxy's processes (a software
clock: it needs no hardware counters, which virtual machines often lack). The proxy's CPU time
per request comes from /proc over wrk's run; perf's samples split it into kernel and user
space. Sampling costs the proxy a little CPU of its own, so the totals read a little higher
than `side_by_side.py`'s; the split is what this is for.
"""

import os
import re
import subprocess
import time

from proxies import PINNED, PORTS, commands, cpu_ticks, origin_command, pids_of, start, stop_all, wait_port, workdir, write_configs
from proxies import wrk as run_wrk

SECONDS = int(os.environ.get("PROFILE_SECONDS", "8"))
TICK = os.sysconf("SC_CLK_TCK")
TOP = 15


def record(pids, port, conns, out):
    """Runs wrk against `port` while perf samples `pids`; returns (requests, CPU seconds)."""
    # perf samples only while the proxy runs, so its window may be longer than wrk's.
    perf = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999",
                             "-p", ",".join(map(str, pids)), "-o", out, "--", "sleep", str(SECONDS + 2)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    before = cpu_ticks(pids)
    report = run_wrk(["-t1", f"-c{conns}", f"-d{SECONDS}s", f"http://127.0.0.1:{port}/ok"], timeout=SECONDS + 30)
    cpu = (cpu_ticks(pids) - before) / TICK
    perf.wait(timeout=30)
    return int(re.search(r"(\d+) requests in", report).group(1)), cpu


def shares(data, key):
    """perf's sample shares (percent) by `key` (dso or sym)."""
    out = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", key, "--stdio", "-g", "none"],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*\S)", line)
        if m and not line.startswith("#"):
            rows.append((float(m.group(1)), m.group(2)))
    return rows


def main():
    tmp = workdir("remedy-profile-")
    write_configs(tmp)
    if PINNED:
        os.sched_setaffinity(0, PINNED[0])
    start(origin_command(tmp))
    wait_port(PORTS["direct"])
    cmds = commands(tmp)
    targets = {n: start(cmds[n], proxy=True, env={**os.environ, "REMEDY_LOG": "warn"}) for n in cmds}
    for name in targets:
        wait_port(PORTS[name])

    print("| connections | proxy | CPU µs/req | kernel µs/req | user µs/req |\n|---:|---|---:|---:|---:|")
    hot = {}
    for conns in (32, 256):
        for name, p in targets.items():
            data = os.path.join(tmp, f"{name}-{conns}.data")
            reqs, cpu = record(pids_of(p), PORTS[name], conns, data)
            per_req = cpu / reqs * 1e6
            kernel = sum(s for s, what in shares(data, "dso") if what == "[kernel.kallsyms]") / 100
            print(f"| {conns} | {name} | {per_req:.1f} | {per_req * kernel:.1f} | {per_req * (1 - kernel):.1f} |",
                  flush=True)
            if name == "remedy":
                user = [(s, what) for s, what in shares(data, "sym") if what.startswith("[.]")]
                hot[conns] = [(per_req * s / 100, what[4:]) for s, what in user[:TOP]]
    for conns, rows in hot.items():
        print(f"\nremedy's busiest user-space functions at {conns} connections, µs per request:\n")
        print("| µs/req | function |\n|---:|---|")
        for us, what in rows:
            print(f"| {us:.3f} | `{what[:110]}` |")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
