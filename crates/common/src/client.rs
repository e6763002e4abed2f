//! The kit's client channel: lazily connected, over TLS for `https://` peers, with sane connect timeouts and keepalives, and
//! the [`ClientTraceLayer`](crate::trace::ClientTraceLayer) so every outgoing call carries the
//! caller's trace context.

use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel as RawChannel, Endpoint};
use tower::Layer as _;

use crate::{
    tls::ClientTls,
    trace::{ClientTrace, ClientTraceLayer},
};

/// A traced channel; pass it to any generated client (`CatalogServiceClient::new(channel)`).
pub type Channel = ClientTrace<RawChannel>;

/// Why a peer channel could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The URL is not a valid endpoint.
    #[error("{0}")]
    Uri(#[from] tonic::transport::Error),
    /// An `https://` peer without a CA bundle to verify it against.
    #[error("an https:// peer needs --tls-ca-file (the CA bundle its certificate chains to)")]
    HttpsWithoutCa,
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
    let endpoint = Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if endpoint.uri().scheme_str() != Some("https") {
        return Ok(ClientTraceLayer.layer(endpoint.connect_lazy()));
    }
    let tls = tls.ok_or(ChannelError::HttpsWithoutCa)?.clone();
    let connector = tower::service_fn(move |uri: Uri| {
        let tls = tls.clone();
        async move {
            let host = uri.host().unwrap_or_default();
            // `[::1]` in a URL is `::1` on the wire and in the certificate.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(&host, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Ok(ClientTraceLayer.layer(endpoint.connect_with_connector_lazy(connector)))
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
