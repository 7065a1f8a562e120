//! An append-only write-ahead log: each record is `[len u32][crc32 u32][payload]`, and an append
//! of one batch of records ends with `fsync`, so a caller may acknowledge once [`Wal::append`]
//! returns. Opening replays every intact record and truncates a torn tail (a crash in the middle
//! of a write), which was never acknowledged.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const HEADER: usize = 8;
/// Largest record accepted on replay; anything larger is treated as corruption.
const MAX_RECORD: u32 = 1 << 30;

/// An open log.
pub struct Wal {
    file: File,
    path: PathBuf,
    len: u64,
}

impl Wal {
    /// Opens (or creates) the log at `path` and returns it with the payloads of every intact record.
    pub fn open(path: &Path) -> io::Result<(Wal, Vec<Vec<u8>>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut data = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut data)?;
        let mut records = Vec::new();
        let mut off = 0usize;
        while off + HEADER <= data.len() {
            let len = u32::from_le_bytes(data[off..off + 4].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(data[off + 4..off + 8].try_into().expect("4 bytes"));
            let end = off + HEADER + len as usize;
            if len > MAX_RECORD || end > data.len() {
                break;
            }
            let payload = &data[off + HEADER..end];
            if crc32fast::hash(payload) != crc {
                break;
            }
            records.push(payload.to_vec());
            off = end;
        }
        if off < data.len() {
            tracing::warn!(path = %path.display(), kept = off, dropped = data.len() - off, "truncating a torn wal tail");
            file.set_len(off as u64)?;
            file.sync_all()?;
        }
        Ok((
            Wal {
                file,
                path: path.to_path_buf(),
                len: off as u64,
            },
            records,
        ))
    }

    /// Appends records and fsyncs: when this returns `Ok`, they survive a crash.
    pub fn append<B: AsRef<[u8]>>(&mut self, records: &[B]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.as_ref().len() + HEADER).sum());
        for r in records {
            let r = r.as_ref();
            let len = u32::try_from(r.len())
                .ok()
                .filter(|l| *l <= MAX_RECORD)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("wal record of {} bytes is too large", r.len()),
                    )
                })?;
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(r).to_le_bytes());
            buf.extend_from_slice(r);
        }
        if let Err(e) = self
            .file
            .write_all(&buf)
            .and_then(|_| self.file.sync_data())
        {
            // Leave no half record behind a failed append: the next open would drop it anyway,
            // but later appends must not follow garbage.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Empties the log (after its content was saved elsewhere, e.g. in a snapshot).
    pub fn reset(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.len = 0;
        Ok(())
    }

    /// Bytes in the log.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the log holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_records_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.log");
        {
            let (mut w, recs) = Wal::open(&p).unwrap();
            assert!(recs.is_empty());
            w.append(&[b"one".as_slice(), b"two"]).unwrap();
            w.append(&[b"three"]).unwrap();
        }
        // simulate a crash in the middle of a write
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (mut w, recs) = Wal::open(&p).unwrap();
        assert_eq!(
            recs,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        w.append(&[b"four"]).unwrap();
        let (_, recs) = Wal::open(&p).unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[3], b"four");
    }

    #[test]
    fn a_flipped_bit_ends_replay_there() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.log");
        let (mut w, _) = Wal::open(&p).unwrap();
        w.append(&[b"aaaa".as_slice(), b"bbbb"]).unwrap();
        drop(w);
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        let (_, recs) = Wal::open(&p).unwrap();
        assert_eq!(recs, vec![b"aaaa".to_vec()]);
    }
}
