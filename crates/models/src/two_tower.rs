//! The two-tower model: a user tower and an item tower, each a [`Tower`], whose inner product
//! scores a (user, item) pair. Trained on (user, engaged item) pairs from the event log with an
//! in-batch sampled softmax and the log-Q correction of popular items' over-sampling:
//! `s_ij = u_i · v_j / τ − ln q_j`, loss `−ln softmax(s_i)_i`, other occurrences of item `i` in
//! the batch masked out.
//!
//! - **User tower**: the user's ID, attributes (`age:25-34`, `gender:f`, …) and recent interests
//!   (the user tower's embeddings of the last liked, collected and shared items, weighed `1/√n`)
//!   as sparse features; the mean content vector of those items as the dense input.
//! - **Item tower**: the item's ID, its category and keywords as sparse features; its content
//!   vector (from the content encoder) as the dense input.
//!
//! A new item's own ID embedding is untrained noise, so until it has `min_interactions`
//! interactions it uses a *default* ID embedding instead ([`DefaultMethod`]): one shared ID
//! trained over every long-tail item, the mean of the trained IDs, or one generated from the
//! item's content by a linear map fitted (ridge regression) on warm items. Gradients are the
//! towers' hand-written ones; the softmax part is checked against finite differences in the
//! tests.

use crate::tower::{Input, Tower, Trace};
use crate::{Error, Result};
use nalgebra::{DMatrix, DVector};
use std::collections::HashMap;

mod eval;
mod generator;
mod neighbors;
mod serving;
mod train;
mod users;

pub use eval::{count_interactions, recall_at};
pub use generator::Generator;
pub use neighbors::Neighbors;
pub use train::{BatchGrads, TrainingSet};
pub use users::{
    bias_features, feature_hash, MetaGenerator, OldUsers, UserColdConfig, UserMethod, UserState,
    ATTRIBUTES, BIAS_FEATURES,
};

/// How a new item's ID embedding is made until it has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultMethod {
    /// One shared default ID, trained as one ID over every item with fewer than
    /// `min_interactions` interactions.
    #[default]
    Shared,
    /// The mean of the trained ID embeddings of items with at least `min_interactions`.
    Mean,
    /// Generated from the item's content vector and its category and keywords by a linear map
    /// fitted on warm items' trained ID embeddings.
    Content,
}

impl DefaultMethod {
    /// Every method.
    pub const ALL: [DefaultMethod; 3] = [
        DefaultMethod::Shared,
        DefaultMethod::Mean,
        DefaultMethod::Content,
    ];

    /// The name in configs and model files.
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultMethod::Shared => "shared",
            DefaultMethod::Mean => "mean",
            DefaultMethod::Content => "content",
        }
    }
}

impl std::str::FromStr for DefaultMethod {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        DefaultMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not one of shared, mean, content"))
    }
}

impl std::fmt::Display for DefaultMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shape and training constants.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoTowerConfig {
    /// Hash buckets of each tower's sparse features.
    pub buckets: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Output dimension.
    pub dim: usize,
    /// Length of the content vectors (0: none).
    pub content_dim: usize,
    /// Softmax temperature τ.
    pub temperature: f32,
    /// AdaGrad learning rate.
    pub learning_rate: f32,
    /// Pairs per batch (the in-batch negatives).
    pub batch: usize,
    /// Passes over the pairs.
    pub epochs: usize,
    /// Initialisation and shuffling seed.
    pub seed: u64,
    /// How new items get their ID embedding.
    pub default_method: DefaultMethod,
    /// Interactions an item needs before it uses its own ID.
    pub min_interactions: u32,
    /// Extra negatives per batch drawn uniformly from the catalog, beside the in-batch ones
    /// (mixed negative sampling; 0: in-batch only). A training setting, not in the model file.
    pub uniform_negatives: usize,
    /// Weight of the co-engagement term: each pair's item also scored from the item engaged
    /// before it through the item tower (the same softmax over the batch's columns), so that
    /// items engaged together lie close in the item tower's space, which a new user's query
    /// leans on ([`TwoTower::with_seed_items`]). A training setting (0: off).
    pub item_item: f32,
    /// The co-engagement term's anchor: one of the user's last `item_item_window` engagements
    /// before the pair's, drawn once per pair (1: the one just before). Item-CF counts every
    /// co-engagement of a history, not only neighbours; a window lets the term see more of them.
    pub item_item_window: usize,
    /// Co-engagement neighbours kept per item ([`Neighbors`], from the training engagements)
    /// for a warming user's channel; a training setting (0: none).
    pub neighbors: usize,
    /// New users: who is new, how they weigh in training, the bias part, their ID embedding.
    pub users: UserColdConfig,
}

impl Default for TwoTowerConfig {
    fn default() -> Self {
        Self {
            buckets: 1 << 18,
            hidden: 128,
            dim: 64,
            content_dim: 0,
            temperature: 0.05,
            learning_rate: 0.05,
            batch: 256,
            epochs: 3,
            seed: 1,
            default_method: DefaultMethod::Shared,
            min_interactions: 5,
            uniform_negatives: 0,
            item_item: 0.0,
            item_item_window: 1,
            neighbors: 0,
            users: UserColdConfig::default(),
        }
    }
}

pub(crate) fn fnv(tag: &str, s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tag.bytes().chain([0u8]).chain(s.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The bucket of feature `s` of kind `tag` among `buckets`.
fn bucket(tag: &str, s: &str, buckets: usize) -> u32 {
    (fnv(tag, s) % buckets as u64) as u32
}

/// An item as the item tower sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemSide {
    /// Item.
    pub item_id: u64,
    /// Its category.
    pub category: String,
    /// Its keywords.
    pub keywords: Vec<String>,
    /// Its content vector (empty: none).
    pub content: Vec<f32>,
}

/// A user as the user tower sees them at one moment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UserSide {
    /// User.
    pub user_id: u64,
    /// Attributes as `name:value` (e.g. `gender:f`).
    pub attrs: Vec<String>,
    /// The last liked, collected and shared items, newest first.
    pub recent: Vec<u64>,
    /// The mean content vector of `recent` (empty: none known).
    pub content: Vec<f32>,
    /// The last clicked items, newest first: weaker signals than `recent`, a feature of their
    /// own (a new user's first events are often clicks).
    pub clicked: Vec<u64>,
    /// Interests chosen at onboarding (a Meta-Embedding input).
    pub interests: Vec<String>,
    /// Interactions, days since sign-up, logged in: who is new, and the bias features.
    pub state: UserState,
}

/// A featurised item: its ID bucket, its side features and content.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemInput {
    id: u32,
    side: Vec<(u32, f32)>,
    content: Vec<f32>,
}

/// A featurised user.
#[derive(Debug, Clone, PartialEq)]
pub struct UserInput {
    /// Their own ID bucket.
    id: u32,
    /// Their group's shared ID bucket, when they have every `group_by` attribute.
    group: Option<u32>,
    /// Attributes and recent items.
    sparse: Vec<(u32, f32)>,
    content: Vec<f32>,
    /// New at this moment.
    pub new: bool,
    /// The bias features (empty when the model has no bias part).
    bias: Vec<f32>,
    /// Meta-Embedding inputs (hashed attributes and interests, below `meta_buckets`).
    meta: Vec<u32>,
    /// The old-for-new signature (hashed attributes and recent items); filled for serving
    /// ([`TwoTower::serving_input`]), empty in training pairs.
    knn: Vec<u32>,
}

/// How an item's ID enters the item tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdUse {
    /// Its own ID embedding (an item with enough interactions).
    Own,
    /// The default embedding of the model's method (a new item).
    Default,
}

/// The trained model.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoTower {
    /// Configuration.
    pub cfg: TwoTowerConfig,
    /// The user tower.
    pub user: Tower,
    /// The item tower.
    pub item: Tower,
    /// For [`DefaultMethod::Mean`]: the mean trained ID embedding (hidden space).
    pub mean_id: DVector<f32>,
    /// For [`DefaultMethod::Content`]: the fitted generator.
    pub generator: Option<Generator>,
    /// The shallow bias part: per item-ID bucket, `θ` over the bias features
    /// (`BIAS_FEATURES × buckets`; no columns without a bias part).
    pub theta: DMatrix<f32>,
    /// The mean `θ` of warm items: a new item's under the mean and content methods.
    pub mean_theta: DVector<f32>,
    /// The Meta-Embedding generator, for the meta and combined user methods.
    pub meta: Option<MetaGenerator>,
    /// The old users' table, for the knn and combined user methods.
    pub old_users: Option<OldUsers>,
    /// The items that had `min_interactions` in training, sorted: they use their own ID; every
    /// other item (a new one above all) uses the default.
    pub graduated: Vec<u64>,
    /// The training's co-engagement neighbours (item-CF), for a warming user's channel (empty:
    /// none).
    pub neighbors: Neighbors,
}

/// Per epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Mean in-batch softmax loss.
    pub loss: f32,
}

/// One training pair: a user at the moment of an engagement, and the item engaged.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The user then.
    pub user: UserInput,
    /// The item's index in the catalog.
    pub item: usize,
    /// Loss weight (`new_user_weight` for a user new at the time, else 1).
    pub weight: f32,
    /// The item the user engaged just before (its catalog index): the anchor of the
    /// co-engagement term (`item_item`).
    pub prev: Option<usize>,
}

impl Pair {
    /// A pair weighed by `m`'s rule: `new_user_weight` when the user was new.
    pub fn weighed(m: &TwoTower, user: UserInput, item: usize) -> Self {
        let weight = if user.new {
            m.cfg.users.new_user_weight
        } else {
            1.0
        };
        Self {
            user,
            item,
            weight,
            prev: None,
        }
    }

    /// The same pair with the item engaged before it.
    pub fn after(mut self, prev: Option<usize>) -> Self {
        self.prev = prev;
        self
    }
}

/// One user of the training data, for the old-for-new table.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    /// User.
    pub user_id: u64,
    /// Signature: hashed attributes and first items ([`TwoTower::signature`]).
    pub signature: Vec<u32>,
    /// Engagements in training.
    pub interactions: u32,
}

impl TwoTower {
    /// A freshly initialised model.
    pub fn new(cfg: TwoTowerConfig) -> Result<Self> {
        if cfg.temperature <= 0.0 || cfg.temperature.is_nan() || cfg.batch < 2 {
            return Err(Error::DimensionMismatch {
                left: cfg.batch,
                right: 2,
            });
        }
        cfg.users.validate().map_err(Error::Config)?;
        let user = Tower::new(cfg.buckets, cfg.hidden, cfg.dim, cfg.content_dim, cfg.seed)?;
        let item = Tower::new(
            cfg.buckets,
            cfg.hidden,
            cfg.dim,
            cfg.content_dim,
            cfg.seed.wrapping_add(1),
        )?;
        let theta_cols = if cfg.users.bias_features {
            cfg.buckets
        } else {
            0
        };
        Ok(Self {
            mean_id: DVector::zeros(cfg.hidden),
            generator: None,
            theta: DMatrix::zeros(BIAS_FEATURES, theta_cols),
            mean_theta: DVector::zeros(BIAS_FEATURES),
            meta: None,
            old_users: None,
            graduated: Vec::new(),
            neighbors: Neighbors::default(),
            user,
            item,
            cfg,
        })
    }

    /// The bucket of the shared default ID.
    pub fn default_bucket(&self) -> u32 {
        bucket("i", "#default", self.cfg.buckets)
    }

    /// Featurises an item.
    pub fn item_input(&self, it: &ItemSide) -> ItemInput {
        let b = self.cfg.buckets;
        let mut side = vec![(bucket("c", &it.category, b), 1.0)];
        if !it.keywords.is_empty() {
            let w = 1.0 / (it.keywords.len() as f32).sqrt();
            side.extend(it.keywords.iter().map(|k| (bucket("k", k, b), w)));
        }
        ItemInput {
            id: bucket("i", &it.item_id.to_string(), b),
            side,
            content: it.content.clone(),
        }
    }

    /// Featurises a user at one moment (for training: without the old-for-new signature).
    pub fn user_input(&self, u: &UserSide) -> UserInput {
        let b = self.cfg.buckets;
        let uc = &self.cfg.users;
        let mut sparse: Vec<(u32, f32)> =
            u.attrs.iter().map(|a| (bucket("a", a, b), 1.0)).collect();
        if !u.recent.is_empty() {
            let w = 1.0 / (u.recent.len() as f32).sqrt();
            sparse.extend(u.recent.iter().map(|i| (bucket("r", &i.to_string(), b), w)));
        }
        if !u.clicked.is_empty() {
            let w = 1.0 / (u.clicked.len() as f32).sqrt();
            sparse.extend(
                u.clicked
                    .iter()
                    .map(|i| (bucket("k", &i.to_string(), b), w)),
            );
        }
        let new = uc.is_new(&u.state);
        let meta = if uc.method.uses_meta() {
            let mb = uc.meta_buckets as u32;
            u.attrs
                .iter()
                .map(|a| feature_hash("m", a) % mb)
                .chain(
                    u.interests
                        .iter()
                        .map(|i| feature_hash("m", &format!("interest:{}", i.to_lowercase())) % mb),
                )
                .collect()
        } else {
            Vec::new()
        };
        UserInput {
            id: bucket("u", &u.user_id.to_string(), b),
            group: uc.group_of(&u.attrs).map(|g| bucket("g", &g, b)),
            sparse,
            content: u.content.clone(),
            new,
            bias: if uc.bias_features {
                bias_features(&u.state, new)
            } else {
                Vec::new()
            },
            meta,
            knn: Vec::new(),
        }
    }

    /// A user's old-for-new signature: hashed attributes and items (their first ones, for a
    /// user being placed among old users).
    pub fn signature(attrs: &[String], items: &[u64]) -> Vec<u32> {
        let mut f: Vec<u32> = attrs
            .iter()
            .map(|a| feature_hash("a", a))
            .chain(items.iter().map(|i| feature_hash("r", &i.to_string())))
            .collect();
        f.sort_unstable();
        f.dedup();
        f
    }

    /// The ID part of an item's hidden pre-activation when it uses the default.
    fn default_id(&self, x: &ItemInput) -> Result<DVector<f32>> {
        Ok(match self.cfg.default_method {
            DefaultMethod::Shared => self.item.emb.column(self.default_bucket() as usize).into(),
            DefaultMethod::Mean => self.mean_id.clone(),
            DefaultMethod::Content => match &self.generator {
                Some(g) => g.generate(&self.item.bag(&x.side), &x.content)?,
                None => self.mean_id.clone(),
            },
        })
    }

    /// The item tower's forward pass of an item with the sparse input `sparse` (its ID as
    /// trained or served, and its side features).
    fn item_trace(&self, sparse: &[(u32, f32)], x: &ItemInput) -> Result<Trace> {
        self.item.forward(&Input {
            sparse,
            dense: &x.content,
            extra: None,
        })
    }

    /// The item tower's output for an item.
    pub fn item_vector(&self, x: &ItemInput, id: IdUse) -> Result<DVector<f32>> {
        match id {
            IdUse::Own => self.item_trace(&own_sparse(x), x).map(|t| t.y),
            IdUse::Default => {
                let extra = self.default_id(x)?;
                self.item
                    .forward(&Input {
                        sparse: &x.side,
                        dense: &x.content,
                        extra: Some(&extra),
                    })
                    .map(|t| t.y)
            }
        }
    }

    /// Whether an item uses its own ID under this model.
    pub fn id_use(&self, item_id: u64) -> IdUse {
        if self.graduated.binary_search(&item_id).is_ok() {
            IdUse::Own
        } else {
            IdUse::Default
        }
    }

    /// An item's pool vector as published ([`TwoTower::query_item`]): its own ID if it graduated
    /// in training, else the default.
    pub fn vector_of(&self, it: &ItemSide) -> Result<DVector<f32>> {
        self.query_item(&self.item_input(it), self.id_use(it.item_id))
    }

    /// The user tower's sparse input in training: the user's own ID, or their group's while new
    /// when the method trains group embeddings.
    fn training_user_sparse(&self, x: &UserInput) -> Vec<(u32, f32)> {
        let id = match x.group {
            Some(g) if x.new && self.cfg.users.method.trains_groups() => g,
            _ => x.id,
        };
        let mut s = Vec::with_capacity(x.sparse.len() + 1);
        s.push((id, 1.0));
        s.extend_from_slice(&x.sparse);
        s
    }

    /// Length of the vectors the pools hold and the users query with: the tower output, then the
    /// bias features when the model has the bias part.
    pub fn vector_dim(&self) -> usize {
        self.cfg.dim + if self.has_bias() { BIAS_FEATURES } else { 0 }
    }

    /// Whether the model has the shallow bias part.
    pub fn has_bias(&self) -> bool {
        self.theta.ncols() > 0
    }

    /// An item's `θ` as served.
    fn item_theta(&self, x: &ItemInput, id: IdUse) -> DVector<f32> {
        match (id, self.cfg.default_method) {
            (IdUse::Own, _) => self.theta.column(x.id as usize).into(),
            (IdUse::Default, DefaultMethod::Shared) => {
                self.theta.column(self.default_bucket() as usize).into()
            }
            (IdUse::Default, _) => self.mean_theta.clone(),
        }
    }

    /// An item's vector as the pools hold it: the item tower's output and, with the bias part,
    /// its `θ`.
    pub fn query_item(&self, x: &ItemInput, id: IdUse) -> Result<DVector<f32>> {
        let v = self.item_vector(x, id)?;
        if !self.has_bias() {
            return Ok(v);
        }
        let mut out = DVector::zeros(self.vector_dim());
        out.rows_mut(0, self.cfg.dim).copy_from(&v);
        out.rows_mut(self.cfg.dim, BIAS_FEATURES)
            .copy_from(&self.item_theta(x, id));
        Ok(out)
    }
}

fn own_sparse(x: &ItemInput) -> Vec<(u32, f32)> {
    let mut s = Vec::with_capacity(x.side.len() + 1);
    s.push((x.id, 1.0));
    s.extend_from_slice(&x.side);
    s
}

/// The item tower's training input: its own ID, or the shared default ID for a long-tail item
/// when that is the method.
fn training_sparse(m: &TwoTower, x: &ItemInput, long_tail: bool) -> Vec<(u32, f32)> {
    if long_tail && m.cfg.default_method == DefaultMethod::Shared {
        let mut s = Vec::with_capacity(x.side.len() + 1);
        s.push((m.default_bucket(), 1.0));
        s.extend_from_slice(&x.side);
        s
    } else {
        own_sparse(x)
    }
}

/// Interactions per item id.
pub type Counts = HashMap<u64, u32>;

/// The most old users an old-for-new table holds.
pub const MAX_OLD_USERS: usize = 100_000;

#[cfg(test)]
mod tests;
