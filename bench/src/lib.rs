//! Benchmarks (see `benches/`), the standalone server, and a small closed-loop echo
//! driver used by the `soliton-bench` main job until `soliton-load` lands.

pub mod echo;
