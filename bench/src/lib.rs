//! Benchmarks (see `benches/`), the standalone server, a small closed-loop echo driver
//! used by the `soliton-bench` main job, and the raw TCP echo client that `compare`
//! drives the raw-TCP ceiling with.

pub mod echo;
pub mod rawtcp;
