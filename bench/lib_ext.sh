# shellcheck shell=bash
# bench/lib_ext.sh: a few helpers on top of bench/lib.sh for bench/relay and
# bench/queue-scale. Source it after lib.sh; it only adds functions and uses
# lib.sh's (start_sluiced, start_postfix, bench_register, wait_smtp, ...), so
# everything started here is still stopped by lib.sh's exit trap.

# restart_sluiced_with EXTRA [WAIT_SECONDS]: stop the sluiced that
# start_sluiced started, append EXTRA (INI text) to its sluiced.conf and start
# it again the same way (same port, spool, log). Sets SLUICED_PID and
# SLUICED_T0 (epoch seconds just before exec). Dies if no greeting in time.
# Call it in the main shell, not in $(...): the PID must reach the exit trap.
restart_sluiced_with() {
	local extra=$1 wait=${2:-60}
	stop_sluiced
	printf '%s\n' "$extra" >>"$SLUICED_DIR/sluiced.conf"
	# a fresh log, so the log lines of this start are the first ones
	[ -f "$SLUICED_DIR/sluiced.log" ] && mv "$SLUICED_DIR/sluiced.log" "$SLUICED_DIR/sluiced.log.prev"
	"$BUILD/sluiced" -n -c "$SLUICED_DIR/sluiced.conf" >/dev/null 2>"$SLUICED_DIR/check.err" ||
		{ cat "$SLUICED_DIR/check.err" >&2; die "sluiced -n: bad config"; }
	SLUICED_T0=$(now)
	# stdout to a file: never hold a caller's $(...) pipe open
	"$BUILD/sluiced" -c "$SLUICED_DIR/sluiced.conf" >>"$SLUICED_DIR/stdout" 2>>"$SLUICED_DIR/stderr" &
	SLUICED_PID=$!
	bench_register "$SLUICED_PID"
	if ! wait_smtp "$SLUICED_PORT" "$wait"; then
		tail -20 "$SLUICED_DIR/stderr" >&2
		die "sluiced did not restart on 127.0.0.1:$SLUICED_PORT"
	fi
}

# log_event_time LOGFILE TEXT: epoch seconds (ms precision) of the first log
# line containing TEXT, or empty. sluiced's text log starts each line with
# an ISO-8601 UTC time: 2024-01-01T00:00:00.123Z.
log_event_time() {
	"$PY" - "$1" "$2" <<'EOF'
import sys, calendar, time
path, text = sys.argv[1], sys.argv[2]
try:
    with open(path, errors="replace") as f:
        for line in f:
            if text in line:
                ts = line.split(" ", 1)[0].rstrip("Z")
                base, _, ms = ts.partition(".")
                t = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
                print("%.3f" % (t + int(ms or 0) / 1000.0))
                break
except OSError:
    pass
EOF
}

# start_counting_sink: smtp-sink -c (running counters on stdout: "sess=N
# quit=N mesg=N\r") on a free port. Sets SINK_PORT, SINK_PID, SINK_OUT.
start_counting_sink() {
	SINK_PORT=$(free_port)
	SINK_OUT=$BENCH_TMP/sink.counts
	timeout 7200 smtp-sink -c -u postfix -m 2000 "127.0.0.1:$SINK_PORT" 2000 \
		>"$SINK_OUT" 2>"$BENCH_TMP/sink.err" &
	SINK_PID=$!
	bench_register "$SINK_PID"
	wait_smtp "$SINK_PORT" 10 || { cat "$BENCH_TMP/sink.err" >&2; die "smtp-sink did not start"; }
	log "smtp-sink -c pid $SINK_PID on 127.0.0.1:$SINK_PORT"
}

# sink_count: messages the counting sink has answered 250 after the data.
# (wait_smtp's probe sessions add to sess= but not to mesg=.)
sink_count() {
	local last
	last=$(tail -c 200 "$SINK_OUT" 2>/dev/null | tr '\r' '\n' | grep 'mesg=' | tail -1)
	last=${last##*mesg=}
	echo "${last%% *}" | tr -dc '0-9' | sed 's/^$/0/'
}

# wait_sink_count TARGET LIMIT_SECONDS: poll (every 20 ms) until sink_count >=
# TARGET; print the epoch time it was first seen there, or "timeout".
wait_sink_count() {
	local target=$1 limit=$2 end c
	end=$("$PY" -c "import time; print(time.time() + $limit)")
	while :; do
		c=$(sink_count)
		if [ "$c" -ge "$target" ]; then now; return 0; fi
		if "$PY" -c "import sys, time; sys.exit(0 if time.time() > $end else 1)"; then
			echo timeout; return 0
		fi
		sleep 0.02
	done
}

# postfix_relay_to PORT CONCURRENCY: turn the held, deliver-nothing private
# Postfix of start_postfix into a relay: no HOLD, relayhost
# [127.0.0.1]:PORT, smtp/relay services, the given destination concurrency;
# then reload. Its queue stays durable (cleanup fsyncs, as usual).
postfix_relay_to() {
	local port=$1 conc=$2
	postconf -c "$POSTFIX_DIR" -e \
		"smtpd_recipient_restrictions = permit_mynetworks, reject" \
		"relayhost = [127.0.0.1]:$port" \
		"defer_transports =" \
		"default_destination_concurrency_limit = $conc" \
		"default_process_limit = 500" \
		"smtp_tls_security_level = none" \
		"smtp_helo_name = bench.invalid" || die "postconf failed"
	if ! grep -q '^smtp ' "$POSTFIX_DIR/master.cf"; then
		cat >>"$POSTFIX_DIR/master.cf" <<EOF
smtp       unix  - - n -  - smtp
relay      unix  - - n -  - smtp
EOF
	fi
	postfix -c "$POSTFIX_DIR" check >&2 || die "postfix check failed"
	postfix -c "$POSTFIX_DIR" reload >/dev/null 2>&1 || die "postfix reload failed"
	sleep 1
	wait_smtp "$POSTFIX_PORT" 30 || die "postfix not answering after reload"
}

# postfix_pending: messages anywhere in the private Postfix queue.
postfix_pending() {
	find "$POSTFIX_QUEUE/incoming" "$POSTFIX_QUEUE/active" "$POSTFIX_QUEUE/deferred" \
		"$POSTFIX_QUEUE/hold" "$POSTFIX_QUEUE/maildrop" -type f 2>/dev/null | wc -l
}

# busy_ticks: all CPUs' non-idle time so far, in clock ticks.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }

# pycalc EXPR: print the value of a python expression.
pycalc() { "$PY" -c "print($1)"; }
