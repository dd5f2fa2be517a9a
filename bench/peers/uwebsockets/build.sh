#!/usr/bin/env bash
# Builds the uWebSockets peer for `compare`:
#   bench/peers/target/release/uwebsockets-echo   our echo.cpp (modelled on uWebSockets'
#                                                 examples/EchoServer.cpp), --port N
#   bench/peers/target/release/uws-load-test      uWebSockets' benchmarks/load_test.c, a
#                                                 second-opinion load generator (optional:
#                                                 needs zlib's header and library; skipped
#                                                 with a warning if it does not build)
#
# Usage: bench/peers/uwebsockets/build.sh [UWS_SRC [USOCKETS_SRC]]
#   UWS_SRC       a uWebSockets source tree (or the env var UWS_SRC)
#   USOCKETS_SRC  a uSockets source tree (or the env var USOCKETS_SRC); default
#                 UWS_SRC/uSockets when that holds the sources (the git submodule)
# Without UWS_SRC the sources are extracted from the bare snapshots under
# ${UWS_MIRROR:-/work/.mirror} (uNetworking+uWebSockets/repo, uNetworking+uSockets/repo)
# if present. Neither is committed to this repository (uWebSockets and uSockets are
# Apache-2.0, (c) Alex Hultman and contributors).
#
# The sources are copied into bench/peers/target/uwebsockets/ (git-ignored), so the
# given trees are never written to. uSockets is built by its own Makefile with its
# defaults (epoll event loop, -O3 -flto) and WITH_OPENSSL=0 WITH_LIBUV=0 (so
# -DLIBUS_NO_SSL); echo.cpp is compiled the way uWebSockets' build.c compiles its
# examples: -march=native -O3 -flto, here with -std=c++17 and -DUWS_NO_ZLIB (no
# permessage-deflate, no zlib). Needs only make, a C compiler and a C++17 compiler.
#
# Environment: CC (default cc), CXX (default g++), UWS_CXXSTD (default c++17),
# UWS_MARCH (default -march=native, as build.c; set it empty to leave it out).
#
# Exit status: 0 built; 3 no sources found; anything else: a build step failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
peers="$(dirname "$here")"
out_dir="$peers/target/release"
work="$peers/target/uwebsockets"
mirror="${UWS_MIRROR:-/work/.mirror}"
CC="${CC:-cc}"
CXX="${CXX:-g++}"
std="${UWS_CXXSTD:-c++17}"
march="${UWS_MARCH--march=native}"

uws_src="${1:-${UWS_SRC:-}}"
us_src="${2:-${USOCKETS_SRC:-}}"

# check the sources before touching anything
uws_git="$mirror/uNetworking+uWebSockets/repo"
us_git="$mirror/uNetworking+uSockets/repo"
if [ -z "$uws_src" ]; then
    if [ ! -d "$uws_git" ] || { [ -z "$us_src" ] && [ ! -d "$us_git" ]; }; then
        echo "uwebsockets: no sources: pass UWS_SRC [USOCKETS_SRC] (arguments or env vars), or put the snapshots in $mirror" >&2
        exit 3
    fi
elif [ ! -f "$uws_src/src/App.h" ]; then
    echo "uwebsockets: $uws_src is not a uWebSockets tree (no src/App.h)" >&2
    exit 3
fi
if [ -n "$us_src" ] && [ ! -f "$us_src/src/libusockets.h" ]; then
    echo "uwebsockets: $us_src is not a uSockets tree (no src/libusockets.h)" >&2
    exit 3
fi

rm -rf "$work"
mkdir -p "$work/uWebSockets" "$out_dir"
if [ -z "$uws_src" ]; then
    echo "uwebsockets: extracting $uws_git ($(git --git-dir="$uws_git" describe --tags --always HEAD 2>/dev/null || echo HEAD))"
    git --git-dir="$uws_git" archive HEAD | tar -x -C "$work/uWebSockets"
    if [ -z "$us_src" ]; then
        echo "uwebsockets: extracting $us_git ($(git --git-dir="$us_git" describe --tags --always HEAD 2>/dev/null || echo HEAD))"
        mkdir -p "$work/uWebSockets/uSockets"
        git --git-dir="$us_git" archive HEAD | tar -x -C "$work/uWebSockets/uSockets"
        # the submodule commit uWebSockets pins, for the record
        pinned="$(git --git-dir="$uws_git" ls-tree HEAD uSockets | awk '{print $3}')"
        have="$(git --git-dir="$us_git" rev-parse HEAD)"
        [ "$pinned" = "$have" ] || echo "uwebsockets: note: uWebSockets pins uSockets $pinned, the snapshot is $have" >&2
    fi
else
    echo "uwebsockets: copying $uws_src"
    (cd "$uws_src" && tar -c --exclude=./.git .) | tar -x -C "$work/uWebSockets"
fi
if [ -n "$us_src" ]; then
    echo "uwebsockets: copying $us_src"
    rm -rf "$work/uWebSockets/uSockets"
    mkdir -p "$work/uWebSockets/uSockets"
    (cd "$us_src" && tar -c --exclude=./.git .) | tar -x -C "$work/uWebSockets/uSockets"
fi
uws="$work/uWebSockets"
us="$uws/uSockets"
[ -f "$us/src/libusockets.h" ] || { echo "uwebsockets: no uSockets sources in $us: pass USOCKETS_SRC" >&2; exit 3; }

# uSockets.a, by its Makefile's default target (epoll, -O3 -flto, -DLIBUS_NO_SSL); its
# "lib.exe: not found" is the Makefile trying Windows' archiver before ar
echo "uwebsockets: make -C uSockets WITH_OPENSSL=0 WITH_LIBUV=0"
make -C "$us" CC="$CC" WITH_OPENSSL=0 WITH_LIBUV=0 WITH_BORINGSSL=0 WITH_WOLFSSL=0 \
    WITH_IO_URING=0 WITH_ASIO=0 WITH_QUIC=0

# the echo server: build.c's flags for the examples, C++17, no zlib
# shellcheck disable=SC2086
set -x
"$CXX" $march -O3 -flto=auto -std="$std" -DUWS_NO_ZLIB -DLIBUS_NO_SSL \
    -I"$uws/src" -I"$us/src" "$here/echo.cpp" "$us/uSockets.a" \
    -o "$out_dir/uwebsockets-echo"
set +x
echo "uwebsockets: built $out_dir/uwebsockets-echo"

# the second-opinion load generator: benchmarks/load_test.c (uSockets and zlib)
if [ -f "$uws/benchmarks/load_test.c" ]; then
    if (set -x; "$CC" -O3 -flto=auto -DLIBUS_NO_SSL -I"$us/src" "$uws/benchmarks/load_test.c" \
        "$us/uSockets.a" -lz -o "$out_dir/uws-load-test"); then
        echo "uwebsockets: built $out_dir/uws-load-test (usage: connections host port ssl deflate [payload_size_bytes])"
    else
        rm -f "$out_dir/uws-load-test"
        echo "uwebsockets: warning: benchmarks/load_test.c did not build (it also needs zlib); uws-load-test skipped" >&2
    fi
fi
