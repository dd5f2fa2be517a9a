#!/bin/bash
# Many idle connections (1,000,000 on a 24 GiB machine): SERVERS soliton-server
# processes on one port (SO_REUSEPORT) and CLIENTS `soliton-load hold` processes, each
# from its own 127.0.0.x source addresses, because a process may hold only 20,000
# descriptors here and one source address gives ~28,000 ports per server address.
#
# usage: bench/scripts/idle_many.sh BACKEND SERVERS CLIENTS CONNS_PER_CLIENT [HOLD_S]
#   e.g. bench/scripts/idle_many.sh epoll 60 60 16667 150
#   (from the repository root, after cargo build --release -p soliton-bench -p soliton-load)
#
# Servers run with their defaults (idle ping after 120 s of silence), so a HOLD_S past
# 120 s includes one ping round on every connection in the idle CPU figure. Reports,
# per server process and in total: connections, RSS before and after, descriptors; the
# average RSS per connection (fixed costs touched as connections arrive included; the
# marginal cost is bench/scripts/idle_slope.py's); kernel memory per connection from
# /proc/meminfo (Slab) and /proc/net/sockstat (both ends of each connection are on this
# machine: the figure is for the pair); the ramp time; the servers' CPU while idle.
set -u
b=$1; S=$2; C=$3; N=$4; HOLD=${5:-150}; port=${PORT:-19400}
cd "$(dirname "$0")/../.."
SRV=./target/release/soliton-server
LOAD=./target/release/soliton-load
TOTAL=$((C * N))
hz=$(getconf CLK_TCK)
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
slab() { awk '/^Slab:/{print $2}' /proc/meminfo; }
memavail() { awk '/^MemAvailable:/{print $2}' /proc/meminfo; }
tcp_inuse() { awk '/^TCP:/{print $3}' /proc/net/sockstat; }
tcp_mem() { awk '/^TCP:/{print $NF}' /proc/net/sockstat; }

pids=()
cleanup() { kill "${cpids[@]}" "${pids[@]}" 2>/dev/null; wait 2>/dev/null; }
cpids=()
trap cleanup EXIT
for _ in $(seq 1 "$S"); do
  $SRV --backend "$b" --port "$port" --threads 1 --no-pin >/dev/null 2>&1 &
  pids+=($!)
done
sleep 1
declare -A base
for p in "${pids[@]}"; do base[$p]=$(rss "$p"); done
slab0=$(slab); avail0=$(memavail); inuse0=$(tcp_inuse); tmem0=$(tcp_mem)
echo "$S servers ($b), $C clients x $N = $TOTAL connections; slab $slab0 KB, TCP inuse $inuse0"

t0=$(date +%s.%N)
for j in $(seq 0 $((C - 1))); do
  # client j: its own source address (two where N is above ~28,000 ports' worth)
  a=$((2 + 2 * j)); o1=$(( a / 250 )); o2=$(( a % 250 + 2 ))
  src="127.$((o1 + 1)).0.$o2"
  src2="127.$((o1 + 1)).1.$o2"
  $LOAD hold -c "$N" --source "$src,$src2" --io "$b" --threads 1 --max-pending 256 \
    --connect-timeout 60s -d "$((HOLD + 60))s" -q ws://127.0.0.1:$port/ \
    >"${TMPDIR:-/tmp}/idle-many-client.$j" 2>&1 &
  cpids+=($!)
done
# ramp: until every connection is up on both ends (or 300 s)
want=$((inuse0 + 2 * TOTAL))
last=-1; same=0
while :; do
  now=$(tcp_inuse)
  [ "$now" -ge "$want" ] && break
  if [ "$now" = "$last" ]; then same=$((same + 1)); else same=0; fi
  [ "$same" -ge 20 ] && { echo "ramp stalled at $(( (now - inuse0) / 2 )) connections"; break; }
  last=$now
  sleep 1
  (( $(date +%s) - ${t0%.*} > 300 )) && { echo "ramp took over 300 s"; break; }
done
t1=$(date +%s.%N)
sleep 3
conns_total=0; tot=0; totb=0
declare -A c0
for p in "${pids[@]}"; do
  r=$(rss "$p"); f=$(ls "/proc/$p/fd" | wc -l); c=$((f - 8))
  printf 'server %s: ~%s connections (%s fds), RSS %s -> %s KB\n' "$p" "$c" "$f" "${base[$p]}" "$r"
  tot=$((tot + r)); totb=$((totb + base[$p])); c0[$p]=$(cpu "$p")
done
open=$(( ($(tcp_inuse) - inuse0) / 2 ))
slab1=$(slab); avail1=$(memavail); tmem1=$(tcp_mem)
crss=0; for p in "${cpids[@]}"; do crss=$((crss + $(rss "$p"))); done
python3 - "$t0" "$t1" "$open" "$TOTAL" "$totb" "$tot" "$slab0" "$slab1" "$avail0" "$avail1" "$tmem0" "$tmem1" "$crss" "$S" <<'PY'
import sys
t0, t1 = float(sys.argv[1]), float(sys.argv[2])
opened, total, rb, ra, s0, s1, a0, a1, m0, m1, crss, S = map(int, sys.argv[3:])
print(f"ramp: {opened:,} of {total:,} connections open in {t1 - t0:.1f} s ({opened / (t1 - t0):,.0f}/s)")
print(f"servers: RSS {rb:,} -> {ra:,} KB over {S} processes: {(ra - rb) * 1024 / max(opened, 1):.0f} B per connection (average, fixed costs touched included)")
print(f"clients: RSS {crss:,} KB in all: {crss * 1024 / max(opened, 1):.0f} B per connection")
print(f"kernel: Slab {s0:,} -> {s1:,} KB: {(s1 - s0) * 1024 / max(opened, 1):,.0f} B per connection (both ends); "
      f"MemAvailable fell {(a0 - a1) * 1024 / max(opened, 1):,.0f} B per connection (everything); "
      f"sockstat TCP mem {m0} -> {m1} pages")
PY
echo "holding ${HOLD} s (the servers' idle ping comes after 120 s of silence)"
sleep "$HOLD"
busy=0
for p in "${pids[@]}"; do busy=$((busy + $(cpu "$p") - c0[$p])); done
python3 -c "import sys; b, hz, t, n = map(int, sys.argv[1:]); print(f'idle CPU of all servers over {t} s: {b / hz:.2f} CPU-s = {100 * b / hz / t:.2f}% of one core; {1e6 * b / hz / t / max(n,1):.3f} us per connection per second')" "$busy" "$hz" "$HOLD" "$open"
still=$(( ($(tcp_inuse) - inuse0) / 2 ))
echo "connections still open after holding: $still"
