#!/usr/bin/env bash
#
# tests/load/concurrent.sh - concurrent calls with session timers through Vigil.
#
#   sipp UAC (127.0.0.1:5070) --> Vigil (127.0.0.1:5060) --> sipp UAS (127.0.0.1:5080)
#
# Sets up CALLS calls at RATE calls/s, both legs with RFC 4028 session timers that
# Vigil refreshes every TTL/2 s (the caller asks refresher=uas, the callee leaves
# it to Vigil with refresher=uac; both sipps answer every refresh), holds them
# for HOLD s, then stops Vigil, which BYEs every call. Reports:
#   rss_idle / rss_plateau / rss_per_call   Vigil's VmRSS before and while holding
#   cpu_pct                                  Vigil's CPU while holding (% of a core)
#   refreshes_per_s                          refreshes Vigil sent per second, holding
#   lateness p50 / p99 / max                 refresh sent - refresh due, from Vigil's
#                                            own histogram (bucket upper bounds)
#   failed                                   calls that did not complete on either side
#
# Usage: tests/load/concurrent.sh            (CALLS=20000 RATE=500 TTL=30 HOLD=150)
# Needs: target/release/vigil (cargo build --release), sipp.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
CALLS=${CALLS:-20000}
RATE=${RATE:-500}
TTL=${TTL:-30}
HOLD=${HOLD:-150}
VIGIL_BIN=${VIGIL_BIN:-target/release/vigil}
SCENARIOS=$ROOT/tests/scenarios

if [ ! -x "$VIGIL_BIN" ]; then
    echo "concurrent.sh: $VIGIL_BIN not found: run cargo build --release (or set VIGIL_BIN)" >&2
    exit 2
fi
command -v sipp >/dev/null || { echo "concurrent.sh: sipp not found (apt-get install sip-tester)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/vigil-concurrent.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] && echo "work dir kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/vigil.yaml" <<EOF
listen: ["udp:127.0.0.1:5060"]
trunks:
  - name: loadgen
    inbound: { from: ["127.0.0.1/32"] }
    route_to: uas
  - name: uas
    outbound: { to: "127.0.0.1:5080" }
cdr: { path: "$WORK/cdr.jsonl" }
log: { level: info, format: text }
sip: { max_ring_time: 60 }
session_timer: { ttl: $TTL, min_se: 10, update_segment: 2, allow_short_intervals: true }
EOF

# VmRSS in kB and utime+stime in clock ticks of a process.
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

echo "== Vigil concurrent-calls benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine:  nproc=$(nproc)  cpu=\"$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)\"  kernel=$(uname -sr)"
echo "vigil:    $("$VIGIL_BIN" --version)  commit=$(git rev-parse --short HEAD 2>/dev/null || echo -)"
echo "params:   calls=$CALLS rate=$RATE/s ttl=${TTL}s (refresh every $((TTL / 2)) s per leg) hold=${HOLD}s"

"$VIGIL_BIN" run --config "$WORK/vigil.yaml" 2> "$WORK/vigil.log" &
VIGIL=$!
PIDS+=("$VIGIL")
sleep 1
RSS_IDLE=$(rss_kb "$VIGIL")

sipp -sf "$SCENARIOS/uas_refresh.xml" -set se "$TTL" -i 127.0.0.1 -p 5080 -nostdin \
    -trace_stat -stf "$WORK/uas.csv" -fd 1 > "$WORK/uas.out" 2>&1 &
PIDS+=("$!")
sleep 0.5
sipp -sf "$SCENARIOS/uac_refreshed_wait_bye.xml" -set se "$TTL" -i 127.0.0.1 -p 5070 -s 0049 \
    -r "$RATE" -m "$CALLS" -l "$CALLS" -nostdin -trace_stat -stf "$WORK/uac.csv" -fd 1 \
    127.0.0.1:5060 > "$WORK/uac.out" 2>&1 &
UAC=$!
PIDS+=("$UAC")

RAMP=$(( (CALLS + RATE - 1) / RATE + 5 ))
echo "ramping up for ${RAMP}s..."
sleep "$RAMP"

echo "holding for ${HOLD}s..."
T0=$(date +%s.%N)
C0=$(cpu_ticks "$VIGIL")
RSS_MAX=0
RSS_SUM=0
SAMPLES=0
for _ in $(seq "$HOLD"); do
    r=$(rss_kb "$VIGIL")
    RSS_SUM=$((RSS_SUM + r)); SAMPLES=$((SAMPLES + 1))
    [ "$r" -gt "$RSS_MAX" ] && RSS_MAX=$r
    sleep 1
done
C1=$(cpu_ticks "$VIGIL")
T1=$(date +%s.%N)

# Refreshes per second while holding: the difference between the last two of
# Vigil's once-a-minute summaries.
mapfile -t SENT < <(grep -o 'refreshes_sent=[0-9]*' "$WORK/vigil.log" | cut -d= -f2)
if [ "${#SENT[@]}" -ge 2 ]; then
    RPS=$(( (SENT[-1] - SENT[-2]) / 60 ))
else
    RPS="-"
fi

STOP0=$(date +%s.%N)
kill -TERM "$VIGIL"
wait "$VIGIL" || true
STOP_S=$(awk -v a="$STOP0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
# Vigil's shutdown BYEs every call; give the caller's sipp time to count them.
for _ in $(seq 30); do kill -0 "$UAC" 2>/dev/null || break; sleep 1; done
kill -TERM "$UAC" 2>/dev/null || true
wait "$UAC" 2>/dev/null || true

SUMMARY=$(grep 'session refreshes' "$WORK/vigil.log" | tail -1 | sed 's/.*summary=//')
RSS_AVG=$((RSS_SUM / SAMPLES))
CPU_PCT=$(awk -v c="$((C1 - C0))" -v hz="$HZ" -v t0="$T0" -v t1="$T1" 'BEGIN { printf "%.1f", 100 * c / hz / (t1 - t0) }')
PER_CALL=$(awk -v a="$RSS_AVG" -v i="$RSS_IDLE" -v n="$CALLS" 'BEGIN { printf "%.2f", (a - i) / n }')
UAC_OK=$(grep -a 'Successful call' "$WORK/uac.out" | tail -1 | awk '{print $(NF)}')
UAC_FAIL=$(grep -a 'Failed call' "$WORK/uac.out" | tail -1 | awk '{print $(NF)}')
CDRS=$(wc -l < "$WORK/cdr.jsonl")

echo
echo "calls set up:       $CALLS (CDRs written: $CDRS, caller side ok=$UAC_OK failed=$UAC_FAIL)"
echo "rss idle:           ${RSS_IDLE} kB"
echo "rss holding:        avg ${RSS_AVG} kB, max ${RSS_MAX} kB"
echo "rss per call:       ${PER_CALL} kB"
echo "cpu holding:        ${CPU_PCT} % of one core"
echo "refreshes per s:    ${RPS}"
echo "refresh summary:    ${SUMMARY}"
echo "shutdown:           ${STOP_S} s from SIGTERM to exit, every call BYEd (caller side ok=${UAC_OK} of ${CALLS})"
