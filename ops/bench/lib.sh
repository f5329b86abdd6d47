# shellcheck shell=bash
# Sourced by the benchmark scripts that run tenure beside etcd, one server
# at a time: starting a fresh one, waiting for it, stopping it, and the
# median of a list of figures. The sourcing script sets BIN (where `tenure`
# was built), TENURE_PORT, ETCD_PORT and ETCD_PEER_PORT; `start` sets PID
# and URL.

# WORK: a scratch directory. At exit the server left running ($PID) is
# stopped and WORK removed.
WORK=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

# Waits until the server at URL answers a range on the /v3 gateway.
wait_ready() { # URL [TRIES, 0.1 s apart: 200]
  for _ in $(seq 1 "${2:-200}"); do
    curl -fs -X POST "$1/v3/kv/range" -d '{"key":"AA=="}' >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server at $1 did not start" >&2
  exit 1
}

# etcd in $WORK/NAME, fsyncing its WAL before it answers (its default).
start_etcd() { # NAME [ETCD ARGS...]
  local dir="$WORK/$1"
  shift
  etcd --data-dir "$dir" --name bench \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER_PORT" --log-level error "$@" >"$dir.log" 2>&1 &
  PID=$!
  URL="http://127.0.0.1:$ETCD_PORT"
}

# tenure in $WORK/NAME on its embedded log (SQLite, synchronous=FULL),
# without gRPC (unless TENURE_GRPC_LISTEN says where), its proxy on a port
# the kernel picks (not 8080, which may be taken).
start_tenure() { # NAME [SERVE ARGS...]
  local dir="$WORK/$1"
  shift
  RUST_LOG=warn "$BIN/tenure" serve --grpc-listen "${TENURE_GRPC_LISTEN:-off}" --data-dir "$dir" --listen "127.0.0.1:$TENURE_PORT" \
    --proxy-listen 127.0.0.1:0 "$@" >"$dir.log" 2>&1 &
  PID=$!
  URL="http://127.0.0.1:$TENURE_PORT"
}

# The floor server (`floor-server`: the same crates as tenure, nothing but
# a durable append behind a put) in $WORK/NAME, its gateway on
# $FLOOR_PORT, its gRPC on FLOOR_GRPC_PORT if set.
start_floor() { # NAME
  local dir="$WORK/$1" grpc=off
  [ -z "${FLOOR_GRPC_PORT:-}" ] || grpc="127.0.0.1:$FLOOR_GRPC_PORT"
  "$BIN/floor-server" --listen "127.0.0.1:$FLOOR_PORT" --grpc-listen "$grpc" --data-dir "$dir" >"$dir.log" 2>&1 &
  PID=$!
  URL="http://127.0.0.1:$FLOOR_PORT"
}

# A fresh etcd, tenure or floor server in $WORK/NAME, ready for requests at $URL.
# READY_TRIES (default 200) bounds the wait, 0.1 s a try.
start() { # etcd|tenure|floor NAME [ARGS...]
  local server=$1
  shift
  "start_$server" "$@"
  wait_ready "$URL" "${READY_TRIES:-200}"
}

stop() {
  kill "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
}

# The median of the numbers on standard input (spaces or lines apart).
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
