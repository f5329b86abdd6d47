#!/usr/bin/env bash
# Bytes of memory per live lease (issue 13: 1,000,000 live leases with one
# key each in at most 300 B of RSS a lease; etcd ~330 B). A measurement, not
# a test. For each server and each KEYS value, on a fresh data dir:
#
#   1. start the server, wait until /healthz answers, read its RSS (VmRSS
#      and RssAnon of /proc/PID/status): the empty server;
#   2. `lease-load` grants LEASES leases of TTL seconds (a day: none
#      expires) over /v3/lease/grant, with KEYS key(s) each over /v3/kv/put;
#   3. tenure: wait until every lease actor has passivated (the server runs
#      with --passivate-after 1; polls tenure_actors_active{kind="lease"} on
#      /metrics) and the projections have caught up, then read the RSS: the
#      live server; etcd: read it once the load is done;
#      then again once RSS has stopped falling (the allocator returns
#      freed pages over ~10 s): the live server, settled;
#   4. stop the server cleanly (tenure writes its snapshots), start it again
#      on the same data dir, wait for /healthz (and for its projections) and
#      read the RSS: the state after a restart, which holds only what the
#      snapshots restore, not what the load left in the allocator.
#
# Bytes per lease = (RSS - RSS of the empty server) / LEASES. Prints the
# figures and appends them, with the command, the commit and the machine,
# to ops/bench/RESULTS.md. Hold the benchmark lock; etcd is slow to load
# (about 3k grants/s), so run it in its own hold:
#
#   flock /tmp/tenure-bench.lock bash ops/bench/memory.sh              # tenure, 0 and 1 key
#   SERVERS=etcd KEYS=1 flock /tmp/tenure-bench.lock bash ops/bench/memory.sh
#   LEASES=100000 bash ops/bench/memory.sh                             # a quick look
#   PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 KEYS=1 bash ops/bench/memory.sh
#                                  # tenure on another malloc: how much of the live
#                                  # figure is memory glibc's malloc keeps
set -euo pipefail
cd "$(dirname "$0")/../.."

LEASES=${LEASES:-1000000}
TTL=${TTL:-86400}
KEYS=${KEYS:-0 1}
SERVERS=${SERVERS:-tenure}
CONCURRENCY=${CONCURRENCY:-64}
PRELOAD=${PRELOAD:-}
TENURE_PORT=${TENURE_PORT:-17370}
PROXY_PORT=${PROXY_PORT:-17371}
ETCD_PORT=${ETCD_PORT:-22479}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-22480}

missing=()
command -v curl >/dev/null || missing+=(curl)
if [[ " $SERVERS " == *" etcd "* ]] && ! command -v etcd >/dev/null; then missing+=(etcd-server); fi
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release -q -p tenure -p tenure-bench
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# VmRSS and RssAnon of $PID, in KiB.
rss() { awk '/^VmRSS:/ {r=$2} /^RssAnon:/ {a=$2} END {print r, a}' "/proc/$PID/status"; }

metric() { # NAME{LABELS}: its value on tenure's /metrics (0 if absent)
  curl -fsS "http://127.0.0.1:$TENURE_PORT/metrics" | awk -v m="$1" '$1 == m {v=$2} END {print v+0}'
}

start() { # SERVER DIR
  if [ "$1" = etcd ]; then
    etcd --data-dir "$2" --name mem \
      --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
      --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster "mem=http://127.0.0.1:$ETCD_PEER_PORT" --log-level error >>"$2.log" 2>&1 &
    PID=$!
    URL="http://127.0.0.1:$ETCD_PORT"
    READY="$URL/health"
  else
    RUST_LOG=warn LD_PRELOAD=$PRELOAD "$BIN/tenure" serve --grpc-listen off --data-dir "$2" --listen "127.0.0.1:$TENURE_PORT" \
      --proxy-listen "127.0.0.1:$PROXY_PORT" --passivate-after 1 >>"$2.log" 2>&1 &
    PID=$!
    URL="http://127.0.0.1:$TENURE_PORT"
    READY="$URL/healthz"
  fi
  for _ in $(seq 1 1200); do
    curl -fs "$READY" >/dev/null 2>&1 && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "$1 did not start:" >&2
  tail -20 "$2.log" >&2
  exit 1
}

stop() {
  kill -TERM "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
}

# tenure: until no lease actor is active and no projection lags (at most
# 5 minutes); prints the active actors by kind.
settle() {
  local lease lag
  for _ in $(seq 1 3000); do
    lease=$(metric 'tenure_actors_active{kind="lease"}')
    lag=$(curl -fsS "$URL/metrics" | awk '/^tenure_projection_lag_positions/ {s+=$2} END {print s+0}')
    [ "$lease" = 0 ] && [ "$lag" = 0 ] && break
    sleep 0.1
  done
  curl -fsS "$URL/metrics" | awk '/^tenure_actors_active/ {gsub(/.*kind="|"}/, "", $1); printf "%s=%s ", $1, $2}'
}

declare -A R
rows=()
for server in $SERVERS; do
  for keys in $KEYS; do
    dir="$WORK/$server-$keys"
    echo "== $server, $LEASES leases, $keys key(s) each"
    start "$server" "$dir"
    read -r empty empty_anon < <(rss)
    echo "empty: VmRSS $empty KiB (anon $empty_anon)"
    load=$("$BIN/lease-load" --endpoint "$URL" --leases "$LEASES" --ttl "$TTL" --keys "$keys" \
      --concurrency "$CONCURRENCY")
    echo "$load"
    actors=
    [ "$server" = tenure ] && actors=$(settle)
    read -r live live_anon < <(rss)
    echo "live: VmRSS $live KiB (anon $live_anon) ${actors:+active actors: $actors}"
    # The allocator gives freed pages back to the system over about 10 s
    # (jemalloc's decay): RSS again once it has not fallen by 1% in 5 s
    # (at most 60 s later).
    settled=$live
    for _ in $(seq 1 12); do
      sleep 5
      read -r now _ < <(rss)
      [ $((settled - now)) -lt $((settled / 100)) ] && { settled=$now; break; }
      settled=$now
    done
    echo "live, settled: VmRSS $settled KiB"
    stop
    start "$server" "$dir"
    restarted_actors=
    [ "$server" = tenure ] && restarted_actors=$(settle)
    read -r restarted restarted_anon < <(rss)
    echo "after a restart: VmRSS $restarted KiB (anon $restarted_anon) ${restarted_actors:+active actors: $restarted_actors}"
    stop
    per() { echo $(( ($1 - empty) * 1024 / LEASES )); }
    rows+=("| $server | $keys | $((empty / 1024)) | $((live / 1024)) | **$(per "$live")** | $((settled / 1024)) | **$(per "$settled")** | $((restarted / 1024)) | **$(per "$restarted")** | ${actors:--} |")
    echo "bytes per lease: live $(per "$live"), settled $(per "$settled"), after a restart $(per "$restarted")"
    R[$server.$keys.load]=$load
  done
done

printf '%s\n' "${rows[@]}"
{
  echo
  echo "## Memory per live lease ($(git rev-parse --short HEAD), $(date -u +%Y-%m-%d))"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB; load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Command: \`${PRELOAD:+PRELOAD=$PRELOAD }LEASES=$LEASES TTL=$TTL KEYS=\"$KEYS\" SERVERS=\"$SERVERS\" bash ops/bench/memory.sh\`; tenure (release) with \`--passivate-after 1\`${PRELOAD:+ on LD_PRELOAD=$PRELOAD}$([[ " $SERVERS " == *" etcd "* ]] && echo ", $(etcd --version | head -1)")."
  for k in "${!R[@]}"; do echo "Load ($k): ${R[$k]}"; done
  echo
  echo "| server | keys per lease | empty, MiB | live, MiB | bytes/lease, live | live, settled, MiB | bytes/lease, live, settled | after a restart, MiB | bytes/lease, after a restart | active actors (live) |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} >>ops/bench/RESULTS.md
