//! Membership: who is alive, in which role, at which address. A [`Registry`] registers this node
//! under `/coldstart/{cluster}/members/{role}/{node_id}` bound to a lease that a keep-alive loop
//! renews (and re-grants after a lost lease or an etcd restart), and publishes the live membership
//! on a watch channel that clients route by. Backends: [`EtcdRegistry`] for every real deployment
//! and [`MemoryRegistry`] for unit tests and the single-process mode.

pub mod etcd;
mod memory;

pub use etcd::{EtcdRegistry, EtcdSettings};
pub use memory::MemoryRegistry;

use crate::error::ServiceResult;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use tokio::sync::watch;

/// A service role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// User profiles and the event log.
    Profile,
    /// Content encoder and the publish entry point.
    Encoder,
    /// Inverted lists and the forward index.
    Sharder,
    /// The new-item ledger.
    Traffic,
    /// The public read API.
    Aggregator,
}

impl Role {
    /// Every role, in start order.
    pub const ALL: [Role; 5] = [
        Role::Sharder,
        Role::Traffic,
        Role::Profile,
        Role::Encoder,
        Role::Aggregator,
    ];

    /// The lowercase name used in keys, flags and span names.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Profile => "profile",
            Role::Encoder => "encoder",
            Role::Sharder => "sharder",
            Role::Traffic => "traffic",
            Role::Aggregator => "aggregator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?}, expected one of profile, encoder, sharder, traffic, aggregator"))
    }
}

/// Whether a member serves reads yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Registered (so writers include it) but still catching up: readers prefer other replicas.
    Joining,
    /// Fully caught up.
    #[default]
    Serving,
}

/// The value stored under a member key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Stable node id.
    pub node_id: String,
    /// Its role.
    pub role: Role,
    /// Control-plane gRPC address (`host:port`); the same server as Flight today.
    pub grpc_addr: String,
    /// Arrow Flight address (`host:port`).
    pub flight_addr: String,
    /// HTTP address (`host:port`): health, metrics and, on the aggregator, the public API.
    pub http_addr: String,
    /// Build version.
    pub version: String,
    /// Start time, ms since the epoch.
    pub started_at: i64,
    /// Joining or serving.
    #[serde(default)]
    pub state: MemberState,
    /// The content model version this member has swapped to (encoders and sharders), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The staged content model version it files new items under as well (encoders, during a
    /// rollout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_model: Option<String>,
    /// The two-tower model version it runs (encoders, sharders once their pools are re-filed,
    /// aggregators), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tower_model: Option<String>,
    /// The staged two-tower model version whose pools it has built as well (sharders, during a
    /// rollout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_tower_model: Option<String>,
}

/// The live members, by role, sorted by node id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    members: BTreeMap<(Role, String), Member>,
}

impl Membership {
    /// Builds a membership from members.
    pub fn from_members(members: impl IntoIterator<Item = Member>) -> Self {
        Self {
            members: members
                .into_iter()
                .map(|m| ((m.role, m.node_id.clone()), m))
                .collect(),
        }
    }

    /// Members of one role, sorted by node id.
    pub fn role(&self, role: Role) -> Vec<&Member> {
        self.members
            .range((role, String::new())..)
            .take_while(|((r, _), _)| *r == role)
            .map(|(_, m)| m)
            .collect()
    }

    /// Every member.
    pub fn all(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// A member by role and id.
    pub fn get(&self, role: Role, node_id: &str) -> Option<&Member> {
        self.members.get(&(role, node_id.to_string()))
    }

    fn upsert(&mut self, m: Member) {
        self.members.insert((m.role, m.node_id.clone()), m);
    }

    fn remove(&mut self, role: Role, node_id: &str) {
        self.members.remove(&(role, node_id.to_string()));
    }
}

/// A live view of the membership.
pub type MembershipWatch = watch::Receiver<Arc<Membership>>;

/// A node's registration: kept alive in the background until dropped or [`Registration::close`]d.
pub struct Registration {
    update: watch::Sender<Member>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Registration {
    fn new(
        update: watch::Sender<Member>,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    ) -> Self {
        Self {
            update,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Changes the registered value (e.g. joining → serving); the keep-alive loop writes it.
    pub fn set_state(&self, state: MemberState) {
        self.update.send_modify(|m| m.state = state);
    }

    /// Announces the content model version this member now runs.
    pub fn set_model(&self, version: &str) {
        self.announcer().set_model(version);
    }

    /// A handle that updates what this member announces, for tasks that outlive a borrow of the
    /// registration (e.g. a model watcher).
    pub fn announcer(&self) -> Announcer {
        Announcer(self.update.clone())
    }

    /// Deregisters (deletes the key and revokes the lease) and stops the keep-alive loop.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), task).await;
        }
    }
}

/// Updates a registered member's value; the keep-alive loop re-puts it.
#[derive(Clone)]
pub struct Announcer(watch::Sender<Member>);

impl Announcer {
    /// Announces the content model version this member now runs.
    pub fn set_model(&self, version: &str) {
        self.0.send_modify(|m| m.model = Some(version.to_string()));
    }

    /// Announces the staged content model version this member files under as well, if any.
    pub fn set_next_model(&self, version: Option<&str>) {
        self.0
            .send_modify(|m| m.next_model = version.map(String::from));
    }

    /// Announces the staged two-tower model version whose pools this member holds as well.
    pub fn set_next_tower_model(&self, version: &str) {
        self.0
            .send_modify(|m| m.next_tower_model = Some(version.to_string()));
    }

    /// Announces the two-tower model version this member now runs.
    pub fn set_tower_model(&self, version: &str) {
        self.0
            .send_modify(|m| m.tower_model = Some(version.to_string()));
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Service discovery.
#[async_trait::async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Registers `member` and keeps it registered until the returned handle is closed or dropped.
    async fn register(&self, member: Member) -> ServiceResult<Registration>;

    /// A live view of the membership, kept current in the background. When the backend is
    /// unreachable the view keeps the membership it last saw.
    fn watch(&self) -> MembershipWatch;

    /// Publishes a value (JSON) under `{kind}/{name}`.
    async fn put_value(&self, kind: ValueKind, name: &str, value: &str) -> ServiceResult<()>;

    /// The value of `{kind}/{name}`, kept current in the background (`None` until one exists).
    fn watch_value(&self, kind: ValueKind, name: &str) -> watch::Receiver<Option<String>>;

    /// The value of `{kind}/{name}` now, read from the backend (`None`: there is none; an
    /// unreachable backend is an error, not `None`).
    async fn get_value(&self, kind: ValueKind, name: &str) -> ServiceResult<Option<String>>;

    /// Publishes a model reference (JSON) under `models/{name}`.
    async fn put_model(&self, name: &str, value: &str) -> ServiceResult<()> {
        self.put_value(ValueKind::Model, name, value).await
    }

    /// The value of `models/{name}`, kept current in the background (`None` until one exists).
    fn watch_model(&self, name: &str) -> watch::Receiver<Option<String>> {
        self.watch_value(ValueKind::Model, name)
    }
}

/// What a value kept in discovery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// A model reference (`models/{name}`).
    Model,
    /// Settings that take effect without a restart (`settings/{name}`, e.g. `settings/traffic`:
    /// a JSON object of `[traffic]` keys over the configuration file's).
    Setting,
}

/// The key of a value.
pub fn value_key(cluster: &str, kind: ValueKind, name: &str) -> String {
    let dir = match kind {
        ValueKind::Model => "models",
        ValueKind::Setting => "settings",
    };
    format!("/coldstart/{cluster}/{dir}/{name}")
}

/// The key of a model reference.
pub fn model_key(cluster: &str, name: &str) -> String {
    value_key(cluster, ValueKind::Model, name)
}

/// The key prefix of a cluster's members.
pub fn members_prefix(cluster: &str) -> String {
    format!("/coldstart/{cluster}/members/")
}

/// The key of one member.
pub fn member_key(cluster: &str, role: Role, node_id: &str) -> String {
    format!("{}{}/{}", members_prefix(cluster), role, node_id)
}

/// Parses `{role}/{node_id}` after the members prefix.
fn parse_member_key(prefix: &str, key: &str) -> Option<(Role, String)> {
    let rest = key.strip_prefix(prefix)?;
    let (role, id) = rest.split_once('/')?;
    Some((role.parse().ok()?, id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn member(role: Role, id: &str) -> Member {
        Member {
            node_id: id.into(),
            role,
            grpc_addr: "127.0.0.1:1".into(),
            flight_addr: "127.0.0.1:1".into(),
            http_addr: "127.0.0.1:2".into(),
            version: "test".into(),
            started_at: 0,
            state: MemberState::Serving,
            model: None,
            next_model: None,
            tower_model: None,
            next_tower_model: None,
        }
    }

    #[test]
    fn membership_groups_by_role_sorted() {
        let m = Membership::from_members([
            member(Role::Sharder, "b"),
            member(Role::Profile, "p"),
            member(Role::Sharder, "a"),
        ]);
        let ids: Vec<_> = m
            .role(Role::Sharder)
            .iter()
            .map(|m| m.node_id.clone())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(m.role(Role::Aggregator).is_empty());
    }

    #[test]
    fn member_keys_parse_back() {
        let k = member_key("c1", Role::Sharder, "s-1");
        assert_eq!(k, "/coldstart/c1/members/sharder/s-1");
        assert_eq!(
            parse_member_key(&members_prefix("c1"), &k),
            Some((Role::Sharder, "s-1".into()))
        );
        assert_eq!(
            parse_member_key(&members_prefix("c1"), "/coldstart/c1/members/nope/x"),
            None
        );
    }
}
