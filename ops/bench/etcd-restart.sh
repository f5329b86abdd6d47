#!/usr/bin/env bash
# etcd 3.4's restart to healthy with LEASES live leases, one key each: the
# figure to set beside tenure's (ops/bench/restart.sh). A measurement, not
# a test.
#
#   1. a fresh etcd; `mass-expiry --setup-only` grants LEASES leases (TTL a
#      day) and puts one key on each over the /v3 JSON gateway,
#      CONCURRENCY requests in flight;
#   2. etcd is killed (SIGKILL, as a crash) and restarted on its data dir,
#      timed from the spawn until `/health` answers {"health":"true"},
#      ROUNDS times.
#
#   flock /tmp/tenure-bench.lock bash ops/bench/etcd-restart.sh    # 1,000,000 leases
#   LEASES=300000 ROUNDS=3 bash ops/bench/etcd-restart.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

LEASES=${LEASES:-1000000}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-128}
ETCD_PORT=${ETCD_PORT:-22579}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-22580}

command -v etcd >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
}
cargo build --release -q -p tenure-bench
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release

WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
URL="http://127.0.0.1:$ETCD_PORT"

# Starts etcd on $WORK/etcd; leaves the seconds until /health said true in $TOOK.
start() {
  local t0 t1
  t0=$(date +%s.%N)
  etcd --data-dir "$WORK/etcd" --name bench \
    --listen-client-urls "$URL" --advertise-client-urls "$URL" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER_PORT" --quota-backend-bytes 8589934592 \
    --log-level error >>"$WORK/etcd.log" 2>&1 &
  PID=$!
  until curl -fs "$URL/health" 2>/dev/null | grep -q '"health":"true"'; do
    kill -0 "$PID" 2>/dev/null || { tail "$WORK/etcd.log"; exit 1; }
    sleep 0.01
  done
  t1=$(date +%s.%N)
  TOOK=$(echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}')
}
crash() {
  kill -KILL "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
}

start
echo "== etcd: granting $LEASES leases with a key each ($CONCURRENCY in flight)" >&2
"$BIN/mass-expiry" --endpoint "$URL" --leases "$LEASES" --lead 86400 --concurrency "$CONCURRENCY" --setup-only
crash
db_bytes=$(du -cb "$WORK/etcd" | tail -1 | cut -f1)

runs=()
for i in $(seq 1 "$ROUNDS"); do
  start
  runs+=("$TOOK")
  echo "etcd restart to healthy: $TOOK s" >&2
  crash
done
median=$(printf '%s\n' "${runs[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "median: $median s ($LEASES live leases, data dir $((db_bytes / 1048576)) MiB); runs: ${runs[*]}"
echo "RESULT etcd_restart_s=$median"
