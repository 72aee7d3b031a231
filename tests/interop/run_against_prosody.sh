#!/usr/bin/env bash
# Runs slixmpp_chat.py against a throwaway Prosody on loopback: the reference the script was
# validated against, so a failure against kith can be told apart from a broken script.
#
# Owns: a temp dir with a self-signed cert, a Prosody config (c2s with required STARTTLS,
# XEP-0368 direct TLS, SCRAM via internal_hashed, PLAIN disabled, no s2s/http), two accounts,
# one foreground Prosody process; removes all of it on exit. Touches no system service or port.
# Not run by CI (CI needs no Prosody); needs `apt-get install prosody openssl python3-slixmpp`.
#
# Usage: tests/interop/run_against_prosody.sh [extra slixmpp_chat.py args, e.g. --tls12]
#        tests/interop/run_against_prosody.sh modern [extra slixmpp_modern.py args, e.g. --mam]
# `modern` runs slixmpp_modern.py instead, with Prosody's carbons, smacks, CSI, blocklist, PEP,
# vcard-temp (vcard_legacy), private, bookmarks and MAM modules enabled and a third account.
set -euo pipefail

mode=chat
if [ "${1:-}" = modern ]; then
    mode=modern
    shift
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script="$here/slixmpp_chat.py"
python="${KITH_PYTHON:-/usr/bin/python3}"
dir="$(mktemp -d /tmp/kith-prosody.XXXXXX)"
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
c2s="$(free_port)"
tls="$(free_port)"
while [ "$tls" = "$c2s" ]; do tls="$(free_port)"; done

extra_modules=""
if [ "$mode" = modern ]; then
    extra_modules=', "carbons", "smacks", "csi_simple", "blocklist", "pep", "vcard_legacy", "private", "bookmarks", "mam"'
fi

mkdir -p "$dir/data" "$dir/certs"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost \
    -keyout "$dir/localhost.key" -out "$dir/localhost.crt" 2>/dev/null

cat >"$dir/prosody.cfg.lua" <<EOF
-- throwaway config written by tests/interop/run_against_prosody.sh
run_as_root = true
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
certificates = "$dir/certs"
log = { info = "*console" }
interfaces = { "127.0.0.1" }
c2s_ports = { $c2s }
c2s_direct_tls_ports = { $tls }
s2s_ports = {}
http_ports = {}
https_ports = {}
admin_socket = "$dir/admin.sock"
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping"$extra_modules }
modules_disabled = { "s2s", "offline", "c2s_timeout" }
authentication = "internal_hashed"
disable_sasl_mechanisms = { "PLAIN" }
c2s_require_encryption = true
ssl = { certificate = "$dir/localhost.crt"; key = "$dir/localhost.key" }
VirtualHost "localhost"
EOF

prosodyctl --config "$dir/prosody.cfg.lua" register alice localhost 'alice-secret-1' 2>/dev/null
prosodyctl --config "$dir/prosody.cfg.lua" register bob localhost 'bob-pässwörd-2' 2>/dev/null
prosodyctl --config "$dir/prosody.cfg.lua" register carol localhost 'carol-secret-3' 2>/dev/null

prosody --config "$dir/prosody.cfg.lua" -F >"$dir/prosody.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    if "$python" -c "import socket,sys; socket.create_connection(('127.0.0.1',$c2s),0.2)" 2>/dev/null; then break; fi
    sleep 0.1
done

common=(--domain localhost --alice 'alice:alice-secret-1' --bob 'bob:bob-pässwörd-2' --forbid-plain "$@")
status=0
run() {
    echo "----- slixmpp_chat.py $*"
    if ! "$python" "$script" "$@" "${common[@]}" 2>"$dir/slixmpp.err"; then
        status=1
        cat "$dir/slixmpp.err"
    fi
}
if [ "$mode" = modern ]; then
    echo "----- slixmpp_modern.py --port $c2s $*"
    if ! "$python" "$here/slixmpp_modern.py" --port "$c2s" --domain localhost \
        --alice 'alice:alice-secret-1' --bob 'bob:bob-pässwörd-2' \
        --carol 'carol:carol-secret-3' --silent-block "$@" 2>"$dir/slixmpp.err"; then
        status=1
        cat "$dir/slixmpp.err"
    fi
else
    run chat --port "$c2s"
    run chat --port "$tls" --direct-tls
    run wrong-password --port "$c2s"
    run wrong-password --port "$tls" --direct-tls
fi

if [ "$status" -ne 0 ]; then
    echo "----- prosody log"
    cat "$dir/prosody.log"
fi
echo "prosody $(dpkg-query -W -f='${Version}' prosody 2>/dev/null || echo "?"): $([ "$status" -eq 0 ] && echo PASS || echo FAIL)"
exit "$status"
