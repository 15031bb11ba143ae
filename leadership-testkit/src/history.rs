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
//! - **claim and revoke calls** ([`ClaimCall`], [`RevokeCall`]): every call a claimer or a
//!   tracker made (through [`FaultyStore::record_into`](crate::FaultyStore::record_into)),
//!   with its call start, return, duration and outcome: the store's promises (C4);
//! - **witness logs**: what the store itself holds of the leader-only writes it applied,
//!   `(unit, fence)` per application in the store's order ([`History::witness`]);
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
//! 5. **promises** (C4, precise): a claim that returned `Ok` at call start `s` with duration
//!    `d` promises the unit the lease until `s + d`. Another unit's claim granted a newer
//!    fence that returned between `s` and `s + d` (less the clock bound), with no revoke by
//!    the holder begun in between, breaks it. Both instants are read on one monotonic clock
//!    around the calls themselves, so nothing is noticed late.
//! 6. **claim order** (F1, precise): a claim granted after another one returned never has a
//!    smaller fence, and a fence granted to one unit is never granted to another.
//! 7. **the store's witness** (F1, F2): in each witness log, fences never decrease (a stale
//!    leader's write was never applied after a newer one's) and each fence belongs to one
//!    unit.
//!
//! [`Violation::rule`] names the rule each violation breaks (C4, F1, F2, T7 or liveness), so
//! a run can be reported as a row of the safety matrix.
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

pub use leadership_core::record::{ClaimCall, ClaimOutcome};

/// One revoke call by a holder, timed around the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeCall {
    /// The application.
    pub application: String,
    /// The unit that revoked.
    pub unit: String,
    /// When the call was made: from here the unit's promise may end early (C4's exception).
    pub started: Instant,
    /// Whether it returned `Ok`.
    pub ok: bool,
}

/// One entry of a store-side witness log: a leader-only write the store applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessEntry {
    /// The unit whose guarded write it was.
    pub unit: String,
    /// The fence it was guarded by.
    pub fence: Fence,
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
#[derive(Debug, Clone)]
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
    /// Property 5 (C4): another unit was granted a newer term while a holder's promise ran.
    BrokenPromise {
        /// The holder's granted claim.
        holder: ClaimCall,
        /// The other unit's claim, granted a newer fence.
        rival: ClaimCall,
        /// How long before the promise's end the rival's claim returned.
        early_by: Duration,
        /// The holder's last revoke before its claim, if that revoke did not return `Ok`: a
        /// revoke that failed for its caller may still apply later (the E2 of revokes), so
        /// it is a candidate cause. It does not excuse the violation.
        unacknowledged_revoke: Option<RevokeCall>,
    },
    /// Property 6 (F1): a claim granted later in real time got a smaller fence, or one fence
    /// was granted to two units.
    ClaimFenceOrder {
        /// The earlier claim.
        earlier: ClaimCall,
        /// The later one.
        later: ClaimCall,
    },
    /// Property 7 (F2): the store applied a write with a smaller fence after a larger one.
    WitnessFenceDecreased {
        /// The application.
        application: String,
        /// The position in the log of the smaller fence.
        index: usize,
        /// The entry before it.
        before: WitnessEntry,
        /// The entry.
        after: WitnessEntry,
    },
    /// Property 7 (F1): the store applied writes of two units with one fence.
    WitnessFenceShared {
        /// The application.
        application: String,
        /// The fence.
        fence: Fence,
        /// The units that wrote with it.
        units: Vec<String>,
    },
}

impl Violation {
    /// The rule the violation breaks: `C4`, `F1`, `F2`, `T7` (two trackers believed they led
    /// at once) or `liveness`.
    pub fn rule(&self) -> &'static str {
        match self {
            Violation::BrokenPromise { .. } => "C4",
            Violation::FenceNotIncreasing { .. }
            | Violation::FenceReissued { .. }
            | Violation::ClaimFenceOrder { .. }
            | Violation::WitnessFenceShared { .. } => "F1",
            Violation::StaleWriteAccepted { .. } | Violation::WitnessFenceDecreased { .. } => "F2",
            Violation::Overlap { .. } => "T7",
            Violation::NoSingleLeader { .. } | Violation::Unsettled { .. } => "liveness",
        }
    }
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
    /// Claim calls recorded.
    pub claims: usize,
    /// Of those, granted claims that started a new term (the unit's previous granted claim,
    /// if any, had another fence).
    pub new_terms: usize,
    /// Entries in the store's witness logs.
    pub witness_entries: usize,
    /// Everything that broke a property; empty when the history is correct.
    pub violations: Vec<Violation>,
}

impl Report {
    /// True when no property was broken.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// How many violations break `rule` (see [`Violation::rule`]).
    pub fn count(&self, rule: &str) -> usize {
        self.violations.iter().filter(|v| v.rule() == rule).count()
    }

    /// One line of figures, for logs and reports.
    pub fn summary(&self) -> String {
        format!(
            "terms={} (empty {}) claims={} new_terms={} applications={} writes={} (stale {}, \
             accepted {}) witness={} faults={} liveness_checked={} violations={} (C4 {}, F1 {}, \
             F2 {}, T7 {}, liveness {})",
            self.terms,
            self.empty_terms,
            self.claims,
            self.new_terms,
            self.applications,
            self.writes,
            self.stale_writes,
            self.accepted_writes,
            self.witness_entries,
            self.faults,
            self.liveness_checked,
            self.violations.len(),
            self.count("C4"),
            self.count("F1"),
            self.count("F2"),
            self.count("T7"),
            self.count("liveness"),
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
    claims: Vec<ClaimCall>,
    revokes: Vec<RevokeCall>,
    witness: BTreeMap<String, Vec<WitnessEntry>>,
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

    /// Records a claim call (bare claimers call this; a [`FaultyStore`](crate::FaultyStore)
    /// with [`record_into`](crate::FaultyStore::record_into) does it for a tracker).
    pub fn claim(&self, call: ClaimCall) {
        self.records().claims.push(call);
    }

    /// Records a revoke call.
    pub fn revoke(&self, call: RevokeCall) {
        self.records().revokes.push(call);
    }

    /// Every claim call recorded so far.
    pub fn claims(&self) -> Vec<ClaimCall> {
        self.records().claims.clone()
    }

    /// Records the store's own log of applied leader-only writes of `application`, in the
    /// store's order (replacing any given before).
    pub fn witness(&self, application: &str, entries: Vec<WitnessEntry>) {
        self.records()
            .witness
            .insert(application.to_owned(), entries);
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
                // The term began when its promoting claim returned, not when this task woke.
                let id = history.term_began(&application, &unit, term.fence, term.began.min(began));
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
        self.check_claims(&records, &mut report);
        self.check_witness(&records, &mut report);
        report
    }

    fn check_claims(&self, records: &Records, report: &mut Report) {
        report.claims = records.claims.len();
        let mut by_app: BTreeMap<&str, Vec<&ClaimCall>> = BTreeMap::new();
        for call in records.claims.iter().filter(|c| c.granted().is_some()) {
            by_app.entry(&call.application).or_default().push(call);
        }
        for calls in by_app.values_mut() {
            calls.sort_by_key(|c| (c.returned, c.started));
            let mut last_fence: BTreeMap<&str, Fence> = BTreeMap::new();
            let mut owners: BTreeMap<Fence, &ClaimCall> = BTreeMap::new();
            for call in calls.iter() {
                let fence = call.granted().unwrap_or_default();
                if last_fence.insert(&call.unit, fence) != Some(fence) {
                    report.new_terms += 1;
                }
                match owners.get(&fence) {
                    Some(owner) if owner.unit != call.unit => {
                        report.violations.push(Violation::ClaimFenceOrder {
                            earlier: (*owner).clone(),
                            later: (*call).clone(),
                        });
                    }
                    Some(_) => {}
                    None => {
                        owners.insert(fence, call);
                    }
                }
            }
            // F1 in real time: a claim started after others returned has a fence at least
            // as large as theirs (a sweep over return order keeps the largest seen).
            let mut by_start: Vec<&ClaimCall> = calls.clone();
            by_start.sort_by_key(|c| c.started);
            let mut returned = calls.iter().peekable();
            let mut largest: Option<&ClaimCall> = None;
            for later in &by_start {
                while let Some(done) = returned.next_if(|c| c.returned < later.started) {
                    if largest.is_none_or(|l| done.granted() > l.granted()) {
                        largest = Some(done);
                    }
                }
                if let Some(earlier) = largest
                    && later.granted() < earlier.granted()
                {
                    report.violations.push(Violation::ClaimFenceOrder {
                        earlier: earlier.clone(),
                        later: (*later).clone(),
                    });
                }
            }
            // C4: rivals granted a newer fence that returned inside a holder's promise; one
            // violation per (holder's term, rival's term), the earliest return kept.
            let mut broken: BTreeMap<(&str, Fence, &str, Fence), Violation> = BTreeMap::new();
            for holder in calls.iter() {
                let fence = holder.granted().unwrap_or_default();
                let promise = holder.started + holder.duration;
                let from = calls.partition_point(|c| c.returned <= holder.started);
                for rival in &calls[from..] {
                    if rival.returned + self.clock_bound >= promise {
                        break;
                    }
                    if rival.unit == holder.unit || rival.granted().unwrap_or_default() <= fence {
                        continue;
                    }
                    let revoked = records.revokes.iter().any(|r| {
                        r.application == holder.application
                            && r.unit == holder.unit
                            && r.started >= holder.started
                            && r.started < rival.returned
                    });
                    let early_by = promise - rival.returned;
                    let key = (
                        holder.unit.as_str(),
                        fence,
                        rival.unit.as_str(),
                        rival.granted().unwrap_or_default(),
                    );
                    let worse = match broken.get(&key) {
                        Some(Violation::BrokenPromise { early_by: e, .. }) => early_by > *e,
                        _ => true,
                    };
                    if !revoked && worse {
                        let unacknowledged_revoke = records
                            .revokes
                            .iter()
                            .filter(|r| {
                                r.application == holder.application
                                    && r.unit == holder.unit
                                    && r.started < holder.started
                            })
                            .max_by_key(|r| r.started)
                            .filter(|r| !r.ok)
                            .cloned();
                        broken.insert(
                            key,
                            Violation::BrokenPromise {
                                holder: (*holder).clone(),
                                rival: (*rival).clone(),
                                early_by,
                                unacknowledged_revoke,
                            },
                        );
                    }
                }
            }
            report.violations.extend(broken.into_values());
        }
    }

    fn check_witness(&self, records: &Records, report: &mut Report) {
        for (application, log) in &records.witness {
            report.witness_entries += log.len();
            let mut owners: BTreeMap<Fence, BTreeSet<&str>> = BTreeMap::new();
            for entry in log {
                owners.entry(entry.fence).or_default().insert(&entry.unit);
            }
            for (fence, units) in owners {
                if units.len() > 1 {
                    report.violations.push(Violation::WitnessFenceShared {
                        application: application.clone(),
                        fence,
                        units: units.into_iter().map(str::to_owned).collect(),
                    });
                }
            }
            for (index, pair) in log.windows(2).enumerate() {
                if pair[1].fence < pair[0].fence {
                    report.violations.push(Violation::WitnessFenceDecreased {
                        application: application.clone(),
                        index: index + 1,
                        before: pair[0].clone(),
                        after: pair[1].clone(),
                    });
                }
            }
        }
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

    fn call(unit: &str, started: Instant, returned: Instant, outcome: ClaimOutcome) -> ClaimCall {
        let result = match outcome {
            ClaimOutcome::Granted(fence) => Ok(fence),
            ClaimOutcome::Denied => Err(leadership_core::Error::ClaimDenied),
            ClaimOutcome::Failed => Err(leadership_core::Error::unavailable(
                "test",
                "claim",
                "reply lost",
            )),
        };
        ClaimCall {
            application: "web".into(),
            unit: unit.into(),
            duration: ms(100),
            started,
            returned,
            result,
        }
    }

    fn granted(fence: u64) -> ClaimOutcome {
        ClaimOutcome::Granted(Fence(fence))
    }

    /// web/0 holds fence 1 from a claim made at 0 ms (promise to 100 ms) and extends it at
    /// 60 ms (promise to 160 ms); web/1 is denied, then granted fence 2 at 170 ms.
    fn kept_promises() -> (Arc<History>, Instant) {
        let h = History::new(ms(5));
        let t0 = h.start();
        h.claim(call("web/0", t0, t0 + ms(2), granted(1)));
        h.claim(call(
            "web/1",
            t0 + ms(50),
            t0 + ms(51),
            ClaimOutcome::Denied,
        ));
        h.claim(call("web/0", t0 + ms(60), t0 + ms(63), granted(1)));
        // A claim whose reply was lost (E2) promises nothing, even if it applied.
        h.claim(call(
            "web/0",
            t0 + ms(120),
            t0 + ms(400),
            ClaimOutcome::Failed,
        ));
        h.claim(call("web/1", t0 + ms(160), t0 + ms(170), granted(2)));
        (h, t0)
    }

    #[tokio::test]
    async fn kept_promises_pass() {
        let (h, _) = kept_promises();
        let report = h.check();
        assert!(report.is_ok(), "{report}");
        assert_eq!((report.claims, report.new_terms), (5, 2), "{report}");
        assert_eq!(report.count("C4"), 0);
    }

    #[tokio::test]
    async fn a_rival_granted_inside_an_extended_promise_breaks_c4() {
        let (h, t0) = kept_promises();
        // web/2 granted fence 3 at 150 ms: inside web/0's extended promise (160 ms) but past
        // its first one (100 ms); only the extension's promise catches it, by 10 ms.
        h.claim(call("web/2", t0 + ms(140), t0 + ms(150), granted(3)));
        let report = h.check();
        let broken: Vec<_> = report
            .violations
            .iter()
            .filter_map(|v| match v {
                Violation::BrokenPromise {
                    holder,
                    rival,
                    early_by,
                    ..
                } => Some((holder.unit.as_str(), rival.unit.as_str(), *early_by)),
                _ => None,
            })
            .collect();
        assert_eq!(broken, [("web/0", "web/2", ms(10))], "{report}");
        assert_eq!(report.count("C4"), 1, "{report}");
        // web/1's claim at 160 ms then got fence 2 after fence 3 had returned: F1 too.
        assert_eq!(report.count("F1"), 1, "{report}");
    }

    #[tokio::test]
    async fn a_revoke_or_the_clock_bound_excuses_an_early_rival() {
        let h = History::new(ms(5));
        let t0 = h.start();
        h.claim(call("web/0", t0, t0 + ms(1), granted(1)));
        // Within the clock bound of the promise's end (100 ms): allowed.
        h.claim(call("web/1", t0 + ms(90), t0 + ms(96), granted(2)));
        assert!(h.check().is_ok(), "{}", h.check());
        // web/1 revokes at 120 ms (promise to 190 ms); web/2 is granted at 130 ms.
        h.claim(call("web/1", t0 + ms(90), t0 + ms(97), granted(2)));
        h.revoke(RevokeCall {
            application: "web".into(),
            unit: "web/1".into(),
            started: t0 + ms(120),
            ok: true,
        });
        h.claim(call("web/2", t0 + ms(125), t0 + ms(130), granted(3)));
        let report = h.check();
        assert!(report.is_ok(), "{report}");
        // A revoke by someone else does not excuse web/2's term being cut by web/3.
        h.revoke(RevokeCall {
            application: "web".into(),
            unit: "web/9".into(),
            started: t0 + ms(131),
            ok: true,
        });
        h.claim(call("web/3", t0 + ms(133), t0 + ms(140), granted(4)));
        assert_eq!(h.check().count("C4"), 1, "{}", h.check());
    }

    #[tokio::test]
    async fn claim_fences_out_of_real_time_order_or_shared_break_f1() {
        let h = History::new(ms(5));
        let t0 = h.start();
        h.claim(call("web/0", t0, t0 + ms(1), granted(5)));
        // Started after fence 5 was returned, yet granted a smaller fence.
        h.claim(call("web/1", t0 + ms(200), t0 + ms(201), granted(3)));
        let report = h.check();
        assert!(
            matches!(
                report.violations.as_slice(),
                [Violation::ClaimFenceOrder { earlier, later }]
                    if earlier.granted() == Some(Fence(5)) && later.granted() == Some(Fence(3))
            ),
            "{report}"
        );
        // One fence given to two units.
        h.claim(call("web/2", t0 + ms(300), t0 + ms(301), granted(5)));
        let report = h.check();
        assert_eq!(report.count("F1"), 2, "{report}");
        // Concurrent claims may return in any order: no violation between them.
        let h = History::new(ms(5));
        h.claim(call("web/0", t0, t0 + ms(10), granted(2)));
        h.claim(call("web/1", t0 + ms(1), t0 + ms(5), granted(1)));
        assert_eq!(h.check().count("F1"), 0, "{}", h.check());
    }

    fn entry(unit: &str, fence: u64) -> WitnessEntry {
        WitnessEntry {
            unit: unit.into(),
            fence: Fence(fence),
        }
    }

    #[tokio::test]
    async fn the_stores_witness_log_must_never_go_back_nor_share_a_fence() {
        let h = History::new(ms(5));
        h.witness(
            "web",
            vec![entry("web/0", 1), entry("web/0", 1), entry("web/1", 2)],
        );
        let report = h.check();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.witness_entries, 3);
        h.witness(
            "web",
            vec![
                entry("web/0", 1),
                entry("web/1", 2),
                entry("web/0", 1),
                entry("web/2", 2),
            ],
        );
        let report = h.check();
        let rules: Vec<_> = report.violations.iter().map(Violation::rule).collect();
        assert_eq!(rules, ["F1", "F2"], "{report}");
        assert!(
            report.violations.iter().any(|v| matches!(
                v,
                Violation::WitnessFenceDecreased { index: 2, after, .. } if after.unit == "web/0"
            )),
            "{report}"
        );
        assert!(report.summary().contains("F2 1"), "{report}");
    }

    #[tokio::test]
    async fn a_broken_promise_names_the_holders_failed_revoke_but_is_not_excused_by_it() {
        let h = History::new(ms(5));
        let t0 = h.start();
        h.revoke(RevokeCall {
            application: "web".into(),
            unit: "web/0".into(),
            started: t0,
            ok: false,
        });
        h.claim(call("web/0", t0 + ms(10), t0 + ms(12), granted(1)));
        h.claim(call("web/1", t0 + ms(40), t0 + ms(45), granted(2)));
        let report = h.check();
        assert!(
            matches!(
                report.violations.as_slice(),
                [Violation::BrokenPromise { unacknowledged_revoke: Some(r), .. }] if !r.ok
            ),
            "{report}"
        );
    }
}
