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
//! Any number of processes may run `ovasabi serve audit` on one bus and one database: they
//! share the events, and the events a dead process held come back to the others after the
//! ack timeout.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use ovasabi_core::format::json;
use ovasabi_core::Ordering;
use ovasabi_middleware::{Handler, HandlerError, Message, Outgoing};
use ovasabi_store::{params, Inbox, Migration, MigrationSet, Store, StoreError};

use crate::runtime::{ConsumerSpec, Context, Service, ServiceError};

/// The consumer group, and the inbox's consumer name.
pub const GROUP: &str = "audit";

/// The topics audited unless configured otherwise: every domain topic.
pub const DEFAULT_TOPICS: &[&str] = &["*.events"];

const MIGRATIONS: MigrationSet = MigrationSet::new(
    "audit",
    &[Migration::per_backend(
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
    )],
);

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
            tx.execute(
                "INSERT INTO audit_events (event_id, event_type, source, subject, topic,
                     bus_offset, event_time, attempt, recorded_by, recorded_at, event)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
