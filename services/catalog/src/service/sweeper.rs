//! The background sweeper: releases reservations past their expiry and prunes old idempotency
//! keys. Safe in any number of replicas at once: each release is a conditional update on the
//! reservation's state, so a reservation is released by exactly one of them.

use std::time::Duration;

use backbone_common::metrics::WorkerMetrics;

use super::Catalog;
use crate::{db, domain};

/// Reservations released per database round.
const BATCH: i64 = 100;
/// How long AdjustStock idempotency keys are kept.
const KEY_RETENTION: Duration = Duration::from_secs(48 * 3600);

/// Runs until dropped (the task is aborted when the service stops).
pub async fn run(catalog: Catalog, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let metrics = WorkerMetrics::new("catalog.reservation_sweeper");
    let mut rounds: u64 = 0;
    loop {
        ticker.tick().await;
        let mut pass = Ok(0);
        loop {
            match catalog.expire_reservations(BATCH).await {
                Ok(released) => {
                    if released > 0 {
                        tracing::info!(released, "expired reservations released");
                    }
                    pass = pass.map(|total| total + released);
                    if i64::try_from(released).unwrap_or(0) < BATCH {
                        break;
                    }
                }
                Err(err) => {
                    // The database may be starting or down; the next tick tries again.
                    tracing::debug!(error = %err, "reservation sweep failed");
                    pass = Err(err);
                    break;
                }
            }
        }
        metrics.pass(&pass);
        rounds = rounds.wrapping_add(1);
        if rounds % 600 == 1
            && let Ok(mut conn) = catalog.conn().await
        {
            let before =
                domain::now() - chrono::Duration::from_std(KEY_RETENTION).unwrap_or_default();
            if let Err(err) = db::stock::prune_requests(&mut conn, before).await {
                tracing::debug!(error = %err, "pruning idempotency keys failed");
            }
        }
    }
}
