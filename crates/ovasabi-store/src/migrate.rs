//! Versioned migrations, applied when a [`Store`] opens.
//!
//! Each owner of tables (a service, or this crate for `outbox` and `inbox`) declares a
//! [`MigrationSet`]: a component name and its [`Migration`]s, versions from 1 upward.
//! Several components can share one database (`ovasabi up` runs every service on one
//! SQLite file); a component's versions are its own.
//!
//! ```
//! use ovasabi_store::{Migration, MigrationSet};
//!
//! pub const USERS: MigrationSet = MigrationSet::new("users", &[
//!     // PostgreSQL type names: SQLite accepts them too (see the crate documentation).
//!     Migration::new(1, "users", "
//!         CREATE TABLE users (
//!             id TEXT PRIMARY KEY,
//!             email TEXT NOT NULL UNIQUE,
//!             verified BOOLEAN NOT NULL DEFAULT FALSE,
//!             created_at TIMESTAMPTZ NOT NULL
//!         )"),
//!     // Where the dialects differ, one text per backend:
//!     Migration::per_backend(2, "login audit",
//!         "CREATE TABLE logins (seq INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL)",
//!         "CREATE TABLE logins (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, user_id TEXT NOT NULL)"),
//!     // Files work too: Migration::new(3, "…", include_str!("../migrations/0003.sql")),
//! ]);
//! ```
//!
//! # How they are applied
//!
//! - `schema_migrations (component, version, name, checksum, applied_at)` records what is
//!   applied.
//! - Each migration runs in its own transaction together with its record: it is applied
//!   entirely or not at all, and a failure leaves the ones before it applied. (So a
//!   migration cannot use statements PostgreSQL refuses inside a transaction, such as
//!   `CREATE INDEX CONCURRENTLY`.)
//! - **Concurrent start.** On PostgreSQL each of those transactions first takes a
//!   transaction-level advisory lock (keyed by the schema), so processes starting
//!   together apply each migration once; the others wait, then find it applied. On SQLite
//!   the transaction is `BEGIN IMMEDIATE`, which takes the file's write lock.
//! - **Refusals.** A database whose applied version is above the binary's latest is
//!   refused with [`StoreError::SchemaTooNew`]; an
//!   applied migration whose text has changed with
//!   [`MigrationChanged`](crate::StoreError::MigrationChanged) (the checksum ignores
//!   trailing whitespace on each line); a new migration numbered below one already applied
//!   with [`InvalidMigrations`](crate::StoreError::InvalidMigrations).

use std::collections::BTreeMap;

use chrono::Utc;

use crate::config::Backend;
use crate::error::{Result, StoreError};
use crate::params;
use crate::store::{Store, Transaction};

/// One versioned schema change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// Its version: 1 for the first, then increasing.
    pub version: u32,
    /// A short description, recorded with it.
    pub name: &'static str,
    /// Its SQL on SQLite (one or more `;`-separated statements).
    pub sqlite: &'static str,
    /// Its SQL on PostgreSQL.
    pub postgres: &'static str,
}

impl Migration {
    /// A migration whose SQL is the same on both backends.
    pub const fn new(version: u32, name: &'static str, sql: &'static str) -> Migration {
        Migration {
            version,
            name,
            sqlite: sql,
            postgres: sql,
        }
    }

    /// A migration with one SQL text per backend.
    pub const fn per_backend(
        version: u32,
        name: &'static str,
        sqlite: &'static str,
        postgres: &'static str,
    ) -> Migration {
        Migration {
            version,
            name,
            sqlite,
            postgres,
        }
    }

    /// Its SQL on `backend`.
    pub fn sql(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => self.sqlite,
            Backend::Postgres => self.postgres,
        }
    }

    /// The checksum recorded when it is applied on `backend` (FNV-1a 64 of the text,
    /// trailing whitespace of each line and blank edges ignored), in hex.
    pub fn checksum(&self, backend: Backend) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for (i, line) in self.sql(backend).trim().lines().enumerate() {
            if i > 0 {
                hash = fnv(hash, b"\n");
            }
            hash = fnv(hash, line.trim_end().as_bytes());
        }
        format!("{hash:016x}")
    }
}

fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The migrations of one component (a service, or this crate), in version order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrationSet {
    /// Who owns the tables: lower-case ASCII letters, digits, `_`, `-` and `.`.
    pub component: &'static str,
    /// Its migrations, versions strictly increasing from 1.
    pub migrations: &'static [Migration],
}

impl MigrationSet {
    /// A set of migrations for `component`.
    pub const fn new(component: &'static str, migrations: &'static [Migration]) -> MigrationSet {
        MigrationSet {
            component,
            migrations,
        }
    }

    /// The highest version (0 for an empty set).
    pub fn latest_version(&self) -> u32 {
        self.migrations.last().map_or(0, |m| m.version)
    }

    fn check(&self) -> Result<()> {
        let invalid = |reason: String| StoreError::InvalidMigrations {
            component: self.component.to_owned(),
            reason,
        };
        let name_ok = !self.component.is_empty()
            && self.component.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.')
            });
        if !name_ok {
            return Err(invalid(
                "the component name must be lower-case ASCII letters, digits, `_`, `-` or `.`"
                    .into(),
            ));
        }
        let mut previous = 0;
        for m in self.migrations {
            if m.version <= previous {
                return Err(invalid(format!(
                    "versions must increase from 1: v{} ({}) comes after v{previous}",
                    m.version, m.name
                )));
            }
            previous = m.version;
        }
        Ok(())
    }
}

/// The store's own tables.
pub(crate) const STORE_MIGRATIONS: MigrationSet = MigrationSet::new(
    "ovasabi_store",
    &[
        Migration::per_backend(
            1,
            "outbox",
            "CREATE TABLE outbox (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                event_id TEXT NOT NULL,
                aggregate TEXT,
                topic TEXT NOT NULL,
                event TEXT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                published_at TIMESTAMPTZ
            );
            CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;",
            "CREATE TABLE outbox (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                event_id TEXT NOT NULL,
                aggregate TEXT,
                topic TEXT NOT NULL,
                event TEXT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                published_at TIMESTAMPTZ
            );
            CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;",
        ),
        Migration::new(
            2,
            "inbox",
            "CREATE TABLE inbox (
                consumer TEXT NOT NULL,
                event_id TEXT NOT NULL,
                processed_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (consumer, event_id)
            );
            CREATE INDEX inbox_processed_at ON inbox (processed_at);",
        ),
        Migration::new(
            3,
            "per-subject sequences",
            "CREATE TABLE outbox_sequences (
                topic TEXT NOT NULL,
                subject TEXT NOT NULL,
                last BIGINT NOT NULL,
                PRIMARY KEY (topic, subject)
            );
            CREATE TABLE inbox_sequences (
                consumer TEXT NOT NULL,
                topic TEXT NOT NULL,
                subject TEXT NOT NULL,
                last BIGINT NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (consumer, topic, subject)
            );",
        ),
        Migration::per_backend(
            4,
            "keyed tables without rowid",
            // On SQLite a table keyed by text is a rowid table plus an index on its key:
            // each write touches both. Without rowid it is one B-tree ordered by its key.
            // PostgreSQL's tables are heaps with an index whatever the declaration.
            "CREATE TABLE outbox_sequences_keyed (
                topic TEXT NOT NULL,
                subject TEXT NOT NULL,
                last BIGINT NOT NULL,
                PRIMARY KEY (topic, subject)
            ) WITHOUT ROWID;
            INSERT INTO outbox_sequences_keyed SELECT topic, subject, last FROM outbox_sequences;
            DROP TABLE outbox_sequences;
            ALTER TABLE outbox_sequences_keyed RENAME TO outbox_sequences;
            CREATE TABLE inbox_sequences_keyed (
                consumer TEXT NOT NULL,
                topic TEXT NOT NULL,
                subject TEXT NOT NULL,
                last BIGINT NOT NULL,
                updated_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (consumer, topic, subject)
            ) WITHOUT ROWID;
            INSERT INTO inbox_sequences_keyed
                SELECT consumer, topic, subject, last, updated_at FROM inbox_sequences;
            DROP TABLE inbox_sequences;
            ALTER TABLE inbox_sequences_keyed RENAME TO inbox_sequences;
            CREATE TABLE inbox_keyed (
                consumer TEXT NOT NULL,
                event_id TEXT NOT NULL,
                processed_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (consumer, event_id)
            ) WITHOUT ROWID;
            INSERT INTO inbox_keyed SELECT consumer, event_id, processed_at FROM inbox;
            DROP TABLE inbox;
            ALTER TABLE inbox_keyed RENAME TO inbox;
            CREATE INDEX inbox_processed_at ON inbox (processed_at);",
            "SELECT 1;",
        ),
        Migration::new(
            5,
            "unreadable outbox rows",
            // A row whose event no longer decodes is set aside by the relay, with why: it
            // stops counting as waiting, and is never pruned (see `Outbox::set_aside`).
            "ALTER TABLE outbox ADD COLUMN unreadable TEXT;
            CREATE INDEX outbox_unreadable ON outbox (seq) WHERE unreadable IS NOT NULL;",
        ),
    ],
);

const SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    component TEXT NOT NULL,
    version BIGINT NOT NULL,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (component, version)
)";

/// Applies the store's migrations, then `sets`, each up to its latest version.
pub(crate) async fn run(store: &Store, schema: Option<&str>, sets: &[MigrationSet]) -> Result<()> {
    let all: Vec<MigrationSet> = std::iter::once(STORE_MIGRATIONS)
        .chain(sets.iter().copied())
        .collect();
    for (i, set) in all.iter().enumerate() {
        set.check()?;
        if all[..i].iter().any(|s| s.component == set.component) {
            return Err(StoreError::InvalidMigrations {
                component: set.component.to_owned(),
                reason: "two migration sets have this component name".into(),
            });
        }
    }
    for set in &all {
        while apply_next(store, schema, set).await? {}
    }
    Ok(())
}

/// Applies the first pending migration of `set` in its own transaction; `false` when none
/// was pending.
async fn apply_next(store: &Store, schema: Option<&str>, set: &MigrationSet) -> Result<bool> {
    let backend = store.backend();
    let mut tx = store.begin().await?;
    if backend == Backend::Postgres {
        let key = format!("ovasabi_store.migrations:{}", schema.unwrap_or(""));
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            params![key],
        )
        .await?;
        if let Some(schema) = schema {
            // The name was checked to be a plain identifier.
            tx.execute_batch(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .await?;
        }
    }
    tx.execute_batch(SCHEMA_MIGRATIONS).await?;
    let applied = applied(&mut tx, set.component).await?;
    check_applied(set, backend, &applied)?;
    let Some(next) = set
        .migrations
        .iter()
        .find(|m| !applied.contains_key(&m.version))
    else {
        tx.commit().await?;
        return Ok(false);
    };
    if let Some((&later, (later_name, _))) = applied.last_key_value() {
        if later > next.version {
            return Err(StoreError::InvalidMigrations {
                component: set.component.to_owned(),
                reason: format!(
                    "v{} ({}) is not applied but the later v{later} ({later_name}) is: a \
                     migration was added below one already released; number it above v{later}",
                    next.version, next.name
                ),
            });
        }
    }
    tx.execute_batch(next.sql(backend))
        .await
        .map_err(|e| StoreError::Migration {
            component: set.component.to_owned(),
            version: next.version,
            name: next.name.to_owned(),
            message: e.to_string(),
        })?;
    tx.execute(
        "INSERT INTO schema_migrations (component, version, name, checksum, applied_at)
         VALUES ($1, $2, $3, $4, $5)",
        params![
            set.component,
            next.version,
            next.name,
            next.checksum(backend),
            Utc::now()
        ],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        component = set.component,
        version = next.version,
        name = next.name,
        "applied migration"
    );
    Ok(true)
}

/// Applied versions of `component`: version → (name, checksum).
async fn applied(tx: &mut Transaction, component: &str) -> Result<BTreeMap<u32, (String, String)>> {
    let rows = tx
        .query(
            "SELECT version, name, checksum FROM schema_migrations WHERE component = $1",
            params![component],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.get("version")?,
                (row.get("name")?, row.get("checksum")?),
            ))
        })
        .collect()
}

fn check_applied(
    set: &MigrationSet,
    backend: Backend,
    applied: &BTreeMap<u32, (String, String)>,
) -> Result<()> {
    if let Some((&newest, _)) = applied.last_key_value() {
        if newest > set.latest_version() {
            return Err(StoreError::SchemaTooNew {
                component: set.component.to_owned(),
                database_version: newest,
                binary_version: set.latest_version(),
            });
        }
    }
    for (&version, (name, checksum)) in applied {
        let Some(known) = set.migrations.iter().find(|m| m.version == version) else {
            return Err(StoreError::InvalidMigrations {
                component: set.component.to_owned(),
                reason: format!(
                    "v{version} ({name}) is applied in the database but this binary does not \
                     have it"
                ),
            });
        };
        let binary_checksum = known.checksum(backend);
        if *checksum != binary_checksum {
            return Err(StoreError::MigrationChanged {
                component: set.component.to_owned(),
                version,
                name: known.name.to_owned(),
                database_checksum: checksum.clone(),
                binary_checksum,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_ignores_trailing_whitespace_only() {
        let a = Migration::new(1, "a", "CREATE TABLE t (x INT);\nCREATE INDEX i ON t (x);");
        let b = Migration::new(
            1,
            "a",
            "\n  CREATE TABLE t (x INT);   \r\nCREATE INDEX i ON t (x);\n",
        );
        let c = Migration::new(
            1,
            "a",
            "CREATE TABLE t (x BIGINT);\nCREATE INDEX i ON t (x);",
        );
        assert_eq!(a.checksum(Backend::Sqlite), b.checksum(Backend::Sqlite));
        assert_ne!(a.checksum(Backend::Sqlite), c.checksum(Backend::Sqlite));
        assert_eq!(a.checksum(Backend::Sqlite).len(), 16);
    }

    #[test]
    fn sets_are_checked() {
        const BAD_ORDER: &[Migration] = &[Migration::new(2, "b", ""), Migration::new(1, "a", "")];
        let e = MigrationSet::new("svc", BAD_ORDER).check().unwrap_err();
        assert!(e.to_string().contains("v1 (a) comes after v2"), "{e}");
        let e = MigrationSet::new("Svc", &[]).check().unwrap_err();
        assert!(e.to_string().contains("lower-case"), "{e}");
        STORE_MIGRATIONS.check().unwrap();
    }

    #[test]
    fn keyed_tables_keep_their_rows_without_rowid() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let at = STORE_MIGRATIONS
            .migrations
            .iter()
            .position(|m| m.version == 4)
            .expect("the store has migration 4");
        let keyed = &STORE_MIGRATIONS.migrations[at];
        for m in &STORE_MIGRATIONS.migrations[..at] {
            conn.execute_batch(m.sql(Backend::Sqlite)).unwrap();
        }
        conn.execute_batch(
            "INSERT INTO outbox_sequences VALUES ('orders', 'o1', 3);
             INSERT INTO inbox_sequences VALUES ('wallet', 'orders', 'o1', 2, '2026-01-01T00:00:00Z');
             INSERT INTO inbox VALUES ('wallet', 'e1', '2026-01-01T00:00:00Z');",
        )
        .unwrap();
        conn.execute_batch(keyed.sql(Backend::Sqlite)).unwrap();
        let text = |sql: &str| -> String { conn.query_row(sql, [], |row| row.get(0)).unwrap() };
        for table in ["outbox_sequences", "inbox_sequences", "inbox"] {
            let sql = text(&format!(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
            ));
            assert!(sql.ends_with("WITHOUT ROWID"), "{table}: {sql}");
        }
        assert_eq!(
            text("SELECT topic || '/' || subject || '/' || last FROM outbox_sequences"),
            "orders/o1/3"
        );
        assert_eq!(
            text("SELECT consumer || '/' || subject || '/' || last || '/' || updated_at FROM inbox_sequences"),
            "wallet/o1/2/2026-01-01T00:00:00Z"
        );
        assert_eq!(
            text("SELECT consumer || '/' || event_id || '/' || processed_at FROM inbox"),
            "wallet/e1/2026-01-01T00:00:00Z"
        );
        assert_eq!(
            text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'inbox'"),
            "inbox_processed_at"
        );
    }
}
