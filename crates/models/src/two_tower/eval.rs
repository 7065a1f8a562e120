//! Measuring a two-tower model on held-out pairs.

use super::{IdUse, Pair, TrainingSet, TwoTower, UserInput};
use crate::Result;
use nalgebra::DVector;

/// Recall@k of held-out pairs: for each, the share whose item is among the `k` items with the
/// highest inner product with the user's query vector (as served: a new user's ID by the user
/// method, the bias part), `seen(pair)` excluded. Items with fewer than
/// `min_interactions` training interactions use the default embedding.
pub fn recall_at(
    m: &TwoTower,
    set: &TrainingSet,
    held_out: &[(UserInput, usize)],
    k: usize,
    seen: impl Fn(usize, usize) -> bool,
) -> Result<f32> {
    let vectors: Vec<DVector<f32>> = set
        .items
        .iter()
        .zip(&set.counts)
        .map(|(x, &c)| {
            let id = if c >= m.cfg.min_interactions {
                IdUse::Own
            } else {
                IdUse::Default
            };
            m.query_item(x, id)
        })
        .collect::<Result<_>>()?;
    let mut hits = 0usize;
    let mut scored: Vec<(f32, usize)> = Vec::with_capacity(vectors.len());
    for (h, (user, item)) in held_out.iter().enumerate() {
        let u = m.user_query(user)?;
        scored.clear();
        scored.extend(
            vectors
                .iter()
                .enumerate()
                .filter(|(j, _)| *j == *item || !seen(h, *j))
                .map(|(j, v)| (u.dot(v), j)),
        );
        let kth = k.min(scored.len());
        if kth == 0 {
            continue;
        }
        scored.select_nth_unstable_by(kth - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        if scored[..kth].iter().any(|&(_, j)| j == *item) {
            hits += 1;
        }
    }
    Ok(hits as f32 / held_out.len().max(1) as f32)
}

/// Items by index → count of interactions in `pairs` (the `counts` of a [`TrainingSet`]).
pub fn count_interactions(n_items: usize, pairs: &[Pair]) -> Vec<u32> {
    let mut counts = vec![0u32; n_items];
    for p in pairs {
        if let Some(c) = counts.get_mut(p.item) {
            *c += 1;
        }
    }
    counts
}
