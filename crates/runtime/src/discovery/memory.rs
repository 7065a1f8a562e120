//! In-process discovery for unit tests and `coldstart all-in-one`: no leases, membership changes
//! are immediate, nothing survives the process.

use super::{Member, Membership, Registration, Registry, ValueKind};
use crate::error::ServiceResult;
use std::sync::Arc;
use tokio::sync::watch;

/// Values by kind and name, each a watch.
type Values = std::collections::HashMap<(ValueKind, String), watch::Sender<Option<String>>>;

/// Discovery inside one process.
#[derive(Clone)]
pub struct MemoryRegistry {
    tx: Arc<watch::Sender<Arc<Membership>>>,
    values: Arc<parking_lot::Mutex<Values>>,
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        Self {
            tx: Arc::new(watch::channel(Arc::new(Membership::default())).0),
            values: Default::default(),
        }
    }
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn value(&self, kind: ValueKind, name: &str) -> watch::Sender<Option<String>> {
        self.values
            .lock()
            .entry((kind, name.to_string()))
            .or_insert_with(|| watch::channel(None).0)
            .clone()
    }
}

#[async_trait::async_trait]
impl Registry for MemoryRegistry {
    async fn register(&self, member: Member) -> ServiceResult<Registration> {
        let (update, mut rx) = watch::channel(member.clone());
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let tx = self.tx.clone();
        tx.send_modify(|m| Arc::make_mut(m).upsert(member.clone()));
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    changed = rx.changed() => {
                        if changed.is_err() { break; }
                        let m = rx.borrow_and_update().clone();
                        tx.send_modify(|all| Arc::make_mut(all).upsert(m));
                    }
                }
            }
            tx.send_modify(|all| Arc::make_mut(all).remove(member.role, &member.node_id));
        });
        Ok(Registration::new(update, stop, task))
    }

    fn watch(&self) -> watch::Receiver<Arc<Membership>> {
        self.tx.subscribe()
    }

    async fn put_value(&self, kind: ValueKind, name: &str, value: &str) -> ServiceResult<()> {
        self.value(kind, name).send_replace(Some(value.to_string()));
        Ok(())
    }

    async fn get_value(&self, kind: ValueKind, name: &str) -> ServiceResult<Option<String>> {
        Ok(self.value(kind, name).borrow().clone())
    }

    fn watch_value(&self, kind: ValueKind, name: &str) -> watch::Receiver<Option<String>> {
        self.value(kind, name).subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::member;
    use super::super::{MemberState, Role};
    use super::*;

    #[tokio::test]
    async fn register_update_and_close_show_on_the_watch() {
        let reg = MemoryRegistry::new();
        let mut w = reg.watch();
        let h = reg.register(member(Role::Sharder, "a")).await.unwrap();
        assert_eq!(w.borrow_and_update().role(Role::Sharder).len(), 1);
        h.set_state(MemberState::Joining);
        w.changed().await.unwrap();
        assert_eq!(
            w.borrow_and_update().get(Role::Sharder, "a").unwrap().state,
            MemberState::Joining
        );
        h.close().await;
        assert!(w.borrow().role(Role::Sharder).is_empty());
    }
}
