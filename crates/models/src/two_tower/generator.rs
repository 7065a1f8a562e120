//! The content-generated default ID ([`super::DefaultMethod::Content`]): a linear map from what a
//! new item has on publish — the item tower's bag of its category and keywords, and its content
//! vector — to an ID embedding, fitted on warm items (those with their own trained ID) by ridge
//! regression in closed form: `W = Y Xᵀ (X Xᵀ + λI)⁻¹`, one layer, no iterations to tune.

use crate::{Error, Result};
use nalgebra::{DMatrix, DVector};

/// The fitted map.
#[derive(Debug, Clone, PartialEq)]
pub struct Generator {
    /// `hidden × (hidden + content_dim + 1)`: over `[bag; content; 1]`.
    pub w: DMatrix<f32>,
    /// Length of the content vectors it was fitted with.
    pub content_dim: usize,
}

fn features(bag: &DVector<f32>, content: &[f32], content_dim: usize) -> Result<DVector<f32>> {
    if !content.is_empty() && content.len() != content_dim {
        return Err(Error::DimensionMismatch {
            left: content.len(),
            right: content_dim,
        });
    }
    let mut x = DVector::zeros(bag.len() + content_dim + 1);
    x.rows_mut(0, bag.len()).copy_from(bag);
    for (i, c) in content.iter().enumerate() {
        x[bag.len() + i] = *c;
    }
    x[bag.len() + content_dim] = 1.0;
    Ok(x)
}

impl Generator {
    /// Fits the map on `(bag, content, trained ID)` examples with ridge penalty `lambda`.
    pub fn fit(
        examples: &[(DVector<f32>, &[f32], DVector<f32>)],
        content_dim: usize,
        lambda: f32,
    ) -> Result<Self> {
        let Some(first) = examples.first() else {
            return Err(Error::TooFewPoints { points: 0, k: 1 });
        };
        let (hidden, n) = (first.2.len(), examples.len());
        let d = first.0.len() + content_dim + 1;
        let mut x = DMatrix::<f64>::zeros(d, n);
        let mut y = DMatrix::<f64>::zeros(hidden, n);
        for (j, (bag, content, id)) in examples.iter().enumerate() {
            let f = features(bag, content, content_dim)?;
            x.column_mut(j).copy_from(&f.map(|v| v as f64));
            y.column_mut(j).copy_from(&id.map(|v| v as f64));
        }
        let mut gram = &x * x.transpose();
        for i in 0..d {
            gram[(i, i)] += lambda as f64;
        }
        let chol = gram.cholesky().ok_or(Error::NoDirection { norm: 0.0 })?;
        // W = Y Xᵀ (X Xᵀ + λI)⁻¹  ⇔  (X Xᵀ + λI) Wᵀ = X Yᵀ
        let w_t = chol.solve(&(&x * y.transpose()));
        Ok(Self {
            w: w_t.transpose().map(|v| v as f32),
            content_dim,
        })
    }

    /// The generated ID embedding of an item with side-feature bag `bag` and content vector
    /// `content` (empty: none).
    pub fn generate(&self, bag: &DVector<f32>, content: &[f32]) -> Result<DVector<f32>> {
        let x = features(bag, content, self.content_dim)?;
        if x.len() != self.w.ncols() {
            return Err(Error::DimensionMismatch {
                left: x.len(),
                right: self.w.ncols(),
            });
        }
        Ok(&self.w * x)
    }
}
