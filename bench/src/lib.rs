//! Benchmarks (see `benches/`), the standalone server, the `soliton-bench` main job and
//! `compare` (both drive `soliton-load`), and the raw TCP echo client that `compare`
//! drives the raw-TCP ceiling with, and the raw echo server on Soliton's drivers.

pub mod broadcast;
pub mod cpu;
pub mod fdtable;
pub mod rawecho;
pub mod rawtcp;
