"""HTTPS through HTTPS_PROXY: remedy intercepting CONNECT beside nginx terminating TLS itself.

An nginx origin serves /ok over TLS. In front of it, with keep-alive to it on both:
- nginx, terminating the client's TLS with a certificate from a CA made here, and proxying to
  the origin over verified TLS with `proxy_ssl_session_reuse on`;
- remedy with `proxy.intercept` on, bringing that same CA (ca_cert_file/ca_key_file), so both
  present certificates of one CA, and forwarding to the origin over verified TLS.
hey (keep-alive) loads the origin directly, nginx directly, and remedy through `-x` (CONNECT,
then TLS inside the tunnel), taking turns for several rounds; prints requests per second,
added p99 over the direct origin, and the proxy's CPU per request. Every process it starts
is stopped when it ends.
"""

import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request

from proxies import NGINX, PINNED, REMEDY, cpu_ticks, pids_of, start, stop_all, workdir, write_file

SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONNS = [32]
HOST = "bench.example.test"
PORTS = {"direct": 18011, "remedy": 18012, "nginx": 18013}
ADMIN = 18015
TICK = os.sysconf("SC_CLK_TCK")


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def certificates(tmp):
    """A CA, the origin's certificate and the nginx proxy's, all ECDSA P-256, keys PKCS#8."""
    p = lambda name: os.path.join(tmp, name)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", p("ca.key"), "-out", p("ca.crt"), "-days", "2",
            "-subj", "/CN=remedy bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, san in (("origin", "DNS:origin.bench.test,IP:127.0.0.1"), ("front", f"DNS:{HOST},IP:127.0.0.1")):
        openssl("req", *ec, "-keyout", p(f"{name}.key"), "-out", p(f"{name}.csr"), "-subj", f"/CN={name}")
        write_file(p(f"{name}.ext"), f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
        openssl("x509", "-req", "-in", p(f"{name}.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"),
                "-CAcreateserial", "-days", "2", "-extfile", p(f"{name}.ext"), "-out", p(f"{name}.crt"))


def configs(tmp):
    p = lambda name: os.path.join(tmp, name)
    write_file(p("origin-tls.conf"), f"""
worker_processes 1; daemon off; pid {tmp}/origin-tls.pid; error_log {tmp}/origin-tls.err;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{PORTS['direct']} ssl;
    ssl_certificate {p('origin.crt')}; ssl_certificate_key {p('origin.key')};
    location = /ok {{ return 200 "ok\\n"; }} }} }}
""")
    write_file(p("front-tls.conf"), f"""
worker_processes 1; daemon off; pid {tmp}/front-tls.pid; error_log {tmp}/front-tls.err;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  upstream origin {{ server 127.0.0.1:{PORTS['direct']}; keepalive 512; keepalive_requests 1000000; }}
  server {{ listen 127.0.0.1:{PORTS['nginx']} ssl;
    ssl_certificate {p('front.crt')}; ssl_certificate_key {p('front.key')};
    location / {{ proxy_pass https://origin; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_session_reuse on; proxy_ssl_verify on; proxy_ssl_name origin.bench.test;
      proxy_ssl_trusted_certificate {p('ca.crt')}; }} }} }}
""")
    write_file(p("remedy-tls.yaml"), f"""
proxy:
  listen: 127.0.0.1:{PORTS['remedy']}
  max_connections: 4096
  intercept: {{ enabled: true, ca_dir: '{p('remedy-ca')}', ca_cert_file: '{p('ca.crt')}', ca_key_file: '{p('ca.key')}' }}
admin: {{ listen: 127.0.0.1:{ADMIN} }}
runtime: {{ worker_threads: 1 }}
shutdown: {{ drain_timeout: 1s, linger: 0s }}
sources:
  - {{ name: origin, upstream: 'https://127.0.0.1:{PORTS['direct']}', ca_file: '{p('ca.crt')}', match: {{ hosts: [{HOST}] }} }}
""")


def hey(target, conns):
    """One load run; (requests, req/s, p99 µs). Checks every answer was a 200."""
    url = f"https://127.0.0.1:{PORTS[target]}/ok"
    proxy = []
    if target == "remedy":
        url, proxy = f"https://{HOST}/ok", ["-x", f"http://127.0.0.1:{PORTS['remedy']}"]
    out = subprocess.run(["hey", "-z", f"{SECONDS}s", "-c", str(conns), *proxy, url],
                         capture_output=True, text=True, check=True, timeout=SECONDS + 60).stdout
    codes = dict((int(c), int(n)) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    if set(codes) != {200}:
        raise SystemExit(f"hey against {target}: answers {codes}\n{out}")
    p99 = float(re.search(r"99%+ in ([\d.]+) secs", out).group(1)) * 1e6
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return codes[200], rps, p99


def opened_tunnels():
    """CONNECTs remedy intercepted, from its own counter."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/metrics", timeout=5).read().decode()
    m = re.search(r'^remedy_intercept_connections_total\{outcome="intercepted"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def wait_ready(url, limit=15):
    deadline = time.time() + limit
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except Exception:
            if time.time() > deadline:
                raise SystemExit(f"{url} never answered")
            time.sleep(0.05)


def main():
    tmp = workdir("remedy-bench-https-")
    certificates(tmp)
    configs(tmp)
    if PINNED:
        os.sched_setaffinity(0, PINNED[0])
    start([NGINX, "-c", os.path.join(tmp, "origin-tls.conf"), "-p", tmp])
    procs = {
        "nginx": start([NGINX, "-c", os.path.join(tmp, "front-tls.conf"), "-p", tmp], proxy=True),
        "remedy": start([REMEDY, "run", "--config", os.path.join(tmp, "remedy-tls.yaml")], proxy=True,
                        env={**os.environ, "REMEDY_LOG": "warn"}),
    }
    wait_ready(f"http://127.0.0.1:{ADMIN}/-/ready")
    time.sleep(1)
    results = {}
    order = ["direct", "nginx", "remedy"]
    for rnd in range(ROUNDS):
        turn = order[:1] + (order[1:] if rnd % 2 == 0 else order[:0:-1])
        for conns in CONNS:
            for target in turn:
                p = procs.get(target)
                before = cpu_ticks(pids_of(p)) if p else 0
                reqs, rps, p99 = hey(target, conns)
                cpu = (cpu_ticks(pids_of(p)) - before) / TICK * 1e6 / reqs if p else None
                results.setdefault((conns, target), []).append((rps, p99, cpu, reqs))
                print(f"round {rnd + 1} https c={conns} {target:7} {rps:9.0f} req/s p99 {p99:8.0f}us"
                      + (f" cpu {cpu:6.1f}us/req" if cpu else ""), file=sys.stderr, flush=True)
    med = statistics.median
    print(f"\nHTTPS: {ROUNDS} rounds x {SECONDS}s, hey with keep-alive; remedy through CONNECT (-x), "
          "nginx terminating TLS itself; medians.\n")
    print("| scenario | target | req/s | p99 µs | added p99 µs | CPU µs/req |\n|---|---|---:|---:|---:|---:|")
    for conns in CONNS:
        direct_p99 = med([r[1] for r in results[(conns, "direct")]])
        for target in order:
            r = results[(conns, target)]
            rps, p99 = med([x[0] for x in r]), med([x[1] for x in r])
            cpu = med([x[2] for x in r]) if r[0][2] is not None else None
            added = f"{p99 - direct_p99:.0f}" if target != "direct" else ""
            print(f"| https /ok c={conns} | {target} | {rps:.0f} | {p99:.0f} | {added} | "
                  + (f"{cpu:.1f}" if cpu is not None else "") + " |")
        cpu_ratio = (med([x[2] for x in results[(conns, "remedy")]])
                     / med([x[2] for x in results[(conns, "nginx")]]))
        added = {t: med([x[1] for x in results[(conns, t)]]) - direct_p99 for t in ("remedy", "nginx")}
        tunnels = opened_tunnels()
        served = sum(r[3] for r in results[(conns, "remedy")])
        print(f"\nremedy opened {tunnels:.0f} tunnels for {served} requests: keep-alive held "
              f"({served / max(tunnels, 1):.0f} requests per tunnel).")
        print(f"\nc={conns}: remedy's CPU per request is {cpu_ratio:.2f}x nginx's; added p99 "
              f"{added['remedy']:.0f} µs against nginx's {added['nginx']:.0f} µs "
              f"({added['remedy'] - added['nginx']:+.0f} µs)")


if __name__ == "__main__":
    try:
        main()
    finally:
        stop_all()
