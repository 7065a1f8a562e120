//! The client side of the cluster: which member serves a call, by role and key, from the live
//! membership. Sharder keys go to their rendezvous owners with replication (writes to every owner,
//! falling back down the ranking when an owner fails; reads from the first serving owner, failing
//! over to the next); profile and traffic state is partitioned by rendezvous on the user or item
//! id; stateless roles are picked round-robin.

use crate::discovery::{Member, MemberState, Membership, MembershipWatch, Role};
use crate::error::{ServiceError, ServiceResult};
use crate::flight::FlightPool;
use crate::routing::{list_key, rank};
use crate::rows::{ListHit, Posting};
use arrow::record_batch::RecordBatch;
use coldstart_proto::{
    put_command, ticket, IndexPostings, ItemMetaRequest, ListQuery, ListsRequest, PutCommand,
    Ticket,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tracing::warn;

/// How long a request waits for a role to appear in a membership view that has none of it.
pub const ROLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Routes calls to members.
pub struct Cluster {
    /// The Flight client pool.
    pub pool: Arc<FlightPool>,
    membership: MembershipWatch,
    replication: usize,
    rr: AtomicUsize,
}

impl Cluster {
    /// Routes by `membership` with sharder replication factor `replication`.
    pub fn new(pool: Arc<FlightPool>, membership: MembershipWatch, replication: usize) -> Self {
        Self {
            pool,
            membership,
            replication,
            rr: AtomicUsize::new(0),
        }
    }

    /// The current membership.
    pub fn membership(&self) -> Arc<Membership> {
        self.membership.borrow().clone()
    }

    /// The replication factor in force: the configured one, capped by the live sharders.
    pub fn replication(&self) -> usize {
        self.replication
    }

    /// The membership once it holds a (serving, if asked) member of `role`, waiting at most
    /// [`ROLE_WAIT`]: a view that trails etcd by a moment (a process that just started, a member
    /// that just re-registered) is not a reason to fail a request.
    async fn membership_with(&self, role: Role, serving: bool) -> Arc<Membership> {
        let has = |m: &Membership| {
            m.role(role)
                .iter()
                .any(|x| !serving || x.state == MemberState::Serving)
        };
        let m = self.membership();
        if has(&m) {
            return m;
        }
        let mut w = self.membership.clone();
        // keep only whether it arrived: the guard `wait_for` returns must not outlive this line
        let _ = tokio::time::timeout(ROLE_WAIT, w.wait_for(|m| has(m)))
            .await
            .map(|r| r.is_ok());
        self.membership()
    }

    /// A serving member of a stateless role, round-robin.
    pub async fn any(&self, role: Role) -> ServiceResult<Member> {
        let m = self.membership_with(role, true).await;
        let serving: Vec<&Member> = m
            .role(role)
            .into_iter()
            .filter(|m| m.state == MemberState::Serving)
            .collect();
        if serving.is_empty() {
            return Err(ServiceError::unavailable(format!(
                "no serving {role} member"
            )));
        }
        Ok(serving[self.rr.fetch_add(1, Ordering::Relaxed) % serving.len()].clone())
    }

    /// Partitions `keys` over the members of a partitioned role (profile, traffic) by rendezvous.
    pub async fn partition<K: Copy>(
        &self,
        role: Role,
        keys: impl IntoIterator<Item = (u64, K)>,
    ) -> ServiceResult<Vec<(Member, Vec<K>)>> {
        let m = self.membership_with(role, false).await;
        let members = m.role(role);
        if members.is_empty() {
            return Err(ServiceError::unavailable(format!("no {role} member")));
        }
        let ids: Vec<&str> = members.iter().map(|m| m.node_id.as_str()).collect();
        let mut groups: HashMap<&str, Vec<K>> = HashMap::new();
        for (k, v) in keys {
            let owner = rank(&k.to_string(), &ids)[0];
            groups.entry(owner).or_default().push(v);
        }
        Ok(groups
            .into_iter()
            .map(|(id, v)| {
                (
                    (*members
                        .iter()
                        .find(|m| m.node_id == id)
                        .expect("owner is a member"))
                    .clone(),
                    v,
                )
            })
            .collect())
    }

    /// The member that owns `key` in a partitioned role.
    pub async fn owner(&self, role: Role, key: u64) -> ServiceResult<Member> {
        Ok(self.partition(role, [(key, ())]).await?.remove(0).0)
    }

    async fn sharders(&self) -> (Arc<Membership>, Vec<String>) {
        let m = self.membership_with(Role::Sharder, false).await;
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
        let r = self.replication.min(ids.len());
        let ranked: Vec<Vec<&str>> = postings
            .iter()
            .map(|p| rank(&list_key(&p.kind, &p.key), &ids))
            .collect();
        let mut need = vec![r; postings.len()];
        let mut next = vec![0usize; postings.len()];
        let mut copies = vec![0usize; postings.len()];
        let mut failed: HashSet<&str> = HashSet::new();
        let cmd = PutCommand {
            kind: Some(put_command::Kind::IndexPostings(IndexPostings {})),
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
                async move { (node, idx, self.pool.put(&addr, &cmd, vec![batch]).await) }
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
                "no sharder accepted the posting for {}/{} (item {})",
                postings[i].kind, postings[i].key, postings[i].item_id
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
        routing_keys: &[String],
        first_owner: usize,
        ticket: impl Fn(&[usize]) -> Ticket,
        decode: impl Fn(&[RecordBatch], &[usize]) -> ServiceResult<Vec<R>>,
    ) -> ServiceResult<Vec<R>> {
        let (m, ids) = self.sharders().await;
        if ids.is_empty() {
            return Err(ServiceError::unavailable("no sharder member"));
        }
        let r = self.replication.min(ids.len()).max(1);
        // candidates per key: its owners, serving ones first
        let candidates: Vec<Vec<&str>> = routing_keys
            .iter()
            .map(|k| {
                let mut owners = rank(k, &ids);
                owners.truncate(r);
                owners.sort_by_key(|id| {
                    m.get(Role::Sharder, id)
                        .map(|m| m.state != MemberState::Serving)
                        .unwrap_or(true)
                });
                owners
            })
            .collect();
        let mut attempt = vec![first_owner; routing_keys.len()];
        let mut pending: Vec<usize> = (0..routing_keys.len()).collect();
        let mut out = Vec::new();
        let mut last_err = None;
        while !pending.is_empty() {
            let mut plan: HashMap<&str, Vec<usize>> = HashMap::new();
            for &i in &pending {
                match candidates[i].get(attempt[i]) {
                    Some(node) => plan.entry(node).or_default().push(i),
                    None => {
                        return Err(last_err.unwrap_or_else(|| {
                            ServiceError::unavailable(format!(
                                "no live owner for key {:?}",
                                routing_keys[i]
                            ))
                        }))
                    }
                }
            }
            let calls = plan.into_iter().map(|(node, idx)| {
                let addr = m
                    .get(Role::Sharder, node)
                    .map(|m| m.flight_addr.clone())
                    .unwrap_or_default();
                let t = ticket(&idx);
                async move { (node, self.pool.get(&addr, &t).await, idx) }
            });
            pending.clear();
            for (node, res, idx) in futures::future::join_all(calls).await {
                match res.and_then(|batches| decode(&batches, &idx)) {
                    Ok(rows) => out.extend(rows),
                    Err(e) => {
                        warn!(node_id = node, error = %e, "sharder read failed, trying the next owner");
                        last_err = Some(e);
                        for i in idx {
                            attempt[i] += 1;
                            pending.push(i);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Reads inverted lists; each hit's `query` is the index of its query in `queries`.
    pub async fn read_lists(&self, queries: &[ListQuery]) -> ServiceResult<Vec<ListHit>> {
        let keys: Vec<String> = queries.iter().map(|q| list_key(&q.kind, &q.key)).collect();
        self.read_owned(
            &keys,
            0,
            |idx| Ticket {
                kind: Some(ticket::Kind::Lists(ListsRequest {
                    queries: idx.iter().map(|&i| queries[i].clone()).collect(),
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

    /// Forward-index lookup: item id → its `item` posting (category, keywords, publish time,
    /// cluster). An id the first owner does not hold is asked of the next owner before it counts
    /// as unknown: a write that raced a membership change may have reached one replica only.
    pub async fn item_meta(&self, ids: &[u64]) -> ServiceResult<HashMap<u64, Posting>> {
        let mut missing: Vec<u64> = ids.to_vec();
        missing.sort_unstable();
        missing.dedup();
        let mut found: HashMap<u64, Posting> = HashMap::with_capacity(missing.len());
        let owners = self.replication.min(self.sharders().await.1.len()).max(1);
        for owner in 0..owners {
            if missing.is_empty() {
                break;
            }
            let keys: Vec<String> = missing
                .iter()
                .map(|id| list_key("item", &id.to_string()))
                .collect();
            let read = self
                .read_owned(
                    &keys,
                    owner,
                    |idx| Ticket {
                        kind: Some(ticket::Kind::ItemMeta(ItemMetaRequest {
                            item_ids: idx.iter().map(|&i| missing[i]).collect(),
                        })),
                    },
                    |batches, _| {
                        Ok(batches
                            .iter()
                            .map(Posting::from_batch)
                            .collect::<ServiceResult<Vec<_>>>()?
                            .into_iter()
                            .flatten()
                            .collect())
                    },
                )
                .await;
            let rows = match read {
                Ok(rows) => rows,
                // the first pass must answer; later passes only look further
                Err(e) if owner == 0 => return Err(e),
                Err(e) => {
                    warn!(error = %e, missing = missing.len(), "forward-index fallback read failed");
                    break;
                }
            };
            found.extend(rows.into_iter().map(|p: Posting| (p.item_id, p)));
            missing.retain(|id| !found.contains_key(id));
        }
        Ok(found)
    }
}
