//! Delivery of account messages (email verification, password reset). The interface is what an
//! SMTP or email-API adapter would implement; the default queues each message in the `outbox`
//! table for a mail relay and logs it, leaving the token out of the log unless in dev mode.

use std::{future::Future, pin::Pin};

use backbone_common::db::Database;

use crate::{
    db::{self, models::OutboxRow},
    domain,
    error::AuthError,
};

/// An account message.
#[derive(Clone)]
pub struct Message {
    /// Where it goes.
    pub recipient: String,
    /// Subject line.
    pub subject: String,
    /// Body without the secret, safe to log.
    pub summary: String,
    /// The full body, with the token.
    pub body: String,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Sends account messages.
pub trait Notifier: Send + Sync + 'static {
    /// Delivers (or queues) `message`.
    fn send<'a>(
        &'a self,
        message: &'a Message,
    ) -> Pin<Box<dyn Future<Output = Result<(), AuthError>> + Send + 'a>>;
}

/// The default notifier: the `outbox` table plus a log line.
#[derive(Debug, Clone)]
pub struct OutboxNotifier {
    database: Database,
    log_bodies: bool,
}

impl OutboxNotifier {
    /// Queues into `database`; `log_bodies` (dev mode only) also logs the token.
    pub fn new(database: Database, log_bodies: bool) -> Self {
        Self {
            database,
            log_bodies,
        }
    }
}

impl Notifier for OutboxNotifier {
    fn send<'a>(
        &'a self,
        message: &'a Message,
    ) -> Pin<Box<dyn Future<Output = Result<(), AuthError>> + Send + 'a>> {
        Box::pin(async move {
            let row = OutboxRow {
                id: domain::new_id(),
                recipient: message.recipient.clone(),
                subject: message.subject.clone(),
                body: message.body.clone(),
                created_at: domain::now(),
                sent_at: None,
            };
            let mut conn = self.database.conn().await?;
            db::recovery::enqueue(&mut conn, &row).await?;
            if self.log_bodies {
                tracing::warn!(outbox_id = %row.id, subject = %message.subject, body = %message.body, "message queued (dev mode: body logged with its token)");
            } else {
                tracing::info!(outbox_id = %row.id, subject = %message.subject, summary = %message.summary, "message queued in the outbox");
            }
            Ok(())
        })
    }
}
