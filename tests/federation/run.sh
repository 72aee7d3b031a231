#!/usr/bin/env bash
# Federation interop run: two XMPP servers (kith, Debian's prosody or ejabberd) federate over
# a private network made of network namespaces, and slixmpp clients check what users notice.
#
# Usage: tests/federation/run.sh HOME PEER [--dialback]
#   HOME, PEER: kith | prosody | ejabberd (two different ones). alice@HOME.example talks to
#   bob@PEER.example; every scenario runs in both directions (see fed_client.py).
#   --dialback: PEER gets a certificate from a second CA that HOME does not trust, and PEER
#   trusts only that second CA, so both s2s streams must authenticate with XEP-0220 dialback
#   (kith: [s2s] require_valid_certs = false; prosody: s2s_secure_auth = false).
# Environment: KITH_BIN (the kith binary, when kith takes part), KITH_PYTHON (default
#   /usr/bin/python3, which must import slixmpp), KITH_FED_KEEP=1 keeps the work directory,
#   KITH_FED_LOG sets kith's KITH_LOG (default debug), KITH_FED_VERBOSE=1 adds slixmpp's XML.
#
# Owns: for one run, a work directory, a test CA and certificates (openssl), the network
# namespaces "kf<PID>-*" (a hub with a bridge, one namespace per server, one for dnsmasq and
# one for the clients, joined by veth pairs, 10.203.0.0/24), /etc/netns/<ns>/resolv.conf
# pointing at the dnsmasq, and the server processes. All of it is removed on exit, also on
# failure or a signal: processes by the PIDs this script started, then the namespaces.
# Traffic stays inside these namespaces: no address outside 10.203.0.0/24 is configured or
# routed, and no namespace has a default route.
#
# Exit status: 0 all scenarios passed; 1 a scenario failed (the servers' logs are printed);
# 3 the environment is missing something (not root, no `ip netns`, a package missing).
set -eEuo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${KITH_PYTHON:-/usr/bin/python3}"
T0=${EPOCHREALTIME/[.,]/}

elapsed() { # since $1 (microseconds), as seconds with one decimal
    local us=$(( ${EPOCHREALTIME/[.,]/} - $1 ))
    printf '%d.%d' $((us / 1000000)) $((us / 100000 % 10))
}

say() { printf '[%6ss] %s\n' "$(elapsed "$T0")" "$*"; }
die_env() { echo "federation test environment: $*" >&2; exit 3; }

usage() { echo "usage: $0 kith|prosody|ejabberd kith|prosody|ejabberd [--dialback]" >&2; exit 3; }
[ $# -ge 2 ] || usage
home="$1" peer="$2"
dialback=false
[ "${3:-}" = --dialback ] && dialback=true
for s in "$home" "$peer"; do
    case "$s" in kith | prosody | ejabberd) ;; *) usage ;; esac
done
[ "$home" != "$peer" ] || usage

# --- preconditions -------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die_env "must run as root (ip netns add needs CAP_SYS_ADMIN)"
need() { command -v "$1" >/dev/null || die_env "$1 is missing (apt-get install $2)"; }
need ip iproute2
need openssl openssl
[ -x /usr/sbin/dnsmasq ] || die_env "/usr/sbin/dnsmasq is missing (apt-get install dnsmasq-base)"
"$python" -c 'import slixmpp' 2>/dev/null ||
    die_env "$python cannot import slixmpp (apt-get install python3-slixmpp)"
for s in "$home" "$peer"; do
    case "$s" in
        prosody) need prosody prosody ;;
        ejabberd) need erl ejabberd
            ls -d /usr/lib/*/ejabberd-*/ebin >/dev/null 2>&1 || die_env "ejabberd is missing (apt-get install ejabberd)" ;;
        kith) [ -x "${KITH_BIN:-}" ] || die_env "KITH_BIN does not name the kith binary" ;;
    esac
done

# --- state and cleanup ---------------------------------------------------------------------
ns_prefix="kf$$"
dir="$(mktemp -d /tmp/kith-fed.XXXXXX)"
namespaces=()
declare -A pid=()  # server name -> PID of its running process
status=1

stop_server() { # NAME: TERM, then KILL after 10 s; only the PID this script started
    local p="${pid[$1]:-}"
    [ -n "$p" ] || return 0
    if kill -0 "$p" 2>/dev/null; then
        kill -TERM "$p" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
    pid[$1]=""
}

cleanup() {
    trap - EXIT INT TERM
    for s in "${!pid[@]}"; do stop_server "$s"; done
    # What the servers forked (Erlang's port programs) lives in the same namespaces, which
    # only this run uses: whatever is left there goes by its PID before the namespace does.
    for ns in "${namespaces[@]}"; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    done
    if [ "$status" -ne 0 ]; then
        for f in "$dir"/*.log; do
            [ -e "$f" ] || continue
            echo "----- $(basename "$f")"
            tail -n 300 "$f"
        done
        [ -e "$dir/ejabberd/ejabberd.log" ] && { echo "----- ejabberd/ejabberd.log"; tail -n 300 "$dir/ejabberd/ejabberd.log"; }
        echo "----- end of logs"
    fi
    for ns in "${namespaces[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    if [ "${KITH_FED_KEEP:-}" = 1 ]; then echo "kept $dir"; else rm -rf "$dir"; fi
    exit "$status"
}
trap cleanup EXIT
# set -e alone would end the run without saying where.
trap 'say "FAIL line $LINENO: $BASH_COMMAND (exit $?)"' ERR
trap 'status=130; exit' INT TERM

# --- network -------------------------------------------------------------------------------
declare -A addr=([dns]=10.203.0.2 [kith]=10.203.0.10 [prosody]=10.203.0.11 [ejabberd]=10.203.0.12 [cli]=10.203.0.20)
hub="$ns_prefix-hub"
ns() { echo "$ns_prefix-$1"; }
inns() { local n; n="$(ns "$1")"; shift; ip netns exec "$n" "$@"; }
# spawn NAME LOG CMD...: CMD in NAME's namespace, in the background. Never `inns ... &`: that
# would put a subshell's PID in $!, and stopping it would leave the server running.
spawn() {
    local name="$1" log="$2"
    shift 2
    ip netns exec "$(ns "$name")" "$@" >>"$log" 2>&1 &
    pid[$name]=$!
}

ip netns add "$hub" || die_env "ip netns add failed (needs root and a kernel with network namespaces)"
namespaces+=("$hub")
ip -n "$hub" link add br0 type bridge
ip -n "$hub" link set br0 up
i=0
for node in dns cli "$home" "$peer"; do
    n="$(ns "$node")"
    ip netns add "$n"
    namespaces+=("$n")
    mkdir -p "/etc/netns/$n"
    echo "nameserver ${addr[dns]}" >"/etc/netns/$n/resolv.conf"
    # Both ends are created inside the namespaces, so no name is ever taken in the host's.
    ip -n "$hub" link add "v$i" type veth peer name eth0 netns "$n"
    ip -n "$hub" link set "v$i" master br0 up
    ip -n "$n" link set lo up
    ip -n "$n" addr add "${addr[$node]}/24" dev eth0
    ip -n "$n" link set eth0 up
    i=$((i + 1))
done

# --- DNS -----------------------------------------------------------------------------------
# Domains end in .example (RFC 2606), not .test: Prosody resolves with libunbound, which
# answers NXDOMAIN for .test itself (one of its built-in local zones) without asking dnsmasq.
# kith: both services (direct TLS preferred); prosody: STARTTLS on a non-default port, only
# reachable by following SRV; ejabberd: direct TLS and STARTTLS on another host name.
spawn dns "$dir/dnsmasq.err" /usr/sbin/dnsmasq --keep-in-foreground --no-resolv --no-hosts --conf-file=/dev/null \
    --pid-file= --user=root --bind-interfaces --listen-address="${addr[dns]}" --local=/example/ \
    --log-facility="$dir/dnsmasq.log" --log-queries \
    --host-record=kith.example,"${addr[kith]}" \
    --host-record=conference.kith.example,"${addr[kith]}" \
    --srv-host=_xmpps-server._tcp.kith.example,kith.example,5270,5,0 \
    --srv-host=_xmpp-server._tcp.kith.example,kith.example,5269,10,0 \
    --host-record=prosody.example,"${addr[prosody]}" \
    --host-record=xmpp.prosody.example,"${addr[prosody]}" \
    --srv-host=_xmpp-server._tcp.prosody.example,xmpp.prosody.example,5299,10,0 \
    --host-record=ejabberd.example,"${addr[ejabberd]}" \
    --host-record=xmpp.ejabberd.example,"${addr[ejabberd]}" \
    --srv-host=_xmpps-server._tcp.ejabberd.example,xmpp.ejabberd.example,5270,5,0 \
    --srv-host=_xmpp-server._tcp.ejabberd.example,xmpp.ejabberd.example,5269,10,0

# --- certificates --------------------------------------------------------------------------
# ca: trusted by every server; rogue: a second CA, for the peer of a --dialback run.
mkdir -p "$dir/certs"
make_ca() { # NAME
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=kith federation test $1" -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign \
        -keyout "$dir/certs/$1.key" -out "$dir/certs/$1.crt" 2>/dev/null
}
make_cert() { # DOMAIN CA
    local d="$1" ca="$2" c="$dir/certs/$1"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$d" \
        -keyout "$c.key" -out "$c.csr" 2>/dev/null
    # clientAuth too: the initiating server presents this certificate as a TLS client.
    printf 'subjectAltName=DNS:%s,DNS:*.%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' "$d" "$d" >"$c.ext"
    openssl x509 -req -in "$c.csr" -CA "$dir/certs/$ca.crt" -CAkey "$dir/certs/$ca.key" \
        -CAcreateserial -days 2 -extfile "$c.ext" -out "$c.crt" 2>/dev/null
    cat "$c.crt" "$c.key" >"$c.pem"
}
make_ca ca
make_cert "$home.example" ca
if $dialback; then
    make_ca rogue
    make_cert "$peer.example" rogue
    declare -A trust=([$home]=ca [$peer]=rogue)
else
    make_cert "$peer.example" ca
    declare -A trust=([$home]=ca [$peer]=ca)
fi
chmod -R a+rX "$dir"

# --- servers -------------------------------------------------------------------------------
alice_pw='alice-secret-1'
bob_pw='bob-pässwörd-2'
declare -A user=([$home]=alice [$peer]=bob)
declare -A password=([$home]="$alice_pw" [$peer]="$bob_pw")

wait_port() { # NAME PORT: until the server accepts TCP there, at most 60 s
    local n="$1" port="$2"
    for _ in $(seq 600); do
        if inns "$n" bash -c "exec 3<>/dev/tcp/${addr[$n]}/$port" 2>/dev/null; then return 0; fi
        if ! kill -0 "${pid[$n]}" 2>/dev/null; then
            say "FAIL $n exited while starting"
            exit 1
        fi
        sleep 0.1
    done
    say "FAIL $n does not listen on ${addr[$n]}:$port after 60 s"
    exit 1
}

setup_kith() {
    local d="$dir/kith" require=true
    mkdir -p "$d"
    $dialback && require=false
    cat >"$d/kith.toml" <<EOF
# written by tests/federation/run.sh
domain = "kith.example"
data_dir = "$d/data"
[listen]
c2s = ["${addr[kith]}:5222"]
c2s_direct_tls = []
s2s = ["${addr[kith]}:5269"]
s2s_direct_tls = ["${addr[kith]}:5270"]
[tls]
cert = "$dir/certs/kith.example.crt"
key = "$dir/certs/kith.example.key"
[s2s]
require_valid_certs = $require
extra_ca = "$dir/certs/${trust[kith]}.crt"
EOF
    "$KITH_BIN" --config "$d/kith.toml" user add "${user[kith]}@kith.example" --password "${password[kith]}" \
        >>"$dir/kith.log" 2>&1
}
start_kith() {
    spawn kith "$dir/kith.log" env KITH_LOG="${KITH_FED_LOG:-debug}" "$KITH_BIN" \
        --config "$dir/kith/kith.toml" run
    wait_port kith 5222
    wait_port kith 5269
}

setup_prosody() {
    local d="$dir/prosody" secure=true
    mkdir -p "$d/data"
    $dialback && secure=false
    cat >"$d/prosody.cfg.lua" <<EOF
-- written by tests/federation/run.sh
run_as_root = true
pidfile = "$d/prosody.pid"
data_path = "$d/data"
log = { debug = "*console" }
interfaces = { "${addr[prosody]}" }
c2s_ports = { 5222 }
s2s_ports = { 5299 }
c2s_direct_tls_ports = {}
s2s_direct_tls_ports = {}
http_ports = {}
https_ports = {}
admin_socket = "$d/admin.sock"
modules_enabled = { "roster", "saslauth", "tls", "dialback", "disco", "ping", "vcard", "presence", "message", "iq" }
modules_disabled = { "offline", "c2s_timeout", "s2s_bidi" }
authentication = "internal_hashed"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = $secure
s2s_timeout = 10
ssl = { certificate = "$dir/certs/prosody.example.crt"; key = "$dir/certs/prosody.example.key"; cafile = "$dir/certs/${trust[prosody]}.crt" }
VirtualHost "prosody.example"
EOF
    prosodyctl --config "$d/prosody.cfg.lua" register "${user[prosody]}" prosody.example "${password[prosody]}" \
        >>"$dir/prosody.log" 2>&1
}
start_prosody() {
    spawn prosody "$dir/prosody.log" prosody --config "$dir/prosody/prosody.cfg.lua" -F
    wait_port prosody 5222
    wait_port prosody 5299
}

setup_ejabberd() {
    local d="$dir/ejabberd"
    mkdir -p "$d/db"
    cat >"$d/ejabberd.yml" <<EOF
# written by tests/federation/run.sh
hosts: ["ejabberd.example"]
loglevel: debug
log_rotate_count: 0
certfiles: ["$dir/certs/ejabberd.example.pem"]
ca_file: "$dir/certs/${trust[ejabberd]}.crt"
s2s_use_starttls: required
s2s_timeout: 10
auth_method: internal
auth_password_format: scram
listen:
  - {port: 5222, ip: "${addr[ejabberd]}", module: ejabberd_c2s, starttls_required: true}
  - {port: 5269, ip: "${addr[ejabberd]}", module: ejabberd_s2s_in}
  - {port: 5270, ip: "${addr[ejabberd]}", module: ejabberd_s2s_in, tls: true}
acl:
  local: {user_regexp: ""}
access_rules:
  local: {allow: local}
  c2s: {allow: all}
  s2s: {allow: all}
modules:
  mod_disco: {}
  mod_ping: {}
  mod_roster: {}
  mod_s2s_dialback: {}
  mod_vcard: {}
EOF
}
start_ejabberd() {
    local d="$dir/ejabberd" lib
    lib="$(dirname "$(ls -d /usr/lib/*/ejabberd-*/ | head -n 1)")"
    # erl without ejabberdctl: no Erlang distribution (no epmd, no node name, no cookie), and
    # the accounts are made in the same VM once the application has started.
    spawn ejabberd "$dir/ejabberd.log" env HOME="$d" ERL_LIBS="$lib" EJABBERD_CONFIG_PATH="$d/ejabberd.yml" \
        EJABBERD_LOG_PATH="$d/ejabberd.log" ERL_CRASH_DUMP="$d/erl_crash.dump" \
        erl -noinput -noshell -mnesia dir "\"$d/db\"" -s ejabberd \
        -eval "io:format(\"register: ~p~n\", [ejabberd_auth:try_register(<<\"${user[ejabberd]}\"/utf8>>, <<\"ejabberd.example\">>, <<\"${password[ejabberd]}\"/utf8>>)])"
    wait_port ejabberd 5222
    wait_port ejabberd 5269
}

say "network $ns_prefix-*: $home at ${addr[$home]}, $peer at ${addr[$peer]}, dnsmasq at ${addr[dns]}"
for s in "$home" "$peer"; do
    "setup_$s"
    t=${EPOCHREALTIME/[.,]/}
    "start_$s"
    say "$s started in $(elapsed "$t") s"
done

# --- scenarios -----------------------------------------------------------------------------
acct() { echo "${user[$1]}@$1.example:${password[$1]}@${addr[$1]}"; }
client() { # MODE ARGS...: fed_client.py in the clients' namespace
    local mode="$1" rc=0
    shift
    say "fed_client.py $mode $*"
    # In the background with `wait`, so a SIGTERM (the test's watchdog) is handled at once
    # and cleanup stops the client too.
    ip netns exec "$(ns cli)" env PYTHONUNBUFFERED=1 "$python" "$here/fed_client.py" "$mode" \
        --alice "$(acct "$home")" --bob "$(acct "$peer")" "$@" ${KITH_FED_VERBOSE:+--verbose} &
    pid[client]=$!
    wait "${pid[client]}" || rc=$?
    pid[client]=""
    if [ "$rc" -ne 0 ]; then
        say "FAIL fed_client.py $mode $* (exit $rc)"
        exit 1
    fi
}

client federate
# Group chat over s2s: the user on the other server joins a room on kith's conference domain.
if [ "$home" = kith ] || [ "$peer" = kith ]; then
    owner=alice
    [ "$peer" = kith ] && owner=bob
    client muc --owner "$owner" --room "family@conference.kith.example"
fi
stop_server "$peer"
say "$peer stopped"
client bounce --sender alice
t=${EPOCHREALTIME/[.,]/}
"start_$peer"
say "$peer restarted in $(elapsed "$t") s"
stop_server "$home"
say "$home stopped"
client bounce --sender bob

# --- how the s2s streams authenticated -----------------------------------------------------
# The clients cannot tell certificates from dialback; the servers' logs can, for both
# directions (one's incoming stream is the other's outgoing one). Patterns are grep -E.
check_auth() { # SERVER OTHER: fail unless SERVER's log shows the expected method both ways
    local s="$1" o="$2.example" log ext=() db=()
    case "$s" in
        kith)
            log="$dir/kith.log"
            ext=("$o authenticated from .* \(certificate\)" "connected to $o at .*certificate verified\)")
            db=("$o authenticated from .* \(dialback\)" "connected to $o at .*dialback") ;;
        prosody)
            log="$dir/prosody.log"
            ext=("SASL EXTERNAL with $o succeeded" "Accepting SASL EXTERNAL identity from $o")
            db=("sent dialback key on outgoing s2s stream" "asking $o if key") ;;
        ejabberd)
            log="$dir/ejabberd/ejabberd.log"
            ext=("Accepted inbound s2s EXTERNAL authentication $o" "Accepted outbound s2s EXTERNAL authentication ejabberd.example -> $o")
            db=("Accepted inbound s2s dialback authentication $o" "Accepted outbound s2s dialback authentication ejabberd.example -> $o") ;;
    esac
    local want=("${ext[@]}") never=("${db[@]}") how=certificates
    if $dialback; then want=("${db[@]}") never=("${ext[@]}") how=dialback; fi
    for line in "${want[@]}"; do
        grep -qE "$line" "$log" || { say "FAIL $s's log lacks '$line': s2s did not use $how"; exit 1; }
    done
    for line in "${never[@]}"; do
        if grep -qE "$line" "$log"; then say "FAIL $s's log has '$line': s2s did not use $how only"; exit 1; fi
    done
    say "ok $s: s2s with $2 authenticated by $how both ways"
}
check_auth "$home" "$peer"
check_auth "$peer" "$home"

# Which way kith reached the peer and was reached: SRV to a non-default port (prosody), the
# _xmpps-server record to direct TLS (ejabberd), and both peers to kith's direct TLS port.
if [ "$home" = kith ] || [ "$peer" = kith ]; then
    other="$home"
    [ "$other" = kith ] && other="$peer"
    case "$other" in
        prosody) port=5299 how=STARTTLS ;;
        ejabberd) port=5270 how="direct TLS" ;;
    esac
    route="connected to $other.example at ${addr[$other]}:$port \($how"
    grep -qE "$route" "$dir/kith.log" || { say "FAIL kith's log lacks '$route': SRV not followed"; exit 1; }
    back="connection from ${addr[$other]}:[0-9]+ \(direct TLS\)"
    grep -qE "$back" "$dir/kith.log" || { say "FAIL kith's log lacks '$back'"; exit 1; }
    say "ok kith reached $other by SRV (port $port, $how); $other reached kith by direct TLS"
fi

status=0
say "PASS $home <-> $peer$($dialback && echo ' (dialback)')"
