# shellcheck shell=bash
# bench/lib.sh: helpers shared by the benchmark scripts. Source it, then call
# bench_init. Everything a script starts (sluiced, a private Postfix,
# smtp-sink) is registered here and stopped by the EXIT/INT/TERM trap, and the
# scratch directory is removed, whatever way the script ends.
#
# Benchmarks report; they do not judge. Nothing here exits non-zero because a
# number is bad, only because the harness itself could not run.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
BUILD=${SLUICE_BUILD:-$REPO/build}
PY=/usr/bin/python3

BENCH_TMP=""
_BENCH_PIDS=()        # processes to TERM (then KILL) at exit
_BENCH_POSTFIX=()     # config dirs of private Postfix instances to stop
_BENCH_CLEANED=0

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 2; }

# --- setup and teardown -------------------------------------------------------

bench_cleanup() {
	[ "$_BENCH_CLEANED" = 1 ] && return
	_BENCH_CLEANED=1
	local d p i
	for d in "${_BENCH_POSTFIX[@]}"; do
		postfix -c "$d" stop >/dev/null 2>&1 || true
	done
	for p in "${_BENCH_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${_BENCH_PIDS[@]}"; do
		for i in $(seq 1 100); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$p" 2>/dev/null || true
	done
	for d in "${_BENCH_POSTFIX[@]}"; do
		# "stop" waits for master; "abort" kills it if it did not go.
		postfix -c "$d" abort >/dev/null 2>&1 || true
	done
	if [ -n "$BENCH_TMP" ] && [ -d "$BENCH_TMP" ] && [ -z "${BENCH_KEEP:-}" ]; then
		rm -rf "$BENCH_TMP"
	elif [ -n "$BENCH_TMP" ]; then
		log "kept $BENCH_TMP (BENCH_KEEP set)"
	fi
}

_bench_signal() {
	log "interrupted, cleaning up"
	bench_cleanup
	trap - EXIT
	exit 130
}

# bench_init: deps, build, scratch directory, traps, file-descriptor limit.
bench_init() {
	set -u
	[ "$(id -u)" = 0 ] || die "run as root (smtp-sink -u, private Postfix, apt-get)"
	"$REPO/scripts/deps.sh" >&2 || die "scripts/deps.sh failed"
	# smtp-source/smtp-sink come from the postfix package (deps.sh lists it);
	# install it unconfigured if an older deps.sh did not.
	if ! command -v smtp-source >/dev/null 2>&1 || ! command -v postfix >/dev/null 2>&1; then
		echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix >&2 ||
			die "cannot install postfix"
	fi
	# SLUICE_BUILD=DIR: use the sluiced already built there, build nothing.
	BUILD=${SLUICE_BUILD:-$REPO/build}
	if [ -z "${SLUICE_BUILD:-}" ]; then
		local mlog
		mlog=$(mktemp)
		if ! make -C "$REPO" all >"$mlog" 2>&1; then
			[ -x "$BUILD/sluiced" ] || { tail -30 "$mlog" >&2; rm -f "$mlog"; die "make all failed"; }
			log "warning: make all failed; benchmarking the existing $BUILD/sluiced ($(date -r "$BUILD/sluiced" +%FT%T))"
		fi
		rm -f "$mlog"
	fi
	[ -x "$BUILD/sluiced" ] || die "$BUILD/sluiced missing"
	# The scratch directory must be on a real disk: on tmpfs fsync is free
	# and both spools would look far faster than they are.
	local base=${BENCH_TMPDIR:-/var/tmp}
	BENCH_TMP=$(mktemp -d "$base/sluice-bench.XXXXXX") || die "mktemp failed"
	chmod 755 "$BENCH_TMP"
	if [ "$(stat -f -c %T "$BENCH_TMP")" = tmpfs ]; then
		log "warning: $BENCH_TMP is on tmpfs: fsync costs nothing there; set BENCH_TMPDIR to a disk"
	fi
	trap bench_cleanup EXIT
	trap _bench_signal INT TERM HUP
	ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

# bench_register PID: stop it at exit.
bench_register() { _BENCH_PIDS+=("$1"); }

# --- ports ----------------------------------------------------------------------

# free_port: a loopback TCP port nothing listens on now.
free_port() {
	"$PY" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# wait_smtp PORT [SECONDS]: wait until a 220 greeting comes from 127.0.0.1:PORT.
# With WAIT_SMTP_PROXY=1, each try first sends a PROXY v2 LOCAL header (as a
# balancer's health check does), for a listener that wants one.
wait_smtp() {
	"$PY" - "$1" "${2:-20}" "${WAIT_SMTP_PROXY:-}" <<'EOF'
import socket, sys, time
port, limit = int(sys.argv[1]), float(sys.argv[2])
hdr = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00" if sys.argv[3] else b""
end = time.time() + limit
while time.time() < end:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(hdr)
            if s.recv(512).startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
}

# --- sluiced ----------------------------------------------------------------------

# start_sluiced NAME: sluiced on a free port with its own config and spool
# under $BENCH_TMP/NAME. Sets SLUICED_PID, SLUICED_PORT, SLUICED_DIR.
start_sluiced() {
	local name=${1:-sluiced}
	SLUICED_DIR=$BENCH_TMP/$name
	mkdir -p "$SLUICED_DIR/spool" "$SLUICED_DIR/run"
	SLUICED_PORT=$(free_port)
	cat >"$SLUICED_DIR/sluiced.conf" <<EOF
[server]
user =
listen = 127.0.0.1:$SLUICED_PORT
max_connections = 20000
max_connections_per_ip = 0
[spool]
dir = $SLUICED_DIR/spool
[control]
socket = $SLUICED_DIR/run/sluice.sock
[log]
file = $SLUICED_DIR/sluiced.log
EOF
	# A sluiced that delivers must not: its DNS goes to a black hole on
	# loopback (takes queries, never answers), so every message waits in
	# the spool for an MX that never comes and no traffic leaves 127.0.0.1.
	if "$BUILD/sluiced" --print-config 2>/dev/null | grep -q '^\[dns\]'; then
		dns_blackhole
		printf '[dns]\nservers = 127.0.0.1:%s\ntimeout = 300s\n' "$DNS_BLACKHOLE_PORT" \
			>>"$SLUICED_DIR/sluiced.conf"
	fi
	"$BUILD/sluiced" -c "$SLUICED_DIR/sluiced.conf" 2>"$SLUICED_DIR/stderr" &
	SLUICED_PID=$!
	bench_register "$SLUICED_PID"
	if ! wait_smtp "$SLUICED_PORT" 20; then
		tail -20 "$SLUICED_DIR/stderr" >&2
		die "sluiced did not start on 127.0.0.1:$SLUICED_PORT"
	fi
	log "sluiced pid $SLUICED_PID on 127.0.0.1:$SLUICED_PORT, spool $SLUICED_DIR/spool"
}

# dns_blackhole: a UDP socket on loopback that reads nothing and answers
# nothing, held by a python process until exit. Sets DNS_BLACKHOLE_PORT.
dns_blackhole() {
	[ -n "${DNS_BLACKHOLE_PORT:-}" ] && return 0
	local f=$BENCH_TMP/dns-blackhole.port i
	timeout 7200 "$PY" -c 'import os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d\n" % s.getsockname()[1])
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(7200)' "$f" &
	bench_register $!
	for i in $(seq 1 50); do [ -s "$f" ] && break; sleep 0.1; done
	DNS_BLACKHOLE_PORT=$(cat "$f") || die "DNS black hole did not start"
}

# stop_sluiced: SIGTERM and wait (it drains the spool before it exits).
stop_sluiced() {
	[ -n "${SLUICED_PID:-}" ] || return 0
	kill -TERM "$SLUICED_PID" 2>/dev/null || true
	local i
	for i in $(seq 1 300); do
		kill -0 "$SLUICED_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$SLUICED_PID" 2>/dev/null || true
	wait "$SLUICED_PID" 2>/dev/null || true
	SLUICED_PID=""
}

# sluiced_count: messages in the sluiced spool.
sluiced_count() {
	sqlite3 -cmd '.timeout 5000' "file:$SLUICED_DIR/spool/spool.db?mode=ro" \
		'SELECT count(*) FROM envelopes' 2>/dev/null || echo "?"
}

# --- a private Postfix ----------------------------------------------------------

# start_postfix NAME: a Postfix instance of its own (config, queue and data
# directories under $BENCH_TMP/NAME) with one smtpd on a free loopback port.
# It accepts from 127.0.0.0/8, writes each message to its queue exactly as
# usual (cleanup fsyncs the queue file before smtpd answers 250), but every
# message is put on HOLD by an access rule, so the queue manager never sees
# it and nothing is delivered anywhere. Even a message that escaped the hold
# would only be deferred: defer_transports names every transport and
# master.cf has no smtp, relay or local service.
# Sets POSTFIX_DIR (config dir), POSTFIX_PORT, POSTFIX_QUEUE.
start_postfix() {
	local name=${1:-postfix}
	local root=$BENCH_TMP/$name
	POSTFIX_DIR=$root/etc
	POSTFIX_QUEUE=$root/queue
	POSTFIX_PORT=$(free_port)
	mkdir -p "$POSTFIX_DIR" "$POSTFIX_QUEUE" "$root/data"
	chown postfix "$root/data"
	cat >"$POSTFIX_DIR/main.cf" <<EOF
# Private benchmark instance written by bench/lib.sh.
compatibility_level = 3.6
queue_directory = $POSTFIX_QUEUE
data_directory = $root/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.invalid
mydomain = invalid
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
smtpd_relay_restrictions = permit_mynetworks, reject
# HOLD: accept, queue durably, then park the message in the hold queue.
smtpd_recipient_restrictions = check_client_access static:HOLD, permit_mynetworks, reject
# Belt and braces: should a message ever leave the hold queue, the queue
# manager defers it (defer_transports) and master.cf has no smtp/relay/local
# service anyway. (An error: transport would make smtpd reject at RCPT.)
default_transport = smtp
relay_transport = relay
local_transport = local
defer_transports = smtp, relay, local, virtual
alias_maps =
alias_database =
local_recipient_maps =
smtputf8_enable = no
biff = no
smtpd_tls_security_level = none
smtp_tls_security_level = none
maillog_file = $root/maillog
maillog_file_prefixes = $root
EOF
	cat >"$POSTFIX_DIR/master.cf" <<EOF
# service type private unpriv chroot wakeup maxproc command
127.0.0.1:$POSTFIX_PORT inet n - n - - smtpd
pickup     unix  n - n 60 1 pickup
cleanup    unix  n - n -  0 cleanup
qmgr       unix  n - n 300 1 qmgr
rewrite    unix  - - n -  - trivial-rewrite
bounce     unix  - - n -  0 bounce
defer      unix  - - n -  0 bounce
trace      unix  - - n -  0 bounce
verify     unix  - - n -  1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -  - proxymap
proxywrite unix  - - n -  1 proxymap
showq      unix  n - n -  - showq
error      unix  - - n -  - error
retry      unix  - - n -  - error
discard    unix  - - n -  - discard
anvil      unix  - - n -  1 anvil
scache     unix  - - n -  1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
	postfix -c "$POSTFIX_DIR" check >"$root/check.err" 2>&1 || { cat "$root/check.err" >&2; die "postfix check failed"; }
	_BENCH_POSTFIX+=("$POSTFIX_DIR")
	postfix -c "$POSTFIX_DIR" start >"$root/start.out" 2>&1 || { cat "$root/start.out" >&2; die "postfix start failed"; }
	if ! wait_smtp "$POSTFIX_PORT" 30; then
		cat "$root/start.out" >&2
		tail -20 "$root/maillog" >&2 2>/dev/null
		die "private Postfix did not answer on 127.0.0.1:$POSTFIX_PORT"
	fi
	log "postfix ($POSTFIX_DIR) on 127.0.0.1:$POSTFIX_PORT, queue $POSTFIX_QUEUE"
}

stop_postfix() {
	[ -n "${POSTFIX_DIR:-}" ] || return 0
	postfix -c "$POSTFIX_DIR" stop >/dev/null 2>&1 || true
}

# postfix_count: messages in the private queue (all of them should be on hold).
postfix_count() {
	find "$POSTFIX_QUEUE/hold" "$POSTFIX_QUEUE/incoming" "$POSTFIX_QUEUE/active" \
		"$POSTFIX_QUEUE/deferred" -type f 2>/dev/null | wc -l
}

# --- process accounting -----------------------------------------------------------

# cpu_ticks PID: utime+stime of the whole process (all threads), in clock ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

# rss_kb PID: VmRSS in kB.
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# --- load and timing ----------------------------------------------------------------

# now: seconds since the epoch with nanoseconds.
now() { date +%s.%N; }

# run_smtp_source PORT COUNT SESSIONS SIZE OUTFILE: send COUNT messages and
# print the elapsed seconds. Bounded in time by timeout(1).
run_smtp_source() {
	local port=$1 count=$2 sessions=$3 size=$4 out=$5 t0 t1 rc=0
	t0=$(now)
	timeout --foreground "${SOURCE_TIMEOUT:-600}" smtp-source ${SOURCE_OPTS:-} -s "$sessions" -m "$count" -l "$size" \
		-f bench@example.org -t rcpt@example.com -M bench-client.invalid \
		"127.0.0.1:$port" >"$out" 2>&1 || rc=$?
	t1=$(now)
	if [ "$rc" != 0 ]; then
		log "smtp-source exited $rc:"
		tail -5 "$out" >&2
	fi
	"$PY" -c "print('%.3f' % ($t1 - $t0))"
}

# --- numbers and tables -------------------------------------------------------------

# stats KIND: read numbers on stdin, print one: median | p99 | min | max | mean.
stats() {
	"$PY" -c '
import sys, math
kind = sys.argv[1]
xs = sorted(float(x) for x in sys.stdin.read().split())
if not xs:
    print("n/a"); sys.exit()
def pct(p):
    # nearest-rank percentile
    k = max(0, math.ceil(p / 100 * len(xs)) - 1)
    return xs[k]
if kind == "median":
    n = len(xs)
    v = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
elif kind == "p99":
    v = pct(99)
elif kind == "min":
    v = xs[0]
elif kind == "max":
    v = xs[-1]
else:
    v = sum(xs) / len(xs)
print("%.6g" % v)' "$1"
}

# fmt NUMBER DECIMALS
fmt() { LC_ALL=C printf "%.${2:-0}f" "$1"; }

# ratio A B: A/B with two decimals.
ratio() { "$PY" -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print('%.2f' % (a / b) if b else 'n/a')" "$1" "$2"; }

# md_table "H1|H2|..." "v1|v2|..." ...: a markdown table on stdout.
md_table() {
	local header=$1 row
	shift
	echo "| ${header//|/ | } |"
	echo "$header" | awk -F'|' '{ s = "|"; for (i = 1; i <= NF; i++) s = s "---|"; print s }'
	for row in "$@"; do
		echo "| ${row//|/ | } |"
	done
}

# machine_line: date, nproc, kernel, CPU model, for the results header.
machine_line() {
	local cpu
	cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	echo "$(date -u +%Y-%m-%dT%H:%MZ), nproc=$(nproc), kernel $(uname -r), ${cpu:-unknown CPU}"
}
