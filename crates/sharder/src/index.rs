//! The in-memory index of one sharder: inverted lists keyed by (kind, key), each newest first and
//! bounded, and the forward index item → (publish time, category, keywords, cluster). Writers (the
//! store actor only) build a list's new version outside any lock and swap it in under a short write
//! lock; readers copy the few entries they need under one read lock per request and never wait on
//! I/O.

use crate::pools::Pools;
use coldstart_contracts::sharder::{
    Assignment, ItemRow, ItemScore, ListEntry, Posting, TowerVector,
};
use coldstart_contracts::types::{ClusterKey, ListKind};
use coldstart_runtime::routing::{list_key, owners};
use parking_lot::RwLock;
use std::collections::HashMap;

/// One list entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Item.
    pub item_id: u64,
    /// Publish time, ms.
    pub publish_ts: i64,
}

type ListKey = (ListKind, String);

/// Lists by kind (one map per kind, so a lookup hashes the key only), then key. A list is an
/// exact-size boxed slice: no spare capacity, and no reference count for readers to bump — they
/// copy the few entries they want under the read lock. Keys are hashed with per-process random
/// seeds, since they come from published items.
struct Lists {
    by_kind: [HashMap<Box<str>, Box<[Entry]>, ahash::RandomState>; ListKind::ALL.len()],
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
    fn get(&self, kind: ListKind, key: &str) -> Option<&[Entry]> {
        self.by_kind[kind.index()].get(key).map(|l| &**l)
    }

    /// Replaces a list, handing back the old one so that it is freed outside the lock.
    fn insert(&mut self, kind: ListKind, key: String, list: Box<[Entry]>) -> Option<Box<[Entry]>> {
        self.by_kind[kind.index()].insert(key.into_boxed_str(), list)
    }

    fn iter(&self) -> impl Iterator<Item = (ListKind, &str, &[Entry])> {
        ListKind::ALL
            .into_iter()
            .zip(&self.by_kind)
            .flat_map(|(kind, m)| m.iter().map(move |(key, l)| (kind, &**key, &**l)))
    }

    fn len(&self) -> usize {
        self.by_kind.iter().map(HashMap::len).sum()
    }
}

/// Lists, the forward index and the new-item pools.
pub struct Index {
    lists: RwLock<Lists>,
    items: RwLock<HashMap<u64, ItemRow>>,
    pools: RwLock<Pools>,
    /// The two-tower model this sharder files the pools under (`None` before etcd names one).
    pub tower: coldstart_artifact::TwoTowerSlot,
    /// A staged two-tower model (`models/two-tower-next`) whose pools are built beside the
    /// running one's, so that aggregators find them complete on every sharder when it is
    /// activated.
    pub tower_next: coldstart_artifact::TwoTowerSlot,
    max_list_len: usize,
    recent_list_len: usize,
}

/// Sizes, for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IndexStats {
    /// Lists.
    pub lists: usize,
    /// Entries over all lists.
    pub entries: usize,
    /// Forward-index items.
    pub items: usize,
    /// Of them, those filed in no cluster (`coldstart refile` files them).
    pub unfiled: usize,
    /// Heap bytes the lists hold: table slots (at capacity), keys and entries. Allocator overhead
    /// and memory freed but kept by the allocator are not in it (the process's RSS shows those).
    pub list_bytes: usize,
    /// Heap bytes the forward index holds, counted the same way.
    pub item_bytes: usize,
    /// Vectors in the new-item pools, per two-tower version held.
    pub pools: std::collections::BTreeMap<String, usize>,
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

impl Index {
    /// An empty index with list bounds and the default pools.
    pub fn new(max_list_len: usize, recent_list_len: usize) -> Self {
        Self::with_pools(max_list_len, recent_list_len, Pools::default())
    }

    /// An empty index with list bounds and these (empty) pools.
    pub fn with_pools(max_list_len: usize, recent_list_len: usize, pools: Pools) -> Self {
        Self {
            lists: RwLock::default(),
            items: RwLock::default(),
            pools: RwLock::new(pools),
            tower: Default::default(),
            tower_next: Default::default(),
            max_list_len,
            recent_list_len,
        }
    }

    /// Applies postings (checked as they were decoded). Idempotent: an item already in a list
    /// is not added twice, so replaying a log or a replica's dump is safe.
    pub fn apply(&self, postings: &[Posting]) {
        let mut by_list: HashMap<ListKey, Vec<Entry>> = HashMap::new();
        let mut items = Vec::new();
        for p in postings {
            match p {
                Posting::Item(r) => items.push((r.item_id, r.clone())),
                Posting::List(e) => {
                    by_list
                        .entry((e.kind, e.key.clone()))
                        .or_default()
                        .push(Entry {
                            item_id: e.item_id,
                            publish_ts: e.publish_ts,
                        })
                }
            }
        }
        if !items.is_empty() {
            // each row is filed under the running model and the staged one; a row's own vector
            // (from its encoder) serves when it is of that version, else the sharder computes it
            // from the row (an encoder that has not swapped yet, a replayed log)
            let models = self.tower_models();
            let mut filed: Vec<(u64, i64, Vec<Option<TowerVector>>)> = Vec::new();
            for (id, r) in &items {
                let per_model = models
                    .iter()
                    .map(|t| match &r.tower {
                        Some(v) if v.version == t.version => Some(v.clone()),
                        _ => tower_vector(t, r),
                    })
                    .collect();
                filed.push((*id, r.publish_ts, per_model));
            }
            let mut pools = self.pools.write();
            for ((id, ts, per_model), (_, r)) in filed.iter().zip(&items) {
                // checked before the write was logged (`check_towers`); a row replayed from an
                // older log that no longer fits is left out of the pools, not of the index
                let refused = if models.is_empty() {
                    match &r.tower {
                        Some(v) => pools.put(*id, *ts, v).err(),
                        None => {
                            pools.take(*id, None);
                            None
                        }
                    }
                } else {
                    let mut refused = None;
                    for (t, v) in models.iter().zip(per_model) {
                        match v {
                            Some(v) => refused = pools.put(*id, *ts, v).err().or(refused),
                            None => pools.take(*id, Some(&t.version)),
                        }
                    }
                    refused
                };
                if let Some(e) = refused {
                    tracing::warn!(error = %e, "two-tower vector left out of the pools");
                }
            }
            drop(pools);
            self.items.write().extend(items);
        }
        for (key, mut fresh) in by_list {
            let bound = if key.0 == ListKind::Recent {
                self.recent_list_len
            } else {
                self.max_list_len
            };
            // within one call the latest posting of an item wins, as if applied one by one (a
            // replay applies a whole batch of the log at once)
            let mut ids: std::collections::HashSet<u64> = std::collections::HashSet::new();
            fresh.reverse();
            fresh.retain(|e| ids.insert(e.item_id));
            if let Some(old) = self.lists.read().get(key.0, &key.1) {
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
            let replaced = self.lists.write().insert(key.0, key.1, list);
            drop(replaced);
        }
    }

    /// The postings this index does not hold yet, so that a catch-up dump (mostly what a
    /// restarted sharder already replayed from its own log) does not rewrite it all to the log.
    pub fn missing(&self, postings: Vec<Posting>) -> Vec<Posting> {
        let lists = self.lists.read();
        let items = self.items.read();
        let mut held: HashMap<(ListKind, &str), std::collections::HashSet<u64>> = HashMap::new();
        let mut out = Vec::new();
        for p in &postings {
            let new = match p {
                Posting::Item(r) => items.get(&r.item_id).is_none_or(|m| {
                    m.publish_ts != r.publish_ts
                        || m.cluster != r.cluster
                        || m.next_cluster != r.next_cluster
                        || m.vector != r.vector
                        || m.tower != r.tower
                }),
                Posting::List(e) => {
                    let ids = held.entry((e.kind, e.key.as_str())).or_insert_with(|| {
                        lists
                            .get(e.kind, &e.key)
                            .map(|l| l.iter().map(|e| e.item_id).collect())
                            .unwrap_or_default()
                    });
                    !ids.contains(&e.item_id)
                }
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
            let key = ClusterKey::new(version, group[0].cluster).to_string();
            if !owns(&list_key(ListKind::Cluster.as_str(), &key)) {
                continue;
            }
            stats.lists += 1;
            // a full list (items filed under the staged version may have filled it) keeps only
            // what is newer than its oldest entry: writing the rest would be dropped again
            let floor = held
                .get(ListKind::Cluster, &key)
                .filter(|l| l.len() >= self.max_list_len)
                .and_then(|l| l.last())
                .map(|e| (e.publish_ts, e.item_id));
            let newer = |a: &&&Assignment| floor.is_none_or(|f| (a.publish_ts, a.item_id) > f);
            lists.extend(group.iter().take(self.max_list_len).filter(newer).map(|a| {
                Posting::List(ListEntry::new(
                    ListKind::Cluster,
                    key.as_str(),
                    a.item_id,
                    a.publish_ts,
                ))
            }));
        }
        drop(held);
        let mut out = self.missing(lists);
        let by_item: HashMap<u64, &Assignment> =
            assignments.iter().map(|a| (a.item_id, a)).collect();
        for (&id, meta) in self.items.read().iter() {
            // the model's forward index first; else the cluster the encoder filed the item in
            // while the version was staged
            let staged = meta.next_cluster.as_ref().filter(|k| k.version == version);
            // the vector moves with the cluster: one from another model would be meaningless
            let filed = match (by_item.get(&id), staged) {
                (Some(a), _) => Some((ClusterKey::new(version, a.cluster), a.vector.clone())),
                (None, Some(k)) => Some((k.clone(), meta.next_vector.clone())),
                (None, None) => None,
            };
            match filed {
                Some((key, vector)) => {
                    if meta.cluster.as_ref() != Some(&key)
                        || meta.vector != vector
                        || staged.is_some()
                    {
                        stats.items += 1;
                        out.push(Posting::Item(ItemRow {
                            cluster: Some(key),
                            vector,
                            // staged for this version: done with; for another one: still to come
                            next_cluster: meta.next_cluster.clone().filter(|_| staged.is_none()),
                            next_vector: meta.next_vector.clone().filter(|_| staged.is_none()),
                            ..meta.clone()
                        }));
                    }
                }
                None => {
                    if meta.cluster.as_ref().map(|c| c.version.as_str()) != Some(version) {
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
        let mut lists = self.lists.write();
        let cluster = &mut lists.by_kind[ListKind::Cluster.index()];
        let before = cluster.len();
        cluster.retain(|key, _| {
            ClusterKey::version_of(key).is_none_or(|v| !versions.iter().any(|d| d == v))
        });
        cluster.shrink_to_fit();
        before - cluster.len()
    }

    /// The newest `limit` entries of a list.
    pub fn read(&self, kind: ListKind, key: &str, limit: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        self.read_many([(kind, key, limit)], None, |_, e| out.extend_from_slice(e));
        out
    }

    /// Reads many lists under one read lock: `visit(i, entries)` gets the newest `limit` entries
    /// of the `i`-th query published at or before `until` (nothing for a list that does not
    /// exist). Keep `visit` short: writers
    /// wait for it.
    pub fn read_many<'q>(
        &self,
        queries: impl IntoIterator<Item = (ListKind, &'q str, usize)>,
        until: Option<i64>,
        mut visit: impl FnMut(usize, &[Entry]),
    ) {
        let lists = self.lists.read();
        for (i, (kind, key, limit)) in queries.into_iter().enumerate() {
            if let Some(l) = lists.get(kind, key) {
                // newest first: skip what was published after `until`
                let from = until.map_or(0, |u| l.partition_point(|e| e.publish_ts > u));
                visit(i, &l[from..(from + limit).min(l.len())]);
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
                (m.cluster.as_ref().is_some_and(|c| c.version == version)).then(|| ItemScore {
                    item_id: id,
                    score: v.iter().zip(user).map(|(a, b)| a * b).sum(),
                })
            })
            .collect()
    }

    /// Checks the two-tower vectors of a write against the pools before it is logged: a vector
    /// of a version must have that version's dimension (NaNs are refused when decoding).
    pub fn check_towers(&self, postings: &[Posting]) -> coldstart_runtime::ServiceResult<()> {
        let pools = self.pools.read();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (r, p) in postings.iter().enumerate() {
            let Posting::Item(ItemRow { tower: Some(t), .. }) = p else {
                continue;
            };
            let want = pools
                .dim(&t.version)
                .or_else(|| seen.get(t.version.as_str()).copied());
            if let Some(d) = want.filter(|&d| d != t.vector.len()) {
                return Err(coldstart_runtime::ServiceError::bad_row(
                    r,
                    "tower_vector",
                    format!(
                        "{} values, while model {}'s pool holds vectors of {d}",
                        t.vector.len(),
                        t.version
                    ),
                ));
            }
            seen.entry(&t.version).or_insert(t.vector.len());
        }
        Ok(())
    }

    /// The best `k` items of each new-item pool at `at` for `user` under model `version`.
    pub fn pools(
        &self,
        version: &str,
        user: &[f32],
        at: i64,
        since: Option<i64>,
        k: usize,
    ) -> coldstart_runtime::ServiceResult<Vec<coldstart_contracts::sharder::PoolHit>> {
        let pools = self.pools.read();
        if let Some(d) = pools.dim(version).filter(|&d| d != user.len()) {
            return Err(coldstart_runtime::ServiceError::invalid(format!(
                "field `user`: {} values, while model {version}'s pool holds vectors of {d} (a model whose dimension disagrees with the pools)",
                user.len()
            )));
        }
        pools
            .search(version, user, at, since, k)
            .map_err(|e| coldstart_runtime::ServiceError::invalid(format!("field `user`: {e}")))
    }

    /// The two-tower models rows are filed under: the running one, then a staged one of
    /// another version.
    fn tower_models(&self) -> Vec<std::sync::Arc<coldstart_artifact::TwoTowerModel>> {
        let mut models: Vec<_> = self.tower.load_full().into_iter().collect();
        if let Some(next) = self.tower_next.load_full() {
            if models.iter().all(|m| m.version != next.version) {
                models.push(next);
            }
        }
        models
    }

    /// Files the new-item pools under two-tower model `t`: every item held that the pools could
    /// hold gets its vector under `t` (its own ID if it graduated in `t`'s training, else the
    /// default); other versions' pools are left as they are (`keep_tower_versions`). The pools
    /// are derived state: rebuilt from the forward index, nothing is logged. Returns the items
    /// filed. CPU work: call it off the async runtime.
    pub fn refile_towers(&self, t: &coldstart_artifact::TwoTowerModel) -> usize {
        let window = self.pools.read().window_ms();
        let rows: Vec<ItemRow> = {
            let items = self.items.read();
            let newest = items.values().map(|r| r.publish_ts).max().unwrap_or(0);
            items
                .values()
                .filter(|r| r.publish_ts > newest - window)
                .cloned()
                .collect()
        };
        let vectors: Vec<(u64, i64, Vec<f32>)> = rows
            .iter()
            .filter_map(|r| Some((r.item_id, r.publish_ts, tower_vector(t, r)?.vector)))
            .collect();
        self.pools.write().rebuild(&t.version, vectors)
    }

    /// Drops the pools of every two-tower version but `keep`'s.
    pub fn keep_tower_versions(&self, keep: &[&str]) {
        self.pools.write().retain_versions(keep);
    }

    /// The two-tower versions the pools hold, sorted.
    pub fn tower_versions(&self) -> Vec<String> {
        self.pools.read().versions()
    }

    /// Forward-index lookup.
    pub fn item(&self, item_id: u64) -> Option<ItemRow> {
        self.items.read().get(&item_id).cloned()
    }

    /// Held items filed in no cluster (published while no content model ran, or outside the
    /// forward index of the first one), by id above `after`: at most `limit` of them, lowest
    /// first, as (item, publish time); and how many there are in all.
    pub fn unfiled(&self, after: Option<u64>, limit: usize) -> (Vec<(u64, i64)>, usize) {
        let items = self.items.read();
        let mut all: Vec<(u64, i64)> = items
            .values()
            .filter(|r| r.cluster.is_none())
            .map(|r| (r.item_id, r.publish_ts))
            .collect();
        let total = all.len();
        all.retain(|r| after.is_none_or(|a| r.0 > a));
        if all.len() > limit {
            all.select_nth_unstable(limit);
            all.truncate(limit);
        }
        all.sort_unstable();
        (all, total)
    }

    /// Every posting whose key `requester` owns among `members` with replication `r`.
    pub fn owned_by(&self, requester: &str, members: &[String], r: usize) -> Vec<Posting> {
        let owns = |key: &str| owners(key, members, r).contains(&requester);
        let mut out = Vec::new();
        for (kind, key, list) in self.lists.read().iter() {
            if owns(&list_key(kind.as_str(), key)) {
                out.extend(list.iter().map(|e| list_posting(kind, key, e)));
            }
        }
        for (id, meta) in self.items.read().iter() {
            if owns(&ItemRow::routing_key(*id)) {
                out.push(Posting::Item(meta.clone()));
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
        out.extend(self.items.read().values().map(|m| Posting::Item(m.clone())));
        out
    }

    /// Sizes.
    pub fn stats(&self) -> IndexStats {
        use std::mem::size_of;
        let lists = self.lists.read();
        let items = self.items.read();
        let slot = size_of::<(Box<str>, Box<[Entry]>)>() + 1;
        let item_slot = size_of::<(u64, ItemRow)>() + 1;
        let pools = self.pools.read();
        IndexStats {
            pools: pools
                .versions()
                .into_iter()
                .map(|v| {
                    let n = pools.len(&v);
                    (v, n)
                })
                .collect(),
            lists: lists.len(),
            entries: lists.iter().map(|(_, _, l)| l.len()).sum(),
            items: items.len(),
            unfiled: items.values().filter(|r| r.cluster.is_none()).count(),
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
                            + m.cluster.as_ref().map_or(0, |c| c.version.capacity())
                            + m.next_cluster.as_ref().map_or(0, |c| c.version.capacity())
                            + m.vector.as_ref().map_or(0, |v| v.capacity() * 4)
                            + m.next_vector.as_ref().map_or(0, |v| v.capacity() * 4)
                    })
                    .sum::<usize>(),
        }
    }
}

/// An item's vector under two-tower model `t`, from what its forward-index row holds: category,
/// keywords and content vector (when of the dimension `t` reads). `None` when the tower cannot
/// place it.
fn tower_vector(t: &coldstart_artifact::TwoTowerModel, r: &ItemRow) -> Option<TowerVector> {
    let side = t.item_side(r);
    let v = t.model.vector_of(&side).ok()?;
    Some(TowerVector {
        version: t.version.clone(),
        vector: v.as_slice().to_vec(),
    })
}

/// A list entry as a posting.
pub fn list_posting(kind: ListKind, key: &str, e: &Entry) -> Posting {
    Posting::List(ListEntry::new(kind, key, e.item_id, e.publish_ts))
}

#[cfg(test)]
mod tests;
