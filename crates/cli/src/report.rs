//! `coldstart report channels`: channel attribution from the served log and the events.

use coldstart_contracts::aggregator::ServedRow;
use coldstart_contracts::profile::Event;
use coldstart_jobs::report::{attribute, read_rows};
use std::path::PathBuf;

/// Reports read by people.
#[derive(clap::Subcommand)]
pub enum ReportCmd {
    /// Per channel: items served, impressions, CTR and like rate against the overall rates, and
    /// conversion credit. Prints the table, writes `OUT/channels.md`, `OUT/channels.json` and
    /// `OUT/channels.svg`.
    Channels(ChannelsArgs),
}

/// Inputs of the attribution.
#[derive(clap::Args)]
pub struct ChannelsArgs {
    /// The served log: its root (`aggregator.served_dir`, by default `{node.data_dir}/served`)
    /// or one of its files.
    #[arg(long)]
    served: PathBuf,
    /// Events (`events` columns: user_id, item_id, ts, action, and request_id when the client
    /// echoed it): a Parquet file or a folder of them, such as the profile's event log.
    #[arg(long)]
    events: PathBuf,
    /// An event without a request id is credited to the latest answer that showed its item to
    /// its user at most this many hours before it.
    #[arg(long, default_value_t = 24.0)]
    window_h: f64,
    /// Output directory.
    #[arg(long, default_value = "target/report")]
    out: PathBuf,
}

pub fn run(cmd: ReportCmd) -> anyhow::Result<()> {
    let ReportCmd::Channels(a) = cmd;
    if !(a.window_h.is_finite() && a.window_h > 0.0) {
        anyhow::bail!(
            "--window-h: {} must be a positive number of hours",
            a.window_h
        );
    }
    let (served, skipped_served) = read_rows(
        &a.served,
        &["request_id", "at", "item_id"],
        ServedRow::from_batch,
    )?;
    let (events, skipped_events) = read_rows(
        &a.events,
        &["user_id", "item_id", "ts", "action"],
        Event::from_batch,
    )?;
    for f in skipped_served.iter().chain(&skipped_events) {
        eprintln!("skipped {} (not served rows or events)", f.display());
    }
    let report = attribute(&served, &events, (a.window_h * 3_600_000.0) as i64);
    std::fs::create_dir_all(&a.out)?;
    let table = report.table();
    std::fs::write(a.out.join("channels.md"), &table)?;
    std::fs::write(
        a.out.join("channels.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let svg = a.out.join("channels.svg");
    std::fs::write(&svg, report.svg())?;
    println!(
        "{} served rows, {} events\n\n{table}\nplot: {}, figures: {}",
        served.len(),
        events.len(),
        svg.display(),
        a.out.join("channels.json").display()
    );
    Ok(())
}
