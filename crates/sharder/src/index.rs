//! The in-memory index of one sharder: inverted lists keyed by (kind, key), each newest first and
//! bounded, and the forward index item → (publish time, category, keywords, cluster). Writers (the
//! store actor only) build a list's new version outside any lock and swap it in under a short write
//! lock; readers copy the few entries they need under one read lock per request and never wait on
//! I/O.

use coldstart_contracts::sharder::{Assignment, ItemScore, Posting};
use coldstart_runtime::routing::{list_key, owners};
use coldstart_runtime::{ServiceError, ServiceResult};
use parking_lot::RwLock;
use std::collections::HashMap;

/// Kinds of inverted lists.
pub const LIST_KINDS: [&str; 4] = ["category", "keyword", "cluster", "recent"];
/// The forward-index kind.
pub const ITEM_KIND: &str = "item";

/// One list entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Item.
    pub item_id: u64,
    /// Publish time, ms.
    pub publish_ts: i64,
}

/// What the forward index keeps of an item.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemMeta {
    /// Publish time, ms.
    pub publish_ts: i64,
    /// Category.
    pub category: String,
    /// Keywords.
    pub keywords: Vec<String>,
    /// Cluster list key `{model version}:{cluster}`, if the item was encoded.
    pub cluster: Option<String>,
    /// Its cluster list key under the model being rolled out, if it was published while one was
    /// staged (see [`Index::reassignment`]).
    pub next_cluster: Option<String>,
    /// Content vector under the model of `cluster`.
    pub vector: Option<Vec<f32>>,
    /// Content vector under the model of `next_cluster`.
    pub next_vector: Option<Vec<f32>>,
}

type ListKey = (String, String);

/// The slot of a list kind in [`Lists`].
fn kind_slot(kind: &str) -> Option<usize> {
    LIST_KINDS.iter().position(|k| *k == kind)
}

/// Lists by kind (one map per kind, so a lookup hashes the key only), then key. A list is an
/// exact-size boxed slice: no spare capacity, and no reference count for readers to bump — they
/// copy the few entries they want under the read lock. Keys are hashed with per-process random
/// seeds, since they come from published items.
struct Lists {
    by_kind: [HashMap<Box<str>, Box<[Entry]>, ahash::RandomState>; LIST_KINDS.len()],
}

impl Default for Lists {
    fn default() -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        let state =
            ahash::RandomState::with_seeds(rng.random(), rng.random(), rng.random(), rng.random());
        Self {
            by_kind: std::array::from_fn(|_| HashMap::with_hasher(state.clone())),
        }
    }
}

impl Lists {
    fn get(&self, kind: &str, key: &str) -> Option<&[Entry]> {
        self.by_kind[kind_slot(kind)?].get(key).map(|l| &**l)
    }

    /// Replaces a list, handing back the old one so that it is freed outside the lock.
    fn insert(&mut self, kind: &str, key: String, list: Box<[Entry]>) -> Option<Box<[Entry]>> {
        // kinds are checked before anything is applied (`check_postings`)
        let slot = kind_slot(kind)?;
        self.by_kind[slot].insert(key.into_boxed_str(), list)
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str, &[Entry])> {
        LIST_KINDS
            .iter()
            .zip(&self.by_kind)
            .flat_map(|(kind, m)| m.iter().map(move |(key, l)| (*kind, &**key, &**l)))
    }

    fn len(&self) -> usize {
        self.by_kind.iter().map(HashMap::len).sum()
    }
}

/// Lists and the forward index.
pub struct Index {
    lists: RwLock<Lists>,
    items: RwLock<HashMap<u64, ItemMeta>>,
    max_list_len: usize,
    recent_list_len: usize,
}

/// Sizes, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IndexStats {
    /// Lists.
    pub lists: usize,
    /// Entries over all lists.
    pub entries: usize,
    /// Forward-index items.
    pub items: usize,
    /// Heap bytes the lists hold: table slots (at capacity), keys and entries. Allocator overhead
    /// and memory freed but kept by the allocator are not in it (the process's RSS shows those).
    pub list_bytes: usize,
    /// Heap bytes the forward index holds, counted the same way.
    pub item_bytes: usize,
}

/// What re-filing the index under a content model version changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reassignment {
    /// Postings written (those this node did not hold already).
    pub postings: usize,
    /// Forward-index entries of held items that now name one of the version's clusters.
    pub items: usize,
    /// The version's cluster lists this node owns and built from the assignments.
    pub lists: usize,
    /// Held items the assignments do not cover (published after the model's forward index was
    /// computed, by an encoder still on the previous version): they stay in the cluster they were
    /// filed in, whose list is kept (`sharder.model_versions_kept`).
    pub unassigned: usize,
}

/// The version part of a cluster list key `{version}:{cluster}`.
pub fn cluster_version(key: &str) -> Option<&str> {
    key.rsplit_once(':').map(|(v, _)| v)
}

/// Checks that postings have a known kind and, for `item`, a decimal key equal to the item id.
pub fn check_postings(postings: &[Posting]) -> ServiceResult<()> {
    for (r, p) in postings.iter().enumerate() {
        if p.kind == ITEM_KIND {
            if p.key.parse::<u64>().ok() != Some(p.item_id) {
                return Err(ServiceError::bad_row(
                    r,
                    "key",
                    format!(
                        "item posting key {:?} is not its item id {}",
                        p.key, p.item_id
                    ),
                ));
            }
        } else if !LIST_KINDS.contains(&p.kind.as_str()) {
            return Err(ServiceError::bad_row(
                r,
                "kind",
                format!(
                    "unknown kind {:?}, expected one of item, {}",
                    p.kind,
                    LIST_KINDS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

impl Index {
    /// An empty index with list bounds.
    pub fn new(max_list_len: usize, recent_list_len: usize) -> Self {
        Self {
            lists: RwLock::default(),
            items: RwLock::default(),
            max_list_len,
            recent_list_len,
        }
    }

    /// Applies postings (already checked). Idempotent: an item already in a list is not added
    /// twice, so replaying a log or a replica's dump is safe.
    pub fn apply(&self, postings: &[Posting]) {
        let mut by_list: HashMap<ListKey, Vec<Entry>> = HashMap::new();
        let mut items = Vec::new();
        for p in postings {
            if p.kind == ITEM_KIND {
                items.push((
                    p.item_id,
                    ItemMeta {
                        publish_ts: p.publish_ts,
                        category: p.category.clone().unwrap_or_default(),
                        keywords: p.keywords.clone().unwrap_or_default(),
                        cluster: p.cluster.clone(),
                        next_cluster: p.next_cluster.clone(),
                        vector: p.vector.clone(),
                        next_vector: p.next_vector.clone(),
                    },
                ));
            } else {
                by_list
                    .entry((p.kind.clone(), p.key.clone()))
                    .or_default()
                    .push(Entry {
                        item_id: p.item_id,
                        publish_ts: p.publish_ts,
                    });
            }
        }
        if !items.is_empty() {
            self.items.write().extend(items);
        }
        for (key, mut fresh) in by_list {
            let bound = if key.0 == "recent" {
                self.recent_list_len
            } else {
                self.max_list_len
            };
            let mut ids: std::collections::HashSet<u64> = fresh.iter().map(|e| e.item_id).collect();
            if let Some(old) = self.lists.read().get(&key.0, &key.1) {
                fresh.extend(old.iter().filter(|e| !ids.contains(&e.item_id)));
            }
            fresh.sort_unstable_by(|a, b| {
                b.publish_ts
                    .cmp(&a.publish_ts)
                    .then(b.item_id.cmp(&a.item_id))
            });
            ids.clear();
            fresh.retain(|e| ids.insert(e.item_id));
            fresh.truncate(bound);
            let list = fresh.into_boxed_slice();
            let replaced = self.lists.write().insert(&key.0, key.1, list);
            drop(replaced);
        }
    }

    /// The postings this index does not hold yet, so that a catch-up dump (mostly what a
    /// restarted sharder already replayed from its own log) does not rewrite it all to the log.
    pub fn missing(&self, postings: Vec<Posting>) -> Vec<Posting> {
        let lists = self.lists.read();
        let items = self.items.read();
        let mut held: HashMap<(&str, &str), std::collections::HashSet<u64>> = HashMap::new();
        let mut out = Vec::new();
        for p in &postings {
            let new = if p.kind == ITEM_KIND {
                items.get(&p.item_id).is_none_or(|m| {
                    m.publish_ts != p.publish_ts
                        || m.cluster != p.cluster
                        || m.next_cluster != p.next_cluster
                        || m.vector != p.vector
                })
            } else {
                let ids = held
                    .entry((p.kind.as_str(), p.key.as_str()))
                    .or_insert_with(|| {
                        lists
                            .get(&p.kind, &p.key)
                            .map(|l| l.iter().map(|e| e.item_id).collect())
                            .unwrap_or_default()
                    });
                !ids.contains(&p.item_id)
            };
            if new {
                out.push(p.clone());
            }
        }
        out
    }

    /// The postings that re-file this index under content model `version` from its assignments:
    /// first the cluster lists this node owns (`owns` is asked with the list key), each the newest
    /// `max_list_len` of its items, then the forward-index entries of the items held here, so that
    /// once applied in order an entry never names a list not built here yet. Only what the index
    /// does not hold already, so running it again (after a restart) writes nothing.
    pub fn reassignment(
        &self,
        version: &str,
        assignments: &[Assignment],
        owns: impl Fn(&str) -> bool,
    ) -> (Vec<Posting>, Reassignment) {
        let mut stats = Reassignment::default();
        let mut order: Vec<&Assignment> = assignments.iter().collect();
        order.sort_unstable_by(|a, b| {
            a.cluster
                .cmp(&b.cluster)
                .then(b.publish_ts.cmp(&a.publish_ts))
                .then(b.item_id.cmp(&a.item_id))
        });
        let mut lists = Vec::new();
        let held = self.lists.read();
        for group in order.chunk_by(|a, b| a.cluster == b.cluster) {
            let key = format!("{version}:{}", group[0].cluster);
            if !owns(&list_key("cluster", &key)) {
                continue;
            }
            stats.lists += 1;
            // a full list (items filed under the staged version may have filled it) keeps only
            // what is newer than its oldest entry: writing the rest would be dropped again
            let floor = held
                .get("cluster", &key)
                .filter(|l| l.len() >= self.max_list_len)
                .and_then(|l| l.last())
                .map(|e| (e.publish_ts, e.item_id));
            let newer = |a: &&&Assignment| floor.is_none_or(|f| (a.publish_ts, a.item_id) > f);
            lists.extend(group.iter().take(self.max_list_len).filter(newer).map(|a| {
                list_posting(
                    "cluster",
                    &key,
                    &Entry {
                        item_id: a.item_id,
                        publish_ts: a.publish_ts,
                    },
                )
            }));
        }
        drop(held);
        let mut out = self.missing(lists);
        let by_item: HashMap<u64, &Assignment> =
            assignments.iter().map(|a| (a.item_id, a)).collect();
        for (&id, meta) in self.items.read().iter() {
            // the model's forward index first; else the cluster the encoder filed the item in
            // while the version was staged
            let staged = meta
                .next_cluster
                .as_deref()
                .filter(|k| cluster_version(k) == Some(version));
            // the vector moves with the cluster: one from another model would be meaningless
            let filed = match (by_item.get(&id), staged) {
                (Some(a), _) => Some((format!("{version}:{}", a.cluster), a.vector.clone())),
                (None, Some(k)) => Some((k.to_string(), meta.next_vector.clone())),
                (None, None) => None,
            };
            match filed {
                Some((key, vector)) => {
                    if meta.cluster.as_deref() != Some(key.as_str())
                        || meta.vector != vector
                        || staged.is_some()
                    {
                        stats.items += 1;
                        let mut p = item_posting(id, meta);
                        p.cluster = Some(key);
                        p.vector = vector;
                        // staged for this version: done with; for another one: still to come
                        p.next_cluster = meta.next_cluster.clone().filter(|_| staged.is_none());
                        p.next_vector = meta.next_vector.clone().filter(|_| staged.is_none());
                        out.push(p);
                    }
                }
                None => {
                    if meta.cluster.as_deref().and_then(cluster_version) != Some(version) {
                        stats.unassigned += 1;
                    }
                }
            }
        }
        stats.postings = out.len();
        (out, stats)
    }

    /// Drops the cluster lists of the given model versions; returns how many lists went.
    pub fn drop_cluster_versions(&self, versions: &[String]) -> usize {
        if versions.is_empty() {
            return 0;
        }
        let slot = kind_slot("cluster").expect("cluster is a list kind");
        let mut lists = self.lists.write();
        let cluster = &mut lists.by_kind[slot];
        let before = cluster.len();
        cluster
            .retain(|key, _| cluster_version(key).is_none_or(|v| !versions.iter().any(|d| d == v)));
        cluster.shrink_to_fit();
        before - cluster.len()
    }

    /// The newest `limit` entries of a list.
    pub fn read(&self, kind: &str, key: &str, limit: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        self.read_many([(kind, key, limit)], |_, e| out.extend_from_slice(e));
        out
    }

    /// Reads many lists under one read lock: `visit(i, entries)` gets the newest `limit` entries
    /// of the `i`-th query (nothing for a list that does not exist). Keep `visit` short: writers
    /// wait for it.
    pub fn read_many<'q>(
        &self,
        queries: impl IntoIterator<Item = (&'q str, &'q str, usize)>,
        mut visit: impl FnMut(usize, &[Entry]),
    ) {
        let lists = self.lists.read();
        for (i, (kind, key, limit)) in queries.into_iter().enumerate() {
            if let Some(l) = lists.get(kind, key) {
                visit(i, &l[..limit.min(l.len())]);
            }
        }
    }

    /// The dot product of `user` with the content vector of each of `ids` held here whose vector
    /// belongs to model `version` (unit vectors: their cosine); the rest are left out. One read
    /// lock, nothing cloned: recall asks this for up to a thousand candidates per request.
    pub fn similarity(&self, ids: &[u64], version: &str, user: &[f32]) -> Vec<ItemScore> {
        let items = self.items.read();
        ids.iter()
            .filter_map(|&id| {
                let m = items.get(&id)?;
                let v = m.vector.as_deref().filter(|v| v.len() == user.len())?;
                (m.cluster.as_deref().and_then(cluster_version) == Some(version)).then(|| {
                    ItemScore {
                        item_id: id,
                        score: v.iter().zip(user).map(|(a, b)| a * b).sum(),
                    }
                })
            })
            .collect()
    }

    /// Forward-index lookup.
    pub fn item(&self, item_id: u64) -> Option<ItemMeta> {
        self.items.read().get(&item_id).cloned()
    }

    /// Every posting whose key `requester` owns among `members` with replication `r`.
    pub fn owned_by(&self, requester: &str, members: &[String], r: usize) -> Vec<Posting> {
        let owns =
            |kind: &str, key: &str| owners(&list_key(kind, key), members, r).contains(&requester);
        let mut out = Vec::new();
        for (kind, key, list) in self.lists.read().iter() {
            if owns(kind, key) {
                out.extend(list.iter().map(|e| list_posting(kind, key, e)));
            }
        }
        for (id, meta) in self.items.read().iter() {
            let key = id.to_string();
            if owns(ITEM_KIND, &key) {
                out.push(item_posting(*id, meta));
            }
        }
        out
    }

    /// Everything, as postings (for snapshots).
    pub fn all(&self) -> Vec<Posting> {
        let mut out: Vec<Posting> = self
            .lists
            .read()
            .iter()
            .flat_map(|(kind, key, list)| {
                list.iter()
                    .map(move |e| list_posting(kind, key, e))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.extend(self.items.read().iter().map(|(id, m)| item_posting(*id, m)));
        out
    }

    /// Sizes.
    pub fn stats(&self) -> IndexStats {
        use std::mem::size_of;
        let lists = self.lists.read();
        let items = self.items.read();
        let slot = size_of::<(Box<str>, Box<[Entry]>)>() + 1;
        let item_slot = size_of::<(u64, ItemMeta)>() + 1;
        IndexStats {
            lists: lists.len(),
            entries: lists.iter().map(|(_, _, l)| l.len()).sum(),
            items: items.len(),
            list_bytes: lists
                .by_kind
                .iter()
                .map(|m| m.capacity() * slot)
                .sum::<usize>()
                + lists
                    .iter()
                    .map(|(_, k, l)| k.len() + size_of_val(l))
                    .sum::<usize>(),
            item_bytes: items.capacity() * item_slot
                + items
                    .values()
                    .map(|m| {
                        m.category.capacity()
                            + m.keywords.capacity() * size_of::<String>()
                            + m.keywords.iter().map(String::capacity).sum::<usize>()
                            + m.cluster.as_ref().map_or(0, String::capacity)
                            + m.vector.as_ref().map_or(0, |v| v.capacity() * 4)
                            + m.next_vector.as_ref().map_or(0, |v| v.capacity() * 4)
                    })
                    .sum::<usize>(),
        }
    }
}

/// A list entry as a posting.
pub fn list_posting(kind: &str, key: &str, e: &Entry) -> Posting {
    Posting {
        kind: kind.to_string(),
        key: key.to_string(),
        item_id: e.item_id,
        publish_ts: e.publish_ts,
        ..Default::default()
    }
}

/// A forward-index entry as a posting.
pub fn item_posting(id: u64, m: &ItemMeta) -> Posting {
    Posting {
        kind: ITEM_KIND.into(),
        key: id.to_string(),
        item_id: id,
        publish_ts: m.publish_ts,
        category: Some(m.category.clone()),
        keywords: Some(m.keywords.clone()),
        cluster: m.cluster.clone(),
        next_cluster: m.next_cluster.clone(),
        vector: m.vector.clone(),
        next_vector: m.next_vector.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kind: &str, key: &str, id: u64, ts: i64) -> Posting {
        Posting {
            kind: kind.into(),
            key: key.into(),
            item_id: id,
            publish_ts: ts,
            ..Default::default()
        }
    }

    #[test]
    fn lists_stay_newest_first_bounded_and_deduplicated() {
        let idx = Index::new(3, 10);
        idx.apply(&[p("category", "c", 1, 10), p("category", "c", 2, 30)]);
        idx.apply(&[p("category", "c", 3, 20), p("category", "c", 2, 30)]);
        let ids: Vec<u64> = idx
            .read("category", "c", 10)
            .iter()
            .map(|e| e.item_id)
            .collect();
        assert_eq!(ids, [2, 3, 1]);
        idx.apply(&[p("category", "c", 4, 40), p("category", "c", 5, 5)]);
        let ids: Vec<u64> = idx
            .read("category", "c", 10)
            .iter()
            .map(|e| e.item_id)
            .collect();
        assert_eq!(ids, [4, 2, 3], "bounded to 3, oldest dropped");
        assert_eq!(idx.read("category", "c", 1).len(), 1);
        assert!(idx.read("category", "other", 5).is_empty());
    }

    #[test]
    fn dumps_return_exactly_the_requesters_keys() {
        let idx = Index::new(100, 100);
        let members: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let posts: Vec<Posting> = (0..200)
            .map(|i| p("keyword", &format!("k{i}"), i, i as i64))
            .collect();
        idx.apply(&posts);
        let mine = idx.owned_by("a", &members, 1);
        for q in &mine {
            assert_eq!(owners(&list_key(&q.kind, &q.key), &members, 1), vec!["a"]);
        }
        let total: usize = ["a", "b", "c"]
            .iter()
            .map(|m| idx.owned_by(m, &members, 1).len())
            .sum();
        assert_eq!(total, 200);
    }

    #[test]
    fn missing_keeps_only_what_is_not_held() {
        let idx = Index::new(100, 100);
        idx.apply(&[p("category", "c", 1, 10)]);
        let m = idx.missing(vec![
            p("category", "c", 1, 10),
            p("category", "c", 2, 20),
            p("category", "d", 1, 10),
        ]);
        assert_eq!(
            m.iter()
                .map(|p| (p.key.as_str(), p.item_id))
                .collect::<Vec<_>>(),
            [("c", 2), ("d", 1)]
        );
    }

    fn item(id: u64, ts: i64, cluster: Option<&str>) -> Posting {
        Posting {
            category: Some("c".into()),
            keywords: Some(vec!["k".into()]),
            cluster: cluster.map(String::from),
            ..p("item", &id.to_string(), id, ts)
        }
    }

    #[test]
    fn reassignment_files_held_items_and_owned_lists_under_the_new_version() {
        let idx = Index::new(2, 10);
        // items 1..=4 filed under v1; item 5 published later under v1, unknown to v2's job
        let mut old: Vec<Posting> = (1..=5)
            .map(|i| Posting {
                vector: Some(vec![1.0, 0.0]),
                ..item(i, i as i64 * 10, Some("v1:0"))
            })
            .collect();
        old.extend((1..=5).map(|i| p("cluster", "v1:0", i, i as i64 * 10)));
        // item 6 was published while v2 was staged: filed under v1 and v2 by the encoder
        old.push(Posting {
            next_cluster: Some("v2:1".into()),
            next_vector: Some(vec![0.0, 6.0]),
            ..item(6, 60, Some("v1:0"))
        });
        old.push(p("cluster", "v2:1", 6, 60));
        idx.apply(&old);
        let asg: Vec<Assignment> = [(1, 0), (2, 1), (3, 1), (4, 1), (9, 1)]
            .iter()
            .map(|&(id, c)| Assignment {
                item_id: id,
                cluster: c,
                publish_ts: id as i64 * 10,
                vector: Some(vec![id as f32, 2.0]),
            })
            .collect();
        // this node owns v2:1 but not v2:0
        let owns = |k: &str| k.ends_with("v2:1");
        let (postings, stats) = idx.reassignment("v2", &asg, owns);
        assert_eq!(
            stats,
            Reassignment {
                postings: 2 + 5,
                items: 5,
                lists: 1,
                unassigned: 1,
            }
        );
        // lists come first, so that no entry names a list not built yet
        let first_item = postings.iter().position(|p| p.kind == ITEM_KIND).unwrap();
        assert!(postings[first_item..].iter().all(|p| p.kind == ITEM_KIND));
        idx.apply(&postings);
        let ids = |k: &str| -> Vec<u64> {
            idx.read("cluster", k, 10)
                .iter()
                .map(|e| e.item_id)
                .collect()
        };
        assert_eq!(ids("v2:1"), [9, 6], "newest first, bounded");
        assert_eq!(idx.item(6).unwrap().cluster.as_deref(), Some("v2:1"));
        assert_eq!(idx.item(6).unwrap().next_cluster, None, "staging is over");
        assert!(ids("v2:0").is_empty(), "not owned here");
        assert_eq!(idx.item(2).unwrap().cluster.as_deref(), Some("v2:1"));
        assert_eq!(idx.item(2).unwrap().category, "c", "metadata kept");
        assert_eq!(idx.item(5).unwrap().cluster.as_deref(), Some("v1:0"));
        // vectors move with the cluster: from the model's forward index, or the staged one
        assert_eq!(idx.item(2).unwrap().vector, Some(vec![2.0, 2.0]));
        assert_eq!(idx.item(6).unwrap().vector, Some(vec![0.0, 6.0]));
        assert_eq!(idx.item(6).unwrap().next_vector, None);
        assert_eq!(
            idx.item(5).unwrap().vector,
            Some(vec![1.0, 0.0]),
            "v1's, with v1's cluster"
        );
        // again: nothing left to write
        let (again, stats) = idx.reassignment("v2", &asg, owns);
        assert!(again.is_empty());
        assert_eq!(stats.unassigned, 1);
        // retiring v1 drops its lists and nothing else
        assert_eq!(idx.drop_cluster_versions(&["v1".into()]), 1);
        assert!(ids("v1:0").is_empty());
        assert_eq!(ids("v2:1"), [9, 6]);
    }

    #[test]
    fn unknown_kinds_are_refused() {
        assert!(check_postings(&[p("colour", "red", 1, 1)])
            .unwrap_err()
            .text()
            .contains("unknown kind"));
        assert!(check_postings(&[p("item", "2", 1, 1)]).is_err());
        check_postings(&[p("item", "1", 1, 1), p("recent", "", 1, 1)]).unwrap();
    }
}
