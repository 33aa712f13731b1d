//! Observability as an operator sees it: Prometheus text on the admin port and OpenTelemetry
//! traces exported over OTLP/gRPC to a collector (a small fake one owned by the test), with
//! the service name and the node id on the spans.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dmq_proto::v1::ListTopicsRequest;
use dmq_tests::brokers::process_test_slot;
use dmq_tests::ports::free_addr;
use dmq_tests::{ClusterOpts, ControllerCluster, ServerHandle, deadline, wait_until};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tonic::service::Routes;

/// One exported span: service name, span name, attribute keys.
type SeenSpan = (String, String, Vec<String>);

/// Remembers every exported span.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<SeenSpan>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let keys = span.attributes.iter().map(|a| a.key.clone()).collect();
                    seen.push((service.clone(), span.name, keys));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// GET http://addr/metrics with a plain HTTP/1.0 request; the body.
fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_metrics_on_the_admin_port_and_traces_over_otlp() {
    let _slot = process_test_slot().await;
    let collector = Collector::default();
    let server = ServerHandle::start(Routes::new(TraceServiceServer::new(collector.clone()))).await;
    let admin = free_addr();
    let opts = ClusterOpts {
        extra_args: vec![
            "--admin-listen".into(),
            admin.to_string(),
            "--otlp-endpoint".into(),
            format!("http://{}", server.addr()),
        ],
        ..ClusterOpts::default()
    };
    let mut cluster = ControllerCluster::start(1, opts).await;
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let mut client = cluster.leader_client().await;
    client
        .list_topics(ListTopicsRequest::default())
        .await
        .expect("ListTopics");

    let text = wait_until(deadline(Duration::from_secs(20)), || async {
        match scrape(admin) {
            Ok(t) if t.contains("raft_current_term") && t.contains("raft_is_leader 1") => Ok(t),
            Ok(t) => Err(format!("metrics so far: {}", &t[..t.len().min(300)])),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .expect("metrics served");
    for name in [
        "raft_commit_index",
        "raft_applied_index",
        "raft_leader_changes_total",
        "raft_entries_replicated_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }

    wait_until(deadline(Duration::from_secs(30)), || async {
        let seen = collector.0.lock().unwrap().clone();
        let ok = seen.iter().any(|(service, name, keys)| {
            service == "dmq-controller"
                && name == "list_topics"
                && keys.iter().any(|k| k == "node_id")
        });
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} spans so far: {:?}",
                seen.len(),
                seen.iter().take(5).collect::<Vec<_>>()
            ))
        }
    })
    .await
    .expect("a ListTopics span with node_id reached the collector");
}
