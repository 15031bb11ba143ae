//! The CLI as a process, against the in-process store: output, exit codes, JSON, bad input.

use std::process::{Command, Output};

fn leadership(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leadership"))
        .args(args)
        .env_remove("LEADERSHIP_STORE")
        .output()
        .expect("the leadership binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|err| panic!("not JSON ({err}): {}", stdout(output)))
}

#[test]
fn claim_prints_the_fence() {
    let out = leadership(&["claim", "wordpress", "wordpress/0", "--for", "30s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("wordpress/0 leads wordpress for 30s (fence 1)"),
        "{}",
        stdout(&out)
    );

    let out = leadership(&["--json", "claim", "wordpress", "wordpress/0", "--for", "2m"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = json(&out);
    assert_eq!(doc["fence"], 1);
    assert_eq!(doc["duration_ms"], 120_000);
    assert_eq!(doc["unit"], "wordpress/0");
}

#[test]
fn a_no_answer_exits_1() {
    // Each process has its own memory:// store, so nobody leads here.
    let out = leadership(&["check", "wordpress", "wordpress/0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(r#""wordpress/0" is not leader of "wordpress""#),
        "{err}"
    );
    assert!(
        err.contains("leadership claim wordpress wordpress/0"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    let out = leadership(&["--json", "check", "wordpress", "wordpress/0"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_str(stderr(&out).trim()).expect("JSON error");
    assert_eq!(doc["exit_code"], 1);
}

#[test]
fn operator_commands_succeed_on_a_fresh_store() {
    for args in [
        &["leaders"][..],
        &["revoke", "mysql", "mysql/0"],
        &["pin", "mysql", "machine-0"],
        &["unpin", "mysql", "machine-0"],
        &["pinned"],
        &["wait-released", "mysql"],
    ] {
        let out = leadership(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
    let out = leadership(&["--json", "leaders"]);
    assert_eq!(json(&out), serde_json::json!({}));
    let out = leadership(&["--json", "wait-released", "mysql"]);
    assert_eq!(json(&out)["released"], true);
    let out = leadership(&["--json", "pin", "mysql", "machine-0"]);
    assert_eq!(json(&out)["pinned"], true);
}

#[test]
fn bad_input_exits_2_with_a_useful_message() {
    for (args, says) in [
        (
            &["claim", "Foo", "Foo/0"][..],
            "invalid application name \"Foo\"",
        ),
        (
            &["claim", "mysql", "wordpress/0"],
            "belongs to \"wordpress\"",
        ),
        (
            &["claim", "mysql", "mysql/0", "--for", "0s"],
            "greater than zero",
        ),
        (&["claim", "mysql", "mysql/0", "--for", "2h"], "at most"),
        (
            &["claim", "mysql", "mysql/0", "--for", "soon"],
            "use a duration like 30s",
        ),
        (&["pin", "mysql", "two words"], "whitespace"),
        (&["--store", "nowhere", "leaders"], "expected SCHEME://"),
        (
            &["--store", "ftp://host", "leaders"],
            "unknown scheme \"ftp\"",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
    ] {
        let out = leadership(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn credentials_never_reach_the_terminal() {
    let out = leadership(&["--store", "ftp://user:hunter2@host", "leaders"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    assert!(stderr(&out).contains("user:***@host"), "{}", stderr(&out));
}

#[test]
fn namespace_flag_selects_a_namespace() {
    let out = leadership(&["--namespace", "", "leaders"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("namespace must not be empty"));
    let out = leadership(&[
        "--namespace",
        "model-1",
        "--store",
        "memory://?namespace=x",
        "leaders",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
