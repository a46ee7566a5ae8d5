//! Limits on every call of the gRPC port, in one tower layer outside the auth layer:
//! `--request-timeout-ms`, the most a call's handler may take before it answers (a unary
//! call's answer, a stream's opening; a stream itself may last longer). Past it the handler is
//! dropped (its work stops at its next await; an import in progress stops at its next check)
//! and the call is answered DEADLINE_EXCEEDED naming the flag. And the connection's open calls
//! for `--idle-timeout-ms` (crate::tls::Activity): a call is open from its request until its
//! response body ends (a stream's last message), so a connection with a long watch is not idle.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::Status;

type Resp = http::Response<tonic::body::Body>;

/// The layer; `timeout` `None`: no limit.
#[derive(Debug, Clone)]
pub struct LimitsLayer {
    timeout: Option<Duration>,
}

impl LimitsLayer {
    pub fn new(timeout: Option<Duration>) -> LimitsLayer {
        LimitsLayer { timeout }
    }
}

impl<S> tower::Layer<S> for LimitsLayer {
    type Service = Limits<S>;
    fn layer(&self, inner: S) -> Limits<S> {
        Limits {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service [`LimitsLayer`] wraps around the auth layer and the routes.
#[derive(Debug, Clone)]
pub struct Limits<S> {
    inner: S,
    timeout: Option<Duration>,
}

impl<S, B> tower::Service<http::Request<B>> for Limits<S>
where
    S: tower::Service<http::Request<B>, Response = Resp>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Resp;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let timeout = self.timeout;
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
