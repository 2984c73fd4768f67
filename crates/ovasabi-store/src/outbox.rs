//! The transactional outbox: a service writes its state change and the event announcing
//! it in one transaction; a relay later publishes the event to the bus.
//!
//! ```text
//! outbox (seq, event_id, aggregate, topic, event, created_at, published_at)
//! ```
//!
//! - `seq` increases with every row (identity column / SQLite `AUTOINCREMENT`, never
//!   reused).
//! - `aggregate` is the event's partition key (`partitionkey`), or null; the bus keeps
//!   order per partition key, and so does the outbox.
//! - `event` is the CloudEvent in the JSON format (`application/cloudevents+json`), as
//!   [`ovasabi_core::format::json`] writes it, with `time` filled in at append if absent.
//! - `published_at` is null until the relay has published the row.
//!
//! # Per-subject sequence
//!
//! An event with a `subject` and no `sequence` gets one at append: its position among the
//! events of that subject on that topic, 1 for the first, counted in
//! `outbox_sequences (topic, subject, last)`. The counter row is updated in the appending
//! transaction, so a rolled-back transaction leaves no hole, and (locked until commit on
//! PostgreSQL) numbers commit in the order they were drawn. Consumers use it to tell a
//! duplicate or stale event from the next one, and to see a gap
//! (`ovasabi_store::inbox`). One service publishes a given topic, so the numbers of a
//! subject on a topic come from one database.
//!
//! # Rows that commit late are never skipped, and order per aggregate holds
//!
//! A sequence number is handed out when the row is inserted, but the row becomes visible
//! only when its transaction commits, so rows become visible out of `seq` order: writer A
//! takes seq 10, writer B takes seq 11 and commits first. A relay that remembered "published
//! up to 11" would skip 10 for good when A commits. Two choices make this safe:
//!
//! 1. **No cursor.** A row's own `published_at` says whether it was published;
//!    [`Outbox::fetch_ready`] returns the unpublished rows in `seq` order (a partial
//!    index on `seq WHERE published_at IS NULL` keeps that cheap). A row that commits late
//!    is simply unpublished when it appears, and is returned by the next fetch. No
//!    timeout, no guess about how long a transaction may stay open.
//! 2. **Appends to one aggregate are serialized until commit.** On PostgreSQL,
//!    [`Outbox::append`] first takes a transaction-level advisory lock on the aggregate
//!    (`pg_advisory_xact_lock(hashtextextended('ovasabi.outbox:' || aggregate, 0))`),
//!    held until the transaction ends. A second transaction appending to the same
//!    aggregate waits there, and draws its `seq` only after the first has committed or
//!    rolled back. So within an aggregate, `seq` order is commit order, and any snapshot
//!    that sees a row also sees every earlier row of its aggregate: fetching in `seq`
//!    order publishes each aggregate's events in the order they committed. Late rows can
//!    only belong to *other* aggregates, whose order they do not disturb. On SQLite
//!    transactions never overlap (one writer), so the same holds with no lock.
//!
//! Costs: two transactions appending to the same aggregate run their tails one after the
//! other (a service updating the aggregate's row already serializes them the same way).
//! Two transactions that append to aggregates `a` then `b`, and `b` then `a`, can deadlock;
//! PostgreSQL breaks it after `deadlock_timeout` by failing one with a
//! [`Conflict`](crate::DbErrorKind::Conflict) error, to be run again. Events without a
//! partition key take no lock and have no order among themselves, as on the bus.
//!
//! We did not use PostgreSQL's transaction ids (`xid8` and `pg_snapshot_xmin`) as the
//! order: xid order is the order transactions *first wrote*, not the order they
//! committed, so a transaction that wrote early and then waited for another on the same
//! aggregate would be ordered before it. A gap timeout ("skip a missing seq after N
//! seconds") would lose the rows of any transaction slower than N.
//!
//! # The relay's loop
//!
//! ```no_run
//! # async fn relay(store: ovasabi_store::Store, bus: impl ovasabi_core::Publisher) -> Result<(), Box<dyn std::error::Error>> {
//! let outbox = store.outbox();
//! loop {
//!     let batch = outbox.fetch_ready(100).await?;
//!     if batch.is_empty() {
//!         tokio::time::sleep(std::time::Duration::from_millis(50)).await;
//!         continue;
//!     }
//!     for record in &batch {
//!         bus.publish(&record.topic, record.event.clone()).await?; // in seq order
//!     }
//!     outbox.mark_published(&batch.iter().map(|r| r.seq).collect::<Vec<_>>()).await?;
//! }
//! # }
//! ```
//!
//! Delivery is at least once: a relay that stops between publishing and
//! [`mark_published`](Outbox::mark_published) publishes those events again, so consumers
//! deduplicate (see [`Inbox`](crate::Inbox)). Run one relay per outbox at a time: two
//! relays fetching the same rows would publish one aggregate's events concurrently.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use ovasabi_core::format::json;
use ovasabi_core::{naming, Event};

use crate::config::Backend;
use crate::error::{Result, StoreError};
use crate::params;
use crate::store::{Store, Transaction};
use crate::value::Value;

/// At most this many sequence numbers per `mark_published` statement (a power of two).
const MARK_CHUNK: usize = 512;

/// One outbox row, as the relay reads it.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxRecord {
    /// The row's sequence number: publish in this order.
    pub seq: i64,
    /// The topic to publish to.
    pub topic: String,
    /// The event's partition key when it was appended.
    pub aggregate: Option<String>,
    /// The event.
    pub event: Event,
    /// When the row was appended.
    pub created_at: DateTime<Utc>,
}

/// The outbox of a [`Store`]: [`Outbox::append`] inside a service's transaction; the rest
/// for the relay.
#[derive(Clone, Debug)]
pub struct Outbox {
    store: Store,
}

impl Outbox {
    /// The outbox of `store` (also [`Store::outbox`]).
    pub fn new(store: &Store) -> Outbox {
        Outbox {
            store: store.clone(),
        }
    }

    /// Adds `event`, to be published to `topic`, in the transaction `tx`: it will be
    /// published if and only if `tx` commits. Returns the row's sequence number.
    ///
    /// The event is validated (CloudEvents, and the topic name) here, so a bad event fails
    /// the service's transaction instead of blocking the relay later. `time` is set to now
    /// if absent. On PostgreSQL, an event with a partition key locks that aggregate's
    /// appends until `tx` ends (see the [module documentation](self)).
    pub async fn append(tx: &mut Transaction, topic: &str, event: &Event) -> Result<i64> {
        naming::validate_topic(topic).map_err(|e| StoreError::InvalidEvent(e.to_string()))?;
        let mut event = if event.time.is_some() {
            Cow::Borrowed(event)
        } else {
            let mut owned = event.clone();
            owned.time = Some(Utc::now());
            Cow::Owned(owned)
        };
        event
            .validate()
            .map_err(|e| StoreError::InvalidEvent(e.to_string()))?;
        if let (Backend::Postgres, Some(aggregate)) = (tx.backend(), event.partition_key()) {
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                params![format!("ovasabi.outbox:{aggregate}")],
            )
            .await?;
        }
        if event.sequence().is_none() {
            if let Some(subject) = event.subject.as_deref() {
                let sequence = next_sequence(tx, topic, subject).await?;
                event.to_mut().set_sequence(sequence);
            }
        }
        let text = String::from_utf8(json::to_json_vec(&event))
            .map_err(|_| StoreError::InvalidEvent("its JSON form is not UTF-8".into()))?;
        let aggregate = event.partition_key();
        let row = tx
            .query_one(
                "INSERT INTO outbox (event_id, aggregate, topic, event, created_at)
                 VALUES ($1, $2, $3, $4, $5) RETURNING seq",
                params![event.id.as_str(), aggregate, topic, text, Utc::now()],
            )
            .await?;
        row.get("seq")
    }

    /// Up to `limit` unpublished rows, in `seq` order (so in commit order within each
    /// aggregate). The same rows come back until they are marked published.
    pub async fn fetch_ready(&self, limit: usize) -> Result<Vec<OutboxRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .store
            .query(
                "SELECT seq, topic, aggregate, event, created_at FROM outbox
                 WHERE published_at IS NULL ORDER BY seq LIMIT $1",
                params![limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.get("seq")?;
                let text: String = row.get("event")?;
                let event = json::from_json_slice(text.as_bytes())
                    .map_err(|source| StoreError::CorruptOutboxRow { seq, source })?;
                Ok(OutboxRecord {
                    seq,
                    topic: row.get("topic")?,
                    aggregate: row.get("aggregate")?,
                    event,
                    created_at: row.get("created_at")?,
                })
            })
            .collect()
    }

    /// Marks the rows published; returns how many were not already. Unknown sequence
    /// numbers are ignored.
    pub async fn mark_published(&self, seqs: &[i64]) -> Result<u64> {
        let now = Utc::now();
        let mut marked = 0;
        for chunk in seqs.chunks(MARK_CHUNK) {
            // Padded to a power of two by repeating the last number, so a connection
            // prepares at most ten forms of this statement.
            let width = chunk.len().next_power_of_two();
            let placeholders: Vec<String> = (2..width + 2).map(|i| format!("${i}")).collect();
            let sql = format!(
                "UPDATE outbox SET published_at = $1 WHERE published_at IS NULL AND seq IN ({})",
                placeholders.join(", ")
            );
            let params: Vec<Value> = std::iter::once(Value::from(now))
                .chain(chunk.iter().map(Value::from))
                .chain(std::iter::repeat_n(
                    Value::from(chunk[chunk.len() - 1]),
                    width - chunk.len(),
                ))
                .collect();
            marked += self.store.execute(&sql, &params).await?;
        }
        Ok(marked)
    }

    /// How many rows wait to be published.
    pub async fn pending(&self) -> Result<u64> {
        let row = self
            .store
            .query_one(
                "SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL",
                &[],
            )
            .await?;
        row.get("n")
    }

    /// When the oldest row waiting to be published was appended, if one waits. The lowest
    /// unpublished `seq` (one probe of the partial index on unpublished rows) is, but for a
    /// late commit, the oldest row.
    pub async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>> {
        match self
            .store
            .query_opt(
                "SELECT created_at FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT 1",
                &[],
            )
            .await?
        {
            Some(row) => Ok(Some(row.get("created_at")?)),
            None => Ok(None),
        }
    }

    /// Deletes rows published before `before`; returns how many. Unpublished rows stay.
    pub async fn prune_published(&self, before: DateTime<Utc>) -> Result<u64> {
        self.store
            .execute(
                "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < $1",
                params![before],
            )
            .await
    }
}

/// Draws the next `sequence` of `subject` on `topic`: 1 for its first event. The row stays
/// locked until `tx` ends (PostgreSQL), so the numbers commit in the order they were drawn,
/// without holes: a rolled-back transaction gives its number back.
async fn next_sequence(tx: &mut Transaction, topic: &str, subject: &str) -> Result<u64> {
    let row = tx
        .query_one(
            "INSERT INTO outbox_sequences (topic, subject, last) VALUES ($1, $2, 1)
             ON CONFLICT (topic, subject) DO UPDATE SET last = outbox_sequences.last + 1
             RETURNING last",
            params![topic, subject],
        )
        .await?;
    row.get("last")
}
