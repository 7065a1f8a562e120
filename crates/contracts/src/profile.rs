//! The profile service's contract: it takes `events` and `users` of the users its partition owns
//! (rendezvous on the user id), and serves a user's profile at a request time and its
//! partition's popularity boards.

mod rows;

pub use rows::*;

/// The profile's wire messages, generated from `proto/profile.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/coldstart.profile.v1.rs"));
}

use crate::types::order;
use coldstart_runtime::cluster::Cluster;
use coldstart_runtime::discovery::Role;
use coldstart_runtime::flight::Protocol;
use coldstart_runtime::ServiceResult;
use proto::{
    profile_command, profile_ticket, IngestEvents, PopularRequest, ProfileCommand, ProfileRequest,
    ProfileTicket, UpsertUsers,
};
use std::collections::HashMap;
use std::sync::Arc;

/// The profile service's Flight protocol.
pub struct ProfileProtocol;

impl Protocol for ProfileProtocol {
    const SERVICE: &'static str = "profile";
    type Ticket = ProfileTicket;
    type Command = ProfileCommand;
}

crate::flight_kinds!(ProfileTicket, profile_ticket {
    Profile => "profile",
    Popular => "popular",
});
crate::flight_kinds!(ProfileCommand, profile_command {
    IngestEvents => "ingest_events",
    UpsertUsers => "upsert_users",
});

/// One popularity board as the client returns it: (item, publish time, score), best first.
pub type Board = Vec<(u64, i64, f64)>;

/// Calls the profile partitions: each user's rows to the partition that owns the user.
#[derive(Clone)]
pub struct ProfileClient {
    cluster: Arc<Cluster>,
}

impl ProfileClient {
    /// A client routing by `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }

    /// A user's profile at `at` from the partition that owns the user; an unknown user is new
    /// and empty.
    pub async fn profile(&self, user_id: u64, at: i64) -> ServiceResult<ProfileView> {
        let m = self.cluster.owner(Role::Profile, user_id).await?;
        let t = ProfileTicket {
            kind: Some(profile_ticket::Kind::Profile(ProfileRequest {
                user_id,
                at,
            })),
        };
        let batches = self
            .cluster
            .pool
            .get::<ProfileProtocol>(&m.flight_addr, &t)
            .await?;
        for b in &batches {
            if let Some(v) = ProfileView::from_batch(b)?.into_iter().next() {
                return Ok(v);
            }
        }
        Ok(ProfileView {
            user_id,
            is_new: true,
            ..Default::default()
        })
    }

    /// The most engaged items at `at` for each of `groups` (`""`: every user), summed over every
    /// partition (each counts its own users' events): the board of each group, at most `limit`
    /// items, best first by [`order`].
    pub async fn popular(
        &self,
        groups: &[String],
        at: i64,
        limit: usize,
    ) -> ServiceResult<HashMap<String, Board>> {
        let members = self.cluster.all(Role::Profile).await?;
        let t = ProfileTicket {
            kind: Some(profile_ticket::Kind::Popular(PopularRequest {
                groups: groups.to_vec(),
                at,
                limit: limit as u32,
            })),
        };
        let calls = members
            .iter()
            .map(|m| self.cluster.pool.get::<ProfileProtocol>(&m.flight_addr, &t));
        let mut sums: Vec<HashMap<u64, (i64, f64)>> = vec![HashMap::new(); groups.len()];
        for batches in futures::future::try_join_all(calls).await? {
            for b in &batches {
                for h in PopularHit::from_batch(b)? {
                    if let Some(g) = sums.get_mut(h.query as usize) {
                        g.entry(h.item_id).or_insert((h.publish_ts, 0.0)).1 += h.score;
                    }
                }
            }
        }
        Ok(groups
            .iter()
            .cloned()
            .zip(sums)
            .map(|(group, g)| {
                let mut v: Board = g.into_iter().map(|(i, (t, s))| (i, t, s)).collect();
                v.sort_unstable_by(|a, b| order((a.2, a.1, a.0), (b.2, b.1, b.0)));
                v.truncate(limit);
                (group, v)
            })
            .collect())
    }

    /// Sends checked events to the partitions that own their users. Returns the events stored.
    pub async fn ingest_events(&self, events: &[Event]) -> ServiceResult<u64> {
        let cmd = ProfileCommand {
            kind: Some(profile_command::Kind::IngestEvents(IngestEvents {})),
        };
        self.cluster
            .put_partitioned::<ProfileProtocol, _>(
                Role::Profile,
                events,
                |e| e.user_id,
                Event::to_batch,
                &cmd,
            )
            .await
    }

    /// Sends checked users to the partitions that own them. Returns the users stored.
    pub async fn upsert_users(&self, users: &[User]) -> ServiceResult<u64> {
        let cmd = ProfileCommand {
            kind: Some(profile_command::Kind::UpsertUsers(UpsertUsers {})),
        };
        self.cluster
            .put_partitioned::<ProfileProtocol, _>(
                Role::Profile,
                users,
                |u| u.user_id,
                User::to_batch,
                &cmd,
            )
            .await
    }
}
