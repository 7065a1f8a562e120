//! `coldstart simulate traffic`: the replay of traffic control on a synthetic platform.

use coldstart_jobs::simulate::{simulate, Platform};
use std::path::PathBuf;

/// Replays.
#[derive(clap::Subcommand)]
pub enum SimulateCmd {
    /// Traffic control on a synthetic platform: the same hours with and without it, same seed.
    /// Prints the table, writes `OUT/simulation.json` and `OUT/traffic.svg`.
    Traffic(TrafficArgs),
}

/// The platform; the policy is `[traffic]` of the configuration.
#[derive(clap::Args)]
pub struct TrafficArgs {
    /// Simulated hours.
    #[arg(long, default_value_t = 48)]
    hours: usize,
    /// Requests per hour.
    #[arg(long, default_value_t = 20_000)]
    requests_per_hour: usize,
    /// Items per answer.
    #[arg(long, default_value_t = 10)]
    slots: usize,
    /// Warm items in the catalog.
    #[arg(long, default_value_t = 5_000)]
    warm_items: usize,
    /// New items published per hour.
    #[arg(long, default_value_t = 20)]
    new_per_hour: usize,
    /// Warm candidates per request.
    #[arg(long, default_value_t = 100)]
    warm_candidates: usize,
    /// New candidates per request.
    #[arg(long, default_value_t = 20)]
    new_candidates: usize,
    /// A new item's confidence factor in the ranking at no impressions (the warm bias).
    #[arg(long, default_value_t = 0.3)]
    new_confidence: f64,
    /// Slots of an answer that may go to forced new items (default `aggregator.forced_slots`).
    #[arg(long)]
    forced_slots: Option<usize>,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Output directory.
    #[arg(long, default_value = "target/simulate")]
    out: PathBuf,
    #[command(flatten)]
    config: crate::ConfigArgs,
}

pub fn run(cmd: SimulateCmd) -> anyhow::Result<()> {
    let SimulateCmd::Traffic(a) = cmd;
    let cfg = a.config.load()?;
    let platform = Platform {
        hours: a.hours,
        requests_per_hour: a.requests_per_hour,
        slots: a.slots,
        warm_items: a.warm_items,
        new_per_hour: a.new_per_hour,
        warm_candidates: a.warm_candidates,
        new_candidates: a.new_candidates,
        new_confidence: a.new_confidence,
        forced_slots: a.forced_slots.unwrap_or(cfg.aggregator.forced_slots),
        seed: a.seed,
    };
    let sim = simulate(platform, cfg.traffic)?;
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(
        a.out.join("simulation.json"),
        serde_json::to_string_pretty(&sim)?,
    )?;
    let svg = a.out.join("traffic.svg");
    std::fs::write(&svg, sim.svg())?;
    print!("{}", sim.table());
    println!(
        "plot: {}, figures: {}",
        svg.display(),
        a.out.join("simulation.json").display()
    );
    Ok(())
}
