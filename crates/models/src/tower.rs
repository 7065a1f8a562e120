//! The network every coldstart model is built of: an embedding bag over hashed sparse features
//! plus a projection of a dense input, through `tanh` and a linear layer to an L2-normalised
//! vector. The content encoder is one tower; the two-tower model is two.
//!
//! `u = Σ_t w_t E[:, h_t] + W_d x + e + b`, `a = tanh(u)`, `v = W_out a`, `y = v / ‖v‖`, where `e`
//! is an optional extra hidden-space vector (a generated ID embedding). Gradients are written by
//! hand (checked against finite differences in the tests of both models); AdaGrad updates only
//! the embedding columns a batch touched.

use crate::{Error, Result};
use nalgebra::{DMatrix, DVector};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// The trainable parameters of one tower.
#[derive(Debug, Clone, PartialEq)]
pub struct Tower {
    /// Embedding table, `hidden × buckets` (a column per bucket).
    pub emb: DMatrix<f32>,
    /// Dense input projection, `hidden × dense_dim`.
    pub w_dense: DMatrix<f32>,
    /// Hidden bias.
    pub bias: DVector<f32>,
    /// Output projection, `dim × hidden`.
    pub w_out: DMatrix<f32>,
}

/// One input of a tower: weighted buckets, a dense vector (empty: none), and an optional
/// hidden-space vector added as is.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// (bucket, weight) pairs.
    pub sparse: &'a [(u32, f32)],
    /// The dense input (empty when absent).
    pub dense: &'a [f32],
    /// Added to the hidden pre-activation (not trained through).
    pub extra: Option<&'a DVector<f32>>,
}

/// What the forward pass keeps for the backward pass.
#[derive(Debug, Clone)]
pub struct Trace {
    a: DVector<f32>,
    v_norm: f32,
    /// The output: an L2-normalised vector.
    pub y: DVector<f32>,
}

/// Gradients of a batch; embedding gradients are sparse (per touched bucket).
#[derive(Debug, Clone)]
pub struct Grads {
    /// Per touched bucket.
    pub emb: HashMap<u32, DVector<f32>>,
    /// Of `w_dense`.
    pub w_dense: DMatrix<f32>,
    /// Of `bias`.
    pub bias: DVector<f32>,
    /// Of `w_out`.
    pub w_out: DMatrix<f32>,
}

/// AdaGrad accumulators, one per parameter.
#[derive(Debug, Clone)]
pub struct Optimizer {
    /// Of `emb`: a column still all zero was never trained.
    pub emb: DMatrix<f32>,
    w_dense: DMatrix<f32>,
    bias: DVector<f32>,
    w_out: DMatrix<f32>,
}

impl Tower {
    /// A freshly initialised tower (small uniform weights, scaled by fan-in).
    pub fn new(
        buckets: usize,
        hidden: usize,
        dim: usize,
        dense_dim: usize,
        seed: u64,
    ) -> Result<Self> {
        if buckets == 0 || hidden == 0 || dim == 0 {
            return Err(Error::DimensionMismatch {
                left: hidden,
                right: dim,
            });
        }
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut init =
            |r, c, scale: f32| DMatrix::from_fn(r, c, |_, _| rng.random_range(-scale..scale));
        let emb = init(hidden, buckets, 0.5);
        let w_dense = init(hidden, dense_dim, 1.0 / (dense_dim.max(1) as f32).sqrt());
        let w_out = init(dim, hidden, (3.0 / hidden as f32).sqrt());
        Ok(Self {
            bias: DVector::zeros(hidden),
            emb,
            w_dense,
            w_out,
        })
    }

    /// Buckets of the embedding table.
    pub fn buckets(&self) -> usize {
        self.emb.ncols()
    }

    /// Hidden width.
    pub fn hidden(&self) -> usize {
        self.bias.len()
    }

    /// Output dimension.
    pub fn dim(&self) -> usize {
        self.w_out.nrows()
    }

    /// Length of the dense input.
    pub fn dense_dim(&self) -> usize {
        self.w_dense.ncols()
    }

    /// Checks an input's shape against the tower: buckets in range, the dense input empty or
    /// of `dense_dim`, the extra vector of `hidden`.
    pub fn check(&self, x: &Input<'_>) -> Result<()> {
        if !x.dense.is_empty() && x.dense.len() != self.dense_dim() {
            return Err(Error::DimensionMismatch {
                left: x.dense.len(),
                right: self.dense_dim(),
            });
        }
        if let Some(&(b, _)) = x.sparse.iter().find(|(b, _)| *b as usize >= self.buckets()) {
            return Err(Error::DimensionMismatch {
                left: b as usize,
                right: self.buckets(),
            });
        }
        if let Some(e) = x.extra.filter(|e| e.len() != self.hidden()) {
            return Err(Error::DimensionMismatch {
                left: e.len(),
                right: self.hidden(),
            });
        }
        Ok(())
    }

    /// The hidden pre-activation of an input's sparse features alone: `Σ_t w_t E[:, h_t]`.
    pub fn bag(&self, sparse: &[(u32, f32)]) -> DVector<f32> {
        let mut u = DVector::zeros(self.hidden());
        for &(b, w) in sparse {
            u.axpy(w, &self.emb.column(b as usize), 1.0);
        }
        u
    }

    /// The forward pass.
    pub fn forward(&self, x: &Input<'_>) -> Result<Trace> {
        self.check(x)?;
        let mut u = self.bias.clone();
        for &(b, w) in x.sparse {
            u.axpy(w, &self.emb.column(b as usize), 1.0);
        }
        if !x.dense.is_empty() {
            u.gemv(
                1.0,
                &self.w_dense,
                &DVector::from_column_slice(x.dense),
                1.0,
            );
        }
        if let Some(e) = x.extra {
            u += e;
        }
        let a = u.map(f32::tanh);
        let v = &self.w_out * &a;
        let v_norm = v.norm();
        if !v_norm.is_finite() || v_norm <= 1e-12 {
            return Err(Error::NoDirection { norm: v_norm });
        }
        Ok(Trace {
            y: v / v_norm,
            a,
            v_norm,
        })
    }

    /// The gradient at the hidden pre-activation `u` (where the extra vector is added) of a loss
    /// whose gradient at the output `t.y` is `g_y`.
    pub fn hidden_grad(&self, t: &Trace, g_y: &DVector<f32>) -> DVector<f32> {
        // y = v/‖v‖  →  dv = (g − y (y·g)) / ‖v‖
        let g_v = (g_y - &t.y * t.y.dot(g_y)) / t.v_norm;
        let g_a = self.w_out.tr_mul(&g_v);
        g_a.component_mul(&t.a.map(|a| 1.0 - a * a))
    }

    /// Adds into `g` the gradients of a loss whose gradient at the output `t.y` is `g_y`.
    pub fn backward(&self, x: &Input<'_>, t: &Trace, g_y: &DVector<f32>, g: &mut Grads) {
        let g_v = (g_y - &t.y * t.y.dot(g_y)) / t.v_norm;
        g.w_out.ger(1.0, &g_v, &t.a, 1.0);
        let g_u = self.hidden_grad(t, g_y);
        g.bias += &g_u;
        if !x.dense.is_empty() {
            g.w_dense
                .ger(1.0, &g_u, &DVector::from_column_slice(x.dense), 1.0);
        }
        for &(b, w) in x.sparse {
            g.emb
                .entry(b)
                .or_insert_with(|| DVector::zeros(g_u.len()))
                .axpy(w, &g_u, 1.0);
        }
    }

    /// Zero gradients of this tower's shape.
    pub fn zero_grads(&self) -> Grads {
        Grads {
            emb: HashMap::new(),
            w_dense: DMatrix::zeros(self.w_dense.nrows(), self.w_dense.ncols()),
            bias: DVector::zeros(self.bias.len()),
            w_out: DMatrix::zeros(self.w_out.nrows(), self.w_out.ncols()),
        }
    }

    /// The optimiser state for this tower.
    pub fn optimizer(&self) -> Optimizer {
        Optimizer {
            emb: DMatrix::zeros(self.emb.nrows(), self.emb.ncols()),
            w_dense: DMatrix::zeros(self.w_dense.nrows(), self.w_dense.ncols()),
            bias: DVector::zeros(self.bias.len()),
            w_out: DMatrix::zeros(self.w_out.nrows(), self.w_out.ncols()),
        }
    }

    /// One AdaGrad step with gradients `g` scaled by `scale` (e.g. 1 / batch size).
    pub fn apply(&mut self, opt: &mut Optimizer, g: &Grads, scale: f32, lr: f32) {
        let ada = |param: &mut f32, acc: &mut f32, grad: f32| {
            let grad = grad * scale;
            *acc += grad * grad;
            *param -= lr * grad / (acc.sqrt() + 1e-8);
        };
        for (b, gb) in &g.emb {
            let (mut col, mut acc) = (
                self.emb.column_mut(*b as usize),
                opt.emb.column_mut(*b as usize),
            );
            for ((p, a), gr) in col.iter_mut().zip(acc.iter_mut()).zip(gb.iter()) {
                ada(p, a, *gr);
            }
        }
        let dense = [
            (
                self.w_dense.as_mut_slice(),
                opt.w_dense.as_mut_slice(),
                g.w_dense.as_slice(),
            ),
            (
                self.bias.as_mut_slice(),
                opt.bias.as_mut_slice(),
                g.bias.as_slice(),
            ),
            (
                self.w_out.as_mut_slice(),
                opt.w_out.as_mut_slice(),
                g.w_out.as_slice(),
            ),
        ];
        for (params, accs, grads) in dense {
            for ((p, a), gr) in params.iter_mut().zip(accs.iter_mut()).zip(grads) {
                ada(p, a, *gr);
            }
        }
    }

    /// Whether training ever updated a bucket's column (see [`Tower::forget_untrained`]).
    pub fn knows(&self, bucket: u32) -> bool {
        self.emb.column(bucket as usize).iter().any(|x| *x != 0.0)
    }

    /// Zeroes the embedding columns that training never updated (their AdaGrad accumulators are
    /// still zero): an untrained column is random noise, and a zero column adds nothing.
    pub fn forget_untrained(&mut self, opt: &Optimizer) {
        for b in 0..self.emb.ncols() {
            if opt.emb.column(b).iter().all(|x| *x == 0.0) {
                self.emb.column_mut(b).fill(0.0);
            }
        }
    }
}
