//! The kit's client channel: lazily connected, over TLS for `https://` peers, with sane connect
//! timeouts and keepalives, and the [`ClientTraceLayer`](crate::trace::ClientTraceLayer) so every
//! outgoing call carries the caller's trace context.
//!
//! A channel either keeps one HTTP/2 connection to the peer's name ([`channel`]: behind a
//! Kubernetes ClusterIP Service the connection lands on one replica, and the servers' maximum
//! connection age spreads clients over time), or resolves the name to every address behind it and
//! balances each call over them ([`balanced_channel`]: for a headless Service, see
//! [`crate::balance`]).

use std::{
    task::{Context, Poll},
    time::Duration,
};

use futures::{
    TryFutureExt as _,
    future::{BoxFuture, Either, MapErr},
};
use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::{
    body::Body,
    transport::{Channel as RawChannel, Endpoint, channel::ResponseFuture},
};
use tower::{BoxError, Layer as _, Service, buffer::Buffer};

use crate::{
    balance::PeerResolver,
    tls::ClientTls,
    trace::{ClientTrace, ClientTraceLayer},
};

/// A traced channel; pass it to any generated client (`CatalogServiceClient::new(channel)`).
pub type Channel = ClientTrace<PeerChannel>;

/// Why a peer channel could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The URL is not a valid endpoint.
    #[error("{0}")]
    Uri(#[from] tonic::transport::Error),
    /// An `https://` peer without a CA bundle to verify it against.
    #[error("an https:// peer needs --tls-ca-file (the CA bundle its certificate chains to)")]
    HttpsWithoutCa,
    /// The URL has no host name to connect to or resolve.
    #[error("the URL names no host")]
    NoHost,
}

/// The calls of a balanced channel go through this buffer to the balancer's task.
pub type BalancedService =
    Buffer<http::Request<Body>, BoxFuture<'static, Result<http::Response<Body>, BoxError>>>;

/// Where a [`Channel`] sends its calls: one connection, or a balancer over every address of the
/// peer's name.
#[derive(Clone)]
pub enum PeerChannel {
    /// One lazily connected HTTP/2 connection to the URL's host.
    Connection(RawChannel),
    /// Each call goes to the less loaded of two addresses picked at random
    /// (see [`crate::balance`]).
    PerRequest(BalancedService),
}

impl std::fmt::Debug for PeerChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connection(channel) => f.debug_tuple("Connection").field(channel).finish(),
            Self::PerRequest(_) => f.write_str("PerRequest"),
        }
    }
}

type ConnectionFuture = MapErr<ResponseFuture, fn(tonic::transport::Error) -> BoxError>;

impl Service<http::Request<Body>> for PeerChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future =
        Either<ConnectionFuture, <BalancedService as Service<http::Request<Body>>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::Connection(channel) => channel.poll_ready(cx).map_err(Into::into),
            Self::PerRequest(balanced) => balanced.poll_ready(cx),
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self {
            Self::Connection(channel) => Either::Left(
                channel
                    .call(request)
                    .map_err(Into::into as fn(tonic::transport::Error) -> BoxError),
            ),
            Self::PerRequest(balanced) => Either::Right(balanced.call(request)),
        }
    }
}

/// A plaintext channel to `uri` (`http://catalog:50052`); see [`channel`].
pub fn lazy_channel(uri: &str) -> Result<Channel, ChannelError> {
    channel(uri, None)
}

/// A channel to `uri` that connects on first use and reconnects after failures, so a service
/// can start before its peers. `https://` URLs are reached over TLS with `tls` (which verifies
/// the server and presents this process's certificate to servers that require one);
/// `http://` URLs over plaintext h2c.
pub fn channel(uri: &str, tls: Option<&ClientTls>) -> Result<Channel, ChannelError> {
    let raw = connection(endpoint(uri)?, tls, None)?;
    Ok(ClientTraceLayer.layer(PeerChannel::Connection(raw)))
}

/// A channel to every address `uri`'s host resolves to (a headless Service's ready pods), each
/// call going to the less loaded of two picked at random. `resolver` re-resolves the name
/// periodically, so replicas that come and go are followed; until the first answer, and
/// whenever the name has never resolved, calls go to the name itself like [`channel`]. Starts
/// a task: call inside the runtime.
pub fn balanced_channel(
    uri: &str,
    tls: Option<&ClientTls>,
    resolver: &PeerResolver,
) -> Result<Channel, ChannelError> {
    let named = endpoint(uri)?;
    let origin = named.uri().clone();
    let by_name = connection(named, tls, None)?;
    let host = host_of(&origin).ok_or(ChannelError::NoHost)?;
    let https = origin.scheme_str() == Some("https");
    let port = origin.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tls = tls.cloned();
    let server_name = host.clone();
    let per_address = move |address: std::net::SocketAddr| {
        let scheme = if https { "https" } else { "http" };
        // Connect to the address, but name the peer in `:authority` and for TLS.
        let endpoint = endpoint(&format!("{scheme}://{address}"))?.origin(origin.clone());
        connection(endpoint, tls.as_ref(), Some(server_name.clone()))
    };
    let balanced = resolver.balance(host, port, by_name, per_address);
    Ok(ClientTraceLayer.layer(PeerChannel::PerRequest(balanced)))
}

/// The host of `uri` as it appears on the wire and in certificates (`[::1]` is `::1`).
fn host_of(uri: &Uri) -> Option<String> {
    let host = uri.host().filter(|host| !host.is_empty())?;
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
}

fn endpoint(uri: &str) -> Result<Endpoint, ChannelError> {
    Ok(Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10)))
}

/// A lazy connection to `endpoint`'s address; over TLS for `https://`, verifying the server as
/// `server_name` (the URL's host when `None`).
fn connection(
    endpoint: Endpoint,
    tls: Option<&ClientTls>,
    server_name: Option<String>,
) -> Result<RawChannel, ChannelError> {
    if endpoint.uri().scheme_str() != Some("https") {
        return Ok(endpoint.connect_lazy());
    }
    let tls = tls.ok_or(ChannelError::HttpsWithoutCa)?.clone();
    let connector = tower::service_fn(move |uri: Uri| {
        let tls = tls.clone();
        let server_name = server_name.clone();
        async move {
            let host = host_of(&uri).unwrap_or_default();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tls
                .connect(server_name.as_deref().unwrap_or(&host), tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// When the caller's deadline passes, from the `grpc-timeout` header of an incoming call
/// (`None` without one, or if it is malformed).
pub fn incoming_deadline(metadata: &tonic::metadata::MetadataMap) -> Option<tokio::time::Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    Some(tokio::time::Instant::now() + parse_grpc_timeout(value)?)
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
