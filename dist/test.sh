#!/usr/bin/env bash
# Uses what dist/build.sh wrote into target/dist/ as a user would, on loopback:
#   tarball   SHA256SUMS match; file and ldd say static; the binary, alone in an empty root
#             (a new mount namespace, chroot), serves a member/joiner pair that relays
#   package   lintian reports no error; dpkg -i; sigver --version; the units in
#             /lib/systemd/system, accepted by systemd-analyze verify, not enabled; the
#             installed binary, socket-activated with /etc/default/sigver's flags, relays a
#             pair; dpkg -r removes every file but the conffile, dpkg -P that too
#   image     podman load; labels, user, port; podman run -p serves a relaying pair; under
#             --memory 48m with --memory-budget 8M it survives a reader that never reads, fed
#             64 MiB, while another pair keeps relaying
#   --arm     each ARM binary is static and relays a pair under qemu-user (ARMv6 as
#             -cpu arm1176, a Pi Zero's core); lintian on the arm64 and armhf packages
#
# Usage: dist/test.sh [--arm]   (as root: dpkg, chroot, podman). Run dist/build.sh first.
# Ends with `dist: N passed, N failed`; exits non-zero on any failure. Bounded: every server
# and probe has a timeout, and a trap stops what was started and removes the package.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PATH=$PATH:/usr/sbin:/sbin

ARM=0
[ "${1:-}" = --arm ] && ARM=1
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
DIST=$PWD/target/dist
PROBE=$PWD/target/debug/examples/scale-probe

PASSED=0 FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
check() { # $1: what; then a command that must succeed
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/sigver-dist-test.XXXXXX")
PODMAN=(podman --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs)
PIDS=() CONTAINERS=() INSTALLED=0
START=$SECONDS
finish() {
    local status=$?
    trap - EXIT INT TERM
    # Stopped early (a signal, an unexpected error): never a pass.
    [ "$status" -ne 0 ] && [ "$FAILED" -eq 0 ] && fail "the script stopped early (status $status)"
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    for c in "${CONTAINERS[@]}"; do "${PODMAN[@]}" rm -f -t 1 "$c" >/dev/null 2>&1; done
    wait 2>/dev/null
    [ "$INSTALLED" = 1 ] && dpkg -P sigver >/dev/null 2>&1
    rm -rf "$WORK"
    echo "dist tests took $((SECONDS - START)) s"
    echo "dist: $PASSED passed, $FAILED failed"
    # A trap's last status is not the script's: exit explicitly.
    [ "$FAILED" -eq 0 ] && exit 0
    exit 1
}
trap finish EXIT
trap 'exit 130' INT TERM

if ! timeout 900 cargo build --example scale-probe -q; then
    fail "cargo build --example scale-probe"
    exit 1
fi

# Starts "$@" with stderr in $WORK/$1.log ($1 names it) and waits for its listening line.
# Sets ADDR. 30 s: an emulated ARM binary starts slowly.
serve() {
    local log=$WORK/$1.log
    shift
    timeout 300 "$@" 2>"$log" &
    PIDS+=($!)
    for _ in $(seq 300); do
        ADDR=$(sed -n 's/.*Signaling server is listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$log")
        [ -n "$ADDR" ] && return 0
        sleep 0.1
    done
    echo "    no listening line; the log ends with: $(tail -n 3 "$log")"
    return 1
}

wait_port() {
    for _ in $(seq 100); do
        (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# A member and a joiner meet on three keys and relay both ways ($1 as the "proxy" and as the
# one instance behind it).
pair() {
    local out
    out=$(timeout 60 "$PROBE" "$1" "$1" --keys 3 2>&1)
    if grep -q '^FAIL' <<<"$out" || ! grep -q '^PASS' <<<"$out"; then
        echo "$out" | sed 's/^/    /'
        return 1
    fi
}

is_static() { # $1: binary
    local f
    f=$(file -b "$1")
    echo "    file: ${f%%, BuildID*}"
    grep -Eq 'statically linked|static-pie linked' <<<"$f" || return 1
    # ldd knows only the host's architecture; for it, the loader must find nothing to load.
    if [ "$(uname -m)" = x86_64 ] && grep -q x86-64 <<<"$f"; then
        echo "    ldd: $(ldd "$1" 2>&1)"
        ldd "$1" 2>&1 | grep -Eq 'not a dynamic executable|statically linked'
    fi
}

unpack() { # $1: Rust target; sets BIN to the binary of its tarball
    local name=sigver-$VERSION-$1
    rm -rf "${WORK:?}/$name"
    tar -C "$WORK" -xzf "$DIST/$name.tar.gz" || return 1
    BIN=$WORK/$name/sigver
    for f in sigver README.md LICENSE deploy/sigver.service deploy/sigver.socket; do
        [ -e "$WORK/$name/$f" ] || { echo "    $name.tar.gz lacks $f"; return 1; }
    done
}

# ---- Checksums
check "SHA256SUMS matches every artifact" \
    bash -c "cd '$DIST' && sha256sum --quiet -c SHA256SUMS && [ \$(wc -l <SHA256SUMS) -ge 3 ]"

# ---- Static binary, x86_64
T=x86_64-unknown-linux-musl
if check "sigver-$VERSION-$T.tar.gz holds the binary, README.md, LICENSE and the units" unpack $T; then
    check "the x86_64 binary is static (file, ldd)" is_static "$BIN"
    check "the x86_64 binary answers --version with $VERSION" \
        bash -c "'$BIN' --version | grep -qF '$VERSION'"
    mkdir "$WORK/root"
    cp "$BIN" "$WORK/root/sigver"
    echo "    empty root: $(cd "$WORK/root" && find . | tr '\n' ' ')"
    if serve empty-root unshare --mount --fork chroot "$WORK/root" /sigver -h 127.0.0.1 -p 0; then
        check "alone in an empty root, the x86_64 binary relays a pair" pair "$ADDR"
    else
        fail "the x86_64 binary did not start in an empty root"
    fi
fi

# ---- Debian package, amd64
lint() { # $1: package
    local out
    out=$(lintian --tag-display-limit 0 "$1" 2>&1)
    echo "$out" | sed 's/^/    lintian: /'
    ! grep -q '^E:' <<<"$out"
}
DEB=$DIST/sigver_${VERSION}-1_amd64.deb
check "lintian reports no error on $(basename "$DEB")" lint "$DEB"
if dpkg -s sigver >/dev/null 2>&1; then
    fail "a sigver package is already installed here: not touching it"
elif dpkg -i "$DEB" >"$WORK/dpkg.log" 2>&1; then
    INSTALLED=1
    pass "dpkg -i $(basename "$DEB")"
    check "the installed sigver answers --version with $VERSION" \
        bash -c "sigver --version | grep -qF '$VERSION' && [ \"\$(command -v sigver)\" = /usr/bin/sigver ]"
    check "the units are in /lib/systemd/system, /etc/default/sigver is a conffile" bash -c \
        "[ -f /lib/systemd/system/sigver.service ] && [ -f /lib/systemd/system/sigver.socket ] &&
         dpkg-query -W -f='\${Conffiles}' sigver | grep -q /etc/default/sigver"
    verify() {
        local out
        # Unknown keys are only warnings (status 0): any output is a failure.
        if out=$(systemd-analyze verify /lib/systemd/system/sigver.socket \
            /lib/systemd/system/sigver.service 2>&1) && [ -z "$out" ]; then
            return 0
        fi
        echo "    $out"
        return 1
    }
    check "systemd-analyze verify accepts the installed units" verify
    check "the units are installed, not enabled" bash -c \
        "! ls /etc/systemd/system/*/sigver.* >/dev/null 2>&1"
    # As the unit runs it: its ExecStart line, with $SIGVER_OPTS from /etc/default/sigver, on
    # a socket handed over by systemd.
    port=$("$PROBE" --free-port)
    printf 'SIGVER_OPTS="--max-connections-per-ip 0 --log-format json"\n' >/etc/default/sigver
    # shellcheck disable=SC1091 # written just above
    opts=$(. /etc/default/sigver && echo "$SIGVER_OPTS")
    exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/sigver.service)
    echo "    ExecStart=$exec_start"
    # shellcheck disable=SC2086 # the unit splits $SIGVER_OPTS into words, so must this
    timeout 60 systemd-socket-activate -l "127.0.0.1:$port" ${exec_start//\$SIGVER_OPTS/$opts} \
        2>"$WORK/activated.log" &
    PIDS+=($!)
    if wait_port "$port" && pair "127.0.0.1:$port" &&
        grep -q '"message":"Signaling server' "$WORK/activated.log"; then
        pass "the installed sigver, socket-activated with /etc/default/sigver's flags, relays a pair"
    else
        fail "the installed sigver, socket-activated: $(tail -n 3 "$WORK/activated.log")"
    fi
    kill "${PIDS[-1]}" 2>/dev/null
    files=$(dpkg-query -L sigver | while read -r f; do [ -f "$f" ] && echo "$f"; done)
    if dpkg -r sigver >>"$WORK/dpkg.log" 2>&1; then
        left=$(for f in $files; do [ -e "$f" ] && echo "$f"; done)
        check "dpkg -r removes every file but the conffile" [ "$left" = /etc/default/sigver ]
        dpkg -P sigver >>"$WORK/dpkg.log" 2>&1
        INSTALLED=0
        check "dpkg -P removes /etc/default/sigver too" [ ! -e /etc/default/sigver ]
    else
        fail "dpkg -r sigver: $(tail -n 3 "$WORK/dpkg.log")"
    fi
else
    fail "dpkg -i: $(tail -n 3 "$WORK/dpkg.log")"
fi

# ---- OCI image, amd64
IMAGE=localhost/sigver:$VERSION
# The runtime cannot raise limits in a container here: ask for no more than the host allows.
limit() { local h; h=$(ulimit -H "$1"); [ "$h" = unlimited ] || [ "$h" -gt "$2" ] && h=$2; echo "$h"; }
NOFILE=$(limit -n 4096) NPROC=$(limit -u 1024)
run() { # $1: name; then podman run options, the image and the server's flags
    local name=sigver-dist-test-$$-$1
    shift
    CONTAINERS+=("$name")
    PORT=$("$PROBE" --free-port)
    "${PODMAN[@]}" run -d --name "$name" --runtime runc \
        --ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$NPROC:$NPROC" \
        -p "127.0.0.1:$PORT:8000" "$@" >/dev/null && wait_port "$PORT"
}
running() { [ "$("${PODMAN[@]}" inspect -f '{{.State.Running}}' "$1" 2>&1)" = true ]; }
if "${PODMAN[@]}" load -q -i "$DIST/sigver-$VERSION-image-amd64.tar" >"$WORK/load.log" 2>&1 &&
    "${PODMAN[@]}" tag "$(sed -n 's/^Loaded image.*: //p' "$WORK/load.log" | head -n 1)" "$IMAGE"; then
    pass "podman load -i sigver-$VERSION-image-amd64.tar"
    meta=$("${PODMAN[@]}" image inspect -f \
        '{{.Architecture}} {{.Config.User}} {{range $p, $_ := .Config.ExposedPorts}}{{$p}}{{end}} {{index .Labels "org.opencontainers.image.version"}} {{index .Labels "org.opencontainers.image.licenses"}} {{index .Labels "org.opencontainers.image.source"}}' \
        "$IMAGE")
    echo "    image: $meta, $("${PODMAN[@]}" image inspect -f '{{.Size}}' "$IMAGE") bytes"
    check "the image is amd64, runs as 65534, exposes 8000, has the version and license labels" \
        grep -Eq "^amd64 65534:65534 8000/tcp $VERSION MIT [^ ]+$" <<<"$meta"
    if run plain "$IMAGE" --max-connections-per-ip 0; then
        check "podman run -p serves a relaying pair" pair "127.0.0.1:$PORT"
    else
        fail "podman run -p: $("${PODMAN[@]}" logs "${CONTAINERS[-1]}" 2>&1 | tail -n 3)"
    fi
    # --max-send-queue 64M: the budget, not the queue limit, is what must stop the reader.
    if run capped --memory 48m "$IMAGE" --memory-budget 8M --max-send-queue 64M \
        --max-connections-per-ip 0; then
        fed() {
            local out
            out=$(timeout 120 "$PROBE" --slow-reader "127.0.0.1:$PORT" 64 2>&1)
            local status=$?
            echo "    $out"
            [ "$status" = 0 ] && grep -q 'closed with \[1008' <<<"$out"
        }
        check "--memory 48m, --memory-budget 8M: a slow reader fed 64 MiB is closed (1008), a pair relays throughout" fed
        id=$("${PODMAN[@]}" inspect -f '{{.Id}}' "${CONTAINERS[-1]}")
        peak=$(find /sys/fs/cgroup/memory -path "*$id*" -name memory.max_usage_in_bytes 2>/dev/null | head -n 1)
        [ -n "$peak" ] && echo "    the container's peak memory (cgroup): $(($(cat "$peak") / 1024)) KiB"
        check "--memory 48m: the container still runs after the feed (never killed)" \
            running "${CONTAINERS[-1]}"
        check "--memory 48m: and still relays a pair" pair "127.0.0.1:$PORT"
    else
        fail "podman run --memory 48m: $("${PODMAN[@]}" logs "${CONTAINERS[-1]}" 2>&1 | tail -n 3)"
    fi
else
    fail "podman load: $(tail -n 3 "$WORK/load.log")"
fi

# ---- ARM, under qemu-user
if [ "$ARM" = 1 ]; then
    for spec in "aarch64-unknown-linux-musl qemu-aarch64" \
        "armv7-unknown-linux-musleabihf qemu-arm -cpu cortex-a7" \
        "arm-unknown-linux-musleabihf qemu-arm -cpu arm1176"; do
        read -r T QEMU <<<"$spec"
        if check "sigver-$VERSION-$T.tar.gz holds the binary, README.md, LICENSE and the units" unpack "$T"; then
            check "the $T binary is static" is_static "$BIN"
            # shellcheck disable=SC2086 # QEMU holds the emulator and its flags
            if serve "$T" $QEMU "$BIN" -h 127.0.0.1 -p 0 --max-connections-per-ip 0; then
                check "under $QEMU, the $T binary relays a pair" pair "$ADDR"
            else
                fail "under $QEMU, the $T binary did not start"
            fi
            kill "${PIDS[-1]}" 2>/dev/null
        fi
    done
    for arch in arm64 armhf; do
        check "lintian reports no error on sigver_${VERSION}-1_$arch.deb" lint "$DIST/sigver_${VERSION}-1_$arch.deb"
    done
    meta=$("${PODMAN[@]}" load -q -i "$DIST/sigver-$VERSION-image-arm64.tar" 2>&1 | sed -n 's/^Loaded image.*: //p')
    check "the arm64 image loads and is arm64" \
        bash -c "[ \"\$(${PODMAN[*]} image inspect -f '{{.Architecture}}' '$meta')\" = arm64 ]"
    check "the armhf package holds the ARMv6 binary" bash -c \
        "dpkg-deb --fsys-tarfile '$DIST/sigver_${VERSION}-1_armhf.deb' | tar -xO ./usr/bin/sigver |
         cmp -s - target/arm-unknown-linux-musleabihf/release/sigver"
fi
