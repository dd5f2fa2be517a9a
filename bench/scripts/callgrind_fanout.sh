#!/usr/bin/env bash
# User-space instructions per delivery of a broadcast server, by callgrind.
#
#   bench/scripts/callgrind_fanout.sh SERVER BACKEND [SUBSCRIBERS] [RATE]
#
# Runs SERVER (a soliton-server binary) under `valgrind --tool=callgrind` with
# `--mode broadcast` on core 1, and `soliton-load fanout` (one publisher at RATE
# publishes/s, SUBSCRIBERS receivers; defaults 1000 and 100) on core 0, once for 2 s
# and once for 5 s; prints the slope: the difference of the two instruction totals over
# the difference of the deliveries, so that start-up and handshakes drop out.
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,10p "$0"; exit 2; }
SERVER=$1; BACKEND=$2; SUBS=${3:-1000}; RATE=${4:-100}
LOAD=${LOAD:-./target/release/soliton-load}; PORT=${PORT:-19471}
# shellcheck source=bench/scripts/callgrind_common.sh
. "$(dirname "$0")/callgrind_common.sh"
declare -A instr deliveries
for secs in 2 5; do
  taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$dir/cg.$secs" \
    "$SERVER" --backend "$BACKEND" --threads 1 --no-pin --port "$PORT" --mode broadcast \
    >/dev/null 2>&1 &
  pid=$!
  sleep 2.5
  taskset -c 0 "$LOAD" fanout "ws://127.0.0.1:$PORT/" --subscribers "$SUBS" --publishers 1 \
    --rate "$RATE" -d "${secs}s" --warmup 0s -q --json "$dir/load.$secs.json" >/dev/null 2>&1 || true
  callgrind_control -d "$pid" >/dev/null 2>&1 || true
  sleep 1
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  instr[$secs]=$(cg_instructions "$dir/cg.$secs.")
  deliveries[$secs]=$(load_received "$dir/load.$secs.json")
done
slope "${instr[2]}" "${instr[5]}" "${deliveries[2]}" "${deliveries[5]}" delivery \
  "$SERVER $BACKEND, $SUBS subscribers at $RATE/s"
