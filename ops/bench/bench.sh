#!/usr/bin/env bash
# tenure against etcd, side by side, in one run on this machine (a benchmark,
# not a test). Both servers are durable: etcd fsyncs its WAL before it
# answers, tenure commits to SQLite with synchronous=FULL.
#
#   1. wrk -t2 -c64 -d10s --latency on POST /v3/lease/grant, each server fresh;
#   2. the same on POST /v3/kv/put (10,000 rotating keys);
#   3. mass expiry: N leases with a key each, all due in the same second, on
#      each server: time from the last deadline until the last key is gone.
#
# Prints a table with each figure and the ratio tenure/etcd, and appends it,
# with the command and the machine, to ops/bench/RESULTS.md.
#
#   bash ops/bench/bench.sh                  # N = 100,000
#   LEASES=20000 DURATION=5s bash ops/bench/bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

LEASES=${LEASES:-100000}
DURATION=${DURATION:-10s}
TENURE_PORT=${TENURE_PORT:-17070}
ETCD_PORT=${ETCD_PORT:-22379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-22380}
BIN=${CARGO_TARGET_DIR:-target}/release

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v etcd >/dev/null || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release -q -p tenure -p tenure-bench

# One server at a time: start, wait_ready, stop, median.
. ops/bench/lib.sh

# wrk's requests/s, its p99 latency in ms, and the non-2xx count.
run_wrk() { # SCRIPT URL
  local out; out=$(wrk -t2 -c64 -d"$DURATION" --latency -s "$1" "$2")
  echo "$out" >&2
  local rps p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  echo "$rps $p99 ${errors:-0}"
}

declare -A R
for server in etcd tenure; do
  for load in grant put; do
    start "$server" "$server-$load"
    echo "== $server $load" >&2
    read -r R[$server.$load.rps] R[$server.$load.p99] R[$server.$load.err] < <(run_wrk "ops/bench/v3_$load.lua" "$URL")
    stop
  done
done

for server in tenure etcd; do
  start "$server" "$server-expiry"
  echo "== $server mass expiry of $LEASES leases" >&2
  # etcd sets up ~3k grant+put pairs a second: give it the lead it needs.
  if [ "$server" = etcd ]; then lead=$(( LEASES / 1000 + 30 )); else lead=$(( LEASES / 3000 + 20 )); fi
  out=$("$BIN/mass-expiry" --endpoint "$URL" --leases "$LEASES" --lead "$lead")
  echo "$out" >&2
  R[$server.expiry]=$(sed -n 's/^RESULT last_key_gone_after_deadline_s=//p' <<<"$out")
  stop
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

CPU=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
TABLE=$(cat <<EOT

## $(date -u +%Y-%m-%d) — \`bash ops/bench/bench.sh\` (LEASES=$LEASES, wrk -t2 -c64 -d$DURATION --latency)

Machine: $(nproc) cores ($CPU), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr). tenure $(git rev-parse --short HEAD) (release, SQLite WAL synchronous=FULL) and $(etcd --version | head -1) (fsync on), each fresh for each figure, on the same machine in the same run.

| figure | etcd | tenure | tenure/etcd |
|---|---|---|---|
| lease grants, POST /v3/lease/grant, req/s | ${R[etcd.grant.rps]} | ${R[tenure.grant.rps]} | $(ratio "${R[tenure.grant.rps]}" "${R[etcd.grant.rps]}") |
| lease grants, p99 ms | ${R[etcd.grant.p99]} | ${R[tenure.grant.p99]} | $(ratio "${R[tenure.grant.p99]}" "${R[etcd.grant.p99]}") |
| key puts, POST /v3/kv/put, req/s | ${R[etcd.put.rps]} | ${R[tenure.put.rps]} | $(ratio "${R[tenure.put.rps]}" "${R[etcd.put.rps]}") |
| key puts, p99 ms | ${R[etcd.put.p99]} | ${R[tenure.put.p99]} | $(ratio "${R[tenure.put.p99]}" "${R[etcd.put.p99]}") |
| mass expiry of $LEASES leases with a key each, due in the same second: last key gone, s after the last deadline | ${R[etcd.expiry]} | ${R[tenure.expiry]} | $(ratio "${R[tenure.expiry]}" "${R[etcd.expiry]}") |

Non-2xx answers: etcd ${R[etcd.grant.err]} / ${R[etcd.put.err]}, tenure ${R[tenure.grant.err]} / ${R[tenure.put.err]} (grants / puts).
EOT
)
echo "$TABLE"
echo "$TABLE" >> ops/bench/RESULTS.md
