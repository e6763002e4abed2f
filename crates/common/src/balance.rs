//! Client-side balancing over every address behind a peer's name.
//!
//! A Kubernetes ClusterIP Service balances TCP connections, and gRPC keeps one HTTP/2 connection
//! per peer, so all of one client's calls land on one replica. With a *headless* Service the
//! peer's DNS name answers with the address of every ready pod instead; a balanced channel
//! ([`crate::client::balanced_channel`]) keeps a lazy connection to each of them and sends every
//! call to the less loaded of two addresses picked at random (tower's power-of-two-choices
//! balancer, load = calls in flight on that connection).
//!
//! The name is resolved again every `--peer-resolve-interval` (hickory's resolver, reading
//! `/etc/resolv.conf` and `/etc/hosts`, or the DNS server of `--peer-dns-server`): new addresses
//! join the balancer, vanished ones leave it once their calls finish. A failed or empty answer
//! keeps the addresses known so far, since a DNS hiccup should not empty the balancer. Calls wait
//! for the first answer; if that fails, and until the name resolves, they go to the name itself
//! over one connection (so they fail with the usual connection error instead of waiting).

use std::{collections::BTreeSet, convert::Infallible, net::SocketAddr, time::Duration};

use hickory_resolver::{
    ResolveError, TokioResolver,
    config::{NameServerConfigGroup, ResolverConfig},
    name_server::TokioConnectionProvider,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{body::Body, transport::Channel as RawChannel};
use tower::{
    balance::p2c::Balance,
    buffer::Buffer,
    discover::Change,
    load::{CompleteOnResponse, PendingRequests},
    util::BoxService,
};

use crate::client::{BalancedService, ChannelError};

/// Calls waiting for the balancer beyond this many make callers wait for room.
const BUFFER: usize = 1024;

/// Resolves peers' names for balanced channels, and how often.
#[derive(Clone)]
pub struct PeerResolver {
    resolver: TokioResolver,
    interval: Duration,
}

impl std::fmt::Debug for PeerResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerResolver")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl PeerResolver {
    /// A resolver asking `dns_server`, or the system's configured name servers (with its search
    /// domains and hosts file) when `None`; names are looked up again every `interval`, and
    /// answers are never cached for longer.
    pub fn new(dns_server: Option<SocketAddr>, interval: Duration) -> Result<Self, ResolveError> {
        let mut builder = match dns_server {
            Some(server) => TokioResolver::builder_with_config(
                ResolverConfig::from_parts(
                    None,
                    Vec::new(),
                    NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true),
                ),
                TokioConnectionProvider::default(),
            ),
            None => TokioResolver::builder_tokio()?,
        };
        let options = builder.options_mut();
        options.positive_max_ttl = Some(interval);
        options.negative_max_ttl = Some(interval);
        // Calls wait for the first answer: do not let them wait long.
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        Ok(Self {
            resolver: builder.build(),
            interval: interval.max(Duration::from_millis(100)),
        })
    }

    /// Every address `host` resolves to, with `port`.
    async fn lookup(&self, host: &str, port: u16) -> Result<BTreeSet<SocketAddr>, ResolveError> {
        let answer = self.resolver.lookup_ip(host).await?;
        Ok(answer.iter().map(|ip| SocketAddr::new(ip, port)).collect())
    }

    /// A balancer over the addresses of `host:port`, reached through connections made by
    /// `connect`; `by_name` serves the calls while the name has never resolved. Starts the task that
    /// re-resolves the name; it ends when the last handle on the balancer is dropped.
    pub(crate) fn balance<F>(
        &self,
        host: String,
        port: u16,
        by_name: RawChannel,
        connect: F,
    ) -> BalancedService
    where
        F: Fn(SocketAddr) -> Result<RawChannel, ChannelError> + Send + 'static,
    {
        let (changes, discovered) = mpsc::channel(64);
        let balance: Balance<ReceiverStream<Discovered>, http::Request<Body>> =
            Balance::new(ReceiverStream::new(discovered));
        tokio::spawn(follow(self.clone(), host, port, by_name, connect, changes));
        Buffer::new(BoxService::new(balance), BUFFER)
    }
}

/// An entry in the balancer: the peer's name (before it resolves) or one of its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    ByName,
    Address(SocketAddr),
}

type Tracked = PendingRequests<RawChannel, CompleteOnResponse>;
type Discovered = Result<Change<Key, Tracked>, Infallible>;

fn tracked(channel: RawChannel) -> Tracked {
    PendingRequests::new(channel, CompleteOnResponse::default())
}

/// Resolves `host` every interval and tells the balancer what changed, until it is gone.
async fn follow<F>(
    resolver: PeerResolver,
    host: String,
    port: u16,
    by_name: RawChannel,
    connect: F,
    changes: mpsc::Sender<Discovered>,
) where
    F: Fn(SocketAddr) -> Result<RawChannel, ChannelError>,
{
    let mut known = BTreeSet::new();
    let mut by_name = Some(by_name);
    let mut ticks = tokio::time::interval(resolver.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = changes.closed() => return,
        }
        let found = match resolver.lookup(&host, port).await {
            Ok(found) if !found.is_empty() => Ok(found),
            Ok(_) => Err("the name has no addresses".to_owned()),
            Err(err) => Err(err.to_string()),
        };
        let found = match found {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(peer = %host, known = known.len(), %error, "resolving the peer's name failed; keeping the known addresses");
                // Never resolved: calls waiting for a first answer go to the name instead.
                if let Some(channel) = by_name.take() {
                    let first = Change::Insert(Key::ByName, tracked(channel));
                    if changes.send(Ok(first)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        if found == known {
            continue;
        }
        let mut update = Vec::new();
        let mut joined = 0;
        for gone in known.difference(&found) {
            update.push(Change::Remove(Key::Address(*gone)));
        }
        for new in found.difference(&known) {
            match connect(*new) {
                Ok(channel) => {
                    update.push(Change::Insert(Key::Address(*new), tracked(channel)));
                    joined += 1;
                }
                // The same URL made a channel before; an address cannot break it.
                Err(err) => {
                    tracing::error!(peer = %host, address = %new, error = %err, "cannot reach the address")
                }
            }
        }
        if known.is_empty() && joined > 0 && by_name.is_none() {
            update.push(Change::Remove(Key::ByName));
        }
        tracing::info!(peer = %host, addresses = ?found, "balancing calls over the peer's addresses");
        for change in update {
            if changes.send(Ok(change)).await.is_err() {
                return;
            }
        }
        known = found;
    }
}
