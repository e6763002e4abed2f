//! The built-in `test` gateway: deterministic and persistent, like Stripe's test mode. Its books
//! are two tables of its own, written in their own transactions (as a remote provider's would be):
//! - `tok_visa` (and any other token) succeeds;
//! - `tok_chargeDeclined` is declined (`CARD_DECLINED`);
//! - `tok_processing_error` fails (`PAYMENT_PROCESSING_ERROR`), and the call answers with an error
//!   as a provider's outage would, so only a later lookup learns the outcome;
//! - `tok_timeout` captures the charge and then never answers in time.

use backbone_common::db::Prepared as _;
use backbone_common::{
    db::{Database, DbError, TxError, is_unique_violation},
    db_run,
};
use diesel::{ExpressionMethods as _, OptionalExtension as _, QueryDsl as _};
use diesel_async::RunQueryDsl as _;
use futures::future::BoxFuture;

use super::{
    ChargeOutcome, ChargeRequest, GatewayError, PaymentGateway, RefundOutcome, RefundRequest,
};
use crate::{
    db::schema::{test_gateway_charges as charges, test_gateway_refunds as refunds},
    domain::{self, reasons},
};

/// Token that is declined.
pub const TOKEN_DECLINED: &str = "tok_chargeDeclined";
/// Token whose charge fails to process.
pub const TOKEN_PROCESSING_ERROR: &str = "tok_processing_error";
/// Token whose charge succeeds but whose answer never comes.
pub const TOKEN_TIMEOUT: &str = "tok_timeout";

/// The test gateway over billing's database.
#[derive(Debug, Clone)]
pub struct TestGateway {
    database: Database,
}

impl TestGateway {
    /// The gateway keeping its books in `database`.
    pub fn new(database: Database) -> Self {
        Self { database }
    }

    fn outcome(row: (String, String)) -> ChargeOutcome {
        let (id, outcome) = row;
        match outcome.as_str() {
            "SUCCEEDED" => ChargeOutcome::Succeeded {
                gateway_payment_id: id,
            },
            "DECLINED" => ChargeOutcome::Declined {
                reason: reasons::CARD_DECLINED.into(),
            },
            _ => ChargeOutcome::Failed {
                reason: reasons::PAYMENT_PROCESSING_ERROR.into(),
            },
        }
    }

    async fn find(&self, key: &str) -> Result<Option<ChargeOutcome>, DbError> {
        let mut conn = self.database.conn().await?;
        let row: Option<(String, String)> = db_run!(&mut conn, |c| {
            charges::table
                .find(key)
                .select((charges::id, charges::outcome))
                .first(c)
                .await
                .optional()
        })?;
        Ok(row.map(Self::outcome))
    }

    async fn record_charge(&self, request: &ChargeRequest) -> Result<ChargeOutcome, DbError> {
        let outcome = match request.method_token.as_str() {
            TOKEN_DECLINED => "DECLINED",
            TOKEN_PROCESSING_ERROR => "PROCESSING_ERROR",
            _ => "SUCCEEDED",
        };
        let id = format!("ch_{}", uuid::Uuid::now_v7().simple());
        let mut conn = self.database.conn().await?;
        let inserted = db_run!(&mut conn, |c| {
            diesel::insert_into(charges::table)
                .values((
                    charges::idempotency_key.eq(&request.idempotency_key),
                    charges::id.eq(&id),
                    charges::outcome.eq(outcome),
                    charges::currency_code.eq(&request.currency_code),
                    charges::amount_minor.eq(request.amount_minor),
                    charges::created_at.eq(domain::now()),
                ))
                .prepared()
                .execute(c)
                .await
        });
        drop(conn);
        match inserted {
            Ok(_) => Ok(Self::outcome((id, outcome.to_owned()))),
            // The same key again: the first answer, as a real provider gives it.
            Err(err) if is_unique_violation(&err) => self
                .find(&request.idempotency_key)
                .await?
                .ok_or_else(|| DbError::from(err)),
            Err(err) => Err(err.into()),
        }
    }

    async fn record_refund(&self, request: &RefundRequest) -> Result<RefundOutcome, DbError> {
        let id = format!("re_{}", uuid::Uuid::now_v7().simple());
        let mut conn = self.database.conn().await?;
        let result = db_run!(&mut conn, |c| {
            transaction!(c, async |tx| {
                // The write comes first, so on SQLite the transaction takes the write lock with
                // its first statement: a read first must upgrade its lock later, which SQLite
                // refuses at once ("database is locked") while another connection writes.
                let moved = diesel::update(charges::table)
                    .filter(charges::id.eq(&request.gateway_payment_id))
                    .filter(charges::outcome.eq("SUCCEEDED"))
                    .filter(
                        charges::refunded_minor.le(charges::amount_minor - request.amount_minor),
                    )
                    .filter(diesel::dsl::not(diesel::dsl::exists(
                        refunds::table.find(&request.idempotency_key),
                    )))
                    .set(charges::refunded_minor.eq(charges::refunded_minor + request.amount_minor))
                    .prepared()
                    .execute(tx)
                    .await?;
                if moved == 0 {
                    // The same key again gets the first answer; else the charge cannot give it.
                    let existing: Option<String> = refunds::table
                        .find(&request.idempotency_key)
                        .select(refunds::id)
                        .first(tx)
                        .await
                        .optional()?;
                    return existing.ok_or(TxError::Abort("REFUND_EXCEEDS_CHARGE"));
                }
                diesel::insert_into(refunds::table)
                    .values((
                        refunds::idempotency_key.eq(&request.idempotency_key),
                        refunds::id.eq(&id),
                        refunds::charge_id.eq(&request.gateway_payment_id),
                        refunds::amount_minor.eq(request.amount_minor),
                        refunds::created_at.eq(domain::now()),
                    ))
                    .prepared()
                    .execute(tx)
                    .await?;
                Ok(id.clone())
            })
            .await
        });
        match result {
            Ok(id) => Ok(RefundOutcome::Succeeded {
                gateway_refund_id: id,
            }),
            Err(TxError::Abort(reason)) => Ok(RefundOutcome::Refused {
                reason: reason.into(),
            }),
            Err(TxError::Diesel(err)) => Err(err.into()),
        }
    }
}

fn unavailable(err: &DbError) -> GatewayError {
    GatewayError::Unavailable(format!("test gateway storage: {err}"))
}

impl PaymentGateway for TestGateway {
    fn name(&self) -> &'static str {
        "test"
    }

    fn charge(&self, request: ChargeRequest) -> BoxFuture<'_, Result<ChargeOutcome, GatewayError>> {
        Box::pin(async move {
            let outcome = self
                .record_charge(&request)
                .await
                .map_err(|e| unavailable(&e))?;
            match request.method_token.as_str() {
                // Taken, and the answer never comes: billing's --gateway-timeout gives up.
                TOKEN_TIMEOUT => std::future::pending().await,
                TOKEN_PROCESSING_ERROR => Err(GatewayError::Unavailable(
                    "processing error (test gateway)".into(),
                )),
                _ => Ok(outcome),
            }
        })
    }

    fn lookup(
        &self,
        idempotency_key: &str,
    ) -> BoxFuture<'_, Result<Option<ChargeOutcome>, GatewayError>> {
        let key = idempotency_key.to_owned();
        Box::pin(async move { self.find(&key).await.map_err(|e| unavailable(&e)) })
    }

    fn refund(&self, request: RefundRequest) -> BoxFuture<'_, Result<RefundOutcome, GatewayError>> {
        Box::pin(async move {
            self.record_refund(&request)
                .await
                .map_err(|e| unavailable(&e))
        })
    }
}
