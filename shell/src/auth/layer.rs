//! The tower layer that authenticates and authorizes every gRPC call before routing: it reads
//! the path, the `authorization` and `knhk-namespace` metadata and the connection's verified
//! client certificate names, and either answers the call itself (UNAUTHENTICATED,
//! PERMISSION_DENIED, INVALID_ARGUMENT) or passes it on with a [`Caller`] in its extensions.
//! The `authorization` header is removed before the handlers see the request.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use tonic::Status;

use super::policy::{self, Need};
use super::{AuthState, Caller, Refusal, DEFAULT_NAMESPACE, NAMESPACE_HEADER};
use crate::audit::{cap, code_name, AuditLog, Record};
use crate::tls::ConnInfo;

/// The layer; `state` `None` lets every call through (no authentication configured), still
/// resolving the namespace each call names.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    state: Option<Arc<AuthState>>,
    audit: Option<Arc<AuditLog>>,
}

impl AuthLayer {
    pub fn new(state: Option<Arc<AuthState>>) -> AuthLayer {
        AuthLayer { state, audit: None }
    }

    /// Every refusal also goes to `audit` (queued, not waited for: nothing changed).
    pub fn with_audit(mut self, audit: Option<Arc<AuditLog>>) -> AuthLayer {
        self.audit = audit;
        self
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            state: self.state.clone(),
            audit: self.audit.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    state: Option<Arc<AuthState>>,
    audit: Option<Arc<AuditLog>>,
}

/// The namespace a request names: `Err` when the metadata is repeated or not a namespace name.
fn namespace_of(headers: &http::HeaderMap) -> Result<String, String> {
    let mut values = headers.get_all(NAMESPACE_HEADER).iter();
    let Some(v) = values.next() else {
        return Ok(DEFAULT_NAMESPACE.to_string());
    };
    if values.next().is_some() {
        return Err(format!("{NAMESPACE_HEADER} is given more than once"));
    }
    match v.to_str() {
        Ok(s) if policy::valid_namespace(s) => Ok(s.to_string()),
        _ => Err(format!(
            "{NAMESPACE_HEADER} is not a namespace name (1 to 63 characters of a-z, 0-9, '-', \
             '_', '.', starting with a letter or digit)"
        )),
    }
}

type Resp = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = Resp>,
{
    type Response = Resp;
    type Error = S::Error;
    type Future = futures_either::Either<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let info = req.extensions().get::<ConnInfo>().cloned();
        if let Some(i) = &info {
            // `Request::remote_addr()` looks for this one.
            req.extensions_mut().insert(i.tcp.clone());
        }
        let open = policy::need(&path) == Some(Need::Open);
        // Who was authenticated, for the audit record of a refusal that comes after.
        let mut known: Option<Arc<super::Principal>> = None;
        let decided = match &self.state {
            // Health: no credentials, no namespace.
            _ if open => Ok(Caller {
                principal: None,
                namespace: DEFAULT_NAMESPACE.to_string(),
                auth: None,
            }),
            None => namespace_of(req.headers())
                .map(|namespace| Caller {
                    principal: None,
                    namespace,
                    auth: None,
                })
                .map_err(Refusal::BadNamespace),
            Some(state) => {
                let values: Vec<&[u8]> = req
                    .headers()
                    .get_all(AUTHORIZATION)
                    .iter()
                    .map(|v| v.as_bytes())
                    .collect();
                let peer = info.as_ref().and_then(|i| i.peer.as_deref());
                let ip = info
                    .as_ref()
                    .and_then(|i| i.tcp.remote_addr)
                    .map(|a| a.ip());
                // An address that failed too often is refused before its credentials cost a
                // signature check.
                let blocked = ip.map_or(Ok(()), |ip| state.limits.check_address(ip));
                let who = match blocked {
                    Ok(()) => state.authenticate(&values, peer),
                    Err(_) => Err(String::new()),
                };
                if let (Err(_), Ok(()), Some(ip)) = (&who, &blocked, ip) {
                    state.limits.note_failure(ip);
                }
                match (blocked, namespace_of(req.headers())) {
                    (Err(t), _) => Err(Refusal::Throttled(t)),
                    // Unauthenticated first: a stranger learns nothing about namespaces.
                    (_, Err(e)) if who.is_ok() => Err(Refusal::BadNamespace(e)),
                    (_, Err(_)) => Err(Refusal::Unauthenticated(who.err().unwrap_or_default())),
                    (_, Ok(namespace)) => {
                        let allowed = state.authorize(&path, &namespace, &who).and_then(|()| {
                            match &who {
                                // Let through: one call from the principal's budget.
                                Ok(p) => state
                                    .limits
                                    .admit_call(&p.key())
                                    .map_err(Refusal::Throttled),
                                Err(_) => Ok(()),
                            }
                        });
                        match allowed {
                            Ok(()) => Ok(Caller {
                                principal: who.ok().map(Arc::new),
                                namespace,
                                auth: Some(state.clone()),
                            }),
                            Err(r) => {
                                known = who.ok().map(Arc::new);
                                Err(r)
                            }
                        }
                    }
                }
            }
        };
        let credential = req.headers_mut().remove(AUTHORIZATION);
        match decided {
            Ok(caller) => {
                if let Some(c) = credential.filter(|_| caller.principal.is_some()) {
                    req.extensions_mut().insert(super::ForwardCredential(c));
                }
                if let Some(p) = &caller.principal {
                    let span = tracing::Span::current();
                    span.record("enduser.id", p.subject_escaped().as_str());
                    span.record("knhk.auth", p.via.name());
                }
                tracing::Span::current().record("knhk.namespace", caller.namespace.as_str());
                // For the audit record of a refusal while the body is read (grpc/limits.rs).
                if let Some(slot) = req
                    .extensions()
                    .get::<Arc<crate::grpc::limits::CallerSlot>>()
                {
                    let _ = slot.0.set(caller.clone());
                }
                req.extensions_mut().insert(caller);
                futures_either::Either::inner(self.inner.call(req))
            }
            Err(refusal) => {
                if let Some(audit) = &self.audit {
                    let caller = Caller {
                        principal: known,
                        namespace: namespace_of(req.headers()).unwrap_or_default(),
                        auth: None,
                    };
                    let peer = info.as_ref().and_then(|i| i.tcp.remote_addr);
                    let (code, why) = match &refusal {
                        Refusal::Unauthenticated(w) => (tonic::Code::Unauthenticated, w),
                        Refusal::Denied(w) => (tonic::Code::PermissionDenied, w),
                        Refusal::BadNamespace(w) => (tonic::Code::InvalidArgument, w),
                        Refusal::Throttled(t) => (tonic::Code::ResourceExhausted, &t.message),
                    };
                    let mut rec = Record::of_caller(&cap(&path), &caller, peer);
                    rec.code = code_name(code).to_string();
                    audit.note(rec.with_message(why));
                }
                if let Some(state) = &self.state {
                    state.note_refusal(
                        &refusal,
                        &path,
                        info.as_ref().and_then(|i| i.tcp.remote_addr),
                    );
                }
                let status = match refusal {
                    Refusal::Unauthenticated(why) => Status::unauthenticated(why),
                    Refusal::Denied(why) => Status::permission_denied(why),
                    Refusal::BadNamespace(why) => Status::invalid_argument(why),
                    Refusal::Throttled(t) => throttled_status(&t),
                };
                futures_either::Either::ready(status.into_http())
            }
        }
    }
}

/// The metadata that says how long a throttled client should wait before retrying.
pub const RETRY_AFTER_HEADER: &str = "knhk-retry-after-ms";

/// RESOURCE_EXHAUSTED for a spent budget, with `knhk-retry-after-ms`.
pub fn throttled_status(t: &super::Throttled) -> Status {
    let mut md = tonic::metadata::MetadataMap::new();
    let ms = t.retry_after.as_millis().max(1).to_string();
    if let Ok(v) = ms.parse() {
        md.insert(RETRY_AFTER_HEADER, v);
    }
    Status::with_metadata(tonic::Code::ResourceExhausted, t.message.clone(), md)
}

/// A future that is the inner service's or an immediate answer.
mod futures_either {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pin_project_lite::pin_project! {
        #[project = EitherProj]
        pub enum Either<F, E> {
            Inner { #[pin] fut: F },
            Ready { resp: Option<super::Resp>, _e: std::marker::PhantomData<E> },
        }
    }

    impl<F, E> Either<F, E> {
        pub fn inner(fut: F) -> Self {
            Either::Inner { fut }
        }
        pub fn ready(resp: super::Resp) -> Self {
            let resp = Some(resp);
            Either::Ready {
                resp,
                _e: std::marker::PhantomData,
            }
        }
    }

    impl<F, E> Future for Either<F, E>
    where
        F: Future<Output = Result<super::Resp, E>>,
    {
        type Output = Result<super::Resp, E>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project() {
                EitherProj::Inner { fut } => fut.poll(cx),
                EitherProj::Ready { resp, .. } => match resp.take() {
                    Some(r) => Poll::Ready(Ok(r)),
                    // Polled again after it answered: never happens with hyper.
                    None => Poll::Pending,
                },
            }
        }
    }
}
