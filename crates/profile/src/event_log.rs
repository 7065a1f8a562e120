//! The durable log of the profile service: every accepted batch of events or users becomes one
//! Parquet file `{seq:010}-{events|users}.parquet`, written atomically and fsync'd before the batch
//! is acknowledged. The files are the training data (readable by pyarrow or any Parquet reader)
//! and, replayed in sequence order at start, they rebuild every profile. Only the profile
//! writer ([`crate::writer`]) appends, in the order it applies.

use crate::Error;
use arrow::record_batch::RecordBatch;
use coldstart_contracts::profile::{LoggedEvent, User};
use coldstart_runtime::parquet_io;
use coldstart_runtime::StorageError;
use std::path::{Path, PathBuf};

/// One replayed file.
pub enum Logged {
    /// Events.
    Events(Vec<LoggedEvent>),
    /// Users.
    Users(Vec<User>),
}

/// The log: a directory of numbered Parquet files (blocking I/O).
pub struct EventLog {
    dir: PathBuf,
    next_seq: u64,
}

fn files(dir: &Path) -> std::io::Result<Vec<(u64, String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".parquet") else {
            continue;
        };
        let Some((seq, kind)) = stem.split_once('-') else {
            continue;
        };
        if let Ok(seq) = seq.parse::<u64>() {
            out.push((seq, kind.to_string(), path));
        }
    }
    out.sort_by_key(|f| f.0);
    Ok(out)
}

impl EventLog {
    /// Opens `dir` (created if missing) and returns the log with every file's rows in order.
    pub fn open(dir: &Path) -> Result<(Self, Vec<Logged>), Error> {
        std::fs::create_dir_all(dir).map_err(StorageError::at(dir))?;
        let mut replay = Vec::new();
        let mut next_seq = 0;
        for (seq, kind, path) in files(dir).map_err(StorageError::at(dir))? {
            next_seq = seq + 1;
            let batches = parquet_io::read_all(&path).map_err(StorageError::at(&path))?;
            for b in &batches {
                match kind.as_str() {
                    "events" => replay.push(Logged::Events(LoggedEvent::from_batch(b)?)),
                    "users" => replay.push(Logged::Users(User::from_batch(b)?)),
                    other => {
                        tracing::warn!(file = %path.display(), kind = other, "unknown log file kind, skipped")
                    }
                }
            }
        }
        Ok((
            Self {
                dir: dir.to_path_buf(),
                next_seq,
            },
            replay,
        ))
    }
}

impl EventLog {
    /// Appends one batch of `kind` (`events` or `users`) durably; returns its file.
    pub fn append(&mut self, kind: &str, batch: RecordBatch) -> Result<PathBuf, Error> {
        let path = self
            .dir
            .join(format!("{:010}-{kind}.parquet", self.next_seq));
        parquet_io::write_atomic(&path, &[batch]).map_err(StorageError::at(&path))?;
        self.next_seq += 1;
        Ok(path)
    }
}
