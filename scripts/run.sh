#!/bin/sh
# make run: sluiced on its built-in configuration, in the foreground.
# So that `make run` never sends mail off this machine, a local
# `sluice sink` on 127.0.0.1:2526 captures everything sluiced delivers
# (into var/sink, a Maildir), and one override routes all mail there.
# Ctrl-C stops both.
set -e
BUILD=${BUILD:-build}
mkdir -p var/sink
"$BUILD/sluice" sink --listen 127.0.0.1:2526 --maildir var/sink &
sink=$!
trap 'kill $sink 2>/dev/null; wait $sink 2>/dev/null' EXIT INT TERM
echo "make run: sluiced on 127.0.0.1:2525; delivered mail is captured in var/sink (sluice sink on 127.0.0.1:2526)"
"$BUILD/sluiced" -o 'routes.*=[127.0.0.1]:2526' "$@"
