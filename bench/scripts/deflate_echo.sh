#!/usr/bin/env bash
# Compressed echo of 1 KiB JSON-like text, 10 connections, one message in flight each:
# soliton-server (io_uring and epoll, --deflate shared / dedicated / off) beside Node
# `ws` with perMessageDeflate (bench/peers/node-ws-echo; `npm install --prefix
# bench/peers/node-ws-echo ws@8` first). Server on core 1, soliton-load on core 0.
#
#   bench/scripts/deflate_echo.sh          (REPS=3 by default)
#
# Prints: server msg/s server_us_per_msg load_us_per_msg ratio errors
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${REPS:-3}; PORT=${PORT:-19601}
json=$(mktemp)
trap 'rm -f "$json"' EXIT
for _ in $(seq "$REPS"); do
  for srv in soliton-uring-shared soliton-epoll-shared soliton-uring-dedicated soliton-uring-off node-ws; do
    case $srv in
      soliton-*)
        b=$(cut -d- -f2 <<<"$srv"); m=$(cut -d- -f3 <<<"$srv")
        taskset -c 1 ./target/release/soliton-server --backend "$b" --port "$PORT" --threads 1 --no-pin --deflate "$m" >/dev/null 2>&1 &
        pid=$!; offer=$m; [ "$m" = off ] && offer=shared ;;
      node-ws)
        [ -d bench/peers/node-ws-echo/node_modules/ws ] || { echo "node-ws: not installed, skipped"; continue; }
        taskset -c 1 node bench/peers/node-ws-echo/server.js "$PORT" >/dev/null 2>&1 &
        pid=$!; offer=dedicated ;;
    esac
    sleep 0.6
    taskset -c 0 ./target/release/soliton-load echo "ws://127.0.0.1:$PORT/" -c 10 -s 1024 --text --payload json \
      --deflate "$offer" -d 3s --warmup 1s -q --server-pid "$pid" --json "$json" >/dev/null 2>&1 || true
    python3 - "$json" "$srv" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); c = d["cpu"]; z = d["messages"].get("deflate") or {}
print(sys.argv[2], "%.0f" % d["messages"]["received_per_s"], "%.2f" % c["server_us_per_msg"],
      "%.2f" % c["load_us_per_msg"], "ratio %.2f" % z.get("ratio", 1.0), "errors", d["errors_total"])
PY
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
done
