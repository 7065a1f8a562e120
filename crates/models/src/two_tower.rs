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

use crate::tower::{Grads, Input, Optimizer, Tower, Trace};
use crate::{Error, Result};
use nalgebra::{DMatrix, DVector};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

mod eval;
mod generator;
mod users;

pub use eval::{count_interactions, recall_at};
pub use generator::Generator;
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
}

impl Pair {
    /// A pair weighed by `m`'s rule: `new_user_weight` when the user was new.
    pub fn weighed(m: &TwoTower, user: UserInput, item: usize) -> Self {
        let weight = if user.new {
            m.cfg.users.new_user_weight
        } else {
            1.0
        };
        Self { user, item, weight }
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

    /// Featurises a user for serving: [`TwoTower::user_input`] with the old-for-new signature
    /// (attributes and recent items) when the model uses it.
    pub fn serving_input(&self, u: &UserSide) -> UserInput {
        let mut x = self.user_input(u);
        if self.cfg.users.method.uses_knn() && x.new {
            let items: Vec<u64> = u.recent.iter().chain(&u.clicked).copied().collect();
            x.knn = Self::signature(&u.attrs, &items);
        }
        x
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

    /// The ID part of a user's tower input when serving: an old user's own ID; a new user's by
    /// the model's user method. Returns the sparse input and the extra hidden-space vector.
    fn serving_user_id(&self, x: &UserInput) -> (Vec<(u32, f32)>, Option<DVector<f32>>) {
        let with = |id: Option<u32>| {
            let mut s = Vec::with_capacity(x.sparse.len() + 1);
            s.extend(id.map(|id| (id, 1.0)));
            s.extend_from_slice(&x.sparse);
            s
        };
        if !x.new {
            return (with(Some(x.id)), None);
        }
        let uc = &self.cfg.users;
        let meta = || self.meta.as_ref().map(|g| g.generate(&x.meta));
        let knn = || {
            self.old_users
                .as_ref()
                .and_then(|t| t.embedding(&x.knn, uc.knn_k))
        };
        match uc.method {
            UserMethod::Id => (with(Some(x.id)), None),
            UserMethod::Group => (with(x.group), None),
            UserMethod::Meta => (with(None), meta()),
            UserMethod::Knn => (with(None), knn()),
            UserMethod::Combined => {
                let parts: Vec<DVector<f32>> = x
                    .group
                    .map(|g| self.user.emb.column(g as usize).into())
                    .into_iter()
                    .chain(meta())
                    .chain(knn())
                    .collect();
                let n = parts.len();
                let mean = parts
                    .into_iter()
                    .reduce(|a, b| a + b)
                    .map(|sum| sum / n as f32);
                (with(None), mean)
            }
        }
    }

    /// The user tower's output as served (see [`TwoTower::serving_user_id`]).
    pub fn user_vector(&self, x: &UserInput) -> Result<DVector<f32>> {
        let (sparse, extra) = self.serving_user_id(x);
        self.user
            .forward(&Input {
                sparse: &sparse,
                dense: &x.content,
                extra: extra.as_ref(),
            })
            .map(|t| t.y)
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

    /// A user's query vector: the user tower's output and, with the bias part, `τ` times the bias
    /// features, so that its inner product with an item's [`TwoTower::query_item`] vector is `τ`
    /// times the trained logit (without the log-Q correction).
    pub fn user_query(&self, x: &UserInput) -> Result<DVector<f32>> {
        let u = self.user_vector(x)?;
        if !self.has_bias() {
            return Ok(u);
        }
        let tau = self.cfg.temperature;
        let mut q = DVector::zeros(self.vector_dim());
        q.rows_mut(0, self.cfg.dim).copy_from(&u);
        for (i, b) in x.bias.iter().enumerate().take(BIAS_FEATURES) {
            q[self.cfg.dim + i] = tau * b;
        }
        Ok(q)
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

/// What training needs: the catalog, each item's interactions in the training pairs, the pairs
/// and the users (for the old-for-new table).
pub struct TrainingSet {
    /// Featurised items.
    pub items: Vec<ItemInput>,
    /// Interactions per item (its count among the pairs).
    pub counts: Vec<u32>,
    /// The pairs, in time order.
    pub pairs: Vec<Pair>,
    /// The users of the pairs (may be empty: no old-for-new table then).
    pub users: Vec<UserRecord>,
}

/// The gradients of one batch: both towers and the touched `θ` columns.
pub struct BatchGrads {
    /// User tower.
    pub user: Grads,
    /// Item tower.
    pub item: Grads,
    /// Per item-ID bucket, of `θ`.
    pub theta: HashMap<u32, DVector<f32>>,
}

impl BatchGrads {
    fn zeros(m: &TwoTower) -> Self {
        Self {
            user: m.user.zero_grads(),
            item: m.item.zero_grads(),
            theta: HashMap::new(),
        }
    }
}

/// The in-batch softmax of `n` rows over `cols` ≥ `n` columns (the batch's items, then any
/// extra negatives): `p_ij` from logits `logit(i, j)`, where another occurrence of row i's item
/// (`same(i, j)`) is not a negative; and each row's `−ln p_ii`.
fn in_batch_softmax(
    n: usize,
    cols: usize,
    logit: impl Fn(usize, usize) -> f32,
    same: impl Fn(usize, usize) -> bool,
) -> (DMatrix<f32>, Vec<f32>) {
    let mut probs = DMatrix::<f32>::zeros(n, cols);
    let mut nll = Vec::with_capacity(n);
    for i in 0..n {
        let mut row: Vec<f32> = (0..cols)
            .map(|j| {
                if j != i && same(i, j) {
                    f32::NEG_INFINITY
                } else {
                    logit(i, j)
                }
            })
            .collect();
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for s in &mut row {
            *s = (*s - max).exp();
            sum += *s;
        }
        for (j, s) in row.iter().enumerate() {
            probs[(i, j)] = s / sum;
        }
        nll.push(-probs[(i, i)].max(f32::MIN_POSITIVE).ln());
    }
    (probs, nll)
}

/// The weighted softmax loss of one batch over its own items and `extras` (uniformly sampled
/// catalog items, extra negatives) and, with `grads`, its gradients added in:
/// `s_ij = u_i·v_j / τ + x_i·θ_j − c_j`, loss `Σ_i w_i · −ln softmax(s_i)_i`, where `c_j` is the
/// log of item j's expected count among the columns (`correction`; with no extras, `ln q_j`).
fn batch_loss(
    m: &TwoTower,
    set: &TrainingSet,
    batch: &[&Pair],
    extras: &[usize],
    correction: &[f32],
    grads: Option<&mut BatchGrads>,
) -> Result<f32> {
    let n = batch.len();
    let tau = m.cfg.temperature;
    let mut users: Vec<(Trace, Vec<(u32, f32)>)> = Vec::with_capacity(n);
    let t = m.cfg.min_interactions;
    for p in batch {
        let us = m.training_user_sparse(&p.user);
        let tr = m.user.forward(&Input {
            sparse: &us,
            dense: &p.user.content,
            extra: None,
        })?;
        users.push((tr, us));
    }
    // the columns: each row's item, then the extra negatives
    let col_items: Vec<usize> = batch
        .iter()
        .map(|p| p.item)
        .chain(extras.iter().copied())
        .collect();
    let mut items: Vec<(Trace, Vec<(u32, f32)>)> = Vec::with_capacity(col_items.len());
    for &j in &col_items {
        let x = &set.items[j];
        let sparse = training_sparse(m, x, set.counts[j] < t);
        items.push((m.item_trace(&sparse, x)?, sparse));
    }
    let cols = col_items.len();
    // the θ column of each row's item: its training ID (own, or the shared default)
    let bias = m.has_bias();
    let theta_of = |j: usize| items[j].1[0].0 as usize;
    let shallow = |i: usize, j: usize| -> f32 {
        if !bias || batch[i].user.bias.is_empty() {
            return 0.0;
        }
        let th = m.theta.column(theta_of(j));
        batch[i]
            .user
            .bias
            .iter()
            .zip(th.iter())
            .map(|(x, t)| x * t)
            .sum()
    };
    let (probs, nll) = in_batch_softmax(
        n,
        cols,
        |i, j| users[i].0.y.dot(&items[j].0.y) / tau + shallow(i, j) - correction[col_items[j]],
        |i, j| col_items[j] == batch[i].item,
    );
    let loss: f32 = nll.iter().zip(batch).map(|(l, p)| l * p.weight).sum();
    if let Some(g) = grads {
        // dL/ds_ij = w_i (p_ij − [i = j]); ds_ij/du_i = v_j / τ; ds_ij/dv_j = u_i / τ;
        // ds_ij/dθ_j = x_i
        let mut g_users = vec![DVector::<f32>::zeros(m.cfg.dim); n];
        let mut g_items = vec![DVector::<f32>::zeros(m.cfg.dim); cols];
        for i in 0..n {
            for j in 0..cols {
                let d = batch[i].weight * (probs[(i, j)] - if i == j { 1.0 } else { 0.0 });
                if d == 0.0 {
                    continue;
                }
                g_users[i].axpy(d / tau, &items[j].0.y, 1.0);
                g_items[j].axpy(d / tau, &users[i].0.y, 1.0);
                if bias && !batch[i].user.bias.is_empty() {
                    let x = DVector::from_column_slice(&batch[i].user.bias);
                    g.theta
                        .entry(theta_of(j) as u32)
                        .or_insert_with(|| DVector::zeros(BIAS_FEATURES))
                        .axpy(d, &x, 1.0);
                }
            }
        }
        for (i, p) in batch.iter().enumerate() {
            let uin = Input {
                sparse: &users[i].1,
                dense: &p.user.content,
                extra: None,
            };
            m.user.backward(&uin, &users[i].0, &g_users[i], &mut g.user);
        }
        for (j, &item) in col_items.iter().enumerate() {
            let input = Input {
                sparse: &items[j].1,
                dense: &set.items[item].content,
                extra: None,
            };
            m.item
                .backward(&input, &items[j].0, &g_items[j], &mut g.item);
        }
    }
    Ok(loss)
}

/// `ln q_j`: each item's share of the pairs (its sampling probability in a batch).
fn log_q(set: &TrainingSet) -> Vec<f32> {
    correction(set, 1, 0)
}

/// The log of each item's expected count among a batch's columns: `batch` items drawn by
/// popularity (its share `q_j` of the pairs) and `uniform` drawn uniformly from the catalog, up
/// to a constant: `ln(batch · q_j + uniform / N)`.
fn correction(set: &TrainingSet, batch: usize, uniform: usize) -> Vec<f32> {
    let total = set.counts.iter().map(|&c| c as f64).sum::<f64>().max(1.0);
    let n_items = set.counts.len().max(1) as f64;
    set.counts
        .iter()
        .map(|&c| {
            let q = c.max(1) as f64 / total;
            (batch as f64 * q + uniform as f64 / n_items).ln() as f32
        })
        .collect()
}

impl TwoTower {
    /// Trains on `set`: `on_step` after each batch, `on_epoch` after each pass. Afterwards the
    /// default embedding of the configured method is made ready ([`TwoTower::finish`]).
    pub fn train(
        &mut self,
        set: &TrainingSet,
        mut on_step: impl FnMut(),
        mut on_epoch: impl FnMut(&EpochStats),
    ) -> Result<Vec<EpochStats>> {
        if set.items.len() != set.counts.len() {
            return Err(Error::DimensionMismatch {
                left: set.items.len(),
                right: set.counts.len(),
            });
        }
        let uniform = self.cfg.uniform_negatives;
        let lq = correction(set, self.cfg.batch, uniform);
        let (mut ou, mut oi) = (self.user.optimizer(), self.item.optimizer());
        let mut o_theta = DMatrix::<f32>::zeros(self.theta.nrows(), self.theta.ncols());
        let mut order: Vec<&Pair> = set.pairs.iter().collect();
        let mut rng = SmallRng::seed_from_u64(self.cfg.seed);
        let mut stats = Vec::with_capacity(self.cfg.epochs);
        for epoch in 1..=self.cfg.epochs {
            order.shuffle(&mut rng);
            let (mut total, mut batches) = (0.0f64, 0usize);
            for batch in order.chunks(self.cfg.batch) {
                if batch.len() < 2 {
                    continue;
                }
                let extras: Vec<usize> = (0..uniform)
                    .map(|_| rng.random_range(0..set.items.len()))
                    .collect();
                let mut g = BatchGrads::zeros(self);
                let loss = batch_loss(self, set, batch, &extras, &lq, Some(&mut g))?;
                let scale = 1.0 / batch.len() as f32;
                let lr = self.cfg.learning_rate;
                self.user.apply(&mut ou, &g.user, scale, lr);
                self.item.apply(&mut oi, &g.item, scale, lr);
                for (b, gt) in &g.theta {
                    let b = *b as usize;
                    for (r, gr) in gt.iter().enumerate() {
                        let gr = gr * scale;
                        o_theta[(r, b)] += gr * gr;
                        self.theta[(r, b)] -= lr * gr / (o_theta[(r, b)].sqrt() + 1e-8);
                    }
                }
                total += (loss * scale) as f64;
                batches += 1;
                on_step();
            }
            let s = EpochStats {
                epoch,
                loss: (total / batches.max(1) as f64) as f32,
            };
            on_epoch(&s);
            stats.push(s);
        }
        self.finish(set, &ou, &oi)?;
        if self.cfg.users.method.uses_meta() {
            self.train_meta(set)?;
        }
        if self.cfg.users.method.uses_knn() {
            self.old_users = Some(self.old_users_table(set));
        }
        Ok(stats)
    }

    /// Meta-Embedding: fits the generator on old users' pairs, the towers frozen, so that the
    /// embedding it generates from a user's attributes and interests, in place of their own ID,
    /// scores their engaged item high against the batch (the same in-batch softmax).
    fn train_meta(&mut self, set: &TrainingSet) -> Result<()> {
        let (hidden, mb) = (self.cfg.hidden, self.cfg.users.meta_buckets);
        let mut g = MetaGenerator::zeros(hidden, mb);
        let (mut acc_w, mut acc_b) = (DMatrix::<f32>::zeros(hidden, mb), DVector::zeros(hidden));
        let t = self.cfg.min_interactions;
        let item_vecs: Vec<DVector<f32>> = set
            .items
            .iter()
            .zip(&set.counts)
            .map(|(x, &c)| {
                self.item_trace(&training_sparse(self, x, c < t), x)
                    .map(|t| t.y)
            })
            .collect::<Result<_>>()?;
        let lq = log_q(set);
        let tau = self.cfg.temperature;
        let lr = self.cfg.learning_rate;
        let mut old: Vec<&Pair> = set.pairs.iter().filter(|p| !p.user.new).collect();
        let mut rng = SmallRng::seed_from_u64(self.cfg.seed.wrapping_add(7));
        for _ in 0..self.cfg.epochs {
            old.shuffle(&mut rng);
            for batch in old.chunks(self.cfg.batch) {
                let n = batch.len();
                if n < 2 {
                    continue;
                }
                let mut traces = Vec::with_capacity(n);
                for p in batch {
                    let e = g.generate(&p.user.meta);
                    traces.push(self.user.forward(&Input {
                        sparse: &p.user.sparse,
                        dense: &p.user.content,
                        extra: Some(&e),
                    })?);
                }
                let (probs, _) = in_batch_softmax(
                    n,
                    n,
                    |i, j| traces[i].y.dot(&item_vecs[batch[j].item]) / tau - lq[batch[j].item],
                    |i, j| batch[j].item == batch[i].item,
                );
                let mut gw: HashMap<u32, DVector<f32>> = HashMap::new();
                let mut gb = DVector::<f32>::zeros(hidden);
                for i in 0..n {
                    let mut gy = DVector::<f32>::zeros(self.cfg.dim);
                    for j in 0..n {
                        let d = probs[(i, j)] - if i == j { 1.0 } else { 0.0 };
                        gy.axpy(d / tau, &item_vecs[batch[j].item], 1.0);
                    }
                    let gu = self.user.hidden_grad(&traces[i], &gy);
                    gb += &gu;
                    let f = &batch[i].user.meta;
                    let s = 1.0 / (f.len().max(1) as f32).sqrt();
                    for &c in f {
                        gw.entry(c)
                            .or_insert_with(|| DVector::zeros(hidden))
                            .axpy(s, &gu, 1.0);
                    }
                }
                let scale = 1.0 / n as f32;
                let step = |p: &mut f32, a: &mut f32, gr: f32| {
                    let gr = gr * scale;
                    *a += gr * gr;
                    *p -= lr * gr / (a.sqrt() + 1e-8);
                };
                for (c, gc) in &gw {
                    let c = *c as usize;
                    for r in 0..hidden {
                        step(&mut g.w[(r, c)], &mut acc_w[(r, c)], gc[r]);
                    }
                }
                for r in 0..hidden {
                    step(&mut g.b[r], &mut acc_b[r], gb[r]);
                }
            }
        }
        self.meta = Some(g);
        Ok(())
    }

    /// The old users for old-for-new: those with at least `new_user_interactions` training
    /// engagements and a trained ID, the most engaged first, at most [`MAX_OLD_USERS`].
    fn old_users_table(&self, set: &TrainingSet) -> OldUsers {
        let b = self.cfg.buckets;
        let n = self.cfg.users.new_user_interactions;
        let mut old: Vec<(&UserRecord, u32)> = set
            .users
            .iter()
            .filter(|u| u.interactions >= n && !u.signature.is_empty())
            .map(|u| (u, bucket("u", &u.user_id.to_string(), b)))
            .filter(|(_, id)| self.user.knows(*id))
            .collect();
        old.sort_by(|a, b| {
            b.0.interactions
                .cmp(&a.0.interactions)
                .then(a.0.user_id.cmp(&b.0.user_id))
        });
        old.truncate(MAX_OLD_USERS);
        let emb = DMatrix::from_fn(self.cfg.hidden, old.len(), |r, c| {
            self.user.emb[(r, old[c].1 as usize)]
        });
        OldUsers::new(
            old.iter().map(|u| u.0.user_id).collect(),
            old.iter().map(|u| u.0.signature.clone()).collect(),
            emb,
        )
    }

    /// Zeroes untrained embedding columns and makes the default embedding ready: the mean of
    /// the warm items' trained IDs (kept for every method, as the content generator's fallback)
    /// and, for [`DefaultMethod::Content`], the generator fitted on them.
    fn finish(&mut self, set: &TrainingSet, ou: &Optimizer, oi: &Optimizer) -> Result<()> {
        self.user.forget_untrained(ou);
        self.item.forget_untrained(oi);
        let t = self.cfg.min_interactions;
        let warm: Vec<usize> = (0..set.items.len())
            .filter(|&i| set.counts[i] >= t && self.item.knows(set.items[i].id))
            .collect();
        let mut mean = DVector::zeros(self.cfg.hidden);
        let mut mean_theta = DVector::zeros(BIAS_FEATURES);
        for &i in &warm {
            mean += self.item.emb.column(set.items[i].id as usize);
            if self.has_bias() {
                mean_theta += self.theta.column(set.items[i].id as usize);
            }
        }
        self.mean_id = mean / warm.len().max(1) as f32;
        self.mean_theta = mean_theta / warm.len().max(1) as f32;
        self.generator = None;
        if self.cfg.default_method == DefaultMethod::Content && !warm.is_empty() {
            let examples: Vec<(DVector<f32>, &[f32], DVector<f32>)> = warm
                .iter()
                .map(|&i| {
                    let x = &set.items[i];
                    (
                        self.item.bag(&x.side),
                        x.content.as_slice(),
                        self.item.emb.column(x.id as usize).into(),
                    )
                })
                .collect();
            self.generator = Some(Generator::fit(&examples, self.cfg.content_dim, 1.0)?);
        }
        Ok(())
    }

    /// Mean in-batch softmax loss over `pairs` in batches of the configured size, without
    /// training (for the gradient check and held-out monitoring).
    pub fn loss(&self, set: &TrainingSet, pairs: &[&Pair]) -> Result<f32> {
        let lq = log_q(set);
        let mut total = 0.0;
        for batch in pairs.chunks(self.cfg.batch) {
            total += batch_loss(self, set, batch, &[], &lq, None)?;
        }
        Ok(total / pairs.len().max(1) as f32)
    }
}

/// Interactions per item id.
pub type Counts = HashMap<u64, u32>;

/// The most old users an old-for-new table holds.
pub const MAX_OLD_USERS: usize = 100_000;

#[cfg(test)]
mod tests;
