#!/usr/bin/env bash
# Interleaved A/B of soliton-server binaries driven by one load generator.
#
#   bench/scripts/ab_servers.sh LOAD SERVER_A SERVER_B [...]
#
# Each repetition runs every row on both backends against every server in turn (server
# pinned to core 1, load to core 0), and prints one line per run:
#   server backend row msg/s server_us_per_msg load_us_per_msg
# Environment: REPS (default 5), ROWS (default "20x100x1 16384x10x1 20x100x1024":
# size x connections x in-flight), BACKENDS (default "uring epoll"), SECS (default 3).
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,11p "$0"; exit 2; }
LOAD=$1; shift
REPS=${REPS:-5}; ROWS=${ROWS:-"20x100x1 16384x10x1 20x100x1024"}
BACKENDS=${BACKENDS:-"uring epoll"}; SECS=${SECS:-3}; PORT=${PORT:-19461}
json=$(mktemp)
trap 'rm -f "$json"' EXIT
for _ in $(seq "$REPS"); do
  for b in $BACKENDS; do
    for row in $ROWS; do
      IFS=x read -r size conns inflight <<<"$row"
      for srv in "$@"; do
        taskset -c 1 "$srv" --backend "$b" --port "$PORT" --threads 1 --no-pin >/dev/null 2>&1 &
        pid=$!
        sleep 0.3
        taskset -c 0 "$LOAD" echo "ws://127.0.0.1:$PORT/" -c "$conns" -s "$size" -i "$inflight" \
          -d "${SECS}s" --warmup 1s -q --io "$b" --server-pid "$pid" --json "$json" >/dev/null 2>&1 || true
        python3 - "$json" "$srv" "$b" "$row" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); c = d["cpu"]
print(sys.argv[2], sys.argv[3], sys.argv[4], "%.0f" % d["messages"]["received_per_s"],
      "%.4f" % c["server_us_per_msg"], "%.4f" % c["load_us_per_msg"])
PY
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
      done
    done
  done
done
