//! Latency histograms and the figures a row reports.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies in nanoseconds, from 1 ns to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure here is a bug in this file.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// Records one latency, clamped into the histogram's range.
pub fn record(hist: &mut Histogram<u64>, latency: Duration) {
    let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
    hist.saturating_record(nanos);
}

/// Adds `other` into `into`; both come from [`histogram`], so the ranges match.
pub fn merge(into: &mut Histogram<u64>, other: &Histogram<u64>) {
    // Same bounds on both sides: `add` cannot fail. Fall back to recording one by one if it did.
    if into.add(other).is_err() {
        for value in other.iter_recorded() {
            into.saturating_record_n(value.value_iterated_to(), value.count_at_value());
        }
    }
}

/// What one side (subject or baseline) of a row measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figures {
    /// What was measured, e.g. `claim_leadership (renew)` or `HashMap insert`.
    pub label: String,
    /// Operations completed (successful or not).
    pub ops: u64,
    /// Operations that returned an error.
    pub errors: u64,
    /// Operations per second over the whole measured time, when it is a throughput figure.
    pub ops_per_sec: Option<f64>,
    /// Median latency in microseconds.
    pub p50_us: f64,
    /// 99th percentile latency in microseconds.
    pub p99_us: f64,
    /// Largest latency in microseconds.
    pub max_us: f64,
    /// Latencies sampled into the histogram.
    pub samples: u64,
    /// CPU time per operation of the runner (the client; for the memory store, the store
    /// too), in microseconds, for throughput figures.
    #[serde(default)]
    pub client_cpu_us: Option<f64>,
    /// CPU time per operation of the store's server process, in microseconds, when the
    /// runner started that server.
    #[serde(default)]
    pub server_cpu_us: Option<f64>,
}

impl Figures {
    /// Figures from a latency histogram; `ops_per_sec` only for throughput rows.
    pub fn from_histogram(
        label: impl Into<String>,
        hist: &Histogram<u64>,
        ops: u64,
        errors: u64,
        ops_per_sec: Option<f64>,
    ) -> Figures {
        let us = |nanos: u64| nanos as f64 / 1_000.0;
        let empty = hist.is_empty();
        Figures {
            label: label.into(),
            ops,
            errors,
            ops_per_sec,
            p50_us: if empty {
                0.0
            } else {
                us(hist.value_at_quantile(0.50))
            },
            p99_us: if empty {
                0.0
            } else {
                us(hist.value_at_quantile(0.99))
            },
            max_us: if empty { 0.0 } else { us(hist.max()) },
            samples: hist.len(),
            client_cpu_us: None,
            server_cpu_us: None,
        }
    }
}

/// `1234567.0` → `1.23M`, `12345.0` → `12.3k`.
pub fn human_rate(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e4 {
        format!("{:.1}k", rate / 1e3)
    } else if rate >= 1e3 {
        format!("{:.2}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// A latency in microseconds, in the unit that reads best.
pub fn human_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else if us >= 10.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.2} µs")
    }
}
