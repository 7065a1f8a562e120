//! The encoder's input rows: `items` as published (DESIGN.md §5).

use crate::columns::*;
use arrow::array::*;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use coldstart_runtime::{ServiceError, ServiceResult};
use std::sync::Arc;

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
    /// The author's quality tier in [0, 1], as the platform rates its authors at publication:
    /// traffic control guarantees better authors' new items more impressions.
    pub author_quality: Option<f32>,
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
        Field::new("author_quality", DataType::Float32, true),
    ]))
}

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
                Arc::new(Float32Array::from_iter(
                    items.iter().map(|i| i.author_quality),
                )),
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
        let author_q = opt_column::<Float32Array>(batch, "author_quality", "float32")?;
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
                    author_quality: optional(author_q.map(|a| a as &dyn Array), r, |i| {
                        author_q.unwrap().value(i)
                    }),
                })
            })
            .collect()
    }
}
