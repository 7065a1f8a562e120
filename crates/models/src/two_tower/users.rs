//! New users in the two-tower model (DESIGN.md §2, user cold start). A user is *new* while they
//! have fewer than `new_user_interactions` interactions (or, when `new_user_days` > 0, signed up
//! less than that many days before). Their own ID embedding is untrained noise, so:
//!
//! - **Sample weighting**: training pairs of users who were new at the time weigh
//!   `new_user_weight` in the loss; and each state of a new user also targets `future_targets`
//!   items they engaged later, so that the model learns what a newcomer will like, not only
//!   their next event.
//! - **Bias features next to the logit**: is_new, logged_in, days since sign-up and the
//!   interaction-count bucket (all zero for an old user) meet a per-item vector `θ_j` in a shallow
//!   part whose output `x_u · θ_j` is added to the logit, so what marks a newcomer reaches the
//!   score without passing through the deep tower.
//! - **Meta-Embedding** ([`MetaGenerator`]): a generator from the user's attributes and onboarding
//!   interests to an ID embedding, trained through the frozen user tower on old users' pairs so
//!   that its output does the work of their own ID.
//! - **Old-for-new** ([`OldUsers`]): the similarity-weighted mean of the ID embeddings of the K old
//!   users most like the new one (attributes and first items).
//! - **Group-shared**: users of one group (age × gender × region by default) share one ID
//!   embedding while new, trained by all of them together; a user leaves it once no longer new.

use nalgebra::{DMatrix, DVector};
use std::collections::HashMap;

/// Which ID embedding a new user's tower reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserMethod {
    /// Their own ID (untrained for a user the model never saw: no ID term).
    #[default]
    Id,
    /// Generated from attributes and onboarding interests ([`MetaGenerator`]).
    Meta,
    /// The similarity-weighted mean of the K most similar old users' IDs ([`OldUsers`]).
    Knn,
    /// Their group's shared ID, trained by the group's new users.
    Group,
    /// The mean of the group, meta and old-for-new embeddings (those the user has).
    Combined,
}

impl UserMethod {
    /// Every method.
    pub const ALL: [UserMethod; 5] = [
        UserMethod::Id,
        UserMethod::Meta,
        UserMethod::Knn,
        UserMethod::Group,
        UserMethod::Combined,
    ];

    /// The name in configs, requests and model files.
    pub fn as_str(self) -> &'static str {
        match self {
            UserMethod::Id => "id",
            UserMethod::Meta => "meta",
            UserMethod::Knn => "knn",
            UserMethod::Group => "group",
            UserMethod::Combined => "combined",
        }
    }

    /// Whether training replaces a new user's ID by their group's.
    pub fn trains_groups(self) -> bool {
        matches!(self, UserMethod::Group | UserMethod::Combined)
    }

    /// Whether the model carries a Meta-Embedding generator.
    pub fn uses_meta(self) -> bool {
        matches!(self, UserMethod::Meta | UserMethod::Combined)
    }

    /// Whether the model carries the old users' table.
    pub fn uses_knn(self) -> bool {
        matches!(self, UserMethod::Knn | UserMethod::Combined)
    }
}

impl std::str::FromStr for UserMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        UserMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not one of id, meta, knn, group, combined"))
    }
}

impl std::fmt::Display for UserMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The user cold-start part of a two-tower model's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct UserColdConfig {
    /// The ID embedding a new user's tower reads.
    pub method: UserMethod,
    /// A user is new while they have fewer interactions than this.
    pub new_user_interactions: u32,
    /// And, when above 0, while they signed up less than this many days before.
    pub new_user_days: f32,
    /// Loss weight of training pairs whose user was new at the time (1: no weighting).
    pub new_user_weight: f32,
    /// The shallow bias part next to the logit.
    pub bias_features: bool,
    /// Old users averaged for a new one (old-for-new).
    pub knn_k: usize,
    /// Attributes (`age`, `gender`, `occupation`, `region`) whose values make a user's group.
    pub group_by: Vec<String>,
    /// Hash buckets of the Meta-Embedding generator's inputs.
    pub meta_buckets: usize,
    /// Extra training pairs per state of a new user: the same state with items they engaged
    /// later (0: only the next engagement).
    pub future_targets: usize,
}

impl Default for UserColdConfig {
    fn default() -> Self {
        Self {
            method: UserMethod::Id,
            new_user_interactions: 10,
            new_user_days: 0.0,
            new_user_weight: 1.0,
            bias_features: false,
            knn_k: 20,
            group_by: vec!["age".into(), "gender".into(), "region".into()],
            meta_buckets: 4096,
            future_targets: 0,
        }
    }
}

/// The attribute names a user may have (as `name:value` in the tower's attributes).
pub const ATTRIBUTES: [&str; 4] = ["age", "gender", "occupation", "region"];

impl UserColdConfig {
    /// Rejects impossible values, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.new_user_weight.is_finite() && self.new_user_weight > 0.0) {
            return Err(format!(
                "new_user_weight: {} must be a finite number above 0",
                self.new_user_weight
            ));
        }
        if !(self.new_user_days.is_finite() && self.new_user_days >= 0.0) {
            return Err(format!(
                "new_user_days: {} must be finite and not negative",
                self.new_user_days
            ));
        }
        if self.knn_k == 0 {
            return Err("knn_k: 0; old-for-new averages at least one old user".into());
        }
        if self.meta_buckets == 0 {
            return Err("meta_buckets: 0; the generator needs at least one".into());
        }
        if let Some(bad) = self
            .group_by
            .iter()
            .find(|g| !ATTRIBUTES.contains(&g.as_str()))
        {
            return Err(format!(
                "group_by: {bad:?} is not one of age, gender, occupation, region"
            ));
        }
        Ok(())
    }

    /// Whether a user in `state` is new.
    pub fn is_new(&self, state: &UserState) -> bool {
        let few = state.interactions < self.new_user_interactions as u64;
        let young = self.new_user_days > 0.0
            && state
                .days_since_signup
                .is_some_and(|d| d < self.new_user_days);
        few || young
    }

    /// The user's group key from their attributes (`name:value`), when they have every
    /// attribute of `group_by`.
    pub fn group_of(&self, attrs: &[String]) -> Option<String> {
        let mut parts = Vec::with_capacity(self.group_by.len());
        for g in &self.group_by {
            let prefix = format!("{g}:");
            parts.push(attrs.iter().find(|a| a.starts_with(&prefix))?.as_str());
        }
        (!parts.is_empty()).then(|| parts.join("|"))
    }
}

/// What the model knows of a user's state at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct UserState {
    /// Interactions so far.
    pub interactions: u64,
    /// Days since sign-up at that moment, when known.
    pub days_since_signup: Option<f32>,
    /// Whether the request comes from a logged-in session.
    pub logged_in: bool,
}

/// Values of the bias features: is_new, logged_in, 6 buckets of days since sign-up, 6 of the
/// interaction count.
pub const BIAS_FEATURES: usize = 14;

/// The bias features of a user: all zero for an old user, so the shallow part changes the
/// scores of new users only.
pub fn bias_features(state: &UserState, is_new: bool) -> Vec<f32> {
    let mut x = vec![0.0; BIAS_FEATURES];
    if !is_new {
        return x;
    }
    x[0] = 1.0;
    x[1] = if state.logged_in { 1.0 } else { 0.0 };
    if let Some(d) = state.days_since_signup {
        let b = [1.0, 3.0, 7.0, 14.0, 30.0]
            .iter()
            .position(|&edge| d < edge)
            .unwrap_or(5);
        x[2 + b] = 1.0;
    }
    let n = state.interactions;
    let b = match n {
        0 => 0,
        1 => 1,
        2..=3 => 2,
        4..=7 => 3,
        8..=15 => 4,
        _ => 5,
    };
    x[8 + b] = 1.0;
    x
}

/// Meta-Embedding: `e = b + Σ_f W[:, f] / √n` over the hashed attribute and interest features of
/// a user, in the user tower's hidden space (where an ID embedding lives).
#[derive(Debug, Clone, PartialEq)]
pub struct MetaGenerator {
    /// `hidden × meta_buckets`.
    pub w: DMatrix<f32>,
    /// `hidden`.
    pub b: DVector<f32>,
}

impl MetaGenerator {
    /// A zero generator.
    pub fn zeros(hidden: usize, buckets: usize) -> Self {
        Self {
            w: DMatrix::zeros(hidden, buckets),
            b: DVector::zeros(hidden),
        }
    }

    /// The generated embedding of features `f` (buckets below `w`'s columns).
    pub fn generate(&self, f: &[u32]) -> DVector<f32> {
        let mut e = self.b.clone();
        if !f.is_empty() {
            let s = 1.0 / (f.len() as f32).sqrt();
            for &c in f {
                if (c as usize) < self.w.ncols() {
                    e.axpy(s, &self.w.column(c as usize), 1.0);
                }
            }
        }
        e
    }
}

/// Old users for old-for-new: each one's signature (hashed attributes and first items, sorted)
/// and trained ID embedding, with an inverted index from feature to users.
#[derive(Debug, Clone, PartialEq)]
pub struct OldUsers {
    /// User ids.
    pub ids: Vec<u64>,
    /// Signatures, sorted and distinct.
    pub features: Vec<Vec<u32>>,
    /// `hidden × users`: their ID embeddings.
    pub emb: DMatrix<f32>,
    index: HashMap<u32, Vec<u32>>,
}

impl OldUsers {
    /// The table, indexed.
    pub fn new(ids: Vec<u64>, mut features: Vec<Vec<u32>>, emb: DMatrix<f32>) -> Self {
        let mut index: HashMap<u32, Vec<u32>> = HashMap::new();
        for (u, f) in features.iter_mut().enumerate() {
            f.sort_unstable();
            f.dedup();
            for &x in f.iter() {
                index.entry(x).or_default().push(u as u32);
            }
        }
        Self {
            ids,
            features,
            emb,
            index,
        }
    }

    /// Users held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The `k` old users most similar to signature `f` (cosine of the feature sets), best first,
    /// ties to the lower index: (index, similarity > 0).
    pub fn nearest(&self, f: &[u32], k: usize) -> Vec<(usize, f32)> {
        let mut f = f.to_vec();
        f.sort_unstable();
        f.dedup();
        let mut overlap: HashMap<u32, u32> = HashMap::new();
        for x in &f {
            for &u in self.index.get(x).map(Vec::as_slice).unwrap_or(&[]) {
                *overlap.entry(u).or_default() += 1;
            }
        }
        let mut sims: Vec<(usize, f32)> = overlap
            .into_iter()
            .map(|(u, n)| {
                let denom = ((f.len() * self.features[u as usize].len()) as f32).sqrt();
                (u as usize, n as f32 / denom.max(1.0))
            })
            .collect();
        sims.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        sims.truncate(k);
        sims
    }

    /// The similarity-weighted mean of the `k` nearest old users' ID embeddings, if any is
    /// similar at all.
    pub fn embedding(&self, f: &[u32], k: usize) -> Option<DVector<f32>> {
        let near = self.nearest(f, k);
        let total: f32 = near.iter().map(|x| x.1).sum();
        if total <= 0.0 {
            return None;
        }
        let mut e = DVector::zeros(self.emb.nrows());
        for (u, s) in near {
            e.axpy(s / total, &self.emb.column(u), 1.0);
        }
        Some(e)
    }
}

/// Full 32-bit FNV-1a of a tagged feature, for signatures and generator inputs.
pub fn feature_hash(tag: &str, s: &str) -> u32 {
    let h = super::fnv(tag, s);
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_features_are_zero_for_old_users_and_bucket_new_ones() {
        let s = UserState {
            interactions: 5,
            days_since_signup: Some(2.0),
            logged_in: true,
        };
        assert!(bias_features(&s, false).iter().all(|&x| x == 0.0));
        let x = bias_features(&s, true);
        let on: Vec<usize> = (0..BIAS_FEATURES).filter(|&i| x[i] == 1.0).collect();
        assert_eq!(
            on,
            [0, 1, 3, 11],
            "is_new, logged_in, 1-3 days, 4-7 interactions"
        );
    }

    #[test]
    fn new_groups_and_config_errors_name_the_field() {
        let c = UserColdConfig {
            new_user_days: 7.0,
            ..Default::default()
        };
        let s = |n, d| UserState {
            interactions: n,
            days_since_signup: d,
            logged_in: true,
        };
        assert!(c.is_new(&s(3, Some(100.0))), "few interactions");
        assert!(c.is_new(&s(50, Some(1.0))), "signed up a day ago");
        assert!(!c.is_new(&s(50, Some(10.0))));
        assert!(!c.is_new(&s(50, None)));
        let attrs: Vec<String> = ["age:25", "gender:f", "region:x", "occupation:y"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            c.group_of(&attrs).as_deref(),
            Some("age:25|gender:f|region:x")
        );
        assert_eq!(c.group_of(&attrs[..2]), None, "no region: no group");
        for (bad, field) in [
            (
                UserColdConfig {
                    knn_k: 0,
                    ..Default::default()
                },
                "knn_k",
            ),
            (
                UserColdConfig {
                    new_user_weight: f32::NAN,
                    ..Default::default()
                },
                "new_user_weight",
            ),
            (
                UserColdConfig {
                    group_by: vec!["shoe".into()],
                    ..Default::default()
                },
                "group_by",
            ),
        ] {
            let e = bad.validate().unwrap_err();
            assert!(e.starts_with(field), "{e}");
        }
        assert!("knnn".parse::<UserMethod>().unwrap_err().contains("knnn"));
    }

    #[test]
    fn old_for_new_averages_the_most_similar_old_users() {
        let emb = DMatrix::from_columns(&[
            DVector::from_vec(vec![1.0, 0.0]),
            DVector::from_vec(vec![0.0, 1.0]),
            DVector::from_vec(vec![5.0, 5.0]),
        ]);
        let t = OldUsers::new(
            vec![10, 11, 12],
            vec![vec![1, 2, 3], vec![1, 4], vec![9]],
            emb,
        );
        let near = t.nearest(&[1, 2], 2);
        assert_eq!(near[0].0, 0, "shares two features");
        assert_eq!(near[1].0, 1);
        let e = t.embedding(&[1, 2], 2).unwrap();
        assert!(
            e[0] > e[1] && e[0] + e[1] > 0.99 && e[0] + e[1] < 1.01,
            "{e}"
        );
        assert!(t.embedding(&[77], 2).is_none(), "nobody alike");
    }
}
