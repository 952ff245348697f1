//! The one gate in front of every gRPC service a drover process serves: a tower layer that
//! runs before any handler, reads the caller's client certificate (from the connection's
//! TLS info in the request extensions) and the request's path and headers, and lets a
//! [`Policy`] admit the call or answer it with a status. Being a layer on the whole server,
//! it covers every service added to it, present and future; a handler cannot forget it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{http, Service};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use crate::identity::{IdentityError, Peer};

/// What the gate knows of a call before it reaches a handler.
#[derive(Debug)]
pub struct Caller<'a> {
    /// The full gRPC path, `/package.Service/Method`.
    pub path: &'a str,
    /// The identity in the client certificate, if the caller presented one.
    pub certificate: Option<Result<Peer, IdentityError>>,
    /// The request headers (gRPC metadata), e.g. `authorization`.
    pub headers: &'a http::HeaderMap,
}

/// Admits a call, or says why not (`UNAUTHENTICATED`, `PERMISSION_DENIED`).
pub trait Policy: Send + Sync + 'static {
    fn admit(&self, caller: &Caller<'_>) -> Result<(), Status>;
}

/// The identity in the client certificate of the connection `extensions` belong to.
pub fn certificate_identity(extensions: &http::Extensions) -> Option<Result<Peer, IdentityError>> {
    let certs = extensions
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    // The first certificate is the client's own; the rest is its chain.
    let leaf = certs.first()?;
    Some(Peer::from_certificate(leaf.as_ref()))
}

/// The layer to give `tonic::transport::Server::builder().layer(…)`.
#[derive(Clone)]
pub struct GuardLayer {
    policy: Arc<dyn Policy>,
}

impl std::fmt::Debug for GuardLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardLayer").finish_non_exhaustive()
    }
}

impl GuardLayer {
    pub fn new(policy: impl Policy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

/// The service [`GuardLayer`] wraps every service in.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    policy: Arc<dyn Policy>,
}

impl<S> std::fmt::Debug for Guard<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<http::Request<B>> for Guard<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let caller = Caller {
            path: req.uri().path(),
            certificate: certificate_identity(req.extensions()),
            headers: req.headers(),
        };
        match self.policy.admit(&caller) {
            Ok(()) => Box::pin(self.inner.call(req)),
            // Refusals are the policy's to log: it knows who and why.
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}
