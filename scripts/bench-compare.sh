#!/usr/bin/env bash
# Side-by-side benchmark of kith, Prosody and ejabberd (Debian's packages) on loopback, one
# server after the other, driven by the same load generator (benches/c2s), and a report:
# docs/benchmarks.md (table, ratios against kith's targets, how to reproduce) and
# docs/benchmarks.png (chart, gnuplot).
#
# Every server gets the equivalent setup: domain localhost, STARTTLS required with the same
# certificate (a throwaway CA made here), SCRAM-SHA-1 logins (what Prosody's internal_hashed and
# ejabberd store by default; kith stores SHA-1 too), roster and carbons on, no message archive
# for the throughput run (kith: the messaging users' MAM preferences say never; the others: no
# MAM module), no s2s, no HTTP. The same bench users are written straight into each server's
# storage, all with one salt so the generator runs PBKDF2 once and does not slow the logins.
#
# Per server and repeat, the server is started fresh for each run:
#   run A: start-up time (exec to TCP port open), idle RSS; SESSIONS_A logins (logins/s);
#          RSS per idle session; PAIRS pairs exchange MESSAGES messages each way (closed loop,
#          window 16): messages/s, latency p50/p99/p99.9, server CPU seconds per 100k messages
#   run B: SESSIONS_B logins kept idle: RSS per idle session and total RSS
#   MAM (kith and Prosody, once): archiving on (Prosody: mod_mam, internal storage), one pair
#          exchanges MAM_MESSAGES messages each way through the server, so bench0's archive
#          holds 2 x MAM_MESSAGES; then the median time of a page of 50 from its end
#          (`<before/>`, what a client opening a chat asks) and from its start
# RSS and CPU are read from /proc for the server process and all its descendants
# (ejabberd: beam.smp and its helpers). Figures are medians over the repeats.
#
# usage: scripts/bench-compare.sh [--quick] [--repeat R] [--servers "kith prosody ejabberd"]
#                                 [--out DIR] [--no-build] [--keep]
#   --quick     small N (50/200 sessions, 20 pairs x 50 messages, one repeat); writes to a
#               temp dir unless --out is given (tests/bench_compare.rs runs this)
#   --repeat R  repeats per server (default 3)
#   --out DIR   where benchmarks.md and benchmarks.png go (default docs/)
#
# Needs: prosody, ejabberd (erl), gnuplot (gnuplot-nox), openssl, python3. Exits 3 when one
# is missing. KITH_BIN=PATH uses that kith binary (no build); KITH_BENCH_PROFILE=dev builds the
# generator with that cargo profile (the test suite's quick run). Run as root or a user allowed to raise `ulimit -n` to 30000.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
REPEAT=""
SERVERS="kith prosody ejabberd"
OUT=""
BUILD=1
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --repeat) REPEAT=$2; shift 2 ;;
        --servers) SERVERS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        *) echo "bench-compare: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

if [ "$QUICK" = 1 ]; then
    SESSIONS_A=50 SESSIONS_B=200 PAIRS=20 MESSAGES=50 MAM_MESSAGES=250
    REPEAT=${REPEAT:-1}
else
    # 200 pairs x 250 messages each way = 100,000 messages.
    SESSIONS_A=1000 SESSIONS_B=10000 PAIRS=200 MESSAGES=250 MAM_MESSAGES=50000
    REPEAT=${REPEAT:-3}
    OUT=${OUT:-$ROOT/docs}
fi
PASSWORD=bench-password
PREFIX=bench
DOMAIN=localhost

missing() { echo "bench-compare: $1 is missing (apt-get install $2)" >&2; exit 3; }
for s in $SERVERS; do
    case "$s" in
        kith) ;;
        prosody) command -v prosody >/dev/null || missing prosody prosody ;;
        ejabberd) command -v erl >/dev/null || missing erl ejabberd
            ls -d /usr/lib/*/ejabberd-*/ebin >/dev/null 2>&1 || missing ejabberd ejabberd ;;
        *) echo "bench-compare: unknown server $s" >&2; exit 2 ;;
    esac
done
command -v gnuplot >/dev/null || missing gnuplot gnuplot-nox
command -v openssl >/dev/null || missing openssl openssl
command -v python3 >/dev/null || missing python3 python3

# One descriptor per session in the server and in the generator, plus headroom.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $(( SESSIONS_B + 500 )) ]; then
    echo "bench-compare: ulimit -n is $(ulimit -n), too low for $SESSIONS_B sessions" >&2
    exit 1
fi
[ "$(getconf CLK_TCK)" = 100 ] || echo "bench-compare: CLK_TCK is not 100; CPU figures will be off" >&2

# The test suite runs --quick with its debug binary and a debug generator (KITH_BIN,
# KITH_BENCH_PROFILE=dev): a release build there would take minutes.
KITH=${KITH_BIN:-$ROOT/target/release/kith}
[ -n "${KITH_BIN:-}" ] && BUILD=0
PROFILE_ARGS=()
[ -n "${KITH_BENCH_PROFILE:-}" ] && PROFILE_ARGS=(--profile "$KITH_BENCH_PROFILE")
if [ "$BUILD" = 1 ]; then
    echo "building kith and the load generator (release)..." >&2
    cargo build --release --quiet
fi
BENCH_OUT=$(cargo bench --locked "${PROFILE_ARGS[@]}" --bench c2s --no-run 2>&1) || { echo "$BENCH_OUT" >&2; exit 1; }
GEN=$(printf '%s\n' "$BENCH_OUT" | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -n "$GEN" ] && [ -x "$GEN" ] || { echo "bench-compare: no generator in: $BENCH_OUT" >&2; exit 1; }
case "$GEN" in /*) ;; *) GEN=$ROOT/$GEN ;; esac
MAM_OUT=$(cargo bench --locked "${PROFILE_ARGS[@]}" --bench mam --no-run 2>&1) || { echo "$MAM_OUT" >&2; exit 1; }
MAMGEN=$(printf '%s\n' "$MAM_OUT" | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
case "$MAMGEN" in /*) ;; *) MAMGEN=$ROOT/$MAMGEN ;; esac
[ -x "$KITH" ] || { echo "bench-compare: $KITH is missing (run without --no-build)" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kith-bench-compare.XXXXXX")
chmod 755 "$TMP"
[ -n "$OUT" ] || OUT=$TMP/out
mkdir -p "$OUT"
SERVER_PID=""
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}
cleanup() {
    stop_server
    if [ "$KEEP" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "[$(date +%H:%M:%S)] $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ----- certificates: a throwaway CA and a certificate for localhost -----
CERTS=$TMP/certs
mkdir -p "$CERTS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=kith bench CA" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$CERTS/ca.key" -out "$CERTS/ca.crt" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$DOMAIN" \
    -keyout "$CERTS/$DOMAIN.key" -out "$CERTS/$DOMAIN.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' "$DOMAIN" >"$CERTS/ext"
openssl x509 -req -in "$CERTS/$DOMAIN.csr" -CA "$CERTS/ca.crt" -CAkey "$CERTS/ca.key" \
    -CAcreateserial -days 2 -extfile "$CERTS/ext" -out "$CERTS/$DOMAIN.crt" 2>/dev/null
cat "$CERTS/$DOMAIN.crt" "$CERTS/$DOMAIN.key" >"$CERTS/$DOMAIN.pem"
chmod -R a+rX "$CERTS"

# The SCRAM-SHA-1 keys every bench user gets on Prosody and ejabberd (one salt: see above).
read -r SALT_B64 STORED_HEX SERVER_HEX STORED_B64 SERVER_B64 < <(python3 - "$PASSWORD" <<'EOF'
import base64, hashlib, hmac, sys
pw, salt, it = sys.argv[1].encode(), b"kith-bench-salt!", 4096
salted = hashlib.pbkdf2_hmac("sha1", pw, salt, it)
client = hmac.new(salted, b"Client Key", "sha1").digest()
stored = hashlib.sha1(client).digest()
server = hmac.new(salted, b"Server Key", "sha1").digest()
b = lambda x: base64.b64encode(x).decode()
print(b(salt), stored.hex(), server.hex(), b(stored), b(server))
EOF
)
ITERATIONS=4096

# ----- per-server setup: users, config, start -----
# setup_NAME DIR USERS PORT MSG_USERS: writes the config and the users (server stopped).
# start_NAME DIR: starts the server in the background, sets SERVER_PID.

setup_kith() {
    local d=$1 users=$2 port=$3 msg_users=$4
    mkdir -p "$d"
    cat >"$d/kith.toml" <<EOF
# written by scripts/bench-compare.sh
domain = "$DOMAIN"
data_dir = "$d/data"
log_level = "warn"
[tls]
cert = "$CERTS/$DOMAIN.crt"
key = "$CERTS/$DOMAIN.key"
[turn]
enabled = false
# One address, thousands of clients sending as fast as they can: the limits that protect a
# real server would measure themselves instead.
[limits]
connections_per_ip = 0
stanzas_per_second = 0
[listen]
c2s = ["127.0.0.1:$port"]
c2s_direct_tls = []
s2s = []
s2s_direct_tls = []
https = []
http = []
components = []
EOF
    "$GEN" --provision "$d/data" --users "$users" --password "$PASSWORD" --prefix "$PREFIX" \
        --domain "$DOMAIN" --mam-never "$msg_users" >>"$d/setup.log" 2>&1
}
start_kith() {
    "$KITH" --config "$1/kith.toml" run >>"$1/server.log" 2>&1 &
    SERVER_PID=$!
}

setup_prosody() {
    local d=$1 users=$2 port=$3
    mkdir -p "$d/data/$DOMAIN/accounts"
    local root_line="" mam_module="" mam_settings=""
    if [ "$MAM" = 1 ]; then
        mam_module=', "mam"'
        mam_settings='archive_expires_after = "never"
default_archive_policy = true
max_archive_query_results = 50'
    fi
    [ "$(id -u)" = 0 ] && root_line="run_as_root = true"
    cat >"$d/prosody.cfg.lua" <<EOF
-- written by scripts/bench-compare.sh
$root_line
pidfile = "$d/prosody.pid"
data_path = "$d/data"
log = { warn = "*console" }
interfaces = { "127.0.0.1" }
c2s_ports = { $port }
c2s_direct_tls_ports = {}
s2s_ports = {}
s2s_direct_tls_ports = {}
http_ports = {}
https_ports = {}
admin_socket = "$d/admin.sock"
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping", "carbons", "presence", "message", "iq"$mam_module }
$mam_settings
modules_disabled = { "s2s", "offline", "c2s_timeout" }
authentication = "internal_hashed"
storage = "internal"
-- TCP_NODELAY, as kith and ejabberd set it: with Nagle on, replies wait for delayed ACKs.
network_settings = { nagle = false }
c2s_require_encryption = true
ssl = { certificate = "$CERTS/$DOMAIN.crt"; key = "$CERTS/$DOMAIN.key" }
VirtualHost "$DOMAIN"
EOF
    # mod_storage_internal's account files, as prosodyctl would write them (0.12 format).
    python3 - "$d/data/$DOMAIN/accounts" "$users" "$PREFIX" "$(echo "$SALT_B64" | base64 -d)" \
        "$ITERATIONS" "$STORED_HEX" "$SERVER_HEX" <<'EOF'
import os, sys
d, n, prefix, salt, it, stored, server = sys.argv[1:]
body = ('return {\n\t["iteration_count"] = %s;\n\t["salt"] = "%s";\n\t["server_key"] = "%s";\n'
        '\t["stored_key"] = "%s";\n};\n') % (it, salt, server, stored)
for i in range(int(n)):
    with open(os.path.join(d, "%s%d.dat" % (prefix, i)), "w") as f:
        f.write(body)
EOF
}
start_prosody() {
    prosody --config "$1/prosody.cfg.lua" -F >>"$1/server.log" 2>&1 &
    SERVER_PID=$!
}

EJ_LIB=""
setup_ejabberd() {
    local d=$1 users=$2 port=$3
    mkdir -p "$d/db"
    EJ_LIB="$(dirname "$(ls -d /usr/lib/*/ejabberd-*/ | head -n 1)")"
    cat >"$d/ejabberd.yml" <<EOF
# written by scripts/bench-compare.sh
hosts: ["$DOMAIN"]
loglevel: warning
log_rotate_count: 0
certfiles: ["$CERTS/$DOMAIN.pem"]
auth_method: internal
auth_password_format: scram
listen:
  - {port: $port, ip: "127.0.0.1", module: ejabberd_c2s, starttls_required: true}
acl:
  local: {user_regexp: ""}
access_rules:
  local: {allow: local}
  c2s: {allow: all}
modules:
  mod_disco: {}
  mod_ping: {}
  mod_roster: {}
  mod_carboncopy: {}
EOF
    echo "$users" >"$d/users"
}
start_ejabberd() {
    local d=$1 users
    users=$(cat "$d/users")
    # The bench users go straight into mnesia's passwd table once ejabberd has started: the
    # record ejabberd_auth_mnesia writes for auth_password_format scram (base64 fields).
    env HOME="$d" ERL_LIBS="$EJ_LIB" EJABBERD_CONFIG_PATH="$d/ejabberd.yml" \
        EJABBERD_LOG_PATH="$d/ejabberd.log" ERL_CRASH_DUMP="$d/erl_crash.dump" \
        erl -noinput -noshell -mnesia dir "\"$d/db\"" -s ejabberd \
        -eval "lists:foreach(fun(I) -> mnesia:dirty_write({passwd, {<<\"$PREFIX\", (integer_to_binary(I))/binary>>, <<\"$DOMAIN\">>}, {scram, <<\"$STORED_B64\">>, <<\"$SERVER_B64\">>, <<\"$SALT_B64\">>, sha, $ITERATIONS}}) end, lists:seq(0, $users - 1)), io:format(\"bench users: ~p~n\", [$users])" \
        >>"$d/server.log" 2>&1 &
    SERVER_PID=$!
}

# Waits until the server accepts TCP on PORT (and, for ejabberd, has written its users);
# prints the seconds from T0 to the port being open.
wait_ready() {
    local name=$1 d=$2 port=$3 t0=$4 up=""
    for _ in $(seq 1 1200); do
        if [ -z "$up" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            up=$(echo "$(date +%s.%N) - $t0" | bc)
        fi
        if [ -n "$up" ] && { [ "$name" != ejabberd ] || grep -q "bench users:" "$d/server.log"; }; then
            printf '%.3f\n' "$up"
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            say "$name exited while starting:"; tail -n 50 "$d/server.log" >&2; exit 1
        fi
        sleep 0.05
    done
    say "$name does not listen on port $port after 60 s"; tail -n 50 "$d/server.log" >&2; exit 1
}

rss_kib() { # RSS of the server and its descendants
    python3 - "$SERVER_PID" <<'EOF'
import os, sys
root = sys.argv[1]
parent = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            s = open("/proc/%s/stat" % p).read()
            parent[p] = s[s.rfind(")") + 2:].split()[1]
        except OSError:
            pass
pids, todo = [], [root]
while todo:
    p = todo.pop()
    pids.append(p)
    todo += [c for c, pp in parent.items() if pp == p]
total = 0
for p in pids:
    try:
        for line in open("/proc/%s/status" % p):
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    except OSError:
        pass
print(total)
EOF
}

# run NAME RUN REP SESSIONS PAIRS MESSAGES: a fresh server, one generator run; results in
# $TMP/res/NAME.RUN.REP (the generator's key/value lines plus startup_s and base_rss_kib).
run_one() {
    local name=$1 run=$2 rep=$3 sessions=$4 pairs=$5 messages=$6
    local d=$TMP/$name.$run.$rep port t0 startup res=$TMP/res/$name.$run.$rep
    port=$(free_port)
    mkdir -p "$TMP/res"
    "setup_$name" "$d" "$sessions" "$port" $(( 2 * pairs ))
    t0=$(date +%s.%N)
    "start_$name" "$d"
    startup=$(wait_ready "$name" "$d" "$port" "$t0")
    sleep 2 # start-up allocations settle before the idle reading
    local base
    base=$(rss_kib)
    say "$name run $run/$rep: up in ${startup} s, idle RSS $(( base / 1024 )) MiB; $sessions sessions, $pairs pairs x $messages"
    "$GEN" --port "$port" --ca "$CERTS/ca.crt" --domain "$DOMAIN" --prefix "$PREFIX" \
        --password "$PASSWORD" --scram SHA-1 --sessions "$sessions" --pairs "$pairs" \
        --messages "$messages" --concurrency 16 --window 16 --settle 3 \
        --server-pid "$SERVER_PID" --results "$res" >"$d/gen.out" 2>"$d/gen.err" || {
        say "$name: the generator failed:"; tail -n 30 "$d/gen.err" "$d/gen.out" >&2; exit 1; }
    printf 'startup_s\t%s\nbase_rss_kib\t%s\n' "$startup" "$base" >>"$res"
    grep -E 'sessions logged in|logins/s|per idle session\*|messages/s|latency|CPU per message|failure|error' \
        "$d/gen.out" | sed "s/^/  $name: /" >&2 || true
    stop_server
    rm -rf "$d/data" "$d/db"
}

MAM=0
# run_mam NAME: a fresh server with archiving on; fill bench0's archive through the server,
# then time queries. Results in $TMP/res/NAME.mam (fill figures) and NAME.mamq (queries).
run_mam() {
    local name=$1 port t0
    local d=$TMP/$name.mam
    port=$(free_port)
    MAM=1
    "setup_$name" "$d" 2 "$port" 0
    MAM=0
    t0=$(date +%s.%N)
    "start_$name" "$d"
    wait_ready "$name" "$d" "$port" "$t0" >/dev/null
    say "$name MAM: filling bench0's archive with $(( 2 * MAM_MESSAGES )) messages through the server"
    "$GEN" --port "$port" --ca "$CERTS/ca.crt" --domain "$DOMAIN" --prefix "$PREFIX" \
        --password "$PASSWORD" --scram SHA-1 --sessions 2 --pairs 1 --messages "$MAM_MESSAGES" \
        --window 16 --settle 0 --server-pid "$SERVER_PID" --results "$TMP/res/$name.mam" \
        >"$d/gen.out" 2>"$d/gen.err" || {
        say "$name: the generator failed:"; tail -n 30 "$d/gen.err" "$d/gen.out" >&2; exit 1; }
    grep -E 'messages/s|delivered' "$d/gen.out" | sed "s/^/  $name: /" >&2 || true
    sleep 2 # let the last archive writes land
    "$MAMGEN" --simple --port "$port" --ca "$CERTS/ca.crt" --user "${PREFIX}0" --scram-sha1 \
        --repeat 5 --page 50 --results "$TMP/res/$name.mamq" >"$d/mam.out" 2>"$d/mam.err" || {
        say "$name: the archive queries failed:"; tail -n 30 "$d/mam.err" "$d/mam.out" >&2; exit 1; }
    sed "s/^/  $name: /" "$d/mam.out" >&2
    stop_server
    rm -rf "$d/data" "$d/db"
}

VERSIONS=$TMP/versions
: >"$VERSIONS"
for s in $SERVERS; do
    case "$s" in
        kith) echo "kith	$("$KITH" --version | cut -d' ' -f2) ($(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet -- src 2>/dev/null || echo '+dirty'), release build)" >>"$VERSIONS" ;;
        prosody) echo "prosody	$(dpkg-query -W -f '${Version}' prosody 2>/dev/null || echo '?') (Debian, run by $(head -n 1 "$(command -v prosody)" | sed 's/^#! *//'), internal storage)" >>"$VERSIONS" ;;
        ejabberd) echo "ejabberd	$(dpkg-query -W -f '${Version}' ejabberd 2>/dev/null || echo '?') (Debian, Erlang/OTP $(erl -noshell -eval 'io:format("~s",[erlang:system_info(otp_release)]),halt().' 2>/dev/null || echo '?'), mnesia)" >>"$VERSIONS" ;;
    esac
done

T_ALL=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq 1 "$REPEAT"); do
    # Interleaved, so slow drift in the machine's load touches every server alike.
    for s in $SERVERS; do
        run_one "$s" A "$rep" "$SESSIONS_A" "$PAIRS" "$MESSAGES"
        run_one "$s" B "$rep" "$SESSIONS_B" 0 0
    done
done
MAM_SERVERS=""
for s in $SERVERS; do
    case "$s" in kith|prosody) run_mam "$s"; MAM_SERVERS="$MAM_SERVERS $s" ;; esac
done
ELAPSED=$(( $(date +%s) - T_ALL ))
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ----- report -----
export LOAD_BEFORE LOAD_AFTER SERVERS REPEAT SESSIONS_A SESSIONS_B PAIRS MESSAGES ELAPSED QUICK MAM_SERVERS MAM_MESSAGES
python3 - "$TMP/res" "$OUT" "$VERSIONS" <<'EOF'
import os, statistics, subprocess, sys, platform
res_dir, out, versions_file = sys.argv[1:]
env = os.environ
servers = env["SERVERS"].split()
repeat = int(env["REPEAT"])
A, B, pairs, msgs = (int(env[k]) for k in ("SESSIONS_A", "SESSIONS_B", "PAIRS", "MESSAGES"))

def load(name, run, rep):
    d = {}
    for line in open(os.path.join(res_dir, "%s.%s.%d" % (name, run, rep))):
        k, v = line.rstrip("\n").split("\t")
        d[k] = float(v)
    return d

def med(name, run, key):
    vals = [load(name, run, r)[key] for r in range(1, repeat + 1)]
    vals = [v for v in vals if v == v]
    return statistics.median(vals) if vals else float("nan")

rows = [
    ("Start-up time (exec to port open)", "A", "startup_s", "s", 2),
    ("Idle RSS after start-up", "A", "base_rss_kib", "MiB", 1),
    ("Logins/s (%d sessions, 16 at a time)" % A, "A", "logins_per_s", "", 0),
    ("Server CPU per login", "A", "server_cpu_ms_per_login", "ms", 2),
    ("RSS per idle TLS session at %d" % A, "A", "server_kib_per_session", "KiB", 1),
    ("RSS per idle TLS session at %d" % B, "B", "server_kib_per_session", "KiB", 1),
    ("Total RSS with %d idle sessions" % B, "B", "server_rss_idle_kib", "MiB", 1),
    ("Logins/s (%d sessions)" % B, "B", "logins_per_s", "", 0),
    ("Messages/s, %d pairs (one-to-one, window 16)" % pairs, "A", "msgs_per_s", "", 0),
    ("Message latency p50", "A", "msg_p50_ms", "ms", 2),
    ("Message latency p99", "A", "msg_p99_ms", "ms", 2),
    ("Message latency p99.9", "A", "msg_p999_ms", "ms", 2),
    ("Server CPU seconds per 100k messages", "A", "server_cpu_s_per_100k_msgs", "s", 2),
    ("Generator CPU while routing (of one core)", "A", "gen_cpu_pct_msgs", "%", 0),
    ("Login failures / stanza errors / closed (sum)", "A", None, "", 0),
]
def value(name, run, key, unit):
    v = med(name, run, key)
    if unit == "MiB":
        v /= 1024
    return v

def fmt(v, digits):
    return "n/a" if v != v else ("{:,.%df}" % digits).format(v)

lines = []
p = lines.append
p("# Benchmarks: kith, Prosody and ejabberd side by side")
p("")
p("Generated by `scripts/bench-compare.sh%s`; do not edit by hand. Every figure is the **median of %d run%s** per server; runs were interleaved (kith, Prosody, ejabberd, then again) and each run started a fresh server. Total time %d s." % (" --quick" if env["QUICK"] == "1" else "", repeat, "" if repeat == 1 else "s", int(env["ELAPSED"])))
p("")
p("## Machine and versions")
p("")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next((l.split()[1] for l in open("/proc/meminfo") if l.startswith("MemTotal")), "0")
p("- %s, %d CPUs, %.1f GiB RAM, %s %s" % (cpu, os.cpu_count(), int(mem) / 1048576, platform.system(), platform.release()))
p("- Load average (1, 5, 15 min) before the runs: %s; after: %s. The machine is shared: other builds ran during the measurements, so absolute figures are noisy (a single-threaded server such as Prosody suffers most when another process takes a core); the ratios taken in the same run are what matters." % (env["LOAD_BEFORE"], env["LOAD_AFTER"]))
for line in open(versions_file):
    n, v = line.rstrip("\n").split("\t")
    p("- %s %s" % (n, v))
p("")
p("## Setup")
p("")
p("All servers on 127.0.0.1, domain `localhost`, STARTTLS required (TLS 1.3, one ECDSA P-256 certificate from a throwaway CA), SCRAM-SHA-1 logins, resource binding, initial presence and a ping; roster and carbons enabled; no archiving during the message run (kith: the messaging users' MAM preferences say `never`; Prosody and ejabberd: no MAM module); no s2s, no HTTP. The %d bench users were written straight into each server's storage (kith: one redb transaction; Prosody: its internal account files; ejabberd: mnesia `passwd` records), all with the same salt so the load generator runs PBKDF2 once." % max(A, B))
p("")
p("The load generator (`benches/c2s`, one thread) logs in 16 clients at a time, keeps the sessions idle for 3 s, then (run A) has %d pairs exchange %d messages each way, at most 16 in flight per sender (%d messages in all). RSS and CPU time come from `/proc` for the server process and all its descendants. RSS per idle session = (RSS with all sessions idle - RSS before the first login) / sessions." % (pairs, msgs, 2 * pairs * msgs))
p("")
p("## Results")
p("")
p("| | " + " | ".join(servers) + " |")
p("|---|" + "---|" * len(servers))
for label, run, key, unit, digits in rows:
    cells = []
    for s in servers:
        if key is None:
            tot = 0
            for r in range(1, repeat + 1):
                for rn in ("A", "B"):
                    d = load(s, rn, r)
                    tot += d["login_errors"] + d["stanza_errors"] + d["sessions_closed"] + (d["sessions"] - d["logged_in"] - d["login_errors"])
            cells.append("%d" % tot)
        else:
            cells.append(fmt(value(s, run, key, unit), digits) + (" " + unit if unit and unit != "%" else unit))
    p("| %s | %s |" % (label, " | ".join(cells)))
p("")

# Ratios against the targets of issue #7.
def ratio(a, b):
    return float("nan") if not (a == a and b == b) or b == 0 else a / b
p("## Against the targets")
p("")
notes = []
if "kith" in servers and "prosody" in servers:
    mem = ratio(value("kith", "B", "server_kib_per_session", "KiB"), value("prosody", "B", "server_kib_per_session", "KiB"))
    thr = ratio(value("kith", "A", "msgs_per_s", ""), value("prosody", "A", "msgs_per_s", ""))
    p("- Memory per idle session, kith / Prosody at %d sessions: **%.3f** (target: at most 0.1) — %s" % (B, mem, "met" if mem <= 0.1 else "NOT met"))
    p("- Messages/s, kith / Prosody: **%.1fx** (target: at least 5x) — %s" % (thr, "met" if thr >= 5 else "NOT met"))
if "kith" in servers:
    tot = value("kith", "B", "server_rss_idle_kib", "MiB")
    p("- kith's total RSS with %d idle TLS sessions: **%.1f MiB** (target for 10,000: under 64 MiB) — %s" % (B, tot, ("met" if tot < 64 else "NOT met") if B == 10000 else "not a 10,000-session run"))
if "kith" in servers and "ejabberd" in servers:
    p("- For reference, kith / ejabberd: memory per idle session %.3f, messages/s %.1fx" % (
        ratio(value("kith", "B", "server_kib_per_session", "KiB"), value("ejabberd", "B", "server_kib_per_session", "KiB")),
        ratio(value("kith", "A", "msgs_per_s", ""), value("ejabberd", "A", "msgs_per_s", ""))))
p("")
p("The generator's own CPU is in the table: a figure near 100% of one core means the generator, not the server, set the pace of that run.")
for s in servers:
    g = value(s, "A", "gen_cpu_pct_msgs", "")
    if g == g and g >= 80:
        p("")
        p("**%s's message rate is a lower bound:** the generator (one thread) used %.0f%% of a core during that run, on a 2-core machine where the server had the other one." % (s, g))
p("")
p("![chart](benchmarks.png)")
p("")
p("## Message archive (MAM)")
p("")
mam_servers = env.get("MAM_SERVERS", "").split()
if mam_servers:
    mm = int(env["MAM_MESSAGES"])
    p("Archiving on (kith: default preferences; Prosody: `mod_mam` with its default internal storage, `default_archive_policy = true`); ejabberd is not part of this comparison. One pair exchanged %d messages each way through the server, so `bench0`'s archive should hold %d messages; then `bench0` asked %s for a page of 50 from the end (`<before/>`, what a client opening a chat asks) and from the start. One run per server; query times are medians of 5 queries." % (mm, 2 * mm, "each server"))
    p("")
    p("| | " + " | ".join(mam_servers) + " |")
    p("|---|" + "---|" * len(mam_servers))
    def mamv(s, f, k):
        try:
            for line in open(os.path.join(res_dir, "%s.%s" % (s, f))):
                kk, v = line.rstrip("\n").split("\t")
                if kk == k:
                    return float(v)
        except OSError:
            pass
        return float("nan")
    for label, f, k, unit, digits in [
        ("Messages in bench0's archive when queried", "mam", "msg_delivered", "", 0),
        ("Messages/s while archiving (1 pair)", "mam", "msgs_per_s", "", 0),
        ("Server CPU seconds per 100k archived messages", "mam", "server_cpu_s_per_100k_msgs", " s", 2),
        ("RSS after filling", "mam", "server_rss_after_msgs_kib", " MiB", 1),
        ("Last page of 50 (`<before/>`)", "mamq", "last_page_ms", " ms", 2),
        ("First page of 50", "mamq", "first_page_ms", " ms", 2),
    ]:
        cells = []
        for s in mam_servers:
            v = mamv(s, f, k)
            if unit == " MiB":
                v /= 1024
            cells.append(fmt(v, digits) + unit)
        p("| %s | %s |" % (label, " | ".join(cells)))
    p("")
    for s in mam_servers:
        if mamv(s, "mam", "msg_timed_out") == 1:
            p("**%s did not archive all %d messages within the generator's 300 s limit** (%.0f messages/s), so its query times are for an archive of %d messages, not %d." % (s, 2 * mm, mamv(s, "mam", "msgs_per_s"), mamv(s, "mam", "msg_delivered"), 2 * mm))
            p("")
    if "kith" in mam_servers and "prosody" in mam_servers:
        p("Last page, Prosody / kith: %.0fx." % ratio(mamv("prosody", "mamq", "last_page_ms"), mamv("kith", "mamq", "last_page_ms")))
        p("")

p("## Reproduce")
p("")
p("```")
p("scripts/bench-compare.sh            # full run: %d and %d sessions, %d pairs, 3 repeats" % (1000, 10000, 200))
p("scripts/bench-compare.sh --quick    # small N, one repeat, report in a temp dir")
p("```")
p("")
p("Needs Debian's `prosody`, `ejabberd`, `gnuplot-nox`, `openssl` and `python3`; run as root (or with `ulimit -n` above 10,500 allowed).")
open(os.path.join(out, "benchmarks.md"), "w").write("\n".join(lines) + "\n")

# Chart data: one row per server.
with open(os.path.join(res_dir, "chart.dat"), "w") as f:
    f.write("server idle_mib kib_per_session logins_per_s msgs_per_s\n")
    for s in servers:
        f.write("%s %f %f %f %f\n" % (s, value(s, "A", "base_rss_kib", "MiB"), value(s, "B", "server_kib_per_session", "KiB"), value(s, "A", "logins_per_s", ""), value(s, "A", "msgs_per_s", "")))
EOF

gnuplot <<EOF
set terminal pngcairo size 1200,800 font "sans,11" noenhanced
set output "$OUT/benchmarks.png"
set multiplot layout 2,2 title "kith, Prosody, ejabberd on loopback (medians of $REPEAT runs; $(date -u +%Y-%m-%d))"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.6
set grid ytics
set yrange [0:*]
unset key
set title "Idle RSS after start-up (MiB, lower is better)"
plot "$TMP/res/chart.dat" using 2:xtic(1) lc rgb "#4477aa"
set title "RSS per idle TLS session at $SESSIONS_B sessions (KiB, lower is better)"
plot "$TMP/res/chart.dat" using 3:xtic(1) lc rgb "#ee6677"
set title "Logins per second, $SESSIONS_A sessions (higher is better)"
plot "$TMP/res/chart.dat" using 4:xtic(1) lc rgb "#228833"
set title "Messages per second, $PAIRS pairs (higher is better)"
plot "$TMP/res/chart.dat" using 5:xtic(1) lc rgb "#ccbb44"
unset multiplot
EOF
say "wrote $OUT/benchmarks.md and $OUT/benchmarks.png"
cat "$OUT/benchmarks.md"
