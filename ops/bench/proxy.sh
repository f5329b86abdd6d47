#!/usr/bin/env bash
# tenure's data-plane proxy against nginx, side by side, in one run on this
# machine (a benchmark, not a test). The same small backend (its own nginx
# process with one worker, answering a fixed 13-byte body) sits behind both:
#
#   nginx  : a plain reverse proxy (proxy_pass to an upstream with keepalive)
#   tenure : a service with one instance at the backend's address; requests
#            carry the service's FQDN in Host
#
# wrk -t2 -c64 -d$DURATION --latency against each proxy in turn, $ROUNDS
# rounds (the order alternates). Prints requests/s and p99 for both (the
# medians, and each round) and the ratio tenure/nginx, and appends them with
# the command and the machine to ops/bench/RESULTS.md.
#
#   bash ops/bench/proxy.sh
#   DURATION=5s ROUNDS=1 bash ops/bench/proxy.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
BACKEND_PORT=${BACKEND_PORT:-18081}
NGINX_PORT=${NGINX_PORT:-18082}
TENURE_API_PORT=${TENURE_API_PORT:-17072}
TENURE_PROXY_PORT=${TENURE_PROXY_PORT:-18083}

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release -q -p tenure

WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# Two nginx instances: the backend, and nginx the proxy. Separate processes,
# so both proxies sit between wrk and the same backend process.
mkdir -p "$WORK/backend/logs" "$WORK/nginx/logs"
cat >"$WORK/backend/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/logs/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$BACKEND_PORT;
    location / { default_type text/plain; return 200 "hello, world\n"; }
  }
}
CONF
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
CONF
nginx -p "$WORK/backend" -c "$WORK/backend/nginx.conf" &
PIDS+=($!)
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
PIDS+=($!)

RUST_LOG=warn target/release/tenure serve --grpc-listen off --data-dir "$WORK/tenure" --listen "127.0.0.1:$TENURE_API_PORT" \
  --proxy-listen "127.0.0.1:$TENURE_PROXY_PORT" >"$WORK/tenure.log" 2>&1 &
PIDS+=($!)
export TENURE_ENDPOINT="http://127.0.0.1:$TENURE_API_PORT"
for _ in $(seq 1 200); do
  curl -fs "$TENURE_ENDPOINT/healthz" >/dev/null 2>&1 && curl -fs "http://127.0.0.1:$NGINX_PORT/" >/dev/null 2>&1 && break
  sleep 0.1
done
FQDN=$(target/release/tenure service create bench 443:8080/tls+http | sed -n 's/^fqdn: //p')
target/release/tenure deploy --name bench-1 --service bench --address "127.0.0.1:$BACKEND_PORT" --ttl 3600 --detach >/dev/null
[ "$(curl -fs -H "Host: $FQDN" "http://127.0.0.1:$TENURE_PROXY_PORT/")" = "hello, world" ] || { echo "tenure's proxy does not reach the backend" >&2; exit 1; }

run() { # URL HOST -> "rps p99_ms"
  local out; out=$(wrk -t2 -c64 -d"$DURATION" --latency -H "Host: $2" "$1")
  echo "$out" >&2
  if grep -q "Non-2xx" <<<"$out"; then echo "errors during the run" >&2; exit 1; fi
  awk '/Requests\/sec/ {rps=$2} $1 == "99%" {v=$2; if (v ~ /us$/) {sub("us","",v); v/=1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v*=1000}; p99=v} END {printf "%d %.2f\n", rps, p99}' <<<"$out"
}

# Warm-up, not measured: both proxies open their backend connections.
wrk -t2 -c64 -d2s -H "Host: $FQDN" "http://127.0.0.1:$NGINX_PORT/" >/dev/null
wrk -t2 -c64 -d2s -H "Host: $FQDN" "http://127.0.0.1:$TENURE_PROXY_PORT/" >/dev/null

# Rounds alternate which proxy goes first, so neither always meets a
# cold or a warm machine; the table gives each round and the medians.
nginx_all=(); tenure_all=()
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="nginx tenure"; else order="tenure nginx"; fi
  for who in $order; do
    echo "== round $round: $who" >&2
    if [ "$who" = nginx ]; then
      nginx_all+=("$(run "http://127.0.0.1:$NGINX_PORT/" "$FQDN")")
    else
      tenure_all+=("$(run "http://127.0.0.1:$TENURE_PROXY_PORT/" "$FQDN")")
    fi
  done
done
median() { sort -g | awk '{v[NR]=$1} END {if (NR % 2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'; }
column() { printf '%s\n' "${@:2}" | awk -v c="$1" '{print $c}'; }
nginx_rps=$(column 1 "${nginx_all[@]}" | median); nginx_p99=$(column 2 "${nginx_all[@]}" | median)
tenure_rps=$(column 1 "${tenure_all[@]}" | median); tenure_p99=$(column 2 "${tenure_all[@]}" | median)
ROWS=""
for i in $(seq 0 $((ROUNDS - 1))); do
  read -r a b <<<"${nginx_all[$i]}"; read -r c d <<<"${tenure_all[$i]}"
  ROWS+="| round $((i + 1)) | $a req/s, p99 $b ms | $c req/s, p99 $d ms |"$'\n'
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
CPU=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
TABLE=$(cat <<EOT

### Proxy vs nginx, $(date -u +%Y-%m-%d) — \`bash ops/bench/proxy.sh\` (wrk -t2 -c64 -d$DURATION --latency, $ROUNDS rounds)

Machine: $(nproc) cores ($CPU), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr). tenure $(git rev-parse --short HEAD) (release) and $(nginx -v 2>&1 | sed 's/^nginx version: //') (worker_processes auto, upstream keepalive), the same backend process (nginx, one worker) behind both, wrk on the same machine.

| median of $ROUNDS rounds | nginx | tenure | tenure/nginx |
|---|---|---|---|
| requests/s | $nginx_rps | $tenure_rps | $(ratio "$tenure_rps" "$nginx_rps") |
| p99 | $nginx_p99 ms | $tenure_p99 ms | $(ratio "$tenure_p99" "$nginx_p99") |

| each round | nginx | tenure |
|---|---|---|
${ROWS%$'\n'}
EOT
)
echo "$TABLE"
echo "$TABLE" >>ops/bench/RESULTS.md
