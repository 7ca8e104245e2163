"""User-space instructions per proxied request, counted by callgrind: nginx, HAProxy and
remedy side by side, each with one worker in front of the same nginx origin; then remedy (and
the baseline, when given) on the intercepted path: `CONNECT` through `HTTPS_PROXY`, remedy's
TLS to the client, HTTP/1.1 inside the tunnel, forwarded to the same origin.

Wall-clock figures on a shared machine move by tens of percent between runs; instruction
counts do not. Each proxy runs under `valgrind --tool=callgrind` twice, for N1 and N2 requests
from hey over one connection (`/ok`); the difference divided by N2 - N1 removes start-up and
shutdown. One connection makes the count exact: the same binary gives the same figure to within
a few instructions a request, where eight connections, whose reads and wake-ups interleave as
the scheduler has it, moved it by about 1 % from run to run. Kernel work (the syscalls, which
strace shows are the same for all three) is not counted.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

from proxies import BASELINE, PORTS, REMEDY, commands, origin_command, wait_port, workdir, write_configs, write_file

N1, N2 = 1000, 4000
STOP = {"nginx": signal.SIGQUIT, "haproxy": signal.SIGUSR1, "remedy": signal.SIGTERM, "baseline": signal.SIGTERM}


HOST = "origin.bench.test"


def hey(url, requests, env=None, proxy=None):
    """hey over one connection until `requests` answers 200, exactly."""
    cmd = ["hey", "-n", str(requests), "-c", "1", "-t", "60"]
    if proxy:
        cmd += ["-x", proxy]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=300, env=env).stdout
    ok = re.search(r"\[200\]\s+(\d+) responses", out)
    if not ok or int(ok.group(1)) != requests:
        raise SystemExit(f"not {requests} answers 200 from {url}:\n{out}")


def plain_load(port, requests):
    """`requests` answers from `/ok` through the proxy on `port`."""
    wait_port(port, limit=60)
    hey(f"http://127.0.0.1:{port}/ok", requests)


def intercepted_load(port, requests, ca_dir):
    """hey through remedy as HTTPS_PROXY, one tunnel, exactly `requests` answers."""
    bundle = os.path.join(ca_dir, "bundle.pem")
    deadline = time.time() + 60
    # remedy writes its bundle before it binds the proxy listener, and this run's remedy a new
    # one: wait for both.
    while not (os.path.exists(bundle) and port_open(port)):
        if time.time() > deadline:
            raise SystemExit("remedy wrote no bundle.pem, or did not listen, under callgrind")
        time.sleep(0.2)
    hey(f"https://{HOST}/ok", requests, env={**os.environ, "SSL_CERT_FILE": bundle},
        proxy=f"http://127.0.0.1:{port}")
    os.remove(bundle)


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def count(cmd, stop_signal, load, tmp):
    out = os.path.join(tmp, "callgrind.out")
    if os.path.exists(out):
        os.remove(out)
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "REMEDY_LOG": "warn"})
    try:
        load()
    finally:
        # A signal that lands while valgrind holds the process in a blocking call can go
        # unheard (nginx's SIGQUIT right after the last answer): sent again until it exits.
        for _ in range(12):
            p.send_signal(stop_signal)
            try:
                p.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                pass
        else:
            p.kill()
            raise SystemExit(f"{cmd[0]} did not stop on {stop_signal!r} within a minute")
    with open(out) as f:
        lines = f.readlines()
    for line in lines:
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {out}")


def intercepting_config(tmp, name, port, admin):
    """remedy with interception on, one source for the origin under HOST; its CA folder."""
    ca_dir = os.path.join(tmp, f"{name}-ca")
    path = os.path.join(tmp, f"{name}-intercept.yaml")
    write_file(path, f"""
proxy: {{ listen: 127.0.0.1:{port}, max_connections: 4096, intercept: {{ enabled: true, ca_dir: '{ca_dir}' }} }}
admin: {{ listen: 127.0.0.1:{admin} }}
runtime: {{ worker_threads: 1 }}
shutdown: {{ drain_timeout: 1s, linger: 0s }}
sources:
  - {{ name: origin, upstream: 'http://127.0.0.1:{PORTS['direct']}', match: {{ hosts: [{HOST}] }} }}
""")
    return path, ca_dir


def per_request(cmd, stop_signal, load, tmp):
    """Instructions per request: the runs of N2 and N1 requests, differenced."""
    a = count(cmd, stop_signal, lambda: load(N1), tmp)
    b = count(cmd, stop_signal, lambda: load(N2), tmp)
    return (b - a) / (N2 - N1)


def main():
    tmp = workdir("remedy-instructions-")
    write_configs(tmp)
    cmds = commands(tmp)
    # callgrind follows one process: nginx without its master.
    cmds["nginx"] += ["-g", "master_process off;"]
    origin = subprocess.Popen(origin_command(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(PORTS["direct"])
        plain = {}
        for name, cmd in cmds.items():
            port = PORTS[name]
            plain[name] = per_request(cmd, STOP[name], lambda n: plain_load(port, n), tmp)
            print(f"{name}: {plain[name]:.0f} instructions per request", file=sys.stderr, flush=True)
        intercepted = {}
        binaries = {"remedy": (REMEDY, PORTS["remedy"], 18005)}
        if BASELINE:
            binaries["baseline"] = (BASELINE, PORTS["baseline"], 18007)
        for name, (binary, port, admin) in binaries.items():
            config, ca_dir = intercepting_config(tmp, name, port, admin)
            cmd = [binary, "run", "--config", config]
            intercepted[name] = per_request(
                cmd, STOP[name], lambda n: intercepted_load(port, n, ca_dir), tmp)
            print(f"{name} intercepted: {intercepted[name]:.0f} instructions per request", file=sys.stderr,
                  flush=True)
    finally:
        origin.terminate()
        origin.wait(timeout=10)

    print(f"\nUser-space instructions per proxied `/ok` request (callgrind; hey, one connection; the runs of "
          f"{N2} and {N1} requests, differenced):\n")
    print("| proxy | instructions per request | remedy / this |\n|---|---:|---:|")
    for name, n in plain.items():
        print(f"| {name} | {n:.0f} | {plain['remedy'] / n:.2f} |")
    print(f"\nIntercepted `https://{HOST}/ok` through `HTTPS_PROXY` (hey, one tunnel, HTTP/1.1 "
          f"inside; the runs of {N2} and {N1} requests, differenced):\n")
    print("| proxy | instructions per request | remedy / this |\n|---|---:|---:|")
    for name, n in intercepted.items():
        print(f"| {name} | {n:.0f} | {intercepted['remedy'] / n:.2f} |")


if __name__ == "__main__":
    main()
