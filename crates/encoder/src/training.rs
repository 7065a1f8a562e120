//! The content encoder's training job: mine triplets from the event log and fit the encoder.
//!
//! Positives are item pairs engaged (click, like, collect, share, comment) by the same users —
//! item-CF co-occurrence — that share a category, among items with enough exposure to trust.
//! Negatives are a random item and a hard one: an item of the anchor's own category that its
//! users never engaged together with it. Triplets are split into training and held-out sets by
//! anchor, so held-out accuracy measures items the model never anchored on.

use coldstart_contracts::encoder::Item;
use coldstart_contracts::profile::LoggedEvent;
use coldstart_contracts::types::Action;
use coldstart_models::encoder::{
    features, Backbone, Encoder, EncoderConfig, Features, ItemText, SentenceEncoder,
};
use coldstart_runtime::routing::stable_hash;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};

/// Mining and training parameters.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// The encoder's shape and optimiser constants.
    pub encoder: EncoderConfig,
    /// Events (any action) an item needs to take part.
    pub min_exposure: usize,
    /// Users that must have engaged both items of a positive pair.
    pub min_co_users: usize,
    /// Positives kept per anchor (the most co-engaged).
    pub positives_per_anchor: usize,
    /// Items per user considered for co-occurrence (most recent), bounding the pair count.
    pub max_items_per_user: usize,
    /// Passes over the training triplets.
    pub epochs: usize,
    /// Triplets per step.
    pub batch: usize,
    /// Share of anchors held out.
    pub holdout: f64,
    /// Seed of negative sampling and shuffling.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            encoder: EncoderConfig::default(),
            min_exposure: 5,
            min_co_users: 1,
            positives_per_anchor: 10,
            max_items_per_user: 50,
            epochs: 5,
            batch: 128,
            holdout: 0.1,
            seed: 7,
        }
    }
}

/// A triplet of indices into the item list.
pub type Triplet = (usize, usize, usize);

/// Mined triplets.
#[derive(Debug, Default)]
pub struct Mined {
    /// For training.
    pub train: Vec<Triplet>,
    /// Held out (anchors never in `train`).
    pub held_out: Vec<Triplet>,
    /// Items with enough exposure.
    pub eligible_items: usize,
    /// Positive pairs found.
    pub positive_pairs: usize,
}

const ENGAGED: [Action; 5] = [
    Action::Click,
    Action::Like,
    Action::Collect,
    Action::Share,
    Action::Comment,
];

/// Mines triplets over `items` (indices refer to it) from `events`.
pub fn mine(items: &[Item], events: &[LoggedEvent], cfg: &TrainConfig) -> Mined {
    let index: HashMap<u64, usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.item_id, i))
        .collect();
    let mut exposure = vec![0usize; items.len()];
    let mut by_user: HashMap<u64, Vec<(i64, usize)>> = HashMap::new();
    for e in events {
        let Some(&i) = index.get(&e.event.item_id) else {
            continue;
        };
        exposure[i] += 1;
        if ENGAGED.contains(&e.event.action) {
            by_user
                .entry(e.event.user_id)
                .or_default()
                .push((e.event.ts, i));
        }
    }
    let eligible: Vec<bool> = exposure.iter().map(|&c| c >= cfg.min_exposure).collect();
    let mut co: HashMap<(usize, usize), usize> = HashMap::new();
    for (_, mut seen) in by_user {
        seen.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
        let mut list: Vec<usize> = Vec::new();
        for (_, i) in seen {
            if eligible[i] && !list.contains(&i) {
                list.push(i);
                if list.len() == cfg.max_items_per_user {
                    break;
                }
            }
        }
        for x in 0..list.len() {
            for y in x + 1..list.len() {
                let (a, b) = (list[x], list[y]);
                if items[a].category == items[b].category {
                    *co.entry((a.min(b), a.max(b))).or_insert(0) += 1;
                }
            }
        }
    }
    let mut positives: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    let mut positive_pairs = 0;
    for (&(a, b), &n) in &co {
        if n >= cfg.min_co_users {
            positives.entry(a).or_default().push((n, b));
            positives.entry(b).or_default().push((n, a));
            positive_pairs += 1;
        }
    }
    let pool: Vec<usize> = (0..items.len()).filter(|&i| eligible[i]).collect();
    let mut by_cat: HashMap<&str, Vec<usize>> = HashMap::new();
    for &i in &pool {
        by_cat
            .entry(items[i].category.as_str())
            .or_default()
            .push(i);
    }
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let mut out = Mined {
        eligible_items: pool.len(),
        positive_pairs,
        ..Default::default()
    };
    let mut anchors: Vec<usize> = positives.keys().copied().collect();
    anchors.sort_unstable();
    for a in anchors {
        let mut pos = positives.remove(&a).unwrap_or_default();
        pos.sort_unstable_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
        pos.truncate(cfg.positives_per_anchor);
        let is_pos: HashSet<usize> = pos.iter().map(|p| p.1).collect();
        let held = (stable_hash(&[&items[a].item_id.to_le_bytes()]) % 10_000) as f64 / 10_000.0
            < cfg.holdout;
        let same_cat = &by_cat[items[a].category.as_str()];
        for &(_, p) in &pos {
            let mut negatives = Vec::with_capacity(2);
            // random negative
            for _ in 0..20 {
                let n = pool[rng.random_range(0..pool.len())];
                if n != a && !is_pos.contains(&n) {
                    negatives.push(n);
                    break;
                }
            }
            // hard negative: same category, never engaged together with the anchor
            for _ in 0..20 {
                let n = same_cat[rng.random_range(0..same_cat.len())];
                if n != a && !is_pos.contains(&n) && !co.contains_key(&(a.min(n), a.max(n))) {
                    negatives.push(n);
                    break;
                }
            }
            for n in negatives {
                if held {
                    out.held_out.push((a, p, n));
                } else {
                    out.train.push((a, p, n));
                }
            }
        }
    }
    out
}

/// The text a pretrained backbone reads for an item: title, body, category and keywords.
pub fn item_sentence(it: &Item) -> String {
    let mut parts: Vec<&str> = vec![it.title.as_str()];
    parts.extend(it.body.as_deref().filter(|b| !b.trim().is_empty()));
    parts.push(it.category.as_str());
    let keywords = it.keywords.join(", ");
    if !keywords.is_empty() {
        parts.push(&keywords);
    }
    parts.join(". ")
}

/// The encoder's features of every item, computed one way for training and for publishing:
/// hashed n-grams of the text, plus the item's image vector when the model takes one
/// (`image_dim` > 0); or, with the MiniLM backbone, the backbone's sentence vector of
/// [`item_sentence`] as the dense input.
pub fn item_features(
    items: &[Item],
    cfg: &EncoderConfig,
    backbone: Option<&dyn SentenceEncoder>,
) -> coldstart_models::Result<Vec<Features>> {
    match cfg.backbone {
        Backbone::Hashed => Ok(items
            .iter()
            .map(|it| {
                features(
                    &ItemText {
                        title: &it.title,
                        body: it.body.as_deref().unwrap_or(""),
                        category: &it.category,
                        keywords: &it.keywords,
                        image: it.image_vec.as_deref().filter(|_| cfg.image_dim > 0),
                    },
                    cfg.buckets,
                )
            })
            .collect()),
        Backbone::MiniLm => {
            let b = backbone.ok_or_else(|| {
                coldstart_models::Error::Backbone(
                    "the model reads the minilm backbone and none is loaded (encoder.minilm_dir)"
                        .into(),
                )
            })?;
            let texts: Vec<String> = items.iter().map(item_sentence).collect();
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            Ok(b.embed(&refs)?
                .into_iter()
                .map(|v| Features {
                    sparse: Vec::new(),
                    image: v,
                    fields: Vec::new(),
                })
                .collect())
        }
    }
}

/// What training reports after each epoch.
#[derive(Debug, Clone, Copy)]
pub struct EpochStats {
    /// Epoch, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f32,
    /// Held-out triplet accuracy after the epoch.
    pub held_out_accuracy: f32,
}

/// Fits a fresh encoder on mined triplets; calls `on_step` after each step (for progress) and
/// `on_epoch` after each epoch.
pub fn train(
    feats: &[Features],
    mined: &Mined,
    cfg: &TrainConfig,
    mut on_step: impl FnMut(),
    mut on_epoch: impl FnMut(&EpochStats),
) -> coldstart_models::Result<(Encoder, Vec<EpochStats>)> {
    let mut enc = Encoder::new(cfg.encoder.clone())?;
    let mut opt = enc.optimizer();
    let mut rng = SmallRng::seed_from_u64(cfg.seed ^ 0x5eed);
    let mut order = mined.train.clone();
    let refs = |ts: &[Triplet]| -> Vec<(&Features, &Features, &Features)> {
        ts.iter()
            .map(|&(a, p, n)| (&feats[a], &feats[p], &feats[n]))
            .collect()
    };
    let held = refs(&mined.held_out);
    let mut stats = Vec::new();
    for epoch in 1..=cfg.epochs {
        // Fisher-Yates shuffle
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let (mut total, mut steps) = (0.0f32, 0usize);
        for batch in order.chunks(cfg.batch.max(1)) {
            total += enc.step(&mut opt, &refs(batch))?;
            steps += 1;
            on_step();
        }
        let s = EpochStats {
            epoch,
            train_loss: total / steps.max(1) as f32,
            held_out_accuracy: enc.triplet_accuracy(&held)?,
        };
        on_epoch(&s);
        stats.push(s);
    }
    enc.forget_untrained(&opt);
    // the model as it is kept: held-out anchors' own tokens may have just been left out
    if let Some(last) = stats.last_mut() {
        last.held_out_accuracy = enc.triplet_accuracy(&held)?;
    }
    Ok((enc, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldstart_contracts::profile::Event;

    fn item(id: u64, cat: &str, title: &str) -> Item {
        Item {
            item_id: id,
            publish_ts: id as i64,
            author_id: None,
            category: cat.into(),
            keywords: vec![],
            title: title.into(),
            body: None,
            image_vec: None,
            quality: None,
            author_quality: None,
        }
    }

    fn ev(user: u64, item: u64, action: &str) -> LoggedEvent {
        LoggedEvent {
            event: Event {
                user_id: user,
                item_id: item,
                ts: item as i64,
                action: action.parse().unwrap(),
                dwell_ms: None,
                request_id: None,
            },
            item_publish_ts: 0,
            category: String::new(),
            keywords: vec![],
        }
    }

    /// Training and publishing build features with one function: a model that takes no image
    /// (`image_dim` 0) gets none from an item that carries one, on both paths.
    #[test]
    fn features_leave_images_out_of_a_model_without_them() {
        let mut it = item(1, "cats", "a cat");
        it.image_vec = Some(vec![0.5; 4]);
        let cfg = EncoderConfig {
            buckets: 64,
            image_dim: 0,
            ..Default::default()
        };
        let f = item_features(&[it.clone()], &cfg, None).unwrap();
        assert!(f[0].image.is_empty());
        let enc = Encoder::new(EncoderConfig {
            hidden: 4,
            dim: 3,
            ..cfg.clone()
        })
        .unwrap();
        enc.encode(&f[0])
            .expect("encodes without a dimension mismatch");
        let with = EncoderConfig {
            image_dim: 4,
            ..cfg
        };
        assert_eq!(item_features(&[it], &with, None).unwrap()[0].image.len(), 4);
        let minilm = EncoderConfig {
            backbone: Backbone::MiniLm,
            ..Default::default()
        };
        let e = item_features(&[item(2, "c", "t")], &minilm, None).unwrap_err();
        assert!(e.to_string().contains("minilm"), "{e}");
    }

    #[test]
    fn positives_share_users_and_category_negatives_do_not_pair() {
        let items = vec![
            item(1, "cats", "a"),
            item(2, "cats", "b"),
            item(3, "cats", "c"),
            item(4, "dogs", "d"),
        ];
        let mut events = Vec::new();
        for u in 0..5 {
            events.push(ev(u, 1, "like"));
            events.push(ev(u, 2, "like"));
            events.push(ev(u, 4, "like"));
            events.push(ev(u, 3, "impression"));
        }
        let cfg = TrainConfig {
            min_exposure: 3,
            holdout: 0.0,
            ..Default::default()
        };
        let m = mine(&items, &events, &cfg);
        assert_eq!(m.eligible_items, 4);
        assert_eq!(
            m.positive_pairs, 1,
            "1-2 only: 4 is another category, 3 was never engaged"
        );
        assert!(!m.train.is_empty());
        for &(a, p, n) in &m.train {
            assert_eq!(items[a].category, items[p].category);
            assert!((a, p) == (0, 1) || (a, p) == (1, 0));
            assert!(n != a && n != p);
        }
        // item 3 (same category, never co-engaged) is the hard negative
        assert!(m.train.iter().any(|t| t.2 == 2));
    }
}
