//! The SQLite backend: one writer connection shared by transactions one at a time, with
//! group commit; read-only work on a few reader connections (WAL mode lets them read beside
//! the writer); checkpoints on a thread of their own.
//!
//! - **Statements run where they are called.** A transaction holds the writer connection
//!   (behind an async lock, from `begin` to its end) and runs each statement on the calling
//!   task's thread: SQLite statements take microseconds, and a hand-off to a thread per
//!   statement cost more than the statement. What can take longer stays off the async
//!   threads: waiting for another *process*'s write lock runs on the blocking pool, and
//!   checkpoints (copying the write-ahead log back into the database, with fsync) run on
//!   their own thread.
//! - **One transaction at a time.** SQLite has one writer; one connection means no
//!   `SQLITE_BUSY` between our own writers. `BEGIN IMMEDIATE` takes SQLite's write lock at
//!   once, so another process on the same file waits at `BEGIN` (up to the busy timeout)
//!   instead of failing at its first write.
//! - **Group commit.** Each of our transactions is a savepoint inside a SQLite transaction.
//!   Committing releases the savepoint; when no other transaction waits for the writer the
//!   SQLite transaction commits at once. When others wait, the committed savepoint joins a
//!   *group*: the next transactions run in the same SQLite transaction, and one `COMMIT`
//!   (one write-ahead-log append, each page written once) makes the whole group durable.
//!   Every member's `commit` returns only after that `COMMIT`, with its outcome: a member
//!   is never told "committed" before it is, and if the `COMMIT` fails every member of the
//!   group gets the error (none of them committed). A transaction sees the changes of the
//!   group members before it (they commit together, or not at all); readers see none of
//!   the group until it commits. A member that rolls back undoes only its own savepoint.
//!   The group is committed by its first waiting member once the transactions queued
//!   ahead of it have run. When commits come faster than one per millisecond, a commit
//!   that finds nobody queued also opens a group and waits up to a millisecond for the
//!   next transactions to join it: at that rate a commit of its own for each would cost
//!   more (every changed page written to the log again, and checkpointed again) than the
//!   millisecond. Below that rate a transaction commits alone, at once.
//! - **Cancellation.** A transaction dropped before its end rolls back its savepoint on the
//!   spot (statements are never left half-run). A member dropped while waiting for its
//!   group's `COMMIT` was already committed into the group: its change commits with the
//!   group (as a commit whose reply was lost), and the group is still committed when every
//!   member stopped waiting.
//! - **Readers.** A store-level query goes to a free reader connection when SQLite says
//!   the statement is read-only, and to the writer otherwise. In-memory databases have no
//!   readers (each connection would be a different database).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex as StdMutex};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{CachedStatement, Connection, ErrorCode, ToSql};
use tokio::sync::{watch, Mutex as AsyncMutex, OwnedMutexGuard};

use crate::config::{Backend, StoreConfig, Target};
use crate::error::{DbErrorKind, Result, StoreError};
use crate::sql::to_sqlite;
use crate::value::{timestamp_text, Row, Value};

/// At most this many reader connections.
const MAX_READERS: usize = 4;

/// When commits come closer together than this, a committing transaction that finds no
/// other waiting opens a group and waits this long for others to join it.
const GATHER: Duration = Duration::from_millis(1);

/// The savepoint each of our transactions is inside the SQLite transaction.
const SAVEPOINT: &str = "SAVEPOINT ovasabi_tx";
const RELEASE: &str = "RELEASE ovasabi_tx";
const ROLLBACK_TO: &str = "ROLLBACK TO ovasabi_tx";

/// How a group's `COMMIT` ended, as every member hears it.
type Outcome = Result<(), FailedCommit>;

/// A failed group commit, cloneable for every member.
#[derive(Clone, Debug)]
struct FailedCommit {
    kind: DbErrorKind,
    code: Option<String>,
    message: String,
}

impl FailedCommit {
    fn of(error: &StoreError) -> FailedCommit {
        match error {
            StoreError::Database {
                kind,
                code,
                message,
                ..
            } => FailedCommit {
                kind: *kind,
                code: code.clone(),
                message: message.clone(),
            },
            other => FailedCommit {
                kind: DbErrorKind::Other,
                code: None,
                message: other.to_string(),
            },
        }
    }

    fn error(&self) -> StoreError {
        StoreError::Database {
            backend: Backend::Sqlite,
            kind: self.kind,
            code: self.code.clone(),
            message: format!(
                "the group commit this transaction joined failed, so it did not commit: {}",
                self.message
            ),
        }
    }
}

/// Committed savepoints waiting for the SQLite transaction's `COMMIT`.
struct Group {
    id: u64,
    outcome: watch::Sender<Option<Outcome>>,
    opened: tokio::time::Instant,
}

/// The writer connection, and the group (if any) inside its open SQLite transaction.
struct WriterState {
    conn: Connection,
    /// `Some` while the SQLite transaction holds committed savepoints.
    group: Option<Group>,
    next_group: u64,
    /// When the last `COMMIT` succeeded.
    last_commit: Option<tokio::time::Instant>,
}

impl WriterState {
    /// Tells the group's members (if any) that it will not commit, and why.
    fn fail_group(&mut self, why: &str) {
        if let Some(group) = self.group.take() {
            finish(
                group,
                Err(FailedCommit {
                    kind: DbErrorKind::Other,
                    code: None,
                    message: why.to_owned(),
                }),
            );
        }
    }
}

/// The writer: its connection behind the lock transactions hold, and what commits share.
struct Writer {
    gate: Arc<AsyncMutex<WriterState>>,
    /// Tasks waiting in [`Writer::lock`] (not members waiting for their group).
    waiting: AtomicUsize,
    /// How long `BEGIN` waits for another process's write lock.
    busy_timeout: Duration,
    /// Tells the checkpointer a commit appended to the log (file databases).
    checkpoint: Option<mpsc::SyncSender<()>>,
}

impl Writer {
    async fn lock(&self) -> OwnedMutexGuard<WriterState> {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        self.gate.clone().lock_owned().await
    }

    /// Takes the writer and opens one of our transactions (a savepoint) on it.
    async fn begin(self: &Arc<Self>) -> Result<SqliteTx> {
        let mut guard = self.lock().await;
        if guard.conn.is_autocommit() {
            guard.fail_group("SQLite rolled the transaction back after an error");
            guard = self.begin_immediate(guard).await?;
        } else if guard.group.is_none() {
            // Cannot happen (every path that leaves the group empty ends the SQLite
            // transaction), but a stray transaction must not swallow ours.
            let _ = guard.conn.execute_batch("ROLLBACK");
            guard = self.begin_immediate(guard).await?;
        }
        if let Err(e) = run(&guard.conn, SAVEPOINT) {
            end_if_empty(&mut guard);
            return Err(e);
        }
        Ok(SqliteTx {
            writer: self.clone(),
            guard: Some(guard),
        })
    }

    /// `BEGIN IMMEDIATE`; if another process holds the write lock, waits for it (up to the
    /// busy timeout) on the blocking pool, not on this thread.
    async fn begin_immediate(
        &self,
        guard: OwnedMutexGuard<WriterState>,
    ) -> Result<OwnedMutexGuard<WriterState>> {
        match run(&guard.conn, "BEGIN IMMEDIATE") {
            Ok(()) => return Ok(guard),
            Err(e) if e.db_kind() != Some(DbErrorKind::Conflict) => return Err(e),
            Err(_) => {}
        }
        let busy = self.busy_timeout;
        tokio::task::spawn_blocking(move || {
            let answer = guard
                .conn
                .busy_timeout(busy)
                .map_err(map_err)
                .and_then(|()| run(&guard.conn, "BEGIN IMMEDIATE"));
            let _ = guard.conn.busy_timeout(Duration::ZERO);
            answer.map(|()| guard)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// `COMMIT`s the SQLite transaction: this transaction's and its group's. Every member
    /// hears the outcome.
    fn commit_now(&self, guard: &mut WriterState) -> Result<()> {
        let answer = run(&guard.conn, "COMMIT");
        if !guard.conn.is_autocommit() {
            // A failed COMMIT leaves the transaction open: end it, so the connection is
            // clean for the next one.
            let _ = guard.conn.execute_batch("ROLLBACK");
        }
        if let Some(group) = guard.group.take() {
            finish(group, answer.as_ref().map(|_| ()).map_err(FailedCommit::of));
        }
        if answer.is_ok() {
            guard.last_commit = Some(tokio::time::Instant::now());
            if let Some(checkpoint) = &self.checkpoint {
                let _ = checkpoint.try_send(());
            }
        }
        answer
    }

    /// Waits until group `id` has committed, committing it when this member's turn for the
    /// writer comes first.
    async fn await_group(
        self: &Arc<Self>,
        id: u64,
        mut outcome: watch::Receiver<Option<Outcome>>,
        gather_until: Option<tokio::time::Instant>,
    ) -> Result<()> {
        let mut pending = CommitOnDrop {
            writer: Some(self.clone()),
            id,
        };
        if let Some(until) = gather_until {
            // Give the transactions arriving meanwhile the chance to join, unless the
            // group commits before.
            tokio::select! {
                biased;
                _ = outcome.wait_for(Option::is_some) => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
        loop {
            tokio::select! {
                biased;
                done = outcome.wait_for(Option::is_some) => {
                    pending.writer = None;
                    return match done {
                        Ok(done) => match done.as_ref().expect("waited for Some") {
                            Ok(()) => Ok(()),
                            Err(failed) => Err(failed.error()),
                        },
                        Err(_) => Err(StoreError::closed()),
                    };
                }
                mut guard = self.gate.clone().lock_owned() => {
                    if guard.group.as_ref().is_some_and(|g| g.id == id) {
                        pending.writer = None;
                        return self.commit_now(&mut guard);
                    }
                    // Committed by another member meanwhile: its outcome is set.
                }
            }
        }
    }
}

fn finish(group: Group, outcome: Outcome) {
    group.outcome.send_replace(Some(outcome));
}

/// Ends the SQLite transaction if no group is in it (after our savepoint is gone).
fn end_if_empty(guard: &mut WriterState) {
    if guard.group.is_none() && !guard.conn.is_autocommit() {
        let _ = guard.conn.execute_batch("ROLLBACK");
    }
}

/// Rolls back one of our transactions: its savepoint only, so the group stays.
fn undo(guard: &mut WriterState) {
    if guard.conn.is_autocommit() {
        return;
    }
    if run(&guard.conn, ROLLBACK_TO)
        .and_then(|()| run(&guard.conn, RELEASE))
        .is_err()
    {
        // The savepoint cannot be undone alone: undo everything, and tell the group.
        let _ = guard.conn.execute_batch("ROLLBACK");
        guard.fail_group("a transaction in the group could not be rolled back alone");
        return;
    }
    end_if_empty(guard);
}

/// A member that stops waiting for its group still gets the group committed: a task takes
/// the writer in its turn and commits, unless another member has.
struct CommitOnDrop {
    writer: Option<Arc<Writer>>,
    id: u64,
}

impl Drop for CommitOnDrop {
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        let id = self.id;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut guard = writer.gate.clone().lock_owned().await;
                if guard.group.as_ref().is_some_and(|g| g.id == id) {
                    if let Err(error) = writer.commit_now(&mut guard) {
                        tracing::warn!(%error, "committing a group whose members stopped waiting failed");
                    }
                }
            });
        }
    }
}

/// A SQLite database: the writer, the readers, the checkpointer.
pub(crate) struct SqliteDb {
    writer: Arc<Writer>,
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
        let (writer, readers, checkpointer) = tokio::task::spawn_blocking(move || {
            let connect = |e| StoreError::Connect {
                backend: Backend::Sqlite,
                target: label.clone(),
                message: e,
            };
            let writer = open_connection(&target, busy, Role::Writer).map_err(connect)?;
            let mut readers = Vec::with_capacity(reader_count);
            for _ in 0..reader_count {
                let reader = open_connection(&target, busy, Role::Reader).map_err(connect)?;
                readers.push(Arc::new(StdMutex::new(reader)));
            }
            let checkpointer = match target {
                Target::SqliteFile(_) => {
                    Some(open_connection(&target, busy, Role::Checkpointer).map_err(connect)?)
                }
                _ => None,
            };
            Ok::<_, StoreError>((writer, readers, checkpointer))
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        let checkpoint = match checkpointer {
            Some(conn) => {
                let (signal, signals) = mpsc::sync_channel(1);
                std::thread::Builder::new()
                    .name("ovasabi-store-checkpoint".into())
                    .spawn(move || run_checkpointer(conn, signals))
                    .map_err(|e| StoreError::Connect {
                        backend: Backend::Sqlite,
                        target: "checkpoint thread".into(),
                        message: e.to_string(),
                    })?;
                Some(signal)
            }
            None => None,
        };
        Ok(SqliteDb {
            writer: Arc::new(Writer {
                gate: Arc::new(AsyncMutex::new(WriterState {
                    conn: writer,
                    group: None,
                    next_group: 0,
                    last_commit: None,
                })),
                waiting: AtomicUsize::new(0),
                busy_timeout: busy,
                checkpoint,
            }),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    pub(crate) async fn begin(&self) -> Result<SqliteTx> {
        self.writer.begin().await
    }

    /// Runs `job` on the writer in a transaction of its own (autocommit).
    async fn autocommit<T>(&self, job: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut tx = self.writer.begin().await?;
        let answer = job(tx.conn()?)?;
        tx.commit().await?;
        Ok(answer)
    }

    pub(crate) async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64> {
        let sql = to_sqlite(sql);
        self.autocommit(|conn| execute(conn, &sql, params)).await
    }

    pub(crate) async fn execute_batch(&self, sql: &str) -> Result<()> {
        self.autocommit(|conn| conn.execute_batch(sql).map_err(map_err))
            .await
    }

    pub(crate) async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let sql = to_sqlite(sql);
        if !self.readers.is_empty() {
            if let Some(answer) = self.read_here(&sql, params) {
                if let Some(rows) = answer? {
                    return Ok(rows);
                }
            } else {
                // Every reader is busy (more threads than readers): wait for one off
                // this thread.
                let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
                let reader = self.readers[i].clone();
                let (owned_sql, owned_params) = (sql.clone(), params.to_vec());
                let answer = tokio::task::spawn_blocking(move || {
                    let conn = reader
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    read(&conn, &owned_sql, &owned_params)
                })
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
                if let Some(rows) = answer {
                    return Ok(rows);
                }
            }
        }
        self.autocommit(|conn| query(conn, &sql, params)).await
    }

    /// Runs a read on a free reader connection, here; `None` if none is free.
    fn read_here(&self, sql: &str, params: &[Value]) -> Option<Result<Option<Vec<Row>>>> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|k| {
            let conn = match self.readers[(start + k) % n].try_lock() {
                Ok(conn) => conn,
                Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return None,
            };
            Some(read(&conn, sql, params))
        })
    }
}

/// Runs `sql` if SQLite says it is read-only; `None` if it writes.
fn read(conn: &Connection, sql: &str, params: &[Value]) -> Result<Option<Vec<Row>>> {
    let mut statement = conn.prepare_cached(sql).map_err(map_err)?;
    if !statement.readonly() {
        return Ok(None);
    }
    query_statement(&mut statement, params).map(Some)
}

/// One of our transactions on the writer: a savepoint inside the SQLite transaction.
/// Dropped without commit, it rolls back.
pub(crate) struct SqliteTx {
    writer: Arc<Writer>,
    /// `None` once the transaction has ended.
    guard: Option<OwnedMutexGuard<WriterState>>,
}

impl SqliteTx {
    /// The connection, refusing if the transaction has ended.
    fn conn(&mut self) -> Result<&Connection> {
        let guard = self
            .guard
            .as_ref()
            .ok_or_else(|| StoreError::TransactionAborted("the transaction has ended".into()))?;
        if guard.conn.is_autocommit() {
            return Err(ended_by_sqlite());
        }
        Ok(&guard.conn)
    }

    pub(crate) async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let sql = to_sqlite(sql);
        execute(self.conn()?, &sql, params)
    }

    pub(crate) async fn execute_batch(&mut self, sql: &str) -> Result<()> {
        self.conn()?.execute_batch(sql).map_err(map_err)
    }

    pub(crate) async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let sql = to_sqlite(sql);
        query(self.conn()?, &sql, params)
    }

    pub(crate) async fn commit(mut self) -> Result<()> {
        let Some(mut guard) = self.guard.take() else {
            return Err(StoreError::TransactionAborted(
                "the transaction has ended".into(),
            ));
        };
        if guard.conn.is_autocommit() {
            // SQLite rolled everything back after an error: ours, and the group's.
            guard.fail_group("SQLite rolled the transaction back after an error");
            return Err(ended_by_sqlite());
        }
        if let Err(e) = run(&guard.conn, RELEASE) {
            undo(&mut guard);
            return Err(e);
        }
        let now = tokio::time::Instant::now();
        let busy = guard
            .last_commit
            .is_some_and(|last| now.duration_since(last) < GATHER);
        let gather = if self.writer.waiting.load(Ordering::SeqCst) > 0 {
            // Others are queued: they join this SQLite transaction, and commit with it.
            None
        } else if busy && guard.group.is_none() {
            // Nobody is queued, but commits are coming fast: open a group, and let the
            // transactions of the next moment join it.
            Some(now + GATHER)
        } else if let Some(group) = guard.group.as_ref().filter(|_| busy) {
            Some(group.opened + GATHER)
        } else {
            return self.writer.commit_now(&mut guard);
        };
        let state = &mut *guard;
        let group = state.group.get_or_insert_with(|| {
            state.next_group += 1;
            Group {
                id: state.next_group,
                outcome: watch::Sender::new(None),
                opened: now,
            }
        });
        let (id, outcome) = (group.id, group.outcome.subscribe());
        drop(guard);
        self.writer.await_group(id, outcome, gather).await
    }

    pub(crate) async fn rollback(mut self) -> Result<()> {
        if let Some(mut guard) = self.guard.take() {
            undo(&mut guard);
        }
        Ok(())
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            undo(&mut guard);
        }
    }
}

/// Runs a statement without parameters or rows (transaction control), prepared once.
fn run(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(|_| ())
        .map_err(map_err)
}

/// Copies the write-ahead log back into the database off the writers' path: after commits
/// (at most every 20 ms) and on a timer. PASSIVE checkpoints never block the writer.
fn run_checkpointer(conn: Connection, signals: mpsc::Receiver<()>) {
    loop {
        match signals.recv_timeout(Duration::from_secs(1)) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);");
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        while signals.try_recv().is_ok() {}
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
            tracing::warn!(error = %e, "database checkpoint failed; will try again");
        }
    }
}

fn ended_by_sqlite() -> StoreError {
    StoreError::TransactionAborted(
        "SQLite ended the transaction after an earlier error; run it again from the start".into(),
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Writer,
    Reader,
    Checkpointer,
}

fn open_connection(target: &Target, busy: Duration, role: Role) -> Result<Connection, String> {
    let writer = role == Role::Writer;
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
        // temp_store = MEMORY: each of our transactions is a savepoint, and the pages it
        // changes are first copied to the savepoint's journal; SQLite spills that journal
        // to a temporary file past 64 KiB, which cost a file created, written and deleted
        // in every busy group commit.
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
        )
        .map_err(|e| e.to_string())?;
        conn.set_prepared_statement_cache_capacity(128);
        if writer {
            // The writer never waits on this thread (see `Writer::begin_immediate`), and
            // leaves checkpoints to the checkpointer.
            conn.busy_timeout(Duration::ZERO)
                .map_err(|e| e.to_string())?;
            conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")
                .map_err(|e| e.to_string())?;
        }
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

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Instant;

    use super::*;

    async fn open(dir: &tempfile::TempDir) -> Arc<SqliteDb> {
        let db = SqliteDb::open(&StoreConfig::sqlite(dir.path().join("t.db")))
            .await
            .unwrap();
        db.execute_batch(
            "CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (id INTEGER PRIMARY KEY,
                 parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
        )
        .await
        .unwrap();
        Arc::new(db)
    }

    /// Until `n` tasks wait for the writer.
    async fn until_waiting(db: &SqliteDb, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while db.writer.waiting.load(Ordering::SeqCst) != n {
            assert!(Instant::now() < deadline, "never {n} waiting");
            tokio::task::yield_now().await;
        }
    }

    async fn ids(db: &SqliteDb) -> Vec<i64> {
        db.query("SELECT id FROM parent ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("id").unwrap())
            .collect()
    }

    fn insert(id: i64) -> (&'static str, Vec<Value>) {
        ("INSERT INTO parent (id) VALUES ($1)", vec![Value::Int(id)])
    }

    #[tokio::test]
    async fn members_commit_together_and_roll_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir).await;
        let mut a = db.begin().await.unwrap();
        let (sql, params) = insert(1);
        a.execute(sql, &params).await.unwrap();
        let spawn = |id: i64, keep: bool| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut tx = db.begin().await?;
                let (sql, params) = insert(id);
                tx.execute(sql, &params).await?;
                if keep {
                    tx.commit().await
                } else {
                    tx.rollback().await
                }
            })
        };
        let b = spawn(2, false);
        let c = spawn(3, true);
        until_waiting(&db, 2).await;
        // Two wait: `a` joins a group instead of committing alone.
        a.commit().await.unwrap();
        // It returned after the group's COMMIT: a reader sees it.
        assert!(ids(&db).await.contains(&1));
        b.await.unwrap().unwrap();
        c.await.unwrap().unwrap();
        assert_eq!(ids(&db).await, [1, 3]);
    }

    #[tokio::test]
    async fn a_failed_group_commit_fails_every_member() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir).await;
        let mut a = db.begin().await.unwrap();
        let (sql, params) = insert(1);
        a.execute(sql, &params).await.unwrap();
        let bad = {
            let db = db.clone();
            tokio::spawn(async move {
                let mut tx = db.begin().await?;
                // Checked at COMMIT: fails the whole group.
                tx.execute("INSERT INTO child (id, parent) VALUES (10, 999)", &[])
                    .await?;
                tx.commit().await
            })
        };
        let c = {
            let db = db.clone();
            tokio::spawn(async move {
                let mut tx = db.begin().await?;
                let (sql, params) = insert(3);
                tx.execute(sql, &params).await?;
                tx.commit().await
            })
        };
        until_waiting(&db, 2).await;
        // Whichever member runs the COMMIT, each hears that it failed, and why.
        let errors = [
            a.commit().await.unwrap_err(),
            bad.await.unwrap().unwrap_err(),
            c.await.unwrap().unwrap_err(),
        ];
        for error in &errors {
            assert!(error.to_string().contains("FOREIGN KEY"), "{error}");
        }
        assert!(
            errors.iter().any(|e| e
                .to_string()
                .contains("the group commit this transaction joined failed")),
            "{errors:?}"
        );
        assert!(ids(&db).await.is_empty(), "nothing of the group committed");
        // The writer is clean for the next transaction.
        let mut d = db.begin().await.unwrap();
        let (sql, params) = insert(4);
        d.execute(sql, &params).await.unwrap();
        d.commit().await.unwrap();
        assert_eq!(ids(&db).await, [4]);
    }

    #[tokio::test]
    async fn a_group_whose_members_all_stopped_waiting_still_commits() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir).await;
        let mut a = db.begin().await.unwrap();
        let (sql, params) = insert(1);
        a.execute(sql, &params).await.unwrap();
        // `b` takes the writer after `a` and gives it back without committing.
        let b = {
            let db = db.clone();
            tokio::spawn(async move {
                let tx = db.begin().await?;
                drop(tx);
                Ok::<_, StoreError>(())
            })
        };
        until_waiting(&db, 1).await;
        // `a` joins a group and stops waiting for it at once.
        let mut commit = Box::pin(a.commit());
        let polled =
            std::future::poll_fn(|cx| std::task::Poll::Ready(commit.as_mut().poll(cx))).await;
        assert!(polled.is_pending(), "the commit was waiting for its group");
        drop(commit);
        b.await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while ids(&db).await != [1] {
            assert!(
                Instant::now() < deadline,
                "the abandoned group never committed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_transactions_commit_exactly_what_they_committed() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir).await;
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let db = db.clone();
                tokio::spawn(async move {
                    let mut kept = Vec::new();
                    for i in 0..50_i64 {
                        let id = t * 1000 + i;
                        let mut tx = db.begin().await.unwrap();
                        let (sql, params) = insert(id);
                        tx.execute(sql, &params).await.unwrap();
                        match id % 3 {
                            0 => tx.rollback().await.unwrap(),
                            1 => drop(tx),
                            _ => {
                                tx.commit().await.unwrap();
                                // Committed means a reader sees it now.
                                let seen = db
                                    .query("SELECT id FROM parent WHERE id = $1", &[Value::Int(id)])
                                    .await
                                    .unwrap();
                                assert_eq!(seen.len(), 1, "{id} committed but not visible");
                                kept.push(id);
                            }
                        }
                    }
                    kept
                })
            })
            .collect();
        let mut kept = Vec::new();
        for t in tasks {
            kept.extend(t.await.unwrap());
        }
        kept.sort_unstable();
        assert_eq!(ids(&db).await, kept);
    }
}
