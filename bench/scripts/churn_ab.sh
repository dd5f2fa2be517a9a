#!/usr/bin/env bash
# Connection storms, servers side by side: each run opens N connections (100 at a time,
# over 127.0.0.2-9), and with --close closes each (close handshake) as soon as it is
# open; one line per run with the server's and the load generator's CPU per connection
# (their /proc/PID/stat), the whole machine's (/proc/stat: user, nice, system, irq,
# softirq, steal), and the TCP segments per connection (both directions: /proc/net/snmp
# OutSegs over loopback).
#
# Usage: bench/scripts/churn_ab.sh REPS "epoll uring" N [NAME=SERVER_BINARY|uws ...]
#   e.g. bench/scripts/churn_ab.sh 4 "epoll uring" 20000 old=/tmp/old-server \
#          new=./target/release/soliton-server uws
#   uws: bench/peers/target/release/uwebsockets-echo (epoll only; build it with
#   bench/peers/uwebsockets/build.sh). Environment: CLOSE (default --close; empty: keep
#   the connections open until the end, as `compare`'s connect row), LOAD (default
#   ./target/release/soliton-load), PORT (default 9411). Server on core 1, load on core 0.
set -euo pipefail
reps=$1
backends=$2
n=$3
shift 3
close=${CLOSE---close}
load=${LOAD:-./target/release/soliton-load}
port=${PORT:-9411}
uws=bench/peers/target/release/uwebsockets-echo
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat; }
segs() { awk '/^Tcp:/ {if (h) {print $12} else {h=1}}' /proc/net/snmp; }
for r in $(seq 1 "$reps"); do
  for b in $backends; do
    for s in "$@"; do
      name=${s%%=*}
      if [ "$s" = uws ]; then
        [ "$b" = epoll ] || continue
        taskset -c 1 "$uws" --port "$port" >/dev/null 2>&1 &
      else
        taskset -c 1 "${s#*=}" --backend "$b" --threads 1 --port "$port" >/dev/null 2>&1 &
      fi
      pid=$!
      sleep 0.4
      c0=$(busy)
      s0=$(segs)
      out=$(taskset -c 0 "$load" connect "ws://127.0.0.1:$port/" -c "$n" --concurrency 100 \
        --source 127.0.0.2-127.0.0.9 $close --server-pid "$pid" 2>&1 || true)
      c1=$(busy)
      sleep 1 # the last FINs and ACKs
      s1=$(segs)
      srv=$(grep -oP 'server \K[0-9.]+(?= µs)' <<<"$out" | head -1)
      ld=$(grep -oP 'load \K[0-9.]+(?= µs)' <<<"$out" | head -1)
      rate=$(grep -oP '^rate +\K[0-9,]+' <<<"$out" | tr -d ,)
      machine=$(awk -v a="$c0" -v z="$c1" -v n="$n" -v hz="$(getconf CLK_TCK)" \
        'BEGIN {printf "%.2f", (z - a) * 1e6 / hz / n}')
      seg=$(awk -v a="$s0" -v z="$s1" -v n="$n" 'BEGIN {printf "%.2f", (z - a) / n}')
      echo "rep=$r backend=$b server=$name srv_us=${srv:-?} load_us=${ld:-?} machine_us=$machine segments=$seg rate=${rate:-?}"
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      sleep 0.5
    done
  done
done
