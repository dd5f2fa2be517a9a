//! Benchmarks (see `benches/`) and the standalone server binaries.
