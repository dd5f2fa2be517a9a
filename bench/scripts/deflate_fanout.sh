#!/usr/bin/env bash
# Fan-out with and without compression: 1 publisher, 1,000 subscribers, 1 KiB JSON-like
# text at RATE publishes/s (default 100, i.e. 100,000 deliveries/s), against
# `soliton-server --mode broadcast --deflate shared`; the subscribers offer
# permessage-deflate (shared) or not (off). Server on core 1, soliton-load on core 0.
#
#   bench/scripts/deflate_fanout.sh        (REPS=3, RATE=100 by default)
#
# Prints: backend deflate deliveries/s server_us_per_delivery load_us p99
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${REPS:-3}; RATE=${RATE:-100}; PORT=${PORT:-19801}
json=$(mktemp)
trap 'rm -f "$json"' EXIT
for _ in $(seq "$REPS"); do
  for b in uring epoll; do
    for z in off shared; do
      taskset -c 1 ./target/release/soliton-server --backend "$b" --port "$PORT" --threads 1 --no-pin \
        --mode broadcast --deflate shared >/dev/null 2>&1 &
      pid=$!
      sleep 0.5
      taskset -c 0 ./target/release/soliton-load fanout "ws://127.0.0.1:$PORT/" --subscribers 1000 --publishers 1 \
        --rate "$RATE" -s 1024 --text --payload json --deflate "$z" -d 4s --warmup 1s -q \
        --server-pid "$pid" --json "$json" >/dev/null 2>&1 || true
      python3 - "$json" "$b" "$z" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); c = d["cpu"]; f = d.get("fanout") or {}
print(sys.argv[2], "deflate-" + sys.argv[3], "deliveries/s %.0f" % f.get("delivered_per_s", 0),
      "server_us/delivery %.2f" % c["server_us_per_msg"], "load_us %.2f" % c["load_us_per_msg"],
      "p99 %.0f us" % d["latency_us"]["p99"], "errors", d["errors_total"])
PY
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    done
  done
done
