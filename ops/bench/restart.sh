#!/usr/bin/env bash
# Restart to healthy with a long log, with and without snapshots (issue 13:
# 1,000,000 live leases and a 10M-event log in at most 3 s). A measurement,
# not a test:
#
#   1. `make-log` writes EVENTS events through tenure's own store: each
#      lease granted with one key; all but one lease in LIVE_EVERY expire
#      (their expiry and key deletion are written too). LIVE_EVERY=3 makes a
#      10M-event log hold ~1M live leases (4 events for an expired lease, 2
#      for a live one). TTLs are a day, so nothing expires while it runs.
#   2. `tenure serve` from the log alone (--no-snapshot-restore), timed from
#      the spawn to its "listening" line (printed once the projections have
#      caught up and every key space is loaded: the server is healthy),
#      ROUNDS times; the last run is stopped cleanly, which writes the
#      snapshots.
#   3. `tenure serve` from the snapshots, timed the same way, ROUNDS times,
#      and /healthz read once it listens.
#
# Prints the figures and appends them, with the commands and the machine,
# to ops/bench/RESULTS.md.
#
#   bash ops/bench/restart.sh                      # 10M events, ~1M live leases
#   EVENTS=1000000 ROUNDS=3 bash ops/bench/restart.sh
#   LOG=/path/to/data-dir bash ops/bench/restart.sh  # a log make-log wrote before
#                                                   # (kept; its snapshots replaced)
set -euo pipefail
cd "$(dirname "$0")/../.."

EVENTS=${EVENTS:-10000000}
LIVE_EVERY=${LIVE_EVERY:-3}
ROUNDS=${ROUNDS:-3}
# Rounds from the log alone (slow: minutes at 10M events).
LOG_ROUNDS=${LOG_ROUNDS:-$ROUNDS}
PORT=${PORT:-17272}
PROXY_PORT=${PROXY_PORT:-17273}
# Where to write the log (a few GB at 10M events); removed at the end.
WORK=${WORK:-$(mktemp -d)}
LOG=${LOG:-}
GIVEN_LOG=$LOG

missing=()
command -v curl >/dev/null || missing+=(curl)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release -q -p tenure -p tenure-bench
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
trap 'rm -rf "$WORK"' EXIT

if [ -z "$LOG" ]; then
  LOG=$WORK/log
  echo "== writing a log of $EVENTS events (one lease in $LIVE_EVERY stays live)"
  written=$("$BIN/make-log" --data-dir "$LOG" --events "$EVENTS" --live-every "$LIVE_EVERY" --ttl 86400 2>&1)
  echo "$written"
fi
sqlite3 "$LOG/events.sqlite3" "DELETE FROM snapshot_chunks; DELETE FROM snapshots;" 2>/dev/null || true
events=$(sqlite3 "$LOG/events.sqlite3" "SELECT MAX(position) FROM events")
leases=$(sqlite3 "$LOG/events.sqlite3" "SELECT COUNT(*) FROM events WHERE event_type = 'LeaseGranted'")
live=$((leases - $(sqlite3 "$LOG/events.sqlite3" "SELECT COUNT(*) FROM events WHERE event_type = 'LeaseExpired'")))
log_bytes=$(du -cb "$LOG"/events.sqlite3* | tail -1 | cut -f1)

# Starts a server on the log with extra flags, waits for its "listening"
# line; leaves the seconds it took in $TOOK and its pid in $PID.
start() {
  local out="$WORK/serve.out"
  : >"$out"
  local t0
  t0=$(date +%s.%N)
  RUST_LOG=${RUST_LOG:-warn} "$BIN/tenure" serve --grpc-listen off --data-dir "$LOG" --listen "127.0.0.1:$PORT" \
    --proxy-listen "127.0.0.1:$PROXY_PORT" "$@" >"$out" 2>"$WORK/serve.err" &
  PID=$!
  until grep -q "tenure listening" "$out"; do
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.err"; exit 1; }
    sleep 0.01
  done
  local t1
  t1=$(date +%s.%N)
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null
  TOOK=$(echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}')
}

stop() {
  kill -TERM "$PID"
  wait "$PID" || true
}

from_log=()
for i in $(seq 1 "$LOG_ROUNDS"); do
  start --no-snapshot-restore
  t=$TOOK
  from_log+=("$t")
  echo "from the log alone: $t s"
  stop # a clean stop writes the snapshots
done
snapshot_bytes=$(sqlite3 "$LOG/events.sqlite3" \
  "SELECT name || '=' || bytes FROM snapshots WHERE complete = 1 ORDER BY id DESC LIMIT 5" 2>/dev/null | tr '\n' ' ' || true)

from_snapshots=()
for i in $(seq 1 "$ROUNDS"); do
  start
  t=$TOOK
  from_snapshots+=("$t")
  echo "from snapshots: $t s"
  stop
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_log=$(median "${from_log[@]}")
m_snap=$(median "${from_snapshots[@]}")
echo "median: from the log alone $m_log s, from snapshots $m_snap s"

{
  echo
  echo "## Restart to healthy with and without snapshots ($(git rev-parse --short HEAD), $(date -u +%Y-%m-%d))"
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/ {print $2}') GiB."
  echo "Command: \`EVENTS=$EVENTS LIVE_EVERY=$LIVE_EVERY ROUNDS=$ROUNDS LOG_ROUNDS=$LOG_ROUNDS bash ops/bench/restart.sh\`${GIVEN_LOG:+ on a log make-log wrote before}."
  echo "Log: $events events, $leases leases of which $live live with one key each, $((log_bytes / 1048576)) MiB."
  echo "Snapshots (bytes): $snapshot_bytes"
  echo
  echo "| start | median | runs |"
  echo "|---|---|---|"
  echo "| from the log alone (\`--no-snapshot-restore\`) | $m_log s | ${from_log[*]} |"
  echo "| from snapshots | $m_snap s | ${from_snapshots[*]} |"
} >>ops/bench/RESULTS.md
