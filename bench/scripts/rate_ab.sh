#!/usr/bin/env bash
# Servers side by side under an open-loop load (soliton-load rate): server and load CPU
# per message, latency, and the server's wake-ups (voluntary context switches) per
# message. Each repetition runs every rate against every server in turn, a fresh
# server each run (pinned to core 1, load to core 0).
#
#   bench/scripts/rate_ab.sh REPS "RATES" "NAME=SERVER_BIN:BACKEND ..." [CONNS] [SIZE]
#
# e.g. bench/scripts/rate_ab.sh 3 "10000 40000 80000" \
#        "old=/tmp/old-server:uring new=./target/release/soliton-server:uring"
# LOAD=PATH picks the soliton-load build (default ./target/release/soliton-load);
# PORT0 the first port (each run takes the next). One line per run:
#   NAME rate R srv US busy B load US busy B p50 .. p99 .. p99.9 .. ctxsw/msg X
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,13p "$0"; exit 2; }
reps=$1; rates=$2; servers=$3; conns=${4:-100}; size=${5:-20}
load=${LOAD:-./target/release/soliton-load}; port=${PORT0:-27300}
json=$(mktemp)
trap 'rm -f "$json"' EXIT
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt/ {s+=$2} END {print s+0}'; }
for _ in $(seq "$reps"); do
  for rate in $rates; do
    for sv in $servers; do
      name=${sv%%=*}; rest=${sv#*=}; bin=${rest%:*}; backend=${rest##*:}
      port=$((port + 1))
      taskset -c 1 "$bin" --threads 1 --no-pin --backend "$backend" --port "$port" --log error >/dev/null 2>&1 &
      pid=$!
      sleep 0.4
      before=$(switches "$pid")
      taskset -c 0 "$load" rate "ws://127.0.0.1:$port/" -c "$conns" --size "$size" --rate "$rate" \
        -d 4s --warmup 1s --server-pid "$pid" --json "$json" -q >/dev/null 2>&1 || true
      after=$(switches "$pid")
      kill -INT "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      python3 - "$json" "$name" "$rate" "$before" "$after" <<'PY'
import json, sys
f, name, rate, before, after = sys.argv[1:]
d = json.load(open(f))
m = d["messages"]["received_total"]; c = d["cpu"]; l = d["latency_us"]
print(f"{name:8} rate {rate:>7} srv {c['server_us_per_msg']:.2f} busy {c['server_busiest_thread']:.2f} "
      f"load {c['load_us_per_msg']:.2f} busy {c['load_busiest_thread']:.2f} p50 {l['p50']:.0f} "
      f"p99 {l['p99']:.0f} p99.9 {l['p99_9']:.0f} ctxsw/msg {(int(after) - int(before)) / max(m, 1):.3f}")
PY
    done
  done
done
