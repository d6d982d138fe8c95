#!/usr/bin/env bash
# End-to-end tests: real Netflux pages in headless Chromium, through the release binary.
# Needs root (for the namespaces), /usr/bin/chromium, ip (iproute2), openssl, node and npm.
# Usage: tests/e2e/run.sh   (E2E_TIMEOUT=seconds bounds the whole run, default 300)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ "${1:-}" = --inside ]; then
  # We are PID 1 of fresh network, PID and mount namespaces: whatever the test starts dies
  # with us, and the namespace with its interfaces vanishes on its own, so no cleanup trap.
  # Chromium never uses loopback for WebRTC and would otherwise pick the machine's real
  # interface; here its only choice is the test address on a veth pair that leads nowhere.
  ip link set lo up
  ip link add e2e0 type veth peer name e2e1
  ip addr add 198.18.0.1/24 dev e2e0
  ip link set e2e1 up
  ip link set e2e0 up
  # Chromium looks for the route to the internet to choose its address: give it one.
  ip route add default via 198.18.0.2 dev e2e0
  node "$here/e2e.mjs"
  exit
fi

for tool in /usr/bin/chromium ip openssl node npm; do
  command -v "$tool" >/dev/null || { echo "e2e: $tool is missing (apt-get install -y chromium iproute2 openssl nodejs npm)" >&2; exit 1; }
done
if [ -z "${SIGVER_BIN:-}" ]; then
  (cd "$here/../.." && cargo build --release --quiet)
  export SIGVER_BIN="$here/../../target/release/sigver"
fi
[ -d "$here/node_modules" ] || (cd "$here" && npm ci --no-audit --no-fund)

# At the limit, timeout kills unshare (which ignores SIGTERM while it waits), --kill-child then
# kills the namespace's PID 1, and the kernel everything else in it. --foreground lets Ctrl-C
# reach the test.
limit=${E2E_TIMEOUT:-300}
# Key, certificate, browser profile and Chromium's own temporary files, removed even after a kill.
TMPDIR=$(mktemp -d -t sigver-e2e.XXXXXX)
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
status=0
timeout --foreground -s KILL "$limit" \
  unshare --net --pid --fork --mount-proc --kill-child "$BASH" "$here/run.sh" --inside || status=$?
[ "$status" -ne 137 ] || echo "e2e: killed, probably at the ${limit} s limit" >&2
exit "$status"
