//! Parquet files written so that a reader never sees half a file: write to `*.tmp`, fsync, rename,
//! fsync the directory. Used for the profile event log, the sharder snapshots and model artifacts
//! (and, through [`write_bytes_atomic`], for small non-Parquet files such as manifests).

use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::io;
use std::path::Path;

fn to_io(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Writes `batches` (all of one schema) to `path` atomically and durably.
pub fn write_atomic(path: &Path, batches: &[RecordBatch]) -> io::Result<()> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut w =
        ArrowWriter::try_new(file.try_clone()?, first.schema(), Some(props)).map_err(to_io)?;
    for b in batches {
        w.write(b).map_err(to_io)?;
    }
    w.close().map_err(to_io)?;
    file.sync_all()?;
    publish(&tmp, path)
}

/// Writes any small file the same way: whole and durable, or not at all.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    io::Write::write_all(&mut file, bytes)?;
    file.sync_all()?;
    publish(&tmp, path)
}

/// Renames a synced temporary file into place and syncs the directory.
fn publish(tmp: &Path, path: &Path) -> io::Result<()> {
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads every batch of a Parquet file.
pub fn read_all(path: &Path) -> io::Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)
        .map_err(to_io)?
        .build()
        .map_err(to_io)?;
    reader.collect::<Result<Vec<_>, _>>().map_err(to_io)
}

/// Reads every batch of a Parquet file already in memory (e.g. bytes whose checksum was checked,
/// so that what is decoded is exactly what was verified).
pub fn read_bytes(bytes: Vec<u8>) -> io::Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .map_err(to_io)?
        .build()
        .map_err(to_io)?;
    reader.collect::<Result<Vec<_>, _>>().map_err(to_io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray, UInt64Array};
    use std::sync::Arc;

    #[test]
    fn round_trips_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.parquet");
        let batch = RecordBatch::try_from_iter([
            (
                "user_id",
                Arc::new(UInt64Array::from(vec![1u64, 7])) as ArrayRef,
            ),
            (
                "action",
                Arc::new(StringArray::from(vec!["like", "share"])) as ArrayRef,
            ),
        ])
        .unwrap();
        write_atomic(&p, std::slice::from_ref(&batch)).unwrap();
        let back = read_all(&p).unwrap();
        assert_eq!(back, vec![batch]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
