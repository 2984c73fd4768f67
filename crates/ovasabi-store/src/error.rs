//! [`StoreError`], the error of every storage operation.

use std::fmt;

use ovasabi_core::FormatError;

use crate::config::Backend;

/// What kind of database error happened, where a caller may act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbErrorKind {
    /// A unique or primary-key constraint refused the row (PostgreSQL `23505`,
    /// SQLite `SQLITE_CONSTRAINT_UNIQUE` / `_PRIMARYKEY`).
    UniqueViolation,
    /// A foreign-key constraint refused the change (PostgreSQL `23503`,
    /// SQLite `SQLITE_CONSTRAINT_FOREIGNKEY`).
    ForeignKeyViolation,
    /// Another transaction got in the way: PostgreSQL serialization failure (`40001`) or
    /// deadlock (`40P01`), SQLite `SQLITE_BUSY` / `SQLITE_LOCKED`. Running the whole
    /// transaction again may succeed.
    Conflict,
    /// The connection to the database failed or was lost.
    Connection,
    /// Anything else: a syntax error, a missing table, a type the column refuses…
    Other,
}

/// The error of every operation of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A database URL (`OVASABI_DB`, `--db`) could not be used.
    #[error("invalid database URL `{url}`: {reason}; for example `{example}`")]
    InvalidUrl {
        /// The URL as given, with any password hidden.
        url: String,
        /// What was wrong with it.
        reason: String,
        /// A URL of the right form.
        example: &'static str,
    },
    /// The database could not be opened or reached.
    #[error("cannot open the {backend} database {target}: {message}")]
    Connect {
        /// Which backend.
        backend: Backend,
        /// Which database (file, or `host:port/dbname as user`; never a password).
        target: String,
        /// Why.
        message: String,
    },
    /// The database refused or failed a statement.
    #[error("{backend} error{}: {message}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Database {
        /// Which backend.
        backend: Backend,
        /// What kind of error, for callers that handle some kinds.
        kind: DbErrorKind,
        /// The backend's own code (a PostgreSQL SQLSTATE, a SQLite extended result code).
        code: Option<String>,
        /// The backend's message, with details.
        message: String,
    },
    /// A migration failed; it was rolled back, and those before it stay applied.
    #[error("migration `{component}` v{version} ({name}) failed: {message}")]
    Migration {
        /// The migration set (a service, or `ovasabi_store`).
        component: String,
        /// The migration's version.
        version: u32,
        /// The migration's name.
        name: String,
        /// The database's message.
        message: String,
    },
    /// The database holds a newer schema than this binary knows: it was migrated by a newer
    /// release. The store refuses to open rather than run old code on a new schema.
    #[error(
        "the database schema of `{component}` is at version {database_version}, newer than the \
         latest this binary knows ({binary_version}): run a release that knows version \
         {database_version}, or restore a backup taken before the upgrade"
    )]
    SchemaTooNew {
        /// The migration set.
        component: String,
        /// The highest version applied to the database.
        database_version: u32,
        /// The highest version this binary has.
        binary_version: u32,
    },
    /// An applied migration's text differs from the binary's: it was edited after release.
    #[error(
        "migration `{component}` v{version} ({name}) was changed after it was applied \
         (checksum {database_checksum} in the database, {binary_checksum} in this binary): \
         restore its original text and add a new migration for the change"
    )]
    MigrationChanged {
        /// The migration set.
        component: String,
        /// The migration's version.
        version: u32,
        /// The migration's name.
        name: String,
        /// The checksum recorded when it was applied.
        database_checksum: String,
        /// The checksum of the binary's text.
        binary_checksum: String,
    },
    /// A migration set is malformed (versions out of order, a bad component name), or the
    /// database's applied migrations cannot be reconciled with it.
    #[error("migrations of `{component}`: {reason}")]
    InvalidMigrations {
        /// The migration set.
        component: String,
        /// What is wrong.
        reason: String,
    },
    /// A column's value could not be read as the requested Rust type.
    #[error("column `{column}`: {message}")]
    Decode {
        /// The column's name or index.
        column: String,
        /// What did not fit.
        message: String,
    },
    /// `query_one` found no row.
    #[error("the query returned no rows")]
    NoRows,
    /// An event could not be put in the outbox (invalid event or topic).
    #[error("cannot add the event to the outbox: {0}")]
    InvalidEvent(String),
    /// A stored outbox row no longer decodes (edited by hand, or corrupted).
    #[error("outbox row {seq} holds an unreadable event: {source}")]
    CorruptOutboxRow {
        /// The row's sequence number.
        seq: i64,
        /// Why it does not decode.
        source: FormatError,
    },
    /// The transaction can no longer be used: the database ended it after an error, or the
    /// store is closing.
    #[error("the transaction is no longer usable: {0}")]
    TransactionAborted(String),
}

impl StoreError {
    /// The kind of database error, if this is one.
    pub fn db_kind(&self) -> Option<DbErrorKind> {
        match self {
            StoreError::Database { kind, .. } => Some(*kind),
            StoreError::Connect { .. } => Some(DbErrorKind::Connection),
            _ => None,
        }
    }

    /// Whether a unique or primary-key constraint refused the row.
    pub fn is_unique_violation(&self) -> bool {
        self.db_kind() == Some(DbErrorKind::UniqueViolation)
    }

    /// Whether running the whole transaction again may succeed (a conflict with another
    /// transaction, or a lost connection).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.db_kind(),
            Some(DbErrorKind::Conflict | DbErrorKind::Connection)
        )
    }

    pub(crate) fn decode(column: impl fmt::Display, message: impl Into<String>) -> Self {
        StoreError::Decode {
            column: column.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn closed() -> Self {
        StoreError::TransactionAborted("the store's SQLite writer has stopped".to_owned())
    }
}

/// The result of every operation of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An error's message followed by its sources' (`a: b: c`), for errors whose `Display`
/// leaves the cause out (tokio-postgres says only "error connecting to server").
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}
