"""A fleet of scheduled extracts, time-scaled: RUNS short runs of remedy (three sources each, a
few of them failing), each a fresh process found by a real Prometheus through file_sd, scraped
until it exits. Two fleets side by side in one run, each with a Prometheus of its own: one with
remedy's default series (`metrics.series: lean`), one with the series of before
(`metrics.series: full`). Both load the rules `remedy rules` generates.

At each checkpoint (every RUNS / CHECKPOINTS runs) it reads from each Prometheus its head series,
its resident memory, the time its last rule evaluation took, and the time the dashboard's
queries take (each query five times, the median; the sum over the queries), then prints how
each grows with the number of runs.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REMEDY = os.environ.get("BENCH_REMEDY", os.path.join(ROOT, "target/release/remedy"))
PROMETHEUS = os.path.join(ROOT, "target/tools/root/usr/bin/prometheus")
NGINX = "/usr/sbin/nginx"
RUNS = int(os.environ.get("BENCH_RUNS", "300"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "600"))
CHECKPOINTS = int(os.environ.get("BENCH_CHECKPOINTS", "3"))
ORIGIN = 18031
FLEETS = {"lean": {"prom": 18032, "ports": 20000}, "full": {"prom": 18033, "ports": 22000}}
SOURCES = ("crm", "ads", "shop")


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def wait_http(url, limit=30):
    deadline = time.time() + limit
    while True:
        try:
            get(url, timeout=1)
            return
        except Exception:
            if time.time() > deadline:
                raise SystemExit(f"nothing answers at {url}")
            time.sleep(0.1)


def query(prom, promql):
    url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    body = json.loads(get(url, timeout=60))
    if body.get("status") != "success":
        raise SystemExit(f"query failed: {promql}: {body}")
    return body["data"]["result"]


def scalar(prom, promql):
    r = query(prom, promql)
    return float(r[0]["value"][1]) if r else 0.0


def dashboard_queries():
    """The dashboard's queries, with Grafana's variables filled in (every source, 1h range)."""
    board = json.loads(subprocess.run([REMEDY, "dashboard"], capture_output=True, text=True, check=True).stdout)
    out = []
    for panel in board["panels"]:
        for t in panel.get("targets", []):
            expr = t["expr"].replace("$source", ".*").replace("$__range", "1h").replace("$__rate_interval", "1m")
            out.append((panel["title"], expr))
    return out


def setup(tmp):
    write(os.path.join(tmp, "origin.conf"), f"""
worker_processes 1; daemon off; pid {tmp}/origin.pid; error_log {tmp}/origin.err;
events {{ worker_connections 1024; }}
http {{ access_log off; default_type application/json;
  server {{ listen 127.0.0.1:{ORIGIN};
    location / {{ return 200 '{{"ok": true}}'; }}
    location ~ /401$ {{ return 401 '{{"error": "unauthorized"}}'; }}
    location ~ /429$ {{ return 429 '{{"error": "slow down"}}'; }}
    location ~ /500$ {{ return 500 '{{"error": "oops"}}'; }} }} }}
""")
    rules = subprocess.run([REMEDY, "rules"], capture_output=True, text=True, check=True).stdout
    write(os.path.join(tmp, "rules.yaml"), rules)
    for name, f in FLEETS.items():
        d = os.path.join(tmp, name)
        os.makedirs(d)
        write(os.path.join(d, "targets.json"), "[]")
        write(os.path.join(d, "prometheus.yml"), f"""
global: {{ scrape_interval: 1s, evaluation_interval: 5s }}
rule_files: ['{tmp}/rules.yaml']
scrape_configs:
  - job_name: remedy
    file_sd_configs: [{{ files: ['{d}/targets.json'], refresh_interval: 1s }}]
  - job_name: prometheus
    static_configs: [{{ targets: ['127.0.0.1:{f["prom"]}'] }}]
""")


class Fleet:
    """One fleet: its Prometheus, its file_sd targets, its runs."""

    def __init__(self, name, tmp):
        self.name, self.tmp = name, tmp
        self.dir = os.path.join(tmp, name)
        self.prom = FLEETS[name]["prom"]
        self.base = FLEETS[name]["ports"]
        self.targets = {}
        self.lock = threading.Lock()
        self.procs = []
        self.failed = []
        self.prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.dir}/prometheus.yml", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{self.prom}"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "prometheus.log"), "w"))

    def publish(self):
        with self.lock:
            items = [{"targets": [t], "labels": labels} for t, labels in self.targets.items()]
            tmp = os.path.join(self.dir, "targets.json.tmp")
            write(tmp, json.dumps(items))
            os.replace(tmp, os.path.join(self.dir, "targets.json"))

    def run(self, i):
        """One run: start remedy, wait for it, make its calls, stop it, wait for its exit."""
        proxy = self.base + 2 * (i % 500)
        admin = proxy + 1
        config = os.path.join(self.dir, f"run-{i}.yaml")
        sources = "".join(
            f"  - {{ name: {s}, upstream: 'http://127.0.0.1:{ORIGIN}', match: {{ path_prefix: /{s} }} }}\n"
            for s in SOURCES)
        write(config, f"""
proxy: {{ listen: 127.0.0.1:{proxy} }}
admin: {{ listen: 127.0.0.1:{admin} }}
metrics: {{ series: {self.name} }}
shutdown: {{ drain_timeout: 1s, linger: 5s }}
sources:
{sources}""")
        p = subprocess.Popen([REMEDY, "run", "--config", config], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env={**os.environ, "REMEDY_LOG": "warn"})
        target = f"127.0.0.1:{admin}"
        try:
            wait_http(f"http://{target}/-/ready")
            with self.lock:
                self.targets[target] = {"namespace": "data", "pod": f"extract-{i}"}
            self.publish()
            paths = ["/crm/deals", "/crm/deals", "/ads/report", "/ads/report", "/shop/orders"]
            if i % 5 == 0:
                paths += ["/ads/report/429", "/ads/report/429"]
            if i % 10 == 3:
                paths += ["/crm/deals/401"]
            if i % 7 == 1:
                paths += ["/shop/orders/500"]
            for path in paths:
                try:
                    get(f"http://127.0.0.1:{proxy}{path}")
                except urllib.error.HTTPError:
                    pass
            time.sleep(1)
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
        except Exception as e:
            self.failed.append(f"run {i}: {e}")
            p.kill()
            p.wait()
        finally:
            with self.lock:
                self.targets.pop(target, None)
            self.publish()

    def measure(self, queries):
        head = scalar(self.prom, "prometheus_tsdb_head_series")
        rss = scalar(self.prom, 'process_resident_memory_bytes{job="prometheus"}') / 2**20
        rules = scalar(self.prom, "sum(prometheus_rule_group_last_duration_seconds)") * 1e3
        total = 0.0
        for _, q in queries:
            times = []
            for _ in range(5):
                t = time.perf_counter()
                query(self.prom, q)
                times.append(time.perf_counter() - t)
            total += statistics.median(times)
        return head, rss, rules, total * 1e3

    def stop(self):
        self.prometheus.terminate()
        self.prometheus.wait(timeout=30)


def main():
    tmp = tempfile.mkdtemp(prefix="remedy-bench-fleet-")
    setup(tmp)
    origin = subprocess.Popen([NGINX, "-c", os.path.join(tmp, "origin.conf"), "-p", tmp],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fleets = {name: Fleet(name, tmp) for name in FLEETS}
    queries = dashboard_queries()
    rows = []
    try:
        for f in fleets.values():
            wait_http(f"http://127.0.0.1:{f.prom}/-/ready")
        every = SECONDS / RUNS
        threads = []
        start = time.time()
        step = max(1, RUNS // CHECKPOINTS)
        for i in range(RUNS):
            delay = start + i * every - time.time()
            if delay > 0:
                time.sleep(delay)
            for f in fleets.values():
                t = threading.Thread(target=f.run, args=(i,))
                t.start()
                threads.append(t)
            if (i + 1) % step == 0 or i + 1 == RUNS:
                for t in threads:
                    t.join()
                threads = []
                time.sleep(12)  # two rule evaluations after the last run's final scrape
                row = {"runs": i + 1}
                for name, f in fleets.items():
                    row[name] = f.measure(queries)
                rows.append(row)
                print(f"{i + 1} runs: " + "; ".join(
                    f"{n} head {v[0]:.0f} rss {v[1]:.0f} MiB rules {v[2]:.1f} ms queries {v[3]:.1f} ms"
                    for n, v in row.items() if n != "runs"), file=sys.stderr, flush=True)
    finally:
        for f in fleets.values():
            f.stop()
        origin.terminate()
        origin.wait(timeout=10)
    failed = [m for f in fleets.values() for m in f.failed]
    if failed:
        raise SystemExit("runs failed:\n" + "\n".join(failed))
    print(f"\n{RUNS} runs over {SECONDS}s, each three sources and a fresh remedy found through file_sd; "
          f"Prometheus 2.42 scraping every 1s, evaluating remedy's rules every 5s:\n")
    print("| runs | head series lean | head series full | Prometheus RSS lean | RSS full | rule evaluation lean | full | dashboard queries lean | full |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lean, full = r["lean"], r["full"]
        print(f"| {r['runs']} | {lean[0]:.0f} | {full[0]:.0f} | {lean[1]:.0f} MiB | {full[1]:.0f} MiB | "
              f"{lean[2]:.1f} ms | {full[2]:.1f} ms | {lean[3]:.0f} ms | {full[3]:.0f} ms |")
    first, last = rows[0], rows[-1]
    runs = last["runs"] - first["runs"]
    if runs:
        for name in FLEETS:
            per_run = (last[name][0] - first[name][0]) / runs
            print(f"\n{name}: {per_run:.1f} new head series per run")


if __name__ == "__main__":
    main()
