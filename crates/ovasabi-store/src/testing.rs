//! For tests that need PostgreSQL: one place that decides whether it is there, and a schema
//! of the test's own that is dropped when the test ends, passed or failed.
//!
//! A test calls [`postgres_or_skip`] first. When the server is unreachable the test prints
//! `skipped: <test> needs …` and returns, so a plain `cargo test` passes on a machine
//! without PostgreSQL; with `OVASABI_REQUIRE_SERVICES=1` (as CI sets it) the same situation
//! panics, so a missing database fails the run instead of silently skipping it.
//!
//! The server is `OVASABI_TEST_PG_URL`, or [`DEFAULT_URL`].
//!
//! ```no_run
//! #[tokio::test]
//! async fn orders() {
//!     let Some(db) = ovasabi_store::testing::postgres_or_skip("orders").await else { return };
//!     let store = ovasabi_store::Store::open(&db.config(), &[]).await.unwrap();
//!     // … tables live in schema `db.schema`, dropped when `db` is.
//! }
//! ```

use std::io::Write as _;
use std::time::Duration;

use crate::config::StoreConfig;

/// The variable naming the server tests use.
pub const URL_ENV: &str = "OVASABI_TEST_PG_URL";
/// The variable that turns "skip when the server is missing" into "fail".
pub const REQUIRE_ENV: &str = "OVASABI_REQUIRE_SERVICES";
/// The server used when [`URL_ENV`] is unset: the local `test` database.
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The server tests use.
pub fn url() -> String {
    std::env::var(URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_owned())
}

/// Whether a missing server must fail tests (`OVASABI_REQUIRE_SERVICES=1`).
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// A schema of one test's own on the test server, dropped (with everything in it) when
/// this value is dropped.
#[derive(Debug)]
pub struct TestSchema {
    /// The server's URL, without the schema.
    pub server_url: String,
    /// The schema's name.
    pub schema: String,
}

impl TestSchema {
    /// The URL that puts every table in the schema (`…?schema=<name>`), for `--db` /
    /// `OVASABI_DB`.
    pub fn database_url(&self) -> String {
        let separator = if self.server_url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{separator}schema={}", self.server_url, self.schema)
    }

    /// A store configuration for the schema.
    pub fn config(&self) -> StoreConfig {
        StoreConfig::from_url(&self.database_url()).expect("the test URL parses")
    }
}

/// A new schema on the test server, or `None` after printing why the test is skipped.
/// Panics instead under `OVASABI_REQUIRE_SERVICES=1`.
pub async fn postgres_or_skip(test: &str) -> Option<TestSchema> {
    let server_url = url();
    if let Err(why) = reachable(&server_url).await {
        if required() {
            panic!(
                "{test} needs PostgreSQL at {server_url} ({REQUIRE_ENV}=1 makes that a failure): {why}"
            );
        }
        // Straight to stderr, so the reason shows even when the harness captures output.
        let _ = writeln!(
            std::io::stderr(),
            "skipped: {test} needs PostgreSQL at {server_url} ({why}); set {URL_ENV} to use \
             another, {REQUIRE_ENV}=1 to fail instead"
        );
        return None;
    }
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    Some(TestSchema { server_url, schema })
}

async fn reachable(url: &str) -> Result<(), String> {
    let connect = tokio_postgres::connect(url, tokio_postgres::NoTls);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok((client, connection))) => {
            let task = tokio::spawn(connection);
            let answer = client.simple_query("SELECT 1").await.map(|_| ());
            drop(client);
            let _ = task.await;
            answer.map_err(|e| e.to_string())
        }
        Ok(Err(e)) => Err(match std::error::Error::source(&e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        }),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let url = self.server_url.clone();
        let schema = self.schema.clone();
        // Drop may run inside the test's runtime (or during a panic): work from a thread of
        // our own with its own runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                let task = tokio::spawn(connection);
                let answer = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .await
                    .map_err(|e| e.to_string());
                drop(client);
                let _ = task.await;
                answer
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            let _ = writeln!(
                std::io::stderr(),
                "could not drop test schema {}: {e}",
                self.schema
            );
        }
    }
}
