#!/bin/bash
# Scaling with cores (a 16-core machine): soliton-server --threads N on cores 0..N-1
# (N = 1, 2, 4, 8), soliton-load with 8 threads on cores 8-15; 1,000 connections of
# 20 B, one in flight and 64 in flight, both backends. Needs python3 for the summary.
# usage: BIN=target/release OUT=/tmp bench/scripts/scale_cores.sh
B=${BIN:-target/release}; out=${OUT:-/tmp}
nproc; uname -r
for be in uring epoll; do
 for n in 1 2 4 8; do
  for sc in e20 pipe; do
   port=$((20000 + n + RANDOM % 500))
   $B/soliton-server --backend $be --port $port --threads $n --first-core 0 >$out/srv-$be-$n.log 2>&1 & pid=$!
   sleep 0.5
   case $sc in
     e20) args="echo -c 1000 -s 20";;
     pipe) args="echo -c 1000 -s 20 -i 64";;
   esac
   $B/soliton-load $args -t 8 --cores 8-15 -d 4s --warmup 1s --server-pid $pid -q --json $out/$be-$n-$sc.json ws://127.0.0.1:$port/ > $out/$be-$n-$sc.txt 2>&1
   kill $pid; wait $pid 2>/dev/null
   python3 -c "
import json; d=json.load(open('$out/$be-$n-$sc.json')); c=d['cpu']; m=d['messages']
print('$be', $n, '$sc', int(m['received_per_s']), 'srv_us', round(c.get('server_us_per_msg') or -1,3), 'srv_cpu_s', c.get('server_s'), 'load_busiest', round(c['load_busiest_thread'],2), 'p99', d['latency_us']['p99'])" 2>&1 || tail -3 $out/$be-$n-$sc.txt
  done
 done
done
