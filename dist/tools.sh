#!/usr/bin/env bash
# Installs what dist/build.sh and dist/test.sh need and does not find, on Debian 12 with Rust
# (run as root for apt-get): only from Debian's packages, rustup, crates.io and PyPI.
#
# Usage: dist/tools.sh [--arm]
#   always   podman and runc (the image; crun refuses cgroup hybrids), lintian, file,
#            systemd (systemd-analyze, systemd-socket-activate), the x86_64 musl target,
#            cargo-deb
#   --arm    qemu-user (the ARM smoke test), the aarch64 musl target, a nightly toolchain
#            with rust-src (-Zbuild-std for the 32-bit targets), cargo-zigbuild, and zig
#            from PyPI in a venv under target/dist-tools/
set -euo pipefail
cd "$(dirname "$0")/.."

ARM=0
[ "${1:-}" = --arm ] && ARM=1

# Versions known to work together here; newer ones are fine to try.
CARGO_DEB=3.8.0
CARGO_ZIGBUILD=0.24.1
ZIGLANG=0.17.1

packages=()
command -v podman >/dev/null || packages+=(podman)
command -v runc >/dev/null || packages+=(runc)
command -v lintian >/dev/null || packages+=(lintian)
command -v file >/dev/null || packages+=(file)
command -v systemd-analyze >/dev/null || packages+=(systemd)
if [ "$ARM" = 1 ]; then
    command -v qemu-aarch64 >/dev/null || packages+=(qemu-user)
fi
if [ ${#packages[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${packages[@]}" >/dev/null
fi

rustup target add x86_64-unknown-linux-musl
command -v cargo-deb >/dev/null || nice cargo install --locked "cargo-deb@$CARGO_DEB"

if [ "$ARM" = 1 ]; then
    rustup target add aarch64-unknown-linux-musl
    rustup toolchain install nightly --profile minimal --component rust-src
    command -v cargo-zigbuild >/dev/null || nice cargo install --locked "cargo-zigbuild@$CARGO_ZIGBUILD"
    if [ ! -x target/dist-tools/venv/bin/python3 ] ||
        ! target/dist-tools/venv/bin/python3 -m ziglang version >/dev/null 2>&1; then
        python3 -m venv target/dist-tools/venv
        target/dist-tools/venv/bin/pip install -q "ziglang==$ZIGLANG"
    fi
fi
