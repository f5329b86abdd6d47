#!/usr/bin/env bash
# Keep-alives, tenure against etcd 3.4 side by side in one run on this machine
# (a benchmark, not a test). Neither writes a keep-alive to its log: etcd's
# leader renews in memory, tenure moves the deadline in its expiry queue.
#
#   1. throughput: on each fresh server, $IDS leases of 600 s, then
#      wrk -t2 -c64 -d$DURATION --latency on POST /v3/lease/keepalive, one
#      keep-alive per request, rotating over those leases; $ROUNDS rounds,
#      the order alternating; medians reported;
#   2. log growth (tenure): $LEASES leases of 60 s kept alive every 20 s for
#      $SECONDS_KEPT s by `keepalive-load`; the log's head (GET /healthz)
#      before and after, and the leases still live after.
#
# Prints a table and appends it, with the command and the machine, to
# ops/bench/RESULTS.md.
#
#   bash ops/bench/keepalive.sh
#   DURATION=5s ROUNDS=1 LEASES=10000 bash ops/bench/keepalive.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

IDS=${IDS:-10000}
LEASES=${LEASES:-100000}
SECONDS_KEPT=${SECONDS_KEPT:-60}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
TENURE_PORT=${TENURE_PORT:-17073}
ETCD_PORT=${ETCD_PORT:-22389}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-22390}
BIN=${CARGO_TARGET_DIR:-target}/release

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v etcd >/dev/null || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
LOAD=$(cut -d" " -f1-3 /proc/loadavg)
cargo build --release -q -p tenure -p tenure-bench

# One server at a time: start, wait_ready, stop, median.
. ops/bench/lib.sh

# wrk's requests/s, its p99 latency in ms, non-2xx answers, and answers
# without a TTL (lease not found).
run_wrk() { # URL IDS_FILE
  local out; out=$(wrk -t2 -c64 -d"$DURATION" --latency -s ops/bench/v3_keepalive.lua "$1" -- "$2")
  echo "$out" >&2
  local rps p99 errors lost
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  lost=$(awk '/^LOST/ {print $2}' <<<"$out")
  echo "$rps $p99 ${errors:-0} ${lost:-?}"
}


declare -A R
for server in etcd tenure; do R[$server.rps]=""; R[$server.p99]=""; R[$server.err]=0; R[$server.lost]=0; done
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="etcd tenure"; else order="tenure etcd"; fi
  for server in $order; do
    start "$server" "$server-keepalive-$round"
    "$BIN/keepalive-load" --endpoint "$URL" --leases "$IDS" --ttl 600 --seconds 0 --ids-out "$WORK/ids-$server" >&2
    echo "== $server keep-alives, round $round" >&2
    read -r rps p99 err lost < <(run_wrk "$URL" "$WORK/ids-$server")
    R[$server.rps]+=" $rps"; R[$server.p99]+=" $p99"
    R[$server.err]=$(( R[$server.err] + err )); R[$server.lost]=$(( R[$server.lost] + lost ))
    stop
  done
done
for server in etcd tenure; do
  R[$server.rps.median]=$(median <<<"${R[$server.rps]}")
  R[$server.p99.median]=$(median <<<"${R[$server.p99]}")
done

start tenure tenure-growth
echo "== tenure: $LEASES leases kept alive for $SECONDS_KEPT s" >&2
out=$("$BIN/keepalive-load" --endpoint "$URL" --leases "$LEASES" --ttl 60 --seconds "$SECONDS_KEPT")
echo "$out" >&2
GROWTH=$(sed -n 's/^RESULT //p' <<<"$out")
KEPT=$(grep '^kept ' <<<"$out")
stop

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

CPU=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
TABLE=$(cat <<EOT

## $(date -u +%Y-%m-%d) — \`bash ops/bench/keepalive.sh\` (IDS=$IDS, LEASES=$LEASES, SECONDS_KEPT=$SECONDS_KEPT, wrk -t2 -c64 -d$DURATION --latency, $ROUNDS rounds)

Machine: $(nproc) cores ($CPU), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), load average before the run $LOAD. tenure $(git rev-parse --short HEAD) (release) and $(etcd --version | head -1), each fresh for each round, on the same machine in the same run.

| figure | etcd | tenure | tenure/etcd |
|---|---|---|---|
| keep-alives, POST /v3/lease/keepalive over $IDS leases, req/s (median; rounds:${R[etcd.rps]} /${R[tenure.rps]}) | ${R[etcd.rps.median]} | ${R[tenure.rps.median]} | $(ratio "${R[tenure.rps.median]}" "${R[etcd.rps.median]}") |
| keep-alives, p99 ms (median) | ${R[etcd.p99.median]} | ${R[tenure.p99.median]} | $(ratio "${R[tenure.p99.median]}" "${R[etcd.p99.median]}") |
| log growth from $LEASES leases kept alive (TTL 60 s, a round over all of them every 20 s) for $SECONDS_KEPT s | — | $GROWTH | |

Non-2xx answers: etcd ${R[etcd.err]}, tenure ${R[tenure.err]}; answers without a TTL (lease not found): etcd ${R[etcd.lost]}, tenure ${R[tenure.lost]}. Log growth run: $KEPT.
EOT
)
echo "$TABLE"
echo "$TABLE" >> ops/bench/RESULTS.md
