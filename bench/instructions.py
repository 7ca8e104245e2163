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

from proxies import PORTS, commands, origin_command, wait_port, workdir, write_configs, write_file
from proxies import wrk as run_wrk

N1, N2 = 1000, 4000
STOP = {"nginx": signal.SIGQUIT, "haproxy": signal.SIGUSR1, "remedy": signal.SIGTERM, "baseline": signal.SIGTERM}


def count(cmd, port, stop_signal, requests, tmp):
    out = os.path.join(tmp, "callgrind.out")
    if os.path.exists(out):
        os.remove(out)
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "REMEDY_LOG": "warn"})
    try:
        wait_port(port, limit=60)
        # wrk stops sending after `requests` answers; its main thread still sleeps out -d.
        report = run_wrk(["-t1", "-c8", "-d40s", "-s", os.path.join(tmp, "stop.lua"), f"http://127.0.0.1:{port}/ok"],
                         env={**os.environ, "N": str(requests)}, timeout=120)
        done = int(re.search(r"(\d+) requests in", report).group(1))
        if done < requests:
            raise SystemExit(f"only {done} of {requests} requests within 40 s under callgrind")
    finally:
        p.send_signal(stop_signal)
        p.wait(timeout=60)
    with open(out) as f:
        lines = f.readlines()
    for line in lines:
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {out}")


def main():
    tmp = workdir("remedy-instructions-")
    write_configs(tmp)
    write_file(os.path.join(tmp, "stop.lua"),
        'local n = 0\nlocal limit = tonumber(os.getenv("N"))\n'
        'response = function() n = n + 1; if n >= limit then wrk.thread:stop() end end\n')
    cmds = commands(tmp)
    # callgrind follows one process: nginx without its master.
    cmds["nginx"] += ["-g", "master_process off;"]
    origin = subprocess.Popen(origin_command(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(PORTS["direct"])
        per_request = {}
        for name, cmd in cmds.items():
            a = count(cmd, PORTS[name], STOP[name], N1, tmp)
            b = count(cmd, PORTS[name], STOP[name], N2, tmp)
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


if __name__ == "__main__":
    main()
