//! The sharder's rows: postings (inverted-list entries and forward-index rows) in, list hits
//! and item scores out, and a content model's assignments.

use crate::columns::*;
use crate::types::{ClusterKey, ListKind};
use arrow::array::*;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use coldstart_runtime::routing::list_key;
use coldstart_runtime::{ServiceError, ServiceResult};
use std::sync::Arc;

/// One write to a sharder, as the `postings` batch carries it: an entry of an inverted list, or
/// an item's row of the forward index (kind `item` on the wire, key = the item id).
#[derive(Debug, Clone, PartialEq)]
pub enum Posting {
    /// An inverted-list entry.
    List(ListEntry),
    /// A forward-index row.
    Item(ItemRow),
}

/// An entry of the inverted list (`kind`, `key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// Which kind of list.
    pub kind: ListKind,
    /// The list key (a normalised category or keyword, a cluster key, `""` for `recent`).
    pub key: String,
    /// Item.
    pub item_id: u64,
    /// Publish time, ms: lists are ordered by it, newest first.
    pub publish_ts: i64,
}

/// An item's row of the forward index.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ItemRow {
    /// Item.
    pub item_id: u64,
    /// Publish time, ms.
    pub publish_ts: i64,
    /// The item's normalised category.
    pub category: String,
    /// The item's normalised keywords.
    pub keywords: Vec<String>,
    /// The cluster it is filed in under the current content model, if it was encoded.
    pub cluster: Option<ClusterKey>,
    /// Its cluster under the content model being rolled out, when the item was published while
    /// one was staged; sharders move the item there when that version becomes current.
    pub next_cluster: Option<ClusterKey>,
    /// Its content vector under the model of `cluster` (recall ranks candidates by its cosine
    /// to the user's seed items).
    pub vector: Option<Vec<f32>>,
    /// Its content vector under the model of `next_cluster`.
    pub next_vector: Option<Vec<f32>>,
    /// Its two-tower item vector, while it is new: what the new-item pools search.
    pub tower: Option<TowerVector>,
}

/// An item's vector under one two-tower model version.
#[derive(Debug, Clone, PartialEq)]
pub struct TowerVector {
    /// The two-tower model version.
    pub version: String,
    /// The item tower's output (the default ID embedding while the item is new).
    pub vector: Vec<f32>,
}

/// The wire kind of a forward-index row.
pub const ITEM_KIND: &str = "item";

impl Posting {
    /// The item.
    pub fn item_id(&self) -> u64 {
        match self {
            Posting::List(e) => e.item_id,
            Posting::Item(r) => r.item_id,
        }
    }

    /// The key its owners are ranked by (`list_key(kind, key)`; the item id for a row).
    pub fn routing_key(&self) -> String {
        match self {
            Posting::List(e) => list_key(e.kind.as_str(), &e.key),
            Posting::Item(r) => ItemRow::routing_key(r.item_id),
        }
    }
}

impl ListEntry {
    /// The entry of item `item_id` (published at `publish_ts`) in list (`kind`, `key`).
    pub fn new(kind: ListKind, key: impl Into<String>, item_id: u64, publish_ts: i64) -> Self {
        Self {
            kind,
            key: key.into(),
            item_id,
            publish_ts,
        }
    }
}

impl ItemRow {
    /// The routing key of item `item_id`'s row.
    pub fn routing_key(item_id: u64) -> String {
        list_key(ITEM_KIND, &item_id.to_string())
    }
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
        Field::new("tower_version", DataType::Utf8, true),
        Field::new("tower_vector", f32_list(), true),
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

/// The best items of each new-item pool (answers a `pools` ticket).
pub fn pool_hits_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pool", DataType::UInt32, false),
        Field::new("item_id", DataType::UInt64, false),
        Field::new("publish_ts", ts_type(), false),
        Field::new("score", DataType::Float32, false),
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
        let n = postings.len();
        let (mut kind, mut key) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut ids, mut ts) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut cat, mut cl, mut next) = (Vec::new(), Vec::new(), Vec::new());
        let mut kw = string_list_builder();
        for p in postings {
            match p {
                Posting::List(e) => {
                    kind.push(e.kind.as_str());
                    key.push(e.key.clone());
                    ids.push(e.item_id);
                    ts.push(e.publish_ts);
                    cat.push(None);
                    kw.append(false);
                    cl.push(None);
                    next.push(None);
                }
                Posting::Item(r) => {
                    kind.push(ITEM_KIND);
                    key.push(r.item_id.to_string());
                    ids.push(r.item_id);
                    ts.push(r.publish_ts);
                    cat.push(Some(r.category.as_str()));
                    for s in &r.keywords {
                        kw.values().append_value(s);
                    }
                    kw.append(true);
                    cl.push(r.cluster.as_ref().map(ClusterKey::to_string));
                    next.push(r.next_cluster.as_ref().map(ClusterKey::to_string));
                }
            }
        }
        let vector = |p: &'_ Posting, next: bool| match p {
            Posting::Item(r) if next => r.next_vector.clone(),
            Posting::Item(r) => r.vector.clone(),
            Posting::List(_) => None,
        };
        let vectors: Vec<Option<Vec<f32>>> = postings.iter().map(|p| vector(p, false)).collect();
        let nexts: Vec<Option<Vec<f32>>> = postings.iter().map(|p| vector(p, true)).collect();
        fn tower(p: &Posting) -> Option<&TowerVector> {
            match p {
                Posting::Item(r) => r.tower.as_ref(),
                Posting::List(_) => None,
            }
        }
        finish(
            postings_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(kind)),
                Arc::new(StringArray::from_iter_values(key)),
                Arc::new(UInt64Array::from_iter_values(ids)),
                ts_array(ts.into_iter()),
                Arc::new(StringArray::from_iter(cat)),
                Arc::new(kw.finish()),
                Arc::new(StringArray::from_iter(cl)),
                Arc::new(StringArray::from_iter(next)),
                f32_lists(vectors.iter().map(|v| v.as_deref())),
                f32_lists(nexts.iter().map(|v| v.as_deref())),
                Arc::new(StringArray::from_iter(
                    postings
                        .iter()
                        .map(|p| tower(p).map(|t| t.version.as_str())),
                )),
                f32_lists(
                    postings
                        .iter()
                        .map(|p| tower(p).map(|t| t.vector.as_slice())),
                ),
            ],
        )
    }

    /// Decodes a `postings` batch, checking every row: a known kind, an item row's key equal to
    /// its item id, cluster keys of the form `{version}:{cluster}`.
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
        // absent before the two-tower pools existed
        let tower_v = opt_column::<StringArray>(batch, "tower_version", "utf8")?;
        let tower_x = opt_column::<ListArray>(batch, "tower_vector", "list<float32>")?;
        let cluster_key = |col: Option<&StringArray>, r: usize, field: &str| {
            optional(col.map(|a| a as &dyn Array), r, |i| col.unwrap().value(i))
                .map(|s| s.parse::<ClusterKey>())
                .transpose()
                .map_err(|e| ServiceError::bad_row(r, field, e))
        };
        (0..batch.num_rows())
            .map(|r| {
                let k = required(kind, r, "kind", |i| kind.value(i))?;
                let key = required(key, r, "key", |i| key.value(i))?;
                let item_id = required(item, r, "item_id", |i| item.value(i))?;
                let publish_ts = required(ts, r, "publish_ts", |i| ts.value(i))?;
                if k == ITEM_KIND {
                    if key.parse::<u64>().ok() != Some(item_id) {
                        return Err(ServiceError::bad_row(
                            r,
                            "key",
                            format!("item posting key {key:?} is not its item id {item_id}"),
                        ));
                    }
                    return Ok(Posting::Item(ItemRow {
                        item_id,
                        publish_ts,
                        category: optional(cat.map(|a| a as &dyn Array), r, |i| {
                            cat.unwrap().value(i).to_string()
                        })
                        .unwrap_or_default(),
                        keywords: match kw {
                            Some(l) if !l.is_null(r) => list_strings(l, r, "keywords")?,
                            _ => Vec::new(),
                        },
                        cluster: cluster_key(cl, r, "cluster")?,
                        next_cluster: cluster_key(next, r, "next_cluster")?,
                        vector: opt_vector(vec, r, "vector")?,
                        next_vector: opt_vector(next_vec, r, "next_vector")?,
                        tower: match (
                            optional(tower_v.map(|a| a as &dyn Array), r, |i| {
                                tower_v.unwrap().value(i).to_string()
                            }),
                            opt_vector(tower_x, r, "tower_vector")?,
                        ) {
                            (Some(version), Some(vector)) => Some(TowerVector { version, vector }),
                            (None, None) => None,
                            (Some(_), None) => {
                                return Err(ServiceError::bad_row(
                                    r,
                                    "tower_vector",
                                    "is null, while tower_version is set",
                                ))
                            }
                            (None, Some(_)) => {
                                return Err(ServiceError::bad_row(
                                    r,
                                    "tower_version",
                                    "is null, while tower_vector is set",
                                ))
                            }
                        },
                    }));
                }
                let kind = k
                    .parse::<ListKind>()
                    .map_err(|e| ServiceError::bad_row(r, "kind", format!("{e} or {ITEM_KIND}")))?;
                Ok(Posting::List(ListEntry::new(
                    kind, key, item_id, publish_ts,
                )))
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

/// One item found in a new-item pool: which pool, the item, its publish time and the inner
/// product of its two-tower vector with the user's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolHit {
    /// Index into the cluster's pool bounds (`sharder.pool_hours`), below [`super::MAX_POOLS`].
    pub pool: u32,
    /// Item.
    pub item_id: u64,
    /// Publish time, ms.
    pub publish_ts: i64,
    /// Inner product.
    pub score: f32,
}

impl PoolHit {
    /// Encodes hits.
    pub fn to_batch(rows: &[PoolHit]) -> RecordBatch {
        finish(
            pool_hits_schema(),
            vec![
                Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.pool))),
                Arc::new(UInt64Array::from_iter_values(
                    rows.iter().map(|r| r.item_id),
                )),
                ts_array(rows.iter().map(|r| r.publish_ts)),
                Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.score))),
            ],
        )
    }

    /// Decodes hits; a null or a non-finite score is refused.
    pub fn from_batch(batch: &RecordBatch) -> ServiceResult<Vec<PoolHit>> {
        let pool = column::<UInt32Array>(batch, "pool", "uint32")?;
        let id = column::<UInt64Array>(batch, "item_id", "uint64")?;
        let ts = column::<TimestampMillisecondArray>(batch, "publish_ts", TS)?;
        let score = column::<Float32Array>(batch, "score", "float32")?;
        (0..batch.num_rows())
            .map(|r| {
                let s = required(score, r, "score", |i| score.value(i))?;
                if !s.is_finite() {
                    return Err(ServiceError::bad_row(r, "score", "is not finite"));
                }
                let p = required(pool, r, "pool", |i| pool.value(i))?;
                if p as usize >= super::MAX_POOLS {
                    return Err(ServiceError::bad_row(
                        r,
                        "pool",
                        format!("is {p}; pools are numbered below {}", super::MAX_POOLS),
                    ));
                }
                Ok(PoolHit {
                    pool: p,
                    item_id: required(id, r, "item_id", |i| id.value(i))?,
                    publish_ts: required(ts, r, "publish_ts", |i| ts.value(i))?,
                    score: s,
                })
            })
            .collect()
    }
}
