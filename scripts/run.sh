#!/bin/sh
# make run: sluiced on its built-in configuration, in the foreground.
# So that `make run` never sends mail off this machine, a local
# `sluice sink` on 127.0.0.1:2526 captures everything sluiced delivers
# (into var/sink, a Maildir; its inbox page on 127.0.0.1:8025, POP3 on
# 127.0.0.1:1100), and one override routes all mail there. The queue
# dashboard is on sluiced's HTTP listener (127.0.0.1:9025) with a token
# made once into var/http-token.
#
# Submission works out of the box: a self-signed certificate is made in
# var/tls/ when none is there (STARTTLS on 2525 and 2587, implicit TLS on
# 2465), the users file is var/users (`sluice user add NAME` adds one;
# sluiced reads it at `sluice reload`). Run as root without the system
# user `sluice` (make install creates it), sluiced keeps running as root.
# Ctrl-C stops both.
set -e
BUILD=${BUILD:-build}
mkdir -p var/sink var/tls
if [ ! -f var/tls/cert.pem ] || [ ! -f var/tls/key.pem ]; then
	openssl req -x509 -newkey rsa:2048 -nodes -days 365 \
	    -subj "/CN=$(hostname)" -addext "subjectAltName=DNS:$(hostname),DNS:localhost,IP:127.0.0.1" \
	    -keyout var/tls/key.pem -out var/tls/cert.pem 2>/dev/null
	chmod 600 var/tls/key.pem
	echo "make run: made a self-signed certificate in var/tls/cert.pem"
fi
if [ ! -s var/http-token ]; then
	(umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > var/http-token)
	echo >> var/http-token
fi
user_opt=""
if [ "$(id -u)" = 0 ] && ! getent passwd sluice >/dev/null; then
	user_opt="-o server.user="
fi
"$BUILD/sluice" sink --listen 127.0.0.1:2526 --maildir var/sink \
    --http 127.0.0.1:8025 --pop3 127.0.0.1:1100 >/dev/null &
sink=$!
trap 'kill $sink 2>/dev/null; wait $sink 2>/dev/null' EXIT INT TERM
cat <<MSG
make run: sluiced on 127.0.0.1:2525 (SMTP, STARTTLS), 127.0.0.1:2587
(submission: STARTTLS, then AUTH) and 127.0.0.1:2465 (submission, implicit
TLS); delivered mail is captured in var/sink (sluice sink on 127.0.0.1:2526).
  the queue dashboard: http://127.0.0.1:9025/
                       its API token is the first line of $(pwd)/var/http-token
  the sink's inbox:    http://127.0.0.1:8025/   (POP3 on 127.0.0.1:1100)
Add a user for submission, then make sluiced read the users file again:
    $BUILD/sluice user add alice        # asks for the password
    $BUILD/sluice reload
and send as that user:
    swaks --server 127.0.0.1:2587 --tls --auth-user alice --to someone@example.test
MSG
# shellcheck disable=SC2086
"$BUILD/sluiced" -o 'routes.*=[127.0.0.1]:2526' \
    -o server.tls_cert=var/tls/cert.pem -o server.tls_key=var/tls/key.pem \
    -o submission.listen=127.0.0.1:2587 -o submission.tls_listen=127.0.0.1:2465 \
    -o http.api_token_file=var/http-token \
    $user_opt "$@"
