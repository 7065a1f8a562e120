//! The evaluation report: `report.json` (everything), `report.md` (the tables and the targets)
//! and `recall.svg` (Recall@K per method and task).

use super::baselines::Baseline;
use super::channel_task;
use super::metrics::{Scores, COVERAGE_K};
use coldstart_aggregator::request::Channel;
use serde::Serialize;
use std::fmt::Write as _;

/// What produced a row.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The served answer, every channel merged.
    Served,
    /// One served channel alone (`channels=` on the recall API).
    Channel,
    /// A baseline computed offline from the same training data.
    Baseline,
}

/// One method on one task.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Method name.
    pub method: String,
    /// Served, channel or baseline.
    pub kind: Kind,
    /// Figures; `None` when the method cannot apply (say why in `note`).
    pub scores: Option<Scores>,
    /// Why there are no figures, or what the row means.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    /// `item` or `user`.
    pub task: String,
    /// What it measures.
    pub description: String,
    /// Test users.
    pub users: usize,
    /// Candidate pool size (per user it may be smaller by the user's seeds).
    pub candidates: usize,
    /// Relevant (user, item) pairs.
    pub relevant: usize,
    /// Methods.
    pub rows: Vec<Row>,
}

impl TaskReport {
    /// The figures of a method.
    pub fn scores(&self, method: &str) -> Option<&Scores> {
        self.rows
            .iter()
            .find(|r| r.method == method)
            .and_then(|r| r.scores.as_ref())
    }
}

/// A target of the issue, checked on this run.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is compared.
    pub what: String,
    /// Our figure.
    pub value: f64,
    /// The bar it must reach.
    pub bar: f64,
    /// Whether it does.
    pub met: bool,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Data set sizes and the split.
    pub data: serde_json::Value,
    /// The content model trained in the run.
    pub model: serde_json::Value,
    /// Cutoffs.
    pub ks: Vec<usize>,
    /// The tasks.
    pub tasks: Vec<TaskReport>,
    /// The targets.
    pub targets: Vec<Target>,
    /// Wall time of the run, seconds.
    pub seconds: f64,
}

fn fmt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "–".into())
}

impl Report {
    /// The Markdown tables.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# coldstart eval\n");
        let _ = writeln!(s, "Data: `{}`\n", self.data);
        let _ = writeln!(s, "Model: `{}`\n", self.model);
        let mid = self.ks.get(self.ks.len() / 2).copied().unwrap_or(50);
        for t in &self.tasks {
            let _ = writeln!(
                s,
                "## {} task: {}\n\n{} test users, {} candidates, {} relevant pairs.\n",
                t.task, t.description, t.users, t.candidates, t.relevant
            );
            let mut head = "| method | kind |".to_string();
            let mut rule = "|---|---|".to_string();
            for k in &self.ks {
                let _ = write!(head, " Recall@{k} |");
                rule.push_str("---:|");
            }
            let _ = write!(head, " NDCG@{mid} | coverage@{COVERAGE_K} |");
            rule.push_str("---:|---:|");
            let _ = writeln!(s, "{head}\n{rule}");
            for r in &t.rows {
                let kind = match r.kind {
                    Kind::Served => "served",
                    Kind::Channel => "channel",
                    Kind::Baseline => "baseline",
                };
                let mut line = format!("| {} | {kind} |", r.method);
                for k in &self.ks {
                    let _ = write!(
                        line,
                        " {} |",
                        fmt(r.scores.as_ref().and_then(|x| x.recall.get(k).copied()))
                    );
                }
                let _ = write!(
                    line,
                    " {} | {} |",
                    fmt(r.scores.as_ref().and_then(|x| x.ndcg.get(&mid).copied())),
                    fmt(r.scores.as_ref().map(|x| x.coverage))
                );
                if let Some(n) = &r.note {
                    let _ = write!(line, " {n}");
                }
                let _ = writeln!(s, "{line}");
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "## Targets\n\n| target | ours | bar | met |\n|---|---:|---:|---|"
        );
        for t in &self.targets {
            let _ = writeln!(
                s,
                "| {} | {:.4} | {:.4} | {} |",
                t.what,
                t.value,
                t.bar,
                if t.met { "yes" } else { "**no**" }
            );
        }
        s
    }

    /// Recall@K per method, one panel per task, as SVG.
    pub fn svg(&self) -> String {
        const PALETTE: [&str; 10] = [
            "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf",
        ];
        let (pw, ph, left, top, legend) = (420.0, 300.0, 60.0, 40.0, 190.0);
        let width = left + self.tasks.len() as f64 * (pw + legend + 40.0);
        let height = top + ph + 60.0;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        for (ti, t) in self.tasks.iter().enumerate() {
            let x0 = left + ti as f64 * (pw + legend + 40.0);
            let rows: Vec<&Row> = t.rows.iter().filter(|r| r.scores.is_some()).collect();
            let ymax = rows
                .iter()
                .flat_map(|r| r.scores.as_ref().unwrap().recall.values().copied())
                .fold(0.05f64, f64::max)
                * 1.1;
            let xk = |i: usize| {
                x0 + if self.ks.len() > 1 {
                    i as f64 * pw / (self.ks.len() - 1) as f64
                } else {
                    pw / 2.0
                }
            };
            let y = |v: f64| top + ph - v / ymax * ph;
            let _ = writeln!(
                s,
                "<text x=\"{x0}\" y=\"{}\" font-size=\"14\">{} task: Recall@K</text>",
                top - 15.0,
                t.task
            );
            let _ = writeln!(
                s,
                "<rect x=\"{x0}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>"
            );
            for g in 0..=4 {
                let v = ymax * g as f64 / 4.0;
                let _ = writeln!(
                    s,
                    "<line x1=\"{x0}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text>",
                    x0 + pw,
                    y(v),
                    y(v),
                    x0 - 5.0,
                    y(v) + 4.0
                );
            }
            for (i, k) in self.ks.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{k}</text>",
                    xk(i),
                    top + ph + 16.0
                );
            }
            for (ri, r) in rows.iter().enumerate() {
                let color = PALETTE[ri % PALETTE.len()];
                let dash = match r.kind {
                    Kind::Baseline => " stroke-dasharray=\"5,3\"",
                    _ => "",
                };
                let width = if r.kind == Kind::Served { 3.0 } else { 1.5 };
                let pts: Vec<String> = self
                    .ks
                    .iter()
                    .enumerate()
                    .filter_map(|(i, k)| {
                        r.scores
                            .as_ref()
                            .and_then(|sc| sc.recall.get(k))
                            .map(|v| format!("{:.1},{:.1}", xk(i), y(*v)))
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"{width}\"{dash}/>",
                    pts.join(" ")
                );
                let ly = top + 12.0 + ri as f64 * 15.0;
                let lx = x0 + pw + 15.0;
                let _ = writeln!(
                    s,
                    "<line x1=\"{lx}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"{width}\"{dash}/><text x=\"{}\" y=\"{}\">{}</text>",
                    lx + 20.0,
                    lx + 25.0,
                    ly + 4.0,
                    r.method.replace('&', "&amp;").replace('<', "&lt;")
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

/// The targets on this run, at K = 50 (or the middle cutoff).
pub(super) fn targets(tasks: &[TaskReport], ks: &[usize]) -> Vec<Target> {
    let k = if ks.contains(&50) {
        50
    } else {
        ks[ks.len() / 2]
    };
    let r = |t: &TaskReport, m: &str| t.scores(m).and_then(|s| s.recall.get(&k).copied());
    let mut out = Vec::new();
    let task = |name: &str| tasks.iter().find(|t| t.task == name);
    for c in Channel::ALL {
        let Some(tn) = channel_task(c) else { continue };
        let Some(t) = task(tn) else { continue };
        if let (Some(v), Some(rand)) = (r(t, &format!("channel {c}")), r(t, "random")) {
            out.push(Target {
                what: format!("channel {c} beats random on the {tn} task (Recall@{k})"),
                value: v,
                bar: rand,
                met: v > rand,
            });
        }
    }
    if let Some(t) = task("item") {
        if let (Some(v), Some(rand)) = (r(t, "channel cluster"), r(t, "random")) {
            out.push(Target {
                what: format!("cluster channel reaches 1.5x random on the item task (Recall@{k})"),
                value: v,
                bar: 1.5 * rand,
                met: v >= 1.5 * rand,
            });
        }
        if let (Some(v), Some(knn)) = (
            r(t, "coldstart (merged)"),
            r(t, Baseline::ContentKnn.name()),
        ) {
            out.push(Target {
                what: format!("merged answer reaches content KNN on the item task (Recall@{k})"),
                value: v,
                bar: knn,
                met: v >= knn,
            });
        }
    }
    if let Some(t) = task("item") {
        if let (Some(v), Some(without)) = (
            r(t, "coldstart (merged)"),
            r(t, "coldstart (merged, without two_tower)"),
        ) {
            out.push(Target {
                what: format!(
                    "merged answer with the two-tower channel beats it without on the item task (Recall@{k})"
                ),
                value: v,
                bar: without,
                met: v > without,
            });
        }
    }
    if let Some(t) = task("user") {
        // the merged answer and the learned new-user channel (the configured model, and the
        // best user cold-start variant asked) against group popularity and item-CF
        let best_variant = t
            .rows
            .iter()
            .filter(|row| row.method.starts_with("channel new_user_tower"))
            .filter_map(|row| Some((row.method.clone(), r(t, &row.method)?)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        for (who, v) in [
            ("merged answer".to_string(), r(t, "coldstart (merged)")),
            (
                best_variant
                    .as_ref()
                    .map_or("channel new_user_tower".into(), |b| b.0.clone()),
                best_variant.as_ref().map(|b| b.1),
            ),
        ] {
            let Some(v) = v else { continue };
            for base in [Baseline::GroupPopular, Baseline::ItemCf] {
                if let Some(bar) = r(t, base.name()) {
                    out.push(Target {
                        what: format!("{who} beats {} on the user task (Recall@{k})", base.name()),
                        value: v,
                        bar,
                        met: v > bar,
                    });
                }
            }
        }
    }
    out
}
