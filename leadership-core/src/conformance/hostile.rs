//! Hostile input against any store, as property tests (proptest) and edge cases: part of the
//! public conformance suite, so a third-party store runs them too
//! ([`conformance_tests!`](crate::conformance_tests) generates one test per function, in a
//! module `hostile`, with [`StoreFactory::hostile_cases`] random inputs). Every function takes
//! a maker of the store's [`StoreFactory`], called inside the runtime the cases run on.
//!
//! - [`rejected_input_changes_nothing`] (V1–V4): random names, units, entities and durations
//!   through every operation under juju's policy: what the policy rejects, the store rejects
//!   with the same `Invalid*` variant, and leaders, pins and the held lease's fence are as
//!   before. What the policy accepts is never refused as invalid.
//! - [`permissive_names_round_trip`] (V5): names full of `:`, `{`, `}`, `/`, `*`, `%`, NUL and
//!   unicode, including look-alike pairs (`a:b` + `c` against `a` + `b:c`), under a
//!   permissive policy: every claim, check, pin and `leaders()` agrees with a model.
//! - [`namespaces_never_collide`] (N1, V5): look-alike namespace + application pairs.
//! - [`largest_names`] (V5): 64 KiB names, differing only in their last byte.
//! - [`duration_edges`] (V3): 1 ns, the maximum, the maximum + 1 ns, `Duration::MAX`;
//!   [`huge_durations`]: under a policy without a bound, huge durations never panic nor wrap
//!   around.
//!
//! Each function returns how many inputs it tried, for the summary line.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{StoreFactory, unique_namespace};
use crate::policy::DEFAULT_MAX_DURATION;
use crate::{
    CancellationToken, Error, Fence, JujuPolicy, Leadership, PermissivePolicy, Policy, Result,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// A maker of the store's factory, called inside the cases' runtime.
pub type MakeFactory =
    fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Arc<dyn StoreFactory>> + Send>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        // Shrinking runs store calls too; keep it bounded.
        max_shrink_iters: 256,
        ..Config::default()
    })
}

/// Application-like names: juju-valid ones, near misses, separators, unicode, anything.
fn application() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z][a-z0-9]{0,6}(-[a-z0-9]{0,2}[a-z][a-z0-9]{0,2}){0,2}",
        1 => Just("held".to_owned()),
        2 => "[a-zA-Z0-9:{}/*%_. -]{0,12}",
        1 => "[a-z]{1,4}-[0-9]{1,3}",
        1 => "\\PC{0,8}",
        1 => any::<String>(),
    ]
}

/// Unit-like names, mostly `<application>/<n>` with good and bad numbers.
fn unit(application: String) -> impl Strategy<Value = String> {
    let number = prop_oneof![
        "0|[1-9][0-9]{0,3}",
        Just("01".to_owned()),
        Just("-1".to_owned()),
        Just(String::new()),
        "[a-z0-9/]{1,3}",
    ];
    prop_oneof![
        4 => number.prop_map(move |n| format!("{application}/{n}")),
        1 => Just("held/0".to_owned()),
        1 => application_then_number(),
        1 => any::<String>(),
    ]
}

fn application_then_number() -> impl Strategy<Value = String> {
    (application(), 0u32..20).prop_map(|(a, n)| format!("{a}/{n}"))
}

fn entity() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9:/-]{1,16}",
        1 => Just(String::new()),
        1 => Just("e".repeat(256)),
        1 => Just("e".repeat(257)),
        1 => "[a-z]{0,3}[ \t\n\u{7}\u{0}][a-z]{0,3}",
        1 => "\\PC{1,8}",
        1 => any::<String>(),
    ]
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(DEFAULT_MAX_DURATION),
        Just(DEFAULT_MAX_DURATION + Duration::from_nanos(1)),
        Just(Duration::MAX),
        (1u64..=7_200_000).prop_map(Duration::from_millis),
        any::<u64>().prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// One operation of the contract with its (maybe hostile) arguments.
#[derive(Debug, Clone)]
enum Op {
    Claim(String, String, Duration),
    Check(String, String),
    Revoke(String, String),
    Pin(String, String),
    Unpin(String, String),
    Block(String),
}

fn member() -> impl Strategy<Value = (String, String)> {
    application().prop_flat_map(|a| (Just(a.clone()), unit(a)))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (member(), duration()).prop_map(|((a, u), d)| Op::Claim(a, u, d)),
        member().prop_map(|(a, u)| Op::Check(a, u)),
        member().prop_map(|(a, u)| Op::Revoke(a, u)),
        (application(), entity()).prop_map(|(a, e)| Op::Pin(a, e)),
        (application(), entity()).prop_map(|(a, e)| Op::Unpin(a, e)),
        application().prop_map(Op::Block),
    ]
}

impl Op {
    /// What the policy says about the arguments.
    fn validate(&self, policy: &dyn Policy) -> Result<()> {
        match self {
            Op::Claim(a, u, d) => policy.check_claim(a, u, *d),
            Op::Check(a, u) | Op::Revoke(a, u) => policy.check_member(a, u),
            Op::Pin(a, e) | Op::Unpin(a, e) => policy.check_pin(a, e),
            Op::Block(a) => policy.check_application(a),
        }
    }

    async fn run(&self, store: &dyn Leadership) -> Result<()> {
        match self {
            Op::Claim(a, u, d) => store.claim_leadership(a, u, *d).await.map(drop),
            Op::Check(a, u) => store.leadership_check(a, u).check().await.map(drop),
            Op::Revoke(a, u) => store.revoke_leadership(a, u).await,
            Op::Pin(a, e) => store.pin_leadership(a, e).await,
            Op::Unpin(a, e) => store.unpin_leadership(a, e).await,
            Op::Block(a) => {
                // Cancelled shortly after: a held application must not block the case.
                let cancel = CancellationToken::new();
                let later = cancel.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    later.cancel();
                });
                match store.block_until_leadership_released(a, cancel).await {
                    Err(Error::BlockCancelled) => Ok(()),
                    other => other,
                }
            }
        }
    }
}

/// What a namespace holds: leaders, pins and the fence of the held lease.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    leaders: BTreeMap<String, String>,
    pinned: BTreeMap<String, Vec<String>>,
    held: Result<Fence, String>,
}

async fn snapshot(store: &dyn Leadership) -> Snapshot {
    Snapshot {
        leaders: store.leaders().await.expect("leaders"),
        pinned: store.pinned_leadership().await.expect("pinned"),
        held: store
            .leadership_check("held", "held/0")
            .check()
            .await
            .map_err(|e| e.to_string()),
    }
}

fn fail(message: String) -> TestCaseError {
    TestCaseError::fail(message)
}

/// V1–V4 over random input: a rejected operation gets the policy's `Invalid*` variant and
/// changes nothing; an accepted one is never refused as invalid. Returns inputs tried.
pub fn rejected_input_changes_nothing(make: MakeFactory, cases: u32) -> usize {
    let rt = runtime();
    let _enter = rt.enter();
    let factory = rt.block_on(make());
    let policy = JujuPolicy::default();
    let tried = std::sync::atomic::AtomicUsize::new(0);
    let rejected = std::sync::atomic::AtomicUsize::new(0);
    let result = runner(cases).run(&op(), |op| {
        tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(async {
            let store = factory.open(&unique_namespace("hostile-v")).await;
            store
                .claim_leadership("held", "held/0", Duration::from_secs(3600))
                .await
                .map_err(|e| fail(format!("setup claim: {e}")))?;
            store
                .pin_leadership("held", "machine-0")
                .await
                .map_err(|e| fail(format!("setup pin: {e}")))?;
            let before = snapshot(&*store).await;
            let expected = op.validate(&policy);
            let got = tokio::time::timeout(Duration::from_secs(10), op.run(&*store))
                .await
                .map_err(|_| fail(format!("{op:?} hung")))?;
            match (&expected, &got) {
                (Err(want), Err(err)) => {
                    rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if std::mem::discriminant(want) != std::mem::discriminant(err) {
                        return Err(fail(format!(
                            "{op:?}: the policy says {want}, the store said {err}"
                        )));
                    }
                    let after = snapshot(&*store).await;
                    if after != before {
                        return Err(fail(format!(
                            "{op:?} was rejected ({err}) but changed the store: \
                             {before:?} -> {after:?}"
                        )));
                    }
                }
                (Err(want), Ok(())) => {
                    return Err(fail(format!(
                        "{op:?}: the policy says {want}, the store said Ok"
                    )));
                }
                (Ok(()), Err(err)) if err.is_invalid_input() => {
                    return Err(fail(format!(
                        "{op:?}: the policy accepts it, the store said {err}"
                    )));
                }
                (Ok(()), Err(err)) if !is_contract_outcome(err) => {
                    return Err(fail(format!("{op:?}: unexpected error {err}")));
                }
                _ => {}
            }
            Ok(())
        })
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    let tried = tried.into_inner();
    println!(
        "hostile: rejected_input_changes_nothing tried {tried} operations ({} rejected)",
        rejected.into_inner()
    );
    tried
}

/// Errors a valid operation may legitimately return.
fn is_contract_outcome(err: &Error) -> bool {
    matches!(
        err,
        Error::ClaimDenied | Error::ClaimNotHeld | Error::NotLeader { .. }
    )
}

/// Names for the permissive policy: short, from an alphabet of separators and escapes, so
/// that look-alikes and exact repeats are frequent.
fn permissive_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ab:{}/*%\\\\ü∑\u{0}]{1,5}",
        1 => "\\PC{1,6}",
    ]
}

/// A claim made under the permissive policy, possibly a look-alike of another.
#[derive(Debug, Clone)]
struct Claim {
    application: String,
    unit: String,
    entity: Option<String>,
}

fn claims() -> impl Strategy<Value = Vec<Claim>> {
    let separator = prop_oneof![
        Just(":"),
        Just("{"),
        Just("}"),
        Just("/"),
        Just("*"),
        Just("%"),
        Just("\u{0}"),
        Just("")
    ];
    let plain = (
        permissive_name(),
        permissive_name(),
        proptest::option::of("[a-z0-9:{}/*%ü]{1,6}"),
    )
        .prop_map(|(application, unit, entity)| {
            vec![Claim {
                application,
                unit,
                entity,
            }]
        });
    // `x<sep>y` + `z` against `x` + `y<sep>z`, for the application/unit and application/entity
    // boundaries.
    let look_alike = (
        permissive_name(),
        permissive_name(),
        permissive_name(),
        separator,
    )
        .prop_map(|(x, y, z, sep)| {
            vec![
                Claim {
                    application: format!("{x}{sep}{y}"),
                    unit: z.clone(),
                    entity: Some(pin_safe(&format!("e{z}"))),
                },
                Claim {
                    application: x.clone(),
                    unit: format!("{y}{sep}{z}"),
                    entity: Some(pin_safe(&format!("{y}{sep}e{z}"))),
                },
            ]
        });
    proptest::collection::vec(prop_oneof![2 => plain, 1 => look_alike], 1..5)
        .prop_map(|groups| groups.into_iter().flatten().collect())
}

/// `s` with the characters pin entities may not hold (V4) replaced by `_`: names may hold
/// NUL under the permissive policy, entities never.
fn pin_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// V5 over random names: every claim, check, pin and `leaders()` agrees with a model of
/// independent applications. Returns inputs tried (claims).
pub fn permissive_names_round_trip(make: MakeFactory, cases: u32) -> usize {
    let rt = runtime();
    let _enter = rt.enter();
    let factory = rt.block_on(make());
    let tried = std::sync::atomic::AtomicUsize::new(0);
    let policy: Arc<dyn Policy> = Arc::new(PermissivePolicy::default());
    let result = runner(cases).run(&claims(), |claims| {
        tried.fetch_add(claims.len(), std::sync::atomic::Ordering::Relaxed);
        rt.block_on(async {
            let store = factory
                .open_with_policy(&unique_namespace("hostile-v5"), policy.clone())
                .await;
            let mut leaders: BTreeMap<String, (String, Fence)> = BTreeMap::new();
            let mut pins: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for claim in &claims {
                let (app, unit) = (&claim.application, &claim.unit);
                let got = store
                    .claim_leadership(app, unit, Duration::from_secs(3600))
                    .await;
                match (leaders.get(app), got) {
                    (None, Ok(fence)) => {
                        leaders.insert(app.clone(), (unit.clone(), fence));
                    }
                    (Some((holder, held)), Ok(fence)) if holder == unit && *held == fence => {}
                    (Some((holder, _)), Err(Error::ClaimDenied)) if holder != unit => {}
                    (model, got) => {
                        return Err(fail(format!(
                            "claim({app:?}, {unit:?}): model {model:?}, store {got:?}"
                        )));
                    }
                }
                if let Some(entity) = &claim.entity {
                    store
                        .pin_leadership(app, entity)
                        .await
                        .map_err(|e| fail(format!("pin({app:?}, {entity:?}): {e}")))?;
                    let list = pins.entry(app.clone()).or_default();
                    list.push(entity.clone());
                    list.sort();
                    list.dedup();
                }
            }
            let want: BTreeMap<String, String> = leaders
                .iter()
                .map(|(a, (u, _))| (a.clone(), u.clone()))
                .collect();
            let got = store.leaders().await.map_err(|e| fail(e.to_string()))?;
            prop_assert_eq!(&got, &want, "leaders()");
            let got = store
                .pinned_leadership()
                .await
                .map_err(|e| fail(e.to_string()))?;
            prop_assert_eq!(&got, &pins, "pinned_leadership()");
            for claim in &claims {
                let (app, unit) = (&claim.application, &claim.unit);
                let got = store.leadership_check(app, unit).check().await;
                match (&leaders[app], got) {
                    ((holder, held), Ok(fence)) if holder == unit && *held == fence => {}
                    (
                        (holder, _),
                        Err(Error::NotLeader {
                            unit: u,
                            application: a,
                        }),
                    ) if holder != unit && &u == unit && &a == app => {}
                    (model, got) => {
                        return Err(fail(format!(
                            "check({app:?}, {unit:?}): model {model:?}, store {got:?}"
                        )));
                    }
                }
            }
            // Revoking as each holder empties the namespace's leases; the pins stay (P6).
            for (app, (unit, _)) in &leaders {
                store
                    .revoke_leadership(app, unit)
                    .await
                    .map_err(|e| fail(format!("revoke({app:?}, {unit:?}): {e}")))?;
            }
            let got = store.leaders().await.map_err(|e| fail(e.to_string()))?;
            prop_assert!(got.is_empty(), "leaders after revoking all: {got:?}");
            Ok(())
        })
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    let tried = tried.into_inner();
    println!("hostile: permissive_names_round_trip tried {tried} claims");
    tried
}

/// N1 with look-alike namespaces: (`p<sep>q`, `r`) against (`p`, `q<sep>r`); a claim in one
/// is invisible in the other. Returns inputs tried.
pub fn namespaces_never_collide(make: MakeFactory, cases: u32) -> usize {
    let rt = runtime();
    let _enter = rt.enter();
    let factory = rt.block_on(make());
    let tried = std::sync::atomic::AtomicUsize::new(0);
    let policy: Arc<dyn Policy> = Arc::new(PermissivePolicy::default());
    let strategy = (
        "[a-z:{}/*%]{1,4}",
        "[a-z:{}/*%]{1,4}",
        "[a-z:{}/*%]{1,4}",
        prop_oneof![Just(":"), Just("{"), Just("}"), Just("/"), Just("%")],
    );
    let result = runner(cases).run(&strategy, |(p, q, r, sep)| {
        tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(async {
            let base = unique_namespace("hostile-n1");
            let first = factory
                .open_with_policy(&format!("{base}{p}{sep}{q}"), policy.clone())
                .await;
            let second = factory
                .open_with_policy(&format!("{base}{p}"), policy.clone())
                .await;
            let app2 = format!("{q}{sep}{r}");
            let hour = Duration::from_secs(3600);
            first
                .claim_leadership(&r, "one/0", hour)
                .await
                .map_err(|e| fail(format!("claim in the first namespace: {e}")))?;
            let got = second.claim_leadership(&app2, "two/0", hour).await;
            prop_assert!(got.is_ok(), "claim in the second namespace: {:?}", got);
            first
                .pin_leadership(&r, "pin-1")
                .await
                .map_err(|e| fail(e.to_string()))?;
            let one = first.leaders().await.map_err(|e| fail(e.to_string()))?;
            let two = second.leaders().await.map_err(|e| fail(e.to_string()))?;
            prop_assert_eq!(one, BTreeMap::from([(r.clone(), "one/0".to_owned())]));
            prop_assert_eq!(two, BTreeMap::from([(app2.clone(), "two/0".to_owned())]));
            let pinned = second
                .pinned_leadership()
                .await
                .map_err(|e| fail(e.to_string()))?;
            prop_assert!(pinned.is_empty(), "pins leaked: {:?}", pinned);
            let check = second.leadership_check(&r, "one/0").check().await;
            prop_assert!(
                matches!(check, Err(Error::NotLeader { .. })),
                "check across namespaces: {:?}",
                check
            );
            Ok(())
        })
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    let tried = tried.into_inner();
    println!("hostile: namespaces_never_collide tried {tried} namespace pairs");
    tried
}

/// V5 at the size bound: applications and units of exactly 64 KiB that differ only in their
/// last byte are distinct; one byte more is `Invalid*` and changes nothing.
pub fn largest_names(make: MakeFactory) -> usize {
    let rt = runtime();
    rt.block_on(async {
        let factory = make().await;
        let policy: Arc<dyn Policy> = Arc::new(PermissivePolicy::default());
        let store = factory
            .open_with_policy(&unique_namespace("hostile-big"), policy)
            .await;
        let max = 64 * 1024;
        let mut stem = String::new();
        for c in "ü:{}/*%".chars().cycle() {
            if stem.len() + c.len_utf8() > max - 1 {
                break;
            }
            stem.push(c);
        }
        while stem.len() < max - 1 {
            stem.push('x');
        }
        let name = |last: char| format!("{stem}{last}");
        let (a, b) = (name('a'), name('b'));
        assert_eq!(a.len(), max);
        let hour = Duration::from_secs(3600);
        let fa = store
            .claim_leadership(&a, &a, hour)
            .await
            .expect("64 KiB claim");
        let fb = store
            .claim_leadership(&b, &b, hour)
            .await
            .expect("64 KiB claim");
        assert!(matches!(
            store.claim_leadership(&a, &b, hour).await,
            Err(Error::ClaimDenied)
        ));
        assert_eq!(
            store.leadership_check(&a, &a).check().await.expect("check"),
            fa
        );
        assert_eq!(
            store.leadership_check(&b, &b).check().await.expect("check"),
            fb
        );
        assert!(
            store
                .leadership_check(&a, &b)
                .check()
                .await
                .unwrap_err()
                .is_not_leader()
        );
        let leaders = store.leaders().await.expect("leaders");
        assert_eq!(
            leaders,
            BTreeMap::from([(a.clone(), a.clone()), (b.clone(), b.clone())])
        );
        let too_big = format!("{a}x");
        let err = store
            .claim_leadership(&too_big, &a, hour)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidApplication { .. }), "{err}");
        let err = store
            .claim_leadership(&a, &too_big, hour)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidUnit { .. }), "{err}");
        assert_eq!(store.leaders().await.expect("leaders"), leaders);
        store.revoke_leadership(&a, &a).await.expect("revoke");
        store.revoke_leadership(&b, &b).await.expect("revoke");
    });
    println!("hostile: largest_names tried 4 names of 64 KiB and 2 of 64 KiB + 1");
    6
}

/// A policy with juju's names and no bound on durations, to reach the store with the
/// largest ones.
#[derive(Debug)]
struct Unbounded;

impl Policy for Unbounded {
    fn check_application(&self, application: &str) -> Result<()> {
        JujuPolicy::default().check_application(application)
    }
    fn check_unit(&self, application: &str, unit: &str) -> Result<()> {
        JujuPolicy::default().check_unit(application, unit)
    }
    fn application_of(&self, unit: &str) -> Result<String> {
        JujuPolicy::default().application_of(unit)
    }
    fn check_duration(&self, duration: Duration) -> Result<()> {
        if duration.is_zero() {
            return JujuPolicy::default().check_duration(duration);
        }
        Ok(())
    }
    fn check_entity(&self, entity: &str) -> Result<()> {
        JujuPolicy::default().check_entity(entity)
    }
}

/// V3 at the edges under juju's policy: 1 ns and the maximum are granted (1 ns rounds up to
/// the store's granularity and then expires), the maximum + 1 ns and `Duration::MAX` are
/// `InvalidDuration`. Returns inputs tried.
pub fn duration_edges(make: MakeFactory) -> usize {
    let rt = runtime();
    let _enter = rt.enter();
    let factory = rt.block_on(make());
    let profile = factory.profile();
    rt.block_on(async {
        let store = factory.open(&unique_namespace("hostile-d")).await;
        let max = DEFAULT_MAX_DURATION;
        for (app, d) in [("one", Duration::from_nanos(1)), ("max", max)] {
            let unit = format!("{app}/0");
            store
                .claim_leadership(app, &unit, d)
                .await
                .unwrap_or_else(|e| panic!("{d:?}: {e}"));
        }
        for d in [
            max + Duration::from_nanos(1),
            Duration::MAX,
            Duration::new(u64::MAX, 0),
        ] {
            let err = store
                .claim_leadership("over", "over/0", d)
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::InvalidDuration { duration, .. } if duration == d),
                "{d:?}: {err}"
            );
        }
        // The 1 ns lease ends within the store's granularity and slack.
        let give_up = tokio::time::Instant::now() + profile.min_duration + profile.expiry_slack;
        loop {
            let leaders = store.leaders().await.expect("leaders");
            if !leaders.contains_key("one") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "a 1 ns lease is still held: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            store.leaders().await.expect("leaders"),
            BTreeMap::from([("max".to_owned(), "max/0".to_owned())])
        );
    });

    println!("hostile: duration_edges tried 5 durations under juju's policy");
    5
}

/// V3 beyond the default bound: under a policy without a maximum, huge durations never panic
/// nor wrap around: a granted lease is held right after, and the holder's 1 ns re-claim keeps
/// it (C2); a store that caps durations itself says so with `InvalidDuration`. Returns inputs
/// tried.
pub fn huge_durations(make: MakeFactory, cases: u32) -> usize {
    let rt = runtime();
    let _enter = rt.enter();
    let factory = rt.block_on(make());
    let tried = std::sync::atomic::AtomicUsize::new(0);
    let huge = prop_oneof![
        Just(Duration::MAX),
        Just(Duration::new(u64::MAX, 0)),
        Just(Duration::from_nanos(u64::MAX)),
        Just(Duration::from_millis(u64::MAX)),
        Just(Duration::from_secs(i64::MAX as u64)),
        (10u64..u64::MAX).prop_map(Duration::from_secs),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s.max(10), n)),
    ];
    let policy: Arc<dyn Policy> = Arc::new(Unbounded);
    let result = runner(cases).run(&huge, |d| {
        tried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(async {
            let store = factory
                .open_with_policy(&unique_namespace("hostile-huge"), policy.clone())
                .await;
            match store.claim_leadership("huge", "huge/0", d).await {
                Ok(fence) => {
                    let held = store.leadership_check("huge", "huge/0").check().await;
                    prop_assert_eq!(held.ok(), Some(fence), "held right after a {:?} claim", d);
                    let again = store
                        .claim_leadership("huge", "huge/0", Duration::from_nanos(1))
                        .await;
                    prop_assert_eq!(again.ok(), Some(fence), "1 ns re-claim after {:?}", d);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let held = store.leadership_check("huge", "huge/0").check().await;
                    prop_assert_eq!(
                        held.ok(),
                        Some(fence),
                        "C2: the 1 ns re-claim shortened {:?}",
                        d
                    );
                    let other = store.claim_leadership("huge", "huge/1", d).await;
                    prop_assert!(matches!(other, Err(Error::ClaimDenied)), "{:?}", other);
                    store
                        .revoke_leadership("huge", "huge/0")
                        .await
                        .map_err(|e| fail(e.to_string()))?;
                }
                // A store may cap durations itself, but must say so as a validation error.
                Err(err) => prop_assert!(
                    matches!(err, Error::InvalidDuration { .. }),
                    "a {:?} claim failed with {}",
                    d,
                    err
                ),
            }
            Ok(())
        })
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    let tried = tried.into_inner();
    println!("hostile: huge_durations tried {tried} durations");
    tried
}
