//! The transactional outbox: a service writes its state change and the event announcing
//! it in one transaction; a relay later publishes the event to the bus.
//!
//! ```text
//! outbox (seq, event_id, aggregate, topic, event, created_at, published_at, unreadable)
//! ```
//!
//! - `seq` increases with every row (identity column / SQLite `AUTOINCREMENT`, never
//!   reused).
//! - `aggregate` is the event's partition key (`partitionkey`), or null; the bus keeps
//!   order per partition key, and so does the outbox.
//! - `event` is the CloudEvent in the JSON format (`application/cloudevents+json`), as
//!   [`ovasabi_core::format::json`] writes it, with `time` filled in at append if absent.
//! - `published_at` is null until the relay has published the row.
//! - `unreadable` is null unless the row's event no longer decodes (edited by hand,
//!   corrupted, or written by a build that encodes differently): see
//!   [Unreadable rows](#unreadable-rows).
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
//! # Rows kept in memory for the relay
//!
//! A relay in the process that appended a row need not read it back: a transaction hands
//! its rows (the events exactly as written) to its [`Store`] as it commits, and
//! [`Outbox::fetch_ready`] reads only the unpublished rows' numbers and event ids from the
//! table, taking the events from memory where the numbers and ids match, and reading the
//! rest in full. The table stays the authority: what a fetch returns, and in what order, is
//! what the table lists; memory only spares decoding. At most a few thousand rows are kept,
//! so a process whose relay runs elsewhere keeps no more.
//!
//! # Unreadable rows
//!
//! A row whose `event` does not decode makes [`Outbox::fetch_ready`] fail with
//! [`StoreError::CorruptOutboxRow`], naming the row. Rather than stop every row behind it,
//! the relay sets it aside with [`Outbox::set_aside`]: `published_at` and `unreadable` (why
//! it does not decode) are set, so it no longer waits and is never published, and the rows
//! behind it go out. Such rows are never pruned; [`Outbox::unreadable`] counts them. To
//! publish one after all, correct its `event` and clear both columns:
//!
//! ```sql
//! UPDATE outbox SET event = '…', published_at = NULL, unreadable = NULL WHERE seq = 42;
//! ```
//!
//! Delivery is at least once: a relay that stops between publishing and
//! [`mark_published`](Outbox::mark_published) publishes those events again, so consumers
//! deduplicate (see [`Inbox`](crate::Inbox)). Run one relay per outbox at a time: two
//! relays fetching the same rows would publish one aggregate's events concurrently.

use std::borrow::Cow;

use chrono::{DateTime, SubsecRound as _, Utc};
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
        // On PostgreSQL the aggregate's lock comes first, then the subject's number; when
        // both are needed one statement takes them in that order (one round trip fewer).
        let lock = match (tx.backend(), event.partition_key()) {
            (Backend::Postgres, Some(aggregate)) => Some(format!("ovasabi.outbox:{aggregate}")),
            _ => None,
        };
        let subject = match (event.sequence(), event.subject.as_deref()) {
            (None, Some(subject)) => Some(subject.to_owned()),
            _ => None,
        };
        if let Some(subject) = subject {
            let sequence = next_sequence(tx, lock.as_deref(), topic, &subject).await?;
            event.to_mut().set_sequence(sequence);
        } else if let Some(lock) = lock {
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                params![lock],
            )
            .await?;
        }
        let text = String::from_utf8(json::to_json_vec(&event))
            .map_err(|_| StoreError::InvalidEvent("its JSON form is not UTF-8".into()))?;
        let aggregate = event.partition_key();
        // Whole microseconds, as the table keeps it, so the row kept for the relay is the
        // row the table holds.
        let created_at = Utc::now().trunc_subsecs(6);
        let row = tx
            .query_one(
                "INSERT INTO outbox (event_id, aggregate, topic, event, created_at)
                 VALUES ($1, $2, $3, $4, $5) RETURNING seq",
                params![event.id.as_str(), aggregate, topic, text, created_at],
            )
            .await?;
        let seq = row.get("seq")?;
        tx.appended(OutboxRecord {
            seq,
            topic: topic.to_owned(),
            aggregate: aggregate.map(str::to_owned),
            event: event.into_owned(),
            created_at,
        });
        Ok(seq)
    }

    /// Up to `limit` unpublished rows, in `seq` order (so in commit order within each
    /// aggregate). The same rows come back until they are marked published.
    ///
    /// The rows' numbers and event ids are read from the table; their contents come from
    /// this process's [committed rows](Committed) where it holds them (the same event, not
    /// decoded again), and from the table for the rest (rows of other processes, of an
    /// earlier run, or handed out by an earlier fetch whose rows were not marked).
    pub async fn fetch_ready(&self, limit: usize) -> Result<Vec<OutboxRecord>> {
        let committed = self.store.committed();
        let mark = committed.mark();
        let rows = self
            .store
            .query(
                "SELECT seq, event_id FROM outbox
                 WHERE published_at IS NULL ORDER BY seq LIMIT $1",
                params![i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?;
        let mut ready = Vec::with_capacity(rows.len());
        for row in &rows {
            ready.push((row.get::<i64>("seq")?, row.get::<String>("event_id")?));
        }
        let records = committed.take(&ready, mark, ready.len() < limit);
        let missing: Vec<i64> = ready
            .iter()
            .zip(&records)
            .filter(|(_, record)| record.is_none())
            .map(|((seq, _), _)| *seq)
            .collect();
        let mut read = std::collections::HashMap::with_capacity(missing.len());
        for chunk in missing.chunks(MARK_CHUNK) {
            let (list, params) = seq_list(1, chunk);
            let sql = format!(
                "SELECT seq, topic, aggregate, event, created_at FROM outbox
                 WHERE published_at IS NULL AND seq IN ({list})"
            );
            for row in self.store.query(&sql, &params).await? {
                let record = decode(&row)?;
                read.insert(record.seq, record);
            }
        }
        // A row missing from the second read was published meanwhile (by another relay).
        let mut out = Vec::with_capacity(ready.len());
        out.extend(
            ready
                .iter()
                .zip(records)
                .filter_map(|((seq, _), record)| record.or_else(|| read.remove(seq))),
        );
        Ok(out)
    }

    /// Marks the rows published; returns how many were not already. Unknown sequence
    /// numbers are ignored.
    pub async fn mark_published(&self, seqs: &[i64]) -> Result<u64> {
        let now = Utc::now();
        let mut marked = 0;
        for chunk in seqs.chunks(MARK_CHUNK) {
            let (list, mut params) = seq_list(2, chunk);
            params.insert(0, Value::from(now));
            let sql = format!(
                "UPDATE outbox SET published_at = $1 WHERE published_at IS NULL AND seq IN ({list})"
            );
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

    /// Deletes rows published before `before`; returns how many. Unpublished rows and
    /// rows [set aside](Self::set_aside) stay.
    pub async fn prune_published(&self, before: DateTime<Utc>) -> Result<u64> {
        self.store
            .execute(
                "DELETE FROM outbox
                 WHERE published_at IS NOT NULL AND published_at < $1 AND unreadable IS NULL",
                params![before],
            )
            .await
    }

    /// Sets the unpublished row `seq`, whose event does not decode (`why`), aside: it stops
    /// waiting, is never published or pruned, and keeps `why` in its `unreadable` column
    /// (see [Unreadable rows](self#unreadable-rows)). Returns the row's event id if it was
    /// waiting, `None` if it was not.
    pub async fn set_aside(&self, seq: i64, why: &str) -> Result<Option<String>> {
        match self
            .store
            .query_opt(
                "UPDATE outbox SET published_at = $1, unreadable = $2
                 WHERE seq = $3 AND published_at IS NULL RETURNING event_id",
                params![Utc::now(), why, seq],
            )
            .await?
        {
            Some(row) => Ok(Some(row.get("event_id")?)),
            None => Ok(None),
        }
    }

    /// How many rows were [set aside](Self::set_aside) as unreadable.
    pub async fn unreadable(&self) -> Result<u64> {
        let row = self
            .store
            .query_one(
                "SELECT COUNT(*) AS n FROM outbox WHERE unreadable IS NOT NULL",
                &[],
            )
            .await?;
        row.get("n")
    }
}

/// Draws the next `sequence` of `subject` on `topic`: 1 for its first event. The row stays
/// locked until `tx` ends (PostgreSQL), so the numbers commit in the order they were drawn,
/// without holes: a rolled-back transaction gives its number back. With `lock`
/// (PostgreSQL), the same statement first takes that advisory lock: its CTE is read before
/// the counter row is written.
async fn next_sequence(
    tx: &mut Transaction,
    lock: Option<&str>,
    topic: &str,
    subject: &str,
) -> Result<u64> {
    let row = match lock {
        None => {
            tx.query_one(
                "INSERT INTO outbox_sequences (topic, subject, last) VALUES ($1, $2, 1)
                 ON CONFLICT (topic, subject) DO UPDATE SET last = outbox_sequences.last + 1
                 RETURNING last",
                params![topic, subject],
            )
            .await?
        }
        Some(lock) => {
            tx.query_one(
                "WITH locked AS (SELECT pg_advisory_xact_lock(hashtextextended($3, 0)))
                 INSERT INTO outbox_sequences (topic, subject, last)
                 SELECT $1, $2, 1 FROM locked
                 ON CONFLICT (topic, subject) DO UPDATE SET last = outbox_sequences.last + 1
                 RETURNING last",
                params![topic, subject, lock],
            )
            .await?
        }
    };
    row.get("last")
}

/// `$first, $first+1, …` for `seqs`, and the values: padded to a power of two by repeating
/// the last number, so a connection prepares at most ten forms of a statement using it.
fn seq_list(first: usize, seqs: &[i64]) -> (String, Vec<Value>) {
    let width = seqs.len().next_power_of_two();
    let list: Vec<String> = (first..first + width).map(|i| format!("${i}")).collect();
    let values = seqs
        .iter()
        .map(Value::from)
        .chain(std::iter::repeat_n(
            Value::from(seqs[seqs.len() - 1]),
            width - seqs.len(),
        ))
        .collect();
    (list.join(", "), values)
}

/// An outbox row read from the table.
fn decode(row: &crate::value::Row) -> Result<OutboxRecord> {
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
}

/// At most this many rows are kept for the relay; beyond, the relay reads them from the
/// table (a process whose relay does not run, or runs elsewhere, keeps no more).
const KEPT: usize = 4096;

/// The outbox rows of this process's transactions, kept for its relay: the relay publishes
/// these events as they were appended, instead of reading them back and decoding their
/// JSON.
///
/// - A transaction's rows enter just before it commits (so a relay that sees them in the
///   table right after the commit finds them here), and leave again if the commit fails.
/// - A fetch takes a kept row only if the table lists it, unpublished, with the same event
///   id: a row the table lists has committed, whatever the state of its transaction here.
/// - A row leaves when a fetch hands it out, or when a fetch that read every unpublished
///   row, and began after the row's commit had returned, did not list it: another process
///   published it, or its transaction rolled back after all.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    inner: std::sync::Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    /// Each row with the tick at which its commit returned (`None` until then).
    rows: std::collections::BTreeMap<i64, (Option<u64>, OutboxRecord)>,
    /// Counts commits that returned.
    tick: u64,
}

impl Committed {
    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the rows of a transaction about to commit; returns the numbers kept, for
    /// [`settle`](Self::settle) once the commit has returned.
    pub(crate) fn keep(&self, records: Vec<OutboxRecord>) -> Vec<i64> {
        if records.is_empty() {
            return Vec::new();
        }
        let mut kept = self.lock();
        let room = KEPT.saturating_sub(kept.rows.len());
        records
            .into_iter()
            .take(room)
            .map(|record| {
                let seq = record.seq;
                kept.rows.insert(seq, (None, record));
                seq
            })
            .collect()
    }

    /// The commit of the rows `seqs` returned: `committed` says whether it committed (when
    /// not, or unknown, the rows leave; the relay reads any that did commit from the table).
    pub(crate) fn settle(&self, seqs: &[i64], committed: bool) {
        if seqs.is_empty() {
            return;
        }
        let mut kept = self.lock();
        kept.tick += 1;
        let tick = kept.tick;
        for seq in seqs {
            if committed {
                if let Some((settled, _)) = kept.rows.get_mut(seq) {
                    *settled = Some(tick);
                }
            } else {
                kept.rows.remove(seq);
            }
        }
    }

    /// Now, for [`take`](Self::take): call before reading the table.
    fn mark(&self) -> u64 {
        self.lock().tick
    }

    /// Takes the kept rows among `ready` (the table's unpublished rows, as `(seq, event id)`,
    /// read after [`mark`](Self::mark) returned `mark`); `None` where none is kept. When
    /// `ready` lists every unpublished row (`complete`), a row whose commit returned before
    /// `mark` and that is not in it is gone from the table's unpublished rows: it is dropped.
    fn take(
        &self,
        ready: &[(i64, String)],
        mark: u64,
        complete: bool,
    ) -> Vec<Option<OutboxRecord>> {
        let mut kept = self.lock();
        if kept.rows.is_empty() {
            return vec![None; ready.len()];
        }
        let taken = ready
            .iter()
            .map(|(seq, id)| match kept.rows.remove(seq) {
                Some((_, record)) if &record.event.id == id => Some(record),
                _ => None,
            })
            .collect();
        if complete {
            kept.rows
                .retain(|_, (settled, _)| settled.is_none_or(|tick| tick > mark));
        }
        taken
    }

    /// How many rows are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: i64, id: &str) -> OutboxRecord {
        OutboxRecord {
            seq,
            topic: "wallet.events".into(),
            aggregate: None,
            event: Event::new("coin.mined", "/ovasabi/wallet").with_id(id),
            created_at: Utc::now(),
        }
    }

    fn ready(rows: &[(i64, &str)]) -> Vec<(i64, String)> {
        rows.iter()
            .map(|(seq, id)| (*seq, id.to_string()))
            .collect()
    }

    #[test]
    fn kept_rows_are_taken_once_and_only_with_their_event_id() {
        let committed = Committed::default();
        let seqs = committed.keep(vec![record(1, "a"), record(2, "b"), record(3, "c")]);
        committed.settle(&seqs, true);
        let mark = committed.mark();
        let taken = committed.take(&ready(&[(1, "a"), (2, "not-b"), (4, "d")]), mark, false);
        assert_eq!(taken[0].as_ref().map(|r| r.seq), Some(1));
        assert!(
            taken[1].is_none(),
            "another event under the same number is read from the table"
        );
        assert!(taken[2].is_none(), "a row not kept is read from the table");
        assert_eq!(
            committed.len(),
            1,
            "taken and mismatched rows leave; 3 stays"
        );
        let again = committed.take(&ready(&[(1, "a")]), mark, false);
        assert!(again[0].is_none(), "a row is handed out once");
    }

    #[test]
    fn a_row_listed_by_the_table_is_taken_before_its_commit_returns() {
        let committed = Committed::default();
        committed.keep(vec![record(1, "a")]);
        let taken = committed.take(&ready(&[(1, "a")]), committed.mark(), true);
        assert_eq!(taken[0].as_ref().map(|r| r.seq), Some(1));
    }

    #[test]
    fn a_failed_commit_takes_its_rows_back() {
        let committed = Committed::default();
        let seqs = committed.keep(vec![record(1, "a"), record(2, "b")]);
        committed.settle(&seqs, false);
        assert_eq!(committed.len(), 0);
    }

    #[test]
    fn rows_gone_from_the_table_are_dropped_only_by_a_complete_fetch_after_their_commit() {
        let committed = Committed::default();
        let seqs = committed.keep(vec![record(1, "a"), record(2, "b")]);
        committed.settle(&seqs, true);
        // Still committing when the fetch reads: the table may not list it yet.
        committed.keep(vec![record(3, "c")]);
        let mark = committed.mark();
        // Its commit returns while the fetch reads.
        let late = committed.keep(vec![record(4, "d")]);
        committed.settle(&late, true);
        committed.take(&ready(&[(2, "b")]), mark, false);
        assert_eq!(
            committed.len(),
            3,
            "a fetch cut short by its limit drops nothing"
        );
        committed.take(&ready(&[]), mark, true);
        assert_eq!(
            committed.len(),
            2,
            "1 is gone; 3 and 4 were not settled before the read"
        );
        let taken = committed.take(&ready(&[(3, "c"), (4, "d")]), committed.mark(), true);
        assert!(taken.iter().all(Option::is_some));
        assert_eq!(committed.len(), 0);
    }

    #[test]
    fn at_most_kept_rows_are_kept() {
        let committed = Committed::default();
        let seqs = committed.keep((0..KEPT as i64 + 10).map(|n| record(n, "x")).collect());
        assert_eq!(seqs.len(), KEPT);
        assert_eq!(committed.len(), KEPT);
    }
}
