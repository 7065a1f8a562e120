//! Arrow IPC stream encoding of record batches: the payload of WAL records and of Arrow request
//! bodies on the public API.

use crate::error::{ErrorCode, ServiceError, ServiceResult};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

/// Encodes one batch as an Arrow IPC stream.
pub fn encode(batch: &RecordBatch) -> Vec<u8> {
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, &batch.schema()).expect("in-memory ipc writer");
        w.write(batch).expect("in-memory ipc write");
        w.finish().expect("in-memory ipc finish");
    }
    buf
}

/// Decodes an Arrow IPC stream, refusing more than `max_rows` rows in all.
pub fn decode(bytes: &[u8], max_rows: usize) -> ServiceResult<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| ServiceError::invalid(format!("not an Arrow IPC stream: {e}")))?;
    let mut out = Vec::new();
    let mut rows = 0usize;
    for b in reader {
        let b = b.map_err(|e| ServiceError::invalid(format!("bad Arrow IPC stream: {e}")))?;
        rows += b.num_rows();
        if rows > max_rows {
            return Err(ServiceError::new(
                ErrorCode::PayloadTooLarge,
                format!("the stream has more than {max_rows} rows (limits.max_batch_rows)"),
            ));
        }
        out.push(b);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, StringArray, UInt64Array};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn valid() -> Vec<u8> {
        let batch = RecordBatch::try_from_iter([
            (
                "user_id",
                Arc::new(UInt64Array::from(vec![1u64])) as ArrayRef,
            ),
            (
                "action",
                Arc::new(StringArray::from(vec!["like"])) as ArrayRef,
            ),
        ])
        .unwrap();
        encode(&batch)
    }

    #[test]
    fn round_trips_and_bounds_rows() {
        assert_eq!(decode(&valid(), 10).unwrap()[0].num_rows(), 1);
        assert_eq!(
            decode(&valid(), 0).unwrap_err().code,
            crate::ErrorCode::PayloadTooLarge
        );
    }

    proptest! {
        // untrusted bodies: every truncation and corruption is an error, never a panic
        #[test]
        fn damaged_streams_are_errors(cut in 0usize..400, flip in 0usize..400, byte in any::<u8>()) {
            let mut v = valid();
            if flip < v.len() {
                v[flip] ^= byte;
            }
            v.truncate(cut.min(v.len()));
            let _ = decode(&v, 100);
        }

        #[test]
        fn random_bytes_are_errors(v in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert!(decode(&v, 100).is_err() || v.is_empty());
        }
    }
}
