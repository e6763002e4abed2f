//! The ledger (entries of an order or an account, and the consistency check) and the event feed.

use backbone_common::page;
use backbone_proto::billing as pb;

use super::{Billing, Caller, orders::next_token, page_cursor, page_size};
use crate::{
    db::{
        feed,
        reads::{self, LedgerScope},
    },
    domain::LedgerAccount,
    error::BillingError,
    present,
};

impl Billing {
    /// Numbers the events committed so far (the recovery worker does so every pass, and the feed
    /// before each read); returns how many.
    pub async fn number_events(&self) -> Result<usize, BillingError> {
        let mut conn = self.conn().await?;
        Ok(feed::number_all(&mut conn).await?)
    }

    /// A page of ledger entries, oldest first.
    pub async fn ledger(
        &self,
        caller: &Caller,
        order_id: &str,
        account: Option<LedgerAccount>,
        customer_id: &str,
        size: i32,
        token: &str,
    ) -> Result<(Vec<pb::LedgerEntry>, String), BillingError> {
        caller.admin()?;
        let scope = match (order_id.is_empty(), account) {
            (false, None) if customer_id.is_empty() => LedgerScope::Order(order_id.to_owned()),
            (true, Some(LedgerAccount::Customer)) => LedgerScope::Account(
                LedgerAccount::Customer.as_str().into(),
                (!customer_id.is_empty()).then(|| customer_id.to_owned()),
            ),
            (true, Some(account)) if customer_id.is_empty() => {
                LedgerScope::Account(account.as_str().into(), None)
            }
            (true, Some(_)) => {
                return Err(BillingError::field(
                    "customer_id",
                    "only with account LEDGER_ACCOUNT_CUSTOMER",
                ));
            }
            _ => {
                return Err(BillingError::field(
                    "order_id",
                    "set exactly one of order_id and account",
                ));
            }
        };
        let size = page_size(size)?;
        let query = format!("ledger|{scope:?}");
        let after = page_cursor(&query, token)?;
        let mut conn = self.conn().await?;
        let mut rows = reads::ledger(&mut conn, &scope, after.as_deref(), size + 1).await?;
        let next = next_token(&mut rows, size, &query, |r| r.id.clone());
        Ok((rows.iter().map(present::ledger_entry).collect(), next))
    }

    /// The ledger check.
    pub async fn check_ledger(
        &self,
        caller: &Caller,
    ) -> Result<pb::CheckLedgerResponse, BillingError> {
        caller.admin()?;
        let check_time = crate::domain::now();
        let mut conn = self.conn().await?;
        let check = reads::check_ledger(&mut conn).await?;
        Ok(pb::CheckLedgerResponse {
            consistent: check.totals.values().all(|v| *v == 0)
                && check.unbalanced.is_empty()
                && check.orders_missing_entries.is_empty(),
            currency_totals: check
                .totals
                .iter()
                .map(|(c, v)| present::money(c, *v))
                .collect(),
            unbalanced_transaction_ids: check.unbalanced,
            orders_missing_entries: check.orders_missing_entries,
            entry_count: check.entry_count,
            check_time: Some(present::timestamp(check_time)),
        })
    }

    /// A page of events after the cursor, in append order.
    pub async fn events(
        &self,
        caller: &Caller,
        types: &[String],
        subject_id: &str,
        size: i32,
        token: &str,
    ) -> Result<pb::ListEventsResponse, BillingError> {
        if !caller.is_admin()
            && !caller
                .principal
                .has_role(backbone_common::auth::Role::Service)
        {
            return Err(BillingError::PermissionDenied(
                "the event feed needs the admin or service role",
            ));
        }
        let size = page_size(size)?;
        let mut sorted = types.to_vec();
        sorted.sort();
        let query = format!("events|{}|{subject_id}", sorted.join(","));
        let after = match page_cursor(&query, token)? {
            Some(cursor) => cursor
                .parse::<i64>()
                .map_err(|_| BillingError::InvalidPageToken)?,
            None => 0,
        };
        // Number what has committed so far, so a follower reads every event appended before
        // its call.
        self.number_events().await?;
        let mut conn = self.conn().await?;
        let mut rows = reads::events(
            &mut conn,
            after,
            types,
            (!subject_id.is_empty()).then_some(subject_id),
            size + 1,
        )
        .await?;
        let has_more = rows.len() as i64 > size;
        rows.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        // The token always points after the last event read, so a follower polls from there.
        let last = rows.last().map_or(after, |r| r.sequence);
        Ok(pb::ListEventsResponse {
            events: rows.iter().map(present::event).collect(),
            next_page_token: page::encode(&query, &last.to_string()),
            has_more,
        })
    }
}
