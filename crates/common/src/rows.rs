//! The rows that travel between services, their Arrow schemas (DESIGN.md §5), and conversions
//! between rows and record batches. Decoding an untrusted batch checks every column's presence and
//! type and names the field (and row) of the first problem; it never panics on bad input.

use crate::error::{ServiceError, ServiceResult};
use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, FixedSizeListArray, FixedSizeListBuilder,
    Float32Array, Float32Builder, Float64Array, ListArray, ListBuilder, StringArray, StringBuilder,
    TimestampMillisecondArray, TimestampMillisecondBuilder, UInt32Array, UInt64Array,
    UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use std::sync::Arc;

/// The actions an event may carry.
pub const ACTIONS: [&str; 6] = ["impression", "click", "like", "collect", "share", "comment"];

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}
fn utf8_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}
fn f32_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float32, true)))
}
fn u64_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::UInt64, true)))
}

/// A content item as published.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Item id.
    pub item_id: u64,
    /// Publish time, ms since the epoch (UTC).
    pub publish_ts: i64,
    /// Author.
    pub author_id: Option<u64>,
    /// Category.
    pub category: String,
    /// Keywords or tags.
    pub keywords: Vec<String>,
    /// Title.
    pub title: String,
    /// Body text.
    pub body: Option<String>,
    /// An image vector computed upstream.
    pub image_vec: Option<Vec<f32>>,
    /// Content quality in [0, 1].
    pub quality: Option<f32>,
}

/// A user action on an item.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// User.
    pub user_id: u64,
    /// Item.
    pub item_id: u64,
    /// When, ms since the epoch.
    pub ts: i64,
    /// One of [`ACTIONS`].
    pub action: String,
    /// Dwell time.
    pub dwell_ms: Option<u32>,
}

/// A user's attributes and onboarding interests.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct User {
    /// User.
    pub user_id: u64,
    /// Sign-up time, ms since the epoch.
    pub signup_ts: i64,
    /// Age bucket, e.g. `25-34`.
    pub age_bucket: Option<String>,
    /// Gender.
    pub gender: Option<String>,
    /// Occupation.
    pub occupation: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Interests chosen at onboarding (categories or keywords).
    pub interests: Vec<String>,
}

/// One entry of an inverted list (kind, key) or, with kind `item`, of the forward index.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Posting {
    /// `category`, `keyword`, `cluster`, `recent` or `item`.
    pub kind: String,
    /// The list key (for `item`: the item id in decimal).
    pub key: String,
    /// Item.
    pub item_id: u64,
    /// Publish time, ms: lists are ordered by it, newest first.
    pub publish_ts: i64,
    /// For `item` entries: the item's category.
    pub category: Option<String>,
    /// For `item` entries: the item's keywords.
    pub keywords: Option<Vec<String>>,
    /// For `item` entries: the item's cluster list key `{model version}:{cluster}`, if encoded.
    pub cluster: Option<String>,
    /// For `item` entries: its cluster list key under the content model being rolled out, when
    /// the item was published while one was staged; sharders move the item there when that
    /// version becomes current.
    pub next_cluster: Option<String>,
    /// For `item` entries: the item's content vector under the model of `cluster` (recall ranks
    /// candidates by its cosine to the user's seed items).
    pub vector: Option<Vec<f32>>,
    /// For `item` entries: its content vector under the model of `next_cluster`.
    pub next_vector: Option<Vec<f32>>,
}

/// One row of a content model's forward index: the item, the cluster it was assigned to and
/// its content vector under the model.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// Item.
    pub item_id: u64,
    /// Cluster number in the model's centroids.
    pub cluster: u32,
    /// Publish time, ms.
    pub publish_ts: i64,
    /// The item's content vector (absent in artifacts written before vectors were kept).
    pub vector: Option<Vec<f32>>,
}

/// One entry of an inverted list as a read returns it: which query of the request it answers
/// (an index, not the key again), the item and its publish time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListHit {
    /// Index of the query in the request.
    pub query: u32,
    /// Item.
    pub item_id: u64,
    /// Publish time, ms.
    pub publish_ts: i64,
}

/// One recalled item.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Candidate {
    /// Item.
    pub item_id: u64,
    /// Merge score.
    pub score: f32,
    /// The channels that recalled it.
    pub channels: Vec<String>,
    /// Publish time, ms.
    pub publish_ts: i64,
    /// Traffic-control boost applied to the score (1 = none).
    pub boost: f32,
    /// Inserted by traffic control regardless of score.
    pub forced: bool,
}

/// What the aggregator needs of a profile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProfileView {
    /// User.
    pub user_id: u64,
    /// Few interactions so far.
    pub is_new: bool,
    /// Interactions so far (impressions excluded).
    pub interactions: u64,
    /// Categories, heaviest first, with decayed weights.
    pub categories: Vec<(String, f32)>,
    /// Keywords, heaviest first, with decayed weights.
    pub keywords: Vec<(String, f32)>,
    /// Items the user had an event on (bounded, newest first).
    pub seen: Vec<u64>,
    /// Last liked items, newest first.
    pub liked: Vec<u64>,
    /// Last collected items, newest first.
    pub collected: Vec<u64>,
    /// Last shared items, newest first.
    pub shared: Vec<u64>,
    /// The user's group for group popularity (`profile.group_by` attributes joined by `|`), when
    /// the user has any of those attributes.
    pub group: Option<String>,
    /// Interests chosen at onboarding.
    pub interests: Vec<String>,
}

/// One popular item as a profile partition reports it: which group of the request (an index),
/// the item, its publish time and its engagement decayed to the request time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PopularHit {
    /// Index of the group in the request.
    pub query: u32,
    /// Item.
    pub item_id: u64,
    /// Publish time, ms.
    pub publish_ts: i64,
    /// Weighted engagement, each event halved every `profile.popular_half_life_h` before `at`.
    pub score: f64,
}

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
    /// `impression` or `click`.
    pub action: String,
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

/// `items` (DESIGN.md §5). `image_dim` fixes the length of `image_vec`.
pub fn items_schema(image_dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::UInt64, false),
        Field::new("publish_ts", ts_type(), false),
        Field::new("author_id", DataType::UInt64, true),
        Field::new("category", DataType::Utf8, false),
        Field::new("keywords", utf8_list(), false),
        Field::new("title", DataType::Utf8, false),
        Field::new("body", DataType::Utf8, true),
        Field::new(
            "image_vec",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, true)),
                image_dim as i32,
            ),
            true,
        ),
        Field::new("quality", DataType::Float32, true),
    ]))
}

/// `events` (DESIGN.md §5).
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::UInt64, false),
        Field::new("item_id", DataType::UInt64, false),
        Field::new("ts", ts_type(), false),
        Field::new("action", DataType::Utf8, false),
        Field::new("dwell_ms", DataType::UInt32, true),
    ]))
}

/// `users` (DESIGN.md §5).
pub fn users_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::UInt64, false),
        Field::new("signup_ts", ts_type(), false),
        Field::new("age_bucket", DataType::Utf8, true),
        Field::new("gender", DataType::Utf8, true),
        Field::new("occupation", DataType::Utf8, true),
        Field::new("region", DataType::Utf8, true),
        Field::new("interests", utf8_list(), true),
    ]))
}

/// Inverted-list and forward-index entries, sharder input and output.
pub fn postings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("kind", DataType::Utf8, false),
        Field::new("key", DataType::Utf8, false),
        Field::new("item_id", DataType::UInt64, false),
        Field::new("publish_ts", ts_type(), false),
        Field::new("category", DataType::Utf8, true),
        Field::new("keywords", utf8_list(), true),
        Field::new("cluster", DataType::Utf8, true),
        Field::new("next_cluster", DataType::Utf8, true),
        Field::new("vector", f32_list(), true),
        Field::new("next_vector", f32_list(), true),
    ]))
}

/// List reads: `query` indexes the request's queries.
pub fn list_hits_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("query", DataType::UInt32, false),
        Field::new("item_id", DataType::UInt64, false),
        Field::new("publish_ts", ts_type(), false),
    ]))
}

/// `assignments`: the forward index a content model was trained with, item → cluster, with
/// the publish time that orders the cluster lists.
pub fn assignments_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::UInt64, false),
        Field::new("cluster", DataType::UInt32, false),
        Field::new("publish_ts", ts_type(), false),
        Field::new("vector", f32_list(), true),
    ]))
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

/// One profile row as the profile service serves it.
pub fn profile_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::UInt64, false),
        Field::new("is_new", DataType::Boolean, false),
        Field::new("interactions", DataType::UInt64, false),
        Field::new("categories", utf8_list(), false),
        Field::new("category_weights", f32_list(), false),
        Field::new("keywords", utf8_list(), false),
        Field::new("keyword_weights", f32_list(), false),
        Field::new("seen", u64_list(), false),
        Field::new("liked", u64_list(), false),
        Field::new("collected", u64_list(), false),
        Field::new("shared", u64_list(), false),
        Field::new("group", DataType::Utf8, true),
        Field::new("interests", utf8_list(), false),
    ]))
}

/// Items' similarity to a user (answers a `similarity` ticket).
pub fn item_scores_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::UInt64, false),
        Field::new("score", DataType::Float32, false),
    ]))
}

/// Popular items per group (answers a `popular` ticket).
pub fn popular_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("query", DataType::UInt32, false),
        Field::new("item_id", DataType::UInt64, false),
        Field::new("publish_ts", ts_type(), false),
        Field::new("score", DataType::Float64, false),
    ]))
}

/// New-item registrations for traffic.
pub fn registrations_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::UInt64, false),
        Field::new("publish_ts", ts_type(), false),
        Field::new("author_id", DataType::UInt64, true),
        Field::new("quality", DataType::Float32, true),
    ]))
}

/// Impressions and clicks of new items, for traffic.
pub fn exposures_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::UInt64, false),
        Field::new("user_id", DataType::UInt64, false),
        Field::new("ts", ts_type(), false),
        Field::new("action", DataType::Utf8, false),
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

/// An event as the profile service logs it: the event plus what the forward index said of its
/// item at ingest time, so training and replay need no lookups.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// The event.
    pub event: Event,
    /// The item's publish time, ms.
    pub item_publish_ts: i64,
    /// The item's category.
    pub category: String,
    /// The item's keywords.
    pub keywords: Vec<String>,
}

/// The Parquet event log: `events` columns, then `item_publish_ts`, `category`, `keywords`.
pub fn event_log_schema() -> SchemaRef {
    let mut fields: Vec<Field> = events_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("item_publish_ts", ts_type(), false));
    fields.push(Field::new("category", DataType::Utf8, false));
    fields.push(Field::new("keywords", utf8_list(), false));
    Arc::new(Schema::new(fields))
}

impl LoggedEvent {
    /// Encodes logged events.
    pub fn to_batch(rows: &[LoggedEvent]) -> RecordBatch {
        let events: Vec<Event> = rows.iter().map(|r| r.event.clone()).collect();
        let mut cols = Event::to_batch(&events).columns().to_vec();
        let mut kw = string_list_builder();
        for r in rows {
            for k in &r.keywords {
                kw.values().append_value(k);
            }
            kw.append(true);
        }
        cols.push(ts_array(rows.iter().map(|r| r.item_publish_ts)));
        cols.push(Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.category),
        )));
        cols.push(Arc::new(kw.finish()));
        finish(event_log_schema(), cols)
    }

    /// Decodes logged events.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<LoggedEvent>> {
        let events = Event::from_batch(batch)?;
        let ts = column::<TimestampMillisecondArray>(batch, "item_publish_ts", TS)?;
        let cat = column::<StringArray>(batch, "category", "utf8")?;
        let kw = column::<ListArray>(batch, "keywords", LIST_UTF8)?;
        events
            .into_iter()
            .enumerate()
            .map(|(r, event)| {
                Ok(LoggedEvent {
                    event,
                    item_publish_ts: ts.value(r),
                    category: cat.value(r).to_string(),
                    keywords: list_strings(kw, r, "keywords")?,
                })
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Column access with errors that name the field.

fn column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    expected: &str,
) -> ServiceResult<&'a T> {
    let col = batch.column_by_name(name).ok_or_else(|| {
        ServiceError::invalid(format!(
            "field `{name}`: missing column, expected {expected}"
        ))
    })?;
    col.as_any().downcast_ref::<T>().ok_or_else(|| {
        ServiceError::invalid(format!(
            "field `{name}`: column has type {}, expected {expected}",
            col.data_type()
        ))
    })
}

fn opt_column<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    expected: &str,
) -> ServiceResult<Option<&'a T>> {
    if batch.column_by_name(name).is_none() {
        return Ok(None);
    }
    column(batch, name, expected).map(Some)
}

fn required<T>(
    arr: &dyn Array,
    row: usize,
    field: &str,
    get: impl Fn(usize) -> T,
) -> ServiceResult<T> {
    if arr.is_null(row) {
        Err(ServiceError::bad_row(
            row,
            field,
            "is null, a value is required",
        ))
    } else {
        Ok(get(row))
    }
}

fn optional<T>(arr: Option<&dyn Array>, row: usize, get: impl Fn(usize) -> T) -> Option<T> {
    arr.filter(|a| !a.is_null(row)).map(|_| get(row))
}

fn list_strings(list: &ListArray, row: usize, field: &str) -> ServiceResult<Vec<String>> {
    let values = list.value(row);
    let values = values
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| ServiceError::bad_row(row, field, "list items must be utf8"))?;
    (0..values.len())
        .map(|i| {
            if values.is_null(i) {
                Err(ServiceError::bad_row(
                    row,
                    field,
                    format!("item {i} is null"),
                ))
            } else {
                Ok(values.value(i).to_string())
            }
        })
        .collect()
}

fn list_f32(list: &ListArray, row: usize) -> Vec<f32> {
    let v = list.value(row);
    v.as_any()
        .downcast_ref::<Float32Array>()
        .map(|a| a.iter().map(|x| x.unwrap_or(f32::NAN)).collect())
        .unwrap_or_default()
}

/// A nullable `list<float32>` column of vectors.
fn f32_lists<'a>(rows: impl Iterator<Item = Option<&'a [f32]>>) -> ArrayRef {
    let mut b = ListBuilder::new(Float32Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Float32,
        true,
    )));
    for v in rows {
        match v {
            Some(v) => {
                b.values().append_slice(v);
                b.append(true);
            }
            None => b.append(false),
        }
    }
    Arc::new(b.finish())
}

/// A vector of a nullable `list<float32>` column; a null or non-finite element is refused.
fn opt_vector(col: Option<&ListArray>, row: usize, field: &str) -> ServiceResult<Option<Vec<f32>>> {
    let Some(l) = col.filter(|l| !l.is_null(row)) else {
        return Ok(None);
    };
    let v = list_f32(l, row);
    if v.iter().any(|x| !x.is_finite()) {
        return Err(ServiceError::bad_row(
            row,
            field,
            "holds a null or non-finite value",
        ));
    }
    Ok(Some(v))
}

fn list_u64(list: &ListArray, row: usize) -> Vec<u64> {
    let v = list.value(row);
    v.as_any()
        .downcast_ref::<UInt64Array>()
        .map(|a| a.iter().flatten().collect())
        .unwrap_or_default()
}

const TS: &str = "timestamp[ms, UTC]";
const LIST_UTF8: &str = "list<utf8>";

fn string_list_builder() -> ListBuilder<StringBuilder> {
    ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Utf8,
        true,
    )))
}

fn finish(schema: SchemaRef, cols: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(schema, cols).expect("columns built to match their schema")
}

fn ts_array(values: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = TimestampMillisecondBuilder::new().with_timezone("UTC");
    for v in values {
        b.append_value(v);
    }
    Arc::new(b.finish())
}

// ---------------------------------------------------------------------------------------------

impl Item {
    /// Encodes items as an `items` batch.
    pub fn to_batch(items: &[Item], image_dim: usize) -> RecordBatch {
        let mut kw = string_list_builder();
        let mut img = FixedSizeListBuilder::new(Float32Builder::new(), image_dim as i32)
            .with_field(Arc::new(Field::new("item", DataType::Float32, true)));
        for it in items {
            for k in &it.keywords {
                kw.values().append_value(k);
            }
            kw.append(true);
            match &it.image_vec {
                Some(v) if v.len() == image_dim => {
                    img.values().append_slice(v);
                    img.append(true);
                }
                _ => {
                    img.values().append_nulls(image_dim);
                    img.append(false);
                }
            }
        }
        finish(
            items_schema(image_dim),
            vec![
                Arc::new(UInt64Array::from_iter_values(
                    items.iter().map(|i| i.item_id),
                )),
                ts_array(items.iter().map(|i| i.publish_ts)),
                Arc::new(UInt64Array::from_iter(items.iter().map(|i| i.author_id))),
                Arc::new(StringArray::from_iter_values(
                    items.iter().map(|i| &i.category),
                )),
                Arc::new(kw.finish()),
                Arc::new(StringArray::from_iter_values(
                    items.iter().map(|i| &i.title),
                )),
                Arc::new(StringArray::from_iter(
                    items.iter().map(|i| i.body.as_deref()),
                )),
                Arc::new(img.finish()),
                Arc::new(Float32Array::from_iter(items.iter().map(|i| i.quality))),
            ],
        )
    }

    /// Decodes an untrusted `items` batch; the image vector may have any length here, and
    /// [`crate::validate`] checks it against the configured dimension.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<Item>> {
        let id = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let ts = column::<TimestampMillisecondArray>(batch, "publish_ts", TS)?;
        let author = opt_column::<UInt64Array>(batch, "author_id", "uint64")?;
        let cat = column::<StringArray>(batch, "category", "utf8")?;
        let kw = opt_column::<ListArray>(batch, "keywords", LIST_UTF8)?;
        let title = column::<StringArray>(batch, "title", "utf8")?;
        let body = opt_column::<StringArray>(batch, "body", "utf8")?;
        let img = opt_column::<FixedSizeListArray>(batch, "image_vec", "fixed_size_list<float32>")?;
        let quality = opt_column::<Float32Array>(batch, "quality", "float32")?;
        (0..batch.num_rows())
            .map(|r| {
                Ok(Item {
                    item_id: required(id, r, "item_id", |i| id.value(i))?,
                    publish_ts: required(ts, r, "publish_ts", |i| ts.value(i))?,
                    author_id: optional(author.map(|a| a as &dyn Array), r, |i| {
                        author.unwrap().value(i)
                    }),
                    category: required(cat, r, "category", |i| cat.value(i).to_string())?,
                    keywords: match kw {
                        Some(k) if !k.is_null(r) => list_strings(k, r, "keywords")?,
                        _ => Vec::new(),
                    },
                    title: required(title, r, "title", |i| title.value(i).to_string())?,
                    body: optional(body.map(|a| a as &dyn Array), r, |i| {
                        body.unwrap().value(i).to_string()
                    }),
                    image_vec: match img {
                        Some(a) if !a.is_null(r) => {
                            let v = a.value(r);
                            let v = v.as_any().downcast_ref::<Float32Array>().ok_or_else(|| {
                                ServiceError::bad_row(r, "image_vec", "items must be float32")
                            })?;
                            Some(v.iter().map(|x| x.unwrap_or(f32::NAN)).collect())
                        }
                        _ => None,
                    },
                    quality: optional(quality.map(|a| a as &dyn Array), r, |i| {
                        quality.unwrap().value(i)
                    }),
                })
            })
            .collect()
    }
}

impl Event {
    /// Encodes events as an `events` batch.
    pub fn to_batch(events: &[Event]) -> RecordBatch {
        finish(
            events_schema(),
            vec![
                Arc::new(UInt64Array::from_iter_values(
                    events.iter().map(|e| e.user_id),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    events.iter().map(|e| e.item_id),
                )),
                ts_array(events.iter().map(|e| e.ts)),
                Arc::new(StringArray::from_iter_values(
                    events.iter().map(|e| &e.action),
                )),
                Arc::new(UInt32Array::from_iter(events.iter().map(|e| e.dwell_ms))),
            ],
        )
    }

    /// Decodes an untrusted `events` batch.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<Event>> {
        let user = column::<UInt64Array>(batch, "user_id", "uint64")?;
        let item = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let ts = column::<TimestampMillisecondArray>(batch, "ts", TS)?;
        let action = column::<StringArray>(batch, "action", "utf8")?;
        let dwell = opt_column::<UInt32Array>(batch, "dwell_ms", "uint32")?;
        (0..batch.num_rows())
            .map(|r| {
                Ok(Event {
                    user_id: required(user, r, "user_id", |i| user.value(i))?,
                    item_id: required(item, r, "item_id", |i| item.value(i))?,
                    ts: required(ts, r, "ts", |i| ts.value(i))?,
                    action: required(action, r, "action", |i| action.value(i).to_string())?,
                    dwell_ms: optional(dwell.map(|a| a as &dyn Array), r, |i| {
                        dwell.unwrap().value(i)
                    }),
                })
            })
            .collect()
    }
}

impl User {
    /// Encodes users as a `users` batch.
    pub fn to_batch(users: &[User]) -> RecordBatch {
        let mut interests = string_list_builder();
        for u in users {
            for i in &u.interests {
                interests.values().append_value(i);
            }
            interests.append(true);
        }
        let opt = |f: fn(&User) -> Option<&str>| -> ArrayRef {
            Arc::new(StringArray::from_iter(users.iter().map(f)))
        };
        finish(
            users_schema(),
            vec![
                Arc::new(UInt64Array::from_iter_values(
                    users.iter().map(|u| u.user_id),
                )),
                ts_array(users.iter().map(|u| u.signup_ts)),
                opt(|u| u.age_bucket.as_deref()),
                opt(|u| u.gender.as_deref()),
                opt(|u| u.occupation.as_deref()),
                opt(|u| u.region.as_deref()),
                Arc::new(interests.finish()),
            ],
        )
    }

    /// Decodes an untrusted `users` batch.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<User>> {
        let user = column::<UInt64Array>(batch, "user_id", "uint64")?;
        let ts = column::<TimestampMillisecondArray>(batch, "signup_ts", TS)?;
        let strs: Vec<Option<&StringArray>> = ["age_bucket", "gender", "occupation", "region"]
            .iter()
            .map(|n| opt_column::<StringArray>(batch, n, "utf8"))
            .collect::<ServiceResult<_>>()?;
        let interests = opt_column::<ListArray>(batch, "interests", LIST_UTF8)?;
        let get = |c: usize, r: usize| {
            strs[c]
                .filter(|a| !a.is_null(r))
                .map(|a| a.value(r).to_string())
        };
        (0..batch.num_rows())
            .map(|r| {
                Ok(User {
                    user_id: required(user, r, "user_id", |i| user.value(i))?,
                    signup_ts: required(ts, r, "signup_ts", |i| ts.value(i))?,
                    age_bucket: get(0, r),
                    gender: get(1, r),
                    occupation: get(2, r),
                    region: get(3, r),
                    interests: match interests {
                        Some(l) if !l.is_null(r) => list_strings(l, r, "interests")?,
                        _ => Vec::new(),
                    },
                })
            })
            .collect()
    }
}

impl Posting {
    /// Encodes postings as a `postings` batch.
    pub fn to_batch(postings: &[Posting]) -> RecordBatch {
        let mut kw = string_list_builder();
        for p in postings {
            match &p.keywords {
                Some(k) => {
                    for s in k {
                        kw.values().append_value(s);
                    }
                    kw.append(true);
                }
                None => kw.append(false),
            }
        }
        finish(
            postings_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    postings.iter().map(|p| &p.kind),
                )),
                Arc::new(StringArray::from_iter_values(
                    postings.iter().map(|p| &p.key),
                )),
                Arc::new(UInt64Array::from_iter_values(
                    postings.iter().map(|p| p.item_id),
                )),
                ts_array(postings.iter().map(|p| p.publish_ts)),
                Arc::new(StringArray::from_iter(
                    postings.iter().map(|p| p.category.as_deref()),
                )),
                Arc::new(kw.finish()),
                Arc::new(StringArray::from_iter(
                    postings.iter().map(|p| p.cluster.as_deref()),
                )),
                Arc::new(StringArray::from_iter(
                    postings.iter().map(|p| p.next_cluster.as_deref()),
                )),
                f32_lists(postings.iter().map(|p| p.vector.as_deref())),
                f32_lists(postings.iter().map(|p| p.next_vector.as_deref())),
            ],
        )
    }

    /// Decodes a `postings` batch.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<Posting>> {
        let kind = column::<StringArray>(batch, "kind", "utf8")?;
        let key = column::<StringArray>(batch, "key", "utf8")?;
        let item = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let ts = column::<TimestampMillisecondArray>(batch, "publish_ts", TS)?;
        let cat = opt_column::<StringArray>(batch, "category", "utf8")?;
        let kw = opt_column::<ListArray>(batch, "keywords", LIST_UTF8)?;
        let cl = opt_column::<StringArray>(batch, "cluster", "utf8")?;
        // absent from logs and snapshots written before staged rollouts existed
        let next = opt_column::<StringArray>(batch, "next_cluster", "utf8")?;
        // absent before content vectors were kept
        let vec = opt_column::<ListArray>(batch, "vector", "list<float32>")?;
        let next_vec = opt_column::<ListArray>(batch, "next_vector", "list<float32>")?;
        (0..batch.num_rows())
            .map(|r| {
                Ok(Posting {
                    kind: required(kind, r, "kind", |i| kind.value(i).to_string())?,
                    key: required(key, r, "key", |i| key.value(i).to_string())?,
                    item_id: required(item, r, "item_id", |i| item.value(i))?,
                    publish_ts: required(ts, r, "publish_ts", |i| ts.value(i))?,
                    category: optional(cat.map(|a| a as &dyn Array), r, |i| {
                        cat.unwrap().value(i).to_string()
                    }),
                    keywords: match kw {
                        Some(l) if !l.is_null(r) => Some(list_strings(l, r, "keywords")?),
                        _ => None,
                    },
                    cluster: optional(cl.map(|a| a as &dyn Array), r, |i| {
                        cl.unwrap().value(i).to_string()
                    }),
                    next_cluster: optional(next.map(|a| a as &dyn Array), r, |i| {
                        next.unwrap().value(i).to_string()
                    }),
                    vector: opt_vector(vec, r, "vector")?,
                    next_vector: opt_vector(next_vec, r, "next_vector")?,
                })
            })
            .collect()
    }
}

impl ListHit {
    /// Encodes hits.
    pub fn to_batch(hits: &[ListHit]) -> RecordBatch {
        finish(
            list_hits_schema(),
            vec![
                Arc::new(UInt32Array::from_iter_values(hits.iter().map(|h| h.query))),
                Arc::new(UInt64Array::from_iter_values(
                    hits.iter().map(|h| h.item_id),
                )),
                ts_array(hits.iter().map(|h| h.publish_ts)),
            ],
        )
    }

    /// Decodes hits.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<ListHit>> {
        let q = column::<UInt32Array>(batch, "query", "uint32")?;
        let id = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let ts = column::<TimestampMillisecondArray>(batch, "publish_ts", TS)?;
        if q.null_count() + id.null_count() + ts.null_count() > 0 {
            return Err(ServiceError::invalid("list hits with nulls"));
        }
        Ok((0..batch.num_rows())
            .map(|r| ListHit {
                query: q.value(r),
                item_id: id.value(r),
                publish_ts: ts.value(r),
            })
            .collect())
    }
}

/// An item's score, e.g. the cosine of its content vector to a user's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ItemScore {
    /// Item.
    pub item_id: u64,
    /// Score.
    pub score: f32,
}

impl ItemScore {
    /// Encodes scores.
    pub fn to_batch(rows: &[ItemScore]) -> RecordBatch {
        finish(
            item_scores_schema(),
            vec![
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| r.item_id),
                )),
                Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.score))),
            ],
        )
    }

    /// Decodes scores.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<ItemScore>> {
        let id = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let score = column::<Float32Array>(batch, "score", "float32")?;
        if id.null_count() + score.null_count() > 0 {
            return Err(ServiceError::invalid("item scores with nulls"));
        }
        Ok((0..batch.num_rows())
            .map(|r| ItemScore {
                item_id: id.value(r),
                score: score.value(r),
            })
            .collect())
    }
}

impl PopularHit {
    /// Encodes popular items.
    pub fn to_batch(hits: &[PopularHit]) -> RecordBatch {
        finish(
            popular_schema(),
            vec![
                Arc::new(UInt32Array::from_iter_values(hits.iter().map(|h| h.query))),
                Arc::new(UInt64Array::from_iter_values(
                    hits.iter().map(|h| h.item_id),
                )),
                ts_array(hits.iter().map(|h| h.publish_ts)),
                Arc::new(Float64Array::from_iter_values(hits.iter().map(|h| h.score))),
            ],
        )
    }

    /// Decodes popular items.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<PopularHit>> {
        let q = column::<UInt32Array>(batch, "query", "uint32")?;
        let id = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let ts = column::<TimestampMillisecondArray>(batch, "publish_ts", TS)?;
        let score = column::<Float64Array>(batch, "score", "float64")?;
        if q.null_count() + id.null_count() + ts.null_count() + score.null_count() > 0 {
            return Err(ServiceError::invalid("popular rows with nulls"));
        }
        Ok((0..batch.num_rows())
            .map(|r| PopularHit {
                query: q.value(r),
                item_id: id.value(r),
                publish_ts: ts.value(r),
                score: score.value(r),
            })
            .collect())
    }
}

impl Assignment {
    /// Encodes assignments.
    pub fn to_batch(rows: &[Assignment]) -> RecordBatch {
        finish(
            assignments_schema(),
            vec![
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|a| a.item_id),
                )),
                Arc::new(UInt32Array::from_iter_values(
                    rows.iter().map(|a| a.cluster),
                )),
                ts_array(rows.iter().map(|a| a.publish_ts)),
                f32_lists(rows.iter().map(|a| a.vector.as_deref())),
            ],
        )
    }

    /// Decodes assignments.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<Assignment>> {
        let id = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let c = column::<UInt32Array>(batch, "cluster", "uint32")?;
        let ts = column::<TimestampMillisecondArray>(batch, "publish_ts", TS)?;
        let vec = opt_column::<ListArray>(batch, "vector", "list<float32>")?;
        (0..batch.num_rows())
            .map(|r| {
                Ok(Assignment {
                    item_id: required(id, r, "item_id", |i| id.value(i))?,
                    cluster: required(c, r, "cluster", |i| c.value(i))?,
                    publish_ts: required(ts, r, "publish_ts", |i| ts.value(i))?,
                    vector: opt_vector(vec, r, "vector")?,
                })
            })
            .collect()
    }
}

impl Candidate {
    /// Encodes candidates as a `candidates` batch.
    pub fn to_batch(cands: &[Candidate]) -> RecordBatch {
        let mut ch = string_list_builder();
        for c in cands {
            for s in &c.channels {
                ch.values().append_value(s);
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
                    channels: list_strings(ch, r, "channels")?,
                    publish_ts: ts.value(r),
                    boost: boost.value(r),
                    forced: forced.value(r),
                })
            })
            .collect()
    }
}

impl ProfileView {
    /// Encodes one profile as a one-row `profile` batch.
    pub fn to_batch(&self) -> RecordBatch {
        let strs =
            |v: &[(String, f32)]| -> (ArrayRef, ArrayRef) {
                let mut s = string_list_builder();
                let mut w = ListBuilder::new(Float32Builder::new())
                    .with_field(Arc::new(Field::new("item", DataType::Float32, true)));
                for (k, x) in v {
                    s.values().append_value(k);
                    w.values().append_value(*x);
                }
                s.append(true);
                w.append(true);
                (Arc::new(s.finish()), Arc::new(w.finish()))
            };
        let ids =
            |v: &[u64]| -> ArrayRef {
                let mut b = ListBuilder::new(UInt64Builder::new())
                    .with_field(Arc::new(Field::new("item", DataType::UInt64, true)));
                b.values().append_slice(v);
                b.append(true);
                Arc::new(b.finish())
            };
        let (c, cw) = strs(&self.categories);
        let (k, kw) = strs(&self.keywords);
        let mut interests = string_list_builder();
        for i in &self.interests {
            interests.values().append_value(i);
        }
        interests.append(true);
        let mut is_new = BooleanBuilder::new();
        is_new.append_value(self.is_new);
        finish(
            profile_schema(),
            vec![
                Arc::new(UInt64Array::from(vec![self.user_id])),
                Arc::new(is_new.finish()),
                Arc::new(UInt64Array::from(vec![self.interactions])),
                c,
                cw,
                k,
                kw,
                ids(&self.seen),
                ids(&self.liked),
                ids(&self.collected),
                ids(&self.shared),
                Arc::new(StringArray::from(vec![self.group.clone()])),
                Arc::new(interests.finish()),
            ],
        )
    }

    /// Decodes the rows of a `profile` batch.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<ProfileView>> {
        let user = column::<UInt64Array>(batch, "user_id", "uint64")?;
        let is_new = column::<BooleanArray>(batch, "is_new", "bool")?;
        let inter = column::<UInt64Array>(batch, "interactions", "uint64")?;
        let list = |n: &str| column::<ListArray>(batch, n, "list");
        let (c, cw, k, kw) = (
            list("categories")?,
            list("category_weights")?,
            list("keywords")?,
            list("keyword_weights")?,
        );
        let (seen, liked, collected, shared) = (
            list("seen")?,
            list("liked")?,
            list("collected")?,
            list("shared")?,
        );
        // absent from profile nodes older than groups and onboarding channels (rolling upgrades)
        let group = opt_column::<StringArray>(batch, "group", "utf8")?;
        let interests = opt_column::<ListArray>(batch, "interests", LIST_UTF8)?;
        (0..batch.num_rows())
            .map(|r| {
                let zip =
                    |names: Vec<String>, w: Vec<f32>| names.into_iter().zip(w).collect::<Vec<_>>();
                Ok(ProfileView {
                    user_id: user.value(r),
                    is_new: is_new.value(r),
                    interactions: inter.value(r),
                    categories: zip(list_strings(c, r, "categories")?, list_f32(cw, r)),
                    keywords: zip(list_strings(k, r, "keywords")?, list_f32(kw, r)),
                    seen: list_u64(seen, r),
                    liked: list_u64(liked, r),
                    collected: list_u64(collected, r),
                    shared: list_u64(shared, r),
                    group: group.and_then(|g| {
                        optional(Some(g as &dyn Array), r, |i| g.value(i).to_string())
                    }),
                    interests: match interests {
                        Some(l) if !l.is_null(r) => list_strings(l, r, "interests")?,
                        _ => Vec::new(),
                    },
                })
            })
            .collect()
    }
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
            ],
        )
    }

    /// Decodes registrations.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<Registration>> {
        let id = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let ts = column::<TimestampMillisecondArray>(batch, "publish_ts", TS)?;
        let author = column::<UInt64Array>(batch, "author_id", "uint64")?;
        let q = column::<Float32Array>(batch, "quality", "float32")?;
        (0..batch.num_rows())
            .map(|r| {
                Ok(Registration {
                    item_id: required(id, r, "item_id", |i| id.value(i))?,
                    publish_ts: required(ts, r, "publish_ts", |i| ts.value(i))?,
                    author_id: optional(Some(author as &dyn Array), r, |i| author.value(i)),
                    quality: optional(Some(q as &dyn Array), r, |i| q.value(i)),
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
                    rows.iter().map(|r| &r.action),
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
        (0..batch.num_rows())
            .map(|r| {
                let action = required(action, r, "action", |i| action.value(i).to_string())?;
                if action != "impression" && action != "click" {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: u64) -> Item {
        Item {
            item_id: id,
            publish_ts: 1_700_000_000_000 + id as i64,
            author_id: Some(7),
            category: "cats".into(),
            keywords: vec!["kitten".into(), "cute".into()],
            title: "a cat".into(),
            body: None,
            image_vec: if id.is_multiple_of(2) {
                Some(vec![0.5; 4])
            } else {
                None
            },
            quality: Some(0.5),
        }
    }

    #[test]
    fn rows_round_trip_through_batches() {
        let items: Vec<Item> = (0..5).map(item).collect();
        assert_eq!(Item::from_batch(&Item::to_batch(&items, 4)).unwrap(), items);
        let p = ProfileView {
            user_id: 3,
            is_new: true,
            interactions: 2,
            categories: vec![("cats".into(), 1.5)],
            keywords: vec![],
            seen: vec![1, 2],
            liked: vec![2],
            collected: vec![],
            shared: vec![],
            group: Some("25-34|f|9".into()),
            interests: vec!["cats".into()],
        };
        // a profile node from before groups and onboarding channels sends neither column
        let full = p.to_batch();
        let old = full
            .project(&(0..full.num_columns() - 2).collect::<Vec<_>>())
            .unwrap();
        let back = ProfileView::from_batch(&old).unwrap().remove(0);
        assert_eq!((back.group.clone(), back.interests.len()), (None, 0));
        assert_eq!(back.categories, p.categories);
        assert_eq!(ProfileView::from_batch(&p.to_batch()).unwrap(), vec![p]);
        let none = ProfileView {
            group: None,
            ..Default::default()
        };
        assert_eq!(
            ProfileView::from_batch(&none.to_batch()).unwrap(),
            vec![none]
        );
        let pop = vec![PopularHit {
            query: 1,
            item_id: 4,
            publish_ts: 5,
            score: 1e-200,
        }];
        assert_eq!(
            PopularHit::from_batch(&PopularHit::to_batch(&pop)).unwrap(),
            pop
        );
        let c = vec![Candidate {
            item_id: 1,
            score: 0.5,
            channels: vec!["category".into()],
            publish_ts: 9,
            boost: 1.0,
            forced: false,
        }];
        assert_eq!(Candidate::from_batch(&Candidate::to_batch(&c)).unwrap(), c);
    }

    /// Every row type through its batch and back: a schema and a builder that disagree would
    /// otherwise panic inside a request handler.
    #[test]
    fn every_row_type_round_trips() {
        let postings = vec![
            Posting {
                kind: "item".into(),
                key: "1".into(),
                item_id: 1,
                publish_ts: 2,
                category: Some("c".into()),
                keywords: Some(vec!["k".into()]),
                cluster: Some("v1:3".into()),
                next_cluster: Some("v2:1".into()),
                vector: Some(vec![0.5, -0.25]),
                next_vector: None,
            },
            Posting {
                kind: "category".into(),
                key: "c".into(),
                item_id: 1,
                publish_ts: 2,
                ..Default::default()
            },
        ];
        assert_eq!(
            Posting::from_batch(&Posting::to_batch(&postings)).unwrap(),
            postings
        );
        let hits = vec![ListHit {
            query: 2,
            item_id: 9,
            publish_ts: 8,
        }];
        assert_eq!(
            ListHit::from_batch(&ListHit::to_batch(&hits)).unwrap(),
            hits
        );
        let events = vec![Event {
            user_id: 1,
            item_id: 2,
            ts: 3,
            action: "like".into(),
            dwell_ms: Some(4),
        }];
        assert_eq!(
            Event::from_batch(&Event::to_batch(&events)).unwrap(),
            events
        );
        let logged = vec![LoggedEvent {
            event: events[0].clone(),
            item_publish_ts: 1,
            category: "c".into(),
            keywords: vec!["k".into()],
        }];
        assert_eq!(
            LoggedEvent::from_batch(&LoggedEvent::to_batch(&logged)).unwrap(),
            logged
        );
        let users = vec![User {
            user_id: 1,
            signup_ts: 2,
            age_bucket: Some("a".into()),
            gender: None,
            occupation: None,
            region: Some("r".into()),
            interests: vec!["i".into()],
        }];
        assert_eq!(User::from_batch(&User::to_batch(&users)).unwrap(), users);
        let regs = vec![Registration {
            item_id: 1,
            publish_ts: 2,
            author_id: Some(3),
            quality: None,
        }];
        assert_eq!(
            Registration::from_batch(&Registration::to_batch(&regs)).unwrap(),
            regs
        );
        let ex = vec![Exposure {
            item_id: 1,
            user_id: 2,
            ts: 3,
            action: "click".into(),
        }];
        assert_eq!(Exposure::from_batch(&Exposure::to_batch(&ex)).unwrap(), ex);
        let ledger = vec![LedgerRow {
            item_id: 1,
            publish_ts: 2,
            quality: Some(0.5),
            target_impressions: 100,
            impressions: 3,
            clicks: 1,
        }];
        assert_eq!(
            LedgerRow::from_batch(&LedgerRow::to_batch(&ledger)).unwrap(),
            ledger
        );
        let no_image: Vec<Item> = (0..2)
            .map(|i| Item {
                image_vec: None,
                ..item(i)
            })
            .collect();
        assert_eq!(
            Item::from_batch(&Item::to_batch(&no_image, 0)).unwrap(),
            no_image
        );
    }

    #[test]
    fn wrong_column_type_names_the_field() {
        let b = Event::to_batch(&[Event {
            user_id: 1,
            item_id: 2,
            ts: 3,
            action: "like".into(),
            dwell_ms: None,
        }]);
        let schema = Arc::new(Schema::new(vec![Field::new(
            "user_id",
            DataType::Utf8,
            false,
        )]));
        let bad =
            RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["x"]))]).unwrap();
        let err = Event::from_batch(&bad).unwrap_err();
        assert!(
            err.message.contains("`user_id`") && err.message.contains("expected uint64"),
            "{err}"
        );
        assert_eq!(Event::from_batch(&b).unwrap().len(), 1);
    }
}
