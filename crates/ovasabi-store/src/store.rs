//! [`Store`] and [`Transaction`]: the one interface over both backends.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{Backend, StoreConfig, Target};
use crate::error::{Result, StoreError};
use crate::migrate::{self, MigrationSet};
use crate::outbox::{Committed, Outbox, OutboxRecord};
use crate::postgres::{PgDb, PgTx};
use crate::sqlite::{SqliteDb, SqliteTx};
use crate::value::{Row, Value};

/// A boxed future that is `Send`, as [`Store::transaction`]'s closure returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

enum Db {
    Sqlite(SqliteDb),
    Postgres(PgDb),
}

/// An open database, SQLite or PostgreSQL, with its migrations applied.
///
/// Cheap to clone (clones share the connections); `Send + Sync`. Statements use
/// PostgreSQL's `$1` placeholders on both backends; see the [crate documentation](crate)
/// for the SQL both backends accept.
#[derive(Clone)]
pub struct Store {
    db: Arc<Db>,
    label: Arc<str>,
    /// Outbox rows this process committed, kept for the relay (see [`Outbox::fetch_ready`]).
    committed: Arc<Committed>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Store").field(&self.label).finish()
    }
}

impl Store {
    /// Opens the database and brings its schema up to date: the store's own tables
    /// (`outbox`, `inbox`) first, then each of `migrations` in order. Refuses to open a
    /// database whose schema is newer than `migrations` know
    /// ([`StoreError::SchemaTooNew`]). Safe to call from several processes at once.
    pub async fn open(config: &StoreConfig, migrations: &[MigrationSet]) -> Result<Store> {
        let db = match &config.target {
            Target::SqliteFile(_) | Target::SqliteMemory => {
                Db::Sqlite(SqliteDb::open(config).await?)
            }
            Target::Postgres { config: pg, schema } => {
                Db::Postgres(PgDb::open(pg, schema.as_deref(), config.pool_size).await?)
            }
        };
        let store = Store {
            db: Arc::new(db),
            label: config.to_string().into(),
            committed: Arc::default(),
        };
        migrate::run(&store, config.schema(), migrations).await?;
        Ok(store)
    }

    /// The kind of database.
    pub fn backend(&self) -> Backend {
        match *self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Starts a transaction. Commit it with [`Transaction::commit`]; dropped without a
    /// commit, it rolls back.
    ///
    /// On SQLite one transaction runs at a time (SQLite has one writer): a second `begin`
    /// waits until the first transaction ends, so never begin a second transaction while
    /// holding one in the same task. On PostgreSQL each transaction holds one pooled
    /// connection.
    pub async fn begin(&self) -> Result<Transaction> {
        let inner = match &*self.db {
            Db::Sqlite(db) => TxInner::Sqlite(db.begin().await?),
            Db::Postgres(db) => TxInner::Postgres(Box::new(db.begin().await?)),
        };
        Ok(Transaction {
            inner,
            appended: Vec::new(),
            committed: self.committed.clone(),
        })
    }

    /// Runs `work` in a transaction: commits when it returns `Ok`, rolls back when it
    /// returns `Err` (or panics, or is cancelled).
    ///
    /// ```no_run
    /// # async fn demo(store: ovasabi_store::Store, event: ovasabi_core::Event) -> Result<(), ovasabi_store::StoreError> {
    /// use ovasabi_store::{params, Outbox};
    ///
    /// store
    ///     .transaction(|tx| {
    ///         Box::pin(async move {
    ///             tx.execute("UPDATE users SET email = $2 WHERE id = $1", params!["u1", "a@b.c"])
    ///                 .await?;
    ///             Outbox::append(tx, "user.events", &event).await?;
    ///             Ok::<_, ovasabi_store::StoreError>(())
    ///         })
    ///     })
    ///     .await
    /// # }
    /// ```
    pub async fn transaction<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'t> FnOnce(&'t mut Transaction) -> BoxFuture<'t, Result<T, E>>,
        E: From<StoreError>,
    {
        let mut tx = self.begin().await?;
        match work(&mut tx).await {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(error) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(error = %rollback, "rollback after a failed transaction failed");
                }
                Err(error)
            }
        }
    }

    /// Runs one statement in its own transaction (autocommit); returns the number of rows
    /// it changed (or returned, for `… RETURNING` and `SELECT`).
    pub async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64> {
        match &*self.db {
            Db::Sqlite(db) => db.execute(sql, params).await,
            Db::Postgres(db) => db.execute(sql, params).await,
        }
    }

    /// Runs several `;`-separated statements without parameters, in autocommit.
    pub async fn execute_batch(&self, sql: &str) -> Result<()> {
        match &*self.db {
            Db::Sqlite(db) => db.execute_batch(sql).await,
            Db::Postgres(db) => db.execute_batch(sql).await,
        }
    }

    /// Runs a query outside any transaction and reads all its rows. On SQLite a read-only
    /// query runs on a reader connection, beside an open transaction.
    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        match &*self.db {
            Db::Sqlite(db) => db.query(sql, params).await,
            Db::Postgres(db) => db.query(sql, params).await,
        }
    }

    /// Like [`query`](Self::query), for exactly one row: [`StoreError::NoRows`] if none.
    pub async fn query_one(&self, sql: &str, params: &[Value]) -> Result<Row> {
        self.query_opt(sql, params).await?.ok_or(StoreError::NoRows)
    }

    /// Like [`query`](Self::query), for at most one row (the first).
    pub async fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// The highest applied migration version of `component` (`None` if it has none).
    pub async fn schema_version(&self, component: &str) -> Result<Option<u32>> {
        let row = self
            .query_one(
                "SELECT MAX(version) AS version FROM schema_migrations WHERE component = $1",
                &[Value::from(component)],
            )
            .await?;
        row.get::<Option<u32>>("version")
    }

    /// This store's outbox, for the relay.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self)
    }

    /// The outbox rows this process committed and the relay has not taken yet.
    pub(crate) fn committed(&self) -> &Committed {
        &self.committed
    }
}

/// Settles the rows a committing transaction kept for the relay, when its commit returns;
/// a cancelled commit's outcome is unknown here, and its rows are settled as committed (a
/// later fetch drops them if the table does not list them).
struct Settle<'c> {
    seqs: Vec<i64>,
    committed: &'c Committed,
    outcome: Option<bool>,
}

impl Settle<'_> {
    fn settle(mut self, committed: bool) {
        self.outcome = Some(committed);
    }
}

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        self.committed
            .settle(&self.seqs, self.outcome.unwrap_or(true));
    }
}

enum TxInner {
    Sqlite(SqliteTx),
    Postgres(Box<PgTx>),
}

/// An open transaction: a service's own statements and its [`Outbox`] and
/// [`Inbox`](crate::Inbox) rows commit together or not at all.
///
/// Dropped without [`commit`](Self::commit), it rolls back (also when the future using
/// it is cancelled). After a statement fails, PostgreSQL refuses further statements in
/// the transaction: roll back (or drop it) and run the transaction again.
pub struct Transaction {
    inner: TxInner,
    /// The outbox rows appended in this transaction, handed to the store's
    /// [`Committed`] rows as it commits.
    appended: Vec<OutboxRecord>,
    committed: Arc<Committed>,
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Transaction").field(&self.backend()).finish()
    }
}

impl Transaction {
    /// The kind of database.
    pub fn backend(&self) -> Backend {
        match self.inner {
            TxInner::Sqlite(_) => Backend::Sqlite,
            TxInner::Postgres(_) => Backend::Postgres,
        }
    }

    /// Runs one statement; returns the number of rows it changed (or returned).
    pub async fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => tx.execute(sql, params).await,
            TxInner::Postgres(tx) => tx.execute(sql, params).await,
        }
    }

    /// Runs several `;`-separated statements without parameters.
    pub async fn execute_batch(&mut self, sql: &str) -> Result<()> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => tx.execute_batch(sql).await,
            TxInner::Postgres(tx) => tx.execute_batch(sql).await,
        }
    }

    /// Runs a query and reads all its rows.
    pub async fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        match &mut self.inner {
            TxInner::Sqlite(tx) => tx.query(sql, params).await,
            TxInner::Postgres(tx) => tx.query(sql, params).await,
        }
    }

    /// Like [`query`](Self::query), for exactly one row: [`StoreError::NoRows`] if none.
    pub async fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row> {
        self.query_opt(sql, params).await?.ok_or(StoreError::NoRows)
    }

    /// Like [`query`](Self::query), for at most one row (the first).
    pub async fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Commits. An error means the transaction did not commit (or, if the connection
    /// was lost during the commit, that its outcome is unknown).
    pub async fn commit(self) -> Result<()> {
        // The relay may see the rows in the table as soon as they commit, before this
        // returns: they are kept for it first.
        let kept = Settle {
            seqs: self.committed.keep(self.appended),
            committed: &self.committed,
            outcome: None,
        };
        let answer = match self.inner {
            TxInner::Sqlite(tx) => tx.commit().await,
            TxInner::Postgres(tx) => tx.commit().await,
        };
        kept.settle(answer.is_ok());
        answer
    }

    /// Records an outbox row appended in this transaction (by [`Outbox::append`]).
    pub(crate) fn appended(&mut self, record: OutboxRecord) {
        self.appended.push(record);
    }

    /// Rolls back. Dropping the transaction does the same without waiting.
    pub async fn rollback(self) -> Result<()> {
        match self.inner {
            TxInner::Sqlite(tx) => tx.rollback().await,
            TxInner::Postgres(tx) => tx.rollback().await,
        }
    }
}
