#!/usr/bin/env bash
# Installs kith on a Debian/Ubuntu machine or Raspberry Pi OS, in one command, as root:
#
#   sudo scripts/install.sh                         # build, install, then 'kith setup'
#   sudo scripts/install.sh --binary ./kith         # install a binary built elsewhere
#   sudo scripts/install.sh -- --domain example.org --admin alice --yes   # unattended setup
#
# What it does: builds the static binary (scripts/build-release.sh, for this machine's
# architecture) unless --binary gives one; installs it as PREFIX/bin/kith (default
# /usr/local); creates the 'kith' system user, /etc/kith and /var/lib/kith (mode 0750, owned by
# kith); writes a systemd unit that runs kith as that user and lets it bind ports below 1024
# (AmbientCapabilities=CAP_NET_BIND_SERVICE) without root; then runs 'kith setup' with the
# arguments after '--'.
#
# Safe to run again: an upgrade replaces the binary and the unit, keeps the config and the
# data, skips setup when /etc/kith/kith.toml exists, and restarts a running service.
#
# Options:
#   --binary PATH   install this binary instead of building one
#   --prefix DIR    install the binary into DIR/bin (default /usr/local)
#   --root DIR      install everything below DIR (a scratch root for tests or images): no
#                   user is created, systemd is not touched, and the config setup writes
#                   names paths inside DIR
#   --no-setup      do not run 'kith setup'
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary=""
prefix=/usr/local
root=""
run_setup=true
setup_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) shift; binary="${1:?--binary needs a path}" ;;
        --prefix) shift; prefix="${1:?--prefix needs a directory}" ;;
        --root) shift; root="${1:?--root needs a directory}" ;;
        --no-setup) run_setup=false ;;
        --) shift; setup_args=("$@"); break ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
root="${root%/}"
say() { printf 'install.sh: %s\n' "$*"; }

if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run it as root (sudo), or with --root DIR for a scratch install" >&2
    exit 1
fi

# 1. The binary.
if [ -z "$binary" ]; then
    if ! command -v cargo >/dev/null 2>&1; then
        echo "install.sh: no --binary given and no cargo to build one; install Rust (https://rustup.rs) or pass --binary PATH" >&2
        exit 1
    fi
    say "building the static binary (a few minutes)"
    "$here/scripts/build-release.sh" --target native --out "$here/dist"
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -n1)
    arch=$(uname -m); [ "$arch" = arm64 ] && arch=aarch64
    binary="$here/dist/kith-$version-$arch-unknown-linux-musl"
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable file" >&2; exit 1; }
"$binary" --version >/dev/null || { echo "install.sh: $binary does not run on this machine" >&2; exit 1; }

bin_dir="$root$prefix/bin"
etc_dir="$root/etc/kith"
data_dir="$root/var/lib/kith"
unit="$root/etc/systemd/system/kith.service"
config="$etc_dir/kith.toml"

upgrade=false
[ -e "$bin_dir/kith" ] && upgrade=true
install -d -m 0755 "$bin_dir"
# A copy then a rename: a running kith keeps its old binary, nothing sees half a file.
install -m 0755 "$binary" "$bin_dir/.kith.new"
mv -f "$bin_dir/.kith.new" "$bin_dir/kith"
say "installed $("$bin_dir/kith" --version) as $prefix/bin/kith"

# 2. The user and the directories.
if [ -z "$root" ]; then
    if ! id kith >/dev/null 2>&1; then
        nologin=/usr/sbin/nologin; [ -x "$nologin" ] || nologin=/bin/false
        useradd --system --user-group --home-dir /var/lib/kith --no-create-home --shell "$nologin" kith
        say "created the system user kith"
    fi
    owner=(kith kith)
else
    say "scratch root $root: no system user is created"
    owner=()
fi
install -d -m 0755 "$etc_dir"
install -d -m 0750 "$data_dir"
[ ${#owner[@]} -eq 0 ] || chown "${owner[0]}:${owner[1]}" "$data_dir"

# 3. The systemd unit (rewritten on every run, so upgrades get its fixes).
install -d -m 0755 "$(dirname "$unit")"
cat > "$unit.new" <<EOF
# Written by kith's scripts/install.sh; rewritten on upgrade.
[Unit]
Description=kith XMPP server
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=kith
Group=kith
ExecStart=$prefix/bin/kith --config /etc/kith/kith.toml run
Restart=on-failure
RestartSec=5
# Ports 443, 5222, 5269 without root.
AmbientCapabilities=CAP_NET_BIND_SERVICE
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true
ReadWritePaths=/var/lib/kith
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
EOF
mv -f "$unit.new" "$unit"
systemd=false
if [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemd=true
    systemctl daemon-reload
fi

# 4. Setup, once.
if [ -e "$config" ]; then
    say "$config exists; kept (run 'kith setup --force' to redo the setup)"
elif [ "$run_setup" = true ]; then
    if [ -n "$root" ]; then
        setup_args=(--data-dir "$data_dir" "${setup_args[@]}")
    fi
    "$bin_dir/kith" --config "$config" setup "${setup_args[@]}"
fi
if [ -e "$config" ] && [ ${#owner[@]} -gt 0 ]; then
    # The service reads the config; setup (as root) may have created the store.
    chgrp kith "$config" && chmod 0640 "$config"
    chown -R kith:kith "$data_dir"
fi

if [ "$upgrade" = true ] && [ "$systemd" = true ] && systemctl is-active --quiet kith; then
    systemctl restart kith
    say "restarted kith with the new binary"
fi
say "done"
