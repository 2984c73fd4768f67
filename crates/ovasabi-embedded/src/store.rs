//! SQLite storage: the schema, reads, and the single writer thread that group-commits.
//!
//! One table per topic (`log_<id>`, the offset as rowid) keeps an append a single B-tree
//! insert at the right edge, with no secondary index. Consumer-group positions live in
//! `positions`: the lowest unacked offset plus the offsets acked above it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ovasabi_core::{BusError, Event};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::oneshot;

use crate::codec;
use crate::config::{Durability, EmbeddedConfig};
use crate::log::{LogState, Stored, TopicLog};

pub(crate) const DB_FILE: &str = "bus.sqlite3";
const SCHEMA_VERSION: i64 = 1;

pub(crate) fn storage_err(e: impl std::fmt::Display) -> BusError {
    BusError::Storage(e.to_string())
}

/// Opens a connection with the bus's pragmas.
pub(crate) fn open_connection(
    dir: &Path,
    durability: Durability,
    write: bool,
) -> Result<Connection, BusError> {
    let flags = if write {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(dir.join(DB_FILE), flags).map_err(storage_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(storage_err)?;
    let sync = match durability {
        Durability::Process => "NORMAL",
        Durability::Machine => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY;"
    ))
    .map_err(storage_err)?;
    conn.set_prepared_statement_cache_capacity(256);
    if write {
        // Checkpoints run on their own thread (see `run_checkpointer`), never inside a
        // publisher's commit.
        conn.execute_batch("PRAGMA wal_autocheckpoint=0;")
            .map_err(storage_err)?;
    }
    Ok(conn)
}

/// Copies the write-ahead log back into the database off the writer's path: after commits
/// (at most every 20 ms) and on a timer. PASSIVE checkpoints never block the writer; once one
/// completes, the writer's next transaction starts the log over, rewriting the same file
/// blocks instead of growing the file.
pub(crate) fn run_checkpointer(conn: Connection, rx: Receiver<()>) {
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);");
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        while rx.try_recv().is_ok() {}
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
            tracing::warn!(error = %e, "checkpoint failed; will try again");
        }
    }
}

/// Creates the schema if needed and checks its version.
pub(crate) fn migrate(conn: &Connection) -> Result<(), BusError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
         CREATE TABLE IF NOT EXISTS positions(
             grp TEXT NOT NULL, topic INTEGER NOT NULL, cursor INTEGER NOT NULL, acked BLOB NOT NULL,
             PRIMARY KEY(grp, topic)) WITHOUT ROWID;",
    )
    .map_err(storage_err)?;
    let version: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key='schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(storage_err)?;
    match version {
        None => {
            conn.execute("INSERT INTO meta(key, value) VALUES('schema_version', ?1)", [SCHEMA_VERSION])
                .map_err(storage_err)?;
        }
        Some(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(BusError::Storage(format!(
                "the data directory has schema version {v}, and this ovasabi understands {SCHEMA_VERSION}; use a matching ovasabi"
            )))
        }
    }
    Ok(())
}

fn table(id: i64) -> String {
    format!("log_{id}")
}

/// Loads every topic's committed range.
pub(crate) fn load_topics(
    conn: &Connection,
    cache_limit: usize,
) -> Result<Vec<TopicLog>, BusError> {
    let mut stmt = conn
        .prepare("SELECT id, name FROM topics")
        .map_err(storage_err)?;
    let rows: Vec<(i64, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(storage_err)?
        .collect::<Result<_, _>>()
        .map_err(storage_err)?;
    let mut out = Vec::new();
    for (id, name) in rows {
        let (min, max, bytes): (Option<i64>, Option<i64>, i64) = conn
            .query_row(
                &format!(
                    "SELECT MIN(offset), MAX(offset), COALESCE(SUM(length(body)), 0) FROM {}",
                    table(id)
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(storage_err)?;
        // An emptied topic keeps its next offset in meta so offsets are never reused.
        let floor: Option<i64> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [format!("next_offset_{id}")],
                |r| r.get(0),
            )
            .optional()
            .map_err(storage_err)?;
        let next = max.map_or(0, |m| m + 1).max(floor.unwrap_or(0)) as u64;
        let first = min.map_or(next, |m| m as u64);
        out.push(TopicLog::new(
            name,
            id,
            LogState::new(first, next, bytes as u64),
            cache_limit,
        ));
    }
    Ok(out)
}

/// A stored group position: the lowest unacked offset and the offsets acked above it.
pub(crate) fn load_position(
    conn: &Connection,
    group: &str,
    topic_id: i64,
) -> Result<Option<(u64, Vec<u64>)>, BusError> {
    conn.query_row(
        "SELECT cursor, acked FROM positions WHERE grp = ?1 AND topic = ?2",
        params![group, topic_id],
        |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                decode_offsets(&r.get::<_, Vec<u8>>(1)?),
            ))
        },
    )
    .optional()
    .map_err(storage_err)
}

/// Every stored position, for inspection.
pub(crate) fn all_positions(conn: &Connection) -> Result<Vec<(String, i64, u64)>, BusError> {
    let mut stmt = conn
        .prepare("SELECT grp, topic, cursor FROM positions ORDER BY grp")
        .map_err(storage_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })
        .map_err(storage_err)?
        .collect::<Result<_, _>>()
        .map_err(storage_err)?;
    Ok(rows)
}

fn encode_offsets(cursor: u64, acked: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(acked.len() * 2);
    let mut prev = cursor;
    for &o in acked {
        let mut d = o - prev;
        prev = o;
        while d >= 0x80 {
            out.push((d as u8) | 0x80);
            d >>= 7;
        }
        out.push(d as u8);
    }
    out
}

fn decode_offsets(buf: &[u8]) -> Vec<u64> {
    // The cursor is added back by the caller; offsets are stored as deltas from it.
    let mut out = Vec::new();
    let mut acc = 0u64;
    let mut v = 0u64;
    let mut shift = 0;
    for &b in buf {
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            acc += v;
            out.push(acc);
            v = 0;
            shift = 0;
        } else {
            shift += 7;
        }
    }
    out
}

/// Turns deltas read by [`load_position`] into offsets.
pub(crate) fn absolute(cursor: u64, deltas: Vec<u64>) -> Vec<u64> {
    deltas.into_iter().map(|d| cursor + d).collect()
}

/// Reads up to `limit` events of a topic from `from`.
pub(crate) fn read_range(
    conn: &Connection,
    topic_id: i64,
    from: u64,
    limit: usize,
) -> Result<Vec<Arc<Stored>>, BusError> {
    let sql = format!(
        "SELECT offset, time, body FROM {} WHERE offset >= ?1 ORDER BY offset LIMIT ?2",
        table(topic_id)
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(storage_err)?;
    let mut rows = stmt
        .query(params![from as i64, limit as i64])
        .map_err(storage_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(storage_err)? {
        let offset: i64 = row.get(0).map_err(storage_err)?;
        let micros: i64 = row.get(1).map_err(storage_err)?;
        let body = row
            .get_ref(2)
            .map_err(storage_err)?
            .as_blob()
            .map_err(storage_err)?;
        let event = codec::decode(body).map_err(storage_err)?;
        out.push(Arc::new(Stored::new(
            offset as u64,
            DateTime::from_timestamp_micros(micros).unwrap_or_default(),
            Arc::new(event),
            body.len(),
        )));
    }
    Ok(out)
}

/// The first offset in `[first, next)` published at or after `at` (binary search: publish
/// times never decrease along a topic).
pub(crate) fn offset_at_time(
    conn: &Connection,
    topic_id: i64,
    first: u64,
    next: u64,
    at: DateTime<Utc>,
) -> Result<u64, BusError> {
    let sql = format!(
        "SELECT time FROM {} WHERE offset >= ?1 ORDER BY offset LIMIT 1",
        table(topic_id)
    );
    let target = at.timestamp_micros();
    let (mut lo, mut hi) = (first, next);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let t: Option<i64> = conn
            .query_row(&sql, [mid as i64], |r| r.get(0))
            .optional()
            .map_err(storage_err)?;
        match t {
            Some(t) if t < target => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// Where a group's position is kept, as the writer sees it.
pub(crate) trait PositionSource: Send + Sync {
    /// The group and topic ids of the row.
    fn key(&self) -> (&str, i64);
    /// Whether the position is stored at all (ephemeral groups keep none).
    fn durable(&self) -> bool;
    /// The position to write: the cursor and the offsets acked above it, counting `extra`
    /// (offsets acked by this same transaction) as acked.
    fn snapshot(&self, extra: &[u64]) -> (u64, Vec<u64>);
    /// Called after the transaction: `extra` became durable (or not, with the error).
    fn committed(&self, extra: &[u64], result: &Result<(), String>);
}

/// One event on its way to the log.
pub(crate) struct Pending {
    pub(crate) event: Arc<Event>,
    pub(crate) body: Vec<u8>,
}

/// Where the writer answers a publish: the offsets given, or why nothing was written.
pub(crate) type AppendReply = oneshot::Sender<Result<Vec<u64>, BusError>>;

/// Work for the writer thread.
pub(crate) enum Command {
    Append {
        topic: String,
        events: Vec<Pending>,
        reply: AppendReply,
    },
    /// Writes a group's position; the source wakes its own waiters on `committed`.
    Persist(Arc<dyn PositionSource>),
    /// Appends to a dead-letter topic and marks `offset` acked in `source`, atomically.
    DeadLetter {
        topic: String,
        event: Pending,
        source: Arc<dyn PositionSource>,
        offset: u64,
        reply: oneshot::Sender<Result<(), BusError>>,
    },
    Close(oneshot::Sender<()>),
}

/// Hooks from the writer to the bus.
pub(crate) trait Registry: Send + Sync {
    fn topic(&self, name: &str) -> Option<Arc<TopicLog>>;
    fn add_topic(&self, topic: Arc<TopicLog>);
    fn topics(&self) -> Vec<Arc<TopicLog>>;
}

const MAX_BATCH_EVENTS: usize = 20_000;

struct Writer {
    conn: Connection,
    checkpoint: std::sync::mpsc::SyncSender<()>,
    registry: Arc<dyn Registry>,
    config: EmbeddedConfig,
    last_time: i64,
}

/// The writer thread's loop: drain every waiting command, apply them in one transaction,
/// commit once, then answer. Publishers that arrive together share one commit (and one fsync
/// with `Durability::Machine`).
pub(crate) fn run_writer(
    conn: Connection,
    checkpointer: Connection,
    rx: Receiver<Command>,
    registry: Arc<dyn Registry>,
    config: EmbeddedConfig,
) {
    let (checkpoint, checkpoint_rx) = std::sync::mpsc::sync_channel(1);
    let checkpoint_thread = std::thread::Builder::new()
        .name("ovasabi-bus-checkpoint".into())
        .spawn(move || run_checkpointer(checkpointer, checkpoint_rx));
    let mut w = Writer {
        conn,
        checkpoint,
        registry,
        config,
        last_time: 0,
    };
    let mut next_retention = Instant::now() + w.config.retention_interval;
    loop {
        let wait = next_retention.saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(wait) {
            Ok(c) => c,
            Err(RecvTimeoutError::Timeout) => {
                w.retention();
                next_retention = Instant::now() + w.config.retention_interval;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        let mut events = 0;
        while events < MAX_BATCH_EVENTS {
            match rx.try_recv() {
                Ok(c) => {
                    if let Command::Append { events: e, .. } = &c {
                        events += e.len();
                    }
                    batch.push(c);
                }
                Err(_) => break,
            }
        }
        // A close ends the loop after the work that came before it.
        let mut close = None;
        let batch: Vec<Command> = batch
            .into_iter()
            .filter_map(|c| match c {
                Command::Close(reply) => {
                    close = Some(reply);
                    None
                }
                other => Some(other),
            })
            .collect();
        if !batch.is_empty() {
            w.apply(batch);
        }
        if let Some(reply) = close {
            // Drain whatever raced the close, so no caller waits forever.
            while let Ok(c) = rx.try_recv() {
                fail(c, BusError::Closed);
            }
            drop(w);
            if let Ok(t) = checkpoint_thread {
                let _ = t.join();
            }
            let _ = reply.send(());
            return;
        }
        if Instant::now() >= next_retention {
            w.retention();
            next_retention = Instant::now() + w.config.retention_interval;
        }
    }
    drop(w);
    if let Ok(t) = checkpoint_thread {
        let _ = t.join();
    }
}

fn fail(c: Command, e: BusError) {
    match c {
        Command::Append { reply, .. } => {
            let _ = reply.send(Err(clone_err(&e)));
        }
        Command::Persist(src) => src.committed(&[], &Err(e.to_string())),
        Command::DeadLetter {
            source,
            offset,
            reply,
            ..
        } => {
            source.committed(&[offset], &Err(e.to_string()));
            let _ = reply.send(Err(clone_err(&e)));
        }
        Command::Close(reply) => {
            let _ = reply.send(());
        }
    }
}

fn clone_err(e: &BusError) -> BusError {
    match e {
        BusError::Closed => BusError::Closed,
        other => BusError::Storage(other.to_string()),
    }
}

/// A new topic created inside the current transaction.
struct NewTopic {
    name: String,
    id: i64,
}

impl Writer {
    fn now_micros(&mut self) -> i64 {
        let now = Utc::now().timestamp_micros();
        self.last_time = self.last_time.max(now);
        self.last_time
    }

    fn apply(&mut self, batch: Vec<Command>) {
        let time = self.now_micros();
        let published_at = DateTime::from_timestamp_micros(time).unwrap_or_default();
        let mut new_topics: Vec<NewTopic> = Vec::new();
        let mut next: HashMap<String, (i64, u64)> = HashMap::new();
        let mut appended: HashMap<String, Vec<Arc<Stored>>> = HashMap::new();
        let mut sources: Vec<(Arc<dyn PositionSource>, Vec<u64>)> = Vec::new();
        let mut replies_append: Vec<(AppendReply, Vec<u64>)> = Vec::new();
        let mut replies_dlq: Vec<oneshot::Sender<Result<(), BusError>>> = Vec::new();

        let result: Result<(), BusError> = (|| {
            let tx = self.conn.unchecked_transaction().map_err(storage_err)?;
            for cmd in batch {
                match cmd {
                    Command::Append {
                        topic,
                        events,
                        reply,
                    } => {
                        let offsets = append(
                            &tx,
                            &*self.registry,
                            &mut next,
                            &mut new_topics,
                            &mut appended,
                            &topic,
                            events,
                            published_at,
                        )?;
                        replies_append.push((reply, offsets));
                    }
                    Command::Persist(src) => add_source(&mut sources, src, None),
                    Command::DeadLetter {
                        topic,
                        event,
                        source,
                        offset,
                        reply,
                    } => {
                        append(
                            &tx,
                            &*self.registry,
                            &mut next,
                            &mut new_topics,
                            &mut appended,
                            &topic,
                            vec![event],
                            published_at,
                        )?;
                        add_source(&mut sources, source, Some(offset));
                        replies_dlq.push(reply);
                    }
                    Command::Close(_) => unreachable!("close is taken out of the batch"),
                }
            }
            for (src, extra) in sources.iter().filter(|(s, _)| s.durable()) {
                let (group, topic_id) = src.key();
                let (cursor, acked) = src.snapshot(extra);
                tx.prepare_cached(
                    "INSERT INTO positions(grp, topic, cursor, acked) VALUES(?1, ?2, ?3, ?4)
                     ON CONFLICT(grp, topic) DO UPDATE SET cursor = excluded.cursor, acked = excluded.acked",
                )
                .map_err(storage_err)?
                .execute(params![group, topic_id, cursor as i64, encode_offsets(cursor, &acked)])
                .map_err(storage_err)?;
            }
            tx.commit().map_err(storage_err)
        })();
        let _ = self.checkpoint.try_send(());

        match result {
            Ok(()) => {
                for t in new_topics {
                    let log = TopicLog::new(
                        t.name,
                        t.id,
                        LogState::new(0, 0, 0),
                        self.config.cache_bytes_per_topic,
                    );
                    self.registry.add_topic(Arc::new(log));
                }
                for (name, stored) in appended {
                    if let Some(log) = self.registry.topic(&name) {
                        log.append_committed(stored);
                    }
                }
                for (src, extra) in &sources {
                    src.committed(extra, &Ok(()));
                }
                for (reply, offsets) in replies_append {
                    let _ = reply.send(Ok(offsets));
                }
                for reply in replies_dlq {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "bus write failed; nothing of this batch was stored");
                let msg = e.to_string();
                for (src, extra) in &sources {
                    src.committed(extra, &Err(msg.clone()));
                }
                for (reply, _) in replies_append {
                    let _ = reply.send(Err(BusError::Storage(msg.clone())));
                }
                for reply in replies_dlq {
                    let _ = reply.send(Err(BusError::Storage(msg.clone())));
                }
            }
        }
    }

    /// Removes events past the retention limits, oldest first.
    fn retention(&mut self) {
        let retention = self.config.retention;
        if retention.max_age.is_none() && retention.max_bytes.is_none() {
            return;
        }
        for log in self.registry.topics() {
            if let Err(e) = self.retain(&log) {
                tracing::warn!(topic = %log.name, error = %e, "retention failed; will try again");
            }
        }
    }

    fn retain(&mut self, log: &TopicLog) -> Result<(), BusError> {
        let (first, next, total) = {
            let st = log.state.lock().unwrap();
            (st.first_offset, st.next_offset, st.total_bytes)
        };
        if first >= next {
            return Ok(());
        }
        let mut cut = first;
        if let Some(age) = self.config.retention.max_age {
            let cutoff =
                Utc::now() - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            cut = cut.max(offset_at_time(&self.conn, log.id, first, next, cutoff)?);
        }
        if let Some(max) = self.config.retention.max_bytes {
            if total > max {
                let mut excess = total - max;
                let mut stmt = self
                    .conn
                    .prepare(&format!(
                        "SELECT offset, length(body) FROM {} ORDER BY offset",
                        table(log.id)
                    ))
                    .map_err(storage_err)?;
                let mut rows = stmt.query([]).map_err(storage_err)?;
                while let Some(r) = rows.next().map_err(storage_err)? {
                    let off: i64 = r.get(0).map_err(storage_err)?;
                    let len: i64 = r.get(1).map_err(storage_err)?;
                    cut = cut.max(off as u64 + 1);
                    if (len as u64) >= excess {
                        break;
                    }
                    excess -= len as u64;
                }
            }
        }
        if cut <= first {
            return Ok(());
        }
        let tx = self.conn.unchecked_transaction().map_err(storage_err)?;
        let removed: i64 = tx
            .query_row(
                &format!(
                    "SELECT COALESCE(SUM(length(body)), 0) FROM {} WHERE offset < ?1",
                    table(log.id)
                ),
                [cut as i64],
                |r| r.get(0),
            )
            .map_err(storage_err)?;
        tx.execute(
            &format!("DELETE FROM {} WHERE offset < ?1", table(log.id)),
            [cut as i64],
        )
        .map_err(storage_err)?;
        tx.execute(
            "INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![format!("next_offset_{}", log.id), next as i64],
        )
        .map_err(storage_err)?;
        tx.commit().map_err(storage_err)?;
        log.truncate_front(cut, removed as u64);
        tracing::info!(topic = %log.name, removed_before = cut, "retention removed old events");
        Ok(())
    }
}

fn add_source(
    sources: &mut Vec<(Arc<dyn PositionSource>, Vec<u64>)>,
    src: Arc<dyn PositionSource>,
    extra: Option<u64>,
) {
    let key = src.key();
    if let Some((_, ex)) = sources.iter_mut().find(|(s, _)| s.key() == key) {
        ex.extend(extra);
        return;
    }
    sources.push((src, extra.into_iter().collect()));
}

#[allow(clippy::too_many_arguments)]
fn append(
    tx: &rusqlite::Transaction<'_>,
    registry: &dyn Registry,
    next: &mut HashMap<String, (i64, u64)>,
    new_topics: &mut Vec<NewTopic>,
    appended: &mut HashMap<String, Vec<Arc<Stored>>>,
    topic: &str,
    events: Vec<Pending>,
    published_at: DateTime<Utc>,
) -> Result<Vec<u64>, BusError> {
    if !next.contains_key(topic) {
        let entry = match registry.topic(topic) {
            Some(log) => (log.id, log.range().1),
            None => {
                tx.execute("INSERT INTO topics(name) VALUES(?1)", [topic])
                    .map_err(storage_err)?;
                let id = tx.last_insert_rowid();
                tx.execute_batch(&format!(
                    "CREATE TABLE {}(offset INTEGER PRIMARY KEY, time INTEGER NOT NULL, body BLOB NOT NULL)",
                    table(id)
                ))
                .map_err(storage_err)?;
                new_topics.push(NewTopic {
                    name: topic.to_owned(),
                    id,
                });
                (id, 0)
            }
        };
        next.insert(topic.to_owned(), entry);
    }
    let (id, next_offset) = next.get_mut(topic).expect("inserted above");
    let mut stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO {}(offset, time, body) VALUES(?1, ?2, ?3)",
            table(*id)
        ))
        .map_err(storage_err)?;
    let micros = published_at.timestamp_micros();
    let out = appended.entry(topic.to_owned()).or_default();
    let mut offsets = Vec::with_capacity(events.len());
    for p in events {
        let offset = *next_offset;
        stmt.execute(params![offset as i64, micros, &p.body])
            .map_err(storage_err)?;
        *next_offset += 1;
        offsets.push(offset);
        out.push(Arc::new(Stored::new(
            offset,
            published_at,
            p.event,
            p.body.len(),
        )));
    }
    Ok(offsets)
}
