//! An append-only write-ahead log: each record is `[len u32][crc32 u32][payload]`, and an append
//! of one batch of records ends with `fsync`, so a caller may acknowledge once [`Wal::append`]
//! returns. Opening replays every intact record and truncates a torn tail (a crash in the middle
//! of a write, never acknowledged). Damage with intact records after it is not a torn tail: those
//! records were acknowledged, so the log is not opened (an `InvalidData` error names the damaged
//! offset and the repair command) until [`Wal::repair`] sets the damaged bytes aside.

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

/// The intact record at `off`: its end.
fn record_at(data: &[u8], off: usize) -> Option<usize> {
    let head = data.get(off..off + HEADER)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?);
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    let end = off.checked_add(HEADER + len as usize)?;
    // an empty record is never written: zeroed bytes (a preallocated tail) are not records
    if len == 0
        || len > MAX_RECORD
        || end > data.len()
        || crc32fast::hash(&data[off + HEADER..end]) != crc
    {
        return None;
    }
    Some(end)
}

/// Where intact records start again after damage at `from`: the first offset from which a chain
/// of intact records runs to the end of the data (a lone false match inside garbage does not
/// count), or `None` when nothing intact follows (a torn tail).
fn resync(data: &[u8], from: usize) -> Option<usize> {
    (from + 1..data.len()).find(|&start| {
        let mut off = start;
        while let Some(end) = record_at(data, off) {
            off = end;
        }
        off > start && off == data.len()
    })
}

/// One damaged stretch of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the first damaged byte.
    pub offset: u64,
    /// Damaged bytes.
    pub len: u64,
}

/// What a scan of a log found: intact records (offset, payload) and damage.
struct Scan {
    records: Vec<(usize, Vec<u8>)>,
    damage: Vec<Damage>,
    /// Bytes of a torn tail (damage with nothing intact after it).
    torn: usize,
}

fn scan(data: &[u8]) -> Scan {
    let mut out = Scan {
        records: Vec::new(),
        damage: Vec::new(),
        torn: 0,
    };
    let mut off = 0usize;
    while off < data.len() {
        if let Some(end) = record_at(data, off) {
            out.records.push((off, data[off + HEADER..end].to_vec()));
            off = end;
            continue;
        }
        match resync(data, off) {
            Some(next) => {
                out.damage.push(Damage {
                    offset: off as u64,
                    len: (next - off) as u64,
                });
                off = next;
            }
            None => {
                out.torn = data.len() - off;
                break;
            }
        }
    }
    out
}

impl Wal {
    /// Opens (or creates) the log at `path` and returns it with the payloads of every intact
    /// record. A torn tail is truncated; damage followed by intact records is an `InvalidData`
    /// error naming its offset and the repair command.
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
        let found = scan(&data);
        if let Some(d) = found.damage.first() {
            let after = found
                .records
                .iter()
                .filter(|(o, _)| *o as u64 > d.offset)
                .count();
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: damaged record at offset {} ({} bytes; {} damaged stretches in all), with {after} intact acknowledged records after it: not opened, to lose none of them. Repair: `coldstart wal repair {}` keeps every intact record and sets the damaged bytes aside",
                    path.display(),
                    d.offset,
                    d.len,
                    found.damage.len(),
                    path.display()
                ),
            ));
        }
        let off = data.len() - found.torn;
        if found.torn > 0 {
            tracing::warn!(path = %path.display(), kept = off, dropped = found.torn, "truncating a torn wal tail");
            file.set_len(off as u64)?;
            file.sync_all()?;
        }
        Ok((
            Wal {
                file,
                path: path.to_path_buf(),
                len: off as u64,
            },
            found.records.into_iter().map(|r| r.1).collect(),
        ))
    }

    /// Rewrites the log at `path` with every intact record, in order, and writes each damaged
    /// stretch (and a torn tail) to `{path}.damaged-{offset}` beside it. Returns the damage found
    /// (empty: the log was sound, and is left as it was).
    pub fn repair(path: &Path) -> io::Result<Vec<Damage>> {
        let data = std::fs::read(path)?;
        let found = scan(&data);
        let mut damage = found.damage.clone();
        if found.torn > 0 {
            damage.push(Damage {
                offset: (data.len() - found.torn) as u64,
                len: found.torn as u64,
            });
        }
        if damage.is_empty() {
            return Ok(damage);
        }
        for d in &damage {
            let bytes = &data[d.offset as usize..(d.offset + d.len) as usize];
            let mut side = path.as_os_str().to_owned();
            side.push(format!(".damaged-{}", d.offset));
            crate::parquet_io::write_bytes_atomic(Path::new(&side), bytes)?;
        }
        let mut clean = Vec::with_capacity(data.len());
        for (off, payload) in &found.records {
            let end = off + HEADER + payload.len();
            clean.extend_from_slice(&data[*off..end]);
        }
        crate::parquet_io::write_bytes_atomic(path, &clean)?;
        Ok(damage)
    }

    /// Appends records and fsyncs: when this returns `Ok`, they survive a crash.
    pub fn append<B: AsRef<[u8]>>(&mut self, records: &[B]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(records.iter().map(|r| r.as_ref().len() + HEADER).sum());
        for r in records {
            let r = r.as_ref();
            let len = u32::try_from(r.len())
                .ok()
                .filter(|l| (1..=MAX_RECORD).contains(l))
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "wal record of {} bytes: expected 1 to {MAX_RECORD}",
                            r.len()
                        ),
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

    /// A flipped bit in the last record is a torn tail: replay ends there.
    #[test]
    fn a_flipped_bit_in_the_last_record_is_a_torn_tail() {
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

    /// A flipped byte in the middle of a log (in a payload, or in a length) does not drop the
    /// acknowledged records after it: the log is refused, naming the offset and the repair
    /// command, and left untouched; the repair keeps every intact record and sets the damaged
    /// bytes aside.
    #[test]
    fn damage_in_the_middle_is_reported_not_truncated() {
        for flip in [HEADER + 2 + 7, 2 + 7 + 1] {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("w.log");
            let (mut w, _) = Wal::open(&p).unwrap();
            let recs: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 7 + i as usize]).collect();
            w.append(&recs).unwrap();
            drop(w);
            let mut bytes = std::fs::read(&p).unwrap();
            // the second record starts at 8 + 7 = 15
            let at = 15 + flip - 9;
            bytes[at] ^= 0x5a;
            std::fs::write(&p, &bytes).unwrap();
            let err = match Wal::open(&p) {
                Err(e) => e,
                Ok(_) => panic!("opened a damaged log"),
            };
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            let msg = err.to_string();
            assert!(
                msg.contains("offset 15") && msg.contains("18 intact"),
                "{msg}"
            );
            assert!(msg.contains("coldstart wal repair"), "{msg}");
            assert_eq!(std::fs::read(&p).unwrap(), bytes, "nothing changed on disk");
            let damage = Wal::repair(&p).unwrap();
            assert_eq!(damage.len(), 1, "{damage:?}");
            assert_eq!(damage[0].offset, 15);
            let (_, back) = Wal::open(&p).unwrap();
            let mut want = recs.clone();
            want.remove(1);
            assert_eq!(back, want);
            let side = dir.path().join("w.log.damaged-15");
            assert_eq!(std::fs::read(side).unwrap().len() as u64, damage[0].len);
            assert!(
                Wal::repair(&p).unwrap().is_empty(),
                "a sound log is left alone"
            );
        }
    }
}
