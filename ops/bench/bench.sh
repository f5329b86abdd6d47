#!/usr/bin/env bash
# tenure's load benchmark (not a test). Starts the release server on a fresh
# data directory and measures, with wrk (-t2 -c64 -d10s --latency):
#   1. durable lease grants   POST /v1/leases
#   2. durable key puts       PUT  /v1/keys?key=...
# then a mass expiry: N leases with one key each, all due in the same second,
# timed until the last key is gone. Prints a table and appends it, with the
# command and the machine, to ops/bench/RESULTS.md.
#
#   bash ops/bench/bench.sh            # 100,000 leases for the mass expiry
#   LEASES=20000 bash ops/bench/bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

LEASES=${LEASES:-100000}
DURATION=${DURATION:-10s}
PORT=${PORT:-17070}

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release -q -p tenure -p tenure-bench

DATA=$(mktemp -d)
SERVER_PID=
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA"; }
trap cleanup EXIT

start_server() {
  RUST_LOG=warn target/release/tenure serve --data-dir "$DATA/$1" --listen "127.0.0.1:$PORT" >"$DATA/$1.out" 2>"$DATA/$1.err" &
  SERVER_PID=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start" >&2; cat "$DATA/$1.err" >&2; exit 1
}
stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" || true; SERVER_PID=; }

# wrk's "Requests/sec" and the 99th percentile latency, in ms.
run_wrk() {
  local out; out=$(wrk -t2 -c64 -d"$DURATION" --latency -s "$1" "$2")
  echo "$out" >&2
  local rps p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  local errors; errors=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  echo "$rps $p99 ${errors:-0}"
}

start_server grants
read -r GRANT_RPS GRANT_P99 GRANT_ERR < <(run_wrk ops/bench/grant.lua "http://127.0.0.1:$PORT/v1/leases")
stop_server

start_server puts
read -r PUT_RPS PUT_P99 PUT_ERR < <(run_wrk ops/bench/put.lua "http://127.0.0.1:$PORT")
stop_server

start_server expiry
MASS=$(target/release/mass-expiry --endpoint "http://127.0.0.1:$PORT" --leases "$LEASES")
echo "$MASS" >&2
LAST=$(sed -n 's/^RESULT last_key_gone_s=//p' <<<"$MASS")
SETUP=$(grep '^set-up' <<<"$MASS")
stop_server

CPU=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
TABLE=$(cat <<EOT

## $(date -u +%Y-%m-%d) — \`bash ops/bench/bench.sh\` (LEASES=$LEASES, wrk -t2 -c64 -d$DURATION)

Machine: $(nproc) cores ($CPU), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr); tenure $(git rev-parse --short HEAD) release build, SQLite WAL synchronous=FULL (fsync per commit).

| figure | tenure |
|---|---|
| lease grants, POST /v1/leases | $GRANT_RPS req/s, p99 $GRANT_P99 ms (non-2xx: $GRANT_ERR) |
| key puts, PUT /v1/keys | $PUT_RPS req/s, p99 $PUT_P99 ms (non-2xx: $PUT_ERR) |
| mass expiry of $LEASES leases with a key each, due in the same second | last key gone $LAST s after that second began |

$SETUP
EOT
)
echo "$TABLE"
echo "$TABLE" >> ops/bench/RESULTS.md
