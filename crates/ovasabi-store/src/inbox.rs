//! The inbox: idempotent consumers.
//!
//! A consumer handles an event in a transaction that also records the event's id in
//! `inbox (consumer, event_id, processed_at)`. The bus delivers at least once, so the same
//! event can arrive again; the second time [`Inbox::record`] returns `false` and the
//! handler skips its work. Since the record commits with the state change, a crash
//! between the two cannot happen: either both are there or neither.
//!
//! ```no_run
//! # async fn handle(store: ovasabi_store::Store, event: ovasabi_core::Event) -> Result<(), ovasabi_store::StoreError> {
//! use ovasabi_store::{params, Inbox};
//!
//! let mut tx = store.begin().await?;
//! if Inbox::record(&mut tx, "wallet", &event.id).await? {
//!     tx.execute("UPDATE wallets SET coins = coins + 1 WHERE user_id = $1", params!["u1"]).await?;
//! }
//! tx.commit().await?; // then ack the delivery
//! # Ok(()) }
//! ```
//!
//! On PostgreSQL, two transactions recording the same event at once do not both see
//! `true`: the second waits for the first, then sees `false` if it committed (or `true` if
//! it rolled back).

use chrono::{DateTime, Utc};

use crate::error::Result;
use crate::params;
use crate::store::{Store, Transaction};

/// The inbox of processed event ids, per consumer.
#[derive(Clone, Copy, Debug)]
pub struct Inbox;

impl Inbox {
    /// Records that `consumer` processed `event_id`, in `tx`. Returns `false` if it was
    /// already recorded (by a committed transaction): the event is a duplicate.
    ///
    /// Event ids are unique per event source; OVASABI's are UUIDv7, unique everywhere.
    /// `consumer` names the handler (usually its consumer group), so two services
    /// processing the same event each record it.
    pub async fn record(tx: &mut Transaction, consumer: &str, event_id: &str) -> Result<bool> {
        let inserted = tx
            .execute(
                "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)
                 ON CONFLICT (consumer, event_id) DO NOTHING",
                params![consumer, event_id, Utc::now()],
            )
            .await?;
        Ok(inserted == 1)
    }

    /// Whether `consumer` has processed `event_id` (committed).
    pub async fn contains(store: &Store, consumer: &str, event_id: &str) -> Result<bool> {
        let row = store
            .query_opt(
                "SELECT 1 AS found FROM inbox WHERE consumer = $1 AND event_id = $2",
                params![consumer, event_id],
            )
            .await?;
        Ok(row.is_some())
    }

    /// Forgets records older than `before` (keep them longer than the bus can redeliver:
    /// its retention); returns how many.
    pub async fn prune(store: &Store, before: DateTime<Utc>) -> Result<u64> {
        store
            .execute("DELETE FROM inbox WHERE processed_at < $1", params![before])
            .await
    }
}
