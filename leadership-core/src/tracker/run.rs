//! The tracker's task: claims, renewals, blocks, retries and the stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::time::{Instant, sleep_until};

use super::metrics::{Call, Ended};
use super::state::{Action, Shared};
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

impl Task {
    pub(super) async fn run(mut self) -> Result<()> {
        let outcome = match self.invalid.take() {
            Some(err) => Err(err),
            None => self.contend().await,
        };
        self.stop(&outcome).await;
        outcome
    }

    /// Carries out what the state machine ([`Shared::next_action`]) asks, and reports every
    /// answer back to it; returns when killed (`Ok`) or on a fatal error (T9).
    async fn contend(&self) -> Result<()> {
        let shared = &*self.shared;
        // Consecutive failures, for the backoff; any answer from the store resets it.
        let mut failures: u32 = 0;
        loop {
            if shared.kill.is_cancelled() {
                return Ok(());
            }
            match shared.next_action() {
                Action::Stop => return Ok(()),
                Action::Claim { at } | Action::Renew { at, .. } if Instant::now() < at => {
                    // Asleep until the claim or renewal is due; a ticket that needs a fresh
                    // guarantee (T3) wakes it to look again.
                    tokio::select! {
                        biased;
                        () = shared.kill.cancelled() => return Ok(()),
                        () = shared.renew_now.notified() => {}
                        () = sleep_until(at) => {}
                    }
                }
                Action::Claim { .. } => self.attempt(None, &mut failures).await?,
                Action::Renew { deadline, .. } => {
                    self.attempt(Some(deadline), &mut failures).await?;
                }
                Action::Block => self.block(&mut failures).await,
            }
        }
    }

    /// One claim call, a claimant's or the holder's renewal (which must succeed before the
    /// term's loss `deadline`, T7), reported to the state machine. Errs only with a fatal
    /// error.
    async fn attempt(&self, deadline: Option<Instant>, failures: &mut u32) -> Result<()> {
        let shared = &*self.shared;
        let call_start = Instant::now();
        self.may_hold.store(true, Ordering::Relaxed);
        let loss = async {
            match deadline {
                Some(deadline) => sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            biased;
            () = shared.kill.cancelled() => return Ok(()),
            // T7: a renewal still in flight at the deadline cannot be trusted to have
            // applied; turn minion now and re-contend.
            () = loss => {
                if let Some(deadline) = deadline {
                    shared.deadline_passed(deadline);
                }
                return Ok(());
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
                shared.claimed(fence, call_start);
            }
            Err(Error::ClaimDenied) => {
                *failures = 0;
                self.may_hold.store(false, Ordering::Relaxed);
                shared.denied();
            }
            Err(err) if err.is_retryable() => {
                let what = if renewing {
                    "renew failed"
                } else {
                    "claim failed"
                };
                shared.claim_failed(self.backoff_after(failures, &err, what));
            }
            Err(err) => return Err(err),
        }
        Ok(())
    }

    /// Waits until the lease is released (T4), reported to the state machine.
    async fn block(&self, failures: &mut u32) {
        let shared = &*self.shared;
        tracing::debug!(
            application = %shared.application,
            unit = %shared.unit,
            "waiting for leadership to be released"
        );
        let result = tokio::select! {
            biased;
            () = shared.kill.cancelled() => return,
            result = self.claimer.block_until_leadership_released(
                &shared.application, shared.kill.child_token()) => result,
        };
        match result {
            Ok(()) => {
                *failures = 0;
                shared.block_ended(Instant::now());
            }
            Err(Error::BlockCancelled) if shared.kill.is_cancelled() => {}
            // The backoff keeps a store that fails blocks at once from being hammered.
            Err(err) => shared.block_ended(self.backoff_after(failures, &err, "block failed")),
        }
    }

    /// Logs a retryable failure and returns when to try again: after a jittered backoff.
    fn backoff_after(&self, failures: &mut u32, err: &Error, what: &'static str) -> Instant {
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
        Instant::now() + delay
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
