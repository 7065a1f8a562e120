//! The new-item ledger: an actor on a `SyncArbiter` that logs every registration and exposure
//! batch (tagged Arrow IPC records in an fsync'd WAL) before applying it. The state and the
//! policy sit in a [`Book`] behind a read-write lock: the actor is its only writer, and reads
//! (recall's `boosts`, ledger rows) take the read lock on the caller's thread instead of queueing
//! behind writes in the actor's mailbox.

use crate::policy::{ItemState, Policy};
use crate::Error;
use actix::prelude::*;
use coldstart_contracts::traffic::{BoostRow, Exposure, LedgerRow, Registration};
use coldstart_contracts::types::Action;
use coldstart_runtime::ids::{IdMap, IdSet};
use coldstart_runtime::StorageError;
use coldstart_runtime::{ipc, wal::Wal};
use parking_lot::RwLock;
use std::path::Path;
use std::sync::Arc;
use tracing::info;

const TAG_REGISTER: u8 = 1;
const TAG_EXPOSE: u8 = 2;

/// Ledger state.
#[derive(Debug, Default)]
pub struct LedgerState {
    rows: IdMap<LedgerRow>,
    /// Exposures of items the ledger does not know (not new, or never published here).
    pub untracked: u64,
    /// Impressions and clicks of the items it knows: their click-through is promotion's
    /// reference.
    impressions: u64,
    clicks: u64,
    /// Per item still helped (within its window and promotion), the exposures already counted:
    /// a hash of (user, action, request id — or the event time when the client named none).
    counted: IdMap<IdSet>,
    /// Exposures not counted again: the same (user, item, action, request id) as one counted.
    pub duplicates: u64,
    /// Author quality of the items registered with one (targets are recomputed from it when the
    /// policy changes).
    author_quality: IdMap<f32>,
}

/// The identity of an exposure: an impression counts once per (user, item, request id), and a
/// retried batch (same events, same times) once. A stable hash (FNV-1a), so a replay of the log
/// makes the same decisions as the run that wrote it.
fn exposure_key(e: &Exposure) -> u64 {
    let mut h = coldstart_runtime::ids::StableHash::default();
    h.eat(&e.user_id.to_le_bytes())
        .eat(&[u8::from(e.action == Action::Click)]);
    match &e.request_id {
        Some(r) => h.eat(b"r").eat(r.as_bytes()),
        None => h.eat(b"t").eat(&e.ts.to_le_bytes()),
    };
    h.value()
}

impl LedgerState {
    /// Registers items with the policy's target for their content and author quality.
    fn register(&mut self, regs: &[Registration], policy: &Policy) {
        for r in regs {
            let target = policy.target(r.quality, r.author_quality);
            let row = self.rows.entry(r.item_id).or_insert(LedgerRow {
                item_id: r.item_id,
                publish_ts: r.publish_ts,
                quality: r.quality,
                target_impressions: target,
                impressions: 0,
                clicks: 0,
            });
            // Re-publishing updates metadata and the target but never resets counts.
            row.publish_ts = r.publish_ts;
            row.quality = r.quality;
            row.target_impressions = target;
            match r.author_quality {
                Some(a) => self.author_quality.insert(r.item_id, a),
                None => self.author_quality.remove(&r.item_id),
            };
        }
    }

    /// Every item's target under a new policy (counts stay as they are).
    fn retarget(&mut self, policy: &Policy) {
        for row in self.rows.values_mut() {
            let author = self.author_quality.get(&row.item_id).copied();
            row.target_impressions = policy.target(row.quality, author);
        }
    }

    /// Counts exposures, each (user, item, action, request id) once while the item can still
    /// get help (`horizon_ms` after its publication: the window and the promotion). Later ones
    /// count as they come: their item's help is over, and its keys are let go.
    fn count(&mut self, ex: &[Exposure], horizon_ms: i64) {
        for e in ex {
            if let Some(row) = self.rows.get(&e.item_id) {
                if e.ts.saturating_sub(row.publish_ts) <= horizon_ms {
                    if !self
                        .counted
                        .entry(e.item_id)
                        .or_default()
                        .insert(exposure_key(e))
                    {
                        self.duplicates += 1;
                        continue;
                    }
                } else {
                    self.counted.remove(&e.item_id);
                }
            }
            match self.rows.get_mut(&e.item_id) {
                Some(row) if e.action == Action::Click => {
                    row.clicks += 1;
                    self.clicks += 1;
                }
                Some(row) => {
                    row.impressions += 1;
                    self.impressions += 1;
                }
                None => self.untracked += 1,
            }
        }
    }

    /// The policy's help at request time `at` for the items of `ids` the ledger knows that can
    /// still get help (published, within window and promotion): boost, how far behind, whether
    /// forceable. Promotion's draw is seeded by the item and its age at
    /// the request time, so one request time gives one answer, and shifting every timestamp
    /// with it changes none.
    pub fn boosts(&self, ids: &[u64], at: i64, policy: &Policy) -> Vec<BoostRow> {
        use rand::SeedableRng;
        let (p_clicks, p_impressions) = (
            policy.config().prior_clicks,
            policy.config().prior_impressions,
        );
        let reference = (self.clicks as f64 + p_clicks) / (self.impressions as f64 + p_impressions);
        // each id once (recall sends them sorted and distinct: no set needed then)
        let mut sorted;
        let ids = if ids.windows(2).all(|w| w[0] < w[1]) {
            ids
        } else {
            sorted = ids.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            &sorted[..]
        };
        let horizon = policy.horizon_ms();
        ids.iter()
            .filter_map(|id| self.rows.get(id))
            // past its window and promotion (or not yet published) an item gets no help
            .filter(|r| (0..=horizon).contains(&at.saturating_sub(r.publish_ts)))
            .map(|r| {
                let item = ItemState {
                    publish_ts: r.publish_ts,
                    target: r.target_impressions,
                    impressions: r.impressions,
                    clicks: r.clicks,
                };
                let age = at.saturating_sub(r.publish_ts) as u64;
                let mut rng = rand::rngs::SmallRng::seed_from_u64(
                    age.rotate_left(17) ^ r.item_id.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                );
                let (boost, _) = policy.help(&item, at, reference, &mut rng);
                let elapsed = policy.elapsed(r.publish_ts, at);
                let behind = policy.behind(
                    elapsed,
                    r.impressions as f64 / r.target_impressions.max(1) as f64,
                );
                BoostRow {
                    item_id: r.item_id,
                    boost: boost as f32,
                    behind: behind as f32,
                    forceable: elapsed < 1.0
                        && r.impressions < r.target_impressions
                        && policy.may_force(behind),
                }
            })
            .collect()
    }

    /// Rows for `ids` (all rows, up to `limit`, when empty).
    pub fn rows(&self, ids: &[u64], limit: usize) -> Vec<LedgerRow> {
        if ids.is_empty() {
            let mut all: Vec<LedgerRow> = self.rows.values().cloned().collect();
            all.sort_by_key(|r| std::cmp::Reverse(r.publish_ts));
            all.truncate(limit);
            all
        } else {
            ids.iter()
                .filter_map(|id| self.rows.get(id).cloned())
                .collect()
        }
    }
}

/// What the ledger knows and the policy in force.
#[derive(Debug)]
pub struct Book {
    /// The ledger's state.
    pub state: LedgerState,
    /// The policy in force.
    pub policy: Policy,
}

/// The book, shared by the ledger actor (its writer) and the readers.
pub type SharedBook = Arc<RwLock<Book>>;

/// The ledger actor.
pub struct Ledger {
    wal: Wal,
    book: SharedBook,
}

impl Actor for Ledger {
    type Context = SyncContext<Self>;
}

/// Register new items.
#[derive(Message)]
#[rtype(result = "Result<usize, Error>")]
pub struct Register(pub Vec<Registration>);

/// Count impressions and clicks.
#[derive(Message)]
#[rtype(result = "Result<usize, Error>")]
pub struct Count(pub Vec<Exposure>);

/// A new policy (from `settings/traffic`): targets are recomputed, counts kept.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetPolicy(pub Policy);

fn record(tag: u8, batch: &arrow::record_batch::RecordBatch) -> Vec<u8> {
    let mut r = vec![tag];
    r.extend(ipc::encode(batch));
    r
}

impl Ledger {
    /// Replays `{dir}/ledger.wal` into a new book; targets come from `policy`.
    pub fn open(dir: &Path, policy: Policy) -> Result<Self, Error> {
        let book = Arc::new(RwLock::new(Book {
            state: LedgerState::default(),
            policy,
        }));
        Self::open_into(dir, book)
    }

    /// Replays `{dir}/ledger.wal` into `book` (its state replaced, its policy kept): a restarted
    /// actor keeps serving the readers that hold the book.
    pub fn open_into(dir: &Path, book: SharedBook) -> Result<Self, Error> {
        let policy = book.read().policy.clone();
        let path = dir.join("ledger.wal");
        let (wal, records) = Wal::open(&path).map_err(StorageError::at(&path))?;
        let mut state = LedgerState::default();
        for r in &records {
            let (tag, body) = r
                .split_first()
                .ok_or_else(|| coldstart_runtime::ServiceError::internal("empty ledger record"))?;
            for b in ipc::decode(body, usize::MAX)? {
                match *tag {
                    TAG_REGISTER => state.register(&Registration::from_batch(&b)?, &policy),
                    TAG_EXPOSE => state.count(&Exposure::from_batch(&b)?, policy.horizon_ms()),
                    t => {
                        return Err(coldstart_runtime::ServiceError::internal(format!(
                            "unknown ledger record tag {t}"
                        ))
                        .into())
                    }
                }
            }
        }
        info!(
            items = state.rows.len(),
            records = records.len(),
            "ledger opened"
        );
        book.write().state = state;
        Ok(Self { wal, book })
    }

    /// The book, for readers.
    pub fn book(&self) -> SharedBook {
        self.book.clone()
    }

    fn log(&mut self, rec: Vec<u8>) -> Result<(), Error> {
        Ok(self
            .wal
            .append(&[rec])
            .map_err(StorageError::at(self.wal.path()))?)
    }
}

impl Handler<Register> for Ledger {
    type Result = Result<usize, Error>;
    fn handle(&mut self, m: Register, _: &mut Self::Context) -> Self::Result {
        self.log(record(TAG_REGISTER, &Registration::to_batch(&m.0)))?;
        let mut b = self.book.write();
        let Book { state, policy } = &mut *b;
        state.register(&m.0, policy);
        Ok(m.0.len())
    }
}

impl Handler<Count> for Ledger {
    type Result = Result<usize, Error>;
    fn handle(&mut self, m: Count, _: &mut Self::Context) -> Self::Result {
        self.log(record(TAG_EXPOSE, &Exposure::to_batch(&m.0)))?;
        let mut b = self.book.write();
        let horizon = b.policy.horizon_ms();
        b.state.count(&m.0, horizon);
        Ok(m.0.len())
    }
}

impl Handler<SetPolicy> for Ledger {
    type Result = ();
    fn handle(&mut self, m: SetPolicy, _: &mut Self::Context) {
        let mut b = self.book.write();
        b.state.retarget(&m.0);
        b.policy = m.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let reg = vec![Registration {
            item_id: 1,
            publish_ts: 5,
            author_id: None,
            quality: Some(0.5),
            author_quality: None,
        }];
        let ex = |a: &str, r: &str| Exposure {
            item_id: 1,
            user_id: 2,
            ts: 6,
            action: a.parse().unwrap(),
            request_id: Some(r.to_string()),
        };
        let policy = || Policy::new(crate::config::TrafficConfig::default()).unwrap();
        let horizon = policy().horizon_ms();
        let batch = vec![
            ex("impression", "r1"),
            ex("impression", "r1"), // the same answer shown twice: one impression
            ex("impression", "r2"),
            ex("click", "r2"),
            Exposure {
                item_id: 9,
                ..ex("click", "r3")
            },
        ];
        {
            let mut l = Ledger::open(dir.path(), policy()).unwrap();
            l.log(record(TAG_REGISTER, &Registration::to_batch(&reg)))
                .unwrap();
            let policy = l.book.read().policy.clone();
            l.book.write().state.register(&reg, &policy);
            // the client retries the whole batch: nothing counts twice
            for _ in 0..2 {
                l.log(record(TAG_EXPOSE, &Exposure::to_batch(&batch)))
                    .unwrap();
                l.book.write().state.count(&batch, horizon);
            }
            assert_eq!(l.book.read().state.duplicates, 5);
        }
        let l = Ledger::open(dir.path(), policy()).unwrap();
        let b = l.book.read();
        let row = &b.state.rows(&[1], 10)[0];
        assert_eq!(
            (row.impressions, row.clicks, row.target_impressions),
            (2, 1, 200),
            "the target by quality 0.5: 100 + 0.5 × 200; the replay dedups as the run did"
        );
        assert_eq!(b.state.duplicates, 5);
        assert_eq!(b.state.untracked, 2);
    }

    /// The target is the base plus the content and the author bonus, each by its quality; an
    /// impossible quality counts as none, and a re-registration never resets the counts.
    #[test]
    fn targets_by_content_and_author_quality() {
        let policy = Policy::new(crate::config::TrafficConfig::default()).unwrap();
        let mut st = LedgerState::default();
        let reg = |item_id, quality, author_quality| Registration {
            item_id,
            publish_ts: 0,
            author_id: Some(3),
            quality,
            author_quality,
        };
        st.register(
            &[
                reg(1, Some(0.5), Some(1.0)),
                reg(2, None, Some(0.25)),
                reg(3, Some(f32::NAN), None),
            ],
            &policy,
        );
        let targets: Vec<u64> = st
            .rows(&[1, 2, 3], 3)
            .iter()
            .map(|r| r.target_impressions)
            .collect();
        assert_eq!(targets, [100 + 100 + 200, 100 + 50, 100]);
        st.count(
            &[Exposure {
                item_id: 1,
                user_id: 1,
                ts: 1,
                action: Action::Impression,
                request_id: None,
            }],
            i64::MAX,
        );
        st.register(&[reg(1, Some(0.0), Some(0.0))], &policy);
        let row = &st.rows(&[1], 1)[0];
        assert_eq!((row.target_impressions, row.impressions), (100, 1));
    }

    /// Without a request id an exposure is known by its time (a retried batch counts once; a
    /// later impression counts again); past the help horizon every exposure counts.
    #[test]
    fn exposures_without_request_id_or_past_the_horizon() {
        let policy = Policy::new(crate::config::TrafficConfig::default()).unwrap();
        let mut st = LedgerState::default();
        let reg = Registration {
            item_id: 1,
            publish_ts: 0,
            author_id: None,
            quality: None,
            author_quality: None,
        };
        st.register(&[reg], &policy);
        let at = |ts| Exposure {
            item_id: 1,
            user_id: 2,
            ts,
            action: Action::Impression,
            request_id: None,
        };
        let h = policy.horizon_ms();
        st.count(&[at(10), at(10), at(20)], h);
        assert_eq!((st.rows(&[1], 1)[0].impressions, st.duplicates), (2, 1));
        st.count(&[at(h + 1), at(h + 1)], h);
        assert_eq!(st.rows(&[1], 1)[0].impressions, 4);
        assert!(!st.counted.contains_key(&1), "keys let go past the horizon");
    }

    #[test]
    fn boosts_at_the_request_time() {
        let policy = Policy::new(crate::config::TrafficConfig::default()).unwrap();
        let mut st = LedgerState::default();
        let reg = |item_id| Registration {
            item_id,
            publish_ts: 0,
            author_id: None,
            quality: None,
            author_quality: None,
        };
        st.register(&[reg(1), reg(2)], &policy);
        let ex: Vec<Exposure> = (0..100)
            .map(|i| Exposure {
                item_id: 2,
                user_id: i,
                ts: 1,
                action: Action::Impression,
                request_id: None,
            })
            .collect();
        st.count(&ex, i64::MAX);
        let half_day = 12 * 3_600_000;
        let rows = st.boosts(&[1, 2, 1, 99], half_day, &policy);
        assert_eq!(
            rows.len(),
            2,
            "each known item once, the unknown one left out"
        );
        let (one, two) = (&rows[0], &rows[1]);
        // half the window gone, nothing delivered: 0.625 of the target due, the curve's top
        assert_eq!((one.item_id, one.boost, one.forceable), (1, 8.0, true));
        assert!((one.behind - 0.625).abs() < 1e-6);
        // the target met: no help
        assert_eq!((two.item_id, two.boost, two.forceable), (2, 1.0, false));
        // the same request time, the same answer; before publication nothing is due
        assert_eq!(st.boosts(&[1, 2], half_day, &policy), rows);
        assert!(st.boosts(&[1], -5, &policy).is_empty());
    }
}
