//! Training and evaluating the two-tower model on a data set in the import format: the events
//! replayed in time order build each user's state at each engagement (last liked, collected and
//! shared items, their mean content vector); engagements before the held-out cut are training
//! pairs, the rest are held out. Held-out recall is reported over every item and over the items
//! that were new at the cut (fewer than `min_interactions` training interactions), where the
//! default ID embedding decides. `coldstart train two-tower` runs it with progress bars.

use crate::training::bar;
use crate::{Error, Result};
use coldstart_contracts::encoder::Item;
use coldstart_contracts::profile::{tower_attrs, Event, User};
use coldstart_contracts::types::Action;
use coldstart_models::two_tower::{
    count_interactions, recall_at, DefaultMethod, ItemSide, Neighbors, Pair, TrainingSet, TwoTower,
    TwoTowerConfig, UserInput, UserRecord, UserSide, UserState,
};
use coldstart_runtime::routing::normalise;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

/// The engagements that make a training pair (an impression says nothing).
fn is_engagement(a: Action) -> bool {
    a != Action::Impression
}

/// The seed actions whose items become a user's recent interests, by slot.
fn seed_slot(a: Action) -> Option<usize> {
    match a {
        Action::Like => Some(0),
        Action::Collect => Some(1),
        Action::Share => Some(2),
        _ => None,
    }
}

/// A data set replayed into training pairs and held-out pairs.
pub struct Prepared {
    /// Catalog, counts and training pairs.
    pub set: TrainingSet,
    /// Held-out (user then, item index) pairs.
    pub held_out: Vec<(UserInput, usize)>,
    /// Per held-out pair: whether its item was new at the cut.
    pub held_out_new: Vec<bool>,
    /// Per held-out pair: whether its user was new then.
    pub held_out_new_user: Vec<bool>,
    /// Per held-out pair: the items its user engaged before the cut (left out of the ranking).
    pub seen: Vec<HashSet<usize>>,
    /// The catalog's item ids, by index.
    pub item_ids: Vec<u64>,
    /// The training engagements, (user, item) in time order: the co-engagement neighbours'.
    pub engaged: Vec<(u64, u64)>,
}

/// A user's state while the events are replayed: as the profile service keeps it, the last
/// `last_n` items per seed action (like, collect, share), newest first, so that training sees
/// users as serving will.
#[derive(Default)]
struct Replay {
    recent: [VecDeque<u64>; 3],
    clicked: VecDeque<u64>,
    engaged: HashSet<usize>,
    /// Engagements so far.
    interactions: u64,
    /// The first engaged items (the old-for-new signature).
    first: Vec<u64>,
    /// Training engagements.
    trained: u32,
    /// The last engaged items (catalog indices), newest last: the co-engagement anchors.
    last: VecDeque<usize>,
}

/// Items of a user's old-for-new signature: their first engagements.
const SIGNATURE_ITEMS: usize = 20;
const DAY_MS: f64 = 86_400_000.0;

/// The co-engagement anchor of a user's `nth` engagement: one of their last engagements, drawn
/// by a hash of (user, n) so that a run is reproducible.
fn anchor_of(last: &VecDeque<usize>, user: u64, nth: u64) -> Option<usize> {
    if last.is_empty() {
        return None;
    }
    let mut h = (user ^ nth.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 29;
    last.get((h % last.len() as u64) as usize).copied()
}

impl Replay {
    /// Liked, then collected, then shared items, each newest first (the profile view's order).
    fn recent(&self) -> Vec<u64> {
        self.recent.iter().flatten().copied().collect()
    }
}

fn mean_content(recent: &[u64], content: &HashMap<u64, Vec<f32>>, dim: usize) -> Vec<f32> {
    let mut sum = vec![0.0f32; dim];
    let mut n = 0usize;
    for v in recent.iter().filter_map(|i| content.get(i)) {
        if v.len() == dim {
            sum.iter_mut().zip(v).for_each(|(s, x)| *s += x);
            n += 1;
        }
    }
    if n == 0 || dim == 0 {
        return Vec::new();
    }
    sum.iter_mut().for_each(|s| *s /= n as f32);
    sum
}

/// Replays `events` in time order into training pairs (the first `1 - held_out_share` of the
/// engagements) and held-out pairs (the rest). Each user keeps their last `last_n` liked,
/// collected and shared items (per action) as recent interests; a pair sees only the events
/// before it. `content` holds the items' content vectors
/// (empty: none). Featurises with `m`'s buckets.
pub fn prepare(
    m: &TwoTower,
    items: &[Item],
    events: &[Event],
    users: &[User],
    content: &HashMap<u64, Vec<f32>>,
    held_out_share: f64,
    last_n: usize,
) -> Result<Prepared> {
    if !(0.0..1.0).contains(&held_out_share) {
        return Err(Error::Invalid(format!(
            "--held-out: {held_out_share} is not in [0, 1)"
        )));
    }
    let dim = m.cfg.content_dim;
    let index: HashMap<u64, usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.item_id, i))
        .collect();
    let sides: Vec<ItemSide> = items
        .iter()
        .map(|it| ItemSide {
            item_id: it.item_id,
            // as the forward index keeps them, so that serving featurises items the same way
            category: normalise(&it.category),
            keywords: {
                let mut seen = HashSet::new();
                it.keywords
                    .iter()
                    .map(|k| normalise(k))
                    .filter(|k| !k.is_empty() && seen.insert(k.clone()))
                    .collect()
            },
            content: content
                .get(&it.item_id)
                .filter(|v| v.len() == dim)
                .cloned()
                .unwrap_or_default(),
        })
        .collect();
    let user_attrs: HashMap<u64, Vec<String>> =
        users.iter().map(|u| (u.user_id, tower_attrs(u))).collect();
    let user_rows: HashMap<u64, &User> = users.iter().map(|u| (u.user_id, u)).collect();
    let mut order: Vec<&Event> = events
        .iter()
        .filter(|e| index.contains_key(&e.item_id))
        .collect();
    order.sort_by_key(|e| (e.ts, e.user_id, e.item_id));
    let engagements = order.iter().filter(|e| is_engagement(e.action)).count();
    let cut = ((engagements as f64) * (1.0 - held_out_share)).round() as usize;
    let mut state: HashMap<u64, Replay> = HashMap::new();
    let (mut pairs, mut held) = (Vec::new(), Vec::new());
    let mut engaged = Vec::new();
    let mut seen_engagements = 0usize;
    // per training pair of a user new then: (user, its place in their training engagements)
    let mut new_pairs: Vec<(usize, u64, usize)> = Vec::new();
    let mut sequences: HashMap<u64, Vec<usize>> = HashMap::new();
    for e in order {
        let item = index[&e.item_id];
        let st = state.entry(e.user_id).or_default();
        if is_engagement(e.action) {
            let recent = st.recent();
            let row = user_rows.get(&e.user_id);
            let side = UserSide {
                user_id: e.user_id,
                attrs: user_attrs.get(&e.user_id).cloned().unwrap_or_default(),
                content: mean_content(&recent, content, dim),
                recent,
                clicked: st.clicked.iter().copied().collect(),
                interests: row.map(|u| u.interests.clone()).unwrap_or_default(),
                // the user as they were then: events come from signed-in users
                state: UserState {
                    interactions: st.interactions,
                    days_since_signup: row
                        .map(|u| ((e.ts - u.signup_ts).max(0) as f64 / DAY_MS) as f32),
                    logged_in: true,
                },
            };
            if seen_engagements < cut {
                let x = m.user_input(&side);
                let seq = sequences.entry(e.user_id).or_default();
                if x.new {
                    new_pairs.push((pairs.len(), e.user_id, seq.len()));
                }
                seq.push(item);
                let anchor = anchor_of(&st.last, e.user_id, st.interactions);
                pairs.push(Pair::weighed(m, x, item).after(anchor));
                engaged.push((e.user_id, e.item_id));
                st.engaged.insert(item);
                st.trained += 1;
            } else {
                // held out as served: with the old-for-new signature
                held.push((m.serving_input(&side), item, st.engaged.clone()));
            }
            seen_engagements += 1;
            st.interactions += 1;
            st.last.push_back(item);
            if st.last.len() > m.cfg.item_item_window.max(1) {
                st.last.pop_front();
            }
            if st.first.len() < SIGNATURE_ITEMS && !st.first.contains(&e.item_id) {
                st.first.push(e.item_id);
            }
        }
        let list = match seed_slot(e.action) {
            Some(slot) => Some(&mut st.recent[slot]),
            None if e.action == Action::Click => Some(&mut st.clicked),
            None => None,
        };
        if let Some(list) = list {
            list.retain(|&i| i != e.item_id);
            list.push_front(e.item_id);
            list.truncate(last_n);
        }
    }
    let counts = count_interactions(items.len(), &pairs);
    // a new user's state also targets items they engaged later (evenly spaced among them): what
    // cold-start recall is for is what they will like, not only their very next event
    let future = m.cfg.users.future_targets;
    if future > 0 {
        for &(p, user, at) in &new_pairs {
            let later = &sequences[&user][at + 1..];
            let step = later.len().div_ceil(future).max(1);
            for &item in later.iter().step_by(step).take(future) {
                let x = pairs[p].user.clone();
                let prev = pairs[p].prev;
                pairs.push(Pair::weighed(m, x, item).after(prev));
            }
        }
    }
    let t = m.cfg.min_interactions;
    let mut held_out = Vec::with_capacity(held.len());
    let (mut held_out_new, mut held_out_new_user, mut seen) = (Vec::new(), Vec::new(), Vec::new());
    for (user, item, s) in held {
        held_out_new.push(counts[item] < t);
        held_out_new_user.push(user.new);
        held_out.push((user, item));
        seen.push(s);
    }
    let mut records: Vec<UserRecord> = state
        .iter()
        .map(|(&user_id, st)| UserRecord {
            user_id,
            signature: TwoTower::signature(
                user_attrs.get(&user_id).map(Vec::as_slice).unwrap_or(&[]),
                &st.first,
            ),
            interactions: st.trained,
        })
        .collect();
    records.sort_by_key(|r| r.user_id);
    Ok(Prepared {
        set: TrainingSet {
            items: sides.iter().map(|s| m.item_input(s)).collect(),
            counts,
            pairs,
            users: records,
        },
        held_out,
        held_out_new,
        held_out_new_user,
        seen,
        item_ids: items.iter().map(|it| it.item_id).collect(),
        engaged,
    })
}

/// Held-out pairs evaluated at most, per measure: each ranks the whole catalog.
pub const MAX_EVAL: usize = 5000;

/// What one training run gave.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    /// The default method.
    pub method: String,
    /// Training pairs.
    pub pairs: usize,
    /// Wall time of training, seconds.
    pub train_secs: f64,
    /// Mean loss of the last epoch.
    pub last_loss: f32,
    /// Held-out recall@k over every item.
    pub recall: f32,
    /// Held-out recall@k of the pairs whose item was new at the cut, ranked among the new items
    /// only (as the channel searches the new-item pools).
    pub recall_new: f32,
    /// Held-out recall@k of the pairs whose user was new then, and of those whose user was old
    /// (over every item, like `recall`): what new-user weighting and the bias part trade.
    pub recall_new_users: f32,
    /// See `recall_new_users`.
    pub recall_old_users: f32,
    /// The user method new users are placed by.
    pub user_method: String,
    /// Held-out pairs evaluated (at most [`MAX_EVAL`], evenly spaced), and pairs of new items.
    pub held_out: (usize, usize),
    /// The k.
    pub k: usize,
}

/// Trains a model with `cfg` on `data` (whose featurisation used the same buckets) with a
/// progress bar, and evaluates it on the held-out pairs at `k`.
pub fn train_and_evaluate(
    cfg: TwoTowerConfig,
    data: &Prepared,
    k: usize,
) -> Result<(TwoTower, Run)> {
    let mut m = TwoTower::new(cfg.clone())?;
    if data.set.pairs.len() < 2 {
        return Err(Error::Invalid(
            "fewer than two training engagements: nothing to train the two-tower model on".into(),
        ));
    }
    let steps = data.set.pairs.len().div_ceil(cfg.batch.max(1)) * cfg.epochs;
    let pb = bar(steps as u64, &format!("two-tower {}", cfg.default_method));
    let started = Instant::now();
    let stats = m.train(
        &data.set,
        || pb.inc(1),
        |s| pb.set_message(format!("epoch {} loss {:.4}", s.epoch, s.loss)),
    )?;
    pb.finish();
    let train_secs = started.elapsed().as_secs_f64();
    m.graduated = data
        .item_ids
        .iter()
        .zip(&data.set.counts)
        .filter(|(_, &c)| c >= cfg.min_interactions)
        .map(|(&id, _)| id)
        .collect();
    m.graduated.sort_unstable();
    if cfg.neighbors > 0 {
        m.neighbors = Neighbors::build(&data.engaged, cfg.neighbors);
    }
    // at most MAX_EVAL evenly spaced held-out pairs: each ranks the whole catalog
    let every = data.held_out.len().div_ceil(MAX_EVAL).max(1);
    let sample: Vec<usize> = (0..data.held_out.len()).step_by(every).collect();
    let held: Vec<(UserInput, usize)> = sample.iter().map(|&h| data.held_out[h].clone()).collect();
    let recall = recall_at(&m, &data.set, &held, k, |h, j| {
        data.seen[sample[h]].contains(&j)
    })?;
    let new: Vec<(UserInput, usize)> = data
        .held_out
        .iter()
        .zip(&data.held_out_new)
        .filter(|(_, &n)| n)
        .map(|(h, _)| h.clone())
        .take(MAX_EVAL)
        .collect();
    let is_new = |j: usize| data.set.counts[j] < cfg.min_interactions;
    let recall_new = recall_at(&m, &data.set, &new, k, |_, j| !is_new(j))?;
    // by the user's state: every held-out pair of new users and up to MAX_EVAL of old ones
    let by_user = |want_new: bool| {
        let idx: Vec<usize> = (0..data.held_out.len())
            .filter(|&h| data.held_out_new_user[h] == want_new)
            .collect();
        let every = idx.len().div_ceil(MAX_EVAL).max(1);
        let idx: Vec<usize> = idx.into_iter().step_by(every).collect();
        let pairs: Vec<(UserInput, usize)> =
            idx.iter().map(|&h| data.held_out[h].clone()).collect();
        recall_at(&m, &data.set, &pairs, k, |p, j| {
            data.seen[idx[p]].contains(&j)
        })
    };
    let (recall_new_users, recall_old_users) = (by_user(true)?, by_user(false)?);
    let run = Run {
        method: cfg.default_method.to_string(),
        pairs: data.set.pairs.len(),
        train_secs,
        last_loss: stats.last().map(|s| s.loss).unwrap_or(f32::NAN),
        recall,
        recall_new,
        recall_new_users,
        recall_old_users,
        user_method: cfg.users.method.to_string(),
        held_out: (held.len(), new.len()),
        k,
    };
    Ok((m, run))
}

/// Every default method's run on the same data, in [`DefaultMethod::ALL`] order.
pub fn compare_methods(
    cfg: &TwoTowerConfig,
    data: &Prepared,
    k: usize,
) -> Result<Vec<(TwoTower, Run)>> {
    DefaultMethod::ALL
        .into_iter()
        .map(|method| {
            let cfg = TwoTowerConfig {
                default_method: method,
                ..cfg.clone()
            };
            train_and_evaluate(cfg, data, k)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: u64) -> Item {
        Item {
            item_id: id,
            publish_ts: 0,
            author_id: None,
            category: if id.is_multiple_of(2) { "Even" } else { "Odd" }.into(),
            keywords: vec![],
            title: format!("item {id}"),
            body: None,
            image_vec: None,
            quality: None,
            author_quality: None,
        }
    }

    fn ev(user: u64, item: u64, ts: i64, action: Action) -> Event {
        Event {
            user_id: user,
            item_id: item,
            ts,
            action,
            dwell_ms: None,
            request_id: None,
        }
    }

    /// A pair sees only what came before it; impressions make no pair; the latest engagements
    /// are held out, and an item unseen before the cut counts as new.
    #[test]
    fn the_replay_keeps_time_order_and_holds_out_the_latest() {
        let m = TwoTower::new(TwoTowerConfig {
            buckets: 1 << 10,
            hidden: 4,
            dim: 3,
            min_interactions: 1,
            ..Default::default()
        })
        .unwrap();
        let items: Vec<Item> = (1..=4).map(item).collect();
        let events = vec![
            ev(7, 2, 30, Action::Share),
            ev(7, 1, 10, Action::Like),
            ev(7, 3, 20, Action::Impression),
            ev(7, 3, 25, Action::Click),
            ev(7, 4, 40, Action::Like),
            ev(9, 99, 5, Action::Like), // an unknown item is left out
        ];
        let p = prepare(&m, &items, &events, &[], &HashMap::new(), 0.25, 20).unwrap();
        // 4 engagements: 3 train, 1 held out (the latest)
        assert_eq!(p.set.pairs.len(), 3);
        assert_eq!(p.held_out.len(), 1);
        // the user as they were then: engagements so far, signed in (no users file: no sign-up)
        let then = |n: u64| UserState {
            interactions: n,
            days_since_signup: None,
            logged_in: true,
        };
        let first = &p.set.pairs[0];
        assert_eq!(first.item, 0, "item 1 at ts 10 comes first");
        assert_eq!(
            first.user,
            m.user_input(&UserSide {
                user_id: 7,
                state: then(0),
                ..Default::default()
            })
        );
        // the click at 25 sees the like at 10, not the share at 30
        let third = &p.set.pairs[2];
        assert_eq!(third.item, 1, "item 2 (the share at 30) is the third pair");
        let before_share = m.user_input(&UserSide {
            user_id: 7,
            recent: vec![1],
            state: then(1),
            ..Default::default()
        });
        assert_eq!(p.set.pairs[1].user, before_share, "the click at 25");
        // the co-engagement anchor: the item engaged just before (none for the first)
        let prevs: Vec<Option<usize>> = p.set.pairs.iter().map(|p| p.prev).collect();
        assert_eq!(prevs, [None, Some(0), Some(2)]);
        // the share at 30 sees the click at 25 among the clicked items
        let at_share = m.user_input(&UserSide {
            user_id: 7,
            recent: vec![1],
            clicked: vec![3],
            state: then(2),
            ..Default::default()
        });
        assert_eq!(p.set.pairs[2].user, at_share);
        // the held-out like of item 4 sees the like of 1 and the share of 2, per action, and
        // the click of 3
        let held = m.serving_input(&UserSide {
            user_id: 7,
            recent: vec![1, 2],
            clicked: vec![3],
            state: then(3),
            ..Default::default()
        });
        assert_eq!(p.held_out[0], (held, 3));
        assert_eq!(p.held_out_new, [true], "item 4 had no training interaction");
        assert_eq!(p.seen[0], HashSet::from([0, 1, 2]));
        assert_eq!(p.set.counts, [1, 1, 1, 0]);
        assert!(prepare(&m, &items, &events, &[], &HashMap::new(), 1.0, 20).is_err());
    }

    /// With a window of w, each pair's anchor is one of the user's w engagements before it (any
    /// of them, not always the latest), never the pair's own or a later one.
    #[test]
    fn the_co_engagement_anchor_is_drawn_from_the_window() {
        let m = TwoTower::new(TwoTowerConfig {
            buckets: 64,
            hidden: 4,
            dim: 3,
            min_interactions: 1,
            item_item_window: 3,
            ..Default::default()
        })
        .unwrap();
        let items: Vec<Item> = (1..=40).map(item).collect();
        let events: Vec<Event> = (1..=40)
            .flat_map(|i| {
                [
                    ev(7, i, i as i64, Action::Like),
                    ev(8, i, i as i64, Action::Like),
                ]
            })
            .collect();
        let p = prepare(&m, &items, &events, &[], &HashMap::new(), 0.0, 20).unwrap();
        let mut back = HashSet::new();
        for pair in &p.set.pairs {
            // user 7's and 8's nth engagement is item n (index n - 1)
            match pair.prev {
                None => assert_eq!(pair.item, 0),
                Some(a) => {
                    assert!(a < pair.item && pair.item - a <= 3, "{a} for {}", pair.item);
                    back.insert(pair.item - a);
                }
            }
        }
        assert_eq!(
            back,
            HashSet::from([1, 2, 3]),
            "every place in the window is drawn"
        );
    }
}
