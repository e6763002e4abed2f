//! Calls to catalog and auth: deadlines on every call (the caller's own when shorter), retries
//! only on UNAVAILABLE with exponential backoff and jitter, and the service-account token from
//! auth cached until shortly before it expires. Every call billing makes is idempotent (reads, and
//! reservations keyed by the order id), so a retry never doubles an effect.

use std::{future::Future, sync::Arc, time::Duration};

use backbone_common::{client::Channel, config::Secret};
use backbone_proto::{
    auth::{IssueServiceTokenRequest, auth_service_client::AuthServiceClient},
    catalog::{
        self as catalog_pb, BatchGetProductsRequest, BatchGetStockRequest,
        CommitReservationRequest, ReleaseReservationRequest, ReservationItem, ReserveStockRequest,
        catalog_service_client::CatalogServiceClient,
    },
};
use rand::Rng as _;
use tokio::time::Instant;
use tonic::{Code, Request, Status};

/// Which peer failed.
pub const CATALOG: &str = "catalog";
/// Which peer failed.
pub const AUTH: &str = "auth";

/// Attempts per call (the first and two retries).
const ATTEMPTS: u32 = 3;
/// A cached service token is renewed this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// How a call to a peer ended when it did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer could not be reached or did not answer in time (after retries).
    #[error("{peer} is unavailable")]
    Unavailable {
        /// `catalog` or `auth`.
        peer: &'static str,
    },
    /// The peer answered with an error of its own.
    #[error("{peer} answered {}: {}", .status.code(), .status.message())]
    Refused {
        /// `catalog` or `auth`.
        peer: &'static str,
        /// Its answer.
        status: Status,
    },
}

impl PeerError {
    /// The peer's answer when it refused with this ErrorInfo reason.
    pub fn refused_with(&self, reason: &str) -> Option<&Status> {
        use tonic_types::StatusExt as _;
        match self {
            PeerError::Refused { status, .. }
                if status
                    .get_error_details()
                    .error_info()
                    .is_some_and(|info| info.reason == reason) =>
            {
                Some(status)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct CachedToken {
    value: String,
    renew_at: Instant,
}

/// Service-account credentials billing uses towards catalog.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The service account id.
    pub client_id: String,
    /// Its secret.
    pub client_secret: Secret,
}

struct Inner {
    catalog: CatalogServiceClient<Channel>,
    auth: AuthServiceClient<Channel>,
    credentials: Option<Credentials>,
    token: tokio::sync::Mutex<Option<CachedToken>>,
    call_timeout: Duration,
}

/// Catalog and auth, as billing calls them. Cheap to clone.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("call_timeout", &self.inner.call_timeout)
            .finish_non_exhaustive()
    }
}

/// Time left before `deadline`, at most `cap`.
fn budget(deadline: Option<Instant>, cap: Duration) -> Duration {
    deadline.map_or(cap, |d| {
        d.saturating_duration_since(Instant::now()).min(cap)
    })
}

impl Peers {
    /// Clients over these channels; without credentials, catalog is called anonymously (reads
    /// work, reservations are refused).
    pub fn new(
        catalog: Channel,
        auth: Channel,
        credentials: Option<Credentials>,
        call_timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                catalog: CatalogServiceClient::new(catalog),
                auth: AuthServiceClient::new(auth),
                credentials,
                token: tokio::sync::Mutex::new(None),
                call_timeout,
            }),
        }
    }

    /// Runs `call` with a per-attempt timeout inside `deadline`, retrying UNAVAILABLE and calls
    /// lost in transit (every call billing makes is idempotent: reads, and writes keyed by the
    /// order id).
    async fn call<T, F, Fut>(
        &self,
        peer: &'static str,
        deadline: Option<Instant>,
        mut call: F,
    ) -> Result<T, PeerError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut backoff = Duration::from_millis(50);
        for attempt in 1..=ATTEMPTS {
            let timeout = budget(deadline, self.inner.call_timeout);
            if timeout < Duration::from_millis(5) {
                break;
            }
            match tokio::time::timeout(timeout, call(timeout)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if status.code() == Code::Unavailable || lost(&status) => {
                    tracing::warn!(
                        peer,
                        attempt,
                        message = status.message(),
                        "peer unavailable"
                    );
                }
                Ok(Err(status))
                    if matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled) =>
                {
                    break;
                }
                Ok(Err(status)) => return Err(PeerError::Refused { peer, status }),
                // Out of time for this attempt: the caller's budget is spent too, or nearly.
                Err(_) => {
                    tracing::warn!(peer, attempt, "peer call timed out");
                    break;
                }
            }
            if attempt < ATTEMPTS {
                let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
                let pause = backoff + Duration::from_millis(jitter);
                if budget(deadline, pause) < pause {
                    break;
                }
                tokio::time::sleep(pause).await;
                backoff *= 3;
            }
        }
        Err(PeerError::Unavailable { peer })
    }

    /// The service token, from the cache or freshly issued by auth.
    async fn token(&self, deadline: Option<Instant>) -> Result<Option<String>, PeerError> {
        let Some(credentials) = &self.inner.credentials else {
            return Ok(None);
        };
        let mut cached = self.inner.token.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| t.renew_at > Instant::now()) {
            return Ok(Some(token.value.clone()));
        }
        let issued = self
            .call(AUTH, deadline, |timeout| {
                let mut client = self.inner.auth.clone();
                let mut request = Request::new(IssueServiceTokenRequest {
                    client_id: credentials.client_id.clone(),
                    client_secret: credentials.client_secret.expose().to_owned(),
                });
                request.set_timeout(timeout);
                async move { client.issue_service_token(request).await }
            })
            .await?;
        let lifetime = issued
            .expire_time
            .and_then(|t| u64::try_from(t.seconds).ok())
            .map(|exp| Duration::from_secs(exp.saturating_sub(backbone_common::auth::unix_now())))
            .unwrap_or_default();
        *cached = Some(CachedToken {
            value: issued.access_token.clone(),
            renew_at: Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN),
        });
        Ok(Some(issued.access_token))
    }

    /// A catalog call with the service token; a token catalog refuses is dropped from the cache.
    async fn catalog<T, M, F, Fut>(
        &self,
        deadline: Option<Instant>,
        message: M,
        send: F,
    ) -> Result<T, PeerError>
    where
        M: Clone,
        F: Fn(CatalogServiceClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let token = self.token(deadline).await?;
        let result = self
            .call(CATALOG, deadline, |timeout| {
                let mut request = Request::new(message.clone());
                request.set_timeout(timeout);
                if let Some(value) = token
                    .as_ref()
                    .and_then(|t| format!("Bearer {t}").parse().ok())
                {
                    request.metadata_mut().insert("authorization", value);
                }
                send(self.inner.catalog.clone(), request)
            })
            .await;
        if let Err(PeerError::Refused { status, .. }) = &result
            && status.code() == Code::Unauthenticated
        {
            *self.inner.token.lock().await = None;
        }
        result
    }

    /// Products by id (any status: billing's service account sees them all) and the ids
    /// catalog does not know.
    pub async fn products(
        &self,
        deadline: Option<Instant>,
        ids: Vec<String>,
    ) -> Result<catalog_pb::BatchGetProductsResponse, PeerError> {
        if ids.is_empty() {
            return Ok(catalog_pb::BatchGetProductsResponse::default());
        }
        let message = BatchGetProductsRequest { product_ids: ids };
        self.catalog(deadline, message, |mut client, request| async move {
            client.batch_get_products(request).await
        })
        .await
    }

    /// Stock of products by id.
    pub async fn stock(
        &self,
        deadline: Option<Instant>,
        ids: Vec<String>,
    ) -> Result<catalog_pb::BatchGetStockResponse, PeerError> {
        if ids.is_empty() {
            return Ok(catalog_pb::BatchGetStockResponse::default());
        }
        let message = BatchGetStockRequest { product_ids: ids };
        self.catalog(deadline, message, |mut client, request| async move {
            client.batch_get_stock(request).await
        })
        .await
    }

    /// Holds the items under `reservation_id` (idempotent: the same call returns the same
    /// reservation).
    pub async fn reserve(
        &self,
        deadline: Option<Instant>,
        reservation_id: &str,
        items: Vec<ReservationItem>,
        ttl: Duration,
    ) -> Result<catalog_pb::Reservation, PeerError> {
        let message = ReserveStockRequest {
            reservation_id: reservation_id.to_owned(),
            items,
            // A TTL past i64 seconds is sent as none (pbjson's `From` would wrap it).
            ttl: i64::try_from(ttl.as_secs()).ok().map(|seconds| {
                backbone_proto::pbjson_types::Duration {
                    seconds,
                    nanos: i32::try_from(ttl.subsec_nanos()).unwrap_or(0),
                }
            }),
        };
        let response = self
            .catalog(deadline, message, |mut client, request| async move {
                client.reserve_stock(request).await
            })
            .await?;
        response.reservation.ok_or_else(|| PeerError::Refused {
            peer: CATALOG,
            status: Status::internal("ReserveStock answered without a reservation"),
        })
    }

    /// Commits a reservation (committing a committed one is a no-op).
    pub async fn commit(
        &self,
        deadline: Option<Instant>,
        reservation_id: &str,
    ) -> Result<(), PeerError> {
        let message = CommitReservationRequest {
            reservation_id: reservation_id.to_owned(),
        };
        self.catalog(deadline, message, |mut client, request| async move {
            client.commit_reservation(request).await
        })
        .await
        .map(drop)
    }

    /// Releases a reservation (releasing a released, expired or unknown one is a no-op here).
    pub async fn release(
        &self,
        deadline: Option<Instant>,
        reservation_id: &str,
    ) -> Result<(), PeerError> {
        let message = ReleaseReservationRequest {
            reservation_id: reservation_id.to_owned(),
        };
        match self
            .catalog(deadline, message, |mut client, request| async move {
                client.release_reservation(request).await
            })
            .await
        {
            Ok(_) => Ok(()),
            // Never reserved: nothing to give back.
            Err(PeerError::Refused { status, .. }) if status.code() == Code::NotFound => Ok(()),
            Err(err) => Err(err),
        }
    }
}

/// True when the call never got an answer: the connection broke while it was in flight (tonic
/// reports UNKNOWN "transport error" with the transport's error as source; a status a server
/// sends has no source). Whether the peer acted is unknown, as with UNAVAILABLE.
fn lost(status: &Status) -> bool {
    status.code() == Code::Unknown && std::error::Error::source(status).is_some()
}
