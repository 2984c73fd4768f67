//! The SQLite backend: one writer connection on its own thread, read-only work on a few
//! reader connections (WAL mode lets them read beside the writer).
//!
//! - **One writer, one queue.** Every write (transactions, autocommit statements,
//!   migrations) is a job on the writer thread's queue, run in submission order. SQLite
//!   allows one writer at a time anyway; one connection means no `SQLITE_BUSY` between our
//!   own writers, and the queue's order makes cancellation safe: a transaction dropped
//!   mid-statement queues its `ROLLBACK` behind the statement, never before it.
//! - **One transaction at a time.** A transaction holds the writer's async lock from
//!   `BEGIN IMMEDIATE` until its `COMMIT` / `ROLLBACK` job has run (the lock guard travels
//!   inside that job), so statements of two transactions never interleave.
//!   `IMMEDIATE` takes SQLite's write lock at once, so another process on the same file
//!   waits at `BEGIN` (up to the busy timeout) instead of failing at its first write.
//! - **Readers.** A store-level query goes to a reader connection when SQLite says the
//!   statement is read-only, and to the writer otherwise. In-memory databases have no
//!   readers (each connection would be a different database).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex as StdMutex};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{CachedStatement, Connection, ErrorCode, ToSql};
use tokio::sync::{oneshot, Mutex as AsyncMutex, OwnedMutexGuard};

use crate::config::{Backend, StoreConfig, Target};
use crate::error::{DbErrorKind, Result, StoreError};
use crate::sql::to_sqlite;
use crate::value::{timestamp_text, Row, Value};

/// At most this many reader connections.
const MAX_READERS: usize = 4;

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// The writer connection's thread, fed through a queue.
#[derive(Clone)]
struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    fn start(mut conn: Connection) -> Result<Writer> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("ovasabi-store-sqlite".into())
            .spawn(move || {
                // Ends when every sender (the store, its transactions) is gone.
                for job in queue {
                    // A panicking job drops its reply channel: its caller gets an error,
                    // and the connection serves the next job.
                    let _ = catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                }
            })
            .map_err(|e| StoreError::Connect {
                backend: Backend::Sqlite,
                target: "writer thread".into(),
                message: e.to_string(),
            })?;
        Ok(Writer { jobs })
    }

    /// Queues `job`; it runs even if the caller stops waiting.
    fn submit(&self, job: impl FnOnce(&mut Connection) + Send + 'static) -> Result<()> {
        self.jobs
            .send(Box::new(job))
            .map_err(|_| StoreError::closed())
    }

    /// Runs `job` on the writer and returns its answer.
    async fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.submit(move |conn| {
            let _ = reply.send(job(conn));
        })?;
        answer.await.map_err(|_| StoreError::closed())?
    }
}

/// A SQLite database: the writer, its lock, and the readers.
pub(crate) struct SqliteDb {
    writer: Writer,
    /// Held by a transaction from `BEGIN` to its end, and by each autocommit write.
    gate: Arc<AsyncMutex<()>>,
    readers: Vec<Arc<StdMutex<Connection>>>,
    next_reader: AtomicUsize,
}

impl SqliteDb {
    pub(crate) async fn open(config: &StoreConfig) -> Result<SqliteDb> {
        let target = config.target.clone();
        let busy = config.busy_timeout;
        let reader_count = match target {
            Target::SqliteFile(_) => config.pool_size.min(MAX_READERS),
            _ => 0,
        };
        let label = config.to_string();
        let (writer, readers) = tokio::task::spawn_blocking(move || {
            let writer = open_connection(&target, busy, true).map_err(|e| StoreError::Connect {
                backend: Backend::Sqlite,
                target: label.clone(),
                message: e,
            })?;
            let mut readers = Vec::with_capacity(reader_count);
            for _ in 0..reader_count {
                let reader =
                    open_connection(&target, busy, false).map_err(|e| StoreError::Connect {
                        backend: Backend::Sqlite,
                        target: label.clone(),
                        message: e,
                    })?;
                readers.push(Arc::new(StdMutex::new(reader)));
            }
            Ok::<_, StoreError>((writer, readers))
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        Ok(SqliteDb {
            writer: Writer::start(writer)?,
            gate: Arc::new(AsyncMutex::new(())),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    pub(crate) async fn begin(&self) -> Result<SqliteTx> {
        let guard = self.gate.clone().lock_owned().await;
        let (reply, answer) = oneshot::channel();
        self.writer.submit(move |conn| {
            match conn.execute_batch("BEGIN IMMEDIATE") {
                Ok(()) => {
                    if let Err(Ok(_guard)) = reply.send(Ok(guard)) {
                        // The caller stopped waiting: nobody will use this transaction.
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                }
                Err(e) => {
                    drop(guard);
                    let _ = reply.send(Err(map_err(e)));
                }
            }
        })?;
        let guard = answer.await.map_err(|_| StoreError::closed())??;
        Ok(SqliteTx {
            writer: self.writer.clone(),
            guard: Some(guard),
        })
    }

    /// Runs `job` on the writer outside any transaction (autocommit).
    async fn autocommit<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let guard = self.gate.clone().lock_owned().await;
        self.writer
            .call(move |conn| {
                let answer = job(conn);
                drop(guard);
                answer
            })
            .await
    }

    pub(crate) async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64> {
        let (sql, params) = owned(sql, params);
        self.autocommit(move |conn| execute(conn, &sql, &params))
            .await
    }

    pub(crate) async fn execute_batch(&self, sql: &str) -> Result<()> {
        let sql = sql.to_owned();
        self.autocommit(move |conn| conn.execute_batch(&sql).map_err(map_err))
            .await
    }

    pub(crate) async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let (sql, params) = owned(sql, params);
        if !self.readers.is_empty() {
            let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
            let reader = self.readers[i].clone();
            let (sql, params) = (sql.clone(), params.clone());
            let answer = tokio::task::spawn_blocking(move || {
                let conn = reader
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let mut statement = conn.prepare_cached(&sql).map_err(map_err)?;
                if !statement.readonly() {
                    return Ok(None);
                }
                query_statement(&mut statement, &params).map(Some)
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
            if let Some(rows) = answer {
                return Ok(rows);
            }
        }
        self.autocommit(move |conn| query(conn, &sql, &params))
            .await
    }
}

/// An open SQLite transaction on the writer. Dropped without commit, it rolls back.
pub(crate) struct SqliteTx {
    writer: Writer,
    /// `None` once the transaction has ended (the guard went into the ending job).
    guard: Option<OwnedMutexGuard<()>>,
}

impl SqliteTx {
    /// Runs `job` inside the transaction, refusing if SQLite has already ended it.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if self.guard.is_none() {
            return Err(StoreError::TransactionAborted(
                "the transaction has ended".into(),
            ));
        }
        self.writer
            .call(move |conn| {
                if conn.is_autocommit() {
                    return Err(ended_by_sqlite());
                }
                job(conn)
            })
            .await
    }

    pub(crate) async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let (sql, params) = owned(sql, params);
        self.run(move |conn| execute(conn, &sql, &params)).await
    }

    pub(crate) async fn execute_batch(&mut self, sql: &str) -> Result<()> {
        let sql = sql.to_owned();
        self.run(move |conn| conn.execute_batch(&sql).map_err(map_err))
            .await
    }

    pub(crate) async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let (sql, params) = owned(sql, params);
        self.run(move |conn| query(conn, &sql, &params)).await
    }

    pub(crate) async fn commit(mut self) -> Result<()> {
        self.end("COMMIT").await
    }

    pub(crate) async fn rollback(mut self) -> Result<()> {
        self.end("ROLLBACK").await
    }

    async fn end(&mut self, how: &'static str) -> Result<()> {
        let guard = self.guard.take();
        self.writer
            .call(move |conn| {
                let answer = if conn.is_autocommit() {
                    if how == "ROLLBACK" {
                        Ok(())
                    } else {
                        Err(ended_by_sqlite())
                    }
                } else {
                    conn.execute_batch(how).map_err(map_err)
                };
                if !conn.is_autocommit() {
                    // A failed COMMIT leaves the transaction open: end it, so the
                    // connection is clean for the next one. The caller sees the error.
                    let _ = conn.execute_batch("ROLLBACK");
                }
                drop(guard);
                answer
            })
            .await
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            // Queued behind any statement of this transaction still running; the lock is
            // released only after the rollback. If the writer is gone, so is the
            // transaction.
            let _ = self.writer.submit(move |conn| {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                drop(guard);
            });
        }
    }
}

fn ended_by_sqlite() -> StoreError {
    StoreError::TransactionAborted(
        "SQLite ended the transaction after an earlier error; run it again from the start".into(),
    )
}

fn owned(sql: &str, params: &[Value]) -> (String, Vec<Value>) {
    (to_sqlite(sql), params.to_vec())
}

fn open_connection(target: &Target, busy: Duration, writer: bool) -> Result<Connection, String> {
    let conn = match target {
        Target::SqliteFile(path) => {
            if writer {
                create_parent(path)?;
            }
            Connection::open(path)
        }
        Target::SqliteMemory => Connection::open_in_memory(),
        Target::Postgres { .. } => return Err("not a SQLite target".into()),
    }
    .map_err(|e| e.to_string())?;
    let setup = || -> Result<(), String> {
        conn.busy_timeout(busy).map_err(|e| e.to_string())?;
        if writer && matches!(target, Target::SqliteFile(_)) {
            let mode: String = conn
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .map_err(|e| e.to_string())?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(format!(
                    "the database refused WAL mode (it is in `{mode}` mode)"
                ));
            }
        }
        // NORMAL in WAL mode: a commit survives the process being killed; the last commits
        // may be lost on power loss (as the embedded bus's default durability).
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| e.to_string())?;
        conn.set_prepared_statement_cache_capacity(128);
        Ok(())
    };
    setup()?;
    Ok(conn)
}

fn create_parent(path: &Path) -> Result<(), String> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create directory {}: {e}", dir.display())),
        _ => Ok(()),
    }
}

/// Runs one statement; the count is rows changed, or rows returned by a statement that
/// returns rows (`INSERT … RETURNING`, `SELECT`), as PostgreSQL counts.
fn execute(conn: &Connection, sql: &str, params: &[Value]) -> Result<u64> {
    let mut statement = conn.prepare_cached(sql).map_err(map_err)?;
    if statement.column_count() == 0 {
        let changed = statement
            .execute(rusqlite::params_from_iter(params))
            .map_err(map_err)?;
        Ok(changed as u64)
    } else {
        let mut rows = statement
            .query(rusqlite::params_from_iter(params))
            .map_err(map_err)?;
        let mut count = 0;
        while rows.next().map_err(map_err)?.is_some() {
            count += 1;
        }
        Ok(count)
    }
}

fn query(conn: &Connection, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
    let mut statement = conn.prepare_cached(sql).map_err(map_err)?;
    query_statement(&mut statement, params)
}

fn query_statement(statement: &mut CachedStatement<'_>, params: &[Value]) -> Result<Vec<Row>> {
    let columns: Arc<[String]> = statement
        .column_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut rows = statement
        .query(rusqlite::params_from_iter(params))
        .map_err(map_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(map_err)? {
        let mut values = Vec::with_capacity(columns.len());
        for (i, name) in columns.iter().enumerate() {
            let value = match row.get_ref(i).map_err(map_err)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(i) => Value::Int(i),
                ValueRef::Real(f) => Value::Float(f),
                ValueRef::Text(bytes) => Value::Text(
                    String::from_utf8(bytes.to_vec())
                        .map_err(|_| StoreError::decode(name, "text that is not UTF-8"))?,
                ),
                ValueRef::Blob(bytes) => Value::Bytes(bytes.to_vec()),
            };
            values.push(value);
        }
        out.push(Row::new(columns.clone(), values));
    }
    Ok(out)
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::Value as Sql;
        Ok(match self {
            Value::Null => ToSqlOutput::Owned(Sql::Null),
            Value::Bool(b) => ToSqlOutput::Owned(Sql::Integer(i64::from(*b))),
            Value::Int(i) => ToSqlOutput::Owned(Sql::Integer(*i)),
            Value::Float(f) => ToSqlOutput::Owned(Sql::Real(*f)),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Timestamp(t) => ToSqlOutput::Owned(Sql::Text(timestamp_text(t))),
        })
    }
}

pub(crate) fn map_err(error: rusqlite::Error) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(failure, message) => {
            let kind = match failure.code {
                ErrorCode::ConstraintViolation => match failure.extended_code {
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => DbErrorKind::UniqueViolation,
                    rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => DbErrorKind::ForeignKeyViolation,
                    _ => DbErrorKind::Other,
                },
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => DbErrorKind::Conflict,
                ErrorCode::CannotOpen => DbErrorKind::Connection,
                _ => DbErrorKind::Other,
            };
            StoreError::Database {
                backend: Backend::Sqlite,
                kind,
                code: Some(failure.extended_code.to_string()),
                message: message.clone().unwrap_or_else(|| failure.to_string()),
            }
        }
        _ => StoreError::Database {
            backend: Backend::Sqlite,
            kind: DbErrorKind::Other,
            code: None,
            message: error.to_string(),
        },
    }
}
