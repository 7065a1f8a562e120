//! The aggregator's output rows: `candidates` (DESIGN.md §5), and the served log's rows (what an
//! answer showed, for channel attribution).

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

/// Row `r` of a `channels` column, each name checked.
fn channels_at(ch: &ListArray, r: usize) -> ServiceResult<Vec<Channel>> {
    list_strings(ch, r, "channels")?
        .iter()
        .map(|c| {
            Channel::parse(c).ok_or_else(|| {
                ServiceError::bad_row(r, "channels", format!("unknown channel {c:?}"))
            })
        })
        .collect()
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
                    channels: channels_at(ch, r)?,
                    publish_ts: ts.value(r),
                    boost: boost.value(r),
                    forced: forced.value(r),
                })
            })
            .collect()
    }
}

/// One served item, as the aggregator logs it: which answer (request id, request time, user, the
/// user's phase), where in it (rank, from 0), why (channels), and traffic control's part.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedRow {
    /// The answer's request id.
    pub request_id: String,
    /// Request time, ms.
    pub at: i64,
    /// User.
    pub user_id: u64,
    /// The user's phase (`new`, `warming`, `old`).
    pub user_state: String,
    /// Item.
    pub item_id: u64,
    /// Place in the answer, from 0.
    pub rank: u32,
    /// The channels that recalled it.
    pub channels: Vec<Channel>,
    /// Traffic-control boost.
    pub boost: f32,
    /// Inserted by traffic control.
    pub forced: bool,
}

/// The served log's columns (its files are partitioned by the request time's `date=` and
/// `hour=`, which are not repeated inside).
pub fn served_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("request_id", DataType::Utf8, false),
        Field::new("at", ts_type(), false),
        Field::new("user_id", DataType::UInt64, false),
        Field::new("user_state", DataType::Utf8, false),
        Field::new("item_id", DataType::UInt64, false),
        Field::new("rank", DataType::UInt32, false),
        Field::new("channels", utf8_list(), false),
        Field::new("boost", DataType::Float32, false),
        Field::new("forced", DataType::Boolean, false),
    ]))
}

impl ServedRow {
    /// Encodes served rows.
    pub fn to_batch(rows: &[ServedRow]) -> RecordBatch {
        let mut ch = string_list_builder();
        for r in rows {
            for s in &r.channels {
                ch.values().append_value(s.as_str());
            }
            ch.append(true);
        }
        finish(
            served_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| &r.request_id),
                )),
                ts_array(rows.iter().map(|r| r.at)),
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| r.user_id),
                )),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| &r.user_state),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| r.item_id),
                )),
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.rank))),
                Arc::new(ch.finish()),
                Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.boost))),
                Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.forced)))),
            ],
        )
    }

    /// Decodes served rows (a file of the served log).
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<ServedRow>> {
        let req = column::<StringArray>(batch, "request_id", "utf8")?;
        let at = column::<TimestampMillisecondArray>(batch, "at", TS)?;
        let user = column::<UInt64Array>(batch, "user_id", "uint64")?;
        let state = column::<StringArray>(batch, "user_state", "utf8")?;
        let item = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let rank = column::<UInt32Array>(batch, "rank", "uint32")?;
        let ch = column::<ListArray>(batch, "channels", LIST_UTF8)?;
        let boost = column::<Float32Array>(batch, "boost", "float32")?;
        let forced = column::<BooleanArray>(batch, "forced", "bool")?;
        (0..batch.num_rows())
            .map(|r| {
                Ok(ServedRow {
                    request_id: required(req, r, "request_id", |i| req.value(i).to_string())?,
                    at: required(at, r, "at", |i| at.value(i))?,
                    user_id: required(user, r, "user_id", |i| user.value(i))?,
                    user_state: required(state, r, "user_state", |i| state.value(i).to_string())?,
                    item_id: required(item, r, "item_id", |i| item.value(i))?,
                    rank: required(rank, r, "rank", |i| rank.value(i))?,
                    channels: channels_at(ch, r)?,
                    boost: required(boost, r, "boost", |i| boost.value(i))?,
                    forced: required(forced, r, "forced", |i| forced.value(i))?,
                })
            })
            .collect()
    }
}
