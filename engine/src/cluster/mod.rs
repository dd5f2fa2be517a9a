//! Topics across nodes (feature `nats`): several servers share their topics through
//! a NATS broker.
//!
//! ```text
//!  node A                                  NATS                     node B
//!  worker ── ws.publish ──► local subscribers (as without a cluster)
//!    │ try_send (frame: Arc<[u8]>; full or disconnected → dropped, counted)
//!    ▼
//!  bounded queue ──► writer thread ── PUB prefix.topic ──► broker ── MSG ──► reader thread
//!                                                                  (one subscription per topic
//!                                                                   with local subscribers)
//!                                                                              │ the frame, once,
//!                                                                              ▼ Arc-shared
//!                                                                  every worker's mailbox
//!                                                                  → local subscribers only
//! ```
//!
//! * **The hot path stays local.** A publish reaches this node's subscribers straight
//!   from the worker, as without a cluster; the worker only hands the serialized frame
//!   (an `Arc`) to a bounded queue with `try_send`, so a slow or absent broker never
//!   blocks it: a full queue or a broker that is away drops the publish for the other
//!   nodes and counts it ([`ClusterStats`]).
//! * **Interest-based.** A node holds one broker subscription per topic that has local
//!   subscribers, taken when the first one joins (on any worker) and dropped when the
//!   last one leaves, never one per connection.
//! * **Exactly once, in order.** `CONNECT` says `"echo":false`, so the broker never returns a
//!   node's own publishes; one worker's publishes go through one queue and one broker
//!   connection, so they arrive in the order they were made.
//! * **Shared frames.** The NATS payload is the WebSocket frame itself (a whole
//!   unmasked frame, FIN set, text or binary); the receiving node checks it once and
//!   shares it, as is, with every local receiver.
//! * **Faults.** A lost broker connection is re-made with backoff (and the
//!   subscriptions taken again); what is published meanwhile is dropped and counted;
//!   a broker that stops answering `PING`s or reading is taken as lost. Logs: `info`
//!   on connect, `warn` on disconnect and (summed, every 5 s at most) on drops.
//!
//! The client is the NATS text protocol written here ([`nats`], sans-I/O) on two
//! threads per server with blocking sockets: no async runtime. Topics map to subjects
//! `{prefix}.{escaped topic}` ([`subject`]).

mod bridge;
pub mod nats;
pub mod subject;

use std::time::Duration;

pub(crate) use bridge::Bridge;

/// The cluster bridge's settings ([`Builder::cluster`](crate::server::Builder::cluster)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsConfig {
    /// The broker: `nats://[user:password@ | token@]host[:port]` (port 4222 by default;
    /// the scheme may be left out), or several such URLs separated by commas, tried in
    /// turn. TLS (`tls://`) is not supported.
    pub url: String,
    /// Subjects are `{subject_prefix}.{escaped topic}`: one or more `.`-separated
    /// tokens of printable ASCII, no wildcards. Nodes that share topics use the same
    /// prefix. Default `soliton`.
    pub subject_prefix: String,
    /// The connection's name in the broker's monitoring. Default `soliton`.
    pub name: String,
    /// Publishes queued for the broker, at most; past it they are dropped (counted as
    /// `dropped_full`). Default 65,536.
    pub queue: usize,
    /// Bytes of frames queued for the broker, at most (the same rule). Default 64 MiB.
    pub queue_bytes: usize,
    /// Connecting (TCP and the NATS handshake) at start and on each reconnect attempt.
    /// Default 2 s.
    pub connect_timeout: Duration,
    /// The first wait before reconnecting; it doubles on each failed attempt up to
    /// `reconnect_max`. Defaults 100 ms and 2 s.
    pub reconnect_min: Duration,
    /// The longest wait between reconnect attempts.
    pub reconnect_max: Duration,
    /// How often the bridge pings the broker; with `max_pings_out` unanswered, the
    /// connection is taken as lost. Defaults 5 s and 2.
    pub ping_interval: Duration,
    /// Unanswered pings before the connection is taken as lost.
    pub max_pings_out: u32,
    /// A write to the broker that takes longer than this loses the connection (a
    /// broker that stopped reading). Default 2 s.
    pub write_timeout: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            subject_prefix: "soliton".into(),
            name: "soliton".into(),
            queue: 65_536,
            queue_bytes: 64 << 20,
            connect_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            ping_interval: Duration::from_secs(5),
            max_pings_out: 2,
            write_timeout: Duration::from_secs(2),
        }
    }
}

impl NatsConfig {
    /// The defaults, with this broker URL.
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            ..NatsConfig::default()
        }
    }

    /// The same, with this subject prefix.
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.subject_prefix = prefix.into();
        self
    }
}

/// The cluster bridge's state and counters
/// ([`ServerHandle::cluster_stats`](crate::server::ServerHandle::cluster_stats)).
/// Counters run from the server's start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Connected to the broker now.
    pub connected: bool,
    /// The broker's URL in use (or last used), without credentials.
    pub url: String,
    /// Publishes written to the broker.
    pub published: u64,
    /// Messages from the broker handed to this node's workers.
    pub received: u64,
    /// Publishes dropped because the broker was away.
    pub dropped_disconnected: u64,
    /// Publishes dropped because the queue to the broker was full (a slow broker):
    /// `queue` publishes or `queue_bytes` bytes.
    pub dropped_full: u64,
    /// Publishes kept local because they were larger than the broker's `max_payload`
    /// or their subject was too long (over 1 KiB).
    pub dropped_too_large: u64,
    /// Messages from the broker that were not a frame for a topic (someone else
    /// publishing under the prefix), dropped.
    pub invalid: u64,
    /// Connections made again after one was lost.
    pub reconnects: u64,
    /// Broker subscriptions held: topics with local subscribers.
    pub subscriptions: usize,
}
