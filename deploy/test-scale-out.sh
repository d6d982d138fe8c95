#!/usr/bin/env bash
# Scale-out check: three sigver instances behind a private nginx, and a private HAProxy, that
# route with the shipped rules (deploy/nginx-snippets/, the upstream block of deploy/nginx.conf,
# the backend of deploy/haproxy.cfg). A real WebSocket client (deploy/test/scale_probe.rs)
# shows that the peers of a key meet on one instance whatever their query, that keys spread
# over all instances, and that a down instance keeps its keys (no split group); and that behind
# nginx (X-Forwarded-For, --trusted-proxies) and HAProxy (send-proxy-v2, --proxy-protocol)
# clients from 127.0.0.2 and 127.0.0.3 are counted apart by the per-address limit. Also checks
# the shipped files themselves: systemd-analyze verify/security, nginx -t, haproxy -c.
#
# Loopback only, in a mktemp dir; a trap stops everything it started. Bounded: the build has
# SCALE_OUT_BUILD_TIMEOUT s (default 1800), the rest SCALE_OUT_TIMEOUT s (default 120).
# A check that cannot run here is SKIPped with its reason, never counted as passed.
# Ends with `scale-out: N passed, N failed, N skipped`; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
PATH=$PATH:/usr/sbin:/sbin # nginx and haproxy live there on Debian

TIMEOUT=${SCALE_OUT_TIMEOUT:-120}
BUILD_TIMEOUT=${SCALE_OUT_BUILD_TIMEOUT:-1800}
KEYS=${SCALE_OUT_KEYS:-30}
# SIGVER_BIN: test that binary (e.g. an installed one) instead of building target/release.
BIN=${SIGVER_BIN:-$PWD/target/release/sigver}
PROBE=$PWD/target/debug/examples/scale-probe

PASSED=0 FAILED=0 SKIPPED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
skip() { SKIPPED=$((SKIPPED + 1)); echo "SKIP $*"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sigver-scale-out.XXXXXX")
PIDS=()
START=$SECONDS

# Stops what we started (TERM, then KILL after 5 s), prints the summary, sets the status.
finish() {
    local status=$?
    trap - EXIT ALRM INT TERM
    [ -n "${WATCHDOG:-}" ] && kill "$WATCHDOG" 2>/dev/null
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    if [ "$FAILED" -gt 0 ] && [ -d "$WORK" ]; then
        for log in "$WORK"/*.log "$WORK"/*/*.log "$WORK"/*/logs/*.log; do
            [ -s "$log" ] && { echo "--- $log (last lines)"; tail -n 15 "$log"; }
        done
    fi
    rm -rf "$WORK"
    echo "scale-out took $((SECONDS - START)) s"
    [ "$status" -ne 0 ] && [ "$FAILED" -eq 0 ] && fail "the script stopped early (status $status)"
    echo "scale-out: $PASSED passed, $FAILED failed, $SKIPPED skipped"
    [ "$FAILED" -eq 0 ] && exit 0
    exit 1
}
trap finish EXIT
trap 'exit 130' INT TERM
trap 'fail "global timeout of ${TIMEOUT} s"; exit 1' ALRM

# Long children run in the background and are waited for, so that the timeout trap fires now.
run_bg() {
    "$@" &
    local pid=$!
    PIDS+=("$pid")
    wait "$pid"
}

# ---- Build (bounded separately: a cold release build with LTO takes minutes)
echo "building the release binary and the probe (if needed)..."
if { [ -z "${SIGVER_BIN:-}" ] && ! timeout "$BUILD_TIMEOUT" cargo build --release --bin sigver -q; } ||
    ! timeout "$BUILD_TIMEOUT" cargo build --example scale-probe -q || [ ! -x "$BIN" ]; then
    fail "cargo build"
    exit 1
fi
pass "sigver binary ready: $BIN, $(stat -c %s "$BIN") bytes"

# The watchdog: ALRM to this shell after TIMEOUT s; TERM stops it and its sleep.
(
    trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
    sleep "$TIMEOUT" &
    sleeper=$!
    wait "$sleeper" && kill -ALRM $$
) 2>/dev/null &
WATCHDOG=$!

# ---- systemd units
if command -v systemd-analyze >/dev/null; then
    units=$WORK/units
    mkdir -p "$units"
    # verify checks that ExecStart exists: point it at the binary just built.
    sed "s|/usr/local/bin/sigver|$BIN|" deploy/sigver.service >"$units/sigver.service"
    cp deploy/sigver.socket "$units/"
    # Unknown keys are only warnings (status 0): any output is a failure.
    verify() {
        local out
        out=$(cd "$units" && systemd-analyze verify sigver.socket sigver.service 2>&1)
        if [ $? -eq 0 ] && [ -z "$out" ]; then pass "$1"; else fail "$1: $out"; fi
    }
    verify "systemd-analyze verify sigver.socket sigver.service"
    # The commented wss:// variant: uncommented, in place of the plain ExecStart.
    sed -i '/^ExecStart=/d; s/^#SupplementaryGroups=/SupplementaryGroups=/; s/^#ExecStart=/ExecStart=/' \
        "$units/sigver.service"
    verify "systemd-analyze verify, wss:// variant of sigver.service"
    if out=$(systemd-analyze security --offline=true --threshold=20 \
        "$PWD/deploy/sigver.service" 2>&1); then
        pass "systemd-analyze security: $(echo "$out" | grep -o 'exposure level.*' | tail -1)"
    else
        fail "systemd-analyze security: exposure above 2.0: $(echo "$out" | tail -1)"
    fi
else
    skip "systemd-analyze verify/security: systemd-analyze is not installed here"
fi

# ---- Test certificate, for the syntax checks of the TLS parts
if command -v openssl >/dev/null &&
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null; then
    cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/combined.pem"
    HAVE_CERT=1
else
    HAVE_CERT=0
fi

# ---- Three instances, each on a port the kernel picks (-p 0), read from its start line
INSTANCES=() INSTANCE_PIDS=()
start_instance() { # $1: name, then flags (default: no per-address limit); appends to INSTANCES
    local log=$WORK/$1.log addr
    shift
    [ $# -eq 0 ] && set -- --max-connections-per-ip 0
    "$BIN" -h 127.0.0.1 -p 0 "$@" 2>"$log" &
    PIDS+=($!)
    INSTANCE_PIDS+=($!)
    for _ in $(seq 100); do
        addr=$(sed -n 's/.*Signaling server is listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$log")
        if [ -n "$addr" ]; then
            INSTANCES+=("$addr")
            return 0
        fi
        sleep 0.1
    done
    return 1
}
for name in s1 s2 s3; do
    if ! start_instance "$name"; then
        fail "instance $name did not start"
        exit 1
    fi
done
pass "three instances listening on ${INSTANCES[*]}"

# Waits until something accepts on 127.0.0.1:$1 (or $2 tenths of a second pass).
wait_port() {
    for _ in $(seq "${2:-50}"); do
        (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# Starts "$@" (a proxy that listens on $PORT); retries with another free port if it dies
# (someone took the port between the probe's bind and the proxy's). Sets PORT.
start_proxy() { # $1: config writer; then the command
    local write=$1 pid
    shift
    for _ in 1 2 3; do
        PORT=$("$PROBE" --free-port) || return 1
        "$write" "$PORT"
        "$@" &
        pid=$!
        PIDS+=("$pid")
        wait_port "$PORT" && kill -0 "$pid" 2>/dev/null && return 0
        kill "$pid" 2>/dev/null
    done
    return 1
}

# The status code a plain (not upgrade) GET of $2 gets from 127.0.0.1:$1.
plain_get() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$2" >&3
    read -r -t 5 _ line _ <&3
    exec 3<&-
    echo "$line"
}

# Proxies pass WebSocket upgrades only: sigver's /metrics and status page trust loopback
# clients, and behind a proxy every client is loopback.
plain_refused() { # $1: name, $2: port
    local path status
    for path in /metrics / /health; do
        status=$(plain_get "$2" "$path")
        if [ "$status" = 403 ]; then
            pass "$1: a plain GET $path is refused by the proxy (403)"
        else
            fail "$1: a plain GET $path got '$status', not the proxy's 403"
        fi
    done
}

# Runs the probe against a proxy; its PASS/FAIL lines are counted here. Keeps HOLDS lines.
probe() { # $1: name, $2: proxy address
    local out=$WORK/$1.probe
    run_bg "$PROBE" "$2" "${INSTANCES[@]}" --keys "$KEYS" >"$out"
    while read -r word rest; do
        case $word in
        PASS) pass "$1: $rest" ;;
        FAIL) fail "$1: $rest" ;;
        HOLDS) ;;
        *) echo "     $1: $word $rest" ;;
        esac
    done <"$out"
    grep -q '^PASS .*spread over' "$out" || fail "$1: the probe did not finish"
}

# ---- nginx: the shipped snippets, and the upstream block of deploy/nginx.conf
NGX=$WORK/nginx
mkdir -p "$NGX/conf/snippets" "$NGX/logs" "$NGX/temp"
cp deploy/nginx-snippets/*.conf "$NGX/conf/snippets/"
# The shipped upstream (hash rule, server options), with the test instances' addresses.
awk '/^upstream sigver \{/,/^\}/' deploy/nginx.conf |
    sed "s/127\.0\.0\.1:8001/${INSTANCES[0]}/; s/127\.0\.0\.1:8002/${INSTANCES[1]}/; \
         s/127\.0\.0\.1:8003/${INSTANCES[2]}/" >"$NGX/conf/upstream.conf"
nginx_conf() {
    cat >"$NGX/conf/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $NGX/nginx.pid;
error_log $NGX/logs/error.log notice;
events { worker_connections 1024; }
http {
    access_log $NGX/logs/access.log;
    client_body_temp_path $NGX/temp/body;
    proxy_temp_path $NGX/temp/proxy;
    fastcgi_temp_path $NGX/temp/fastcgi;
    uwsgi_temp_path $NGX/temp/uwsgi;
    scgi_temp_path $NGX/temp/scgi;
    include snippets/sigver-key.conf;
    include upstream.conf;
    server {
        listen 127.0.0.1:$1;
        location / {
            include snippets/sigver-proxy.conf;
        }
    }
}
EOF
}
NGINX_PORT=
if ! command -v nginx >/dev/null; then
    skip "nginx routing: nginx is not installed here (apt-get install nginx)"
elif [ "$(grep -c "^ *server 127.0.0.1:.* max_fails=0;" "$NGX/conf/upstream.conf")" != 3 ] ||
    ! grep -q '^ *hash \$sigver_key consistent;' "$NGX/conf/upstream.conf"; then
    fail "nginx: deploy/nginx.conf's upstream block is not what this test expects"
else
    if [ "$HAVE_CERT" = 1 ]; then
        # The whole shipped file, TLS included, with the test certificate.
        sed "s|/etc/letsencrypt/live/sigver.example.org/fullchain.pem|$WORK/cert.pem|; \
             s|/etc/letsencrypt/live/sigver.example.org/privkey.pem|$WORK/key.pem|" \
            deploy/nginx.conf >"$NGX/conf/shipped.conf"
        printf 'pid %s;\nevents {}\nhttp {\n    include shipped.conf;\n}\n' \
            "$NGX/check.pid" >"$NGX/conf/check.conf"
        if out=$(nginx -t -q -p "$NGX/" -c "$NGX/conf/check.conf" -e "$NGX/logs/check.log" 2>&1); then
            pass "nginx -t accepts deploy/nginx.conf with the snippets"
        else
            fail "nginx -t on deploy/nginx.conf: $out"
        fi
    else
        skip "nginx -t on deploy/nginx.conf: no openssl to make a test certificate"
    fi
    if start_proxy nginx_conf nginx -p "$NGX/" -c "$NGX/conf/nginx.conf" -e "$NGX/logs/error.log"; then
        NGINX_PORT=$PORT
        pass "nginx listening on 127.0.0.1:$NGINX_PORT"
        probe nginx "127.0.0.1:$NGINX_PORT"
        plain_refused nginx "$NGINX_PORT"
    else
        fail "nginx did not start"
    fi
fi

# ---- HAProxy: the `defaults` and `backend sigver` sections of deploy/haproxy.cfg
HAP=$WORK/haproxy
mkdir -p "$HAP"
haproxy_conf() {
    {
        printf 'global\n    maxconn 1000\n    pidfile %s/haproxy.pid\n\n' "$HAP"
        # Paragraphs (sections) of the shipped file, server addresses replaced.
        awk 'BEGIN { RS = ""; ORS = "\n\n" } /(^|\n)defaults/ || /(^|\n)backend sigver/' \
            deploy/haproxy.cfg |
            sed "s/127\.0\.0\.1:8001/${INSTANCES[0]}/; s/127\.0\.0\.1:8002/${INSTANCES[1]}/; \
                 s/127\.0\.0\.1:8003/${INSTANCES[2]}/; s/^ *log global$//"
        printf 'frontend test\n    bind 127.0.0.1:%s\n    default_backend sigver\n' "$1"
    } >"$HAP/haproxy.cfg"
}
HAPROXY_PORT=
if ! command -v haproxy >/dev/null; then
    skip "HAProxy routing: haproxy is not installed here (apt-get install haproxy)"
else
    if [ "$HAVE_CERT" = 1 ]; then
        sed "s|/etc/haproxy/certs/sigver.pem|$WORK/combined.pem|" deploy/haproxy.cfg >"$HAP/shipped.cfg"
        if out=$(haproxy -c -f "$HAP/shipped.cfg" 2>&1) && ! grep -q WARNING <<<"$out"; then
            pass "haproxy -c accepts deploy/haproxy.cfg"
        else
            fail "haproxy -c on deploy/haproxy.cfg: $out"
        fi
    else
        skip "haproxy -c on deploy/haproxy.cfg: no openssl to make a test certificate"
    fi
    if start_proxy haproxy_conf haproxy -db -f "$HAP/haproxy.cfg" 2>"$HAP/haproxy.log"; then
        HAPROXY_PORT=$PORT
        if [ "$(grep -c "^ *server s[123] 127.0.0.1:" "$HAP/haproxy.cfg")" = 3 ]; then
            pass "HAProxy listening on 127.0.0.1:$HAPROXY_PORT"
            probe haproxy "127.0.0.1:$HAPROXY_PORT"
            plain_refused haproxy "$HAPROXY_PORT"
        else
            fail "HAProxy: deploy/haproxy.cfg's backend is not what this test expects"
        fi
    else
        fail "HAProxy did not start: $(tail -n 3 "$HAP/haproxy.log" 2>/dev/null)"
    fi
fi

# ---- A down instance keeps its keys: refused through the proxy, never sent elsewhere
# (where a second group of the same key would form). Instance s3 is stopped.
kill -TERM "${INSTANCE_PIDS[2]}" 2>/dev/null
for _ in $(seq 50); do kill -0 "${INSTANCE_PIDS[2]}" 2>/dev/null || break; sleep 0.1; done
for proxy in nginx haproxy; do
    port=$([ $proxy = nginx ] && echo "$NGINX_PORT" || echo "$HAPROXY_PORT")
    [ -z "$port" ] && continue
    down_key=$(awk '$1 == "HOLDS" && $2 == 2 { print $3; exit }' "$WORK/$proxy.probe")
    up_key=$(awk '$1 == "HOLDS" && $2 != 2 { print $3; exit }' "$WORK/$proxy.probe")
    if [ -z "$down_key" ] || [ -z "$up_key" ]; then
        fail "$proxy: no key per instance to test a down instance with"
        continue
    fi
    for attempt in 1 2; do # twice: a first failure must not move the key either
        status=$("$PROBE" --status "127.0.0.1:$port" "/$down_key?favored")
        case $status in
        502 | 503) pass "$proxy: '$down_key' of the down instance is refused ($status), try $attempt" ;;
        *) fail "$proxy: '$down_key' of the down instance got $status, not 502/503 (try $attempt)" ;;
        esac
    done
    status=$("$PROBE" --status "127.0.0.1:$port" "/$up_key")
    if [ "$status" = 101 ]; then
        pass "$proxy: '$up_key' of a live instance still upgrades"
    else
        fail "$proxy: '$up_key' of a live instance got $status"
    fi
done

# ---- The client's address behind a proxy. Two more instances, each capped at 2 connections
# per client: one with --trusted-proxies behind nginx (X-Forwarded-For, the shipped snippet),
# one with --proxy-protocol behind HAProxy's send-proxy-v2 (the shipped
# deploy/haproxy-proxy-protocol.cfg). Clients from 127.0.0.2 and 127.0.0.3 must be counted
# apart: the cap hit per client, not per proxy.
per_client() { # $1: name, $2: proxy port
    local a b
    a=$("$PROBE" --statuses-from 127.0.0.2 "127.0.0.1:$2" /capped 3 2>&1)
    b=$("$PROBE" --statuses-from 127.0.0.3 "127.0.0.1:$2" /capped 1 2>&1)
    if [ "$a" = "101 101 429" ] && [ "$b" = 101 ]; then
        pass "$1: clients counted apart behind the proxy (127.0.0.2: $a; 127.0.0.3: $b)"
    else
        fail "$1: 127.0.0.2 got '$a' (want 101 101 429), 127.0.0.3 got '$b' (want 101)"
    fi
}
if command -v nginx >/dev/null; then
    if start_instance xff --trusted-proxies 127.0.0.1/32 --max-connections-per-ip 2; then
        NGX=$WORK/nginx-xff
        mkdir -p "$NGX/conf/snippets" "$NGX/logs" "$NGX/temp"
        cp deploy/nginx-snippets/*.conf "$NGX/conf/snippets/"
        printf 'upstream sigver {\n    server %s max_fails=0;\n}\n' "${INSTANCES[-1]}" \
            >"$NGX/conf/upstream.conf"
        if start_proxy nginx_conf nginx -p "$NGX/" -c "$NGX/conf/nginx.conf" -e "$NGX/logs/error.log"; then
            per_client "nginx and --trusted-proxies" "$PORT"
        else
            fail "nginx in front of the --trusted-proxies instance did not start"
        fi
    else
        fail "the --trusted-proxies instance did not start"
    fi
fi
HPP=$WORK/haproxy-pp
mkdir -p "$HPP"
haproxy_pp_conf() {
    {
        printf 'global\n    maxconn 1000\n    pidfile %s/haproxy.pid\n\n' "$HPP"
        awk 'BEGIN { RS = ""; ORS = "\n\n" } /(^|\n)defaults/ || /(^|\n)frontend sigver_tcp/ ||
             /(^|\n)backend sigver_tcp/' deploy/haproxy-proxy-protocol.cfg |
            sed "s/127\.0\.0\.1:8443/${INSTANCES[-1]}/; s/bind :443/bind 127.0.0.1:$1/; \
                 s/^ *log global$//"
    } >"$HPP/haproxy.cfg"
}
if command -v haproxy >/dev/null; then
    if out=$(haproxy -c -f deploy/haproxy-proxy-protocol.cfg 2>&1) && ! grep -q WARNING <<<"$out"; then
        pass "haproxy -c accepts deploy/haproxy-proxy-protocol.cfg"
    else
        fail "haproxy -c on deploy/haproxy-proxy-protocol.cfg: $out"
    fi
    if start_instance pp --proxy-protocol --max-connections-per-ip 2; then
        if start_proxy haproxy_pp_conf haproxy -db -f "$HPP/haproxy.cfg" 2>"$HPP/haproxy.log"; then
            per_client "HAProxy send-proxy-v2 and --proxy-protocol" "$PORT"
        else
            fail "HAProxy in front of the --proxy-protocol instance did not start: $(tail -n 3 "$HPP/haproxy.log")"
        fi
    else
        fail "the --proxy-protocol instance did not start"
    fi
fi

# ---- Socket activation (sigver.socket): the server must serve an inherited listener and
# ignore -h/-p (here the port of a running instance: binding it would fail). Runs once the
# binary knows LISTEN_FDS.
if ! command -v systemd-socket-activate >/dev/null; then
    skip "socket activation: systemd-socket-activate is not installed here"
elif ! grep -q LISTEN_FDS "$BIN"; then
    skip "socket activation: this sigver binary does not read LISTEN_FDS yet"
else
    port=$("$PROBE" --free-port)
    systemd-socket-activate -l "127.0.0.1:$port" "$BIN" -h 127.0.0.1 -p "${INSTANCES[0]##*:}" \
        2>"$WORK/activated.log" &
    PIDS+=($!)
    wait_port "$port"
    # The meet and hold checks, with the socket as "proxy" and as the one instance behind it.
    run_bg "$PROBE" "127.0.0.1:$port" "127.0.0.1:$port" --keys 3 >"$WORK/activated.probe"
    if grep -q '^FAIL' "$WORK/activated.probe" || ! grep -q '^PASS' "$WORK/activated.probe"; then
        fail "socket activation: $(grep -m1 '^FAIL' "$WORK/activated.probe")"
    elif ! grep -q "listening on 127\.0\.0\.1:$port\b" "$WORK/activated.log"; then
        fail "socket activation: the start line does not name the inherited socket 127.0.0.1:$port"
    else
        pass "socket activation: peers meet on the inherited socket, -h/-p ignored"
    fi
fi
exit 0
