#!/bin/sh
# Install the Debian packages that building and testing sluice need, if any
# is missing. Runs apt-get as root on Debian 12; prints nothing when all is here.
set -e
PKGS="build-essential pkg-config libevent-dev libinih-dev libsqlite3-dev
libjansson-dev libc-ares-dev libssl-dev libcmocka-dev clang libcrypt-dev
python3 python3-pytest python3-pytest-xdist swaks libnet-ssleay-perl openssl curl postfix
dnsmasq-base strace sqlite3 iproute2 procps psmisc
libgmime-3.0-dev librabbitmq-dev libcurl4-openssl-dev libzstd-dev
rabbitmq-server python3-pika python3-dkim python3-nacl
chromium chromium-driver python3-selenium python3-pil
haproxy dovecot-core dovecot-lmtpd libhiredis-dev redis-server"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# Postfix is only a benchmark peer and the source of smtp-source/smtp-sink:
# install it unconfigured so it never starts delivering on its own.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
# HAProxy, Dovecot and Redis are test peers that the tests start on loopback
# with their own configuration: no service may start at install and take ports
# (Redis's 6379; policy-rc.d says no to invoke-rc.d), nor at the next boot.
norc=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
	$SUDO chmod 755 /usr/sbin/policy-rc.d
	norc=1
fi
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends $missing
[ -n "$norc" ] && $SUDO rm -f /usr/sbin/policy-rc.d
for svc in dovecot haproxy redis-server; do
	if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
		$SUDO systemctl disable --now "$svc" 2>/dev/null || true
	elif [ -x "/etc/init.d/$svc" ]; then
		$SUDO /etc/init.d/"$svc" stop >/dev/null 2>&1 || true
		$SUDO update-rc.d "$svc" disable >/dev/null 2>&1 || true
	fi
done
