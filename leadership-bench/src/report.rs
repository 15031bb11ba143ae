//! Rows, verdicts against the targets, the printed table and the JSON file.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::driver::Sample;
use crate::stats::{Figures, human_rate, human_us};

/// How a row compares with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// The target is met.
    Pass,
    /// The target is missed.
    Fail,
    /// No target: a figure for reference.
    Info,
    /// The scenario could not be measured (the runner exits non-zero).
    Error,
}

impl Verdict {
    /// `Pass` when `ok`, else `Fail`.
    pub fn of(ok: bool) -> Verdict {
        if ok { Verdict::Pass } else { Verdict::Fail }
    }

    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Info => "info",
            Verdict::Error => "ERROR",
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// `memory`, `redis` or `etcd`.
    pub store: String,
    /// The scenario, e.g. `renewal` or `handover after revoke`.
    pub scenario: String,
    /// Concurrent callers, where the scenario has them.
    pub callers: Option<usize>,
    /// What the library did.
    pub subject: Option<Figures>,
    /// What the raw store (or a peer crate) did in the same run at the same concurrency.
    pub baseline: Option<Figures>,
    /// Subject throughput ÷ baseline throughput.
    pub ratio: Option<f64>,
    /// A figure that is not a throughput (bytes per lease, losses, RSS, …), as text.
    pub value: Option<String>,
    /// The same figure as a number, for machines (unit in `scenario` or `note`).
    pub number: Option<f64>,
    /// The target for this row, as text.
    pub target: Option<String>,
    /// The row against its target.
    pub verdict: Verdict,
    /// A correctness verdict failed (a handover before the nominal expiry, a spurious loss):
    /// the runner exits non-zero, also with `--quick`, unlike a missed throughput target.
    #[serde(default)]
    pub broken: bool,
    /// Anything a reader needs to interpret the row.
    pub note: Option<String>,
}

impl Row {
    /// A row with only its store and scenario set.
    pub fn new(store: &str, scenario: impl Into<String>) -> Row {
        Row {
            store: store.to_owned(),
            scenario: scenario.into(),
            callers: None,
            subject: None,
            baseline: None,
            ratio: None,
            value: None,
            number: None,
            target: None,
            verdict: Verdict::Info,
            broken: false,
            note: None,
        }
    }

    /// A throughput row from a baseline/subject pair run at `callers`: both sides' figures
    /// under their labels, and the subject's rate over the baseline's.
    pub fn pair(
        store: &str,
        scenario: impl Into<String>,
        callers: usize,
        (base, subj): (&Sample, &Sample),
        (subj_label, base_label): (&str, &str),
    ) -> Row {
        let base_rate = base.rate();
        Row {
            callers: Some(callers),
            ratio: Some(if base_rate > 0.0 {
                subj.rate() / base_rate
            } else {
                0.0
            }),
            subject: Some(subj.figures(subj_label)),
            baseline: Some(base.figures(base_label)),
            ..Row::new(store, scenario)
        }
    }

    /// The row with `note` set.
    pub fn with_note(mut self, note: impl Into<String>) -> Row {
        self.note = Some(note.into());
        self
    }

    /// The row with `note`, or, if operations failed, how many failed on each side (from the
    /// row's own figures), named as `what` says (`(library's, baseline's)`, e.g.
    /// `("keep-alives", "puts")`).
    pub fn noting(self, (subj_what, base_what): (&str, &str), note: Option<String>) -> Row {
        let errors = |figures: &Option<Figures>| figures.as_ref().map_or(0, |f| f.errors);
        let (subj, base) = (errors(&self.subject), errors(&self.baseline));
        if subj + base > 0 {
            self.with_note(format!("{subj} {subj_what} and {base} {base_what} failed"))
        } else {
            Row { note, ..self }
        }
    }

    /// The row held to a minimum ratio: its target reads `≥ min`, and it passes when its
    /// ratio reaches `min` and none of the library's `failed` operations failed.
    pub fn held_to(mut self, min: f64, failed: u64) -> Row {
        self.target = Some(format!("≥ {min:.2}"));
        self.verdict = Verdict::of(self.ratio.unwrap_or(0.0) >= min && failed == 0);
        self
    }

    /// The verdict as the table prints it: `BROKEN` for a failed correctness verdict.
    pub fn verdict_text(&self) -> &'static str {
        if self.broken {
            "BROKEN"
        } else {
            self.verdict.as_str()
        }
    }

    /// A row saying that a scenario could not run, and why.
    pub fn error(store: &str, scenario: impl Into<String>, why: impl Into<String>) -> Row {
        Row {
            verdict: Verdict::Error,
            note: Some(why.into()),
            ..Row::new(store, scenario)
        }
    }
}

/// The whole run: what the table prints and the JSON file holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// When the run started (RFC 3339, UTC).
    pub date: String,
    /// Cores available to the runner.
    pub cores: usize,
    /// The command line, as invoked.
    pub command: String,
    /// `/proc/loadavg` when the run started and when it ended: other work on the machine.
    pub load: (String, String),
    /// Whether `--quick` sizes were used.
    pub quick: bool,
    /// Every row, in the order measured.
    pub rows: Vec<Row>,
    /// Reference lines that are not measurements (documented defaults of peers).
    pub references: Vec<String>,
}

fn opt_rate(figures: Option<&Figures>) -> String {
    figures
        .and_then(|f| f.ops_per_sec)
        .map_or_else(|| "-".to_owned(), human_rate)
}

fn opt_us(figures: Option<&Figures>, pick: fn(&Figures) -> f64) -> String {
    figures.map_or_else(|| "-".to_owned(), |f| human_us(pick(f)))
}

fn opt_cpu(us: Option<f64>) -> String {
    us.map_or_else(|| "-".to_owned(), human_us)
}

/// A side's CPU time per operation: the runner's plus the server's where it was measured.
fn total_cpu(figures: &Figures) -> Option<f64> {
    Some(figures.client_cpu_us? + figures.server_cpu_us.unwrap_or(0.0))
}

/// CPU time per operation of both sides of each throughput row that measured it.
fn cpu_table(rows: &[&Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|r| {
            let (s, b) = (r.subject.as_ref()?, r.baseline.as_ref()?);
            s.client_cpu_us?;
            let ratio = match (total_cpu(s), total_cpu(b)) {
                (Some(st), Some(bt)) if st > 0.0 => format!("{:.2}", bt / st),
                _ => "-".to_owned(),
            };
            Some(vec![
                r.store.clone(),
                r.scenario.clone(),
                r.callers.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                opt_cpu(s.client_cpu_us),
                opt_cpu(s.server_cpu_us),
                b.label.clone(),
                opt_cpu(b.client_cpu_us),
                opt_cpu(b.server_cpu_us),
                ratio,
            ])
        })
        .collect();
    if cells.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "CPU time per operation (same runs; runner: this process, the client and, for memory, the store; \
         server: the Redis or etcd process the runner started, from /proc in 10 ms ticks; \
         cpu ratio: baseline's total ÷ library's total, which bounds the throughput ratio when the machine is CPU-bound)\n\n",
    );
    out.push_str(&columns(
        &[
            "store",
            "scenario",
            "callers",
            "runner",
            "server",
            "baseline",
            "base runner",
            "base server",
            "cpu ratio",
        ],
        &cells,
    ));
    out.push('\n');
    out
}

/// What a row measured, in one cell: its ratio, its latency or its value, and its verdict.
fn brief(r: &Row) -> String {
    let figure = match (&r.ratio, &r.subject, &r.value) {
        (Some(ratio), _, _) => format!("{ratio:.2}"),
        (None, Some(s), _) => format!("p99 {}", human_us(s.p99_us)),
        (None, None, Some(v)) => v.clone(),
        (None, None, None) => "-".to_owned(),
    };
    format!("{figure} {}", r.verdict_text())
}

/// Every row of the etcd releases in this run side by side (issue 17), where more than one
/// release ran: one line per scenario and callers, one column per release.
fn releases_table(rows: &[Row]) -> String {
    let mut releases: Vec<&str> = Vec::new();
    let mut keys: Vec<(&str, Option<usize>)> = Vec::new();
    for r in rows.iter().filter(|r| r.store.starts_with("etcd ")) {
        if !releases.contains(&r.store.as_str()) {
            releases.push(&r.store);
        }
        let key = (r.scenario.as_str(), r.callers);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    if releases.len() < 2 {
        return String::new();
    }
    let cells: Vec<Vec<String>> = keys
        .iter()
        .map(|&(scenario, callers)| {
            let mut line = vec![
                scenario.to_owned(),
                callers.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            ];
            for release in &releases {
                line.push(
                    rows.iter()
                        .find(|r| {
                            r.store == *release && r.scenario == scenario && r.callers == callers
                        })
                        .map_or_else(|| "-".to_owned(), brief),
                );
            }
            line
        })
        .collect();
    let mut header = vec!["scenario", "callers"];
    header.extend(releases.iter().copied());
    let mut out = String::from(
        "etcd releases side by side (ratio, or p99, or figure, with its verdict; the same rows as above)\n\n",
    );
    out.push_str(&columns(&header, &cells));
    out.push('\n');
    out
}

/// Lays out rows of cells in aligned columns.
fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    out.push('\n');
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.clone()));
        out.push('\n');
    }
    out
}

impl Report {
    /// The final table, as printed.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "leadership-bench {}",
            if self.quick { "(quick)" } else { "(full)" }
        );
        let _ = writeln!(out, "date:    {}", self.date);
        let _ = writeln!(out, "cores:   {}", self.cores);
        let _ = writeln!(out, "command: {}", self.command);
        let _ = writeln!(
            out,
            "load:    {} at start, {} at end (1, 5, 15 min load averages)",
            self.load.0, self.load.1
        );
        out.push('\n');

        let throughput: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.subject.as_ref().is_some_and(|s| s.ops_per_sec.is_some()))
            .collect();
        if !throughput.is_empty() {
            out.push_str("Throughput against the raw store (same run, same callers; latencies are per operation)\n\n");
            let cells: Vec<Vec<String>> = throughput
                .iter()
                .map(|r| {
                    let s = r.subject.as_ref();
                    let b = r.baseline.as_ref();
                    vec![
                        r.store.clone(),
                        r.scenario.clone(),
                        r.callers.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                        opt_rate(s),
                        opt_us(s, |f| f.p50_us),
                        opt_us(s, |f| f.p99_us),
                        b.map_or_else(|| "-".to_owned(), |f| f.label.clone()),
                        opt_rate(b),
                        opt_us(b, |f| f.p50_us),
                        opt_us(b, |f| f.p99_us),
                        r.ratio
                            .map_or_else(|| "-".to_owned(), |x| format!("{x:.2}")),
                        r.target.clone().unwrap_or_else(|| "-".to_owned()),
                        r.verdict_text().to_owned(),
                    ]
                })
                .collect();
            out.push_str(&columns(
                &[
                    "store",
                    "scenario",
                    "callers",
                    "ops/s",
                    "p50",
                    "p99",
                    "baseline",
                    "base ops/s",
                    "base p50",
                    "base p99",
                    "ratio",
                    "target",
                    "verdict",
                ],
                &cells,
            ));
            out.push('\n');
            out.push_str(&cpu_table(&throughput));
        }

        let other: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.subject.as_ref().is_none_or(|s| s.ops_per_sec.is_none()))
            .collect();
        if !other.is_empty() {
            out.push_str("Latency, scale and memory\n\n");
            let cells: Vec<Vec<String>> = other
                .iter()
                .map(|r| {
                    let figure = match (&r.subject, &r.value) {
                        (Some(s), _) => format!(
                            "p50 {}  p99 {}  max {}  (n={})",
                            human_us(s.p50_us),
                            human_us(s.p99_us),
                            human_us(s.max_us),
                            s.samples
                        ),
                        (None, Some(v)) => v.clone(),
                        (None, None) => "-".to_owned(),
                    };
                    vec![
                        r.store.clone(),
                        r.scenario.clone(),
                        figure,
                        r.target.clone().unwrap_or_else(|| "-".to_owned()),
                        r.verdict_text().to_owned(),
                    ]
                })
                .collect();
            out.push_str(&columns(
                &["store", "scenario", "figure", "target", "verdict"],
                &cells,
            ));
            out.push('\n');
        }

        out.push_str(&releases_table(&self.rows));

        // A scenario run at 1 and at 64 callers carries the same note twice: print it once.
        let mut notes: Vec<String> = Vec::new();
        for row in &self.rows {
            if let Some(note) = &row.note {
                let note = format!("{} / {}: {note}", row.store, row.scenario);
                if !notes.contains(&note) {
                    notes.push(note);
                }
            }
        }
        if !notes.is_empty() {
            out.push_str("Notes\n");
            for note in notes {
                let _ = writeln!(out, "- {note}");
            }
            out.push('\n');
        }
        if !self.references.is_empty() {
            out.push_str("References (documented, not measured)\n");
            for reference in &self.references {
                let _ = writeln!(out, "- {reference}");
            }
            out.push('\n');
        }
        let broken = self.rows.iter().filter(|r| r.broken).count();
        if broken > 0 {
            let _ = writeln!(out, "{broken} correctness verdict(s) BROKEN: the run fails");
        }
        let count = |v: Verdict| self.rows.iter().filter(|r| r.verdict == v).count();
        let _ = writeln!(
            out,
            "{} PASS, {} FAIL, {} info, {} ERROR",
            count(Verdict::Pass),
            count(Verdict::Fail),
            count(Verdict::Info),
            count(Verdict::Error)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(label: &str, client: Option<f64>, server: Option<f64>) -> Figures {
        Figures {
            label: label.to_owned(),
            ops: 100,
            errors: 0,
            ops_per_sec: Some(100.0),
            p50_us: 1.0,
            p99_us: 2.0,
            max_us: 3.0,
            samples: 10,
            client_cpu_us: client,
            server_cpu_us: server,
        }
    }

    #[test]
    fn a_row_held_to_a_minimum_passes_only_at_or_above_it_and_without_failures() {
        let with_ratio = |ratio: f64| Row {
            ratio: Some(ratio),
            ..Row::new("redis", "peer: claim+revoke")
        };
        let held = with_ratio(1.0).held_to(1.0, 0);
        assert_eq!(held.target.as_deref(), Some("≥ 1.00"));
        assert_eq!(held.verdict, Verdict::Pass);
        assert_eq!(with_ratio(0.99).held_to(1.0, 0).verdict, Verdict::Fail);
        assert_eq!(
            with_ratio(1.5).held_to(0.9, 1).verdict,
            Verdict::Fail,
            "a failed call"
        );
        assert_eq!(
            Row::new("etcd", "x").held_to(0.9, 0).verdict,
            Verdict::Fail,
            "no ratio"
        );
    }

    fn report(quick: bool, rows: Vec<Row>) -> Report {
        Report {
            date: String::new(),
            cores: 2,
            command: String::new(),
            load: (String::new(), String::new()),
            quick,
            rows,
            references: Vec::new(),
        }
    }

    fn row(subject: Figures, baseline: Figures) -> Row {
        Row {
            callers: Some(64),
            subject: Some(subject),
            baseline: Some(baseline),
            ratio: Some(1.0),
            ..Row::new("etcd", "renewal")
        }
    }

    #[test]
    fn the_cpu_ratio_is_the_baselines_total_over_the_librarys() {
        // Library: 20 + 180 = 200 µs; baseline: 50 + 100 = 150 µs.
        let r = row(
            figures("claim (renew)", Some(20.0), Some(180.0)),
            figures("etcd put", Some(50.0), Some(100.0)),
        );
        let table = cpu_table(&[&r]);
        let line = table
            .lines()
            .find(|l| l.starts_with("etcd"))
            .expect("a row for etcd");
        assert!(line.ends_with("0.75"), "{line}");
        assert!(line.contains("180 µs"), "{line}");
    }

    #[test]
    fn without_a_server_the_runners_cpu_is_the_total() {
        let r = row(
            figures("claim (renew)", Some(2.0), None),
            figures("HashMap insert", Some(1.0), None),
        );
        let table = cpu_table(&[&r]);
        let line = table
            .lines()
            .find(|l| l.starts_with("etcd"))
            .expect("a row");
        assert!(line.ends_with("0.50"), "{line}");
    }

    #[test]
    fn a_note_gives_way_to_failure_counts_from_the_rows_figures() {
        let ok = row(
            figures("keep-alive", None, None),
            figures("etcd put", None, None),
        )
        .noting(("keep-alives", "puts"), Some("the floor".to_owned()));
        assert_eq!(ok.note.as_deref(), Some("the floor"));
        let mut failing = figures("keep-alive", None, None);
        failing.errors = 3;
        let row = row(failing, figures("etcd put", None, None))
            .noting(("keep-alives", "puts"), Some("the floor".to_owned()));
        assert_eq!(row.note.as_deref(), Some("3 keep-alives and 0 puts failed"));
    }

    #[test]
    fn releases_line_up_by_scenario_and_callers() {
        let mut old = row(figures("claim", None, None), figures("put", None, None));
        old.store = "etcd 3.4.23".to_owned();
        old.ratio = Some(0.5);
        let mut new = old.clone();
        new.store = "etcd 3.5.1".to_owned();
        new.ratio = Some(1.25);
        new.verdict = Verdict::Pass;
        let table = releases_table(&[old.clone(), new]);
        let line = table
            .lines()
            .find(|l| l.starts_with("renewal"))
            .expect("a line for the scenario");
        assert!(
            line.contains("0.50 info") && line.ends_with("1.25 PASS"),
            "{line}"
        );
        assert!(table.contains("etcd 3.4.23") && table.contains("etcd 3.5.1"));
        // One release: no side-by-side table.
        assert_eq!(releases_table(&[old]), "");
    }

    #[test]
    fn a_broken_correctness_verdict_shows_and_counts() {
        let mut r = row(figures("claim", None, None), figures("put", None, None));
        r.verdict = Verdict::Fail;
        r.broken = true;
        assert_eq!(r.verdict_text(), "BROKEN");
        let report = report(true, vec![r]);
        assert!(report.table().contains("1 correctness verdict(s) BROKEN"));
    }

    #[test]
    fn a_note_shared_by_both_caller_counts_prints_once() {
        let one = row(figures("claim", None, None), figures("put", None, None))
            .noting(("claims", "puts"), Some("the floor".to_owned()));
        let mut many = one.clone();
        many.callers = Some(1);
        let mut other = one.clone();
        other.scenario = "first claim".to_owned();
        let report = report(false, vec![one, many, other]);
        let table = report.table();
        assert_eq!(
            table.matches("etcd / renewal: the floor").count(),
            1,
            "{table}"
        );
        assert_eq!(
            table.matches("etcd / first claim: the floor").count(),
            1,
            "{table}"
        );
    }

    #[test]
    fn rows_that_measured_no_cpu_print_no_cpu_table() {
        let r = row(
            figures("claim (renew)", None, None),
            figures("etcd put", None, None),
        );
        let table = cpu_table(&[&r]);
        assert!(!table.contains("etcd"), "{table}");
    }
}
