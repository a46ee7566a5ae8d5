//! OTLP trace export to a collector over TLS (issue 12 item 1): an `https://` endpoint no longer
//! stops the server from starting; spans reach a collector whose certificate chains to
//! `OTEL_EXPORTER_OTLP_CERTIFICATE` and which demands a client certificate
//! (`OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CLIENT_KEY`); a client
//! certificate without its key stops the start with a line naming the variable.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use support::certs::{ca, leaf};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(n, Ordering::SeqCst);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_collector_over_mutual_tls() {
    knhk_shell::tls::install_crypto_provider();
    let dir = support::scratch("otlp-tls");
    let auth = ca("otlp test CA");
    let (server_cert, server_key) = leaf(&auth, 2, true);
    let (client_cert, client_key) = leaf(&auth, 3, false);
    for (name, text) in [
        ("ca.pem", &auth.pem),
        ("client.pem", &client_cert),
        ("client.key", &client_key),
    ] {
        std::fs::write(dir.join(name), text).expect("write");
    }
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let svc = collector.clone();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&server_cert, &server_key))
        .client_ca_root(Certificate::from_pem(&auth.pem));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .tls_config(tls)
            .expect("tls")
            .add_service(TraceServiceServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });

    let path = |n: &str| dir.join(n).display().to_string();
    let endpoint = format!("https://localhost:{port}");
    let prefix = format!(
        "export OTEL_EXPORTER_OTLP_ENDPOINT={endpoint} OTEL_BSP_SCHEDULE_DELAY=100 \
         OTEL_EXPORTER_OTLP_CERTIFICATE={} OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE={} \
         OTEL_EXPORTER_OTLP_CLIENT_KEY={}",
        path("ca.pem"),
        path("client.pem"),
        path("client.key")
    );
    let mut p = support::spawn(
        &dir.join("data"),
        &dir.join("serve.log"),
        &["--durability", "off"],
        Some(&prefix),
    );
    let mut c = p
        .ready()
        .await
        .expect("the server starts with an https:// collector");
    for _ in 0..5 {
        c.list_workflows(knhk_shell::proto::ListWorkflowsRequest {})
            .await
            .expect("call");
    }
    let t0 = Instant::now();
    while collector.spans.load(Ordering::SeqCst) == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no span reached the TLS collector: {}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.kill();

    // A client certificate without its key: the start stops, naming the variable.
    let out = Command::new(support::bin())
        .args(["serve", "--grpc-addr", "127.0.0.1:0", "--durability", "off"])
        .env("KNHK_HTTP_ADDR", "off")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", path("client.pem"))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE is set without its pair"),
        "{err}"
    );
}
