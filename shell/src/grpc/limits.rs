//! Limits on every call of the gRPC port, in one tower layer outside the auth layer:
//! `--request-timeout-ms`, the most a call's handler may take before it answers (a unary
//! call's answer, a stream's opening; a stream itself may last longer). Past it the handler is
//! dropped (its work stops at its next await; an import in progress stops at its next check)
//! and the call is answered DEADLINE_EXCEEDED naming the flag.

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
        let fut = self.inner.call(req);
        Box::pin(async move {
            let Some(t) = timeout else {
                return fut.await;
            };
            match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
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
