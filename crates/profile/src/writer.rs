//! The profile partition's single writer. One actor (on its own thread: the log fsyncs) owns the
//! event log and is the only one that changes the profiles: each batch is appended to the log
//! and then applied, in one handler call, so the order of the log is the order of the state and
//! a replay rebuilds exactly the state that was served. Readers (profile views, popularity
//! boards) read the profiles through [`Snapshot`], a shared read view that always shows whole
//! batches: the writer holds the write lock only while it applies one.

use crate::config::ProfileConfig;
use crate::event_log::{EventLog, Logged};
use crate::state::Profiles;
use crate::Error;
use actix::prelude::*;
use coldstart_contracts::profile::{LoggedEvent, User};
use parking_lot::RwLock;
use std::path::Path;
use std::sync::Arc;
use tracing::info;

/// The profiles as readers see them: the state after the last applied batch.
#[derive(Clone)]
pub struct Snapshot(Arc<RwLock<Profiles>>);

impl Snapshot {
    /// Reads the profiles (briefly: the writer waits while a reader holds this).
    pub fn read<T>(&self, f: impl FnOnce(&Profiles) -> T) -> T {
        f(&self.0.read())
    }
}

/// One accepted batch.
pub enum Batch {
    /// Events, enriched from the forward index.
    Events(Vec<LoggedEvent>),
    /// User attributes and onboarding interests.
    Users(Vec<User>),
}

/// Log a batch, then apply it.
#[derive(Message)]
#[rtype(result = "Result<(), Error>")]
pub struct Write(pub Batch);

/// The writer actor.
pub struct ProfileWriter {
    log: EventLog,
    profiles: Arc<RwLock<Profiles>>,
}

/// Opens the log in `dir` and rebuilds the profiles from it, in log order (blocking).
fn rebuild(dir: &Path, cfg: ProfileConfig) -> Result<(EventLog, Profiles), Error> {
    let (log, replay) = EventLog::open(dir)?;
    let mut profiles = Profiles::new(cfg);
    let (mut events, mut users) = (0usize, 0usize);
    for r in replay {
        match r {
            Logged::Events(e) => {
                events += e.len();
                profiles.apply_events(&e);
            }
            Logged::Users(u) => {
                users += u.len();
                profiles.upsert_users(&u);
            }
        }
    }
    info!(dir = %dir.display(), events, users, profiles = profiles.len(), "profiles rebuilt from the log");
    Ok((log, profiles))
}

impl ProfileWriter {
    /// The writer of the log in `dir`, with the profiles rebuilt from it, and the snapshot its
    /// readers use (blocking).
    pub fn open(dir: &Path, cfg: ProfileConfig) -> Result<(Self, Snapshot), Error> {
        let (log, profiles) = rebuild(dir, cfg)?;
        let profiles = Arc::new(RwLock::new(profiles));
        let snapshot = Snapshot(profiles.clone());
        Ok((Self { log, profiles }, snapshot))
    }

    /// A writer for `snapshot` again, after the previous one died: rebuilds from the log, which
    /// holds every batch ever applied, and replaces what readers see.
    pub fn reopen(dir: &Path, cfg: ProfileConfig, snapshot: &Snapshot) -> Result<Self, Error> {
        let (log, profiles) = rebuild(dir, cfg)?;
        *snapshot.0.write() = profiles;
        Ok(Self {
            log,
            profiles: snapshot.0.clone(),
        })
    }
}

impl Actor for ProfileWriter {
    type Context = SyncContext<Self>;
}

impl Handler<Write> for ProfileWriter {
    type Result = Result<(), Error>;

    fn handle(&mut self, m: Write, _: &mut Self::Context) -> Self::Result {
        // durable first: a batch that is not in the log is not applied, and never acknowledged
        match m.0 {
            Batch::Events(events) => {
                // a retried batch (or the retried part of one) is acknowledged, not applied again
                let (events, repeated) = self.profiles.read().fresh(events);
                if repeated > 0 {
                    coldstart_runtime::http::count("profile_events_repeated", repeated as u64);
                    info!(repeated, "events seen before taken once");
                }
                if events.is_empty() {
                    return Ok(());
                }
                self.log.append("events", LoggedEvent::to_batch(&events))?;
                self.profiles.write().apply_events(&events);
            }
            Batch::Users(users) => {
                self.log.append("users", User::to_batch(&users))?;
                self.profiles.write().upsert_users(&users);
            }
        }
        Ok(())
    }
}
