//! Per store operation metrics (M1): [`Metered`] wraps any store and records each operation's
//! latency and outcome and the number of blocked waiters through the `metrics` crate facade.
//!
//! The facade's `leadership::connect` wraps the store it opens when its `metrics` feature is
//! on; wrap a store built directly with [`Metered::new`]. Names, labels and units are in the
//! crate README's table:
//!
//! | name | type | labels |
//! |---|---|---|
//! | `leadership_store_operation_duration_seconds` | histogram | `store`, `operation` |
//! | `leadership_store_operations_total` | counter | `store`, `operation`, `outcome` |
//! | `leadership_store_blocked_waiters` | gauge | `store` |
//!
//! `outcome` is `ok`; `refused` for a store's answer that is not a fault (a denied claim, a
//! check of a unit that does not lead, a cancelled block); `invalid` for input the store
//! rejected before any I/O (V rules); `error` for everything else (unavailable, stopped,
//! backend errors).
//!
//! ```
//! # #[cfg(feature = "metrics")]
//! # async fn demo(store: std::sync::Arc<dyn leadership_core::Leadership>) -> leadership_core::Result<()> {
//! use std::time::Duration;
//! use leadership_core::metered::Metered;
//! use leadership_core::Claimer as _;
//!
//! // Install a `metrics` recorder (an exporter) first: handles are registered here.
//! let store = Metered::new(store, "redis");
//! store.claim_leadership("web", "web/0", Duration::from_secs(30)).await?;
//! # Ok(()) }
//! ```

/// Bucket bounds, in seconds, for the two latency histograms
/// (`leadership_claim_duration_seconds` and `leadership_store_operation_duration_seconds`):
/// from half a millisecond (an in-process call) to ten seconds (a store at its timeout).
///
/// Give them to an exporter that otherwise keeps quantile summaries. The Prometheus exporter
/// (`metrics-exporter-prometheus`) does by default, and a summary per series costs far more
/// CPU and memory than fixed buckets once every tracker has its own series; histograms can
/// also be aggregated across processes, summaries cannot. `leadership track --metrics` and
/// leadership-bench's metrics rows use these:
///
/// ```
/// use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
///
/// let builder = PrometheusBuilder::new()
///     .set_buckets_for_metric(
///         Matcher::Suffix("_duration_seconds".into()),
///         leadership_core::metered::DURATION_BUCKETS,
///     )
///     .expect("the bounds are not empty");
/// // Then `builder.install()` (inside a tokio runtime), before connecting and spawning
/// // trackers.
/// # let _ = builder;
/// ```
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use metrics::{Counter, Gauge, Histogram, Label};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::watch::{LeaderStream, Watcher};
use crate::{Checker, Claimer, Error, Fence, Pinner, Reader, Result, Revoker, Token};

/// The `operation` labels, in the order of [`Op`]: `Op as usize` indexes them and the handles.
const OPERATIONS: [&str; 10] = [
    "claim",
    "block",
    "check",
    "revoke",
    "pin",
    "unpin",
    "pinned",
    "leaders",
    "watch_leaders",
    "watch_leader",
];

#[derive(Clone, Copy)]
enum Op {
    Claim,
    Block,
    Check,
    Revoke,
    Pin,
    Unpin,
    Pinned,
    Leaders,
    WatchLeaders,
    WatchLeader,
}

/// One operation's handles, registered once so that a call costs no key building or lookup.
#[derive(Clone)]
struct OpHandles {
    seconds: Histogram,
    ok: Counter,
    refused: Counter,
    invalid: Counter,
    error: Counter,
}

impl OpHandles {
    fn record<T>(&self, started: Instant, result: &Result<T>) {
        self.seconds.record(started.elapsed().as_secs_f64());
        match result {
            Ok(_) => self.ok.increment(1),
            Err(err) if err.is_invalid_input() => self.invalid.increment(1),
            Err(
                Error::ClaimDenied
                | Error::ClaimNotHeld
                | Error::BlockCancelled
                | Error::NotLeader { .. },
            ) => self.refused.increment(1),
            Err(_) => self.error.increment(1),
        }
    }
}

/// A store whose every operation is recorded (M1).
pub struct Metered<S> {
    inner: S,
    store: String,
    ops: Vec<OpHandles>,
    waiters: Gauge,
}

impl<S> std::fmt::Debug for Metered<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metered")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl<S> Metered<S> {
    /// Wraps `inner`, labelling its metrics `store = name` (e.g. `"redis"`). The handles are
    /// registered with the recorder installed now: install it first.
    pub fn new(inner: S, name: impl Into<String>) -> Self {
        let store = name.into();
        let ops = OPERATIONS
            .iter()
            .map(|&operation| {
                let labels = vec![
                    Label::new("store", store.clone()),
                    Label::new("operation", operation),
                ];
                let counter = |outcome: &'static str| {
                    let mut labels = labels.clone();
                    labels.push(Label::new("outcome", outcome));
                    metrics::counter!("leadership_store_operations_total", labels)
                };
                OpHandles {
                    seconds: metrics::histogram!(
                        "leadership_store_operation_duration_seconds",
                        labels.clone()
                    ),
                    ok: counter("ok"),
                    refused: counter("refused"),
                    invalid: counter("invalid"),
                    error: counter("error"),
                }
            })
            .collect();
        let waiters = metrics::gauge!(
            "leadership_store_blocked_waiters",
            vec![Label::new("store", store.clone())]
        );
        Metered {
            inner,
            store,
            ops,
            waiters,
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn op(&self, op: Op) -> &OpHandles {
        &self.ops[op as usize]
    }

    async fn timed<T>(&self, op: Op, call: impl Future<Output = Result<T>>) -> Result<T> {
        let started = Instant::now();
        let result = call.await;
        self.op(op).record(started, &result);
        result
    }
}

/// Counts a blocked waiter while it lives (also when its future is dropped mid-wait).
struct Waiting<'a>(&'a Gauge);

impl<'a> Waiting<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        gauge.increment(1.0);
        Waiting(gauge)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[async_trait]
impl<S: Claimer> Claimer for Metered<S> {
    async fn claim_leadership(
        &self,
        application: &str,
        unit: &str,
        duration: Duration,
    ) -> Result<Fence> {
        self.timed(
            Op::Claim,
            self.inner.claim_leadership(application, unit, duration),
        )
        .await
    }

    async fn block_until_leadership_released(
        &self,
        application: &str,
        cancel: CancellationToken,
    ) -> Result<()> {
        let _waiting = Waiting::new(&self.waiters);
        self.timed(
            Op::Block,
            self.inner
                .block_until_leadership_released(application, cancel),
        )
        .await
    }
}

/// A token whose checks are recorded.
struct MeteredToken {
    inner: Box<dyn Token>,
    handles: OpHandles,
}

#[async_trait]
impl Token for MeteredToken {
    async fn check(&self) -> Result<Fence> {
        let started = Instant::now();
        let result = self.inner.check().await;
        self.handles.record(started, &result);
        result
    }
}

impl<S: Checker> Checker for Metered<S> {
    fn leadership_check(&self, application: &str, unit: &str) -> Box<dyn Token> {
        Box::new(MeteredToken {
            inner: self.inner.leadership_check(application, unit),
            handles: self.op(Op::Check).clone(),
        })
    }
}

#[async_trait]
impl<S: Revoker> Revoker for Metered<S> {
    async fn revoke_leadership(&self, application: &str, unit: &str) -> Result<()> {
        self.timed(Op::Revoke, self.inner.revoke_leadership(application, unit))
            .await
    }
}

#[async_trait]
impl<S: Pinner> Pinner for Metered<S> {
    async fn pin_leadership(&self, application: &str, entity: &str) -> Result<()> {
        self.timed(Op::Pin, self.inner.pin_leadership(application, entity))
            .await
    }

    async fn unpin_leadership(&self, application: &str, entity: &str) -> Result<()> {
        self.timed(Op::Unpin, self.inner.unpin_leadership(application, entity))
            .await
    }

    async fn pinned_leadership(&self) -> Result<BTreeMap<String, Vec<String>>> {
        self.timed(Op::Pinned, self.inner.pinned_leadership()).await
    }
}

#[async_trait]
impl<S: Reader> Reader for Metered<S> {
    async fn leaders(&self) -> Result<BTreeMap<String, String>> {
        self.timed(Op::Leaders, self.inner.leaders()).await
    }
}

#[async_trait]
impl<S: Watcher> Watcher for Metered<S> {
    async fn watch_leaders(&self) -> Result<LeaderStream> {
        self.timed(Op::WatchLeaders, self.inner.watch_leaders())
            .await
    }

    async fn watch_leader(&self, application: &str) -> Result<LeaderStream> {
        self.timed(Op::WatchLeader, self.inner.watch_leader(application))
            .await
    }
}
