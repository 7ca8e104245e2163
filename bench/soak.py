"""Soak remedy: a million mixed-status requests, counters checked against the client's own
counts, resident memory compared with its level after the first 100,000."""

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

from proxies import NGINX, remedy_in_front, workdir, write_file

TOTAL = int(os.environ.get("SOAK_REQUESTS", "1000000"))
WARM = 100_000
ORIGIN, PROXY, ADMIN = 18101, 18102, 18103
CODES = [200, 200, 200, 200, 401, 404, 429, 500, 503, 418]

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


def load(n):
    """n requests spread over the status paths, one hey per path running at once (so the
    mix interleaves), 4 connections each; hey waits for every response it sends."""
    share = n // len(CODES)
    procs = [
        subprocess.Popen(["hey", "-n", str(share * CODES.count(c)), "-c", "4", f"http://127.0.0.1:{PROXY}/s/{c}"],
                         stdout=subprocess.PIPE, text=True)
        for c in sorted(set(CODES))
    ]
    counts, errors = {}, []
    for p in procs:
        out = p.communicate(timeout=1800)[0]
        for code, count in re.findall(r"\[(\d+)\]\s+(\d+) responses", out):
            counts[int(code)] = counts.get(int(code), 0) + int(count)
        if "Error distribution" in out:
            errors.append(out.split("Error distribution:", 1)[1].strip()[:200])
    return counts, "; ".join(errors) or "none", ""


def scrape():
    text = urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/metrics").read().decode()
    counts = {}
    for code, value in re.findall(
            r'^remedy_upstream_responses_total\{[^}]*code="(\d+)"[^}]*source="origin"\} (\d+)$', text, re.M):
        counts[int(code)] = counts.get(int(code), 0) + int(value)
    return {k: v for k, v in counts.items() if v}


def main():
    tmp = workdir("remedy-soak-")
    locations = "\n".join(f'    location = /s/{c} {{ return {c} "{c}\\n"; }}' for c in sorted(set(CODES)))
    write_file(f"{tmp}/origin.conf", f"""
worker_processes 1; daemon off; pid {tmp}/origin.pid; error_log {tmp}/origin.err;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 100000000;
  server {{ listen 127.0.0.1:{ORIGIN};
{locations} }} }}
""")
    origin = subprocess.Popen([NGINX, "-c", f"{tmp}/origin.conf", "-p", tmp])
    remedy = remedy_in_front(tmp, ORIGIN, PROXY, ADMIN)
    try:
        start = time.time()
        first, err1, _ = load(WARM)
        rss_warm = rss_kib(remedy.pid)
        rest, err2, _ = load(TOTAL - WARM)
        rss_end = rss_kib(remedy.pid)
        took = time.time() - start
        client = dict(first)
        for k, v in rest.items():
            client[k] = client.get(k, 0) + v
        counted = scrape()
        sent = sum(client.values())
        print(f"requests: {sent} in {took:.0f} s ({sent / took:.0f}/s); client errors: {err1} / {err2}")
        print("| code | client received | remedy counted |\n|---:|---:|---:|")
        for code in sorted(set(client) | set(counted)):
            print(f"| {code} | {client.get(code, 0)} | {counted.get(code, 0)} |")
        growth = (rss_end - rss_warm) / rss_warm * 100
        print(f"RSS after {WARM}: {rss_warm} KiB; after {sent}: {rss_end} KiB ({growth:+.1f}%)")
        ok = client == counted and sent >= TOTAL and abs(growth) <= 10
        print("PASS" if ok else "FAIL")
        sys.exit(0 if ok else 1)
    finally:
        for p in (remedy, origin):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except Exception:
                p.kill()


if __name__ == "__main__":
    main()
