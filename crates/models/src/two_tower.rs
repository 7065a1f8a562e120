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
use rand::SeedableRng;
use std::collections::HashMap;

mod eval;
mod generator;

pub use eval::{count_interactions, recall_at};
pub use generator::Generator;

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
        }
    }
}

fn fnv(tag: &str, s: &str) -> u64 {
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
    sparse: Vec<(u32, f32)>,
    content: Vec<f32>,
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
        let user = Tower::new(cfg.buckets, cfg.hidden, cfg.dim, cfg.content_dim, cfg.seed)?;
        let item = Tower::new(
            cfg.buckets,
            cfg.hidden,
            cfg.dim,
            cfg.content_dim,
            cfg.seed.wrapping_add(1),
        )?;
        Ok(Self {
            mean_id: DVector::zeros(cfg.hidden),
            generator: None,
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

    /// Featurises a user at one moment.
    pub fn user_input(&self, u: &UserSide) -> UserInput {
        let b = self.cfg.buckets;
        let mut sparse = vec![(bucket("u", &u.user_id.to_string(), b), 1.0)];
        sparse.extend(u.attrs.iter().map(|a| (bucket("a", a, b), 1.0)));
        if !u.recent.is_empty() {
            let w = 1.0 / (u.recent.len() as f32).sqrt();
            sparse.extend(u.recent.iter().map(|i| (bucket("r", &i.to_string(), b), w)));
        }
        UserInput {
            sparse,
            content: u.content.clone(),
        }
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

    /// The item tower's output for an item.
    pub fn item_vector(&self, x: &ItemInput, id: IdUse) -> Result<DVector<f32>> {
        match id {
            IdUse::Own => {
                let sparse = own_sparse(x);
                self.item
                    .forward(&Input {
                        sparse: &sparse,
                        dense: &x.content,
                        extra: None,
                    })
                    .map(|t| t.y)
            }
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

    /// The item tower's output for an item as published: its own ID if it graduated in
    /// training, else the default.
    pub fn vector_of(&self, it: &ItemSide) -> Result<DVector<f32>> {
        self.item_vector(&self.item_input(it), self.id_use(it.item_id))
    }

    /// The user tower's output.
    pub fn user_vector(&self, x: &UserInput) -> Result<DVector<f32>> {
        self.user.forward(&x.input()).map(|t| t.y)
    }
}

impl UserInput {
    fn input(&self) -> Input<'_> {
        Input {
            sparse: &self.sparse,
            dense: &self.content,
            extra: None,
        }
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

/// What training needs: the catalog, each item's interactions in the training pairs, and the
/// pairs.
pub struct TrainingSet {
    /// Featurised items.
    pub items: Vec<ItemInput>,
    /// Interactions per item (its count among the pairs).
    pub counts: Vec<u32>,
    /// The pairs, in time order.
    pub pairs: Vec<Pair>,
}

/// The in-batch softmax loss of one batch and, with `grads`, its gradients added in.
fn batch_loss(
    m: &TwoTower,
    set: &TrainingSet,
    batch: &[&Pair],
    log_q: &[f32],
    grads: Option<(&mut Grads, &mut Grads)>,
) -> Result<f32> {
    let n = batch.len();
    let tau = m.cfg.temperature;
    let mut users: Vec<Trace> = Vec::with_capacity(n);
    let mut items: Vec<(Trace, Vec<(u32, f32)>)> = Vec::with_capacity(n);
    let t = m.cfg.min_interactions;
    for p in batch {
        users.push(m.user.forward(&p.user.input())?);
        let x = &set.items[p.item];
        let sparse = training_sparse(m, x, set.counts[p.item] < t);
        let tr = m.item.forward(&Input {
            sparse: &sparse,
            dense: &x.content,
            extra: None,
        })?;
        items.push((tr, sparse));
    }
    // s_ij = u_i·v_j / τ − ln q_j; another occurrence of i's item is not a negative
    let mut probs = DMatrix::<f32>::zeros(n, n);
    let mut loss = 0.0f32;
    for i in 0..n {
        let mut row: Vec<f32> = (0..n)
            .map(|j| {
                if j != i && batch[j].item == batch[i].item {
                    f32::NEG_INFINITY
                } else {
                    users[i].y.dot(&items[j].0.y) / tau - log_q[batch[j].item]
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
        loss -= probs[(i, i)].max(f32::MIN_POSITIVE).ln();
    }
    if let Some((gu, gi)) = grads {
        // dL/ds_ij = p_ij − [i = j]; ds_ij/du_i = v_j / τ; ds_ij/dv_j = u_i / τ
        let mut g_users = vec![DVector::<f32>::zeros(m.cfg.dim); n];
        let mut g_items = vec![DVector::<f32>::zeros(m.cfg.dim); n];
        for i in 0..n {
            for j in 0..n {
                let g = (probs[(i, j)] - if i == j { 1.0 } else { 0.0 }) / tau;
                if g != 0.0 {
                    g_users[i].axpy(g, &items[j].0.y, 1.0);
                    g_items[j].axpy(g, &users[i].y, 1.0);
                }
            }
        }
        for (i, p) in batch.iter().enumerate() {
            m.user.backward(&p.user.input(), &users[i], &g_users[i], gu);
            let x = &set.items[p.item];
            let input = Input {
                sparse: &items[i].1,
                dense: &x.content,
                extra: None,
            };
            m.item.backward(&input, &items[i].0, &g_items[i], gi);
        }
    }
    Ok(loss)
}

/// `ln q_j`: each item's share of the pairs (its sampling probability in a batch).
fn log_q(set: &TrainingSet) -> Vec<f32> {
    let total = set.counts.iter().map(|&c| c as f64).sum::<f64>().max(1.0);
    set.counts
        .iter()
        .map(|&c| ((c.max(1) as f64) / total).ln() as f32)
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
        let lq = log_q(set);
        let (mut ou, mut oi) = (self.user.optimizer(), self.item.optimizer());
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
                let (mut gu, mut gi) = (self.user.zero_grads(), self.item.zero_grads());
                let loss = batch_loss(self, set, batch, &lq, Some((&mut gu, &mut gi)))?;
                let scale = 1.0 / batch.len() as f32;
                self.user.apply(&mut ou, &gu, scale, self.cfg.learning_rate);
                self.item.apply(&mut oi, &gi, scale, self.cfg.learning_rate);
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
        Ok(stats)
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
        for &i in &warm {
            mean += self.item.emb.column(set.items[i].id as usize);
        }
        self.mean_id = mean / warm.len().max(1) as f32;
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
            total += batch_loss(self, set, batch, &lq, None)?;
        }
        Ok(total / pairs.len().max(1) as f32)
    }
}

/// Interactions per item id.
pub type Counts = HashMap<u64, u32>;

#[cfg(test)]
mod tests;
