//! The evaluation split: which items are cold, which users are new, what each new user keeps,
//! and the request time. Computed from the data by fixed rules (nothing here looks at what a
//! method recalls), or read from `split.json`, whose keys override the computed ones.

use crate::dataset::Dataset;
use crate::{Error, Result};
use coldstart_contracts::profile::Event;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Share of items, newest by publish time, that are cold.
pub const COLD_SHARE: f64 = 0.2;
/// Share of users, newest by sign-up, that are new.
pub const NEW_USER_SHARE: f64 = 0.1;
/// Events a new user keeps for training (their first ones on warm items).
pub const NEW_USER_SEEDS: usize = 3;

/// `split.json`: every key optional when read; all written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitFile {
    /// Cold item ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_items: Option<Vec<u64>>,
    /// New user ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_users: Option<Vec<u64>>,
    /// Per new user (id as a string key), the warm items whose events they keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_user_seed_items: Option<BTreeMap<String, Vec<u64>>>,
    /// The request time of every recall, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
}

/// The split in force.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Cold items: every event on them is withheld from training.
    pub cold_items: BTreeSet<u64>,
    /// New users: they keep only their seed events.
    pub new_users: BTreeSet<u64>,
    /// A new user's seed items.
    pub seeds: BTreeMap<u64, Vec<u64>>,
    /// The request time: 1 ms after the newest timestamp of the data set, so every training event
    /// and every published item lies before it.
    pub at: i64,
}

fn invalid(msg: String) -> Error {
    Error::Invalid(format!("split: {msg}"))
}

impl Split {
    /// Computes the split, then applies `over`'s keys (checked against the data).
    pub fn compute(d: &Dataset, over: Option<&SplitFile>) -> Result<Split> {
        Self::compute_with(d, over, NEW_USER_SHARE)
    }

    /// [`Split::compute`] with `new_user_share` of the users (newest by sign-up) new: a backtest
    /// may take more of them than the test's share, so that its user task is less noisy.
    pub fn compute_with(
        d: &Dataset,
        over: Option<&SplitFile>,
        new_user_share: f64,
    ) -> Result<Split> {
        if !(new_user_share > 0.0 && new_user_share < 1.0) {
            return Err(invalid(format!(
                "the share of new users is {new_user_share}; expected a number in (0, 1)"
            )));
        }
        let item_ids: HashSet<u64> = d.items.iter().map(|i| i.item_id).collect();
        let user_ids: HashSet<u64> = d.users.iter().map(|u| u.user_id).collect();
        let mut by_time: Vec<(i64, u64)> =
            d.items.iter().map(|i| (i.publish_ts, i.item_id)).collect();
        by_time.sort_unstable();
        let n_cold = (by_time.len() as f64 * COLD_SHARE).round() as usize;
        let mut cold: BTreeSet<u64> = by_time[by_time.len() - n_cold..]
            .iter()
            .map(|x| x.1)
            .collect();
        let mut users: Vec<(i64, u64)> = d.users.iter().map(|u| (u.signup_ts, u.user_id)).collect();
        users.sort_unstable();
        let n_new = (users.len() as f64 * new_user_share).round() as usize;
        let mut new_users: BTreeSet<u64> =
            users[users.len() - n_new..].iter().map(|x| x.1).collect();
        if let Some(o) = over {
            if let Some(c) = &o.cold_items {
                if let Some(bad) = c.iter().find(|i| !item_ids.contains(i)) {
                    return Err(invalid(format!(
                        "`cold_items`: item {bad} is not in the items file"
                    )));
                }
                cold = c.iter().copied().collect();
            }
            if let Some(u) = &o.new_users {
                if let Some(bad) = u.iter().find(|i| !user_ids.contains(i)) {
                    return Err(invalid(format!(
                        "`new_users`: user {bad} is not in the users file"
                    )));
                }
                new_users = u.iter().copied().collect();
            }
        }
        // a new user's first events on warm items, by time then item id
        let mut firsts: HashMap<u64, Vec<(i64, u64)>> = HashMap::new();
        for e in &d.events {
            if new_users.contains(&e.user_id) && !cold.contains(&e.item_id) {
                firsts.entry(e.user_id).or_default().push((e.ts, e.item_id));
            }
        }
        let mut seeds: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for &u in &new_users {
            let mut evs = firsts.remove(&u).unwrap_or_default();
            evs.sort_unstable();
            let mut items: Vec<u64> = Vec::new();
            for (_, i) in evs.into_iter().take(NEW_USER_SEEDS) {
                if !items.contains(&i) {
                    items.push(i);
                }
            }
            seeds.insert(u, items);
        }
        if let Some(map) = over.and_then(|o| o.new_user_seed_items.as_ref()) {
            for (u, items) in map {
                let uid: u64 = u.parse().map_err(|_| {
                    invalid(format!("`new_user_seed_items`: key {u:?} is not a user id"))
                })?;
                if !new_users.contains(&uid) {
                    return Err(invalid(format!(
                        "`new_user_seed_items`: user {uid} is not a new user of the split"
                    )));
                }
                if let Some(bad) = items.iter().find(|i| !item_ids.contains(i)) {
                    return Err(invalid(format!(
                        "`new_user_seed_items`: user {uid}: item {bad} is not in the items file"
                    )));
                }
                if let Some(bad) = items.iter().find(|i| cold.contains(i)) {
                    return Err(invalid(format!(
                        "`new_user_seed_items`: user {uid}: item {bad} is cold; seeds are warm items"
                    )));
                }
                seeds.insert(uid, items.clone());
            }
        }
        let newest = d
            .events
            .iter()
            .map(|e| e.ts)
            .chain(d.items.iter().map(|i| i.publish_ts))
            .chain(d.users.iter().map(|u| u.signup_ts))
            .max()
            .unwrap_or(0);
        let at = over.and_then(|o| o.at).unwrap_or(newest + 1);
        if at <= newest {
            return Err(invalid(format!(
                "`at`: {at} ms is not after the newest timestamp of the data ({newest} ms)"
            )));
        }
        Ok(Split {
            cold_items: cold,
            new_users,
            seeds,
            at,
        })
    }

    /// The split in the `split.json` form.
    pub fn to_file(&self) -> SplitFile {
        SplitFile {
            cold_items: Some(self.cold_items.iter().copied().collect()),
            new_users: Some(self.new_users.iter().copied().collect()),
            new_user_seed_items: Some(
                self.seeds
                    .iter()
                    .map(|(u, i)| (u.to_string(), i.clone()))
                    .collect(),
            ),
            at: Some(self.at),
        }
    }

    /// The data a model may be tuned on: the data set as it stood when the first cold item was
    /// published (items, events and sign-ups before then), without the new users. Split again by
    /// the same rules it is a backtest shaped like the test, in which no test user and no held-out
    /// event takes part.
    pub fn training_part(&self, d: &Dataset) -> Dataset {
        let cut = d
            .items
            .iter()
            .filter(|i| self.cold_items.contains(&i.item_id))
            .map(|i| i.publish_ts)
            .min()
            .unwrap_or(i64::MAX);
        let items: Vec<_> = d
            .items
            .iter()
            .filter(|i| !self.cold_items.contains(&i.item_id) && i.publish_ts < cut)
            .cloned()
            .collect();
        let kept: HashSet<u64> = items.iter().map(|i| i.item_id).collect();
        let users: Vec<_> = d
            .users
            .iter()
            .filter(|u| !self.new_users.contains(&u.user_id) && u.signup_ts < cut)
            .cloned()
            .collect();
        let known: HashSet<u64> = users.iter().map(|u| u.user_id).collect();
        Dataset {
            events: d
                .events
                .iter()
                .filter(|e| e.ts < cut && kept.contains(&e.item_id) && known.contains(&e.user_id))
                .cloned()
                .collect(),
            items,
            users,
        }
    }

    /// Hours from the first cold item's publication to the request time (at least 1): how long
    /// the split counts an item as new, so how far back the new-item pools must reach for every
    /// cold item to be in one.
    pub fn cold_window_hours(&self, d: &Dataset) -> i64 {
        let first = d
            .items
            .iter()
            .filter(|i| self.cold_items.contains(&i.item_id))
            .map(|i| i.publish_ts)
            .min()
            .unwrap_or(self.at);
        (self.at.saturating_sub(first) + 3_599_999)
            .div_euclid(3_600_000)
            .max(1)
    }

    /// Whether an event stays in training: not on a cold item, and a new user's only on their
    /// seed items.
    pub fn trains(&self, e: &Event) -> bool {
        if self.cold_items.contains(&e.item_id) {
            return false;
        }
        match self.seeds.get(&e.user_id) {
            Some(s) => s.contains(&e.item_id),
            None => !self.new_users.contains(&e.user_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coldstart_contracts::encoder::Item;
    use coldstart_contracts::profile::User;
    use coldstart_contracts::types::Action;

    fn data() -> Dataset {
        let items = (1..=10u64)
            .map(|i| Item {
                item_id: i,
                publish_ts: (i as i64 / 2) * 10, // ties in publish time, broken by id
                author_id: None,
                category: "c".into(),
                keywords: vec![],
                title: "t".into(),
                body: None,
                image_vec: None,
                quality: None,
                author_quality: None,
            })
            .collect();
        let users = (1..=10u64)
            .map(|u| User {
                user_id: u,
                signup_ts: u as i64,
                ..Default::default()
            })
            .collect();
        let ev = |u: u64, i: u64, ts: i64| Event {
            user_id: u,
            item_id: i,
            ts,
            action: Action::Like,
            dwell_ms: None,
            request_id: None,
        };
        Dataset {
            items,
            users,
            events: vec![
                ev(10, 9, 1),
                ev(10, 3, 5),
                ev(10, 2, 5),
                ev(10, 1, 6),
                ev(10, 4, 7),
                ev(1, 10, 90),
            ],
        }
    }

    /// A backtest may take a larger share of its users as new; an impossible share is refused.
    #[test]
    fn the_share_of_new_users_is_a_parameter() {
        let s = Split::compute_with(&data(), None, 0.3).unwrap();
        assert_eq!(
            s.new_users,
            BTreeSet::from([8, 9, 10]),
            "the newest 3 of 10"
        );
        assert_eq!(s, Split::compute_with(&data(), None, 0.3).unwrap());
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            let e = Split::compute_with(&data(), None, bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains("share of new users"), "{bad}: {e}");
        }
    }

    #[test]
    fn newest_items_and_users_by_time_then_id() {
        let s = Split::compute(&data(), None).unwrap();
        assert_eq!(s.cold_items, BTreeSet::from([9, 10]));
        assert_eq!(s.new_users, BTreeSet::from([10]));
        // user 10's first three warm events: item 9 is cold; (5, 2) before (5, 3)
        assert_eq!(s.seeds[&10], [2, 3, 1]);
        assert_eq!(s.at, 91);
        assert_eq!(
            s.cold_window_hours(&data()),
            1,
            "51 ms, rounded up to an hour"
        );
        assert!(!s.trains(&data().events[0]), "cold item");
        assert!(s.trains(&data().events[1]));
        assert!(
            !s.trains(&data().events[4]),
            "a new user's fourth warm event"
        );
        let again = Split::compute(&data(), Some(&s.to_file())).unwrap();
        assert_eq!(again, s, "the written split reads back as itself");
        let part = s.training_part(&data());
        assert_eq!(
            part.items.len(),
            7,
            "items published before the first cold one (ts 40; item 8 shares it)"
        );
        assert!(
            part.users.iter().all(|u| u.user_id != 10),
            "test users are not in it"
        );
        assert!(part
            .events
            .iter()
            .all(|e| e.user_id != 10 && !s.cold_items.contains(&e.item_id)));
    }

    #[test]
    fn overrides_are_checked_against_the_data() {
        let bad = |f: SplitFile| Split::compute(&data(), Some(&f)).unwrap_err().to_string();
        let e = bad(SplitFile {
            cold_items: Some(vec![1, 77]),
            ..Default::default()
        });
        assert!(e.contains("`cold_items`") && e.contains("77"), "{e}");
        let e = bad(SplitFile {
            new_users: Some(vec![55]),
            ..Default::default()
        });
        assert!(e.contains("`new_users`") && e.contains("55"), "{e}");
        let e = bad(SplitFile {
            new_user_seed_items: Some(BTreeMap::from([("3".to_string(), vec![1])])),
            ..Default::default()
        });
        assert!(e.contains("user 3 is not a new user"), "{e}");
        let e = bad(SplitFile {
            new_user_seed_items: Some(BTreeMap::from([("10".to_string(), vec![10])])),
            ..Default::default()
        });
        assert!(e.contains("item 10 is cold"), "{e}");
        let e = bad(SplitFile {
            at: Some(5),
            ..Default::default()
        });
        assert!(e.contains("`at`"), "{e}");
        let ok = Split::compute(
            &data(),
            Some(&SplitFile {
                cold_items: Some(vec![1]),
                ..Default::default()
            }),
        )
        .unwrap();
        assert_eq!(ok.cold_items, BTreeSet::from([1]));
    }
}
