//! The tracker's metrics (M1), through the `metrics` crate facade; no-ops without the
//! `metrics` feature. Names, labels and units: the table in the crate README.

use std::time::Duration;

/// How a leadership ended, the `transition` label of `leadership_transitions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// The store said another unit leads (a renewal denied, or a new term under us), or the
    /// tracker stopped without release (or its release failed).
    Demoted,
    /// No renewal succeeded within the guaranteed window (T7).
    Lost,
    /// Stopped with release, and the revoke succeeded (T8).
    Released,
}

/// A claim call: the first claim of a term, or the holder's renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Call {
    Claim,
    Renew,
}

#[cfg(feature = "metrics")]
mod on {
    use super::{Call, Duration, Ended};
    use metrics::{Counter, Gauge, Histogram, Label, SharedString};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Handles registered once per tracker, so a renewal costs no key building or lookup.
    pub(in crate::tracker) struct Metrics {
        is_leader: Gauge,
        /// Without labels every tracker of the process shares each series, so the gauge counts
        /// the leaderships they hold: each tracker adds its one and takes it away. With labels
        /// the series is the tracker's own and is set to 0 or 1.
        shared: bool,
        /// Whether this tracker's leadership is counted in the shared gauge.
        counted: AtomicBool,
        promoted: Counter,
        demoted: Counter,
        lost: Counter,
        released: Counter,
        claim_seconds: Histogram,
        renew_seconds: Histogram,
        claim_failures: Counter,
        renew_failures: Counter,
    }

    impl Metrics {
        pub(in crate::tracker) fn new(application: &str, unit: &str, labelled: bool) -> Self {
            // One copy of each name, shared by the tracker's seven series (a label value is
            // reference-counted), instead of fourteen.
            let labels = if labelled {
                let (application, unit): (Arc<str>, Arc<str>) = (application.into(), unit.into());
                vec![
                    Label::new("application", SharedString::from(application)),
                    Label::new("unit", SharedString::from(unit)),
                ]
            } else {
                Vec::new()
            };
            let with = |key: &'static str, value: &'static str| {
                let mut labels = labels.clone();
                labels.push(Label::new(key, value));
                labels
            };
            let is_leader = metrics::gauge!("leadership_is_leader", labels.clone());
            if labelled {
                is_leader.set(0.0);
            }
            Metrics {
                is_leader,
                shared: !labelled,
                counted: AtomicBool::new(false),
                promoted: metrics::counter!(
                    "leadership_transitions_total",
                    with("transition", "promoted")
                ),
                demoted: metrics::counter!(
                    "leadership_transitions_total",
                    with("transition", "demoted")
                ),
                lost: metrics::counter!("leadership_transitions_total", with("transition", "lost")),
                released: metrics::counter!(
                    "leadership_transitions_total",
                    with("transition", "released")
                ),
                // Latency is labelled by the kind of call alone, whatever the labels setting:
                // a histogram per tracker is a series per bucket per application (16 with
                // DURATION_BUCKETS, so 160,000 for 10,000 trackers), which a Prometheus
                // server should not be asked to keep, and its exporter's upkeep walks every
                // series: it cost more CPU than the renewals themselves (leadership-bench,
                // "scale: metrics on vs off").
                claim_seconds: metrics::histogram!(
                    "leadership_claim_duration_seconds",
                    vec![Label::new("call", "claim")]
                ),
                renew_seconds: metrics::histogram!(
                    "leadership_claim_duration_seconds",
                    vec![Label::new("call", "renew")]
                ),
                claim_failures: metrics::counter!(
                    "leadership_claim_failures_total",
                    with("call", "claim")
                ),
                renew_failures: metrics::counter!(
                    "leadership_claim_failures_total",
                    with("call", "renew")
                ),
            }
        }

        /// The gauge's part of a transition: this tracker leads (`true`) or not.
        fn leading(&self, leads: bool) {
            if !self.shared {
                self.is_leader.set(if leads { 1.0 } else { 0.0 });
            } else if self.counted.swap(leads, Ordering::Relaxed) != leads {
                if leads {
                    self.is_leader.increment(1.0);
                } else {
                    self.is_leader.decrement(1.0);
                }
            }
        }

        pub(in crate::tracker) fn promoted(&self) {
            self.leading(true);
            self.promoted.increment(1);
        }

        pub(in crate::tracker) fn ended(&self, how: Ended) {
            self.leading(false);
            match how {
                Ended::Demoted => self.demoted.increment(1),
                Ended::Lost => self.lost.increment(1),
                Ended::Released => self.released.increment(1),
            }
        }

        /// The tracker stops believing it leads; how it ended is counted once known.
        pub(in crate::tracker) fn stepping_down(&self) {
            self.leading(false);
        }

        pub(in crate::tracker) fn call(&self, call: Call, took: Duration, failed: bool) {
            let (latency, failures) = match call {
                Call::Claim => (&self.claim_seconds, &self.claim_failures),
                Call::Renew => (&self.renew_seconds, &self.renew_failures),
            };
            latency.record(took.as_secs_f64());
            if failed {
                failures.increment(1);
            }
        }
    }

    impl Drop for Metrics {
        /// A tracker that goes away while counted in the shared gauge takes its one away.
        fn drop(&mut self) {
            if self.shared {
                self.leading(false);
            }
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod on {
    use super::{Call, Duration, Ended};

    /// Without the `metrics` feature: nothing is recorded.
    pub(in crate::tracker) struct Metrics;

    impl Metrics {
        pub(in crate::tracker) fn new(_: &str, _: &str, _: bool) -> Self {
            Metrics
        }
        pub(in crate::tracker) fn promoted(&self) {}
        pub(in crate::tracker) fn ended(&self, _: Ended) {}
        pub(in crate::tracker) fn stepping_down(&self) {}
        pub(in crate::tracker) fn call(&self, _: Call, _: Duration, _: bool) {}
    }
}

pub(super) use on::Metrics;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}
