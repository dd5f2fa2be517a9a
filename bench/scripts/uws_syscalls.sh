#!/usr/bin/env bash
# System calls and context switches per message of epoll servers under uWebSockets' own
# closed-loop load generator (bench/peers/target/release/uws-load-test, built by
# bench/peers/uwebsockets/build.sh), interleaved: each run starts one server on core 1,
# the load test on core 0, and after 1.5 s counts the server's syscall tracepoints for
# 8 s with `perf stat`, divided by the load test's rate (mean of its last two "Msg/sec"
# lines). Also the server's CPU per message (/proc/PID/stat over the same 8 s).
#
#   bench/scripts/uws_syscalls.sh REPS "CONNS:SIZE ..." NAME=SOLITON_SERVER... [uws]
#   e.g. bench/scripts/uws_syscalls.sh 5 "100:20 10:1024" new=./target/release/soliton-server uws
#
# One line per run: name row msg/s server_us busy, then per message: epoll_wait,
# recvfrom, sendto, context-switches.
set -uo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 3 ] || { sed -n 2,13p "$0"; exit 2; }
reps=$1; rows=$2; shift 2
P=bench/peers/target/release; port=${PORT:-31800}
lt=$(mktemp); ps=$(mktemp)
trap 'rm -f "$lt" "$ps"' EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for _ in $(seq "$reps"); do for row in $rows; do c=${row%%:*}; s=${row##*:}
for srv in "$@"; do port=$((port+1))
  if [ "$srv" = uws ]; then taskset -c 1 "$P/uwebsockets-echo" --port "$port" >/dev/null 2>&1 &
  else taskset -c 1 "${srv#*=}" --backend epoll --threads 1 --first-core 1 --port "$port" --mode echo >/dev/null 2>&1 & fi
  pid=$!; sleep 0.7
  taskset -c 0 stdbuf -oL "$P/uws-load-test" "$c" 127.0.0.1 "$port" 0 0 "$s" > "$lt" 2>&1 & lp=$!
  sleep 1.5; c0=$(ticks "$pid"); t0=$(date +%s.%N)
  perf stat -x, -e 'syscalls:sys_enter_epoll_wait,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,context-switches' \
    -p "$pid" -- sleep 8 2> "$ps"
  c1=$(ticks "$pid"); t1=$(date +%s.%N)
  kill "$lp" "$pid"; wait "$lp" "$pid" 2>/dev/null
  python3 - "${srv%%=*}" "$row" "$c0" "$c1" "$t0" "$t1" "$lt" "$ps" <<'PY'
import re, sys
name, row, c0, c1, t0, t1, lt, ps = sys.argv[1:]
r = [float(x) for x in re.findall(r"Msg/sec: ([0-9.]+)", open(lt).read())]
r = [x for x in r if x > 0][-2:]
rate = sum(r) / len(r) if r else 0
dt = float(t1) - float(t0)
cpu = (float(c1) - float(c0)) / 100
ev = {}
for l in open(ps):
    f = l.strip().split(",")
    if len(f) > 2 and f[0].isdigit():
        ev[f[2].split(":")[-1].replace("sys_enter_", "")] = int(f[0]) / (rate * 8) if rate else 0
us = cpu / (rate * dt) * 1e6 if rate else 0
print(f"{name:6} {row:9} {rate:9.0f} msg/s server {us:.2f} us/msg busy {cpu / dt:.2f} "
      + " ".join(f"{k}={v:.3f}" for k, v in ev.items()))
PY
done; done; done
