//! The sharder client: replicated routing of postings and reads. A key (list kind and key) lives
//! on its `replication` rendezvous owners among the live sharders. Writes go to every owner,
//! falling back down the ranking when an owner fails; reads cover the keys with as few sharders
//! as possible (a call is a round trip), prefer serving owners, rotate ties, and fail over to the
//! next owner.

use super::proto::{
    sharder_command, sharder_ticket, DumpRequest, IndexPostings, ItemMetaRequest, ListQuery,
    ListsRequest, PoolsRequest, SharderCommand, SharderTicket, SimilarityRequest,
};
use super::{ItemRow, ItemScore, ListHit, PoolHit, Posting, SharderProtocol};
use arrow::record_batch::RecordBatch;
use coldstart_runtime::cluster::Cluster;
use coldstart_runtime::discovery::{MemberState, Membership, Role};
use coldstart_runtime::routing::{list_key, owners, rank};
use coldstart_runtime::{ServiceError, ServiceResult};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tracing::warn;

/// Calls the sharders that own the keys at hand.
#[derive(Clone)]
pub struct SharderClient {
    cluster: Arc<Cluster>,
}

impl SharderClient {
    /// A client routing by `cluster` (its replication factor included).
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }

    async fn sharders(&self) -> (Arc<Membership>, Vec<String>) {
        let m = self.cluster.membership_with(Role::Sharder, false).await;
        let ids = m
            .role(Role::Sharder)
            .iter()
            .map(|m| m.node_id.clone())
            .collect();
        (m, ids)
    }

    /// Writes postings to every owner of their keys. A posting whose owner fails goes to the next
    /// sharder in its ranking, so it still lands on `replication` live sharders when it can; the
    /// call fails only if some posting reached none.
    pub async fn write_postings(&self, postings: &[Posting]) -> ServiceResult<usize> {
        let (m, ids) = self.sharders().await;
        if ids.is_empty() {
            return Err(ServiceError::unavailable("no sharder member"));
        }
        let r = self.cluster.replication().min(ids.len());
        let ranked: Vec<Vec<&str>> = postings
            .iter()
            .map(|p| rank(&p.routing_key(), &ids))
            .collect();
        let mut need = vec![r; postings.len()];
        let mut next = vec![0usize; postings.len()];
        let mut copies = vec![0usize; postings.len()];
        let mut failed: HashSet<&str> = HashSet::new();
        let cmd = SharderCommand {
            kind: Some(sharder_command::Kind::IndexPostings(IndexPostings {})),
        };
        loop {
            let mut plan: HashMap<&str, Vec<usize>> = HashMap::new();
            for i in 0..postings.len() {
                while need[i] > 0 && next[i] < ranked[i].len() {
                    let node = ranked[i][next[i]];
                    next[i] += 1;
                    if !failed.contains(node) {
                        plan.entry(node).or_default().push(i);
                        need[i] -= 1;
                    }
                }
            }
            if plan.is_empty() {
                break;
            }
            let calls = plan.into_iter().map(|(node, idx)| {
                let addr = m
                    .get(Role::Sharder, node)
                    .map(|m| m.flight_addr.clone())
                    .unwrap_or_default();
                let batch = Posting::to_batch(
                    &idx.iter().map(|&i| postings[i].clone()).collect::<Vec<_>>(),
                );
                async move {
                    (
                        node,
                        idx,
                        self.cluster
                            .pool
                            .put::<SharderProtocol>(&addr, &cmd, vec![batch])
                            .await,
                    )
                }
            });
            let mut any_failed = false;
            for (node, idx, res) in futures::future::join_all(calls).await {
                match res {
                    Ok(_) => idx.iter().for_each(|&i| copies[i] += 1),
                    Err(e) => {
                        warn!(node_id = node, error = %e, "sharder write failed, falling back to the next owner");
                        failed.insert(node);
                        any_failed = true;
                        idx.iter().for_each(|&i| need[i] += 1);
                    }
                }
            }
            if !any_failed {
                break;
            }
        }
        if let Some(i) = copies.iter().position(|&c| c == 0) {
            return Err(ServiceError::unavailable(format!(
                "no sharder accepted the posting for key {:?} (item {})",
                postings[i].routing_key(),
                postings[i].item_id()
            )));
        }
        Ok(copies.iter().copied().min().unwrap_or(0))
    }

    /// Reads keyed data from the sharders: one Flight call per sharder, in parallel, each key to
    /// the first serving owner; a failed sharder's keys are retried on the next owner. `ticket`
    /// builds the request for a subset of keys (by index), `decode` turns one answer back into
    /// rows for those indices.
    async fn read_owned<R>(
        &self,
        n: usize,
        routing_key: impl Fn(usize) -> String,
        ticket: impl Fn(&[usize]) -> SharderTicket,
        decode: impl Fn(&[RecordBatch], &[usize]) -> ServiceResult<Vec<R>>,
    ) -> ServiceResult<Vec<R>> {
        let (m, ids) = self.sharders().await;
        if ids.is_empty() {
            return Err(ServiceError::unavailable("no sharder member"));
        }
        let r = self.cluster.replication().min(ids.len()).max(1);
        let serving = |id: &str| {
            m.get(Role::Sharder, id)
                .is_some_and(|m| m.state == MemberState::Serving)
        };
        // with no more sharders than copies every sharder owns every key: nothing to rank
        let everyone: Vec<&str> = ids.iter().map(String::as_str).collect();
        let owners: Vec<Vec<&str>> = if ids.len() <= r {
            Vec::new()
        } else {
            (0..n)
                .map(|i| {
                    let mut o = rank(&routing_key(i), &ids);
                    o.truncate(r);
                    o
                })
                .collect()
        };
        let owners_of = |i: usize| -> &[&str] {
            if owners.is_empty() {
                &everyone
            } else {
                &owners[i]
            }
        };
        // ties between sharders rotate from request to request, spreading load
        let offset = self.cluster.next_turn();
        let order = |id: &str| (ids.iter().position(|x| x == id).unwrap_or(0) + offset) % ids.len();
        let mut failed: HashSet<&str> = HashSet::new();
        let mut pending: Vec<usize> = (0..n).collect();
        let mut out = Vec::new();
        let mut last_err = None;
        while !pending.is_empty() {
            // where a key may go now: live owners, serving ones only when there are any
            let no_owner = |i: usize| {
                last_err.clone().unwrap_or_else(|| {
                    ServiceError::unavailable(format!("no live owner for key {:?}", routing_key(i)))
                })
            };
            let plan: Vec<(&str, Vec<usize>)> = if owners.is_empty() {
                // every key has the same owners: one call, to the first of them in rotation
                match live_owners(&everyone, &failed, serving)
                    .into_iter()
                    .min_by_key(|n| order(n))
                {
                    Some(node) => vec![(node, std::mem::take(&mut pending))],
                    None => return Err(no_owner(pending[0])),
                }
            } else {
                let mut live: HashMap<usize, Vec<&str>> = HashMap::with_capacity(pending.len());
                for &i in &pending {
                    let choice = live_owners(owners_of(i), &failed, serving);
                    if choice.is_empty() {
                        return Err(no_owner(i));
                    }
                    live.insert(i, choice);
                }
                // cover the keys with as few sharders as possible: each call costs a round trip
                let mut plan = Vec::new();
                let mut left: Vec<usize> = pending.clone();
                while !left.is_empty() {
                    let mut count: HashMap<&str, usize> = HashMap::new();
                    for i in &left {
                        for n in &live[i] {
                            *count.entry(n).or_insert(0) += 1;
                        }
                    }
                    let node = count
                        .into_iter()
                        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| order(b.0).cmp(&order(a.0))))
                        .map(|(n, _)| n)
                        .expect("every pending key has a live owner");
                    let (mine, rest): (Vec<usize>, Vec<usize>) =
                        left.into_iter().partition(|i| live[i].contains(&node));
                    plan.push((node, mine));
                    left = rest;
                }
                plan
            };
            let calls = plan.into_iter().map(|(node, idx)| {
                let addr = m
                    .get(Role::Sharder, node)
                    .map(|m| m.flight_addr.clone())
                    .unwrap_or_default();
                let t = ticket(&idx);
                async move {
                    (
                        node,
                        self.cluster.pool.get::<SharderProtocol>(&addr, &t).await,
                        idx,
                    )
                }
            });
            pending.clear();
            for (node, res, idx) in futures::future::join_all(calls).await {
                match res.and_then(|batches| decode(&batches, &idx)) {
                    Ok(rows) => out.extend(rows),
                    Err(e) => {
                        warn!(node_id = node, error = %e, "sharder read failed, trying the next owner");
                        last_err = Some(e);
                        failed.insert(node);
                        pending.extend(idx);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The cosine of each item's content vector (under model `version`) to `user`, computed on
    /// the sharders that hold the items' forward index: only scores travel. Items not found, or
    /// filed under another model, are left out.
    pub async fn similarity(
        &self,
        ids: &[u64],
        version: &str,
        user: &[f32],
    ) -> ServiceResult<HashMap<u64, f32>> {
        let rows = self
            .read_owned(
                ids.len(),
                |i| list_key("item", &ids[i].to_string()),
                |idx| SharderTicket {
                    kind: Some(sharder_ticket::Kind::Similarity(SimilarityRequest {
                        item_ids: idx.iter().map(|&i| ids[i]).collect(),
                        version: version.to_string(),
                        user: user.to_vec(),
                    })),
                },
                |batches, _| {
                    let mut out = Vec::new();
                    for b in batches {
                        out.extend(ItemScore::from_batch(b)?);
                    }
                    Ok(out)
                },
            )
            .await?;
        Ok(rows.into_iter().map(|r| (r.item_id, r.score)).collect())
    }

    /// Reads inverted lists; each hit's `query` is the index of its query in `queries`.
    pub async fn read_lists(
        &self,
        queries: &[ListQuery],
        until: Option<i64>,
    ) -> ServiceResult<Vec<ListHit>> {
        self.read_owned(
            queries.len(),
            |i| list_key(&queries[i].kind, &queries[i].key),
            |idx| SharderTicket {
                kind: Some(sharder_ticket::Kind::Lists(ListsRequest {
                    queries: idx.iter().map(|&i| queries[i].clone()).collect(),
                    until,
                })),
            },
            |batches, idx| {
                let mut hits = Vec::new();
                for b in batches {
                    for mut h in ListHit::from_batch(b)? {
                        // the sharder numbers the queries it was sent; map back to ours
                        h.query = *idx.get(h.query as usize).ok_or_else(|| {
                            ServiceError::internal(format!(
                                "sharder answered query {} of {}",
                                h.query,
                                idx.len()
                            ))
                        })? as u32;
                        hits.push(h);
                    }
                }
                Ok(hits)
            },
        )
        .await
    }

    /// Forward-index lookup: item id → its row (category, keywords, publish time, cluster,
    /// vector). An id the chosen owner does not hold is then asked of every owner before it
    /// counts as unknown: a write that raced a membership change may have reached one replica.
    pub async fn item_meta(&self, ids: &[u64]) -> ServiceResult<HashMap<u64, ItemRow>> {
        let mut uniq: Vec<u64> = ids.to_vec();
        uniq.sort_unstable();
        uniq.dedup();
        let ticket = |ids: Vec<u64>| SharderTicket {
            kind: Some(sharder_ticket::Kind::ItemMeta(ItemMetaRequest {
                item_ids: ids,
            })),
        };
        let decode = |batches: &[RecordBatch]| -> ServiceResult<Vec<ItemRow>> {
            let mut rows = Vec::new();
            for b in batches {
                for p in Posting::from_batch(b)? {
                    match p {
                        Posting::Item(r) => rows.push(r),
                        Posting::List(e) => {
                            return Err(ServiceError::internal(format!(
                                "item_meta answered a list entry of {:?}",
                                e.key
                            )))
                        }
                    }
                }
            }
            Ok(rows)
        };
        let rows = self
            .read_owned(
                uniq.len(),
                |i| ItemRow::routing_key(uniq[i]),
                |idx| ticket(idx.iter().map(|&i| uniq[i]).collect()),
                |b, _| decode(b),
            )
            .await?;
        let mut found: HashMap<u64, ItemRow> = rows.into_iter().map(|p| (p.item_id, p)).collect();
        let missing: Vec<u64> = uniq
            .iter()
            .copied()
            .filter(|id| !found.contains_key(id))
            .collect();
        if missing.is_empty() {
            return Ok(found);
        }
        let (m, sharders) = self.sharders().await;
        let r = self.cluster.replication().min(sharders.len()).max(1);
        let mut per_node: HashMap<&str, Vec<u64>> = HashMap::new();
        for id in &missing {
            for owner in owners(&ItemRow::routing_key(*id), &sharders, r) {
                per_node.entry(owner).or_default().push(*id);
            }
        }
        let calls = per_node.into_iter().map(|(node, ids)| {
            let addr = m
                .get(Role::Sharder, node)
                .map(|m| m.flight_addr.clone())
                .unwrap_or_default();
            let t = ticket(ids);
            async move {
                (
                    node,
                    self.cluster.pool.get::<SharderProtocol>(&addr, &t).await,
                )
            }
        });
        for (node, res) in futures::future::join_all(calls).await {
            match res.and_then(|b| decode(&b)) {
                Ok(rows) => found.extend(rows.into_iter().map(|p| (p.item_id, p))),
                Err(e) => warn!(node_id = node, error = %e, "forward-index fallback read failed"),
            }
        }
        Ok(found)
    }

    /// The best `k` items of each new-item pool at `at` for the user vector `user` under
    /// two-tower model `version`, from every live sharder (each holds the pools of the items
    /// it owns; a replica's copy of an item is counted once). Per pool, best first.
    pub async fn pools(
        &self,
        version: &str,
        user: &[f32],
        at: i64,
        since: Option<i64>,
        k: usize,
    ) -> ServiceResult<Vec<Vec<PoolHit>>> {
        let (m, ids) = self.sharders().await;
        if ids.is_empty() {
            return Err(ServiceError::unavailable("no sharder member"));
        }
        let t = SharderTicket {
            kind: Some(sharder_ticket::Kind::Pools(PoolsRequest {
                version: version.to_string(),
                user: user.to_vec(),
                at,
                k: k as u32,
                since,
            })),
        };
        let calls = ids
            .iter()
            .filter_map(|id| m.get(Role::Sharder, id))
            .map(|member| {
                let t = &t;
                async move {
                    self.cluster
                        .pool
                        .get::<SharderProtocol>(&member.flight_addr, t)
                        .await
                }
            });
        let mut best: HashMap<u64, PoolHit> = HashMap::new();
        let mut answered = 0usize;
        let mut last_err = None;
        for res in futures::future::join_all(calls).await {
            match res.and_then(|batches| {
                let mut hits = Vec::new();
                for b in &batches {
                    hits.extend(PoolHit::from_batch(b)?);
                }
                Ok(hits)
            }) {
                Ok(hits) => {
                    answered += 1;
                    for h in hits {
                        best.entry(h.item_id).or_insert(h);
                    }
                }
                Err(e) => {
                    warn!(error = %e, "a sharder's pools could not be read");
                    last_err = Some(e);
                }
            }
        }
        // with replication 2 a single missing sharder loses nothing; with none answering, fail
        if answered == 0 {
            return Err(
                last_err.unwrap_or_else(|| ServiceError::unavailable("no sharder answered"))
            );
        }
        // pool indexes are below MAX_POOLS (checked on decode)
        let pools = best
            .values()
            .map(|h| h.pool as usize + 1)
            .max()
            .unwrap_or(0);
        let mut per_pool: Vec<Vec<PoolHit>> = vec![Vec::new(); pools];
        for h in best.into_values() {
            per_pool[h.pool as usize].push(h);
        }
        for p in &mut per_pool {
            p.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.item_id.cmp(&b.item_id)));
            p.truncate(k);
        }
        Ok(per_pool)
    }

    /// Catch-up for a (re)starting sharder: every posting the sharder at `addr` holds for keys
    /// that `req.requester` owns.
    pub async fn dump(&self, addr: &str, req: DumpRequest) -> ServiceResult<Vec<Posting>> {
        let t = SharderTicket {
            kind: Some(sharder_ticket::Kind::Dump(req)),
        };
        let mut out = Vec::new();
        for b in self.cluster.pool.get::<SharderProtocol>(addr, &t).await? {
            out.extend(Posting::from_batch(&b)?);
        }
        Ok(out)
    }
}

/// The owners a key may be read from now: the live ones, only the serving ones among them when
/// there are any.
fn live_owners<'m>(
    owners: &[&'m str],
    failed: &HashSet<&str>,
    serving: impl Fn(&str) -> bool,
) -> Vec<&'m str> {
    let alive: Vec<&'m str> = owners
        .iter()
        .copied()
        .filter(|n| !failed.contains(n))
        .collect();
    let best: Vec<&'m str> = alive.iter().copied().filter(|n| serving(n)).collect();
    if best.is_empty() {
        alive
    } else {
        best
    }
}

#[cfg(test)]
mod tests;
