#!/usr/bin/env bash
# The history's benchmarks (measurements, not tests), in one run on this
# machine:
#
#   1. replay and verify of a log of EVENTS events (default 1,000,000: a
#      mix of grants, puts, expiries and the key deletions they cause,
#      written through tenure's own store by `make-log`), timed by hyperfine;
#   2. the group commit's throughput before and after the hash chain: the
#      same load tool (`append-load`: 64 writers, each appending one event
#      at a time and waiting for it to be durable) built against the commit
#      before the chain (BEFORE) and against this checkout, run in
#      alternating rounds, medians compared.
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
APPENDS=${APPENDS:-200000}
# The last commit whose store did not chain events.
BEFORE=${BEFORE:-d1d5c41}

missing=()
command -v hyperfine >/dev/null || missing+=(hyperfine)
command -v jq >/dev/null || missing+=(jq)
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
(cd "$WORK/before" && CARGO_TARGET_DIR="$WORK/before-target" cargo build --release -q -p tenure-bench --bin append-load)
run_load() { # BINARY -> events/s
  rm -rf "$WORK/append"
  "$1" --data-dir "$WORK/append" --events "$APPENDS" --writers 64 | awk '{print $1}'
}
before_rates=(); after_rates=()
for round in $(seq 1 "$ROUNDS"); do
  before_rates+=("$(run_load "$WORK/before-target/release/append-load")")
  after_rates+=("$(run_load "$BIN/append-load")")
  echo "round $round: before ${before_rates[-1]} events/s, after ${after_rates[-1]} events/s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
before=$(median "${before_rates[@]}")
after=$(median "${after_rates[@]}")
ratio=$(awk -v a="$after" -v b="$before" 'BEGIN {printf "%.3f", a / b}')

machine="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r)"
report=$(cat <<EOF

## $(date -u +%Y-%m-%d) — \`bash ops/bench/history.sh\` (EVENTS=$EVENTS, ROUNDS=$ROUNDS, APPENDS=$APPENDS)

Machine: $machine; tenure $(git rev-parse --short HEAD) release build. Medians of $ROUNDS runs (hyperfine, after a warm-up).

| figure | time | events/s |
|---|---|---|
| \`tenure verify\` of $events events (chain, positions, versions, decoding) | $(printf '%.3f' "$verify_s") s | $(printf '%.0f' "$verify_rate") |
| \`tenure replay --what routes\` (every projection and key space folded) | $(printf '%.3f' "$fold_s") s | $(printf '%.0f' "$fold_rate") |
| \`tenure replay --what all -o json\` (the same, and the whole state printed) | $(printf '%.3f' "$all_s") s | $(printf '%.0f' "$all_rate") |

Group commit, \`append-load\` (64 writers, one event per append, each waiting for its fsync; $APPENDS events), alternating rounds:

| store | events/s (median) | rounds |
|---|---|---|
| $BEFORE, before the hash chain | $before | ${before_rates[*]} |
| $(git rev-parse --short HEAD), with the chain | $after | ${after_rates[*]} |
| with/without | $ratio | |
EOF
)
echo "$report"
echo "$report" >> ops/bench/RESULTS.md
