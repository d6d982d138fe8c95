#!/usr/bin/env python3
"""Runs every load mode against our server and the original Node.js sigver, alternating, in
one run; prints one table of medians with the ratios to the original, and draws the plot.

    python3 benches/compare.py                 # about 10 minutes on 2 cores
    python3 benches/compare.py --reps 5 --seconds 20 --hold 30   # longer, steadier
    python3 benches/compare.py --ours-bin A --against-bin B --names musl,glibc   # two builds

With --against-bin, the second server is another build of ours instead of the original (a
static musl build against the glibc one, say), and the targets, set against the original,
do not apply.

Over ws:// (not --tls), the relay scenarios also run against the raw reference relay
(`sigver-load raw-server`, loaded through `raw://`): sigver's relay routing over
length-prefixed frames, with no WebSocket and no protobuf, so it costs little more than the
kernel's own work. A second table sets ours against it ("ours / raw reference").

It builds ours and the load tool in release (`cargo build --release -p sigver -p sigver-load`),
installs the original with `npm install sigver@20.1.0` into a temporary folder (or uses
--orig-dir), and for each scenario and repetition starts a fresh server of each kind on a free
loopback port (the order alternates: ours first on even repetitions, the original first on odd
ones), runs the load tool (target/release/sigver-load) against it with --pid and --json, and
stops it. Every server it starts is killed before it exits. Results: a Markdown table on stdout
and in OUT/results.md, every raw result in OUT/results.json, the plot in OUT/latency.svg (OUT
defaults to benches/results).
Needs only Python 3.9+, cargo, node and npm; `--servers ours` runs ours alone, without node
(`--servers ours,raw` adds the raw reference).
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGINAL = "sigver@20.1.0"
SERVERS = ("ours", "original")
# The raw reference relay runs in the relay scenarios of a plain run, for the second table.
RAW = "raw"
# How the table and the plot name the two servers (--names).
NAMES = {"ours": "ours", "original": "original"}

# name, title, load arguments (the script adds --url, --pid, --json and the times)
SCENARIOS = [
    ("relay_w1", "relay, closed loop, P=10 W=1", ["relay", "--pairs", "10", "--window", "1"]),
    ("relay_w8", "relay, closed loop, P=10 W=8", ["relay", "--pairs", "10", "--window", "8"]),
    ("relay_p1", "relay, closed loop, P=1 W=1", ["relay", "--pairs", "1", "--window", "1"]),
    ("open_20k", "relay, open loop, P=100 R=20000/s", ["relay", "--pairs", "100", "--rate", "20000"]),
    ("open_40k", "relay, open loop, P=100 R=40000/s", ["relay", "--pairs", "100", "--rate", "40000"]),
    ("idle_10k", "idle, N=10000", ["idle", "--conns", "10000", "--concurrency", "64"]),
    ("churn", "churn, 32 sessions at once", ["churn", "--concurrency", "32"]),
    ("churn_members", "churn, 100 long-lived members", ["churn", "--concurrency", "32", "--members", "100"]),
]

# scenario, metric label, path in the result, unit, comparison, target
#   comparison "ratio>=" / "ratio<=": ours/original against the target;
#   "abs<=": ours alone against the target; "info": no target.
ROWS = [
    ("relay_w1", "messages relayed/s", ("relayed_per_s",), "/s", "ratio>=", 2.5),
    ("relay_w1", "server CPU per relayed message", ("server_cpu_us_per_msg",), "µs", "info", None),
    ("relay_w8", "messages relayed/s", ("relayed_per_s",), "/s", "ratio>=", 6.0),
    ("relay_w8", "server CPU per relayed message", ("server_cpu_us_per_msg",), "µs", "info", None),
    ("relay_w8", "load generator CPU per relayed message", ("client_cpu_us_per_msg",), "µs", "info", None),
    ("relay_p1", "round trip p50", ("rtt_us", "p50"), "µs", "ratio<=", 0.8),
    ("relay_p1", "messages relayed/s", ("relayed_per_s",), "/s", "info", None),
    ("open_20k", "round trip p50", ("rtt_us", "p50"), "µs", "info", None),
    ("open_20k", "round trip p99", ("rtt_us", "p99"), "µs", "ratio<=", 1 / 3),
    ("open_20k", "round trip p99.9", ("rtt_us", "p999"), "µs", "ratio<=", 1 / 3),
    ("open_40k", "round trip p50", ("rtt_us", "p50"), "µs", "info", None),
    ("open_40k", "round trip p99", ("rtt_us", "p99"), "µs", "ratio<=", 1 / 3),
    ("open_40k", "round trip p99.9", ("rtt_us", "p999"), "µs", "ratio<=", 1 / 3),
    ("open_40k", "messages relayed/s", ("relayed_per_s",), "/s", "info", None),
    ("idle_10k", "RSS per connection", ("rss_per_conn_bytes",), "B", "ratio<=", 0.2),
    ("idle_10k", "RSS at start", ("rss_start_kib",), "KiB", "abs<=", 3072),
    ("idle_10k", "handshakes/s", ("handshakes_per_s",), "/s", "ratio>=", 4.0),
    ("idle_10k", "server CPU per handshake", ("server_cpu_us_per_handshake",), "µs", "info", None),
    ("churn", "sessions/s", ("sessions_per_s",), "/s", "ratio>=", 4.0),
    ("churn", "server CPU per session", ("server_cpu_us_per_session",), "µs", "info", None),
    ("churn_members", "sessions/s", ("sessions_per_s",), "/s", "ratio>=", 4.0),
    ("churn_members", "RSS growth over the churn", ("rss_growth_kib",), "KiB", "abs<=", 1024),
    ("server", "start to listening line", ("startup_ms",), "ms", "abs<=", 20),
    ("server", "stripped release binary", ("binary_kib",), "KiB", "abs<=", 3072),
]

# With --tls: the same scenarios over wss://, two more to set a resumed handshake against a
# full one (few at once, so that the load tool's session cache holds a ticket for each), and
# the targets of wss:// (RSS, and server CPU per handshake and per session, judge the server).
TLS_SCENARIOS = [
    ("idle_full", "idle, N=2000, 4 at once, full handshakes",
     ["idle", "--conns", "2000", "--concurrency", "4"]),
    ("idle_resumed", "idle, N=2000, 4 at once, resumed handshakes",
     ["idle", "--conns", "2000", "--concurrency", "4", "--resume"]),
]
TLS_TARGETS = {
    ("idle_10k", "RSS per connection"): ("ratio<=", 0.10),
    ("idle_10k", "server CPU per handshake"): ("ratio<=", 0.25),
    ("churn", "server CPU per session"): ("ratio<=", 0.25),
}
TLS_ROWS = [
    ("idle_full", "server CPU per handshake", ("server_cpu_us_per_handshake",), "µs", "info", None),
    ("idle_resumed", "server CPU per handshake", ("server_cpu_us_per_handshake",), "µs", "info", None),
    ("idle_resumed", "resumed handshakes", ("tls_resumed_handshakes",), "", "info", None),
]


# ours / raw reference, per relay scenario: how close ours comes to the kernel's own cost.
# Targets: ratios of ours to the raw relay (at least); "info": no target.
RAW_ROWS = [
    ("relay_w1", "messages relayed/s", ("relayed_per_s",), "/s", "ratio>=", 0.95),
    ("relay_w1", "server CPU per relayed message", ("server_cpu_us_per_msg",), "µs", "info", None),
    ("relay_w8", "messages relayed/s", ("relayed_per_s",), "/s", "ratio>=", 0.9),
    ("relay_w8", "server CPU per relayed message", ("server_cpu_us_per_msg",), "µs", "info", None),
    ("relay_w8", "load generator CPU per relayed message", ("client_cpu_us_per_msg",), "µs", "info", None),
    ("relay_p1", "round trip p50", ("rtt_us", "p50"), "µs", "info", None),
    ("relay_p1", "messages relayed/s", ("relayed_per_s",), "/s", "info", None),
    ("open_20k", "round trip p99", ("rtt_us", "p99"), "µs", "info", None),
    ("open_40k", "round trip p99", ("rtt_us", "p99"), "µs", "info", None),
]


def use_tls():
    """Switches the scenarios and the targets to those of wss://."""
    global ROWS
    SCENARIOS.extend(TLS_SCENARIOS)
    rows = []
    for scen, label, path, unit, cmp, target in ROWS:
        cmp, target = TLS_TARGETS.get((scen, label), (cmp, target))
        rows.append((scen, label, path, unit, cmp, target))
    ROWS = rows + TLS_ROWS


def make_certificate():
    """A throwaway P-256 certificate for 127.0.0.1 signed by a throwaway CA, as a deployment
    would have, in a temporary folder: (key, certificate, CA certificate)."""
    folder = tempfile.mkdtemp(prefix="sigver-compare-tls-")
    path = lambda name: os.path.join(folder, name)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    p256 = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh(["openssl", "req", "-x509", *p256, "-keyout", path("ca-key.pem"), "-out", path("ca.pem"),
        "-days", "2", "-subj", "/CN=sigver compare CA"], **quiet)
    sh(["openssl", "req", *p256, "-keyout", path("key.pem"), "-out", path("leaf.csr"),
        "-subj", "/CN=127.0.0.1"], **quiet)
    with open(path("leaf.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n")
    sh(["openssl", "x509", "-req", "-in", path("leaf.csr"), "-CA", path("ca.pem"),
        "-CAkey", path("ca-key.pem"), "-CAcreateserial", "-out", path("cert.pem"), "-days", "2",
        "-extfile", path("leaf.ext")], **quiet)
    return path("key.pem"), path("cert.pem"), path("ca.pem")


TLS = None  # (key, certificate, CA certificate) with --tls

STARTED = []  # every server process started, killed on exit


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(ours_bin):
    """Builds the load tool, and ours in release unless `ours_bin` names a build."""
    packages = ["-p", "sigver-load"] + ([] if ours_bin else ["-p", "sigver"])
    log("building the load tool" + ("" if ours_bin else " and ours") + " (release)")
    sh(["cargo", "build", "--release", *packages], cwd=ROOT)
    meta = sh(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT,
              stdout=subprocess.PIPE).stdout
    release = os.path.join(json.loads(meta)["target_directory"], "release")
    load = os.path.join(release, "sigver-load")
    if ours_bin is None:
        ours_bin = os.path.join(release, "sigver")
    sh([load, "selftest"], stdout=subprocess.DEVNULL)
    return os.path.abspath(ours_bin), load


def install_original(orig_dir):
    if orig_dir is None:
        orig_dir = tempfile.mkdtemp(prefix="sigver-original-")
    entry = os.path.join(orig_dir, "node_modules", "sigver", "package.json")
    if not os.path.exists(entry):
        log(f"installing the original ({ORIGINAL}) into {orig_dir}")
        sh(["npm", "install", "--no-audit", "--no-fund", "--prefix", orig_dir, ORIGINAL],
           stdout=subprocess.DEVNULL)
    with open(entry) as f:
        pkg = json.load(f)
    bin_entry = pkg["bin"]["sigver"] if isinstance(pkg["bin"], dict) else pkg["bin"]
    return os.path.join(orig_dir, "node_modules", "sigver", bin_entry), pkg["version"]


def bench_flags(binary):
    """Turns off, when the binary has them, the abuse limits that a benchmark from one address
    trips by design (messages per second per peer, connections per address): the original has
    no such limits, and they would close the benchmark's own peers."""
    usage = subprocess.run([binary, "--help"], text=True, capture_output=True).stdout
    flags = []
    for flag in ("--rate-limit", "--max-connections-per-ip"):
        if flag in usage:
            flags += [flag, "0"]
    if flags:
        log(f"ours runs with {' '.join(flags)}")
    return flags


class Server:
    """A server process on a free loopback port; `startup_ms` is the time from the start of
    the process to its listening line. `raw`: the raw reference relay, whose listening line
    is its address alone."""

    def __init__(self, cmd, raw=False):
        self.raw = raw
        self.port = free_port()
        self.lines = []
        self.ready = threading.Event()
        t0 = time.perf_counter()
        where = ["--listen", f"127.0.0.1:{self.port}"] if raw else ["-h", "127.0.0.1", "-p", str(self.port)]
        mark = f"127.0.0.1:{self.port}" if raw else "listening on"
        self.proc = subprocess.Popen(
            cmd + where,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        STARTED.append(self.proc)
        self.startup_ms = None

        def read():
            for line in self.proc.stdout:
                if self.startup_ms is None and mark in line:
                    self.startup_ms = (time.perf_counter() - t0) * 1e3
                    self.ready.set()
                if len(self.lines) < 200:
                    self.lines.append(line.rstrip())

        threading.Thread(target=read, daemon=True).start()
        if not self.ready.wait(15):
            self.stop()
            sys.exit(f"compare: {cmd[0]} did not start: {self.lines[-5:]}")
        if f":{self.port}" not in "".join(self.lines):
            log(f"warning: the listening line does not name port {self.port}: {self.lines}")

    @property
    def url(self):
        if self.raw:
            return f"raw://127.0.0.1:{self.port}"
        return f"{'wss' if TLS else 'ws'}://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(4)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def run_load(exe, server, args, limit):
    cmd = exe + args + ["--url", server.url, "--pid", str(server.proc.pid), "--json"]
    if TLS:
        cmd += ["--ca", TLS[2]]
    try:
        out = subprocess.run(cmd, text=True, capture_output=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"ok": False, "first_error": "load generator timed out"}
    # --json: the result is one JSON object on one line of stdout.
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"ok": False, "first_error": (out.stderr or out.stdout).strip()[-300:]}


def derive(result):
    """Adds the metrics computed from a result: CPU time per unit of work, which the CPU
    share left by other processes on a shared machine changes far less than rates."""
    cpu, client = result.get("server_cpu"), result.get("client_cpu")
    for key, rate in (("msg", "relayed_per_s"), ("handshake", "handshakes_per_s"),
                      ("session", "sessions_per_s")):
        if result.get(rate):
            if cpu is not None:
                result[f"server_cpu_us_per_{key}"] = cpu * 1e6 / result[rate]
            if client is not None:
                result[f"client_cpu_us_per_{key}"] = client * 1e6 / result[rate]
    if result.get("rss_series") and "rss_growth_kib" not in result:
        s = [p for p in result["rss_series"] if p[0] >= -0.5]
        result["rss_growth_kib"] = s[-1][1] - s[0][1]
    return result


def get(result, path):
    v = result
    for k in path:
        if not isinstance(v, dict) or k not in v or v[k] is None:
            return None
        v = v[k]
    return float(v)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit == "KiB" and v >= 10240:
        return f"{v / 1024:.1f} MiB"
    if abs(v) >= 100:
        return f"{v:,.0f} {unit}".replace(",", " ")
    if abs(v) >= 10:
        return f"{v:.1f} {unit}"
    return f"{v:.2f} {unit}"


def fmt_target(cmp, target, unit):
    if cmp == "info":
        return ""
    op = "≥" if cmp.endswith(">=") else "≤"
    if cmp.startswith("ratio"):
        return f"{op} {target:.2f}×" if target < 1 else f"{op} {target:g}×"
    return f"{op} {fmt(target, unit)}"


def summarize(runs, startups, binary_kib, against=False):
    """Medians per scenario and server, then one row per metric. `against`: two builds of
    ours, to which the targets against the original do not apply."""
    med = {}
    for (scen, server), results in runs.items():
        good = [r for r in results if r.get("ok")]
        use = good or results
        row = {"runs": len(results), "ok_runs": len(good)}
        for _, _, path, _, _, _ in ROWS:
            row[path] = median(get(r, path) for r in use)
        med[(scen, server)] = row
    for server in SERVERS:
        med[("server", server)] = {
            "runs": len(startups[server]),
            "ok_runs": len(startups[server]),
            ("startup_ms",): median(startups[server]),
            ("binary_kib",): binary_kib if server == "ours" else None,
        }
    rows = []
    for scen, label, path, unit, cmp, target in ROWS:
        if against and cmp.startswith("ratio"):
            cmp, target = "info", None
        ours = med.get((scen, "ours"), {}).get(path)
        orig = med.get((scen, "original"), {}).get(path)
        ratio = ours / orig if ours is not None and orig else None
        met = None
        if cmp == "ratio>=" and ratio is not None:
            met = ratio >= target
        elif cmp == "ratio<=" and ratio is not None:
            met = ratio <= target
        elif cmp == "abs<=" and ours is not None:
            met = ours <= target
        notes = []
        for server in SERVERS:
            m = med.get((scen, server))
            if m and m["ok_runs"] < m["runs"]:
                notes.append(f"{server}: {m['runs'] - m['ok_runs']} of {m['runs']} runs not clean")
        rows.append(dict(scenario=scen, metric=label, unit=unit, ours=ours, original=orig,
                         ratio=ratio, cmp=cmp, target=target, met=met, notes=notes))
    return rows


def summarize_raw(runs):
    """Medians of ours and of the raw reference for the RAW_ROWS whose scenario ran against
    the raw relay (a results.json from before it, or from --tls, has none: no rows)."""
    rows = []
    for scen, label, path, unit, cmp, target in RAW_ROWS:
        if not runs.get((scen, RAW)):
            continue
        med, notes = {}, []
        for server in ("ours", RAW):
            results = runs.get((scen, server), [])
            good = [r for r in results if r.get("ok")]
            med[server] = median(get(r, path) for r in (good or results))
            if len(good) < len(results):
                notes.append(f"{server}: {len(results) - len(good)} of {len(results)} runs not clean")
        ours, raw = med["ours"], med[RAW]
        ratio = ours / raw if ours is not None and raw else None
        met = ratio >= target if cmp == "ratio>=" and ratio is not None else None
        rows.append(dict(scenario=scen, metric=label, unit=unit, ours=ours, raw=raw, ratio=ratio,
                         cmp=cmp, target=target, met=met, notes=notes))
    return rows


def raw_table(rows):
    return table(rows, against="raw", against_title="raw reference", short="raw")


def table(rows, against="original", against_title=None, short=None):
    """The markdown table of `rows`, ours against `against` (a key of each row)."""
    titles = dict((n, t) for n, t, _ in SCENARIOS)
    titles["server"] = "server"
    a = NAMES["ours"]
    b = against_title or NAMES[against]
    out = [f"| scenario | metric | {a} | {b} | {a} / {short or b} | target | met |",
           "| --- | --- | ---: | ---: | ---: | --- | --- |"]
    for r in rows:
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else ""
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        if r["notes"]:
            met += " (" + "; ".join(r["notes"]) + ")"
        out.append(f"| {titles[r['scenario']]} | {r['metric']} | {fmt(r['ours'], r['unit'])} | "
                   f"{fmt(r[against], r['unit'])} | {ratio} | "
                   f"{fmt_target(r['cmp'], r['target'], r['unit'])} | {met} |")
    return "\n".join(out)


def machine(node_version, orig_version):
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    rustc = subprocess.run(["rustc", "--version"], text=True, capture_output=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "rustc": rustc,
        "node": node_version,
        "original": f"sigver {orig_version}",
        "loadavg_start": os.getloadavg(),
    }


# ----------------------------------------------------------------------------------------
# The plot: hand-written SVG, no tooling.

COLORS = {"ours": "#1f6feb", "original": "#d4640b"}
PCT_TICKS = [(50, "p50"), (90, "p90"), (99, "p99"), (99.9, "p99.9"), (99.99, "p99.99"), (100, "max")]


def pct_x(p):
    """Position of a percentile on a log scale of 1/(1-p), with max drawn at 99.999."""
    import math

    p = min(p, 99.999)
    return math.log10(100.0 / (100.0 - p))


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def latency_panel(x0, y0, w, h, title, curves):
    """curves: server -> [(percentile, µs)]."""
    import math

    parts = [f'<g font-family="sans-serif" font-size="11">',
             f'<text x="{x0 + w / 2}" y="{y0 - 8}" text-anchor="middle" font-size="12" '
             f'font-weight="bold">{esc(title)}</text>',
             f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>']
    values = [v for c in curves.values() for _, v in c if v and v > 0]
    if not values:
        parts.append(f'<text x="{x0 + w / 2}" y="{y0 + h / 2}" text-anchor="middle">no data</text></g>')
        return "\n".join(parts)
    lo = 10 ** math.floor(math.log10(min(values)))
    hi = 10 ** math.ceil(math.log10(max(values)))
    if hi <= lo:
        hi = lo * 10
    xmax = pct_x(100)

    def X(p):
        return x0 + w * pct_x(p) / xmax

    def Y(v):
        return y0 + h - h * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    d = lo
    while d <= hi * 1.0001:
        y = Y(d)
        label = f"{d / 1000:g} ms" if d >= 1000 else f"{d:g} µs"
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
        d *= 10
    for p, label in PCT_TICKS:
        x = X(p)
        parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + h}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{y0 + h + 14}" text-anchor="middle">{label}</text>')
    for server, points in curves.items():
        pts = " ".join(f"{X(p):.1f},{Y(v):.1f}" for p, v in points if v and v > 0)
        dash = "" if server == "ours" else ' stroke-dasharray="6 3"'
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{COLORS[server]}" '
                     f'stroke-width="2"{dash}/>')
        for p, v in points:
            if v and v > 0 and p in (50, 99, 99.9):
                parts.append(f'<circle cx="{X(p):.1f}" cy="{Y(v):.1f}" r="2.5" fill="{COLORS[server]}"/>')
    parts.append("</g>")
    return "\n".join(parts)


def ratio_panel(x0, y0, w, rows):
    import math

    ratio_rows = [r for r in rows if r["cmp"].startswith("ratio")]
    row_h = 22
    lo, hi = 0.01, 100.0
    label_w = 300
    bx0, bw = x0 + label_w, w - label_w - 70

    def X(v):
        v = min(max(v, lo), hi)
        return bx0 + bw * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    titles = dict((n, t) for n, t, _ in SCENARIOS)
    h = row_h * len(ratio_rows) + 10
    parts = ['<g font-family="sans-serif" font-size="11">',
             f'<text x="{x0}" y="{y0 - 8}" font-size="12" font-weight="bold">ours / original '
             f'(median ratio; bar = measured, black tick = target, green = met)</text>']
    for v in (0.01, 0.1, 1, 10, 100):
        x = X(v)
        parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + h}" '
                     f'stroke="{"#888" if v == 1 else "#ddd"}"/>')
        parts.append(f'<text x="{x:.1f}" y="{y0 + h + 14}" text-anchor="middle">{v:g}×</text>')
    for i, r in enumerate(ratio_rows):
        y = y0 + 5 + i * row_h
        better = "higher is better" if r["cmp"] == "ratio>=" else "lower is better"
        label = f"{titles[r['scenario']]}: {r['metric']}"
        parts.append(f'<text x="{bx0 - 6}" y="{y + 14}" text-anchor="end">{esc(label)}</text>')
        if r["ratio"] is None:
            parts.append(f'<text x="{bx0 + 4}" y="{y + 14}">no data</text>')
            continue
        color = "#2da44e" if r["met"] else "#cf222e"
        xa, xb = sorted((X(1), X(r["ratio"])))
        parts.append(f'<rect x="{xa:.1f}" y="{y + 4}" width="{max(xb - xa, 1):.1f}" height="13" '
                     f'fill="{color}" opacity="0.85"><title>{esc(better)}</title></rect>')
        xt = X(r["target"])
        parts.append(f'<line x1="{xt:.1f}" y1="{y + 1}" x2="{xt:.1f}" y2="{y + 20}" stroke="black" '
                     f'stroke-width="2"/>')
        parts.append(f'<text x="{bx0 + bw + 6}" y="{y + 14}">{r["ratio"]:.2f}×</text>')
    parts.append("</g>")
    return "\n".join(parts), h + 20


def memory_panel(x0, y0, w, h, series):
    """series: server -> [(seconds since the end of the warmup, KiB)], on a log scale (the
    two servers differ by orders of magnitude)."""
    import math

    parts = ['<g font-family="sans-serif" font-size="11">',
             f'<text x="{x0 + w / 2}" y="{y0 - 8}" text-anchor="middle" font-size="12" '
             f'font-weight="bold">server RSS during the churn with 100 long-lived members</text>',
             f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>']
    pts_all = [p for s in series.values() for p in s]
    if not pts_all:
        parts.append("</g>")
        return "\n".join(parts)
    lo = 2 ** math.floor(math.log2(min(v for _, v in pts_all) / 1024))
    hi = 2 ** math.ceil(math.log2(max(v for _, v in pts_all) / 1024 * 1.05))
    hi = max(hi, lo * 4)
    tmin = min(0.0, min(t for t, _ in pts_all))
    tmax = max(t for t, _ in pts_all)
    span = (tmax - tmin) or 1

    def X(t):
        return x0 + w * (t - tmin) / span

    def Y(kib):
        return y0 + h - h * (math.log2(kib / 1024) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))

    m = lo
    while m <= hi:
        y = Y(m * 1024)
        parts.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{m:g} MiB</text>')
        m *= 4 if math.log2(hi / lo) > 6 else 2
    for t in range(int(math.floor(tmin / 10)) * 10, int(tmax) + 1, 10):
        if t >= tmin:
            parts.append(f'<text x="{X(t):.1f}" y="{y0 + h + 14}" text-anchor="middle">{t} s</text>')
    if tmin < 0:
        parts.append(f'<line x1="{X(0):.1f}" y1="{y0}" x2="{X(0):.1f}" y2="{y0 + h}" stroke="#888" '
                     f'stroke-dasharray="2 2"/><text x="{X(0) + 3:.1f}" y="{y0 + h - 4}" fill="#555">'
                     f'end of warmup</text>')
    for server, s in series.items():
        pts = " ".join(f"{X(t):.1f},{Y(kib):.1f}" for t, kib in s)
        dash = "" if server == "ours" else ' stroke-dasharray="6 3"'
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{COLORS[server]}" '
                     f'stroke-width="2"{dash}/>')
    parts.append("</g>")
    return "\n".join(parts)


def median_curve(results):
    """Median, over runs, of each reported percentile of the round trip."""
    by_p = {}
    for r in results:
        for p, v in (r.get("rtt_us") or {}).get("pct", []):
            by_p.setdefault(p, []).append(v)
    return [(p, statistics.median(v)) for p, v in sorted(by_p.items())]


def svg(rows, runs, info, path):
    W = 1000
    panels = []
    lat = [("relay_p1", "round trip, closed loop, P=1 W=1"),
           ("open_20k", "round trip, open loop, R=20000/s"),
           ("open_40k", "round trip, open loop, R=40000/s")]
    pw, ph, top = 260, 200, 70
    for i, (scen, title) in enumerate(lat):
        curves = {s: median_curve(runs.get((scen, s), [])) for s in SERVERS}
        panels.append(latency_panel(70 + i * (pw + 62), top, pw, ph, title, curves))
    y = top + ph + 60
    ratio_svg, rh = ratio_panel(20, y, W - 40, rows)
    panels.append(ratio_svg)
    y += rh + 30
    series = {}
    for s in SERVERS:
        res = [r for r in runs.get(("churn_members", s), []) if r.get("rss_series")]
        if res:
            series[s] = res[0]["rss_series"]
    panels.append(memory_panel(70, y, 420, 150, series))
    absolute = [r for r in rows if r["cmp"] == "abs<="]
    tx = 560
    panels.append(f'<g font-family="sans-serif" font-size="12"><text x="{tx}" y="{y - 8}" '
                  f'font-weight="bold">absolute targets (ours)</text>')
    for i, r in enumerate(absolute):
        color = "#2da44e" if r["met"] else "#cf222e"
        mark = "met" if r["met"] else "missed"
        text = (f"{r['metric']}: {fmt(r['ours'], r['unit'])} "
                f"(target {fmt_target(r['cmp'], r['target'], r['unit'])}) {mark}")
        panels.append(f'<text x="{tx}" y="{y + 16 + i * 20}" fill="{color}">{esc(text)}</text>')
    panels.append("</g>")
    H = y + 150 + 40
    legend = (f'<g font-family="sans-serif" font-size="12">'
              f'<line x1="20" y1="30" x2="50" y2="30" stroke="{COLORS["ours"]}" stroke-width="2"/>'
              f'<text x="56" y="34">{esc(NAMES["ours"])} (Rust)</text>'
              f'<line x1="150" y1="30" x2="180" y2="30" stroke="{COLORS["original"]}" stroke-width="2" '
              f'stroke-dasharray="6 3"/><text x="186" y="34">{esc(NAMES["original"])} ({esc(info["original"])}, '
              f'node {esc(info["node"])})</text>'
              f'<text x="{W - 20}" y="34" text-anchor="end" fill="#555">{info["nproc"]} cores, '
              f'{esc(info["cpu"])}, Linux {esc(info["kernel"])}; medians of alternating runs</text></g>')
    body = "\n".join([legend] + panels)
    doc = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}">\n<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n')
    with open(path, "w") as f:
        f.write(doc)


# ----------------------------------------------------------------------------------------


def write_outputs(out, info, run_args, runs, startups, binary_kib, cmdline):
    rows = summarize(runs, startups, binary_kib, against=run_args.get("against_bin") is not None)
    md = table(rows)
    raw_rows = summarize_raw(runs)
    if raw_rows:
        md += "\n\nAgainst the raw reference relay (`sigver-load raw-server`, over `raw://`):\n\n"
        md += raw_table(raw_rows)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"machine": info, "args": run_args, "command": cmdline, "binary_kib": binary_kib,
                   "rows": rows, "raw_rows": raw_rows, "runs": {f"{k[0]}/{k[1]}": v for k, v in runs.items()},
                   "startup_ms": startups}, f, indent=1)
    load = info.get("loadavg_start", [0])[0], info.get("loadavg_end", [0])[0]
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(f"{md}\n\nMachine: {info['nproc']} cores, {info['cpu']}, Linux {info['kernel']}, "
                f"{info['rustc']}, node {info['node']}, {info['original']}; load average "
                f"{load[0]:.1f} at the start, {load[1]:.1f} at the end.\n"
                f"Command: `{cmdline}`\n")
    svg(rows, runs, info, os.path.join(out, "latency.svg"))
    print(md)
    return rows


def resummarize(path, out):
    with open(path) as f:
        data = json.load(f)
    if data["args"].get("tls"):
        use_tls()
    if data["args"].get("names"):
        NAMES["ours"], NAMES["original"] = data["args"]["names"].split(",", 1)
    runs = {}
    for key, results in data["runs"].items():
        scen, server = key.split("/")
        runs[(scen, server)] = [derive(r) for r in results]
    binary_kib = data.get("binary_kib")
    if binary_kib is None:
        binary_kib = next((r["ours"] for r in data["rows"] if r["metric"] == "stripped release binary"), None)
    write_outputs(out, data["machine"], data["args"], runs, data["startup_ms"], binary_kib,
                  data.get("command", ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="runs per scenario and server [3]")
    ap.add_argument("--seconds", type=float, default=5, help="measured seconds per relay/churn run [5]")
    ap.add_argument("--warmup", type=float, default=1, help="unmeasured seconds before [1]")
    ap.add_argument("--hold", type=float, default=12, help="idle: seconds to hold the connections [12]")
    ap.add_argument("--members-seconds", type=float, default=40,
                    help="churn with long-lived members: measured seconds [40]")
    ap.add_argument("--members-warmup", type=float, default=15,
                    help="churn with long-lived members: warmup seconds [15]")
    ap.add_argument("--nice", type=int, default=0,
                    help="run the servers and the load generator under `nice -n N` (as root, a "
                         "negative N shields them from other processes, at those processes' cost) [0]")
    ap.add_argument("--only", help="comma-separated scenarios to run (default: all)")
    ap.add_argument("--servers", default="ours,original,raw",
                    help="comma-separated servers to run: ours, original, raw (the raw reference "
                         "relay, in the relay scenarios, not with --tls) [ours,original,raw]")
    ap.add_argument("--orig-dir", help="folder holding (or to receive) the npm install of the original")
    ap.add_argument("--ours-bin", help="run this build of ours instead of building target/release/sigver")
    ap.add_argument("--against-bin",
                    help="compare with this build of ours instead of the original (no targets apply)")
    ap.add_argument("--names", help="how the table names the two servers, e.g. musl,glibc "
                                    "[ours,original]")
    ap.add_argument("--out", default=os.path.join(ROOT, "benches", "results"), help="output folder")
    ap.add_argument("--tls", action="store_true",
                    help="everything over wss://, each server with a fresh P-256 certificate; "
                         "adds full and resumed handshakes, and the targets of wss://")
    ap.add_argument("--summarize", metavar="RESULTS_JSON",
                    help="run nothing: redo the table and the plot from a results.json")
    args = ap.parse_args()
    if args.summarize:
        return resummarize(args.summarize, args.out)

    servers = [s for s in SERVERS + (RAW,) if s in args.servers.split(",")]
    if not servers or set(args.servers.split(",")) - set(SERVERS + (RAW,)):
        ap.error(f"--servers {args.servers}: name ours, original, raw, or several")
    if args.tls and RAW in servers:
        # The raw relay is plain TCP: over wss:// it would be no reference for ours.
        log("the raw reference relay is not run with --tls")
        servers.remove(RAW)
        if not servers:
            ap.error("--servers raw --tls: nothing to run")
    if args.names:
        NAMES["ours"], NAMES["original"] = args.names.split(",", 1)
    elif args.against_bin:
        NAMES["original"] = "against"
    ours_bin, load = build(args.ours_bin)
    prefix = ["nice", "-n", str(args.nice)] if args.nice else []
    global TLS
    tls_ours, tls_original = [], []
    if args.tls:
        use_tls()
        TLS = make_certificate()
        tls_ours = ["-k", TLS[0], "-c", TLS[1]]
        # The original serves TLS only when it is given a CA file too.
        tls_original = tls_ours + ["-a", TLS[2]]
    commands = {"ours": prefix + [ours_bin] + bench_flags(ours_bin) + tls_ours}
    if "original" not in servers:
        info = machine("not run", None)
        info["original"] = "not run"
    elif args.against_bin:
        against = os.path.abspath(args.against_bin)
        info = machine("n/a", "n/a")
        info["original"] = against
        commands["original"] = prefix + [against] + bench_flags(against) + tls_ours
    else:
        orig_js, orig_version = install_original(args.orig_dir)
        node_version = sh(["node", "--version"], stdout=subprocess.PIPE).stdout.strip()
        info = machine(node_version, orig_version)
        commands["original"] = prefix + ["node", orig_js] + tls_original
    load = prefix + [load]
    commands[RAW] = load + ["raw-server"]
    stripped = os.path.join(tempfile.mkdtemp(prefix="sigver-strip-"), "sigver")
    shutil.copy(ours_bin, stripped)
    sh(["strip", stripped])
    binary_kib = os.path.getsize(stripped) / 1024
    info["binary_unstripped_kib"] = os.path.getsize(ours_bin) / 1024

    wanted = set(args.only.split(",")) if args.only else None
    runs = {}
    startups = {s: [] for s in SERVERS}  # a server not run keeps an empty list
    started = time.time()
    for name, title, base in SCENARIOS:
        if wanted and name not in wanted:
            continue
        reps = 1 if name == "churn_members" else args.reps
        if base[0] == "idle":
            extra = ["--hold", str(args.hold)]
        elif name == "churn_members":
            # Flat means flat once the server is in its steady state: after its longest
            # per-connection timer (ours: 10 s handshake + 3 s close) has cycled once.
            extra = ["--seconds", str(args.members_seconds), "--warmup", str(args.members_warmup)]
        else:
            extra = ["--seconds", str(args.seconds), "--warmup", str(args.warmup)]
        # The raw relay speaks only the relay mode.
        here = [s for s in servers if s != RAW or base[0] == "relay"]
        for rep in range(reps):
            order = here if rep % 2 == 0 else here[::-1]
            for server in order:
                srv = Server(commands[server], raw=server == RAW)
                if server != RAW:
                    startups[server].append(srv.startup_ms)
                try:
                    result = run_load(load, srv, base + extra, limit=300 + args.hold + args.members_seconds)
                finally:
                    srv.stop()
                derive(result)
                runs.setdefault((name, server), []).append(result)
                brief = {k: result.get(k) for k in (
                    "relayed_per_s", "handshakes_per_s", "rss_per_conn_bytes", "sessions_per_s",
                    "server_cpu", "client_cpu", "ok", "first_error") if k in result}
                if "rtt_us" in result:
                    brief["p50/p99/p99.9 µs"] = [result["rtt_us"].get(k) for k in ("p50", "p99", "p999")]
                log(f"[{time.time() - started:5.0f} s] {name} rep {rep + 1}/{reps} {server}: {brief}")
    info["loadavg_end"] = os.getloadavg()
    cmdline = ("python3 benches/compare.py " + " ".join(sys.argv[1:])).strip()
    write_outputs(args.out, info, vars(args), runs, startups, binary_kib, cmdline)
    print(f"\nmachine: {info}")
    print(f"total time {time.time() - started:.0f} s; results in {args.out}")


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in STARTED:
            if p.poll() is None:
                p.kill()
                p.wait()
