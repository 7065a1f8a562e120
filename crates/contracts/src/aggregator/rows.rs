//! The aggregator's output rows: `candidates` (DESIGN.md §5).

use crate::columns::*;
use crate::types::Channel;
use arrow::array::*;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use coldstart_runtime::{ServiceError, ServiceResult};
use std::sync::Arc;

/// One recalled item.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Candidate {
    /// Item.
    pub item_id: u64,
    /// Merge score.
    pub score: f32,
    /// The channels that recalled it.
    pub channels: Vec<Channel>,
    /// Publish time, ms.
    pub publish_ts: i64,
    /// Traffic-control boost applied to the score (1 = none).
    pub boost: f32,
    /// Inserted by traffic control regardless of score.
    pub forced: bool,
}

/// `candidates`: the recall output (DESIGN.md §5).
pub fn candidates_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::UInt64, false),
        Field::new("score", DataType::Float32, false),
        Field::new("channels", utf8_list(), false),
        Field::new("publish_ts", ts_type(), false),
        Field::new("boost", DataType::Float32, false),
        Field::new("forced", DataType::Boolean, false),
    ]))
}

impl Candidate {
    /// Encodes candidates as a `candidates` batch.
    pub fn to_batch(cands: &[Candidate]) -> RecordBatch {
        let mut ch = string_list_builder();
        for c in cands {
            for s in &c.channels {
                ch.values().append_value(s.as_str());
            }
            ch.append(true);
        }
        finish(
            candidates_schema(),
            vec![
                Arc::new(UInt64Array::from_iter_values(
                    cands.iter().map(|c| c.item_id),
                )),
                Arc::new(Float32Array::from_iter_values(
                    cands.iter().map(|c| c.score),
                )),
                Arc::new(ch.finish()),
                ts_array(cands.iter().map(|c| c.publish_ts)),
                Arc::new(Float32Array::from_iter_values(
                    cands.iter().map(|c| c.boost),
                )),
                Arc::new(BooleanArray::from_iter(
                    cands.iter().map(|c| Some(c.forced)),
                )),
            ],
        )
    }

    /// Decodes a `candidates` batch.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<Candidate>> {
        let id = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let score = column::<Float32Array>(batch, "score", "float32")?;
        let ch = column::<ListArray>(batch, "channels", LIST_UTF8)?;
        let ts = column::<TimestampMillisecondArray>(batch, "publish_ts", TS)?;
        let boost = column::<Float32Array>(batch, "boost", "float32")?;
        let forced = column::<BooleanArray>(batch, "forced", "bool")?;
        (0..batch.num_rows())
            .map(|r| {
                Ok(Candidate {
                    item_id: id.value(r),
                    score: score.value(r),
                    channels: list_strings(ch, r, "channels")?
                        .iter()
                        .map(|c| {
                            Channel::parse(c).ok_or_else(|| {
                                ServiceError::bad_row(
                                    r,
                                    "channels",
                                    format!("unknown channel {c:?}"),
                                )
                            })
                        })
                        .collect::<ServiceResult<_>>()?,
                    publish_ts: ts.value(r),
                    boost: boost.value(r),
                    forced: forced.value(r),
                })
            })
            .collect()
    }
}
