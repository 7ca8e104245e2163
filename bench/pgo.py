"""Records the execution profile that remedy's release build is optimised with (`pgo/`).

An instrumented build of remedy (built by `bench/pgo` before this runs) proxies the traffic a
sidecar sees, on loopback, to an nginx origin: small and 4 KiB and 64 KiB answers, 429s,
uploads, at 32 and 256 connections, over plain HTTP/1.1, TLS with HTTP/1.1 and TLS with
HTTP/2 (by ALPN), HTTPS through `CONNECT` that remedy intercepts, plus requests that match no source, an upstream that refuses connections
and `/metrics` scrapes. Every phase is bounded (wrk's duration, a fixed count of requests).
The counters it leaves behind are merged into `pgo/remedy.profdata`.

The TLS paths are in the training on purpose: the upstreams of real connectors are HTTPS
APIs, and code a profile never saw is laid out as cold.
"""

import glob
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

from proxies import NGINX, ROOT, wait_port, workdir, write_file
from proxies import wrk as run_wrk

INSTRUMENTED = os.path.join(ROOT, "target/pgo-instrumented/release/remedy")
OUT = os.path.join(ROOT, "pgo/remedy.profdata")
PORTS = {"plain": 18201, "tls": 18202, "h2": 18203, "remedy": 18204, "admin": 18205, "refused": 18206}
SECONDS = int(os.environ.get("PGO_SECONDS", "3"))
# A host the connector reaches through HTTPS_PROXY, which remedy intercepts.
INTERCEPTED = "intercepted.bench.test"


def certificates(tmp):
    """A CA and a certificate for 127.0.0.1 signed by it, as an HTTPS API has."""
    def openssl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ca, key = os.path.join(tmp, "ca.pem"), os.path.join(tmp, "ca.key")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", ca, "-days", "2", "-subj", "/CN=remedy bench CA")
    leaf_key, csr, leaf = (os.path.join(tmp, n) for n in ("leaf.key", "leaf.csr", "leaf.pem"))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", leaf_key, "-out", csr, "-subj", "/CN=127.0.0.1")
    ext = os.path.join(tmp, "leaf.ext")
    write_file(ext, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", key, "-CAcreateserial",
            "-out", leaf, "-days", "2", "-extfile", ext)
    return ca, leaf, leaf_key


def write_configs(tmp, ca, cert, key):
    for size in (4096, 65536):
        write_file(os.path.join(tmp, f"{size}.txt"), "x" * size)
    locations = f"""
    location = /ok {{ return 200 "ok\\n"; }}
    location = /429 {{ return 429 "slow down\\n"; }}
    location = /4k {{ default_type text/plain; alias {tmp}/4096.txt; }}
    location = /64k {{ default_type text/plain; alias {tmp}/65536.txt; }}
    location = /upload {{ client_body_buffer_size 64k; proxy_pass http://127.0.0.1:{PORTS['plain']}/ok; }}"""
    tls = f"ssl_certificate {cert}; ssl_certificate_key {key};"
    write_file(os.path.join(tmp, "origin.conf"), f"""
worker_processes 1; daemon off; pid {tmp}/origin.pid; error_log {tmp}/origin.err;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{PORTS['plain']}; {locations} }}
  server {{ listen 127.0.0.1:{PORTS['tls']} ssl; {tls} {locations} }}
  server {{ listen 127.0.0.1:{PORTS['h2']} ssl http2; {tls} {locations} }} }}
""")
    source = "  - {{ name: {0}, upstream: '{1}', match: {{ path_prefix: /{0} }}{2} }}\n"
    sources = [
        source.format("plain", f"http://127.0.0.1:{PORTS['plain']}", ""),
        source.format("tls", f"https://127.0.0.1:{PORTS['tls']}", f", ca_file: {ca}"),
        source.format("h2", f"https://127.0.0.1:{PORTS['h2']}", f", ca_file: {ca}"),
        source.format("refused", f"http://127.0.0.1:{PORTS['refused']}", ""),
        f"  - {{ name: intercepted, upstream: 'https://127.0.0.1:{PORTS['tls']}', ca_file: {ca}, "
        f"match: {{ hosts: [{INTERCEPTED}] }} }}\n",
    ]
    write_file(os.path.join(tmp, "remedy.yaml"), f"""
proxy:
  listen: 127.0.0.1:{PORTS['remedy']}
  max_connections: 4096
  intercept: {{ enabled: true, ca_dir: '{os.path.join(tmp, "remedy-ca")}' }}
admin: {{ listen: 127.0.0.1:{PORTS['admin']} }}
runtime: {{ worker_threads: 1 }}
shutdown: {{ drain_timeout: 1s, linger: 0s }}
sources:
{''.join(sources)}""")
    write_file(os.path.join(tmp, "upload.lua"),
        'wrk.method = "POST"\nwrk.body = string.rep("u", 2048)\n'
        'wrk.headers["Content-Type"] = "application/json"\n')


def wrk(path, conns, script=None):
    args = ["-t1", f"-c{conns}", f"-d{SECONDS}s"] + (["-s", script] if script else [])
    out = run_wrk([*args, f"http://127.0.0.1:{PORTS['remedy']}{path}"], expect_2xx=not path.endswith("/429"),
                  timeout=SECONDS + 30)
    requests = re.search(r"(\d+) requests in", out).group(1)
    print(f"  {path:<16} c={conns:<4} {requests} requests", flush=True)


def hey_through_connect(conns):
    """Keep-alive HTTPS through remedy as HTTPS_PROXY; hey does not verify the certificate."""
    out = subprocess.run(["hey", "-z", f"{SECONDS}s", "-c", str(conns), "-x", f"http://127.0.0.1:{PORTS['remedy']}",
                          f"https://{INTERCEPTED}/ok"], capture_output=True, text=True, check=True,
                         timeout=SECONDS + 30).stdout
    answered = re.search(r"\[200\]\s+(\d+) responses", out)
    if not answered:
        sys.exit(f"no 200 through CONNECT:\n{out}")
    print(f"  CONNECT /ok       c={conns:<4} {answered.group(1)} requests", flush=True)


def fetch(url, times):
    for _ in range(times):
        try:
            urllib.request.urlopen(url, timeout=5).read()
        except urllib.error.HTTPError:
            pass


def main():
    if not os.access(INSTRUMENTED, os.X_OK):
        sys.exit(f"{INSTRUMENTED} is missing: run bench/pgo, which builds it")
    tmp = workdir("remedy-pgo-")
    ca, cert, key = certificates(tmp)
    write_configs(tmp, ca, cert, key)
    origin = subprocess.Popen([NGINX, "-c", os.path.join(tmp, "origin.conf"), "-p", tmp],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "REMEDY_LOG": "warn", "LLVM_PROFILE_FILE": os.path.join(tmp, "remedy-%p.profraw")}
    remedy = subprocess.Popen([INSTRUMENTED, "run", "--config", os.path.join(tmp, "remedy.yaml")],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(PORTS["plain"])
        wait_port(PORTS["remedy"])
        upload = os.path.join(tmp, "upload.lua")
        for source in ("plain", "tls", "h2"):
            print(f"{source}:", flush=True)
            for conns in (32, 256):
                wrk(f"/{source}/ok", conns)
            wrk(f"/{source}/4k", 32)
            wrk(f"/{source}/64k", 32)
            wrk(f"/{source}/429", 32)
            wrk(f"/{source}/upload", 32, upload)
        print("intercepted (CONNECT, then TLS inside the tunnel):", flush=True)
        for conns in (32, 256):
            hey_through_connect(conns)
        print("no source, refused upstream, scrapes", flush=True)
        fetch(f"http://127.0.0.1:{PORTS['remedy']}/nowhere", 200)
        fetch(f"http://127.0.0.1:{PORTS['remedy']}/refused/ok", 200)
        fetch(f"http://127.0.0.1:{PORTS['admin']}/metrics", 50)
    finally:
        # The counters are written when remedy exits; SIGTERM is its graceful stop.
        remedy.send_signal(signal.SIGTERM)
        remedy.wait(timeout=30)
        origin.terminate()
        origin.wait(timeout=10)
    raws = glob.glob(os.path.join(tmp, "remedy-*.profraw"))
    if remedy.returncode != 0 or not raws:
        sys.exit(f"the instrumented remedy exited with {remedy.returncode} and left {len(raws)} profiles")
    profdata = os.environ.get("LLVM_PROFDATA", "llvm-profdata")
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    subprocess.run([profdata, "merge", "--sparse", "-o", OUT, *raws], check=True)
    print(f"wrote {os.path.relpath(OUT, ROOT)} ({os.path.getsize(OUT) // 1024} KiB)")


if __name__ == "__main__":
    main()
