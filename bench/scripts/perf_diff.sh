#!/usr/bin/env bash
# Where two servers' CPU per message differs, function by function (kernel and user
# space): each server runs on core 1 under `soliton-load echo` on core 0 while
# `perf record -e cpu-clock` samples it; the samples of each symbol become nanoseconds
# per message (samples x the sampling period / messages in the window), averaged over
# the repetitions, which alternate the servers.
#
#   bench/scripts/perf_diff.sh REPS SIZE CONNS "A=COMMAND" "B=COMMAND"
#
# COMMAND starts a server on the port given as {PORT}, e.g.
#   "epoll=./target/release/soliton-server --backend epoll --threads 1 --no-pin --port {PORT}"
#   "uws=bench/peers/target/release/uwebsockets-echo --port {PORT}"
# Prints each server's total, kernel and user nanoseconds per message, then the symbols
# where A spends the most more than B, and the most less. Environment: LOAD (default
# ./target/release/soliton-load), SECS (default 4: seconds sampled, inside a run of
# SECS + 3), TOP (default 30), IO (the load generator's --io, default epoll), KEEP
# (a folder: keep the perf data and JSON reports there).
# Needs perf (package linux-perf).
set -euo pipefail
[ $# -eq 5 ] || { sed -n 2,18p "$0"; exit 2; }
REPS=$1; SIZE=$2; CONNS=$3; A=$4; B=$5
LOAD=${LOAD:-./target/release/soliton-load}; SECS=${SECS:-4}; TOP=${TOP:-30}
dir=${KEEP:-$(mktemp -d)}
mkdir -p "$dir"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$dir"' EXIT
port=$((19700 + RANDOM % 200))
for rep in $(seq "$REPS"); do
  for spec in "$A" "$B"; do
    name=${spec%%=*}; cmd=${spec#*=}
    port=$((port + 1))
    # shellcheck disable=SC2086
    taskset -c 1 ${cmd//\{PORT\}/$port} >/dev/null 2>&1 &
    pid=$!
    sleep 0.5
    taskset -c 0 "$LOAD" echo "ws://127.0.0.1:$port/" -c "$CONNS" -s "$SIZE" -i 1 \
      -d "$((SECS + 3))s" --warmup 1s -q --io "${IO:-epoll}" --server-pid "$pid" \
      --json "$dir/$name.$rep.json" >/dev/null 2>&1 &
    lp=$!
    sleep 2
    perf record -e cpu-clock -F 4000 -p "$pid" -o "$dir/$name.$rep.data" -- sleep "$SECS" \
      >/dev/null 2>&1
    wait "$lp" || true
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
done
python3 - "$dir" "$REPS" "${A%%=*}" "${B%%=*}" "$SECS" "$TOP" <<'PY'
import json, re, subprocess, sys
d, reps, a, b, secs, top = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6])
def per_msg(name):
    out = {}
    for rep in range(1, reps + 1):
        rate = json.load(open(f"{d}/{name}.{rep}.json"))["messages"]["received_per_s"]
        rep_out = subprocess.run(["perf", "report", "-i", f"{d}/{name}.{rep}.data", "--no-children",
                                  "--sort", "sym", "--stdio", "-g", "none", "-n"],
                                 capture_output=True, text=True).stdout
        # 4,000 samples a second: each is 250 us of CPU
        ns = 250_000 / (rate * secs)
        for line in rep_out.splitlines():
            m = re.match(r"\s*[\d.]+%\s+(\d+)\s+\[(.)\]\s+(.*)", line)
            if m:
                k = ("kernel " if m.group(2) == "k" else "user   ") + m.group(3).strip()[:90]
                out[k] = out.get(k, 0) + int(m.group(1)) * ns / reps
    return out
x, y = per_msg(a), per_msg(b)
tot = lambda m, p="": sum(v for k, v in m.items() if k.startswith(p))
for n, m in ((a, x), (b, y)):
    print(f"{n}: {tot(m):.0f} ns per message ({tot(m, 'kernel'):.0f} kernel, {tot(m, 'user'):.0f} user)")
rows = sorted(((x.get(k, 0) - y.get(k, 0), k) for k in set(x) | set(y)), reverse=True)
print(f"\n{a} - {b}, ns per message ({a} / {b}):")
for diff, k in rows[:top]:
    print(f"{diff:+8.1f}  ({x.get(k, 0):7.1f} / {y.get(k, 0):7.1f})  {k}")
print("...")
for diff, k in rows[-top:]:
    print(f"{diff:+8.1f}  ({x.get(k, 0):7.1f} / {y.get(k, 0):7.1f})  {k}")
PY
