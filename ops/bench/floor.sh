#!/usr/bin/env bash
# How far tenure's durable puts could go against etcd 3.4 on this machine,
# whatever tenure did (issues 13 and 15; a benchmark, not a test).
#
# Three servers, one at a time, fresh for each figure, in one run:
#   etcd    etcd 3.4, fsync on (its default);
#   tenure  `tenure serve` on its embedded log (SQLite, synchronous=FULL);
#   floor   `floor-server` (ops/bench/src/floor_server.rs): the crates
#           tenure is built of (actix-web, tonic, SQLite in WAL mode with
#           synchronous=FULL and group commit, jemalloc) and nothing but a
#           durable one-row append behind a put: no key space, events, hash
#           chain, projections, auth, metrics or tracing.
# A server on this stack cannot do a durable put for less than the floor,
# so etcd's figure over the floor's is the most any such server reaches
# against etcd on this machine.
#
# Figures, each the median of $ROUNDS rounds (the order alternating):
#   CPU µs per request of the server process over the JSON gateway
#   (`cpu-load`: $PUTS puts on 10,000 keys, $GRANTS grants, $RANGES ranges of a missing
#   key, $CONCURRENCY in flight), and over gRPC (`grpc-load`: KV.Put from
#   $WORKERS callers on $CHANNELS connections for $DURATION s: requests/s,
#   server and load generator CPU per request).
#
# Prints a table and appends it, with the command and the machine, to
# ops/bench/RESULTS.md (NO_APPEND=1: print only).
#
#   bash ops/bench/floor.sh
#   ROUNDS=1 PUTS=20000 RANGES=20000 DURATION=3 NO_APPEND=1 bash ops/bench/floor.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

# One benchmark at a time on this machine.
if [ -z "${TENURE_BENCH_LOCKED:-}" ]; then
  exec env TENURE_BENCH_LOCKED=1 flock /tmp/tenure-bench.lock bash "$0" "$@"
fi

PUTS=${PUTS:-100000}
GRANTS=${GRANTS:-100000}
RANGES=${RANGES:-100000}
CONCURRENCY=${CONCURRENCY:-64}
WORKERS=${WORKERS:-64}
CHANNELS=${CHANNELS:-8}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
TENURE_PORT=${TENURE_PORT:-17174}
TENURE_GRPC_PORT=${TENURE_GRPC_PORT:-17175}
FLOOR_PORT=${FLOOR_PORT:-17176}
FLOOR_GRPC_PORT=${FLOOR_GRPC_PORT:-17177}
ETCD_PORT=${ETCD_PORT:-22599}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-22600}
BIN=${CARGO_TARGET_DIR:-target}/release
export TENURE_GRPC_LISTEN="127.0.0.1:$TENURE_GRPC_PORT"

command -v etcd >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
}
LOAD_BEFORE=$(cut -d" " -f1-3 /proc/loadavg)
cargo build --release -q -p tenure -p tenure-bench

# start, stop, wait_ready, start_floor.
. ops/bench/lib.sh

grpc_endpoint() { # SERVER
  case $1 in
    etcd) echo "http://127.0.0.1:$ETCD_PORT" ;;
    tenure) echo "http://127.0.0.1:$TENURE_GRPC_PORT" ;;
    floor) echo "http://127.0.0.1:$FLOOR_GRPC_PORT" ;;
  esac
}

RAW="$WORK/results.jsonl"
measure() { # SERVER FIGURE ROUND
  local server=$1 figure=$2 round=$3 out
  start "$server" "$server-$figure-$round"
  echo "== $server $figure, round $round" >&2
  case $figure in
    http-put | http-grant | http-range)
      local load=${figure#http-} count=$PUTS
      [ "$load" = range ] && count=$RANGES
      [ "$load" = grant ] && count=$GRANTS
      out=$("$BIN/cpu-load" --endpoint "$URL" --pid "$PID" --load "$load" --requests "$count" --concurrency "$CONCURRENCY")
      echo "$out" >&2
      sed -n 's/^RESULT //p' <<<"$out" | tr ' ' '\n' | jq -R 'split("=") | {(.[0]): (.[1] | tonumber)}' |
        jq -cs --arg s "$server" --arg f "$figure" --argjson r "$round" 'add + {server: $s, figure: $f, round: $r}' >>"$RAW"
      ;;
    grpc-put)
      local endpoint
      endpoint=$(grpc_endpoint "$server")
      "$BIN/grpc-load" --mode ready --endpoint "$endpoint" --seconds 30 >/dev/null
      out=$("$BIN/grpc-load" --mode put --label "$server" --endpoint "$endpoint" --seconds "$DURATION" \
        --channels "$CHANNELS" --workers "$WORKERS" --server-pid "$PID")
      grep -v '^RESULT ' <<<"$out" >&2
      sed -n 's/^RESULT //p' <<<"$out" | jq -c --arg f "$figure" --argjson r "$round" '. + {figure: $f, round: $r}' >>"$RAW"
      ;;
  esac
  stop
}

SERVERS="etcd tenure floor"
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order=$SERVERS; else order=$(tr ' ' '\n' <<<"$SERVERS" | tac | tr '\n' ' '); fi
  for server in $order; do
    for figure in http-range http-put http-grant grpc-put; do measure "$server" "$figure" "$round"; done
  done
done
LOAD_AFTER=$(cut -d" " -f1-3 /proc/loadavg)

TABLE_ROWS=$(python3 - "$RAW" <<'EOF'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    if r.get("server_cpu_us") and r.get("generator_cpu_us"):
        r["cpu_bound_rps"] = os.cpu_count() * 1e6 / (r["server_cpu_us"] + r["generator_cpu_us"])
servers = ("etcd", "tenure", "floor")
def figures(figure, server, key):
    return [r[key] for r in rows if r["figure"] == figure and r["server"] == server and r.get(key) is not None]
def med(figure, server, key):
    xs = figures(figure, server, key)
    return statistics.median(xs) if xs else None
def line(name, figure, key, fmt, ratio):
    """ratio: 'etcd/x' (lower is better for x) or 'x/etcd' (higher is better)."""
    m = {s: med(figure, s, key) for s in servers}
    rounds = " / ".join(" ".join(fmt % x for x in figures(figure, s, key)) for s in servers)
    cells = [(fmt % m[s]) if m[s] is not None else "-" for s in servers]
    def r(s):
        if m["etcd"] is None or m[s] is None or not m["etcd"] or not m[s]:
            return "-"
        return "%.2fx" % (m["etcd"] / m[s] if ratio == "etcd/x" else m[s] / m["etcd"])
    print(f"| {name} (rounds: {rounds}) | {' | '.join(cells)} | {r('tenure')} | {r('floor')} |")
line("gateway POST /v3/kv/put, server CPU µs per put", "http-put", "cpu_us_per_request", "%.1f", "etcd/x")
line("gateway POST /v3/lease/grant (TTL 600), server CPU µs per grant", "http-grant", "cpu_us_per_request", "%.1f", "etcd/x")
line("gateway POST /v3/kv/range of a missing key (writes nothing), server CPU µs", "http-range", "cpu_us_per_request", "%.1f", "etcd/x")
line("gateway puts/s while measured", "http-put", "requests_per_s", "%.0f", "x/etcd")
line("gRPC KV.Put, requests/s", "grpc-put", "rps", "%.0f", "x/etcd")
line("gRPC KV.Put, p99 ms", "grpc-put", "p99_ms", "%.2f", "etcd/x")
line("gRPC KV.Put, server CPU µs per put", "grpc-put", "server_cpu_us", "%.1f", "etcd/x")
line("gRPC KV.Put, load generator CPU µs per put", "grpc-put", "generator_cpu_us", "%.1f", "etcd/x")
line("gRPC KV.Put, requests/s the cores allow (cores / CPU per put of server and generator)", "grpc-put", "cpu_bound_rps", "%.0f", "x/etcd")
errors = sum(r.get("errors", 0) for r in rows)
print()
print(f"Failed requests over all runs: {errors}.")
EOF
)

CPU=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
TABLE=$(cat <<EOT

## The floor under a durable put (issues 13 and 15) — $(date -u +%Y-%m-%d) — \`bash ops/bench/floor.sh\` (ROUNDS=$ROUNDS, PUTS=$PUTS, GRANTS=$GRANTS, RANGES=$RANGES, CONCURRENCY=$CONCURRENCY; gRPC: WORKERS=$WORKERS, CHANNELS=$CHANNELS, DURATION=$DURATION s)

Machine: $(nproc) cores ($CPU), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr); load average before the run $LOAD_BEFORE, after $LOAD_AFTER. tenure $(git rev-parse --short HEAD) (release), floor-server of the same commit, and $(etcd --version | head -1) (fsync on), each fresh for each figure, one at a time, in the same run. The last two columns are each server's ratio to etcd: the floor's is the most that any server built of tenure's crates reaches on this machine.

| figure (median of $ROUNDS) | etcd | tenure | floor | tenure vs etcd | floor vs etcd |
|---|---|---|---|---|---|
$TABLE_ROWS
EOT
)
echo "$TABLE"
[ -n "${NO_APPEND:-}" ] || echo "$TABLE" >> ops/bench/RESULTS.md
