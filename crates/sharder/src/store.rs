//! The sharder's durable store: an actor on a `SyncArbiter` (it blocks on fsync) that owns the
//! write-ahead log and is the only writer of the [`Index`]. A batch of postings is appended to the
//! log and fsync'd before it is applied and acknowledged; once the log passes
//! `sharder.snapshot_wal_bytes` the whole index is written as a Parquet snapshot and the log is
//! emptied. Opening loads the snapshot and replays the log; applying is idempotent, so a crash
//! between snapshot and log reset only replays entries already present.

use crate::index::Index;
use crate::Error;
use actix::prelude::*;
use coldstart_common::rows::Posting;
use coldstart_common::{ipc, parquet_io, wal::Wal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::info;

const SNAPSHOT: &str = "snapshot.parquet";
const WAL: &str = "wal.log";

/// The store actor.
pub struct Store {
    wal: Wal,
    index: Arc<Index>,
    dir: PathBuf,
    snapshot_wal_bytes: u64,
}

impl Actor for Store {
    type Context = SyncContext<Self>;
}

/// Make postings durable, then visible.
#[derive(Message)]
#[rtype(result = "Result<usize, Error>")]
pub struct Apply(pub Vec<Posting>);

impl Store {
    /// Loads the snapshot and replays the log under `dir` into `index`.
    pub fn open(dir: &Path, index: Arc<Index>, snapshot_wal_bytes: u64) -> Result<Self, Error> {
        let snap = dir.join(SNAPSHOT);
        let mut restored = 0usize;
        if snap.exists() {
            for b in parquet_io::read_all(&snap).map_err(|e| Error::Storage {
                path: snap.clone(),
                source: e,
            })? {
                let postings = Posting::from_batch(&b)?;
                restored += postings.len();
                index.apply(&postings);
            }
        }
        let wal_path = dir.join(WAL);
        let (wal, records) = Wal::open(&wal_path).map_err(|e| Error::Storage {
            path: wal_path.clone(),
            source: e,
        })?;
        let mut replayed = 0usize;
        for r in &records {
            for b in ipc::decode(r, usize::MAX)? {
                let postings = Posting::from_batch(&b)?;
                replayed += postings.len();
                index.apply(&postings);
            }
        }
        let s = index.stats();
        info!(dir = %dir.display(), restored, replayed, lists = s.lists, entries = s.entries, items = s.items, "sharder store opened");
        Ok(Self {
            wal,
            index,
            dir: dir.to_path_buf(),
            snapshot_wal_bytes,
        })
    }

    fn snapshot(&mut self) -> Result<(), Error> {
        let path = self.dir.join(SNAPSHOT);
        let all = self.index.all();
        let batches: Vec<_> = all.chunks(64 * 1024).map(Posting::to_batch).collect();
        parquet_io::write_atomic(&path, &batches).map_err(|e| Error::Storage {
            path: path.clone(),
            source: e,
        })?;
        let wal_bytes = self.wal.len();
        self.wal.reset().map_err(|e| Error::Storage {
            path: self.wal.path().to_path_buf(),
            source: e,
        })?;
        info!(
            postings = all.len(),
            wal_bytes, "snapshot written, wal emptied"
        );
        Ok(())
    }
}

impl Handler<Apply> for Store {
    type Result = Result<usize, Error>;

    fn handle(&mut self, msg: Apply, _: &mut Self::Context) -> Self::Result {
        if msg.0.is_empty() {
            return Ok(0);
        }
        let record = ipc::encode(&Posting::to_batch(&msg.0));
        self.wal.append(&[record]).map_err(|e| Error::Storage {
            path: self.wal.path().to_path_buf(),
            source: e,
        })?;
        self.index.apply(&msg.0);
        if self.wal.len() > self.snapshot_wal_bytes {
            // The postings are durable in the log already; a failed snapshot is retried next time.
            if let Err(e) = self.snapshot() {
                tracing::error!(error = %e, "snapshot failed, the wal keeps growing");
            }
        }
        Ok(msg.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: &str, id: u64) -> Posting {
        Posting {
            kind: "category".into(),
            key: key.into(),
            item_id: id,
            publish_ts: id as i64,
            category: None,
            keywords: None,
            cluster: None,
        }
    }

    #[test]
    fn survives_reopen_through_wal_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        {
            let idx = Arc::new(Index::new(100, 100));
            let mut s = Store::open(dir.path(), idx, 1).unwrap(); // snapshot after every batch
            for i in 0..5 {
                s.wal
                    .append(&[ipc::encode(&Posting::to_batch(&[p("a", i)]))])
                    .unwrap();
                s.index.apply(&[p("a", i)]);
                if i == 2 {
                    s.snapshot().unwrap();
                }
            }
        }
        let idx = Arc::new(Index::new(100, 100));
        Store::open(dir.path(), idx.clone(), 1).unwrap();
        let ids: Vec<u64> = idx
            .read("category", "a", 10)
            .iter()
            .map(|e| e.item_id)
            .collect();
        assert_eq!(ids, [4, 3, 2, 1, 0]);
    }
}
