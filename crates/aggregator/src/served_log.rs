//! The served log: every answer's items (request id, request time, user and phase, item, rank,
//! channels, boost, forced) written to Parquet by a writer thread, so that recall never waits on
//! a disk. Files land under `date=YYYY-MM-DD/hour=HH/` of the request time (hive partitioning:
//! pyarrow, DuckDB and Spark read the root as one data set); each is written whole under
//! `_staging/` (a prefix readers skip) and renamed into its partition. The log is best effort:
//! when the writer falls `aggregator.served_queue` answers behind, answers go unlogged and are
//! counted (`coldstart_events_total{what="served_log_dropped"}`) instead of slowing recall.

use crate::recall::Recalled;
use crate::request::RecallQuery;
use coldstart_contracts::aggregator::ServedRow;
use coldstart_runtime::http::count;
use coldstart_runtime::parquet_io::write_atomic;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

enum Msg {
    Rows(Vec<ServedRow>),
    Flush(mpsc::Sender<()>),
}

/// The served log of one aggregator.
pub struct ServedLog {
    tx: SyncSender<Msg>,
    dir: PathBuf,
}

/// The rows of one answer.
pub fn rows_of(q: &RecallQuery, r: &Recalled) -> Vec<ServedRow> {
    r.items
        .iter()
        .enumerate()
        .map(|(rank, c)| ServedRow {
            request_id: q.request_id.clone(),
            at: q.at,
            user_id: q.user_id,
            user_state: r.user_state.as_str().to_string(),
            item_id: c.item_id,
            rank: rank as u32,
            channels: c.channels.clone(),
            boost: c.boost,
            forced: c.forced,
        })
        .collect()
}

/// `(YYYY-MM-DD, HH)` of a time in ms since the epoch, UTC.
fn partition_of(at: i64) -> (String, u32) {
    const DAY: i64 = 86_400_000;
    let (days, ms) = (at.div_euclid(DAY), at.rem_euclid(DAY));
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (format!("{y:04}-{m:02}-{d:02}"), (ms / 3_600_000) as u32)
}

struct Writer {
    dir: PathBuf,
    /// Unique per writer: the node id and its start time.
    prefix: String,
    seq: u64,
}

impl Writer {
    /// Writes `rows`, one file per hour partition they fall in.
    fn write(&mut self, rows: &mut Vec<ServedRow>) {
        if rows.is_empty() {
            return;
        }
        let mut parts: BTreeMap<(String, u32), Vec<ServedRow>> = BTreeMap::new();
        for r in rows.drain(..) {
            parts.entry(partition_of(r.at)).or_default().push(r);
        }
        for ((date, hour), part) in parts {
            self.seq += 1;
            let name = format!("part-{}-{:06}.parquet", self.prefix, self.seq);
            let to = self.dir.join(format!("date={date}/hour={hour:02}"));
            match self.publish(&part, &to, &name) {
                Ok(()) => count("served_log_rows", part.len() as u64),
                Err(e) => {
                    count("served_log_failed", part.len() as u64);
                    tracing::error!(dir = %to.display(), rows = part.len(), error = %e, "served log: a file could not be written; its rows are lost");
                }
            }
        }
    }

    fn publish(&self, rows: &[ServedRow], to: &Path, name: &str) -> std::io::Result<()> {
        let staging = self.dir.join("_staging");
        std::fs::create_dir_all(&staging)?;
        std::fs::create_dir_all(to)?;
        let staged = staging.join(name);
        write_atomic(&staged, &[ServedRow::to_batch(rows)])?;
        std::fs::rename(&staged, to.join(name))?;
        std::fs::File::open(to)?.sync_all()
    }
}

impl ServedLog {
    /// Starts the writer of `dir` for node `node_id`: a file once `flush_rows` rows wait or the
    /// oldest has waited `flush_ms`; at most `queue` answers wait for it.
    pub fn start(
        dir: PathBuf,
        node_id: &str,
        flush_rows: usize,
        flush_ms: u64,
        queue: usize,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let (tx, rx) = mpsc::sync_channel::<Msg>(queue);
        let started = coldstart_runtime::now_ms();
        let safe: String = node_id
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut w = Writer {
            dir: dir.clone(),
            prefix: format!("{safe}-{started}"),
            seq: 0,
        };
        let max_wait = Duration::from_millis(flush_ms);
        std::thread::Builder::new()
            .name("served-log".into())
            .spawn(move || {
                let mut buf: Vec<ServedRow> = Vec::new();
                let mut oldest = Instant::now();
                loop {
                    let msg = if buf.is_empty() {
                        rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                    } else {
                        rx.recv_timeout(max_wait.saturating_sub(oldest.elapsed()))
                    };
                    match msg {
                        Ok(Msg::Rows(rows)) => {
                            if buf.is_empty() {
                                oldest = Instant::now();
                            }
                            buf.extend(rows);
                            if buf.len() >= flush_rows {
                                w.write(&mut buf);
                            }
                        }
                        Ok(Msg::Flush(done)) => {
                            w.write(&mut buf);
                            let _ = done.send(());
                        }
                        Err(RecvTimeoutError::Timeout) => w.write(&mut buf),
                        Err(RecvTimeoutError::Disconnected) => {
                            w.write(&mut buf);
                            return;
                        }
                    }
                }
            })?;
        Ok(Self { tx, dir })
    }

    /// The data set's root.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues an answer's rows; never waits (a full queue drops them, counted).
    pub fn log(&self, rows: Vec<ServedRow>) {
        if rows.is_empty() {
            return;
        }
        let n = rows.len() as u64;
        match self.tx.try_send(Msg::Rows(rows)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                count("served_log_dropped", n)
            }
        }
    }

    /// Writes everything queued so far and waits until it is on disk.
    pub fn flush(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldstart_contracts::types::Channel;

    fn row(request: &str, at: i64, item_id: u64) -> ServedRow {
        ServedRow {
            request_id: request.into(),
            at,
            user_id: 7,
            user_state: "old".into(),
            item_id,
            rank: item_id as u32,
            channels: vec![Channel::Category, Channel::Cluster],
            boost: 1.5,
            forced: item_id == 2,
        }
    }

    #[test]
    fn partitions_are_utc_dates_and_hours() {
        assert_eq!(partition_of(0), ("1970-01-01".into(), 0));
        // 2026-12-02T07:30:00Z
        assert_eq!(partition_of(1_796_196_600_000), ("2026-12-02".into(), 7));
        assert_eq!(partition_of(951_782_400_000), ("2000-02-29".into(), 0));
        assert_eq!(partition_of(-1), ("1969-12-31".into(), 23));
    }

    /// Rows of answers in two hours land in two partition folders, nothing is left in the
    /// staging folder, and reading every file back gives every row.
    #[test]
    fn answers_land_in_their_hour_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let log = ServedLog::start(dir.path().join("served"), "agg/1", 1000, 60_000, 8).unwrap();
        let h = 3_600_000;
        let base = 1_796_196_600_000;
        log.log(vec![row("a", base, 1), row("a", base, 2)]);
        log.log(vec![row("b", base + h, 3)]);
        log.flush();
        let root = dir.path().join("served");
        let mut files = Vec::new();
        for e in walk(&root) {
            files.push(e.strip_prefix(&root).unwrap().to_path_buf());
        }
        files.sort();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(files[0].starts_with("date=2026-12-02/hour=07"), "{files:?}");
        assert!(files[1].starts_with("date=2026-12-02/hour=08"), "{files:?}");
        let mut back = Vec::new();
        for f in &files {
            for b in coldstart_runtime::parquet_io::read_all(&root.join(f)).unwrap() {
                back.extend(ServedRow::from_batch(&b).unwrap());
            }
        }
        assert_eq!(
            back,
            [row("a", base, 1), row("a", base, 2), row("b", base + h, 3)]
        );
        assert_eq!(std::fs::read_dir(root.join("_staging")).unwrap().count(), 0);
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with('_') {
                continue;
            }
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
