#!/usr/bin/env bash
#
# tests/load/cdr_replay.sh - how fast a CDR spool is replayed into PostgreSQL
# after an outage (issue 22).
#
# Starts a PostgreSQL of its own (initdb as the postgres user, 127.0.0.1:PG_PORT,
# the table made by `vigil cdr init-db`), fills the database spool with ROWS
# CDR lines (as Vigil writes them, each with its own id: what a long outage
# leaves), starts Vigil on it and times, from its start, until `vigil ctl
# status` says the spool is empty; then counts the rows. Reports rows/s and
# Vigil's CPU per row.
#
# Usage: tests/load/cdr_replay.sh     (ROWS=200000 PG_PORT=25498 VIGIL_BIN=target/release/vigil)
set -euo pipefail

cd "$(dirname "$0")/../.."
ROWS=${ROWS:-200000}
PG_PORT=${PG_PORT:-25498}
VIGIL_BIN=$(realpath "${VIGIL_BIN:-target/release/vigil}")
[ -x "$VIGIL_BIN" ] || { echo "cdr_replay.sh: build it first: cargo build --release" >&2; exit 2; }
BIN=""
for dir in /usr/lib/postgresql/*/bin; do [ -x "$dir/initdb" ] && BIN="$dir"; done
[ -n "$BIN" ] || { echo "cdr_replay.sh: apt-get install postgresql" >&2; exit 2; }

WORK=$(mktemp -d /tmp/vigil-cdr-replay.XXXXXX)
chmod o+x "$WORK"
VIGIL_PID=""
cleanup() {
    [ -n "$VIGIL_PID" ] && kill -9 "$VIGIL_PID" 2>/dev/null || true
    runuser -u postgres -- "$BIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
    [ "${KEEP:-0}" = 1 ] && echo "work dir kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

mkdir "$WORK/pg" && chown postgres "$WORK/pg"
runuser -u postgres -- "$BIN/initdb" -D "$WORK/pg/data" -A trust -U vigil >/dev/null
runuser -u postgres -- "$BIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-k $WORK/pg -p $PG_PORT -c listen_addresses=127.0.0.1" start >/dev/null
psql -h 127.0.0.1 -p "$PG_PORT" -U vigil -d postgres -qc "CREATE DATABASE billing"

cat >"$WORK/vigil.yaml" <<EOF
listen: ["udp:127.0.0.1:25097"]
trunks:
  - name: pbx
    inbound: { from: ["127.0.0.1/32"] }
    route_to: carrier
  - name: carrier
    outbound: { to: "127.0.0.1:25098" }
cdr: { path: "$WORK/cdr.jsonl", postgres: "postgresql://vigil@127.0.0.1:$PG_PORT/billing", spool: "$WORK/spool" }
control: { socket: "$WORK/vigil.sock" }
log: { level: info, format: text }
EOF
"$VIGIL_BIN" cdr init-db --config "$WORK/vigil.yaml" >/dev/null

# A spool as an outage leaves it: segments of about 4 MiB of CDR lines.
mkdir -p "$WORK/spool/vigil_cdr.spool"
python3 - "$WORK/spool/vigil_cdr.spool" "$ROWS" <<'PY'
import json, sys, uuid
folder, rows = sys.argv[1], int(sys.argv[2])
segment, out, size = 1, None, 0
for i in range(rows):
    if out is None or size >= 4 << 20:
        if out: out.close()
        out, size = open(f"{folder}/{segment:020}.cdrs", "w"), 0
        segment += 1
    line = json.dumps({
        "id": str(uuid.uuid4()), "call_id": f"{i}-replay@127.0.0.1",
        "b_call_id": f"vgl00-{i:024x}", "caller": "1001", "callee": "0049301234",
        "trunk_in": "pbx", "trunk_out": "carrier",
        "start": "2026-12-07T06:00:00.000Z", "answer": "2026-12-07T06:00:01.000Z",
        "end": "2026-12-07T06:01:01.500Z", "duration_ms": 60500,
        "end_reason": "caller-bye", "ended_by": "caller", "sip_code": None,
        "refresh_failure": None, "extra": {}, "gateway": "127.0.0.1:25098",
        "attempts": [{"trunk": "carrier", "gateway": "127.0.0.1:25098", "outcome": "200"}],
        "media": None,
    }, separators=(",", ":"))
    out.write(line + "\n")
    size += len(line) + 1
out.close()
PY

started=$(date +%s.%N)
"$VIGIL_BIN" run --config "$WORK/vigil.yaml" 2>"$WORK/vigil.log" &
VIGIL_PID=$!
spooled=""
for _ in $(seq 1 6000); do
    status=$("$VIGIL_BIN" ctl --config "$WORK/vigil.yaml" status 2>/dev/null || true)
    spooled=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["cdr_database"]["spooled"])' <<<"$status" 2>/dev/null || true)
    [ "$spooled" = 0 ] && break
    sleep 0.05
done
ended=$(date +%s.%N)
[ "$spooled" = 0 ] || { echo "the spool was not replayed in time (spooled: $spooled)" >&2; tail "$WORK/vigil.log" >&2; exit 1; }
ticks=$(awk '{ print $14 + $15 }' "/proc/$VIGIL_PID/stat")
kill -TERM "$VIGIL_PID"; wait "$VIGIL_PID" || true; VIGIL_PID=""
rows=$(psql -h 127.0.0.1 -p "$PG_PORT" -U vigil -d billing -Atc "SELECT count(*) FROM vigil_cdr")
awk -v r="$rows" -v want="$ROWS" -v s="$started" -v e="$ended" -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    secs = e - s
    printf "spool replay: %d of %d rows in %.2f s (from Vigil'"'"'s start): %.0f rows/s; Vigil CPU %.1f us per row\n",
        r, want, secs, r / secs, t / hz * 1e6 / r
    exit (r == want ? 0 : 1)
}'
