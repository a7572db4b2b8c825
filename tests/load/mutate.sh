#!/usr/bin/env bash
#
# tests/load/mutate.sh - 1,000,000 mutated datagrams while calls run (issue 8,
# hardening): zero crashes, calls in progress unaffected.
#
#   sipp UAC  NET.2:5061 --calls--> Vigil NET.1:5060 --calls--> sipp UAS NET.3:5080
#   mutate_flood NET.4 --mutated datagrams--> Vigil NET.1:5060
#
# NET is a loopback /24 of its own (default 127.0.81), so the run does not
# collide with other benchmarks on 127.0.0.1. Both NET.2 (trunk "pbx") and
# NET.4 (trunk "fuzz") are admitted, so mutated requests reach the call
# workers instead of being answered 403 at the door; "fuzz" has no route, so
# a mutated INVITE that is still valid gets 404 (CDR "no-route") and never
# reaches the sipp UAS. Session timers are short (ttl SE s, refreshed every
# SE/3 s, allowed by session_timer.allow_short_intervals) so the calls
# refresh during the flood: the caller (tests/scenarios/uac_refresher.xml)
# refreshes its leg with UPDATE every REFRESH_MS ms, five times, then hangs
# up; Vigil refreshes the callee (tests/scenarios/uas_refresh.xml).
#
# Sequence: start Vigil, the UAS and the UAC (CPS calls/s); after WARMUP s,
# with calls up and refreshing, core/examples/mutate_flood sends COUNT mutated
# datagrams (see tests/support/mutate.rs for the mutations) at RATE/s; then
# the UAC stops creating calls and lets its calls finish, the UAS stops,
# Vigil is left SETTLE s for the flood's transactions to expire, and is
# stopped with SIGTERM.
#
# Checks (the script exits 1 if any fails):
#   - every datagram was sent, and Vigil was alive during and after the flood
#   - no "panicked" in Vigil's log
#   - sipp UAC exited 0 with 0 failed calls; sipp UAS with 0 failed calls
#   - CDRs of trunk "pbx" == the UAC's successful calls, all "caller-bye"
#   - vigil_calls_active is 0 once the calls ended (no call left behind)
#   - Vigil exited 0 within 10 s of SIGTERM
# Figures: datagrams and bytes sent and the rate achieved, mutations by kind,
# Vigil's answers by class, its datagram-drop counters (/metrics), the
# kernel's UDP receive-buffer drops, Vigil's RSS before/after/settled and its
# CPU time per datagram; and a block to paste into BENCHMARKS.md.
#
# Usage: tests/load/mutate.sh [options]   (from anywhere)
#   -n, --count N         datagrams                            [COUNT, default 1000000]
#   -r, --rate R          datagrams/s; 0 = as fast as possible [RATE, default 20000]
#   -c, --cps C           calls/s of the sipp UAC              [CPS, default 50]
#       --seed S          mutate_flood's PRNG seed             [SEED, default 1]
#       --se S            session interval, s (>= 3)           [SE, default 6]
#       --refresh-ms MS   caller's refresh period; 5 refreshes per call
#                                                              [REFRESH_MS, default 2000]
#       --warmup S        calls before the flood starts, s     [WARMUP, default 12]
#       --settle S        idle time after the calls, s         [SETTLE, default 35]
#       --net A.B.C       loopback /24 to use                  [NET, default 127.0.81]
#       --no-build        do not run cargo build
#       --keep            keep the work dir (logs, CDRs, sipp files) [KEEP=1]
#   -h, --help
# Environment only:
#   VIGIL_BIN    Vigil binary (default target/release/vigil, built by this script)
#   MUTATE_BIN   the flood tool (default target/release/examples/mutate_flood)
#   SIPP         sipp binary (default: sipp in PATH)
#
# If Vigil dies, the last 4,096 datagrams sent are kept in the work dir
# (last-datagrams/INDEX-SEED+MUTATIONS.sip; the work dir is then kept) and any
# one can be rebuilt with:
#   target/release/examples/mutate_flood --seed S --local NET.4:0 \
#       --target NET.1:5060 --dump INDEX --out FILE

set -euo pipefail

# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCENARIOS="$REPO_ROOT/tests/scenarios"

COUNT="${COUNT:-1000000}"
RATE="${RATE:-20000}"
CPS="${CPS:-50}"
SEED="${SEED:-1}"
SE="${SE:-6}"
REFRESH_MS="${REFRESH_MS:-2000}"
WARMUP="${WARMUP:-12}"
SETTLE="${SETTLE:-35}"
NET="${NET:-127.0.81}"
KEEP="${KEEP:-0}"
BUILD=1
VIGIL_BIN_SET="${VIGIL_BIN:+1}"
VIGIL_BIN="${VIGIL_BIN:-target/release/vigil}"
MUTATE_BIN="${MUTATE_BIN:-target/release/examples/mutate_flood}"
SIPP="${SIPP:-sipp}"

readonly VIGIL_PORT=5060 UAC_PORT=5061 UAS_PORT=5080 METRICS_PORT=9060
readonly UAC_MEDIA_PORT=46100 UAS_MEDIA_PORT=46110
readonly SIPP_BUFF=4194304
readonly KEEP_LAST=4096

usage() {
	sed -n '3,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
	echo "mutate.sh: error: $*" >&2
	exit 2
}

log() {
	echo "# $*" >&2
}

parse_args() {
	while (($#)); do
		case "$1" in
		-n | --count) COUNT="${2:?--count needs a value}"; shift 2 ;;
		-r | --rate) RATE="${2:?--rate needs a value}"; shift 2 ;;
		-c | --cps) CPS="${2:?--cps needs a value}"; shift 2 ;;
		--seed) SEED="${2:?--seed needs a value}"; shift 2 ;;
		--se) SE="${2:?--se needs a value}"; shift 2 ;;
		--refresh-ms) REFRESH_MS="${2:?--refresh-ms needs a value}"; shift 2 ;;
		--warmup) WARMUP="${2:?--warmup needs a value}"; shift 2 ;;
		--settle) SETTLE="${2:?--settle needs a value}"; shift 2 ;;
		--net) NET="${2:?--net needs a value}"; shift 2 ;;
		--no-build) BUILD=0; shift ;;
		--keep) KEEP=1; shift ;;
		-h | --help) usage; exit 0 ;;
		*) die "unknown option '$1' (try --help)" ;;
		esac
	done
	local v
	for v in COUNT CPS SEED WARMUP SETTLE REFRESH_MS; do
		[[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
	done
	[[ "$RATE" =~ ^[0-9]+$ ]] || die "--rate must be an integer (0: as fast as possible)"
	[[ "$SE" =~ ^[0-9]+$ ]] && ((SE >= 3)) || die "--se must be an integer >= 3"
	((COUNT > 0 && CPS > 0)) || die "--count and --cps must be > 0"
	# The caller refreshes every REFRESH_MS; Vigil's A-leg expiry is SE minus
	# a third of it: refreshes must come well before.
	((REFRESH_MS * 3 <= SE * 2000)) || die "--refresh-ms must be <= 2/3 of --se"
	[[ "$NET" =~ ^127\.[0-9]+\.[0-9]+$ ]] || die "--net must be a loopback /24 like 127.0.81"
}

# ---------------------------------------------------------------------------
# Processes: everything started is recorded in PIDS and stopped on exit.
# ---------------------------------------------------------------------------
PIDS=()
WORK=""
FAILED_CHECKS=()
KEEP_WORK=0

alive() {
	kill -0 "$1" 2>/dev/null
}

# Stops $1 (SIGTERM, up to $2 s, then SIGKILL) and reaps it.
stop_pid() {
	local pid="$1" grace="${2:-10}" i
	if alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < grace * 10; i++)); do
			alive "$pid" || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
	forget_pid "$pid"
}

forget_pid() {
	local keep=() p
	for p in "${PIDS[@]+"${PIDS[@]}"}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
	PIDS=("${keep[@]+"${keep[@]}"}")
}

cleanup() {
	local rc=$? p
	trap - EXIT INT TERM
	for p in "${PIDS[@]+"${PIDS[@]}"}"; do
		stop_pid "$p" 3
	done
	if [[ -n "$WORK" && -d "$WORK" ]]; then
		if [[ "$KEEP" == 1 || "$KEEP_WORK" == 1 ]]; then
			log "work dir kept: $WORK"
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}

# ---------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------

# "Key:  N kB" of /proc/$1/status (0 if the process is gone).
status_kb() {
	awk -v k="$2:" '$1 == k { print $2; found = 1; exit } END { if (!found) print 0 }' \
		"/proc/$1/status" 2>/dev/null || echo 0
}

# utime+stime of $1, clock ticks.
cpu_ticks() {
	local stat rest f
	stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
	rest="${stat##*) }"
	read -r -a f <<<"$rest"
	echo $((f[11] + f[12]))
}

# Scrapes Vigil's /metrics into $1 (empty file if it does not answer).
scrape() {
	curl -s --max-time 5 "http://$VIGIL_IP:$METRICS_PORT/metrics" >"$1" 2>/dev/null || : >"$1"
}

# The value of series $2 (exactly as exposed, labels included) in scrape $1.
metric() {
	awk -v name="$2" '$1 == name { v = $2 } END { printf "%d\n", (v == "" ? 0 : v) }' "$1"
}

# Kernel UDP counter $1 (RcvbufErrors, InErrors, ...) from /proc/net/snmp.
udp_counter() {
	awk -v name="$1" '$1 == "Udp:" { if (!hdr) { for (i = 2; i <= NF; i++) col[$i] = i; hdr = 1 } else { print $col[name]; exit } }' /proc/net/snmp
}

udp_bound() {
	[[ -n "$(ss -Hlun "src $1:$2" 2>/dev/null)" ]]
}

wait_bound() {
	local ip="$1" port="$2" pid="$3" name="$4" logf="$5" i
	for ((i = 0; i < 150; i++)); do
		alive "$pid" || {
			tail -n 20 "$logf" >&2 || true
			die "$name exited during start-up (log: $logf)"
		}
		udp_bound "$ip" "$port" && return 0
		sleep 0.1
	done
	die "$name did not bind udp:$ip:$port within 15 s (log: $logf)"
}

# Cumulative value of a row of sipp's final screen dump.
screen_counter() {
	awk -F'|' -v name="$2" '
		{ key = $1; gsub(/^ +| +$/, "", key) }
		key == name { v = $3; gsub(/[^0-9]/, "", v); last = v }
		END { print (last == "" ? 0 : last) }' "$1" 2>/dev/null || echo 0
}

# Column $2 of the last row of sipp's -trace_stat CSV $1.
stat_last() {
	awk -F';' -v name="$2" '
		NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) col = i; next }
		col { v = $col }
		END { print (v == "" ? 0 : v) }' "$1" 2>/dev/null || echo 0
}

# Value of key $2 in mutate_flood's --stats-file $1.
flood_stat() {
	awk -v k="$2" '$1 == k { $1 = ""; sub(/^ /, ""); print; found = 1 } END { if (!found) print 0 }' "$1"
}

check() {
	local ok="$1" what="$2"
	if [[ "$ok" == 1 ]]; then
		printf '  PASS  %s\n' "$what"
	else
		printf '  FAIL  %s\n' "$what"
		FAILED_CHECKS+=("$what")
	fi
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
main() {
	parse_args "$@"
	VIGIL_IP="$NET.1" UAC_IP="$NET.2" UAS_IP="$NET.3" FUZZ_IP="$NET.4"
	local bin
	for bin in VIGIL_BIN MUTATE_BIN; do
		if [[ "${!bin}" != /* ]]; then
			if [[ -e "$PWD/${!bin}" ]]; then
				printf -v "$bin" '%s' "$PWD/${!bin}"
			else
				printf -v "$bin" '%s' "$REPO_ROOT/${!bin}"
			fi
		fi
	done
	cd "$REPO_ROOT"
	command -v "$SIPP" >/dev/null || die "sipp not found (apt-get install sip-tester)"
	command -v ss >/dev/null || die "ss not found (iproute2)"
	command -v curl >/dev/null || die "curl not found"
	if ((BUILD)); then
		log "building (cargo build --release -p vigil-core ...)"
		if [[ -n "$VIGIL_BIN_SET" ]]; then
			cargo build --release -q -p vigil-core --example mutate_flood
		else
			cargo build --release -q -p vigil-core --bin vigil --example mutate_flood
		fi
	fi
	[[ -x "$VIGIL_BIN" ]] || die "Vigil binary not found: $VIGIL_BIN"
	[[ -x "$MUTATE_BIN" ]] || die "mutate_flood not found: $MUTATE_BIN (cargo build --release -p vigil-core --example mutate_flood)"
	local p
	for p in "$VIGIL_IP:$VIGIL_PORT" "$UAC_IP:$UAC_PORT" "$UAS_IP:$UAS_PORT"; do
		udp_bound "${p%:*}" "${p##*:}" && die "udp $p is in use: another run on --net $NET?"
	done

	WORK="$(mktemp -d "${TMPDIR:-/tmp}/vigil-mutate.XXXXXX")"
	trap cleanup EXIT
	trap 'log "interrupted: stopping everything we started"; exit 130' INT
	trap 'log "terminated: stopping everything we started"; exit 143' TERM
	cd "$WORK"

	local interval=$((SE / 3))
	cat >"$WORK/vigil.yaml" <<-EOF
		listen: ["udp:$VIGIL_IP:$VIGIL_PORT"]
		trunks:
		  - name: pbx
		    inbound: { from: ["$UAC_IP/32"] }
		    route_to: carrier
		  - name: fuzz                 # the mutation source: admitted, no route
		    inbound: { from: ["$FUZZ_IP/32"] }
		  - name: carrier
		    outbound: { to: "$UAS_IP:$UAS_PORT" }
		routes: []
		cdr: { path: "$WORK/cdr.jsonl" }
		log: { level: info, format: text }
		metrics: { listen: "$VIGIL_IP:$METRICS_PORT" }
		session_timer: { ttl: $SE, min_se: 2, update_segment: 3, allow_short_intervals: true }
	EOF

	local load
	COMMIT="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
	[[ -z "$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | head -n1)" ]] || COMMIT="$COMMIT (dirty)"
	load="$(cut -d' ' -f1-3 /proc/loadavg)"
	LOAD_AT_START="$load"
	echo "== Vigil mutated-datagram benchmark  $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
	echo "machine: nproc=$(nproc) cpu=\"$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)\" kernel=$(uname -sr)  load=$load"
	echo "vigil:   $(timeout 5 "$VIGIL_BIN" --version 2>/dev/null | head -n1 || echo unknown) ($VIGIL_BIN) commit=$COMMIT"
	echo "sipp:    $("$SIPP" -v 2>&1 | grep -m1 -o 'SIPp v[^ ]*' | sed 's/\.$//' || true)"
	echo "params:  count=$COUNT rate=$([[ "$RATE" == 0 ]] && echo max || echo "$RATE/s") seed=$SEED cps=$CPS session=${SE}s (Vigil refreshes every ${interval}s, caller every ${REFRESH_MS}ms x5) warmup=${WARMUP}s settle=${SETTLE}s net=$NET.0/24"
	echo

	# Vigil
	"$VIGIL_BIN" run --config "$WORK/vigil.yaml" >"$WORK/vigil.log" 2>&1 &
	VIGIL_PID=$!
	PIDS+=("$VIGIL_PID")
	wait_bound "$VIGIL_IP" "$VIGIL_PORT" "$VIGIL_PID" vigil "$WORK/vigil.log"
	sleep 0.5
	RSS_START="$(status_kb "$VIGIL_PID" VmRSS)"

	# Callee, then caller.
	"$SIPP" -sf "$SCENARIOS/uas_refresh.xml" -set se "$SE" -i "$UAS_IP" -p "$UAS_PORT" -t u1 \
		-mp "$UAS_MEDIA_PORT" -buff_size "$SIPP_BUFF" -nostdin \
		-trace_err -error_file "$WORK/uas-errors.log" -max_log_size 20000000 \
		-trace_stat -stf "$WORK/uas-stat.csv" -fd 1 \
		-trace_screen -screen_file "$WORK/uas-screen.log" >"$WORK/uas.out" 2>&1 &
	UAS_PID=$!
	PIDS+=("$UAS_PID")
	wait_bound "$UAS_IP" "$UAS_PORT" "$UAS_PID" "sipp UAS" "$WORK/uas.out"

	# -l: sipp's default cap on open calls is 3 x rate x -d, and -d here is
	# the refresh period, not the call's length (5 refreshes).
	"$SIPP" "$VIGIL_IP:$VIGIL_PORT" -sf "$SCENARIOS/uac_refresher.xml" -set se "$SE" -d "$REFRESH_MS" \
		-s 0049301234 -i "$UAC_IP" -p "$UAC_PORT" -t u1 -mp "$UAC_MEDIA_PORT" -buff_size "$SIPP_BUFF" \
		-r "$CPS" -l "$((CPS * (REFRESH_MS * 5 / 1000 + 10)))" -m 100000000 -nostdin \
		-trace_err -error_file "$WORK/uac-errors.log" -max_log_size 20000000 \
		-trace_stat -stf "$WORK/uac-stat.csv" -fd 1 \
		-trace_screen -screen_file "$WORK/uac-screen.log" >"$WORK/uac.out" 2>&1 &
	UAC_PID=$!
	PIDS+=("$UAC_PID")

	log "calls at $CPS/s for ${WARMUP}s before the flood"
	sleep "$WARMUP"
	alive "$UAC_PID" || { KEEP_WORK=1; tail -n 20 "$WORK/uac.out" >&2; die "sipp UAC exited before the flood"; }

	# Before the flood.
	scrape "$WORK/metrics-before.txt"
	RSS_BEFORE="$(status_kb "$VIGIL_PID" VmRSS)"
	CPU_BEFORE="$(cpu_ticks "$VIGIL_PID")"
	RCVBUF_BEFORE="$(udp_counter RcvbufErrors)"
	INERR_BEFORE="$(udp_counter InErrors)"
	CALLS_UP_BEFORE="$(metric "$WORK/metrics-before.txt" vigil_calls_active)"

	# The flood.
	local rate_args=()
	FLOOD_RC=0
	((RATE == 0)) || rate_args=(--rate "$RATE")
	log "flood: $COUNT mutated datagrams from $FUZZ_IP ($CALLS_UP_BEFORE calls up)"
	T0="$(date +%s.%N)"
	"$MUTATE_BIN" --target "$VIGIL_IP:$VIGIL_PORT" --local "$FUZZ_IP:0" --count "$COUNT" \
		--seed "$SEED" "${rate_args[@]}" --watch-pid "$VIGIL_PID" \
		--keep-last "$KEEP_LAST" --keep-dir "$WORK/last-datagrams" \
		--stats-file "$WORK/flood.stats" >"$WORK/flood.out" &
	FLOOD_PID=$!
	PIDS+=("$FLOOD_PID")
	wait "$FLOOD_PID" || FLOOD_RC=$?
	forget_pid "$FLOOD_PID"
	T1="$(date +%s.%N)"

	# Right after the flood.
	VIGIL_ALIVE_AFTER=0
	alive "$VIGIL_PID" && VIGIL_ALIVE_AFTER=1
	scrape "$WORK/metrics-after.txt"
	RSS_AFTER="$(status_kb "$VIGIL_PID" VmRSS)"
	HWM_AFTER="$(status_kb "$VIGIL_PID" VmHWM)"
	CPU_AFTER="$(cpu_ticks "$VIGIL_PID")"
	RCVBUF_AFTER="$(udp_counter RcvbufErrors)"
	INERR_AFTER="$(udp_counter InErrors)"
	CALLS_UP_AFTER="$(metric "$WORK/metrics-after.txt" vigil_calls_active)"
	[[ -s "$WORK/flood.stats" ]] || : >"$WORK/flood.stats"
	if ((!VIGIL_ALIVE_AFTER)); then
		KEEP_WORK=1
		log "VIGIL DIED during the flood: log tail below; last datagrams in $WORK/last-datagrams"
		tail -n 30 "$WORK/vigil.log" >&2 || true
	fi

	# The caller stops creating calls and lets its calls end (SIGUSR1 = 'q').
	local i
	UAC_RC=0
	kill -USR1 "$UAC_PID" 2>/dev/null || true
	for ((i = 0; i < (REFRESH_MS * 6 / 1000 + 40) * 10; i++)); do
		alive "$UAC_PID" || break
		sleep 0.1
	done
	if alive "$UAC_PID"; then
		log "sipp UAC did not finish its calls in time: stopped"
		UAC_RC=124
		stop_pid "$UAC_PID" 3
	else
		wait "$UAC_PID" || UAC_RC=$?
		forget_pid "$UAC_PID"
	fi
	# The callee: its calls are over; SIGUSR1 lets it write its last stats.
	kill -USR1 "$UAS_PID" 2>/dev/null || true
	for ((i = 0; i < 60; i++)); do
		alive "$UAS_PID" || break
		sleep 0.1
	done
	stop_pid "$UAS_PID" 3

	# Let the flood's transactions (32 s timers) expire, then look again.
	if alive "$VIGIL_PID" && ((SETTLE > 0)); then
		log "calls over; ${SETTLE}s for the flood's transactions to expire"
		sleep "$SETTLE"
	fi
	scrape "$WORK/metrics-settled.txt"
	VIGIL_ALIVE_SETTLED=0
	alive "$VIGIL_PID" && VIGIL_ALIVE_SETTLED=1
	RSS_SETTLED="$(status_kb "$VIGIL_PID" VmRSS)"
	# The kernel updates VmHWM lazily: take the largest figure seen.
	HWM="$(printf '%s\n' "$(status_kb "$VIGIL_PID" VmHWM)" "$HWM_AFTER" "$RSS_AFTER" "$RSS_SETTLED" | sort -n | tail -n1)"

	# Stop Vigil: SIGTERM, 10 s at most.
	local t
	VIGIL_RC=-1
	t="$(date +%s.%N)"
	if alive "$VIGIL_PID"; then
		kill -TERM "$VIGIL_PID"
		for ((i = 0; i < 100; i++)); do
			alive "$VIGIL_PID" || break
			sleep 0.1
		done
		if alive "$VIGIL_PID"; then
			log "vigil did not stop within 10 s of SIGTERM: killed"
			kill -KILL "$VIGIL_PID" 2>/dev/null || true
			wait "$VIGIL_PID" 2>/dev/null || true
			VIGIL_RC=137
		else
			VIGIL_RC=0
			wait "$VIGIL_PID" || VIGIL_RC=$?
		fi
	else
		VIGIL_RC=0
		wait "$VIGIL_PID" || VIGIL_RC=$?
		VIGIL_RC="dead before SIGTERM (status $VIGIL_RC)"
	fi
	forget_pid "$VIGIL_PID"
	STOP_SECS="$(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"

	report
	if ((${#FAILED_CHECKS[@]})); then
		KEEP_WORK=1
		echo
		echo "mutate.sh: ${#FAILED_CHECKS[@]} check(s) failed (work dir kept: $WORK)"
		exit 1
	fi
}

# Figures and checks, from everything collected above.
report() {
	local W="$WORK" st="$WORK/flood.stats" b="$WORK/metrics-before.txt" a="$WORK/metrics-after.txt"
	local z="$WORK/metrics-settled.txt"
	local sent bytes largest fsecs frate resp stopped hz cpu_s pct us_dgram
	sent="$(flood_stat "$st" sent)"
	bytes="$(flood_stat "$st" bytes)"
	largest="$(flood_stat "$st" largest)"
	fsecs="$(flood_stat "$st" seconds)"
	frate="$(flood_stat "$st" rate)"
	resp="$(flood_stat "$st" responses)"
	stopped="$(flood_stat "$st" stopped_early)"
	hz="$(getconf CLK_TCK)"
	cpu_s="$(awk -v t=$((CPU_AFTER - CPU_BEFORE)) -v hz="$hz" 'BEGIN { printf "%.1f", t / hz }')"
	pct="$(awk -v c="$cpu_s" -v a="$T0" -v b="$T1" 'BEGIN { d = b - a; printf "%.0f", (d > 0 ? 100 * c / d : 0) }')"
	us_dgram="$(awk -v c="$cpu_s" -v n="$sent" 'BEGIN { printf "%.1f", (n > 0 ? c * 1e6 / n : 0) }')"

	local uac_created uac_ok uac_failed uas_created uas_ok uas_failed
	uac_created="$(screen_counter "$W/uac-screen.log" "Total Calls created")"
	uac_ok="$(screen_counter "$W/uac-screen.log" "Successful call")"
	uac_failed="$(screen_counter "$W/uac-screen.log" "Failed call")"
	((uac_created > 0)) || uac_created="$(stat_last "$W/uac-stat.csv" TotalCallCreated)"
	((uac_ok > 0)) || uac_ok="$(stat_last "$W/uac-stat.csv" 'SuccessfulCall(C)')"
	uas_created="$(stat_last "$W/uas-stat.csv" TotalCallCreated)"
	uas_ok="$(stat_last "$W/uas-stat.csv" 'SuccessfulCall(C)')"
	uas_failed=$((uas_created - uas_ok))

	local cdr="$W/cdr.jsonl" cdr_pbx cdr_pbx_bye cdr_fuzz cdr_other fuzz_reasons pbx_reasons
	touch "$cdr"
	cdr_pbx="$(grep -c -F '"trunk_in":"pbx"' "$cdr" || true)"
	cdr_pbx_bye="$(grep -F '"trunk_in":"pbx"' "$cdr" | grep -c -F '"end_reason":"caller-bye"' || true)"
	cdr_fuzz="$(grep -c -F '"trunk_in":"fuzz"' "$cdr" || true)"
	cdr_other=$(($(wc -l <"$cdr") - cdr_pbx - cdr_fuzz))
	pbx_reasons="$(grep -F '"trunk_in":"pbx"' "$cdr" | grep -o '"end_reason":"[^"]*"' | cut -d'"' -f4 |
		sort | uniq -c | awk '{ printf "%s%s %s", sep, $2, $1; sep = ", " }')"
	fuzz_reasons="$(grep -F '"trunk_in":"fuzz"' "$cdr" | grep -o '"end_reason":"[^"]*"' | cut -d'"' -f4 |
		sort | uniq -c | awk '{ printf "%s%s %s", sep, $2, $1; sep = ", " }')"
	local panics
	panics="$(grep -a -c -i 'panicked' "$W/vigil.log" || true)"

	# Metric deltas over the flood: every series of a family, by its label.
	deltas() {
		awk -v fam="$1" -v before="$b" -v nonzero="${2:-0}" '
			index($1, fam "{") == 1 {
				lab = $1; sub(/^[^"]*"/, "", lab); sub(/".*$/, "", lab)
				if (FILENAME == before) { was[lab] = $2 } else { now[lab] = $2; order[++n] = lab }
			}
			END {
				for (i = 1; i <= n; i++) {
					d = now[order[i]] - was[order[i]]
					if (nonzero && d == 0) continue
					printf "%s%s %d", sep, order[i], d; sep = ", "
				}
			}' "$b" "$a"
	}
	delta() { echo $(($(metric "$a" "$1") - $(metric "$b" "$1"))); }
	local drops shed
	drops="$(deltas vigil_datagrams_dropped_total)"
	shed="$(deltas vigil_calls_shed_total 1)"
	shed="calls: ${shed:-none}; other requests: $(deltas vigil_requests_shed_total 1)"
	[[ "$shed" != *"requests: " ]] || shed+="none"
	local refreshes
	refreshes="sent $(delta vigil_refreshes_sent_total), answered $(delta vigil_refreshes_answered_total), failed $(($(delta 'vigil_refreshes_failed_total{cause="timeout"}') + $(delta 'vigil_refreshes_failed_total{cause="status"}') + $(delta 'vigil_refreshes_failed_total{cause="session_expired"}')))"
	local timeouts
	timeouts="$(($(metric "$z" 'vigil_session_timeouts_total{cause="timeout"}') + $(metric "$z" 'vigil_session_timeouts_total{cause="status"}') + $(metric "$z" 'vigil_session_timeouts_total{cause="expired"}')))"
	local kdrops=$((RCVBUF_AFTER - RCVBUF_BEFORE)) kinerr=$((INERR_AFTER - INERR_BEFORE))

	echo
	echo "== mutate_flood"
	sed 's/^/  /' "$W/flood.out"
	echo
	echo "== Checks"
	check "$([[ "$sent" == "$COUNT" && "$stopped" == no && "$FLOOD_RC" == 0 ]] && echo 1 || echo 0)" \
		"all $COUNT datagrams sent (sent $sent, mutate_flood exit $FLOOD_RC, stopped early: $stopped)"
	check "$VIGIL_ALIVE_AFTER" "vigil (pid $VIGIL_PID) alive right after the flood"
	check "$VIGIL_ALIVE_SETTLED" "vigil alive after the calls ended and ${SETTLE}s more"
	check "$([[ "$panics" == 0 ]] && echo 1 || echo 0)" "no 'panicked' in vigil's log ($panics)"
	check "$([[ "$UAC_RC" == 0 && "$uac_failed" == 0 && "$uac_ok" -gt 0 && "$uac_ok" == "$uac_created" ]] && echo 1 || echo 0)" \
		"sipp UAC: exit $UAC_RC, $uac_ok/$uac_created calls successful, $uac_failed failed"
	check "$([[ "$uas_failed" == 0 && "$uas_ok" -gt 0 ]] && echo 1 || echo 0)" \
		"sipp UAS: $uas_ok/$uas_created calls successful, $uas_failed failed or unfinished"
	check "$([[ "$cdr_pbx" == "$uac_ok" && "$cdr_pbx_bye" == "$cdr_pbx" ]] && echo 1 || echo 0)" \
		"CDRs of trunk pbx: $cdr_pbx for $uac_ok successful calls, end_reason: ${pbx_reasons:-none}"
	check "$([[ "$cdr_other" == 0 ]] && echo 1 || echo 0)" "no CDR from another trunk ($cdr_other)"
	check "$([[ "$VIGIL_ALIVE_SETTLED" == 1 && "$(metric "$z" vigil_calls_active)" == 0 ]] && echo 1 || echo 0)" \
		"no call left behind: vigil_calls_active $(metric "$z" vigil_calls_active), vigil_legs_active $(metric "$z" vigil_legs_active)"
	check "$([[ "$VIGIL_RC" == 0 ]] && echo 1 || echo 0)" "vigil exited 0 on SIGTERM (status $VIGIL_RC, ${STOP_SECS}s)"

	local mutations
	mutations="$(awk '$1 ~ /^mutation\./ { sub(/^mutation\./, "", $1); printf "%s%s %s", sep, $1, $2; sep = ", " }' "$st")"
	echo
	echo "== Figures (for BENCHMARKS.md)"
	echo "Mutated datagrams while calls run: \`tests/load/mutate.sh --count $COUNT --rate $RATE --cps $CPS --seed $SEED\`"
	echo "($(date -u '+%Y-%m-%d'), nproc=$(nproc), commit $COMMIT, load at start $(cut -d' ' -f1 <<<"$LOAD_AT_START"))"
	echo
	echo "| figure | value |"
	echo "|---|---|"
	echo "| datagrams sent | $sent, $(awk -v b="$bytes" 'BEGIN { printf "%.0f MB", b / 1e6 }') (largest $largest B), in ${fsecs}s: $frate/s (asked: $([[ "$RATE" == 0 ]] && echo 'as fast as possible' || echo "$RATE/s")), seed $SEED |"
	echo "| mutations (datagrams carrying each; up to 3 per datagram) | $mutations |"
	echo "| answers Vigil sent the flood | $resp: 1xx $(flood_stat "$st" responses.1xx), 2xx $(flood_stat "$st" responses.2xx), 4xx $(flood_stat "$st" responses.4xx), 5xx $(flood_stat "$st" responses.5xx), 6xx $(flood_stat "$st" responses.6xx); $(flood_stat "$st" acks_sent) ACKs sent back |"
	echo "| dropped by Vigil during the flood (vigil_datagrams_dropped_total) | $drops |"
	echo "| shed with 503 during the flood (vigil_calls_shed_total, vigil_requests_shed_total) | $shed |"
	echo "| kernel UDP drops during the flood (system-wide RcvbufErrors / InErrors) | $kdrops / $kinerr |"
	echo "| calls up when the flood started / ended | $CALLS_UP_BEFORE / $CALLS_UP_AFTER |"
	echo "| live transactions (vigil_transactions) after the flood / settled | $(metric "$a" vigil_transactions) / $(metric "$z" vigil_transactions) |"
	echo "| Vigil's session refreshes during the flood | $refreshes; session timeouts (whole run): $timeouts |"
	echo "| sipp calls (${REFRESH_MS}ms x5 refreshes, ${SE}s sessions, $CPS/s) | UAC $uac_ok/$uac_created ok, $uac_failed failed; UAS $uas_ok/$uas_created ok |"
	echo "| CDRs | pbx $cdr_pbx (${pbx_reasons:-none}); fuzz $cdr_fuzz (${fuzz_reasons:-none}) |"
	echo "| crashes / panics | $([[ "$VIGIL_ALIVE_SETTLED" == 1 ]] && echo 0 || echo 1) / $panics |"
	echo "| Vigil RSS (MiB): start / before flood / after flood / settled (peak) | $(mib "$RSS_START") / $(mib "$RSS_BEFORE") / $(mib "$RSS_AFTER") / $(mib "$RSS_SETTLED") ($(mib "$HWM")) |"
	echo "| Vigil CPU during the flood | ${cpu_s}s = ${pct}% of one core, ${us_dgram} µs per datagram (calls included) |"
	echo "| SIGTERM | exit $VIGIL_RC in ${STOP_SECS}s |"
	echo "| result | $([[ ${#FAILED_CHECKS[@]} == 0 ]] && echo PASS || echo "FAIL: ${FAILED_CHECKS[*]}") |"
}

mib() {
	awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'
}

main "$@"
