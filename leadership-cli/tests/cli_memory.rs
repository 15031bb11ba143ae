//! The CLI as a process, against the in-process store: output, exit codes, JSON, bad input.

mod common;

use std::process::{Command, Output};

use common::{free_port, get};

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

#[test]
fn demo_runs_to_completion_and_reports_a_failover() {
    let out = leadership(&[
        "demo",
        "--guarantee",
        "300ms",
        "--units",
        "2",
        "--apps",
        "1",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|err| panic!("last line not JSON ({err}): {text}"));
    let failover = summary["failover_ms"].as_f64().expect("failover_ms");
    // A crash without release: the next leader waits out the 600 ms claim.
    assert!(
        (550.0..5_000.0).contains(&failover),
        "failover {failover} ms: {text}"
    );
    assert_eq!(summary["pin_held"], true, "{text}");
    assert_eq!(summary["pin_takeovers"], 0, "{text}");
    assert_eq!(summary["stale_write_refused"], true, "{text}");
    assert!(text.contains("took over with fence"), "{text}");
}

#[test]
fn demo_human_summary() {
    let out = leadership(&["demo", "--guarantee", "200ms"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for line in [
        "Summary",
        "failover after a crash (no release)",
        "handover on a graceful stop",
        "refused",
        // Issue 14.5: a watcher follows the failover and the handover.
        "(watcher) wordpress: led by",
        "watcher saw failover / handover",
        "yes / yes",
    ] {
        assert!(text.contains(line), "missing {line:?}: {text}");
    }
}

#[test]
fn track_prints_transitions_and_stops_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_leadership"))
        .args([
            "track",
            "wordpress/0",
            "--guarantee",
            "200ms",
            "--release-on-exit",
        ])
        .env_remove("LEADERSHIP_STORE")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("track starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("a line");
        seen.push(line.clone());
        if line.contains("promoted to leader") {
            break;
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("wordpress/0  promoted to leader (fence 1)")),
        "{seen:?}"
    );
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().expect("track exits");
    assert_eq!(exit.code(), Some(0), "{rest:?}");
    assert!(
        rest.iter().any(|l| l.contains("stopped, lease released")),
        "{rest:?}"
    );
}

#[test]
fn track_with_an_invalid_unit_exits_2() {
    let out = leadership(&["track", "Foo/0", "--guarantee", "1s"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("invalid unit name \"Foo/0\""),
        "{}",
        stderr(&out)
    );
}

/// `track --metrics ADDR --health ADDR` as an operator runs it: once the unit leads, a scrape
/// shows `leadership_is_leader` 1 and a promotion, and the health endpoint answers 200 (M1, H1).
#[test]
fn track_serves_metrics_and_health() {
    use std::io::{BufRead, BufReader};
    let (metrics, health) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_leadership"))
        .args([
            "track",
            "wordpress/0",
            "--guarantee",
            "1s",
            "--release-on-exit",
        ])
        .args(["--metrics", &format!("127.0.0.1:{metrics}")])
        .args(["--health", &format!("127.0.0.1:{health}")])
        .env_remove("LEADERSHIP_STORE")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("track starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for line in lines.by_ref() {
        if line.expect("a line").contains("promoted to leader") {
            break;
        }
    }

    let (status, text) = get(metrics, "/metrics");
    assert_eq!(status, 200, "{text}");
    let leads = r#"leadership_is_leader{application="wordpress",unit="wordpress/0"} 1"#;
    assert!(text.lines().any(|l| l == leads), "{text}");
    let promoted = r#"leadership_transitions_total{application="wordpress",unit="wordpress/0",transition="promoted"} 1"#;
    assert!(text.lines().any(|l| l == promoted), "{text}");
    // The store `connect` opened records its operations too: the tracker's first claim.
    let claimed =
        r#"leadership_store_operations_total{store="memory",operation="claim",outcome="ok"} "#;
    assert!(text.lines().any(|l| l.starts_with(claimed)), "{text}");
    // Latencies are histograms with DURATION_BUCKETS, not the exporter's default summaries:
    // a claim call (under a millisecond in process) lands in the first bucket.
    // The latency series are labelled by call alone, whatever the tracker's labels.
    let first_bucket = r#"leadership_claim_duration_seconds_bucket{call="claim",le="0.0005"} "#;
    assert!(text.lines().any(|l| l.starts_with(first_bucket)), "{text}");
    assert!(
        !text.contains("quantile="),
        "no latency is exported as a summary: {text}"
    );

    let (status, body) = get(health, "/healthz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.trim(), "healthy");

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().expect("track exits");
    assert_eq!(exit.code(), Some(0), "{rest:?}");
}

#[test]
fn track_with_a_busy_health_address_exits_3() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let addr = busy.local_addr().expect("an address").to_string();
    let out = leadership(&["track", "wordpress/0", "--health", &addr]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot serve --health"),
        "{}",
        stderr(&out)
    );
}
