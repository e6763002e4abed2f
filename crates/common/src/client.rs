//! The kit's client channel: lazily connected, with sane connect timeouts and keepalives, and
//! the [`ClientTraceLayer`](crate::trace::ClientTraceLayer) so every outgoing call carries the
//! caller's trace context.

use std::time::Duration;

use tonic::transport::{Channel as RawChannel, Endpoint};
use tower::Layer as _;

use crate::trace::{ClientTrace, ClientTraceLayer};

/// A traced channel; pass it to any generated client (`CatalogServiceClient::new(channel)`).
pub type Channel = ClientTrace<RawChannel>;

/// A channel to `uri` (`http://catalog:50052`) that connects on first use and reconnects after
/// failures, so a service can start before its peers.
pub fn lazy_channel(uri: &str) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(uri.to_owned())?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    Ok(ClientTraceLayer.layer(endpoint.connect_lazy()))
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
