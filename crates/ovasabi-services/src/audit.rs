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
//!
//! - Hash chain: every row gets the next `position` (1, 2, 3… with no gaps), the previous
//!   row's hash, and its own hash: SHA-256 over the previous hash and the row's fields (see
//!   [`entry_hash`]). The chain's head (last position and hash) is one row of
//!   `audit_chain`, locked by each recording transaction, so positions follow commit order
//!   across processes. [`verify`] (`ovasabi audit verify`) recomputes the chain and names
//!   the first position where a row was changed, removed or moved. Rows recorded before
//!   the chain existed (schema version 1) have no position and are not covered.
//!
//! Any number of processes may run `ovasabi serve audit` on one bus and one database: they
//! share the events, and the events a dead process held come back to the others after the
//! ack timeout.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use std::collections::HashMap;

use async_trait::async_trait;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SubsecRound, Utc};
use ovasabi_core::format::json;
use ovasabi_core::Ordering;
use ovasabi_middleware::{Handler, HandlerError, Message, Outgoing};
use ovasabi_store::{params, Inbox, Migration, MigrationSet, Store, StoreError};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::http::ApiError;
use crate::runtime::{ConsumerSpec, Context, Service, ServiceError};
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
    ],
);

/// The hash before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The audit trail service.
#[derive(Clone, Debug)]
pub struct AuditService {
    topics: Vec<String>,
}

impl AuditService {
    /// Audits `topics` (names or patterns); [`DEFAULT_TOPICS`] when empty.
    pub fn new(topics: Vec<String>) -> AuditService {
        let topics = if topics.is_empty() {
            DEFAULT_TOPICS.iter().map(|t| (*t).to_owned()).collect()
        } else {
            topics
        };
        AuditService { topics }
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
                        "summary": "The audit trail, oldest first, a page at a time: each entry with its place in the hash chain",
                        "parameters": parameters,
                        "responses": {
                            "200": {"description": "A page of entries", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AuditPage"}}}},
                            "422": {"description": "`from`, `limit` or `cursor` is invalid", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
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
            }),
        }])
    }
}

/// Records one event per delivery, once.
struct Recorder {
    store: Store,
    instance: String,
    duplicates: AtomicU64,
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
        if Inbox::record(&mut tx, GROUP, &key)
            .await
            .map_err(store_failure)?
        {
            // The chain's head, locked until this transaction ends: the next position is
            // ours alone.
            let head = tx
                .query_one(
                    "SELECT position, hash FROM audit_chain WHERE id = 1 FOR UPDATE",
                    &[],
                )
                .await
                .map_err(store_failure)?;
            let prev_position: i64 = head.get("position").map_err(store_failure)?;
            let prev_hash: String = head.get("hash").map_err(store_failure)?;
            let entry = Entry {
                position: prev_position + 1,
                event_id: event.id.clone(),
                event_type: event.ty.clone(),
                source: event.source.clone(),
                subject: event.subject.clone(),
                topic: msg.topic().to_owned(),
                offset: i64::try_from(msg.offset()).unwrap_or(i64::MAX),
                attempt: i64::from(msg.attempt()),
                recorded_by: self.instance.clone(),
                // Microseconds: what both databases keep, so the hash reads back the same.
                recorded_at: Utc::now().trunc_subsecs(6),
                event_json: json::to_json_string(event),
            };
            let hash = entry_hash(&prev_hash, &entry);
            tx.execute(
                "INSERT INTO audit_events (event_id, event_type, source, subject, topic,
                     bus_offset, event_time, attempt, recorded_by, recorded_at, event,
                     position, prev_hash, hash)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                params![
                    entry.event_id.as_str(),
                    entry.event_type.as_str(),
                    entry.source.as_str(),
                    entry.subject.as_deref(),
                    entry.topic.as_str(),
                    entry.offset,
                    event.time,
                    entry.attempt,
                    entry.recorded_by.as_str(),
                    entry.recorded_at,
                    entry.event_json.as_str(),
                    entry.position,
                    prev_hash.as_str(),
                    hash.as_str(),
                ],
            )
            .await
            .map_err(store_failure)?;
            tx.execute(
                "UPDATE audit_chain SET position = $1, hash = $2 WHERE id = 1",
                params![entry.position, hash.as_str()],
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
    /// When (microseconds).
    pub recorded_at: DateTime<Utc>,
    /// The event, as structured-mode CloudEvents JSON.
    pub event_json: String,
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

/// Recomputes the chain from position 1 and compares it with the head: names the first
/// entry changed, removed or moved. Reads the whole log in pages.
pub async fn verify(store: &Store) -> Result<Verdict, StoreError> {
    let head = store
        .query_one("SELECT position, hash FROM audit_chain WHERE id = 1", &[])
        .await?;
    let head_position: i64 = head.get("position")?;
    let head_hash: String = head.get("hash")?;
    let mut expected = 1_i64;
    let mut prev = GENESIS.to_owned();
    loop {
        let rows = store
            .query(
                "SELECT position, prev_hash, hash, event_id, event_type, source, subject, topic,
                     bus_offset, attempt, recorded_by, recorded_at, event
                 FROM audit_events WHERE position >= $1 ORDER BY position LIMIT $2",
                params![expected, VERIFY_PAGE],
            )
            .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let entry = Entry {
                position: row.get("position")?,
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
            };
            let stored_prev: String = row.get("prev_hash")?;
            let stored_hash: String = row.get("hash")?;
            if entry.position != expected {
                return Ok(Verdict::Broken {
                    position: expected,
                    reason: format!(
                        "entry {expected} is missing (the next entry is at position {})",
                        entry.position
                    ),
                });
            }
            if stored_prev != prev {
                return Ok(Verdict::Broken {
                    position: expected,
                    reason: format!(
                        "entry {expected} does not follow entry {}: an entry before it was removed, moved or rewritten",
                        expected - 1
                    ),
                });
            }
            if entry_hash(&prev, &entry) != stored_hash {
                return Ok(Verdict::Broken {
                    position: expected,
                    reason: format!("entry {expected} was changed after it was recorded"),
                });
            }
            prev = stored_hash;
            expected += 1;
        }
    }
    let last = expected - 1;
    if last < head_position {
        return Ok(Verdict::Broken {
            position: last + 1,
            reason: format!(
                "the chain's head records {head_position} entries; the log ends at entry {last}: entries from {} on were removed",
                last + 1
            ),
        });
    }
    if last > head_position {
        return Ok(Verdict::Broken {
            position: head_position + 1,
            reason: format!(
                "the chain's head records {head_position} entries; entries from {} on were added outside the chain",
                head_position + 1
            ),
        });
    }
    if prev != head_hash {
        return Ok(Verdict::Broken {
            position: last,
            reason: format!(
                "entry {last} does not match the chain's head: it was rewritten after it was recorded"
            ),
        });
    }
    Ok(Verdict::Intact { entries: last })
}

/// `GET /v1/audit?subject=&type=&from=&limit=&cursor=`: entries oldest first.
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
                    "hash": row.get::<String>("hash")?,
                    "prev_hash": row.get::<String>("prev_hash")?,
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
