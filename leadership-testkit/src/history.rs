//! A history checker for leadership under faults.
//!
//! A test records what every participant *believed* and *did*, on one clock (tokio's
//! [`Instant`], so it also works under a paused clock):
//!
//! - **terms**: an application, a unit, the fence, the instant the unit started acting as
//!   leader, and the instant it stopped (its tracker's loss signal fired, it released, or the
//!   lease it was granted ran out);
//! - **guarded writes**: the unit and fence a write was attempted with, when, whether the store
//!   accepted it, and whether the test knew that a newer term had begun;
//! - **faults**: what was injected, from when to when;
//! - the applications that must have a leader once the faults end.
//!
//! [`History::check`] then verifies the safety and liveness properties of DESIGN.md:
//!
//! 1. **fences** (C1, F1): per application, in the order terms began, fences strictly increase;
//!    a fence is never issued to two units. Records of one term by one unit that follow each
//!    other (a tracker demoted at its loss deadline and promoted again while its store lease
//!    still ran) share a fence legitimately.
//! 2. **no overlap** (C3, C4, T7): no two units' leader intervals of one application overlap by
//!    more than the clock bound. The clock bound covers what the recording cannot see exactly:
//!    the delay between a loss signal firing and the recorder noticing it, and the store's
//!    documented clock error (Redis `TIME` and etcd lease TTLs are measured on the server).
//! 3. **stale writes** (F2): every guarded write made after a newer term of its application
//!    began (as recorded, or as the test says it knew) was refused.
//! 4. **liveness** (T4, C5): after the last fault ended, every expected application has exactly
//!    one leader from `last fault end + settle` until the history was finished, where
//!    `settle` is the claim duration plus the store's slack.
//!
//! Terms with an empty interval (the unit learnt of its term only after it had already ended,
//! e.g. a claim answered after its own lease ran out) are counted but take no part in 1 and 2:
//! the unit never acted as leader.
//!
//! ```
//! use std::time::Duration;
//! use leadership_core::Fence;
//! use leadership_testkit::history::History;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let history = History::new(Duration::from_millis(5));
//! let t0 = history.start();
//! let ms = Duration::from_millis;
//! let a = history.term_began("web", "web/0", Fence(1), t0);
//! history.term_ended(a, t0 + ms(100));
//! // web/1 starts before web/0 stopped: the checker catches it.
//! let b = history.term_began("web", "web/1", Fence(2), t0 + ms(50));
//! history.term_ended(b, t0 + ms(150));
//! let report = history.check();
//! assert_eq!(report.violations.len(), 1, "{report}");
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use leadership_core::{Fence, Tracker};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Identifies a recorded term, to end or extend it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TermId(usize);

/// Identifies a recorded fault, to end it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaultId(usize);

/// One leadership term as a unit saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermRecord {
    /// The application led.
    pub application: String,
    /// The unit that led it.
    pub unit: String,
    /// The term's fence.
    pub fence: Fence,
    /// When the unit started acting as leader.
    pub began: Instant,
    /// When it stopped: loss signal, release, or the end of its lease; `None` while it leads.
    pub ended: Option<Instant>,
}

/// One guarded write attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteRecord {
    /// The application whose leadership guards the write.
    pub application: String,
    /// The unit that attempted it.
    pub unit: String,
    /// The fence it was attempted with.
    pub fence: Fence,
    /// When the attempt was sent.
    pub started: Instant,
    /// Whether the store accepted (performed) it.
    pub accepted: bool,
    /// Whether the test knew, before sending it, that a newer term had begun (for example
    /// from `leaders()` or another unit's claim). The checker also derives this from the
    /// recorded terms; either makes the write stale.
    pub newer_term_known: bool,
}

/// One injected fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRecord {
    /// What was done, e.g. `SIGSTOP redis for 1.5 s`.
    pub what: String,
    /// When it began.
    pub began: Instant,
    /// When it ended; `None` while it lasts (then the liveness check fails).
    pub ended: Option<Instant>,
}

/// A broken property, with the records that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// Property 1: a later term of the application has a fence that is not greater.
    FenceNotIncreasing {
        /// The application.
        application: String,
        /// The earlier term.
        earlier: TermRecord,
        /// The later term.
        later: TermRecord,
    },
    /// Property 1: one fence was given to two units.
    FenceReissued {
        /// The application.
        application: String,
        /// The fence.
        fence: Fence,
        /// The units it was given to.
        units: Vec<String>,
    },
    /// Property 2: two units led the application at once.
    Overlap {
        /// The application.
        application: String,
        /// One term.
        first: TermRecord,
        /// The other term.
        second: TermRecord,
        /// How long both led.
        overlap: Duration,
    },
    /// Property 3: a write by a stale leader was accepted.
    StaleWriteAccepted {
        /// The write.
        write: WriteRecord,
        /// The newer term that had begun before it, if one was recorded.
        newer: Option<TermRecord>,
    },
    /// Property 4: an application had no single leader after the faults ended.
    NoSingleLeader {
        /// The application.
        application: String,
        /// From when it should have had one.
        from: Duration,
        /// Until when (the end of the history).
        until: Duration,
        /// The units that led some part of that window, in order.
        leaders: Vec<String>,
    },
    /// Property 4 cannot be checked: a fault never ended, or the history ended before the
    /// application had time to settle.
    Unsettled {
        /// What is missing.
        reason: String,
    },
}

/// What [`History::check`] found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Terms recorded (including empty ones).
    pub terms: usize,
    /// Terms with an empty interval, ignored by the fence and overlap checks.
    pub empty_terms: usize,
    /// Distinct applications with terms.
    pub applications: usize,
    /// Guarded write attempts recorded.
    pub writes: usize,
    /// Of those, attempts made by a stale leader (each must have been refused).
    pub stale_writes: usize,
    /// Of those, attempts accepted.
    pub accepted_writes: usize,
    /// Faults injected.
    pub faults: usize,
    /// Applications checked for a single leader after the faults.
    pub liveness_checked: usize,
    /// Everything that broke a property; empty when the history is correct.
    pub violations: Vec<Violation>,
}

impl Report {
    /// True when no property was broken.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// One line of figures, for logs and reports.
    pub fn summary(&self) -> String {
        format!(
            "terms={} (empty {}) applications={} writes={} (stale {}, accepted {}) faults={} \
             liveness_checked={} violations={}",
            self.terms,
            self.empty_terms,
            self.applications,
            self.writes,
            self.stale_writes,
            self.accepted_writes,
            self.faults,
            self.liveness_checked,
            self.violations.len()
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())?;
        for violation in &self.violations {
            write!(f, "\n  violation: {violation:?}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Records {
    terms: Vec<TermRecord>,
    writes: Vec<WriteRecord>,
    faults: Vec<FaultRecord>,
    expected: BTreeSet<String>,
    settle: Duration,
    finished: Option<Instant>,
}

/// A shared, append-only record of terms, guarded writes and faults; see the
/// [module docs](self).
pub struct History {
    start: Instant,
    clock_bound: Duration,
    records: Mutex<Records>,
}

impl fmt::Debug for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let records = self.records();
        f.debug_struct("History")
            .field("clock_bound", &self.clock_bound)
            .field("terms", &records.terms.len())
            .field("writes", &records.writes.len())
            .field("faults", &records.faults.len())
            .finish_non_exhaustive()
    }
}

impl History {
    /// An empty history whose overlap check tolerates `clock_bound`.
    pub fn new(clock_bound: Duration) -> Arc<History> {
        Arc::new(History {
            start: Instant::now(),
            clock_bound,
            records: Mutex::new(Records::default()),
        })
    }

    /// When the history was created; reports give instants as offsets from it.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The overlap tolerated between two units' terms.
    pub fn clock_bound(&self) -> Duration {
        self.clock_bound
    }

    fn records(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `unit` started acting as leader of `application` with `fence` at `at`.
    pub fn term_began(&self, application: &str, unit: &str, fence: Fence, at: Instant) -> TermId {
        let mut records = self.records();
        records.terms.push(TermRecord {
            application: application.to_owned(),
            unit: unit.to_owned(),
            fence,
            began: at,
            ended: None,
        });
        TermId(records.terms.len() - 1)
    }

    /// Records that the term stopped at `at` (replacing any end recorded before: a claimer
    /// records its lease's end when granted and moves it on extension or revoke).
    pub fn term_ended(&self, term: TermId, at: Instant) {
        if let Some(record) = self.records().terms.get_mut(term.0) {
            record.ended = Some(at);
        }
    }

    /// The term as recorded so far.
    pub fn term(&self, term: TermId) -> Option<TermRecord> {
        self.records().terms.get(term.0).cloned()
    }

    /// Every term recorded so far.
    pub fn terms(&self) -> Vec<TermRecord> {
        self.records().terms.clone()
    }

    /// Whether a term of `application` with a fence greater than `fence` has been recorded.
    pub fn newer_term_than(&self, application: &str, fence: Fence) -> Option<TermRecord> {
        newest_after(&self.records().terms, application, fence, None)
    }

    /// Records a guarded write attempt.
    pub fn write(&self, write: WriteRecord) {
        self.records().writes.push(write);
    }

    /// Records that a fault began now.
    pub fn fault_began(&self, what: impl Into<String>) -> FaultId {
        let mut records = self.records();
        records.faults.push(FaultRecord {
            what: what.into(),
            began: Instant::now(),
            ended: None,
        });
        FaultId(records.faults.len() - 1)
    }

    /// Records that a fault ended now.
    pub fn fault_ended(&self, fault: FaultId) {
        if let Some(record) = self.records().faults.get_mut(fault.0) {
            record.ended = Some(Instant::now());
        }
    }

    /// Records a fault that began and ended at the given instants.
    pub fn fault(&self, what: impl Into<String>, began: Instant, ended: Instant) {
        self.records().faults.push(FaultRecord {
            what: what.into(),
            began,
            ended: Some(ended),
        });
    }

    /// Every fault recorded so far.
    pub fn faults(&self) -> Vec<FaultRecord> {
        self.records().faults.clone()
    }

    /// Asks the liveness check (property 4) for `application`: it must have exactly one leader
    /// from `settle` after the last fault ended until [`finish`](Self::finish).
    pub fn expect_leader(&self, application: &str, settle: Duration) {
        let mut records = self.records();
        records.expected.insert(application.to_owned());
        records.settle = records.settle.max(settle);
    }

    /// Ends the history now: later records are still kept, but liveness is judged up to here.
    pub fn finish(&self) {
        self.finish_at(Instant::now());
    }

    /// Ends the history at `at`.
    pub fn finish_at(&self, at: Instant) {
        self.records().finished = Some(at);
    }

    /// When liveness requires each expected application to have settled: the last fault's
    /// end plus the settle time, or `None` while a fault lasts.
    pub fn settled_by(&self) -> Option<Instant> {
        let records = self.records();
        let last = records
            .faults
            .iter()
            .try_fold(self.start, |last, f| f.ended.map(|e| last.max(e)))?;
        Some(last + records.settle)
    }

    /// Records the terms of a tracker of `unit`: each time it becomes leader, a term begins
    /// with the tracker's fence; when the term's loss signal fires, it ends. The task ends
    /// when the tracker stops (its tickets answer `false`).
    pub fn record_tracker(
        self: &Arc<Self>,
        unit: &str,
        tracker: Arc<dyn Tracker + Send + Sync>,
    ) -> JoinHandle<()> {
        let history = Arc::clone(self);
        let unit = unit.to_owned();
        tokio::spawn(async move {
            let application = tracker.application_name();
            while tracker.wait_leader().wait().await {
                let began = Instant::now();
                let Some(term) = tracker.current_term() else {
                    // Lost between the ticket and the look-up: nothing was led.
                    tokio::task::yield_now().await;
                    continue;
                };
                let id = history.term_began(&application, &unit, term.fence, began);
                term.lost.cancelled().await;
                history.term_ended(id, Instant::now());
            }
        })
    }

    /// Checks every property and returns what it found; see the [module docs](self).
    pub fn check(&self) -> Report {
        let records = self.records();
        let finished = records.finished.unwrap_or_else(Instant::now);
        let mut report = Report {
            terms: records.terms.len(),
            writes: records.writes.len(),
            accepted_writes: records.writes.iter().filter(|w| w.accepted).count(),
            faults: records.faults.len(),
            ..Report::default()
        };

        let mut by_app: BTreeMap<&str, Vec<&TermRecord>> = BTreeMap::new();
        for term in &records.terms {
            if term.ended.is_some_and(|end| end <= term.began) {
                report.empty_terms += 1;
            } else {
                by_app.entry(&term.application).or_default().push(term);
            }
        }
        report.applications = records
            .terms
            .iter()
            .map(|t| &t.application)
            .collect::<BTreeSet<_>>()
            .len();

        for (application, terms) in &mut by_app {
            terms.sort_by_key(|t| (t.began, t.fence));
            self.check_fences(application, &records.terms, terms, &mut report);
            self.check_overlaps(application, terms, finished, &mut report);
        }
        self.check_writes(&records, &mut report);
        self.check_liveness(&records, &by_app, finished, &mut report);
        report
    }

    fn check_fences(
        &self,
        application: &str,
        all: &[TermRecord],
        terms: &[&TermRecord],
        report: &mut Report,
    ) {
        let mut owners: BTreeMap<Fence, BTreeSet<&str>> = BTreeMap::new();
        for term in all.iter().filter(|t| t.application == application) {
            owners.entry(term.fence).or_default().insert(&term.unit);
        }
        for (fence, units) in owners {
            if units.len() > 1 {
                report.violations.push(Violation::FenceReissued {
                    application: application.to_owned(),
                    fence,
                    units: units.into_iter().map(str::to_owned).collect(),
                });
            }
        }
        for pair in terms.windows(2) {
            let [earlier, later] = pair else { continue };
            let continued = earlier.fence == later.fence && earlier.unit == later.unit;
            if later.fence < earlier.fence || (later.fence == earlier.fence && !continued) {
                report.violations.push(Violation::FenceNotIncreasing {
                    application: application.to_owned(),
                    earlier: (*earlier).clone(),
                    later: (*later).clone(),
                });
            }
        }
    }

    fn check_overlaps(
        &self,
        application: &str,
        terms: &[&TermRecord],
        finished: Instant,
        report: &mut Report,
    ) {
        // Sorted by start: each term is compared with every later-starting term that starts
        // before it ends (a long term may overlap many).
        for (i, first) in terms.iter().enumerate() {
            let first_end = first.ended.unwrap_or(finished.max(first.began));
            for second in &terms[i + 1..] {
                if second.began >= first_end {
                    break;
                }
                if second.unit == first.unit {
                    continue;
                }
                let second_end = second.ended.unwrap_or(finished.max(second.began));
                let overlap = first_end.min(second_end) - second.began;
                if overlap > self.clock_bound {
                    report.violations.push(Violation::Overlap {
                        application: application.to_owned(),
                        first: (*first).clone(),
                        second: (*second).clone(),
                        overlap,
                    });
                }
            }
        }
    }

    fn check_writes(&self, records: &Records, report: &mut Report) {
        for write in &records.writes {
            let newer = newest_after(
                &records.terms,
                &write.application,
                write.fence,
                Some(write.started),
            );
            if !write.newer_term_known && newer.is_none() {
                continue;
            }
            report.stale_writes += 1;
            if write.accepted {
                report.violations.push(Violation::StaleWriteAccepted {
                    write: write.clone(),
                    newer,
                });
            }
        }
    }

    fn check_liveness(
        &self,
        records: &Records,
        by_app: &BTreeMap<&str, Vec<&TermRecord>>,
        finished: Instant,
        report: &mut Report,
    ) {
        if records.expected.is_empty() {
            return;
        }
        let mut last_fault = self.start;
        for fault in &records.faults {
            match fault.ended {
                Some(end) => last_fault = last_fault.max(end),
                None => {
                    report.violations.push(Violation::Unsettled {
                        reason: format!("fault {:?} never ended", fault.what),
                    });
                    return;
                }
            }
        }
        let from = last_fault + records.settle;
        if from > finished {
            report.violations.push(Violation::Unsettled {
                reason: format!(
                    "the history ended {:?} after the last fault, before the settle time {:?}",
                    finished - last_fault,
                    records.settle
                ),
            });
            return;
        }
        for application in &records.expected {
            report.liveness_checked += 1;
            let window: Vec<&TermRecord> = by_app
                .get(application.as_str())
                .into_iter()
                .flatten()
                .copied()
                .filter(|t| t.began < finished && t.ended.is_none_or(|end| end > from))
                .collect();
            let covers = |t: &TermRecord| t.began <= from && t.ended.is_none_or(|e| e >= finished);
            let single = match window.as_slice() {
                [only] => covers(only),
                // A tracker demoted and promoted again in one store term: one leader.
                many => {
                    many.iter()
                        .all(|t| t.unit == many[0].unit && t.fence == many[0].fence)
                        && many.first().is_some_and(|t| t.began <= from)
                        && many
                            .last()
                            .is_some_and(|t| t.ended.is_none_or(|e| e >= finished))
                        && many
                            .windows(2)
                            .all(|p| p[0].ended.is_none_or(|e| e >= p[1].began))
                }
            };
            if !single {
                report.violations.push(Violation::NoSingleLeader {
                    application: application.clone(),
                    from: from - self.start,
                    until: finished - self.start,
                    leaders: window.iter().map(|t| t.unit.clone()).collect(),
                });
            }
        }
    }
}

/// The first-begun term of `application` with a fence above `fence`, begun before `before`
/// (if given) and not empty.
fn newest_after(
    terms: &[TermRecord],
    application: &str,
    fence: Fence,
    before: Option<Instant>,
) -> Option<TermRecord> {
    terms
        .iter()
        .filter(|t| t.application == application && t.fence > fence)
        .filter(|t| before.is_none_or(|b| t.began <= b))
        .filter(|t| t.ended.is_none_or(|end| end > t.began))
        .min_by_key(|t| t.began)
        .cloned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A correct history: three terms handed over cleanly, a fault, writes by the current
    /// leader accepted and a stale one refused, one leader after the fault.
    fn clean() -> (Arc<History>, Instant) {
        let h = History::new(ms(5));
        let t0 = h.start();
        let a = h.term_began("web", "web/0", Fence(1), t0);
        h.term_ended(a, t0 + ms(100));
        let b = h.term_began("web", "web/1", Fence(2), t0 + ms(100));
        h.term_ended(b, t0 + ms(200));
        // A tracker demoted at its deadline and promoted again with the same store term.
        let c = h.term_began("web", "web/1", Fence(2), t0 + ms(210));
        h.term_ended(c, t0 + ms(300));
        h.term_began("web", "web/0", Fence(4), t0 + ms(310));
        h.term_began("db", "db/0", Fence(7), t0 + ms(10));
        h.write(WriteRecord {
            application: "web".into(),
            unit: "web/1".into(),
            fence: Fence(2),
            started: t0 + ms(150),
            accepted: true,
            newer_term_known: false,
        });
        h.write(WriteRecord {
            application: "web".into(),
            unit: "web/0".into(),
            fence: Fence(1),
            started: t0 + ms(150),
            accepted: false,
            newer_term_known: false,
        });
        // Settled from 350 ms: web/0 (fence 4) leads from 310 ms to the end.
        h.fault("pause", t0 + ms(50), t0 + ms(250));
        h.expect_leader("web", ms(100));
        h.expect_leader("db", ms(100));
        h.finish_at(t0 + ms(500));
        (h, t0)
    }

    #[tokio::test]
    async fn a_clean_history_passes() {
        let (h, _) = clean();
        let report = h.check();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.terms, 5);
        assert_eq!(report.applications, 2);
        assert_eq!((report.writes, report.stale_writes), (2, 1));
        assert_eq!(report.liveness_checked, 2);
        assert!(report.summary().contains("violations=0"), "{report}");
    }

    #[tokio::test]
    async fn a_fence_going_back_is_caught() {
        let (h, t0) = clean();
        let late = h.term_began("web", "web/2", Fence(3), t0 + ms(400));
        h.term_ended(late, t0 + ms(400) + ms(1));
        let report = h.check();
        assert!(
            report.violations.iter().any(|v| matches!(
                v,
                Violation::FenceNotIncreasing { later, .. } if later.fence == Fence(3)
            )),
            "{report}"
        );
    }

    #[tokio::test]
    async fn a_reissued_fence_is_caught() {
        let h = History::new(ms(5));
        let t0 = h.start();
        let a = h.term_began("web", "web/0", Fence(1), t0);
        h.term_ended(a, t0 + ms(10));
        let b = h.term_began("web", "web/1", Fence(1), t0 + ms(20));
        h.term_ended(b, t0 + ms(30));
        let report = h.check();
        assert!(
            report.violations.iter().any(|v| matches!(
                v,
                Violation::FenceReissued {
                    fence: Fence(1),
                    ..
                }
            )),
            "{report}"
        );
        assert!(
            report
                .violations
                .iter()
                .any(|v| matches!(v, Violation::FenceNotIncreasing { .. })),
            "{report}"
        );
    }

    #[tokio::test]
    async fn overlapping_leaders_are_caught_beyond_the_clock_bound_only() {
        let h = History::new(ms(5));
        let t0 = h.start();
        let a = h.term_began("web", "web/0", Fence(1), t0);
        h.term_ended(a, t0 + ms(100));
        // Within the bound: allowed.
        let b = h.term_began("web", "web/1", Fence(2), t0 + ms(96));
        h.term_ended(b, t0 + ms(200));
        assert!(h.check().is_ok(), "{}", h.check());
        // A long term overlapped by a later, non-adjacent one.
        let c = h.term_began("web", "web/2", Fence(3), t0 + ms(300));
        h.term_ended(c, t0 + ms(1000));
        let d = h.term_began("web", "web/3", Fence(4), t0 + ms(900));
        h.term_ended(d, t0 + ms(950));
        let report = h.check();
        assert_eq!(report.violations.len(), 1, "{report}");
        assert!(
            matches!(
                &report.violations[0],
                Violation::Overlap { overlap, second, .. }
                    if *overlap == ms(50) && second.unit == "web/3"
            ),
            "{report}"
        );
    }

    #[tokio::test]
    async fn an_open_term_overlaps_until_the_end() {
        let h = History::new(ms(5));
        let t0 = h.start();
        h.term_began("web", "web/0", Fence(1), t0);
        let b = h.term_began("web", "web/1", Fence(2), t0 + ms(100));
        h.term_ended(b, t0 + ms(200));
        h.finish_at(t0 + ms(300));
        let report = h.check();
        assert!(
            matches!(report.violations.as_slice(), [Violation::Overlap { overlap, .. }] if *overlap == ms(100)),
            "{report}"
        );
    }

    #[tokio::test]
    async fn empty_terms_take_no_part() {
        let h = History::new(ms(5));
        let t0 = h.start();
        let a = h.term_began("web", "web/0", Fence(1), t0);
        h.term_ended(a, t0 + ms(100));
        // Learnt of fence 0 after its lease ended: never acted, so no overlap, no order.
        let late = h.term_began("web", "web/9", Fence(0), t0 + ms(50));
        h.term_ended(late, t0 + ms(40));
        let report = h.check();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.empty_terms, 1);
    }

    #[tokio::test]
    async fn a_stale_write_accepted_is_caught() {
        let (h, t0) = clean();
        // Derived from the terms: fence 1 after fence 2 began.
        h.write(WriteRecord {
            application: "web".into(),
            unit: "web/0".into(),
            fence: Fence(1),
            started: t0 + ms(160),
            accepted: true,
            newer_term_known: false,
        });
        // Known to the test, with no newer term recorded (db has only fence 7).
        h.write(WriteRecord {
            application: "db".into(),
            unit: "db/0".into(),
            fence: Fence(7),
            started: t0 + ms(160),
            accepted: true,
            newer_term_known: true,
        });
        // Before the newer term began: not stale.
        h.write(WriteRecord {
            application: "web".into(),
            unit: "web/0".into(),
            fence: Fence(1),
            started: t0 + ms(90),
            accepted: true,
            newer_term_known: false,
        });
        let report = h.check();
        let stale: Vec<_> = report
            .violations
            .iter()
            .filter_map(|v| match v {
                Violation::StaleWriteAccepted { write, newer } => {
                    Some((write.application.as_str(), newer.as_ref().map(|t| t.fence)))
                }
                _ => None,
            })
            .collect();
        assert_eq!(stale, [("web", Some(Fence(2))), ("db", None)], "{report}");
        assert_eq!(report.violations.len(), 2, "{report}");
        assert_eq!(report.stale_writes, 3);
    }

    #[tokio::test]
    async fn no_leader_after_the_faults_is_caught() {
        let h = History::new(ms(5));
        let t0 = h.start();
        let a = h.term_began("web", "web/0", Fence(1), t0);
        h.term_ended(a, t0 + ms(100));
        h.fault("kill", t0 + ms(50), t0 + ms(60));
        h.expect_leader("web", ms(100));
        h.expect_leader("db", ms(100));
        h.finish_at(t0 + ms(400));
        let report = h.check();
        let apps: Vec<_> = report
            .violations
            .iter()
            .filter_map(|v| match v {
                Violation::NoSingleLeader { application, .. } => Some(application.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(apps, ["db", "web"], "{report}");
    }

    #[tokio::test]
    async fn a_late_leader_or_a_handover_after_settling_is_caught() {
        let h = History::new(ms(5));
        let t0 = h.start();
        h.fault("kill", t0, t0 + ms(100));
        // Settled by 200 ms: web leads only from 250 ms.
        h.term_began("web", "web/0", Fence(1), t0 + ms(250));
        // db changes hands after settling.
        let d = h.term_began("db", "db/0", Fence(1), t0 + ms(150));
        h.term_ended(d, t0 + ms(300));
        h.term_began("db", "db/1", Fence(2), t0 + ms(300));
        h.expect_leader("web", ms(100));
        h.expect_leader("db", ms(100));
        h.finish_at(t0 + ms(400));
        let report = h.check();
        assert_eq!(report.violations.len(), 2, "{report}");
        assert!(
            report
                .violations
                .iter()
                .all(|v| matches!(v, Violation::NoSingleLeader { .. })),
            "{report}"
        );
    }

    #[tokio::test]
    async fn unsettled_histories_are_reported() {
        let h = History::new(ms(5));
        let t0 = h.start();
        h.term_began("web", "web/0", Fence(1), t0);
        h.expect_leader("web", ms(100));
        let f = h.fault_began("pause");
        assert!(h.settled_by().is_none());
        h.finish_at(t0 + ms(500));
        assert!(
            matches!(
                h.check().violations.as_slice(),
                [Violation::Unsettled { .. }]
            ),
            "{}",
            h.check()
        );
        h.fault_ended(f);
        h.finish_at(h.settled_by().unwrap() - ms(1));
        assert!(
            matches!(
                h.check().violations.as_slice(),
                [Violation::Unsettled { .. }]
            ),
            "{}",
            h.check()
        );
    }
}
