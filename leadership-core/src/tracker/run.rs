//! The tracker's task: claims, renewals, blocks, retries and the stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::time::{Instant, sleep_until};

use super::metrics::{Call, Ended};
use super::state::Shared;
use crate::retry::Backoff;
use crate::{Claimer, Error, Result, Revoker};

/// Everything the task needs besides the shared state.
pub(super) struct Task {
    pub(super) shared: Arc<Shared>,
    pub(super) claimer: Arc<dyn Claimer>,
    pub(super) release: Option<Arc<dyn Revoker>>,
    pub(super) backoff: Backoff,
    /// A configuration error found at build time: the task stops with it at once (T9).
    pub(super) invalid: Option<Error>,
    /// False only while the tracker knows another unit holds the lease: a claim that was
    /// denied. Any claim call, even one cut short, may have made it leader (E2).
    pub(super) may_hold: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Not leader: claim (T4 after a release, or first claim, or re-contention after T7).
    Claim,
    /// Minion: wait until the lease is released (T4).
    Block,
    /// Leader: wait until the renewal is due (T2) or a ticket asks for one (T3).
    Hold,
    /// Leader: renew, retrying until the loss deadline (T7).
    Renew,
}

/// A claim call: a claimant's, or the holder's renewal, which must succeed before the
/// term's loss deadline (T7).
#[derive(Debug, Clone, Copy)]
enum Attempt {
    Claim,
    Renew { deadline: Instant },
}

/// How a phase ended.
enum Step {
    Next(Phase),
    Stop(Result<()>),
}

impl Task {
    pub(super) async fn run(mut self) -> Result<()> {
        let outcome = match self.invalid.take() {
            Some(err) => Err(err),
            None => self.contend().await,
        };
        self.stop(&outcome).await;
        outcome
    }

    /// The state machine; returns when killed (`Ok`) or on a fatal error (T9).
    async fn contend(&self) -> Result<()> {
        let mut failures: u32 = 0;
        let mut phase = Phase::Claim;
        loop {
            if self.shared.kill.is_cancelled() {
                return Ok(());
            }
            let step = match phase {
                Phase::Claim => self.claim(&mut failures).await,
                Phase::Block => self.block(&mut failures).await,
                Phase::Hold => self.hold().await,
                Phase::Renew => self.renew(&mut failures).await,
            };
            match step {
                Step::Next(next) => phase = next,
                Step::Stop(outcome) => return outcome,
            }
        }
    }

    async fn claim(&self, failures: &mut u32) -> Step {
        self.attempt(Attempt::Claim, failures).await
    }

    /// One claim call, a first claim or the holder's renewal, and what follows from its
    /// answer.
    async fn attempt(&self, attempt: Attempt, failures: &mut u32) -> Step {
        let shared = &*self.shared;
        let call_start = Instant::now();
        self.may_hold.store(true, Ordering::Relaxed);
        let deadline = match attempt {
            Attempt::Claim => None,
            Attempt::Renew { deadline } => Some(deadline),
        };
        let loss = async {
            match deadline {
                Some(deadline) => sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            biased;
            () = shared.kill.cancelled() => return Step::Stop(Ok(())),
            // T7: a renewal still in flight at the deadline cannot be trusted to have
            // applied; turn minion now and re-contend.
            () = loss => {
                shared.minion("no renewal succeeded within the guaranteed window", Ended::Lost);
                return Step::Next(Phase::Claim);
            }
            result = self.claimer.claim_leadership(
                &shared.application, &shared.unit, shared.claim_length) => result,
        };
        let renewing = deadline.is_some();
        // A denial is an answer, not a failure (T4); every other error is one.
        shared.metrics.call(
            if renewing { Call::Renew } else { Call::Claim },
            call_start.elapsed(),
            matches!(&result, Err(err) if !err.is_claim_denied()),
        );
        match result {
            Ok(fence) => {
                *failures = 0;
                if shared.claimed(fence, call_start) {
                    Step::Next(Phase::Hold)
                } else if renewing {
                    shared.minion(
                        "the renewal answered after its guaranteed window ended",
                        Ended::Lost,
                    );
                    Step::Next(Phase::Claim)
                } else {
                    // The answer came after the claim's own window ended: claim again.
                    shared.minion(
                        "the claim answered after its guaranteed window ended",
                        Ended::Lost,
                    );
                    Step::Next(Phase::Claim)
                }
            }
            Err(Error::ClaimDenied) => {
                *failures = 0;
                self.may_hold.store(false, Ordering::Relaxed);
                shared.minion(
                    if renewing {
                        "leadership renewal denied"
                    } else {
                        "leadership claim denied"
                    },
                    Ended::Demoted,
                );
                Step::Next(Phase::Block)
            }
            // A leader keeps renewing until the loss deadline (T7); a claimant is no leader.
            Err(err) if err.is_retryable() && renewing => {
                self.retry_after(failures, &err, "renew failed", deadline, Phase::Renew)
                    .await
            }
            Err(err) if err.is_retryable() => {
                shared.minion("leadership claim failed", Ended::Demoted);
                self.retry_after(failures, &err, "claim failed", None, Phase::Claim)
                    .await
            }
            Err(err) => Step::Stop(Err(err)),
        }
    }

    async fn block(&self, failures: &mut u32) -> Step {
        let shared = &*self.shared;
        tracing::debug!(
            application = %shared.application,
            unit = %shared.unit,
            "waiting for leadership to be released"
        );
        let result = tokio::select! {
            biased;
            () = shared.kill.cancelled() => return Step::Stop(Ok(())),
            result = self.claimer.block_until_leadership_released(
                &shared.application, shared.kill.child_token()) => result,
        };
        match result {
            Ok(()) => {
                *failures = 0;
                Step::Next(Phase::Claim)
            }
            Err(Error::BlockCancelled) if shared.kill.is_cancelled() => Step::Stop(Ok(())),
            // Like juju, any error ends the wait and the tracker claims: a claim tells it
            // what is going on (denied, vacant, unreachable or fatal). The backoff keeps a
            // store that fails blocks at once from being hammered.
            Err(err) => {
                self.retry_after(failures, &err, "block failed", None, Phase::Claim)
                    .await
            }
        }
    }

    async fn hold(&self) -> Step {
        let shared = &*self.shared;
        let Some(renew_at) = shared.renew_at() else {
            return Step::Next(Phase::Claim);
        };
        tokio::select! {
            biased;
            () = shared.kill.cancelled() => Step::Stop(Ok(())),
            () = shared.renew_now.notified() => Step::Next(Phase::Renew),
            () = sleep_until(renew_at) => Step::Next(Phase::Renew),
        }
    }

    async fn renew(&self, failures: &mut u32) -> Step {
        let shared = &*self.shared;
        let Some(deadline) = shared.deadline() else {
            return Step::Next(Phase::Claim);
        };
        if Instant::now() >= deadline {
            shared.minion(
                "no renewal succeeded within the guaranteed window",
                Ended::Lost,
            );
            return Step::Next(Phase::Claim);
        }
        self.attempt(Attempt::Renew { deadline }, failures).await
    }

    /// Logs a retryable failure and sleeps a jittered backoff, cut short by `wake_by` (the
    /// loss deadline while leader); then goes on to phase `then`, unless killed meanwhile.
    async fn retry_after(
        &self,
        failures: &mut u32,
        err: &Error,
        what: &'static str,
        wake_by: Option<Instant>,
        then: Phase,
    ) -> Step {
        let shared = &*self.shared;
        *failures = failures.saturating_add(1);
        let delay = self.backoff.delay_after(*failures);
        tracing::warn!(
            application = %shared.application,
            unit = %shared.unit,
            fence = shared.current_term().map(|t| t.fence.get()),
            transition = what,
            error = %err,
            attempt = *failures,
            retry_in = ?delay,
            "leadership {what}"
        );
        let mut wake = Instant::now() + delay;
        if let Some(deadline) = wake_by {
            wake = wake.min(deadline);
        }
        tokio::select! {
            biased;
            () = shared.kill.cancelled() => Step::Stop(Ok(())),
            () = sleep_until(wake) => Step::Next(then),
        }
    }

    /// Fires the loss signal, answers every ticket `false`, waits for the terms' work to end
    /// (W2), and releases the lease if asked (T6, T8).
    async fn stop(&self, outcome: &Result<()>) {
        let shared = &*self.shared;
        let reason = match outcome {
            Ok(()) => "tracker stopped",
            Err(_) => "tracker failed",
        };
        if let Err(err) = outcome {
            shared.failed(err);
        }
        // The loss signal fires before the revoke, so leader-only work has stopped before
        // anyone else can be granted the lease.
        let stopped = shared.stop(reason);
        let fence = stopped.fence;
        if let Err(err) = outcome {
            tracing::error!(
                application = %shared.application,
                unit = %shared.unit,
                error = %err,
                "leadership tracker stopped by a fatal error"
            );
        }
        // W2: the old term's work ends before the lease is revoked, so the next leader's work
        // never overlaps it. Each work task drops its future by the bound itself; the abort
        // is for a task the runtime has not scheduled by then.
        for mut work in stopped.work {
            if tokio::time::timeout_at(stopped.bound, &mut work)
                .await
                .is_err()
            {
                work.abort();
                let _aborted = work.await;
            }
        }
        let released = self.release(fence).await;
        if fence.is_some() {
            shared.metrics.ended(if released {
                Ended::Released
            } else {
                Ended::Demoted
            });
        }
    }

    /// Revokes the lease if release on stop is on (T8); true if it was revoked.
    async fn release(&self, fence: Option<crate::Fence>) -> bool {
        let shared = &*self.shared;
        let Some(revoker) = &self.release else {
            return false;
        };
        if !self.may_hold.load(Ordering::Relaxed) {
            return false;
        }
        // Revoke even if the tracker did not believe it leads: a claim cut short by the
        // kill or by a timeout may still have applied (E2). A non-holder's revoke changes
        // nothing (R2, R3).
        match revoker
            .revoke_leadership(&shared.application, &shared.unit)
            .await
        {
            Ok(()) => {
                tracing::info!(
                    application = %shared.application,
                    unit = %shared.unit,
                    fence = fence.map(|f| f.get()),
                    transition = "released",
                    "leadership released"
                );
                true
            }
            Err(Error::ClaimNotHeld) => {
                tracing::debug!(
                    application = %shared.application,
                    unit = %shared.unit,
                    "nothing to release: the lease is held by another unit"
                );
                false
            }
            // The lease then ends at its expiry instead, as without release.
            Err(err) => {
                tracing::warn!(
                    application = %shared.application,
                    unit = %shared.unit,
                    fence = fence.map(|f| f.get()),
                    error = %err,
                    "leadership release failed; the lease will expire instead"
                );
                false
            }
        }
    }
}
