//! OVASABI's storage layer: SQLite for the single-machine mode (`ovasabi up`), PostgreSQL
//! for the distributed mode, behind one interface, with migrations applied at open, a
//! transactional outbox and an inbox for idempotent consumers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ovasabi_store::StoreError> {
//! use ovasabi_core::Event;
//! use ovasabi_store::{params, Migration, MigrationSet, Outbox, Store, StoreConfig};
//!
//! const USERS: MigrationSet = MigrationSet::new("users", &[Migration::new(1, "users",
//!     "CREATE TABLE users (id TEXT PRIMARY KEY, email TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL)")]);
//!
//! // `OVASABI_DB` / `--db`: sqlite:///var/lib/ovasabi/ovasabi.db or postgres://…
//! let config = StoreConfig::from_env()?.unwrap_or_else(|| StoreConfig::sqlite("ovasabi.db"));
//! let store = Store::open(&config, &[USERS]).await?;
//!
//! // The state change and the event that announces it: one transaction.
//! let mut tx = store.begin().await?;
//! tx.execute(
//!     "INSERT INTO users (id, email, created_at) VALUES ($1, $2, $3)",
//!     params!["u1", "ada@example.com", chrono::Utc::now()],
//! ).await?;
//! let event = Event::new("user.registered", "/ovasabi/users")
//!     .with_json(&serde_json::json!({"user_id": "u1"}))
//!     .with_partition_key("u1");
//! Outbox::append(&mut tx, "user.events", &event).await?;
//! tx.commit().await?;
//!
//! let row = store.query_one("SELECT email FROM users WHERE id = $1", params!["u1"]).await?;
//! let email: String = row.get("email")?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`config`] — [`StoreConfig`] from a URL (`OVASABI_DB`, `--db`), [`Backend`].
//! - `store` — [`Store`] (open, autocommit statements, [`Store::begin`],
//!   [`Store::transaction`]) and [`Transaction`].
//! - [`value`] — [`Value`] (parameters), [`Row`] and [`FromValue`] (typed column access),
//!   [`params!`].
//! - [`migrate`] — [`Migration`], [`MigrationSet`], and how they are applied.
//! - [`outbox`] — [`Outbox`], and why a row that commits late is never skipped.
//! - [`inbox`] — [`Inbox`], for idempotent consumers.
//! - [`testing`] — a PostgreSQL schema of a test's own, or a printed skip.
//! - `sqlite`, `postgres` — the two backends; `sql` — the two rewrites for SQLite.
//! - [`error`] — [`StoreError`].
//!
//! # Why our own small interface over `rusqlite` and `tokio-postgres`, not `sqlx`
//!
//! The goal is service code written once for both databases. What decides that is the SQL
//! dialect and the types, not the driver API:
//!
//! - **Placeholders.** SQLite reads `?1` and PostgreSQL `$1`. `sqlx`'s `Any` driver passes
//!   SQL through unchanged, so a service would still write two texts (SQLite does parse
//!   `$1`, but as a *named* parameter numbered by first appearance, so `$2 … $1` binds
//!   wrongly). This crate takes `$1` everywhere and rewrites it to `?1` for SQLite, which
//!   means exactly the same (numbered, reusable); string literals and comments are left
//!   alone.
//! - **Types.** tokio-postgres (like `sqlx`'s PostgreSQL driver) refuses an `i64` for an
//!   `integer` column, a `String` for a `uuid` or `jsonb`; `sqlx::Any` has no timestamp,
//!   UUID or JSON type at all. Here every parameter is a [`Value`] that converts to the
//!   type PostgreSQL inferred (range-checked), and every column reads back into a `Value`,
//!   so `row.get::<i64>("n")` works on an `integer` column and on SQLite alike, a
//!   `DateTime<Utc>` round-trips through `timestamptz` and through SQLite text, a `bool`
//!   through `boolean` and SQLite's 0/1.
//! - **No generics in service code.** Code generic over `sqlx::Database` needs bounds like
//!   `for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>`, `i64: Type<DB> +
//!   Encode<'q, DB>` on every function; here a service holds a `Store` and a
//!   `Transaction`, two concrete types.
//! - **Build cost on our 2-core machines.** Measured from cold, each in its own target
//!   directory, on top of the same base (tokio, rusqlite 0.32 bundled, chrono,
//!   serde_json: 34 crates, 12.0 s debug / 37.4 s release): `tokio-postgres` 0.7 +
//!   `deadpool-postgres` 0.14 added 53 crates and 23 s (debug) / 17 s (release);
//!   `sqlx` 0.8.6 with only `runtime-tokio, any, sqlite, postgres, chrono, migrate` (no
//!   macros) added 97 crates and 43 s / 30 s. The compile-time-checked `query!` macros,
//!   `sqlx`'s main attraction, would add more, and need a live database or checked-in
//!   query data per backend at build time.
//! - `rusqlite` is already the embedded bus's driver (0.32, `bundled`): one SQLite in the
//!   binary.
//!
//! The price is ours to keep: the pool on SQLite (one writer thread, a few readers) and
//! the type mapping are code in this crate, with tests against both databases.
//!
//! # SQL that runs on both
//!
//! Write PostgreSQL and keep to what SQLite (3.46, bundled) also accepts; that is most of
//! what services need:
//!
//! | need | write | notes |
//! | --- | --- | --- |
//! | parameters | `$1`, `$2`, … | rewritten to `?1` on SQLite; never `?` |
//! | upsert | `INSERT … ON CONFLICT (k) DO UPDATE SET v = excluded.v`, `ON CONFLICT DO NOTHING` | both |
//! | generated values back | `INSERT … RETURNING id` | both |
//! | column types in DDL | `TEXT`, `BIGINT`, `INTEGER`, `BOOLEAN`, `DOUBLE PRECISION`, `BYTEA`, `TIMESTAMPTZ`, `JSONB`, `UUID` | SQLite accepts any type name and stores by affinity; bind and read them with the [`Value`] kinds |
//! | row locks | `SELECT … FOR UPDATE` (or `FOR NO KEY UPDATE`, `FOR SHARE`, with `NOWAIT` / `SKIP LOCKED`) at the end of the statement | removed on SQLite, whose transactions never overlap |
//! | booleans | `TRUE`, `FALSE`, bind `bool` | SQLite stores 0/1; reads back as `bool` |
//! | timestamps | bind `DateTime<Utc>`; compare with `<`, `ORDER BY` | SQLite stores fixed-width UTC text, whose order is time order. Not `now()` (PostgreSQL only): bind `Utc::now()` |
//! | ids | UUIDv7 text made in Rust (`uuid::Uuid::now_v7()`) | the portable choice |
//! | auto-increment | `Migration::per_backend`: `INTEGER PRIMARY KEY AUTOINCREMENT` vs `BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY` | the one DDL difference most services meet |
//! | JSON | store text; query JSON inside in Rust | `->>` differs in detail between the two |
//!
//! Where a statement must differ, branch on [`Transaction::backend`].
//!
//! # Concurrency and durability
//!
//! SQLite runs in WAL mode with `synchronous = NORMAL` (a commit survives the process
//! being killed; the last ones may be lost on power loss), one writer: transactions run
//! one at a time, queries run beside them on reader connections. Transactions that
//! commit while others wait share one SQLite `COMMIT` (group commit): each `commit`
//! returns once that `COMMIT` is done, with its outcome. A deferred constraint
//! (`DEFERRABLE INITIALLY DEFERRED`) is checked at that shared `COMMIT`, so its violation
//! fails every transaction of the group: keep constraints immediate (the default) on
//! SQLite. PostgreSQL runs at its
//! default isolation (`READ COMMITTED`) with a pool of connections
//! ([`StoreConfig::with_pool_size`]).

pub mod config;
pub mod error;
pub mod inbox;
pub mod migrate;
pub mod outbox;
mod postgres;
mod sql;
mod sqlite;
mod store;
pub mod testing;
pub mod value;

pub use config::{Backend, StoreConfig, DB_ENV_VAR};
pub use error::{DbErrorKind, StoreError};
pub use inbox::Inbox;
pub use migrate::{Migration, MigrationSet};
pub use outbox::{Outbox, OutboxRecord};
pub use store::{BoxFuture, Store, Transaction};
pub use value::{ColumnIndex, FromValue, Row, Value};
