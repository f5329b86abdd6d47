#!/usr/bin/env bash
# The history's benchmarks (measurements, not tests), in one run on this
# machine:
#
#   1. replay and verify of a log of EVENTS events (default 1,000,000: a
#      mix of grants, puts, expiries and the key deletions they cause,
#      written through tenure's own store by `make-log`), timed by hyperfine;
#   2. the group commit's throughput before and after the hash chain, built
#      from the commit before the chain (BEFORE) and from this checkout, run
#      in alternating rounds, medians compared: the store alone
#      (`append-load`: 64 writers, each appending one event at a time and
#      waiting for it to be durable, nothing else to do), and durable
#      commands end to end (wrk -t2 -c64 on POST /v3/kv/put and
#      /v3/lease/grant, as bench.sh).
#
# Prints the figures and appends them, with the commands and the machine,
# to ops/bench/RESULTS.md.
#
#   bash ops/bench/history.sh
#   EVENTS=200000 ROUNDS=3 bash ops/bench/history.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

EVENTS=${EVENTS:-1000000}
ROUNDS=${ROUNDS:-5}
# Rounds of the before/after comparisons (they vary more than the rest).
AB_ROUNDS=${AB_ROUNDS:-8}
WRK_DURATION=${WRK_DURATION:-8s}
PORT=${PORT:-17171}
APPENDS=${APPENDS:-200000}
# The last commit whose store did not chain events.
BEFORE=${BEFORE:-d1d5c41}

missing=()
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v jq >/dev/null || missing+=(jq)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release -q -p tenure -p tenure-bench

WORK=$(mktemp -d)
cleanup() {
  git worktree remove --force "$WORK/before" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
BIN=$PWD/target/release

echo "== writing a log of $EVENTS events"
written=$("$BIN/make-log" --data-dir "$WORK/log" --events "$EVENTS" 2>&1)
echo "$written"
events=$(echo "$written" | sed -n 's/^wrote \([0-9]*\) events.*/\1/p')

echo "== replay and verify"
hyperfine --warmup 1 --runs "$ROUNDS" --export-json "$WORK/history.json" \
  -n verify "$BIN/tenure verify --data-dir $WORK/log" \
  -n "replay (fold only)" "$BIN/tenure replay --data-dir $WORK/log --what routes -o json" \
  -n "replay --what all" "$BIN/tenure replay --data-dir $WORK/log --what all -o json" >/dev/null
rate() { jq -r --arg n "$1" --argjson e "$events" \
  '.results[] | select(.command == $n) | "\(.median) \($e / .median)"' "$WORK/history.json"; }
read -r verify_s verify_rate < <(rate verify)
read -r fold_s fold_rate < <(rate "replay (fold only)")
read -r all_s all_rate < <(rate "replay --what all")

echo "== group commit: $BEFORE (no chain) against this checkout"
git worktree add --detach -q "$WORK/before" "$BEFORE"
cp ops/bench/src/append_load.rs "$WORK/before/ops/bench/src/"
# The older bench crate gets the load tool and what it needs (its
# [dependencies] table is the file's last).
cat >> "$WORK/before/ops/bench/Cargo.toml" <<'EOF'
tenure = { path = "../.." }
tenure-events.workspace = true
chrono.workspace = true
uuid.workspace = true

[[bin]]
name = "append-load"
path = "src/append_load.rs"
EOF
(cd "$WORK/before" && CARGO_TARGET_DIR="$WORK/before-target" cargo build --release -q -p tenure -p tenure-bench)
OLD=$WORK/before-target/release
run_load() { # BINARY -> events/s
  rm -rf "$WORK/append"
  "$1" --data-dir "$WORK/append" --events "$APPENDS" --writers 64 | awk '{print $1}'
}
run_wrk() { # TENURE SCRIPT -> requests/s, on a fresh server
  rm -rf "$WORK/e2e"
  "$1" serve --grpc-listen off --data-dir "$WORK/e2e" --listen "127.0.0.1:$PORT" --proxy-listen 127.0.0.1:0 >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    curl -fs -X POST "http://127.0.0.1:$PORT/v3/kv/range" -d '{"key":"AA=="}' >/dev/null 2>&1 && break
    sleep 0.1
  done
  wrk -t2 -c64 -d"$WRK_DURATION" -s "ops/bench/$2" "http://127.0.0.1:$PORT" | awk '/Requests\/sec/ {printf "%.0f", $2}'
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
store_b=(); store_a=(); put_b=(); put_a=(); grant_b=(); grant_a=()
for round in $(seq 1 "$AB_ROUNDS"); do
  store_b+=("$(run_load "$OLD/append-load")"); store_a+=("$(run_load "$BIN/append-load")")
  put_b+=("$(run_wrk "$OLD/tenure" v3_put.lua)"); put_a+=("$(run_wrk "$BIN/tenure" v3_put.lua)")
  grant_b+=("$(run_wrk "$OLD/tenure" v3_grant.lua)"); grant_a+=("$(run_wrk "$BIN/tenure" v3_grant.lua)")
  echo "round $round: store ${store_b[-1]} / ${store_a[-1]} events/s; puts ${put_b[-1]} / ${put_a[-1]} req/s; grants ${grant_b[-1]} / ${grant_a[-1]} req/s (before / after)"
done

machine="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r)"
report=$(cat <<EOF

## $(date -u +%Y-%m-%d) — \`bash ops/bench/history.sh\` (EVENTS=$EVENTS, ROUNDS=$ROUNDS, APPENDS=$APPENDS)

Machine: $machine; tenure $(git rev-parse --short HEAD) release build. Medians of $ROUNDS runs (hyperfine, after a warm-up).

| figure | time | events/s |
|---|---|---|
| \`tenure verify\` of $events events (chain, positions, versions, decoding) | $(printf '%.3f' "$verify_s") s | $(printf '%.0f' "$verify_rate") |
| \`tenure replay --what routes\` (every projection and key space folded) | $(printf '%.3f' "$fold_s") s | $(printf '%.0f' "$fold_rate") |
| \`tenure replay --what all -o json\` (the same, and the whole state printed) | $(printf '%.3f' "$all_s") s | $(printf '%.0f' "$all_rate") |

The group commit before and after the hash chain ($BEFORE against $(git rev-parse --short HEAD)), $AB_ROUNDS alternating rounds, medians:

| load | before | after | after/before | rounds before | rounds after |
|---|---|---|---|---|---|
| the store alone: \`append-load\`, 64 writers, one event per append, each waiting for its fsync ($APPENDS events), events/s | $(median "${store_b[@]}") | $(median "${store_a[@]}") | $(ratio "$(median "${store_a[@]}")" "$(median "${store_b[@]}")") | ${store_b[*]} | ${store_a[*]} |
| durable puts end to end: wrk -t2 -c64 -d$WRK_DURATION POST /v3/kv/put, req/s | $(median "${put_b[@]}") | $(median "${put_a[@]}") | $(ratio "$(median "${put_a[@]}")" "$(median "${put_b[@]}")") | ${put_b[*]} | ${put_a[*]} |
| durable grants end to end: wrk -t2 -c64 -d$WRK_DURATION POST /v3/lease/grant, req/s | $(median "${grant_b[@]}") | $(median "${grant_a[@]}") | $(ratio "$(median "${grant_a[@]}")" "$(median "${grant_b[@]}")") | ${grant_b[*]} | ${grant_a[*]} |
EOF
)
echo "$report"
echo "$report" >> ops/bench/RESULTS.md
