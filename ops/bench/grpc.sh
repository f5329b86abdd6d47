#!/usr/bin/env bash
# etcd's gRPC API, tenure against etcd 3.4 side by side in one run on this
# machine (issue 15; a benchmark, not a test). Both fsync what they
# acknowledge: etcd with its default settings, tenure with group commit.
#
# Starts both servers once (each with its own data dir in a temp dir, on
# loopback), waits for both to answer a gRPC Range (a readiness poll), then
# runs `grpc-load` in each mode against each, $ROUNDS rounds a mode, the
# order alternating (etcd, tenure, then tenure, etcd):
#   put        $WORKERS callers of KV.Put on distinct keys, $DURATION s
#   grant      $WORKERS callers of LeaseGrant (TTL 600), $DURATION s
#   keepalive  $LEASES leases, one LeaseKeepAlive stream per worker,
#              one keep-alive outstanding per stream, $DURATION s
#   watch      $WATCHERS Watch streams on one prefix, $RATE puts/s under
#              it for $DURATION s; delivery delay per event
# All calls are spread over $CHANNELS HTTP/2 connections (watchers: at most
# 100 streams a connection). Prints a table of medians with tenure/etcd
# ratios and appends it, with the raw lines, the command and the machine,
# to ops/bench/RESULTS.md (NO_APPEND=1: print only).
#
#   bash ops/bench/grpc.sh
#   DURATION=3 ROUNDS=1 LEASES=1000 WATCHERS=100 bash ops/bench/grpc.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

# One benchmark at a time on this machine.
if [ -z "${TENURE_BENCH_LOCKED:-}" ]; then
  exec env TENURE_BENCH_LOCKED=1 flock /tmp/tenure-bench.lock bash "$0" "$@"
fi

ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-64}
CHANNELS=${CHANNELS:-8}
LEASES=${LEASES:-10000}
WATCHERS=${WATCHERS:-1000}
RATE=${RATE:-1000}
MODES=${MODES:-put grant keepalive watch}
TENURE_GRPC_PORT=${TENURE_GRPC_PORT:-17379}
ETCD_PORT=${ETCD_PORT:-22479}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-22480}
BIN=${CARGO_TARGET_DIR:-target}/release

command -v etcd >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
}
LOAD_BEFORE=$(cut -d" " -f1-3 /proc/loadavg)
cargo build --release -q -p tenure -p tenure-bench

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

etcd --data-dir "$WORK/etcd" --name bench \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER_PORT" --log-level error >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!; PIDS+=("$ETCD_PID")
RUST_LOG=warn "$BIN/tenure" serve --grpc-listen "127.0.0.1:$TENURE_GRPC_PORT" \
  --listen 127.0.0.1:0 --proxy-listen 127.0.0.1:0 --data-dir "$WORK/tenure" >"$WORK/tenure.log" 2>&1 &
TENURE_PID=$!; PIDS+=("$TENURE_PID")
declare -A ENDPOINT=([etcd]="http://127.0.0.1:$ETCD_PORT" [tenure]="http://127.0.0.1:$TENURE_GRPC_PORT")
declare -A PID=([etcd]=$ETCD_PID [tenure]=$TENURE_PID)
for server in etcd tenure; do
  "$BIN/grpc-load" --mode ready --endpoint "${ENDPOINT[$server]}" --seconds 30 ||
    { echo "$server did not start:"; cat "$WORK/$server.log"; exit 1; } >&2
done

RAW="$WORK/results.jsonl"
run() { # SERVER MODE ROUND
  local args=(--mode "$2" --label "$1" --endpoint "${ENDPOINT[$1]}" --seconds "$DURATION" --channels "$CHANNELS")
  case $2 in
    put | grant) args+=(--workers "$WORKERS" --server-pid "${PID[$1]}") ;;
    keepalive) args+=(--workers "$WORKERS" --leases "$LEASES" --server-pid "${PID[$1]}") ;;
    watch) args+=(--watchers "$WATCHERS" --rate "$RATE") ;;
  esac
  local load out
  load=$(cut -d" " -f1 /proc/loadavg)
  echo "== $1 $2, round $3 (load $load)" >&2
  out=$("$BIN/grpc-load" "${args[@]}")
  grep -v '^RESULT ' <<<"$out" >&2
  local rss_kib
  rss_kib=$(ps -o rss= -p "${PID[$1]}" | tr -d ' ')
  sed -n 's/^RESULT //p' <<<"$out" |
    jq -c --argjson round "$3" --arg load "$load" --argjson rss "${rss_kib:-0}" \
      '. + {round: $round, load1: ($load | tonumber), server_rss_mib: ($rss / 1024 | floor)}' >>"$RAW"
}

# Mode by mode, so what one mode leaves behind (a watch backlog) weighs
# on its own later rounds only.
for mode in $MODES; do
  for round in $(seq 1 "$ROUNDS"); do
    if [ $((round % 2)) = 1 ]; then order="etcd tenure"; else order="tenure etcd"; fi
    for server in $order; do run "$server" "$mode" "$round"; done
  done
done
LOAD_AFTER=$(cut -d" " -f1-3 /proc/loadavg)

# Medians over the rounds, with each round's figure beside them.
TABLE_ROWS=$(python3 - "$RAW" <<'EOF'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
# The most requests/s the machine's cores allow when the server and the
# generator share them: cores / (server + generator CPU per request).
for r in rows:
    if r.get("server_cpu_us") and r.get("generator_cpu_us"):
        r["cpu_bound_rps"] = os.cpu_count() * 1e6 / (r["server_cpu_us"] + r["generator_cpu_us"])
def figures(mode, server, key):
    return [r[key] for r in rows if r["mode"] == mode and r["server"] == server and r.get(key) is not None]
def cell(xs, fmt):
    return (fmt % statistics.median(xs)) if xs else "-"
def line(name, mode, key, fmt):
    e, t = figures(mode, "etcd", key), figures(mode, "tenure", key)
    ratio = "%.2f" % (statistics.median(t) / statistics.median(e)) if e and t and statistics.median(e) else "-"
    rounds = " ".join(fmt % x for x in e) + " / " + " ".join(fmt % x for x in t)
    print(f"| {name} (rounds: {rounds}) | {cell(e, fmt)} | {cell(t, fmt)} | {ratio} |")
for mode, what in [("put", "KV.Put"), ("grant", "LeaseGrant (TTL 600)"), ("keepalive", "LeaseKeepAlive")]:
    if not figures(mode, "etcd", "rps"):
        continue
    line(f"{what}, requests/s", mode, "rps", "%.0f")
    line(f"{what}, p50 ms", mode, "p50_ms", "%.2f")
    line(f"{what}, p99 ms", mode, "p99_ms", "%.2f")
    if figures(mode, "etcd", "server_cpu_us"):
        line(f"{what}, server CPU µs per request", mode, "server_cpu_us", "%.1f")
        line(f"{what}, load generator CPU µs per request", mode, "generator_cpu_us", "%.1f")
        line(f"{what}, requests/s the cores allow (cores / CPU per request of both)", mode, "cpu_bound_rps", "%.0f")
if figures("watch", "etcd", "p99_ms"):
    line("watch delivery, p50 ms", "watch", "p50_ms", "%.2f")
    line("watch delivery, p99 ms", "watch", "p99_ms", "%.2f")
    line("watch delivery, max ms", "watch", "max_ms", "%.2f")
    line("watch, puts/s the writer reached", "watch", "put_rate", "%.0f")
    line("watch, events received", "watch", "received", "%d")
    line("watch, events expected (watchers × puts)", "watch", "expected", "%d")
line("server RSS after the run, MiB", "watch" if figures("watch", "etcd", "server_rss_mib") else rows[-1]["mode"], "server_rss_mib", "%d")
errors = {s: sum(r.get("errors", 0) + r.get("put_errors", 0) for r in rows if r["server"] == s) for s in ("etcd", "tenure")}
lost = {s: sum(r.get("lost", 0) for r in rows if r["server"] == s) for s in ("etcd", "tenure")}
print()
print(f"Errors over all runs: etcd {errors['etcd']}, tenure {errors['tenure']}; keep-alives answered without a TTL: etcd {lost['etcd']}, tenure {lost['tenure']}.")
EOF
)

CPU=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
TABLE=$(cat <<EOT

## gRPC (issue 15) — $(date -u +%Y-%m-%d) — \`bash ops/bench/grpc.sh\` (MODES=$MODES, ROUNDS=$ROUNDS, DURATION=$DURATION s, WORKERS=$WORKERS, CHANNELS=$CHANNELS, LEASES=$LEASES, WATCHERS=$WATCHERS, RATE=$RATE)

Machine: $(nproc) cores ($CPU), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr); load average before the run $LOAD_BEFORE, after $LOAD_AFTER (each run's 1-minute load is in the raw lines). tenure $(git rev-parse --short HEAD) (release) and $(etcd --version | head -1), both started once and fsyncing, on the same machine in the same run; the order alternates each round.

| figure | etcd | tenure | tenure/etcd |
|---|---|---|---|
$TABLE_ROWS

<details><summary>Raw lines (grpc-load's RESULT, with the round, the 1-minute load and the server's RSS after the run)</summary>

\`\`\`
$(cat "$RAW")
\`\`\`
</details>
EOT
)
echo "$TABLE"
[ -n "${NO_APPEND:-}" ] || echo "$TABLE" >> ops/bench/RESULTS.md
