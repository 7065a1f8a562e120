//! The sharder client's reads: fewest covering calls, rotation, fail-over.

use super::*;
use crate::sharder::list_hits_schema;
use arrow::datatypes::SchemaRef;
use coldstart_runtime::discovery::{Member, MemoryRegistry, Registry};
use coldstart_runtime::flight::{FlightHandler, FlightPool, LOCAL_SCHEME};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A sharder that answers every list query with one hit (item = query index) and counts calls.
struct Fake {
    calls: AtomicUsize,
    broken: bool,
}

#[async_trait::async_trait]
impl FlightHandler<SharderProtocol> for Fake {
    async fn get(&self, t: SharderTicket) -> ServiceResult<(SchemaRef, Vec<RecordBatch>)> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.broken {
            return Err(ServiceError::unavailable("down"));
        }
        let Some(sharder_ticket::Kind::Lists(req)) = t.kind else {
            unreachable!()
        };
        let hits: Vec<ListHit> = (0..req.queries.len())
            .map(|i| ListHit {
                query: i as u32,
                item_id: req.queries[i].key.parse().unwrap(),
                publish_ts: 0,
            })
            .collect();
        Ok((list_hits_schema(), vec![ListHit::to_batch(&hits)]))
    }
    async fn put(&self, _: SharderCommand, _: Vec<RecordBatch>) -> ServiceResult<u64> {
        Ok(0)
    }
}

async fn cluster(
    n: usize,
    broken: &[usize],
) -> (
    SharderClient,
    Vec<Arc<Fake>>,
    Vec<coldstart_runtime::discovery::Registration>,
) {
    let reg = MemoryRegistry::new();
    let pool = Arc::new(FlightPool::new(1 << 20, std::time::Duration::from_secs(1)));
    let mut fakes = Vec::new();
    let mut regs = Vec::new();
    for i in 0..n {
        let f = Arc::new(Fake {
            calls: AtomicUsize::new(0),
            broken: broken.contains(&i),
        });
        let addr = format!("{LOCAL_SCHEME}s{i}");
        pool.register_local::<SharderProtocol>(&addr, f.clone());
        let m = Member {
            node_id: format!("s{i}"),
            role: Role::Sharder,
            grpc_addr: addr.clone(),
            flight_addr: addr,
            http_addr: String::new(),
            version: "t".into(),
            started_at: 0,
            state: MemberState::Serving,
            model: None,
            next_model: None,
            tower_model: None,
            next_tower_model: None,
        };
        regs.push(reg.register(m).await.unwrap());
        fakes.push(f);
    }
    (
        SharderClient::new(Arc::new(Cluster::new(pool, reg.watch(), 2))),
        fakes,
        regs,
    )
}

fn queries(n: usize) -> Vec<ListQuery> {
    (0..n)
        .map(|i| ListQuery {
            kind: "cluster".into(),
            key: i.to_string(),
            limit: 10,
        })
        .collect()
}

fn complete(hits: &[ListHit], n: usize) {
    let mut got: Vec<u64> = hits.iter().map(|h| h.item_id).collect();
    got.sort_unstable();
    assert_eq!(got, (0..n as u64).collect::<Vec<_>>());
    assert!(
        hits.iter().all(|h| h.item_id == h.query as u64),
        "query indices map back"
    );
}

#[tokio::test]
async fn reads_cover_keys_with_as_few_sharders_as_possible() {
    let (c, fakes, _regs) = cluster(2, &[]).await;
    for _ in 0..4 {
        complete(&c.read_lists(&queries(60), None).await.unwrap(), 60);
    }
    let calls: Vec<usize> = fakes
        .iter()
        .map(|f| f.calls.load(Ordering::SeqCst))
        .collect();
    assert_eq!(
        calls.iter().sum::<usize>(),
        4,
        "one call per read when one sharder owns every key: {calls:?}"
    );
    assert!(
        calls.iter().all(|&c| c > 0),
        "ties rotate between sharders: {calls:?}"
    );

    let (c, fakes, _regs) = cluster(4, &[]).await;
    complete(&c.read_lists(&queries(60), None).await.unwrap(), 60);
    let total: usize = fakes.iter().map(|f| f.calls.load(Ordering::SeqCst)).sum();
    assert!(total < 4, "fewer calls than sharders: {total}");
}

#[tokio::test]
async fn a_failed_sharder_fails_over_to_the_replica() {
    let (c, fakes, _regs) = cluster(2, &[0]).await;
    for _ in 0..3 {
        complete(&c.read_lists(&queries(60), None).await.unwrap(), 60);
    }
    assert!(fakes[1].calls.load(Ordering::SeqCst) >= 3);
}
