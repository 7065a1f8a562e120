//! A sharder's restart time: a store whose log holds `--postings` list postings (publish batches
//! of `--batch`: each item filed under its category, two keywords and `recent`), opened and
//! replayed into a fresh index. Prints the time and the rate; xtask runs it at several sizes to
//! show how the time grows with the log.

use coldstart_contracts::sharder::{ListEntry, Posting};
use coldstart_contracts::types::ListKind;
use coldstart_runtime::{ipc, wal::Wal};
use coldstart_sharder::index::Index;
use coldstart_sharder::store::{SnapshotRule, Store};
use std::sync::Arc;
use std::time::Instant;

/// Arguments.
#[derive(clap::Args)]
pub struct RestartBench {
    /// List postings in the log.
    #[arg(long, default_value_t = 1_000_000)]
    postings: usize,
    /// Postings per log record (one publish batch).
    #[arg(long, default_value_t = 400)]
    batch: usize,
    /// Categories (the keywords are ten times as many).
    #[arg(long, default_value_t = 200)]
    categories: u64,
}

pub fn run(a: RestartBench) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let t = Instant::now();
    {
        let (mut wal, _) = Wal::open(&dir.path().join("wal.log"))?;
        let bar = indicatif::ProgressBar::new(a.postings as u64).with_message("writing the log");
        let (mut written, mut item) = (0usize, 0u64);
        while written < a.postings {
            let mut batch = Vec::with_capacity(a.batch);
            while batch.len() < a.batch && written + batch.len() < a.postings {
                item += 1;
                let ts = item as i64 * 1000;
                let c = item % a.categories;
                for (kind, key) in [
                    (ListKind::Category, format!("c{c}")),
                    (
                        ListKind::Keyword,
                        format!("k{}", item % (10 * a.categories)),
                    ),
                    (
                        ListKind::Keyword,
                        format!("k{}", (item * 7) % (10 * a.categories)),
                    ),
                    (ListKind::Recent, String::new()),
                ] {
                    batch.push(Posting::List(ListEntry::new(kind, key, item, ts)));
                }
            }
            written += batch.len();
            wal.append(&[ipc::encode(&Posting::to_batch(&batch))])?;
            bar.inc(batch.len() as u64);
        }
        bar.finish_and_clear();
    }
    let bytes = std::fs::metadata(dir.path().join("wal.log"))?.len();
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let index = Arc::new(Index::new(1000, 5000));
    let store = Store::open(dir.path(), index.clone(), SnapshotRule::bytes(u64::MAX))?;
    let open_s = t.elapsed().as_secs_f64();
    drop(store);
    let lists = index.stats().lists;
    println!(
        "restart: {} postings in {} records ({:.1} MB of log, written in {write_s:.1} s) replayed in {open_s:.2} s ({:.0} postings/s), {lists} lists",
        a.postings,
        a.postings.div_ceil(a.batch),
        bytes as f64 / 1e6,
        a.postings as f64 / open_s.max(1e-9)
    );
    let result = serde_json::json!({
        "postings": a.postings, "records": a.postings.div_ceil(a.batch), "wal_bytes": bytes,
        "open_s": open_s, "postings_per_s": a.postings as f64 / open_s.max(1e-9),
    });
    println!("BENCH {result}");
    Ok(())
}
