//! Set-up shared by the criterion suites.

use std::time::Duration;

use criterion::Criterion;

/// Every suite's settings: 3 s measured after 1 s of warm-up, 30 samples (short
/// enough to repeat a suite several times and quote medians on a noisy machine).
pub(crate) fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(30)
}
