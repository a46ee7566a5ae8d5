//! The gRPC edge: the `knhk.v1.Knhk` service over the engine, conversion between `knhk.v1`
//! messages and the engine's vocabulary, and the mapping of engine refusals to gRPC statuses
//! (the only place that knows gRPC codes). The server's life cycle (health, reflection,
//! shutdown) is in `crate::server`.

pub mod codec;
pub mod convert;
pub mod limits;
pub mod service;
pub mod status;

/// The gRPC service name of `knhk.v1.Knhk` (health reports it by this name).
pub const SERVICE_NAME: &str = "knhk.v1.Knhk";

/// The gRPC health name of "new cases accepted": SERVING while the server is ready and a new
/// case has a slot (a free one, or a finished case to evict). A full engine still serves its
/// running cases (`SERVICE_NAME` stays SERVING), so this is for routing new cases, not for
/// taking the server out of service.
pub const NEW_CASES_SERVICE: &str = "knhk.v1.Knhk.CreateCase";

/// `knhk.v1.Knhk` with a request size limit per method: `RegisterWorkflow` (a model) may be as
/// large as `max_model_bytes`, every other request at most `max_message_bytes`. tonic applies
/// one decoding limit per service, checked from a message's length prefix before its body is
/// buffered, so the service is served by two instances of the generated server (one
/// implementation behind both) and each call goes to the one whose limit fits its method.
#[allow(missing_debug_implementations)] // the service holds the engine, which has no useful Debug
pub struct SizedKnhk<S = service::KnhkService> {
    models: crate::proto::knhk_server::KnhkServer<S>,
    messages: crate::proto::knhk_server::KnhkServer<S>,
}

// By hand: the generated servers share the service through an Arc, whatever `S` is.
impl<S> Clone for SizedKnhk<S> {
    fn clone(&self) -> Self {
        SizedKnhk {
            models: self.models.clone(),
            messages: self.messages.clone(),
        }
    }
}

impl<S: crate::proto::knhk_server::Knhk> SizedKnhk<S> {
    pub fn new(service: S, max_message_bytes: usize, max_model_bytes: usize) -> SizedKnhk<S> {
        use crate::proto::knhk_server::KnhkServer;
        let shared = std::sync::Arc::new(service);
        let encode = crate::server::MAX_MESSAGE_BYTES;
        SizedKnhk {
            models: KnhkServer::from_arc(shared.clone())
                .max_decoding_message_size(max_model_bytes)
                .max_encoding_message_size(encode),
            messages: KnhkServer::from_arc(shared)
                .max_decoding_message_size(max_message_bytes)
                .max_encoding_message_size(encode),
        }
    }
}

impl<S> tonic::server::NamedService for SizedKnhk<S> {
    const NAME: &'static str = SERVICE_NAME;
}

impl<S: crate::proto::knhk_server::Knhk, B> tower::Service<http::Request<B>> for SizedKnhk<S>
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Both generated servers are always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == "/knhk.v1.Knhk/RegisterWorkflow" {
            Box::pin(self.models.call(req))
        } else {
            Box::pin(self.messages.call(req))
        }
    }
}
