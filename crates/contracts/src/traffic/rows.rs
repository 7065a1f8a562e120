//! The traffic controller's rows: registrations and exposures in, ledger rows out.

use crate::columns::*;
use crate::types::Action;
use arrow::array::*;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use coldstart_runtime::{ServiceError, ServiceResult};
use std::sync::Arc;

/// A new item registered with the traffic controller.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// Item.
    pub item_id: u64,
    /// Publish time, ms.
    pub publish_ts: i64,
    /// Author.
    pub author_id: Option<u64>,
    /// Content quality.
    pub quality: Option<f32>,
    /// The author's quality tier.
    pub author_quality: Option<f32>,
}

/// An impression or click of a new item, forwarded to traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure {
    /// Item.
    pub item_id: u64,
    /// User.
    pub user_id: u64,
    /// When, ms.
    pub ts: i64,
    /// An impression or a click.
    pub action: Action,
    /// The recall answer it followed, when the client named it.
    pub request_id: Option<String>,
}

/// A traffic ledger row.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LedgerRow {
    /// Item.
    pub item_id: u64,
    /// Publish time, ms.
    pub publish_ts: i64,
    /// Content quality.
    pub quality: Option<f32>,
    /// Impressions the item is guaranteed.
    pub target_impressions: u64,
    /// Impressions so far.
    pub impressions: u64,
    /// Clicks so far.
    pub clicks: u64,
}

/// The traffic policy's help for one new item at a request.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BoostRow {
    /// Item.
    pub item_id: u64,
    /// Its score multiplier, at least 1.
    pub boost: f32,
    /// How far behind its paced schedule, as a share of its target (negative: ahead).
    pub behind: f32,
    /// Whether it may take a forced slot (behind enough, within its window).
    pub forceable: bool,
}

/// Boost rows.
pub fn boosts_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::UInt64, false),
        Field::new("boost", DataType::Float32, false),
        Field::new("behind", DataType::Float32, false),
        Field::new("forceable", DataType::Boolean, false),
    ]))
}

impl BoostRow {
    /// Encodes boost rows.
    pub fn to_batch(rows: &[BoostRow]) -> RecordBatch {
        finish(
            boosts_schema(),
            vec![
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| r.item_id),
                )),
                Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.boost))),
                Arc::new(Float32Array::from_iter_values(
                    rows.iter().map(|r| r.behind),
                )),
                Arc::new(BooleanArray::from_iter(
                    rows.iter().map(|r| Some(r.forceable)),
                )),
            ],
        )
    }

    /// Decodes boost rows: a boost below 1 or not finite is refused (a peer's bug would
    /// otherwise bury or flood an item).
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<BoostRow>> {
        let id = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let boost = column::<Float32Array>(batch, "boost", "float32")?;
        let behind = column::<Float32Array>(batch, "behind", "float32")?;
        let forceable = column::<BooleanArray>(batch, "forceable", "boolean")?;
        (0..batch.num_rows())
            .map(|r| {
                let b = boost.value(r);
                if !(b.is_finite() && b >= 1.0) {
                    return Err(ServiceError::invalid(format!(
                        "boosts: row {r} (item {}): boost {b} is not a finite number >= 1",
                        id.value(r)
                    )));
                }
                Ok(BoostRow {
                    item_id: id.value(r),
                    boost: b,
                    behind: behind.value(r),
                    forceable: forceable.value(r),
                })
            })
            .collect()
    }
}

/// New-item registrations for traffic.
pub fn registrations_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::UInt64, false),
        Field::new("publish_ts", ts_type(), false),
        Field::new("author_id", DataType::UInt64, true),
        Field::new("quality", DataType::Float32, true),
        Field::new("author_quality", DataType::Float32, true),
    ]))
}

/// Impressions and clicks of new items, for traffic.
pub fn exposures_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::UInt64, false),
        Field::new("user_id", DataType::UInt64, false),
        Field::new("ts", ts_type(), false),
        Field::new("action", DataType::Utf8, false),
        Field::new("request_id", DataType::Utf8, true),
    ]))
}

/// Traffic ledger rows.
pub fn ledger_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::UInt64, false),
        Field::new("publish_ts", ts_type(), false),
        Field::new("quality", DataType::Float32, true),
        Field::new("target_impressions", DataType::UInt64, false),
        Field::new("impressions", DataType::UInt64, false),
        Field::new("clicks", DataType::UInt64, false),
    ]))
}

impl Registration {
    /// Encodes registrations.
    pub fn to_batch(rows: &[Registration]) -> RecordBatch {
        finish(
            registrations_schema(),
            vec![
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| r.item_id),
                )),
                ts_array(rows.iter().map(|r| r.publish_ts)),
                Arc::new(UInt64Array::from_iter(rows.iter().map(|r| r.author_id))),
                Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.quality))),
                Arc::new(Float32Array::from_iter(
                    rows.iter().map(|r| r.author_quality),
                )),
            ],
        )
    }

    /// Decodes registrations.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<Registration>> {
        let id = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let ts = column::<TimestampMillisecondArray>(batch, "publish_ts", TS)?;
        let author = column::<UInt64Array>(batch, "author_id", "uint64")?;
        let q = column::<Float32Array>(batch, "quality", "float32")?;
        // absent from registrations logged before authors were rated
        let aq = opt_column::<Float32Array>(batch, "author_quality", "float32")?;
        (0..batch.num_rows())
            .map(|r| {
                Ok(Registration {
                    item_id: required(id, r, "item_id", |i| id.value(i))?,
                    publish_ts: required(ts, r, "publish_ts", |i| ts.value(i))?,
                    author_id: optional(Some(author as &dyn Array), r, |i| author.value(i)),
                    quality: optional(Some(q as &dyn Array), r, |i| q.value(i)),
                    author_quality: optional(aq.map(|a| a as &dyn Array), r, |i| {
                        aq.unwrap().value(i)
                    }),
                })
            })
            .collect()
    }
}

impl Exposure {
    /// Encodes exposures.
    pub fn to_batch(rows: &[Exposure]) -> RecordBatch {
        finish(
            exposures_schema(),
            vec![
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| r.item_id),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| r.user_id),
                )),
                ts_array(rows.iter().map(|r| r.ts)),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.action.as_str()),
                )),
                Arc::new(StringArray::from_iter(
                    rows.iter().map(|r| r.request_id.as_deref()),
                )),
            ],
        )
    }

    /// Decodes exposures.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<Exposure>> {
        let id = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let user = column::<UInt64Array>(batch, "user_id", "uint64")?;
        let ts = column::<TimestampMillisecondArray>(batch, "ts", TS)?;
        let action = column::<StringArray>(batch, "action", "utf8")?;
        let request = opt_column::<StringArray>(batch, "request_id", "utf8")?;
        (0..batch.num_rows())
            .map(|r| {
                let action: Action = required(action, r, "action", |i| action.value(i))?
                    .parse()
                    .map_err(|e: String| ServiceError::bad_row(r, "action", e))?;
                if !action.is_exposure() {
                    return Err(ServiceError::bad_row(
                        r,
                        "action",
                        format!("{action:?} is not impression or click"),
                    ));
                }
                Ok(Exposure {
                    item_id: required(id, r, "item_id", |i| id.value(i))?,
                    user_id: required(user, r, "user_id", |i| user.value(i))?,
                    ts: required(ts, r, "ts", |i| ts.value(i))?,
                    action,
                    request_id: request_id_at(request, r)?,
                })
            })
            .collect()
    }
}

impl LedgerRow {
    /// Encodes ledger rows.
    pub fn to_batch(rows: &[LedgerRow]) -> RecordBatch {
        finish(
            ledger_schema(),
            vec![
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| r.item_id),
                )),
                ts_array(rows.iter().map(|r| r.publish_ts)),
                Arc::new(Float32Array::from_iter(rows.iter().map(|r| r.quality))),
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| r.target_impressions),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| r.impressions),
                )),
                Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.clicks))),
            ],
        )
    }

    /// Decodes ledger rows.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<LedgerRow>> {
        let id = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let ts = column::<TimestampMillisecondArray>(batch, "publish_ts", TS)?;
        let q = column::<Float32Array>(batch, "quality", "float32")?;
        let t = column::<UInt64Array>(batch, "target_impressions", "uint64")?;
        let imp = column::<UInt64Array>(batch, "impressions", "uint64")?;
        let clk = column::<UInt64Array>(batch, "clicks", "uint64")?;
        Ok((0..batch.num_rows())
            .map(|r| LedgerRow {
                item_id: id.value(r),
                publish_ts: ts.value(r),
                quality: optional(Some(q as &dyn Array), r, |i| q.value(i)),
                target_impressions: t.value(r),
                impressions: imp.value(r),
                clicks: clk.value(r),
            })
            .collect())
    }
}
