#!/bin/bash
# Two builds of soliton-load side by side in rate mode, interleaved, against one
# soliton-server on core 1 (load on core 0), on both I/O paths. Usage (from the
# repository root, release build of the server):
#   RATES="10000 40000 80000" REPS=3 bench/scripts/loadgen_ab.sh OLD_LOAD NEW_LOAD
# SB=uring runs the server on io_uring; IOS="uring" limits the load's I/O paths.
# Prints one line per run: load and server CPU us per message, latency p50 p99 p99.9.
set -u
cd "$(dirname "$0")/../.."
old=$1; new=$2
taskset -c 1 ./target/release/soliton-server --port 9301 --backend "${SB:-epoll}" > /tmp/loadgen_ab_srv.log 2>&1 &
SP=$!; sleep 0.5
trap 'kill $SP 2>/dev/null' EXIT
for rep in $(seq "${REPS:-3}"); do for r in ${RATES:-10000 40000 80000}; do for io in ${IOS:-epoll uring}; do
  for b in old new; do
    bin=$old; [ $b = new ] && bin=$new
    out=$(taskset -c 0 "$bin" rate --rate "$r" --connections 50 --duration 4s --warmup 1s --io "$io" --server-pid $SP -q ws://127.0.0.1:9301/ 2>&1)
    l=$(echo "$out" | grep "^cpu" | sed -E 's/.*load ([0-9.]+) .*/\1/')
    s=$(echo "$out" | grep -E "^ +server [0-9.]+ " | sed -E 's/.*server ([0-9.]+) .*/\1/')
    p=$(echo "$out" | grep "^latency" | awk '{print $2, $4, $5}')
    m=$(echo "$out" | grep -E "^messages" | head -1)
    echo "rate=$r io=$io build=$b load=$l server=$s lat=$p | $m"
  done
done; done; done
