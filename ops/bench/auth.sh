#!/usr/bin/env bash
# What bearer-token auth costs: durable puts (POST /v3/kv/put, 10,000
# rotating keys) on a local-mode server and on an --auth server with an
# account token, side by side in one run (a benchmark, not a test).
#
# Prints both figures and the ratio auth/local, and appends them, with the
# command and the machine, to ops/bench/RESULTS.md.
#
#   bash ops/bench/auth.sh
#   DURATION=5s bash ops/bench/auth.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
PORT=${TENURE_PORT:-17071}
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q -p tenure

WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
URL="http://127.0.0.1:$PORT"
head -c 32 /dev/urandom | base64 | tr -d '/+=' >"$WORK/admin"

start() { # NAME [serve args...]
  local name=$1; shift
  RUST_LOG=warn target/release/tenure serve --grpc-listen off --data-dir "$WORK/$name" --listen "127.0.0.1:$PORT" "$@" >"$WORK/$name.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 200); do curl -fs "$URL/healthz" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "tenure did not start" >&2; exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }

run() { # SCRIPT -> "rps p99_ms"
  wrk -t2 -c64 -d"$DURATION" --latency -s "$1" "$URL" >"$WORK/wrk.out"
  if grep -q "Non-2xx" "$WORK/wrk.out"; then cat "$WORK/wrk.out" >&2; echo "errors during the run" >&2; exit 1; fi
  local rps p99
  rps=$(awk '/Requests\/sec/ {printf "%d", $2}' "$WORK/wrk.out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v/=1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v*=1000}; printf "%.2f", v}' "$WORK/wrk.out")
  echo "$rps $p99"
}

start local
read -r local_rps local_p99 < <(run ops/bench/v3_put.lua)
stop

start auth --auth --admin-token-file "$WORK/admin"
export TENURE_ENDPOINT=$URL
TENURE_TOKEN=$(cat "$WORK/admin") target/release/tenure account create bench >/dev/null
TOKEN=$(TENURE_TOKEN=$(cat "$WORK/admin") target/release/tenure account token create bench 2>/dev/null)
sed "s|{ \[\"Content-Type\"\] = \"application/json\" }|{ [\"Content-Type\"] = \"application/json\", [\"Authorization\"] = \"Bearer $TOKEN\" }|" \
  ops/bench/v3_put.lua >"$WORK/put_auth.lua"
grep -q Authorization "$WORK/put_auth.lua" || { echo "could not add the token to the wrk script" >&2; exit 1; }
read -r auth_rps auth_p99 < <(run "$WORK/put_auth.lua")
stop

ratio=$(awk -v a="$auth_rps" -v l="$local_rps" 'BEGIN {printf "%.2f", a / l}')
p99_ratio=$(awk -v a="$auth_p99" -v l="$local_p99" 'BEGIN {printf "%.2f", a / l}')
table=$(cat <<TABLE
| puts, wrk -t2 -c64 -d$DURATION | local mode | --auth, account token | auth / local |
|---|---|---|---|
| requests/s | $local_rps | $auth_rps | $ratio |
| p99 | $local_p99 ms | $auth_p99 ms | $p99_ratio |
TABLE
)
echo "$table"
{
  echo
  echo "### Auth overhead, $(date -u +%Y-%m-%d)"
  echo
  echo "\`bash ops/bench/auth.sh\` (DURATION=$DURATION) on $(nproc) cores, $(awk '/MemTotal/ {printf "%d GiB", $2/1048576}' /proc/meminfo), $(uname -sr)."
  echo
  echo "$table"
} >>ops/bench/RESULTS.md
