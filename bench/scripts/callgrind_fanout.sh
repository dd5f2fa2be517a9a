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
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
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
  instr[$secs]=$(callgrind_annotate "$dir"/cg.$secs.* 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  deliveries[$secs]=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['messages']['received_total'])" "$dir/load.$secs.json")
done
python3 -c "
import sys
i2, i5, d2, d5 = map(int, sys.argv[1:5])
print('%s %s, %s subscribers at %s/s: %.0f instructions per delivery (deliveries %d, %d)' % (sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8], (i5 - i2) / (d5 - d2), d2, d5))
" "${instr[2]}" "${instr[5]}" "${deliveries[2]}" "${deliveries[5]}" "$SERVER" "$BACKEND" "$SUBS" "$RATE"
