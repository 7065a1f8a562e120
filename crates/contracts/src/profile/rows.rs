//! The profile service's rows: `events` and `users` in, `profile` and `popular` out, and the
//! event log it keeps.

use crate::columns::*;
use crate::types::Action;
use arrow::array::*;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use coldstart_runtime::{ServiceError, ServiceResult};
use std::sync::Arc;

/// A user action on an item.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// User.
    pub user_id: u64,
    /// Item.
    pub item_id: u64,
    /// When, ms since the epoch.
    pub ts: i64,
    /// What the user did.
    pub action: Action,
    /// Dwell time.
    pub dwell_ms: Option<u32>,
    /// The recall answer the event followed, as the answer named it (`request_id`): an
    /// impression counts once per (user, item, request id), however often a batch is retried.
    pub request_id: Option<String>,
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
    /// The user's attributes as the two-tower user tower reads them (`gender:f`, …; see
    /// [`tower_attrs`]).
    pub attrs: Vec<String>,
    /// Sign-up time, ms, when the user's attributes are known.
    pub signup_ts: Option<i64>,
    /// Last clicked items, newest first (a new user's weaker signals).
    pub clicked: Vec<u64>,
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

/// `events` (DESIGN.md §5).
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::UInt64, false),
        Field::new("item_id", DataType::UInt64, false),
        Field::new("ts", ts_type(), false),
        Field::new("action", DataType::Utf8, false),
        Field::new("dwell_ms", DataType::UInt32, true),
        Field::new("request_id", DataType::Utf8, true),
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
        Field::new("attrs", utf8_list(), false),
        Field::new("signup_ts", ts_type(), true),
        Field::new("clicked", u64_list(), false),
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
                    events.iter().map(|e| e.action.as_str()),
                )),
                Arc::new(UInt32Array::from_iter(events.iter().map(|e| e.dwell_ms))),
                Arc::new(StringArray::from_iter(
                    events.iter().map(|e| e.request_id.as_deref()),
                )),
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
        let request = opt_column::<StringArray>(batch, "request_id", "utf8")?;
        (0..batch.num_rows())
            .map(|r| {
                Ok(Event {
                    user_id: required(user, r, "user_id", |i| user.value(i))?,
                    item_id: required(item, r, "item_id", |i| item.value(i))?,
                    ts: required(ts, r, "ts", |i| ts.value(i))?,
                    action: required(action, r, "action", |i| action.value(i))?
                        .parse()
                        .map_err(|e: String| ServiceError::bad_row(r, "action", e))?,
                    dwell_ms: optional(dwell.map(|a| a as &dyn Array), r, |i| {
                        dwell.unwrap().value(i)
                    }),
                    request_id: request_id_at(request, r)?,
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
        let mut attrs = string_list_builder();
        for a in &self.attrs {
            attrs.values().append_value(a);
        }
        attrs.append(true);
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
                Arc::new(attrs.finish()),
                {
                    let mut b = TimestampMillisecondBuilder::new().with_timezone("UTC");
                    b.append_option(self.signup_ts);
                    Arc::new(b.finish())
                },
                ids(&self.clicked),
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
        // absent from profile nodes older than the two-tower channel
        let attrs = opt_column::<ListArray>(batch, "attrs", LIST_UTF8)?;
        // absent from profile nodes older than user cold start
        let signup = opt_column::<TimestampMillisecondArray>(batch, "signup_ts", TS)?;
        let clicked = opt_column::<ListArray>(batch, "clicked", "list")?;
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
                    attrs: match attrs {
                        Some(l) if !l.is_null(r) => list_strings(l, r, "attrs")?,
                        _ => Vec::new(),
                    },
                    signup_ts: signup.and_then(|s| (!s.is_null(r)).then(|| s.value(r))),
                    clicked: clicked.map(|l| list_u64(l, r)).unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// A user's attributes as the two-tower user tower reads them: `age:`, `gender:`,
/// `occupation:` and `region:` with the value in lower case, those the user has. Training and
/// serving both call this, so the features agree.
pub fn tower_attrs(u: &User) -> Vec<String> {
    let mut out = Vec::new();
    for (name, v) in [
        ("age", &u.age_bucket),
        ("gender", &u.gender),
        ("occupation", &u.occupation),
        ("region", &u.region),
    ] {
        if let Some(v) = v {
            out.push(format!("{name}:{}", v.to_lowercase()));
        }
    }
    out
}
