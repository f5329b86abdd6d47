#!/usr/bin/env bash
# CPU per durable request, tenure against etcd 3.4 side by side in one run on
# this machine (a benchmark, not a test). Both servers are durable: etcd
# fsyncs its WAL before it answers, tenure commits to SQLite with
# synchronous=FULL.
#
# For each server, fresh for each figure: `cpu-load` sends $PUTS
# POST /v3/kv/put (10,000 rotating keys) or $GRANTS POST /v3/lease/grant,
# $CONCURRENCY in flight, after a warm-up, and reads the server process's
# utime + stime from /proc/PID/stat before and after. CPU microseconds per
# request do not depend on how the load generator shares the cores.
# $RANGES serializable POST /v3/kv/range of missing keys (nothing written) measure the
# floor that the HTTP stack and request handling put under every request;
# a durable request's CPU beyond it is the write path's (tenure only:
# etcd's gateway range costs as much as its put, or more).
# $ROUNDS rounds, the order alternating; medians reported.
#
# Prints a table and appends it, with the command and the machine, to
# ops/bench/RESULTS.md (NO_APPEND=1: print only).
#
#   flock /tmp/tenure-bench.lock bash ops/bench/cpu.sh
#   PUTS=50000 GRANTS=20000 ROUNDS=1 NO_APPEND=1 bash ops/bench/cpu.sh
#   SERVERS=tenure TENURE_ARGS="--actor-threads 2" bash ops/bench/cpu.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

PUTS=${PUTS:-200000}
GRANTS=${GRANTS:-100000}
RANGES=${RANGES:-100000}
CONCURRENCY=${CONCURRENCY:-64}
ROUNDS=${ROUNDS:-3}
SERVERS=${SERVERS:-"etcd tenure"}
TENURE_PORT=${TENURE_PORT:-17074}
ETCD_PORT=${ETCD_PORT:-22399}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-22400}
BIN=${CARGO_TARGET_DIR:-target}/release
# Extra arguments to `tenure serve` (e.g. TENURE_ARGS="--actor-threads 2").
TENURE_ARGS=${TENURE_ARGS:-}

command -v etcd >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
}
LOAD=$(cut -d" " -f1-3 /proc/loadavg)
cargo build --release -q -p tenure -p tenure-bench

# One server at a time: start, wait_ready, stop, median.
. ops/bench/lib.sh

minus() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.1f", a - b; else print "-" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.1f", a / b; else print "-" }'; }

declare -A R
LOADS="put grant range"
for server in $SERVERS; do for load in $LOADS; do R[$server.$load]=""; R[$server.$load.rps]=""; done; done
ERRORS=0
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="$SERVERS"; else order=$(tr ' ' '\n' <<<"$SERVERS" | tac | tr '\n' ' '); fi
  for server in $order; do
    for load in $LOADS; do
      case $load in put) count=$PUTS ;; grant) count=$GRANTS ;; *) count=$RANGES ;; esac
      args=()
      # shellcheck disable=SC2206 # TENURE_ARGS is split into arguments
      [ "$server" = tenure ] && args=($TENURE_ARGS)
      start "$server" "$server-$load-$round" "${args[@]}"
      echo "== $server $load, round $round" >&2
      out=$("$BIN/cpu-load" --endpoint "$URL" --pid "$PID" --load "$load" --requests "$count" --concurrency "$CONCURRENCY")
      echo "$out" >&2
      result=$(sed -n 's/^RESULT //p' <<<"$out")
      us=$(sed -n 's/.*cpu_us_per_request=\([^ ]*\).*/\1/p' <<<"$result")
      rps=$(sed -n 's/.*requests_per_s=\([^ ]*\).*/\1/p' <<<"$result")
      err=$(sed -n 's/.*errors=\([^ ]*\).*/\1/p' <<<"$result")
      R[$server.$load]+=" $us"; R[$server.$load.rps]+=" $rps"; ERRORS=$((ERRORS + err))
      stop
    done
  done
done
for server in $SERVERS; do
  for load in $LOADS; do
    R[$server.$load.median]=$(median <<<"${R[$server.$load]}")
    R[$server.$load.rps.median]=$(median <<<"${R[$server.$load.rps]}")
  done
done
# A server left out (SERVERS=tenure, SERVERS=etcd) shows as "-".
for server in etcd tenure; do for load in $LOADS; do for key in $server.$load $server.$load.rps; do
  [ -n "${R[$key.median]:-}" ] || R[$key.median]=-
  [ -n "${R[$key]:-}" ] || R[$key]=" -"
done; done; done

# Whole outputs read (no `head`, no `exit`): under pipefail a writer cut
# off by SIGPIPE would end the script here.
CPU=$(lscpu | awk -F: '/Model name/ && !seen++ {gsub(/^ +/, "", $2); print $2}')
ETCD_VERSION=$(etcd --version | sed -n 1p)
TABLE=$(cat <<EOT

### $(date -u +%Y-%m-%d) — \`bash ops/bench/cpu.sh\` (PUTS=$PUTS, GRANTS=$GRANTS, RANGES=$RANGES, CONCURRENCY=$CONCURRENCY, $ROUNDS rounds)

Machine: $(nproc) cores ($CPU), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), load average before the run $LOAD. tenure $(git rev-parse --short HEAD)${TENURE_ARGS:+ (serve $TENURE_ARGS)} (release, SQLite WAL synchronous=FULL) and $ETCD_VERSION (fsync on), each fresh for each figure, on the same machine in the same run. Server CPU = utime + stime of the server process from /proc/PID/stat around the measured requests (after 5,000 warm-up requests).

| server CPU per durable request (median of $ROUNDS) | etcd | tenure | etcd/tenure |
|---|---|---|---|
| POST /v3/kv/put, CPU µs per put (rounds:${R[etcd.put]} /${R[tenure.put]}) | ${R[etcd.put.median]} | ${R[tenure.put.median]} | $(ratio "${R[etcd.put.median]}" "${R[tenure.put.median]}")x |
| POST /v3/lease/grant, CPU µs per grant (rounds:${R[etcd.grant]} /${R[tenure.grant]}) | ${R[etcd.grant.median]} | ${R[tenure.grant.median]} | $(ratio "${R[etcd.grant.median]}" "${R[tenure.grant.median]}")x |
| POST /v3/kv/range of a missing key, serializable (writes nothing: the floor under every request), CPU µs (rounds:${R[etcd.range]} /${R[tenure.range]}) | ${R[etcd.range.median]} | ${R[tenure.range.median]} | $(ratio "${R[etcd.range.median]}" "${R[tenure.range.median]}")x |
| tenure: a put beyond that floor, CPU µs | | $(minus "${R[tenure.put.median]}" "${R[tenure.range.median]}") | |
| tenure: a grant beyond that floor, CPU µs | | $(minus "${R[tenure.grant.median]}" "${R[tenure.range.median]}") | |
| puts/s while measured (median) | ${R[etcd.put.rps.median]} | ${R[tenure.put.rps.median]} | |
| grants/s while measured (median) | ${R[etcd.grant.rps.median]} | ${R[tenure.grant.rps.median]} | |
| ranges/s while measured (median) | ${R[etcd.range.rps.median]} | ${R[tenure.range.rps.median]} | |

Failed requests: $ERRORS.
EOT
)
echo "$TABLE"
[ -n "${NO_APPEND:-}" ] || echo "$TABLE" >> ops/bench/RESULTS.md
