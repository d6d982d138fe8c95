#!/usr/bin/env bash
# Builds what a user installs without a Rust toolchain, into target/dist/:
#   sigver-VERSION-TARGET.tar.gz     a static (musl) binary, README.md, LICENSE, the deploy/ units
#   sigver_VERSION-1_ARCH.deb        Debian package (cargo-deb): /usr/bin/sigver, the units in
#                                    /lib/systemd/system (installed, not enabled), /etc/default/sigver
#   sigver-VERSION-image-ARCH.tar    OCI archive (`podman load -i`): FROM scratch, the binary only
#   SHA256SUMS                       over all of the above
#
# Usage: dist/build.sh [--arm] [--no-deb] [--no-image]
#   default   x86_64: tarball, amd64 package, amd64 image (what CI tests)
#   --arm     also aarch64 (tarball, arm64 package, arm64 image), armv7 (tarball) and ARMv6
#             hard-float (tarball, armhf package: Raspberry Pi OS armhf also runs on ARMv6)
# The tools come from dist/tools.sh (apt-get, rustup, cargo install, a Python venv for zig).
#
# x86_64 builds with the host's gcc for ring's C parts. The ARM targets build with
# cargo-zigbuild (zig from PyPI is the C compiler and linker for musl); the 32-bit ones with a
# nightly -Zbuild-std, since rustup serves no standard library for their musl targets.
set -euo pipefail
cd "$(dirname "$0")/.."

ARM=0 DEB=1 IMAGE=1
for arg in "$@"; do
    case $arg in
    --arm) ARM=1 ;;
    --no-deb) DEB=0 ;;
    --no-image) IMAGE=0 ;;
    *)
        sed -n '2,14s/^# \{0,1\}//p' "$0" >&2
        exit 2
        ;;
    esac
done

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
OUT=$PWD/target/dist
TOOLS=$PWD/target/dist-tools
# Reproducible archives: every date inside them is the last commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# The image's source label: SIGVER_SOURCE, else Cargo.toml's repository, else git's origin.
SOURCE=${SIGVER_SOURCE:-$(sed -n 's/^repository = "\(.*\)"$/\1/p' Cargo.toml)}
SOURCE=${SOURCE:-$(git remote get-url origin 2>/dev/null || true)}
if [ -z "$SOURCE" ]; then
    echo "build: no source address (set SIGVER_SOURCE or Cargo.toml's repository); the image says 'unknown'" >&2
    SOURCE=unknown
fi

need() {
    command -v "$1" >/dev/null && return 0
    echo "build: $1 is missing: run dist/tools.sh${2:+ $2} (as root for apt-get)" >&2
    exit 1
}
[ "$DEB" = 1 ] && need cargo-deb
[ "$IMAGE" = 1 ] && need podman
if [ "$ARM" = 1 ]; then
    need cargo-zigbuild --arm
    [ -x "$TOOLS/venv/bin/python3" ] || need zig --arm
    # cargo-zigbuild runs `python3 -m ziglang` when there is no zig on the PATH.
    export PATH=$TOOLS/venv/bin:$PATH
fi

mkdir -p "$OUT"
rm -f "$OUT"/sigver-"$VERSION"-* "$OUT"/sigver_"$VERSION"-* "$OUT/SHA256SUMS"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sigver-dist.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# One line a target: name, Rust target, Debian architecture (- for none), OCI architecture.
TARGETS=("x86_64 x86_64-unknown-linux-musl amd64 amd64")
if [ "$ARM" = 1 ]; then
    TARGETS+=("aarch64 aarch64-unknown-linux-musl arm64 arm64"
        "armv7 armv7-unknown-linux-musleabihf - -"
        "armv6 arm-unknown-linux-musleabihf armhf -")
fi

compile() { # $1: Rust target
    local start=$SECONDS
    case $1 in
    x86_64-*)
        # ring finds no x86_64-linux-musl-gcc; its C and assembly need no libc headers, so
        # the host's gcc does.
        CC_x86_64_unknown_linux_musl=gcc nice cargo build --release --locked --bin sigver --target "$1"
        ;;
    aarch64-*)
        nice cargo zigbuild --release --locked --bin sigver --target "$1"
        ;;
    *)
        # No prebuilt standard library for these: build it (nightly, rust-src). Nor the C
        # start files rustc would link itself: zig brings musl's (link-self-contained=no).
        local flags_var
        flags_var=CARGO_TARGET_$(tr a-z- A-Z_ <<<"$1")_RUSTFLAGS
        env "$flags_var=-C link-self-contained=no -A linker-messages" \
            nice cargo +nightly zigbuild --release --locked --bin sigver --target "$1" \
            -Zbuild-std=std,panic_unwind
        ;;
    esac
    echo "build: $1 compiled in $((SECONDS - start)) s"
}

tarball() { # $1: Rust target
    local name=sigver-$VERSION-$1
    mkdir -p "$WORK/$name/deploy"
    cp "target/$1/release/sigver" README.md LICENSE "$WORK/$name/"
    cp deploy/sigver.service deploy/sigver.socket "$WORK/$name/deploy/"
    tar -C "$WORK" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
        -cf - "$name" | gzip -9n >"$OUT/$name.tar.gz"
}

debian() { # $1: Rust target
    # The package's units run /usr/bin/sigver; those of deploy/ run /usr/local/bin/sigver,
    # where the README's install by hand puts it.
    mkdir -p target/dist/deb-units
    sed 's|^\(#\{0,1\}ExecStart=\)/usr/local/bin/sigver|\1/usr/bin/sigver|' deploy/sigver.service \
        >target/dist/deb-units/sigver.service
    cp deploy/sigver.socket target/dist/deb-units/
    grep -q '^ExecStart=/usr/bin/sigver ' target/dist/deb-units/sigver.service
    cargo deb --no-build --no-strip --target "$1" --output "$OUT" >/dev/null
}

image() { # $1: Rust target, $2: OCI architecture
    local ctx=$WORK/image-$2
    mkdir -p "$ctx"
    cp "target/$1/release/sigver" "$ctx/"
    # A storage of our own: nothing is left in (or taken from) the machine's podman storage.
    local podman=(podman --root "$WORK/storage" --runroot "$WORK/run" --storage-driver vfs)
    "${podman[@]}" build -q --platform "linux/$2" --timestamp "$SOURCE_DATE_EPOCH" \
        --build-arg VERSION="$VERSION" --build-arg SOURCE="$SOURCE" --build-arg REVISION="$REVISION" \
        -f dist/Containerfile -t "localhost/sigver:$VERSION" "$ctx" >/dev/null
    "${podman[@]}" save -q --format oci-archive -o "$OUT/sigver-$VERSION-image-$2.tar" \
        "localhost/sigver:$VERSION"
    "${podman[@]}" rmi "localhost/sigver:$VERSION" >/dev/null
}

for line in "${TARGETS[@]}"; do
    read -r name triple deb_arch oci_arch <<<"$line"
    compile "$triple"
    tarball "$triple"
    [ "$DEB" = 1 ] && [ "$deb_arch" != - ] && debian "$triple"
    [ "$IMAGE" = 1 ] && [ "$oci_arch" != - ] && image "$triple" "$oci_arch"
    echo "build: $name done"
done

cd "$OUT"
shopt -s nullglob
files=(sigver-"$VERSION"-* sigver_"$VERSION"-*.deb)
sha256sum -- "${files[@]}" >SHA256SUMS
echo "build: in $OUT:"
ls -l -- "${files[@]}" SHA256SUMS | awk '{print "  " $5 "\t" $9}'
