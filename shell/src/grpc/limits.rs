//! Limits on every call of the gRPC port, in one tower layer outside the auth layer:
//! `--request-timeout-ms`, the most a call's handler may take before it answers (a unary
//! call's answer, a stream's opening; a stream itself may last longer). Past it the handler is
//! dropped (its work stops at its next await; an import in progress stops at its next check)
//! and the call is answered DEADLINE_EXCEEDED naming the flag. And the connection's open calls
//! for `--idle-timeout-ms` (crate::tls::Activity): a call is open from its request until its
//! response body ends (a stream's last message), so a connection with a long watch is not idle.
//! And `--max-request-bytes-in-flight`: the bytes of partly received request messages the
//! server holds, over all calls ([`RequestBudget`]). And `--max-message-bytes` /
//! `--max-model-bytes`: a message whose length prefix is past the limit is refused OUT_OF_RANGE
//! before its bytes are read (tonic's decoder holds the same limits, behind this one).
//!
//! Both refusals happen while the handler reads the request, after the auth layer let the call
//! in: each leaves an audit record (principal, namespace, RPC, code) when there is an audit
//! log; the auth layer puts the caller in the request's [`CallerSlot`] for it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};

use tonic::Status;

use crate::audit::{cap, code_name, AuditLog, Record};
use crate::auth::Caller;

/// The path whose messages `--max-model-bytes` bounds; every other has `--max-message-bytes`.
pub const MODEL_PATH: &str = "/knhk.v1.Knhk/RegisterWorkflow";

/// Who a call is from, once the auth layer has let it in (a request extension this layer
/// inserts and the auth layer fills): for the audit record of a refusal made while the request
/// body is read.
#[derive(Debug, Default)]
pub struct CallerSlot(pub OnceLock<Caller>);

type Resp = http::Response<tonic::body::Body>;

/// The bytes of partly received request messages the server holds, over every call of the
/// port, and the most it may hold (`--max-request-bytes-in-flight`).
///
/// Each request body is read through `Budgeted`, which follows the gRPC framing (a 5-byte
/// header with the message length, then the message): the bytes of a message whose end has
/// not arrived are held against the budget until it has (tonic then decodes it and hands it
/// to the handler, whose memory the concurrency limits bound). A frame that would take the
/// total past the limit fails its call with RESOURCE_EXHAUSTED, so a few clients that send
/// large messages slowly (or never finish them) cannot make the server hold
/// `--max-connections` × `--max-concurrent-streams` × `--max-message-bytes`.
#[derive(Debug, Default)]
pub struct RequestBudget {
    limit: u64,
    held: AtomicU64,
    refused: AtomicU64,
}

impl RequestBudget {
    /// `limit` 0: no limit (the bytes are still counted).
    pub fn new(limit: u64) -> RequestBudget {
        RequestBudget {
            limit,
            ..RequestBudget::default()
        }
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Calls refused for the budget.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn take(&self, n: u64) -> bool {
        let mut cur = self.held.load(Ordering::Relaxed);
        loop {
            let next = cur.saturating_add(n);
            if self.limit != 0 && next > self.limit {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            match self
                .held
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    fn give(&self, n: u64) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The layer; `timeout` `None`: no limit.
#[derive(Debug, Clone)]
pub struct LimitsLayer {
    cfg: LimitsConfig,
}

#[derive(Debug, Clone)]
struct LimitsConfig {
    timeout: Option<Duration>,
    budget: Arc<RequestBudget>,
    /// Largest message of [`MODEL_PATH`], and of every other path (bytes; 0: no limit).
    max_model: u64,
    max_message: u64,
    audit: Option<Arc<AuditLog>>,
    /// The second (Unix time) of the last refusal logged: at most one line a second.
    last_log: Arc<AtomicU64>,
}

impl LimitsLayer {
    /// No message size limit and no audit log until set.
    pub fn new(timeout: Option<Duration>, budget: Arc<RequestBudget>) -> LimitsLayer {
        LimitsLayer {
            cfg: LimitsConfig {
                timeout,
                budget,
                max_model: 0,
                max_message: 0,
                audit: None,
                last_log: Arc::default(),
            },
        }
    }

    /// Refuses messages past `max_message` bytes (`max_model` for RegisterWorkflow).
    pub fn with_message_limits(mut self, max_message: usize, max_model: usize) -> LimitsLayer {
        self.cfg.max_message = max_message as u64;
        self.cfg.max_model = max_model as u64;
        self
    }

    /// Records every refusal of this layer in `audit`.
    pub fn with_audit(mut self, audit: Option<Arc<AuditLog>>) -> LimitsLayer {
        self.cfg.audit = audit;
        self
    }
}

impl<S> tower::Layer<S> for LimitsLayer {
    type Service = Limits<S>;
    fn layer(&self, inner: S) -> Limits<S> {
        Limits {
            inner,
            cfg: self.cfg.clone(),
        }
    }
}

/// The service [`LimitsLayer`] wraps around the auth layer and the routes.
#[derive(Debug, Clone)]
pub struct Limits<S> {
    inner: S,
    cfg: LimitsConfig,
}

/// Where a refusal made while a body is read is recorded.
#[derive(Debug)]
struct RefusalRecord {
    audit: Option<Arc<AuditLog>>,
    path: String,
    peer: Option<std::net::SocketAddr>,
    caller: Arc<CallerSlot>,
    last_log: Arc<AtomicU64>,
}

impl RefusalRecord {
    /// `status` as an audit record (queued, not waited for: nothing changed) and as the error
    /// the body yields.
    fn refuse(&self, status: Status) -> Box<dyn std::error::Error + Send + Sync> {
        let sec = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_log.swap(sec, Ordering::Relaxed) != sec {
            tracing::warn!(
                peer = ?self.peer,
                rpc = %crate::audit::cap(&self.path),
                code = code_name(status.code()),
                "request refused: {} (at most one such line a second)",
                status.message()
            );
        }
        if let Some(audit) = &self.audit {
            let unknown = Caller {
                principal: None,
                namespace: String::new(),
                auth: None,
            };
            let caller = self.caller.0.get().unwrap_or(&unknown);
            let mut rec = Record::of_caller(&cap(&self.path), caller, self.peer);
            rec.code = code_name(status.code()).to_string();
            audit.note(rec.with_message(status.message()));
        }
        Box::new(status)
    }
}

impl<S, B> tower::Service<http::Request<B>> for Limits<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = Resp>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Resp;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let cfg = &self.cfg;
        let timeout = cfg.timeout;
        let budget = cfg.budget.clone();
        let path = req.uri().path();
        let max_message = if path == MODEL_PATH {
            cfg.max_model
        } else {
            cfg.max_message
        };
        let caller = Arc::new(CallerSlot::default());
        let refusal = RefusalRecord {
            audit: cfg.audit.clone(),
            path: path.to_string(),
            peer: req
                .extensions()
                .get::<crate::tls::ConnInfo>()
                .and_then(|i| i.tcp.remote_addr),
            caller: caller.clone(),
            last_log: cfg.last_log.clone(),
        };
        req.extensions_mut().insert(caller);
        let req = req.map(|body| {
            tonic::body::Body::new(Budgeted {
                inner: body,
                framing: Framing::default(),
                hold: Hold { budget, bytes: 0 },
                max_message,
                refusal,
            })
        });
        let open = req
            .extensions()
            .get::<crate::tls::ConnInfo>()
            .and_then(|i| i.activity.as_ref())
            .map(|a| a.enter());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let track = |r: Result<Resp, S::Error>| match open {
                Some(call) => r.map(|resp| {
                    resp.map(|body| {
                        tonic::body::Body::new(Tracked {
                            inner: body,
                            _call: call,
                        })
                    })
                }),
                None => r,
            };
            let Some(t) = timeout else {
                return track(fut.await);
            };
            match tokio::time::timeout(t, fut).await {
                Ok(r) => track(r),
                Err(_) => Ok(Status::deadline_exceeded(format!(
                    "the call took longer than the server's {} ms request timeout \
                     (--request-timeout-ms)",
                    t.as_millis()
                ))
                .into_http()),
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its call open (for the idle timeout) until it ends.
    struct Tracked {
        #[pin]
        inner: tonic::body::Body,
        _call: crate::tls::ActiveCall,
    }
}

impl http_body::Body for Tracked {
    type Data = <tonic::body::Body as http_body::Body>::Data;
    type Error = <tonic::body::Body as http_body::Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Where a request body is in its gRPC framing.
#[derive(Debug, Default)]
struct Framing {
    /// Bytes of the current message's 5-byte header seen so far.
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the current message's body still to come (after a complete header).
    remaining: u64,
    /// The largest message length a header declared.
    largest: u64,
}

impl Framing {
    /// Follows `chunk` through the framing; returns the bytes of it that belong to the
    /// message still incomplete at its end, and whether a message completed within it.
    fn advance(&mut self, mut chunk: &[u8]) -> (u64, bool) {
        let mut completed = false;
        let mut open_bytes = 0u64;
        while !chunk.is_empty() {
            if self.header_len < 5 {
                let take = (5 - self.header_len).min(chunk.len());
                self.header[self.header_len..self.header_len + take]
                    .copy_from_slice(&chunk[..take]);
                self.header_len += take;
                open_bytes += take as u64;
                chunk = &chunk[take..];
                if self.header_len == 5 {
                    let mut len = [0u8; 4];
                    len.copy_from_slice(&self.header[1..5]);
                    self.remaining = u64::from(u32::from_be_bytes(len));
                    self.largest = self.largest.max(self.remaining);
                }
            } else {
                let take = (self.remaining.min(chunk.len() as u64)) as usize;
                self.remaining -= take as u64;
                open_bytes += take as u64;
                chunk = &chunk[take..];
            }
            if self.header_len == 5 && self.remaining == 0 {
                // a message ended: its bytes go to the decoder now
                self.header_len = 0;
                completed = true;
                open_bytes = 0;
            }
        }
        (open_bytes, completed)
    }
}

/// Bytes one body holds against the budget; given back when the body is dropped.
#[derive(Debug)]
struct Hold {
    budget: Arc<RequestBudget>,
    bytes: u64,
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

pin_project_lite::pin_project! {
    /// A request body read against the [`RequestBudget`].
    struct Budgeted<B> {
        #[pin]
        inner: B,
        framing: Framing,
        hold: Hold,
        // 0: no limit.
        max_message: u64,
        refusal: RefusalRecord,
    }
}

impl<B> http_body::Body for Budgeted<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let (open, completed) = this.framing.advance(data.chunk());
            let max = *this.max_message;
            if max != 0 && this.framing.largest > max {
                let flag = if this.refusal.path == MODEL_PATH {
                    "--max-model-bytes"
                } else {
                    "--max-message-bytes"
                };
                return Poll::Ready(Some(Err(this.refusal.refuse(Status::out_of_range(
                    format!(
                        "request message too large: {} bytes, the server's limit is {max} \
                         ({flag})",
                        this.framing.largest
                    ),
                )))));
            }
            // what this body holds after the frame: the open message's bytes (the ones before
            // this frame too, unless a message ended in it)
            let before = this.hold.bytes;
            let after = if completed { open } else { before + open };
            if after > before {
                if !this.hold.budget.take(after - before) {
                    let limit = this.hold.budget.limit();
                    return Poll::Ready(Some(Err(this.refusal.refuse(
                        Status::resource_exhausted(format!(
                            "the server holds {limit} bytes of partly received requests, its \
                             limit (--max-request-bytes-in-flight): retry later"
                        )),
                    ))));
                }
            } else {
                this.hold.budget.give(before - after);
            }
            this.hold.bytes = after;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(len: u32) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len as usize));
        m
    }

    #[test]
    fn framing_counts_only_the_open_message() {
        let mut f = Framing::default();
        // a whole message, then 3 bytes of the next header
        let mut chunk = msg(10);
        chunk.extend_from_slice(&[0, 0, 0]);
        assert_eq!(f.advance(&chunk), (3, true));
        // the rest of the header (length 100) and 50 body bytes
        let mut rest = vec![0u8, 100];
        rest.extend(std::iter::repeat_n(1u8, 50));
        assert_eq!(f.advance(&rest), (52, false));
        // the last 50 bytes end it
        assert_eq!(f.advance(&[2u8; 50]), (0, true));
        // an empty message completes with its header
        assert_eq!(f.advance(&msg(0)), (0, true));
        assert_eq!(f.largest, 100);
        // byte by byte
        for (i, b) in msg(3).iter().enumerate() {
            let (open, done) = f.advance(&[*b]);
            assert_eq!(done, i == 7, "byte {i}");
            assert_eq!(open, if i == 7 { 0 } else { 1 });
        }
    }

    #[test]
    fn the_budget_refuses_past_its_limit_and_counts() {
        let b = RequestBudget::new(100);
        assert!(b.take(60));
        assert!(!b.take(41));
        assert!(b.take(40));
        assert_eq!((b.held(), b.refused()), (100, 1));
        b.give(100);
        assert_eq!(b.held(), 0);
        let unlimited = RequestBudget::new(0);
        assert!(unlimited.take(u64::MAX / 2));
    }
}
