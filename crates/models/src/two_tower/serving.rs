//! Serving the user side: a user's tower input as served (the old-for-new signature), the ID
//! part by the model's user method, the query vector with the bias part, and a new user's query
//! moved towards the items they engaged.

use super::*;

impl TwoTower {
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

    /// A new user's query moved towards the items they engaged: `q + w·|u|·m̂`, where `u` is the
    /// user-tower part of `q` and `m̂` the normalised weighted mean of `seeds`' item vectors (as
    /// the pools hold them, without `θ`; each seed weighs as its action does). Its inner product with an item then adds `w·|u|` times the item's
    /// similarity to the user's first items in the item tower's space (item-to-item recall on
    /// the learned vectors) to the user-tower score. Unchanged when `w` is 0 or no seed places.
    pub fn with_seed_items(
        &self,
        mut q: DVector<f32>,
        seeds: &[(ItemSide, f32)],
        w: f32,
    ) -> Result<DVector<f32>> {
        if w <= 0.0 || seeds.is_empty() {
            return Ok(q);
        }
        let dim = self.cfg.dim;
        let mut m = DVector::<f32>::zeros(dim);
        for (it, a) in seeds {
            let x = self.item_input(it);
            m.axpy(*a, &self.item_vector(&x, self.id_use(it.item_id))?, 1.0);
        }
        let (nm, nu) = (m.norm(), q.rows(0, dim).norm());
        if nm > 0.0 && nu > 0.0 {
            q.rows_mut(0, dim).axpy(w * nu / nm, &m, 1.0);
        }
        Ok(q)
    }
}
