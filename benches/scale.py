#!/usr/bin/env python3
"""Scale benchmark: as many idle connections as the open-file limit allows (19 000 of a
hard limit of 20 000), with one pair relaying through the server all the while.

    python3 benches/scale.py                   # ws:// then wss://, about a minute
    python3 benches/scale.py --tls             # wss:// only
    python3 benches/scale.py --ws --conns 5000 --hold 10 --no-build

For each protocol it starts target/release/sigver on a free loopback port with
`--rate-limit 0 --max-connections-per-ip 0` (a throwaway CA and P-256 certificate for
wss://), the soft open-file limit raised to the hard one, and checks the limit the server
runs with and the connections it will take. Then:
  1. `sigver-load relay --pairs 1 --rate R` (open loop), whose window stays open until
     SIGUSR1, so that its round trips cover the opening and the hold;
  2. `sigver-load idle --conns N --concurrency 64 --hold H`: handshakes per second and
     latency, the server's RSS before, with all in and after the hold, per connection;
  3. about a second before the hold ends, that relay is stopped and a second one started,
     whose round trips cover the close of all N at once, separately.
Meanwhile the server's VmRSS, descriptors and the kernel's TCP memory (/proc/net/sockstat)
are sampled twice a second, and its /metrics read once all are in, when the first relay
stops, and at the end. Results: OUT/ws.json, OUT/wss.json and OUT/results.md (both
protocols side by side, and what 100 000 connections would cost), OUT defaulting to
benches/results/scale. Every process it starts is killed before it exits, on errors and
Ctrl-C too.
"""

import argparse
import http.client
import json
import math
import os
import re
import resource
import signal
import ssl
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # importing compare.py leaves no __pycache__ behind
import compare  # noqa: E402  (its certificate, server and machine helpers)

ROOT = compare.ROOT
TARGET_MIB = {"ws": 45, "wss": 90}  # the RSS targets at 19 000 connections
EXTRAPOLATE = 100_000
# The first relay stops this long before the hold ends (the sampler sees "all in" up to
# 0.5 s late), so that none of its contents wait behind the mass close.
CLOSE_MARGIN = 1.5
LOADS = []  # every load-tool process started (each leads its own process group)


# ---------------------------------------------------------------------------------------
# Readings: /proc and the server's /metrics.

def status(pid):
    """VmRSS and VmHWM of `pid` in KiB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    get = lambda k: int(re.search(rf"^{k}:\s+(\d+)", text, re.M).group(1))
    return {"rss_kib": get("VmRSS"), "hwm_kib": get("VmHWM")}


def kernel():
    """The kernel's TCP buffer memory (pages) and slab (KiB), both for the whole host."""
    with open("/proc/net/sockstat") as f:
        tcp = re.search(r"^TCP:.* mem (\d+)", f.read(), re.M)
    with open("/proc/meminfo") as f:
        slab = re.search(r"^Slab:\s+(\d+)", f.read(), re.M)
    return {"tcp_mem_pages": int(tcp.group(1)), "slab_kib": int(slab.group(1))}


def fd_limits(pid):
    with open(f"/proc/{pid}/limits") as f:
        m = re.search(r"^Max open files\s+(\d+)\s+(\d+)", f.read(), re.M)
    return [int(m.group(1)), int(m.group(2))]


def metrics(port, ca):
    """The server's /metrics as {name{labels}: value}, over TLS when `ca` is given."""
    if ca:
        ctx = ssl.create_default_context(cafile=ca)
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def try_metrics(port, ca):
    try:
        return metrics(port, ca)
    except (OSError, http.client.HTTPException) as e:
        return {"error": str(e)}


def troubles(m):
    """The counters that say something went wrong: limits hit, closes, failed upgrades."""
    keys = ("sigver_limit_hits_total", "sigver_server_closes_total",
            "sigver_handshake_failures_total", "sigver_heartbeat_timeouts_total", "error")
    return {k: v for k, v in m.items() if k.startswith(keys) and v}


def relay_buckets(m):
    """The server's own relay-time histogram, {le: cumulative count}."""
    name = "sigver_relay_latency_seconds_bucket"
    return {k[k.index('"') + 1:k.rindex('"')]: v for k, v in m.items() if k.startswith(name)}


class Sampler(threading.Thread):
    """Samples the server twice a second. `all_in_at` is when it first held `fds`
    descriptors (all connections in); a second later it takes a snapshot of the kernel's
    memory and of /metrics."""

    def __init__(self, pid, port, ca, fds):
        super().__init__(daemon=True)
        self.pid, self.port, self.ca, self.fds = pid, port, ca, fds
        self.series, self.all_in_at, self.all_in = [], None, None
        self.halt = threading.Event()

    def run(self):
        t0 = time.monotonic()
        while not self.halt.wait(0.5):
            s = status(self.pid)
            try:
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
            except OSError:
                return
            if s is None:
                return
            now = time.monotonic()
            self.series.append([round(now - t0, 1), s["rss_kib"], fds,
                                kernel()["tcp_mem_pages"]])
            if fds >= self.fds and self.all_in_at is None:
                self.all_in_at = now
            elif self.all_in is None and self.all_in_at and now - self.all_in_at >= 1:
                self.all_in = {"fds": fds, **s, **kernel(),
                               "metrics": try_metrics(self.port, self.ca)}


# ---------------------------------------------------------------------------------------
# The run.

def start_load(cmd):
    """A load-tool process in a process group of its own (so that its --procs children are
    killed with it, and Ctrl-C reaches only this script, which then kills them)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    LOADS.append(p)
    return p


def result(p, what, timeout):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return {"ok": False, "first_error": f"{what}: killed after {timeout:.0f} s"}
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"ok": False, "first_error": f"{what}: {(err or out).strip()[-300:]}"}


def stop_relay(p):
    """SIGUSR1 ends the relay's window; its result follows after the drain."""
    if p.poll() is None:
        p.send_signal(signal.SIGUSR1)
    return result(p, "relay", 30)


def spread(conns):
    """Idle processes and source addresses. The load tool holds one descriptor per
    connection, as the server does, so past one process's limit it needs more processes.
    And the kernel's search for a free ephemeral port slows connect() down sharply as one
    address's ports fill (19 000 connections from one address: about 1 000 handshakes/s,
    the tool's CPU spent in the kernel; from two: 9 400/s): a third of them at most."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        lo, hi = map(int, f.read().split())
    return math.ceil(conns / (hard - 64)), math.ceil(conns / ((hi - lo + 1) / 3))


def check_server(out, srv, conns):
    """Records the server's open-file limit and connection limit; stops if it cannot take
    the idle connections, the relay pairs and a /metrics request."""
    m = re.search(r"Up to (\d+) connections", "\n".join(srv.lines))
    out["server_max_connections"] = int(m.group(1)) if m else None
    out["server_fd_limit"] = fd_limits(srv.proc.pid)
    compare.log(f"[{out['protocol']}] server pid {srv.proc.pid}: open files (soft, hard) "
                f"{out['server_fd_limit']}, up to {out['server_max_connections']} connections")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if out["server_fd_limit"][0] != hard:
        compare.log(f"warning: the server's soft limit is not the hard limit {hard}")
    if (out["server_max_connections"] or 0) < conns + 5:
        raise SystemExit(f"scale: the server takes {out['server_max_connections']} connections, "
                         f"fewer than {conns} + 5 (its open-file limit less its reserve); "
                         f"lower --conns or raise the hard limit")


def run_one(proto, args, sigver, load, tls):
    """One protocol's run; returns its result (written to OUT/PROTO.json by the caller)."""
    compare.TLS = tls  # compare.Server's URL scheme
    procs, sources = spread(args.conns)
    procs, sources = args.procs or procs, args.source_addrs or sources
    server_cmd = [sigver, "--rate-limit", "0", "--max-connections-per-ip", "0"]
    if tls:
        server_cmd += ["-k", tls[0], "-c", tls[1]]
    info = compare.machine("n/a", "n/a")
    for k in ("node", "original"):
        info.pop(k)
    out = {"protocol": proto, "conns": args.conns, "hold": args.hold, "rate": args.rate,
           "machine": info, "idle_procs": procs, "source_addrs": sources}
    srv = compare.Server(server_cmd)
    pid, url, ca = srv.proc.pid, f"{proto}://127.0.0.1:{srv.port}", tls[2] if tls else None
    ca_arg = ["--ca", ca] if ca else []
    # A window bounded by the longest the idle run may take; SIGUSR1 ends it.
    bound = 60 + args.hold + 15 + 30
    relay_cmd = lambda warmup: [load, "relay", "--url", url, "--pairs", "1", "--rate",
                                str(args.rate), "--warmup", str(warmup), "--seconds",
                                str(bound + 30), "--pid", str(pid), "--json", *ca_arg]
    try:
        check_server(out, srv, args.conns)
        time.sleep(0.5)
        out["rss_start_kib"] = status(pid)["rss_kib"]
        relay = start_load(relay_cmd(1))
        time.sleep(1.5)
        if relay.poll() is not None:
            raise SystemExit(f"scale: the relay stopped early: {result(relay, 'relay', 5)}")
        out["kernel_before"] = kernel()
        sampler = Sampler(pid, srv.port, ca, len(os.listdir(f"/proc/{pid}/fd")) + args.conns)
        sampler.start()
        idle_cmd = [load, "idle", "--url", url, "--conns", str(args.conns), "--concurrency",
                    str(args.concurrency), "--hold", str(args.hold), "--pid", str(pid),
                    "--json", *ca_arg]
        idle_cmd += ["--procs", str(procs)] if procs > 1 else []
        idle_cmd += ["--source-addrs", str(sources)] if sources > 1 else []
        compare.log(f"[{proto}] sigver-load {' '.join(idle_cmd[1:])}")
        idle = start_load(idle_cmd)
        deadline, closing = time.monotonic() + bound, None
        while idle.poll() is None and time.monotonic() < deadline:
            t = sampler.all_in_at
            if closing is None and t and time.monotonic() >= t + args.hold - CLOSE_MARGIN:
                out["metrics_hold_end"] = try_metrics(srv.port, ca)
                closing = start_load(relay_cmd(0))
                out["relay"] = stop_relay(relay)
            time.sleep(0.1)
        out["idle"] = result(idle, "idle", max(1.0, deadline - time.monotonic()))
        if closing is None:
            out["relay_covers_close"] = True  # never saw all in: one relay covered it all
            out["relay"] = stop_relay(relay)
        else:
            out["relay_close"] = stop_relay(closing)
        sampler.halt.set()
        sampler.join(5)
        out["all_in"], out["samples"] = sampler.all_in, sampler.series
        out["end"] = status(pid)
        out["metrics_end"] = try_metrics(srv.port, ca)
    finally:
        srv.stop()
    info["loadavg_end"] = os.getloadavg()
    return derive(out)


# ---------------------------------------------------------------------------------------
# The figures and the report.

def bounds(buckets):
    """From the server's cumulative histogram {le: count}: the bucket bounds (s) under which
    99%, 99.9% and all of the relayed messages fall."""
    total = buckets.get("+Inf")
    if not total:
        return None
    ordered = sorted((float(le), n) for le, n in buckets.items())
    return [next(le for le, n in ordered if n >= q * total) for q in (0.99, 0.999, 1.0)]


def relay_figures(relay):
    rtt = relay.get("rtt_us") or {}
    return {"ok": relay.get("ok"), "error": relay.get("first_error"),
            "seconds": relay.get("seconds"), "sent": relay.get("sent"),
            "answered": relay.get("answered"), "send_lag_us": relay.get("max_send_lag_us"),
            "rtt_us": {k: rtt.get(k) for k in ("p50", "p99", "p999", "max")}}


def derive(r):
    """The figures of the table, from the raw result."""
    idle, all_in, end = r.get("idle", {}), r.get("all_in") or {}, r.get("end") or {}
    d = {"rss_start_kib": r.get("rss_start_kib"),
         "rss_all_in_kib": idle.get("rss_loaded_kib"),
         "rss_after_hold_kib": idle.get("rss_end_kib"),
         "rss_per_conn_bytes": idle.get("rss_per_conn_bytes"),
         "peak_kib": end.get("hwm_kib"), "rss_end_kib": end.get("rss_kib"),
         "handshakes_per_s": idle.get("handshakes_per_s"),
         "handshake_us": {k: (idle.get("handshake_us") or {}).get(k)
                          for k in ("p50", "p99", "max")},
         "joined": idle.get("joined"), "open_at_end": idle.get("open_at_end"),
         "idle_ok": idle.get("ok"), "idle_error": idle.get("first_error"),
         "relay": relay_figures(r.get("relay", {})),
         "relay_close": relay_figures(r["relay_close"]) if "relay_close" in r else None,
         "troubles": {**troubles(all_in.get("metrics") or {}),
                      **troubles(r.get("metrics_end") or {})},
         "server_relay_hold_s": bounds(relay_buckets(r.get("metrics_hold_end") or {})),
         "server_relay_all_s": bounds(relay_buckets(r.get("metrics_end") or {}))}
    if idle.get("server_cpu") is not None and idle.get("handshakes_per_s"):
        d["server_cpu_us_per_handshake"] = idle["server_cpu"] * 1e6 / idle["handshakes_per_s"]
    n, before = idle.get("joined") or 0, r.get("kernel_before")
    if n and before and "tcp_mem_pages" in all_in:
        # Both ends of every connection are on this host: the server's share is half.
        page = os.sysconf("SC_PAGE_SIZE")
        d["kernel_tcp_mem_per_conn_bytes"] = (
            (all_in["tcp_mem_pages"] - before["tcp_mem_pages"]) * page / n / 2)
        d["kernel_slab_per_conn_bytes"] = (all_in["slab_kib"] - before["slab_kib"]) * 1024 / n / 2
    target_kib = TARGET_MIB[r["protocol"]] * 1024
    d["target_met"] = (d["peak_kib"] is not None and d["peak_kib"] <= target_kib
                       and bool(d["idle_ok"]) and bool(d["relay"]["ok"]))
    if d["rss_start_kib"] is not None and d["rss_per_conn_bytes"] is not None:
        d["extrapolated_kib"] = d["rss_start_kib"] + EXTRAPOLATE * d["rss_per_conn_bytes"] / 1024
    r["derived"] = d
    return r


def mib(kib):
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def num(v, unit="", digits=0):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}".replace(",", " ") + (f" {unit}" if unit else "")


def rtt(f):
    if f is None:
        return "n/a"
    pct = " / ".join(num(f["rtt_us"][k]) for k in ("p50", "p99", "p999", "max"))
    return f"{pct} µs{'' if f['ok'] else ' (NOT OK)'}"


def ms_bounds(b):
    return " / ".join(f"{x * 1e3:g}" for x in b) + " ms" if b else "n/a"


def table(results):
    """The Markdown table of results.md from the results present ({proto: result})."""
    protos = [p for p in ("ws", "wss") if p in results]
    d = {p: results[p]["derived"] for p in protos}
    n = num(results[protos[0]]["conns"])
    rows = [
        ("idle connections: joined / open at the end",
         lambda p: f"{num(d[p]['joined'])} / {num(d[p]['open_at_end'])}"),
        ("server RSS at start", lambda p: mib(d[p]["rss_start_kib"])),
        ("server RSS with all in / after the hold",
         lambda p: f"{mib(d[p]['rss_all_in_kib'])} / {mib(d[p]['rss_after_hold_kib'])}"),
        ("RSS per connection", lambda p: num(d[p]["rss_per_conn_bytes"], "B")),
        ("peak RSS (VmHWM at the end)", lambda p: mib(d[p]["peak_kib"])),
        ("target: peak RSS at most", lambda p: f"{TARGET_MIB[p]} MiB: "
                                              f"{'met' if d[p]['target_met'] else '**not met**'}"),
        ("handshakes/s (64 at once)", lambda p: num(d[p]["handshakes_per_s"], "/s")),
        ("handshake p50 / p99 / max",
         lambda p: " / ".join(num(d[p]["handshake_us"][k]) for k in ("p50", "p99", "max"))
         + " µs"),
        ("server CPU per handshake",
         lambda p: num(d[p].get("server_cpu_us_per_handshake"), "µs", 1)),
        ("relay round trip while opening and holding: p50 / p99 / p99.9 / max",
         lambda p: rtt(d[p]["relay"])),
        ("relay: answered / sent, window",
         lambda p: f"{num(d[p]['relay']['answered'])} / {num(d[p]['relay']['sent'])}, "
                   f"{num(d[p]['relay']['seconds'], 's', 1)}"),
        ("relay client's worst lag behind its schedule",
         lambda p: num(d[p]["relay"]["send_lag_us"], "µs")),
        ("server's own relay time, opening and holding: 99% / 99.9% / all under",
         lambda p: ms_bounds(d[p]["server_relay_hold_s"])),
        (f"relay round trip across the close of all {n}: p50 / p99 / p99.9 / max",
         lambda p: rtt(d[p]["relay_close"])),
        ("server's own relay time, whole run: 99% / 99.9% / all under",
         lambda p: ms_bounds(d[p]["server_relay_all_s"])),
        ("kernel TCP buffer memory per connection (server's half)",
         lambda p: num(d[p].get("kernel_tcp_mem_per_conn_bytes"), "B")),
        ("kernel slab per connection (server's half, whole host)",
         lambda p: num(d[p].get("kernel_slab_per_conn_bytes"), "B")),
        ("limits hit, server closes, failed upgrades (/metrics)",
         lambda p: ", ".join(f"{k} {v:g}" for k, v in d[p]["troubles"].items()) or "none"),
        (f"extrapolated RSS at {num(EXTRAPOLATE)} connections",
         lambda p: mib(d[p].get("extrapolated_kib"))),
    ]
    head = "| | " + " | ".join(f"{p}://" for p in protos) + " |\n|---|" + "---:|" * len(protos)
    return "\n".join([head] + [f"| {label} | " + " | ".join(f(p) for p in protos) + " |"
                               for label, f in rows]) + "\n"


def notes(results):
    out = []
    for p in ("ws", "wss"):
        if p not in results:
            continue
        r, m = results[p], results[p]["machine"]
        d = r["derived"]
        out.append(
            f"- {p}://: {num(r['conns'])} connections held {r['hold']:g} s, a pair relaying "
            f"{r['rate']:g} contents/s; load average {m['loadavg_start'][0]:.1f} at the start, "
            f"{m['loadavg_end'][0]:.1f} at the end; {m['nproc']} cores, {m['cpu']}, Linux "
            f"{m['kernel']}; server open files (soft, hard) {tuple(r['server_fd_limit'])}, up to "
            f"{num(r['server_max_connections'])} connections; the idle connections from "
            f"{r['idle_procs']} process(es) and {r['source_addrs']} source address(es)."
            + (f" Idle: {d['idle_error']}." if d["idle_error"] else "")
            + (f" Relay: {d['relay']['error']}." if d["relay"]["error"] else "")
            + (" The relay covered the close too (all in was never seen)."
               if r.get("relay_covers_close") else ""))
    return "\n".join(out) + "\n"


def extrapolation(results):
    n = num(EXTRAPOLATE)
    out = [f"What {n} connections would cost (RSS at start + {n} × the RSS per connection "
           f"measured here):"]
    for p in ("ws", "wss"):
        if p in results:
            d = results[p]["derived"]
            kern = d.get("kernel_slab_per_conn_bytes")
            kern = mib(kern * EXTRAPOLATE / 1024) if kern else "n/a"
            out.append(f"- {p}://: {mib(d['rss_start_kib'])} + {n} × "
                       f"{num(d['rss_per_conn_bytes'], 'B')} = "
                       f"**{mib(d.get('extrapolated_kib'))}** of server RSS; and outside it, the "
                       f"kernel's memory for the server's sockets, roughly {kern} "
                       f"(slab, see below).")
    out.append(
        "- The host must allow it: an open-file limit above 100 064 for the server (`ulimit -n` or "
        "systemd's `LimitNOFILE=`; the server reserves up to 64 descriptors and raises its soft "
        "limit to the hard one itself), and a load generator needs as many descriptors (in "
        "processes of at most 60 000 connections each: `--procs 2` or more) and ephemeral ports: "
        "about 28 000 per source address and server port by default "
        "(`net.ipv4.ip_local_port_range`), of which a third keeps connect() fast, so "
        "`--source-addrs 11` on loopback, or clients from several hosts.\n"
        "- Kernel memory is not in the server's RSS. Idle sockets hold no buffer memory to speak "
        "of (the `TCP: mem` pages of /proc/net/sockstat, read before and with all in, do not "
        "move); what they cost is the socket structures themselves (the slab figure: "
        "/proc/meminfo `Slab:` before and with all in, for both ends of each connection, halved; "
        "system-wide, so other work on the host moves it). `net.ipv4.tcp_mem` caps buffer "
        "memory, not this.")
    return "\n".join(out) + "\n"


def write(out_dir, results, cmdline):
    md = ("# Scale: idle connections with a relaying pair\n\n" + table(results) + "\n"
          + notes(results) + "\n" + extrapolation(results) + f"\nCommand: `{cmdline}`\n")
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    print(md)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tls", action="store_true", help="wss:// only")
    ap.add_argument("--ws", action="store_true", help="ws:// only (with --tls: both)")
    ap.add_argument("--conns", type=int, default=19_000, help="idle connections [19000]")
    ap.add_argument("--hold", type=float, default=20, help="seconds to hold them all [20]")
    ap.add_argument("--rate", type=float, default=1000,
                    help="the relaying pair's contents per second (open loop) [1000]")
    ap.add_argument("--concurrency", type=int, default=64, help="handshakes at once [64]")
    ap.add_argument("--procs", type=int, default=0,
                    help="idle load processes [what the open-file limit needs]")
    ap.add_argument("--source-addrs", type=int, default=0,
                    help="idle source addresses 127.0.0.1..N [what the ephemeral ports need]")
    ap.add_argument("--out", default=os.path.join(ROOT, "benches", "results", "scale"))
    ap.add_argument("--no-build", action="store_true", help="use the release build as it is")
    args = ap.parse_args()
    if args.hold < 2 * CLOSE_MARGIN:
        ap.error(f"--hold {args.hold}: at least {2 * CLOSE_MARGIN:g} s")
    protos = ["ws", "wss"] if args.tls == args.ws else (["wss"] if args.tls else ["ws"])

    # Every connection is a descriptor, on both sides: use all the hard limit allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    compare.log(f"open files: soft {soft} raised to the hard limit {hard}")
    if not args.no_build:
        compare.log("building (cargo build --release --workspace)")
        compare.sh(["cargo", "build", "--release", "--workspace"], cwd=ROOT)
    meta = compare.sh(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=ROOT,
                      stdout=subprocess.PIPE).stdout
    release = os.path.join(json.loads(meta)["target_directory"], "release")
    sigver, load = os.path.join(release, "sigver"), os.path.join(release, "sigver-load")
    tls = compare.make_certificate() if "wss" in protos else None

    os.makedirs(args.out, exist_ok=True)
    results = {}
    for p in ("ws", "wss"):  # the other protocol's last run stays in the table
        path = os.path.join(args.out, f"{p}.json")
        if p not in protos and os.path.exists(path):
            with open(path) as f:
                results[p] = derive(json.load(f))
    for p in protos:
        r = run_one(p, args, sigver, load, tls if p == "wss" else None)
        with open(os.path.join(args.out, f"{p}.json"), "w") as f:
            json.dump(r, f, indent=1)
        results[p] = r
        d = r["derived"]
        compare.log(f"[{p}] peak {mib(d['peak_kib'])}, {num(d['rss_per_conn_bytes'], 'B')}/conn, "
                    f"{num(d['handshakes_per_s'])} handshakes/s, relay {rtt(d['relay'])}, "
                    f"across the close {rtt(d['relay_close'])}, idle ok {d['idle_ok']}")
    write(args.out, results, ("python3 benches/scale.py " + " ".join(sys.argv[1:])).strip())
    ok = all(results[p]["derived"]["idle_ok"] and results[p]["derived"]["relay"]["ok"]
             for p in protos)
    return 0 if ok else 1


def cleanup():
    for p in LOADS:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    for p in compare.STARTED:
        if p.poll() is None:
            p.kill()
            p.wait()


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so that the cleanup below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    finally:
        cleanup()
