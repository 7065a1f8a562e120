//! The sharder's rows: postings (inverted-list entries and forward-index rows) in, list hits
//! and item scores out, and a content model's assignments.

use crate::columns::*;
use arrow::array::*;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use coldstart_runtime::{ServiceError, ServiceResult};
use std::sync::Arc;

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

/// Items' similarity to a user (answers a `similarity` ticket).
pub fn item_scores_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::UInt64, false),
        Field::new("score", DataType::Float32, false),
    ]))
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
