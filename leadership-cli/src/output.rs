//! Printing results and errors: human text by default, one JSON document with `--json`.

use leadership::Error;
use serde_json::Value;

/// Exit code for an error (see the crate docs).
pub fn exit_code(err: &Error) -> u8 {
    match err {
        Error::ClaimDenied | Error::NotLeader { .. } | Error::ClaimNotHeld => 1,
        Error::BlockCancelled => 130,
        err if err.is_invalid_input() => 2,
        _ => 3,
    }
}

/// What to do about an error, for the one-line message.
fn hint(err: &Error, store: &str) -> String {
    match err {
        Error::ClaimDenied => {
            "another unit holds the lease: see `leadership leaders`, or wait with \
             `leadership wait-released APP`"
                .into()
        }
        Error::NotLeader { application, unit } => {
            format!("claim it first: `leadership claim {application} {unit} --for 30s`")
        }
        Error::ClaimNotHeld => "only the holder can revoke: see `leadership leaders`".into(),
        Error::InvalidUrl { .. } => {
            "fix --store (or LEADERSHIP_STORE): memory://, redis://HOST:PORT, etcd://HOST:PORT"
                .into()
        }
        err if err.is_invalid_input() => "fix the argument and try again".into(),
        Error::Unavailable { .. } => format!(
            "check that the store at {} is running and reachable (--store or LEADERSHIP_STORE)",
            leadership::redact_url(store)
        ),
        Error::BlockCancelled => "cancelled".into(),
        _ => format!(
            "the store at {} failed; see the cause above",
            leadership::redact_url(store)
        ),
    }
}

/// Prints `err` on stderr in one line: the error, its causes, and what to do.
pub fn print_error(err: &Error, store: &str, json: bool) {
    let message = err.one_line();
    let hint = hint(err, store);
    if json {
        let doc =
            serde_json::json!({ "error": message, "hint": hint, "exit_code": exit_code(err) });
        eprintln!("{doc}");
    } else {
        eprintln!("leadership: {message} ({hint})");
    }
}

/// Prints a result: `human` as is, or `doc` as JSON.
pub fn print(json: bool, human: impl FnOnce() -> String, doc: impl FnOnce() -> Value) {
    if json {
        println!("{}", doc());
    } else {
        let text = human();
        if !text.is_empty() {
            println!("{text}");
        }
    }
}
