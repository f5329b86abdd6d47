#!/usr/bin/env bash
# tenure on PostgreSQL against tenure on SQLite and etcd 3.4, side by side in
# one run on this machine (a benchmark, not a test). All three are durable:
# etcd fsyncs its WAL, tenure commits to SQLite with synchronous=FULL or to
# PostgreSQL with synchronous_commit=on, before answering.
#
#   1. wrk -t2 -c64 -d$DURATION --latency on POST /v3/lease/grant, each server fresh;
#   2. the same on POST /v3/kv/put (10,000 rotating keys);
#   3. mass expiry of $LEASES leases with a key each on PostgreSQL.
# ROUNDS rounds of 1 and 2 (servers in turn); the table shows medians.
#
# PostgreSQL: PG_URL (default the machine's, postgres://postgres@127.0.0.1:5432/test);
# each server gets a fresh schema, dropped at the end.
#
#   bash ops/bench/postgres.sh
#   ROUNDS=1 DURATION=5s LEASES=20000 bash ops/bench/postgres.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
LEASES=${LEASES:-100000}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
TENURE_PORT=${TENURE_PORT:-17070}
ETCD_PORT=${ETCD_PORT:-22379}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-22380}

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v etcd >/dev/null || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
psql "$PG_URL" -Atqc 'SELECT 1' >/dev/null || { echo "PostgreSQL does not answer at $PG_URL" >&2; exit 1; }
cargo build --release -q -p tenure -p tenure-bench

WORK=$(mktemp -d)
PID=
SCHEMAS=()
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  wait 2>/dev/null
  for s in "${SCHEMAS[@]}"; do psql "$PG_URL" -Atqc "DROP SCHEMA IF EXISTS \"$s\" CASCADE" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_ready() { # URL
  for _ in $(seq 1 300); do
    curl -fs -X POST "$1/v3/kv/range" -d '{"key":"AA=="}' >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server at $1 did not start" >&2; exit 1
}

n=0
start() { # etcd|sqlite|postgres
  n=$((n + 1))
  local dir="$WORK/$1-$n"
  case "$1" in
    etcd)
      etcd --data-dir "$dir" --name bench \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER_PORT" --log-level error >"$dir.log" 2>&1 &
      PID=$!; URL="http://127.0.0.1:$ETCD_PORT" ;;
    sqlite)
      RUST_LOG=warn target/release/tenure serve --data-dir "$dir" --listen "127.0.0.1:$TENURE_PORT" \
        --proxy-listen 127.0.0.1:0 >"$dir.log" 2>&1 &
      PID=$!; URL="http://127.0.0.1:$TENURE_PORT" ;;
    postgres)
      local schema="bench_$$_$n"
      SCHEMAS+=("$schema")
      RUST_LOG=warn target/release/tenure serve --data-dir "$dir" --store "$PG_URL?schema=$schema" \
        --listen "127.0.0.1:$TENURE_PORT" --proxy-listen 127.0.0.1:0 >"$dir.log" 2>&1 &
      PID=$!; URL="http://127.0.0.1:$TENURE_PORT" ;;
  esac
  wait_ready "$URL"
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; }

run_wrk() { # SCRIPT URL -> "rps p99ms non2xx"
  local out; out=$(wrk -t2 -c64 -d"$DURATION" --latency -s "$1" "$2")
  echo "$out" >&2
  local rps p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  echo "$rps $p99 ${errors:-0}"
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A RPS P99 ERR
for round in $(seq 1 "$ROUNDS"); do
  for load in grant put; do
    for server in etcd sqlite postgres; do
      start "$server"
      echo "== round $round: $server $load" >&2
      read -r rps p99 err < <(run_wrk "ops/bench/v3_$load.lua" "$URL")
      RPS[$server.$load]+="$rps "; P99[$server.$load]+="$p99 "; ERR[$server.$load]=$(( ${ERR[$server.$load]:-0} + err ))
      stop
    done
  done
done

start postgres
echo "== postgres mass expiry of $LEASES leases" >&2
out=$(target/release/mass-expiry --endpoint "$URL" --leases "$LEASES" --lead $(( LEASES / 2000 + 30 )))
echo "$out" >&2
EXPIRY=$(sed -n 's/^RESULT last_key_gone_after_deadline_s=//p' <<<"$out")
stop

row() { # LABEL LOAD ARRAY
  local e s p
  if [ "$3" = rps ]; then
    e=$(median <<<"${RPS[etcd.$2]}"); s=$(median <<<"${RPS[sqlite.$2]}"); p=$(median <<<"${RPS[postgres.$2]}")
  else
    e=$(median <<<"${P99[etcd.$2]}"); s=$(median <<<"${P99[sqlite.$2]}"); p=$(median <<<"${P99[postgres.$2]}")
  fi
  echo "| $1 | $e | $s | $p | $(ratio "$p" "$e") | $(ratio "$p" "$s") |"
}

CPU=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
TABLE=$(cat <<EOT

## $(date -u +%Y-%m-%d) — \`bash ops/bench/postgres.sh\` (ROUNDS=$ROUNDS, wrk -t2 -c64 -d$DURATION --latency, LEASES=$LEASES)

Machine: $(nproc) cores ($CPU), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr); load average before the run $LOAD_BEFORE. tenure $(git rev-parse --short HEAD) (release; SQLite WAL synchronous=FULL, or $(psql "$PG_URL" -Atqc 'SHOW server_version' | cut -d' ' -f1) on this machine with synchronous_commit=$(psql "$PG_URL" -Atqc 'SHOW synchronous_commit')), $(etcd --version | head -1); each server fresh for each figure, one node each, medians of $ROUNDS rounds.

| figure | etcd | tenure SQLite | tenure PostgreSQL | PostgreSQL/etcd | PostgreSQL/SQLite |
|---|---|---|---|---|---|
$(row "lease grants, req/s (rounds: etcd ${RPS[etcd.grant]}/ SQLite ${RPS[sqlite.grant]}/ PostgreSQL ${RPS[postgres.grant]})" grant rps)
$(row "lease grants, p99 ms" grant p99)
$(row "key puts, req/s (rounds: etcd ${RPS[etcd.put]}/ SQLite ${RPS[sqlite.put]}/ PostgreSQL ${RPS[postgres.put]})" put rps)
$(row "key puts, p99 ms" put p99)

Mass expiry on PostgreSQL, $LEASES leases with a key each due in the same second: last key gone ${EXPIRY} s after the last deadline.
Non-2xx answers: etcd ${ERR[etcd.grant]}/${ERR[etcd.put]}, SQLite ${ERR[sqlite.grant]}/${ERR[sqlite.put]}, PostgreSQL ${ERR[postgres.grant]}/${ERR[postgres.put]} (grants/puts).
EOT
)
echo "$TABLE"
echo "$TABLE" >> ops/bench/RESULTS.md
