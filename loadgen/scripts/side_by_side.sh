#!/usr/bin/env bash
# Side-by-side CPU per message: soliton-server on core 1, soliton-load on core 0, closed
# loop, both server backends, REPS runs of each case. Prints one line per run and the
# medians. Build first (release):
#   cargo build --release -p soliton-bench --bin soliton-server && cargo build --release -p soliton-load
# Usage: loadgen/scripts/side_by_side.sh [REPS] [DURATION]
set -euo pipefail
REPS=${1:-3}
DUR=${2:-5s}
T=${CARGO_TARGET_DIR:-target}/release
PORT=${PORT:-27401}
out=$(mktemp -d)
printf '%-7s %-10s %4s %10s %12s %10s %11s %s\n' backend case run "msg/s" "load us/msg" "(user)" "srv us/msg" verdict
for backend in uring epoll; do
  taskset -c 1 "$T/soliton-server" --backend "$backend" --threads 1 --first-core 1 \
    --port "$PORT" >"$out/server-$backend.log" 2>&1 &
  spid=$!
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
  done
  for case in "100x20B:-c 100 --size 20" "10x16KiB:-c 10 --size 16384"; do
    name=${case%%:*}
    args=${case#*:}
    for r in $(seq "$REPS"); do
      # shellcheck disable=SC2086
      "$T/soliton-load" echo "ws://127.0.0.1:$PORT/" $args --inflight 1 --cores 0 \
        --duration "$DUR" --warmup 1s --server-pid "$spid" -q \
        --json "$out/$backend-$name-$r.json" >/dev/null
      python3 - "$out/$backend-$name-$r.json" "$backend" "$name" "$r" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
c = j["cpu"]
print(f'{sys.argv[2]:<7} {sys.argv[3]:<10} {sys.argv[4]:>4} {j["messages"]["received_per_s"]:>10.0f}'
      f' {c["load_us_per_msg"]:>12.2f} {c["load_user_us_per_msg"]:>10.2f} {c["server_us_per_msg"]:>11.2f}'
      f' {c["verdict"].split(":")[0].split(" (")[0]}')
PY
    done
  done
  kill "$spid"
  wait "$spid" 2>/dev/null || true
  PORT=$((PORT + 1))
done
echo
echo "medians:"
python3 - "$out" <<'PY'
import glob, json, os, statistics, sys
rows = {}
for p in glob.glob(os.path.join(sys.argv[1], "*.json")):
    b, case, _ = os.path.basename(p)[:-5].split("-")
    j = json.load(open(p))
    rows.setdefault((b, case), []).append(
        (j["messages"]["received_per_s"], j["cpu"]["load_us_per_msg"], j["cpu"]["server_us_per_msg"],
         j["cpu"]["load_user_us_per_msg"]))
print(f'{"backend":<7} {"case":<10} {"msg/s":>10} {"load us/msg":>12} {"(user)":>7} {"srv us/msg":>11} {"load/srv":>9}')
for (b, case), v in sorted(rows.items()):
    m = [statistics.median(x[i] for x in v) for i in range(4)]
    print(f'{b:<7} {case:<10} {m[0]:>10.0f} {m[1]:>12.2f} {m[3]:>7.2f} {m[2]:>11.2f} {m[1] / m[2]:>9.2f}')
PY
rm -rf "$out"
