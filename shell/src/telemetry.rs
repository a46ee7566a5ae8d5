//! Logs and traces: `tracing` everywhere in the shell, never in a kernel worker.
//!
//! - Filter: `RUST_LOG` (default `info`), for logs and spans alike.
//! - Logs: human-readable text, or one JSON object per line (`--log-format json`,
//!   `KNHK_LOG_FORMAT=json`) with the current span's fields (`knhk.workflow_id`,
//!   `knhk.case_id`, `knhk.task`).
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set,
//!   spans go to that collector over OTLP/gRPC (opentelemetry-otlp, tonic). The standard
//!   variables are honoured: `OTEL_SERVICE_NAME` (default `knhk`), `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY`,
//!   `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`; `OTEL_SDK_DISABLED=true` or
//!   `OTEL_TRACES_EXPORTER=none` turns export off. An `https://` endpoint is reached over TLS
//!   (rustls, the one crypto provider): the collector's certificate is checked against
//!   `OTEL_EXPORTER_OTLP_CERTIFICATE` (a PEM CA bundle) or else the system's roots, and
//!   `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` with `OTEL_EXPORTER_OTLP_CLIENT_KEY` present a
//!   client certificate (mutual TLS); each has its `OTEL_EXPORTER_OTLP_TRACES_*` form.
//! - Spans: one per RPC ([`crate::metrics::RpcLayer`]: `rpc.system`, `rpc.service`,
//!   `rpc.method`, `rpc.grpc.status_code`) and one per bulk batch ([`batch_span`]), never one per
//!   kernel operation.
//!
//! Exporting never slows serving: a finished span is handed to the SDK's batch processor with a
//! non-blocking `try_send` into a bounded queue (spans beyond it are dropped and counted by the
//! SDK), and a dedicated thread exports; an absent or failing collector costs that thread
//! retries and timeouts, never a request.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Span;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installed telemetry; [`Telemetry::shutdown`] flushes pending spans.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// True when spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter, waiting at most `timeout`.
    pub fn shutdown(self, timeout: Duration) {
        if let Some(p) = self.provider {
            if let Err(e) = p.shutdown_with_timeout(timeout) {
                eprintln!("knhk: trace export shutdown: {e}");
            }
        }
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// The value of `OTEL_EXPORTER_OTLP_TRACES_<name>`, else `OTEL_EXPORTER_OTLP_<name>`.
fn otlp_env(name: &str) -> Option<(String, String)> {
    [
        format!("OTEL_EXPORTER_OTLP_TRACES_{name}"),
        format!("OTEL_EXPORTER_OTLP_{name}"),
    ]
    .into_iter()
    .find_map(|var| {
        let v = std::env::var(&var).ok()?;
        (!v.trim().is_empty()).then(|| (var, v.trim().to_string()))
    })
}

/// TLS for an `https://` collector endpoint: its CA (or the system's roots) and an optional
/// client certificate. `None` for a plaintext endpoint. Errors name the variable and file.
fn otlp_tls() -> Result<Option<tonic::transport::ClientTlsConfig>, String> {
    let https = otlp_env("ENDPOINT").is_some_and(|(_, v)| v.starts_with("https://"));
    if !https {
        return Ok(None);
    }
    let ca = otlp_env("CERTIFICATE");
    let (cert, key) = (otlp_env("CLIENT_CERTIFICATE"), otlp_env("CLIENT_KEY"));
    fn named((var, path): &(String, String)) -> crate::tls::NamedPem<'_> {
        (var.as_str(), std::path::Path::new(path))
    }
    let identity = match (&cert, &key) {
        (Some(c), Some(k)) => Some((named(c), named(k))),
        (None, None) => None,
        (Some((var, _)), None) | (None, Some((var, _))) => {
            return Err(format!(
                "{var} is set without its pair (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and \
                 OTEL_EXPORTER_OTLP_CLIENT_KEY go together)"
            ))
        }
    };
    crate::tls::client_tls_config(ca.as_ref().map(named), identity).map(Some)
}

/// True when the OTEL_* environment asks for OTLP trace export.
pub fn otlp_requested() -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    !disabled
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The resource spans are reported under: `service.name` from `OTEL_SERVICE_NAME` or
/// `OTEL_RESOURCE_ATTRIBUTES`, else `knhk`; `service.version`.
pub fn resource() -> Resource {
    let named = env_set("OTEL_SERVICE_NAME")
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let mut b = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if !named {
        b = b.with_service_name("knhk");
    }
    b.build()
}

/// Installs the global subscriber: filter, log format, and the OTLP layer when requested.
/// Must run inside a tokio runtime (the tonic exporter's channel is created here).
pub fn init(format: LogFormat) -> Result<Telemetry, Box<dyn std::error::Error + Send + Sync>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match format {
        // Colour only on a terminal: escape codes in a log file or a collector are noise (and
        // a reader's terminal would interpret them).
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let mut telemetry = Telemetry::default();
    let otel = if otlp_requested() {
        use opentelemetry_otlp::WithTonicConfig as _;
        let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(tls) = otlp_tls()? {
            builder = builder.with_tls_config(tls);
        }
        let exporter = builder.build()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build();
        let tracer = provider.tracer("knhk");
        telemetry.provider = Some(provider);
        // The exporter's own transport (tonic, hyper, h2) must not feed spans back into it.
        let own = tracing_subscriber::filter::filter_fn(|m| {
            let t = m.target();
            !(t.starts_with("h2")
                || t.starts_with("hyper")
                || t.starts_with("tonic")
                || t.starts_with("tower")
                || t.starts_with("opentelemetry"))
        });
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(own),
        )
    } else {
        None
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(telemetry)
}

/// Records the workflow of the current RPC on its span.
pub fn record_workflow(id: &str) {
    if !id.is_empty() {
        Span::current().record("knhk.workflow_id", id);
    }
}

/// Records the case (and task) of the current RPC on its span.
pub fn record_case(case_id: u64, task: Option<&str>) {
    let span = Span::current();
    if case_id != 0 {
        span.record("knhk.case_id", case_id);
    }
    if let Some(t) = task {
        span.record("knhk.task", t);
    }
}

/// A span for one bulk batch of a SubmitEvents stream, child of the stream's RPC span.
pub fn batch_span(parent: &Span, events: usize) -> Span {
    tracing::info_span!(
        parent: parent,
        "batch",
        otel.name = "knhk.batch",
        knhk.events = events,
        knhk.refused = tracing::field::Empty,
    )
}
