"""remedy side by side with nginx and HAProxy, one worker each, on loopback.

Starts an nginx origin (/ok 3 bytes, /4k, /429), then nginx, HAProxy and remedy as reverse
proxies in front of it; runs wrk against the origin directly and through each proxy,
alternating targets, for several rounds; reads each proxy's CPU time and resident memory from
/proc; prints a markdown table. Every process it starts is stopped when it ends.

With two CPUs or more, the load (wrk, the origin, this script) runs on one CPU and the proxies
on another, so that each proxy is measured on a CPU of its own rather than wherever the
scheduler last put it: the same for all three, and steadier from run to run.
"""

import os
import re
import statistics
import sys
import threading
import time
import urllib.request
from typing import NamedTuple, Optional

from proxies import (ADMIN, PINNED, PORTS, commands, cpu_ticks, mem_kib, origin_command, pids_of, start,
                     stop_all, wait_port, workdir, write_configs, write_file)
from proxies import wrk as run_wrk

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# Scenario names to run, comma-separated (all when unset): `BENCH_ONLY='/ok c=256'` with more
# rounds measures one ratio more closely than the whole table can in ten minutes.
# "https" names bench/https.py's scenario, which bench/run runs after this one.
ONLY = [n.strip() for n in os.environ.get("BENCH_ONLY", "").split(",") if n.strip() not in ("", "https")]
TICK = os.sysconf("SC_CLK_TCK")

SCENARIOS = [
    # name, path, connections, paced, scraped
    ("/ok c=32", "/ok", 32, False, False),
    ("/ok c=256", "/ok", 256, False, False),
    ("/4k c=32", "/4k", 32, False, False),
    ("/429 c=32", "/429", 32, False, False),
    ("paced 2k/s", "/ok", 8, True, False),
    ("paced 2k/s + 10 scrapes/s", "/ok", 8, True, True),
]
if ONLY:
    unknown = set(ONLY) - {s[0] for s in SCENARIOS}
    if unknown:
        raise SystemExit(f"BENCH_ONLY: no scenario {', '.join(sorted(unknown))}; "
                         f"there are: {', '.join(s[0] for s in SCENARIOS)}")
    SCENARIOS = [s for s in SCENARIOS if s[0] in ONLY]


def wrk(port, path, conns, paced, lua_dir):
    args = ["-t1", f"-c{conns}", f"-d{SECONDS}s", "--latency", f"http://127.0.0.1:{port}{path}"]
    if paced:
        args[0:0] = ["-s", os.path.join(lua_dir, "pace.lua")]
    out = run_wrk(args, expect_2xx=path != "/429", timeout=SECONDS + 30)
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v * {"us": 1, "ms": 1e3, "s": 1e6}[unit]

    return reqs, rps, pct(50), pct(99)


def scraper(stop):
    while not stop.is_set():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/metrics", timeout=1).read()
        except Exception:
            pass
        stop.wait(0.1)


class Round(NamedTuple):
    """One round of one scenario against one target."""
    rps: float
    p50_us: float
    p99_us: float
    cpu_us_per_req: Optional[float]


def main():
    tmp = workdir("remedy-bench-")
    write_configs(tmp)
    # 8 connections each waiting 4 ms between requests: about 2,000 requests/s.
    write_file(os.path.join(tmp, "pace.lua"), "function delay() return 4 end\n")

    if PINNED:
        # Inherited by the origin and wrk.
        os.sched_setaffinity(0, PINNED[0])
    start(origin_command(tmp))
    wait_port(PORTS["direct"])
    cmds = commands(tmp)
    targets = {
        "direct": None,
        "nginx": start(cmds["nginx"], proxy=True),
        "haproxy": start(cmds["haproxy"], proxy=True),
        **{n: start(cmds[n], proxy=True, env={**os.environ, "REMEDY_LOG": "warn"}) for n in ("remedy", "baseline")
           if n in cmds},
    }
    for name, port in PORTS.items():
        wait_port(port)
    time.sleep(1)
    idle = {n: mem_kib(pids_of(p), "VmRSS:") for n, p in targets.items() if p}

    results = {}  # (scenario, target) -> list of Round
    proxies = [t for t in targets if t != "direct"]
    for rnd in range(ROUNDS):
        # The proxies take turns going first, so that none is always measured right after the
        # same neighbour, in the same part of the round.
        shift = rnd % len(proxies)
        order = ["direct", *proxies[shift:], *proxies[:shift]]
        for name, path, conns, paced, scraped in SCENARIOS:
            for target in order:
                p = targets[target]
                if scraped and target != "remedy":
                    continue
                stop = threading.Event()
                t = None
                if scraped:
                    t = threading.Thread(target=scraper, args=(stop,))
                    t.start()
                before = cpu_ticks(pids_of(p)) if p else 0
                reqs, rps, p50, p99 = wrk(PORTS[target], path, conns, paced, tmp)
                after = cpu_ticks(pids_of(p)) if p else 0
                stop.set()
                if t:
                    t.join()
                cpu = (after - before) / TICK * 1e6 / max(reqs, 1) if p else None
                results.setdefault((name, target), []).append(Round(rps, p50, p99, cpu))
                print(f"round {rnd + 1} {name:28} {target:8} {rps:10.0f} req/s p50 {p50:8.0f}us p99 {p99:8.0f}us"
                      + (f" cpu {cpu:6.1f}us/req" if cpu else ""), file=sys.stderr, flush=True)
    peak = {n: mem_kib(pids_of(p), "VmHWM:") for n, p in targets.items() if p}

    med = lambda xs: statistics.median(xs)
    placement = (f" wrk and the origin on CPU {min(PINNED[0])}, the proxies on CPU {min(PINNED[1])}."
                 if PINNED else "")
    print(f"\n{ROUNDS} rounds x {SECONDS}s per scenario and target; medians. CPU: proxy process(es) "
          f"utime+stime per request. Machine: {os.cpu_count()} CPUs.{placement}\n")
    print("| scenario | target | req/s | p50 µs | p99 µs | added p50 µs | added p99 µs | CPU µs/req |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, *_ in SCENARIOS:
        direct = results.get((name, "direct"))
        for target in PORTS:
            r = results.get((name, target))
            if not r:
                continue
            rps, p50, p99 = med([x[0] for x in r]), med([x[1] for x in r]), med([x[2] for x in r])
            cpu = med([x[3] for x in r]) if r[0][3] is not None else None
            added = ""
            if direct and target != "direct":
                added = f"{p50 - med([x[1] for x in direct]):.0f} | {p99 - med([x[2] for x in direct]):.0f}"
            elif direct is None and target != "direct":
                base = results.get(("paced 2k/s", "direct"))
                added = f"{p50 - med([x[1] for x in base]):.0f} | {p99 - med([x[2] for x in base]):.0f}" if base else " | "
            else:
                added = " | "
            print(f"| {name} | {target} | {rps:.0f} | {p50:.0f} | {p99:.0f} | {added} | "
                  + (f"{cpu:.1f}" if cpu is not None else "") + " |")
    print("\n| proxy | RSS idle KiB | RSS peak KiB |\n|---|---:|---:|")
    for n in idle:
        print(f"| {n} | {idle[n]} | {peak[n]} |")

    def ratio(metric, scenario, a, b):
        """The ratio of medians, then each round's own ratio (the targets ran seconds apart);
        past five rounds, the median of the rounds' ratios and their range."""
        ra, rb = results[(scenario, a)], results[(scenario, b)]
        i = {"rps": 0, "cpu": 3}[metric]
        each = [x[i] / y[i] for x, y in zip(ra, rb)]
        rounds = (", ".join(f"{r:.2f}" for r in each) if len(each) <= 5 else
                  f"median {med(each):.2f}, {min(each):.2f} to {max(each):.2f}")
        return f"{med([x[i] for x in ra]) / med([x[i] for x in rb]):.2f} ({rounds})"

    others = [n for n in ("nginx", "haproxy", "baseline") if n in targets]
    print(f"\n| ratio (remedy / other): of the medians (each round's) | {' | '.join(others)} |\n"
          f"|---|{'---:|' * len(others)}")
    for label, metric, scen in [("req/s, /ok c=32", "rps", "/ok c=32"), ("CPU per request, /ok c=32", "cpu", "/ok c=32"),
                                ("req/s, /ok c=256", "rps", "/ok c=256"), ("CPU per request, /ok c=256", "cpu", "/ok c=256")]:
        if (scen, "remedy") in results:
            print(f"| {label} | {' | '.join(ratio(metric, scen, 'remedy', o) for o in others)} |")
    for label, mem in (("RSS idle", idle), ("RSS peak", peak)):
        print(f"| {label} | " + " | ".join(f"{mem['remedy'] / mem[o]:.2f}" for o in others) + " |")
    scr = results.get(("paced 2k/s + 10 scrapes/s", "remedy"))
    pac = results.get(("paced 2k/s", "remedy"))
    if scr and pac:
        print(f"\nremedy paced p99 without scrapes {med([x[2] for x in pac]):.0f} µs, "
              f"with 10 scrapes/s {med([x[2] for x in scr]):.0f} µs")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
