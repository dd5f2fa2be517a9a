/* uWebSockets echo server for `compare` (bench/src/bin/compare.rs), modelled on
 * uWebSockets' examples/EchoServer.cpp: uWS::App().ws<PerSocketData>("/*", ...) whose
 * message handler sends every message back with its own opcode (text as text, binary
 * as binary), one thread, uSockets' default epoll event loop. Built by build.sh.
 *
 * Usage: uwebsockets-echo [--host 127.0.0.1] [--port 9001] [--broadcast]
 *                         [anything else is ignored]
 *
 * --broadcast: publish every message to every connection, the sender too, the way
 * uWebSockets' examples/Broadcast.cpp does pub/sub: each connection subscribes to one
 * topic on open and the message handler calls App::publish (the app-level publish,
 * which unlike WebSocket::publish does not skip the sender), so uWebSockets' TopicTree
 * batches the deliveries and writes each subscriber's share once per loop iteration.
 * `compare`'s fan-out rows run it so.
 *
 * Differences from EchoServer.cpp, and why:
 *   - the port comes from --port N (EchoServer.cpp listens on 9001), and --host H is
 *     honoured; flags the other peers take (--nodelay, --core N, ...) are ignored:
 *     uSockets always sets TCP_NODELAY on accepted sockets (loop.c, "We always use
 *     nodelay"), and compare pins the process with taskset;
 *   - built without zlib (-DUWS_NO_ZLIB), so compression is uWS::DISABLED (the
 *     default) instead of the example's DEDICATED_COMPRESSOR | DEDICATED_DECOMPRESSOR;
 *     soliton-load offers permessage-deflate only with --deflate, which compare never
 *     passes, so no compare row negotiates it either way;
 *   - no TLS options (the example's key/cert are ignored without SSL anyway);
 *   - it listens with LIBUS_LISTEN_EXCLUSIVE_PORT (no SO_REUSEPORT), so a port already
 *     taken is an error, not a second server sharing the connections.
 *
 * Settings (the example's in brackets):
 *   maxPayloadLength         16 MiB  [100 MiB]   the largest message we benchmark is 1 MiB
 *   maxBackpressure          16 MiB  [100 MiB]   per connection; the deepest compare row
 *                                                keeps ~20 KiB per connection in flight
 *   closeOnBackpressureLimit false   [false]
 *   idleTimeout              0       [16 s]      0 disables it (uWS accepts 0 or 8..960
 *                                                seconds); idle `hold` rows must not be cut
 *   sendPingsAutomatically   false   [true]      with idleTimeout 0 there is nothing to ping
 *                                                for (and true would underflow uWS's
 *                                                idleTimeout - margin computation)
 *   resetIdleTimeoutOnSend   false   [false]
 *   maxLifetime              0       [0]         no limit
 * A message dropped for backpressure is counted and reported on stderr (it would make
 * the load generator see a missing echo), never silently.
 */
#include "App.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

/* --broadcast: the app publish() is called on (as examples/Broadcast.cpp's globalApp) */
static uWS::App *broadcastApp = nullptr;

int main(int argc, char **argv) {
    std::string host;
    int port = 9001;
    bool broadcast = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!std::strcmp(a, "--port") && i + 1 < argc) {
            port = std::atoi(argv[++i]);
        } else if (!std::strncmp(a, "--port=", 7)) {
            port = std::atoi(a + 7);
        } else if (!std::strcmp(a, "--host") && i + 1 < argc) {
            host = argv[++i];
        } else if (!std::strncmp(a, "--host=", 7)) {
            host = a + 7;
        } else if (!std::strcmp(a, "--broadcast")) {
            broadcast = true;
        } else if (!std::strcmp(a, "--help") || !std::strcmp(a, "-h")) {
            std::printf("usage: %s [--host H] [--port N] [--broadcast] (other flags are ignored)\n",
                        argv[0]);
            return 0;
        }
        /* anything else (--nodelay, --core N, ...) is ignored */
    }
    if (port <= 0 || port > 65535) {
        std::fprintf(stderr, "uwebsockets-echo: bad --port\n");
        return 2;
    }

    struct PerSocketData {};
    static unsigned long long dropped = 0;

    uWS::App app;
    if (broadcast) {
        broadcastApp = &app;
    }
    app.ws<PerSocketData>(
            "/*",
            {
                .compression = uWS::DISABLED,
                .maxPayloadLength = 16 * 1024 * 1024,
                .idleTimeout = 0,
                .maxBackpressure = 16 * 1024 * 1024,
                .closeOnBackpressureLimit = false,
                .resetIdleTimeoutOnSend = false,
                .sendPingsAutomatically = false,
                .maxLifetime = 0,
                .upgrade = nullptr,
                .open =
                    [](auto *ws) {
                        if (broadcastApp) {
                            ws->subscribe("all");
                        }
                    },
                .message =
                    [](auto *ws, std::string_view message, uWS::OpCode opCode) {
                        if (broadcastApp) {
                            broadcastApp->publish("all", message, opCode);
                        } else {
                            ws->send(message, opCode, false);
                        }
                    },
                .dropped =
                    [](auto * /*ws*/, std::string_view /*message*/, uWS::OpCode /*opCode*/) {
                        /* powers of two: a line for the 1st, 2nd, 4th, ... drop */
                        dropped++;
                        if ((dropped & (dropped - 1)) == 0) {
                            std::fprintf(stderr,
                                         "uwebsockets-echo: %llu message(s) dropped "
                                         "(maxBackpressure reached)\n",
                                         dropped);
                        }
                    },
            })
        /* LIBUS_LISTEN_EXCLUSIVE_PORT: uSockets otherwise sets SO_REUSEPORT, and a stale
         * server on the same port would silently take a share of the connections */
        .listen(host, port, LIBUS_LISTEN_EXCLUSIVE_PORT,
                [&](auto *listen_socket) {
                    if (listen_socket) {
                        std::fprintf(stderr, "uwebsockets-echo: listening on ws://%s:%d%s\n",
                                     host.empty() ? "*" : host.c_str(), port,
                                     broadcast ? " (broadcast)" : "");
                    } else {
                        std::fprintf(stderr, "uwebsockets-echo: cannot listen on port %d\n",
                                     port);
                        std::exit(1);
                    }
                })
        .run();
}
