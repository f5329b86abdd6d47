#!/usr/bin/env bash
# Two tenure binaries, alternating, on three nodes on one PostgreSQL schema,
# every request in account `default`, through all three at once (one
# `wrk -t1 -c21 --latency` per node). LOAD=put (the default, v3_put.lua):
# the hardest case for several nodes, one key space (one stream) whose
# appends conflict; LOAD=grant (v3_grant.lua): new streams only, no
# conflicts, every node's batches taking turns on the log. A comparison of
# two builds, not a figure against etcd: postgres.sh has that one.
#
# Per run and node: puts/s, p99, non-2xx answers (409s: a command that
# lost to other nodes' appends COMMAND_ATTEMPTS times), and from the
# node's /metrics the key space's rollbacks and activations.
#
#   flock /tmp/tenure-bench.lock bash ops/bench/pg3-ab.sh OLD_BINARY NEW_BINARY
#   ROUNDS=5 DURATION=5s bash ops/bench/pg3-ab.sh A B
#   LOAD=grant bash ops/bench/pg3-ab.sh A B
#
# Prints one line per run ("A ..." / "B ...", alternating); appends nothing.
set -uo pipefail
cd "$(dirname "$0")/../.."

[ $# -eq 2 ] || { echo "usage: $0 BINARY_A BINARY_B" >&2; exit 2; }
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
PORT=${PORT:-17170}
LOAD=${LOAD:-put}
LUA=$PWD/ops/bench/v3_$LOAD.lua
[ -f "$LUA" ] || { echo "LOAD is put or grant, not $LOAD" >&2; exit 2; }

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
psql "$PG_URL" -Atqc 'SELECT 1' >/dev/null || { echo "PostgreSQL does not answer at $PG_URL" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
SCHEMA=
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  [ -n "$SCHEMA" ] && psql "$PG_URL" -Atqc "DROP SCHEMA IF EXISTS \"$SCHEMA\" CASCADE" >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT

metric() { # PORT NAME: the sample's value on that node's /metrics
  curl -fs "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'
}

run() { # BINARY TAG
  SCHEMA="pg3ab_$$_$RANDOM"
  local dir="$WORK/$2" line="$2" sum=0
  mkdir -p "$dir"
  for i in 1 2 3; do
    local port=$((PORT + i))
    RUST_LOG=warn "$1" serve --grpc-listen off --data-dir "$dir/node$i" --store "$PG_URL?schema=$SCHEMA" \
      --listen "127.0.0.1:$port" --advertise-url "http://127.0.0.1:$port" --proxy-listen 127.0.0.1:0 \
      >"$dir/node$i.log" 2>&1 &
    PIDS+=($!)
  done
  for i in 1 2 3; do
    for _ in $(seq 1 300); do curl -fs "http://127.0.0.1:$((PORT + i))/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  done
  local wrks=()
  for i in 1 2 3; do
    wrk -t1 -c21 -d"$DURATION" --latency -s "$LUA" "http://127.0.0.1:$((PORT + i))" >"$dir/wrk$i" 2>&1 &
    wrks+=($!)
  done
  wait "${wrks[@]}"
  for i in 1 2 3; do
    local port=$((PORT + i)) rps p99 non
    rps=$(awk '/Requests\/sec/ {print int($2)}' "$dir/wrk$i")
    p99=$(awk '$1 == "99%" {print $2}' "$dir/wrk$i")
    non=$(awk '/Non-2xx/ {print $5}' "$dir/wrk$i")
    sum=$((sum + ${rps:-0}))
    line="$line node$i=${rps}/s p99=$p99 non2xx=${non:-0}"
    line="$line rollbacks=$(metric "$port" tenure_keyspace_rollbacks_total)"
    line="$line activations=$(metric "$port" 'tenure_actors_activated_total{kind="keyspace"}');"
  done
  echo "$line sum=$sum"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  PIDS=()
  psql "$PG_URL" -Atqc "DROP SCHEMA IF EXISTS \"$SCHEMA\" CASCADE" >/dev/null 2>&1
  SCHEMA=
}

echo "$(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p' | head -1)), LOAD=$LOAD, $DURATION per run, $ROUNDS rounds; A=$1 B=$2"
for _ in $(seq 1 "$ROUNDS"); do
  run "$1" A
  run "$2" B
done
