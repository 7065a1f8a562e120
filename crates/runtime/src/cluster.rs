//! Which member serves a call, by role and key, from the live membership: stateless roles
//! round-robin, partitioned roles (profile by user, traffic by item) by rendezvous on the key,
//! and [`Cluster::put_partitioned`], the one way rows are split over a partitioned role and sent.
//! Replicated sharder routing (owners, fall-back writes, fewest covering reads) is the sharder
//! client's, in `coldstart-contracts`.

use crate::discovery::{Member, MemberState, Membership, MembershipWatch, Role};
use crate::error::{ServiceError, ServiceResult};
use crate::flight::{FlightPool, Protocol};
use crate::routing::owner;
use arrow::record_batch::RecordBatch;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How long a request waits for a role to appear in a membership view that has none of it.
pub const ROLE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How clients route: the sharders' replication factor and the deadline of one call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Routing {
    /// Copies of each sharder key (`sharder.replication`).
    pub replication: usize,
    /// Deadline of one call to a peer, response stream included.
    pub call_timeout: std::time::Duration,
}

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
    pub async fn membership_with(&self, role: Role, serving: bool) -> Arc<Membership> {
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
        if let [only] = members.as_slice() {
            return Ok(vec![(
                (*only).clone(),
                keys.into_iter().map(|k| k.1).collect(),
            )]);
        }
        let ids: Vec<&str> = members.iter().map(|m| m.node_id.as_str()).collect();
        let mut groups: HashMap<&str, Vec<K>> = HashMap::new();
        let mut key = String::new();
        for (k, v) in keys {
            use std::fmt::Write;
            key.clear();
            let _ = write!(key, "{k}");
            groups.entry(owner(&key, &ids)).or_default().push(v);
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

    /// Every member of a partitioned role (profile, traffic), for reads that need each
    /// partition's share; waits for the role like the other routes.
    pub async fn all(&self, role: Role) -> ServiceResult<Vec<Member>> {
        let m = self.membership_with(role, false).await;
        let members: Vec<Member> = m.role(role).into_iter().cloned().collect();
        if members.is_empty() {
            return Err(ServiceError::unavailable(format!("no {role} member")));
        }
        Ok(members)
    }

    /// The member that owns `key` in a partitioned role.
    pub async fn owner(&self, role: Role, key: u64) -> ServiceResult<Member> {
        Ok(self.partition(role, [(key, ())]).await?.remove(0).0)
    }

    /// A number that advances on every call: clients rotate ties between equal members with it.
    pub fn next_turn(&self) -> usize {
        self.rr.fetch_add(1, Ordering::Relaxed)
    }

    /// Splits `rows` over the members of a partitioned role by rendezvous on `key`, and sends
    /// each member its share with `cmd`, all at once. Returns the rows acknowledged in all; fails
    /// if any member failed (its share may be retried: writes are idempotent upserts or logged
    /// events keyed by the caller).
    pub async fn put_partitioned<P: Protocol, T: Clone>(
        &self,
        role: Role,
        rows: &[T],
        key: impl Fn(&T) -> u64,
        batch: impl Fn(&[T]) -> RecordBatch,
        cmd: &P::Command,
    ) -> ServiceResult<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let parts = self
            .partition(role, rows.iter().enumerate().map(|(i, r)| (key(r), i)))
            .await?;
        let calls = parts.into_iter().map(|(m, idx)| {
            let b = batch(&idx.iter().map(|&i| rows[i].clone()).collect::<Vec<_>>());
            async move { self.pool.put::<P>(&m.flight_addr, cmd, vec![b]).await }
        });
        Ok(futures::future::try_join_all(calls)
            .await?
            .into_iter()
            .sum())
    }
}
