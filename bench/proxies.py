"""The benchmark's cast, shared by `side_by_side.py`, `instructions.py` and `profile.py`: an nginx
origin and nginx, HAProxy and remedy as reverse proxies in front of it, one worker each, on
loopback; and the helpers that start them (the proxies on a CPU of their own where there are
two), run wrk and read their CPU time and memory from /proc."""

import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

PORTS = {"direct": 18001, "nginx": 18002, "haproxy": 18003, "remedy": 18004}
ADMIN = 18005
# Another remedy binary to run beside this checkout's, as one more target ("baseline"): a
# build without the profile, or of an earlier commit, measured in the same run.
BASELINE = os.environ.get("BENCH_BASELINE")
BASELINE_ADMIN = 18007
if BASELINE:
    PORTS["baseline"] = 18006
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NGINX = "/usr/sbin/nginx"
HAPROXY = "/usr/sbin/haproxy"
# The remedy measured: this checkout's release build, or BENCH_REMEDY (a build without the
# profile, say, beside BENCH_BASELINE built the same way).
REMEDY = os.environ.get("BENCH_REMEDY", os.path.join(ROOT, "target/release/remedy"))


def write_file(path, text):
    """Writes `text` to `path` (and closes it)."""
    with open(path, "w") as f:
        f.write(text)


def workdir(prefix):
    """A scratch directory the origin's workers can read files from: nginx started as root
    serves files as `www-data`, and `mkdtemp` makes directories only their owner may enter."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    os.chmod(tmp, 0o755)
    return tmp


def wrk(args, expect_2xx=True, env=None, timeout=60):
    """Runs wrk with `args` and returns its report, after checking that the answers were what
    the scenario asks for (all 2xx, or none with `expect_2xx=False`): a benchmark of error
    pages would measure the wrong thing."""
    out = subprocess.run(["wrk", *args], capture_output=True, text=True, check=True, timeout=timeout,
                         env=env).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    other = int(m.group(1)) if m else 0
    wrong = other if expect_2xx else requests - other
    if requests == 0 or wrong:
        raise SystemExit(f"wrk {' '.join(args)}: {wrong} of {requests} answers "
                         f"{'not ' if expect_2xx else ''}2xx\n{out}")
    return out


def write_configs(tmp):
    """Writes the origin's and the three proxies' configs into `tmp`."""
    write_file(os.path.join(tmp, "4k.txt"), "x" * 4096)
    write_file(os.path.join(tmp, "origin.conf"), f"""
worker_processes 1; daemon off; pid {tmp}/origin.pid; error_log {tmp}/origin.err;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{PORTS['direct']};
    location = /ok {{ return 200 "ok\\n"; }}
    location = /4k {{ default_type text/plain; alias {tmp}/4k.txt; }}
    location = /429 {{ return 429 "slow down\\n"; }} }} }}
""")
    write_file(os.path.join(tmp, "proxy.conf"), f"""
worker_processes 1; daemon off; pid {tmp}/proxy.pid; error_log {tmp}/proxy.err;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  upstream origin {{ server 127.0.0.1:{PORTS['direct']}; keepalive 512; keepalive_requests 1000000; }}
  server {{ listen 127.0.0.1:{PORTS['nginx']};
    location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
    write_file(os.path.join(tmp, "haproxy.cfg"), f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:{PORTS['haproxy']}
  default_backend origin
backend origin
  server o1 127.0.0.1:{PORTS['direct']}
""")
    for name, admin in (("remedy", ADMIN), ("baseline", BASELINE_ADMIN)):
        if name not in PORTS:
            continue
        write_file(os.path.join(tmp, f"{name}.yaml"), f"""
proxy: {{ listen: 127.0.0.1:{PORTS[name]}, max_connections: 4096 }}
admin: {{ listen: 127.0.0.1:{admin} }}
runtime: {{ worker_threads: 1 }}
shutdown: {{ drain_timeout: 1s, linger: 0s }}
sources:
  - {{ name: origin, upstream: 'http://127.0.0.1:{PORTS['direct']}', match: {{ path_prefix: / }}{routes(name)} }}
""")


def routes(name):
    """`, routes: [...]` for remedy (not the baseline) when BENCH_ROUTES names how many: that
    many endpoint templates, the last of which (`/{page}`) `/ok` matches."""
    count = int(os.environ.get("BENCH_ROUTES", "0"))
    if name != "remedy" or count == 0:
        return ""
    templates = [f"/v1/report{i}/{{id}}" for i in range(count - 1)] + ["/{page}"]
    return ", routes: [" + ", ".join(f"'{t}'" for t in templates) + "], max_routes: " + str(count)


def commands(tmp):
    """The command line of each proxy, in the foreground with one worker."""
    cmds = {
        "nginx": [NGINX, "-c", os.path.join(tmp, "proxy.conf"), "-p", tmp],
        "haproxy": [HAPROXY, "-db", "-f", os.path.join(tmp, "haproxy.cfg")],
        "remedy": [REMEDY, "run", "--config", os.path.join(tmp, "remedy.yaml")],
    }
    if BASELINE:
        cmds["baseline"] = [BASELINE, "run", "--config", os.path.join(tmp, "baseline.yaml")]
    return cmds


def origin_command(tmp):
    return [NGINX, "-c", os.path.join(tmp, "origin.conf"), "-p", tmp]


def wait_port(port, limit=15):
    """Polls `/ok` on `port` until something answers."""
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ok", timeout=2).read()
            return
        except urllib.error.HTTPError:
            return
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"nothing answers on port {port}")


def remedy_in_front(tmp, origin, proxy, admin):
    """Starts remedy with one source for the origin on `origin` (port), its listeners on
    `proxy` and `admin`, and returns its process once `/-/ready` answers."""
    with open(os.path.join(tmp, "remedy.yaml"), "w") as f:
        f.write(f"""
proxy: {{ listen: 127.0.0.1:{proxy} }}
admin: {{ listen: 127.0.0.1:{admin} }}
shutdown: {{ drain_timeout: 1s, linger: 0s }}
sources:
  - {{ name: origin, upstream: 'http://127.0.0.1:{origin}', match: {{ path_prefix: / }} }}
""")
    remedy = subprocess.Popen([REMEDY, "run", "--config", os.path.join(tmp, "remedy.yaml")],
                              env={**os.environ, "REMEDY_LOG": "warn"})
    deadline = time.time() + 15
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/-/ready", timeout=1):
                return remedy
        except OSError:
            if time.time() > deadline:
                remedy.kill()
                raise SystemExit("remedy did not become ready")
            time.sleep(0.05)


procs = []

ALLOWED = sorted(os.sched_getaffinity(0))
# (load CPUs, proxy CPUs); None where there is only one CPU to run on.
PINNED = ({ALLOWED[0]}, {ALLOWED[1]}) if len(ALLOWED) >= 2 else None


def start(cmd, proxy=False, **kw):
    pin = None
    if PINNED and proxy:
        pin = lambda: os.sched_setaffinity(0, PINNED[1])
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin, **kw)
    procs.append(p)
    return p


def stop_all():
    for p in procs:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=5)
        except Exception:
            p.kill()


def pids_of(p):
    """The process and its children (nginx's workers)."""
    out = [p.pid]
    try:
        kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
        out += [int(k) for k in kids]
    except OSError:
        pass
    return out


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def mem_kib(pids, field):
    total = 0
    for pid in pids:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field):
                total += int(line.split()[1])
    return total
