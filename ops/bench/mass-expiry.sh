#!/usr/bin/env bash
# Mass expiry at scale, tenure and etcd 3.4 side by side in one run (issue
# 13: "1,000,000 leases due in one second: last key gone after the last
# deadline <= 10 s"). A measurement, not a test.
#
# For each server, fresh: `mass-expiry` grants LEASES leases over the /v3
# JSON gateway, each with one key, all due in the same second (TTLs chosen
# so every deadline falls in [due, due + 1 s)), then counts the keys every
# 20 ms and prints how long after the last deadline the last one went.
#
# etcd revokes at most ~1,000 expired leases a second (its lessor's
# leaseRevokeRate), so a million would take ~1,000 s: it runs with
# ETCD_LEASES (default 100,000, ~100 s) and the table states the
# extrapolation.
#
# Set-up goes over HTTP, CONCURRENCY requests in flight; LEAD seconds must
# cover it (the due second is fixed before the first grant).
#
#   flock /tmp/tenure-bench.lock bash ops/bench/mass-expiry.sh          # 1M / 100k
#   LEASES=100000 ETCD_LEASES=20000 bash ops/bench/mass-expiry.sh
#   SERVERS=tenure bash ops/bench/mass-expiry.sh                      # one server
#   TENURE_ARGS="--passivate-after 5" ...   # extra flags for tenure serve
set -euo pipefail
cd "$(dirname "$0")/../.."

LEASES=${LEASES:-1000000}
ETCD_LEASES=${ETCD_LEASES:-100000}
CONCURRENCY=${CONCURRENCY:-128}
# Set-up runs at ~5-6k grant+put pairs/s against tenure on 2 cores, ~2k/s
# against etcd; the lead leaves room for a loaded machine.
LEAD=${LEAD:-$((LEASES / 3500 + 30))}
ETCD_LEAD=${ETCD_LEAD:-$((ETCD_LEASES / 1000 + 30))}
SERVERS=${SERVERS:-tenure etcd}
TENURE_PORT=${TENURE_PORT:-17080}
ETCD_PORT=${ETCD_PORT:-22479}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-22480}
RECORD=${RECORD:-1}
TENURE_ARGS=${TENURE_ARGS:-}

command -v etcd >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
}
cargo build --release -q -p tenure -p tenure-bench
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release

# One server at a time: start, wait_ready, stop, median. A million
# leases' snapshot takes a while to load: up to a minute.
. ops/bench/lib.sh
READY_TRIES=600

declare -A N R SETUP
for server in $SERVERS; do
  if [ "$server" = etcd ]; then n=$ETCD_LEASES lead=$ETCD_LEAD; else n=$LEASES lead=$LEAD; fi
  args=()
  # shellcheck disable=SC2206 # TENURE_ARGS is split into arguments
  if [ "$server" = etcd ]; then args=(--quota-backend-bytes 8589934592); else args=($TENURE_ARGS); fi
  start "$server" "$server" "${args[@]}"
  echo "== $server: mass expiry of $n leases (lead $lead s, $CONCURRENCY in flight), load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  out=$("$BIN/mass-expiry" --endpoint "$URL" --leases "$n" --lead "$lead" --concurrency "$CONCURRENCY")
  echo "$out" >&2
  N[$server]=$n
  R[$server]=$(sed -n 's/^RESULT last_key_gone_after_deadline_s=//p' <<<"$out")
  SETUP[$server]=$(sed -n 's/^set-up: .* (\([0-9]*\) grant+put pairs\/s)$/\1/p' <<<"$out")
  stop
done

load=$(cut -d' ' -f1-3 /proc/loadavg)
echo
for server in $SERVERS; do
  echo "$server: ${N[$server]} leases, last key gone ${R[$server]} s after the last deadline (set-up ${SETUP[$server]} pairs/s)"
done
[ "$RECORD" = 1 ] || exit 0

rate() { awk -v n="$1" -v s="$2" 'BEGIN {printf "%.0f", n / (s + 1)}'; } # leases expired per second, over the due second and after
{
  echo
  echo "## Mass expiry at scale ($(git rev-parse --short HEAD), $(date -u +%Y-%m-%d))"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB; load average at the end $load."
  echo "Command: \`LEASES=$LEASES ETCD_LEASES=$ETCD_LEASES CONCURRENCY=$CONCURRENCY flock /tmp/tenure-bench.lock bash ops/bench/mass-expiry.sh\` (etcd $(etcd --version | awk '/etcd Version/ {print $3}'), each server fresh, set-up over /v3 with $CONCURRENCY requests in flight)."
  echo
  echo "| server | leases due in one second | last key gone, s after the last deadline | expired per s | set-up, grant+put pairs/s |"
  echo "|---|---|---|---|---|"
  for server in $SERVERS; do
    echo "| $server | ${N[$server]} | ${R[$server]} | $(rate "${N[$server]}" "${R[$server]}") | ${SETUP[$server]} |"
  done
} >>ops/bench/RESULTS.md
