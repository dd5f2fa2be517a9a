#!/bin/bash
# The load generator's own CPU in rate mode, answers timed by the kernel or by the loop,
# on both I/O paths, against soliton-server (epoll) on core 1, load on core 0,
# interleaved. Usage (from the repository root, release build):
#   bench/scripts/loadgen_rxtime.sh "2000 10000 20000 40000" \
#       "epoll:kernel uring:kernel epoll:loop uring:loop" 3 4s
# SB=uring runs the server on io_uring. LOADS="old=PATH new=PATH" runs each of those
# soliton-load builds in turn in every combination (an A/B of two builds; each line
# then says build=LABEL); by default this tree's build.
set -u
cd "$(dirname "$0")/../.."
taskset -c 1 ./target/release/soliton-server --port 9301 --backend "${SB:-epoll}" > /tmp/srv.log 2>&1 &
SP=$!; sleep 0.5
trap 'kill $SP 2>/dev/null' EXIT
for rep in $(seq "$3"); do for r in $1; do for im in $2; do io=${im%%:*}; m=${im##*:}
  for lb in ${LOADS:-./target/release/soliton-load}; do
  bin=${lb#*=}; label=""; [ "$bin" != "$lb" ] && label=" build=${lb%%=*}"
  out=$(taskset -c 0 "$bin" rate --rate "$r" --connections 50 --duration "$4" --warmup 1s --io "$io" --rx-time "$m" --server-pid $SP -q ws://127.0.0.1:9301/ 2>&1)
  l=$(echo "$out" | grep "^cpu" | sed -E 's/.*load ([0-9.]+) .*/\1/'); s=$(echo "$out" | grep -E "^ +server [0-9.]+ " | sed -E 's/.*server ([0-9.]+) .*/\1/')
  p=$(echo "$out" | grep "^latency" | awk '{print $2, $4, $5}')
  echo "rate=$r io=$io mode=$m$label load=$l server=$s ratio=$(python3 -c "print(round($l/$s,2))" 2>/dev/null) lat(p50,p99,p99.9)=$p"
  done
done; done; done
