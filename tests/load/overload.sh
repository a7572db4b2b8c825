#!/usr/bin/env bash
#
# tests/load/overload.sh - overload benchmark (issue 8): a 3x call spike and an
# INVITE flood against Vigil.
#
#   sipp UAC (127.0.0.1:5090) --> Vigil (udp:127.0.0.1:5060) --> sipp UAS (127.0.0.1:5080)
#   sipp flooder (127.0.0.2:5091) -^                  (phase B only)
#
# Why Vigil's CPU is constrained: on a 2-core machine sipp tops out around
# 6,000-7,000 calls/s, about Vigil's own capacity, so sipp cannot offer three
# times what an unconstrained Vigil can take. Phase A therefore gives Vigil a
# fixed share of one core (CPU_PCT, default 20 %) in a cgroup of its own (cgroup
# v1 `cpu` controller: cpu.cfs_quota_us / cpu.cfs_period_us, or cgroup v2
# cpu.max); every Vigil thread is born in it. Where no cgroup can be created,
# Vigil is pinned with `taskset` to the last CPU and the sipps to the others:
# that limits Vigil to one core, not to a share of it, so sipp may then fail to
# offer 3x (the run says so). The header names the method used. Phase B (the
# flood) runs Vigil unconstrained, as deployed.
#
# Phase A "spike"
#   A1 capacity  C: steps of STEP_DURATION s at rising rates against a fresh,
#                constrained Vigil without limits, each call INVITE/180/200/ACK,
#                held HOLD_MS, BYE/200 (tests/load/uac.xml, uas.xml): the method
#                and pass criterion of tests/load/cps.sh: >= PASS_RATIO (99.9 %)
#                of the calls complete on both sides and sipp really offered the
#                rate (>= 95 %). Rates go up by RATE_STEP until the first
#                failure, then the midpoint between the last pass and that
#                failure is tried once (rounded to 50 calls/s). C = the highest
#                passing rate. --capacity C skips the search.
#   A2 spike     a fresh constrained Vigil with `limits: { max_cps: MAX_CPS }`,
#                MAX_CPS = C by default: an operator sets max_cps to the rate the
#                box is known to sustain, so that what comes on top is refused
#                (503 + Retry-After, no state) instead of slowing every call.
#                Refusing is not free (the INVITE is parsed, a 503 sent, its ACK
#                parsed): at 3 x C the refusals need CPU that a box running at
#                C does not have, so --max-cps below C shows how much headroom
#                they need. sipp offers 3 x C calls/s for SPIKE_DURATION s with
#                tests/load/uac_spike.xml, where a call either completes
#                (200/ACK/hold/BYE) or is refused (503 with a Retry-After, then
#                ACK); both are normal outcomes and are counted apart.
#   A3 recovery  right after A2, on the same Vigil: MAX_CPS (= C by default)
#                calls/s for RECOVERY_DURATION s; every call must complete,
#                none get a 503.
#
# Phase B "flood"
#   A fresh, unconstrained Vigil with `limits: { per_source_rps: FLOOD_RPS,
#   per_source_cooldown: FLOOD_COOLDOWN }` and two trunks: `loadgen` (127.0.0.1)
#   runs TRUNK_RATE calls/s for TRUNK_DURATION s through Vigil to the UAS, and
#   `looping-pbx` (127.0.0.2) - a PBX stuck in a loop - starts FLOOD_DELAY s in
#   and sends FLOOD_INVITES INVITEs as fast as sipp can (tests/load/uac_flood.xml,
#   no retransmissions). The looping PBX dials a number nobody routes, so what
#   gets through is answered 404 by Vigil itself: its share must not mix into
#   the callee's figures, and a cut-off source could not ACK forwarded calls
#   anyway. The cool-down outlasts the flood.
#
# Figures
#   offered          calls sipp created (A: calls/s x duration)
#   offered_rate     calls/s sipp really created (from its 1 s stats rows);
#                    a step or phase fails if it is below 95 % of the asked rate.
#                    sipp runs with -l = all its calls, so a slow switch does not
#                    make it offer less (its default caps open calls at 3 x rate)
#   refused          calls that got a 503 with a Retry-After (sipp's count)
#   admitted         offered - refused: calls Vigil did not refuse
#   completed        admitted calls that completed (BYE answered 200)
#   completed_pct    completed / admitted; must be >= PASS_RATIO
#   failed           sipp's failed calls (neither completed nor refused cleanly)
#   uas_fail         callee legs the UAS did not complete (as in cps.sh)
#   cdr              CDR lines Vigil wrote (one per call it started), and their
#                    end_reason counts
#   shed{reason}     the change of vigil_calls_shed_total{reason} (from
#                    metrics.listen): 503s Vigil sent; more than `refused` means
#                    some 503s answered retransmitted INVITEs
#   expected_admit   max_cps x (seconds sipp offered + 1): what max_cps lets in
#                    (governor's GCRA: a bucket one second deep that starts full);
#                    admitted + shed{overload} must be within 10 % of it: a call
#                    max_cps let in may still be shed by Vigil's own overload
#                    control (a receive loop reading a backlog for 200 ms, or a
#                    worker queue half full), which is how a box that cannot do
#                    C while also refusing 2 x C protects the calls it takes
#   rss_hwm          Vigil's peak RSS (VmHWM, /proc/PID/status) over the phase;
#                    must stay under RSS_LIMIT_MB, which defaults to twice the
#                    peak of the capacity step at C (refused calls keep no
#                    state, so the spike should cost what C costs), at least
#                    64 MiB; --rss-limit-mb states another bound
#   cpu_pct          Vigil's utime+stime (sampled once a second) over the
#                    seconds sipp offered calls / that wall time, in % of one
#                    core (capped at CPU_PCT by the cgroup)
#   throttled_s      time the cgroup was throttled then (cpu.stat), when known
#   flood_sent       INVITEs the flooder sent, and at what rate
#   flood_passed     flood INVITEs Vigil let through (its no-route CDRs); must
#                    be <= FLOOD_RPS x 1.2 + 10: about the first second's worth.
#                    per_source_rps counts every request, so the ACKs of the
#                    first 404s, sent while the flood goes on, take part of it
#   flood_answered   404s the flooder received (<= flood_passed)
#   flood_dropped    the change of vigil_datagrams_dropped_total{reason="flood"};
#                    must be >= flood_sent - flood_passed (the ACKs of answered
#                    INVITEs, sent after the cut-off, are dropped too)
#   trunk            the other trunk's calls: completed / offered >= PASS_RATIO
#
# Usage: tests/load/overload.sh [options]   (run from anywhere; paths are
#                                            relative to the repository root)
#   -c, --capacity C        skip the capacity search, use C calls/s     [CAPACITY]
#       --start-rate R      first rate of the capacity search   [START_RATE, 250]
#       --rate-step R       increment of the capacity search     [RATE_STEP, 250]
#       --max-rate R        highest rate the search tries       [MAX_RATE, 3000]
#       --step-duration S   seconds per capacity step         [STEP_DURATION, 20]
#       --cpu-pct P         Vigil's share of one core, %            [CPU_PCT, 20]
#       --cpu-period US     CFS period, µs                   [CPU_PERIOD_US, 10000]
#       --max-cps N         limits.max_cps for the spike       [MAX_CPS, default C]
#       --spike-duration S  seconds of 3 x C                  [SPIKE_DURATION, 30]
#       --recovery-duration S  seconds of max_cps after it  [RECOVERY_DURATION, 10]
#   -H, --hold MS           call hold time, ms                      [HOLD_MS, 1000]
#       --rss-limit-mb N    bound on Vigil's peak RSS in the spike  [RSS_LIMIT_MB]
#       --flood-invites N   INVITEs of the flood              [FLOOD_INVITES, 50000]
#       --flood-rps N       limits.per_source_rps                [FLOOD_RPS, 500]
#       --flood-cooldown S  limits.per_source_cooldown        [FLOOD_COOLDOWN, 60]
#       --trunk-rate R      the other trunk's calls/s            [TRUNK_RATE, 100]
#       --trunk-duration S  the other trunk's seconds of calls [TRUNK_DURATION, 30]
#       --flood-delay S     seconds into the trunk's calls the flood starts
#                                                                  [FLOOD_DELAY, 5]
#   -p, --pass-ratio X      pass threshold                    [PASS_RATIO, 0.999]
#       --phase LIST        spike | flood | both                  [PHASES, both]
#       --keep              keep the work dir (logs, stats, CDRs)        [KEEP=1]
#   -h, --help
# Environment only:
#   VIGIL_BIN   Vigil binary (default target/release/vigil; build it with
#               `cargo build --release`)
#   SIPP        sipp binary (default: sipp in PATH)
#
# FLOOD_RPS must be above the other trunk's request rate (3 requests per call:
# INVITE, ACK, BYE; 300/s at the default 100 calls/s): per_source_rps counts
# every request of a source, trunks' too (README, `limits:`).
#
# Exit status: 0 when every check passed, 1 when one failed, 2 on a setup error.
# Run it on an otherwise idle machine: the header prints the load average.

set -euo pipefail
# Process bookkeeping shared by the load scripts (descendants, stop_tree, ...).
# shellcheck source=tests/load/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOAD_DIR="$REPO_ROOT/tests/load"

CAPACITY="${CAPACITY:-}"
START_RATE="${START_RATE:-250}"
RATE_STEP="${RATE_STEP:-250}"
MAX_RATE="${MAX_RATE:-3000}"
STEP_DURATION="${STEP_DURATION:-20}"
CPU_PCT="${CPU_PCT:-20}"
CPU_PERIOD_US="${CPU_PERIOD_US:-10000}"
MAX_CPS="${MAX_CPS:-}"
SPIKE_DURATION="${SPIKE_DURATION:-30}"
RECOVERY_DURATION="${RECOVERY_DURATION:-10}"
HOLD_MS="${HOLD_MS:-1000}"
RSS_LIMIT_MB="${RSS_LIMIT_MB:-}"
FLOOD_INVITES="${FLOOD_INVITES:-50000}"
FLOOD_RPS="${FLOOD_RPS:-500}"
FLOOD_COOLDOWN="${FLOOD_COOLDOWN:-60}"
TRUNK_RATE="${TRUNK_RATE:-100}"
TRUNK_DURATION="${TRUNK_DURATION:-30}"
FLOOD_DELAY="${FLOOD_DELAY:-5}"
PASS_RATIO="${PASS_RATIO:-0.999}"
PHASES="${PHASES:-both}"
KEEP="${KEEP:-0}"
VIGIL_BIN="${VIGIL_BIN:-target/release/vigil}"
SIPP="${SIPP:-sipp}"

readonly HOST=127.0.0.1
readonly FLOOD_HOST=127.0.0.2
readonly VIGIL_PORT=5060
readonly UAS_PORT=5080
readonly UAC_PORT=5090
readonly FLOOD_PORT=5091
readonly METRICS_PORT=9461
readonly UAC_MEDIA_PORT=46000
readonly UAS_MEDIA_PORT=46010
readonly FLOOD_MEDIA_PORT=46020
# The number trunk calls dial (any: `loadgen` routes everything to the UAS) and
# the one the looping PBX dials (nobody routes it: Vigil answers 404).
readonly TRUNK_NUMBER=0049301234
readonly FLOOD_NUMBER=7770000
readonly SIPP_BUFF=4194304
readonly SIPP_MAX_LOG=20000000
readonly MIN_RATE_FRACTION=0.95
# A flood INVITE that gets no answer within this long counts as dropped.
readonly FLOOD_RECV_TIMEOUT_MS=5000

usage() {
	sed -n '3,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
	echo "overload.sh: error: $*" >&2
	exit 2
}

log() {
	echo "# $*" >&2
}

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_pos() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }

parse_args() {
	while (($#)); do
		case "$1" in
		-c | --capacity) CAPACITY="${2:?}"; shift 2 ;;
		--start-rate) START_RATE="${2:?}"; shift 2 ;;
		--rate-step) RATE_STEP="${2:?}"; shift 2 ;;
		--max-rate) MAX_RATE="${2:?}"; shift 2 ;;
		--step-duration) STEP_DURATION="${2:?}"; shift 2 ;;
		--cpu-pct) CPU_PCT="${2:?}"; shift 2 ;;
		--cpu-period) CPU_PERIOD_US="${2:?}"; shift 2 ;;
		--max-cps) MAX_CPS="${2:?}"; shift 2 ;;
		--spike-duration) SPIKE_DURATION="${2:?}"; shift 2 ;;
		--recovery-duration) RECOVERY_DURATION="${2:?}"; shift 2 ;;
		-H | --hold) HOLD_MS="${2:?}"; shift 2 ;;
		--rss-limit-mb) RSS_LIMIT_MB="${2:?}"; shift 2 ;;
		--flood-invites) FLOOD_INVITES="${2:?}"; shift 2 ;;
		--flood-rps) FLOOD_RPS="${2:?}"; shift 2 ;;
		--flood-cooldown) FLOOD_COOLDOWN="${2:?}"; shift 2 ;;
		--trunk-rate) TRUNK_RATE="${2:?}"; shift 2 ;;
		--trunk-duration) TRUNK_DURATION="${2:?}"; shift 2 ;;
		--flood-delay) FLOOD_DELAY="${2:?}"; shift 2 ;;
		-p | --pass-ratio) PASS_RATIO="${2:?}"; shift 2 ;;
		--phase) PHASES="${2:?}"; shift 2 ;;
		--keep) KEEP=1; shift ;;
		-h | --help) usage; exit 0 ;;
		*) die "unknown option '$1' (try --help)" ;;
		esac
	done
	case "$PHASES" in
	both) PHASE_LIST=(spike flood) ;;
	spike | flood) PHASE_LIST=("$PHASES") ;;
	*) die "--phase takes spike, flood or both (got '$PHASES')" ;;
	esac
	[[ -z "$CAPACITY" ]] || is_pos "$CAPACITY" || die "--capacity must be a positive integer"
	[[ -z "$MAX_CPS" ]] || is_pos "$MAX_CPS" || die "--max-cps must be a positive integer"
	[[ -z "$RSS_LIMIT_MB" ]] || is_pos "$RSS_LIMIT_MB" || die "--rss-limit-mb must be a positive integer"
	local v
	for v in START_RATE RATE_STEP MAX_RATE STEP_DURATION CPU_PERIOD_US SPIKE_DURATION \
		RECOVERY_DURATION FLOOD_INVITES FLOOD_RPS FLOOD_COOLDOWN TRUNK_RATE TRUNK_DURATION; do
		is_pos "${!v}" || die "$v must be a positive integer (got '${!v}')"
	done
	is_uint "$HOLD_MS" && ((HOLD_MS < 45000)) || die "--hold must be an integer < 45000 (ms)"
	is_uint "$FLOOD_DELAY" || die "--flood-delay must be an integer (s)"
	is_pos "$CPU_PCT" && ((CPU_PCT <= 100 * $(nproc))) || die "--cpu-pct must be in 1..$((100 * $(nproc)))"
	awk -v p="$PASS_RATIO" 'BEGIN { exit !(p > 0 && p <= 1) }' || die "--pass-ratio must be in (0, 1]"
	((FLOOD_RPS > 3 * TRUNK_RATE)) ||
		die "--flood-rps ($FLOOD_RPS) must be above the other trunk's 3 x $TRUNK_RATE requests/s"
	((FLOOD_DELAY < TRUNK_DURATION)) || die "--flood-delay must be below --trunk-duration"
}

# ---------------------------------------------------------------------------
# Process bookkeeping: every process we start is in PIDS and is stopped (with
# its descendants) on exit, whatever the exit path. Nothing else is touched.
# ---------------------------------------------------------------------------
PIDS=()
WORK=""
CGROUP_DIR=""

remove_cgroup() {
	local i
	[[ -n "$CGROUP_DIR" && -d "$CGROUP_DIR" ]] || return 0
	# A cgroup can be removed once its processes are gone.
	for ((i = 0; i < 50; i++)); do
		rmdir "$CGROUP_DIR" 2>/dev/null && break
		sleep 0.1
	done
	[[ -d "$CGROUP_DIR" ]] && log "could not remove cgroup $CGROUP_DIR"
	CGROUP_DIR=""
}

# What cleanup (lib.sh) does besides stopping processes and the work dir.
cleanup_more() {
	remove_cgroup
}

# ---------------------------------------------------------------------------
# Constraining Vigil's CPU
# ---------------------------------------------------------------------------
# CPU_METHOD: cgroup-v1 | cgroup-v2 | taskset. CONSTRAIN: the command prefix
# that starts a process inside the constraint.
setup_constraint() {
	local quota name="vigil-overload-$$"
	quota=$((CPU_PERIOD_US * CPU_PCT / 100))
	CONSTRAIN=()
	if [[ -w /sys/fs/cgroup/cpu && -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]] &&
		mkdir "/sys/fs/cgroup/cpu/$name" 2>/dev/null; then
		CGROUP_DIR="/sys/fs/cgroup/cpu/$name"
		if echo "$CPU_PERIOD_US" >"$CGROUP_DIR/cpu.cfs_period_us" 2>/dev/null &&
			echo "$quota" >"$CGROUP_DIR/cpu.cfs_quota_us" 2>/dev/null; then
			CPU_METHOD="cgroup-v1"
			CPU_DESC="cgroup v1 $CGROUP_DIR: cpu.cfs_quota_us=$quota cpu.cfs_period_us=$CPU_PERIOD_US ($CPU_PCT % of one core)"
			CGROUP_PROCS="$CGROUP_DIR/cgroup.procs"
			CGROUP_STAT="$CGROUP_DIR/cpu.stat"
			return 0
		fi
		remove_cgroup
	fi
	if [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw cpu /sys/fs/cgroup/cgroup.controllers &&
		{ grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control ||
			echo +cpu >/sys/fs/cgroup/cgroup.subtree_control; } 2>/dev/null &&
		mkdir "/sys/fs/cgroup/$name" 2>/dev/null; then
		CGROUP_DIR="/sys/fs/cgroup/$name"
		if echo "$quota $CPU_PERIOD_US" >"$CGROUP_DIR/cpu.max" 2>/dev/null; then
			CPU_METHOD="cgroup-v2"
			CPU_DESC="cgroup v2 $CGROUP_DIR: cpu.max=\"$quota $CPU_PERIOD_US\" ($CPU_PCT % of one core)"
			CGROUP_PROCS="$CGROUP_DIR/cgroup.procs"
			CGROUP_STAT="$CGROUP_DIR/cpu.stat"
			return 0
		fi
		remove_cgroup
	fi
	command -v taskset >/dev/null || die "no writable cgroup and no taskset: cannot constrain Vigil"
	local last=$(($(nproc) - 1))
	((last > 0)) || die "no writable cgroup and a single CPU: cannot constrain Vigil"
	CPU_METHOD="taskset"
	CPU_DESC="taskset: no writable cgroup; Vigil pinned to CPU $last, sipp to CPUs 0-$((last - 1)) (a whole core, not $CPU_PCT %: sipp may not reach 3x)"
	CONSTRAIN=(taskset -c "$last")
	SIPP_PIN=(taskset -c "0-$((last - 1))")
	CGROUP_PROCS=""
	CGROUP_STAT=""
}

# Throttled time of the cgroup so far, in µs (0 when unknown).
throttled_us() {
	[[ -n "${CGROUP_STAT:-}" && -r "$CGROUP_STAT" ]] || { echo 0; return; }
	awk '$1 == "throttled_time" { print int($2 / 1000); f = 1 } $1 == "throttled_usec" { print $2; f = 1 } END { if (!f) print 0 }' "$CGROUP_STAT"
}

# ---------------------------------------------------------------------------
# /proc readers
# ---------------------------------------------------------------------------
cpu_ticks() {
	local stat rest f
	stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
	rest="${stat##*) }"
	read -r -a f <<<"$rest"
	echo $((f[11] + f[12]))
}

status_kb() {
	awk -v k="$2:" '$1 == k { print $2; exit }' "/proc/$1/status" 2>/dev/null || echo 0
}

# ---------------------------------------------------------------------------
# Ports, readiness, metrics
# ---------------------------------------------------------------------------
udp_port_bound() {
	[[ -n "$(ss -Hlun "src $1:$2" 2>/dev/null)" ]]
}

require_port_free() {
	if udp_port_bound "$1" "$2"; then
		die "UDP $1:$2 is already in use ($3 needs it): $(ss -Hlunp "src $1:$2" | tr -s ' ' | head -1)"
	fi
}

# Waits until $3 (pid) has bound UDP $1:$2; $4 = name, $5 = log file.
wait_for_port() {
	local host="$1" port="$2" pid="$3" name="$4" logf="$5" i
	for ((i = 0; i < 150; i++)); do
		alive "$pid" || {
			tail -n 20 "$logf" >&2 || true
			die "$name exited during start-up (log above: $logf)"
		}
		udp_port_bound "$host" "$port" && return 0
		sleep 0.1
	done
	tail -n 20 "$logf" >&2 || true
	die "$name did not bind udp:$host:$port within 15 s (log: $logf)"
}

# GET /metrics from Vigil (bash's /dev/tcp: no curl needed); the body on stdout.
scrape() {
	local out
	out="$(
		exec 3<>"/dev/tcp/$HOST/$METRICS_PORT" || exit 1
		printf 'GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$HOST" >&3
		timeout 5 cat <&3
	)" || return 1
	printf '%s\n' "$out" | tr -d '\r' | sed '1,/^$/d'
}

# Value of one series ($2, e.g. 'vigil_calls_shed_total{reason="max_cps"}') in
# a scrape ($1); 0 if absent.
series() {
	awk -v s="$2" '$1 == s { v = $2 } END { printf "%d\n", v + 0 }' <<<"$1"
}

# ---------------------------------------------------------------------------
# sipp output readers (as in cps.sh)
# ---------------------------------------------------------------------------
stat_last() {
	awk -F';' -v name="$2" '
		NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) col = i; next }
		col { v = $col }
		END { print (v == "" ? 0 : v + 0) }' "$1" 2>/dev/null || echo 0
}

# Seconds from sipp's start until it had created $2 calls (1 s resolution).
creation_seconds() {
	awk -F';' -v want="$2" '
		function epoch(s,   a) { split(s, a, "\t"); return a[3] + 0 }
		NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "StartTime") st = i; if ($i == "CurrentTime") ct = i; if ($i == "TotalCallCreated") tc = i }; next }
		tc && $tc + 0 >= want { printf "%.2f\n", epoch($ct) - epoch($st); exit }' "$1" 2>/dev/null || true
}

# "seconds calls": how long sipp went on creating calls (up to the first 1 s
# stats row that shows its final count) and how many it created. Also right
# when sipp could not create them all (a slowed-down or stopped run).
offering() {
	awk -F';' '
		function epoch(s,   a) { split(s, a, "\t"); return a[3] + 0 }
		NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "StartTime") st = i; if ($i == "CurrentTime") ct = i; if ($i == "TotalCallCreated") tc = i }; next }
		tc && $tc + 0 > n { n = $tc + 0; s = epoch($ct) - epoch($st) }
		END { printf "%.2f %d\n", s, n }' "$1" 2>/dev/null || echo "0 0"
}

# Calls/s sipp really created (see offering).
achieved_rate() {
	local s n
	read -r s n <<<"$(offering "$1")"
	awk -v n="$n" -v s="$s" 'BEGIN { printf "%.0f\n", (s > 0 ? n / s : n) }'
}

# Whether sipp offered $2 calls at >= 95 % of $3 calls/s (the stats rows are 1 s
# apart: one second of slack on top).
rate_ok() {
	local s
	s="$(creation_seconds "$1" "$2")"
	[[ -n "$s" ]] && awk -v s="$s" -v n="$2" -v r="$3" -v f="$MIN_RATE_FRACTION" \
		'BEGIN { exit !(s <= n / r / f + 1) }'
}

uas_failures() {
	awk -v c="$(stat_last "$1" TotalCallCreated)" -v s="$(stat_last "$1" 'SuccessfulCall(C)')" \
		-v a="$(stat_last "$1" 'AutoAnswered(C)')" 'BEGIN { f = c - s - a; print (f > 0 ? f : 0) }'
}

ge_ratio() { # $1 / $2 >= $3 (false when $2 is 0)
	awk -v a="$1" -v b="$2" -v p="$3" 'BEGIN { exit !(b > 0 && a / b >= p) }'
}

pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? 100 * a / b : 0) }'; }

# "reason=count ..." of the CDRs' end_reason after line $2 of file $1.
cdr_reasons() {
	tail -n +"$(($2 + 1))" "$1" 2>/dev/null | grep -o '"end_reason":"[a-z-]*"' | cut -d'"' -f4 |
		sort | uniq -c | awk '{ printf "%s%s=%s", (NR > 1 ? " " : ""), $2, $1 }'
}

cdr_lines() {
	[[ -f "$1" ]] && wc -l <"$1" || echo 0
}

# ---------------------------------------------------------------------------
# Vigil and sipp
# ---------------------------------------------------------------------------
check_vigil_bin() {
	if [[ ! -x "$VIGIL_BIN" ]]; then
		echo "overload.sh: error: Vigil binary not found or not executable: $VIGIL_BIN" >&2
		echo "overload.sh: build it first:  cargo build --release   (or set VIGIL_BIN=/path/to/vigil)" >&2
		exit 2
	fi
}

# Writes a config with `limits: $2` (may be empty) to $1.
write_vigil_config() {
	local file="$1" limits="$2"
	cat >"$file" <<-EOF
		listen: ["udp:$HOST:$VIGIL_PORT"]
		trunks:
		  - name: loadgen
		    inbound: { from: ["$HOST/32"] }
		    route_to: uas
		  - name: looping-pbx
		    inbound: { from: ["$FLOOD_HOST/32"] }
		  - name: uas
		    outbound: { to: "$HOST:$UAS_PORT" }
		routes: []
		cdr: { path: "$VIGIL_CDR" }
		log: { level: warn, format: text }
		metrics: { listen: "$HOST:$METRICS_PORT" }
	EOF
	[[ -z "$limits" ]] || echo "limits: $limits" >>"$file"
}

# Starts Vigil on config $1, logging to $2; $3 = constrained (1) or not (0).
# Sets VIGIL_PID.
start_vigil() {
	local cfg="$1" logf="$2" constrained="$3"
	require_port_free "$HOST" "$VIGIL_PORT" vigil
	if ((constrained)) && [[ -n "$CGROUP_PROCS" ]]; then
		# Joins the cgroup, then becomes Vigil: every thread is born inside.
		sh -c 'echo $$ >"$1" && shift && exec "$@"' sh "$CGROUP_PROCS" \
			"$VIGIL_BIN" run --config "$cfg" >"$logf" 2>&1 &
	elif ((constrained)); then
		"${CONSTRAIN[@]}" "$VIGIL_BIN" run --config "$cfg" >"$logf" 2>&1 &
	else
		"$VIGIL_BIN" run --config "$cfg" >"$logf" 2>&1 &
	fi
	VIGIL_PID=$!
	PIDS+=("$VIGIL_PID")
	wait_for_port "$HOST" "$VIGIL_PORT" "$VIGIL_PID" vigil "$logf"
	sleep 0.5
	alive "$VIGIL_PID" || die "vigil died right after start-up (see $logf)"
}

# Starts the UAS; sets UAS_PID. $1 = dir.
start_uas() {
	local dir="$1"
	require_port_free "$HOST" "$UAS_PORT" "sipp UAS"
	"${SIPP_PIN[@]}" "$SIPP" -sf "$LOAD_DIR/uas.xml" -i "$HOST" -p "$UAS_PORT" -t u1 \
		-mp "$UAS_MEDIA_PORT" -buff_size "$SIPP_BUFF" -nostdin -aa \
		-trace_err -error_file "$dir/uas-errors.log" -max_log_size "$SIPP_MAX_LOG" \
		-trace_stat -stf "$dir/uas-stat.csv" -fd 1 >"$dir/uas.out" 2>&1 &
	UAS_PID=$!
	PIDS+=("$UAS_PID")
	wait_for_port "$HOST" "$UAS_PORT" "$UAS_PID" "sipp UAS" "$dir/uas.out"
}

# Starts a UAC in the background; sets UAC_PID.
# $1 = dir, $2 = name (file prefix), $3 = scenario, $4 = rate, $5 = calls.
start_uac() {
	local dir="$1" name="$2" sf="$3" rate="$4" calls="$5" limit
	require_port_free "$HOST" "$UAC_PORT" "sipp UAC"
	# Hard stop: traffic + hold + 40 s for the last calls' retransmissions.
	limit=$((calls / rate + HOLD_MS / 1000 + 40))
	"${SIPP_PIN[@]}" "$SIPP" "$HOST:$VIGIL_PORT" -sf "$sf" -s "$TRUNK_NUMBER" \
		-i "$HOST" -p "$UAC_PORT" -t u1 -mp "$UAC_MEDIA_PORT" -buff_size "$SIPP_BUFF" -nostdin -aa \
		-r "$rate" -rp 1000 -m "$calls" -l "$calls" -d "$HOLD_MS" -timeout "${limit}s" \
		-trace_err -error_file "$dir/$name-errors.log" -max_log_size "$SIPP_MAX_LOG" \
		-trace_stat -stf "$dir/$name-stat.csv" -fd 1 \
		-trace_screen -screen_file "$dir/$name-screen.log" >"$dir/$name.out" 2>&1 &
	UAC_PID=$!
	PIDS+=("$UAC_PID")
	# At -timeout sipp stops creating calls but waits for the open ones, which
	# can take minutes on a collapsed switch. 15 s later a second 'q'
	# (SIGUSR1) makes it quit with its statistics; 10 s after that, SIGTERM.
	(
		sleep $((limit + 15))
		kill -USR1 "$UAC_PID" 2>/dev/null || exit 0
		sleep 10
		kill -TERM "$UAC_PID" 2>/dev/null || true
	) &
	WATCHDOG_PID=$!
	PIDS+=("$WATCHDOG_PID")
}

# Waits for the UAC; sets UAC_RC (0 all ok, 1 some failed, else sipp broke).
wait_uac() {
	UAC_RC=0
	wait "$UAC_PID" || UAC_RC=$?
	forget_pid "$UAC_PID"
	stop_pid "$WATCHDOG_PID" 1
}

# Samples Vigil once a second into $1 until it exits or stop_sampler:
# "epoch cpu_ticks vm_rss_kb throttled_us" per line. Sets SAMPLER_PID.
start_sampler() {
	local out="$1" pid="$VIGIL_PID"
	(
		while alive "$pid"; do
			echo "$(now_s) $(cpu_ticks "$pid") $(status_kb "$pid" VmRSS) $(throttled_us)"
			sleep 1
		done
	) >"$out" 2>/dev/null &
	SAMPLER_PID=$!
	PIDS+=("$SAMPLER_PID")
}

stop_sampler() {
	stop_pid "$SAMPLER_PID" 1
}

# "cpu_pct throttled_s" of Vigil between epochs $2 and $3, from samples $1:
# CPU time over wall time between the first and last samples in the window,
# in % of one core.
window_cpu() {
	awk -v from="$2" -v to="$3" -v hz="$(getconf CLK_TCK)" '
		$1 >= from && $1 <= to + 0.5 {
			if (!n++) { t0 = $1; c0 = $2; th0 = $4 }
			t1 = $1; c1 = $2; th1 = $4
		}
		END {
			if (n < 2 || t1 <= t0) { print "0.0 0.0"; exit }
			printf "%.1f %.1f\n", 100 * (c1 - c0) / hz / (t1 - t0), (th1 - th0) / 1e6
		}' "$1"
}

# Vigil's CPU over the seconds sipp offered calls ($2 = its stats CSV), from
# samples $1, the UAC having started at epoch $3.
offer_cpu() {
	local s
	read -r s _ <<<"$(offering "$2")"
	window_cpu "$1" "$3" "$(awk -v a="$3" -v b="$s" 'BEGIN { printf "%.3f", a + b }')"
}

# Why a sipp run failed, from its own counters (to stderr).
explain_failure() {
	local csv="$1" side="$2" k out=""
	for k in FailedCall FailedMaxUDPRetrans FailedUnexpectedMessage FailedTimeoutOnRecv \
		FailedRegexpDoesntMatch FailedRegexpHdrNotFound FailedCannotSendMessage OutOfCallMsgs DeadCallMsgs; do
		out+=" $k=$(stat_last "$csv" "$k(C)")"
	done
	log "  sipp $side:$out"
}

now_s() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------
# Header
# ---------------------------------------------------------------------------
print_header() {
	local cpu mem load vigil_ver sipp_ver commit
	cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
	mem="$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	load="$(cut -d' ' -f1-3 /proc/loadavg)"
	sipp_ver="$("$SIPP" -v 2>&1 | grep -m1 -o 'SIPp v[^ ]*' | sed 's/\.$//' || true)"
	vigil_ver="$(timeout 5 "$VIGIL_BIN" --version 2>/dev/null | head -n1 || true)"
	vigil_ver="${vigil_ver:-unknown} ($(realpath "$VIGIL_BIN"))"
	commit="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
	if [[ -n "$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | head -n1)" ]]; then
		commit="$commit (dirty)"
	fi
	echo "== Vigil overload benchmark  $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
	echo "machine:  nproc=$(nproc)  cpu=\"$cpu\"  kernel=$(uname -srm)  mem=$mem"
	echo "load:     $load (1/5/15 min)"
	echo "sipp:     $sipp_ver"
	echo "vigil:    $vigil_ver  commit=$commit"
	echo "phases:   ${PHASE_LIST[*]}  hold=${HOLD_MS}ms  pass>=${PASS_RATIO}"
	if [[ " ${PHASE_LIST[*]} " == *" spike "* ]]; then
		echo "cpu:      $CPU_DESC"
	fi
	if awk -v l="${load%% *}" 'BEGIN { exit !(l > 0.5) }'; then
		echo "WARNING:  load average ${load%% *} > 0.5: the machine is busy, numbers will be low and noisy"
	fi
	echo
}

CHECKS_FAILED=0
check() { # $1 = description, $2.. = a command that must succeed
	local what="$1"
	shift
	if "$@"; then
		echo "  check: PASS  $what"
	else
		echo "  check: FAIL  $what"
		CHECKS_FAILED=$((CHECKS_FAILED + 1))
	fi
}

# ---------------------------------------------------------------------------
# Phase A1: capacity under the constraint
# ---------------------------------------------------------------------------
STEP_HEADER_PRINTED=0

# Runs one capacity step at $1 calls/s; prints its line; returns 0 on pass.
# Sets STEP_HWM_KB.
capacity_step() {
	local rate="$1" dir calls t0 attempted ok uas_fail achieved cpu thr result cdr0 cdr
	dir="$WORK/capacity-$rate"
	mkdir -p "$dir"
	calls=$((rate * STEP_DURATION))
	VIGIL_CDR="$dir/cdr.jsonl"
	write_vigil_config "$dir/vigil.yaml" ""
	start_uas "$dir"
	start_vigil "$dir/vigil.yaml" "$dir/vigil.log" 1
	start_sampler "$dir/samples.txt"
	t0="$(now_s)"
	start_uac "$dir" uac "$LOAD_DIR/uac.xml" "$rate" "$calls"
	wait_uac
	if alive "$VIGIL_PID"; then
		STEP_HWM_KB="$(status_kb "$VIGIL_PID" VmHWM)"
	else
		log "vigil died during the $rate calls/s step (see $dir/vigil.log)"
		STEP_HWM_KB=0
	fi
	stop_sampler
	read -r cpu thr <<<"$(offer_cpu "$dir/samples.txt" "$dir/uac-stat.csv" "$t0")"
	stop_pid "$VIGIL_PID" 10
	stop_uas
	cdr="$(cdr_lines "$VIGIL_CDR")"

	attempted="$(stat_last "$dir/uac-stat.csv" TotalCallCreated)"
	ok="$(stat_last "$dir/uac-stat.csv" 'SuccessfulCall(C)')"
	((attempted >= calls)) || attempted=$calls
	uas_fail="$(uas_failures "$dir/uas-stat.csv")"
	achieved="$(achieved_rate "$dir/uac-stat.csv")"
	result=PASS
	if ! ge_ratio "$ok" "$attempted" "$PASS_RATIO"; then
		result="FAIL(ratio)"
	elif ! ge_ratio $((attempted - uas_fail)) "$attempted" "$PASS_RATIO"; then
		result="FAIL(uas)"
	elif ! rate_ok "$dir/uac-stat.csv" "$calls" "$rate"; then
		result="FAIL(rate)"
	fi
	((UAC_RC <= 1)) || result="FAIL(sipp_rc=$UAC_RC)"
	if ((STEP_HEADER_PRINTED == 0)); then
		STEP_HEADER_PRINTED=1
		printf '  %6s %9s %9s %8s %8s %9s %8s %11s %7s %s\n' \
			rate attempted ok uas_fail achieved rss_kb cpu_pct throttled_s cdr result
	fi
	printf '  %6s %9s %9s %8s %8s %9s %8s %11s %7s %s\n' \
		"$rate" "$attempted" "$ok" "$uas_fail" "$achieved" "$STEP_HWM_KB" "$cpu" "$thr" "$cdr" "$result"
	if [[ "$result" != PASS ]]; then
		explain_failure "$dir/uac-stat.csv" UAC
		explain_failure "$dir/uas-stat.csv" UAS
	fi
	sleep 1
	[[ "$result" == PASS ]]
}

find_capacity() {
	local rate="$START_RATE" last_pass=0 first_fail=0 mid
	declare -gA HWM_AT=()
	echo "-- A1 capacity under the constraint: ${STEP_DURATION}s per step, hold ${HOLD_MS}ms, from $START_RATE by $RATE_STEP"
	while ((rate <= MAX_RATE)); do
		if capacity_step "$rate"; then
			last_pass=$rate
			HWM_AT[$rate]=$STEP_HWM_KB
			rate=$((rate + RATE_STEP))
		else
			first_fail=$rate
			break
		fi
	done
	if ((first_fail > 0 && last_pass > 0)); then
		mid=$(((last_pass + first_fail) / 2 / 50 * 50))
		if ((mid > last_pass)) && capacity_step "$mid"; then
			last_pass=$mid
			HWM_AT[$mid]=$STEP_HWM_KB
		fi
	fi
	((last_pass > 0)) || die "no rate passed under the constraint (from $START_RATE calls/s): lower --start-rate or raise --cpu-pct"
	((first_fail > 0)) || log "every rate up to --max-rate $MAX_RATE passed: C is at least $last_pass"
	CAPACITY=$last_pass
	CAPACITY_HWM_KB=${HWM_AT[$last_pass]}
	echo "  capacity C = $CAPACITY calls/s (highest passing rate$( ((first_fail > 0)) && echo "; first failure at $first_fail"))"
	echo
}

# ---------------------------------------------------------------------------
# Phase A2 + A3: spike and recovery
# ---------------------------------------------------------------------------

# Reads one UAC run's figures into R_* (prefix $2) from dir $1.
read_uac() {
	local csv="$1/$2-stat.csv"
	R_OFFERED="$(stat_last "$csv" TotalCallCreated)"
	R_REFUSED="$(stat_last "$csv" 'refused(C)')"
	R_DONE="$(stat_last "$csv" 'admitted_done(C)')"
	R_FAILED="$(stat_last "$csv" 'FailedCall(C)')"
	R_RETRANS="$(stat_last "$csv" 'Retransmissions(C)')"
	R_ADMITTED=$((R_OFFERED - R_REFUSED))
}

run_spike() {
	local dir="$WORK/spike" spike_rate spike_calls rec_calls m0 m1 m2="" t0 t1
	local hwm=0 hwm_rec=0 rss_limit_kb rss_src cpu thr cpu_r=0 thr_r=0 cdr0 cdr1 cdr2 reasons_spike reasons_rec
	local shed_cps shed_ovl shed_other shed_cps_r shed_all_r offered_rate expected lo hi retrans_503 achieved_rec
	mkdir -p "$dir"
	[[ -n "$MAX_CPS" ]] || MAX_CPS=$CAPACITY
	spike_rate=$((3 * CAPACITY))
	spike_calls=$((spike_rate * SPIKE_DURATION))
	rec_calls=$((MAX_CPS * RECOVERY_DURATION))
	if [[ -n "$RSS_LIMIT_MB" ]]; then
		rss_limit_kb=$((RSS_LIMIT_MB * 1024))
		rss_src="stated with --rss-limit-mb"
	elif [[ -n "${CAPACITY_HWM_KB:-}" && "$CAPACITY_HWM_KB" -gt 0 ]]; then
		rss_limit_kb=$((2 * CAPACITY_HWM_KB))
		((rss_limit_kb >= 65536)) || rss_limit_kb=65536
		rss_src="2 x the capacity step's peak ($CAPACITY_HWM_KB kB), at least 64 MiB"
	else
		rss_limit_kb=$((512 * 1024))
		rss_src="default with --capacity (no capacity step ran)"
	fi

	echo "-- A2 spike: 3 x C = $spike_rate calls/s for ${SPIKE_DURATION}s into limits.max_cps = $MAX_CPS (C = $CAPACITY)"
	VIGIL_CDR="$dir/cdr.jsonl"
	write_vigil_config "$dir/vigil.yaml" "{ max_cps: $MAX_CPS }"
	start_uas "$dir"
	start_vigil "$dir/vigil.yaml" "$dir/vigil.log" 1
	m0="$(scrape)" || die "no answer from metrics.listen $HOST:$METRICS_PORT"
	cdr0="$(cdr_lines "$VIGIL_CDR")"
	start_sampler "$dir/samples.txt"
	t0="$(now_s)"
	start_uac "$dir" spike "$LOAD_DIR/uac_spike.xml" "$spike_rate" "$spike_calls"
	wait_uac
	VIGIL_UP_AFTER_SPIKE=0
	if alive "$VIGIL_PID"; then
		VIGIL_UP_AFTER_SPIKE=1
		hwm="$(status_kb "$VIGIL_PID" VmHWM)"
		m1="$(scrape || true)"
	else
		m1=""
	fi
	cdr1="$(cdr_lines "$VIGIL_CDR")"

	# A3 at once: the same Vigil, C calls/s.
	if ((VIGIL_UP_AFTER_SPIKE)); then
		t1="$(now_s)"
		start_uac "$dir" recovery "$LOAD_DIR/uac_spike.xml" "$MAX_CPS" "$rec_calls"
		wait_uac
		if alive "$VIGIL_PID"; then
			hwm_rec="$(status_kb "$VIGIL_PID" VmHWM)"
			m2="$(scrape || true)"
		else
			hwm_rec=0 m2=""
		fi
	fi
	VIGIL_UP_AFTER_RECOVERY=0
	alive "$VIGIL_PID" && VIGIL_UP_AFTER_RECOVERY=1
	stop_sampler
	read -r cpu thr <<<"$(offer_cpu "$dir/samples.txt" "$dir/spike-stat.csv" "$t0")"
	if ((VIGIL_UP_AFTER_SPIKE)); then
		read -r cpu_r thr_r <<<"$(offer_cpu "$dir/samples.txt" "$dir/recovery-stat.csv" "$t1")"
	fi
	stop_pid "$VIGIL_PID" 10
	stop_uas
	cdr2="$(cdr_lines "$VIGIL_CDR")"
	reasons_spike="$(head -n "$cdr1" "$VIGIL_CDR" 2>/dev/null | tail -n +"$((cdr0 + 1))" | grep -o '"end_reason":"[a-z-]*"' | cut -d'"' -f4 | sort | uniq -c | awk '{ printf "%s%s=%s", (NR > 1 ? " " : ""), $2, $1 }')"
	reasons_rec="$(cdr_reasons "$VIGIL_CDR" "$cdr1")"

	# --- spike figures
	read_uac "$dir" spike
	SP_OFFERED=$R_OFFERED SP_REFUSED=$R_REFUSED SP_ADMITTED=$R_ADMITTED SP_DONE=$R_DONE SP_FAILED=$R_FAILED
	SP_RETRANS=$R_RETRANS
	SP_UAS_FAIL="$(uas_failures "$dir/uas-stat.csv")"
	offered_rate="$(achieved_rate "$dir/spike-stat.csv")"
	shed_cps=$(($(series "$m1" 'vigil_calls_shed_total{reason="max_cps"}') - $(series "$m0" 'vigil_calls_shed_total{reason="max_cps"}')))
	# Vigil's own overload control: a worker queue half full (overload) or
	# datagrams that waited 200 ms in the kernel (backlog).
	shed_ovl=$(($(series "$m1" 'vigil_calls_shed_total{reason="overload"}') - $(series "$m0" 'vigil_calls_shed_total{reason="overload"}')))
	shed_ovl=$((shed_ovl + $(series "$m1" 'vigil_calls_shed_total{reason="backlog"}') - $(series "$m0" 'vigil_calls_shed_total{reason="backlog"}')))
	shed_other=0
	local r
	for r in max_calls max_transactions source_transactions; do
		shed_other=$((shed_other + $(series "$m1" "vigil_calls_shed_total{reason=\"$r\"}") - $(series "$m0" "vigil_calls_shed_total{reason=\"$r\"}")))
	done
	retrans_503=$((shed_cps + shed_ovl + shed_other - SP_REFUSED))
	((retrans_503 > 0)) || retrans_503=0
	# GCRA: a full bucket of max_cps at the start, then max_cps per second.
	local offer_s
	read -r offer_s _ <<<"$(offering "$dir/spike-stat.csv")"
	expected="$(awk -v m="$MAX_CPS" -v s="$offer_s" 'BEGIN { printf "%.0f", m * (s + 1) }')"
	SP_CPU=$cpu SP_THR=$thr SP_HWM=$hwm SP_RATE=$offered_rate SP_EXPECTED=$expected
	SP_CDR=$((cdr1 - cdr0)) SP_REASONS="$reasons_spike" SP_SHED_CPS=$shed_cps SP_SHED_OVL=$shed_ovl
	SP_RSS_LIMIT_KB=$rss_limit_kb SP_RSS_SRC="$rss_src" SP_RETRANS_503=$retrans_503

	echo "  offered:        $SP_OFFERED calls at $offered_rate calls/s (asked $spike_rate)"
	echo "  refused (503):  $SP_REFUSED ($(pct "$SP_REFUSED" "$SP_OFFERED") %), Vigil's shed counter: max_cps=$shed_cps overload=$shed_ovl other=$shed_other"
	echo "  admitted:       $SP_ADMITTED (expected from max_cps: ~$expected over ${offer_s}s)"
	echo "  completed:      $SP_DONE of admitted = $(pct "$SP_DONE" "$SP_ADMITTED") %  (sipp failed calls: $SP_FAILED, uas_fail: $SP_UAS_FAIL, INVITE/BYE retransmissions: $SP_RETRANS)"
	echo "  503s to retransmitted INVITEs: $retrans_503 (shed counter - sipp's 503 count)"
	echo "  CDRs:           $SP_CDR ($reasons_spike)"
	echo "  peak RSS:       $hwm kB (bound $rss_limit_kb kB: $rss_src)"
	echo "  Vigil CPU:      $cpu % of one core while sipp offered (throttled ${thr}s)"
	check "Vigil stayed up through the spike" test "$VIGIL_UP_AFTER_SPIKE" = 1
	check "sipp offered >= 95 % of 3 x C" rate_ok "$dir/spike-stat.csv" "$spike_calls" "$spike_rate"
	check "the excess was refused with 503 + Retry-After (refused > 0)" test "$SP_REFUSED" -gt 0
	lo="$(awk -v e="$expected" 'BEGIN { printf "%.0f", e * 0.9 }')"
	hi="$(awk -v e="$expected" 'BEGIN { printf "%.0f", e * 1.1 }')"
	check "admitted + shed{overload} within 10 % of max_cps x seconds ($lo..$hi)" \
		awk -v a="$((SP_ADMITTED + shed_ovl))" -v l="$lo" -v h="$hi" 'BEGIN { exit !(a >= l && a <= h) }'
	check "admitted calls completed >= $PASS_RATIO" ge_ratio "$SP_DONE" "$SP_ADMITTED" "$PASS_RATIO"
	check "callee legs completed >= $PASS_RATIO" ge_ratio $((SP_ADMITTED - SP_UAS_FAIL)) "$SP_ADMITTED" "$PASS_RATIO"
	check "peak RSS $hwm kB <= $rss_limit_kb kB" test "$hwm" -gt 0 -a "$hwm" -le "$rss_limit_kb"
	if ((SP_FAILED > 0)); then explain_failure "$dir/spike-stat.csv" UAC; fi
	echo

	# --- recovery figures
	echo "-- A3 recovery: max_cps = $MAX_CPS calls/s for ${RECOVERY_DURATION}s on the same Vigil, right after"
	if ((VIGIL_UP_AFTER_SPIKE)); then
		read_uac "$dir" recovery
		achieved_rec="$(achieved_rate "$dir/recovery-stat.csv")"
		shed_all_r=0
		for r in max_cps overload max_calls max_transactions source_transactions; do
			shed_all_r=$((shed_all_r + $(series "$m2" "vigil_calls_shed_total{reason=\"$r\"}") - $(series "$m1" "vigil_calls_shed_total{reason=\"$r\"}")))
		done
		RC_OFFERED=$R_OFFERED RC_REFUSED=$R_REFUSED RC_DONE=$R_DONE RC_FAILED=$R_FAILED RC_RATE=$achieved_rec
		RC_SHED=$shed_all_r RC_CPU=$cpu_r RC_HWM=$hwm_rec RC_REASONS="$reasons_rec"
		echo "  offered:        $RC_OFFERED calls at $achieved_rec calls/s (asked $MAX_CPS)"
		echo "  completed:      $RC_DONE = $(pct "$RC_DONE" "$RC_OFFERED") %  refused: $RC_REFUSED  failed: $RC_FAILED  (Vigil's shed counter moved by $shed_all_r)"
		echo "  CDRs:           $((cdr2 - cdr1)) ($reasons_rec)"
		echo "  Vigil CPU:      $cpu_r % of one core while sipp offered (throttled ${thr_r}s); peak RSS so far $hwm_rec kB"
		check "Vigil stayed up through the recovery" test "$VIGIL_UP_AFTER_RECOVERY" = 1
		check "sipp offered >= 95 % of max_cps" rate_ok "$dir/recovery-stat.csv" "$rec_calls" "$MAX_CPS"
		check "recovery calls completed >= $PASS_RATIO" ge_ratio "$RC_DONE" "$RC_OFFERED" "$PASS_RATIO"
		check "no 503 after the spike" test "$RC_REFUSED" -eq 0 -a "$shed_all_r" -eq 0
		if ((RC_FAILED > 0)); then explain_failure "$dir/recovery-stat.csv" UAC; fi
	else
		RC_OFFERED=0 RC_REFUSED=0 RC_DONE=0 RC_FAILED=0 RC_RATE=0 RC_SHED=0 RC_CPU=0 RC_HWM=0 RC_REASONS=""
		check "Vigil up for the recovery" false
	fi
	echo
}

# ---------------------------------------------------------------------------
# Phase B: flood
# ---------------------------------------------------------------------------
run_flood() {
	local dir="$WORK/flood" trunk_calls m0 m1 flood_rc t0 flood_s cdr_all
	mkdir -p "$dir"
	trunk_calls=$((TRUNK_RATE * TRUNK_DURATION))
	echo "-- B flood: $FLOOD_INVITES INVITEs from $FLOOD_HOST (looping-pbx) ${FLOOD_DELAY}s into $TRUNK_RATE calls/s for ${TRUNK_DURATION}s from $HOST (loadgen)"
	echo "   limits: { per_source_rps: $FLOOD_RPS, per_source_cooldown: $FLOOD_COOLDOWN }; Vigil not constrained"
	VIGIL_CDR="$dir/cdr.jsonl"
	write_vigil_config "$dir/vigil.yaml" "{ per_source_rps: $FLOOD_RPS, per_source_cooldown: $FLOOD_COOLDOWN }"
	start_uas "$dir"
	start_vigil "$dir/vigil.yaml" "$dir/vigil.log" 0
	m0="$(scrape)" || die "no answer from metrics.listen $HOST:$METRICS_PORT"
	t0="$(now_s)"
	start_uac "$dir" trunk "$LOAD_DIR/uac.xml" "$TRUNK_RATE" "$trunk_calls"
	local trunk_pid=$UAC_PID
	sleep "$FLOOD_DELAY"
	require_port_free "$FLOOD_HOST" "$FLOOD_PORT" "sipp flooder"
	# -nr: one INVITE per call, never retransmitted; -default_behaviors none:
	# an unanswered call just times out, sending nothing more.
	"${SIPP_PIN[@]}" "$SIPP" "$HOST:$VIGIL_PORT" -sf "$LOAD_DIR/uac_flood.xml" -s "$FLOOD_NUMBER" \
		-i "$FLOOD_HOST" -p "$FLOOD_PORT" -t u1 -mp "$FLOOD_MEDIA_PORT" -buff_size "$SIPP_BUFF" -nostdin \
		-nr -default_behaviors none -recv_timeout "$FLOOD_RECV_TIMEOUT_MS" \
		-r "$FLOOD_INVITES" -rp 1000 -m "$FLOOD_INVITES" -l "$FLOOD_INVITES" -timeout 120s \
		-trace_err -error_file "$dir/flood-errors.log" -max_log_size "$SIPP_MAX_LOG" \
		-trace_stat -stf "$dir/flood-stat.csv" -fd 1 \
		-trace_screen -screen_file "$dir/flood-screen.log" >"$dir/flood.out" 2>&1 &
	local flood_pid=$!
	PIDS+=("$flood_pid")
	flood_rc=0
	wait "$flood_pid" || flood_rc=$?
	forget_pid "$flood_pid"
	UAC_PID=$trunk_pid
	wait_uac
	VIGIL_UP_AFTER_FLOOD=0
	if alive "$VIGIL_PID"; then
		VIGIL_UP_AFTER_FLOOD=1
		m1="$(scrape || true)"
		FL_HWM="$(status_kb "$VIGIL_PID" VmHWM)"
	else
		m1="" FL_HWM=0
	fi
	stop_pid "$VIGIL_PID" 10
	stop_uas

	FL_SENT="$(stat_last "$dir/flood-stat.csv" TotalCallCreated)"
	FL_ANSWERED="$(stat_last "$dir/flood-stat.csv" 'SuccessfulCall(C)')"
	flood_s="$(creation_seconds "$dir/flood-stat.csv" "$FL_SENT")"
	FL_RATE="$(awk -v n="$FL_SENT" -v s="${flood_s:-0}" 'BEGIN { printf "%.0f", (s > 0 ? n / s : n) }')"
	FL_SECONDS="${flood_s:-?}"
	FL_PASSED="$(grep -c '"trunk_in":"looping-pbx"' "$VIGIL_CDR" 2>/dev/null || true)"
	FL_PASSED="${FL_PASSED:-0}"
	FL_DROPPED=$(($(series "$m1" 'vigil_datagrams_dropped_total{reason="flood"}') - $(series "$m0" 'vigil_datagrams_dropped_total{reason="flood"}')))
	read_uac "$dir" trunk
	TR_OFFERED=$R_OFFERED TR_OK="$(stat_last "$dir/trunk-stat.csv" 'SuccessfulCall(C)')" TR_RETRANS=$R_RETRANS
	((TR_OFFERED >= trunk_calls)) || TR_OFFERED=$trunk_calls
	TR_UAS_FAIL="$(uas_failures "$dir/uas-stat.csv")"
	TR_CDR="$(grep -c '"trunk_in":"loadgen"' "$VIGIL_CDR" 2>/dev/null || true)"
	cdr_all="$(cdr_reasons "$VIGIL_CDR" 0)"
	FL_LIMIT=$((FLOOD_RPS * 12 / 10 + 10))

	echo "  flood sent:     $FL_SENT INVITEs in ${FL_SECONDS}s (~$FL_RATE/s)"
	echo "  flood passed:   $FL_PASSED (Vigil's no-route CDRs; per_source_rps = $FLOOD_RPS: a second's worth)"
	echo "  flood answered: $FL_ANSWERED (404s the flooder received)"
	echo "  flood dropped:  $FL_DROPPED (vigil_datagrams_dropped_total{reason=\"flood\"})"
	echo "  other trunk:    $TR_OK of $TR_OFFERED calls completed = $(pct "$TR_OK" "$TR_OFFERED") % (uas_fail $TR_UAS_FAIL, retransmissions $TR_RETRANS, CDRs $TR_CDR)"
	echo "  CDRs:           $cdr_all"
	echo "  peak RSS:       $FL_HWM kB"
	check "Vigil stayed up through the flood" test "$VIGIL_UP_AFTER_FLOOD" = 1
	check "the flooder sent all $FLOOD_INVITES INVITEs" test "$FL_SENT" -ge "$FLOOD_INVITES"
	check "flood INVITEs let through <= $FL_LIMIT (about the first second's worth)" test "$FL_PASSED" -le "$FL_LIMIT"
	check "flood drop counter >= sent - passed ($((FL_SENT - FL_PASSED)))" test "$FL_DROPPED" -ge $((FL_SENT - FL_PASSED))
	check "other trunk's calls completed >= $PASS_RATIO" ge_ratio "$TR_OK" "$TR_OFFERED" "$PASS_RATIO"
	check "other trunk's callee legs completed >= $PASS_RATIO" ge_ratio $((TR_OFFERED - TR_UAS_FAIL)) "$TR_OFFERED" "$PASS_RATIO"
	((flood_rc <= 1)) || log "the flooder's sipp exited $flood_rc (see $dir/flood.out)"
	if ((TR_OK < TR_OFFERED)); then explain_failure "$dir/trunk-stat.csv" UAC; fi
	echo
}

# ---------------------------------------------------------------------------
# Results block (Markdown, for BENCHMARKS.md)
# ---------------------------------------------------------------------------
print_results() {
	echo "== Results (for BENCHMARKS.md)"
	echo
	if [[ " ${PHASE_LIST[*]} " == *" spike "* ]]; then
		echo "Vigil's CPU: $CPU_DESC. Capacity C = **$CAPACITY calls/s** under it$([[ -n "${CAPACITY_HWM_KB:-}" ]] && echo " (highest ${STEP_DURATION}s step with >= $PASS_RATIO completed)" || echo " (given with --capacity)");"
		echo "spike with \`limits: { max_cps: $MAX_CPS }\`, calls held ${HOLD_MS} ms."
		echo
		echo "| figure | spike: 3 x C for ${SPIKE_DURATION} s | recovery: max_cps for ${RECOVERY_DURATION} s |"
		echo "|---|---:|---:|"
		echo "| offered | $SP_OFFERED ($SP_RATE calls/s) | ${RC_OFFERED} (${RC_RATE} calls/s) |"
		echo "| refused 503 + Retry-After | $SP_REFUSED | $RC_REFUSED |"
		echo "| admitted | $SP_ADMITTED (max_cps allows ~$SP_EXPECTED) | $((RC_OFFERED - RC_REFUSED)) |"
		echo "| admitted calls completed | $SP_DONE = **$(pct "$SP_DONE" "$SP_ADMITTED") %** | $RC_DONE = **$(pct "$RC_DONE" $((RC_OFFERED - RC_REFUSED))) %** |"
		echo "| Vigil's 503 counter (max_cps / overload) | $SP_SHED_CPS / $SP_SHED_OVL | $RC_SHED |"
		echo "| 503s to retransmitted INVITEs | $SP_RETRANS_503 | |"
		echo "| CDRs (end_reason) | $SP_CDR ($SP_REASONS) | ${RC_REASONS:-} |"
		echo "| peak RSS (VmHWM) | $((SP_HWM / 1024)) MiB (bound $((SP_RSS_LIMIT_KB / 1024)) MiB) | $((RC_HWM / 1024)) MiB |"
		echo "| Vigil CPU (% of one core) | $SP_CPU (throttled ${SP_THR} s) | $RC_CPU |"
		echo
	fi
	if [[ " ${PHASE_LIST[*]} " == *" flood "* ]]; then
		echo "Flood: \`limits: { per_source_rps: $FLOOD_RPS, per_source_cooldown: $FLOOD_COOLDOWN }\`, Vigil unconstrained."
		echo
		echo "| figure | result |"
		echo "|---|---:|"
		echo "| flood INVITEs sent from one address | $FL_SENT in ${FL_SECONDS} s (~$FL_RATE/s) |"
		echo "| let through (Vigil's CDRs) / answered | **$FL_PASSED** / $FL_ANSWERED |"
		echo "| dropped (\`vigil_datagrams_dropped_total{reason=\"flood\"}\`) | $FL_DROPPED |"
		echo "| other trunk's calls completed ($TRUNK_RATE calls/s for ${TRUNK_DURATION} s) | $TR_OK / $TR_OFFERED = **$(pct "$TR_OK" "$TR_OFFERED") %** |"
		echo "| peak RSS (VmHWM) | $((FL_HWM / 1024)) MiB |"
		echo
	fi
	if ((CHECKS_FAILED)); then
		echo "RESULT: FAIL ($CHECKS_FAILED check(s) failed)"
	else
		echo "RESULT: PASS"
	fi
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
main() {
	parse_args "$@"
	if [[ "$VIGIL_BIN" != /* ]]; then
		if [[ -e "$PWD/$VIGIL_BIN" ]]; then
			VIGIL_BIN="$PWD/$VIGIL_BIN"
		else
			VIGIL_BIN="$REPO_ROOT/$VIGIL_BIN"
		fi
	fi
	cd "$REPO_ROOT"
	command -v "$SIPP" >/dev/null || die "sipp not found (apt-get install sip-tester)"
	command -v ss >/dev/null || die "ss not found (iproute2)"
	check_vigil_bin

	WORK="$(mktemp -d "${TMPDIR:-/tmp}/vigil-overload.XXXXXX")"
	trap cleanup EXIT
	trap 'log "interrupted: stopping everything we started"; exit 130' INT
	trap 'log "terminated: stopping everything we started"; exit 143' TERM
	cd "$WORK"
	SIPP_PIN=()
	CPU_DESC="not constrained"
	CGROUP_PROCS=""
	if [[ " ${PHASE_LIST[*]} " == *" spike "* ]]; then
		setup_constraint
	fi

	print_header
	if [[ " ${PHASE_LIST[*]} " == *" spike "* ]]; then
		if [[ -z "$CAPACITY" ]]; then
			find_capacity
		else
			echo "-- A1 capacity given: C = $CAPACITY calls/s"
			echo
		fi
		run_spike
	fi
	if [[ " ${PHASE_LIST[*]} " == *" flood "* ]]; then
		SIPP_PIN=() # the flood phase runs unconstrained
		run_flood
	fi
	print_results
	((CHECKS_FAILED == 0)) || exit 1
}

main "$@"
