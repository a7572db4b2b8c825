# tests/load/lib.sh - process bookkeeping shared by the load scripts, sourced
# by cps.sh and overload.sh. Each script records every process it starts in
# the array PIDS (and the callee's in UAS_PID), its work dir in WORK, and sets
# `trap cleanup EXIT`: the processes are stopped, with their descendants,
# however it exits.

# All descendants of $1 (not $1 itself), one per line.
descendants() {
	ps -e -o pid= -o ppid= | awk -v root="$1" '
		{ parent[$1] = $2 }
		END {
			found[root] = 1
			do {
				added = 0
				for (p in parent)
					if (!(p in found) && (parent[p] in found)) { found[p] = 1; added = 1 }
			} while (added)
			for (p in found) if (p != root) print p
		}'
}

# $1 and its descendants.
tree_pids() {
	echo "$1"
	descendants "$1"
}

alive() {
	kill -0 "$1" 2>/dev/null
}

# Stop $1 and its descendants: SIGTERM, up to $2 s (default 10) to exit,
# then SIGKILL. Reaps it if it is our child.
stop_tree() {
	local pid="$1" grace="${2:-10}" pids i
	alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
	pids="$(tree_pids "$pid" | tr '\n' ' ')"
	# shellcheck disable=SC2086
	kill -TERM $pids 2>/dev/null || true
	for ((i = 0; i < grace * 10; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	# Anything left of the tree (including children orphaned by the parent).
	# shellcheck disable=SC2086
	kill -KILL $pids 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

forget_pid() {
	local keep=() p
	for p in "${PIDS[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
	PIDS=("${keep[@]+"${keep[@]}"}")
}

stop_pid() {
	stop_tree "$1" "${2:-10}"
	forget_pid "$1"
}

# SIGUSR1 makes sipp quit like the 'q' key: it lets its calls finish (the
# UAS scenario's 4 s timewait) and writes its final statistics. A callee
# leg that never got its ACK or BYE would keep it waiting forever, so it
# gets 6 s (> timewait + 1 s stats period) and is then terminated; its
# last stats row is recent enough either way. $1: another sipp UAS to stop
# the same way (default UAS_PID).
stop_uas() {
	local pid="${1:-$UAS_PID}" i
	kill -USR1 "$pid" 2>/dev/null || true
	for ((i = 0; i < 60; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	stop_pid "$pid" 3
}

# The EXIT trap: stops every recorded process and its descendants, runs the
# script's cleanup_more if it has one, and removes WORK unless KEEP=1.
cleanup() {
	local rc=$? p
	trap - EXIT INT TERM
	for p in "${PIDS[@]+"${PIDS[@]}"}"; do
		stop_tree "$p" 3
	done
	if declare -F cleanup_more >/dev/null; then
		cleanup_more
	fi
	if [[ -n "$WORK" && -d "$WORK" ]]; then
		if [[ "$KEEP" == 1 ]]; then
			log "work dir kept: $WORK"
		else
			rm -rf "$WORK"
		fi
	fi
	exit "$rc"
}
