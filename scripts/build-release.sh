#!/usr/bin/env bash
# Builds kith's static release binaries (musl, fully static: no glibc needed on the target)
# for x86_64 and aarch64 (64-bit Raspberry Pi OS, ARM VPSes) into dist/, and prints their
# sizes.
#
#   scripts/build-release.sh                  # both targets
#   scripts/build-release.sh --target x86_64  # or aarch64, or native (this machine's arch)
#   scripts/build-release.sh --out DIR --profile cross-test
#
# Needs (Debian/Ubuntu): rustup with the targets x86_64-unknown-linux-musl and
# aarch64-unknown-linux-musl (added here when missing), musl-tools (x86_64), and
# gcc-aarch64-linux-gnu when cross-building for aarch64 (.cargo/config.toml names it).
# The release profile (opt-level "s", LTO, one codegen unit) takes minutes per target.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

targets=()
out=dist
profile=release
while [ $# -gt 0 ]; do
    case "$1" in
        --target) shift; targets+=("${1:?--target needs x86_64, aarch64 or native}") ;;
        --out) shift; out="${1:?--out needs a directory}" ;;
        --profile) shift; profile="${1:?--profile needs a cargo profile}" ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-release.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ ${#targets[@]} -gt 0 ] || targets=(x86_64 aarch64)

host_arch=$(uname -m)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
mkdir -p "$out"

need() { # need TOOL PACKAGE
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "build-release.sh: '$1' is missing; install it with: apt-get install $2" >&2
        exit 1
    fi
}

for arch in "${targets[@]}"; do
    [ "$arch" = native ] && arch=$host_arch
    case "$arch" in
        x86_64|amd64) arch=x86_64 ;;
        aarch64|arm64) arch=aarch64 ;;
        *) echo "build-release.sh: no static build for '$arch' (x86_64 or aarch64)" >&2; exit 2 ;;
    esac
    triple="$arch-unknown-linux-musl"
    if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$triple"; then
        rustup target add "$triple"
    fi
    if [ "$arch" = "$host_arch" ]; then
        need musl-gcc musl-tools
        # Native build: the host's musl-gcc compiles ring's C, not the cross compiler that
        # .cargo/config.toml names for cross builds.
        env_vars=("CC_${arch}_unknown_linux_musl=musl-gcc")
        if [ "$arch" = aarch64 ]; then
            env_vars+=("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=gcc" "AR_aarch64_unknown_linux_musl=ar")
        fi
    else
        [ "$arch" = aarch64 ] && need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu
        [ "$arch" = x86_64 ] && need musl-gcc musl-tools
        env_vars=()
    fi
    echo "===== building kith $version for $triple (profile $profile)"
    start=$(date +%s)
    env "${env_vars[@]}" cargo build --locked --profile "$profile" --target "$triple" --bin kith
    dir=$profile
    [ "$profile" = dev ] && dir=debug
    bin="target/$triple/$dir/kith"
    dest="$out/kith-$version-$triple"
    cp "$bin" "$dest"
    size=$(stat -c %s "$dest")
    kind=$(file -b "$dest" 2>/dev/null || echo "?")
    case "$kind" in
        *"statically linked"*|*"static-pie linked"*|"?") ;;
        *) echo "build-release.sh: $dest is not static: $kind" >&2; exit 1 ;;
    esac
    echo "$dest: $size bytes, built in $(( $(date +%s) - start )) s ($kind)"
done
