#!/bin/bash
# RSS per idle connection at 100,000 connections: several soliton-server processes on
# one port (SO_REUSEPORT; a process may hold 20,000 descriptors here) and as many
# client processes over several 127.0.0.x source addresses.
# usage: bench/scripts/idle_100k.sh BACKEND SERVERS CLIENTS CONNS_PER_CLIENT
#   e.g. bench/scripts/idle_100k.sh uring 7 6 16667   (run from the repository root,
#   after cargo build --release -p soliton-bench)
b=$1; S=$2; C=$3; N=$4; port=19300
cd "$(dirname "$0")/../.."
HERE=bench/scripts
pids=()
for i in $(seq 1 $S); do ./target/release/soliton-server --backend $b --port $port --threads 1 --no-pin --idle-timeout 0 >/dev/null 2>&1 & pids+=($!); done
sleep 0.5
rss() { awk '/VmRSS/{print $2}' /proc/$1/status; }
declare -A base; for p in "${pids[@]}"; do base[$p]=$(rss $p); done
rm -f ${TMPDIR:-/tmp}/soliton-idle-ready.*
cpids=()
for j in $(seq 0 $((C-1))); do python3 $HERE/idle_client.py $port $N $((2 + j*4)) 4 ${TMPDIR:-/tmp}/soliton-idle-ready.$j & cpids+=($!); done
for t in $(seq 1 240); do n=$(ls ${TMPDIR:-/tmp}/soliton-idle-ready.* 2>/dev/null | wc -l); [ "$n" = "$C" ] && break; sleep 1; done
sleep 2
ok=$(cat ${TMPDIR:-/tmp}/soliton-idle-ready.* | awk '{s+=$1} END {print s}')
tot=0; totb=0; conns=0
for p in "${pids[@]}"; do r=$(rss $p); c=$(ls /proc/$p/fd | wc -l); echo "server $p: rss ${base[$p]} -> $r KB, fds $c"; tot=$((tot + r)); totb=$((totb + ${base[$p]})); done
echo "$b: $ok connections open (101); total server RSS $totb -> $tot KB; $(( (tot - totb) * 1024 / ok )) B per connection"
kill "${cpids[@]}" "${pids[@]}" 2>/dev/null; wait 2>/dev/null
