//! Profiles in memory: per user, the last n items per action type, interest weights per category
//! and keyword that decay with a half-life, counters, the new-user flag, onboarding attributes and
//! the bounded set of items already interacted with (the seen filter), and the popularity boards
//! of this partition's users' engagement (overall and per group).

use crate::config::ProfileConfig;
use crate::popularity::Popularity;
use coldstart_contracts::profile::{tower_attrs, Event, LoggedEvent, ProfileView, User};
use coldstart_contracts::types::Action;
use std::collections::{HashMap, HashSet, VecDeque};

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

    /// `log2` of the weight at `now`: comparable however many half-lives have passed.
    fn log_at(&self, now: i64, half_life_ms: f64) -> f64 {
        self.w.log2() - (now - self.t).max(0) as f64 / half_life_ms
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
    recent: HashMap<Action, VecDeque<u64>>,
    categories: HashMap<String, Decayed>,
    keywords: HashMap<String, Decayed>,
    seen: VecDeque<u64>,
    seen_set: HashSet<u64>,
}

/// All profiles of this partition.
pub struct Profiles {
    users: HashMap<u64, UserProfile>,
    popularity: Popularity,
    cfg: ProfileConfig,
    recent: RecentEvents,
}

/// The identities of the last events applied (at most `cap`), oldest first.
#[derive(Default)]
struct RecentEvents {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    cap: usize,
}

impl RecentEvents {
    fn insert(&mut self, key: u64) {
        if self.set.insert(key) {
            self.order.push_back(key);
            if self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// An event's identity: user, item, time, action and request id (FNV-1a, stable across runs).
pub fn event_key(e: &Event) -> u64 {
    coldstart_runtime::ids::StableHash::default()
        .eat(&e.user_id.to_le_bytes())
        .eat(&e.item_id.to_le_bytes())
        .eat(&e.ts.to_le_bytes())
        .eat(e.action.as_str().as_bytes())
        .eat(e.request_id.as_deref().unwrap_or("").as_bytes())
        .value()
}

/// A user's group: the configured attributes joined by `|` (an absent one stays empty); `None`
/// when the user has none of them.
pub fn group_of(u: &User, group_by: &[String]) -> Option<String> {
    let parts: Vec<&str> = group_by
        .iter()
        .map(|f| {
            match f.as_str() {
                "age_bucket" => u.age_bucket.as_deref(),
                "gender" => u.gender.as_deref(),
                "occupation" => u.occupation.as_deref(),
                "region" => u.region.as_deref(),
                _ => None,
            }
            .unwrap_or("")
        })
        .collect();
    if parts.iter().all(|p| p.is_empty()) {
        None
    } else {
        Some(parts.join("|").to_lowercase())
    }
}

fn bump(map: &mut HashMap<String, Decayed>, key: &str, weight: f64, ts: i64, hl: f64) {
    map.entry(key.to_string())
        .or_insert(Decayed { w: 0.0, t: ts })
        .add(weight, ts, hl);
    if map.len() > MAX_INTERESTS {
        if let Some(lightest) = map
            .iter()
            .min_by(|a, b| {
                a.1.log_at(ts, hl)
                    .total_cmp(&b.1.log_at(ts, hl))
                    .then_with(|| b.0.cmp(a.0))
            })
            .map(|(k, _)| k.clone())
        {
            map.remove(&lightest);
        }
    }
}

/// The heaviest interests at `at`, weights relative to the heaviest (so they never underflow,
/// however old the history), ties by name.
fn top(map: &HashMap<String, Decayed>, at: i64, hl: f64) -> Vec<(String, f32)> {
    // compare in log space: w·2^(-(at-t)/hl) underflows f64 for history many half-lives old
    let mut v: Vec<(String, f64)> = map
        .iter()
        .map(|(k, d)| (k.clone(), d.log_at(at, hl)))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(VIEW_INTERESTS);
    let best = v.first().map(|x| x.1).unwrap_or(0.0);
    v.into_iter()
        .map(|(k, l)| (k, (l - best).exp2() as f32))
        .collect()
}

impl Profiles {
    /// Empty profiles.
    pub fn new(cfg: ProfileConfig) -> Self {
        Self {
            users: HashMap::new(),
            popularity: Popularity::new(cfg.popular_half_life_h, cfg.popular_capacity),
            recent: RecentEvents {
                cap: cfg.dedup_events,
                ..Default::default()
            },
            cfg,
        }
    }

    /// The events of `events` not applied before (among the last `profile.dedup_events`) and
    /// not repeated within the batch, in order, and how many were left out.
    pub fn fresh(&self, events: Vec<LoggedEvent>) -> (Vec<LoggedEvent>, usize) {
        let n = events.len();
        let mut batch = HashSet::new();
        let fresh: Vec<LoggedEvent> = events
            .into_iter()
            .filter(|le| {
                let k = event_key(&le.event);
                !self.recent.set.contains(&k) && batch.insert(k)
            })
            .collect();
        let dropped = n - fresh.len();
        (fresh, dropped)
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
            self.recent.insert(event_key(e));
            let p = self.users.entry(e.user_id).or_default();
            p.first_seen = Some(p.first_seen.map_or(e.ts, |f| f.min(e.ts)));
            p.last_seen = Some(p.last_seen.map_or(e.ts, |l| l.max(e.ts)));
            let w = e.action.weight();
            if w == 0.0 {
                continue;
            }
            p.interactions += 1;
            let group = p
                .attrs
                .as_ref()
                .and_then(|u| group_of(u, &self.cfg.group_by));
            self.popularity
                .add(group.as_deref(), e.item_id, le.item_publish_ts, w, e.ts);
            let recent = p.recent.entry(e.action).or_default();
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

    /// The most engaged items of a group (`""`: every user of this partition) at time `at`.
    pub fn popular(&self, group: &str, at: i64, limit: usize) -> Vec<(u64, i64, f64)> {
        self.popularity.top(group, at, limit)
    }

    /// The view the aggregator reads, at the request time `at`; `None` for an unknown user.
    pub fn view(&self, user_id: u64, at: i64) -> Option<ProfileView> {
        let p = self.users.get(&user_id)?;
        let hl = self.half_life_ms();
        let categories = top(&p.categories, at, hl);
        let keywords = top(&p.keywords, at, hl);
        let recent = |a: Action| {
            p.recent
                .get(&a)
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
            liked: recent(Action::Like),
            collected: recent(Action::Collect),
            shared: recent(Action::Share),
            group: p
                .attrs
                .as_ref()
                .and_then(|u| group_of(u, &self.cfg.group_by)),
            interests: p
                .attrs
                .as_ref()
                .map(|u| u.interests.clone())
                .unwrap_or_default(),
            attrs: p.attrs.as_ref().map(tower_attrs).unwrap_or_default(),
            signup_ts: p.attrs.as_ref().map(|u| u.signup_ts),
            clicked: recent(Action::Click),
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

    const H: i64 = 3_600_000;

    /// A batch seen before is left out whole, a repeat within a batch once, a new event (another
    /// time, another request id) kept; the memory is bounded and forgets the oldest first.
    #[test]
    fn repeated_events_are_taken_once() {
        let mut p = Profiles::new(ProfileConfig {
            dedup_events: 3,
            ..Default::default()
        });
        let batch = vec![ev(1, 1, 10, "like", "c"), ev(1, 2, 11, "click", "c")];
        let (fresh, dropped) = p.fresh(batch.clone());
        assert_eq!((fresh.len(), dropped), (2, 0));
        p.apply_events(&fresh);
        assert_eq!(p.fresh(batch.clone()).1, 2, "the retried batch");
        let mut other = ev(1, 1, 10, "like", "c");
        other.event.request_id = Some("r2".into());
        let (fresh, dropped) = p.fresh(vec![
            ev(1, 1, 12, "like", "c"),
            ev(1, 1, 12, "like", "c"),
            other,
        ]);
        assert_eq!((fresh.len(), dropped), (2, 1));
        p.apply_events(&fresh);
        // capacity 3: the first event is forgotten now
        assert_eq!(p.fresh(batch).1, 1);
    }

    fn ev(user: u64, item: u64, ts: i64, action: &str, cat: &str) -> LoggedEvent {
        LoggedEvent {
            event: Event {
                user_id: user,
                item_id: item,
                ts,
                action: action.parse().unwrap(),
                dwell_ms: None,
                request_id: None,
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
        // weights relative to the heaviest: 3 and 3·½
        assert!((v.categories[0].1 - 1.0).abs() < 1e-6);
        assert!((v.categories[1].1 - 0.5).abs() < 1e-6, "{:?}", v.categories);
        // a thousand half-lives later the history still ranks, rather than underflowing to ties
        let old = p.view(1, 1000 * 10 * H).unwrap();
        assert_eq!(old.categories, v.categories);
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
        assert_eq!(v.interests, ["cats"]);
        assert!(v.categories.is_empty(), "interests are their own channel");
    }

    #[test]
    fn engagement_counts_on_the_overall_and_the_group_board() {
        let cfg = ProfileConfig {
            popular_half_life_h: 1.0,
            ..Default::default()
        };
        let mut p = Profiles::new(cfg);
        p.upsert_users(&[User {
            user_id: 1,
            age_bucket: Some("25-34".into()),
            gender: Some("F".into()),
            region: None,
            ..Default::default()
        }]);
        p.apply_events(&[
            ev(1, 10, 0, "like", "c"),
            ev(2, 11, 0, "click", "c"),
            ev(2, 12, 0, "impression", "c"),
        ]);
        let all: Vec<u64> = p.popular("", H, 10).iter().map(|x| x.0).collect();
        assert_eq!(
            all,
            [10, 11],
            "a like outweighs a click; impressions do not count"
        );
        assert_eq!(p.view(1, 0).unwrap().group.as_deref(), Some("25-34|f|"));
        let g: Vec<u64> = p.popular("25-34|f|", H, 10).iter().map(|x| x.0).collect();
        assert_eq!(g, [10]);
        assert_eq!(p.view(2, 0).unwrap().group, None);
    }
}
