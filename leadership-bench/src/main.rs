#![doc = include_str!("../README.md")]

mod cadence;
mod driver;
mod etcd_store;
mod footprint;
mod memory;
mod redis_cluster;
mod redis_store;
mod report;
mod scale;
mod scenarios;
mod stats;
mod sys;
mod target;
mod watching;

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::SystemTime;

use clap::{Parser, ValueEnum};

use crate::report::{Report, Row, Verdict};
use crate::scenarios::Sizes;
use crate::target::{Bench, BenchResult};

/// Which stores to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreArg {
    Memory,
    Redis,
    /// A private three-master Redis Cluster: renewal and check over every master.
    RedisCluster,
    Etcd,
    All,
}

/// Scenarios that run in a child process of their own (clean RSS and CPU figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ChildScenario {
    Footprint,
    Scale,
    /// The scale scenario with a metrics recorder installed (M1's overhead).
    ScaleMetrics,
    /// The same with the trackers' `application` and `unit` labels switched off.
    ScaleMetricsUnlabelled,
    /// The scale scenario without a recorder, each tracker spawned with as many bytes of
    /// unrelated allocations as its labelled series take ([`scale::BALLAST`]): what their
    /// memory alone costs the renewals.
    ScaleBallast,
    /// 10,000 idle watchers, in a fresh process so its resident memory is theirs alone.
    IdleWatchers,
}

/// Side-by-side benchmarks of the leadership stores against their raw stores and peers.
#[derive(Debug, Parser)]
#[command(name = "leadership-bench", version)]
struct Args {
    /// Shorter rounds and fewer runs, etcd 3.4 only; for CI.
    #[arg(long)]
    quick: bool,
    /// The store(s) to benchmark.
    #[arg(long, value_enum, default_value = "all")]
    store: StoreArg,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Use this Redis server instead of starting one (redis://host:port).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// Use this etcd endpoint instead of starting a member (http://host:port).
    #[arg(long, value_name = "URL")]
    etcd_url: Option<String>,
    /// Run only the scenarios whose name contains TEXT (e.g. `revoke delivery`, `first
    /// claim`, `peer`, `scale`): for re-measuring one row in full without the rest.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// Internal: run one scenario in this process and print its rows as JSON.
    #[arg(long, value_enum, hide = true)]
    child: Option<ChildScenario>,
}

/// `--only`: which scenarios run.
#[derive(Debug, Clone, Copy)]
struct Only<'a>(Option<&'a str>);

impl Only<'_> {
    fn wants(self, scenario: &str) -> bool {
        self.0.is_none_or(|only| scenario.contains(only))
    }

    /// The peer and reference rows (`peer: …`, `ref: …`) run for an `--only` that starts
    /// with `peer` or `ref`.
    fn wants_peers(self) -> bool {
        self.0
            .is_none_or(|only| only.starts_with("peer") || only.starts_with("ref"))
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("leadership-bench: cannot start the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(child) = args.child {
        return runtime.block_on(run_child(&args, child));
    }
    runtime.block_on(run(args))
}

fn sizes(quick: bool) -> Sizes {
    if quick { Sizes::QUICK } else { Sizes::FULL }
}

/// The child side: one scenario, rows as JSON on stdout.
async fn run_child(args: &Args, child: ChildScenario) -> ExitCode {
    let sizes = sizes(args.quick);
    let rows: Vec<Row> = match child {
        ChildScenario::Footprint => vec![
            footprint::memory_per_lease(sizes.memory_leases)
                .await
                .unwrap_or_else(|e| Row::error("memory", "memory per lease", e)),
        ],
        ChildScenario::ScaleMetrics | ChildScenario::ScaleMetricsUnlabelled => {
            // As `track --metrics` runs the exporter: the Prometheus recorder with the
            // latency buckets (DURATION_BUCKETS) and its upkeep (which drains histogram
            // samples) every 5 s, the builder's default interval.
            let builder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Suffix("_duration_seconds".into()),
                    leadership_core::metered::DURATION_BUCKETS,
                );
            let handle = match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => handle,
                Err(e) => {
                    return child_rows(vec![Row::error(
                        "memory",
                        "scale with metrics",
                        e.to_string(),
                    )]);
                }
            };
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    handle.run_upkeep();
                }
            });
            let labelled = child == ChildScenario::ScaleMetrics;
            match open_bench(args).await {
                Ok(bench) => scale::scale(&*bench, sizes, labelled, false)
                    .await
                    .unwrap_or_else(|e| vec![Row::error(bench.name(), "scale with metrics", e)]),
                Err(e) => vec![Row::error("memory", "scale with metrics", e)],
            }
        }
        ChildScenario::IdleWatchers => match open_bench(args).await {
            Ok(bench) => vec![
                watching::idle_watchers(&*bench)
                    .await
                    .unwrap_or_else(|e| Row::error(bench.name(), "watch: idle watchers", e)),
            ],
            Err(e) => vec![Row::error(
                &format!("{:?}", args.store).to_lowercase(),
                "watch: idle watchers",
                e,
            )],
        },
        ChildScenario::Scale | ChildScenario::ScaleBallast => match open_bench(args).await {
            Ok(bench) => scale::scale(&*bench, sizes, true, child == ChildScenario::ScaleBallast)
                .await
                .unwrap_or_else(|e| vec![Row::error(bench.name(), "scale", e)]),
            Err(e) => vec![Row::error(
                &format!("{:?}", args.store).to_lowercase(),
                "scale",
                e,
            )],
        },
    };
    child_rows(rows)
}

/// Prints a child's rows as JSON on stdout.
fn child_rows(rows: Vec<Row>) -> ExitCode {
    match serde_json::to_string(&rows) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("leadership-bench child: cannot encode rows: {e}");
            ExitCode::from(2)
        }
    }
}

/// The store a child process benchmarks: the one its `--store` names, at the given URLs.
async fn open_bench(args: &Args) -> BenchResult<Box<dyn Bench>> {
    match args.store {
        StoreArg::Memory => Ok(Box::new(memory::MemoryBench::new())),
        StoreArg::Redis => match &args.redis_url {
            Some(url) => Ok(Box::new(redis_store::RedisBench::start(Some(url.clone()))?)),
            None => Err("a redis child needs --redis-url".to_owned()),
        },
        StoreArg::Etcd => match &args.etcd_url {
            Some(url) => Ok(Box::new(etcd_store::EtcdBench::start(Some(url.clone()))?)),
            None => Err("an etcd child needs --etcd-url".to_owned()),
        },
        StoreArg::RedisCluster => Err("the cluster rows run no child scenario".to_owned()),
        StoreArg::All => Err("a child runs one store, not all".to_owned()),
    }
}

/// Runs a child scenario in a new process of this binary and collects its rows.
async fn in_child(child: &str, quick: bool, extra: Vec<String>) -> BenchResult<Vec<Row>> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the runner's binary: {e}"))?;
    let mut command = Command::new(exe);
    command
        .args(["--child", child])
        .args(extra)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if quick {
        command.arg("--quick");
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|e| format!("child {child}: {e}"))?
        .map_err(|e| format!("cannot start child {child}: {e}"))?;
    if !output.status.success() {
        return Err(format!("child {child} failed: {}", output.status));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("child {child} printed bad JSON: {e}"))
}

/// Prints a row as soon as it is measured, so CI logs show progress and verdicts.
fn progress(row: &Row) {
    let figure = match (&row.subject, &row.ratio, &row.value) {
        (Some(s), Some(ratio), _) => format!(
            "{} ops/s vs {} {} ops/s, ratio {ratio:.2}",
            s.ops_per_sec
                .map_or_else(|| "-".to_owned(), stats::human_rate),
            row.baseline.as_ref().map_or("-", |b| b.label.as_str()),
            row.baseline
                .as_ref()
                .and_then(|b| b.ops_per_sec)
                .map_or_else(|| "-".to_owned(), stats::human_rate),
        ),
        (Some(s), None, _) => format!(
            "p50 {} p99 {}",
            stats::human_us(s.p50_us),
            stats::human_us(s.p99_us)
        ),
        (None, _, Some(v)) => v.clone(),
        _ => row.note.clone().unwrap_or_default(),
    };
    let callers = row
        .callers
        .map(|c| format!(" ({c} callers)"))
        .unwrap_or_default();
    let verdict = match row.verdict {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Info => "info",
        Verdict::Error => "ERROR",
    };
    let target = row
        .target
        .as_deref()
        .map(|t| format!(" [target {t}]"))
        .unwrap_or_default();
    let broken = if row.broken {
        " (correctness broken: the run fails)"
    } else {
        ""
    };
    eprintln!(
        "{verdict:5} {} / {}{callers}: {figure}{target}{broken}",
        row.store, row.scenario
    );
}

/// Every scenario for one store; `extra` adds the store's own rows (peers, references).
async fn run_store(
    bench: &dyn Bench,
    sizes: Sizes,
    (quick, only): (bool, Only<'_>),
    rows: &mut Vec<Row>,
    extra: Vec<Row>,
) {
    let name = bench.name();
    let mut push = |row: BenchResult<Row>, scenario: &str| {
        let row = row.unwrap_or_else(|e| Row::error(name, scenario, e));
        progress(&row);
        rows.push(row);
    };
    if only.wants("renewal") {
        for callers in [1, 64] {
            push(scenarios::renewal(bench, sizes, callers).await, "renewal");
        }
    }
    if let Some(target) = bench.cadence_renew_ratio()
        && only.wants("renewal, real cadence")
    {
        for callers in [1, 64] {
            push(
                cadence::renewal(bench, sizes, callers, target).await,
                "renewal, real cadence",
            );
        }
    }
    if only.wants("first claim") {
        for callers in [1, 64] {
            push(
                scenarios::first_claim(bench, sizes, callers).await,
                "first claim",
            );
        }
    }
    if only.wants("token check") {
        for callers in [1, 64] {
            push(
                scenarios::check(bench, sizes, callers, false).await,
                "token check",
            );
        }
    }
    if only.wants("check, new token per call") {
        push(
            scenarios::check(bench, sizes, 1, true).await,
            "check, new token per call",
        );
    }
    if only.wants("handover after revoke") {
        push(
            scenarios::handover_revoke(bench, sizes).await,
            "handover after revoke",
        );
    }
    if only.wants("handover after crash") {
        push(
            scenarios::handover_crash(bench, sizes).await,
            "handover after crash",
        );
    }
    if only.wants("watch: revoke delivery") {
        push(
            watching::revoke_delivery(bench, sizes).await,
            "watch: revoke delivery",
        );
    }
    if only.wants("watch: idle watchers") {
        match in_child("idle-watchers", quick, bench.child_args()).await {
            Ok(child_rows) => child_rows
                .into_iter()
                .for_each(|r| push(Ok(r), "watch: idle watchers")),
            Err(e) => push(Err(e), "watch: idle watchers"),
        }
    }
    for row in extra {
        push(Ok(row), "peers");
    }
    if only.wants("scale") {
        match in_child("scale", quick, bench.child_args()).await {
            Ok(child_rows) => child_rows.into_iter().for_each(|r| push(Ok(r), "scale")),
            Err(e) => push(Err(e), "scale"),
        }
    }
    if name == "memory" && only.wants("scale: metrics overhead") {
        // M1's cost: the scale run with the Prometheus recorder installed, against the same
        // run without one, each in its own process (a recorder is process-wide). Memory only:
        // there the tracker's own work is the whole cost of a renewal, so any recording
        // overhead shows most. CPU per renewal of one window drifts by ±10 % from one minute
        // to the next on a shared 2-core machine, while the recording itself is a few per
        // cent, so the settings of a round run at the same time, side by side (each uses well
        // under a tenth of a core): every drift of the machine weighs on all of them alike.
        // Two recorder-less processes measured this way agree within 2 %. A fourth process,
        // without a recorder, carries as many bytes of unrelated allocations per tracker as
        // the labelled series take: the control that tells their memory from their recording.
        // A full run measures five such rounds and each verdict is the median of the rounds'
        // ratios; `--quick` runs one.
        let rounds = if quick { 1 } else { 5 };
        let settings = [
            "scale",
            "scale-metrics",
            "scale-metrics-unlabelled",
            "scale-ballast",
        ];
        let mut costs: [Vec<f64>; 4] = Default::default();
        let mut failed: Vec<String> = Vec::new();
        for _ in 0..rounds {
            let (a, b, c, d) = tokio::join!(
                in_child(settings[0], quick, bench.child_args()),
                in_child(settings[1], quick, bench.child_args()),
                in_child(settings[2], quick, bench.child_args()),
                in_child(settings[3], quick, bench.child_args()),
            );
            for ((child, rows), into) in settings.iter().zip([a, b, c, d]).zip(&mut costs) {
                match rows {
                    Ok(child_rows) => match scale::cpu_per_renewal(&child_rows) {
                        Some(cost) => into.push(cost),
                        None => failed.push(format!("{child}: no CPU or renewal figure")),
                    },
                    Err(e) => failed.push(format!("{child}: {e}")),
                }
            }
        }
        if failed.is_empty() {
            let [off, labelled, unlabelled, ballast] = &costs;
            for (on, setting) in [
                (labelled, scale::Setting::Labelled),
                (unlabelled, scale::Setting::Unlabelled),
                (ballast, scale::Setting::Ballast),
            ] {
                push(
                    Ok(scale::metrics_overhead(off, on, setting)),
                    "scale: metrics overhead",
                );
            }
        } else {
            push(Err(failed.join("; ")), "scale: metrics overhead");
        }
    }
    if name == "memory" && only.wants("memory per lease") {
        match in_child("footprint", quick, bench.child_args()).await {
            Ok(child_rows) => child_rows
                .into_iter()
                .for_each(|r| push(Ok(r), "memory per lease")),
            Err(e) => push(Err(e), "memory per lease"),
        }
    }
}

/// Every etcd scenario on one member, with etcd's peer and reference rows.
async fn run_etcd(
    bench: &etcd_store::EtcdBench,
    sizes: Sizes,
    (quick, only): (bool, Only<'_>),
    rows: &mut Vec<Row>,
) {
    let name = bench.name();
    sys::watch_server(bench.server_pid());
    let mut extra = Vec::new();
    let peers = if only.wants_peers() {
        &[1, 64][..]
    } else {
        &[]
    };
    for &callers in peers {
        match etcd_store::claim_revoke_rows(bench, sizes, callers).await {
            Ok(rows) => extra.extend(rows),
            Err(e) => extra.push(Row::error(name, "peer: claim+revoke", e)),
        }
        match etcd_store::new_term_rows(bench, sizes, callers).await {
            Ok(rows) => extra.extend(rows),
            Err(e) => extra.push(Row::error(name, "ref: first claim vs raw grant + txn", e)),
        }
        extra.push(
            etcd_store::keep_alive_floor(bench, sizes, callers)
                .await
                .unwrap_or_else(|e| Row::error(name, "ref: renewal's keep-alive", e)),
        );
        extra.push(
            etcd_store::grant_put_floor(bench, sizes, callers)
                .await
                .unwrap_or_else(|e| Row::error(name, "ref: lease grant + put", e)),
        );
    }
    run_store(bench, sizes, (quick, only), rows, extra).await;
}

/// Issue 18.6's rows: renewal and token check over a three-master cluster, the namespaces
/// spread over every master, against SET and GET through the same cluster client.
async fn run_redis_cluster(sizes: Sizes, only: Only<'_>, rows: &mut Vec<Row>) {
    let mut push = |row: BenchResult<Row>, scenario: &str| {
        let row = row.unwrap_or_else(|e| Row::error("redis cluster", scenario, e));
        progress(&row);
        rows.push(row);
    };
    let bench = match redis_cluster::RedisClusterBench::start() {
        Ok(bench) => bench,
        Err(e) => return push(Err(e), "all scenarios"),
    };
    if only.wants("renewal over 3 masters") {
        for callers in [1, 64] {
            push(
                redis_cluster::renewal(&bench, sizes, callers).await,
                "renewal over 3 masters",
            );
        }
    }
    if only.wants("token check over 3 masters") {
        for callers in [1, 64] {
            push(
                redis_cluster::check(&bench, sizes, callers).await,
                "token check over 3 masters",
            );
        }
    }
}

fn command_line() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .map(|p| {
            PathBuf::from(&p)
                .file_name()
                .map_or(p.clone(), |f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "leadership-bench".to_owned());
    std::iter::once(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn run(args: Args) -> ExitCode {
    let sizes = sizes(args.quick);
    let mut report = Report {
        date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        cores: sys::cores(),
        command: command_line(),
        load: (sys::load_average(), String::new()),
        quick: args.quick,
        rows: Vec::new(),
        references: Vec::new(),
    };
    eprintln!(
        "leadership-bench: {} on {} cores, {}",
        report.command, report.cores, report.date
    );
    let wanted = |s: StoreArg| args.store == s || args.store == StoreArg::All;
    let only = Only(args.only.as_deref());
    let mut failed = false;
    if wanted(StoreArg::Memory) {
        let bench = memory::MemoryBench::new();
        sys::watch_server(None);
        run_store(
            &bench,
            sizes,
            (args.quick, only),
            &mut report.rows,
            Vec::new(),
        )
        .await;
    }
    if wanted(StoreArg::Redis) {
        match redis_store::RedisBench::start(args.redis_url.clone()) {
            Ok(bench) => {
                sys::watch_server(bench.server_pid());
                let mut extra = Vec::new();
                let peers = if only.wants_peers() {
                    &[1, 64][..]
                } else {
                    &[]
                };
                for &callers in peers {
                    extra.push(redis_store::redis_benchmark(&bench, sizes, callers).await);
                    extra.push(
                        redis_store::pexpire_floor(&bench, sizes, callers)
                            .await
                            .unwrap_or_else(|e| Row::error("redis", "ref: renewal's command", e)),
                    );
                    match redis_store::claim_revoke_rows(&bench, sizes, callers).await {
                        Ok(rows) => extra.extend(rows),
                        Err(e) => extra.push(Row::error("redis", "peer: claim+revoke", e)),
                    }
                    match redis_store::new_term_rows(&bench, sizes, callers).await {
                        Ok(rows) => extra.extend(rows),
                        Err(e) => extra.push(Row::error("redis", "ref: new-term floors", e)),
                    }
                }
                run_store(&bench, sizes, (args.quick, only), &mut report.rows, extra).await;
            }
            Err(e) => {
                let row = Row::error("redis", "all scenarios", e);
                progress(&row);
                report.rows.push(row);
            }
        }
    }
    if wanted(StoreArg::RedisCluster)
        && (only.wants("renewal over 3 masters") || only.wants("token check over 3 masters"))
    {
        run_redis_cluster(sizes, only, &mut report.rows).await;
    }
    if wanted(StoreArg::Etcd) {
        // etcd 3.4 (PATH or LEADERSHIP_ETCD, or --etcd-url) and, on a private member, 3.5.1
        // (scripts/setup installs it): every etcd row on both releases, side by side.
        // `--quick` (CI) runs 3.4 alone, to stay short; the conformance suite runs on both.
        let mut releases = vec![etcd_store::EtcdBench::start(args.etcd_url.clone())];
        if args.etcd_url.is_none() && !args.quick {
            releases.push(etcd_store::EtcdBench::start_35());
        }
        for bench in releases {
            match bench {
                Ok(bench) => run_etcd(&bench, sizes, (args.quick, only), &mut report.rows).await,
                Err(e) => {
                    let row = Row::error("etcd", "all scenarios", e);
                    progress(&row);
                    report.rows.push(row);
                }
            }
        }
    }
    report.load.1 = sys::load_average();
    report.references.push(
        "Kubernetes client-go leaderelection: LeaseDuration 15 s, RenewDeadline 10 s, RetryPeriod 2 s (documented defaults, e.g. kube-controller-manager's --leader-elect-* flags): a crashed leader is replaced 15 s + up to 2 s after its last renewal; a released lease (ReleaseOnCancel) is taken at the next retry, up to 2 s. Documented, not measured.".to_owned(),
    );
    println!("{}", report.table());
    if let Some(path) = &args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => {
                if let Err(e) = std::fs::write(path, json) {
                    eprintln!("leadership-bench: cannot write {}: {e}", path.display());
                    failed = true;
                }
            }
            Err(e) => {
                eprintln!("leadership-bench: cannot encode the report: {e}");
                failed = true;
            }
        }
    }
    failed |= report
        .rows
        .iter()
        .any(|r| r.verdict == Verdict::Error || r.broken);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
