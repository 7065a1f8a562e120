//! Profiles in memory: per user, the last n items per action type, interest weights per category
//! and keyword that decay with a half-life, counters, the new-user flag, onboarding attributes and
//! the bounded set of items already interacted with (the seen filter).

use coldstart_common::config::ProfileConfig;
use coldstart_common::rows::{LoggedEvent, ProfileView, User};
use std::collections::{HashMap, HashSet, VecDeque};

/// How much one action says about interest.
pub fn action_weight(action: &str) -> f64 {
    match action {
        "click" => 1.0,
        "like" | "comment" => 3.0,
        "collect" => 4.0,
        "share" => 5.0,
        _ => 0.0, // impressions say nothing about interest
    }
}

/// Weight given to onboarding interests; they do not decay, so a new user with interests but no
/// actions still gets interest-based recall.
const ONBOARDING_WEIGHT: f32 = 0.5;
/// Interest keys kept per user and per kind; the lightest are dropped beyond this.
const MAX_INTERESTS: usize = 200;
/// Interest keys returned in a view.
const VIEW_INTERESTS: usize = 50;

/// A weight that halves every half-life.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Decayed {
    w: f64,
    t: i64,
}

impl Decayed {
    fn at(&self, now: i64, half_life_ms: f64) -> f64 {
        self.w * 0.5f64.powf((now - self.t).max(0) as f64 / half_life_ms)
    }

    fn add(&mut self, weight: f64, ts: i64, half_life_ms: f64) {
        if ts >= self.t {
            self.w = self.at(ts, half_life_ms) + weight;
            self.t = ts;
        } else {
            // an older event: its weight has decayed by the time of the newest one
            self.w += weight * 0.5f64.powf((self.t - ts) as f64 / half_life_ms);
        }
    }
}

/// One user.
#[derive(Debug, Default, Clone)]
pub struct UserProfile {
    attrs: Option<User>,
    first_seen: Option<i64>,
    last_seen: Option<i64>,
    interactions: u64,
    recent: HashMap<String, VecDeque<u64>>,
    categories: HashMap<String, Decayed>,
    keywords: HashMap<String, Decayed>,
    seen: VecDeque<u64>,
    seen_set: HashSet<u64>,
}

/// All profiles of this partition.
pub struct Profiles {
    users: HashMap<u64, UserProfile>,
    cfg: ProfileConfig,
}

fn bump(map: &mut HashMap<String, Decayed>, key: &str, weight: f64, ts: i64, hl: f64) {
    map.entry(key.to_string())
        .or_insert(Decayed { w: 0.0, t: ts })
        .add(weight, ts, hl);
    if map.len() > MAX_INTERESTS {
        if let Some(lightest) = map
            .iter()
            .min_by(|a, b| a.1.at(ts, hl).total_cmp(&b.1.at(ts, hl)))
            .map(|(k, _)| k.clone())
        {
            map.remove(&lightest);
        }
    }
}

fn top(map: &HashMap<String, Decayed>, now: i64, hl: f64) -> Vec<(String, f32)> {
    let mut v: Vec<(String, f32)> = map
        .iter()
        .map(|(k, d)| (k.clone(), d.at(now, hl) as f32))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(VIEW_INTERESTS);
    v
}

impl Profiles {
    /// Empty profiles.
    pub fn new(cfg: ProfileConfig) -> Self {
        Self {
            users: HashMap::new(),
            cfg,
        }
    }

    fn half_life_ms(&self) -> f64 {
        self.cfg.interest_half_life_h * 3_600_000.0
    }

    /// Applies logged events.
    pub fn apply_events(&mut self, events: &[LoggedEvent]) {
        let hl = self.half_life_ms();
        let (last_n, seen_cap) = (self.cfg.last_n, self.cfg.seen_capacity);
        for le in events {
            let e = &le.event;
            let p = self.users.entry(e.user_id).or_default();
            p.first_seen = Some(p.first_seen.map_or(e.ts, |f| f.min(e.ts)));
            p.last_seen = Some(p.last_seen.map_or(e.ts, |l| l.max(e.ts)));
            let w = action_weight(&e.action);
            if w == 0.0 {
                continue;
            }
            p.interactions += 1;
            let recent = p.recent.entry(e.action.clone()).or_default();
            recent.retain(|&i| i != e.item_id);
            recent.push_front(e.item_id);
            recent.truncate(last_n);
            bump(&mut p.categories, &le.category, w, e.ts, hl);
            // keywords share the item's weight so a many-tag item does not outweigh its category
            let kw_w = w / (le.keywords.len().max(1) as f64).sqrt();
            for k in &le.keywords {
                bump(&mut p.keywords, k, kw_w, e.ts, hl);
            }
            if p.seen_set.insert(e.item_id) {
                p.seen.push_front(e.item_id);
                if p.seen.len() > seen_cap {
                    if let Some(old) = p.seen.pop_back() {
                        p.seen_set.remove(&old);
                    }
                }
            }
        }
    }

    /// Stores user attributes and onboarding interests (the newest row wins).
    pub fn upsert_users(&mut self, users: &[User]) {
        for u in users {
            self.users.entry(u.user_id).or_default().attrs = Some(u.clone());
        }
    }

    /// Users known.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when no user is known.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The view the aggregator reads, at time `now`; `None` for an unknown user.
    pub fn view(&self, user_id: u64, now: i64) -> Option<ProfileView> {
        let p = self.users.get(&user_id)?;
        let hl = self.half_life_ms();
        let mut categories = top(&p.categories, now, hl);
        let mut keywords = top(&p.keywords, now, hl);
        if let Some(u) = &p.attrs {
            for i in &u.interests {
                for list in [&mut categories, &mut keywords] {
                    match list.iter_mut().find(|(k, _)| k == i) {
                        Some(e) => e.1 = e.1.max(ONBOARDING_WEIGHT),
                        None => list.push((i.clone(), ONBOARDING_WEIGHT)),
                    }
                }
            }
            for list in [&mut categories, &mut keywords] {
                list.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            }
        }
        let recent = |a: &str| {
            p.recent
                .get(a)
                .map(|v| v.iter().copied().collect())
                .unwrap_or_default()
        };
        Some(ProfileView {
            user_id,
            is_new: p.interactions < self.cfg.new_user_max_interactions,
            interactions: p.interactions,
            categories,
            keywords,
            seen: p.seen.iter().copied().collect(),
            liked: recent("like"),
            collected: recent("collect"),
            shared: recent("share"),
        })
    }

    /// First and last event times of a user.
    pub fn seen_span(&self, user_id: u64) -> Option<(Option<i64>, Option<i64>)> {
        self.users
            .get(&user_id)
            .map(|p| (p.first_seen, p.last_seen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldstart_common::rows::Event;

    const H: i64 = 3_600_000;

    fn ev(user: u64, item: u64, ts: i64, action: &str, cat: &str) -> LoggedEvent {
        LoggedEvent {
            event: Event {
                user_id: user,
                item_id: item,
                ts,
                action: action.into(),
                dwell_ms: None,
            },
            item_publish_ts: 0,
            category: cat.into(),
            keywords: vec!["k".into()],
        }
    }

    #[test]
    fn interests_decay_with_the_half_life() {
        let cfg = ProfileConfig {
            interest_half_life_h: 10.0,
            ..Default::default()
        };
        let mut p = Profiles::new(cfg);
        p.apply_events(&[
            ev(1, 1, 0, "like", "cats"),
            ev(1, 2, 10 * H, "like", "dogs"),
        ]);
        let v = p.view(1, 10 * H).unwrap();
        assert_eq!(v.categories[0].0, "dogs");
        assert!((v.categories[0].1 - 3.0).abs() < 1e-4);
        assert!((v.categories[1].1 - 1.5).abs() < 1e-4, "{:?}", v.categories);
    }

    #[test]
    fn last_n_seen_and_new_user_flag() {
        let cfg = ProfileConfig {
            last_n: 2,
            seen_capacity: 3,
            new_user_max_interactions: 3,
            ..Default::default()
        };
        let mut p = Profiles::new(cfg);
        p.apply_events(&[
            ev(1, 1, 1, "like", "c"),
            ev(1, 2, 2, "like", "c"),
            ev(1, 3, 3, "like", "c"),
            ev(1, 9, 4, "impression", "c"),
        ]);
        let v = p.view(1, 5).unwrap();
        assert_eq!(v.liked, [3, 2]);
        assert_eq!(v.seen, [3, 2, 1]);
        assert_eq!(v.interactions, 3);
        assert!(!v.is_new);
        p.apply_events(&[ev(1, 4, 6, "click", "c")]);
        assert_eq!(p.view(1, 7).unwrap().seen, [4, 3, 2], "bounded seen set");
        assert!(p.view(2, 0).is_none());
    }

    #[test]
    fn onboarding_interests_show_for_new_users() {
        let mut p = Profiles::new(ProfileConfig::default());
        p.upsert_users(&[User {
            user_id: 5,
            interests: vec!["cats".into()],
            ..Default::default()
        }]);
        let v = p.view(5, 0).unwrap();
        assert!(v.is_new);
        assert_eq!(v.categories, vec![("cats".to_string(), ONBOARDING_WEIGHT)]);
    }
}
