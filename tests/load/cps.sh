#!/usr/bin/env bash
#
# tests/load/cps.sh - calls-per-second benchmark: Vigil vs Kamailio.
#
#   sipp UAC (127.0.0.1:5090) --> SUT --> sipp UAS (127.0.0.1:5080)
#     SUT "vigil":    ${VIGIL_BIN:-target/release/vigil} on udp:127.0.0.1:5060 (B2BUA)
#     SUT "vigil-lua": the same with tests/load/every_hook.lua as its policy
#                     (a Lua function on every hook: what scripting costs)
#     SUT "vigil-relay": the same with every call's media anchored on a
#                     userspace rtpengine (ng 127.0.0.1:22223) it starts
#                     beside it (issue 17: relay vs passthrough)
#     SUT "vigil-route": the same with carrier routing on every call (issue 18:
#                     route hook and failover vs plain prefix routing):
#                     tests/load/route_bench.lua's `route` hook (E.164 and a
#                     longest-prefix rate sheet of 50 prefixes) on the
#                     inbound trunk picks the trunk "carrier", whose three
#                     gateways are, by priority:
#                       1. 127.0.0.1:5082  sipp, tests/load/gateway_503.xml:
#                          503 without Retry-After to every INVITE
#                       2. 127.0.0.1:5080  the UAS above (answers)
#                       3. 127.0.0.1:5084  nothing (never reached)
#                     so every call sends two B-leg INVITEs. The UAC dials
#                     00442079460000 (the script makes it +442079460000)
#     SUT "vigil-tcp1": the same Vigil config, also listening on
#                     tcp:127.0.0.1:5060; the caller sipp comes in over TCP
#                     on one connection for all its calls (-t t1, as a trunk
#                     does); the callee leg stays UDP (issue 19)
#     SUT "vigil-tcpn": the same with a TCP connection per call (-t tn, as
#                     phones do): the caller opens, and closes at the call's
#                     end, one connection per call
#     SUT "vigil-prack": the same Vigil as "vigil", with 100rel (RFC 3262) on
#                     both legs (issue 20): the callee (uas_prack.xml) sends
#                     its early media in a reliable 183 that Vigil PRACKs,
#                     the caller (uac_prack.xml) supports 100rel, gets that
#                     183 reliably and PRACKs it before the 200 (two more
#                     transactions per leg than "vigil"'s calls)
#     SUT "vigil-chain": two Vigils in a row, the front one (udp:127.0.0.1:5060)
#                     sending every call over UDP to a second one
#                     (udp:127.0.0.1:5062, the "carrier") that sends it on to
#                     the UAS: the baseline of vigil-chain-tls. Both Vigils'
#                     CPU is charged to the step.
#     SUT "vigil-chain-tls": the same with the hop between the two Vigils over
#                     TLS (the front's trunk is "sips:127.0.0.1", the carrier
#                     listens on tls:127.0.0.1:5061): one TLS connection, as
#                     a trunk to a carrier uses (issue 19). sipp has no TLS
#                     here, so TLS is measured Vigil to Vigil, both ends of
#                     it rustls. Certificates come from openssl, made by the
#                     script in its work dir (a CA and a certificate for
#                     127.0.0.1); the front verifies the carrier's.
#     SUT "vigil-pg": the same Vigil config with cdr.postgres (issue 22): every
#                     CDR also goes through the database's spool (fsynced)
#                     into a PostgreSQL it starts beside it for each step
#                     (initdb as the postgres user, 127.0.0.1:$PG_PORT,
#                     `vigil cdr init-db`); the step logs the rows the
#                     database got. `--sut db` runs vigil and vigil-pg
#     SUT "vigil-file": the same Vigil config with the embedded state store
#                     (state: { path: calls.db }, issue 21): every answered
#                     call saved, its end stored, then forgotten once billed.
#     SUT "vigil-redis": the same with the store on Redis (a redis-server the
#                     script starts on 127.0.0.1:$REDIS_PORT, no persistence).
#     SUT "kamailio": kamailio -f tests/load/kamailio.cfg on udp:127.0.0.1:5070
#                     (stateful proxy: tm + dialog + sst + record_route)
#
# For each SUT it steps through a list of call rates. Each step starts a fresh
# SUT and a fresh UAS, runs rate*duration calls at that rate (each call
# INVITE/180/200/ACK, held HOLD_MS, then BYE/200), and records:
#   attempted, ok, failed   from the UAC's final sipp counters
#                           (failed = attempted - ok: calls sipp did not finish
#                           before -timeout count as failed too)
#   ratio                   ok / attempted; the step passes when it is
#                           >= PASS_RATIO (0.999) AND sipp really created the
#                           calls at the asked rate (>= 95 %)
#   rss_kb                  peak RSS: VmHWM from /proc/PID/status, summed over
#                           the SUT's processes (Kamailio forks ~7; their
#                           VmHWM all count the same shared memory, so the
#                           sum over-states it - see pss_kb)
#   pss_kb                  proportional set size (smaps_rollup) summed over
#                           the SUT's processes at the end of the step: the
#                           fair multi-process memory figure
#   cpu_us_per_call         utime+stime (/proc/PID/stat) of the SUT's
#                           processes during the step / attempted calls
#   cpu_pct                 the same CPU time / step duration (% of one core
#                           while offered this rate)
#   retrans                 sipp UAC retransmissions (a strained SUT shows
#                           them before it loses calls)
#   uas_fail                callee legs the sipp UAS did not complete (failed,
#                           or never got their ACK/BYE): errors the UAC cannot
#                           see. The step fails if they exceed 1 - PASS_RATIO
#                           of the attempted calls. For vigil-route this
#                           includes the 503 gateway's (an INVITE it refused
#                           that never got its ACK); the step also logs how
#                           many INVITEs that gateway refused
#   achieved                calls/s sipp really created (1 s resolution)
#   cdr                     Vigil only: CDR lines written during the step
#                           (a B2BUA writes one per call)
# A SUT stops stepping after its first failing rate (unless --keep-going).
# The summary gives each SUT's best passing rate and the Vigil/Kamailio ratio.
#
# Usage: tests/load/cps.sh [options]     (run from anywhere; paths are
#                                         relative to the repository root)
#   -r, --rates "R1 R2 ..."  call rates to try, calls/s, ascending
#                            [RATES, default "250 500 750 1000 1250 1500 2000 2500 3000"]
#   -d, --duration S         seconds of traffic per step     [DURATION, default 30]
#   -H, --hold MS            call hold time (ACK -> BYE), ms [HOLD_MS, default 1000]
#                            keep it < 45000: the UAS scenario does not answer
#                            session-timer refreshes (Min-SE 90 s)
#   -s, --sut LIST           vigil | vigil-lua | vigil-relay | vigil-route | vigil-prack | vigil-tcp1 |
#                            vigil-tcpn | vigil-chain | vigil-chain-tls | vigil-pg |
#                            kamailio | both (vigil and kamailio) | all (vigil, vigil-lua
#                            and kamailio) | tcp (vigil, vigil-tcp1 and vigil-tcpn) |
#                            tls (vigil-chain and vigil-chain-tls) | db (vigil and
#                            vigil-pg) | state (vigil, vigil-file and vigil-redis),
#                            or a space-separated list
#                                                            [SUTS, default both]
#   -p, --pass-ratio X       pass threshold ok/attempted     [PASS_RATIO, default 0.999]
#   -k, --keep-going         do not stop a SUT at its first failing rate [KEEP_GOING=1]
#       --keep               keep the work dir (logs, sipp traces, CDRs) [KEEP=1]
#   -h, --help
# Environment only:
#   VIGIL_BIN   Vigil binary (default target/release/vigil; build it with
#               `cargo build --release`)
#   KAMAILIO    kamailio binary (default: kamailio in PATH)
#   SIPP        sipp binary     (default: sipp in PATH)
#   SIPP_MAX_SOCKET  sipp's -max_socket over TCP (default: the open-files
#               limit, raised to its hard limit by this script, less 1,000)
#
# Example (quick check):  tests/load/cps.sh --sut kamailio --rates "200 500" --duration 10
#
# Notes (see also /work/shared/TESTING-NOTES.md):
# * Both SUTs get the same sipp scenarios (uac.xml / uas.xml, Record-Route
#   aware). Kamailio, with 2 workers, may forward a 180 after the 200, so for
#   it both sipps run with "-default_behaviors all,-abortunexp" (late/unexpected
#   messages are ignored instead of aborting the call). Vigil keeps per-dialog
#   order, so it runs with sipp's strict defaults: a reordered or stray
#   message is a failed call.
# * Over TCP (vigil-tcp1, vigil-tcpn) only the caller's leg changes: same
#   scenario, same UDP callee, same Vigil config plus the tcp: listener, so
#   the difference to "vigil" in the same run is what TCP costs. TLS is not
#   measured here: Debian's sipp is built without TLS (no -t l1).
# * vigil-tcpn opens rate x (hold + call set-up) connections at once, all
#   from 127.0.0.1, and Vigil accepts at most 1,000 from one source address
#   (transport::connections::StreamLimits, not configurable): with the
#   default 1 s hold that is about 1,000 calls/s. Past it, calls are refused
#   at connect, which is the limit working, not Vigil running out of CPU;
#   a shorter --hold moves it (the script warns when a step will cross it).
#   Each closed connection leaves the caller's port in TIME_WAIT for 60 s:
#   without net.ipv4.tcp_tw_reuse (1, or Linux's default 2 = loopback only)
#   the 28,000 ports of the default range last about 470 calls/s. The
#   script only reads these sysctls and warns; it changes none.
# * sipp over TCP needs -max_socket under the open-files limit; the script
#   raises its own soft limit (ulimit -n) to the hard one, which sipp and
#   Vigil inherit.
# * Both sipps run with -aa: they answer INFO/NOTIFY/OPTIONS/UPDATE with 200
#   (trunk keepalives, session refreshes) instead of failing the call.
# * sipp itself tops out around 5,000 calls/s on a 2-core machine; results
#   near that say more about sipp than about the SUT.
# * Compare SUTs within one run, never across runs or machines. Run it on an
#   otherwise idle machine (the header prints the load average).

set -euo pipefail
# Process bookkeeping shared by the load scripts (descendants, stop_tree, ...).
# shellcheck source=tests/load/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOAD_DIR="$REPO_ROOT/tests/load"

RATES="${RATES:-250 500 750 1000 1250 1500 2000 2500 3000}"
REDIS_PORT="${REDIS_PORT:-16399}"
DURATION="${DURATION:-30}"
HOLD_MS="${HOLD_MS:-1000}"
SUTS="${SUTS:-both}"
PASS_RATIO="${PASS_RATIO:-0.999}"
KEEP_GOING="${KEEP_GOING:-0}"
KEEP="${KEEP:-0}"
VIGIL_BIN="${VIGIL_BIN:-target/release/vigil}"
KAMAILIO="${KAMAILIO:-kamailio}"
SIPP="${SIPP:-sipp}"

# Fixed addresses: distinct ports so nothing collides.
readonly HOST=127.0.0.1
readonly RTPENGINE_NG_PORT=22223
readonly PG_PORT=25499
readonly UAC_PORT=5090
readonly UAS_PORT=5080
# vigil-route's carrier trunk: a gateway that refuses every call with 503,
# and a third that is never reached (nothing listens there).
readonly GW503_PORT=5082
readonly GW_UNUSED_PORT=5084
# What vigil-route's caller dials: an international number, normalised to
# E.164 by tests/load/route_bench.lua.
readonly ROUTE_CALLEE=00442079460000
readonly VIGIL_PORT=5060
# vigil-chain*: the second Vigil (the carrier), over UDP and over TLS.
readonly CARRIER_UDP_PORT=5062
readonly CARRIER_TLS_PORT=5061
# The front Vigil's own TLS listener (vigil-chain-tls): what its Contact and
# Via advertise, should the carrier need to connect back.
readonly FRONT_TLS_PORT=5063
readonly KAMAILIO_PORT=5070
# sipp opens an RTP echo socket per instance (default 6000); keep the two apart.
readonly UAC_MEDIA_PORT=46000
readonly UAS_MEDIA_PORT=46010
readonly GW503_MEDIA_PORT=46020
# Socket buffers for sipp (the kernel clamps to net.core.rmem_max/wmem_max).
readonly SIPP_BUFF=4194304
# Cap on each sipp error log (bytes): a collapsing step can log every call.
readonly SIPP_MAX_LOG=20000000
# Minimum fraction of the asked rate sipp must actually achieve for a pass.
readonly MIN_RATE_FRACTION=0.95
# Connections Vigil accepts from one source address (StreamLimits::default's
# per_source); vigil-tcpn's caller is one address.
readonly VIGIL_PER_SOURCE_CONNECTIONS=1000

usage() {
	# Print the header comment (everything between the shebang and set -e).
	sed -n '3,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

die() {
	echo "cps.sh: error: $*" >&2
	exit 1
}

log() {
	echo "# $*" >&2
}

parse_args() {
	while (($#)); do
		case "$1" in
		-r | --rates) RATES="${2:?--rates needs a value}"; shift 2 ;;
		-d | --duration) DURATION="${2:?--duration needs a value}"; shift 2 ;;
		-H | --hold) HOLD_MS="${2:?--hold needs a value}"; shift 2 ;;
		-s | --sut) SUTS="${2:?--sut needs a value}"; shift 2 ;;
		-p | --pass-ratio) PASS_RATIO="${2:?--pass-ratio needs a value}"; shift 2 ;;
		-k | --keep-going) KEEP_GOING=1; shift ;;
		--keep) KEEP=1; shift ;;
		-h | --help) usage; exit 0 ;;
		*) die "unknown option '$1' (try --help)" ;;
		esac
	done

	case "$SUTS" in
	both) SUT_LIST=(vigil kamailio) ;;
	all) SUT_LIST=(vigil vigil-lua kamailio) ;;
	tcp) SUT_LIST=(vigil vigil-tcp1 vigil-tcpn) ;;
	tls) SUT_LIST=(vigil-chain vigil-chain-tls) ;;
	db) SUT_LIST=(vigil vigil-pg) ;;
	state) SUT_LIST=(vigil vigil-file vigil-redis) ;;
	*) read -r -a SUT_LIST <<<"$SUTS" ;;
	esac
	local sut
	for sut in "${SUT_LIST[@]}"; do
		case "$sut" in
		vigil | vigil-lua | vigil-relay | vigil-route | vigil-prack | vigil-tcp1 | vigil-tcpn | vigil-chain | vigil-chain-tls | vigil-pg | vigil-file | vigil-redis | kamailio) ;;
		*) die "--sut takes vigil, vigil-lua, vigil-relay, vigil-route, vigil-prack, vigil-tcp1, vigil-tcpn, vigil-chain, vigil-chain-tls, vigil-pg, vigil-file, vigil-redis, kamailio, both, all, tcp, tls, db or state (got '$sut')" ;;
		esac
	done
	[[ "$DURATION" =~ ^[1-9][0-9]*$ ]] || die "--duration must be a positive integer (s)"
	[[ "$HOLD_MS" =~ ^[0-9]+$ ]] || die "--hold must be an integer (ms)"
	((HOLD_MS < 45000)) || die "--hold must be < 45000 ms (the UAS does not answer session-timer refreshes)"
	read -r -a RATE_LIST <<<"$RATES"
	((${#RATE_LIST[@]} > 0)) || die "--rates is empty"
	local r
	for r in "${RATE_LIST[@]}"; do
		[[ "$r" =~ ^[1-9][0-9]*$ ]] || die "bad rate '$r' in --rates"
	done
	awk -v p="$PASS_RATIO" 'BEGIN { exit !(p > 0 && p <= 1) }' || die "--pass-ratio must be in (0, 1]"
}

# ---------------------------------------------------------------------------
# Process bookkeeping: every process we start is recorded in PIDS and killed
# (with its descendants) on exit, whatever the exit path.
# ---------------------------------------------------------------------------
PIDS=()
WORK=""

# ---------------------------------------------------------------------------
# /proc readers
# ---------------------------------------------------------------------------

# utime+stime (clock ticks) of $1 and its live descendants, plus the CPU of
# children it already reaped (cutime+cstime of the root only, so nothing is
# counted twice). Threads are included by the kernel.
cpu_ticks() {
	local root="$1" p stat rest total=0 f
	for p in $(tree_pids "$root"); do
		stat="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
		rest="${stat##*) }" # drop "pid (comm) ": comm may contain spaces
		# rest: state(3) ppid ... utime(14) stime(15) cutime(16) cstime(17); index = field-3
		read -r -a f <<<"$rest"
		total=$((total + f[11] + f[12]))
		if [[ "$p" == "$root" ]]; then
			total=$((total + f[13] + f[14]))
		fi
	done
	echo "$total"
}

# The SUT's CPU ticks: the front Vigil's, plus the carrier Vigil's for
# vigil-chain* (each end of the hop does the TLS work).
sut_cpu_ticks() {
	local ticks
	ticks="$(cpu_ticks "$SUT_PID")"
	if [[ -n "${CARRIER_PID:-}" ]]; then
		ticks=$((ticks + $(cpu_ticks "$CARRIER_PID")))
	fi
	echo "$ticks"
}

# Sum of a "Key:  N kB" field of /proc/PID/$2 over $1's process tree.
sum_kb() {
	local root="$1" file="$2" key="$3" p total=0 v
	for p in $(tree_pids "$root"); do
		v="$(awk -v k="$key:" '$1 == k { print $2; exit }' "/proc/$p/$file" 2>/dev/null)" || v=0
		total=$((total + ${v:-0}))
	done
	echo "$total"
}

# ---------------------------------------------------------------------------
# Ports and readiness
# ---------------------------------------------------------------------------
# Bound where it would clash with this script's 127.0.0.1 sockets: on
# 127.0.0.1 or a wildcard (another test's sipp on 127.0.N.3:5080 does not).
# $2 = udp (default) or tcp (a listening socket).
port_bound() {
	local flag=-Hlun
	[[ "${2:-udp}" == tcp ]] && flag=-Hltn
	[[ -n "$(ss "$flag" "( src 127.0.0.1:$1 or src 0.0.0.0:$1 or src [::]:$1 )" 2>/dev/null)" ]]
}

udp_port_bound() {
	port_bound "$1" udp
}

# $3 = udp (default) or tcp.
require_port_free() {
	local proto="${3:-udp}" flag=-Hlunp
	[[ "$proto" == tcp ]] && flag=-Hltnp
	if port_bound "$1" "$proto"; then
		die "${proto^^} port $1 is already in use ($2 needs it): $(ss "$flag" "( src 127.0.0.1:$1 or src 0.0.0.0:$1 or src [::]:$1 )" | tr -s ' ' | head -1)"
	fi
}

# Wait until $2 (pid) has bound port $1; $3 = name, $4 = log file,
# $5 = udp (default) or tcp.
wait_for_port() {
	local port="$1" pid="$2" name="$3" logf="$4" proto="${5:-udp}" i
	for ((i = 0; i < 150; i++)); do
		alive "$pid" || {
			tail -n 20 "$logf" >&2 || true
			die "$name exited during start-up (log above: $logf)"
		}
		port_bound "$port" "$proto" && return 0
		sleep 0.1
	done
	tail -n 20 "$logf" >&2 || true
	die "$name did not bind $proto:$HOST:$port within 15 s (log: $logf)"
}

# ---------------------------------------------------------------------------
# Machine and versions (printed at the top: results mean nothing without them)
# ---------------------------------------------------------------------------
print_header() {
	local cpu mem load vigil_ver sipp_ver kam_ver commit
	cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
	mem="$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
	load="$(cut -d' ' -f1-3 /proc/loadavg)"
	sipp_ver="$("$SIPP" -v 2>&1 | grep -m1 -o 'SIPp v[^ ]*' | sed 's/\.$//' || true)" # sipp -v exits 99
	kam_ver="$("$KAMAILIO" -v 2>&1 | head -n1 | sed 's/^version: //; s/ *$//' || true)"
	if [[ -x "$VIGIL_BIN" ]]; then
		vigil_ver="$(timeout 5 "$VIGIL_BIN" --version 2>/dev/null | head -n1 || true)"
		vigil_ver="${vigil_ver:-unknown} ($(realpath "$VIGIL_BIN"))"
	else
		vigil_ver="(not built: $VIGIL_BIN)"
	fi
	commit="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
	if [[ -n "$(git -C "$REPO_ROOT" status --porcelain 2>/dev/null | head -n1)" ]]; then
		commit="$commit (dirty)"
	fi

	echo "== Vigil CPS benchmark  $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
	echo "machine:  nproc=$(nproc)  cpu=\"$cpu\"  kernel=$(uname -srm)  mem=$mem"
	echo "load:     $load (1/5/15 min)"
	echo "sipp:     $sipp_ver"
	echo "kamailio: $kam_ver"
	echo "vigil:    $vigil_ver  commit=$commit"
	if ((TCP_PREPARED)); then
		echo "tcp:      ${TCP_NOTE:-}"
	fi
	echo "params:   suts=${SUT_LIST[*]}  rates=\"${RATE_LIST[*]}\"  duration=${DURATION}s  hold=${HOLD_MS}ms  pass>=${PASS_RATIO}  keep_going=$KEEP_GOING"
	if awk -v l="${load%% *}" 'BEGIN { exit !(l > 0.5) }'; then
		echo "WARNING:  load average ${load%% *} > 0.5: the machine is busy, numbers will be low and noisy"
	fi
	echo
}

# ---------------------------------------------------------------------------
# SUTs
# ---------------------------------------------------------------------------

# Fails with the build hint when the Vigil binary is missing; called before
# any traffic so a long Kamailio run is not wasted.
check_vigil_bin() {
	if [[ ! -x "$VIGIL_BIN" ]]; then
		echo "cps.sh: error: Vigil binary not found or not executable: $VIGIL_BIN" >&2
		echo "cps.sh: build it first:  cargo build --release   (or set VIGIL_BIN=/path/to/vigil)" >&2
		exit 2
	fi
}

write_vigil_config() {
	VIGIL_CFG="$WORK/vigil.yaml"
	VIGIL_CDR="$WORK/cdr.jsonl"
	cat >"$VIGIL_CFG" <<-EOF
		listen: ["udp:$HOST:$VIGIL_PORT"]
		trunks:
		  - name: loadgen
		    inbound: { from: ["$HOST/32"] }
		    route_to: uas
		  - name: uas
		    outbound: { to: "$HOST:$UAS_PORT" }
		routes: []
		cdr: { path: "$VIGIL_CDR" }
		log: { level: warn, format: text }
	EOF
	VIGIL_LUA_CFG="$WORK/vigil-lua.yaml"
	{
		cat "$VIGIL_CFG"
		echo "policy: { lua: \"$LOAD_DIR/every_hook.lua\" }"
	} >"$VIGIL_LUA_CFG"
	VIGIL_RELAY_CFG="$WORK/vigil-relay.yaml"
	{
		sed "s|outbound: { to: \"$HOST:$UAS_PORT\" }|outbound: { to: \"$HOST:$UAS_PORT\" }\n    media: relay|" "$VIGIL_CFG"
		echo "media: { rtpengines: [\"udp:$HOST:$RTPENGINE_NG_PORT\"] }"
	} >"$VIGIL_RELAY_CFG"
	# The same caller and callee; the route hook, not route_to, picks the
	# carrier trunk (route_to stays as the fallback a script error would
	# use, so a broken script shows as a missing 503 count, not as failed
	# calls: see run_step).
	VIGIL_ROUTE_CFG="$WORK/vigil-route.yaml"
	cat >"$VIGIL_ROUTE_CFG" <<-EOF
		listen: ["udp:$HOST:$VIGIL_PORT"]
		trunks:
		  - name: loadgen
		    inbound: { from: ["$HOST/32"] }
		    route_to: uas
		    policy: { lua: "$LOAD_DIR/route_bench.lua" }
		  - name: uas
		    outbound: { to: "$HOST:$UAS_PORT" }
		  - name: carrier
		    outbound:
		      gateways:
		        - { to: "$HOST:$GW503_PORT", priority: 1 }
		        - { to: "$HOST:$UAS_PORT", priority: 2 }
		        - { to: "$HOST:$GW_UNUSED_PORT", priority: 3 }
		routes: []
		cdr: { path: "$VIGIL_CDR" }
		log: { level: warn, format: text }
	EOF
	# vigil-pg: the same, with the CDR database (issue 22).
	VIGIL_PG_CFG="$WORK/vigil-pg.yaml"
	sed "s|^cdr: { path: \"$VIGIL_CDR\" }\$|cdr: { path: \"$VIGIL_CDR\", postgres: \"postgresql://vigil@$HOST:$PG_PORT/billing\", spool: \"$WORK/pg-spool\" }|" \
		"$VIGIL_CFG" >"$VIGIL_PG_CFG"
	grep -q "postgres:" "$VIGIL_PG_CFG" || die "could not add cdr.postgres to $VIGIL_PG_CFG"
	# vigil-tcp1 / vigil-tcpn: the same, also listening on TCP (issue 19).
	VIGIL_TCP_CFG="$WORK/vigil-tcp.yaml"
	sed "s|^listen: \[\"udp:$HOST:$VIGIL_PORT\"\]\$|listen: [\"udp:$HOST:$VIGIL_PORT\", \"tcp:$HOST:$VIGIL_PORT\"]|" \
		"$VIGIL_CFG" >"$VIGIL_TCP_CFG"
	grep -q "\"tcp:$HOST:$VIGIL_PORT\"" "$VIGIL_TCP_CFG" || die "could not add the tcp: listener to $VIGIL_TCP_CFG"
	# Every sipp call comes from one address: with a connection per call
	# (vigil-tcpn) that is thousands of connections from it, past the
	# per-source default meant for the open Internet.
	echo "limits: { max_connections_per_source: 100000 }" >>"$VIGIL_TCP_CFG"
	# vigil-file / vigil-redis: the same with the state store (issue 21).
	VIGIL_FILE_CFG="$WORK/vigil-file.yaml"
	{
		cat "$VIGIL_CFG"
		echo "state: { path: \"$WORK/calls.db\" }"
	} >"$VIGIL_FILE_CFG"
	VIGIL_REDIS_CFG="$WORK/vigil-redis.yaml"
	{
		cat "$VIGIL_CFG"
		echo "state: { redis: \"redis://$HOST:$REDIS_PORT\" }"
	} >"$VIGIL_REDIS_CFG"
	write_chain_configs
}

# vigil-chain / vigil-chain-tls: the front Vigil sends every call to a
# second Vigil, the carrier, over UDP or TLS; the carrier sends it to the
# UAS. Its CDRs go to a file of its own (the step counts the front's).
write_chain_configs() {
	local tls_section=""
	if [[ " ${SUT_LIST[*]} " == *" vigil-chain-tls "* ]]; then
		make_certificates
		tls_section="tls: { certificate: \"$WORK/pki/server.pem\", key: \"$WORK/pki/server.key\", ca: \"$WORK/pki/ca.pem\" }"
	fi
	local hop
	for hop in udp tls; do
		local to="$HOST:$CARRIER_UDP_PORT" listen="\"udp:$HOST:$VIGIL_PORT\""
		if [[ "$hop" == tls ]]; then
			to="sips:$HOST"
			listen+=", \"tls:$HOST:$FRONT_TLS_PORT\""
		fi
		cat >"$WORK/vigil-chain-$hop.yaml" <<-EOF
			listen: [$listen]
			trunks:
			  - name: loadgen
			    inbound: { from: ["$HOST/32"] }
			    route_to: carrier
			  - name: carrier
			    outbound: { to: "$to" }
			routes: []
			cdr: { path: "$VIGIL_CDR" }
			log: { level: warn, format: text }
			$( [[ "$hop" == tls ]] && echo "$tls_section" )
		EOF
	done
	CARRIER_CFG="$WORK/vigil-carrier.yaml"
	cat >"$CARRIER_CFG" <<-EOF
		listen: ["udp:$HOST:$CARRIER_UDP_PORT"$( [[ -n "$tls_section" ]] && echo ", \"tls:$HOST:$CARRIER_TLS_PORT\"" )]
		trunks:
		  - name: front
		    inbound: { from: ["$HOST/32"] }
		    route_to: uas
		  - name: uas
		    outbound: { to: "$HOST:$UAS_PORT" }
		routes: []
		cdr: { path: "$WORK/carrier-cdr.jsonl" }
		log: { level: warn, format: text }
		$tls_section
	EOF
}

# A CA and a certificate for 127.0.0.1 signed by it, in $WORK/pki (the
# front Vigil checks the carrier's certificate against the CA, as a trunk
# with tls_verify does; both Vigils present the same certificate).
make_certificates() {
	command -v openssl >/dev/null || die "vigil-chain-tls needs openssl to make its certificates"
	local pki="$WORK/pki"
	mkdir -p "$pki"
	{
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
			-subj "/CN=vigil benchmark CA" -keyout "$pki/ca.key" -out "$pki/ca.pem" &&
			openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
				-subj "/CN=$HOST" -keyout "$pki/server.key" -out "$pki/server.csr" &&
			printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n' "$HOST" >"$pki/ext.cnf" &&
			openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.pem" -CAkey "$pki/ca.key" \
				-CAcreateserial -days 2 -extfile "$pki/ext.cnf" -out "$pki/server.pem"
	} >"$pki/openssl.log" 2>&1 || die "openssl could not make the certificates (see $pki/openssl.log)"
}

# Redis for the vigil-redis SUT, a fresh one per step; its CPU is not
# charged to Vigil's figure.
start_redis() {
	local dir="$1"
	command -v redis-server >/dev/null || die "vigil-redis needs redis-server (apt-get install redis-server)"
	(cd "$dir" && exec redis-server --port "$REDIS_PORT" --bind "$HOST" --save '' --appendonly no) >"$dir/redis.log" 2>&1 &
	REDIS_PID=$!
	PIDS+=("$REDIS_PID")
	local i
	for ((i = 0; i < 100; i++)); do
		redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
		sleep 0.1
	done
	die "redis-server did not answer on $HOST:$REDIS_PORT (log: $dir/redis.log)"
}

# rtpengine for the vigil-relay SUT, in userspace, ports for thousands of
# calls (four per call); its CPU is reported in the step's log, not charged
# to Vigil's figure.
start_rtpengine() {
	local dir="$1"
	command -v rtpengine >/dev/null || die "vigil-relay needs rtpengine (apt-get install rtpengine-daemon)"
	require_port_free "$RTPENGINE_NG_PORT" rtpengine
	rtpengine --config-file=none --table=-1 --interface="$HOST" \
		--listen-ng="$HOST:$RTPENGINE_NG_PORT" --port-min=20000 --port-max=60000 \
		--timeout=60 --foreground --log-stderr --log-level=4 >"$dir/rtpengine.log" 2>&1 &
	RTPENGINE_PID=$!
	PIDS+=("$RTPENGINE_PID")
	wait_for_port "$RTPENGINE_NG_PORT" "$RTPENGINE_PID" rtpengine "$dir/rtpengine.log"
}

# PostgreSQL for the vigil-pg SUT: a fresh cluster per step in the step's
# dir (run as the postgres user: the server refuses root), its CDR table made
# by `vigil cdr init-db`. Sets PG_DATA; stopped by stop_pg.
PG_DATA=""
pg_bin() {
	local dir
	for dir in /usr/lib/postgresql/*/bin; do
		[[ -x "$dir/$1" ]] && echo "$dir/$1"
	done | tail -n 1
}
start_pg() {
	local dir="$1" initdb pg_ctl
	initdb="$(pg_bin initdb)" pg_ctl="$(pg_bin pg_ctl)"
	[[ -n "$initdb" && -n "$pg_ctl" ]] || die "vigil-pg needs PostgreSQL (apt-get install postgresql)"
	require_port_free "$PG_PORT" postgres tcp
	mkdir -p "$dir/pg"
	chown postgres "$dir/pg"
	chmod o+x "$WORK" "$dir" # the postgres user walks down to its data
	runuser -u postgres -- "$initdb" -D "$dir/pg/data" -A trust -U vigil >"$dir/pg/initdb.log" 2>&1 ||
		die "initdb failed (see $dir/pg/initdb.log)"
	runuser -u postgres -- "$pg_ctl" -D "$dir/pg/data" -o "-k $dir/pg -p $PG_PORT -c listen_addresses=$HOST" \
		-l "$dir/pg/server.log" -w start >/dev/null || die "postgres did not start (see $dir/pg/server.log)"
	PG_DATA="$dir/pg/data"
	psql -h "$HOST" -p "$PG_PORT" -U vigil -d postgres -qc "CREATE DATABASE billing" >/dev/null
	rm -rf "$WORK/pg-spool"
	"$VIGIL_BIN" cdr init-db --config "$VIGIL_PG_CFG" >"$dir/pg/init-db.log" 2>&1 ||
		die "vigil cdr init-db failed (see $dir/pg/init-db.log)"
}
pg_rows() {
	psql -h "$HOST" -p "$PG_PORT" -U vigil -d billing -Atc "SELECT count(*) FROM vigil_cdr"
}
stop_pg() {
	[[ -n "$PG_DATA" ]] || return 0
	runuser -u postgres -- "$(pg_bin pg_ctl)" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1 || true
	PG_DATA=""
}
cleanup_more() {
	stop_pg
}

# Sets SUT_PID / SUT_PORT (and CARRIER_PID for vigil-chain*). $1 = sut,
# $2 = step dir.
start_sut() {
	local sut="$1" dir="$2"
	case "$sut" in
	vigil-chain | vigil-chain-tls)
		SUT_PORT=$VIGIL_PORT
		require_port_free "$SUT_PORT" "the front vigil"
		require_port_free "$CARRIER_UDP_PORT" "the carrier vigil"
		"$VIGIL_BIN" run --config "$CARRIER_CFG" >"$dir/carrier-vigil.log" 2>&1 &
		CARRIER_PID=$!
		PIDS+=("$CARRIER_PID")
		wait_for_port "$CARRIER_UDP_PORT" "$CARRIER_PID" "the carrier vigil" "$dir/carrier-vigil.log"
		local hop=udp
		if [[ "$sut" == vigil-chain-tls ]]; then
			hop=tls
			wait_for_port "$CARRIER_TLS_PORT" "$CARRIER_PID" "the carrier vigil" "$dir/carrier-vigil.log" tcp
		fi
		"$VIGIL_BIN" run --config "$WORK/vigil-chain-$hop.yaml" >"$dir/vigil.log" 2>&1 &
		SUT_PID=$!
		PIDS+=("$SUT_PID")
		wait_for_port "$SUT_PORT" "$SUT_PID" "the front vigil" "$dir/vigil.log"
		;;
	vigil | vigil-lua | vigil-relay | vigil-route | vigil-prack | vigil-tcp1 | vigil-tcpn | vigil-pg | vigil-file | vigil-redis)
		SUT_PORT=$VIGIL_PORT
		require_port_free "$SUT_PORT" vigil
		local cfg="$VIGIL_CFG"
		if [[ "$sut" == vigil-file ]]; then
			cfg="$VIGIL_FILE_CFG"
			rm -f "$WORK/calls.db" "$WORK/calls.db-wal" "$WORK/calls.db-shm"
		fi
		if [[ "$sut" == vigil-redis ]]; then
			cfg="$VIGIL_REDIS_CFG"
			start_redis "$dir"
		fi
		[[ "$sut" == vigil-lua ]] && cfg="$VIGIL_LUA_CFG"
		if [[ "$sut" == vigil-pg ]]; then
			cfg="$VIGIL_PG_CFG"
			start_pg "$dir"
		fi
		[[ "$sut" == vigil-route ]] && cfg="$VIGIL_ROUTE_CFG"
		if [[ "$sut" == vigil-relay ]]; then
			cfg="$VIGIL_RELAY_CFG"
			start_rtpengine "$dir"
		fi
		if [[ "$sut" == vigil-tcp* ]]; then
			cfg="$VIGIL_TCP_CFG"
			require_port_free "$SUT_PORT" vigil tcp
		fi
		"$VIGIL_BIN" run --config "$cfg" >"$dir/vigil.log" 2>&1 &
		SUT_PID=$!
		PIDS+=("$SUT_PID")
		wait_for_port "$SUT_PORT" "$SUT_PID" vigil "$dir/vigil.log"
		if [[ "$sut" == vigil-tcp* ]]; then
			wait_for_port "$SUT_PORT" "$SUT_PID" vigil "$dir/vigil.log" tcp
		fi
		;;
	kamailio)
		SUT_PORT=$KAMAILIO_PORT
		require_port_free "$SUT_PORT" kamailio
		# -DD: stay in the foreground (so $! is the main process) but still
		# fork the workers; -E: log to stderr; -m 4096: ended dialogs are
		# kept for end_timeout (300 s) and fill 512 MB at ~3,000 calls/s.
		"$KAMAILIO" -DD -E -m 4096 -f "$LOAD_DIR/kamailio.cfg" >"$dir/kamailio.log" 2>&1 &
		SUT_PID=$!
		PIDS+=("$SUT_PID")
		wait_for_port "$SUT_PORT" "$SUT_PID" kamailio "$dir/kamailio.log"
		;;
	esac
	# Let workers finish their start-up before the CPU baseline is taken.
	sleep 1
	alive "$SUT_PID" || die "$sut died right after start-up (see $dir/$sut.log)"
}

# ---------------------------------------------------------------------------
# TCP (vigil-tcp1, vigil-tcpn)
# ---------------------------------------------------------------------------
TCP_PREPARED=0
SIPP_MAX_SOCKET="${SIPP_MAX_SOCKET:-}"

# Raises this shell's open-files limit to the hard limit (sipp and Vigil
# inherit it; nothing outside this script changes), picks sipp's
# -max_socket below it, and warns about the sysctls that bound a
# connection per call. Runs once.
prepare_tcp() {
	((TCP_PREPARED)) && return 0
	TCP_PREPARED=1
	local hard soft reuse range ports
	hard="$(ulimit -Hn)"
	if [[ "$hard" == unlimited ]]; then
		ulimit -Sn 100000 2>/dev/null || true
	else
		ulimit -Sn "$hard" 2>/dev/null || true
	fi
	soft="$(ulimit -Sn)"
	if [[ -z "$SIPP_MAX_SOCKET" ]]; then
		# Room for sipp's own files (logs, RTP, listening socket).
		SIPP_MAX_SOCKET=$((soft > 61000 ? 60000 : soft - 1000))
	fi
	((SIPP_MAX_SOCKET > 0)) || die "open-files limit $soft is too low for sipp over TCP (raise ulimit -n)"
	reuse="$(cat /proc/sys/net/ipv4/tcp_tw_reuse 2>/dev/null || echo '?')"
	range="$(tr -s '\t ' ' ' </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo '?')"
	TCP_NOTE="open files $soft, sipp -max_socket $SIPP_MAX_SOCKET, tcp_tw_reuse=$reuse, local ports $range"
	if [[ "$reuse" == 0 ]]; then
		ports="$(awk '{ print $2 - $1 + 1 }' <<<"$range" 2>/dev/null || echo 28232)"
		log "net.ipv4.tcp_tw_reuse=0: vigil-tcpn's closed connections hold their caller port in TIME_WAIT for 60 s, so about $((ports / 60)) calls/s exhaust the $ports local ports (this script does not change sysctls)"
	fi
}

# Connections vigil-tcpn's caller holds at once at $1 calls/s: each lives for
# the hold time and the call's set-up and tear-down (~50 ms on loopback).
tcpn_connections() {
	echo $(($1 * (HOLD_MS + 50) / 1000))
}

# ---------------------------------------------------------------------------
# sipp
# ---------------------------------------------------------------------------

# Extra sipp flags for a SUT (see the header: Kamailio may reorder 180/200).
sipp_behaviour_flags() {
	if [[ "$1" == kamailio ]]; then
		echo "-default_behaviors all,-abortunexp"
	fi
}

# The caller's sipp transport flags for a SUT: UDP on one socket, or TCP
# (one connection, or one per call) with -max_socket under the open-files
# limit (sipp refuses to start otherwise).
uac_transport_flags() {
	case "$1" in
	vigil-tcp1) echo "-t t1 -max_socket $SIPP_MAX_SOCKET" ;;
	vigil-tcpn) echo "-t tn -max_socket $SIPP_MAX_SOCKET" ;;
	*) echo "-t u1" ;;
	esac
}

# The sipp scenarios of a SUT's calls: 100rel on both legs for vigil-prack.
uas_scenario() {
	if [[ "$1" == vigil-prack ]]; then echo "$LOAD_DIR/uas_prack.xml"; else echo "$LOAD_DIR/uas.xml"; fi
}
uac_scenario() {
	if [[ "$1" == vigil-prack ]]; then echo "$LOAD_DIR/uac_prack.xml"; else echo "$LOAD_DIR/uac.xml"; fi
}

# Starts the UAS for one step; sets UAS_PID. $1 = sut, $2 = step dir.
start_uas() {
	local sut="$1" dir="$2"
	require_port_free "$UAS_PORT" "sipp UAS"
	# shellcheck disable=SC2046
	"$SIPP" -sf "$(uas_scenario "$sut")" -i "$HOST" -p "$UAS_PORT" -t u1 \
		-mp "$UAS_MEDIA_PORT" -buff_size "$SIPP_BUFF" -nostdin -aa \
		$(sipp_behaviour_flags "$sut") \
		-trace_err -error_file "$dir/uas-errors.log" -max_log_size "$SIPP_MAX_LOG" \
		-trace_stat -stf "$dir/uas-stat.csv" -fd 1 \
		>"$dir/uas.out" 2>&1 &
	UAS_PID=$!
	PIDS+=("$UAS_PID")
	wait_for_port "$UAS_PORT" "$UAS_PID" "sipp UAS" "$dir/uas.out"
	if [[ "$sut" == vigil-route ]]; then
		start_gw503 "$dir"
	fi
}

# vigil-route's first gateway, refusing every call; sets GW503_PID.
start_gw503() {
	local dir="$1"
	require_port_free "$GW503_PORT" "sipp 503 gateway"
	require_port_free "$GW_UNUSED_PORT" "the unused third gateway"
	"$SIPP" -sf "$LOAD_DIR/gateway_503.xml" -i "$HOST" -p "$GW503_PORT" -t u1 \
		-mp "$GW503_MEDIA_PORT" -buff_size "$SIPP_BUFF" -nostdin -aa \
		-trace_err -error_file "$dir/gw503-errors.log" -max_log_size "$SIPP_MAX_LOG" \
		-trace_stat -stf "$dir/gw503-stat.csv" -fd 1 \
		>"$dir/gw503.out" 2>&1 &
	GW503_PID=$!
	PIDS+=("$GW503_PID")
	wait_for_port "$GW503_PORT" "$GW503_PID" "sipp 503 gateway" "$dir/gw503.out"
}

# The number the UAC dials (sipp's -s; its default is "service").
uac_callee_flags() {
	if [[ "$1" == vigil-route ]]; then
		echo "-s $ROUTE_CALLEE"
	fi
}

# Runs the UAC for one step in the background and waits for it (a plain
# foreground child would delay our INT/TERM trap until it exits).
# $1 = sut, $2 = step dir, $3 = rate, $4 = calls. Sets UAC_RC.
run_uac() {
	local sut="$1" dir="$2" rate="$3" calls="$4" limit
	require_port_free "$UAC_PORT" "sipp UAC"
	if [[ "$sut" == vigil-tcp* ]]; then
		require_port_free "$UAC_PORT" "sipp UAC" tcp
	fi
	# Hard stop: traffic + hold + 40 s for the last calls' retransmissions
	# (an INVITE transaction gives up after ~32 s). Unfinished calls count as
	# failed, so a wedged SUT still ends the step.
	limit=$((DURATION + HOLD_MS / 1000 + 40))
	# -fd 1: one statistics row per second (used to check the achieved rate).
	# shellcheck disable=SC2046
	"$SIPP" "$HOST:$SUT_PORT" -sf "$(uac_scenario "$sut")" -i "$HOST" -p "$UAC_PORT" \
		$(uac_transport_flags "$sut") -mp "$UAC_MEDIA_PORT" -buff_size "$SIPP_BUFF" -nostdin -aa \
		-r "$rate" -rp 1000 -m "$calls" -d "$HOLD_MS" -timeout "${limit}s" \
		$(sipp_behaviour_flags "$sut") $(uac_callee_flags "$sut") \
		-trace_err -error_file "$dir/uac-errors.log" -max_log_size "$SIPP_MAX_LOG" \
		-trace_stat -stf "$dir/uac-stat.csv" -fd 1 \
		-trace_screen -screen_file "$dir/uac-screen.log" \
		>"$dir/uac.out" 2>&1 &
	UAC_PID=$!
	PIDS+=("$UAC_PID")
	# sipp's -timeout did not end a sipp over TCP whose calls waited for a
	# message that never came (TCP has no retransmissions to time out);
	# past the same limit + 15 s it is terminated, its calls count as
	# failed (its stats CSV stands in for the screen dump).
	rm -f "$dir/uac-watchdog"
	(sleep $((limit + 15)) && touch "$dir/uac-watchdog" && kill -TERM "$UAC_PID" 2>/dev/null) &
	local watchdog=$!
	PIDS+=("$watchdog")
	UAC_RC=0
	wait "$UAC_PID" || UAC_RC=$?
	forget_pid "$UAC_PID"
	stop_pid "$watchdog" 1
	if [[ -e "$dir/uac-watchdog" ]]; then
		log "sipp UAC still had $(stat_last "$dir/uac-stat.csv" CurrentCall 2>/dev/null || echo '?') calls up $((limit + 15)) s after it started: terminated, they count as failed"
		UAC_RC=1
	fi
}

# Cumulative value of a counter in sipp's final screen dump, e.g.
# "  Successful call        |        0                  |      299   ".
screen_counter() {
	awk -F'|' -v name="$2" '
		{ key = $1; gsub(/^ +| +$/, "", key) }
		key == name { v = $3; gsub(/[^0-9]/, "", v); last = v }
		END { print (last == "" ? "" : last) }' "$1"
}

# Column $2 of the last row of sipp's -trace_stat CSV ($1).
stat_last() {
	awk -F';' -v name="$2" '
		NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) col = i; next }
		col { v = $col }
		END { print (v == "" ? 0 : v) }' "$1"
}

# Seconds from sipp's start until it had created $2 calls, from the
# per-second CSV rows (CurrentTime/StartTime carry an epoch with µs as the
# third tab-separated part). Empty if it never got there.
creation_seconds() {
	awk -F';' -v want="$2" '
		function epoch(s,   a) { split(s, a, "\t"); return a[3] + 0 }
		NR == 1 { for (i = 1; i <= NF; i++) { if ($i == "StartTime") st = i; if ($i == "CurrentTime") ct = i; if ($i == "TotalCallCreated") tc = i }; next }
		tc && $tc + 0 >= want { printf "%.2f\n", epoch($ct) - epoch($st); exit }' "$1"
}

# ---------------------------------------------------------------------------
# One step
# ---------------------------------------------------------------------------
STEP_HEADER_PRINTED=0
print_step_header() {
	((STEP_HEADER_PRINTED)) && return 0
	STEP_HEADER_PRINTED=1
	printf '%-11s %6s %9s %9s %7s %8s %9s %15s %7s %9s %7s %8s %8s %8s %s\n' \
		sut rate attempted ok failed ratio rss_kb cpu_us_per_call cpu_pct pss_kb retrans uas_fail achieved cdr result
}

# Runs $1 (sut) at $2 calls/s. Prints the step line; returns 0 on pass, 1 on fail.
# Also sets STEP_* for the summary.
run_step() {
	local sut="$1" rate="$2" dir calls cdr_before cdr="-" c0 c1
	local attempted ok failed ratio rss pss retrans uas_fail created_s achieved cpu_s us_per_call cpu_pct result
	dir="$WORK/$sut-$rate"
	mkdir -p "$dir"
	calls=$((rate * DURATION))

	if [[ "$sut" == vigil-tcpn ]] && (($(tcpn_connections "$rate") >= VIGIL_PER_SOURCE_CONNECTIONS)); then
		log "vigil-tcpn at $rate calls/s holds ~$(tcpn_connections "$rate") connections from $HOST: over Vigil's $VIGIL_PER_SOURCE_CONNECTIONS per source, expect refused calls (shorten --hold to measure CPU instead)"
	fi
	if [[ "$sut" == vigil* ]]; then
		cdr_before=$( [[ -f "$VIGIL_CDR" ]] && wc -l <"$VIGIL_CDR" || echo 0)
	fi

	start_uas "$sut" "$dir"
	start_sut "$sut" "$dir"

	# CPU baseline after start-up, so only call handling is charged.
	c0="$(sut_cpu_ticks)"
	run_uac "$sut" "$dir" "$rate" "$calls"
	# Measure before stopping anything: a dead process has no /proc entry.
	if alive "$SUT_PID" && { [[ -z "${CARRIER_PID:-}" ]] || alive "$CARRIER_PID"; }; then
		c1="$(sut_cpu_ticks)"
		rss="$(sum_kb "$SUT_PID" status VmHWM)"
		pss="$(sum_kb "$SUT_PID" smaps_rollup Pss)"
		if [[ -n "${CARRIER_PID:-}" ]]; then
			rss=$((rss + $(sum_kb "$CARRIER_PID" status VmHWM)))
			pss=$((pss + $(sum_kb "$CARRIER_PID" smaps_rollup Pss)))
		fi
	else
		log "$sut died during the $rate calls/s step (see $dir/*vigil.log)"
		c1="$c0" rss=0 pss=0
	fi

	stop_pid "$SUT_PID" 10
	if [[ -n "${CARRIER_PID:-}" ]]; then
		stop_pid "$CARRIER_PID" 10
		CARRIER_PID=""
	fi
	if [[ -n "${RTPENGINE_PID:-}" ]]; then
		log "rtpengine used $(( $(cpu_ticks "$RTPENGINE_PID") * 1000000 / $(getconf CLK_TCK) / (calls > 0 ? calls : 1) )) µs of CPU per call"
		stop_pid "$RTPENGINE_PID" 10
		RTPENGINE_PID=""
	fi
	if [[ -n "$PG_DATA" ]]; then
		log "vigil-pg $rate calls/s: the database has $(pg_rows) rows"
		stop_pg
	fi
	if [[ -n "${REDIS_PID:-}" ]]; then
		log "redis-server used $(( $(cpu_ticks "$REDIS_PID") * 1000000 / $(getconf CLK_TCK) / (calls > 0 ? calls : 1) )) µs of CPU per call"
		stop_pid "$REDIS_PID" 10
		REDIS_PID=""
	fi
	stop_uas
	if [[ -n "${GW503_PID:-}" ]]; then
		stop_uas "$GW503_PID"
		GW503_PID=""
	fi

	if [[ "$sut" == vigil* && -f "$VIGIL_CDR" ]]; then
		# Counted after Vigil stopped, so buffered CDRs have been flushed.
		cdr=$(($(wc -l <"$VIGIL_CDR") - cdr_before))
	fi

	# Final counters: the screen dump sipp writes when it quits; the stats
	# CSV as a fallback (e.g. if sipp was killed).
	attempted="$(screen_counter "$dir/uac-screen.log" "Total Calls created" 2>/dev/null || true)"
	ok="$(screen_counter "$dir/uac-screen.log" "Successful call" 2>/dev/null || true)"
	[[ -n "$attempted" ]] || attempted="$(stat_last "$dir/uac-stat.csv" TotalCallCreated 2>/dev/null || echo 0)"
	[[ -n "$ok" ]] || ok="$(stat_last "$dir/uac-stat.csv" 'SuccessfulCall(C)' 2>/dev/null || echo 0)"
	retrans="$(stat_last "$dir/uac-stat.csv" 'Retransmissions(C)' 2>/dev/null || echo 0)"
	# Callee legs that did not complete (failed, or still waiting for an ACK
	# or BYE that never came): the UAC cannot see these. sipp also counts an
	# out-of-dialog OPTIONS (a trunk keepalive) as a created "call"; -aa
	# answers it and counts it as AutoAnswered, so those are taken out.
	uas_fail="$(awk -v c="$(stat_last "$dir/uas-stat.csv" TotalCallCreated 2>/dev/null || echo 0)" \
		-v s="$(stat_last "$dir/uas-stat.csv" 'SuccessfulCall(C)' 2>/dev/null || echo 0)" \
		-v a="$(stat_last "$dir/uas-stat.csv" 'AutoAnswered(C)' 2>/dev/null || echo 0)" \
		'BEGIN { f = c - s - a; print (f > 0 ? f : 0) }')"
	if [[ "$sut" == vigil-route ]]; then
		local gw_created gw_fail
		gw_created="$(stat_last "$dir/gw503-stat.csv" TotalCallCreated 2>/dev/null || echo 0)"
		gw_fail="$(awk -v c="$gw_created" \
			-v s="$(stat_last "$dir/gw503-stat.csv" 'SuccessfulCall(C)' 2>/dev/null || echo 0)" \
			-v a="$(stat_last "$dir/gw503-stat.csv" 'AutoAnswered(C)' 2>/dev/null || echo 0)" \
			'BEGIN { f = c - s - a; print (f > 0 ? f : 0) }')"
		uas_fail=$((uas_fail + gw_fail))
		# Every call should have paid for the failover: fewer refusals than
		# calls mean the hook or the gateway plan did not do what this SUT
		# is meant to measure.
		log "vigil-route $rate calls/s: the 503 gateway refused $gw_created INVITEs ($gw_fail left without ACK) for $calls calls"
	fi
	# Calls never created (sipp fell behind / was cut off) count as attempted
	# and failed: the step asked for $calls.
	((attempted >= calls)) || attempted=$calls
	failed=$((attempted - ok))
	created_s="$(creation_seconds "$dir/uac-stat.csv" "$calls" 2>/dev/null || true)"

	cpu_s="$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t / hz }')"
	ratio="$(awk -v o="$ok" -v a="$attempted" 'BEGIN { printf "%.5f", (a ? o / a : 0) }')"
	us_per_call="$(awk -v c="$cpu_s" -v a="$attempted" 'BEGIN { printf "%.1f", (a ? c * 1e6 / a : 0) }')"
	# Per second of offered traffic (the calls are spread over DURATION s):
	# the steady-state load at this rate, not diluted by start-up and tail.
	cpu_pct="$(awk -v c="$cpu_s" -v d="$DURATION" 'BEGIN { printf "%.1f", 100 * c / d }')"
	if [[ -n "$created_s" ]]; then
		# Rows are one second apart: allow that much slack on top of 95 %.
		achieved="$(awk -v n="$calls" -v s="$created_s" 'BEGIN { printf "%.0f", (s > 0 ? n / s : n) }')"
	else
		achieved=0
	fi

	result=PASS
	if ! awk -v r="$ratio" -v p="$PASS_RATIO" 'BEGIN { exit !(r >= p) }'; then
		result="FAIL(ratio)"
	elif ! awk -v f="$uas_fail" -v a="$attempted" -v p="$PASS_RATIO" \
		'BEGIN { exit !(a > 0 && 1 - f / a >= p) }'; then
		result="FAIL(uas)" # callee legs failed although the caller side looked fine
	elif [[ -z "$created_s" ]] || ! awk -v s="$created_s" -v d="$DURATION" -v f="$MIN_RATE_FRACTION" \
		'BEGIN { exit !(s <= d / f + 1) }'; then
		result="FAIL(rate)" # sipp could not create the calls fast enough
	fi
	if ((UAC_RC > 1)); then
		result="FAIL(sipp_rc=$UAC_RC)" # 0 = all ok, 1 = some failed, else sipp itself broke
	fi

	print_step_header
	printf '%-11s %6s %9s %9s %7s %8s %9s %15s %7s %9s %7s %8s %8s %8s %s\n' \
		"$sut" "$rate" "$attempted" "$ok" "$failed" "$ratio" "$rss" "$us_per_call" "$cpu_pct" \
		"$pss" "$retrans" "$uas_fail" "$achieved" "$cdr" "$result"

	if [[ "$sut" == vigil* && "$cdr" != "-" ]] && ((cdr < ok)); then
		log "vigil wrote $cdr CDRs for $ok completed calls at $rate calls/s"
	fi
	if [[ "$result" != PASS ]]; then
		explain_failure "$dir"
	fi

	STEP_RESULT="$result" STEP_RATIO="$ratio" STEP_RSS="$rss" STEP_PSS="$pss"
	STEP_US="$us_per_call" STEP_PCT="$cpu_pct" STEP_ATT="$attempted" STEP_OK="$ok"
	US_AT["$sut@$rate"]="$us_per_call"
	RESULT_AT["$sut@$rate"]="$result"
	[[ "$result" == PASS ]]
}

# Why a step failed, from sipp's own failure counters (to stderr).
explain_failure() {
	local dir="$1" side k out
	for side in uac uas; do
		out=""
		for k in FailedCall FailedMaxUDPRetrans FailedUnexpectedMessage FailedTimeoutOnRecv \
			FailedCallRejected FailedCannotSendMessage FailedTcpConnect FailedTcpClosed \
			OutOfCallMsgs DeadCallMsgs; do
			out+=" $k=$(stat_last "$dir/$side-stat.csv" "$k(C)" 2>/dev/null || echo '?')"
		done
		log "  sipp ${side^^}:$out"
	done
	log "  logs: $dir (kept only with --keep)"
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
declare -A BEST_RATE BEST_LINE FIRST_FAIL NEVER_FAILED
# CPU µs per call and result of every step, by "sut@rate".
declare -A US_AT RESULT_AT
# Per "sut rate": CPU µs per call and the result, for comparisons at equal
# rates (over TCP vs UDP).
declare -A AT_US AT_RESULT

run_sut() {
	local sut="$1" rate
	BEST_RATE[$sut]=0
	BEST_LINE[$sut]="- | - | - | - | -"
	FIRST_FAIL[$sut]="-"
	NEVER_FAILED[$sut]=1
	for rate in "${RATE_LIST[@]}"; do
		STEP_RESULT="" STEP_US=""
		if run_step "$sut" "$rate"; then
			AT_US["$sut $rate"]="$STEP_US" AT_RESULT["$sut $rate"]=PASS
			if ((rate > BEST_RATE[$sut])); then
				BEST_RATE[$sut]=$rate
				BEST_LINE[$sut]="$STEP_OK/$STEP_ATT ($STEP_RATIO) | $STEP_RSS | $STEP_PSS | $STEP_US | $STEP_PCT"
			fi
		else
			AT_US["$sut $rate"]="${STEP_US:--}" AT_RESULT["$sut $rate"]="${STEP_RESULT:-FAIL}"
			NEVER_FAILED[$sut]=0
			[[ "${FIRST_FAIL[$sut]}" != "-" ]] || FIRST_FAIL[$sut]="$rate ($STEP_RESULT, ratio $STEP_RATIO)"
			[[ "$KEEP_GOING" == 1 ]] || break
		fi
		sleep 1 # let the kernel drain sockets between steps
	done
}

print_summary() {
	local sut best v k
	echo
	echo "== Summary (best rate = highest rate with ok/attempted >= $PASS_RATIO over ${DURATION}s, hold ${HOLD_MS}ms)"
	echo "| SUT | best rate (calls/s) | ok/attempted at best | peak RSS (KiB, sum VmHWM) | PSS (KiB) | CPU µs/call | CPU % of 1 core | first failing rate |"
	echo "|---|---|---|---|---|---|---|---|"
	for sut in "${SUT_LIST[@]}"; do
		best="${BEST_RATE[$sut]}"
		# The top rate never failed: the real limit is higher.
		if ((NEVER_FAILED[$sut] && best > 0)); then best=">= $best"; fi
		echo "| $sut | $best | ${BEST_LINE[$sut]} | ${FIRST_FAIL[$sut]} |"
	done
	if [[ -n "${BEST_RATE[vigil]:-}" && -n "${BEST_RATE[kamailio]:-}" ]]; then
		v="${BEST_RATE[vigil]}" k="${BEST_RATE[kamailio]}"
		if ((k > 0)); then
			echo "Vigil/Kamailio best-rate ratio: $(awk -v v="$v" -v k="$k" 'BEGIN { printf "%.2f", v / k }') ($v / $k calls/s)"
			if ((NEVER_FAILED[vigil] || NEVER_FAILED[kamailio])); then
				echo "(a SUT that never failed is capped by the rate list: extend --rates for a true ratio)"
			fi
		else
			echo "Vigil/Kamailio best-rate ratio: n/a (Kamailio passed no rate)"
		fi
	fi
	print_transport_comparison
	if [[ -n "${BEST_RATE[vigil]:-}" && -n "${BEST_RATE[vigil-lua]:-}" ]]; then
		v="${BEST_RATE[vigil]}" k="${BEST_RATE[vigil-lua]}"
		if ((v > 0)); then
			echo "Vigil with Lua on every hook / without: best-rate ratio $(awk -v v="$v" -v k="$k" 'BEGIN { printf "%.2f", k / v }') ($k / $v calls/s)"
		fi
	fi
	# Issue 18's target for carrier routing: >= 0.70 of plain.
	if [[ -n "${BEST_RATE[vigil]:-}" && -n "${BEST_RATE[vigil-route]:-}" ]]; then
		print_ratio_to_plain vigil-route "Carrier routing (route hook + 503 failover)" route ">= 0.70"
	fi
	# Issue 20: 100rel on both legs vs none.
	if [[ -n "${BEST_RATE[vigil]:-}" && -n "${BEST_RATE[vigil-prack]:-}" ]]; then
		print_ratio_to_plain vigil-prack "100rel on both legs" 100rel ""
	fi
}

# A SUT against plain vigil, by best rate and, at each rate both ran, by
# CPU per call (plain / other: the share of plain's calls the same CPU would
# carry with the other's feature). $1 = SUT, $2 = what it adds, $3 = its
# label in the per-rate lines, $4 = a target to print (may be empty).
print_ratio_to_plain() {
	local sut="$1" what="$2" label="$3" target="$4"
	local v="${BEST_RATE[vigil]}" r="${BEST_RATE[$sut]}" rate pu ru
	if ((v > 0)); then
		echo "$what / plain: best-rate ratio $(awk -v v="$v" -v r="$r" 'BEGIN { printf "%.2f", r / v }') ($r / $v calls/s${target:+; target $target})"
		if ((NEVER_FAILED[vigil] || NEVER_FAILED[$sut])); then
			echo "(a SUT that never failed is capped by the rate list: extend --rates for a true ratio)"
		fi
	fi
	for rate in "${RATE_LIST[@]}"; do
		pu="${US_AT[vigil@$rate]:-}" ru="${US_AT[$sut@$rate]:-}"
		[[ -n "$pu" && -n "$ru" ]] || continue
		echo "  at $rate calls/s: CPU µs/call plain $pu (${RESULT_AT[vigil@$rate]}), $label $ru (${RESULT_AT[$sut@$rate]}): plain/$label $(awk -v p="$pu" -v r="$ru" 'BEGIN { printf "%.2f", (r > 0 ? p / r : 0) }')"
	done
}

# Over TCP vs over UDP (issue 19): CPU µs per call at each rate, each TCP
# SUT's cost relative to "vigil" at that rate, and best-rate ratios; the
# same for TLS, vigil-chain-tls against vigil-chain.
print_transport_comparison() {
	print_cost_against vigil "TCP" 0.80 vigil-tcp1 vigil-tcpn
	print_cost_against vigil-chain "TLS" 0.50 vigil-chain-tls
}

# $1 = the UDP baseline SUT, $2 = what the others add (for the heading),
# $3 = issue 19's best-rate target, $4... = the SUTs compared with it (those
# that ran).
print_cost_against() {
	local base="$1" what="$2" target="$3" others=() sut rate line u t v
	shift 3
	for sut in "$@"; do
		[[ -n "${BEST_RATE[$sut]:-}" ]] && others+=("$sut")
	done
	((${#others[@]})) && [[ -n "${BEST_RATE[$base]:-}" ]] || return 0
	echo
	echo "== Over $what vs UDP: CPU µs per call at each rate (udp/${what,,} = $base's µs / the $what SUT's: 1.00 = $what costs nothing more, and where CPU is the limit it estimates the $what/UDP CPS ratio; a failed step is marked)"
	line="| rate | $base (udp) µs/call"
	for sut in "${others[@]}"; do line+=" | $sut µs/call | udp/${what,,}"; done
	echo "$line |"
	line="|---|---"
	for sut in "${others[@]}"; do line+="|---|---"; done
	echo "$line|"
	for rate in "${RATE_LIST[@]}"; do
		u="${AT_US["$base $rate"]:--}"
		[[ "${AT_RESULT["$base $rate"]:-}" == PASS || "$u" == - ]] || u="$u (${AT_RESULT["$base $rate"]})"
		line="| $rate | $u"
		for sut in "${others[@]}"; do
			t="${AT_US["$sut $rate"]:--}"
			v=-
			# Only between two passing steps: a failed one's CPU is not a call's.
			if [[ "${AT_RESULT["$sut $rate"]:-}" == PASS && "${AT_RESULT["$base $rate"]:-}" == PASS ]]; then
				v="$(awk -v u="${AT_US["$base $rate"]}" -v t="$t" 'BEGIN { if (t > 0) printf "%.2f", u / t; else print "-" }')"
			fi
			[[ "${AT_RESULT["$sut $rate"]:-}" == PASS || "$t" == - ]] || t="$t (${AT_RESULT["$sut $rate"]})"
			line+=" | $t | $v"
		done
		echo "$line |"
	done
	u="${BEST_RATE[$base]}"
	for sut in "${others[@]}"; do
		t="${BEST_RATE[$sut]}"
		if ((u > 0)); then
			echo "$sut / $base best-rate ratio: $(awk -v t="$t" -v u="$u" 'BEGIN { printf "%.2f", t / u }') ($t / $u calls/s; issue 19's target: >= $target)"
		fi
	done
	if ((NEVER_FAILED[$base])); then
		echo "($base never failed: the rate list caps its best rate, so these ratios are upper bounds)"
	fi
}

main() {
	parse_args "$@"
	# VIGIL_BIN: absolute, or relative to the current directory if it exists
	# there, else relative to the repository root (the default
	# target/release/vigil works from anywhere). We later cd to a work dir.
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
	local sut
	for sut in "${SUT_LIST[@]}"; do
		case "$sut" in
		vigil | vigil-lua | vigil-relay | vigil-route | vigil-prack | vigil-pg | vigil-file | vigil-redis) check_vigil_bin ;;
		vigil-tcp1 | vigil-tcpn) check_vigil_bin; prepare_tcp ;;
		vigil-chain | vigil-chain-tls) check_vigil_bin ;;
		kamailio)
			command -v "$KAMAILIO" >/dev/null || die "kamailio not found (apt-get install kamailio)"
			"$KAMAILIO" -c -f "$LOAD_DIR/kamailio.cfg" >/dev/null 2>&1 ||
				die "kamailio -c -f $LOAD_DIR/kamailio.cfg rejects the config"
			;;
		esac
	done

	WORK="$(mktemp -d "${TMPDIR:-/tmp}/vigil-cps.XXXXXX")"
	trap cleanup EXIT
	trap 'log "interrupted: stopping everything we started"; exit 130' INT
	trap 'log "terminated: stopping everything we started"; exit 143' TERM
	# Run sipp and the SUTs from the work dir: sipp drops files in its cwd.
	cd "$WORK"
	write_vigil_config

	print_header
	for sut in "${SUT_LIST[@]}"; do
		run_sut "$sut"
	done
	print_summary
}

main "$@"
