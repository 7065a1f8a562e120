//! Training the two-tower model: the in-batch softmax over the batch's items and uniformly drawn
//! catalog items with the log-Q correction of the mixed proposal, the co-engagement term, new
//! users' sample weights, the bias part's `θ`, then the default ID embedding, the Meta-Embedding generator and the
//! old-for-new table.

use super::*;
use crate::tower::{Grads, Input, Optimizer, Trace};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

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
    pub(super) fn zeros(m: &TwoTower) -> Self {
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
pub(super) fn in_batch_softmax(
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

/// A co-engagement anchor: the item tower's trace of the item engaged before a row's, its
/// sparse input and its catalog index.
type Anchor = (Trace, Vec<(u32, f32)>, usize);

/// The weighted softmax loss of one batch over its own items and `extras` (uniformly sampled
/// catalog items, extra negatives) and, with `grads`, its gradients added in:
/// `s_ij = u_i·v_j / τ + x_i·θ_j − c_j`, loss `Σ_i w_i · −ln softmax(s_i)_i`, where `c_j` is the
/// log of item j's expected count among the columns (`correction`; with no extras, `ln q_j`).
/// With `item_item` λ > 0, rows whose pair has an anchor `a_i` (the item engaged before) add the
/// co-engagement term `λ · w_i · −ln softmax(t_i)_i`, `t_ij = v_{a_i}·v_j / τ − c_j`, the anchor
/// itself masked out of its row.
pub(super) fn batch_loss(
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
    let mut loss: f32 = nll.iter().zip(batch).map(|(l, p)| l * p.weight).sum();
    // the co-engagement term: row i's item scored from the item engaged before it
    let lambda = m.cfg.item_item;
    let mut anchors: Vec<Option<Anchor>> = Vec::with_capacity(n);
    for p in batch {
        anchors.push(match p.prev {
            Some(a) if lambda > 0.0 && a < set.items.len() => {
                let x = &set.items[a];
                let sparse = training_sparse(m, x, set.counts[a] < t);
                Some((m.item_trace(&sparse, x)?, sparse, a))
            }
            _ => None,
        });
    }
    let co = if anchors.iter().any(Option::is_some) {
        let (p2, nll2) = in_batch_softmax(
            n,
            cols,
            |i, j| match &anchors[i] {
                Some((a, _, _)) => a.y.dot(&items[j].0.y) / tau - correction[col_items[j]],
                None => 0.0,
            },
            |i, j| {
                col_items[j] == batch[i].item
                    || anchors[i].as_ref().is_some_and(|a| a.2 == col_items[j])
            },
        );
        for (i, l) in nll2.iter().enumerate() {
            if anchors[i].is_some() {
                loss += lambda * batch[i].weight * l;
            }
        }
        Some(p2)
    } else {
        None
    };
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
        if let Some(p2) = &co {
            for (i, anchor) in anchors.iter().enumerate() {
                let Some((a, sparse, idx)) = anchor else {
                    continue;
                };
                let mut g_anchor = DVector::<f32>::zeros(m.cfg.dim);
                for j in 0..cols {
                    let d =
                        lambda * batch[i].weight * (p2[(i, j)] - if i == j { 1.0 } else { 0.0 });
                    if d == 0.0 {
                        continue;
                    }
                    g_anchor.axpy(d / tau, &items[j].0.y, 1.0);
                    g_items[j].axpy(d / tau, &a.y, 1.0);
                }
                let input = Input {
                    sparse,
                    dense: &set.items[*idx].content,
                    extra: None,
                };
                m.item.backward(&input, a, &g_anchor, &mut g.item);
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
pub(super) fn log_q(set: &TrainingSet) -> Vec<f32> {
    correction(set, 1, 0)
}

/// The log of each item's expected count among a batch's columns: `batch` items drawn by
/// popularity (its share `q_j` of the pairs) and `uniform` drawn uniformly from the catalog, up
/// to a constant: `ln(batch · q_j + uniform / N)`.
pub(super) fn correction(set: &TrainingSet, batch: usize, uniform: usize) -> Vec<f32> {
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
