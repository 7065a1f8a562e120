//! Co-engagement neighbours: per item, the items the same users engaged, by the cosine of their
//! engagement counts (`c_ij / sqrt(n_i · n_j)`, item-CF's similarity), the best `n` of each. The
//! two-tower model carries them from the training it was fitted on, so that a warming user's
//! channel can add what their first items were engaged with to what the towers place near them.

use std::collections::HashMap;

/// Items a heavy user contributes to the counts at most (their latest): a user with thousands
/// of engagements would add millions of pairs and tell little about each.
pub const MAX_ITEMS_PER_USER: usize = 300;

/// Per item, its nearest items by co-engagement, best first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Neighbors {
    of: HashMap<u64, Vec<(u64, f32)>>,
}

impl Neighbors {
    /// From `engagements` (user, item) in time order: each user's distinct items (their latest
    /// [`MAX_ITEMS_PER_USER`]), every pair of them counted once per user, and per item the `n`
    /// best by cosine (ties: lower id first). Items engaged by a single user have none.
    pub fn build(engagements: &[(u64, u64)], n: usize) -> Self {
        // dense indices for items and users, so that counting is array increments
        let mut item_index: HashMap<u64, u32> = HashMap::new();
        let mut ids: Vec<u64> = Vec::new();
        let mut user_index: HashMap<u64, usize> = HashMap::new();
        let mut baskets: Vec<Vec<u32>> = Vec::new();
        for &(u, i) in engagements {
            let ii = *item_index.entry(i).or_insert_with(|| {
                ids.push(i);
                (ids.len() - 1) as u32
            });
            let ui = *user_index.entry(u).or_insert_with(|| {
                baskets.push(Vec::new());
                baskets.len() - 1
            });
            baskets[ui].push(ii);
        }
        // each user's distinct items, their latest first, at most MAX_ITEMS_PER_USER
        for b in &mut baskets {
            b.reverse();
            let mut seen = std::collections::HashSet::new();
            b.retain(|i| seen.insert(*i));
            b.truncate(MAX_ITEMS_PER_USER);
        }
        let items = ids.len();
        let mut users_of: Vec<Vec<u32>> = vec![Vec::new(); items];
        for (u, b) in baskets.iter().enumerate() {
            for &i in b {
                users_of[i as usize].push(u as u32);
            }
        }
        // per item: co-engagement counts over its users' baskets in one scratch row
        let mut count = vec![0u32; items];
        let mut touched: Vec<u32> = Vec::new();
        let mut of = HashMap::new();
        for i in 0..items {
            for &u in &users_of[i] {
                for &j in &baskets[u as usize] {
                    if j as usize != i {
                        if count[j as usize] == 0 {
                            touched.push(j);
                        }
                        count[j as usize] += 1;
                    }
                }
            }
            let ni = users_of[i].len() as f32;
            let mut best: Vec<(u64, f32)> = touched
                .iter()
                .map(|&j| {
                    let c = count[j as usize] as f32;
                    (
                        ids[j as usize],
                        c / (ni * users_of[j as usize].len() as f32).sqrt(),
                    )
                })
                .collect();
            for &j in &touched {
                count[j as usize] = 0;
            }
            touched.clear();
            let order = |a: &(u64, f32), b: &(u64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
            if best.len() > n && n > 0 {
                best.select_nth_unstable_by(n - 1, order);
                best.truncate(n);
            }
            best.sort_by(order);
            best.truncate(n);
            if !best.is_empty() {
                of.insert(ids[i], best);
            }
        }
        Self { of }
    }

    /// From stored rows (an item and its neighbours, best first), as [`Neighbors::rows`] gives
    /// them.
    pub fn from_rows(rows: impl IntoIterator<Item = (u64, Vec<(u64, f32)>)>) -> Self {
        Self {
            of: rows.into_iter().filter(|r| !r.1.is_empty()).collect(),
        }
    }

    /// Every item with neighbours, by id, with them (for storing).
    pub fn rows(&self) -> Vec<(u64, &[(u64, f32)])> {
        let mut r: Vec<(u64, &[(u64, f32)])> =
            self.of.iter().map(|(i, v)| (*i, v.as_slice())).collect();
        r.sort_unstable_by_key(|x| x.0);
        r
    }

    /// `item`'s neighbours, best first (none for an item not seen in training).
    pub fn of(&self, item: u64) -> &[(u64, f32)] {
        self.of.get(&item).map_or(&[], Vec::as_slice)
    }

    /// Items with neighbours.
    pub fn len(&self) -> usize {
        self.of.len()
    }

    /// Whether no item has neighbours.
    pub fn is_empty(&self) -> bool {
        self.of.is_empty()
    }

    /// Item-CF from `seeds` (item, weight): each item's summed weighted similarity to them,
    /// the seeds themselves left out; at most `n`, best first (ties: lower id).
    pub fn score(&self, seeds: &[(u64, f32)], n: usize) -> Vec<(u64, f32)> {
        let mut score: HashMap<u64, f32> = HashMap::new();
        for &(s, w) in seeds {
            for &(j, sim) in self.of(s) {
                *score.entry(j).or_default() += w * sim;
            }
        }
        for (s, _) in seeds {
            score.remove(s);
        }
        let mut best: Vec<(u64, f32)> = score.into_iter().collect();
        best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        best.truncate(n);
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_co_engagement_counts() {
        // users 1 and 2 engage items 10 and 11; user 3 engages 10 and 12; 13 by one user alone
        let e = [
            (1, 10),
            (1, 11),
            (2, 10),
            (2, 11),
            (2, 11), // a repeat counts once
            (3, 10),
            (3, 12),
            (4, 13),
        ];
        let nb = Neighbors::build(&e, 5);
        // 10: engaged by 3 users, 11 by 2 (both with 10), 12 by 1
        let of10 = nb.of(10);
        assert_eq!(of10[0].0, 11);
        assert!((of10[0].1 - 2.0 / (3.0f32 * 2.0).sqrt()).abs() < 1e-6);
        assert_eq!(of10[1].0, 12);
        assert!((of10[1].1 - 1.0 / 3.0f32.sqrt()).abs() < 1e-6);
        assert!(nb.of(13).is_empty() && nb.of(99).is_empty());
        assert_eq!(Neighbors::build(&e, 1).of(10).len(), 1, "the best n only");
        // item-CF from seeds: 11 and 12 from seed 10; the seed itself is left out
        let s = nb.score(&[(10, 1.0)], 10);
        assert_eq!(s.iter().map(|x| x.0).collect::<Vec<_>>(), vec![11, 12]);
        let s = nb.score(&[(10, 1.0), (11, 3.0)], 10);
        assert_eq!(s[0].0, 12, "11 is a seed");
        // the same as counting every pair of every user's items directly
        let mut e = Vec::new();
        let mut x = 7u64;
        for _ in 0..3000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            e.push(((x >> 33) % 60, (x >> 13) % 45));
        }
        let fast = Neighbors::build(&e, 8);
        let mut baskets: HashMap<u64, std::collections::BTreeSet<u64>> = HashMap::new();
        for &(u, i) in &e {
            baskets.entry(u).or_default().insert(i);
        }
        let users = |i: u64| baskets.values().filter(|b| b.contains(&i)).count() as f32;
        for i in 0..45u64 {
            let mut want: Vec<(u64, f32)> = (0..45u64)
                .filter(|&j| j != i)
                .filter_map(|j| {
                    let c = baskets
                        .values()
                        .filter(|b| b.contains(&i) && b.contains(&j))
                        .count();
                    (c > 0).then(|| (j, c as f32 / (users(i) * users(j)).sqrt()))
                })
                .collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            want.truncate(8);
            let got = fast.of(i);
            assert_eq!(got.len(), want.len(), "item {i}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.0, w.0, "item {i}: {got:?} vs {want:?}");
                assert!((g.1 - w.1).abs() < 1e-6);
            }
        }
        // stored rows give the same table back
        let back = Neighbors::from_rows(nb.rows().into_iter().map(|(i, v)| (i, v.to_vec())));
        assert_eq!(back, nb);
    }
}
