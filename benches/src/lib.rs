//! Benchmarks live in `benches/`; this library holds their shared helpers.
#![forbid(unsafe_code)]

use std::time::Duration;

/// The median and the 99th percentile of a set of samples.
pub fn median_p99(samples: &mut [Duration]) -> (Duration, Duration) {
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    samples.sort_unstable();
    let p99 = ((samples.len() * 99).div_ceil(100)).saturating_sub(1);
    (samples[samples.len() / 2], samples[p99])
}
