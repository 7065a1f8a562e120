//! The sharder's durable store: an actor on a `SyncArbiter` (it blocks on fsync) that owns the
//! write-ahead log and is the only writer of the [`Index`]. A batch of postings is appended to the
//! log and fsync'd before it is applied and acknowledged; once the log passes
//! `sharder.snapshot_wal_bytes` the whole index is written as a Parquet snapshot and the log is
//! emptied. Opening loads the snapshot and replays the log; applying is idempotent, so a crash
//! between snapshot and log reset only replays entries already present.

use crate::index::Index;
use crate::Error;
use actix::prelude::*;
use coldstart_contracts::sharder::Posting;
use coldstart_runtime::StorageError;
use coldstart_runtime::{ipc, parquet_io, wal::Wal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::info;

const SNAPSHOT: &str = "snapshot.parquet";
const WAL: &str = "wal.log";
/// Postings applied at once on replay.
const REPLAY_BATCH: usize = 500_000;
/// The content model versions this sharder has swapped to, oldest first (JSON).
const MODELS: &str = "models.json";
/// A batch of at least this many postings (an import, a catch-up, a model swap) leaves freed
/// memory behind (decoded rows, rebuilt lists); it is handed back to the system afterwards.
const TRIM_AFTER: usize = 10_000;
/// Versions remembered in `models.json` (their lists are long gone once this many newer exist).
const MODEL_HISTORY: usize = 64;

/// The store actor.
pub struct Store {
    wal: Wal,
    index: Arc<Index>,
    dir: PathBuf,
    snapshot: SnapshotRule,
    /// Records in the log (replayed and appended since).
    wal_records: u64,
    models: Vec<String>,
}

/// When the whole index is written as a snapshot and the log emptied: once the log exceeds
/// either bound (bytes, or records — many small publishes make a log slow to replay long before
/// it is large).
#[derive(Debug, Clone, Copy)]
pub struct SnapshotRule {
    /// `sharder.snapshot_wal_bytes`.
    pub wal_bytes: u64,
    /// `sharder.snapshot_wal_records`.
    pub wal_records: u64,
}

impl SnapshotRule {
    /// A rule by bytes only.
    pub fn bytes(wal_bytes: u64) -> Self {
        Self {
            wal_bytes,
            wal_records: u64::MAX,
        }
    }
}

impl Actor for Store {
    type Context = SyncContext<Self>;
}

/// Make postings durable, then visible.
#[derive(Message)]
#[rtype(result = "Result<usize, Error>")]
pub struct Apply(pub Vec<Posting>);

/// Records that content model `version` is now current (after its postings were applied) and
/// drops the cluster lists of versions older than the newest `keep`; answers how many went.
/// The drop is made durable by a snapshot; should the process die first, the lists come back on
/// replay and the next `Retire` (the model watch runs one at every start) drops them again.
#[derive(Message)]
#[rtype(result = "Result<usize, Error>")]
pub struct Retire {
    /// The version now current.
    pub version: String,
    /// Versions whose lists are kept, the current one included.
    pub keep: usize,
}

/// Returns the allocator's free memory to the system (glibc keeps it otherwise, and a sharder's
/// resident size would keep the peak of its largest batch).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Store {
    /// Loads the snapshot and replays the log under `dir` into `index`.
    pub fn open(dir: &Path, index: Arc<Index>, snapshot: SnapshotRule) -> Result<Self, Error> {
        // applied in large batches, not record by record: each list is merged and sorted once
        // per batch, so a restart grows with the log, not with the log times the lists' lengths
        let mut pending: Vec<Posting> = Vec::new();
        let flush = |pending: &mut Vec<Posting>, force: bool| {
            if force || pending.len() >= REPLAY_BATCH {
                index.apply(pending);
                pending.clear();
            }
        };
        let snap = dir.join(SNAPSHOT);
        let mut restored = 0usize;
        if snap.exists() {
            for b in parquet_io::read_all(&snap).map_err(StorageError::at(&snap))? {
                let postings = Posting::from_batch(&b)?;
                restored += postings.len();
                pending.extend(postings);
                flush(&mut pending, false);
            }
        }
        let wal_path = dir.join(WAL);
        let (wal, records) = Wal::open(&wal_path).map_err(StorageError::at(&wal_path))?;
        let mut replayed = 0usize;
        let mut progress = std::time::Instant::now();
        for (done, r) in records.iter().enumerate() {
            if progress.elapsed() > std::time::Duration::from_secs(2) {
                // a long replay says how far it is (`cargo xtask up` waits while it does)
                info!(
                    records = done,
                    of = records.len(),
                    postings = replayed,
                    "replaying the log"
                );
                progress = std::time::Instant::now();
            }
            for b in ipc::decode(r, usize::MAX)? {
                let postings = Posting::from_batch(&b)?;
                replayed += postings.len();
                pending.extend(postings);
                flush(&mut pending, false);
            }
        }
        flush(&mut pending, true);
        let wal_records = records.len() as u64;
        drop(records);
        let models_path = dir.join(MODELS);
        let models: Vec<String> = match std::fs::read(&models_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| StorageError::at(&models_path)(std::io::Error::other(e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StorageError::at(&models_path)(e).into()),
        };
        let s = index.stats();
        info!(dir = %dir.display(), restored, replayed, lists = s.lists, entries = s.entries, items = s.items, models = ?models, "sharder store opened");
        Ok(Self {
            wal,
            index,
            dir: dir.to_path_buf(),
            snapshot,
            wal_records,
            models,
        })
    }

    fn snapshot(&mut self) -> Result<(), Error> {
        let path = self.dir.join(SNAPSHOT);
        let all = self.index.all();
        let batches: Vec<_> = all.chunks(64 * 1024).map(Posting::to_batch).collect();
        parquet_io::write_atomic(&path, &batches).map_err(StorageError::at(&path))?;
        let wal_bytes = self.wal.len();
        self.wal
            .reset()
            .map_err(StorageError::at(self.wal.path()))?;
        self.wal_records = 0;
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
        self.apply(msg)
    }
}

impl Store {
    fn apply(&mut self, msg: Apply) -> Result<usize, Error> {
        if msg.0.is_empty() {
            return Ok(0);
        }
        let record = ipc::encode(&Posting::to_batch(&msg.0));
        self.wal
            .append(&[record])
            .map_err(StorageError::at(self.wal.path()))?;
        self.wal_records += 1;
        self.index.apply(&msg.0);
        if msg.0.len() >= TRIM_AFTER {
            trim_heap();
        }
        if self.wal.len() > self.snapshot.wal_bytes || self.wal_records > self.snapshot.wal_records
        {
            // The postings are durable in the log already; a failed snapshot is retried next time.
            if let Err(e) = self.snapshot() {
                tracing::error!(error = %e, "snapshot failed, the wal keeps growing");
            }
        }
        Ok(msg.0.len())
    }
}

impl Handler<Retire> for Store {
    type Result = Result<usize, Error>;

    fn handle(&mut self, msg: Retire, _: &mut Self::Context) -> Self::Result {
        self.retire(msg.version, msg.keep)
    }
}

impl Store {
    fn retire(&mut self, version: String, keep: usize) -> Result<usize, Error> {
        self.models.retain(|v| *v != version);
        self.models.push(version);
        let excess = self.models.len().saturating_sub(MODEL_HISTORY);
        self.models.drain(..excess);
        let path = self.dir.join(MODELS);
        let json = serde_json::to_vec(&self.models).expect("a list of strings serialises");
        parquet_io::write_bytes_atomic(&path, &json).map_err(StorageError::at(&path))?;
        let old = self.models.len().saturating_sub(keep.max(1));
        let dropped = self.index.drop_cluster_versions(&self.models[..old]);
        if dropped > 0 {
            self.snapshot()?;
            info!(dropped, retired = ?&self.models[..old], "cluster lists of retired model versions dropped");
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldstart_contracts::sharder::ListEntry;
    use coldstart_contracts::types::ListKind::{self, Category, Cluster};

    fn post(kind: ListKind, key: &str, id: u64) -> Posting {
        Posting::List(ListEntry::new(kind, key, id, id as i64))
    }

    fn p(key: &str, id: u64) -> Posting {
        post(Category, key, id)
    }

    #[test]
    fn survives_reopen_through_wal_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        {
            let idx = Arc::new(Index::new(100, 100));
            let mut s = Store::open(dir.path(), idx, SnapshotRule::bytes(1)).unwrap(); // snapshot after every batch
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
        Store::open(dir.path(), idx.clone(), SnapshotRule::bytes(1)).unwrap();
        let ids: Vec<u64> = idx
            .read(Category, "a", 10)
            .iter()
            .map(|e| e.item_id)
            .collect();
        assert_eq!(ids, [4, 3, 2, 1, 0]);
    }

    /// A log of many small records is snapshotted by its record count long before its bytes
    /// would call for it, and the count starts again from the records replayed at open.
    #[test]
    fn snapshots_by_record_count() {
        let dir = tempfile::tempdir().unwrap();
        let rule = SnapshotRule {
            wal_bytes: u64::MAX,
            wal_records: 3,
        };
        let idx = Arc::new(Index::new(100, 100));
        let mut s = Store::open(dir.path(), idx.clone(), rule).unwrap();
        for i in 0..3 {
            s.apply(Apply(vec![p("a", i)])).unwrap();
        }
        assert_eq!(s.wal_records, 3, "not yet: at most 3 records");
        drop(s);
        let mut s = Store::open(dir.path(), Arc::new(Index::new(100, 100)), rule).unwrap();
        assert_eq!(s.wal_records, 3, "counted from the replay");
        s.apply(Apply(vec![p("a", 3)])).unwrap();
        assert_eq!(
            (s.wal_records, s.wal.len()),
            (0, 0),
            "snapshot written, log emptied"
        );
        let idx = Arc::new(Index::new(100, 100));
        Store::open(dir.path(), idx.clone(), rule).unwrap();
        assert_eq!(idx.read(Category, "a", 10).len(), 4);
    }

    #[test]
    fn retired_versions_stay_dropped_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let list = |version: &str| post(Cluster, &format!("{version}:0"), 1);
        let retire = |s: &mut Store, v: &str| s.retire(v.into(), 2).unwrap();
        {
            let idx = Arc::new(Index::new(100, 100));
            let mut s =
                Store::open(dir.path(), idx.clone(), SnapshotRule::bytes(u64::MAX)).unwrap();
            for v in ["v1", "v2", "v3"] {
                s.apply(Apply(vec![list(v)])).unwrap();
                let dropped = retire(&mut s, v);
                assert_eq!(dropped, usize::from(v == "v3"), "{v}");
            }
            assert!(idx.read(Cluster, "v1:0", 5).is_empty());
            assert_eq!(
                idx.read(Cluster, "v2:0", 5).len(),
                1,
                "the one before is kept"
            );
        }
        let idx = Arc::new(Index::new(100, 100));
        let mut s = Store::open(dir.path(), idx.clone(), SnapshotRule::bytes(u64::MAX)).unwrap();
        assert_eq!(s.models, ["v1", "v2", "v3"]);
        assert!(
            idx.read(Cluster, "v1:0", 5).is_empty(),
            "the drop was durable"
        );
        assert_eq!(retire(&mut s, "v3"), 0);
    }
}
