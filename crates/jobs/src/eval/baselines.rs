//! Baselines, each built the way a competitor would build it, from the same training data the
//! served system gets: newest, category-newest by the user's interest weights, popularity (all
//! time and decayed to the request time), group popularity, item-CF from the user's seeds, and
//! content KNN on TF-IDF. Every method ranks a candidate pool; ties break as the served answer
//! breaks them (score, then newer, then higher id).

use coldstart_contracts::encoder::Item;
use coldstart_contracts::profile::{Event, User};
use coldstart_profile::state::group_of;
use std::collections::{HashMap, HashSet};

/// A baseline method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Newest first.
    Newest,
    /// The newest items of the user's categories, each category's share of the answer in
    /// proportion to the user's interest weight in it.
    CategoryNewest,
    /// Most engaged in training (action-weighted).
    Popular,
    /// Most engaged, each event halved per popularity half-life before the request time.
    PopularRecent,
    /// Most engaged by users of the user's group, then overall.
    GroupPopular,
    /// Item-to-item cosine of co-engagement, summed over the user's seed items.
    ItemCf,
    /// TF-IDF of title, body, keywords and category; cosine to the user's seed items.
    ContentKnn,
    /// The run's trained content encoder: cosine of item vectors to the user's seed items (how
    /// much of the content signal the learned space keeps).
    EncoderKnn,
}

impl Baseline {
    /// Every baseline.
    pub const ALL: [Baseline; 8] = [
        Baseline::Newest,
        Baseline::CategoryNewest,
        Baseline::Popular,
        Baseline::PopularRecent,
        Baseline::GroupPopular,
        Baseline::ItemCf,
        Baseline::ContentKnn,
        Baseline::EncoderKnn,
    ];

    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::Newest => "newest",
            Baseline::CategoryNewest => "category-newest",
            Baseline::Popular => "popularity",
            Baseline::PopularRecent => "popularity (decayed)",
            Baseline::GroupPopular => "group popularity",
            Baseline::ItemCf => "item-CF",
            Baseline::ContentKnn => "content KNN (TF-IDF)",
            Baseline::EncoderKnn => "content KNN (encoder)",
        }
    }

    /// Whether the method can say anything about items without events (the item task's cold
    /// pool): popularity and item-CF score every cold item 0 by construction.
    pub fn sees_cold_items(self) -> bool {
        !matches!(
            self,
            Baseline::Popular | Baseline::PopularRecent | Baseline::GroupPopular | Baseline::ItemCf
        )
    }
}

/// What the baselines learn from the training part.
pub struct Baselines<'a> {
    items: HashMap<u64, &'a Item>,
    popular: HashMap<u64, f64>,
    popular_recent: HashMap<u64, f64>,
    group_popular: HashMap<String, HashMap<u64, f64>>,
    groups: HashMap<u64, String>,
    /// Per item, the users who engaged it; per user, the items.
    item_users: HashMap<u64, Vec<u64>>,
    user_items: HashMap<u64, Vec<u64>>,
    tfidf: HashMap<u64, Vec<(u32, f32)>>,
    /// Content vectors of the run's trained encoder, when given.
    vectors: HashMap<u64, Vec<f32>>,
}

fn words(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
}

fn tokens(it: &Item) -> Vec<String> {
    let mut t: Vec<String> = words(&it.title).collect();
    t.extend(words(it.body.as_deref().unwrap_or("")));
    t.extend(
        it.keywords
            .iter()
            .map(|k| format!("k:{}", k.trim().to_lowercase())),
    );
    t.push(format!("c:{}", it.category.trim().to_lowercase()));
    t
}

impl<'a> Baselines<'a> {
    /// Learns from `train` (training events) over `items` (every item, warm and cold: TF-IDF
    /// sees the whole catalogue, as a content model would), users' attributes and the request
    /// time `at`.
    pub fn new(
        items: &'a [Item],
        users: &[User],
        train: &[Event],
        at: i64,
        group_by: &[String],
        popular_half_life_h: f64,
    ) -> Self {
        let groups: HashMap<u64, String> = users
            .iter()
            .filter_map(|u| group_of(u, group_by).map(|g| (u.user_id, g)))
            .collect();
        let hl = popular_half_life_h * 3_600_000.0;
        let mut popular: HashMap<u64, f64> = HashMap::new();
        let mut popular_recent: HashMap<u64, f64> = HashMap::new();
        let mut group_popular: HashMap<String, HashMap<u64, f64>> = HashMap::new();
        let mut item_users: HashMap<u64, HashSet<u64>> = HashMap::new();
        for e in train {
            let w = e.action.weight();
            if w == 0.0 {
                continue;
            }
            *popular.entry(e.item_id).or_default() += w;
            *popular_recent.entry(e.item_id).or_default() +=
                w * 0.5f64.powf((at - e.ts).max(0) as f64 / hl);
            if let Some(g) = groups.get(&e.user_id) {
                *group_popular
                    .entry(g.clone())
                    .or_default()
                    .entry(e.item_id)
                    .or_default() += w;
            }
            item_users.entry(e.item_id).or_default().insert(e.user_id);
        }
        let mut user_items: HashMap<u64, Vec<u64>> = HashMap::new();
        let item_users: HashMap<u64, Vec<u64>> = item_users
            .into_iter()
            .map(|(i, us)| {
                let mut us: Vec<u64> = us.into_iter().collect();
                us.sort_unstable();
                for &u in &us {
                    user_items.entry(u).or_default().push(i);
                }
                (i, us)
            })
            .collect();
        // TF-IDF over the catalogue, L2-normalised
        let docs: Vec<(u64, Vec<String>)> = items.iter().map(|i| (i.item_id, tokens(i))).collect();
        let mut vocab: HashMap<String, u32> = HashMap::new();
        let mut df: Vec<f32> = Vec::new();
        for (_, toks) in &docs {
            let uniq: HashSet<&String> = toks.iter().collect();
            for t in uniq {
                let id = *vocab.entry(t.clone()).or_insert_with(|| {
                    df.push(0.0);
                    (df.len() - 1) as u32
                });
                df[id as usize] += 1.0;
            }
        }
        let n = docs.len().max(1) as f32;
        let tfidf = docs
            .into_iter()
            .map(|(id, toks)| {
                let mut tf: HashMap<u32, f32> = HashMap::new();
                for t in &toks {
                    *tf.entry(vocab[t]).or_default() += 1.0;
                }
                let mut v: Vec<(u32, f32)> = tf
                    .into_iter()
                    .map(|(t, c)| (t, c * ((1.0 + n) / (1.0 + df[t as usize])).ln() + c))
                    .collect();
                let norm = v.iter().map(|x| x.1 * x.1).sum::<f32>().sqrt().max(1e-12);
                v.iter_mut().for_each(|x| x.1 /= norm);
                v.sort_unstable_by_key(|x| x.0);
                (id, v)
            })
            .collect();
        Self {
            items: items.iter().map(|i| (i.item_id, i)).collect(),
            popular,
            popular_recent,
            group_popular,
            groups,
            item_users,
            user_items,
            tfidf,
            vectors: HashMap::new(),
        }
    }

    /// Gives the encoder KNN baseline its item vectors.
    pub fn with_vectors(mut self, vectors: HashMap<u64, Vec<f32>>) -> Self {
        self.vectors = vectors;
        self
    }

    fn publish_ts(&self, item: u64) -> i64 {
        self.items.get(&item).map(|i| i.publish_ts).unwrap_or(0)
    }

    /// The top `k` of `candidates` by `score`, ties by newer then higher id.
    fn top_by(&self, candidates: &[u64], k: usize, score: impl Fn(u64) -> f64) -> Vec<u64> {
        let mut v: Vec<(f64, i64, u64)> = candidates
            .iter()
            .map(|&c| (score(c), self.publish_ts(c), c))
            .collect();
        v.sort_unstable_by(|a, b| coldstart_aggregator::merge::order(*a, *b));
        v.into_iter().take(k).map(|x| x.2).collect()
    }

    /// Ranks `candidates` for `user` with training events `seeds` (the user's own), top `k`.
    pub fn rank(
        &self,
        method: Baseline,
        user: u64,
        seeds: &[&Event],
        candidates: &[u64],
        k: usize,
    ) -> Vec<u64> {
        match method {
            Baseline::Newest => self.top_by(candidates, k, |_| 0.0),
            Baseline::Popular => self.top_by(candidates, k, |c| {
                self.popular.get(&c).copied().unwrap_or(0.0)
            }),
            Baseline::PopularRecent => self.top_by(candidates, k, |c| {
                self.popular_recent.get(&c).copied().unwrap_or(0.0)
            }),
            Baseline::GroupPopular => {
                let board = self
                    .groups
                    .get(&user)
                    .and_then(|g| self.group_popular.get(g));
                // the group's count first; the overall count breaks its ties (and carries a
                // user without a group)
                let overall_max = self.popular.values().copied().fold(1.0, f64::max);
                self.top_by(candidates, k, |c| {
                    board.and_then(|b| b.get(&c)).copied().unwrap_or(0.0)
                        + self.popular.get(&c).copied().unwrap_or(0.0) / (overall_max + 1.0)
                })
            }
            Baseline::CategoryNewest => self.category_newest(seeds, candidates, k),
            Baseline::ItemCf => {
                let mut score: HashMap<u64, f64> = HashMap::new();
                for s in seeds {
                    let w = s.action.weight();
                    let Some(us) = self.item_users.get(&s.item_id) else {
                        continue;
                    };
                    let ns = us.len() as f64;
                    let mut co: HashMap<u64, f64> = HashMap::new();
                    for u in us {
                        if *u == user {
                            continue;
                        }
                        for i in self.user_items.get(u).into_iter().flatten() {
                            *co.entry(*i).or_default() += 1.0;
                        }
                    }
                    for (i, c) in co {
                        let ni = self.item_users.get(&i).map_or(1, Vec::len) as f64;
                        *score.entry(i).or_default() += w * c / (ns * ni).sqrt();
                    }
                }
                self.top_by(candidates, k, |c| score.get(&c).copied().unwrap_or(0.0))
            }
            Baseline::EncoderKnn => {
                let dim = self.vectors.values().next().map_or(0, Vec::len);
                let mut profile = vec![0f32; dim];
                for s in seeds {
                    let w = s.action.weight() as f32;
                    if let Some(v) = self.vectors.get(&s.item_id) {
                        profile.iter_mut().zip(v).for_each(|(p, x)| *p += w * x);
                    }
                }
                self.top_by(candidates, k, |c| {
                    self.vectors.get(&c).map_or(f64::NEG_INFINITY, |v| {
                        v.iter().zip(&profile).map(|(a, b)| (a * b) as f64).sum()
                    })
                })
            }
            Baseline::ContentKnn => {
                let mut profile: HashMap<u32, f32> = HashMap::new();
                for s in seeds {
                    let w = s.action.weight() as f32;
                    for &(t, x) in self.tfidf.get(&s.item_id).into_iter().flatten() {
                        *profile.entry(t).or_default() += w * x;
                    }
                }
                self.top_by(candidates, k, |c| {
                    self.tfidf
                        .get(&c)
                        .into_iter()
                        .flatten()
                        .map(|(t, x)| (profile.get(t).copied().unwrap_or(0.0) * x) as f64)
                        .sum()
                })
            }
        }
    }

    /// Each of the user's categories gets a share of the answer in proportion to its interest
    /// weight (the highest-averages rule), filled with its newest candidates.
    fn category_newest(&self, seeds: &[&Event], candidates: &[u64], k: usize) -> Vec<u64> {
        let mut weight: HashMap<&str, f64> = HashMap::new();
        for s in seeds {
            if let Some(it) = self.items.get(&s.item_id) {
                *weight.entry(it.category.as_str()).or_default() += s.action.weight();
            }
        }
        let mut by_cat: HashMap<&str, Vec<u64>> = HashMap::new();
        for &c in candidates {
            if let Some(it) = self.items.get(&c) {
                if weight.get(it.category.as_str()).is_some_and(|w| *w > 0.0) {
                    by_cat.entry(it.category.as_str()).or_default().push(c);
                }
            }
        }
        for l in by_cat.values_mut() {
            let mut v = std::mem::take(l);
            v.sort_unstable_by_key(|&i| std::cmp::Reverse((self.publish_ts(i), i)));
            *l = v;
        }
        let mut cats: Vec<(&str, f64)> = by_cat.keys().map(|c| (*c, weight[c])).collect();
        cats.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let mut taken: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::new();
        while out.len() < k {
            let pick = cats
                .iter()
                .filter(|(c, _)| taken.get(c).copied().unwrap_or(0) < by_cat[c].len())
                .max_by(|a, b| {
                    let qa = a.1 / (taken.get(a.0).copied().unwrap_or(0) + 1) as f64;
                    let qb = b.1 / (taken.get(b.0).copied().unwrap_or(0) + 1) as f64;
                    qa.total_cmp(&qb).then(b.0.cmp(a.0))
                });
            let Some((c, _)) = pick else { break };
            let n = taken.entry(c).or_insert(0);
            out.push(by_cat[c][*n]);
            *n += 1;
        }
        // categories the user never engaged come last, newest first
        if out.len() < k {
            let chosen: HashSet<u64> = out.iter().copied().collect();
            let rest: Vec<u64> = candidates
                .iter()
                .copied()
                .filter(|c| !chosen.contains(c))
                .collect();
            out.extend(self.top_by(&rest, k - out.len(), |_| 0.0));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: u64, cat: &str, title: &str, ts: i64) -> Item {
        Item {
            item_id: id,
            publish_ts: ts,
            author_id: None,
            category: cat.into(),
            keywords: vec![cat.into()],
            title: title.into(),
            body: None,
            image_vec: None,
            quality: None,
            author_quality: None,
        }
    }

    fn ev(u: u64, i: u64, action: &str) -> Event {
        Event {
            user_id: u,
            item_id: i,
            ts: 0,
            action: action.parse().unwrap(),
            dwell_ms: None,
            request_id: None,
        }
    }

    #[test]
    fn each_baseline_ranks_by_its_own_evidence() {
        let items = vec![
            item(1, "drama", "the long night", 1),
            item(2, "drama", "a long night again", 2),
            item(3, "comedy", "laughs", 3),
            item(4, "comedy", "more laughs", 4),
            item(5, "drama", "short day", 5),
        ];
        let users = vec![User {
            user_id: 9,
            gender: Some("f".into()),
            ..Default::default()
        }];
        let train = vec![
            ev(7, 1, "like"),
            ev(7, 2, "like"),
            ev(8, 1, "like"),
            ev(8, 3, "like"),
            ev(9, 3, "click"),
        ];
        let b = Baselines::new(&items, &users, &train, 10, &["gender".into()], 24.0);
        let cands = [2, 3, 4, 5];
        let seeds_1 = [&ev(100, 1, "like")];
        assert_eq!(b.rank(Baseline::Newest, 100, &[], &cands, 2), [5, 4]);
        assert_eq!(
            b.rank(Baseline::Popular, 100, &[], &cands, 2),
            [3, 2],
            "3 has a like and a click"
        );
        assert_eq!(b.rank(Baseline::GroupPopular, 9, &[], &cands, 1), [3]);
        assert_eq!(
            b.rank(Baseline::ItemCf, 100, &seeds_1, &cands, 2),
            [2, 3],
            "2 shares its users with 1 more exclusively than 3 does"
        );
        assert_eq!(
            b.rank(Baseline::ContentKnn, 100, &seeds_1, &cands, 1),
            [2],
            "shares 'long night'"
        );
        // drama weight 3 vs comedy 1: two dramas for each comedy
        let seeds = [&ev(100, 1, "like"), &ev(100, 3, "click")];
        assert_eq!(
            b.rank(Baseline::CategoryNewest, 100, &seeds, &cands, 4),
            [5, 2, 4, 3]
        );
    }
}
