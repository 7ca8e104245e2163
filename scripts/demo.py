"""remedy at work on one machine without internet: a stand-in API, remedy on config/demo.yaml,
Prometheus and Alertmanager; one connector run the way a CronJob makes it (a handful of calls,
then SIGTERM to remedy, which waits for Prometheus's final scrape); then every alert that
Alertmanager holds, with the FAQ's advice it carries. `scripts/demo` installs what it needs
and runs this.

    scripts/demo [--keep]

--keep leaves Prometheus and Alertmanager running for a look, and prints how to stop them.
Everything listens on 127.0.0.1; logs and data go to target/demo/.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "demo")
FAKE_API, PROXY, ADMIN, PROMETHEUS, ALERTMANAGER = 8781, 8780, 9780, 9790, 9793
# What Alertmanager must hold before the demo is over: (alert, source).
EXPECTED = {("ConnectorCredentialsRejected", "crm"), ("ConnectorRateLimited", "ads")}


def say(text=""):
    print(text, flush=True)


class Demo:
    def __init__(self, keep):
        self.keep = keep
        self.procs = {}
        self.logs = os.path.join(WORK, "logs")

    def start(self, name, cmd, detach=False):
        log = open(os.path.join(self.logs, f"{name}.log"), "w")
        self.procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=detach)

    def fail(self, message):
        say(f"\nremedy demo failed: {message}")
        say(f"logs: {self.logs}")
        self.stop_all(everything=True)
        sys.exit(1)

    def wait(self, what, check, limit):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if name != "remedy" and p.poll() is not None:
                    self.fail(f"{name} exited with code {p.returncode} while waiting for {what}")
            found = check()
            if found:
                return found
            time.sleep(0.2)
        self.fail(f"timed out after {limit} s waiting for {what}")

    def stop_all(self, everything=False):
        for name, p in self.procs.items():
            if p.poll() is None and (everything or not self.keep or name not in ("prometheus", "alertmanager")):
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()


def port_free(port):
    """Whether a server could listen on `port` now (as servers do, past connections that
    linger in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except (urllib.error.URLError, OSError):
        return None, b""


def get_json(url):
    status, body = get(url)
    return json.loads(body) if status == 200 else None


def connector_call(url, opener, headers=()):
    """One API call as a connector makes it; the status it got (an error status is an answer)."""
    req = urllib.request.Request(url, headers=dict(headers))
    try:
        with opener.open(req, timeout=10) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def write_configs(demo):
    rules = subprocess.run([demo.remedy, "rules", "--config", "config/demo.yaml"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
    with open(os.path.join(WORK, "rules.yaml"), "w") as f:
        f.write(rules)
    with open(os.path.join(WORK, "prometheus.yml"), "w") as f:
        f.write(f"""# Written by scripts/demo: scrape remedy and evaluate its rules every second.
global: {{ scrape_interval: 1s, evaluation_interval: 1s }}
rule_files: [rules.yaml]
alerting:
  alertmanagers: [{{ static_configs: [{{ targets: ['127.0.0.1:{ALERTMANAGER}'] }}] }}]
scrape_configs:
  - job_name: remedy
    static_configs:
      - targets: ['127.0.0.1:{ADMIN}']
        labels: {{ namespace: demo, pod: extract-run-1 }}
""")
    # The example Alertmanager config, its routes and inhibitions as shipped, with receivers
    # that deliver nowhere: the demo reads the alerts from Alertmanager's API.
    example = open(os.path.join(ROOT, "config", "alertmanager", "alertmanager.yml")).read()
    head, rest = example.split("\nreceivers:\n", 1)
    inhibit = rest[rest.index("\ninhibit_rules:"):]
    with open(os.path.join(WORK, "alertmanager.yml"), "w") as f:
        f.write(head + "\nreceivers:\n  - name: connector-team\n  - name: connector-oncall\n" + inhibit)
    shutil.copy(os.path.join(ROOT, "config", "alertmanager", "remedy.tmpl"), WORK)


def connector_run(demo):
    """The extract: a credential that has expired, then report calls past the API's quota,
    in the three ways a connector can reach remedy."""
    base = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    http_proxy = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{PROXY}"}))
    tls = ssl.create_default_context(cafile=os.path.join(WORK, "ca", "bundle.pem"))
    https_proxy = urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": f"http://127.0.0.1:{PROXY}"}),
        urllib.request.HTTPSHandler(context=tls))
    calls = [("base URL", base, f"http://127.0.0.1:{PROXY}/crm/v1/contacts",
              [("Authorization", "Bearer expired-token")])]
    calls += [("http_proxy", http_proxy, "http://ads.demo.test/v1/reports?date=2026-12-01", [])] * 6
    calls += [("https_proxy", https_proxy, "https://ads.demo.test/v1/reports?date=2026-12-02", [])] * 6
    for mode, opener, url, headers in calls:
        status = connector_call(url, opener, headers)
        say(f"  {status}  GET {url}  ({mode})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true",
                        help="leave Prometheus and Alertmanager running for a look")
    args = parser.parse_args()
    started = time.monotonic()
    demo = Demo(args.keep)
    demo.remedy = os.path.join(ROOT, "target", "release", "remedy")
    taken = [p for p in (FAKE_API, PROXY, ADMIN, PROMETHEUS, ALERTMANAGER) if not port_free(p)]
    if taken:
        say(f"remedy demo: port(s) {', '.join(map(str, taken))} on 127.0.0.1 are in use; the demo needs "
            f"{FAKE_API}, {PROXY}, {ADMIN}, {PROMETHEUS} and {ALERTMANAGER} (a demo left with --keep? "
            "see target/demo/pids)")
        sys.exit(1)
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(demo.logs)
    write_configs(demo)

    say("remedy demo: one connector run against a stand-in API, counted and alerted")
    say(f"  fake API      http://127.0.0.1:{FAKE_API}   (scripts/fake_api.py)")
    say(f"  remedy        proxy 127.0.0.1:{PROXY}, admin http://127.0.0.1:{ADMIN}   (config/demo.yaml)")
    say(f"  Prometheus    http://127.0.0.1:{PROMETHEUS}")
    say(f"  Alertmanager  http://127.0.0.1:{ALERTMANAGER}")
    demo.start("fake-api", [sys.executable, "scripts/fake_api.py", "--port", str(FAKE_API), "--verbose"])
    demo.start("remedy", [demo.remedy, "run", "--config", "config/demo.yaml"])
    demo.start("alertmanager", ["prometheus-alertmanager", f"--config.file={WORK}/alertmanager.yml",
                                f"--storage.path={WORK}/alertmanager-data",
                                f"--web.listen-address=127.0.0.1:{ALERTMANAGER}",
                                "--cluster.listen-address="], detach=args.keep)
    demo.start("prometheus", ["prometheus", f"--config.file={WORK}/prometheus.yml",
                              f"--storage.tsdb.path={WORK}/prometheus-data",
                              f"--web.listen-address=127.0.0.1:{PROMETHEUS}"], detach=args.keep)
    demo.wait("remedy to be ready", lambda: get(f"http://127.0.0.1:{ADMIN}/-/ready")[0] == 200, 20)
    demo.wait("the fake API", lambda: get(f"http://127.0.0.1:{FAKE_API}/health")[0] == 200, 20)
    demo.wait("Alertmanager", lambda: get(f"http://127.0.0.1:{ALERTMANAGER}/-/ready")[0] == 200, 30)
    up = f"http://127.0.0.1:{PROMETHEUS}/api/v1/query?query=up%7Bjob%3D%22remedy%22%7D%3D%3D1"
    demo.wait("Prometheus's first scrape of remedy",
              lambda: (get_json(up) or {}).get("data", {}).get("result"), 60)

    say("\nThe connector's run: each call through remedy, and the status it got")
    connector_run(demo)

    say("\nThe run is over: the kubelet would now send remedy SIGTERM")
    remedy = demo.procs["remedy"]
    stopped = time.monotonic()
    remedy.send_signal(signal.SIGTERM)
    try:
        code = remedy.wait(timeout=40)
    except subprocess.TimeoutExpired:
        demo.fail("remedy did not exit within 40 s of SIGTERM")
    log = open(os.path.join(demo.logs, "remedy.log")).read()
    final = "after Prometheus's final scrape" if "final scrape served" in log else "without a final scrape"
    say(f"  remedy drained and exited {code} {time.monotonic() - stopped:.1f} s later, {final}")
    if code != 0:
        demo.fail(f"remedy exited {code}")

    say("\nWaiting for Alertmanager to hold the alerts (Prometheus evaluates every second) ...")
    alerts_url = f"http://127.0.0.1:{ALERTMANAGER}/api/v2/alerts?active=true"

    def holding():
        alerts = get_json(alerts_url) or []
        held = {(a["labels"].get("alertname"), a["labels"].get("source")) for a in alerts}
        return alerts if EXPECTED <= held else None

    alerts = demo.wait(", ".join(f"{a} for {s}" for a, s in sorted(EXPECTED)), holding, 90)
    say(f"\nFiring in Alertmanager ({len(alerts)}), each with the FAQ's advice in its remediation annotation:")
    for a in sorted(alerts, key=lambda a: a["labels"].get("alertname", "")):
        labels, notes = a["labels"], a["annotations"]
        say(f"\n  {labels.get('alertname')}  source={labels.get('source')}  severity={labels.get('severity')}"
            f"  remediation={labels.get('remediation')}")
        say(f"    summary:     {notes.get('summary')}")
        say(f"    remediation: {notes.get('remediation')}")
        say(f"    runbook:     {notes.get('runbook_url')}")

    say(f"\nPrometheus:   http://127.0.0.1:{PROMETHEUS}/alerts")
    say(f"Alertmanager: http://127.0.0.1:{ALERTMANAGER}/#/alerts")
    demo.stop_all()
    if args.keep:
        pids = [str(demo.procs[n].pid) for n in ("prometheus", "alertmanager")]
        with open(os.path.join(WORK, "pids"), "w") as f:
            f.write(" ".join(pids) + "\n")
        say(f"Prometheus and Alertmanager stay up (--keep); stop them with: kill {' '.join(pids)}")
    else:
        say("Everything the demo started is stopped (scripts/demo --keep leaves Prometheus and Alertmanager up).")
    say(f"Done in {time.monotonic() - started:.0f} s; logs in {demo.logs}")


if __name__ == "__main__":
    main()
