#!/usr/bin/env bash
# tenure on PostgreSQL (one node, and three nodes on one schema) against
# tenure on SQLite and etcd 3.4, side by side in one run on this machine (a
# benchmark, not a test). All are durable: etcd fsyncs its WAL, tenure
# commits to SQLite with synchronous=FULL or to PostgreSQL with
# synchronous_commit=on, before answering.
#
#   1. durable lease grants (POST /v3/lease/grant), each server fresh;
#   2. durable key puts (POST /v3/kv/put, 10,000 rotating keys);
#   3. mass expiry of $LEASES leases with a key each on one PostgreSQL node.
#
# One server: wrk -t2 -c64. Three nodes: three wrk -t1 -c21, one against each
# node, at the same time; requests/s summed, p99 the worst of the three.
# Configurations:
#   etcd, sqlite, pg1         one process each;
#   pg3                       three nodes on one schema, local mode: every
#                             request is account `default`, so all puts go to
#                             one key space (one stream) and the nodes'
#                             appends conflict (retried, 409 after 16);
#   pg3acc (puts only)        three nodes with --auth and one account per
#                             node, each node's wrk with its account's token:
#                             three key spaces, no conflicts between nodes.
# ROUNDS rounds of 1 and 2 (servers in turn); the table shows medians.
# During the first round's three-node runs the script prints (stderr) a
# `top` and PostgreSQL's wait events half-way through. For each run the table
# also gives how busy the machine's cores were and the whole machine's CPU
# per request (servers, PostgreSQL and wrk together, from /proc/stat): where
# the cores are saturated, requests/s can only grow by CPU per request
# falling.
#
# PostgreSQL: PG_URL (default the machine's, postgres://postgres@127.0.0.1:5432/test);
# each configuration gets a fresh schema, dropped at the end.
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
BIN=${CARGO_TARGET_DIR:-target}/release

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v etcd >/dev/null || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
psql "$PG_URL" -Atqc 'SELECT 1' >/dev/null || { echo "PostgreSQL does not answer at $PG_URL" >&2; exit 1; }
cargo build --release -q -p tenure -p tenure-bench

WORK=$(mktemp -d)
PIDS=()
SCHEMAS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null
  for s in "${SCHEMAS[@]}"; do psql "$PG_URL" -Atqc "DROP SCHEMA IF EXISTS \"$s\" CASCADE" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
head -c 32 /dev/urandom | base64 | tr -d '/+=' >"$WORK/admin-token"
ADMIN=$(cat "$WORK/admin-token")

wait_ready() { # URL: /healthz answers (open under --auth too)
  for _ in $(seq 1 300); do
    curl -fs "$1/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server at $1 did not start" >&2; exit 1
}
wait_etcd() {
  for _ in $(seq 1 300); do
    curl -fs -X POST "$1/v3/kv/range" -d '{"key":"AA=="}' >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "etcd at $1 did not start" >&2; exit 1
}

# start etcd|sqlite|pg1|pg3|pg3acc: sets URLS (one per process) and TOKENS
# (the bearer token wrk sends to each, empty in local mode).
n=0
start() {
  n=$((n + 1))
  local dir="$WORK/$1-$n" schema="bench_$$_$n"
  URLS=(); TOKENS=()
  case "$1" in
    etcd)
      etcd --data-dir "$dir" --name bench \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER_PORT" --log-level error >"$dir.log" 2>&1 &
      PIDS+=($!); URLS=("http://127.0.0.1:$ETCD_PORT"); TOKENS=("")
      wait_etcd "${URLS[0]}"; return ;;
    sqlite)
      RUST_LOG=warn "$BIN/tenure" serve --grpc-listen off --data-dir "$dir" --listen "127.0.0.1:$TENURE_PORT" \
        --proxy-listen 127.0.0.1:0 >"$dir.log" 2>&1 &
      PIDS+=($!); URLS=("http://127.0.0.1:$TENURE_PORT"); TOKENS=("") ;;
    pg1|pg3|pg3acc)
      SCHEMAS+=("$schema")
      local nodes=1 auth=()
      [ "$1" = pg1 ] || nodes=3
      [ "$1" = pg3acc ] && auth=(--auth --admin-token-file "$WORK/admin-token")
      for i in $(seq 1 "$nodes"); do
        local port=$((TENURE_PORT + i - 1))
        RUST_LOG=warn "$BIN/tenure" serve --grpc-listen off --data-dir "$dir-node$i" --store "$PG_URL?schema=$schema" \
          --listen "127.0.0.1:$port" --advertise-url "http://127.0.0.1:$port" --proxy-listen 127.0.0.1:0 \
          "${auth[@]}" >"$dir-node$i.log" 2>&1 &
        PIDS+=($!); URLS+=("http://127.0.0.1:$port"); TOKENS+=("")
      done ;;
  esac
  for u in "${URLS[@]}"; do wait_ready "$u"; done
  if [ "$1" = pg3acc ]; then
    # One account per node, created through that node; then wait until the
    # node accepts its token (it follows the log, as every node does).
    for i in 0 1 2; do
      local u=${URLS[$i]}
      curl -fs -H "Authorization: Bearer $ADMIN" "$u/v1/accounts" -d "{\"name\":\"bench$i\"}" \
        -H 'Content-Type: application/json' >/dev/null
      TOKENS[$i]=$(curl -fs -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
        "$u/v1/accounts/bench$i/tokens" -d '{}' | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
      [ -n "${TOKENS[$i]}" ] || { echo "no token for bench$i" >&2; exit 1; }
      for _ in $(seq 1 100); do
        curl -fs -H "Authorization: Bearer ${TOKENS[$i]}" "$u/v3/kv/range" -d '{"key":"AA=="}' >/dev/null 2>&1 && break
        sleep 0.1
      done
    done
  fi
}
stop() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}

p99_ms() { awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$1"; }

# Where the time goes: top's busiest threads and PostgreSQL's backends by
# wait event, half-way through a run.
sample() {
  sleep "$(( ${DURATION%s} / 2 ))"
  {
    echo "---- top -H half-way through"
    top -b -H -n 1 -w 200 | head -25
    echo "---- pg_stat_activity (database $(psql "$PG_URL" -Atqc 'SELECT current_database()'))"
    psql "$PG_URL" -Atc "SELECT coalesce(wait_event_type, '-') || ' ' || coalesce(wait_event, 'on CPU') || ' ' || state, count(*)
      FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
      GROUP BY 1 ORDER BY 2 DESC"
  } >&2
}

# The machine's busy and total CPU time so far, in ticks (/proc/stat:
# everything but idle and iowait is busy).
machine_ticks() { awk '/^cpu / {t=0; for (i=2; i<=NF; i++) t+=$i; print t-$5-$6, t}' /proc/stat; }

# run_wrk SCRIPT SAMPLE -> "rps p99ms non2xx busy% cpu_us_per_request" over
# URLS/TOKENS: one wrk -t2 -c64 for one process, one wrk -t1 -c21 per
# process for three. busy%: of all the machine's cores while wrk ran; CPU
# per request: the whole machine's (servers, PostgreSQL, wrk).
run_wrk() {
  local k=${#URLS[@]} threads=2 conns=64 spid=
  [ "$k" -gt 1 ] && { threads=1; conns=21; }
  [ "$2" = 1 ] && { sample & spid=$!; }
  local busy0 total0 busy1 total1
  read -r busy0 total0 < <(machine_ticks)
  local wpids=()
  for i in $(seq 0 $((k - 1))); do
    WRK_TOKEN=${TOKENS[$i]} wrk -t$threads -c$conns -d"$DURATION" --latency -s "$1" "${URLS[$i]}" >"$WORK/wrk.$i" &
    wpids+=($!)
  done
  for p in "${wpids[@]}"; do wait "$p"; done
  read -r busy1 total1 < <(machine_ticks)
  [ -n "$spid" ] && wait "$spid"
  local rps=0 p99=0 errors=0 requests=0
  for i in $(seq 0 $((k - 1))); do
    cat "$WORK/wrk.$i" >&2
    rps=$(awk -v a="$rps" '/Requests\/sec/ {printf "%.2f", a + $2}' "$WORK/wrk.$i")
    p99=$(awk -v a="$p99" -v b="$(p99_ms "$WORK/wrk.$i")" 'BEGIN {print (b > a ? b : a)}')
    errors=$(( errors + $(awk '/Non-2xx/ {e=$5} END {print e+0}' "$WORK/wrk.$i") ))
    requests=$(( requests + $(awk '/requests in/ {print $1}' "$WORK/wrk.$i") ))
  done
  local busy_pct cpu_us
  busy_pct=$(awk -v b=$((busy1 - busy0)) -v t=$((total1 - total0)) 'BEGIN {printf "%.0f", t ? 100 * b / t : 0}')
  cpu_us=$(awk -v b=$((busy1 - busy0)) -v n="$requests" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", n ? b * 1e6 / hz / n : 0}')
  echo "$rps $p99 $errors $busy_pct $cpu_us"
}

# Answers by status of the tenure processes in URLS, from /metrics (the
# admin token under --auth): "409=N 503=M ..." for the non-2xx ones.
statuses() {
  local i
  for i in $(seq 0 $((${#URLS[@]} - 1))); do
    curl -fs -H "Authorization: Bearer $ADMIN" "${URLS[$i]}/metrics" || true
  done | awk -F'status="' '/^tenure_http_requests_total/ && /route="\/v3/ {split($2, s, "\""); split($0, v, " "); if (s[1] !~ /^2/) c[s[1]] += v[length(v)]} END {for (k in c) printf "%s=%d ", k, c[k]}'
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A RPS P99 ERR STATUS BUSY CPUUS
for round in $(seq 1 "$ROUNDS"); do
  for load in grant put; do
    servers="etcd sqlite pg1 pg3"
    [ "$load" = put ] && servers="$servers pg3acc"
    for server in $servers; do
      start "$server"
      echo "== round $round: $server $load" >&2
      s=0; [ "$round" = 1 ] && [ "${#URLS[@]}" -gt 1 ] && s=1
      read -r rps p99 err busy cpu < <(run_wrk "ops/bench/v3_$load.lua" "$s")
      BUSY[$server.$load]+="$busy "; CPUUS[$server.$load]+="$cpu "
      [ "$server" = etcd ] || STATUS[$server.$load]+="[$(statuses)] "
      RPS[$server.$load]+="$rps "; P99[$server.$load]+="$p99 "; ERR[$server.$load]=$(( ${ERR[$server.$load]:-0} + err ))
      stop
    done
  done
done

start pg1
echo "== postgres mass expiry of $LEASES leases" >&2
out=$("$BIN/mass-expiry" --endpoint "${URLS[0]}" --leases "$LEASES" --lead $(( LEASES / 2000 + 30 )))
echo "$out" >&2
EXPIRY=$(sed -n 's/^RESULT last_key_gone_after_deadline_s=//p' <<<"$out")
stop

m() { median <<<"${RPS[$1]:-}"; }
mp() { median <<<"${P99[$1]:-}"; }
mb() { median <<<"${BUSY[$1]:-}"; }
mc() { median <<<"${CPUUS[$1]:-}"; }
GE=$(m etcd.grant); GS=$(m sqlite.grant); G1=$(m pg1.grant); G3=$(m pg3.grant)
PE=$(m etcd.put); PS=$(m sqlite.put); P1=$(m pg1.put); P3=$(m pg3.put); P3A=$(m pg3acc.put)

CPU=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
TABLE=$(cat <<EOT

## $(date -u +%Y-%m-%d) — \`bash ops/bench/postgres.sh\` (ROUNDS=$ROUNDS, DURATION=$DURATION, LEASES=$LEASES)

Machine: $(nproc) cores ($CPU), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr); load average before the run $LOAD_BEFORE, after $(cut -d' ' -f1-3 /proc/loadavg). tenure $(git rev-parse --short HEAD) (release; SQLite WAL synchronous=FULL, or PostgreSQL $(psql "$PG_URL" -Atqc 'SHOW server_version' | cut -d' ' -f1) on this machine with synchronous_commit=$(psql "$PG_URL" -Atqc 'SHOW synchronous_commit')), $(etcd --version | head -1); each configuration fresh for each figure, medians of $ROUNDS rounds. One process: wrk -t2 -c64; three nodes: three wrk -t1 -c21 at once, one per node, requests/s summed, p99 the worst of the three. Everything (PostgreSQL, the nodes, wrk) shares the machine's $(nproc) cores.

| figure | etcd | tenure SQLite | tenure PG, 1 node | tenure PG, 3 nodes, one account | tenure PG, 3 nodes, an account each |
|---|---|---|---|---|---|
| lease grants, req/s | $GE | $GS | $G1 | $G3 | - |
| lease grants, p99 ms | $(mp etcd.grant) | $(mp sqlite.grant) | $(mp pg1.grant) | $(mp pg3.grant) | - |
| key puts, req/s | $PE | $PS | $P1 | $P3 | $P3A |
| key puts, p99 ms | $(mp etcd.put) | $(mp sqlite.put) | $(mp pg1.put) | $(mp pg3.put) | $(mp pg3acc.put) |
| grants: machine CPU busy, % of all cores | $(mb etcd.grant) | $(mb sqlite.grant) | $(mb pg1.grant) | $(mb pg3.grant) | - |
| grants: machine CPU µs per grant (all processes) | $(mc etcd.grant) | $(mc sqlite.grant) | $(mc pg1.grant) | $(mc pg3.grant) | - |
| puts: machine CPU busy, % of all cores | $(mb etcd.put) | $(mb sqlite.put) | $(mb pg1.put) | $(mb pg3.put) | $(mb pg3acc.put) |
| puts: machine CPU µs per put (all processes) | $(mc etcd.put) | $(mc sqlite.put) | $(mc pg1.put) | $(mc pg3.put) | $(mc pg3acc.put) |

Ratios (targets: PG 1 node ≥ 2× etcd; PG 3 nodes ≥ 1.5× PG 1 node):

| | grants | puts |
|---|---|---|
| PG 1 node / etcd | $(ratio "$G1" "$GE") | $(ratio "$P1" "$PE") |
| PG 3 nodes / PG 1 node | $(ratio "$G3" "$G1") | $(ratio "$P3" "$P1") (one account), $(ratio "$P3A" "$P1") (an account each) |
| SQLite / etcd | $(ratio "$GS" "$GE") | $(ratio "$PS" "$PE") |

Rounds, req/s: grants etcd ${RPS[etcd.grant]}/ SQLite ${RPS[sqlite.grant]}/ PG1 ${RPS[pg1.grant]}/ PG3 ${RPS[pg3.grant]}; puts etcd ${RPS[etcd.put]}/ SQLite ${RPS[sqlite.put]}/ PG1 ${RPS[pg1.put]}/ PG3 one account ${RPS[pg3.put]}/ PG3 an account each ${RPS[pg3acc.put]}.
Non-2xx answers (wrk, all rounds), grants/puts: etcd ${ERR[etcd.grant]}/${ERR[etcd.put]}, SQLite ${ERR[sqlite.grant]}/${ERR[sqlite.put]}, PG1 ${ERR[pg1.grant]}/${ERR[pg1.put]}, PG3 one account ${ERR[pg3.grant]}/${ERR[pg3.put]}, PG3 an account each -/${ERR[pg3acc.put]}. By status from the nodes' /metrics, per round: PG3 grants ${STATUS[pg3.grant]}, PG3 puts one account ${STATUS[pg3.put]}, an account each ${STATUS[pg3acc.put]}.

Mass expiry on PostgreSQL (one node), $LEASES leases with a key each due in the same second: last key gone ${EXPIRY} s after the last deadline.
EOT
)
echo "$TABLE"
echo "$TABLE" >> ops/bench/RESULTS.md
