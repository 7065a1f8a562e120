//! etcd discovery. A member key is bound to a lease; a keep-alive loop renews it every TTL/3 with a
//! timeout, and on any failure (lost lease, keep-alive timeout, etcd restart) connects again,
//! grants a new lease and puts the key again, forever, until the registration is closed. The
//! membership view is a get-then-watch loop that starts over from a fresh get after any error and
//! keeps the last membership it saw while etcd is unreachable.

use super::{
    member_key, members_prefix, parse_member_key, value_key, Member, Membership, Registration,
    Registry, ValueKind,
};
use crate::error::{ServiceError, ServiceResult};
use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// etcd connection settings.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// Endpoints, e.g. `http://127.0.0.1:23790`.
    pub endpoints: Vec<String>,
    /// Cluster name (key namespace).
    pub cluster: String,
    /// Lease TTL, seconds.
    pub lease_ttl_s: u64,
    /// Timeout of one request.
    pub request_timeout: Duration,
}

impl EtcdSettings {
    /// The settings a process's configuration gives.
    pub fn from_config(cfg: &crate::ProcessConfig) -> Self {
        Self {
            endpoints: cfg.discovery.endpoints.clone(),
            cluster: cfg.cluster.clone(),
            lease_ttl_s: cfg.discovery.lease_ttl_s,
            request_timeout: Duration::from_millis(cfg.discovery.request_timeout_ms),
        }
    }
}

/// Discovery backed by etcd.
pub struct EtcdRegistry {
    settings: EtcdSettings,
    membership: watch::Receiver<Arc<Membership>>,
    watch_task: tokio::task::JoinHandle<()>,
}

impl Drop for EtcdRegistry {
    fn drop(&mut self) {
        self.watch_task.abort();
    }
}

impl EtcdRegistry {
    /// Starts the membership watch and waits (up to one request timeout) for a first view; if etcd
    /// is not reachable yet the view starts empty and fills in once it is.
    pub async fn start(settings: EtcdSettings) -> ServiceResult<Self> {
        if settings.endpoints.is_empty() {
            return Err(ServiceError::invalid("discovery.endpoints is empty"));
        }
        let (tx, mut rx) = watch::channel(Arc::new(Membership::default()));
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let watch_task = tokio::spawn(watch_loop(settings.clone(), tx, first_tx));
        if tokio::time::timeout(settings.request_timeout, first_rx)
            .await
            .is_err()
        {
            warn!(endpoints = ?settings.endpoints, "etcd not reachable yet, starting with an empty membership");
        }
        rx.mark_unchanged();
        Ok(Self {
            settings,
            membership: rx,
            watch_task,
        })
    }
}

#[async_trait::async_trait]
impl Registry for EtcdRegistry {
    async fn register(&self, member: Member) -> ServiceResult<Registration> {
        let (update, member_rx) = watch::channel(member);
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(keep_registered(
            self.settings.clone(),
            member_rx,
            stopped,
            first_tx,
        ));
        // Wait for the first successful put so that a caller that registers and then announces
        // readiness really is visible; if etcd is down the loop keeps trying in the background.
        if tokio::time::timeout(self.settings.request_timeout * 2, first_rx)
            .await
            .is_err()
        {
            warn!("etcd not reachable, registration continues in the background");
        }
        Ok(Registration::new(update, stop, task))
    }

    fn watch(&self) -> watch::Receiver<Arc<Membership>> {
        self.membership.clone()
    }

    async fn put_value(&self, kind: ValueKind, name: &str, value: &str) -> ServiceResult<()> {
        let key = value_key(&self.settings.cluster, kind, name);
        let put = async {
            let mut client = connect(&self.settings).await?;
            client.put(key.clone(), value, None).await
        };
        match tokio::time::timeout(self.settings.request_timeout * 2, put).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ServiceError::unavailable(format!("etcd put {key}: {e}"))),
            Err(_) => Err(ServiceError::unavailable(format!(
                "etcd put {key}: timed out"
            ))),
        }
    }

    async fn get_value(&self, kind: ValueKind, name: &str) -> ServiceResult<Option<String>> {
        let key = value_key(&self.settings.cluster, kind, name);
        let get = async {
            let mut client = connect(&self.settings).await?;
            client.get(key.clone(), None).await
        };
        match tokio::time::timeout(self.settings.request_timeout * 2, get).await {
            Ok(Ok(r)) => Ok(r
                .kvs()
                .first()
                .map(|kv| String::from_utf8_lossy(kv.value()).to_string())),
            Ok(Err(e)) => Err(ServiceError::unavailable(format!("etcd get {key}: {e}"))),
            Err(_) => Err(ServiceError::unavailable(format!(
                "etcd get {key}: timed out"
            ))),
        }
    }

    fn watch_value(&self, kind: ValueKind, name: &str) -> watch::Receiver<Option<String>> {
        let (tx, rx) = watch::channel(None);
        let key = value_key(&self.settings.cluster, kind, name);
        let s = self.settings.clone();
        // ends when every receiver is gone
        tokio::spawn(async move {
            let mut attempt = 0u32;
            while !tx.is_closed() {
                let result: Result<(), etcd_client::Error> = async {
                    let mut client = connect(&s).await?;
                    let resp = client.get(key.clone(), None).await?;
                    let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
                    if let Some(kv) = resp.kvs().first() {
                        let v = String::from_utf8_lossy(kv.value()).to_string();
                        tx.send_if_modified(|cur| replace(cur, v));
                    }
                    attempt = 0;
                    let opts = WatchOptions::new().with_start_revision(revision + 1);
                    let mut stream = client.watch(key.clone(), Some(opts)).await?;
                    while let Some(resp) = stream.message().await? {
                        for ev in resp.events() {
                            if let (EventType::Put, Some(kv)) = (ev.event_type(), ev.kv()) {
                                let v = String::from_utf8_lossy(kv.value()).to_string();
                                tx.send_if_modified(|cur| replace(cur, v));
                            }
                        }
                        if tx.is_closed() {
                            break;
                        }
                    }
                    Ok(())
                }
                .await;
                if let Err(e) = result {
                    warn!(key = %key, error = %e, attempt, "watch failed, keeping the last value and retrying");
                }
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
            }
        });
        rx
    }
}

fn replace(cur: &mut Option<String>, v: String) -> bool {
    if cur.as_deref() == Some(v.as_str()) {
        false
    } else {
        *cur = Some(v);
        true
    }
}

async fn connect(s: &EtcdSettings) -> Result<Client, etcd_client::Error> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(s.request_timeout)
        .with_timeout(s.request_timeout)
        // etcd refuses HTTP/2 pings more often than --grpc-keepalive-min-time (5 s by default)
        // with GOAWAY, which would tear down every watch and keep-alive stream.
        .with_keep_alive(Duration::from_secs(10), s.request_timeout);
    Client::connect(&s.endpoints, Some(opts)).await
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((100u64 << attempt.min(4)).min(1000))
}

async fn keep_registered(
    s: EtcdSettings,
    mut member_rx: watch::Receiver<Member>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
    first: tokio::sync::oneshot::Sender<()>,
) {
    let mut first = Some(first);
    let mut attempt = 0u32;
    let ttl = s.lease_ttl_s as i64;
    let renew_every = Duration::from_millis((s.lease_ttl_s * 1000 / 3).max(200));
    loop {
        let member = member_rx.borrow_and_update().clone();
        let key = member_key(&s.cluster, member.role, &member.node_id);
        let session = async {
            let mut client = connect(&s).await?;
            let lease = client.lease_grant(ttl, None).await?.id();
            let value = serde_json::to_vec(&member).expect("member serialises");
            client
                .put(
                    key.clone(),
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                )
                .await?;
            let (keeper, stream) = client.lease_keep_alive(lease).await?;
            Ok::<_, etcd_client::Error>((client, lease, keeper, stream))
        };
        let (mut client, lease, mut keeper, mut stream) = tokio::select! {
            _ = &mut stopped => return,
            r = tokio::time::timeout(s.request_timeout * 2, session) => match r {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => {
                    warn!(node_id = %member.node_id, error = %e, attempt, "etcd registration failed, retrying");
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(_) => {
                    warn!(node_id = %member.node_id, attempt, "etcd registration timed out, retrying");
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
            }
        };
        attempt = 0;
        info!(node_id = %member.node_id, role = %member.role, lease, ttl_s = ttl, "registered");
        if let Some(f) = first.take() {
            let _ = f.send(());
        }
        let mut tick = tokio::time::interval(renew_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stopped => {
                    let _ = tokio::time::timeout(s.request_timeout, async {
                        let _ = client.delete(key.clone(), None).await;
                        let _ = client.lease_revoke(lease).await;
                    }).await;
                    info!(node_id = %member.node_id, "deregistered");
                    return;
                }
                changed = member_rx.changed() => {
                    if changed.is_err() { return; }
                    let m = member_rx.borrow_and_update().clone();
                    let value = serde_json::to_vec(&m).expect("member serialises");
                    let put = client.put(key.clone(), value, Some(PutOptions::new().with_lease(lease)));
                    if !matches!(tokio::time::timeout(s.request_timeout, put).await, Ok(Ok(_))) {
                        warn!(node_id = %m.node_id, "member update failed, re-registering");
                        break;
                    }
                    debug!(node_id = %m.node_id, state = ?m.state, "member updated");
                }
                _ = tick.tick() => {
                    let renew = async {
                        keeper.keep_alive().await?;
                        stream.message().await
                    };
                    match tokio::time::timeout(s.request_timeout, renew).await {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                        Ok(Ok(_)) => {
                            warn!(node_id = %member.node_id, lease, ttl_s = ttl, "lease lost, re-registering");
                            break;
                        }
                        Ok(Err(e)) => {
                            warn!(node_id = %member.node_id, lease, error = %e, "keep-alive failed, re-registering");
                            break;
                        }
                        Err(_) => {
                            warn!(node_id = %member.node_id, lease, "keep-alive timed out, re-registering");
                            break;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(backoff(0)).await;
    }
}

async fn watch_loop(
    s: EtcdSettings,
    tx: watch::Sender<Arc<Membership>>,
    first: tokio::sync::oneshot::Sender<()>,
) {
    let prefix = members_prefix(&s.cluster);
    let mut first = Some(first);
    let mut attempt = 0u32;
    loop {
        let result: Result<(), etcd_client::Error> = async {
            let mut client = connect(&s).await?;
            let resp = client
                .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await?;
            let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            let mut view = Membership::default();
            for kv in resp.kvs() {
                if let Some(m) = decode(&prefix, kv.key(), kv.value()) {
                    view.upsert(m);
                }
            }
            publish(&tx, view.clone());
            if let Some(f) = first.take() {
                let _ = f.send(());
            }
            attempt = 0;
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision + 1);
            let mut stream = client.watch(prefix.clone(), Some(opts)).await?;
            while let Some(resp) = stream.message().await? {
                if resp.canceled() {
                    break;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    match ev.event_type() {
                        EventType::Put => {
                            if let Some(m) = decode(&prefix, kv.key(), kv.value()) {
                                view.upsert(m);
                            }
                        }
                        EventType::Delete => {
                            if let Some((role, id)) = std::str::from_utf8(kv.key())
                                .ok()
                                .and_then(|k| parse_member_key(&prefix, k))
                            {
                                view.remove(role, &id);
                            }
                        }
                    }
                }
                publish(&tx, view.clone());
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            warn!(error = %e, attempt, "membership watch failed, keeping the last view and retrying");
        }
        attempt += 1;
        tokio::time::sleep(backoff(attempt)).await;
    }
}

fn decode(prefix: &str, key: &[u8], value: &[u8]) -> Option<Member> {
    let key = std::str::from_utf8(key).ok()?;
    let (role, id) = parse_member_key(prefix, key)?;
    match serde_json::from_slice::<Member>(value) {
        Ok(m) if m.role == role && m.node_id == id => Some(m),
        Ok(_) => {
            warn!(key, "member value does not match its key, ignored");
            None
        }
        Err(e) => {
            warn!(key, error = %e, "unreadable member value, ignored");
            None
        }
    }
}

fn publish(tx: &watch::Sender<Arc<Membership>>, view: Membership) {
    tx.send_if_modified(|cur| {
        if **cur == view {
            false
        } else {
            *cur = Arc::new(view);
            true
        }
    });
}
