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
