#!/usr/bin/env bash
# uWebSockets' own closed-loop load generator (its benchmarks/load_test.c, built by
# bench/peers/uwebsockets/build.sh as bench/peers/target/release/uws-load-test) against
# soliton-server (io_uring, epoll) and uwebsockets-echo: a second opinion on compare's
# one-in-flight rows. Server on core 1, load on core 0, servers interleaved per
# repetition. The server's CPU (/proc/PID/stat) over 12 s is divided by the load test's
# rate (the mean of its last two 4-second "Msg/sec" lines) x 12 s.
#
#   bench/scripts/uws_load_test.sh                 (REPS=3, ROWS="100:20 10:1024 200:16384")
#
# Prints one line per run: server CONNSxSIZE msg/s server_us_per_msg busy samples
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${REPS:-3}; ROWS=${ROWS:-"100:20 10:1024 200:16384"}; PORT=${PORT:-31000}
R=./target/release; P=./bench/peers/target/release
for bin in "$R/soliton-server" "$P/uwebsockets-echo" "$P/uws-load-test"; do
  [ -x "$bin" ] || { echo "missing $bin: cargo build --release -p soliton-bench; bench/peers/uwebsockets/build.sh" >&2; exit 2; }
done
out=$(mktemp)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -f "$out"' EXIT
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for _ in $(seq "$REPS"); do
  for row in $ROWS; do
    c=${row%%:*}; s=${row##*:}
    for srv in uring epoll uws; do
      PORT=$((PORT + 1))
      if [ "$srv" = uws ]; then
        taskset -c 1 "$P/uwebsockets-echo" --port "$PORT" 2>/dev/null &
      else
        taskset -c 1 "$R/soliton-server" --backend "$srv" --threads 1 --first-core 1 \
          --port "$PORT" --mode echo 2>/dev/null &
      fi
      pid=$!; pids=("$pid"); sleep 0.7
      taskset -c 0 stdbuf -oL "$P/uws-load-test" "$c" 127.0.0.1 "$PORT" 0 0 "$s" >"$out" 2>&1 &
      lp=$!; pids+=("$lp")
      sleep 1.5
      c0=$(ticks "$pid"); t0=$(date +%s.%N)
      sleep 12
      c1=$(ticks "$pid"); t1=$(date +%s.%N)
      kill "$lp" "$pid"; wait "$lp" "$pid" 2>/dev/null || true
      python3 - "$srv" "$c" "$s" "$c0" "$c1" "$t0" "$t1" "$out" <<'PY'
import re, sys
srv, c, s, c0, c1, t0, t1, out = sys.argv[1:]
r = [float(x) for x in re.findall(r"Msg/sec: ([0-9.]+)", open(out).read())]
r = [x for x in r if x > 0][-2:]
rate = sum(r) / len(r) if r else 0.0
cpu = (float(c1) - float(c0)) / 100.0
dt = float(t1) - float(t0)
us = cpu / (rate * dt) * 1e6 if rate else float("nan")
print(f"{srv:6} {c}x{s} {rate:,.0f} msg/s  server {us:.2f} us/msg  busy {cpu / dt:.2f}  samples {r}")
PY
    done
  done
done
