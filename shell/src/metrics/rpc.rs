//! The RPC layer: a tower layer on the tonic server that opens one tracing span per RPC and
//! counts and times each by method and gRPC code.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use super::{RpcLabels, RpcMetrics};

/// Tower layer on the tonic server: per request, a tracing span (`rpc.system`, `rpc.service`,
/// `rpc.method`, `rpc.grpc.status_code`, plus `knhk.*` fields the handlers record) and, at the
/// end of the response stream, a count and a latency by method and code.
#[derive(Clone, Debug)]
pub struct RpcLayer {
    metrics: Option<RpcMetrics>,
}

impl RpcLayer {
    /// A layer recording into `metrics` (None: spans only).
    pub fn new(metrics: Option<RpcMetrics>) -> RpcLayer {
        RpcLayer { metrics }
    }
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;
    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`RpcLayer`] wraps around the routes.
#[derive(Clone, Debug)]
pub struct RpcService<S> {
    inner: S,
    metrics: Option<RpcMetrics>,
}

/// Splits `/pkg.Service/Method`.
fn split_path(path: &str) -> (&str, &str) {
    let p = path.strip_prefix('/').unwrap_or(path);
    match p.split_once('/') {
        Some((s, m)) => (s, m),
        None => ("", p),
    }
}

/// gRPC status code names, by number.
pub fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// What the body wrapper reports once the response is over.
struct Finish {
    metrics: Option<RpcMetrics>,
    span: tracing::Span,
    service: String,
    method: String,
    start: Instant,
    done: bool,
}

impl Finish {
    fn finish(&mut self, code: i32, message: Option<&str>) {
        if self.done {
            return;
        }
        self.done = true;
        log_refusal(&self.service, &self.method, code, message);
        self.span.record("rpc.grpc.status_code", code);
        if code != 0 {
            self.span.record("otel.status_code", "ERROR");
        }
        if let Some(m) = &self.metrics {
            m.in_flight.dec();
            // A method the server does not have answers UNIMPLEMENTED: label it as such rather
            // than let a client mint label values.
            let (service, method) = if code == 12 {
                ("unknown".to_string(), "unknown".to_string())
            } else {
                (
                    std::mem::take(&mut self.service),
                    std::mem::take(&mut self.method),
                )
            };
            let labels = RpcLabels {
                service,
                method,
                code: code_name(code).to_string(),
            };
            m.requests.get_or_create(&labels).inc();
            m.duration
                .get_or_create(&labels)
                .observe(self.start.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        // Dropped before trailers: the client went away mid-response.
        self.finish(1, None);
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
}

/// The status message as sent (percent-encoded: a control character in it cannot forge a log
/// line).
fn grpc_message(headers: &http::HeaderMap) -> Option<&str> {
    headers.get("grpc-message").and_then(|v| v.to_str().ok())
}

/// Refusal lines logged per second, at most; the rest are counted and the count logged with
/// the next line.
const REFUSAL_LINES_PER_SECOND: u64 = 20;
/// The second (since the Unix epoch) the current budget is for, and the lines it has used.
static REFUSAL_SECOND: AtomicU64 = AtomicU64::new(0);
static REFUSAL_LINES: AtomicU64 = AtomicU64::new(0);
static REFUSALS_SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Logs a refused or failed call (every code but OK and CANCELLED, which is the client's own
/// doing), rate-limited: a flood of bad calls costs a bounded number of log lines, and says
/// how many it did not log.
fn log_refusal(service: &str, method: &str, code: i32, message: Option<&str>) {
    if code == 0 || code == 1 {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if REFUSAL_SECOND.swap(now, Ordering::Relaxed) != now {
        REFUSAL_LINES.store(0, Ordering::Relaxed);
    }
    if REFUSAL_LINES.fetch_add(1, Ordering::Relaxed) >= REFUSAL_LINES_PER_SECOND {
        REFUSALS_SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = REFUSALS_SUPPRESSED.swap(0, Ordering::Relaxed);
    let message = message.unwrap_or("");
    // Bounded: the engine bounds what it echoes, but a status can come from elsewhere.
    let message = &message[..message.floor_char_boundary(256)];
    let code_name = code_name(code);
    match code {
        // Errors of the server, or of its limits: an operator looks at these.
        2 | 4 | 8 | 12 | 13 | 14 | 15 => tracing::warn!(
            rpc.service = service,
            rpc.method = method,
            code = code_name,
            message,
            suppressed,
            "call failed"
        ),
        _ => tracing::info!(
            rpc.service = service,
            rpc.method = method,
            code = code_name,
            message,
            suppressed,
            "call refused"
        ),
    }
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for RpcService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: http_body::Body,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let path = req.uri().path();
        let (service, method) = split_path(path);
        let span = tracing::info_span!(
            "grpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            knhk.workflow_id = tracing::field::Empty,
            knhk.case_id = tracing::field::Empty,
            knhk.task = tracing::field::Empty,
            knhk.events = tracing::field::Empty,
            enduser.id = tracing::field::Empty,
            knhk.auth = tracing::field::Empty,
            knhk.namespace = tracing::field::Empty,
        );
        if let Some(m) = &self.metrics {
            m.in_flight.inc();
        }
        let mut finish = Finish {
            metrics: self.metrics.clone(),
            span: span.clone(),
            service: service.to_string(),
            method: method.to_string(),
            start: Instant::now(),
            done: false,
        };
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(async move {
            let res = {
                let instrumented = tracing::Instrument::instrument(fut, span);
                instrumented.await
            };
            match res {
                Ok(resp) => {
                    // Trailers-only responses (most errors) carry the status in the headers.
                    let (parts, body) = resp.into_parts();
                    if let Some(code) = grpc_status(&parts.headers) {
                        finish.finish(code, grpc_message(&parts.headers));
                    }
                    Ok(http::Response::from_parts(
                        parts,
                        MeteredBody {
                            inner: body,
                            finish: Some(finish),
                        },
                    ))
                }
                Err(e) => {
                    finish.finish(2, Some("the service failed before answering"));
                    Err(e)
                }
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports the gRPC status from the trailers when the stream ends.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        finish: Option<Finish>,
    }
}

impl<B: http_body::Body> http_body::Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(t) = frame.trailers_ref() {
                    if let Some(f) = this.finish.as_mut() {
                        f.finish(grpc_status(t).unwrap_or(0), grpc_message(t));
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(f) = this.finish.as_mut() {
                    f.finish(2, Some("the response body failed"));
                }
            }
            Poll::Ready(None) => {
                if let Some(f) = this.finish.as_mut() {
                    // Ended without trailers: the status was in the headers (already recorded)
                    // or the stream closed cleanly.
                    f.finish(0, None);
                }
            }
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts watch events a subscriber lost.
pub fn watch_lost(m: Option<&RpcMetrics>, n: u64) {
    if let Some(m) = m {
        m.watch_lost.inc_by(n);
    }
}
