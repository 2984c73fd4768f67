//! `audit`: the audit trail. Every event on the audited topics is recorded once, with where
//! it was delivered, by which process, and at which attempt.
//!
//! - Consumer group `audit` on the topics of [`AuditService::new`] (default `*.events`: every
//!   domain topic, not their dead-letter topics), unordered: the trail keeps the bus's
//!   offset and the event's time, so order is recovered when read.
//! - Table `audit_events`: one row per event and topic, holding the whole event as
//!   structured-mode CloudEvents JSON. Rows are keyed by `seq` (the order recorded), not by
//!   the event id, so an event recorded twice would show as two rows: the inbox is what
//!   keeps it to one.
//! - Effect once: the event's key (topic, source, id) goes into the inbox in the same
//!   transaction as the row ([`Inbox::record`]). A redelivery of an event already recorded
//!   — its first process died after the commit, before the ack — commits nothing and is
//!   acked.
//! - Hash chain: every row gets a `position` (1, 2, 3… with no gaps), the previous entry's
//!   hash and its own: SHA-256 over the previous hash and the row's fields, each prefixed
//!   by its length (see [`entry_hash`]). The chain's head (last position and hash) is the
//!   one row of `audit_chain`.
//! - Chained after recording, not while: recording a row does not touch the head, so the
//!   recording transactions of many processes commit side by side (locking the head in each
//!   of them made PostgreSQL commit one audit row at a time). A row commits unchained
//!   (`position`, `prev_hash` and `hash` NULL) and the chainer, a task each audit process
//!   runs beside its consumer, chains it: in one transaction it locks the head
//!   (`FOR UPDATE`; on SQLite the single writer does the same), takes up to
//!   [`CHAIN_BATCH`] unchained rows in `seq` order, gives them the next positions, hashes
//!   them and moves the head. One process chains at a time; the others' passes wait for
//!   the lock and then find nothing, or what came since. A pass runs soon after this
//!   process records (the recorder wakes it) and every [`CHAIN_INTERVAL`] in any case, so
//!   rows another process recorded (or one that died) are chained too.
//! - Late rows: a row whose transaction commits after rows recorded later (a higher `seq`)
//!   were chained gets a later position. The chain's order is the order rows were chained,
//!   not `seq` order; `event_time` and `recorded_at` still say when things happened. Rows
//!   recorded before the chain existed (schema version 1) are chained by the first pass.
//! - [`verify`] (`ovasabi audit verify`) walks the chain from position 1, recomputes each
//!   hash and names the first position where an entry was changed, removed or moved; rows
//!   not chained yet are counted as pending, which is not a fault.
//!   `GET /v1/audit?subject=&type=&from=` lists chained entries in chain order.
//! - The chainer is the service's background task ([`Service::tasks`]): it stops after the
//!   consumer. A pass cut short by the process's end rolls back whole; rows left pending
//!   when the last audit process stops are chained by the next one to start.
//!
//! Any number of processes may run `ovasabi serve audit` on one bus and one database: they
//! share the events, and the events a dead process held come back to the others after the
//! ack timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use ovasabi_core::format::json;
use ovasabi_core::Ordering;
use ovasabi_middleware::{Handler, HandlerError, Message, Outgoing};
use ovasabi_store::{params, Inbox, Migration, MigrationSet, Row, Store, StoreError};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::http::ApiError;
use crate::runtime::{ConsumerSpec, Context, Service, ServiceError, Task};
use crate::users::paging;

/// The consumer group, and the inbox's consumer name.
pub const GROUP: &str = "audit";

/// The topics audited unless configured otherwise: every domain topic.
pub const DEFAULT_TOPICS: &[&str] = &["*.events"];

const MIGRATIONS: MigrationSet = MigrationSet::new(
    "audit",
    &[
        Migration::per_backend(
            1,
            "audit_events",
            "CREATE TABLE audit_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            source TEXT NOT NULL,
            subject TEXT,
            topic TEXT NOT NULL,
            bus_offset BIGINT NOT NULL,
            event_time TIMESTAMPTZ,
            attempt INTEGER NOT NULL,
            recorded_by TEXT NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL,
            event TEXT NOT NULL
        );
        CREATE INDEX audit_events_event ON audit_events (event_id);
        CREATE INDEX audit_events_subject ON audit_events (subject);",
            "CREATE TABLE audit_events (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            source TEXT NOT NULL,
            subject TEXT,
            topic TEXT NOT NULL,
            bus_offset BIGINT NOT NULL,
            event_time TIMESTAMPTZ,
            attempt INTEGER NOT NULL,
            recorded_by TEXT NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL,
            event TEXT NOT NULL
        );
        CREATE INDEX audit_events_event ON audit_events (event_id);
        CREATE INDEX audit_events_subject ON audit_events (subject);",
        ),
        Migration::new(
            2,
            "audit_chain",
            "ALTER TABLE audit_events ADD COLUMN position BIGINT;
        ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
        ALTER TABLE audit_events ADD COLUMN hash TEXT;
        CREATE UNIQUE INDEX audit_events_position ON audit_events (position);
        CREATE TABLE audit_chain (
            id INTEGER PRIMARY KEY,
            position BIGINT NOT NULL,
            hash TEXT NOT NULL
        );
        INSERT INTO audit_chain (id, position, hash)
            VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');",
        ),
        Migration::per_backend(
            3,
            "audit_events.correlation_id, causation_id: the causal links, for ovasabi trace",
            "ALTER TABLE audit_events ADD COLUMN correlation_id TEXT;
        ALTER TABLE audit_events ADD COLUMN causation_id TEXT;
        UPDATE audit_events SET correlation_id = json_extract(event, '$.correlationid'),
            causation_id = json_extract(event, '$.causationid');
        CREATE INDEX audit_events_correlation ON audit_events (correlation_id);
        CREATE INDEX audit_events_causation ON audit_events (causation_id);",
            "ALTER TABLE audit_events ADD COLUMN correlation_id TEXT;
        ALTER TABLE audit_events ADD COLUMN causation_id TEXT;
        UPDATE audit_events SET correlation_id = event::json->>'correlationid',
            causation_id = event::json->>'causationid';
        CREATE INDEX audit_events_correlation ON audit_events (correlation_id);
        CREATE INDEX audit_events_causation ON audit_events (causation_id);",
        ),
    ],
);

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The most rows one chaining pass takes (one transaction); more wait for the next pass,
/// which follows at once.
pub const CHAIN_BATCH: i64 = 500;

/// How often the chainer looks for unchained rows when nothing wakes it.
pub const CHAIN_INTERVAL: Duration = Duration::from_millis(200);

/// The audit trail service.
#[derive(Clone, Debug)]
pub struct AuditService {
    topics: Vec<String>,
    /// Wakes the chainer after the recorder commits a row.
    wake: Arc<Notify>,
}

impl AuditService {
    /// Audits `topics` (names or patterns); [`DEFAULT_TOPICS`] when empty.
    pub fn new(topics: Vec<String>) -> AuditService {
        let topics = if topics.is_empty() {
            DEFAULT_TOPICS.iter().map(|t| (*t).to_owned()).collect()
        } else {
            topics
        };
        AuditService {
            topics,
            wake: Arc::new(Notify::new()),
        }
    }
}

impl Default for AuditService {
    fn default() -> Self {
        AuditService::new(Vec::new())
    }
}

impl Service for AuditService {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn about(&self) -> &'static str {
        "the audit trail: records every event of the domain topics once, with who recorded it"
    }

    fn migrations(&self) -> MigrationSet {
        MIGRATIONS
    }

    fn routes(&self, ctx: &Context) -> Option<Router> {
        Some(
            Router::new()
                .route("/v1/audit", get(list))
                .with_state(ctx.store.clone()),
        )
    }

    fn openapi(&self) -> Value {
        let parameters = paging::openapi_parameters_after(vec![
            json!({"name": "subject", "in": "query", "schema": {"type": "string"}, "description": "Only events of this subject"}),
            json!({"name": "type", "in": "query", "schema": {"type": "string"}, "description": "Only events of this type"}),
            json!({"name": "from", "in": "query", "schema": {"type": "string", "format": "date-time"}, "description": "Only events whose time is at or after this (RFC 3339)"}),
        ]);
        json!({
            "paths": {
                "/v1/audit": {
                    "get": {
                        "summary": "The audit trail in chain order, a page at a time: each entry with its place in the hash chain. Entries recorded in the last moments appear once chained (within a second)",
                        "parameters": parameters,
                        "responses": {
                            "200": {"description": "A page of entries", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AuditPage"}}}},
                            "400": {"description": "The query string cannot be read", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                            "422": {"description": "`from`, `limit` or `cursor` is invalid, or a parameter is unknown", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                        }
                    }
                }
            },
            "schemas": {
                "AuditEntry": {"type": "object", "required": ["position", "hash", "prev_hash", "topic", "offset", "attempt", "recorded_by", "recorded_at", "event"], "properties": {
                    "position": {"type": "integer", "minimum": 1},
                    "hash": {"type": "string", "description": "Hex SHA-256 over prev_hash and the entry's fields"},
                    "prev_hash": {"type": "string"},
                    "topic": {"type": "string"},
                    "offset": {"type": "integer"},
                    "attempt": {"type": "integer"},
                    "recorded_by": {"type": "string"},
                    "recorded_at": {"type": "string", "format": "date-time"},
                    "event": {"type": "object", "description": "The CloudEvent, structured mode"}
                }},
                "AuditPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}},
                    "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for the next entries; null on the last page"}
                }}
            }
        })
    }

    fn consumers(&self, ctx: &Context) -> Result<Vec<ConsumerSpec>, ServiceError> {
        let options = ctx
            .subscribe_options(GROUP, &self.topics, Ordering::None)
            .map_err(|e| ServiceError::Config {
                service: "audit",
                reason: format!("--audit-topics: {e}"),
            })?;
        Ok(vec![ConsumerSpec {
            options,
            handler: Arc::new(Recorder {
                store: ctx.store.clone(),
                instance: ctx.settings.instance.clone(),
                duplicates: AtomicU64::new(0),
                wake: self.wake.clone(),
            }),
        }])
    }

    fn tasks(&self, ctx: &Context, stop: CancellationToken) -> Vec<Task> {
        vec![Box::pin(run_chainer(
            ctx.store.clone(),
            self.wake.clone(),
            stop,
        ))]
    }
}

/// Records one event per delivery, once.
struct Recorder {
    store: Store,
    instance: String,
    duplicates: AtomicU64,
    /// Wakes the chainer after a row is committed.
    wake: Arc<Notify>,
}

fn store_failure(e: StoreError) -> HandlerError {
    // A database that is down or busy comes back; the bus redelivers meanwhile.
    HandlerError::transient(format!("audit database: {e}"))
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, msg: &Message) -> Result<Vec<Outgoing>, HandlerError> {
        let event = msg.event();
        // CloudEvents ids are unique per source; a topic records its own copy (a
        // dead-lettered event keeps its id on the dead-letter topic).
        let key = format!("{} {} {}", msg.topic(), event.source, event.id);
        let mut tx = self.store.begin().await.map_err(store_failure)?;
        let inserted = Inbox::record(&mut tx, GROUP, &key)
            .await
            .map_err(store_failure)?;
        if inserted {
            tx.execute(
                "INSERT INTO audit_events (event_id, event_type, source, subject, topic,
                     bus_offset, event_time, attempt, recorded_by, recorded_at, event,
                     correlation_id, causation_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                params![
                    event.id.as_str(),
                    event.ty.as_str(),
                    event.source.as_str(),
                    event.subject.as_deref(),
                    msg.topic(),
                    i64::try_from(msg.offset()).unwrap_or(i64::MAX),
                    event.time,
                    i64::from(msg.attempt()),
                    self.instance.as_str(),
                    Utc::now(),
                    json::to_json_string(event),
                    event.correlation_id(),
                    event.causation_id(),
                ],
            )
            .await
            .map_err(store_failure)?;
        } else {
            let n = self.duplicates.fetch_add(1, AtomicOrdering::Relaxed) + 1;
            tracing::info!(
                event_id = %event.id,
                topic = msg.topic(),
                attempt = msg.attempt(),
                duplicates = n,
                "already recorded; acking the duplicate"
            );
        }
        tx.commit().await.map_err(store_failure)?;
        if inserted {
            self.wake.notify_one();
        }
        Ok(Vec::new())
    }
}

/// One recorded event.
#[derive(Clone, Debug)]
pub struct AuditRecord {
    /// Order recorded.
    pub seq: i64,
    /// The topic it was delivered from.
    pub topic: String,
    /// Its offset there.
    pub offset: i64,
    /// The delivery attempt that recorded it.
    pub attempt: i64,
    /// The process that recorded it.
    pub recorded_by: String,
    /// When.
    pub recorded_at: chrono::DateTime<Utc>,
    /// The event, as structured-mode CloudEvents JSON.
    pub event_json: String,
    /// Its type.
    pub event_type: String,
    /// Its subject.
    pub subject: Option<String>,
}

/// Which records [`recent`] returns.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only this subject.
    pub subject: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// The most recent records matching `filter`, newest first.
pub async fn recent(store: &Store, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
    let mut sql = String::from(
        "SELECT seq, topic, bus_offset, attempt, recorded_by, recorded_at, event, event_type, subject
         FROM audit_events WHERE TRUE",
    );
    let mut values = Vec::new();
    if let Some(subject) = &filter.subject {
        values.push(ovasabi_store::Value::from(subject.as_str()));
        sql.push_str(&format!(" AND subject = ${}", values.len()));
    }
    if let Some(ty) = &filter.event_type {
        values.push(ovasabi_store::Value::from(ty.as_str()));
        sql.push_str(&format!(" AND event_type = ${}", values.len()));
    }
    values.push(ovasabi_store::Value::from(
        i64::try_from(filter.limit).unwrap_or(i64::MAX),
    ));
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT ${}", values.len()));
    store
        .query(&sql, &values)
        .await?
        .into_iter()
        .map(|row| {
            Ok(AuditRecord {
                seq: row.get("seq")?,
                topic: row.get("topic")?,
                offset: row.get("bus_offset")?,
                attempt: row.get("attempt")?,
                recorded_by: row.get("recorded_by")?,
                recorded_at: row.get("recorded_at")?,
                event_json: row.get("event")?,
                event_type: row.get("event_type")?,
                subject: row.get("subject")?,
            })
        })
        .collect()
}

/// One event of a [`Trace`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct TraceEvent {
    /// Its id.
    pub id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: String,
    /// Its source: the service that published it.
    pub source: String,
    /// Its subject.
    pub subject: Option<String>,
    /// The topic it was recorded from, and its offset there.
    pub topic: String,
    /// Its offset on `topic`.
    pub offset: i64,
    /// When it happened (its `time`).
    pub time: Option<chrono::DateTime<Utc>>,
    /// When the audit trail recorded it.
    pub recorded_at: chrono::DateTime<Utc>,
    /// The delivery attempt that recorded it (above 1: it was redelivered).
    pub attempt: i64,
    /// Its `correlationid`.
    pub correlation_id: Option<String>,
    /// Its `causationid`: the event it was a reaction to.
    pub causation_id: Option<String>,
    /// The ids of the events it caused, by time.
    pub caused: Vec<String>,
}

/// The causal tree of events around one event or correlation id ([`trace`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Trace {
    /// What was asked for: an event id or a correlation id.
    pub asked: String,
    /// The correlation id the events share, if the asked event had one.
    pub correlation_id: Option<String>,
    /// The events, by time.
    pub events: Vec<TraceEvent>,
    /// The events caused by none of the others, by time: the trees' roots.
    pub roots: Vec<String>,
}

/// The causal tree around `id`, from the audit trail: when `id` is an event, every event of
/// its correlation (or, without one, the event and what it caused, transitively); when it
/// is a correlation id, its events. `None` when the trail holds nothing of it. Events are
/// linked by their `causationid`.
pub async fn trace(store: &Store, id: &str) -> Result<Option<Trace>, StoreError> {
    const COLUMNS: &str = "seq, event_id, event_type, source, subject, topic, bus_offset, event_time, attempt, recorded_at, correlation_id, causation_id";
    let read = |row: &Row| -> Result<(i64, TraceEvent), StoreError> {
        Ok((
            row.get("seq")?,
            TraceEvent {
                id: row.get("event_id")?,
                ty: row.get("event_type")?,
                source: row.get("source")?,
                subject: row.get("subject")?,
                topic: row.get("topic")?,
                offset: row.get("bus_offset")?,
                time: row.get("event_time")?,
                recorded_at: row.get("recorded_at")?,
                attempt: row.get("attempt")?,
                correlation_id: row.get("correlation_id")?,
                causation_id: row.get("causation_id")?,
                caused: Vec::new(),
            },
        ))
    };
    const MOST: usize = 10_000;
    let own = store
        .query(
            &format!("SELECT {COLUMNS} FROM audit_events WHERE event_id = $1 ORDER BY seq LIMIT 1"),
            params![id],
        )
        .await?;
    let own = own.first().map(read).transpose()?;
    let correlation = match &own {
        Some((_, event)) => event.correlation_id.clone(),
        None => Some(id.to_owned()),
    };
    let mut found: Vec<(i64, TraceEvent)> = Vec::new();
    if let Some(c) = &correlation {
        for row in store
            .query(
                &format!("SELECT {COLUMNS} FROM audit_events WHERE correlation_id = $1 ORDER BY seq LIMIT {MOST}"),
                params![c.as_str()],
            )
            .await?
        {
            found.push(read(&row)?);
        }
    }
    // The asked event and what it caused, transitively, whatever their correlation.
    if let Some(own) = own {
        let mut frontier = vec![own.1.id.clone()];
        found.push(own);
        while let Some(cause) = frontier.pop() {
            if found.len() >= MOST {
                break;
            }
            for row in store
                .query(
                    &format!("SELECT {COLUMNS} FROM audit_events WHERE causation_id = $1 ORDER BY seq LIMIT {MOST}"),
                    params![cause.as_str()],
                )
                .await?
            {
                let (seq, event) = read(&row)?;
                if !found.iter().any(|(_, e)| e.id == event.id) {
                    frontier.push(event.id.clone());
                    found.push((seq, event));
                }
            }
        }
    }
    if found.is_empty() {
        return Ok(None);
    }
    // One entry per event (the first recorded: a dead-lettered copy keeps its id).
    found.sort_by_key(|(seq, _)| *seq);
    let mut events: Vec<TraceEvent> = Vec::with_capacity(found.len());
    for (_, event) in found {
        if !events.iter().any(|e| e.id == event.id) {
            events.push(event);
        }
    }
    events.sort_by_key(|e| (e.time.unwrap_or(e.recorded_at), e.recorded_at));
    let ids: std::collections::HashSet<String> = events.iter().map(|e| e.id.clone()).collect();
    let mut caused: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut roots = Vec::new();
    for e in &events {
        match e.causation_id.as_ref().filter(|c| ids.contains(*c)) {
            Some(cause) => caused.entry(cause.clone()).or_default().push(e.id.clone()),
            None => roots.push(e.id.clone()),
        }
    }
    for e in &mut events {
        e.caused = caused.remove(&e.id).unwrap_or_default();
    }
    Ok(Some(Trace {
        asked: id.to_owned(),
        correlation_id: correlation.filter(|c| {
            events
                .iter()
                .any(|e| e.correlation_id.as_deref() == Some(c))
        }),
        events,
        roots,
    }))
}

/// How long the chainer waits after a failed pass (the database down or busy).
const CHAIN_RETRY: Duration = Duration::from_secs(1);

/// The chainer: a pass whenever the recorder wakes it, every [`CHAIN_INTERVAL`] otherwise,
/// at once again while passes come back full; ends when `stop` is cancelled (the recorder
/// dropped). A pass cut short by the process's end rolls back whole.
async fn run_chainer(store: Store, wake: Arc<Notify>, stop: CancellationToken) {
    let mut failing = false;
    loop {
        let delay = match chain_pass(&store).await {
            Ok(n) => {
                if failing {
                    tracing::info!("audit chainer: chaining again");
                    failing = false;
                }
                if i64::try_from(n).unwrap_or(i64::MAX) >= CHAIN_BATCH {
                    Duration::ZERO
                } else {
                    CHAIN_INTERVAL
                }
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "audit chainer: the pass failed; new entries stay pending (unchained) and are retried every second");
                    failing = true;
                }
                CHAIN_RETRY
            }
        };
        if stop.is_cancelled() {
            break;
        }
        if delay.is_zero() {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The columns an entry is hashed from.
const ENTRY_COLUMNS: &str = "event_id, event_type, source, subject, topic, bus_offset, attempt,
     recorded_by, recorded_at, event";

/// One chaining pass: in one transaction, locks the chain's head, gives up to
/// [`CHAIN_BATCH`] unchained rows (oldest `seq` first) the next positions and their hashes,
/// and moves the head past them. Returns how many rows it chained. Safe to run from any
/// number of processes at once: the head's lock lets one chain at a time.
pub async fn chain_pass(store: &Store) -> Result<usize, StoreError> {
    // Most passes find nothing: they should not take the head's lock (or SQLite's writer).
    if store
        .query_opt(
            "SELECT seq FROM audit_events WHERE position IS NULL LIMIT 1",
            &[],
        )
        .await?
        .is_none()
    {
        return Ok(0);
    }
    let mut tx = store.begin().await?;
    let head = tx
        .query_one(
            "SELECT position, hash FROM audit_chain WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?;
    let mut position: i64 = head.get("position")?;
    let mut prev: String = head.get("hash")?;
    // Read after the lock is ours: rows another process chained meanwhile are not here.
    let rows = tx
        .query(
            &format!(
                "SELECT seq, {ENTRY_COLUMNS} FROM audit_events
                 WHERE position IS NULL ORDER BY seq LIMIT $1"
            ),
            params![CHAIN_BATCH],
        )
        .await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    for row in &rows {
        position += 1;
        let entry = Entry::from_row(position, row)?;
        let hash = entry_hash(&prev, &entry);
        let seq: i64 = row.get("seq")?;
        tx.execute(
            "UPDATE audit_events SET position = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
            params![position, prev.as_str(), hash.as_str(), seq],
        )
        .await?;
        prev = hash;
    }
    tx.execute(
        "UPDATE audit_chain SET position = $1, hash = $2 WHERE id = 1",
        params![position, prev.as_str()],
    )
    .await?;
    tx.commit().await?;
    Ok(rows.len())
}

/// The fields of one chained entry, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its place in the chain, from 1.
    pub position: i64,
    /// The event's id.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// The event's source.
    pub source: String,
    /// The event's subject.
    pub subject: Option<String>,
    /// The topic it was delivered from.
    pub topic: String,
    /// Its offset there.
    pub offset: i64,
    /// The delivery attempt that recorded it.
    pub attempt: i64,
    /// The process that recorded it.
    pub recorded_by: String,
    /// When (hashed to the microsecond, what both databases keep).
    pub recorded_at: DateTime<Utc>,
    /// The event, as structured-mode CloudEvents JSON.
    pub event_json: String,
}

impl Entry {
    /// The entry at `position` from a row holding [`ENTRY_COLUMNS`].
    fn from_row(position: i64, row: &Row) -> Result<Entry, StoreError> {
        Ok(Entry {
            position,
            event_id: row.get("event_id")?,
            event_type: row.get("event_type")?,
            source: row.get("source")?,
            subject: row.get("subject")?,
            topic: row.get("topic")?,
            offset: row.get("bus_offset")?,
            attempt: row.get("attempt")?,
            recorded_by: row.get("recorded_by")?,
            recorded_at: row.get("recorded_at")?,
            event_json: row.get("event")?,
        })
    }
}

/// An entry's hash: hex SHA-256 over the previous entry's hash and each field, every
/// field preceded by its length in bytes (so no two different entries hash alike by moving
/// text between fields).
pub fn entry_hash(prev_hash: &str, entry: &Entry) -> String {
    let recorded_at = entry
        .recorded_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let fields: [&str; 12] = [
        prev_hash,
        &entry.position.to_string(),
        &entry.event_id,
        &entry.event_type,
        &entry.source,
        entry.subject.as_deref().unwrap_or("\u{0}"),
        &entry.topic,
        &entry.offset.to_string(),
        &entry.attempt.to_string(),
        &entry.recorded_by,
        &recorded_at,
        &entry.event_json,
    ];
    let mut hasher = Sha256::new();
    for field in fields {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every entry from 1 to `entries` is intact and the head matches the last.
    Intact {
        /// Entries checked.
        entries: i64,
        /// Rows recorded but not chained yet (not a fault: the chainer takes them soon,
        /// or when an audit process runs again).
        pending: i64,
    },
    /// The first position where the chain breaks, and why.
    Broken {
        /// The first bad position.
        position: i64,
        /// What is wrong there.
        reason: String,
    },
}

/// Entries read per query while verifying.
const VERIFY_PAGE: i64 = 1000;

/// Recomputes the chain from position 1 up to the head read at the start and names the
/// first entry changed, removed or moved; counts the rows still pending. Reads the log in
/// pages and takes no lock, so chaining goes on meanwhile: entries chained after the start
/// are not checked (but must not lie beyond the head).
pub async fn verify(store: &Store) -> Result<Verdict, StoreError> {
    let head = store
        .query_one("SELECT position, hash FROM audit_chain WHERE id = 1", &[])
        .await?;
    let head_position: i64 = head.get("position")?;
    let head_hash: String = head.get("hash")?;
    let mut expected = 1_i64;
    let mut prev = GENESIS.to_owned();
    while expected <= head_position {
        let rows = store
            .query(
                &format!(
                    "SELECT position, prev_hash, hash, {ENTRY_COLUMNS} FROM audit_events
                     WHERE position >= $1 AND position <= $2 ORDER BY position LIMIT $3"
                ),
                params![expected, head_position, VERIFY_PAGE],
            )
            .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let position: i64 = row.get("position")?;
            if position != expected {
                return Ok(Verdict::Broken {
                    position: expected,
                    reason: format!(
                        "entry {expected} is missing (the next entry is at position {position}): it was removed or moved"
                    ),
                });
            }
            let stored_prev: Option<String> = row.get("prev_hash")?;
            let stored_hash: Option<String> = row.get("hash")?;
            if stored_prev.as_deref() != Some(prev.as_str()) {
                return Ok(Verdict::Broken {
                    position,
                    reason: format!(
                        "entry {position} does not follow entry {}: an entry was removed, moved or rewritten there",
                        position - 1
                    ),
                });
            }
            let entry = Entry::from_row(position, row)?;
            let hash = entry_hash(&prev, &entry);
            if stored_hash.as_deref() != Some(hash.as_str()) {
                return Ok(Verdict::Broken {
                    position,
                    reason: format!("entry {position} was changed after it was chained"),
                });
            }
            prev = hash;
            expected += 1;
        }
    }
    let last = expected - 1;
    if last < head_position {
        return Ok(Verdict::Broken {
            position: expected,
            reason: format!(
                "the chain's head records {head_position} entries but the trail ends at entry {last}: entries from {expected} on were removed"
            ),
        });
    }
    if prev != head_hash {
        return Ok(Verdict::Broken {
            position: last,
            reason: format!(
                "entry {last} does not match the chain's head: it was rewritten after it was chained"
            ),
        });
    }
    // Rows and the head move together in one transaction, and the head only grows: a
    // position committed before the head is read again is at most that head.
    let highest: Option<i64> = store
        .query_one("SELECT MAX(position) AS highest FROM audit_events", &[])
        .await?
        .get("highest")?;
    let now: i64 = store
        .query_one("SELECT position FROM audit_chain WHERE id = 1", &[])
        .await?
        .get("position")?;
    if let Some(highest) = highest.filter(|h| *h > now) {
        return Ok(Verdict::Broken {
            position: now + 1,
            reason: format!(
                "the chain's head records {now} entries but the trail has entries up to position {highest}: entries from {} on were added outside the chain",
                now + 1
            ),
        });
    }
    let pending: i64 = store
        .query_one(
            "SELECT COUNT(*) AS pending FROM audit_events WHERE position IS NULL",
            &[],
        )
        .await?
        .get("pending")?;
    Ok(Verdict::Intact {
        entries: last,
        pending,
    })
}

/// `GET /v1/audit?subject=&type=&from=&limit=&cursor=`: chained entries in chain order.
async fn list(
    State(store): State<Store>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = paging::query(query, &["subject", "type", "from", "limit", "cursor"])?;
    let page = paging::request(&query)?;
    let after: i64 = match &page.after {
        None => 0,
        Some(after) => after.parse().map_err(|_| {
            ApiError::invalid(
                "cursor",
                "not a cursor this API gave out: pass the `next_cursor` of the previous page unchanged",
            )
        })?,
    };
    let mut sql = String::from(
        "SELECT position, hash, prev_hash, topic, bus_offset, attempt, recorded_by, recorded_at, event
         FROM audit_events WHERE position > $1",
    );
    let mut values = vec![ovasabi_store::Value::from(after)];
    if let Some(subject) = query.get("subject") {
        values.push(ovasabi_store::Value::from(subject.as_str()));
        sql.push_str(&format!(" AND subject = ${}", values.len()));
    }
    if let Some(ty) = query.get("type") {
        values.push(ovasabi_store::Value::from(ty.as_str()));
        sql.push_str(&format!(" AND event_type = ${}", values.len()));
    }
    if let Some(from) = query.get("from") {
        let from = DateTime::parse_from_rfc3339(from.trim()).map_err(|_| {
            ApiError::invalid(
                "from",
                format!("`{from}` is not an RFC 3339 time such as 2026-11-27T10:00:00Z"),
            )
        })?;
        values.push(ovasabi_store::Value::from(from.with_timezone(&Utc)));
        sql.push_str(&format!(" AND event_time >= ${}", values.len()));
    }
    values.push(ovasabi_store::Value::from(page.fetch()));
    sql.push_str(&format!(" ORDER BY position LIMIT ${}", values.len()));
    let items = store
        .query(&sql, &values)
        .await?
        .iter()
        .map(|row| {
            let position: i64 = row.get("position")?;
            let text: String = row.get("event")?;
            let event: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            let recorded_at: DateTime<Utc> = row.get("recorded_at")?;
            Ok((
                position.to_string(),
                json!({
                    "position": position,
                    "hash": row.get::<Option<String>>("hash")?,
                    "prev_hash": row.get::<Option<String>>("prev_hash")?,
                    "topic": row.get::<String>("topic")?,
                    "offset": row.get::<i64>("bus_offset")?,
                    "attempt": row.get::<i64>("attempt")?,
                    "recorded_by": row.get::<String>("recorded_by")?,
                    "recorded_at": recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    "event": event,
                }),
            ))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(paging::answer(&page, items)))
}
