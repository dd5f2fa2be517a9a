#!/usr/bin/env bash
# wss:// side by side: soliton-server (io_uring, epoll) beside tokio-websockets and
# tokio-tungstenite over tokio-rustls (bench/peers, built with
# `cargo build --release --manifest-path bench/peers/Cargo.toml`), every server with the
# same P-256 certificate (made here with openssl), rustls 0.23 + aws-lc-rs everywhere.
# Each server on core 1, soliton-load on core 0, servers interleaved in every repetition.
# Rows: 100 x 20 B and 10 x 16 KiB echo (one in flight), full handshakes and resumed
# handshakes (connect --close, 3,000 each); plus the same soliton servers over plain
# ws:// for the wss / ws ratio.
#
#   bench/scripts/tls_compare.sh        (REPS=3 by default)
#
# Prints: server row rate server_us load_us [full/resumed]
set -euo pipefail
cd "$(dirname "$0")/../.."
REPS=${REPS:-3}; PORT=${PORT:-19701}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$dir/key.pem" -out "$dir/cert.pem" -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE >/dev/null 2>&1
peers=bench/peers/target/release
row() { # name scheme args...
  local name=$1 scheme=$2; shift 2
  local ca=()
  [ "$scheme" = wss ] && ca=(--ca "$dir/cert.pem")
  taskset -c 0 ./target/release/soliton-load "$@" "$scheme://127.0.0.1:$PORT/" "${ca[@]}" \
    -q --server-pid "$pid" --json "$dir/r.json" >/dev/null 2>&1 || true
  python3 - "$dir/r.json" "$srv" "$name" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    print(sys.argv[2], sys.argv[3], "no report"); sys.exit()
c, k = d["cpu"], d["connections"]
if d["scenario"] == "connect":
    print(sys.argv[2], sys.argv[3], "%.0f/s" % k["handshakes_per_s"], "%.1f" % (c["server_us_per_msg"] or 0),
          "%.1f" % c["load_us_per_msg"], "full %d resumed %d" % (k["handshakes"] - k.get("tls_resumed", 0), k.get("tls_resumed", 0)),
          "errors", d["errors_total"])
else:
    print(sys.argv[2], sys.argv[3], "%.0f/s" % d["messages"]["received_per_s"], "%.2f" % (c["server_us_per_msg"] or 0),
          "%.2f" % c["load_us_per_msg"], "errors", d["errors_total"])
PY
  rm -f "$dir/r.json"
}
# started through `exec` so that $! is the server itself (with an EXIT trap set, bash
# keeps a subshell between a background command and the program otherwise)
start() { (exec "$@" >/dev/null 2>&1) & }
for _ in $(seq "$REPS"); do
  for srv in soliton-uring soliton-epoll tokio-websockets tungstenite soliton-uring-ws soliton-epoll-ws; do
    scheme=wss
    case $srv in
      soliton-*-ws)
        b=$(cut -d- -f2 <<<"$srv"); scheme=ws
        start taskset -c 1 ./target/release/soliton-server --backend "$b" --port "$PORT" --threads 1 --no-pin --deflate off ;;
      soliton-*)
        b=$(cut -d- -f2 <<<"$srv")
        start taskset -c 1 ./target/release/soliton-server --backend "$b" --port "$PORT" --threads 1 --no-pin --deflate off \
          --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem" ;;
      tokio-websockets)
        start taskset -c 1 "$peers/tokio-websockets-echo" --port "$PORT" --nodelay \
          --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem" ;;
      tungstenite)
        start taskset -c 1 "$peers/tungstenite-echo" --port "$PORT" --nodelay \
          --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem" ;;
    esac
    pid=$!
    sleep 0.6
    row "100x20B" "$scheme" echo -c 100 -s 20 -d 3s --warmup 1s
    row "10x16KiB" "$scheme" echo -c 10 -s 16384 -d 3s --warmup 1s
    if [ "$scheme" = wss ]; then
      row "full-hs" "$scheme" connect -c 3000 --close --no-tls-resume
      row "resumed-hs" "$scheme" connect -c 3000 --close
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
done
