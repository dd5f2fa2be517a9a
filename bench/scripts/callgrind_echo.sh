#!/usr/bin/env bash
# User-space instructions per echoed message of any server, by callgrind.
#
#   bench/scripts/callgrind_echo.sh "COMMAND" [CONNS] [SIZE] [IN_FLIGHT]
#
# COMMAND starts the server on the port given as {PORT}, e.g.
#   "./target/release/soliton-server --backend epoll --threads 1 --no-pin --port {PORT}"
#   "/tmp/uws-v3 --port {PORT}"  (uWebSockets built with -march=x86-64-v3: valgrind
#                                 does not run AVX-512 code)
# Runs it under `valgrind --tool=callgrind` on core 0 and `soliton-load echo` (CONNS
# connections of SIZE-byte messages, IN_FLIGHT each; defaults 100, 20, 1) on core 1,
# once for 2 s and once for 6 s, and prints the slope: the difference of the two
# instruction totals over the difference of the messages, so that start-up and
# handshakes drop out. Environment: LOAD (default ./target/release/soliton-load), PORT
# (default 19481).
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,15p "$0"; exit 2; }
CMD=$1; CONNS=${2:-100}; SIZE=${3:-20}; INFLIGHT=${4:-1}
LOAD=${LOAD:-./target/release/soliton-load}; PORT=${PORT:-19481}
# shellcheck source=bench/scripts/callgrind_common.sh
. "$(dirname "$0")/callgrind_common.sh"
declare -A instr msgs
for secs in 2 6; do
  PORT=$((PORT + 1))
  # shellcheck disable=SC2086
  taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$dir/cg.$secs" \
    ${CMD//\{PORT\}/$PORT} >/dev/null 2>&1 &
  pid=$!
  sleep 3
  taskset -c 1 "$LOAD" echo "ws://127.0.0.1:$PORT/" -c "$CONNS" -s "$SIZE" -i "$INFLIGHT" \
    -d "${secs}s" --warmup 0s --io epoll -q --json "$dir/load.$secs.json" >/dev/null 2>&1 || true
  # SIGTERM: callgrind writes its totals on a fatal signal (SIGINT may be ignored by a
  # server started in the background of a non-interactive shell)
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  instr[$secs]=$(cg_instructions "$dir/cg.$secs")
  msgs[$secs]=$(load_received "$dir/load.$secs.json")
done
slope "${instr[2]}" "${instr[6]}" "${msgs[2]}" "${msgs[6]}" message \
  "$CMD, $CONNS x $SIZE B x $INFLIGHT in flight"
