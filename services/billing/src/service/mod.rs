//! Billing's use cases: carts, the checkout saga, orders and invoices, refunds, the ledger and
//! the event feed, and the recovery worker that finishes what a crash or an outage left open.
//! The gRPC handlers translate to and from these.

pub mod carts;
pub mod checkout;
pub mod ledger;
pub mod orders;
pub mod recovery;
pub mod refunds;

use std::{sync::Arc, time::Duration};

use backbone_common::{
    auth::{Principal, PrincipalKind, Role},
    db::{Database, DbConn},
    page,
};
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::{
    db::{
        keys::{self, Claim, StoredAnswer},
        models::IdempotencyRecord,
    },
    domain,
    error::BillingError,
    gateway::PaymentGateway,
    peers::Peers,
};

/// Who is calling, and until when.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The verified principal.
    pub principal: Arc<Principal>,
    /// The caller's deadline, if it sent one.
    pub deadline: Option<Instant>,
}

impl Caller {
    /// The caller's id (user or service account).
    pub fn id(&self) -> &str {
        &self.principal.subject
    }

    /// True for admins.
    pub fn is_admin(&self) -> bool {
        self.principal.has_role(Role::Admin)
    }

    /// A signed-in person (carts and orders are theirs).
    pub fn customer(&self) -> Result<&str, BillingError> {
        if self.principal.kind == PrincipalKind::User {
            Ok(&self.principal.subject)
        } else {
            Err(BillingError::PermissionDenied(
                "carts and checkout belong to signed-in customers, not service accounts",
            ))
        }
    }

    /// Admins only.
    pub fn admin(&self) -> Result<(), BillingError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(BillingError::PermissionDenied(
                "this call needs the admin role",
            ))
        }
    }
}

/// Settings the use cases follow.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long catalog holds a checkout's stock.
    pub reservation_ttl: Duration,
    /// How long a running checkout or refund owns its order before the worker may take over.
    pub lease: Duration,
    /// How long after a gateway error or timeout the worker asks the gateway again.
    pub recovery_delay: Duration,
    /// How long a charge may take at the gateway.
    pub gateway_timeout: Duration,
    /// How long idempotency keys are kept (at least 24 hours).
    pub key_retention: Duration,
    /// How long a repeat waits for the first run under its key to answer before ABORTED.
    pub key_wait: Duration,
}

struct Inner {
    database: Database,
    peers: Peers,
    gateway: Arc<dyn PaymentGateway>,
    settings: Settings,
}

/// Billing's use cases. Cheap to clone.
#[derive(Clone)]
pub struct Billing {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Billing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Billing")
            .field("gateway", &self.inner.gateway.name())
            .finish_non_exhaustive()
    }
}

/// A request's idempotency key, checked: (key, fingerprint of the request).
#[derive(Debug, Clone)]
pub struct RequestKey {
    /// The key.
    pub key: String,
    /// SHA-256 of the operation and the request without its key.
    pub fingerprint: String,
}

impl RequestKey {
    /// Checks `key` (8 to 255 characters) and fingerprints `request` (encoded without the key).
    pub fn new(key: &str, operation: &str, request: &[u8]) -> Result<Self, BillingError> {
        if !(8..=255).contains(&key.len()) || key.chars().any(char::is_control) {
            return Err(BillingError::field(
                "request_id",
                "must be 8 to 255 printable characters (or send idempotency-key metadata)",
            ));
        }
        let mut hasher = Sha256::new();
        hasher.update(operation.as_bytes());
        hasher.update([0]);
        hasher.update(request);
        let digest = hasher.finalize();
        Ok(Self {
            key: key.to_owned(),
            fingerprint: digest.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }
}

/// A stored error answer: `[message length u32][message][details]`.
fn encode_status(status: &Status) -> Vec<u8> {
    let message = status.message().as_bytes();
    let mut out = Vec::with_capacity(4 + message.len() + status.details().len());
    out.extend_from_slice(&u32::try_from(message.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(message);
    out.extend_from_slice(status.details());
    out
}

fn decode_status(code: i32, bytes: &[u8]) -> Status {
    let (len, rest) = bytes.split_at(bytes.len().min(4));
    let len = <[u8; 4]>::try_from(len)
        .map(u32::from_be_bytes)
        .unwrap_or(0) as usize;
    let (message, details) = rest.split_at(rest.len().min(len));
    Status::with_details(
        Code::from(code),
        String::from_utf8_lossy(message).into_owned(),
        details.to_vec().into(),
    )
}

/// A stored answer as what the call returns.
fn replay<R: prost::Message + Default>(record: &IdempotencyRecord) -> Result<R, Status> {
    let bytes = record.response.as_deref().unwrap_or_default();
    match record.status_code {
        Some(0) => R::decode(bytes).map_err(|err| backbone_common::error::internal(&err)),
        Some(code) => Err(decode_status(code, bytes)),
        None => Err(BillingError::IdempotencyKeyInUse.into()),
    }
}

/// A keyed run's answer; `stored` when the transaction that finished the run stored it under the
/// key already.
#[derive(Debug, Clone)]
pub struct Answer<R> {
    /// The answer.
    pub response: R,
    /// Already stored under the key.
    pub stored: bool,
}

impl<R: prost::Message> From<R> for Answer<R> {
    fn from(response: R) -> Self {
        Self {
            response,
            stored: false,
        }
    }
}

/// What a keyed run resumes from, when it takes over a key whose first run stopped.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// The order the first run had created.
    pub order_id: Option<String>,
}

/// What [`Billing::claim`] found: the key is this run's, or the first run's answer is stored.
enum Claimed {
    Run(Resume),
    Done(IdempotencyRecord),
}

/// Time kept back from the caller's deadline when waiting for a first run's answer.
const KEY_WAIT_MARGIN: Duration = Duration::from_millis(100);
/// The longest pause between two looks at a running key.
const KEY_POLL_MAX: Duration = Duration::from_millis(200);

impl Billing {
    /// The use cases.
    pub fn new(
        database: Database,
        peers: Peers,
        gateway: Arc<dyn PaymentGateway>,
        settings: Settings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                database,
                peers,
                gateway,
                settings,
            }),
        }
    }

    async fn conn(&self) -> Result<DbConn, BillingError> {
        Ok(self.inner.database.conn().await?)
    }

    fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Runs `work` at most once per (caller, key): a repeat gets the stored answer (waiting a
    /// while for it if the first run is still going), a different request under the key
    /// FAILED_PRECONDITION, a repeat while the first run is still going after the wait ABORTED. "Try again"
    /// answers are not stored (the key is freed) unless an order was already made under it.
    pub async fn keyed<R, A, F, Fut>(
        &self,
        caller: &Caller,
        operation: &str,
        key: Option<RequestKey>,
        work: F,
    ) -> Result<R, Status>
    where
        R: prost::Message + Default,
        A: Into<Answer<R>>,
        F: FnOnce(Resume) -> Fut,
        Fut: Future<Output = Result<A, BillingError>>,
    {
        let Some(key) = key else {
            return work(Resume::default())
                .await
                .map(|a| a.into().response)
                .map_err(Status::from);
        };
        let resume = match self.claim(caller, operation, &key).await? {
            Claimed::Run(resume) => resume,
            Claimed::Done(first) => return replay(&first),
        };
        let result = work(resume).await.map(Into::into);
        let mut conn = match result {
            Ok(Answer {
                response,
                stored: true,
            }) => return Ok(response),
            _ => self.conn().await?,
        };
        match result {
            Ok(Answer { response, .. }) => {
                keys::answer(
                    &mut conn,
                    &StoredAnswer {
                        caller_id: caller.id().to_owned(),
                        request_key: key.key,
                        status_code: 0,
                        response: response.encode_to_vec(),
                    },
                )
                .await
                .map_err(BillingError::from)?;
                Ok(response)
            }
            Err(err) if err.is_final() => {
                let status = Status::from(err);
                keys::answer(
                    &mut conn,
                    &StoredAnswer {
                        caller_id: caller.id().to_owned(),
                        request_key: key.key,
                        status_code: status.code() as i32,
                        response: encode_status(&status),
                    },
                )
                .await
                .map_err(BillingError::from)?;
                Err(status)
            }
            Err(err) => {
                // Free the key for a retry, unless an order that may be charged hangs off it:
                // then the lease runs out and a retry resumes that order.
                let current = keys::get(&mut conn, caller.id(), &key.key)
                    .await
                    .map_err(BillingError::from)?;
                let order_open = match current.and_then(|r| r.order_id) {
                    Some(order_id) => crate::db::reads::order(&mut conn, &order_id)
                        .await
                        .map_err(BillingError::from)?
                        .is_some_and(|o| o.order.status != domain::OrderStatus::Cancelled.as_str()),
                    None => false,
                };
                if !order_open {
                    keys::release(&mut conn, caller.id(), &key.key)
                        .await
                        .map_err(BillingError::from)?;
                }
                Err(err.into())
            }
        }
    }

    /// Claims `key` for a run, or answers for it: the stored answer once the first run is done,
    /// IDEMPOTENCY_KEY_REUSED for another request. While the first run is still going the
    /// repeat waits for its answer (up to `key_wait` and the caller's deadline, polling without
    /// holding a connection), takes the key over if the first run's lease ran out, and only then
    /// gives up with ABORTED.
    async fn claim(
        &self,
        caller: &Caller,
        operation: &str,
        key: &RequestKey,
    ) -> Result<Claimed, Status> {
        let mut give_up = Instant::now() + self.settings().key_wait;
        if let Some(deadline) = caller.deadline {
            // Leave time to send the answer before the caller stops listening.
            give_up = give_up.min(deadline.checked_sub(KEY_WAIT_MARGIN).unwrap_or(deadline));
        }
        let mut pause = Duration::from_millis(10);
        loop {
            let now = domain::now();
            let record = IdempotencyRecord {
                caller_id: caller.id().to_owned(),
                request_key: key.key.clone(),
                operation: operation.to_owned(),
                fingerprint: key.fingerprint.clone(),
                state: "RUNNING".into(),
                order_id: None,
                status_code: None,
                response: None,
                locked_until: domain::after(now, self.settings().lease),
                created_at: now,
            };
            let mut conn = self.conn().await?;
            let existing = match keys::claim(&mut conn, &record)
                .await
                .map_err(BillingError::from)?
            {
                Claim::New => return Ok(Claimed::Run(Resume::default())),
                Claim::Existing(existing) => existing,
            };
            if existing.operation != operation || existing.fingerprint != key.fingerprint {
                return Err(BillingError::IdempotencyKeyReused.into());
            }
            if existing.state == "DONE" {
                return Ok(Claimed::Done(existing));
            }
            if existing.locked_until <= now
                && keys::take_over(
                    &mut conn,
                    caller.id(),
                    &key.key,
                    existing.locked_until,
                    record.locked_until,
                )
                .await
                .map_err(BillingError::from)?
            {
                return Ok(Claimed::Run(Resume {
                    order_id: existing.order_id,
                }));
            }
            drop(conn);
            if Instant::now() + pause > give_up {
                return Err(BillingError::IdempotencyKeyInUse.into());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(KEY_POLL_MAX);
        }
    }

    /// Deletes idempotency keys older than the retention; returns how many.
    pub async fn prune_keys(&self) -> Result<usize, BillingError> {
        let before = domain::now()
            - chrono::TimeDelta::from_std(self.settings().key_retention)
                .unwrap_or(chrono::TimeDelta::MAX);
        let mut conn = self.conn().await?;
        Ok(keys::prune(&mut conn, before).await?)
    }
}

/// The page size, or INVALID_ARGUMENT.
fn page_size(requested: i32) -> Result<i64, BillingError> {
    page::page_size(requested, 20, 100).map_err(|v| BillingError::InvalidArgument(vec![v]))
}

/// Decodes a page token of `query` into its cursor text.
fn page_cursor(query: &str, token: &str) -> Result<Option<String>, BillingError> {
    page::decode(query, token).map_err(|_| BillingError::InvalidPageToken)
}

/// The trace id of the current call, for events.
fn trace_id() -> String {
    backbone_common::trace::current_trace_id().unwrap_or_default()
}
