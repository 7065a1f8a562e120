//! One recall is one trace: with OTLP export on, a recall that enters the aggregator with a W3C
//! `traceparent` produces spans from the aggregator, the profile service and the sharders, all
//! under the caller's trace id, exported to a real OTLP/gRPC receiver run by the test.

use coldstart_integration_tests::{eventually, free_port, now_ms, Options, TestCluster};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (trace id hex, service.name, span name)
type Spans = Arc<Mutex<Vec<(String, String, String)>>>;

struct Receiver(Spans);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut out = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let tid: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                    out.push((tid, service.clone(), span.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_recall_is_one_trace_across_services() -> anyhow::Result<()> {
    let spans: Spans = Arc::default();
    let port = free_port();
    let svc = TraceServiceServer::new(Receiver(spans.clone()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve(([127, 0, 0, 1], port).into()),
    );

    let opts = Options {
        env: vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                format!("http://127.0.0.1:{port}"),
            ),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
        ..Default::default()
    };
    let c = TestCluster::start(opts).await?;
    let now = now_ms();
    let items: Vec<_> = (1..=50u64).map(|i| json!({"item_id": i, "publish_ts": now - 1000 + i as i64, "category": format!("c{}", i % 5), "keywords": ["k"], "title": "t"})).collect();
    assert_eq!(c.post("/v1/items", &items).await?.0, 200);
    assert_eq!(
        c.post(
            "/v1/users",
            &[json!({"user_id": 1, "signup_ts": now, "interests": ["c1", "c2", "c3"]})]
        )
        .await?
        .0,
        200
    );

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp: serde_json::Value = c
        .http
        .get(format!("{}/v1/recall?user_id=1&k=10", c.api()))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        resp["trace_id"], trace_id,
        "the answer names the caller's trace"
    );
    assert!(!resp["items"].as_array().unwrap().is_empty());

    let by_service = eventually(
        "spans from aggregator, profile and sharder",
        Duration::from_secs(20),
        || {
            let spans = spans.clone();
            async move {
                let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                for (tid, service, name) in spans.lock().unwrap().iter() {
                    if tid == trace_id {
                        m.entry(service.clone()).or_default().insert(name.clone());
                    }
                }
                let all = [
                    "coldstart-aggregator",
                    "coldstart-profile",
                    "coldstart-sharder",
                ]
                .iter()
                .all(|s| m.contains_key(*s));
                // the root span ends (and is exported) last
                (all && m["coldstart-aggregator"].contains("http.recall")).then_some(m)
            }
        },
    )
    .await?;
    assert!(
        by_service["coldstart-aggregator"].contains("http.recall"),
        "{by_service:?}"
    );
    assert!(
        by_service["coldstart-profile"].contains("flight.do_get"),
        "{by_service:?}"
    );
    assert!(
        by_service["coldstart-sharder"].contains("flight.do_get"),
        "{by_service:?}"
    );
    Ok(())
}
