#!/usr/bin/env bash
#
# tests/load/registrations.sh - 100,000 registered contacts and their NAT keep-alives.
#
# Starts Vigil with USERS users allowed PER_USER contacts each, registers
# USERS*PER_USER contacts with digest authentication (core/examples/register_load.rs,
# from SOCKETS UDP sockets on 127.0.0.2), then listens to the keep-alives for
# LISTEN s at period 30 s / batch 3000 / 500 ms. Reports:
#   registration time and rate, Vigil's CPU while registering
#   RSS per contact            (RSS registered - RSS idle) / contacts
#   keep-alives per second     received by the contacts' sockets
#   interval deviation         Vigil's histogram of |actual interval - period|
#                              per contact (bucket upper bounds)
#
# Usage: tests/load/registrations.sh     (USERS=10000 PER_USER=10 SOCKETS=8 LISTEN=95)
set -euo pipefail

cd "$(dirname "$0")/../.."
USERS=${USERS:-10000}
PER_USER=${PER_USER:-10}
SOCKETS=${SOCKETS:-8}
LISTEN=${LISTEN:-95}
VIGIL_BIN=${VIGIL_BIN:-target/release/vigil}
LOAD_BIN=target/release/examples/register_load
if [ ! -x "$VIGIL_BIN" ] || [ ! -x "$LOAD_BIN" ]; then
    echo "registrations.sh: run cargo build --release --examples first" >&2
    exit 2
fi

WORK=$(mktemp -d /tmp/vigil-registrations.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] && echo "work dir kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

{
    cat <<EOF2
listen: ["udp:127.0.0.1:5060"]
cdr: { path: "$WORK/cdr.jsonl" }
log: { level: info, format: text }
registrar: { domain: vigil.local, db: "$WORK/registrar.db", max_contacts: $PER_USER, digest_algorithms: [MD5, SHA-256] }
nat_keepalive: { message: HELLO, period: 30, batch_size: 3000, send_interval_ms: 500 }
users:
EOF2
    for i in $(seq 1 "$USERS"); do echo "  - { user: u$i, password: secret-u$i }"; done
} > "$WORK/vigil.yaml"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

echo "== Vigil registration benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine:  nproc=$(nproc)  cpu=\"$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)\"  kernel=$(uname -sr)"
echo "vigil:    $("$VIGIL_BIN" --version)  commit=$(git rev-parse --short HEAD 2>/dev/null || echo -)"
echo "params:   contacts=$((USERS * PER_USER)) ($USERS users x $PER_USER) sockets=$SOCKETS keep-alive period 30 s, batch 3000 / 500 ms"

"$VIGIL_BIN" run --config "$WORK/vigil.yaml" 2> "$WORK/vigil.log" &
VIGIL=$!
PIDS+=("$VIGIL")
# Idle is measured once startup (10,000 users' config) has settled.
until grep -q 'vigil running' "$WORK/vigil.log" 2>/dev/null; do sleep 0.2; done
sleep 5
RSS_IDLE=$(rss_kb "$VIGIL")
C0=$(cpu_ticks "$VIGIL")

"$LOAD_BIN" --vigil 127.0.0.1:5060 --local 127.0.0.2 --users "$USERS" --per-user "$PER_USER" \
    --sockets "$SOCKETS" --window 256 --listen "$LISTEN" > "$WORK/load.out" 2>&1 &
LOAD=$!
PIDS+=("$LOAD")
# Registration ends when the tool prints its first line.
until grep -q '^registered:' "$WORK/load.out" 2>/dev/null; do sleep 0.2; done
C1=$(cpu_ticks "$VIGIL")
RSS_REG=$(rss_kb "$VIGIL")
wait "$LOAD"
RSS_END=$(rss_kb "$VIGIL")
kill -TERM "$VIGIL"
wait "$VIGIL" || true

CONTACTS=$((USERS * PER_USER))
REG_LINE=$(grep '^registered:' "$WORK/load.out")
KA_LINE=$(grep '^keep-alives received:' "$WORK/load.out")
REG_SECS=$(echo "$REG_LINE" | sed -E 's/.* in ([0-9.]+) s.*/\1/')
CPU_S=$(awk -v c="$((C1 - C0))" -v hz="$HZ" 'BEGIN { printf "%.2f", c / hz }')
PER_CONTACT=$(awk -v a="$RSS_END" -v i="$RSS_IDLE" -v n="$CONTACTS" 'BEGIN { printf "%.0f", (a - i) * 1024 / n }')
SUMMARY=$(grep 'NAT keep-alives' "$WORK/vigil.log" | tail -1 | sed 's/.*summary=//')

echo
echo "$REG_LINE"
echo "vigil cpu registering:  ${CPU_S} s (${REG_SECS} s wall)"
echo "rss idle / registered / after keep-alives:  ${RSS_IDLE} / ${RSS_REG} / ${RSS_END} kB"
echo "rss per contact:        ${PER_CONTACT} bytes"
echo "$KA_LINE"
echo "vigil keep-alive summary: ${SUMMARY}"
