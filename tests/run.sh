#!/usr/bin/env bash
# The test command (README.md): installs the SIP peers the end-to-end tests drive
# when they are missing (sipp, Debian's sip-tester; the baresip softphone, whose
# metapackage without its recommends is just baresip-core; the rtpengine media
# proxy, Debian's rtpengine-daemon, of which the tests start their own on
# loopback; the dnsmasq DNS server, Debian's dnsmasq-base: the binary without a
# system service, started by the DNS tests on loopback; Kamailio, a carrier's
# registrar and proxy; PostgreSQL, Debian's postgresql, of which the CDR
# database tests start their own clusters on loopback; redis-server, the
# state store two nodes share), then runs every test
# of the workspace: unit tests, the RFC 4475 torture suite and the end-to-end
# calls.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v baresip >/dev/null 2>&1 || missing+=(baresip)
command -v rtpengine >/dev/null 2>&1 || missing+=(rtpengine-daemon)
# /usr/sbin is not on every PATH.
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
# Kamailio is the carrier Vigil registers with (tests/trunk_registration.rs).
[ -x /usr/sbin/kamailio ] || command -v kamailio >/dev/null 2>&1 || missing+=(kamailio)
# PostgreSQL's server binaries live in a versioned folder, off PATH.
pg_server=""
for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && pg_server="$dir"
done
{ [ -n "$pg_server" ] && command -v psql >/dev/null 2>&1; } || missing+=(postgresql)
# Redis holds the calls of two Vigil nodes (tests/standby_takeover.rs).
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "tests/run.sh: installing ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

exec cargo test --workspace --all-targets --locked "$@"
