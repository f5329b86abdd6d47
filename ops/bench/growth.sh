#!/usr/bin/env bash
# Puts as the key space grows: CPU per put, p99 and the longest put while a
# server's key count climbs past a million (issue 13: a million leases with
# a key each). A benchmark, not a test.
#
# For each server in $SERVERS (fresh, its own data dir): $STEPS runs of
# `grpc-load --mode put` ($WORKERS callers on $CHANNELS HTTP/2 connections,
# each put a new key), $SECONDS s each, back to back on the same server, so
# each step starts with the keys of the steps before it. Each step's line:
# the keys before it, puts/s, p99 and max latency, and the server's CPU
# microseconds per put. etcd 3.4 is measured the same way in the same run.
#
#   bash ops/bench/growth.sh
#   SERVERS=tenure TENURE_BIN=/tmp/tenure-old NO_APPEND=1 bash ops/bench/growth.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

# One benchmark at a time on this machine.
if [ -z "${TENURE_BENCH_LOCKED:-}" ]; then
  exec env TENURE_BENCH_LOCKED=1 flock /tmp/tenure-bench.lock bash "$0" "$@"
fi

STEPS=${STEPS:-6}
SECONDS_EACH=${SECONDS_EACH:-8}
WORKERS=${WORKERS:-64}
CHANNELS=${CHANNELS:-8}
SERVERS=${SERVERS:-"etcd tenure"}
GRPC_PORT=${GRPC_PORT:-17379}
TENURE_PORT=${TENURE_PORT:-17075}
ETCD_PORT=${ETCD_PORT:-22399}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-22400}
BIN=${CARGO_TARGET_DIR:-target}/release
command -v etcd >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
}
LOAD=$(cut -d" " -f1-3 /proc/loadavg)
cargo build --release -q -p tenure -p tenure-bench
# The tenure measured (an older build for an A/B, say); the load generator is this tree's.
TENURE_BIN=${TENURE_BIN:-$BIN/tenure}

. ops/bench/lib.sh

ROWS=""
for server in $SERVERS; do
  case $server in
    etcd)
      start etcd etcd
      endpoint="http://127.0.0.1:$ETCD_PORT"
      ;;
    tenure)
      RUST_LOG=warn "$TENURE_BIN" serve --grpc-listen "127.0.0.1:$GRPC_PORT" --data-dir "$WORK/tenure" \
        --listen "127.0.0.1:$TENURE_PORT" --proxy-listen 127.0.0.1:0 >"$WORK/tenure.log" 2>&1 &
      PID=$!
      wait_ready "http://127.0.0.1:$TENURE_PORT"
      endpoint="http://127.0.0.1:$GRPC_PORT"
      ;;
  esac
  keys=0
  for step in $(seq 1 "$STEPS"); do
    out=$("$BIN/grpc-load" --mode put --label "$server" --endpoint "$endpoint" --seconds "$SECONDS_EACH" \
      --workers "$WORKERS" --channels "$CHANNELS" --server-pid "$PID" | sed -n 's/^RESULT //p')
    row=$(python3 -c 'import json, sys
d = json.loads(sys.argv[1])
print("| %s | %s | {:,} | {:,.0f} | %.1f | %.0f | %.1f | %d |".format(int(sys.argv[4]), d["rps"])
      % (sys.argv[2], sys.argv[3], d["p99_ms"], d["max_ms"], d["server_cpu_us"], d["errors"]))' \
      "$out" "$server" "$step" "$keys")
    echo "$row"
    ROWS+="$row"$'\n'
    keys=$((keys + $(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["ok"])' "$out")))
  done
  stop
done

CPU=$(lscpu | awk -F: '/Model name/ && !seen++ {gsub(/^ +/, "", $2); print $2}')
TABLE=$(cat <<EOT

### $(date -u +%Y-%m-%d) — \`bash ops/bench/growth.sh\` (STEPS=$STEPS, SECONDS_EACH=$SECONDS_EACH, WORKERS=$WORKERS, CHANNELS=$CHANNELS)

Machine: $(nproc) cores ($CPU), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), load average before the run $LOAD. tenure $(git rev-parse --short HEAD) ($TENURE_BIN) and $(etcd --version | sed -n 1p), each fresh, one after the other in the same run; gRPC puts of new keys, the steps back to back on one server.

| server | step | keys before it | puts/s | p99 ms | max ms | server CPU µs per put | errors |
|---|---|---|---|---|---|---|---|
$ROWS
EOT
)
echo "$TABLE"
[ -n "${NO_APPEND:-}" ] || echo "$TABLE" >> ops/bench/RESULTS.md
