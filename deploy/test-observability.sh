#!/usr/bin/env bash
# Observability check of deploy/prometheus/sigver-rules.yml and deploy/grafana/sigver-dashboard.json
# with the Prometheus of Debian 12 (2.42, installed with apt-get when promtool is missing):
#  - `promtool check rules` and `promtool test rules` (sigver-rules.test.yml makes each alert
#    fire, and not fire where it should not);
#  - a private Prometheus on loopback scraping a real sigver (job "sigver", as the rules
#    assume) with the rules loaded: every rule evaluates without error, every dashboard query
#    (variables filled in) is valid PromQL and finds the instance's series, and
#    SigverInstanceDown goes pending once the instance is stopped.
# The names in both files are checked against /metrics by tests/observability.rs.
#
# Loopback only, in a mktemp dir; a trap stops what it started. Bounded: OBSERVABILITY_TIMEOUT
# s (default 120) once built. Ends with `observability: N passed, N failed`.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

TIMEOUT=${OBSERVABILITY_TIMEOUT:-120}
PASSED=0 FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sigver-observability.XXXXXX")
PIDS=()
finish() {
    local status=$?
    trap - EXIT ALRM INT TERM
    [ -n "${WATCHDOG:-}" ] && kill "$WATCHDOG" 2>/dev/null
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$FAILED" -gt 0 ]; then
        for log in "$WORK"/*.log; do
            [ -s "$log" ] && { echo "--- $log (last lines)"; tail -n 15 "$log"; }
        done
    fi
    rm -rf "$WORK"
    [ "$status" -ne 0 ] && [ "$FAILED" -eq 0 ] && fail "the script stopped early (status $status)"
    echo "observability: $PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
}
trap finish EXIT
trap 'exit 130' INT TERM
trap 'fail "global timeout of ${TIMEOUT} s"; exit 1' ALRM

# ---- promtool, from Debian's prometheus package (no recommends: only promtool is needed)
if ! command -v promtool >/dev/null; then
    apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    fail "promtool and prometheus are not installed"
    exit 1
fi
promtool --version 2>&1 | head -n 1

if (cd deploy/prometheus && promtool check rules sigver-rules.yml); then
    pass "promtool check rules"
else
    fail "promtool check rules"
fi
if (cd deploy/prometheus && promtool test rules sigver-rules.test.yml); then
    pass "promtool test rules"
else
    fail "promtool test rules"
fi

# ---- A real sigver scraped by a real Prometheus (the debug build `cargo test` made)
if ! cargo build --bin sigver -q; then
    fail "cargo build"
    exit 1
fi
# The watchdog: ALRM to this shell after TIMEOUT s; TERM stops it and its sleep.
(
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    sleep "$TIMEOUT" &
    sleeper=$!
    wait "$sleeper" && kill -ALRM $$
) >/dev/null 2>&1 &
WATCHDOG=$!

target/debug/sigver -h 127.0.0.1 -p 0 2>"$WORK/sigver.log" &
SIGVER=$!
PIDS+=("$SIGVER")
ADDR=""
for _ in $(seq 100); do
    ADDR=$(sed -n 's/.*listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$WORK/sigver.log")
    [ -n "$ADDR" ] && break
    sleep 0.1
done
[ -n "$ADDR" ] || { fail "sigver did not start"; exit 1; }

PROM_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $PWD/deploy/prometheus/sigver-rules.yml
scrape_configs:
  - job_name: sigver
    static_configs:
      - targets: ['$ADDR']
EOF
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
    --web.listen-address="127.0.0.1:$PROM_PORT" 2>"$WORK/prometheus.log" &
PIDS+=("$!")

# The queries, in Python (json, urllib): Prometheus's HTTP API answers JSON.
python3 - "http://127.0.0.1:$PROM_PORT" "$ADDR" deploy/grafana/sigver-dashboard.json \
    "$SIGVER" >"$WORK/checks.out" 2>"$WORK/checks.log" <<'EOF'
import json, os, re, signal, sys, time, urllib.parse, urllib.request
api, instance, dashboard, sigver = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def get(path, **params):
    url = f"{api}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)
    except OSError:
        return None

def until(what, cond, seconds=30):
    end = time.time() + seconds
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.5)
    print(f"FAIL {what}")
    return False

def query(expr):
    return get("query", query=expr) or {}

# Three scrapes, so that rate() over 1m has samples.
ok = until("sigver scraped three times", lambda: query(
    f'count_over_time(sigver_up{{job="sigver",instance="{instance}"}}[1m]) >= 3'
).get("data", {}).get("result"))
if ok:
    print(f"PASS Prometheus scrapes sigver {instance} as job sigver")

def rules_healthy():
    groups = (get("rules") or {}).get("data", {}).get("groups", [])
    rules = [r for g in groups for r in g["rules"]]
    return len(rules) == 8 and all(r.get("health") == "ok" for r in rules), rules
if until("the 8 rules evaluate without error", lambda: rules_healthy()[0]):
    print("PASS the 8 rules are loaded and evaluate without error")
else:
    print(json.dumps(rules_healthy()[1], indent=1), file=sys.stderr)

d = json.load(open(dashboard))
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
exprs = [(p["title"], t["expr"]) for p in panels(d["panels"]) for t in p.get("targets", [])]
for v in d["templating"]["list"]:
    if v["type"] == "query":
        exprs.append((f"variable {v['name']}", v["query"].replace("label_values(", "").split(",")[0]))
for title, expr in exprs:
    # As Grafana fills in a regex variable: escaped, then backslashes doubled for PromQL.
    value = re.escape(instance).replace("\\", "\\\\")
    e = expr.replace("$instance", value).replace("$__rate_interval", "1m")
    answer = query(e)
    if answer.get("status") != "success":
        print(f"FAIL {title}: {expr}: {answer.get('error')}")
    elif not answer["data"]["result"] and not expr.rstrip().endswith("> 0"):
        print(f"FAIL {title}: {expr}: no series")
    else:
        print(f"PASS {title}: {expr}")

os.kill(sigver, signal.SIGTERM)
def down_alert():
    alerts = (get("alerts") or {}).get("data", {}).get("alerts", [])
    return any(a["labels"].get("alertname") == "SigverInstanceDown"
               and a["labels"].get("instance") == instance for a in alerts)
if until("SigverInstanceDown after the instance stopped", down_alert):
    print(f"PASS SigverInstanceDown is pending for {instance} once it stopped")
EOF
while read -r verdict rest; do
    case $verdict in
        PASS) pass "$rest" ;;
        FAIL) fail "$rest" ;;
    esac
done <"$WORK/checks.out"
[ -s "$WORK/checks.log" ] && fail "the query script: $(tail -n 5 "$WORK/checks.log")"
[ "$FAILED" -eq 0 ]
