#!/usr/bin/env bash
# Cross-node fan-out (docs/benchmarks.md, "Topics across nodes"): one publisher on node A,
# subscribers spread over nodes A, B and C that share topic "all" through one
# nats-server; beside it the same subscribers on one node without the broker.
# Prints one line per run: deliveries/s, p50/p99 delivery latency, and CPU per delivery
# on each process (utime+stime from /proc over the whole soliton-load run, set-up
# included), the broker's per published message.
#
#   cargo build --release -p soliton-bench --bin soliton-server -p soliton-load
#   SUBS=100 RATE=500 RUNS=3 bench/cluster_fanout.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SUBS=${SUBS:-100}          # subscribers per node (cluster); 3x that on the single node
RATE=${RATE:-500}          # publishes per second, one publisher
DUR=${DUR:-10s}
RUNS=${RUNS:-3}
SIZES=${SIZES:-"20 1024"}
NODE_CORES=(${NODE_CORES:-0 0 0})  # node A (and the single node), B, C: one worker each
BROKER_CORES=${BROKER_CORES:-0}
LOAD_CORES=${LOAD_CORES:-1}
LOAD_FLAGS=${LOAD_FLAGS:-}         # e.g. "--threads 4"
S=${S:-./target/release/soliton-server}
L=${L:-./target/release/soliton-load}
NATS=${NATS:-nats-server}
OUT=target/cluster-bench
mkdir -p "$OUT"
NP=24222
MP=28222
TICK=$(getconf CLK_TCK)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap cleanup EXIT

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

node() { # index port [flags...]
  local core=${NODE_CORES[$1]} port=$2
  shift 2
  taskset -c "$core" "$S" --port "$port" --threads 1 --no-pin --mode broadcast "$@" \
    >"$OUT/node-$port.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
}

run() { # setup size run
  local setup=$1 size=$2 r=$3 subs_flags=() total
  if [ "$setup" = cluster ]; then
    taskset -c "$BROKER_CORES" "$NATS" -a 127.0.0.1 -p $NP -m $MP >"$OUT/nats.log" 2>&1 &
    pids+=($!)
    wait_port $NP
    for i in 0 1 2; do node $i $((29101 + i)) --nats nats://127.0.0.1:$NP; done
    # the broker's own CPU with three idle nodes connected, for scale
    local t0
    t0=$(ticks "${pids[0]}")
    sleep 2
    idle=$(( $(ticks "${pids[0]}") - t0 ))
    subs_flags=(--subscriber-url ws://127.0.0.1:29101/ --subscriber-url ws://127.0.0.1:29102/
      --subscriber-url ws://127.0.0.1:29103/)
  else
    node 0 29101
    idle=0
  fi
  total=$((3 * SUBS))
  local before=() p
  for p in "${pids[@]}"; do before+=("$(ticks "$p")"); done
  local json="$OUT/$setup-$size-$r.json"
  # shellcheck disable=SC2086
  taskset -c "$LOAD_CORES" "$L" fanout ws://127.0.0.1:29101/ "${subs_flags[@]}" $LOAD_FLAGS \
    --subscribers $total --publishers 1 --rate "$RATE" --size "$size" \
    -d "$DUR" --warmup 2s --quiet --json "$json" >/dev/null
  local cpu=() i=0
  for p in "${pids[@]}"; do cpu+=($(( $(ticks "$p") - before[i] ))); i=$((i + 1)); done
  python3 - "$json" "$setup" "$size" "$TICK" "$idle" "${cpu[@]}" <<'EOF'
import json, sys
path, setup, size, tick = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
idle = int(sys.argv[5]) / tick / 2
cpu = [int(c) / tick for c in sys.argv[6:]]
d = json.load(open(path))
f, lat, cfg = d["fanout"], d["latency_us"], d["config"]
# deliveries over the whole run (warm-up and drain too), for CPU per delivery
per_msg = f["deliveries_per_message"]
sent_total = d["messages"]["sent_total"]
deliv_total = sent_total * per_msg
names = ["broker", "A", "B", "C"] if setup == "cluster" else ["node"]
parts = []
for n, c in zip(names, cpu):
    if n == "broker":
        parts.append(f"broker {c:.2f} s = {c / sent_total * 1e6:.1f} us/publish (idle {idle:.0%})")
    else:
        parts.append(f"{n} {c:.2f} s")
node_cpu = sum(c for n, c in zip(names, cpu) if n != "broker")
print(f"{setup:8} {size:>5} B  {f['delivered_per_s']:>9,.0f} deliveries/s  "
      f"p50 {lat['p50']:>7.0f} us  p99 {lat['p99']:>7.0f} us  "
      f"nodes {node_cpu / deliv_total * 1e6:.2f} us/delivery  [{', '.join(parts)}]  "
      f"errors {d['errors_total']}")
EOF
  cleanup
}

echo "subscribers $((3 * SUBS)) ($SUBS per node in the cluster), $RATE publishes/s, $DUR; nodes on cores ${NODE_CORES[*]}, broker on $BROKER_CORES, load on $LOAD_CORES $LOAD_FLAGS"
for size in $SIZES; do
  for r in $(seq "$RUNS"); do
    run single "$size" "$r"
    run cluster "$size" "$r"
  done
done
