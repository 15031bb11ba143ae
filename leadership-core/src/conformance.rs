//! The conformance suite: one `pub async fn` per rule of the contract, run against every store.
//!
//! A store crate runs all of it with [`conformance_tests!`](crate::conformance_tests), which
//! expands into one test per rule, named after the rule (`c2_extend_never_shortens`, …), so a
//! failing test points at the rule it breaks. Each case opens its own namespace, so the cases
//! run in parallel on one server and never wipe anything.
//!
//! Most cases take a store handle already opened on a fresh namespace and the store's
//! [`Profile`]; the few that need more than one handle (N1, V5) or a fault (B5) take the
//! [`StoreFactory`]. The cases assert on error *variants* and on bounds taken from the profile,
//! never on speed.
//!
//! ```text
//! // tests/conformance.rs of a store crate
//! leadership_core::conformance_tests!(my_store::TestFactory::new());
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

use crate::{Error, Fence, Leadership, PermissivePolicy, Policy};

pub mod hostile;
mod watch;
mod work;

pub use watch::{
    WatchView, o_watchers_agree_with_the_store, o1_snapshot_equals_leaders,
    o2_changes_are_seen_in_time, o3_latest_state_wins, o4_dropped_connection_resynchronises,
};

pub use work::w1_with_leader_cancels_on_loss;

pub use crate::tracker_conformance::{
    t4_handover_without_release, t8_handover_with_release, w2_run_as_leader_never_overlaps,
};

/// What a store promises about time, so the suite can hold it to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// The shortest lease duration the suite may use; at least the store's granularity if it
    /// rounds durations up (etcd: whole seconds).
    pub min_duration: Duration,
    /// How late after its nominal expiry a lease may still look held (C5), including the
    /// scheduling noise of a loaded test machine.
    pub expiry_slack: Duration,
    /// How long after a revoke or expiry a blocked waiter may take to be released (B2), and
    /// how long any single call may take on a healthy store.
    pub notify_latency: Duration,
}

/// Opens store handles for the suite: one per namespace (N1).
#[async_trait]
pub trait StoreFactory: Send + Sync {
    /// A handle on the store for `namespace`, which no other case uses, with the default
    /// policy.
    async fn open(&self, namespace: &str) -> Arc<dyn Leadership>;

    /// A handle on the store for `namespace` that validates with `policy` (V5).
    async fn open_with_policy(
        &self,
        namespace: &str,
        policy: Arc<dyn Policy>,
    ) -> Arc<dyn Leadership>;

    /// The store's timing promises.
    fn profile(&self) -> Profile;

    /// How many random inputs the hostile-input properties ([`hostile`]) try: the first
    /// property takes this many, the others a half or a quarter. Each input costs a few
    /// round trips; a remote store may want fewer than the default.
    fn hostile_cases(&self) -> u32 {
        128
    }

    /// Drops every connection the store's handles have to the server, so that B5 can check
    /// that blocked waiters survive it. Returns `false` for stores without connections (the
    /// memory store), for which the case checks only that waiting is undisturbed.
    async fn drop_connections(&self) -> bool {
        false
    }
}

/// A fresh namespace for one case: the case's name and a random suffix, so reruns against a
/// persistent server never meet old state.
pub fn unique_namespace(case: &str) -> String {
    format!("{case}-{:016x}", rand::random::<u64>())
}

/// Runs one case on a fresh multi-threaded runtime. Used by the generated tests, so a store
/// crate needs no direct dependency on tokio's test macros.
pub fn block_on<F: Future>(case: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(case),
        Err(err) => panic!("conformance: cannot build a tokio runtime: {err}"),
    }
}

/// Expands into one `#[test]` per rule of the contract, each against its own namespace.
///
/// The argument is an expression giving a [`StoreFactory`]; it is evaluated once per test,
/// inside that test's runtime, so it may open connections.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:expr $(,)?) => {
        $crate::conformance_tests!(@handle $factory;
            v1_application_names, v2_unit_names, v3_durations, v4_entities,
            c1_vacant_is_granted, c2_extend_never_shortens, c3_other_claim_is_denied,
            c4_leader_for_at_least_duration, c5_lease_expires, c6_one_winner_among_many,
            k1_check_is_authoritative, k2_token_is_reusable, k3_fence_changes_only_with_term,
            r1_holder_revoke_ends_lease, r2_non_holder_revoke_is_refused, r3_revoke_vacant_is_ok,
            b1_vacant_returns_at_once, b2_released_on_revoke_and_expiry, b3_cancel_ends_wait,
            b4_one_revoke_releases_every_waiter,
            p1_pinned_lease_does_not_expire, p2_pins_are_per_entity_and_idempotent,
            p3_expiry_resumes_on_last_unpin, p4_pin_on_vacant_applies_to_next_claimant,
            p5_pinned_map_is_sorted, p6_holder_extends_and_revokes_pinned_lease,
            l1_leaders_is_a_snapshot, f1_fences_strictly_increase, e2_retried_claim_is_idempotent,
            o1_snapshot_equals_leaders, o2_changes_are_seen_in_time, o3_latest_state_wins,
            w1_with_leader_cancels_on_loss,
        );
        $crate::conformance_tests!(@factory $factory;
            v5_names_are_encoded_injectively, n1_namespaces_share_nothing,
            b5_wait_survives_dropped_connections,
            t4_handover_without_release, t8_handover_with_release,
            o4_dropped_connection_resynchronises, o_watchers_agree_with_the_store,
            w2_run_as_leader_never_overlaps,
        );
        /// Hostile input (V1–V5, N1), from the public suite.
        mod hostile {
            #[allow(unused_imports)]
            use super::*;
            fn make() -> ::std::pin::Pin<::std::boxed::Box<dyn ::std::future::Future<
                Output = ::std::sync::Arc<dyn $crate::conformance::StoreFactory>,
            > + Send>> {
                ::std::boxed::Box::pin(async {
                    let factory: ::std::sync::Arc<dyn $crate::conformance::StoreFactory> =
                        ::std::sync::Arc::new($factory);
                    factory
                })
            }
            fn cases() -> u32 {
                $crate::conformance::block_on(async {
                    $crate::conformance::StoreFactory::hostile_cases(&*make().await)
                })
            }
            #[test]
            fn rejected_input_changes_nothing() {
                $crate::conformance::hostile::rejected_input_changes_nothing(make, cases());
            }
            #[test]
            fn permissive_names_round_trip() {
                $crate::conformance::hostile::permissive_names_round_trip(make, cases() / 2);
            }
            #[test]
            fn namespaces_never_collide() {
                $crate::conformance::hostile::namespaces_never_collide(make, cases() / 4);
            }
            #[test]
            fn largest_names() {
                $crate::conformance::hostile::largest_names(make);
            }
            #[test]
            fn duration_edges() {
                $crate::conformance::hostile::duration_edges(make);
            }
            #[test]
            fn huge_durations() {
                $crate::conformance::hostile::huge_durations(make, cases() / 4);
            }
        }
    };
    (@handle $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::block_on(async {
                    let factory = $factory;
                    let namespace = $crate::conformance::unique_namespace(stringify!($case));
                    let store = $crate::conformance::StoreFactory::open(&factory, &namespace).await;
                    let profile = $crate::conformance::StoreFactory::profile(&factory);
                    $crate::conformance::$case(&*store, &profile).await;
                });
            }
        )*
    };
    (@factory $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::conformance::block_on(async {
                    let factory = $factory;
                    $crate::conformance::$case(&factory).await;
                });
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

const APP: &str = "app";
const A0: &str = "app/0";
const A1: &str = "app/1";
const A2: &str = "app/2";

/// `Ok(fence)` or a panic naming the call.
async fn claim(store: &dyn Leadership, app: &str, unit: &str, d: Duration) -> Fence {
    match store.claim_leadership(app, unit, d).await {
        Ok(fence) => fence,
        Err(err) => panic!("claim({app}, {unit}, {d:?}) failed: {err}"),
    }
}

async fn check(store: &dyn Leadership, app: &str, unit: &str) -> crate::Result<Fence> {
    store.leadership_check(app, unit).check().await
}

async fn leaders(store: &dyn Leadership) -> BTreeMap<String, String> {
    match store.leaders().await {
        Ok(leaders) => leaders,
        Err(err) => panic!("leaders() failed: {err}"),
    }
}

async fn pinned(store: &dyn Leadership) -> BTreeMap<String, Vec<String>> {
    match store.pinned_leadership().await {
        Ok(pinned) => pinned,
        Err(err) => panic!("pinned_leadership() failed: {err}"),
    }
}

async fn pin(store: &dyn Leadership, app: &str, entity: &str) {
    if let Err(err) = store.pin_leadership(app, entity).await {
        panic!("pin({app}, {entity}) failed: {err}");
    }
}

async fn unpin(store: &dyn Leadership, app: &str, entity: &str) {
    if let Err(err) = store.unpin_leadership(app, entity).await {
        panic!("unpin({app}, {entity}) failed: {err}");
    }
}

async fn revoke(store: &dyn Leadership, app: &str, unit: &str) {
    if let Err(err) = store.revoke_leadership(app, unit).await {
        panic!("revoke({app}, {unit}) failed: {err}");
    }
}

fn assert_leads(result: crate::Result<Fence>, expected: Fence, what: &str) {
    match result {
        Ok(fence) => assert_eq!(fence, expected, "{what}: wrong fence"),
        Err(err) => panic!("{what}: expected leader with fence {expected}, got {err}"),
    }
}

fn assert_not_leader(result: crate::Result<Fence>, unit: &str, app: &str, what: &str) {
    match result {
        Err(Error::NotLeader {
            unit: u,
            application: a,
        }) => {
            assert_eq!(
                (u.as_str(), a.as_str()),
                (unit, app),
                "{what}: NotLeader fields"
            );
        }
        other => panic!("{what}: expected NotLeader for {unit} of {app}, got {other:?}"),
    }
}

/// Time to wait for a lease of `d` claimed at `start` to be certainly gone.
fn past_expiry(profile: &Profile, start: Instant, d: Duration) -> Instant {
    start + d + profile.expiry_slack
}

/// Blocks on `app` while `event` runs on the same task. Returns the wait's outcome, the
/// instant it ended, and what `event` returned: the instant the release was caused (taken
/// *before* the call that causes it, since a release may be seen before that call returns).
async fn block_during<Fut>(
    store: &dyn Leadership,
    app: &str,
    limit: Duration,
    event: Fut,
) -> (crate::Result<()>, Instant, Instant)
where
    Fut: Future<Output = Instant>,
{
    let cancel = CancellationToken::new();
    let wait = async {
        let outcome = store.block_until_leadership_released(app, cancel).await;
        (outcome, Instant::now())
    };
    match timeout(limit, futures::future::join(wait, event)).await {
        Ok(((outcome, ended), caused)) => (outcome, ended, caused),
        Err(_) => panic!("block_until_leadership_released({app}) did not end within {limit:?}"),
    }
}

/// Asserts a block ended with `Ok`, not before `caused`, and within `latency` after it.
fn assert_released_in_time(
    (outcome, ended, caused): (crate::Result<()>, Instant, Instant),
    latency: Duration,
    what: &str,
) {
    if let Err(err) = outcome {
        panic!("{what}: block failed: {err}");
    }
    assert!(ended >= caused, "{what}: block returned before the release");
    let late = ended - caused;
    assert!(
        late <= latency,
        "{what}: block released {late:?} after the release, more than {latency:?}"
    );
}

fn assert_invalid<T: std::fmt::Debug>(
    result: crate::Result<T>,
    is_variant: fn(&Error) -> bool,
    what: &str,
) {
    match result {
        Err(err) if is_variant(&err) => {}
        other => panic!("{what}: expected a validation error, got {other:?}"),
    }
}

fn is_invalid_application(err: &Error) -> bool {
    matches!(err, Error::InvalidApplication { .. })
}

fn is_invalid_unit(err: &Error) -> bool {
    matches!(err, Error::InvalidUnit { .. })
}

fn is_invalid_duration(err: &Error) -> bool {
    matches!(err, Error::InvalidDuration { .. })
}

fn is_invalid_entity(err: &Error) -> bool {
    matches!(err, Error::InvalidEntity { .. })
}

/// A duration long enough to outlive every step of a case on a healthy store.
fn long(profile: &Profile) -> Duration {
    profile.min_duration * 3 + profile.expiry_slack * 2 + profile.notify_latency * 2
}

/// How long any one blocking step may take before the case gives up.
fn limit(profile: &Profile) -> Duration {
    long(profile) * 4 + Duration::from_secs(10)
}

// ---------------------------------------------------------------------------------------------
// V: validation before any store I/O; invalid input changes nothing.

/// V1: application names follow juju's rule; every operation refuses a bad one, unchanged.
pub async fn v1_application_names(store: &dyn Leadership, profile: &Profile) {
    let d = profile.min_duration;
    for bad in ["foo-2", "is-it-", "42also-not", "Foo", ""] {
        let unit = format!("{bad}/0");
        let what = format!("application {bad:?}");
        assert_invalid(
            store.claim_leadership(bad, &unit, d).await,
            is_invalid_application,
            &what,
        );
        assert_invalid(
            store.leadership_check(bad, &unit).check().await,
            is_invalid_application,
            &what,
        );
        assert_invalid(
            store.revoke_leadership(bad, &unit).await,
            is_invalid_application,
            &what,
        );
        assert_invalid(
            store.pin_leadership(bad, "e").await,
            is_invalid_application,
            &what,
        );
        assert_invalid(
            store.unpin_leadership(bad, "e").await,
            is_invalid_application,
            &what,
        );
        let block = store.block_until_leadership_released(bad, CancellationToken::new());
        assert_invalid(block.await, is_invalid_application, &what);
    }
    let mut expected = BTreeMap::new();
    for good in ["wordpress", "but-this-works", "foo42"] {
        let unit = format!("{good}/0");
        claim(store, good, &unit, long(profile)).await;
        expected.insert(good.to_owned(), unit);
    }
    assert_eq!(
        leaders(store).await,
        expected,
        "V1: only valid claims took effect"
    );
    assert!(
        pinned(store).await.is_empty(),
        "V1: invalid pins took effect"
    );
}

/// V2: unit names are `<application>/<n>` and belong to the application.
pub async fn v2_unit_names(store: &dyn Leadership, profile: &Profile) {
    let d = long(profile);
    for bad in [
        "foo/", "foo/01", "x/-1", "foo", "app/", "app/01", "app/-1", "mysql/0", "App/0", "",
    ] {
        let what = format!("unit {bad:?} of {APP:?}");
        assert_invalid(
            store.claim_leadership(APP, bad, d).await,
            is_invalid_unit,
            &what,
        );
        assert_invalid(
            store.leadership_check(APP, bad).check().await,
            is_invalid_unit,
            &what,
        );
        assert_invalid(
            store.revoke_leadership(APP, bad).await,
            is_invalid_unit,
            &what,
        );
    }
    let fence = claim(store, "rabbitmq-server", "rabbitmq-server/123", d).await;
    assert_leads(
        check(store, "rabbitmq-server", "rabbitmq-server/123").await,
        fence,
        "V2 valid unit",
    );
    // A unit of another application cannot revoke this one's lease either.
    assert_invalid(
        store.revoke_leadership("rabbitmq-server", "app/0").await,
        is_invalid_unit,
        "V2 revoke by a unit of another application",
    );
    let expected = BTreeMap::from([(
        "rabbitmq-server".to_owned(),
        "rabbitmq-server/123".to_owned(),
    )]);
    assert_eq!(
        leaders(store).await,
        expected,
        "V2: only the valid claim took effect"
    );
}

/// V3: durations are > 0 and at most the policy's maximum (1 hour by default).
pub async fn v3_durations(store: &dyn Leadership, _profile: &Profile) {
    let hour = crate::policy::DEFAULT_MAX_DURATION;
    for bad in [
        Duration::ZERO,
        hour + Duration::from_nanos(1),
        hour * 2,
        Duration::MAX,
    ] {
        let what = format!("duration {bad:?}");
        assert_invalid(
            store.claim_leadership(APP, A0, bad).await,
            is_invalid_duration,
            &what,
        );
    }
    assert!(
        leaders(store).await.is_empty(),
        "V3: an invalid claim took effect"
    );
    // The bounds themselves are valid: the maximum, and the smallest duration (rounded up).
    let fence = claim(store, APP, A0, hour).await;
    assert_leads(check(store, APP, A0).await, fence, "V3 maximum duration");
    // The holder's renewal is checked as strictly as a first claim (a store may give the
    // holder a faster path), and a refused one changes nothing.
    for bad in [Duration::ZERO, hour + Duration::from_nanos(1)] {
        let what = format!("the holder's renewal for {bad:?}");
        assert_invalid(
            store.claim_leadership(APP, A0, bad).await,
            is_invalid_duration,
            &what,
        );
    }
    assert_leads(
        check(store, APP, A0).await,
        fence,
        "V3: an invalid renewal changed nothing",
    );
    claim(store, "tiny", "tiny/0", Duration::from_nanos(1)).await;
    revoke(store, APP, A0).await;
}

/// V4: pin entities are non-empty, at most 256 bytes, without whitespace or control characters.
pub async fn v4_entities(store: &dyn Leadership, _profile: &Profile) {
    let too_long = "e".repeat(crate::policy::MAX_ENTITY_BYTES + 1);
    for bad in [
        "",
        too_long.as_str(),
        "a b",
        "tab\there",
        "new\nline",
        "bell\u{7}",
    ] {
        let what = format!("entity {bad:?}");
        assert_invalid(
            store.pin_leadership(APP, bad).await,
            is_invalid_entity,
            &what,
        );
        assert_invalid(
            store.unpin_leadership(APP, bad).await,
            is_invalid_entity,
            &what,
        );
    }
    assert!(
        pinned(store).await.is_empty(),
        "V4: an invalid pin took effect"
    );
    let longest = "e".repeat(crate::policy::MAX_ENTITY_BYTES);
    pin(store, APP, &longest).await;
    pin(store, APP, "machine-0").await;
    let expected = BTreeMap::from([(APP.to_owned(), vec![longest, "machine-0".to_owned()])]);
    assert_eq!(pinned(store).await, expected, "V4 valid entities");
}

/// V5: under a permissive policy, names with separators and escapes never collide, within a
/// namespace or across namespaces.
pub async fn v5_names_are_encoded_injectively(factory: &dyn StoreFactory) {
    let profile = factory.profile();
    let d = long(&profile);
    let policy: Arc<dyn Policy> = Arc::new(PermissivePolicy::default());
    let base = unique_namespace("v5");
    let store = factory.open_with_policy(&base, policy.clone()).await;
    // Near the permissive policy's 64 KiB bound, leaving room for the unit's ":unit{N}" suffix.
    let big = "x".repeat(64 * 1024 - 16);
    let names = [
        "a",
        "a:b",
        "a:b:c",
        "a::b",
        ":",
        "{a}",
        "a}{",
        "{",
        "}",
        "a/b",
        "a/",
        "/",
        "*",
        "a*",
        "%",
        "%3A",
        "%2F",
        "\\",
        "a\\:b",
        "ü",
        "∑/π",
        "a\nb",
        "a b",
        big.as_str(),
    ];
    let mut expected = BTreeMap::new();
    let mut fences = BTreeMap::new();
    for (i, app) in names.iter().enumerate() {
        let unit = format!("{app}:unit{{{i}}}");
        let fence = claim(&*store, app, &unit, d).await;
        fences.insert(app.to_string(), fence);
        expected.insert(app.to_string(), unit);
    }
    assert_eq!(
        leaders(&*store).await,
        expected,
        "V5: every name is its own application"
    );
    for (app, unit) in &expected {
        assert_leads(
            check(&*store, app, unit).await,
            fences[app],
            &format!("V5 check {app:?}"),
        );
        let other = format!("{unit}x");
        assert_not_leader(
            check(&*store, app, &other).await,
            &other,
            app,
            "V5 other unit",
        );
    }
    // Pins on look-alike names stay apart.
    pin(&*store, "a:b", "e-1").await;
    pin(&*store, "a", "b:e-1").await;
    let got = pinned(&*store).await;
    assert_eq!(got.get("a:b"), Some(&vec!["e-1".to_owned()]), "V5 pins");
    assert_eq!(got.get("a"), Some(&vec!["b:e-1".to_owned()]), "V5 pins");
    assert_eq!(got.len(), 2, "V5 pins: {got:?}");
    // Namespace + application look-alikes: ("<base>:a", "b") against ("<base>", "a:b").
    let other_ns = factory.open_with_policy(&format!("{base}:a"), policy).await;
    assert_not_leader(
        check(&*other_ns, "b", "a:b:c:unit{1}").await,
        "a:b:c:unit{1}",
        "b",
        "V5 cross-namespace",
    );
    claim(&*other_ns, "b", "intruder", d).await;
    assert_leads(
        check(&*store, "a:b", "a:b:unit{1}").await,
        fences["a:b"],
        "V5 cross-namespace claim",
    );
    assert_eq!(
        leaders(&*other_ns).await.len(),
        1,
        "V5: the other namespace sees only its own lease"
    );
}

// ---------------------------------------------------------------------------------------------
// C: claims

/// C1: a vacant application (never held, revoked, expired) is granted with a larger fence.
pub async fn c1_vacant_is_granted(store: &dyn Leadership, profile: &Profile) {
    let d = profile.min_duration;
    let first = claim(store, APP, A0, long(profile)).await;
    assert_leads(check(store, APP, A0).await, first, "C1 never held");
    revoke(store, APP, A0).await;
    let start = Instant::now();
    let second = claim(store, APP, A1, d).await;
    assert!(
        second > first,
        "C1: fence after revoke {second} not above {first}"
    );
    sleep(past_expiry(profile, start, d) - Instant::now()).await;
    let third = claim(store, APP, A2, long(profile)).await;
    assert!(
        third > second,
        "C1: fence after expiry {third} not above {second}"
    );
    assert_leads(check(store, APP, A2).await, third, "C1 after expiry");
}

/// C2: the holder's re-claim extends to max(old expiry, now + duration), keeping the fence.
pub async fn c2_extend_never_shortens(store: &dyn Leadership, profile: &Profile) {
    let d = profile.min_duration;
    // A shorter re-claim does not shorten.
    let start = Instant::now();
    let fence = claim(store, APP, A0, long(profile)).await;
    assert_eq!(
        claim(store, APP, A0, d).await,
        fence,
        "C2: extension changed the fence"
    );
    sleep(past_expiry(profile, start, d) - Instant::now()).await;
    assert_leads(
        check(store, APP, A0).await,
        fence,
        "C2: a shorter re-claim shortened the lease",
    );
    // A longer re-claim lengthens.
    let short_start = Instant::now();
    let other = claim(store, "other", "other/0", d).await;
    let extended = claim(store, "other", "other/0", long(profile)).await;
    assert_eq!(extended, other, "C2: extension changed the fence");
    sleep(past_expiry(profile, short_start, d) - Instant::now()).await;
    assert_leads(
        check(store, "other", "other/0").await,
        other,
        "C2: a longer re-claim did not extend",
    );
}

/// C3: another unit's claim on a held lease is denied and changes nothing.
pub async fn c3_other_claim_is_denied(store: &dyn Leadership, profile: &Profile) {
    let fence = claim(store, APP, A0, long(profile)).await;
    match store.claim_leadership(APP, A1, long(profile)).await {
        Err(Error::ClaimDenied) => {}
        other => panic!("C3: expected ClaimDenied, got {other:?}"),
    }
    assert_leads(check(store, APP, A0).await, fence, "C3 holder");
    assert_not_leader(check(store, APP, A1).await, A1, APP, "C3 denied unit");
    let expected = BTreeMap::from([(APP.to_owned(), A0.to_owned())]);
    assert_eq!(leaders(store).await, expected, "C3: leaders changed");
}

/// C4: after `Ok`, the unit leads for at least `duration` from when the call was made.
pub async fn c4_leader_for_at_least_duration(store: &dyn Leadership, profile: &Profile) {
    let d = profile.min_duration * 2;
    let start = Instant::now();
    let fence = claim(store, APP, A0, d).await;
    let deadline = start + d;
    let step = profile.min_duration / 10;
    let mut conclusive = 0;
    while Instant::now() < deadline {
        let result = check(store, APP, A0).await;
        // Only a check that answered before the deadline is held to the rule.
        if Instant::now() < deadline {
            assert_leads(result, fence, "C4: leadership ended before its duration");
            conclusive += 1;
        }
        sleep(step).await;
    }
    assert!(
        conclusive > 0,
        "C4: no check answered within the lease's duration"
    );
}

/// C5: an unpinned, unextended lease expires within the store's slack.
pub async fn c5_lease_expires(store: &dyn Leadership, profile: &Profile) {
    let d = profile.min_duration;
    let start = Instant::now();
    claim(store, APP, A0, d).await;
    sleep(past_expiry(profile, start, d) - Instant::now()).await;
    assert!(
        !leaders(store).await.contains_key(APP),
        "C5: expired lease still in leaders()"
    );
    assert_not_leader(
        check(store, APP, A0).await,
        A0,
        APP,
        "C5 check after expiry",
    );
    claim(store, APP, A1, long(profile)).await;
}

/// C6: of many units claiming a vacant application at once, exactly one wins.
pub async fn c6_one_winner_among_many(store: &dyn Leadership, profile: &Profile) {
    let units: Vec<String> = (0..16).map(|i| format!("{APP}/{i}")).collect();
    let claims = units
        .iter()
        .map(|unit| store.claim_leadership(APP, unit, long(profile)));
    let results = join_all(claims).await;
    let mut winners = Vec::new();
    for (unit, result) in units.iter().zip(results) {
        match result {
            Ok(_) => winners.push(unit.clone()),
            Err(Error::ClaimDenied) => {}
            Err(err) => panic!("C6: {unit} got {err}, expected Ok or ClaimDenied"),
        }
    }
    assert_eq!(winners.len(), 1, "C6: winners {winners:?}");
    let expected = BTreeMap::from([(APP.to_owned(), winners[0].clone())]);
    assert_eq!(leaders(store).await, expected, "C6 leaders");
}

// ---------------------------------------------------------------------------------------------
// K: checks

/// K1: a check is authoritative when called: the fence if leader, else `NotLeader`.
pub async fn k1_check_is_authoritative(store: &dyn Leadership, profile: &Profile) {
    assert_not_leader(check(store, APP, A0).await, A0, APP, "K1 vacant");
    let fence = claim(store, APP, A0, long(profile)).await;
    assert_leads(check(store, APP, A0).await, fence, "K1 holder");
    assert_not_leader(check(store, APP, A1).await, A1, APP, "K1 other unit");
    revoke(store, APP, A0).await;
    assert_not_leader(check(store, APP, A0).await, A0, APP, "K1 after revoke");
}

/// K2: one token can be checked many times and reflects the state at each check.
pub async fn k2_token_is_reusable(store: &dyn Leadership, profile: &Profile) {
    let token = store.leadership_check(APP, A0);
    assert_not_leader(token.check().await, A0, APP, "K2 before claim");
    let first = claim(store, APP, A0, long(profile)).await;
    assert_leads(token.check().await, first, "K2 after claim");
    assert_leads(token.check().await, first, "K2 again");
    revoke(store, APP, A0).await;
    assert_not_leader(token.check().await, A0, APP, "K2 after revoke");
    let second = claim(store, APP, A0, long(profile)).await;
    assert_leads(token.check().await, second, "K2 new term");
}

/// K3: the fence is the term's: extensions keep it, a new term changes it.
pub async fn k3_fence_changes_only_with_term(store: &dyn Leadership, profile: &Profile) {
    let fence = claim(store, APP, A0, long(profile)).await;
    for _ in 0..3 {
        assert_eq!(
            claim(store, APP, A0, long(profile)).await,
            fence,
            "K3 extension"
        );
        assert_leads(check(store, APP, A0).await, fence, "K3 after extension");
    }
    revoke(store, APP, A0).await;
    let next = claim(store, APP, A0, long(profile)).await;
    assert!(
        next > fence,
        "K3: new term's fence {next} not above {fence}"
    );
    assert_leads(check(store, APP, A0).await, next, "K3 new term");
}

// ---------------------------------------------------------------------------------------------
// R: revoke

/// R1: the holder's revoke ends the lease at once and releases waiters; the next claim by
/// anyone gets a larger fence.
pub async fn r1_holder_revoke_ends_lease(store: &dyn Leadership, profile: &Profile) {
    let fence = claim(store, APP, A0, long(profile)).await;
    let event = async {
        sleep(profile.notify_latency).await;
        let caused = Instant::now();
        revoke(store, APP, A0).await;
        caused
    };
    let released = block_during(store, APP, limit(profile), event).await;
    assert_released_in_time(released, profile.notify_latency, "R1 waiter");
    assert_not_leader(check(store, APP, A0).await, A0, APP, "R1 after revoke");
    assert!(
        leaders(store).await.is_empty(),
        "R1: revoked lease still in leaders()"
    );
    let next = claim(store, APP, A1, long(profile)).await;
    assert!(
        next > fence,
        "R1: fence after revoke {next} not above {fence}"
    );
}

/// R2: a non-holder's revoke of a held lease fails with `ClaimNotHeld` and changes nothing.
pub async fn r2_non_holder_revoke_is_refused(store: &dyn Leadership, profile: &Profile) {
    let fence = claim(store, APP, A0, long(profile)).await;
    match store.revoke_leadership(APP, A1).await {
        Err(Error::ClaimNotHeld) => {}
        other => panic!("R2: expected ClaimNotHeld, got {other:?}"),
    }
    assert_leads(check(store, APP, A0).await, fence, "R2 holder");
}

/// R3: revoking a vacant application is `Ok`.
pub async fn r3_revoke_vacant_is_ok(store: &dyn Leadership, profile: &Profile) {
    revoke(store, APP, A0).await;
    claim(store, APP, A0, long(profile)).await;
    revoke(store, APP, A0).await;
    revoke(store, APP, A0).await;
    revoke(store, APP, A1).await;
}

// ---------------------------------------------------------------------------------------------
// B: blocking until released

/// B1: a vacant application returns at once.
pub async fn b1_vacant_returns_at_once(store: &dyn Leadership, profile: &Profile) {
    for app in ["never-held", APP] {
        let started = Instant::now();
        let wait = store.block_until_leadership_released(app, CancellationToken::new());
        match timeout(profile.notify_latency, wait).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => panic!("B1: block on vacant {app} failed: {err}"),
            Err(_) => panic!("B1: block on vacant {app} did not return at once"),
        }
        assert!(started.elapsed() <= profile.notify_latency);
        claim(store, APP, A0, long(profile)).await;
        revoke(store, APP, A0).await;
    }
}

/// B2: a held application is released by revoke and by expiry, within the notification
/// latency; extensions keep it blocked.
pub async fn b2_released_on_revoke_and_expiry(store: &dyn Leadership, profile: &Profile) {
    let d = profile.min_duration;
    // Extensions keep the waiter blocked; the expiry of the last one releases it.
    claim(store, APP, A0, d).await;
    let event = async {
        let mut last_start = Instant::now();
        let until = Instant::now() + d * 3;
        while Instant::now() < until {
            sleep(d / 3).await;
            last_start = Instant::now();
            claim(store, APP, A0, d).await;
        }
        last_start + d
    };
    let released = block_during(store, APP, limit(profile), event).await;
    assert_released_in_time(
        released,
        profile.expiry_slack + profile.notify_latency,
        "B2 expiry after extensions",
    );
    // Revoke releases.
    claim(store, APP, A1, long(profile)).await;
    let event = async {
        sleep(profile.notify_latency).await;
        let caused = Instant::now();
        revoke(store, APP, A1).await;
        caused
    };
    let released = block_during(store, APP, limit(profile), event).await;
    assert_released_in_time(released, profile.notify_latency, "B2 revoke");
}

/// B3: the cancel token ends a wait with `BlockCancelled`; a dropped wait leaves the store
/// working.
pub async fn b3_cancel_ends_wait(store: &dyn Leadership, profile: &Profile) {
    claim(store, APP, A0, long(profile)).await;
    let cancel = CancellationToken::new();
    let wait = async {
        let outcome = store
            .block_until_leadership_released(APP, cancel.clone())
            .await;
        (outcome, Instant::now())
    };
    let fire = async {
        sleep(profile.notify_latency / 2).await;
        let caused = Instant::now();
        cancel.cancel();
        caused
    };
    let ((outcome, ended), caused) =
        match timeout(limit(profile), futures::future::join(wait, fire)).await {
            Ok(done) => done,
            Err(_) => panic!("B3: cancelled wait did not end"),
        };
    assert!(
        matches!(outcome, Err(Error::BlockCancelled)),
        "B3: got {outcome:?}"
    );
    assert!(
        ended >= caused && ended - caused <= profile.notify_latency,
        "B3: cancel not prompt"
    );
    // An already-cancelled token ends a wait at once.
    let cancelled = CancellationToken::new();
    cancelled.cancel();
    let outcome = timeout(
        profile.notify_latency,
        store.block_until_leadership_released(APP, cancelled),
    )
    .await;
    assert!(
        matches!(outcome, Ok(Err(Error::BlockCancelled))),
        "B3 pre-cancelled: {outcome:?}"
    );
    // Dropped waits (futures abandoned mid-wait) leave nothing that disturbs later ones.
    for _ in 0..50 {
        let wait = store.block_until_leadership_released(APP, CancellationToken::new());
        assert!(
            timeout(Duration::from_millis(5), wait).await.is_err(),
            "B3: held lease released"
        );
    }
    let event = async {
        sleep(profile.notify_latency).await;
        let caused = Instant::now();
        revoke(store, APP, A0).await;
        caused
    };
    let released = block_during(store, APP, limit(profile), event).await;
    assert_released_in_time(
        released,
        profile.notify_latency,
        "B3 waiter after dropped waits",
    );
}

/// B4: one revoke releases every waiter on that application (1,000) and none on others.
pub async fn b4_one_revoke_releases_every_waiter(store: &dyn Leadership, profile: &Profile) {
    claim(store, "busy", "busy/0", long(profile)).await;
    claim(store, "quiet", "quiet/0", long(profile)).await;
    let quiet_cancel = CancellationToken::new();
    let quiet = join_all(
        (0..10).map(|_| store.block_until_leadership_released("quiet", quiet_cancel.clone())),
    );
    let busy_and_revoke = async {
        let busy = async {
            let outcomes =
                join_all((0..1000).map(|_| {
                    store.block_until_leadership_released("busy", CancellationToken::new())
                }))
                .await;
            (outcomes, Instant::now())
        };
        let event = async {
            sleep(profile.notify_latency.max(Duration::from_millis(500))).await;
            let caused = Instant::now();
            revoke(store, "busy", "busy/0").await;
            caused
        };
        let ((outcomes, ended), caused) = futures::future::join(busy, event).await;
        // The quiet waiters are still blocked; now let them go.
        quiet_cancel.cancel();
        (outcomes, ended, caused)
    };
    let joined = timeout(
        limit(profile),
        futures::future::join(quiet, busy_and_revoke),
    )
    .await;
    let Ok((quiet_outcomes, (busy_outcomes, ended, caused))) = joined else {
        panic!("B4: waiters did not end");
    };
    let failed: Vec<_> = busy_outcomes.iter().filter(|o| o.is_err()).collect();
    assert!(
        failed.is_empty(),
        "B4: {} busy waiters failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        ended >= caused,
        "B4: busy waiters returned before the revoke"
    );
    let late = ended - caused;
    // Releasing 1,000 waiters may take a little longer than one.
    assert!(
        late <= profile.notify_latency * 3,
        "B4: last waiter released {late:?} after revoke"
    );
    for outcome in quiet_outcomes {
        assert!(
            matches!(outcome, Err(Error::BlockCancelled)),
            "B4: quiet waiter got {outcome:?}"
        );
    }
}

/// B5: a wait survives dropped store connections and never returns `Ok` because of an error.
pub async fn b5_wait_survives_dropped_connections(factory: &dyn StoreFactory) {
    let profile = factory.profile();
    let store = factory.open(&unique_namespace("b5")).await;
    claim(&*store, APP, A0, long(&profile) * 3).await;
    let event = async {
        sleep(profile.notify_latency).await;
        factory.drop_connections().await;
        sleep(profile.notify_latency * 2).await;
        let caused = Instant::now();
        // The revoke itself may meet a reconnecting client: retry until the store is back.
        let mut tries = 0;
        loop {
            match store.revoke_leadership(APP, A0).await {
                Ok(()) => break,
                Err(err) if err.is_retryable() && tries < 50 => {
                    tries += 1;
                    sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("B5: revoke after dropped connections failed: {err}"),
            }
        }
        caused
    };
    let released = block_during(&*store, APP, limit(&profile) * 2, event).await;
    // Reconnecting may add to the latency: allow the revoke's retries on top.
    assert_released_in_time(
        released,
        profile.notify_latency * 2 + Duration::from_secs(5),
        "B5",
    );
}

// ---------------------------------------------------------------------------------------------
// P: pins

/// P1: a pinned lease does not expire.
pub async fn p1_pinned_lease_does_not_expire(store: &dyn Leadership, profile: &Profile) {
    let d = profile.min_duration;
    let start = Instant::now();
    let fence = claim(store, APP, A0, d).await;
    pin(store, APP, "machine-0").await;
    sleep(past_expiry(profile, start, d) + d - Instant::now()).await;
    assert_leads(check(store, APP, A0).await, fence, "P1 pinned past expiry");
    assert!(
        leaders(store).await.contains_key(APP),
        "P1: pinned lease missing from leaders()"
    );
    assert!(
        matches!(
            store.claim_leadership(APP, A1, d).await,
            Err(Error::ClaimDenied)
        ),
        "P1: another unit took a pinned lease"
    );
}

/// P2: pins are per entity and idempotent; unpinning without a pin is `Ok`.
pub async fn p2_pins_are_per_entity_and_idempotent(store: &dyn Leadership, _profile: &Profile) {
    pin(store, APP, "e1").await;
    pin(store, APP, "e1").await;
    pin(store, APP, "e2").await;
    let both = BTreeMap::from([(APP.to_owned(), vec!["e1".to_owned(), "e2".to_owned()])]);
    assert_eq!(pinned(store).await, both, "P2 two entities");
    unpin(store, APP, "e1").await;
    let one = BTreeMap::from([(APP.to_owned(), vec!["e2".to_owned()])]);
    assert_eq!(pinned(store).await, one, "P2 one unpinned");
    unpin(store, APP, "e1").await;
    unpin(store, APP, "never-pinned").await;
    unpin(store, "other", "e2").await;
    assert_eq!(
        pinned(store).await,
        one,
        "P2 unpins without pins changed something"
    );
    unpin(store, APP, "e2").await;
    assert!(pinned(store).await.is_empty(), "P2 all unpinned");
}

/// P3: when the last pin goes, the lease ends at its claimed expiry, at once if it passed.
pub async fn p3_expiry_resumes_on_last_unpin(store: &dyn Leadership, profile: &Profile) {
    let d = profile.min_duration;
    // Expiry has passed while pinned: the last unpin ends the lease at once.
    let start = Instant::now();
    let fence = claim(store, APP, A0, d).await;
    pin(store, APP, "e1").await;
    pin(store, APP, "e2").await;
    sleep(past_expiry(profile, start, d) - Instant::now()).await;
    unpin(store, APP, "e1").await;
    assert_leads(check(store, APP, A0).await, fence, "P3 still pinned by e2");
    let event = async {
        let caused = Instant::now();
        unpin(store, APP, "e2").await;
        caused
    };
    let released = block_during(store, APP, limit(profile), event).await;
    assert_released_in_time(
        released,
        profile.expiry_slack + profile.notify_latency,
        "P3 unpin",
    );
    assert_not_leader(check(store, APP, A0).await, A0, APP, "P3 after last unpin");
    // Expiry not yet passed: the lease lasts until its claimed expiry, then ends.
    let start = Instant::now();
    let d_long = long(profile);
    let fence = claim(store, "later", "later/0", d_long).await;
    pin(store, "later", "e").await;
    unpin(store, "later", "e").await;
    assert_leads(
        check(store, "later", "later/0").await,
        fence,
        "P3 unpinned before expiry",
    );
    sleep(past_expiry(profile, start, d_long) - Instant::now()).await;
    assert_not_leader(
        check(store, "later", "later/0").await,
        "later/0",
        "later",
        "P3 expired",
    );
}

/// P4: a pin on a vacant application is kept and applies to the next claimant's lease.
pub async fn p4_pin_on_vacant_applies_to_next_claimant(store: &dyn Leadership, profile: &Profile) {
    let d = profile.min_duration;
    pin(store, APP, "e").await;
    let expected = BTreeMap::from([(APP.to_owned(), vec!["e".to_owned()])]);
    assert_eq!(pinned(store).await, expected, "P4 pin on vacant kept");
    let start = Instant::now();
    let fence = claim(store, APP, A0, d).await;
    sleep(past_expiry(profile, start, d) + d - Instant::now()).await;
    assert_leads(
        check(store, APP, A0).await,
        fence,
        "P4 next claimant pinned",
    );
}

/// P5: `pinned_leadership()` maps each application to its sorted entities.
pub async fn p5_pinned_map_is_sorted(store: &dyn Leadership, _profile: &Profile) {
    for entity in ["e-c", "e-a", "e-b"] {
        pin(store, "app-b", entity).await;
    }
    pin(store, "app-a", "e-z").await;
    let expected = BTreeMap::from([
        ("app-a".to_owned(), vec!["e-z".to_owned()]),
        (
            "app-b".to_owned(),
            vec!["e-a".to_owned(), "e-b".to_owned(), "e-c".to_owned()],
        ),
    ]);
    assert_eq!(pinned(store).await, expected, "P5");
}

/// P6: the holder can extend and revoke a pinned lease; revoke keeps the pins.
pub async fn p6_holder_extends_and_revokes_pinned_lease(store: &dyn Leadership, profile: &Profile) {
    let d = profile.min_duration;
    let fence = claim(store, APP, A0, d).await;
    pin(store, APP, "e").await;
    assert_eq!(
        claim(store, APP, A0, long(profile)).await,
        fence,
        "P6 extend pinned"
    );
    assert!(
        matches!(
            store.claim_leadership(APP, A1, d).await,
            Err(Error::ClaimDenied)
        ),
        "P6: another unit took a pinned lease"
    );
    revoke(store, APP, A0).await;
    assert_not_leader(check(store, APP, A0).await, A0, APP, "P6 after revoke");
    let expected = BTreeMap::from([(APP.to_owned(), vec!["e".to_owned()])]);
    assert_eq!(pinned(store).await, expected, "P6 revoke dropped the pins");
    let start = Instant::now();
    let next = claim(store, APP, A1, d).await;
    assert!(next > fence, "P6: fence {next} not above {fence}");
    sleep(past_expiry(profile, start, d) - Instant::now()).await;
    assert_leads(
        check(store, APP, A1).await,
        next,
        "P6 next term still pinned",
    );
}

// ---------------------------------------------------------------------------------------------
// L, N, F, E

/// L1: `leaders()` is a snapshot of every held lease: pinned included, expired and revoked not.
pub async fn l1_leaders_is_a_snapshot(store: &dyn Leadership, profile: &Profile) {
    let d = profile.min_duration;
    let start = Instant::now();
    claim(store, "held", "held/0", long(profile)).await;
    claim(store, "pinned", "pinned/3", d).await;
    pin(store, "pinned", "e").await;
    claim(store, "gone", "gone/1", d).await;
    claim(store, "revoked", "revoked/0", long(profile)).await;
    revoke(store, "revoked", "revoked/0").await;
    sleep(past_expiry(profile, start, d) - Instant::now()).await;
    let expected = BTreeMap::from([
        ("held".to_owned(), "held/0".to_owned()),
        ("pinned".to_owned(), "pinned/3".to_owned()),
    ]);
    assert_eq!(leaders(store).await, expected, "L1");
}

/// N1: two namespaces over one store share nothing: claims, checks, pins, leaders, blocks.
pub async fn n1_namespaces_share_nothing(factory: &dyn StoreFactory) {
    let profile = factory.profile();
    let a = factory.open(&unique_namespace("n1a")).await;
    let b = factory.open(&unique_namespace("n1b")).await;
    let (a, b) = (&*a, &*b);
    let fa = claim(a, APP, A0, long(&profile)).await;
    let fb = claim(b, APP, A1, long(&profile)).await;
    assert_leads(check(a, APP, A0).await, fa, "N1 a holder");
    assert_not_leader(check(a, APP, A1).await, A1, APP, "N1 b's holder in a");
    assert_leads(check(b, APP, A1).await, fb, "N1 b holder");
    assert_not_leader(check(b, APP, A0).await, A0, APP, "N1 a's holder in b");
    claim(a, "only-a", "only-a/0", long(&profile)).await;
    pin(a, "only-a", "e").await;
    assert_eq!(leaders(a).await.len(), 2, "N1 a leaders");
    let expected_b = BTreeMap::from([(APP.to_owned(), A1.to_owned())]);
    assert_eq!(leaders(b).await, expected_b, "N1 b leaders");
    assert!(pinned(b).await.is_empty(), "N1: a's pin visible in b");
    // A block in b on an application held only in a returns at once.
    let wait = b.block_until_leadership_released("only-a", CancellationToken::new());
    assert!(
        matches!(timeout(profile.notify_latency, wait).await, Ok(Ok(()))),
        "N1 block in b"
    );
    // A revoke in a does not release a waiter in b.
    let event = async {
        revoke(a, APP, A0).await;
        sleep(profile.notify_latency).await;
        let caused = Instant::now();
        revoke(b, APP, A1).await;
        caused
    };
    let released = block_during(b, APP, limit(&profile), event).await;
    assert_released_in_time(released, profile.notify_latency, "N1 waiter in b");
}

/// F1: fences strictly increase per application across terms.
pub async fn f1_fences_strictly_increase(store: &dyn Leadership, profile: &Profile) {
    let d = profile.min_duration;
    let mut fences = Vec::new();
    for (i, unit) in [A0, A1, A0, A2, A1].iter().enumerate() {
        fences.push(claim(store, APP, unit, long(profile)).await);
        revoke(store, APP, unit).await;
        // An unrelated application's terms do not disturb this one's order.
        claim(store, "other", &format!("other/{i}"), long(profile)).await;
        revoke(store, "other", &format!("other/{i}")).await;
    }
    let start = Instant::now();
    fences.push(claim(store, APP, A2, d).await);
    sleep(past_expiry(profile, start, d) - Instant::now()).await;
    fences.push(claim(store, APP, A0, long(profile)).await);
    for pair in fences.windows(2) {
        assert!(
            pair[1] > pair[0],
            "F1: fences not strictly increasing: {fences:?}"
        );
    }
}

/// E2: retrying a claim (as after a timeout) is safe: same holder, same fence.
pub async fn e2_retried_claim_is_idempotent(store: &dyn Leadership, profile: &Profile) {
    let d = long(profile);
    let first = claim(store, APP, A0, d).await;
    let retries = join_all((0..4).map(|_| store.claim_leadership(APP, A0, d))).await;
    for retry in retries {
        match retry {
            Ok(fence) => assert_eq!(fence, first, "E2: a retry changed the fence"),
            Err(err) => panic!("E2: a retry failed: {err}"),
        }
    }
    assert_leads(check(store, APP, A0).await, first, "E2 after retries");
}
