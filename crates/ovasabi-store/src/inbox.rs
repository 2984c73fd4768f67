//! The inbox: idempotent consumers, safe against duplicates and reordering.
//!
//! A consumer handles an event in a transaction that also records the event in the inbox.
//! The bus delivers at least once, so the same event can arrive again; the second time the
//! inbox says so and the handler skips its work. Since the record commits with the state
//! change, a crash between the two cannot happen: either both are there or neither.
//!
//! # Two records: event ids, and per-subject sequences
//!
//! - `inbox (consumer, event_id, processed_at)`: the ids a consumer processed
//!   ([`Inbox::record`]). Enough for an effect that does not care about order (a counter,
//!   a notification, a ledger credit keyed by the event).
//! - `inbox_sequences (consumer, topic, subject, last)`: for an event carrying a `sequence`
//!   (the outbox numbers every event of a subject on a topic, 1, 2, 3…), the last one the
//!   consumer applied. [`Inbox::admit`] compares the event's number with it, under the
//!   consumer's [`Order`]:
//!
//! | order | `sequence` ≤ last | last + 1 | > last + 1 |
//! |---|---|---|---|
//! | [`Order::HoldBack`] | [`Duplicate`](Admission::Duplicate) | [`Apply`](Admission::Apply) | [`Gap`](Admission::Gap): wait for the missing ones |
//! | [`Order::LastWriteWins`] | [`Duplicate`](Admission::Duplicate) (= last) or [`Stale`](Admission::Stale) (< last) | [`Apply`](Admission::Apply) | [`Apply`](Admission::Apply) |
//! | [`Order::Unordered`] | by event id: [`Apply`](Admission::Apply) once, then [`Duplicate`](Admission::Duplicate) | | |
//!
//! An event without a `subject` or `sequence` is admitted by its id under every order.
//!
//! # Retention
//!
//! Sequence rows are one per subject and are never pruned: a sequenced event delivered
//! again at any time, even by a replay from the start of the log, is recognized. Id rows
//! grow with every event, and [`Inbox::prune`] forgets them after a retention period; that
//! period must cover the whole retry horizon, the longest a copy of an event can still
//! arrive after the first: the bus's redelivery schedule (`max_deliveries` × the longest
//! backoff, plus the ack timeout), the relay's republishing after a crash (seconds), and any
//! replay an operator may run. OVASABI keeps id rows 7 days
//! ([`Inbox::DEFAULT_RETENTION`]), far beyond the default schedule (5 deliveries with at
//! most 30 s between them, 30 s ack timeout). A consumer rebuilt by a replay from the start
//! (`ovasabi replay`) clears its own rows first and starts from empty state.
//!
//! ```no_run
//! # async fn handle(store: ovasabi_store::Store, event: ovasabi_core::Event) -> Result<(), ovasabi_store::StoreError> {
//! use ovasabi_store::{params, inbox::{Admission, Order}, Inbox};
//!
//! let mut tx = store.begin().await?;
//! match Inbox::admit(&mut tx, "wallet", Order::Unordered, "user.events", &event).await? {
//!     Admission::Apply => {
//!         tx.execute("UPDATE wallets SET coins = coins + 1 WHERE user_id = $1", params!["u1"]).await?;
//!         tx.commit().await?; // then ack the delivery
//!     }
//!     Admission::Gap { .. } => { /* roll back; deliver again later */ }
//!     _ => { /* a duplicate or stale event: roll back and ack */ }
//! }
//! # Ok(()) }
//! ```
//!
//! On PostgreSQL, two transactions admitting the same event at once do not both see
//! `Apply`: the second waits for the first's row lock, then sees the first's outcome.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ovasabi_core::Event;

use crate::error::Result;
use crate::params;
use crate::store::{Store, Transaction};

/// How a consumer treats the per-subject `sequence` of the events it handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Each event's effect stands alone (a counter, a notification): admitted once by id,
    /// in any order.
    Unordered,
    /// A subject's events are applied one after the other, without holes: an event ahead
    /// of a missing one is a [`Gap`](Admission::Gap), to be handled again later. The
    /// consumer must read its topics from the beginning (a subject's first event is 1).
    HoldBack,
    /// Only the latest state of a subject matters: an event older than the last applied
    /// one is [`Stale`](Admission::Stale) and ignored; holes are fine.
    LastWriteWins,
}

/// What [`Inbox::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Apply the effect and commit: the record is written in the transaction.
    Apply,
    /// Already applied: skip it (roll back) and ack.
    Duplicate,
    /// Older than the last applied event of its subject ([`Order::LastWriteWins`]): skip
    /// it and ack.
    Stale {
        /// The subject's last applied sequence.
        last: u64,
    },
    /// Ahead of a missing event ([`Order::HoldBack`]): roll back, and handle it again once
    /// the missing ones have been applied.
    Gap {
        /// The sequence the subject waits for.
        expected: u64,
        /// This event's sequence.
        got: u64,
    },
}

/// The inbox of processed event ids, per consumer.
#[derive(Clone, Copy, Debug)]
pub struct Inbox;

impl Inbox {
    /// How long [`Inbox::prune`] callers in OVASABI keep processed ids.
    pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

    /// Decides, in `tx`, whether `consumer` applies `event` (read from `topic`) under
    /// `order`, and when it does, records that in `tx` (see the [module
    /// documentation](self)).
    pub async fn admit(
        tx: &mut Transaction,
        consumer: &str,
        order: Order,
        topic: &str,
        event: &Event,
    ) -> Result<Admission> {
        let (Some(subject), Some(seq)) = (event.subject.as_deref(), event.sequence()) else {
            return Self::by_id(tx, consumer, event).await;
        };
        if order == Order::Unordered {
            return Self::by_id(tx, consumer, event).await;
        }
        let seq_param = i64::try_from(seq).unwrap_or(i64::MAX);
        let now = Utc::now();
        let changed = match order {
            Order::LastWriteWins => {
                tx.execute(
                    "INSERT INTO inbox_sequences (consumer, topic, subject, last, updated_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (consumer, topic, subject) DO UPDATE
                     SET last = excluded.last, updated_at = excluded.updated_at
                     WHERE inbox_sequences.last < excluded.last",
                    params![consumer, topic, subject, seq_param, now],
                )
                .await?
            }
            _ if seq == 1 => {
                tx.execute(
                    "INSERT INTO inbox_sequences (consumer, topic, subject, last, updated_at)
                     VALUES ($1, $2, $3, 1, $4)
                     ON CONFLICT (consumer, topic, subject) DO NOTHING",
                    params![consumer, topic, subject, now],
                )
                .await?
            }
            _ => {
                tx.execute(
                    "UPDATE inbox_sequences SET last = $4, updated_at = $5
                     WHERE consumer = $1 AND topic = $2 AND subject = $3 AND last = $4 - 1",
                    params![consumer, topic, subject, seq_param, now],
                )
                .await?
            }
        };
        if changed == 1 {
            return Ok(Admission::Apply);
        }
        let last = Self::last_applied(tx, consumer, topic, subject).await?;
        Ok(if seq == last {
            Admission::Duplicate
        } else if seq < last {
            match order {
                Order::HoldBack => Admission::Duplicate,
                _ => Admission::Stale { last },
            }
        } else {
            Admission::Gap {
                expected: last + 1,
                got: seq,
            }
        })
    }

    /// The last sequence of `subject` on `topic` that `consumer` applied (0 if none), as
    /// `tx` sees it.
    pub async fn last_applied(
        tx: &mut Transaction,
        consumer: &str,
        topic: &str,
        subject: &str,
    ) -> Result<u64> {
        let row = tx
            .query_opt(
                "SELECT last FROM inbox_sequences
                 WHERE consumer = $1 AND topic = $2 AND subject = $3",
                params![consumer, topic, subject],
            )
            .await?;
        match row {
            Some(row) => row.get("last"),
            None => Ok(0),
        }
    }

    /// Admission by event id alone: the key is the source and the id (ids are unique per
    /// source).
    async fn by_id(tx: &mut Transaction, consumer: &str, event: &Event) -> Result<Admission> {
        let key = format!("{} {}", event.source, event.id);
        Ok(if Self::record(tx, consumer, &key).await? {
            Admission::Apply
        } else {
            Admission::Duplicate
        })
    }

    /// Forgets everything `consumer` recorded, ids and sequences, in `tx`: for a consumer
    /// that rebuilds its state from the start of the log.
    pub async fn reset(tx: &mut Transaction, consumer: &str) -> Result<()> {
        tx.execute("DELETE FROM inbox WHERE consumer = $1", params![consumer])
            .await?;
        tx.execute(
            "DELETE FROM inbox_sequences WHERE consumer = $1",
            params![consumer],
        )
        .await?;
        Ok(())
    }

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
