//! A password that is not percent-encoded, or a URL with a mistyped `://`, must not appear in
//! the error of `leadership::connect` (found by the reliability suite; fixed in `redact_url`).

use std::error::Error as _;
use std::time::Duration;

use leadership_core::Error;

fn everything_shown(err: &Error) -> String {
    let mut shown = format!("{err}\n{err:?}");
    let mut source = err.source();
    while let Some(cause) = source {
        shown.push_str(&format!("\n{cause}\n{cause:?}"));
        source = cause.source();
    }
    shown
}

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
    Ok(Some(err))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A mistyped scheme separator: `redis:/user:pw@host`, `redis:user:pw@host`, `redis//…`.
#[test]
fn mistyped_separator_never_leaks() {
    let rt = runtime();
    let mut leaks = Vec::new();
    for url in [
        "redis:/user:PwSecret1@127.0.0.1:6379",
        "redis:user:PwSecret1@127.0.0.1:6379",
        "redis//user:PwSecret1@127.0.0.1:6379",
        "memory:/:PwSecret1@x",
    ] {
        if let Err(message) = rt.block_on(judge(url, Some("PwSecret1"))) {
            leaks.push(message);
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leak(s):\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}

/// Passwords with the characters that end a URL's authority (`/`, `?`, `#`) or separate
/// user-info (`@`, `:`): a user who forgot to percent-encode them must not see the password
/// in the error either.
#[test]
fn unencoded_passwords_never_leak() {
    let rt = runtime();
    let mut leaks = Vec::new();
    let mut tried = 0;
    for scheme in ["redis", "rediss", "etcd", "etcds", "memory", "bogus"] {
        for password in [
            "Pwab/cd",
            "Pwab?cd",
            "Pwab#cd",
            "Pwab@cd",
            "Pwab:cd",
            "Pwab%zzcd",
        ] {
            let url = format!("{scheme}://user:{password}@127.0.0.1:1/0?namespace=x");
            tried += 1;
            let outcome = rt.block_on(judge(&url, Some(password)));
            // The password's tail after the first special character is enough to reveal it.
            let tail = &password[password.len() - 2..];
            match outcome {
                Err(message) => leaks.push(message),
                Ok(Some(err))
                    if everything_shown(&err).contains(&format!("{}{tail}", &password[..4])) =>
                {
                    leaks.push(format!("{url}: {}", everything_shown(&err)));
                }
                Ok(_) => {}
            }
        }
    }
    println!(
        "hostile: unencoded_passwords_never_leak tried {tried} URLs, {} leaks",
        leaks.len()
    );
    assert!(
        leaks.is_empty(),
        "{} leak(s):\n{}",
        leaks.len(),
        leaks.join("\n")
    );
}
